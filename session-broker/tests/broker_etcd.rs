//! Two `session-broker run --store etcd://…` processes on one real etcd: they serve one
//! registry, and `kill -9` of one while clients create sessions on both loses no acknowledged
//! session; the dead broker's lease expires and it leaves `GET /v1/brokers`.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    Broker, create_session, edge, edge_id, eventually, http, select, session_body, start, try_http,
};
use edgeplay_broker::tokens::BrokerKey;
use edgeplay_protocol::token::{SigningKey, from_hex, verify};
use edgeplay_testkit::etcd::Etcd;
use serde_json::{Value, json};

fn broker_ids(b: &Broker) -> Vec<String> {
    let (st, v) = http(b.addr, "GET", "/v1/brokers", None);
    assert_eq!(st, 200, "{v}");
    v["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["url"].as_str().unwrap().to_owned())
        .collect()
}

/// Creates sessions on `addr` until `stop`; returns the ids answered 201.
fn create_loop(addr: std::net::SocketAddr, tag: &str, stop: &AtomicBool) -> Vec<String> {
    let mut acked = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        match try_http(
            addr,
            "POST",
            "/v1/sessions",
            Some(&session_body(&format!("{tag}-{i}"))),
        ) {
            Ok((201, v)) => acked.push(v["session"].as_str().unwrap().to_owned()),
            Ok((st, v)) => panic!("session request answered {st}: {v}"),
            // The broker was killed: nothing acknowledged, try again (as a client would).
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    acked
}

#[test]
fn two_brokers_share_one_registry_and_a_kill_9_loses_no_session() {
    let etcd = Etcd::start().expect("etcd");
    let url = etcd.store_url("cluster");
    let root = std::env::temp_dir().join(format!("edgeplay-broker-etcd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (dir_a, dir_b) = (root.join("a"), root.join("b"));
    // Brokers of one deployment share the signing key, so edges accept either's tokens.
    let key = BrokerKey::load_or_create(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    std::fs::copy(dir_a.join("broker.key"), dir_b.join("broker.key")).unwrap();

    let a = start(&dir_a, &["--store", &url]);
    let b = start(&dir_b, &["--store", &url]);
    let (url_a, url_b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    let both: HashSet<String> = [url_a.clone(), url_b.clone()].into();
    eventually(Duration::from_secs(10), "both brokers listed", || {
        (broker_ids(&a).into_iter().collect::<HashSet<_>>() == both).then_some(())
    });
    assert_eq!(
        broker_ids(&b).into_iter().collect::<HashSet<_>>(),
        both,
        "both see the same list"
    );

    // An edge registered on each broker is placeable from the other.
    let ka = SigningKey::from_bytes(&[21; 32]);
    let kb = SigningKey::from_bytes(&[22; 32]);
    let (st, v) = http(a.addr, "POST", "/v1/edges", Some(&edge(&ka, 0.0, 5001)));
    assert_eq!(st, 201, "{v}");
    let (st, v) = http(b.addr, "POST", "/v1/edges", Some(&edge(&kb, 10.0, 5002)));
    assert_eq!(st, 201, "{v}");
    for (on, other_edge) in [(&a, edge_id(&kb)), (&b, edge_id(&ka))] {
        eventually(
            Duration::from_secs(10),
            "the other's edge placeable",
            || {
                let (st, v) = http(on.addr, "POST", "/v1/sessions", Some(&session_body("p")));
                assert_eq!(st, 201, "{v}");
                v["candidates"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["edge"] == json!(other_edge))
                    .then_some(())
            },
        );
    }

    // A session created on A is read, and placed, on B; B's token verifies with the shared key.
    let (sid, _) = create_session(a.addr, &session_body("zoe"));
    let (st, v) = http(b.addr, "GET", &format!("/v1/sessions/{sid}"), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["player"], "zoe");
    let sel = json!({"measured": [{"edge": edge_id(&ka), "rtt_ms": 3.0}]});
    let v = select(b.addr, &sid, &sel);
    let token = from_hex(v["token"].as_str().unwrap()).unwrap();
    verify(&token, &key.public(), common::now_ms(), &edge_id(&ka)).expect("token verifies");
    let (_, v) = http(a.addr, "GET", &format!("/v1/sessions/{sid}"), None);
    assert_eq!(v["edge"], json!(edge_id(&ka)), "A reads B's placement");

    // Clients create sessions on both; A is killed (SIGKILL) half-way.
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = [(a.addr, "on-a"), (b.addr, "on-b")]
        .into_iter()
        .map(|(addr, tag)| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || create_loop(addr, tag, &stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let mut a = a;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<Vec<String>> = loops.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        !acked[0].is_empty() && !acked[1].is_empty(),
        "both brokers served sessions before the kill: {} and {}",
        acked[0].len(),
        acked[1].len()
    );
    let mut lost = Vec::new();
    for id in acked.iter().flatten() {
        let (st, _) = http(b.addr, "GET", &format!("/v1/sessions/{id}"), None);
        if st != 200 {
            lost.push(id.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged sessions lost: {:?}",
        lost.len(),
        acked.iter().flatten().count(),
        &lost[..lost.len().min(5)]
    );
    eprintln!(
        "sessions acknowledged: {} on A (killed), {} on B; all readable on B",
        acked[0].len(),
        acked[1].len()
    );

    // A's lease expires (TTL 2 s) and its key goes; B stays.
    eventually(Duration::from_secs(15), "A's lease expired", || {
        (broker_ids(&b) == [url_b.clone()]).then_some(())
    });
    eprintln!("A left /v1/brokers {:?} after the kill", killed.elapsed());

    // A's edge (serving zoe's session, placed through B) never reconnects: B adopts it once A's
    // lease is gone, and marks it dead after three missed serving periods; zoe's session
    // ends (`edge_lost`). B's own edge stays alive (idle, 45 s).
    eventually(
        Duration::from_secs(15),
        "A's orphaned edge marked dead on B",
        || {
            let (_, v) = http(b.addr, "GET", "/v1/edges", None);
            let state = |id: &Value| {
                v.as_array()
                    .unwrap()
                    .iter()
                    .find(|e| &e["ad"]["id"] == id)
                    .map(|e| e["state"].clone())
            };
            assert_eq!(state(&json!(edge_id(&kb))), Some(json!("alive")));
            (state(&json!(edge_id(&ka))) == Some(json!("dead"))).then_some(())
        },
    );
    eventually(
        Duration::from_secs(10),
        "zoe's session ended with its edge",
        || {
            let (_, v) = http(b.addr, "GET", &format!("/v1/sessions/{sid}"), None);
            (v["state"] == "ended" && v["reason"] == "edge_lost").then_some(())
        },
    );
    drop(a);
    drop(b);
    let _ = std::fs::remove_dir_all(&root);
}
