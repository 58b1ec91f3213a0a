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
    /// When it was placed (unix ms): its join token was minted then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_unix_ms: Option<u64>,
    /// When its edge first said it runs it (unix ms): the player joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_unix_ms: Option<u64>,
}

impl SessionRecord {
    /// Where the session is in its life, as the record says.
    #[must_use]
    pub fn phase(&self) -> Phase {
        match (self.edge, self.started_unix_ms) {
            (None, _) => Phase::Offered,
            (Some(_), None) => Phase::Placed,
            (Some(_), Some(_)) => Phase::Running,
        }
    }
}

/// Where a live session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Created, candidates offered, no edge picked yet.
    Offered,
    /// Placed on an edge, its join token minted; the player has not joined yet.
    Placed,
    /// The edge runs it.
    Running,
}

/// What the broker keeps of an ended session (under a retention bounded by age and count).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// Session id.
    pub session: SessionId,
    /// Who played.
    pub player: String,
    /// The app played (the built-in game until edges host others).
    pub app: String,
    /// The edge it was placed on, if it was.
    pub edge: Option<EdgeId>,
    /// The mode asked for: `WIDTHxHEIGHT@FPS`.
    pub mode: String,
    /// Creation time (unix ms).
    pub created_unix_ms: u64,
    /// When the player joined the edge (unix ms), if it did.
    pub started_unix_ms: Option<u64>,
    /// When it ended (unix ms).
    pub ended_unix_ms: u64,
    /// How long the edge served it (ms; 0 if it never ran).
    pub duration_ms: u64,
    /// Video frames the edge produced for it.
    pub frames: u64,
    /// Encoded video bytes the edge produced for it.
    pub bytes: u64,
    /// Why it ended.
    pub reason: edgeplay_protocol::lifecycle::EndReason,
    /// Always `ended` (so a client tells a summary from a live record).
    pub state: String,
}

/// The app every session plays until edges host others.
pub const BUILTIN_APP: &str = "edgeplay-game";

impl SessionSummary {
    /// The summary of `rec`, ended at `now` for `reason`, with the edge's figures when it
    /// reported them.
    #[must_use]
    pub fn of(
        rec: &SessionRecord,
        reason: edgeplay_protocol::lifecycle::EndReason,
        report: Option<&edgeplay_protocol::lifecycle::SessionEnded>,
        now_unix_ms: u64,
    ) -> Self {
        let started = report.map(|r| r.started_unix_ms).or(rec.started_unix_ms);
        let duration_ms = match (report, rec.started_unix_ms) {
            (Some(r), _) => r.duration_ms,
            (None, Some(s)) => now_unix_ms.saturating_sub(s),
            (None, None) => 0,
        };
        let r = &rec.request;
        SessionSummary {
            session: rec.id,
            player: rec.player.clone(),
            app: BUILTIN_APP.to_owned(),
            edge: rec.edge,
            mode: format!("{}x{}@{}", r.width, r.height, r.fps),
            created_unix_ms: rec.created_unix_ms,
            started_unix_ms: started,
            ended_unix_ms: now_unix_ms,
            duration_ms,
            frames: report.map_or(0, |r| r.frames),
            bytes: report.map_or(0, |r| r.bytes),
            reason,
            state: "ended".to_owned(),
        }
    }
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
