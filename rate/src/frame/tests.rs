//! The rate controller against a simulated bottleneck link (testkit's [`Link`]: each frame
//! goes through the bottleneck as one unit, its report comes back one propagation later) on a
//! virtual clock, and its invariants under arbitrary reports.

use super::*;
use edgeplay_testkit::clock::VirtualClock;
use edgeplay_testkit::netsim::{Link, LinkConfig};

const FPS: u32 = 60;
/// The client's clock is an hour ahead of the edge's: offsets must not matter.
const CLIENT_OFFSET_US: u64 = 1_700_000_000_000_000 + 3_600_000_000;

struct Sim {
    clock: VirtualClock,
    rc: FrameRateController,
    /// Edge → client, unbounded queue, no loss; the reports come back on an uncongested path
    /// of the same propagation delay.
    link: Link,
    /// (when the report reaches the edge, report).
    feedback: VecDeque<(Instant, ReceiveReport)>,
    /// quinn's congestion window as the path samples report it.
    cwnd_bytes: u64,
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
            link: Link::new(
                LinkConfig::new(rate_kbps * 1000.0, Duration::from_millis(20)),
                now,
            ),
            feedback: VecDeque::new(),
            cwnd_bytes: 10_000_000,
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
            let arrive = self
                .link
                .send(now, bytes as usize)
                .expect("no loss, no queue limit");
            let received_us = CLIENT_OFFSET_US
                + u64::try_from((arrive - (now - self.clock.elapsed())).as_micros()).unwrap();
            self.feedback.push_back((
                arrive + self.link.propagation(),
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
                    if self.feedback.front().is_some_and(|(t, _)| *t <= now) {
                        self.feedback.pop_front().map(|(_, r)| r)
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
                        cwnd_bytes: self.cwnd_bytes,
                        rtt: self.link.propagation() * 2,
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
        self.link.queue_delay(self.clock.now())
    }

    /// The bottleneck's capacity becomes `kbps` now.
    fn set_capacity_kbps(&mut self, kbps: f64) {
        self.link.set_capacity(self.clock.now(), kbps * 1000.0);
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
    sim.set_capacity_kbps(2000.0);
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
    sim.set_capacity_kbps(100_000.0);
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
    sim.cwnd_bytes = 10_000;
    sim.run(5.0);
    assert_eq!(sim.rc.cap_kbps().map(to_kbps), Some(2000));
    assert!(sim.rc.target_kbps() <= 2000, "{}", sim.rc.target_kbps());
    assert!(sim.rc.target_kbps() >= 1900);
    // The window opens: the target follows up.
    sim.cwnd_bytes = 1_000_000;
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
