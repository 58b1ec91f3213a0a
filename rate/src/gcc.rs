//! A delay-based congestion controller over transport-wide feedback, in the style of Google
//! Congestion Control (draft-ietf-rmcat-gcc-02, as libwebrtc runs it today): the sender's
//! WebRTC bitrate.
//!
//! Sans-IO: the caller hands in, per feedback, the packets the receiver reported on (when each
//! left, when it arrived on the receiver's clock or that it was lost, its size), in send order,
//! with `now`; [`Gcc::target_bps`] is the estimate. No clock, no thread: a feedback sequence
//! gives one bitrate trajectory, which is what the tests pin.
//!
//! The pipeline:
//!
//! ```text
//! packet results ─▶ arrival groups (5 ms bursts) ─▶ trendline of the queuing delay
//!                ─▶ overuse detector (adaptive threshold) ─▶ AIMD rate control ─┐
//!                ─▶ acknowledged throughput ───────────────────────────────────┤─▶ min ─▶ target
//!                ─▶ loss fraction ─▶ loss-based cap ───────────────────────────┘
//! ```
//!
//! Why the trendline and not a filtered per-group gradient compared with the threshold alone:
//! a sender only a little above the bottleneck grows the queue by a fraction of a millisecond
//! per group, far below any jitter threshold, yet without end. The trendline's slope is scaled
//! by the number of deltas it spans (up to 60) before the comparison, as libwebrtc does, so a
//! slow but steady growth reads as overuse within a second.
//!
//! The trendline is the shared delay detector, [`crate::delay::DelayTrend`], read with GCC's own
//! parameters (its module docs say which differ from the frame controller's, and why).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::delay::{DelayTrend, TrendConfig};

/// Packets sent within this of a group's first belong to its burst.
pub const BURST: Duration = Duration::from_millis(5);
/// Points in the trendline's regression window.
pub const TRENDLINE_WINDOW: usize = 20;
/// Smoothing of the accumulated delay before the regression: the share of the smoothed value
/// kept at each group.
const SMOOTHING: f64 = 0.9;
/// The slope is scaled by the deltas it spans (up to this many) and this gain.
const TREND_GAIN: f64 = 4.0;
const MAX_DELTAS: f64 = 60.0;
/// The adaptive threshold: start, bounds, and gains up and down (per ms).
const THRESHOLD_START_MS: f64 = 12.5;
const THRESHOLD_RANGE_MS: (f64, f64) = (6.0, 600.0);
const THRESHOLD_UP: f64 = 0.0087;
const THRESHOLD_DOWN: f64 = 0.039;
/// A trend this far above the threshold is an outlier the threshold does not chase.
const THRESHOLD_OUTLIER_MS: f64 = 15.0;
/// Overuse must last this long (and two readings) before the rate is cut.
const OVERUSE_TIME: Duration = Duration::from_millis(10);
/// Multiplicative decrease: the new target is this share of what the receiver got.
pub const DECREASE: f64 = 0.85;
/// Multiplicative increase per second while far from the last known capacity.
pub const INCREASE_PER_SECOND: f64 = 1.08;
/// Decreases are at least this far apart (the feedback of a cut needs a round trip to show).
const DECREASE_INTERVAL: Duration = Duration::from_millis(200);
/// Throughput is measured over this window of arrivals.
const THROUGHPUT_WINDOW: Duration = Duration::from_millis(500);
/// Loss below this is noise: the loss cap rises; above [`HIGH_LOSS`] it falls.
pub const LOW_LOSS: f64 = 0.02;
/// Loss above this cuts the loss-based cap by half the loss fraction.
pub const HIGH_LOSS: f64 = 0.10;
/// Loss is judged over at least this long and this many packets.
const LOSS_WINDOW: Duration = Duration::from_millis(200);
const LOSS_MIN_PACKETS: usize = 20;
/// Loss-based cuts are at least this far apart.
const LOSS_DECREASE_INTERVAL: Duration = Duration::from_millis(300);

/// What the receiver said about one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketResult {
    /// When it left this sender.
    pub departure: Instant,
    /// When it arrived, on the receiver's clock (only differences mean anything); `None` if lost.
    pub arrival: Option<Duration>,
    /// Bytes on the wire.
    pub size: usize,
}

/// What the delay detector believes about the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Usage {
    /// The queue is steady.
    #[default]
    Normal,
    /// The queue is growing: sending above the bottleneck.
    Over,
    /// The queue is draining.
    Under,
}

#[derive(Clone, Copy, Debug)]
struct Group {
    first_departure: Instant,
    last_departure: Instant,
    last_arrival: Duration,
}

