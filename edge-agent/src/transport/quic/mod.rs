//! The QUIC transport (ALPN `edgeplay/1`) for the native SDK and checkers, on quinn with BBR.
//!
//! Protocol (see [`edgeplay_protocol::media`]): the client opens the control stream and sends a
//! hello with its join token first; a missing or refused token closes the connection with
//! [`close_code::BAD_TOKEN`], garbage with [`close_code::PROTOCOL_VIOLATION`], and a join that
//! finds every session slot of the edge taken ([`crate::admission`], shared with WHEP) with
//! [`close_code::EDGE_FULL`] before any session starts. Then every video
//! access unit goes on its own unidirectional stream (frame header, then the access unit), older
//! frames at higher priority, so a lost packet stalls one frame and not the ones behind it. A
//! frame's stream is reset only once a later IDR is queued, since P-frames reference their
//! elders. Opus audio goes in datagrams. Inputs arrive in datagrams (each repeating every
//! unacknowledged input) and on the control stream; they are handed to the session strictly in
//! sequence, once each, and acknowledged on the control stream. The edge ends a live session
//! (shutting down, or the session over) with a goodbye on the control stream and closes the
//! connection once the client has, or after [`GOODBYE_WAIT`].
//!
//! Rate: BBR paces the packets; the encoder's target comes from a [`FrameRateController`] per
//! session, fed with each frame as it is handed to QUIC, the client's receive reports from the
//! control stream, and quinn's path statistics every 50 ms; its target goes to the session as
//! [`Control::SetBitrate`] and to `/metrics` as `edgeplay_edge_quic_target_kbps{session}`.
//! Keyframe requests go to the session, whose [`edgeplay_media::keyframe`] policy rate-limits
//! them and switches to intra refresh when they persist.
//!
//! Driving it, as `edge-agent run --dev` does: bind, print the address and the certificate
//! fingerprint clients pin, then serve until `shutdown` resolves.
//!
//! ```no_run
//! # async fn demo(gpu: edgeplay_media::gpu::Gpu, pipeline: edgeplay_media::pipeline::PipelineConfig)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use edgeplay_edge::transport::quic::{QuicConfig, QuicEdge};
//! use edgeplay_edge::transport::token::DevToken;
//!
//! let token = DevToken::random()?;
//! println!("token {}", token.as_str());
//! let cfg = QuicConfig::new("127.0.0.1:4433".parse().unwrap(), pipeline);
//! let edge = QuicEdge::bind(cfg, Arc::new(token), gpu, edgeplay_edge::metrics::Metrics::new())?;
//! println!("quic {} fingerprint {}", edge.local_addr()?, edge.fingerprint_hex());
//! edge.serve(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgeplay_media::gpu::Gpu;
use edgeplay_media::pipeline::PipelineConfig;
use edgeplay_media::session::{
    Control, MAX_INPUTS_AHEAD, MediaPacket, Session, SessionConfig, SessionError, SessionHandle,
    VideoPacket,
};
use edgeplay_protocol::media::{
    self, AudioHeader, Codec, ControlMessage, Datagram, FrameHeader, RESET_SUPERSEDED, close_code,
};
use quinn::VarInt;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, trace, warn};

use crate::admission::{Admission, Slot};
use crate::metrics::Metrics;
use crate::transport::token::{DevToken, TokenCheck};
use edgeplay_protocol::lifecycle::EndReason;
use edgeplay_rate::frame::{FrameRateController, PathSample, RateConfig};

/// How long a client has to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames whose streams may be in flight at once; beyond that the edge skips to a keyframe.
pub const MAX_FRAMES_IN_FLIGHT: usize = 90;

/// What went wrong serving QUIC.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// The self-signed certificate or the TLS configuration could not be made.
    #[error("cannot set up TLS for QUIC: {0}")]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error("cannot bind QUIC on {addr}: {source}; pick a free port with --quic-listen")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Settings of the QUIC endpoint.
#[derive(Clone, Debug)]
pub struct QuicConfig {
    /// UDP listen address.
    pub listen: SocketAddr,
    /// Media path of each session.
    pub pipeline: PipelineConfig,
    /// Game seed of each session.
    pub seed: u64,
    /// Most sessions at once when the endpoint admits on its own ([`QuicEdge::bind`]); more
    /// are closed with [`close_code::EDGE_FULL`]. An endpoint given the edge's shared admission
    /// ([`QuicEdge::bind_shared`]) counts against that one instead.
    pub max_sessions: usize,
    /// The application rate controller of each session ([`rate`]); starts at the
    /// pipeline's bitrate.
    pub rate: RateConfig,
}

