//! What a session's tasks, its decoder threads and the application share: the counters, the
//! input machine, the latency windows and the rates, each behind its own short-held lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgeplay_game::stamp::Stamp;
use tokio::sync::Notify;

use crate::input::InputQueue;
use crate::rate::Rates;
use crate::stats::{Latency, Stats};

/// Counters since the session started.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) decoded: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) keyframe_requests: AtomicU64,
    pub(crate) audio: AtomicU64,
    pub(crate) audio_decoded: AtomicU64,
}

#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) counters: Counters,
    inputs: Mutex<InputQueue>,
    /// Wakes the input resend task when an input was pushed (its timer may have changed).
    pub(crate) inputs_changed: Notify,
    latency: Mutex<Latency>,
    rates: Mutex<Rates>,
    /// Why the edge ended the session, from its goodbye.
    goodbye: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn inputs(&self) -> MutexGuard<'_, InputQueue> {
        self.inputs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn latency(&self) -> MutexGuard<'_, Latency> {
        self.latency.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps why the edge ended the session, for the [`crate::SessionEvent::Closed`] event.
    pub(crate) fn set_goodbye(&self, reason: String) {
        *self.goodbye.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
    }

    /// Why the edge ended the session, if it said goodbye.
    pub(crate) fn goodbye(&self) -> Option<String> {
        self.goodbye
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn rates(&self) -> MutexGuard<'_, Rates> {
        self.rates.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a frame stream of `bytes` (header and payload) received whole at `at`.
    pub(crate) fn record_received(&self, bytes: u64, at: Instant) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        self.rates().received_bytes.record(at, bytes);
    }

    /// Counts a picture out of the decoder at `at`, `decode` after its access unit went in.
    pub(crate) fn record_decoded(&self, decode: Duration, at: Instant) {
        self.counters.decoded.fetch_add(1, Ordering::Relaxed);
        let mut rates = self.rates();
        rates.decoded.record(at, 1);
        let ns = u64::try_from(decode.as_nanos()).unwrap_or(u64::MAX);
        rates.decode_ns.record(at, ns);
    }

    /// Counts a frame handed to the application at `at`.
    pub(crate) fn record_delivered(&self, at: Instant) {
        self.rates().delivered.record(at, 1);
    }

    /// Counts `n` frames skipped at `at`.
    pub(crate) fn record_skipped(&self, n: u64, at: Instant) {
        self.counters.skipped.fetch_add(n, Ordering::Relaxed);
        self.rates().skipped.record(at, n);
    }

    /// Records a picture handed out at `at`: glass-to-glass from `render_us` (its stamp's
    /// render time, on the edge's wall clock) to this machine's wall clock now, and
    /// input-to-photon for every sent input its stamp shows applied.
    pub(crate) fn record_shown(&self, stamp: Option<&Stamp>, render_us: u64, at: Instant) {
        let g2g = Duration::from_micros(unix_us().saturating_sub(render_us));
        self.latency()
            .frame_shown(at, g2g, stamp.map(|s| u64::from(s.input_seq)));
    }

    /// The statistics at `now`, with what the QUIC connection and the decoder say.
    pub(crate) fn stats(
        &self,
        now: Instant,
        rtt: Duration,
        path: &quinn::PathStats,
        decoder: &'static str,
    ) -> Stats {
        let c = &self.counters;
        let rates = self.rates().at(now);
        let [g2g50, g2g95, i2p50, i2p95] = self.latency().percentiles();
        let inputs = self.inputs();
        Stats {
            frames_received: c.received.load(Ordering::Relaxed),
            frames_decoded: c.decoded.load(Ordering::Relaxed),
            frames_skipped: c.skipped.load(Ordering::Relaxed),
            keyframe_requests: c.keyframe_requests.load(Ordering::Relaxed),
            audio_packets: c.audio.load(Ordering::Relaxed),
            decoded_fps_1s: rates.decoded_fps,
            received_kbps_1s: rates.received_kbps,
            skipped_frame_ratio_1s: rates.skipped_frame_ratio,
            decode_time_1s: rates.decode_time,
            rtt,
            lost_packets: path.lost_packets,
            sent_packets: path.sent_packets,
            input_applied: inputs.applied(),
            input_committed: inputs.committed(),
            inputs_held: inputs.held(),
            glass_to_glass_p50: g2g50,
            glass_to_glass_p95: g2g95,
            input_to_photon_p50: i2p50,
            input_to_photon_p95: i2p95,
            audio_decoded: c.audio_decoded.load(Ordering::Relaxed),
            decoder,
        }
    }
}

/// This machine's wall clock, µs since the Unix epoch (the frame stamps' clock).
pub(crate) fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
