//! The C ABI: the SDK for C, C++ and game engines, built into `libedgeplay_client.so` with the
//! header `client-sdk/include/edgeplay.h` (generated from this file by cbindgen; the test
//! `header` fails when the committed header is stale, `EDGEPLAY_BLESS=1` rewrites it).
//!
//! A session owns its own tokio runtime, so the caller needs no async machinery: every call
//! blocks at most as long as its arguments say. Every function catches panics, checks its
//! pointers and lengths, and reports failure as an [`EpStatus`] (or `NULL`) with a message
//! for [`ep_last_error`]. The calls of one session are serialised by a lock: calling from
//! several threads is safe, but an input sent while another thread waits in
//! [`ep_session_next_frame`] waits for that call to return, so keep frame timeouts short
//! (one frame period) when input comes from another thread.
//!
//! The full example is `client-sdk/examples/c/play.c`; in short:
//!
//! ```c
//! #include "edgeplay.h"
//! EpSession *s = ep_client_connect("127.0.0.1:4433", fingerprint_hex, token, NULL);
//! if (!s) { fprintf(stderr, "%s\n", ep_last_error()); return 1; }
//! EpFrame f;
//! if (ep_session_next_frame(s, 1000, &f) == EP_STATUS_OK) {
//!     draw_nv12(f.y, f.y_stride, f.uv, f.uv_stride, f.width, f.height);
//!     ep_frame_release(&f);
//! }
//! EpInput up = { .kind = EP_INPUT_KIND_KEY, .key = "ArrowUp", .down = 1 };
//! uint64_t seq;
//! ep_session_send_input(s, &up, &seq);
//! ep_session_close(s);
//! ```

// SAFETY (module-wide): a C ABI cannot be written without `unsafe`: the callers hand raw
// pointers, and the exported symbols need `#[unsafe(no_mangle)]`. Every dereference below is of
// a pointer checked for NULL first, and the caller's side of each contract is in the
// function's `# Safety` section (and the header's comments).

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};
use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgeplay_game::stamp::read_luma;
use edgeplay_protocol::input::{InputEvent, Key};

use crate::connect::{Client, WELCOME_TIMEOUT};
use crate::error::ClientError;
use crate::frame::Frame;
use crate::pin::parse_fingerprint;
use crate::session::Session;

/// What a call did. Negative values are failures; [`ep_last_error`] says more.
///
/// ```c
/// EpStatus rc = ep_session_next_frame(s, 16, &f);
/// if (rc < 0) fprintf(stderr, "%d: %s\n", rc, ep_last_error());
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpStatus {
    /// Done.
    Ok = 0,
    /// No frame arrived within the timeout; call again.
    Timeout = 1,
    /// A required pointer was NULL.
    NullPointer = -1,
    /// An argument was malformed (not UTF-8, not an address, not a fingerprint, unknown key).
    InvalidArgument = -2,
    /// The session has ended (closed by the edge or the network).
    Closed = -3,
    /// The edge could not be reached, or the connection failed.
    Connection = -4,
    /// The edge refused the session (a bad or used token).
    Refused = -5,
    /// The edge's certificate is not the pinned one.
    CertificateMismatch = -6,
    /// The edge broke the protocol.
    Protocol = -7,
    /// The H.264 decoder could not start (a GStreamer plugin is missing).
    Decoder = -8,
    /// The edge is full (every session slot taken): try again in a few seconds, or ask the
    /// broker for another edge. The join token was not used up.
    EdgeFull = -9,
    /// A bug in the SDK: a call panicked. The session should be closed.
    Panic = -100,
}

