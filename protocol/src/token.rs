//! Join tokens: the broker's signed permission for one player to join one session on one edge.
//!
//! The broker signs each token with its Ed25519 key; an edge checks it offline with the
//! broker's public key ([`verify`]), so joining needs no round trip to the broker, and refuses a
//! second use of the same nonce with a [`ReplayGuard`]. A token lives at most
//! [`MAX_LIFETIME_MS`], which is what keeps the replay guard's memory bounded.
//!
//! Wire form (little-endian, 150 to 214 bytes):
//!
//! ```text
//! "EPJT" | version u8 = 1 | session 16 | edge 32 | nonce 16 | issued u64 ms | expires u64 ms
//!        | player_len u8 (≤ 64) | player (UTF-8) | signature 64 (over everything before it)
//! ```
//!
//! ```
//! use edgeplay_protocol::token::{self, EdgeId, JoinToken, ReplayGuard, SessionId};
//!
//! let broker = token::generate_signing_key().unwrap();
//! let edge = EdgeId([7; 32]);
//! let now = 1_700_000_000_000;
//! let t = JoinToken {
//!     session: SessionId([1; 16]),
//!     edge,
//!     player: "p1".into(),
//!     nonce: token::random_nonce().unwrap(),
//!     issued_unix_ms: now,
//!     expires_unix_ms: now + 30_000,
//! };
//! let bytes = t.sign(&broker).unwrap();
//! // On the edge, offline:
//! let mut guard = ReplayGuard::new(10_000);
//! let got = token::verify(&bytes, &broker.verifying_key(), now + 5, &edge).unwrap();
//! guard.admit(&got, now + 5).unwrap();
//! assert!(guard.admit(&got, now + 6).is_err()); // single use
//! ```

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{SIGNATURE_LENGTH, Signer};
pub use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

/// Longest a token may live, from issue to expiry.
pub const MAX_LIFETIME_MS: u64 = 60_000;
/// Longest player id, in bytes of UTF-8.
pub const MAX_PLAYER_LEN: usize = 64;
/// Clock difference tolerated between broker and edge when checking the issue time.
pub const CLOCK_SKEW_MS: u64 = 5_000;

const MAGIC: &[u8; 4] = b"EPJT";
const VERSION: u8 = 1;
const FIXED_LEN: usize = 4 + 1 + 16 + 32 + 16 + 8 + 8 + 1;
/// Shortest valid encoding (empty player id).
pub const MIN_LEN: usize = FIXED_LEN + SIGNATURE_LENGTH;
/// Longest valid encoding.
pub const MAX_LEN: usize = MIN_LEN + MAX_PLAYER_LEN;

/// Why a token was refused or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The bytes are not a join token of this version.
    #[error(
        "join token is malformed ({0}): ask the broker for a new one with POST /v1/sessions/{{id}}/select"
    )]
    Malformed(&'static str),
    /// The signature does not match the broker's key.
    #[error(
        "join token signature does not verify with the broker's public key: check the edge's configured broker key, or ask for a new token"
    )]
    BadSignature,
    /// The token's expiry has passed.
    #[error(
        "join token expired at {expires_unix_ms} ms, now is {now_unix_ms} ms: ask the broker for a new one"
    )]
    Expired {
        /// When it expired.
        expires_unix_ms: u64,
        /// The checker's clock.
        now_unix_ms: u64,
    },
    /// Issued in the future beyond the tolerated skew.
    #[error(
        "join token issued at {issued_unix_ms} ms, after now ({now_unix_ms} ms) plus {CLOCK_SKEW_MS} ms of skew: synchronise the clocks (NTP)"
    )]
    NotYetValid {
        /// When it says it was issued.
        issued_unix_ms: u64,
        /// The checker's clock.
        now_unix_ms: u64,
    },
    /// Lifetime longer than [`MAX_LIFETIME_MS`], or expiry before issue.
    #[error(
        "join token lifetime {0} ms is outside 1..={MAX_LIFETIME_MS} ms: the broker must issue short-lived tokens"
    )]
    Lifetime(i128),
    /// The player id is too long.
    #[error("player id is {0} bytes, longer than {MAX_PLAYER_LEN}: use a shorter id")]
    PlayerTooLong(usize),
    /// The token names another edge.
    #[error(
        "join token is for edge {token_edge}, not this edge ({this_edge}): connect to the edge the broker named"
    )]
    WrongEdge {
        /// The edge in the token.
        token_edge: EdgeId,
        /// The edge that checked it.
        this_edge: EdgeId,
    },
    /// The nonce was seen before.
    #[error("join token was already used: ask the broker for a new one")]
    Replayed,
    /// The replay guard is full of unexpired nonces.
    #[error(
        "replay guard holds {0} unexpired tokens and cannot take more: retry in a few seconds or raise its capacity"
    )]
    GuardFull(usize),
}

