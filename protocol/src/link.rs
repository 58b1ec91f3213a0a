//! The edge link: one persistent, mutually authenticated connection from an edge to its home
//! broker, and the UDP echo players probe edges with.
//!
//! The edge opens `GET /v1/edges/link` with `Upgrade: edgeplay-link/1`; after `101 Switching
//! Protocols` both ends exchange [`LinkMessage`]s, each framed as a 4-byte big-endian length and
//! that many bytes of JSON ([`encode_frame`], [`FrameReader`]), at most [`MAX_FRAME`].
//!
//! Handshake, so that each side proves its key to the other on this very connection:
//!
//! 1. broker → edge [`LinkMessage::Hello`]: the broker's public key and a fresh 32-byte
//!    challenge. The edge compares the key with the one it pins.
//! 2. edge → broker [`LinkMessage::Register`]: its signed registration (the body of
//!    `POST /v1/edges`), a fresh edge nonce, and a proof: the edge key's signature over
//!    [`proof_bytes`] (challenge, broker key, edge nonce).
//! 3. broker → edge [`LinkMessage::Welcome`]: the broker key's signature over
//!    [`welcome_bytes`] (edge nonce, challenge, edge id), or [`LinkMessage::Refused`].
//!
//! Then the edge sends [`LinkMessage::Heartbeat`]s (every 500 ms while it serves sessions,
//! every 15 s when idle: [`heartbeat_interval_ms`]; a broker drops a link on which nothing came
//! from the edge for three of them) and the broker relays player HTTP requests (WHEP) as
//! [`LinkMessage::Request`], each answered by a [`LinkMessage::Response`] with the same id.
//! The edge also says which broker sessions it runs ([`LinkMessage::Running`]) and reports each
//! end ([`LinkMessage::Ended`]); the broker may end one ([`LinkMessage::End`]): see
//! [`crate::lifecycle`].
//! The broker also sends [`LinkMessage::Brokers`], the brokers that share its registry, right
//! after the welcome, whenever that list changes and at least every [`BROKERS_EVERY_MS`]: the
//! edge links to one of them when its broker dies ([`broker_hostports`] picks the usable
//! entries), and a link on which nothing arrived for [`BROKER_SILENCE_MS`] is dead to the edge
//! (a broker whose host vanished closes nothing).
//!
//! Coordinates are measured, not configured: the broker sends each edge [`LinkMessage::Peers`]
//! (other live edges and their echoes); the edge probes them, moves its Vivaldi coordinate and
//! reports it in a heartbeat once it moved [`COORD_REPORT_MS`]. `--coord` is only where it
//! starts.
//!
//! ```
//! use edgeplay_protocol::link::{FrameReader, LinkMessage, encode_frame};
//!
//! let bytes = encode_frame(&LinkMessage::Heartbeat { free_slots: 3, draining: false, sessions: 1, coord: None, coord_error: None }).unwrap();
//! let mut r = FrameReader::default();
//! r.push(&bytes[..3]);
//! assert!(r.next_message().unwrap().is_none()); // not all there yet
//! r.push(&bytes[3..]);
//! assert!(matches!(r.next_message().unwrap(), Some(LinkMessage::Heartbeat { free_slots: 3, .. })));
//! ```

use serde::{Deserialize, Serialize};

/// The `Upgrade` token of the link.
pub const UPGRADE: &str = "edgeplay-link/1";
/// Largest frame (JSON bytes) either side accepts: a WHEP offer (≤ 64 KiB) with room to spare.
pub const MAX_FRAME: usize = 256 * 1024;
/// Domain of the edge's proof signature.
pub const PROOF_DOMAIN: &[u8] = b"edgeplay/edge-link-proof/v1\n";
/// Domain of the broker's welcome signature.
pub const WELCOME_DOMAIN: &[u8] = b"edgeplay/broker-link-welcome/v1\n";
/// Domain of the broker's signature over a placement (the answer of `/select`, without its
/// `signature`, as [`canonical_json`]).
pub const PLACEMENT_DOMAIN: &[u8] = b"edgeplay/broker-placement/v1\n";
/// Interval of heartbeats while an edge serves sessions.
pub const HEARTBEAT_BUSY_MS: u64 = 500;
/// Interval of heartbeats while an edge is idle.
pub const HEARTBEAT_IDLE_MS: u64 = 15_000;

