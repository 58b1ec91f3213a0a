//! `edgeplay-play`: the player CLI over QUIC.
//!
//! Window mode (the default) shows the session and sends keyboard and mouse:
//!
//! ```text
//! edgeplay-play --edge 127.0.0.1:4433 --fingerprint <64 hex> --token <token>
//! ```
//!
//! Headless mode, for tests and checkers, takes N decoded frames, writes each as a PPM picture
//! and its frame stamp as one JSON line, and prints a summary (fps, glass-to-glass p50/p95/p99):
//!
//! ```text
//! edgeplay-play --edge … --fingerprint … --token … --frames 300 --dump out/ --input script.jsonl
//! ```
//!
//! The address, fingerprint and token are what `edge-agent run --dev` prints;
//! `EDGEPLAY_EDGE`, `EDGEPLAY_FINGERPRINT` and `EDGEPLAY_TOKEN` stand in for the flags. Or name
//! only a session broker, which places the player on the candidate edge that answers its UDP
//! echo fastest:
//!
//! ```text
//! edgeplay-play --broker http://127.0.0.1:8090 --region eu-west
//! ```
//!
//! It exits non-zero with one line saying what went wrong and what to do: 75 (`EX_TEMPFAIL`)
//! when the edge is full (every session slot taken: try again later or another edge), 1 for
//! anything else.

mod image;
mod window;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use edgeplay_client::broker::{BrokerError, SessionRequest};
use edgeplay_client::{Client, ClientError, Frame, Session, parse_fingerprint};
use edgeplay_game::stamp::{Stamp, read_luma};
use edgeplay_protocol::input::{ScriptedInput, parse_script};

/// Play an edgeplay session over QUIC: in a window, or headless with `--frames N`.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The edge's QUIC address (host:port), as `edge-agent run --dev` prints it.
    #[arg(long, env = "EDGEPLAY_EDGE", required_unless_present = "broker")]
    edge: Option<String>,
    /// SHA-256 fingerprint of the edge's certificate (64 hex digits, colons allowed).
    #[arg(long, env = "EDGEPLAY_FINGERPRINT", required_unless_present = "broker")]
    fingerprint: Option<String>,
    /// Join token.
    #[arg(
        long,
        env = "EDGEPLAY_TOKEN",
        hide_env_values = true,
        required_unless_present = "broker"
    )]
    token: Option<String>,
    /// A session broker's URL (`http://HOST:PORT`) instead of an edge: it places the player.
    #[arg(long, env = "EDGEPLAY_BROKER", conflicts_with_all = ["edge", "fingerprint", "token"])]
    broker: Option<String>,
    /// With `--broker`: the region to be placed in.
    #[arg(long, requires = "broker")]
    region: Option<String>,
    /// With `--broker`: the player's name (rate limits and records are per name).
    #[arg(long, requires = "broker")]
    player: Option<String>,
    /// With `--broker`: the broker's Ed25519 public key (64 hex digits); the placement's
    /// signature must verify with it.
    #[arg(long, requires = "broker")]
    broker_key: Option<String>,
    /// Headless: stop after this many decoded frames (no window).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    frames: Option<u64>,
    /// Headless: write each frame as DIR/frame-NNNNNN.ppm and its stamp to DIR/stamps.jsonl.
    #[arg(long, requires = "frames")]
    dump: Option<PathBuf>,
    /// Headless: an input script (JSON lines, docs/input-script.md) to send, each input once
    /// the shown game tick reaches its `tick`.
    #[arg(long, requires = "frames")]
    input: Option<PathBuf>,
    /// Headless: give up when the frames have not all arrived after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if edge_full(&e) => {
            eprintln!("edgeplay-play: edge full: {e:#}");
            ExitCode::from(EXIT_EDGE_FULL)
        }
        Err(e) => {
            eprintln!("edgeplay-play: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The exit status when the edge is full: sysexits' `EX_TEMPFAIL`, so that a script can tell
/// "retry later" from a real failure.
const EXIT_EDGE_FULL: u8 = 75;

/// Whether `e` is the edge refusing the join because every session slot is taken.
fn edge_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<ClientError>(),
            Some(ClientError::EdgeFull { .. })
        ) || matches!(
            c.downcast_ref::<BrokerError>(),
            Some(BrokerError::Connect(ClientError::EdgeFull { .. }))
        )
    })
}

fn run(cli: Cli) -> Result<()> {
    let target = target(&cli)?;
    let script = match &cli.input {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the input script {}", path.display()))?;
            parse_script(&text).with_context(|| format!("input script {}", path.display()))?
        }
        None => Vec::new(),
    };
    if cli.frames.is_none() {
        window::check_display()?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Timers made outside `block_on` (the frame deadlines) need the runtime's clock.
    let _runtime_context = runtime.enter();
    let mut session = runtime.block_on(connect(target))?;
    let result = match cli.frames {
        Some(n) => headless(
            &runtime,
            &mut session,
            n,
            cli.dump.as_deref(),
            &script,
            Duration::from_secs(cli.timeout_s),
        ),
        None => window::run(&runtime, &mut session),
    };
    runtime.block_on(session.close());
    result
}

