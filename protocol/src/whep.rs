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

/// The CORS headers (name, value) of the WHEP and session responses of the edge and the broker:
/// a page on any origin may play (the join token, not the origin, is the credential), send the
/// WHEP methods and headers, and read `Location`, the session secret, the ETag, the ICE
/// server links and a refusal's `Retry-After`. The HTTP servers add them to their responses as
/// they are.
pub const CORS_HEADERS: [(&str, &str); 5] = [
    ("access-control-allow-origin", "*"),
    (
        "access-control-allow-methods",
        "POST, PATCH, DELETE, GET, OPTIONS",
    ),
    (
        "access-control-allow-headers",
        "authorization, content-type, if-match",
    ),
    (
        "access-control-expose-headers",
        "location, edgeplay-session-secret, etag, link, accept-patch, retry-after",
    ),
    ("access-control-max-age", "600"),
];

/// Why a request or message was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
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
    /// A trickle-ICE fragment (PATCH body) is not usable.
    #[error(
        "malformed trickle-ICE fragment: {0}; send `application/trickle-ice-sdpfrag` (RFC 8840)"
    )]
    BadFragment(&'static str),
    /// A data-channel message is not an input.
    #[error("bad input message: {0}; send {{\"seq\": N, \"event\": {{...}}}} as JSON text")]
    BadInput(String),
}

/// Refuses an SDP body (an offer, a trickle-ICE fragment, an RTT probe's offer) larger than
/// [`MAX_OFFER_BYTES`]; `what` names it in the error.
///
/// # Errors
/// [`WireError::TooLarge`].
pub fn check_sdp_size(body: &[u8], what: &'static str) -> Result<(), WireError> {
    if body.len() > MAX_OFFER_BYTES {
        return Err(WireError::TooLarge {
            what,
            len: body.len(),
            max: MAX_OFFER_BYTES,
        });
    }
    Ok(())
}

/// Checks that `body` looks like an SDP offer a WebRTC stack can answer, and returns it as text.
///
/// The SDP parser of the WebRTC stack still has the last word; this catches what a client can
/// fix (not UTF-8, not SDP, nothing to receive) with a sentence instead of a parser's code.
///
/// # Errors
/// [`WireError::TooLarge`] or [`WireError::BadOffer`] with the reason.
pub fn check_offer(body: &[u8]) -> Result<&str, WireError> {
    check_sdp_size(body, "SDP offer")?;
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

/// The H.264 profiles the edge sends: what the capsfilter after the encoder fixes and the SDP
/// answer names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum H264Profile {
    /// Constrained baseline (`42e01f`): every WebRTC H.264 decoder takes it.
    #[default]
    ConstrainedBaseline,
    /// High (`640c1f`: constraint_set4/5, frame-only, no B-frames as the edge encodes it):
    /// CABAC and 8x8 transforms, fewer bits for the same picture.
    High,
}

impl H264Profile {
    /// The SDP `profile-level-id` (level 3.1; `level-asymmetry-allowed=1` lets the edge send
    /// the level its resolution needs).
    #[must_use]
    pub fn profile_level_id(self) -> &'static str {
        match self {
            Self::ConstrainedBaseline => "42e01f",
            Self::High => "640c1f",
        }
    }

    /// The `profile_idc` of the SPS.
    #[must_use]
    pub fn profile_idc(self) -> u8 {
        match self {
            Self::ConstrainedBaseline => 66,
            Self::High => 100,
        }
    }
}

/// The H.264 profile to answer `offer` with: that of the first H.264 payload (in the client's
/// order of preference, the `m=video` line) with `packetization-mode=1` whose profile the edge
/// can send: high (`profile_idc` 100) gives [`H264Profile::High`]; baseline or main (a
/// constrained-baseline stream is valid in both) gives [`H264Profile::ConstrainedBaseline`].
/// Nothing usable: constrained baseline (the WebRTC stack then decides whether it can answer).
#[must_use]
pub fn h264_profile(offer: &str) -> H264Profile {
    let mut lines = offer.lines().map(|l| l.trim_end_matches('\r'));
    let Some(mline) = lines.by_ref().find(|l| l.starts_with("m=video ")) else {
        return H264Profile::default();
    };
    let section: Vec<&str> = lines.take_while(|l| !l.starts_with("m=")).collect();
    let attr = |kind: &str, pt: &str| {
        let prefix = format!("a={kind}:{pt} ");
        section
            .iter()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(str::to_owned)
    };
    for pt in mline.split(' ').skip(3) {
        let is_h264 =
            attr("rtpmap", pt).is_some_and(|r| r.to_ascii_uppercase().starts_with("H264/90000"));
        if !is_h264 {
            continue;
        }
        let fmtp = attr("fmtp", pt).unwrap_or_default();
        let param = |name: &str| {
            fmtp.split(';')
                .filter_map(|kv| kv.trim().split_once('='))
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_owned())
        };
        if param("packetization-mode").as_deref() != Some("1") {
            continue;
        }
        let idc =
            param("profile-level-id").and_then(|id| u8::from_str_radix(id.get(..2)?, 16).ok());
        match idc {
            Some(100) => return H264Profile::High,
            Some(66 | 77) => return H264Profile::ConstrainedBaseline,
            _ => {}
        }
    }
    H264Profile::default()
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

