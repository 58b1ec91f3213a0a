//! A simulated bottleneck link in virtual time, for sans-IO code that reacts to delay and loss
//! (the rate controllers): what the relay does to real datagrams, computed instead of waited
//! for, so a minute of streaming takes milliseconds and replays exactly.
//!
//! One direction of a path: packets go in with their send time and size and come out with the
//! time they arrive, or as lost. On the way they pass, in order:
//! 1. a FIFO queue with a byte limit in front of the bottleneck (drop-tail: a packet that does
//!    not fit is dropped);
//! 2. the bottleneck, which sends one packet after the other at its capacity (bit/s, which may
//!    change over time);
//! 3. the wire: a fixed propagation delay, and random loss drawn from a seeded
//!    [`SplitMix64`] (a packet lost there used its share of the bottleneck, as in the relay).
//!
//! Time is whatever the caller passes as `now` (usually [`VirtualClock::now`]); nothing here
//! reads a clock. A packet's fate is known when it is sent: [`Link::send`] answers at once, so
//! a capacity change ([`Link::set_capacity`]) applies to the packets sent after it; changes
//! planned ahead ([`Link::schedule_capacity`]) also apply to the packets already queued when
//! they come.
//!
//! ```
//! use std::time::Duration;
//! use edgeplay_testkit::clock::VirtualClock;
//! use edgeplay_testkit::netsim::{Link, LinkConfig};
//!
//! let clock = VirtualClock::new();
//! // 1 Mbit/s, 20 ms one way.
//! let mut link = Link::new(LinkConfig::new(1e6, Duration::from_millis(20)), clock.now());
//! // 1250 bytes take 10 ms at 1 Mbit/s: the first arrives after 30 ms, the second waits 10 ms.
//! let a = link.send(clock.now(), 1250).expect("no loss configured");
//! let b = link.send(clock.now(), 1250).expect("no loss configured");
//! assert_eq!(a - clock.now(), Duration::from_millis(30));
//! assert_eq!(b - a, Duration::from_millis(10));
//! assert_eq!(link.queue_delay(clock.now()), Duration::from_millis(20));
//! ```
//!
//! [`VirtualClock::now`]: crate::clock::VirtualClock::now

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use edgeplay_game::hash::SplitMix64;

/// How a [`Link`] starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkConfig {
    /// Bottleneck capacity, bit/s (0: nothing leaves until the capacity changes).
    pub capacity_bps: f64,
    /// One-way propagation delay after the bottleneck.
    pub propagation: Duration,
    /// Bytes the queue holds, the packet being sent included; `usize::MAX`: unbounded.
    pub queue_limit_bytes: usize,
    /// Probability in [0, 1] that a packet is lost on the wire.
    pub loss: f64,
    /// Seed of the loss draws.
    pub seed: u64,
}

impl LinkConfig {
    /// A link of `capacity_bps` and `propagation`, with an unbounded queue and no loss.
    #[must_use]
    pub fn new(capacity_bps: f64, propagation: Duration) -> Self {
        Self {
            capacity_bps,
            propagation,
            queue_limit_bytes: usize::MAX,
            loss: 0.0,
            seed: 1,
        }
    }
}

/// What became of the packets sent so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets handed to [`Link::send`].
    pub sent: u64,
    /// Dropped at the queue (it was full, or the capacity is 0 for good).
    pub dropped: u64,
    /// Lost on the wire (the random draw).
    pub lost: u64,
    /// Packets that arrive (or will: their arrival may still be in the future).
    pub delivered: u64,
    /// Their bytes.
    pub delivered_bytes: u64,
}

/// One direction of a path with a bottleneck; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Link {
    /// Capacity from each instant on, in time order; the first entry is the start.
    capacity: Vec<(Instant, f64)>,
    propagation: Duration,
    queue_limit_bytes: usize,
    loss: f64,
    rng: SplitMix64,
    /// When the bottleneck has sent everything queued so far.
    busy_until: Instant,
    /// (when it has left the bottleneck, bytes) of the packets not yet sent by then.
    queue: VecDeque<(Instant, usize)>,
    queued_bytes: usize,
    stats: LinkStats,
}

impl Link {
    /// A link as `cfg` says, idle at `start`.
    ///
    /// # Panics
    /// If `cfg.loss` is outside [0, 1] or the capacity is negative or not a number: a test
    /// written wrong.
    #[must_use]
    pub fn new(cfg: LinkConfig, start: Instant) -> Self {
        assert!(
            (0.0..=1.0).contains(&cfg.loss),
            "loss probability {} is outside [0, 1]",
            cfg.loss
        );
        check_capacity(cfg.capacity_bps);
        Self {
            capacity: vec![(start, cfg.capacity_bps)],
            propagation: cfg.propagation,
            queue_limit_bytes: cfg.queue_limit_bytes,
            loss: cfg.loss,
            rng: SplitMix64(cfg.seed),
            busy_until: start,
            queue: VecDeque::new(),
            queued_bytes: 0,
            stats: LinkStats::default(),
        }
    }

