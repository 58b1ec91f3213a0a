//! When a session makes keyframes, and when it stops making them: sans-IO, `now` in, decisions
//! out; the session runtime drives it once per frame.
//!
//! A receiver that lost something asks for a keyframe. Requests are rate-limited: at most one
//! IDR per [`KEYFRAME_MIN_INTERVAL`]; requests inside it are merged into the next allowed one.
//! A path that keeps losing keeps asking, and a train of IDRs (each several times a P-frame)
//! makes the loss worse, so **persistent** requests — [`PERSISTENT_REQUESTS`] or more within
//! [`PERSISTENT_WINDOW`] — switch the encoder to periodic intra refresh: a column of intra
//! blocks sweeps the picture once a second, repairing any damage without a burst, and further
//! requests are absorbed (counted, no IDR). When no request has come for
//! [`INTRA_REFRESH_HOLD`], the encoder goes back to plain P-frames with IDRs on request.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use edgeplay_media::keyframe::KeyframePolicy;
//!
//! let t0 = Instant::now();
//! let mut policy = KeyframePolicy::new(true);
//! policy.handle_request(t0);
//! let d = policy.poll(t0);
//! assert!(d.force_idr && !d.intra_refresh);
//! policy.handle_keyframe_sent(t0);
//! for i in 1..=3 {
//!     policy.handle_request(t0 + Duration::from_millis(300 * i));
//! }
//! assert!(policy.poll(t0 + Duration::from_millis(900)).intra_refresh);
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The shortest time between two requested keyframes; requests inside it are deferred.
pub const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(250);
/// Requests within [`PERSISTENT_WINDOW`] that count as persistent.
pub const PERSISTENT_REQUESTS: usize = 3;
/// The window persistent requests are counted over.
pub const PERSISTENT_WINDOW: Duration = Duration::from_secs(2);
/// How long intra refresh stays on after the last request.
pub const INTRA_REFRESH_HOLD: Duration = Duration::from_secs(5);

/// What the encoder should do for the next picture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyframeDecision {
    /// Make this picture an IDR.
    pub force_idr: bool,
    /// Whether intra refresh should be on.
    pub intra_refresh: bool,
}

/// Keyframe rate limit and the intra-refresh switch. See the [module docs](self).
#[derive(Debug, Default)]
pub struct KeyframePolicy {
    /// Whether the encoder can do intra refresh; without, requests always make IDRs.
    available: bool,
    wanted: bool,
    last_keyframe: Option<Instant>,
    /// Request times within [`PERSISTENT_WINDOW`].
    recent: VecDeque<Instant>,
    last_request: Option<Instant>,
    intra_refresh: bool,
    absorbed: u64,
    merged: u64,
}

impl KeyframePolicy {
    /// No keyframe wanted, intra refresh off; `intra_refresh_available` says whether the
    /// encoder can switch to it (without, persistent requests still get rate-limited IDRs).
    #[must_use]
    pub fn new(intra_refresh_available: bool) -> Self {
        Self {
            available: intra_refresh_available,
            ..Self::default()
        }
    }

