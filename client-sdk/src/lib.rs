//! The client SDK: connect to an edge over QUIC, receive decoded frames, send input.
//!
//! [`Client::connect`] dials the edge, pins its certificate by SHA-256 fingerprint (carried in
//! the broker's signed answer, or printed by `edge-agent run --dev`), sends the join token and
//! returns a [`Session`] once the edge welcomes it. Then:
//! - [`Session::next_frame`] (or the [`futures_core::Stream`] from [`Session::frames`]) yields
//!   decoded pictures (NV12, or RGBA: [`ClientOptions::format`]) in frame order, from a
//!   hardware H.264 decoder when one works, else `avdec_h264` ([`ClientOptions::decoder`],
//!   [`Stats::decoder`]); frames lost to a reset or a gap are skipped up to
//!   the next keyframe, which the SDK asks for on its own;
//! - [`Session::send_input`] numbers an input and sends it in a datagram together with every
//!   input the edge has not acknowledged yet, until the edge's committed number covers it;
//! - [`Session::next_audio`] yields the game's Opus audio decoded to 48 kHz PCM, stamped on
//!   the frames' clock so the application plays it in sync with the pictures;
//! - [`Session::next_event`] yields [`SessionEvent`]s: connected, degraded (stalled, skipping,
//!   high RTT), recovered, closed (reconnecting is reserved for failover);
//! - [`Session::next_media`] serves frames, audio and events from one loop;
//! - [`Session::stats`] (decoded frames per second, received kbit/s, skipped-frame ratio and
//!   decode time over the last second ([`RATE_WINDOW`]), RTT, glass-to-glass and
//!   input-to-photon percentiles read from the frame stamps, cumulative counters) and
//!   [`Session::close`].
//!
//! While running, the SDK reports every frame's receive time to the edge on the control
//! stream; the edge's rate controller sets the encoder's bitrate from them.
//!
//! [`Client::connect_via_broker`] ([`broker`]) does all of it from a broker URL alone.
//!
//! ```no_run
//! # async fn demo() -> Result<(), edgeplay_client::ClientError> {
//! use edgeplay_client::{Client, parse_fingerprint};
//! use edgeplay_protocol::input::{InputEvent, Key};
//!
//! let fingerprint = parse_fingerprint("ab12…64 hex digits printed by edge-agent run --dev")?;
//! let mut session = Client::connect("127.0.0.1:4433".parse().unwrap(), fingerprint, "token").await?;
//! session.send_input(InputEvent::Key { code: Key::ArrowUp, down: true })?;
//! while let Some(frame) = session.next_frame().await {
//!     println!("frame {} {}x{}", frame.header.frame, frame.width, frame.height);
//!     if frame.header.frame >= 60 { break; }
//! }
//! println!("{:?}", session.stats());
//! session.close().await;
//! # Ok(()) }
//! ```
// `deny`, not `forbid`: the C ABI in `ffi` is the one module allowed `unsafe`.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod audio;
pub mod broker;
mod decode;
#[allow(
    unsafe_code,
    reason = "a C ABI takes raw pointers and exports unmangled symbols; this is the only module"
)]
pub mod ffi;
mod health;
mod pin;
mod rate;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use edgeplay_game::stamp::read_luma;
use edgeplay_protocol::input::InputEvent;
use edgeplay_protocol::media::{
    self, ControlMessage, Datagram, FRAME_HEADER_LEN, FrameHeader, InputRun, ReceiveReport,
    close_code,
};
use quinn::VarInt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info_span, trace, warn};

use crate::rate::Rates;

pub use audio::{AUDIO_CHANNELS, AUDIO_RATE, AudioChunk};
pub use decode::{
    DecoderPreference, HARDWARE_DECODERS, PROBE_TIMEOUT, PixelFormat, SOFTWARE_DECODER,
};
/// The stamp the edge draws into every picture, read back by the SDK into [`Frame::stamp`].
///
/// ```no_run
/// # async fn demo(mut session: edgeplay_client::Session) {
/// let stamp: Option<edgeplay_client::Stamp> = session.next_frame().await.unwrap().stamp;
/// if let Some(s) = stamp { println!("tick {} state {:016x}", s.tick, s.state_hash); }
/// # }
/// ```
pub use edgeplay_game::stamp::Stamp;
/// The header the edge sent with a frame (frame number, render time, pts, keyframe).
///
/// ```no_run
/// # async fn demo(mut session: edgeplay_client::Session) {
/// let header: edgeplay_client::Header = session.next_frame().await.unwrap().header;
/// println!("pts {} µs, keyframe {}", header.pts_us, header.keyframe);
/// # }
/// ```
pub use edgeplay_protocol::media::FrameHeader as Header;
pub use health::{Degradation, SessionEvent};

