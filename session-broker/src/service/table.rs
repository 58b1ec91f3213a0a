//! The live sessions in memory: by id, by edge, and by the time each is due to be looked at
//! again (`Lifecycle::due`), so that the sweep, a dead edge and an edge's `Running` list each
//! cost in proportion to the sessions they concern, never to the whole table or to history.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use edgeplay_protocol::lifecycle::EndReason;
use edgeplay_protocol::token::{EdgeId, SessionId};

use crate::records::{Phase, SessionRecord};
use crate::tokens::TOKEN_LIFETIME_MS;

/// How long sessions may wait and last (`session-broker run --session-*` flags), and how
/// long their summaries are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifecycle {
    /// A session nobody selects for this long after its creation ends (`not_placed`).
    pub idle: Duration,
    /// A running session ends at this age (`max_duration`): the broker tells its edge.
    pub max_duration: Duration,
    /// Summaries older than this are removed.
    pub keep_summaries: Duration,
    /// At most this many summaries are kept (the oldest go first).
    pub max_summaries: u64,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            idle: Duration::from_secs(60),
            max_duration: Duration::from_secs(4 * 3600),
            keep_summaries: Duration::from_secs(7 * 24 * 3600),
            max_summaries: 100_000,
        }
    }
}

/// After its join token expired, how long a placed session waits for its edge to say the
/// player joined (a join accepted just before the expiry reaches the broker a moment later).
pub const JOIN_GRACE_MS: u64 = 10_000;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Lifecycle {
    /// When `rec` is due (unix ms) and what ends it then: not placed after `idle`, not joined
    /// once its token expired (and [`JOIN_GRACE_MS`]), and the maximum duration once running.
    #[must_use]
    pub fn due(&self, rec: &SessionRecord) -> (u64, EndReason) {
        match rec.phase() {
            Phase::Offered => (
                rec.created_unix_ms.saturating_add(ms(self.idle)),
                EndReason::NotPlaced,
            ),
            Phase::Placed => (
                rec.placed_unix_ms
                    .unwrap_or(rec.created_unix_ms)
                    .saturating_add(TOKEN_LIFETIME_MS + JOIN_GRACE_MS),
                EndReason::NotJoined,
            ),
            Phase::Running => (
                rec.created_unix_ms.saturating_add(ms(self.max_duration)),
                EndReason::MaxDuration,
            ),
        }
    }
}

#[derive(Debug)]
struct Entry {
    rec: SessionRecord,
    due: u64,
}

/// The live sessions (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct SessionTable {
    map: HashMap<SessionId, Entry>,
    by_edge: HashMap<EdgeId, HashSet<SessionId>>,
    due: BTreeSet<(u64, SessionId)>,
    /// Per edge, sessions placed there whose player has not joined yet: slots the edge's
    /// heartbeats do not count yet, which placement must not give away again.
    pending: HashMap<EdgeId, u32>,
    /// Sessions whose edge was told to end them (maximum duration): their record ends at the
    /// next deadline whatever the edge says.
    asked: HashSet<SessionId>,
}

impl SessionTable {
    /// Puts `rec` in (replacing what was there under its id), due at `due` (unix ms).
    /// A session whose edge was told to end it keeps its later deadline.
    pub(crate) fn insert(&mut self, rec: SessionRecord, due: u64) {
        let id = rec.id;
        let due = match self.map.get(&id) {
            Some(e) if self.asked.contains(&id) => e.due.max(due),
            _ => due,
        };
        self.unlink(&id);
        if let Some(edge) = rec.edge {
            self.by_edge.entry(edge).or_default().insert(id);
            if rec.phase() == Phase::Placed {
                *self.pending.entry(edge).or_default() += 1;
            }
        }
        self.due.insert((due, id));
        self.map.insert(id, Entry { rec, due });
    }

    /// Takes a session out.
    pub(crate) fn remove(&mut self, id: &SessionId) -> Option<SessionRecord> {
        self.asked.remove(id);
        self.unlink(id)
    }

    /// Its edge was told to end `id`, which is due again at `due`.
    pub(crate) fn mark_asked(&mut self, id: SessionId, due: u64) {
        if let Some(rec) = self.get(&id).cloned() {
            self.insert(rec, due);
            self.asked.insert(id);
        }
    }

    /// Whether the edge of `id` was told to end it.
    pub(crate) fn was_asked(&self, id: &SessionId) -> bool {
        self.asked.contains(id)
    }

    /// Takes a session out of the map and the indexes (not out of `asked`).
    fn unlink(&mut self, id: &SessionId) -> Option<SessionRecord> {
        let e = self.map.remove(id)?;
        self.due.remove(&(e.due, *id));
        if let Some(edge) = e.rec.edge {
            if let Some(set) = self.by_edge.get_mut(&edge) {
                set.remove(id);
                if set.is_empty() {
                    self.by_edge.remove(&edge);
                }
            }
            if e.rec.phase() == Phase::Placed
                && let Some(n) = self.pending.get_mut(&edge)
            {
                *n -= 1;
                if *n == 0 {
                    self.pending.remove(&edge);
                }
            }
        }
        Some(e.rec)
    }

