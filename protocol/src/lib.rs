//! Sans-IO types shared by every edgeplay component.
//!
//! Nothing here touches a socket, a clock or a thread: callers pass time and bytes in and get
//! decisions and bytes out, so the same code runs in the edge agent, the client SDK, the checker
//! and the fuzz targets.
//!
//! - [`input`]: input events and the JSON-lines input script format.
//! - [`media`]: the QUIC media protocol (frame header, control messages, input datagrams).
//! - [`mode`]: a session's picture size and frame rate.
//! - [`link`]: the edge's persistent, authenticated connection to its broker, and the UDP echo.
//! - [`web`]: which web player files the edge and the broker serve, and as what.
//!
//! It is the wire formats and their decoders (every one fuzzed), not what acts on them: the
//! congestion controllers that read transport-cc results and [`media::ReceiveReport`]s live in
//! `edgeplay-rate`, the game and the frame stamp in `edgeplay-game`, the QUIC set-up in
//! `edgeplay-quic`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod coords;
pub mod input;
pub mod lifecycle;
pub mod link;
pub mod media;
pub mod mode;
pub mod token;
pub mod web;
pub mod whep;
