//! The edge's HTTP side in `--dev`: health, metrics and a session API without authentication.
//!
//! Built the mini-redis/axum way: [`app`] is a plain `Router` (tested without a socket),
//! [`serve_dev`] binds it and stops when the `shutdown` future resolves, ending every session
//! first so that open media streams close and the server can drain.
//!
//! Dev session API (no token: it listens on loopback unless `--listen` says otherwise, and then
//! anyone who reaches the address may use it; the broker replaces it in production):
//! - `POST /v1/dev/sessions` `{"resolution":"1280x720","fps":60,"seed":1,"bitrate_kbps":6000}`
//!   (every field optional) → `201 {"id", "video_url", "input_url"}`;
//! - `GET /v1/dev/sessions/{id}/video.h264`: the live Annex-B stream from the next keyframe
//!   (`ffplay -f h264 URL` plays it); the game runs while at least one stream is open;
//! - `POST /v1/dev/sessions/{id}/input` `{"seq":1,"event":{...}}` → `202 {"applied","committed"}`;
//! - `GET /v1/dev/sessions/{id}`: frames and per-stage latency; `DELETE` ends the session.
//!
//! WHEP (RFC 9725, see [`crate::transport::webrtc`]), callable from any origin (CORS):
//! - `POST /v1/whep` with `Authorization: Bearer <dev token>` and an `application/sdp` offer →
//!   `201` with the answer, `Location: /v1/whep/{id}` and `Edgeplay-Session-Secret`;
//! - `PATCH /v1/whep/{id}` (trickle ICE fragment), `DELETE`, and `GET` (counters), each with
//!   `Authorization: Bearer <session secret>`;
//! - `GET /play`: the web player (client-sdk/web, built by `cargo xtask setup`; served by `player`).
//!
//! Dev sessions and WHEP offers take their session slot from the edge's one
//! [`Admission`](crate::admission::Admission), shared with QUIC, before the session starts; a
//! full edge answers `503` with `Retry-After` at once.

mod player;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, options, post};
use edgeplay_media::encode::EncoderKind;
use edgeplay_media::gpu::Gpu;
use edgeplay_media::pipeline::PipelineConfig;
use edgeplay_media::session::{
    Control, MediaPacket, Session, SessionConfig, SessionError, SessionHandle,
};
use edgeplay_media::stats::{Stage, ms};
use edgeplay_protocol::input::InputEvent;
use edgeplay_protocol::token::SessionId;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::admission::{Admission, RETRY_AFTER_SECS, Slot};
use crate::metrics::Metrics;
use crate::transport::token::TokenCheck;
use crate::transport::webrtc::{Patched, WebRtcError, Whep};

/// Largest request body accepted.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// Settings of the dev server.
#[derive(Clone, Debug)]
pub struct DevServerConfig {
    /// Listen address (loopback in `--dev`).
    pub listen: SocketAddr,
    /// Most sessions at once, all transports together; more get 503. The edge's
    /// [`Admission`] is built with it (and the broker told it as the edge's capacity).
    pub max_sessions: usize,
    /// A live session whose player sends no input for this long ends; `None`: never.
    pub idle: Option<std::time::Duration>,
    /// The encoder the probe chose.
    pub encoder: EncoderKind,
    /// The bearer token WHEP offers must carry; `None` refuses every offer.
    pub dev_token: Option<String>,
    /// Where the built web player is (`client-sdk/web/dist`).
    pub player_dir: PathBuf,
}

#[derive(Debug)]
struct AppState {
    cfg: DevServerConfig,
    gpu: Gpu,
    metrics: Arc<Metrics>,
    sessions: Mutex<HashMap<String, DevSession>>,
    whep: Arc<Whep>,
    /// The broker's join tokens, checked instead of the dev token when the edge serves a broker.
    tokens: Option<Arc<dyn TokenCheck>>,
    /// The edge's session slots, shared with its other transports.
    admission: Admission,
}

/// A dev session and its slot, given back once the session has ended.
#[derive(Debug)]
struct DevSession {
    handle: SessionHandle,
    slot: Slot,
}

impl DevSession {
    /// Ends the session (blocking: it joins the session's thread), then gives its slot back.
    fn end(self) -> Result<edgeplay_media::session::SessionSummary, SessionError> {
        let ended = self.handle.end();
        drop(self.slot);
        ended
    }
}