/// Most candidates one fragment may carry.
pub const MAX_FRAGMENT_CANDIDATES: usize = 64;

/// A trickle-ICE SDP fragment (RFC 8840), the body of a WHEP `PATCH`
/// (`application/trickle-ice-sdpfrag`): more candidates for the current ICE session, or, with
/// new credentials, an ICE restart (RFC 9725 section 4.3.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SdpFragment {
    /// `a=ice-ufrag`, if the fragment names one.
    pub ufrag: Option<String>,
    /// `a=ice-pwd`, if the fragment carries one.
    pub pwd: Option<String>,
    /// The `candidate:...` attributes, each with the `a=mid` above it (if any).
    pub candidates: Vec<(String, Option<String>)>,
    /// Whether the fragment says `a=end-of-candidates`.
    pub end_of_candidates: bool,
}

/// Whether `s` is an ICE credential of `min..=max` ice-chars (RFC 8839: ALPHA / DIGIT / "+" / "/").
fn ice_chars(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Parses a trickle-ICE fragment.
///
/// # Errors
/// [`WireError::TooLarge`], or [`WireError::BadFragment`] saying what is wrong: not text, a line
/// that is not `x=value` or has control characters, credentials that are not ICE credentials (a ufrag of 4 to 256
/// ice-chars, a password of 22 to 256), two different ufrags or passwords, one of the pair
/// without the other, or more than [`MAX_FRAGMENT_CANDIDATES`] candidates.
pub fn parse_fragment(body: &[u8]) -> Result<SdpFragment, WireError> {
    check_sdp_size(body, "SDP fragment")?;
    let text = std::str::from_utf8(body).map_err(|_| WireError::BadFragment("not UTF-8 text"))?;
    let mut frag = SdpFragment::default();
    let mut mid = None;
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        if line.is_empty() {
            continue;
        }
        if line.len() < 2 || line.as_bytes()[1] != b'=' {
            return Err(WireError::BadFragment(
                "a line is not of the form `x=value`",
            ));
        }
        // A stray CR or other control byte could smuggle SDP lines into the restart offer.
        if line.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(WireError::BadFragment("a line has control characters"));
        }
        if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m.to_owned());
        } else if let Some(u) = line.strip_prefix("a=ice-ufrag:") {
            if !ice_chars(u, 4, 256) {
                return Err(WireError::BadFragment(
                    "`a=ice-ufrag` must be 4 to 256 characters of A-Z a-z 0-9 + /",
                ));
            }
            if frag.ufrag.as_deref().is_some_and(|old| old != u) {
                return Err(WireError::BadFragment("it names two different ICE ufrags"));
            }
            frag.ufrag = Some(u.to_owned());
        } else if let Some(p) = line.strip_prefix("a=ice-pwd:") {
            if !ice_chars(p, 22, 256) {
                return Err(WireError::BadFragment(
                    "`a=ice-pwd` must be 22 to 256 characters of A-Z a-z 0-9 + /",
                ));
            }
            if frag.pwd.as_deref().is_some_and(|old| old != p) {
                return Err(WireError::BadFragment(
                    "it names two different ICE passwords",
                ));
            }
            frag.pwd = Some(p.to_owned());
        } else if line == "a=end-of-candidates" {
            frag.end_of_candidates = true;
        } else if let Some(c) = line.strip_prefix("a=")
            && c.starts_with("candidate:")
        {
            if frag.candidates.len() == MAX_FRAGMENT_CANDIDATES {
                return Err(WireError::BadFragment("it has more than 64 candidates"));
            }
            frag.candidates.push((c.to_owned(), mid.clone()));
        }
    }
    if frag.pwd.is_some() && frag.ufrag.is_none() {
        return Err(WireError::BadFragment(
            "it has `a=ice-pwd` without `a=ice-ufrag`: send both",
        ));
    }
    Ok(frag)
}

