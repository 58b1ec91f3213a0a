//! The QUIC media protocol (ALPN [`ALPN`]): frame and audio headers, control messages and input
//! datagrams, all binary, big-endian, versioned and bounded.
//!
//! A connection carries:
//! - one **control stream**, the first bidirectional stream, opened by the client; each message is
//!   a [`ControlMessage`] framed as `u16 length | u8 type | body` ([`ControlMessage::encode`],
//!   [`ControlMessage::decode_frame`]). The first message from the client must be
//!   [`ControlMessage::Hello`] with the join token, or the edge closes the connection with
//!   [`close_code::BAD_TOKEN`] / [`close_code::PROTOCOL_VIOLATION`];
//! - one **unidirectional stream per video frame**, edge to client: a [`FrameHeader`] then
//!   `payload_len` bytes of Annex-B access unit;
//! - **datagrams**, led by a type byte: [`Datagram::Input`] (client to edge, a run of consecutive
//!   inputs) and [`Datagram::Audio`] (edge to client, an [`AudioHeader`] and an Opus packet).
//!
//! Every decoder here takes arbitrary bytes and returns an error, never panics:
//!
//! ```
//! use edgeplay_protocol::media::{Codec, FrameHeader};
//!
//! let header = FrameHeader {
//!     frame: 7, capture_us: 1, render_us: 2, pts_us: 3,
//!     keyframe: true, codec: Codec::H264, payload_len: 1200,
//! };
//! let bytes = header.encode();
//! assert_eq!(FrameHeader::decode(&bytes)?, header);
//! assert!(FrameHeader::decode(&bytes[..10]).is_err());
//! # Ok::<(), edgeplay_protocol::media::MediaError>(())
//! ```

use crate::input::{InputEvent, Key};

/// The QUIC application protocol name.
pub const ALPN: &[u8] = b"edgeplay/1";
/// The version of every header and message in this module.
pub const VERSION: u8 = 1;
/// Size of an encoded [`FrameHeader`].
pub const FRAME_HEADER_LEN: usize = 36;
/// Size of an encoded [`AudioHeader`].
pub const AUDIO_HEADER_LEN: usize = 12;
/// Largest access unit a frame stream may announce (a 1080p IDR at a generous bitrate).
pub const MAX_FRAME_PAYLOAD: u32 = 4 * 1024 * 1024;
/// Largest Opus packet accepted.
pub const MAX_AUDIO_PAYLOAD: usize = 1500;
/// Largest control message body (type byte included).
pub const MAX_CONTROL_LEN: usize = 16 * 1024;
/// Largest join token carried in a hello.
pub const MAX_TOKEN_LEN: usize = 2048;
/// Most inputs in one input run (datagram or control message).
pub const MAX_INPUTS_PER_RUN: usize = 1024;
/// Most receive reports in one control message.
pub const MAX_REPORTS: usize = 256;
/// Longest string field (session id, edge address, reasons).
pub const MAX_STRING_LEN: usize = 512;

/// QUIC application close codes the edge and the client use.
pub mod close_code {
    /// Normal end of the session.
    pub const DONE: u32 = 0;
    /// The join token is missing, malformed, expired or not for this edge.
    pub const BAD_TOKEN: u32 = 0x10;
    /// The peer sent something this protocol does not allow (garbage, wrong first message).
    pub const PROTOCOL_VIOLATION: u32 = 0x11;
    /// No hello arrived in time.
    pub const HELLO_TIMEOUT: u32 = 0x12;
    /// The edge cannot host the session now (it failed to start, or it ended); a full edge
    /// says [`EDGE_FULL`] instead.
    pub const UNAVAILABLE: u32 = 0x13;
    /// The edge is shutting down.
    pub const SHUTDOWN: u32 = 0x14;
    /// Every session slot of the edge is taken (its `max_sessions`, over all transports): the
    /// join was refused before any session started. Retry in a few seconds, or ask the broker
    /// for another edge.
    pub const EDGE_FULL: u32 = 0x15;
    /// The broker ended the session (its maximum duration, or the broker lost the edge and
    /// ended it meanwhile); the goodbye's reason says which.
    pub const ENDED_BY_BROKER: u32 = 0x16;
    /// The player sent no input for the edge's idle time (`edge-agent run --idle-secs`).
    pub const IDLE: u32 = 0x17;

