//! Sans-IO congestion control for edgeplay's transports: from what the receiver reports about
//! the packets or frames it got, the bitrate the edge's encoder should aim for.
//!
//! - [`delay`]: the delay detector both controllers read (smoothed one-way delay, its
//!   least-squares slope, its floor over a window and the queueing delay above it), with each
//!   controller's parameters and why they differ.
//! - [`gcc`]: the WebRTC sender's delay-based controller over transport-cc feedback
//!   (GCC-style: arrival groups, trendline, adaptive threshold, AIMD, loss cap).
//! - [`frame`]: the QUIC transport's frame-level controller over per-frame receive reports and
//!   quinn's path statistics.
//!
//! What it is not: no socket, clock or thread (every input carries `now`, so a sequence of
//! inputs gives one trajectory, which is what the tests pin), no wire format (those stay in
//! `edgeplay-protocol`), no pacing or congestion window (quinn's BBR and the RTP stack own the
//! packets), and none of the glue that feeds a controller and hands its target to the encoder
//! (`edgeplay_edge::transport::{webrtc, quic}`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod delay;
pub mod frame;
pub mod gcc;
