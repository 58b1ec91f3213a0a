//! H.264 decoding with GStreamer (`appsrc ! h264parse ! DECODER ! videoconvert ! FORMAT !
//! appsink`), run on the session's decoder thread. The edge agent has its own copy for its
//! tests; the SDK cannot depend on the edge, and GStreamer types stay out of both APIs.
//!
//! DECODER is chosen by [`choose`]: with [`DecoderPreference::Auto`] each hardware H.264
//! decoder GStreamer may have ([`HARDWARE_DECODERS`], in order) that is registered must decode
//! a real picture (an 85-byte 128x96 IDR) within [`PROBE_TIMEOUT`]; an element
//! that is registered but cannot open its device fails that test and the next is tried, as the
//! edge's NVENC probe does. [`SOFTWARE_DECODER`] (`avdec_h264`) is the fallback, and the only
//! one [`DecoderPreference::Software`] looks at. FORMAT is NV12 or RGBA ([`PixelFormat`]);
//! hardware decoders hand out NV12 in system memory, so `videoconvert` only works for RGBA.

use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

/// Hardware H.264 decoders, in the order [`DecoderPreference::Auto`] tries them: NVIDIA
/// (nvcodec), VA-API (the `va` plugin, then the older `vaapi` one), V4L2 stateless and stateful.
pub const HARDWARE_DECODERS: [&str; 5] = [
    "nvh264dec",
    "vah264dec",
    "vaapih264dec",
    "v4l2slh264dec",
    "v4l2h264dec",
];
/// The software decoder (FFmpeg's, from gstreamer1.0-libav), used when no hardware one works.
pub const SOFTWARE_DECODER: &str = "avdec_h264";
/// How long a hardware decoder has to decode the probe picture.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One IDR picture, 128x96 mid grey, constrained baseline: SPS, PPS and one slice, made with
/// `ffmpeg -f lavfi -i color=c=gray:s=128x96 -frames:v 1 -c:v libx264 -profile:v baseline
/// -bsf:v filter_units=remove_types=6 -f h264` (the SEI with x264's version removed).
const PROBE_STREAM: &[u8] = &[
    0x00, 0x00, 0x00, 0x01, 0x67, 0x42, 0xc0, 0x0a, 0xd9, 0x02, 0x0d, 0xb0, 0x11, 0x00, 0x00, 0x03,
    0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x32, 0x0f, 0x12, 0x26, 0x48, 0x00, 0x00, 0x00, 0x01, 0x68,
    0xcb, 0x83, 0xcb, 0x20, 0x00, 0x00, 0x01, 0x65, 0x88, 0x84, 0x0a, 0xf2, 0x62, 0x80, 0x01, 0x79,
    0x39, 0x39, 0x39, 0x39, 0x39, 0x39, 0x3a, 0xeb, 0xae, 0xba, 0xeb, 0xae, 0xba, 0xeb, 0xae, 0xba,
    0xeb, 0xae, 0xba, 0xeb, 0xae, 0xba, 0xeb, 0xae, 0xba, 0xeb, 0xae, 0xba, 0xeb, 0xae, 0xba, 0xeb,
    0xae, 0xba, 0xeb, 0xae, 0xbc,
];

/// Which H.264 decoders the SDK may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DecoderPreference {
    /// The first hardware decoder that decodes a test picture, else `avdec_h264`.
    #[default]
    Auto,
    /// `avdec_h264` only; no hardware decoder is probed.
    Software,
}

/// The pixel layout of decoded frames.
///
/// ```
/// use edgeplay_client::PixelFormat;
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

/// The decoder element [`choose`] picked, and the hardware decoders it tried first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Choice {
    pub element: &'static str,
    /// Each registered hardware decoder probed before `element`, and why it was not used.
    pub rejected: Vec<(&'static str, String)>,
}

