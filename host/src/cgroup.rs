//! A session's control group: CPU, memory and process-count limits on everything its sandbox
//! runs, and the means to stop all of it.
//!
//! cgroup v2 where the unified hierarchy has the cpu, memory and pids controllers; otherwise
//! v1, one group in each of the cpu, memory and pids hierarchies. Groups live under
//! `edgeplay/<name>` in each hierarchy. A process joins by writing its pid to every file of
//! [`Cgroup::procs_files`] before it starts the sandbox, so nothing the sandbox forks escapes.
//!
//! Memory and processes are limited for the session as a whole; CPU time in two leaves of its
//! own: `app` (the app and everything it forks, where a sandbox starts) and `display` (the
//! session's X server and sound server, moved there once up), so an app that spends its CPU
//! share does not stall its own display, and with it the capture.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the hierarchies are mounted.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";
/// The group every session's group sits in.
const PARENT: &str = "edgeplay";
/// The CFS period limits are set over.
const PERIOD_US: u64 = 100_000;

/// What one session may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The app's CPU time, in thousandths of a core (1500: one and a half cores).
    pub cpu_millicores: u32,
    /// The display's and sound server's CPU time, in thousandths of a core.
    pub display_millicores: u32,
    /// Resident memory, tmpfs files included (its home and /tmp are in memory), in bytes.
    pub memory_bytes: u64,
    /// Processes and threads.
    pub pids: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cpu_millicores: 1000,
            display_millicores: 1000,
            memory_bytes: 2 << 30,
            pids: 512,
        }
    }
}

/// Which cgroup version a group is made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// The unified hierarchy.
    V2,
    /// One hierarchy per controller.
    V1,
}

/// Why a group could not be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Neither a v2 hierarchy with the controllers nor the v1 ones are mounted and writable.
    #[error(
        "no usable cgroup hierarchy under {root}: need cgroup v2 with the cpu, memory and pids \
         controllers, or cgroup v1's cpu, memory and pids mounted, and root to write them"
    )]
    Unavailable {
        /// Where they were looked for.
        root: PathBuf,
    },
    /// A file of the group could not be written.
    #[error("cgroup {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Processes were still in the group when it had to go.
    #[error("cgroup {path}: {left} process(es) still in it after SIGKILL")]
    Busy {
        /// The group.
        path: PathBuf,
        /// How many.
        left: usize,
    },
}

/// One session's group (in one or three hierarchies).
#[derive(Debug)]
pub struct Cgroup {
    version: Version,
    /// The group's folders, removed last to first: per hierarchy the session's folder, then
    /// where there are any its `app` and `display` leaves.
    dirs: Vec<PathBuf>,
    /// Where a process joins (the leaves `app` where CPU is split, else the session's).
    join: Vec<PathBuf>,
    /// The `display` leaf.
    display: PathBuf,
    /// Folders whose `cgroup.procs` together list every process of the session.
    members: Vec<PathBuf>,
}

