//! The bitrate of a WebRTC peer, from transport-cc feedback.
//!
//! The edge's chain of RTP interceptors stamps every outgoing packet with a transport-wide
//! sequence number (`TwccSender`) and records when it left (`CongestionControlInterceptor`,
//! wire-most, after NACK retransmissions); when the player's TWCC feedback comes back, that
//! interceptor joins it with the departures and hands the per-packet results, in send order,
//! to a [`BandwidthEstimator`]. [`TwccEstimator`] is that estimator: it feeds them to the
//! sans-IO controller [`edgeplay_rate::gcc::Gcc`] and publishes the estimate in an
//! [`Estimate`] the peer's task reads (the chain owns the estimator, so the number has to be
//! shared out).
//!
//! `rtc-interceptor` ships a GCC of its own, but it compares the filtered per-group delay
//! gradient with the threshold without scaling it by the deltas it spans: a sender 10 % above
//! a bottleneck grows the queue by under 2 ms per frame group, below its threshold, and the
//! queue grows without end (driven through the simulation of the tests below, 8 Mbit/s into a
//! 3 Mbit/s link, its queue reached 3.9 s). The rate crate's trendline controller cuts the
//! rate under the link within a second there.
//!
//! [`estimator`] sizes the controller for one session (start at half the session's bitrate,
//! never above it: the operator's bitrate is a ceiling, the path decides below it), and
//! [`EncoderRate`] turns a transport estimate into an encoder target (less the Opus stream and
//! the packet headers), changing the encoder only when the target moved by [`MIN_CHANGE`] or
//! more, since every change costs the encoder a rate-control reset.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use edgeplay_media::session::BITRATE_RANGE_KBPS;
use edgeplay_rate::gcc::{Gcc, PacketResult};
use rtc::interceptor::{BandwidthEstimator, EstimatorStats, PacketReport};

/// Opus at 64 kbit/s plus its headers: what the audio stream takes from the estimate.
pub const AUDIO_ALLOWANCE_BPS: f64 = 72_000.0;
/// Share of a video packet that is payload: a 1200-byte payload carries ~60 bytes of RTP
/// (with the playout-delay and transport-cc extensions), SRTP tag and IP/UDP headers.
pub const PAYLOAD_SHARE: f64 = 0.95;
/// Relative change of the encoder target below which the encoder is left alone.
pub const MIN_CHANGE: f64 = 0.05;

/// The transport estimate (bit/s) that carries a video stream of `kbps` with its audio.
#[must_use]
pub fn transport_bps(video_kbps: u32) -> f64 {
    f64::from(video_kbps) * 1000.0 / PAYLOAD_SHARE + AUDIO_ALLOWANCE_BPS
}

/// The estimator of a session encoding at `session_kbps`: it starts at half of that (the path
/// is unknown; the probe raises it 8 % a second while the queue stays flat) and never goes
/// above it.
#[must_use]
pub fn estimator(session_kbps: u32) -> TwccEstimator {
    let max = transport_bps(session_kbps);
    let min = transport_bps(BITRATE_RANGE_KBPS.0);
    let start = transport_bps(session_kbps / 2).max(min);
    TwccEstimator::new(Gcc::new(start, min, max))
}

/// The current estimate of one peer, shared between the interceptor chain and the peer's task.
#[derive(Debug, Default)]
pub struct Estimate {
    bps: AtomicU64,
    delay_bps: AtomicU64,
    loss_bps: AtomicU64,
    loss_ppm: AtomicU64,
    feedbacks: AtomicU64,
}

impl Estimate {
    /// The estimate, bit/s.
    #[must_use]
    pub fn bps(&self) -> f64 {
        f64::from_bits(self.bps.load(Ordering::Relaxed))
    }

    /// The delay-based half, bit/s.
    #[must_use]
    pub fn delay_bps(&self) -> f64 {
        f64::from_bits(self.delay_bps.load(Ordering::Relaxed))
    }

    /// The loss-based half, bit/s.
    #[must_use]
    pub fn loss_bps(&self) -> f64 {
        f64::from_bits(self.loss_bps.load(Ordering::Relaxed))
    }

    /// The loss fraction of the last window.
    #[must_use]
    pub fn loss(&self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "parts per million")]
        let ppm = self.loss_ppm.load(Ordering::Relaxed) as f64;
        ppm / 1e6
    }

    /// Feedback packets that reported on at least one packet.
    #[must_use]
    pub fn feedbacks(&self) -> u64 {
        self.feedbacks.load(Ordering::Relaxed)
    }
}

