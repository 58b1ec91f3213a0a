//! Join token decoding and verification on hostile bytes: nothing may panic, and whatever
//! verifies must re-encode to exactly the same bytes. The first byte picks a mode:
//! - 0: the bytes as they are (shape checks: length, magic, version, player length, UTF-8);
//! - 1: a real signed token with bytes overwritten (near-valid tokens, which random bytes
//!   almost never reach); each one must be refused unless the edit left it unchanged.
#![no_main]

use edgeplay_protocol::token::{self, EdgeId, JoinToken, ReplayGuard, SessionId, SigningKey};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000_000;

fn exercise(bytes: &[u8], key: &SigningKey, edge: &EdgeId) -> bool {
    let _ = token::decode_unverified(bytes);
    match token::verify(bytes, &key.verifying_key(), NOW, edge) {
        Ok(t) => {
            assert_eq!(t.sign(key).expect("verified token re-signs"), bytes);
            let mut guard = ReplayGuard::new(4);
            guard.admit(&t, NOW).expect("fresh guard admits");
            assert!(guard.admit(&t, NOW).is_err());
            true
        }
        Err(_) => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = SigningKey::from_bytes(&[5; 32]);
    let edge = EdgeId([2; 32]);
    if mode % 2 == 0 {
        exercise(rest, &key, &edge);
        return;
    }
    let t = JoinToken {
        session: SessionId([1; 16]),
        edge,
        player: "player".into(),
        nonce: 42,
        issued_unix_ms: NOW,
        expires_unix_ms: NOW + 30_000,
    };
    let good = t.sign(&key).expect("valid token signs");
    let mut bad = good.clone();
    for e in rest.chunks_exact(2) {
        let at = usize::from(e[0]) % bad.len();
        bad[at] = e[1];
    }
    if exercise(&bad, &key, &edge) {
        assert_eq!(bad, good, "an edited token verified");
    }
});
