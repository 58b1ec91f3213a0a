//! The `session-broker run` binary on loopback: register, place, select, verify the token
//! offline, SIGTERM, restart on the same data dir, and find everything back.

use std::process::Command;
use std::time::{Duration, Instant};

use edgeplay_protocol::token::{EdgeId, SigningKey, VerifyingKey, from_hex, verify};
use serde_json::json;

mod common;
use common::{Broker, WAIT, create_session, edge, http, now_ms, select};

fn sigterm_and_wait(mut b: Broker) {
    let st = Command::new("kill")
        .args(["-TERM", &b.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = b.child.try_wait().unwrap() {
            assert!(
                status.success(),
                "broker exited with {status} after SIGTERM"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "broker still running {WAIT:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn place_select_sigterm_restart_keeps_edges_and_sessions() {
    let dir = std::env::temp_dir().join(format!("edgeplay-broker-it-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let b = common::start(&dir, &[]);

    let (st, k) = http(b.addr, "GET", "/v1/broker/key", None);
    assert_eq!(st, 200, "{k}");
    let pk: [u8; 32] = from_hex(k["public_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let broker_key = VerifyingKey::from_bytes(&pk).unwrap();

    let keys = [
        SigningKey::from_bytes(&[11; 32]),
        SigningKey::from_bytes(&[12; 32]),
    ];
    for (i, k) in keys.iter().enumerate() {
        let (st, v) = http(
            b.addr,
            "POST",
            "/v1/edges",
            Some(&edge(k, i as f64 * 5.0, 5000 + i as u16)),
        );
        assert_eq!(st, 201, "{v}");
    }
    let (sid, _) = create_session(
        b.addr,
        &json!({"player": "p1", "coord": {"x": 0.0, "y": 0.0, "height": 1.0}, "width": 1280, "height": 720, "fps": 60}),
    );
    let ids: Vec<EdgeId> = keys
        .iter()
        .map(|k| EdgeId(k.verifying_key().to_bytes()))
        .collect();
    let sel =
        json!({"measured": [{"edge": ids[0], "rtt_ms": 12.0}, {"edge": ids[1], "rtt_ms": 4.0}]});
    let v = select(b.addr, &sid, &sel);
    assert_eq!(v["quic_addr"], "127.0.0.1:5001");
    assert_eq!(v["whep_url"], format!("/v1/sessions/{sid}/whep"));
    let token = from_hex(v["token"].as_str().unwrap()).unwrap();
    let t = verify(&token, &broker_key, now_ms(), &ids[1]).expect("token verifies offline");
    assert_eq!(t.session.to_string(), sid);
    assert!(verify(&token, &broker_key, now_ms(), &ids[0]).is_err());

    sigterm_and_wait(b);
    let b = common::start(&dir, &[]);
    let (_, k2) = http(b.addr, "GET", "/v1/broker/key", None);
    assert_eq!(k2, k, "the key must survive a restart");
    let (st, edges) = http(b.addr, "GET", "/v1/edges", None);
    assert_eq!(st, 200);
    assert_eq!(edges.as_array().unwrap().len(), 2, "{edges}");
    let (st, s) = http(b.addr, "GET", &format!("/v1/sessions/{sid}"), None);
    assert_eq!(st, 200, "{s}");
    assert_eq!(s["edge"], json!(ids[1]));
    assert_eq!(s["player"], "p1");
    sigterm_and_wait(b);
    let _ = std::fs::remove_dir_all(&dir);
}
