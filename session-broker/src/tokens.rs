//! The broker's Ed25519 identity and the join tokens it signs.
//!
//! The key is made once and kept in the data dir (`broker.key`, 32 raw bytes, mode 0600): edges
//! verify tokens offline with the public key, so it must survive restarts.

use std::io::Write;
use std::path::{Path, PathBuf};

use edgeplay_protocol::token::{
    EdgeId, JoinToken, MAX_LIFETIME_MS, SessionId, SigningKey, TokenError, VerifyingKey,
    generate_signing_key, random_nonce,
};

/// Lifetime of the join tokens the broker mints.
pub const TOKEN_LIFETIME_MS: u64 = 30_000;
const _: () = assert!(TOKEN_LIFETIME_MS <= MAX_LIFETIME_MS);

/// Why the key could not be loaded or a token minted.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("broker key file {path}: {source}; check the data dir's permissions")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file is not 32 bytes.
    #[error(
        "broker key file {path} holds {len} bytes, not 32: restore it from a backup (deleting it changes the broker's identity)"
    )]
    Corrupt {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The operating system gave no randomness.
    #[error("no randomness from the operating system: {0}")]
    Random(getrandom::Error),
    /// The token could not be signed.
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// The broker's signing key.
#[derive(Debug, Clone)]
pub struct BrokerKey {
    key: SigningKey,
}

impl BrokerKey {
    /// Loads `broker.key` from `data_dir`, or creates it (0600) the first time.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, KeyError> {
        let path = data_dir.join("broker.key");
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        match std::fs::read(&path) {
            Ok(bytes) => {
                let seed: [u8; 32] =
                    bytes.as_slice().try_into().map_err(|_| KeyError::Corrupt {
                        path: path.clone(),
                        len: bytes.len(),
                    })?;
                Ok(BrokerKey {
                    key: SigningKey::from_bytes(&seed),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = generate_signing_key().map_err(KeyError::Random)?;
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(&path).map_err(io)?;
                f.write_all(&key.to_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                Ok(BrokerKey { key })
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The public key edges verify tokens with.
    pub fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Signs `msg` (the edge link's welcome, which proves this key to the edge).
    pub fn sign(&self, msg: &[u8]) -> edgeplay_protocol::token::Signature {
        use ed25519_dalek::Signer;
        self.key.sign(msg)
    }

    /// A signed, single-use join token for `player` on `edge`, valid [`TOKEN_LIFETIME_MS`].
    pub fn mint(
        &self,
        session: SessionId,
        edge: EdgeId,
        player: &str,
        now_unix_ms: u64,
    ) -> Result<(Vec<u8>, JoinToken), KeyError> {
        let token = JoinToken {
            session,
            edge,
            player: player.to_owned(),
            nonce: random_nonce().map_err(KeyError::Random)?,
            issued_unix_ms: now_unix_ms,
            expires_unix_ms: now_unix_ms + TOKEN_LIFETIME_MS,
        };
        Ok((token.sign(&self.key)?, token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeplay_protocol::token::verify;

    #[test]
    fn key_persists_with_mode_0600_and_tokens_verify() {
        let dir = std::env::temp_dir().join(format!("edgeplay-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = BrokerKey::load_or_create(&dir).unwrap();
        let b = BrokerKey::load_or_create(&dir).unwrap();
        assert_eq!(a.public(), b.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("broker.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let edge = EdgeId([7; 32]);
        let (bytes, t) = b.mint(SessionId([1; 16]), edge, "p1", 1_000_000).unwrap();
        let got = verify(&bytes, &a.public(), 1_000_001, &edge).unwrap();
        assert_eq!(got, t);
        assert!(t.expires_unix_ms - t.issued_unix_ms <= MAX_LIFETIME_MS);
        std::fs::write(dir.join("broker.key"), b"short").unwrap();
        assert!(matches!(
            BrokerKey::load_or_create(&dir),
            Err(KeyError::Corrupt { len: 5, .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
