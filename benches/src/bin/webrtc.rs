//! `cargo xtask bench webrtc`: glass-to-glass and input-to-photon in Chromium, the edge's
//! WebRTC sender against GStreamer's `webrtcbin`, interleaved round by round.
//!
//! The bench serves the built web player (client-sdk/web/dist) and two WHEP-like endpoints on
//! loopback; each run is headless Chromium (client-sdk/web/tests/bench.mjs) opening the same
//! page with `?whep=` pointed at one of them, pressing a key every 250 ms, and reporting every
//! sample the page measured from the frame stamps:
//! - glass-to-glass: the stamp's render time → the frame's expected display time (same clock);
//! - input-to-photon: key sent → first shown frame whose stamp includes that input.
//!
//! Both senders play a fresh session runtime (same game, renderer, x264 settings):
//! - **edge**: `edgeplay_edge::webrtc::Whep`, as `edge-agent run --dev` serves it;
//! - **webrtcbin**: the session's encoded H.264 access units and Opus packets pushed into
//!   `appsrc ! rtph264pay ! webrtcbin` (and `appsrc ! rtpopuspay ! webrtcbin`) as they leave
//!   the encoder; the page's inputs arrive on webrtcbin's own data channels and go to the same
//!   session, so input-to-photon crosses webrtcbin both ways.
//!
//! Rounds alternate which sender goes first; the order within a round is the only difference.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use edgeplay_edge::encode::{self, EncoderChoice, EncoderKind, H264Profile};
use edgeplay_edge::gpu::Gpu;
use edgeplay_edge::metrics::Metrics;
use edgeplay_edge::pipeline::PipelineConfig;
use edgeplay_edge::session::{Control, MediaPacket, Session, SessionConfig, SessionHandle};
use edgeplay_edge::stats::{Summary, Window, ms};
use edgeplay_edge::webrtc::Whep;
use edgeplay_protocol::whep::InputMessage;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_webrtc as gst_webrtc;

