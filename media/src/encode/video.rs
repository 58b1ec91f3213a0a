//! H.264 video: `appsrc ! <encoder> ! h264parse ! appsink`, one frame in, one access unit out.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use edgeplay_protocol::whep::H264Profile;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::{
    EncodeError, EncoderKind, add_and_link, buffer_pool, build_error, capsfilter, clock_time, init,
    live_src, make, pending_error, require, running_time, start, stop, try_set, wait_eos,
};

/// Default bound on [`VideoEncoder::encode`]'s wait for the access unit.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `Drop` waits for the pipeline to drain after EOS.
const DROP_DRAIN: Duration = Duration::from_millis(500);
/// Pull in slices this long so that a pipeline error ends the wait early.
const PULL_SLICE: Duration = Duration::from_millis(50);
/// x264's `key-int-max` for "keyframes only on request" (its range ends at `i32::MAX`).
const X264_KEYINT_INFINITE: u32 = 2_147_483_647;

/// What to encode and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoConfig {
    /// Picture width in pixels: a multiple of 4 (so NV12 rows are unpadded).
    pub width: u32,
    /// Picture height in pixels: even.
    pub height: u32,
    /// Frames per second (the tick rate); sets frame durations and the rate control's budget.
    pub fps: u32,
    /// Target bitrate in kbit/s; change it while running with [`VideoEncoder::set_bitrate`].
    pub bitrate_kbps: u32,
    /// Encoder from [`super::probe`].
    pub encoder: EncoderKind,
    /// Frames between keyframes; 0 = keyframes only on request (and the first frame).
    pub keyframe_interval: u32,
    /// x264 sliced threads; 0 = one per core. Ignored by NVENC.
    pub threads: u32,
}

impl VideoConfig {
    /// Bytes of one NV12 picture: `width * height * 3 / 2`.
    #[must_use]
    pub fn nv12_size(&self) -> usize {
        let pixels = u64::from(self.width) * u64::from(self.height);
        usize::try_from(pixels * 3 / 2).unwrap_or(usize::MAX)
    }

    fn validate(&self) -> Result<(), EncodeError> {
        let reason = if self.width == 0 || self.height == 0 {
            "width and height must not be 0"
        } else if self.width & 3 != 0 || self.height & 1 != 0 {
            "width must be a multiple of 4 and height even (unpadded NV12)"
        } else if self.width > 4096 || self.height > 4096 {
            "width and height must be at most 4096"
        } else if self.fps == 0 {
            "fps must not be 0"
        } else if self.bitrate_kbps == 0 {
            "bitrate_kbps must not be 0"
        } else {
            return Ok(());
        };
        Err(EncodeError::InvalidConfig {
            reason: format!(
                "{reason} (got {}x{} @ {} fps, {} kbit/s)",
                self.width, self.height, self.fps, self.bitrate_kbps
            ),
        })
    }
}

/// One H.264 access unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Annex-B access unit (start codes; SPS and PPS precede every keyframe).
    pub data: Vec<u8>,
    /// Presentation time, as passed to [`VideoEncoder::encode`].
    pub pts: Duration,
    /// An IDR picture: decodable on its own.
    pub keyframe: bool,
    /// Time from pushing the picture to receiving its access unit.
    pub encode_time: Duration,
}

/// Counters since the encoder was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncoderStats {
    /// Access units produced.
    pub frames: u64,
    /// Bytes produced.
    pub bytes: u64,
    /// Keyframes produced.
    pub keyframes: u64,
    /// Keyframes requested (by [`VideoEncoder::request_keyframe`] or `force_keyframe`).
    pub keyframe_requests: u64,
    /// Sum of [`EncodedFrame::encode_time`].
    pub encode_time_total: Duration,
    /// Last [`EncodedFrame::encode_time`].
    pub encode_time_last: Duration,
    /// Largest [`EncodedFrame::encode_time`].
    pub encode_time_max: Duration,
    /// Current target bitrate.
    pub bitrate_kbps: u32,
    /// Whether the encoder refreshes with a moving intra column instead of IDR pictures
    /// ([`VideoEncoder::set_intra_refresh`]).
    pub intra_refresh: bool,
}

impl EncoderStats {
    /// Mean encode time per frame.
    #[must_use]
    pub fn encode_time_mean(&self) -> Duration {
        u32::try_from(self.frames)
            .ok()
            .filter(|&n| n > 0)
            .map_or(Duration::ZERO, |n| self.encode_time_total / n)
    }
}