    /// A receiver asked for a keyframe at `now`.
    pub fn handle_request(&mut self, now: Instant) {
        self.last_request = Some(now);
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > PERSISTENT_WINDOW)
        {
            self.recent.pop_front();
        }
        if self.available && self.recent.len() >= PERSISTENT_REQUESTS {
            self.intra_refresh = true;
        }
        if self.intra_refresh {
            self.absorbed += 1;
        } else if self.wanted {
            self.merged += 1;
        } else {
            self.wanted = true;
        }
    }

    /// A new viewer needs a decodable start: an IDR as soon as allowed, whatever the mode.
    pub fn handle_new_viewer(&mut self) {
        self.wanted = true;
        self.last_keyframe = None;
    }

    /// The encoder produced a keyframe at `now`.
    pub fn handle_keyframe_sent(&mut self, now: Instant) {
        self.last_keyframe = Some(now);
    }

    /// The decision for the picture encoded at `now`.
    pub fn poll(&mut self, now: Instant) -> KeyframeDecision {
        if self.intra_refresh
            && self
                .last_request
                .is_none_or(|t| now.saturating_duration_since(t) >= INTRA_REFRESH_HOLD)
        {
            self.intra_refresh = false;
            self.recent.clear();
        }
        let allowed = self
            .last_keyframe
            .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_MIN_INTERVAL);
        let force_idr = self.wanted && allowed;
        if force_idr {
            self.wanted = false;
        }
        KeyframeDecision {
            force_idr,
            intra_refresh: self.intra_refresh,
        }
    }

    /// Whether intra refresh is on.
    #[must_use]
    pub fn intra_refresh(&self) -> bool {
        self.intra_refresh
    }

    /// Requests absorbed by intra refresh (no IDR made for them).
    #[must_use]
    pub fn absorbed(&self) -> u64 {
        self.absorbed
    }

    /// Requests merged into an IDR already pending behind the rate limit.
    #[must_use]
    pub fn merged(&self) -> u64 {
        self.merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeplay_testkit::clock::VirtualClock;

    /// Runs `frames` frames of 16 ms, asking for a keyframe every `every` frames (0: never);
    /// returns the IDRs made and whether intra refresh was on at the end.
    fn run(p: &mut KeyframePolicy, clock: &VirtualClock, frames: u32, every: u32) -> (u32, bool) {
        let mut idrs = 0;
        for f in 1..=frames {
            if every > 0 && f % every == 0 {
                p.handle_request(clock.now());
            }
            let d = p.poll(clock.now());
            if d.force_idr {
                idrs += 1;
                p.handle_keyframe_sent(clock.now());
            }
            clock.advance(Duration::from_millis(16));
        }
        (idrs, p.intra_refresh())
    }

    #[test]
    fn sparse_requests_get_rate_limited_idrs() {
        let clock = VirtualClock::new();
        let mut p = KeyframePolicy::new(true);
        // One request every 2 s (125 frames): each gets its IDR, no intra refresh.
        let (idrs, ir) = run(&mut p, &clock, 125 * 5, 125);
        assert_eq!((idrs, ir), (5, false));
        // Two requests at once, long after the last: one IDR now, the second merged.
        clock.advance(PERSISTENT_WINDOW);
        p.handle_request(clock.now());
        p.handle_request(clock.now());
        let (idrs, _) = run(&mut p, &clock, 30, 0);
        assert_eq!(idrs, 1);
        assert_eq!(p.merged(), 1);
    }

    #[test]
    fn persistent_requests_switch_to_intra_refresh_and_it_reverts() {
        let clock = VirtualClock::new();
        let mut p = KeyframePolicy::new(true);
        // A request every 500 ms (31 frames) for 5 s: persistent after the third.
        let (idrs, ir) = run(&mut p, &clock, 310, 31);
        assert!(ir, "intra refresh on");
        assert_eq!(idrs, 2, "only the requests before the switch made IDRs");
        assert!(p.absorbed() >= 7, "{} absorbed", p.absorbed());
        // Quiet for longer than the hold: back to IDRs on request.
        let (idrs, ir) = run(&mut p, &clock, 350, 0);
        assert_eq!((idrs, ir), (0, false));
        p.handle_request(clock.now());
        assert!(p.poll(clock.now()).force_idr);
    }

    #[test]
    fn without_intra_refresh_persistent_requests_still_get_limited_idrs() {
        let clock = VirtualClock::new();
        let mut p = KeyframePolicy::new(false);
        let (idrs, ir) = run(&mut p, &clock, 310, 31);
        assert_eq!((idrs, ir), (10, false));
        let (idrs, _) = run(&mut p, &clock, 310, 5);
        assert!(
            (18..=21).contains(&idrs),
            "{idrs} IDRs, at most one per 250 ms"
        );
    }

    #[test]
    fn a_new_viewer_gets_an_idr_even_in_intra_refresh() {
        let clock = VirtualClock::new();
        let mut p = KeyframePolicy::new(true);
        for _ in 0..3 {
            p.handle_request(clock.now());
            clock.advance(Duration::from_millis(100));
        }
        let _ = p.poll(clock.now());
        assert!(p.intra_refresh());
        p.handle_new_viewer();
        let d = p.poll(clock.now());
        assert!(d.force_idr && d.intra_refresh);
    }
}
