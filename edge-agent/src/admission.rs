//! Admission: the one count of the sessions an edge serves, over every transport.
//!
//! A WHEP offer, a QUIC hello and a `--dev` session each take a [`Slot`] from the edge's one
//! [`Admission`] before the slow session start (GPU target, encoder pipelines), and they never
//! wait for one: a full edge refuses the join at once (503 with `Retry-After` over HTTP,
//! [`close_code::EDGE_FULL`](edgeplay_protocol::media::close_code::EDGE_FULL) over QUIC). The
//! slot is the session's for its whole life and goes back only once the session has ended, so
//! sessions starting, live and ending together never outnumber `max_sessions`, whatever mix of
//! joins arrives at once. The count of taken slots is what the edge's heartbeats report to the
//! broker ([`Admission::watch`]) and what `/metrics` shows as `edgeplay_edge_session_slots_used`.
//!
//! ```
//! use edgeplay_edge::admission::Admission;
//! use edgeplay_edge::metrics::Metrics;
//!
//! let admission = Admission::new(1, &Metrics::new());
//! let slot = admission.try_admit("quic").expect("a free slot");
//! assert!(admission.try_admit("whep").is_err(), "one session at most");
//! drop(slot); // the session ended
//! assert_eq!(admission.in_use(), 0);
//! ```

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::debug;

use crate::metrics::Metrics;

/// What a refused join is told to wait before it tries this edge again (HTTP `Retry-After`).
/// Sessions last minutes, so a slot rarely frees sooner; a player in a hurry asks the broker
/// for another edge instead.
pub const RETRY_AFTER_SECS: u32 = 5;

/// Every session slot of the edge is taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "this edge is full: it serves at most {max} sessions and all are taken; retry in \
     {RETRY_AFTER_SECS} s, or ask the broker for another edge"
)]
pub struct EdgeFull {
    /// The edge's `max_sessions`.
    pub max: usize,
}

/// The session slots of one edge, shared (cheap clones) by all its transports.
#[derive(Clone, Debug)]
pub struct Admission {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max: usize,
    slots: Arc<Semaphore>,
    /// Slots taken now; every change is published, so the link hears it without polling.
    used: watch::Sender<u32>,
    metrics: Arc<Metrics>,
}

impl Admission {
    /// `max_sessions` slots (at most [`Semaphore::MAX_PERMITS`]), counted on `metrics`.
    #[must_use]
    pub fn new(max_sessions: usize, metrics: &Arc<Metrics>) -> Self {
        let max = max_sessions.min(Semaphore::MAX_PERMITS);
        metrics
            .session_slots
            .set(i64::try_from(max).unwrap_or(i64::MAX));
        metrics.session_slots_used.set(0);
        Self {
            inner: Arc::new(Inner {
                max,
                slots: Arc::new(Semaphore::new(max)),
                used: watch::Sender::new(0),
                metrics: Arc::clone(metrics),
            }),
        }
    }

    /// A slot for one session arriving over `transport` (`"whep"`, `"quic"`, `"dev"`: the
    /// label of `edgeplay_edge_sessions_refused_total`), or [`EdgeFull`] at once: a join never
    /// waits for a slot to free.
    ///
    /// # Errors
    /// [`EdgeFull`] when every slot is taken.
    pub fn try_admit(&self, transport: &'static str) -> Result<Slot, EdgeFull> {
        match Arc::clone(&self.inner.slots).try_acquire_owned() {
            Ok(permit) => {
                self.publish();
                Ok(Slot {
                    permit: Some(permit),
                    admission: self.clone(),
                })
            }
            // The semaphore is never closed: no permit left is the only way here.
            Err(_) => {
                self.inner
                    .metrics
                    .sessions_refused
                    .get_or_create(&vec![("transport", transport.to_owned())])
                    .inc();
                debug!(
                    transport,
                    max = self.inner.max,
                    "join refused: every session slot is taken"
                );
                Err(EdgeFull {
                    max: self.inner.max,
                })
            }
        }
    }

