//! Decoders of the broker's request bodies: pure functions from untrusted bytes to a typed
//! request or a [`DecodeError`] that names the field, so the HTTP handlers stay thin and a fuzz
//! target (`fuzz/fuzz_targets/broker_requests.rs`) can drive them without a server.
//!
//! Signed edge messages ([`registration`], [`heartbeat`]) are decoded here, not verified: the
//! caller checks the signature over [`Signed::unsigned`] (see [`signed_bytes`]), with the
//! domain prefix of its kind ([`REGISTER_DOMAIN`], [`HEARTBEAT_DOMAIN`]), so that a signature
//! for one purpose cannot be replayed for another. [`sign_body`] is the edge's side of it.

use axum::Json;
use edgeplay_protocol::coords::{Coord, MAX_ABS_MS, MAX_RTT_MS};
use edgeplay_protocol::token::{EdgeId, MAX_PLAYER_LEN, Signature, from_hex, to_hex};
use serde::Deserialize;
use serde_json::Value;

pub use crate::error::DecodeError;
use crate::placement::GPU_CLASSES;
use crate::records::EdgeAd;
pub use edgeplay_protocol::link::{canonical_json, signed_bytes};

/// Largest request body accepted.
pub const MAX_BODY: usize = 16 * 1024;
/// Longest player name or region name, in bytes of UTF-8 (the join token's limit on player
/// names).
pub const MAX_NAME_BYTES: usize = MAX_PLAYER_LEN;
/// Largest frame side a request may ask for or an edge may list, in pixels (8K).
pub const MAX_DIMENSION: u32 = 8192;
/// Highest frame rate a request may ask for or an edge may offer.
pub const MAX_FPS: u32 = 1000;
/// Most measurements in a selection (one per candidate, and there are at most 8).
pub const MAX_MEASURED: usize = 64;
/// Most resolutions an edge may list.
pub const MAX_RESOLUTIONS: usize = 32;
/// Domain prefix of registration signatures.
pub const REGISTER_DOMAIN: &[u8] = edgeplay_protocol::link::REGISTER_DOMAIN;
/// Domain prefix of heartbeat signatures.
pub const HEARTBEAT_DOMAIN: &[u8] = b"edgeplay/edge-heartbeat/v1\n";

/// Domain prefix of the signatures of session-end reports (`POST /v1/edges/{id}/ended`).
pub const ENDED_DOMAIN: &[u8] = b"edgeplay/edge-session-ended/v1\n";

/// Adds `signature` to `body`, signed with `key` (what an edge agent does).
pub fn sign_body(
    domain: &[u8],
    mut body: Value,
    key: &edgeplay_protocol::token::SigningKey,
) -> Value {
    use ed25519_dalek::Signer;
    let sig = key.sign(&signed_bytes(domain, &body));
    if let Value::Object(m) = &mut body {
        m.insert("signature".into(), Value::String(to_hex(&sig.to_bytes())));
    }
    body
}

fn bad(message: impl Into<String>) -> DecodeError {
    DecodeError {
        status: 400,
        message: message.into(),
    }
}

fn size(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.len() > MAX_BODY {
        return Err(DecodeError {
            status: 413,
            message: format!(
                "body: {} bytes, more than the {MAX_BODY} accepted",
                bytes.len()
            ),
        });
    }
    Ok(())
}

/// JSON through axum's decoder, whose errors name the failing field's path.
fn json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    Json::<T>::from_bytes(bytes)
        .map(|Json(v)| v)
        .map_err(|r| bad(r.body_text()))
}

/// Refuses a JSON array (or anything else) where the request has an object: serde's derived
/// structs also take a sequence of their fields in order (`"coord": [1, 2, 3]`), which
/// docs/openapi.json does not allow. `fields` are the object-valued fields (`name` one object or
/// null, `name[]` an array of objects); what is not JSON at all is left to the typed decode,
/// which says where it fails.
fn objects_only(bytes: &[u8], fields: &[&str]) -> Result<(), DecodeError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => objects_in(&v, fields),
        Err(_) => Ok(()),
    }
}

