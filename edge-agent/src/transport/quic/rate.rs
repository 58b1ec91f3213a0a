//! The QUIC transport's frame-level rate controller: the sans-IO controller itself lives in
//! [`edgeplay_rate::frame`] (beside the WebRTC one, sharing its delay detector); it is
//! re-exported here, where the QUIC glue ([`super`]) feeds it sent frames, the client's receive
//! reports and quinn's path statistics, and hands its target to the encoder.
//!
//! ```
//! use edgeplay_edge::transport::quic::rate::RateConfig;
//!
//! assert_eq!(RateConfig::new(3000).max_kbps, 12_000);
//! ```

pub use edgeplay_rate::frame::*;
