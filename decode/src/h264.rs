//! The H.264 decoder: `appsrc ! h264parse ! DECODER ! videoconvert [! videoscale] ! FORMAT !
//! appsink`, Annex-B in, tightly packed NV12 or RGBA pictures out.

use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;

use crate::DecodeError;
use crate::pipe::{AppPipe, element, running_time};

/// The software decoder (FFmpeg's, from gstreamer1.0-libav), used when no hardware one works.
pub const SOFTWARE_DECODER: &str = "avdec_h264";
/// How long [`H264Decoder::finish`] waits for the decoder to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Files are pushed in chunks of this size; `h264parse` finds the access units.
const FILE_CHUNK: usize = 64 * 1024;

/// The pixel layout of decoded pictures.
///
/// ```
/// use edgeplay_decode::PixelFormat;
/// assert_eq!(PixelFormat::default(), PixelFormat::Nv12);
/// assert_eq!(PixelFormat::Rgba.bytes_per_pixel_row(1280), 5120);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Two planes: 8-bit luma (stride = width), then interleaved U/V at half height (stride =
    /// width rounded up to even). What decoders produce: no conversion.
    #[default]
    Nv12,
    /// One plane of 8-bit R, G, B, A (alpha 255), stride = 4 × width; converted from the
    /// decoder's NV12 by `videoconvert` in the decoding pipeline (the stream's colorimetry:
    /// BT.709 video range from the edge).
    Rgba,
}

impl PixelFormat {
    /// The GStreamer name of the format.
    #[must_use]
    pub fn gst_name(self) -> &'static str {
        match self {
            Self::Nv12 => "NV12",
            Self::Rgba => "RGBA",
        }
    }

    /// The bytes of one row of the first plane at `width` pixels.
    #[must_use]
    pub fn bytes_per_pixel_row(self, width: usize) -> usize {
        match self {
            Self::Nv12 => width,
            Self::Rgba => width * 4,
        }
    }
}

/// How the decoder is fed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Input {
    /// Any chunks of a byte stream (a file): `h264parse` finds the access units, so a picture
    /// comes out once the next access unit has begun.
    #[default]
    Stream,
    /// One whole access unit per push, as a live session receives them: each is decoded as
    /// soon as it is pushed.
    AccessUnits,
}

/// What to decode with and into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecoderConfig {
    /// The GStreamer decoder element ([`crate::choose`] picks one).
    pub element: String,
    /// The pixel layout of the pictures.
    pub format: PixelFormat,
    /// Scale every picture to `(width, height)`; `None` keeps the stream's size.
    pub scale: Option<(u32, u32)>,
    /// How data is pushed.
    pub input: Input,
}

impl Default for DecoderConfig {
    /// `avdec_h264`, NV12 at the stream's size, fed a byte stream.
    fn default() -> Self {
        Self {
            element: SOFTWARE_DECODER.to_owned(),
            format: PixelFormat::Nv12,
            scale: None,
            input: Input::Stream,
        }
    }
}

/// One decoded picture, tightly packed in `format` (see [`PixelFormat`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Picture {
    /// Width in pixels (after scaling).
    pub width: u32,
    /// Height in pixels (after scaling).
    pub height: u32,
    /// The layout of `data`.
    pub format: PixelFormat,
    /// The pixels: NV12's two planes one after the other, or RGBA's one.
    pub data: Vec<u8>,
    /// Presentation time: what the access unit was pushed with, when it had one.
    pub pts: Option<Duration>,
}

impl Picture {
    /// The luma plane, `width * height` bytes with a stride of `width`: NV12's first plane as
    /// it is, or computed from RGBA ([`rgba_luma`]).
    #[must_use]
    pub fn luma(&self) -> Cow<'_, [u8]> {
        let (w, h) = (self.width as usize, self.height as usize);
        match self.format {
            PixelFormat::Nv12 => Cow::Borrowed(&self.data[..(w * h).min(self.data.len())]),
            PixelFormat::Rgba => Cow::Owned(rgba_luma(&self.data, w, h)),
        }
    }
}

/// A running H.264 decoder. Push Annex-B data; pull pictures.
#[derive(Debug)]
pub struct H264Decoder {
    pipe: AppPipe,
    format: PixelFormat,
    finished: bool,
}

/// The Debian package of an element this decoder uses.
fn package_of(name: &str) -> &'static str {
    match name {
        "avdec_h264" => "gstreamer1.0-libav",
        "videoconvert" | "videoscale" | "capsfilter" => "gstreamer1.0-plugins-base",
        // h264parse and the hardware decoders (nvcodec, va, v4l2codecs).
        _ => "gstreamer1.0-plugins-bad",
    }
}