/// Picks the decoder for `preference` among [`HARDWARE_DECODERS`]: see the module doc.
/// Initialises GStreamer.
pub(crate) fn choose(preference: DecoderPreference) -> Result<Choice, String> {
    choose_from(preference, &HARDWARE_DECODERS)
}

/// [`choose`] with `hardware` as the candidates, in order.
fn choose_from(preference: DecoderPreference, hardware: &[&'static str]) -> Result<Choice, String> {
    gst::init().map_err(|e| format!("GStreamer failed to start: {e}"))?;
    let mut rejected = Vec::new();
    if preference == DecoderPreference::Auto {
        for &element in hardware {
            if gst::ElementFactory::find(element).is_none() {
                continue;
            }
            match probe(element) {
                Ok(()) => {
                    tracing::info!(%element, "hardware H.264 decoder in use");
                    return Ok(Choice { element, rejected });
                }
                Err(e) => {
                    tracing::info!(%element, error = %e, "hardware decoder unusable; trying the next");
                    rejected.push((element, e));
                }
            }
        }
    }
    if gst::ElementFactory::find(SOFTWARE_DECODER).is_none() {
        return Err(format!(
            "GStreamer element `{SOFTWARE_DECODER}` is missing: install gstreamer1.0-libav"
        ));
    }
    Ok(Choice {
        element: SOFTWARE_DECODER,
        rejected,
    })
}

/// [`choose`]'s element, probing hardware once per process: the devices do not come and go
/// between sessions, and a probe costs up to [`PROBE_TIMEOUT`] per registered decoder.
pub(crate) fn choose_cached(preference: DecoderPreference) -> Result<&'static str, String> {
    static AUTO: std::sync::OnceLock<Result<&'static str, String>> = std::sync::OnceLock::new();
    match preference {
        DecoderPreference::Software => choose(preference).map(|c| c.element),
        DecoderPreference::Auto => AUTO
            .get_or_init(|| choose(preference).map(|c| c.element))
            .clone(),
    }
}

/// Decodes the probe picture with `element`; `Ok` when a 128x96 picture comes out in time.
fn probe(element: &'static str) -> Result<(), String> {
    let mut d = Decoder::with_element(element, PixelFormat::Nv12)?;
    d.push(PROBE_STREAM, 0)?;
    d.pipe
        .src
        .end_of_stream()
        .map_err(|e| format!("end of probe stream refused: {e}"))?;
    match d.pull(PROBE_TIMEOUT)? {
        Some(p) if (p.width, p.height) == (128, 96) => Ok(()),
        Some(p) => Err(format!(
            "decoded the 128x96 probe picture as {}x{}",
            p.width, p.height
        )),
        None => Err(format!(
            "no picture within {PROBE_TIMEOUT:?} (no device, or it cannot decode)"
        )),
    }
}

/// One decoded picture, tightly packed in `format` (see [`PixelFormat`]).
#[derive(Debug)]
pub(crate) struct Picture {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub data: Vec<u8>,
    pub pts_us: u64,
}

#[derive(Debug)]
pub(crate) struct Decoder {
    pipe: AppPipe,
    format: PixelFormat,
}

/// A running `appsrc ! … ! appsink` pipeline: encoded data in, decoded samples out. The video
/// and the audio decoder are each one of these with their own elements in the middle.
#[derive(Debug)]
pub(crate) struct AppPipe {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
    /// What it is, in errors (e.g. `audio decoder`).
    what: &'static str,
}

