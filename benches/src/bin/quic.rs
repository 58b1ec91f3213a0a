//! `cargo xtask bench quic`: glass-to-glass and input-to-photon over the QUIC transport.
//!
//! One edge in this process (Vulkan render, x264, the `quic` transport and the WHEP sender)
//! at 1280x720 @ 60 fps. Each round runs three runs one after the other, never at the same
//! time, the order rotating from round to round:
//! A: the Rust client SDK (GStreamer decode) straight to the edge's QUIC port on loopback;
//! B: the same through testkit's relay dropping 2 % of datagrams each way;
//! C: headless Chromium playing the web player over WebRTC from the edge's `Whep`, answered as
//!    `edge-agent run --dev` answers it ([`edgeplay_benches::whep`]; skip with `--no-webrtc`).
//!
//! Every run opens a fresh session and reads each frame's stamp:
//! - glass-to-glass: stamp render time → picture decoded in the SDK (A, B), or → the frame's
//!   expected display time in Chromium (C: `requestVideoFrameCallback`'s `expectedDisplayTime`,
//!   so it also counts the browser's jitter buffer and compositor, which the SDK has none of);
//! - input-to-photon: input sent → first such picture whose stamp shows that input applied
//!   (the SDK sends a key every 20 frames, the page a key every 250 ms).
//!
//! The WebRTC path against a webrtcbin baseline (with audio behind video) is `bench webrtc`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use edgeplay_benches::chromium::{self, PageFigures};
use edgeplay_benches::whep::{self, WhepBench};
use edgeplay_benches::{load_average, machine, spread, summary};
use edgeplay_client::Client;
use edgeplay_edge::metrics::Metrics;
use edgeplay_edge::transport::quic::{QuicConfig, QuicEdge};
use edgeplay_edge::transport::token::DevToken;
use edgeplay_game::stamp::read_luma;
use edgeplay_media::encode::{self, EncoderChoice};
use edgeplay_media::gpu::Gpu;
use edgeplay_media::pipeline::PipelineConfig;
use edgeplay_media::stats::{Summary, ms};
use edgeplay_protocol::input::{InputEvent, Key};
use edgeplay_testkit::relay::{RelayConfig, UdpRelay};

struct Args {
    rounds: u32,
    frames: u32,
    loss: f64,
    webrtc: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        rounds: 6,
        frames: 300,
        loss: 0.02,
        webrtc: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| anyhow!("{name} needs a value"));
        match flag.as_str() {
            "--rounds" => a.rounds = value("--rounds")?.parse().context("--rounds")?,
            "--frames" => a.frames = value("--frames")?.parse().context("--frames")?,
            "--loss" => a.loss = value("--loss")?.parse().context("--loss")?,
            "--no-webrtc" => a.webrtc = false,
            "-h" | "--help" => {
                println!(
                    "usage: quic [--rounds 6] [--frames 300] [--loss 0.02] [--no-webrtc]\n\
                     (a WebRTC run lasts as long as --frames take at 60 fps, at least 3 s)"
                );
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}; see --help"),
        }
    }
    if a.rounds == 0 || a.frames < 30 || !(0.0..1.0).contains(&a.loss) {
        bail!("--rounds ≥ 1, --frames ≥ 30 and 0 ≤ --loss < 1");
    }
    Ok(a)
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[derive(Default)]
struct Figures {
    g2g: Vec<Duration>,
    i2p: Vec<Duration>,
    frames: u64,
    corrupt: u64,
    wall: Duration,
}