impl QuicConfig {
    /// Sessions with `pipeline`, seed 1, at most 4 at once.
    #[must_use]
    pub fn new(listen: SocketAddr, pipeline: PipelineConfig) -> Self {
        Self {
            listen,
            rate: RateConfig::new(pipeline.bitrate_kbps),
            pipeline,
            seed: 1,
            max_sessions: 4,
        }
    }
}

#[derive(Debug)]
struct Ctx {
    cfg: QuicConfig,
    tokens: Arc<dyn TokenCheck>,
    gpu: Gpu,
    metrics: Arc<Metrics>,
    admission: Admission,
}

/// A bound QUIC endpoint, ready to [`serve`](Self::serve).
#[derive(Debug)]
pub struct QuicEdge {
    endpoint: quinn::Endpoint,
    fingerprint: [u8; 32],
    ctx: Arc<Ctx>,
}

impl QuicEdge {
    /// Makes a self-signed certificate and binds the endpoint (inside a tokio runtime), with
    /// an admission of its own of `cfg.max_sessions` slots: for an endpoint that is the edge's
    /// only transport.
    ///
    /// # Errors
    /// [`QuicError::Tls`], [`QuicError::Bind`].
    pub fn bind(
        cfg: QuicConfig,
        tokens: Arc<dyn TokenCheck>,
        gpu: Gpu,
        metrics: Arc<Metrics>,
    ) -> Result<Self, QuicError> {
        let admission = Admission::new(cfg.max_sessions, &metrics);
        Self::bind_shared(cfg, tokens, gpu, metrics, admission)
    }

    /// [`Self::bind`] with the edge's admission, shared with its other transports: QUIC
    /// sessions take their slots there (`cfg.max_sessions` is not used).
    ///
    /// # Errors
    /// [`QuicError::Tls`], [`QuicError::Bind`].
    pub fn bind_shared(
        cfg: QuicConfig,
        tokens: Arc<dyn TokenCheck>,
        gpu: Gpu,
        metrics: Arc<Metrics>,
        admission: Admission,
    ) -> Result<Self, QuicError> {
        let edgeplay_quic::SelfSigned {
            server: server_cfg,
            fingerprint,
        } = edgeplay_quic::self_signed_server("edgeplay-edge", media::ALPN)
            .map_err(|e| QuicError::Tls(e.to_string()))?;
        let endpoint =
            quinn::Endpoint::server(server_cfg, cfg.listen).map_err(|source| QuicError::Bind {
                addr: cfg.listen,
                source,
            })?;
        Ok(Self {
            endpoint,
            fingerprint,
            ctx: Arc::new(Ctx {
                cfg,
                tokens,
                gpu,
                metrics,
                admission,
            }),
        })
    }

