//! Helpers of the broker's process tests: start `session-broker run`, plain HTTP/1.1 calls,
//! signed edge messages.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgeplay_broker::requests::{ENDED_DOMAIN, HEARTBEAT_DOMAIN, REGISTER_DOMAIN, sign_body};
use edgeplay_protocol::token::{EdgeId, SigningKey};
use serde_json::{Value, json};

pub const WAIT: Duration = Duration::from_secs(30);

/// A running broker; killed (SIGKILL) on drop.
pub struct Broker {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a broker on a free loopback port with `extra` arguments; no rate limits in the way.
pub fn start(data_dir: &Path, extra: &[&str]) -> Broker {
    let mut child = Command::new(env!("CARGO_BIN_EXE_session-broker"))
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("RUST_LOG", "warn")
        .env("BROKER_RATE_BURST", "1000000")
        .env("BROKER_RATE_PER_SEC", "1000000")
        .env("BROKER_IP_RATE_BURST", "1000000")
        .env("BROKER_IP_RATE_PER_SEC", "1000000")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start session-broker");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("listening on ") {
                let _ = tx.send(a.parse::<SocketAddr>().expect("address"));
            }
        }
    });
    let addr = match rx.recv_timeout(WAIT) {
        Ok(a) => a,
        Err(_) => {
            let _ = child.kill();
            panic!("broker did not report its address within {WAIT:?}");
        }
    };
    Broker { child, addr }
}

/// One request on a fresh connection; `Err` when the broker cannot be reached or hangs up.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status: u16 = resp
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {resp:?}")))?;
    let (head, rest) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of head"))?;
    let rest = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok((
        status,
        serde_json::from_str(&rest).unwrap_or(Value::String(rest)),
    ))
}

pub fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    try_http(addr, method, path, body).expect("broker answers")
}

/// The body of a chunked HTTP/1.1 answer, its chunks joined.
pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n + 2 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// `POST /v1/sessions` with `body`: asserts a 201; the session id and the whole answer.
pub fn create_session(addr: SocketAddr, body: &Value) -> (String, Value) {
    let (st, v) = http(addr, "POST", "/v1/sessions", Some(body));
    assert_eq!(st, 201, "{v}");
    let sid = v["session"].as_str().unwrap().to_owned();
    (sid, v)
}

/// `POST /v1/sessions/{sid}/select` with the measurements `sel`: asserts a 200; the answer.
pub fn select(addr: SocketAddr, sid: &str, sel: &Value) -> Value {
    let (st, v) = http(
        addr,
        "POST",
        &format!("/v1/sessions/{sid}/select"),
        Some(sel),
    );
    assert_eq!(st, 200, "{v}");
    v
}

/// A signed heartbeat of `key`'s edge with `free_slots`: asserts a 200.
pub fn heartbeat_ok(addr: SocketAddr, key: &SigningKey, free_slots: u32) {
    let (st, v) = http(
        addr,
        "POST",
        &format!("/v1/edges/{}/heartbeat", edge_id(key)),
        Some(&heartbeat(key, free_slots)),
    );
    assert_eq!(st, 200, "{v}");
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn edge_id(key: &SigningKey) -> EdgeId {
    EdgeId(key.verifying_key().to_bytes())
}

/// A signed registration: capacity 2, at `x` on the coordinate plane.
pub fn edge(key: &SigningKey, x: f64, port: u16) -> Value {
    let body = json!({
        "id": edge_id(key),
        "region": "eu", "gpu": "L4", "gpu_class": 2,
        "encoders": ["x264"], "resolutions": ["1920x1080"], "max_fps": 60,
        "capacity": 2, "price_per_min": 10,
        "coord": {"x": x, "y": 0.0, "height": 1.0},
        "quic_addr": format!("127.0.0.1:{port}"),
        "cert_fingerprint": "cd".repeat(32),
        "issued_unix_ms": now_ms(),
    });
    sign_body(REGISTER_DOMAIN, body, key)
}

/// A signed heartbeat.
pub fn heartbeat(key: &SigningKey, free_slots: u32) -> Value {
    sign_body(
        HEARTBEAT_DOMAIN,
        json!({"free_slots": free_slots, "issued_unix_ms": now_ms()}),
        key,
    )
}

/// A signed report by `key`'s edge that `session` ended for `reason` after `duration_ms`,
/// with `frames` frames of `bytes` bytes.
pub fn ended_report(
    key: &SigningKey,
    session: &str,
    reason: &str,
    frames: u64,
    bytes: u64,
) -> Value {
    sign_body(
        ENDED_DOMAIN,
        json!({"session": session, "reason": reason, "started_unix_ms": now_ms() - 5000,
               "duration_ms": 5000, "frames": frames, "bytes": bytes,
               "issued_unix_ms": now_ms()}),
        key,
    )
}

/// A metric's value in the broker's `/metrics`, if it is there.
pub fn metric(addr: SocketAddr, line_prefix: &str) -> Option<u64> {
    let (_, m) = http(addr, "GET", "/metrics", None);
    m.as_str()?
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.strip_prefix(' ')?.parse().ok())
}

pub fn session_body(player: &str) -> Value {
    json!({
        "player": player,
        "coord": {"x": 1.0, "y": 0.0, "height": 1.0},
        "width": 1280, "height": 720, "fps": 60,
    })
}

/// Polls `f` every 50 ms until it returns `Some`, at most `within`.
pub fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A broker in a fresh data dir named after `test` (run with `extra` arguments), with two
/// edges registered: keys `[seed; 32]` and `[seed + 1; 32]`, at x = `xs[0]` and `xs[1]`, both
/// advertising `port`; the broker, its data dir (for the test to remove) and the two keys.
pub fn broker_with_two_edges(
    test: &str,
    seed: u8,
    xs: [f64; 2],
    port: u16,
    extra: &[&str],
) -> (Broker, PathBuf, SigningKey, SigningKey) {
    let dir = std::env::temp_dir().join(format!("edgeplay-broker-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let b = start(&dir, extra);
    let first = SigningKey::from_bytes(&[seed; 32]);
    let second = SigningKey::from_bytes(&[seed + 1; 32]);
    for (k, x) in [(&first, xs[0]), (&second, xs[1])] {
        let (st, v) = http(b.addr, "POST", "/v1/edges", Some(&edge(k, x, port)));
        assert_eq!(st, 201, "{v}");
    }
    (b, dir, first, second)
}
