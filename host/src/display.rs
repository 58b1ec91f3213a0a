//! The edge's connection to one session's display: its picture by MIT-SHM, its keyboard and
//! pointer by XTEST.
//!
//! The picture: the X server makes a shared-memory segment and passes it by file descriptor
//! (MIT-SHM 1.2 `ShmCreateSegment`), which the edge maps read-only; each capture is one
//! `ShmGetImage` of the root window into it, so the pixels cross from the server to the edge
//! with the one copy the server makes, and none over the socket. A file descriptor crosses the
//! sandbox's IPC namespace where a System V segment id would not.
//!
//! Everything the display says is untrusted: its screen must be the session's size, each image
//! must be 24-bit ZPixmap at 32 bits per pixel and fit the segment; anything else is an error
//! that ends the session.
#![allow(
    unsafe_code,
    reason = "mapping the segment the X server passes is a raw mmap; this module is the crate's one home for it"
)]

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::ptr::NonNull;

use x11rb::connection::{Connection as _, RequestConnection as _};
use x11rb::protocol::shm::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{self, ConnectionExt as _, ImageFormat};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::rust_connection::{DefaultStream, RustConnection};

/// Bytes per pixel of the captured picture (BGRX).
pub const BYTES_PER_PIXEL: usize = 4;

/// Why the display could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    /// The socket could not be reached.
    #[error("cannot reach the session's display at {path}: {source}")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The X connection failed or broke.
    #[error("the session's display: {0}")]
    X11(String),
    /// The server lacks an extension the edge needs.
    #[error("the session's display has no {0} extension")]
    MissingExtension(&'static str),
    /// What the server sent does not fit the session.
    #[error("the session's display sent {0}")]
    Unexpected(String),
    /// The segment could not be mapped.
    #[error("cannot map the display's shared memory: {0}")]
    Map(std::io::Error),
}

fn x11(e: impl std::fmt::Display) -> DisplayError {
    DisplayError::X11(e.to_string())
}

/// A read-only mapping of the X server's segment.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; it is only read through
// `&self`.
unsafe impl Send for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and nothing borrows it any more
        // (borrows are tied to `&self` of the Display that owns this).
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Counters of one display connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DisplayStats {
    /// Pictures captured.
    pub captures: u64,
    /// Input events delivered to the display.
    pub inputs: u64,
}

/// One session's display, connected.
pub struct Display {
    conn: RustConnection,
    root: xproto::Window,
    width: u16,
    height: u16,
    seg: shm::Seg,
    map: Mapping,
    /// The pointer's position as the edge last set it (XTEST motion is absolute here).
    pointer: (i32, i32),
    stats: DisplayStats,
}