impl AppPipe {
    /// Links a live, non-blocking `appsrc` with `caps`, `middle`, and an `appsink` holding at
    /// most `max_buffers`, and starts it.
    pub(crate) fn start(
        what: &'static str,
        caps: &gst::Caps,
        middle: &[&gst::Element],
        max_buffers: u32,
    ) -> Result<Self, String> {
        gst::init().map_err(|e| format!("GStreamer failed to start: {e}"))?;
        let pipeline = gst::Pipeline::new();
        let src = gst_app::AppSrc::builder()
            .caps(caps)
            .format(gst::Format::Time)
            .is_live(true)
            .do_timestamp(false)
            .block(false)
            .max_bytes(0)
            .build();
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .max_buffers(max_buffers)
            .drop(false)
            .build();
        let mut chain = vec![src.upcast_ref::<gst::Element>()];
        chain.extend_from_slice(middle);
        chain.push(sink.upcast_ref());
        add_and_link(&pipeline, &chain, &format!("{what} pipeline"))?;
        // From here on, dropping the pipe stops the pipeline.
        let pipe = Self {
            pipeline,
            src,
            sink,
            what,
        };
        pipe.pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("{what} pipeline did not start: {e}"))?;
        Ok(pipe)
    }

    /// Pushes one encoded unit stamped `pts_us` (and `duration`, when known).
    pub(crate) fn push(
        &self,
        data: &[u8],
        pts_us: u64,
        duration: Option<gst::ClockTime>,
    ) -> Result<(), String> {
        let mut buffer = gst::Buffer::from_slice(data.to_vec());
        if let Some(b) = buffer.get_mut() {
            b.set_pts(gst::ClockTime::from_useconds(pts_us));
            b.set_duration(duration);
        }
        self.src
            .push_buffer(buffer)
            .map(|_| ())
            .map_err(|e| format!("{} refused data: {e}", self.what))
    }

    /// The next decoded sample within `timeout`; `Ok(None)` when none came, an error when the
    /// pipeline reported one.
    pub(crate) fn pull(&self, timeout: Duration) -> Result<Option<gst::Sample>, String> {
        let timeout = gst::ClockTime::from_nseconds(u64::try_from(timeout.as_nanos()).unwrap_or(0));
        if let Some(sample) = self.sink.try_pull_sample(timeout) {
            return Ok(Some(sample));
        }
        if let Some(bus) = self.pipeline.bus()
            && let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error])
            && let gst::MessageView::Error(e) = msg.view()
        {
            return Err(format!("{} failed: {}", self.what, e.error()));
        }
        Ok(None)
    }
}

impl Drop for AppPipe {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// A GStreamer element by factory name; `packages` names what ships it when it is missing.
pub(crate) fn element(name: &str, packages: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(name)
        .build()
        .map_err(|_| format!("GStreamer element `{name}` is missing: install {packages}"))
}

fn make(name: &str) -> Result<gst::Element, String> {
    element(name, "gstreamer1.0-libav and gstreamer1.0-plugins-bad")
}

/// Adds `chain` to `pipeline` and links it in order; errors name `what`.
pub(crate) fn add_and_link(
    pipeline: &gst::Pipeline,
    chain: &[&gst::Element],
    what: &str,
) -> Result<(), String> {
    pipeline
        .add_many(chain)
        .map_err(|e| format!("{what}: {e}"))?;
    gst::Element::link_many(chain).map_err(|e| format!("{what}: {e}"))
}

impl Decoder {
    /// A running decoder through `element` (from [`choose`]) handing out `format`.
    pub(crate) fn with_element(element: &str, format: PixelFormat) -> Result<Self, String> {
        gst::init().map_err(|e| format!("GStreamer failed to start: {e}"))?;
        let parse = make("h264parse")?;
        let decoder = make(element)?;
        // Slice threads add no delay; frame threads would hold pictures back (avdec_h264).
        if decoder.has_property("thread-type") {
            decoder.set_property_from_str("thread-type", "slice");
        }
        let convert = make("videoconvert")?;
        let caps = make("capsfilter")?;
        // Plain `video/x-raw` is system memory: hardware decoders download into it.
        caps.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", format.gst_name())
                .build(),
        );
        let pipe = AppPipe::start(
            "decoder",
            &gst::Caps::builder("video/x-h264")
                .field("stream-format", "byte-stream")
                .field("alignment", "au")
                .build(),
            &[&parse, &decoder, &convert, &caps],
            8,
        )
        .map_err(|e| format!("{e} (decoder element {element})"))?;
        Ok(Self { pipe, format })
    }

