//! The edgeplay edge agent: serves live game sessions to players and keeps the edge known to
//! its broker. The media path itself (Vulkan render, NV12 conversion, GStreamer encoding, the
//! live session runtime) is `edgeplay-media`'s; this crate carries its packets to players and
//! their inputs back.
//!
//! - [`admission`]: the edge's session slots, one count for every transport;
//! - [`transport`]: WHEP for browsers ([`transport::webrtc`]), `edgeplay/1` over QUIC for the
//!   native SDK ([`transport::quic`]), and the join tokens both check ([`transport::token`]);
//! - [`http`]: health, `/metrics`, the `--dev` session API, WHEP's routes and the web player;
//! - [`link`]: the link to the home broker (register, heartbeat, relayed WHEP, relinking to
//!   another broker, the UDP echo, network coordinates);
//! - [`broker_mode`]: `edge-agent run --broker`, everything above together, and the drain;
//! - [`metrics`]: the edge's Prometheus registry, which the sessions report into.
//!
//! It is not a renderer or an encoder, and it holds no `unsafe` code: Vulkan and GStreamer stay
//! behind `edgeplay-media`'s safe API.
#![forbid(unsafe_code)]

pub mod admission;
pub mod broker_mode;
pub mod http;
pub mod link;
pub mod metrics;
pub mod transport;
