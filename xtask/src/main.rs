//! `cargo xtask setup | demo | test | bench`: the project's two commands and their helpers.
//!
//! `setup` installs what a fresh Debian 12 machine lacks (Debian packages after one
//! `apt-get update`, cargo-fuzz), and does nothing when everything is present. `demo` and `test`
//! call it first, so a fresh clone needs no other step. Only the standard library is used here so
//! that the xtask itself builds in seconds on a cold machine.

mod demo;

use std::env;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// Debian packages the build, the tests and the demo need, with what each is for.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("pkg-config", "finds the GStreamer libraries at build time"),
    (
        "libgstreamer1.0-dev",
        "GStreamer core headers for the gstreamer crate",
    ),
    (
        "libgstreamer-plugins-base1.0-dev",
        "GStreamer app/video library headers",
    ),
    (
        "libgstreamer-plugins-bad1.0-dev",
        "GStreamer WebRTC library headers, for the webrtcbin baseline of the benches",
    ),
    (
        "gstreamer1.0-plugins-base",
        "appsrc, appsink, videoconvert, opusenc",
    ),
    ("gstreamer1.0-plugins-good", "matroskamux, mp4mux"),
    ("gstreamer1.0-plugins-bad", "h264parse, nvcodec (NVENC)"),
    ("gstreamer1.0-plugins-ugly", "x264enc"),
    (
        "gstreamer1.0-libav",
        "avdec_h264, the software H.264 decoder",
    ),
    (
        "gstreamer1.0-nice",
        "ICE for webrtcbin, the baseline sender of `bench webrtc`",
    ),
    (
        "gstreamer1.0-tools",
        "gst-inspect-1.0, used to check the plugins",
    ),
    ("libvulkan1", "the Vulkan loader"),
    (
        "mesa-vulkan-drivers",
        "lavapipe, the software Vulkan device",
    ),
    (
        "glslang-tools",
        "glslangValidator compiles the shaders to SPIR-V",
    ),
    ("ffmpeg", "ffprobe checks the encoded streams in the tests"),
    (
        "chromium",
        "headless browser for the web player's end-to-end test",
    ),
    (
        "xvfb",
        "a virtual X server for edgeplay-play's window-mode test and each hosted app's display",
    ),
    (
        "bubblewrap",
        "bwrap, the namespaces of each hosted app's sandbox",
    ),
    (
        "pulseaudio",
        "each hosted app's own sound server (a null sink the edge records)",
    ),
    (
        "pulseaudio-utils",
        "pactl, which makes the null sink the sandbox's default",
    ),
    (
        "mesa-utils",
        "glxgears, a real OpenGL app the hosting tests run",
    ),
    (
        "vulkan-tools",
        "vkcube, a real Vulkan app the hosting tests run",
    ),
    (
        "xdotool",
        "presses keys and moves the mouse in edgeplay-play's window-mode test",
    ),
    (
        "libx11-6",
        "Xlib, loaded at run time by edgeplay-play's window (minifb)",
    ),
    (
        "libxcursor1",
        "Xcursor, loaded at run time by edgeplay-play's window (minifb)",
    ),
    (
        "etcd-server",
        "the broker's shared store; its tests start a real etcd",
    ),
    (
        "protobuf-compiler",
        "protoc, which etcd-client's build runs on the etcd protos",
    ),
    (
        "libprotobuf-dev",
        "google/protobuf/*.proto, which the etcd protos import (protobuf-compiler only recommends it)",
    ),
];

/// Debian packages only the benches need: `cargo xtask bench` installs them, the test set-up
/// does not.
const BENCH_PACKAGES: &[(&str, &str)] = &[(
    "valgrind",
    "callgrind counts the instructions of the CPU-bound stages in `bench pipeline`",
)];

/// GStreamer elements the media path needs, with the package that ships each.
const GST_ELEMENTS: &[(&str, &str)] = &[
    ("appsrc", "gstreamer1.0-plugins-base"),
    ("appsink", "gstreamer1.0-plugins-base"),
    ("x264enc", "gstreamer1.0-plugins-ugly"),
    ("h264parse", "gstreamer1.0-plugins-bad"),
    ("opusenc", "gstreamer1.0-plugins-base"),
    ("matroskamux", "gstreamer1.0-plugins-good"),
    ("avdec_h264", "gstreamer1.0-libav"),
];

