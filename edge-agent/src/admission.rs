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
//!
//! A slot joined with a broker's token is bound to that broker session ([`Slot::bind`]): the
//! admission then lists it as running ([`Admission::running`], what the link sends as
//! `Running`), lets the broker end it ([`Admission::end`], which the session's transport
//! hears through [`Slot::end_requested`]), and, when the slot drops, queues the report of its
//! end ([`Admission::take_ended`], at most [`MAX_UNSENT`] waiting for a link) with what
//! [`Slot::finish`] recorded.
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

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgeplay_protocol::lifecycle::{EndReason, MAX_RUNNING, SessionEnded};
use edgeplay_protocol::token::SessionId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::{debug, warn};

use crate::metrics::Metrics;

/// What a refused join is told to wait before it tries this edge again (HTTP `Retry-After`).
/// Sessions last minutes, so a slot rarely frees sooner; a player in a hurry asks the broker
/// for another edge instead.
pub const RETRY_AFTER_SECS: u32 = 5;
/// Most end reports kept while no link takes them (the oldest go first, counted in
/// `edgeplay_edge_session_reports_dropped_total`): the broker ends what it misses when the
/// edge's next `Running` no longer lists it.
pub const MAX_UNSENT: usize = 4096;

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
    book: Mutex<Book>,
    /// Bumped on every change of the book (a session bound, ended or asked to end).
    book_version: watch::Sender<u64>,
    /// A live session whose player sent no input for this long ends (`idle`).
    idle: Option<Duration>,
}

