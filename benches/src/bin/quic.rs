//! `cargo xtask bench quic`: glass-to-glass and input-to-photon over the QUIC transport.
//!
//! One edge in this process (Vulkan render, x264, the `quic` transport) and the Rust client
//! SDK decoding with GStreamer. Rounds alternate, never at the same time:
//! A: the client straight to the edge on loopback;
//! B: the client through testkit's relay dropping 2 % of datagrams each way.
//! Each round opens a fresh session and reads every decoded frame's stamp:
//! - glass-to-glass: stamp render time → decoded picture in the client (same machine clock);
//! - input-to-photon: input sent → first decoded frame whose stamp shows that input applied.
//!
//! The WebRTC path to Chromium, against a webrtcbin baseline, is `bench webrtc`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use edgeplay_client::Client;
use edgeplay_edge::encode::{self, EncoderChoice};
use edgeplay_edge::gpu::Gpu;
use edgeplay_edge::metrics::Metrics;
use edgeplay_edge::pipeline::PipelineConfig;
use edgeplay_edge::quic::{DevToken, QuicConfig, QuicEdge};
use edgeplay_edge::stats::{Summary, Window, ms};
use edgeplay_protocol::input::{InputEvent, Key};
use edgeplay_protocol::stamp::read_luma;
use edgeplay_testkit::relay::{RelayConfig, UdpRelay};

struct Args {
    rounds: u32,
    frames: u32,
    loss: f64,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        rounds: 6,
        frames: 300,
        loss: 0.02,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| anyhow!("{name} needs a value"));
        match flag.as_str() {
            "--rounds" => a.rounds = value("--rounds")?.parse().context("--rounds")?,
            "--frames" => a.frames = value("--frames")?.parse().context("--frames")?,
            "--loss" => a.loss = value("--loss")?.parse().context("--loss")?,
            "-h" | "--help" => {
                println!("usage: quic [--rounds 6] [--frames 300] [--loss 0.02]");
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

fn summary(samples: &[Duration]) -> Summary {
    let mut w = Window::new(samples.len());
    for &s in samples {
        w.record(s);
    }
    w.summary()
}

fn line(name: &str, s: &Summary) {
    println!(
        "{name:<34} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        s.count,
        ms(s.p50),
        ms(s.p95),
        ms(s.p99),
        ms(s.max)
    );
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(a))
}

async fn run(a: Args) -> Result<()> {
    let gpu = Gpu::new().context("Vulkan")?;
    let pipeline = PipelineConfig {
        width: 1280,
        height: 720,
        fps: 60,
        bitrate_kbps: 6000,
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

    println!(
        "quic bench: 1280x720 @ 60 fps, {} rounds x {} frames each way, loss {:.1} % each way on B, encoder {}, device {}",
        a.rounds,
        a.frames,
        a.loss * 100.0,
        pipeline.encoder,
        gpu.info().name
    );
    let (mut direct, mut lossy) = (Figures::default(), Figures::default());
    for r in 0..a.rounds {
        round(addr, fingerprint, token.as_str(), a.frames, &mut direct).await?;
        round(
            relay.local_addr(),
            fingerprint,
            token.as_str(),
            a.frames,
            &mut lossy,
        )
        .await?;
        eprintln!("round {}/{} done", r + 1, a.rounds);
    }
    relay.stop().await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(15), server).await;

    println!(
        "\n{:<34} {:>6} {:>8} {:>8} {:>8} {:>8}",
        "ms", "n", "p50", "p95", "p99", "max"
    );
    let g2g_direct = summary(&direct.g2g);
    let g2g_lossy = summary(&lossy.g2g);
    line("A loopback glass-to-glass", &g2g_direct);
    line("A loopback input-to-photon", &summary(&direct.i2p));
    line("B 2 % loss glass-to-glass", &g2g_lossy);
    line("B 2 % loss input-to-photon", &summary(&lossy.i2p));
    let ratio = g2g_lossy.p95.as_secs_f64() / g2g_direct.p95.as_secs_f64().max(1e-9);
    println!("\nglass-to-glass p95 lossy / lossless: {ratio:.2} (target ≤ 2)");
    for (name, f) in [("A", &direct), ("B", &lossy)] {
        #[allow(clippy::cast_precision_loss, reason = "frame counts fit f64 exactly")]
        let fps = f.frames as f64 / f.wall.as_secs_f64().max(1e-9);
        println!(
            "{name}: {} frames decoded, {} with a stamp failing its CRC, {fps:.1} fps",
            f.frames, f.corrupt
        );
    }
    Ok(())
}
