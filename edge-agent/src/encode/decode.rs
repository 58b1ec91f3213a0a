//! H.264 decoding to NV12 luma, for tests, checkers and native clients:
//! `appsrc ! h264parse ! avdec_h264 ! videoconvert [! videoscale] ! NV12 ! appsink`.

use std::path::Path;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::{
    EncodeError, add_and_link, build_error, capsfilter, clock_time, init, make, pending_error,
    running_time, start, stop, try_set,
};

/// How long [`H264Decoder::finish`] waits for the decoder to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Files are pushed in chunks of this size; `h264parse` finds the access units.
const FILE_CHUNK: usize = 64 * 1024;

/// One decoded picture's luma.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedFrame {
    /// Width in pixels (after scaling).
    pub width: u32,
    /// Height in pixels (after scaling).
    pub height: u32,
    /// The Y plane, `width * height` bytes, stride = width.
    pub luma: Vec<u8>,
    /// Presentation time, when the input carried one.
    pub pts: Option<Duration>,
}

/// A running H.264 decoder. Push Annex-B data; pull luma pictures.
#[derive(Debug)]
pub struct H264Decoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
    finished: bool,
}

impl H264Decoder {
    /// Builds and starts a decoder; `scale` resizes the output to `(width, height)`.
    ///
    /// # Errors
    /// [`EncodeError::MissingElement`] (avdec_h264: gstreamer1.0-libav; h264parse:
    /// gstreamer1.0-plugins-bad), [`EncodeError::InvalidConfig`], [`EncodeError::Pipeline`].
    pub fn new(scale: Option<(u32, u32)>) -> Result<Self, EncodeError> {
        init()?;
        let pipeline = gst::Pipeline::with_name("h264-decoder");
        let src = gst_app::AppSrc::builder()
            .name("src")
            .caps(
                &gst::Caps::builder("video/x-h264")
                    .field("stream-format", "byte-stream")
                    .build(),
            )
            .format(gst::Format::Time)
            .is_live(false)
            .do_timestamp(false)
            .block(false)
            .max_bytes(0)
            .build();
        let parse = make("h264parse")?;
        let decoder = make("avdec_h264")?;
        // Slice threads add no delay; frame threads would hold pictures back.
        try_set(&decoder, "thread-type", "slice");
        let convert = make("videoconvert")?;
        let mut out_caps = gst::Caps::builder("video/x-raw").field("format", "NV12");
        let mut chain = vec![
            src.clone().upcast::<gst::Element>(),
            parse,
            decoder,
            convert,
        ];
        if let Some((w, h)) = scale {
            let (Ok(w), Ok(h)) = (i32::try_from(w), i32::try_from(h)) else {
                return Err(EncodeError::InvalidConfig {
                    reason: format!("scale {w}x{h} out of range"),
                });
            };
            if w < 2 || h < 2 {
                return Err(EncodeError::InvalidConfig {
                    reason: format!("scale {w}x{h} too small"),
                });
            }
            chain.push(make("videoscale")?);
            out_caps = out_caps.field("width", w).field("height", h);
        }
        chain.push(capsfilter(&out_caps.build())?);
        let sink = gst_app::AppSink::builder()
            .name("sink")
            .sync(false)
            .max_buffers(4)
            .drop(false)
            .build();
        chain.push(sink.clone().upcast());
        let refs: Vec<&gst::Element> = chain.iter().collect();
        add_and_link(&pipeline, &refs)?;
        start(&pipeline)?;
        Ok(Self {
            pipeline,
            src,
            sink,
            finished: false,
        })
    }

    /// Queues Annex-B data: whole access units (with `pts`) or any chunk of a stream.
    ///
    /// # Errors
    /// [`EncodeError::Finished`] after [`Self::finish`], [`EncodeError::Pipeline`].
    pub fn push(&mut self, data: &[u8], pts: Option<Duration>) -> Result<(), EncodeError> {
        if self.finished {
            return Err(EncodeError::Finished { what: "decoder" });
        }
        let mut buffer = gst::Buffer::from_slice(data.to_vec());
        if let (Some(b), Some(pts)) = (buffer.get_mut(), pts) {
            b.set_pts(clock_time(pts));
        }
        self.src
            .push_buffer(buffer)
            .map(|_| ())
            .map_err(|e| pending_error(&self.pipeline).unwrap_or_else(|| build_error("src", &e)))
    }

