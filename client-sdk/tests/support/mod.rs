//! A live edge for the SDK's process tests: the edge's real QUIC endpoint (Vulkan render,
//! GStreamer encode) served from the test process on a free loopback port, as
//! `edge-agent run --dev --quic-listen 127.0.0.1:0` serves it, with its own dev token.

#![allow(dead_code, reason = "each test binary uses a part of the helper")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use edgeplay_edge::metrics::Metrics;
use edgeplay_edge::transport::quic::{QuicConfig, QuicEdge};
use edgeplay_edge::transport::token::DevToken;
use edgeplay_media::encode::{EncoderChoice, probe};
use edgeplay_media::gpu::Gpu;
use edgeplay_media::pipeline::PipelineConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Frame rate of the test edge: 30 keeps lavapipe and x264 ahead on a loaded machine.
pub const FPS: u32 = 30;
/// Game seed of every session.
pub const SEED: u64 = 7;

pub struct Edge {
    pub addr: std::net::SocketAddr,
    pub fingerprint_hex: String,
    pub token: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Edge {
    /// Binds and serves; call inside a multi-threaded tokio runtime.
    pub fn start() -> Edge {
        let pipeline = PipelineConfig {
            width: 1280,
            height: 720,
            fps: FPS,
            bitrate_kbps: 3000,
            encoder: probe(EncoderChoice::Auto).expect("an encoder"),
            keyframe_interval: 0,
            threads: 0,
            audio: true,
        };
        let mut cfg = QuicConfig::new("127.0.0.1:0".parse().unwrap(), pipeline);
        cfg.seed = SEED;
        let token = DevToken::random().unwrap();
        let edge = QuicEdge::bind(
            cfg,
            Arc::new(token.clone()),
            Gpu::new().expect("a Vulkan device"),
            Metrics::new(),
        )
        .expect("QUIC binds");
        let (stop, stopped) = oneshot::channel();
        let addr = edge.local_addr().unwrap();
        let fingerprint_hex = edge.fingerprint_hex();
        let task = tokio::spawn(async move {
            edge.serve(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Edge {
            addr,
            fingerprint_hex,
            token: token.as_str().to_owned(),
            stop: Some(stop),
            task,
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the edge stops within 15 s")
            .unwrap();
    }
}

/// A fresh empty folder under the system's temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a command to completion off the async threads (the edge keeps serving meanwhile).
pub async fn output(mut cmd: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("the command starts"))
        .await
        .unwrap()
}
