//! Edges: `POST /v1/edges` (a signed registration), `GET /v1/edges`, the signed
//! `POST /v1/edges/{id}/heartbeat` and `POST /v1/edges/{id}/ended`, and `GET /v1/edges/link`, which upgrades the connection to
//! the edge link and hands it to `edge_link`.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgeplay_protocol::link;
use edgeplay_protocol::token::EdgeId;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tracing::{Instrument, debug, info_span};

use crate::edge_link;
use crate::records::EdgeRecord;
use crate::routes::shared::{self, ApiError};
use crate::state::AppState;

pub(crate) async fn register(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = shared::body(body)?;
    let ad = s.service.verify_registration(&body)?;
    let id = ad.id;
    let status = if s.service.admit_edge(ad).await? {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(serde_json::json!({
            "id": id,
            "heartbeat_url": format!("/v1/edges/{id}/heartbeat"),
        })),
    ))
}

pub(crate) async fn list(State(s): State<Arc<AppState>>) -> Json<Vec<EdgeRecord>> {
    Json(s.service.edges())
}

pub(crate) async fn heartbeat(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let edge: EdgeId = shared::parse_id("edge", &id)?;
    s.service.ensure_registered(&edge)?;
    let body = shared::body(body)?;
    let hb = s.service.verify_heartbeat(&edge, &body)?;
    s.service
        .apply_heartbeat(edge, hb.free_slots, hb.draining)
        .await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

/// `POST /v1/edges/{id}/ended`: an edge without a link reports a session's end (signed).
pub(crate) async fn ended(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let edge: EdgeId = shared::parse_id("edge", &id)?;
    s.service.ensure_registered(&edge)?;
    let body = shared::body(body)?;
    let report = s.service.verify_ended(&edge, &body)?.report();
    let ended = s.service.apply_ended(edge, &report).await?;
    Ok(Json(serde_json::json!({ "ended": ended })))
}

/// `GET /v1/edges/link`: upgrades to the link and runs it until it drops.
pub(crate) async fn link(State(s): State<Arc<AppState>>, mut req: Request) -> Response {
    let wants_link = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(link::UPGRADE));
    if !wants_link {
        return (
            StatusCode::UPGRADE_REQUIRED,
            [(header::UPGRADE, link::UPGRADE)],
            format!(
                "the edge link needs `Connection: upgrade` and `Upgrade: {}`",
                link::UPGRADE
            ),
        )
            .into_response();
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let conn = s.links.next_id();
    // The connection leaves the HTTP server once upgraded; this task owns it until it drops.
    tokio::spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => edge_link::run(&s, conn, TokioIo::new(upgraded)).await,
                Err(e) => debug!(error = %e, "edge link upgrade failed"),
            }
        }
        .instrument(info_span!("edge_link", conn)),
    );
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static(link::UPGRADE));
    resp
}