/// Kinds of [`EpInput`] (the `kind` field).
///
/// ```c
/// EpInput click = { .kind = EP_INPUT_KIND_BUTTON, .index = 0, .down = 1 };
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpInputKind {
    /// A key went down or up: `key` (a DOM `KeyboardEvent.code` such as `"ArrowUp"`), `down`.
    Key = 0,
    /// Relative pointer motion in picture pixels: `dx`, `dy`.
    PointerMove = 1,
    /// A pointer button (0 primary, 1 middle, 2 secondary): `index`, `down`.
    Button = 2,
    /// A gamepad axis (standard mapping): `index`, `value` in -32768..=32767.
    GamepadAxis = 3,
    /// A gamepad button (standard mapping): `index`, `down`.
    GamepadButton = 4,
}

/// Options of [`ep_client_connect`]; pass `NULL` for the defaults (all fields zero).
///
/// ```c
/// EpOptions opts = { .worker_threads = 1, .connect_timeout_ms = 5000 };
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EpOptions {
    /// Threads of the session's runtime (0: 2). QUIC and frame reassembly run there; the
    /// decoder has its own thread.
    pub worker_threads: u32,
    /// How long connecting may take, in milliseconds (0: 30 s, the edge's start-up time).
    pub connect_timeout_ms: u32,
}

/// What the frame stamp in the picture says (see `edgeplay_game::stamp`).
///
/// ```c
/// if (f.has_stamp && f.stamp.input_seq >= my_seq) printf("input shown at tick %u\n", f.stamp.tick);
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpStamp {
    /// Frame number within the session.
    pub frame: u32,
    /// Game tick shown.
    pub tick: u32,
    /// When rendering began, µs since the Unix epoch on the edge's clock.
    pub render_time_us: u64,
    /// Highest input sequence applied to the state shown (0: none yet).
    pub input_seq: u32,
    /// Hash of the game state shown.
    pub state_hash: u64,
}

/// A decoded NV12 picture. Its planes stay valid until [`ep_frame_release`].
///
/// ```c
/// uint8_t luma = f.y[row * f.y_stride + col];
/// const uint8_t *uv = f.uv + (row / 2) * f.uv_stride + (col & ~1u); /* uv[0] = U, uv[1] = V */
/// ```
#[repr(C)]
#[derive(Debug)]
pub struct EpFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Luma plane: `height` rows of `y_stride` bytes.
    pub y: *const u8,
    /// Bytes per luma row.
    pub y_stride: u32,
    /// Interleaved U/V plane: `(height + 1) / 2` rows of `uv_stride` bytes.
    pub uv: *const u8,
    /// Bytes per U/V row.
    pub uv_stride: u32,
    /// Frame number from the frame header.
    pub frame: u32,
    /// Whether the frame was a keyframe.
    pub keyframe: bool,
    /// When rendering began, µs since the Unix epoch on the edge's clock.
    pub render_us: u64,
    /// When the edge's encoder finished it, µs since the Unix epoch on the edge's clock.
    pub capture_us: u64,
    /// Presentation time on the session clock (shared with audio), µs.
    pub pts_us: u64,
    /// When the decoder handed it out, µs since the Unix epoch on this machine's clock.
    pub decoded_unix_us: u64,
    /// Whether `stamp` was read from the picture (its CRC passed).
    pub has_stamp: bool,
    /// The frame stamp, when `has_stamp`.
    pub stamp: EpStamp,
    /// Render start to decoded, µs: `decoded_unix_us - render_us`, the edge's clock against this
    /// machine's, so exact only when both run on one machine (or their clocks agree).
    pub glass_to_glass_us: u64,
    /// The SDK's own; do not touch.
    pub reserved: *mut c_void,
}

impl EpFrame {
    fn empty() -> Self {
        Self {
            width: 0,
            height: 0,
            y: std::ptr::null(),
            y_stride: 0,
            uv: std::ptr::null(),
            uv_stride: 0,
            frame: 0,
            keyframe: false,
            render_us: 0,
            capture_us: 0,
            pts_us: 0,
            decoded_unix_us: 0,
            has_stamp: false,
            stamp: EpStamp::default(),
            glass_to_glass_us: 0,
            reserved: std::ptr::null_mut(),
        }
    }