    /// The most sessions at once.
    #[must_use]
    pub fn max(&self) -> usize {
        self.inner.max
    }

    /// Slots taken now (sessions starting, live or ending).
    #[must_use]
    pub fn in_use(&self) -> u32 {
        *self.inner.used.borrow()
    }

    /// Follows [`Self::in_use`]: it changes as soon as a slot is taken or given back.
    #[must_use]
    pub fn watch(&self) -> watch::Receiver<u32> {
        self.inner.used.subscribe()
    }

    /// Publishes the count after a slot was taken or given back. The count is read from the
    /// semaphore inside the watch's lock, so when two changes race the last one published is
    /// the state after both, never a stale one.
    fn publish(&self) {
        let inner = &self.inner;
        inner.used.send_if_modified(|used| {
            let now = inner.max - inner.slots.available_permits();
            let now = u32::try_from(now).unwrap_or(u32::MAX);
            inner.metrics.session_slots_used.set(i64::from(now));
            let changed = *used != now;
            *used = now;
            changed
        });
    }
}

/// One session's place on the edge: held for the session's whole life, given back when it
/// drops (once the session has ended).
#[derive(Debug)]
#[must_use = "the slot is given back as soon as it drops: keep it as long as the session runs"]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    admission: Admission,
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.admission.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_counted_and_given_back_on_drop() {
        let metrics = Metrics::new();
        let admission = Admission::new(2, &metrics);
        let other_transport = admission.clone();
        let mut seen = admission.watch();
        let a = admission.try_admit("whep").unwrap();
        let b = other_transport.try_admit("quic").unwrap();
        assert_eq!((admission.in_use(), *seen.borrow_and_update()), (2, 2));
        let full = admission.try_admit("quic").unwrap_err();
        assert_eq!(full, EdgeFull { max: 2 });
        assert!(full.to_string().contains("at most 2"), "{full}");
        assert!(other_transport.try_admit("whep").is_err());
        let text = metrics.render();
        for line in [
            "edgeplay_edge_session_slots 2",
            "edgeplay_edge_session_slots_used 2",
            "edgeplay_edge_sessions_refused_total{transport=\"quic\"} 1",
            "edgeplay_edge_sessions_refused_total{transport=\"whep\"} 1",
        ] {
            assert!(text.contains(line), "no `{line}` in:\n{text}");
        }
        drop(a);
        assert!(seen.has_changed().unwrap());
        assert_eq!(*seen.borrow_and_update(), 1);
        let c = admission
            .try_admit("dev")
            .expect("a freed slot is taken again");
        drop((b, c));
        assert_eq!(admission.in_use(), 0);
        assert!(
            metrics
                .render()
                .contains("edgeplay_edge_session_slots_used 0")
        );
    }

    #[test]
    fn concurrent_joins_never_exceed_the_maximum() {
        let admission = Admission::new(3, &Metrics::new());
        let admitted: Vec<Option<Slot>> = std::thread::scope(|s| {
            let joins: Vec<_> = (0..16)
                .map(|i| {
                    let a = admission.clone();
                    s.spawn(move || a.try_admit(if i % 2 == 0 { "whep" } else { "quic" }).ok())
                })
                .collect();
            joins.into_iter().map(|j| j.join().unwrap()).collect()
        });
        assert_eq!(admitted.iter().flatten().count(), 3);
        assert_eq!(admission.in_use(), 3);
        drop(admitted);
        assert_eq!(admission.in_use(), 0);
    }

    #[test]
    fn an_absurd_maximum_is_clamped_not_a_panic() {
        let admission = Admission::new(usize::MAX, &Metrics::new());
        assert_eq!(admission.max(), Semaphore::MAX_PERMITS);
        let _slot = admission.try_admit("dev").unwrap();
        assert_eq!(admission.in_use(), 1);
    }
}