/// [`Gcc`] behind the interceptor's estimator seam.
pub struct TwccEstimator {
    gcc: Gcc,
    shared: Arc<Estimate>,
    results: Vec<PacketResult>,
}

impl std::fmt::Debug for TwccEstimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwccEstimator")
            .field("gcc", &self.gcc)
            .finish_non_exhaustive()
    }
}

impl TwccEstimator {
    /// Wraps `gcc`.
    #[must_use]
    pub fn new(gcc: Gcc) -> Self {
        let me = Self {
            gcc,
            shared: Arc::new(Estimate::default()),
            results: Vec::new(),
        };
        me.publish();
        me
    }

    /// Where the estimate is published.
    #[must_use]
    pub fn estimate(&self) -> Arc<Estimate> {
        Arc::clone(&self.shared)
    }

    fn publish(&self) {
        let s = &self.shared;
        s.bps
            .store(self.gcc.target_bps().to_bits(), Ordering::Relaxed);
        s.delay_bps
            .store(self.gcc.delay_based_bps().to_bits(), Ordering::Relaxed);
        s.loss_bps
            .store(self.gcc.loss_based_bps().to_bits(), Ordering::Relaxed);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a fraction in 0..=1"
        )]
        s.loss_ppm
            .store((self.gcc.loss() * 1e6) as u64, Ordering::Relaxed);
    }
}

impl BandwidthEstimator for TwccEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        self.results.clear();
        self.results.extend(reports.iter().map(|r| PacketResult {
            departure: r.departure,
            arrival: if r.arrived { r.arrival } else { None },
            size: r.size,
        }));
        self.gcc.on_feedback(now, &self.results);
        self.shared.feedbacks.fetch_add(1, Ordering::Relaxed);
        self.publish();
    }

    fn target_bitrate(&self) -> f64 {
        self.gcc.target_bps()
    }

    fn stats(&self) -> EstimatorStats {
        let mut stats = EstimatorStats::default();
        stats.delay_based_bitrate = Some(self.gcc.delay_based_bps());
        stats.loss_based_bitrate = Some(self.gcc.loss_based_bps());
        stats.packet_loss = Some(self.gcc.loss());
        stats
    }
}

/// Turns transport estimates into encoder targets.
#[derive(Clone, Debug)]
pub struct EncoderRate {
    ceiling_kbps: u32,
    applied_kbps: u32,
}

impl EncoderRate {
    /// The encoder runs at `session_kbps` now, and never above it.
    #[must_use]
    pub fn new(session_kbps: u32) -> Self {
        Self {
            ceiling_kbps: session_kbps,
            applied_kbps: session_kbps,
        }
    }

    /// The encoder target last handed out (kbit/s).
    #[must_use]
    pub fn applied_kbps(&self) -> u32 {
        self.applied_kbps
    }

