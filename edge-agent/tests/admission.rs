//! Exact capacity: `edge-agent run --dev --max-sessions 2` as a process on loopback, with two
//! WHEP offers (real `webrtc`-crate client peers) and two QUIC joins (the SDK) sent at once.
//! Exactly two are admitted, whatever the mix; the others are refused before any session
//! starts: 503 with `Retry-After` over HTTP, the SDK's `ClientError::EdgeFull` (close code
//! `EDGE_FULL`) over QUIC, and so is any join while the edge is full, whichever transport its
//! sessions use. Once an admitted session ends, a new join gets in, and every slot comes back
//! once every session has ended.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeplay_client::{ClientError, Session};
use edgeplay_edge::admission::RETRY_AFTER_SECS;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine,
};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use support::procs::{Proc, Reply, http};
use tokio::sync::watch;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, Registry, register_default_interceptors,
};

const MAX: usize = 2;

/// `edge-agent run --dev` on free loopback ports: the process, its HTTP and QUIC addresses,
/// the certificate fingerprint and the dev token.
struct DevEdge {
    _proc: Proc,
    http: SocketAddr,
    quic: SocketAddr,
    fingerprint: [u8; 32],
    token: String,
}

impl DevEdge {
    fn start(max_sessions: usize) -> Self {
        let proc = Proc::start(&mut support::dev_edge_command(max_sessions));
        // "ADDR certificate sha256 FINGERPRINT token TOKEN", printed before the HTTP line.
        let quic = proc.line("edge-agent --dev QUIC (edgeplay/1) on");
        let words: Vec<&str> = quic.split_whitespace().collect();
        let [addr, "certificate", "sha256", fingerprint, "token", token] = words[..] else {
            panic!("unexpected QUIC line `{quic}`");
        };
        let http = proc.line("edge-agent --dev serving on http://");
        Self {
            http: http.parse().expect("HTTP address"),
            quic: addr.parse().expect("QUIC address"),
            fingerprint: edgeplay_client::parse_fingerprint(fingerprint).expect("fingerprint"),
            token: token.to_owned(),
            _proc: proc,
        }
    }

    /// A WHEP offer with the dev token, from a blocking thread.
    async fn whep(&self, offer: String) -> Reply {
        let (addr, auth) = (self.http, format!("Bearer {}", self.token));
        tokio::task::spawn_blocking(move || {
            let headers = [
                ("Content-Type", "application/sdp"),
                ("Authorization", auth.as_str()),
            ];
            http(addr, "POST", "/v1/whep", &headers, &offer)
        })
        .await
        .expect("the WHEP request runs")
    }

    /// Ends a WHEP session by its 201's `Location` and secret.
    async fn whep_delete(&self, created: &Reply) {
        let location = header(created, "location").expect("a Location").to_owned();
        let auth = format!(
            "Bearer {}",
            header(created, "edgeplay-session-secret").expect("a secret")
        );
        let addr = self.http;
        let (status, _, body) = tokio::task::spawn_blocking(move || {
            http(addr, "DELETE", &location, &[("Authorization", &auth)], "")
        })
        .await
        .expect("the DELETE runs");
        assert_eq!(status, 200, "{body}");
    }

    /// A QUIC join through the SDK (software decoding: no hardware probe).
    async fn quic(&self) -> Result<Session, ClientError> {
        support::procs::join_quic(self.quic, self.fingerprint, self.token.as_bytes()).await
    }

    /// The value of the metric sample that starts with `name` (labels included).
    async fn metric(&self, name: &str) -> i64 {
        let addr = self.http;
        let (status, _, text) =
            tokio::task::spawn_blocking(move || http(addr, "GET", "/metrics", &[], ""))
                .await
                .expect("the metrics request runs");
        assert_eq!(status, 200);
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply
        .1
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

struct Gathered(watch::Sender<bool>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Gathered {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.0.send(true);
        }
    }
}

/// A receive-only player like the browser's (H.264 42e01f and Opus, two data channels) and
/// its offer with every ICE candidate. Kept alive, it connects to the edge that answers it.
async fn whep_player() -> (Arc<dyn PeerConnection>, String) {
    let mut media = MediaEngine::default();
    for (kind, mime, clock_rate, channels, fmtp, pt) in [
        (
            RtpCodecKind::Video,
            MIME_TYPE_H264,
            90_000,
            0,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            102,
        ),
        (
            RtpCodecKind::Audio,
            MIME_TYPE_OPUS,
            48_000,
            2,
            "minptime=10;useinbandfec=1",
            111,
        ),
    ] {
        let codec = RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate,
                channels,
                sdp_fmtp_line: fmtp.to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: pt,
        };
        media.register_codec(codec, kind).expect("codec");
    }
    let registry = register_default_interceptors(Registry::new(), &mut media).expect("registry");
    let (gathered_tx, mut gathered) = watch::channel(false);
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Gathered(gathered_tx)))
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await
        .expect("client peer");
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            ..Default::default()
        };
        pc.add_transceiver_from_kind(kind, Some(init))
            .await
            .expect("transceiver");
    }
    for label in ["input", "control"] {
        pc.create_data_channel(label, None).await.expect("channel");
    }
    let offer = pc.create_offer(None).await.expect("offer");
    pc.set_local_description(offer).await.expect("local offer");
    tokio::time::timeout(Duration::from_secs(10), gathered.wait_for(|g| *g))
        .await
        .expect("ICE gathering completes within 10 s")
        .expect("gathering state");
    let offer = pc.local_description().await.expect("offer").sdp;
    (pc, offer)
}

