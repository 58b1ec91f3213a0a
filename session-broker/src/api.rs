//! The broker's HTTP API (axum): edge registration and heartbeats, session placement and
//! selection, the broker's public key, health, metrics and the OpenAPI document.
//!
//! [`app`] is a plain `Router`, tested without a socket; [`serve`] binds it and stops when its
//! `shutdown` future resolves. Edges sign their registration and heartbeats with their Ed25519
//! identity (the edge id is the public key), over [`canonical_json`] of the body without its
//! `signature`, prefixed by a domain string, so a signature for one purpose cannot be replayed
//! for another; a signed `issued_unix_ms` within [`SIGNED_SKEW_MS`] of the broker's clock keeps
//! old messages from being replayed later.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use edgeplay_protocol::token::{EdgeId, SessionId, Signature, to_hex};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::liveness::{EdgeState, Heard, Liveness};
use crate::placement::{EdgeSpec, Index, IndexConfig, PlacementError, Request};
use crate::ratelimit::{Limited, Limiter};
use crate::registry;
use crate::requests::{self, DecodeError};
use crate::store::{Store, StoreError, Swap, Table};
use crate::tokens::BrokerKey;

/// Largest request body accepted.
pub const MAX_BODY: usize = 16 * 1024;
/// How far a signed message's `issued_unix_ms` may be from the broker's clock.
pub const SIGNED_SKEW_MS: u64 = 60_000;
/// Domain prefix of registration signatures.
pub const REGISTER_DOMAIN: &[u8] = edgeplay_protocol::link::REGISTER_DOMAIN;
/// A reported coordinate is written to the store (and so reaches the other brokers) once it is
/// this far (ms, plane plus height) from the stored one; placement here follows every report.
pub const COORD_PERSIST_MS: f64 = 5.0;
/// Domain prefix of heartbeat signatures.
pub const HEARTBEAT_DOMAIN: &[u8] = b"edgeplay/edge-heartbeat/v1\n";

/// The OpenAPI document served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

pub use crate::ratelimit::RateLimit;

/// What the API needs: the store, the key, and limits.
#[derive(Debug)]
pub struct Config {
    /// Durable records.
    pub store: Arc<dyn Store>,
    /// The broker's signing key.
    pub key: BrokerKey,
    /// Per-address and per-player limits on session requests and selections.
    pub rate: RateLimit,
    /// How often each linked edge is sent peers to measure its coordinate against.
    pub peers_every: std::time::Duration,
}

/// An edge as registered: what it signed (shared with the edge, which builds and signs it).
pub use edgeplay_protocol::link::EdgeAd;

/// What the broker keeps about an edge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeRecord {
    /// The signed registration.
    pub ad: EdgeAd,
    /// Free slots at the last heartbeat.
    pub free_slots: u32,
    /// Whether the edge is draining (takes no new sessions).
    pub draining: bool,
    /// Alive or dead (missed heartbeats); written to the store only when it changes.
    #[serde(default)]
    pub state: EdgeState,
    /// Id of the broker the edge registered with (its home, which tracks its heartbeats).
    #[serde(default)]
    pub home: String,
    /// The coordinate the edge measured against its peers (reported on the link), which
    /// placement uses instead of the registration's starting one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coord: Option<edgeplay_protocol::coords::Coord>,
    /// The relative error of `coord`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coord_error: Option<f64>,
    /// The coordinate this broker last wrote to the store (memory only).
    #[serde(skip)]
    pub stored_coord: Option<edgeplay_protocol::coords::Coord>,
}

/// A session as the broker keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Session id.
    pub id: SessionId,
    /// Who asked.
    pub player: String,
    /// What was asked.
    pub request: Request,
    /// The K candidates offered.
    pub candidates: Vec<EdgeId>,
    /// The edge picked, once selected.
    pub edge: Option<EdgeId>,
    /// Creation time (unix ms).
    pub created_unix_ms: u64,
    /// Set when the edge died under the session: the failover (not built yet) moves it.
    #[serde(default)]
    pub failover: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    registry: Registry,
    registrations: Counter,
    heartbeats: Counter,
    sessions: Counter,
    selections: Counter,
    rate_limited: Counter,
    pub(crate) rejected_signatures: Counter,
    pub(crate) edges: Gauge,
    pub(crate) edges_dead: Gauge,
    pub(crate) edges_marked_dead: Counter,
    pub(crate) sessions_marked_failover: Counter,
}

impl Metrics {
    fn new() -> Self {
        let mut m = Metrics::default();
        let r = &mut m.registry;
        r.register(
            "broker_registrations",
            "Edge registrations accepted",
            m.registrations.clone(),
        );
        r.register(
            "broker_heartbeats",
            "Edge heartbeats accepted",
            m.heartbeats.clone(),
        );
        r.register("broker_sessions", "Sessions created", m.sessions.clone());
        r.register(
            "broker_selections",
            "Sessions placed on an edge",
            m.selections.clone(),
        );
        r.register(
            "broker_rate_limited",
            "Requests refused by the per-address or per-player limit",
            m.rate_limited.clone(),
        );
        r.register(
            "broker_rejected_signatures",
            "Edge messages with a bad signature",
            m.rejected_signatures.clone(),
        );
        r.register("broker_edges", "Registered edges", m.edges.clone());
        r.register(
            "broker_edges_dead",
            "Registered edges now marked dead",
            m.edges_dead.clone(),
        );
        r.register(
            "broker_edges_marked_dead",
            "Times this broker marked an edge dead (three missed heartbeats)",
            m.edges_marked_dead.clone(),
        );
        r.register(
            "broker_sessions_marked_failover",
            "Sessions whose edge died, marked for failover",
            m.sessions_marked_failover.clone(),
        );
        m
    }
}

#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) index: Index,
    pub(crate) edges: HashMap<EdgeId, (EdgeRecord, Instant)>,
    pub(crate) sessions: HashMap<SessionId, SessionRecord>,
    limiter: Limiter,
    pub(crate) liveness: Liveness,
}

