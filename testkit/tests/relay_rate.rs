//! The relay's server → client bottleneck: datagrams leave at the set rate, a drop-tail buffer
//! of `BOTTLENECK_BUFFER` drops the excess, and lifting the limit lets everything through.

use std::time::{Duration, Instant};

use edgeplay_testkit::relay::{BOTTLENECK_BUFFER, RelayConfig, UdpRelay};
use tokio::net::UdpSocket;
use tokio::time::timeout;

/// Receives until nothing came for 500 ms: (datagrams, time from the first to the last).
async fn drain(sock: &UdpSocket) -> (u32, Duration) {
    let mut b = [0u8; 2048];
    let (mut got, mut first, mut last) = (0, None, Instant::now());
    while let Ok(Ok(_)) = timeout(Duration::from_millis(500), sock.recv(&mut b)).await {
        got += 1;
        last = Instant::now();
        first.get_or_insert(last);
    }
    (got, first.map_or(Duration::ZERO, |f| last - f))
}

#[tokio::test]
async fn rate_limit_paces_and_drops_tail_then_lifts() {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let relay = UdpRelay::start(server.local_addr().unwrap(), RelayConfig::default())
        .await
        .unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(b"hi", relay.local_addr()).await.unwrap();
    let mut buf = [0u8; 16];
    let (_, from) = server.recv_from(&mut buf).await.unwrap();

    // 800 kbit/s: a 1000-byte datagram takes 10 ms; the 200 ms buffer holds about 21.
    relay.set_rate_to_client(Some(800));
    let payload = [7u8; 1000];
    let send = async {
        let sending = Instant::now();
        for _ in 0..100 {
            server.send_to(&payload, from).await.unwrap();
            // 8 Mbit/s, ten times the bottleneck, but slow enough for the kernel's buffers.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sending.elapsed()
    };
    // Receive while sending, so arrival times are the relay's pacing, not the reader's.
    let (sent_in, (got, span)) = tokio::join!(send, drain(&client));
    // What the buffer holds plus what left while the burst was being sent.
    let fits = u32::try_from((BOTTLENECK_BUFFER + sent_in).as_millis() / 10).unwrap();
    assert!(
        (fits - 3..=fits + 4).contains(&got),
        "{got} of 100 through a buffer of 200 ms while sending for {sent_in:?}"
    );
    assert!(
        span >= Duration::from_millis(u64::from(got - 2) * 10),
        "{got} datagrams paced at 10 ms each, but all came within {span:?}"
    );
    // Everything that did not come through was dropped by the relay's drop-tail and counted
    // (the kernel may lose a few on a loaded machine).
    let dropped = relay.counters().dropped_to_client;
    assert!(
        dropped + u64::from(got) >= 95 && dropped <= u64::from(100 - got),
        "{dropped} dropped, {got} received of 100"
    );

    relay.set_rate_to_client(None);
    let send = async {
        for _ in 0..100 {
            server.send_to(&payload, from).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let ((), (got, _)) = tokio::join!(send, drain(&client));
    assert_eq!(got, 100, "no limit: everything passes");
    relay.stop().await;
}
