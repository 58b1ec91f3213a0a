//! Real apps nobody in this project wrote (Debian's glxgears and vkcube) in real sandboxes:
//! bubblewrap, Xvfb, PulseAudio and cgroups, as the edge runs them. Needs root and the packages
//! `cargo xtask setup` installs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use edgeplay_host::catalogue::{Catalogue, Launch};
use edgeplay_host::cgroup::{DEFAULT_ROOT, Limits};
use edgeplay_host::display::Display;
use edgeplay_host::keymap::x_keycode;
use edgeplay_host::sandbox::{Sandbox, SandboxError, SandboxSpec};
use edgeplay_protocol::mode::Mode;

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info")
        .try_init();
}

/// A folder of this test binary's own for sessions' folders.
fn runtime() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgeplay-host-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("runtime folder");
    dir
}

/// A session id and a user id no other test of this binary uses.
fn next_session(tag: &str) -> (String, u32) {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    (format!("test-{}-{tag}-{n}", std::process::id()), 61_000 + n)
}

/// The launch of `command` as a catalogue would give it.
fn launch(command: &str, args: &[&str]) -> Launch {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    let text = format!(
        "[[app]]\nid = \"t\"\nname = \"T\"\ncommand = {command:?}\nargs = [{}]\nmodes = [\"1280x720@60\"]\nexit_timeout_secs = 2\n",
        args.join(", ")
    );
    let cat = Catalogue::parse(
        &text,
        Path::new("test.toml"),
        std::ffi::OsStr::new("/usr/bin:/usr/games:/bin"),
    )
    .expect("catalogue");
    cat.get("t")
        .and_then(|a| a.launch.clone())
        .expect("hosted app")
}

fn start(tag: &str, launch: &Launch, runtime: &Path) -> Sandbox {
    start_limited(tag, launch, runtime, Limits::default())
}

fn start_limited(tag: &str, launch: &Launch, runtime: &Path, limits: Limits) -> Sandbox {
    init_logs();
    assert!(
        rustix::process::geteuid().is_root(),
        "the sandbox tests need root (cgroups, bubblewrap as root, the session's user)"
    );
    let (session, uid) = next_session(tag);
    let spec = SandboxSpec {
        session: &session,
        runtime_dir: runtime,
        cgroup_root: Path::new(DEFAULT_ROOT),
        uid,
        mode: Mode::DEFAULT,
        launch,
        limits,
    };
    Sandbox::start(&spec).unwrap_or_else(|e| panic!("sandbox {session}: {e}"))
}

fn connect(sandbox: &Sandbox) -> Display {
    Display::connect(&sandbox.display_socket(), 1280, 720).expect("the session's display")
}

/// Captures until two pictures `gap` apart differ (the app draws), at most `within`.
fn changes(display: &mut Display, gap: Duration, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let first = display.capture().expect("capture").to_vec();
        std::thread::sleep(gap);
        if display.capture().expect("capture") != first.as_slice() {
            return true;
        }
    }
    false
}