    /// What a close code means, for error messages.
    #[must_use]
    pub fn describe(code: u64) -> &'static str {
        match code {
            0 => "session ended",
            0x10 => "the join token was refused: get a fresh token for this edge",
            0x11 => "protocol violation: client and edge speak different versions of edgeplay/1",
            0x12 => "no hello in time: send the hello with the join token first",
            0x13 => "the edge cannot host a session now: try another edge",
            0x14 => "the edge is shutting down: reconnect through the broker",
            0x15 => "the edge is full: try again later or another edge",
            0x16 => "the broker ended the session",
            0x17 => "the session was idle: no input for the edge's idle time",
            _ => "unknown close code",
        }
    }
}

/// Stream reset code of a video frame dropped because a later keyframe superseded it.
pub const RESET_SUPERSEDED: u32 = 1;

/// Why bytes did not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// Fewer bytes than the layout needs.
    #[error("{what}: {got} bytes, need {need}; the peer sent a truncated message")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
        /// Bytes there.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A version this build does not speak.
    #[error("{what}: version {got}, this build speaks {VERSION}; upgrade the older side")]
    Version {
        /// What was being decoded.
        what: &'static str,
        /// Version found.
        got: u8,
    },
    /// A field outside its range.
    #[error("{what}: {reason}")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A length over its limit.
    #[error("{what}: {len} over the limit of {max}; the peer misbehaves")]
    TooLong {
        /// What was being decoded.
        what: &'static str,
        /// Length announced.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Bytes after the end of a message.
    #[error("{what}: {extra} bytes after the end")]
    Trailing {
        /// What was being decoded.
        what: &'static str,
        /// Extra bytes.
        extra: usize,
    },
}

/// Video codec of a frame stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 Annex-B access units.
    H264,
}

impl Codec {
    fn to_byte(self) -> u8 {
        match self {
            Codec::H264 => 1,
        }
    }

    fn from_byte(b: u8) -> Result<Self, MediaError> {
        match b {
            1 => Ok(Codec::H264),
            other => Err(MediaError::Invalid {
                what: "frame header",
                reason: format!("unknown codec {other}"),
            }),
        }
    }
}

/// The fixed header that leads every video frame stream.
///
/// Layout ([`FRAME_HEADER_LEN`] bytes): `version u8 | flags u8 (bit 0 keyframe) | codec u8 |
/// reserved u8 | frame u32 | capture_us u64 | render_us u64 | pts_us u64 | payload_len u32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Frame number within the session.
    pub frame: u32,
    /// When the encoder finished the frame, µs since the Unix epoch on the edge's clock.
    pub capture_us: u64,
    /// When rendering of the frame began, µs since the Unix epoch on the edge's clock.
    pub render_us: u64,
    /// Presentation time on the session clock (shared with audio), µs.
    pub pts_us: u64,
    /// Whether the access unit is an IDR with SPS/PPS.
    pub keyframe: bool,
    /// Codec of the payload.
    pub codec: Codec,
    /// Bytes of access unit after the header (at most [`MAX_FRAME_PAYLOAD`]).
    pub payload_len: u32,
}

impl FrameHeader {
    /// The header's bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut out = [0u8; FRAME_HEADER_LEN];
        out[0] = VERSION;
        out[1] = u8::from(self.keyframe);
        out[2] = self.codec.to_byte();
        out[4..8].copy_from_slice(&self.frame.to_be_bytes());
        out[8..16].copy_from_slice(&self.capture_us.to_be_bytes());
        out[16..24].copy_from_slice(&self.render_us.to_be_bytes());
        out[24..32].copy_from_slice(&self.pts_us.to_be_bytes());
        out[32..36].copy_from_slice(&self.payload_len.to_be_bytes());
        out
    }

    /// Reads a header from exactly [`FRAME_HEADER_LEN`] bytes.
    ///
    /// # Errors
    /// Wrong length, version, flags, codec, or a payload over [`MAX_FRAME_PAYLOAD`].
    pub fn decode(bytes: &[u8]) -> Result<Self, MediaError> {
        const WHAT: &str = "frame header";
        let mut r = Reader::new(WHAT, bytes);
        r.version()?;
        let flags = r.u8()?;
        if flags & !1 != 0 {
            return Err(invalid(WHAT, format!("unknown flags {flags:#04x}")));
        }
        let codec = Codec::from_byte(r.u8()?)?;
        r.reserved()?;
        let header = FrameHeader {
            frame: r.u32()?,
            capture_us: r.u64()?,
            render_us: r.u64()?,
            pts_us: r.u64()?,
            keyframe: flags & 1 == 1,
            codec,
            payload_len: r.u32()?,
        };
        r.finish()?;
        check_len(
            WHAT,
            header.payload_len as usize,
            MAX_FRAME_PAYLOAD as usize,
        )?;
        Ok(header)
    }
}

