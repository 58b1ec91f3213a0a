//! The GPU frame path on a real Vulkan device (lavapipe on machines without a GPU): device
//! choice, render + convert against the CPU reference, the stamp, determinism, sizes.

use std::sync::OnceLock;
use std::time::Duration;

use edgeplay_game::game::{ARENA_H, ARENA_W, BodyView, MAX_BODIES, Scene, ShipView};
use edgeplay_game::stamp::{Stamp, draw_luma, read_luma};
use edgeplay_media::convert::cpu_nv12_reference;
use edgeplay_media::gpu::{Gpu, GpuError, GpuOptions};
use edgeplay_media::render::RenderTarget;

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info")
        .try_init();
}

/// One GPU for the whole test binary, as the edge agent shares one between sessions.
fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        init_logs();
        Gpu::new().expect("a Vulkan device (run `cargo xtask setup`)")
    })
}

fn scene() -> Scene {
    let mut bodies = [BodyView::default(); MAX_BODIES];
    for (i, b) in bodies.iter_mut().enumerate().take(10) {
        let i32_i = i32::try_from(i).expect("small");
        *b = BodyView {
            x: 1_500 + i32_i * 1_400,
            y: 2_500 + (i32_i % 3) * 2_200,
            r: 200 + i32_i * 60,
            colour: u8::try_from(i % 8).expect("small"),
        };
    }
    // One body reaches into the stamp: the stamp must stay exact over it.
    bodies[10] = BodyView {
        x: 3_750,
        y: 1_250,
        r: 600,
        colour: 5,
    };
    Scene {
        tick: 1234,
        ship: ShipView {
            x: ARENA_W / 2,
            y: ARENA_H / 2,
            r: 300,
            heading: 10_000,
            thrust: true,
        },
        bodies,
        body_count: 11,
        score: 40_921,
        flash: 3,
    }
}

fn stamp() -> Stamp {
    Stamp {
        frame: 77,
        tick: 1234,
        render_time_us: 1_763_900_000_123_456,
        input_seq: 4242,
        state_hash: 0xDEAD_BEEF_0BAD_F00D,
    }
}

fn render(target: &mut RenderTarget, scene: &Scene, stamp: &Stamp) -> (Vec<u8>, Vec<u8>) {
    let (w, h) = (target.width() as usize, target.height() as usize);
    let mut nv12 = vec![0u8; target.nv12_len()];
    target
        .render_nv12(scene, stamp, &mut nv12)
        .expect("render_nv12");
    let mut rgba = vec![0u8; w * h * 4];
    target.read_rgba(&mut rgba).expect("read_rgba");
    (nv12, rgba)
}

fn pixel(rgba: &[u8], width: u32, x: u32, y: u32) -> [u8; 3] {
    let i = (y as usize * width as usize + x as usize) * 4;
    [rgba[i], rgba[i + 1], rgba[i + 2]]
}

/// Checks the GPU conversion against the CPU reference and the stamp against the protocol.
fn check_frame(width: u32, height: u32, nv12: &[u8], rgba: &[u8], stamp: &Stamp) {
    let mut reference = vec![0u8; nv12.len()];
    cpu_nv12_reference(rgba, width, height, &mut reference).expect("reference");
    let worst = nv12
        .iter()
        .zip(&reference)
        .map(|(&a, &b)| a.abs_diff(b))
        .max()
        .unwrap_or(0);
    println!("{width}x{height}: GPU NV12 within {worst} of the CPU reference");
    assert!(
        worst <= 2,
        "GPU NV12 differs from the CPU reference by up to {worst}"
    );
    let (w, h) = (width as usize, height as usize);
    let y_plane = &nv12[..w * h];
    assert_eq!(
        read_luma(y_plane, w, h, w).expect("stamp in the Y plane"),
        *stamp
    );

    // The stamp cells are exactly the protocol's: drawing them again changes nothing.
    let mut redrawn = y_plane.to_vec();
    draw_luma(stamp, &mut redrawn, w, h, w).expect("draw_luma");
    assert!(
        redrawn == y_plane,
        "stamp cells differ from protocol::stamp::draw_luma"
    );
    // Chroma under the stamp is neutral.
    let uv = &nv12[w * h..];
    for y in 8..8 + 64 {
        assert!(uv[y * w + 16..y * w + 16 + 512].iter().all(|&c| c == 128));
    }
}

