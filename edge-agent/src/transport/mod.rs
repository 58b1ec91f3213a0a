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

/// Sleeps until `at`, or forever without one: the player-idle deadline both transports keep
/// (none when the edge's `--idle-secs` is 0).
pub(crate) async fn sleep_until_or_never(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
