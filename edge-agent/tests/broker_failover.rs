//! Broker failover with real processes: one etcd, two `session-broker run --store etcd://…`
//! brokers sharing one key, one `edge-agent run --broker <A>`. The edge is placeable from both;
//! a player plays on it through A; clients keep creating sessions on B; A is killed with
//! SIGKILL. The edge, told by A which brokers share the registry, links to B within the bound:
//! B lists it alive with home B, the edge's metrics count the failover to B, the open session
//! keeps its frames, every session B acknowledged is still readable on B, a new session placed
//! through B joins over QUIC and gets frames, and B relays WHEP to the edge over the new link.
//!
//! `session-broker` is another package's binary: `cargo test --workspace` (and `cargo xtask
//! test`) builds it next to `edge-agent`; alone, run `cargo build -p edgeplay-broker` first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use edgeplay_client::Client;
use edgeplay_client::broker::SessionRequest;
use edgeplay_protocol::token::{SigningKey, to_hex};
use edgeplay_testkit::etcd::Etcd;
use serde_json::{Value, json};

mod support;
use support::procs::{
    create_session, edge_record, eventually, json_call, offers, select, session_body, start_broker,
    start_edge, try_http,
};

/// How long after the kill the edge must be linked to B (A's lease has a 2 s TTL; the edge
/// itself needs only the redial).
const FAILOVER_BOUND: Duration = Duration::from_secs(10);