/// Groups packets into send bursts and turns consecutive groups into delay variations.
#[derive(Debug, Default)]
struct ArrivalGroups {
    current: Option<Group>,
    previous: Option<Group>,
}

impl ArrivalGroups {
    /// Feeds an arrived packet; returns `(send delta, arrival delta, arrival)` in ms when a group
    /// closed and had a predecessor.
    fn add(&mut self, departure: Instant, arrival: Duration) -> Option<(f64, f64, Duration)> {
        let Some(cur) = &mut self.current else {
            self.current = Some(Group {
                first_departure: departure,
                last_departure: departure,
                last_arrival: arrival,
            });
            return None;
        };
        if departure < cur.first_departure {
            // Reordered in send order (cannot happen with one sender's feedback): skip it.
            return None;
        }
        if departure.duration_since(cur.first_departure) <= BURST {
            cur.last_departure = cur.last_departure.max(departure);
            cur.last_arrival = cur.last_arrival.max(arrival);
            return None;
        }
        let closed = *cur;
        let out = self.previous.and_then(|prev| {
            let send = closed
                .last_departure
                .checked_duration_since(prev.last_departure)?
                .as_secs_f64()
                * 1e3;
            let recv = (closed.last_arrival.as_secs_f64() - prev.last_arrival.as_secs_f64()) * 1e3;
            // A receiver clock that jumped (or garbage): restart the groups rather than read a
            // queue from it.
            (recv.abs() < 3_000.0).then_some((send, recv, closed.last_arrival))
        });
        self.previous = Some(closed);
        self.current = Some(Group {
            first_departure: departure,
            last_departure: departure,
            last_arrival: arrival,
        });
        out
    }
}

/// How GCC reads its delay series (the shared detector, [`crate::delay`], with libwebrtc's
/// parameters): smoothed keeping 0.9, a slope only once the window is full.
const TREND: TrendConfig = TrendConfig {
    keep: SMOOTHING,
    window: TRENDLINE_WINDOW,
    min_samples: TRENDLINE_WINDOW,
};

/// The trend of the queuing delay: least-squares slope of the smoothed accumulated delay
/// over the last [`TRENDLINE_WINDOW`] groups.
#[derive(Debug)]
struct Trendline {
    accumulated_ms: f64,
    deltas: u32,
    first_arrival: Option<Duration>,
    delay: DelayTrend,
}

impl Default for Trendline {
    fn default() -> Self {
        Self {
            accumulated_ms: 0.0,
            deltas: 0,
            first_arrival: None,
            // The first group is the reference: its accumulated variation is 0.
            delay: DelayTrend::starting_from(TREND, 0.0),
        }
    }
}

impl Trendline {
    /// Adds one group's delay variation; returns the modified trend once the window is full.
    fn add(&mut self, send_ms: f64, recv_ms: f64, arrival: Duration) -> Option<f64> {
        self.deltas = self.deltas.saturating_add(1);
        self.accumulated_ms += recv_ms - send_ms;
        let first = *self.first_arrival.get_or_insert(arrival);
        let x = arrival.saturating_sub(first).as_secs_f64() * 1e3;
        self.delay.push(x, self.accumulated_ms);
        if !self.delay.ready() {
            return None;
        }
        // A window of groups that all arrived at once has no slope: read it as flat.
        let slope = self.delay.slope().unwrap_or(0.0);
        Some(slope * f64::from(self.deltas).min(MAX_DELTAS) * TREND_GAIN)
    }
}

/// Compares the trend with a threshold that adapts to the path's jitter.
#[derive(Debug)]
struct Detector {
    threshold_ms: f64,
    last_update: Option<Instant>,
    over_since: Option<Instant>,
    over_count: u32,
    previous_trend: f64,
    usage: Usage,
}

impl Default for Detector {
    fn default() -> Self {
        Self {
            threshold_ms: THRESHOLD_START_MS,
            last_update: None,
            over_since: None,
            over_count: 0,
            previous_trend: 0.0,
            usage: Usage::Normal,
        }
    }
}

