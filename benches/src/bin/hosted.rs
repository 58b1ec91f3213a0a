//! `cargo xtask bench hosted`: a hosted app's capture → encoded frame, against GStreamer's own
//! `ximagesrc ! videoconvert ! x264enc` on the same display.
//!
//! One sandbox (docs/hosting.md) runs a real app (glxgears by default) at the mode, its CPU held
//! to a fixed share by its cgroup so that its load is the same for both sides. Then, round by
//! round, never at the same time:
//! - A (edgeplay): at each frame's time, one MIT-SHM capture of the screen (a segment the X
//!   server passes by fd), `bgrx_to_nv12` into a pooled encoder picture, the edge's x264
//!   encoder; timed from the frame's scheduled time to its access unit.
//! - B (baseline): `ximagesrc use-damage=false ! videoconvert ! x264enc ! h264parse ! appsink`
//!   on the same display, the same x264 settings and level; timed from each buffer's scheduled
//!   capture time (ximagesrc stamps the clock time it waited for, before it captures) to its
//!   access unit out of the pipeline (this process joins the sandbox's IPC namespace so that
//!   ximagesrc's System V segments reach the display).
//!
//! Like with like: the same span, the same picture content (the same app, running on), the same
//! encoder and settings (zerolatency, ultrafast, no B-frames, 2 sliced threads, constrained
//! baseline, one IDR), both paced at the frame rate. Printed: the machine, p50/p95/p99 of each
//! with the per-round p50s, the ratio, the frames per second held, and the bench process's CPU
//! per second of each side (the app's own CPU is the same on both: its cgroup's share).
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use edgeplay_benches::{load_average, machine, spread, summary};
use edgeplay_host::catalogue::Catalogue;
use edgeplay_host::cgroup::{DEFAULT_ROOT, Limits};
use edgeplay_host::display::Display;
use edgeplay_host::sandbox::{Sandbox, SandboxSpec};
use edgeplay_media::convert::bgrx_to_nv12;
use edgeplay_media::encode::{self, EncoderChoice, EncoderKind, VideoConfig, VideoEncoder};
use edgeplay_media::stats::ms;
use edgeplay_protocol::mode::Mode;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

struct Args {
    mode: Mode,
    app: String,
    app_millicores: u32,
    rounds: u32,
    frames: u32,
    bitrate_kbps: u32,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        mode: Mode::DEFAULT,
        app: "glxgears".into(),
        app_millicores: 250,
        rounds: 6,
        frames: 240,
        bitrate_kbps: 6000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| anyhow!("{name} needs a value"));
        match flag.as_str() {
            "--mode" => a.mode = value("--mode")?.parse()?,
            "--app" => a.app = value("--app")?,
            "--app-millicores" => a.app_millicores = value("--app-millicores")?.parse()?,
            "--rounds" => a.rounds = value("--rounds")?.parse()?,
            "--frames" => a.frames = value("--frames")?.parse()?,
            "--bitrate-kbps" => a.bitrate_kbps = value("--bitrate-kbps")?.parse()?,
            "-h" | "--help" => {
                println!(
                    "usage: hosted [--mode 1280x720@60] [--app glxgears] [--app-millicores 250] \
                     [--rounds 6] [--frames 240] [--bitrate-kbps 6000]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown flag {other} (see --help)"),
        }
    }
    if a.rounds == 0 || a.frames == 0 {
        bail!("--rounds and --frames must be at least 1");
    }
    Ok(a)
}

/// CPU time this process has used (user + system).
fn cpu_time() -> Duration {
    // /proc/self/stat fields 14 and 15: utime and stime in clock ticks (100 per second).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let tick = |i: usize| Duration::from_millis(fields.get(i).copied().unwrap_or(0) * 10);
    tick(11) + tick(12)
}

/// Waits for the next frame's time; returns it.
fn pace(deadline: &mut Instant, frame: Duration) -> Instant {
    let now = Instant::now();
    if now < *deadline {
        std::thread::sleep(*deadline - now);
    } else if now - *deadline > frame {
        *deadline = now;
    }
    let at = *deadline;
    *deadline += frame;
    at
}

/// The x264 settings both sides use, as gst-launch properties.
fn x264_props(a: &Args, threads: u32) -> String {
    format!(
        "tune=zerolatency speed-preset=ultrafast bframes=0 sliced-threads=true threads={threads} \
         bitrate={} key-int-max={} byte-stream=true",
        a.bitrate_kbps,
        i32::MAX
    )
}

/// B: ximagesrc on display `display` → videoconvert → x264enc → appsink.
struct Baseline {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
}

