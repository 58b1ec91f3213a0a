//! Exact capacity through the broker: a real `session-broker run` and one `edge-agent run
//! --broker` with `--max-sessions 2`. Three sessions placed while the edge is still empty get
//! three join tokens; two QUIC joins are admitted, the edge's heartbeat takes it out of
//! placement at once (free slots 0, a new session request is 503), and the third join is
//! refused as "edge full" without using its token up. Once a session ends, the broker places
//! on the edge again and the third player gets in with the very token it was refused with.
//!
//! `session-broker` is another package's binary: `cargo test --workspace` (and `cargo xtask
//! test`) builds it next to `edge-agent`; alone, run `cargo build -p edgeplay-broker` first.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edgeplay_client::broker::{Placement, SessionRequest, place};
use edgeplay_client::{Client, ClientError, ClientOptions, DecoderPreference, Session};
use support::procs::{edges, json_call, session_body, start_broker, start_edge, tmp};

/// The edge's free slots as the broker has them.
fn free_slots(broker: SocketAddr) -> u64 {
    let listed = edges(broker);
    assert_eq!(listed.len(), 1, "{listed:?}");
    listed[0]["free_slots"]
        .as_u64()
        .unwrap_or_else(|| panic!("no free_slots in {}", listed[0]))
}

/// Waits (at most 10 s) until the broker has the edge with `want` free slots.
async fn until_free_slots(broker: SocketAddr, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = tokio::task::spawn_blocking(move || free_slots(broker))
            .await
            .unwrap();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the broker has {got} free slots 10 s on, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn join(p: &Placement) -> Result<Session, ClientError> {
    let options = ClientOptions {
        decoder: DecoderPreference::Software,
        ..ClientOptions::default()
    };
    tokio::time::timeout(
        Duration::from_secs(60),
        Client::connect_with(p.quic_addr, p.cert_fingerprint, &p.token, options),
    )
    .await
    .expect("a QUIC join is answered within 60 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_edge_leaves_placement_and_a_refused_token_stays_good() {
    let (_broker, baddr) = start_broker(&tmp("admission-broker"), &[]);
    let (_edge, edge_id) = start_edge(
        &format!("http://{baddr}"),
        &tmp("admission-edge"),
        &["--region", "local"],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::task::spawn_blocking(move || edges(baddr).len())
        .await
        .unwrap()
        == 0
    {
        assert!(Instant::now() < deadline, "the edge did not register");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until_free_slots(baddr, 2).await;

    // Three placements before anyone joins: the broker hears of no load yet.
    let url = format!("http://{baddr}");
    let mut placed = Vec::new();
    for player in ["ann", "bob", "cyd"] {
        let req = SessionRequest {
            region: Some("local".into()),
            ..SessionRequest::new(player, 1280, 720, 60)
        };
        let p = place(&url, &req).await.expect("placed");
        assert_eq!(p.edge, edge_id);
        placed.push(p);
    }
    let first = join(&placed[0]).await.expect("the first join gets in");
    let second = join(&placed[1]).await.expect("the second join gets in");

    // Full: the heartbeat takes the edge out of placement at once.
    until_free_slots(baddr, 0).await;
    let (status, body) = tokio::task::spawn_blocking(move || {
        json_call(
            baddr,
            "POST",
            "/v1/sessions",
            Some(&session_body("dan", 0.0)),
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 503, "no placement on a full edge: {body}");
    match join(&placed[2]).await {
        Err(ClientError::EdgeFull { reason }) => {
            assert!(reason.contains("at most 2 sessions"), "{reason}");
        }
        Err(e) => panic!("the third join must be refused as edge full, got {e}"),
        Ok(s) => panic!("a full edge admitted a third session {}", s.id()),
    }

    // A session ends: a slot frees, the broker places here again, and the refused player's
    // token, not used up by the refusal, gets it in.
    first.close().await;
    until_free_slots(baddr, 1).await;
    let third = join(&placed[2])
        .await
        .expect("the refused token joins once a slot is free");
    until_free_slots(baddr, 0).await;

    third.close().await;
    second.close().await;
    until_free_slots(baddr, 2).await;
}
