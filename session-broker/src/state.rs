//! What every part of a running broker shares (`AppState`): its configuration, the registry
//! `Service`, the edges linked to it and its background tasks (aborted when the state is
//! dropped, that is when the router, or the last `Broker` handle, goes).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::links::Links;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimit;
use crate::service::Service;
use crate::service::table::Lifecycle;
use crate::store::{Store, StoreError};
use crate::tokens::BrokerKey;

/// What the broker needs: the store, the key, and limits.
#[derive(Debug)]
pub struct Config {
    /// Durable records.
    pub store: Arc<dyn Store>,
    /// The broker's signing key.
    pub key: BrokerKey,
    /// Per-address and per-player limits on session requests and selections.
    pub rate: RateLimit,
    /// How often each linked edge is sent peers to measure its coordinate against.
    pub peers_every: Duration,
    /// How long sessions may wait and last, and how long their summaries are kept.
    pub lifecycle: Lifecycle,
}

/// The broker's shared state (see the module docs).
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) cfg: Config,
    /// The registry and every operation on it.
    pub(crate) service: Service,
    /// Edges connected over the link, and the relay to them.
    pub(crate) links: Links,
    /// The liveness sweep and the store's edge watch; stopped when the state is dropped.
    tasks: Mutex<Vec<JoinHandle<()>>>,
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
    /// The state over `cfg`'s store, loaded; no task started yet.
    pub(crate) async fn load(cfg: Config) -> Result<Self, StoreError> {
        let mut metrics = Metrics::new();
        let links = Links::default();
        links.register_metrics(&mut metrics.registry);
        let service = Service::load(
            cfg.store.clone(),
            cfg.key.clone(),
            cfg.rate,
            cfg.lifecycle,
            metrics,
        )
        .await?;
        Ok(AppState {
            cfg,
            service,
            links,
            tasks: Mutex::new(Vec::new()),
        })
    }

    /// Keeps `tasks` until the state is dropped, then aborts them.
    pub(crate) fn hold(&self, tasks: impl IntoIterator<Item = JoinHandle<()>>) {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(tasks);
    }
}