/// The interval (ms) until an edge's next heartbeat, from what its last one said: it keeps to
/// [`HEARTBEAT_BUSY_MS`] while it serves sessions or drains, else to [`HEARTBEAT_IDLE_MS`].
/// The edge schedules its heartbeats with it and the broker bounds the link's silence with it,
/// so every [`LinkMessage::Heartbeat`] carries its own interval without a field for it.
#[must_use]
pub fn heartbeat_interval_ms(sessions: u32, draining: bool) -> u64 {
    if sessions > 0 || draining {
        HEARTBEAT_BUSY_MS
    } else {
        HEARTBEAT_IDLE_MS
    }
}
/// First bytes of a UDP echo probe; the edge answers only datagrams that start with them.
pub const ECHO_MAGIC: &[u8; 4] = b"EPEC";
/// Largest echo probe the edge answers (so the echo cannot amplify).
pub const MAX_ECHO: usize = 64;
/// The broker sends [`LinkMessage::Brokers`] at least this often, so the edge hears from it.
pub const BROKERS_EVERY_MS: u64 = 5_000;
/// An edge that heard nothing from its broker for this long (three [`BROKERS_EVERY_MS`])
/// drops the link and dials again.
pub const BROKER_SILENCE_MS: u64 = 3 * BROKERS_EVERY_MS;
/// Most broker entries an edge takes from one [`LinkMessage::Brokers`]; the rest are ignored.
pub const MAX_BROKERS: usize = 64;
/// Longest `host:port` an edge dials (a DNS name is at most 253 bytes).
pub const MAX_HOSTPORT: usize = 262;
/// Most peers in one [`LinkMessage::Peers`]; an edge measures at most this many per round.
pub const MAX_PEERS: usize = 8;
/// How often a broker sends each linked edge peers to measure, by default.
pub const PEERS_EVERY_MS: u64 = 10_000;
/// An edge reports its coordinate again once it moved this far (ms) from the last report.
pub const COORD_REPORT_MS: f64 = 1.0;

/// Another edge to measure: its echo and where it thinks it is. The edge sends it
/// [`ECHO_MAGIC`] probes, takes the minimum RTT of a few, and moves its own Vivaldi coordinate
/// ([`crate::coords::Vivaldi::update`]); the coordinate it reports in its heartbeats is what the
/// broker's placement index uses from then on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerRef {
    /// The peer edge.
    pub id: crate::token::EdgeId,
    /// Its UDP echo.
    pub echo_addr: std::net::SocketAddr,
    /// Its coordinate as the broker last heard it.
    pub coord: crate::coords::Coord,
    /// Its relative error (0 = certain, [`crate::coords::INITIAL_ERROR`] = knows nothing).
    pub error: f64,
}

/// A broker that holds a live lease in the registry the sender shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerRef {
    /// The broker's id.
    pub id: String,
    /// Its HTTP base URL, e.g. `http://10.0.0.1:8090` (what it advertises).
    pub url: String,
}

