//! The WebRTC side of the benches: an HTTP server on loopback serving the built web player at
//! `/play/` and the edge's WHEP sender at `POST /whep/edge/{w}/{h}/{fps}`.
//!
//! The sender is [`edgeplay_edge::transport::webrtc::Whep`], answered as `edge-agent run --dev` answers
//! `POST /v1/whep`: a fresh session runtime per offer (Vulkan render, the probed encoder with
//! the profile the offer prefers), its bitrate the ceiling of the edge's congestion controller.
//! Only what a bench does not need is left out: tokens, trickle ICE, `DELETE` (a run ends when
//! Chromium closes, then [`WhepBench::settle`] makes sure its peer and session are gone).
//! A bench may add its own senders with [`WhepBench::router`]'s `merge`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use edgeplay_edge::metrics::Metrics;
use edgeplay_edge::transport::webrtc::Whep;
use edgeplay_media::encode::EncoderKind;
use edgeplay_media::gpu::Gpu;
use edgeplay_media::pipeline::PipelineConfig;
use edgeplay_media::session::{Session, SessionConfig, SessionHandle};

/// The state behind the routes: what a session needs, and the edge's WHEP sender.
#[derive(Debug)]
pub struct WhepBench {
    /// The renderer every session shares.
    pub gpu: Gpu,
    /// The sessions' metrics.
    pub metrics: Arc<Metrics>,
    /// The encoder the probe chose.
    pub encoder: EncoderKind,
    /// The edge's WHEP sender.
    pub whep: Arc<Whep>,
    /// client-sdk/web/dist.
    player_dir: PathBuf,
    next_id: AtomicU64,
}

/// An HTTP error: status and text, printed on the bench's stderr too.
#[derive(Debug)]
pub struct HttpError(pub StatusCode, pub String);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

/// A WHEP offer that could not be answered (500), logged on stderr.
pub fn failed(e: impl std::fmt::Display) -> HttpError {
    eprintln!("a WHEP offer failed: {e}");
    HttpError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// A `201 Created` WHEP answer.
#[must_use]
pub fn answered(sdp: String) -> Response {
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp"),
            (header::LOCATION, "/whep/resource"),
        ],
        sdp,
    )
        .into_response()
}

impl WhepBench {
    /// Peers bind ICE on 127.0.0.1; `web` is client-sdk/web (see
    /// [`crate::chromium::build_player`]).
    #[must_use]
    pub fn new(gpu: Gpu, encoder: EncoderKind, web: &std::path::Path) -> Arc<Self> {
        Arc::new(Self {
            gpu,
            metrics: Metrics::new(),
            encoder,
            whep: Whep::new([127, 0, 0, 1].into()),
            player_dir: web.join("dist"),
            next_id: AtomicU64::new(0),
        })
    }

    /// Starts a session runtime at `w`x`h`@`fps` with [`crate::bitrate_kbps`] and `profile`;
    /// returns it with its bitrate.
    ///
    /// # Errors
    /// An unknown configuration, or the session does not start.
    pub async fn start_session(
        &self,
        (w, h, fps): (u32, u32, u32),
        profile: edgeplay_media::encode::H264Profile,
    ) -> Result<(SessionHandle, u32)> {
        let kbps = crate::bitrate_kbps(w, h, fps)
            .ok_or_else(|| anyhow!("no bench configuration {w}x{h}@{fps}"))?;
        let pipeline = PipelineConfig {
            width: w,
            height: h,
            fps,
            bitrate_kbps: kbps,
            encoder: self.encoder.clone(),
            keyframe_interval: 0,
            threads: 0,
            audio: true,
        };
        let n = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let cfg = SessionConfig::new(format!("bench-{n}"), pipeline, 1).with_profile(profile);
        let (gpu, metrics) = (self.gpu.clone(), Arc::clone(&self.metrics));
        let session =
            tokio::task::spawn_blocking(move || Session::start(&gpu, cfg, metrics)).await??;
        Ok((session, kbps))
    }

    /// Ends every WHEP peer (and so its session) and waits until all are gone and the machine
    /// has had half a second to settle, so that the next run has it to itself.
    pub async fn settle(&self) {
        self.whep.stop_all();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.whep.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// The player and the edge's WHEP route.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/play", get(player_file))
            .route("/play/", get(player_file))
            .route("/play/{file}", get(player_file))
            .route("/whep/edge/{w}/{h}/{fps}", post(edge_offer))
            .with_state(Arc::clone(self))
    }

    /// The player's URL playing `sender` (`edge`, or a route a bench merged in at
    /// `/whep/{sender}/{w}/{h}/{fps}`) served at `addr`.
    #[must_use]
    pub fn page(addr: SocketAddr, sender: &str, (w, h, fps): (u32, u32, u32)) -> String {
        format!(
            "http://{addr}/play/?avsync=1&whep=http://{addr}/whep/{sender}/{w}/{h}/{fps}#token=bench"
        )
    }
}

/// Binds `router` on a free loopback port and serves it until the task is aborted.
///
/// # Errors
/// The port cannot be bound.
pub async fn serve(router: Router) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            eprintln!("the bench's HTTP server stopped: {e}");
        }
    });
    Ok((addr, task))
}

async fn player_file(
    State(b): State<Arc<WhepBench>>,
    file: Option<Path<String>>,
) -> Result<Response, HttpError> {
    let file = file.map_or_else(|| "index.html".to_owned(), |Path(f)| f);
    if file.contains('/') || file.starts_with('.') {
        return Err(HttpError(StatusCode::NOT_FOUND, file));
    }
    let bytes = std::fs::read(b.player_dir.join(&file))
        .map_err(|e| HttpError(StatusCode::NOT_FOUND, format!("{file}: {e}")))?;
    let mime = match file.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        _ => "application/octet-stream",
    };
    Ok(([(header::CONTENT_TYPE, mime)], bytes).into_response())
}

async fn edge_offer(
    State(b): State<Arc<WhepBench>>,
    Path((w, h, fps)): Path<(u32, u32, u32)>,
    body: Bytes,
) -> Result<Response, HttpError> {
    // As `run --dev`: the profile is the offer's first sendable H.264, the encoder built with it.
    let profile = std::str::from_utf8(&body)
        .map(edgeplay_protocol::whep::h264_profile)
        .unwrap_or_default();
    let (session, kbps) = b
        .start_session((w, h, fps), profile)
        .await
        .map_err(failed)?;
    let answer = b
        .whep
        .offer(&body, session, kbps, profile)
        .await
        .map_err(failed)?;
    Ok(answered(answer.sdp))
}
