//! The WebRTC transport: a WHEP (RFC 9725) peer per player, fed by a live [`session`].
//!
//! [`Whep`] holds the peers of an edge. [`Whep::offer`] answers a browser's SDP offer with one
//! `webrtc` peer connection that sends the session's H.264 (constrained baseline 42e01f, or
//! high 640c1f with no B-frames when the client prefers it; packetization-mode 1, one access
//! unit per RTP timestamp) and Opus on the session clock, and
//! takes the player's inputs on two data channels (`"input"`: unordered, no retransmits, for
//! pointer motion; `"control"`: ordered and reliable, for keys, buttons and acks). Every video
//! packet carries the playout-delay extension with min = max = 0 so Chromium renders without a
//! jitter buffer. PLI and FIR become [`Control::RequestKeyframe`](edgeplay_media::session::Control::RequestKeyframe) (the session rate-limits them).
//!
//! Each peer has one task that owns its [`SessionHandle`]: it waits for ICE + DTLS, subscribes
//! to the media (which starts the game clock), forwards inputs, sends acks, and ends the session
//! when the player says DELETE, the connection fails, or the player vanishes (ICE disconnected
//! for [`VANISHED_GRACE`] after the agent's 5 s consent timeout: freed within 10 s).
//!
//! Wire formats live in [`edgeplay_protocol::whep`]. The peer connection is set up in
//! `negotiate` (codecs, the transport-cc and keyframe-request interceptors) and driven by the
//! peer's task in `peer`; [`rate`] turns the transport-cc estimate into encoder bitrates, and
//! `rtt_probe` answers the browsers' RTT probes with data-channel-only peers.
//!
//! [`session`]: edgeplay_media::session

mod negotiate;
mod peer;
pub mod rate;
pub(crate) mod rtt_probe;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use edgeplay_media::session::SessionHandle;
use edgeplay_protocol::lifecycle::EndReason;
use edgeplay_protocol::whep::{H264Profile, WireError};
use subtle::ConstantTimeEq;
use tokio::sync::{Notify, watch};
use tracing::{Instrument, debug, info, info_span};
use webrtc::peer_connection::{PeerConnection, RTCIceCandidateInit, RTCSessionDescription};

use crate::admission::Slot;
use crate::transport::webrtc::negotiate::negotiate;
use crate::transport::webrtc::peer::run_peer;
use crate::transport::webrtc::rate::Estimate;

/// The playout-delay RTP header extension (min/max delay in 10 ms units, 12 bits each).
pub const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
/// H.264 single NAL / non-interleaved, level 3.1 (the level may differ per side): the fmtp of
/// `profile`.
#[must_use]
pub(crate) fn h264_fmtp(profile: H264Profile) -> String {
    format!(
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={}",
        profile.profile_level_id()
    )
}
/// How long an ICE-disconnected player may come back before its session is freed.
pub const VANISHED_GRACE: Duration = Duration::from_secs(3);
/// How long a peer may take to connect after its answer before it is dropped.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the peer's task moves the encoder to the congestion controller's estimate.
pub const RATE_INTERVAL: Duration = Duration::from_millis(200);
/// RTP payload size: below any path MTU with SRTP, extension and IP/UDP headers.
const RTP_MTU: usize = 1200;
/// The payload types the edge offers for video and audio (the negotiated ones win).
const VIDEO_PT: u8 = 102;
const AUDIO_PT: u8 = 111;

/// Why a WHEP request failed.
#[derive(Debug, thiserror::Error)]
pub enum WebRtcError {
    /// The offer, fragment or message was refused before reaching the WebRTC stack.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The WebRTC stack refused the offer.
    #[error(
        "cannot answer the SDP offer: {0}; offer H.264 video (Chromium, Firefox and Safari do)"
    )]
    Negotiation(String),
    /// The stack failed for another reason.
    #[error("WebRTC failure: {0}")]
    Internal(String),
    /// No peer has this resource id (ended, or never existed).
    #[error("no WHEP session `{0}` on this edge: it ended; POST a new offer")]
    NotFound(String),
    /// The session secret is missing or wrong.
    #[error(
        "the session secret is missing or wrong: send `Authorization: Bearer <secret>` with the secret of the 201"
    )]
    Forbidden,
    /// `If-Match` names another ICE session than the current one (RFC 9725 section 4.3.1).
    #[error(
        "If-Match names an ICE session this peer no longer has (the current ETag is {0}): use the ETag of the last 201 or ICE restart, or `*`"
    )]
    PreconditionFailed(String),
    /// The WebRTC stack refused an ICE restart or a trickled candidate.
    #[error("{0}; check the fragment (RFC 8840), or DELETE the session and POST a new offer")]
    BadPatch(String),
}

