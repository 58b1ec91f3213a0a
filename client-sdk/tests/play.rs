//! `edgeplay-play` headless against a live edge: N frames dumped as pictures whose stamps read
//! back, a JSON line per frame whose state hashes match the game run on its own with the
//! scripted inputs, a summary; and one clear line and a failure exit for a stale fingerprint
//! or a missing display.

mod support;

use std::process::Command;

use edgeplay_game::game::{GameConfig, simulate};
use edgeplay_game::stamp::read_luma;
use edgeplay_protocol::input::{InputEvent, Key, ScriptedInput, format_script, parse_script};
use support::{Edge, FPS, SEED, TempDir, output};

const FRAMES: usize = 40;

fn play(edge: &Edge, fingerprint: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeplay-play"));
    cmd.args([
        "--edge",
        &edge.addr.to_string(),
        "--fingerprint",
        fingerprint,
    ])
    .env("EDGEPLAY_TOKEN", &edge.token)
    .env_remove("DISPLAY");
    cmd
}

/// Reads a binary PPM back as luma (BT.709 video range), the stamp reader's input.
fn ppm_luma(bytes: &[u8]) -> (Vec<u8>, usize, usize) {
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        fields.push(std::str::from_utf8(&bytes[start..at]).unwrap().to_owned());
    }
    assert_eq!(fields[0], "P6");
    let (w, h): (usize, usize) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    let rgb = &bytes[at + 1..];
    assert_eq!(rgb.len(), w * h * 3, "a whole picture");
    let luma = rgb
        .chunks(3)
        .map(|p| {
            let y = 16.0
                + (0.2126 * f64::from(p[0]) + 0.7152 * f64::from(p[1]) + 0.0722 * f64::from(p[2]))
                    * 219.0
                    / 255.0;
            y.round().clamp(0.0, 255.0) as u8
        })
        .collect();
    (luma, w, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_dumps_frames_and_stamps_that_match_the_game() {
    let tmp = TempDir::new("edgeplay-play");
    let dump = tmp.0.join("dump");
    let script_path = tmp.0.join("script.jsonl");
    let inputs = [
        (4, Key::ArrowUp, true),
        (8, Key::KeyD, true),
        (12, Key::KeyD, false),
    ];
    let script: Vec<ScriptedInput> = inputs
        .iter()
        .enumerate()
        .map(|(i, &(tick, code, down))| ScriptedInput {
            tick,
            seq: i as u64 + 1,
            event: InputEvent::Key { code, down },
        })
        .collect();
    std::fs::write(&script_path, format_script(&script)).unwrap();
    assert_eq!(parse_script(&format_script(&script)).unwrap(), script);

    let edge = Edge::start();
    let mut cmd = play(&edge, &edge.fingerprint_hex);
    cmd.args(["--frames", &FRAMES.to_string(), "--dump"])
        .arg(&dump)
        .arg("--input")
        .arg(&script_path);
    let out = output(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("edgeplay-play stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(out.status.success(), "edgeplay-play exits 0");
    assert!(stdout.contains(&format!("edgeplay-play: {FRAMES} frames")));
    assert!(stdout.contains(&format!("stamps {FRAMES} ok, 0 failed; 0 out of order")));
    assert!(stdout.contains("glass-to-glass ms (render start to decoded): p50 "));
    assert!(stdout.contains("inputs: 3 of 3 sent"));
    assert!(stdout.contains(&format!("dumped {FRAMES} frames")));

    // One JSON line per frame, in order, every stamp valid.
    let lines = std::fs::read_to_string(dump.join("stamps.jsonl")).unwrap();
    let stamps: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(stamps.len(), FRAMES);
    let num =
        |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    for pair in stamps.windows(2) {
        assert!(
            num(&pair[1], "frame") > num(&pair[0], "frame"),
            "frames in order"
        );
        assert!(
            num(&pair[1], "tick") > num(&pair[0], "tick"),
            "ticks in order"
        );
        assert!(num(&pair[1], "input_seq") >= num(&pair[0], "input_seq"));
    }
    for s in &stamps {
        assert_eq!(s["stamp_ok"], true);
        assert!(num(s, "g2g_us") < 10_000_000, "a plausible latency: {s}");
    }

    // Each picture on disk carries the stamp its line says.
    let ppms = std::fs::read_dir(&dump)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "ppm")
        })
        .count();
    assert_eq!(ppms, FRAMES);
    for s in [&stamps[0], &stamps[FRAMES / 2], &stamps[FRAMES - 1]] {
        let path = dump.join(format!("frame-{:06}.ppm", num(s, "frame")));
        let (luma, w, h) = ppm_luma(&std::fs::read(&path).unwrap());
        assert_eq!((w, h), (1280, 720));
        let stamp = read_luma(&luma, w, h, w).expect("the dumped picture's stamp passes its CRC");
        assert_eq!(u64::from(stamp.frame), num(s, "frame"));
        assert_eq!(u64::from(stamp.tick), num(s, "tick"));
        assert_eq!(
            format!("{:016x}", stamp.state_hash),
            s["state_hash"].as_str().unwrap()
        );
    }

    // The stamped states are the game's with the script's inputs, applied when the stamps say.
    let mut applied = Vec::new();
    for pair in stamps.windows(2) {
        for seq in num(&pair[0], "input_seq") + 1..=num(&pair[1], "input_seq") {
            applied.push(ScriptedInput {
                tick: num(&pair[1], "tick") - 1,
                seq,
                event: script[seq as usize - 1].event,
            });
        }
    }
    assert_eq!(
        num(&stamps[0], "input_seq"),
        0,
        "no input before the first frame"
    );
    assert_eq!(
        applied.len(),
        script.len(),
        "every scripted input applied once"
    );
    let last_tick = num(&stamps[FRAMES - 1], "tick");
    let hashes = simulate(SEED, GameConfig { tick_hz: FPS }, &applied, last_tick).unwrap();
    for s in &stamps {
        let tick = num(s, "tick") as usize;
        assert_eq!(
            s["state_hash"].as_str().unwrap(),
            format!("{:016x}", hashes[tick - 1]),
            "state at tick {tick}"
        );
    }

    // A stale fingerprint: one line naming the cause, a failure exit, nothing dumped.
    let mut wrong = edge.fingerprint_hex.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let stale = tmp.0.join("stale");
    let mut cmd = play(&edge, &String::from_utf8(wrong).unwrap());
    cmd.args(["--frames", "5", "--dump"]).arg(&stale);
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("edgeplay-play: error:") && stderr.contains("pinned fingerprint"),
        "{stderr}"
    );
    assert!(!stale.exists());

    // Window mode without a display says so before connecting.
    let out = output(play(&edge, &edge.fingerprint_hex)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("DISPLAY is not set") && stderr.contains("--frames N --dump DIR"));

    // A malformed fingerprint is refused before any network.
    let out = output(play(&edge, "xyz")).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not 64 hex digits"), "{stderr}");

    edge.stop().await;
}