    fn from_frame(frame: Box<Frame>) -> Self {
        let decoded_unix_us = unix_us().saturating_sub(micros(frame.decoded_at.elapsed()));
        let (w, h) = (frame.width as usize, frame.height as usize);
        let stamp = read_luma(frame.luma(), w, h, w).ok();
        let y = frame.data.as_ptr();
        let uv_offset = (w * h).min(frame.data.len());
        Self {
            width: frame.width,
            height: frame.height,
            y,
            y_stride: frame.width,
            // In bounds: `uv_offset` is at most the buffer's length.
            uv: frame.data[uv_offset..].as_ptr(),
            uv_stride: frame.width.next_multiple_of(2),
            frame: frame.header.frame,
            keyframe: frame.header.keyframe,
            render_us: frame.header.render_us,
            capture_us: frame.header.capture_us,
            pts_us: frame.header.pts_us,
            decoded_unix_us,
            has_stamp: stamp.is_some(),
            stamp: stamp.map_or_else(EpStamp::default, |s| EpStamp {
                frame: s.frame,
                tick: s.tick,
                render_time_us: s.render_time_us,
                input_seq: s.input_seq,
                state_hash: s.state_hash,
            }),
            glass_to_glass_us: decoded_unix_us.saturating_sub(frame.header.render_us),
            // Moving the box keeps the planes where they are: they live in the Vec's buffer.
            reserved: Box::into_raw(frame).cast(),
        }
    }
}

// The docs of `EpStats` name both windows.
const _: () =
    assert!(crate::stats::LATENCY_WINDOW == 300 && crate::rate::RATE_WINDOW.as_millis() == 1000);

/// A snapshot of a session's statistics: `edgeplay_client::Stats` field by field, with the
/// same names and definitions (durations in µs, their names ending in `_us`). Rates over the
/// last second (names ending in `_1s`), latency percentiles over the last 300 samples, and
/// counters since the session started.
///
/// Glass-to-glass compares the edge's clock (the render time in the frame's stamp) with this
/// machine's (the picture out of the decoder): exact when edge and client run on one machine,
/// off by the difference of the two clocks otherwise. Input-to-photon reads this machine's only.
///
/// ```c
/// EpStats st;
/// ep_session_stats(s, &st);
/// printf("%.1f fps, %.0f kbit/s, rtt %.2f ms\n", st.decoded_fps_1s, st.received_kbps_1s,
///        st.rtt_us / 1000.0);
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EpStats {
    /// Frame streams fully received, since the session started.
    pub frames_received: u64,
    /// Pictures decoded, since the session started.
    pub frames_decoded: u64,
    /// Frames skipped since the session started: lost to a reset or a gap, undecodable, or
    /// dropped because the caller was slow.
    pub frames_skipped: u64,
    /// Keyframes asked for, since the session started.
    pub keyframe_requests: u64,
    /// Opus packets received, since the session started.
    pub audio_packets: u64,
    /// Pictures decoded in the last second, per second: the count in `(now - 1 s, now]`.
    pub decoded_fps_1s: f64,
    /// Video received in the last second, kbit/s: the bytes (frame header and payload) of the
    /// frame streams that arrived whole in `(now - 1 s, now]`, × 8 / 1000. Audio datagrams and
    /// QUIC overhead are not counted.
    pub received_kbps_1s: f64,
    /// Smoothed round-trip time of the QUIC connection, µs.
    pub rtt_us: u64,
    /// Packets the QUIC layer declared lost, since the session started.
    pub lost_packets: u64,
    /// Packets the QUIC layer sent, since the session started.
    pub sent_packets: u64,
    /// Mean decode time (the access unit pushed into the decoder to the picture out) of the
    /// pictures decoded in the last second, µs; 0 when none was.
    pub decode_time_1s_us: u64,
    /// Highest input the edge applied.
    pub input_applied: u64,
    /// Highest input covered by a committed checkpoint.
    pub input_committed: u64,
    /// Inputs still held for replay.
    pub inputs_held: u64,
    /// Frames skipped / (frames handed to the caller + frames skipped), both counted in the
    /// last second; 0 when neither happened. Every frame ends as one of the two, so this is the
    /// share of frames the player did not get to show. Not packet loss: QUIC retransmits lost
    /// packets (see `lost_packets`).
    pub skipped_frame_ratio_1s: f64,
    /// Glass-to-glass over the last 300 frames, median, µs: from the render time in the frame's
    /// stamp to the SDK handing the decoded picture out; two clocks (see above); 0 until a frame
    /// is decoded.
    pub glass_to_glass_p50_us: u64,
    /// Glass-to-glass, 95th percentile, µs.
    pub glass_to_glass_p95_us: u64,
    /// Input-to-photon over the last 300 inputs, median, µs: from [`ep_session_send_input`] to
    /// the first decoded frame whose stamp shows the input applied; 0 until an input is shown.
    pub input_to_photon_p50_us: u64,
    /// Input-to-photon, 95th percentile, µs.
    pub input_to_photon_p95_us: u64,
    /// Audio chunks decoded, since the session started.
    pub audio_decoded: u64,
}

