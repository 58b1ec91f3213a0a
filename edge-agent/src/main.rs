//! `edge-agent`: render, encode and serve game sessions.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use edgeplay_edge::admission::Admission;
use edgeplay_edge::broker_mode::{self, BrokerArgs};
use edgeplay_edge::http::{self, DevServerConfig};
use edgeplay_edge::metrics::Metrics;
use edgeplay_edge::transport::quic::{QuicConfig, QuicEdge};
use edgeplay_edge::transport::token::DevToken;
use edgeplay_game::game::{Game, GameConfig};
use edgeplay_media::encode::{self, EncoderChoice, MediaFileWriter};
use edgeplay_media::gpu::Gpu;
use edgeplay_media::pipeline::{PipelineConfig, SessionPipeline};
use edgeplay_media::stats::{StageStats, StageTable};
use edgeplay_protocol::input::{ScriptedInput, parse_script};
use tracing::info;

#[derive(Debug, Parser)]
#[command(
    name = "edge-agent",
    version,
    about = "edgeplay edge agent: renders, encodes and serves game sessions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the Vulkan device and the video encoder this machine would use.
    Probe {
        #[command(flatten)]
        media: MediaArgs,
    },
    /// Run sessions offline: play an input script, encode to a file, print per-stage latency.
    Encode(EncodeArgs),
    /// Serve live sessions.
    Run(Box<RunArgs>),
}

#[derive(Debug, clap::Args)]
struct MediaArgs {
    /// Video encoder: NVENC when a real encoder session opens, else x264.
    #[arg(long, value_enum, default_value = "auto", env = "EDGEPLAY_ENCODER")]
    encoder: EncoderChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Pace {
    /// One frame per 1/fps seconds, as a live session runs.
    Realtime,
    /// Frames back to back: measures what the machine sustains.
    Max,
}

#[derive(Debug, clap::Args)]
struct EncodeArgs {
    #[command(flatten)]
    media: MediaArgs,
    /// Picture size: 1280x720 or 1920x1080.
    #[arg(long, default_value = "1280x720", value_parser = parse_resolution)]
    resolution: (u32, u32),
    /// Frames (and game ticks) per second: 30 or 60.
    #[arg(long, default_value_t = 60)]
    fps: u32,
    /// Frames to produce per session.
    #[arg(long, default_value_t = 600)]
    frames: u32,
    /// Input script (JSON lines, see docs/input-script.md) played into every session.
    #[arg(long)]
    input_script: Option<PathBuf>,
    /// Output file: .h264 (Annex-B), .mkv (video and Opus audio) or .mp4 (video).
    /// With several sessions, session N writes to NAME-sN.EXT.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Target video bitrate in kbit/s.
    #[arg(long, default_value_t = 6000)]
    bitrate_kbps: u32,
    /// Frames between periodic keyframes (0: only the first).
    #[arg(long, default_value_t = 0)]
    keyframe_interval: u32,
    /// Game seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Sessions run side by side on the shared GPU, each with its own game and encoder.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    sessions: u32,
    /// Frame pacing.
    #[arg(long, value_enum, default_value = "realtime")]
    pace: Pace,
    /// x264 sliced threads per session (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: u32,
    /// Do not encode the game's sound.
    #[arg(long)]
    no_audio: bool,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    media: MediaArgs,
    /// Serve sessions locally without a broker: mints dev sessions on loopback.
    #[arg(long)]
    dev: bool,
    /// HTTP listen address (/healthz, /metrics and the session API).
    #[arg(long, default_value = "127.0.0.1:8080", env = "EDGEPLAY_LISTEN")]
    listen: std::net::SocketAddr,
    /// Most sessions served at once, WHEP and QUIC together (the capacity told to the broker);
    /// joins beyond it are refused at once (503 + Retry-After, or the QUIC close code
    /// EDGE_FULL).
    #[arg(long, default_value_t = 4)]
    max_sessions: usize,
    /// A live session whose player sends no input for this many seconds ends (`idle`, told to
    /// the player and the broker); 0 never ends one for that.
    #[arg(long, default_value_t = 600)]
    idle_secs: u64,
    /// QUIC (edgeplay/1) listen address for the native SDK; if it is taken, the edge serves
    /// HTTP/WebRTC only and says so.
    #[arg(long, default_value = "127.0.0.1:4433", env = "EDGEPLAY_QUIC_LISTEN")]
    quic_listen: std::net::SocketAddr,
    #[command(flatten)]
    broker: BrokerArgs,
}

fn parse_resolution(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("`{s}` is not WIDTHxHEIGHT; use 1280x720 or 1920x1080"))?;
    let w = w
        .trim()
        .parse()
        .map_err(|_| format!("bad width in `{s}`; use 1280x720 or 1920x1080"))?;
    let h = h
        .trim()
        .parse()
        .map_err(|_| format!("bad height in `{s}`; use 1280x720 or 1920x1080"))?;
    Ok((w, h))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Probe { media } => probe(&media),
        Command::Encode(args) => encode_cmd(&args),
        Command::Run(args) => run_cmd(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn probe(media: &MediaArgs) -> Result<()> {
    let gpu = Gpu::new().context("Vulkan")?;
    let kind = encode::probe(media.encoder).context("video encoder")?;
    let d = gpu.info();
    println!(
        "vulkan device: {} ({}, vendor {:#06x}, Vulkan {}, driver {})",
        d.name, d.device_type, d.vendor_id, d.api_version, d.driver
    );
    println!("video encoder: {kind}");
    Ok(())
}

/// Writer path for session `i` of `n`: NAME.EXT alone, NAME-sI.EXT with several.
fn out_path(out: &Path, i: u32, n: u32) -> PathBuf {
    if n == 1 {
        return out.to_path_buf();
    }
    let stem = out
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let name = match out.extension() {
        Some(ext) => format!("{stem}-s{i}.{}", ext.to_string_lossy()),
        None => format!("{stem}-s{i}"),
    };
    out.with_file_name(name)
}

struct SessionReport {
    frames: u32,
    wall: Duration,
    stats: StageStats,
    final_hash: u64,
    last_input_seq: u64,
    late: u32,
}

fn encode_cmd(args: &EncodeArgs) -> Result<()> {
    let script = match &args.input_script {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read input script {}", path.display()))?;
            parse_script(&text).with_context(|| format!("input script {}", path.display()))?
        }
        None => Vec::new(),
    };
    let (width, height) = args.resolution;
    let encoder = encode::probe(args.media.encoder).context("video encoder")?;
    let cfg = PipelineConfig {
        width,
        height,
        fps: args.fps,
        bitrate_kbps: args.bitrate_kbps,
        encoder,
        keyframe_interval: args.keyframe_interval,
        threads: args.threads,
        audio: !args.no_audio,
    };
    cfg.validate()?;
    if let Some(out) = &args.out {
        MediaFileWriter::check_extension(out)?;
    }
    let gpu = Gpu::new().context("Vulkan")?;
    info!(device = %gpu.info().name, encoder = %cfg.encoder, "encoding");

    let started = Instant::now();
    let reports: Vec<Result<SessionReport>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.sessions)
            .map(|i| {
                let gpu = gpu.clone();
                let cfg = cfg.clone();
                let script = &script;
                let out = args.out.as_deref().map(|o| out_path(o, i, args.sessions));
                scope.spawn(move || {
                    run_offline(&gpu, &cfg, args, script, out.as_deref())
                        .with_context(|| format!("session {i}"))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail_panic()))
            .collect()
    });
    let wall = started.elapsed();
    let reports = reports.into_iter().collect::<Result<Vec<_>>>()?;