impl AppState {
    /// No sessions yet, WHEP on the listen address's interface, join tokens checked by
    /// `tokens` (`None`: the dev token only), session slots from `admission`.
    fn new(
        cfg: DevServerConfig,
        gpu: Gpu,
        metrics: Arc<Metrics>,
        tokens: Option<Arc<dyn TokenCheck>>,
        admission: Admission,
    ) -> Arc<Self> {
        Arc::new(AppState {
            whep: Whep::new(cfg.listen.ip()),
            cfg,
            gpu,
            metrics,
            sessions: Mutex::new(HashMap::new()),
            tokens,
            admission,
        })
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, DevSession>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends every dev session, off the runtime (shutdown).
    async fn end_dev_sessions(&self) {
        let sessions: Vec<DevSession> = self.sessions().drain().map(|(_, d)| d).collect();
        info!(sessions = sessions.len(), "shutting down: ending sessions");
        let _ = tokio::task::spawn_blocking(move || {
            for d in sessions {
                let _ = d.end();
            }
        })
        .await;
    }
}

/// An error a client sees: a status and a sentence saying what was wrong and what to do.
#[derive(Debug)]
pub(crate) struct AppError(StatusCode, String);

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut resp = (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response();
        // A 503 here means every session slot is taken: say when to try again.
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        resp
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        let status = match r {
            JsonRejection::BytesRejection(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        AppError(status, r.body_text())
    }
}

fn not_found(id: &str) -> AppError {
    AppError(
        StatusCode::NOT_FOUND,
        format!("no session `{id}` on this edge: create one with POST /v1/dev/sessions"),
    )
}

/// The router of the dev server, with session slots of its own (`cfg.max_sessions`).
pub fn app(cfg: DevServerConfig, gpu: Gpu, metrics: Arc<Metrics>) -> Router {
    let admission = Admission::with_idle(cfg.max_sessions, cfg.idle, &metrics);
    let state = AppState::new(cfg, gpu, metrics, None, admission);
    router(state)
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/dev/sessions", post(create_session))
        .route(
            "/v1/dev/sessions/{id}",
            get(session_stats).delete(delete_session),
        )
        .route("/v1/dev/sessions/{id}/video.h264", get(video_stream))
        .route("/v1/dev/sessions/{id}/input", post(send_input))
        .route("/v1/whep", post(whep_offer).options(whep_preflight))
        .route(
            "/v1/whep/{id}",
            options(whep_preflight)
                .patch(whep_patch)
                .delete(whep_delete)
                .get(whep_stats),
        )
        .merge(player::routes(&state.cfg.player_dir))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn metrics(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    #[allow(clippy::cast_possible_truncation, reason = "bit/s fit an i64")]
    s.metrics
        .webrtc_estimate_bps
        .set(s.whep.estimate_sum_bps() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    resolution: Option<String>,
    fps: Option<u32>,
    seed: Option<u64>,
    bitrate_kbps: Option<u32>,
}

#[derive(Debug, Serialize)]
struct CreateResponse {
    id: String,
    video_url: String,
    input_url: String,
}

async fn create_session(
    State(s): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<CreateResponse>), AppError> {
    // Every field is optional, and so is the body itself.
    let req: CreateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CreateRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            AppError(
                StatusCode::BAD_REQUEST,
                format!("session request: {e}; fields: resolution, fps, seed, bitrate_kbps"),
            )
        })?
    };
    let (width, height) = match req.resolution.as_deref() {
        None => (1280, 720),
        Some(r) => r
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
            .ok_or_else(|| {
                AppError(
                    StatusCode::BAD_REQUEST,
                    format!("resolution `{r}` is not WIDTHxHEIGHT: use 1280x720 or 1920x1080"),
                )
            })?,
    };
    let pipeline = pipeline(
        &s,
        (width, height),
        req.fps.unwrap_or(60),
        req.bitrate_kbps.unwrap_or(6000),
    );
    pipeline
        .validate()
        .map_err(|e| AppError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let (id, slot) = admit(&s, "dev")?;
    let cfg = SessionConfig::new(id.clone(), pipeline, req.seed.unwrap_or(1));
    let handle = start_session(&s, cfg).await?;
    s.sessions().insert(id.clone(), DevSession { handle, slot });
    info!(%id, width, height, "dev session created");
    Ok((
        StatusCode::CREATED,
        Json(CreateResponse {
            video_url: format!("/v1/dev/sessions/{id}/video.h264"),
            input_url: format!("/v1/dev/sessions/{id}/input"),
            id,
        }),
    ))
}

/// The media path of a session this edge serves itself (`--dev` and its WHEP): the edge's
/// encoder, keyframes on request only, sliced threads one per core, with sound.
fn pipeline(
    s: &AppState,
    (width, height): (u32, u32),
    fps: u32,
    bitrate_kbps: u32,
) -> PipelineConfig {
    PipelineConfig {
        width,
        height,
        fps,
        bitrate_kbps,
        encoder: s.cfg.encoder.clone(),
        keyframe_interval: 0,
        threads: 0,
        audio: true,
    }
}

/// Starts a session on the edge's GPU, off the runtime: building a render target and encoder
/// pipelines blocks for a while.
async fn start_session(s: &AppState, cfg: SessionConfig) -> Result<SessionHandle, AppError> {
    let (gpu, metrics) = (s.gpu.clone(), Arc::clone(&s.metrics));
    tokio::task::spawn_blocking(move || Session::start(&gpu, cfg, metrics))
        .await
        .map_err(|e| AppError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| {
            AppError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot start the session: {e}"),
            )
        })
}

async fn video_stream(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let rx = {
        let sessions = s.sessions();
        let handle = &sessions.get(&id).ok_or_else(|| not_found(&id))?.handle;
        let rx = handle.subscribe();
        // A viewer that joins mid-stream needs an IDR to start decoding.
        let _ = handle.send(Control::RequestKeyframe);
        rx
    };
    let stream = futures_util::stream::unfold((rx, false), |(mut rx, mut started)| async move {
        loop {
            match rx.recv().await {
                Ok(MediaPacket::Video(v)) => {
                    started |= v.keyframe;
                    if started {
                        let chunk = Ok::<_, std::io::Error>(v.data.clone());
                        return Some((chunk, (rx, started)));
                    }
                }
                Ok(MediaPacket::Audio(_)) => {}
                // A slow reader lost frames: wait for the next keyframe to resume cleanly.
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(
                        lost = n,
                        "dev video stream fell behind; resyncing at a keyframe"
                    );
                    started = false;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "video/h264")],
        Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputRequest {
    seq: u64,
    event: InputEvent,
}

async fn send_input(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Result<Json<InputRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    let Json(req) = body?;
    if req.seq == 0 {
        return Err(AppError(
            StatusCode::BAD_REQUEST,
            "seq starts at 1 and increases by one per input".into(),
        ));
    }
    let sessions = s.sessions();
    let handle = &sessions.get(&id).ok_or_else(|| not_found(&id))?.handle;
    handle
        .send(Control::Input {
            seq: req.seq,
            event: req.event,
        })
        .map_err(|e| match e {
            SessionError::Congested(_) => AppError(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
            _ => AppError(StatusCode::GONE, e.to_string()),
        })?;
    let ack = *handle.acks().borrow();
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "applied": ack.applied, "committed": ack.committed })),
    ))
}