/// The header of an Opus packet: `version u8 | reserved u8 | payload_len u16 | pts_us u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AudioHeader {
    /// Presentation time on the session clock (shared with video), µs.
    pub pts_us: u64,
    /// Bytes of Opus packet after the header (at most [`MAX_AUDIO_PAYLOAD`]).
    pub payload_len: u16,
}

impl AudioHeader {
    /// The header's bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; AUDIO_HEADER_LEN] {
        let mut out = [0u8; AUDIO_HEADER_LEN];
        out[0] = VERSION;
        out[2..4].copy_from_slice(&self.payload_len.to_be_bytes());
        out[4..12].copy_from_slice(&self.pts_us.to_be_bytes());
        out
    }

    /// Reads a header from exactly [`AUDIO_HEADER_LEN`] bytes.
    ///
    /// # Errors
    /// Wrong length or version, or a payload over [`MAX_AUDIO_PAYLOAD`].
    pub fn decode(bytes: &[u8]) -> Result<Self, MediaError> {
        const WHAT: &str = "audio header";
        let mut r = Reader::new(WHAT, bytes);
        r.version()?;
        r.reserved()?;
        let payload_len = r.u16()?;
        let pts_us = r.u64()?;
        r.finish()?;
        check_len(WHAT, payload_len.into(), MAX_AUDIO_PAYLOAD)?;
        Ok(AudioHeader {
            pts_us,
            payload_len,
        })
    }
}

/// A run of consecutive inputs: `first_seq`, `first_seq + 1`, …
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InputRun {
    /// Sequence number of the first event (≥ 1).
    pub first_seq: u64,
    /// The events, at most [`MAX_INPUTS_PER_RUN`].
    pub events: Vec<InputEvent>,
}

impl InputRun {
    /// The (seq, event) pairs of the run.
    pub fn iter(&self) -> impl Iterator<Item = (u64, InputEvent)> + '_ {
        (self.first_seq..).zip(self.events.iter().copied())
    }

    /// Bytes [`Self::encode_into`] appends.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        10 + self.events.iter().map(event_len).sum::<usize>()
    }

    /// Appends `first_seq u64 | count u16 | events`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.first_seq.to_be_bytes());
        let count = u16::try_from(self.events.len().min(MAX_INPUTS_PER_RUN)).unwrap_or(u16::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for e in self.events.iter().take(usize::from(count)) {
            encode_event(e, out);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, MediaError> {
        let first_seq = r.u64()?;
        let count = usize::from(r.u16()?);
        if first_seq == 0 {
            return Err(invalid(r.what, "input sequence numbers start at 1".into()));
        }
        if count > MAX_INPUTS_PER_RUN {
            return Err(MediaError::TooLong {
                what: r.what,
                len: count,
                max: MAX_INPUTS_PER_RUN,
            });
        }
        if first_seq.checked_add(count as u64).is_none() {
            return Err(invalid(r.what, "input sequence overflows".into()));
        }
        let mut events = Vec::with_capacity(count.min(r.remaining()));
        for _ in 0..count {
            events.push(decode_event(r)?);
        }
        Ok(InputRun { first_seq, events })
    }
}

/// Bytes of one encoded event.
#[must_use]
pub fn event_len(e: &InputEvent) -> usize {
    match e {
        InputEvent::Key { code, .. } => match code.index() {
            Some(_) => 3,
            None => 4 + code.code().len(),
        },
        InputEvent::PointerMove { .. } => 9,
        InputEvent::Button { .. } | InputEvent::GamepadButton { .. } => 3,
        InputEvent::GamepadAxis { .. } => 4,
    }
}

const KEY_BY_NAME: u8 = 0xFF;

fn encode_event(e: &InputEvent, out: &mut Vec<u8>) {
    match *e {
        InputEvent::Key { code, down } => {
            out.push(1);
            out.push(u8::from(down));
            match code.index().and_then(|i| u8::try_from(i).ok()) {
                Some(i) => out.push(i),
                None => {
                    let name = code.code().as_bytes();
                    out.push(KEY_BY_NAME);
                    out.push(u8::try_from(name.len()).unwrap_or(0));
                    out.extend_from_slice(&name[..name.len().min(255)]);
                }
            }
        }
        InputEvent::PointerMove { dx, dy } => {
            out.push(2);
            out.extend_from_slice(&dx.to_be_bytes());
            out.extend_from_slice(&dy.to_be_bytes());
        }
        InputEvent::Button { button, down } => out.extend_from_slice(&[3, button, u8::from(down)]),
        InputEvent::GamepadAxis { axis, value } => {
            out.extend_from_slice(&[4, axis]);
            out.extend_from_slice(&value.to_be_bytes());
        }
        InputEvent::GamepadButton { button, down } => {
            out.extend_from_slice(&[5, button, u8::from(down)]);
        }
    }
}

fn decode_bool(r: &mut Reader<'_>) -> Result<bool, MediaError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(invalid(r.what, format!("boolean byte {b}"))),
    }
}

