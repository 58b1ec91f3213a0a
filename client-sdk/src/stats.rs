//! What [`Session::stats`](crate::Session::stats) reports, and the latency windows behind its
//! percentiles (sans-IO: every sample comes with its instant).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Latency samples (glass-to-glass, input-to-photon) the percentiles in [`Stats`] cover.
pub const LATENCY_WINDOW: usize = 300;

/// A snapshot of a session's statistics: rates over the last second ([`RATE_WINDOW`](crate::RATE_WINDOW), names
/// ending in `_1s`), latency percentiles over the last [`LATENCY_WINDOW`] samples, and counters
/// since the session started. The C ABI's `EpStats` and the web player's overlay
/// (`client-sdk/web`) report the same statistics under the same names, by the same definitions.
///
/// Glass-to-glass compares two clocks: the render time the edge wrote into the frame's stamp
/// (the edge's wall clock) with the moment this machine's wall clock says the picture came out
/// of the decoder. It is exact when edge and client run on one machine; across machines it is
/// off by the difference of their clocks (NTP keeps that to a few ms on a LAN, tens of ms
/// across the internet), in either direction. Input-to-photon reads the client's clock only.
///
/// ```no_run
/// # fn demo(session: &edgeplay_client::Session) {
/// let s = session.stats();
/// println!(
///     "{:.1} fps, {:.0} kbit/s, {:.1} % skipped, rtt {:?}, glass-to-glass p50 {:?}, input-to-photon p95 {:?}",
///     s.decoded_fps_1s,
///     s.received_kbps_1s,
///     s.skipped_frame_ratio_1s * 100.0,
///     s.rtt,
///     s.glass_to_glass_p50,
///     s.input_to_photon_p95
/// );
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    /// Frame streams fully received, since the session started.
    pub frames_received: u64,
    /// Pictures decoded, since the session started.
    pub frames_decoded: u64,
    /// Frames skipped since the session started: lost to a reset or a gap, undecodable, or
    /// dropped because the application was slow.
    pub frames_skipped: u64,
    /// Keyframes asked for, since the session started.
    pub keyframe_requests: u64,
    /// Opus packets received, since the session started.
    pub audio_packets: u64,
    /// Pictures decoded in the last second ([`RATE_WINDOW`](crate::RATE_WINDOW)), per second: the count in
    /// `(now - 1 s, now]`.
    pub decoded_fps_1s: f64,
    /// Video received in the last second ([`RATE_WINDOW`](crate::RATE_WINDOW)), kbit/s: the bytes (frame header
    /// and payload) of the frame streams that arrived whole in `(now - 1 s, now]`, × 8 / 1000.
    /// Audio datagrams and QUIC overhead are not counted.
    pub received_kbps_1s: f64,
    /// Frames skipped / (frames handed to the application + frames skipped), both counted in
    /// the last second ([`RATE_WINDOW`](crate::RATE_WINDOW)); 0 when neither happened. Every frame ends as one of
    /// the two, so this is the share of frames the player did not get to show. Not packet loss:
    /// QUIC retransmits lost packets (see [`Stats::lost_packets`]).
    pub skipped_frame_ratio_1s: f64,
    /// Mean decode time (the access unit pushed into the decoder to the picture out) of the
    /// pictures decoded in the last second ([`RATE_WINDOW`](crate::RATE_WINDOW)); zero when none was.
    pub decode_time_1s: Duration,
    /// Smoothed round-trip time of the QUIC connection.
    pub rtt: Duration,
    /// Packets the QUIC layer declared lost, since the session started.
    pub lost_packets: u64,
    /// Packets the QUIC layer sent, since the session started.
    pub sent_packets: u64,
    /// Highest input the edge applied.
    pub input_applied: u64,
    /// Highest input covered by a committed checkpoint.
    pub input_committed: u64,
    /// Inputs still held for replay.
    pub inputs_held: usize,
    /// Glass-to-glass over the last [`LATENCY_WINDOW`] frames, median: from the render time in
    /// the frame's stamp to the SDK handing the decoded picture out. Compares the edge's clock
    /// with this machine's (see above): exact on one machine, off by the clocks' difference
    /// otherwise; zero until a frame is decoded.
    pub glass_to_glass_p50: Duration,
    /// Glass-to-glass, 95th percentile.
    pub glass_to_glass_p95: Duration,
    /// Input-to-photon over the last [`LATENCY_WINDOW`] inputs, median: from
    /// [`Session::send_input`](crate::Session::send_input) to the first decoded frame whose stamp shows the input applied.
    /// One clock (the client's); zero until an input is shown.
    pub input_to_photon_p50: Duration,
    /// Input-to-photon, 95th percentile.
    pub input_to_photon_p95: Duration,
    /// Audio chunks decoded, since the session started.
    pub audio_decoded: u64,
    /// The H.264 decoder element in use (`avdec_h264`, or one of [`HARDWARE_DECODERS`](crate::HARDWARE_DECODERS)).
    pub decoder: &'static str,
}