struct Args {
    rounds: u32,
    seconds: u32,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        rounds: 3,
        seconds: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| anyhow!("{name} needs a value"));
        match flag.as_str() {
            "--rounds" => a.rounds = value("--rounds")?.parse().context("--rounds")?,
            "--seconds" => a.seconds = value("--seconds")?.parse().context("--seconds")?,
            "-h" | "--help" => {
                println!("usage: webrtc [--rounds 3] [--seconds 10]");
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

/// The two resolutions the issue asks for.
const CONFIGS: [(u32, u32, u32, u32); 2] = [(1280, 720, 60, 6000), (1920, 1080, 30, 8000)];
const SENDERS: [&str; 2] = ["edge", "webrtcbin"];

struct Bench {
    gpu: Gpu,
    metrics: Arc<Metrics>,
    encoder: EncoderKind,
    whep: Arc<Whep>,
    baselines: Mutex<Vec<Baseline>>,
    player_dir: PathBuf,
    next_id: Mutex<u64>,
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

struct HttpError(StatusCode, String);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

fn bad(e: impl std::fmt::Display) -> HttpError {
    eprintln!("a WHEP offer failed: {e}");
    HttpError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn player_file(
    State(b): State<Arc<Bench>>,
    file: Option<Path<String>>,
) -> Result<Response, HttpError> {
    let file = file.map_or_else(|| "index.html".to_owned(), |Path(f)| f);
    if file.contains('/') || file.starts_with('.') {
        return Err(HttpError(StatusCode::NOT_FOUND, file));
    }
    let bytes = std::fs::read(b.player_dir.join(&file))
        .map_err(|e| HttpError(StatusCode::NOT_FOUND, format!("{file}: {e}")))?;
    let mime = match file.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        _ => "application/octet-stream",
    };
    Ok(([(header::CONTENT_TYPE, mime)], bytes).into_response())
}

/// Starts a session and returns it with its bitrate (the ceiling of the edge's congestion
/// controller).
async fn start_session(b: &Arc<Bench>, w: u32, h: u32, fps: u32) -> Result<(SessionHandle, u32)> {
    let bitrate = CONFIGS
        .iter()
        .find(|c| (c.0, c.1, c.2) == (w, h, fps))
        .map(|c| c.3)
        .ok_or_else(|| anyhow!("no configuration {w}x{h}@{fps}"))?;
    let pipeline = PipelineConfig {
        width: w,
        height: h,
        fps,
        bitrate_kbps: bitrate,
        encoder: b.encoder.clone(),
        keyframe_interval: 0,
        threads: 0,
        audio: true,
    };
    let id = {
        let mut n = b.next_id.lock().unwrap_or_else(PoisonError::into_inner);
        *n += 1;
        format!("bench-{n}")
    };
    let cfg = SessionConfig::new(id, pipeline, 1);
    let (gpu, metrics) = (b.gpu.clone(), Arc::clone(&b.metrics));
    let session = tokio::task::spawn_blocking(move || Session::start(&gpu, cfg, metrics)).await??;
    Ok((session, bitrate))
}

async fn offer(
    State(b): State<Arc<Bench>>,
    Path((sender, w, h, fps)): Path<(String, u32, u32, u32)>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let (session, kbps) = start_session(&b, w, h, fps).await.map_err(bad)?;
    let sdp = match sender.as_str() {
        "edge" => {
            // The page offers constrained baseline first; webrtcbin gets the same stream.
            b.whep
                .offer(&body, session, kbps, H264Profile::default())
                .await
                .map_err(bad)?
                .sdp
        }
        "webrtcbin" => {
            let offer = String::from_utf8(body.to_vec()).map_err(bad)?;
            let (baseline, answer) = webrtcbin_answer(&offer, session).await.map_err(bad)?;
            b.baselines
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(baseline);
            answer
        }
        other => return Err(HttpError(StatusCode::NOT_FOUND, other.to_owned())),
    };
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp"),
            (header::LOCATION, "/whep/resource"),
        ],
        sdp,
    )
        .into_response())
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

#[derive(Default)]
struct Figures {
    g2g: Vec<Duration>,
    i2p: Vec<Duration>,
    presented: u64,
    dropped: u64,
    seconds: f64,
}

fn samples(v: &serde_json::Value, key: &str) -> Vec<Duration> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(serde_json::Value::as_f64)
                .filter(|ms| ms.is_finite() && *ms >= 0.0)
                .map(|ms| Duration::from_secs_f64(ms / 1000.0))
                .collect()
        })
        .unwrap_or_default()
}

