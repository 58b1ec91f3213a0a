//! `edge-agent run --dev` as a process on loopback: health, metrics, a live session streamed
//! over HTTP with input applied, bad requests refused, and a graceful stop on SIGTERM.

use std::process::Command;
use std::time::{Duration, Instant};

mod support;

use support::Edge;

/// One JSON request; the status and the body.
fn request(edge: &Edge, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let (status, _, body) = edge.request(
        method,
        path,
        &[("Content-Type", "application/json")],
        body.unwrap_or("").as_bytes(),
    );
    (status, body)
}

fn json_field(body: &str, field: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    match &v[field] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn dev_server_serves_a_live_session_and_stops_on_sigterm() {
    let mut edge = Edge::start_with(1);
    assert_eq!(
        request(&edge, "GET", "/healthz", None),
        (200, "ok\n".to_owned())
    );

    let (status, body) = request(&edge, "POST", "/v1/dev/sessions", Some("{\"fps\":30}"));
    assert_eq!(status, 201, "{body}");
    let id = json_field(&body, "id");
    assert_eq!(id.len(), 32, "session ids are 128 random bits");

    // The capacity is one session: a second is refused with a reason.
    let (status, body) = request(&edge, "POST", "/v1/dev/sessions", None);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("at most 1"), "{body}");

    // Bad requests name what is wrong.
    let (status, body) = request(
        &edge,
        "POST",
        "/v1/dev/sessions",
        Some("{\"fps\": \"many\"}"),
    );
    assert!(status == 400 || status == 422, "{status} {body}");
    let (status, _) = request(
        &edge,
        "POST",
        &format!("/v1/dev/sessions/{id}/input"),
        Some("{nope"),
    );
    assert_eq!(status, 400);
    let big = format!("{{\"seq\":1,\"pad\":\"{}\"}}", "x".repeat(100_000));
    let (status, _) = request(
        &edge,
        "POST",
        &format!("/v1/dev/sessions/{id}/input"),
        Some(&big),
    );
    assert_eq!(status, 413);
    let (status, _) = request(&edge, "GET", "/v1/dev/sessions/nope", None);
    assert_eq!(status, 404);

    // The stream starts with an IDR access unit carrying SPS and PPS. The connection stays
    // open below: a session with no viewer is paused and applies no input.
    let (video, viewer) = edge.stream_bytes(&format!("/v1/dev/sessions/{id}/video.h264"), 200_000);
    let body_start = video
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end")
        + 4;
    let annexb = &video[body_start..];
    let sps = annexb
        .windows(5)
        .position(|w| w[..4] == [0, 0, 0, 1] && w[4] & 0x1f == 7);
    assert!(sps.is_some(), "no SPS in the first {} bytes", annexb.len());

    let input = r#"{"seq":1,"event":{"type":"key","code":"ArrowUp","down":true}}"#;
    let (status, body) = request(
        &edge,
        "POST",
        &format!("/v1/dev/sessions/{id}/input"),
        Some(input),
    );
    assert_eq!(status, 202, "{body}");
    // Accepted input is applied at the session's next tick: wait for it, within a bound far
    // from a tick's length.
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = request(&edge, "GET", &format!("/v1/dev/sessions/{id}"), None);
        assert_eq!(status, 200, "{body}");
        if json_field(&body, "inputs_applied") == "1" {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the accepted input was not applied within 10 s: {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(viewer);
    assert!(body.contains("\"total\""), "{body}");

    let (status, metrics) = request(&edge, "GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("edgeplay_edge_encoder_info{encoder="),
        "{metrics}"
    );
    assert!(
        metrics.contains("edgeplay_edge_stage_seconds_bucket"),
        "{metrics}"
    );

    // SIGTERM: the session ends, the server drains, the process exits 0.
    let pid = edge.child().id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = edge.child().try_wait().expect("wait") {
            assert!(status.success(), "exit after SIGTERM: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
