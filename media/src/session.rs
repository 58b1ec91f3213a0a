//! The live session runtime: the one transport-neutral interface every transport plugs into.
//!
//! A session runs on its own thread, a real-time loop at the session's frame rate. Transports
//! talk to it only through a [`SessionHandle`]:
//!
//! - **in**: [`Control`] messages — inputs (with sequence numbers), keyframe requests, bitrate
//!   changes, end — over a bounded channel that never blocks the sender;
//! - **out**: [`MediaPacket`]s (timestamped encoded video and Opus audio) fanned out to every
//!   subscriber through a broadcast channel, and [`InputAck`]s through a watch channel.
//!
//! Inputs are applied strictly in sequence, on the next tick after they arrive: early ones wait
//! in a bounded reorder buffer, duplicates are dropped and counted. The game's tick is logical:
//! it advances only while at least one subscriber is receiving media, so a session that nobody
//! is watching is paused, not played.
//!
//! What a session counts (frames, bytes, inputs, keyframes, bitrate changes, stage timings) it
//! reports through [`SessionMetrics`]; the edge agent exports that to Prometheus.
//!
//! Frames are pipelined over two threads. The session's thread runs the schedule: at each
//! frame's time it applies the due inputs, steps the game, sends the tick's sound, renders the
//! picture and pushes it to the encoder, which encodes on threads of its own. A second thread
//! takes each access unit the moment the encoder hands it out and publishes it. So frame N+1
//! renders while frame N is encoded, and no frame waits for another's publishing. What a frame
//! waits for: its time in the schedule; the render of the frame before it (one thread renders,
//! in order); the encoder finishing the frame before it (x264 encodes in order); and, when
//! [`MAX_QUEUED`] frames are already waiting for the encoder, the oldest of them to come out
//! (the schedule then slips and skips, as when the machine is too slow, instead of queueing
//! latency).
//!
//! ```no_run
//! # fn demo(gpu: edgeplay_media::gpu::Gpu, cfg: edgeplay_media::pipeline::PipelineConfig)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use edgeplay_media::session::{Control, MediaPacket, Session, SessionConfig};
//! use edgeplay_protocol::input::{InputEvent, Key};
//!
//! let metrics = std::sync::Arc::new(edgeplay_media::session::NoMetrics); // the edge passes its own
//! let handle = Session::start(&gpu, SessionConfig::new("s1", cfg, 42), metrics)?;
//! let mut media = handle.subscribe(); // the game starts ticking now
//! handle.send(Control::Input { seq: 1, event: InputEvent::Key { code: Key::ArrowUp, down: true } })?;
//! while let Ok(packet) = media.blocking_recv() {
//!     if let MediaPacket::Video(v) = packet {
//!         if v.stamp.input_seq >= 1 { break; } // the input is in the picture
//!     }
//! }
//! let summary = handle.end()?;
//! println!("{} frames", summary.frames);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use edgeplay_game::game::{Game, GameConfig};
use edgeplay_game::stamp::Stamp;
use edgeplay_protocol::input::InputEvent;
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{debug, info, info_span, warn};

use crate::encode::{AccessUnits, MAX_QUEUED};
use crate::gpu::Gpu;
use crate::keyframe::KeyframePolicy;
use crate::pipeline::{InFlight, PipelineConfig, PipelineError, SessionPipeline, unix_micros};
use crate::stats::FrameTimings;
use crate::stats::{StageStats, StageTable};