/// One input event for [`ep_session_send_input`]. Only the fields its `kind` names are read.
///
/// ```c
/// EpInput key = { .kind = EP_INPUT_KIND_KEY, .key = "KeyW", .down = 1 };
/// EpInput stick = { .kind = EP_INPUT_KIND_GAMEPAD_AXIS, .index = 0, .value = -16384 };
/// ```
#[repr(C)]
#[derive(Debug)]
pub struct EpInput {
    /// One of [`EpInputKind`].
    pub kind: u32,
    /// For keys: the DOM `KeyboardEvent.code`, NUL-terminated (`"ArrowUp"`, `"KeyW"`, `"Space"`).
    pub key: *const c_char,
    /// Pointer motion, pixels to the right.
    pub dx: i32,
    /// Pointer motion, pixels down.
    pub dy: i32,
    /// Button or axis number (0..=255).
    pub index: u32,
    /// Axis position (-32768..=32767).
    pub value: i32,
    /// Non-zero: pressed; zero: released.
    pub down: u8,
}

/// A live session (opaque to C).
///
/// ```c
/// EpSession *s = ep_client_connect(addr, fp, token, NULL);
/// /* … */
/// ep_session_close(s);
/// ```
#[derive(Debug)]
pub struct EpSession {
    runtime: tokio::runtime::Runtime,
    session: Mutex<Option<Session>>,
}

/// A failed call: its status and what to tell the caller.
type Failure = (EpStatus, String);

thread_local! {
    static LAST_ERROR: RefCell<Option<(EpStatus, CString)>> = const { RefCell::new(None) };
}

fn set_last_error(status: EpStatus, message: &str) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = Some((status, text)));
}

/// Runs `body`, turning a failure or a panic into `fallback` and the thread's last error.
fn guard<T>(fallback: impl FnOnce(EpStatus) -> T, body: impl FnOnce() -> Result<T, Failure>) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => v,
        Ok(Err((status, message))) => {
            set_last_error(status, &message);
            fallback(status)
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let message = format!("the SDK panicked ({what}): close the session and report it");
            set_last_error(EpStatus::Panic, &message);
            fallback(EpStatus::Panic)
        }
    }
}

fn null(what: &str) -> Failure {
    (
        EpStatus::NullPointer,
        format!("`{what}` is NULL: pass a valid pointer"),
    )
}

