//! Media encoding with GStreamer: H.264 video (NVENC first, x264 fallback), Opus audio and
//! files. (Decoding, for tests and native clients, is `edgeplay-decode`'s.)
//!
//! No GStreamer type appears in this module's public API: callers hand in NV12 bytes and PCM
//! samples with their presentation time, and get Annex-B access units and Opus packets back.
//!
//! How to drive it:
//! 1. [`probe`] once at start-up: it opens a real NVENC session (data-centre GPUs such as the
//!    A100, H100 and H200 have no NVENC even though the driver loads) and falls back to x264.
//! 2. One [`VideoEncoder`] per session. Each tick, [`VideoEncoder::encode`] lends the caller a
//!    pooled NV12 buffer to fill (the GPU readback lands there, the only copy), pushes it and
//!    returns the access unit for that very frame: the pipeline is configured so that one frame
//!    in gives one access unit out (no B-frames, no lookahead). The call blocks for the encode
//!    time, so run it on the session's media thread, not on an async executor.
//! 3. One [`AudioEncoder`] per session: [`AudioEncoder::push`] the tick's samples with the
//!    tick's PTS and [`AudioEncoder::pull`] the finished 10 ms Opus packets.
//! 4. Optionally a [`MediaFileWriter`] records what the session sent (`.h264`, `.mkv`, `.mp4`).
//!
//! ```no_run
//! use std::time::Duration;
//! use edgeplay_media::encode::{probe, EncoderChoice, VideoConfig, VideoEncoder};
//!
//! # fn main() -> Result<(), edgeplay_media::encode::EncodeError> {
//! let encoder = probe(EncoderChoice::Auto)?;
//! let cfg = VideoConfig {
//!     width: 1280,
//!     height: 720,
//!     fps: 60,
//!     bitrate_kbps: 4000,
//!     encoder,
//!     keyframe_interval: 0,
//!     threads: 0,
//! };
//! let mut video = VideoEncoder::new(&cfg)?;
//! for n in 0..60u32 {
//!     let pts = Duration::from_secs(u64::from(n)) / cfg.fps;
//!     let (au, ()) = video.encode(pts, false, |nv12| nv12.fill(128))?;
//!     assert_eq!(au.pts, pts);
//! }
//! # Ok(())
//! # }
//! ```

mod audio;
mod video;
mod writer;

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
// The GStreamer time conversions the decoder uses too, re-exported for the encoders.
pub(crate) use edgeplay_decode::pipe::{clock_time, running_time};

pub use audio::{AUDIO_CHANNELS, AUDIO_FRAME, AUDIO_SAMPLE_RATE, AudioEncoder, EncodedAudio};
pub use video::{
    AccessUnits, EncodedFrame, EncoderStats, H264Profile, MAX_QUEUED, VideoConfig, VideoEncoder,
    h264_level,
};
pub use writer::MediaFileWriter;

/// How long [`probe`] waits for the NVENC test session to produce its first access unit.
const NVENC_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// NVENC H.264 element names, in the order [`probe`] tries them. GStreamer 1.22 registers
/// `nvh264enc` (the classic implementation) and, when built with the new one, `nvcudah264enc`
/// and `nvautogpuh264enc`; each is registered only when the driver's NVENC library loads.
const NVENC_ELEMENTS: [&str; 3] = ["nvh264enc", "nvcudah264enc", "nvautogpuh264enc"];

/// Which encoder the operator asked for (`--encoder`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EncoderChoice {
    /// NVENC when a real encoder session opens, otherwise x264.
    #[default]
    Auto,
    /// NVENC or fail with [`EncodeError::NvencUnavailable`].
    Nvenc,
    /// x264 (software) only.
    X264,
}

/// The encoder [`probe`] found usable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EncoderKind {
    /// NVIDIA NVENC through the named GStreamer element (`nvh264enc`, `nvautogpuh264enc`, ...).
    Nvenc {
        /// GStreamer element factory name.
        element: String,
    },
    /// Software x264 (`x264enc`).
    X264,
}

impl EncoderKind {
    /// The GStreamer element factory this encoder uses.
    #[must_use]
    pub fn element(&self) -> &str {
        match self {
            Self::Nvenc { element } => element,
            Self::X264 => "x264enc",
        }
    }

    /// Whether this is a hardware encoder.
    #[must_use]
    pub fn is_hardware(&self) -> bool {
        matches!(self, Self::Nvenc { .. })
    }
}