/// How long the edge has to welcome a session (it builds a GPU target and encoders first).
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);
/// Decoded frames buffered for the application before new ones are dropped.
pub const FRAME_BUFFER: usize = 64;
/// How often unacknowledged inputs are sent again.
pub const INPUT_RESEND: Duration = Duration::from_millis(15);
/// How long a gap may wait for its frame before the SDK skips to a later keyframe.
pub const GAP_PATIENCE: Duration = Duration::from_millis(150);
/// The shortest time between two keyframe requests.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(250);
/// Decoded audio chunks buffered for the application before new ones are dropped.
pub const AUDIO_BUFFER: usize = 256;
/// Events buffered for the application before new ones are dropped.
pub const EVENT_BUFFER: usize = 64;
/// Latency samples (glass-to-glass, input-to-photon) the percentiles in [`Stats`] cover.
pub const LATENCY_WINDOW: usize = 300;
/// The window of the rates in [`Stats`] whose names end in `_1s`: they count what happened
/// in the last second before [`Session::stats`] was called, `(now - 1 s, now]`, so they fall
/// to zero within a second of a stall instead of fading like a session-long average.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Why a session could not start or went on.
///
/// ```no_run
/// # async fn demo(fp: [u8; 32]) {
/// use edgeplay_client::{Client, ClientError};
/// match Client::connect("127.0.0.1:4433".parse().unwrap(), fp, "token").await {
///     Ok(session) => session.close().await,
///     Err(ClientError::Refused { code, meaning, .. }) => eprintln!("refused ({code:#x}): {meaning}"),
///     Err(e) => eprintln!("{e}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A fingerprint is not 64 hex digits.
    #[error("certificate fingerprint `{0}` is not 64 hex digits: copy it from the edge's answer")]
    BadFingerprint(String),
    /// The local UDP socket or the TLS setup failed.
    #[error("cannot set up the QUIC client: {0}")]
    Setup(String),
    /// The edge's certificate is not the pinned one.
    #[error(
        "the edge's certificate does not match the pinned fingerprint: you reached another \
         edge, or the fingerprint is stale; get a fresh one from the broker (or `run --dev`)"
    )]
    CertificateMismatch,
    /// The edge closed the connection with an application code.
    #[error("the edge refused the session (code {code:#x}: {meaning}): {reason}")]
    Refused {
        /// The close code ([`media::close_code`]).
        code: u64,
        /// What the code means.
        meaning: &'static str,
        /// The edge's reason.
        reason: String,
    },
    /// The connection failed or timed out.
    #[error("cannot reach the edge: {0}; check the address and that UDP is not blocked")]
    Connection(String),
    /// The edge spoke something else.
    #[error("the edge broke the protocol: {0}")]
    Protocol(String),
    /// The decoder could not start.
    #[error("cannot start the H.264 decoder: {0}")]
    Decoder(String),
    /// The session has ended.
    #[error("the session has ended")]
    Closed,
}

/// Reads a fingerprint written as 64 hex digits (colons allowed).
///
/// ```
/// let fp = edgeplay_client::parse_fingerprint(&"ab".repeat(32)).unwrap();
/// assert_eq!(fp[0], 0xab);
/// assert!(edgeplay_client::parse_fingerprint("xyz").is_err());
/// ```
///
/// # Errors
/// [`ClientError::BadFingerprint`].
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], ClientError> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    let bad = || ClientError::BadFingerprint(text.to_owned());
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks(2)) {
        let s = std::str::from_utf8(pair).map_err(|_| bad())?;
        *o = u8::from_str_radix(s, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// A decoded picture and how it travelled.
///
/// ```no_run
/// # async fn demo(mut session: edgeplay_client::Session) {
/// if let Some(frame) = session.next_frame().await {
///     let transit = frame.decoded_at - frame.received_at;
///     println!("frame {} decoded {transit:?} after arrival", frame.header.frame);
///     if let Some(stamp) = frame.stamp {
///         println!("shows inputs up to {}", stamp.input_seq);
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Frame {
    /// The frame header the edge sent (frame number, capture and render time, pts, keyframe).
    pub header: FrameHeader,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The layout of `data`.
    pub format: PixelFormat,
    /// The pixels, tightly packed (see [`Frame::planes`]). NV12: `width * height` bytes of
    /// luma, then `(height + 1) / 2` rows of interleaved U/V, `width` bytes each (rounded up
    /// to even). RGBA: `height` rows of `4 * width` bytes.
    pub data: Vec<u8>,
    /// When the last byte of the frame arrived.
    pub received_at: Instant,
    /// When the decoder handed the picture out.
    pub decoded_at: Instant,
    /// The stamp drawn in the picture (frame, tick, render time, inputs applied, state hash),
    /// `None` when its cells do not pass their CRC (a damaged picture).
    pub stamp: Option<Stamp>,
}

impl Frame {
    /// The luma plane of an NV12 frame (stride = width), e.g. for
    /// `edgeplay_game::stamp::read_luma`; empty for RGBA (see [`Frame::to_luma`]).
    ///
    /// ```no_run
    /// # async fn demo(mut session: edgeplay_client::Session) {
    /// let frame = session.next_frame().await.unwrap();
    /// assert_eq!(frame.luma().len(), (frame.width * frame.height) as usize);
    /// # }
    /// ```
    #[must_use]
    pub fn luma(&self) -> &[u8] {
        if self.format != PixelFormat::Nv12 {
            return &[];
        }
        let n = self.width as usize * self.height as usize;
        &self.data[..n.min(self.data.len())]
    }

    /// The luma of any frame (stride = width): the NV12 plane as is, or computed from RGBA
    /// (BT.709 weights, video range: what the stamp reader expects).
    ///
    /// ```no_run
    /// # async fn demo(mut session: edgeplay_client::Session) {
    /// let f = session.next_frame().await.unwrap();
    /// let (w, h) = (f.width as usize, f.height as usize);
    /// let stamp = edgeplay_game::stamp::read_luma(&f.to_luma(), w, h, w);
    /// # }
    /// ```
    #[must_use]
    pub fn to_luma(&self) -> std::borrow::Cow<'_, [u8]> {
        match self.format {
            PixelFormat::Nv12 => std::borrow::Cow::Borrowed(self.luma()),
            PixelFormat::Rgba => std::borrow::Cow::Owned(decode::rgba_luma(
                &self.data,
                self.width as usize,
                self.height as usize,
            )),
        }
    }

    /// The planes of `data`: NV12 has two (luma; interleaved U/V), RGBA one.
    ///
    /// ```no_run
    /// # async fn demo(mut session: edgeplay_client::Session) {
    /// let f = session.next_frame().await.unwrap();
    /// for p in f.planes() {
    ///     assert!(p.stride >= p.row_bytes && p.data.len() >= p.stride * (p.rows - 1) + p.row_bytes);
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn planes(&self) -> Vec<Plane<'_>> {
        let (w, h) = (self.width as usize, self.height as usize);
        let shape: &[(usize, usize)] = match self.format {
            PixelFormat::Nv12 => &[(w, h), (w.next_multiple_of(2), h.div_ceil(2))],
            PixelFormat::Rgba => &[(4 * w, h)],
        };
        let mut offset = 0;
        let mut planes = Vec::with_capacity(shape.len());
        for &(row_bytes, rows) in shape {
            let end = (offset + row_bytes * rows).min(self.data.len());
            planes.push(Plane {
                data: &self.data[offset.min(end)..end],
                stride: row_bytes,
                row_bytes,
                rows,
            });
            offset = end;
        }
        planes
    }
}