/// Seconds each fuzz target runs in `cargo xtask test`.
const FUZZ_SECONDS: u32 = 20;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("test") => test(&args[1..]),
        Some("demo") => demo::demo(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => setup().and_then(|()| fuzz(parse_seconds(&args[1..])?)),
        Some("-h" | "--help" | "help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown xtask `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "\
usage: cargo xtask <command>

  setup            install what this machine lacks (Debian packages, cargo-fuzz); needs root
  demo [--check]   set up, build, start a broker and an edge in each of two regions, and print
                   the URL of a playable session in the browser player (Enter stops them);
                   --check plays once in headless Chromium and edgeplay-play, then stops
  test             set up, then run fmt, clippy, every test and a short fuzz run of each target
  bench [NAME]     set up, then run a bench harness: `pipeline` (default), `placement`, `quic`, `webrtc`, `broker`, `soak`, `hosted`, or `criterion`
  fuzz [SECONDS]   run every fuzz target for SECONDS each (default 20)
";

type Result<T = (), E = String> = std::result::Result<T, E>;

fn root() -> PathBuf {
    // xtask/ sits in the workspace root. `cargo run` sets CARGO_MANIFEST_DIR for the process;
    // it is read at run time because one target dir may hold an xtask built from another clone.
    let manifest = env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn parse_seconds(args: &[String]) -> Result<u32> {
    match args.first() {
        None => Ok(FUZZ_SECONDS),
        Some(s) => s.parse().map_err(|_| {
            format!("fuzz: `{s}` is not a number of seconds; try `cargo xtask fuzz 30`")
        }),
    }
}

/// Runs a command in the workspace root, echoing it; fails with its exit status.
fn run(program: &str, args: &[&str]) -> Result {
    run_in(&root(), program, args, &[])
}

fn run_in(dir: &Path, program: &str, args: &[&str], envs: &[(&str, &str)]) -> Result {
    eprintln!("xtask: $ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(envs.iter().copied())
        .status()
        .map_err(|e| format!("could not start `{program}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

fn output_ok(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    output_ok("id", &["-u"]).is_some_and(|s| s.trim() == "0")
}

fn deb_installed(package: &str) -> bool {
    output_ok("dpkg-query", &["-W", "-f=${Status}", package])
        .is_some_and(|s| s.contains("install ok installed"))
}

/// Installs what is missing; prints one line and touches nothing when all is present.
fn setup() -> Result {
    let started = Instant::now();
    let installed = install_debian(DEBIAN_PACKAGES)?;
    check_gstreamer()?;
    ensure_web_player()?;
    ensure_cargo_fuzz()?;
    eprintln!(
        "xtask: setup complete ({installed} package(s) installed, {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Installs those of `packages` that are missing (one `apt-get update`, no Recommends: every
/// package needed is named); returns how many were installed.
fn install_debian(packages: &[(&str, &str)]) -> Result<usize> {
    let missing: Vec<&str> = packages
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !deb_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    let mut why = String::new();
    for (p, what) in packages.iter().filter(|(p, _)| missing.contains(p)) {
        let _ = writeln!(why, "  {p}: {what}");
    }
    if !is_root() {
        return Err(format!(
            "these Debian packages are missing and installing them needs root:\n{why}\
             run `sudo cargo xtask setup` (or `sudo cargo xtask bench …`), or install them with \
             apt-get yourself"
        ));
    }
    eprintln!(
        "xtask: installing {} Debian package(s):\n{why}",
        missing.len()
    );
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    run_in(&root(), "apt-get", &["update", "-q"], &env).map_err(|e| {
        format!("{e}\n`apt-get update` failed: check that the Debian mirror is reachable")
    })?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing.iter().copied());
    run_in(&root(), "apt-get", &args, &env).map_err(|e| {
        format!(
            "{e}\ncould not install {}: check the package names with `apt-cache policy` \
             and that the Debian mirror is reachable",
            missing.join(" ")
        )
    })?;
    Ok(missing.len())
}

/// A package can be installed yet a plugin missing (a broken registry cache, a partial
/// install): say which element is missing and which package ships it.
fn check_gstreamer() -> Result {
    let absent: Vec<String> = GST_ELEMENTS
        .iter()
        .filter(|(e, _)| output_ok("gst-inspect-1.0", &["--exists", e]).is_none())
        .map(|(e, p)| format!("  {e} (from {p})"))
        .collect();
    if absent.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "GStreamer elements missing although their packages are installed:\n{}\n\
             reinstall the packages with `apt-get install --reinstall <package>`, then clear \
             the registry cache: `rm -rf ~/.cache/gstreamer-1.0`",
            absent.join("\n")
        ))
    }
}

/// Installs client-sdk/web's npm packages (typescript, playwright-core) when `node_modules` is
/// missing or older than `package-lock.json`, then builds the player that `run --dev` serves.
fn ensure_web_player() -> Result {
    let web = root().join("client-sdk/web");
    if output_ok("npm", &["--version"]).is_none() {
        return Err(
            "npm is not installed: the web player (client-sdk/web) needs Node.js 18+ and npm; \
             install them (`apt-get install nodejs npm`) and rerun `cargo xtask setup`"
                .to_owned(),
        );
    }
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let lock = web.join("package-lock.json");
    let installed = mtime(&web.join("node_modules/.package-lock.json"));
    let stale = match (installed, mtime(&lock)) {
        (None, _) => true,
        (Some(i), Some(l)) => l > i,
        (Some(_), None) => false,
    };
    if stale {
        let cmd = if lock.exists() { "ci" } else { "install" };
        run_in(&web, "npm", &[cmd, "--no-audit", "--no-fund"], &[]).map_err(|e| {
            format!("{e}\ncould not install the web player's npm packages: check that the npm registry is reachable")
        })?;
    }
    run_in(&web, "npm", &["run", "--silent", "build"], &[]).map_err(|e| {
        format!("{e}\nthe web player (client-sdk/web) does not build: see tsc's errors above")
    })
}

fn ensure_cargo_fuzz() -> Result {
    if output_ok("cargo", &["fuzz", "--version"]).is_some() {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz (needed by the fuzz runs in `cargo xtask test`)");
    run("cargo", &["install", "cargo-fuzz", "--locked"]).map_err(|e| {
        format!("{e}\ncould not install cargo-fuzz: check that crates.io is reachable")
    })
}

fn fuzz_targets() -> Result<Vec<String>> {
    let dir = root().join("fuzz").join("fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension() == Some(OsStr::new("rs")))
                .then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    targets.sort();
    Ok(targets)
}

/// Runs each fuzz target for `seconds`; a crash fails the run and leaves the input in
/// fuzz/artifacts/.
fn fuzz(seconds: u32) -> Result {
    if output_ok("rustc", &["+nightly", "--version"]).is_none() {
        return Err(
            "cargo fuzz needs the nightly toolchain: run `rustup toolchain install nightly`".into(),
        );
    }
    let fuzz_dir = root().join("fuzz");
    let target_dir = target_dir().join("fuzz");
    let target_dir = target_dir.to_string_lossy().into_owned();
    let max_time = format!("-max_total_time={seconds}");
    for target in fuzz_targets()? {
        run_in(
            &fuzz_dir,
            "cargo",
            &[
                "+nightly",
                "fuzz",
                "run",
                "--target-dir",
                &target_dir,
                &target,
                "--",
                &max_time,
                "-rss_limit_mb=4096",
            ],
            &[],
        )?;
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

fn test(args: &[String]) -> Result {
    setup()?;
    let started = Instant::now();
    run("cargo", &["fmt", "--all", "--check"])
        .map_err(|e| format!("{e}\nformatting differs: run `cargo fmt --all`"))?;
    run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The web player's own unit tests (type check, then its statistics under a fake clock).
    run_in(
        &root().join("client-sdk/web"),
        "npm",
        &["test", "--silent"],
        &[],
    )?;
    let mut test_args = vec!["test", "--workspace"];
    test_args.extend(args.iter().map(String::as_str));
    run("cargo", &test_args)?;
    fuzz(FUZZ_SECONDS)?;
    eprintln!(
        "xtask: every check passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The harness binaries of `benches/src/bin/`, each run in release with the remaining args.
const BENCH_BINS: &[&str] = &[
    "pipeline",
    "placement",
    "quic",
    "webrtc",
    "broker",
    "soak",
    "hosted",
];

fn bench(args: &[String]) -> Result {
    setup()?;
    install_debian(BENCH_PACKAGES)?;
    let name = args.first().map_or("pipeline", String::as_str);
    if name == "criterion" {
        return run("cargo", &["bench", "--workspace"]);
    }
    if !BENCH_BINS.contains(&name) {
        return Err(format!(
            "unknown bench `{name}`: choose {} or `criterion`",
            BENCH_BINS
                .iter()
                .map(|b| format!("`{b}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut a = vec![
        "run",
        "--release",
        "-p",
        "edgeplay-benches",
        "--bin",
        name,
        "--",
    ];
    a.extend(args.iter().skip(1).map(String::as_str));
    run("cargo", &a)
}
