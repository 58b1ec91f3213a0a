//! Criterion benches of each stage of the edge's media path, one at a time:
//! game tick, render + convert + readback on the Vulkan device, the stamp reader, x264 encode of
//! one 720p frame (distinct frames of the running game, copied into the encoder's pooled buffer
//! inside the timed call), Opus encode of one tick of sound.
//!
//! `cargo bench -p edgeplay-benches` (or `cargo xtask bench criterion`). The end-to-end figures
//! with percentiles and a baseline come from `cargo xtask bench pipeline`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use edgeplay_game::game::{Game, GameConfig};
use edgeplay_game::stamp::{Stamp, read_luma};
use edgeplay_media::encode::{self, AudioEncoder, EncoderChoice, VideoConfig, VideoEncoder};
use edgeplay_media::gpu::Gpu;

const W: u32 = 1280;
const H: u32 = 720;

fn game_tick(c: &mut Criterion) {
    let mut game = Game::new(1, GameConfig { tick_hz: 60 }).expect("game");
    c.bench_function("game tick (60 Hz)", |b| {
        b.iter(|| {
            game.step();
            black_box(game.state_hash())
        });
    });
}

fn render_convert_readback(c: &mut Criterion) {
    let gpu = Gpu::new().expect("a Vulkan device (run `cargo xtask setup`)");
    let mut target = gpu.create_target(W, H).expect("render target");
    let mut game = Game::new(1, GameConfig { tick_hz: 60 }).expect("game");
    let mut out = vec![0u8; (W * H * 3 / 2) as usize];
    c.bench_function("render+readback 720p", |b| {
        b.iter(|| {
            game.step();
            let stamp = Stamp {
                tick: u32::try_from(game.tick()).unwrap_or(0),
                state_hash: game.state_hash(),
                ..Stamp::default()
            };
            black_box(
                target
                    .render_nv12(&game.scene(), &stamp, &mut out)
                    .expect("render"),
            )
        });
    });
    c.bench_function("stamp read 720p", |b| {
        b.iter(|| {
            black_box(read_luma(
                &out[..(W * H) as usize],
                W as usize,
                H as usize,
                W as usize,
            ))
        });
    });
}

/// Frames of the running game the x264 bench cycles through: two seconds at 60 fps.
const X264_FRAMES: usize = 120;

fn x264_encode(c: &mut Criterion) {
    let gpu = Gpu::new().expect("a Vulkan device (run `cargo xtask setup`)");
    let mut target = gpu.create_target(W, H).expect("render target");
    let mut game = Game::new(1, GameConfig { tick_hz: 60 }).expect("game");
    let frame_bytes = (W * H * 3 / 2) as usize;
    // Distinct pictures, as the live edge encodes: one identical frame again and again would
    // make every picture after the first a skip-only P-frame.
    let frames: Vec<Vec<u8>> = (0..X264_FRAMES)
        .map(|n| {
            game.step();
            let stamp = Stamp {
                frame: u32::try_from(n).unwrap_or(0),
                tick: u32::try_from(game.tick()).unwrap_or(0),
                state_hash: game.state_hash(),
                ..Stamp::default()
            };
            let mut frame = vec![0u8; frame_bytes];
            target
                .render_nv12(&game.scene(), &stamp, &mut frame)
                .expect("render");
            frame
        })
        .collect();
    // Forward then backward (0..=119, 118..=1, …): every step is one tick of motion, with no
    // jump from the last picture back to the first.
    let order: Vec<usize> = (0..X264_FRAMES).chain((1..X264_FRAMES - 1).rev()).collect();
    let kind = encode::probe(EncoderChoice::X264).expect("x264enc (run `cargo xtask setup`)");
    let mut enc = VideoEncoder::new(&VideoConfig {
        width: W,
        height: H,
        fps: 60,
        bitrate_kbps: 6000,
        encoder: kind,
        keyframe_interval: 0,
        threads: 2,
    })
    .expect("encoder");
    let mut n = 0usize;
    c.bench_function("x264 encode 720p frame (distinct frames)", |b| {
        b.iter(|| {
            let frame = &frames[order[n % order.len()]];
            n += 1;
            let pts = Duration::from_secs(1) / 60 * u32::try_from(n).unwrap_or(0);
            black_box(
                enc.encode(pts, false, |buf| buf.copy_from_slice(frame))
                    .expect("encode"),
            )
        });
    });
}

fn opus_encode(c: &mut Criterion) {
    let mut game = Game::new(1, GameConfig { tick_hz: 60 }).expect("game");
    let mut pcm = vec![0i16; game.audio_samples_per_tick()];
    let mut enc = AudioEncoder::new().expect("opusenc (run `cargo xtask setup`)");
    let mut n = 0u32;
    c.bench_function("opus encode one tick", |b| {
        b.iter(|| {
            game.step();
            game.render_audio(&mut pcm);
            n += 1;
            enc.push(Duration::from_secs(1) / 60 * n, &pcm)
                .expect("push");
            black_box(enc.pull().expect("pull"))
        });
    });
}

criterion_group! {
    name = stages;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(4));
    targets = game_tick, render_convert_readback, x264_encode, opus_encode
}
criterion_main!(stages);