fn make(name: &str) -> Result<gst::Element, DecodeError> {
    element(name, package_of(name))
}

impl H264Decoder {
    /// `avdec_h264` decoding a byte stream (any chunks) to NV12; `scale` resizes the output to
    /// `(width, height)`.
    ///
    /// # Errors
    /// As [`Self::with_config`].
    pub fn new(scale: Option<(u32, u32)>) -> Result<Self, DecodeError> {
        Self::with_config(&DecoderConfig {
            scale,
            ..DecoderConfig::default()
        })
    }

    /// `element` (from [`crate::choose`]) decoding whole access units, as they arrive in a
    /// session, to `format`.
    ///
    /// # Errors
    /// As [`Self::with_config`].
    pub fn with_element(element: &str, format: PixelFormat) -> Result<Self, DecodeError> {
        Self::with_config(&DecoderConfig {
            element: element.to_owned(),
            format,
            scale: None,
            input: Input::AccessUnits,
        })
    }

    /// Builds and starts a decoder.
    ///
    /// # Errors
    /// [`DecodeError::MissingElement`] (avdec_h264: gstreamer1.0-libav; h264parse:
    /// gstreamer1.0-plugins-bad), [`DecodeError::InvalidConfig`] for a scale out of range,
    /// [`DecodeError::Pipeline`] when the decoder cannot start.
    pub fn with_config(cfg: &DecoderConfig) -> Result<Self, DecodeError> {
        crate::init()?;
        let parse = make("h264parse")?;
        let decoder = make(&cfg.element)?;
        // Slice threads add no delay; frame threads would hold pictures back (avdec_h264).
        if decoder.has_property("thread-type") {
            decoder.set_property_from_str("thread-type", "slice");
        }
        let convert = make("videoconvert")?;
        // Plain `video/x-raw` is system memory: hardware decoders download into it.
        let mut out_caps = gst::Caps::builder("video/x-raw").field("format", cfg.format.gst_name());
        let mut middle = vec![parse, decoder, convert];
        if let Some((w, h)) = cfg.scale {
            let (Ok(w), Ok(h)) = (i32::try_from(w), i32::try_from(h)) else {
                return Err(DecodeError::InvalidConfig {
                    reason: format!("scale {w}x{h} out of range"),
                });
            };
            if w < 2 || h < 2 {
                return Err(DecodeError::InvalidConfig {
                    reason: format!("scale {w}x{h} too small"),
                });
            }
            middle.push(make("videoscale")?);
            out_caps = out_caps.field("width", w).field("height", h);
        }
        let caps = make("capsfilter")?;
        caps.set_property("caps", out_caps.build());
        middle.push(caps);
        let mut in_caps = gst::Caps::builder("video/x-h264").field("stream-format", "byte-stream");
        if cfg.input == Input::AccessUnits {
            in_caps = in_caps.field("alignment", "au");
        }
        let (max_buffers, live) = match cfg.input {
            Input::Stream => (4, false),
            Input::AccessUnits => (8, true),
        };
        let refs: Vec<&gst::Element> = middle.iter().collect();
        let pipe =
            AppPipe::start("decoder", &in_caps.build(), &refs, max_buffers, live).map_err(|e| {
                match e {
                    DecodeError::Pipeline { what, message } => DecodeError::Pipeline {
                        what: format!("{what} ({})", cfg.element),
                        message,
                    },
                    other => other,
                }
            })?;
        Ok(Self {
            pipe,
            format: cfg.format,
            finished: false,
        })
    }

    /// Queues Annex-B data: whole access units (with `pts`) or any chunk of a stream.
    ///
    /// # Errors
    /// [`DecodeError::Finished`] after [`Self::finish`], [`DecodeError::Pipeline`].
    pub fn push(&mut self, data: &[u8], pts: Option<Duration>) -> Result<(), DecodeError> {
        if self.finished {
            return Err(DecodeError::Finished);
        }
        self.pipe.push(data, pts, None)
    }

    /// The next decoded picture, waiting at most `timeout`; `None` when none came.
    ///
    /// # Errors
    /// [`DecodeError::Pipeline`] when decoding failed.
    pub fn try_pull(&mut self, timeout: Duration) -> Result<Option<Picture>, DecodeError> {
        match self.pipe.pull(timeout)? {
            Some(sample) => picture(&sample, self.format).map(Some),
            None => Ok(None),
        }
    }