    /// Sends `size` bytes at `now`: when they arrive at the far end, or `None` if the queue
    /// dropped them or the wire lost them.
    pub fn send(&mut self, now: Instant, size: usize) -> Option<Instant> {
        self.stats.sent += 1;
        while self.queue.front().is_some_and(|&(left, _)| left <= now) {
            if let Some((_, bytes)) = self.queue.pop_front() {
                self.queued_bytes -= bytes;
            }
        }
        if self.queued_bytes.saturating_add(size) > self.queue_limit_bytes {
            self.stats.dropped += 1;
            return None;
        }
        let start = self.busy_until.max(now);
        #[allow(clippy::cast_precision_loss, reason = "packet sizes")]
        let Some(left) = self.serialise(start, size as f64 * 8.0) else {
            self.stats.dropped += 1;
            return None;
        };
        self.busy_until = left;
        self.queue.push_back((left, size));
        self.queued_bytes += size;
        if self.rng.chance(self.loss) {
            self.stats.lost += 1;
            return None;
        }
        self.stats.delivered += 1;
        self.stats.delivered_bytes += size as u64;
        Some(left + self.propagation)
    }

    /// When `bits` starting at `start` have left the bottleneck, or `None` if the capacity is 0
    /// from some point on for good.
    fn serialise(&mut self, start: Instant, bits: f64) -> Option<Instant> {
        // Steps that ended before `start` are of no further use.
        let current = self
            .capacity
            .iter()
            .rposition(|&(from, _)| from <= start)
            .unwrap_or(0);
        self.capacity.drain(..current);
        let (mut at, mut left) = (start, bits);
        for (i, &(_, bps)) in self.capacity.iter().enumerate() {
            let next = self.capacity.get(i + 1).map(|&(from, _)| from);
            if bps > 0.0 {
                let done = at + Duration::from_secs_f64(left / bps);
                match next {
                    Some(n) if n < done => left -= (n - at).as_secs_f64() * bps,
                    _ => return Some(done),
                }
            }
            at = next?.max(at);
        }
        None
    }

    /// The capacity becomes `bps` at `now`, for the packets sent from then on (packets already
    /// queued keep the arrival times they were given). Changes planned after `now` are dropped.
    ///
    /// # Panics
    /// If `bps` is negative or not a number.
    pub fn set_capacity(&mut self, now: Instant, bps: f64) {
        check_capacity(bps);
        self.capacity.retain(|&(from, _)| from < now);
        self.capacity.push((now, bps));
    }

    /// Plans the capacity to become `bps` at `at`; packets sent before then that are still in
    /// the queue at `at` leave at the new rate (unlike [`Self::set_capacity`], which cannot
    /// change arrivals already answered). Plan changes before sending the packets they affect.
    ///
    /// # Panics
    /// If `bps` is negative or not a number.
    pub fn schedule_capacity(&mut self, at: Instant, bps: f64) {
        check_capacity(bps);
        let i = self.capacity.partition_point(|&(from, _)| from <= at);
        if i > 0 && self.capacity[i - 1].0 == at {
            self.capacity[i - 1].1 = bps;
        } else {
            self.capacity.insert(i, (at, bps));
        }
    }

    /// The capacity at `t`, bit/s.
    #[must_use]
    pub fn capacity_bps(&self, t: Instant) -> f64 {
        let i = self.capacity.partition_point(|&(from, _)| from <= t);
        self.capacity[i.saturating_sub(1)].1
    }

    /// The probability of loss on the wire from now on.
    ///
    /// # Panics
    /// If `p` is outside [0, 1].
    pub fn set_loss(&mut self, p: f64) {
        assert!(
            (0.0..=1.0).contains(&p),
            "loss probability {p} is outside [0, 1]"
        );
        self.loss = p;
    }

    /// The one-way propagation delay.
    #[must_use]
    pub fn propagation(&self) -> Duration {
        self.propagation
    }

    /// How long a packet sent at `now` waits before the bottleneck starts sending it.
    #[must_use]
    pub fn queue_delay(&self, now: Instant) -> Duration {
        self.busy_until.saturating_duration_since(now)
    }

    /// Bytes in the queue at `now` (the packet being sent included).
    #[must_use]
    pub fn queued_bytes(&self, now: Instant) -> usize {
        self.queue
            .iter()
            .filter(|&&(left, _)| left > now)
            .map(|&(_, bytes)| bytes)
            .sum()
    }

    /// What became of the packets so far.
    #[must_use]
    pub fn stats(&self) -> LinkStats {
        self.stats
    }
}

