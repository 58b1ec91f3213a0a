//! H.264 decoding to NV12 with GStreamer (`appsrc ! h264parse ! avdec_h264 ! videoconvert !
//! NV12 ! appsink`), run on the session's decoder thread. The edge agent has its own copy for
//! its tests; the SDK cannot depend on the edge, and GStreamer types stay out of both APIs.

use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

/// One decoded NV12 picture, tightly packed (Y stride = width, then interleaved UV).
#[derive(Debug)]
pub(crate) struct Picture {
    pub width: u32,
    pub height: u32,
    pub nv12: Vec<u8>,
    pub pts_us: u64,
}

#[derive(Debug)]
pub(crate) struct Decoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
}

fn make(name: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(name).build().map_err(|_| {
        format!(
            "GStreamer element `{name}` is missing: install gstreamer1.0-libav and gstreamer1.0-plugins-bad"
        )
    })
}

impl Decoder {
    pub(crate) fn new() -> Result<Self, String> {
        gst::init().map_err(|e| format!("GStreamer failed to start: {e}"))?;
        let pipeline = gst::Pipeline::new();
        let src = gst_app::AppSrc::builder()
            .caps(
                &gst::Caps::builder("video/x-h264")
                    .field("stream-format", "byte-stream")
                    .field("alignment", "au")
                    .build(),
            )
            .format(gst::Format::Time)
            .is_live(true)
            .do_timestamp(false)
            .block(false)
            .max_bytes(0)
            .build();
        let parse = make("h264parse")?;
        let decoder = make("avdec_h264")?;
        // Slice threads add no delay; frame threads would hold pictures back.
        if decoder.has_property("thread-type") {
            decoder.set_property_from_str("thread-type", "slice");
        }
        let convert = make("videoconvert")?;
        let caps = make("capsfilter")?;
        caps.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "NV12")
                .build(),
        );
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .max_buffers(8)
            .drop(false)
            .build();
        let chain = [
            src.upcast_ref::<gst::Element>(),
            &parse,
            &decoder,
            &convert,
            &caps,
            sink.upcast_ref(),
        ];
        pipeline
            .add_many(chain)
            .map_err(|e| format!("decoder pipeline: {e}"))?;
        gst::Element::link_many(chain).map_err(|e| format!("decoder pipeline: {e}"))?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("decoder pipeline did not start: {e}"))?;
        Ok(Self {
            pipeline,
            src,
            sink,
        })
    }

    pub(crate) fn push(&mut self, data: &[u8], pts_us: u64) -> Result<(), String> {
        let mut buffer = gst::Buffer::from_slice(data.to_vec());
        if let Some(b) = buffer.get_mut() {
            b.set_pts(gst::ClockTime::from_useconds(pts_us));
        }
        self.src
            .push_buffer(buffer)
            .map(|_| ())
            .map_err(|e| format!("decoder refused data: {e}"))
    }

    pub(crate) fn pull(&mut self, timeout: Duration) -> Result<Option<Picture>, String> {
        let timeout = gst::ClockTime::from_nseconds(u64::try_from(timeout.as_nanos()).unwrap_or(0));
        let Some(sample) = self.sink.try_pull_sample(timeout) else {
            if let Some(bus) = self.pipeline.bus()
                && let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error])
                && let gst::MessageView::Error(e) = msg.view()
            {
                return Err(format!("decoder failed: {}", e.error()));
            }
            return Ok(None);
        };
        picture(&sample).map(Some)
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Copies an NV12 sample in GStreamer's default layout (rows padded to 4 bytes, planes one
/// after the other) into a tightly packed picture.
fn picture(sample: &gst::Sample) -> Result<Picture, String> {
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
    let stride = width.next_multiple_of(4);
    let chroma_rows = height.div_ceil(2);
    let uv_offset = stride * height.next_multiple_of(2);
    if data.len() < uv_offset + stride * chroma_rows {
        return Err("decoded picture smaller than its caps say".into());
    }
    let mut nv12 = Vec::with_capacity(width * (height + chroma_rows));
    for row in data[..stride * height].chunks(stride) {
        nv12.extend_from_slice(&row[..width]);
    }
    for row in data[uv_offset..uv_offset + stride * chroma_rows].chunks(stride) {
        nv12.extend_from_slice(&row[..width]);
    }
    Ok(Picture {
        width: u32::try_from(width).unwrap_or(u32::MAX),
        height: u32::try_from(height).unwrap_or(u32::MAX),
        nv12,
        pts_us,
    })
}
