//! The `_1s` rates in [`Stats`](crate::Stats): sliding-window sums, sans-IO (every call takes
//! `now`, so tests drive them with made-up instants).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The window of the rates in [`Stats`](crate::Stats) whose names end in `_1s`: they count what
/// happened in the last second before [`Session::stats`](crate::Session::stats) was called,
/// `(now - 1 s, now]`, so they fall to zero within a second of a stall instead of fading like a
/// session-long average.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// The windows behind the `_1s` rates, each [`RATE_WINDOW`] long.
#[derive(Debug)]
pub(crate) struct Rates {
    /// Pictures decoded (1 each).
    pub(crate) decoded: RateWindow,
    /// The decode time of those pictures, ns.
    pub(crate) decode_ns: RateWindow,
    /// Bytes of the frame streams received whole (header and payload).
    pub(crate) received_bytes: RateWindow,
    /// Frames handed to the application (1 each).
    pub(crate) delivered: RateWindow,
    /// Frames skipped.
    pub(crate) skipped: RateWindow,
}

impl Default for Rates {
    fn default() -> Self {
        Self {
            decoded: RateWindow::new(RATE_WINDOW),
            decode_ns: RateWindow::new(RATE_WINDOW),
            received_bytes: RateWindow::new(RATE_WINDOW),
            delivered: RateWindow::new(RATE_WINDOW),
            skipped: RateWindow::new(RATE_WINDOW),
        }
    }
}

/// The `_1s` fields of [`Stats`](crate::Stats), defined there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rates1s {
    pub(crate) decoded_fps: f64,
    pub(crate) received_kbps: f64,
    pub(crate) skipped_frame_ratio: f64,
    pub(crate) decode_time: Duration,
}

impl Rates {
    /// The rates over the window ending at `now`.
    pub(crate) fn at(&mut self, now: Instant) -> Rates1s {
        let decoded = self.decoded.sum(now);
        let skipped = self.skipped.sum(now);
        let settled = self.delivered.sum(now) + skipped;
        #[allow(
            clippy::cast_precision_loss,
            reason = "a second's frames fit f64 exactly"
        )]
        Rates1s {
            decoded_fps: self.decoded.per_second(now),
            received_kbps: self.received_bytes.per_second(now) * 8.0 / 1000.0,
            skipped_frame_ratio: if settled == 0 {
                0.0
            } else {
                skipped as f64 / settled as f64
            },
            decode_time: Duration::from_nanos(self.decode_ns.sum(now) / decoded.max(1)),
        }
    }
}

/// Amounts recorded at instants; sums those recorded in the window `(now - span, now]`.
///
/// Keeps one entry per recorded event younger than `span` (about 60 a second for frames), in a
/// ring that stops growing once it holds a window's worth: no allocation per event after that.
#[derive(Debug)]
pub(crate) struct RateWindow {
    span: Duration,
    /// `(when, amount)`, in the order recorded.
    events: VecDeque<(Instant, u64)>,
    /// The sum of `events`' amounts.
    sum: u64,
}

impl RateWindow {
    pub(crate) fn new(span: Duration) -> Self {
        Self {
            span,
            events: VecDeque::new(),
            sum: 0,
        }
    }

    /// Records `amount` (frames, bytes, nanoseconds) at `at`.
    pub(crate) fn record(&mut self, at: Instant, amount: u64) {
        self.expire(at);
        self.events.push_back((at, amount));
        self.sum = self.sum.saturating_add(amount);
    }

    /// The sum of the amounts recorded less than `span` before `now` (recorded after `now`
    /// counts too: another thread's event may carry a later instant than the caller's `now`).
    pub(crate) fn sum(&mut self, now: Instant) -> u64 {
        self.expire(now);
        self.sum
    }