fn status_of(e: &ClientError) -> EpStatus {
    match e {
        ClientError::BadFingerprint(_) => EpStatus::InvalidArgument,
        ClientError::CertificateMismatch => EpStatus::CertificateMismatch,
        ClientError::Refused { .. } => EpStatus::Refused,
        ClientError::EdgeFull { .. } => EpStatus::EdgeFull,
        ClientError::Protocol(_) => EpStatus::Protocol,
        ClientError::Decoder(_) => EpStatus::Decoder,
        ClientError::Closed => EpStatus::Closed,
        _ => EpStatus::Connection,
    }
}

fn client_failure(e: &ClientError) -> Failure {
    (status_of(e), e.to_string())
}

/// Reads a NUL-terminated UTF-8 argument.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string valid for the call.
unsafe fn text<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(null(what));
    }
    // SAFETY: not NULL, and the caller promises a NUL-terminated string.
    let c = unsafe { CStr::from_ptr(ptr) };
    c.to_str().map_err(|_| {
        (
            EpStatus::InvalidArgument,
            format!("`{what}` is not UTF-8: pass it as UTF-8 text"),
        )
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, micros)
}

impl EpSession {
    /// Runs `f` on the live session, or fails with [`EpStatus::Closed`].
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Session, &tokio::runtime::Runtime) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let mut guard = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let session = guard.as_mut().ok_or_else(|| {
            (
                EpStatus::Closed,
                "the session has ended: connect again".to_owned(),
            )
        })?;
        f(session, &self.runtime)
    }
}

/// The message of the last call on this thread that failed, or NULL if none has.
///
/// The text is the SDK's (what went wrong and what to do); it stays valid until the next
/// failing call on this thread. Do not free it.
///
/// ```c
/// if (!session) fprintf(stderr, "edgeplay: %s\n", ep_last_error());
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn ep_last_error() -> *const c_char {
    LAST_ERROR.with(|e| {
        e.borrow()
            .as_ref()
            .map_or(std::ptr::null(), |(_, m)| m.as_ptr())
    })
}

/// The status of the last call on this thread that failed ([`EpStatus::Ok`] if none has):
/// tells a refused token from a stale fingerprint after [`ep_client_connect`] returned NULL.
///
/// ```c
/// if (!session && ep_last_status() == EP_STATUS_CERTIFICATE_MISMATCH) refresh_fingerprint();
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn ep_last_status() -> EpStatus {
    LAST_ERROR.with(|e| e.borrow().as_ref().map_or(EpStatus::Ok, |(s, _)| *s))
}

/// Connects to the edge at `addr` (`"host:port"`), pinning its certificate to
/// `fingerprint_hex` (64 hex digits, colons allowed) and joining with `token`. Blocks until the
/// edge welcomes the session (it starts a renderer and encoders first: up to seconds).
///
/// Returns the session, or NULL with [`ep_last_error`] and [`ep_last_status`] set. Close it
/// with [`ep_session_close`].
///
/// ```c
/// EpOptions opts = { .worker_threads = 2, .connect_timeout_ms = 10000 };
/// EpSession *s = ep_client_connect("127.0.0.1:4433", fp, token, &opts);
/// ```
///
/// # Safety
/// `addr`, `fingerprint_hex` and `token` are NUL-terminated strings; `opts` is NULL or points
/// to an [`EpOptions`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ep_client_connect(
    addr: *const c_char,
    fingerprint_hex: *const c_char,
    token: *const c_char,
    opts: *const EpOptions,
) -> *mut EpSession {
    guard(
        |_| std::ptr::null_mut(),
        || {
            // SAFETY: the caller's contract above.
            let (addr, fingerprint, token) = unsafe {
                (
                    text(addr, "addr")?,
                    text(fingerprint_hex, "fingerprint_hex")?,
                    text(token, "token")?,
                )
            };
            // SAFETY: NULL or a valid EpOptions, as promised.
            let opts = unsafe { opts.as_ref() }.copied().unwrap_or_default();
            let fingerprint = parse_fingerprint(fingerprint).map_err(|e| client_failure(&e))?;
            let addr: SocketAddr = addr
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    (
                        EpStatus::InvalidArgument,
                        format!("`{addr}` is not a host:port address: pass e.g. 127.0.0.1:4433"),
                    )
                })?;
            let threads = if opts.worker_threads == 0 {
                2
            } else {
                opts.worker_threads
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.min(64) as usize)
                .thread_name("edgeplay-sdk")
                .enable_all()
                .build()
                .map_err(|e| {
                    (
                        EpStatus::Connection,
                        format!("cannot start the SDK's runtime: {e}"),
                    )
                })?;
            let timeout = if opts.connect_timeout_ms == 0 {
                WELCOME_TIMEOUT
            } else {
                Duration::from_millis(u64::from(opts.connect_timeout_ms))
            };
            let session = runtime
                // The timer is made inside the runtime: it needs the runtime's clock.
                .block_on(async {
                    tokio::time::timeout(timeout, Client::connect(addr, fingerprint, token)).await
                })
                .map_err(|_| {
                    (
                        EpStatus::Connection,
                        format!(
                            "no session with {addr} within {} ms: check the address and that \
                             UDP is not blocked",
                            timeout.as_millis()
                        ),
                    )
                })?
                .map_err(|e| client_failure(&e))?;
            Ok(Box::into_raw(Box::new(EpSession {
                runtime,
                session: Mutex::new(Some(session)),
            })))
        },
    )
}