/// Waits at most `within` for the sandbox's app to exit; its status.
fn wait_exit(sandbox: &mut Sandbox, within: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = sandbox.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The edge's folder and cgroups hold nothing of `sandbox`'s session any more.
fn gone(dir: &Path, cgroup_dirs: &[PathBuf]) {
    assert!(!dir.exists(), "{} left behind", dir.display());
    for d in cgroup_dirs {
        assert!(!d.exists(), "cgroup {} left behind", d.display());
    }
}

fn cgroup_dirs(sandbox: &Sandbox) -> Vec<PathBuf> {
    sandbox.cgroup().expect("cgroup").dirs().to_vec()
}

#[test]
fn an_opengl_app_is_captured_through_its_own_display() {
    let rt = runtime();
    let gears = launch("glxgears", &[]);
    let sandbox = start("gears", &gears, &rt);
    let mut display = connect(&sandbox);
    assert!(
        changes(
            &mut display,
            Duration::from_millis(200),
            Duration::from_secs(20)
        ),
        "glxgears' picture never changed"
    );
    let picture = display.capture().expect("capture");
    let lit = picture
        .chunks_exact(4)
        .filter(|p| p[..3] != [0, 0, 0])
        .count();
    assert!(
        lit > 1000,
        "only {lit} pixels not black: the gears are not in the picture"
    );
    let (dir, cgroups) = (sandbox.dir().to_owned(), cgroup_dirs(&sandbox));
    drop(display);
    sandbox.stop().expect("stop");
    gone(&dir, &cgroups);
}

#[test]
fn vkcube_pauses_on_space_resumes_and_quits_on_escape_with_status_0() {
    let rt = runtime();
    let cube = launch("vkcube", &[]);
    let mut sandbox = start("cube", &cube, &rt);
    let mut display = connect(&sandbox);
    assert!(
        changes(
            &mut display,
            Duration::from_millis(200),
            Duration::from_secs(30)
        ),
        "vkcube's picture never changed"
    );
    // No window manager: keys go to the window under the pointer (vkcube's is at the top left).
    display.move_to(100, 100).expect("pointer");
    let space = x_keycode("Space").expect("Space");
    let tap = |d: &mut Display, key: u8| {
        d.key(key, true).expect("press");
        d.key(key, false).expect("release");
        d.sync().expect("delivered");
    };
    tap(&mut display, space);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !changes(
            &mut display,
            Duration::from_millis(300),
            Duration::from_millis(700)
        ),
        "vkcube kept turning after Space"
    );
    tap(&mut display, space);
    assert!(
        changes(
            &mut display,
            Duration::from_millis(200),
            Duration::from_secs(10)
        ),
        "vkcube did not resume after a second Space"
    );
    tap(&mut display, x_keycode("Escape").expect("Escape"));
    let status = wait_exit(
        &mut sandbox,
        Duration::from_secs(10),
        "vkcube did not quit on Escape",
    );
    assert_eq!(status.code(), Some(0), "vkcube's exit status");
    let (dir, cgroups) = (sandbox.dir().to_owned(), cgroup_dirs(&sandbox));
    drop(display);
    assert_eq!(
        sandbox.stop().expect("stop").and_then(|s| s.code()),
        Some(0)
    );
    gone(&dir, &cgroups);
}

#[test]
fn a_session_cannot_reach_another_session_or_the_edge() {
    let rt = runtime();
    // What session A probes for: B's folder, the edge's TCP port on loopback, other pids.
    let edge_port = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = edge_port.local_addr().expect("addr").port();
    let b = start("iso-b", &launch("glxgears", &[]), &rt);
    let probe = format!(
        "sleep 1; test -e {b_dir} && exit 10; \
         test -e {b_socket} && exit 11; \
         ls /tmp/.X11-unix | grep -qv '^X0$' && exit 12; \
         timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' 2>/dev/null && exit 13; \
         test \"$(ls /proc | grep -c '^[0-9]')\" -gt 12 && exit 14; \
         test -r /etc/shadow && exit 15; \
         touch /usr/edgeplay-probe 2>/dev/null && exit 16; \
         exit 0",
        b_dir = b.dir().display(),
        b_socket = b.display_socket().display(),
    );
    let mut a = start("iso-a", &launch("bash", &["-c", &probe]), &rt);
    let status = wait_exit(&mut a, Duration::from_secs(20), "the probe did not finish");
    let what = match status.code() {
        Some(0) => "",
        Some(10) => "B's folder is visible",
        Some(11) => "B's display socket is visible",
        Some(12) => "another display's socket is visible",
        Some(13) => "the edge's loopback port answered",
        Some(14) => "other sessions' processes are visible",
        Some(15) => "/etc/shadow is readable",
        Some(16) => "/usr is writable",
        _ => "the probe failed",
    };
    assert!(status.success(), "{what} ({status})");
    a.stop().expect("stop A");
    b.stop().expect("stop B");
}

