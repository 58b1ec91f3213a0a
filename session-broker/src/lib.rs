//! The session broker: edge registry, lowest-latency placement, join tokens, the WHEP relay and
//! the session store (see `docs/design.md`, "Placement" and "Failover", and `docs/broker.md`).
//!
//! It is the control plane only: media never flows through it (players reach edges directly,
//! or through the broker's relay for signalling alone), and it does not run sessions, verify
//! edges' work or settle payments. Session failover is designed but not built: an edge that
//! dies has its sessions marked for failover, nothing moves them yet.
//!
//! Modules, lower layers first (each uses only those above it in this list):
//!
//! - [`placement`]: the sans-IO index that narrows the registry to K candidates and the pick on
//!   measured RTTs.
//! - [`liveness`]: sans-IO dead-edge detection from missed heartbeats.
//! - [`ratelimit`]: per-address and per-player token buckets.
//! - [`tokens`]: the broker's persisted Ed25519 key and the join tokens it signs.
//! - [`store`]: durable edge and session records (embedded redb with group commit, or etcd
//!   shared by several brokers).
//! - [`records`]: what is kept about edges and sessions, and an edge as placement sees it.
//! - [`error`]: the error types (no HTTP in them; the routes map them to statuses).
//! - [`requests`]: pure decoders of request bodies (fuzzed), and the edges' signing domains.
//! - [`links`]: the edges linked to this broker and the request relay over their links.
//! - `metrics` (private): the Prometheus counters and the registry `/metrics` encodes.
//! - [`service`]: the registry service, the only code that takes the registry lock: edges
//!   admitted, heartbeats, coordinates, offers and picks, session look-ups, sweep decisions.
//! - [`state`]: the [`state::Config`] and the state every part of a running broker shares.
//! - [`registry`]: the state started with its background tasks (liveness sweep, adoption of
//!   orphaned edges, other brokers' writes), and [`registry::Broker`], its in-process handle.
//! - [`edge_link`]: edges' persistent, authenticated connection (handshake, heartbeats, peers).
//! - [`whep_relay`]: what WHEP offers, their PATCH/DELETE and RTT probes relay to which edge.
//! - [`routes`]: the HTTP API (axum), [`routes::app`] and [`routes::serve`]; and the web
//!   player's files at `/play/` ([`routes::player`], `--player-dir`).
//!
//! ```no_run
//! # async fn run(cfg: edgeplay_broker::state::Config) -> Result<(), Box<dyn std::error::Error>> {
//! use edgeplay_broker::routes;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8090").await?;
//! let router = routes::app(cfg).await?;
//! routes::serve(listener, router, routes::shutdown_signal()).await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod edge_link;
pub mod error;
pub mod links;
pub mod liveness;
mod metrics;
pub mod placement;
pub mod ratelimit;
pub mod records;
pub mod registry;
pub mod requests;
pub mod routes;
pub mod service;
pub mod state;
pub mod store;
pub mod tokens;
pub mod whep_relay;
