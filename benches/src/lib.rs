//! Benches and end-to-end harnesses. The criterion benches live in `benches/benches/`; the
//! harness binaries in `src/bin/` share the pieces below.
//!
//! - [`whep`]: an HTTP server on loopback with the built web player and the edge's WHEP
//!   endpoint ([`edgeplay_edge::webrtc::Whep`], as `edge-agent run --dev` serves it);
//! - [`chromium`]: headless Chromium playing that page (client-sdk/web/tests/bench.mjs) and the
//!   latency samples it measured;
//! - [`summary`]: percentiles of a sample list.
#![forbid(unsafe_code)]

pub mod chromium;
pub mod whep;

use std::time::Duration;

use edgeplay_edge::stats::{Summary, Window};

/// The percentiles (and count, max) of `samples`; all zero when there are none.
#[must_use]
pub fn summary(samples: &[Duration]) -> Summary {
    let mut w = Window::new(samples.len().max(1));
    for &s in samples {
        w.record(s);
    }
    w.summary()
}

/// The bitrate (kbit/s) a bench gives each resolution, as `edge-agent run --dev` gives 720p60;
/// `None` for a configuration the benches do not run.
#[must_use]
pub fn bitrate_kbps(width: u32, height: u32, fps: u32) -> Option<u32> {
    match (width, height, fps) {
        (1280, 720, 60) => Some(6000),
        (1920, 1080, 30) => Some(8000),
        _ => None,
    }
}