/// One Chromium run of `seconds` on `page`.
fn browse(web: &std::path::Path, page: &str, seconds: u32, into: &mut Figures) -> Result<()> {
    let out = Command::new("timeout")
        .args([&(seconds + 90).to_string(), "node", "tests/bench.mjs", page])
        .arg(seconds.to_string())
        .current_dir(web)
        .output()
        .context("node runs (npm and node installed? `cargo xtask setup`)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).with_context(|| {
        format!(
            "bench.mjs printed no result: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if v["ok"] != true {
        bail!("bench.mjs failed: {stdout}");
    }
    into.g2g.extend(samples(&v, "g2g"));
    into.i2p.extend(samples(&v, "i2p"));
    into.presented += v["presented"].as_u64().unwrap_or(0);
    into.dropped += v["dropped"].as_u64().unwrap_or(0);
    into.seconds += v["seconds"].as_f64().unwrap_or(0.0);
    Ok(())
}

fn summary(samples: &[Duration]) -> Summary {
    let mut w = Window::new(samples.len().max(1));
    for &s in samples {
        w.record(s);
    }
    w.summary()
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
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-sdk/web");
    let build = Command::new("npm")
        .args(["run", "--silent", "build"])
        .current_dir(&web)
        .status()
        .context("npm runs")?;
    if !build.success() || !web.join("node_modules/playwright-core").exists() {
        bail!("the web player did not build: run `cargo xtask setup`");
    }
    let gpu = Gpu::new().context("Vulkan")?;
    let encoder = encode::probe(EncoderChoice::Auto).context("video encoder")?;
    let bench = Arc::new(Bench {
        gpu: gpu.clone(),
        metrics: Metrics::new(),
        encoder: encoder.clone(),
        whep: Whep::new([127, 0, 0, 1].into()),
        baselines: Mutex::new(Vec::new()),
        player_dir: web.join("dist"),
        next_id: Mutex::new(0),
    });
    let app = Router::new()
        .route("/play", get(player_file))
        .route("/play/", get(player_file))
        .route("/play/{file}", get(player_file))
        .route("/whep/{sender}/{w}/{h}/{fps}", post(offer))
        .with_state(Arc::clone(&bench));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    println!(
        "webrtc bench: {} rounds x {} s per sender and resolution, Chromium {}, encoder {encoder}, device {}",
        a.rounds,
        a.seconds,
        std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
        gpu.info().name
    );
    let mut figures: HashMap<(usize, &str), Figures> = HashMap::new();
    for r in 0..a.rounds {
        for (c, &(w, h, fps, _)) in CONFIGS.iter().enumerate() {
            let mut order = SENDERS;
            if r % 2 == 1 {
                order.reverse();
            }
            for sender in order {
                let page = format!(
                    "http://{addr}/play/?whep=http://{addr}/whep/{sender}/{w}/{h}/{fps}#token=bench"
                );
                let f = figures.entry((c, sender)).or_default();
                let web = web.clone();
                let seconds = a.seconds;
                let mut taken = std::mem::take(f);
                taken = tokio::task::spawn_blocking(move || {
                    browse(&web, &page, seconds, &mut taken).map(|()| taken)
                })
                .await??;
                *figures.entry((c, sender)).or_default() = taken;
                // End the run's sender and session before the next one starts.
                bench.whep.stop_all();
                let stopped: Vec<Baseline> = bench
                    .baselines
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .drain(..)
                    .collect();
                tokio::task::spawn_blocking(move || stopped.into_iter().for_each(Baseline::stop))
                    .await?;
                while !bench.whep.is_empty() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        eprintln!("round {}/{} done", r + 1, a.rounds);
    }
    server.abort();

    println!(
        "\n{:<22} {:>5} {:>7} {:>7} {:>7}   {:>5} {:>7} {:>7} {:>7}   {:>6} {:>6}",
        "ms", "g2g n", "p50", "p95", "p99", "i2p n", "p50", "p95", "p99", "fps", "drops"
    );
    for (c, &(_, h, fps, _)) in CONFIGS.iter().enumerate() {
        let mut p50 = HashMap::new();
        for sender in SENDERS {
            let f = figures.remove(&(c, sender)).unwrap_or_default();
            let (g, i) = (summary(&f.g2g), summary(&f.i2p));
            #[allow(clippy::cast_precision_loss, reason = "frame counts fit f64 exactly")]
            let shown = f.presented as f64 / f.seconds.max(1e-9);
            println!(
                "{:<22} {:>5} {:>7.1} {:>7.1} {:>7.1}   {:>5} {:>7.1} {:>7.1} {:>7.1}   {:>6.1} {:>6}",
                format!("{h}p{fps} {sender}"),
                g.count,
                ms(g.p50),
                ms(g.p95),
                ms(g.p99),
                i.count,
                ms(i.p50),
                ms(i.p95),
                ms(i.p99),
                shown,
                f.dropped
            );
            p50.insert(sender, ms(g.p50));
        }
        println!(
            "{h}p{fps}: glass-to-glass p50 edge / webrtcbin = {:.2}",
            p50["edge"] / p50["webrtcbin"].max(1e-9)
        );
    }
    Ok(())
}