impl Baseline {
    fn start(a: &Args, display: &str, threads: u32) -> Result<Self> {
        let Mode { width, height, fps } = a.mode;
        let desc = format!(
            "ximagesrc display-name={display} use-damage=false show-pointer=false \
             ! video/x-raw,framerate={fps}/1 ! videoconvert ! video/x-raw,format=NV12 \
             ! x264enc {x264} \
             ! video/x-h264,profile=constrained-baseline,level=(string){level} \
             ! h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au \
             ! appsink name=sink sync=false max-buffers=8",
            x264 = x264_props(a, threads),
            level = encode::h264_level(width, height, fps, a.bitrate_kbps),
        );
        let pipeline = gst::parse::launch(&desc)?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow!("not a pipeline"))?;
        let sink = pipeline
            .by_name("sink")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| anyhow!("no appsink"))?;
        pipeline.set_state(gst::State::Playing)?;
        Ok(Self { pipeline, sink })
    }

    /// The next `n` access units' latency: the pipeline clock's running time when each comes
    /// out, less its PTS (ximagesrc's scheduled capture time).
    fn run(&self, n: u32) -> Result<Vec<Duration>> {
        let mut out = Vec::with_capacity(n as usize);
        while out.len() < n as usize {
            let sample = self
                .sink
                .try_pull_sample(gst::ClockTime::from_seconds(5))
                .ok_or_else(|| anyhow!("ximagesrc gave no access unit within 5 s"))?;
            let (Some(clock), Some(base)) = (self.pipeline.clock(), self.pipeline.base_time())
            else {
                bail!("the baseline pipeline has no clock");
            };
            let now = clock.time();
            let buffer_pts = sample
                .buffer()
                .and_then(gst::BufferRef::pts)
                .ok_or_else(|| anyhow!("an access unit without PTS"))?;
            // The encoder shifts its output's timestamps (and segment) by 1000 hours: the
            // segment maps them back to the running time ximagesrc stamped.
            let pts = sample
                .segment()
                .and_then(|seg| seg.downcast_ref::<gst::ClockTime>())
                .and_then(|seg| seg.to_running_time(buffer_pts))
                .ok_or_else(|| anyhow!("an access unit outside its segment"))?;
            let running = now.saturating_sub(base);
            out.push(Duration::from_nanos(running.saturating_sub(pts).nseconds()));
        }
        Ok(out)
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// A display name Xlib resolves to the sandbox's socket: `/tmp/.X11-unix/X<n>` linked to it.
struct DisplayLink {
    path: PathBuf,
    name: String,
}

impl DisplayLink {
    fn new(socket: &Path) -> Result<Self> {
        let dir = Path::new("/tmp/.X11-unix");
        std::fs::create_dir_all(dir)?;
        for n in 80..200 {
            let path = dir.join(format!("X{n}"));
            if std::os::unix::fs::symlink(socket, &path).is_ok() {
                return Ok(Self {
                    path,
                    name: format!(":{n}"),
                });
            }
        }
        bail!("no free display number in /tmp/.X11-unix for the baseline's link")
    }
}

impl Drop for DisplayLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let Mode { width, height, fps } = a.mode;
    let threads = 2;
    let catalogue = Catalogue::parse(
        &format!(
            "[[app]]\nid = \"bench\"\nname = \"bench\"\ncommand = {:?}\nmodes = [\"{}\"]\n",
            a.app, a.mode
        ),
        Path::new("bench"),
        std::ffi::OsStr::new("/usr/bin:/usr/games:/bin"),
    )?;
    let launch = catalogue
        .get("bench")
        .and_then(|app| app.launch.clone())
        .ok_or_else(|| anyhow!("no app"))?;
    let runtime =
        std::env::temp_dir().join(format!("edgeplay-bench-hosted-{}", std::process::id()));
    std::fs::create_dir_all(&runtime)?;
    let session = format!("bench-{}", std::process::id());
    let sandbox = Sandbox::start(&SandboxSpec {
        session: &session,
        runtime_dir: &runtime,
        cgroup_root: Path::new(DEFAULT_ROOT),
        uid: 62_000,
        mode: a.mode,
        launch: &launch,
        limits: Limits {
            cpu_millicores: a.app_millicores,
            ..Limits::default()
        },
    })
    .context("the app's sandbox (the bench needs root and `cargo xtask setup`'s packages)")?;
    // ximagesrc attaches System V segments, which only the sandbox's IPC namespace shares
    // with its display: this process joins it before any thread starts (threads inherit it).
    // Side A's capture passes its segment by fd and does not care.
    let ipc = sandbox
        .ipc_namespace()
        .ok_or_else(|| anyhow!("the app's sandbox ended at once"))?;
    let ns = std::fs::File::open(&ipc).with_context(|| format!("open {}", ipc.display()))?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&ns),
        Some(rustix::thread::LinkNameSpaceType::InterProcessCommunication),
    )
    .context("join the sandbox's IPC namespace")?;
    gst::init()?;
    let encoder = encode::probe(EncoderChoice::X264).context("x264")?;
    if encoder != EncoderKind::X264 {
        bail!("the bench compares x264 with x264; the probe chose {encoder}");
    }
    let w16 = u16::try_from(width)?;
    let h16 = u16::try_from(height)?;
    let mut display = Display::connect(&sandbox.display_socket(), w16, h16)?;
    let link = DisplayLink::new(&sandbox.display_socket())?;
    let mut video = VideoEncoder::new(&VideoConfig {
        width,
        height,
        fps,
        bitrate_kbps: a.bitrate_kbps,
        encoder,
        keyframe_interval: 0,
        threads,
    })?;
    let units = video.access_units();

    println!(
        "hosted bench: {} at {}, its CPU held to {} millicores; {} rounds x {} frames each side, x264 {} kbit/s, {threads} threads",
        a.app, a.mode, a.app_millicores, a.rounds, a.frames, a.bitrate_kbps
    );
    println!(
        "machine: {}; load average before: {}",
        machine(),
        load_average()
    );
    println!(
        "timed: each frame's scheduled capture time → its access unit; A: MIT-SHM capture (fd segment) + bgrx_to_nv12 + the edge's x264 encoder; B: ximagesrc ! videoconvert ! x264enc ! h264parse, same settings"
    );
    let frame = Duration::from_secs(1) / fps;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    let (mut capture, mut convert) = (Vec::new(), Vec::new());
    let (mut our_rounds, mut base_rounds) = (Vec::new(), Vec::new());
    let (mut our_cpu, mut base_cpu, mut our_wall, mut base_wall) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let mut pts = Duration::ZERO;
    for round in 0..a.rounds {
        // A
        let (cpu0, wall0) = (cpu_time(), Instant::now());
        let mut this = Vec::new();
        let mut deadline = Instant::now();
        for n in 0..a.frames {
            let at = pace(&mut deadline, frame);
            let picture = display.capture()?;
            let captured = at.elapsed();
            let (pushed, converted) = video.push(pts, round == 0 && n == 0, |buf| {
                let t = Instant::now();
                bgrx_to_nv12(picture, width, height, buf).map(|()| t.elapsed())
            })?;
            let converted = converted?;
            units.next(pts, pushed)?;
            pts += frame;
            let total = at.elapsed();
            capture.push(captured);
            convert.push(converted);
            this.push(total);
        }
        our_cpu += cpu_time() - cpu0;
        our_wall += wall0.elapsed();
        our_rounds.push(summary(&this).p50);
        ours.extend(this);

        // B
        let baseline = Baseline::start(&a, &link.name, threads)?;
        baseline.run(10)?; // its start-up and first IDR, not counted
        let (cpu0, wall0) = (cpu_time(), Instant::now());
        let this = baseline.run(a.frames)?;
        base_cpu += cpu_time() - cpu0;
        base_wall += wall0.elapsed();
        drop(baseline);
        base_rounds.push(summary(&this).p50);
        base.extend(this);
        eprintln!("round {}/{} done", round + 1, a.rounds);
    }
    let line = |name: &str, samples: &[Duration], rounds: &[Duration]| {
        let s = summary(samples);
        let p50s: Vec<f64> = rounds.iter().map(|&d| ms(d)).collect();
        println!(
            "{name:<44} {:>8.2} {:>8.2} {:>8.2}   {}",
            ms(s.p50),
            ms(s.p95),
            ms(s.p99),
            if rounds.is_empty() {
                String::new()
            } else {
                spread(&p50s, 2)
            }
        );
    };
    println!(
        "\n{:<44} {:>8} {:>8} {:>8}   round p50s",
        "ms", "p50", "p95", "p99"
    );
    line("A capture (ShmGetImage)", &capture, &[]);
    line("A convert (bgrx_to_nv12)", &convert, &[]);
    line("A edgeplay, scheduled → access unit", &ours, &our_rounds);
    line(
        "B ximagesrc baseline, scheduled → access unit",
        &base,
        &base_rounds,
    );
    let (a50, b50) = (summary(&ours).p50, summary(&base).p50);
    let (a99, b99) = (summary(&ours).p99, summary(&base).p99);
    println!(
        "\nedgeplay / baseline: p50 {:.2}  p99 {:.2}   (target: p50 ≤ 1.3, p99 ≤ 1.0)",
        ms(a50) / ms(b50),
        ms(a99) / ms(b99)
    );
    let per_s = |cpu: Duration, wall: Duration| cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9);
    println!(
        "bench process CPU per second: A {:.2} cores, B {:.2} cores; frames per second held: A {:.1}, B {:.1} (of {fps})",
        per_s(our_cpu, our_wall),
        per_s(base_cpu, base_wall),
        ours.len() as f64 / our_wall.as_secs_f64(),
        base.len() as f64 / base_wall.as_secs_f64(),
    );
    println!("load average after: {}", load_average());
    drop(display);
    drop(link);
    sandbox.stop()?;
    let _ = std::fs::remove_dir_all(&runtime);
    Ok(())
}
