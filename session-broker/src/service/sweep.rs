//! What the background tasks decide: dead edges, orphaned edges, other brokers' writes.

use std::collections::HashSet;
use std::time::Instant;

use edgeplay_protocol::token::EdgeId;
use tracing::{info, warn};

use crate::liveness::EdgeState;
use crate::records::{EdgeRecord, spec_of};
use crate::service::{Live, Service};
use crate::store::{BrokerEntry, Change, Table};

impl Service {
    /// Edges that missed their heartbeats by `now`.
    pub(crate) fn poll_dead(&self, now: Instant) -> Vec<EdgeId> {
        self.live().liveness.poll_dead(now)
    }

    /// Edges whose home broker is not among `brokers` (the live ones) are tracked here from now
    /// on: if they reconnect (to any broker) they heartbeat again; if not, they die here after
    /// three periods.
    pub(crate) fn adopt_orphans(&self, brokers: &[BrokerEntry], now: Instant) {
        let Some(me) = self.store.me().map(|b| b.id) else {
            return;
        };
        let live_brokers: HashSet<&str> = brokers.iter().map(|b| b.id.as_str()).collect();
        let mut live = self.live();
        // An edge with a session this broker knows of serves, whatever its last load said here
        // (its heartbeats went to the dead broker): it gets the serving period.
        let orphans: Vec<(EdgeId, bool)> = live
            .edges
            .values()
            .filter(|(r, _)| {
                r.state == EdgeState::Alive
                    && !r.home.is_empty()
                    && r.home != me
                    && !live_brokers.contains(r.home.as_str())
            })
            .map(|(r, _)| {
                let id = r.ad.id;
                (
                    id,
                    r.free_slots < r.ad.capacity || live.sessions.has_sessions_on(&id),
                )
            })
            .filter(|(id, _)| live.liveness.state(id).is_none())
            .collect();
        for (id, serving) in orphans {
            info!(edge = %id, "adopting an edge whose home broker is gone");
            live.liveness.handle_heartbeat(id, serving, now);
            if let Some((r, _)) = live.edges.get_mut(&id) {
                r.home.clone_from(&me);
            }
        }
    }

    /// Three missed heartbeats: out of the index, state written to the store (a change, so
    /// once), and the edge's sessions ended (`edge_lost`; failover will move them instead).
    pub(crate) async fn mark_dead(&self, edge: EdgeId) {
        let rec = {
            let mut live = self.live();
            live.index.remove(&edge);
            let Some((rec, _)) = live.edges.get_mut(&edge) else {
                return;
            };
            rec.state = EdgeState::Dead;
            rec.clone()
        };
        warn!(%edge, "edge missed three heartbeats (or its link was silent as long): marked dead");
        self.metrics.edges_marked_dead.inc();
        self.edge_state_changed(rec).await;
        self.end_sessions_of(edge).await;
    }

    pub(super) fn count_dead(live: &Live) -> i64 {
        let dead = live
            .edges
            .values()
            .filter(|(r, _)| r.state == EdgeState::Dead)
            .count();
        i64::try_from(dead).unwrap_or(i64::MAX)
    }

    /// Writes an edge's record after its state changed (dead, or alive again).
    pub(super) async fn edge_state_changed(&self, rec: EdgeRecord) {
        let dead = Self::count_dead(&self.live());
        self.metrics.edges_dead.set(dead);
        match serde_json::to_vec(&rec) {
            Ok(bytes) => {
                if let Err(e) = self
                    .store
                    .put(Table::Edges, rec.ad.id.to_string(), bytes)
                    .await
                {
                    warn!(edge = %rec.ad.id, error = %e, "cannot store the edge's new state");
                }
            }
            Err(e) => warn!(error = %e, "cannot encode an edge record"),
        }
    }

    /// Applies an edge record another broker wrote (or deleted) to this registry.
    pub(crate) fn apply_change(&self, change: Change) {
        let Ok(id) = change.key.parse::<EdgeId>() else {
            warn!(key = %change.key, "ignoring an edge record with a bad key");
            return;
        };
        let me = self.me();
        let mut live = self.live();
        match change.value {
            None => {
                live.edges.remove(&id);
                live.index.remove(&id);
                live.liveness.forget(&id);
            }
            Some(bytes) => {
                let rec: EdgeRecord = match serde_json::from_slice(&bytes) {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(edge = %id, error = %e, "ignoring an unreadable edge record");
                        return;
                    }
                };
                if !me.is_empty() && rec.home == me {
                    // Our own write coming back: memory is already as new or newer (the
                    // handler that wrote it updates memory after the store answers).
                    return;
                }
                // Another broker is now the edge's home: it tracks the heartbeats.
                live.liveness.forget(&id);
                if rec.state == EdgeState::Dead {
                    live.index.remove(&id);
                } else {
                    live.index.upsert(spec_of(&rec));
                }
                live.edges.insert(id, (rec, Instant::now()));
            }
        }
        let (n, dead) = (live.edges.len(), Self::count_dead(&live));
        drop(live);
        self.metrics.edges.set(i64::try_from(n).unwrap_or(i64::MAX));
        self.metrics.edges_dead.set(dead);
    }
}