/// One plane of a [`Frame`].
#[derive(Clone, Copy, Debug)]
pub struct Plane<'a> {
    /// The plane's bytes: `rows` rows `stride` bytes apart.
    pub data: &'a [u8],
    /// Bytes from one row to the next.
    pub stride: usize,
    /// Bytes of pixels in a row (≤ `stride`).
    pub row_bytes: usize,
    /// Rows.
    pub rows: usize,
}

/// How a session decodes.
///
/// ```no_run
/// # async fn demo(fp: [u8; 32]) -> Result<(), edgeplay_client::ClientError> {
/// use edgeplay_client::{Client, ClientOptions, DecoderPreference, PixelFormat};
/// let options = ClientOptions { decoder: DecoderPreference::Software, format: PixelFormat::Rgba };
/// let session = Client::connect_with("127.0.0.1:4433".parse().unwrap(), fp, "token", options).await?;
/// assert_eq!(session.stats().decoder, "avdec_h264");
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// Hardware decoding when it works ([`DecoderPreference::Auto`]), or software only.
    pub decoder: DecoderPreference,
    /// The layout of [`Frame::data`].
    pub format: PixelFormat,
}

/// A snapshot of a session's statistics: rates over the last second ([`RATE_WINDOW`], names
/// ending in `_1s`), latency percentiles over the last [`LATENCY_WINDOW`] samples, and counters
/// since the session started. The C ABI's `EpStats` and the web player's overlay
/// (`client-sdk/web`) report the same statistics under the same names, by the same definitions.
///
/// Glass-to-glass compares two clocks: the render time the edge wrote into the frame's stamp
/// (the edge's wall clock) with the moment this machine's wall clock says the picture came out
/// of the decoder. It is exact when edge and client run on one machine; across machines it is
/// off by the difference of their clocks (NTP keeps that to a few ms on a LAN, tens of ms
/// across the internet), in either direction. Input-to-photon reads the client's clock only.
///
/// ```no_run
/// # fn demo(session: &edgeplay_client::Session) {
/// let s = session.stats();
/// println!(
///     "{:.1} fps, {:.0} kbit/s, {:.1} % skipped, rtt {:?}, glass-to-glass p50 {:?}, input-to-photon p95 {:?}",
///     s.decoded_fps_1s,
///     s.received_kbps_1s,
///     s.skipped_frame_ratio_1s * 100.0,
///     s.rtt,
///     s.glass_to_glass_p50,
///     s.input_to_photon_p95
/// );
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    /// Frame streams fully received, since the session started.
    pub frames_received: u64,
    /// Pictures decoded, since the session started.
    pub frames_decoded: u64,
    /// Frames skipped since the session started: lost to a reset or a gap, undecodable, or
    /// dropped because the application was slow.
    pub frames_skipped: u64,
    /// Keyframes asked for, since the session started.
    pub keyframe_requests: u64,
    /// Opus packets received, since the session started.
    pub audio_packets: u64,
    /// Pictures decoded in the last second ([`RATE_WINDOW`]), per second: the count in
    /// `(now - 1 s, now]`.
    pub decoded_fps_1s: f64,
    /// Video received in the last second ([`RATE_WINDOW`]), kbit/s: the bytes (frame header
    /// and payload) of the frame streams that arrived whole in `(now - 1 s, now]`, × 8 / 1000.
    /// Audio datagrams and QUIC overhead are not counted.
    pub received_kbps_1s: f64,
    /// Frames skipped / (frames handed to the application + frames skipped), both counted in
    /// the last second ([`RATE_WINDOW`]); 0 when neither happened. Every frame ends as one of
    /// the two, so this is the share of frames the player did not get to show. Not packet loss:
    /// QUIC retransmits lost packets (see [`Stats::lost_packets`]).
    pub skipped_frame_ratio_1s: f64,
    /// Mean decode time (the access unit pushed into the decoder to the picture out) of the
    /// pictures decoded in the last second ([`RATE_WINDOW`]); zero when none was.
    pub decode_time_1s: Duration,
    /// Smoothed round-trip time of the QUIC connection.
    pub rtt: Duration,
    /// Packets the QUIC layer declared lost, since the session started.
    pub lost_packets: u64,
    /// Packets the QUIC layer sent, since the session started.
    pub sent_packets: u64,
    /// Highest input the edge applied.
    pub input_applied: u64,
    /// Highest input covered by a committed checkpoint.
    pub input_committed: u64,
    /// Inputs still held for replay.
    pub inputs_held: usize,
    /// Glass-to-glass over the last [`LATENCY_WINDOW`] frames, median: from the render time in
    /// the frame's stamp to the SDK handing the decoded picture out. Compares the edge's clock
    /// with this machine's (see above): exact on one machine, off by the clocks' difference
    /// otherwise; zero until a frame is decoded.
    pub glass_to_glass_p50: Duration,
    /// Glass-to-glass, 95th percentile.
    pub glass_to_glass_p95: Duration,
    /// Input-to-photon over the last [`LATENCY_WINDOW`] inputs, median: from
    /// [`Session::send_input`] to the first decoded frame whose stamp shows the input applied.
    /// One clock (the client's); zero until an input is shown.
    pub input_to_photon_p50: Duration,
    /// Input-to-photon, 95th percentile.
    pub input_to_photon_p95: Duration,
    /// Audio chunks decoded, since the session started.
    pub audio_decoded: u64,
    /// The H.264 decoder element in use (`avdec_h264`, or one of [`HARDWARE_DECODERS`]).
    pub decoder: &'static str,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    decoded: AtomicU64,
    skipped: AtomicU64,
    keyframe_requests: AtomicU64,
    audio: AtomicU64,
    audio_decoded: AtomicU64,
}