/// Waits up to `timeout_ms` (`UINT32_MAX`: for ever) for the next decoded frame, in frame
/// order, and fills `out`.
///
/// Returns [`EpStatus::Ok`] with `out` filled (release it with [`ep_frame_release`]),
/// [`EpStatus::Timeout`], or [`EpStatus::Closed`] once the session ended. On anything but Ok,
/// `out` is emptied (NULL planes).
///
/// ```c
/// EpFrame f;
/// int rc = ep_session_next_frame(s, 100, &f);
/// if (rc == EP_STATUS_OK) { use(&f); ep_frame_release(&f); }
/// ```
///
/// # Safety
/// `session` is NULL or a live session from [`ep_client_connect`]; `out` is NULL or points to
/// writable memory for an [`EpFrame`] (a frame it held before must have been released, or it
/// leaks).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ep_session_next_frame(
    session: *mut EpSession,
    timeout_ms: u32,
    out: *mut EpFrame,
) -> EpStatus {
    guard(
        |s| s,
        || {
            if out.is_null() {
                return Err(null("out"));
            }
            // SAFETY: not NULL; the caller promises writable memory for an EpFrame.
            unsafe { out.write(EpFrame::empty()) };
            // SAFETY: NULL or a live session, as promised.
            let session = unsafe { session.as_ref() }.ok_or_else(|| null("session"))?;
            let frame = session.with(|s, rt| {
                let next = s.next_frame();
                Ok(if timeout_ms == u32::MAX {
                    Some(rt.block_on(next))
                } else {
                    rt.block_on(async {
                        tokio::time::timeout(Duration::from_millis(u64::from(timeout_ms)), next)
                            .await
                    })
                    .ok()
                })
            })?;
            match frame {
                None => Ok(EpStatus::Timeout),
                Some(None) => Err((
                    EpStatus::Closed,
                    "the session has ended: connect again".to_owned(),
                )),
                Some(Some(frame)) => {
                    // SAFETY: as above.
                    unsafe { out.write(EpFrame::from_frame(Box::new(frame))) };
                    Ok(EpStatus::Ok)
                }
            }
        },
    )
}

