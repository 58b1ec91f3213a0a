//! Opus decoding with GStreamer (`appsrc ! opusdec ! audioconvert ! S16LE ! appsink`),
//! run on the session's audio thread. The edge sends 48 kHz mono Opus in 10 ms packets, each
//! stamped with its presentation time on the session clock that video frames also use; decoded
//! chunks keep that time, so an application plays them in sync with the frames.

use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

/// Sample rate of decoded audio, Hz.
///
/// ```
/// // A 10 ms chunk holds AUDIO_RATE / 100 samples per channel.
/// assert_eq!(edgeplay_client::AUDIO_RATE / 100, 480);
/// ```
pub const AUDIO_RATE: u32 = 48_000;
/// Channels of decoded audio.
///
/// ```
/// assert_eq!(edgeplay_client::AUDIO_CHANNELS, 1);
/// ```
pub const AUDIO_CHANNELS: u16 = 1;

/// Decoded game audio: 16-bit signed samples, interleaved, [`AUDIO_RATE`] Hz,
/// [`AUDIO_CHANNELS`] channels.
///
/// ```no_run
/// # async fn demo(session: &mut edgeplay_client::Session) {
/// if let Some(chunk) = session.next_audio().await {
///     // Play `chunk.samples` when the frame with the same pts is shown.
///     println!("{} samples at {:?}", chunk.samples.len(), chunk.pts);
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioChunk {
    /// Presentation time on the session clock, the clock of [`crate::Header::pts_us`].
    pub pts: Duration,
    /// Duration of the chunk.
    pub duration: Duration,
    /// The samples, interleaved when there is more than one channel.
    pub samples: Vec<i16>,
}

#[derive(Debug)]
pub(crate) struct OpusDecoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
}

fn make(name: &str) -> Result<gst::Element, String> {
    crate::decode::element(name, "gstreamer1.0-plugins-base")
}

impl OpusDecoder {
    pub(crate) fn new() -> Result<Self, String> {
        gst::init().map_err(|e| format!("GStreamer failed to start: {e}"))?;
        let pipeline = gst::Pipeline::new();
        let src = gst_app::AppSrc::builder()
            .caps(
                &gst::Caps::builder("audio/x-opus")
                    .field("channel-mapping-family", 0i32)
                    .field("rate", i32::try_from(AUDIO_RATE).unwrap_or(48_000))
                    .field("channels", i32::from(AUDIO_CHANNELS))
                    .build(),
            )
            .format(gst::Format::Time)
            .is_live(true)
            .do_timestamp(false)
            .block(false)
            .max_bytes(0)
            .build();
        let dec = make("opusdec")?;
        let convert = make("audioconvert")?;
        let caps = make("capsfilter")?;
        caps.set_property(
            "caps",
            gst::Caps::builder("audio/x-raw")
                .field("format", "S16LE")
                .field("layout", "interleaved")
                .field("rate", i32::try_from(AUDIO_RATE).unwrap_or(48_000))
                .field("channels", i32::from(AUDIO_CHANNELS))
                .build(),
        );
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .max_buffers(64)
            .drop(false)
            .build();
        let chain = [
            src.upcast_ref::<gst::Element>(),
            &dec,
            &convert,
            &caps,
            sink.upcast_ref(),
        ];
        crate::decode::add_and_link(&pipeline, &chain, "audio decoder pipeline")?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("audio decoder pipeline did not start: {e}"))?;
        Ok(Self {
            pipeline,
            src,
            sink,
        })
    }

    pub(crate) fn push(&mut self, packet: &[u8], pts_us: u64) -> Result<(), String> {
        let mut buffer = gst::Buffer::from_slice(packet.to_vec());
        if let Some(b) = buffer.get_mut() {
            b.set_pts(gst::ClockTime::from_useconds(pts_us));
            b.set_duration(gst::ClockTime::from_mseconds(10));
        }
        self.src
            .push_buffer(buffer)
            .map(|_| ())
            .map_err(|e| format!("audio decoder refused data: {e}"))
    }

    pub(crate) fn pull(&mut self, timeout: Duration) -> Result<Option<AudioChunk>, String> {
        let timeout = gst::ClockTime::from_nseconds(u64::try_from(timeout.as_nanos()).unwrap_or(0));
        let Some(sample) = self.sink.try_pull_sample(timeout) else {
            if let Some(bus) = self.pipeline.bus()
                && let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error])
                && let gst::MessageView::Error(e) = msg.view()
            {
                return Err(format!("audio decoder failed: {}", e.error()));
            }
            return Ok(None);
        };
        let buffer = sample.buffer().ok_or("decoded audio without buffer")?;
        let map = buffer
            .map_readable()
            .map_err(|e| format!("decoded audio: {e}"))?;
        let samples: Vec<i16> = map
            .as_slice()
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let frames = samples.len() / usize::from(AUDIO_CHANNELS);
        Ok(Some(AudioChunk {
            pts: Duration::from_nanos(buffer.pts().map_or(0, gst::ClockTime::nseconds)),
            duration: Duration::from_micros(
                u64::try_from(frames).unwrap_or(0) * 1_000_000 / u64::from(AUDIO_RATE),
            ),
            samples,
        }))
    }
}

impl Drop for OpusDecoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
