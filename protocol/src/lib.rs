//! Sans-IO types shared by every edgeplay component.
//!
//! Nothing here touches a socket, a clock or a thread: callers pass time and bytes in and get
//! decisions and bytes out, so the same code runs in the edge agent, the client SDK, the checker
//! and the fuzz targets.
//!
//! - [`input`]: input events and the JSON-lines input script format.
//! - [`media`]: the QUIC media protocol (frame header, control messages, input datagrams).
//! - [`gcc`]: the WebRTC sender's delay-based congestion controller over transport-cc feedback.
//! - [`link`]: the edge's persistent, authenticated connection to its broker, and the UDP echo.
//! - [`web`]: which web player files the edge and the broker serve, and as what.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod coords;
pub mod gcc;
pub mod input;
pub mod link;
pub mod media;
pub mod token;
pub mod web;
pub mod whep;
