//! The stamp survives the real media path: x264 at 500 kbit/s 720p, decoded and read back at
//! full size and after scaling. Spawns `ffmpeg` (with libx264), so it is opt-in:
//! `cargo test -p edgeplay-game -- --ignored`.

use std::path::Path;
use std::process::Command;

use edgeplay_game::game::{ARENA_H, ARENA_W, Game, GameConfig, Scene};
use edgeplay_game::stamp::{Stamp, draw_luma, read_luma};
use edgeplay_protocol::input::{InputEvent, Key};

const W: usize = 1280;
const H: usize = 720;
const FRAMES: usize = 120;

/// A crude luma rendering of the scene: busy enough to make the encoder work.
fn render(scene: &Scene, frame: usize, y: &mut [u8]) {
    for (i, p) in y.iter_mut().enumerate() {
        let (px, py) = (i % W, i / W);
        *p = (40 + ((px / 8 + py / 8 + frame) % 7) * 12) as u8;
    }
    let to_px = |gx: i32, gy: i32, gr: i32| {
        let s = W as f64 / f64::from(ARENA_W);
        (
            f64::from(gx) * s,
            f64::from(gy) * s * (H as f64 / W as f64) * (f64::from(ARENA_W) / f64::from(ARENA_H)),
            f64::from(gr) * s,
        )
    };
    let mut disc = |cx: f64, cy: f64, r: f64, v: u8| {
        let (x0, x1) = ((cx - r).max(0.0) as usize, ((cx + r) as usize).min(W - 1));
        let (y0, y1) = ((cy - r).max(0.0) as usize, ((cy + r) as usize).min(H - 1));
        for yy in y0..=y1 {
            for xx in x0..=x1 {
                if (xx as f64 - cx).powi(2) + (yy as f64 - cy).powi(2) <= r * r {
                    y[yy * W + xx] = v;
                }
            }
        }
    };
    for b in &scene.bodies[..scene.body_count] {
        let (x, yy, r) = to_px(b.x, b.y, b.r);
        disc(x, yy, r, 90 + b.colour * 20);
    }
    let (x, yy, r) = to_px(scene.ship.x, scene.ship.y, scene.ship.r);
    disc(x, yy, r, 250);
}

fn ffmpeg(args: &[&str]) -> bool {
    match Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
    {
        Ok(s) => s.success(),
        Err(_) => false,
    }
}

fn read_all(path: &Path, w: usize, h: usize, want: &[Stamp], label: &str) {
    let data = std::fs::read(path).expect("decoded frames");
    assert_eq!(data.len(), w * h * want.len(), "{label}: frame count");
    let mut ok = 0;
    for (i, frame) in data.chunks_exact(w * h).enumerate() {
        match read_luma(frame, w, h, w) {
            Ok(s) => {
                assert_eq!(s, want[i], "{label}: frame {i} read a wrong stamp");
                ok += 1;
            }
            Err(e) => eprintln!("{label}: frame {i}: {e}"),
        }
    }
    eprintln!("{label}: {ok}/{} frames read", want.len());
    assert_eq!(ok, want.len(), "{label}: every frame must read");
}

#[test]
#[ignore = "spawns ffmpeg with libx264; run with --ignored"]
fn stamp_survives_x264_at_500_kbit_720p() {
    let dir = std::env::temp_dir().join(format!("edgeplay-stamp-x264-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let raw = dir.join("in.yuv");
    let mut yuv = Vec::with_capacity(W * H * 3 / 2 * FRAMES);
    let mut game = Game::new(5, GameConfig { tick_hz: 60 }).expect("game");
    game.apply(
        1,
        &InputEvent::Key {
            code: Key::ArrowUp,
            down: true,
        },
    )
    .expect("apply");
    game.apply(
        2,
        &InputEvent::Key {
            code: Key::ArrowLeft,
            down: true,
        },
    )
    .expect("apply");
    let mut stamps = Vec::new();
    let mut y = vec![0u8; W * H];
    for frame in 0..FRAMES {
        game.step();
        render(&game.scene(), frame, &mut y);
        let stamp = Stamp {
            frame: frame as u32,
            tick: game.tick() as u32,
            render_time_us: 1_700_000_000_000_000 + frame as u64 * 16_667,
            input_seq: game.last_input_seq() as u32,
            state_hash: game.state_hash(),
        };
        draw_luma(&stamp, &mut y, W, H, W).expect("draw");
        stamps.push(stamp);
        yuv.extend_from_slice(&y);
        yuv.resize(yuv.len() + W * H / 2, 128);
    }
    std::fs::write(&raw, &yuv).expect("write raw");
    let h264 = dir.join("out.h264");
    let size = format!("{W}x{H}");
    let (raw_s, h264_s) = (
        raw.to_string_lossy().into_owned(),
        h264.to_string_lossy().into_owned(),
    );
    if !ffmpeg(&[
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuv420p",
        "-s",
        &size,
        "-r",
        "60",
        "-i",
        &raw_s,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-b:v",
        "500k",
        "-maxrate",
        "500k",
        "-bufsize",
        "100k",
        "-g",
        "600",
        &h264_s,
    ]) {
        panic!("ffmpeg with libx264 is needed for this test");
    }
    let kbits = std::fs::metadata(&h264).expect("h264").len() * 8 / 1000 / (FRAMES as u64 / 60);
    eprintln!("encoded at ~{kbits} kbit/s");
    for (w, h) in [
        (W, H),
        (640, 360),
        (854, 480),
        (1920, 1080),
        (426, 240),
        (320, 180),
    ] {
        let out = dir.join(format!("dec{w}.gray"));
        let vf = format!("scale={w}:{h}:flags=bilinear");
        assert!(ffmpeg(&[
            "-i",
            &h264_s,
            "-vf",
            &vf,
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            &out.to_string_lossy()
        ]));
        read_all(&out, w, h, &stamps, &format!("{w}x{h}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
