//! A `webrtc`-crate client peer against `edge-agent run --dev` on loopback, reading what the
//! edge really puts on the wire (after SRTP): the playout-delay extmap in the SDP answer and
//! its 3-byte value `00 00 00` on every video packet, the SPS of the first keyframe, a keyframe
//! after a PLI (and no more than the rate limit allows), transport-cc negotiated and the
//! encoder following the congestion controller fed by the client's TWCC feedback, garbage on
//! both data channels counted and dropped, trickle ICE and an ICE restart by PATCH with the
//! media flowing on, and the session freed within 10 s of the player vanishing without a word.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine,
};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use support::Edge;
use tokio::sync::{mpsc, watch};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, Registry,
    register_default_interceptors,
};

const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// What the test keeps of one received video RTP packet.
#[derive(Debug)]
struct VideoPacket {
    at: Instant,
    timestamp: u32,
    /// Every extension of the header, by id.
    extensions: Vec<(u8, Vec<u8>)>,
    payload: Vec<u8>,
}

struct Handler {
    state: watch::Sender<RTCPeerConnectionState>,
    gathered: watch::Sender<bool>,
    video: mpsc::UnboundedSender<VideoPacket>,
    video_track: watch::Sender<Option<(Arc<dyn TrackRemote>, u32)>>,
    audio_packets: Arc<std::sync::atomic::AtomicU64>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let kind = track.kind().await;
        let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
        if kind == RtpCodecKind::Video {
            let _ = self.video_track.send(Some((Arc::clone(&track), ssrc)));
            let tx = self.video.clone();
            tokio::spawn(async move {
                while let Some(event) = track.poll().await {
                    if let TrackRemoteEvent::OnRtpPacket(p) = event {
                        let extensions = p
                            .header
                            .extensions
                            .iter()
                            .map(|e| (e.id, e.payload.to_vec()))
                            .collect();
                        let packet = VideoPacket {
                            at: Instant::now(),
                            timestamp: p.header.timestamp,
                            extensions,
                            payload: p.payload.to_vec(),
                        };
                        if tx.send(packet).is_err() {
                            return;
                        }
                    }
                }
            });
        } else {
            let n = Arc::clone(&self.audio_packets);
            tokio::spawn(async move {
                while let Some(event) = track.poll().await {
                    if matches!(event, TrackRemoteEvent::OnRtpPacket(_)) {
                        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    }
}

struct Client {
    pc: Arc<dyn PeerConnection>,
    state: watch::Receiver<RTCPeerConnectionState>,
    video: mpsc::UnboundedReceiver<VideoPacket>,
    video_track: watch::Receiver<Option<(Arc<dyn TrackRemote>, u32)>>,
    audio_packets: Arc<std::sync::atomic::AtomicU64>,
    input: Arc<dyn DataChannel>,
    control: Arc<dyn DataChannel>,
    offer: String,
}

/// A receive-only player like the browser's: H.264 42e01f + Opus, the playout-delay extension,
/// and the two data channels; returns once its offer holds every ICE candidate.
async fn client() -> Client {
    client_offering(&["42e01f"]).await
}

/// The same player offering H.264 with these profile-level-ids, in this order of preference.
async fn client_offering(profiles: &[&str]) -> Client {
    let mut media = MediaEngine::default();
    for (pt, profile) in (102u8..).step_by(2).zip(profiles) {
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: MIME_TYPE_H264.to_owned(),
                        clock_rate: 90_000,
                        channels: 0,
                        sdp_fmtp_line: format!(
                            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"
                        ),
                        rtcp_feedback: vec![],
                    },
                    payload_type: pt,
                },
                RtpCodecKind::Video,
            )
            .expect("H.264");
    }
    media
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_OPUS.to_owned(),
                    clock_rate: 48_000,
                    channels: 2,
                    sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                    rtcp_feedback: vec![],
                },
                payload_type: 111,
            },
            RtpCodecKind::Audio,
        )
        .expect("Opus");
    media
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: PLAYOUT_DELAY_URI.to_owned(),
            },
            RtpCodecKind::Video,
            None,
        )
        .expect("playout-delay");
    let registry = register_default_interceptors(Registry::new(), &mut media).expect("registry");
    let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
    let (gathered_tx, mut gathered) = watch::channel(false);
    let (video_tx, video) = mpsc::unbounded_channel();
    let (track_tx, video_track) = watch::channel(None);
    let audio_packets = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler {
            state: state_tx,
            gathered: gathered_tx,
            video: video_tx,
            video_track: track_tx,
            audio_packets: Arc::clone(&audio_packets),
        }))
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await
        .expect("client peer");
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        pc.add_transceiver_from_kind(
            kind,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await
        .expect("transceiver");
    }
    let input = pc
        .create_data_channel(
            "input",
            Some(RTCDataChannelInit {
                ordered: false,
                max_retransmits: Some(0),
                ..Default::default()
            }),
        )
        .await
        .expect("input channel");
    let control = pc
        .create_data_channel("control", None)
        .await
        .expect("control channel");
    let offer = pc.create_offer(None).await.expect("offer");
    pc.set_local_description(offer).await.expect("local offer");
    let _ = tokio::time::timeout(Duration::from_secs(5), gathered.wait_for(|g| *g)).await;
    let offer = pc.local_description().await.expect("offer").sdp;
    Client {
        pc,
        state,
        video,
        video_track,
        audio_packets,
        input,
        control,
        offer,
    }
}

