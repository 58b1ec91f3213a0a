//! The delay detector both controllers read: one-way delay samples, smoothed, with the
//! least-squares slope of the last few ([`DelayTrend`]), and their minimum over a sliding window,
//! against which the latest sample is the queueing delay ([`DelayFloor`]).
//!
//! A queue building at the bottleneck shows as a rising one-way delay long before anything is
//! lost: the slope says whether (and how fast) it rises, the floor how much is queued already.
//! Samples may carry any constant offset (the two clocks are not synchronised, a series may
//! start from an arbitrary reference): the slope and the queueing delay use differences only.
//!
//! The code is shared; the parameters are each controller's own, because their samples differ
//! and each set is what that controller's tests pin (docs/rate.md has the same table):
//!
//! | | [`gcc`](crate::gcc) | [`frame`](crate::frame) |
//! |---|---|---|
//! | one sample per | arrival group (packets sent within 5 ms) | video frame (its last byte) |
//! | delay sample | delay variation accumulated since the first group | receive time − send time |
//! | x axis | arrival time, receiver's clock | send time, edge's clock |
//! | smoothing: share kept ([`TrendConfig::keep`]) | 0.9, starting from 0 | 0.7, starting from the first sample |
//! | window / slope from | 20 / 20 samples | 20 / 10 samples |
//! | slope read as | × min(deltas, 60) × 4 against an adaptive threshold | as is, against 0.1 ms/ms |
//! | all samples at one x | slope 0 (flat) | no slope (no verdict) |
//! | [`DelayFloor`] | not read | 5 s window; queue delay against 80 ms |
//!
//! Why they differ:
//! - GCC's series is libwebrtc's, parameters included: per arrival group, the accumulated delay
//!   variation (a variation of 3 s or more, a receiver clock that jumped, is left out of the
//!   sum, which a raw receive − send difference could not do), regressed over the receiver's
//!   arrival times and smoothed hard (0.9). Its slope is scaled by the deltas it spans and
//!   compared with a threshold that adapts to the path's jitter; the threshold's gains are
//!   tuned to that scaled, smoothed slope, so the smoothing cannot change alone. GCC has no
//!   absolute queue limit (a standing queue that does not grow is no overuse to it), so it
//!   keeps no floor.
//! - The frame controller has one sample per frame, the time the frame's last byte arrived,
//!   taken at the end of a whole frame's burst; it smooths less and answers from half a window
//!   so that a session has a verdict within its first few hundred milliseconds. Its x axis is
//!   the send time, on the edge's own clock, so the slope reads directly as how far the sender
//!   is above the bottleneck (0.1: the queue grows by 10 % of the time spent sending, a sender
//!   about 10 % too fast). A fixed threshold on that slope and a limit on the queueing delay
//!   stand in for GCC's adaptive threshold.

use std::collections::VecDeque;
use std::time::Duration;

/// How a controller reads its delay series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrendConfig {
    /// Share of the previous smoothed delay kept at each sample (exponential smoothing:
    /// `smoothed = keep × smoothed + (1 − keep) × sample`; 0 = no smoothing).
    pub keep: f64,
    /// Samples in the regression window.
    pub window: usize,
    /// Samples needed before [`DelayTrend::slope`] answers.
    pub min_samples: usize,
}

/// Smoothed one-way delay samples and the least-squares slope of the last
/// [`TrendConfig::window`] of them.
#[derive(Clone, Debug)]
pub struct DelayTrend {
    cfg: TrendConfig,
    smoothed: Option<f64>,
    /// (x ms, smoothed delay ms), oldest first.
    points: VecDeque<(f64, f64)>,
}

impl DelayTrend {
    /// A trend whose smoothing starts from its first sample.
    #[must_use]
    pub fn new(cfg: TrendConfig) -> Self {
        Self {
            cfg,
            smoothed: None,
            points: VecDeque::with_capacity(cfg.window.saturating_add(1)),
        }
    }

    /// A trend whose smoothing starts from `delay_ms`, as if a sample of it came before the
    /// first (GCC's series starts at the first group, whose variation is 0 by definition).
    #[must_use]
    pub fn starting_from(cfg: TrendConfig, delay_ms: f64) -> Self {
        Self {
            smoothed: Some(delay_ms),
            ..Self::new(cfg)
        }
    }

    /// Adds the one-way delay `delay_ms` seen at `x_ms` (any origin, not decreasing); returns the
    /// smoothed delay.
    pub fn push(&mut self, x_ms: f64, delay_ms: f64) -> f64 {
        let keep = self.cfg.keep;
        let smoothed = self
            .smoothed
            .map_or(delay_ms, |s| keep * s + (1.0 - keep) * delay_ms);
        self.smoothed = Some(smoothed);
        self.points.push_back((x_ms, smoothed));
        while self.points.len() > self.cfg.window {
            self.points.pop_front();
        }
        smoothed
    }

    /// The smoothed delay after the last sample, ms.
    #[must_use]
    pub fn smoothed_ms(&self) -> Option<f64> {
        self.smoothed
    }

    /// Samples in the window now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// No sample yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Enough samples for a slope ([`TrendConfig::min_samples`]).
    #[must_use]
    pub fn ready(&self) -> bool {
        !self.points.is_empty() && self.points.len() >= self.cfg.min_samples
    }

