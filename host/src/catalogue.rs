//! The app catalogue: which apps an edge hosts and how to start them.
//!
//! A TOML file (`apps.toml` next to the edge's data by default; docs/hosting.md has the full
//! reference), one `[[app]]` table per app:
//!
//! ```toml
//! [[app]]
//! id = "glxgears"                     # [a-z0-9_-], 1..=32 characters, unique
//! name = "glxgears (Mesa demo)"
//! command = "/usr/bin/glxgears"       # absolute, or found on PATH at start-up
//! args = ["-fullscreen"]
//! workdir = "/home/player"            # inside the sandbox; default its fresh home
//! env = { vblank_mode = "0" }
//! modes = ["1280x720@60", "1920x1080@60"]
//! fps_cap = 60                        # the capture never runs faster
//! exit_timeout_secs = 5               # SIGTERM, then this long, then SIGKILL
//! prepare = ["/usr/bin/true"]         # run in the sandbox before the app
//! undo = ["/usr/bin/true"]            # and after it
//! network = false                     # no network namespace of its own is shared
//! ```
//!
//! The built-in game is always in the catalogue as [`BUILTIN_ID`]; it is the only app whose
//! state the edge can checkpoint, and a catalogue entry may not claim otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edgeplay_protocol::mode::{Mode, RATES};
use serde::Deserialize;

/// The built-in game's app id.
pub const BUILTIN_ID: &str = "builtin";
/// Longest exit timeout an entry may ask for.
const MAX_EXIT_TIMEOUT_SECS: u64 = 60;
/// Longest id.
const MAX_ID_LEN: usize = 32;

/// One app the edge can host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct App {
    /// Its id in session requests and the broker's index.
    pub id: String,
    /// What players see.
    pub name: String,
    /// What to start; `None` for the built-in game.
    pub launch: Option<Launch>,
    /// The modes a session of it may have.
    pub modes: Vec<Mode>,
    /// Highest frame rate the capture runs at.
    pub fps_cap: u32,
    /// Whether the edge can checkpoint its state (only the built-in game).
    pub checkpoint: bool,
}

/// How to start a hosted app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// The program, resolved to an absolute path at load.
    pub command: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its working directory inside the sandbox (`None`: the sandbox's home).
    pub workdir: Option<PathBuf>,
    /// Extra environment, on top of the sandbox's (`DISPLAY`, `PULSE_SERVER`, the mode).
    pub env: BTreeMap<String, String>,
    /// SIGTERM, then this long, then SIGKILL.
    pub exit_timeout: std::time::Duration,
    /// Run in the sandbox before the app.
    pub prepare: Option<Vec<String>>,
    /// Run in the sandbox after the app.
    pub undo: Option<Vec<String>>,
}

/// The apps of one edge: the built-in game first, then the file's in its order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Catalogue {
    apps: Vec<App>,
}

/// Why a catalogue was refused; each names the file, and the entry and field where it can.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The file could not be read.
    #[error("app catalogue {path}: cannot read it: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML of the catalogue's shape (toml names the line, column and key).
    #[error("app catalogue {path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with its line and column.
        message: String,
    },
    /// An entry is well formed but cannot be hosted.
    #[error("app catalogue {path}: app `{id}`, field `{field}`: {reason}")]
    Entry {
        /// The file.
        path: PathBuf,
        /// The entry's id (or its position when the id itself is wrong).
        id: String,
        /// The field at fault.
        field: &'static str,
        /// What is wrong and what to do.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    app: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    name: String,
    command: String,
    #[serde(default)]
    args: Vec<String>,
    workdir: Option<PathBuf>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    modes: Vec<Mode>,
    fps_cap: Option<u32>,
    exit_timeout_secs: Option<u64>,
    prepare: Option<Vec<String>>,
    undo: Option<Vec<String>>,
    #[serde(default)]
    network: bool,
    #[serde(default)]
    checkpoint: bool,
}

impl Catalogue {
    /// Only the built-in game (an edge without a catalogue file).
    #[must_use]
    pub fn builtin_only() -> Self {
        Self {
            apps: vec![builtin()],
        }
    }

