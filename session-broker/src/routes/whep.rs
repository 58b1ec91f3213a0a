//! WHEP through the broker: `POST /v1/sessions/{id}/whep` (the offer), `PATCH`, `DELETE` and
//! `GET` on `/v1/sessions/{id}/whep/{peer}`, and `POST /v1/sessions/{id}/probe/{edge}` (a
//! browser's RTT probe), each relayed to an edge by `whep_relay`. Every response carries CORS
//! headers (the router's layer) and exposes `Location`, so a page on any origin can play.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgeplay_protocol::token::{EdgeId, SessionId};

use crate::routes::shared::{ApiError, parse_id};
use crate::state::AppState;
use crate::whep_relay::{self, OFFER_TIMEOUT, OTHER_TIMEOUT, PASS_IN};

/// The request headers passed on to the edge.
fn pass_in(headers: &HeaderMap) -> Vec<(String, String)> {
    PASS_IN
        .iter()
        .filter_map(|k| {
            let v = headers.get(*k)?.to_str().ok()?;
            Some(((*k).to_owned(), v.to_owned()))
        })
        .collect()
}

/// Relays one WHEP call on session `id` and answers with what the edge said.
async fn relay(
    s: &AppState,
    id: &str,
    method: &str,
    edge_path: String,
    headers: &HeaderMap,
    body: Bytes,
    timeout: std::time::Duration,
) -> Result<Response, ApiError> {
    let sid: SessionId = parse_id("session", id)?;
    let r = whep_relay::relay(
        s,
        &sid,
        method,
        edge_path,
        pass_in(headers),
        body.to_vec(),
        timeout,
    )
    .await?;
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
    // Without the edge's content type the body goes as text.
    let mut resp = (status, r.body).into_response();
    let h = resp.headers_mut();
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            h.insert(k, v);
        }
    }
    Ok(resp)
}

/// `POST /v1/sessions/{id}/whep`: the offer, relayed to the session's edge.
pub(crate) async fn offer(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = whep_relay::token_for_session(authorization, &id) {
        return ApiError::from(e).into_response();
    }
    relay(
        &s,
        &id,
        "POST",
        "/v1/whep".into(),
        &headers,
        body,
        OFFER_TIMEOUT,
    )
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/sessions/{id}/probe/{edge}`: a browser's RTT probe offer (data channel only),
/// relayed to one of the session's candidates, which answers with a short-lived peer.
pub(crate) async fn probe(
    State(s): State<Arc<AppState>>,
    Path((id, edge)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let r = async {
        let sid: SessionId = parse_id("session", &id)?;
        let edge: EdgeId = parse_id("edge", &edge)?;
        let r = whep_relay::probe(&s, &sid, edge, body.to_vec()).await?;
        let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let ct = if status == StatusCode::CREATED {
            "application/sdp"
        } else {
            "application/json"
        };
        Ok::<_, ApiError>((status, [(header::CONTENT_TYPE, ct)], r.body).into_response())
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

/// `PATCH`, `DELETE` and `GET` on `/v1/sessions/{id}/whep/{peer}`, relayed.
pub(crate) async fn resource(
    State(s): State<Arc<AppState>>,
    Path((id, peer)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = match whep_relay::peer_ok(&peer) {
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
        Err(e) => Err(e.into()),
    };
    r.unwrap_or_else(IntoResponse::into_response)
}
