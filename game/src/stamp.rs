//! The frame stamp: 256 black-or-white luma cells drawn into every rendered picture.
//!
//! Layout (the contract between the renderer's shader, the CPU drawer and the reader):
//! - [`STAMP_COLS`] × [`STAMP_ROWS`] cells, each [`STAMP_CELL_PX`] px square in the rendered
//!   picture, on the 16 px macroblock grid, the first cell's top-left corner at
//!   ([`STAMP_CELL_PX`], [`STAMP_CELL_PX`]) (one cell of margin from the picture corner).
//! - Bit `i` (0..256) sits in column `i % STAMP_COLS`, row `i / STAMP_COLS`; a 1 is white
//!   (RGB 255,255,255 → Y 235), a 0 is black (RGB 0,0,0 → Y 16).
//! - In the `[u32; 8]` word form, bit `i` is `(words[i / 32] >> (i % 32)) & 1`.
//! - Bits 0..16: the sync word [`STAMP_SYNC`] (least significant bit first); bits 16..240: the
//!   28-byte payload (frame u32, tick u32, render_time_us u64, input_seq u32, state_hash u64,
//!   each little-endian, bytes in that order, each byte least significant bit first);
//!   bits 240..256: CRC-16/CCITT-FALSE of the 28 payload bytes.

/// Cells per stamp row.
pub const STAMP_COLS: usize = 32;
/// Stamp rows.
pub const STAMP_ROWS: usize = 8;
/// Bits (cells) in a stamp.
pub const STAMP_BITS: usize = STAMP_COLS * STAMP_ROWS;
/// Side of one cell in the rendered picture, in pixels: one macroblock.
pub const STAMP_CELL_PX: u32 = 16;
/// The 16-bit sync word that opens every stamp.
pub const STAMP_SYNC: u16 = 0xC35A;

/// What one frame's stamp carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// Frame number within the session, from 0.
    pub frame: u32,
    /// Game tick the picture shows.
    pub tick: u32,
    /// When rendering of this frame began: microseconds since the Unix epoch on the edge's clock.
    pub render_time_us: u64,
    /// Highest input sequence number applied to the state this picture shows (0: none yet).
    pub input_seq: u32,
    /// 64-bit hash of the game state this picture shows.
    pub state_hash: u64,
}

use crate::hash::crc16;

/// Payload bytes between the sync word and the CRC.
const PAYLOAD_BYTES: usize = 28;
/// Luma of a 0 cell (video-range black).
const LUMA_BLACK: u8 = 16;
/// Luma of a 1 cell (video-range white).
const LUMA_WHITE: u8 = 235;
/// Stamp width in cells, counting the one-cell margin to the left.
const SPAN_COLS: usize = STAMP_COLS + 1;
/// Stamp height in cells, counting the one-cell margin above.
const SPAN_ROWS: usize = STAMP_ROWS + 1;

/// Cell sizes in the reader are fixed-point: this many units per pixel.
const FRAC: u64 = 256;
/// Smallest cell the reader looks for: 4 px (a 1280x720 picture shown at 0.25×).
const MIN_CELL: u64 = 4 * FRAC;
/// Largest cell the reader looks for: 48 px (a 720p stamp shown at 3×).
const MAX_CELL: u64 = 48 * FRAC;
/// Cell sizes tried first: rendered size, 0.5×, 1.5×, 2× and 0.75×.
const PREFERRED_CELLS: [u64; 5] = [16 * FRAC, 8 * FRAC, 24 * FRAC, 32 * FRAC, 12 * FRAC];
/// The scan between [`MIN_CELL`] and [`MAX_CELL`] grows the cell by 1/this each step. The
/// farthest sampled cell edge sits ~33 cells from the origin and samples keep a quarter cell of
/// margin, so a step of c/200 leaves the last column at most ~0.08 cell off.
const SCAN_STEP_DIV: u64 = 200;
/// Least difference between the darkest and brightest sync cells for a candidate to count:
/// below this the area is flat and any "bits" are noise.
const MIN_CONTRAST: u32 = 40;
/// A cell whose mean is nearer the threshold than 1/this of the sync contrast is unclear: the
/// grid may straddle cell edges there (see [`Read`]).
const CLEAR_MARGIN_DIV: u32 = 4;

