//! The WebRTC transport's wire formats: the WHEP offer check and the data-channel messages.
//!
//! Sans-IO: every decoder takes bytes from outside and returns a value or an error that says
//! what was wrong; the edge's `webrtc` module does the I/O. Fuzzed (`fuzz/fuzz_targets/whep_*`).
//!
//! Data channels (JSON text messages):
//! - `"input"` (unordered, no retransmits) and `"control"` (ordered, reliable), client → edge:
//!   [`InputMessage`] `{"seq": 7, "event": {"type": "key", "code": "ArrowUp", "down": true}}`;
//! - `"control"`, edge → client: [`AckMessage`] `{"applied": 7, "committed": 7}`.

use serde::{Deserialize, Serialize};

use crate::input::InputEvent;

/// Largest SDP offer accepted (a browser's offer with audio, video and data is ~6 KiB).
pub const MAX_OFFER_BYTES: usize = 32 * 1024;
/// Largest data-channel message accepted.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Why a request or message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The body is larger than the limit.
    #[error("{what} is {len} bytes, more than the {max} accepted: send a smaller one")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The SDP offer is not usable.
    #[error("malformed SDP offer: {0}; send the offer from RTCPeerConnection.createOffer()")]
    BadOffer(&'static str),
    /// A data-channel message is not an input.
    #[error("bad input message: {0}; send {{\"seq\": N, \"event\": {{...}}}} as JSON text")]
    BadInput(String),
}

/// Checks that `body` looks like an SDP offer a WebRTC stack can answer, and returns it as text.
///
/// The SDP parser of the WebRTC stack still has the last word; this catches what a client can
/// fix (not UTF-8, not SDP, nothing to receive) with a sentence instead of a parser's code.
///
/// # Errors
/// [`WireError::TooLarge`] or [`WireError::BadOffer`] with the reason.
pub fn check_offer(body: &[u8]) -> Result<&str, WireError> {
    if body.len() > MAX_OFFER_BYTES {
        return Err(WireError::TooLarge {
            what: "SDP offer",
            len: body.len(),
            max: MAX_OFFER_BYTES,
        });
    }
    let sdp = std::str::from_utf8(body).map_err(|_| WireError::BadOffer("not UTF-8 text"))?;
    if !sdp.starts_with("v=0") {
        return Err(WireError::BadOffer("it does not start with `v=0`"));
    }
    let mut media = 0;
    let mut video = false;
    let mut fingerprint = false;
    let mut ufrag = false;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if line.len() < 2 || line.as_bytes()[1] != b'=' {
            return Err(WireError::BadOffer("a line is not of the form `x=value`"));
        }
        if let Some(m) = line.strip_prefix("m=") {
            media += 1;
            video |= m.starts_with("video ");
        }
        fingerprint |= line.starts_with("a=fingerprint:");
        ufrag |= line.starts_with("a=ice-ufrag:");
    }
    if media == 0 {
        return Err(WireError::BadOffer("it has no media section (`m=` line)"));
    }
    if !video {
        return Err(WireError::BadOffer(
            "it has no video section: add a recvonly video transceiver",
        ));
    }
    if !fingerprint {
        return Err(WireError::BadOffer(
            "it has no DTLS fingerprint (`a=fingerprint:`)",
        ));
    }
    if !ufrag {
        return Err(WireError::BadOffer(
            "it has no ICE credentials (`a=ice-ufrag:`)",
        ));
    }
    Ok(sdp)
}

/// A player input on a data channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputMessage {
    /// Input sequence number, from 1, one more per input (shared by both channels).
    pub seq: u64,
    /// What the player did.
    pub event: InputEvent,
}

impl InputMessage {
    /// Decodes one data-channel message.
    ///
    /// # Errors
    /// [`WireError::TooLarge`], or [`WireError::BadInput`] saying what was wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(WireError::TooLarge {
                what: "input message",
                len: bytes.len(),
                max: MAX_MESSAGE_BYTES,
            });
        }
        let msg: Self =
            serde_json::from_slice(bytes).map_err(|e| WireError::BadInput(e.to_string()))?;
        if msg.seq == 0 {
            return Err(WireError::BadInput("seq starts at 1".into()));
        }
        Ok(msg)
    }
}

/// The edge's acknowledgement of inputs, sent on `"control"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckMessage {
    /// Highest contiguous input sequence applied to the game.
    pub applied: u64,
    /// Highest sequence covered by a committed checkpoint.
    pub committed: u64,
}

/// The ICE candidates of a trickle-ICE SDP fragment (RFC 8840), as `candidate:...` strings
/// with their `a=mid` (when the fragment names one).
///
/// # Errors
/// [`WireError::TooLarge`] or [`WireError::BadOffer`] when the fragment is not text.
pub fn fragment_candidates(body: &[u8]) -> Result<Vec<(String, Option<String>)>, WireError> {
    if body.len() > MAX_OFFER_BYTES {
        return Err(WireError::TooLarge {
            what: "SDP fragment",
            len: body.len(),
            max: MAX_OFFER_BYTES,
        });
    }
    let text = std::str::from_utf8(body).map_err(|_| WireError::BadOffer("not UTF-8 text"))?;
    let mut mid = None;
    let mut out = Vec::new();
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m.to_owned());
        } else if let Some(c) = line.strip_prefix("a=")
            && c.starts_with("candidate:")
        {
            out.push((c.to_owned(), mid.clone()));
        }
    }
    Ok(out)
}

/// The ICE username fragment a trickle-ICE fragment carries, if any (a new one asks for an ICE
/// restart).
#[must_use]
pub fn fragment_ufrag(body: &[u8]) -> Option<&str> {
    std::str::from_utf8(body)
        .ok()?
        .lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("a=ice-ufrag:"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::Key;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=fingerprint:sha-256 AA\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=ice-ufrag:abcd\r\n";

    #[test]
    fn offer_checks_say_why() {
        assert_eq!(check_offer(OFFER.as_bytes()), Ok(OFFER));
        assert!(matches!(
            check_offer(b"hello"),
            Err(WireError::BadOffer(r)) if r.contains("v=0")
        ));
        let audio_only = OFFER.replace("m=video", "m=audio");
        assert!(matches!(
            check_offer(audio_only.as_bytes()),
            Err(WireError::BadOffer(r)) if r.contains("no video")
        ));
        let big = vec![b'a'; MAX_OFFER_BYTES + 1];
        assert!(matches!(check_offer(&big), Err(WireError::TooLarge { .. })));
        assert!(check_offer(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn input_messages_round_trip_and_garbage_is_refused() {
        let msg = InputMessage {
            seq: 3,
            event: InputEvent::Key {
                code: Key::ArrowUp,
                down: true,
            },
        };
        let text = serde_json::to_vec(&msg).unwrap();
        assert_eq!(InputMessage::decode(&text), Ok(msg));
        assert!(InputMessage::decode(b"garbage").is_err());
        assert!(
            InputMessage::decode(br#"{"seq":0,"event":{"type":"button","button":0,"down":true}}"#)
                .is_err()
        );
        assert!(
            InputMessage::decode(br#"{"seq":1,"event":{"type":"key","code":"Nope","down":true}}"#)
                .is_err()
        );
    }

    #[test]
    fn fragments_yield_candidates() {
        let frag =
            b"a=ice-ufrag:xy\r\na=mid:0\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n";
        let c = fragment_candidates(frag).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].1.as_deref(), Some("0"));
        assert_eq!(fragment_ufrag(frag), Some("xy"));
    }
}
