//! Opus audio: `appsrc ! audioconvert ! opusenc ! appsink`, 48 kHz mono, 10 ms packets.

use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::{
    EncodeError, add_and_link, buffer_pool, build_error, clock_time, init, live_src, make,
    pending_error, running_time, start, stop, wait_eos,
};

/// Sample rate of the game's audio, Hz.
pub const AUDIO_SAMPLE_RATE: u32 = 48_000;
/// Channels of the game's audio.
pub const AUDIO_CHANNELS: u32 = 1;
/// Duration of one Opus packet.
pub const AUDIO_FRAME: Duration = Duration::from_millis(10);
/// Opus bitrate, bit/s.
const AUDIO_BITRATE: i32 = 64_000;
/// Pooled input buffers hold this much audio; larger pushes allocate.
const POOL_BUFFER: Duration = Duration::from_millis(100);
/// Samples per Opus packet.
const PACKET_SAMPLES: u64 = 480;
/// How long [`AudioEncoder::pull`] waits for the packets the pushed samples complete.
const PULL_WAIT: Duration = Duration::from_millis(50);
/// How long [`AudioEncoder::finish`] waits for the encoder to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// One Opus packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedAudio {
    /// The Opus packet.
    pub data: Vec<u8>,
    /// Presentation time of the first input sample it decodes to, on the caller's (video)
    /// clock; see [`AudioEncoder::pull`] for the 6.5 ms Opus lookahead.
    pub pts: Duration,
    /// Input audio it covers: [`AUDIO_FRAME`], except 3.5 ms for the first packet and the rest
    /// of the input for the last one.
    pub duration: Duration,
}

/// A running Opus encoder. Push each tick's samples with the tick's PTS; pull packets.
#[derive(Debug)]
pub struct AudioEncoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
    pool: gst::BufferPool,
    pool_bytes: usize,
    samples_pushed: u64,
    packets_pulled: u64,
    finished: bool,
}

impl AudioEncoder {
    /// Builds and starts the pipeline.
    ///
    /// # Errors
    /// [`EncodeError::MissingElement`] (opusenc: gstreamer1.0-plugins-base) or
    /// [`EncodeError::Pipeline`].
    pub fn new() -> Result<Self, EncodeError> {
        init()?;
        let caps = raw_caps();
        let pipeline = gst::Pipeline::with_name("audio-encoder");
        let src = live_src(&caps);
        let convert = make("audioconvert")?;
        let opus = make("opusenc")?;
        opus.set_property_from_str("frame-size", "10");
        opus.set_property("bitrate", AUDIO_BITRATE);
        let sink = gst_app::AppSink::builder()
            .name("sink")
            .sync(false)
            .max_buffers(0)
            .drop(false)
            .build();
        add_and_link(
            &pipeline,
            &[src.upcast_ref(), &convert, &opus, sink.upcast_ref()],
        )?;

        let pool_bytes = samples_in(POOL_BUFFER) * 2;
        let pool = buffer_pool(&caps, u32::try_from(pool_bytes).unwrap_or(u32::MAX))?;

        start(&pipeline)?;
        Ok(Self {
            pipeline,
            src,
            sink,
            pool,
            pool_bytes,
            samples_pushed: 0,
            packets_pulled: 0,
            finished: false,
        })
    }

    /// Queues `samples` (mono, 48 kHz) that start at `pts`. Any count works; packets come out
    /// every 10 ms of input.
    ///
    /// # Errors
    /// [`EncodeError::Finished`] after [`Self::finish`], [`EncodeError::Pipeline`].
    pub fn push(&mut self, pts: Duration, samples: &[i16]) -> Result<(), EncodeError> {
        if self.finished {
            return Err(EncodeError::Finished { what: "audio" });
        }
        if samples.is_empty() {
            return Ok(());
        }
        let bytes = samples.len() * 2;
        let mut buffer = if bytes <= self.pool_bytes {
            self.pool
                .acquire_buffer(None)
                .map_err(|e| build_error("buffer pool", &e))?
        } else {
            gst::Buffer::with_size(bytes).map_err(|e| build_error("buffer", &e))?
        };
        {
            let Some(buf) = buffer.get_mut() else {
                return Err(build_error("buffer pool", &"pooled buffer is shared"));
            };
            buf.set_size(bytes);
            buf.set_pts(clock_time(pts));
            let count = u64::try_from(samples.len()).unwrap_or(u64::MAX);
            buf.set_duration(
                gst::ClockTime::SECOND.mul_div_floor(count, u64::from(AUDIO_SAMPLE_RATE)),
            );
            let mut map = buf.map_writable().map_err(|e| build_error("buffer", &e))?;
            for (out, s) in map.as_mut_slice().chunks_exact_mut(2).zip(samples) {
                out.copy_from_slice(&s.to_le_bytes());
            }
        }
        self.src
            .push_buffer(buffer)
            .map_err(|e| pending_error(&self.pipeline).unwrap_or_else(|| build_error("src", &e)))?;
        self.samples_pushed += samples.len() as u64;
        Ok(())
    }

