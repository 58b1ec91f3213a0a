//! The game is a pure function of (seed, ordered input log): the same seed and log give the same
//! pictures bit for bit on the same device, and a snapshot restored mid-run continues exactly.

use std::path::Path;

use edgeplay_game::game::{Game, GameConfig};
use edgeplay_game::hash::StateHasher;
use edgeplay_game::stamp::Stamp;
use edgeplay_media::gpu::Gpu;
use edgeplay_media::render::RenderTarget;
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