macro_rules! hex_id {
    ($name:ident, $len:expr, $doc:expr) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl FromStr for $name {
            type Err = HexError;
            fn from_str(s: &str) -> Result<Self, HexError> {
                let v = from_hex(s)?;
                let a: [u8; $len] = v.try_into().map_err(|v: Vec<u8>| HexError::Length {
                    expected: $len,
                    got: v.len(),
                })?;
                Ok($name(a))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_id!(
    SessionId,
    16,
    "A session, 128 random bits; lowercase hex in text."
);
hex_id!(
    EdgeId,
    32,
    "An edge: its Ed25519 public key, so the id is also how its signatures are checked."
);

impl EdgeId {
    /// The edge's public key, if the id is a valid Ed25519 point.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0).ok()
    }
}

/// A hex string that is not the expected id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// A character outside `0-9a-fA-F`, or an odd count.
    #[error("not hexadecimal: use lowercase hex digits, two per byte")]
    NotHex,
    /// Wrong number of bytes.
    #[error("expected {expected} bytes ({} hex digits), got {got}", expected * 2)]
    Length {
        /// Bytes wanted.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Bytes of a hex string (either case).
pub fn from_hex(s: &str) -> Result<Vec<u8>, HexError> {
    fn nib(c: u8) -> Result<u8, HexError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(HexError::NotHex),
        }
    }
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return Err(HexError::NotHex);
    }
    b.chunks_exact(2)
        .map(|p| Ok(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

/// A fresh Ed25519 key from the operating system's random source.
pub fn generate_signing_key() -> Result<SigningKey, getrandom::Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A fresh 128-bit nonce from the operating system's random source.
pub fn random_nonce() -> Result<u128, getrandom::Error> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)?;
    Ok(u128::from_le_bytes(b))
}

/// What a join token grants; [`JoinToken::sign`] makes the wire form, [`verify`] reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The session to join.
    pub session: SessionId,
    /// The only edge that may accept it.
    pub edge: EdgeId,
    /// The player it was issued to.
    pub player: String,
    /// Unique per token; the edge refuses a nonce it has seen.
    pub nonce: u128,
    /// Issue time, unix ms (broker clock).
    pub issued_unix_ms: u64,
    /// Expiry, unix ms; at most [`MAX_LIFETIME_MS`] after issue.
    pub expires_unix_ms: u64,
}

impl JoinToken {
    /// The signed wire form; refuses tokens that [`verify`] would refuse for their shape.
    pub fn sign(&self, broker: &SigningKey) -> Result<Vec<u8>, TokenError> {
        let life = i128::from(self.expires_unix_ms) - i128::from(self.issued_unix_ms);
        if life <= 0 || life > i128::from(MAX_LIFETIME_MS) {
            return Err(TokenError::Lifetime(life));
        }
        if self.player.len() > MAX_PLAYER_LEN {
            return Err(TokenError::PlayerTooLong(self.player.len()));
        }
        let mut out = Vec::with_capacity(MIN_LEN + self.player.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.session.0);
        out.extend_from_slice(&self.edge.0);
        out.extend_from_slice(&self.nonce.to_le_bytes());
        out.extend_from_slice(&self.issued_unix_ms.to_le_bytes());
        out.extend_from_slice(&self.expires_unix_ms.to_le_bytes());
        out.push(self.player.len() as u8);
        out.extend_from_slice(self.player.as_bytes());
        let sig = broker.sign(&out);
        out.extend_from_slice(&sig.to_bytes());
        Ok(out)
    }
}

