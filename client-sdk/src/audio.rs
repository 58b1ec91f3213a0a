//! Opus decoding with GStreamer (`appsrc ! opusdec ! audioconvert ! S16LE ! appsink`),
//! run on the session's audio thread. The edge sends 48 kHz mono Opus in 10 ms packets, each
//! stamped with its presentation time on the session clock that video frames also use; decoded
//! chunks keep that time, so an application plays them in sync with the frames.
//!
//! The I/O around it: [`read_datagrams`] takes the Opus packets off the connection's datagrams,
//! [`audio_loop`] decodes them on the audio thread.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use edgeplay_protocol::media::Datagram;
use gstreamer as gst;
use gstreamer::prelude::*;
use tokio::sync::mpsc;
use tracing::{trace, warn};

use crate::shared::Shared;

/// Sample rate of decoded audio, Hz.
pub const AUDIO_RATE: u32 = 48_000;
/// Channels of decoded audio.
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
    pipe: crate::decode::AppPipe,
}

fn make(name: &str) -> Result<gst::Element, String> {
    crate::decode::element(name, "gstreamer1.0-plugins-base")
}

impl OpusDecoder {
    pub(crate) fn new() -> Result<Self, String> {
        gst::init().map_err(|e| format!("GStreamer failed to start: {e}"))?;
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
        let pipe = crate::decode::AppPipe::start(
            "audio decoder",
            &gst::Caps::builder("audio/x-opus")
                .field("channel-mapping-family", 0i32)
                .field("rate", i32::try_from(AUDIO_RATE).unwrap_or(48_000))
                .field("channels", i32::from(AUDIO_CHANNELS))
                .build(),
            &[&dec, &convert, &caps],
            64,
        )?;
        Ok(Self { pipe })
    }

    pub(crate) fn push(&mut self, packet: &[u8], pts_us: u64) -> Result<(), String> {
        self.pipe
            .push(packet, pts_us, Some(gst::ClockTime::from_mseconds(10)))
    }

    pub(crate) fn pull(&mut self, timeout: Duration) -> Result<Option<AudioChunk>, String> {
        let Some(sample) = self.pipe.pull(timeout)? else {
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

/// Reads the connection's datagrams: Opus packets go to the audio thread (dropped when it is
/// behind), anything else is ignored.
pub(crate) async fn read_datagrams(
    conn: quinn::Connection,
    shared: Arc<Shared>,
    audio: std::sync::mpsc::SyncSender<(u64, Vec<u8>)>,
) {
    while let Ok(d) = conn.read_datagram().await {
        match Datagram::decode(&d) {
            Ok(Datagram::Audio { header, data }) => {
                shared.counters.audio.fetch_add(1, Ordering::Relaxed);
                // A full queue means the audio thread is behind: this chunk is dropped.
                let _ = audio.try_send((header.pts_us, data));
            }
            Ok(Datagram::Input(_)) | Err(_) => trace!("ignored datagram"),
        }
    }
}

/// Decodes Opus packets on the audio thread and hands the chunks out.
pub(crate) fn audio_loop(
    decoder: &mut OpusDecoder,
    input: &std::sync::mpsc::Receiver<(u64, Vec<u8>)>,
    output: &mpsc::Sender<AudioChunk>,
    shared: &Shared,
) {
    while let Ok((pts_us, packet)) = input.recv() {
        if let Err(e) = decoder.push(&packet, pts_us) {
            warn!("{e}");
            return;
        }
        loop {
            match decoder.pull(Duration::from_millis(5)) {
                Ok(Some(chunk)) => {
                    shared
                        .counters
                        .audio_decoded
                        .fetch_add(1, Ordering::Relaxed);
                    match output.try_send(chunk) {
                        Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    warn!("{e}");
                    return;
                }
            }
        }
    }
}
