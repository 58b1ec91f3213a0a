//! A live session: the application's side ([`Session`]) and the tasks and threads it starts,
//! which drive the sans-IO machines (`reorder`, `input`, `health`) with the connection.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgeplay_protocol::input::InputEvent;
use edgeplay_protocol::media::{ControlMessage, Datagram, close_code};
use quinn::VarInt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info_span};

use crate::audio::{self, AudioChunk};
use crate::control::{ControlReader, read_control, write_control};
use crate::decode::{self, PixelFormat};
use crate::error::ClientError;
use crate::frame::Frame;
use crate::health::{self, SessionEvent};
use crate::reorder::Arrived;
use crate::shared::Shared;
use crate::stats::Stats;
use crate::video::{decode_loop, receive_media};

/// Decoded frames buffered for the application before new ones are dropped.
pub const FRAME_BUFFER: usize = 64;
/// Decoded audio chunks buffered for the application before new ones are dropped.
pub const AUDIO_BUFFER: usize = 256;
/// Events buffered for the application before new ones are dropped.
pub const EVENT_BUFFER: usize = 64;
/// Access units queued for the decoder thread; past that it is far behind, and the stream
/// restarts at a keyframe.
const DECODER_QUEUE: usize = 256;

/// A live session with an edge, from [`Client::connect`](crate::Client::connect). Dropping it
/// aborts the session; [`Session::close`] ends it cleanly.
///
/// - [`Session::next_frame`] (or the [`futures_core::Stream`] from [`Session::frames`]) yields
///   decoded pictures (NV12, or RGBA: [`ClientOptions::format`](crate::ClientOptions::format))
///   in frame order, from a hardware H.264 decoder when one works, else `avdec_h264`
///   ([`ClientOptions::decoder`](crate::ClientOptions::decoder), [`Stats::decoder`]); frames
///   lost to a reset or a gap are skipped up to the next keyframe, which the SDK asks for on
///   its own;
/// - [`Session::send_input`] numbers an input and sends it in a datagram together with every
///   input the edge has not acknowledged yet, until the edge's committed number covers it;
/// - [`Session::next_audio`] yields the game's Opus audio decoded to 48 kHz PCM, stamped on
///   the frames' clock so the application plays it in sync with the pictures;
/// - [`Session::next_event`] yields [`SessionEvent`]s: connected, degraded (stalled, skipping,
///   high RTT), recovered, closed (reconnecting is reserved for failover);
/// - [`Session::next_media`] serves frames, audio and events from one loop;
/// - [`Session::stats`] (decoded frames per second, received kbit/s, skipped-frame ratio and
///   decode time over the last second ([`RATE_WINDOW`](crate::RATE_WINDOW)), RTT,
///   glass-to-glass and input-to-photon percentiles read from the frame stamps, cumulative
///   counters) and [`Session::close`].
///
/// While running, the SDK reports every frame's receive time to the edge on the control
/// stream; the edge's rate controller sets the encoder's bitrate from them.
///
/// ```no_run
/// # async fn demo(mut session: edgeplay_client::Session) {
/// while let Some(frame) = session.next_frame().await {
///     if frame.header.frame >= 300 { break; }
/// }
/// session.close().await;
/// # }
/// ```
#[derive(Debug)]
pub struct Session {
    id: String,
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    shared: Arc<Shared>,
    control: mpsc::UnboundedSender<ControlMessage>,
    frames: mpsc::Receiver<Frame>,
    audio: mpsc::Receiver<AudioChunk>,
    events: mpsc::Receiver<SessionEvent>,
    tasks: JoinSet<()>,
    decoder: Option<std::thread::JoinHandle<()>>,
    audio_decoder: Option<std::thread::JoinHandle<()>>,
    /// The H.264 decoder element.
    decoder_name: &'static str,
}