fn decode_event(r: &mut Reader<'_>) -> Result<InputEvent, MediaError> {
    match r.u8()? {
        1 => {
            let down = decode_bool(r)?;
            let k = r.u8()?;
            let code = if k == KEY_BY_NAME {
                let len = usize::from(r.u8()?);
                let name = std::str::from_utf8(r.bytes(len)?)
                    .map_err(|_| invalid(r.what, "key name is not UTF-8".into()))?;
                match Key::from_code(name) {
                    Some(key) if key.index().is_none() => key,
                    _ => return Err(invalid(r.what, format!("unknown key name {name:?}"))),
                }
            } else {
                named_key(k).ok_or_else(|| invalid(r.what, format!("unknown key index {k}")))?
            };
            Ok(InputEvent::Key { code, down })
        }
        2 => Ok(InputEvent::PointerMove {
            dx: r.i32()?,
            dy: r.i32()?,
        }),
        3 => Ok(InputEvent::Button {
            button: r.u8()?,
            down: decode_bool(r)?,
        }),
        4 => Ok(InputEvent::GamepadAxis {
            axis: r.u8()?,
            value: i16::from_be_bytes([r.u8()?, r.u8()?]),
        }),
        5 => Ok(InputEvent::GamepadButton {
            button: r.u8()?,
            down: decode_bool(r)?,
        }),
        t => Err(invalid(r.what, format!("unknown input type {t}"))),
    }
}

fn named_key(index: u8) -> Option<Key> {
    [
        Key::ArrowUp,
        Key::ArrowDown,
        Key::ArrowLeft,
        Key::ArrowRight,
        Key::KeyW,
        Key::KeyA,
        Key::KeyS,
        Key::KeyD,
        Key::Space,
        Key::Enter,
        Key::Escape,
    ]
    .into_iter()
    .find(|k| k.index() == Some(u32::from(index)))
}

/// A QUIC datagram of this protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datagram {
    /// Client to edge: every input not acknowledged yet (or as many as fit).
    Input(InputRun),
    /// Edge to client: one Opus packet.
    Audio {
        /// Its header.
        header: AudioHeader,
        /// The packet.
        data: Vec<u8>,
    },
}

const DGRAM_INPUT: u8 = 1;
const DGRAM_AUDIO: u8 = 2;

impl Datagram {
    /// The datagram's bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Datagram::Input(run) => {
                let mut out = Vec::with_capacity(1 + run.encoded_len());
                out.push(DGRAM_INPUT);
                run.encode_into(&mut out);
                out
            }
            Datagram::Audio { header, data } => {
                let mut out = Vec::with_capacity(1 + AUDIO_HEADER_LEN + data.len());
                out.push(DGRAM_AUDIO);
                out.extend_from_slice(&header.encode());
                out.extend_from_slice(data);
                out
            }
        }
    }

    /// Reads one datagram.
    ///
    /// # Errors
    /// Unknown type, truncation, limits, trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, MediaError> {
        const WHAT: &str = "datagram";
        let mut r = Reader::new(WHAT, bytes);
        let d = match r.u8()? {
            DGRAM_INPUT => Datagram::Input(InputRun::decode(&mut r)?),
            DGRAM_AUDIO => {
                let header = AudioHeader::decode(r.bytes(AUDIO_HEADER_LEN)?)?;
                let data = r.bytes(usize::from(header.payload_len))?.to_vec();
                Datagram::Audio { header, data }
            }
            t => return Err(invalid(WHAT, format!("unknown datagram type {t}"))),
        };
        r.finish()?;
        Ok(d)
    }
}

/// When the client received one frame, for the edge's rate controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReceiveReport {
    /// Frame number.
    pub frame: u32,
    /// When its last byte arrived, µs since the Unix epoch on the client's clock.
    pub received_us: u64,
    /// Bytes of the frame stream.
    pub bytes: u32,
}

/// The client's periodic view of the session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClientStats {
    /// Frames decoded so far.
    pub frames_decoded: u32,
    /// Frames skipped (lost, reset or undecodable) so far.
    pub frames_skipped: u32,
    /// Smoothed RTT, µs.
    pub rtt_us: u32,
    /// Mean decode time over the last interval, µs.
    pub decode_us: u32,
}

