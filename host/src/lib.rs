//! Hosted apps: an edge streams an unmodified Linux game or app, one sandbox per session.
//!
//! - [`catalogue`]: the edge's app catalogue (a TOML file), checked at start-up.
//! - [`cgroup`]: a session's CPU, memory and process limits (cgroup v2, or v1 where the machine
//!   has only that), and stopping every process in it.
//! - [`sandbox`]: one session's sandbox: bubblewrap namespaces (pid, ipc, uts, and network
//!   unless granted) holding its own X display (Xvfb) at the session's mode, its own sound
//!   server with a 48 kHz null sink, and the app, run as a user of its own; torn down whole.
//! - [`display`]: the edge's connection to a session's display: the picture by MIT-SHM (a
//!   segment the X server makes and passes by file descriptor, so it crosses the sandbox's IPC
//!   namespace), keyboard and pointer by XTEST.
//! - [`keymap`]: `KeyboardEvent.code` names to X keycodes.
//!
//! Everything read from the game's side (the display's replies, the sound, the sockets) is
//! untrusted: sizes are checked against the mode, and a display that misbehaves ends its
//! session, not the edge.

pub mod catalogue;
pub mod cgroup;
pub mod display;
pub mod keymap;
pub mod sandbox;