/// Reads `bytes` without checking signature or time: for logs and tools, never for admission.
pub fn decode_unverified(bytes: &[u8]) -> Result<(JoinToken, &[u8], Signature), TokenError> {
    if bytes.len() < MIN_LEN {
        return Err(TokenError::Malformed("shorter than the smallest token"));
    }
    if bytes.len() > MAX_LEN {
        return Err(TokenError::Malformed("longer than the largest token"));
    }
    if &bytes[..4] != MAGIC {
        return Err(TokenError::Malformed("wrong magic"));
    }
    if bytes[4] != VERSION {
        return Err(TokenError::Malformed("unknown version"));
    }
    let mut r = Reader(&bytes[5..]);
    let session = SessionId(r.take()?);
    let edge = EdgeId(r.take()?);
    let nonce = u128::from_le_bytes(r.take()?);
    let issued_unix_ms = u64::from_le_bytes(r.take()?);
    let expires_unix_ms = u64::from_le_bytes(r.take()?);
    let [plen] = r.take::<1>()?;
    let plen = usize::from(plen);
    if plen > MAX_PLAYER_LEN {
        return Err(TokenError::Malformed("player id longer than 64 bytes"));
    }
    if r.0.len() != plen + SIGNATURE_LENGTH {
        return Err(TokenError::Malformed(
            "length does not match the player id length",
        ));
    }
    let player = std::str::from_utf8(&r.0[..plen])
        .map_err(|_| TokenError::Malformed("player id is not UTF-8"))?
        .to_owned();
    let signed_len = bytes.len() - SIGNATURE_LENGTH;
    let sig_bytes: [u8; SIGNATURE_LENGTH] = bytes[signed_len..]
        .try_into()
        .map_err(|_| TokenError::Malformed("signature"))?;
    let token = JoinToken {
        session,
        edge,
        player,
        nonce,
        issued_unix_ms,
        expires_unix_ms,
    };
    Ok((
        token,
        &bytes[..signed_len],
        Signature::from_bytes(&sig_bytes),
    ))
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], TokenError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(TokenError::Malformed("truncated"))?;
        self.0 = rest;
        Ok(*head)
    }
}

/// Checks a token offline: shape, broker signature, time window and that it names this edge.
/// Replays are the [`ReplayGuard`]'s job, after this succeeds.
pub fn verify(
    bytes: &[u8],
    broker: &VerifyingKey,
    now_unix_ms: u64,
    expected_edge: &EdgeId,
) -> Result<JoinToken, TokenError> {
    let (token, signed, sig) = decode_unverified(bytes)?;
    broker
        .verify_strict(signed, &sig)
        .map_err(|_| TokenError::BadSignature)?;
    let life = i128::from(token.expires_unix_ms) - i128::from(token.issued_unix_ms);
    if life <= 0 || life > i128::from(MAX_LIFETIME_MS) {
        return Err(TokenError::Lifetime(life));
    }
    if token.issued_unix_ms > now_unix_ms.saturating_add(CLOCK_SKEW_MS) {
        return Err(TokenError::NotYetValid {
            issued_unix_ms: token.issued_unix_ms,
            now_unix_ms,
        });
    }
    if now_unix_ms >= token.expires_unix_ms {
        return Err(TokenError::Expired {
            expires_unix_ms: token.expires_unix_ms,
            now_unix_ms,
        });
    }
    if token.edge != *expected_edge {
        return Err(TokenError::WrongEdge {
            token_edge: token.edge,
            this_edge: *expected_edge,
        });
    }
    Ok(token)
}

/// Remembers the nonces of admitted tokens until they expire, so each token is used once.
///
/// Memory is bounded by `capacity`; since a token lives at most a minute, a capacity of the
/// edge's joins per minute (with margin) is enough. When full of unexpired nonces it refuses
/// rather than forgets, because forgetting would let a replay through.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    capacity: usize,
    seen: HashSet<u128>,
    by_expiry: BTreeSet<(u64, u128)>,
}

