//! Decoded pictures as the application gets them.

use std::time::Instant;

use edgeplay_game::stamp::Stamp;
use edgeplay_protocol::media::FrameHeader;

use crate::decode::{self, PixelFormat};

/// A decoded picture and how it travelled.
///
/// ```no_run
/// # async fn demo(mut session: edgeplay_client::Session) {
/// if let Some(frame) = session.next_frame().await {
///     let transit = frame.decoded_at - frame.received_at;
///     println!("frame {} decoded {transit:?} after arrival", frame.header.frame);
///     if let Some(stamp) = frame.stamp {
///         println!("shows inputs up to {}", stamp.input_seq);
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Frame {
    /// The frame header the edge sent (frame number, capture and render time, pts, keyframe).
    pub header: FrameHeader,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The layout of `data`.
    pub format: PixelFormat,
    /// The pixels, tightly packed (see [`Frame::planes`]). NV12: `width * height` bytes of
    /// luma, then `(height + 1) / 2` rows of interleaved U/V, `width` bytes each (rounded up
    /// to even). RGBA: `height` rows of `4 * width` bytes.
    pub data: Vec<u8>,
    /// When the last byte of the frame arrived.
    pub received_at: Instant,
    /// When the decoder handed the picture out.
    pub decoded_at: Instant,
    /// The stamp drawn in the picture (frame, tick, render time, inputs applied, state hash),
    /// `None` when its cells do not pass their CRC (a damaged picture).
    pub stamp: Option<Stamp>,
}

impl Frame {
    /// The luma plane of an NV12 frame (stride = width), e.g. for
    /// `edgeplay_game::stamp::read_luma`; empty for RGBA (see [`Frame::to_luma`]).
    ///
    /// ```no_run
    /// # async fn demo(mut session: edgeplay_client::Session) {
    /// let frame = session.next_frame().await.unwrap();
    /// assert_eq!(frame.luma().len(), (frame.width * frame.height) as usize);
    /// # }
    /// ```
    #[must_use]
    pub fn luma(&self) -> &[u8] {
        if self.format != PixelFormat::Nv12 {
            return &[];
        }
        let n = self.width as usize * self.height as usize;
        &self.data[..n.min(self.data.len())]
    }

    /// The luma of any frame (stride = width): the NV12 plane as is, or computed from RGBA
    /// (BT.709 weights, video range: what the stamp reader expects).
    ///
    /// ```no_run
    /// # async fn demo(mut session: edgeplay_client::Session) {
    /// let f = session.next_frame().await.unwrap();
    /// let (w, h) = (f.width as usize, f.height as usize);
    /// let stamp = edgeplay_game::stamp::read_luma(&f.to_luma(), w, h, w);
    /// # }
    /// ```
    #[must_use]
    pub fn to_luma(&self) -> std::borrow::Cow<'_, [u8]> {
        match self.format {
            PixelFormat::Nv12 => std::borrow::Cow::Borrowed(self.luma()),
            PixelFormat::Rgba => std::borrow::Cow::Owned(decode::rgba_luma(
                &self.data,
                self.width as usize,
                self.height as usize,
            )),
        }
    }

    /// The planes of `data`: NV12 has two (luma; interleaved U/V), RGBA one.
    ///
    /// ```no_run
    /// # async fn demo(mut session: edgeplay_client::Session) {
    /// let f = session.next_frame().await.unwrap();
    /// for p in f.planes() {
    ///     assert!(p.stride >= p.row_bytes && p.data.len() >= p.stride * (p.rows - 1) + p.row_bytes);
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn planes(&self) -> Vec<Plane<'_>> {
        let (w, h) = (self.width as usize, self.height as usize);
        let shape: &[(usize, usize)] = match self.format {
            PixelFormat::Nv12 => &[(w, h), (w.next_multiple_of(2), h.div_ceil(2))],
            PixelFormat::Rgba => &[(4 * w, h)],
        };
        let mut offset = 0;
        let mut planes = Vec::with_capacity(shape.len());
        for &(row_bytes, rows) in shape {
            let end = (offset + row_bytes * rows).min(self.data.len());
            planes.push(Plane {
                data: &self.data[offset.min(end)..end],
                stride: row_bytes,
                row_bytes,
                rows,
            });
            offset = end;
        }
        planes
    }
}

/// One plane of a [`Frame`].
#[derive(Clone, Copy, Debug)]
pub struct Plane<'a> {
    /// The plane's bytes: `rows` rows `stride` bytes apart.
    pub data: &'a [u8],
    /// Bytes from one row to the next.
    pub stride: usize,
    /// Bytes of pixels in a row (≤ `stride`).
    pub row_bytes: usize,
    /// Rows.
    pub rows: usize,
}
