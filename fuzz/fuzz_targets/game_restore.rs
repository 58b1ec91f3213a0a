//! `Game::restore` on hostile snapshots; whatever restores must step, render and snapshot without
//! panicking, and its own snapshot must restore to the same state. The first byte picks a mode:
//! - 0: the bytes as they are (envelope checks: magic, version, length, checksum);
//! - 1: the bytes wrapped in a valid envelope (the field range checks);
//! - 2: a real game's snapshot with bytes overwritten and the checksum fixed up (near-valid
//!   states, which random bytes almost never reach).
#![no_main]

use edgeplay_game::game::{Game, GameConfig};
use edgeplay_game::hash::StateHasher;
use libfuzzer_sys::fuzz_target;

/// Header (magic, version, length) and trailing checksum around a state body.
fn envelope(body: &[u8]) -> Vec<u8> {
    let mut s = b"EPGS".to_vec();
    s.extend_from_slice(&1u16.to_le_bytes());
    s.extend_from_slice(&((body.len() + 18) as u32).to_le_bytes());
    s.extend_from_slice(body);
    fix_checksum(&mut s, false);
    s
}

/// Recomputes the trailing FNV-1a 64 (appending it, or overwriting the last 8 bytes).
fn fix_checksum(s: &mut Vec<u8>, overwrite: bool) {
    if overwrite {
        s.truncate(s.len().saturating_sub(8));
    }
    let mut h = StateHasher::new();
    h.write(s);
    s.extend_from_slice(&h.finish().to_le_bytes());
}

fn exercise(bytes: &[u8]) {
    if let Ok(mut game) = Game::restore(bytes) {
        let snap = game.snapshot();
        let again = Game::restore(&snap).expect("own snapshot restores");
        assert_eq!(again.state_hash(), game.state_hash());
        for _ in 0..64 {
            game.step();
        }
        let _ = game.scene();
        let mut audio = vec![0i16; game.audio_samples_per_tick()];
        game.render_audio(&mut audio);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => exercise(rest),
        1 => exercise(&envelope(rest)),
        _ => {
            let Some((head, edits)) = rest.split_first_chunk::<3>() else {
                return;
            };
            let cfg = GameConfig {
                tick_hz: if head[0] & 1 == 0 { 30 } else { 60 },
            };
            let Ok(mut game) = Game::new(u64::from(head[1]), cfg) else {
                return;
            };
            for _ in 0..head[2] {
                game.step();
            }
            let mut snap = game.snapshot();
            let body = 10..snap.len() - 8;
            for e in edits.chunks_exact(2) {
                let at = body.start + usize::from(e[0]) % body.len();
                snap[at] = e[1];
            }
            fix_checksum(&mut snap, true);
            exercise(&snap);
        }
    }
});