/// Frees a frame's planes and empties `frame`. NULL, or a frame already released, is fine.
///
/// ```c
/// ep_frame_release(&f);
/// ```
///
/// # Safety
/// `frame` is NULL or points to an [`EpFrame`] filled by [`ep_session_next_frame`] (or
/// emptied by it or by this function), not copied: releasing one of two copies and then the
/// other frees twice.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ep_frame_release(frame: *mut EpFrame) {
    guard(
        |_| (),
        || {
            // SAFETY: NULL or a valid EpFrame, as promised.
            let Some(frame) = (unsafe { frame.as_mut() }) else {
                return Ok(());
            };
            let owner = std::mem::replace(&mut frame.reserved, std::ptr::null_mut());
            *frame = EpFrame::empty();
            if !owner.is_null() {
                // SAFETY: `reserved` holds the Box made by `from_frame`, taken out above so it
                // is freed once.
                drop(unsafe { Box::from_raw(owner.cast::<Frame>()) });
            }
            Ok(())
        },
    );
}

/// Sends one input event; on success writes its sequence number (from 1) to `seq_out` if not
/// NULL. The frame stamp's `input_seq` shows when the edge applied it.
///
/// ```c
/// EpInput in = { .kind = EP_INPUT_KIND_POINTER_MOVE, .dx = 5, .dy = -3 };
/// uint64_t seq = 0;
/// if (ep_session_send_input(s, &in, &seq) != EP_STATUS_OK) puts(ep_last_error());
/// ```
///
/// # Safety
/// `session` is NULL or a live session; `input` is NULL or points to an [`EpInput`] whose
/// `key` is NULL or NUL-terminated; `seq_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ep_session_send_input(
    session: *mut EpSession,
    input: *const EpInput,
    seq_out: *mut u64,
) -> EpStatus {
    guard(
        |s| s,
        || {
            // SAFETY: NULL or valid, as promised.
            let session = unsafe { session.as_ref() }.ok_or_else(|| null("session"))?;
            // SAFETY: NULL or valid, as promised.
            let input = unsafe { input.as_ref() }.ok_or_else(|| null("input"))?;
            // SAFETY: `key` is NULL or NUL-terminated, as promised.
            let event = unsafe { event_of(input) }?;
            let seq = session.with(|s, _| s.send_input(event).map_err(|e| client_failure(&e)))?;
            if !seq_out.is_null() {
                // SAFETY: not NULL and writable, as promised.
                unsafe { seq_out.write(seq) };
            }
            Ok(EpStatus::Ok)
        },
    )
}

/// The protocol's event for a C input, or why it is malformed.
///
/// # Safety
/// `input.key` is NULL or NUL-terminated.
unsafe fn event_of(input: &EpInput) -> Result<InputEvent, Failure> {
    let bad = |what: String| (EpStatus::InvalidArgument, what);
    let index = |max: u32| {
        u8::try_from(input.index)
            .ok()
            .filter(|i| u32::from(*i) <= max)
            .ok_or_else(|| bad(format!("index {} is out of range 0..={max}", input.index)))
    };
    let down = input.down != 0;
    Ok(match input.kind {
        k if k == EpInputKind::Key as u32 => {
            // SAFETY: the caller's contract.
            let code = unsafe { text(input.key, "input.key") }?;
            let code = Key::from_code(code).ok_or_else(|| {
                bad(format!(
                    "unknown key `{code}`: use a DOM KeyboardEvent.code such as ArrowUp or KeyW"
                ))
            })?;
            InputEvent::Key { code, down }
        }
        k if k == EpInputKind::PointerMove as u32 => InputEvent::PointerMove {
            dx: input.dx,
            dy: input.dy,
        },
        k if k == EpInputKind::Button as u32 => InputEvent::Button {
            button: index(255)?,
            down,
        },
        k if k == EpInputKind::GamepadAxis as u32 => InputEvent::GamepadAxis {
            axis: index(255)?,
            value: i16::try_from(input.value).map_err(|_| {
                bad(format!(
                    "axis value {} is out of range -32768..=32767",
                    input.value
                ))
            })?,
        },
        k if k == EpInputKind::GamepadButton as u32 => InputEvent::GamepadButton {
            button: index(255)?,
            down,
        },
        other => {
            return Err(bad(format!(
                "unknown input kind {other}: use EP_INPUT_KIND_*"
            )));
        }
    })
}