impl Session {
    pub(crate) fn start(
        endpoint: quinn::Endpoint,
        conn: quinn::Connection,
        ctl_send: quinn::SendStream,
        reader: ControlReader,
        id: String,
        (decoder_name, format): (&'static str, PixelFormat),
    ) -> Result<Self, ClientError> {
        let span = info_span!("client", session = %id);
        let shared = Arc::new(Shared::default());
        let (frames_tx, frames) = mpsc::channel(FRAME_BUFFER);
        let (au_tx, au_rx) = std::sync::mpsc::sync_channel::<Arrived>(DECODER_QUEUE);
        let (control, control_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::channel(EVENT_BUFFER);
        let _ = events_tx.try_send(SessionEvent::Connected {
            session_id: id.clone(),
        });
        let (audio_tx, audio) = mpsc::channel(AUDIO_BUFFER);
        let (opus_tx, opus_rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(AUDIO_BUFFER);
        let audio_decoder = {
            let shared = Arc::clone(&shared);
            let span = span.clone();
            let mut decoder = audio::OpusDecoder::new().map_err(ClientError::Decoder)?;
            std::thread::Builder::new()
                .name(format!("audio-{id}"))
                .spawn(move || {
                    let _enter = span.enter();
                    audio::audio_loop(&mut decoder, &opus_rx, &audio_tx, &shared);
                })
                .map_err(|e| ClientError::Decoder(e.to_string()))?
        };
        let decoder = {
            let shared = Arc::clone(&shared);
            let span = span.clone();
            let mut decoder = decode::Decoder::with_element(decoder_name, format)
                .map_err(ClientError::Decoder)?;
            std::thread::Builder::new()
                .name(format!("decode-{id}"))
                .spawn(move || {
                    let _enter = span.enter();
                    decode_loop(&mut decoder, &au_rx, &frames_tx, &shared);
                })
                .map_err(|e| ClientError::Decoder(e.to_string()))?
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(write_control(ctl_send, control_rx, conn.clone()).instrument(span.clone()));
        tasks.spawn(
            read_control(reader, Arc::clone(&shared), conn.clone()).instrument(span.clone()),
        );
        tasks.spawn(
            receive_media(conn.clone(), au_tx, control.clone(), Arc::clone(&shared))
                .instrument(span.clone()),
        );
        tasks.spawn(
            audio::read_datagrams(conn.clone(), Arc::clone(&shared), opus_tx)
                .instrument(span.clone()),
        );
        tasks.spawn(
            watch_health(conn.clone(), Arc::clone(&shared), events_tx).instrument(span.clone()),
        );
        tasks.spawn(
            resend_inputs(conn.clone(), control.clone(), Arc::clone(&shared))
                .instrument(span.clone()),
        );
        Ok(Self {
            id,
            endpoint,
            conn,
            shared,
            control,
            frames,
            audio,
            events,
            tasks,
            decoder: Some(decoder),
            audio_decoder: Some(audio_decoder),
            decoder_name,
        })
    }

    /// The session id the edge gave.
    ///
    /// ```no_run
    /// # fn demo(session: &edgeplay_client::Session) {
    /// tracing::info!(session = session.id(), "playing");
    /// # }
    /// ```
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next decoded frame, in frame order; `None` once the session ended.
    ///
    /// ```no_run
    /// # async fn demo(mut session: edgeplay_client::Session) {
    /// while let Some(frame) = session.next_frame().await {
    ///     println!("{} {}x{}", frame.header.frame, frame.width, frame.height);
    /// }
    /// # }
    /// ```
    pub async fn next_frame(&mut self) -> Option<Frame> {
        self.frames.recv().await
    }

    /// The next decoded audio chunk, in order; `None` once the session ended. Chunks carry
    /// presentation times on the clock of the frames' [`Header::pts_us`](crate::Header::pts_us):
    /// play a chunk when the frame with the same time is shown. A chunk whose datagram was lost
    /// is simply missing.
    ///
    /// ```no_run
    /// # async fn demo(mut session: edgeplay_client::Session) {
    /// while let Some(chunk) = session.next_audio().await {
    ///     println!("{} samples at {:?}", chunk.samples.len(), chunk.pts);
    /// }
    /// # }
    /// ```
    pub async fn next_audio(&mut self) -> Option<AudioChunk> {
        self.audio.recv().await
    }

    /// A decoded audio chunk if one is waiting, without waiting.
    ///
    /// ```no_run
    /// # fn demo(session: &mut edgeplay_client::Session) {
    /// while let Some(chunk) = session.try_next_audio() {
    ///     println!("{:?}", chunk.pts);
    /// }
    /// # }
    /// ```
    pub fn try_next_audio(&mut self) -> Option<AudioChunk> {
        self.audio.try_recv().ok()
    }

    /// The next [`SessionEvent`]: [`SessionEvent::Connected`] first, then degradations and
    /// recoveries, [`SessionEvent::Closed`] last; `None` after that.
    ///
    /// ```no_run
    /// # async fn demo(mut session: edgeplay_client::Session) {
    /// if let Some(event) = session.next_event().await {
    ///     println!("{event:?}");
    /// }
    /// # }
    /// ```
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        self.events.recv().await
    }

    /// A [`SessionEvent`] if one is waiting, without waiting.
    ///
    /// ```no_run
    /// # fn demo(session: &mut edgeplay_client::Session) {
    /// while let Some(event) = session.try_next_event() {
    ///     println!("{event:?}");
    /// }
    /// # }
    /// ```
    pub fn try_next_event(&mut self) -> Option<SessionEvent> {
        self.events.try_recv().ok()
    }

    /// Whatever comes next of a frame, an audio chunk or an event (events first, then audio,
    /// then frames when several are ready): one loop serves a player; `None` once the session
    /// ended and everything was taken.
    ///
    /// ```no_run
    /// # async fn demo(mut session: edgeplay_client::Session) {
    /// use edgeplay_client::{Media, SessionEvent};
    /// while let Some(m) = session.next_media().await {
    ///     match m {
    ///         Media::Frame(f) => println!("show frame {} at {} µs", f.header.frame, f.header.pts_us),
    ///         Media::Audio(a) => println!("queue {} samples at {:?}", a.samples.len(), a.pts),
    ///         Media::Event(SessionEvent::Closed { reason }) => { println!("{reason}"); break; }
    ///         Media::Event(e) => println!("{e:?}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn next_media(&mut self) -> Option<Media> {
        let (mut frames, mut audio, mut events) = (true, true, true);
        while frames || audio || events {
            tokio::select! {
                biased;
                e = self.events.recv(), if events => match e {
                    Some(e) => return Some(Media::Event(e)),
                    None => events = false,
                },
                a = self.audio.recv(), if audio => match a {
                    Some(a) => return Some(Media::Audio(a)),
                    None => audio = false,
                },
                f = self.frames.recv(), if frames => match f {
                    Some(f) => return Some(Media::Frame(f)),
                    None => frames = false,
                },
            }
        }
        None
    }

    /// The decoded frames as a [`futures_core::Stream`].
    ///
    /// ```no_run
    /// # async fn demo(mut session: edgeplay_client::Session) {
    /// use futures_core::Stream;
    /// let frames = session.frames();
    /// let (lower, _) = frames.size_hint();
    /// println!("at least {lower} frames ready");
    /// # }
    /// ```
    pub fn frames(&mut self) -> FrameStream<'_> {
        FrameStream {
            rx: &mut self.frames,
        }
    }

    /// Numbers `event` (from 1) and sends it now, in a datagram with every input the edge has
    /// not applied yet; what does not fit goes on the control stream. Returns its sequence.
    ///
    /// # Errors
    /// [`ClientError::Closed`] after the session ended.
    ///
    /// ```no_run
    /// # fn demo(session: &edgeplay_client::Session) -> Result<(), edgeplay_client::ClientError> {
    /// use edgeplay_protocol::input::{InputEvent, Key};
    /// let seq = session.send_input(InputEvent::Key { code: Key::Space, down: true })?;
    /// println!("input {seq} sent; the edge acknowledged up to {}", session.stats().input_applied);
    /// # Ok(()) }
    /// ```
    pub fn send_input(&self, event: InputEvent) -> Result<u64, ClientError> {
        let now = Instant::now();
        let seq = self.shared.inputs().push(now, event);
        self.shared.latency().input_sent(seq, now);
        let sent = transmit_inputs(&self.conn, &self.control, &self.shared, now);
        // The resend timer moved: the resend task looks again.
        self.shared.inputs_changed.notify_one();
        sent?;
        Ok(seq)
    }

    /// Asks the edge for a keyframe (the SDK already does on any gap).
    ///
    /// # Errors
    /// [`ClientError::Closed`] after the session ended.
    ///
    /// ```no_run
    /// # fn demo(session: &edgeplay_client::Session) -> Result<(), edgeplay_client::ClientError> {
    /// session.request_keyframe()?; // e.g. after the application dropped pictures itself
    /// # Ok(()) }
    /// ```
    pub fn request_keyframe(&self) -> Result<(), ClientError> {
        self.shared
            .counters
            .keyframe_requests
            .fetch_add(1, Ordering::Relaxed);
        self.control
            .send(ControlMessage::RequestKeyframe { missing_from: 0 })
            .map_err(|_| ClientError::Closed)
    }

    /// The session's statistics now: the `_1s` rates over the second before this call.
    ///
    /// ```no_run
    /// # fn demo(session: &edgeplay_client::Session) {
    /// let stats = session.stats();
    /// println!("{:.1} fps, glass-to-glass p95 {:?}", stats.decoded_fps_1s, stats.glass_to_glass_p95);
    /// # }
    /// ```
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.shared.stats(
            Instant::now(),
            self.conn.rtt(),
            &self.conn.stats().path,
            self.decoder_name,
        )
    }

