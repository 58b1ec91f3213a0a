//! One session's sandbox: its own X display, sound server and app, in namespaces of their own,
//! under the session's cgroup, as a user of its own.
//!
//! Layout: the edge makes `<runtime>/<session>/` with `x11/` (the display's socket folder,
//! bound at `/tmp/.X11-unix` inside) and `run/` (bound at `/run/edgeplay`, the sound server's
//! socket in `pulse/`), owned by the session's user. Inside, bubblewrap gives the sandbox:
//! - its own pid, ipc and uts namespaces, and a network namespace with nothing in it (no
//!   network at all: neither the internet nor the edge's loopback services);
//! - `/usr` and `/etc` read-only, a fresh `/tmp` and home (`/home/player`) in memory, charged
//!   to the session's memory limit, `/proc`, a minimal `/dev` plus the GPU's device nodes where
//!   the machine has them, and no other file of the machine;
//! - the session's user (no capabilities, no supplementary groups) for everything in it.
//!
//! In it, `init.sh` (pid 1 of the namespace) starts Xvfb at the session's mode (only its
//! filesystem socket: no TCP, no abstract socket another sandbox sharing a network namespace
//! could reach), then PulseAudio with a 48 kHz stereo null sink `game` (the default sink; the
//! edge records its monitor), then the app's `prepare` command, the app, and `undo`. The
//! display server lives in the sandbox's IPC namespace, so the app's MIT-SHM (System V
//! segments) keeps working; the edge captures through segments the server passes by file
//! descriptor ([`crate::display`]). When the app exits, init exits with its status, and the
//! kernel ends everything else in the namespace.
//!
//! Stopping: SIGTERM to init, which hands it to the app; after the app's exit timeout, SIGKILL
//! to everything in the cgroup; then the cgroup and the session's folder are removed.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use edgeplay_protocol::mode::Mode;

use crate::catalogue::Launch;
use crate::cgroup::{Cgroup, CgroupError, Limits};

/// How long the display and the sound server get to come up.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// The display's socket inside the session's folder.
const DISPLAY_SOCKET: &str = "x11/X0";
/// The sound server's socket inside the session's folder.
const PULSE_SOCKET: &str = "run/pulse/native";
/// Lines of the sandbox's stderr kept for error messages.
const LOG_LINES: usize = 40;
/// Longest line kept (a line without newline is cut there).
const LOG_LINE_BYTES: usize = 400;
/// Largest size of the in-memory /tmp and home (each at most a quarter of the memory limit).
const TMPFS_BYTES: u64 = 512 << 20;

/// What a sandbox is made of.
#[derive(Clone, Debug)]
pub struct SandboxSpec<'a> {
    /// The session's id: names its folder and cgroup ([A-Za-z0-9_-], at most 64).
    pub session: &'a str,
    /// Where sessions' folders go (the edge's data folder's `sessions/`).
    pub runtime_dir: &'a Path,
    /// Where the cgroup hierarchies are mounted ([`crate::cgroup::DEFAULT_ROOT`]).
    pub cgroup_root: &'a Path,
    /// The session's user and group id: unprivileged, used by no other session.
    pub uid: u32,
    /// The display's size and the frame rate the app is told.
    pub mode: Mode,
    /// The app.
    pub launch: &'a Launch,
    /// CPU, memory and process limits.
    pub limits: Limits,
}

/// Why a sandbox could not be made or did not come up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A session id that cannot name a folder and a cgroup.
    #[error("session id {0:?} cannot name a sandbox: use 1 to 64 of A-Z, a-z, 0-9, - and _")]
    BadSession(String),
    /// A tool the sandbox needs is not installed.
    #[error("{tool} is not installed (package {package}); run `cargo xtask setup`")]
    Missing {
        /// The program.
        tool: &'static str,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// The session's cgroup.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The session's folder.
    #[error("session folder {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// bubblewrap could not be started.
    #[error("cannot start bubblewrap: {0}")]
    Spawn(std::io::Error),
    /// The sandbox ended before its display and sound server were up.
    #[error("the sandbox ended while starting ({status}): {log}")]
    StartFailed {
        /// How it ended.
        status: ExitStatus,
        /// The end of what it wrote to stderr.
        log: String,
    },
    /// The display or the sound server did not come up in time.
    #[error("the sandbox's {what} did not come up within {START_TIMEOUT:?}")]
    StartTimeout {
        /// Which.
        what: &'static str,
    },
}