fn objects_in(v: &Value, fields: &[&str]) -> Result<(), DecodeError> {
    let Value::Object(m) = v else {
        return Err(bad("body must be a JSON object"));
    };
    for f in fields {
        match (f.strip_suffix("[]"), m.get(f.trim_end_matches("[]"))) {
            (Some(name), Some(Value::Array(items))) => {
                if let Some(i) = items.iter().position(|x| !x.is_object()) {
                    return Err(bad(format!("`{name}[{i}]`: expected a JSON object")));
                }
            }
            (None, Some(x)) if !(x.is_object() || x.is_null()) => {
                return Err(bad(format!("`{f}`: expected a JSON object")));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A player's session request (`POST /v1/sessions`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// The player's name (1 to [`MAX_NAME_BYTES`] bytes).
    pub player: String,
    /// The player's Vivaldi coordinate, when it has one (each part within ±[`MAX_ABS_MS`],
    /// height ≥ 0). A request has a coordinate or a region.
    #[serde(default)]
    pub coord: Option<Coord>,
    /// Region hint (1 to [`MAX_NAME_BYTES`] bytes), used when there is no coordinate.
    #[serde(default)]
    pub region: Option<String>,
    /// Frame width wanted, 1 to [`MAX_DIMENSION`].
    pub width: u32,
    /// Frame height wanted, 1 to [`MAX_DIMENSION`].
    pub height: u32,
    /// Frame rate wanted, 1 to [`MAX_FPS`].
    pub fps: u32,
    /// Lowest GPU class accepted, below [`GPU_CLASSES`].
    #[serde(default)]
    pub min_gpu_class: u8,
    /// Highest price accepted per minute.
    #[serde(default)]
    pub max_price_per_min: Option<u64>,
}

/// Checks a coordinate's parts one by one, naming the first out of range as `{field}.x`,
/// `{field}.y` or `{field}.height` (JSON has no NaN or infinity, so range is all there is).
fn check_coord(field: &str, c: &Coord) -> Result<(), DecodeError> {
    for (part, v, min) in [
        ("x", c.x, -MAX_ABS_MS),
        ("y", c.y, -MAX_ABS_MS),
        ("height", c.height, 0.0),
    ] {
        if !(v.is_finite() && (min..=MAX_ABS_MS).contains(&v)) {
            return Err(bad(format!(
                "`{field}.{part}`: {v} is not a Vivaldi coordinate part: send a number of milliseconds from {min} to {MAX_ABS_MS}"
            )));
        }
    }
    Ok(())
}

/// Checks a name that is at most [`MAX_NAME_BYTES`] and not empty.
fn check_name(field: &str, v: &str, example: &str) -> Result<(), DecodeError> {
    if v.is_empty() || v.len() > MAX_NAME_BYTES {
        return Err(bad(format!(
            "`{field}`: {} bytes; send 1 to {MAX_NAME_BYTES} bytes of UTF-8, e.g. `{example}`",
            v.len()
        )));
    }
    Ok(())
}

/// Checks that `v` is in `min..=max`; the sentence says what the field is.
fn check_range(field: &str, v: u64, min: u64, max: u64, what: &str) -> Result<(), DecodeError> {
    if !(min..=max).contains(&v) {
        return Err(bad(format!(
            "`{field}`: {v} is not a {what} the broker serves: send {min} to {max}"
        )));
    }
    Ok(())
}

/// Decodes and checks a session request: everything a request that can never be served gets
/// refused for (400 naming the field) is checked here, before placement looks at it; what
/// placement refuses afterwards is a valid request that no edge meets (now or ever).
pub fn session_request(bytes: &[u8]) -> Result<SessionRequest, DecodeError> {
    size(bytes)?;
    objects_only(bytes, &["coord"])?;
    let req: SessionRequest = json(bytes)?;
    check_name("player", &req.player, "alice")?;
    if let Some(c) = &req.coord {
        check_coord("coord", c)?;
    }
    if let Some(r) = &req.region {
        check_name("region", r, "eu-west")?;
    }
    if req.coord.is_none() && req.region.is_none() {
        return Err(bad(
            "`coord`, `region`: the request says neither where the player is nor which region it wants: send `coord` (the player's Vivaldi coordinate) or `region` (one the edges list, e.g. `eu-west`)",
        ));
    }
    let dim = u64::from(MAX_DIMENSION);
    check_range("width", req.width.into(), 1, dim, "frame width in pixels")?;
    check_range(
        "height",
        req.height.into(),
        1,
        dim,
        "frame height in pixels",
    )?;
    check_range("fps", req.fps.into(), 1, MAX_FPS.into(), "frame rate")?;
    check_range(
        "min_gpu_class",
        req.min_gpu_class.into(),
        0,
        GPU_CLASSES as u64 - 1,
        "GPU class",
    )?;
    Ok(req)
}

/// One measured candidate of a selection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measured {
    /// The candidate edge.
    pub edge: EdgeId,
    /// The RTT the client measured to it.
    pub rtt_ms: f64,
}

/// A selection (`POST /v1/sessions/{id}/select`): the RTTs the client measured.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectRequest {
    /// One entry per candidate measured.
    pub measured: Vec<Measured>,
}

/// Decodes a selection: 1 to [`MAX_MEASURED`] entries, RTTs from 0 to [`MAX_RTT_MS`] (the pick
/// ignores others anyway; saying so helps a client find its bug, and an empty list can never
/// be placed).
pub fn select_request(bytes: &[u8]) -> Result<SelectRequest, DecodeError> {
    size(bytes)?;
    objects_only(bytes, &["measured[]"])?;
    let req: SelectRequest = json(bytes)?;
    if req.measured.is_empty() || req.measured.len() > MAX_MEASURED {
        return Err(bad(format!(
            "`measured`: {} entries; send 1 to {MAX_MEASURED}, one per candidate that answered a probe (ask for a new session if none did)",
            req.measured.len()
        )));
    }
    if let Some(i) = req
        .measured
        .iter()
        .position(|m| !(m.rtt_ms.is_finite() && (0.0..=MAX_RTT_MS).contains(&m.rtt_ms)))
    {
        return Err(bad(format!(
            "`measured[{i}].rtt_ms`: {} is not a round-trip time: send the milliseconds measured, from 0 to {MAX_RTT_MS}",
            req.measured[i].rtt_ms
        )));
    }
    Ok(req)
}

/// A resolution as an edge lists it: `WIDTHxHEIGHT`, decimal digits without a sign or leading
/// zero, each side 1 to [`MAX_DIMENSION`] (what docs/openapi.json's pattern says).
pub fn resolution(r: &str) -> Option<(u32, u32)> {
    let side = |s: &str| {
        if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<u32>()
            .ok()
            .filter(|v| (1..=MAX_DIMENSION).contains(v))
    };
    let (w, h) = r.split_once('x')?;
    Some((side(w)?, side(h)?))
}

/// Checks what serde cannot: lengths, ranges, resolution syntax.
pub fn validate_ad(ad: &EdgeAd) -> Result<(), DecodeError> {
    check_name("region", &ad.region, "eu-west")?;
    check_range(
        "gpu_class",
        ad.gpu_class.into(),
        0,
        GPU_CLASSES as u64 - 1,
        "GPU class",
    )?;
    if ad.resolutions.is_empty() || ad.resolutions.len() > MAX_RESOLUTIONS {
        return Err(bad(format!(
            "`resolutions`: {} entries; list 1 to {MAX_RESOLUTIONS} as WIDTHxHEIGHT, e.g. [\"1920x1080\"]",
            ad.resolutions.len()
        )));
    }
    if let Some(i) = ad.resolutions.iter().position(|r| resolution(r).is_none()) {
        return Err(bad(format!(
            "`resolutions[{i}]`: `{}` is not WIDTHxHEIGHT with each side 1 to {MAX_DIMENSION} (no sign or leading zero), e.g. `1920x1080`",
            ad.resolutions[i]
        )));
    }
    check_range(
        "max_fps",
        ad.max_fps.into(),
        1,
        MAX_FPS.into(),
        "frame rate",
    )?;
    check_range(
        "capacity",
        ad.capacity.into(),
        1,
        u32::MAX.into(),
        "number of session slots",
    )?;
    check_coord("coord", &ad.coord)
}

/// An edge's heartbeat body (signed).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Session slots free now.
    pub free_slots: u32,
    /// Whether the edge takes no new sessions.
    #[serde(default)]
    pub draining: bool,
    /// When the edge signed it (unix ms).
    pub issued_unix_ms: u64,
}