    /// Reads and checks `path`.
    ///
    /// # Errors
    /// [`CatalogueError`] naming the file, and the entry and field at fault.
    pub fn load(path: &Path) -> Result<Self, CatalogueError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogueError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, &std::env::var_os("PATH").unwrap_or_default())
    }

    /// Checks a catalogue's text (`path` only names it in errors); commands without a `/` are
    /// looked up on `search_path` (a `PATH`-style list).
    ///
    /// # Errors
    /// As [`Self::load`].
    pub fn parse(
        text: &str,
        path: &Path,
        search_path: &std::ffi::OsStr,
    ) -> Result<Self, CatalogueError> {
        let file: File = toml::from_str(text).map_err(|e| CatalogueError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let mut apps = vec![builtin()];
        for (n, entry) in file.app.into_iter().enumerate() {
            let app = check(entry, n, search_path).map_err(|(id, field, reason)| {
                CatalogueError::Entry {
                    path: path.to_owned(),
                    id,
                    field,
                    reason,
                }
            })?;
            if apps.iter().any(|a| a.id == app.id) {
                return Err(CatalogueError::Entry {
                    path: path.to_owned(),
                    id: app.id,
                    field: "id",
                    reason: "another app has this id (the built-in game is `builtin`)".into(),
                });
            }
            apps.push(app);
        }
        Ok(Self { apps })
    }

    /// Every app, the built-in game first.
    #[must_use]
    pub fn apps(&self) -> &[App] {
        &self.apps
    }

    /// The app of `id`.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.id == id)
    }
}

fn builtin() -> App {
    App {
        id: BUILTIN_ID.into(),
        name: "edgeplay (built-in game)".into(),
        launch: None,
        modes: vec![
            Mode::DEFAULT,
            Mode {
                width: 1920,
                height: 1080,
                fps: 30,
            },
            Mode {
                width: 1920,
                height: 1080,
                fps: 60,
            },
            Mode {
                width: 1280,
                height: 720,
                fps: 30,
            },
        ],
        fps_cap: 60,
        checkpoint: true,
    }
}

