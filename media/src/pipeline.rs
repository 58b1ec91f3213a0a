//! One session's media path: game tick → Vulkan render (as NV12) → readback → encode,
//! and the game's sound → Opus on the same clock.
//!
//! A [`SessionPipeline`] owns its game instance, its render target on the shared [`Gpu`] and
//! its encoders, so one device serves several sessions side by side. It does no pacing: the
//! offline `encode` command calls it back to back or on a schedule, the live runtime
//! ([`crate::session`]) once per tick of its real-time loop.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgeplay_game::game::{Game, GameError};
use edgeplay_game::stamp::Stamp;

use crate::encode::{
    AccessUnits, AudioEncoder, EncodeError, EncodedAudio, EncodedFrame, EncoderKind, H264Profile,
    VideoConfig, VideoEncoder,
};
use crate::gpu::{Gpu, GpuError};
use crate::render::{RenderTarget, StageTimes};
use crate::stats::FrameTimings;

/// Resolutions the edge renders and encodes.
pub const RESOLUTIONS: [(u32, u32); 2] = [(1280, 720), (1920, 1080)];
/// Frame rates the edge runs at (one game tick per frame).
pub const FRAME_RATES: [u32; 2] = [30, 60];

/// What a session's media path produces and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// Frames (and game ticks) per second.
    pub fps: u32,
    /// Initial video bitrate; the transports change it while running.
    pub bitrate_kbps: u32,
    /// Encoder chosen by the probe.
    pub encoder: EncoderKind,
    /// Frames between periodic keyframes; 0 = keyframes only on request.
    pub keyframe_interval: u32,
    /// x264 sliced threads; 0 = one per core.
    pub threads: u32,
    /// Whether the game's sound is encoded to Opus.
    pub audio: bool,
}

impl PipelineConfig {
    /// Checks that the resolution and frame rate are ones the edge serves.
    ///
    /// # Errors
    /// [`PipelineError::Unsupported`] naming what is supported.
    pub fn validate(&self) -> Result<(), PipelineError> {
        if !RESOLUTIONS.contains(&(self.width, self.height)) {
            return Err(PipelineError::Unsupported(format!(
                "resolution {}x{} is not served: use 1280x720 or 1920x1080",
                self.width, self.height
            )));
        }
        if !FRAME_RATES.contains(&self.fps) {
            return Err(PipelineError::Unsupported(format!(
                "{} fps is not served: use 30 or 60",
                self.fps
            )));
        }
        if self.bitrate_kbps == 0 {
            return Err(PipelineError::Unsupported(
                "a bitrate of 0 kbit/s cannot be encoded: give at least 100".into(),
            ));
        }
        Ok(())
    }

    /// The encoder settings this configuration implies.
    #[must_use]
    pub fn video(&self) -> VideoConfig {
        VideoConfig {
            width: self.width,
            height: self.height,
            fps: self.fps,
            bitrate_kbps: self.bitrate_kbps,
            encoder: self.encoder.clone(),
            keyframe_interval: self.keyframe_interval,
            threads: self.threads,
        }
    }
}

/// Why a session's media path failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The request names something the edge does not serve.
    #[error("{0}")]
    Unsupported(String),
    /// The GPU side failed.
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// The encoder side failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The game refused an input or a snapshot.
    #[error(transparent)]
    Game(#[from] GameError),
}

/// One produced frame: the access unit, the audio encoded alongside it, and where time went.
#[derive(Debug)]
pub struct Produced {
    /// The encoded picture (Annex-B access unit).
    pub video: EncodedFrame,
    /// Opus packets completed while this tick's sound was pushed (possibly none).
    pub audio: Vec<EncodedAudio>,
    /// The stamp drawn into the picture.
    pub stamp: Stamp,
    /// Per-stage latency of this frame.
    pub timings: FrameTimings,
}

/// A session's game, render target and encoders.
#[derive(Debug)]
pub struct SessionPipeline {
    game: Game,
    target: RenderTarget,
    video: VideoEncoder,
    audio: Option<AudioEncoder>,
    pcm: Vec<i16>,
    frame: u32,
    frame_duration: Duration,
    /// Schedule time the session skipped (see [`Self::skip`]), added to every PTS after it.
    skipped: Duration,
}

