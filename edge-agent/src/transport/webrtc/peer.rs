//! One peer's task: waits for ICE and DTLS, subscribes to the session's media and sends it as
//! RTP (H.264 with playout delay 0, Opus on the same clock), forwards inputs from the data
//! channels and keyframe requests from RTCP, sends acks, follows the congestion controller's
//! estimate with the encoder, and ends the session when the player leaves.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use edgeplay_media::session::{Control, MediaPacket, SessionError, SessionHandle};
use edgeplay_protocol::lifecycle::EndReason;
use edgeplay_protocol::whep::{AckMessage, InputMessage};
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, warn};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::RTCPeerConnectionState;
use webrtc::rtp_transceiver::RtpSender;

use super::{
    AUDIO_PT, CONNECT_TIMEOUT, PLAYOUT_DELAY_URI, Peer, RATE_INTERVAL, RTP_MTU, VANISHED_GRACE,
    VIDEO_PT, random_bytes,
};
use crate::transport::webrtc::negotiate::Wiring;
use crate::transport::webrtc::rate::EncoderRate;

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

/// How a peer's session ended, for the broker's summary.
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerEnd {
    pub(super) reason: EndReason,
    pub(super) frames: u64,
    pub(super) bytes: u64,
}

/// The peer's life: connect, stream, forward inputs and acks, then end the session.
#[allow(
    clippy::too_many_lines,
    reason = "one select loop reads best in one piece"
)]
pub(super) async fn run_peer(
    peer: &Arc<Peer>,
    session: SessionHandle,
    mut w: Wiring,
    session_kbps: u32,
    idle: Option<std::time::Duration>,
) -> PeerEnd {
    let connected = tokio::select! {
        () = peer.stop.notified() => false,
        r = tokio::time::timeout(CONNECT_TIMEOUT, w.state.wait_for(|s| {
            *s == RTCPeerConnectionState::Connected || is_gone(*s)
        })) => matches!(r, Ok(Ok(s)) if *s == RTCPeerConnectionState::Connected),
    };
    if !connected {
        info!("peer did not connect; ending its session");
        return end_session(session, EndReason::PlayerLeft).await;
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
    let mut reason = EndReason::PlayerLeft;
    // The player's last input: a session without one for the idle time ends.
    let mut last_input = tokio::time::Instant::now();
    loop {
        let deadline = vanished_at.map(|t| t + VANISHED_GRACE);
        let idle_at = idle.map(|d| last_input + d);
        tokio::select! {
            () = crate::transport::sleep_until_or_never(idle_at) => {
                info!("no input from the player for the idle time: ending the session");
                reason = EndReason::Idle;
                break;
            }
            () = peer.stop.notified() => {
                info!("peer deleted");
                break;
            }
            () = crate::transport::sleep_until_or_never(deadline) => {
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
                if matches!(ctl, Control::Input { .. }) {
                    last_input = tokio::time::Instant::now();
                }
                if let Err(e) = session.send(ctl) {
                    warn!(error = %e, "session refused a control message");
                    if matches!(e, SessionError::Ended(_)) {
                        reason = EndReason::Failed;
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
                    reason = EndReason::Failed;
                    break;
                }
            },
        }
    }
    drop(media);
    tasks.abort_all();
    end_session(session, reason).await
}

async fn end_session(session: SessionHandle, reason: EndReason) -> PeerEnd {
    let id = session.id().to_owned();
    let failed = PeerEnd {
        reason: EndReason::Failed,
        frames: 0,
        bytes: 0,
    };
    match tokio::task::spawn_blocking(move || session.end()).await {
        Ok(Ok(summary)) => {
            info!(%id, frames = summary.frames, "WHEP session ended");
            PeerEnd {
                reason,
                frames: u64::from(summary.frames),
                bytes: summary.bytes,
            }
        }
        Ok(Err(e)) => {
            warn!(%id, error = %e, "WHEP session had failed");
            failed
        }
        Err(e) => {
            warn!(%id, error = %e, "ending the WHEP session panicked");
            failed
        }
    }
}
