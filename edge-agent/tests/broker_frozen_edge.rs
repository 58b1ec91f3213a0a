//! A frozen edge, with real processes: `session-broker run` and one `edge-agent run --broker`
//! serving a player over QUIC. The edge is stopped (SIGSTOP): its kernel keeps the link's TCP
//! connection open, but nothing comes from the edge any more, so the broker drops the link after
//! three of the edge's 500 ms serving heartbeat intervals and marks the edge dead (within 2 s of
//! the stop), out of placement, its session ended (`edge_lost`). SIGCONT wakes the edge to a
//! closed link: it links again (a fresh link, a second registration), is alive and placeable,
//! and is told to end the session the broker ended meanwhile, which its player hears.
//!
//! `session-broker` is another package's binary: `cargo test --workspace` (and `cargo xtask
//! test`) builds it next to `edge-agent`; alone, run `cargo build -p edgeplay-broker` first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgeplay_client::broker::SessionRequest;
use edgeplay_client::{Client, SessionEvent};
use serde_json::{Value, json};

mod support;
use support::procs::{
    broker_key, edge_record, eventually, http, json_call, session_body, start_broker, start_edge,
    tmp,
};

/// How soon after SIGSTOP the edge must be dead: three 500 ms intervals after its last
/// heartbeat (sent at most 500 ms before the stop) is 1.5 s at most.
const DEAD_WITHIN: Duration = Duration::from_secs(2);

/// A metric's value from the broker's `/metrics` (`None` if absent).
fn metric(broker: std::net::SocketAddr, name: &str) -> Option<u64> {
    let (_, _, m) = http(broker, "GET", "/metrics", &[], "");
    m.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn state(rec: &Value) -> &str {
    rec["state"].as_str().unwrap_or_default()
}

#[test]
fn a_frozen_serving_edge_is_unlinked_and_marked_dead_then_relinks() {
    let root = tmp("frozen-edge");
    let (_broker, baddr) = start_broker(&root.join("broker"), &[]);
    let url = format!("http://{baddr}");
    let (edge, edge_id) = start_edge(&url, &root.join("edge"), &["--coord", "0,0,1"]);
    eventually(Duration::from_secs(60), "the edge linked", || {
        edge_record(baddr, &edge_id).filter(|r| state(r) == "alive")
    });

    // A player on the edge; its frames are drained in the background all along.
    let key = broker_key(baddr);
    let req = SessionRequest {
        coord: Some((0.0, 0.0, 1.0)),
        broker_key: Some(key),
        ..SessionRequest::new("fay", 1280, 720, 60)
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut session, placed) = rt
        .block_on(Client::connect_via_broker(&url, &req))
        .expect("placed and connected");
    assert_eq!(placed.edge, edge_id);
    let frames = Arc::new(AtomicU64::new(0));
    let player = {
        let frames = Arc::clone(&frames);
        rt.spawn(async move {
            while session.next_frame().await.is_some() {
                frames.fetch_add(1, Ordering::Relaxed);
            }
            // Why it ended.
            loop {
                match session.next_event().await {
                    Some(SessionEvent::Closed { reason }) => return reason,
                    Some(_) => {}
                    None => return "no Closed event".to_owned(),
                }
            }
        })
    };
    eventually(Duration::from_secs(60), "frames before the stop", || {
        (frames.load(Ordering::Relaxed) >= 5).then_some(())
    });
    // The broker has the edge's serving heartbeat (1 of 2 slots free): 500 ms intervals.
    eventually(Duration::from_secs(10), "a serving heartbeat", || {
        edge_record(baddr, &edge_id).filter(|r| r["free_slots"] == json!(1))
    });
    assert_eq!(metric(baddr, "broker_link_timeouts_total"), Some(0));

    // Frozen: the link stays open at the TCP level, but the edge says nothing.
    let stopped = Instant::now();
    edge.signal("-STOP");
    // Polled every 20 ms (a poll is one loopback request), bounded at 10 s to report the time.
    let dead_after = loop {
        if edge_record(baddr, &edge_id).is_some_and(|r| state(&r) == "dead") {
            break stopped.elapsed();
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "the frozen edge is not marked dead 10 s after SIGSTOP"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("frozen edge marked dead {dead_after:?} after SIGSTOP");
    assert!(
        dead_after <= DEAD_WITHIN,
        "dead {dead_after:?} after the stop, want at most {DEAD_WITHIN:?}"
    );
    assert!(
        dead_after >= Duration::from_millis(500),
        "dead {dead_after:?} after the stop, before its deadline (at least 1 s: 1.5 s from a heartbeat at most 0.5 s old)"
    );
    // Its link was dropped for silence (at the same deadline; the liveness sweep may mark it a
    // moment before the link's timer fires), and it is out of placement.
    eventually(
        Duration::from_secs(1),
        "the link dropped for silence",
        || {
            (metric(baddr, "broker_link_timeouts_total") == Some(1)
                && metric(baddr, "broker_edge_links") == Some(0))
            .then_some(())
        },
    );
    let (st, v) = json_call(
        baddr,
        "POST",
        "/v1/sessions",
        Some(&session_body("gus", 0.0)),
    );
    // No edge to offer while the only one is dead (503 "none now"; 422 should the broker count
    // it as no edge ever).
    assert!(
        matches!(st, 503 | 422),
        "the dead edge is not offered: {st} {v}"
    );
    eventually(
        Duration::from_secs(5),
        "the session ended with its edge",
        || {
            let (_, v) = json_call(
                baddr,
                "GET",
                &format!("/v1/sessions/{}", placed.session),
                None,
            );
            (v["state"] == "ended" && v["reason"] == "edge_lost").then_some(())
        },
    );

    // Awake: the edge finds its link closed and links again, a fresh link.
    edge.signal("-CONT");
    let woke = Instant::now();
    eventually(Duration::from_secs(15), "the edge alive again", || {
        edge_record(baddr, &edge_id).filter(|r| state(r) == "alive")
    });
    eprintln!("edge alive again {:?} after SIGCONT", woke.elapsed());
    assert_eq!(metric(baddr, "broker_registrations_total"), Some(2));
    assert_eq!(metric(baddr, "broker_edge_links"), Some(1));
    assert_eq!(metric(baddr, "broker_edges_dead"), Some(0));
    eventually(Duration::from_secs(10), "the edge placeable again", || {
        let (st, v) = json_call(
            baddr,
            "POST",
            "/v1/sessions",
            Some(&session_body("hal", 0.0)),
        );
        (st == 201 && v["candidates"][0]["edge"] == json!(edge_id)).then_some(())
    });
    // The broker ended the player's session while the edge was dead: the woken edge, which
    // still ran it, is told so on its fresh link and says goodbye to the player.
    let reason = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), player).await })
        .expect("the player's session is closed within 30 s of the wake-up")
        .expect("player task");
    assert!(reason.contains("lost this edge"), "{reason}");

    drop(edge);
    drop(rt);
    let _ = std::fs::remove_dir_all(&root);
}