/// Where the session went when its edge is failing over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverNotice {
    /// The new edge's `host:port`.
    pub edge: String,
    /// SHA-256 of the new edge's certificate.
    pub cert_fingerprint: [u8; 32],
    /// A fresh join token for the new edge.
    pub token: Vec<u8>,
}

/// A message on the control stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlMessage {
    /// Client to edge, first: the join token.
    Hello {
        /// The token, as the broker (or `run --dev`) issued it.
        token: Vec<u8>,
    },
    /// Client to edge: the next frame should be a keyframe (a gap or a reset).
    RequestKeyframe {
        /// The first frame the client misses.
        missing_from: u32,
    },
    /// Client to edge: receive times of frames.
    ReceiveReports(Vec<ReceiveReport>),
    /// Client to edge: periodic stats.
    Stats(ClientStats),
    /// Client to edge: inputs that did not fit in a datagram.
    Inputs(InputRun),
    /// Edge to client, after a good hello.
    Welcome {
        /// Session id (for logs and support).
        session_id: String,
        /// Picture width.
        width: u16,
        /// Picture height.
        height: u16,
        /// Frames per second.
        fps: u16,
    },
    /// Edge to client: the two input acknowledgement numbers.
    InputAck {
        /// Highest contiguous applied sequence.
        applied: u64,
        /// Highest sequence covered by a committed checkpoint.
        committed: u64,
    },
    /// Edge to client: the session moves to another edge.
    Failover(FailoverNotice),
    /// Edge to client, last: the edge ends the session (a [`close_code`] and why). The client
    /// closes the connection with that code; the edge closes it itself if the client does not
    /// in time. Sent on the control stream rather than relying on the CONNECTION_CLOSE alone,
    /// which a congested connection can fail to send.
    Goodbye {
        /// A [`close_code`].
        code: u32,
        /// Why, for logs and the player.
        reason: String,
    },
}

mod tag {
    pub const HELLO: u8 = 1;
    pub const REQUEST_KEYFRAME: u8 = 2;
    pub const RECEIVE_REPORTS: u8 = 3;
    pub const STATS: u8 = 4;
    pub const INPUTS: u8 = 5;
    pub const WELCOME: u8 = 0x81;
    pub const INPUT_ACK: u8 = 0x82;
    pub const FAILOVER: u8 = 0x83;
    pub const GOODBYE: u8 = 0x84;
}

impl ControlMessage {
    /// Appends the framed message (`u16 length | u8 type | body`).
    ///
    /// # Errors
    /// [`MediaError::TooLong`] when a field is over its limit (nothing is appended).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), MediaError> {
        const WHAT: &str = "control message";
        let mut body = Vec::with_capacity(64);
        match self {
            ControlMessage::Hello { token } => {
                check_len(WHAT, token.len(), MAX_TOKEN_LEN)?;
                body.push(tag::HELLO);
                body.push(VERSION);
                put_bytes16(&mut body, token);
            }
            ControlMessage::RequestKeyframe { missing_from } => {
                body.push(tag::REQUEST_KEYFRAME);
                body.extend_from_slice(&missing_from.to_be_bytes());
            }
            ControlMessage::ReceiveReports(reports) => {
                check_len(WHAT, reports.len(), MAX_REPORTS)?;
                body.push(tag::RECEIVE_REPORTS);
                body.extend_from_slice(&u16::try_from(reports.len()).unwrap_or(0).to_be_bytes());
                for r in reports {
                    body.extend_from_slice(&r.frame.to_be_bytes());
                    body.extend_from_slice(&r.received_us.to_be_bytes());
                    body.extend_from_slice(&r.bytes.to_be_bytes());
                }
            }
            ControlMessage::Stats(s) => {
                body.push(tag::STATS);
                for v in [s.frames_decoded, s.frames_skipped, s.rtt_us, s.decode_us] {
                    body.extend_from_slice(&v.to_be_bytes());
                }
            }
            ControlMessage::Inputs(run) => {
                check_len(WHAT, run.events.len(), MAX_INPUTS_PER_RUN)?;
                body.push(tag::INPUTS);
                run.encode_into(&mut body);
            }
            ControlMessage::Welcome {
                session_id,
                width,
                height,
                fps,
            } => {
                check_len(WHAT, session_id.len(), MAX_STRING_LEN)?;
                body.push(tag::WELCOME);
                body.push(VERSION);
                put_bytes16(&mut body, session_id.as_bytes());
                for v in [width, height, fps] {
                    body.extend_from_slice(&v.to_be_bytes());
                }
            }
            ControlMessage::InputAck { applied, committed } => {
                body.push(tag::INPUT_ACK);
                body.extend_from_slice(&applied.to_be_bytes());
                body.extend_from_slice(&committed.to_be_bytes());
            }
            ControlMessage::Failover(n) => {
                check_len(WHAT, n.edge.len(), MAX_STRING_LEN)?;
                check_len(WHAT, n.token.len(), MAX_TOKEN_LEN)?;
                body.push(tag::FAILOVER);
                put_bytes16(&mut body, n.edge.as_bytes());
                body.extend_from_slice(&n.cert_fingerprint);
                put_bytes16(&mut body, &n.token);
            }
            ControlMessage::Goodbye { code, reason } => {
                check_len(WHAT, reason.len(), MAX_STRING_LEN)?;
                body.push(tag::GOODBYE);
                body.extend_from_slice(&code.to_be_bytes());
                put_bytes16(&mut body, reason.as_bytes());
            }
        }
        check_len(WHAT, body.len(), MAX_CONTROL_LEN)?;
        let len = u16::try_from(body.len()).map_err(|_| MediaError::TooLong {
            what: WHAT,
            len: body.len(),
            max: MAX_CONTROL_LEN,
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&body);
        Ok(())
    }

