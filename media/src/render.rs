//! Renders a session's game on the GPU as NV12 and reads it back, ready for the encoder.
//!
//! One [`RenderTarget`] per session, made by [`Gpu::create_target`]; each frame:
//!
//! ```no_run
//! # fn main() -> Result<(), edgeplay_media::gpu::GpuError> {
//! use edgeplay_media::gpu::Gpu;
//! use edgeplay_game::{game::Scene, stamp::Stamp};
//!
//! let gpu = Gpu::new()?; // once per process, shared by the sessions
//! let mut target = gpu.create_target(1280, 720)?;
//! let mut nv12 = vec![0u8; target.nv12_len()]; // pooled by the caller, not per frame
//! let times = target.render_nv12(&Scene::default(), &Stamp::default(), &mut nv12)?;
//! println!("render {:?} readback {:?}", times.render, times.readback);
//! # Ok(())
//! # }
//! ```
//!
//! The CPU turns the scene into pixel-space integer geometry (1/16 px fixed point, see
//! `FrameUniform`), and `shaders/render.comp` only does integer tests on it, so a scene gives
//! bit-identical pixels wherever it is drawn.
//!
//! The CPU also bins the shapes into 16x16 px tiles (`Binner`) and sorts the tiles into four
//! kinds: background only, background and bodies, any other shape, a cell of the stamp.
//! render.comp runs one pipeline per kind, each over its own list of tiles (an indirect
//! dispatch, one workgroup per tile), and each draws its tiles and writes them as NV12 straight
//! away. On a real GPU that saves little; on CPU Vulkan (lavapipe), which runs every branch and
//! every loop body of a shader at every pixel whether taken or not, and pays for each storage
//! access with a loop over its SIMD lanes, it is what makes a 720p frame cost about a
//! millisecond instead of six (see the README's figures).
//!
//! Background-only tiles are drawn only when their pixels change: when the tile held a shape
//! in the picture last drawn into the same NV12 slot (the target has several, see
//! [`RenderTarget::render_frame`]), or when the background itself changed since (the hit flash
//! tints the border, or it is the slot's first frame). The slot keeps the others from that
//! picture, which drew the same bits. The test variant that stores RGBA draws every tile.

use std::f64::consts::TAU;
use std::fmt;
use std::time::{Duration, Instant};

use edgeplay_game::game::{ARENA_H, ARENA_W, MAX_BODIES, Scene};
use edgeplay_game::stamp::{STAMP_CELL_PX, STAMP_COLS, STAMP_ROWS, Stamp};

use crate::convert::nv12_len;
pub use crate::gpu::Nv12Frame;
use crate::gpu::{Gpu, GpuError, KINDS, NV12_SLOTS, Target};

/// The production resolutions.
pub const SUPPORTED_RESOLUTIONS: [(u32, u32); 2] = [(1280, 720), (1920, 1080)];