impl SessionPipeline {
    /// Builds the media path of one session around `game`.
    ///
    /// # Errors
    /// An unsupported configuration, or a GPU or encoder set-up failure.
    pub fn new(gpu: &Gpu, cfg: &PipelineConfig, game: Game) -> Result<Self, PipelineError> {
        Self::with_profile(gpu, cfg, game, H264Profile::ConstrainedBaseline)
    }

    /// Builds the media path of one session around `game`, encoding the H.264 `profile` its
    /// WebRTC peer negotiated.
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn with_profile(
        gpu: &Gpu,
        cfg: &PipelineConfig,
        game: Game,
        profile: H264Profile,
    ) -> Result<Self, PipelineError> {
        cfg.validate()?;
        let target = gpu.create_target(cfg.width, cfg.height)?;
        let video = VideoEncoder::with_profile(&cfg.video(), profile)?;
        let audio = if cfg.audio {
            Some(AudioEncoder::new()?)
        } else {
            None
        };
        let pcm = vec![0; game.audio_samples_per_tick()];
        Ok(Self {
            game,
            target,
            video,
            audio,
            pcm,
            frame: 0,
            frame_duration: Duration::from_secs(1) / cfg.fps,
            skipped: Duration::ZERO,
        })
    }

    /// The game as the last produced frame shows it.
    #[must_use]
    pub fn game(&self) -> &Game {
        &self.game
    }

    /// Frames produced so far.
    #[must_use]
    pub fn frames(&self) -> u32 {
        self.frame
    }

    /// The video encoder, for keyframe requests and bitrate changes.
    pub(crate) fn video_encoder(&mut self) -> &mut VideoEncoder {
        &mut self.video
    }

    /// Presentation time of frame `n`: the session clock that video and audio share.
    #[must_use]
    pub fn pts(&self, frame: u32) -> Duration {
        self.frame_duration * frame
    }

    /// Moves the media clock forward by `lost`: the session fell behind its schedule and skipped
    /// it forward, so the PTS of later frames and sound (hence RTP timestamps) follow the wall
    /// clock, not the frame count. Receivers see a gap in media time where real time passed
    /// without frames; without it every skip reads as network delay, and a browser's audio
    /// jitter buffer grows to cover it (100–170 ms measured) while video renders at once.
    pub fn skip(&mut self, lost: Duration) {
        self.skipped += lost;
    }

    /// Runs one tick: `apply_inputs` applies the inputs due at this tick, the game steps, the
    /// frame is rendered with its stamp as NV12, read back and encoded; the tick's sound is
    /// pushed to the Opus encoder with the same PTS.
    ///
    /// # Errors
    /// A GPU, encoder or game failure; the session should end on any of them.
    pub fn produce(
        &mut self,
        force_keyframe: bool,
        apply_inputs: impl FnOnce(&mut Game) -> Result<(), PipelineError>,
    ) -> Result<Produced, PipelineError> {
        let mut audio = Vec::new();
        let mut produced = self.produce_with(force_keyframe, apply_inputs, |a| audio = a)?;
        produced.audio = audio;
        Ok(produced)
    }

    /// [`Self::produce`], handing the tick's Opus packets to `on_audio` as soon as they are
    /// encoded, before the picture is rendered (`Produced::audio` is then empty). A live
    /// transport sends them at once: the render and encode time, and its jitter, stay out of
    /// the audio's arrival, which a receiver's audio jitter buffer sizes itself on. The sound
    /// costs the picture one Opus encode of a tick (well under a millisecond).
    ///
    /// # Errors
    /// As [`Self::produce`].
    pub(crate) fn produce_with(
        &mut self,
        force_keyframe: bool,
        apply_inputs: impl FnOnce(&mut Game) -> Result<(), PipelineError>,
        on_audio: impl FnOnce(Vec<EncodedAudio>),
    ) -> Result<Produced, PipelineError> {
        let units = self.access_units();
        let frame = self.start_frame(force_keyframe, apply_inputs, on_audio)?;
        frame.finish(&units)
    }

    /// The encoder's output side, where [`InFlight::finish`] takes the access units of the
    /// frames [`Self::start_frame`] pushed.
    pub(crate) fn access_units(&self) -> AccessUnits {
        self.video.access_units()
    }

