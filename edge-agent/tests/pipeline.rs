//! The `edge-agent encode` command end to end: real Vulkan (lavapipe here), real GStreamer.
//! Each output is decoded again and every frame's stamp is read back and checked against a run
//! of the game without rendering.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edgeplay_decode::{decode_annexb_file, decode_annexb_file_scaled};
use edgeplay_game::game::{GameConfig, simulate};
use edgeplay_game::stamp::read_luma;
use edgeplay_protocol::input::parse_script;

mod support;

use support::media::{ffprobe, ffprobe_frames_clean};

fn edge_agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edge-agent"));
    c.env("RUST_LOG", "warn");
    c
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pipeline-tests");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

fn demo_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/input.jsonl")
}

/// `edge-agent encode ARGS [--input-script SCRIPT] --out OUT`, which must succeed.
fn encode_ok(args: &[&str], script: Option<&Path>, out: &Path) -> Output {
    let mut cmd = edge_agent();
    cmd.arg("encode").args(args);
    if let Some(script) = script {
        cmd.arg("--input-script").arg(script);
    }
    run_ok(cmd.arg("--out").arg(out))
}

/// `edge-agent encode` of the demo script at 720p60, flat out and without sound, for `frames`
/// frames (with the `extra` flags) into `out`, which must succeed.
fn encode_demo_720p60(frames: &str, extra: &[&str], out: &Path) -> Output {
    let mut args = vec![
        "--resolution",
        "1280x720",
        "--fps",
        "60",
        "--frames",
        frames,
        "--pace",
        "max",
        "--no-audio",
    ];
    args.extend_from_slice(extra);
    encode_ok(&args, Some(&demo_script()), out)
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("edge-agent runs");
    assert!(
        out.status.success(),
        "edge-agent failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

#[test]
fn encode_600_frames_every_stamp_matches_the_game_without_rendering() {
    let out = scratch("full.h264");
    let printed = encode_demo_720p60("600", &[], &out);
    let stdout = String::from_utf8_lossy(&printed.stdout);
    for stage in ["tick", "render", "readback", "encode", "total"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(stage)),
            "latency table lacks {stage}:\n{stdout}"
        );
    }
    assert!(stdout.contains("p99 ms"), "{stdout}");

    assert_eq!(ffprobe_frames_clean(&out), 600);

    let script_text = std::fs::read_to_string(demo_script()).expect("demo script");
    let script = parse_script(&script_text).expect("demo script parses");
    let expected = simulate(1, GameConfig { tick_hz: 60 }, &script, 600).expect("simulate");

    let frames = decode_annexb_file(&out).expect("decode");
    assert_eq!(frames.len(), 600);
    let mut last_seq = 0;
    for (n, f) in frames.iter().enumerate() {
        let stamp = read_luma(
            &f.luma(),
            f.width as usize,
            f.height as usize,
            f.width as usize,
        )
        .unwrap_or_else(|e| panic!("frame {n}: stamp unreadable: {e}"));
        assert_eq!(stamp.frame as usize, n, "frames out of order or missing");
        assert_eq!(stamp.tick as usize, n + 1, "frame {n} shows the wrong tick");
        assert_eq!(
            stamp.state_hash, expected[n],
            "frame {n}: state hash differs from the game run without rendering"
        );
        assert!(stamp.input_seq >= last_seq, "input sequence went backwards");
        last_seq = stamp.input_seq;
    }
    assert_eq!(
        u64::from(last_seq),
        script.iter().filter(|i| i.tick < 600).count() as u64,
        "every scripted input due before tick 600 is in the picture"
    );
}

#[test]
fn stamps_survive_500_kbits_and_a_half_scale_downscale() {
    let out = scratch("low.h264");
    encode_demo_720p60("180", &["--bitrate-kbps", "500"], &out);
    let frames = decode_annexb_file_scaled(&out, (640, 360)).expect("decode at 0.5x");
    assert_eq!(frames.len(), 180);
    for (n, f) in frames.iter().enumerate() {
        assert_eq!((f.width, f.height), (640, 360));
        let stamp = read_luma(&f.luma(), 640, 360, 640)
            .unwrap_or_else(|e| panic!("frame {n} at 500 kbit/s, 0.5x: {e}"));
        assert_eq!(stamp.frame as usize, n);
    }
}

