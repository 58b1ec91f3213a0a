//! A real `session-broker run` and two `edge-agent run --broker` processes on loopback, two
//! "regions": the far edge's echo goes through testkit's UDP relay, which adds delay. The SDK,
//! given only the broker's URL, probes both, is placed on the near one and gets frames over
//! QUIC; WHEP goes through the broker's relay with the broker's join token (used once); a link
//! handshake with a bad proof is refused; an edge that does not answer gives 504; heartbeats come
//! every 500 ms from a serving edge and rarely from an idle one; a killed edge leaves placement
//! at once; SIGTERM drains.
//!
//! `session-broker` is another package's binary: `cargo test --workspace` (and `cargo xtask
//! test`) builds it next to `edge-agent`; alone, run `cargo build -p edgeplay-broker` first.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use edgeplay_client::Client;
use edgeplay_client::broker::SessionRequest;
use edgeplay_protocol::link::{
    self, EdgeAd, FrameReader, LinkMessage, encode_frame, parse_http_head,
};
use edgeplay_protocol::token::{SigningKey, to_hex};
use edgeplay_testkit::relay::{RelayConfig, UdpRelay};
use serde_json::{Value, json};

mod support;
use support::procs::{
    self, Proc, broker_key, create_session, edges, eventually, http, json_call, select,
    session_body, start_broker, tmp,
};
use support::web::{chromium_and_built_player, run_e2e};

/// An edge of region `name` at `coord` linked to `broker` (with the `echo` flags), draining for
/// at most 20 s; the process and its id.
fn start_edge(broker: SocketAddr, name: &str, coord: &str, echo: &[&str]) -> (Proc, String) {
    let dir = tmp(&format!("{name}-{coord}"));
    let mut extra = vec![
        "--region",
        name,
        "--coord",
        coord,
        "--drain-timeout-secs",
        "20",
        // The tests place more sessions than they join; each holds a slot until its join
        // deadline.
        "--max-sessions",
        "16",
    ];
    extra.extend_from_slice(echo);
    procs::start_edge(&format!("http://{broker}"), &dir, &extra)
}

