//! The relay delays each direction by the configured time and loses about the configured
//! share of datagrams in each direction, independently.

use std::time::{Duration, Instant};

use edgeplay_testkit::relay::{RelayConfig, UdpRelay};
use tokio::net::UdpSocket;
use tokio::time::timeout;

/// Datagrams received until none came for 500 ms.
async fn count(sock: &UdpSocket) -> u32 {
    let mut b = [0u8; 64];
    let mut got = 0;
    while let Ok(Ok(_)) = timeout(Duration::from_millis(500), sock.recv(&mut b)).await {
        got += 1;
    }
    got
}

#[tokio::test]
async fn relay_delays_both_ways_and_loses_independently() {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let delay = Duration::from_millis(30);
    let relay = UdpRelay::start(
        server.local_addr().unwrap(),
        RelayConfig {
            delay,
            loss_to_server: 0.1,
            loss_to_client: 0.0,
            seed: 42,
        },
    )
    .await
    .unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // Round trip of one datagram (retry until one survives the 10 % loss).
    let mut buf = [0u8; 64];
    let started = Instant::now();
    let from = loop {
        client.send_to(b"ping", relay.local_addr()).await.unwrap();
        if let Ok(r) = timeout(Duration::from_millis(200), server.recv_from(&mut buf)).await {
            break r.unwrap().1;
        }
    };
    server.send_to(b"pong", from).await.unwrap();
    let n = timeout(Duration::from_secs(2), client.recv(&mut buf))
        .await
        .expect("pong within 2 s")
        .unwrap();
    assert_eq!(&buf[..n], b"pong");
    assert!(
        started.elapsed() >= 2 * delay,
        "round trip faster than 2 × delay"
    );

    // 1000 datagrams up: about 10 % lost. 1000 down: none lost. Read while sending, so the
    // sockets' kernel buffers never overflow.
    let send = async {
        for i in 0..1000u32 {
            client
                .send_to(&i.to_be_bytes(), relay.local_addr())
                .await
                .unwrap();
            server.send_to(&i.to_be_bytes(), from).await.unwrap();
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    let ((), up, down) = tokio::join!(send, count(&server), count(&client));
    let c = relay.counters();
    assert_eq!(down, 1000, "no loss configured towards the client: {c:?}");
    assert!(
        (820..=980).contains(&up),
        "{up} of 1000 arrived at 10 % loss: {c:?}"
    );
    assert_eq!(c.dropped_to_client, 0);
    relay.stop().await;
}
