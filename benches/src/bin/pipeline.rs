//! `cargo xtask bench pipeline`: the edge's media path against a plain GStreamer baseline.
//!
//! A (edgeplay): game tick → Vulkan render → GPU NV12 convert → readback → x264 through the
//! edge's encoder, one session, paced at the frame rate.
//! B (baseline): a plain `appsrc ! x264enc ! h264parse ! appsink` pipeline, written here with
//! nothing from the edge, pushing the same raw NV12 frames (rendered once up front) with the
//! same x264 settings at the same pace.
//!
//! Rounds alternate A, B, A, B, … in one process, never at the same time, so both see the same
//! machine and neither steals the other's cores. Printed: p50/p95/p99 of each, the ratios, and
//! the frames per second achieved.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use edgeplay_edge::encode::{self, EncoderChoice, EncoderKind};
use edgeplay_edge::gpu::Gpu;
use edgeplay_edge::pipeline::{PipelineConfig, SessionPipeline};
use edgeplay_edge::stats::{Stage, StageStats, Summary, Window, ms};
use edgeplay_protocol::game::{Game, GameConfig};
use edgeplay_protocol::stamp::Stamp;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

struct Args {
    width: u32,
    height: u32,
    fps: u32,
    rounds: u32,
    frames_per_round: u32,
    bitrate_kbps: u32,
    paced: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        width: 1280,
        height: 720,
        fps: 60,
        rounds: 8,
        frames_per_round: 120,
        bitrate_kbps: 6000,
        paced: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| anyhow!("{name} needs a value"));
        match flag.as_str() {
            "--resolution" => {
                let v = value("--resolution")?;
                let (w, h) = v
                    .split_once('x')
                    .ok_or_else(|| anyhow!("--resolution {v}: use WIDTHxHEIGHT"))?;
                a.width = w.parse().context("--resolution width")?;
                a.height = h.parse().context("--resolution height")?;
            }
            "--fps" => a.fps = value("--fps")?.parse().context("--fps")?,
            "--rounds" => a.rounds = value("--rounds")?.parse().context("--rounds")?,
            "--frames" => {
                a.frames_per_round = value("--frames")?.parse().context("--frames")?;
            }
            "--bitrate-kbps" => {
                a.bitrate_kbps = value("--bitrate-kbps")?.parse().context("--bitrate-kbps")?;
            }
            "--max" => a.paced = false,
            "-h" | "--help" => {
                println!(
                    "usage: pipeline [--resolution 1280x720] [--fps 60] [--rounds 8] [--frames 120] \
                     [--bitrate-kbps 6000] [--max]\n  --max: frames back to back instead of paced"
                );
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}; see --help"),
        }
    }
    if a.rounds == 0 || a.frames_per_round == 0 {
        bail!("--rounds and --frames must be at least 1");
    }
    Ok(a)
}

/// The plain GStreamer baseline: nothing from the edge's encoder module.
struct Baseline {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
    frame_duration: Duration,
    n: u64,
}

