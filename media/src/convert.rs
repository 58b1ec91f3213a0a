//! RGBA (and BGRX) → NV12 colour conversion, BT.709 limited range.
//!
//! The GPU does it as it draws (`shaders/render.comp`, run by
//! [`RenderTarget`](crate::render::RenderTarget)); [`cpu_nv12_reference`] is the same integer
//! arithmetic on the CPU, the reference the tests hold the shader to, and a fallback for tools
//! without a GPU. [`bgrx_to_nv12`] converts hosted apps' captured pictures the same way.
//!
//! NV12 layout: the Y plane (`width` bytes per row, `height` rows), then the interleaved
//! U,V plane (`width` bytes per row, `height / 2` rows; one U,V pair per 2x2 block).
//! Y spans 16..=235 and U, V 16..=240; a block's chroma is that of the average of its four
//! pixels. Coefficients are scaled by 2^16 and rounded so that grey maps to U = V = 128 exactly
//! and white to Y = 235.

use crate::gpu::GpuError;

/// Luma coefficients for R, G, B (BT.709 × 219/255, scaled by 2^16).
const Y_COEF: [i32; 3] = [11_966, 40_254, 4_064];
/// Cb coefficients (BT.709 × 224/255, scaled by 2^16; they sum to 0).
const U_COEF: [i32; 3] = [-6_596, -22_188, 28_784];
/// Cr coefficients (BT.709 × 224/255, scaled by 2^16; they sum to 0).
const V_COEF: [i32; 3] = [28_784, -26_145, -2_639];

/// Bytes of an NV12 picture of `width` x `height` (both even).
#[must_use]
pub fn nv12_len(width: u32, height: u32) -> usize {
    width as usize * height as usize * 3 / 2
}

/// Limited-range luma of one RGB pixel.
#[must_use]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    let y = (Y_COEF[0] * i32::from(r)
        + Y_COEF[1] * i32::from(g)
        + Y_COEF[2] * i32::from(b)
        + (1 << 15))
        >> 16;
    // 0..=219 by construction of the coefficients.
    u8::try_from(y + 16).unwrap_or(235)
}

/// Limited-range chroma of the sum of four pixels' channels (`sum` = R, G, B sums, 0..=1020).
fn chroma(sum: [i32; 3], coef: [i32; 3]) -> u8 {
    let v =
        (coef[0] * sum[0] + coef[1] * sum[1] + coef[2] * sum[2] + (128 << 18) + (1 << 17)) >> 18;
    u8::try_from(v.clamp(16, 240)).unwrap_or(128)
}

/// Converts an RGBA8 picture (`width * height * 4` bytes, alpha ignored) to NV12 in `out`
/// (`width * height * 3 / 2` bytes) exactly as the GPU does.
///
/// # Errors
/// [`GpuError::UnsupportedResolution`] for an odd width or height, [`GpuError::BufferSize`]
/// when `rgba` or `out` has the wrong length.
pub fn cpu_nv12_reference(
    rgba: &[u8],
    width: u32,
    height: u32,
    out: &mut [u8],
) -> Result<(), GpuError> {
    to_nv12::<0, 1, 2>(rgba, width, height, out)
}

/// Converts a BGRX picture (32 bits per pixel, B first: what an X server's 24-bit ZPixmap
/// image is on little-endian machines; `width * height * 4` bytes) to NV12 in `out`, with the
/// same arithmetic as [`cpu_nv12_reference`]. The capture path of hosted apps.
///
/// # Errors
/// As [`cpu_nv12_reference`].
pub fn bgrx_to_nv12(bgrx: &[u8], width: u32, height: u32, out: &mut [u8]) -> Result<(), GpuError> {
    to_nv12::<2, 1, 0>(bgrx, width, height, out)
}

