//! Rate limits on session requests and selections: token buckets, sans-IO (`now` in).
//!
//! The player name is whatever the request claims, so a bucket keyed on it alone stops nobody:
//! a flood just varies the name. Each request therefore takes a token from two buckets: one per
//! peer IP address (which the caller cannot fake cheaply over TCP), with a larger burst and
//! rate since several players can share one address behind a NAT, and one per claimed player
//! name (so one player cannot use up its address's share). Either empty → refused, and nothing
//! is taken from the other.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Instant;

/// The limits: a burst and a sustained rate for each kind of bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests one player name may make at once.
    pub burst: f64,
    /// Requests per second refilled per player name.
    pub per_sec: f64,
    /// Requests one IP address may make at once.
    pub ip_burst: f64,
    /// Requests per second refilled per IP address.
    pub ip_per_sec: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            burst: 20.0,
            per_sec: 5.0,
            ip_burst: 200.0,
            ip_per_sec: 50.0,
        }
    }
}

/// Which bucket was empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// The peer address's.
    Ip,
    /// The player name's.
    Player,
}

/// Buckets not seen for this long are full again and carry no information.
const MAX_BUCKETS: usize = 100_000;

#[derive(Debug)]
struct Buckets<K> {
    map: HashMap<K, (f64, Instant)>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new() -> Self {
        Buckets {
            map: HashMap::new(),
        }
    }

    /// Tokens in `key`'s bucket at `now` (refilled, capped at `burst`).
    fn level(&mut self, key: &K, burst: f64, per_sec: f64, now: Instant) -> f64 {
        if self.map.len() >= MAX_BUCKETS && !self.map.contains_key(key) {
            // Full buckets carry no information: forget them to bound memory.
            self.map.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * per_sec < burst
            });
        }
        let (tokens, at) = self.map.entry(key.clone()).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * per_sec).min(burst);
        *at = (*at).max(now);
        *tokens
    }

    fn take(&mut self, key: &K) {
        if let Some((tokens, _)) = self.map.get_mut(key) {
            *tokens -= 1.0;
        }
    }
}

/// Two sets of token buckets: per peer address and per claimed player name.
#[derive(Debug)]
pub struct Limiter {
    rate: RateLimit,
    ips: Buckets<IpAddr>,
    players: Buckets<String>,
}

impl Limiter {
    /// Empty buckets fill to their burst on first use.
    pub fn new(rate: RateLimit) -> Self {
        Limiter {
            rate,
            ips: Buckets::new(),
            players: Buckets::new(),
        }
    }

    /// The limits in force.
    pub fn rate(&self) -> RateLimit {
        self.rate
    }

    /// Takes one token from `ip`'s bucket and one from `player`'s, or neither.
    pub fn check(&mut self, ip: IpAddr, player: &str, now: Instant) -> Result<(), Limited> {
        let r = self.rate;
        if self.ips.level(&ip, r.ip_burst, r.ip_per_sec, now) < 1.0 {
            return Err(Limited::Ip);
        }
        let player = player.to_owned();
        if self.players.level(&player, r.burst, r.per_sec, now) < 1.0 {
            return Err(Limited::Player);
        }
        self.ips.take(&ip);
        self.players.take(&player);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeplay_testkit::clock::VirtualClock;
    use std::time::Duration;

    const RATE: RateLimit = RateLimit {
        burst: 3.0,
        per_sec: 1.0,
        ip_burst: 5.0,
        ip_per_sec: 2.0,
    };

    /// A clock, a limiter at [`RATE`] that has seen nobody, and the address 10.0.0.1.
    fn fresh() -> (VirtualClock, Limiter, IpAddr) {
        (
            VirtualClock::new(),
            Limiter::new(RATE),
            [10, 0, 0, 1].into(),
        )
    }

    #[test]
    fn varying_the_player_name_does_not_escape_the_address_bucket() {
        let (clock, mut l, ip) = fresh();
        for i in 0..5 {
            assert_eq!(l.check(ip, &format!("p{i}"), clock.now()), Ok(()));
        }
        assert_eq!(l.check(ip, "fresh name", clock.now()), Err(Limited::Ip));
        // Another address is not affected.
        assert_eq!(l.check([10, 0, 0, 2].into(), "p0", clock.now()), Ok(()));
        // Refill: 2/s.
        clock.advance(Duration::from_millis(500));
        assert_eq!(l.check(ip, "x", clock.now()), Ok(()));
        assert_eq!(l.check(ip, "y", clock.now()), Err(Limited::Ip));
    }

    #[test]
    fn one_player_cannot_use_up_its_address_and_a_refusal_takes_nothing() {
        let (clock, mut l, ip) = fresh();
        for _ in 0..3 {
            assert_eq!(l.check(ip, "bob", clock.now()), Ok(()));
        }
        assert_eq!(l.check(ip, "bob", clock.now()), Err(Limited::Player));
        assert_eq!(l.check(ip, "bob", clock.now()), Err(Limited::Player));
        // Bob's refusals took nothing from the address: two more players fit.
        assert_eq!(l.check(ip, "carol", clock.now()), Ok(()));
        assert_eq!(l.check(ip, "dave", clock.now()), Ok(()));
        assert_eq!(l.check(ip, "erin", clock.now()), Err(Limited::Ip));
        clock.advance(Duration::from_secs(1));
        assert_eq!(l.check(ip, "bob", clock.now()), Ok(()));
    }
}
