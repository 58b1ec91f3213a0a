//! WHEP through the broker: browsers cannot reach edges that have no CA-signed certificate, so
//! `POST /v1/sessions/{id}/whep` (the offer, with `Authorization: Bearer <join token>`) is
//! relayed to the session's edge over its link ([`crate::edge_link`]) and the edge's answer comes
//! back; `PATCH`, `DELETE` and `GET` on the `Location` the 201 gives
//! (`/v1/sessions/{id}/whep/{peer}`, authorised by the session secret) are relayed the same way.
//! Media then flows straight between player and edge. Every response carries CORS headers and
//! exposes `Location`, so a page on any origin can play.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgeplay_protocol::token::SessionId;

use crate::api::{self, AppError, AppState};
use crate::edge_link::RelayError;

/// How long the broker waits for an edge to answer an offer (it starts a session first).
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the broker waits for an edge to answer PATCH, DELETE or GET.
pub const OTHER_TIMEOUT: Duration = Duration::from_secs(5);

/// Request headers passed on to the edge.
const PASS_IN: [&str; 3] = ["authorization", "content-type", "if-match"];
/// Response headers passed back to the player.
const PASS_OUT: [&str; 5] = [
    "content-type",
    "location",
    "edgeplay-session-secret",
    "etag",
    "accept-patch",
];

fn cors(headers: &mut HeaderMap) {
    let pairs = [
        ("access-control-allow-origin", "*"),
        (
            "access-control-allow-methods",
            "POST, PATCH, DELETE, GET, OPTIONS",
        ),
        (
            "access-control-allow-headers",
            "authorization, content-type, if-match",
        ),
        (
            "access-control-expose-headers",
            "location, edgeplay-session-secret, etag, link, accept-patch",
        ),
        ("access-control-max-age", "600"),
    ];
    for (k, v) in pairs {
        headers.insert(k, HeaderValue::from_static(v));
    }
}

/// Adds the CORS headers to every broker response (a layer over the whole router).
pub(crate) async fn add_cors(r: Response) -> Response {
    with_cors(r)
}

fn with_cors(mut r: Response) -> Response {
    cors(r.headers_mut());
    r
}

/// `OPTIONS` on either WHEP route: the CORS preflight.
pub(crate) async fn preflight() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert("accept-post", HeaderValue::from_static("application/sdp"));
    with_cors(r)
}

fn pass_in(headers: &HeaderMap) -> Vec<(String, String)> {
    PASS_IN
        .iter()
        .filter_map(|k| {
            let v = headers.get(*k)?.to_str().ok()?;
            Some(((*k).to_owned(), v.to_owned()))
        })
        .collect()
}

fn relay_error(e: &RelayError) -> AppError {
    let status = match e {
        RelayError::NotConnected(_) | RelayError::Dropped(_) => StatusCode::BAD_GATEWAY,
        RelayError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
    };
    AppError::new(status, e.to_string())
}

async fn relay(
    s: &AppState,
    sid: &str,
    method: &str,
    edge_path: String,
    headers: &HeaderMap,
    body: Bytes,
    timeout: Duration,
) -> Result<Response, AppError> {
    let sid: SessionId = sid.parse().map_err(|e| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            format!("session id `{sid}` in the path: {e}"),
        )
    })?;
    let edge = api::session_edge(s, &sid).await?;
    let body = String::from_utf8(body.to_vec()).map_err(|_| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            "the body must be UTF-8 text (an SDP offer or a trickle-ICE fragment)",
        )
    })?;
    let r = s
        .links
        .request(edge, method, edge_path, pass_in(headers), body, timeout)
        .await
        .map_err(|e| relay_error(&e))?;
    let status = StatusCode::from_u16(r.status).map_err(|_| {
        AppError::new(
            StatusCode::BAD_GATEWAY,
            format!("edge {edge} answered with status {}", r.status),
        )
    })?;
    let mut resp = (status, r.body).into_response();
    let h = resp.headers_mut();
    for (k, v) in r.headers {
        let k = k.to_ascii_lowercase();
        if !PASS_OUT.contains(&k.as_str()) {
            continue;
        }
        // The edge's `/v1/whep/{peer}` becomes the broker's `/v1/sessions/{id}/whep/{peer}`.
        let v = if k == "location" {
            match v.strip_prefix("/v1/whep/") {
                Some(peer) => format!("/v1/sessions/{sid}/whep/{peer}"),
                None => continue,
            }
        } else {
            v
        };
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            h.insert(k, v);
        }
    }
    if !h.contains_key(header::CONTENT_TYPE) {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    Ok(resp)
}

