//! `cargo xtask bench webrtc`: glass-to-glass and input-to-photon in Chromium, the edge's
//! WebRTC sender against GStreamer's `webrtcbin`, interleaved round by round.
//!
//! The bench serves the built web player (client-sdk/web/dist) and two WHEP-like endpoints on
//! loopback ([`edgeplay_benches::whep`]); each run is headless Chromium
//! ([`edgeplay_benches::chromium`]) opening the same page with `?whep=` pointed at one of them,
//! pressing a key every 250 ms, and reporting every glass-to-glass and input-to-photon sample
//! the page measured from the frame stamps.
//!
//! Both senders play a fresh session runtime (same game, renderer, x264 settings):
//! - **edge**: `edgeplay_edge::transport::webrtc::Whep`, as `edge-agent run --dev` serves it;
//! - **webrtcbin**: the session's encoded H.264 access units and Opus packets pushed into
//!   `appsrc ! rtph264pay ! webrtcbin` (and `appsrc ! rtpopuspay ! webrtcbin`) as they leave
//!   the encoder; the page's inputs arrive on webrtcbin's own data channels and go to the same
//!   session, so input-to-photon crosses webrtcbin both ways.
//!
//! After the latency phase each run flies the ship around until ten hits and records, per hit,
//! how far the tone's onset in the page's audio lags the frame with the flash (audio behind
//! video, > 0: audio late), for the same two senders.
//!
//! Rounds alternate which sender goes first; the order within a round is the only difference.
//! Each figure is over all rounds, with the range of the per-round p50s beside it. Only 720p60
//! is measured: the one mode the live edge serves today.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::post;
use edgeplay_benches::chromium::{self, PageFigures};
use edgeplay_benches::whep::{self, HttpError, WhepBench, answered, failed};
use edgeplay_benches::{load_average, machine, spread, summary};
use edgeplay_media::encode::{self, EncoderChoice, H264Profile};
use edgeplay_media::gpu::Gpu;
use edgeplay_media::session::{Control, MediaPacket, SessionHandle};
use edgeplay_media::stats::ms;
use edgeplay_protocol::whep::InputMessage;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_webrtc as gst_webrtc;

struct Args {
    rounds: u32,
    seconds: u32,
    /// A third run per round: the edge with this `jitterBufferTarget` (ms) on Chromium's audio
    /// receiver.
    audio_target_ms: Option<u32>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        rounds: 3,
        seconds: 10,
        audio_target_ms: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| anyhow!("{name} needs a value"));
        match flag.as_str() {
            "--rounds" => a.rounds = value("--rounds")?.parse().context("--rounds")?,
            "--seconds" => a.seconds = value("--seconds")?.parse().context("--seconds")?,
            "--audio-jitter-target" => {
                a.audio_target_ms = Some(
                    value("--audio-jitter-target")?
                        .parse()
                        .context("--audio-jitter-target MS")?,
                );
            }
            "-h" | "--help" => {
                println!(
                    "usage: webrtc [--rounds 3] [--seconds 10] [--audio-jitter-target MS]\n  \
                     --audio-jitter-target: a third run per round, the edge with Chromium's audio \
                     receiver's jitterBufferTarget set to MS"
                );
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}; see --help"),
        }
    }
    if a.rounds == 0 || a.seconds < 3 {
        bail!("--rounds ≥ 1 and --seconds ≥ 3");
    }
    Ok(a)
}

/// The modes measured: what the live edge serves (bitrates: [`edgeplay_benches::bitrate_kbps`]).
const CONFIGS: [(u32, u32, u32); 1] = [(1280, 720, 60)];
/// Audio-behind-video samples each run collects.
const AV_HITS: u32 = 10;
/// Audio behind video the edge aims at (inside EBU R37's tolerance): median and 95th percentile.
const AV_TARGET_P50_MS: f64 = 40.0;
const AV_TARGET_P95_MS: f64 = 60.0;
/// One kind of run in a round: a sender, and the audio receiver's jitter buffer target if set.
#[derive(Clone)]
struct Run {
    label: String,
    sender: &'static str,
    audio_target_ms: Option<u32>,
}

/// The edge's WHEP server and the webrtcbin senders running beside it.
struct Bench {
    edge: Arc<WhepBench>,
    baselines: Mutex<Vec<Baseline>>,
}

/// A webrtcbin sender; its feeder task owns the session (dropping the handle ends it).
struct Baseline {
    pipeline: gst::Pipeline,
    feeder: tokio::task::JoinHandle<()>,
}

