//! Persistent keyframe requests switch a live session's encoder to intra refresh: no more
//! IDR bursts while the requests go on, the stream stays decodable, and after a quiet
//! `INTRA_REFRESH_HOLD` the encoder goes back to IDRs on request.

use std::time::{Duration, Instant};

use std::sync::Arc;

use edgeplay_decode::H264Decoder;
use edgeplay_game::stamp::read_luma;
use edgeplay_media::encode::{EncoderChoice, EncoderKind, probe};
use edgeplay_media::gpu::Gpu;
use edgeplay_media::keyframe::{INTRA_REFRESH_HOLD, PERSISTENT_REQUESTS};
use edgeplay_media::pipeline::PipelineConfig;
use edgeplay_media::session::{Control, Session, SessionConfig, VideoPacket};

mod support;

use support::{Counts, next_video};

#[test]
fn persistent_requests_switch_to_intra_refresh_and_it_reverts() {
    let encoder = probe(EncoderChoice::Auto).expect("an encoder");
    if !matches!(encoder, EncoderKind::X264) {
        eprintln!("intra refresh is an x264 feature here; {encoder} has none: nothing to test");
        return;
    }
    let cfg = PipelineConfig {
        width: 1280,
        height: 720,
        fps: 30,
        bitrate_kbps: 3000,
        encoder,
        keyframe_interval: 0,
        threads: 0,
        audio: false,
    };
    let gpu = Gpu::new().expect("a Vulkan device");
    let metrics = Arc::new(Counts::default());
    let handle = Session::start(&gpu, SessionConfig::new("ir", cfg, 3), metrics.clone())
        .expect("session starts");
    let mut media = handle.subscribe();
    let mut decoder = H264Decoder::new(None).expect("a decoder");
    let mut decoded = 0usize;
    let mut feed = |v: &VideoPacket, decoder: &mut H264Decoder| {
        decoder.push(&v.data, Some(v.pts)).expect("push");
        while let Some(f) = decoder.try_pull(Duration::from_millis(5)).expect("decode") {
            let (w, h) = (f.width as usize, f.height as usize);
            if read_luma(&f.luma(), w, h, w).is_ok() {
                decoded += 1;
            }
        }
    };

    let first = next_video(&mut media);
    assert!(first.keyframe, "a new viewer starts on an IDR");
    let idr_bytes = first.data.len();
    feed(&first, &mut decoder);

    // Ask every 300 ms for 3 s: persistent after the third request.
    let mut sizes_after_switch = Vec::new();
    let mut keyframes_after_switch = 0;
    let mut requests = 0;
    let mut next_request = Instant::now();
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        if Instant::now() >= next_request {
            handle.send(Control::RequestKeyframe).unwrap();
            requests += 1;
            next_request += Duration::from_millis(300);
        }
        let v = next_video(&mut media);
        feed(&v, &mut decoder);
        if handle.stats().intra_refresh {
            sizes_after_switch.push(v.data.len());
            keyframes_after_switch += u32::from(v.keyframe);
        }
    }
    assert!(requests >= 9);
    assert!(
        handle.stats().intra_refresh,
        "intra refresh on after {requests} requests"
    );
    assert_eq!(Counts::get(&metrics.intra_refresh_periods), 1);
    // The switch itself restarts x264 (one IDR); after it, sweeps instead of IDRs.
    let later = &sizes_after_switch[sizes_after_switch.len().min(3)..];
    let largest = later.iter().copied().max().unwrap_or(0);
    eprintln!(
        "{requests} requests; after the switch {} frames, {keyframes_after_switch} flagged keyframes, \
         largest {largest} B (first IDR {idr_bytes} B)",
        sizes_after_switch.len()
    );
    // Without intra refresh each of these requests (300 ms apart, over the 250 ms limit) would
    // have made an IDR; with it: the restart's IDR and one sweep start per second.
    let absorbed = requests - PERSISTENT_REQUESTS;
    let sweeps = sizes_after_switch.len().div_ceil(30);
    assert!(
        keyframes_after_switch as usize <= 1 + sweeps
            && (keyframes_after_switch as usize) < absorbed,
        "{keyframes_after_switch} keyframes over {} frames for {absorbed} requests absorbed",
        sizes_after_switch.len()
    );

    // Quiet for longer than the hold: back to IDRs on request.
    let quiet_until = Instant::now() + INTRA_REFRESH_HOLD + Duration::from_millis(500);
    while Instant::now() < quiet_until {
        feed(&next_video(&mut media), &mut decoder);
    }
    assert!(
        !handle.stats().intra_refresh,
        "intra refresh off after a quiet hold"
    );
    handle.send(Control::RequestKeyframe).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let v = next_video(&mut media);
        feed(&v, &mut decoder);
        if v.keyframe {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a requested IDR within 2 s once intra refresh is off"
        );
    }
    // Every picture decoded with a valid stamp, across both encoder restarts, bar a few at the
    // restarts themselves.
    let frames = handle.stats().frames as usize;
    assert!(
        decoded + 5 >= frames,
        "{decoded} of {frames} frames decoded with a valid stamp"
    );
    handle.end().expect("ends cleanly");
}
