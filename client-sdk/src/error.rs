//! The SDK's error: why a session could not start or went on.

/// Why a session could not start or went on.
///
/// ```no_run
/// # async fn demo(fp: [u8; 32]) {
/// use edgeplay_client::{Client, ClientError};
/// match Client::connect("127.0.0.1:4433".parse().unwrap(), fp, "token").await {
///     Ok(session) => session.close().await,
///     Err(ClientError::EdgeFull { .. }) => eprintln!("full: retry later or ask for another edge"),
///     Err(ClientError::Refused { code, meaning, .. }) => eprintln!("refused ({code:#x}): {meaning}"),
///     Err(e) => eprintln!("{e}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A fingerprint is not 64 hex digits.
    #[error("certificate fingerprint `{0}` is not 64 hex digits: copy it from the edge's answer")]
    BadFingerprint(String),
    /// The local UDP socket or the TLS setup failed.
    #[error("cannot set up the QUIC client: {0}")]
    Setup(String),
    /// The edge's certificate is not the pinned one.
    #[error(
        "the edge's certificate does not match the pinned fingerprint: you reached another \
         edge, or the fingerprint is stale; get a fresh one from the broker (or `run --dev`)"
    )]
    CertificateMismatch,
    /// Every session slot of the edge is taken (close code
    /// [`EDGE_FULL`](edgeplay_protocol::media::close_code::EDGE_FULL)): nothing started, and the
    /// join token was not used up. Retry in a few seconds, or ask the broker for another edge.
    #[error("the edge is full: try again later or another edge ({reason})")]
    EdgeFull {
        /// The edge's reason (its capacity, when to retry).
        reason: String,
    },
    /// The edge closed the connection with an application code.
    #[error("the edge refused the session (code {code:#x}: {meaning}): {reason}")]
    Refused {
        /// The close code ([`edgeplay_protocol::media::close_code`]).
        code: u64,
        /// What the code means.
        meaning: &'static str,
        /// The edge's reason.
        reason: String,
    },
    /// The connection failed or timed out.
    #[error("cannot reach the edge: {0}; check the address and that UDP is not blocked")]
    Connection(String),
    /// The edge spoke something else.
    #[error("the edge broke the protocol: {0}")]
    Protocol(String),
    /// The decoder could not start.
    #[error("cannot start the H.264 decoder: {0}")]
    Decoder(String),
    /// The session has ended.
    #[error("the session has ended")]
    Closed,
}