/// Inputs that may wait for a missing predecessor; more than this ahead are dropped.
pub const MAX_INPUTS_AHEAD: u64 = 1024;
pub use crate::keyframe::KEYFRAME_MIN_INTERVAL;
/// Bitrates the encoder accepts from a controller, in kbit/s.
pub const BITRATE_RANGE_KBPS: (u32, u32) = (100, 60_000);
/// Encoded packets buffered per subscriber before a slow one starts losing them.
pub const MEDIA_BUFFER: usize = 128;
/// Control messages buffered before senders are told the session is congested.
pub const CONTROL_BUFFER: usize = 4096;
/// Frames of latency history kept for a session's stats.
const STATS_WINDOW: usize = 3600;
/// The longest an intra refresh switch waits for the frames in the encoder to come out.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// What a session reports as it runs: the edge's metrics registry implements it (one instance
/// shared by every session, so the methods take `&self` and must not block). Every method has
/// an empty default, so an implementation picks what it counts.
pub trait SessionMetrics: Send + Sync + std::fmt::Debug {
    /// A session's thread started serving.
    fn session_started(&self) {}
    /// A session's thread stopped (ended or failed).
    fn session_ended(&self) {}
    /// A frame started after its deadline had passed (the loop fell behind).
    fn frame_late(&self) {}
    /// A video access unit went out: its size and the frame's per-stage latency.
    fn video_frame(&self, bytes: usize, timings: &FrameTimings) {
        let _ = (bytes, timings);
    }
    /// The frame that just went out is a keyframe.
    fn keyframe(&self) {}
    /// A keyframe request was merged or absorbed by the rate limit (no IDR of its own).
    fn keyframe_limited(&self) {}
    /// The encoder switched to intra refresh (persistent keyframe requests).
    fn intra_refresh_started(&self) {}
    /// A controller moved the encoder's bitrate; `kbps` is what the encoder applied.
    fn bitrate_changed(&self, kbps: u32) {
        let _ = kbps;
    }
    /// An Opus packet went out.
    fn audio_packet(&self) {}
    /// An input was applied to the game.
    fn input_applied(&self) {}
    /// An input was dropped: `"duplicate"`, `"too_far_ahead"` or `"refused"` (by the game).
    fn input_dropped(&self, reason: &'static str) {
        let _ = reason;
    }
}

/// Counts nothing: for tools and tests that have no metrics registry.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMetrics;

impl SessionMetrics for NoMetrics {}

/// What a transport tells a session.
#[derive(Clone, Debug, PartialEq)]
pub enum Control {
    /// A player input; `seq` starts at 1 and increases by one per input.
    Input {
        /// Sequence number.
        seq: u64,
        /// The event.
        event: InputEvent,
    },
    /// The receiver lost something: the next frame should be a keyframe.
    RequestKeyframe,
    /// The congestion controller's new target bitrate.
    SetBitrate {
        /// kbit/s; clamped to [`BITRATE_RANGE_KBPS`].
        kbps: u32,
    },
    /// Stop the session.
    End,
}

/// An encoded picture as the transports send it.
#[derive(Debug)]
pub struct VideoPacket {
    /// Frame number within the session.
    pub frame: u32,
    /// Presentation time on the session clock (shared with audio).
    pub pts: Duration,
    /// Whether the access unit is an IDR with SPS/PPS.
    pub keyframe: bool,
    /// The Annex-B access unit.
    pub data: Vec<u8>,
    /// The stamp drawn into the picture (render time, tick, input sequence, state hash).
    pub stamp: Stamp,
    /// When the access unit left the encoder, µs since the Unix epoch.
    pub encoded_at_us: u64,
}

/// An Opus packet as the transports send it.
#[derive(Debug)]
pub struct AudioPacket {
    /// Presentation time on the session clock (shared with video).
    pub pts: Duration,
    /// Duration of the packet (10 ms).
    pub duration: Duration,
    /// The Opus packet.
    pub data: Vec<u8>,
}

/// One item of a session's media fan-out. Cloning is cheap.
#[derive(Clone, Debug)]
pub enum MediaPacket {
    /// A video access unit.
    Video(Arc<VideoPacket>),
    /// An Opus packet.
    Audio(Arc<AudioPacket>),
}

/// The two numbers an edge acknowledges inputs with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputAck {
    /// Highest contiguous input sequence applied to the game.
    pub applied: u64,
    /// Highest sequence covered by a committed checkpoint (equals `applied` until the
    /// failover work adds checkpoints).
    pub committed: u64,
}

/// Why a control message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The session has ended; its handle is stale.
    #[error("session {0} has ended")]
    Ended(String),
    /// The control queue is full: the session thread is not keeping up.
    #[error("session {0} is congested: its control queue of {CONTROL_BUFFER} is full; retry")]
    Congested(String),
    /// The session thread failed.
    #[error("session {id} failed: {source}")]
    Failed {
        /// The session.
        id: String,
        /// What failed.
        source: PipelineError,
    },
    /// The session thread panicked (a bug; the message says where).
    #[error("session {0} thread panicked")]
    Panicked(String),
}