    /// Every packet that the samples pushed so far complete (one per 10 ms of input, the first
    /// with the first 480 samples), waiting for the encoder at most 50 ms, plus any other
    /// packet already out.
    ///
    /// Timestamps are the input clock of the audio each packet decodes to: Opus looks 6.5 ms
    /// (312 samples) ahead, so the first packet has PTS 0 and a duration of 3.5 ms, and packet
    /// `k >= 1` has PTS `k * 10 ms - 6.5 ms` and a duration of 10 ms; the last one
    /// [`Self::finish`] drains covers the rest, so the packets tile the input exactly.
    ///
    /// # Errors
    /// [`EncodeError::Pipeline`] when the encoder failed.
    pub fn pull(&mut self) -> Result<Vec<EncodedAudio>, EncodeError> {
        let mut out = Vec::new();
        let expected = self.samples_pushed / PACKET_SAMPLES;
        let started = Instant::now();
        while self.packets_pulled < expected {
            let Some(wait) = PULL_WAIT.checked_sub(started.elapsed()) else {
                tracing::debug!(
                    expected,
                    pulled = self.packets_pulled,
                    "opus packets late; returning what is ready"
                );
                break;
            };
            match self.try_pull(wait)? {
                Some(packet) => out.push(packet),
                None => break,
            }
        }
        while let Some(packet) = self.try_pull(Duration::ZERO)? {
            out.push(packet);
        }
        Ok(out)
    }

    /// The next packet, waiting at most `timeout`; `None` when none came.
    ///
    /// # Errors
    /// [`EncodeError::Pipeline`] when the encoder failed.
    pub fn try_pull(&mut self, timeout: Duration) -> Result<Option<EncodedAudio>, EncodeError> {
        let sample = self.sink.try_pull_sample(clock_time(timeout));
        if let Some((sample, buffer)) = sample.as_ref().and_then(|s| Some((s, s.buffer()?))) {
            let map = buffer.map_readable().map_err(|e| build_error("sink", &e))?;
            self.packets_pulled += 1;
            return Ok(Some(EncodedAudio {
                data: map.as_slice().to_vec(),
                pts: running_time(sample, buffer.pts()).unwrap_or_default(),
                duration: buffer.duration().map_or(AUDIO_FRAME, Duration::from),
            }));
        }
        match pending_error(&self.pipeline) {
            Some(err) => Err(err),
            None => Ok(None),
        }
    }

    /// Ends the stream: encodes what is buffered (the last packet is padded with silence) and
    /// returns all packets not pulled yet.
    ///
    /// # Errors
    /// [`EncodeError::Timeout`] when the drain takes more than 2 s, [`EncodeError::Pipeline`].
    pub fn finish(&mut self) -> Result<Vec<EncodedAudio>, EncodeError> {
        if self.finished {
            return Ok(Vec::new());
        }
        self.finished = true;
        self.src
            .end_of_stream()
            .map_err(|e| build_error("src", &e))?;
        let started = Instant::now();
        let mut out = Vec::new();
        while !self.sink.is_eos() {
            let waited = started.elapsed();
            if waited >= DRAIN_TIMEOUT {
                return Err(EncodeError::Timeout {
                    what: "the audio encoder to drain",
                    waited,
                });
            }
            if let Some(packet) = self.try_pull(Duration::from_millis(50))? {
                out.push(packet);
            }
        }
        while let Some(packet) = self.try_pull(Duration::ZERO)? {
            out.push(packet);
        }
        Ok(out)
    }
}

impl Drop for AudioEncoder {
    fn drop(&mut self) {
        if !self.finished && self.src.end_of_stream().is_ok() {
            while self.sink.try_pull_sample(gst::ClockTime::ZERO).is_some() {}
            let _ = wait_eos(&self.pipeline, Duration::from_millis(200));
        }
        stop(&self.pipeline);
        let _ = self.pool.set_active(false);
    }
}

/// Caps of the PCM the caller pushes.
fn raw_caps() -> gst::Caps {
    gst::Caps::builder("audio/x-raw")
        .field("format", "S16LE")
        .field("rate", i32::try_from(AUDIO_SAMPLE_RATE).unwrap_or(48_000))
        .field("channels", i32::try_from(AUDIO_CHANNELS).unwrap_or(1))
        .field("layout", "interleaved")
        .build()
}

/// Samples (per channel) in `d`.
fn samples_in(d: Duration) -> usize {
    usize::try_from(d.as_micros() * u128::from(AUDIO_SAMPLE_RATE) / 1_000_000).unwrap_or(0)
}