/// Why a stamp could not be drawn, decoded or found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StampError {
    /// No cell size between 4 and 48 px gave a stamp whose sync word matched.
    #[error(
        "no frame stamp found in the {width}x{height} picture: it may be cropped, too small or \
         carry no stamp; pass the whole decoded frame (the stamp sits one cell from the top-left \
         corner, cells 4 to 48 px)"
    )]
    NotFound {
        /// Picture width in pixels.
        width: usize,
        /// Picture height in pixels.
        height: usize,
    },
    /// The picture cannot hold a stamp at the size needed.
    #[error(
        "a {width}x{height} picture is too small for a frame stamp: it needs at least \
         {min_width}x{min_height}; render or decode at a larger size"
    )]
    TooSmall {
        /// Picture width in pixels.
        width: usize,
        /// Picture height in pixels.
        height: usize,
        /// Least width that can hold the stamp.
        min_width: usize,
        /// Least height that can hold the stamp.
        min_height: usize,
    },
    /// The first 16 bits are not [`STAMP_SYNC`].
    #[error(
        "stamp sync word is {found:#06x}, not {expected:#06x}: these bits are not a frame stamp; \
         check the bit order and the cell grid",
        expected = STAMP_SYNC
    )]
    BadSync {
        /// The sync word read.
        found: u16,
    },
    /// The sync word matched but the CRC did not: the stamp was damaged.
    #[error(
        "stamp CRC is {found:#06x} but its payload's CRC-16 is {computed:#06x}: the stamp was \
         damaged (bit errors, heavy compression or something drawn over it); read the next frame \
         or raise the bitrate"
    )]
    BadCrc {
        /// The CRC carried in the stamp.
        found: u16,
        /// The CRC of the payload as read.
        computed: u16,
    },
    /// The row stride is shorter than a row.
    #[error(
        "luma stride {stride} is smaller than the width {width}: pass the plane's row pitch in \
         bytes (at least the width)"
    )]
    StrideTooSmall {
        /// Row pitch given, in bytes.
        stride: usize,
        /// Picture width in pixels.
        width: usize,
    },
    /// The buffer is shorter than `stride * (height - 1) + width`.
    #[error(
        "luma buffer holds {len} bytes but a {width}x{height} plane with stride {stride} needs \
         {needed}: pass the whole plane, with its real width, height and stride"
    )]
    BufferTooSmall {
        /// Bytes given.
        len: usize,
        /// Bytes needed (`usize::MAX` when the size overflows).
        needed: usize,
        /// Picture width in pixels.
        width: usize,
        /// Picture height in pixels.
        height: usize,
        /// Row pitch in bytes.
        stride: usize,
    },
}

impl Stamp {
    /// The 28 payload bytes, in stamp order.
    fn payload(&self) -> [u8; PAYLOAD_BYTES] {
        let mut p = [0u8; PAYLOAD_BYTES];
        p[0..4].copy_from_slice(&self.frame.to_le_bytes());
        p[4..8].copy_from_slice(&self.tick.to_le_bytes());
        p[8..16].copy_from_slice(&self.render_time_us.to_le_bytes());
        p[16..20].copy_from_slice(&self.input_seq.to_le_bytes());
        p[20..28].copy_from_slice(&self.state_hash.to_le_bytes());
        p
    }

