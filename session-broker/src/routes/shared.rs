//! What every route shares: the error a client sees ([`ApiError`], and the status of each
//! [`BrokerError`]: the status map of docs/broker.md, 400 never servable, 422 no edge ever,
//! 503 with `Retry-After` nothing now), the caller's address, ids in the path, the body limit's
//! refusal, and CORS.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::{BrokerError, DecodeError, RelayError};
use crate::placement::PlacementError;
use crate::store::StoreError;

/// An error a client sees: a status and a sentence saying what was wrong and what to do.
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl ApiError {
    pub(crate) fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError(status, msg.into())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.1, self.0)
    }
}

/// What a 503 tells the client to wait before it asks again (`Retry-After`, seconds): about
/// the time an edge's heartbeat takes to report a slot freed (500 ms while serving) a few times.
pub(crate) const RETRY_AFTER_SECS: u32 = 2;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response();
        // 503 is "valid, but not now": always say when to try again.
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        r
    }
}

/// The status each broker error answers with.
fn status(e: &BrokerError) -> StatusCode {
    match e {
        BrokerError::Decode(d) => StatusCode::from_u16(d.status).unwrap_or(StatusCode::BAD_REQUEST),
        BrokerError::NotAKey(_) | BrokerError::BadSignature(_) | BrokerError::Stale { .. } => {
            StatusCode::UNAUTHORIZED
        }
        BrokerError::UnknownEdge(_)
        | BrokerError::NoSession(_)
        | BrokerError::NotACandidate { .. }
        | BrokerError::NoWhepResource(_) => StatusCode::NOT_FOUND,
        BrokerError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        BrokerError::Placement(
            PlacementError::NoMeasuredCandidate
            | PlacementError::UnknownRegion(_)
            | PlacementError::Unmet(_),
        ) => StatusCode::UNPROCESSABLE_ENTITY,
        BrokerError::Placement(PlacementError::NoLocation)
        | BrokerError::BadCoordinate { .. }
        | BrokerError::BadReport(_)
        | BrokerError::Encode(_)
        | BrokerError::NotText(_) => StatusCode::BAD_REQUEST,
        BrokerError::NoEdge | BrokerError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        BrokerError::ChosenEdgeLeft
        | BrokerError::NotPlaced(_)
        | BrokerError::SessionChanged(_)
        | BrokerError::AlreadyPlaced { .. } => StatusCode::CONFLICT,
        BrokerError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        BrokerError::Relay(RelayError::NotConnected(_) | RelayError::Dropped(_))
        | BrokerError::EdgeStatus { .. } => StatusCode::BAD_GATEWAY,
        BrokerError::Relay(RelayError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
        BrokerError::OtherSessionsToken { .. } => StatusCode::FORBIDDEN,
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        ApiError(status(&e), e.to_string())
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        BrokerError::Decode(e).into()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        BrokerError::Store(e).into()
    }
}

/// A body over the limit (or unreadable): 413 with axum's explanation.
pub(crate) fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|e| ApiError(StatusCode::PAYLOAD_TOO_LARGE, e.body_text()))
}

/// An id from the path, or 400 naming it.
pub(crate) fn parse_id<T: std::str::FromStr>(what: &str, id: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    id.parse().map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{what} id `{id}` in the path: {e}"),
        )
    })
}

/// The caller's address, when the router is served with connect info (always, by
/// `routes::serve`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) Option<SocketAddr>);

impl Peer {
    /// The address the rate limit keys on. Without a peer address (a router called
    /// in-process, as in tests) all callers share one.
    pub(crate) fn ip(self) -> IpAddr {
        self.0.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip())
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
                .await
                .ok()
                .map(|ConnectInfo(a)| a),
        ))
    }
}

fn cors(headers: &mut HeaderMap) {
    for (k, v) in edgeplay_protocol::whep::CORS_HEADERS {
        headers.insert(k, HeaderValue::from_static(v));
    }
}

/// Adds the CORS headers to every broker response (a layer over the whole router): players
/// call the broker from pages on any origin, and read `Location` and the session secret.
pub(crate) async fn add_cors(mut r: Response) -> Response {
    cors(r.headers_mut());
    r
}

/// `OPTIONS` on the session and WHEP routes: the CORS preflight (the layer adds the CORS
/// headers).
pub(crate) async fn preflight() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert("accept-post", HeaderValue::from_static("application/sdp"));
    r
}
