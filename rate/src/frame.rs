//! The QUIC transport's application-level rate controller: what bitrate the encoder should aim
//! for, from per-frame send and receive times. Sans-IO: every input carries `now`, the output is
//! polled, nothing here touches a socket or a clock. The edge runs one per QUIC session
//! (`edgeplay_edge::transport::quic`).
//!
//! quinn's BBR paces the packets; this controller sets the *encoder's* target so the frames BBR
//! has to carry fit the path. Its inputs:
//! - [`FrameRateController::handle_frame_sent`]: the edge handed frame `n` of `bytes` to QUIC;
//! - [`FrameRateController::handle_reports`]: the client's [`ReceiveReport`]s (when the last
//!   byte of each frame arrived, on the client's clock), sent on the control stream;
//! - [`FrameRateController::handle_path`]: quinn's path statistics (congestion window, RTT,
//!   packet counts), sampled by the glue.
//!
//! Each [`RateConfig::interval`], [`FrameRateController::poll_target`] decides:
//! - **overuse** when the one-way delay rises (the least-squares slope of the smoothed delay over
//!   the last [`TREND_SAMPLES`] frames, in ms per ms, is above [`RateConfig::overuse_slope`]),
//!   when the queueing delay (delay above its minimum over [`MIN_DELAY_WINDOW`]) passes
//!   [`RateConfig::max_queue_delay`], when QUIC loses more than [`RateConfig::max_loss`] of its
//!   packets, or when no frame has been reported for a while (a stall): the target drops to
//!   [`RateConfig::backoff`] × min(target, measured delivery rate), at most once per
//!   [`RateConfig::backoff_hold`];
//! - **normal** (delay flat, queue short, no loss): the target grows by
//!   [`RateConfig::increase_per_sec`] per second, but not past twice the delivery rate (or the
//!   start rate) while the encoder sends less than the target, so an idle scene does not let
//!   the target run away from what the path has shown it carries;
//! - otherwise it holds.
//!
//! The target is then capped by the congestion window over the RTT (what BBR would let through
//! anyway) and clamped to [[`RateConfig::min_kbps`], [`RateConfig::max_kbps`]]. Delay offsets
//! between the two clocks cancel: only differences of one-way delay are used. A new target is
//! reported only when it moved by [`PUBLISH_STEP`] or more, so the encoder is not reconfigured
//! for noise; decreases are applied at once, increases are gradual by construction.
//!
//! The slope and the queueing delay come from the shared delay detector, [`crate::delay`]
//! ([`DelayTrend`] and [`DelayFloor`]), read with this controller's parameters: smoothing that
//! keeps [`DELAY_KEEP`] of the previous value, a slope from half of [`TREND_SAMPLES`] on, send
//! time as the x axis (the [`crate::delay`] docs say how and why GCC's differ).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use edgeplay_rate::frame::{FrameRateController, PathSample, RateConfig};
//! use edgeplay_protocol::media::ReceiveReport;
//!
//! let t0 = Instant::now();
//! let mut rc = FrameRateController::new(RateConfig::new(3000), t0);
//! rc.handle_frame_sent(t0, 1, 6000);
//! rc.handle_reports(t0 + Duration::from_millis(5), &[ReceiveReport { frame: 1, received_us: 1_000_000, bytes: 6000 }]);
//! rc.handle_path(t0, PathSample { cwnd_bytes: 100_000, rtt: Duration::from_millis(20), lost_packets: 0, sent_packets: 10 });
//! let _maybe_new = rc.poll_target(t0 + Duration::from_millis(200));
//! assert!(rc.target_kbps() >= 3000);
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use edgeplay_protocol::media::ReceiveReport;

use crate::delay::{DelayFloor, DelayTrend, TrendConfig};

/// Frames in the delay-trend regression.
pub const TREND_SAMPLES: usize = 20;
/// Window of the minimum one-way delay the queueing delay is measured against.
pub const MIN_DELAY_WINDOW: Duration = Duration::from_secs(5);
/// Window of the delivery-rate estimate (by receive time).
pub const DELIVERY_WINDOW: Duration = Duration::from_millis(500);
/// Smallest relative change of the target that is reported to the encoder.
pub const PUBLISH_STEP: f64 = 0.03;
/// Sent frames remembered while waiting for their reports.
const MAX_UNREPORTED: usize = 1024;
/// How long a sent frame waits for its report before it is forgotten.
const UNREPORTED_FORGET: Duration = Duration::from_secs(2);
/// Share of the smoothed delay kept at each frame (the newest sample weighs 0.3).
pub const DELAY_KEEP: f64 = 0.7;
/// How this controller reads its delay series: a slope from half a window on, so that a
/// session has a verdict within a few hundred milliseconds.
const TREND: TrendConfig = TrendConfig {
    keep: DELAY_KEEP,
    window: TREND_SAMPLES,
    min_samples: TREND_SAMPLES / 2,
};

