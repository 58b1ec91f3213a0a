//! The encoder against real GStreamer: probe, x264 at 720p, keyframes on request, bitrate
//! changes, decoding back and reading every frame stamp, Opus, and MKV/MP4/H.264 files checked
//! with ffprobe.
//!
//! Run with `--nocapture` to see the probe's reasoning, the encode times and the Opus delay.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edgeplay_decode::{H264Decoder, Picture, decode_annexb_file, decode_annexb_file_scaled};
use edgeplay_game::stamp::{Stamp, draw_luma, read_luma};
use edgeplay_media::encode::{
    self, AUDIO_FRAME, AUDIO_SAMPLE_RATE, AudioEncoder, EncodeError, EncodedFrame, EncoderChoice,
    EncoderKind, MediaFileWriter, VideoConfig, VideoEncoder,
};

mod support;

use support::{ffprobe, ffprobe_frames, ffprobe_frames_clean};

const W: u32 = 1280;
const H: u32 = 720;
const FPS: u32 = 60;

fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("encode-{}-{name}", std::process::id()))
}

fn config(bitrate_kbps: u32) -> VideoConfig {
    VideoConfig {
        width: W,
        height: H,
        fps: FPS,
        bitrate_kbps,
        encoder: EncoderKind::X264,
        keyframe_interval: 0,
        threads: 0,
    }
}

fn pts(n: u32) -> Duration {
    Duration::from_secs(u64::from(n)) / FPS
}

fn stamp(n: u32) -> Stamp {
    Stamp {
        frame: n,
        tick: n,
        render_time_us: 1_700_000_000_000_000 + u64::from(n) * 16_667,
        input_seq: n / 3,
        state_hash: u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    }
}

/// A synthetic NV12 picture: a diagonal gradient moving 4 px per frame, a moving checkerboard
/// block, optional per-frame noise (to make the rate control spend its whole budget) and the
/// frame stamp.
fn picture(n: u32, noise: bool, nv12: &mut [u8]) {
    let (w, h) = (W as usize, H as usize);
    let (luma, chroma) = nv12.split_at_mut(w * h);
    let shift = n as usize * 4;
    let mut rng = u64::from(n).wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    let block_x = (n as usize * 8) % (w - 256);
    for (y, row) in luma.chunks_exact_mut(w).enumerate() {
        for (x, px) in row.iter_mut().enumerate() {
            let mut v = ((x + y + shift) / 5 % 200) as u8 + 28;
            if (block_x..block_x + 256).contains(&x) && (300..556).contains(&y) {
                v = if ((x - block_x) / 8 + y / 8) & 1 == 0 {
                    60
                } else {
                    190
                };
            }
            if noise {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                v = v.wrapping_add((rng & 31) as u8).min(235);
            }
            *px = v;
        }
    }
    for (i, px) in chroma.iter_mut().enumerate() {
        *px = 128u8
            .wrapping_add(((i / 2 + shift) % 64) as u8)
            .wrapping_sub(32);
    }
    draw_luma(&stamp(n), luma, w, h, w).expect("stamp fits");
}

/// Encodes frames `0..count` at `bitrate_kbps`; returns the access units.
fn encode_frames(
    encoder: &mut VideoEncoder,
    range: std::ops::Range<u32>,
    noise: bool,
) -> Vec<EncodedFrame> {
    range
        .map(|n| {
            let (frame, ()) = encoder
                .encode(pts(n), false, |nv12| picture(n, noise, nv12))
                .expect("encode");
            frame
        })
        .collect()
}

fn write_h264(path: &Path, frames: &[EncodedFrame]) {
    let mut writer = MediaFileWriter::new(path, &config(1000), false).expect("writer");
    for f in frames {
        writer.write_video(f).expect("write");
    }
    writer.finish().expect("finish");
}

fn percentile(mut v: Vec<Duration>, p: usize) -> Duration {
    v.sort();
    v[(v.len() - 1) * p / 100]
}

/// Asserts that the decoded pictures carry the stamps of frames 0..count, in order.
fn assert_stamps(frames: &[Picture], count: u32, what: &str) {
    assert_eq!(frames.len(), count as usize, "{what}: decoded frame count");
    for (i, f) in frames.iter().enumerate() {
        let (w, h) = (f.width as usize, f.height as usize);
        let s = read_luma(&f.luma(), w, h, w).unwrap_or_else(|e| panic!("{what}: frame {i}: {e}"));
        assert_eq!(
            s,
            stamp(i as u32),
            "{what}: frame {i} carries the wrong stamp"
        );
    }
}