    println!(
        "device: {}   encoder: {}   {}x{} @ {} fps   pace: {:?}",
        gpu.info().name,
        cfg.encoder,
        width,
        height,
        args.fps,
        args.pace
    );
    let mut total_frames = 0;
    for (i, r) in reports.iter().enumerate() {
        total_frames += r.frames;
        #[allow(clippy::cast_precision_loss, reason = "frame counts fit f64 exactly")]
        let fps = f64::from(r.frames) / r.wall.as_secs_f64();
        println!(
            "\nsession {i}: {} frames in {:.2} s = {fps:.1} fps, {} late; final tick state hash {:016x}, last input {}",
            r.frames,
            r.wall.as_secs_f64(),
            r.late,
            r.final_hash,
            r.last_input_seq
        );
        print!("{}", r.stats.table());
    }
    if reports.len() > 1 {
        let all = merged_table(&reports);
        println!("\nall sessions:");
        print!("{all}");
    }
    println!(
        "\ntotal: {} sessions, {total_frames} frames in {:.2} s = {:.1} frames/s sustained",
        reports.len(),
        wall.as_secs_f64(),
        f64::from(total_frames) / wall.as_secs_f64()
    );
    Ok(())
}

fn bail_panic() -> Result<SessionReport> {
    bail!("a session thread panicked; rerun with RUST_BACKTRACE=1 and report it")
}

fn merged_table(reports: &[SessionReport]) -> StageTable {
    let mut all = StageStats::new(reports.iter().map(|r| r.frames as usize).sum());
    for r in reports {
        all.merge(&r.stats);
    }
    all.table()
}