/// Latency samples over the last [`LATENCY_WINDOW`].
#[derive(Debug, Default)]
struct Latency {
    glass_to_glass: VecDeque<Duration>,
    input_to_photon: VecDeque<Duration>,
    /// When the last picture was handed out.
    last_frame: Option<Instant>,
}

fn push_window(w: &mut VecDeque<Duration>, d: Duration) {
    if w.len() == LATENCY_WINDOW {
        w.pop_front();
    }
    w.push_back(d);
}

/// The `q` quantile (0..=1) of `w`, zero when empty.
fn quantile(w: &VecDeque<Duration>, q: f64) -> Duration {
    let mut v: Vec<Duration> = w.iter().copied().collect();
    v.sort_unstable();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a window of a few hundred"
    )]
    let i = ((v.len().saturating_sub(1)) as f64 * q).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

#[derive(Debug)]
struct Inputs {
    next_seq: u64,
    /// Inputs not yet covered by `committed`, oldest first.
    held: VecDeque<(u64, InputEvent)>,
    applied: u64,
    committed: u64,
    /// Highest input already sent on the control stream (reliable).
    reliable_up_to: u64,
    /// When each input not yet seen in a frame's stamp was sent, oldest first.
    sent_at: VecDeque<(u64, Instant)>,
}

#[derive(Debug)]
struct Shared {
    counters: Counters,
    inputs: Mutex<Inputs>,
    latency: Mutex<Latency>,
    rates: Mutex<Rates>,
}

impl Shared {
    fn inputs(&self) -> std::sync::MutexGuard<'_, Inputs> {
        self.inputs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn latency(&self) -> std::sync::MutexGuard<'_, Latency> {
        self.latency.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn rates(&self) -> std::sync::MutexGuard<'_, Rates> {
        self.rates.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a frame stream of `bytes` (header and payload) received whole at `at`.
    fn record_received(&self, bytes: u64, at: Instant) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        self.rates().received_bytes.record(at, bytes);
    }

    /// Counts a picture out of the decoder at `at`, `decode` after its access unit went in.
    fn record_decoded(&self, decode: Duration, at: Instant) {
        self.counters.decoded.fetch_add(1, Ordering::Relaxed);
        let mut rates = self.rates();
        rates.decoded.record(at, 1);
        let ns = u64::try_from(decode.as_nanos()).unwrap_or(u64::MAX);
        rates.decode_ns.record(at, ns);
    }

    /// Counts a frame handed to the application at `at`.
    fn record_delivered(&self, at: Instant) {
        self.rates().delivered.record(at, 1);
    }

    /// Counts `n` frames skipped at `at`.
    fn record_skipped(&self, n: u64, at: Instant) {
        self.counters.skipped.fetch_add(n, Ordering::Relaxed);
        self.rates().skipped.record(at, n);
    }

    /// Records a picture handed out at `at`: glass-to-glass from its stamp's render time, and
    /// input-to-photon for every sent input its stamp shows applied.
    fn record_shown(&self, stamp: Option<&Stamp>, render_us: u64, at: Instant) {
        let g2g = Duration::from_micros(unix_us().saturating_sub(render_us));
        let mut shown = Vec::new();
        if let Some(stamp) = stamp {
            let mut inputs = self.inputs();
            while inputs
                .sent_at
                .front()
                .is_some_and(|(seq, _)| *seq <= u64::from(stamp.input_seq))
            {
                if let Some((_, sent)) = inputs.sent_at.pop_front() {
                    shown.push(at.saturating_duration_since(sent));
                }
            }
        }
        let mut latency = self.latency();
        latency.last_frame = Some(at);
        push_window(&mut latency.glass_to_glass, g2g);
        for d in shown {
            push_window(&mut latency.input_to_photon, d);
        }
    }
}