/// A running H.264 encoder pipeline. See the [module docs](super) for the calling contract.
#[derive(Debug)]
pub struct VideoEncoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
    encoder: gst::Element,
    pool: gst::BufferPool,
    kind: EncoderKind,
    /// Bytes of one NV12 picture.
    picture_len: usize,
    frame_duration: gst::ClockTime,
    keyframe_pending: bool,
    /// Counters and the pull timeout, shared with the [`AccessUnits`] handles.
    shared: Arc<Mutex<Shared>>,
    /// x264's `key-int-max` from before intra refresh was switched on.
    keyint_before_refresh: Option<u32>,
}

impl VideoEncoder {
    /// Builds and starts the pipeline, encoding constrained baseline.
    ///
    /// # Errors
    /// [`EncodeError::InvalidConfig`], [`EncodeError::MissingElement`], or
    /// [`EncodeError::Pipeline`] when the pipeline does not start.
    pub fn new(cfg: &VideoConfig) -> Result<Self, EncodeError> {
        Self::with_profile(cfg, H264Profile::ConstrainedBaseline)
    }

    /// Builds and starts the pipeline, encoding `profile` (the one a WebRTC peer negotiated);
    /// never with B-frames.
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn with_profile(cfg: &VideoConfig, profile: H264Profile) -> Result<Self, EncodeError> {
        init()?;
        cfg.validate()?;
        require("h264parse")?;
        let (width, height, fps) = (
            i32::try_from(cfg.width).unwrap_or(i32::MAX),
            i32::try_from(cfg.height).unwrap_or(i32::MAX),
            i32::try_from(cfg.fps).unwrap_or(i32::MAX),
        );
        let raw_caps = gst::Caps::builder("video/x-raw")
            .field("format", "NV12")
            .field("width", width)
            .field("height", height)
            .field("framerate", gst::Fraction::new(fps, 1))
            .build();

        let pipeline = gst::Pipeline::with_name("video-encoder");
        let src = live_src(&raw_caps);
        let (encoder, encoder_caps) = make_encoder(cfg, profile)?;
        let parse = make("h264parse")?;
        parse.set_property("config-interval", -1i32);
        let sink = gst_app::AppSink::builder()
            .name("sink")
            .caps(
                &gst::Caps::builder("video/x-h264")
                    .field("stream-format", "byte-stream")
                    .field("alignment", "au")
                    .build(),
            )
            .sync(false)
            .max_buffers(4)
            .drop(false)
            .build();
        add_and_link(
            &pipeline,
            &[
                src.upcast_ref(),
                &encoder,
                &capsfilter(&encoder_caps)?,
                &parse,
                sink.upcast_ref(),
            ],
        )?;

        // Input pictures come from a pool, so steady state allocates nothing.
        let size = u32::try_from(cfg.nv12_size()).map_err(|_| EncodeError::InvalidConfig {
            reason: "picture too large".to_owned(),
        })?;
        let pool = buffer_pool(&raw_caps, size)?;

        start(&pipeline)?;
        tracing::debug!(
            encoder = %cfg.encoder,
            width = cfg.width,
            height = cfg.height,
            fps = cfg.fps,
            bitrate_kbps = cfg.bitrate_kbps,
            ?profile,
            "video encoder started"
        );
        Ok(Self {
            pipeline,
            src,
            sink,
            encoder,
            pool,
            kind: cfg.encoder.clone(),
            picture_len: cfg.nv12_size(),
            frame_duration: gst::ClockTime::SECOND / u64::from(cfg.fps),
            keyframe_pending: false,
            keyint_before_refresh: None,
            shared: Arc::new(Mutex::new(Shared {
                stats: EncoderStats {
                    bitrate_kbps: cfg.bitrate_kbps,
                    ..EncoderStats::default()
                },
                timeout: DEFAULT_TIMEOUT,
            })),
        })
    }

