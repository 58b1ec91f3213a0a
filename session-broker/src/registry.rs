//! The registry's moving parts around the HTTP handlers: the liveness sweep (dead edges leave
//! the placement index, their sessions are marked for failover), adoption of the edges of a
//! broker whose lease expired, the watch of edge records written by other brokers, and session
//! reads through the store (a session created on another broker is read from there).
//!
//! The decisions are in [`crate::liveness`]; this module is the thin tokio glue. Its two tasks
//! hold only a `Weak` reference to the broker's state and are aborted when the router is dropped.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, Instant};

use edgeplay_protocol::token::{EdgeId, SessionId};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{info, warn};

use crate::api::{AppState, EdgeRecord, SessionRecord, spec_of};
use crate::liveness::EdgeState;
use crate::store::{Change, StoreError, Swap, Table};

/// How often the sweep looks for dead edges (well under the 1.5 s a serving edge has).
pub const SWEEP: Duration = Duration::from_millis(100);
/// How often the sweep looks for edges whose home broker is gone.
pub const ADOPT_EVERY: Duration = Duration::from_secs(1);

/// Starts the sweep, and the watch of other brokers' edge changes when the store has one.
pub(crate) fn start(state: &Arc<AppState>, changes: Option<UnboundedReceiver<Change>>) {
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(sweep(Arc::downgrade(state))));
    if let Some(rx) = changes {
        tasks.push(tokio::spawn(follow(Arc::downgrade(state), rx)));
    }
    state
        .tasks
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend(tasks);
}

fn my_id(s: &AppState) -> Option<String> {
    s.cfg.store.me().map(|b| b.id)
}

