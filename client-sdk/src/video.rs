//! The video path's I/O: a task that accepts the frame streams and drives [`FrameOrder`], and
//! the thread that feeds the H.264 decoder and hands pictures out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use edgeplay_game::stamp::read_luma;
use edgeplay_protocol::media::{
    self, ControlMessage, FRAME_HEADER_LEN, FrameHeader, ReceiveReport,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::warn;

use crate::decode::{self, PixelFormat};
use crate::frame::Frame;
use crate::reorder::{Arrived, FrameOrder};
use crate::shared::{Shared, unix_us};

/// How often receive reports go to the edge (its rate controller reads them).
const REPORT_INTERVAL: Duration = Duration::from_millis(20);

async fn read_frame(mut recv: quinn::RecvStream) -> Option<Arrived> {
    let mut head = [0u8; FRAME_HEADER_LEN];
    recv.read_exact(&mut head).await.ok()?;
    let header = FrameHeader::decode(&head).ok()?;
    let mut data = vec![0u8; header.payload_len as usize];
    recv.read_exact(&mut data).await.ok()?;
    Some(Arrived {
        header,
        data,
        received_at: Instant::now(),
    })
}

/// Accepts frame streams, reports their arrival, and drives the [`FrameOrder`] machine: frames
/// in order to the decoder thread, skips counted, keyframes asked for.
pub(crate) async fn receive_media(
    conn: quinn::Connection,
    decoder: std::sync::mpsc::SyncSender<Arrived>,
    control: mpsc::UnboundedSender<ControlMessage>,
    shared: Arc<Shared>,
) {
    let mut streams: JoinSet<Option<Arrived>> = JoinSet::new();
    let mut order = FrameOrder::default();
    let mut reports = Vec::new();
    let mut report_tick = tokio::time::interval(REPORT_INTERVAL);
    loop {
        let wake = order.poll_timeout();
        tokio::select! {
            s = conn.accept_uni() => match s {
                Ok(recv) => { streams.spawn(read_frame(recv)); }
                Err(_) => break,
            },
            Some(done) = streams.join_next(), if !streams.is_empty() => {
                let now = Instant::now();
                match done {
                    Ok(Some(a)) => {
                        shared.record_received(a.data.len() as u64 + FRAME_HEADER_LEN as u64, a.received_at);
                        reports.push(ReceiveReport {
                            frame: a.header.frame,
                            received_us: unix_us(),
                            bytes: u32::try_from(a.data.len()).unwrap_or(u32::MAX),
                        });
                        order.handle_frame(now, a);
                    }
                    // A reset (superseded by a keyframe) or a broken stream: skip ahead soon.
                    _ => order.handle_lost(now),
                }
            }
            _ = report_tick.tick() => {
                if !reports.is_empty() {
                    let batch = std::mem::take(&mut reports);
                    for chunk in batch.chunks(media::MAX_REPORTS) {
                        let _ = control.send(ControlMessage::ReceiveReports(chunk.to_vec()));
                    }
                }
            }
            () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now).into()), if wake.is_some() => {}
        }
        let now = Instant::now();
        while let Some(a) = order.poll_frame(now) {
            if decoder.try_send(a).is_err() {
                // The decoder is far behind: this frame is dropped, and the stream restarts
                // at a keyframe.
                order.handle_decoder_full();
                break;
            }
        }
        let skipped = order.poll_skipped();
        if skipped > 0 {
            shared.record_skipped(skipped, now);
        }
        if let Some(missing_from) = order.poll_keyframe_request(now) {
            shared
                .counters
                .keyframe_requests
                .fetch_add(1, Ordering::Relaxed);
            let _ = control.send(ControlMessage::RequestKeyframe { missing_from });
        }
    }
    streams.shutdown().await;
}

/// The decoder thread: access units in, pictures (with their stamps read) out to the
/// application.
pub(crate) fn decode_loop(
    decoder: &mut decode::Decoder,
    input: &std::sync::mpsc::Receiver<Arrived>,
    output: &mpsc::Sender<Frame>,
    shared: &Shared,
) {
    let mut in_flight: BTreeMap<u64, (FrameHeader, Instant, Instant)> = BTreeMap::new();
    loop {
        let wait = if in_flight.is_empty() {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        match input.recv_timeout(wait) {
            Ok(a) => {
                let pts = a.header.pts_us;
                in_flight.insert(pts, (a.header, a.received_at, Instant::now()));
                if let Err(e) = decoder.push(&a.data, pts) {
                    warn!("{e}");
                    return;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let pull_wait = if in_flight.is_empty() {
            Duration::ZERO
        } else {
            Duration::from_millis(2)
        };
        loop {
            match decoder.pull(pull_wait) {
                Ok(Some(p)) => {
                    // Pictures come out in pts order; anything older than this one was lost.
                    let older: Vec<u64> = in_flight.range(..p.pts_us).map(|(k, _)| *k).collect();
                    for k in older {
                        in_flight.remove(&k);
                        shared.record_skipped(1, Instant::now());
                    }
                    let Some((header, received_at, pushed)) = in_flight.remove(&p.pts_us) else {
                        continue;
                    };
                    let decoded_at = Instant::now();
                    shared.record_decoded(decoded_at - pushed, decoded_at);
                    let (w, h) = (p.width as usize, p.height as usize);
                    let stamp = match p.format {
                        PixelFormat::Nv12 => p
                            .data
                            .get(..w * h)
                            .and_then(|luma| read_luma(luma, w, h, w).ok()),
                        PixelFormat::Rgba => {
                            read_luma(&decode::rgba_luma(&p.data, w, h), w, h, w).ok()
                        }
                    };
                    shared.record_shown(
                        stamp.as_ref(),
                        stamp.map_or(header.render_us, |s| s.render_time_us),
                        decoded_at,
                    );
                    let frame = Frame {
                        header,
                        width: p.width,
                        height: p.height,
                        format: p.format,
                        data: p.data,
                        received_at,
                        decoded_at,
                        stamp,
                    };
                    match output.try_send(frame) {
                        Ok(()) => shared.record_delivered(decoded_at),
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            shared.record_skipped(1, decoded_at);
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    warn!("{e}");
                    return;
                }
            }
        }
    }
}