/// The SDP offer of an ICE restart: `remote` (the offer the session was made from) with every
/// `a=ice-ufrag`/`a=ice-pwd` replaced by the new credentials, its candidates replaced by the
/// fragment's (under the m-section of their `a=mid`, or the first one), and its `o=` version
/// raised by one, as a renegotiation must.
///
/// # Errors
/// [`WireError::BadFragment`] when `remote` has no `o=` line or no media section to carry the
/// credentials.
pub fn restart_offer(
    remote: &str,
    ufrag: &str,
    pwd: &str,
    candidates: &[(String, Option<String>)],
) -> Result<String, WireError> {
    let mut out = String::with_capacity(remote.len() + 256);
    let mut bumped = false;
    let mut sections = 0usize;
    let mut section_mid: Option<String> = None;
    let flush = |out: &mut String, sections: usize, mid: Option<&str>| {
        for (c, m) in candidates {
            let here = match m {
                Some(m) => mid == Some(m.as_str()),
                None => sections == 1,
            };
            if here {
                out.push_str("a=");
                out.push_str(c);
                out.push_str("\r\n");
            }
        }
    };
    for line in remote.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("m=") {
            if sections > 0 {
                flush(&mut out, sections, section_mid.as_deref());
            }
            sections += 1;
            section_mid = None;
        }
        if let Some(o) = line.strip_prefix("o=") {
            // o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>
            let mut parts: Vec<&str> = o.split(' ').collect();
            let version =
                parts
                    .get(2)
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or(WireError::BadFragment(
                        "the session's offer has no valid `o=` line",
                    ))?;
            let next = version.saturating_add(1).to_string();
            parts[2] = &next;
            out.push_str("o=");
            out.push_str(&parts.join(" "));
            bumped = true;
        } else if line.starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(ufrag);
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(pwd);
        } else if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        } else {
            if let Some(m) = line.strip_prefix("a=mid:") {
                section_mid = Some(m.to_owned());
            }
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    if !bumped || sections == 0 {
        return Err(WireError::BadFragment(
            "the session's offer has no `o=` line or no media section",
        ));
    }
    flush(&mut out, sections, section_mid.as_deref());
    Ok(out)
}

