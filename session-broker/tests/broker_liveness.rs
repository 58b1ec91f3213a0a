//! Dead-edge marking on a real `session-broker run`: a serving edge that stops heartbeating is
//! dead after three missed 500 ms periods, leaves placement, shows as dead in `GET /v1/edges`
//! and `/metrics`, and its session ends (`edge_lost`); a heartbeat brings it back. An edge
//! that keeps heartbeating stays alive meanwhile.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    broker_with_two_edges, create_session, edge_id, eventually, heartbeat_ok, http, select,
    session_body,
};
use serde_json::{Value, json};

fn state_of(edges: &Value, id: &Value) -> String {
    edges
        .as_array()
        .unwrap()
        .iter()
        .find(|e| &e["ad"]["id"] == id)
        .map(|e| e["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[test]
fn a_silent_serving_edge_is_marked_dead_and_its_session_ended() {
    // The silent edge is nearer the player, so it gets the session.
    let (b, dir, silent, steady) = broker_with_two_edges("live", 31, [1.0, 40.0], 6000, &[]);
    let (sid, _) = create_session(b.addr, &session_body("ann"));
    let sel = json!({"measured": [
        {"edge": edge_id(&silent), "rtt_ms": 2.0},
        {"edge": edge_id(&steady), "rtt_ms": 30.0},
    ]});
    let v = select(b.addr, &sid, &sel);
    assert_eq!(v["edge"], json!(edge_id(&silent)));

    // The steady edge heartbeats every 300 ms (serving) for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let beat = {
        let stop = Arc::clone(&stop);
        let (addr, k) = (b.addr, steady.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                heartbeat_ok(addr, &k, 1);
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    // The silent edge says it serves (1 of 2 slots free), then falls silent.
    heartbeat_ok(b.addr, &silent, 1);
    let last = Instant::now();
    let silent_id = json!(edge_id(&silent));
    eventually(Duration::from_secs(10), "silent edge marked dead", || {
        let (_, v) = http(b.addr, "GET", "/v1/edges", None);
        (state_of(&v, &silent_id) == "dead").then_some(())
    });
    let after = last.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "marked dead {after:?} after its last heartbeat, before three periods"
    );
    let (_, v) = http(b.addr, "GET", "/v1/edges", None);
    assert_eq!(state_of(&v, &json!(edge_id(&steady))), "alive");
    // The edge leaves placement first; its sessions end right after (through the store).
    eventually(
        Duration::from_secs(10),
        "dead edge counted and its session ended",
        || {
            let (_, m) = http(b.addr, "GET", "/metrics", None);
            let m = m.as_str().unwrap().to_owned();
            [
                "broker_edges_dead 1",
                "broker_edges_marked_dead_total 1",
                "broker_sessions_ended_total{reason=\"edge_lost\"} 1",
            ]
            .iter()
            .all(|line| m.contains(line))
            .then_some(())
        },
    );
    let (_, v) = http(b.addr, "GET", &format!("/v1/sessions/{sid}"), None);
    assert_eq!(
        (&v["state"], &v["reason"]),
        (&json!("ended"), &json!("edge_lost")),
        "{v}"
    );
    // New sessions go only to the live edge.
    let (_, v) = create_session(b.addr, &session_body("bea"));
    assert_eq!(v["candidates"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["candidates"][0]["edge"], json!(edge_id(&steady)));

    // A heartbeat brings it back into placement.
    heartbeat_ok(b.addr, &silent, 2);
    let (_, v) = http(b.addr, "GET", "/v1/edges", None);
    assert_eq!(state_of(&v, &silent_id), "alive");
    let (_, v) = http(b.addr, "POST", "/v1/sessions", Some(&session_body("cy")));
    assert_eq!(v["candidates"].as_array().unwrap().len(), 2, "{v}");
    stop.store(true, Ordering::Relaxed);
    beat.join().unwrap();
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
