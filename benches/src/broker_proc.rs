//! The broker benches' common parts (`bench broker`, `bench soak`): a release
//! `session-broker run` on loopback, the HTTP/1.1 client (hyper-util's legacy client), signed
//! edges and their heartbeats, and what the machine, the process and the store look like.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use edgeplay_broker::requests::{HEARTBEAT_DOMAIN, REGISTER_DOMAIN, sign_body};
use edgeplay_game::hash::SplitMix64;
use edgeplay_protocol::token::{EdgeId, SigningKey};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A running `session-broker`; killed when dropped.
#[derive(Debug)]
pub struct Broker {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes the bench's temp dir however the run ends.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Builds the release broker; its path.
///
/// # Errors
/// The build's.
pub fn build_broker() -> Result<PathBuf> {
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "-p",
            "edgeplay-broker",
            "--bin",
            "session-broker",
        ])
        .current_dir(root())
        .status()
        .context("run cargo build for the broker")?;
    if !st.success() {
        bail!("building session-broker failed");
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    Ok(target.join("release").join("session-broker"))
}

/// Starts `bin` on a free loopback port over `store` in `dir`, with `extra` arguments and no
/// rate limits in the way.
///
/// # Errors
/// It did not start or did not say where it listens.
pub fn start(bin: &Path, dir: &Path, store: &str, extra: &[&str]) -> Result<Broker> {
    let mut child = Command::new(bin)
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--store",
            store,
            "--data-dir",
        ])
        .arg(dir)
        .args(extra)
        .env("RUST_LOG", "warn")
        .env("BROKER_RATE_BURST", "1e9")
        .env("BROKER_RATE_PER_SEC", "1e9")
        .env("BROKER_IP_RATE_BURST", "1e9")
        .env("BROKER_IP_RATE_PER_SEC", "1e9")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let stdout = child.stdout.take().context("broker stdout")?;
    let mut broker = Broker {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let mut lines = BufReader::new(stdout).lines();
    broker.addr = loop {
        let line = lines
            .next()
            .context("the broker exited before listening")?
            .context("read the broker's stdout")?;
        if let Some(a) = line.strip_prefix("listening on ") {
            break a
                .parse()
                .with_context(|| format!("broker address in {line:?}"))?;
        }
    };
    // Keep draining stdout so the broker never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Ok(broker)
}

/// The HTTP/1.1 client of every call: hyper-util's legacy client, Nagle off as before.
pub type Http = Client<HttpConnector, Full<Bytes>>;

/// A client that keeps up to `idle` connections open between requests (0: one per call).
#[must_use]
pub fn client(idle: usize) -> Http {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(idle)
        .pool_idle_timeout(None)
        .build(connector)
}

/// A `method` request for `path` on `addr`, with a JSON body unless `body` is empty.
///
/// # Errors
/// A malformed request.
pub fn request_to(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: String,
) -> Result<Request<Full<Bytes>>> {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if !body.is_empty() {
        b = b.header(header::CONTENT_TYPE, "application/json");
    }
    Ok(b.body(Full::new(Bytes::from(body)))?)
}

/// Sends `req` and reads the whole response: its status and body.
///
/// # Errors
/// The connection's, or a body that could not be read.
pub async fn exchange(http: &Http, req: Request<Full<Bytes>>) -> Result<(u16, Bytes)> {
    let resp = http.request(req).await.map_err(|e| anyhow!(chain(&e)))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// An error with its causes (hyper's own says only which step failed).
#[must_use]
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out += &format!(": {c}");
        cause = c.source();
    }
    out
}

/// Blocking calls for setup, heartbeats and metrics: the same client on a runtime of their
/// own (not the load generator's), a connection per call as before.
#[derive(Debug)]
pub struct Blocking {
    rt: tokio::runtime::Runtime,
    http: Http,
}

impl Blocking {
    /// A client opening a connection per call.
    ///
    /// # Errors
    /// Tokio could not start.
    pub fn new() -> Result<Self> {
        Self::pooled(0)
    }

