//! Frame order, gaps and keyframe requests: a sans-IO state machine (no socket, no clock; every
//! decision takes `now`) between the frame streams and the decoder.
//!
//! Each frame comes on its own QUIC stream, so frames arrive out of order, and a stream the edge
//! reset (a later keyframe superseded it) or that broke never arrives. [`FrameOrder`] hands the
//! decoder whole frames in frame order, starting at a keyframe. Over a gap it waits
//! [`GAP_PATIENCE`] for the missing frame, then skips to the first buffered keyframe after it,
//! or asks the edge for one (at most every [`KEYFRAME_REQUEST_INTERVAL`]). When the decoder falls
//! too far behind to take a frame, it resynchronises on the next keyframe.
//!
//! The driver's loop:
//!
//! ```text
//! frame stream arrived whole => order.handle_frame(now, frame)
//! frame stream reset/broken  => order.handle_lost(now)
//! any event, or poll_timeout => while let Some(f) = order.poll_frame(now) {
//!                                   if the decoder's queue is full { order.handle_decoder_full(); break }
//!                               }
//!                               skipped += order.poll_skipped();
//!                               if let Some(n) = order.poll_keyframe_request(now) { ask the edge }
//!                               sleep until order.poll_timeout() or the next event
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edgeplay_protocol::media::FrameHeader;
use tracing::debug;

/// How long a gap may wait for its frame before the SDK skips to a later keyframe.
pub const GAP_PATIENCE: Duration = Duration::from_millis(150);
/// The shortest time between two keyframe requests.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(250);
/// Frames held for reordering at most (4 s at 60 fps; the edge resets a frame's stream once a
/// later keyframe is queued, so a live edge never comes near).
pub(crate) const MAX_PENDING_FRAMES: usize = 256;
/// Bytes of frames held for reordering at most.
pub(crate) const MAX_PENDING_BYTES: usize = 64 << 20;

/// A frame whose stream arrived whole.
#[derive(Debug)]
pub(crate) struct Arrived {
    pub(crate) header: FrameHeader,
    /// The access unit.
    pub(crate) data: Vec<u8>,
    /// When its last byte arrived.
    pub(crate) received_at: Instant,
}

/// Puts frames in order for the decoder; see the module docs for the loop that drives it.
#[derive(Debug, Default)]
pub(crate) struct FrameOrder {
    /// Frames at or after `next`, by number.
    pending: BTreeMap<u32, Arrived>,
    /// The bytes of `pending`'s access units.
    pending_bytes: usize,
    /// The frame the decoder needs next; `None` until a keyframe starts (or restarts) the
    /// stream.
    next: Option<u32>,
    /// Since when frames wait behind a missing one (or since a stream was lost).
    gap_since: Option<Instant>,
    last_request: Option<Instant>,
    /// Frames skipped since the last [`FrameOrder::poll_skipped`].
    skipped: u64,
}

