//! `cargo xtask bench broker`: the broker's HTTP path under a real load generator.
//!
//! Starts a release `session-broker run` on loopback (per backend: redb in a temp dir, then a
//! fresh etcd from testkit), registers `--edges` signed edges spread over the coordinate plane,
//! and runs Debian's `wrk` for `--seconds` with `--connections` keep-alive connections. Its Lua
//! script POSTs `/v1/sessions` bodies with a fresh player name and a random coordinate each, so
//! every request is a placement plus a durable session write (group commit on redb, one put on
//! etcd). The rate limits are raised for the run (one address, many names). The load generator
//! runs on the same machine as the broker and takes CPU from it; the figures say so.
//!
//! Output: per backend, requests, requests/s, non-201 answers, and latency p50/p95/p99/max as
//! wrk measured them (from connection write to response, including queueing in the broker).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use edgeplay_broker::api::{REGISTER_DOMAIN, sign_body};
use edgeplay_protocol::hash::SplitMix64;
use edgeplay_protocol::token::{EdgeId, SigningKey};
use edgeplay_testkit::etcd::Etcd;

struct Args {
    edges: usize,
    seconds: u64,
    connections: usize,
    threads: usize,
    stores: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        edges: 1000,
        seconds: 10,
        connections: 32,
        threads: 2,
        stores: vec!["redb".into(), "etcd".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--edges" => a.edges = val()?.parse()?,
            "--seconds" => a.seconds = val()?.parse()?,
            "--connections" => a.connections = val()?.parse()?,
            "--threads" => a.threads = val()?.parse()?,
            "--store" => {
                let v = val()?;
                a.stores = match v.as_str() {
                    "both" => vec!["redb".into(), "etcd".into()],
                    "redb" | "etcd" => vec![v],
                    _ => bail!("--store: redb, etcd or both"),
                };
            }
            _ => bail!(
                "unknown flag {flag}; flags: --edges N --seconds S --connections C --threads T --store redb|etcd|both"
            ),
        }
    }
    if a.seconds == 0 || a.seconds > 120 {
        bail!("--seconds: 1 to 120 (the run is bounded)");
    }
    Ok(a)
}

struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn build_broker() -> Result<PathBuf> {
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

fn start(bin: &Path, dir: &Path, store: &str) -> Result<Broker> {
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
        .env("RUST_LOG", "warn")
        .env("BROKER_RATE_BURST", "1e9")
        .env("BROKER_RATE_PER_SEC", "1e9")
        .env("BROKER_IP_RATE_BURST", "1e9")
        .env("BROKER_IP_RATE_PER_SEC", "1e9")
        .stdout(Stdio::piped())
        .spawn()
        .context("start session-broker")?;
    let stdout = child.stdout.take().context("broker stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .context("broker exited before listening")?
            .context("read broker stdout")?;
        if let Some(a) = line.strip_prefix("listening on ") {
            break a.parse()?;
        }
    };
    // Keep draining stdout so the broker never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Ok(Broker { child, addr })
}

fn post(addr: SocketAddr, path: &str, body: &str) -> Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    resp.get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad response {resp:?}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn register_edges(addr: SocketAddr, n: usize) -> Result<()> {
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
        let st = post(addr, "/v1/edges", &body)?;
        if st != 201 {
            bail!("edge registration answered {st}");
        }
    }
    Ok(())
}

const SCRIPT: &str = r#"
local counter = 0
local thread_id = 0
local threads = {}
setup = function(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
  table.insert(threads, thread)
end
init = function(args)
  math.randomseed(1000 + tid)
end
request = function()
  counter = counter + 1
  local body = string.format(
    '{"player":"bench-%d-%d","coord":{"x":%d,"y":%d,"height":1.0},"width":1280,"height":720,"fps":60}',
    tid, counter, math.random(-100, 100), math.random(-100, 100))
  return wrk.format("POST", "/v1/sessions", {["Content-Type"] = "application/json"}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("EDGEPLAY requests=%d errors=%d non2xx=%d p50=%d p95=%d p99=%d max=%d\n",
    summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"#;

struct Figures {
    requests: u64,
    per_sec: f64,
    errors: u64,
    non2xx: u64,
    p50_us: u64,
    p95_us: u64,
    p99_us: u64,
    max_us: u64,
}

fn field(line: &str, name: &str) -> Result<u64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .ok_or_else(|| anyhow!("no {name} in wrk's output"))?
        .parse()
        .with_context(|| format!("{name} in wrk's output"))
}

fn run_wrk(addr: SocketAddr, a: &Args, script: &Path) -> Result<Figures> {
    let out = Command::new("wrk")
        .arg(format!("-t{}", a.threads))
        .arg(format!("-c{}", a.connections))
        .arg(format!("-d{}s", a.seconds))
        .args(["--timeout", "5s", "--latency", "-s"])
        .arg(script)
        .arg(format!("http://{addr}"))
        .output()
        .context("run wrk: install it with `apt-get install wrk` (or `cargo xtask setup`)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let line = text
        .lines()
        .find(|l| l.starts_with("EDGEPLAY "))
        .ok_or_else(|| anyhow!("wrk printed no summary:\n{text}"))?;
    let per_sec: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .ok_or_else(|| anyhow!("no Requests/sec in:\n{text}"))?
        .trim()
        .parse()?;
    Ok(Figures {
        requests: field(line, "requests")?,
        per_sec,
        errors: field(line, "errors")?,
        non2xx: field(line, "non2xx")?,
        p50_us: field(line, "p50")?,
        p95_us: field(line, "p95")?,
        p99_us: field(line, "p99")?,
        max_us: field(line, "max")?,
    })
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let bin = build_broker()?;
    let tmp = std::env::temp_dir().join(format!("edgeplay-bench-broker-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let script = tmp.join("sessions.lua");
    std::fs::write(&script, SCRIPT)?;
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "broker HTTP bench: {} edges, wrk -t{} -c{} for {} s, POST /v1/sessions, {cores} cores shared by broker, store and wrk",
        a.edges, a.threads, a.connections, a.seconds
    );
    let mut rows = Vec::new();
    for store in &a.stores {
        let dir = tmp.join(store);
        let etcd;
        let url = if store == "etcd" {
            etcd = Etcd::start().map_err(|e| anyhow!("{e}"))?;
            etcd.store_url("bench")
        } else {
            "redb".to_owned()
        };
        let broker = start(&bin, &dir, &url)?;
        register_edges(broker.addr, a.edges)?;
        let f = run_wrk(broker.addr, &a, &script)?;
        println!(
            "{store}: {} requests, {:.0}/s, p50 {} p95 {} p99 {} max {}, {} non-201, {} socket errors",
            f.requests,
            f.per_sec,
            ms(f.p50_us),
            ms(f.p95_us),
            ms(f.p99_us),
            ms(f.max_us),
            f.non2xx,
            f.errors
        );
        rows.push((store.clone(), f));
        drop(broker);
    }
    println!();
    println!("| store | requests | requests/s | p50 | p95 | p99 | max | non-201 |");
    println!("|---|---|---|---|---|---|---|---|");
    for (store, f) in &rows {
        println!(
            "| {store} | {} | {:.0} | {} | {} | {} | {} | {} |",
            f.requests,
            f.per_sec,
            ms(f.p50_us),
            ms(f.p95_us),
            ms(f.p99_us),
            ms(f.max_us),
            f.non2xx
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
