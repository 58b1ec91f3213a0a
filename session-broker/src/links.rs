//! The edges linked to this broker ([`Links`]): who is connected now, the request/response relay
//! over their links ([`Links::request`], what the WHEP relay uses to reach an edge that players
//! cannot), the live brokers every link passes on, and the link counters.
//!
//! The connections themselves are run by `edge_link`, which attaches each
//! authenticated link here and detaches it when it drops; a request waiting on a link that drops
//! fails at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use edgeplay_protocol::link::LinkMessage;
use edgeplay_protocol::token::EdgeId;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::RelayError;
use crate::store::BrokerEntry;

/// What a relayed request gave back.
#[derive(Debug)]
pub struct Relayed {
    /// HTTP status.
    pub status: u16,
    /// Headers from the edge.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

/// One edge's link as the relay sees it: where to send, and the requests awaiting an answer.
#[derive(Debug)]
pub(crate) struct Link {
    conn: u64,
    tx: mpsc::Sender<LinkMessage>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Relayed>>>,
}

impl Link {
    fn pending(&self) -> MutexGuard<'_, HashMap<u64, oneshot::Sender<Relayed>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands the edge's answer to the request `id` waits for (none when it timed out).
    pub(crate) fn answer(&self, id: u64, r: Relayed) {
        if let Some(w) = self.pending().remove(&id) {
            let _ = w.send(r);
        }
    }
}

/// The edges linked to this broker, and the link's counters.
#[derive(Debug, Default)]
pub struct Links {
    links: Mutex<HashMap<EdgeId, Arc<Link>>>,
    next: AtomicU64,
    linked: Gauge,
    pub(crate) handshakes_refused: Counter,
    relayed: Counter,
    relay_timeouts: Counter,
    pub(crate) link_errors: Counter,
    pub(crate) link_timeouts: Counter,
    pub(crate) coords_refused: Counter,
    /// The live brokers as the sweep last listed them; every link passes changes on.
    brokers: watch::Sender<Vec<BrokerEntry>>,
}

impl Links {
    fn map(&self) -> MutexGuard<'_, HashMap<EdgeId, Arc<Link>>> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds the link counters to the broker's registry.
    pub fn register_metrics(&self, r: &mut Registry) {
        r.register(
            "broker_edge_links",
            "Edges connected over the link",
            self.linked.clone(),
        );
        r.register(
            "broker_link_handshakes_refused",
            "Link handshakes refused (bad proof, bad registration, timeout)",
            self.handshakes_refused.clone(),
        );
        r.register(
            "broker_link_errors",
            "Links closed on malformed or oversized frames",
            self.link_errors.clone(),
        );
        r.register(
            "broker_link_timeouts",
            "Links dropped because nothing came from the edge for three of its heartbeat intervals (the edge is marked dead)",
            self.link_timeouts.clone(),
        );
        r.register(
            "broker_coords_refused",
            "Edge coordinates not taken (not finite, out of range, or the store failed)",
            self.coords_refused.clone(),
        );
        r.register(
            "broker_relayed_requests",
            "Player requests relayed to edges",
            self.relayed.clone(),
        );
        r.register(
            "broker_relay_timeouts",
            "Relayed requests the edge did not answer in time",
            self.relay_timeouts.clone(),
        );
    }

    /// A number for a new connection (ids of relayed requests come from the same counter).
    pub(crate) fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes connection `conn` the link of `edge` (a newer link of the same edge replaces the
    /// old one, which then ends): the link, and what the relay sends it.
    pub(crate) fn attach(
        &self,
        edge: EdgeId,
        conn: u64,
    ) -> (Arc<Link>, mpsc::Receiver<LinkMessage>) {
        let (tx, rx) = mpsc::channel(64);
        let link = Arc::new(Link {
            conn,
            tx,
            pending: Mutex::new(HashMap::new()),
        });
        let mut map = self.map();
        map.insert(edge, Arc::clone(&link));
        self.linked.set(map.len() as i64);
        (link, rx)
    }

    /// `link` of `edge` dropped: its waiting relays fail now rather than at their timeout.
    /// Whether the edge is gone (no newer link replaced this one).
    pub(crate) fn detach(&self, edge: &EdgeId, link: &Link) -> bool {
        let gone = {
            let mut map = self.map();
            let ours = map.get(edge).is_some_and(|l| l.conn == link.conn);
            if ours {
                map.remove(edge);
            }
            self.linked.set(map.len() as i64);
            ours
        };
        link.pending().clear();
        gone
    }

    /// Publishes the live brokers (the sweep lists them once a second); each link sends a
    /// changed list to its edge at once.
    pub(crate) fn publish_brokers(&self, list: Vec<BrokerEntry>) {
        self.brokers.send_if_modified(|cur| {
            let changed = *cur != list;
            if changed {
                *cur = list;
            }
            changed
        });
    }

    /// The live brokers, as published, and each change to them.
    pub(crate) fn brokers(&self) -> watch::Receiver<Vec<BrokerEntry>> {
        self.brokers.subscribe()
    }

    /// Whether `edge` is linked now.
    pub fn is_linked(&self, edge: &EdgeId) -> bool {
        self.map().contains_key(edge)
    }

    /// Sends `msg` to `edge` if it is linked here and its link's queue has room: whether it went.
    pub(crate) fn tell(&self, edge: &EdgeId, msg: LinkMessage) -> bool {
        let link = self.map().get(edge).cloned();
        link.is_some_and(|l| l.tx.try_send(msg).is_ok())
    }

    /// Sends a request to `edge` over its link and waits up to `timeout` for the answer.
    ///
    /// # Errors
    /// [`RelayError`].
    pub async fn request(
        &self,
        edge: EdgeId,
        method: &str,
        path: String,
        headers: Vec<(String, String)>,
        body: String,
        timeout: Duration,
    ) -> Result<Relayed, RelayError> {
        let link = self
            .map()
            .get(&edge)
            .cloned()
            .ok_or(RelayError::NotConnected(edge))?;
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        link.pending().insert(id, tx);
        let msg = LinkMessage::Request {
            id,
            method: method.to_owned(),
            path,
            headers,
            body,
        };
        if link.tx.send(msg).await.is_err() {
            link.pending().remove(&id);
            return Err(RelayError::Dropped(edge));
        }
        self.relayed.inc();
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(RelayError::Dropped(edge)),
            Err(_) => {
                link.pending().remove(&id);
                self.relay_timeouts.inc();
                Err(RelayError::Timeout {
                    edge,
                    secs: timeout.as_secs(),
                })
            }
        }
    }
}