/// Connects to edges.
///
/// ```no_run
/// # async fn demo(fp: [u8; 32]) -> Result<(), edgeplay_client::ClientError> {
/// let session = edgeplay_client::Client::connect("127.0.0.1:4433".parse().unwrap(), fp, "token").await?;
/// session.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Client;

impl Client {
    /// Connects to the edge at `addr`, pinning its certificate to `cert_fingerprint` (SHA-256 of
    /// its DER), and joins with `token`.
    ///
    /// # Errors
    /// [`ClientError::CertificateMismatch`], [`ClientError::Refused`] (bad token: code
    /// [`close_code::BAD_TOKEN`]), [`ClientError::Connection`], [`ClientError::Protocol`],
    /// [`ClientError::Decoder`], [`ClientError::Setup`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), edgeplay_client::ClientError> {
    /// use edgeplay_client::{Client, parse_fingerprint};
    /// let fp = parse_fingerprint(&std::env::var("EDGE_FINGERPRINT").unwrap_or_default())?;
    /// let session = Client::connect("127.0.0.1:4433".parse().unwrap(), fp, "dev-token").await?;
    /// println!("session {}", session.id());
    /// # Ok(()) }
    /// ```
    pub async fn connect(
        addr: SocketAddr,
        cert_fingerprint: [u8; 32],
        token: impl AsRef<[u8]>,
    ) -> Result<Session, ClientError> {
        Self::connect_with(addr, cert_fingerprint, token, ClientOptions::default()).await
    }

    /// [`Client::connect`] with [`ClientOptions`]: the decoder preference and the frames'
    /// pixel format. The decoder is chosen before dialing (with [`DecoderPreference::Auto`],
    /// once per process: each registered hardware decoder must decode a test picture).
    ///
    /// # Errors
    /// As [`Client::connect`].
    ///
    /// ```no_run
    /// # async fn demo(fp: [u8; 32]) -> Result<(), edgeplay_client::ClientError> {
    /// use edgeplay_client::{Client, ClientOptions, PixelFormat};
    /// let options = ClientOptions { format: PixelFormat::Rgba, ..ClientOptions::default() };
    /// let mut session = Client::connect_with("127.0.0.1:4433".parse().unwrap(), fp, "t", options).await?;
    /// let frame = session.next_frame().await.unwrap();
    /// assert_eq!(frame.data.len(), (frame.width * frame.height * 4) as usize);
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(
        addr: SocketAddr,
        cert_fingerprint: [u8; 32],
        token: impl AsRef<[u8]>,
        options: ClientOptions,
    ) -> Result<Session, ClientError> {
        let decoder = tokio::task::spawn_blocking(move || decode::choose_cached(options.decoder))
            .await
            .map_err(|e| ClientError::Decoder(e.to_string()))?
            .map_err(ClientError::Decoder)?;
        let (client_cfg, mismatch) = pin::client_config(cert_fingerprint)?;
        let bind: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint =
            quinn::Endpoint::client(bind).map_err(|e| ClientError::Setup(e.to_string()))?;
        endpoint.set_default_client_config(client_cfg);
        let connecting = endpoint
            .connect(addr, "edgeplay-edge")
            .map_err(|e| ClientError::Connection(e.to_string()))?;
        let conn = match tokio::time::timeout(WELCOME_TIMEOUT, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(if mismatch.load(Ordering::Acquire) {
                    ClientError::CertificateMismatch
                } else {
                    ClientError::Connection(e.to_string())
                });
            }
            Err(_) => return Err(ClientError::Connection("handshake timed out".into())),
        };
        let (mut ctl_send, ctl_recv) = conn.open_bi().await.map_err(|e| closed(&conn, &e))?;
        let mut hello = Vec::new();
        ControlMessage::Hello {
            token: token.as_ref().to_vec(),
        }
        .encode(&mut hello)
        .map_err(|e| ClientError::Setup(e.to_string()))?;
        ctl_send
            .write_all(&hello)
            .await
            .map_err(|e| closed(&conn, &e))?;
        let mut reader = ControlReader {
            recv: ctl_recv,
            buf: Vec::new(),
        };
        let welcome = match tokio::time::timeout(WELCOME_TIMEOUT, reader.next()).await {
            Ok(Ok(Some(ControlMessage::Welcome { session_id, .. }))) => session_id,
            Ok(Ok(Some(other))) => {
                return Err(ClientError::Protocol(format!(
                    "expected a welcome, got {other:?}"
                )));
            }
            Ok(Ok(None)) => return Err(closed(&conn, &"control stream closed")),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ClientError::Connection("no welcome in time".into())),
        };
        Session::start(
            endpoint,
            conn,
            ctl_send,
            reader,
            welcome,
            (decoder, options.format),
        )
    }
}

