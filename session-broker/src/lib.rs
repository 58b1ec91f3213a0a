//! The session broker: edge registry, lowest-latency placement, join tokens, failover and the
//! session store (see `docs/design.md`, "Placement" and "Failover").
//!
//! This crate is the broker's room in the workspace. Its modules (`api`, `registry`,
//! `placement`, `failover`, `tokens`, `store`) land with the broker work; until then it holds
//! nothing, so that the crate graph and the build already have their final shape.
#![forbid(unsafe_code)]