type EntryError = (String, &'static str, String);

fn check(e: Entry, n: usize, search_path: &std::ffi::OsStr) -> Result<App, EntryError> {
    let id_ok = !e.id.is_empty()
        && e.id.len() <= MAX_ID_LEN
        && e.id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !id_ok {
        return Err((
            format!(
                "#{} ({:?})",
                n + 1,
                e.id.chars().take(40).collect::<String>()
            ),
            "id",
            format!("1 to {MAX_ID_LEN} characters of a-z, 0-9, - and _"),
        ));
    }
    let id = e.id;
    let fail = |field, reason: String| Err((id.clone(), field, reason));
    if e.name.trim().is_empty() || e.name.len() > 100 {
        return fail("name", "1 to 100 characters".into());
    }
    if e.checkpoint {
        return fail(
            "checkpoint",
            "only the built-in game's state can be checkpointed; remove the field".into(),
        );
    }
    if e.network {
        return fail(
            "network",
            "hosted apps have no network yet (a user-mode network that keeps the edge's own \
             services out of reach is not built); remove the field"
                .into(),
        );
    }
    if e.modes.is_empty() {
        return fail(
            "modes",
            "list at least one mode, e.g. [\"1280x720@60\"]".into(),
        );
    }
    let fps_cap = e.fps_cap.unwrap_or(60);
    if fps_cap == 0 || fps_cap > RATES[RATES.len() - 1] {
        return fail("fps_cap", format!("1 to {} fps", RATES[RATES.len() - 1]));
    }
    let exit_timeout_secs = e.exit_timeout_secs.unwrap_or(5);
    if exit_timeout_secs > MAX_EXIT_TIMEOUT_SECS {
        return fail(
            "exit_timeout_secs",
            format!("at most {MAX_EXIT_TIMEOUT_SECS} s"),
        );
    }
    for (key, value) in &e.env {
        let key_ok = !key.is_empty()
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !key.starts_with("EDGEPLAY_");
        if !key_ok || value.contains('\0') {
            return fail(
                "env",
                format!(
                    "`{key}`: names are A-Z, a-z, 0-9 and _, not EDGEPLAY_*, values without NUL"
                ),
            );
        }
    }
    let command = match resolve(&e.command, search_path) {
        Ok(c) => c,
        Err(reason) => return fail("command", reason),
    };
    for (field, cmd) in [("prepare", &e.prepare), ("undo", &e.undo)] {
        if let Some(cmd) = cmd {
            match cmd.first() {
                None => return fail(field, "an empty command; remove the field".into()),
                Some(program) => {
                    if let Err(reason) = resolve(program, search_path) {
                        return fail(field, reason);
                    }
                }
            }
        }
    }
    if e.args
        .iter()
        .chain(e.prepare.iter().flatten())
        .chain(e.undo.iter().flatten())
        .any(|a| a.contains('\0'))
    {
        return fail("args", "arguments may not contain NUL".into());
    }
    if e.workdir.as_ref().is_some_and(|dir| !dir.is_absolute()) {
        return fail("workdir", "an absolute path inside the sandbox".into());
    }
    Ok(App {
        name: e.name,
        launch: Some(Launch {
            command,
            args: e.args,
            workdir: e.workdir,
            env: e.env,
            exit_timeout: std::time::Duration::from_secs(exit_timeout_secs),
            prepare: e.prepare,
            undo: e.undo,
        }),
        modes: e.modes,
        fps_cap,
        checkpoint: false,
        id,
    })
}

/// `command` as an absolute path to an executable file: as given when it has a `/`, else the
/// first match on `search_path`.
fn resolve(command: &str, search_path: &std::ffi::OsStr) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        let p = PathBuf::from(command);
        if !p.is_absolute() {
            return Err(format!(
                "`{command}`: give an absolute path or a bare program name"
            ));
        }
        if executable(&p) {
            return Ok(p);
        }
        return Err(format!(
            "`{command}` is not an executable file on this machine; install the app or fix the path"
        ));
    }
    std::env::split_paths(search_path)
        .map(|dir| dir.join(command))
        .find(|p| executable(p))
        .ok_or_else(|| {
            format!("`{command}` is not on PATH; install the app or give its absolute path")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Catalogue, CatalogueError> {
        Catalogue::parse(
            text,
            Path::new("apps.toml"),
            std::ffi::OsStr::new("/usr/bin:/bin"),
        )
    }

    const GOOD: &str = r#"
[[app]]
id = "sh"
name = "A shell"
command = "sh"
args = ["-c", "sleep 1"]
modes = ["1280x720@60", "1920x1080@30"]
env = { FOO = "bar" }
"#;

    #[test]
    fn reads_an_entry_with_defaults() {
        let cat = parse(GOOD).expect("good");
        assert_eq!(cat.apps().len(), 2);
        assert_eq!(cat.apps()[0].id, BUILTIN_ID);
        assert!(cat.apps()[0].checkpoint);
        let app = cat.get("sh").expect("sh");
        let launch = app.launch.as_ref().expect("hosted");
        assert!(launch.command.is_absolute() && launch.command.ends_with("sh"));
        assert_eq!(launch.exit_timeout, std::time::Duration::from_secs(5));
        assert_eq!(app.fps_cap, 60);
        assert_eq!(app.modes.len(), 2);
        assert!(!app.checkpoint);
    }

    fn refused(text: &str) -> String {
        parse(text).expect_err("refused").to_string()
    }

    #[test]
    fn names_the_line_and_field_of_a_malformed_entry() {
        let e = refused("[[app]]\nid = \"x\"\nname = \"X\"\ncommand = \"sh\"\nmodes = 5\n");
        assert!(e.contains("line 5") && e.contains("modes"), "{e}");
        let e = refused(
            "[[app]]\nid = \"x\"\nname = \"X\"\ncommand = \"sh\"\nmodes = [\"1280x720@60\"]\ncolour = 1\n",
        );
        assert!(e.contains("line 6") && e.contains("colour"), "{e}");
        let e = refused(
            "[[app]]\nid = \"x\"\nname = \"X\"\ncommand = \"sh\"\nmodes = [\"800x600@60\"]\n",
        );
        assert!(e.contains("line 5") && e.contains("800x600@60"), "{e}");
    }

    #[test]
    fn refuses_entries_it_cannot_host() {
        let with = |extra: &str| {
            refused(&format!(
                "[[app]]\nid = \"x\"\nname = \"X\"\ncommand = \"sh\"\nmodes = [\"1280x720@60\"]\n{extra}\n"
            ))
        };
        let e = with("checkpoint = true");
        assert!(e.contains("`checkpoint`") && e.contains("built-in"), "{e}");
        let e = with("fps_cap = 500");
        assert!(e.contains("`fps_cap`"), "{e}");
        let e = with("exit_timeout_secs = 3600");
        assert!(e.contains("`exit_timeout_secs`"), "{e}");
        let e = with("env = { EDGEPLAY_WIDTH = \"1\" }");
        assert!(e.contains("`env`"), "{e}");
        let e = with("prepare = []");
        assert!(e.contains("`prepare`"), "{e}");
        let e = with("workdir = \"relative\"");
        assert!(e.contains("`workdir`"), "{e}");
        let e = refused(
            "[[app]]\nid = \"x\"\nname = \"X\"\ncommand = \"no-such-program-42\"\nmodes = [\"1280x720@60\"]\n",
        );
        assert!(e.contains("`command`") && e.contains("not on PATH"), "{e}");
        let e = refused(
            "[[app]]\nid = \"x\"\nname = \"X\"\ncommand = \"/nonexistent/game\"\nmodes = [\"1280x720@60\"]\n",
        );
        assert!(e.contains("not an executable file"), "{e}");
        let e = refused(
            "[[app]]\nid = \"Bad Id\"\nname = \"X\"\ncommand = \"sh\"\nmodes = [\"1280x720@60\"]\n",
        );
        assert!(e.contains("#1") && e.contains("`id`"), "{e}");
        let e = refused(&format!("{GOOD}{GOOD}"));
        assert!(e.contains("another app has this id"), "{e}");
        let e = refused(
            "[[app]]\nid = \"builtin\"\nname = \"X\"\ncommand = \"sh\"\nmodes = [\"1280x720@60\"]\n",
        );
        assert!(e.contains("another app has this id"), "{e}");
    }
}