    /// The bound UDP address.
    ///
    /// # Errors
    /// The socket has no address (it was closed).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// SHA-256 of the certificate's DER: what clients pin.
    #[must_use]
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// [`Self::fingerprint`] as 64 hex digits.
    #[must_use]
    pub fn fingerprint_hex(&self) -> String {
        self.fingerprint
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Accepts connections until `shutdown` resolves, then closes every connection (ending
    /// their sessions) and waits for them.
    ///
    /// # Errors
    /// None today; the signature leaves room for accept-loop failures.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), QuicError> {
        let mut conns = JoinSet::new();
        let (stopping_tx, stopping) = watch::channel(false);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let ctx = Arc::clone(&self.ctx);
                    let stopping = stopping.clone();
                    conns.spawn(async move {
                        match incoming.await {
                            Ok(conn) => serve_connection(ctx, conn, stopping).await,
                            Err(e) => debug!(error = %e, "QUIC handshake failed"),
                        }
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        info!("QUIC endpoint shutting down");
        // Live sessions say goodbye first (within GOODBYE_WAIT); whatever is left is closed.
        stopping_tx.send_replace(true);
        let drain = async { while conns.join_next().await.is_some() {} };
        let drained = tokio::time::timeout(Duration::from_secs(5), drain).await;
        self.endpoint.close(
            VarInt::from_u32(close_code::SHUTDOWN),
            b"edge shutting down",
        );
        if drained.is_err() {
            conns.shutdown().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        Ok(())
    }
}

fn close(conn: &quinn::Connection, code: u32, reason: &str) {
    conn.close(VarInt::from_u32(code), reason.as_bytes());
}

/// Resolves once the endpoint is stopping (or gone).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// How long the edge waits for the client to close after its [`ControlMessage::Goodbye`].
pub const GOODBYE_WAIT: Duration = Duration::from_secs(2);

/// Ends a live session from the edge's side: a goodbye on the control stream (which outranks
/// every frame stream and is retransmitted like any stream data), then the connection's close
/// once the client closed it or [`GOODBYE_WAIT`] passed. A CONNECTION_CLOSE alone can be held
/// back for good by a full congestion window (the closing side no longer reads the peer's
/// acknowledgements), leaving the player to time out.
async fn goodbye(
    conn: &quinn::Connection,
    ctl_send: &mut quinn::SendStream,
    code: u32,
    reason: &str,
) {
    let mut out = Vec::new();
    let msg = ControlMessage::Goodbye {
        code,
        reason: reason.to_owned(),
    };
    if msg.encode(&mut out).is_ok() {
        let said = async {
            if ctl_send.write_all(&out).await.is_ok() {
                let _ = ctl_send.finish();
                conn.closed().await;
            }
        };
        if tokio::time::timeout(GOODBYE_WAIT, said).await.is_err() {
            debug!("the client did not close after the goodbye in time");
        }
    }
    close(conn, code, reason);
}

/// Reads framed control messages from a stream.
#[derive(Debug)]
struct ControlReader {
    recv: quinn::RecvStream,
    buf: Vec<u8>,
}

/// What the control stream gave.
enum Read {
    Msg(ControlMessage),
    Closed,
    Garbage(String),
}

impl ControlReader {
    /// The next message. Cancel-safe: bytes read stay in `buf`.
    async fn next(&mut self) -> Read {
        loop {
            match ControlMessage::decode_frame(&self.buf) {
                Ok(Some((msg, used))) => {
                    self.buf.drain(..used);
                    return Read::Msg(msg);
                }
                Ok(None) => {}
                Err(e) => return Read::Garbage(e.to_string()),
            }
            let mut chunk = [0u8; 4096];
            match self.recv.read(&mut chunk).await {
                Ok(Some(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(None) | Err(_) => return Read::Closed,
            }
        }
    }
}

async fn serve_connection(ctx: Arc<Ctx>, conn: quinn::Connection, stopping: watch::Receiver<bool>) {
    let remote = conn.remote_address();
    let Ok(Ok((mut ctl_send, recv))) = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi()).await
    else {
        close(
            &conn,
            close_code::HELLO_TIMEOUT,
            "no control stream in time",
        );
        return;
    };
    let mut reader = ControlReader {
        recv,
        buf: Vec::new(),
    };
    let hello = tokio::time::timeout(HELLO_TIMEOUT, reader.next()).await;
    let token = match hello {
        Ok(Read::Msg(ControlMessage::Hello { token })) => token,
        Ok(Read::Msg(other)) => {
            warn!(%remote, "first control message is not a hello: {other:?}");
            close(
                &conn,
                close_code::PROTOCOL_VIOLATION,
                "send the hello first",
            );
            return;
        }
        Ok(Read::Garbage(e)) => {
            warn!(%remote, "garbage on the control stream: {e}");
            close(&conn, close_code::PROTOCOL_VIOLATION, &e);
            return;
        }
        Ok(Read::Closed) | Err(_) => {
            close(&conn, close_code::HELLO_TIMEOUT, "no hello in time");
            return;
        }
    };
    // The token is verified, then a slot taken, then the token used up: a player refused
    // because the edge is full keeps a token it may retry with.
    let refused = |e: &dyn std::fmt::Display| {
        warn!(%remote, "{e}");
        close(&conn, close_code::BAD_TOKEN, &e.to_string());
    };
    // Held until the session has ended, below.
    let mut slot = match ctx
        .tokens
        .verify(&token)
        .map(|()| ctx.admission.try_admit("quic"))
    {
        Ok(Ok(slot)) => slot,
        Ok(Err(full)) => {
            debug!(%remote, "{full}");
            close(&conn, close_code::EDGE_FULL, &full.to_string());
            return;
        }
        Err(e) => return refused(&e),
    };
    match ctx.tokens.check(&token) {
        Ok(Some(session)) => slot.bind(session),
        Ok(None) => {}
        Err(e) => return refused(&e),
    }
    let id = match DevToken::random() {
        Ok(t) => t.as_str()[..12].to_owned(),
        Err(_) => format!("q{}", conn.stable_id()),
    };
    let span = info_span!("quic", session = %id, %remote);
    let session = {
        let (gpu, metrics) = (ctx.gpu.clone(), Arc::clone(&ctx.metrics));
        let cfg = SessionConfig::new(id.clone(), ctx.cfg.pipeline.clone(), ctx.cfg.seed);
        tokio::task::spawn_blocking(move || Session::start(&gpu, cfg, metrics)).await
    };
    let handle = match session {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            warn!(parent: &span, "session failed to start: {e}");
            close(
                &conn,
                close_code::UNAVAILABLE,
                "the session could not start",
            );
            return;
        }
        Err(_) => {
            close(
                &conn,
                close_code::UNAVAILABLE,
                "the session could not start",
            );
            return;
        }
    };
    // How the session ended, for the broker's summary.
    let mut why = EndReason::PlayerLeft;
    let welcome = ControlMessage::Welcome {
        session_id: id.clone(),
        width: u16::try_from(ctx.cfg.pipeline.width).unwrap_or(u16::MAX),
        height: u16::try_from(ctx.cfg.pipeline.height).unwrap_or(u16::MAX),
        fps: u16::try_from(ctx.cfg.pipeline.fps).unwrap_or(u16::MAX),
    };
    let mut out = Vec::new();
    if welcome.encode(&mut out).is_ok() && ctl_send.write_all(&out).await.is_ok() {
        info!(parent: &span, "QUIC session started");
        let end = run_session(
            &conn,
            &handle,
            &mut reader,
            &mut ctl_send,
            &ctx,
            stopping,
            &slot,
        )
        .instrument(span.clone())
        .await;
        why = match end {
            Some((close_code::SHUTDOWN, _)) => EndReason::EdgeStopped,
            Some((close_code::UNAVAILABLE, _)) => EndReason::Failed,
            Some((close_code::IDLE, _)) => EndReason::Idle,
            _ => EndReason::PlayerLeft,
        };
        if let Some((code, reason)) = end {
            goodbye(&conn, &mut ctl_send, code, reason)
                .instrument(span.clone())
                .await;
        }
    }
    let _ = ctl_send.finish();
    let summary = tokio::task::spawn_blocking(move || handle.end()).await;
    match &summary {
        Ok(Ok(s)) => slot.finish(why, u64::from(s.frames), s.bytes),
        _ => slot.finish(EndReason::Failed, 0, 0),
    }
    match summary {
        Ok(Ok(s)) => info!(parent: &span, frames = s.frames, last_input = s.last_input_seq,
                           state_hash = format_args!("{:016x}", s.state_hash), "QUIC session ended"),
        Ok(Err(e)) => warn!(parent: &span, "QUIC session ended with an error: {e}"),
        Err(e) => warn!(parent: &span, "QUIC session end panicked: {e}"),
    }
}

/// What the goodbye says when the broker ends a session.
fn ended_by_broker(reason: EndReason) -> &'static str {
    match reason {
        EndReason::MaxDuration => "the broker ended the session: it reached its maximum duration",
        EndReason::EdgeLost => "the broker ended the session: it lost this edge for a while",
        EndReason::Idle | EndReason::NotJoined | EndReason::NotPlaced => {
            "the broker ended the session: it was idle too long"
        }
        _ => "the broker ended the session",
    }
}

/// Hands inputs to the session strictly in sequence, each once.
#[derive(Debug, Default)]
struct InputSequencer {
    next: u64,
    waiting: BTreeMap<u64, edgeplay_protocol::input::InputEvent>,
}

impl InputSequencer {
    fn offer(&mut self, run: &media::InputRun, handle: &SessionHandle) -> Result<(), SessionError> {
        for (seq, event) in run.iter() {
            if seq >= self.next && seq < self.next + MAX_INPUTS_AHEAD {
                self.waiting.entry(seq).or_insert(event);
            }
        }
        while let Some(event) = self.waiting.remove(&self.next) {
            handle.send(Control::Input {
                seq: self.next,
                event,
            })?;
            self.next += 1;
        }
        Ok(())
    }
}

/// How often the rate controller samples quinn's path and decides.
const RATE_TICK: Duration = Duration::from_millis(50);

/// Serves a live session until it ends; `Some((close code, reason))` when the edge ends it
/// and owes the client a [`goodbye`] (the client left, or the connection broke, otherwise).
async fn run_session(
    conn: &quinn::Connection,
    handle: &SessionHandle,
    reader: &mut ControlReader,
    ctl_send: &mut quinn::SendStream,
    ctx: &Ctx,
    mut stopping: watch::Receiver<bool>,
    slot: &Slot,
) -> Option<(u32, &'static str)> {
    let mut rate = FrameRateController::new(ctx.cfg.rate, Instant::now());
    let mut rate_tick = tokio::time::interval(RATE_TICK);
    rate_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let target_gauge = vec![("session", handle.id().to_owned())];
    ctx.metrics
        .quic_target_kbps
        .get_or_create(&target_gauge)
        .set(i64::from(rate.target_kbps()));
    let mut media = handle.subscribe();
    let mut acks = handle.acks();
    let mut inputs = InputSequencer {
        next: 1,
        ..InputSequencer::default()
    };
    let (superseded_tx, _) = watch::channel(0u32);
    let mut frames: JoinSet<()> = JoinSet::new();
    let mut skip_to_keyframe = false;
    let mut out = Vec::with_capacity(64);
    let mut end = None;
    // The player's last input: a session without one for the admission's idle time ends.
    let mut last_input = tokio::time::Instant::now();
    loop {
        let idle_at = ctx.admission.idle().map(|d| last_input + d);
        tokio::select! {
            () = super::sleep_until_or_never(idle_at) => {
                info!("no input from the player for the idle time: ending the session");
                end = Some((close_code::IDLE, "no input for the edge's idle time"));
                break;
            }
            () = stopped(&mut stopping) => {
                end = Some((close_code::SHUTDOWN, "edge shutting down"));
                break;
            }
            reason = slot.end_requested() => {
                info!(%reason, "the broker ends the session");
                end = Some((close_code::ENDED_BY_BROKER, ended_by_broker(reason)));
                break;
            }
            msg = reader.next() => match msg {
                Read::Msg(ControlMessage::Inputs(run)) => {
                    last_input = tokio::time::Instant::now();
                    if inputs.offer(&run, handle).is_err() { break; }
                }
                Read::Msg(ControlMessage::RequestKeyframe { missing_from }) => {
                    debug!(missing_from, "client asks for a keyframe");
                    if handle.send(Control::RequestKeyframe).is_err() { break; }
                }
                Read::Msg(ControlMessage::ReceiveReports(r)) => {
                    trace!(reports = r.len(), "receive reports");
                    rate.handle_reports(Instant::now(), &r);
                }
                Read::Msg(ControlMessage::Stats(s)) => debug!(?s, "client stats"),
                Read::Msg(other) => {
                    warn!("unexpected control message {other:?}");
                    close(conn, close_code::PROTOCOL_VIOLATION, "unexpected control message");
                    break;
                }
                Read::Garbage(e) => {
                    warn!("garbage on the control stream: {e}");
                    close(conn, close_code::PROTOCOL_VIOLATION, &e);
                    break;
                }
                Read::Closed => break,
            },
            d = conn.read_datagram() => match d.map(|b| Datagram::decode(&b)) {
                Ok(Ok(Datagram::Input(run))) => {
                    last_input = tokio::time::Instant::now();
                    if inputs.offer(&run, handle).is_err() { break; }
                }
                Ok(Ok(Datagram::Audio { .. }) | Err(_)) => {
                    close(conn, close_code::PROTOCOL_VIOLATION, "bad datagram");
                    break;
                }
                Err(_) => break,
            },
            changed = acks.changed() => {
                if changed.is_err() { break; }
                let ack = *acks.borrow_and_update();
                out.clear();
                let msg = ControlMessage::InputAck { applied: ack.applied, committed: ack.committed };
                if msg.encode(&mut out).is_err() || ctl_send.write_all(&out).await.is_err() {
                    break;
                }
            }
            packet = media.recv() => match packet {
                Ok(MediaPacket::Video(v)) => {
                    if skip_to_keyframe && !v.keyframe { continue; }
                    skip_to_keyframe = false;
                    if frames.len() >= MAX_FRAMES_IN_FLIGHT && !v.keyframe {
                        warn!(frame = v.frame, "client not keeping up: skipping to a keyframe");
                        skip_to_keyframe = true;
                        let _ = handle.send(Control::RequestKeyframe);
                        continue;
                    }
                    if v.keyframe {
                        superseded_tx.send_replace(v.frame);
                    }
                    rate.handle_frame_sent(Instant::now(), v.frame, u32::try_from(v.data.len()).unwrap_or(u32::MAX));
                    frames.spawn(send_frame(conn.clone(), v, superseded_tx.subscribe()).in_current_span());
                }
                Ok(MediaPacket::Audio(a)) => {
                    let Ok(payload_len) = u16::try_from(a.data.len()) else { continue };
                    let pts_us = u64::try_from(a.pts.as_micros()).unwrap_or(u64::MAX);
                    let d = Datagram::Audio { header: AudioHeader { pts_us, payload_len }, data: a.data.clone() };
                    // Audio that does not fit or finds the buffer full is dropped, not queued.
                    let _ = conn.send_datagram(Bytes::from(d.encode()));
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(lost = n, "media fan-out lagged: skipping to a keyframe");
                    skip_to_keyframe = true;
                    let _ = handle.send(Control::RequestKeyframe);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    end = Some((close_code::UNAVAILABLE, "the session ended"));
                    break;
                }
            },
            _ = rate_tick.tick() => {
                let now = Instant::now();
                let path = conn.stats().path;
                rate.handle_path(now, PathSample {
                    cwnd_bytes: path.cwnd,
                    rtt: path.rtt,
                    lost_packets: path.lost_packets,
                    sent_packets: path.sent_packets,
                });
                if let Some(kbps) = rate.poll_target(now) {
                    debug!(kbps, usage = ?rate.usage(), delivery_kbps = ?rate.delivery_kbps(),
                           queue_ms = rate.queue_delay().as_millis(), "rate target changed");
                    ctx.metrics.quic_target_kbps.get_or_create(&target_gauge).set(i64::from(kbps));
                    if handle.send(Control::SetBitrate { kbps }).is_err() { break; }
                }
            }
            Some(_) = frames.join_next(), if !frames.is_empty() => {}
        }
    }
    ctx.metrics.quic_target_kbps.remove(&target_gauge);
    frames.shutdown().await;
    end
}

/// Sends one frame on its own stream; resets it if a later keyframe is queued before the peer
/// has acknowledged all of it.
async fn send_frame(
    conn: quinn::Connection,
    v: Arc<VideoPacket>,
    mut superseded: watch::Receiver<u32>,
) {
    let Ok(mut stream) = conn.open_uni().await else {
        return;
    };
    // Older frames first: the priority falls as the frame number grows.
    let _ = stream.set_priority(-i32::try_from(v.frame).unwrap_or(i32::MAX));
    let header = FrameHeader {
        frame: v.frame,
        capture_us: v.encoded_at_us,
        render_us: v.stamp.render_time_us,
        pts_us: u64::try_from(v.pts.as_micros()).unwrap_or(u64::MAX),
        keyframe: v.keyframe,
        codec: Codec::H264,
        payload_len: u32::try_from(v.data.len()).unwrap_or(u32::MAX),
    };
    let frame = v.frame;
    let superseded_wait = async move {
        while *superseded.borrow_and_update() <= frame {
            if superseded.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let reset = tokio::select! {
        _ = async {
            stream.write_all(&header.encode()).await.ok()?;
            stream.write_all(&v.data).await.ok()?;
            stream.finish().ok()?;
            stream.stopped().await.ok()
        } => false,
        () = superseded_wait => true,
    };
    if reset {
        trace!(frame, "frame superseded by a later keyframe: reset");
        let _ = stream.reset(VarInt::from_u32(RESET_SUPERSEDED));
    }
}
