//! The live session runtime driven through its transport-neutral interface, with no network:
//! inputs in (out of order and doubled), keyframe requests, bitrate changes, end; timestamped
//! video and audio out to two subscribers.

use std::time::{Duration, Instant};

use std::sync::Arc;

use edgeplay_decode::H264Decoder;
use edgeplay_game::stamp::read_luma;
use edgeplay_media::gpu::Gpu;
use edgeplay_media::session::{Control, MediaPacket, NoMetrics, Session, SessionConfig};
use edgeplay_protocol::input::{InputEvent, Key};

mod support;

use support::{Counts, next_video};

fn key(code: Key, down: bool) -> InputEvent {
    InputEvent::Key { code, down }
}

#[test]
fn live_session_applies_inputs_in_order_and_fans_out_media() {
    let gpu = Gpu::new().expect("a Vulkan device");
    let metrics = Arc::new(Counts::default());
    let handle = Session::start(
        &gpu,
        SessionConfig::new("loop", support::pipeline_720p30(), 9),
        metrics.clone(),
    )
    .expect("session starts");

    // No viewer yet: the game must not tick.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        handle.stats().frames,
        0,
        "the tick advanced with nobody watching"
    );

    let mut a = handle.subscribe();
    let mut b = handle.subscribe();
    let first = next_video(&mut a);
    assert!(first.keyframe, "a new viewer starts at a keyframe");
    assert_eq!(first.stamp.frame, 0);
    let mut decoder = H264Decoder::new(None).expect("decoder");
    decoder
        .push(&first.data, Some(first.pts))
        .expect("push to decoder");

    // Out of order, with a duplicate: 2 waits for 1; the second 1 is dropped.
    let inputs = [
        (2, key(Key::ArrowLeft, true)),
        (1, key(Key::ArrowUp, true)),
        (1, key(Key::ArrowUp, true)),
        (3, InputEvent::PointerMove { dx: 5, dy: -3 }),
        (4, key(Key::ArrowLeft, false)),
    ];
    for (seq, event) in inputs {
        handle.send(Control::Input { seq, event }).expect("send");
    }
    let mut acks = handle.acks();
    let deadline = Instant::now() + Duration::from_secs(10);
    while acks.borrow_and_update().applied < 4 {
        assert!(Instant::now() < deadline, "inputs not acknowledged");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(acks.borrow().committed, 4);

    // The picture shows the inputs: find a frame whose stamp carries seq 4, and decode it to
    // prove the stamp is really drawn into the picture.
    let mut shown = None;
    for _ in 0..300 {
        let v = next_video(&mut a);
        // Every frame since the keyframe goes to the decoder, in order.
        decoder.push(&v.data, Some(v.pts)).expect("push to decoder");
        if v.stamp.input_seq >= 4 {
            shown = Some(v);
            break;
        }
    }
    let shown = shown.expect("input 4 never reached the picture");
    let decoded = decoder.finish().expect("decoded frames");
    let last = decoded.last().expect("at least one decoded frame");
    let stamp = read_luma(
        &last.luma(),
        last.width as usize,
        last.height as usize,
        last.width as usize,
    )
    .expect("stamp readable");
    assert_eq!(
        stamp, shown.stamp,
        "the decoded picture carries the packet's stamp"
    );

    // The second subscriber saw the same frames.
    let from_b = next_video(&mut b);
    assert_eq!(from_b.stamp.frame, first.stamp.frame);

    // A keyframe on request.
    handle.send(Control::RequestKeyframe).expect("send");
    let mut keyframe = false;
    for _ in 0..30 {
        if next_video(&mut a).keyframe {
            keyframe = true;
            break;
        }
    }
    assert!(keyframe, "no keyframe after a request");

    // Bitrate changes are accepted (clamped) without disturbing the stream.
    handle.send(Control::SetBitrate { kbps: 1 }).expect("send");
    handle
        .send(Control::SetBitrate { kbps: 800 })
        .expect("send");
    let _ = next_video(&mut a);

    // Audio arrives on the same clock as video.
    let mut audio_pts = None;
    for _ in 0..200 {
        if let Ok(MediaPacket::Audio(p)) = a.blocking_recv() {
            audio_pts = Some(p.pts);
            break;
        }
    }
    let audio_pts = audio_pts.expect("no audio packet");
    let video_pts = next_video(&mut a).pts;
    assert!(
        audio_pts.abs_diff(video_pts) < Duration::from_millis(200),
        "audio {audio_pts:?} and video {video_pts:?} are not on one clock"
    );

    drop(a);
    drop(b);
    let summary = handle.end().expect("clean end");
    assert_eq!(summary.last_input_seq, 4);
    assert!(summary.frames > 10);

    assert_eq!(metrics.dropped("duplicate"), 1, "{metrics:?}");
    assert_eq!(Counts::get(&metrics.inputs_applied), 4, "{metrics:?}");
}

#[test]
fn dropping_every_subscriber_pauses_the_game() {
    let gpu = Gpu::new().expect("a Vulkan device");
    let handle = Session::start(
        &gpu,
        SessionConfig::new("pause", support::pipeline_720p30(), 3),
        Arc::new(NoMetrics),
    )
    .expect("session starts");
    let mut rx = handle.subscribe();
    for _ in 0..5 {
        let _ = next_video(&mut rx);
    }
    drop(rx);
    std::thread::sleep(Duration::from_millis(300));
    let paused_at = handle.stats().frames;
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        handle.stats().frames,
        paused_at,
        "frames produced with no viewer"
    );
    let summary = handle.end().expect("clean end");
    assert_eq!(u64::from(summary.frames), summary.tick);
}
