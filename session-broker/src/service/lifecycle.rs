//! How sessions end: the edge's reports (`Running`, `Ended`), the deadlines of the sweep
//! (not placed, not joined, maximum duration), a dead edge, and the summaries kept after.
//!
//! Ending a session is one fenced store transaction ([`Batch`]): its live record goes, its
//! summary and its place in the retention order come, only if the record is still the revision
//! that was read (a session another broker changed meanwhile is read again). Every broker that
//! holds a session in memory watches its deadline; the store's fence makes the first one to act
//! the only one. Each step costs in proportion to the sessions it concerns: the sweep takes the
//! due ones from an ordered set, a dead edge its own sessions, and start-up loads live records
//! only (summaries stay in the store).

use std::collections::HashSet;

use edgeplay_protocol::lifecycle::{self, EndReason, SessionEnded};
use edgeplay_protocol::token::{EdgeId, SessionId};
use tracing::{debug, info, warn};

use crate::error::BrokerError;
use crate::records::{Phase, SessionRecord, SessionSummary};
use crate::service::{Service, encode, now_ms};
use crate::store::{Batch, StoreError, Swap, Table, ended_key, ended_key_time};

/// The most sessions one sweep looks at (the rest wait for the next sweep, 100 ms later).
pub const SWEEP_BATCH: usize = 512;
/// Summaries removed per store transaction (two keys each, under etcd's 128 operations).
const PRUNE_CHUNK: usize = 60;
/// The most summaries one pruning pass removes (the rest go on the next pass, 100 ms later:
/// up to 3,000 a second). Small passes often, not one large one a second: a pass's deletes
/// share commits with the requests' writes, and one large pass made a latency spike.
const PRUNE_PASS: usize = 5 * PRUNE_CHUNK;
/// Times an end is retried when another broker changed the record meanwhile.
const END_TRIES: usize = 3;
/// How long an edge told to end a session (maximum duration) has to report the end with its
/// figures before the broker ends the record without them.
pub const END_GRACE_MS: u64 = 10_000;

/// What the sweep asks the link glue to do: tell `edge` (if linked here) to end `session`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EndOrder {
    pub(crate) edge: EdgeId,
    pub(crate) session: SessionId,
    pub(crate) reason: EndReason,
}

