//! Shared by the media crate's integration tests (and, by path, the edge's): the pipeline the
//! session tests serve, a [`SessionMetrics`] that counts what a session reports, the next video
//! packet of a live session, and what ffprobe says of a written file.

#![allow(dead_code, reason = "each test binary uses a part of the helper")]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeplay_media::encode::{EncoderChoice, probe};
use edgeplay_media::pipeline::PipelineConfig;
use edgeplay_media::session::{MediaPacket, SessionMetrics, VideoPacket};
use tokio::sync::broadcast;

/// The pipeline the in-process session tests serve: 720p30, 3 Mbit/s, the encoder the probe
/// picks, with sound.
pub fn pipeline_720p30() -> PipelineConfig {
    PipelineConfig {
        width: 1280,
        height: 720,
        fps: 30,
        bitrate_kbps: 3000,
        encoder: probe(EncoderChoice::Auto).expect("an encoder"),
        keyframe_interval: 0,
        threads: 0,
        audio: true,
    }
}

/// Counts what sessions report (the edge's Prometheus registry does the same, in its own way).
#[derive(Debug, Default)]
pub struct Counts {
    pub inputs_applied: AtomicU64,
    pub intra_refresh_periods: AtomicU64,
    inputs_dropped: Mutex<BTreeMap<&'static str, u64>>,
}

impl Counts {
    /// Inputs dropped for `reason`.
    pub fn dropped(&self, reason: &str) -> u64 {
        let dropped = self.inputs_dropped.lock().expect("counts");
        dropped.get(reason).copied().unwrap_or(0)
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl SessionMetrics for Counts {
    fn intra_refresh_started(&self) {
        self.intra_refresh_periods.fetch_add(1, Ordering::Relaxed);
    }

    fn input_applied(&self) {
        self.inputs_applied.fetch_add(1, Ordering::Relaxed);
    }

    fn input_dropped(&self, reason: &'static str) {
        *self
            .inputs_dropped
            .lock()
            .expect("counts")
            .entry(reason)
            .or_default() += 1;
    }
}

/// Next video packet, skipping audio; bounded so a stalled session fails the test.
pub fn next_video(rx: &mut broadcast::Receiver<MediaPacket>) -> Arc<VideoPacket> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no video within 20 s");
        match rx.blocking_recv() {
            Ok(MediaPacket::Video(v)) => return v,
            Ok(MediaPacket::Audio(_)) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(e) => panic!("media stream ended: {e}"),
        }
    }
}

/// `ffprobe -v error ARGS PATH`, which must succeed: its stdout and stderr, trimmed.
pub fn ffprobe(args: &[&str], path: &Path) -> (String, String) {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(path)
        .output()
        .expect("ffprobe runs (cargo xtask setup installs ffmpeg)");
    assert!(out.status.success(), "ffprobe failed: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

/// The video frames ffprobe decodes from `path` (it decodes every one), and what it reports
/// on stderr: empty when it found nothing wrong.
pub fn ffprobe_frames(path: &Path) -> (u64, String) {
    let (count, errors) = ffprobe(
        &[
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ],
        path,
    );
    let count = count
        .parse()
        .unwrap_or_else(|_| panic!("ffprobe prints a frame count, not {count:?} ({errors})"));
    (count, errors)
}

/// [`ffprobe_frames`] of a file ffprobe must find nothing wrong with: the frame count.
pub fn ffprobe_frames_clean(path: &Path) -> u64 {
    let (count, errors) = ffprobe_frames(path);
    assert_eq!(errors, "", "ffprobe reports errors in {}", path.display());
    count
}
