//! The broker's HTTP API (axum): edge registration, heartbeats and the edge link, session
//! placement and selection, the WHEP relay, the broker's public key and peers, health, metrics
//! and the OpenAPI document; and, apart, the web player's files ([`player`]).
//!
//! [`app`] is a plain `Router`, tested without a socket; [`serve`] binds it and stops when its
//! `shutdown` future resolves. The handlers are thin: they decode (see `requests`), call the
//! registry service, and map its errors to statuses (`shared`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use edgeplay_protocol::token::to_hex;
use serde_json::Value;

use crate::registry;
use crate::requests::MAX_BODY;
use crate::routes::shared::{ApiError, add_cors, preflight};
use crate::state::{AppState, Config};
use crate::store::StoreError;

mod edges;
mod metrics;
pub mod player;
mod sessions;
mod shared;
#[cfg(test)]
mod tests;
mod whep;

/// The OpenAPI document served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Loads the store's edges and sessions, starts the background tasks and builds the router
/// (the tasks stop when the router is dropped).
///
/// # Errors
/// The store's, when it cannot be read.
pub async fn app(cfg: Config) -> Result<Router, StoreError> {
    Ok(router(registry::start(cfg).await?))
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::metrics))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route("/v1/broker/key", get(broker_key))
        .route("/v1/brokers", get(brokers))
        .route("/v1/edges", post(edges::register).get(edges::list))
        .route("/v1/edges/{id}/heartbeat", post(edges::heartbeat))
        .route("/v1/edges/{id}/ended", post(edges::ended))
        .route("/v1/sessions", post(sessions::create).options(preflight))
        .route("/v1/sessions/{id}", get(sessions::get_one))
        .route(
            "/v1/sessions/{id}/select",
            post(sessions::select).options(preflight),
        )
        .route("/v1/edges/link", get(edges::link))
        .route(
            "/v1/sessions/{id}/whep",
            post(whep::offer).options(preflight),
        )
        .route(
            "/v1/sessions/{id}/probe/{edge}",
            post(whep::probe).options(preflight),
        )
        .route(
            "/v1/sessions/{id}/whep/{peer}",
            patch(whep::resource)
                .delete(whep::resource)
                .get(whep::resource)
                .options(preflight),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Players call the broker from pages on any origin.
        .layer(axum::middleware::map_response(add_cors))
        .with_state(state)
}

async fn brokers(State(s): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let brokers = s.cfg.store.brokers().await?;
    Ok(Json(serde_json::json!({ "brokers": brokers })))
}

async fn broker_key(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(serde_json::json!({
        "algorithm": "ed25519",
        "public_key": to_hex(s.cfg.key.public().as_bytes()),
    }))
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains open requests.
///
/// # Errors
/// The listener's.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The peer address keys the rate limit (see `crate::ratelimit`).
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
