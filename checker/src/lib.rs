//! Checker nodes: synthetic sessions that prove an edge delivers what it advertises.
//!
//! This crate is the checker's room in the workspace: it is not built yet. It will replay
//! `edgeplay_game::game` with a fresh seed and input script and compare every frame's
//! stamped state hash with its own simulation.
#![forbid(unsafe_code)]
