//! The edgeplay client SDK: joins a game session on an edge over QUIC (`edgeplay/1`, the edge's
//! certificate pinned by its SHA-256 fingerprint), hands out decoded pictures and audio in order,
//! sends input until the edge has it, and measures the session ([`Stats`], [`SessionEvent`]).
//! For Rust ([`Client::connect`] → [`Session`]), for C and engines ([`ffi`], with the header
//! `include/edgeplay.h`), and from a broker URL alone ([`broker`]).
//!
//! It is not a player (no window, no audio output: `edgeplay-play` is one, built on it), not the
//! browser client (WebRTC: `client-sdk/web/`), and it does not move a session to another edge
//! yet (an edge's failover notice is only logged).
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
//!
//! Inside, the decisions are sans-IO state machines that take `now` and return what to do:
//! frame order, gaps and keyframe requests (`reorder`), input numbering and resend (`input`),
//! health (`health`), rates (`rate`); thin tokio tasks and two threads (`session`, `video`,
//! `audio`, `control`) drive them with the connection.
// `deny`, not `forbid`: the C ABI in `ffi` is the one module allowed `unsafe`.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod audio;
pub mod broker;
mod connect;
mod control;
mod decode;
mod error;
#[allow(
    unsafe_code,
    reason = "a C ABI takes raw pointers and exports unmangled symbols; this is the only module"
)]
pub mod ffi;
mod frame;
mod health;
mod input;
mod pin;
mod rate;
mod reorder;
mod session;
mod shared;
mod stats;
mod video;

pub use audio::{AUDIO_CHANNELS, AUDIO_RATE, AudioChunk};
pub use connect::{Client, ClientOptions, WELCOME_TIMEOUT};
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
pub use error::ClientError;
pub use frame::{Frame, Plane};
pub use health::{Degradation, SessionEvent};
pub use input::INPUT_RESEND;
pub use pin::parse_fingerprint;
pub use rate::RATE_WINDOW;
pub use reorder::{GAP_PATIENCE, KEYFRAME_REQUEST_INTERVAL};
pub use session::{AUDIO_BUFFER, EVENT_BUFFER, FRAME_BUFFER, FrameStream, Media, Session};
pub use stats::{LATENCY_WINDOW, Stats};
