//! `read_luma` on arbitrary planes. The first 6 bytes pick the width, height, stride padding and
//! a mode (sizes bounded so a run stays fast); the rest is picture data:
//! - mode 0: the bytes as the plane, whatever their length;
//! - mode 1: a plane of the right size filled by repeating the bytes;
//! - mode 2: a drawn stamp damaged by the bytes (pairs of offset, xor), which drives the reader
//!   past the sync word into the CRC and the full bit grid.
#![no_main]

use edgeplay_game::stamp::{Stamp, draw_luma, read_luma};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<6>() else {
        return;
    };
    let width = usize::from(u16::from_le_bytes([head[0], head[1]]) % 1024);
    let height = usize::from(u16::from_le_bytes([head[2], head[3]]) % 400);
    // Mostly a padded stride; sometimes (255) one shorter than the width, which must be an error.
    let stride = match head[4] {
        255 => width.saturating_sub(1),
        pad => width + usize::from(pad),
    };
    match head[5] % 3 {
        0 => {
            let _ = read_luma(rest, width, height, stride);
        }
        1 if !rest.is_empty() => {
            let plane: Vec<u8> = rest.iter().copied().cycle().take(stride * height).collect();
            let _ = read_luma(&plane, width, height, stride);
        }
        2 => {
            let mut plane = vec![128u8; stride * height];
            let stamp = Stamp {
                frame: 7,
                tick: 8,
                render_time_us: 9,
                input_seq: 10,
                state_hash: 0x0123_4567_89ab_cdef,
            };
            if draw_luma(&stamp, &mut plane, width, height, stride).is_err() {
                return;
            }
            let len = plane.len();
            for d in rest.chunks_exact(4) {
                let at = usize::from(u16::from_le_bytes([d[0], d[1]])) * 64 + usize::from(d[2]);
                if let Some(p) = plane.get_mut(at % len) {
                    *p ^= d[3];
                }
            }
            let _ = read_luma(&plane, width, height, stride);
        }
        _ => {}
    }
});
