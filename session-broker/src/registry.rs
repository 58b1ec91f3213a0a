//! A running registry: the broker's state loaded from its store (`start`) with its two
//! background tasks, and [`Broker`], the in-process handle over it.
//!
//! The tasks: the sweep (dead edges leave the placement index and their sessions end, edges of
//! a broker whose lease expired are adopted, sessions past their deadline end, and summaries
//! beyond the retention go), and the watch
//! of edge records written by other brokers. The decisions are in [`crate::liveness`] and the
//! registry's changes in [`crate::service`]; this module is the thin tokio glue. The tasks hold
//! only a `Weak` reference to the state and are aborted when it is dropped.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use edgeplay_protocol::link::LinkMessage;
use edgeplay_protocol::token::EdgeId;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{info, warn};

use crate::error::BrokerError;
use crate::placement::Request;
use crate::state::{AppState, Config};
use crate::store::{Change, StoreError};

/// How often the sweep looks for dead edges (well under the 1.5 s a serving edge has).
pub const SWEEP: Duration = Duration::from_millis(100);
/// How often the sweep looks for edges whose home broker is gone.
pub const ADOPT_EVERY: Duration = Duration::from_secs(1);
/// How often summaries beyond the retention are removed (every sweep: small passes).
pub const PRUNE_EVERY: Duration = SWEEP;

/// The broker's state over `cfg`'s store, loaded, with its background tasks started (inside a
/// tokio runtime).
pub(crate) async fn start(cfg: Config) -> Result<Arc<AppState>, StoreError> {
    let state = Arc::new(AppState::load(cfg).await?);
    let changes = state.cfg.store.edge_changes();
    let mut tasks = vec![tokio::spawn(sweep(Arc::downgrade(&state)))];
    if let Some(rx) = changes {
        tasks.push(tokio::spawn(follow(Arc::downgrade(&state), rx)));
    }
    state.hold(tasks);
    Ok(state)
}

async fn sweep(state: Weak<AppState>) {
    let mut tick = tokio::time::interval(SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_adopt = Instant::now();
    let mut last_prune: Option<Instant> = None;
    loop {
        tick.tick().await;
        let Some(s) = state.upgrade() else { return };
        let now = Instant::now();
        for order in s.service.sweep_sessions().await {
            let msg = LinkMessage::End {
                session: order.session,
                reason: order.reason,
            };
            if s.links.tell(&order.edge, msg) {
                info!(session = %order.session, edge = %order.edge, reason = %order.reason,
                      "told the edge to end the session");
            }
        }
        if last_prune.is_none_or(|t| now.duration_since(t) >= PRUNE_EVERY) {
            last_prune = Some(now);
            if let Err(e) = s.service.prune_summaries().await {
                warn!(error = %e, "cannot prune session summaries");
            }
        }
        if now.duration_since(last_adopt) >= ADOPT_EVERY {
            last_adopt = now;
            if let Err(e) = adopt_orphans(&s, now).await {
                warn!(error = %e, "cannot list the live brokers");
            }
        }
        for edge in s.service.poll_dead(now) {
            s.service.mark_dead(edge).await;
        }
    }
}

/// Lists the live brokers, tells the links (so that an edge whose broker dies knows where else
/// to go), and adopts the edges whose home broker is not among them.
async fn adopt_orphans(s: &AppState, now: Instant) -> Result<(), StoreError> {
    if s.cfg.store.me().is_none() {
        return Ok(());
    }
    let brokers = s.cfg.store.brokers().await?;
    s.links.publish_brokers(brokers.clone());
    s.service.adopt_orphans(&brokers, now);
    Ok(())
}

/// Applies edge records written by other brokers to this broker's registry.
async fn follow(state: Weak<AppState>, mut rx: UnboundedReceiver<Change>) {
    while let Some(change) = rx.recv().await {
        let Some(s) = state.upgrade() else { return };
        s.service.apply_change(change);
    }
}

/// The broker's state without HTTP, for in-process benches (`cargo xtask bench placement`):
/// each method is the very function the handlers and the edge link call, under the same
/// registry lock, so placement can be timed while heartbeats contend for that lock. Dropping
/// the last handle stops the background tasks, as dropping the router does.
#[derive(Debug, Clone)]
pub struct Broker(Arc<AppState>);

impl Broker {
    /// Loads `cfg`'s store and starts the liveness sweep, as `routes::app` does
    /// (inside a tokio runtime).
    ///
    /// # Errors
    /// The store's, when it cannot be read.
    pub async fn start(cfg: Config) -> Result<Self, StoreError> {
        Ok(Broker(start(cfg).await?))
    }

    /// A heartbeat from a linked (authenticated) edge: what the link does with one.
    ///
    /// # Errors
    /// [`BrokerError::UnknownEdge`] when the edge is not registered.
    pub async fn heartbeat(
        &self,
        edge: EdgeId,
        free_slots: u32,
        draining: bool,
    ) -> Result<(), BrokerError> {
        self.0
            .service
            .apply_heartbeat(edge, free_slots, draining)
            .await
    }

    /// The candidates `POST /v1/sessions` offers for `request` (its locked part).
    ///
    /// # Errors
    /// [`BrokerError::Placement`] when the request has no location.
    pub fn candidates(&self, request: &Request) -> Result<Vec<EdgeId>, BrokerError> {
        self.0.service.offer(request).map(|(cands, _)| cands)
    }

    /// The edge `POST /v1/sessions/{id}/select` picks from `measured` (its locked part).
    ///
    /// # Errors
    /// [`BrokerError::Placement`] when no measurement names a candidate that still meets the
    /// request.
    pub fn pick(
        &self,
        request: &Request,
        candidates: &[EdgeId],
        measured: &[(EdgeId, f64)],
    ) -> Result<EdgeId, BrokerError> {
        self.0
            .service
            .choose(request, candidates, measured)
            .map(|ad| ad.id)
    }
}
