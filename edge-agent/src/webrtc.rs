//! The WebRTC transport: a WHEP (RFC 9725) peer per player, fed by a live [`session`].
//!
//! [`Whep`] holds the peers of an edge. [`Whep::offer`] answers a browser's SDP offer with one
//! `webrtc` peer connection that sends the session's H.264 (constrained baseline 42e01f, or
//! high 640c1f with no B-frames when the client prefers it; packetization-mode 1, one access
//! unit per RTP timestamp) and Opus on the session clock, and
//! takes the player's inputs on two data channels (`"input"`: unordered, no retransmits, for
//! pointer motion; `"control"`: ordered and reliable, for keys, buttons and acks). Every video
//! packet carries the playout-delay extension with min = max = 0 so Chromium renders without a
//! jitter buffer. PLI and FIR become [`Control::RequestKeyframe`] (the session rate-limits them).
//!
//! Each peer has one task that owns its [`SessionHandle`]: it waits for ICE + DTLS, subscribes
//! to the media (which starts the game clock), forwards inputs, sends acks, and ends the session
//! when the player says DELETE, the connection fails, or the player vanishes (ICE disconnected
//! for [`VANISHED_GRACE`] after the agent's 5 s consent timeout: freed within 10 s).
//!
//! Wire formats live in [`edgeplay_protocol::whep`].
//!
//! [`session`]: crate::session

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use edgeplay_protocol::whep::{AckMessage, H264Profile, InputMessage, WireError};
use rtc::interceptor::{
    Attribute, CongestionControlBuilder, Interceptor, Packet, Slot, StreamInfo, TaggedPacket,
    TwccSenderBuilder,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tracing::{Instrument, debug, info, info_span, warn};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSessionDescription, Registry, register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

use crate::rate::{EncoderRate, Estimate};
use crate::session::{Control, MediaPacket, SessionHandle};

/// The playout-delay RTP header extension (min/max delay in 10 ms units, 12 bits each).
pub const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
/// H.264 single NAL / non-interleaved, level 3.1 (the level may differ per side): the fmtp of
/// `profile`.
#[must_use]
pub fn h264_fmtp(profile: H264Profile) -> String {
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
pub struct PeerCounters {
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
    stop: Notify,
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
    /// of its congestion controller); the peer ends the session when it ends.
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
        let sdp = edgeplay_protocol::whep::check_offer(offer)?.to_owned();
        let id = random_hex().map_err(internal)?;
        let secret = random_hex().map_err(internal)?;
        let span = info_span!("whep", session = %session.id(), peer = %&id[..8]);
        let (pc, wiring) = negotiate(self.local_ip, sdp, session_kbps, profile)
            .instrument(span.clone())
            .await?;
        let counters = PeerCounters::default();
        counters
            .encoder_kbps
            .store(u64::from(session_kbps), Ordering::Relaxed);
        let peer = Arc::new(Peer {
            secret: secret.clone(),
            pc,
            stop: Notify::new(),
            counters,
            estimate: Arc::clone(&wiring.estimate),
            gathered: wiring.gathered.clone(),
            patching: tokio::sync::Mutex::new(()),
        });
        let answer = wiring.answer.clone();
        self.peers().insert(id.clone(), Arc::clone(&peer));
        let whep = Arc::downgrade(self);
        let key = id.clone();
        tokio::spawn(
            async move {
                run_peer(&peer, session, wiring, session_kbps).await;
                end_peer(&whep, &key, &peer).await;
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
            Some(s) if constant_time_eq(s.as_bytes(), peer.secret.as_bytes()) => Ok(peer),
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
            let local = peer
                .pc
                .local_description()
                .await
                .map(|d| d.sdp)
                .unwrap_or_default();
            let etag = ice_etag(&local);
            if tag != etag {
                return Err(WebRtcError::PreconditionFailed(etag));
            }
        }
        let current = peer
            .pc
            .remote_description()
            .await
            .map(|d| d.sdp)
            .unwrap_or_default();
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

/// What the peer's task needs once the answer is out.
struct Wiring {
    answer: String,
    gathered: watch::Receiver<bool>,
    state: watch::Receiver<RTCPeerConnectionState>,
    channels: mpsc::Receiver<Arc<dyn DataChannel>>,
    video: Arc<TrackLocalStaticRTP>,
    video_sender: Arc<dyn RtpSender>,
    video_ssrc: u32,
    audio: Arc<TrackLocalStaticRTP>,
    audio_sender: Arc<dyn RtpSender>,
    audio_ssrc: u32,
    estimate: Arc<Estimate>,
}

struct Events {
    state: watch::Sender<RTCPeerConnectionState>,
    gathered: watch::Sender<bool>,
    channels: mpsc::Sender<Arc<dyn DataChannel>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        // Back to false when an ICE restart gathers again.
        let _ = self.gathered.send(state == RTCIceGatheringState::Complete);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        debug!(%state, "peer connection state");
        let _ = self.state.send(state);
    }

    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        if self.channels.try_send(channel).is_err() {
            warn!("more data channels than the two this edge serves: ignoring one");
        }
    }
}

/// Marks inbound PLI and FIR for the application; the rest of the RTCP stays with the
/// interceptors (reports, NACK), as in webrtc's `rtcp-processing` example.
#[derive(Default)]
struct KeyframeRequests {
    read: std::collections::VecDeque<TaggedPacket>,
    write: std::collections::VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = std::time::Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| {
                    let p = p.as_any();
                    p.is::<PictureLossIndication>() || p.is::<FullIntraRequest>()
                })
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

fn feedback(typ: &str, parameter: &str) -> RTCPFeedback {
    RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    }
}

fn video_codec(profile: H264Profile) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: rtc::peer_connection::configuration::media_engine::MIME_TYPE_H264.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: h264_fmtp(profile),
            rtcp_feedback: vec![
                feedback("nack", ""),
                feedback("nack", "pli"),
                feedback("ccm", "fir"),
                feedback("transport-cc", ""),
            ],
        },
        payload_type: VIDEO_PT,
    }
}