    /// Ends the stream without waiting: what is inside still comes out of [`Self::try_pull`].
    pub(crate) fn end_of_stream(&mut self) -> Result<(), DecodeError> {
        self.finished = true;
        self.pipe.end_of_stream()
    }

    /// Ends the stream and returns every picture not pulled yet.
    ///
    /// # Errors
    /// [`DecodeError::Timeout`] after 10 s, [`DecodeError::Pipeline`].
    pub fn finish(&mut self) -> Result<Vec<Picture>, DecodeError> {
        let mut out = Vec::new();
        if self.finished {
            return Ok(out);
        }
        self.end_of_stream()?;
        let started = Instant::now();
        while !self.pipe.is_eos() {
            let waited = started.elapsed();
            if waited >= DRAIN_TIMEOUT {
                return Err(DecodeError::Timeout { waited });
            }
            if let Some(picture) = self.try_pull(Duration::from_millis(50))? {
                out.push(picture);
            }
        }
        while let Some(picture) = self.try_pull(Duration::ZERO)? {
            out.push(picture);
        }
        Ok(out)
    }
}

/// Decodes a raw Annex-B H.264 file at its own size, to NV12.
///
/// # Errors
/// [`DecodeError::Io`] when the file cannot be read, or any [`H264Decoder`] error.
pub fn decode_annexb_file(path: impl AsRef<Path>) -> Result<Vec<Picture>, DecodeError> {
    decode_file(path.as_ref(), None)
}

/// Decodes a raw Annex-B H.264 file to NV12, scaling every picture to `(width, height)`.
///
/// # Errors
/// As [`decode_annexb_file`].
pub fn decode_annexb_file_scaled(
    path: impl AsRef<Path>,
    scale: (u32, u32),
) -> Result<Vec<Picture>, DecodeError> {
    decode_file(path.as_ref(), Some(scale))
}