/// Fixed-point steps per pixel in the uniform's geometry (`SUB` in render.comp).
const SUB: i64 = 16;
/// Largest body radius drawn, in pixels: keeps the shader's squares within `i32`.
const MAX_BODY_RADIUS_PX: i64 = 1024;
/// Largest ship radius drawn, in pixels: keeps the triangle edge functions within `i32`.
const MAX_SHIP_RADIUS_PX: i64 = 512;
/// Positions are clamped to ±this many 1/16 px, far off screen but safe from overflow.
const COORD_LIMIT: i64 = 1 << 20;
/// Words of `FrameUniform` (see render.comp's `Frame` block).
const UNIFORM_WORDS: usize = slot::STAMP + 8;
const UNIFORM_BYTES: usize = UNIFORM_WORDS * 4;
/// Tile side in pixels: render.comp's workgroup, and one stamp cell.
const TILE: u32 = 16;
/// Bit of body `i` in a tile's mask is `1 << i` (render.comp's `BODY_BITS`); the flame's and
/// the ship's are `TRIANGLE_BIT << i` (`TRIANGLE_SHIFT`); the score's is `DIGITS_BIT`.
const BODY_BITS: u32 = 0xFFFF;
const TRIANGLE_BIT: u32 = 1 << 16;
const DIGITS_BIT: u32 = 1 << 18;
// Kinds of tile, each drawn by its own pipeline (render.comp's `KIND`; gpu::KINDS of them).
const KIND_PLAIN: usize = 0;
const KIND_BODIES: usize = 1;
const KIND_SHAPES: usize = 2;
const KIND_STAMP: usize = 3;
/// Words of the jobs buffer's head: one `uvec4` (a `VkDispatchIndirectCommand` and the first
/// job's index) per kind, the plain kind's covering only the tiles to redraw, then one more for
/// every plain tile (the RGBA variant's).
const JOBS_HEAD_WORDS: usize = 4 * (KINDS + 1);
const _: () = assert!(MAX_BODIES <= 16);
/// Colours of the ship and its flame, packed RGBA8.
const SHIP_COLOUR: u32 = rgb(232, 240, 255);
const FLAME_COLOUR: u32 = rgb(255, 150, 40);

/// Time spent in each stage of one frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageTimes {
    /// Drawing the scene as NV12 on the GPU (one pass: the colour convert is part of it). GPU
    /// time from timestamps, or submit-to-fence time.
    pub render: Duration,
    /// Copying the NV12 picture from host-visible GPU memory into the caller's buffer.
    pub readback: Duration,
}

/// Checks a render target size: the production sizes, or for tests any width multiple of 16
/// and height multiple of 8, at least 64x64 (whole 4x2 conversion blocks, whole stamp cells).
///
/// # Errors
/// [`GpuError::UnsupportedResolution`].
pub fn check_resolution(width: u32, height: u32) -> Result<(), GpuError> {
    let production = SUPPORTED_RESOLUTIONS.contains(&(width, height));
    let test_size = width.is_multiple_of(16)
        && height.is_multiple_of(8)
        && width >= 64
        && height >= 64
        && width <= 4096
        && height <= 4096;
    if production || test_size {
        Ok(())
    } else {
        Err(GpuError::UnsupportedResolution { width, height })
    }
}

impl Gpu {
    /// Makes a session's render target of `width` x `height`.
    ///
    /// # Errors
    /// [`GpuError::UnsupportedResolution`] (see [`check_resolution`]), or a Vulkan failure
    /// (out of memory, device lost).
    pub fn create_target(&self, width: u32, height: u32) -> Result<RenderTarget, GpuError> {
        check_resolution(width, height)?;
        let binner = Binner::new(width, height);
        let jobs_bytes = (JOBS_HEAD_WORDS + 2 * binner.masks.len()) * 4;
        Ok(RenderTarget {
            target: Target::new(self, width, height, UNIFORM_BYTES, jobs_bytes)?,
            uniform: FrameUniform::default(),
            binner,
            width,
            height,
        })
    }
}

/// One session's render target: GPU buffers and pre-recorded commands reused every frame.
pub struct RenderTarget {
    target: Target,
    uniform: FrameUniform,
    binner: Binner,
    width: u32,
    height: u32,
}

impl fmt::Debug for RenderTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderTarget")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

impl RenderTarget {
    /// Width in pixels.
    #[must_use]
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    #[must_use]
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bytes of one NV12 frame: the length `render_nv12` wants for `out`.
    #[must_use]
    pub fn nv12_len(&self) -> usize {
        nv12_len(self.width, self.height)
    }

