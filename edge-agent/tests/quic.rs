//! The QUIC transport end to end on loopback: the edge's endpoint with real sessions (Vulkan,
//! GStreamer), the client SDK decoding with GStreamer, and testkit's relay for delay and loss.

use std::time::{Duration, Instant};

use edgeplay_client::{Client, ClientError};
use edgeplay_game::game::{GameConfig, simulate};
use edgeplay_game::stamp::{Stamp, read_luma};
use edgeplay_protocol::input::{InputEvent, Key, ScriptedInput};
use edgeplay_protocol::media::close_code;
use edgeplay_testkit::relay::{RelayConfig, UdpRelay};

mod support;

use support::quic::QuicServer;

/// The frame rate of [`support::pipeline_720p30`], which the endpoint serves.
const FPS: u32 = 30;
const SEED: u64 = 5;

fn stamp_of(frame: &edgeplay_client::Frame) -> Stamp {
    let (w, h) = (frame.width as usize, frame.height as usize);
    read_luma(frame.luma(), w, h, w).expect("every decoded frame's stamp passes its CRC")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_session_decodes_600_frames_in_order() {
    let edge = QuicServer::start(Some(SEED));
    let mut session = Client::connect(edge.addr, edge.fingerprint, &edge.token)
        .await
        .expect("the session starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last: Option<Stamp> = None;
    let mut latencies = Vec::new();
    let mut count = 0;
    while count < 600 {
        let frame = tokio::time::timeout_at(deadline.into(), session.next_frame())
            .await
            .expect("600 frames within 120 s")
            .expect("the session is live");
        let stamp = stamp_of(&frame);
        assert_eq!(stamp.frame, frame.header.frame, "stamp and header agree");
        if let Some(prev) = last {
            assert_eq!(
                stamp.frame,
                prev.frame + 1,
                "frames decoded in order, none missing"
            );
            assert!(stamp.tick > prev.tick);
        }
        let now_us = u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros(),
        )
        .unwrap();
        latencies.push(now_us.saturating_sub(stamp.render_time_us));
        last = Some(stamp);
        count += 1;
    }
    latencies.sort_unstable();
    let stats = session.stats();
    eprintln!(
        "600 frames: render→decoded p50 {} ms p95 {} ms; {stats:?}",
        latencies[300] / 1000,
        latencies[570] / 1000
    );
    assert_eq!(stats.frames_skipped, 0);
    assert!(stats.audio_packets > 0, "Opus datagrams arrive");
    session.close().await;
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_relay_keeps_frames_flowing_and_applies_every_input_once() {
    let edge = QuicServer::start(Some(SEED));
    let relay = UdpRelay::start(
        edge.addr,
        RelayConfig {
            delay: Duration::from_millis(30),
            loss_to_server: 0.02,
            loss_to_client: 0.02,
            seed: 11,
        },
    )
    .await
    .unwrap();
    let mut session = Client::connect(relay.local_addr(), edge.fingerprint, &edge.token)
        .await
        .expect("the session starts through the relay");
    let keys = [Key::ArrowUp, Key::ArrowLeft, Key::Space, Key::KeyD];
    let inputs: Vec<InputEvent> = (0..120)
        .map(|i| InputEvent::Key {
            code: keys[i % keys.len()],
            down: (i / keys.len()).is_multiple_of(2),
        })
        .collect();
    let n = inputs.len() as u64;
    let mut stamps: Vec<Stamp> = Vec::new();
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let frame = tokio::time::timeout_at(deadline.into(), session.next_frame())
            .await
            .expect("frames keep flowing")
            .expect("the session is live");
        let stamp = stamp_of(&frame);
        if let Some(prev) = stamps.last() {
            assert!(stamp.frame > prev.frame, "frames in order");
            assert!(stamp.input_seq >= prev.input_seq, "inputs never go back");
        }
        stamps.push(stamp);
        // One input per frame, from the tenth frame on.
        if stamps.len() >= 10 && sent < inputs.len() {
            session.send_input(inputs[sent]).unwrap();
            sent += 1;
        }
        if u64::from(stamp.input_seq) == n && stamps.len() > 200 {
            break;
        }
    }
    let stats = session.stats();
    let counters = relay.counters();
    eprintln!(
        "{} frames through the relay; {stats:?}; {counters:?}",
        stamps.len()
    );
    assert!(counters.dropped_to_client > 0 && counters.dropped_to_server > 0);

    // Rebuild when each input was applied from the stamps (frame with tick T shows inputs
    // applied at tick T - 1), then check every stamped state against the game run on its own.
    let mut script = Vec::new();
    for pair in stamps.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.input_seq > a.input_seq {
            assert_eq!(
                b.tick,
                a.tick + 1,
                "inputs {}..={} landed across skipped frames",
                a.input_seq + 1,
                b.input_seq
            );
            for seq in a.input_seq + 1..=b.input_seq {
                script.push(ScriptedInput {
                    tick: u64::from(b.tick) - 1,
                    seq: u64::from(seq),
                    event: inputs[seq as usize - 1],
                });
            }
        }
    }
    assert_eq!(script.len() as u64, n, "every input applied exactly once");
    let last_tick = u64::from(stamps.last().unwrap().tick);
    let hashes = simulate(SEED, GameConfig { tick_hz: FPS }, &script, last_tick).unwrap();
    for s in &stamps {
        assert_eq!(
            s.state_hash,
            hashes[s.tick as usize - 1],
            "state at tick {} differs from the game run alone",
            s.tick
        );
    }
    session.close().await;
    relay.stop().await;
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_wrong_certificate_and_garbage_are_refused() {
    let edge = QuicServer::start(Some(SEED));

    match Client::connect(edge.addr, edge.fingerprint, "not-the-token").await {
        Err(ClientError::Refused { code, .. }) => {
            assert_eq!(code, u64::from(close_code::BAD_TOKEN))
        }
        other => panic!("a bad token must be refused with BAD_TOKEN, got {other:?}"),
    }

    let mut wrong = edge.fingerprint;
    wrong[0] ^= 0xff;
    match Client::connect(edge.addr, wrong, &edge.token).await {
        Err(ClientError::CertificateMismatch) => {}
        other => panic!("a wrong fingerprint must fail the handshake, got {other:?}"),
    }

    // Garbage on the control stream of an otherwise good connection.
    let code = garbage_close_code(edge.addr, edge.fingerprint).await;
    assert_eq!(code, u64::from(close_code::PROTOCOL_VIOLATION));

    // The edge still serves good clients afterwards.
    let mut session = Client::connect(edge.addr, edge.fingerprint, &edge.token)
        .await
        .expect("a good client still gets in");
    tokio::time::timeout(Duration::from_secs(60), session.next_frame())
        .await
        .expect("a frame within 60 s")
        .expect("a frame");
    session.close().await;
    edge.stop().await;
}

/// Opens a raw quinn connection pinned like the SDK's, writes garbage on the control stream and
/// returns the application close code the edge answers with.
async fn garbage_close_code(addr: std::net::SocketAddr, fingerprint: [u8; 32]) -> u64 {
    let (cfg, _mismatch) =
        edgeplay_quic::pinned_client(fingerprint, edgeplay_protocol::media::ALPN).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(cfg);
    let conn = endpoint
        .connect(addr, "edgeplay-edge")
        .unwrap()
        .await
        .unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0x00, 0x05, 0xEE, 1, 2, 3, 4])
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the edge closes a garbage connection within 10 s");
    endpoint.wait_idle().await;
    match err {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
        other => panic!("expected an application close, got {other}"),
    }
}
