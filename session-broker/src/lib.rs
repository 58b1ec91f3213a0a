//! The session broker: edge registry, lowest-latency placement, join tokens, failover and the
//! session store (see `docs/design.md`, "Placement" and "Failover", and `docs/broker.md`).
//!
//! - [`placement`]: the sans-IO index that narrows the registry to K candidates and the pick on
//!   measured RTTs.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod placement;