/// The SDP of a session description; empty while there is none.
fn sdp_of(description: Option<RTCSessionDescription>) -> String {
    description.map(|d| d.sdp).unwrap_or_default()
}

fn internal(e: impl std::fmt::Display) -> WebRtcError {
    WebRtcError::Internal(e.to_string())
}

/// The answer to a WHEP offer.
#[derive(Debug)]
pub struct Answer {
    /// The resource id (unguessable, 128 bits): the session URL is `/v1/whep/{id}`.
    pub id: String,
    /// The secret that authorises PATCH (trickle ICE, ICE restart) and DELETE (128 bits).
    pub secret: String,
    /// The SDP answer, with every local ICE candidate (the edge does not trickle).
    pub sdp: String,
    /// The entity tag of the ICE session (RFC 9725 section 4.3.1): the edge's quoted ufrag.
    pub etag: String,
}

/// What a `PATCH` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Patched {
    /// Candidates added to the current ICE session (204).
    Trickled,
    /// ICE restarted (200): the new ICE session's entity tag and the edge's new credentials and
    /// candidates as a trickle-ICE fragment.
    Restarted {
        /// The new ICE session's entity tag.
        etag: String,
        /// The `application/trickle-ice-sdpfrag` body.
        fragment: String,
    },
}

/// The entity tag of the ICE session a local description describes: its quoted ufrag (unique
/// per ICE session, and renewed by a restart).
fn ice_etag(local_sdp: &str) -> String {
    let ufrag = local_sdp
        .lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("a=ice-ufrag:"))
        .unwrap_or_default();
    format!("\"{ufrag}\"")
}

/// Counters of one peer (and, summed, of the edge).
#[derive(Debug, Default)]
pub(crate) struct PeerCounters {
    /// Inputs forwarded to the session.
    pub inputs: AtomicU64,
    /// Data-channel messages that were not inputs, dropped.
    pub garbage: AtomicU64,
    /// Keyframe requests (PLI/FIR) received.
    pub keyframe_requests: AtomicU64,
    /// Video access units sent.
    pub frames_sent: AtomicU64,
    /// The encoder target this peer last asked for (kbit/s).
    pub encoder_kbps: AtomicU64,
    /// Encoder bitrate changes this peer asked for.
    pub bitrate_changes: AtomicU64,
}

struct Peer {
    secret: String,
    pc: Arc<dyn PeerConnection>,
    /// Told to stop: DELETE, or the server shuts down.
    stop: Notify,
    /// Set when the edge, not the player, stopped it (shutdown).
    stopped_by_edge: std::sync::atomic::AtomicBool,
    counters: PeerCounters,
    /// The transport-cc estimate, written by the interceptor chain.
    estimate: Arc<Estimate>,
    /// Whether local ICE gathering is complete (it restarts with an ICE restart).
    gathered: watch::Receiver<bool>,
    /// One PATCH at a time: a restart is a whole offer/answer round.
    patching: tokio::sync::Mutex<()>,
}