    /// Reads one framed message from the front of `buf`: `Ok(None)` when more bytes are needed,
    /// else the message and how many bytes it took.
    ///
    /// # Errors
    /// A frame over [`MAX_CONTROL_LEN`] (detected from the length alone), or a bad body.
    pub fn decode_frame(buf: &[u8]) -> Result<Option<(Self, usize)>, MediaError> {
        let Some(len) = buf.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len > MAX_CONTROL_LEN {
            return Err(MediaError::TooLong {
                what: "control message",
                len,
                max: MAX_CONTROL_LEN,
            });
        }
        let Some(body) = buf.get(2..2 + len) else {
            return Ok(None);
        };
        Ok(Some((Self::decode_body(body)?, 2 + len)))
    }

    /// Reads one message body (type byte and fields, without the length).
    ///
    /// # Errors
    /// Unknown type, truncation, limits, trailing bytes.
    pub fn decode_body(body: &[u8]) -> Result<Self, MediaError> {
        const WHAT: &str = "control message";
        let mut r = Reader::new(WHAT, body);
        let msg = match r.u8()? {
            tag::HELLO => {
                r.version()?;
                ControlMessage::Hello {
                    token: r.bytes16(MAX_TOKEN_LEN)?.to_vec(),
                }
            }
            tag::REQUEST_KEYFRAME => ControlMessage::RequestKeyframe {
                missing_from: r.u32()?,
            },
            tag::RECEIVE_REPORTS => {
                let n = usize::from(r.u16()?);
                check_len(WHAT, n, MAX_REPORTS)?;
                let mut reports = Vec::with_capacity(n.min(r.remaining() / 16));
                for _ in 0..n {
                    reports.push(ReceiveReport {
                        frame: r.u32()?,
                        received_us: r.u64()?,
                        bytes: r.u32()?,
                    });
                }
                ControlMessage::ReceiveReports(reports)
            }
            tag::STATS => ControlMessage::Stats(ClientStats {
                frames_decoded: r.u32()?,
                frames_skipped: r.u32()?,
                rtt_us: r.u32()?,
                decode_us: r.u32()?,
            }),
            tag::INPUTS => ControlMessage::Inputs(InputRun::decode(&mut r)?),
            tag::WELCOME => {
                r.version()?;
                ControlMessage::Welcome {
                    session_id: r.string16()?,
                    width: r.u16()?,
                    height: r.u16()?,
                    fps: r.u16()?,
                }
            }
            tag::INPUT_ACK => {
                let applied = r.u64()?;
                let committed = r.u64()?;
                if committed > applied {
                    return Err(invalid(WHAT, "committed input ahead of applied".into()));
                }
                ControlMessage::InputAck { applied, committed }
            }
            tag::FAILOVER => {
                let edge = r.string16()?;
                let mut cert_fingerprint = [0u8; 32];
                cert_fingerprint.copy_from_slice(r.bytes(32)?);
                let token = r.bytes16(MAX_TOKEN_LEN)?.to_vec();
                ControlMessage::Failover(FailoverNotice {
                    edge,
                    cert_fingerprint,
                    token,
                })
            }
            tag::GOODBYE => ControlMessage::Goodbye {
                code: r.u32()?,
                reason: r.string16()?,
            },
            t => return Err(invalid(WHAT, format!("unknown message type {t:#04x}"))),
        };
        r.finish()?;
        Ok(msg)
    }
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), MediaError> {
    if len > max {
        Err(MediaError::TooLong { what, len, max })
    } else {
        Ok(())
    }
}