    /// Encodes one picture. `fill` receives the pooled NV12 buffer (`width * height * 3 / 2`
    /// bytes: the Y plane, then the interleaved UV plane, rows unpadded; its old content is
    /// stale) and writes the picture into it; its result is handed back with the access unit.
    ///
    /// Blocks until the access unit for this picture arrives (at most the timeout, 2 s by
    /// default). `force_keyframe` makes this picture an IDR, as [`Self::request_keyframe`] does.
    ///
    /// # Errors
    /// [`EncodeError::Timeout`] when no access unit arrives in time, [`EncodeError::Pipeline`]
    /// when an element fails.
    pub fn encode<R>(
        &mut self,
        pts: Duration,
        force_keyframe: bool,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<(EncodedFrame, R), EncodeError> {
        let (pushed, result) = self.push(pts, force_keyframe, fill)?;
        let frame = self.access_units().next(pts, pushed)?;
        Ok((frame, result))
    }

    /// The first half of [`Self::encode`]: fills and pushes one picture and returns when it
    /// was pushed, without waiting for its access unit, which [`AccessUnits::next`] (on any
    /// thread) then takes. Pictures are encoded in the order they are pushed; up to
    /// [`MAX_QUEUED`] may wait for the encoder.
    ///
    /// # Errors
    /// [`EncodeError::Pipeline`] when the pool or the source fails.
    pub fn push<R>(
        &mut self,
        pts: Duration,
        force_keyframe: bool,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<(Instant, R), EncodeError> {
        let mut buffer = self
            .pool
            .acquire_buffer(None)
            .map_err(|e| build_error("buffer pool", &e))?;
        let result = {
            let Some(buf) = buffer.get_mut() else {
                return Err(build_error("buffer pool", &"pooled buffer is shared"));
            };
            let mut map = buf
                .map_writable()
                .map_err(|e| build_error("buffer pool", &e))?;
            fill(map.as_mut_slice())
        };
        Ok((self.send(buffer, pts, force_keyframe)?, result))
    }

    /// [`Self::push`] of a picture already in memory the encoder may read in place (an
    /// [`Nv12Frame`](crate::render::Nv12Frame), say): no copy; `picture` is dropped once the
    /// encoder is done with it. Returns when it was pushed.
    ///
    /// # Errors
    /// [`EncodeError::InvalidConfig`] when `picture` is not one NV12 picture of the
    /// encoder's size; [`EncodeError::Pipeline`] when the source fails.
    pub fn push_picture<P>(
        &mut self,
        pts: Duration,
        force_keyframe: bool,
        picture: P,
    ) -> Result<Instant, EncodeError>
    where
        P: AsRef<[u8]> + Send + 'static,
    {
        if picture.as_ref().len() != self.picture_len {
            return Err(EncodeError::InvalidConfig {
                reason: format!(
                    "a picture of {} bytes for an encoder of {}-byte NV12 pictures",
                    picture.as_ref().len(),
                    self.picture_len
                ),
            });
        }
        self.send(gst::Buffer::from_slice(picture), pts, force_keyframe)
    }

    /// Stamps `buffer` with `pts`, asks for an IDR first when one is due, and pushes it.
    fn send(
        &mut self,
        mut buffer: gst::Buffer,
        pts: Duration,
        force_keyframe: bool,
    ) -> Result<Instant, EncodeError> {
        {
            let Some(buf) = buffer.get_mut() else {
                return Err(build_error("src", &"buffer is shared"));
            };
            buf.set_pts(clock_time(pts));
            buf.set_duration(self.frame_duration);
        }
        if force_keyframe || self.keyframe_pending {
            self.keyframe_pending = false;
            self.lock().stats.keyframe_requests += 1;
            // appsrc queues serialized events in order with its buffers, so the encoder sees the
            // request just before this picture and makes it an IDR.
            if !self.src.send_event(force_key_unit_event()) {
                tracing::warn!("force-key-unit event was not accepted");
            }
        }

        let pushed = Instant::now();
        self.src
            .push_buffer(buffer)
            .map_err(|e| error_or(&self.pipeline, build_error("src", &e)))?;
        Ok(pushed)
    }

    /// The encoder's output side, for a thread other than the one pushing pictures.
    #[must_use]
    pub fn access_units(&self) -> AccessUnits {
        AccessUnits {
            pipeline: self.pipeline.clone(),
            sink: self.sink.clone(),
            shared: Arc::clone(&self.shared),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the next encoded picture a keyframe (IDR with SPS and PPS).
    pub fn request_keyframe(&mut self) {
        self.keyframe_pending = true;
    }

    /// Changes the target bitrate of the running encoder; takes effect on the next picture.
    pub fn set_bitrate(&mut self, kbps: u32) {
        let kbps = kbps.max(1);
        if !try_set(&self.encoder, "bitrate", &kbps.to_string()) {
            tracing::warn!(kbps, encoder = %self.kind, "encoder refused the bitrate");
            return;
        }
        self.lock().stats.bitrate_kbps = kbps;
        tracing::debug!(kbps, "video bitrate changed");
    }

    /// Whether [`Self::set_intra_refresh`] can switch intra refresh on.
    #[must_use]
    pub fn supports_intra_refresh(&self) -> bool {
        self.encoder.find_property("intra-refresh").is_some()
    }

    /// Switches periodic intra refresh on or off: with it, the encoder repairs a damaged
    /// picture with a column of intra blocks sweeping across it over one second of frames
    /// instead of one large IDR, which smooths the bitrate when a lossy path keeps asking for
    /// keyframes. Returns whether the encoder supports it (x264 does; the NVENC elements of
    /// GStreamer 1.22 expose no such property, and then nothing changes).
    ///
    /// x264 reads the setting only when it opens, so the pipeline is taken to READY and back:
    /// the next picture is an IDR, then recovery points (flagged as keyframes by the encoder)
    /// start each refresh sweep while intra refresh is on.
    ///
    /// # Errors
    /// [`EncodeError::Pipeline`] when the pipeline does not restart.
    pub fn set_intra_refresh(&mut self, on: bool) -> Result<bool, EncodeError> {
        if !self.supports_intra_refresh() {
            return Ok(false);
        }
        if self.lock().stats.intra_refresh == on {
            return Ok(true);
        }
        self.pipeline
            .set_state(gst::State::Ready)
            .map_err(|e| error_or(&self.pipeline, build_error("video-encoder", &e)))?;
        self.encoder.set_property("intra-refresh", on);
        // A sweep takes key-int-max frames: one second; off, the configured interval again.
        let fps = u32::try_from(
            gst::ClockTime::SECOND.nseconds() / self.frame_duration.nseconds().max(1),
        )
        .unwrap_or(30)
        .max(1);
        if self.encoder.find_property("key-int-max").is_some() {
            let keyint = if on {
                self.keyint_before_refresh = Some(self.encoder.property::<u32>("key-int-max"));
                fps
            } else {
                self.keyint_before_refresh
                    .take()
                    .unwrap_or(X264_KEYINT_INFINITE)
            };
            self.encoder.set_property("key-int-max", keyint);
        }
        start(&self.pipeline)?;
        self.lock().stats.intra_refresh = on;
        tracing::info!(on, "video intra refresh switched");
        Ok(true)
    }

    /// The encoder in use.
    #[must_use]
    pub fn kind(&self) -> &EncoderKind {
        &self.kind
    }

    /// Counters since creation.
    #[must_use]
    pub fn stats(&self) -> EncoderStats {
        self.lock().stats
    }

    /// Bounds [`Self::encode`]'s wait for an access unit (default 2 s), and
    /// [`AccessUnits::next`]'s.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.lock().timeout = timeout;
    }
}

/// What a [`VideoEncoder`] and its [`AccessUnits`] handles share.
#[derive(Debug)]
struct Shared {
    stats: EncoderStats,
    timeout: Duration,
}

/// Pictures [`VideoEncoder::push`] may have waiting for the encoder before the caller should
/// wait for access units: one being encoded and one queued behind it (more only add latency).
pub const MAX_QUEUED: usize = 2;

/// The output side of a [`VideoEncoder`]: its access units in push order, taken on any thread
/// (a session's runtime renders the next picture while this one is encoded). Cheap to clone.
#[derive(Clone, Debug)]
pub struct AccessUnits {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    shared: Arc<Mutex<Shared>>,
}

impl AccessUnits {
    /// Waits for the access unit of the picture of `pts` pushed at `pushed`.
    ///
    /// # Errors
    /// [`EncodeError::Timeout`] when none arrives within the encoder's timeout,
    /// [`EncodeError::Pipeline`] when an element failed, [`EncodeError::Finished`] after the
    /// end of the stream.
    pub fn next(&self, pts: Duration, pushed: Instant) -> Result<EncodedFrame, EncodeError> {
        let timeout = self.lock().timeout;
        self.pull(pts, pushed, timeout)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the access unit of the picture pushed at `pushed`, at most `timeout`.
    fn pull(
        &self,
        pts: Duration,
        pushed: Instant,
        timeout: Duration,
    ) -> Result<EncodedFrame, EncodeError> {
        loop {
            let waited = pushed.elapsed();
            if waited >= timeout {
                return Err(error_or(
                    &self.pipeline,
                    EncodeError::Timeout {
                        what: "an encoded access unit",
                        waited,
                    },
                ));
            }
            let slice = PULL_SLICE.min(timeout - waited);
            if let Some(sample) = self.sink.try_pull_sample(clock_time(slice)) {
                let encode_time = pushed.elapsed();
                let Some(buffer) = sample.buffer() else {
                    continue;
                };
                let out_pts = running_time(&sample, buffer.pts()).unwrap_or(pts);
                if out_pts < pts {
                    // The late access unit of an earlier picture whose encode timed out.
                    tracing::warn!(?pts, ?out_pts, "dropping a late access unit");
                    continue;
                }
                let map = buffer.map_readable().map_err(|e| build_error("sink", &e))?;
                let frame = EncodedFrame {
                    data: map.as_slice().to_vec(),
                    pts: out_pts,
                    keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                    encode_time,
                };
                self.count(&frame);
                return Ok(frame);
            }
            if let Some(err) = pending_error(&self.pipeline) {
                return Err(err);
            }
            if self.sink.is_eos() {
                return Err(EncodeError::Finished { what: "video" });
            }
        }
    }

    fn count(&self, frame: &EncodedFrame) {
        let s = &mut self.lock().stats;
        s.frames += 1;
        s.bytes += frame.data.len() as u64;
        s.keyframes += u64::from(frame.keyframe);
        s.encode_time_total += frame.encode_time;
        s.encode_time_last = frame.encode_time;
        s.encode_time_max = s.encode_time_max.max(frame.encode_time);
    }
}

/// The pipeline's pending error if there is one, else `fallback`.
fn error_or(pipeline: &gst::Pipeline, fallback: EncodeError) -> EncodeError {
    pending_error(pipeline).unwrap_or(fallback)
}

impl Drop for VideoEncoder {
    fn drop(&mut self) {
        // EOS lets the encoder close its session cleanly; NULL then releases everything even if
        // the drain did not finish.
        if self.src.end_of_stream().is_ok() {
            while self.sink.try_pull_sample(gst::ClockTime::ZERO).is_some() {}
            if let Err(e) = wait_eos(&self.pipeline, DROP_DRAIN) {
                tracing::debug!(error = %e, "video encoder did not drain");
            }
        }
        stop(&self.pipeline);
        let _ = self.pool.set_active(false);
    }
}

/// The `GstForceKeyUnit` downstream event (as `gst_video_event_new_downstream_force_key_unit`
/// builds it, with no running time: "the next picture").
fn force_key_unit_event() -> gst::Event {
    let structure = gst::Structure::builder("GstForceKeyUnit")
        .field("all-headers", true)
        .field("count", 0u32)
        .build();
    gst::event::CustomDownstream::new(structure)
}

/// The configured encoder element and the caps to ask of its output (the capsfilter after the
/// encoder fixes the negotiated profile).
fn make_encoder(
    cfg: &VideoConfig,
    profile: H264Profile,
) -> Result<(gst::Element, gst::Caps), EncodeError> {
    match &cfg.encoder {
        EncoderKind::X264 => {
            let enc = make("x264enc")?;
            enc.set_property_from_str("tune", "zerolatency");
            enc.set_property_from_str("speed-preset", "ultrafast");
            enc.set_property("bframes", 0u32);
            enc.set_property("sliced-threads", true);
            enc.set_property("threads", cfg.threads);
            enc.set_property(
                "key-int-max",
                if cfg.keyframe_interval == 0 {
                    X264_KEYINT_INFINITE
                } else {
                    cfg.keyframe_interval
                },
            );
            enc.set_property("bitrate", cfg.bitrate_kbps);
            enc.set_property("byte-stream", true);
            // Constrained baseline: what every WebRTC H.264 decoder takes; ultrafast uses no
            // CABAC or 8x8 transforms anyway, so this costs nothing. High: x264 names the
            // profile its tools need, so CABAC and 8x8 transforms go on (and B-frames stay
            // off: they would add a frame of latency). x264enc takes the level of the caps
            // after it into the SPS: the smallest that fits the picture and rate, so a decoder
            // sizes its buffers right (WebRTC offers level 3.1 with level-asymmetry-allowed=1,
            // so a higher level is fine to send).
            let caps_profile = match profile {
                H264Profile::ConstrainedBaseline => "constrained-baseline",
                H264Profile::High => {
                    enc.set_property("cabac", true);
                    enc.set_property("dct8x8", true);
                    "high"
                }
            };
            let caps = gst::Caps::builder("video/x-h264")
                .field("profile", caps_profile)
                .field(
                    "level",
                    h264_level(cfg.width, cfg.height, cfg.fps, cfg.bitrate_kbps),
                )
                .build();
            Ok((enc, caps))
        }
        EncoderKind::Nvenc { element } => {
            let enc = gst::ElementFactory::make(element).build().map_err(|_| {
                EncodeError::NvencUnavailable {
                    reason: format!("{element} not registered"),
                }
            })?;
            // Property sets differ between nvh264enc and the newer nvcuda/nvautogpu encoders;
            // set what exists.
            try_set(&enc, "preset", "low-latency-hq");
            try_set(&enc, "rc-mode", "cbr");
            try_set(&enc, "zerolatency", "true");
            try_set(&enc, "bframes", "0");
            try_set(&enc, "rc-lookahead", "0");
            try_set(&enc, "repeat-sequence-header", "true");
            let gop = if cfg.keyframe_interval == 0 {
                "-1".to_owned()
            } else {
                cfg.keyframe_interval.to_string()
            };
            try_set(&enc, "gop-size", &gop);
            try_set(&enc, "bitrate", &cfg.bitrate_kbps.to_string());
            let caps = match profile {
                // NVENC's default is main or high by preset; ask for what was negotiated.
                H264Profile::High => gst::Caps::builder("video/x-h264")
                    .field("profile", "high")
                    .build(),
                H264Profile::ConstrainedBaseline => gst::Caps::new_empty_simple("video/x-h264"),
            };
            Ok((enc, caps))
        }
    }
}

/// H.264 levels (Table A-1): name, MaxMBPS (macroblocks/s), MaxFS (macroblocks), MaxBR for
/// the baseline profile (kbit/s).
const H264_LEVELS: [(&str, u64, u64, u64); 18] = [
    ("1", 1_485, 99, 64),
    ("1.1", 3_000, 396, 192),
    ("1.2", 6_000, 396, 384),
    ("1.3", 11_880, 396, 768),
    ("2", 11_880, 396, 2_000),
    ("2.1", 19_800, 792, 4_000),
    ("2.2", 20_250, 1_620, 4_000),
    ("3", 40_500, 1_620, 10_000),
    ("3.1", 108_000, 3_600, 14_000),
    ("3.2", 216_000, 5_120, 20_000),
    ("4", 245_760, 8_192, 20_000),
    ("4.1", 245_760, 8_192, 50_000),
    ("4.2", 522_240, 8_704, 50_000),
    ("5", 589_824, 22_080, 135_000),
    ("5.1", 983_040, 36_864, 240_000),
    ("5.2", 2_073_600, 36_864, 240_000),
    ("6", 4_177_920, 139_264, 240_000),
    ("6.1", 8_355_840, 139_264, 480_000),
];

/// The smallest H.264 level (as GStreamer caps spell it) whose frame size, macroblock rate
/// and bitrate hold `width`×`height` at `fps` and `bitrate_kbps`: 3.2 for 720p60, 4 for
/// 1080p30, 4.2 for 1080p60. Beyond every level: "6.2".
#[must_use]
pub fn h264_level(width: u32, height: u32, fps: u32, bitrate_kbps: u32) -> &'static str {
    let (mbs_w, mbs_h) = (
        u64::from(width.div_ceil(16)),
        u64::from(height.div_ceil(16)),
    );
    let frame = mbs_w * mbs_h;
    let rate = frame * u64::from(fps);
    H264_LEVELS
        .iter()
        .find(|&&(_, max_mbps, max_fs, max_br)| {
            // A side may not exceed sqrt(8 · MaxFS) macroblocks (A.3.1 f, g).
            let side_ok = mbs_w * mbs_w <= 8 * max_fs && mbs_h * mbs_h <= 8 * max_fs;
            frame <= max_fs && rate <= max_mbps && u64::from(bitrate_kbps) <= max_br && side_ok
        })
        .map_or("6.2", |&(name, ..)| name)
}

#[cfg(test)]
mod tests {
    use super::h264_level;

    #[test]
    fn level_fits_resolution_and_rate() {
        assert_eq!(h264_level(1280, 720, 60, 6_000), "3.2");
        assert_eq!(h264_level(1280, 720, 30, 4_000), "3.1");
        assert_eq!(h264_level(1920, 1080, 30, 8_000), "4");
        assert_eq!(h264_level(1920, 1080, 60, 12_000), "4.2");
        assert_eq!(h264_level(1920, 1080, 60, 30_000), "4.2");
        assert_eq!(h264_level(3840, 2160, 60, 40_000), "5.2");
        assert_eq!(h264_level(640, 360, 30, 1_000), "3");
        assert_eq!(h264_level(4096, 4096, 240, 1_000), "6.2");
    }
}