#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) cfg: Config,
    live: Mutex<Live>,
    pub(crate) metrics: Metrics,
    /// Edges connected over the link, and the relay to them.
    pub(crate) links: crate::edge_link::Links,
    /// The liveness sweep and the store's edge watch; stopped when the router is dropped.
    pub(crate) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for AppState {
    fn drop(&mut self) {
        for t in self
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            t.abort();
        }
    }
}

impl AppState {
    pub(crate) fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An error a client sees: a status and a sentence saying what was wrong and what to do.
#[derive(Debug)]
pub struct AppError(StatusCode, String);

impl AppError {
    pub(crate) fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        AppError(status, msg.into())
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.1, self.0)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        let status = match r {
            JsonRejection::BytesRejection(_) => StatusCode::PAYLOAD_TOO_LARGE,
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        AppError(status, r.body_text())
    }
}

impl From<DecodeError> for AppError {
    fn from(e: DecodeError) -> Self {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
        AppError(status, e.message)
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        AppError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

fn bad(msg: impl Into<String>) -> AppError {
    AppError(StatusCode::BAD_REQUEST, msg.into())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub use edgeplay_protocol::link::{canonical_json, signed_bytes};

/// Adds `signature` to `body`, signed with `key` (what an edge agent does).
pub fn sign_body(
    domain: &[u8],
    mut body: Value,
    key: &edgeplay_protocol::token::SigningKey,
) -> Value {
    use ed25519_dalek::Signer;
    let sig = key.sign(&signed_bytes(domain, &body));
    if let Value::Object(m) = &mut body {
        m.insert("signature".into(), Value::String(to_hex(&sig.to_bytes())));
    }
    body
}

fn check_signature(
    s: &AppState,
    domain: &[u8],
    edge: &EdgeId,
    body: &Value,
    sig: &Signature,
    issued_unix_ms: u64,
) -> Result<(), AppError> {
    let unauthorized = |m: String| {
        s.metrics.rejected_signatures.inc();
        AppError(StatusCode::UNAUTHORIZED, m)
    };
    let key = edge
        .verifying_key()
        .ok_or_else(|| unauthorized(format!("edge id {edge} is not an Ed25519 public key")))?;
    key.verify_strict(&signed_bytes(domain, body), sig)
        .map_err(|_| {
            unauthorized(format!(
                "signature does not match edge {edge}: sign the canonical JSON of the body without `signature` with the edge's key"
            ))
        })?;
    if now_ms().abs_diff(issued_unix_ms) > SIGNED_SKEW_MS {
        return Err(unauthorized(format!(
            "`issued_unix_ms` {issued_unix_ms} is more than {SIGNED_SKEW_MS} ms from the broker's clock: sync the edge's clock and sign a fresh message"
        )));
    }
    Ok(())
}

pub(crate) fn parse_resolution(r: &str) -> Option<(u32, u32)> {
    let (w, h) = r.split_once('x')?;
    Some((w.parse().ok()?, h.parse().ok()?))
}

pub(crate) fn spec_of(rec: &EdgeRecord) -> EdgeSpec {
    let ad = &rec.ad;
    let (w, h) = ad
        .resolutions
        .iter()
        .filter_map(|r| parse_resolution(r))
        .max_by_key(|&(w, h)| u64::from(w) * u64::from(h))
        .unwrap_or((0, 0));
    EdgeSpec {
        id: ad.id,
        region: ad.region.clone(),
        coord: rec.coord.unwrap_or(ad.coord),
        gpu_class: ad.gpu_class,
        max_width: w,
        max_height: h,
        max_fps: ad.max_fps,
        price_per_min: ad.price_per_min,
        free_slots: rec.free_slots.min(ad.capacity),
        total_slots: ad.capacity,
        reputation: 1.0,
        accepting: !rec.draining && rec.state == EdgeState::Alive,
    }
}

/// Loads the store's edges and sessions and builds the router.
pub async fn app(cfg: Config) -> Result<Router, StoreError> {
    Ok(router(state(cfg).await?))
}

/// The broker's state without HTTP, for in-process benches (`cargo xtask bench placement`):
/// each method is the very function the handlers and the edge link call, under the same
/// registry lock, so placement can be timed while heartbeats contend for that lock. Dropping
/// the last handle stops the background tasks, as dropping the router does.
#[derive(Debug, Clone)]
pub struct Broker(Arc<AppState>);

impl Broker {
    /// Loads `cfg`'s store and starts the liveness sweep, as [`app`] does (inside a tokio runtime).
    ///
    /// # Errors
    /// The store's, when it cannot be read.
    pub async fn start(cfg: Config) -> Result<Self, StoreError> {
        Ok(Broker(state(cfg).await?))
    }

    /// A heartbeat from a linked (authenticated) edge: what the link does with one.
    ///
    /// # Errors
    /// 404 when the edge is not registered.
    pub async fn heartbeat(
        &self,
        edge: EdgeId,
        free_slots: u32,
        draining: bool,
    ) -> Result<(), AppError> {
        apply_heartbeat(&self.0, edge, free_slots, draining).await
    }

    /// The candidates `POST /v1/sessions` offers for `request` (its locked part).
    ///
    /// # Errors
    /// 400 when the request has no location.
    pub fn candidates(&self, request: &Request) -> Result<Vec<EdgeId>, AppError> {
        offer(&self.0, request).map(|(cands, _)| cands)
    }

    /// The edge `POST /v1/sessions/{id}/select` picks from `measured` (its locked part).
    ///
    /// # Errors
    /// 422 when no measurement names a candidate that still meets the request.
    pub fn pick(
        &self,
        request: &Request,
        candidates: &[EdgeId],
        measured: &[(EdgeId, f64)],
    ) -> Result<EdgeId, AppError> {
        choose(&self.0, request, candidates, measured).map(|ad| ad.id)
    }
}

/// The broker's state over `cfg`'s store, loaded, with its background tasks started.
async fn state(cfg: Config) -> Result<Arc<AppState>, StoreError> {
    let mut live = Live {
        index: Index::new(IndexConfig::default()),
        edges: HashMap::new(),
        sessions: HashMap::new(),
        limiter: Limiter::new(cfg.rate),
        liveness: Liveness::new(),
    };
    let now = Instant::now();
    for (key, v) in cfg.store.list(Table::Edges).await? {
        match serde_json::from_slice::<EdgeRecord>(&v) {
            Ok(rec) => {
                live.index.upsert(spec_of(&rec));
                live.edges.insert(rec.ad.id, (rec, now));
            }
            Err(e) => warn!(%key, error = %e, "skipping unreadable edge record"),
        }
    }
    for (key, v) in cfg.store.list(Table::Sessions).await? {
        match serde_json::from_slice::<SessionRecord>(&v) {
            Ok(rec) => {
                live.sessions.insert(rec.id, rec);
            }
            Err(e) => warn!(%key, error = %e, "skipping unreadable session record"),
        }
    }
    info!(
        edges = live.edges.len(),
        sessions = live.sessions.len(),
        "registry loaded"
    );
    let mut metrics = Metrics::new();
    metrics.edges.set(live.edges.len() as i64);
    let links = crate::edge_link::Links::default();
    links.register_metrics(&mut metrics.registry);
    let changes = cfg.store.edge_changes();
    let state = Arc::new(AppState {
        cfg,
        live: Mutex::new(live),
        metrics,
        links,
        tasks: Mutex::new(Vec::new()),
    });
    registry::start(&state, changes);
    Ok(state)
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route("/v1/broker/key", get(broker_key))
        .route("/v1/brokers", get(brokers))
        .route("/v1/edges", post(register).get(list_edges))
        .route("/v1/edges/{id}/heartbeat", post(heartbeat))
        .route(
            "/v1/sessions",
            post(create_session).options(crate::whep_relay::preflight),
        )
        .route("/v1/sessions/{id}", get(get_session))
        .route(
            "/v1/sessions/{id}/select",
            post(select).options(crate::whep_relay::preflight),
        )
        .route("/v1/edges/link", get(crate::edge_link::link))
        .route(
            "/v1/sessions/{id}/whep",
            post(crate::whep_relay::offer).options(crate::whep_relay::preflight),
        )
        .route(
            "/v1/sessions/{id}/probe/{edge}",
            post(crate::whep_relay::probe).options(crate::whep_relay::preflight),
        )
        .route(
            "/v1/sessions/{id}/whep/{peer}",
            axum::routing::patch(crate::whep_relay::resource)
                .delete(crate::whep_relay::resource)
                .get(crate::whep_relay::resource)
                .options(crate::whep_relay::preflight),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Players call the broker from pages on any origin.
        .layer(axum::middleware::map_response(crate::whep_relay::add_cors))
        .with_state(state)
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &s.metrics.registry) {
        return AppError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
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

async fn brokers(State(s): State<Arc<AppState>>) -> Result<Json<Value>, AppError> {
    let brokers = s.cfg.store.brokers().await?;
    Ok(Json(serde_json::json!({ "brokers": brokers })))
}

async fn broker_key(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(serde_json::json!({
        "algorithm": "ed25519",
        "public_key": to_hex(s.cfg.key.public().as_bytes()),
    }))
}

async fn register(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let body = body.map_err(|e| AppError(StatusCode::PAYLOAD_TOO_LARGE, e.body_text()))?;
    let ad = verify_registration(&s, &body)?;
    let id = ad.id;
    let created = admit_edge(&s, ad).await?;
    let status = if created {
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

/// Parses and checks a signed registration (the body of `POST /v1/edges`, also sent over the
/// edge link).
pub(crate) fn verify_registration(s: &AppState, body: &[u8]) -> Result<EdgeAd, AppError> {
    let requests::Signed {
        msg: ad,
        unsigned,
        signature: sig,
    } = requests::registration(body)?;
    check_signature(
        s,
        REGISTER_DOMAIN,
        &ad.id,
        &unsigned,
        &sig,
        ad.issued_unix_ms,
    )?;
    Ok(ad)
}

/// Stores a checked registration and puts the edge in the index: whether it is new.
pub(crate) async fn admit_edge(s: &AppState, ad: EdgeAd) -> Result<bool, AppError> {
    let rec = EdgeRecord {
        free_slots: ad.capacity,
        draining: false,
        state: EdgeState::Alive,
        home: s.cfg.store.me().map(|b| b.id).unwrap_or_default(),
        coord: None,
        coord_error: None,
        stored_coord: None,
        ad,
    };
    let bytes = serde_json::to_vec(&rec).map_err(|e| bad(e.to_string()))?;
    s.cfg
        .store
        .put(Table::Edges, rec.ad.id.to_string(), bytes)
        .await?;
    let id = rec.ad.id;
    let created = {
        let mut live = s.live();
        live.index.upsert(spec_of(&rec));
        live.liveness.handle_heartbeat(id, false, Instant::now());
        let created = live.edges.insert(id, (rec, Instant::now())).is_none();
        s.metrics.edges.set(live.edges.len() as i64);
        created
    };
    s.metrics.registrations.inc();
    info!(edge = %id, "edge registered");
    Ok(created)
}

/// Applies an edge's checked load report, from `POST /v1/edges/{id}/heartbeat` or the edge link:
/// load and liveness live in memory, and the store sees the edge's state only when it changes.
pub(crate) async fn apply_heartbeat(
    s: &Arc<AppState>,
    edge: EdgeId,
    free_slots: u32,
    draining: bool,
) -> Result<(), AppError> {
    // Liveness and load live in memory; the store sees an edge's state only when it changes.
    // An edge heartbeating here (after its broker died, say) makes this broker its home.
    let me = s.cfg.store.me().map(|b| b.id).unwrap_or_default();
    let changed = {
        let mut live = s.live();
        let Live {
            index,
            edges,
            liveness,
            ..
        } = &mut *live;
        let Some((rec, seen)) = edges.get_mut(&edge) else {
            return Err(AppError(
                StatusCode::NOT_FOUND,
                format!("edge {edge} is not registered: POST /v1/edges first"),
            ));
        };
        rec.free_slots = free_slots;
        rec.draining = draining;
        *seen = Instant::now();
        let serving = rec.free_slots < rec.ad.capacity;
        let heard = liveness.handle_heartbeat(edge, serving, Instant::now());
        let revived = heard == Heard::Revived || rec.state == EdgeState::Dead;
        let moved = rec.home != me;
        rec.state = EdgeState::Alive;
        rec.home.clone_from(&me);
        index.upsert(spec_of(rec));
        (revived || moved).then(|| rec.clone())
    };
    if let Some(rec) = changed {
        registry::edge_state_changed(s, rec).await;
    }
    s.metrics.heartbeats.inc();
    Ok(())
}

/// Any authenticated message on an edge's link proves it is alive: an edge marked dead (it was
/// stopped, say, and its heartbeats missed) is revived by its first answer instead of waiting
/// for its next heartbeat, which an idle edge sends only every 15 s.
pub(crate) async fn edge_heard(s: &Arc<AppState>, edge: EdgeId) {
    let dead = s
        .live()
        .edges
        .get(&edge)
        .filter(|(r, _)| r.state == EdgeState::Dead)
        .map(|(r, _)| (r.free_slots, r.draining));
    if let Some((free_slots, draining)) = dead
        && let Err(e) = apply_heartbeat(s, edge, free_slots, draining).await
    {
        warn!(%edge, error = %e.1, "cannot revive the edge");
    }
}

/// An edge reported the coordinate it measured: placement uses it from now on, and the
/// record (so every broker of the store) carries it.
///
/// # Errors
/// What was wrong with it (not finite, out of range), or the store's failure.
pub(crate) async fn apply_coord(
    s: &AppState,
    edge: EdgeId,
    coord: edgeplay_protocol::coords::Coord,
    error: f64,
) -> Result<(), String> {
    if !coord.is_valid() || !error.is_finite() || error < 0.0 {
        return Err(format!(
            "edge {edge} reported coordinate {coord:?} with error {error}: not a usable coordinate"
        ));
    }
    let bytes = {
        let mut guard = s.live();
        let live = &mut *guard;
        let Some((rec, _)) = live.edges.get_mut(&edge) else {
            return Ok(());
        };
        let stored = rec.stored_coord.unwrap_or(rec.ad.coord);
        rec.coord = Some(coord);
        rec.coord_error = Some(error.min(edgeplay_protocol::coords::INITIAL_ERROR));
        let spec = spec_of(rec);
        live.index.upsert(spec);
        // Placement follows every report; the store only moves worth a write.
        let far = (stored.x - coord.x).hypot(stored.y - coord.y)
            + (stored.height - coord.height).abs()
            >= COORD_PERSIST_MS;
        if !far {
            return Ok(());
        }
        rec.stored_coord = Some(coord);
        serde_json::to_vec(rec).map_err(|e| e.to_string())?
    };
    s.cfg
        .store
        .put(Table::Edges, edge.to_string(), bytes)
        .await
        .map_err(|e| e.to_string())
}

/// Up to [`edgeplay_protocol::link::MAX_PEERS`] live edges other than `edge` that answer UDP
/// echoes, picked at random, with their coordinates: what `edge` measures next.
pub(crate) fn peers_for(s: &AppState, edge: &EdgeId) -> Vec<edgeplay_protocol::link::PeerRef> {
    let mut seed = [0u8; 8];
    if getrandom::fill(&mut seed).is_err() {
        return Vec::new();
    }
    let live = s.live();
    live.index
        .sample(
            edgeplay_protocol::link::MAX_PEERS + 1,
            u64::from_le_bytes(seed),
        )
        .into_iter()
        .filter(|id| id != edge)
        .filter_map(|id| {
            let (rec, _) = live.edges.get(&id)?;
            Some(edgeplay_protocol::link::PeerRef {
                id,
                echo_addr: rec.ad.echo_addr?,
                coord: rec.coord.unwrap_or(rec.ad.coord),
                error: rec
                    .coord_error
                    .unwrap_or(edgeplay_protocol::coords::INITIAL_ERROR),
            })
        })
        .take(edgeplay_protocol::link::MAX_PEERS)
        .collect()
}

/// An edge's link dropped: it takes no new sessions until it links again.
pub(crate) fn edge_gone(s: &AppState, edge: &EdgeId) {
    s.live().index.remove(edge);
    warn!(%edge, "edge gone: out of placement until it links again");
}

/// A session as this broker knows it, or as the store has it (one created or selected on
/// another broker of the same store): 404 when neither does.
async fn session_record(
    s: &AppState,
    sid: &SessionId,
    need_edge: bool,
) -> Result<SessionRecord, AppError> {
    let cached = s.live().sessions.get(sid).cloned();
    match cached {
        Some(rec) if !need_edge || rec.edge.is_some() => Ok(rec),
        _ => registry::session(s, sid)
            .await?
            .map(|(rec, _)| rec)
            .ok_or_else(|| no_session(sid)),
    }
}

/// Checks that `edge` is one of the session's candidates (what a player may probe).
pub(crate) async fn session_candidate(
    s: &AppState,
    sid: &SessionId,
    edge: &EdgeId,
) -> Result<(), AppError> {
    let rec = session_record(s, sid, false).await?;
    if rec.candidates.contains(edge) {
        Ok(())
    } else {
        Err(AppError(
            StatusCode::NOT_FOUND,
            format!(
                "edge {edge} is not a candidate of session {sid}: probe the candidates the session lists"
            ),
        ))
    }
}

/// The edge a session was placed on: 404 for an unknown session, 409 before selection.
pub(crate) async fn session_edge(s: &AppState, sid: &SessionId) -> Result<EdgeId, AppError> {
    let rec = session_record(s, sid, true).await?;
    rec.edge.ok_or_else(|| {
        AppError(
            StatusCode::CONFLICT,
            format!("session {sid} has no edge yet: POST /v1/sessions/{sid}/select first"),
        )
    })
}

/// Where players reach `edges` through a relay: `""` (this broker, relative URLs) for an edge
/// linked here, else the URL of the broker it is linked to (its home, from the shared store),
/// when that broker is alive. Brokers relay only to their own links.
async fn relay_bases(s: &AppState, edges: &[EdgeId]) -> HashMap<EdgeId, String> {
    let homes: Vec<(EdgeId, String)> = {
        let live = s.live();
        edges
            .iter()
            .filter(|e| !s.links.is_linked(e))
            .filter_map(|e| live.edges.get(e).map(|(r, _)| (*e, r.home.clone())))
            .collect()
    };
    let me = s.cfg.store.me().map(|b| b.id).unwrap_or_default();
    let away: Vec<_> = homes
        .into_iter()
        .filter(|(_, h)| !h.is_empty() && *h != me)
        .collect();
    if away.is_empty() {
        return HashMap::new();
    }
    let brokers = match s.cfg.store.brokers().await {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "cannot list the brokers for relay URLs; pointing players here");
            return HashMap::new();
        }
    };
    away.into_iter()
        .filter_map(|(e, home)| {
            brokers
                .iter()
                .find(|b| b.id == home)
                .map(|b| (e, b.url.trim_end_matches('/').to_owned()))
        })
        .collect()
}

async fn list_edges(State(s): State<Arc<AppState>>) -> Json<Vec<EdgeRecord>> {
    let live = s.live();
    let mut v: Vec<EdgeRecord> = live.edges.values().map(|(r, _)| r.clone()).collect();
    v.sort_by_key(|r| r.ad.id);
    Json(v)
}

fn parse_id<T: std::str::FromStr>(what: &str, id: &str) -> Result<T, AppError>
where
    T::Err: std::fmt::Display,
{
    id.parse()
        .map_err(|e| bad(format!("{what} id `{id}` in the path: {e}")))
}

async fn heartbeat(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Value>, AppError> {
    let edge: EdgeId = parse_id("edge", &id)?;
    if !s.live().edges.contains_key(&edge) {
        return Err(AppError(
            StatusCode::NOT_FOUND,
            format!("edge {edge} is not registered: POST /v1/edges first"),
        ));
    }
    let body = body.map_err(|e| AppError(StatusCode::PAYLOAD_TOO_LARGE, e.body_text()))?;
    let requests::Signed {
        msg: hb,
        unsigned,
        signature: sig,
    } = requests::heartbeat(&body)?;
    check_signature(
        &s,
        HEARTBEAT_DOMAIN,
        &edge,
        &unsigned,
        &sig,
        hb.issued_unix_ms,
    )?;
    apply_heartbeat(&s, edge, hb.free_slots, hb.draining).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

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
    coord: edgeplay_protocol::coords::Coord,
    coord_error: f64,
}

/// The caller's address, when the router is served with connect info (always, by [`serve`]).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<SocketAddr>);

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

/// Takes a token from the caller's address bucket and its player bucket (see [`crate::ratelimit`]).
/// Without a peer address (a router called in-process, as in tests) all callers share one.
fn rate_limit(s: &AppState, peer: Option<SocketAddr>, player: &str) -> Result<(), AppError> {
    let ip = peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |p| p.ip());
    let mut live = s.live();
    let rate = live.limiter.rate();
    let Err(which) = live.limiter.check(ip, player, Instant::now()) else {
        return Ok(());
    };
    drop(live);
    s.metrics.rate_limited.inc();
    let msg = match which {
        Limited::Ip => format!(
            "address {ip} is over {} requests/s (burst {}): retry in a second",
            rate.ip_per_sec, rate.ip_burst
        ),
        Limited::Player => format!(
            "player `{player}` is over {} requests/s (burst {}): retry in a second",
            rate.per_sec, rate.burst
        ),
    };
    Err(AppError(StatusCode::TOO_MANY_REQUESTS, msg))
}

/// The locked part of `POST /v1/sessions`: the request's candidates from the index and what
/// the answer says of each, under one hold of the registry lock.
fn offer(s: &AppState, request: &Request) -> Result<(Vec<EdgeId>, Vec<CandidateOut>), AppError> {
    let live = s.live();
    let cands: Vec<EdgeId> = live
        .index
        .candidates_scored(request)
        .map_err(|e| bad(e.to_string()))?
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let out: Vec<CandidateOut> = cands
        .iter()
        .filter_map(|id| live.edges.get(id))
        .map(|(r, _)| CandidateOut {
            edge: r.ad.id,
            region: r.ad.region.clone(),
            quic_addr: r.ad.quic_addr,
            echo_addr: r.ad.echo_addr,
            probe_url: String::new(),
            coord: r.coord.unwrap_or(r.ad.coord),
            coord_error: r
                .coord_error
                .unwrap_or(edgeplay_protocol::coords::INITIAL_ERROR),
        })
        .collect();
    Ok((cands, out))
}

/// The locked part of `POST /v1/sessions/{id}/select`: the pick on the measured RTTs and the
/// chosen edge's registration, under one hold of the registry lock.
fn choose(
    s: &AppState,
    request: &Request,
    candidates: &[EdgeId],
    measured: &[(EdgeId, f64)],
) -> Result<EdgeAd, AppError> {
    let live = s.live();
    let pick = live
        .index
        .pick(request, candidates, measured)
        .map_err(|e| match e {
            PlacementError::NoMeasuredCandidate => {
                AppError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            PlacementError::NoLocation => bad(e.to_string()),
        })?;
    live.edges
        .get(&pick.edge)
        .map(|(r, _)| r.ad.clone())
        .ok_or_else(|| {
            AppError(
                StatusCode::CONFLICT,
                "the chosen edge left: ask for a new session".into(),
            )
        })
}

async fn create_session(
    State(s): State<Arc<AppState>>,
    Peer(peer): Peer,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let body = body.map_err(|e| AppError(StatusCode::PAYLOAD_TOO_LARGE, e.body_text()))?;
    let req = requests::session_request(&body)?;
    rate_limit(&s, peer, &req.player)?;
    let request = Request {
        coord: req.coord,
        region: req.region,
        width: req.width,
        height: req.height,
        fps: req.fps,
        min_gpu_class: req.min_gpu_class,
        max_price_per_min: req.max_price_per_min,
    };
    let (candidates, out) = offer(&s, &request)?;
    if candidates.is_empty() {
        return Err(AppError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no edge meets the request: relax the resolution, GPU class or price, or retry later"
                .into(),
        ));
    }
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw)
        .map_err(|e| AppError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let id = SessionId(raw);
    let bases = relay_bases(&s, &candidates).await;
    let out: Vec<CandidateOut> = out
        .into_iter()
        .map(|mut c| {
            let base = bases.get(&c.edge).map_or("", String::as_str);
            c.probe_url = format!("{base}/v1/sessions/{id}/probe/{}", c.edge);
            c
        })
        .collect();
    let rec = SessionRecord {
        id,
        player: req.player,
        request,
        candidates,
        edge: None,
        created_unix_ms: now_ms(),
        failover: false,
    };
    let bytes = serde_json::to_vec(&rec).map_err(|e| bad(e.to_string()))?;
    s.cfg
        .store
        .put(Table::Sessions, id.to_string(), bytes)
        .await?;
    s.live().sessions.insert(id, rec);
    s.metrics.sessions.inc();
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "session": id,
            "candidates": out,
            "select_url": format!("/v1/sessions/{id}/select"),
        })),
    ))
}