fn audio_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![feedback("transport-cc", "")],
        },
        payload_type: AUDIO_PT,
    }
}

fn local_track(
    kind: RtpCodecKind,
    codec: &RTCRtpCodecParameters,
) -> Result<(Arc<TrackLocalStaticRTP>, u32), WebRtcError> {
    let ssrc = u32::from_le_bytes(random_bytes::<4>().map_err(internal)?);
    let name = if kind == RtpCodecKind::Video {
        "video"
    } else {
        "audio"
    };
    // One media stream per track (msid `edgeplay-video` / `edgeplay-audio`), so Chromium does
    // not lip-sync them: its synchronizer holds audio back to match an estimated video delay
    // (jitter + decode + 10 ms render) that playout-delay 0 never applies, which put the
    // tone 105 ms after its frame instead of 79 ms. Both tracks share the session clock.
    let track = MediaStreamTrack::new(
        format!("edgeplay-{name}"),
        name.to_owned(),
        name.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            active: true,
            codec: codec.rtp_codec.clone(),
            ..Default::default()
        }],
    );
    Ok((Arc::new(TrackLocalStaticRTP::new(track)), ssrc))
}

async fn negotiate(
    local_ip: IpAddr,
    offer: String,
    session_kbps: u32,
    profile: H264Profile,
) -> Result<(Arc<dyn PeerConnection>, Wiring), WebRtcError> {
    let (video_codec, audio_codec) = (video_codec(profile), audio_codec());
    let mut media = MediaEngine::default();
    media
        .register_codec(video_codec.clone(), RtpCodecKind::Video)
        .map_err(internal)?;
    media
        .register_codec(audio_codec.clone(), RtpCodecKind::Audio)
        .map_err(internal)?;
    media
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: PLAYOUT_DELAY_URI.to_owned(),
            },
            RtpCodecKind::Video,
            None,
        )
        .map_err(internal)?;
    // The defaults register the transport-cc extension and feedback (and answer a peer's own
    // media with feedback); the sender half numbers every outgoing packet transport-wide, and
    // the congestion-control interceptor (wire-most) records departures, joins the player's
    // feedback to them and drives the estimator.
    let estimator = crate::rate::estimator(session_kbps);
    let estimate = estimator.estimate();
    let registry = register_default_interceptors(Registry::new(), &mut media)
        .map_err(internal)?
        .with(Slot::TwccSender, TwccSenderBuilder::new().build())
        .with(
            Slot::CongestionControl,
            CongestionControlBuilder::new(estimator).build(),
        )
        // Application-most, so the other interceptors see every RTCP packet first.
        .with(Slot::from(14_000), KeyframeRequests::default());
    let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
    let (gathered_tx, mut gathered) = watch::channel(false);
    let (channels_tx, channels) = mpsc::channel(4);
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Events {
            state: state_tx,
            gathered: gathered_tx,
            channels: channels_tx,
        }))
        .with_udp_addrs(vec![format!("{local_ip}:0")])
        .build()
        .await
        .map_err(internal)?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    let (video, video_ssrc) = local_track(RtpCodecKind::Video, &video_codec)?;
    let (audio, audio_ssrc) = local_track(RtpCodecKind::Audio, &audio_codec)?;
    let result = async {
        let video_sender = pc
            .add_track(Arc::clone(&video) as Arc<dyn TrackLocal>)
            .await
            .map_err(internal)?;
        let audio_sender = pc
            .add_track(Arc::clone(&audio) as Arc<dyn TrackLocal>)
            .await
            .map_err(internal)?;
        let offer = RTCSessionDescription::offer(offer)
            .map_err(|e| WebRtcError::Wire(WireError::BadOffer(leak_reason(&e))))?;
        pc.set_remote_description(offer)
            .await
            .map_err(|e| WebRtcError::Negotiation(e.to_string()))?;
        let answer = pc
            .create_answer(None)
            .await
            .map_err(|e| WebRtcError::Negotiation(e.to_string()))?;
        pc.set_local_description(answer)
            .await
            .map_err(|e| WebRtcError::Negotiation(e.to_string()))?;
        // Host candidates only (loopback or a public address): gathering takes milliseconds.
        let _ = tokio::time::timeout(Duration::from_secs(2), gathered.wait_for(|g| *g)).await;
        let answer = pc
            .local_description()
            .await
            .ok_or_else(|| internal("no local description after set_local_description"))?
            .sdp;
        if !answer.contains("H264") {
            return Err(WebRtcError::Negotiation(
                "the offer has no H.264 (constrained baseline 42e01f or high 640c1f, packetization-mode=1) this edge can send".into(),
            ));
        }
        Ok(Wiring {
            answer,
            gathered: gathered.clone(),
            state,
            channels,
            video,
            video_sender,
            video_ssrc,
            audio,
            audio_sender,
            audio_ssrc,
            estimate,
        })
    }
    .await;
    match result {
        Ok(w) => Ok((pc, w)),
        Err(e) => {
            let _ = pc.close().await;
            Err(e)
        }
    }
}

