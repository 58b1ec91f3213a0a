//! The client SDK: connect to an edge, receive decoded frames, send input, follow failovers.
//!
//! This crate is the SDK's room in the workspace; the QUIC transport, the Rust API, the C ABI
//! and the `edgeplay-play` CLI land with the QUIC work. The frame stamp reader that every
//! client uses already lives in `edgeplay_protocol::stamp`.
#![forbid(unsafe_code)]