/// How to start a session.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Session id (unique on this edge).
    pub id: String,
    /// Media path settings.
    pub pipeline: PipelineConfig,
    /// Game seed.
    pub seed: u64,
    /// The H.264 profile to encode (what a WebRTC peer negotiated; constrained baseline by
    /// default).
    pub profile: crate::encode::H264Profile,
}

impl SessionConfig {
    /// A session `id` playing the game with `seed`.
    #[must_use]
    pub fn new(id: impl Into<String>, pipeline: PipelineConfig, seed: u64) -> Self {
        Self {
            id: id.into(),
            pipeline,
            seed,
            profile: crate::encode::H264Profile::default(),
        }
    }

    /// The same, encoding `profile`.
    #[must_use]
    pub fn with_profile(mut self, profile: crate::encode::H264Profile) -> Self {
        self.profile = profile;
        self
    }
}

/// What a session did, returned when it ends.
#[derive(Clone, Debug)]
pub struct SessionSummary {
    /// Frames produced.
    pub frames: u32,
    /// Encoded video bytes produced.
    pub bytes: u64,
    /// Game tick at the end.
    pub tick: u64,
    /// Game state hash at the end.
    pub state_hash: u64,
    /// Highest input applied.
    pub last_input_seq: u64,
    /// Per-stage latency over the last frames.
    pub latency: StageTable,
}

/// The live view of a running session.
#[derive(Clone, Debug)]
pub struct SessionStats {
    /// Frames produced so far.
    pub frames: u32,
    /// Per-stage latency over the last frames.
    pub latency: StageTable,
    /// The encoder's target bitrate now (the transport's controller sets it), kbit/s.
    pub bitrate_kbps: u32,
    /// Whether the encoder is in intra refresh (persistent keyframe requests, see
    /// [`crate::keyframe`]).
    pub intra_refresh: bool,
}

/// What the session thread shares with its handle.
#[derive(Debug)]
struct Live {
    frames: u32,
    bytes: u64,
    latency: StageStats,
    bitrate_kbps: u32,
    intra_refresh: bool,
}

/// Starts sessions.
#[derive(Debug)]
pub struct Session;

impl Session {
    /// Builds the session's media path on `gpu` and starts its real-time loop on a thread.
    /// The game does not tick until the first [`SessionHandle::subscribe`].
    ///
    /// # Errors
    /// The configuration is unsupported, or the GPU target, the encoders or the game could not
    /// be created.
    pub fn start(
        gpu: &Gpu,
        cfg: SessionConfig,
        metrics: Arc<dyn SessionMetrics>,
    ) -> Result<SessionHandle, PipelineError> {
        let game = Game::new(
            cfg.seed,
            GameConfig {
                tick_hz: cfg.pipeline.fps,
            },
        )?;
        let pipeline = SessionPipeline::with_profile(gpu, &cfg.pipeline, game, cfg.profile)?;
        let (control_tx, control_rx) = mpsc::channel(CONTROL_BUFFER);
        let (media_tx, _) = broadcast::channel(MEDIA_BUFFER);
        let (ack_tx, ack_rx) = watch::channel(InputAck::default());
        let stats = Arc::new(Mutex::new(Live {
            frames: 0,
            bytes: 0,
            latency: StageStats::new(STATS_WINDOW),
            bitrate_kbps: cfg.pipeline.bitrate_kbps,
            intra_refresh: false,
        }));
        let runner = Runner {
            id: cfg.id.clone(),
            fps: cfg.pipeline.fps,
            pipeline,
            control: control_rx,
            media: media_tx.clone(),
            acks: ack_tx,
            stats: Arc::clone(&stats),
            metrics,
            pending: BTreeMap::new(),
            in_flight: Arc::new(AtomicUsize::new(0)),
        };
        let thread = std::thread::Builder::new()
            .name(format!("session-{}", cfg.id))
            .spawn(move || runner.run())
            .map_err(|e| {
                PipelineError::Unsupported(format!("cannot start a session thread: {e}"))
            })?;
        Ok(SessionHandle {
            id: cfg.id,
            control: control_tx,
            media: media_tx,
            acks: ack_rx,
            stats,
            thread: Some(thread),
        })
    }
}

/// A transport's side of a running session.
#[derive(Debug)]
pub struct SessionHandle {
    id: String,
    control: mpsc::Sender<Control>,
    media: broadcast::Sender<MediaPacket>,
    acks: watch::Receiver<InputAck>,
    stats: Arc<Mutex<Live>>,
    thread: Option<JoinHandle<Result<SessionSummary, PipelineError>>>,
}