impl Detector {
    fn update(&mut self, now: Instant, trend: f64) -> Usage {
        if trend > self.threshold_ms {
            let since = *self.over_since.get_or_insert(now);
            self.over_count += 1;
            if now.duration_since(since) >= OVERUSE_TIME
                && self.over_count > 1
                && trend >= self.previous_trend
            {
                self.usage = Usage::Over;
            }
        } else {
            self.over_since = None;
            self.over_count = 0;
            self.usage = if trend < -self.threshold_ms {
                Usage::Under
            } else {
                Usage::Normal
            };
        }
        self.previous_trend = trend;
        // The threshold follows |trend| (up slowly, down faster), but not to an outlier.
        let elapsed_ms = self
            .last_update
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64() * 1e3)
            .min(100.0);
        self.last_update = Some(now);
        let magnitude = trend.abs();
        if magnitude <= self.threshold_ms + THRESHOLD_OUTLIER_MS {
            let k = if magnitude < self.threshold_ms {
                THRESHOLD_DOWN
            } else {
                THRESHOLD_UP
            };
            self.threshold_ms = (self.threshold_ms
                + k * (magnitude - self.threshold_ms) * elapsed_ms)
                .clamp(THRESHOLD_RANGE_MS.0, THRESHOLD_RANGE_MS.1);
        }
        self.usage
    }
}

/// The acknowledged throughput over the last [`THROUGHPUT_WINDOW`] of arrivals.
#[derive(Debug, Default)]
struct Throughput {
    arrivals: VecDeque<(Duration, usize)>,
    bytes: usize,
}

impl Throughput {
    fn add(&mut self, arrival: Duration, size: usize) {
        self.arrivals.push_back((arrival, size));
        self.bytes += size;
        while let Some(&(t, s)) = self.arrivals.front() {
            if arrival.saturating_sub(t) <= THROUGHPUT_WINDOW {
                break;
            }
            self.arrivals.pop_front();
            self.bytes -= s;
        }
    }

    fn bps(&self) -> Option<f64> {
        let (first, last) = (self.arrivals.front()?.0, self.arrivals.back()?.0);
        let span = last.saturating_sub(first).as_secs_f64();
        #[allow(clippy::cast_precision_loss, reason = "bytes in half a second")]
        (span >= 0.1).then(|| self.bytes as f64 * 8.0 / span)
    }
}

/// Google-style congestion control: see the [module docs](self).
#[derive(Debug)]
pub struct Gcc {
    min_bps: f64,
    max_bps: f64,
    groups: ArrivalGroups,
    trendline: Trendline,
    detector: Detector,
    throughput: Throughput,
    /// The delay-based (AIMD) target.
    delay_bps: f64,
    /// Rate-control state: after a cut, hold until the queue reads normal again.
    holding: bool,
    last_increase: Option<Instant>,
    last_decrease: Option<Instant>,
    /// Mean and variance (normalised by the mean) of the throughput at past cuts: the link's
    /// capacity as far as it is known. Near it the increase is additive, far from it
    /// multiplicative.
    capacity: Option<(f64, f64)>,
    /// The loss-based cap and its window.
    loss_bps: f64,
    loss_window: (Option<Instant>, usize, usize),
    last_loss_change: Option<Instant>,
    last_loss: f64,
}

impl Gcc {
    /// A controller starting at `start_bps`, held within `min_bps..=max_bps`.
    #[must_use]
    pub fn new(start_bps: f64, min_bps: f64, max_bps: f64) -> Self {
        let start = start_bps.clamp(min_bps, max_bps);
        Self {
            min_bps,
            max_bps,
            groups: ArrivalGroups::default(),
            trendline: Trendline::default(),
            detector: Detector::default(),
            throughput: Throughput::default(),
            delay_bps: start,
            holding: false,
            last_increase: None,
            last_decrease: None,
            capacity: None,
            loss_bps: max_bps,
            loss_window: (None, 0, 0),
            last_loss_change: None,
            last_loss: 0.0,
        }
    }

    /// The estimate: the lower of the delay-based and loss-based targets, bit/s.
    #[must_use]
    pub fn target_bps(&self) -> f64 {
        self.delay_bps
            .min(self.loss_bps)
            .clamp(self.min_bps, self.max_bps)
    }

    /// The delay-based half, bit/s.
    #[must_use]
    pub fn delay_based_bps(&self) -> f64 {
        self.delay_bps
    }

    /// The loss-based half, bit/s.
    #[must_use]
    pub fn loss_based_bps(&self) -> f64 {
        self.loss_bps
    }

    /// What the delay detector believes now.
    #[must_use]
    pub fn usage(&self) -> Usage {
        self.detector.usage
    }

    /// The acknowledged throughput, bit/s, once half a second of arrivals is known.
    #[must_use]
    pub fn throughput_bps(&self) -> Option<f64> {
        self.throughput.bps()
    }

    /// The loss fraction of the last complete loss window.
    #[must_use]
    pub fn loss(&self) -> f64 {
        self.last_loss
    }

