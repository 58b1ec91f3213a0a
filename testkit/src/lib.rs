//! Test support only: a virtual clock for the sans-IO logic and the UDP relay that adds delay
//! and loss between "regions" on loopback (the kernel here has no netem).
//!
//! - [`clock::VirtualClock`]: time that moves only when a test says so, for code that takes
//!   `now: Instant` as an input.
//! - [`relay::UdpRelay`]: one client ↔ one server, a fixed delay each way and independent seeded
//!   random loss per direction.
//! - [`etcd::Etcd`]: a real etcd on free loopback ports with a temporary data dir.
//! - [`netsim::Link`]: a bottleneck link computed in virtual time (capacity that may change,
//!   a byte-limited FIFO queue, propagation delay, seeded random loss), for the rate
//!   controllers' simulations.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod clock;
pub mod etcd;
pub mod netsim;
pub mod relay;