impl std::fmt::Debug for Display {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Display")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Display {
    /// Connects to the display at `socket`, checks that its screen is `width` x `height`, that
    /// it has MIT-SHM 1.2 and XTEST, and maps a segment for the picture.
    ///
    /// # Errors
    /// [`DisplayError`].
    pub fn connect(socket: &Path, width: u16, height: u16) -> Result<Self, DisplayError> {
        let unix = UnixStream::connect(socket).map_err(|source| DisplayError::Connect {
            path: socket.display().to_string(),
            source,
        })?;
        let (stream, _) = DefaultStream::from_unix_stream(unix).map_err(x11)?;
        let conn = RustConnection::connect_to_stream(stream, 0).map_err(x11)?;
        let screen = conn
            .setup()
            .roots
            .first()
            .ok_or_else(|| DisplayError::Unexpected("no screen".into()))?;
        let root = screen.root;
        if (screen.width_in_pixels, screen.height_in_pixels) != (width, height) {
            return Err(DisplayError::Unexpected(format!(
                "a {}x{} screen for a {width}x{height} session",
                screen.width_in_pixels, screen.height_in_pixels
            )));
        }
        if conn
            .extension_information(shm::X11_EXTENSION_NAME)
            .map_err(x11)?
            .is_none()
        {
            return Err(DisplayError::MissingExtension("MIT-SHM"));
        }
        let version = conn
            .shm_query_version()
            .map_err(x11)?
            .reply()
            .map_err(x11)?;
        if (version.major_version, version.minor_version) < (1, 2) {
            return Err(DisplayError::MissingExtension(
                "MIT-SHM 1.2 (segments passed by fd)",
            ));
        }
        if conn
            .extension_information(x11rb::protocol::xtest::X11_EXTENSION_NAME)
            .map_err(x11)?
            .is_none()
        {
            return Err(DisplayError::MissingExtension("XTEST"));
        }
        let len = usize::from(width) * usize::from(height) * BYTES_PER_PIXEL;
        let size =
            u32::try_from(len).map_err(|_| DisplayError::Unexpected("a huge screen".into()))?;
        let seg = conn.generate_id().map_err(x11)?;
        let reply = conn
            // Writable by the server (GetImage writes it); the edge maps it read-only.
            .shm_create_segment(seg, size, false)
            .map_err(x11)?
            .reply()
            .map_err(x11)?;
        let fd = reply.shm_fd;
        // The segment must hold the picture: a short one would fault on read.
        let file_len = rustix::fs::fstat(&fd)
            .map_err(|e| DisplayError::Map(e.into()))?
            .st_size;
        if u64::try_from(file_len).unwrap_or(0) < len as u64 {
            return Err(DisplayError::Unexpected(format!(
                "a {file_len}-byte segment for a {len}-byte picture"
            )));
        }
        // SAFETY: a fresh shared, read-only mapping of `len` bytes of a file at least that
        // long; the kernel picks the address.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .map_err(|e| DisplayError::Map(e.into()))?;
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| DisplayError::Map(std::io::Error::other("null mapping")))?;
        Ok(Self {
            conn,
            root,
            width,
            height,
            seg,
            map: Mapping { ptr, len },
            pointer: (i32::from(width) / 2, i32::from(height) / 2),
            stats: DisplayStats::default(),
        })
    }

    /// Width in pixels.
    #[must_use]
    pub fn width(&self) -> u16 {
        self.width
    }

    /// Height in pixels.
    #[must_use]
    pub fn height(&self) -> u16 {
        self.height
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> DisplayStats {
        self.stats
    }

    /// Captures the whole screen: `width * height * 4` bytes of BGRX rows (stride `width * 4`),
    /// valid until the next capture.
    ///
    /// # Errors
    /// The connection broke, or the reply does not fit the session.
    pub fn capture(&mut self) -> Result<&[u8], DisplayError> {
        let reply = self
            .conn
            .shm_get_image(
                self.root,
                0,
                0,
                self.width,
                self.height,
                u32::MAX,
                ImageFormat::Z_PIXMAP.into(),
                self.seg,
                0,
            )
            .map_err(x11)?
            .reply()
            .map_err(x11)?;
        let expected = self.map.len;
        if reply.depth != 24 || reply.size as usize != expected {
            return Err(DisplayError::Unexpected(format!(
                "an image of depth {} and {} bytes for {} bytes of 24-bit BGRX",
                reply.depth, reply.size, expected
            )));
        }
        self.stats.captures += 1;
        // SAFETY: the mapping is `len` bytes, readable, alive as long as `self`; the server
        // finished writing this image before it replied, and the next write comes with the
        // next request, which needs `&mut self`.
        Ok(unsafe { std::slice::from_raw_parts(self.map.ptr.as_ptr(), self.map.len) })
    }

    fn fake(&mut self, kind: u8, detail: u8, x: i16, y: i16) -> Result<(), DisplayError> {
        self.conn
            .xtest_fake_input(kind, detail, x11rb::CURRENT_TIME, self.root, x, y, 0)
            .map_err(x11)?;
        self.stats.inputs += 1;
        Ok(())
    }

    /// Presses or releases the key of X keycode `keycode` (see [`crate::keymap`]).
    ///
    /// # Errors
    /// The connection broke.
    pub fn key(&mut self, keycode: u8, down: bool) -> Result<(), DisplayError> {
        let kind = if down {
            xproto::KEY_PRESS_EVENT
        } else {
            xproto::KEY_RELEASE_EVENT
        };
        self.fake(kind, keycode, 0, 0)
    }

    /// Presses or releases X pointer button `button` (1 left, 2 middle, 3 right).
    ///
    /// # Errors
    /// The connection broke.
    pub fn button(&mut self, button: u8, down: bool) -> Result<(), DisplayError> {
        let kind = if down {
            xproto::BUTTON_PRESS_EVENT
        } else {
            xproto::BUTTON_RELEASE_EVENT
        };
        self.fake(kind, button, 0, 0)
    }

    /// Scrolls by whole wheel steps: `dy` > 0 down, `dx` > 0 right (buttons 4–7, as X does).
    ///
    /// # Errors
    /// The connection broke.
    pub fn wheel(&mut self, dx: i32, dy: i32) -> Result<(), DisplayError> {
        for (steps, negative, positive) in [(dy, 4u8, 5u8), (dx, 6, 7)] {
            let button = if steps < 0 { negative } else { positive };
            for _ in 0..steps.unsigned_abs().min(32) {
                self.button(button, true)?;
                self.button(button, false)?;
            }
        }
        Ok(())
    }

    /// Moves the pointer to (`x`, `y`), clamped to the screen.
    ///
    /// # Errors
    /// The connection broke.
    pub fn move_to(&mut self, x: i32, y: i32) -> Result<(), DisplayError> {
        let x = x.clamp(0, i32::from(self.width) - 1);
        let y = y.clamp(0, i32::from(self.height) - 1);
        self.pointer = (x, y);
        let (x, y) = (
            i16::try_from(x).unwrap_or(i16::MAX),
            i16::try_from(y).unwrap_or(i16::MAX),
        );
        self.fake(xproto::MOTION_NOTIFY_EVENT, 0, x, y)
    }

    /// Moves the pointer by (`dx`, `dy`) from where the edge last put it.
    ///
    /// # Errors
    /// The connection broke.
    pub fn move_by(&mut self, dx: i32, dy: i32) -> Result<(), DisplayError> {
        let (x, y) = self.pointer;
        self.move_to(x.saturating_add(dx), y.saturating_add(dy))
    }

    /// Waits until the server has processed every request sent so far (a round trip): the
    /// inputs before it are delivered to the display.
    ///
    /// # Errors
    /// The connection broke.
    pub fn sync(&mut self) -> Result<(), DisplayError> {
        self.conn
            .get_input_focus()
            .map_err(x11)?
            .reply()
            .map_err(x11)?;
        Ok(())
    }
}
