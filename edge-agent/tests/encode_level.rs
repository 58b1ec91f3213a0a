//! The SPS of x264's first keyframe, per resolution: constrained baseline (what WebRTC
//! negotiates, 42e0xx) at the level that fits the picture and rate (3.2 for 720p60, 4 for
//! 1080p30, 4.2 for 1080p60), as the capsfilter after the encoder asks.

use std::time::Duration;

use edgeplay_edge::encode::{EncoderKind, VideoConfig, VideoEncoder};

/// `(profile_idc, constraint flags, level_idc)` of the first SPS in an Annex-B access unit.
fn sps_profile_level(au: &[u8]) -> Option<(u8, u8, u8)> {
    let at = au
        .windows(4)
        .position(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 7)?;
    let sps = au.get(at + 4..at + 7)?;
    Some((sps[0], sps[1], sps[2]))
}

fn first_keyframe_sps(width: u32, height: u32, fps: u32, bitrate_kbps: u32) -> (u8, u8, u8) {
    let mut encoder = VideoEncoder::new(&VideoConfig {
        width,
        height,
        fps,
        bitrate_kbps,
        encoder: EncoderKind::X264,
        keyframe_interval: 0,
        threads: 0,
    })
    .expect("x264 encoder");
    encoder.set_timeout(Duration::from_secs(20));
    let (frame, ()) = encoder
        .encode(Duration::ZERO, false, |buf| buf.fill(128))
        .expect("first access unit");
    assert!(frame.keyframe, "the first frame is a keyframe");
    sps_profile_level(&frame.data).expect("an SPS before the first IDR")
}

fn assert_constrained_baseline_at(sps: (u8, u8, u8), level_idc: u8) {
    let (profile, constraints, level) = sps;
    assert_eq!(profile, 66, "profile_idc: baseline");
    assert_eq!(
        constraints & 0x40,
        0x40,
        "constraint_set1_flag: constrained baseline (got {constraints:#04x})"
    );
    assert_eq!(level, level_idc, "level_idc");
}

#[test]
fn sps_level_3_2_at_720p60() {
    assert_constrained_baseline_at(first_keyframe_sps(1280, 720, 60, 6_000), 32);
}

#[test]
fn sps_level_4_2_at_1080p60() {
    assert_constrained_baseline_at(first_keyframe_sps(1920, 1080, 60, 12_000), 42);
}

#[test]
fn sps_level_4_at_1080p30() {
    assert_constrained_baseline_at(first_keyframe_sps(1920, 1080, 30, 8_000), 40);
}