    /// A client keeping up to `idle` connections open between calls.
    ///
    /// # Errors
    /// Tokio could not start.
    pub fn pooled(idle: usize) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start tokio for the blocking client")?;
        Ok(Blocking {
            rt,
            http: client(idle),
        })
    }

    /// One exchange: status and body.
    ///
    /// # Errors
    /// The connection's, or no answer within 10 s.
    pub fn call(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<(u16, String)> {
        let method = Method::from_bytes(method.as_bytes())?;
        let req = request_to(addr, method, path, body.to_owned())?;
        let (status, body) = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), exchange(&self.http, req))
                .await
                .map_err(|_| anyhow!("no answer within 10 s"))?
        })?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// The wall clock, unix ms.
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Registers `n` signed edges; their keys, for their heartbeats.
///
/// # Errors
/// A registration that failed.
pub fn register_edges(http: &Blocking, addr: SocketAddr, n: usize) -> Result<Vec<SigningKey>> {
    let mut keys = Vec::with_capacity(n);
    let mut rng = SplitMix64(7);
    for i in 0..n {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        let key = SigningKey::from_bytes(&seed);
        let x = (rng.next_u64() % 200) as f64 - 100.0;
        let y = (rng.next_u64() % 200) as f64 - 100.0;
        let body = serde_json::json!({
            "id": EdgeId(key.verifying_key().to_bytes()),
            "region": "eu", "gpu": "L4", "gpu_class": 2,
            "encoders": ["x264"], "resolutions": ["1920x1080"], "max_fps": 60,
            "capacity": 1000, "price_per_min": 10,
            "coord": {"x": x, "y": y, "height": 1.0},
            "quic_addr": format!("127.0.0.1:{}", 10000 + i % 50000),
            "cert_fingerprint": "cd".repeat(32),
            "issued_unix_ms": now_ms(),
        });
        let body = sign_body(REGISTER_DOMAIN, body, &key).to_string();
        let (st, text) = http.call(addr, "POST", "/v1/edges", &body)?;
        if st != 201 {
            bail!("edge registration answered {st}: {text}");
        }
        keys.push(key);
    }
    Ok(keys)
}

/// Seconds between two heartbeats of one bench edge (the broker marks an edge dead after
/// three missed ones).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// The registered edges' signed heartbeats, each every [`HEARTBEAT_EVERY`], from a thread of
/// their own for as long as the bench loads the broker (live edges heartbeat; without them the
/// broker marks the bench's edges dead one by one during a long run). Stops when dropped.
#[derive(Debug)]
pub struct Heartbeats {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeats {
    /// Starts heartbeating every key of `keys` every [`HEARTBEAT_EVERY`] to `addr`, over a pool
    /// of keep-alive connections.
    #[must_use]
    pub fn start(addr: SocketAddr, keys: Vec<SigningKey>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (st, se, fa) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed));
        let thread = std::thread::spawn(move || {
            let http = match Blocking::pooled(4) {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("no heartbeats: {e:#}");
                    return;
                }
            };
            let gap = HEARTBEAT_EVERY / u32::try_from(keys.len().max(1)).unwrap_or(u32::MAX);
            let mut due = Instant::now();
            'beats: loop {
                for key in &keys {
                    if st.load(Ordering::Relaxed) {
                        break 'beats;
                    }
                    let id = EdgeId(key.verifying_key().to_bytes());
                    let body = serde_json::json!({
                        "free_slots": 1000, "draining": false, "issued_unix_ms": now_ms(),
                    });
                    let body = sign_body(HEARTBEAT_DOMAIN, body, key).to_string();
                    match http.call(addr, "POST", &format!("/v1/edges/{id}/heartbeat"), &body) {
                        Ok((200, _)) => se.fetch_add(1, Ordering::Relaxed),
                        _ => fa.fetch_add(1, Ordering::Relaxed),
                    };
                    due += gap;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            }
        });
        Self {
            stop,
            sent,
            failed,
            thread: Some(thread),
        }
    }

    /// Heartbeats answered 200, and the others.
    #[must_use]
    pub fn counts(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---- what the machine and the store look like ----

/// The 1-minute load average.
#[must_use]
pub fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Bytes under `dir`.
#[must_use]
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// The first sample of an unlabelled metric in a Prometheus text page.
#[must_use]
pub fn metric(http: &Blocking, addr: SocketAddr, name: &str) -> Option<u64> {
    let (_, page) = http.call(addr, "GET", "/metrics", "").ok()?;
    let value = page.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        if parts.next() == Some(name) {
            parts.next()?.parse::<f64>().ok()
        } else {
            None
        }
    });
    value.map(|v| v as u64)
}

// ---- figures ----

/// Exact percentile (nearest rank) of sorted samples, in µs.
#[must_use]
pub fn pct(sorted: &[u32], p: f64) -> u32 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted.len().max(1)) - 1;
    sorted.get(i).copied().unwrap_or(0)
}

/// µs as `1.23 ms`.
#[must_use]
pub fn ms(us: u32) -> String {
    format!("{:.2} ms", f64::from(us) / 1000.0)
}

/// `12,345`.
#[must_use]
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Bytes as `1.2 MiB`.
#[must_use]
pub fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// A load average, or `n/a`.
#[must_use]
pub fn load(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.2}"))
}
