//! Audio pacing: each Opus packet leaves on its own media clock, not in the game tick's burst.
//!
//! The session encodes a tick's sound (16.7 ms at 60 Hz) at the start of the tick and cuts it
//! into 10 ms Opus packets, so a packet leaves anywhere from 6.7 ms before its media time to
//! 10 ms after it: up to a whole tick of arrival jitter with a perfect network. A browser's
//! audio jitter buffer (Chromium's NetEq) sizes itself on the largest relative arrival delays
//! it sees (the 95th percentile of half-second maxima, in 20 ms steps), so that spread alone
//! can cost it a 20 ms step, and with any scheduling hiccup on top two. [`AudioPacer`] holds
//! each packet until `base + pts + hold`, where `base` is the earliest the packets have come
//! (the minimum of `arrival − pts` over the last one to two windows) and `hold` the spread of
//! `arrival − pts` seen in the previous window (at most `max_hold`): packets then leave
//! evenly on their media clock and the receiver's relative delays only carry what the hold
//! did not cover. A packet that comes later than its slot leaves at once; nothing is dropped.
//!
//! Sans-IO: the caller says when packets arrive and sends them at the instants it is given.

use std::time::{Duration, Instant};

/// How long one window of arrival offsets lasts.
pub const WINDOW: Duration = Duration::from_secs(1);

/// The arrival offsets of one window: `arrival − pts` as instants (the session's start, seen
/// through each packet).
#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    min: Instant,
    max: Instant,
}

/// Decides when each audio packet leaves.
#[derive(Debug)]
pub struct AudioPacer {
    max_hold: Duration,
    current: Option<Window>,
    previous: Option<Window>,
}

impl AudioPacer {
    /// A pacer that holds a packet at most `max_hold` past the earliest arrivals.
    #[must_use]
    pub fn new(max_hold: Duration) -> Self {
        Self {
            max_hold,
            current: None,
            previous: None,
        }
    }

    /// The hold now in use: the previous window's spread of arrival offsets, at most
    /// `max_hold` (zero until a window is complete).
    #[must_use]
    pub fn hold(&self) -> Duration {
        self.previous
            .map_or(Duration::ZERO, |w| (w.max - w.min).min(self.max_hold))
    }

    /// A packet with presentation time `pts` arrived at `now`: the instant it should leave
    /// (`now` or later; `now` when it is already late, or when `pts` is beyond this clock).
    pub fn due(&mut self, now: Instant, pts: Duration) -> Instant {
        let Some(anchor) = now.checked_sub(pts) else {
            return now;
        };
        let current = match self.current {
            Some(w) if now.duration_since(w.started) < WINDOW => Window {
                min: w.min.min(anchor),
                max: w.max.max(anchor),
                ..w
            },
            Some(w) => {
                // A window closes: its offsets become the reference for the next one.
                self.previous = Some(w);
                Window {
                    started: now,
                    min: anchor,
                    max: anchor,
                }
            }
            None => Window {
                started: now,
                min: anchor,
                max: anchor,
            },
        };
        self.current = Some(current);
        let base = self
            .previous
            .map_or(current.min, |p| p.min.min(current.min));
        (base + pts + self.hold()).max(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_micros(16_667);
    const PACKET: Duration = Duration::from_millis(10);

    /// Packets as a 60 Hz session makes them: a tick at `k·TICK` emits every 10 ms packet whose
    /// end its sound reaches. Returns (arrival offset from the start, pts).
    fn burst_arrivals(seconds: u32) -> Vec<(Duration, Duration)> {
        let mut out = Vec::new();
        let mut next = Duration::ZERO;
        for k in 0..seconds * 60 {
            let tick = TICK * k;
            while next + PACKET <= tick + TICK {
                out.push((tick, next));
                next += PACKET;
            }
        }
        out
    }

    #[test]
    fn tick_bursts_leave_evenly_after_the_first_window() {
        let start = Instant::now();
        let mut pacer = AudioPacer::new(Duration::from_millis(20));
        let mut offsets = Vec::new();
        for (at, pts) in burst_arrivals(4) {
            let now = start + at;
            let due = pacer.due(now, pts);
            assert!(due >= now, "a packet never leaves before it came");
            if at > WINDOW * 2 {
                offsets.push(due - start - pts);
            }
        }
        let min = offsets.iter().min().copied().unwrap_or_default();
        let max = offsets.iter().max().copied().unwrap_or_default();
        // Without pacing the offsets spread over 13.3 ms (−6.7 to +6.7 ms at 60 Hz with 10 ms
        // packets); paced, under a millisecond.
        assert!(max - min < Duration::from_millis(1), "{min:?}..{max:?}");
        // The hold learnt is that spread.
        let hold = pacer.hold();
        assert!(
            hold > Duration::from_millis(13) && hold < Duration::from_millis(14),
            "{hold:?}"
        );
    }

    #[test]
    fn the_hold_is_bounded_and_late_packets_leave_at_once() {
        let start = Instant::now();
        let mut pacer = AudioPacer::new(Duration::from_millis(5));
        let mut last = start;
        for (at, pts) in burst_arrivals(3) {
            last = start + at;
            let due = pacer.due(last, pts);
            // The first packet's offset is 0 and the earliest −6.7 ms: never held more than
            // the bound past an offset of 0.
            let bound = start + pts + Duration::from_millis(5);
            assert!(due <= last.max(bound), "{pts:?}");
        }
        // A packet 50 ms behind its media time leaves at once.
        let now = last + Duration::from_millis(50);
        assert_eq!(pacer.due(now, last - start), now);
    }

    #[test]
    fn a_clock_beyond_the_instant_range_sends_at_once() {
        let now = Instant::now();
        let mut pacer = AudioPacer::new(Duration::from_millis(20));
        let far = Duration::from_secs(u64::MAX / 4);
        assert_eq!(pacer.due(now, far), now);
    }

    #[test]
    fn a_session_that_falls_behind_is_followed() {
        // Arrivals drift 30 ms later within a window (a skip keeps them on the wall clock, a
        // slow stretch does not): later packets leave as they come, then pacing resumes on the
        // new offset.
        let start = Instant::now();
        let mut pacer = AudioPacer::new(Duration::from_millis(20));
        for i in 0..300u32 {
            let pts = PACKET * i;
            let lag = if i < 150 {
                Duration::ZERO
            } else {
                Duration::from_millis(30)
            };
            let now = start + pts + lag;
            let due = pacer.due(now, pts);
            assert!(due - now <= Duration::from_millis(20));
        }
    }
}
