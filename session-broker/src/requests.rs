//! Decoders of the broker's request bodies: pure functions from untrusted bytes to a typed
//! request or a [`DecodeError`] that names the field, so the HTTP handlers stay thin and a fuzz
//! target (`fuzz/fuzz_targets/broker_requests.rs`) can drive them without a server.
//!
//! Signed edge messages ([`registration`], [`heartbeat`]) are decoded here, not verified: the
//! caller checks the signature over [`Signed::unsigned`] (see [`signed_bytes`]), with the
//! domain prefix of its kind ([`REGISTER_DOMAIN`], [`HEARTBEAT_DOMAIN`]), so that a signature
//! for one purpose cannot be replayed for another. [`sign_body`] is the edge's side of it.

use axum::Json;
use edgeplay_protocol::coords::Coord;
use edgeplay_protocol::token::{EdgeId, MAX_PLAYER_LEN, Signature, from_hex, to_hex};
use serde::Deserialize;
use serde_json::Value;

pub use crate::error::DecodeError;
use crate::placement::GPU_CLASSES;
use crate::records::{EdgeAd, parse_resolution};
pub use edgeplay_protocol::link::{canonical_json, signed_bytes};

/// Largest request body accepted.
pub const MAX_BODY: usize = 16 * 1024;
/// Domain prefix of registration signatures.
pub const REGISTER_DOMAIN: &[u8] = edgeplay_protocol::link::REGISTER_DOMAIN;
/// Domain prefix of heartbeat signatures.
pub const HEARTBEAT_DOMAIN: &[u8] = b"edgeplay/edge-heartbeat/v1\n";

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

/// A player's session request (`POST /v1/sessions`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// The player's name (1 to 64 bytes).
    pub player: String,
    /// The player's Vivaldi coordinate, when it has one.
    #[serde(default)]
    pub coord: Option<Coord>,
    /// Region hint, used when there is no coordinate.
    #[serde(default)]
    pub region: Option<String>,
    /// Frame width wanted.
    pub width: u32,
    /// Frame height wanted.
    pub height: u32,
    /// Frame rate wanted.
    pub fps: u32,
    /// Lowest GPU class accepted.
    #[serde(default)]
    pub min_gpu_class: u8,
    /// Highest price accepted per minute.
    #[serde(default)]
    pub max_price_per_min: Option<u64>,
}

/// Decodes and checks a session request.
pub fn session_request(bytes: &[u8]) -> Result<SessionRequest, DecodeError> {
    size(bytes)?;
    let req: SessionRequest = json(bytes)?;
    if req.player.is_empty() || req.player.len() > MAX_PLAYER_LEN {
        return Err(bad("`player`: 1 to 64 bytes"));
    }
    if req.coord.is_some_and(|c| !c.is_valid()) {
        return Err(bad(
            "`coord`: not a valid Vivaldi coordinate (finite, height ≥ 0)",
        ));
    }
    if req.region.as_ref().is_some_and(|r| r.len() > 64) {
        return Err(bad("`region`: at most 64 bytes"));
    }
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

/// Decodes a selection. RTTs that are not finite and ≥ 0 are refused here (the pick ignores
/// them anyway; saying so helps a client find its bug).
pub fn select_request(bytes: &[u8]) -> Result<SelectRequest, DecodeError> {
    size(bytes)?;
    let req: SelectRequest = json(bytes)?;
    if req.measured.len() > 64 {
        return Err(bad("`measured`: at most 64 entries (one per candidate)"));
    }
    if let Some(i) = req
        .measured
        .iter()
        .position(|m| !m.rtt_ms.is_finite() || m.rtt_ms < 0.0)
    {
        return Err(bad(format!(
            "`measured[{i}].rtt_ms`: a finite number of milliseconds ≥ 0"
        )));
    }
    Ok(req)
}

/// Checks what serde cannot: lengths, ranges, resolution syntax.
pub fn validate_ad(ad: &EdgeAd) -> Result<(), DecodeError> {
    if ad.region.is_empty() || ad.region.len() > 64 {
        return Err(bad("`region`: 1 to 64 bytes, e.g. `eu-west`"));
    }
    if usize::from(ad.gpu_class) >= GPU_CLASSES {
        return Err(bad(format!("`gpu_class`: must be below {GPU_CLASSES}")));
    }
    if !ad.coord.is_valid() {
        return Err(bad(
            "`coord`: not a valid Vivaldi coordinate (finite, height ≥ 0)",
        ));
    }
    if ad.capacity == 0 {
        return Err(bad("`capacity`: at least 1 session slot"));
    }
    if ad.resolutions.is_empty() || ad.resolutions.iter().any(|r| parse_resolution(r).is_none()) {
        return Err(bad(
            "`resolutions`: a non-empty list of WIDTHxHEIGHT, e.g. [\"1920x1080\"]",
        ));
    }
    Ok(())
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
    validate_ad(&s.msg)?;
    Ok(s)
}

/// Decodes an edge heartbeat (`POST /v1/edges/{id}/heartbeat`).
pub fn heartbeat(bytes: &[u8]) -> Result<Signed<Heartbeat>, DecodeError> {
    signed(bytes)
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
        let ok = session_request(br#"{"player":"p","width":1280,"height":720,"fps":60}"#).unwrap();
        assert_eq!(ok.player, "p");
    }
}
