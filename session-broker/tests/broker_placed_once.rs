//! A session is placed once, on a real `session-broker run`: the first `POST
//! /v1/sessions/{id}/select` places it and mints its join token; a second one answers 409 with
//! the reason and no token, and leaves the placement as it was. Of two selections racing on
//! one fresh session, exactly one places it.

mod common;

use std::sync::{Arc, Barrier};

use common::{broker_with_two_edges, create_session, edge_id, http, select, session_body};
use serde_json::{Value, json};

/// The value of the metric line `name` in `/metrics`.
fn metric(metrics: &Value, name: &str) -> String {
    let text = metrics.as_str().expect("metrics are text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no `{name}` in {text}"))
        .to_owned()
}

#[test]
fn a_second_select_is_409_with_the_reason_and_no_token() {
    let (b, dir, near, far) = broker_with_two_edges("once", 41, [1.0, 30.0], 7000, &[]);
    let (sid, _) = create_session(b.addr, &session_body("ann"));
    let first = select(
        b.addr,
        &sid,
        &json!({"measured": [{"edge": edge_id(&near), "rtt_ms": 2.0}]}),
    );
    assert_eq!(first["edge"], json!(edge_id(&near)));
    assert!(first["token"].is_string(), "{first}");

    // Again, even measuring the other edge as faster: refused, the reason given, no token.
    let again = json!({"measured": [
        {"edge": edge_id(&far), "rtt_ms": 1.0},
        {"edge": edge_id(&near), "rtt_ms": 50.0},
    ]});
    let (st, v) = http(
        b.addr,
        "POST",
        &format!("/v1/sessions/{sid}/select"),
        Some(&again),
    );
    assert_eq!(st, 409, "{v}");
    let error = v["error"].as_str().expect("a JSON error");
    assert!(
        error.contains(&format!(
            "session {sid} is already placed on edge {}",
            edge_id(&near)
        )) && error.contains("a session is placed once"),
        "{error}"
    );
    assert!(v.get("token").is_none(), "{v}");
    // The placement is the first one's; one token was minted in all.
    let (st, v) = http(b.addr, "GET", &format!("/v1/sessions/{sid}"), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["edge"], json!(edge_id(&near)), "{v}");
    let (_, m) = http(b.addr, "GET", "/metrics", None);
    assert_eq!(metric(&m, "broker_selections_total"), "1");
    assert_eq!(metric(&m, "broker_selections_refused_placed_total"), "1");

    // Two selections racing on a fresh session: one places it, the other is told it is placed.
    let (sid, _) = create_session(b.addr, &session_body("bo"));
    let start_line = Arc::new(Barrier::new(2));
    let racers: Vec<_> = [&near, &far]
        .into_iter()
        .map(|k| {
            let (addr, sid, id) = (b.addr, sid.clone(), edge_id(k));
            let start_line = Arc::clone(&start_line);
            std::thread::spawn(move || {
                start_line.wait();
                http(
                    addr,
                    "POST",
                    &format!("/v1/sessions/{sid}/select"),
                    Some(&json!({"measured": [{"edge": id, "rtt_ms": 1.0}]})),
                )
            })
        })
        .collect();
    let mut answers: Vec<(u16, Value)> = racers
        .into_iter()
        .map(|r| r.join().expect("racer"))
        .collect();
    answers.sort_by_key(|(st, _)| *st);
    let [(ok, won), (conflict, lost)] = &answers[..] else {
        unreachable!("two racers")
    };
    assert_eq!((*ok, *conflict), (200, 409), "{answers:?}");
    assert!(lost.get("token").is_none(), "{lost}");
    let placed_on = won["edge"].as_str().expect("the winner's edge");
    assert!(
        lost["error"]
            .as_str()
            .unwrap()
            .contains(&format!("is already placed on edge {placed_on}")),
        "{lost}"
    );
    let (_, v) = http(b.addr, "GET", &format!("/v1/sessions/{sid}"), None);
    assert_eq!(v["edge"], json!(placed_on), "{v}");
    let (_, m) = http(b.addr, "GET", "/metrics", None);
    assert_eq!(metric(&m, "broker_selections_total"), "2");
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
