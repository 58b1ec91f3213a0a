//! What the broker keeps about edges and sessions, in memory and in the store (JSON), and how
//! an edge's record becomes what placement sees (`spec_of`).

use edgeplay_protocol::coords::Coord;
use edgeplay_protocol::token::{EdgeId, SessionId};
use serde::{Deserialize, Serialize};

use crate::liveness::EdgeState;
use crate::placement::{EdgeSpec, Request};

/// An edge as registered: what it signed (shared with the edge, which builds and signs it).
pub use edgeplay_protocol::link::EdgeAd;

/// What the broker keeps about an edge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeRecord {
    /// The signed registration.
    pub ad: EdgeAd,
    /// Free slots at the last heartbeat.
    pub free_slots: u32,
    /// Whether the edge is draining (takes no new sessions).
    pub draining: bool,
    /// Alive or dead (missed heartbeats); written to the store only when it changes.
    #[serde(default)]
    pub state: EdgeState,
    /// Id of the broker the edge registered with (its home, which tracks its heartbeats).
    #[serde(default)]
    pub home: String,
    /// The coordinate the edge measured against its peers (reported on the link), which
    /// placement uses instead of the registration's starting one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coord: Option<Coord>,
    /// The relative error of `coord`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coord_error: Option<f64>,
    /// The coordinate this broker last wrote to the store (memory only).
    #[serde(skip)]
    pub stored_coord: Option<Coord>,
}

/// A session as the broker keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Session id.
    pub id: SessionId,
    /// Who asked.
    pub player: String,
    /// What was asked.
    pub request: Request,
    /// The K candidates offered.
    pub candidates: Vec<EdgeId>,
    /// The edge picked, once selected.
    pub edge: Option<EdgeId>,
    /// Creation time (unix ms).
    pub created_unix_ms: u64,
    /// Set when the edge died under the session: the failover (not built yet) moves it.
    #[serde(default)]
    pub failover: bool,
}

/// `WIDTHxHEIGHT`, as edges list their resolutions.
pub(crate) fn parse_resolution(r: &str) -> Option<(u32, u32)> {
    let (w, h) = r.split_once('x')?;
    Some((w.parse().ok()?, h.parse().ok()?))
}

/// What placement knows of an edge: its largest resolution, its measured coordinate when it
/// reported one, and whether it takes sessions (alive and not draining).
pub(crate) fn spec_of(rec: &EdgeRecord) -> EdgeSpec {
    let ad = &rec.ad;
    let (w, h) = ad
        .resolutions
        .iter()
        .filter_map(|r| parse_resolution(r))
        .max_by_key(|&(w, h)| u64::from(w) * u64::from(h))
        .unwrap_or((0, 0));
    EdgeSpec {
        id: ad.id,
        region: ad.region.clone(),
        coord: rec.coord.unwrap_or(ad.coord),
        gpu_class: ad.gpu_class,
        max_width: w,
        max_height: h,
        max_fps: ad.max_fps,
        price_per_min: ad.price_per_min,
        free_slots: rec.free_slots.min(ad.capacity),
        total_slots: ad.capacity,
        reputation: 1.0,
        accepting: !rec.draining && rec.state == EdgeState::Alive,
    }
}
