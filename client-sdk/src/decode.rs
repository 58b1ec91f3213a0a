//! Decoding for the SDK: H.264 through `edgeplay-decode` (shared with the edge's tests), on the
//! session's decoder thread, and the GStreamer pipe the Opus decoder ([`crate::audio`]) is
//! built on. GStreamer types stay out of the SDK's API.
//!
//! The decoder is chosen once per process ([`choose_cached`]): with
//! [`DecoderPreference::Auto`] each hardware H.264 decoder in [`HARDWARE_DECODERS`] that is
//! registered must decode a real picture within [`PROBE_TIMEOUT`], and [`SOFTWARE_DECODER`]
//! (`avdec_h264`) is the fallback. Frames come out in NV12 or RGBA ([`PixelFormat`]).
//!
//! This module keeps the SDK's error type (`String`, wrapped by the caller) and its
//! microsecond timestamps; everything else is `edgeplay-decode`'s.

use std::time::Duration;

use gstreamer as gst;

pub use edgeplay_decode::{
    DecoderPreference, HARDWARE_DECODERS, PROBE_TIMEOUT, PixelFormat, SOFTWARE_DECODER,
};

/// The decoder element for `preference`, probing hardware once per process.
pub(crate) fn choose_cached(preference: DecoderPreference) -> Result<&'static str, String> {
    edgeplay_decode::choose_cached(preference).map_err(|e| e.to_string())
}

/// One decoded picture, tightly packed in `format` (see [`PixelFormat`]).
#[derive(Debug)]
pub(crate) struct Picture {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub data: Vec<u8>,
    /// The presentation time its access unit was pushed with, µs.
    pub pts_us: u64,
}

/// A running H.264 decoder fed whole access units.
#[derive(Debug)]
pub(crate) struct Decoder(edgeplay_decode::H264Decoder);

impl Decoder {
    /// A running decoder through `element` (from [`choose_cached`]) handing out `format`.
    pub(crate) fn with_element(element: &str, format: PixelFormat) -> Result<Self, String> {
        edgeplay_decode::H264Decoder::with_element(element, format)
            .map(Self)
            .map_err(|e| e.to_string())
    }

    /// Pushes one access unit stamped `pts_us`.
    pub(crate) fn push(&mut self, data: &[u8], pts_us: u64) -> Result<(), String> {
        self.0
            .push(data, Some(Duration::from_micros(pts_us)))
            .map_err(|e| e.to_string())
    }

    /// The next picture within `timeout`; `Ok(None)` when none came.
    pub(crate) fn pull(&mut self, timeout: Duration) -> Result<Option<Picture>, String> {
        let picture = self.0.try_pull(timeout).map_err(|e| e.to_string())?;
        Ok(picture.map(|p| Picture {
            width: p.width,
            height: p.height,
            format: p.format,
            pts_us: p
                .pts
                .map_or(0, |t| u64::try_from(t.as_micros()).unwrap_or(u64::MAX)),
            data: p.data,
        }))
    }
}

/// A running `appsrc ! … ! appsink` pipeline (`edgeplay_decode::pipe::AppPipe`) with the SDK's
/// errors and timestamps: encoded data in, decoded samples out.
#[derive(Debug)]
pub(crate) struct AppPipe(edgeplay_decode::pipe::AppPipe);

impl AppPipe {
    /// Links a live, non-blocking `appsrc` with `caps`, `middle`, and an `appsink` holding at
    /// most `max_buffers`, and starts it.
    pub(crate) fn start(
        what: &'static str,
        caps: &gst::Caps,
        middle: &[&gst::Element],
        max_buffers: u32,
    ) -> Result<Self, String> {
        edgeplay_decode::pipe::AppPipe::start(what, caps, middle, max_buffers, true)
            .map(Self)
            .map_err(|e| e.to_string())
    }