impl FrameOrder {
    /// Frames held for reordering.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> (usize, usize) {
        (self.pending.len(), self.pending_bytes)
    }

    /// A frame's stream arrived whole at `now`. A frame whose turn has passed is dropped.
    ///
    /// Memory stays bounded ([`MAX_PENDING_FRAMES`], [`MAX_PENDING_BYTES`]) whatever the edge
    /// sends: into a full buffer only the frame the decoder waits for and keyframes go in; a
    /// keyframe then ends the gap at once (what a gap's skip would do later), and frames
    /// numbered after the newcomer make room.
    pub(crate) fn handle_frame(&mut self, now: Instant, frame: Arrived) {
        let f = frame.header.frame;
        if self.next.is_some_and(|n| f < n) {
            return;
        }
        let len = frame.data.len();
        if !self.fits(len) {
            if frame.header.keyframe {
                self.skip_to(f);
            } else if self.next != Some(f) {
                return;
            }
            while !self.fits(len) {
                let Some(last) = self.pending.last_entry().filter(|e| *e.key() > f) else {
                    break;
                };
                self.pending_bytes -= last.remove().data.len();
            }
            if !self.fits(len) {
                return;
            }
        }
        self.pending_bytes += len;
        if let Some(old) = self.pending.insert(f, frame) {
            self.pending_bytes -= old.data.len();
        }
        self.gap(now);
    }

    /// A frame's stream was reset (a later keyframe superseded it) or broke at `now`: a gap
    /// starts, if none has.
    pub(crate) fn handle_lost(&mut self, now: Instant) {
        self.gap_since.get_or_insert(now);
    }

    /// The frame [`FrameOrder::poll_frame`] handed out last did not reach the decoder (its
    /// queue was full): counted as skipped; the stream restarts at the next keyframe.
    pub(crate) fn handle_decoder_full(&mut self) {
        self.skipped += 1;
        self.next = None;
    }

    /// The next frame for the decoder, in order, if it is here. Past [`GAP_PATIENCE`] of a gap
    /// with a keyframe buffered after it, skips to that keyframe (the frames passed over count
    /// as skipped).
    pub(crate) fn poll_frame(&mut self, now: Instant) -> Option<Arrived> {
        if self.next.is_none() {
            // Start, or restart, at the first keyframe; what comes before it cannot decode.
            let k = self.first_keyframe()?;
            self.next = Some(k);
            self.drop_before(k);
        }
        let n = self.next?;
        if !self.pending.contains_key(&n) {
            let since = self.gap(now)?;
            if now.saturating_duration_since(since) < GAP_PATIENCE {
                return None;
            }
            let k = self.first_keyframe()?;
            debug!(from = n, to = k, "skipping a gap to a keyframe");
            self.skip_to(k);
        }
        let n = self.next?;
        let frame = self.pending.remove(&n)?;
        self.pending_bytes -= frame.data.len();
        self.gap_since = None;
        self.next = Some(n.wrapping_add(1));
        Some(frame)
    }

    /// The frame to ask the edge for a keyframe from (`RequestKeyframe { missing_from }`), when
    /// a gap has waited [`GAP_PATIENCE`] with no keyframe after it, at most once per
    /// [`KEYFRAME_REQUEST_INTERVAL`].
    pub(crate) fn poll_keyframe_request(&mut self, now: Instant) -> Option<u32> {
        let since = self.gap(now)?;
        if now.saturating_duration_since(since) < GAP_PATIENCE || self.first_keyframe().is_some() {
            return None;
        }
        if self
            .last_request
            .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL)
        {
            return None;
        }
        let n = self.next?;
        debug!(missing = n, "asking for a keyframe");
        self.last_request = Some(now);
        Some(n)
    }

    /// Frames skipped since the last call: passed over by a gap, or lost to a full decoder.
    pub(crate) fn poll_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.skipped)
    }

    /// When the machine decides next on its own (a gap's patience ends, or the next keyframe
    /// request may go), once [`FrameOrder::poll_frame`] returned `None`; `None`: only a new
    /// frame or a lost stream changes anything.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let n = self.next?;
        if self.pending.is_empty() || self.pending.contains_key(&n) {
            return None;
        }
        let skip = self.gap_since? + GAP_PATIENCE;
        if self.first_keyframe().is_some() {
            return Some(skip);
        }
        Some(match self.last_request {
            Some(t) => skip.max(t + KEYFRAME_REQUEST_INTERVAL),
            None => skip,
        })
    }

    /// Whether a frame of `len` bytes fits in the buffer.
    fn fits(&self, len: usize) -> bool {
        self.pending.len() < MAX_PENDING_FRAMES && self.pending_bytes + len <= MAX_PENDING_BYTES
    }

    /// When frames wait behind a missing one: since when (from `now` on if it just began).
    fn gap(&mut self, now: Instant) -> Option<Instant> {
        let n = self.next?;
        if self.pending.is_empty() || self.pending.contains_key(&n) {
            return None;
        }
        Some(*self.gap_since.get_or_insert(now))
    }

    fn first_keyframe(&self) -> Option<u32> {
        self.pending
            .iter()
            .find(|(_, a)| a.header.keyframe)
            .map(|(f, _)| *f)
    }

    /// Goes on at keyframe `k`: the frames before it are dropped, and counted as skipped when
    /// the stream was running (not when it waits for a keyframe to start).
    fn skip_to(&mut self, k: u32) {
        if let Some(n) = self.next {
            self.skipped += u64::from(k.wrapping_sub(n));
            self.next = Some(k);
        }
        self.drop_before(k);
        self.gap_since = None;
    }

    fn drop_before(&mut self, k: u32) {
        let kept = self.pending.split_off(&k);
        for dropped in std::mem::replace(&mut self.pending, kept).into_values() {
            self.pending_bytes -= dropped.data.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use edgeplay_protocol::media::Codec;
    use edgeplay_testkit::clock::VirtualClock;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn frame_of(n: u32, keyframe: bool, len: usize, at: Instant) -> Arrived {
        Arrived {
            header: FrameHeader {
                frame: n,
                capture_us: 0,
                render_us: 0,
                pts_us: u64::from(n) * 16_667,
                keyframe,
                codec: Codec::H264,
                payload_len: u32::try_from(len).unwrap(),
            },
            data: vec![0; len],
            received_at: at,
        }
    }

    /// A machine and its clock; frames of 100 bytes, keyframes where the test says.
    struct Rig {
        clock: VirtualClock,
        order: FrameOrder,
    }

    impl Rig {
        fn new() -> Self {
            Self {
                clock: VirtualClock::new(),
                order: FrameOrder::default(),
            }
        }

        fn arrive(&mut self, n: u32, keyframe: bool) {
            let now = self.clock.now();
            self.order
                .handle_frame(now, frame_of(n, keyframe, 100, now));
        }

        /// What the driver does after each event: the frames ready now, by number.
        fn drain(&mut self) -> Vec<u32> {
            let now = self.clock.now();
            std::iter::from_fn(|| self.order.poll_frame(now))
                .map(|a| a.header.frame)
                .collect()
        }

        fn request(&mut self) -> Option<u32> {
            self.order.poll_keyframe_request(self.clock.now())
        }

        fn after(&self, d: Duration) -> Option<Instant> {
            Some(self.clock.now() + d)
        }
    }

    #[test]
    fn in_order_frames_go_straight_through() {
        let mut r = Rig::new();
        r.arrive(0, true);
        assert_eq!(r.drain(), vec![0]);
        for n in 1..100 {
            r.arrive(n, n.is_multiple_of(30));
            assert_eq!(r.drain(), vec![n]);
            assert_eq!(r.order.poll_timeout(), None);
            r.clock.advance(MS * 16);
        }
        assert_eq!((r.order.poll_skipped(), r.request()), (0, None));
        assert_eq!(r.order.pending(), (0, 0));
    }

    #[test]
    fn the_stream_starts_at_a_keyframe() {
        let mut r = Rig::new();
        // Joined mid-way: what comes before the first keyframe cannot decode.
        r.arrive(5, false);
        r.arrive(6, false);
        assert_eq!(r.drain(), Vec::<u32>::new());
        assert_eq!(
            r.order.poll_timeout(),
            None,
            "nothing to wait for but a keyframe"
        );
        r.clock.advance(MS * 500);
        assert_eq!(
            r.request(),
            None,
            "and no request: the edge starts with one"
        );
        r.arrive(8, false);
        r.arrive(7, true);
        assert_eq!(r.drain(), vec![7, 8]);
        assert_eq!(r.order.poll_skipped(), 0);
        // A frame older than the start is late: dropped.
        r.arrive(6, false);
        assert_eq!(r.drain(), Vec::<u32>::new());
        assert_eq!(r.order.pending(), (0, 0));
    }

    #[test]
    fn reordered_frames_wait_for_the_missing_one() {
        let mut r = Rig::new();
        r.arrive(0, true);
        r.arrive(2, false);
        r.arrive(3, false);
        assert_eq!(r.drain(), vec![0]);
        assert_eq!(r.order.poll_timeout(), r.after(GAP_PATIENCE));
        r.clock.advance(MS * 40);
        assert_eq!((r.drain(), r.request()), (vec![], None));
        r.arrive(1, false);
        assert_eq!(r.drain(), vec![1, 2, 3]);
        r.clock.advance(GAP_PATIENCE * 4);
        assert_eq!(
            (r.drain(), r.request(), r.order.poll_skipped()),
            (vec![], None, 0)
        );
        assert_eq!(r.order.poll_timeout(), None);
        // A duplicate of a delivered frame is dropped.
        r.arrive(3, false);
        assert_eq!(r.order.pending(), (0, 0));
    }

    #[test]
    fn a_gap_skips_to_a_buffered_keyframe_after_its_patience() {
        let mut r = Rig::new();
        r.arrive(0, true);
        r.arrive(1, false);
        assert_eq!(r.drain(), vec![0, 1]);
        // Frame 2's stream is reset: the edge queued keyframe 4 after it.
        r.order.handle_lost(r.clock.now());
        r.arrive(3, false);
        r.arrive(4, true);
        r.arrive(5, false);
        assert_eq!(r.drain(), Vec::<u32>::new());
        let skip_at = r.after(GAP_PATIENCE);
        assert_eq!(r.order.poll_timeout(), skip_at);
        r.clock.advance(GAP_PATIENCE - MS);
        assert_eq!(r.drain(), Vec::<u32>::new());
        assert_eq!(r.order.poll_timeout(), skip_at);
        r.clock.advance(MS);
        // No request: a keyframe is here; skip to it, frames 2 and 3 skipped.
        assert_eq!(r.request(), None);
        assert_eq!(r.drain(), vec![4, 5]);
        assert_eq!(r.order.poll_skipped(), 2);
        assert_eq!(r.order.poll_skipped(), 0, "counted once");
        // Frame 3 turns up late: its turn has passed.
        r.arrive(3, false);
        r.arrive(6, false);
        assert_eq!(r.drain(), vec![6]);
        assert_eq!(r.order.pending(), (0, 0));
    }

    #[test]
    fn a_gap_without_a_keyframe_asks_for_one_at_the_right_times() {
        let mut r = Rig::new();
        let t0 = r.clock.now();
        r.arrive(0, true);
        assert_eq!(r.drain(), vec![0]);
        // Frame 1 never comes; 2.. keep arriving every 16 ms; the driver polls at each.
        let mut requests = Vec::new();
        for n in 2..60 {
            r.arrive(n, false);
            assert_eq!(r.drain(), Vec::<u32>::new());
            if let Some(missing) = r.request() {
                requests.push((missing, r.clock.now() - t0));
            }
            // Between frames the driver sleeps until poll_timeout when it comes first.
            let next_frame = r.clock.now() + MS * 16;
            while let Some(t) = r.order.poll_timeout().filter(|t| *t < next_frame) {
                r.clock.advance_to(t);
                assert_eq!(r.drain(), Vec::<u32>::new());
                if let Some(missing) = r.request() {
                    requests.push((missing, r.clock.now() - t0));
                }
            }
            r.clock.advance_to(next_frame);
        }
        // The gap began when frame 2 arrived (t0): asked at 150 ms, then every 250 ms.
        let at = |ms: u64| (1, MS * u32::try_from(ms).unwrap());
        assert_eq!(requests, vec![at(150), at(400), at(650), at(900)]);
        assert_eq!(r.order.poll_skipped(), 0);
        // The keyframe answers: the gap is past its patience, so it is skipped to at once.
        r.arrive(60, true);
        assert_eq!(r.drain(), vec![60]);
        assert_eq!(r.order.poll_skipped(), 59);
        assert_eq!(r.order.poll_timeout(), None);
        assert_eq!(r.order.pending(), (0, 0));
        // A new gap right away waits its patience and the interval since the last request
        // (at 900 ms): the next request goes at 1150 ms.
        r.arrive(62, false);
        assert_eq!(r.order.poll_timeout(), Some(t0 + MS * 1150));
        r.clock.advance(GAP_PATIENCE);
        assert_eq!(r.request(), None);
        r.clock.advance_to(t0 + MS * 1150);
        assert_eq!(r.request(), Some(61));
    }

    #[test]
    fn requests_keep_their_interval_across_gaps() {
        let mut r = Rig::new();
        r.arrive(0, true);
        r.arrive(2, false);
        assert_eq!(r.drain(), vec![0]);
        r.clock.advance(GAP_PATIENCE);
        assert_eq!(r.request(), Some(1));
        // The missing frame arrives: no more requests for that gap.
        r.arrive(1, false);
        assert_eq!(r.drain(), vec![1, 2]);
        r.arrive(4, false);
        r.clock.advance(GAP_PATIENCE);
        // A second gap past its patience, but only 150 ms after the last request.
        assert_eq!(r.request(), None);
        assert_eq!(
            r.order.poll_timeout(),
            r.after(KEYFRAME_REQUEST_INTERVAL - GAP_PATIENCE)
        );
        r.clock.advance(KEYFRAME_REQUEST_INTERVAL - GAP_PATIENCE);
        assert_eq!(r.request(), Some(3));
    }

    #[test]
    fn a_lost_stream_starts_the_gap_clock() {
        let mut r = Rig::new();
        r.arrive(0, true);
        assert_eq!(r.drain(), vec![0]);
        let lost_at = r.clock.now();
        r.order.handle_lost(lost_at);
        // Nothing waits behind the loss yet: nothing to decide.
        assert_eq!(r.order.poll_timeout(), None);
        r.clock.advance(MS * 100);
        r.arrive(2, false);
        assert_eq!(r.drain(), Vec::<u32>::new());
        assert_eq!(r.order.poll_timeout(), Some(lost_at + GAP_PATIENCE));
        r.clock.advance(MS * 50);
        assert_eq!(r.request(), Some(1));
    }

    #[test]
    fn a_full_decoder_restarts_the_stream_at_the_next_keyframe() {
        let mut r = Rig::new();
        r.arrive(0, true);
        r.arrive(1, false);
        r.arrive(2, false);
        let now = r.clock.now();
        assert_eq!(r.order.poll_frame(now).map(|a| a.header.frame), Some(0));
        assert_eq!(r.order.poll_frame(now).map(|a| a.header.frame), Some(1));
        // Frame 1 did not fit the decoder's queue.
        r.order.handle_decoder_full();
        assert_eq!(r.order.poll_skipped(), 1);
        assert_eq!(r.drain(), Vec::<u32>::new());
        r.arrive(3, false);
        assert_eq!(r.drain(), Vec::<u32>::new());
        r.clock.advance(GAP_PATIENCE * 4);
        assert_eq!((r.request(), r.order.poll_timeout()), (None, None));
        r.arrive(4, true);
        assert_eq!(r.drain(), vec![4]);
        assert_eq!(r.order.pending(), (0, 0));
    }

    #[test]
    fn a_full_buffer_keeps_the_awaited_frame_and_keyframes() {
        let mut r = Rig::new();
        r.arrive(0, true);
        assert_eq!(r.drain(), vec![0]);
        // Frame 1 is missing and the edge never answers: the buffer fills.
        for n in 2..1000 {
            r.arrive(n, false);
        }
        assert_eq!(
            r.order.pending(),
            (MAX_PENDING_FRAMES, MAX_PENDING_FRAMES * 100)
        );
        // The awaited frame still goes in, pushing out the newest.
        r.arrive(1, false);
        assert_eq!(r.order.pending().0, MAX_PENDING_FRAMES);
        let got = r.drain();
        assert_eq!(
            got,
            (1..=u32::try_from(MAX_PENDING_FRAMES).unwrap()).collect::<Vec<_>>()
        );
        // Full again, then a keyframe: the gap ends at once, the frames before it skipped.
        for n in 2000..3000 {
            r.arrive(n, false);
        }
        r.arrive(5000, true);
        assert_eq!(r.drain(), vec![5000]);
        assert_eq!(r.order.poll_skipped(), 5000 - 257);
        assert_eq!(r.order.pending(), (0, 0));
    }

    #[test]
    fn hostile_frames_keep_memory_bounded_and_order_monotonic() {
        let clock = VirtualClock::new();
        let mut order = FrameOrder::default();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move || {
            // xorshift64*: deterministic and dependency-free.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let mut last: Option<u32> = None;
        let mut delivered = 0;
        for i in 0..20_000u32 {
            let r = rand();
            let n = u32::try_from(r % 100_000).unwrap();
            let len = usize::try_from((r >> 20) % (2 << 20)).unwrap();
            let now = clock.now();
            match r >> 60 {
                0 => order.handle_lost(now),
                1 if i % 3 == 0 => {
                    // The stream restarts at a keyframe, which may be numbered lower.
                    order.handle_decoder_full();
                    last = None;
                }
                k => order.handle_frame(now, frame_of(n, k == 2, len, now)),
            }
            let (frames, bytes) = order.pending();
            assert!(frames <= MAX_PENDING_FRAMES, "{frames} frames held");
            assert!(bytes <= MAX_PENDING_BYTES, "{bytes} bytes held");
            while let Some(a) = order.poll_frame(now) {
                delivered += 1;
                if let Some(l) = last {
                    assert!(a.header.frame > l, "{} after {l}", a.header.frame);
                }
                last = Some(a.header.frame);
            }
            let _ = order.poll_keyframe_request(now);
            let _ = order.poll_skipped();
            // Everything due now was done: the next decision is later (no busy loop).
            if let Some(t) = order.poll_timeout() {
                assert!(t > now, "timeout {:?} in the past", now - t);
            }
            clock.advance(MS * u32::try_from(r % 40).unwrap());
        }
        assert!(delivered > 0);
    }
}