    /// Folds in one feedback: `packets` in send order, received at `now`.
    pub fn on_feedback(&mut self, now: Instant, packets: &[PacketResult]) {
        if packets.is_empty() {
            return;
        }
        let mut lost = 0;
        for p in packets {
            let Some(arrival) = p.arrival else {
                lost += 1;
                continue;
            };
            self.throughput.add(arrival, p.size);
            if let Some((send, recv, at)) = self.groups.add(p.departure, arrival)
                && let Some(trend) = self.trendline.add(send, recv, at)
            {
                self.detector.update(now, trend);
            }
        }
        self.rate_control(now);
        self.loss_control(now, lost, packets.len());
    }

    fn rate_control(&mut self, now: Instant) {
        let received = self.throughput.bps();
        match self.detector.usage {
            Usage::Over => {
                let due = self
                    .last_decrease
                    .is_none_or(|t| now.duration_since(t) >= DECREASE_INTERVAL);
                if due {
                    let basis = received.unwrap_or(self.delay_bps);
                    let cut = (basis * DECREASE).min(self.delay_bps);
                    if let Some(r) = received {
                        self.learn_capacity(r);
                    }
                    self.delay_bps = cut.clamp(self.min_bps, self.max_bps);
                    self.last_decrease = Some(now);
                }
                self.holding = true;
                self.last_increase = None;
            }
            Usage::Under => {
                // The queue drains: let it, without raising the rate.
                self.holding = true;
                self.last_increase = None;
            }
            Usage::Normal => {
                if self.holding {
                    self.holding = false;
                    self.last_increase = Some(now);
                    return;
                }
                let elapsed = self
                    .last_increase
                    .map_or(Duration::ZERO, |t| now.duration_since(t))
                    .min(Duration::from_secs(1));
                self.last_increase = Some(now);
                let rate = self.delay_bps;
                let near_capacity = match self.capacity {
                    Some((mean, var)) => {
                        let sd = (var * mean).sqrt();
                        if rate > mean + 3.0 * sd {
                            // Above anything measured: the capacity moved; forget it.
                            self.capacity = None;
                            false
                        } else {
                            true
                        }
                    }
                    None => false,
                };
                let mut next = if near_capacity {
                    // About one packet per response time (~200 ms).
                    rate + (1200.0 * 8.0 * 5.0 * elapsed.as_secs_f64()).max(0.0)
                } else {
                    rate * INCREASE_PER_SECOND.powf(elapsed.as_secs_f64())
                };
                // Never far above what the path has been seen to carry (but the cap never lowers
                // the rate: an encoder idling on a still scene is not a narrow path).
                if let Some(r) = received {
                    let cap = 1.5 * r + 10_000.0;
                    if next > cap {
                        next = rate.max(cap).min(next);
                    }
                }
                self.delay_bps = next.clamp(self.min_bps, self.max_bps);
            }
        }
    }

    fn learn_capacity(&mut self, received: f64) {
        const ALPHA: f64 = 0.05;
        self.capacity = Some(match self.capacity {
            None => (received, 0.4),
            Some((mean, var)) => {
                let mean = if (received - mean).abs() > 3.0 * (var * mean).sqrt() {
                    // Far from what was known: start over from this measurement.
                    received
                } else {
                    (1.0 - ALPHA) * mean + ALPHA * received
                };
                let norm = mean.max(1.0);
                let err = mean - received;
                let var = ((1.0 - ALPHA) * var + ALPHA * err * err / norm).clamp(0.4, 2.5);
                (mean, var)
            }
        });
    }

