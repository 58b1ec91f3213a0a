//! `edge-agent run --broker URL`: the edge serving a broker's players. It binds QUIC, the UDP
//! echo and its HTTP side (health, metrics), keeps the [`link`](crate::link) to the broker up
//! with the edge's load, and on SIGTERM drains: tells the broker, waits (bounded) for its
//! sessions to end, exits. The load is the count of the edge's one
//! [`Admission`](crate::admission::Admission), which WHEP and QUIC joins both take their slot
//! from: the heartbeat goes out as soon as a slot is taken or given back, so the broker stops
//! placing on a full edge until one frees.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use edgeplay_media::gpu::Gpu;
use edgeplay_protocol::coords::Coord;
use edgeplay_protocol::link::{EdgeAd, HEARTBEAT_BUSY_MS};
use edgeplay_protocol::token::EdgeId;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::admission::Admission;
use crate::http::{DevServerConfig, EdgeHttp, shutdown_signal};
use crate::link::coords::Coords;
use crate::link::identity::{BrokerTokens, load_or_create_key};
use crate::link::wire::broker_key;
use crate::link::{LinkConfig, Load, run_link, serve_echo};
use crate::metrics::Metrics;
use crate::transport::quic::{QuicConfig, QuicEdge};
use crate::transport::webrtc::rtt_probe::Prober;

/// Flags of `edge-agent run --broker`.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// Home broker, e.g. http://127.0.0.1:8090: register there and serve its players.
    #[arg(long, env = "EDGEPLAY_BROKER")]
    pub broker: Option<String>,
    /// The broker's Ed25519 public key (64 hex digits); without it the edge pins the key the
    /// broker shows first, in DATA_DIR/broker.pub.
    #[arg(long, env = "EDGEPLAY_BROKER_KEY")]
    pub broker_key: Option<String>,
    /// Where the edge's identity (edge.key) and the pinned broker key live.
    #[arg(long, env = "EDGEPLAY_DATA_DIR", default_value = "./edge-data")]
    pub data_dir: PathBuf,
    /// Region advertised to the broker.
    #[arg(long, env = "EDGEPLAY_REGION", default_value = "local")]
    pub region: String,
    /// GPU class 0..8 advertised (higher is stronger).
    #[arg(long, default_value_t = 0)]
    pub gpu_class: u8,
    /// Price per minute advertised, in the settlement token's smallest unit.
    #[arg(long, default_value_t = 0)]
    pub price_per_min: u64,
    /// Network coordinate to start from, `X,Y,HEIGHT` (Vivaldi, ms); from then on it is
    /// measured against the peer edges the broker names.
    #[arg(long, default_value = "0,0,0", value_parser = parse_coord)]
    pub coord: Coord,
    /// UDP echo listen address (players' RTT probes).
    #[arg(long, default_value = "127.0.0.1:0", env = "EDGEPLAY_ECHO_LISTEN")]
    pub echo_listen: SocketAddr,
    /// QUIC address advertised, when players reach it under another (e.g. NAT) address.
    #[arg(long)]
    pub advertise_quic: Option<SocketAddr>,
    /// Echo address advertised, when players reach it under another address.
    #[arg(long)]
    pub advertise_echo: Option<SocketAddr>,
    /// Longest wait, on SIGTERM, for sessions to end before the edge exits.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout_secs: u64,
}

fn parse_coord(s: &str) -> Result<Coord, String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("`{s}` is not X,Y,HEIGHT (three numbers)"))?;
    let [x, y, height] = v[..] else {
        return Err(format!("`{s}` is not X,Y,HEIGHT (three numbers)"));
    };
    let c = Coord { x, y, height };
    if c.is_valid() {
        Ok(c)
    } else {
        Err(format!("`{s}`: coordinates are finite and HEIGHT ≥ 0"))
    }
}

/// The parts of a running edge the broker mode drives.
#[derive(Debug)]
pub struct Edge {
    /// Settings of the HTTP side (listen address, encoder, capacity: its `max_sessions` is the
    /// edge's, over every transport).
    pub http: DevServerConfig,
    /// The GPU.
    pub gpu: Gpu,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// QUIC settings (its `max_sessions` is not used: QUIC shares the edge's admission).
    pub quic: QuicConfig,
    /// GPU model advertised.
    pub gpu_name: String,
}