impl Baseline {
    fn stop(self) {
        self.feeder.abort();
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

async fn webrtcbin_offer(
    State(b): State<Arc<Bench>>,
    Path((w, h, fps)): Path<(u32, u32, u32)>,
    body: Bytes,
) -> Result<Response, HttpError> {
    // The page offers constrained baseline first, as the edge's sender gets it.
    let (session, _) = b
        .edge
        .start_session((w, h, fps), H264Profile::default())
        .await
        .map_err(failed)?;
    let offer = String::from_utf8(body.to_vec()).map_err(failed)?;
    let (baseline, answer) = webrtcbin_answer(&offer, session).await.map_err(failed)?;
    b.baselines
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(baseline);
    Ok(answered(answer))
}

/// The payload type the offer gives `codec` (`H264` with packetization-mode 1 and
/// constrained baseline 42e01f, or `opus`).
fn offered_pt(offer: &str, codec: &str) -> Option<u32> {
    let pts: Vec<u32> = offer
        .lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|l| {
            let (pt, name) = l.split_once(' ')?;
            name.to_ascii_lowercase()
                .starts_with(&codec.to_ascii_lowercase())
                .then(|| pt.parse().ok())?
        })
        .collect();
    if codec != "H264" {
        return pts.first().copied();
    }
    pts.into_iter().find(|pt| {
        offer.lines().any(|l| {
            l.starts_with(&format!("a=fmtp:{pt} "))
                && l.contains("packetization-mode=1")
                && l.contains("profile-level-id=42e01f")
        })
    })
}

/// Builds a webrtcbin sender for `offer`, answers it (all candidates in the answer), and feeds
/// it the session's encoded media once connected.
async fn webrtcbin_answer(offer: &str, session: SessionHandle) -> Result<(Baseline, String)> {
    let video_pt = offered_pt(offer, "H264").ok_or_else(|| anyhow!("no H.264 42e01f offered"))?;
    let audio_pt = offered_pt(offer, "opus").ok_or_else(|| anyhow!("no Opus offered"))?;
    let desc = format!(
        "webrtcbin name=w bundle-policy=max-bundle \
         appsrc name=v is-live=true format=time do-timestamp=true \
           caps=video/x-h264,stream-format=byte-stream,alignment=au \
         ! rtph264pay config-interval=-1 aggregate-mode=zero-latency pt={video_pt} mtu=1200 \
         ! application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload={video_pt} ! w. \
         appsrc name=a is-live=true format=time do-timestamp=true \
           caps=audio/x-opus,channel-mapping-family=0,channels=1,rate=48000 \
         ! rtpopuspay pt={audio_pt} \
         ! application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload={audio_pt} ! w."
    );
    let pipeline = gst::parse::launch(&desc)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("not a pipeline"))?;
    let by_name = |n: &str| pipeline.by_name(n).ok_or_else(|| anyhow!("no element {n}"));
    let webrtcbin = by_name("w")?;
    let video = by_name("v")?
        .downcast::<gst_app::AppSrc>()
        .map_err(|_| anyhow!("v"))?;
    let audio = by_name("a")?
        .downcast::<gst_app::AppSrc>()
        .map_err(|_| anyhow!("a"))?;
    let (inputs_tx, mut inputs) = tokio::sync::mpsc::unbounded_channel::<Control>();
    webrtcbin.connect("on-data-channel", false, move |values| {
        let channel = values.get(1)?.get::<gst_webrtc::WebRTCDataChannel>().ok()?;
        let tx = inputs_tx.clone();
        channel.connect("on-message-string", false, move |v| {
            let text = v.get(1)?.get::<Option<String>>().ok()??;
            // Outside bytes: a message that is not an input is dropped.
            if let Ok(m) = InputMessage::decode(text.as_bytes()) {
                let _ = tx.send(Control::Input {
                    seq: m.seq,
                    event: m.event,
                });
            }
            None
        });
        None
    });
    pipeline.set_state(gst::State::Playing)?;