/// The NAL unit types an H.264 RTP payload starts (single NAL, STAP-A, FU-A start).
fn nal_types(payload: &[u8]) -> Vec<u8> {
    let Some(&first) = payload.first() else {
        return vec![];
    };
    match first & 0x1f {
        24 => {
            let mut types = vec![];
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                if let Some(&h) = rest.get(2) {
                    types.push(h & 0x1f);
                }
                rest = rest.get(2 + len..).unwrap_or_default();
            }
            types
        }
        28 => match payload.get(1) {
            Some(&fu) if fu & 0x80 != 0 => vec![fu & 0x1f],
            _ => vec![],
        },
        t => vec![t],
    }
}

/// The SPS NAL (header byte first) carried in a payload, if any.
fn sps(payload: &[u8]) -> Option<Vec<u8>> {
    match payload.first()? & 0x1f {
        7 => Some(payload.to_vec()),
        24 => {
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let nal = rest.get(2..2 + len)?;
                if nal.first().is_some_and(|h| h & 0x1f == 7) {
                    return Some(nal.to_vec());
                }
                rest = &rest[2 + len..];
            }
            None
        }
        _ => None,
    }
}

fn is_keyframe_packet(p: &VideoPacket) -> bool {
    nal_types(&p.payload).iter().any(|&t| t == 5 || t == 7)
}

/// The first SPS among `packets` (there must be one), printed after `label`.
fn first_sps(packets: &[VideoPacket], label: &str) -> Vec<u8> {
    let sps = packets
        .iter()
        .find_map(|p| sps(&p.payload))
        .expect("an SPS in the first keyframe");
    eprintln!(
        "{label}SPS: profile_idc {} constraints {:#04x} level_idc {}",
        sps[1], sps[2], sps[3]
    );
    sps
}

/// Receives video packets until `until` or `deadline`; returns them.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<VideoPacket>,
    deadline: Duration,
    mut until: impl FnMut(&[VideoPacket]) -> bool,
) -> Vec<VideoPacket> {
    let end = tokio::time::Instant::now() + deadline;
    let mut got = vec![];
    while !until(&got) {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some(p)) => got.push(p),
            Ok(None) | Err(_) => break,
        }
    }
    got
}

async fn wait_open(channel: &Arc<dyn DataChannel>) {
    let opened = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = channel.poll().await {
            if matches!(event, DataChannelEvent::OnOpen) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(opened, Ok(true), "a data channel did not open");
}

fn stats(edge: &Edge, location: &str, secret: &str) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {secret}");
    let (status, _, body) = edge.request("GET", location, &[("Authorization", &auth)], b"");
    (status, serde_json::from_str(&body).unwrap_or_default())
}

/// The client's own runtime: shutting it down silences the peer without DTLS close or DELETE,
/// as a tab killed or a network dropped would.
fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("client runtime")
}

/// The edge's 201 to a WHEP offer: the SDP answer, the headers, the resource and its secret.
struct Posted {
    answer: String,
    headers: Vec<(String, String)>,
    location: String,
    secret: String,
}

/// Posts `offer` to the edge's WHEP endpoint with its dev token; the edge must create the
/// session.
fn post_offer(edge: &Edge, offer: &str) -> Posted {
    let auth = format!("Bearer {}", edge.token);
    let (status, headers, answer) = edge.request(
        "POST",
        "/v1/whep",
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &auth),
        ],
        offer.as_bytes(),
    );
    assert_eq!(status, 201, "{answer}");
    let location = support::header(&headers, "location")
        .expect("Location")
        .to_owned();
    let secret = support::header(&headers, "edgeplay-session-secret")
        .expect("secret")
        .to_owned();
    Posted {
        answer,
        headers,
        location,
        secret,
    }
}

