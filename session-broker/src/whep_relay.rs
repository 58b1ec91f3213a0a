//! WHEP through the broker: browsers cannot reach edges that have no CA-signed certificate, so
//! `POST /v1/sessions/{id}/whep` (the offer, with `Authorization: Bearer <join token>`) is
//! relayed to the session's edge over its link ([`crate::links`]) and the edge's answer comes
//! back; `PATCH`, `DELETE` and `GET` on the `Location` the 201 gives
//! (`/v1/sessions/{id}/whep/{peer}`, authorised by the session secret) are relayed the same way,
//! and so are a browser's RTT probes to a session's candidates. Media then flows straight
//! between player and edge.
//!
//! This module decides what goes to which edge and what comes back (which headers pass, the
//! `Location` rewritten to the broker's URL); the routes add HTTP and CORS around it.

use std::time::Duration;

use edgeplay_protocol::token::{EdgeId, SessionId, decode_unverified, from_hex};

use crate::error::BrokerError;
use crate::links::Relayed;
use crate::state::AppState;

/// How long the broker waits for an edge to answer an offer (it starts a session first).
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the broker waits for an edge to answer PATCH, DELETE or GET.
pub const OTHER_TIMEOUT: Duration = Duration::from_secs(5);

/// Request headers passed on to the edge.
pub const PASS_IN: [&str; 3] = ["authorization", "content-type", "if-match"];
/// Response headers passed back to the player.
const PASS_OUT: [&str; 6] = [
    "content-type",
    "location",
    "edgeplay-session-secret",
    "etag",
    "accept-patch",
    // A full edge's 503 says when to try again.
    "retry-after",
];

/// Relays a WHEP call on session `sid` to its edge (`edge_path` there) and returns the edge's
/// answer with only the [`PASS_OUT`] headers, lower-cased, its `Location` rewritten to the
/// broker's resource. `headers` are the [`PASS_IN`] ones the player sent.
///
/// # Errors
/// No such session (404), not placed yet (409), a body that is not text (400), or the relay's
/// failure (502, 504), or an answer whose status is not one (502).
pub(crate) async fn relay(
    s: &AppState,
    sid: &SessionId,
    method: &str,
    edge_path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Relayed, BrokerError> {
    let edge = s.service.session_edge(sid).await?;
    let body = String::from_utf8(body).map_err(|_| {
        BrokerError::NotText("the body must be UTF-8 text (an SDP offer or a trickle-ICE fragment)")
    })?;
    let r = s
        .links
        .request(edge, method, edge_path, headers, body, timeout)
        .await?;
    if !(100..1000).contains(&r.status) {
        return Err(BrokerError::EdgeStatus {
            edge,
            status: r.status,
        });
    }
    let headers = r
        .headers
        .into_iter()
        .filter_map(|(k, v)| {
            let k = k.to_ascii_lowercase();
            if !PASS_OUT.contains(&k.as_str()) {
                return None;
            }
            // The edge's `/v1/whep/{peer}` becomes the broker's `/v1/sessions/{id}/whep/{peer}`.
            let v = if k == "location" {
                let peer = v.strip_prefix("/v1/whep/")?;
                format!("/v1/sessions/{sid}/whep/{peer}")
            } else {
                v
            };
            Some((k, v))
        })
        .collect();
    Ok(Relayed {
        status: r.status,
        headers,
        body: r.body,
    })
}

/// A browser's RTT probe offer (data channel only), relayed to `edge`, one of the session's
/// candidates, which answers with a short-lived peer.
///
/// # Errors
/// No such session, or not one of its candidates (404), a body that is not text (400), or the
/// relay's failure (502, 504).
pub(crate) async fn probe(
    s: &AppState,
    sid: &SessionId,
    edge: EdgeId,
    body: Vec<u8>,
) -> Result<Relayed, BrokerError> {
    s.service.session_candidate(sid, &edge).await?;
    let body = String::from_utf8(body)
        .map_err(|_| BrokerError::NotText("the probe offer must be SDP text"))?;
    let r = s
        .links
        .request(
            edge,
            "POST",
            "/v1/probe".into(),
            vec![("content-type".into(), "application/sdp".into())],
            body,
            OTHER_TIMEOUT,
        )
        .await?;
    Ok(r)
}

/// Checks the `{peer}` of a WHEP resource URL: what edges hand out (ASCII letters and digits).
///
/// # Errors
/// 404 for anything else.
pub(crate) fn peer_ok(peer: &str) -> Result<(), BrokerError> {
    if peer.is_empty() || peer.len() > 128 || !peer.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(BrokerError::NoWhepResource(peer.to_owned()));
    }
    Ok(())
}

/// Refuses an offer whose join token (`authorization`, the header's value) names another
/// session than the URL's `sid` (the edge checks the signature, the edge and single use; this
/// keeps one session's token out of another's relay).
///
/// # Errors
/// 403 when the token is for another session.
pub(crate) fn token_for_session(authorization: Option<&str>, sid: &str) -> Result<(), BrokerError> {
    let Some(hex) = authorization.and_then(|v| v.strip_prefix("Bearer ")) else {
        // No token: the edge answers 401 with its explanation.
        return Ok(());
    };
    let session = from_hex(hex.trim())
        .ok()
        .and_then(|b| decode_unverified(&b).ok().map(|t| t.0.session));
    match session {
        Some(t) if t.to_string() != sid => Err(BrokerError::OtherSessionsToken {
            token: t,
            url: sid.to_owned(),
        }),
        _ => Ok(()),
    }
}
