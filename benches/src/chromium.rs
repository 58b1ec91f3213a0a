//! Headless Chromium playing the web player: one run of client-sdk/web/tests/bench.mjs, which
//! opens a page, waits for 30 stamped frames, presses a key every 250 ms for the given time and
//! prints every sample the page measured from the frame stamps:
//! - glass-to-glass: the stamp's render time → the frame's expected display time (same clock);
//! - input-to-photon: key sent → first shown frame whose stamp includes that input;
//! - audio behind video: then, flying the ship around until ten hits, the tone's onset in the
//!   page's WebAudio tap → the shown frame with the hit's flash, per hit (> 0: audio late).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The web player's directory (client-sdk/web), its `dist/` freshly built.
///
/// # Errors
/// npm is missing, the build fails, or playwright-core is not installed (`cargo xtask setup`).
pub fn build_player() -> Result<PathBuf> {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-sdk/web");
    let build = Command::new("npm")
        .args(["run", "--silent", "build"])
        .current_dir(&web)
        .status()
        .context("npm runs (npm and node installed? `cargo xtask setup`)")?;
    if !build.success() || !web.join("node_modules/playwright-core").exists() {
        bail!("the web player did not build: run `cargo xtask setup`");
    }
    Ok(web)
}

/// The Chromium the runs use (`CHROMIUM`, else /usr/bin/chromium).
#[must_use]
pub fn executable() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// What the page measured, summed over runs.
#[derive(Debug, Default)]
pub struct PageFigures {
    /// Glass-to-glass samples, one per shown frame whose stamp was read.
    pub g2g: Vec<Duration>,
    /// Input-to-photon samples, one per key press or release.
    pub i2p: Vec<Duration>,
    /// Audio-behind-video offsets, ms, one per hit (negative: audio early).
    pub av_ms: Vec<f64>,
    /// NetEq's audio jitter buffer while the hits were flown, ms (getStats, half-second means).
    pub audio_buffer_ms: Vec<f64>,
    /// Frames shown.
    pub presented: u64,
    /// Frames the browser dropped.
    pub dropped: u64,
    /// Seconds measured.
    pub seconds: f64,
}

impl PageFigures {
    /// Adds `other`'s samples and counts to these.
    pub fn absorb(&mut self, other: PageFigures) {
        self.g2g.extend(other.g2g);
        self.i2p.extend(other.i2p);
        self.av_ms.extend(other.av_ms);
        self.audio_buffer_ms.extend(other.audio_buffer_ms);
        self.presented += other.presented;
        self.dropped += other.dropped;
        self.seconds += other.seconds;
    }

    /// Frames shown per second measured.
    #[must_use]
    pub fn fps(&self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "frame counts fit f64 exactly")]
        let shown = self.presented as f64;
        shown / self.seconds.max(1e-9)
    }
}

/// The finite numbers of the array `key` (signed, in the page's unit).
fn finite(v: &serde_json::Value, key: &str) -> Vec<f64> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(serde_json::Value::as_f64)
                .filter(|x| x.is_finite())
                .collect()
        })
        .unwrap_or_default()
}

/// The non-negative millisecond samples of the array `key`, as durations.
fn samples(v: &serde_json::Value, key: &str) -> Vec<Duration> {
    finite(v, key)
        .into_iter()
        .filter(|ms| *ms >= 0.0)
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .collect()
}

/// One Chromium run of `seconds` on `page`, then up to `av_hits` audio-behind-video samples (0:
/// none; the page needs `avsync=1`): what the page measured. With `audio_target_ms`, the audio
/// receiver's `jitterBufferTarget` is set to it. node runs on a blocking thread.
///
/// # Errors
/// node or Chromium fails, or the page shows an error or too few frames.
pub async fn browse(
    web: &Path,
    page: &str,
    seconds: u32,
    av_hits: u32,
    audio_target_ms: Option<u32>,
) -> Result<PageFigures> {
    let mut cmd = Command::new("timeout");
    cmd.args([
        &(seconds + 140).to_string(),
        "node",
        "tests/bench.mjs",
        page,
    ])
    .arg(seconds.to_string())
    .arg(av_hits.to_string())
    .args(audio_target_ms.map(|ms| ms.to_string()))
    .current_dir(web);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .context("node runs (npm and node installed? `cargo xtask setup`)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).with_context(|| {
        format!(
            "bench.mjs printed no result: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if v["ok"] != true {
        bail!("bench.mjs failed: {stdout}");
    }
    Ok(PageFigures {
        g2g: samples(&v, "g2g"),
        i2p: samples(&v, "i2p"),
        av_ms: finite(&v, "av"),
        audio_buffer_ms: finite(&v, "audioBufferMs"),
        presented: v["presented"].as_u64().unwrap_or(0),
        dropped: v["dropped"].as_u64().unwrap_or(0),
        seconds: v["seconds"].as_f64().unwrap_or(0.0),
    })
}