impl SessionHandle {
    /// The session id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sends a control message without blocking (callable from async code and threads).
    ///
    /// # Errors
    /// [`SessionError::Ended`] once the session stopped, [`SessionError::Congested`] when its
    /// queue is full.
    pub fn send(&self, msg: Control) -> Result<(), SessionError> {
        self.control.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SessionError::Congested(self.id.clone()),
            mpsc::error::TrySendError::Closed(_) => SessionError::Ended(self.id.clone()),
        })
    }

    /// A new receiver of the session's media, from the next packet on. The first receiver
    /// starts the game clock; when the last one is dropped, the game pauses.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<MediaPacket> {
        self.media.subscribe()
    }

    /// The input acknowledgements, updated after every tick that applied inputs.
    #[must_use]
    pub fn acks(&self) -> watch::Receiver<InputAck> {
        self.acks.clone()
    }

    /// Frames so far and per-stage latency over the last frames.
    #[must_use]
    pub fn stats(&self) -> SessionStats {
        let guard = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        SessionStats {
            frames: guard.frames,
            latency: guard.latency.table(),
            bitrate_kbps: guard.bitrate_kbps,
            intra_refresh: guard.intra_refresh,
        }
    }

    /// Whether the session thread is still running.
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Ends the session and waits for its thread (at most one frame).
    ///
    /// # Errors
    /// The error that stopped the session, if it failed before being ended.
    pub fn end(mut self) -> Result<SessionSummary, SessionError> {
        // A full queue still gets the end: the runner also stops when every sender is gone.
        let _ = self.control.try_send(Control::End);
        let thread = self.thread.take();
        let id = self.id.clone();
        drop(self);
        match thread.map(JoinHandle::join) {
            Some(Ok(Ok(summary))) => Ok(summary),
            Some(Ok(Err(source))) => Err(SessionError::Failed { id, source }),
            Some(Err(_)) | None => Err(SessionError::Panicked(id)),
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        // Dropping the sender closes the control channel, which ends the runner's loop; the
        // thread is not joined here so that dropping never blocks an async task.
        let _ = self.control.try_send(Control::End);
    }
}

struct Runner {
    id: String,
    fps: u32,
    pipeline: SessionPipeline,
    control: mpsc::Receiver<Control>,
    media: broadcast::Sender<MediaPacket>,
    acks: watch::Sender<InputAck>,
    stats: Arc<Mutex<Live>>,
    metrics: Arc<dyn SessionMetrics>,
    /// Inputs that arrived ahead of a missing predecessor, by sequence.
    pending: BTreeMap<u64, InputEvent>,
    /// Frames pushed to the encoder and not yet published.
    in_flight: Arc<AtomicUsize>,
}

/// The session's second thread: takes each frame's access unit as soon as the encoder hands it
/// out, and publishes it.
struct Publisher {
    units: AccessUnits,
    media: broadcast::Sender<MediaPacket>,
    acks: watch::Sender<InputAck>,
    stats: Arc<Mutex<Live>>,
    metrics: Arc<dyn SessionMetrics>,
    /// When each keyframe went out, for the schedule's keyframe policy.
    keyframes: std::sync::mpsc::Sender<Instant>,
    in_flight: Arc<AtomicUsize>,
}

impl Publisher {
    /// Publishes every frame the schedule pushes, in order, until the queue closes and is
    /// empty. An encoder failure ends it (dropping the queue stops the schedule).
    fn run(self, queue: &std::sync::mpsc::Receiver<InFlight>) -> Result<(), PipelineError> {
        while let Ok(frame) = queue.recv() {
            let applied = frame.applied_input();
            let produced = frame.finish(&self.units);
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            let p = produced?;
            if p.video.keyframe {
                let _ = self.keyframes.send(Instant::now());
                self.metrics.keyframe();
            }
            self.metrics.video_frame(p.video.data.len(), &p.timings);
            {
                let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
                stats.frames = p.stamp.frame.saturating_add(1);
                stats.bytes += p.video.data.len() as u64;
                stats.latency.record(&p.timings);
            }
            self.acks.send_if_modified(|ack| {
                let changed = ack.applied != applied;
                ack.applied = applied;
                ack.committed = applied;
                changed
            });
            // A send error only means every viewer left since the tick began.
            let _ = self.media.send(MediaPacket::Video(Arc::new(VideoPacket {
                frame: p.stamp.frame,
                pts: p.video.pts,
                keyframe: p.video.keyframe,
                data: p.video.data,
                stamp: p.stamp,
                encoded_at_us: unix_micros(),
            })));
        }
        Ok(())
    }
}