/// The SDP parser's errors are not `'static` strings; the reason is short and finite, so map
/// it to one of a few fixed sentences.
fn leak_reason(e: &webrtc::error::Error) -> &'static str {
    let text = e.to_string();
    if text.contains("ufrag") || text.contains("pwd") {
        "its ICE credentials are missing or invalid"
    } else if text.contains("fingerprint") {
        "its DTLS fingerprint is missing or invalid"
    } else {
        "the SDP parser refused it"
    }
}

/// RTP state of one outgoing stream: the session PTS maps to the RTP clock, so audio and video
/// share one timeline (RTCP sender reports tie both to NTP).
struct RtpOut {
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    pt: u8,
    clock: u64,
    base: u32,
    seq: u16,
}

impl RtpOut {
    fn new(track: Arc<TrackLocalStaticRTP>, ssrc: u32, pt: u8, clock: u64) -> Self {
        let r = random_bytes::<6>().unwrap_or([0; 6]);
        Self {
            track,
            ssrc,
            pt,
            clock,
            base: u32::from_le_bytes([r[0], r[1], r[2], r[3]]),
            seq: u16::from_le_bytes([r[4], r[5]]),
        }
    }

    fn timestamp(&self, pts: Duration) -> u32 {
        // Wraps like RTP time does.
        #[allow(
            clippy::cast_possible_truncation,
            reason = "RTP timestamps wrap at 2^32"
        )]
        let t = (pts.as_micros() as u64).wrapping_mul(self.clock) / 1_000_000;
        #[allow(
            clippy::cast_possible_truncation,
            reason = "RTP timestamps wrap at 2^32"
        )]
        self.base.wrapping_add(t as u32)
    }

    async fn send(
        &mut self,
        payloads: Vec<bytes::Bytes>,
        pts: Duration,
        playout_delay_id: Option<u8>,
        marker_on_last: bool,
    ) -> Result<(), webrtc::error::Error> {
        let timestamp = self.timestamp(pts);
        let n = payloads.len();
        for (i, payload) in payloads.into_iter().enumerate() {
            let mut header = rtc::rtp::header::Header {
                version: 2,
                marker: marker_on_last && i + 1 == n,
                payload_type: self.pt,
                sequence_number: self.seq,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            };
            if let Some(id) = playout_delay_id {
                // min = 0, max = 0 (12 bits each): render as soon as decoded.
                header.set_extension(id, bytes::Bytes::from_static(&[0, 0, 0]))?;
            }
            self.seq = self.seq.wrapping_add(1);
            self.track
                .write_rtp(rtc::rtp::packet::Packet { header, payload })
                .await?;
        }
        Ok(())
    }
}