/// One session of `frames` frames to `addr`; an input every 20 frames.
async fn round(
    addr: SocketAddr,
    fingerprint: [u8; 32],
    token: &str,
    frames: u32,
    into: &mut Figures,
) -> Result<()> {
    let mut session = Client::connect(addr, fingerprint, token)
        .await
        .map_err(|e| anyhow!("connect: {e}"))?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(u64::from(frames) / 10 + 30);
    // (sequence, when sent) of the input waiting to show up in a picture.
    let mut waiting: Option<(u64, Instant)> = None;
    let mut down = false;
    for n in 0..frames {
        let frame = tokio::time::timeout_at(deadline.into(), session.next_frame())
            .await
            .map_err(|_| anyhow!("frames stopped arriving"))?
            .ok_or_else(|| anyhow!("the session ended"))?;
        let now_us = unix_us();
        let (w, h) = (frame.width as usize, frame.height as usize);
        let Ok(stamp) = read_luma(frame.luma(), w, h, w) else {
            into.corrupt += 1;
            continue;
        };
        into.frames += 1;
        into.g2g.push(Duration::from_micros(
            now_us.saturating_sub(stamp.render_time_us),
        ));
        if let Some((seq, sent)) = waiting
            && u64::from(stamp.input_seq) >= seq
        {
            into.i2p.push(sent.elapsed());
            waiting = None;
        }
        if waiting.is_none() && n % 20 == 10 {
            down = !down;
            let seq = session
                .send_input(InputEvent::Key {
                    code: Key::ArrowLeft,
                    down,
                })
                .map_err(|e| anyhow!("send_input: {e}"))?;
            waiting = Some((seq, Instant::now()));
        }
    }
    into.wall += started.elapsed();
    session.close().await;
    Ok(())
}

fn line(name: &str, s: &Summary) {
    println!(
        "{name:<40} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        s.count,
        ms(s.p50),
        ms(s.p95),
        ms(s.p99),
        ms(s.max)
    );
}

/// `num / den` of two percentiles.
fn ratio(num: Duration, den: Duration) -> f64 {
    num.as_secs_f64() / den.as_secs_f64().max(1e-9)
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(a))
}