/// `url → id` of the live brokers as `broker` lists them.
fn brokers(broker: SocketAddr) -> Vec<(String, String)> {
    let (st, v) = json_call(broker, "GET", "/v1/brokers", None);
    assert_eq!(st, 200, "{v}");
    v["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["url"].as_str().unwrap().to_owned(),
                b["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Creates sessions on `addr` until `stop`: the ids answered 201.
fn create_loop(addr: SocketAddr, stop: &AtomicBool) -> Vec<String> {
    let mut acked = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let body = session_body(&format!("load-{i}"), 0.0).to_string();
        let json = [("Content-Type", "application/json")];
        if let Ok((st, _, b)) = try_http(addr, "POST", "/v1/sessions", &json, &body) {
            assert_eq!(st, 201, "B answered {st}: {b}");
            let v: Value = serde_json::from_str(&b).unwrap();
            acked.push(v["session"].as_str().unwrap().to_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    acked
}

/// `edgeplay_edge_broker_failovers_total` lines of the edge's metrics.
fn failover_lines(edge_http: SocketAddr) -> Vec<String> {
    let (_, _, m) = try_http(edge_http, "GET", "/metrics", &[], "").expect("edge metrics");
    m.lines()
        .filter(|l| l.starts_with("edgeplay_edge_broker_failovers_total{"))
        .map(str::to_owned)
        .collect()
}

/// Selects `edge` for `sid` through `asked`, then posts an offer with a bad join token to the
/// WHEP relay on `relay`: the edge's own 401 must come back. The `whep_url` the select gave.
fn select_then_offer_a_bad_token(
    asked: SocketAddr,
    relay: SocketAddr,
    sid: &str,
    edge: &str,
) -> String {
    let v = select(asked, sid, edge);
    let (st, _, body) = try_http(
        relay,
        "POST",
        &format!("/v1/sessions/{sid}/whep"),
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", "Bearer 00"),
        ],
        "v=0\r\n",
    )
    .unwrap();
    assert_eq!(st, 401, "the edge's answer through {relay}'s relay: {body}");
    v["whep_url"].as_str().expect("whep_url").to_owned()
}

#[test]
fn a_killed_brokers_edge_links_to_the_other_and_serves_its_players() {
    let etcd = Etcd::start().expect("etcd");
    let store = etcd.store_url("failover");
    let root =
        std::env::temp_dir().join(format!("edgeplay-broker-failover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    // Brokers on one etcd share the signing key (32 raw bytes), so the edge accepts both.
    let key = SigningKey::from_bytes(&[5; 32]);
    let (dir_a, dir_b, dir_e) = (root.join("a"), root.join("b"), root.join("edge"));
    for d in [&dir_a, &dir_b] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("broker.key"), key.to_bytes()).unwrap();
    }
    let (mut a, addr_a) = start_broker(&dir_a, &["--store", &store]);
    let (_b, addr_b) = start_broker(&dir_b, &["--store", &store]);
    let (url_a, url_b) = (format!("http://{addr_a}"), format!("http://{addr_b}"));
    let listed = eventually(Duration::from_secs(10), "both brokers listed", || {
        let l = brokers(addr_b);
        (l.len() == 2).then_some(l)
    });
    let id_of = |url: &str| {
        listed
            .iter()
            .find(|(u, _)| u == url)
            .map(|(_, id)| id.clone())
            .unwrap_or_else(|| panic!("{url} not in {listed:?}"))
    };
    let (id_a, id_b) = (id_of(&url_a), id_of(&url_b));

    let broker_key = to_hex(key.verifying_key().as_bytes());
    let (edge, edge_id) = start_edge(
        &url_a,
        &dir_e,
        // Room for the sessions placed here and never joined (each holds a slot until its
        // join deadline) beside the player.
        &[
            "--broker-key",
            &broker_key,
            "--coord",
            "0,0,1",
            "--max-sessions",
            "8",
        ],
    );
    let edge_http: SocketAddr = edge
        .line("http http://")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();

    // Linked to A (home A), and B follows the record through etcd: placeable from both.
    eventually(Duration::from_secs(60), "the edge linked to A", || {
        let r = edge_record(addr_a, &edge_id)?;
        (r["home"] == json!(id_a) && r["state"] == "alive").then_some(())
    });
    for on in [addr_a, addr_b] {
        eventually(Duration::from_secs(10), "the edge placeable", || {
            let (_, v) = create_session(on, "p", 0.0);
            offers(&v, &edge_id).then_some(())
        });
    }

    // A player asking B for a session is sent to A, the broker the edge is linked to, for the
    // probe and for WHEP; A finds B's session through etcd and relays to the edge, which answers
    // for itself (a malformed probe offer: 400; a bad join token: 401).
    let (sid, v) = create_session(addr_b, "dee", 0.0);
    let cand = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["edge"] == json!(edge_id))
        .expect("the edge is a candidate")
        .clone();
    let probe_url = cand["probe_url"].as_str().unwrap();
    assert_eq!(
        probe_url,
        format!("{url_a}/v1/sessions/{sid}/probe/{edge_id}"),
        "{cand}"
    );
    let (st, _, body) = try_http(
        addr_a,
        "POST",
        probe_url.strip_prefix(&url_a).unwrap(),
        &[("Content-Type", "application/sdp")],
        "v=0\r\n",
    )
    .unwrap();
    assert_eq!(st, 400, "the edge's own refusal through A: {body}");
    assert!(body.contains("cannot answer the SDP offer"), "{body}");
    let whep_url = select_then_offer_a_bad_token(addr_b, addr_a, &sid, &edge_id);
    assert_eq!(whep_url, format!("{url_a}/v1/sessions/{sid}/whep"));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let req = |player: &str| SessionRequest {
        coord: Some((0.0, 0.0, 1.0)),
        broker_key: Some(key.verifying_key().to_bytes()),
        ..SessionRequest::new(player, 1280, 720, 60)
    };
    let frames = |session: &mut edgeplay_client::Session, n: usize| {
        rt.block_on(async {
            let mut got = 0;
            let _ = tokio::time::timeout(Duration::from_secs(60), async {
                while got < n && session.next_frame().await.is_some() {
                    got += 1;
                }
            })
            .await;
            got
        })
    };
    // A player on the edge, placed through A.
    let (mut first, placed) = rt
        .block_on(Client::connect_via_broker(&url_a, &req("ann")))
        .expect("placed through A and connected");
    assert_eq!(placed.edge, edge_id);
    assert_eq!(frames(&mut first, 5), 5, "frames before the kill");

    // Load on B while A dies.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || create_loop(addr_b, &stop))
    };
    std::thread::sleep(Duration::from_millis(500));
    a.child.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    let _ = a.child.wait();

    eventually(FAILOVER_BOUND, "the edge linked to B, home B", || {
        let r = edge_record(addr_b, &edge_id)?;
        (r["home"] == json!(id_b) && r["state"] == "alive").then_some(())
    });
    let moved_after = killed.elapsed();
    eprintln!("edge linked to B {moved_after:?} after A's SIGKILL");
    let lines = eventually(Duration::from_secs(5), "failover counted", || {
        let l = failover_lines(edge_http);
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(&format!("to=\"{addr_b}\"")) && lines[0].ends_with(" 1"),
        "{lines:?}"
    );
    assert!(
        lines[0].contains(&format!("from=\"{addr_a}\"")),
        "{lines:?}"
    );

    // The open session never depended on the broker.
    assert_eq!(frames(&mut first, 5), 5, "frames after the failover");

    stop.store(true, Ordering::Relaxed);
    let acked = load.join().expect("load loop");
    assert!(!acked.is_empty(), "B acknowledged sessions");
    for sid in &acked {
        let (st, v) = json_call(addr_b, "GET", &format!("/v1/sessions/{sid}"), None);
        assert_eq!(st, 200, "acknowledged session {sid} lost: {v}");
    }
    // The first player's session is live: its edge never died.
    let (st, v) = json_call(
        addr_b,
        "GET",
        &format!("/v1/sessions/{}", placed.session),
        None,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["edge"], json!(edge_id), "{v}");
    assert_eq!(v["state"], json!("running"), "{v}");

    // A new player placed through B joins over QUIC and plays.
    let (mut second, placed) = rt
        .block_on(Client::connect_via_broker(&url_b, &req("bob")))
        .expect("placed through B and connected");
    assert_eq!(placed.edge, edge_id);
    assert_eq!(frames(&mut second, 5), 5, "frames through B's placement");
    rt.block_on(async {
        second.close().await;
        first.close().await;
    });

    // B relays WHEP to the edge over the new link: the edge itself refuses a bad token. (Its
    // slots come free once its heartbeat after the two closes reaches B.)
    let sid = eventually(Duration::from_secs(10), "a free slot again", || {
        let (st, v) = json_call(
            addr_b,
            "POST",
            "/v1/sessions",
            Some(&session_body("cy", 0.0)),
        );
        assert!(st == 201 || st == 503, "{st}: {v}");
        (st == 201).then(|| v["session"].as_str().unwrap().to_owned())
    });
    let whep_url = select_then_offer_a_bad_token(addr_b, addr_b, &sid, &edge_id);
    assert_eq!(whep_url, format!("/v1/sessions/{sid}/whep"));
    eprintln!(
        "{} sessions acknowledged by B during the failover, none lost",
        acked.len()
    );
    drop(edge);
    let _ = std::fs::remove_dir_all(&root);
}