async fn negotiated_pt(sender: &Arc<dyn RtpSender>, fallback: u8) -> u8 {
    match sender.get_parameters().await {
        Ok(p) => p
            .rtp_parameters
            .codecs
            .first()
            .map_or(fallback, |c| c.payload_type),
        Err(_) => fallback,
    }
}

async fn extension_id(sender: &Arc<dyn RtpSender>, uri: &str) -> Option<u8> {
    let params = sender.get_parameters().await.ok()?;
    params
        .rtp_parameters
        .header_extensions
        .iter()
        .find(|e| e.uri == uri)
        .and_then(|e| u8::try_from(e.id).ok())
}

/// Reads one data channel until it closes, forwarding inputs to the peer's task.
async fn read_channel(
    channel: Arc<dyn DataChannel>,
    label: String,
    inputs: mpsc::Sender<Control>,
    peer: Arc<Peer>,
) {
    while let Some(event) = channel.poll().await {
        match event {
            DataChannelEvent::OnMessage(msg) => match InputMessage::decode(&msg.data) {
                Ok(m) => {
                    peer.counters.inputs.fetch_add(1, Ordering::Relaxed);
                    let ctl = Control::Input {
                        seq: m.seq,
                        event: m.event,
                    };
                    if inputs.send(ctl).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let n = peer.counters.garbage.fetch_add(1, Ordering::Relaxed) + 1;
                    // Rate-limited: a flood of garbage must not flood the log.
                    if n.is_power_of_two() {
                        warn!(channel = %label, garbage = n, error = %e, "dropped a data-channel message");
                    }
                }
            },
            DataChannelEvent::OnClose => return,
            _ => {}
        }
    }
}

/// Forwards keyframe requests from the receiver's RTCP.
async fn read_rtcp(track: Arc<TrackLocalStaticRTP>, ctl: mpsc::Sender<Control>, peer: Arc<Peer>) {
    while let Some(event) = track.poll().await {
        let TrackLocalEvent::OnRtcpPacket(_) = event else {
            continue;
        };
        peer.counters
            .keyframe_requests
            .fetch_add(1, Ordering::Relaxed);
        if ctl.send(Control::RequestKeyframe).await.is_err() {
            return;
        }
    }
}

fn is_gone(state: RTCPeerConnectionState) -> bool {
    matches!(
        state,
        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
    )
}