/// Whom to play with, from the flags (checked before anything else happens).
enum Target {
    /// An edge given by address, certificate fingerprint and join token.
    Edge {
        addr: SocketAddr,
        fingerprint: [u8; 32],
        token: String,
    },
    /// A broker that places the player.
    Broker { url: String, req: SessionRequest },
}

fn target(cli: &Cli) -> Result<Target> {
    if let Some(url) = &cli.broker {
        let player = cli
            .player
            .clone()
            .unwrap_or_else(|| format!("edgeplay-play-{}", std::process::id()));
        let mut req = SessionRequest::new(&player, 1280, 720, 60);
        req.region.clone_from(&cli.region);
        if let Some(hex) = &cli.broker_key {
            let key = edgeplay_protocol::token::from_hex(hex)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .context(
                    "--broker-key: expected 64 hex digits (the broker's Ed25519 public key)",
                )?;
            req.broker_key = Some(key);
        }
        return Ok(Target::Broker {
            url: url.clone(),
            req,
        });
    }
    let (Some(edge), Some(fingerprint), Some(token)) = (&cli.edge, &cli.fingerprint, &cli.token)
    else {
        bail!(
            "pass --edge, --fingerprint and --token (what `edge-agent run --dev` prints), or --broker URL"
        );
    };
    let fingerprint = parse_fingerprint(fingerprint)?;
    let addr: SocketAddr = edge
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| {
            format!("`{edge}` is not a host:port address: pass e.g. 127.0.0.1:4433")
        })?;
    Ok(Target::Edge {
        addr,
        fingerprint,
        token: token.clone(),
    })
}

/// A session with the edge named, or with the one the broker picks.
async fn connect(target: Target) -> Result<Session> {
    match target {
        Target::Edge {
            addr,
            fingerprint,
            token,
        } => Client::connect(addr, fingerprint, &token)
            .await
            .with_context(|| format!("cannot start a session with {addr}")),
        Target::Broker { url, req } => {
            let (session, placed) = Client::connect_via_broker(&url, &req)
                .await
                .with_context(|| format!("cannot get a session through the broker {url}"))?;
            eprintln!(
                "edgeplay-play: placed on edge {} at {} (measured RTT {})",
                placed.edge,
                placed.quic_addr,
                placed
                    .rtt_ms
                    .map_or_else(|| "none".to_owned(), |r| format!("{r:.2} ms"))
            );
            Ok(session)
        }
    }
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The `q`-quantile of sorted values, in milliseconds.
fn quantile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a slice that fits memory"
    )]
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    #[allow(clippy::cast_precision_loss, reason = "microseconds of latency")]
    let ms = sorted[i.min(sorted.len() - 1)] as f64 / 1000.0;
    ms
}

/// Writes dumped frames on a thread of its own: a slow disk holds the player up only once 128
/// frames wait (720p is 2.7 MB a frame, 166 MB/s at 60 fps); then the SDK skips frames, and the
/// summary counts them.
struct Dumper {
    tx: Option<std::sync::mpsc::SyncSender<Frame>>,
    thread: Option<std::thread::JoinHandle<Result<u64>>>,
}

impl Dumper {
    fn start(dir: &Path) -> Result<Self> {
        let dir = dir.to_owned();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Frame>(128);
        let thread = std::thread::Builder::new()
            .name("dump".into())
            .spawn(move || {
                let mut written = 0;
                for frame in rx {
                    let (w, h) = (frame.width as usize, frame.height as usize);
                    let rgb = image::nv12_to_rgb(&frame.data, w, h)
                        .context("a decoded frame is smaller than its size says")?;
                    let path = dir.join(format!("frame-{:06}.ppm", frame.header.frame));
                    let mut file = BufWriter::new(
                        File::create(&path)
                            .with_context(|| format!("cannot create {}", path.display()))?,
                    );
                    image::write_ppm(&mut file, &rgb, w, h)
                        .and_then(|()| file.flush())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    written += 1;
                }
                Ok(written)
            })
            .context("cannot start the frame writer")?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn push(&self, frame: Frame) -> Result<()> {
        match &self.tx {
            Some(tx) if tx.send(frame).is_ok() => Ok(()),
            _ => bail!("the frame writer stopped"),
        }
    }

    /// Waits for every frame to be on disk; returns how many were written.
    fn finish(mut self) -> Result<u64> {
        drop(self.tx.take());
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => bail!("the frame writer panicked"),
        }
    }
}