impl Baseline {
    fn new(a: &Args, threads: u32) -> Result<Self> {
        gst::init()?;
        let desc = format!(
            "appsrc name=src is-live=true format=time do-timestamp=false \
               caps=video/x-raw,format=NV12,width={w},height={h},framerate={fps}/1 \
             ! x264enc tune=zerolatency speed-preset=ultrafast bframes=0 sliced-threads=true \
               threads={threads} bitrate={br} key-int-max=0 byte-stream=true \
             ! h264parse config-interval=-1 \
             ! video/x-h264,stream-format=byte-stream,alignment=au \
             ! appsink name=sink sync=false max-buffers=4",
            w = a.width,
            h = a.height,
            fps = a.fps,
            br = a.bitrate_kbps,
        );
        let pipeline = gst::parse::launch(&desc)?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow!("baseline is not a pipeline"))?;
        let src = pipeline
            .by_name("src")
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .ok_or_else(|| anyhow!("baseline appsrc missing"))?;
        let sink = pipeline
            .by_name("sink")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| anyhow!("baseline appsink missing"))?;
        pipeline.set_state(gst::State::Playing)?;
        Ok(Self {
            pipeline,
            src,
            sink,
            frame_duration: Duration::from_secs(1) / a.fps,
            n: 0,
        })
    }

    /// Pushes one raw frame and waits for its access unit; returns push → AU time.
    fn encode(&mut self, nv12: &[u8]) -> Result<Duration> {
        let started = Instant::now();
        let mut buffer = gst::Buffer::from_slice(nv12.to_vec());
        {
            let b = buffer
                .get_mut()
                .ok_or_else(|| anyhow!("fresh buffer not writable"))?;
            let pts = self.frame_duration.as_nanos() as u64 * self.n;
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_duration(gst::ClockTime::from_nseconds(
                self.frame_duration.as_nanos() as u64,
            ));
        }
        self.n += 1;
        self.src.push_buffer(buffer)?;
        self.sink
            .try_pull_sample(gst::ClockTime::from_seconds(2))
            .ok_or_else(|| anyhow!("baseline produced no access unit within 2 s"))?;
        Ok(started.elapsed())
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn pace(deadline: &mut Instant, frame: Duration, paced: bool) {
    if !paced {
        return;
    }
    let now = Instant::now();
    if now < *deadline {
        std::thread::sleep(*deadline - now);
    } else if now - *deadline > frame {
        *deadline = now;
    }
    *deadline += frame;
}

fn line(name: &str, s: &Summary) {
    println!(
        "{name:<28} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        ms(s.p50),
        ms(s.p95),
        ms(s.p99),
        ms(s.max)
    );
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let threads =
        u32::try_from(std::thread::available_parallelism().map_or(2, usize::from)).unwrap_or(2);
    let gpu = Gpu::new().context("Vulkan")?;
    let encoder = encode::probe(EncoderChoice::X264).context("x264")?;
    debug_assert_eq!(encoder, EncoderKind::X264);
    let cfg = PipelineConfig {
        width: a.width,
        height: a.height,
        fps: a.fps,
        bitrate_kbps: a.bitrate_kbps,
        encoder,
        keyframe_interval: 0,
        threads,
        audio: false,
    };
    let tick_hz = a.fps;
    let mut ours = SessionPipeline::new(&gpu, &cfg, Game::new(7, GameConfig { tick_hz })?)?;

    // The baseline's raw frames: the same game rendered once, up front.
    let frame_bytes = (a.width * a.height * 3 / 2) as usize;
    let mut raw = vec![0u8; frame_bytes * a.frames_per_round as usize];
    {
        let mut target = gpu.create_target(a.width, a.height)?;
        let mut game = Game::new(7, GameConfig { tick_hz })?;
        for (n, chunk) in raw.chunks_exact_mut(frame_bytes).enumerate() {
            game.step();
            let stamp = Stamp {
                frame: u32::try_from(n)?,
                tick: u32::try_from(game.tick())?,
                state_hash: game.state_hash(),
                ..Stamp::default()
            };
            target.render_nv12(&game.scene(), &stamp, chunk)?;
        }
    }
    let mut baseline = Baseline::new(&a, threads)?;

    println!(
        "pipeline bench: {}x{} @ {} fps, {} rounds x {} frames, x264 {} kbit/s, {} threads, {}, device {}",
        a.width,
        a.height,
        a.fps,
        a.rounds,
        a.frames_per_round,
        a.bitrate_kbps,
        threads,
        if a.paced { "paced" } else { "back to back" },
        gpu.info().name
    );
    let capacity = (a.rounds * a.frames_per_round) as usize;
    let mut our_stats = StageStats::new(capacity);
    let mut base = Window::new(capacity);
    let frame = Duration::from_secs(1) / a.fps;
    let (mut our_wall, mut base_wall) = (Duration::ZERO, Duration::ZERO);
    for round in 0..a.rounds {
        // A: edgeplay.
        let started = Instant::now();
        let mut deadline = started;
        for n in 0..a.frames_per_round {
            pace(&mut deadline, frame, a.paced);
            let keyframe = round == 0 && n == 0;
            let p = ours.produce(keyframe, |_| Ok(()))?;
            our_stats.record(&p.timings);
        }
        our_wall += started.elapsed();
        // B: baseline, same frames, same pace.
        let started = Instant::now();
        let mut deadline = started;
        for chunk in raw.chunks_exact(frame_bytes) {
            pace(&mut deadline, frame, a.paced);
            base.record(baseline.encode(chunk)?);
        }
        base_wall += started.elapsed();
        eprintln!("round {}/{} done", round + 1, a.rounds);
    }

    println!(
        "\n{:<28} {:>8} {:>8} {:>8} {:>8}",
        "ms", "p50", "p95", "p99", "max"
    );
    for stage in Stage::ALL {
        line(
            &format!("edgeplay {}", stage.name()),
            &our_stats.summary(stage),
        );
    }
    let b = base.summary();
    line("baseline x264 (push→AU)", &b);
    let enc = our_stats.summary(Stage::Encode);
    let total = our_stats.summary(Stage::Total);
    let ratio = |x: Duration, y: Duration| x.as_secs_f64() / y.as_secs_f64().max(1e-9);
    println!(
        "\nencode stage / baseline:  p50 {:.3}  p95 {:.3}  p99 {:.3}",
        ratio(enc.p50, b.p50),
        ratio(enc.p95, b.p95),
        ratio(enc.p99, b.p99)
    );
    println!(
        "total / baseline:         p50 {:.3}  p95 {:.3}  p99 {:.3}",
        ratio(total.p50, b.p50),
        ratio(total.p95, b.p95),
        ratio(total.p99, b.p99)
    );
    let frames = f64::from(a.rounds * a.frames_per_round);
    println!(
        "fps achieved:             edgeplay {:.1}  baseline {:.1}",
        frames / our_wall.as_secs_f64(),
        frames / base_wall.as_secs_f64()
    );
    Ok(())
}