async fn session_stats(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let sessions = s.sessions();
    let handle = &sessions.get(&id).ok_or_else(|| not_found(&id))?.handle;
    let stats = handle.stats();
    let ack = *handle.acks().borrow();
    let mut latency = serde_json::Map::new();
    for (stage, summary) in stats.latency.0 {
        latency.insert(
            stage.name().to_owned(),
            serde_json::json!({
                "p50_ms": ms(summary.p50), "p95_ms": ms(summary.p95), "p99_ms": ms(summary.p99)
            }),
        );
    }
    debug_assert_eq!(Stage::ALL.len(), latency.len());
    Ok(Json(serde_json::json!({
        "id": id,
        "running": handle.is_running(),
        "frames": stats.frames,
        "inputs_applied": ack.applied,
        "latency": latency,
    })))
}

async fn delete_session(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let session = s.sessions().remove(&id).ok_or_else(|| not_found(&id))?;
    let summary = tokio::task::spawn_blocking(move || session.end()).await;
    match summary {
        Ok(Ok(summary)) => info!(%id, frames = summary.frames, "dev session ended"),
        Ok(Err(e)) => warn!(%id, error = %e, "dev session had failed"),
        Err(e) => warn!(%id, error = %e, "ending the dev session panicked"),
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The CORS headers of every WHEP response: a page on any origin may play (the join token, not
/// the origin, is the credential).
fn cors(headers: &mut HeaderMap) {
    for (k, v) in edgeplay_protocol::whep::CORS_HEADERS {
        headers.insert(k, HeaderValue::from_static(v));
    }
}

fn with_cors(mut resp: Response) -> Response {
    cors(resp.headers_mut());
    resp
}

async fn whep_preflight() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert("accept-post", HeaderValue::from_static("application/sdp"));
    with_cors(resp)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The answer to a request on a WHEP resource, with the CORS headers: `ok`'s response, or the
/// error's.
fn whep_reply<T>(result: Result<T, WebRtcError>, ok: impl FnOnce(T) -> Response) -> Response {
    with_cors(match result {
        Ok(v) => ok(v),
        Err(e) => whep_error(&e).into_response(),
    })
}

fn whep_error(e: &WebRtcError) -> AppError {
    let status = match e {
        WebRtcError::Wire(edgeplay_protocol::whep::WireError::TooLarge { .. }) => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        WebRtcError::Wire(_) => StatusCode::BAD_REQUEST,
        WebRtcError::Negotiation(_) => StatusCode::NOT_ACCEPTABLE,
        WebRtcError::NotFound(_) => StatusCode::NOT_FOUND,
        WebRtcError::Forbidden => StatusCode::FORBIDDEN,
        WebRtcError::BadPatch(_) => StatusCode::BAD_REQUEST,
        WebRtcError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
        WebRtcError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    AppError(status, e.to_string())
}

async fn whep_offer(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    with_cors(match whep_offer_inner(&s, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    })
}

/// Whether the offer carries a join token this edge accepts; `use_up`: and uses it up (the
/// broker's tokens are single-use), else only verifies it.
fn join_token_ok(s: &AppState, headers: &HeaderMap) -> bool {
    match (&s.cfg.dev_token, bearer(headers)) {
        (_, Some(got)) if s.tokens.is_some() => s
            .tokens
            .as_ref()
            .is_some_and(|t| t.verify(got.as_bytes()).is_ok()),
        // Constant time: the token is a secret (a wrong length is refused outright).
        (Some(want), Some(got)) => bool::from(want.as_bytes().ct_eq(got.as_bytes())),
        _ => false,
    }
}

/// Uses the join token up (single-use broker tokens): `None` when refused, else the broker
/// session it names (`Some(None)` for the dev token).
fn use_join_token(s: &AppState, headers: &HeaderMap) -> Option<Option<SessionId>> {
    match (&s.cfg.dev_token, bearer(headers)) {
        (_, Some(got)) if s.tokens.is_some() => {
            s.tokens.as_ref().and_then(|t| t.check(got.as_bytes()).ok())
        }
        (Some(_), Some(_)) => join_token_ok(s, headers).then_some(None),
        _ => None,
    }
}

fn no_join_token() -> AppError {
    AppError(
        StatusCode::UNAUTHORIZED,
        "a valid join token is required: send `Authorization: Bearer <token>` with the token `edge-agent run --dev` printed".into(),
    )
}

async fn whep_offer_inner(
    s: &Arc<AppState>,
    headers: &HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, AppError> {
    if !join_token_ok(s, headers) {
        return Err(no_join_token());
    }
    // A slot before the token is used up: a player refused because the edge is full keeps its
    // token to retry with. Past this point a POST uses the token, whatever becomes of it. The
    // slot goes to the peer, which holds it until its session has ended.
    let (id, mut slot) = admit(s, "whep")?;
    let Some(session) = use_join_token(s, headers) else {
        return Err(no_join_token());
    };
    if let Some(session) = session {
        slot.bind(session);
    }
    let body = body.map_err(|r| AppError(r.status(), r.body_text()))?;
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/sdp"));
    if !is_sdp {
        return Err(AppError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a WHEP offer is sent as `Content-Type: application/sdp`".into(),
        ));
    }
    // Refuse a bad offer before paying for a session.
    edgeplay_protocol::whep::check_offer(&body).map_err(|e| whep_error(&e.into()))?;
    let pipeline = pipeline(s, (1280, 720), 60, 6000);
    let pipeline_kbps = pipeline.bitrate_kbps;
    // The profile is the client's to choose (its first sendable H.264), and the encoder is
    // built with it, so it is read before the session starts.
    let profile = std::str::from_utf8(&body)
        .map(edgeplay_protocol::whep::h264_profile)
        .unwrap_or_default();
    let cfg = SessionConfig::new(id.clone(), pipeline, 1).with_profile(profile);
    let handle = start_session(s, cfg).await?;
    let answer = s
        .whep
        .offer_holding(&body, handle, slot, pipeline_kbps, profile)
        .await
        .map_err(|e| whep_error(&e))?;
    info!(session = %id, peer = %&answer.id[..8], "WHEP session created");
    let mut resp = (StatusCode::CREATED, answer.sdp).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    let location = format!("/v1/whep/{}", answer.id);
    for (k, v) in [
        (header::LOCATION.as_str(), location.as_str()),
        ("edgeplay-session-secret", answer.secret.as_str()),
        ("accept-patch", "application/trickle-ice-sdpfrag"),
        ("etag", answer.etag.as_str()),
    ] {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    }
    Ok(resp)
}

async fn whep_patch(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let is_fragment = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/trickle-ice-sdpfrag"));
    if !is_fragment {
        return with_cors(
            AppError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a WHEP PATCH is sent as `Content-Type: application/trickle-ice-sdpfrag`".into(),
            )
            .into_response(),
        );
    }
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
    let patched = s.whep.patch(&id, bearer(&headers), if_match, &body).await;
    whep_reply(patched, |patched| match patched {
        Patched::Trickled => StatusCode::NO_CONTENT.into_response(),
        // An ICE restart: the new ICE session's tag, the edge's new credentials and candidates.
        Patched::Restarted { etag, fragment } => {
            let mut resp = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/trickle-ice-sdpfrag")],
                fragment,
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&etag) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            resp
        }
    })
}

async fn whep_delete(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    whep_reply(s.whep.delete(&id, bearer(&headers)), |()| {
        StatusCode::OK.into_response()
    })
}

async fn whep_stats(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    whep_reply(s.whep.stats(&id, bearer(&headers)), |v| {
        Json(v).into_response()
    })
}

/// Serves the dev API on `cfg.listen` until `shutdown` resolves, then ends every session and
/// waits for open requests to finish. Sessions take their slots from `admission`, the edge's
/// one (shared with its QUIC endpoint).
///
/// # Errors
/// The address cannot be bound or the server fails.
pub async fn serve_dev(
    cfg: DevServerConfig,
    gpu: Gpu,
    metrics: Arc<Metrics>,
    admission: Admission,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot listen on {}: {e}; pick another with --listen",
                    cfg.listen
                ),
            )
        })?;
    let addr = listener.local_addr()?;
    let state = AppState::new(cfg, gpu, metrics, None, admission);
    println!("edge-agent --dev serving on http://{addr}");
    if let Some(token) = &state.cfg.dev_token {
        println!("  WHEP endpoint:    http://{addr}/v1/whep");
        println!("  dev join token:   {token}");
        println!("  play in a browser: http://{addr}/play#token={token}");
    }
    println!("  create a session: curl -s -X POST http://{addr}/v1/dev/sessions");
    println!("  watch it:         ffplay -f h264 http://{addr}/v1/dev/sessions/ID/video.h264");
    println!("  metrics:          http://{addr}/metrics");
    let drain = Arc::clone(&state);
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            drain.whep.stop_all();
            drain.end_dev_sessions().await;
        })
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

