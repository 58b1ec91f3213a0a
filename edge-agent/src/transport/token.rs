//! Join tokens: what a player shows before the edge starts a session for it, on WHEP
//! (`Authorization: Bearer`) and on QUIC (the hello). The dev edge mints its own
//! [`DevToken`]; an edge serving a broker checks the broker's signed tokens (`BrokerTokens`,
//! in [`crate::link`]). Both plug in as a [`TokenCheck`].

use std::fmt;

use edgeplay_protocol::token::SessionId;
use subtle::ConstantTimeEq;

/// Why a join token was refused.
#[derive(Debug, thiserror::Error)]
#[error("join token refused: {0}")]
pub struct TokenRefused(pub String);

/// The system random generator failed, so no token could be minted.
#[derive(Debug, thiserror::Error)]
#[error("cannot mint a dev token: the system random generator failed")]
pub struct NoRandomness;

/// Checks join tokens. The dev edge uses [`DevToken`]; the broker's Ed25519 tokens plug in here.
///
/// A join runs [`verify`](Self::verify) first, then takes a session slot
/// ([`crate::admission`]), then [`check`](Self::check): a valid token refused only because the
/// edge is full is not used up, so the player may retry with it.
pub trait TokenCheck: Send + Sync + fmt::Debug {
    /// Accepts or refuses the token bytes a client sent, and uses the token up when tokens are
    /// single-use: the broker session it joins, if it names one (the dev token does not).
    ///
    /// # Errors
    /// [`TokenRefused`] with what is wrong.
    fn check(&self, token: &[u8]) -> Result<Option<SessionId>, TokenRefused>;

    /// Whether [`check`](Self::check) would accept the token, without using it up (a token
    /// used already may still pass here; `check` refuses it).
    ///
    /// # Errors
    /// [`TokenRefused`] with what is wrong.
    fn verify(&self, token: &[u8]) -> Result<(), TokenRefused>;
}

/// A random 128-bit secret minted by `run --dev`, written as 32 hex digits.
#[derive(Clone)]
pub struct DevToken(String);

impl fmt::Debug for DevToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DevToken(..)")
    }
}

impl DevToken {
    /// A fresh random token.
    ///
    /// # Errors
    /// [`NoRandomness`].
    pub fn random() -> Result<Self, NoRandomness> {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| NoRandomness)?;
        Ok(Self(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// The token as clients send it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TokenCheck for DevToken {
    /// The dev token is used any number of times: checking is verifying.
    fn check(&self, token: &[u8]) -> Result<Option<SessionId>, TokenRefused> {
        self.verify(token).map(|()| None)
    }

    fn verify(&self, token: &[u8]) -> Result<(), TokenRefused> {
        // Constant time: the token is a secret (a wrong length is refused outright).
        if bool::from(self.0.as_bytes().ct_eq(token)) {
            Ok(())
        } else {
            Err(TokenRefused(
                "not this edge's dev token: use the token `edge-agent run --dev` printed".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_token_accepts_itself_only() {
        let token = DevToken::random().unwrap();
        assert_eq!(token.as_str().len(), 32);
        token.check(token.as_str().as_bytes()).unwrap();
        let other = DevToken::random().unwrap();
        assert!(token.check(other.as_str().as_bytes()).is_err());
        assert!(token.check(&token.as_str().as_bytes()[..31]).is_err());
        assert!(token.check(b"").is_err());
        assert_eq!(format!("{token:?}"), "DevToken(..)");
    }
}
