//! How media leaves the edge and inputs come back: a transport per kind of player, each plugged
//! into a live [`edgeplay_media::session`] through its handle.
//!
//! - [`webrtc`]: WHEP for browsers (and anything that speaks WebRTC), with its transport-cc rate
//!   glue and the browsers' RTT probes;
//! - [`quic`]: `edgeplay/1` on quinn for the native SDK and checkers, with its frame-level rate
//!   controller;
//! - [`token`]: the join tokens both check before a session starts.
pub mod quic;
pub mod token;
pub mod webrtc;
