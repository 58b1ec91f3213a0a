//! Session events and the health watch that raises them: sans-IO, `now` and counters in,
//! events out; the SDK samples it every [`HEALTH_TICK`].

use std::time::{Duration, Instant};

/// How often the SDK samples the session's health.
pub const HEALTH_TICK: Duration = Duration::from_millis(250);
/// No decoded frame for this long makes the session degraded.
pub const STALL_AFTER: Duration = Duration::from_secs(1);
/// Share of frames skipped over [`SKIP_WINDOW`] above which the session is degraded.
pub const MAX_SKIPPED: f64 = 0.1;
/// Window of the skipped-frame share.
pub const SKIP_WINDOW: Duration = Duration::from_secs(2);
/// Round-trip time above which the session is degraded.
pub const MAX_RTT: Duration = Duration::from_millis(150);

/// Something that happened to a session, in order. Read with
/// [`Session::next_event`](crate::Session::next_event).
///
/// ```no_run
/// # async fn demo(mut session: edgeplay_client::Session) {
/// use edgeplay_client::SessionEvent;
/// while let Some(event) = session.next_event().await {
///     match event {
///         SessionEvent::Connected { session_id } => println!("playing {session_id}"),
///         SessionEvent::Degraded { reason } => println!("degraded: {reason}"),
///         SessionEvent::Recovered => println!("back to normal"),
///         SessionEvent::Reconnecting => println!("moving to another edge"),
///         SessionEvent::Closed { reason } => { println!("closed: {reason}"); break; }
///     }
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// The edge welcomed the session; frames follow.
    Connected {
        /// The session id the edge gave.
        session_id: String,
    },
    /// The session is playing worse than it should.
    Degraded {
        /// What is wrong, for people.
        reason: Degradation,
    },
    /// Every cause of the last [`SessionEvent::Degraded`] has cleared.
    Recovered,
    /// The SDK is moving the session to another edge. Not emitted yet: it belongs to failover,
    /// which the SDK does not do yet (a failover notice from the edge is only logged).
    Reconnecting,
    /// The session ended; no event follows.
    Closed {
        /// Why, for people (the edge's close code and reason, or the connection error).
        reason: String,
    },
}

/// Why a session is degraded.
///
/// ```
/// use edgeplay_client::Degradation;
/// assert!(Degradation::Stalled.to_string().contains("no frame"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Degradation {
    /// No frame decoded for a second.
    Stalled,
    /// More than 10 % of the frames over the last 2 s were skipped.
    Skipping,
    /// The round-trip time is above 150 ms.
    HighRtt,
}

impl std::fmt::Display for Degradation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Degradation::Stalled => "no frame for a second: the path or the edge stalls",
            Degradation::Skipping => "over 10 % of frames skipped: the path loses packets",
            Degradation::HighRtt => "round-trip time over 150 ms: a closer edge would do better",
        })
    }
}

/// What the health watch sees at each sample.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    pub now: Instant,
    pub decoded: u64,
    pub skipped: u64,
    pub last_frame: Option<Instant>,
    pub rtt: Duration,
}

/// Raises [`SessionEvent::Degraded`] when a cause appears (once per cause until recovered) and
/// [`SessionEvent::Recovered`] when all causes have cleared.
#[derive(Debug)]
pub(crate) struct HealthMonitor {
    started: Instant,
    /// (time, decoded, skipped) samples within [`SKIP_WINDOW`].
    history: std::collections::VecDeque<(Instant, u64, u64)>,
    active: Vec<Degradation>,
}

impl HealthMonitor {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            started: now,
            history: std::collections::VecDeque::new(),
            active: Vec::new(),
        }
    }

    pub(crate) fn observe(&mut self, s: Sample) -> Vec<SessionEvent> {
        self.history.push_back((s.now, s.decoded, s.skipped));
        while self
            .history
            .front()
            .is_some_and(|(t, _, _)| s.now.saturating_duration_since(*t) > SKIP_WINDOW)
        {
            self.history.pop_front();
        }
        let mut causes = Vec::new();
        let since = s.last_frame.unwrap_or(self.started);
        if s.now.saturating_duration_since(since) >= STALL_AFTER {
            causes.push(Degradation::Stalled);
        }
        if let Some(&(_, d0, k0)) = self.history.front() {
            let (d, k) = (s.decoded - d0.min(s.decoded), s.skipped - k0.min(s.skipped));
            #[allow(clippy::cast_precision_loss, reason = "frame counts fit f64")]
            if d + k >= 10 && k as f64 > MAX_SKIPPED * (d + k) as f64 {
                causes.push(Degradation::Skipping);
            }
        }
        if s.rtt > MAX_RTT {
            causes.push(Degradation::HighRtt);
        }
        let mut events: Vec<SessionEvent> = causes
            .iter()
            .filter(|c| !self.active.contains(c))
            .map(|&reason| SessionEvent::Degraded { reason })
            .collect();
        if causes.is_empty() && !self.active.is_empty() {
            events.push(SessionEvent::Recovered);
        }
        self.active = causes;
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_skips_and_rtt_raise_degraded_once_and_recover() {
        let t0 = Instant::now();
        let mut m = HealthMonitor::new(t0);
        let mut s = Sample {
            now: t0,
            decoded: 0,
            skipped: 0,
            last_frame: Some(t0),
            rtt: Duration::from_millis(20),
        };
        let step = |m: &mut HealthMonitor, s: &mut Sample, decoded: u64, skipped: u64| {
            s.now += HEALTH_TICK;
            s.decoded += decoded;
            s.skipped += skipped;
            if decoded > 0 {
                s.last_frame = Some(s.now);
            }
            m.observe(*s)
        };
        // Healthy: 15 frames per tick, nothing skipped.
        for _ in 0..8 {
            assert!(step(&mut m, &mut s, 15, 0).is_empty());
        }
        // A stall: degraded once, after a second.
        let events: Vec<_> = (0..6).flat_map(|_| step(&mut m, &mut s, 0, 0)).collect();
        assert_eq!(
            events,
            vec![SessionEvent::Degraded {
                reason: Degradation::Stalled
            }]
        );
        // Frames again: recovered.
        assert_eq!(step(&mut m, &mut s, 15, 0), vec![SessionEvent::Recovered]);
        // A fifth of the frames skipped.
        let events: Vec<_> = (0..4).flat_map(|_| step(&mut m, &mut s, 12, 3)).collect();
        assert_eq!(
            events,
            vec![SessionEvent::Degraded {
                reason: Degradation::Skipping
            }]
        );
        s.rtt = Duration::from_millis(400);
        assert_eq!(
            step(&mut m, &mut s, 15, 3),
            vec![SessionEvent::Degraded {
                reason: Degradation::HighRtt
            }]
        );
        s.rtt = Duration::from_millis(20);
        let events: Vec<_> = (0..10).flat_map(|_| step(&mut m, &mut s, 15, 0)).collect();
        assert_eq!(events, vec![SessionEvent::Recovered]);
    }
}