/// The error for a connection the edge closed, with its code when it gave one.
fn closed(conn: &quinn::Connection, fallback: &dyn std::fmt::Display) -> ClientError {
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c)) => {
            let code = c.error_code.into_inner();
            ClientError::Refused {
                code,
                meaning: close_code::describe(code),
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            }
        }
        Some(other) => ClientError::Connection(other.to_string()),
        None => ClientError::Connection(fallback.to_string()),
    }
}

#[derive(Debug)]
struct ControlReader {
    recv: quinn::RecvStream,
    buf: Vec<u8>,
}

impl ControlReader {
    /// The next message, `None` at the end of the stream. Cancel-safe.
    async fn next(&mut self) -> Result<Option<ControlMessage>, ClientError> {
        loop {
            match ControlMessage::decode_frame(&self.buf) {
                Ok(Some((msg, used))) => {
                    self.buf.drain(..used);
                    return Ok(Some(msg));
                }
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
            let mut chunk = [0u8; 4096];
            match self.recv.read(&mut chunk).await {
                Ok(Some(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(None) | Err(_) => return Ok(None),
            }
        }
    }
}

/// A frame whose stream arrived whole.
#[derive(Debug)]
struct Arrived {
    header: FrameHeader,
    data: Vec<u8>,
    received_at: Instant,
}

/// A live session with an edge. Dropping it aborts the session; [`Session::close`] ends it
/// cleanly.
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
    fn start(
        endpoint: quinn::Endpoint,
        conn: quinn::Connection,
        ctl_send: quinn::SendStream,
        reader: ControlReader,
        id: String,
        (decoder_name, format): (&'static str, PixelFormat),
    ) -> Result<Self, ClientError> {
        let span = info_span!("client", session = %id);
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            inputs: Mutex::new(Inputs {
                next_seq: 1,
                held: VecDeque::new(),
                applied: 0,
                committed: 0,
                reliable_up_to: 0,
                sent_at: VecDeque::new(),
            }),
            latency: Mutex::new(Latency::default()),
            rates: Mutex::new(Rates::default()),
        });
        let (frames_tx, frames) = mpsc::channel(FRAME_BUFFER);
        let (au_tx, au_rx) = std::sync::mpsc::sync_channel::<Arrived>(256);
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
                    audio_loop(&mut decoder, &opus_rx, &audio_tx, &shared);
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
            read_datagrams(conn.clone(), Arc::clone(&shared), opus_tx).instrument(span.clone()),
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
    /// presentation times on the clock of the frames' [`Header::pts_us`]: play a chunk when the
    /// frame with the same time is shown. A chunk whose datagram was lost is simply missing.
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
        let seq = {
            let mut inputs = self.shared.inputs();
            let seq = inputs.next_seq;
            inputs.next_seq += 1;
            inputs.held.push_back((seq, event));
            if inputs.sent_at.len() >= LATENCY_WINDOW * 4 {
                inputs.sent_at.pop_front();
            }
            inputs.sent_at.push_back((seq, Instant::now()));
            seq
        };
        send_unacked(&self.conn, &self.control, &self.shared)?;
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
        let c = &self.shared.counters;
        let rates = self.shared.rates().at(Instant::now());
        let path = self.conn.stats().path;
        let (g2g50, g2g95, i2p50, i2p95) = {
            let l = self.shared.latency();
            (
                quantile(&l.glass_to_glass, 0.5),
                quantile(&l.glass_to_glass, 0.95),
                quantile(&l.input_to_photon, 0.5),
                quantile(&l.input_to_photon, 0.95),
            )
        };
        let inputs = self.shared.inputs();
        Stats {
            frames_received: c.received.load(Ordering::Relaxed),
            frames_decoded: c.decoded.load(Ordering::Relaxed),
            frames_skipped: c.skipped.load(Ordering::Relaxed),
            keyframe_requests: c.keyframe_requests.load(Ordering::Relaxed),
            audio_packets: c.audio.load(Ordering::Relaxed),
            decoded_fps_1s: rates.decoded_fps,
            received_kbps_1s: rates.received_kbps,
            skipped_frame_ratio_1s: rates.skipped_frame_ratio,
            decode_time_1s: rates.decode_time,
            rtt: self.conn.rtt(),
            lost_packets: path.lost_packets,
            sent_packets: path.sent_packets,
            input_applied: inputs.applied,
            input_committed: inputs.committed,
            inputs_held: inputs.held.len(),
            glass_to_glass_p50: g2g50,
            glass_to_glass_p95: g2g95,
            input_to_photon_p50: i2p50,
            input_to_photon_p95: i2p95,
            audio_decoded: c.audio_decoded.load(Ordering::Relaxed),
            decoder: self.decoder_name,
        }
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

/// Sends every held input the edge has not applied: as many as fit in one datagram, the rest
/// (once) on the control stream.
fn send_unacked(
    conn: &quinn::Connection,
    control: &mpsc::UnboundedSender<ControlMessage>,
    shared: &Shared,
) -> Result<(), ClientError> {
    let max = conn.max_datagram_size().unwrap_or(0);
    let (datagram, reliable) = {
        let mut inputs = shared.inputs();
        let applied = inputs.applied;
        let mut run = InputRun {
            first_seq: applied + 1,
            events: Vec::new(),
        };
        let mut size = 1 + run.encoded_len();
        let mut rest = InputRun::default();
        for &(seq, event) in inputs.held.iter().filter(|(s, _)| *s > applied) {
            let len = media::event_len(&event);
            if rest.events.is_empty()
                && size + len <= max
                && run.events.len() < media::MAX_INPUTS_PER_RUN
            {
                run.events.push(event);
                size += len;
            } else if seq > inputs.reliable_up_to && rest.events.len() < media::MAX_INPUTS_PER_RUN {
                if rest.events.is_empty() {
                    rest.first_seq = seq;
                }
                rest.events.push(event);
            }
        }
        if !rest.events.is_empty() {
            inputs.reliable_up_to = rest.first_seq + rest.events.len() as u64 - 1;
        }
        (run, rest)
    };
    if !datagram.events.is_empty() {
        // A datagram that cannot go now is simply sent again by the resend timer.
        let _ = conn.send_datagram(Bytes::from(Datagram::Input(datagram).encode()));
    }
    if !reliable.events.is_empty() {
        control
            .send(ControlMessage::Inputs(reliable))
            .map_err(|_| ClientError::Closed)?;
    }
    Ok(())
}

async fn write_control(
    mut send: quinn::SendStream,
    mut rx: mpsc::UnboundedReceiver<ControlMessage>,
    conn: quinn::Connection,
) {
    let mut out = Vec::new();
    while let Some(msg) = rx.recv().await {
        out.clear();
        if let Err(e) = msg.encode(&mut out) {
            warn!("control message not sent: {e}");
            continue;
        }
        if send.write_all(&out).await.is_err() {
            break;
        }
    }
    drop(conn);
}

async fn read_control(mut reader: ControlReader, shared: Arc<Shared>, conn: quinn::Connection) {
    loop {
        match reader.next().await {
            Ok(Some(ControlMessage::InputAck { applied, committed })) => {
                let mut inputs = shared.inputs();
                inputs.applied = inputs.applied.max(applied);
                inputs.committed = inputs.committed.max(committed);
                let committed = inputs.committed;
                while inputs.held.front().is_some_and(|(s, _)| *s <= committed) {
                    inputs.held.pop_front();
                }
            }
            Ok(Some(ControlMessage::Failover(n))) => {
                warn!(edge = %n.edge, "the edge announced a failover; reconnecting is not implemented yet");
            }
            Ok(Some(other)) => debug!("control message {other:?}"),
            Ok(None) => break,
            Err(e) => {
                warn!("{e}");
                conn.close(
                    VarInt::from_u32(close_code::PROTOCOL_VIOLATION),
                    b"bad control message",
                );
                break;
            }
        }
    }
}

async fn read_datagrams(
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

async fn resend_inputs(
    conn: quinn::Connection,
    control: mpsc::UnboundedSender<ControlMessage>,
    shared: Arc<Shared>,
) {
    let mut tick = tokio::time::interval(INPUT_RESEND);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let pending = {
            let inputs = shared.inputs();
            inputs.held.back().is_some_and(|(s, _)| *s > inputs.applied)
        };
        if pending && send_unacked(&conn, &control, &shared).is_err() {
            break;
        }
    }
}

async fn read_frame(mut recv: quinn::RecvStream) -> Option<Arrived> {
    let mut head = [0u8; FRAME_HEADER_LEN];
    recv.read_exact(&mut head).await.ok()?;
    let header = FrameHeader::decode(&head).ok()?;
    let mut data = vec![0u8; header.payload_len as usize];
    recv.read_exact(&mut data).await.ok()?;
    Some(Arrived {
        header,
        data,
        received_at: Instant::now(),
    })
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Accepts frame streams, puts frames back in order, skips to a keyframe over gaps, and feeds
/// the decoder thread.
async fn receive_media(
    conn: quinn::Connection,
    decoder: std::sync::mpsc::SyncSender<Arrived>,
    control: mpsc::UnboundedSender<ControlMessage>,
    shared: Arc<Shared>,
) {
    let mut streams: JoinSet<Option<Arrived>> = JoinSet::new();
    let mut pending: BTreeMap<u32, Arrived> = BTreeMap::new();
    let mut next: Option<u32> = None;
    let mut gap_since: Option<Instant> = None;
    let mut last_request: Option<Instant> = None;
    let mut reports = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let counters = &shared.counters;
    loop {
        tokio::select! {
            s = conn.accept_uni() => match s {
                Ok(recv) => { streams.spawn(read_frame(recv)); }
                Err(_) => break,
            },
            Some(done) = streams.join_next(), if !streams.is_empty() => {
                match done {
                    Ok(Some(a)) => {
                        shared.record_received(a.data.len() as u64 + FRAME_HEADER_LEN as u64, a.received_at);
                        reports.push(ReceiveReport {
                            frame: a.header.frame,
                            received_us: unix_us(),
                            bytes: u32::try_from(a.data.len()).unwrap_or(u32::MAX),
                        });
                        if next.is_none_or(|n| a.header.frame >= n) {
                            pending.insert(a.header.frame, a);
                        }
                    }
                    // A reset (superseded by a keyframe) or a broken stream: skip ahead soon.
                    _ => { gap_since.get_or_insert_with(Instant::now); }
                }
            }
            _ = tick.tick() => {
                if !reports.is_empty() {
                    let batch = std::mem::take(&mut reports);
                    for chunk in batch.chunks(media::MAX_REPORTS) {
                        let _ = control.send(ControlMessage::ReceiveReports(chunk.to_vec()));
                    }
                }
            }
        }
        // Deliver in order.
        if next.is_none() {
            next = pending
                .iter()
                .find(|(_, a)| a.header.keyframe)
                .map(|(f, _)| *f);
            if let Some(n) = next {
                pending.retain(|f, _| *f >= n);
            }
        }
        while let Some(n) = next {
            let Some(a) = pending.remove(&n) else { break };
            gap_since = None;
            next = Some(n.wrapping_add(1));
            if decoder.try_send(a).is_err() {
                // The decoder is far behind: drop this frame and resync on a keyframe.
                shared.record_skipped(1, Instant::now());
                next = None;
            }
        }
        // A gap: wait a little for the missing frame, then skip to a buffered keyframe, or ask.
        if let (Some(n), false) = (next, pending.is_empty()) {
            let since = *gap_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= GAP_PATIENCE {
                if let Some((&k, _)) = pending.iter().find(|(_, a)| a.header.keyframe) {
                    debug!(from = n, to = k, "skipping a gap to a keyframe");
                    shared.record_skipped(u64::from(k - n), Instant::now());
                    next = Some(k);
                    pending.retain(|f, _| *f >= k);
                    gap_since = None;
                } else if last_request.is_none_or(|t| t.elapsed() >= KEYFRAME_REQUEST_INTERVAL) {
                    debug!(missing = n, "asking for a keyframe");
                    counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    last_request = Some(Instant::now());
                    let _ = control.send(ControlMessage::RequestKeyframe { missing_from: n });
                }
            }
        }
    }
    streams.shutdown().await;
}

fn decode_loop(
    decoder: &mut decode::Decoder,
    input: &std::sync::mpsc::Receiver<Arrived>,
    output: &mpsc::Sender<Frame>,
    shared: &Shared,
) {
    let mut in_flight: BTreeMap<u64, (FrameHeader, Instant, Instant)> = BTreeMap::new();
    loop {
        let wait = if in_flight.is_empty() {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        match input.recv_timeout(wait) {
            Ok(a) => {
                let pts = a.header.pts_us;
                in_flight.insert(pts, (a.header, a.received_at, Instant::now()));
                if let Err(e) = decoder.push(&a.data, pts) {
                    warn!("{e}");
                    return;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let pull_wait = if in_flight.is_empty() {
            Duration::ZERO
        } else {
            Duration::from_millis(2)
        };
        loop {
            match decoder.pull(pull_wait) {
                Ok(Some(p)) => {
                    // Pictures come out in pts order; anything older than this one was lost.
                    let older: Vec<u64> = in_flight.range(..p.pts_us).map(|(k, _)| *k).collect();
                    for k in older {
                        in_flight.remove(&k);
                        shared.record_skipped(1, Instant::now());
                    }
                    let Some((header, received_at, pushed)) = in_flight.remove(&p.pts_us) else {
                        continue;
                    };
                    let decoded_at = Instant::now();
                    shared.record_decoded(decoded_at - pushed, decoded_at);
                    let (w, h) = (p.width as usize, p.height as usize);
                    let stamp = match p.format {
                        PixelFormat::Nv12 => p
                            .data
                            .get(..w * h)
                            .and_then(|luma| read_luma(luma, w, h, w).ok()),
                        PixelFormat::Rgba => {
                            read_luma(&decode::rgba_luma(&p.data, w, h), w, h, w).ok()
                        }
                    };
                    shared.record_shown(
                        stamp.as_ref(),
                        stamp.map_or(header.render_us, |s| s.render_time_us),
                        decoded_at,
                    );
                    let frame = Frame {
                        header,
                        width: p.width,
                        height: p.height,
                        format: p.format,
                        data: p.data,
                        received_at,
                        decoded_at,
                        stamp,
                    };
                    match output.try_send(frame) {
                        Ok(()) => shared.record_delivered(decoded_at),
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            shared.record_skipped(1, decoded_at);
                        }
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

/// Decodes Opus packets on the audio thread and hands the chunks out.
fn audio_loop(
    decoder: &mut audio::OpusDecoder,
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
                    quinn::ConnectionError::LocallyClosed => "closed by this client".to_owned(),
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
