//! The congestion controller on arbitrary transport-cc feedback: whatever the player reports
//! (arrival times that jump, go backwards or repeat, any loss pattern, any sizes, feedback at
//! any pace), it never panics and its target stays finite and within its bounds.
#![no_main]

use std::time::{Duration, Instant};

use edgeplay_rate::gcc::{Gcc, PacketResult};
use libfuzzer_sys::fuzz_target;

const MIN: f64 = 100_000.0;
const MAX: f64 = 10_000_000.0;

fuzz_target!(|data: &[u8]| {
    let epoch = Instant::now();
    let mut gcc = Gcc::new(1_000_000.0, MIN, MAX);
    let mut now = Duration::ZERO;
    // Each 8-byte record: departure step (u16 µs·16), arrival (u24 µs·4, 0xffffff = lost),
    // size (u16), and a flag byte that ends the feedback batch.
    let mut departure = Duration::ZERO;
    let mut batch = Vec::new();
    for r in data.chunks_exact(8) {
        departure += Duration::from_micros(u64::from(u16::from_le_bytes([r[0], r[1]])) * 16);
        let arrival = u32::from_le_bytes([r[2], r[3], r[4], 0]);
        batch.push(PacketResult {
            departure: epoch + departure,
            arrival: (arrival != 0x00ff_ffff)
                .then(|| Duration::from_micros(u64::from(arrival) * 4)),
            size: usize::from(u16::from_le_bytes([r[5], r[6]])),
        });
        if r[7] & 1 == 1 {
            now = now.max(departure) + Duration::from_millis(u64::from(r[7] >> 1));
            gcc.on_feedback(epoch + now, &batch);
            batch.clear();
            let t = gcc.target_bps();
            assert!(t.is_finite() && (MIN..=MAX).contains(&t), "{t}");
        }
    }
});