fn check_capacity(bps: f64) {
    assert!(
        bps >= 0.0 && !bps.is_nan(),
        "capacity {bps} bit/s is not a rate"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Sends `size`-byte packets at `rate_bps` for `d`; returns (send time, arrival) of each.
    fn stream(
        link: &mut Link,
        from: Instant,
        d: Duration,
        rate_bps: f64,
        size: usize,
    ) -> Vec<(Instant, Option<Instant>)> {
        #[allow(clippy::cast_precision_loss, reason = "packet sizes")]
        let gap = Duration::from_secs_f64(size as f64 * 8.0 / rate_bps);
        let mut out = vec![];
        let mut t = from;
        while t < from + d {
            out.push((t, link.send(t, size)));
            t += gap;
        }
        out
    }

    #[test]
    fn a_saturated_link_delivers_its_capacity() {
        let t0 = Instant::now();
        let cfg = LinkConfig {
            queue_limit_bytes: 60_000,
            ..LinkConfig::new(2e6, 20 * MS)
        };
        let mut link = Link::new(cfg, t0);
        // Twice the capacity for 10 s.
        let sent = stream(&mut link, t0, Duration::from_secs(10), 4e6, 1000);
        let (from, to) = (t0 + Duration::from_secs(2), t0 + Duration::from_secs(9));
        let bytes: usize = sent
            .iter()
            .filter(|(_, a)| a.is_some_and(|a| a >= from && a < to))
            .count()
            * 1000;
        #[allow(clippy::cast_precision_loss, reason = "bytes in 7 s")]
        let bps = bytes as f64 * 8.0 / (to - from).as_secs_f64();
        assert!(
            (bps - 2e6).abs() < 2e6 * 0.005,
            "{bps} bit/s through 2 Mbit/s"
        );
        let s = link.stats();
        assert_eq!(s.sent, s.delivered + s.dropped);
        assert!(s.dropped > 2_000, "the queue overflowed: {s:?}");
        // A full queue holds its limit: 60 kB at 2 Mbit/s is 240 ms of queueing.
        let q = link.queue_delay(t0 + Duration::from_secs(10));
        assert!(q > 230 * MS && q <= 240 * MS, "{q:?}");
        assert!(link.queued_bytes(t0 + Duration::from_secs(10)) <= 60_000);
    }

    #[test]
    fn the_queue_delay_grows_as_the_excess_rate() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::new(1e6, 30 * MS), t0);
        // 1.5 Mbit/s into 1 Mbit/s: the queue grows by half a second per second.
        let sent = stream(&mut link, t0, Duration::from_secs(4), 1.5e6, 1250);
        for &(at, arrival) in &sent {
            let delay = arrival.expect("no loss, no limit") - at;
            let expected = (at - t0) / 2 + 10 * MS + 30 * MS;
            let off = delay.abs_diff(expected);
            assert!(off <= MS, "{delay:?} at {:?}, {expected:?}", at - t0);
        }
        let q = link.queue_delay(t0 + Duration::from_secs(4));
        assert!(q.abs_diff(Duration::from_secs(2)) < 20 * MS, "{q:?}");
        // Under the capacity, nothing queues.
        let t1 = t0 + Duration::from_secs(10);
        for &(at, arrival) in &stream(&mut link, t1, Duration::from_secs(1), 0.5e6, 1250) {
            assert_eq!(arrival.map(|a| a - at), Some(40 * MS));
        }
    }

    #[test]
    fn the_loss_rate_is_the_configured_one_and_replays_from_the_seed() {
        let t0 = Instant::now();
        let run = |seed| {
            let cfg = LinkConfig {
                loss: 0.1,
                seed,
                ..LinkConfig::new(1e9, 5 * MS)
            };
            let mut link = Link::new(cfg, t0);
            let fates: Vec<bool> = (0..100_000u32)
                .map(|i| link.send(t0 + MS * i, 1200).is_some())
                .collect();
            (fates, link.stats())
        };
        let (a, stats) = run(7);
        #[allow(clippy::cast_precision_loss, reason = "packet counts")]
        let rate = stats.lost as f64 / stats.sent as f64;
        assert!((rate - 0.1).abs() < 0.005, "{rate}");
        assert_eq!(stats.dropped, 0);
        assert_eq!(run(7).0, a, "the same seed, the same losses");
        assert_ne!(run(8).0, a, "another seed, other losses");
    }

    #[test]
    fn capacity_changes_apply_from_when_they_happen() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::new(1e6, Duration::ZERO), t0);
        // Planned: 1 Mbit/s until 5 ms, nothing until 10 ms, then 2 Mbit/s. 2500 bytes
        // (20 kbit) sent at 0: 5 kbit by 5 ms, the other 15 kbit take 7.5 ms from 10 ms.
        link.schedule_capacity(t0 + 5 * MS, 0.0);
        link.schedule_capacity(t0 + 10 * MS, 2e6);
        assert_eq!(link.capacity_bps(t0 + 7 * MS), 0.0);
        let a = link.send(t0, 2500).expect("delivered");
        let near = |a: Duration, b: Duration| a.abs_diff(b) <= Duration::from_micros(1);
        assert!(near(a - t0, Duration::from_micros(17_500)), "{:?}", a - t0);
        // Set now: applies to what is sent from now on.
        link.set_capacity(t0 + 20 * MS, 4e6);
        let b = link.send(t0 + 20 * MS, 500).expect("delivered");
        assert!(near(b - t0, 21 * MS), "{:?}", b - t0);
        // A link that stays down drops what it could never send.
        link.set_capacity(t0 + 30 * MS, 0.0);
        assert_eq!(link.send(t0 + 30 * MS, 100), None);
        assert_eq!(link.stats().dropped, 1);
    }
}