/// Asks the edge for a keyframe (the SDK already does on any gap).
///
/// ```c
/// ep_session_request_keyframe(s);
/// ```
///
/// # Safety
/// `session` is NULL or a live session.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ep_session_request_keyframe(session: *mut EpSession) -> EpStatus {
    guard(
        |s| s,
        || {
            // SAFETY: NULL or valid, as promised.
            let session = unsafe { session.as_ref() }.ok_or_else(|| null("session"))?;
            session.with(|s, _| s.request_keyframe().map_err(|e| client_failure(&e)))?;
            Ok(EpStatus::Ok)
        },
    )
}

/// Fills `out` with the session's counters now.
///
/// ```c
/// EpStats st;
/// if (ep_session_stats(s, &st) == EP_STATUS_OK) printf("%.1f fps\n", st.decoded_fps_1s);
/// ```
///
/// # Safety
/// `session` is NULL or a live session; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ep_session_stats(session: *mut EpSession, out: *mut EpStats) -> EpStatus {
    guard(
        |s| s,
        || {
            // SAFETY: NULL or valid, as promised.
            let session = unsafe { session.as_ref() }.ok_or_else(|| null("session"))?;
            if out.is_null() {
                return Err(null("out"));
            }
            let st = session.with(|s, _| Ok(s.stats()))?;
            let stats = EpStats {
                frames_received: st.frames_received,
                frames_decoded: st.frames_decoded,
                frames_skipped: st.frames_skipped,
                keyframe_requests: st.keyframe_requests,
                audio_packets: st.audio_packets,
                decoded_fps_1s: st.decoded_fps_1s,
                received_kbps_1s: st.received_kbps_1s,
                rtt_us: micros(st.rtt),
                lost_packets: st.lost_packets,
                sent_packets: st.sent_packets,
                decode_time_1s_us: micros(st.decode_time_1s),
                input_applied: st.input_applied,
                input_committed: st.input_committed,
                inputs_held: st.inputs_held as u64,
                skipped_frame_ratio_1s: st.skipped_frame_ratio_1s,
                glass_to_glass_p50_us: micros(st.glass_to_glass_p50),
                glass_to_glass_p95_us: micros(st.glass_to_glass_p95),
                input_to_photon_p50_us: micros(st.input_to_photon_p50),
                input_to_photon_p95_us: micros(st.input_to_photon_p95),
                audio_decoded: st.audio_decoded,
            };
            // SAFETY: not NULL and writable, as promised.
            unsafe { out.write(stats) };
            Ok(EpStatus::Ok)
        },
    )
}

/// Ends the session cleanly (tells the edge, waits up to a second for its acknowledgement),
/// stops its threads and frees it. Frames not yet released stay valid. NULL is fine.
///
/// ```c
/// ep_session_close(s);
/// s = NULL;
/// ```
///
/// # Safety
/// `session` is NULL or a session from [`ep_client_connect`] not closed before; it must not be
/// used afterwards, nor be in use by another thread during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ep_session_close(session: *mut EpSession) -> EpStatus {
    guard(
        |s| s,
        || {
            if session.is_null() {
                return Ok(EpStatus::Ok);
            }
            // SAFETY: made by `Box::into_raw` in ep_client_connect and closed once, as promised.
            let session = unsafe { Box::from_raw(session) };
            let EpSession { runtime, session } = *session;
            let live = session.into_inner().unwrap_or_else(PoisonError::into_inner);
            if let Some(live) = live {
                runtime.block_on(live.close());
            }
            runtime.shutdown_timeout(Duration::from_secs(1));
            Ok(EpStatus::Ok)
        },
    )
}

#[cfg(test)]
mod tests;
