//! Per-stage latency recording: p50/p95/p99 over a bounded window of samples.
//!
//! The window is allocated once, so recording a sample on the frame path never allocates;
//! percentiles are computed on demand (a copy and a sort), off the frame path.

use std::fmt;
use std::time::Duration;

/// The stages of the edge's media path, in the order a frame passes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Applying due inputs and stepping the game one tick.
    Tick,
    /// Vulkan render of the scene, written as NV12 by the same compute pass.
    Render,
    /// Copying NV12 from mapped GPU memory into the encoder's input buffer.
    Readback,
    /// Encoder push → access unit out.
    Encode,
    /// Start of the tick → access unit out.
    Total,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 5] = [
        Stage::Tick,
        Stage::Render,
        Stage::Readback,
        Stage::Encode,
        Stage::Total,
    ];

    /// Lower-case name used in tables and metric labels.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Stage::Tick => "tick",
            Stage::Render => "render",
            Stage::Readback => "readback",
            Stage::Encode => "encode",
            Stage::Total => "total",
        }
    }
}

/// How long one frame spent in each stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameTimings {
    /// See [`Stage::Tick`].
    pub tick: Duration,
    /// See [`Stage::Render`].
    pub render: Duration,
    /// See [`Stage::Readback`].
    pub readback: Duration,
    /// See [`Stage::Encode`].
    pub encode: Duration,
    /// See [`Stage::Total`].
    pub total: Duration,
}

impl FrameTimings {
    /// The time spent in `stage`.
    #[must_use]
    pub fn get(&self, stage: Stage) -> Duration {
        match stage {
            Stage::Tick => self.tick,
            Stage::Render => self.render,
            Stage::Readback => self.readback,
            Stage::Encode => self.encode,
            Stage::Total => self.total,
        }
    }
}

/// A bounded window of latency samples (microseconds) for one quantity.
#[derive(Clone, Debug)]
pub struct Window {
    samples: Vec<u32>,
    next: usize,
    filled: bool,
}

impl Window {
    /// A window holding the latest `capacity` samples (at least 1).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            samples: vec![0; capacity.max(1)],
            next: 0,
            filled: false,
        }
    }

    /// Records one sample; the oldest is overwritten once the window is full.
    pub fn record(&mut self, d: Duration) {
        let us = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        self.samples[self.next] = us;
        self.next += 1;
        if self.next == self.samples.len() {
            self.next = 0;
            self.filled = true;
        }
    }

    /// Records every sample `other` holds.
    pub fn merge(&mut self, other: &Window) {
        for &us in &other.samples[..other.len()] {
            self.record(Duration::from_micros(u64::from(us)));
        }
    }

    /// Samples held.
    #[must_use]
    pub fn len(&self) -> usize {
        if self.filled {
            self.samples.len()
        } else {
            self.next
        }
    }

    /// Whether no sample was recorded yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// p50/p95/p99 (nearest rank) and the maximum of the samples held.
    #[must_use]
    pub fn summary(&self) -> Summary {
        let mut sorted = self.samples[..self.len()].to_vec();
        sorted.sort_unstable();
        Summary::from_sorted(&sorted)
    }
}

/// Percentiles of a set of latency samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest sample.
    pub max: Duration,
}

impl Summary {
    /// Nearest-rank percentiles of samples in microseconds, sorted ascending.
    #[must_use]
    pub(crate) fn from_sorted(sorted_us: &[u32]) -> Self {
        let pick = |q: f64| {
            nearest_rank(sorted_us, q)
                .map_or(Duration::ZERO, |us| Duration::from_micros(u64::from(us)))
        };
        Self {
            count: sorted_us.len(),
            p50: pick(0.50),
            p95: pick(0.95),
            p99: pick(0.99),
            max: sorted_us
                .last()
                .map_or(Duration::ZERO, |&m| Duration::from_micros(u64::from(m))),
        }
    }
}

/// One window per stage.
#[derive(Clone, Debug)]
pub struct StageStats {
    windows: Vec<(Stage, Window)>,
}

impl StageStats {
    /// Windows of `capacity` samples for every stage.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            windows: Stage::ALL
                .iter()
                .map(|&s| (s, Window::new(capacity)))
                .collect(),
        }
    }

    /// Records every stage of one frame.
    pub fn record(&mut self, t: &FrameTimings) {
        for (stage, window) in &mut self.windows {
            window.record(t.get(*stage));
        }
    }

    /// Adds every sample `other` holds (for tables over several sessions).
    pub fn merge(&mut self, other: &StageStats) {
        for ((_, mine), (_, theirs)) in self.windows.iter_mut().zip(&other.windows) {
            mine.merge(theirs);
        }
    }

    /// The summary of one stage.
    #[must_use]
    pub fn summary(&self, stage: Stage) -> Summary {
        self.windows
            .iter()
            .find(|(s, _)| *s == stage)
            .map(|(_, w)| w.summary())
            .unwrap_or_default()
    }

    /// A printable table of every stage: `stage  p50  p95  p99  max` in milliseconds.
    #[must_use]
    pub fn table(&self) -> StageTable {
        StageTable(Stage::ALL.map(|s| (s, self.summary(s))))
    }
}

/// The per-stage latency table, printable with `{}`.
#[derive(Clone, Copy, Debug)]
pub struct StageTable(pub [(Stage, Summary); 5]);

/// The nearest-rank `q`-quantile (0 < `q` ≤ 1) of `sorted` (ascending): the value at rank
/// ceil(q * n), clamped to the slice; `None` when there are no values.
#[must_use]
pub fn nearest_rank<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "sample counts are far below 2^52 and the rank is clamped"
    )]
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Milliseconds with two decimals.
#[must_use]
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl fmt::Display for StageTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<10} {:>9} {:>9} {:>9} {:>9}",
            "stage", "p50 ms", "p95 ms", "p99 ms", "max ms"
        )?;
        for (stage, s) in &self.0 {
            writeln!(
                f,
                "{:<10} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                stage.name(),
                ms(s.p50),
                ms(s.p95),
                ms(s.p99),
                ms(s.max)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut w = Window::new(1000);
        for i in 1..=100 {
            w.record(Duration::from_micros(i));
        }
        let s = w.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.p50, Duration::from_micros(50));
        assert_eq!(s.p95, Duration::from_micros(95));
        assert_eq!(s.p99, Duration::from_micros(99));
        assert_eq!(s.max, Duration::from_micros(100));
    }

    #[test]
    fn window_keeps_the_latest_samples() {
        let mut w = Window::new(4);
        for i in 1..=10 {
            w.record(Duration::from_micros(i));
        }
        assert_eq!(w.len(), 4);
        assert_eq!(w.summary().p50, Duration::from_micros(8));
        assert_eq!(w.summary().max, Duration::from_micros(10));
    }

    #[test]
    fn empty_window_is_zero() {
        let w = Window::new(8);
        assert!(w.is_empty());
        assert_eq!(w.summary(), Summary::default());
    }
}
