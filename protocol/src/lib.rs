//! Sans-IO types shared by every edgeplay component.
//!
//! Nothing here touches a socket, a clock or a thread: callers pass time and bytes in and get
//! decisions and bytes out, so the same code runs in the edge agent, the client SDK, the checker
//! and the fuzz targets.
//!
//! - [`stamp`]: the frame stamp drawn into every picture (frame number, tick, render time,
//!   highest applied input, game state hash) and the reader that gets it back from decoded luma.
//! - [`input`]: input events and the JSON-lines input script format.
//! - [`game`]: the deterministic demo game, a pure function of (seed, ordered input log).
//! - [`media`]: the QUIC media protocol (frame header, control messages, input datagrams).
//! - [`gcc`]: the WebRTC sender's delay-based congestion controller over transport-cc feedback.
//! - [`link`]: the edge's persistent, authenticated connection to its broker, and the UDP echo.
//! - [`web`]: which web player files the edge and the broker serve, and as what.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod coords;
pub mod game;
pub mod gcc;
pub mod hash;
pub mod input;
pub mod link;
pub mod media;
pub mod stamp;
pub mod token;
pub mod web;
pub mod whep;