    /// The encoder target for a transport estimate of `bps`: `Some(kbps)` when the encoder
    /// should change, `None` when the change is too small to be worth a rate-control reset.
    pub fn on_estimate(&mut self, bps: f64) -> Option<u32> {
        if !bps.is_finite() {
            return None;
        }
        let video = ((bps - AUDIO_ALLOWANCE_BPS) * PAYLOAD_SHARE / 1000.0).max(0.0);
        let floor = BITRATE_RANGE_KBPS.0.min(self.ceiling_kbps);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "clamped to the encoder's range first"
        )]
        let kbps = video.clamp(f64::from(floor), f64::from(self.ceiling_kbps)) as u32;
        let moved =
            f64::from(kbps.abs_diff(self.applied_kbps)) / f64::from(self.applied_kbps.max(1));
        // At the ceiling or the floor any change counts: the last step there may be small.
        let edge = kbps == self.ceiling_kbps || kbps == floor;
        if kbps == self.applied_kbps || (moved < MIN_CHANGE && !edge) {
            return None;
        }
        self.applied_kbps = kbps;
        Some(kbps)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::{Duration, Instant};

    use edgeplay_testkit::clock::VirtualClock;
    use edgeplay_testkit::netsim::{Link, LinkConfig};
    use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

    use super::*;

    const FRAME: Duration = Duration::from_micros(16_667);
    const FEEDBACK: Duration = Duration::from_millis(50);
    const MTU: usize = 1200;

    struct Sent {
        id: u64,
        size: usize,
        departure: Instant,
        arrival: Option<Instant>,
    }

    /// An edge streaming at the estimate through `link`, with TWCC feedback every 50 ms.
    struct Sim {
        clock: VirtualClock,
        epoch: Instant,
        /// Edge → player: a FIFO bottleneck with an unbounded queue, 20 ms one way.
        link: Link,
        gcc: TwccEstimator,
        rate: EncoderRate,
        in_flight: VecDeque<Sent>,
        next_id: u64,
        next_feedback: Instant,
        /// Largest one-way delay seen in the last `run`.
        max_delay: Duration,
    }

    impl Sim {
        fn new(session_kbps: u32, capacity_bps: f64) -> Self {
            let clock = VirtualClock::new();
            let epoch = clock.now();
            Self {
                link: Link::new(
                    LinkConfig::new(capacity_bps, Duration::from_millis(20)),
                    epoch,
                ),
                gcc: estimator(session_kbps),
                rate: EncoderRate::new(session_kbps),
                in_flight: VecDeque::new(),
                next_id: 0,
                next_feedback: epoch + FEEDBACK,
                max_delay: Duration::ZERO,
                clock,
                epoch,
            }
        }

        /// Streams for `d`: one access unit of the encoder's target per frame, sent as one burst
        /// of MTU packets (the edge has no pacer), plus feedback when due.
        fn run(&mut self, d: Duration) {
            let end = self.clock.now() + d;
            self.max_delay = Duration::ZERO;
            while self.clock.now() < end {
                let now = self.clock.now();
                let frame_bytes = self.rate.applied_kbps() as usize * 1000 / 8 / 60;
                let mut left = frame_bytes;
                while left > 0 {
                    let size = left.min(MTU) + 60;
                    left = left.saturating_sub(MTU);
                    let arrival = self.link.send(now, size);
                    if let Some(a) = arrival {
                        self.max_delay = self.max_delay.max(a - now);
                    }
                    self.in_flight.push_back(Sent {
                        id: self.next_id,
                        size,
                        departure: now,
                        arrival,
                    });
                    self.next_id += 1;
                }
                let next_frame = now + FRAME;
                while self.next_feedback <= next_frame {
                    self.clock.advance_to(self.next_feedback);
                    self.feedback();
                    self.next_feedback += FEEDBACK;
                }
                self.clock.advance_to(next_frame);
            }
        }

        /// The receiver reports every packet whose fate it knows (arrived, or lost: a later
        /// one arrived), in send order; the report reaches the edge one propagation later.
        fn feedback(&mut self) {
            let now = self.clock.now();
            let seen = now.checked_sub(self.link.propagation()).unwrap_or(now);
            let mut reports = vec![];
            let last_arrived = self
                .in_flight
                .iter()
                .rposition(|p| p.arrival.is_some_and(|a| a <= seen));
            let Some(last) = last_arrived else { return };
            for p in self.in_flight.drain(..=last) {
                #[allow(clippy::cast_possible_truncation, reason = "sequence numbers wrap")]
                let seq = p.id as u16;
                reports.push(PacketReport {
                    ssrc: 1,
                    id: p.id,
                    rtp_sequence_number: seq,
                    is_twcc: true,
                    twcc_sequence_number: seq,
                    size: p.size,
                    arrived: p.arrival.is_some(),
                    departure: p.departure,
                    arrival: p.arrival.map(|a| a - self.epoch),
                    ecn: Ecn::NotEct,
                });
            }
            self.gcc.on_reports(now, &reports);
            let _ = self.rate.on_estimate(self.gcc.target_bitrate());
        }

        fn kbps(&self) -> u32 {
            self.rate.applied_kbps()
        }

        /// The bottleneck's capacity becomes `bps` now.
        fn set_capacity(&mut self, bps: f64) {
            self.link.set_capacity(self.clock.now(), bps);
        }
    }

    #[test]
    fn encoder_target_leaves_room_for_audio_and_headers_and_skips_small_moves() {
        let mut r = EncoderRate::new(6000);
        assert_eq!(r.on_estimate(transport_bps(6000)), None, "already there");
        assert_eq!(r.on_estimate(transport_bps(3000)), Some(3000));
        assert_eq!(r.on_estimate(transport_bps(3100)), None, "3 % is noise");
        assert_eq!(r.on_estimate(transport_bps(3300)), Some(3300));
        assert_eq!(
            r.on_estimate(50e6),
            Some(6000),
            "the session's rate is a ceiling"
        );
        assert_eq!(r.on_estimate(0.0), Some(BITRATE_RANGE_KBPS.0));
        assert_eq!(r.on_estimate(f64::NAN), None);
        assert_eq!(r.on_estimate(f64::INFINITY), None);
    }

    #[test]
    fn rate_rises_on_an_uncongested_link() {
        let mut sim = Sim::new(8000, 100e6);
        sim.run(Duration::from_millis(200));
        let start = sim.kbps();
        assert!(start <= 4_100, "starts at half the ceiling: {start}");
        let mut trajectory = vec![start];
        for _ in 0..20 {
            sim.run(Duration::from_secs(1));
            trajectory.push(sim.kbps());
        }
        eprintln!("uncongested, kbit/s per second: {trajectory:?}");
        assert!(
            trajectory.windows(2).all(|w| w[1] >= w[0]),
            "never backs off on an empty path: {trajectory:?}"
        );
        assert_eq!(sim.kbps(), 8000, "reaches the ceiling: {trajectory:?}");
        assert!(
            sim.max_delay < Duration::from_millis(30),
            "{:?}",
            sim.max_delay
        );
    }

    #[test]
    fn rate_falls_when_a_bottleneck_queues_and_recovers_after() {
        let mut sim = Sim::new(8000, 100e6);
        sim.run(Duration::from_secs(20));
        assert_eq!(sim.kbps(), 8000);

        // The path narrows to 3 Mbit/s: at 8 Mbit/s the queue grows 5 Mbit every second.
        sim.set_capacity(3e6);
        let narrowed = sim.clock.now();
        let mut fell_after = None;
        for step in 1..=40u32 {
            sim.run(Duration::from_millis(100));
            if fell_after.is_none() && transport_bps(sim.kbps()) <= 3e6 {
                fell_after = Some(Duration::from_millis(100) * step);
            }
        }
        let fell_after = fell_after.expect("the target fell below the bottleneck");
        eprintln!(
            "3 Mbit/s bottleneck: below it after {fell_after:?}, now {} kbit/s",
            sim.kbps()
        );
        assert!(fell_after <= Duration::from_secs(2), "took {fell_after:?}");

        // Settled: the queue drains and stays short while the rate hovers under the capacity.
        let mut rates = vec![];
        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            sim.run(Duration::from_secs(1));
            rates.push(sim.kbps());
            worst = worst.max(sim.max_delay);
        }
        eprintln!("under the bottleneck, kbit/s: {rates:?}, worst one-way delay {worst:?}");
        assert!(
            worst < Duration::from_millis(300),
            "the queue keeps growing: {worst:?} (narrowed at {:?})",
            narrowed - sim.epoch
        );
        assert!(
            rates.iter().all(|&r| transport_bps(r) <= 3.3e6),
            "stays near or under 3 Mbit/s: {rates:?}"
        );
        let mean = rates.iter().sum::<u32>() / 20;
        assert!(
            mean >= 1_000,
            "uses the path, mean {mean} kbit/s: {rates:?}"
        );

        // The path widens again: the rate climbs back.
        sim.set_capacity(100e6);
        sim.run(Duration::from_secs(30));
        eprintln!("recovered to {} kbit/s", sim.kbps());
        assert!(sim.kbps() >= 6_000, "recovers: {} kbit/s", sim.kbps());
    }

    #[test]
    fn loss_backs_off_without_any_queue() {
        let mut sim = Sim::new(8000, 100e6);
        sim.run(Duration::from_secs(20));
        assert_eq!(sim.kbps(), 8000);
        // One packet in five lost on a path with no queue at all: only loss can say so.
        sim.link.set_loss(0.2);
        sim.run(Duration::from_secs(5));
        eprintln!("20 % loss: {} kbit/s", sim.kbps());
        assert!(sim.kbps() <= 4000, "backs off on loss: {}", sim.kbps());
        assert!(sim.max_delay < Duration::from_millis(30));
        // Loss stops: the rate climbs back.
        sim.link.set_loss(0.0);
        let low = sim.kbps();
        sim.run(Duration::from_secs(15));
        assert!(
            sim.kbps() > low,
            "recovers after loss: {low} → {}",
            sim.kbps()
        );
    }
}
