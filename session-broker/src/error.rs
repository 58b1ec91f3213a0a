//! The broker's error types, one sentence each saying what was wrong and what to do.
//!
//! None of them knows HTTP: the routes map each to a status (and the edge link sends the
//! sentence in its refusal).
//!
//! - [`DecodeError`]: a request body refused by the `requests` decoders (it carries the 400 or
//!   413 the fuzz target checks, as a plain number).
//! - [`RelayError`]: a request the `links` could not take to an edge and back.
//! - [`BrokerError`]: what an operation of the registry `service` (or the WHEP relay over it)
//!   refuses or fails with.
//!
//! The statuses (docs/broker.md, "Status map"): 400 a request that can never be served (it
//! names the field), 422 a valid request that no registered edge could ever meet (it names what
//! to relax), 503 with `Retry-After` a valid request that nothing can take now.

use edgeplay_protocol::coords::Coord;
use edgeplay_protocol::token::{EdgeId, SessionId};

use crate::placement::PlacementError;
use crate::store::StoreError;

/// Why a body was refused: the HTTP status (400 or 413) and a sentence naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// 400 (malformed) or 413 (too large).
    pub status: u16,
    /// What was wrong, naming the field's path, and what to do.
    pub message: String,
}

/// Why a request could not be relayed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The edge has no link to this broker.
    #[error("edge {0} is not connected to this broker: ask for a new session")]
    NotConnected(EdgeId),
    /// The edge did not answer in time.
    #[error("edge {edge} did not answer within {secs} s: retry, or ask for a new session")]
    Timeout {
        /// The edge.
        edge: EdgeId,
        /// The wait.
        secs: u64,
    },
    /// The link dropped while the request was out.
    #[error("edge {0} went away while answering: ask for a new session")]
    Dropped(EdgeId),
}

/// What a registry operation refuses or fails with.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A body that does not decode (or is too large).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The edge id is not an Ed25519 public key.
    #[error("edge id {0} is not an Ed25519 public key")]
    NotAKey(EdgeId),
    /// The signature does not verify with the edge's key.
    #[error(
        "signature does not match edge {0}: sign the canonical JSON of the body without `signature` with the edge's key"
    )]
    BadSignature(EdgeId),
    /// A signed message too far from the broker's clock (replayed, or a clock off).
    #[error(
        "`issued_unix_ms` {issued_unix_ms} is more than {skew_ms} ms from the broker's clock: sync the edge's clock and sign a fresh message"
    )]
    Stale {
        /// When the message says it was signed.
        issued_unix_ms: u64,
        /// How far from the broker's clock that may be.
        skew_ms: u64,
    },
    /// A heartbeat (or coordinate) from an edge this broker does not know.
    #[error("edge {0} is not registered: POST /v1/edges first")]
    UnknownEdge(EdgeId),
    /// A coordinate an edge reported that placement cannot use.
    #[error(
        "edge {edge} reported coordinate {coord:?} with error {error}: not a usable coordinate"
    )]
    BadCoordinate {
        /// The edge.
        edge: EdgeId,
        /// What it reported.
        coord: Coord,
        /// The error it reported with it.
        error: f64,
    },
    /// An edge's session report that cannot be true (figures out of range, a list longer than
    /// its capacity).
    #[error("session report refused: {0}")]
    BadReport(String),
    /// The caller's address or claimed player name is over its rate.
    #[error("{who} is over {per_sec} requests/s (burst {burst}): retry in a second")]
    RateLimited {
        /// `address 10.0.0.1` or ``player `bob` ``.
        who: String,
        /// The sustained rate of that bucket.
        per_sec: f64,
        /// Its burst.
        burst: f64,
    },
    /// Placement refused: no location in the request, a region no edge is in, no edge that
    /// could ever meet the request, or no measured candidate that fits.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// No edge can take the request now, though one could once it has a free slot (a request
    /// no edge could ever meet is [`PlacementError::Unmet`] instead).
    #[error(
        "no edge can take the request now: every edge that could serve it is full, draining or down (or none is registered): retry after the Retry-After seconds"
    )]
    NoEdge,
    /// The edge picked for a session left the registry meanwhile.
    #[error("the chosen edge left: ask for a new session")]
    ChosenEdgeLeft,
    /// No such session here or in the store.
    #[error("no session {0}: ask for one with POST /v1/sessions")]
    NoSession(SessionId),
    /// A probe names an edge that the session was not offered.
    #[error(
        "edge {edge} is not a candidate of session {session}: probe the candidates the session lists"
    )]
    NotACandidate {
        /// The edge probed.
        edge: EdgeId,
        /// The session.
        session: SessionId,
    },
    /// The session has no edge yet.
    #[error("session {0} has no edge yet: POST /v1/sessions/{0}/select first")]
    NotPlaced(SessionId),
    /// The session's record changed between its read and the conditional write of its edge.
    #[error(
        "session {0} changed while it was being placed (another broker or request placed it): GET it and retry"
    )]
    SessionChanged(SessionId),
    /// The session already has its edge: `/select` places a session once (moving it to another
    /// edge is the failover's own path).
    #[error(
        "session {session} is already placed on edge {edge}; a session is placed once: join with the token its first selection gave, or ask for a new session with POST /v1/sessions"
    )]
    AlreadyPlaced {
        /// The session.
        session: SessionId,
        /// The edge it was placed on.
        edge: EdgeId,
    },
    /// A record could not be encoded.
    #[error("{0}")]
    Encode(String),
    /// The store refused or is unreachable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Randomness or signing failed.
    #[error("{0}")]
    Internal(String),
    /// A relayed body that is not UTF-8 text.
    #[error("{0}")]
    NotText(&'static str),
    /// A relay to an edge failed.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// An edge answered a relayed request with a status that is not one.
    #[error("edge {edge} answered with status {status}")]
    EdgeStatus {
        /// The edge.
        edge: EdgeId,
        /// What it sent.
        status: u16,
    },
    /// A WHEP offer whose join token names another session than its URL.
    #[error(
        "the join token is for session {token}, not {url}: use the token /select gave for this session"
    )]
    OtherSessionsToken {
        /// The session the token is for.
        token: SessionId,
        /// The session of the URL.
        url: String,
    },
    /// A WHEP resource name that no edge hands out.
    #[error("no WHEP resource `{0}`: use the Location of the 201")]
    NoWhepResource(String),
}