/// `broker_heartbeats_total` from the broker's metrics.
fn heartbeats(broker: SocketAddr) -> u64 {
    let (_, _, m) = http(broker, "GET", "/metrics", &[], "");
    m.lines()
        .find_map(|l| l.strip_prefix("broker_heartbeats_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("heartbeat counter")
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A registration of an edge that serves nothing (its QUIC port is the discard port): `id`
/// and the issue time are set when it is signed.
fn test_ad(region: &str, coord: edgeplay_protocol::coords::Coord, echo: SocketAddr) -> EdgeAd {
    EdgeAd {
        id: edgeplay_protocol::token::EdgeId([0; 32]),
        region: region.into(),
        gpu: "none".into(),
        gpu_class: 0,
        encoders: vec!["x264".into()],
        resolutions: vec!["1280x720".into()],
        max_fps: 60,
        capacity: 1,
        price_per_min: 0,
        coord,
        quic_addr: "127.0.0.1:9".parse().unwrap(),
        cert_fingerprint: "00".repeat(32),
        echo_addr: Some(echo),
        issued_unix_ms: 0,
    }
}

/// A raw link that answers the hello with a proof signed by the wrong key.
fn forged_link(broker: SocketAddr) -> LinkMessage {
    let mut s = TcpStream::connect(broker).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /v1/edges/link HTTP/1.1\r\nHost: {broker}\r\nConnection: upgrade\r\nUpgrade: {}\r\n\r\n",
        link::UPGRADE
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut frames = FrameReader::default();
    let mut chunk = [0u8; 4096];
    let mut head_done = false;
    let mut read_msg = |s: &mut TcpStream, buf: &mut Vec<u8>| loop {
        if !head_done && let Some(h) = parse_http_head(buf).unwrap() {
            assert_eq!(h.status, 101);
            frames.push(&buf[h.len..]);
            head_done = true;
        }
        if head_done && let Some(m) = frames.next_message().unwrap() {
            return m;
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "broker closed the link");
        if head_done {
            frames.push(&chunk[..n]);
        } else {
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let LinkMessage::Hello { .. } = read_msg(&mut s, &mut buf) else {
        panic!("no hello")
    };
    let key = SigningKey::from_bytes(&[42; 32]);
    let wrong = SigningKey::from_bytes(&[43; 32]);
    let advert = test_ad("forged", Default::default(), "127.0.0.1:9".parse().unwrap());
    let proof = {
        use ed25519_dalek::Signer;
        wrong.sign(b"not the challenge")
    };
    let reg = LinkMessage::Register {
        registration: advert.signed(&key, edgeplay_edge::link::now_ms()),
        edge_nonce: "11".repeat(32),
        proof: to_hex(&proof.to_bytes()),
    };
    s.write_all(&encode_frame(&reg).unwrap()).unwrap();
    read_msg(&mut s, &mut buf)
}

#[test]
fn two_regions_through_the_broker() {
    let (mut broker, baddr) = start_broker(&tmp("broker"), &[]);

    // A bad proof on the link is refused, and nothing is registered.
    match forged_link(baddr) {
        LinkMessage::Refused { error } => assert!(error.contains("proof"), "{error}"),
        other => panic!("expected refused, got {other:?}"),
    }
    assert!(edges(baddr).is_empty());

    let rt = tokio::runtime::Runtime::new().unwrap();
    // The far region: its echo answers through a relay adding 40 ms each way.
    let far_echo = free_udp_port();
    let relay = rt
        .block_on(UdpRelay::start(
            SocketAddr::from(([127, 0, 0, 1], far_echo)),
            RelayConfig {
                delay: Duration::from_millis(40),
                ..RelayConfig::default()
            },
        ))
        .unwrap();
    let far_echo_arg = format!("127.0.0.1:{far_echo}");
    let relay_arg = relay.local_addr().to_string();
    let (far, far_id) = start_edge(
        baddr,
        "far",
        "0,0,1",
        &[
            "--echo-listen",
            &far_echo_arg,
            "--advertise-echo",
            &relay_arg,
        ],
    );
    let (mut near, near_id) = start_edge(baddr, "near", "30,0,1", &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while edges(baddr).len() < 2 {
        assert!(Instant::now() < deadline, "edges did not register");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The SDK names only the broker; coordinates favour the far edge, probes the near one.
    let key = broker_key(baddr);
    let req = SessionRequest {
        coord: Some((0.0, 0.0, 1.0)),
        broker_key: Some(key),
        ..SessionRequest::new("alice", 1280, 720, 60)
    };
    rt.block_on(async {
        // A placement checked against another key is refused.
        let wrong = SessionRequest {
            broker_key: Some(SigningKey::from_bytes(&[7; 32]).verifying_key().to_bytes()),
            ..req.clone()
        };
        let e = edgeplay_client::broker::place(&format!("http://{baddr}"), &wrong).await;
        assert!(
            matches!(e, Err(edgeplay_client::broker::BrokerError::BadSignature)),
            "{e:?}"
        );
        let (mut session, placement) = Client::connect_via_broker(&format!("http://{baddr}"), &req)
            .await
            .expect("placed and connected");
        eprintln!(
            "placed on {} after probing {:?}",
            placement.edge, placement.measured
        );
        assert_eq!(placement.measured.len(), 2, "{:?}", placement.measured);
        assert_eq!(placement.edge, near_id, "{:?}", placement.measured);
        let far_rtt = placement
            .measured
            .iter()
            .find(|(e, _)| *e == far_id)
            .and_then(|m| m.1)
            .expect("far edge measured");
        assert!(far_rtt >= 80.0, "the relay adds 80 ms, measured {far_rtt}");
        // The SDK fitted the player's own coordinate to the two measurements.
        let (x, y, h) = placement.player_coord.expect("a player coordinate");
        assert!(x.is_finite() && y.is_finite() && h > 0.0, "{x} {y} {h}");
        let mut frames = 0;
        let got = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(f) = session.next_frame().await {
                assert_eq!((f.width, f.height), (1280, 720));
                frames += 1;
                if frames >= 10 {
                    break;
                }
            }
        })
        .await;
        assert!(got.is_ok() && frames >= 10, "got {frames} frames");
        // One edge serves a session (heartbeats every 500 ms), the other is idle (every 15 s).
        let before = heartbeats(baddr);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            let _ = tokio::time::timeout(Duration::from_millis(100), session.next_frame()).await;
        }
        let busy = heartbeats(baddr) - before;
        assert!(
            (4..=9).contains(&busy),
            "{busy} heartbeats in 3 s while serving"
        );
        session.close().await;
    });

    // Both idle now: once the session's end is reported (the edge's 500 ms heartbeats stop: a
    // second without one, within 20 s, however long the session takes to wind down), no more
    // than one heartbeat in 3 s.
    let quiet_by = Instant::now() + Duration::from_secs(20);
    let mut last = heartbeats(baddr);
    loop {
        std::thread::sleep(Duration::from_millis(1200));
        let now = heartbeats(baddr);
        if now == last {
            break;
        }
        assert!(
            Instant::now() < quiet_by,
            "the edges still heartbeat every 500 ms 20 s after the session closed"
        );
        last = now;
    }
    let before = heartbeats(baddr);
    std::thread::sleep(Duration::from_secs(3));
    let idle = heartbeats(baddr) - before;
    assert!(idle <= 1, "{idle} heartbeats in 3 s while idle");

    // WHEP through the relay: CORS preflight; a bad token is refused by the edge; the broker's
    // token passes the edge's check (the bad SDP is what it then refuses), and only once.
    let (sid, _) = create_session(baddr, "bob", 30.0);
    let (st, _, _) = http(baddr, "POST", &format!("/v1/sessions/{sid}/whep"), &[], "");
    assert_eq!(st, 409, "an offer before selection");
    let v = select(baddr, &sid, &near_id);
    assert_eq!(v["whep_url"], format!("/v1/sessions/{sid}/whep"));
    let token = v["token"].as_str().unwrap().to_owned();
    let whep = format!("/v1/sessions/{sid}/whep");
    let (st, h, _) = http(baddr, "OPTIONS", &whep, &[], "");
    assert_eq!(st, 204);
    assert!(
        h.iter()
            .any(|(k, v)| k == "access-control-expose-headers" && v.contains("location"))
    );
    let sdp = [("Content-Type", "application/sdp")];
    let (st, h, body) = http(
        baddr,
        "POST",
        &whep,
        &[sdp[0], ("Authorization", "Bearer 00")],
        "v=0\r\n",
    );
    assert_eq!(st, 401, "{body}");
    assert!(
        h.iter()
            .any(|(k, v)| k == "access-control-allow-origin" && v == "*")
    );
    let auth = format!("Bearer {token}");
    // A malformed offer with this session's join token, to the WHEP relay at `path`.
    let offer_garbage = |path: &str| {
        http(
            baddr,
            "POST",
            path,
            &[sdp[0], ("Authorization", &auth)],
            "garbage",
        )
    };
    let (st, _, body) = offer_garbage(&whep);
    assert_eq!(st, 400, "the token passed; the offer is refused: {body}");
    // The token was used up on that offer and the session failed on the edge, which told the
    // broker: the session has ended, and its relay is gone.
    let summary = eventually(Duration::from_secs(10), "the failed session ended", || {
        let (_, v) = json_call(baddr, "GET", &format!("/v1/sessions/{sid}"), None);
        (v["state"] == "ended").then_some(v)
    });
    assert_eq!(summary["reason"], "failed", "{summary}");
    let (st, _, body) = offer_garbage(&whep);
    assert_eq!(st, 404, "an ended session takes no offer: {body}");
    // Another session's relay refuses this session's token before the edge sees it.
    let (other, _) = create_session(baddr, "dave", 30.0);
    select(baddr, &other, &near_id);
    let (st, _, body) = offer_garbage(&format!("/v1/sessions/{other}/whep"));
    assert_eq!(st, 403, "{body}");
    let (st, _, _) = http(
        baddr,
        "POST",
        &format!("/v1/sessions/{}/whep", "0".repeat(32)),
        &[],
        "",
    );
    assert_eq!(st, 404, "unknown session");

    // An edge that does not answer (stopped, its link still open): 504 with a clear message.
    near.signal("-STOP");
    let t = Instant::now();
    let live_whep = format!("/v1/sessions/{other}/whep/abc123");
    let (st, h, body) = http(baddr, "GET", &live_whep, &[], "");
    near.signal("-CONT");
    assert_eq!(st, 504, "{body}");
    assert!(body.contains("did not answer"), "{body}");
    assert!(h.iter().any(|(k, _)| k == "access-control-allow-origin"));
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());

    // Killing the far edge takes it out of placement as soon as its link drops.
    let mut far = far;
    far.signal("-KILL");
    let _ = far.wait(Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = create_session(baddr, "carol", 0.0);
        let c: Vec<&str> = v["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["edge"].as_str())
            .collect();
        if c == [near_id.as_str()] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "killed edge still offered: {c:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, _, m) = http(baddr, "GET", "/metrics", &[], "");
    assert!(m.contains("broker_edge_links 1"), "{m}");
    assert!(m.contains("broker_link_handshakes_refused_total 1"), "{m}");

    // SIGTERM drains: the broker stops placing on the edge at once, the open session keeps
    // playing, and the edge exits cleanly once it ends.
    rt.block_on(async {
        let (mut session, placement) =
            Client::connect_via_broker(&format!("http://{baddr}"), &req.clone())
                .await
                .expect("placed on the remaining edge");
        assert_eq!(placement.edge, near_id);
        assert!(session.next_frame().await.is_some());
        near.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (st, v) = json_call(
                baddr,
                "POST",
                "/v1/sessions",
                Some(&session_body("erin", 0.0)),
            );
            if st == 503 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a draining edge is still offered: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut more = 0;
        while more < 30 {
            let f = tokio::time::timeout(Duration::from_secs(10), session.next_frame()).await;
            assert!(matches!(f, Ok(Some(_))), "the session stops while draining");
            more += 1;
        }
        assert!(
            near.child.try_wait().unwrap().is_none(),
            "exited before its session ended"
        );
        session.close().await;
    });
    let st = near
        .wait(Duration::from_secs(20))
        .expect("edge exits once its session ended");
    assert!(st.success(), "{st:?}");
    broker.signal("-TERM");
    assert!(
        broker
            .wait(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    rt.block_on(relay.stop());
}

/// Chromium given only the broker's URL: it probes both candidate edges with RTCPeerConnections
/// signalled through the broker, is placed, and plays through the broker's WHEP relay.
#[test]
fn chromium_plays_through_the_broker_with_only_its_url() {
    let (chromium, _) = chromium_and_built_player();
    let (mut broker, baddr) = start_broker(&tmp("broker-web"), &[]);
    let (mut ea, a_id) = start_edge(baddr, "web", "0,0,1", &[]);
    let (mut eb, b_id) = start_edge(baddr, "web", "5,0,1", &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while edges(baddr).len() < 2 {
        assert!(Instant::now() < deadline, "edges did not register");
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("http://{baddr}");
    let (out, stdout) = run_e2e(
        &chromium,
        "e2e via broker",
        120,
        "tests/e2e-broker.mjs",
        &[url.as_ref(), "web".as_ref()],
    );
    for (name, e) in [("a", &mut ea), ("b", &mut eb)] {
        let st = e.child.try_wait().expect("edge status");
        assert!(st.is_none(), "edge {name} exited during the run: {st:?}");
    }
    assert!(out.status.success(), "browser e2e failed: {stdout}");
    let r: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(r["ok"], true);
    let measured = r["placement"]["measured"].as_array().expect("measured");
    assert_eq!(measured.len(), 2, "{measured:?}");
    for m in measured {
        let rtt = m["rttMs"].as_f64().expect("each candidate probed");
        assert!((0.0..1000.0).contains(&rtt), "{m}");
    }
    let picked = r["placement"]["edge"].as_str().unwrap();
    assert!(picked == a_id || picked == b_id);
    broker.signal("-TERM");
    let _ = broker.wait(Duration::from_secs(10));
}

/// The coordinate an edge record carries when the edge reported one it measured.
fn measured_coord(rec: &Value) -> Option<edgeplay_protocol::coords::Coord> {
    serde_json::from_value(rec.get("coord")?.clone()).ok()
}

#[test]
fn an_edge_measures_its_coordinate_against_the_peers_the_broker_names() {
    use edgeplay_protocol::coords::{Coord, estimate_rtt};
    let (broker, baddr) = start_broker(&tmp("broker-coords"), &["--peers-every-ms", "300"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Four landmark edges at known coordinates, registered over HTTP (signed), each with a UDP
    // echo behind a relay whose delay makes the RTT from the point `truth` what the coordinates
    // say. The real edge starts at the origin and must find `truth`.
    let truth = Coord {
        x: 10.0,
        y: 5.0,
        height: 1.0,
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut relays = Vec::new();
    let mut landmarks = Vec::new();
    for (i, (x, y)) in [(0.0, 0.0), (40.0, 0.0), (0.0, 40.0), (40.0, 40.0)]
        .into_iter()
        .enumerate()
    {
        let at = Coord { x, y, height: 1.0 };
        let rtt = estimate_rtt(&truth, &at);
        let (echo_addr, relay) = rt.block_on(async {
            let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = echo.local_addr().unwrap();
            tokio::spawn(edgeplay_edge::link::serve_echo(echo, stop.clone()));
            let relay = UdpRelay::start(
                addr,
                RelayConfig {
                    delay: Duration::from_secs_f64(rtt / 2000.0),
                    ..RelayConfig::default()
                },
            )
            .await
            .unwrap();
            (relay.local_addr(), relay)
        });
        relays.push(relay);
        let key = SigningKey::from_bytes(&[100 + i as u8; 32]);
        let body = test_ad("lab", at, echo_addr).signed(&key, edgeplay_edge::link::now_ms());
        let (st, v) = json_call(baddr, "POST", "/v1/edges", Some(&body));
        assert_eq!(st, 201, "{v}");
        landmarks.push((at, rtt));
    }
    let (edge, id) = start_edge(baddr, "lab", "0,0,1", &[]);
    // Bounded: 60 s for the reported coordinate to predict every landmark's RTT within 6 ms
    // and to sit within 6 ms of `truth` on the plane (the start, the origin, is 11 ms from both:
    // the measured RTTs carry a millisecond or two of relay and scheduling on top).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (coord, worst) = loop {
        let rec = edges(baddr)
            .into_iter()
            .find(|r| r["ad"]["id"] == json!(id))
            .unwrap_or(Value::Null);
        if let Some(c) = measured_coord(&rec) {
            let worst = landmarks
                .iter()
                .map(|(at, rtt)| (estimate_rtt(&c, at) - rtt).abs())
                .fold(0.0, f64::max);
            if worst < 6.0 && (c.x - truth.x).hypot(c.y - truth.y) < 6.0 {
                break (c, worst);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the edge's coordinate did not converge in 60 s: {rec}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    eprintln!("measured {coord:?} (truth {truth:?}): worst landmark error {worst:.2} ms");
    drop(edge);
    drop(broker);
    let _ = stop_tx.send(true);
    rt.block_on(async {
        for r in relays {
            r.stop().await;
        }
    });
}