async fn get_session(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<SessionRecord>, AppError> {
    let sid: SessionId = parse_id("session", &id)?;
    registry::session(&s, &sid)
        .await?
        .map(|(rec, _)| Json(rec))
        .ok_or_else(|| no_session(&sid))
}

fn no_session(id: &SessionId) -> AppError {
    AppError(
        StatusCode::NOT_FOUND,
        format!("no session {id}: ask for one with POST /v1/sessions"),
    )
}

async fn select(
    State(s): State<Arc<AppState>>,
    Peer(peer): Peer,
    Path(id): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Value>, AppError> {
    let sid: SessionId = parse_id("session", &id)?;
    let body = body.map_err(|e| AppError(StatusCode::PAYLOAD_TOO_LARGE, e.body_text()))?;
    let req = requests::select_request(&body)?;
    // The record as stored, with its revision: the owner change below is fenced on it.
    let (stored, revision) = registry::session(&s, &sid)
        .await?
        .ok_or_else(|| no_session(&sid))?;
    rate_limit(&s, peer, &stored.player)?;
    let measured: Vec<(EdgeId, f64)> = req.measured.iter().map(|m| (m.edge, m.rtt_ms)).collect();
    debug!(session = %sid, ?measured, "select");
    let edge = choose(&s, &stored.request, &stored.candidates, &measured)?;
    let mut rec = stored;
    rec.edge = Some(edge.id);
    let (token, t) = s
        .cfg
        .key
        .mint(sid, edge.id, &rec.player, now_ms())
        .map_err(|e| AppError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let bytes = serde_json::to_vec(&rec).map_err(|e| bad(e.to_string()))?;
    if let Swap::Stale(_) = s
        .cfg
        .store
        .put_if(Table::Sessions, sid.to_string(), bytes, revision)
        .await?
    {
        return Err(AppError(
            StatusCode::CONFLICT,
            format!(
                "session {sid} changed while it was being placed (another broker or request placed it): GET it and retry"
            ),
        ));
    }
    s.live().sessions.insert(sid, rec);
    s.metrics.selections.inc();
    info!(session = %sid, edge = %edge.id, "session placed");
    let bases = relay_bases(&s, &[edge.id]).await;
    let base = bases.get(&edge.id).map_or("", String::as_str);
    let mut answer = serde_json::json!({
        "session": sid,
        "edge": edge.id,
        "quic_addr": edge.quic_addr,
        "cert_fingerprint": edge.cert_fingerprint,
        "whep_url": format!("{base}/v1/sessions/{sid}/whep"),
        "token": to_hex(&token),
        "expires_unix_ms": t.expires_unix_ms,
    });
    // Signed, so a client that knows the broker's key trusts the address and fingerprint even
    // when the answer came through something it does not trust.
    let sig = s.cfg.key.sign(&signed_bytes(
        edgeplay_protocol::link::PLACEMENT_DOMAIN,
        &answer,
    ));
    answer["signature"] = Value::String(to_hex(&sig.to_bytes()));
    Ok(Json(answer))
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains open requests.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RedbStore;
    use axum::body::Body;
    use axum::http::Request as HttpRequest;
    use edgeplay_protocol::token::{SigningKey, from_hex, verify};
    use tower::ServiceExt;

    struct T {
        router: Router,
        state: Arc<AppState>,
        key: BrokerKey,
        _dir: PathGuard,
    }

    struct PathGuard(std::path::PathBuf);
    impl Drop for PathGuard {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn setup(name: &str, rate: RateLimit) -> T {
        let dir = std::env::temp_dir().join(format!("edgeplay-api-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let key = BrokerKey::load_or_create(&dir).unwrap();
        let store = Arc::new(RedbStore::open(&dir).unwrap());
        let state = state(Config {
            store,
            key: key.clone(),
            rate,
            peers_every: std::time::Duration::from_millis(edgeplay_protocol::link::PEERS_EVERY_MS),
        })
        .await
        .unwrap();
        T {
            router: router(Arc::clone(&state)),
            state,
            key,
            _dir: PathGuard(dir),
        }
    }

    async fn call(
        r: &Router,
        method: &str,
        uri: &str,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut b = HttpRequest::builder().method(method).uri(uri);
        if body.is_some() {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        let req = b.body(body.map_or_else(Body::empty, Body::from)).unwrap();
        let resp = r.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, v)
    }

    pub(crate) fn edge_body(key: &SigningKey, x: f64, port: u16) -> Value {
        let id = EdgeId(key.verifying_key().to_bytes());
        let body = serde_json::json!({
            "id": id,
            "region": "eu",
            "gpu": "RTX 4090",
            "gpu_class": 3,
            "encoders": ["nvenc-h264", "x264"],
            "resolutions": ["1920x1080", "1280x720"],
            "max_fps": 60,
            "capacity": 4,
            "price_per_min": 100,
            "coord": {"x": x, "y": 0.0, "height": 1.0},
            "quic_addr": format!("127.0.0.1:{port}"),
            "cert_fingerprint": "ab".repeat(32),
            "issued_unix_ms": now_ms(),
        });
        sign_body(REGISTER_DOMAIN, body, key)
    }

    #[tokio::test]
    async fn a_reported_coordinate_moves_placement_at_once_and_the_store_past_5_ms() {
        use edgeplay_protocol::coords::Coord;
        let t = setup("coord", RateLimit::default()).await;
        let k = SigningKey::from_bytes(&[9; 32]);
        let body = edge_body(&k, 0.0, 1).to_string();
        let (st, v) = call(&t.router, "POST", "/v1/edges", Some(body)).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        let id = EdgeId(k.verifying_key().to_bytes());
        let stored = || async {
            let v = t.state.cfg.store.get(Table::Edges, &id.to_string()).await;
            let rec: EdgeRecord = serde_json::from_slice(&v.unwrap().unwrap()).unwrap();
            rec.coord
        };
        let placed = || t.state.live().index.get(&id).unwrap().coord;
        let at = |x| Coord {
            x,
            y: 0.0,
            height: 1.0,
        };
        // 3 ms from the registration's coordinate: placement follows, the store does not.
        apply_coord(&t.state, id, at(3.0), 0.4).await.unwrap();
        assert_eq!(placed(), at(3.0));
        assert_eq!(stored().await, None);
        // 6 ms from it: written, and what placement uses.
        apply_coord(&t.state, id, at(6.0), 0.3).await.unwrap();
        assert_eq!((placed(), stored().await), (at(6.0), Some(at(6.0))));
        // 4 ms on from the stored one: placement only again.
        apply_coord(&t.state, id, at(10.0), 0.2).await.unwrap();
        assert_eq!((placed(), stored().await), (at(10.0), Some(at(6.0))));
        // Nonsense is refused and changes nothing.
        let nan = Coord {
            x: f64::NAN,
            ..at(0.0)
        };
        assert!(apply_coord(&t.state, id, nan, 0.1).await.is_err());
        assert!(
            apply_coord(&t.state, id, at(50.0), f64::INFINITY)
                .await
                .is_err()
        );
        assert_eq!(placed(), at(10.0));
        // What the edge's peers are told: its latest coordinate and error.
        let other = SigningKey::from_bytes(&[10; 32]);
        let mut body = edge_body(&other, 0.0, 2);
        body.as_object_mut().unwrap().remove("signature");
        body["echo_addr"] = serde_json::json!("127.0.0.1:9");
        let body = sign_body(REGISTER_DOMAIN, body, &other);
        let (st, v) = call(&t.router, "POST", "/v1/edges", Some(body.to_string())).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        let mut body = edge_body(&k, 0.0, 1);
        body.as_object_mut().unwrap().remove("signature");
        body["echo_addr"] = serde_json::json!("127.0.0.1:8");
        let body = sign_body(REGISTER_DOMAIN, body, &k);
        let (st, v) = call(&t.router, "POST", "/v1/edges", Some(body.to_string())).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        apply_coord(&t.state, id, at(20.0), 0.2).await.unwrap();
        let peers = peers_for(&t.state, &EdgeId(other.verifying_key().to_bytes()));
        assert_eq!(peers.len(), 1, "{peers:?}");
        assert_eq!(
            (peers[0].id, peers[0].coord, peers[0].error),
            (id, at(20.0), 0.2)
        );
    }

    fn session_body(player: &str) -> String {
        serde_json::json!({
            "player": player,
            "coord": {"x": 1.0, "y": 0.0, "height": 1.0},
            "width": 1280, "height": 720, "fps": 60,
        })
        .to_string()
    }

    #[tokio::test]
    async fn register_place_select_gives_a_token_the_edge_accepts() {
        let t = setup("flow", RateLimit::default()).await;
        let keys = [
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        ];
        for (i, k) in keys.iter().enumerate() {
            let (st, v) = call(
                &t.router,
                "POST",
                "/v1/edges",
                Some(edge_body(k, i as f64 * 10.0, 4433 + i as u16).to_string()),
            )
            .await;
            assert_eq!(st, StatusCode::CREATED, "{v}");
        }
        let e1 = EdgeId(keys[1].verifying_key().to_bytes());
        let hb = sign_body(
            HEARTBEAT_DOMAIN,
            serde_json::json!({"free_slots": 2, "issued_unix_ms": now_ms()}),
            &keys[1],
        );
        let (st, v) = call(
            &t.router,
            "POST",
            &format!("/v1/edges/{e1}/heartbeat"),
            Some(hb.to_string()),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{v}");

        let (st, v) = call(
            &t.router,
            "POST",
            "/v1/sessions",
            Some(session_body("alice")),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        assert_eq!(v["candidates"].as_array().unwrap().len(), 2);
        let sid = v["session"].as_str().unwrap().to_owned();
        // The farther edge by coordinates answers faster when measured: it wins.
        let sel = serde_json::json!({"measured": [
            {"edge": EdgeId(keys[0].verifying_key().to_bytes()), "rtt_ms": 30.0},
            {"edge": e1, "rtt_ms": 5.0},
        ]});
        let (st, v) = call(
            &t.router,
            "POST",
            &format!("/v1/sessions/{sid}/select"),
            Some(sel.to_string()),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["edge"], serde_json::json!(e1));
        assert_eq!(v["quic_addr"], "127.0.0.1:4434");
        assert_eq!(v["whep_url"], format!("/v1/sessions/{sid}/whep"));
        let mut unsigned = v.clone();
        let sig = unsigned
            .as_object_mut()
            .unwrap()
            .remove("signature")
            .unwrap();
        let sig: [u8; 64] = from_hex(sig.as_str().unwrap()).unwrap().try_into().unwrap();
        t.key
            .public()
            .verify_strict(
                &signed_bytes(edgeplay_protocol::link::PLACEMENT_DOMAIN, &unsigned),
                &Signature::from_bytes(&sig),
            )
            .expect("the placement is signed by the broker");
        let token = from_hex(v["token"].as_str().unwrap()).unwrap();
        let got = verify(&token, &t.key.public(), now_ms(), &e1).unwrap();
        assert_eq!(got.player, "alice");
        assert_eq!(got.session.to_string(), sid);

        let (st, v) = call(&t.router, "GET", &format!("/v1/sessions/{sid}"), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["edge"], serde_json::json!(e1));
        let (_, v) = call(&t.router, "GET", "/v1/broker/key", None).await;
        assert_eq!(v["public_key"], to_hex(t.key.public().as_bytes()));
    }

    #[tokio::test]
    async fn bad_signature_is_401_and_unknown_heartbeat_is_404() {
        let t = setup("auth", RateLimit::default()).await;
        let k = SigningKey::from_bytes(&[3; 32]);
        let mut body = edge_body(&k, 0.0, 1);
        body["price_per_min"] = serde_json::json!(1); // changed after signing
        let (st, v) = call(&t.router, "POST", "/v1/edges", Some(body.to_string())).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
        // Signed by another key than the id claims.
        let other = SigningKey::from_bytes(&[4; 32]);
        let mut body = edge_body(&k, 0.0, 1);
        body.as_object_mut().unwrap().remove("signature");
        let forged = sign_body(REGISTER_DOMAIN, body, &other);
        let (st, _) = call(&t.router, "POST", "/v1/edges", Some(forged.to_string())).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let hb = sign_body(
            HEARTBEAT_DOMAIN,
            serde_json::json!({"free_slots": 1, "issued_unix_ms": now_ms()}),
            &k,
        );
        let id = EdgeId(k.verifying_key().to_bytes());
        let (st, v) = call(
            &t.router,
            "POST",
            &format!("/v1/edges/{id}/heartbeat"),
            Some(hb.to_string()),
        )
        .await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    }

    #[tokio::test]
    async fn malformed_json_names_the_field_and_oversized_is_413() {
        let t = setup("bad", RateLimit::default()).await;
        let (st, v) = call(
            &t.router,
            "POST",
            "/v1/sessions",
            Some(r#"{"player":"p","width":"wide","height":720,"fps":60}"#.into()),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(v["error"].as_str().unwrap().contains("width"), "{v}");
        let (st, v) = call(
            &t.router,
            "POST",
            "/v1/sessions",
            Some(r#"{"player":"p","height":720,"fps":60}"#.into()),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(v["error"].as_str().unwrap().contains("width"), "{v}");
        let (st, v) = call(&t.router, "POST", "/v1/sessions", Some("{not json".into())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        let k = SigningKey::from_bytes(&[5; 32]);
        let mut body = edge_body(&k, 0.0, 1);
        body["capacity"] = serde_json::json!(-1);
        let (st, v) = call(&t.router, "POST", "/v1/edges", Some(body.to_string())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(v["error"].as_str().unwrap().contains("capacity"), "{v}");
        let big = format!(r#"{{"player":"{}"}}"#, "x".repeat(MAX_BODY));
        let (st, _) = call(&t.router, "POST", "/v1/sessions", Some(big.clone())).await;
        assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
        let (st, _) = call(&t.router, "POST", "/v1/edges", Some(big)).await;
        assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn limits_are_per_address_and_per_player() {
        use axum::extract::connect_info::MockConnectInfo;
        let t = setup(
            "rate",
            RateLimit {
                burst: 3.0,
                per_sec: 0.001,
                ip_burst: 5.0,
                ip_per_sec: 0.001,
            },
        )
        .await;
        let k = SigningKey::from_bytes(&[6; 32]);
        let (st, _) = call(
            &t.router,
            "POST",
            "/v1/edges",
            Some(edge_body(&k, 0.0, 1).to_string()),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED);
        let from = |ip: [u8; 4]| {
            t.router
                .clone()
                .layer(MockConnectInfo(SocketAddr::from((ip, 40000))))
        };
        let a = from([10, 0, 0, 1]);
        for _ in 0..3 {
            let (st, v) = call(&a, "POST", "/v1/sessions", Some(session_body("bob"))).await;
            assert_eq!(st, StatusCode::CREATED, "{v}");
        }
        let (st, v) = call(&a, "POST", "/v1/sessions", Some(session_body("bob"))).await;
        assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
        assert!(v["error"].as_str().unwrap().contains("player `bob`"), "{v}");
        // Other names from the same address share its bucket (5): two more, then refused.
        for p in ["carol", "dave"] {
            let (st, v) = call(&a, "POST", "/v1/sessions", Some(session_body(p))).await;
            assert_eq!(st, StatusCode::CREATED, "{v}");
        }
        let (st, v) = call(&a, "POST", "/v1/sessions", Some(session_body("erin"))).await;
        assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
        assert!(v["error"].as_str().unwrap().contains("10.0.0.1"), "{v}");
        // Another address is not affected.
        let b = from([10, 0, 0, 2]);
        let (st, v) = call(&b, "POST", "/v1/sessions", Some(session_body("erin"))).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        let (_, v) = call(&t.router, "GET", "/metrics", None).await;
        assert!(
            v.as_str().unwrap().contains("broker_rate_limited_total 2"),
            "{v}"
        );
    }

    #[tokio::test]
    async fn health_metrics_and_openapi_are_served() {
        let t = setup("meta", RateLimit::default()).await;
        let (st, _) = call(&t.router, "GET", "/healthz", None).await;
        assert_eq!(st, StatusCode::OK);
        let (st, v) = call(&t.router, "GET", "/metrics", None).await;
        assert_eq!(st, StatusCode::OK);
        assert!(v.as_str().unwrap().contains("broker_sessions_total"), "{v}");
        let (st, v) = call(&t.router, "GET", "/openapi.json", None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["openapi"], "3.1.0");
        assert!(v["paths"]["/v1/sessions/{id}/select"].is_object());
    }
}
