//! How a session ends, as the edge reports it and the broker records it.
//!
//! A session is live from its creation at the broker until one of the [`EndReason`]s ends it:
//! the player leaves (WHEP `DELETE`, a QUIC close), the edge ends it (an error, its shutdown, the
//! broker's [`EndReason::MaxDuration`]), nobody takes it up in time, or its edge dies. The edge
//! tells its broker which broker sessions it runs (`Running` on the link, after the welcome and
//! on every change, at most [`MAX_RUNNING`]) and reports each end with a [`SessionEnded`]; the
//! broker then takes the session out of its live table and keeps a summary of it for a bounded
//! time.
//!
//! ```
//! use edgeplay_protocol::lifecycle::EndReason;
//!
//! assert_eq!(EndReason::PlayerLeft.as_str(), "player_left");
//! assert_eq!(serde_json::to_string(&EndReason::Idle).unwrap(), "\"idle\"");
//! ```

use serde::{Deserialize, Serialize};

use crate::token::SessionId;

/// Most sessions one `Running` message may list (and so most sessions an edge runs at once).
pub const MAX_RUNNING: usize = 4096;
/// Most frames, bytes and milliseconds a report may claim: far beyond any real session (a year
/// at 1000 fps), so that a hostile report cannot overflow the broker's sums.
pub const MAX_REPORTED: u64 = 1 << 48;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The player left: WHEP `DELETE`, the QUIC connection closed, or the peer went away.
    PlayerLeft,
    /// No sign of the player for the configured idle time.
    Idle,
    /// The session reached the configured maximum duration.
    MaxDuration,
    /// Created but never placed (no select in time).
    NotPlaced,
    /// Placed but the player never joined the edge before the join token expired.
    NotJoined,
    /// The session failed on the edge (it could not start or its pipeline broke).
    Failed,
    /// The edge shut down (SIGTERM) while serving it.
    EdgeStopped,
    /// The edge died or went silent under it.
    EdgeLost,
    /// The edge no longer runs it and its own report of the end was lost.
    Vanished,
}

impl EndReason {
    /// Every reason, for metrics labels and docs.
    pub const ALL: [EndReason; 9] = [
        EndReason::PlayerLeft,
        EndReason::Idle,
        EndReason::MaxDuration,
        EndReason::NotPlaced,
        EndReason::NotJoined,
        EndReason::Failed,
        EndReason::EdgeStopped,
        EndReason::EdgeLost,
        EndReason::Vanished,
    ];

    /// The reason as it is written in JSON and in metrics labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::PlayerLeft => "player_left",
            EndReason::Idle => "idle",
            EndReason::MaxDuration => "max_duration",
            EndReason::NotPlaced => "not_placed",
            EndReason::NotJoined => "not_joined",
            EndReason::Failed => "failed",
            EndReason::EdgeStopped => "edge_stopped",
            EndReason::EdgeLost => "edge_lost",
            EndReason::Vanished => "vanished",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an edge reports when a broker session it served has ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionEnded {
    /// The broker session (from its join token).
    pub session: SessionId,
    /// Why it ended.
    pub reason: EndReason,
    /// When the player joined the edge (unix ms).
    pub started_unix_ms: u64,
    /// How long the edge served it (ms).
    pub duration_ms: u64,
    /// Video frames produced.
    pub frames: u64,
    /// Encoded video bytes produced.
    pub bytes: u64,
}

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// A figure beyond [`MAX_REPORTED`].
    #[error("session report field `{0}` is over {MAX_REPORTED}: the edge is broken or hostile")]
    TooLarge(&'static str),
    /// A running list longer than allowed.
    #[error("`running` lists {got} sessions, more than the {max} this edge may run")]
    TooMany {
        /// Entries listed.
        got: usize,
        /// The most allowed.
        max: usize,
    },
    /// A session listed twice.
    #[error("`running` lists session {0} twice")]
    Duplicate(SessionId),
}

impl SessionEnded {
    /// Checks the figures a hostile edge could use to corrupt sums.
    ///
    /// # Errors
    /// [`ReportError::TooLarge`] naming the field.
    pub fn check(&self) -> Result<(), ReportError> {
        for (name, v) in [
            ("started_unix_ms", self.started_unix_ms),
            ("duration_ms", self.duration_ms),
            ("frames", self.frames),
            ("bytes", self.bytes),
        ] {
            if v > MAX_REPORTED {
                return Err(ReportError::TooLarge(name));
            }
        }
        Ok(())
    }
}

/// Checks a `Running` list: at most `max` entries (and [`MAX_RUNNING`]), none twice.
///
/// # Errors
/// [`ReportError::TooMany`] or [`ReportError::Duplicate`].
pub fn check_running(running: &[SessionId], max: usize) -> Result<(), ReportError> {
    let max = max.min(MAX_RUNNING);
    if running.len() > max {
        return Err(ReportError::TooMany {
            got: running.len(),
            max,
        });
    }
    let mut seen = std::collections::HashSet::with_capacity(running.len());
    for s in running {
        if !seen.insert(*s) {
            return Err(ReportError::Duplicate(*s));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_and_name_themselves() {
        for r in EndReason::ALL {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(serde_json::from_str::<EndReason>(&json).unwrap(), r);
        }
        assert!(serde_json::from_str::<EndReason>("\"bored\"").is_err());
    }

    #[test]
    fn reports_with_absurd_figures_or_lists_are_refused() {
        let mut e = SessionEnded {
            session: SessionId([1; 16]),
            reason: EndReason::PlayerLeft,
            started_unix_ms: 1,
            duration_ms: 2,
            frames: 3,
            bytes: 4,
        };
        assert_eq!(e.check(), Ok(()));
        e.bytes = u64::MAX;
        assert_eq!(e.check(), Err(ReportError::TooLarge("bytes")));
        let a = SessionId([1; 16]);
        let b = SessionId([2; 16]);
        assert_eq!(check_running(&[a, b], 2), Ok(()));
        assert_eq!(
            check_running(&[a, b], 1),
            Err(ReportError::TooMany { got: 2, max: 1 })
        );
        assert_eq!(check_running(&[a, a], 4), Err(ReportError::Duplicate(a)));
        let json = r#"{"session":"01010101010101010101010101010101","reason":"idle","started_unix_ms":1,"duration_ms":1,"frames":1,"bytes":1,"extra":1}"#;
        assert!(serde_json::from_str::<SessionEnded>(json).is_err());
    }
}
