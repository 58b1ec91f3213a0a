//! Prometheus metrics of the edge, served as text on `/metrics`.
//!
//! One [`Metrics`] per process, shared (`Arc`) by every session; the handles inside are atomics,
//! so updating them on the frame path takes no lock and allocates nothing once a label set exists.
//! The session runtime reports into it through [`SessionMetrics`]; the transports, the link and
//! the coordinate measurement update their own metrics directly.

use std::sync::Arc;
use std::time::Duration;

use edgeplay_media::session::SessionMetrics;
use edgeplay_media::stats::{FrameTimings, Stage};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

/// Registers `metric` under `name` and hands it back: each metric is declared and registered
/// in one expression.
fn registered<M: Metric + Clone>(r: &mut Registry, name: &str, help: &str, metric: M) -> M {
    r.register(name, help, metric.clone());
    metric
}

type Labels = Vec<(&'static str, String)>;

/// Every metric the edge exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Encoded video frames, all sessions (the encoder is named by `encoder_info`). A counter:
    /// its rate is the sending side of the clients' `decoded_fps_1s` (SDK `Stats`, C `EpStats`,
    /// web overlay), which counts the frames decoded in the last second.
    pub frames: Counter,
    /// Encoded video bytes, all sessions. A counter: its rate × 8 / 1000 is the sending side of
    /// the clients' `received_kbps_1s` (which also counts each frame's header on QUIC).
    pub video_bytes: Counter,
    /// Keyframes produced (requested or periodic).
    pub keyframes: Counter,
    /// Keyframe requests refused by the rate limit.
    pub keyframes_limited: Counter,
    /// The video encoder's target bitrate after the last change by a congestion controller.
    pub video_bitrate_kbps: Gauge,
    /// Encoder bitrate changes made by congestion controllers.
    pub video_bitrate_changes: Counter,
    /// Sum of the transport-cc bandwidth estimates of the live WebRTC peers, bit/s.
    pub webrtc_estimate_bps: Gauge,
    /// Encoded audio packets.
    pub audio_packets: Counter,
    /// Sessions being served now.
    pub sessions_active: Gauge,
    /// Sessions started since the process began.
    pub sessions_started: Counter,
    /// Sessions the edge admits at once (`--max-sessions`), all transports together.
    pub session_slots: Gauge,
    /// Session slots taken now ([`crate::admission`]): sessions starting, live or ending, all
    /// transports; the count the edge's heartbeats report to the broker.
    pub session_slots_used: Gauge,
    /// Joins refused because every slot was taken, by transport (`whep`, `quic`, `dev`).
    pub sessions_refused: Family<Labels, Counter>,
    /// Session-end reports dropped because too many waited for a broker link.
    pub session_reports_dropped: Counter,
    /// 1 for the encoder in use, labelled by its name.
    pub encoder_info: Family<Labels, Gauge>,
    /// Inputs applied to a game.
    pub inputs_applied: Counter,
    /// Inputs dropped, by reason (duplicate, too far ahead, queue full).
    pub inputs_dropped: Family<Labels, Counter>,
    /// Per-stage latency of the media path, in [`Stage::ALL`] order (label `stage`).
    stage_seconds: [Histogram; Stage::ALL.len()],
    /// Frames whose deadline had passed before they started (the loop fell behind).
    pub frames_late: Counter,
    /// Times a session's encoder switched to intra refresh (persistent keyframe requests).
    pub intra_refresh_periods: Counter,
    /// The QUIC rate controller's target per session (label `session`), kbit/s.
    pub quic_target_kbps: Family<Labels, Gauge>,
    /// Moves of the broker link to another broker (labels `from`, `to`, `reason`).
    pub broker_failovers: Family<Labels, Counter>,
    /// Failed dials of a broker (label `reason`: unreachable, handshake, wrong_key).
    pub broker_dial_failures: Family<Labels, Counter>,
    /// RTT samples to peer edges taken for the Vivaldi coordinate (label `result`: ok, lost).
    pub coord_samples: Family<Labels, Counter>,
    /// The Vivaldi coordinate's relative error, in thousandths.
    pub coord_error_milli: Gauge,
}

