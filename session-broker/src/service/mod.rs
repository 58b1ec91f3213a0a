//! The registry service: the only code that takes the registry lock.
//!
//! `Service` holds the in-memory registry (the placement index, the edge and session records,
//! liveness and the rate-limit buckets) behind one mutex, with the store it writes through and
//! the broker's key. Every operation on the registry is a method here, called alike by the HTTP
//! routes, the edge link and the background tasks (`registry`): register an edge
//! (`Service::admit_edge`), apply its heartbeats and coordinates, forget it when its link
//! drops, offer and pick edges for a session, look sessions up through the store, and the
//! liveness sweep's decisions. No method holds the lock across an `.await`, and none knows HTTP:
//! they answer with [`BrokerError`]s that the routes turn into statuses.
//!
//! The methods are grouped in four files: `edges` (registration, heartbeats, coordinates,
//! peers, relay bases), `sessions` (rate limits, offer, pick, placement, session look-ups),
//! `lifecycle` (how sessions end, and their summaries) and `sweep` (what the background tasks
//! decide). The live sessions are a [`table::SessionTable`].
//!
//! Edges sign their registration and heartbeats with their Ed25519 identity (the edge id is the
//! public key), over the canonical JSON of the body without its `signature`, prefixed by a
//! domain string (see [`crate::requests`]); a signed `issued_unix_ms` within
//! [`SIGNED_SKEW_MS`] of the broker's clock keeps old messages from being replayed later.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use edgeplay_protocol::coords::Coord;
use edgeplay_protocol::token::EdgeId;
use prometheus_client::metrics::counter::Counter;
use tracing::{info, warn};

use crate::error::BrokerError;
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::placement::{Index, IndexConfig};
use crate::ratelimit::{Limiter, RateLimit};
use crate::records::{EdgeAd, EdgeRecord, SessionRecord, spec_of};
use crate::store::{Store, StoreError, Table};
use crate::tokens::BrokerKey;

mod edges;
mod lifecycle;
mod sessions;
mod sweep;
pub mod table;

use table::{Lifecycle, SessionTable};

/// How far a signed message's `issued_unix_ms` may be from the broker's clock.
pub const SIGNED_SKEW_MS: u64 = 60_000;
/// A reported coordinate is written to the store (and so reaches the other brokers) once it is
/// this far (ms, plane plus height) from the stored one; placement here follows every report.
pub const COORD_PERSIST_MS: f64 = 5.0;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, BrokerError> {
    serde_json::to_vec(v).map_err(|e| BrokerError::Encode(e.to_string()))
}

/// The registry in memory (what the lock guards).
#[derive(Debug)]
struct Live {
    index: Index,
    edges: HashMap<EdgeId, (EdgeRecord, Instant)>,
    sessions: SessionTable,
    limiter: Limiter,
    liveness: Liveness,
}

impl Live {
    /// What placement knows of `rec`'s edge: its record, less the slots of sessions placed
    /// there that its heartbeats do not count yet (the player has not joined).
    fn spec(sessions: &SessionTable, rec: &EdgeRecord) -> crate::placement::EdgeSpec {
        let mut spec = spec_of(rec);
        spec.free_slots = spec
            .free_slots
            .saturating_sub(sessions.pending_on(&rec.ad.id));
        spec
    }

    /// Puts `edge` back in the index with its pending placements counted, if it is there.
    fn refresh(&mut self, edge: &EdgeId) {
        if self.index.get(edge).is_none() {
            return;
        }
        if let Some((rec, _)) = self.edges.get(edge) {
            let spec = Self::spec(&self.sessions, rec);
            self.index.upsert(spec);
        }
    }
}

/// A candidate as `POST /v1/sessions` describes it.
#[derive(Debug, Clone)]
pub(crate) struct Offered {
    pub(crate) edge: EdgeId,
    pub(crate) region: String,
    pub(crate) quic_addr: SocketAddr,
    pub(crate) echo_addr: Option<SocketAddr>,
    /// The coordinate placement uses, and its error.
    pub(crate) coord: Coord,
    pub(crate) coord_error: f64,
}

/// A session placed: the edge's registration and the join token minted for it.
#[derive(Debug)]
pub(crate) struct Placed {
    pub(crate) edge: EdgeAd,
    pub(crate) token: Vec<u8>,
    pub(crate) expires_unix_ms: u64,
}

/// The registry service (see the module docs).
#[derive(Debug)]
pub(crate) struct Service {
    store: Arc<dyn Store>,
    key: BrokerKey,
    live: Mutex<Live>,
    metrics: Metrics,
    lifecycle: Lifecycle,
    /// Selections of a session that had its edge already (registered with the broker's metrics
    /// as `broker_selections_refused_placed`).
    reselections_refused: Counter,
}

impl Service {
    /// Loads the store's edges and live sessions into a fresh registry (summaries stay in the
    /// store: start-up costs what is live, not what happened).
    pub(crate) async fn load(
        store: Arc<dyn Store>,
        key: BrokerKey,
        rate: RateLimit,
        lifecycle: Lifecycle,
        mut metrics: Metrics,
    ) -> Result<Self, StoreError> {
        let mut live = Live {
            index: Index::new(IndexConfig::default()),
            edges: HashMap::new(),
            sessions: SessionTable::default(),
            limiter: Limiter::new(rate),
            liveness: Liveness::new(),
        };
        // Sessions first: an edge's placements not joined yet count against its free slots.
        for (key, v) in store.list(Table::Sessions).await? {
            match serde_json::from_slice::<SessionRecord>(&v) {
                Ok(rec) => {
                    let (due, _) = lifecycle.due(&rec);
                    live.sessions.insert(rec, due);
                }
                Err(e) => warn!(%key, error = %e, "skipping unreadable session record"),
            }
        }
        let now = Instant::now();
        for (key, v) in store.list(Table::Edges).await? {
            match serde_json::from_slice::<EdgeRecord>(&v) {
                Ok(rec) => {
                    let spec = Live::spec(&live.sessions, &rec);
                    live.index.upsert(spec);
                    live.edges.insert(rec.ad.id, (rec, now));
                }
                Err(e) => warn!(%key, error = %e, "skipping unreadable edge record"),
            }
        }
        info!(
            edges = live.edges.len(),
            sessions = live.sessions.len(),
            "registry loaded"
        );
        metrics.edges.set(live.edges.len() as i64);
        metrics.sessions_live.set(live.sessions.len() as i64);
        let reselections_refused = Counter::default();
        metrics.registry.register(
            "broker_selections_refused_placed",
            "Selections refused with 409 because the session was placed already (a session is placed once)",
            reselections_refused.clone(),
        );
        Ok(Service {
            store,
            key,
            live: Mutex::new(live),
            metrics,
            lifecycle,
            reselections_refused,
        })
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The broker's counters.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// This broker's id in the store (empty without one).
    fn me(&self) -> String {
        self.store.me().map(|b| b.id).unwrap_or_default()
    }
}

#[cfg(test)]
pub(crate) mod tests;