    /// Draws `scene` with `stamp` as NV12 on the GPU and copies it into `out`
    /// ([`RenderTarget::nv12_len`] bytes: Y plane, then interleaved UV plane, both with a
    /// stride of `width`). Blocks until the GPU is done.
    ///
    /// # Errors
    /// [`GpuError::BufferSize`] if `out` has the wrong length; [`GpuError::DeviceLost`],
    /// [`GpuError::Timeout`] or another Vulkan failure.
    pub fn render_nv12(
        &mut self,
        scene: &Scene,
        stamp: &Stamp,
        out: &mut [u8],
    ) -> Result<StageTimes, GpuError> {
        if out.len() != self.nv12_len() {
            return Err(GpuError::BufferSize {
                what: "NV12 output",
                expected: self.nv12_len(),
                actual: out.len(),
            });
        }
        let render = self.draw(scene, stamp, None)?;
        let start = Instant::now();
        out.copy_from_slice(self.target.nv12()?);
        Ok(StageTimes {
            render,
            readback: start.elapsed(),
        })
    }

    /// Draws `scene` with `stamp` as NV12 on the GPU into memory the CPU reads in place: no
    /// copy (the stage times' readback is zero). The picture is the same as
    /// [`Self::render_nv12`]'s; the target draws into other slots while the frame is held.
    /// `Ok(None)`, drawing nothing, when every slot is lent out or the device's host-visible
    /// memory is not cached; [`Self::render_nv12`] then serves.
    ///
    /// # Errors
    /// As [`Self::render_nv12`].
    pub fn render_frame(
        &mut self,
        scene: &Scene,
        stamp: &Stamp,
    ) -> Result<Option<(Nv12Frame, StageTimes)>, GpuError> {
        let Some(frame) = self.target.lend() else {
            return Ok(None);
        };
        let render = self.draw(scene, stamp, Some(&frame))?;
        Ok(Some((
            frame,
            StageTimes {
                render,
                readback: Duration::ZERO,
            },
        )))
    }

    /// Fills the frame's uniform and tile jobs and draws it into the slot of `into` (slot 0
    /// when `None`); the slot's damage state is forgotten when the draw fails.
    fn draw(
        &mut self,
        scene: &Scene,
        stamp: &Stamp,
        into: Option<&Nv12Frame>,
    ) -> Result<Duration, GpuError> {
        self.uniform
            .fill(scene, stamp, self.width, self.height, &mut self.binner);
        let slot = into.map_or(0, Nv12Frame::slot);
        let (uniform, binner) = (&self.uniform, &mut self.binner);
        self.target
            .execute(into, |uniform_words, job_words| {
                write_uniform(uniform_words, uniform);
                binner.write_jobs(job_words, scene.flash, slot);
            })
            .inspect_err(|_| self.binner.forget(slot))
    }

    /// Copies the RGBA picture (R first, `width * height * 4` bytes) of the last frame into
    /// `out`. For tests and debugging: it draws the frame again, storing RGBA too, and costs a
    /// GPU copy and wait.
    ///
    /// # Errors
    /// [`GpuError::BufferSize`] if `out` has the wrong length, or a Vulkan failure.
    pub fn read_rgba(&mut self, out: &mut [u8]) -> Result<(), GpuError> {
        // The pass redraws every tile of the last frame into slot 0, whatever it held.
        self.binner.forget(0);
        self.target.read_rgba(out)
    }
}

/// Copies the frame's uniform words into the mapped uniform buffer (little-endian).
fn write_uniform(to: &mut [u32], uniform: &FrameUniform) {
    for (dst, src) in to.iter_mut().zip(uniform.words) {
        *dst = src.to_le();
    }
}

/// The `Frame` uniform block of render.comp, std140 with 16-byte members only, so a flat
/// array of little-endian 32-bit words; `slot` has the word offsets.
#[derive(Clone)]
struct FrameUniform {
    words: [u32; UNIFORM_WORDS],
}

impl Default for FrameUniform {
    fn default() -> Self {
        Self {
            words: [0; UNIFORM_WORDS],
        }
    }
}