#[test]
fn mkv_carries_video_and_opus_audio() {
    let out = scratch("av.mkv");
    encode_ok(
        &["--fps", "30", "--frames", "60", "--pace", "max"],
        None,
        &out,
    );
    let (codecs, _) = ffprobe(
        &["-show_entries", "stream=codec_name", "-of", "csv=p=0"],
        &out,
    );
    assert!(codecs.contains("h264"), "{codecs}");
    assert!(codecs.contains("opus"), "{codecs}");
}

#[test]
fn several_sessions_side_by_side_report_each_and_the_total() {
    let out = scratch("multi.h264");
    let printed = encode_ok(
        &[
            "--sessions",
            "2",
            "--frames",
            "45",
            "--fps",
            "30",
            "--pace",
            "max",
            "--no-audio",
        ],
        None,
        &out,
    );
    let stdout = String::from_utf8_lossy(&printed.stdout);
    assert!(
        stdout.contains("session 0:") && stdout.contains("session 1:"),
        "{stdout}"
    );
    assert!(stdout.contains("frames/s sustained"), "{stdout}");
    for i in 0..2 {
        assert_eq!(
            ffprobe_frames_clean(&scratch(&format!("multi-s{i}.h264"))),
            45
        );
    }
}

/// Runs `cmd`, which bad input must end with one clear line naming `needle` and a non-zero
/// exit, never a panic; what it printed.
fn assert_clean_failure(cmd: &mut Command, needle: &str) -> Output {
    let out = cmd.output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("edge-agent: error:"))
        .unwrap_or_else(|| panic!("no error line in: {stderr}"));
    assert!(
        line.contains(needle),
        "error line `{line}` lacks `{needle}`"
    );
    out
}

#[test]
fn malformed_input_script_is_one_clear_line() {
    let bad = scratch("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"tick\": 1, \"seq\": 1, \"event\": {\"type\": \"key\", \"code\": \"ArrowUp\", \"down\": true}}\n{\"tick\": 2, \"seq\": 3}\n",
    )
    .expect("write script");
    assert_clean_failure(
        edge_agent()
            .args(["encode", "--frames", "5", "--input-script"])
            .arg(&bad),
        "line 2",
    );
}

#[test]
fn unsupported_resolution_is_one_clear_line() {
    assert_clean_failure(
        edge_agent().args(["encode", "--resolution", "1000x700", "--frames", "5"]),
        "1280x720",
    );
}

#[test]
fn no_vulkan_device_is_one_clear_line() {
    assert_clean_failure(
        edge_agent()
            .args(["encode", "--frames", "5", "--no-audio"])
            .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
            .env("VK_DRIVER_FILES", "/nonexistent/icd.json"),
        "Vulkan",
    );
}

#[test]
fn missing_gstreamer_plugin_names_the_package() {
    // A plugin directory with every system plugin but x264.
    let system = Path::new("/usr/lib/x86_64-linux-gnu/gstreamer-1.0");
    let dir = scratch("plugins-without-x264");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    for entry in std::fs::read_dir(system).expect("system GStreamer plugins") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n != "libgstx264.so") && path.is_file() {
            std::os::unix::fs::symlink(&path, dir.join(path.file_name().expect("name")))
                .expect("symlink");
        }
    }
    let out = assert_clean_failure(
        edge_agent()
            .args(["encode", "--frames", "5", "--encoder", "x264"])
            .env("GST_PLUGIN_SYSTEM_PATH_1_0", &dir)
            .env("GST_PLUGIN_PATH_1_0", &dir)
            .env("GST_REGISTRY_1_0", dir.join("registry.bin")),
        "x264enc",
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("gstreamer1.0-plugins-ugly"));
}