/// Takes `n` frames, sends the script's inputs on time, dumps, and prints the summary.
fn headless(
    runtime: &tokio::runtime::Runtime,
    session: &mut Session,
    n: u64,
    dump: Option<&Path>,
    script: &[ScriptedInput],
    timeout: Duration,
) -> Result<()> {
    let mut stamps_file = match dump {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the dump folder {}", dir.display()))?;
            let path = dir.join("stamps.jsonl");
            Some(BufWriter::new(File::create(&path).with_context(|| {
                format!("cannot create {}", path.display())
            })?))
        }
        None => None,
    };
    let dumper = dump.map(Dumper::start).transpose()?;
    let deadline = Instant::now() + timeout;
    let mut g2g = Vec::new();
    let (mut bad_stamps, mut out_of_order, mut sent) = (0u64, 0u64, 0usize);
    let mut last: Option<Stamp> = None;
    let (mut first_frame, mut last_frame) = (None, 0u32);
    let mut started: Option<Instant> = None;
    let mut max_input = 0u32;
    for _ in 0..n {
        let frame = runtime
            .block_on(tokio::time::timeout_at(
                deadline.into(),
                session.next_frame(),
            ))
            .map_err(|_| {
                anyhow::anyhow!(
                    "only {} of {n} frames arrived within {} s: the edge or the network is too \
                     slow; raise --timeout-s",
                    g2g.len() + usize::try_from(bad_stamps).unwrap_or(0),
                    timeout.as_secs()
                )
            })?
            .context("the edge ended the session before all frames arrived")?;
        let decoded_unix_us = unix_us()
            .saturating_sub(u64::try_from(frame.decoded_at.elapsed().as_micros()).unwrap_or(0));
        started.get_or_insert(frame.decoded_at);
        first_frame.get_or_insert(frame.header.frame);
        if first_frame != Some(frame.header.frame) && frame.header.frame <= last_frame {
            out_of_order += 1;
        }
        last_frame = frame.header.frame;
        let (w, h) = (frame.width as usize, frame.height as usize);
        let stamp = read_luma(frame.luma(), w, h, w);
        let line = match stamp {
            Ok(s) => {
                if last.is_some_and(|p| s.frame <= p.frame || s.tick < p.tick) {
                    out_of_order += 1;
                }
                last = Some(s);
                max_input = max_input.max(s.input_seq);
                let latency = decoded_unix_us.saturating_sub(s.render_time_us);
                g2g.push(latency);
                serde_json::json!({
                    "frame": s.frame,
                    "tick": s.tick,
                    "input_seq": s.input_seq,
                    "state_hash": format!("{:016x}", s.state_hash),
                    "render_time_us": s.render_time_us,
                    "decoded_unix_us": decoded_unix_us,
                    "g2g_us": latency,
                    "keyframe": frame.header.keyframe,
                    "width": frame.width,
                    "height": frame.height,
                    "stamp_ok": true,
                })
            }
            Err(e) => {
                bad_stamps += 1;
                serde_json::json!({
                    "frame": frame.header.frame,
                    "stamp_ok": false,
                    "error": e.to_string(),
                })
            }
        };
        if let Some(file) = &mut stamps_file {
            writeln!(file, "{line}").context("cannot write stamps.jsonl")?;
        }
        // Send each scripted input once the game shows its tick.
        let shown_tick = last.map_or(0, |s| u64::from(s.tick));
        while let Some(input) = script.get(sent).filter(|i| i.tick <= shown_tick) {
            session.send_input(input.event)?;
            sent += 1;
        }
        if let Some(d) = &dumper {
            d.push(frame)?;
        }
    }
    if let Some(mut file) = stamps_file {
        file.flush().context("cannot write stamps.jsonl")?;
    }
    // Counters as of the last frame taken: frames decoded while the writer drains are not ours.
    let elapsed = started.map_or(Duration::ZERO, |s| s.elapsed());
    let stats = session.stats();
    let written = dumper.map(Dumper::finish).transpose()?;
    g2g.sort_unstable();
    #[allow(clippy::cast_precision_loss, reason = "frame counts")]
    let fps = (n.saturating_sub(1)) as f64 / elapsed.as_secs_f64().max(1e-6);
    println!(
        "edgeplay-play: {n} frames ({}..={last_frame}) in {:.2} s, {fps:.1} fps; stamps {} ok, \
         {bad_stamps} failed; {out_of_order} out of order; {} skipped",
        first_frame.unwrap_or(0),
        elapsed.as_secs_f64(),
        g2g.len(),
        stats.frames_skipped,
    );
    println!(
        "glass-to-glass ms (render start to decoded): p50 {:.2} p95 {:.2} p99 {:.2}",
        quantile_ms(&g2g, 0.50),
        quantile_ms(&g2g, 0.95),
        quantile_ms(&g2g, 0.99),
    );
    println!(
        "inputs: {sent} of {} sent, highest applied {max_input}; rtt {:.2} ms, {:.0} kbit/s and \
         decode {:.2} ms in the last second, {} of {} packets lost",
        script.len(),
        stats.rtt.as_secs_f64() * 1000.0,
        stats.received_kbps_1s,
        stats.decode_time_1s.as_secs_f64() * 1000.0,
        stats.lost_packets,
        stats.sent_packets,
    );
    if let (Some(dir), Some(written)) = (dump, written) {
        println!(
            "dumped {written} frames to {} (frame-NNNNNN.ppm, stamps.jsonl)",
            dir.display()
        );
    }
    if bad_stamps > 0 || out_of_order > 0 {
        bail!(
            "{bad_stamps} frames without a valid stamp and {out_of_order} out of order: the \
             edge's picture is damaged or reordered"
        );
    }
    Ok(())
}