#[test]
fn handles_cross_threads() {
    fn shared<T: Send + Sync + Clone>() {}
    fn owned<T: Send + Sync>() {}
    shared::<Gpu>();
    owned::<RenderTarget>();
}

#[test]
fn picks_a_device_and_reports_it() {
    let info = gpu().info();
    println!("{info:?} timestamps={}", gpu().uses_timestamps());
    assert!(!info.name.is_empty());
    assert!(!info.driver.is_empty());
    assert!(info.api_version.starts_with("1."));
    if info.device_type == "cpu" {
        assert!(info.name.contains("llvmpipe"), "{info:?}");
    }
}

#[test]
fn device_override_by_name() {
    init_logs();
    let name = gpu().info().name.clone();
    let wanted = name
        .split_whitespace()
        .next()
        .unwrap_or(&name)
        .to_uppercase();
    let gpu = Gpu::with_options(&GpuOptions {
        device: Some(wanted),
        ..GpuOptions::default()
    })
    .expect("the same device by name");
    assert_eq!(gpu.info().name, name);

    let err = Gpu::with_options(&GpuOptions {
        device: Some("no such device 42".into()),
        ..GpuOptions::default()
    })
    .expect_err("no match");
    assert!(matches!(err, GpuError::NoMatchingDevice { .. }), "{err}");
    assert!(err.to_string().contains(&name), "{err}");
}

/// Renders [`scene`] with [`stamp`] on a fresh `width` x `height` target of the shared GPU,
/// checks the frame against the CPU reference and the stamp ([`check_frame`]); the RGBA picture.
fn render_and_check(width: u32, height: u32) -> Vec<u8> {
    let mut target = gpu()
        .create_target(width, height)
        .unwrap_or_else(|e| panic!("{width}x{height} target: {e}"));
    let (scene, stamp) = (scene(), stamp());
    let (nv12, rgba) = render(&mut target, &scene, &stamp);
    check_frame(width, height, &nv12, &rgba, &stamp);
    rgba
}

#[test]
fn renders_720p_like_the_cpu_reference_with_the_stamp() {
    let (width, height) = (1280, 720);
    let rgba = render_and_check(width, height);
    let scene = scene();

    // Spot checks of the picture: a body's centre has a palette colour, the arena corner has
    // the flash-tinted border, the background is dark, a stamp cell is pure black or white.
    let body = scene.bodies[0];
    let bx = u32::try_from(body.x * 1280 / ARENA_W).expect("on screen");
    let by = u32::try_from(body.y * 720 / ARENA_H).expect("on screen");
    assert_eq!(pixel(&rgba, width, bx, by), [239, 83, 80]);
    assert_eq!(
        pixel(&rgba, width, 1, 700)[0],
        255,
        "flash tints the border"
    );
    let background = pixel(&rgba, width, 700, 700);
    assert!(background.iter().all(|&c| c < 60), "{background:?}");
    for x in (24..528).step_by(16) {
        let c = pixel(&rgba, width, x, 24);
        assert!(c == [0, 0, 0] || c == [255, 255, 255], "{c:?}");
    }
    // The ship is drawn at the centre, in its light colour.
    assert_eq!(pixel(&rgba, width, 640, 360), [232, 240, 255]);
    // Alpha is opaque everywhere.
    assert!(rgba.chunks_exact(4).all(|p| p[3] == 255));
}

#[test]
fn same_scene_same_bits() {
    let mut target = gpu().create_target(1280, 720).expect("720p target");
    let (scene, stamp) = (scene(), stamp());
    let first = render(&mut target, &scene, &stamp);
    // Something else in between, so nothing is left over from the first frame.
    let mut other = scene;
    other.ship.heading = 40_000;
    other.body_count = 3;
    other.score = 7;
    let between = render(&mut target, &other, &Stamp::default());
    assert_ne!(between.0, first.0);
    let second = render(&mut target, &scene, &stamp);
    assert!(first.0 == second.0, "NV12 differs between two renders");
    assert!(first.1 == second.1, "RGBA differs between two renders");
}

#[test]
fn renders_1080p() {
    let (width, height) = (1920, 1080);
    let rgba = render_and_check(width, height);
    assert_eq!(pixel(&rgba, width, 960, 540), [232, 240, 255]);
}