    /// The first half of [`Self::produce_with`]: inputs, the tick, the sound, the render, and
    /// the push of the picture to the encoder, which encodes it on its own threads. The session
    /// runtime renders the next frame while this one is encoded (see [`crate::session`]).
    ///
    /// # Errors
    /// As [`Self::produce`].
    pub(crate) fn start_frame(
        &mut self,
        force_keyframe: bool,
        apply_inputs: impl FnOnce(&mut Game) -> Result<(), PipelineError>,
        on_audio: impl FnOnce(Vec<EncodedAudio>),
    ) -> Result<InFlight, PipelineError> {
        let started = Instant::now();
        apply_inputs(&mut self.game)?;
        self.game.step();
        let tick = started.elapsed();

        let stamp = Stamp {
            frame: self.frame,
            // The stamp carries the low 32 bits; 2^32 ticks is over two years at 60 Hz.
            tick: u32::try_from(self.game.tick() & u64::from(u32::MAX)).unwrap_or(u32::MAX),
            render_time_us: unix_micros(),
            input_seq: u32::try_from(self.game.last_input_seq() & u64::from(u32::MAX))
                .unwrap_or(u32::MAX),
            state_hash: self.game.state_hash(),
        };
        let scene = self.game.scene();
        let pts = self.pts(self.frame);
        if let Some(enc) = &mut self.audio {
            self.game.render_audio(&mut self.pcm);
            enc.push(pts, &self.pcm)?;
            let mut audio = enc.pull()?;
            for a in &mut audio {
                a.pts += self.skipped;
            }
            on_audio(audio);
        }
        // Drawn into memory the encoder reads in place; copied into a pooled picture only when
        // the target has no slot free (or no cached host memory).
        let (pushed, stages) =
            if let Some((frame, stages)) = self.target.render_frame(&scene, &stamp)? {
                (self.video.push_picture(pts, force_keyframe, frame)?, stages)
            } else {
                let target = &mut self.target;
                let (pushed, stages) = self.video.push(pts, force_keyframe, |buf| {
                    target.render_nv12(&scene, &stamp, buf)
                })?;
                (pushed, stages?)
            };
        self.frame += 1;
        Ok(InFlight {
            pts,
            skipped: self.skipped,
            stamp,
            applied_input: self.game.last_input_seq(),
            started,
            pushed,
            tick,
            stages,
        })
    }
}

/// A frame [`SessionPipeline::start_frame`] pushed to the encoder, its access unit still to
/// come: what [`Self::finish`] needs to make it a [`Produced`].
#[derive(Debug)]
pub(crate) struct InFlight {
    /// The encoder's (gapless) presentation time.
    pts: Duration,
    /// The schedule skipped before this frame, added to its PTS on the way out.
    skipped: Duration,
    stamp: Stamp,
    /// The sequence of the last input this frame's tick applied.
    applied_input: u64,
    /// When its tick started.
    started: Instant,
    /// When its picture was pushed to the encoder.
    pushed: Instant,
    tick: Duration,
    stages: StageTimes,
}

impl InFlight {
    /// The sequence of the last input this frame's tick applied.
    pub(crate) fn applied_input(&self) -> u64 {
        self.applied_input
    }

    /// Waits for this frame's access unit from `units` (its pipeline's encoder's; frames
    /// finish in the order they started).
    ///
    /// # Errors
    /// The encoder failed or timed out.
    pub(crate) fn finish(self, units: &AccessUnits) -> Result<Produced, PipelineError> {
        let mut video = units.next(self.pts, self.pushed)?;
        // The encoders see a gapless clock; the skipped schedule is added on the way out.
        video.pts += self.skipped;
        // The video's latency ends when its access unit is out.
        let total = self.started.elapsed();
        let timings = FrameTimings {
            tick: self.tick,
            render: self.stages.render,
            readback: self.stages.readback,
            encode: video.encode_time,
            total,
        };
        Ok(Produced {
            video,
            audio: Vec::new(),
            stamp: self.stamp,
            timings,
        })
    }
}

/// Microseconds since the Unix epoch on this machine's clock (0 if the clock is before 1970).
#[must_use]
pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