/// Admits one more session arriving over `transport` (dev or WHEP) while a slot of the edge
/// is free: its id and its slot. A full edge answers 503 (with `Retry-After`) at once.
fn admit(s: &AppState, transport: &'static str) -> Result<(String, Slot), AppError> {
    let slot = s
        .admission
        .try_admit(transport)
        .map_err(|full| AppError(StatusCode::SERVICE_UNAVAILABLE, full.to_string()))?;
    let id = random_id().map_err(|e| {
        AppError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot draw a session id: {e}"),
        )
    })?;
    Ok((id, slot))
}

/// 128 random bits from the OS, hex: unguessable session ids.
fn random_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The edge's HTTP side when it serves a broker's players (`edge-agent run --broker`): the same
/// routes, WHEP offers authorised by the broker's join tokens. The same router serves the
/// edge's own listener (health, metrics) and the requests the broker relays over the link.
#[derive(Debug, Clone)]
pub(crate) struct EdgeHttp {
    state: Arc<AppState>,
}

impl EdgeHttp {
    /// State for `cfg`, join tokens checked by `tokens`, session slots from `admission` (the
    /// edge's one, shared with QUIC).
    #[must_use]
    pub(crate) fn new(
        cfg: DevServerConfig,
        gpu: Gpu,
        metrics: Arc<Metrics>,
        tokens: Arc<dyn TokenCheck>,
        admission: Admission,
    ) -> Self {
        Self {
            state: AppState::new(cfg, gpu, metrics, Some(tokens), admission),
        }
    }

    /// The router over this state.
    pub(crate) fn router(&self) -> Router {
        router(Arc::clone(&self.state))
    }

    /// Ends every WebRTC peer and dev session (at shutdown, after draining).
    pub(crate) async fn end_all(&self) {
        self.state.whep.stop_all();
        self.state.end_dev_sessions().await;
    }
}