    fn loss_control(&mut self, now: Instant, lost: usize, total: usize) {
        let (start, l, t) = &mut self.loss_window;
        let started = *start.get_or_insert(now);
        *l += lost;
        *t += total;
        if now.duration_since(started) < LOSS_WINDOW || *t < LOSS_MIN_PACKETS {
            return;
        }
        #[allow(clippy::cast_precision_loss, reason = "packet counts")]
        let loss = *l as f64 / *t as f64;
        self.loss_window = (Some(now), 0, 0);
        self.last_loss = loss;
        let since = self
            .last_loss_change
            .map_or(Duration::from_secs(1), |t| now.duration_since(t));
        if loss < LOW_LOSS {
            // Loss is not the limit: the cap rises as the delay half does, from where it is.
            let grown = self.loss_bps * INCREASE_PER_SECOND.powf(since.as_secs_f64().min(1.0));
            self.loss_bps = grown.max(self.delay_bps).min(self.max_bps);
            self.last_loss_change = Some(now);
        } else if loss > HIGH_LOSS && since >= LOSS_DECREASE_INTERVAL {
            let basis = self.loss_bps.min(self.delay_bps);
            self.loss_bps = (basis * (1.0 - 0.5 * loss)).max(self.min_bps);
            self.last_loss_change = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` groups of 3 packets, one group per 20 ms, each group's arrival `extra_ms` later
    /// than the one before on top of the 20 ms spacing.
    fn groups(
        epoch: Instant,
        from: u32,
        n: u32,
        extra_ms: f64,
        lost_every: Option<u32>,
    ) -> Vec<PacketResult> {
        let mut out = vec![];
        for g in from..from + n {
            let dep = epoch + Duration::from_millis(u64::from(g) * 20);
            let arr = f64::from(g) * (20.0 + extra_ms);
            for k in 0..3u32 {
                let lost = lost_every.is_some_and(|e| (g * 3 + k) % e == 0);
                out.push(PacketResult {
                    departure: dep + Duration::from_micros(u64::from(k) * 100),
                    arrival: (!lost)
                        .then(|| Duration::from_secs_f64((arr + f64::from(k) * 0.1) / 1e3)),
                    size: 1200,
                });
            }
        }
        out
    }

    #[test]
    fn a_flat_queue_reads_normal_and_the_rate_grows() {
        let epoch = Instant::now();
        let mut gcc = Gcc::new(1e6, 1e5, 1e7);
        for batch in 0..50 {
            let now = epoch + Duration::from_millis(u64::from(batch) * 100 + 120);
            gcc.on_feedback(now, &groups(epoch, batch * 5, 5, 0.0, None));
            assert_ne!(gcc.usage(), Usage::Over, "batch {batch}");
        }
        assert!(gcc.target_bps() > 1e6, "{}", gcc.target_bps());
    }

    #[test]
    fn a_slowly_growing_queue_reads_overuse_and_cuts_the_rate() {
        let epoch = Instant::now();
        let mut gcc = Gcc::new(2e6, 1e5, 1e7);
        // 1 ms more per 20 ms group: a sender 5 % above the bottleneck.
        let mut over_at = None;
        for batch in 0..30 {
            let now = epoch + Duration::from_millis(u64::from(batch) * 100 + 120);
            gcc.on_feedback(now, &groups(epoch, batch * 5, 5, 1.0, None));
            if gcc.usage() == Usage::Over && over_at.is_none() {
                over_at = Some(batch);
            }
        }
        let over_at = over_at.expect("overuse detected");
        assert!(over_at <= 10, "detected at batch {over_at}");
        assert!(gcc.target_bps() < 2e6, "{}", gcc.target_bps());
    }

    #[test]
    fn heavy_loss_cuts_the_loss_half_and_light_loss_does_not() {
        let epoch = Instant::now();
        let mut gcc = Gcc::new(2e6, 1e5, 1e7);
        for batch in 0..20 {
            let now = epoch + Duration::from_millis(u64::from(batch) * 100 + 120);
            gcc.on_feedback(now, &groups(epoch, batch * 5, 5, 0.0, Some(4)));
        }
        assert!((gcc.loss() - 0.25).abs() < 0.05, "{}", gcc.loss());
        assert!(gcc.target_bps() < 1e6, "{}", gcc.target_bps());
        assert!(gcc.loss_based_bps() < gcc.delay_based_bps());

        let mut light = Gcc::new(2e6, 1e5, 1e7);
        for batch in 0..20 {
            let now = epoch + Duration::from_millis(u64::from(batch) * 100 + 120);
            light.on_feedback(now, &groups(epoch, batch * 5, 5, 0.0, Some(100)));
        }
        assert!(light.target_bps() >= 2e6, "{}", light.target_bps());
    }

    #[test]
    fn garbage_feedback_neither_panics_nor_leaves_the_bounds() {
        let epoch = Instant::now();
        let mut gcc = Gcc::new(2e6, 1e5, 1e7);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for batch in 0..200u64 {
            let packets: Vec<PacketResult> = (0..10)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    PacketResult {
                        departure: epoch + Duration::from_micros(x % 10_000_000),
                        arrival: (!x.is_multiple_of(3)).then(|| Duration::from_micros(x >> 20)),
                        size: usize::try_from(x % 2000).unwrap_or(0),
                    }
                })
                .collect();
            gcc.on_feedback(epoch + Duration::from_millis(batch * 50), &packets);
            let t = gcc.target_bps();
            assert!((1e5..=1e7).contains(&t), "{t}");
        }
    }
}