/// Word offsets of the members of render.comp's `Frame` block.
mod slot {
    pub const DIMS: usize = 0;
    pub const DIGIT_BOX: usize = 4;
    pub const DIGIT_GEO: usize = 8;
    pub const GRID_INV: usize = 12;
    pub const BODIES: usize = 16;
    /// Two `Triangle`s of three `ivec4`s: flame, then ship.
    pub const TRIANGLES: usize = BODIES + 4 * super::MAX_BODIES;
    pub const DIGIT_SEGMENTS: usize = TRIANGLES + 24;
    pub const STAMP: usize = DIGIT_SEGMENTS + 8;
}

/// Colours of the bodies, packed RGBA8 (R in the low byte) as the shader writes them.
const PALETTE: [u32; 8] = [
    rgb(239, 83, 80),   // red
    rgb(255, 167, 38),  // orange
    rgb(255, 238, 88),  // yellow
    rgb(102, 187, 106), // green
    rgb(38, 198, 218),  // cyan
    rgb(66, 133, 244),  // blue
    rgb(171, 71, 188),  // purple
    rgb(236, 64, 122),  // pink
];

/// Segments a..g (bits 0..6) lit for the digits 0..9.
const SEGMENTS: [u32; 10] = [0x3F, 0x06, 0x5B, 0x4F, 0x66, 0x6D, 0x7D, 0x07, 0x7F, 0x6F];

const fn rgb(r: u8, g: u8, b: u8) -> u32 {
    u32::from_le_bytes([r, g, b, 255])
}

/// Game units → 1/16 px along an axis of `pixels` covering `arena` units.
fn to_fixed(units: i32, pixels: u32, arena: i32) -> i64 {
    (i64::from(units) * i64::from(pixels) * SUB / i64::from(arena)).clamp(-COORD_LIMIT, COORD_LIMIT)
}

/// A uniform word: 0..=u32::MAX as is (packed colours), negative values as the bits of an
/// `i32` (clamped; every coordinate is already far inside it).
fn word(v: i64) -> u32 {
    u32::try_from(v).unwrap_or_else(|_| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "two's complement bits of an i32, as the shader reads them"
        )]
        let w = v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32 as u32;
        w
    })
}

/// A triangle in 1/16 px, counter-clockwise on screen (as render.comp's edge test wants), and
/// its conservative pixel bounding box (inclusive; an empty box draws nothing), laid out as
/// the shader's `Triangle`: a.xy b.xy, c.xy colour pad, box.
fn triangle(v: [(f64, f64); 3], colour: u32) -> [i64; 12] {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_precision_loss,
        reason = "clamped to COORD_LIMIT (2^20) before the cast"
    )]
    let fixed = |x: f64| x.round().clamp(-(COORD_LIMIT as f64), COORD_LIMIT as f64) as i64;
    let [a, mut b, mut c] = v.map(|(x, y)| (fixed(x), fixed(y)));
    let area = (b.0 - a.0) * (c.1 - a.1) - (b.1 - a.1) * (c.0 - a.0);
    if area < 0 {
        std::mem::swap(&mut b, &mut c);
    }
    let bounds = if area == 0 {
        [1, 1, 0, 0]
    } else {
        [
            a.0.min(b.0).min(c.0).div_euclid(SUB) - 1,
            a.1.min(b.1).min(c.1).div_euclid(SUB) - 1,
            a.0.max(b.0).max(c.0).div_euclid(SUB) + 1,
            a.1.max(b.1).max(c.1).div_euclid(SUB) + 1,
        ]
    };
    [
        a.0,
        a.1,
        b.0,
        b.1,
        c.0,
        c.1,
        i64::from(colour),
        0,
        bounds[0],
        bounds[1],
        bounds[2],
        bounds[3],
    ]
}

impl FrameUniform {
    fn set(&mut self, at: usize, values: &[i64]) {
        for (w, &v) in self.words[at..at + values.len()].iter_mut().zip(values) {
            *w = word(v);
        }
    }