    let sdp = gstreamer_sdp::SDPMessage::parse_buffer(offer.as_bytes())
        .map_err(|e| anyhow!("offer SDP: {e}"))?;
    let remote = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, sdp);
    let w = webrtcbin.clone();
    let answer = tokio::task::spawn_blocking(move || -> Result<String> {
        let p = gst::Promise::new();
        w.emit_by_name::<()>("set-remote-description", &[&remote, &p]);
        p.wait();
        let p = gst::Promise::new();
        w.emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, &p]);
        p.wait();
        let reply = p
            .get_reply()
            .ok_or_else(|| anyhow!("webrtcbin gave no answer"))?;
        let answer = reply
            .get::<gst_webrtc::WebRTCSessionDescription>("answer")
            .map_err(|e| anyhow!("webrtcbin could not answer: {e} ({reply})"))?;
        let p = gst::Promise::new();
        w.emit_by_name::<()>("set-local-description", &[&answer, &p]);
        p.wait();
        for _ in 0..150 {
            let state = w.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state");
            if state == gst_webrtc::WebRTCICEGatheringState::Complete {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let local = w.property::<gst_webrtc::WebRTCSessionDescription>("local-description");
        local
            .sdp()
            .as_text()
            .map_err(|e| anyhow!("answer SDP: {e}"))
    })
    .await??;

    let handle = session;
    let feeder = tokio::spawn(async move {
        let mut media = handle.subscribe();
        let mut connected = false;
        let mut started = false;
        loop {
            tokio::select! {
                Some(ctl) = inputs.recv() => {
                    let _ = handle.send(ctl);
                }
                packet = media.recv() => {
                    let Ok(packet) = packet else {
                        if matches!(packet, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                            return;
                        }
                        started = false;
                        let _ = handle.send(Control::RequestKeyframe);
                        continue;
                    };
                    if !connected {
                        let state = webrtcbin
                            .property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state");
                        connected = state == gst_webrtc::WebRTCPeerConnectionState::Connected;
                        if connected {
                            let _ = handle.send(Control::RequestKeyframe);
                        }
                        continue;
                    }
                    match packet {
                        MediaPacket::Video(v) => {
                            started |= v.keyframe;
                            if started {
                                let _ = video.push_buffer(gst::Buffer::from_slice(v.data.clone()));
                            }
                        }
                        MediaPacket::Audio(a) => {
                            if started {
                                let _ = audio.push_buffer(gst::Buffer::from_slice(a.data.clone()));
                            }
                        }
                    }
                }
            }
        }
    });
    Ok((Baseline { pipeline, feeder }, answer))
}

fn main() -> Result<()> {
    let a = parse_args()?;
    gst::init()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(a))
}