/// Sets a CFS quota of `millicores` on a v1 cpu group or a v2 group.
fn cpu_quota(dir: &Path, version: Version, millicores: u32) -> Result<(), CgroupError> {
    let quota = u64::from(millicores) * PERIOD_US / 1000;
    match version {
        Version::V2 => write(&dir.join("cpu.max"), &format!("{quota} {PERIOD_US}")),
        Version::V1 => {
            write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
            write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_owned(),
        source,
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(io(path))
}

/// Which version `root` offers.
#[must_use]
pub fn detect(root: &Path) -> Option<Version> {
    let controllers = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let words: Vec<&str> = controllers.split_whitespace().collect();
    if ["cpu", "memory", "pids"].iter().all(|c| words.contains(c)) {
        return Some(Version::V2);
    }
    let v1 = ["cpu", "memory", "pids"]
        .iter()
        .all(|c| root.join(c).join("cgroup.procs").exists());
    v1.then_some(Version::V1)
}

impl Cgroup {
    /// Makes group `name` (a session id: [a-zA-Z0-9_-]) under `root` with `limits`.
    ///
    /// # Errors
    /// [`CgroupError::Unavailable`] when the machine has no usable hierarchy,
    /// [`CgroupError::Io`] when a file cannot be written (not root, say).
    pub fn create(root: &Path, name: &str, limits: &Limits) -> Result<Self, CgroupError> {
        let version = detect(root).ok_or_else(|| CgroupError::Unavailable {
            root: root.to_owned(),
        })?;
        let mut group = Self {
            version,
            dirs: Vec::new(),
            join: Vec::new(),
            display: PathBuf::new(),
            members: Vec::new(),
        };
        // On an error `group` drops, removing what was made.
        match version {
            Version::V2 => {
                let parent = root.join(PARENT);
                make_dir(&parent)?;
                // Children get the controllers; neither root nor the parent holds processes.
                write(&root.join("cgroup.subtree_control"), "+cpu +memory +pids")?;
                write(&parent.join("cgroup.subtree_control"), "+cpu +memory +pids")?;
                let dir = parent.join(name);
                make_dir(&dir)?;
                group.dirs.push(dir.clone());
                write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
                write(&dir.join("pids.max"), &limits.pids.to_string())?;
                write(&dir.join("cgroup.subtree_control"), "+cpu")?;
                group.cpu_leaves(&dir, limits)?;
                // Processes live in the leaves only.
                group.members.extend([dir.join("app"), dir.join("display")]);
            }
            Version::V1 => {
                for controller in ["pids", "cpu", "memory"] {
                    let parent = root.join(controller).join(PARENT);
                    make_dir(&parent)?;
                    let dir = parent.join(name);
                    make_dir(&dir)?;
                    group.dirs.push(dir.clone());
                    match controller {
                        "pids" => {
                            write(&dir.join("pids.max"), &limits.pids.to_string())?;
                            // Flat: its cgroup.procs lists every process of the session.
                            group.members.push(dir.clone());
                            group.join.push(dir);
                        }
                        "cpu" => group.cpu_leaves(&dir, limits)?,
                        _ => {
                            write(
                                &dir.join("memory.limit_in_bytes"),
                                &limits.memory_bytes.to_string(),
                            )?;
                            // Without swap accounting the file is absent: nothing to cap.
                            let memsw = dir.join("memory.memsw.limit_in_bytes");
                            if memsw.exists() {
                                let _ = fs::write(&memsw, limits.memory_bytes.to_string());
                            }
                            group.join.push(dir);
                        }
                    }
                }
            }
        }
        Ok(group)
    }

    /// Makes the `app` and `display` leaves of the session's folder `dir` with their CPU
    /// quotas; processes join `app`.
    fn cpu_leaves(&mut self, dir: &Path, limits: &Limits) -> Result<(), CgroupError> {
        for (leaf, millicores) in [
            ("app", limits.cpu_millicores),
            ("display", limits.display_millicores),
        ] {
            let leaf_dir = dir.join(leaf);
            make_dir(&leaf_dir)?;
            self.dirs.push(leaf_dir.clone());
            cpu_quota(&leaf_dir, self.version, millicores)?;
        }
        self.join.push(dir.join("app"));
        self.display = dir.join("display");
        Ok(())
    }

    /// The version it was made with.
    #[must_use]
    pub fn version(&self) -> Version {
        self.version
    }

    /// The files a process writes its pid to, to join the group (its `app` leaf for CPU) in
    /// every hierarchy.
    #[must_use]
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.join.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// The session's folders in every hierarchy, leaves included (what removing it removes).
    #[must_use]
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Moves process `pid` (and its threads) to the `display` leaf's CPU share.
    ///
    /// # Errors
    /// [`CgroupError::Io`] when the process is gone or not in the session.
    pub fn move_to_display(&self, pid: i32) -> Result<(), CgroupError> {
        write(&self.display.join("cgroup.procs"), &pid.to_string())
    }

    /// The pids in the group now.
    #[must_use]
    pub fn pids(&self) -> Vec<i32> {
        self.members
            .iter()
            .flat_map(|dir| {
                fs::read_to_string(dir.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect()
    }

    /// Peak memory use so far in bytes, where the machine reports it.
    #[must_use]
    pub fn memory_peak(&self) -> Option<u64> {
        let file = match self.version {
            Version::V2 => "memory.peak",
            Version::V1 => "memory.max_usage_in_bytes",
        };
        self.join
            .iter()
            .map(|d| d.join(file))
            .find(|p| p.exists())
            .and_then(|p| fs::read_to_string(p).ok())
            .and_then(|s| s.trim().parse().ok())
    }

    /// Sends `signal` to every process in the group.
    pub fn signal_all(&self, signal: rustix::process::Signal) {
        for pid in self.pids() {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                // Gone already: nothing to do.
                let _ = rustix::process::kill_process(pid, signal);
            }
        }
    }

    /// SIGKILLs every process in the group until it is empty or `within` has passed (a fork
    /// bomb refills it while it is read, up to its pids limit).
    ///
    /// # Errors
    /// [`CgroupError::Busy`] when processes remain.
    pub fn kill_all(&self, within: Duration) -> Result<(), CgroupError> {
        let deadline = Instant::now() + within;
        loop {
            let left = self.pids().len();
            if left == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(CgroupError::Busy {
                    path: self.members.first().cloned().unwrap_or_default(),
                    left,
                });
            }
            self.signal_all(rustix::process::Signal::KILL);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills what is left and removes the group from every hierarchy.
    ///
    /// # Errors
    /// [`CgroupError::Busy`] or [`CgroupError::Io`]; the group is then left behind.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.kill_all(Duration::from_secs(5))?;
        let dirs = std::mem::take(&mut self.dirs);
        remove_dirs(&dirs)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if self.dirs.is_empty() {
            return;
        }
        let _ = self.kill_all(Duration::from_secs(5));
        if let Err(e) = remove_dirs(&self.dirs) {
            tracing::warn!(error = %e, "a session's cgroup was left behind");
        }
    }
}

fn make_dir(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(dir)(e)),
    }
}

/// Removes the groups' folders; a group whose last process just exited may still read busy
/// for a moment.
fn remove_dirs(dirs: &[PathBuf]) -> Result<(), CgroupError> {
    for dir in dirs.iter().rev() {
        let mut tries = 0;
        loop {
            match fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(io(dir)(e)),
            }
        }
    }
    Ok(())
}
