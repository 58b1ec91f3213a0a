//! The edge's QUIC endpoint in the test's own runtime, serving [`pipeline_720p30`] sessions
//! on a free loopback port, shared by the QUIC tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use edgeplay_edge::metrics::Metrics;
use edgeplay_edge::transport::quic::{QuicConfig, QuicEdge, QuicError};
use edgeplay_edge::transport::token::DevToken;
use edgeplay_media::gpu::Gpu;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::pipeline_720p30;

/// A serving QUIC endpoint: what a client needs to reach it, and its metrics.
pub struct QuicServer {
    pub addr: SocketAddr,
    /// What clients pin: SHA-256 of the certificate.
    pub fingerprint: [u8; 32],
    /// The dev join token it accepts.
    pub token: String,
    pub metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<Result<(), QuicError>>,
}

impl QuicServer {
    /// Binds and serves sessions of the game `seed` (the endpoint's default when `None`); call
    /// inside a multi-threaded tokio runtime.
    pub fn start(seed: Option<u64>) -> Self {
        let mut cfg = QuicConfig::new("127.0.0.1:0".parse().unwrap(), pipeline_720p30());
        if let Some(seed) = seed {
            cfg.seed = seed;
        }
        let token = DevToken::random().unwrap();
        let metrics = Metrics::new();
        let edge = QuicEdge::bind(
            cfg,
            Arc::new(token.clone()),
            Gpu::new().expect("a Vulkan device"),
            Arc::clone(&metrics),
        )
        .expect("QUIC binds");
        let (addr, fingerprint) = (edge.local_addr().unwrap(), edge.fingerprint());
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(edge.serve(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            fingerprint,
            token: token.as_str().to_owned(),
            metrics,
            stop: Some(stop),
            served,
        }
    }

    /// Tells the endpoint to shut down (its sessions are closed); [`Self::stop`] waits for it.
    pub fn shut_down(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Shuts down and waits for the endpoint to stop, without error, within 15 s.
    pub async fn stop(mut self) {
        self.shut_down();
        tokio::time::timeout(Duration::from_secs(15), self.served)
            .await
            .expect("the edge stops within 15 s")
            .expect("the edge's task ends")
            .expect("the edge serves without error");
    }
}
