//! The SPS of x264's first keyframe, per resolution: constrained baseline (what WebRTC
//! negotiates, 42e0xx) at the level that fits the picture and rate (3.2 for 720p60, 4 for
//! 1080p30, 4.2 for 1080p60), as the capsfilter after the encoder asks; and high (640cxx) with
//! no B-frames when that is what was negotiated.

use std::time::Duration;

use edgeplay_media::encode::{EncoderKind, H264Profile, VideoConfig, VideoEncoder};

/// `(profile_idc, constraint flags, level_idc)` of the first SPS in an Annex-B access unit.
fn sps_profile_level(au: &[u8]) -> Option<(u8, u8, u8)> {
    let at = au
        .windows(4)
        .position(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 7)?;
    let sps = au.get(at + 4..at + 7)?;
    Some((sps[0], sps[1], sps[2]))
}

fn encoder(width: u32, height: u32, fps: u32, bitrate_kbps: u32, p: H264Profile) -> VideoEncoder {
    let mut encoder = VideoEncoder::with_profile(
        &VideoConfig {
            width,
            height,
            fps,
            bitrate_kbps,
            encoder: EncoderKind::X264,
            keyframe_interval: 0,
            threads: 0,
        },
        p,
    )
    .expect("x264 encoder");
    encoder.set_timeout(Duration::from_secs(20));
    encoder
}

fn first_keyframe_sps(width: u32, height: u32, fps: u32, bitrate_kbps: u32) -> (u8, u8, u8) {
    // `VideoEncoder::new` encodes constrained baseline.
    let mut encoder = encoder(
        width,
        height,
        fps,
        bitrate_kbps,
        H264Profile::ConstrainedBaseline,
    );
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

/// The `nal_ref_idc` and slice type of every slice NAL of an Annex-B access unit (the slice
/// type is the second ue(v) of the slice header; B is 1 or 6).
fn slice_types(au: &[u8]) -> Vec<u32> {
    let mut out = vec![];
    let mut i = 0;
    while i + 4 < au.len() {
        if au[i..i + 3] == [0, 0, 1] {
            let nal = au[i + 3];
            if matches!(nal & 0x1f, 1 | 5) {
                let mut bits = BitReader {
                    data: &au[i + 4..],
                    pos: 0,
                };
                let _first_mb = bits.ue();
                if let Some(t) = bits.ue() {
                    out.push(t);
                }
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    out
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let mut v = 1u32;
        for _ in 0..zeros {
            v = (v << 1) | self.bit()?;
        }
        Some(v - 1)
    }
}

#[test]
fn high_profile_when_negotiated_and_no_b_frames() {
    let mut enc = encoder(1280, 720, 60, 6_000, H264Profile::High);
    let mut types = vec![];
    let mut sps = None;
    for n in 0..30u32 {
        let pts = Duration::from_micros(u64::from(n) * 16_667);
        // A moving gradient, so P-frames have something to predict (and B-frames a reason).
        let (frame, ()) = enc
            .encode(pts, false, |buf| {
                for (i, px) in buf.iter_mut().enumerate() {
                    #[allow(clippy::cast_possible_truncation, reason = "a byte pattern")]
                    let v = (i as u32).wrapping_add(n * 7) as u8;
                    *px = v;
                }
            })
            .expect("access unit");
        if sps.is_none() {
            sps = sps_profile_level(&frame.data);
        }
        types.extend(slice_types(&frame.data));
    }
    let (profile, _, level) = sps.expect("an SPS in the first keyframe");
    assert_eq!(profile, 100, "profile_idc: high");
    assert_eq!(level, 32, "level_idc 3.2 for 720p60");
    assert!(types.len() >= 30, "one slice or more per frame: {types:?}");
    assert!(
        types.iter().all(|t| t % 5 != 1),
        "no B slices (type 1 or 6): {types:?}"
    );
    assert!(types.iter().any(|t| t % 5 == 0), "P slices: {types:?}");
}

#[test]
fn constrained_baseline_with_profile_selection() {
    let mut enc = encoder(1280, 720, 60, 6_000, H264Profile::ConstrainedBaseline);
    let (frame, ()) = enc
        .encode(Duration::ZERO, false, |buf| buf.fill(128))
        .expect("first access unit");
    assert_constrained_baseline_at(sps_profile_level(&frame.data).expect("SPS"), 32);
}
