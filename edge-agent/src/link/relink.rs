//! Relinking: which broker the edge dials next (sans-IO; [`crate::link`] does the dialling).
//!
//! Brokers on one store serve one registry, and each link carries their list
//! ([`edgeplay_protocol::link::LinkMessage::Brokers`]). When the link drops, the edge redials its
//! home (the broker it was last linked to) first; when the home does not answer, it goes down the
//! list at once, then the broker it was started with, and only after a whole round failed does
//! it wait, with backoff (0.25 s doubling to 10 s). Linking to a broker other than the home is a
//! failover ([`Failover`]): that broker becomes the home. A broker showing a key other than the
//! pinned one is skipped from then on; when no broker is left, the edge gives up.
//!
//! ```
//! use std::time::Duration;
//! use edgeplay_edge::link::relink::{Dialer, Failure};
//!
//! let mut d = Dialer::new("a:1");
//! assert_eq!(d.next_dial(), Some(("a:1".to_owned(), Duration::ZERO)));
//! d.linked("a:1");
//! d.set_list(vec!["a:1".into(), "b:2".into()]);
//! d.dropped(Duration::from_secs(60));
//! assert_eq!(d.next_dial(), Some(("a:1".to_owned(), Duration::from_millis(250))));
//! d.failed("a:1", Failure::Unreachable("connection refused".into()));
//! assert_eq!(d.next_dial(), Some(("b:2".to_owned(), Duration::ZERO)));
//! let moved = d.linked("b:2").expect("a failover");
//! assert_eq!((moved.from.as_str(), moved.to.as_str(), moved.reason), ("a:1", "b:2", "unreachable"));
//! ```

use std::time::Duration;

/// First wait before redialling, doubled after each failed round.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between rounds.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A link that lasted this long was healthy: the next outage starts from [`FIRST_BACKOFF`].
pub const HEALTHY_LINK: Duration = Duration::from_secs(30);

/// Why a dial failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No connection, no upgrade or no hello within the dial bound.
    Unreachable(String),
    /// Connected, but the handshake failed (refused, no welcome, bad welcome).
    Handshake(String),
    /// The broker showed a key other than the pinned one: skipped from now on.
    WrongKey(String),
}

impl Failure {
    /// Short label for logs and the failover metric.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Unreachable(_) => "unreachable",
            Failure::Handshake(_) => "handshake",
            Failure::WrongKey(_) => "wrong_key",
        }
    }
}

/// The edge moved from one broker to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    /// The previous home (`host:port`).
    pub from: String,
    /// The new home.
    pub to: String,
    /// Why the previous home was left: [`Failure::label`] of its last failed dial, or
    /// `"dropped"` when the edge never got to redial it.
    pub reason: &'static str,
    /// The last failure's words.
    pub detail: String,
}

/// The dial order and backoff of one edge.
#[derive(Debug, Clone)]
pub struct Dialer {
    /// The broker the edge was started with: always in the round, so a stale list cannot strand
    /// the edge.
    configured: String,
    /// The broker the edge was last linked to.
    home: String,
    /// The home's last broker list (`host:port`), in its order.
    listed: Vec<String>,
    /// Brokers that showed another key.
    skipped: Vec<String>,
    /// This round's dial order and how far it got.
    round: Vec<String>,
    pos: usize,
    /// Wait before the next dial.
    wait: Duration,
    backoff: Duration,
    /// The home's last failure in this outage.
    home_failure: Option<Failure>,
}

impl Dialer {
    /// A dialer whose first dial goes to `configured` (`host:port`), at once.
    #[must_use]
    pub fn new(configured: &str) -> Self {
        Self {
            configured: configured.to_owned(),
            home: configured.to_owned(),
            listed: Vec::new(),
            skipped: Vec::new(),
            round: Vec::new(),
            pos: 0,
            wait: Duration::ZERO,
            backoff: FIRST_BACKOFF,
            home_failure: None,
        }
    }

    /// The broker linked to last.
    #[must_use]
    pub fn home(&self) -> &str {
        &self.home
    }

    /// The list the home sent last (already checked with
    /// [`edgeplay_protocol::link::broker_hostports`]).
    pub fn set_list(&mut self, list: Vec<String>) {
        self.listed = list;
    }

    /// The brokers tried in one round: home, the list, the configured broker, each once, none
    /// skipped.
    fn order(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let all = std::iter::once(&self.home)
            .chain(&self.listed)
            .chain(std::iter::once(&self.configured));
        for b in all {
            if !out.contains(b) && !self.skipped.contains(b) {
                out.push(b.clone());
            }
        }
        out
    }