/// An edge's report that a session ended (signed; the body of `POST /v1/edges/{id}/ended`,
/// for edges that speak HTTP instead of the link).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndedReport {
    /// The session.
    pub session: edgeplay_protocol::token::SessionId,
    /// Why it ended.
    pub reason: edgeplay_protocol::lifecycle::EndReason,
    /// When the player joined (unix ms).
    pub started_unix_ms: u64,
    /// How long the edge served it (ms).
    pub duration_ms: u64,
    /// Frames produced.
    pub frames: u64,
    /// Encoded bytes produced.
    pub bytes: u64,
    /// When the edge signed it (unix ms).
    pub issued_unix_ms: u64,
}

impl EndedReport {
    /// The report as the link carries it.
    #[must_use]
    pub fn report(&self) -> edgeplay_protocol::lifecycle::SessionEnded {
        edgeplay_protocol::lifecycle::SessionEnded {
            session: self.session,
            reason: self.reason,
            started_unix_ms: self.started_unix_ms,
            duration_ms: self.duration_ms,
            frames: self.frames,
            bytes: self.bytes,
        }
    }
}

/// A signed edge message, decoded but not yet verified.
#[derive(Debug, Clone)]
pub struct Signed<T> {
    /// The typed message.
    pub msg: T,
    /// The body without `signature`: what the signature covers (in canonical JSON).
    pub unsigned: Value,
    /// The signature to check.
    pub signature: Signature,
}

