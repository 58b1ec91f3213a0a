//! Settlement: usage receipts, the escrow and staking contracts and the chain client.
//!
//! This crate is the settlement room in the workspace; the Solidity contracts, alloy bindings
//! and receipt signing land with the settlement work.
#![forbid(unsafe_code)]
