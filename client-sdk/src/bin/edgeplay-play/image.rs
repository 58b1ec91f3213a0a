//! NV12 → RGB (BT.709, video range: what the edge's converter writes) and PPM files, so a
//! dumped frame opens in any viewer (`ffplay`, GIMP, `feh`) with no image library here.

use std::io::Write;

/// One pixel's RGB from video-range BT.709 Y, U, V, in 8.8 fixed point.
#[inline]
fn rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 298 * (i32::from(y) - 16);
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    let clamp = |x: i32| u8::try_from(((x + 128) >> 8).clamp(0, 255)).unwrap_or(u8::MAX);
    [
        clamp(c + 459 * e),
        clamp(c - 55 * d - 136 * e),
        clamp(c + 541 * d),
    ]
}

/// Calls `put(x, y, [r, g, b])` for every pixel of a tightly packed NV12 picture; `None` if
/// the buffer is smaller than `width` × `height` says.
fn for_each_pixel(
    nv12: &[u8],
    width: usize,
    height: usize,
    mut put: impl FnMut(usize, [u8; 3]),
) -> Option<()> {
    let luma = width.checked_mul(height)?;
    let chroma = width.checked_mul(height.div_ceil(2))?;
    if nv12.len() < luma.checked_add(chroma)? {
        return None;
    }
    let (ys, uvs) = nv12.split_at(luma);
    for row in 0..height {
        let uv_row = &uvs[(row / 2) * width..(row / 2) * width + width];
        for (col, &y) in ys[row * width..(row + 1) * width].iter().enumerate() {
            let pair = col & !1;
            let (u, v) = (uv_row[pair], uv_row.get(pair + 1).copied().unwrap_or(128));
            put(row * width + col, rgb(y, u, v));
        }
    }
    Some(())
}

/// The picture as packed RGB bytes.
pub fn nv12_to_rgb(nv12: &[u8], width: usize, height: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; width.checked_mul(height)?.checked_mul(3)?];
    for_each_pixel(nv12, width, height, |i, p| {
        out[i * 3..i * 3 + 3].copy_from_slice(&p);
    })?;
    Some(out)
}

/// The picture as `0RGB` words, the window's pixel format, into `out` (resized to fit).
pub fn nv12_to_0rgb(nv12: &[u8], width: usize, height: usize, out: &mut Vec<u32>) -> Option<()> {
    out.resize(width.checked_mul(height)?, 0);
    for_each_pixel(nv12, width, height, |i, [r, g, b]| {
        out[i] = u32::from(r) << 16 | u32::from(g) << 8 | u32::from(b);
    })
}

/// Writes binary PPM (P6).
pub fn write_ppm(
    w: &mut impl Write,
    rgb: &[u8],
    width: usize,
    height: usize,
) -> std::io::Result<()> {
    write!(w, "P6\n{width} {height}\n255\n")?;
    w.write_all(rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_range_black_white_and_grey_convert_exactly() {
        assert_eq!(rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(rgb(235, 128, 128), [255, 255, 255]);
        assert_eq!(rgb(126, 128, 128), [128, 128, 128]);
        // Saturated BT.709 red is about Y 63, U 102, V 240.
        let [r, g, b] = rgb(63, 102, 240);
        assert!(r > 250 && g < 5 && b < 5, "{r} {g} {b}");
    }

    #[test]
    fn a_2x2_picture_becomes_ppm_and_short_buffers_are_refused() {
        let nv12 = [16, 235, 235, 16, 128, 128];
        let rgb = nv12_to_rgb(&nv12, 2, 2).unwrap();
        assert_eq!(rgb, [0, 0, 0, 255, 255, 255, 255, 255, 255, 0, 0, 0]);
        let mut file = Vec::new();
        write_ppm(&mut file, &rgb, 2, 2).unwrap();
        assert!(file.starts_with(b"P6\n2 2\n255\n"));
        assert_eq!(file.len(), 11 + 12);
        assert!(nv12_to_rgb(&nv12[..5], 2, 2).is_none());
        let mut words = Vec::new();
        nv12_to_0rgb(&nv12, 2, 2, &mut words).unwrap();
        assert_eq!(words, [0, 0x00ff_ffff, 0x00ff_ffff, 0]);
    }
}
