//! H.264 decoding with GStreamer, shared by the client SDK (and through it the checkers) and the
//! edge's tests: `appsrc ! h264parse ! DECODER ! videoconvert [! videoscale] ! FORMAT ! appsink`.
//!
//! - [`choose`] / [`choose_cached`] pick DECODER: with [`DecoderPreference::Auto`] the first
//!   hardware decoder ([`HARDWARE_DECODERS`]) that decodes a real test picture, otherwise
//!   [`SOFTWARE_DECODER`] (`avdec_h264`).
//! - [`H264Decoder`] takes Annex-B data and hands out tightly packed [`Picture`]s in NV12 or
//!   RGBA ([`PixelFormat`]); [`decode_annexb_file`] decodes a whole `.h264` file.
//!
//! How to drive it: push each access unit with its presentation time, pull pictures as they
//! come (they come in presentation order, each with the time it was pushed with), and
//! [`H264Decoder::finish`] at the end of a stream to get what is still inside.
//!
//! ```no_run
//! use std::time::Duration;
//! use edgeplay_decode::{DecoderPreference, H264Decoder, PixelFormat, choose_cached};
//!
//! # fn main() -> Result<(), edgeplay_decode::DecodeError> {
//! # let access_units: Vec<Vec<u8>> = Vec::new();
//! let element = choose_cached(DecoderPreference::Auto)?; // once per process
//! let mut decoder = H264Decoder::with_element(element, PixelFormat::Nv12)?;
//! for (n, au) in access_units.iter().enumerate() {
//!     decoder.push(au, Some(Duration::from_millis(16) * n as u32))?;
//!     while let Some(picture) = decoder.try_pull(Duration::ZERO)? {
//!         println!("{}x{} at {:?}", picture.width, picture.height, picture.pts);
//!     }
//! }
//! let rest = decoder.finish()?;
//! # let _ = rest;
//! # Ok(()) }
//! ```
//!
//! This crate decodes only; it has no network, no ash and no knowledge of edgeplay's wire
//! formats. GStreamer types appear only in [`pipe`], the plumbing other decoders (the SDK's
//! Opus decoder) build on.

mod choose;
mod h264;
pub mod pipe;

use std::path::PathBuf;
use std::time::Duration;

pub use choose::{
    Choice, DecoderPreference, HARDWARE_DECODERS, PROBE_TIMEOUT, choose, choose_cached,
};
pub use h264::{
    DecoderConfig, H264Decoder, Input, Picture, PixelFormat, SOFTWARE_DECODER, decode_annexb_file,
    decode_annexb_file_scaled, rgba_luma,
};

/// Everything that can go wrong decoding.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// `gst::init` failed (no GStreamer libraries, broken registry).
    #[error("GStreamer failed to start: {0}")]
    Init(String),
    /// A GStreamer element the pipeline needs is not installed.
    #[error("GStreamer element `{element}` is missing: install {package}")]
    MissingElement {
        /// Element factory name.
        element: String,
        /// The Debian package that ships it.
        package: &'static str,
    },
    /// The configuration cannot be decoded (e.g. a scale out of range).
    #[error("invalid decoder configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// The pipeline could not be built or started, refused data, or an element posted an
    /// error.
    #[error("{what}: {message}")]
    Pipeline {
        /// Which pipeline or element (`decoder`, `audio decoder`, an element's path).
        what: String,
        /// What happened.
        message: String,
    },
    /// Data was pushed after the end of the stream.
    #[error("the decoder's stream is already finished")]
    Finished,
    /// The decoder did not drain in time.
    #[error("timed out after {waited:?} waiting for the decoder to drain")]
    Timeout {
        /// How long it waited.
        waited: Duration,
    },
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No decoder is usable: what [`choose_cached`] answers again after its one probe failed.
    #[error("{0}")]
    NoDecoder(String),
}

/// `gst::init`, mapped to [`DecodeError::Init`].
fn init() -> Result<(), DecodeError> {
    gstreamer::init().map_err(|e| DecodeError::Init(e.to_string()))
}
