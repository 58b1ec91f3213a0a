//! The built-in game and what proves a picture came from it.
//!
//! - [`game`]: the deterministic demo game, a pure function of (seed, ordered input log), with
//!   snapshot and restore; the edge renders it, the checker replays it.
//! - [`stamp`]: the frame stamp drawn into every picture (frame number, tick, render time,
//!   highest applied input, game state hash) and the reader that gets it back from decoded luma.
//! - [`hash`]: the state hash, CRC-16 and the SplitMix64 PRNG that both replay on.
//!
//! Like the protocol crate it is sans-IO: no socket, clock or thread. It is not the wire
//! formats (`edgeplay-protocol`), nor the renderer (`edgeplay-media`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod game;
pub mod hash;
pub mod stamp;