/// The video m-section of an SDP answer.
fn video_section(answer: &str) -> &str {
    answer
        .split("m=")
        .find(|s| s.starts_with("video"))
        .expect("a video m-section in the answer")
}

impl Client {
    /// Applies the edge's `answer` and waits (at most 20 s) for the peer to connect.
    async fn connect(&mut self, answer: &str) {
        self.pc
            .set_remote_description(
                RTCSessionDescription::answer(answer.to_owned()).expect("answer"),
            )
            .await
            .expect("remote answer");
        let connected = tokio::time::timeout(
            Duration::from_secs(20),
            self.state
                .wait_for(|s| *s == RTCPeerConnectionState::Connected),
        )
        .await;
        assert!(matches!(connected, Ok(Ok(_))), "the peer did not connect");
    }
}

/// Sends a picture loss indication for the media `ssrc` on `track`'s RTCP.
async fn send_pli(track: &Arc<dyn TrackRemote>, ssrc: u32) {
    track
        .write_rtcp(vec![Box::new(PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: ssrc,
        })])
        .await
        .expect("PLI");
}

/// One peer's whole life against one edge (a session costs a render + encode loop, so the
/// behaviours share it), in order: answer, RTP, SPS, PLI, bitrate, garbage, PATCH, vanish.
#[test]
#[allow(clippy::too_many_lines, reason = "one session's life, step by step")]
fn webrtc_rs_peer_sees_playout_delay_keyframes_on_pli_counted_garbage_and_is_freed_on_vanish() {
    let edge = Edge::start();
    let rt = client_runtime();
    let mut c = rt.block_on(client());
    assert!(
        c.offer.contains(PLAYOUT_DELAY_URI),
        "client offer: {}",
        c.offer
    );

    let Posted {
        answer,
        headers,
        location,
        secret,
    } = post_offer(&edge, &c.offer);

    // 1. The answer registers the extension on the video section.
    let video_section = video_section(&answer);
    let ext_id: u8 = video_section
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("a=extmap:")?;
            let (id, uri) = rest.split_once(' ')?;
            (uri.trim() == PLAYOUT_DELAY_URI).then(|| id.split('/').next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no playout-delay extmap in the answer:\n{answer}"));
    assert!(
        video_section.contains("level-asymmetry-allowed=1"),
        "{video_section}"
    );
    assert!(
        video_section.contains("profile-level-id=42e01f") && !video_section.contains("640c1f"),
        "only baseline offered: baseline answered\n{video_section}"
    );
    // transport-cc is negotiated: the extension and the feedback type on the video codec.
    assert!(
        video_section
            .lines()
            .any(|l| l.starts_with("a=extmap:") && l.trim_end().ends_with(TRANSPORT_CC_URI)),
        "no transport-cc extmap in the answer:\n{video_section}"
    );
    assert!(
        video_section
            .lines()
            .any(|l| l.starts_with("a=rtcp-fb:") && l.trim_end().ends_with(" transport-cc")),
        "no transport-cc feedback in the answer:\n{video_section}"
    );

    rt.block_on(c.connect(&answer));

    // 2. Every video packet carries the extension, 3 bytes, min = max = 0; the stream opens
    // with a keyframe whose SPS is constrained baseline at the level of 720p60 (3.2).
    let first = rt.block_on(collect(&mut c.video, Duration::from_secs(30), |got| {
        got.len() >= 200
    }));
    assert!(first.len() >= 200, "only {} video packets", first.len());
    for p in &first {
        let value = p
            .extensions
            .iter()
            .find(|(id, _)| *id == ext_id)
            .map(|(_, v)| v.as_slice());
        assert_eq!(
            value,
            Some(&[0u8, 0, 0][..]),
            "packet ts {} extensions {:?}",
            p.timestamp,
            p.extensions
        );
    }
    assert!(
        is_keyframe_packet(&first[0]),
        "the stream opens with a keyframe"
    );
    let sps = first_sps(&first, "");
    assert_eq!(sps[1], 66, "profile_idc: baseline");
    assert_eq!(sps[2] & 0x40, 0x40, "constraint_set1: constrained baseline");
    assert_eq!(sps[3], 32, "level_idc: 3.2 for 720p60");
    let frames = first
        .iter()
        .map(|p| p.timestamp)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert!(frames >= 2, "several frames, one RTP timestamp each");
    assert!(
        c.audio_packets.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "Opus arrives on the audio track"
    );

    // 3. PLI → a keyframe; a burst of 20 PLIs is rate-limited, not 20 keyframes.
    let (track, ssrc) = c.video_track.borrow().clone().expect("video track");
    rt.block_on(async {
        // Drop what is queued so the keyframe counted is the PLI's.
        while c.video.try_recv().is_ok() {}
        let sent = Instant::now();
        send_pli(&track, ssrc).await;
        let got = collect(&mut c.video, Duration::from_secs(5), |got| {
            got.last().is_some_and(is_keyframe_packet)
        })
        .await;
        let key = got
            .iter()
            .find(|p| is_keyframe_packet(p))
            .expect("a keyframe after the PLI");
        eprintln!(
            "PLI → keyframe in {:.0} ms",
            (key.at - sent).as_secs_f64() * 1e3
        );

        while c.video.try_recv().is_ok() {}
        for _ in 0..20 {
            send_pli(&track, ssrc).await;
        }
        let window = Duration::from_secs(1);
        let got = collect(&mut c.video, window, |_| false).await;
        let keyframes = got
            .iter()
            .filter(|p| is_keyframe_packet(p))
            .map(|p| p.timestamp)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        eprintln!("20 PLIs in a burst → {keyframes} keyframes in the next second");
        // The session defers requests inside KEYFRAME_MIN_INTERVAL (250 ms) and merges them.
        assert!(
            (1..=2).contains(&keyframes),
            "{keyframes} keyframes for a burst of 20 PLIs"
        );
    });
    let (status, s) = stats(&edge, &location, &secret);
    assert_eq!(status, 200, "{s}");
    assert!(
        s["keyframe_requests"].as_u64().unwrap_or(0) >= 21,
        "PLIs counted: {s}"
    );

    // 3b. The player's TWCC feedback drives the congestion controller, and the encoder follows
    // its estimate: it starts at half the session's 6000 kbit/s and climbs on an empty path.
    let deadline = Instant::now() + Duration::from_secs(20);
    let s = loop {
        let (_, s) = stats(&edge, &location, &secret);
        let changes = s["bitrate_changes"].as_u64().unwrap_or(0);
        if changes >= 2 || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("congestion control: {s}");
    assert!(
        s["twcc_feedbacks"].as_u64().unwrap_or(0) > 0,
        "TWCC feedback read: {s}"
    );
    assert!(
        s["bitrate_changes"].as_u64().unwrap_or(0) >= 2,
        "encoder moved: {s}"
    );
    let kbps = s["encoder_kbps"].as_u64().unwrap_or(0);
    assert!((100..=6000).contains(&kbps), "{s}");
    let estimate = s["estimate_bps"].as_f64().unwrap_or(0.0);
    assert!(estimate > 100_000.0, "{s}");
    let (status, _, metrics) = edge.request("GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    let metric = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{metrics}"))
    };
    assert!(metric("edgeplay_edge_video_bitrate_changes_total ") >= 2.0);
    let applied = metric("edgeplay_edge_video_bitrate_kbps ");
    // The session started the encoder at 6000; the controller's first word halves it.
    assert!(
        (100.0..6000.0).contains(&applied),
        "the encoder's own bitrate changed: {applied} kbit/s"
    );
    assert!(metric("edgeplay_edge_webrtc_estimate_bps ") > 100_000.0);

    // 4. Garbage on both channels is counted and dropped; a real input after it still applies.
    rt.block_on(async {
        wait_open(&c.control).await;
        wait_open(&c.input).await;
        for bad in [
            &b"\xff\xfe\x00"[..],
            b"{\"seq\":",
            b"{\"seq\":0,\"event\":{}}",
        ] {
            c.input
                .send(bytes::BytesMut::from(bad))
                .await
                .expect("send");
            c.control
                .send(bytes::BytesMut::from(bad))
                .await
                .expect("send");
        }
        c.control.send_text(&"x".repeat(4_000)).await.expect("send");
        // A real input after the garbage is applied and acknowledged on "control".
        c.control
            .send_text(r#"{"seq":1,"event":{"type":"pointer_move","dx":3,"dy":0}}"#)
            .await
            .expect("send");
        let acked = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(event) = c.control.poll().await {
                if let DataChannelEvent::OnMessage(m) = event {
                    let ack: serde_json::Value =
                        serde_json::from_slice(&m.data).unwrap_or_default();
                    if ack["applied"] == 1 {
                        return true;
                    }
                }
            }
            false
        })
        .await;
        assert_eq!(acked, Ok(true), "no ack of input 1 on the control channel");
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let (_, s) = stats(&edge, &location, &secret);
        if s["garbage"].as_u64() == Some(7) || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(s["garbage"], 7, "garbage counted: {s}");
    assert_eq!(s["inputs"], 1, "only the real input taken for one: {s}");

    // 5. PATCH: a trickle with the current ufrag is taken (204); a foreign ufrag without a
    // password, garbage, bad credentials and a wrong type are refused with the reason; then an
    // ICE restart: the client's new credentials in, the edge's new ones out (200), the old
    // ufrag is no longer the session's, and the media keeps flowing.
    let auth = format!("Bearer {secret}");
    let frag_type = ("Content-Type", "application/trickle-ice-sdpfrag");
    let first_attr = |sdp: &str, prefix: &str| {
        sdp.lines()
            .find_map(|l| l.trim_end().strip_prefix(prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {prefix} in {sdp}"))
    };
    let old_ufrag = first_attr(&c.offer, "a=ice-ufrag:");
    let mid = first_attr(&c.offer, "a=mid:");
    let candidate = first_attr(&c.offer, "a=candidate:");
    let patch_if = |body: &[u8], content_type: &str, if_match: &str| {
        edge.request(
            "PATCH",
            &location,
            &[
                ("Content-Type", content_type),
                ("Authorization", &auth),
                ("If-Match", if_match),
            ],
            body,
        )
    };
    let patch = |body: &[u8], content_type: &str| patch_if(body, content_type, "*");
    // The ICE session's entity tag (RFC 9725 section 4.3.1) came with the 201.
    let etag = support::header(&headers, "etag")
        .expect("an ETag with the 201")
        .to_owned();
    let trickle = format!("a=ice-ufrag:{old_ufrag}\r\na=mid:{mid}\r\na=candidate:{candidate}\r\n");
    let (status, _, body) = patch_if(trickle.as_bytes(), frag_type.1, &etag);
    assert_eq!(status, 204, "trickle with the current ufrag: {body}");
    let (status, _, body) = patch_if(trickle.as_bytes(), frag_type.1, "\"stale\"");
    assert_eq!(status, 412, "If-Match of another ICE session: {body}");
    for (bad, why) in [
        (&b"a=ice-ufrag:nope1234\r\n"[..], "a=ice-pwd"),
        (b"\xff\xfe", "UTF-8"),
        (b"a=ice-ufrag:x\r\n", "4 to 256"),
        (b"garbage\r\n", "x=value"),
    ] {
        let (status, _, body) = patch(bad, frag_type.1);
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert!(body.contains(why), "{bad:?}: {body}");
    }
    let (status, _, _) = patch(trickle.as_bytes(), "text/plain");
    assert_eq!(status, 415);

    let restart_offer = rt.block_on(async {
        c.pc.restart_ice().await.expect("restartIce");
        let offer = c.pc.create_offer(None).await.expect("restart offer");
        c.pc.set_local_description(offer)
            .await
            .expect("local restart offer");
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.pc.local_description().await.expect("restart offer").sdp
    });
    let new_ufrag = first_attr(&restart_offer, "a=ice-ufrag:");
    assert_ne!(new_ufrag, old_ufrag, "restartIce gives new credentials");
    let mut fragment = format!(
        "a=ice-ufrag:{new_ufrag}\r\na=ice-pwd:{}\r\na=mid:{mid}\r\n",
        first_attr(&restart_offer, "a=ice-pwd:")
    );
    for l in restart_offer
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
    {
        fragment.push_str(l.trim_end());
        fragment.push_str("\r\n");
    }
    let restarted = Instant::now();
    let (status, headers, body) = patch(fragment.as_bytes(), frag_type.1);
    assert_eq!(status, 200, "ICE restart: {body}");
    assert_eq!(
        support::header(&headers, "content-type"),
        Some("application/trickle-ice-sdpfrag")
    );
    let edge_frag = edgeplay_protocol::whep::parse_fragment(body.as_bytes()).expect("a fragment");
    let (edge_ufrag, edge_pwd) = (
        edge_frag.ufrag.clone().expect("the edge's new ufrag"),
        edge_frag.pwd.clone().expect("the edge's new pwd"),
    );
    assert_ne!(
        edge_ufrag,
        first_attr(&answer, "a=ice-ufrag:"),
        "the edge restarted with new credentials: {body}"
    );
    assert!(
        !edge_frag.candidates.is_empty(),
        "the edge's candidates: {body}"
    );
    let new_etag = support::header(&headers, "etag").expect("a new ETag");
    assert_eq!(new_etag, format!("\"{edge_ufrag}\""));
    assert_ne!(new_etag, etag);
    let new_answer = edgeplay_protocol::whep::restart_offer(
        &answer,
        &edge_ufrag,
        &edge_pwd,
        &edge_frag.candidates,
    )
    .expect("the restart answer");
    let after = rt.block_on(async {
        c.pc.set_remote_description(
            RTCSessionDescription::answer(new_answer).expect("restart answer"),
        )
        .await
        .expect("remote restart answer");
        while c.video.try_recv().is_ok() {}
        // Past the ICE agent's 5 s consent timeout: media on a pair whose credentials were
        // not taken would stop by then.
        collect(&mut c.video, Duration::from_secs(7), |_| false).await
    });
    let frames_after = after
        .iter()
        .map(|p| p.timestamp)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    eprintln!(
        "ICE restart: {} video packets ({frames_after} frames) in the {:.1} s after the PATCH",
        after.len(),
        restarted.elapsed().as_secs_f64()
    );
    let gap = after
        .windows(2)
        .map(|w| w[1].at - w[0].at)
        .max()
        .unwrap_or_default();
    let first = after.first().map(|p| p.at - restarted);
    eprintln!("  first packet {first:?} after the PATCH, largest gap {gap:?}");
    assert!(
        after.len() >= 200,
        "media after the ICE restart: {} packets",
        after.len()
    );
    let last = after.last().map_or(Duration::MAX, |p| p.at.elapsed());
    assert!(
        last < Duration::from_secs(1),
        "media still flows 7 s after the restart (last packet {last:?} ago)"
    );
    assert_eq!(
        *c.state.borrow(),
        RTCPeerConnectionState::Connected,
        "still connected after the restart"
    );
    // The old ufrag is no longer the session's: trickling with it is refused.
    let (status, _, body) = patch(trickle.as_bytes(), frag_type.1);
    assert_eq!(
        status, 400,
        "old-generation trickle after the restart: {body}"
    );
    let (status, _, body) = patch_if(b"a=end-of-candidates\r\n", frag_type.1, &etag);
    assert_eq!(
        status, 412,
        "the old ICE session's tag after the restart: {body}"
    );
    let (status, s) = stats(&edge, &location, &secret);
    assert_eq!(status, 200, "the session lives on: {s}");

    // 6. The player vanishes: no DELETE, no DTLS close; its session is freed within 10 s.
    rt.shutdown_background();
    std::mem::forget(c);
    let vanished = Instant::now();
    let freed = loop {
        let (status, _) = stats(&edge, &location, &secret);
        if status == 404 {
            break vanished.elapsed();
        }
        assert!(
            vanished.elapsed() < Duration::from_secs(15),
            "the session of a vanished player is still live after 15 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("vanished player freed in {:.1} s", freed.as_secs_f64());
    assert!(freed <= Duration::from_secs(10), "freed in {freed:?}");
}

/// A client that prefers high (640c1f first, 42e01f after) gets high: the answer names 640c1f
/// and the SPS on the wire says profile_idc 100 (no B-frames: the encoder test checks the slices).
#[test]
fn a_client_preferring_high_profile_gets_high_profile() {
    let edge = Edge::start();
    let rt = client_runtime();
    let mut c = rt.block_on(client_offering(&["640c1f", "42e01f"]));
    let Posted {
        answer,
        location,
        secret,
        ..
    } = post_offer(&edge, &c.offer);
    let video_section = video_section(&answer);
    assert!(
        video_section.contains("profile-level-id=640c1f") && !video_section.contains("42e01f"),
        "high answered:\n{video_section}"
    );
    rt.block_on(c.connect(&answer));
    let got = rt.block_on(collect(&mut c.video, Duration::from_secs(30), |got| {
        got.iter().any(|p| sps(&p.payload).is_some())
    }));
    let sps = first_sps(&got, "high: ");
    assert_eq!(sps[1], 100, "profile_idc: high");
    assert_eq!(sps[3], 32, "level_idc: 3.2 for 720p60");
    let (status, _, _) = edge.request(
        "DELETE",
        &location,
        &[("Authorization", &format!("Bearer {secret}"))],
        b"",
    );
    assert_eq!(status, 200);
    rt.block_on(async {
        let _ = c.pc.close().await;
    });
}
