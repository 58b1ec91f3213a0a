//! Certificate pinning: the edge's certificate is self-signed, so the client trusts exactly
//! the certificate whose SHA-256 the broker (or `run --dev`) gave, and nothing else; and the
//! QUIC transport settings that go with it (both from `edgeplay-quic`, shared with the edge).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::error::ClientError;

/// Reads a fingerprint written as 64 hex digits (colons allowed).
///
/// ```
/// let fp = edgeplay_client::parse_fingerprint(&"ab".repeat(32)).unwrap();
/// assert_eq!(fp[0], 0xab);
/// assert!(edgeplay_client::parse_fingerprint("xyz").is_err());
/// ```
///
/// # Errors
/// [`ClientError::BadFingerprint`].
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], ClientError> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    let bad = || ClientError::BadFingerprint(text.to_owned());
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks(2)) {
        let s = std::str::from_utf8(pair).map_err(|_| bad())?;
        *o = u8::from_str_radix(s, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// A quinn client configuration that pins `fingerprint`, and the flag it raises on a mismatch.
pub(crate) fn client_config(
    fingerprint: [u8; 32],
) -> Result<(quinn::ClientConfig, Arc<AtomicBool>), ClientError> {
    edgeplay_quic::pinned_client(fingerprint, edgeplay_protocol::media::ALPN)
        .map_err(|e| ClientError::Setup(e.to_string()))
}