/// A running sandbox.
#[derive(Debug)]
pub struct Sandbox {
    child: Child,
    /// The last lines the sandbox (its display, sound server and app) wrote to stderr, read
    /// all along by a thread of its own so that a chatty app never blocks on a full pipe.
    log: Arc<Mutex<VecDeque<String>>>,
    dir: PathBuf,
    cgroup: Option<Cgroup>,
    exit_timeout: Duration,
    status: Option<ExitStatus>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError + '_ {
    move |source| SandboxError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `s` quoted for sh: inside single quotes, each `'` as `'\''`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn which(tool: &'static str, package: &'static str) -> Result<PathBuf, SandboxError> {
    ["/usr/bin", "/usr/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
        .ok_or(SandboxError::Missing { tool, package })
}

/// The script pid 1 of the sandbox runs (see the module's documentation).
fn init_script(launch: &Launch, mode: Mode) -> String {
    let command = |argv: &[String]| {
        argv.iter()
            .map(|a| sh_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut s = String::from(
        "set -u\n\
         fail() { echo \"edgeplay sandbox: $1\" >&2; [ -f \"$2\" ] && tail -n 20 \"$2\" >&2; exit \"$3\"; }\n\
         wait_for() { i=0; while [ ! -S \"$1\" ]; do i=$((i+1)); [ $i -gt 600 ] && return 1; sleep 0.025; done; }\n",
    );
    let _ = writeln!(
        s,
        "Xvfb :0 -screen 0 {}x{}x24 -nolisten tcp -nolisten local -noreset -dpi 96 \
         +extension MIT-SHM +extension XTEST >/tmp/xvfb.log 2>&1 &",
        mode.width, mode.height
    );
    s.push_str(
        "wait_for /tmp/.X11-unix/X0 || fail 'the display (Xvfb) did not start' /tmp/xvfb.log 90\n\
         mkdir -p /run/edgeplay/pulse\n\
         pulseaudio --daemonize=no --exit-idle-time=-1 --disallow-exit=yes --use-pid-file=no -n \
         --load='module-native-protocol-unix socket=/run/edgeplay/pulse/native auth-anonymous=1' \
         --load='module-null-sink sink_name=game rate=48000 channels=2' \
         --load='module-always-sink' >/tmp/pulse.log 2>&1 &\n\
         wait_for /run/edgeplay/pulse/native || fail 'the sound server (PulseAudio) did not start' /tmp/pulse.log 91\n\
         pactl set-default-sink game >/dev/null 2>&1\n",
    );
    if let Some(prepare) = &launch.prepare {
        let _ = writeln!(
            s,
            "{} || fail 'prepare failed' /dev/null 92",
            command(prepare)
        );
    }
    // The app, as a child, so that init can hand it SIGTERM and report its status.
    s.push_str("app=''\ntrap '[ -n \"$app\" ] && kill -TERM \"$app\" 2>/dev/null' TERM\n");
    let mut argv = vec![launch.command.to_string_lossy().into_owned()];
    argv.extend(launch.args.iter().cloned());
    let _ = writeln!(s, "{} &\napp=$!", command(&argv));
    s.push_str(
        "while :; do wait \"$app\"; status=$?; kill -0 \"$app\" 2>/dev/null || break; done\n",
    );
    if let Some(undo) = &launch.undo {
        let _ = writeln!(s, "{} || true", command(undo));
    }
    s.push_str("exit \"$status\"\n");
    s
}

/// Reads the sandbox's stderr to its end, keeping the last [`LOG_LINES`] lines (each cut to
/// [`LOG_LINE_BYTES`]; the bytes are the app's, so not trusted to be short or UTF-8).
fn drain(stderr: std::process::ChildStderr, log: &Mutex<VecDeque<String>>, session: &str) {
    let mut reader = std::io::BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        // At most one line's worth past the cap is buffered: read_until stops at newlines,
        // and a very long line is cut when kept.
        match std::io::Read::take(&mut reader, 64 * 1024).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line[..line.len().min(LOG_LINE_BYTES)])
            .trim_end()
            .to_owned();
        tracing::debug!(session, "{text}");
        let mut lines = log.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == LOG_LINES {
            lines.pop_front();
        }
        lines.push_back(text);
    }
}

/// Whether this process's root is a mount point (not so in a chroot into a plain folder).
fn root_is_mount_point() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|info| info.lines().any(|l| l.split(' ').nth(4) == Some("/")))
}