    /// Ends the session: tells the edge, stops the SDK's tasks and decoder, and waits (at most
    /// a second) for the edge to acknowledge the close.
    ///
    /// ```no_run
    /// # async fn demo(session: edgeplay_client::Session) {
    /// session.close().await; // the edge ends the game session at once
    /// # }
    /// ```
    pub async fn close(mut self) {
        self.conn
            .close(VarInt::from_u32(close_code::DONE), b"client closed");
        self.tasks.shutdown().await;
        self.frames.close();
        self.audio.close();
        for thread in [self.decoder.take(), self.audio_decoder.take()]
            .into_iter()
            .flatten()
        {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// One item of [`Session::next_media`].
///
/// ```no_run
/// # async fn demo(mut session: edgeplay_client::Session) {
/// if let Some(edgeplay_client::Media::Frame(f)) = session.next_media().await {
///     println!("frame {}", f.header.frame);
/// }
/// # }
/// ```
#[derive(Debug)]
pub enum Media {
    /// A decoded picture.
    Frame(Frame),
    /// Decoded audio, on the frames' clock.
    Audio(AudioChunk),
    /// Something happened to the session.
    Event(SessionEvent),
}

/// The decoded frames of a [`Session`] as a [`futures_core::Stream`].
///
/// ```no_run
/// # async fn demo(mut session: edgeplay_client::Session) {
/// let stream: edgeplay_client::FrameStream<'_> = session.frames();
/// # drop(stream);
/// # }
/// ```
#[derive(Debug)]
pub struct FrameStream<'a> {
    rx: &'a mut mpsc::Receiver<Frame>,
}

impl futures_core::Stream for FrameStream<'_> {
    type Item = Frame;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        self.rx.poll_recv(cx)
    }
}