fn decode_file(path: &Path, scale: Option<(u32, u32)>) -> Result<Vec<Picture>, DecodeError> {
    let data = std::fs::read(path).map_err(|source| DecodeError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut decoder = H264Decoder::new(scale)?;
    let mut pictures = Vec::new();
    for chunk in data.chunks(FILE_CHUNK) {
        decoder.push(chunk, None)?;
        while let Some(picture) = decoder.try_pull(Duration::ZERO)? {
            pictures.push(picture);
        }
    }
    pictures.extend(decoder.finish()?);
    Ok(pictures)
}

/// Copies a sample into a tightly packed picture. The source layout is GStreamer's: the
/// buffer's `GstVideoMeta` strides and offsets when the decoder attached one (hardware
/// decoders pad rows), otherwise the default (NV12 rows padded to 4 bytes, planes one after
/// the other; RGBA rows of 4 × width).
fn picture(sample: &gst::Sample, format: PixelFormat) -> Result<Picture, DecodeError> {
    let bad = |message: &str| DecodeError::Pipeline {
        what: "decoder".to_owned(),
        message: message.to_owned(),
    };
    let caps = sample
        .caps()
        .ok_or_else(|| bad("decoded sample without caps"))?;
    let s = caps
        .structure(0)
        .ok_or_else(|| bad("decoded caps without structure"))?;
    let w = s
        .get::<i32>("width")
        .map_err(|_| bad("decoded caps without width"))?;
    let h = s
        .get::<i32>("height")
        .map_err(|_| bad("decoded caps without height"))?;
    let (Ok(width), Ok(height)) = (usize::try_from(w), usize::try_from(h)) else {
        return Err(bad("negative picture size"));
    };
    let buffer = sample
        .buffer()
        .ok_or_else(|| bad("decoded sample without buffer"))?;
    let pts = running_time(sample, buffer.pts());
    let map = buffer
        .map_readable()
        .map_err(|e| bad(&format!("decoded buffer unreadable: {e}")))?;
    let data = map.as_slice();
    let layout = video_meta(buffer).unwrap_or_else(|| default_layout(format, width, height));
    // (plane, bytes per row, rows)
    let planes: &[(usize, usize, usize)] = match format {
        // U/V pairs: an odd width still has a whole pair for its last column.
        PixelFormat::Nv12 => &[
            (0, width, height),
            (1, width.next_multiple_of(2), height.div_ceil(2)),
        ],
        PixelFormat::Rgba => &[(0, width * 4, height)],
    };
    let mut out = Vec::with_capacity(planes.iter().map(|p| p.1 * p.2).sum());
    for &(plane, row_bytes, rows) in planes {
        let (offset, stride) = layout[plane];
        if rows == 0 {
            continue;
        }
        let end = offset + stride * (rows - 1) + row_bytes;
        if stride < row_bytes || data.len() < end {
            return Err(bad("decoded picture smaller than its caps say"));
        }
        for r in 0..rows {
            let start = offset + stride * r;
            out.extend_from_slice(&data[start..start + row_bytes]);
        }
    }
    Ok(Picture {
        width: u32::try_from(width).unwrap_or(u32::MAX),
        height: u32::try_from(height).unwrap_or(u32::MAX),
        format,
        data: out,
        pts,
    })
}

/// (offset, stride) of planes 0 and 1 in GStreamer's default layout.
fn default_layout(format: PixelFormat, width: usize, height: usize) -> [(usize, usize); 2] {
    match format {
        PixelFormat::Nv12 => {
            let stride = width.next_multiple_of(4);
            [(0, stride), (stride * height.next_multiple_of(2), stride)]
        }
        PixelFormat::Rgba => [(0, width * 4), (0, 0)],
    }
}

/// (offset, stride) of planes 0 and 1 from the buffer's `GstVideoMeta`, when it has one.
fn video_meta(buffer: &gst::BufferRef) -> Option<[(usize, usize); 2]> {
    let meta = buffer.meta::<gst_video::VideoMeta>()?;
    let plane = |i: usize| {
        let offset = *meta.offset().get(i)?;
        let stride = usize::try_from(*meta.stride().get(i)?).ok()?;
        Some((offset, stride))
    };
    Some([plane(0)?, plane(1).unwrap_or((0, 0))])
}

/// Limited-range luma of RGBA pixels with BT.709 weights (the edge converts to NV12 with
/// BT.709, and GStreamer assumes it for HD streams that do not say), for reading the stamp
/// from an RGBA picture. On grey pixels, like the stamp's cells, any weights agree.
#[must_use]
pub fn rgba_luma(rgba: &[u8], width: usize, height: usize) -> Vec<u8> {
    rgba.chunks_exact(4)
        .take(width * height)
        .map(|p| {
            let (r, g, b) = (u32::from(p[0]), u32::from(p[1]), u32::from(p[2]));
            // Y = 16 + 219/255 × (0.2126 R + 0.7152 G + 0.0722 B), in 8.8 fixed point.
            let y = (16 * 256 + 47 * r + 157 * g + 16 * b + 128) >> 8;
            u8::try_from(y.min(255)).unwrap_or(u8::MAX)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use edgeplay_game::stamp::{Stamp, draw_luma, read_luma};
    use gstreamer_app as gst_app;

    use super::*;
    use crate::{DecoderPreference, HARDWARE_DECODERS, choose, choose_cached};

    const W: usize = 640;
    const H: usize = 360;

    fn stamp(n: u32) -> Stamp {
        Stamp {
            frame: n,
            tick: n * 2,
            render_time_us: 1_000_000 + u64::from(n),
            input_seq: n,
            state_hash: 0x0123_4567_89ab_cdef ^ u64::from(n),
        }
    }

    /// `n` stamped 640x360 pictures encoded with x264 (constrained baseline, as the edge
    /// sends), one access unit each.
    fn stamped_stream(n: u32) -> Vec<Vec<u8>> {
        gst::init().unwrap();
        let desc = format!(
            "appsrc name=src format=time caps=video/x-raw,format=NV12,width={W},height={H},framerate=30/1 \
             ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 \
             ! video/x-h264,stream-format=byte-stream,alignment=au,profile=constrained-baseline \
             ! appsink name=sink sync=false"
        );
        let pipeline = gst::parse::launch(&desc)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let src = pipeline
            .by_name("src")
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        let sink = pipeline
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        for i in 0..n {
            let mut nv12 = vec![128u8; W * H * 3 / 2];
            nv12[..W * H].fill(60);
            draw_luma(&stamp(i), &mut nv12[..W * H], W, H, W).unwrap();
            let mut b = gst::Buffer::from_slice(nv12);
            b.get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_mseconds(u64::from(i) * 33));
            src.push_buffer(b).unwrap();
        }
        src.end_of_stream().unwrap();
        let mut aus = Vec::new();
        while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
            aus.push(s.buffer().unwrap().map_readable().unwrap().to_vec());
        }
        pipeline.set_state(gst::State::Null).unwrap();
        assert_eq!(aus.len(), n as usize, "x264 encoded every picture");
        aus
    }

    /// Decodes `aus` through `element` in `format`; every picture.
    fn decode_all(element: &str, format: PixelFormat, aus: &[Vec<u8>]) -> Vec<Picture> {
        let mut d = H264Decoder::with_element(element, format).unwrap();
        let mut out = Vec::new();
        for (i, au) in aus.iter().enumerate() {
            let pts = Duration::from_micros(i as u64 * 33_333);
            d.push(au, Some(pts)).unwrap();
            while let Some(p) = d.try_pull(Duration::from_millis(5)).unwrap() {
                out.push(p);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while out.len() < aus.len() && Instant::now() < deadline {
            if let Some(p) = d.try_pull(Duration::from_millis(100)).unwrap() {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn auto_falls_back_to_software_here_and_frames_decode() {
        gst::init().unwrap();
        let registered: Vec<&str> = HARDWARE_DECODERS
            .into_iter()
            .filter(|e| gst::ElementFactory::find(e).is_some())
            .collect();
        let choice = choose(DecoderPreference::Auto).unwrap();
        if registered.is_empty() {
            // This machine (no GPU, no VA or V4L2 device): nothing to probe.
            assert_eq!(choice.element, SOFTWARE_DECODER);
            assert!(choice.rejected.is_empty());
        } else {
            // Every registered decoder ahead of the chosen one was probed and refused.
            let rank = |e: &str| HARDWARE_DECODERS.iter().position(|h| *h == e);
            for (e, why) in &choice.rejected {
                assert!(registered.contains(e), "{e}: {why}");
            }
            assert!(choice.element == SOFTWARE_DECODER || rank(choice.element).is_some());
        }
        assert_eq!(
            choose_cached(DecoderPreference::Auto).unwrap(),
            choice.element
        );
        let pictures = decode_all(choice.element, PixelFormat::Nv12, &stamped_stream(10));
        assert_eq!(pictures.len(), 10);
        for (i, p) in pictures.iter().enumerate() {
            assert_eq!((p.width, p.height, p.format), (640, 360, PixelFormat::Nv12));
            assert_eq!(p.data.len(), W * H + W * H / 2);
            assert_eq!(p.pts, Some(Duration::from_micros(i as u64 * 33_333)));
            let s = read_luma(&p.luma(), W, H, W).unwrap();
            assert_eq!(s, stamp(u32::try_from(i).unwrap()));
        }
    }

    #[test]
    fn rgba_pictures_are_packed_and_carry_the_stamp() {
        let element = choose(DecoderPreference::Software).unwrap().element;
        let pictures = decode_all(element, PixelFormat::Rgba, &stamped_stream(6));
        assert_eq!(pictures.len(), 6);
        for (i, p) in pictures.iter().enumerate() {
            assert_eq!((p.width, p.height, p.format), (640, 360, PixelFormat::Rgba));
            let stride = PixelFormat::Rgba.bytes_per_pixel_row(W);
            assert_eq!(stride, W * 4);
            assert_eq!(p.data.len(), stride * H);
            // Opaque, and the background's grey (luma 60, neutral chroma) comes back grey.
            let px = &p.data[(H - 10) * stride + (W - 10) * 4..][..4];
            assert_eq!(px[3], 255);
            assert!(
                px[0].abs_diff(px[1]) <= 3 && px[1].abs_diff(px[2]) <= 3,
                "{px:?}"
            );
            let luma = p.luma();
            assert_eq!(*luma, rgba_luma(&p.data, W, H));
            assert!(luma[(H - 10) * W + W - 10].abs_diff(60) <= 3);
            let s = read_luma(&luma, W, H, W).unwrap();
            assert_eq!(s, stamp(u32::try_from(i).unwrap()));
        }
    }

    #[test]
    fn a_byte_stream_in_chunks_decodes_scaled_and_then_refuses_more() {
        let stream: Vec<u8> = stamped_stream(5).concat();
        let mut d = H264Decoder::new(Some((320, 180))).unwrap();
        for chunk in stream.chunks(1000) {
            d.push(chunk, None).unwrap();
        }
        let pictures = d.finish().unwrap();
        assert_eq!(pictures.len(), 5);
        for p in &pictures {
            assert_eq!((p.width, p.height, p.format), (320, 180, PixelFormat::Nv12));
            assert_eq!(p.luma().len(), 320 * 180);
            assert_eq!(p.data.len(), 320 * 180 * 3 / 2);
        }
        assert!(matches!(d.push(&stream, None), Err(DecodeError::Finished)));
        assert!(d.finish().unwrap().is_empty());
        assert!(matches!(
            H264Decoder::new(Some((1, 1))),
            Err(DecodeError::InvalidConfig { .. })
        ));
    }
}