#[test]
fn twenty_sessions_in_a_row_leave_nothing_behind() {
    let rt = runtime();
    let gears = launch("glxgears", &[]);
    for _ in 0..20 {
        let sandbox = start("row", &gears, &rt);
        let (dir, cgroups) = (sandbox.dir().to_owned(), cgroup_dirs(&sandbox));
        let uid_procs = |cg: &[PathBuf]| {
            cg.iter()
                .map(|d| {
                    std::fs::read_to_string(d.join("cgroup.procs"))
                        .unwrap_or_default()
                        .lines()
                        .count()
                })
                .sum::<usize>()
        };
        assert!(
            uid_procs(&cgroups) >= 3,
            "Xvfb, the sound server and the app run in the cgroup"
        );
        sandbox.stop().expect("stop");
        gone(&dir, &cgroups);
    }
    // Nothing of this binary's sessions is left in the runtime folder.
    let left: Vec<_> = std::fs::read_dir(&rt)
        .expect("runtime")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("-row-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn an_app_that_fails_at_start_ends_its_sandbox_with_its_status() {
    init_logs();
    let rt = runtime();
    let (session, uid) = next_session("fail");
    let fails = launch("sh", &["-c", "exit 3"]);
    let spec = SandboxSpec {
        session: &session,
        runtime_dir: &rt,
        cgroup_root: Path::new(DEFAULT_ROOT),
        uid,
        mode: Mode::DEFAULT,
        launch: &fails,
        limits: Limits::default(),
    };
    // The app may end before `start` has seen the sound server up (then start says so, with
    // the status), or after (then the sandbox's status is the app's).
    let status = match Sandbox::start(&spec) {
        Err(SandboxError::StartFailed { status, .. }) => status,
        Err(e) => panic!("{e}"),
        Ok(mut sandbox) => {
            let status = wait_exit(
                &mut sandbox,
                Duration::from_secs(10),
                "the sandbox did not end",
            );
            sandbox.stop().expect("stop");
            status
        }
    };
    assert_eq!(status.code(), Some(3));
    assert!(!rt.join(&session).exists(), "its folder was left behind");
}

#[test]
fn a_memory_hog_a_disk_filler_and_a_fork_bomb_are_stopped_by_their_limits() {
    let rt = runtime();
    let b = start("limits-b", &launch("glxgears", &[]), &rt);
    let mut b_display = connect(&b);
    // Each abuse in turn: a line read forever into memory, a file filling the in-memory home,
    // then processes forked until the limit refuses them.
    let abuse = "timeout 30 tail /dev/zero; \
                 dd if=/dev/zero of=/home/player/fill bs=1M count=2048 2>/dev/null; \
                 for i in $(seq 1000); do sleep 60 & done 2>/dev/null; sleep 60";
    let limits = Limits {
        cpu_millicores: 500,
        memory_bytes: 256 << 20,
        pids: 64,
        ..Limits::default()
    };
    let a = start_limited("limits-a", &launch("bash", &["-c", abuse]), &rt, limits);
    let cgroup = a.cgroup().expect("cgroup");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut most = 0;
    while most < 60 {
        let pids = cgroup.pids().len();
        most = most.max(pids);
        assert!(pids <= 64, "{pids} processes in a session limited to 64");
        assert!(
            Instant::now() < deadline,
            "the fork bomb never reached the limit ({most})"
        );
        // B goes on drawing meanwhile.
        assert!(
            changes(
                &mut b_display,
                Duration::from_millis(50),
                Duration::from_secs(5)
            ),
            "session B stopped drawing while A misbehaved"
        );
    }
    if let Some(peak) = cgroup.memory_peak() {
        assert!(
            peak <= (256 << 20) + (4 << 20),
            "A's memory peaked at {peak} bytes"
        );
        println!("A's memory peak {} MiB", peak >> 20);
    }
    println!("A reached {most} processes");
    a.stop().expect("stop A");
    drop(b_display);
    b.stop().expect("stop B");
}

#[test]
fn a_chatty_app_never_blocks_on_its_output() {
    let rt = runtime();
    // A megabyte on stderr, more than any pipe holds, then the app's own status.
    let chatty = launch(
        "sh",
        &[
            "-c",
            "sleep 1; head -c 1000000 /dev/zero | tr '\\0' x >&2; printf '\\ndone\\n' >&2; exit 4",
        ],
    );
    let mut sandbox = start("chatty", &chatty, &rt);
    let status = wait_exit(
        &mut sandbox,
        Duration::from_secs(20),
        "the chatty app blocked",
    );
    assert_eq!(status.code(), Some(4));
    std::thread::sleep(Duration::from_millis(100));
    let tail = sandbox.log_tail();
    assert!(
        tail.ends_with("done"),
        "{}",
        &tail[tail.len().saturating_sub(200)..]
    );
    assert!(
        tail.lines().all(|l| l.len() <= 400),
        "a line longer than the cap"
    );
    sandbox.stop().expect("stop");
}