    pub(crate) fn push(&mut self, data: &[u8], pts_us: u64) -> Result<(), String> {
        self.pipe.push(data, pts_us, None)
    }

    pub(crate) fn pull(&mut self, timeout: Duration) -> Result<Option<Picture>, String> {
        match self.pipe.pull(timeout)? {
            Some(sample) => picture(&sample, self.format).map(Some),
            None => Ok(None),
        }
    }
}

/// Copies a sample into a tightly packed picture. The source layout is GStreamer's: the
/// buffer's `GstVideoMeta` strides and offsets when the decoder attached one (hardware
/// decoders pad rows), otherwise the default (NV12 rows padded to 4 bytes, planes one after
/// the other; RGBA rows of 4 × width).
fn picture(sample: &gst::Sample, format: PixelFormat) -> Result<Picture, String> {
    let caps = sample.caps().ok_or("decoded sample without caps")?;
    let s = caps.structure(0).ok_or("decoded caps without structure")?;
    let w = s
        .get::<i32>("width")
        .map_err(|_| "decoded caps without width")?;
    let h = s
        .get::<i32>("height")
        .map_err(|_| "decoded caps without height")?;
    let (Ok(width), Ok(height)) = (usize::try_from(w), usize::try_from(h)) else {
        return Err("negative picture size".into());
    };
    let buffer = sample.buffer().ok_or("decoded sample without buffer")?;
    let pts_us = buffer.pts().map_or(0, gst::ClockTime::useconds);
    let map = buffer
        .map_readable()
        .map_err(|e| format!("decoded buffer unreadable: {e}"))?;
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
            return Err("decoded picture smaller than its caps say".into());
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
        pts_us,
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
pub(crate) fn rgba_luma(rgba: &[u8], width: usize, height: usize) -> Vec<u8> {
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

    use super::*;

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
        let mut d = Decoder::with_element(element, format).unwrap();
        let mut out = Vec::new();
        for (i, au) in aus.iter().enumerate() {
            d.push(au, i as u64 * 33_333).unwrap();
            while let Some(p) = d.pull(Duration::from_millis(5)).unwrap() {
                out.push(p);
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while out.len() < aus.len() && std::time::Instant::now() < deadline {
            if let Some(p) = d.pull(Duration::from_millis(100)).unwrap() {
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
            let s = read_luma(&p.data[..W * H], W, H, W).unwrap();
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
            let luma = rgba_luma(&p.data, W, H);
            assert!(luma[(H - 10) * W + W - 10].abs_diff(60) <= 3);
            let s = read_luma(&luma, W, H, W).unwrap();
            assert_eq!(s, stamp(u32::try_from(i).unwrap()));
        }
    }

    #[test]
    fn a_registered_decoder_that_cannot_decode_falls_back() {
        // `identity` is registered but passes H.264 through: the probe's pipeline cannot
        // negotiate, as a hardware decoder without its device cannot open.
        let choice =
            choose_from(DecoderPreference::Auto, &["edgeplaynosuchdec", "identity"]).unwrap();
        assert_eq!(choice.element, SOFTWARE_DECODER);
        assert_eq!(choice.rejected.len(), 1, "{:?}", choice.rejected);
        assert_eq!(choice.rejected[0].0, "identity");
    }

    #[test]
    fn software_preference_never_probes() {
        // The same candidate that Auto probes (and rejects) above is not even tried.
        let choice = choose_from(DecoderPreference::Software, &["identity"]).unwrap();
        assert_eq!(choice.element, SOFTWARE_DECODER);
        assert!(choice.rejected.is_empty());
        let auto = choose_from(DecoderPreference::Auto, &["identity"]).unwrap();
        assert_eq!(auto.rejected.len(), 1);
    }

    #[test]
    fn the_probe_stream_decodes_in_software() {
        probe(SOFTWARE_DECODER).unwrap();
    }
}