/// The WHEP peers of an edge.
#[derive(Debug)]
pub struct Whep {
    local_ip: IpAddr,
    peers: Mutex<HashMap<String, Arc<Peer>>>,
    /// Garbage messages over all peers, ended ones included.
    pub garbage_total: AtomicU64,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Whep {
    /// Peers bind their ICE (UDP) sockets on `local_ip`.
    #[must_use]
    pub fn new(local_ip: IpAddr) -> Arc<Self> {
        Arc::new(Self {
            local_ip,
            peers: Mutex::new(HashMap::new()),
            garbage_total: AtomicU64::new(0),
        })
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Peer>>> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Live peers.
    #[must_use]
    pub fn len(&self) -> usize {
        self.peers().len()
    }

    /// Whether no peer is live.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Answers `offer` with a peer that plays `session` (encoding at `session_kbps`, the ceiling
    /// of its congestion controller); the peer ends the session when it ends. The session holds
    /// no slot of the edge's [`Admission`](crate::admission::Admission): for callers that
    /// count sessions themselves; the edge's routes use [`Self::offer_holding`].
    ///
    /// # Errors
    /// The offer is malformed or cannot be answered.
    pub async fn offer(
        self: &Arc<Self>,
        offer: &[u8],
        session: SessionHandle,
        session_kbps: u32,
        profile: H264Profile,
    ) -> Result<Answer, WebRtcError> {
        self.answer(offer, session, None, session_kbps, profile)
            .await
    }

    /// [`Self::offer`] for a session admitted with `slot`: the peer holds the slot until the
    /// session has ended and the peer is gone (or gives it back at once if the offer fails).
    ///
    /// # Errors
    /// The offer is malformed or cannot be answered.
    pub async fn offer_holding(
        self: &Arc<Self>,
        offer: &[u8],
        session: SessionHandle,
        slot: Slot,
        session_kbps: u32,
        profile: H264Profile,
    ) -> Result<Answer, WebRtcError> {
        self.answer(offer, session, Some(slot), session_kbps, profile)
            .await
    }

    async fn answer(
        self: &Arc<Self>,
        offer: &[u8],
        session: SessionHandle,
        slot: Option<Slot>,
        session_kbps: u32,
        profile: H264Profile,
    ) -> Result<Answer, WebRtcError> {
        let prepared = async {
            let sdp = edgeplay_protocol::whep::check_offer(offer)?.to_owned();
            let id = random_hex().map_err(internal)?;
            let secret = random_hex().map_err(internal)?;
            let span = info_span!("whep", session = %session.id(), peer = %&id[..8]);
            let (pc, wiring) = negotiate(self.local_ip, sdp, session_kbps, profile)
                .instrument(span.clone())
                .await?;
            Ok::<_, WebRtcError>((id, secret, span, pc, wiring))
        };
        let (id, secret, span, pc, wiring) = match prepared.await {
            Ok(p) => p,
            Err(e) => {
                // No peer will play it: the session ends, and only then its slot goes back.
                tokio::task::spawn_blocking(move || {
                    let _ = session.end();
                    drop(slot);
                });
                return Err(e);
            }
        };
        let counters = PeerCounters::default();
        counters
            .encoder_kbps
            .store(u64::from(session_kbps), Ordering::Relaxed);
        let peer = Arc::new(Peer {
            secret: secret.clone(),
            pc,
            stop: Notify::new(),
            stopped_by_edge: std::sync::atomic::AtomicBool::new(false),
            counters,
            estimate: Arc::clone(&wiring.estimate),
            gathered: wiring.gathered.clone(),
            patching: tokio::sync::Mutex::new(()),
        });
        let answer = wiring.answer.clone();
        self.peers().insert(id.clone(), Arc::clone(&peer));
        let whep = Arc::downgrade(self);
        let key = id.clone();
        // The broker may end the session (its maximum duration): that stops the peer as a
        // DELETE does.
        let asked = slot.as_ref().map(|s| {
            let ended = s.end_requested();
            let peer = Arc::clone(&peer);
            tokio::spawn(async move {
                let reason = ended.await;
                info!(%reason, "the broker ends the session");
                peer.stop.notify_one();
            })
        });
        tokio::spawn(
            async move {
                let idle = slot.as_ref().and_then(Slot::idle);
                let end = run_peer(&peer, session, wiring, session_kbps, idle).await;
                if let Some(a) = asked {
                    a.abort();
                }
                end_peer(&whep, &key, &peer).await;
                if let Some(mut slot) = slot {
                    let reason = if peer.stopped_by_edge.load(Ordering::Relaxed) {
                        EndReason::EdgeStopped
                    } else {
                        end.reason
                    };
                    slot.finish(reason, end.frames, end.bytes);
                }
            }
            .instrument(span),
        );
        Ok(Answer {
            id,
            secret,
            etag: ice_etag(&answer),
            sdp: answer,
        })
    }

    fn authorised(&self, id: &str, secret: Option<&str>) -> Result<Arc<Peer>, WebRtcError> {
        let peer = self
            .peers()
            .get(id)
            .cloned()
            .ok_or_else(|| WebRtcError::NotFound(id.to_owned()))?;
        match secret {
            Some(s) if secret_matches(s, &peer.secret) => Ok(peer),
            _ => Err(WebRtcError::Forbidden),
        }
    }

    /// Applies a WHEP `PATCH` (RFC 9725 section 4.3): a trickle-ICE fragment (RFC 8840) with
    /// more candidates for the current ICE session (`Ok(None)`: 204), or, when it carries a new
    /// `a=ice-ufrag` and `a=ice-pwd`, an ICE restart: the peer connection takes the client's new
    /// credentials and candidates as a renegotiation, restarts ICE with fresh local credentials,
    /// and `Ok(Some(fragment))` carries those and the edge's candidates back (200). DTLS, SRTP,
    /// the data channels and the session live on.
    ///
    /// `if_match` (the request's `If-Match`), when given and not `*`, must be the current ICE
    /// session's entity tag.
    ///
    /// # Errors
    /// Unknown peer, wrong secret, a stale `If-Match`, a malformed fragment, a ufrag that is
    /// neither the current one nor a restart (no password), or a candidate or restart the
    /// stack refuses.
    pub async fn patch(
        &self,
        id: &str,
        secret: Option<&str>,
        if_match: Option<&str>,
        fragment: &[u8],
    ) -> Result<Patched, WebRtcError> {
        use edgeplay_protocol::whep::{parse_fragment, restart_answer_fragment, restart_offer};
        let peer = self.authorised(id, secret)?;
        let frag = parse_fragment(fragment)?;
        let _one = peer.patching.lock().await;
        if let Some(tag) = if_match.map(str::trim).filter(|t| *t != "*") {
            let local = sdp_of(peer.pc.local_description().await);
            let etag = ice_etag(&local);
            if tag != etag {
                return Err(WebRtcError::PreconditionFailed(etag));
            }
        }
        let current = sdp_of(peer.pc.remote_description().await);
        let has_line = |prefix: &str, value: &str| {
            current
                .lines()
                .filter_map(|l| l.trim_end_matches('\r').strip_prefix(prefix))
                .any(|v| v == value)
        };
        let restart = match (&frag.ufrag, &frag.pwd) {
            (Some(u), _) if has_line("a=ice-ufrag:", u) => {
                if frag
                    .pwd
                    .as_deref()
                    .is_some_and(|p| !has_line("a=ice-pwd:", p))
                {
                    return Err(WireError::BadFragment(
                        "it keeps the ICE ufrag but changes the password: an ICE restart changes both",
                    )
                    .into());
                }
                None
            }
            (Some(u), Some(p)) => Some((u, p)),
            (Some(_), None) => {
                return Err(WireError::BadFragment(
                    "its `a=ice-ufrag` is not this session's: for an ICE restart send the new `a=ice-pwd` too; to trickle, use the current ufrag",
                )
                .into());
            }
            (None, _) => None,
        };
        let Some((ufrag, pwd)) = restart else {
            for (candidate, sdp_mid) in frag.candidates {
                peer.pc
                    .add_ice_candidate(RTCIceCandidateInit {
                        candidate,
                        sdp_mid,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| WebRtcError::BadPatch(format!("bad ICE candidate: {e}")))?;
            }
            return Ok(Patched::Trickled);
        };
        let offer = restart_offer(&current, ufrag, pwd, &frag.candidates)?;
        let refused = |e: webrtc::error::Error| {
            WebRtcError::BadPatch(format!("the ICE restart was refused: {e}"))
        };
        let mut gathered = peer.gathered.clone();
        gathered.mark_unchanged();
        peer.pc
            .set_remote_description(RTCSessionDescription::offer(offer).map_err(refused)?)
            .await
            .map_err(refused)?;
        let answer = peer.pc.create_answer(None).await.map_err(refused)?;
        peer.pc
            .set_local_description(answer)
            .await
            .map_err(refused)?;
        // The restart may re-gather (host candidates: milliseconds) or keep its candidates.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            if gathered.changed().await.is_ok() {
                let _ = gathered.wait_for(|g| *g).await;
            }
        })
        .await;
        let local = peer
            .pc
            .local_description()
            .await
            .ok_or_else(|| internal("no local description after the ICE restart"))?
            .sdp;
        let fragment = restart_answer_fragment(&local)?;
        info!(
            candidates = fragment.matches("a=candidate:").count(),
            "ICE restarted"
        );
        Ok(Patched::Restarted {
            etag: ice_etag(&local),
            fragment,
        })
    }