/// The body of the `200` to an ICE restart: the edge's new credentials and candidates as a
/// trickle-ICE fragment, from its new local description `local` (under the first m-section,
/// which carries the bundle).
///
/// # Errors
/// [`WireError::BadFragment`] when `local` lacks credentials or a media section.
pub fn restart_answer_fragment(local: &str) -> Result<String, WireError> {
    let find = |prefix: &str| {
        local
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .find_map(|l| l.strip_prefix(prefix))
    };
    let missing = WireError::BadFragment("the new local description lacks ICE credentials");
    let ufrag = find("a=ice-ufrag:").ok_or(missing.clone())?;
    let pwd = find("a=ice-pwd:").ok_or(missing)?;
    let mut out = format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");
    let first = local.split("\nm=").nth(1).ok_or(WireError::BadFragment(
        "the new local description has no media section",
    ))?;
    let mut lines = first.lines().map(|l| l.trim_end_matches('\r'));
    if let Some(m) = lines.next() {
        out.push_str("m=");
        out.push_str(m);
        out.push_str("\r\n");
    }
    for line in lines {
        if line.starts_with("a=mid:") || line.starts_with("a=candidate:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("a=end-of-candidates\r\n");
    Ok(out)
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

    const FRAG_UFRAG: &str = "a=ice-ufrag:wxyz\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n";

    fn video_offer(formats: &str, attrs: &str) -> String {
        format!(
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\nm=video 9 UDP/TLS/RTP/SAVPF {formats}\r\n{attrs}"
        )
    }

    #[test]
    fn the_first_sendable_h264_payload_picks_the_profile() {
        let base = "a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";
        let high = "a=rtpmap:104 H264/90000\r\na=fmtp:104 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f\r\n";
        let pm0 = "a=rtpmap:106 H264/90000\r\na=fmtp:106 packetization-mode=0;profile-level-id=640c1f\r\n";
        let vp8 = "a=rtpmap:96 VP8/90000\r\n";
        let both = format!("{base}{high}{pm0}{vp8}");
        assert_eq!(
            h264_profile(&video_offer("102", base)),
            H264Profile::ConstrainedBaseline
        );
        assert_eq!(h264_profile(&video_offer("104", high)), H264Profile::High);
        assert_eq!(
            h264_profile(&video_offer("102 104", &both)),
            H264Profile::ConstrainedBaseline
        );
        assert_eq!(
            h264_profile(&video_offer("96 104 102", &both)),
            H264Profile::High
        );
        assert_eq!(
            h264_profile(&video_offer("106 102", &both)),
            H264Profile::ConstrainedBaseline,
            "packetization-mode 0 is not sendable"
        );
        assert_eq!(h264_profile("v=0\r\n"), H264Profile::ConstrainedBaseline);
        assert_eq!(H264Profile::High.profile_level_id(), "640c1f");
        assert_eq!(H264Profile::High.profile_idc(), 100);
    }

    #[test]
    fn fragments_yield_candidates_and_credentials() {
        let frag =
            b"a=ice-ufrag:xyzw\r\na=mid:0\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n";
        let f = parse_fragment(frag).unwrap();
        assert_eq!(f.candidates.len(), 1);
        assert_eq!(f.candidates[0].1.as_deref(), Some("0"));
        assert_eq!(f.ufrag.as_deref(), Some("xyzw"));
        assert_eq!(f.pwd, None);
        let f = parse_fragment(FRAG_UFRAG.as_bytes()).unwrap();
        assert_eq!(f.pwd.as_deref(), Some("abcdefghijklmnopqrstuv"));
    }

    #[test]
    fn bad_fragments_say_why() {
        for (bad, why) in [
            (&b"\xff"[..], "UTF-8"),
            (b"hello\r\n", "x=value"),
            (
                b"a=candidate:1 1 udp 1 1.2.3.4 5 typ host\ra=ice-ufrag:evil\r\n",
                "control",
            ),
            (b"a=ice-ufrag:ab\r\n", "4 to 256"),
            (b"a=ice-ufrag:abcd\r\na=ice-pwd:short\r\n", "22 to 256"),
            (b"a=ice-ufrag:ab cd\r\n", "4 to 256"),
            (b"a=ice-ufrag:abcd\r\na=ice-ufrag:efgh\r\n", "two different"),
            (b"a=ice-pwd:abcdefghijklmnopqrstuv\r\n", "without"),
        ] {
            match parse_fragment(bad) {
                Err(WireError::BadFragment(r)) => assert!(r.contains(why), "{r}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let many = "a=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n".repeat(65);
        assert!(parse_fragment(many.as_bytes()).is_err());
    }

    #[test]
    fn restart_offer_swaps_credentials_and_candidates_and_bumps_the_version() {
        let remote = "v=0\r\no=- 42 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\na=ice-ufrag:old1\r\n\
            a=ice-pwd:oldoldoldoldoldoldoldold\r\na=candidate:1 1 udp 1 10.0.0.1 1 typ host\r\n\
            a=end-of-candidates\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n\
            a=ice-ufrag:old1\r\na=ice-pwd:oldoldoldoldoldoldoldold\r\n";
        let cands = vec![(
            "candidate:2 1 udp 1 127.0.0.1 7 typ host".to_owned(),
            Some("0".into()),
        )];
        let offer = restart_offer(remote, "new1", "newnewnewnewnewnewnewnew", &cands).unwrap();
        assert!(offer.contains("o=- 42 3 IN IP4"), "{offer}");
        assert!(!offer.contains("old"), "{offer}");
        assert_eq!(offer.matches("a=ice-ufrag:new1").count(), 2, "{offer}");
        assert!(!offer.contains("10.0.0.1") && !offer.contains("end-of-candidates"));
        let video = offer.split("m=audio").next().unwrap();
        assert!(
            video.contains("a=candidate:2 1 udp 1 127.0.0.1 7 typ host"),
            "{offer}"
        );
        assert!(
            check_offer(offer.as_bytes()).is_err(),
            "no fingerprint in this sketch"
        );
        assert!(restart_offer("v=0\r\n", "new1", "x", &[]).is_err());
    }

    #[test]
    fn restart_answer_fragment_carries_credentials_and_first_section_candidates() {
        let local = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\na=ice-ufrag:ABCD\r\n\
            a=ice-pwd:abcdefghijklmnopqrstuv\r\na=candidate:1 1 udp 1 127.0.0.1 5 typ host\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n";
        let frag = restart_answer_fragment(local).unwrap();
        let parsed = parse_fragment(frag.as_bytes()).unwrap();
        assert_eq!(parsed.ufrag.as_deref(), Some("ABCD"));
        assert_eq!(parsed.candidates.len(), 1);
        assert_eq!(parsed.candidates[0].1.as_deref(), Some("0"));
        assert!(parsed.end_of_candidates);
        assert!(
            frag.contains("m=video 9 UDP/TLS/RTP/SAVPF 102\r\n"),
            "{frag}"
        );
        assert!(restart_answer_fragment("v=0\r\n").is_err());
    }
}