    /// The 256 stamp bits (sync, payload, CRC) in the word form of the module doc.
    #[must_use]
    pub fn to_bits(&self) -> [u32; 8] {
        let payload = self.payload();
        let mut bytes = [0u8; STAMP_BITS / 8];
        bytes[0..2].copy_from_slice(&STAMP_SYNC.to_le_bytes());
        bytes[2..30].copy_from_slice(&payload);
        bytes[30..32].copy_from_slice(&crc16(&payload).to_le_bytes());
        // Bit i is byte i/8, bit i%8 (LSB first), and word i/32, bit i%32: little-endian words
        // of the byte string are exactly that.
        let mut words = [0u32; 8];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(4)) {
            *w = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        words
    }

    /// Decodes the 256 stamp bits, checking the sync word and the CRC.
    ///
    /// # Errors
    /// [`StampError::BadSync`] when bits 0..16 are not [`STAMP_SYNC`], [`StampError::BadCrc`]
    /// when the CRC does not match the payload.
    pub fn from_bits(words: &[u32; 8]) -> Result<Stamp, StampError> {
        let mut bytes = [0u8; STAMP_BITS / 8];
        for (chunk, w) in bytes.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        let sync = u16::from_le_bytes([bytes[0], bytes[1]]);
        if sync != STAMP_SYNC {
            return Err(StampError::BadSync { found: sync });
        }
        let mut p = [0u8; PAYLOAD_BYTES];
        p.copy_from_slice(&bytes[2..30]);
        let found = u16::from_le_bytes([bytes[30], bytes[31]]);
        let computed = crc16(&p);
        if found != computed {
            return Err(StampError::BadCrc { found, computed });
        }
        let u32_at = |i: usize| u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) | (u64::from(u32_at(i + 4)) << 32);
        Ok(Stamp {
            frame: u32_at(0),
            tick: u32_at(4),
            render_time_us: u64_at(8),
            input_seq: u32_at(16),
            state_hash: u64_at(20),
        })
    }
}

/// Bit `i` of the word form.
fn bit(words: &[u32; 8], i: usize) -> bool {
    (words[i / 32] >> (i % 32)) & 1 == 1
}

/// [`StampError::TooSmall`] unless a `width` x `height` picture holds the stamp's span (its
/// cells and the one-cell margin left of and above them) at cells of `cell` pixels.
fn check_span(width: usize, height: usize, cell: usize) -> Result<(), StampError> {
    let (min_width, min_height) = (SPAN_COLS * cell, SPAN_ROWS * cell);
    if width < min_width || height < min_height {
        return Err(StampError::TooSmall {
            width,
            height,
            min_width,
            min_height,
        });
    }
    Ok(())
}

/// Checks that `luma` holds a `width`×`height` plane with row pitch `stride`.
fn check_plane(luma: &[u8], width: usize, height: usize, stride: usize) -> Result<(), StampError> {
    if stride < width {
        return Err(StampError::StrideTooSmall { stride, width });
    }
    let needed = if width == 0 || height == 0 {
        0
    } else {
        stride
            .checked_mul(height - 1)
            .and_then(|n| n.checked_add(width))
            .unwrap_or(usize::MAX)
    };
    if luma.len() < needed {
        return Err(StampError::BufferTooSmall {
            len: luma.len(),
            needed,
            width,
            height,
            stride,
        });
    }
    Ok(())
}

/// Draws `stamp` into a luma plane at the rendered size: [`STAMP_CELL_PX`] px cells, the first
/// one's corner at ([`STAMP_CELL_PX`], [`STAMP_CELL_PX`]), black 16 and white 235.
///
/// The GPU shader draws the same cells; this is the reference for tests and for back ends that
/// stamp on the CPU. Pixels outside the cells are left as they are.
///
/// # Errors
/// [`StampError::StrideTooSmall`] / [`StampError::BufferTooSmall`] when the buffer does not hold
/// the plane; [`StampError::TooSmall`] when the picture is smaller than 528×144.
pub fn draw_luma(
    stamp: &Stamp,
    luma: &mut [u8],
    width: usize,
    height: usize,
    stride: usize,
) -> Result<(), StampError> {
    check_plane(luma, width, height, stride)?;
    let cell = STAMP_CELL_PX as usize;
    check_span(width, height, cell)?;
    let words = stamp.to_bits();
    for row in 0..STAMP_ROWS {
        for y in (row + 1) * cell..(row + 2) * cell {
            let line = &mut luma[y * stride..y * stride + width];
            for col in 0..STAMP_COLS {
                let value = if bit(&words, row * STAMP_COLS + col) {
                    LUMA_WHITE
                } else {
                    LUMA_BLACK
                };
                line[(col + 1) * cell..(col + 2) * cell].fill(value);
            }
        }
    }
    Ok(())
}