    /// Ends a peer and its session (the answer comes before the teardown finishes).
    ///
    /// # Errors
    /// Unknown peer or wrong secret.
    pub fn delete(&self, id: &str, secret: Option<&str>) -> Result<(), WebRtcError> {
        let peer = self.authorised(id, secret)?;
        self.peers().remove(id);
        peer.stop.notify_one();
        Ok(())
    }

    /// A peer's counters as JSON (for `GET` on the session URL).
    ///
    /// # Errors
    /// Unknown peer or wrong secret.
    pub fn stats(&self, id: &str, secret: Option<&str>) -> Result<serde_json::Value, WebRtcError> {
        let peer = self.authorised(id, secret)?;
        let (c, e) = (&peer.counters, &peer.estimate);
        Ok(serde_json::json!({
            "inputs": c.inputs.load(Ordering::Relaxed),
            "garbage": c.garbage.load(Ordering::Relaxed),
            "keyframe_requests": c.keyframe_requests.load(Ordering::Relaxed),
            "frames_sent": c.frames_sent.load(Ordering::Relaxed),
            "encoder_kbps": c.encoder_kbps.load(Ordering::Relaxed),
            "bitrate_changes": c.bitrate_changes.load(Ordering::Relaxed),
            "estimate_bps": e.bps().round(),
            "delay_based_bps": e.delay_bps().round(),
            "loss_based_bps": e.loss_bps().round(),
            "loss": e.loss(),
            "twcc_feedbacks": e.feedbacks(),
        }))
    }

