//! Sessions: `POST /v1/sessions` (a player's request: candidates to probe), `GET
//! /v1/sessions/{id}` and `POST /v1/sessions/{id}/select` (the measured RTTs: the edge, its
//! address and fingerprint, and a join token, signed by the broker).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use edgeplay_protocol::coords::Coord;
use edgeplay_protocol::link::PLACEMENT_DOMAIN;
use edgeplay_protocol::token::{EdgeId, SessionId, to_hex};
use serde::Serialize;
use serde_json::Value;
use tracing::debug;

use crate::error::BrokerError;
use crate::placement::Request;
use crate::requests::{self, signed_bytes};
use crate::routes::shared::{self, ApiError, Peer};
use crate::state::AppState;

#[derive(Debug, Serialize)]
struct CandidateOut {
    edge: EdgeId,
    region: String,
    quic_addr: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    echo_addr: Option<SocketAddr>,
    /// Where a browser posts its RTT probe offer: on the broker the edge is linked to.
    probe_url: String,
    /// The edge's coordinate as placement uses it, and its error: a client fits its own
    /// coordinate to these and its measured RTTs.
    coord: Coord,
    coord_error: f64,
}

pub(crate) async fn create(
    State(s): State<Arc<AppState>>,
    peer: Peer,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = shared::body(body)?;
    let req = requests::session_request(&body)?;
    s.service.rate_limit(peer.ip(), &req.player)?;
    let request = Request {
        coord: req.coord,
        region: req.region,
        width: req.width,
        height: req.height,
        fps: req.fps,
        min_gpu_class: req.min_gpu_class,
        max_price_per_min: req.max_price_per_min,
    };
    let (id, offered) = s.service.create_session(req.player, request).await?;
    let edges: Vec<EdgeId> = offered.iter().map(|c| c.edge).collect();
    let bases = s.service.relay_bases(&s.links, &edges).await;
    let out: Vec<CandidateOut> = offered
        .into_iter()
        .map(|c| {
            let base = bases.get(&c.edge).map_or("", String::as_str);
            CandidateOut {
                probe_url: format!("{base}/v1/sessions/{id}/probe/{}", c.edge),
                edge: c.edge,
                region: c.region,
                quic_addr: c.quic_addr,
                echo_addr: c.echo_addr,
                coord: c.coord,
                coord_error: c.coord_error,
            }
        })
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "session": id,
            "candidates": out,
            "select_url": format!("/v1/sessions/{id}/select"),
        })),
    ))
}

/// A live session's record with its `state` (`offered`, `placed`, `running`), or an ended
/// one's summary (`state: ended`) while the retention keeps it; 404 otherwise.
pub(crate) async fn get_one(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let sid: SessionId = shared::parse_id("session", &id)?;
    if let Some((rec, _)) = s.service.session(&sid).await? {
        let state = rec.phase();
        let mut v = serde_json::to_value(&rec).map_err(|e| BrokerError::Encode(e.to_string()))?;
        v["state"] = serde_json::to_value(state).map_err(|e| BrokerError::Encode(e.to_string()))?;
        return Ok(Json(v));
    }
    match s.service.summary(&sid).await? {
        Some(sum) => Ok(Json(
            serde_json::to_value(&sum).map_err(|e| BrokerError::Encode(e.to_string()))?,
        )),
        None => Err(BrokerError::NoSession(sid).into()),
    }
}

pub(crate) async fn select(
    State(s): State<Arc<AppState>>,
    peer: Peer,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let sid: SessionId = shared::parse_id("session", &id)?;
    let body = shared::body(body)?;
    let req = requests::select_request(&body)?;
    // The record as stored, with its revision: the owner change is fenced on it.
    let (stored, revision) = s.service.stored_session(&sid).await?;
    s.service.rate_limit(peer.ip(), &stored.player)?;
    let measured: Vec<(EdgeId, f64)> = req.measured.iter().map(|m| (m.edge, m.rtt_ms)).collect();
    debug!(session = %sid, ?measured, "select");
    let placed = s.service.place(stored, revision, &measured).await?;
    let edge = placed.edge;
    let bases = s.service.relay_bases(&s.links, &[edge.id]).await;
    let base = bases.get(&edge.id).map_or("", String::as_str);
    let mut answer = serde_json::json!({
        "session": sid,
        "edge": edge.id,
        "quic_addr": edge.quic_addr,
        "cert_fingerprint": edge.cert_fingerprint,
        "whep_url": format!("{base}/v1/sessions/{sid}/whep"),
        "token": to_hex(&placed.token),
        "expires_unix_ms": placed.expires_unix_ms,
    });
    // Signed, so a client that knows the broker's key trusts the address and fingerprint even
    // when the answer came through something it does not trust.
    let sig = s.cfg.key.sign(&signed_bytes(PLACEMENT_DOMAIN, &answer));
    answer["signature"] = Value::String(to_hex(&sig.to_bytes()));
    Ok(Json(answer))
}