    /// The least-squares slope of the smoothed delay over x (ms per ms) once [`Self::ready`];
    /// `None` before, or when every sample in the window has the same x.
    #[must_use]
    pub fn slope(&self) -> Option<f64> {
        if !self.ready() {
            return None;
        }
        least_squares_slope(&self.points)
    }
}

/// The least-squares slope of `points` (x, y); `None` for no points or when all share one x.
#[must_use]
pub fn least_squares_slope<'a, I>(points: I) -> Option<f64>
where
    I: IntoIterator<Item = &'a (f64, f64)>,
    I::IntoIter: Clone,
{
    let points = points.into_iter();
    let (n, sx, sy) = points
        .clone()
        .fold((0usize, 0.0, 0.0), |(n, a, b), (x, y)| {
            (n + 1, a + x, b + y)
        });
    if n == 0 {
        return None;
    }
    #[allow(clippy::cast_precision_loss, reason = "a window of samples")]
    let n = n as f64;
    let (mx, my) = (sx / n, sy / n);
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in points {
        num += (x - mx) * (y - my);
        den += (x - mx) * (x - mx);
    }
    (den > 0.0).then(|| num / den)
}

/// The lowest one-way delay over a sliding window of time, and the latest: their difference is
/// the queueing delay (the propagation delay and the clocks' offset are in both and cancel).
#[derive(Clone, Debug)]
pub struct DelayFloor {
    window_us: u64,
    /// (µs, delay µs) with increasing delays: the front is the window's minimum.
    mins: VecDeque<(u64, i64)>,
    last: Option<i64>,
}

impl DelayFloor {
    /// A floor over the last `window` (the minimum is forgotten after that, so a path that got
    /// longer is not read as a queue for ever).
    #[must_use]
    pub fn new(window: Duration) -> Self {
        Self {
            window_us: u64::try_from(window.as_micros()).unwrap_or(u64::MAX),
            mins: VecDeque::new(),
            last: None,
        }
    }

    /// Adds the one-way delay `delay_us` of a sample taken at `at_us` (any origin, not
    /// decreasing).
    pub fn push(&mut self, at_us: u64, delay_us: i64) {
        self.last = Some(delay_us);
        while self.mins.back().is_some_and(|&(_, d)| d >= delay_us) {
            self.mins.pop_back();
        }
        self.mins.push_back((at_us, delay_us));
        while self
            .mins
            .front()
            .is_some_and(|&(t, _)| t.saturating_add(self.window_us) < at_us)
            && self.mins.len() > 1
        {
            self.mins.pop_front();
        }
    }

    /// The lowest delay in the window, µs.
    #[must_use]
    pub fn min_us(&self) -> Option<i64> {
        self.mins.front().map(|&(_, d)| d)
    }

    /// The latest delay, µs.
    #[must_use]
    pub fn last_us(&self) -> Option<i64> {
        self.last
    }

    /// The latest delay above the window's minimum (zero before any sample).
    #[must_use]
    pub fn queue_delay(&self) -> Duration {
        match (self.last, self.min_us()) {
            (Some(d), Some(min)) => {
                Duration::from_micros(u64::try_from(d.saturating_sub(min)).unwrap_or(0))
            }
            _ => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: TrendConfig = TrendConfig {
        keep: 0.0,
        window: 5,
        min_samples: 3,
    };

    #[test]
    fn the_slope_of_a_line_is_its_gradient_and_offsets_do_not_matter() {
        let mut t = DelayTrend::new(RAW);
        for i in 0..10 {
            let x = f64::from(i) * 16.0;
            t.push(x, 1e9 + 0.25 * x);
            if i < 2 {
                assert_eq!(t.slope(), None, "not ready at {i}");
            }
        }
        assert_eq!(t.len(), 5, "the window keeps the last 5");
        let s = t.slope().expect("a slope");
        assert!((s - 0.25).abs() < 1e-9, "{s}");
    }

    #[test]
    fn smoothing_keeps_its_share_and_may_start_from_a_given_delay() {
        let cfg = TrendConfig {
            keep: 0.9,
            window: 20,
            min_samples: 20,
        };
        let mut from_first = DelayTrend::new(cfg);
        assert_eq!(from_first.push(0.0, 10.0), 10.0);
        let mut from_zero = DelayTrend::starting_from(cfg, 0.0);
        let s = from_zero.push(0.0, 10.0);
        assert!((s - 1.0).abs() < 1e-12, "{s}");
        assert_eq!(from_zero.smoothed_ms(), Some(s));
    }

    #[test]
    fn samples_at_one_instant_have_no_slope() {
        let mut t = DelayTrend::new(RAW);
        for d in [1.0, 5.0, 9.0] {
            t.push(7.0, d);
        }
        assert!(t.ready());
        assert_eq!(t.slope(), None);
        assert_eq!(least_squares_slope(&[]), None);
    }

    #[test]
    fn the_floor_slides_and_the_queue_delay_is_above_it() {
        let mut f = DelayFloor::new(Duration::from_secs(1));
        assert_eq!(f.queue_delay(), Duration::ZERO);
        f.push(0, 5_000);
        f.push(100_000, 25_000);
        assert_eq!(f.queue_delay(), Duration::from_millis(20));
        assert_eq!(f.min_us(), Some(5_000));
        // A second later the 5 ms sample has left the window: 25 ms is the floor now.
        f.push(1_050_000, 30_000);
        assert_eq!(f.min_us(), Some(25_000));
        assert_eq!(f.queue_delay(), Duration::from_millis(5));
        assert_eq!(f.last_us(), Some(30_000));
    }
}
