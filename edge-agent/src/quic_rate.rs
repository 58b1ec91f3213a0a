//! The QUIC transport's application-level rate controller: what bitrate the encoder should aim
//! for, from per-frame send and receive times. Sans-IO: every input carries `now`, the output is
//! polled, nothing here touches a socket or a clock.
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
//! ```
//! use std::time::{Duration, Instant};
//! use edgeplay_edge::quic_rate::{FrameRateController, PathSample, RateConfig};
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
/// Weight of the newest delay sample in the smoothed delay.
const DELAY_SMOOTHING: f64 = 0.3;

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
    /// let cfg = edgeplay_edge::quic_rate::RateConfig::new(3000);
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
    /// (send ms, smoothed delay ms) of the last frames.
    trend: VecDeque<(f64, f64)>,
    smoothed_delay: Option<f64>,
    /// Monotone deque of (send µs, raw delay µs) for the windowed minimum.
    min_delay: VecDeque<(u64, i64)>,
    /// Latest raw delay, µs.
    last_delay: Option<i64>,
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
            trend: VecDeque::with_capacity(TREND_SAMPLES + 1),
            smoothed_delay: None,
            min_delay: VecDeque::new(),
            last_delay: None,
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
            self.last_delay = Some(delay);
            while self.min_delay.back().is_some_and(|&(_, d)| d >= delay) {
                self.min_delay.pop_back();
            }
            self.min_delay.push_back((sent_us, delay));
            let window = u64::try_from(MIN_DELAY_WINDOW.as_micros()).unwrap_or(u64::MAX);
            while self
                .min_delay
                .front()
                .is_some_and(|&(t, _)| t.saturating_add(window) < sent_us)
                && self.min_delay.len() > 1
            {
                self.min_delay.pop_front();
            }
            #[allow(
                clippy::cast_precision_loss,
                reason = "µs of a session fit f64 exactly"
            )]
            let (send_ms, delay_ms) = (sent_us as f64 / 1000.0, delay as f64 / 1000.0);
            let smoothed = self
                .smoothed_delay
                .map_or(delay_ms, |s| s + DELAY_SMOOTHING * (delay_ms - s));
            self.smoothed_delay = Some(smoothed);
            self.trend.push_back((send_ms, smoothed));
            if self.trend.len() > TREND_SAMPLES {
                self.trend.pop_front();
            }
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
    /// there are enough samples.
    #[must_use]
    pub fn delay_slope(&self) -> Option<f64> {
        if self.trend.len() < TREND_SAMPLES / 2 {
            return None;
        }
        #[allow(clippy::cast_precision_loss, reason = "at most TREND_SAMPLES")]
        let n = self.trend.len() as f64;
        let (mx, my) = self
            .trend
            .iter()
            .fold((0.0, 0.0), |(x, y), &(a, b)| (x + a / n, y + b / n));
        let (num, den) = self.trend.iter().fold((0.0, 0.0), |(num, den), &(x, y)| {
            (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
        });
        (den > 0.0).then(|| num / den)
    }

    /// The latest one-way delay above its minimum over [`MIN_DELAY_WINDOW`].
    #[must_use]
    pub fn queue_delay(&self) -> Duration {
        match (self.last_delay, self.min_delay.front()) {
            (Some(d), Some(&(_, min))) => {
                Duration::from_micros(u64::try_from(d.saturating_sub(min)).unwrap_or(0))
            }
            _ => Duration::ZERO,
        }
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
mod tests {
    use super::*;
    use edgeplay_testkit::clock::VirtualClock;

    const FPS: u32 = 60;
    /// The client's clock is an hour ahead of the edge's: offsets must not matter.
    const CLIENT_OFFSET_US: u64 = 1_700_000_000_000_000 + 3_600_000_000;

    /// A one-bottleneck link with a drop-tail queue, as testkit's relay with a rate limit.
    struct Link {
        rate_kbps: f64,
        delay: Duration,
        /// When the bottleneck is free again.
        free_at: Instant,
        /// (when the report reaches the edge, report).
        feedback: VecDeque<(Instant, ReceiveReport)>,
        cwnd_bytes: u64,
    }

    struct Sim {
        clock: VirtualClock,
        rc: FrameRateController,
        link: Link,
        frame: u32,
        /// Encoder limit: the most it sends per second regardless of the target (app-limited).
        encoder_max_kbps: f64,
        targets: Vec<u32>,
        /// (target, bottleneck queue) at each frame.
        history: Vec<(u32, Duration)>,
    }

    impl Sim {
        fn new(cfg: RateConfig, rate_kbps: f64) -> Sim {
            let clock = VirtualClock::new();
            let now = clock.now();
            Sim {
                rc: FrameRateController::new(cfg, now),
                link: Link {
                    rate_kbps,
                    delay: Duration::from_millis(20),
                    free_at: now,
                    feedback: VecDeque::new(),
                    cwnd_bytes: 10_000_000,
                },
                clock,
                frame: 0,
                encoder_max_kbps: f64::INFINITY,
                targets: Vec::new(),
                history: Vec::new(),
            }
        }

        /// Runs `secs` of 60 fps video at the controller's target.
        fn run(&mut self, secs: f64) {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "test"
            )]
            let frames = (secs * f64::from(FPS)) as u32;
            for _ in 0..frames {
                let now = self.clock.now();
                let kbps = f64::from(self.rc.target_kbps()).min(self.encoder_max_kbps);
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "test"
                )]
                let bytes = (kbps * 1000.0 / 8.0 / f64::from(FPS)) as u32;
                self.frame += 1;
                self.history.push((self.rc.target_kbps(), self.queue()));
                self.rc.handle_frame_sent(now, self.frame, bytes);
                let tx = Duration::from_secs_f64(
                    f64::from(bytes) * 8.0 / (self.link.rate_kbps * 1000.0),
                );
                let start = self.link.free_at.max(now);
                self.link.free_at = start + tx;
                let arrive = self.link.free_at + self.link.delay;
                let received_us = CLIENT_OFFSET_US
                    + u64::try_from((arrive - (now - self.clock.elapsed())).as_micros()).unwrap();
                self.link.feedback.push_back((
                    arrive + self.link.delay,
                    ReceiveReport {
                        frame: self.frame,
                        received_us,
                        bytes,
                    },
                ));
                // Advance a frame in 1 ms steps, delivering feedback and polling.
                for _ in 0..(1000 / FPS) {
                    self.clock.advance(Duration::from_millis(1));
                    let now = self.clock.now();
                    let due: Vec<ReceiveReport> = std::iter::from_fn(|| {
                        if self.link.feedback.front().is_some_and(|(t, _)| *t <= now) {
                            self.link.feedback.pop_front().map(|(_, r)| r)
                        } else {
                            None
                        }
                    })
                    .collect();
                    if !due.is_empty() {
                        self.rc.handle_reports(now, &due);
                    }
                    self.rc.handle_path(
                        now,
                        PathSample {
                            cwnd_bytes: self.link.cwnd_bytes,
                            rtt: self.link.delay * 2,
                            lost_packets: 0,
                            sent_packets: u64::from(self.frame) * 10,
                        },
                    );
                    let polled = self.rc.poll_target(now);
                    if let Some(t) = polled {
                        self.targets.push(t);
                    }
                }
            }
        }

        fn queue(&self) -> Duration {
            self.link
                .free_at
                .saturating_duration_since(self.clock.now())
        }
    }

    #[test]
    fn ramps_up_on_a_clean_link_to_the_maximum() {
        let mut sim = Sim::new(RateConfig::new(1000), 100_000.0);
        sim.run(2.0);
        let early = sim.rc.target_kbps();
        assert!(early > 1000, "grows within 2 s: {early}");
        sim.run(8.0);
        assert_eq!(
            sim.rc.target_kbps(),
            4000,
            "reaches max; targets {:?}",
            sim.targets
        );
        assert!(
            sim.targets.windows(2).all(|w| w[1] >= w[0]),
            "never backs off on a clean link"
        );
    }

    #[test]
    fn backs_off_under_a_bottleneck_and_recovers_when_it_lifts() {
        let cfg = RateConfig {
            max_kbps: 6000,
            ..RateConfig::new(3000)
        };
        let mut sim = Sim::new(cfg, 100_000.0);
        sim.run(3.0);
        assert!(sim.rc.target_kbps() >= 6000);
        // The path narrows to 2 Mbit/s: the queue builds, the delay rises.
        sim.link.rate_kbps = 2000.0;
        sim.history.clear();
        sim.run(6.0);
        let first_low = sim.history.iter().position(|&(t, _)| t <= 2000).unwrap();
        assert!(
            first_low < 60,
            "backs off within a second: frame {first_low}"
        );
        // The last 3 s: the target sits around the bottleneck and the queue stays short.
        let settled = &sim.history[sim.history.len() - 180..];
        let max = settled.iter().map(|&(t, _)| t).max().unwrap();
        let mean = settled.iter().map(|&(t, _)| u64::from(t)).sum::<u64>() / 180;
        let queue = settled.iter().map(|&(_, q)| q).max().unwrap();
        assert!(
            max <= 2300,
            "target up to {max} over a 2000 kbit/s bottleneck"
        );
        assert!(
            mean >= 1000,
            "mean target {mean} did not collapse below half the bottleneck"
        );
        assert!(
            queue < Duration::from_millis(250),
            "queue stays short: up to {queue:?}"
        );
        assert!(sim.targets.iter().all(|&t| t >= 250));
        // The bottleneck lifts: the target climbs back.
        sim.link.rate_kbps = 100_000.0;
        sim.run(8.0);
        assert!(
            sim.rc.target_kbps() >= 6000,
            "recovered to {}",
            sim.rc.target_kbps()
        );
    }

    #[test]
    fn target_is_capped_by_cwnd_over_rtt() {
        let mut sim = Sim::new(RateConfig::new(3000), 100_000.0);
        // 40 ms RTT, 10 kB window: 2000 kbit/s.
        sim.link.cwnd_bytes = 10_000;
        sim.run(5.0);
        assert_eq!(sim.rc.cap_kbps().map(to_kbps), Some(2000));
        assert!(sim.rc.target_kbps() <= 2000, "{}", sim.rc.target_kbps());
        assert!(sim.rc.target_kbps() >= 1900);
        // The window opens: the target follows up.
        sim.link.cwnd_bytes = 1_000_000;
        sim.run(5.0);
        assert!(sim.rc.target_kbps() > 4000, "{}", sim.rc.target_kbps());
    }

    #[test]
    fn an_app_limited_sender_does_not_run_the_target_away() {
        let mut sim = Sim::new(RateConfig::new(3000), 100_000.0);
        sim.encoder_max_kbps = 400.0;
        sim.run(10.0);
        // Twice the 400 delivered is under the start, so the start is the ceiling.
        assert_eq!(sim.rc.target_kbps(), 3000);
        sim.encoder_max_kbps = 2500.0;
        sim.run(10.0);
        let (t, d) = (sim.rc.target_kbps(), sim.rc.delivery_kbps().unwrap());
        assert!(
            t > 3000,
            "target {t} grows past the start once more is delivered"
        );
        assert!(
            f64::from(t) <= 2.0 * d + 1.0,
            "target {t}: at most twice the {d} delivered"
        );
    }

    #[test]
    fn a_stall_backs_off_and_stray_reports_are_ignored() {
        let clock = VirtualClock::new();
        let mut rc = FrameRateController::new(RateConfig::new(3000), clock.now());
        // Reports for frames never sent change nothing.
        rc.handle_reports(
            clock.now(),
            &[ReceiveReport {
                frame: 99,
                received_us: 5,
                bytes: u32::MAX,
            }],
        );
        assert_eq!(rc.delivery_kbps(), None);
        for f in 1..=40 {
            rc.handle_frame_sent(clock.now(), f, 6000);
            clock.advance(Duration::from_millis(16));
            let _ = rc.poll_target(clock.now());
        }
        assert_eq!(rc.usage(), Usage::Overuse(Overuse::Stall));
        assert!(rc.target_kbps() < 3000);
    }

    #[test]
    fn a_frame_never_reported_is_forgotten_and_no_stall_follows() {
        let clock = VirtualClock::new();
        let mut rc = FrameRateController::new(RateConfig::new(3000), clock.now());
        // Frame 1's stream is reset: never reported. Frames 2.. are, 10 ms after sending.
        rc.handle_frame_sent(clock.now(), 1, 50_000);
        for f in 2..=400u32 {
            rc.handle_frame_sent(clock.now(), f, 6000);
            clock.advance(Duration::from_millis(10));
            let received_us = u64::from(f) * 16_000 + 10_000;
            rc.handle_reports(
                clock.now(),
                &[ReceiveReport {
                    frame: f,
                    received_us,
                    bytes: 6000,
                }],
            );
            clock.advance(Duration::from_millis(6));
            let _ = rc.poll_target(clock.now());
        }
        // A quiet spell without new frames is no stall: nothing is outstanding any more.
        clock.advance(Duration::from_millis(600));
        let _ = rc.poll_target(clock.now());
        assert_ne!(rc.usage(), Usage::Overuse(Overuse::Stall));
        assert!(rc.target_kbps() >= 3000);
    }

    proptest::proptest! {
        /// Reports come from the client, so from outside: whatever they say, and whatever the
        /// path statistics, the controller neither panics nor leaves its bounds.
        #[test]
        fn arbitrary_reports_keep_the_target_in_bounds(
            steps in proptest::collection::vec(
                (0u32..64, proptest::prop_oneof![proptest::strategy::Just(u64::MAX), proptest::strategy::Just(0u64), proptest::num::u64::ANY], proptest::num::u32::ANY,
                 0u64..1 << 40, 0u64..2_000_000, 0u64..1000, 0u64..1000, 0u64..300_000),
                1..200,
            )
        ) {
            let clock = VirtualClock::new();
            let cfg = RateConfig::new(3000);
            let mut rc = FrameRateController::new(cfg, clock.now());
            let mut lost = 0;
            let mut sent = 0;
            for (i, (frame, received_us, bytes, cwnd, rtt_us, l, s, advance_us)) in
                steps.into_iter().enumerate()
            {
                rc.handle_frame_sent(clock.now(), u32::try_from(i).unwrap(), bytes);
                rc.handle_reports(clock.now(), &[ReceiveReport { frame, received_us, bytes }]);
                lost += l;
                sent += s;
                rc.handle_path(clock.now(), PathSample {
                    cwnd_bytes: cwnd,
                    rtt: Duration::from_micros(rtt_us),
                    lost_packets: lost,
                    sent_packets: sent,
                });
                clock.advance(Duration::from_micros(advance_us));
                if let Some(t) = rc.poll_target(clock.now()) {
                    proptest::prop_assert!((cfg.min_kbps..=cfg.max_kbps).contains(&t));
                }
                proptest::prop_assert!((cfg.min_kbps..=cfg.max_kbps).contains(&rc.target_kbps()));
            }
        }
    }

    #[test]
    fn loss_backs_off() {
        let clock = VirtualClock::new();
        let mut rc = FrameRateController::new(RateConfig::new(3000), clock.now());
        let mut path = PathSample {
            cwnd_bytes: 1 << 20,
            rtt: Duration::from_millis(10),
            lost_packets: 0,
            sent_packets: 100,
        };
        rc.handle_path(clock.now(), path);
        let _ = rc.poll_target(clock.now());
        clock.advance(Duration::from_millis(100));
        path.sent_packets += 100;
        path.lost_packets += 30;
        rc.handle_path(clock.now(), path);
        assert_eq!(rc.poll_target(clock.now()), Some(2550));
        assert_eq!(rc.usage(), Usage::Overuse(Overuse::Loss));
    }
}
