//! The requests the broker relays over the link: WHEP (served by the edge's own router, and
//! nothing else of it) and browsers' RTT probes.

use axum::Router;
use axum::body::Body;
use edgeplay_protocol::link::{LinkMessage, MAX_FRAME};
use tower::ServiceExt;

use crate::transport::webrtc::rtt_probe::Prober;

/// Answers a browser's RTT probe offer with a data-channel-only peer.
pub(super) async fn serve_probe(prober: &Prober, id: u64, offer: &str) -> LinkMessage {
    match prober.answer(offer.as_bytes()).await {
        Ok(sdp) => LinkMessage::Response {
            id,
            status: 201,
            headers: vec![("content-type".into(), "application/sdp".into())],
            body: sdp,
        },
        Err(e) => LinkMessage::Response {
            id,
            status: 400,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::json!({ "error": e.to_string() }).to_string(),
        },
    }
}

fn allowed(method: &str, path: &str) -> bool {
    let peer_ok =
        |p: &str| !p.is_empty() && p.len() <= 128 && p.bytes().all(|b| b.is_ascii_alphanumeric());
    match path.strip_prefix("/v1/whep") {
        Some("") => method == "POST",
        Some(rest) => rest
            .strip_prefix('/')
            .is_some_and(|p| peer_ok(p) && matches!(method, "PATCH" | "DELETE" | "GET")),
        None => false,
    }
}

/// Serves one relayed request with the edge's own router; only WHEP routes are reachable.
pub(super) async fn serve_request(
    router: Router,
    id: u64,
    method: &str,
    path: &str,
    headers: Vec<(String, String)>,
    body: String,
) -> LinkMessage {
    let refuse = |status: u16, msg: &str| LinkMessage::Response {
        id,
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::json!({ "error": msg }).to_string(),
    };
    if !allowed(method, path) {
        return refuse(404, "the broker may relay only WHEP requests to an edge");
    }
    let mut b = axum::http::Request::builder().method(method).uri(path);
    for (k, v) in &headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let Ok(req) = b.body(Body::from(body)) else {
        return refuse(400, "relayed request has a malformed header");
    };
    let Ok(resp) = router.oneshot(req).await;
    let status = resp.status().as_u16();
    let headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    match axum::body::to_bytes(resp.into_body(), MAX_FRAME / 2).await {
        Ok(bytes) => LinkMessage::Response {
            id,
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        },
        Err(_) => refuse(500, "the edge's answer is too large to relay"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whep_is_relayed() {
        assert!(allowed("POST", "/v1/whep"));
        assert!(allowed("PATCH", "/v1/whep/abc123"));
        assert!(allowed("DELETE", "/v1/whep/abc123"));
        assert!(!allowed("GET", "/v1/whep"));
        assert!(!allowed("POST", "/v1/dev/sessions"));
        assert!(!allowed("PATCH", "/v1/whep/../dev"));
        assert!(!allowed("GET", "/metrics"));
    }
}