impl Metrics {
    /// Registers every metric under the `edgeplay_edge` prefix.
    #[must_use]
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("edgeplay_edge");
        let session_slots = registered(
            &mut registry,
            "session_slots",
            "Sessions this edge admits at once (--max-sessions), all transports together",
            Gauge::default(),
        );
        let session_slots_used = registered(
            &mut registry,
            "session_slots_used",
            "Session slots taken now (sessions starting, live or ending; what heartbeats report)",
            Gauge::default(),
        );
        let sessions_refused = registered(
            &mut registry,
            "sessions_refused",
            "Joins refused because every session slot was taken, by transport",
            Family::<Labels, Counter>::default(),
        );
        let stage_family = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_25, 1.6, 16))) as fn() -> Histogram,
        );
        // Handles taken once, so the frame path neither looks up nor allocates a label set.
        let stage_seconds = Stage::ALL.map(|s| {
            stage_family
                .get_or_create(&vec![("stage", s.name().to_owned())])
                .clone()
        });
        let intra_refresh_periods = registered(
            &mut registry,
            "intra_refresh_periods",
            "Times an encoder switched to intra refresh on persistent keyframe requests",
            Counter::default(),
        );
        let quic_target_kbps = registered(
            &mut registry,
            "quic_target_kbps",
            "Target bitrate of the QUIC rate controller, by session",
            Family::<Labels, Gauge>::default(),
        );
        let broker_failovers = registered(
            &mut registry,
            "broker_failovers",
            "Moves of the broker link to another broker, by previous and new broker and why",
            Family::<Labels, Counter>::default(),
        );
        let broker_dial_failures = registered(
            &mut registry,
            "broker_dial_failures",
            "Failed dials of a broker, by reason",
            Family::<Labels, Counter>::default(),
        );
        let coord_samples = registered(
            &mut registry,
            "coord_samples",
            "RTT samples to peer edges for the network coordinate, by result (ok, lost)",
            Family::<Labels, Counter>::default(),
        );
        let coord_error_milli = registered(
            &mut registry,
            "coord_error_milli",
            "Relative error of the network coordinate, in thousandths (1500: knows nothing)",
            Gauge::default(),
        );
        let frames = registered(
            &mut registry,
            "video_frames",
            "Encoded video frames, all sessions (rate() gives frames/s: the sending side of the \
             clients' decoded_fps_1s)",
            Counter::default(),
        );
        let video_bytes = registered(
            &mut registry,
            "video_bytes",
            "Encoded video bytes, all sessions (rate() x 8 / 1000 gives kbit/s: the sending side \
             of the clients' received_kbps_1s)",
            Counter::default(),
        );
        let keyframes = registered(
            &mut registry,
            "keyframes",
            "Keyframes produced",
            Counter::default(),
        );
        let keyframes_limited = registered(
            &mut registry,
            "keyframe_requests_limited",
            "Keyframe requests refused by the rate limit",
            Counter::default(),
        );
        let video_bitrate_kbps = registered(
            &mut registry,
            "video_bitrate_kbps",
            "Video encoder target bitrate after the last congestion-control change",
            Gauge::default(),
        );
        let video_bitrate_changes = registered(
            &mut registry,
            "video_bitrate_changes",
            "Encoder bitrate changes made by congestion controllers",
            Counter::default(),
        );
        let webrtc_estimate_bps = registered(
            &mut registry,
            "webrtc_estimate_bps",
            "Sum of the transport-cc bandwidth estimates of the live WebRTC peers",
            Gauge::default(),
        );
        let audio_packets = registered(
            &mut registry,
            "audio_packets",
            "Encoded Opus packets",
            Counter::default(),
        );
        let sessions_active = registered(
            &mut registry,
            "sessions_active",
            "Sessions being served now",
            Gauge::default(),
        );
        let sessions_started = registered(
            &mut registry,
            "sessions_started",
            "Sessions started since the process began",
            Counter::default(),
        );
        let session_reports_dropped = registered(
            &mut registry,
            "session_reports_dropped",
            "Session-end reports dropped because too many waited for a broker link",
            Counter::default(),
        );
        let encoder_info = registered(
            &mut registry,
            "encoder_info",
            "The video encoder in use (value 1), by name",
            Family::<Labels, Gauge>::default(),
        );
        let inputs_applied = registered(
            &mut registry,
            "inputs_applied",
            "Inputs applied to a game",
            Counter::default(),
        );
        let inputs_dropped = registered(
            &mut registry,
            "inputs_dropped",
            "Inputs dropped, by reason",
            Family::<Labels, Counter>::default(),
        );
        registry.register(
            "stage_seconds",
            "Latency of each stage of the media path",
            stage_family,
        );
        let frames_late = registered(
            &mut registry,
            "frames_late",
            "Frames started after their deadline",
            Counter::default(),
        );
        Arc::new(Self {
            registry,
            frames,
            video_bytes,
            keyframes,
            keyframes_limited,
            video_bitrate_kbps,
            video_bitrate_changes,
            webrtc_estimate_bps,
            audio_packets,
            sessions_active,
            sessions_started,
            session_slots,
            session_slots_used,
            sessions_refused,
            session_reports_dropped,
            encoder_info,
            inputs_applied,
            inputs_dropped,
            stage_seconds,
            frames_late,
            intra_refresh_periods,
            quic_target_kbps,
            broker_failovers,
            broker_dial_failures,
            coord_samples,
            coord_error_milli,
        })
    }

    /// Marks `encoder` as the one in use.
    pub fn set_encoder(&self, encoder: &str) {
        self.encoder_info
            .get_or_create(&vec![("encoder", encoder.to_owned())])
            .set(1);
    }

    /// Records one frame's stage timings.
    pub(crate) fn record_timings(&self, t: &FrameTimings) {
        for (stage, h) in Stage::ALL.iter().zip(&self.stage_seconds) {
            h.observe(secs(t.get(*stage)));
        }
    }

    /// Counts an input dropped for `reason`.
    pub(crate) fn input_dropped(&self, reason: &'static str) {
        self.inputs_dropped
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl SessionMetrics for Metrics {
    fn session_started(&self) {
        self.sessions_active.inc();
        self.sessions_started.inc();
    }

    fn session_ended(&self) {
        self.sessions_active.dec();
    }

    fn frame_late(&self) {
        self.frames_late.inc();
    }

    fn video_frame(&self, bytes: usize, timings: &FrameTimings) {
        self.frames.inc();
        self.video_bytes
            .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
        self.record_timings(timings);
    }

    fn keyframe(&self) {
        self.keyframes.inc();
    }

    fn keyframe_limited(&self) {
        self.keyframes_limited.inc();
    }

    fn intra_refresh_started(&self) {
        self.intra_refresh_periods.inc();
    }

    fn bitrate_changed(&self, kbps: u32) {
        self.video_bitrate_kbps.set(i64::from(kbps));
        self.video_bitrate_changes.inc();
    }

    fn audio_packet(&self) {
        self.audio_packets.inc();
    }

    fn input_applied(&self) {
        self.inputs_applied.inc();
    }

    fn input_dropped(&self, reason: &'static str) {
        Metrics::input_dropped(self, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_sessions_report_shows_on_metrics() {
        let m = Metrics::new();
        let s: &dyn SessionMetrics = &*m;
        s.session_started();
        s.session_started();
        s.session_ended();
        s.video_frame(1500, &FrameTimings::default());
        s.keyframe();
        s.intra_refresh_started();
        s.bitrate_changed(2500);
        s.audio_packet();
        for _ in 0..4 {
            s.input_applied();
        }
        s.input_dropped("duplicate");
        let text = m.render();
        for line in [
            "edgeplay_edge_sessions_active 1",
            "edgeplay_edge_sessions_started_total 2",
            "edgeplay_edge_video_frames_total 1",
            "edgeplay_edge_video_bytes_total 1500",
            "edgeplay_edge_keyframes_total 1",
            "edgeplay_edge_intra_refresh_periods_total 1",
            "edgeplay_edge_video_bitrate_kbps 2500",
            "edgeplay_edge_video_bitrate_changes_total 1",
            "edgeplay_edge_audio_packets_total 1",
            "edgeplay_edge_inputs_applied_total 4",
            "edgeplay_edge_inputs_dropped_total{reason=\"duplicate\"} 1",
            "edgeplay_edge_stage_seconds_count{stage=\"total\"} 1",
        ] {
            assert!(text.contains(line), "no `{line}` in:\n{text}");
        }
    }
}