    /// [`RateWindow::sum`] per second of `span`.
    pub(crate) fn per_second(&mut self, now: Instant) -> f64 {
        #[allow(
            clippy::cast_precision_loss,
            reason = "a second's bytes fit f64 exactly"
        )]
        let sum = self.sum(now) as f64;
        sum / self.span.as_secs_f64()
    }

    /// Drops the events `span` or more older than `now`, oldest first.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, amount)) = self.events.front() {
            if now.saturating_duration_since(at) < self.span {
                break;
            }
            self.events.pop_front();
            self.sum -= amount;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_stats_rates_cover_the_last_second() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut r = Rates::default();
        assert_eq!(
            r.at(t0),
            Rates1s {
                decoded_fps: 0.0,
                received_kbps: 0.0,
                skipped_frame_ratio: 0.0,
                decode_time: Duration::ZERO
            }
        );
        // 60 fps: 2 000 bytes a frame, 2 ms to decode; in the first second every fourth frame
        // is skipped (after decoding: the application was slow), in the second none.
        let play = |r: &mut Rates, frames: std::ops::Range<u64>, skip_every: u64| {
            for i in frames {
                let at = ms(i * 1000 / 60);
                r.received_bytes.record(at, 2000);
                r.decoded.record(at, 1);
                r.decode_ns.record(at, 2_000_000);
                if i % skip_every == 0 {
                    r.skipped.record(at, 1);
                } else {
                    r.delivered.record(at, 1);
                }
            }
        };
        play(&mut r, 0..60, 4);
        let first = r.at(ms(999));
        assert!((first.decoded_fps - 60.0).abs() < 1e-9, "{first:?}");
        assert!((first.received_kbps - 960.0).abs() < 1e-9, "{first:?}");
        assert!((first.skipped_frame_ratio - 0.25).abs() < 1e-9, "{first:?}");
        assert_eq!(first.decode_time, Duration::from_millis(2));
        play(&mut r, 60..120, u64::MAX);
        // The second second alone: nothing skipped, whatever the first one did.
        let second = r.at(ms(1999));
        assert!((second.decoded_fps - 60.0).abs() < 1e-9, "{second:?}");
        assert!(
            second.skipped_frame_ratio.abs() < f64::EPSILON,
            "{second:?}"
        );
        // A gap skipped to a keyframe: 9 frames at once, 1 delivered after it.
        r.skipped.record(ms(2100), 9);
        r.delivered.record(ms(2100), 1);
        let gap = r.at(ms(3050));
        assert!((gap.skipped_frame_ratio - 0.9).abs() < 1e-9, "{gap:?}");
        assert!(gap.decoded_fps.abs() < f64::EPSILON, "{gap:?}");
        assert_eq!(gap.decode_time, Duration::ZERO);
    }

    #[test]
    fn counts_what_is_younger_than_the_span() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut w = RateWindow::new(SECOND);
        assert_eq!(w.sum(t0), 0);
        assert!(w.per_second(t0).abs() < f64::EPSILON);
        // 60 frames, one every 1000/60 ms, from t0 on.
        for i in 0..60u64 {
            w.record(t0 + SECOND * u32::try_from(i).unwrap() / 60, 1);
        }
        assert_eq!(w.sum(ms(999)), 60);
        // At t0 + 1 s the first frame (exactly 1 s old) has left the window: (now - 1 s, now].
        assert_eq!(w.sum(ms(1000)), 59);
        assert!((w.per_second(ms(1000)) - 59.0).abs() < 1e-9);
        // Half a second later, the frames of the first half second are gone, the one at
        // exactly 500 ms too.
        assert_eq!(w.sum(ms(1500)), 29);
        // Nothing recorded for a second: zero, not the session's average.
        assert_eq!(w.sum(ms(2000)), 0);
        assert!(w.per_second(ms(5000)).abs() < f64::EPSILON);
    }

    #[test]
    fn sums_amounts_and_a_rate_follows_the_last_second_only() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut w = RateWindow::new(SECOND);
        // 10 s at 1 000 bytes per 10 ms (800 kbit/s), then 1 s at 250 bytes per 10 ms.
        for i in 0..1000 {
            w.record(ms(i * 10), 1000);
        }
        assert!((w.per_second(ms(9995)) * 8.0 / 1000.0 - 800.0).abs() < 1e-9);
        for i in 1000..1100 {
            w.record(ms(i * 10), 250);
        }
        // A session-long average would say ~745 kbit/s; the last second is all at 200.
        assert!((w.per_second(ms(10_995)) * 8.0 / 1000.0 - 200.0).abs() < 1e-9);
    }

    #[test]
    fn events_later_than_now_count_and_the_ring_stays_small() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(SECOND);
        w.record(t0 + Duration::from_millis(5), 3);
        // Another thread's event stamped after the reader took `now`.
        assert_eq!(w.sum(t0), 3);
        for i in 0..10_000u32 {
            w.record(t0 + Duration::from_millis(u64::from(i)), 1);
        }
        assert!(w.events.len() <= 1000, "{} events kept", w.events.len());
        assert_eq!(w.sum(t0 + Duration::from_millis(9999)), 1000);
    }
}