impl Runner {
    fn run(mut self) -> Result<SessionSummary, PipelineError> {
        let span = info_span!("session", id = %self.id);
        let _enter = span.enter();
        self.metrics.session_started();
        info!(fps = self.fps, "session started; waiting for a viewer");
        let result = self.run_loop();
        self.metrics.session_ended();
        match &result {
            Ok(s) => info!(frames = s.frames, tick = s.tick, "session ended"),
            Err(e) => warn!(error = %e, "session failed"),
        }
        result
    }

    fn run_loop(&mut self) -> Result<SessionSummary, PipelineError> {
        let (frames, queue) = std::sync::mpsc::sync_channel::<InFlight>(MAX_QUEUED - 1);
        let (keyframes_tx, keyframes_rx) = std::sync::mpsc::channel::<Instant>();
        let publisher = Publisher {
            units: self.pipeline.access_units(),
            media: self.media.clone(),
            acks: self.acks.clone(),
            stats: Arc::clone(&self.stats),
            metrics: Arc::clone(&self.metrics),
            keyframes: keyframes_tx,
            in_flight: Arc::clone(&self.in_flight),
        };
        let span = tracing::Span::current();
        let out = std::thread::Builder::new()
            .name(format!("session-{}-out", self.id))
            .spawn(move || {
                let _enter = span.enter();
                publisher.run(&queue)
            })
            .map_err(|e| {
                PipelineError::Unsupported(format!("cannot start a session thread: {e}"))
            })?;
        let result = self.schedule(&frames, &keyframes_rx);
        // Closing the queue lets the publisher finish the frames still in the encoder.
        drop(frames);
        let published = out
            .join()
            .unwrap_or_else(|_| Err(PipelineError::Unsupported("the publisher panicked".into())));
        match (result, published) {
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            (Ok(()), Ok(())) => Ok(self.summary()),
        }
    }

