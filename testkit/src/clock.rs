//! A virtual clock: sans-IO code takes `now: Instant` as input, and tests move `now` by hand, so
//! timeouts and rates are deterministic and a test of a minute runs in microseconds.
//!
//! ```
//! use std::time::Duration;
//! use edgeplay_testkit::clock::VirtualClock;
//!
//! let clock = VirtualClock::new();
//! let start = clock.now();
//! clock.advance(Duration::from_millis(16));
//! assert_eq!(clock.now() - start, Duration::from_millis(16));
//! assert_eq!(clock.elapsed(), Duration::from_millis(16));
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A shared virtual clock; clones see the same time.
#[derive(Clone, Debug)]
pub struct VirtualClock {
    origin: Instant,
    offset_ns: Arc<AtomicU64>,
}

impl Default for VirtualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtualClock {
    /// A clock at an arbitrary origin that does not move on its own.
    #[must_use]
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            offset_ns: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The current virtual time.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.origin + self.elapsed()
    }

    /// Virtual time since the clock was made.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.offset_ns.load(Ordering::Acquire))
    }

    /// Moves time forward by `by` (saturating after ~584 years of virtual time).
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .offset_ns
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_add(ns))
            });
    }

    /// Moves time forward to `t`; earlier instants leave the clock where it is.
    pub fn advance_to(&self, t: Instant) {
        let now = self.now();
        if t > now {
            self.advance(t - now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_time_and_time_never_goes_back() {
        let a = VirtualClock::new();
        let b = a.clone();
        let t0 = a.now();
        b.advance(Duration::from_secs(3));
        assert_eq!(a.now() - t0, Duration::from_secs(3));
        a.advance_to(t0);
        assert_eq!(b.elapsed(), Duration::from_secs(3));
        a.advance_to(t0 + Duration::from_secs(5));
        assert_eq!(b.elapsed(), Duration::from_secs(5));
    }
}