/// The peer's life: connect, stream, forward inputs and acks, then end the session.
#[allow(
    clippy::too_many_lines,
    reason = "one select loop reads best in one piece"
)]
async fn run_peer(peer: &Arc<Peer>, session: SessionHandle, mut w: Wiring, session_kbps: u32) {
    let connected = tokio::select! {
        () = peer.stop.notified() => false,
        r = tokio::time::timeout(CONNECT_TIMEOUT, w.state.wait_for(|s| {
            *s == RTCPeerConnectionState::Connected || is_gone(*s)
        })) => matches!(r, Ok(Ok(s)) if *s == RTCPeerConnectionState::Connected),
    };
    if !connected {
        info!("peer did not connect; ending its session");
        end_session(session).await;
        return;
    }
    let video_pt = negotiated_pt(&w.video_sender, VIDEO_PT).await;
    let audio_pt = negotiated_pt(&w.audio_sender, AUDIO_PT).await;
    let playout_delay = extension_id(&w.video_sender, PLAYOUT_DELAY_URI).await;
    info!(
        video_pt,
        audio_pt,
        playout_delay = ?playout_delay,
        "peer connected; streaming"
    );
    let mut video = RtpOut::new(Arc::clone(&w.video), w.video_ssrc, video_pt, 90_000);
    let mut audio = RtpOut::new(Arc::clone(&w.audio), w.audio_ssrc, audio_pt, 48_000);
    let mut payloader = H264Payloader::default();
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Control>(1024);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(read_rtcp(
        Arc::clone(&w.video),
        ctl_tx.clone(),
        Arc::clone(peer),
    ));
    let mut media = session.subscribe();
    let _ = session.send(Control::RequestKeyframe);
    let mut acks = session.acks();
    let mut control: Option<Arc<dyn DataChannel>> = None;
    let mut started = false;
    let mut vanished_at: Option<tokio::time::Instant> = None;
    let mut rate = EncoderRate::new(session_kbps);
    let mut rate_tick = tokio::time::interval(RATE_INTERVAL);
    rate_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = vanished_at.map(|t| t + VANISHED_GRACE);
        tokio::select! {
            () = peer.stop.notified() => {
                info!("peer deleted");
                break;
            }
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                info!("peer vanished (ICE disconnected); freeing its session");
                break;
            }
            changed = w.state.changed() => {
                if changed.is_err() {
                    break;
                }
                let state = *w.state.borrow_and_update();
                if is_gone(state) {
                    info!(%state, "peer connection ended");
                    break;
                }
                vanished_at = (state == RTCPeerConnectionState::Disconnected)
                    .then(tokio::time::Instant::now);
            }
            Some(channel) = w.channels.recv() => {
                let label = channel.label().await.unwrap_or_default();
                debug!(%label, "data channel opened");
                if label == "control" {
                    control = Some(Arc::clone(&channel));
                }
                if label == "input" || label == "control" {
                    tasks.spawn(read_channel(channel, label, ctl_tx.clone(), Arc::clone(peer)));
                } else {
                    warn!(%label, "unknown data channel: this edge reads `input` and `control`");
                }
            }
            _ = rate_tick.tick() => {
                // Until the first feedback the estimate is a guess: leave the encoder alone.
                if w.estimate.feedbacks() == 0 {
                    continue;
                }
                if let Some(kbps) = rate.on_estimate(w.estimate.bps()) {
                    debug!(kbps, estimate = w.estimate.bps(), "encoder bitrate follows the estimate");
                    peer.counters.encoder_kbps.store(u64::from(kbps), Ordering::Relaxed);
                    peer.counters.bitrate_changes.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = session.send(Control::SetBitrate { kbps }) {
                        warn!(error = %e, "session refused a bitrate change");
                    }
                }
            }
            Some(ctl) = ctl_rx.recv() => {
                if let Err(e) = session.send(ctl) {
                    warn!(error = %e, "session refused a control message");
                    if matches!(e, crate::session::SessionError::Ended(_)) {
                        break;
                    }
                }
            }
            changed = acks.changed() => {
                if changed.is_err() {
                    break;
                }
                let ack = *acks.borrow_and_update();
                if let Some(c) = &control {
                    let msg = AckMessage { applied: ack.applied, committed: ack.committed };
                    if let Ok(text) = serde_json::to_string(&msg) {
                        let _ = c.try_send_text(&text).await;
                    }
                }
            }
            packet = media.recv() => match packet {
                Ok(MediaPacket::Video(v)) => {
                    started |= v.keyframe;
                    if !started {
                        continue;
                    }
                    let data = bytes::Bytes::copy_from_slice(&v.data);
                    match payloader.payload(RTP_MTU, &data) {
                        Ok(payloads) => {
                            if let Err(e) = video.send(payloads, v.pts, playout_delay, true).await {
                                debug!(error = %e, "video write failed");
                            }
                            peer.counters.frames_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => warn!(frame = v.frame, error = %e, "cannot packetize an access unit"),
                    }
                }
                Ok(MediaPacket::Audio(a)) => {
                    if started {
                        let payload = bytes::Bytes::copy_from_slice(&a.data);
                        if let Err(e) = audio.send(vec![payload], a.pts, None, false).await {
                            debug!(error = %e, "audio write failed");
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(lost = n, "peer fell behind the session; asking for a keyframe");
                    started = false;
                    let _ = session.send(Control::RequestKeyframe);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    info!("session ended");
                    break;
                }
            },
        }
    }
    drop(media);
    tasks.abort_all();
    end_session(session).await;
}

async fn end_session(session: SessionHandle) {
    let id = session.id().to_owned();
    match tokio::task::spawn_blocking(move || session.end()).await {
        Ok(Ok(summary)) => info!(%id, frames = summary.frames, "WHEP session ended"),
        Ok(Err(e)) => warn!(%id, error = %e, "WHEP session had failed"),
        Err(e) => warn!(%id, error = %e, "ending the WHEP session panicked"),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
pub fn random_hex() -> std::io::Result<String> {
    Ok(random_bytes::<16>()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
