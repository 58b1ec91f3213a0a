//! Session lifecycle on a real `session-broker run` with short deadlines: a session nobody
//! selects ends `not_placed`; an edge's signed report ends its own session with its figures
//! (a report for another edge's session, or with absurd figures, is refused); summaries are
//! kept under the count cap, the oldest going first; and a restarted broker loads only the
//! live sessions.

mod common;

use std::time::Duration;

use common::{
    broker_with_two_edges, create_session, edge_id, ended_report, eventually, http, metric, select,
    session_body, start,
};
use serde_json::{Value, json};

fn state(addr: std::net::SocketAddr, sid: &str) -> (u16, Value) {
    http(addr, "GET", &format!("/v1/sessions/{sid}"), None)
}

#[test]
fn sessions_end_on_deadlines_and_reports_and_summaries_stay_bounded() {
    let (b, dir, near, far) = broker_with_two_edges(
        "lifecycle",
        51,
        [1.0, 30.0],
        7100,
        &["--session-idle-secs", "1", "--summary-max", "3"],
    );

    // Not selected within 1 s: ended by the sweep.
    let (idle, _) = create_session(b.addr, &session_body("ida"));
    assert_eq!(state(b.addr, &idle).1["state"], "offered");
    let v = eventually(Duration::from_secs(10), "the idle session ended", || {
        let (_, v) = state(b.addr, &idle);
        (v["state"] == "ended").then_some(v)
    });
    assert_eq!(v["reason"], "not_placed", "{v}");
    assert_eq!(v["edge"], Value::Null, "{v}");

    // Placed on the near edge; the edge reports the end.
    let place = |player: &str| {
        let (sid, _) = create_session(b.addr, &session_body(player));
        let sel = json!({"measured": [{"edge": edge_id(&near), "rtt_ms": 2.0},
                                      {"edge": edge_id(&far), "rtt_ms": 30.0}]});
        let v = select(b.addr, &sid, &sel);
        assert_eq!(v["edge"], json!(edge_id(&near)));
        sid
    };
    let sid = place("ann");
    assert_eq!(state(b.addr, &sid).1["state"], "placed");
    let report_path =
        |k: &edgeplay_protocol::token::SigningKey| format!("/v1/edges/{}/ended", edge_id(k));
    // The far edge cannot end the near edge's session.
    let (st, v) = http(
        b.addr,
        "POST",
        &report_path(&far),
        Some(&ended_report(&far, &sid, "player_left", 1, 1)),
    );
    assert_eq!((st, &v["ended"]), (200, &json!(false)), "{v}");
    assert_eq!(
        metric(b.addr, "broker_session_reports_refused_total"),
        Some(1)
    );
    // Absurd figures are a 400.
    let (st, v) = http(
        b.addr,
        "POST",
        &report_path(&near),
        Some(&ended_report(&near, &sid, "player_left", 1, u64::MAX)),
    );
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap_or_default().contains("bytes"),
        "{v}"
    );
    // A report signed by another key is refused.
    let (st, _) = http(
        b.addr,
        "POST",
        &report_path(&near),
        Some(&ended_report(&far, &sid, "player_left", 1, 1)),
    );
    assert_eq!(st, 401);
    let (st, v) = http(
        b.addr,
        "POST",
        &report_path(&near),
        Some(&ended_report(&near, &sid, "player_left", 300, 123_456)),
    );
    assert_eq!((st, &v["ended"]), (200, &json!(true)), "{v}");
    let (st, v) = state(b.addr, &sid);
    assert_eq!(st, 200);
    assert_eq!(v["state"], "ended", "{v}");
    assert_eq!(v["reason"], "player_left", "{v}");
    assert_eq!(
        (v["frames"].as_u64(), v["bytes"].as_u64()),
        (Some(300), Some(123_456))
    );
    assert_eq!(v["duration_ms"], 5000, "{v}");
    assert_eq!(v["mode"], "1280x720@60", "{v}");
    // A second report of the same end changes nothing.
    let (_, v) = http(
        b.addr,
        "POST",
        &report_path(&near),
        Some(&ended_report(&near, &sid, "failed", 1, 1)),
    );
    assert_eq!(v["ended"], json!(false), "{v}");
    assert_eq!(state(b.addr, &sid).1["reason"], "player_left");

    // Four more ends: the summaries are capped at 3, the oldest go.
    let mut ended = vec![idle.clone(), sid.clone()];
    for p in ["bo", "cy", "di", "ed"] {
        let s = place(p);
        let (st, _) = http(
            b.addr,
            "POST",
            &report_path(&near),
            Some(&ended_report(&near, &s, "player_left", 1, 1)),
        );
        assert_eq!(st, 200);
        ended.push(s);
    }
    eventually(Duration::from_secs(15), "summaries pruned to 3", || {
        (metric(b.addr, "broker_session_summaries") == Some(3)).then_some(())
    });
    assert_eq!(state(b.addr, &idle).0, 404, "the oldest summary is gone");
    assert_eq!(state(b.addr, &ended[5]).1["state"], "ended");
    assert_eq!(metric(b.addr, "broker_sessions_live"), Some(0));

    // A live session survives a restart; the ended ones are not loaded again.
    let live = place("fay");
    drop(b);
    let b = start(&dir, &["--session-idle-secs", "1", "--summary-max", "3"]);
    assert_eq!(metric(b.addr, "broker_sessions_live"), Some(1));
    assert_eq!(state(b.addr, &live).1["state"], "placed");
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn placements_not_joined_yet_hold_their_slots() {
    // Both edges have 2 slots and say so in every heartbeat; the near one gets two sessions
    // whose players have not joined: it is full for placement until they join or time out.
    let (b, dir, near, far) = broker_with_two_edges("pending", 61, [1.0, 30.0], 7200, &[]);
    let sel = json!({"measured": [{"edge": edge_id(&near), "rtt_ms": 2.0},
                                  {"edge": edge_id(&far), "rtt_ms": 30.0}]});
    for p in ["gil", "hu"] {
        let (sid, v) = create_session(b.addr, &session_body(p));
        assert_eq!(v["candidates"].as_array().unwrap().len(), 2, "{v}");
        assert_eq!(select(b.addr, &sid, &sel)["edge"], json!(edge_id(&near)));
        common::heartbeat_ok(b.addr, &near, 2);
    }
    let (_, v) = create_session(b.addr, &session_body("ivy"));
    let offered: Vec<&Value> = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["edge"])
        .collect();
    assert_eq!(offered, vec![&json!(edge_id(&far))], "{v}");
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
