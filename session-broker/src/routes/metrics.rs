//! `GET /metrics`: the broker's counters in the OpenMetrics text format.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::routes::shared::ApiError;
use crate::state::AppState;

pub(crate) async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    let registry = &s.service.metrics().registry;
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