    /// The next broker to dial and how long to wait first; `None` when every broker known
    /// showed another key (give up).
    pub fn next_dial(&mut self) -> Option<(String, Duration)> {
        if self.pos >= self.round.len() {
            if !self.round.is_empty() {
                // A whole round failed: wait, longer each time.
                self.wait = self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
            self.round = self.order();
            self.pos = 0;
        }
        let b = self.round.get(self.pos)?.clone();
        Some((b, std::mem::take(&mut self.wait)))
    }

    /// The dial to `broker` failed: the next one in the round is tried at once.
    pub fn failed(&mut self, broker: &str, why: Failure) {
        if matches!(why, Failure::WrongKey(_)) && !self.skipped.iter().any(|s| s == broker) {
            self.skipped.push(broker.to_owned());
        }
        if broker == self.home {
            self.home_failure = Some(why);
        }
        self.pos += 1;
    }

    /// The edge is linked to `broker`, which is its home from now on; `Some` when that is a
    /// move away from the previous home.
    pub fn linked(&mut self, broker: &str) -> Option<Failover> {
        let from = std::mem::replace(&mut self.home, broker.to_owned());
        let failure = self.home_failure.take();
        self.round.clear();
        self.pos = 0;
        (from != broker).then(|| Failover {
            from,
            to: broker.to_owned(),
            reason: failure.as_ref().map_or("dropped", Failure::label),
            detail: match failure {
                Some(Failure::Unreachable(d) | Failure::Handshake(d) | Failure::WrongKey(d)) => d,
                None => String::new(),
            },
        })
    }

    /// The link to the home dropped after `lasted`: the next round starts with the home after a
    /// backoff wait (from [`FIRST_BACKOFF`] again when the link was healthy).
    pub fn dropped(&mut self, lasted: Duration) {
        if lasted >= HEALTHY_LINK {
            self.backoff = FIRST_BACKOFF;
        }
        self.wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.round = self.order();
        self.pos = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> Failure {
        Failure::Unreachable("connection refused".into())
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A dialer linked to its home `a:1`, given `list`, whose link then dropped after `up`.
    fn linked_to_a_then_dropped(list: &[&str], up: Duration) -> Dialer {
        let mut d = Dialer::new("a:1");
        d.next_dial();
        d.linked("a:1");
        d.set_list(list.iter().map(|&b| b.to_owned()).collect());
        d.dropped(up);
        d
    }

    #[test]
    fn a_lone_broker_is_redialled_with_doubling_backoff_up_to_the_cap() {
        let mut d = Dialer::new("a:1");
        assert_eq!(d.next_dial(), Some(("a:1".into(), Duration::ZERO)));
        let mut waits = Vec::new();
        for _ in 0..8 {
            d.failed("a:1", down());
            let (b, w) = d.next_dial().unwrap();
            assert_eq!(b, "a:1");
            waits.push(w.as_millis());
        }
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        assert_eq!(d.linked("a:1"), None, "relinking home is no failover");
    }

    #[test]
    fn home_first_then_the_list_at_once_then_backoff_between_rounds() {
        let mut d = linked_to_a_then_dropped(&["a:1", "b:2", "c:3"], Duration::from_secs(100));
        let mut seen = Vec::new();
        for _ in 0..6 {
            let (b, w) = d.next_dial().unwrap();
            seen.push((b.clone(), w.as_millis()));
            d.failed(&b, down());
        }
        assert_eq!(
            seen,
            [
                ("a:1".into(), 250),
                ("b:2".into(), 0),
                ("c:3".into(), 0),
                ("a:1".into(), 500),
                ("b:2".into(), 0),
                ("c:3".into(), 0),
            ]
        );
    }

    #[test]
    fn the_new_home_leads_the_next_round_and_the_configured_broker_stays_in_it() {
        let mut d = linked_to_a_then_dropped(&["a:1", "b:2"], ms(100));
        assert_eq!(d.next_dial().unwrap().0, "a:1");
        d.failed("a:1", Failure::Handshake("no welcome".into()));
        assert_eq!(d.next_dial().unwrap().0, "b:2");
        let f = d.linked("b:2").unwrap();
        assert_eq!((f.from.as_str(), f.to.as_str()), ("a:1", "b:2"));
        assert_eq!((f.reason, f.detail.as_str()), ("handshake", "no welcome"));
        assert_eq!(d.home(), "b:2");
        // B's list no longer names A (its lease expired), but A was the configured broker.
        d.set_list(vec!["b:2".into(), "c:3".into()]);
        d.dropped(ms(100));
        let order: Vec<String> = (0..3)
            .map(|_| {
                let (b, _) = d.next_dial().unwrap();
                d.failed(&b, down());
                b
            })
            .collect();
        assert_eq!(order, ["b:2", "c:3", "a:1"]);
    }

    #[test]
    fn a_broker_with_another_key_is_skipped_and_none_left_means_give_up() {
        let mut d = linked_to_a_then_dropped(&["a:1", "x:9", "b:2"], ms(100));
        d.next_dial();
        d.failed("a:1", down());
        assert_eq!(d.next_dial().unwrap().0, "x:9");
        d.failed("x:9", Failure::WrongKey("shows key ff".into()));
        assert_eq!(d.next_dial().unwrap().0, "b:2");
        d.failed("b:2", down());
        let rounds: Vec<String> = (0..2)
            .map(|_| {
                let (b, _) = d.next_dial().unwrap();
                d.failed(&b, down());
                b
            })
            .collect();
        assert_eq!(rounds, ["a:1", "b:2"], "x:9 is not dialled again");
        let mut lone = Dialer::new("a:1");
        lone.next_dial();
        lone.failed("a:1", Failure::WrongKey("shows key ff".into()));
        assert_eq!(lone.next_dial(), None);
    }

    #[test]
    fn a_healthy_link_resets_the_backoff_and_a_short_one_does_not() {
        // No broker list (empty, as a new dialer has one).
        let mut d = linked_to_a_then_dropped(&[], ms(10));
        assert_eq!(d.next_dial().unwrap().1, ms(250));
        d.linked("a:1");
        d.dropped(ms(10));
        assert_eq!(
            d.next_dial().unwrap().1,
            ms(500),
            "a flapping broker is not hammered"
        );
        d.linked("a:1");
        d.dropped(HEALTHY_LINK);
        assert_eq!(d.next_dial().unwrap().1, ms(250));
    }

    #[test]
    fn a_move_after_a_plain_drop_says_so() {
        let mut d = Dialer::new("a:1");
        d.next_dial();
        let f = d.linked("b:2").unwrap();
        assert_eq!((f.reason, f.detail.as_str()), ("dropped", ""));
    }
}
