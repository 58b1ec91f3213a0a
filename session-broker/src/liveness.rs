//! Which edges are alive, from their heartbeats: sans-IO, `now` in, decisions out.
//!
//! Edges serving sessions heartbeat every [`SERVING_INTERVAL`] to their home broker, idle edges
//! every [`IDLE_INTERVAL`]; an edge that misses [`MISSES`] heartbeats in a row (no heartbeat for
//! `MISSES ×` its interval) is dead. A dead edge that heartbeats again is alive again (it was cut
//! off, not gone); what to do with its old sessions is the failover's decision.
//!
//! The broker drives it: [`Liveness::handle_heartbeat`] on every heartbeat and registration it
//! receives, and [`Liveness::poll_dead`] whenever [`Liveness::poll_timeout`] passes. Only the home
//! broker (the one receiving the heartbeats) tracks an edge; other brokers learn its state from
//! the store, where it is written only when it changes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use edgeplay_protocol::token::EdgeId;
use serde::{Deserialize, Serialize};

/// Heartbeat period of an edge that serves at least one session.
pub const SERVING_INTERVAL: Duration = Duration::from_millis(500);
/// Heartbeat period of an idle edge.
pub const IDLE_INTERVAL: Duration = Duration::from_secs(15);
/// Missed heartbeats after which an edge is dead.
pub const MISSES: u32 = 3;

/// An edge's state as the registry shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EdgeState {
    /// Heartbeating; in the placement index (unless draining or full).
    #[default]
    Alive,
    /// Missed [`MISSES`] heartbeats: out of the placement index, its sessions marked for failover.
    Dead,
}

/// What a heartbeat changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// First heartbeat (or registration) from this edge.
    New,
    /// Alive before and still.
    Alive,
    /// It was dead and is back.
    Revived,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    last: Instant,
    serving: bool,
    state: EdgeState,
}

impl Entry {
    fn deadline(&self) -> Instant {
        let interval = if self.serving {
            SERVING_INTERVAL
        } else {
            IDLE_INTERVAL
        };
        self.last + interval * MISSES
    }
}

/// The liveness of the edges whose home is this broker.
#[derive(Debug, Default)]
pub struct Liveness {
    edges: HashMap<EdgeId, Entry>,
}

impl Liveness {
    /// No edges yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A heartbeat (or registration) from `edge` at `now`; `serving` says whether it has sessions
    /// (which sets how often it must heartbeat).
    pub fn handle_heartbeat(&mut self, edge: EdgeId, serving: bool, now: Instant) -> Heard {
        match self.edges.get_mut(&edge) {
            None => {
                self.edges.insert(
                    edge,
                    Entry {
                        last: now,
                        serving,
                        state: EdgeState::Alive,
                    },
                );
                Heard::New
            }
            Some(e) => {
                // Heartbeats can arrive out of order over HTTP; time only moves forward.
                e.last = e.last.max(now);
                e.serving = serving;
                match std::mem::replace(&mut e.state, EdgeState::Alive) {
                    EdgeState::Alive => Heard::Alive,
                    EdgeState::Dead => Heard::Revived,
                }
            }
        }
    }

    /// Stops tracking `edge` (it left, or another broker is now its home).
    pub fn forget(&mut self, edge: &EdgeId) {
        self.edges.remove(edge);
    }

    /// The edges that became dead by `now` (each reported once, until it heartbeats again).
    pub fn poll_dead(&mut self, now: Instant) -> Vec<EdgeId> {
        let mut dead = Vec::new();
        for (id, e) in &mut self.edges {
            if e.state == EdgeState::Alive && now > e.deadline() {
                e.state = EdgeState::Dead;
                dead.push(*id);
            }
        }
        dead.sort();
        dead
    }

    /// When the next edge would become dead, if no heartbeat comes first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.edges
            .values()
            .filter(|e| e.state == EdgeState::Alive)
            .map(Entry::deadline)
            .min()
    }

    /// `edge`'s state, if this broker tracks it.
    pub fn state(&self, edge: &EdgeId) -> Option<EdgeState> {
        self.edges.get(edge).map(|e| e.state)
    }

    /// Edges tracked and dead.
    pub fn dead_count(&self) -> usize {
        self.edges
            .values()
            .filter(|e| e.state == EdgeState::Dead)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeplay_testkit::clock::VirtualClock;

    fn id(n: u8) -> EdgeId {
        EdgeId([n; 32])
    }

    #[test]
    fn a_serving_edge_dies_after_three_missed_heartbeats() {
        let clock = VirtualClock::new();
        let mut l = Liveness::new();
        assert_eq!(l.handle_heartbeat(id(1), true, clock.now()), Heard::New);
        assert_eq!(
            l.poll_timeout(),
            Some(clock.now() + Duration::from_millis(1500))
        );
        // Heartbeats on time (even late ones within three periods) keep it alive.
        for _ in 0..10 {
            clock.advance(Duration::from_millis(1400));
            assert!(l.poll_dead(clock.now()).is_empty());
            assert_eq!(l.handle_heartbeat(id(1), true, clock.now()), Heard::Alive);
        }
        clock.advance(Duration::from_millis(1500));
        assert!(
            l.poll_dead(clock.now()).is_empty(),
            "exactly 3 periods is not yet a miss"
        );
        clock.advance(Duration::from_millis(1));
        assert_eq!(l.poll_dead(clock.now()), vec![id(1)]);
        assert_eq!(l.state(&id(1)), Some(EdgeState::Dead));
        // Reported once.
        clock.advance(Duration::from_secs(10));
        assert!(l.poll_dead(clock.now()).is_empty());
        assert_eq!(l.poll_timeout(), None);
        assert_eq!(l.dead_count(), 1);
        // Back from the dead.
        assert_eq!(l.handle_heartbeat(id(1), true, clock.now()), Heard::Revived);
        assert_eq!(l.state(&id(1)), Some(EdgeState::Alive));
        assert_eq!(l.dead_count(), 0);
    }

    #[test]
    fn an_idle_edge_has_forty_five_seconds_and_its_serving_report_shortens_that() {
        let clock = VirtualClock::new();
        let mut l = Liveness::new();
        l.handle_heartbeat(id(1), false, clock.now());
        l.handle_heartbeat(id(2), false, clock.now());
        clock.advance(Duration::from_secs(44));
        assert!(l.poll_dead(clock.now()).is_empty());
        // Edge 2's player connected: its heartbeat says it serves, so it now has 1.5 s. A
        // placement alone does not shorten the period: the edge stays idle until a player
        // arrives (maybe never), and it cannot heartbeat faster for a session it does not know.
        l.handle_heartbeat(id(2), true, clock.now());
        clock.advance(Duration::from_millis(1600));
        assert_eq!(l.poll_dead(clock.now()), vec![id(1), id(2)]);
    }

    #[test]
    fn out_of_order_heartbeats_do_not_move_time_back_and_forgotten_edges_never_die() {
        let clock = VirtualClock::new();
        let t0 = clock.now();
        let mut l = Liveness::new();
        l.handle_heartbeat(id(1), true, t0 + Duration::from_secs(1));
        l.handle_heartbeat(id(1), true, t0);
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_millis(2500)));
        l.handle_heartbeat(id(3), true, t0);
        l.forget(&id(3));
        assert_eq!(l.poll_dead(t0 + Duration::from_secs(60)), vec![id(1)]);
        assert_eq!(l.state(&id(3)), None);
    }
}
