//! `edgeplay-play`'s window mode on a virtual X server (Xvfb): the window shows live frames
//! (their stamps read back from a screen capture with ffmpeg's x11grab), and keys and mouse
//! pressed with xdotool (XTEST, as a person's keyboard would) reach the edge and show up as
//! applied inputs in the stamps of the frames the window then shows.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgeplay_game::stamp::{Stamp, read_luma};
use support::{Edge, output};

/// A virtual X server on a display it picks itself; killed on drop.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start() -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1280x720x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb runs: install xvfb (cargo xtask setup does)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let n: u32 = line.trim().parse().expect("Xvfb prints its display number");
        Xvfb {
            child,
            display: format!(":{n}"),
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stamp the screen shows now (the window sits at the origin: there is no window manager).
async fn screen_stamp(display: &str) -> Option<Stamp> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-loglevel",
        "error",
        "-f",
        "x11grab",
        "-video_size",
        "1280x720",
        "-i",
    ])
    .arg(format!("{display}+0,0"))
    .args(["-frames:v", "1", "-pix_fmt", "gray", "-f", "rawvideo", "-"]);
    let out = output(cmd).await;
    assert!(out.status.success(), "x11grab captures the screen");
    read_luma(&out.stdout, 1280, 720, 1280).ok()
}

/// Polls the screen until `want` holds for the stamp shown, for at most 60 s.
async fn wait_for(display: &str, what: &str, want: impl Fn(&Stamp) -> bool) -> Stamp {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    loop {
        if let Some(s) = screen_stamp(display).await {
            if want(&s) {
                return s;
            }
            last = Some(s);
        }
        assert!(
            Instant::now() < deadline,
            "the window never showed {what}; last stamp seen: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn xdotool(display: &str, args: &[&str]) {
    let mut cmd = Command::new("xdotool");
    cmd.args(args).env("DISPLAY", display);
    let out = output(cmd).await;
    assert!(
        out.status.success(),
        "xdotool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_shows_live_frames_and_sends_keyboard_and_mouse() {
    let x = Xvfb::start();
    let edge = Edge::start();
    let mut player = Command::new(env!("CARGO_BIN_EXE_edgeplay-play"))
        .args(["--edge", &edge.addr.to_string()])
        .env("EDGEPLAY_FINGERPRINT", &edge.fingerprint_hex)
        .env("EDGEPLAY_TOKEN", &edge.token)
        .env("DISPLAY", &x.display)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Live frames: the shown frame number moves on.
    let first = wait_for(&x.display, "a frame", |_| true).await;
    let later = wait_for(&x.display, "a later frame", |s| s.frame > first.frame + 10).await;
    assert_eq!(later.input_seq, 0, "no input sent yet");
    // The title reports the rate and latency it measures.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut cmd = Command::new("xdotool");
        cmd.args(["search", "--name", "fps, glass-to-glass [0-9.]+ ms"])
            .env("DISPLAY", &x.display);
        if output(cmd).await.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the title never showed fps and latency"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A key press and release through the X server: inputs 1 and 2.
    xdotool(
        &x.display,
        &[
            "search",
            "--sync",
            "--name",
            "edgeplay-play",
            "windowfocus",
            "--sync",
        ],
    )
    .await;
    xdotool(&x.display, &["keydown", "Up"]).await;
    let pressed = wait_for(&x.display, "the key press applied", |s| s.input_seq >= 1).await;
    xdotool(&x.display, &["keyup", "Up"]).await;
    let released = wait_for(&x.display, "the key release applied", |s| s.input_seq >= 2).await;
    assert!(released.tick > pressed.tick);

    // Mouse motion (an input per motion seen), then a button held and let go.
    xdotool(&x.display, &["mousemove", "200", "200"]).await;
    let moved = wait_for(&x.display, "the pointer motion applied", |s| {
        s.input_seq >= 3
    })
    .await;
    xdotool(&x.display, &["mousedown", "1"]).await;
    let down = wait_for(&x.display, "the button press applied", |s| {
        s.input_seq > moved.input_seq
    })
    .await;
    xdotool(&x.display, &["mouseup", "1"]).await;
    let up = wait_for(&x.display, "the button release applied", |s| {
        s.input_seq > down.input_seq
    })
    .await;
    assert!(up.frame > released.frame);

    assert!(
        player.try_wait().unwrap().is_none(),
        "the player still runs"
    );
    let _ = player.kill();
    let out = player.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    edge.stop().await;
}