/// Tuning of the controller.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateConfig {
    /// Lowest target, kbit/s.
    pub min_kbps: u32,
    /// Highest target, kbit/s.
    pub max_kbps: u32,
    /// Target at the start, kbit/s (the session's configured bitrate).
    pub start_kbps: u32,
    /// Relative growth per second in the normal state (0.5 = +50 %/s, compounded).
    pub increase_per_sec: f64,
    /// Factor applied on overuse.
    pub backoff: f64,
    /// Shortest time between two backoffs (the previous one needs an RTT or so to show).
    pub backoff_hold: Duration,
    /// Delay slope (ms of delay per ms of send time) above which the path is overused.
    pub overuse_slope: f64,
    /// Queueing delay above which the path is overused.
    pub max_queue_delay: Duration,
    /// Fraction of QUIC packets lost over a decision interval above which the path is overused.
    pub max_loss: f64,
    /// Time without any report, while frames are outstanding, that counts as a stall.
    pub stall_after: Duration,
    /// Time between two decisions.
    pub interval: Duration,
}

impl RateConfig {
    /// Defaults around a start of `start_kbps`: from 250 kbit/s (or the start, if lower) to
    /// four times the start, +50 %/s, backoff ×0.85.
    ///
    /// ```
    /// let cfg = edgeplay_rate::frame::RateConfig::new(3000);
    /// assert_eq!((cfg.min_kbps, cfg.max_kbps), (250, 12_000));
    /// ```
    #[must_use]
    pub fn new(start_kbps: u32) -> Self {
        let start_kbps = start_kbps.max(1);
        Self {
            min_kbps: 250.min(start_kbps),
            max_kbps: start_kbps.saturating_mul(4),
            start_kbps,
            increase_per_sec: 0.5,
            backoff: 0.85,
            backoff_hold: Duration::from_millis(300),
            overuse_slope: 0.1,
            max_queue_delay: Duration::from_millis(80),
            max_loss: 0.1,
            stall_after: Duration::from_millis(500),
            interval: Duration::from_millis(100),
        }
    }
}

/// quinn's view of the path, sampled by the glue (`Connection::stats().path`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathSample {
    /// Congestion window, bytes.
    pub cwnd_bytes: u64,
    /// Smoothed RTT.
    pub rtt: Duration,
    /// Packets declared lost since the connection began.
    pub lost_packets: u64,
    /// Packets sent since the connection began.
    pub sent_packets: u64,
}

/// The last decision's verdict on the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// No decision yet, or not enough samples.
    Unknown,
    /// Delay flat, queue short, no loss: the target may grow.
    Normal,
    /// Delay rising or queue building, but not past the limits: hold.
    Hold,
    /// Delay rising fast, a long queue, loss or a stall: back off.
    Overuse(Overuse),
}

/// Why the path was judged overused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overuse {
    /// The one-way delay rises.
    DelayGradient,
    /// The queueing delay passed the limit.
    QueueDelay,
    /// QUIC lost too many packets.
    Loss,
    /// No frame was reported for [`RateConfig::stall_after`].
    Stall,
}

/// The controller. See the [module docs](self).
#[derive(Debug)]
pub struct FrameRateController {
    cfg: RateConfig,
    origin: Instant,
    /// Sent and not yet reported: frame → (send µs since `origin`, bytes).
    unreported: BTreeMap<u32, (u64, u32)>,
    /// Smoothed delay over send time, for the slope.
    trend: DelayTrend,
    /// Raw delay (µs) over send time (µs), for the queueing delay.
    floor: DelayFloor,
    /// (client receive µs, bytes) within [`DELIVERY_WINDOW`].
    delivered: VecDeque<(u64, u32)>,
    target: f64,
    published: u32,
    last_decision: Option<Instant>,
    last_backoff: Option<Instant>,
    last_report: Option<Instant>,
    path: Option<PathSample>,
    /// (lost, sent) at the previous decision.
    path_at_decision: Option<(u64, u64)>,
    usage: Usage,
}

impl FrameRateController {
    /// A controller starting at `cfg.start_kbps`.
    #[must_use]
    pub fn new(cfg: RateConfig, now: Instant) -> Self {
        let start = cfg
            .start_kbps
            .clamp(cfg.min_kbps, cfg.max_kbps.max(cfg.min_kbps));
        Self {
            cfg,
            origin: now,
            unreported: BTreeMap::new(),
            trend: DelayTrend::new(TREND),
            floor: DelayFloor::new(MIN_DELAY_WINDOW),
            delivered: VecDeque::new(),
            target: f64::from(start),
            published: start,
            last_decision: None,
            last_backoff: None,
            last_report: None,
            path: None,
            path_at_decision: None,
            usage: Usage::Unknown,
        }
    }

