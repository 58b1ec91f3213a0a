//! Test support only: simulated network and virtual clock for the sans-IO logic, the UDP/TCP
//! relay that adds delay and loss between "regions" on loopback, and process helpers.
//!
//! The helpers land with the transports that need them.
#![forbid(unsafe_code)]