#[test]
fn fence_timing_gives_the_same_picture() {
    init_logs();
    let gpu = Gpu::with_options(&GpuOptions {
        timestamp_queries: false,
        ..GpuOptions::from_env()
    })
    .expect("gpu");
    assert!(!gpu.uses_timestamps());
    let mut target = gpu.create_target(640, 384).expect("test size");
    let (nv12, rgba) = render(&mut target, &scene(), &stamp());
    check_frame(640, 384, &nv12, &rgba, &stamp());
    let mut out = vec![0u8; target.nv12_len()];
    let times = target
        .render_nv12(&scene(), &stamp(), &mut out)
        .expect("render");
    assert!(times.render > Duration::ZERO);
    assert_eq!(out, nv12);
    // The target outlives its Gpu handle: dropping in this order must be clean.
    drop(gpu);
    drop(target);
}

#[test]
fn sessions_render_from_several_threads() {
    let frames: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut target = gpu().create_target(256, 192).expect("target");
                    let mut out = vec![0u8; target.nv12_len()];
                    for _ in 0..5 {
                        target
                            .render_nv12(&scene(), &stamp(), &mut out)
                            .expect("render");
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert!(frames.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn rejects_unsupported_sizes_and_buffers() {
    for (w, h) in [(1281, 720), (1280, 721), (1000, 500), (32, 32), (0, 0)] {
        let err = gpu().create_target(w, h).expect_err("unsupported");
        assert!(
            matches!(err, GpuError::UnsupportedResolution { width, height } if width == w && height == h),
            "{err}"
        );
        assert!(err.to_string().contains("1280x720"), "{err}");
    }
    let mut target = gpu().create_target(64, 64).expect("smallest test size");
    let mut short = vec![0u8; target.nv12_len() - 1];
    let err = target
        .render_nv12(&scene(), &stamp(), &mut short)
        .expect_err("short buffer");
    assert!(matches!(err, GpuError::BufferSize { .. }), "{err}");
    // Edge cases of the scene must not break anything: everything off screen, huge radii.
    let mut wild = scene();
    wild.ship = ShipView {
        x: i32::MAX,
        y: i32::MIN,
        r: i32::MAX,
        heading: 65_535,
        thrust: true,
    };
    wild.bodies[0] = BodyView {
        x: -5,
        y: 9_000_000,
        r: i32::MAX,
        colour: 255,
    };
    wild.body_count = usize::MAX;
    wild.score = u32::MAX;
    let mut out = vec![0u8; target.nv12_len()];
    target
        .render_nv12(&wild, &stamp(), &mut out)
        .expect("render");
}

/// Stage times on this machine; run with
/// `cargo test -p edgeplay-edge --release --test gpu -- --ignored --nocapture stage_times`.
#[test]
#[ignore = "a measurement, not a check"]
fn stage_times() {
    for (width, height) in [(1280, 720), (1920, 1080)] {
        let mut target = gpu().create_target(width, height).expect("target");
        let mut out = vec![0u8; target.nv12_len()];
        let mut scene = scene();
        let mut samples = Vec::new();
        for frame in 0..120u32 {
            scene.tick += 1;
            scene.ship.heading = scene.ship.heading.wrapping_add(300);
            let stamp = Stamp { frame, ..stamp() };
            let start = std::time::Instant::now();
            let t = target
                .render_nv12(&scene, &stamp, &mut out)
                .expect("render");
            samples.push((t, start.elapsed()));
        }
        samples.drain(..10);
        let pick = |f: &dyn Fn(&(edgeplay_media::render::StageTimes, Duration)) -> Duration| {
            let mut v: Vec<Duration> = samples.iter().map(f).collect();
            v.sort();
            (v[v.len() / 2], v[v.len() * 9 / 10])
        };
        let render = pick(&|s| s.0.render);
        let readback = pick(&|s| s.0.readback);
        let total = pick(&|s| s.1);
        println!(
            "{width}x{height} on {}: p50/p90 render {:?}/{:?} readback {:?}/{:?} wall {:?}/{:?}",
            gpu().info().name,
            render.0,
            render.1,
            readback.0,
            readback.1,
            total.0,
            total.1
        );
    }
}
