//! The edgeplay edge agent.
//!
//! An edge renders each session's game with Vulkan ([`gpu`], [`render`]), converts the picture
//! to NV12 on the GPU ([`convert`]), encodes it with GStreamer ([`encode`]: NVENC when a real
//! encoder session opens, x264 otherwise) together with the game's sound as Opus, and hands the
//! timestamped media to the transports through the live session runtime ([`session`]).
//! [`pipeline`] is one session's media path; [`stats`] and [`metrics`] measure it.
//!
//! [`agent`] joins a home broker (`edge-agent run --broker`): link, heartbeats, relayed WHEP,
//! join tokens, UDP echo, drain; [`failover`] picks the broker it dials when its broker dies;
//! [`coords`] measures its network coordinate against peer edges the broker names.
//!
//! `unsafe` lives only in [`gpu`], the one module that talks to Vulkan.
pub mod agent;
pub mod convert;
pub mod coords;
pub mod encode;
pub mod failover;
pub mod gpu;
pub mod http;
pub mod keyframe;
pub mod metrics;
pub mod pipeline;
pub mod probe;
pub mod quic;
pub mod quic_rate;
pub mod rate;
pub mod render;
pub mod session;
pub mod stats;
pub mod webrtc;