fn run_offline(
    gpu: &Gpu,
    cfg: &PipelineConfig,
    args: &EncodeArgs,
    script: &[ScriptedInput],
    out: Option<&Path>,
) -> Result<SessionReport> {
    let game = Game::new(args.seed, GameConfig { tick_hz: cfg.fps })?;
    let mut pipeline = SessionPipeline::new(gpu, cfg, game)?;
    let mut writer = out
        .map(|p| MediaFileWriter::new(p, &cfg.video(), cfg.audio))
        .transpose()?;
    let mut stats = StageStats::new(args.frames as usize);
    let frame_duration = Duration::from_secs(1) / cfg.fps;
    let mut next_input = 0;
    let mut late = 0;
    let started = Instant::now();
    let mut deadline = started;
    for n in 0..args.frames {
        if args.pace == Pace::Realtime {
            let now = Instant::now();
            if now < deadline {
                std::thread::sleep(deadline - now);
            } else if now - deadline > frame_duration {
                late += 1;
                deadline = now;
            }
            deadline += frame_duration;
        }
        let keyframe = n == 0 || (cfg.keyframe_interval > 0 && n % cfg.keyframe_interval == 0);
        let produced = pipeline.produce(keyframe, |game| {
            while let Some(input) = script.get(next_input) {
                if input.tick > game.tick() {
                    break;
                }
                game.apply(input.seq, &input.event)?;
                next_input += 1;
            }
            Ok(())
        })?;
        stats.record(&produced.timings);
        if let Some(w) = &mut writer {
            w.write_video(&produced.video)?;
            for a in &produced.audio {
                w.write_audio(a)?;
            }
        }
    }
    let wall = started.elapsed();
    if let Some(w) = writer {
        w.finish()?;
    }
    Ok(SessionReport {
        frames: pipeline.frames(),
        wall,
        stats,
        final_hash: pipeline.game().state_hash(),
        last_input_seq: pipeline.game().last_input_seq(),
        late,
    })
}

fn run_cmd(args: RunArgs) -> Result<()> {
    if !args.dev && args.broker.broker.is_none() {
        bail!(
            "`edge-agent run` serves either a broker's players (`--broker http://HOST:PORT`) or local dev sessions (`--dev`): pick one"
        );
    }
    if args.dev && args.broker.broker.is_some() {
        bail!("`--dev` and `--broker` exclude each other: drop one");
    }
    if args.max_sessions == 0 {
        bail!("`--max-sessions 0` would refuse every player: give at least 1");
    }
    if args.max_sessions > edgeplay_protocol::lifecycle::MAX_RUNNING {
        bail!(
            "`--max-sessions {}` is over the {} sessions one edge may run: give at most that",
            args.max_sessions,
            edgeplay_protocol::lifecycle::MAX_RUNNING
        );
    }
    let encoder = encode::probe(args.media.encoder).context("video encoder")?;
    let gpu = Gpu::new().context("Vulkan")?;
    let metrics = Metrics::new();
    metrics.set_encoder(&encoder.to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .context("cannot start the async runtime")?;
    // Until the broker mints join tokens, the dev edge mints its own, printed at start; HTTP
    // (WHEP) and QUIC accept the same one.
    let token = DevToken::random().context("cannot mint a dev token")?;
    let dev = DevServerConfig {
        listen: args.listen,
        max_sessions: args.max_sessions,
        idle: (args.idle_secs > 0).then(|| std::time::Duration::from_secs(args.idle_secs)),
        encoder: encoder.clone(),
        dev_token: Some(token.as_str().to_owned()),
        player_dir: std::env::var_os("EDGEPLAY_PLAYER_DIR").map_or_else(
            || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-sdk/web/dist"),
            PathBuf::from,
        ),
    };
    let quic_pipeline = PipelineConfig {
        width: 1280,
        height: 720,
        fps: 60,
        bitrate_kbps: 6000,
        encoder,
        keyframe_interval: 0,
        threads: 0,
        audio: true,
    };
    if !args.dev {
        // QUIC takes its slots from the edge's one admission (of --max-sessions), built there.
        let quic = QuicConfig::new(args.quic_listen, quic_pipeline);
        let edge = broker_mode::Edge {
            http: DevServerConfig {
                dev_token: None,
                ..dev
            },
            gpu_name: gpu.info().name.clone(),
            gpu,
            metrics,
            quic,
        };
        return runtime.block_on(broker_mode::serve(args.broker, edge));
    }
    runtime.block_on(async {
        // One admission for WHEP, dev sessions and QUIC: the edge never runs more than
        // --max-sessions, whatever mix of joins arrives at once.
        let admission = Admission::with_idle(args.max_sessions, dev.idle, &metrics);
        let quic_cfg = QuicConfig::new(args.quic_listen, quic_pipeline);
        let quic = match QuicEdge::bind_shared(
            quic_cfg,
            Arc::new(token.clone()),
            gpu.clone(),
            Arc::clone(&metrics),
            admission.clone(),
        ) {
            Ok(q) => {
                println!(
                    "edge-agent --dev QUIC (edgeplay/1) on {} certificate sha256 {} token {}",
                    q.local_addr().context("QUIC socket")?,
                    q.fingerprint_hex(),
                    token.as_str()
                );
                Some(q)
            }
            Err(e) => {
                tracing::warn!("QUIC is off: {e}");
                None
            }
        };
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(());
        let http = http::serve_dev(dev, gpu, Arc::clone(&metrics), admission, async move {
            http::shutdown_signal().await;
            drop(stop_tx);
        });
        let quic = async move {
            match quic {
                Some(q) => {
                    q.serve(async move {
                        let _ = stop_rx.changed().await;
                    })
                    .await
                }
                None => Ok(()),
            }
        };
        let (h, q) = tokio::join!(http, quic);
        h?;
        q?;
        anyhow::Ok(())
    })?;
    Ok(())
}