    pub(crate) fn get(&self, id: &SessionId) -> Option<&SessionRecord> {
        self.map.get(id).map(|e| &e.rec)
    }

    /// Up to `max` sessions due by `now` (unix ms), the earliest first.
    pub(crate) fn due_by(&self, now: u64, max: usize) -> Vec<SessionId> {
        self.due
            .iter()
            .take_while(|(t, _)| *t <= now)
            .take(max)
            .map(|(_, id)| *id)
            .collect()
    }

    /// The sessions placed on `edge`.
    pub(crate) fn on_edge(&self, edge: &EdgeId) -> Vec<SessionId> {
        self.by_edge
            .get(edge)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Sessions placed on `edge` whose player has not joined yet.
    pub(crate) fn pending_on(&self, edge: &EdgeId) -> u32 {
        self.pending.get(edge).copied().unwrap_or(0)
    }

    /// Whether any session is placed on `edge`.
    pub(crate) fn has_sessions_on(&self, edge: &EdgeId) -> bool {
        self.by_edge.contains_key(edge)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::Request;

    fn rec(n: u8, edge: Option<u8>, created: u64) -> SessionRecord {
        SessionRecord {
            id: SessionId([n; 16]),
            player: "p".into(),
            request: Request::default(),
            candidates: vec![],
            edge: edge.map(|e| EdgeId([e; 32])),
            created_unix_ms: created,
            placed_unix_ms: edge.map(|_| created + 1),
            started_unix_ms: None,
        }
    }

    #[test]
    fn indexes_follow_inserts_replacements_and_removals() {
        let mut t = SessionTable::default();
        t.insert(rec(1, None, 0), 100);
        t.insert(rec(2, Some(9), 0), 50);
        t.insert(rec(3, Some(9), 0), 200);
        assert_eq!(t.len(), 3);
        assert_eq!(t.due_by(99, 10), vec![SessionId([2; 16])]);
        assert_eq!(t.due_by(1000, 2).len(), 2, "bounded by max");
        let mut on = t.on_edge(&EdgeId([9; 32]));
        on.sort();
        assert_eq!(on, vec![SessionId([2; 16]), SessionId([3; 16])]);
        // Re-inserting moves the deadline and the edge.
        t.insert(rec(2, Some(8), 0), 500);
        assert_eq!(
            t.due_by(499, 10),
            vec![SessionId([1; 16]), SessionId([3; 16])]
        );
        assert_eq!(t.on_edge(&EdgeId([9; 32])), vec![SessionId([3; 16])]);
        assert!(t.has_sessions_on(&EdgeId([8; 32])));
        assert_eq!(t.pending_on(&EdgeId([8; 32])), 1, "placed, not joined");
        let mut started = rec(3, Some(9), 0);
        started.started_unix_ms = Some(5);
        assert_eq!(t.pending_on(&EdgeId([9; 32])), 1);
        t.insert(started, 200);
        assert_eq!(
            t.pending_on(&EdgeId([9; 32])),
            0,
            "joined: the edge counts it now"
        );
        assert!(t.remove(&SessionId([2; 16])).is_some());
        assert_eq!(t.pending_on(&EdgeId([8; 32])), 0);
        assert!(
            !t.has_sessions_on(&EdgeId([8; 32])),
            "an empty edge set goes"
        );
        assert!(t.remove(&SessionId([2; 16])).is_none());
        assert_eq!(t.len(), 2);
        // Told to end: due again later, and it stays told until it is removed.
        t.mark_asked(SessionId([1; 16]), 900);
        t.insert(rec(1, None, 0), 50);
        assert!(t.was_asked(&SessionId([1; 16])));
        assert_eq!(
            t.due_by(899, 10),
            vec![SessionId([3; 16])],
            "the later deadline holds"
        );
        t.remove(&SessionId([1; 16]));
        assert!(!t.was_asked(&SessionId([1; 16])));
        t.insert(rec(1, None, 0), 100);
        assert_eq!(t.due_by(u64::MAX, 10).len(), 2);
    }

    #[test]
    fn each_phase_has_its_deadline_and_reason() {
        let l = Lifecycle {
            idle: Duration::from_secs(60),
            max_duration: Duration::from_secs(3600),
            ..Lifecycle::default()
        };
        let mut r = rec(1, None, 1_000);
        assert_eq!(l.due(&r), (61_000, EndReason::NotPlaced));
        r.edge = Some(EdgeId([2; 32]));
        r.placed_unix_ms = Some(5_000);
        assert_eq!(
            l.due(&r),
            (
                5_000 + TOKEN_LIFETIME_MS + JOIN_GRACE_MS,
                EndReason::NotJoined
            )
        );
        r.started_unix_ms = Some(6_000);
        assert_eq!(l.due(&r), (3_601_000, EndReason::MaxDuration));
    }
}
