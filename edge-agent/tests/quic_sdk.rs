//! The client SDK's session API against a real edge on loopback: events (connected, degraded
//! and recovered through the relay's bottleneck, closed when the edge shuts down), stats with
//! glass-to-glass and input-to-photon from the frame stamps, and decoded Opus audio whose
//! timestamps line up with the video frames'.

use std::time::{Duration, Instant};

use edgeplay_client::{AUDIO_RATE, Client, Degradation, Media, SessionEvent};
use edgeplay_protocol::input::{InputEvent, Key};
use edgeplay_testkit::relay::{RelayConfig, UdpRelay};

mod support;

use support::quic::QuicServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stats_and_audio_in_sync() {
    let mut edge = QuicServer::start(None);
    let relay = UdpRelay::start(edge.addr, RelayConfig::default())
        .await
        .unwrap();
    let mut session = Client::connect(relay.local_addr(), edge.fingerprint, &edge.token)
        .await
        .expect("the session starts");
    assert_eq!(
        session.try_next_event(),
        Some(SessionEvent::Connected {
            session_id: session.id().to_owned()
        })
    );

    // Four seconds of play: an input every tenth frame; frames and audio as they come.
    let started = Instant::now();
    let mut frames = Vec::new(); // (arrival, pts µs)
    let mut chunks = Vec::new(); // (arrival, pts µs, samples)
    let mut inputs = 0u64;
    while started.elapsed() < Duration::from_secs(4) {
        let m = tokio::time::timeout(Duration::from_secs(10), session.next_media())
            .await
            .expect("media within 10 s")
            .expect("the session is live");
        match m {
            Media::Frame(f) => {
                assert!(f.stamp.is_some(), "a clean path decodes every stamp");
                frames.push((Instant::now(), f.header.pts_us));
                if frames.len() % 10 == 0 {
                    let down = inputs.is_multiple_of(2);
                    session
                        .send_input(InputEvent::Key {
                            code: Key::ArrowUp,
                            down,
                        })
                        .unwrap();
                    inputs += 1;
                }
            }
            Media::Audio(a) => {
                chunks.push((
                    Instant::now(),
                    u64::try_from(a.pts.as_micros()).unwrap(),
                    a.samples.len(),
                ));
            }
            Media::Event(e) => panic!("no event expected on a clean path: {e:?}"),
        }
    }
    let stats = session.stats();
    eprintln!(
        "{} frames, {} audio chunks; {stats:?}",
        frames.len(),
        chunks.len()
    );
    assert!(frames.len() >= 60, "{} frames in 4 s", frames.len());
    assert_latency(
        "glass-to-glass",
        stats.glass_to_glass_p50,
        stats.glass_to_glass_p95,
    );
    assert_latency(
        "input-to-photon",
        stats.input_to_photon_p50,
        stats.input_to_photon_p95,
    );
    // The last second's rates: the edge sends 30 fps and the loop above took every frame.
    assert!(
        stats.skipped_frame_ratio_1s < 0.05,
        "{} of the last second's frames skipped on a clean path",
        stats.skipped_frame_ratio_1s
    );
    assert!(
        stats.decoded_fps_1s > 5.0 && stats.received_kbps_1s > 0.0,
        "{} fps, {} kbit/s in the last second",
        stats.decoded_fps_1s,
        stats.received_kbps_1s
    );
    assert!(stats.decode_time_1s > Duration::ZERO);

    // Audio: 10 ms chunks of 48 kHz mono, about 100 a second, on the frames' clock: each chunk
    // arrives within 150 ms of the frame with the same presentation time.
    assert!(chunks.len() >= 200, "{} audio chunks in 4 s", chunks.len());
    let per_chunk = usize::try_from(AUDIO_RATE / 100).unwrap();
    assert!(chunks.iter().all(|&(_, _, n)| n == per_chunk));
    let mut skews = Vec::new();
    for &(arrived, pts, _) in &chunks {
        // The frame whose pts is nearest the chunk's, if the run covers it.
        let Some(&(frame_arrived, frame_pts)) = frames.iter().min_by_key(|(_, p)| p.abs_diff(pts))
        else {
            continue;
        };
        if frame_pts.abs_diff(pts) > 40_000 {
            continue; // before the first or after the last frame
        }
        let skew = if arrived > frame_arrived {
            arrived - frame_arrived
        } else {
            frame_arrived - arrived
        };
        skews.push(skew);
    }
    skews.sort_unstable();
    assert!(
        skews.len() >= 150,
        "{} chunks matched to frames",
        skews.len()
    );
    let (median, p95) = (skews[skews.len() / 2], skews[skews.len() * 95 / 100]);
    eprintln!("audio vs video arrival for the same pts: median {median:?}, p95 {p95:?}");
    assert!(
        median < Duration::from_millis(100),
        "audio and video drift apart: {median:?}"
    );
    assert!(
        p95 < Duration::from_millis(150),
        "audio and video drift apart: p95 {p95:?}"
    );

    // A bottleneck of 100 kbit/s: frames stall, the session says it is degraded; lifted, it
    // recovers.
    relay.set_rate_to_client(Some(100));
    let degraded = wait_event(&mut session, Duration::from_secs(10), |e| {
        matches!(
            e,
            SessionEvent::Degraded {
                reason: Degradation::Stalled | Degradation::Skipping
            }
        )
    })
    .await;
    relay.set_rate_to_client(None);
    let recovered = wait_event(&mut session, Duration::from_secs(20), |e| {
        *e == SessionEvent::Recovered
    })
    .await;
    eprintln!("{degraded:?} then {recovered:?}");

    // The edge shuts down: the last event says so.
    edge.shut_down();
    let closed = wait_event(&mut session, Duration::from_secs(15), |e| {
        matches!(e, SessionEvent::Closed { .. })
    })
    .await;
    match closed {
        SessionEvent::Closed { reason } => {
            assert!(reason.contains("shutting down"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(session.try_next_event(), None);
    session.close().await;
    relay.stop().await;
    edge.stop().await;
}

/// A latency measured on a clean loopback path: some, p50 ≤ p95, under a second.
fn assert_latency(what: &str, p50: Duration, p95: Duration) {
    assert!(
        p50 > Duration::ZERO && p50 <= p95 && p95 < Duration::from_secs(1),
        "{what} {p50:?} / {p95:?}"
    );
}

/// Plays on (taking frames and audio) until an event matches, at most `within`.
async fn wait_event(
    session: &mut edgeplay_client::Session,
    within: Duration,
    want: impl Fn(&SessionEvent) -> bool,
) -> SessionEvent {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let m = tokio::time::timeout_at(deadline, session.next_media())
            .await
            .unwrap_or_else(|_| panic!("no matching event within {within:?}"))
            .expect("events end only after Closed");
        if let Media::Event(e) = m
            && want(&e)
        {
            return e;
        }
    }
}
