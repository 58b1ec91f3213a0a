//! The edge's media path: everything between a game tick and an encoded, timestamped packet.
//!
//! Each session's game is rendered with Vulkan ([`gpu`], [`render`]), converted to NV12 on the
//! GPU ([`convert`]) and encoded with GStreamer ([`encode`]: NVENC when a real encoder session
//! opens, x264 otherwise) together with the game's sound as Opus. [`pipeline`] is one session's
//! media path; [`session`] runs it in real time behind the transport-neutral handle every
//! transport plugs into, with [`keyframe`] deciding when to make IDRs; [`stats`] measures it.
//!
//! This crate is the edge's one home for `unsafe` (only in [`gpu`]), ash and GStreamer; no type
//! of theirs appears in its public API. It is not a transport, a server or a metrics exporter:
//! it opens no socket, and the session runtime reports what it counts through
//! [`session::SessionMetrics`], which the edge agent implements for its Prometheus registry.
pub mod convert;
pub mod encode;
pub mod gpu;
pub mod keyframe;
pub mod pipeline;
pub mod render;
pub mod session;
pub mod stats;