/// Latency samples over the last [`LATENCY_WINDOW`].
#[derive(Debug, Default)]
pub(crate) struct Latency {
    glass_to_glass: VecDeque<Duration>,
    input_to_photon: VecDeque<Duration>,
    /// When each input not yet seen in a frame's stamp was sent, oldest first.
    sent_at: VecDeque<(u64, Instant)>,
    /// When the last picture was handed out.
    pub(crate) last_frame: Option<Instant>,
}

impl Latency {
    /// Input `seq` was sent at `at`. Keeps the last `4 * LATENCY_WINDOW` inputs not yet shown.
    pub(crate) fn input_sent(&mut self, seq: u64, at: Instant) {
        if self.sent_at.len() >= LATENCY_WINDOW * 4 {
            self.sent_at.pop_front();
        }
        self.sent_at.push_back((seq, at));
    }

    /// A picture was handed out at `at`, `glass_to_glass` after the edge began rendering it;
    /// its stamp (when it has one) shows inputs up to `input_seq` applied: each sent input it
    /// covers gives an input-to-photon sample.
    pub(crate) fn frame_shown(
        &mut self,
        at: Instant,
        glass_to_glass: Duration,
        input_seq: Option<u64>,
    ) {
        self.last_frame = Some(at);
        push_window(&mut self.glass_to_glass, glass_to_glass);
        let Some(applied) = input_seq else { return };
        while let Some(&(seq, sent)) = self.sent_at.front() {
            if seq > applied {
                break;
            }
            self.sent_at.pop_front();
            push_window(
                &mut self.input_to_photon,
                at.saturating_duration_since(sent),
            );
        }
    }

    /// Glass-to-glass p50 and p95, input-to-photon p50 and p95; zero where there is no sample.
    pub(crate) fn percentiles(&self) -> [Duration; 4] {
        [
            quantile(&self.glass_to_glass, 0.5),
            quantile(&self.glass_to_glass, 0.95),
            quantile(&self.input_to_photon, 0.5),
            quantile(&self.input_to_photon, 0.95),
        ]
    }
}

fn push_window(w: &mut VecDeque<Duration>, d: Duration) {
    if w.len() == LATENCY_WINDOW {
        w.pop_front();
    }
    w.push_back(d);
}

/// The `q` quantile (0..=1) of `w`, zero when empty: the sorted sample at round((n - 1) q).
fn quantile(w: &VecDeque<Duration>, q: f64) -> Duration {
    let mut v: Vec<Duration> = w.iter().copied().collect();
    v.sort_unstable();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a window of a few hundred"
    )]
    let i = ((v.len().saturating_sub(1)) as f64 * q).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn quantiles_are_the_sorted_sample_at_the_rounded_rank() {
        let w: VecDeque<Duration> = [5, 1, 4, 2, 3].iter().map(|&n| MS * n).collect();
        assert_eq!(quantile(&w, 0.5), MS * 3);
        assert_eq!(quantile(&w, 0.95), MS * 5);
        assert_eq!(quantile(&w, 0.0), MS);
        assert_eq!(quantile(&VecDeque::new(), 0.5), Duration::ZERO);
    }

    #[test]
    fn windows_keep_the_last_samples_and_inputs_count_once_when_shown() {
        let t0 = Instant::now();
        let mut l = Latency::default();
        assert_eq!(l.percentiles(), [Duration::ZERO; 4]);
        // 400 frames: only the last LATENCY_WINDOW count, 100..400 ms.
        for i in 0..400u32 {
            l.frame_shown(t0, MS * i, None);
        }
        assert_eq!(l.glass_to_glass.len(), LATENCY_WINDOW);
        assert_eq!(l.percentiles()[0], MS * 250);
        // Inputs 1 and 2 sent 10 and 5 ms before a frame that shows both, 3 not yet shown.
        l.input_sent(1, t0);
        l.input_sent(2, t0 + MS * 5);
        l.input_sent(3, t0 + MS * 6);
        l.frame_shown(t0 + MS * 10, MS, Some(2));
        assert_eq!(l.last_frame, Some(t0 + MS * 10));
        let mut shown: Vec<Duration> = l.input_to_photon.iter().copied().collect();
        shown.sort_unstable();
        assert_eq!(shown, vec![MS * 5, MS * 10]);
        // A later frame showing the same inputs adds nothing; one without a stamp neither.
        l.frame_shown(t0 + MS * 20, MS, Some(2));
        l.frame_shown(t0 + MS * 21, MS, None);
        assert_eq!(l.input_to_photon.len(), 2);
        l.frame_shown(t0 + MS * 30, MS, Some(3));
        assert_eq!(l.input_to_photon.back(), Some(&(MS * 24)));
    }

    #[test]
    fn inputs_never_shown_are_forgotten_past_four_windows() {
        let t0 = Instant::now();
        let mut l = Latency::default();
        for seq in 1..=10_000 {
            l.input_sent(seq, t0);
        }
        assert_eq!(l.sent_at.len(), LATENCY_WINDOW * 4);
        assert_eq!(l.sent_at.front().map(|s| s.0), Some(10_000 - 4 * 300 + 1));
    }
}