/// A checked luma plane and one candidate cell size (fixed-point, [`FRAC`] per pixel).
struct Grid<'a> {
    luma: &'a [u8],
    stride: usize,
    cell: u64,
}

impl Grid<'_> {
    /// Pixel range `[start, end)` of the central half of cell `index` (0 is the margin cell).
    fn span(&self, index: usize) -> (usize, usize) {
        let c = self.cell;
        let origin = c * index as u64;
        // Round each edge to the nearest pixel boundary; keep at least one pixel.
        let start = (origin + c / 4 + FRAC / 2) / FRAC;
        let end = ((origin + 3 * c / 4 + FRAC / 2) / FRAC).max(start + 1);
        (start as usize, end as usize)
    }

    /// Whether every sampled pixel of the stamp lies inside a `width`×`height` picture.
    fn fits(&self, width: usize, height: usize) -> bool {
        self.span(STAMP_COLS).1 <= width && self.span(STAMP_ROWS).1 <= height
    }

    /// Mean luma of the central half of stamp cell (`col`, `row`); call only when [`Self::fits`].
    fn mean(&self, col: usize, row: usize) -> u32 {
        let (x0, x1) = self.span(col + 1);
        let (y0, y1) = self.span(row + 1);
        let mut sum: u64 = 0;
        for y in y0..y1 {
            let line = &self.luma[y * self.stride + x0..y * self.stride + x1];
            sum += line.iter().map(|&v| u64::from(v)).sum::<u64>();
        }
        let n = ((x1 - x0) * (y1 - y0)) as u64;
        (sum / n) as u32
    }

    /// Reads the stamp at this cell size: `None` when the sync word does not match.
    fn read(&self) -> Option<Read> {
        let mut sync_means = [0u32; 16];
        for (i, m) in sync_means.iter_mut().enumerate() {
            *m = self.mean(i, 0);
        }
        let dark = sync_means.iter().copied().min().unwrap_or(0);
        let bright = sync_means.iter().copied().max().unwrap_or(0);
        if bright - dark < MIN_CONTRAST {
            return None;
        }
        let threshold = (dark + bright) / 2;
        let sync = sync_means
            .iter()
            .enumerate()
            .fold(0u16, |acc, (i, &m)| acc | (u16::from(m > threshold) << i));
        if sync != STAMP_SYNC {
            return None;
        }
        let mut words = [0u32; 8];
        let mut unclear = 0;
        for i in 0..STAMP_BITS {
            let m = self.mean(i % STAMP_COLS, i / STAMP_COLS);
            if m.abs_diff(threshold) * CLEAR_MARGIN_DIV < bright - dark {
                unclear += 1;
            }
            if m > threshold {
                words[i / 32] |= 1 << (i % 32);
            }
        }
        Some(Read {
            result: Stamp::from_bits(&words),
            unclear,
        })
    }
}

/// What one grid read: the stamp or why not, and how many of its cells were unclear (a mean
/// within 1/[`CLEAR_MARGIN_DIV`] of the sync contrast from the threshold).
///
/// At the stamp's own scale every sampled half-cell lies inside one cell, so its mean sits near
/// the dark or the bright level (compression moves a few). A grid a few per cent off the
/// stamp's scale drifts across cell edges towards the far columns: it reads the stamp's bits
/// shifted, and the cells it straddles average out near the threshold. When the stamp is
/// damaged, such a read can pass the 16-bit CRC by chance (about once in 65,536 distinct
/// reads); the count of unclear cells tells the two apart.
#[derive(Debug, PartialEq, Eq)]
struct Read {
    result: Result<Stamp, StampError>,
    unclear: u32,
}