    /// The session's schedule: one frame per tick while someone watches, handed to the
    /// publisher once pushed. Returns when the session is ended, or the publisher stopped.
    fn schedule(
        &mut self,
        frames: &std::sync::mpsc::SyncSender<InFlight>,
        keyframes_sent: &std::sync::mpsc::Receiver<Instant>,
    ) -> Result<(), PipelineError> {
        let frame = Duration::from_secs(1) / self.fps;
        let mut deadline = Instant::now();
        let mut paused = true;
        let mut keyframes =
            KeyframePolicy::new(self.pipeline.video_encoder().supports_intra_refresh());
        loop {
            // Control first, so an input that arrived before this tick is applied in it.
            loop {
                match self.control.try_recv() {
                    Ok(Control::End) | Err(mpsc::error::TryRecvError::Disconnected) => {
                        return Ok(());
                    }
                    Ok(msg) => self.handle_control(msg, &mut keyframes),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                }
            }
            while let Ok(at) = keyframes_sent.try_recv() {
                keyframes.handle_keyframe_sent(at);
            }
            if self.media.receiver_count() == 0 {
                if !paused {
                    info!(tick = self.pipeline.game().tick(), "no viewer: game paused");
                    paused = true;
                }
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let now = Instant::now();
            if paused {
                info!(
                    tick = self.pipeline.game().tick(),
                    "viewer attached: game running"
                );
                paused = false;
                deadline = now;
                // A new viewer needs a decodable start.
                keyframes.handle_new_viewer();
            }
            if now < deadline {
                std::thread::sleep(deadline - now);
            } else if now - deadline > frame {
                // Fell behind by more than a frame: skip the schedule forward instead of
                // bursting frames out to catch up.
                self.metrics.frame_late();
                self.pipeline.skip(now - deadline);
                deadline = now;
            }
            let decision = keyframes.poll(Instant::now());
            self.apply_intra_refresh(decision.intra_refresh)?;
            let force = decision.force_idr;
            let pending = &mut self.pending;
            let metrics = &*self.metrics;
            let media = &self.media;
            let started = self.pipeline.start_frame(
                force,
                |game| {
                    apply_due(game, pending, metrics);
                    Ok(())
                },
                |audio| publish_audio(media, metrics, audio),
            )?;
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            // Blocks while MAX_QUEUED frames wait for the encoder; fails once the publisher
            // stopped (its error is what run_loop returns).
            if frames.send(started).is_err() {
                return Ok(());
            }
            deadline += frame;
        }
    }

    /// Switches the encoder's intra refresh to what the keyframe policy wants.
    fn apply_intra_refresh(&mut self, on: bool) -> Result<(), PipelineError> {
        if self.pipeline.video_encoder().stats().intra_refresh == on {
            return Ok(());
        }
        // The switch restarts the encoder: first let the frames in it come out.
        let since = Instant::now();
        while self.in_flight.load(Ordering::Acquire) > 0 && since.elapsed() < DRAIN_LIMIT {
            std::thread::sleep(Duration::from_millis(1));
        }
        let encoder = self.pipeline.video_encoder();
        if encoder.set_intra_refresh(on)? {
            if on {
                self.metrics.intra_refresh_started();
            }
            info!(on, "keyframe requests persist: intra refresh switched");
            self.stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .intra_refresh = on;
        }
        Ok(())
    }

    fn handle_control(&mut self, msg: Control, keyframes: &mut KeyframePolicy) {
        match msg {
            Control::Input { seq, event } => {
                let applied = self.pipeline.game().last_input_seq();
                if seq <= applied || self.pending.contains_key(&seq) {
                    self.metrics.input_dropped("duplicate");
                } else if seq > applied + MAX_INPUTS_AHEAD {
                    debug!(seq, applied, "input too far ahead; dropped");
                    self.metrics.input_dropped("too_far_ahead");
                } else {
                    self.pending.insert(seq, event);
                }
            }
            Control::RequestKeyframe => {
                let before = keyframes.merged() + keyframes.absorbed();
                keyframes.handle_request(Instant::now());
                if keyframes.merged() + keyframes.absorbed() > before {
                    self.metrics.keyframe_limited();
                }
            }
            Control::SetBitrate { kbps } => {
                let kbps = kbps.clamp(BITRATE_RANGE_KBPS.0, BITRATE_RANGE_KBPS.1);
                let encoder = self.pipeline.video_encoder();
                encoder.set_bitrate(kbps);
                let applied = encoder.stats().bitrate_kbps;
                self.metrics.bitrate_changed(applied);
                self.stats
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .bitrate_kbps = applied;
            }
            Control::End => {}
        }
    }

    fn summary(&self) -> SessionSummary {
        let game = self.pipeline.game();
        let stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        SessionSummary {
            frames: self.pipeline.frames(),
            bytes: stats.bytes,
            tick: game.tick(),
            state_hash: game.state_hash(),
            last_input_seq: game.last_input_seq(),
            latency: stats.latency.table(),
        }
    }
}

/// Sends a tick's Opus packets to the viewers (a send error only means none is left).
fn publish_audio(
    media: &broadcast::Sender<MediaPacket>,
    metrics: &dyn SessionMetrics,
    audio: Vec<crate::encode::EncodedAudio>,
) {
    for a in audio {
        metrics.audio_packet();
        let _ = media.send(MediaPacket::Audio(Arc::new(AudioPacket {
            pts: a.pts,
            duration: a.duration,
            data: a.data,
        })));
    }
}

/// Applies every pending input that continues the applied sequence, in order.
fn apply_due(
    game: &mut Game,
    pending: &mut BTreeMap<u64, InputEvent>,
    metrics: &dyn SessionMetrics,
) {
    while let Some(entry) = pending.first_entry() {
        let next = game.last_input_seq() + 1;
        if *entry.key() != next {
            // Sequences below `next` cannot be here (dropped on arrival); above it wait.
            break;
        }
        let event = entry.remove();
        match game.apply(next, &event) {
            Ok(_) => {
                metrics.input_applied();
            }
            Err(e) => {
                // The game refused an input the runtime sequenced: count it and move on so
                // one bad event cannot stall the session.
                warn!(seq = next, error = %e, "input refused by the game");
                metrics.input_dropped("refused");
                break;
            }
        }
    }
}
