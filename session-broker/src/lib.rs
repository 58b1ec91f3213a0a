//! The session broker: edge registry, lowest-latency placement, join tokens, failover and the
//! session store (see `docs/design.md`, "Placement" and "Failover", and `docs/broker.md`).
//!
//! - [`placement`]: the sans-IO index that narrows the registry to K candidates and the pick on
//!   measured RTTs.
//! - [`api`]: the HTTP API (axum).
//! - [`store`]: durable edge and session records (embedded redb with group commit, or etcd
//!   shared by several brokers).
//! - [`liveness`]: sans-IO dead-edge detection from missed heartbeats.
//! - [`registry`]: the glue between the in-memory registry, liveness and the shared store.
//! - [`requests`]: pure decoders of request bodies (fuzzed).
//! - [`ratelimit`]: per-address and per-player token buckets.
//! - [`tokens`]: the broker's persisted Ed25519 key and the join tokens it signs.
//! - [`edge_link`]: edges' persistent, authenticated connection (heartbeats, relay).
//! - [`whep_relay`]: WHEP offers and their PATCH/DELETE relayed to edges over the link.
//! - [`player`]: the web player's files at `/play/` (`--player-dir`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod edge_link;
pub mod liveness;
pub mod placement;
pub mod player;
pub mod ratelimit;
pub mod registry;
pub mod requests;
pub mod store;
pub mod tokens;
pub mod whep_relay;