/// The WebRTC side: the page's server and the player's directory.
struct WebRtc {
    edge: Arc<WhepBench>,
    web: PathBuf,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

#[allow(
    clippy::too_many_lines,
    reason = "set-up, rounds and the table read best in one piece"
)]
async fn run(a: Args) -> Result<()> {
    let gpu = Gpu::new().context("Vulkan")?;
    let pipeline = PipelineConfig {
        width: 1280,
        height: 720,
        fps: 60,
        bitrate_kbps: edgeplay_benches::bitrate_kbps(1280, 720, 60).unwrap_or(6000),
        encoder: encode::probe(EncoderChoice::Auto).context("video encoder")?,
        keyframe_interval: 0,
        threads: 0,
        audio: true,
    };
    let token = DevToken::random().context("dev token")?;
    let cfg = QuicConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), pipeline.clone());
    let edge = QuicEdge::bind(cfg, Arc::new(token.clone()), gpu.clone(), Metrics::new())?;
    let addr = edge.local_addr()?;
    let fingerprint = edge.fingerprint();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(edge.serve(async {
        let _ = stopped.await;
    }));
    let relay = UdpRelay::start(
        addr,
        RelayConfig {
            loss_to_server: a.loss,
            loss_to_client: a.loss,
            ..RelayConfig::default()
        },
    )
    .await?;
    let webrtc = if a.webrtc {
        let web = chromium::build_player().context("the WebRTC run (or pass --no-webrtc)")?;
        let edge = WhepBench::new(gpu.clone(), pipeline.encoder.clone(), &web);
        let (addr, server) = whep::serve(edge.router()).await?;
        Some(WebRtc {
            edge,
            web,
            addr,
            server,
        })
    } else {
        None
    };
    let seconds = (a.frames / 60).max(3);

    println!(
        "quic bench: 1280x720 @ 60 fps, {} rounds x {} frames each way, loss {:.1} % each way on B, {}, encoder {}, device {}",
        a.rounds,
        a.frames,
        a.loss * 100.0,
        if webrtc.is_some() {
            format!("C: {seconds} s in Chromium {}", chromium::executable())
        } else {
            "no WebRTC run".to_owned()
        },
        pipeline.encoder,
        gpu.info().name
    );
    println!(
        "machine: {}; load average before: {}",
        machine(),
        load_average()
    );
    let (mut direct, mut lossy) = (Figures::default(), Figures::default());
    let mut page = PageFigures::default();
    // Each round's glass-to-glass p50 per run, for the spread over rounds.
    let (mut direct_p50s, mut lossy_p50s, mut page_p50s) = (Vec::new(), Vec::new(), Vec::new());
    let runs = if webrtc.is_some() { 3 } else { 2 };
    for r in 0..a.rounds {
        for k in 0..runs {
            match (r as usize + k) % runs {
                0 => {
                    let from = direct.g2g.len();
                    round(addr, fingerprint, token.as_str(), a.frames, &mut direct).await?;
                    direct_p50s.push(ms(summary(&direct.g2g[from..]).p50));
                }
                1 => {
                    let from = lossy.g2g.len();
                    round(
                        relay.local_addr(),
                        fingerprint,
                        token.as_str(),
                        a.frames,
                        &mut lossy,
                    )
                    .await?;
                    lossy_p50s.push(ms(summary(&lossy.g2g[from..]).p50));
                }
                _ => {
                    if let Some(w) = &webrtc {
                        let url = WhepBench::page(w.addr, "edge", (1280, 720, 60));
                        let run = chromium::browse(&w.web, &url, seconds, 0, None).await?;
                        page_p50s.push(ms(summary(&run.g2g).p50));
                        page.absorb(run);
                        // The peer and its session end before the next run starts.
                        w.edge.settle().await;
                    }
                }
            }
        }
        eprintln!("round {}/{} done", r + 1, a.rounds);
    }
    relay.stop().await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
    if let Some(w) = &webrtc {
        w.server.abort();
    }

    println!(
        "\n{:<40} {:>6} {:>8} {:>8} {:>8} {:>8}",
        "ms", "n", "p50", "p95", "p99", "max"
    );
    let (g2g_a, i2p_a) = (summary(&direct.g2g), summary(&direct.i2p));
    let g2g_b = summary(&lossy.g2g);
    line("A QUIC loopback glass-to-glass", &g2g_a);
    line("A QUIC loopback input-to-photon", &i2p_a);
    line(
        &format!("B QUIC {:.0} % loss glass-to-glass", a.loss * 100.0),
        &g2g_b,
    );
    line(
        &format!("B QUIC {:.0} % loss input-to-photon", a.loss * 100.0),
        &summary(&lossy.i2p),
    );
    let c = webrtc
        .is_some()
        .then(|| (summary(&page.g2g), summary(&page.i2p)));
    if let Some((g, i)) = &c {
        line("C WebRTC Chromium glass-to-glass", g);
        line("C WebRTC Chromium input-to-photon", i);
    }
    println!(
        "glass-to-glass p50 over rounds (min–max): A {} ms, B {} ms{}",
        spread(&direct_p50s, 1),
        spread(&lossy_p50s, 1),
        if c.is_some() {
            format!(", C {} ms", spread(&page_p50s, 1))
        } else {
            String::new()
        }
    );
    println!(
        "\nglass-to-glass p95 B / A (lossy / lossless QUIC): {:.2} (target ≤ 2)",
        ratio(g2g_b.p95, g2g_a.p95)
    );
    if let Some((g, i)) = &c {
        println!(
            "WebRTC / QUIC lossless: glass-to-glass p50 {:.2}, p95 {:.2}; input-to-photon p50 {:.2}, p95 {:.2}",
            ratio(g.p50, g2g_a.p50),
            ratio(g.p95, g2g_a.p95),
            ratio(i.p50, i2p_a.p50),
            ratio(i.p95, i2p_a.p95),
        );
        println!(
            "(QUIC glass-to-glass ends at the SDK's decoded picture, WebRTC's at Chromium's expected display time)"
        );
    }
    for (name, f) in [("A", &direct), ("B", &lossy)] {
        #[allow(clippy::cast_precision_loss, reason = "frame counts fit f64 exactly")]
        let fps = f.frames as f64 / f.wall.as_secs_f64().max(1e-9);
        println!(
            "{name}: {} frames decoded, {} with a stamp failing its CRC, {fps:.1} fps{}",
            f.frames,
            f.corrupt,
            if fps < 59.5 {
                " (the edge did not hold 60 fps here: latency figures include queueing)"
            } else {
                ""
            }
        );
    }
    if webrtc.is_some() {
        println!(
            "C: {} frames shown in {:.1} s ({:.1} fps), {} dropped by Chromium",
            page.presented,
            page.seconds,
            page.fps(),
            page.dropped
        );
    }
    println!("load average after: {}", load_average());
    Ok(())
}