/// One message on the link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LinkMessage {
    /// Broker → edge, first: who the broker is and what the edge must sign.
    Hello {
        /// The broker's Ed25519 public key, hex.
        broker_key: String,
        /// 32 random bytes, hex.
        challenge: String,
    },
    /// Edge → broker, answering `Hello`.
    Register {
        /// The signed registration, exactly the body of `POST /v1/edges`.
        registration: serde_json::Value,
        /// 32 random bytes, hex: what the broker must sign back.
        edge_nonce: String,
        /// The edge key's signature over [`proof_bytes`], hex.
        proof: String,
    },
    /// Broker → edge: registration accepted.
    Welcome {
        /// The broker key's signature over [`welcome_bytes`], hex.
        signature: String,
    },
    /// Either way: the link is refused or ends, and why.
    Refused {
        /// What was wrong and what to do.
        error: String,
    },
    /// Edge → broker: load and state.
    Heartbeat {
        /// Session slots free now.
        free_slots: u32,
        /// The edge takes no new sessions and will leave once its sessions end.
        draining: bool,
        /// Sessions served now.
        sessions: u32,
        /// The edge's measured Vivaldi coordinate, when it moved by [`COORD_REPORT_MS`] since it
        /// last said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        coord: Option<crate::coords::Coord>,
        /// The relative error of `coord`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        coord_error: Option<f64>,
    },
    /// Broker → edge: a player's HTTP request to serve (WHEP).
    Request {
        /// Matches the response.
        id: u64,
        /// HTTP method.
        method: String,
        /// Path on the edge, e.g. `/v1/whep`.
        path: String,
        /// Headers that matter to the edge (authorization, content-type).
        headers: Vec<(String, String)>,
        /// Body (SDP or JSON text).
        body: String,
    },
    /// Edge → broker: the answer to the request with the same id.
    Response {
        /// The request's id.
        id: u64,
        /// HTTP status.
        status: u16,
        /// Headers the player needs (content-type, location, session secret).
        headers: Vec<(String, String)>,
        /// Body (SDP or JSON text).
        body: String,
    },
    /// Broker → edge: the brokers sharing this broker's registry (its own entry included),
    /// where the edge may link when this one dies. Sent after the welcome, on change, and at
    /// least every [`BROKERS_EVERY_MS`].
    Brokers {
        /// In the registry's order (broker id).
        brokers: Vec<BrokerRef>,
    },
    /// Broker → edge: other edges to measure (at most [`MAX_PEERS`]), every
    /// [`PEERS_EVERY_MS`] by default.
    Peers {
        /// Edges with an echo, picked at random among the live ones.
        peers: Vec<PeerRef>,
    },
    /// Edge → broker: the broker sessions the edge runs now (joined with a broker token), at
    /// most [`crate::lifecycle::MAX_RUNNING`] and never more than its capacity. Sent after the
    /// welcome and whenever the set changes; a started session missing from it has ended.
    Running {
        /// Session ids.
        sessions: Vec<crate::token::SessionId>,
    },
    /// Edge → broker: a broker session the edge served has ended.
    Ended {
        /// What ended and how.
        report: crate::lifecycle::SessionEnded,
    },
    /// Broker → edge: end this session now (it reached its maximum duration); the edge answers
    /// with [`LinkMessage::Ended`] once it has.
    End {
        /// The session.
        session: crate::token::SessionId,
        /// Why.
        reason: crate::lifecycle::EndReason,
    },
}

/// Why link bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// A frame announced more than [`MAX_FRAME`] bytes.
    #[error(
        "link frame of {0} bytes is over the {MAX_FRAME}-byte limit: the peer is broken or hostile; reconnect"
    )]
    TooLarge(usize),
    /// The frame is not a link message.
    #[error("link frame is not a link message ({0}): both ends must speak edgeplay-link/1")]
    Malformed(String),
}

/// The frame of `msg`: 4-byte big-endian length, then JSON.
///
/// # Errors
/// [`LinkError::TooLarge`] when the JSON exceeds [`MAX_FRAME`].
pub fn encode_frame(msg: &LinkMessage) -> Result<Vec<u8>, LinkError> {
    let json = serde_json::to_vec(msg).map_err(|e| LinkError::Malformed(e.to_string()))?;
    if json.len() > MAX_FRAME {
        return Err(LinkError::TooLarge(json.len()));
    }
    let len = u32::try_from(json.len()).map_err(|_| LinkError::TooLarge(json.len()))?;
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// Cuts a byte stream into link messages. Feed it what the socket gave ([`Self::push`]) and
/// take messages until it has none ([`Self::next_message`]).
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// Appends bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `None` until one is complete.
    ///
    /// # Errors
    /// [`LinkError`]: the stream is unusable from here on; close the link.
    pub fn next_message(&mut self) -> Result<Option<LinkMessage>, LinkError> {
        let Some(head) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*head) as usize;
        if len > MAX_FRAME {
            return Err(LinkError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let msg = serde_json::from_slice(&self.buf[4..4 + len])
            .map_err(|e| LinkError::Malformed(e.to_string()));
        self.buf.drain(..4 + len);
        msg.map(Some)
    }
}

/// What the edge signs to prove its key on this connection.
#[must_use]
pub fn proof_bytes(challenge: &[u8], broker_key: &[u8], edge_nonce: &[u8]) -> Vec<u8> {
    [PROOF_DOMAIN, challenge, broker_key, edge_nonce].concat()
}

/// What the broker signs to prove its key on this connection.
#[must_use]
pub fn welcome_bytes(edge_nonce: &[u8], challenge: &[u8], edge_id: &[u8]) -> Vec<u8> {
    [WELCOME_DOMAIN, edge_nonce, challenge, edge_id].concat()
}

/// Domain prefix of registration signatures (the body of `POST /v1/edges` and of `Register`).
pub const REGISTER_DOMAIN: &[u8] = b"edgeplay/edge-registration/v1\n";
/// Longest HTTP response head [`parse_http_head`] reads.
pub const MAX_HTTP_HEAD: usize = 16 * 1024;

/// An edge's registration: what it advertises and signs (the body of `POST /v1/edges` and of
/// [`LinkMessage::Register`], with `signature` added by [`EdgeAd::signed`]). The edge builds
/// it; the broker checks the signature over [`signed_bytes`] with [`REGISTER_DOMAIN`] and keeps
/// it as the edge's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeAd {
    /// The edge's Ed25519 public key, hex.
    pub id: crate::token::EdgeId,
    /// Region name, e.g. `eu-west`.
    pub region: String,
    /// GPU model, e.g. `RTX 4090`.
    pub gpu: String,
    /// GPU class 0..8 (higher is stronger); requests ask for a minimum.
    pub gpu_class: u8,
    /// Encoders the edge can run, e.g. `["nvenc-h264", "x264"]`.
    pub encoders: Vec<String>,
    /// Resolutions served, `WIDTHxHEIGHT`.
    pub resolutions: Vec<String>,
    /// Highest frame rate.
    pub max_fps: u32,
    /// Session slots.
    pub capacity: u32,
    /// Price per minute, in the settlement token's smallest unit.
    pub price_per_min: u64,
    /// Vivaldi coordinate.
    pub coord: crate::coords::Coord,
    /// QUIC endpoint players connect to.
    pub quic_addr: std::net::SocketAddr,
    /// SHA-256 fingerprint of the edge's QUIC certificate, hex.
    pub cert_fingerprint: String,
    /// UDP echo endpoint players measure their RTT to ([`ECHO_MAGIC`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_addr: Option<std::net::SocketAddr>,
    /// When the edge signed this (unix ms).
    pub issued_unix_ms: u64,
}

