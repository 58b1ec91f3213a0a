//! Benches and end-to-end harnesses. The criterion benches live in `benches/benches/`; the
//! harness binaries in `src/bin/` share the pieces below.
//!
//! - [`whep`]: an HTTP server on loopback with the built web player and the edge's WHEP
//!   endpoint ([`edgeplay_edge::transport::webrtc::Whep`], as `edge-agent run --dev` serves it);
//! - [`broker_proc`]: a release broker on loopback, its HTTP client, signed edges and their
//!   heartbeats (the broker and soak benches);
//! - [`chromium`]: headless Chromium playing that page (client-sdk/web/tests/bench.mjs) and the
//!   latency samples it measured;
//! - [`summary`]: percentiles of a sample list; [`spread`]: a figure's range over repetitions;
//! - [`machine`] and [`load_average`]: what every bench prints beside its figures.
#![forbid(unsafe_code)]

pub mod broker_proc;
pub mod chromium;
pub mod whep;

use std::time::Duration;

use edgeplay_media::stats::{Summary, Window};

/// The percentiles (and count, max) of `samples`; all zero when there are none.
#[must_use]
pub fn summary(samples: &[Duration]) -> Summary {
    let mut w = Window::new(samples.len().max(1));
    for &s in samples {
        w.record(s);
    }
    w.summary()
}

/// The bitrate (kbit/s) a bench gives each configuration: what `edge-agent run` gives its live
/// sessions (720p60 at 6 Mbit/s, the only mode the live edge serves today); `None` for any
/// other.
#[must_use]
pub fn bitrate_kbps(width: u32, height: u32, fps: u32) -> Option<u32> {
    match (width, height, fps) {
        (1280, 720, 60) => Some(6000),
        _ => None,
    }
}

/// The machine the figures come from: its CPU model and the cores this process may use.
#[must_use]
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{model}, {cores} cores")
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg has them.
#[must_use]
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The lowest and highest of `values` as `lo–hi` with `decimals` places: the spread of a figure
/// over a bench's repetitions.
#[must_use]
pub fn spread(values: &[f64], decimals: usize) -> String {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.is_empty() {
        return "n/a".to_owned();
    }
    format!("{lo:.decimals$}–{hi:.decimals$}")
}