    /// Pushes one encoded unit stamped `pts_us` (and `duration`, when known).
    pub(crate) fn push(
        &self,
        data: &[u8],
        pts_us: u64,
        duration: Option<gst::ClockTime>,
    ) -> Result<(), String> {
        self.0
            .push(
                data,
                Some(Duration::from_micros(pts_us)),
                duration.map(Duration::from),
            )
            .map_err(|e| e.to_string())
    }

    /// The next decoded sample within `timeout`; `Ok(None)` when none came, an error when the
    /// pipeline reported one.
    pub(crate) fn pull(&self, timeout: Duration) -> Result<Option<gst::Sample>, String> {
        self.0.pull(timeout).map_err(|e| e.to_string())
    }
}

/// A GStreamer element by factory name; `packages` names what ships it when it is missing.
pub(crate) fn element(name: &str, packages: &'static str) -> Result<gst::Element, String> {
    edgeplay_decode::pipe::element(name, packages).map_err(|e| e.to_string())
}

/// Limited-range luma of RGBA pixels with BT.709 weights, for reading the stamp from an RGBA
/// picture (see `edgeplay_decode::rgba_luma`).
pub(crate) fn rgba_luma(rgba: &[u8], width: usize, height: usize) -> Vec<u8> {
    edgeplay_decode::rgba_luma(rgba, width, height)
}

#[cfg(test)]
mod tests {
    use gstreamer::prelude::*;
    use gstreamer_app as gst_app;

    use super::*;

    /// `n` grey 128x96 pictures encoded with x264, one access unit each.
    fn stream(n: u64) -> Vec<Vec<u8>> {
        gst::init().unwrap();
        let pipeline = gst::parse::launch(
            "appsrc name=src format=time caps=video/x-raw,format=NV12,width=128,height=96,framerate=30/1 \
             ! x264enc tune=zerolatency speed-preset=ultrafast \
             ! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let by_name = |n: &str| pipeline.by_name(n).unwrap();
        let src = by_name("src").downcast::<gst_app::AppSrc>().unwrap();
        let sink = by_name("sink").downcast::<gst_app::AppSink>().unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        for i in 0..n {
            let mut b = gst::Buffer::from_slice(vec![128u8; 128 * 96 * 3 / 2]);
            b.get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_mseconds(i * 33));
            src.push_buffer(b).unwrap();
        }
        src.end_of_stream().unwrap();
        let mut aus = Vec::new();
        while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
            aus.push(s.buffer().unwrap().map_readable().unwrap().to_vec());
        }
        pipeline.set_state(gst::State::Null).unwrap();
        aus
    }

    #[test]
    fn pictures_come_back_with_the_pts_they_were_pushed_with() {
        let element = choose_cached(DecoderPreference::Software).unwrap();
        assert_eq!(element, SOFTWARE_DECODER);
        let mut d = Decoder::with_element(element, PixelFormat::Rgba).unwrap();
        let aus = stream(3);
        assert_eq!(aus.len(), 3);
        let mut pictures = Vec::new();
        for (i, au) in (0u64..).zip(&aus) {
            d.push(au, 1_500_000 + i * 33_333).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pictures.len() < 3 && std::time::Instant::now() < deadline {
            if let Some(p) = d.pull(Duration::from_millis(100)).unwrap() {
                pictures.push(p);
            }
        }
        let pts: Vec<u64> = pictures.iter().map(|p| p.pts_us).collect();
        assert_eq!(pts, [1_500_000, 1_533_333, 1_566_666]);
        let p = &pictures[0];
        assert_eq!((p.width, p.height, p.format), (128, 96, PixelFormat::Rgba));
        assert_eq!(p.data.len(), 128 * 96 * 4);
        let luma = rgba_luma(&p.data, 128, 96);
        assert!(luma[0].abs_diff(128) <= 3, "{}", luma[0]);
    }

    #[test]
    fn a_missing_element_says_what_to_install() {
        gst::init().unwrap();
        let err = element("edgeplaynosuchelement", "gstreamer1.0-nothing").unwrap_err();
        assert!(err.contains("install gstreamer1.0-nothing"), "{err}");
    }
}