impl Sandbox {
    /// Makes the session's folder and cgroup, starts the sandbox and waits until its display
    /// and sound server accept connections.
    ///
    /// # Errors
    /// [`SandboxError`]; whatever was made is removed again.
    pub fn start(spec: &SandboxSpec<'_>) -> Result<Self, SandboxError> {
        let id_ok = !spec.session.is_empty()
            && spec.session.len() <= 64
            && spec
                .session
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(SandboxError::BadSession(
                spec.session.chars().take(80).collect(),
            ));
        }
        let bwrap = which("bwrap", "bubblewrap")?;
        which("Xvfb", "xvfb")?;
        which("pulseaudio", "pulseaudio")?;
        which("setpriv", "util-linux")?;

        let dir = spec.runtime_dir.join(spec.session);
        if dir.exists() {
            // A folder left by an edge that died: nothing runs there any more.
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        let owner = rustix::process::Uid::from_raw(spec.uid);
        let group = rustix::process::Gid::from_raw(spec.uid);
        for sub in ["", "x11", "run"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(io(&path))?;
            if !sub.is_empty() {
                rustix::fs::chown(&path, Some(owner), Some(group))
                    .map_err(|e| io(&path)(e.into()))?;
            }
        }
        // From here on, failures remove the folder (and the cgroup drops itself).
        let cleanup = |e: SandboxError| {
            let _ = std::fs::remove_dir_all(&dir);
            e
        };
        let init = dir.join("init.sh");
        std::fs::write(&init, init_script(spec.launch, spec.mode))
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt as _;
                // Readable by the session's user whatever the edge's umask.
                std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o644))
            })
            .map_err(|e| cleanup(io(&init)(e)))?;
        let cgroup = Cgroup::create(spec.cgroup_root, spec.session, &spec.limits)
            .map_err(|e| cleanup(e.into()))?;

        let mut args: Vec<String> = Vec::new();
        let mut arg = |a: &str| args.push(a.to_owned());
        for a in [
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-uts",
            "--unshare-net",
            "--unshare-cgroup-try",
            "--hostname",
            "edgeplay",
            "--die-with-parent",
            "--new-session",
            "--as-pid-1",
            "--ro-bind",
            "/usr",
            "/usr",
            "--ro-bind",
            "/etc",
            "/etc",
            "--symlink",
            "usr/bin",
            "/bin",
            "--symlink",
            "usr/sbin",
            "/sbin",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--dev-bind-try",
            "/dev/dri",
            "/dev/dri",
        ] {
            arg(a);
        }
        for node in ["nvidia0", "nvidiactl", "nvidia-uvm", "nvidia-modeset"] {
            let path = format!("/dev/{node}");
            for a in ["--dev-bind-try", &path, &path] {
                arg(a);
            }
        }
        // Folders bubblewrap would make 0700 on its own, out of the session user's reach.
        for at in ["/run", "/home"] {
            for a in ["--perms", "0755", "--dir", at] {
                arg(a);
            }
        }
        // Each in-memory folder holds at most a quarter of the memory limit: a disk filler
        // meets ENOSPC, a clear error, before the memory limit's OOM kill.
        let size = (spec.limits.memory_bytes / 4).min(TMPFS_BYTES).to_string();
        for (perms, at) in [("1777", "/tmp"), ("0777", "/home/player")] {
            for a in ["--size", &size, "--perms", perms, "--tmpfs", at] {
                arg(a);
            }
        }
        let (x11, run) = (
            dir.join("x11").to_string_lossy().into_owned(),
            dir.join("run").to_string_lossy().into_owned(),
        );
        let init_path = init.to_string_lossy().into_owned();
        for a in [
            "--bind",
            &x11,
            "/tmp/.X11-unix",
            "--bind",
            &run,
            "/run/edgeplay",
            "--ro-bind",
            &init_path,
            "/run/edgeplay-init.sh",
            "--chdir",
        ] {
            arg(a);
        }
        let workdir = spec.launch.workdir.as_ref().map_or_else(
            || "/home/player".to_owned(),
            |w| w.to_string_lossy().into_owned(),
        );
        arg(&workdir);
        let uid = spec.uid.to_string();
        for a in [
            "--",
            "/usr/bin/setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
            "/bin/sh",
            "/run/edgeplay-init.sh",
        ] {
            arg(a);
        }

        // The shell joins the cgroup, then becomes bubblewrap: nothing starts outside it.
        // A known umask: bubblewrap makes the sandbox's folders (/run, /home) with it.
        let mut join = String::from("umask 022; ");
        for procs in cgroup.procs_files() {
            let _ = write!(
                join,
                "echo $$ > {} || exit 96; ",
                sh_quote(&procs.to_string_lossy())
            );
        }
        join.push_str("exec \"$@\"");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(join).arg("sh");
        if !root_is_mount_point() {
            // In a chroot whose root is a plain folder, bubblewrap cannot make "/" a slave
            // mount: give it a root that is a mount point, in a mount namespace of its own.
            let root = dir.join("root");
            std::fs::create_dir_all(&root).map_err(|e| cleanup(io(&root)(e)))?;
            cmd.args([
                "/usr/bin/unshare",
                "--mount",
                "--propagation",
                "unchanged",
                "/bin/sh",
                "-c",
            ])
            .arg(
                "/usr/bin/mount --rbind / \"$0\" && /usr/bin/mount --make-rprivate \"$0\" && \
                 cd \"$0\" && exec /usr/sbin/chroot . \"$@\"",
            )
            .arg(&root);
        }
        cmd.arg(&bwrap).args(&args);
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/games")
            .env("HOME", "/home/player")
            .env("USER", "player")
            .env("LANG", "C.UTF-8")
            .env("XDG_RUNTIME_DIR", "/run/edgeplay")
            .env("DISPLAY", ":0")
            .env("PULSE_SERVER", "unix:/run/edgeplay/pulse/native")
            .env("SDL_AUDIODRIVER", "pulse")
            .env("EDGEPLAY_SESSION", spec.session)
            .env("EDGEPLAY_WIDTH", spec.mode.width.to_string())
            .env("EDGEPLAY_HEIGHT", spec.mode.height.to_string())
            .env("EDGEPLAY_FPS", spec.mode.fps.to_string())
            .envs(&spec.launch.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| cleanup(SandboxError::Spawn(e)))?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            let (log, session) = (Arc::clone(&log), spec.session.to_owned());
            let reader = std::thread::Builder::new()
                .name(format!("sandbox-log-{session}"))
                .spawn(move || drain(stderr, &log, &session));
            if let Err(e) = reader {
                tracing::warn!(error = %e, "no thread to read the sandbox's output");
            }
        }
        let mut sandbox = Self {
            child,
            log,
            dir,
            cgroup: Some(cgroup),
            exit_timeout: spec.launch.exit_timeout,
            status: None,
        };
        if let Err(e) = sandbox.wait_ready() {
            sandbox.teardown();
            return Err(e);
        }
        sandbox.display_to_its_share();
        tracing::info!(
            session = spec.session,
            mode = %spec.mode,
            app = %spec.launch.command.display(),
            "sandbox up"
        );
        Ok(sandbox)
    }

    fn wait_ready(&mut self) -> Result<(), SandboxError> {
        let deadline = Instant::now() + START_TIMEOUT;
        for (what, socket) in [("display", DISPLAY_SOCKET), ("sound server", PULSE_SOCKET)] {
            let path = self.dir.join(socket);
            loop {
                if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                    break;
                }
                if let Some(status) = self.child.try_wait().map_err(SandboxError::Spawn)? {
                    // The reader may still be on the last lines.
                    std::thread::sleep(Duration::from_millis(50));
                    return Err(SandboxError::StartFailed {
                        status,
                        log: self.log_tail(),
                    });
                }
                if Instant::now() >= deadline {
                    return Err(SandboxError::StartTimeout { what });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Moves the display and the sound server to the session's `display` CPU share, so that
    /// an app spending all of its own does not stall them (and the capture with them).
    fn display_to_its_share(&self) {
        let Some(cgroup) = &self.cgroup else {
            return;
        };
        for pid in cgroup.pids() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if matches!(comm.trim(), "Xvfb" | "pulseaudio")
                && let Err(e) = cgroup.move_to_display(pid)
            {
                tracing::warn!(pid, error = %e, "the display stays in the app's CPU share");
            }
        }
    }

    /// The last lines the sandbox wrote to stderr (its display, sound server and app), joined.
    #[must_use]
    pub fn log_tail(&self) -> String {
        let lines = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The display's socket, for [`crate::display::Display::connect`].
    #[must_use]
    pub fn display_socket(&self) -> PathBuf {
        self.dir.join(DISPLAY_SOCKET)
    }

    /// The sound server, as PulseAudio clients name it (`unix:<socket>`).
    #[must_use]
    pub fn pulse_server(&self) -> String {
        format!("unix:{}", self.dir.join(PULSE_SOCKET).display())
    }

    /// The session's folder.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The session's cgroup.
    #[must_use]
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    /// The app's exit status once it has exited (the sandbox ends with it).
    ///
    /// # Errors
    /// The wait itself failed.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Stops the app (SIGTERM, its exit timeout, then SIGKILL to everything in the sandbox)
    /// and removes the cgroup and the session's folder. Returns the app's exit status (`None`
    /// when it had to be killed).
    ///
    /// # Errors
    /// The cgroup or the folder could not be removed (they are left behind, and logged).
    pub fn stop(mut self) -> Result<Option<ExitStatus>, SandboxError> {
        if self.try_wait().ok().flatten().is_none() {
            if let Some(init) = self.init_pid() {
                let _ = rustix::process::kill_process(init, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + self.exit_timeout;
            while Instant::now() < deadline && self.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let status = self.status;
        self.teardown_checked()?;
        Ok(status)
    }

    /// The sandbox's IPC namespace (`/proc/<init>/ns/ipc`), for a process on the edge's side
    /// that must share System V memory with the display (a baseline capturing with Xlib's
    /// MIT-SHM, say); `None` once the sandbox has ended.
    #[must_use]
    pub fn ipc_namespace(&self) -> Option<PathBuf> {
        self.init_pid()
            .map(|pid| PathBuf::from(format!("/proc/{}/ns/ipc", pid.as_raw_nonzero())))
    }

    /// The host pid of the sandbox's init (pid 1 of its namespace).
    fn init_pid(&self) -> Option<rustix::process::Pid> {
        let cgroup = self.cgroup.as_ref()?;
        cgroup.pids().into_iter().find_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let ns = status.lines().find(|l| l.starts_with("NSpid:"))?;
            let ids: Vec<&str> = ns.split_whitespace().collect();
            (ids.len() >= 3 && ids.last() == Some(&"1"))
                .then(|| rustix::process::Pid::from_raw(pid))
                .flatten()
        })
    }

    fn teardown_checked(&mut self) -> Result<(), SandboxError> {
        let mut result = Ok(());
        if let Some(cgroup) = self.cgroup.take() {
            if let Err(e) = cgroup.kill_all(Duration::from_secs(5)) {
                result = Err(e.into());
            }
            let _ = self.child.wait().map(|s| self.status.get_or_insert(s));
            if let Err(e) = cgroup.remove() {
                result = result.and(Err(e.into()));
            }
        } else {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if self.dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.dir)
        {
            result = result.and(Err(io(&self.dir)(e)));
        }
        result
    }

    fn teardown(&mut self) {
        if let Err(e) = self.teardown_checked() {
            tracing::warn!(error = %e, dir = %self.dir.display(), "sandbox not fully removed");
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.cgroup.is_some() || self.dir.exists() {
            self.teardown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_sh() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }
}
