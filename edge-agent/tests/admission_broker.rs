//! Exact capacity through the broker: a real `session-broker run` and one `edge-agent run
//! --broker` with `--max-sessions 2`. Two sessions placed while the edge is still empty hold
//! both of its slots in the broker before their players join, so a third request is 503 at
//! once; once both joined, the edge's heartbeat keeps it out of placement (free slots 0). Once
//! a session ends, the broker places on the edge again and a third player gets in. (A join
//! that reaches a full edge anyway is refused as "edge full" without using its token up:
//! `tests/admission.rs` and the token unit tests.)
//!
//! `session-broker` is another package's binary: `cargo test --workspace` (and `cargo xtask
//! test`) builds it next to `edge-agent`; alone, run `cargo build -p edgeplay-broker` first.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use edgeplay_client::broker::{Placement, SessionRequest, place};
use edgeplay_client::{ClientError, Session};
use support::procs::{
    edges, eventually_async, join_placement, json_call, session_body, start_broker, start_edge, tmp,
};

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
    eventually_async(
        Duration::from_secs(10),
        &format!("the broker has {want} free slots"),
        move || (free_slots(broker) == want).then_some(()),
    )
    .await;
}

async fn join(p: &Placement) -> Result<Session, ClientError> {
    join_placement(p).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_slot_edge_is_never_overbooked_through_the_broker() {
    let (_broker, baddr) = start_broker(&tmp("admission-broker"), &[]);
    let (_edge, edge_id) = start_edge(
        &format!("http://{baddr}"),
        &tmp("admission-edge"),
        &["--region", "local"],
    );
    eventually_async(Duration::from_secs(60), "the edge registered", move || {
        (!edges(baddr).is_empty()).then_some(())
    })
    .await;
    until_free_slots(baddr, 2).await;

    // Two placements before anyone joins hold both slots: the broker counts the placements
    // whose players have not joined yet, so a third request is 503 at once.
    let url = format!("http://{baddr}");
    let req = |player: &str| SessionRequest {
        region: Some("local".into()),
        ..SessionRequest::new(player, 1280, 720, 60)
    };
    let mut placed = Vec::new();
    for player in ["ann", "bob"] {
        let p = place(&url, &req(player)).await.expect("placed");
        assert_eq!(p.edge, edge_id);
        placed.push(p);
    }
    let refused = || async move {
        tokio::task::spawn_blocking(move || {
            json_call(
                baddr,
                "POST",
                "/v1/sessions",
                Some(&session_body("dan", 0.0)),
            )
        })
        .await
        .unwrap()
    };
    let (status, body) = refused().await;
    assert_eq!(status, 503, "no third placement on a 2-slot edge: {body}");
    let first = join(&placed[0]).await.expect("the first join gets in");
    let second = join(&placed[1]).await.expect("the second join gets in");

    // Full: the heartbeat says so, and the edge stays out of placement.
    until_free_slots(baddr, 0).await;
    let (status, body) = refused().await;
    assert_eq!(status, 503, "no placement on a full edge: {body}");

    // A session ends: a slot frees and the broker places here again.
    first.close().await;
    until_free_slots(baddr, 1).await;
    let p = place(&url, &req("cyd"))
        .await
        .expect("placed once a slot is free");
    let third = join(&p).await.expect("the third player joins");
    until_free_slots(baddr, 0).await;

    third.close().await;
    second.close().await;
    until_free_slots(baddr, 2).await;
}
