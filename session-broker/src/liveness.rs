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
//!
//! An edge's link has its own bound, [`LinkWatch`]: the link is silent once nothing came from
//! the edge for [`MISSES`] of the heartbeat intervals its last heartbeat implies
//! ([`edgeplay_protocol::link::heartbeat_interval_ms`]), and the broker then drops the link and
//! declares the edge dead ([`Liveness::declare_dead`]), so that a frozen edge whose kernel still
//! keeps the TCP connection open does not stay linked.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use edgeplay_protocol::link::{HEARTBEAT_IDLE_MS, heartbeat_interval_ms};
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

    /// `edge`'s link fell silent ([`LinkWatch`]): it is dead now, without waiting for its
    /// heartbeat deadline here. Whether that is news (it was tracked and alive); a dead edge is
    /// reported once, by this or by [`Liveness::poll_dead`], until it heartbeats again.
    pub fn declare_dead(&mut self, edge: &EdgeId) -> bool {
        match self.edges.get_mut(edge) {
            Some(e) if e.state == EdgeState::Alive => {
                e.state = EdgeState::Dead;
                true
            }
            _ => false,
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

/// How long an edge's link may stay silent: [`MISSES`] of the edge's current heartbeat
/// interval after the last frame from the edge (sans-IO, `now` in).
///
/// The interval is the one the edge's last heartbeat implies
/// ([`edgeplay_protocol::link::heartbeat_interval_ms`] of its `sessions` and `draining`: 500 ms
/// while it serves or drains, 15 s idle), the very rule the edge schedules its heartbeats by;
/// before the first heartbeat it is the idle one. Every frame from the edge (a heartbeat, an
/// answer to a relayed request) moves the deadline; what the broker sends moves nothing.
///
/// ```
/// use std::time::{Duration, Instant};
/// use edgeplay_broker::liveness::LinkWatch;
///
/// let t0 = Instant::now();
/// let mut w = LinkWatch::new(t0);
/// w.handle_heartbeat(t0, 1, false); // serving: a heartbeat every 500 ms
/// assert_eq!(w.deadline(), t0 + Duration::from_millis(1500));
/// assert!(!w.is_silent(t0 + Duration::from_millis(1500)));
/// assert!(w.is_silent(t0 + Duration::from_millis(1501)));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LinkWatch {
    last: Instant,
    interval: Duration,
}

impl LinkWatch {
    /// A link welcomed at `now`: no heartbeat yet, so the idle interval.
    pub fn new(now: Instant) -> Self {
        Self {
            last: now,
            interval: Duration::from_millis(HEARTBEAT_IDLE_MS),
        }
    }

    /// A frame from the edge at `now` (time only moves forward).
    pub fn handle_frame(&mut self, now: Instant) {
        self.last = self.last.max(now);
    }

    /// A heartbeat from the edge at `now` saying it serves `sessions` and whether it drains:
    /// a frame, and from now on the interval it implies.
    pub fn handle_heartbeat(&mut self, now: Instant, sessions: u32, draining: bool) {
        self.handle_frame(now);
        self.interval = Duration::from_millis(heartbeat_interval_ms(sessions, draining));
    }

    /// The edge's current heartbeat interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// When the link is silent, if nothing comes from the edge first.
    pub fn deadline(&self) -> Instant {
        self.last + self.interval * MISSES
    }

    /// Whether nothing came from the edge for [`MISSES`] intervals by `now` (exactly three is
    /// not yet a miss, as in [`Liveness`]).
    pub fn is_silent(&self, now: Instant) -> bool {
        now > self.deadline()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeplay_testkit::clock::VirtualClock;

    #[test]
    fn a_link_is_silent_after_three_of_the_edges_current_intervals() {
        let clock = VirtualClock::new();
        let t0 = clock.now();
        let mut w = LinkWatch::new(t0);
        // Before any heartbeat: the idle interval.
        assert_eq!(w.deadline(), t0 + Duration::from_secs(45));
        // Idle heartbeats every 15 s keep it up.
        clock.advance(Duration::from_secs(15));
        w.handle_heartbeat(clock.now(), 0, false);
        clock.advance(Duration::from_secs(44));
        assert!(!w.is_silent(clock.now()));
        // The edge serves: 500 ms heartbeats, 1.5 s of silence allowed from its last frame.
        w.handle_heartbeat(clock.now(), 2, false);
        assert_eq!(w.interval(), Duration::from_millis(500));
        let served = clock.now();
        clock.advance(Duration::from_millis(1000));
        // An answer to a relayed request is a frame from the edge too.
        w.handle_frame(clock.now());
        clock.advance(Duration::from_millis(1500));
        assert!(
            !w.is_silent(clock.now()),
            "exactly three intervals is not yet a miss"
        );
        clock.advance(Duration::from_millis(1));
        assert!(w.is_silent(clock.now()));
        // Out-of-order times do not move the deadline back.
        w.handle_frame(served);
        assert!(w.is_silent(clock.now()));
        // A draining edge heartbeats at the serving rate even with no session left.
        w.handle_heartbeat(clock.now(), 0, true);
        assert_eq!(w.deadline(), clock.now() + Duration::from_millis(1500));
        // Its last session gone and not draining: back to 45 s.
        w.handle_heartbeat(clock.now(), 0, false);
        assert_eq!(w.deadline(), clock.now() + Duration::from_secs(45));
    }

    #[test]
    fn a_silent_link_declares_its_edge_dead_once() {
        let clock = VirtualClock::new();
        let mut l = Liveness::new();
        l.handle_heartbeat(id(1), true, clock.now());
        assert!(l.declare_dead(&id(1)));
        assert_eq!(l.state(&id(1)), Some(EdgeState::Dead));
        // Already dead: neither the link nor the sweep reports it again.
        assert!(!l.declare_dead(&id(1)));
        clock.advance(Duration::from_secs(10));
        assert!(l.poll_dead(clock.now()).is_empty());
        // Untracked edges (another broker is their home) are not this broker's to declare.
        assert!(!l.declare_dead(&id(2)));
        // The sweep first: then the link's silence is no news.
        l.handle_heartbeat(id(1), true, clock.now());
        clock.advance(Duration::from_secs(2));
        assert_eq!(l.poll_dead(clock.now()), vec![id(1)]);
        assert!(!l.declare_dead(&id(1)));
        assert_eq!(l.handle_heartbeat(id(1), true, clock.now()), Heard::Revived);
    }

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