impl Service {
    /// Puts `rec` in the live table with its deadline.
    pub(super) fn keep(&self, rec: SessionRecord) {
        let (due, _) = self.lifecycle.due(&rec);
        let mut live = self.live();
        let before = live.sessions.get(&rec.id).and_then(|r| r.edge);
        let edge = rec.edge;
        live.sessions.insert(rec, due);
        for e in [before, edge].into_iter().flatten() {
            live.refresh(&e);
        }
        let n = live.sessions.len();
        drop(live);
        self.metrics
            .sessions_live
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Takes `sid` out of the live table.
    fn forget_session(&self, sid: &SessionId) {
        let mut live = self.live();
        if let Some(edge) = live.sessions.remove(sid).and_then(|r| r.edge) {
            live.refresh(&edge);
        }
        let n = live.sessions.len();
        drop(live);
        self.metrics
            .sessions_live
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Ends `sid` for `reason` (with the edge's figures when it reported them): its record
    /// becomes a summary in one fenced transaction. `expect_edge`: only if the session is
    /// placed on that edge (an edge ends only its own sessions). Whether this call ended it
    /// (`false`: it had ended already, or is not on `expect_edge`).
    pub(crate) async fn end_session(
        &self,
        sid: SessionId,
        reason: EndReason,
        report: Option<&SessionEnded>,
        expect_edge: Option<EdgeId>,
    ) -> Result<bool, StoreError> {
        for _ in 0..END_TRIES {
            let Some((rec, revision)) = self.session_read(&sid).await? else {
                self.forget_session(&sid);
                return Ok(false);
            };
            if let Some(edge) = expect_edge
                && rec.edge != Some(edge)
            {
                warn!(session = %sid, %edge, placed = ?rec.edge,
                      "an edge reported the end of a session it was not given: ignored");
                self.metrics.session_reports_refused.inc();
                return Ok(false);
            }
            let now = now_ms();
            let summary = SessionSummary::of(&rec, reason, report, now);
            let key = sid.to_string();
            let batch = Batch {
                guard: Some((Table::Sessions, key.clone(), Some(revision))),
                puts: vec![
                    (
                        Table::Summaries,
                        key.clone(),
                        serde_json::to_vec(&summary)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    ),
                    (Table::Ended, ended_key(now, &key), key.clone().into_bytes()),
                ],
                deletes: vec![(Table::Sessions, key)],
            };
            match self.store.apply(batch).await? {
                Swap::Done(_) => {
                    self.forget_session(&sid);
                    self.metrics
                        .sessions_ended
                        .get_or_create(&vec![("reason", reason.as_str().to_owned())])
                        .inc();
                    self.metrics.summaries.inc();
                    info!(session = %sid, %reason, edge = ?rec.edge,
                          duration_ms = summary.duration_ms, "session ended");
                    return Ok(true);
                }
                Swap::Stale(None) => {
                    self.forget_session(&sid);
                    return Ok(false);
                }
                // Changed since read (placed or started elsewhere): read it again.
                Swap::Stale(Some(_)) => {}
            }
        }
        warn!(session = %sid, "the session kept changing while it was being ended; the sweep retries");
        Ok(false)
    }

    /// The stored record of `sid` and its revision, without caching it.
    async fn session_read(
        &self,
        sid: &SessionId,
    ) -> Result<Option<(SessionRecord, u64)>, StoreError> {
        let Some(v) = self
            .store
            .get_versioned(Table::Sessions, &sid.to_string())
            .await?
        else {
            return Ok(None);
        };
        match serde_json::from_slice::<SessionRecord>(&v.value) {
            Ok(rec) => Ok(Some((rec, v.revision))),
            Err(e) => Err(StoreError::Corrupt(format!("session {sid}: {e}"))),
        }
    }

    /// The summary of an ended session, if it is still kept.
    pub(crate) async fn summary(
        &self,
        sid: &SessionId,
    ) -> Result<Option<SessionSummary>, StoreError> {
        let Some(bytes) = self.store.get(Table::Summaries, &sid.to_string()).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("summary {sid}: {e}")))
    }

    /// An edge's report of a session's end (over its link or `POST /v1/edges/{id}/ended`).
    ///
    /// # Errors
    /// [`BrokerError::BadReport`] for figures out of range; the store's.
    pub(crate) async fn apply_ended(
        &self,
        edge: EdgeId,
        report: &SessionEnded,
    ) -> Result<bool, BrokerError> {
        if let Err(e) = report.check() {
            self.metrics.session_reports_refused.inc();
            return Err(BrokerError::BadReport(e.to_string()));
        }
        Ok(self
            .end_session(report.session, report.reason, Some(report), Some(edge))
            .await?)
    }

    /// An edge's `Running` list: sessions it names that were placed on it are running from
    /// now (their start written once); running sessions of this edge it no longer names have
    /// ended without a report (`vanished`). Sessions placed on the edge but not started yet
    /// are left to their join deadline. What it runs that the broker has ended (or placed
    /// elsewhere) is returned, for the link to tell the edge to end.
    ///
    /// # Errors
    /// [`BrokerError::BadReport`] for a list longer than the edge's capacity or with
    /// repeats; the store's.
    pub(crate) async fn apply_running(
        &self,
        edge: EdgeId,
        running: &[SessionId],
    ) -> Result<Vec<EndOrder>, BrokerError> {
        let capacity = self
            .live()
            .edges
            .get(&edge)
            .map_or(0, |(r, _)| r.ad.capacity as usize);
        if let Err(e) = lifecycle::check_running(running, capacity) {
            self.metrics.session_reports_refused.inc();
            return Err(BrokerError::BadReport(e.to_string()));
        }
        // The running sessions of this edge as the broker has them, against the edge's list:
        // sets, so a full 4096-entry list costs no more than its length.
        let started: HashSet<SessionId> = {
            let live = self.live();
            live.sessions
                .on_edge(&edge)
                .into_iter()
                .filter(|s| {
                    live.sessions
                        .get(s)
                        .is_some_and(|r| r.phase() == Phase::Running)
                })
                .collect()
        };
        let listed: HashSet<SessionId> = running.iter().copied().collect();
        let mut orders = Vec::new();
        for sid in running {
            if !started.contains(sid)
                && let Some(reason) = self.mark_started(edge, *sid).await?
            {
                orders.push(EndOrder {
                    edge,
                    session: *sid,
                    reason,
                });
            }
        }
        for sid in started {
            if !listed.contains(&sid) {
                debug!(session = %sid, %edge, "running session no longer listed by its edge");
                self.end_session(sid, EndReason::Vanished, None, Some(edge))
                    .await?;
            }
        }
        Ok(orders)
    }

    /// `sid` runs on `edge`: its start is written (once, fenced) and it is kept here with its
    /// maximum-duration deadline. A session the broker has ended (its summary says why) or
    /// placed elsewhere must end on the edge: the reason to tell it.
    async fn mark_started(
        &self,
        edge: EdgeId,
        sid: SessionId,
    ) -> Result<Option<EndReason>, StoreError> {
        for _ in 0..END_TRIES {
            let Some((mut rec, revision)) = self.session_read(&sid).await? else {
                self.metrics.running_unknown.inc();
                let reason = self
                    .summary(&sid)
                    .await?
                    .map_or(EndReason::Vanished, |s| s.reason);
                warn!(session = %sid, %edge, %reason, "the edge runs a session the broker has ended: told to end it");
                return Ok(Some(reason));
            };
            if rec.edge != Some(edge) {
                self.metrics.running_unknown.inc();
                warn!(session = %sid, %edge, placed = ?rec.edge,
                      "the edge runs a session placed elsewhere: told to end it");
                return Ok(Some(EndReason::Vanished));
            }
            if rec.started_unix_ms.is_some() {
                self.keep(rec);
                return Ok(None);
            }
            rec.started_unix_ms = Some(now_ms());
            let bytes = encode(&rec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            match self
                .store
                .put_if(Table::Sessions, sid.to_string(), bytes, Some(revision))
                .await?
            {
                Swap::Done(_) => {
                    debug!(session = %sid, %edge, "session running");
                    self.keep(rec);
                    return Ok(None);
                }
                // Ended meanwhile: the next pass finds its summary.
                Swap::Stale(None) | Swap::Stale(Some(_)) => {}
            }
        }
        Ok(None)
    }

    /// The sweep's part: every session due by now is read again and ended if its deadline
    /// (from the stored record) has passed, else kept with its new deadline. A running session
    /// at its maximum duration is not ended at once: its edge is told (the returned orders,
    /// for the link glue) and reports the end with its figures; the record ends here
    /// [`END_GRACE_MS`] later if it has not.
    pub(crate) async fn sweep_sessions(&self) -> Vec<EndOrder> {
        let now = now_ms();
        let due = self.live().sessions.due_by(now, SWEEP_BATCH);
        let mut orders = Vec::new();
        for sid in due {
            let read = self.session_read(&sid).await;
            let (rec, _) = match read {
                Ok(Some(r)) => r,
                Ok(None) => {
                    self.forget_session(&sid);
                    continue;
                }
                Err(e) => {
                    warn!(session = %sid, error = %e, "cannot read a due session; retrying at the next sweep");
                    // Look again a second later, not at every sweep.
                    let mut live = self.live();
                    if let Some(rec) = live.sessions.get(&sid).cloned() {
                        live.sessions.insert(rec, now + 1000);
                    }
                    continue;
                }
            };
            let (at, reason) = self.lifecycle.due(&rec);
            if at > now {
                self.keep(rec);
                continue;
            }
            // A running session's edge is told first and reports the end with its figures; the
            // record ends here only if that report has not come within the grace.
            if let (EndReason::MaxDuration, Some(edge)) = (reason, rec.edge)
                && !self.live().sessions.was_asked(&sid)
            {
                orders.push(EndOrder {
                    edge,
                    session: sid,
                    reason,
                });
                self.live().sessions.mark_asked(sid, now + END_GRACE_MS);
                continue;
            }
            if let Err(e) = self.end_session(sid, reason, None, None).await {
                warn!(session = %sid, error = %e, "cannot end a due session; retrying at the next sweep");
            }
        }
        orders
    }

    /// Ends every session placed on `edge` (dead, or gone silent): `edge_lost`.
    pub(crate) async fn end_sessions_of(&self, edge: EdgeId) {
        let sids = self.live().sessions.on_edge(&edge);
        for sid in sids {
            if let Err(e) = self
                .end_session(sid, EndReason::EdgeLost, None, Some(edge))
                .await
            {
                warn!(session = %sid, %edge, error = %e, "cannot end a dead edge's session");
            }
        }
    }

    /// Removes the oldest summaries beyond the retention (older than `keep_summaries`, or
    /// beyond `max_summaries`), at most [`PRUNE_PASS`] per call: how many went.
    ///
    /// # Errors
    /// The store's.
    pub(crate) async fn prune_summaries(&self) -> Result<usize, StoreError> {
        let count = self.store.count(Table::Ended).await?;
        self.metrics
            .summaries
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        let keep_ms = u64::try_from(self.lifecycle.keep_summaries.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now_ms().saturating_sub(keep_ms);
        let mut over = count.saturating_sub(self.lifecycle.max_summaries);
        let mut removed = 0;
        while removed < PRUNE_PASS {
            let oldest = self.store.first(Table::Ended, PRUNE_CHUNK).await?;
            let doomed: Vec<(String, Vec<u8>)> = oldest
                .into_iter()
                .enumerate()
                .take_while(|(i, (k, _))| {
                    (*i as u64) < over || ended_key_time(k).is_none_or(|t| t < cutoff)
                })
                .map(|(_, kv)| kv)
                .collect();
            if doomed.is_empty() {
                break;
            }
            let n = doomed.len();
            let mut deletes = Vec::with_capacity(2 * n);
            for (k, sid) in doomed {
                deletes.push((Table::Summaries, String::from_utf8_lossy(&sid).into_owned()));
                deletes.push((Table::Ended, k));
            }
            self.store
                .apply(Batch {
                    guard: None,
                    puts: vec![],
                    deletes,
                })
                .await?;
            removed += n;
            over = over.saturating_sub(n as u64);
            self.metrics.summaries_pruned.inc_by(n as u64);
            self.metrics.summaries.dec_by(i64::try_from(n).unwrap_or(0));
        }
        Ok(removed)
    }
}