    /// The sum of the live peers' transport-cc estimates, bit/s (for `/metrics`).
    #[must_use]
    pub fn estimate_sum_bps(&self) -> f64 {
        self.peers()
            .values()
            .filter(|p| p.estimate.feedbacks() > 0)
            .map(|p| p.estimate.bps())
            .sum()
    }

    /// Asks every peer to stop (server shutdown).
    pub fn stop_all(&self) {
        for (_, peer) in self.peers().drain() {
            peer.stopped_by_edge.store(true, Ordering::Relaxed);
            peer.stop.notify_one();
        }
    }
}

async fn end_peer(whep: &Weak<Whep>, id: &str, peer: &Arc<Peer>) {
    if let Some(w) = whep.upgrade() {
        w.peers().remove(id);
        w.garbage_total.fetch_add(
            peer.counters.garbage.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }
    if let Err(e) = peer.pc.close().await {
        debug!(error = %e, "closing the peer connection");
    }
}

/// Whether `secret` is the peer's, in constant time (a wrong length is refused outright).
fn secret_matches(secret: &str, expected: &str) -> bool {
    bool::from(secret.as_bytes().ct_eq(expected.as_bytes()))
}
fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    use std::io::Read;
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// 128 random bits from the OS, hex: unguessable ids, secrets and dev tokens.
///
/// # Errors
/// The OS random source cannot be read.
pub(crate) fn random_hex() -> std::io::Result<String> {
    Ok(random_bytes::<16>()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