/// Sends what the input machine has due at `now`: the unapplied inputs as one datagram, the
/// overflow (once) on the control stream.
fn transmit_inputs(
    conn: &quinn::Connection,
    control: &mpsc::UnboundedSender<ControlMessage>,
    shared: &Shared,
    now: Instant,
) -> Result<(), ClientError> {
    let max = conn.max_datagram_size().unwrap_or(0);
    let Some(t) = shared.inputs().poll_transmit(now, max) else {
        return Ok(());
    };
    if let Some(run) = t.datagram {
        // A datagram that cannot go now is simply sent again by the resend timer.
        let _ = conn.send_datagram(Bytes::from(Datagram::Input(run).encode()));
    }
    if let Some(run) = t.reliable {
        control
            .send(ControlMessage::Inputs(run))
            .map_err(|_| ClientError::Closed)?;
    }
    Ok(())
}

/// Sends unapplied inputs again when the input machine's timer says so, until the session
/// ends.
async fn resend_inputs(
    conn: quinn::Connection,
    control: mpsc::UnboundedSender<ControlMessage>,
    shared: Arc<Shared>,
) {
    loop {
        let wake = shared.inputs().poll_timeout();
        tokio::select! {
            () = shared.inputs_changed.notified() => continue,
            () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now).into()), if wake.is_some() => {}
        }
        if transmit_inputs(&conn, &control, &shared, Instant::now()).is_err() {
            break;
        }
    }
}

/// Samples the session's health every [`health::HEALTH_TICK`] and raises events; raises
/// [`SessionEvent::Closed`] when the connection ends.
async fn watch_health(
    conn: quinn::Connection,
    shared: Arc<Shared>,
    events: mpsc::Sender<SessionEvent>,
) {
    let mut monitor = health::HealthMonitor::new(Instant::now());
    let mut tick = tokio::time::interval(health::HEALTH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            err = conn.closed() => {
                let reason = match err {
                    quinn::ConnectionError::ApplicationClosed(c) => format!(
                        "{} ({})",
                        close_code::describe(c.error_code.into_inner()),
                        String::from_utf8_lossy(&c.reason)
                    ),
                    quinn::ConnectionError::LocallyClosed => shared
                        .goodbye()
                        .unwrap_or_else(|| "closed by this client".to_owned()),
                    other => other.to_string(),
                };
                let _ = events.try_send(SessionEvent::Closed { reason });
                return;
            }
            _ = tick.tick() => {
                let c = &shared.counters;
                let sample = health::Sample {
                    now: Instant::now(),
                    decoded: c.decoded.load(Ordering::Relaxed),
                    skipped: c.skipped.load(Ordering::Relaxed),
                    last_frame: shared.latency().last_frame,
                    rtt: conn.rtt(),
                };
                for e in monitor.observe(sample) {
                    debug!(?e, "session event");
                    let _ = events.try_send(e);
                }
            }
        }
    }
}