    /// The next decoded picture, waiting at most `timeout`; `None` when none came.
    ///
    /// # Errors
    /// [`EncodeError::Pipeline`] when decoding failed.
    pub fn try_pull(&mut self, timeout: Duration) -> Result<Option<DecodedFrame>, EncodeError> {
        if let Some(sample) = self.sink.try_pull_sample(clock_time(timeout)) {
            return frame_from_sample(&sample).map(Some);
        }
        match pending_error(&self.pipeline) {
            Some(err) => Err(err),
            None => Ok(None),
        }
    }

    /// Ends the stream and returns every picture not pulled yet.
    ///
    /// # Errors
    /// [`EncodeError::Timeout`] after 10 s, [`EncodeError::Pipeline`].
    pub fn finish(&mut self) -> Result<Vec<DecodedFrame>, EncodeError> {
        let mut out = Vec::new();
        if self.finished {
            return Ok(out);
        }
        self.finished = true;
        self.src
            .end_of_stream()
            .map_err(|e| build_error("src", &e))?;
        let started = Instant::now();
        while !self.sink.is_eos() {
            let waited = started.elapsed();
            if waited >= DRAIN_TIMEOUT {
                return Err(EncodeError::Timeout {
                    what: "the decoder to drain",
                    waited,
                });
            }
            if let Some(frame) = self.try_pull(Duration::from_millis(50))? {
                out.push(frame);
            }
        }
        while let Some(frame) = self.try_pull(Duration::ZERO)? {
            out.push(frame);
        }
        Ok(out)
    }
}

impl Drop for H264Decoder {
    fn drop(&mut self) {
        stop(&self.pipeline);
    }
}

/// Decodes a raw Annex-B H.264 file at its own size.
///
/// # Errors
/// [`EncodeError::Io`] when the file cannot be read, or any [`H264Decoder`] error.
pub fn decode_annexb_file(path: impl AsRef<Path>) -> Result<Vec<DecodedFrame>, EncodeError> {
    decode_file(path.as_ref(), None)
}

/// Decodes a raw Annex-B H.264 file, scaling every picture to `(width, height)`.
///
/// # Errors
/// As [`decode_annexb_file`].
pub fn decode_annexb_file_scaled(
    path: impl AsRef<Path>,
    scale: (u32, u32),
) -> Result<Vec<DecodedFrame>, EncodeError> {
    decode_file(path.as_ref(), Some(scale))
}

fn decode_file(path: &Path, scale: Option<(u32, u32)>) -> Result<Vec<DecodedFrame>, EncodeError> {
    let data = std::fs::read(path).map_err(|source| EncodeError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut decoder = H264Decoder::new(scale)?;
    let mut frames = Vec::new();
    for chunk in data.chunks(FILE_CHUNK) {
        decoder.push(chunk, None)?;
        while let Some(frame) = decoder.try_pull(Duration::ZERO)? {
            frames.push(frame);
        }
    }
    frames.extend(decoder.finish()?);
    Ok(frames)
}

/// Copies the Y plane out of an NV12 sample in GStreamer's default layout (appsink proposes no
/// video meta, so upstream writes rows with a stride of the width rounded up to 4).
fn frame_from_sample(sample: &gst::Sample) -> Result<DecodedFrame, EncodeError> {
    let bad = |what: &str| build_error("sink", &what);
    let caps = sample
        .caps()
        .ok_or_else(|| bad("decoded sample without caps"))?;
    let s = caps
        .structure(0)
        .ok_or_else(|| bad("decoded caps without structure"))?;
    let width = s
        .get::<i32>("width")
        .map_err(|_| bad("decoded caps without width"))?;
    let height = s
        .get::<i32>("height")
        .map_err(|_| bad("decoded caps without height"))?;
    let (Ok(width), Ok(height)) = (usize::try_from(width), usize::try_from(height)) else {
        return Err(bad("negative picture size"));
    };
    let buffer = sample
        .buffer()
        .ok_or_else(|| bad("sample without buffer"))?;
    let map = buffer.map_readable().map_err(|e| build_error("sink", &e))?;
    let stride = width.next_multiple_of(4);
    let data = map.as_slice();
    if data.len() < stride * height {
        return Err(bad("decoded picture smaller than its caps say"));
    }
    let mut luma = Vec::with_capacity(width * height);
    for row in data.chunks(stride).take(height) {
        luma.extend_from_slice(&row[..width]);
    }
    Ok(DecodedFrame {
        width: u32::try_from(width).unwrap_or(u32::MAX),
        height: u32::try_from(height).unwrap_or(u32::MAX),
        luma,
        pts: running_time(sample, buffer.pts()),
    })
}