    /// Lays `scene` and `stamp` out for a `width` x `height` picture and bins the shapes.
    fn fill(&mut self, scene: &Scene, stamp: &Stamp, width: u32, height: u32, bins: &mut Binner) {
        let (w, h) = (i64::from(width), i64::from(height));
        let border = (w / 320).max(2);
        self.set(slot::DIMS, &[w, h, i64::from(scene.flash), border]);

        // Score: right-aligned 7-segment digits, clear of the border.
        let score = scene.score.min(999_999);
        let digits = score.checked_ilog10().map_or(1, |d| d + 1);
        let digit_h = (h / 15).max(8);
        let digit_w = digit_h / 2;
        let gap = digit_h / 4;
        let pitch = digit_w + gap;
        let margin = border + digit_h / 3;
        let span = i64::from(digits) * pitch - gap;
        let left = w - margin - span;
        self.set(slot::DIGIT_BOX, &[left, margin, digit_w, digit_h]);
        bins.add(
            DIGITS_BIT,
            [left, margin, left + span - 1, margin + digit_h - 1],
        );
        // Grid: one line per 1000 game units.
        let grid_x = (w * 1000 / i64::from(ARENA_W)).max(1);
        let grid_y = (h * 1000 / i64::from(ARENA_H)).max(1);
        self.set(
            slot::DIGIT_GEO,
            &[pitch, (digit_h / 8).max(2), grid_x, grid_y],
        );
        #[allow(clippy::cast_precision_loss, reason = "grid steps are small integers")]
        let inverse = |step: i64| (1.0 / step as f32).to_bits();
        self.words[slot::GRID_INV..slot::GRID_INV + 4].copy_from_slice(&[
            inverse(grid_x),
            inverse(grid_y),
            0,
            0,
        ]);
        let mut rest = score;
        for i in (0..8).rev() {
            self.words[slot::DIGIT_SEGMENTS + i] = if i < digits as usize {
                let lit = SEGMENTS[(rest % 10) as usize];
                rest /= 10;
                lit
            } else {
                0
            };
        }

        let body_count = scene.body_count.min(MAX_BODIES);
        for (i, body) in scene.bodies.iter().enumerate() {
            let at = slot::BODIES + 4 * i;
            let r = to_fixed(body.r, width, ARENA_W).clamp(0, MAX_BODY_RADIUS_PX * SUB);
            if i >= body_count || r == 0 {
                self.set(at, &[0, 0, 0, 0]);
                continue;
            }
            let (x, y) = (
                to_fixed(body.x, width, ARENA_W),
                to_fixed(body.y, height, ARENA_H),
            );
            self.set(
                at,
                &[x, y, r, i64::from(PALETTE[usize::from(body.colour % 8)])],
            );
            bins.add(
                1 << i,
                [
                    (x - r).div_euclid(SUB),
                    (y - r).div_euclid(SUB),
                    (x + r).div_euclid(SUB),
                    (y + r).div_euclid(SUB),
                ],
            );
        }

        // Ship and flame: triangles along the heading (y grows downwards, so "up" is -y).
        let ship = scene.ship;
        #[allow(
            clippy::cast_precision_loss,
            reason = "fixed-point values are clamped to 2^20"
        )]
        let (cx, cy, r) = (
            to_fixed(ship.x, width, ARENA_W) as f64,
            to_fixed(ship.y, height, ARENA_H) as f64,
            to_fixed(ship.r, width, ARENA_W).clamp(0, MAX_SHIP_RADIUS_PX * SUB) as f64,
        );
        let angle = f64::from(ship.heading) * TAU / 65_536.0;
        let (dx, dy) = (angle.cos(), -angle.sin());
        let (nx, ny) = (-dy, dx);
        let at = |along: f64, across: f64| {
            (
                cx + dx * along * r + nx * across * r,
                cy + dy * along * r + ny * across * r,
            )
        };
        // The flame flickers between two lengths, a function of the tick only.
        let flame = if (scene.tick / 3).is_multiple_of(2) {
            1.25
        } else {
            1.5
        };
        let shapes = [
            triangle(
                [at(-flame, 0.0), at(-0.55, 0.35), at(-0.55, -0.35)],
                FLAME_COLOUR,
            ),
            triangle([at(1.0, 0.0), at(-0.7, 0.6), at(-0.7, -0.6)], SHIP_COLOUR),
        ];
        for (i, shape) in shapes.iter().enumerate() {
            self.set(slot::TRIANGLES + 12 * i, shape);
            if i == 1 || ship.thrust {
                bins.add(
                    TRIANGLE_BIT << i,
                    [shape[8], shape[9], shape[10], shape[11]],
                );
            }
        }

        self.words[slot::STAMP..slot::STAMP + 8].copy_from_slice(&stamp.to_bits());
    }
}