/// Parses `bytes` as a JSON object with a hex `signature`; returns the rest and the signature.
fn split_signed(bytes: &[u8]) -> Result<(Value, Signature), DecodeError> {
    size(bytes)?;
    let mut v: Value = json(bytes)?;
    let Value::Object(m) = &mut v else {
        return Err(bad("body must be a JSON object"));
    };
    let sig = match m.remove("signature") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(bad("`signature`: expected a hex string of 64 bytes")),
        None => {
            return Err(bad(
                "missing field `signature`: sign the body with the edge key",
            ));
        }
    };
    let sig: [u8; 64] = from_hex(&sig)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("`signature`: expected 128 hex digits (an Ed25519 signature)"))?;
    Ok((v, Signature::from_bytes(&sig)))
}

fn signed<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<Signed<T>, DecodeError> {
    let (unsigned, signature) = split_signed(bytes)?;
    // Decoded from the canonical form: the bytes the signature covers are the bytes typed.
    let msg = json(canonical_json(&unsigned).as_bytes())?;
    Ok(Signed {
        msg,
        unsigned,
        signature,
    })
}

/// Decodes and checks an edge registration (`POST /v1/edges`).
pub fn registration(bytes: &[u8]) -> Result<Signed<EdgeAd>, DecodeError> {
    let s: Signed<EdgeAd> = signed(bytes)?;
    objects_in(&s.unsigned, &["coord"])?;
    validate_ad(&s.msg)?;
    Ok(s)
}

/// Decodes an edge heartbeat (`POST /v1/edges/{id}/heartbeat`).
pub fn heartbeat(bytes: &[u8]) -> Result<Signed<Heartbeat>, DecodeError> {
    signed(bytes)
}