fn put_bytes16(out: &mut Vec<u8>, bytes: &[u8]) {
    // Callers checked the length against a limit below u16::MAX.
    out.extend_from_slice(&u16::try_from(bytes.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn invalid(what: &'static str, reason: String) -> MediaError {
    MediaError::Invalid { what, reason }
}

/// A bounds-checked big-endian cursor.
struct Reader<'a> {
    what: &'static str,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(what: &'static str, buf: &'a [u8]) -> Self {
        Self { what, buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], MediaError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(MediaError::Truncated {
                what: self.what,
                got: self.buf.len(),
                need: self.pos.saturating_add(n),
            });
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MediaError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    /// Reads the version byte; anything but [`VERSION`] is refused, named by `what`.
    fn version(&mut self) -> Result<(), MediaError> {
        match self.u8()? {
            VERSION => Ok(()),
            got => Err(MediaError::Version {
                what: self.what,
                got,
            }),
        }
    }

    fn u8(&mut self) -> Result<u8, MediaError> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a reserved byte, which must be zero.
    fn reserved(&mut self) -> Result<(), MediaError> {
        match self.u8()? {
            0 => Ok(()),
            _ => Err(invalid(self.what, "reserved byte is not zero".into())),
        }
    }

    fn u16(&mut self) -> Result<u16, MediaError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, MediaError> {
        self.array().map(u32::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32, MediaError> {
        self.array().map(i32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, MediaError> {
        self.array().map(u64::from_be_bytes)
    }

    fn bytes16(&mut self, max: usize) -> Result<&'a [u8], MediaError> {
        let len = usize::from(self.u16()?);
        check_len(self.what, len, max)?;
        self.bytes(len)
    }

    fn string16(&mut self) -> Result<String, MediaError> {
        let bytes = self.bytes16(MAX_STRING_LEN)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| invalid(self.what, "string is not UTF-8".into()))
    }

    fn finish(&self) -> Result<(), MediaError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(MediaError::Trailing {
                what: self.what,
                extra,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_key() -> impl Strategy<Value = Key> {
        prop_oneof![
            (0u8..11).prop_map(|i| named_key(i).unwrap_or(Key::ArrowUp)),
            prop::sample::select(vec!["KeyQ", "ShiftLeft", "Digit7", "F12", "Unidentified"])
                .prop_map(|n| Key::from_code(n).unwrap_or(Key::Space)),
        ]
    }

    fn any_event() -> impl Strategy<Value = InputEvent> {
        crate::input::arb_event_with(any_key())
    }

    fn any_run() -> impl Strategy<Value = InputRun> {
        (
            1u64..u64::MAX / 2,
            prop::collection::vec(any_event(), 0..40),
        )
            .prop_map(|(first_seq, events)| InputRun { first_seq, events })
    }

    fn any_control() -> impl Strategy<Value = ControlMessage> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64)
                .prop_map(|token| ControlMessage::Hello { token }),
            any::<u32>().prop_map(|missing_from| ControlMessage::RequestKeyframe { missing_from }),
            prop::collection::vec((any::<u32>(), any::<u64>(), any::<u32>()), 0..20).prop_map(
                |v| ControlMessage::ReceiveReports(
                    v.into_iter()
                        .map(|(frame, received_us, bytes)| ReceiveReport {
                            frame,
                            received_us,
                            bytes
                        })
                        .collect()
                )
            ),
            (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(a, b, c, d)| {
                ControlMessage::Stats(ClientStats {
                    frames_decoded: a,
                    frames_skipped: b,
                    rtt_us: c,
                    decode_us: d,
                })
            }),
            any_run().prop_map(ControlMessage::Inputs),
            ("[a-z0-9-]{0,40}", any::<u16>(), any::<u16>(), any::<u16>()).prop_map(
                |(session_id, width, height, fps)| ControlMessage::Welcome {
                    session_id,
                    width,
                    height,
                    fps
                }
            ),
            (any::<u64>(), any::<u64>()).prop_map(|(a, b)| ControlMessage::InputAck {
                applied: a.max(b),
                committed: a.min(b)
            }),
            (any::<u32>(), "\\PC{0,60}")
                .prop_map(|(code, reason)| ControlMessage::Goodbye { code, reason }),
            (
                "[a-z0-9.:]{0,40}",
                any::<[u8; 32]>(),
                prop::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(edge, cert_fingerprint, token)| ControlMessage::Failover(
                    FailoverNotice {
                        edge,
                        cert_fingerprint,
                        token
                    }
                )),
        ]
    }

    proptest! {
        #[test]
        fn frame_header_round_trips(frame: u32, capture_us: u64, render_us: u64, pts_us: u64,
                                    keyframe: bool, payload_len in 0..=MAX_FRAME_PAYLOAD) {
            let h = FrameHeader { frame, capture_us, render_us, pts_us, keyframe,
                                  codec: Codec::H264, payload_len };
            prop_assert_eq!(FrameHeader::decode(&h.encode()), Ok(h));
        }

        #[test]
        fn control_messages_round_trip_in_a_stream(msgs in prop::collection::vec(any_control(), 1..8)) {
            let mut buf = Vec::new();
            for m in &msgs {
                m.encode(&mut buf).unwrap();
            }
            let mut at = 0;
            let mut got = Vec::new();
            while let Some((m, used)) = ControlMessage::decode_frame(&buf[at..]).unwrap() {
                got.push(m);
                at += used;
            }
            prop_assert_eq!(at, buf.len());
            prop_assert_eq!(got, msgs);
        }

        #[test]
        fn datagrams_round_trip(run in any_run(), pts_us: u64, audio in prop::collection::vec(any::<u8>(), 0..MAX_AUDIO_PAYLOAD)) {
            let d = Datagram::Input(run.clone());
            prop_assert_eq!(run.encoded_len() + 1, d.encode().len());
            prop_assert_eq!(Datagram::decode(&d.encode()), Ok(d));
            let a = Datagram::Audio {
                header: AudioHeader { pts_us, payload_len: u16::try_from(audio.len()).unwrap() },
                data: audio,
            };
            prop_assert_eq!(Datagram::decode(&a.encode()), Ok(a));
        }

        #[test]
        fn decoders_never_panic_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = FrameHeader::decode(&bytes);
            let _ = AudioHeader::decode(&bytes);
            let _ = Datagram::decode(&bytes);
            let _ = ControlMessage::decode_frame(&bytes);
            let _ = ControlMessage::decode_body(&bytes);
        }
    }

    #[test]
    fn partial_control_frames_wait_for_more_bytes() {
        let mut buf = Vec::new();
        ControlMessage::Hello {
            token: b"secret".to_vec(),
        }
        .encode(&mut buf)
        .unwrap();
        for cut in 0..buf.len() {
            assert_eq!(ControlMessage::decode_frame(&buf[..cut]), Ok(None));
        }
        assert!(ControlMessage::decode_frame(&buf).unwrap().is_some());
    }

    #[test]
    fn limits_are_enforced() {
        assert!(matches!(
            ControlMessage::decode_frame(&[0xFF, 0xFF, 1]),
            Err(MediaError::TooLong { .. })
        ));
        let mut h = FrameHeader {
            frame: 1,
            capture_us: 0,
            render_us: 0,
            pts_us: 0,
            keyframe: false,
            codec: Codec::H264,
            payload_len: MAX_FRAME_PAYLOAD + 1,
        };
        assert!(matches!(
            FrameHeader::decode(&h.encode()),
            Err(MediaError::TooLong { .. })
        ));
        h.payload_len = 1;
        let mut bytes = h.encode();
        bytes[0] = 9;
        assert!(matches!(
            FrameHeader::decode(&bytes),
            Err(MediaError::Version { got: 9, .. })
        ));
        let big = ControlMessage::Hello {
            token: vec![0; MAX_TOKEN_LEN + 1],
        };
        let mut out = Vec::new();
        assert!(big.encode(&mut out).is_err());
        assert!(out.is_empty());
        // A run announcing more inputs than it holds is truncated, not a huge allocation.
        let mut d = vec![DGRAM_INPUT];
        d.extend_from_slice(&1u64.to_be_bytes());
        d.extend_from_slice(&1000u16.to_be_bytes());
        assert!(matches!(
            Datagram::decode(&d),
            Err(MediaError::Truncated { .. })
        ));
    }

    #[test]
    fn close_codes_are_distinct_and_each_says_what_to_do() {
        use close_code::*;
        let codes = [
            DONE,
            BAD_TOKEN,
            PROTOCOL_VIOLATION,
            HELLO_TIMEOUT,
            UNAVAILABLE,
            SHUTDOWN,
            EDGE_FULL,
        ];
        let mut texts: Vec<&str> = codes.iter().map(|&c| describe(c.into())).collect();
        assert!(texts.iter().all(|t| *t != describe(0xffff)), "{texts:?}");
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), codes.len(), "one meaning per code");
        assert_eq!(
            describe(EDGE_FULL.into()),
            "the edge is full: try again later or another edge"
        );
    }
}