#[test]
fn probe_auto_falls_back_to_x264_without_nvenc() {
    logs();
    let auto = encode::probe(EncoderChoice::Auto).expect("probe");
    let forced = encode::probe(EncoderChoice::Nvenc);
    println!("probe(Auto) = {auto}; probe(Nvenc) = {forced:?}");
    match forced {
        Ok(nvenc) => assert_eq!(auto, nvenc, "Auto must pick a working NVENC"),
        Err(e) => {
            assert!(matches!(e, EncodeError::NvencUnavailable { .. }), "{e:?}");
            assert_eq!(auto, EncoderKind::X264);
            let msg = e.to_string();
            println!("forced NVENC: {msg}");
            assert!(
                msg.contains("--encoder"),
                "the error says how to fix it: {msg}"
            );
        }
    }
    assert_eq!(
        encode::probe(EncoderChoice::X264).expect("x264"),
        EncoderKind::X264
    );
}

#[test]
fn probe_nvenc_forced_without_nvenc_elements_is_unavailable() {
    logs();
    let registered = ["nvh264enc", "nvcudah264enc", "nvautogpuh264enc"]
        .iter()
        .any(|e| {
            Command::new("gst-inspect-1.0")
                .arg(e)
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if registered {
        println!("nvcodec elements are registered here; covered by the Auto test");
        return;
    }
    match encode::probe(EncoderChoice::Nvenc) {
        Err(EncodeError::NvencUnavailable { reason }) => {
            assert!(reason.contains("not registered"), "{reason}");
        }
        other => panic!("expected NvencUnavailable, got {other:?}"),
    }
}

#[test]
fn x264_720p_one_access_unit_per_frame_and_ffprobe_counts_120() {
    logs();
    let mut encoder = VideoEncoder::new(&config(2000)).expect("encoder");
    assert_eq!(encoder.kind(), &EncoderKind::X264);
    let frames = encode_frames(&mut encoder, 0..120, false);
    for (n, f) in frames.iter().enumerate() {
        assert_eq!(
            f.pts,
            pts(n as u32),
            "frame {n}: the access unit of the picture pushed"
        );
        assert!(
            f.data.starts_with(&[0, 0, 0, 1]) || f.data.starts_with(&[0, 0, 1]),
            "Annex-B"
        );
        assert_eq!(
            f.keyframe,
            n == 0,
            "frame {n}: only the first is a keyframe"
        );
    }
    // SPS (NAL type 7) leads the keyframe.
    assert!(
        frames[0]
            .data
            .windows(5)
            .any(|w| w[..4] == [0, 0, 0, 1] && w[4] & 0x1f == 7)
    );
    let stats = encoder.stats();
    assert_eq!(stats.frames, 120);
    assert_eq!(stats.keyframes, 1);
    assert_eq!(
        stats.bytes,
        frames.iter().map(|f| f.data.len() as u64).sum::<u64>()
    );

    let times: Vec<Duration> = frames.iter().map(|f| f.encode_time).collect();
    let bytes: usize = frames.iter().map(|f| f.data.len()).sum();
    println!(
        "x264 1280x720 @ 2000 kbit/s: encode time p50 {:?}, p90 {:?}, max {:?}, mean {:?}; {} bytes in 2 s",
        percentile(times.clone(), 50),
        percentile(times.clone(), 90),
        stats.encode_time_max,
        stats.encode_time_mean(),
        bytes
    );

    let path = tmp("720p.h264");
    write_h264(&path, &frames);
    assert_eq!(ffprobe_frames_clean(&path), 120);

    let decoded = decode_annexb_file(&path).expect("decode");
    assert_stamps(&decoded, 120, "2000 kbit/s full size");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn keyframes_on_request() {
    logs();
    let mut encoder = VideoEncoder::new(&config(1500)).expect("encoder");
    let mut keyframes = Vec::new();
    for n in 0..40 {
        if n == 10 {
            encoder.request_keyframe();
        }
        let (frame, ()) = encoder
            .encode(pts(n), n == 25, |nv12| picture(n, false, nv12))
            .expect("encode");
        if frame.keyframe {
            keyframes.push(n);
        }
    }
    assert_eq!(keyframes, [0, 10, 25]);
    assert_eq!(encoder.stats().keyframe_requests, 2);

    // A periodic interval works too.
    let mut periodic = VideoEncoder::new(&VideoConfig {
        keyframe_interval: 15,
        ..config(1500)
    })
    .expect("encoder");
    let frames = encode_frames(&mut periodic, 0..40, false);
    let keys: Vec<usize> = (0..40).filter(|&n| frames[n].keyframe).collect();
    assert_eq!(keys, [0, 15, 30]);
}

#[test]
fn bitrate_change_while_running_changes_frame_sizes() {
    logs();
    let mut encoder = VideoEncoder::new(&config(4000)).expect("encoder");
    let high = encode_frames(&mut encoder, 0..60, true);
    encoder.set_bitrate(400);
    assert_eq!(encoder.stats().bitrate_kbps, 400);
    let low = encode_frames(&mut encoder, 60..120, true);
    let mean = |f: &[EncodedFrame]| f.iter().map(|f| f.data.len()).sum::<usize>() / f.len();
    // Skip the keyframe and give the rate control half a second to settle.
    let (before, after) = (mean(&high[30..]), mean(&low[30..]));
    let times: Vec<Duration> = high.iter().chain(&low).map(|f| f.encode_time).collect();
    println!(
        "x264 1280x720 noisy content: encode time p50 {:?}, p90 {:?}",
        percentile(times.clone(), 50),
        percentile(times, 90)
    );
    println!("mean frame size at 4000 kbit/s: {before} B, after set_bitrate(400): {after} B");
    assert!(after * 3 < before, "{after} B is not well below {before} B");
    assert!(
        low.iter().all(|f| !f.keyframe),
        "a bitrate change makes no keyframe"
    );
}

#[test]
fn decode_back_at_500_kbps_full_and_half_scale_reads_every_stamp() {
    logs();
    let mut encoder = VideoEncoder::new(&config(500)).expect("encoder");
    let frames = encode_frames(&mut encoder, 0..120, false);
    drop(encoder);
    let path = tmp("500k.h264");
    write_h264(&path, &frames);

    let full = decode_annexb_file(&path).expect("decode");
    assert_eq!((full[0].width, full[0].height), (W, H));
    assert_stamps(&full, 120, "500 kbit/s full size");

    let half = decode_annexb_file_scaled(&path, (W / 2, H / 2)).expect("decode scaled");
    assert_eq!((half[0].width, half[0].height), (W / 2, H / 2));
    assert_eq!(half[0].luma().len(), (W / 2 * H / 2) as usize);
    assert_stamps(&half, 120, "500 kbit/s half scale");
    let _ = std::fs::remove_file(&path);

    // Push/pull: access units with their PTS come back as pictures with the same PTS.
    let mut decoder = H264Decoder::new(None).expect("decoder");
    let mut out = Vec::new();
    for f in &frames[..30] {
        decoder.push(&f.data, Some(f.pts)).expect("push");
        if let Some(d) = decoder.try_pull(Duration::from_millis(500)).expect("pull") {
            out.push(d);
        }
    }
    out.extend(decoder.finish().expect("finish"));
    assert_eq!(out.len(), 30);
    for (n, d) in out.iter().enumerate() {
        assert_eq!(d.pts, Some(pts(n as u32)));
    }
}

#[test]
fn opus_one_second_of_tone_gives_100_packets_of_10_ms() {
    logs();
    let mut audio = AudioEncoder::new().expect("audio encoder");
    let per_tick = (AUDIO_SAMPLE_RATE / FPS) as usize; // 800 samples per 60 Hz tick
    let mut packets = Vec::new();
    for tick in 0..FPS {
        let samples: Vec<i16> = (0..per_tick)
            .map(|i| {
                let t = (tick as usize * per_tick + i) as f64 / f64::from(AUDIO_SAMPLE_RATE);
                ((t * 440.0 * std::f64::consts::TAU).sin() * 12_000.0) as i16
            })
            .collect();
        audio.push(pts(tick), &samples).expect("push");
        packets.extend(audio.pull().expect("pull"));
        // pull() returns every packet the input so far completes: one per 480 samples.
        assert_eq!(
            packets.len(),
            (tick as usize + 1) * per_tick / 480,
            "after tick {tick}"
        );
    }
    packets.extend(audio.finish().expect("finish"));
    let first = &packets[0];
    let lookahead = AUDIO_FRAME - first.duration;
    println!(
        "opus: {} packets; first packet PTS {:?} duration {:?} (lookahead {:?}); second PTS {:?}; last PTS {:?}",
        packets.len(),
        first.pts,
        first.duration,
        lookahead,
        packets[1].pts,
        packets.last().map(|p| p.pts)
    );
    // 1 s of input = 100 packets, plus the last 6.5 ms pushed out by the lookahead.
    assert_eq!(packets.len(), 101);
    assert_eq!(first.pts, Duration::ZERO, "output on the input clock");
    assert_eq!(
        lookahead,
        Duration::from_micros(6_500),
        "312 samples of Opus lookahead"
    );
    for (k, p) in packets.iter().enumerate().skip(1) {
        let want = AUDIO_FRAME * k as u32 - lookahead;
        assert!(
            p.pts.abs_diff(want) < Duration::from_micros(50),
            "packet {k}: {:?}",
            p.pts
        );
        if k < packets.len() - 1 {
            assert_eq!(p.duration, AUDIO_FRAME, "packet {k}");
        }
    }
    // The drained last packet covers the rest: the packets tile the input second exactly.
    let covered: Duration = packets.iter().map(|p| p.duration).sum();
    assert!(
        covered.abs_diff(Duration::from_secs(1)) < Duration::from_micros(100),
        "{covered:?}"
    );
    assert!(
        packets
            .iter()
            .all(|p| !p.data.is_empty() && p.data.len() < 400)
    );
}

/// Encodes one second of video and tone into the scratch file `name`, whose streams ffprobe
/// must find to be H.264 video and Opus audio: the file, and what ffprobe says of its streams.
fn record(name: &str) -> (PathBuf, String) {
    logs();
    let path = tmp(name);
    let cfg = config(1500);
    let mut video = VideoEncoder::new(&cfg).expect("video");
    let mut audio = AudioEncoder::new().expect("audio");
    let mut writer = MediaFileWriter::new(&path, &cfg, true).expect("writer");
    assert!(writer.writes_audio());
    let per_tick = (AUDIO_SAMPLE_RATE / FPS) as usize;
    for n in 0..FPS {
        let (frame, ()) = video
            .encode(pts(n), false, |nv12| picture(n, false, nv12))
            .expect("encode");
        writer.write_video(&frame).expect("write video");
        let tone: Vec<i16> = (0..per_tick)
            .map(|i| (((n as usize * per_tick + i) % 109) as i16 - 54) * 200)
            .collect();
        audio.push(pts(n), &tone).expect("push audio");
        for p in audio.pull().expect("pull audio") {
            writer.write_audio(&p).expect("write audio");
        }
    }
    for p in audio.finish().expect("finish audio") {
        writer.write_audio(&p).expect("write audio");
    }
    writer.finish().expect("finish file");
    let (streams, errors) = ffprobe(
        &[
            "-show_entries",
            "stream=codec_type,codec_name",
            "-of",
            "csv=p=0",
        ],
        &path,
    );
    assert_eq!(errors, "", "ffprobe reports no error");
    println!("{name} streams: {streams:?}");
    assert!(streams.contains("h264,video"), "{streams}");
    assert!(streams.contains("opus,audio"), "{streams}");
    (path, streams)
}

#[test]
fn mkv_holds_h264_and_opus() {
    let (path, streams) = record("av.mkv");
    assert_eq!(streams.lines().count(), 2, "{streams}");
    let (count, _) = ffprobe_frames(&path);
    assert_eq!(count, 60);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn mp4_holds_h264_and_opus() {
    let (path, _) = record("av.mp4");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn unknown_file_extension_lists_the_supported_ones() {
    let err = MediaFileWriter::new(tmp("x.avi"), &config(1000), false).expect_err("avi");
    let msg = err.to_string();
    assert!(matches!(err, EncodeError::UnsupportedFile { .. }));
    for ext in [".h264", ".mkv", ".mp4"] {
        assert!(msg.contains(ext), "{msg}");
    }
}

#[test]
fn media_types_move_to_the_session_thread() {
    fn send<T: Send>() {}
    send::<VideoEncoder>();
    send::<AudioEncoder>();
    send::<MediaFileWriter>();
    send::<H264Decoder>();
}

#[test]
fn invalid_config_is_rejected() {
    let err = VideoEncoder::new(&VideoConfig {
        width: 1366,
        ..config(1000)
    })
    .expect_err("1366 is not a multiple of 4");
    assert!(matches!(err, EncodeError::InvalidConfig { .. }), "{err:?}");
}
