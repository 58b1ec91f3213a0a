//! `cargo xtask bench pipeline`: the edge's media path against a plain GStreamer baseline.
//!
//! A (edgeplay): game tick → Vulkan render → GPU NV12 convert → readback → x264 through the
//! edge's encoder, one session, paced at the frame rate; its game runs on from round to round.
//! B (baseline): a plain `appsrc ! x264enc ! h264parse ! appsink` pipeline, written here with
//! nothing from the edge but the level string, encoding the very frames A encoded in the round
//! before it: after each A round a second game, stepped in lockstep with A's and checked
//! against each frame's state hash, renders the same scenes with the same stamps (untimed).
//!
//! Like with like: the same x264 settings (zerolatency, ultrafast, no B-frames, sliced threads,
//! constrained baseline, the same level, no automatic keyframe: one IDR at the start, as the
//! edge inserts none unasked), the same pace, pictures in pooled buffers filled before the
//! timer starts, and the same span timed on both sides: push of the raw picture → its access
//! unit out of the parser. A's "total" adds the tick, render, convert and readback to that.
//!
//! Rounds alternate A, B, A, B, … in one process, never at the same time, so both see the same
//! machine and neither steals the other's cores. Printed: the machine (CPU model, cores, load
//! average before and after), p50/p95/p99/max of each over all frames with the range of the
//! per-round p50s (each round a repetition), the ratios, and the frames per second held.
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use edgeplay_benches::{load_average, machine, spread};
use edgeplay_game::game::{Game, GameConfig};
use edgeplay_game::stamp::Stamp;
use edgeplay_media::encode::{self, EncoderChoice, EncoderKind};
use edgeplay_media::gpu::Gpu;
use edgeplay_media::pipeline::{PipelineConfig, SessionPipeline};
use edgeplay_media::stats::{Stage, StageStats, Summary, Window, ms};
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
    /// Count instructions per frame of each CPU-bound stage under callgrind after the rounds.
    instructions: bool,
    /// Internal: run as callgrind's child, encoding (edge, baseline) frames of the pictures in
    /// the file `pictures`.
    count_child: Option<[u32; 2]>,
    pictures: Option<std::path::PathBuf>,
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
        instructions: false,
        count_child: None,
        pictures: None,
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
            "--instructions" => a.instructions = true,
            "--count-child" => {
                let v = value("--count-child")?;
                let n: Vec<u32> = v
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .context("--count-child EDGE,BASELINE")?;
                a.count_child = Some(
                    n.try_into()
                        .map_err(|_| anyhow!("--count-child takes two counts"))?,
                );
            }
            "--pictures" => a.pictures = Some(value("--pictures")?.into()),
            "-h" | "--help" => {
                println!(
                    "usage: pipeline [--resolution 1280x720] [--fps 60] [--rounds 8] [--frames 120] \
                     [--bitrate-kbps 6000] [--max] [--instructions]\n  --max: frames back to back instead of paced\n  \
                     --instructions: then count instructions per frame of each CPU-bound stage under \
                     valgrind's callgrind (minutes)"
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
    pool: gst::BufferPool,
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
               threads={threads} bitrate={br} key-int-max={keyint} byte-stream=true \
             ! video/x-h264,profile=constrained-baseline,level=(string){level} \
             ! h264parse config-interval=-1 \
             ! video/x-h264,stream-format=byte-stream,alignment=au \
             ! appsink name=sink sync=false max-buffers=4",
            w = a.width,
            h = a.height,
            fps = a.fps,
            br = a.bitrate_kbps,
            keyint = i32::MAX,
            level = encode::h264_level(a.width, a.height, a.fps, a.bitrate_kbps),
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
        let pool = gst::BufferPool::new();
        let mut config = pool.config();
        config.set_params(None, a.width * a.height * 3 / 2, 2, 0);
        pool.set_config(config)?;
        pool.set_active(true)?;
        pipeline.set_state(gst::State::Playing)?;
        Ok(Self {
            pipeline,
            src,
            sink,
            pool,
            frame_duration: Duration::from_secs(1) / a.fps,
            n: 0,
        })
    }

    /// Copies one raw frame into a pooled buffer (untimed), pushes it and waits for its access
    /// unit; returns push → AU time, the span the edge's encode stage times.
    fn encode(&mut self, nv12: &[u8]) -> Result<Duration> {
        let mut buffer = self.pool.acquire_buffer(None)?;
        {
            let b = buffer
                .get_mut()
                .ok_or_else(|| anyhow!("pooled buffer is shared"))?;
            let pts = self.frame_duration.as_nanos() as u64 * self.n;
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_duration(gst::ClockTime::from_nseconds(
                self.frame_duration.as_nanos() as u64,
            ));
            b.map_writable()?.copy_from_slice(nv12);
        }
        self.n += 1;
        let pushed = Instant::now();
        self.src.push_buffer(buffer)?;
        self.sink
            .try_pull_sample(gst::ClockTime::from_seconds(2))
            .ok_or_else(|| anyhow!("baseline produced no access unit within 2 s"))?;
        Ok(pushed.elapsed())
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        let _ = self.pool.set_active(false);
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

/// Where one statistic sits over all frames, and how far the rounds' own p50s spread.
fn line(name: &str, all: &Summary, round_p50s: &[Duration]) {
    let p50s: Vec<f64> = round_p50s.iter().map(|&d| ms(d)).collect();
    println!(
        "{name:<30} {:>8.2} {:>8.2} {:>8.2} {:>8.2}   {}",
        ms(all.p50),
        ms(all.p95),
        ms(all.p99),
        ms(all.max),
        spread(&p50s, 2)
    );
}

fn main() -> Result<()> {
    let a = parse_args()?;
    if let Some(counts) = a.count_child {
        let path = a
            .pictures
            .as_deref()
            .ok_or_else(|| anyhow!("--count-child needs --pictures FILE"))?;
        return count_child(&a, counts, path);
    }
    let threads =
        u32::try_from(std::thread::available_parallelism().map_or(2, usize::from)).unwrap_or(2);
    let gpu = Gpu::new().context("Vulkan")?;
    let encoder = encode::probe(EncoderChoice::X264).context("x264")?;
    if encoder != EncoderKind::X264 {
        bail!("the bench compares x264 with x264; the probe chose {encoder}");
    }
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
    let seed = 7;
    let mut ours = SessionPipeline::new(&gpu, &cfg, Game::new(seed, GameConfig { tick_hz })?)?;
    // B's frames: a second game stepped once per A frame, as A's pipeline steps its own.
    let mut mirror = Game::new(seed, GameConfig { tick_hz })?;
    let mut target = gpu.create_target(a.width, a.height)?;
    let frame_bytes = (a.width * a.height * 3 / 2) as usize;
    let mut raw = vec![0u8; frame_bytes * a.frames_per_round as usize];
    // The stamps of A's frames in the current round, to render the same frames for B.
    let mut recorded: Vec<Stamp> = Vec::with_capacity(a.frames_per_round as usize);
    let mut baseline = Baseline::new(&a, threads)?;

    println!(
        "pipeline bench: {}x{} @ {} fps, {} rounds x {} frames each side, x264 {} kbit/s, {} threads, {}, device {}",
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
    println!(
        "machine: {}; load average before: {}",
        machine(),
        load_average()
    );
    println!(
        "timed: edgeplay's stages as the edge times them; its encode and the baseline's: push of \
         a filled pooled picture → access unit out; same frames, same x264 settings, one IDR"
    );
    let capacity = (a.rounds * a.frames_per_round) as usize;
    let mut our_stats = StageStats::new(capacity);
    let mut our_rounds: Vec<StageStats> = Vec::new();
    let mut base = Window::new(capacity);
    let mut base_rounds: Vec<Window> = Vec::new();
    let frame = Duration::from_secs(1) / a.fps;
    let (mut our_wall, mut base_wall) = (Duration::ZERO, Duration::ZERO);
    for round in 0..a.rounds {
        // A: edgeplay.
        recorded.clear();
        let mut this_round = StageStats::new(a.frames_per_round as usize);
        let started = Instant::now();
        let mut deadline = started;
        for n in 0..a.frames_per_round {
            pace(&mut deadline, frame, a.paced);
            let keyframe = round == 0 && n == 0;
            let p = ours.produce(keyframe, |_| Ok(()))?;
            our_stats.record(&p.timings);
            this_round.record(&p.timings);
            recorded.push(p.stamp);
        }
        // Up to the next frame's slot: held, n frames take n frame times.
        pace(&mut deadline, frame, a.paced);
        our_wall += started.elapsed();
        our_rounds.push(this_round);

        // The same frames for B, untimed: same scenes (checked by state hash), same stamps.
        for (stamp, chunk) in recorded.iter().zip(raw.chunks_exact_mut(frame_bytes)) {
            mirror.step();
            if mirror.state_hash() != stamp.state_hash {
                bail!(
                    "the mirror game diverged from the edge's at frame {}: B would encode other content",
                    stamp.frame
                );
            }
            target.render_nv12(&mirror.scene(), stamp, chunk)?;
        }

        // B: baseline, the same frames at the same pace.
        let mut this_round = Window::new(a.frames_per_round as usize);
        let started = Instant::now();
        let mut deadline = started;
        for chunk in raw.chunks_exact(frame_bytes) {
            pace(&mut deadline, frame, a.paced);
            let t = baseline.encode(chunk)?;
            base.record(t);
            this_round.record(t);
        }
        pace(&mut deadline, frame, a.paced);
        base_wall += started.elapsed();
        base_rounds.push(this_round);
        eprintln!("round {}/{} done", round + 1, a.rounds);
    }

    println!(
        "\n{:<30} {:>8} {:>8} {:>8} {:>8}   round p50s",
        "ms (all frames)", "p50", "p95", "p99", "max"
    );
    for stage in Stage::ALL {
        let rounds: Vec<Duration> = our_rounds.iter().map(|r| r.summary(stage).p50).collect();
        line(
            &format!("edgeplay {}", stage.name()),
            &our_stats.summary(stage),
            &rounds,
        );
    }
    let b = base.summary();
    let rounds: Vec<Duration> = base_rounds.iter().map(|w| w.summary().p50).collect();
    line("baseline x264 (push→AU)", &b, &rounds);
    let ratio = |x: Duration, y: Duration| x.as_secs_f64() / y.as_secs_f64().max(1e-9);
    // One stage of ours against the baseline: the ratios of the whole run's percentiles, and
    // the spread of the per-round p50 ratios.
    let ratios = |label: &str, stage: Stage| {
        let ours = our_stats.summary(stage);
        let r: Vec<f64> = our_rounds
            .iter()
            .zip(&base_rounds)
            .map(|(o, b)| ratio(o.summary(stage).p50, b.summary().p50))
            .collect();
        println!(
            "{label:<26}p50 {:.3}  p95 {:.3}  p99 {:.3}   (per-round p50 ratios {})",
            ratio(ours.p50, b.p50),
            ratio(ours.p95, b.p95),
            ratio(ours.p99, b.p99),
            spread(&r, 3)
        );
    };
    println!();
    ratios("encode stage / baseline:", Stage::Encode);
    ratios("total / baseline:", Stage::Total);
    let frames = f64::from(a.rounds * a.frames_per_round);
    println!(
        "fps held:                 edgeplay {:.1}  baseline {:.1}  (of {})",
        frames / our_wall.as_secs_f64(),
        frames / base_wall.as_secs_f64(),
        a.fps
    );
    println!("load average after: {}", load_average());
    if a.instructions {
        drop((ours, baseline));
        // The counted pictures: the game's first frames, as both children encode them.
        let mut game = Game::new(seed, GameConfig { tick_hz })?;
        let mut pictures = vec![0u8; frame_bytes * COUNT_PICTURES];
        for (n, p) in pictures.chunks_exact_mut(frame_bytes).enumerate() {
            game.step();
            let stamp = Stamp {
                frame: u32::try_from(n)?,
                tick: u32::try_from(game.tick())?,
                state_hash: game.state_hash(),
                ..Stamp::default()
            };
            target.render_nv12(&game.scene(), &stamp, p)?;
        }
        let path = std::env::temp_dir().join(format!(
            "edgeplay-bench-pictures-{}.nv12",
            std::process::id()
        ));
        std::fs::write(&path, &pictures).context("write the counted pictures")?;
        let counted = instructions(&a, &path);
        let _ = std::fs::remove_file(&path);
        counted?;
    }
    Ok(())
}

/// Frames the instruction counts cover per stage (callgrind runs code some 50 times slower).
const COUNTED_FRAMES: u32 = 16;
/// Distinct pictures the counted encoders cycle through, rendered by every child alike.
const COUNT_PICTURES: usize = 17;

/// Instructions per frame of the encoders, repeatable where times are not: three children
/// under callgrind (every thread counted) do the same set-up (both encoders started, the
/// pictures read) and then nothing, or [`COUNTED_FRAMES`] frames through one encoder; the
/// difference to the first, over the frames, is the encoder's cost per frame, set-up and exit
/// excluded. Render and convert are not counted: lavapipe's worker threads crash under
/// valgrind 3.19 (Debian 12's), so their figures are the times above.
fn instructions(a: &Args, pictures: &std::path::Path) -> Result<()> {
    let me = std::env::current_exe().context("the bench's own path")?;
    let n = COUNTED_FRAMES;
    let runs = [[0, 0], [n, 0], [0, n]];
    println!(
        "\ninstructions per frame (callgrind, every thread; {n} distinct P-frames per encoder \
         after its IDR, each child's set-up subtracted):"
    );
    let mut totals = Vec::new();
    for counts in runs {
        let out_file = std::env::temp_dir().join(format!(
            "edgeplay-callgrind-{}-{}.out",
            std::process::id(),
            totals.len()
        ));
        let out = std::process::Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out_file.display()))
            .arg(&me)
            .args([
                "--resolution",
                &format!("{}x{}", a.width, a.height),
                "--fps",
                &a.fps.to_string(),
                "--bitrate-kbps",
                &a.bitrate_kbps.to_string(),
                "--count-child",
                &format!("{},{}", counts[0], counts[1]),
                "--pictures",
            ])
            .arg(pictures)
            .output()
            .context("run valgrind (`cargo xtask bench` installs it)")?;
        let _ = std::fs::remove_file(&out_file);
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("the counting child failed under callgrind: {err}");
        }
        let collected: u64 = err
            .lines()
            .find_map(|l| {
                l.split_once("Collected :")
                    .map(|(_, n)| n.trim().to_owned())
            })
            .ok_or_else(|| anyhow!("callgrind printed no instruction total: {err}"))?
            .parse()
            .context("callgrind's instruction total")?;
        totals.push(collected);
    }
    let per_frame = |i: usize| {
        #[allow(
            clippy::cast_precision_loss,
            reason = "instruction counts far below 2^53"
        )]
        let d = totals[i].saturating_sub(totals[0]) as f64 / f64::from(n) / 1e6;
        d
    };
    let (ours, base) = (per_frame(1), per_frame(2));
    println!("{:<30} {ours:>8.2} M", "edgeplay encode (edge encoder)");
    println!("{:<30} {base:>8.2} M", "baseline x264");
    println!("encode / baseline: {:.3}", ours / base.max(1e-9));
    Ok(())
}