async fn sweep(state: Weak<AppState>) {
    let mut tick = tokio::time::interval(SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_adopt = Instant::now();
    loop {
        tick.tick().await;
        let Some(s) = state.upgrade() else { return };
        let now = Instant::now();
        if now.duration_since(last_adopt) >= ADOPT_EVERY {
            last_adopt = now;
            if let Err(e) = adopt_orphans(&s, now).await {
                warn!(error = %e, "cannot list the live brokers");
            }
        }
        let dead = s.live().liveness.poll_dead(now);
        for edge in dead {
            mark_dead(&s, edge).await;
        }
    }
}

/// Edges whose home broker no longer holds a lease are tracked here from now on: if they
/// reconnect (to any broker) they heartbeat again; if not, they die here after three periods.
async fn adopt_orphans(s: &AppState, now: Instant) -> Result<(), StoreError> {
    let Some(me) = my_id(s) else { return Ok(()) };
    let brokers = s.cfg.store.brokers().await?;
    // The links tell their edges, so that an edge whose broker dies knows where else to go.
    s.links.publish_brokers(brokers.clone());
    let live_brokers: HashSet<String> = brokers.into_iter().map(|b| b.id).collect();
    let mut live = s.live();
    // An edge with a session placed through this broker serves, whatever its last load said here
    // (its heartbeats went to the dead broker): it gets the serving period.
    let placed: HashSet<EdgeId> = live
        .sessions
        .values()
        .filter(|r| !r.failover)
        .filter_map(|r| r.edge)
        .collect();
    let orphans: Vec<(EdgeId, bool)> = live
        .edges
        .values()
        .filter(|(r, _)| {
            r.state == EdgeState::Alive
                && !r.home.is_empty()
                && r.home != me
                && !live_brokers.contains(&r.home)
        })
        .map(|(r, _)| {
            let id = r.ad.id;
            (id, r.free_slots < r.ad.capacity || placed.contains(&id))
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
    Ok(())
}

/// Three missed heartbeats: out of the index, state written to the store (a change, so once),
/// and the edge's sessions marked for failover.
async fn mark_dead(s: &AppState, edge: EdgeId) {
    let rec = {
        let mut live = s.live();
        live.index.remove(&edge);
        let Some((rec, _)) = live.edges.get_mut(&edge) else {
            return;
        };
        rec.state = EdgeState::Dead;
        rec.clone()
    };
    warn!(%edge, "edge missed three heartbeats: marked dead");
    s.metrics.edges_marked_dead.inc();
    edge_state_changed(s, rec).await;
    if let Err(e) = mark_sessions_for_failover(s, edge).await {
        warn!(%edge, error = %e, "cannot mark the dead edge's sessions for failover");
    }
}

/// Writes an edge's record after its state changed (dead, or alive again).
pub(crate) async fn edge_state_changed(s: &AppState, rec: EdgeRecord) {
    let dead = s
        .live()
        .edges
        .values()
        .filter(|(r, _)| r.state == EdgeState::Dead)
        .count();
    s.metrics
        .edges_dead
        .set(i64::try_from(dead).unwrap_or(i64::MAX));
    match serde_json::to_vec(&rec) {
        Ok(bytes) => {
            if let Err(e) = s
                .cfg
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

/// Sets `failover` on every stored session placed on `edge`, each through a conditional write
/// (a session another broker changed meanwhile is left to that broker).
async fn mark_sessions_for_failover(s: &AppState, edge: EdgeId) -> Result<(), StoreError> {
    for (key, bytes) in s.cfg.store.list(Table::Sessions).await? {
        let Ok(rec) = serde_json::from_slice::<SessionRecord>(&bytes) else {
            continue;
        };
        if rec.edge != Some(edge) || rec.failover {
            continue;
        }
        let Some(v) = s.cfg.store.get_versioned(Table::Sessions, &key).await? else {
            continue;
        };
        let Ok(mut rec) = serde_json::from_slice::<SessionRecord>(&v.value) else {
            continue;
        };
        if rec.edge != Some(edge) || rec.failover {
            continue;
        }
        rec.failover = true;
        let Ok(out) = serde_json::to_vec(&rec) else {
            continue;
        };
        if let Swap::Done(_) = s
            .cfg
            .store
            .put_if(Table::Sessions, key, out, Some(v.revision))
            .await?
        {
            s.metrics.sessions_marked_failover.inc();
            s.live().sessions.insert(rec.id, rec);
        }
    }
    Ok(())
}

/// Applies edge records written by other brokers to this broker's registry.
async fn follow(state: Weak<AppState>, mut rx: UnboundedReceiver<Change>) {
    while let Some(change) = rx.recv().await {
        let Some(s) = state.upgrade() else { return };
        let Ok(id) = change.key.parse::<EdgeId>() else {
            warn!(key = %change.key, "ignoring an edge record with a bad key");
            continue;
        };
        let me = my_id(&s).unwrap_or_default();
        let mut live = s.live();
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
                        continue;
                    }
                };
                if !me.is_empty() && rec.home == me {
                    // Our own write coming back: memory is already as new or newer (the
                    // handler that wrote it updates memory after the store answers).
                    continue;
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
        let (n, dead) = (
            live.edges.len(),
            live.edges
                .values()
                .filter(|(r, _)| r.state == EdgeState::Dead)
                .count(),
        );
        drop(live);
        s.metrics.edges.set(i64::try_from(n).unwrap_or(i64::MAX));
        s.metrics
            .edges_dead
            .set(i64::try_from(dead).unwrap_or(i64::MAX));
    }
}

/// A session with its store revision, read through the store (so one created on another broker
/// is found), and cached in memory.
pub(crate) async fn session(
    s: &AppState,
    sid: &SessionId,
) -> Result<Option<(SessionRecord, Option<u64>)>, StoreError> {
    match s
        .cfg
        .store
        .get_versioned(Table::Sessions, &sid.to_string())
        .await?
    {
        Some(v) => match serde_json::from_slice::<SessionRecord>(&v.value) {
            Ok(rec) => {
                s.live().sessions.insert(*sid, rec.clone());
                Ok(Some((rec, Some(v.revision))))
            }
            Err(e) => {
                warn!(session = %sid, error = %e, "unreadable session record");
                Ok(None)
            }
        },
        None => Ok(None),
    }
}