/// `edge-agent run --broker URL`: serves the broker's players until SIGTERM, then drains.
///
/// # Errors
/// Keys, sockets, or a broker that shows a key other than the pinned one.
pub async fn serve(args: BrokerArgs, edge: Edge) -> anyhow::Result<()> {
    use anyhow::Context;
    let url = args
        .broker
        .clone()
        .context("`--broker URL` is needed to serve a broker's players")?;
    let key = load_or_create_key(&args.data_dir)?;
    let id = EdgeId(key.verifying_key().to_bytes());
    let broker = broker_key(&url, args.broker_key.as_deref(), &args.data_dir).await?;
    let tokens = Arc::new(BrokerTokens::new(broker, id));
    // One count of sessions for both transports: what the edge admits and what it reports.
    let admission = Admission::with_idle(edge.http.max_sessions, edge.http.idle, &edge.metrics);
    let quic = QuicEdge::bind_shared(
        edge.quic.clone(),
        tokens.clone(),
        edge.gpu.clone(),
        Arc::clone(&edge.metrics),
        admission.clone(),
    )?;
    let quic_addr = args.advertise_quic.unwrap_or(quic.local_addr()?);
    let echo = UdpSocket::bind(args.echo_listen).await.with_context(|| {
        format!(
            "cannot bind the echo on {}: pick --echo-listen",
            args.echo_listen
        )
    })?;
    let echo_addr = args.advertise_echo.unwrap_or(echo.local_addr()?);
    let listener = tokio::net::TcpListener::bind(edge.http.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: pick another --listen",
                edge.http.listen
            )
        })?;
    let http_addr = listener.local_addr()?;
    let capacity = u32::try_from(admission.max()).unwrap_or(u32::MAX);
    let advert = EdgeAd {
        id,
        region: args.region.clone(),
        gpu: edge.gpu_name.clone(),
        gpu_class: args.gpu_class,
        encoders: vec![edge.http.encoder.to_string()],
        resolutions: vec!["1280x720".into()],
        max_fps: 60,
        capacity,
        price_per_min: args.price_per_min,
        coord: args.coord,
        quic_addr,
        cert_fingerprint: quic.fingerprint_hex(),
        echo_addr: Some(echo_addr),
        issued_unix_ms: 0,
    };
    let http = EdgeHttp::new(
        edge.http.clone(),
        edge.gpu.clone(),
        Arc::clone(&edge.metrics),
        tokens,
        admission.clone(),
    );
    println!("edge-agent {id} serving broker {url}");
    println!(
        "  quic {quic_addr} certificate sha256 {}",
        quic.fingerprint_hex()
    );
    println!("  echo {echo_addr}");
    println!("  http http://{http_addr} (/healthz, /metrics)");

    let (stop_tx, stop_rx) = watch::channel(false);
    // The link stops last, once the sessions' end reports have gone out on it.
    let (link_stop_tx, link_stop_rx) = watch::channel(false);
    let mut used = admission.watch();
    let (load_tx, load_rx) = watch::channel(Load {
        sessions: *used.borrow_and_update(),
        draining: false,
    });
    // The load follows the slots taken, at once.
    let report = |load_tx: &watch::Sender<Load>, n: u32| {
        load_tx.send_if_modified(|l| {
            let changed = l.sessions != n;
            l.sessions = n;
            changed
        });
    };
    let metrics = Arc::clone(&edge.metrics);
    let status = Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let m = Arc::clone(&metrics);
                async move { m.render() }
            }),
        );
    let mut tasks = JoinSet::new();
    {
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            axum::serve(listener, status)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await
                .context("HTTP")
        });
    }
    {
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            quic.serve(async move {
                let _ = stop.changed().await;
            })
            .await
            .context("QUIC")
        });
    }
    tasks.spawn({
        let stop = stop_rx.clone();
        async move {
            serve_echo(echo, stop).await;
            Ok(())
        }
    });
    let link = tokio::spawn(run_link(
        LinkConfig {
            url,
            broker_key: broker,
            key,
            advert,
            prober: Arc::new(Prober::new(edge.http.listen.ip())),
            metrics: Arc::clone(&edge.metrics),
            coords: Arc::new(Coords::new(
                args.coord,
                id,
                args.echo_listen.ip(),
                Arc::clone(&edge.metrics),
            )),
            admission: admission.clone(),
        },
        http.router(),
        load_rx,
        link_stop_rx,
    ));
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut link = link;
    loop {
        tokio::select! {
            () = &mut signal => break,
            // The admission lives as long as this function: the watch never closes here.
            Ok(()) = used.changed() => report(&load_tx, *used.borrow_and_update()),
            r = &mut link => {
                let _ = stop_tx.send(true);
                let _ = link_stop_tx.send(true);
                return match r {
                    Ok(r) => r.map_err(Into::into),
                    Err(e) => Err(anyhow::anyhow!("the link task failed: {e}")),
                };
            }
        }
    }
    info!("draining: the broker places no new sessions here; waiting for sessions to end");
    load_tx.send_modify(|l| l.draining = true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.drain_timeout_secs);
    loop {
        let n = *used.borrow_and_update();
        report(&load_tx, n);
        if n == 0 {
            break;
        }
        tokio::select! {
            Ok(()) = used.changed() => {}
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    // Sessions still running past the drain end now (`edge_stopped`); their reports and the
    // final load go out on the link, which stops one heartbeat period later.
    let _ = stop_tx.send(true);
    http.end_all().await;
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            warn!(error = %e, "stopping");
        }
    }
    tokio::time::sleep(Duration::from_millis(HEARTBEAT_BUSY_MS)).await;
    let _ = link_stop_tx.send(true);
    let _ = link.await;
    info!("edge stopped");
    Ok(())
}