fn peer_ok(peer: &str) -> Result<(), AppError> {
    if peer.is_empty() || peer.len() > 128 || !peer.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            format!("no WHEP resource `{peer}`: use the Location of the 201"),
        ));
    }
    Ok(())
}

/// Refuses an offer whose join token names another session than the URL (the edge checks the
/// signature, the edge and single use; this keeps one session's token out of another's relay).
fn token_for_session(headers: &HeaderMap, sid: &str) -> Result<(), AppError> {
    let Some(hex) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        // No token: the edge answers 401 with its explanation.
        return Ok(());
    };
    let session = edgeplay_protocol::token::from_hex(hex.trim())
        .ok()
        .and_then(|b| {
            edgeplay_protocol::token::decode_unverified(&b)
                .ok()
                .map(|t| t.0.session)
        });
    match session {
        Some(t) if t.to_string() != sid => Err(AppError::new(
            StatusCode::FORBIDDEN,
            format!(
                "the join token is for session {t}, not {sid}: use the token /select gave for this session"
            ),
        )),
        _ => Ok(()),
    }
}

/// `POST /v1/sessions/{id}/whep`: the offer, relayed to the session's edge.
pub(crate) async fn offer(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = token_for_session(&headers, &id) {
        return with_cors(e.into_response());
    }
    let r = relay(
        &s,
        &id,
        "POST",
        "/v1/whep".into(),
        &headers,
        body,
        OFFER_TIMEOUT,
    )
    .await;
    with_cors(r.unwrap_or_else(IntoResponse::into_response))
}

/// `POST /v1/sessions/{id}/probe/{edge}`: a browser's RTT probe offer (data channel only),
/// relayed to one of the session's candidates, which answers with a short-lived peer.
pub(crate) async fn probe(
    State(s): State<Arc<AppState>>,
    Path((id, edge)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let r = async {
        let sid: SessionId = id.parse().map_err(|e| {
            AppError::new(
                StatusCode::BAD_REQUEST,
                format!("session id `{id}` in the path: {e}"),
            )
        })?;
        let edge: edgeplay_protocol::token::EdgeId = edge.parse().map_err(|e| {
            AppError::new(
                StatusCode::BAD_REQUEST,
                format!("edge id `{edge}` in the path: {e}"),
            )
        })?;
        api::session_candidate(&s, &sid, &edge).await?;
        let body = String::from_utf8(body.to_vec()).map_err(|_| {
            AppError::new(StatusCode::BAD_REQUEST, "the probe offer must be SDP text")
        })?;
        let r = s
            .links
            .request(
                edge,
                "POST",
                "/v1/probe".into(),
                vec![("content-type".into(), "application/sdp".into())],
                body,
                OTHER_TIMEOUT,
            )
            .await
            .map_err(|e| relay_error(&e))?;
        let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let ct = if status == StatusCode::CREATED {
            "application/sdp"
        } else {
            "application/json"
        };
        Ok::<_, AppError>((status, [(header::CONTENT_TYPE, ct)], r.body).into_response())
    }
    .await;
    with_cors(r.unwrap_or_else(IntoResponse::into_response))
}

/// `PATCH`, `DELETE` and `GET` on `/v1/sessions/{id}/whep/{peer}`, relayed.
pub(crate) async fn resource(
    State(s): State<Arc<AppState>>,
    Path((id, peer)): Path<(String, String)>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = match peer_ok(&peer) {
        Ok(()) => {
            relay(
                &s,
                &id,
                method.as_str(),
                format!("/v1/whep/{peer}"),
                &headers,
                body,
                OTHER_TIMEOUT,
            )
            .await
        }
        Err(e) => Err(e),
    };
    with_cors(r.unwrap_or_else(IntoResponse::into_response))
}