impl fmt::Display for EncoderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nvenc { element } => write!(f, "nvenc ({element})"),
            Self::X264 => f.write_str("x264 (x264enc)"),
        }
    }
}

/// Everything that can go wrong in this module.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// `gst::init` failed (no GStreamer libraries, broken registry).
    #[error("GStreamer could not be initialised: {message}; run `cargo xtask setup`")]
    Init {
        /// GStreamer's message.
        message: String,
    },
    /// A GStreamer element this pipeline needs is not installed.
    #[error(
        "GStreamer element `{element}` is missing (Debian package {package}); run `cargo xtask setup`"
    )]
    MissingElement {
        /// Element factory name.
        element: &'static str,
        /// Debian package that provides it.
        package: &'static str,
    },
    /// NVENC was required but no encoder session could be opened.
    #[error(
        "NVENC is unavailable: {reason}. NVENC needs an NVIDIA GPU with an encoder engine \
         (data-centre GPUs such as A100, H100 and H200 have none), the driver's libnvidia-encode \
         and GStreamer's nvcodec plugin (gstreamer1.0-plugins-bad); or choose `--encoder auto` \
         or `--encoder x264`"
    )]
    NvencUnavailable {
        /// What each NVENC element reported.
        reason: String,
    },
    /// The configuration cannot be encoded.
    #[error("invalid media configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// A pipeline element posted an error, or the pipeline refused to start.
    #[error("GStreamer pipeline error from {element}: {message}")]
    Pipeline {
        /// Path of the element that failed.
        element: String,
        /// The error message.
        message: String,
        /// GStreamer's debug details, when any.
        debug: Option<String>,
    },
    /// Nothing came out of the pipeline in time.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// How long.
        waited: Duration,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// [`MediaFileWriter`] does not know the file's extension.
    #[error(
        "{path}: unsupported media file extension; supported: .h264 (raw Annex-B video), \
         .mkv (H.264 + Opus), .mp4 (H.264 + Opus)"
    )]
    UnsupportedFile {
        /// The file.
        path: PathBuf,
    },
    /// The stream was already finished (end of stream sent).
    #[error("the {what} stream is already finished")]
    Finished {
        /// Which stream.
        what: &'static str,
    },
}

/// Finds the encoder to use. Initialises GStreamer.
///
/// `Auto` opens a real NVENC session (a tiny pipeline that must encode one frame within 3 s)
/// and logs at info why NVENC is not used when it fails; then it checks for x264.
///
/// # Errors
/// [`EncodeError::NvencUnavailable`] when `Nvenc` is forced and no session opens;
/// [`EncodeError::MissingElement`] when `h264parse` or (for x264) `x264enc` is missing.
pub fn probe(choice: EncoderChoice) -> Result<EncoderKind, EncodeError> {
    init()?;
    require("h264parse")?;
    match choice {
        EncoderChoice::X264 => {
            require("x264enc")?;
            Ok(EncoderKind::X264)
        }
        EncoderChoice::Nvenc => {
            probe_nvenc().map_err(|reason| EncodeError::NvencUnavailable { reason })
        }
        EncoderChoice::Auto => match probe_nvenc() {
            Ok(kind) => Ok(kind),
            Err(reason) => {
                tracing::info!(%reason, "NVENC unavailable; falling back to x264");
                require("x264enc")?;
                Ok(EncoderKind::X264)
            }
        },
    }
}

/// Tries each NVENC element; the first that encodes a test frame wins. `Err` says why none did.
fn probe_nvenc() -> Result<EncoderKind, String> {
    let registered: Vec<&str> = NVENC_ELEMENTS
        .into_iter()
        .filter(|name| gst::ElementFactory::find(name).is_some())
        .collect();
    if registered.is_empty() {
        return Err(format!(
            "{} not registered: no NVIDIA driver with NVENC, or the nvcodec plugin \
             (gstreamer1.0-plugins-bad) is missing",
            NVENC_ELEMENTS.join(", ")
        ));
    }
    let mut reasons = Vec::new();
    for element in registered {
        let kind = EncoderKind::Nvenc {
            element: element.to_owned(),
        };
        let started = Instant::now();
        match open_test_session(&kind) {
            Ok(()) => {
                tracing::info!(%element, took = ?started.elapsed(), "NVENC session opened");
                return Ok(kind);
            }
            Err(e) => {
                tracing::debug!(%element, error = %e, "NVENC test session failed");
                reasons.push(format!(
                    "{element} is registered but no encoder session opens: {e}"
                ));
            }
        }
    }
    Err(reasons.join("; "))
}