impl ReplayGuard {
    /// A guard holding at most `capacity` nonces.
    pub fn new(capacity: usize) -> Self {
        ReplayGuard {
            capacity: capacity.max(1),
            seen: HashSet::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    /// Nonces held now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when no nonce is held.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Admits a verified token once: a second call with the same nonce is [`TokenError::Replayed`].
    pub fn admit(&mut self, token: &JoinToken, now_unix_ms: u64) -> Result<(), TokenError> {
        self.evict(now_unix_ms);
        if now_unix_ms >= token.expires_unix_ms {
            return Err(TokenError::Expired {
                expires_unix_ms: token.expires_unix_ms,
                now_unix_ms,
            });
        }
        if self.seen.contains(&token.nonce) {
            return Err(TokenError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(TokenError::GuardFull(self.capacity));
        }
        self.seen.insert(token.nonce);
        self.by_expiry.insert((token.expires_unix_ms, token.nonce));
        Ok(())
    }

    /// Forgets nonces whose tokens have expired (they would be refused as expired anyway).
    pub fn evict(&mut self, now_unix_ms: u64) {
        while let Some(&(exp, nonce)) = self.by_expiry.first() {
            if exp > now_unix_ms {
                break;
            }
            self.by_expiry.pop_first();
            self.seen.remove(&nonce);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_700_000_000_000;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn token(nonce: u128) -> JoinToken {
        JoinToken {
            session: SessionId([1; 16]),
            edge: EdgeId([2; 32]),
            player: "player-1".into(),
            nonce,
            issued_unix_ms: NOW,
            expires_unix_ms: NOW + 30_000,
        }
    }

    #[test]
    fn round_trip_verifies() {
        let k = key(1);
        let b = token(9).sign(&k).unwrap();
        let t = verify(&b, &k.verifying_key(), NOW + 1, &EdgeId([2; 32])).unwrap();
        assert_eq!(t, token(9));
    }

    #[test]
    fn refuses_wrong_key_edge_time_and_tampering() {
        let k = key(1);
        let b = token(9).sign(&k).unwrap();
        let vk = k.verifying_key();
        let edge = EdgeId([2; 32]);
        assert_eq!(
            verify(&b, &key(2).verifying_key(), NOW, &edge),
            Err(TokenError::BadSignature)
        );
        assert!(matches!(
            verify(&b, &vk, NOW, &EdgeId([3; 32])),
            Err(TokenError::WrongEdge { .. })
        ));
        assert!(matches!(
            verify(&b, &vk, NOW + 30_000, &edge),
            Err(TokenError::Expired { .. })
        ));
        assert!(matches!(
            verify(&b, &vk, NOW - 10_000, &edge),
            Err(TokenError::NotYetValid { .. })
        ));
        for i in 0..b.len() {
            let mut t = b.clone();
            t[i] ^= 0x40;
            assert!(verify(&t, &vk, NOW, &edge).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn refuses_long_lifetime_at_issue() {
        let mut t = token(1);
        t.expires_unix_ms = NOW + MAX_LIFETIME_MS + 1;
        assert!(matches!(t.sign(&key(1)), Err(TokenError::Lifetime(_))));
        t.expires_unix_ms = NOW;
        assert!(matches!(t.sign(&key(1)), Err(TokenError::Lifetime(_))));
    }

    #[test]
    fn replay_guard_refuses_second_use_and_evicts_by_expiry() {
        let mut g = ReplayGuard::new(2);
        g.admit(&token(1), NOW).unwrap();
        assert_eq!(g.admit(&token(1), NOW + 1), Err(TokenError::Replayed));
        g.admit(&token(2), NOW).unwrap();
        assert_eq!(g.admit(&token(3), NOW), Err(TokenError::GuardFull(2)));
        let mut later = token(3);
        later.issued_unix_ms = NOW + 30_000;
        later.expires_unix_ms = NOW + 60_000;
        g.admit(&later, NOW + 30_000).unwrap();
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn ids_round_trip_through_hex() {
        let e = EdgeId([0xab; 32]);
        assert_eq!(e.to_string().parse::<EdgeId>().unwrap(), e);
        assert!("zz".parse::<SessionId>().is_err());
        assert!(matches!(
            "abcd".parse::<SessionId>(),
            Err(HexError::Length { .. })
        ));
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_unverified(&bytes);
            let _ = verify(&bytes, &key(1).verifying_key(), NOW, &EdgeId([2; 32]));
        }

        #[test]
        fn any_valid_token_round_trips(
            nonce in any::<u128>(), life in 1u64..=MAX_LIFETIME_MS, player in "[a-z0-9]{0,64}"
        ) {
            let mut t = token(nonce);
            t.expires_unix_ms = NOW + life;
            t.player = player;
            let b = t.sign(&key(4)).unwrap();
            prop_assert!(b.len() >= MIN_LEN && b.len() <= MAX_LEN);
            let got = verify(&b, &key(4).verifying_key(), NOW, &t.edge).unwrap();
            prop_assert_eq!(got, t);
        }
    }
}