/// Sorts the shapes of a frame into 16x16 px tiles: per tile, the bit set of the shapes
/// touching it (bits as render.comp wants them); then the tiles into job lists by kind. Made
/// once per target.
#[derive(Debug)]
struct Binner {
    tiles_x: u32,
    tiles_y: u32,
    masks: Vec<u32>,
    /// Per NV12 slot, what it holds.
    slots: [SlotState; NV12_SLOTS],
}

/// What the picture last drawn into one NV12 slot left there.
#[derive(Debug, Default)]
struct SlotState {
    /// Per tile, whether it was drawn as plain background.
    was_plain: Vec<bool>,
    /// The background drawn (the hit flash's ticks left); `None` before the first frame, or
    /// when the slot's content is unknown.
    background: Option<u8>,
}

impl Binner {
    fn new(width: u32, height: u32) -> Self {
        let (tiles_x, tiles_y) = (width.div_ceil(TILE), height.div_ceil(TILE));
        let tiles = tiles_x as usize * tiles_y as usize;
        Self {
            tiles_x,
            tiles_y,
            masks: vec![0; tiles],
            slots: std::array::from_fn(|_| SlotState {
                was_plain: vec![false; tiles],
                background: None,
            }),
        }
    }

    /// Slot `slot`'s content is no longer what its last frame drew: redraw it whole next time.
    fn forget(&mut self, slot: usize) {
        self.slots[slot].background = None;
    }

    /// Whether tile (`tx`, `ty`) is a cell of the stamp.
    fn is_stamp(tx: u32, ty: u32) -> bool {
        (1..=STAMP_COLS as u32).contains(&tx) && (1..=STAMP_ROWS as u32).contains(&ty)
    }

    /// Sets `bits` on every tile the pixel box (inclusive) touches, except the stamp's tiles:
    /// nothing may draw over the stamp.
    fn add(&mut self, bits: u32, pixel_box: [i64; 4]) {
        // Tiles lo..=hi (in pixels) covers on an axis of `tiles` tiles; None when off screen.
        let tile_range = |lo: i64, hi: i64, tiles: u32| {
            let lo = lo.div_euclid(i64::from(TILE)).max(0);
            let hi = hi.div_euclid(i64::from(TILE)).min(i64::from(tiles) - 1);
            Some(u32::try_from(lo).ok()?..=u32::try_from(hi).ok()?).filter(|r| !r.is_empty())
        };
        let [x0, y0, x1, y1] = pixel_box;
        let (Some(xs), Some(ys)) = (
            tile_range(x0, x1, self.tiles_x),
            tile_range(y0, y1, self.tiles_y),
        ) else {
            return;
        };
        for ty in ys {
            for tx in xs.clone() {
                if !Self::is_stamp(tx, ty) {
                    self.masks[(ty * self.tiles_x + tx) as usize] |= bits;
                }
            }
        }
    }

    /// The kind of tile `index` with shapes `mask`.
    fn kind(&self, index: usize, mask: u32) -> usize {
        let (tx, ty) = (index as u32 % self.tiles_x, index as u32 / self.tiles_x);
        if Self::is_stamp(tx, ty) {
            KIND_STAMP
        } else if mask == 0 {
            KIND_PLAIN
        } else if mask & !BODY_BITS == 0 {
            KIND_BODIES
        } else {
            KIND_SHAPES
        }
    }