/// Encodes one small frame with `kind`, bounded by [`NVENC_PROBE_TIMEOUT`].
fn open_test_session(kind: &EncoderKind) -> Result<(), EncodeError> {
    let cfg = VideoConfig {
        width: 320,
        height: 240,
        fps: 30,
        bitrate_kbps: 500,
        encoder: kind.clone(),
        keyframe_interval: 0,
        threads: 0,
    };
    let mut encoder = VideoEncoder::new(&cfg)?;
    encoder.set_timeout(NVENC_PROBE_TIMEOUT);
    let (frame, ()) = encoder.encode(Duration::ZERO, true, |nv12| nv12.fill(128))?;
    if frame.data.is_empty() {
        return Err(EncodeError::Pipeline {
            element: kind.element().to_owned(),
            message: "the test frame encoded to nothing".to_owned(),
            debug: None,
        });
    }
    Ok(())
}

/// `gst::init`, mapped to [`EncodeError::Init`].
fn init() -> Result<(), EncodeError> {
    gst::init().map_err(|e| EncodeError::Init {
        message: e.to_string(),
    })
}

/// The Debian package that ships a GStreamer element.
fn package_of(element: &str) -> &'static str {
    match element {
        "x264enc" => "gstreamer1.0-plugins-ugly",
        "h264parse" | "opusparse" | "nvh264enc" | "nvcudah264enc" | "nvautogpuh264enc" => {
            "gstreamer1.0-plugins-bad"
        }
        "matroskamux" | "mp4mux" => "gstreamer1.0-plugins-good",
        "avdec_h264" => "gstreamer1.0-libav",
        "filesink" | "fakesink" | "capsfilter" | "queue" => "libgstreamer1.0-0",
        // opusenc, appsrc, appsink, audioconvert, videoconvert, videoscale.
        _ => "gstreamer1.0-plugins-base",
    }
}

/// Checks that `element` is installed.
fn require(element: &'static str) -> Result<(), EncodeError> {
    if gst::ElementFactory::find(element).is_some() {
        Ok(())
    } else {
        Err(EncodeError::MissingElement {
            element,
            package: package_of(element),
        })
    }
}

/// Creates an element, mapping a missing factory to [`EncodeError::MissingElement`].
fn make(element: &'static str) -> Result<gst::Element, EncodeError> {
    gst::ElementFactory::make(element)
        .build()
        .map_err(|_| EncodeError::MissingElement {
            element,
            package: package_of(element),
        })
}

/// Sets a property from its string form when the element has it and the value parses; returns
/// whether it was set. Used where element versions differ in their properties.
fn try_set(element: &gst::Element, name: &str, value: &str) -> bool {
    let Some(pspec) = element.find_property(name) else {
        tracing::debug!(element = %element.name(), property = name, "no such property");
        return false;
    };
    match gst::glib::Value::deserialize(value, pspec.value_type()) {
        Ok(v) => {
            element.set_property_from_value(name, &v);
            true
        }
        Err(_) => {
            tracing::debug!(element = %element.name(), property = name, value, "value not accepted");
            false
        }
    }
}

/// A capsfilter with the given caps.
fn capsfilter(caps: &gst::Caps) -> Result<gst::Element, EncodeError> {
    let filter = make("capsfilter")?;
    filter.set_property("caps", caps);
    Ok(filter)
}

/// The source of an encoder pipeline: a live `appsrc` named `src` with `caps`, in time format,
/// timestamped by the caller and never blocking. Unbounded: each encoder pulls its output
/// before it pushes the next input, so the source holds at most one.
fn live_src(caps: &gst::Caps) -> gst_app::AppSrc {
    gst_app::AppSrc::builder()
        .name("src")
        .caps(caps)
        .format(gst::Format::Time)
        .is_live(true)
        .do_timestamp(false)
        .block(false)
        .max_bytes(0)
        .build()
}

/// An active pool of input buffers of `size` bytes with `caps`, at least two: a buffer returns
/// to it when the encoder releases it, so steady state allocates nothing.
fn buffer_pool(caps: &gst::Caps, size: u32) -> Result<gst::BufferPool, EncodeError> {
    let pool = gst::BufferPool::new();
    let mut config = pool.config();
    config.set_params(Some(caps), size, 2, 0);
    pool.set_config(config)
        .map_err(|e| build_error("buffer pool", &e))?;
    pool.set_active(true)
        .map_err(|e| build_error("buffer pool", &e))?;
    Ok(pool)
}

