//! The C ABI from C: `examples/c/play.c` compiled with the system `cc` against
//! `libedgeplay_client.so` and the committed header, run against a live edge on loopback.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Edge, TempDir, output};

/// The folder holding the cdylib cargo built for this test (`target/<profile>/deps`).
fn cdylib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_owned();
    for dir in [deps.clone(), deps.parent().unwrap().to_owned()] {
        if dir.join("libedgeplay_client.so").exists() {
            return dir;
        }
    }
    panic!("libedgeplay_client.so is not next to {}", exe.display());
}

/// `play.c` built against the SDK.
fn compile(out: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = cdylib_dir();
    let exe = out.join("play");
    let status = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root.join("include"))
        .arg(root.join("examples/c/play.c"))
        .arg("-L")
        .arg(&lib)
        .arg("-ledgeplay_client")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&exe)
        .status()
        .expect("the system C compiler `cc` runs (apt-get install gcc)");
    assert!(
        status.success(),
        "play.c compiles against include/edgeplay.h"
    );
    exe
}

/// A command running `exe` with the SDK the test built.
fn play(exe: &Path) -> Command {
    let mut cmd = Command::new(exe);
    // cargo's LD_LIBRARY_PATH would win over the rpath and may name an older copy in target/.
    cmd.env("LD_LIBRARY_PATH", cdylib_dir());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_example_plays_checks_input_and_closes_against_a_live_edge() {
    let tmp = TempDir::new("edgeplay-capi");
    let exe = compile(&tmp.0);
    let edge = Edge::start();

    let mut cmd = play(&exe);
    cmd.args([
        &edge.addr.to_string(),
        &edge.fingerprint_hex,
        &edge.token,
        "60",
    ]);
    let out = output(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("play.c stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(out.status.success(), "play.c exits 0");
    assert!(stdout.contains("first frame"));
    assert!(stdout.contains("frames 60 in order"));
    assert!(stdout.contains("input 1 sent"));
    assert!(stdout.contains("input 1 applied at frame"));
    assert!(stdout.contains("bad input refused: unknown key `NoSuchKey`"));
    let stats = stdout
        .lines()
        .find(|l| l.starts_with("stats: decoded "))
        .expect("stats printed");
    let decoded: u64 = stats
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .expect("a decoded count");
    assert!(decoded >= 61, "{stats}");
    // The edge streams on while the example works: the last second's rate is not zero.
    let fps: f64 = stats
        .split_whitespace()
        .skip_while(|w| *w != "decoded_fps_1s")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("decoded_fps_1s");
    assert!(fps > 0.0, "{stats}");
    assert!(stdout.trim_end().ends_with("closed"));

    // A stale fingerprint: NULL from connect, the mismatch status and a message saying why.
    let mut wrong = edge.fingerprint_hex.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let mut cmd = play(&exe);
    cmd.args([
        &edge.addr.to_string(),
        &String::from_utf8(wrong).unwrap(),
        &edge.token,
    ]);
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("status -6"), "{stderr}");
    assert!(stderr.contains("pinned fingerprint"), "{stderr}");

    // A bad token: refused by the edge.
    let mut cmd = play(&exe);
    cmd.args([
        &edge.addr.to_string(),
        &edge.fingerprint_hex,
        "not-the-token",
    ]);
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("status -5"), "{stderr}");

    edge.stop().await;
}

/// The header is C++ too (`cpp_compat`): a C++ program links and gets a clear refusal.
#[test]
fn header_serves_cpp_and_refuses_a_malformed_fingerprint() {
    let tmp = TempDir::new("edgeplay-capi-cpp");
    let src = tmp.0.join("refuse.cpp");
    std::fs::write(
        &src,
        r#"#include "edgeplay.h"
#include <cstdio>
#include <cstring>
int main() {
    EpSession *s = ep_client_connect("127.0.0.1:9", "not-hex", "token", nullptr);
    if (s != nullptr || ep_last_status() != EP_STATUS_INVALID_ARGUMENT) return 1;
    if (std::strstr(ep_last_error(), "64 hex digits") == nullptr) return 2;
    EpFrame f{};
    ep_frame_release(&f);
    std::puts(ep_last_error());
    return ep_session_close(nullptr) == EP_STATUS_OK ? 0 : 3;
}
"#,
    )
    .unwrap();
    let lib = cdylib_dir();
    let exe = tmp.0.join("refuse");
    let status = Command::new("c++")
        .args(["-std=c++17", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("include"))
        .arg(&src)
        .arg("-L")
        .arg(&lib)
        .arg("-ledgeplay_client")
        .arg("-o")
        .arg(&exe)
        .status()
        .expect("the system C++ compiler `c++` runs (apt-get install g++)");
    assert!(
        status.success(),
        "a C++ program compiles against include/edgeplay.h"
    );
    let out = play(&exe).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("is not 64 hex digits"));
}