    /// Writes the jobs buffer (head, then every tile as a (tile, mask) pair, grouped by kind;
    /// the plain ones to redraw first) for a frame whose background is `background` (the hit
    /// flash's ticks left), drawn into NV12 slot `slot`, and empties the bins.
    fn write_jobs(&mut self, words: &mut [u32], background: u8, nv12_slot: usize) {
        let mut state = std::mem::take(&mut self.slots[nv12_slot]);
        let same_background = state.background == Some(background);
        state.background = Some(background);
        let mut counts = [0usize; KINDS];
        let mut redraw = 0usize;
        for (i, &mask) in self.masks.iter().enumerate() {
            let kind = self.kind(i, mask);
            counts[kind] += 1;
            redraw += usize::from(kind == KIND_PLAIN && !(same_background && state.was_plain[i]));
        }
        let (head, list) = words.split_at_mut(JOBS_HEAD_WORDS);
        let mut slot = |at: usize, count: usize, first: usize| {
            let [count, first] = [count, first].map(|v| u32::try_from(v).unwrap_or(0));
            head[4 * at..4 * at + 4].copy_from_slice(&[count, 1, 1, first].map(u32::to_le));
        };
        let mut next = [0usize; KINDS];
        let mut first = 0;
        for kind in 0..KINDS {
            next[kind] = first;
            let count = if kind == KIND_PLAIN {
                redraw
            } else {
                counts[kind]
            };
            slot(kind, count, first);
            first += counts[kind];
        }
        slot(KINDS, counts[KIND_PLAIN], 0);
        // The plain tiles to redraw, then the plain ones kept.
        let mut kept = redraw;
        for i in 0..self.masks.len() {
            let mask = std::mem::take(&mut self.masks[i]);
            let kind = self.kind(i, mask);
            let at = if kind == KIND_PLAIN && same_background && state.was_plain[i] {
                kept += 1;
                kept - 1
            } else {
                next[kind] += 1;
                next[kind] - 1
            };
            state.was_plain[i] = kind == KIND_PLAIN;
            let (tx, ty) = (i as u32 % self.tiles_x, i as u32 / self.tiles_x);
            list[2 * at] = (tx | (ty << 16)).to_le();
            list[2 * at + 1] = mask.to_le();
        }
        self.slots[nv12_slot] = state;
    }
}