impl EdgeAd {
    /// The registration as `key` signs it at `now_unix_ms`: `id` and `issued_unix_ms` set from
    /// them, and `signature` (hex) over [`signed_bytes`]`(`[`REGISTER_DOMAIN`]`, …)` added.
    ///
    /// ```
    /// use edgeplay_protocol::link::{EdgeAd, REGISTER_DOMAIN, signed_bytes};
    /// use edgeplay_protocol::token::{EdgeId, from_hex};
    /// use ed25519_dalek::{Signature, SigningKey};
    ///
    /// let key = SigningKey::from_bytes(&[7; 32]);
    /// let ad = EdgeAd {
    ///     id: EdgeId([0; 32]), region: "eu-west".into(), gpu: "RTX 4090".into(), gpu_class: 5,
    ///     encoders: vec!["x264".into()], resolutions: vec!["1280x720".into()], max_fps: 60,
    ///     capacity: 4, price_per_min: 10, coord: Default::default(),
    ///     quic_addr: "127.0.0.1:4433".parse().unwrap(), cert_fingerprint: "00".repeat(32),
    ///     echo_addr: None, issued_unix_ms: 0,
    /// };
    /// let mut body = ad.signed(&key, 1_000);
    /// let sig = from_hex(body["signature"].as_str().unwrap()).unwrap();
    /// body.as_object_mut().unwrap().remove("signature");
    /// let sig = Signature::from_slice(&sig).unwrap();
    /// assert!(key.verifying_key().verify_strict(&signed_bytes(REGISTER_DOMAIN, &body), &sig).is_ok());
    /// assert_eq!(body["issued_unix_ms"], 1_000);
    /// ```
    #[must_use]
    pub fn signed(&self, key: &ed25519_dalek::SigningKey, now_unix_ms: u64) -> serde_json::Value {
        use ed25519_dalek::Signer;
        let ad = EdgeAd {
            id: crate::token::EdgeId(key.verifying_key().to_bytes()),
            issued_unix_ms: now_unix_ms,
            ..self.clone()
        };
        let mut body = serde_json::to_value(&ad).unwrap_or_default();
        let sig = key.sign(&signed_bytes(REGISTER_DOMAIN, &body));
        body["signature"] = serde_json::Value::String(crate::token::to_hex(&sig.to_bytes()));
        body
    }
}

/// The bytes signed for `body` (a JSON object without `signature`) under `domain`: the domain
/// then [`canonical_json`].
#[must_use]
pub fn signed_bytes(domain: &[u8], body: &serde_json::Value) -> Vec<u8> {
    let mut b = domain.to_vec();
    b.extend_from_slice(canonical_json(body).as_bytes());
    b
}

/// JSON with object keys sorted bytewise and no whitespace: the bytes edges sign.
#[must_use]
pub fn canonical_json(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// An HTTP/1.1 response head: what the link's upgrade and the SDK's broker calls read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpHead {
    /// Status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// Bytes of the head, including the blank line: the body starts there.
    pub len: usize,
}

