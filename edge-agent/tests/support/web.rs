//! The browser player in headless Chromium, shared by the tests that play through it: the
//! player built from `client-sdk/web`, and one of its end-to-end scripts run with node.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// The player's sources and scripts, `client-sdk/web`.
pub fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-sdk/web")
}

/// Chromium (`CHROMIUM`, else `/usr/bin/chromium`) and a freshly built player. `cargo xtask
/// test` installs both first; a bare `cargo test` without them fails loudly rather than
/// passing without having played anything.
pub fn chromium_and_built_player() -> (String, PathBuf) {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let web = web_dir();
    assert!(
        Path::new(&chromium).exists() && web.join("node_modules/playwright-core").exists(),
        "needs {chromium} and client-sdk/web/node_modules: run `cargo xtask setup`"
    );
    let build = Command::new("npm")
        .args(["run", "--silent", "build"])
        .current_dir(&web)
        .status()
        .expect("npm runs");
    assert!(build.success(), "npm run build failed in client-sdk/web");
    (chromium, web)
}

/// Runs the player's end-to-end `script` (under `client-sdk/web`) with node and `args`, with
/// Chromium at `chromium`, bounded to `timeout_s`; prints what it said under `label`. The
/// output, and its stdout as text.
pub fn run_e2e(
    chromium: &str,
    label: &str,
    timeout_s: u32,
    script: &str,
    args: &[&OsStr],
) -> (Output, String) {
    let started = Instant::now();
    let out = Command::new("timeout")
        .args([&timeout_s.to_string(), "node", script])
        .args(args)
        .env("CHROMIUM", chromium)
        .current_dir(web_dir())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "{label} ({:.1} s): {stdout}{}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, stdout)
}
