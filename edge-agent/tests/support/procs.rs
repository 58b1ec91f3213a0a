//! Real processes (`session-broker run`, `edge-agent run --broker`) and plain HTTP/1.1 calls to
//! them, shared by the tests that run brokers and edges side by side.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgeplay_client::broker::Placement;
use edgeplay_client::{Client, ClientError, ClientOptions, DecoderPreference, Session};
use edgeplay_protocol::link::parse_http_head;
use serde_json::{Value, json};

/// A child process whose stdout lines are read on a thread; killed when dropped.
pub struct Proc {
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `cmd` with its log level from `EDGEPLAY_TEST_LOG` (default `warn`; e.g.
    /// `EDGEPLAY_TEST_LOG=debug` to see the link and relay messages of a failing run).
    pub fn start(cmd: &mut Command) -> Self {
        let mut child = cmd
            .env(
                "RUST_LOG",
                std::env::var("EDGEPLAY_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("process starts");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The rest of the first stdout line that starts with `prefix`.
    pub fn line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line starting with `{prefix}`"));
            if let Some(rest) = l.trim().strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
    }

    /// Sends `sig` (as `kill` spells it, e.g. `-TERM`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok);
    }

    /// The exit status, if the process ends `within`.
    pub fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `session-broker` binary beside `edge-agent` (`cargo test --workspace` builds both).
pub fn broker_bin() -> PathBuf {
    let edge = PathBuf::from(env!("CARGO_BIN_EXE_edge-agent"));
    let p = edge.with_file_name("session-broker");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p edgeplay-broker` first",
        p.display()
    );
    p
}

/// `session-broker run` on a free loopback port with data in `dir` and the `extra` flags (e.g.
/// `--store etcd://…`); the process and its address.
pub fn start_broker(dir: &Path, extra: &[&str]) -> (Proc, SocketAddr) {
    let p = Proc::start(
        Command::new(broker_bin())
            .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra),
    );
    let addr = p.line("listening on").parse().expect("broker address");
    (p, addr)
}

/// `edge-agent run --broker URL` with its HTTP and QUIC on free loopback ports, at most two
/// sessions (unless `extra` says `--max-sessions`), data in `dir` and the `extra` flags: the
/// process and the edge's id (the first word of its `edge-agent …` line).
pub fn start_edge(broker_url: &str, dir: &Path, extra: &[&str]) -> (Proc, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-agent"));
    cmd.args(["run", "--broker", broker_url]).args([
        "--listen",
        "127.0.0.1:0",
        "--quic-listen",
        "127.0.0.1:0",
    ]);
    if !extra.contains(&"--max-sessions") {
        cmd.args(["--max-sessions", "2"]);
    }
    let p = Proc::start(cmd.arg("--data-dir").arg(dir).args(extra));
    let id = p.line("edge-agent");
    let id = id.split_whitespace().next().unwrap().to_owned();
    (p, id)
}

/// An empty temporary directory named after the test and this process.
pub fn tmp(name: &str) -> PathBuf {
    // Under the target dir (`cargo clean` removes it), not the machine's /tmp.
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("edgeplay-broker-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Status, headers (lower-case names), body.
pub type Reply = (u16, Vec<(String, String)>, String);

/// One HTTP/1.1 request; `Err` when the server is gone.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = super::request_head(method, path, &addr.to_string(), headers, body.len());
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let head = parse_http_head(&buf)
        .ok()
        .flatten()
        .ok_or_else(|| std::io::Error::other("no whole HTTP response"))?;
    let body = String::from_utf8_lossy(&buf[head.len..]).into_owned();
    Ok((head.status, head.headers, body))
}

/// [`try_http`] to a server that must answer.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    try_http(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

/// A JSON request (no body when `body` is `None`) and its JSON answer (`Null` if not JSON).
pub fn json_call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let (st, _, b) = http(
        addr,
        method,
        path,
        &[("Content-Type", "application/json")],
        &body,
    );
    (st, serde_json::from_str(&b).unwrap_or(Value::Null))
}

/// A 720p60 session request of `player` at `x` on the coordinate plane.
pub fn session_body(player: &str, x: f64) -> Value {
    json!({"player": player, "width": 1280, "height": 720, "fps": 60,
           "coord": {"x": x, "y": 0.0, "height": 1.0}})
}

/// `POST /v1/sessions` of [`session_body`]`(player, x)` on `broker`, which must answer 201:
/// the session id and the answer.
pub fn create_session(broker: SocketAddr, player: &str, x: f64) -> (String, Value) {
    let (st, v) = json_call(
        broker,
        "POST",
        "/v1/sessions",
        Some(&session_body(player, x)),
    );
    assert_eq!(st, 201, "{v}");
    (v["session"].as_str().unwrap().to_owned(), v)
}

/// Selects `edge`, measured at 1 ms, for session `sid` on `broker`, which must answer 200; the
/// answer.
pub fn select(broker: SocketAddr, sid: &str, edge: &str) -> Value {
    let (st, v) = json_call(
        broker,
        "POST",
        &format!("/v1/sessions/{sid}/select"),
        Some(&json!({"measured": [{"edge": edge, "rtt_ms": 1.0}]})),
    );
    assert_eq!(st, 200, "{v}");
    v
}

/// Whether a session's answer `v` offers `edge` among its candidates.
pub fn offers(v: &Value, edge: &str) -> bool {
    v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["edge"] == json!(edge))
}

/// The edges `broker` lists in `GET /v1/edges`.
pub fn edges(broker: SocketAddr) -> Vec<Value> {
    let (_, v) = json_call(broker, "GET", "/v1/edges", None);
    v.as_array().cloned().unwrap_or_default()
}

/// The edge's record as `broker` shows it in `GET /v1/edges`.
pub fn edge_record(broker: SocketAddr, id: &str) -> Option<Value> {
    edges(broker)
        .into_iter()
        .find(|r| r["ad"]["id"] == json!(id))
}

/// Polls `f` every 100 ms until it gives a value, failing after `within`.
pub fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The broker's placement-signing public key, from `GET /v1/broker/key`.
pub fn broker_key(broker: SocketAddr) -> [u8; 32] {
    let (_, k) = json_call(broker, "GET", "/v1/broker/key", None);
    edgeplay_protocol::token::from_hex(k["public_key"].as_str().expect("a public_key"))
        .expect("hex")
        .try_into()
        .expect("32 bytes")
}

/// Joins `p`'s edge over QUIC with a software decoder (answered within 60 s).
pub async fn join_placement(p: &Placement) -> Result<Session, ClientError> {
    join_quic(p.quic_addr, p.cert_fingerprint, &p.token).await
}

/// Joins the edge at `quic` (certificate `fingerprint`) with `token` through the SDK, with a
/// software decoder (no hardware probe); answered within 60 s.
pub async fn join_quic(
    quic: SocketAddr,
    fingerprint: [u8; 32],
    token: &[u8],
) -> Result<Session, ClientError> {
    let options = ClientOptions {
        decoder: DecoderPreference::Software,
        ..ClientOptions::default()
    };
    tokio::time::timeout(
        Duration::from_secs(60),
        Client::connect_with(quic, fingerprint, token, options),
    )
    .await
    .expect("a QUIC join is answered within 60 s")
}

/// Polls the blocking `f` (on tokio's blocking pool) every 50 ms until it returns `Some`, at
/// most `within`: [`eventually`] for async tests.
pub async fn eventually_async<T: Send + 'static>(
    within: Duration,
    what: &str,
    f: impl Fn() -> Option<T> + Send + Sync + Clone + 'static,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let g = f.clone();
        if let Some(v) = tokio::task::spawn_blocking(g).await.expect("poll") {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
