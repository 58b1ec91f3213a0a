//! Setting up one peer connection: the codecs the edge sends (H.264 in the client's profile,
//! Opus), the playout-delay extension, the interceptor chain (transport-cc numbering and
//! congestion control feeding [`Estimate`], PLI/FIR marked for the application), the offer and
//! the answer with every host candidate.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use edgeplay_protocol::whep::{H264Profile, WireError};
use rtc::interceptor::{
    Attribute, CongestionControlBuilder, Interceptor, Packet, Slot, StreamInfo, TaggedPacket,
    TwccSenderBuilder,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    Registry, register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

use super::{
    AUDIO_PT, PLAYOUT_DELAY_URI, VIDEO_PT, WebRtcError, h264_fmtp, internal, random_bytes,
};
use crate::transport::webrtc::rate::{Estimate, estimator};

/// What the peer's task needs once the answer is out.
pub(super) struct Wiring {
    pub(super) answer: String,
    pub(super) gathered: watch::Receiver<bool>,
    pub(super) state: watch::Receiver<RTCPeerConnectionState>,
    pub(super) channels: mpsc::Receiver<Arc<dyn DataChannel>>,
    pub(super) video: Arc<TrackLocalStaticRTP>,
    pub(super) video_sender: Arc<dyn RtpSender>,
    pub(super) video_ssrc: u32,
    pub(super) audio: Arc<TrackLocalStaticRTP>,
    pub(super) audio_sender: Arc<dyn RtpSender>,
    pub(super) audio_ssrc: u32,
    pub(super) estimate: Arc<Estimate>,
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

pub(super) async fn negotiate(
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
    let estimator = estimator(session_kbps);
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
        answer_and_gather(pc.as_ref(), offer, &mut gathered).await?;
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

/// Answers `offer` on `pc` and waits (at most 2 s) for ICE gathering to complete, so that the
/// local description carries every candidate. Host candidates only (loopback or a public
/// address): gathering takes milliseconds.
pub(super) async fn answer_and_gather(
    pc: &dyn PeerConnection,
    offer: RTCSessionDescription,
    gathered: &mut watch::Receiver<bool>,
) -> Result<(), WebRtcError> {
    let negotiation = |e: webrtc::error::Error| WebRtcError::Negotiation(e.to_string());
    pc.set_remote_description(offer)
        .await
        .map_err(negotiation)?;
    let answer = pc.create_answer(None).await.map_err(negotiation)?;
    pc.set_local_description(answer)
        .await
        .map_err(negotiation)?;
    let _ = tokio::time::timeout(Duration::from_secs(2), gathered.wait_for(|g| *g)).await;
    Ok(())
}