/// NV12 from 4-byte pixels whose red, green and blue are bytes `R`, `G` and `B` (plain integer
/// loops the compiler vectorises).
fn to_nv12<const R: usize, const G: usize, const B: usize>(
    pixels: &[u8],
    width: u32,
    height: u32,
    out: &mut [u8],
) -> Result<(), GpuError> {
    if !width.is_multiple_of(2) || !height.is_multiple_of(2) || width == 0 || height == 0 {
        return Err(GpuError::UnsupportedResolution { width, height });
    }
    let (w, h) = (width as usize, height as usize);
    if pixels.len() != w * h * 4 {
        return Err(GpuError::BufferSize {
            what: "RGBA",
            expected: w * h * 4,
            actual: pixels.len(),
        });
    }
    if out.len() != nv12_len(width, height) {
        return Err(GpuError::BufferSize {
            what: "NV12",
            expected: nv12_len(width, height),
            actual: out.len(),
        });
    }
    let (y_plane, uv_plane) = out.split_at_mut(w * h);
    // Luma row by row: one straight loop over pixels, which the compiler vectorises.
    for (y_row, px_row) in y_plane.chunks_exact_mut(w).zip(pixels.chunks_exact(w * 4)) {
        for (y, px) in y_row.iter_mut().zip(px_row.chunks_exact(4)) {
            let v = Y_COEF[0] * i32::from(px[R])
                + Y_COEF[1] * i32::from(px[G])
                + Y_COEF[2] * i32::from(px[B])
                + (1 << 15);
            // 16..=235 by construction of the coefficients.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "0..=219 + 16"
            )]
            let v = ((v >> 16) + 16) as u8;
            *y = v;
        }
    }
    // Chroma per 2x2 block from the sums of its pixels' channels.
    for (two_rows, uv_row) in pixels.chunks_exact(w * 8).zip(uv_plane.chunks_exact_mut(w)) {
        let (top, bottom) = two_rows.split_at(w * 4);
        for ((t, b), uv) in top
            .chunks_exact(8)
            .zip(bottom.chunks_exact(8))
            .zip(uv_row.chunks_exact_mut(2))
        {
            let sum = |c: usize| {
                i32::from(t[c]) + i32::from(t[c + 4]) + i32::from(b[c]) + i32::from(b[c + 4])
            };
            let sum = [sum(R), sum(G), sum(B)];
            uv[0] = chroma(sum, U_COEF);
            uv[1] = chroma(sum, V_COEF);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extremes_hit_the_limited_range() {
        assert_eq!(luma(0, 0, 0), 16);
        assert_eq!(luma(255, 255, 255), 235);
        for grey in [0u8, 1, 77, 128, 200, 254, 255] {
            let s = i32::from(grey) * 4;
            assert_eq!(chroma([s, s, s], U_COEF), 128, "grey {grey}");
            assert_eq!(chroma([s, s, s], V_COEF), 128, "grey {grey}");
        }
        // Saturated blue and red reach the top of the chroma range.
        assert_eq!(chroma([0, 0, 1020], U_COEF), 240);
        assert_eq!(chroma([1020, 0, 0], V_COEF), 240);
        assert_eq!(chroma([1020, 1020, 0], U_COEF), 16);
        assert_eq!(chroma([0, 1020, 1020], V_COEF), 16);
    }

    #[test]
    fn reference_matches_bt709_floating_point() {
        for (r, g, b) in [(255u8, 0u8, 0u8), (0, 255, 0), (0, 0, 255), (12, 200, 99)] {
            let (rf, gf, bf) = (f64::from(r), f64::from(g), f64::from(b));
            let y = 16.0 + (0.2126 * rf + 0.7152 * gf + 0.0722 * bf) * 219.0 / 255.0;
            assert!(
                (f64::from(luma(r, g, b)) - y).abs() <= 0.51,
                "{r},{g},{b}: {y}"
            );
            let sum = [i32::from(r) * 4, i32::from(g) * 4, i32::from(b) * 4];
            let u =
                128.0 + (bf - (0.2126 * rf + 0.7152 * gf + 0.0722 * bf)) / 1.8556 * 224.0 / 255.0;
            let v =
                128.0 + (rf - (0.2126 * rf + 0.7152 * gf + 0.0722 * bf)) / 1.5748 * 224.0 / 255.0;
            assert!(
                (f64::from(chroma(sum, U_COEF)) - u).abs() <= 0.51,
                "u {r},{g},{b}: {u}"
            );
            assert!(
                (f64::from(chroma(sum, V_COEF)) - v).abs() <= 0.51,
                "v {r},{g},{b}: {v}"
            );
        }
    }

    #[test]
    fn layout_is_y_then_interleaved_uv() {
        // 4x2: left 2x2 block white, right 2x2 block pure blue.
        let mut rgba = vec![0u8; 4 * 2 * 4];
        for (i, px) in rgba.chunks_exact_mut(4).enumerate() {
            let white = i % 4 < 2;
            px.copy_from_slice(if white {
                &[255, 255, 255, 255]
            } else {
                &[0, 0, 255, 255]
            });
        }
        let mut out = vec![0u8; nv12_len(4, 2)];
        cpu_nv12_reference(&rgba, 4, 2, &mut out).expect("valid sizes");
        let blue_y = luma(0, 0, 255);
        assert_eq!(
            &out[..8],
            &[235, 235, blue_y, blue_y, 235, 235, blue_y, blue_y]
        );
        assert_eq!(&out[8..10], &[128, 128]);
        assert_eq!(out[10], 240);
    }

    #[test]
    fn bgrx_converts_as_the_reference_does() {
        let (w, h) = (64u32, 32u32);
        let mut rgba = vec![0u8; (w * h * 4) as usize];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for b in &mut rgba {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = (state >> 24) as u8;
        }
        let bgrx: Vec<u8> = rgba
            .chunks_exact(4)
            .flat_map(|p| [p[2], p[1], p[0], 0xAA])
            .collect();
        let (mut a, mut b) = (vec![0u8; nv12_len(w, h)], vec![0u8; nv12_len(w, h)]);
        cpu_nv12_reference(&rgba, w, h, &mut a).expect("reference");
        bgrx_to_nv12(&bgrx, w, h, &mut b).expect("bgrx");
        assert_eq!(a, b);
        assert!(bgrx_to_nv12(&bgrx[4..], w, h, &mut b).is_err());
        assert!(bgrx_to_nv12(&bgrx, w, h + 1, &mut b).is_err());
    }
}
