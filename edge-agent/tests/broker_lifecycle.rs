//! Session lifecycle through a real `session-broker run --session-max-secs 6` and one
//! `edge-agent run --broker --idle-secs 4`: a QUIC player's session is `running` once the edge
//! says so on its link, and when the player leaves it ends (`player_left`) with the edge's
//! figures; a player who stays and plays is ended by the broker at the maximum duration (the
//! edge says goodbye with the reason, the summary says `max_duration`); a player who sends no
//! input is ended by the edge after its idle time (`idle`); no session is live afterwards.
//!
//! `session-broker` is another package's binary: `cargo test --workspace` (and `cargo xtask
//! test`) builds it next to `edge-agent`; alone, run `cargo build -p edgeplay-broker` first.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use edgeplay_client::broker::{Placement, SessionRequest, place};
use edgeplay_client::{Session, SessionEvent};
use edgeplay_protocol::input::InputEvent;
use serde_json::Value;
use support::procs::{
    edges, eventually_async, http, join_placement, json_call, start_broker, start_edge, tmp,
};

/// Waits (at most `within`) until the session's `state` is `want`; its record (live record or
/// summary) then.
async fn until_state(broker: SocketAddr, sid: &str, want: &'static str, within: Duration) -> Value {
    let path = format!("/v1/sessions/{sid}");
    eventually_async(within, &format!("session {sid} `{want}`"), move || {
        let (status, v) = json_call(broker, "GET", &path, None);
        assert_eq!(status, 200, "{v}");
        (v["state"] == want).then_some(v)
    })
    .await
}

async fn join(p: &Placement) -> Session {
    join_placement(p).await.expect("joined")
}

async fn frames(s: &mut Session, n: usize) {
    for i in 0..n {
        tokio::time::timeout(Duration::from_secs(30), s.next_frame())
            .await
            .unwrap_or_else(|_| panic!("frame {i} within 30 s"))
            .unwrap_or_else(|| panic!("the session ended before frame {i}"));
    }
}

fn metrics(broker: SocketAddr) -> String {
    http(broker, "GET", "/metrics", &[], "").2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_player_leaves_and_at_its_maximum_duration() {
    let (_broker, baddr) = start_broker(
        &tmp("lifecycle-broker"),
        &["--session-max-secs", "6", "--session-idle-secs", "30"],
    );
    let (_edge, edge_id) = start_edge(
        &format!("http://{baddr}"),
        &tmp("lifecycle-edge"),
        &["--region", "local", "--idle-secs", "4"],
    );
    eventually_async(Duration::from_secs(60), "the edge registered", move || {
        (!edges(baddr).is_empty()).then_some(())
    })
    .await;
    let url = format!("http://{baddr}");
    let req = |player: &str| SessionRequest {
        region: Some("local".into()),
        ..SessionRequest::new(player, 1280, 720, 60)
    };

    // Ann joins, plays and leaves.
    let pa = place(&url, &req("ann")).await.expect("placed");
    let sid_a = pa.session.clone();
    until_state(baddr, &sid_a, "placed", Duration::from_secs(1)).await;
    let mut ann = join(&pa).await;
    until_state(baddr, &sid_a, "running", Duration::from_secs(10)).await;
    frames(&mut ann, 1).await;
    ann.send_input(InputEvent::PointerMove { dx: 1, dy: 0 })
        .expect("an input");
    frames(&mut ann, 30).await;
    ann.close().await;
    let ended = until_state(baddr, &sid_a, "ended", Duration::from_secs(15)).await;
    assert_eq!(ended["reason"], "player_left", "{ended}");
    assert_eq!(ended["player"], "ann", "{ended}");
    assert_eq!(ended["edge"], edge_id.as_str(), "{ended}");
    assert_eq!(ended["mode"], "1280x720@60", "{ended}");
    assert!(ended["frames"].as_u64().unwrap() >= 30, "{ended}");
    assert!(ended["bytes"].as_u64().unwrap() > 10_000, "{ended}");
    assert!(ended["duration_ms"].as_u64().unwrap() > 0, "{ended}");

    // Bob stays and plays (an input every 500 ms): the broker ends his session at 6 s, and the
    // edge says why.
    let pb = place(&url, &req("bob")).await.expect("placed");
    let sid_b = pb.session.clone();
    let mut bob = join(&pb).await;
    until_state(baddr, &sid_b, "running", Duration::from_secs(10)).await;
    let reason = tokio::time::timeout(Duration::from_secs(30), async {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                ev = bob.next_event() => match ev {
                    Some(SessionEvent::Closed { reason }) => break reason,
                    Some(_) => {}
                    None => break "no Closed event".to_owned(),
                },
                _ = tick.tick() => {
                    let _ = bob.send_input(InputEvent::PointerMove { dx: 1, dy: 0 });
                }
            }
        }
    })
    .await
    .expect("bob's session is closed within 30 s");
    assert!(reason.contains("maximum duration"), "{reason}");
    let ended = until_state(baddr, &sid_b, "ended", Duration::from_secs(15)).await;
    assert_eq!(ended["reason"], "max_duration", "{ended}");
    assert!(ended["frames"].as_u64().unwrap() > 0, "{ended}");

    // Cyd sends nothing: the edge ends her session after its idle time.
    let pc = place(&url, &req("cyd")).await.expect("placed");
    let sid_c = pc.session.clone();
    let mut cyd = join(&pc).await;
    let reason = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match cyd.next_event().await {
                Some(SessionEvent::Closed { reason }) => break reason,
                Some(_) => {}
                None => break "no Closed event".to_owned(),
            }
        }
    })
    .await
    .expect("cyd's session is closed within 30 s");
    assert!(reason.contains("idle"), "{reason}");
    let ended = until_state(baddr, &sid_c, "ended", Duration::from_secs(15)).await;
    assert_eq!(ended["reason"], "idle", "{ended}");

    let m = tokio::task::spawn_blocking(move || metrics(baddr))
        .await
        .unwrap();
    for line in [
        "broker_sessions_live 0",
        "broker_sessions_ended_total{reason=\"player_left\"} 1",
        "broker_sessions_ended_total{reason=\"max_duration\"} 1",
        "broker_sessions_ended_total{reason=\"idle\"} 1",
    ] {
        assert!(m.contains(line), "no `{line}` in:\n{m}");
    }
}