    fn micros_since_origin(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_micros()).unwrap_or(u64::MAX)
    }

    /// The edge handed frame `frame` (`bytes` long) to QUIC at `now`.
    pub fn handle_frame_sent(&mut self, now: Instant, frame: u32, bytes: u32) {
        let us = self.micros_since_origin(now);
        self.unreported.insert(frame, (us, bytes));
        // Frames never reported (their stream was reset for a later keyframe) are forgotten
        // after a while, so they do not pass for a stall later.
        let forget = u64::try_from(UNREPORTED_FORGET.as_micros()).unwrap_or(u64::MAX);
        while self.unreported.len() > MAX_UNREPORTED
            || self
                .unreported
                .first_key_value()
                .is_some_and(|(_, &(t, _))| t.saturating_add(forget) < us)
        {
            self.unreported.pop_first();
        }
    }

    /// The client's receive reports arrived at `now`. Reports for frames this controller did
    /// not send (or already forgot) are ignored: they come from outside and prove nothing.
    pub fn handle_reports(&mut self, now: Instant, reports: &[ReceiveReport]) {
        for r in reports {
            let Some((sent_us, bytes)) = self.unreported.remove(&r.frame) else {
                continue;
            };
            self.last_report = Some(now);
            // Offset between the clocks is unknown but constant: only differences matter.
            let delay = i64::try_from(r.received_us)
                .unwrap_or(i64::MAX)
                .saturating_sub(i64::try_from(sent_us).unwrap_or(i64::MAX));
            self.floor.push(sent_us, delay);
            #[allow(
                clippy::cast_precision_loss,
                reason = "µs of a session fit f64 exactly"
            )]
            let (send_ms, delay_ms) = (sent_us as f64 / 1000.0, delay as f64 / 1000.0);
            self.trend.push(send_ms, delay_ms);
            // Delivery: keep receive times in order (reports of streams finishing out of
            // order land where they belong).
            let pos = self
                .delivered
                .iter()
                .rposition(|&(t, _)| t <= r.received_us)
                .map_or(0, |p| p + 1);
            self.delivered.insert(pos, (r.received_us, bytes));
        }
        if let Some(&(newest, _)) = self.delivered.back() {
            let window = u64::try_from(DELIVERY_WINDOW.as_micros()).unwrap_or(u64::MAX);
            while self
                .delivered
                .front()
                .is_some_and(|&(t, _)| t.saturating_add(window) < newest)
            {
                self.delivered.pop_front();
            }
        }
    }

    /// quinn's path statistics now.
    pub fn handle_path(&mut self, _now: Instant, sample: PathSample) {
        self.path = Some(sample);
    }

    /// The least-squares slope of the smoothed one-way delay over send time (ms per ms), once
    /// there are enough samples (half of [`TREND_SAMPLES`]).
    #[must_use]
    pub fn delay_slope(&self) -> Option<f64> {
        self.trend.slope()
    }

    /// The latest one-way delay above its minimum over [`MIN_DELAY_WINDOW`].
    #[must_use]
    pub fn queue_delay(&self) -> Duration {
        self.floor.queue_delay()
    }

    /// Bytes the client received per second over [`DELIVERY_WINDOW`], in kbit/s.
    #[must_use]
    pub fn delivery_kbps(&self) -> Option<f64> {
        let (&(first, _), &(last, _)) = (self.delivered.front()?, self.delivered.back()?);
        let span = last.saturating_sub(first);
        if self.delivered.len() < 4 || span < 50_000 {
            return None;
        }
        // The first frame's bytes arrived before the window opened.
        let bytes: u64 = self
            .delivered
            .iter()
            .skip(1)
            .map(|&(_, b)| u64::from(b))
            .sum();
        #[allow(clippy::cast_precision_loss, reason = "bytes of half a second fit f64")]
        Some(bytes as f64 * 8.0 * 1000.0 / span as f64)
    }

    /// The congestion window over the RTT, in kbit/s: what the path lets through now.
    #[must_use]
    pub fn cap_kbps(&self) -> Option<f64> {
        let p = self.path?;
        let rtt_us = p.rtt.as_micros();
        if p.cwnd_bytes == 0 || rtt_us == 0 {
            return None;
        }
        #[allow(clippy::cast_precision_loss, reason = "windows and RTTs fit f64")]
        Some(p.cwnd_bytes as f64 * 8.0 * 1000.0 / rtt_us as f64)
    }

    /// The current target, kbit/s (what the last [`Self::poll_target`] decided, unrounded for
    /// publishing).
    #[must_use]
    pub fn target_kbps(&self) -> u32 {
        to_kbps(self.target)
    }

    /// The last decision's verdict.
    #[must_use]
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// When the next decision is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        self.last_decision
            .map_or(self.origin, |t| t + self.cfg.interval)
    }

    fn judge(&mut self, now: Instant) -> Usage {
        let loss = match (self.path, self.path_at_decision) {
            (Some(p), Some((lost, sent))) if p.sent_packets > sent => {
                #[allow(clippy::cast_precision_loss, reason = "packet counts fit f64")]
                let f = p.lost_packets.saturating_sub(lost) as f64 / (p.sent_packets - sent) as f64;
                f
            }
            _ => 0.0,
        };
        self.path_at_decision = self.path.map(|p| (p.lost_packets, p.sent_packets));
        let stall_after = self.path.map_or(self.cfg.stall_after, |p| {
            self.cfg.stall_after.max(p.rtt * 3)
        });
        let now_us = self.micros_since_origin(now);
        let stall_us = u64::try_from(stall_after.as_micros()).unwrap_or(u64::MAX);
        let oldest_waits = self
            .unreported
            .values()
            .map(|&(t, _)| t)
            .min()
            .is_some_and(|t| t.saturating_add(stall_us) < now_us);
        let silent = self
            .last_report
            .is_none_or(|t| now.saturating_duration_since(t) >= stall_after);
        if oldest_waits && silent {
            return Usage::Overuse(Overuse::Stall);
        }
        if loss > self.cfg.max_loss {
            return Usage::Overuse(Overuse::Loss);
        }
        if self.queue_delay() > self.cfg.max_queue_delay {
            return Usage::Overuse(Overuse::QueueDelay);
        }
        match self.delay_slope() {
            None => Usage::Unknown,
            Some(s) if s > self.cfg.overuse_slope => Usage::Overuse(Overuse::DelayGradient),
            Some(s)
                if s > self.cfg.overuse_slope / 2.0
                    || self.queue_delay() > self.cfg.max_queue_delay / 2 =>
            {
                Usage::Hold
            }
            Some(_) => Usage::Normal,
        }
    }

    /// Decides if a decision is due (every [`RateConfig::interval`]) and returns the new target
    /// in kbit/s when it moved by [`PUBLISH_STEP`] or more since the last one returned.
    pub fn poll_target(&mut self, now: Instant) -> Option<u32> {
        if self
            .last_decision
            .is_some_and(|t| now < t + self.cfg.interval)
        {
            return None;
        }
        let dt = self
            .last_decision
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
            .min(Duration::from_secs(1));
        self.last_decision = Some(now);
        self.usage = self.judge(now);
        let delivery = self.delivery_kbps();
        match self.usage {
            Usage::Overuse(_) => {
                if self
                    .last_backoff
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.backoff_hold)
                {
                    self.target = match (self.usage, delivery) {
                        // Delay says the queue grows: go under what the path delivered, deeper
                        // the longer the queue already is so that it drains; never compound
                        // below that while it drains.
                        (Usage::Overuse(Overuse::DelayGradient | Overuse::QueueDelay), Some(d)) => {
                            let drain = (1.0 - self.queue_delay().as_secs_f64()).max(0.5);
                            self.target.min(d * self.cfg.backoff * drain)
                        }
                        // Loss or a stall (or no delivery estimate): multiplicative.
                        _ => self.target * self.cfg.backoff,
                    };
                    self.last_backoff = Some(now);
                }
            }
            Usage::Normal => {
                let grown = self.target * (1.0 + self.cfg.increase_per_sec).powf(dt.as_secs_f64());
                // While the encoder sends well under the target, growth stops at twice what
                // was delivered (or the start): the path has not shown more.
                let ceiling = delivery.map_or(f64::INFINITY, |d| {
                    (2.0 * d).max(f64::from(self.cfg.start_kbps))
                });
                self.target = grown.min(ceiling.max(self.target));
            }
            Usage::Hold | Usage::Unknown => {}
        }
        if let Some(cap) = self.cap_kbps() {
            self.target = self.target.min(cap);
        }
        self.target = self.target.clamp(
            f64::from(self.cfg.min_kbps),
            f64::from(self.cfg.max_kbps.max(self.cfg.min_kbps)),
        );
        let new = to_kbps(self.target);
        let step =
            (f64::from(new) - f64::from(self.published)).abs() / f64::from(self.published.max(1));
        if step >= PUBLISH_STEP
            || (new != self.published && (new == self.cfg.min_kbps || new == self.cfg.max_kbps))
        {
            self.published = new;
            Some(new)
        } else {
            None
        }
    }
}

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "clamped to u32 first"
)]
fn to_kbps(x: f64) -> u32 {
    x.round().clamp(0.0, f64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests;