/// Reads the frame stamp from a decoded luma plane of unknown scale.
///
/// Tries cell sizes from 4 to 48 px (the likely ones, 16, 8, 24, 32 and 12, first, then a fine
/// scan), each with the stamp one cell from the top-left corner; averages the central half of each
/// cell and thresholds it halfway between the darkest and brightest sync-word cells. The first
/// size whose sync word and CRC both match with every cell clearly dark or bright wins at once;
/// otherwise, among the sizes whose sync word matched, the one with the fewest unclear cells
/// decides, CRC error and all (so a grid off the stamp's scale is not taken for a damaged
/// stamp). Works on the rendered picture, on scaled copies and on pictures through lossy H.264;
/// never panics on any input.
///
/// # Errors
/// [`StampError::StrideTooSmall`] / [`StampError::BufferTooSmall`] when the buffer does not hold
/// the plane; [`StampError::TooSmall`] below 132×36 (the stamp at 4 px cells);
/// [`StampError::BadCrc`] when the clearest grid with a matching sync word failed its CRC (the
/// stamp is damaged); [`StampError::NotFound`] when no sync word was found.
///
/// ```
/// use edgeplay_game::stamp::{Stamp, draw_luma, read_luma};
///
/// let (w, h) = (1280, 720);
/// let mut luma = vec![60u8; w * h];
/// let stamp = Stamp { frame: 3, tick: 4, render_time_us: 5, input_seq: 6, state_hash: 7 };
/// draw_luma(&stamp, &mut luma, w, h, w)?;
/// assert_eq!(read_luma(&luma, w, h, w)?, stamp);
/// # Ok::<(), edgeplay_game::stamp::StampError>(())
/// ```
pub fn read_luma(
    luma: &[u8],
    width: usize,
    height: usize,
    stride: usize,
) -> Result<Stamp, StampError> {
    check_plane(luma, width, height, stride)?;
    check_span(width, height, (MIN_CELL / FRAC) as usize)?;
    let scan = std::iter::successors(Some(MIN_CELL), |&c| Some(c + (c / SCAN_STEP_DIV).max(1)))
        .take_while(|&c| c <= MAX_CELL);
    let mut best: Option<Read> = None;
    for cell in PREFERRED_CELLS.into_iter().chain(scan) {
        let grid = Grid { luma, stride, cell };
        if !grid.fits(width, height) {
            continue;
        }
        let Some(read) = grid.read() else {
            continue;
        };
        if read.result.is_ok() && read.unclear == 0 {
            return read.result;
        }
        if best.as_ref().is_none_or(|b| read.unclear < b.unclear) {
            best = Some(read);
        }
    }
    best.map_or(Err(StampError::NotFound { width, height }), |b| b.result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Stamp {
        Stamp {
            frame: 0x0102_0304,
            tick: 987_654,
            render_time_us: 1_763_900_000_123_456,
            input_seq: 4242,
            state_hash: 0xDEAD_BEEF_0BAD_F00D,
        }
    }

    /// A plane with a gradient background, so the reader sees something picture-like around
    /// the stamp.
    fn plane(height: usize, stride: usize) -> Vec<u8> {
        let mut v = vec![0u8; stride * height];
        for y in 0..height {
            for x in 0..stride {
                v[y * stride + x] = ((x * 7 + y * 3) % 200 + 30) as u8;
            }
        }
        v
    }

    fn drawn(width: usize, height: usize) -> Vec<u8> {
        let mut v = plane(height, width);
        draw_luma(&sample(), &mut v, width, height, width).expect("draw");
        v
    }

    /// Area-average resampling by an arbitrary factor (a decent model of a scaler).
    fn resample(src: &[u8], w: usize, h: usize, nw: usize, nh: usize) -> Vec<u8> {
        let (sx, sy) = (w as f64 / nw as f64, h as f64 / nh as f64);
        let mut out = vec![0u8; nw * nh];
        for y in 0..nh {
            for x in 0..nw {
                let (x0, x1) = (x as f64 * sx, (x + 1) as f64 * sx);
                let (y0, y1) = (y as f64 * sy, (y + 1) as f64 * sy);
                let (mut sum, mut area) = (0.0, 0.0);
                let mut yy = y0.floor() as usize;
                while (yy as f64) < y1 && yy < h {
                    let wy = (y1.min(yy as f64 + 1.0) - y0.max(yy as f64)).max(0.0);
                    let mut xx = x0.floor() as usize;
                    while (xx as f64) < x1 && xx < w {
                        let wx = (x1.min(xx as f64 + 1.0) - x0.max(xx as f64)).max(0.0);
                        sum += f64::from(src[yy * w + xx]) * wx * wy;
                        area += wx * wy;
                        xx += 1;
                    }
                    yy += 1;
                }
                out[y * nw + x] = (sum / area).round() as u8;
            }
        }
        out
    }

    #[test]
    fn bits_round_trip_and_follow_the_layout() {
        let s = sample();
        let words = s.to_bits();
        assert_eq!(words[0] & 0xFFFF, u32::from(STAMP_SYNC));
        // frame's least significant byte (0x04) starts at bit 16, LSB first.
        assert_eq!((words[0] >> 16) & 0xFF, 0x04);
        let crc = crc16(&s.payload());
        assert_eq!(words[7] >> 16, u32::from(crc));
        assert_eq!(Stamp::from_bits(&words), Ok(s));
        for s in [
            Stamp::default(),
            Stamp {
                frame: u32::MAX,
                tick: u32::MAX,
                render_time_us: u64::MAX,
                input_seq: u32::MAX,
                state_hash: u64::MAX,
            },
        ] {
            assert_eq!(Stamp::from_bits(&s.to_bits()), Ok(s));
        }
    }

    #[test]
    fn damaged_bits_are_rejected() {
        let words = sample().to_bits();
        for i in 16..STAMP_BITS {
            let mut w = words;
            w[i / 32] ^= 1 << (i % 32);
            assert!(
                matches!(Stamp::from_bits(&w), Err(StampError::BadCrc { .. })),
                "bit {i}"
            );
        }
        let mut w = words;
        w[0] ^= 1;
        assert_eq!(
            Stamp::from_bits(&w),
            Err(StampError::BadSync {
                found: STAMP_SYNC ^ 1
            })
        );
    }

    #[test]
    fn draw_then_read_at_rendered_sizes() {
        for (w, h) in [(1280, 720), (1920, 1080), (528, 144)] {
            assert_eq!(read_luma(&drawn(w, h), w, h, w), Ok(sample()), "{w}x{h}");
        }
    }

    #[test]
    fn draw_then_read_with_padded_stride() {
        let (w, h, stride) = (1280, 720, 1344);
        let mut v = plane(h, stride);
        draw_luma(&sample(), &mut v, w, h, stride).expect("draw");
        // The last row may stop at the width.
        v.truncate(stride * (h - 1) + w);
        assert_eq!(read_luma(&v, w, h, stride), Ok(sample()));
    }

    #[test]
    fn reads_after_two_times_box_downscale() {
        let (w, h) = (1280, 720);
        let src = drawn(w, h);
        let (nw, nh) = (w / 2, h / 2);
        let mut half = vec![0u8; nw * nh];
        for y in 0..nh {
            for x in 0..nw {
                let s = |dx: usize, dy: usize| u32::from(src[(2 * y + dy) * w + 2 * x + dx]);
                half[y * nw + x] = ((s(0, 0) + s(1, 0) + s(0, 1) + s(1, 1) + 2) / 4) as u8;
            }
        }
        assert_eq!(read_luma(&half, nw, nh, nw), Ok(sample()));
    }

    #[test]
    fn reads_after_arbitrary_rescales() {
        let (w, h) = (1280, 720);
        let src = drawn(w, h);
        // 480p, 540p, 0.75x, 1080p upscale, 0.3x and an odd 0.61x.
        for (nw, nh) in [
            (854, 480),
            (960, 540),
            (960, 540),
            (1920, 1080),
            (384, 216),
            (781, 439),
        ] {
            let dst = resample(&src, w, h, nw, nh);
            assert_eq!(read_luma(&dst, nw, nh, nw), Ok(sample()), "{nw}x{nh}");
        }
    }

    #[test]
    fn reads_through_noise() {
        let (w, h) = (1280, 720);
        let mut v = drawn(w, h);
        let mut state: u32 = 12345;
        for p in &mut v {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (state >> 16) as i32 % 41 - 20; // -20..=20
            *p = (i32::from(*p) + noise).clamp(0, 255) as u8;
        }
        assert_eq!(read_luma(&v, w, h, w), Ok(sample()));
    }

    #[test]
    fn a_flipped_payload_cell_is_a_crc_error() {
        let (w, h) = (1280, 720);
        let mut v = drawn(w, h);
        // Bit 40: column 8, row 1.
        let (col, row) = (8, 1);
        let cell = STAMP_CELL_PX as usize;
        for y in (row + 1) * cell..(row + 2) * cell {
            for x in (col + 1) * cell..(col + 2) * cell {
                v[y * w + x] = if v[y * w + x] == LUMA_WHITE {
                    LUMA_BLACK
                } else {
                    LUMA_WHITE
                };
            }
        }
        assert!(matches!(
            read_luma(&v, w, h, w),
            Err(StampError::BadCrc { .. })
        ));
    }

    /// Two flipped cells: the grid at the drawn size reads a bad CRC, and a grid 2 % larger,
    /// whose far columns straddle cell edges, once read a shifted pattern whose CRC matched by
    /// chance. That read must not count.
    #[test]
    fn a_shifted_grid_is_not_taken_for_a_damaged_stamp() {
        let (w, h) = (640, 360);
        let mut v = drawn(w, h);
        let cell = STAMP_CELL_PX as usize;
        let mut words = sample().to_bits();
        for i in [191, 104] {
            words[i / 32] ^= 1 << (i % 32);
            let (col, row) = (i % STAMP_COLS, i / STAMP_COLS);
            for y in (row + 1) * cell..(row + 2) * cell {
                for p in &mut v[y * w + (col + 1) * cell..y * w + (col + 2) * cell] {
                    *p = if *p == LUMA_WHITE {
                        LUMA_BLACK
                    } else {
                        LUMA_WHITE
                    };
                }
            }
        }
        let drawn = Grid {
            luma: &v,
            stride: w,
            cell: 16 * FRAC,
        }
        .read()
        .expect("sync");
        assert!(matches!(drawn.result, Err(StampError::BadCrc { .. })));
        assert_eq!(drawn.unclear, 0, "flipped cells are clear cells");
        let shifted = Grid {
            luma: &v,
            stride: w,
            cell: 16 * FRAC + 90,
        };
        assert!(shifted.fits(w, h));
        let shifted = shifted.read().expect("sync");
        assert!(
            shifted.result.is_ok(),
            "the shifted read's CRC matches by chance"
        );
        assert!(shifted.unclear > 16, "{} unclear cells", shifted.unclear);
        let Err(expected) = Stamp::from_bits(&words) else {
            panic!("two flips should break the CRC");
        };
        assert_eq!(read_luma(&v, w, h, w), Err(expected));
    }

    #[test]
    fn no_stamp_is_not_found_and_bad_shapes_are_errors() {
        let (w, h) = (640, 360);
        assert_eq!(
            read_luma(&plane(h, w), w, h, w),
            Err(StampError::NotFound {
                width: w,
                height: h
            })
        );
        assert_eq!(
            read_luma(&vec![128; w * h], w, h, w),
            Err(StampError::NotFound {
                width: w,
                height: h
            })
        );
        assert!(matches!(
            read_luma(&[], 0, 0, 0),
            Err(StampError::TooSmall { .. })
        ));
        assert!(matches!(
            read_luma(&[0; 10], 10, 1, 5),
            Err(StampError::StrideTooSmall { .. })
        ));
        assert!(matches!(
            read_luma(&[0; 10], 640, 360, 640),
            Err(StampError::BufferTooSmall { .. })
        ));
        assert!(matches!(
            read_luma(&[0; 10], 2, usize::MAX, usize::MAX),
            Err(StampError::BufferTooSmall {
                needed: usize::MAX,
                ..
            })
        ));
        let mut small = vec![0u8; 527 * 144];
        assert!(matches!(
            draw_luma(&sample(), &mut small, 527, 144, 527),
            Err(StampError::TooSmall { .. })
        ));
    }

    #[test]
    fn errors_say_what_to_do() {
        let msg = StampError::NotFound {
            width: 10,
            height: 20,
        }
        .to_string();
        assert!(msg.contains("10x20") && msg.contains("cropped"), "{msg}");
        let msg = StampError::BadSync { found: 0x1234 }.to_string();
        assert!(msg.contains("0x1234") && msg.contains("0xc35a"), "{msg}");
    }

    proptest! {
        #[test]
        fn read_luma_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..20_000),
            width in 0usize..400,
            height in 0usize..200,
            pad in 0usize..8,
        ) {
            let _ = read_luma(&bytes, width, height, width + pad);
            let _ = read_luma(&bytes, width, height, width.saturating_sub(pad));
        }

        /// Whole planes of random content, so the reader runs its full candidate scan.
        #[test]
        fn read_luma_never_panics_on_whole_planes(
            (width, height, stride, bytes) in (0usize..700, 0usize..200, 0usize..5).prop_flat_map(
                |(w, h, pad)| (Just(w), Just(h), Just(w + pad),
                    proptest::collection::vec(any::<u8>(), (w + pad) * h))
            )
        ) {
            let _ = read_luma(&bytes, width, height, stride);
        }

        /// A drawn stamp with random cells inverted reads back intact or fails with an error:
        /// never a wrong stamp at the drawn size's grid, never a panic.
        #[test]
        fn damaged_stamps_read_back_or_fail(flips in proptest::collection::vec(0usize..STAMP_BITS, 0..4)) {
            let (w, h) = (640, 360);
            let mut v = drawn(w, h);
            let cell = STAMP_CELL_PX as usize;
            let mut words = sample().to_bits();
            for &i in &flips {
                words[i / 32] ^= 1 << (i % 32);
                let (col, row) = (i % STAMP_COLS, i / STAMP_COLS);
                for y in (row + 1) * cell..(row + 2) * cell {
                    for p in &mut v[y * w + (col + 1) * cell..y * w + (col + 2) * cell] {
                        *p = if *p == LUMA_WHITE { LUMA_BLACK } else { LUMA_WHITE };
                    }
                }
            }
            let read = read_luma(&v, w, h, w);
            match Stamp::from_bits(&words) {
                Ok(s) => prop_assert_eq!(read, Ok(s)),
                Err(StampError::BadSync { .. }) => prop_assert!(read.is_err()),
                Err(e) => prop_assert_eq!(read, Err(e)),
            }
        }

        #[test]
        fn bits_round_trip(frame: u32, tick: u32, render_time_us: u64, input_seq: u32, state_hash: u64) {
            let s = Stamp { frame, tick, render_time_us, input_seq, state_hash };
            prop_assert_eq!(Stamp::from_bits(&s.to_bits()), Ok(s));
        }
    }
}