/// Callgrind's child: the same set-up in every run (both encoders, the pictures from `path`,
/// one IDR through each), then `edge` frames through the edge's encoder and `base` through the baseline, each copying
/// a picture into its pooled buffer as the timed runs do. No Vulkan device is opened.
fn count_child(a: &Args, [edge, base]: [u32; 2], path: &std::path::Path) -> Result<()> {
    let threads =
        u32::try_from(std::thread::available_parallelism().map_or(2, usize::from)).unwrap_or(2);
    let frame_bytes = (a.width * a.height * 3 / 2) as usize;
    let pictures = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    if pictures.len() != frame_bytes * COUNT_PICTURES {
        bail!(
            "{} does not hold {COUNT_PICTURES} pictures of this size",
            path.display()
        );
    }
    let picture = |n: u32| {
        let i = n as usize % COUNT_PICTURES;
        &pictures[i * frame_bytes..(i + 1) * frame_bytes]
    };
    let mut ours = encode::VideoEncoder::new(&encode::VideoConfig {
        width: a.width,
        height: a.height,
        fps: a.fps,
        bitrate_kbps: a.bitrate_kbps,
        encoder: EncoderKind::X264,
        keyframe_interval: 0,
        threads,
    })?;
    let mut baseline = Baseline::new(a, threads)?;
    let frame = Duration::from_secs(1) / a.fps;
    // The IDR each stream starts with is set-up: the counted frames are the P-frames after it.
    ours.encode(Duration::ZERO, true, |buf| buf.copy_from_slice(picture(0)))?;
    baseline.encode(picture(0))?;
    for n in 1..=edge {
        ours.encode(frame * n, false, |buf| buf.copy_from_slice(picture(n)))?;
    }
    for n in 1..=base {
        baseline.encode(picture(n))?;
    }
    Ok(())
}
