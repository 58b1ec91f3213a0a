//! Who the edge is and whom it trusts: its own Ed25519 key (created once in the data dir), the
//! broker's public key, and the broker's join tokens checked with it.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use edgeplay_protocol::token::{self, EdgeId, ReplayGuard, SigningKey, VerifyingKey, from_hex};

use super::{LinkError, now_ms};
use crate::transport::token::{TokenCheck, TokenRefused};

/// Loads the edge's identity from `DATA_DIR/edge.key`, creating it (0600) the first time.
///
/// # Errors
/// [`LinkError::KeyFile`], [`LinkError::BadKey`], [`LinkError::Random`].
pub fn load_or_create_key(data_dir: &Path) -> Result<SigningKey, LinkError> {
    use std::io::Write;
    let path = data_dir.join("edge.key");
    let io = |source| LinkError::KeyFile {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    match std::fs::read(&path) {
        Ok(bytes) => {
            let seed: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| LinkError::BadKey(path.display().to_string()))?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = token::generate_signing_key().map_err(|_| LinkError::Random)?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&path).map_err(io)?;
            f.write_all(&key.to_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

/// Parses 64 hex digits as an Ed25519 public key.
///
/// # Errors
/// [`LinkError::BadKey`] naming `what`.
pub fn parse_key(what: &str, hex: &str) -> Result<VerifyingKey, LinkError> {
    from_hex(hex.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| LinkError::BadKey(what.to_owned()))
}

/// The broker's join tokens, checked offline: signed by the broker, for this edge, unexpired,
/// used once.
#[derive(Debug)]
pub struct BrokerTokens {
    broker: VerifyingKey,
    edge: EdgeId,
    guard: Mutex<ReplayGuard>,
}

impl BrokerTokens {
    /// Tokens signed by `broker` for `edge`.
    #[must_use]
    pub fn new(broker: VerifyingKey, edge: EdgeId) -> Self {
        Self {
            broker,
            edge,
            guard: Mutex::new(ReplayGuard::new(100_000)),
        }
    }
}

impl BrokerTokens {
    /// The token signed by the broker for this edge and unexpired at `now`.
    fn verified(&self, token: &[u8], now: u64) -> Result<token::JoinToken, TokenRefused> {
        // WHEP carries the token as hex in `Authorization`; QUIC as raw bytes. A raw token starts
        // with "EPJT", which is not hex, so the two cannot be confused.
        let decoded;
        let raw = if token.iter().all(u8::is_ascii_hexdigit) {
            decoded = std::str::from_utf8(token)
                .ok()
                .and_then(|t| from_hex(t).ok())
                .ok_or_else(|| TokenRefused("join token: bad hex".into()))?;
            decoded.as_slice()
        } else {
            token
        };
        token::verify(raw, &self.broker, now, &self.edge).map_err(|e| TokenRefused(e.to_string()))
    }
}

impl TokenCheck for BrokerTokens {
    fn check(&self, token: &[u8]) -> Result<Option<token::SessionId>, TokenRefused> {
        let now = now_ms();
        let t = self.verified(token, now)?;
        self.guard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(&t, now)
            .map_err(|e| TokenRefused(e.to_string()))?;
        Ok(Some(t.session))
    }

    fn verify(&self, token: &[u8]) -> Result<(), TokenRefused> {
        self.verified(token, now_ms()).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::now_ms;
    use edgeplay_protocol::token::to_hex;

    #[test]
    fn broker_tokens_verify_once_in_both_encodings() {
        let broker = SigningKey::from_bytes(&[9; 32]);
        let edge = EdgeId([3; 32]);
        let now = now_ms();
        let mint = |nonce| {
            token::JoinToken {
                session: token::SessionId([1; 16]),
                edge,
                player: "p".into(),
                nonce,
                issued_unix_ms: now,
                expires_unix_ms: now + 30_000,
            }
            .sign(&broker)
            .unwrap()
        };
        let check = BrokerTokens::new(broker.verifying_key(), edge);
        let raw = mint(1);
        // Verifying (a join refused because the edge is full) does not use the token up.
        check.verify(&raw).unwrap();
        check.verify(&raw).unwrap();
        check.check(&raw).unwrap();
        assert!(check.check(&raw).is_err(), "a token is used once");
        let hex = to_hex(&mint(2));
        check.check(hex.as_bytes()).unwrap();
        let other = BrokerTokens::new(broker.verifying_key(), EdgeId([4; 32]));
        assert!(other.check(&mint(3)).is_err(), "bound to one edge");
        assert!(other.verify(&mint(3)).is_err(), "bound to one edge");
        assert!(check.check(b"not a token").is_err());
        assert!(check.verify(b"not a token").is_err());
    }
}
