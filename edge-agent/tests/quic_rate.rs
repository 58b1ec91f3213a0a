//! The QUIC rate controller end to end: a real edge session and the client SDK through
//! testkit's relay. When the relay narrows the edge → client path below what the encoder sends,
//! the controller's target (on /metrics) drops under the bottleneck; when the bottleneck lifts,
//! the target climbs back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeplay_client::{Client, Session};
use edgeplay_edge::metrics::Metrics;
use edgeplay_testkit::relay::{RelayConfig, UdpRelay};

mod support;

use support::quic::QuicServer;

/// The controller's target for `session` as /metrics shows it.
fn target(metrics: &Metrics, session: &str) -> u32 {
    let text = metrics.render();
    let prefix = format!("edgeplay_edge_quic_target_kbps{{session=\"{session}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no target for {session} on /metrics:\n{text}"))
}

/// Takes frames for `d`, the way an application would; returns the lowest and the last target.
async fn play(session: &mut Session, metrics: &Metrics, d: Duration) -> (u32, u32) {
    let end = Instant::now() + d;
    let mut lowest = u32::MAX;
    while Instant::now() < end {
        let _ = tokio::time::timeout(Duration::from_millis(100), session.next_frame()).await;
        lowest = lowest.min(target(metrics, session.id()));
    }
    (lowest, target(metrics, session.id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_drops_under_a_bottleneck_and_recovers() {
    let edge = QuicServer::start(None);
    let metrics = Arc::clone(&edge.metrics);
    let relay = UdpRelay::start(
        edge.addr,
        RelayConfig {
            delay: Duration::from_millis(10),
            ..RelayConfig::default()
        },
    )
    .await
    .unwrap();
    let mut session = Client::connect(relay.local_addr(), edge.fingerprint, &edge.token)
        .await
        .expect("the session starts");

    // Clean path: the target holds at the start or grows.
    let (_, clean) = play(&mut session, &metrics, Duration::from_secs(5)).await;
    let sent_kbps = session.stats().received_kbps_1s;
    assert!(clean >= 3000, "target {clean} on a clean path");

    // A bottleneck at 40 % of what the encoder sent.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "kbit/s"
    )]
    let limit = ((sent_kbps * 0.4) as u32).max(300);
    relay.set_rate_to_client(Some(limit));
    let (lowest, narrowed) = play(&mut session, &metrics, Duration::from_secs(10)).await;
    eprintln!(
        "encoder sent {sent_kbps:.0} kbit/s; clean target {clean}; bottleneck {limit}: \
         lowest {lowest}, after 10 s {narrowed}"
    );
    assert!(
        lowest <= limit,
        "target {lowest} never went under the {limit} kbit/s bottleneck"
    );
    assert!(
        narrowed >= limit / 3,
        "target {narrowed} collapsed far below the {limit} kbit/s bottleneck"
    );

    // The bottleneck lifts: the target climbs back.
    relay.set_rate_to_client(None);
    let (_, recovered) = play(&mut session, &metrics, Duration::from_secs(15)).await;
    eprintln!("recovered to {recovered}; {:?}", session.stats());
    assert!(
        recovered >= 3000,
        "target {recovered} did not climb back to the start of 3000"
    );
    session.close().await;
    relay.stop().await;
    edge.stop().await;
}