/// The broker sessions the edge runs and the ends not yet reported.
#[derive(Debug, Default)]
struct Book {
    /// Each running broker session, and how the broker asks it to end.
    running: BTreeMap<SessionId, watch::Sender<Option<EndReason>>>,
    unsent: VecDeque<SessionEnded>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Admission {
    /// `max_sessions` slots (at most [`MAX_RUNNING`], what one `Running` message may list),
    /// counted on `metrics`.
    #[must_use]
    pub fn new(max_sessions: usize, metrics: &Arc<Metrics>) -> Self {
        Self::with_idle(max_sessions, None, metrics)
    }

    /// [`Self::new`], with live sessions ending after `idle` without an input from their
    /// player (`None`: never).
    #[must_use]
    pub fn with_idle(max_sessions: usize, idle: Option<Duration>, metrics: &Arc<Metrics>) -> Self {
        let max = max_sessions.min(MAX_RUNNING);
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
                book: Mutex::new(Book::default()),
                book_version: watch::Sender::new(0),
                idle,
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
                    bound: None,
                    end: None,
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

    /// How long a live session may go without an input from its player.
    #[must_use]
    pub fn idle(&self) -> Option<Duration> {
        self.inner.idle
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

    fn book(&self) -> MutexGuard<'_, Book> {
        self.inner
            .book
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn book_changed(&self) {
        self.inner.book_version.send_modify(|v| *v += 1);
    }

    /// The broker sessions running now, in id order.
    #[must_use]
    pub fn running(&self) -> Vec<SessionId> {
        self.book().running.keys().copied().collect()
    }

    /// The ends not reported yet, oldest first; they are the caller's to send from now on.
    #[must_use]
    pub fn take_ended(&self) -> Vec<SessionEnded> {
        self.book().unsent.drain(..).collect()
    }

    /// Puts back reports that could not be sent (the link dropped), ahead of newer ones.
    pub fn requeue(&self, reports: Vec<SessionEnded>) {
        let mut book = self.book();
        for r in reports.into_iter().rev() {
            if book.unsent.len() >= MAX_UNSENT {
                self.inner.metrics.session_reports_dropped.inc();
                continue;
            }
            book.unsent.push_front(r);
        }
    }

    /// Changes whenever a broker session is bound or ends.
    #[must_use]
    pub fn book_changes(&self) -> watch::Receiver<u64> {
        self.inner.book_version.subscribe()
    }

    /// The broker asks `session` to end for `reason`: whether it runs here.
    pub fn end(&self, session: SessionId, reason: EndReason) -> bool {
        let book = self.book();
        match book.running.get(&session) {
            Some(tx) => {
                tx.send_replace(Some(reason));
                true
            }
            None => false,
        }
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
    /// The broker session, once bound, and when it started.
    bound: Option<Bound>,
    /// How it ended, once the transport said.
    end: Option<(EndReason, u64, u64)>,
}

#[derive(Debug)]
struct Bound {
    session: SessionId,
    started: Instant,
    started_unix_ms: u64,
    asked: watch::Receiver<Option<EndReason>>,
}

impl Slot {
    /// Binds the slot to the broker session its join token names: listed as running from now
    /// until the slot drops. A session bound already (a second join with a replayed id, which
    /// single-use tokens prevent) keeps its first slot.
    pub fn bind(&mut self, session: SessionId) {
        let (tx, asked) = watch::channel(None);
        {
            let mut book = self.admission.book();
            if book.running.contains_key(&session) {
                warn!(%session, "a second join of a running session: not listed twice");
                return;
            }
            book.running.insert(session, tx);
        }
        self.bound = Some(Bound {
            session,
            started: Instant::now(),
            started_unix_ms: unix_ms(),
            asked,
        });
        self.admission.book_changed();
    }

    /// Resolves when the broker asks the session to end (with its reason); never for a slot
    /// not bound to a broker session. The future owns what it needs, so it may be spawned.
    pub fn end_requested(&self) -> impl std::future::Future<Output = EndReason> + Send + 'static {
        let asked = self.bound.as_ref().map(|b| b.asked.clone());
        async move {
            let Some(mut asked) = asked else {
                return std::future::pending().await;
            };
            loop {
                if let Some(r) = *asked.borrow_and_update() {
                    return r;
                }
                if asked.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }

    /// How long the session may go without an input from its player (the admission's).
    #[must_use]
    pub fn idle(&self) -> Option<Duration> {
        self.admission.idle()
    }

    /// Records how the session ended (reported when the slot drops; without it the report says
    /// `failed`: the session never got as far as its transport's end), with the frames and
    /// encoded bytes it produced.
    pub fn finish(&mut self, reason: EndReason, frames: u64, bytes: u64) {
        self.end = Some((reason, frames, bytes));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(b) = self.bound.take() {
            let (reason, frames, bytes) = self.end.unwrap_or((EndReason::Failed, 0, 0));
            let reason = b.asked.borrow().unwrap_or(reason);
            let report = SessionEnded {
                session: b.session,
                reason,
                started_unix_ms: b.started_unix_ms,
                duration_ms: u64::try_from(b.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                frames,
                bytes,
            };
            {
                let mut book = self.admission.book();
                book.running.remove(&b.session);
                if book.unsent.len() >= MAX_UNSENT {
                    book.unsent.pop_front();
                    self.admission.inner.metrics.session_reports_dropped.inc();
                }
                book.unsent.push_back(report);
            }
            self.admission.book_changed();
        }
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

    #[tokio::test]
    async fn bound_slots_are_listed_ended_on_request_and_reported_on_drop() {
        let admission = Admission::new(4, &Metrics::new());
        let mut changes = admission.book_changes();
        let unbound = admission.try_admit("dev").unwrap();
        let mut a = admission.try_admit("quic").unwrap();
        let mut b = admission.try_admit("whep").unwrap();
        a.bind(SessionId([1; 16]));
        b.bind(SessionId([2; 16]));
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        assert_eq!(
            admission.running(),
            vec![SessionId([1; 16]), SessionId([2; 16])]
        );
        // The broker ends b: its transport hears it, and its report says why.
        assert!(admission.end(SessionId([2; 16]), EndReason::MaxDuration));
        assert!(!admission.end(SessionId([9; 16]), EndReason::MaxDuration));
        assert_eq!(b.end_requested().await, EndReason::MaxDuration);
        b.finish(EndReason::PlayerLeft, 10, 1000);
        drop(b);
        a.finish(EndReason::Failed, 3, 30);
        drop(a);
        drop(unbound);
        assert!(changes.has_changed().unwrap());
        assert!(admission.running().is_empty());
        let ended = admission.take_ended();
        assert_eq!(ended.len(), 2, "the unbound slot reports nothing");
        assert_eq!(
            (
                ended[0].session,
                ended[0].reason,
                ended[0].frames,
                ended[0].bytes
            ),
            (SessionId([2; 16]), EndReason::MaxDuration, 10, 1000),
            "the broker's reason wins"
        );
        assert_eq!((ended[1].reason, ended[1].bytes), (EndReason::Failed, 30));
        assert!(admission.take_ended().is_empty(), "taken once");
    }

    #[test]
    fn an_absurd_maximum_is_clamped_not_a_panic() {
        let admission = Admission::new(usize::MAX, &Metrics::new());
        assert_eq!(admission.max(), MAX_RUNNING);
        let _slot = admission.try_admit("dev").unwrap();
        assert_eq!(admission.in_use(), 1);
    }
}