impl HttpHead {
    /// The first value of header `name` (lower case).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the response head at the start of `bytes`: `None` until the blank line has arrived.
///
/// # Errors
/// [`LinkError::Malformed`] for a head that is not HTTP/1.x, [`LinkError::TooLarge`] past
/// [`MAX_HTTP_HEAD`].
pub fn parse_http_head(bytes: &[u8]) -> Result<Option<HttpHead>, LinkError> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        if bytes.len() > MAX_HTTP_HEAD {
            return Err(LinkError::TooLarge(bytes.len()));
        }
        return Ok(None);
    };
    if end > MAX_HTTP_HEAD {
        return Err(LinkError::TooLarge(end));
    }
    let bad = |m: &str| LinkError::Malformed(format!("HTTP response: {m}"));
    let text = std::str::from_utf8(&bytes[..end]).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad("not HTTP/1.x"));
    }
    let status: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .filter(|c| (100..=999).contains(c))
        .ok_or_else(|| bad("no status code"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| bad("header line without `:`"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    Ok(Some(HttpHead {
        status,
        headers,
        len: end + 4,
    }))
}

/// The `host:port` of an `http://HOST:PORT[/]` (or bare `HOST:PORT`) broker URL; `None` for
/// anything else (https, a path, no port, port 0, characters that are not in a host name or an
/// IP literal, longer than [`MAX_HOSTPORT`]). The link is plain TCP: TLS is a terminator's job.
#[must_use]
pub fn http_hostport(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if rest.contains("://") {
        return None;
    }
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = hostport.rsplit_once(':')?;
    let host_ok = if let Some(v6) = host.strip_prefix('[') {
        v6.strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    let port_ok = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    (host_ok && port_ok && hostport.len() <= MAX_HOSTPORT).then(|| hostport.to_owned())
}

/// The dialable `host:port`s of a [`LinkMessage::Brokers`] list, in its order: entries whose
/// URL [`http_hostport`] refuses are skipped, duplicates kept once, at most [`MAX_BROKERS`].
#[must_use]
pub fn broker_hostports(brokers: &[BrokerRef]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for b in brokers {
        if out.len() == MAX_BROKERS {
            break;
        }
        if let Some(hp) = http_hostport(&b.url)
            && !out.contains(&hp)
        {
            out.push(hp);
        }
    }
    out
}

/// Whether a UDP datagram is an echo probe the edge should send back as it is.
#[must_use]
pub fn is_echo_probe(datagram: &[u8]) -> bool {
    datagram.len() <= MAX_ECHO && datagram.starts_with(ECHO_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<LinkMessage> {
        vec![
            LinkMessage::Hello {
                broker_key: "ab".into(),
                challenge: "cd".into(),
            },
            LinkMessage::Register {
                registration: serde_json::json!({"id": "x"}),
                edge_nonce: "ef".into(),
                proof: "01".into(),
            },
            LinkMessage::Welcome {
                signature: "02".into(),
            },
            LinkMessage::Refused { error: "no".into() },
            LinkMessage::Heartbeat {
                free_slots: 1,
                draining: true,
                sessions: 2,
                coord: None,
                coord_error: None,
            },
            LinkMessage::Heartbeat {
                free_slots: 0,
                draining: false,
                sessions: 0,
                coord: Some(crate::coords::Coord {
                    x: 1.5,
                    y: -2.0,
                    height: 0.5,
                }),
                coord_error: Some(0.25),
            },
            LinkMessage::Request {
                id: 7,
                method: "POST".into(),
                path: "/v1/whep".into(),
                headers: vec![("content-type".into(), "application/sdp".into())],
                body: "v=0\r\n".into(),
            },
            LinkMessage::Response {
                id: 7,
                status: 201,
                headers: vec![],
                body: "v=0\r\n".into(),
            },
            LinkMessage::Brokers {
                brokers: vec![BrokerRef {
                    id: "b1".into(),
                    url: "http://127.0.0.1:8090".into(),
                }],
            },
            LinkMessage::Peers {
                peers: vec![PeerRef {
                    id: crate::token::EdgeId([3; 32]),
                    echo_addr: "127.0.0.1:9".parse().unwrap(),
                    coord: crate::coords::Coord::default(),
                    error: 1.5,
                }],
            },
            LinkMessage::Running {
                sessions: vec![crate::token::SessionId([4; 16])],
            },
            LinkMessage::Ended {
                report: crate::lifecycle::SessionEnded {
                    session: crate::token::SessionId([4; 16]),
                    reason: crate::lifecycle::EndReason::PlayerLeft,
                    started_unix_ms: 1,
                    duration_ms: 2,
                    frames: 3,
                    bytes: 4,
                },
            },
            LinkMessage::End {
                session: crate::token::SessionId([4; 16]),
                reason: crate::lifecycle::EndReason::MaxDuration,
            },
        ]
    }

    #[test]
    fn broker_urls_are_checked_before_anyone_dials_them() {
        assert_eq!(
            http_hostport("http://127.0.0.1:8090/").as_deref(),
            Some("127.0.0.1:8090")
        );
        assert_eq!(
            http_hostport("b.example:80").as_deref(),
            Some("b.example:80")
        );
        assert_eq!(http_hostport("http://[::1]:9").as_deref(), Some("[::1]:9"));
        for bad in [
            "https://b.example:443",
            "http://b.example",
            "http://b.example:80/x",
            "http://b.example:0",
            "http://b.example:65536",
            "http://b.example:+80",
            "http://b ex:80",
            "http://[zz]:80",
            "http://a:80\r\nHost: x:1",
            ":80",
            "",
        ] {
            assert_eq!(http_hostport(bad), None, "{bad:?}");
        }
        assert_eq!(
            http_hostport(&format!("{}:1", "a".repeat(MAX_HOSTPORT))),
            None
        );
        let r = |url: &str| BrokerRef {
            id: "x".into(),
            url: url.into(),
        };
        assert_eq!(
            broker_hostports(&[r("http://a:1"), r("ftp://b:2"), r("http://a:1/"), r("c:3")]),
            vec!["a:1".to_owned(), "c:3".to_owned()]
        );
        let many: Vec<BrokerRef> = (1..=200).map(|p| r(&format!("h:{p}"))).collect();
        assert_eq!(broker_hostports(&many).len(), MAX_BROKERS);
    }

    #[test]
    fn frames_round_trip_byte_by_byte() {
        let mut stream = Vec::new();
        for m in all() {
            stream.extend(encode_frame(&m).unwrap());
        }
        let mut r = FrameReader::default();
        let mut got = Vec::new();
        for b in stream {
            r.push(&[b]);
            while let Some(m) = r.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, all());
    }

    #[test]
    fn oversized_and_garbage_frames_are_refused() {
        let mut r = FrameReader::default();
        r.push(&u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes());
        assert_eq!(r.next_message(), Err(LinkError::TooLarge(MAX_FRAME + 1)));
        let mut r = FrameReader::default();
        r.push(&[0, 0, 0, 2, b'{', b'}']);
        assert!(matches!(r.next_message(), Err(LinkError::Malformed(_))));
        let mut r = FrameReader::default();
        let json = br#"{"type":"heartbeat","free_slots":1,"draining":false,"sessions":0,"x":1}"#;
        r.push(&u32::try_from(json.len()).unwrap().to_be_bytes());
        r.push(json);
        assert!(matches!(r.next_message(), Err(LinkError::Malformed(_))));
    }

    #[test]
    fn http_heads_parse_and_garbage_is_refused() {
        let r = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: edgeplay-link/1\r\n\r\nxx";
        let h = parse_http_head(r).unwrap().unwrap();
        assert_eq!(h.status, 101);
        assert_eq!(h.header("upgrade"), Some("edgeplay-link/1"));
        assert_eq!(&r[h.len..], b"xx");
        assert_eq!(parse_http_head(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        assert!(parse_http_head(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_http_head(b"HTTP/1.1 abc\r\n\r\n").is_err());
        assert!(parse_http_head(b"HTTP/1.1 200\r\nno colon\r\n\r\n").is_err());
        assert!(parse_http_head(&vec![b'a'; MAX_HTTP_HEAD + 1]).is_err());
    }

    #[test]
    fn canonical_json_sorts_keys_without_whitespace() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{ "b": [1, {"d": 2, "c": "x"}], "a": null }"#).unwrap();
        assert_eq!(canonical_json(&v), r#"{"a":null,"b":[1,{"c":"x","d":2}]}"#);
    }

    #[test]
    fn echo_probes_are_bounded_and_tagged() {
        assert!(is_echo_probe(b"EPEC12345678"));
        assert!(!is_echo_probe(b"GET / HTTP/1.1"));
        assert!(!is_echo_probe(&[b'E'; 65]));
        let mut big = ECHO_MAGIC.to_vec();
        big.resize(MAX_ECHO + 1, 0);
        assert!(!is_echo_probe(&big));
    }
}
