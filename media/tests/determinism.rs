//! The game is a pure function of (seed, ordered input log): the same seed and log give the same
//! pictures bit for bit on the same device, and a snapshot restored mid-run continues exactly.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use edgeplay_game::game::{Game, GameConfig};
use edgeplay_game::hash::StateHasher;
use edgeplay_game::stamp::Stamp;
use edgeplay_media::gpu::Gpu;
use edgeplay_media::render::{Nv12Frame, RenderTarget};
use edgeplay_protocol::input::{ScriptedInput, parse_script};

const W: u32 = 1280;
const H: u32 = 720;

fn script() -> Vec<ScriptedInput> {
    // The edge's demo script (`edge-agent encode --input-script`).
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../edge-agent/demo/input.jsonl");
    parse_script(&std::fs::read_to_string(path).expect("demo script")).expect("parses")
}

/// A target of W x H on a fresh device (it keeps the device alive), the demo script, and the
/// 60 Hz game both tests play.
fn setup() -> (RenderTarget, Vec<ScriptedInput>, GameConfig) {
    let gpu = Gpu::new().expect("a Vulkan device");
    let target = gpu.create_target(W, H).expect("target");
    (target, script(), GameConfig { tick_hz: 60 })
}

/// Plays `ticks` ticks from the game's current tick, rendering each; returns a hash per frame.
fn play(
    game: &mut Game,
    target: &mut RenderTarget,
    script: &[ScriptedInput],
    ticks: u64,
) -> Vec<u64> {
    let mut nv12 = vec![0u8; (W * H * 3 / 2) as usize];
    let mut hashes = Vec::new();
    for _ in 0..ticks {
        let now = game.tick();
        for input in script.iter().filter(|i| i.tick == now) {
            game.apply(input.seq, &input.event)
                .expect("scripted input applies");
        }
        game.step();
        // Render time fixed to the tick: everything in the picture comes from the game.
        let stamp = Stamp {
            frame: u32::try_from(game.tick()).expect("tick fits"),
            tick: u32::try_from(game.tick()).expect("tick fits"),
            render_time_us: game.tick(),
            input_seq: u32::try_from(game.last_input_seq()).expect("seq fits"),
            state_hash: game.state_hash(),
        };
        target
            .render_nv12(&game.scene(), &stamp, &mut nv12)
            .expect("render");
        let mut h = StateHasher::new();
        h.write(&nv12);
        hashes.push(h.finish());
    }
    hashes
}

/// A new game of `seed` played for `ticks` ticks ([`play`]): the game and a hash per frame.
fn play_new(
    seed: u64,
    cfg: GameConfig,
    target: &mut RenderTarget,
    script: &[ScriptedInput],
    ticks: u64,
) -> (Game, Vec<u64>) {
    let mut game = Game::new(seed, cfg).expect("game");
    let hashes = play(&mut game, target, script, ticks);
    (game, hashes)
}

#[test]
fn same_seed_and_log_give_the_same_frames_bit_for_bit() {
    let (mut target, script, cfg) = setup();

    let (a, first) = play_new(5, cfg, &mut target, &script, 90);
    let (b, second) = play_new(5, cfg, &mut target, &script, 90);
    assert_eq!(
        first, second,
        "two runs of the same seed and log rendered differently"
    );
    assert_eq!(a.state_hash(), b.state_hash());

    // Pictures change as the game moves: a frozen renderer would pass the check above.
    let distinct: std::collections::HashSet<_> = first.iter().collect();
    assert!(
        distinct.len() > 80,
        "only {} distinct frames of 90",
        distinct.len()
    );

    // A different seed is a different game.
    let (_, other) = play_new(6, cfg, &mut target, &script, 5);
    assert_ne!(other, first[..5].to_vec());
}

#[test]
fn a_restored_snapshot_renders_exactly_what_the_uninterrupted_run_does() {
    let (mut target, script, cfg) = setup();

    let (whole, all) = play_new(11, cfg, &mut target, &script, 120);

    let (head, _) = play_new(11, cfg, &mut target, &script, 60);
    let bytes = head.snapshot();
    drop(head);
    let mut resumed = Game::restore(&bytes).expect("restore");
    assert_eq!(resumed.tick(), 60);
    let tail = play(&mut resumed, &mut target, &script, 60);
    assert_eq!(tail, all[60..].to_vec(), "the restored game diverged");
    assert_eq!(resumed.state_hash(), whole.state_hash());
}

/// Frames lent in place (`render_frame`) are the pictures the copying `render_nv12` draws,
/// whichever slots they land in and however long the encoder holds them: each slot redraws what
/// changed since its own last picture, and a held frame is never drawn over.
#[test]
fn frames_read_in_place_match_the_copied_ones_while_held() {
    let gpu = Gpu::new().expect("a Vulkan device");
    let (mut lent, mut copied) = (
        gpu.create_target(W, H).expect("target"),
        gpu.create_target(W, H).expect("target"),
    );
    let (script, cfg) = (script(), GameConfig { tick_hz: 60 });
    let mut game = Game::new(3, cfg).expect("game");
    let mut held: VecDeque<(Nv12Frame, Vec<u8>)> = VecDeque::new();
    let mut expected = vec![0u8; (W * H * 3 / 2) as usize];
    let (mut in_place, mut fell_back) = (0, 0);
    for n in 0..150u64 {
        let now = game.tick();
        for input in script.iter().filter(|i| i.tick == now) {
            game.apply(input.seq, &input.event).expect("applies");
        }
        game.step();
        let stamp = Stamp {
            frame: u32::try_from(n).expect("fits"),
            tick: u32::try_from(game.tick()).expect("fits"),
            render_time_us: game.tick(),
            input_seq: u32::try_from(game.last_input_seq()).expect("fits"),
            state_hash: game.state_hash(),
        };
        copied
            .render_nv12(&game.scene(), &stamp, &mut expected)
            .expect("copied render");
        // Hold 0 to 5 frames, in a pattern that moves every slot's last picture around.
        const HOLD: [usize; 17] = [1, 4, 4, 4, 4, 4, 2, 0, 3, 3, 5, 5, 5, 5, 5, 1, 0];
        let hold = HOLD[usize::try_from(n).expect("small") % HOLD.len()];
        match lent.render_frame(&game.scene(), &stamp).expect("render") {
            Some((frame, times)) => {
                in_place += 1;
                assert_eq!(times.readback, Duration::ZERO);
                assert!(frame.as_ref() == expected.as_slice(), "frame {n} differs");
                held.push_back((frame, expected.clone()));
            }
            None => {
                fell_back += 1;
                assert!(
                    held.len() >= 4,
                    "no slot free with {} frames held",
                    held.len()
                );
                let mut out = vec![0u8; expected.len()];
                lent.render_nv12(&game.scene(), &stamp, &mut out)
                    .expect("copy");
                assert!(out == expected, "frame {n} (copied) differs");
            }
        }
        while held.len() > hold {
            let (frame, was) = held.pop_front().expect("held");
            assert!(
                frame.as_ref() == was.as_slice(),
                "a held frame was drawn over"
            );
        }
    }
    println!("{in_place} frames read in place, {fell_back} copied (every slot lent out)");
    assert!(
        in_place > 60 && fell_back > 30,
        "{in_place} in place, {fell_back} copied"
    );
}