/// Decodes an edge's session-end report (`POST /v1/edges/{id}/ended`); its figures are
/// checked against [`edgeplay_protocol::lifecycle::MAX_REPORTED`].
pub fn ended_report(bytes: &[u8]) -> Result<Signed<EndedReport>, DecodeError> {
    let s: Signed<EndedReport> = signed(bytes)?;
    s.msg.report().check().map_err(|e| bad(e.to_string()))?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field_and_size_is_413() {
        let e =
            session_request(br#"{"player":"p","width":"wide","height":720,"fps":60}"#).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("width"), "{e}");
        let e = session_request(br#"{"player":"","width":1,"height":1,"fps":1}"#).unwrap_err();
        assert!(e.message.contains("player"), "{e}");
        let e = select_request(
            br#"{"measured":[{"edge":"0000000000000000000000000000000000000000000000000000000000000000","rtt_ms":-1}]}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("measured[0].rtt_ms"), "{e}");
        let big = vec![b' '; MAX_BODY + 1];
        assert_eq!(session_request(&big).unwrap_err().status, 413);
        assert_eq!(heartbeat(&big).unwrap_err().status, 413);
        let e = heartbeat(br#"{"free_slots":1,"issued_unix_ms":1}"#).unwrap_err();
        assert!(e.message.contains("signature"), "{e}");
        let e = heartbeat(br#"[1]"#).unwrap_err();
        assert!(e.message.contains("object"), "{e}");
        let ok =
            session_request(br#"{"player":"p","region":"eu","width":1280,"height":720,"fps":60}"#)
                .unwrap();
        assert_eq!(ok.player, "p");
    }

    /// A request that can never be served is a 400 naming the field, at both ends of each
    /// range; the ends themselves are accepted.
    #[test]
    fn limits_are_400_naming_the_field_and_the_ends_pass() {
        let base = serde_json::json!({"player": "p", "coord": {"x": 0, "y": 0, "height": 1},
            "width": 1280, "height": 720, "fps": 60});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            let (obj, key) = match k.split_once('.') {
                Some((o, key)) => (&mut b[o], key),
                None => (&mut b, k),
            };
            obj[key] = v;
            b.to_string()
        };
        for (field, bad_v, good) in [
            ("width", 0, vec![1, 8192]),
            ("width", 8193, vec![]),
            ("height", 0, vec![1, 8192]),
            ("height", 8193, vec![]),
            ("fps", 0, vec![1, 1000]),
            ("fps", 1001, vec![]),
            ("min_gpu_class", 8, vec![0, 7]),
        ] {
            let e = session_request(with(field, bad_v.into()).as_bytes()).unwrap_err();
            assert_eq!(e.status, 400, "{e}");
            assert!(e.message.contains(&format!("`{field}`")), "{e}");
            for g in good {
                session_request(with(field, g.into()).as_bytes()).unwrap();
            }
        }
        for (field, v) in [
            ("coord.x", -100_000.5),
            ("coord.y", 100_001.0),
            ("coord.height", -0.5),
        ] {
            let e = session_request(with(field, v.into()).as_bytes()).unwrap_err();
            assert!(e.message.contains(&format!("`{field}`")), "{e}");
        }
        let e = session_request(with("player", "é".repeat(33).into()).as_bytes()).unwrap_err();
        assert!(e.message.contains("`player`: 66 bytes"), "{e}");
        let e = session_request(with("region", "".into()).as_bytes()).unwrap_err();
        assert!(e.message.contains("`region`"), "{e}");
        let mut nowhere = base.clone();
        nowhere.as_object_mut().unwrap().remove("coord");
        let e = session_request(nowhere.to_string().as_bytes()).unwrap_err();
        assert!(e.message.contains("`coord`, `region`"), "{e}");
        nowhere["coord"] = Value::Null;
        assert!(session_request(nowhere.to_string().as_bytes()).is_err());
        let e =
            session_request(with("coord", serde_json::json!([0, 0, 1])).as_bytes()).unwrap_err();
        assert!(e.message.contains("`coord`: expected a JSON object"), "{e}");
        let e = session_request(br#"["p", null, "eu", 1280, 720, 60, 0, null]"#).unwrap_err();
        assert!(e.message.contains("object"), "{e}");
        let e = session_request(with("colour", "red".into()).as_bytes()).unwrap_err();
        assert!(e.message.contains("colour"), "{e}");

        let e = select_request(br#"{"measured":[]}"#).unwrap_err();
        assert!(e.message.contains("`measured`: 0 entries"), "{e}");
        let e = select_request(
            br#"{"measured":[{"edge":"0000000000000000000000000000000000000000000000000000000000000000","rtt_ms":10000.5}]}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("measured[0].rtt_ms"), "{e}");
        let e = select_request(br#"{"measured":[["0000000000000000000000000000000000000000000000000000000000000000",1]]}"#)
            .unwrap_err();
        assert!(
            e.message.contains("`measured[0]`: expected a JSON object"),
            "{e}"
        );
    }

    #[test]
    fn resolutions_are_strict() {
        assert_eq!(resolution("1920x1080"), Some((1920, 1080)));
        assert_eq!(resolution("8192x1"), Some((8192, 1)));
        for r in [
            "0x720",
            "01280x720",
            "+1280x720",
            "8193x1",
            "1280x",
            "x720",
            "1280X720",
            "1280x720x1",
            "99999999999x1",
        ] {
            assert_eq!(resolution(r), None, "{r}");
        }
    }
}