#[allow(
    clippy::too_many_lines,
    reason = "set-up, rounds and the table read best in one piece"
)]
async fn run(a: Args) -> Result<()> {
    let web = chromium::build_player()?;
    let gpu = Gpu::new().context("Vulkan")?;
    let encoder = encode::probe(EncoderChoice::Auto).context("video encoder")?;
    let edge = WhepBench::new(gpu.clone(), encoder.clone(), &web);
    let bench = Arc::new(Bench {
        edge: Arc::clone(&edge),
        baselines: Mutex::new(Vec::new()),
    });
    let app = edge.router().merge(
        Router::new()
            .route("/whep/webrtcbin/{w}/{h}/{fps}", post(webrtcbin_offer))
            .with_state(Arc::clone(&bench)),
    );
    let (addr, server) = whep::serve(app).await?;

    println!(
        "webrtc bench: {} rounds x {} s per sender and mode, then {AV_HITS} A/V hits, Chromium {}, encoder {encoder}, device {}",
        a.rounds,
        a.seconds,
        chromium::executable(),
        gpu.info().name
    );
    println!(
        "machine: {}; load average before: {}",
        machine(),
        load_average()
    );
    let mut runs = vec![
        Run {
            label: "edge".into(),
            sender: "edge",
            audio_target_ms: None,
        },
        Run {
            label: "webrtcbin".into(),
            sender: "webrtcbin",
            audio_target_ms: None,
        },
    ];
    if let Some(ms) = a.audio_target_ms {
        runs.push(Run {
            label: format!("edge, audio jbt {ms}"),
            sender: "edge",
            audio_target_ms: Some(ms),
        });
    }
    let mut figures: HashMap<(usize, usize), Vec<PageFigures>> = HashMap::new();
    for r in 0..a.rounds {
        for (c, &config) in CONFIGS.iter().enumerate() {
            // Each round starts with another kind of run.
            let mut order: Vec<usize> = (0..runs.len()).collect();
            order.rotate_left(r as usize % runs.len());
            for k in order {
                let run = &runs[k];
                let page = WhepBench::page(addr, run.sender, config);
                let f =
                    chromium::browse(&web, &page, a.seconds, AV_HITS, run.audio_target_ms).await?;
                figures.entry((c, k)).or_default().push(f);
                // End the run's sender and session before the next one starts.
                let stopped: Vec<Baseline> = bench
                    .baselines
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .drain(..)
                    .collect();
                tokio::task::spawn_blocking(move || stopped.into_iter().for_each(Baseline::stop))
                    .await?;
                edge.settle().await;
            }
        }
        eprintln!("round {}/{} done", r + 1, a.rounds);
    }
    server.abort();

    let load_after = load_average();

    println!("\nglass-to-glass (g2g) and input-to-photon (i2p), ms, over all rounds:");
    println!(
        "{:<26} {:>5} {:>7} {:>7} {:>7} {:>13}   {:>5} {:>7} {:>7} {:>7}   {:>6} {:>6}",
        "",
        "g2g n",
        "p50",
        "p95",
        "p99",
        "round p50s",
        "i2p n",
        "p50",
        "p95",
        "p99",
        "fps",
        "drops"
    );
    let mut av_rows = Vec::new();
    for (c, &(_, h, fps)) in CONFIGS.iter().enumerate() {
        let mut p50 = HashMap::new();
        for (k, run) in runs.iter().enumerate() {
            let sender = run.label.as_str();
            let reps = figures.remove(&(c, k)).unwrap_or_default();
            let round_p50s: Vec<f64> = reps.iter().map(|f| ms(summary(&f.g2g).p50)).collect();
            let round_av: Vec<f64> = reps.iter().map(|f| median(&f.av_ms)).collect();
            let mut f = PageFigures::default();
            for rep in reps {
                f.absorb(rep);
            }
            let (g, i) = (summary(&f.g2g), summary(&f.i2p));
            println!(
                "{:<26} {:>5} {:>7.1} {:>7.1} {:>7.1} {:>13}   {:>5} {:>7.1} {:>7.1} {:>7.1}   {:>6.1} {:>6}",
                format!("{h}p{fps} {sender}"),
                g.count,
                ms(g.p50),
                ms(g.p95),
                ms(g.p99),
                spread(&round_p50s, 1),
                i.count,
                ms(i.p50),
                ms(i.p95),
                ms(i.p99),
                f.fps(),
                f.dropped
            );
            p50.insert(sender, ms(g.p50));
            av_rows.push((
                format!("{h}p{fps} {sender}"),
                f.av_ms,
                round_av,
                median(&f.audio_buffer_ms),
            ));
        }
        println!(
            "{h}p{fps}: glass-to-glass p50 edge / webrtcbin = {:.2}",
            p50["edge"] / p50["webrtcbin"].max(1e-9)
        );
    }
    println!(
        "\naudio behind video, ms (tone onset in the page's WebAudio tap → shown frame with the \
         flash; > 0: audio late; target ≤ 40 p50, ≤ 60 p95):"
    );
    println!(
        "{:<26} {:>5} {:>7} {:>7} {:>13} {:>12} {:>16}",
        "", "hits", "p50", "p95", "round p50s", "NetEq p50", "over target p50/p95"
    );
    for (name, mut av, round_av, neteq) in av_rows {
        av.sort_by(f64::total_cmp);
        let (p50, p95) = (percentile(&av, 50.0), percentile(&av, 95.0));
        println!(
            "{name:<26} {:>5} {p50:>7.1} {p95:>7.1} {:>13} {neteq:>12.1} {:>16}",
            av.len(),
            spread(&round_av, 1),
            format!(
                "{:+.1} / {:+.1}",
                p50 - AV_TARGET_P50_MS,
                p95 - AV_TARGET_P95_MS
            )
        );
    }
    println!(
        "(NetEq p50: Chromium's audio jitter buffer over the hits, getStats; what lies beyond it \
         is the audio path after NetEq up to the page's WebAudio tap, about 20–25 ms, and the \
         picture's own delay subtracted: docs/webrtc.md, Audio–video sync)"
    );
    println!("load average after: {load_after}");
    Ok(())
}

/// The nearest-rank percentile `p` of sorted `v` (NaN when empty).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    edgeplay_media::stats::nearest_rank(sorted, p / 100.0).unwrap_or(f64::NAN)
}

/// The median of `v` (NaN when empty).
fn median(v: &[f64]) -> f64 {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 50.0)
}