/// Adds `elements` to `pipeline` and links them in order.
fn add_and_link(pipeline: &gst::Pipeline, elements: &[&gst::Element]) -> Result<(), EncodeError> {
    pipeline
        .add_many(elements)
        .map_err(|e| build_error("pipeline", &e))?;
    gst::Element::link_many(elements).map_err(|e| build_error("pipeline", &e))
}

/// An error while building a pipeline.
fn build_error(element: &str, e: &dyn fmt::Display) -> EncodeError {
    EncodeError::Pipeline {
        element: element.to_owned(),
        message: e.to_string(),
        debug: None,
    }
}

/// Turns a bus error message into [`EncodeError::Pipeline`].
fn pipeline_error(err: &gst::message::Error) -> EncodeError {
    EncodeError::Pipeline {
        element: err
            .src()
            .map_or_else(|| "pipeline".to_owned(), |s| s.path_string().to_string()),
        message: err.error().to_string(),
        debug: err.debug().map(|d| d.to_string()),
    }
}

/// The first error message waiting on the pipeline's bus, without blocking.
fn pending_error(pipeline: &gst::Pipeline) -> Option<EncodeError> {
    let bus = pipeline.bus()?;
    let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(err) => Some(pipeline_error(err)),
        _ => None,
    }
}

/// Sets `pipeline` to PLAYING; a failure is reported with the bus error that caused it.
fn start(pipeline: &gst::Pipeline) -> Result<(), EncodeError> {
    match pipeline.set_state(gst::State::Playing) {
        Ok(_) => Ok(()),
        Err(e) => {
            let err = pending_error(pipeline).unwrap_or_else(|| build_error(&pipeline.name(), &e));
            let _ = pipeline.set_state(gst::State::Null);
            Err(err)
        }
    }
}

/// Waits for EOS (or an error) on the bus, at most `timeout`.
fn wait_eos(pipeline: &gst::Pipeline, timeout: Duration) -> Result<(), EncodeError> {
    let Some(bus) = pipeline.bus() else {
        return Ok(());
    };
    let msg = bus.timed_pop_filtered(
        clock_time(timeout),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => Ok(()),
        Some(gst::MessageView::Error(err)) => Err(pipeline_error(err)),
        _ => Err(EncodeError::Timeout {
            what: "end of stream",
            waited: timeout,
        }),
    }
}

/// Sets `pipeline` to NULL, logging (not failing) when it refuses.
fn stop(pipeline: &gst::Pipeline) {
    if let Err(e) = pipeline.set_state(gst::State::Null) {
        tracing::warn!(pipeline = %pipeline.name(), error = %e, "could not stop pipeline");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_element_says_which_package_and_how_to_fix() {
        let err = EncodeError::MissingElement {
            element: "x264enc",
            package: package_of("x264enc"),
        };
        let msg = err.to_string();
        assert!(msg.contains("gstreamer1.0-plugins-ugly"), "{msg}");
        assert!(msg.contains("run `cargo xtask setup`"), "{msg}");
        assert_eq!(package_of("h264parse"), "gstreamer1.0-plugins-bad");
        assert_eq!(package_of("opusenc"), "gstreamer1.0-plugins-base");
        assert_eq!(package_of("matroskamux"), "gstreamer1.0-plugins-good");
        assert_eq!(package_of("avdec_h264"), "gstreamer1.0-libav");
    }

    #[test]
    fn encoder_names() {
        use clap::ValueEnum;
        assert_eq!(
            EncoderChoice::from_str("nvenc", true),
            Ok(EncoderChoice::Nvenc)
        );
        assert_eq!(
            EncoderChoice::from_str("x264", true),
            Ok(EncoderChoice::X264)
        );
        assert_eq!(EncoderChoice::default(), EncoderChoice::Auto);
        let nv = EncoderKind::Nvenc {
            element: "nvh264enc".into(),
        };
        assert_eq!(nv.to_string(), "nvenc (nvh264enc)");
        assert_eq!(EncoderKind::X264.to_string(), "x264 (x264enc)");
        assert_eq!(EncoderKind::X264.element(), "x264enc");
    }
}