/// Asserts a WHEP refusal for a full edge: 503, `Retry-After`, and the reason.
fn assert_whep_full(reply: &Reply) {
    let (status, _, body) = reply;
    assert_eq!(*status, 503, "{body}");
    assert_eq!(
        header(reply, "retry-after"),
        Some(RETRY_AFTER_SECS.to_string().as_str())
    );
    assert!(body.contains(&format!("at most {MAX} sessions")), "{body}");
}

/// Asserts a QUIC refusal for a full edge: the SDK says "edge full", with the edge's reason.
fn assert_quic_full(result: Result<Session, ClientError>) {
    match result {
        Err(e @ ClientError::EdgeFull { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("the edge is full: try again later or another edge"),
                "{text}"
            );
            assert!(text.contains(&format!("at most {MAX} sessions")), "{text}");
        }
        Err(e) => panic!("a full edge must refuse with EdgeFull, got {e}"),
        Ok(s) => panic!("a full edge admitted session {}", s.id()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_and_quic_joins_at_once_never_exceed_max_sessions() {
    let edge = DevEdge::start(MAX);
    // The players' offers are made first, so that the four joins leave together.
    let (pc_a, offer_a) = whep_player().await;
    let (pc_b, offer_b) = whep_player().await;
    let (whep_a, whep_b, quic_a, quic_b) = tokio::join!(
        edge.whep(offer_a),
        edge.whep(offer_b),
        edge.quic(),
        edge.quic()
    );
    let wheps = [whep_a, whep_b];
    let (created, refused): (Vec<Reply>, Vec<Reply>) = wheps.into_iter().partition(|r| r.0 == 201);
    let (admitted, full): (Vec<_>, Vec<_>) = [quic_a, quic_b].into_iter().partition(Result::is_ok);
    let mut sessions: Vec<Session> = admitted.into_iter().map(Result::unwrap).collect();
    eprintln!(
        "admitted: {} WHEP, {} QUIC; refused: {} WHEP, {} QUIC",
        created.len(),
        sessions.len(),
        refused.len(),
        full.len()
    );
    assert_eq!(created.len() + sessions.len(), MAX, "exactly max admitted");
    let refused_at_once = |n: usize| i64::try_from(n).unwrap();
    let (refused_whep, refused_quic) =
        (refused_at_once(refused.len()), refused_at_once(full.len()));
    refused.iter().for_each(assert_whep_full);
    full.into_iter().for_each(assert_quic_full);

    // Still full: a join of either kind now is refused too, and no session started for any
    // refused join.
    let (pc_c, offer_c) = whep_player().await;
    assert_whep_full(&edge.whep(offer_c).await);
    drop(pc_c);
    assert_quic_full(edge.quic().await);
    let max = i64::try_from(MAX).unwrap();
    assert_eq!(edge.metric("edgeplay_edge_session_slots").await, max);
    assert_eq!(edge.metric("edgeplay_edge_session_slots_used").await, max);
    assert_eq!(
        edge.metric("edgeplay_edge_sessions_started_total").await,
        max
    );
    // Each transport: its refusals at once, and the one just now.
    for (transport, at_once) in [("whep", refused_whep), ("quic", refused_quic)] {
        let sample = format!("edgeplay_edge_sessions_refused_total{{transport=\"{transport}\"}}");
        assert_eq!(edge.metric(&sample).await, at_once + 1, "{sample}");
    }
    assert!(edge.metric("edgeplay_edge_sessions_active").await <= max);

    // One admitted session ends; its slot comes back once it has, and a new join gets in.
    let mut created = created.into_iter();
    match sessions.pop() {
        Some(s) => s.close().await,
        None => {
            let first = created.next().expect("a WHEP session");
            edge.whep_delete(&first).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while edge.metric("edgeplay_edge_session_slots_used").await >= max {
        assert!(
            Instant::now() < deadline,
            "the ended session's slot is back within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = edge
        .quic()
        .await
        .expect("a join after a session ended gets in");
    assert_eq!(
        edge.metric("edgeplay_edge_sessions_started_total").await,
        max + 1
    );
    // Full again, with a QUIC session among the two: a WHEP offer is refused.
    let (pc_d, offer_d) = whep_player().await;
    assert_whep_full(&edge.whep(offer_d).await);
    let _ = pc_d.close().await;

    again.close().await;
    for s in sessions {
        s.close().await;
    }
    for c in created {
        edge.whep_delete(&c).await;
    }
    for pc in [pc_a, pc_b] {
        let _ = pc.close().await;
    }
    // Every slot comes back once its session has ended.
    let deadline = Instant::now() + Duration::from_secs(30);
    while edge.metric("edgeplay_edge_session_slots_used").await > 0 {
        assert!(Instant::now() < deadline, "every slot is back within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(edge.metric("edgeplay_edge_sessions_active").await, 0);
}