// The stamp geometry render.comp hard-codes.
const _: () = assert!(STAMP_CELL_PX == 16 && STAMP_COLS == 32 && STAMP_ROWS == 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolutions() {
        assert!(check_resolution(1280, 720).is_ok());
        assert!(check_resolution(1920, 1080).is_ok());
        assert!(check_resolution(64, 64).is_ok());
        assert!(check_resolution(1281, 720).is_err());
        assert!(check_resolution(1280, 721).is_err());
        assert!(check_resolution(48, 64).is_err());
    }

    #[test]
    fn triangles_are_counter_clockwise_with_a_box() {
        let t = triangle([(0.0, 0.0), (0.0, 160.0), (160.0, 0.0)], 0);
        let (a, b, c) = ((t[0], t[1]), (t[2], t[3]), (t[4], t[5]));
        let area = (b.0 - a.0) * (c.1 - a.1) - (b.1 - a.1) * (c.0 - a.0);
        assert!(area > 0);
        assert_eq!(&t[8..], &[-1, -1, 11, 11]);
        let flat = triangle([(0.0, 0.0), (16.0, 16.0), (32.0, 32.0)], 0);
        assert!(flat[8] > flat[10], "degenerate triangles get an empty box");
    }

    #[test]
    fn uniform_layout_matches_the_shader() {
        // Offsets of `Frame` in render.comp (std140, all members 16-byte vectors).
        assert_eq!(slot::BODIES * 4, 64);
        assert_eq!(slot::TRIANGLES * 4, 320);
        assert_eq!(slot::STAMP * 4, 448);
        assert_eq!(UNIFORM_BYTES, 480);
    }

    #[test]
    fn binning_skips_the_stamp_and_sorts_tiles_by_kind() {
        let mut bins = Binner::new(1280, 720);
        // A box over the stamp's corner and beyond the left edge.
        bins.add(1 << 3, [-40, -40, 40, 40]);
        // Off screen entirely.
        bins.add(1 << 4, [-100, 10, -50, 20]);
        bins.add(DIGITS_BIT, [1270, 700, 2000, 2000]);
        bins.add(TRIANGLE_BIT << 1, [20, 0, 20, 0]);
        let tiles = 80 * 45;
        let mut words = vec![0u32; JOBS_HEAD_WORDS + 2 * tiles];
        bins.write_jobs(&mut words, 0, 0);
        let (head, list) = words.split_at(JOBS_HEAD_WORDS);
        // Bodies: tiles (0..=2, 0..=2) minus the stamp's (1..=2, 1..=2) and (1, 0), which
        // has the ship too; shapes: (1, 0) and the score's two.
        let stamp = STAMP_COLS * STAMP_ROWS;
        let plain = tiles - stamp - 4 - 3;
        assert_eq!(&head[0..4], &[plain as u32, 1, 1, 0]);
        assert_eq!(&head[4..8], &[4, 1, 1, plain as u32]);
        assert_eq!(&head[8..12], &[3, 1, 1, plain as u32 + 4]);
        assert_eq!(&head[12..16], &[stamp as u32, 1, 1, plain as u32 + 7]);
        assert_eq!(&head[16..20], &[plain as u32, 1, 1, 0]);
        let jobs: Vec<(u32, u32, u32)> = list
            .chunks(2)
            .map(|j| (j[0] & 0xFFFF, j[0] >> 16, j[1]))
            .collect();
        assert_eq!(
            &jobs[plain..plain + 4],
            &[
                (0, 0, 1 << 3),
                (2, 0, 1 << 3),
                (0, 1, 1 << 3),
                (0, 2, 1 << 3)
            ]
        );
        assert_eq!(
            &jobs[plain + 4..plain + 7],
            &[
                (1, 0, 1 << 3 | TRIANGLE_BIT << 1),
                (79, 43, DIGITS_BIT),
                (79, 44, DIGITS_BIT)
            ]
        );
        assert!(
            jobs[plain + 7..]
                .iter()
                .all(|&(x, y, m)| Binner::is_stamp(x, y) && m == 0)
        );
        // Every tile exactly once.
        let mut seen: Vec<(u32, u32)> = jobs.iter().map(|&(x, y, _)| (x, y)).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), tiles);
        // The bins are empty again.
        assert!(bins.masks.iter().all(|&m| m == 0));
        // Next frame, same background, nothing drawn: only the seven tiles that held shapes
        // are redrawn, listed first; the RGBA variant's slot still has every plain tile.
        bins.write_jobs(&mut words, 0, 0);
        assert_eq!(&words[0..4], &[7, 1, 1, 0]);
        assert_eq!(&words[16..20], &[(tiles - stamp) as u32, 1, 1, 0]);
        let redrawn: Vec<u32> = words[JOBS_HEAD_WORDS..JOBS_HEAD_WORDS + 14]
            .chunks(2)
            .map(|j| j[0])
            .collect();
        assert_eq!(
            redrawn,
            [0, 1, 2, 1 << 16, 2 << 16, 79 | 43 << 16, 79 | 44 << 16]
        );
        // Then nothing to redraw; a new background redraws every plain tile.
        bins.write_jobs(&mut words, 0, 0);
        assert_eq!(words[0], 0);
        bins.write_jobs(&mut words, 5, 0);
        assert_eq!(words[0], (tiles - stamp) as u32);
    }
}
