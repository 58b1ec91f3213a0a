//! `cargo xtask demo`: a broker and two edges in two emulated regions on loopback, and the URL of
//! a playable session in the browser player.
//!
//! The broker serves the web player at `/play/`; the page names only the broker, which narrows
//! its registry to the candidates of the page's region, has the browser measure each (a
//! short-lived RTCPeerConnection), picks the fastest and relays WHEP to it. The regions are
//! `eu-west` and `us-east`: each edge advertises its region and a network coordinate 45 ms
//! apart, so a player asking for one region is placed there. The native path to `us-east` (its
//! QUIC port and UDP echo) goes through testkit's relay (`edgeplay-relay`) with 40 ms each way,
//! as the tests' regions do; browsers' ICE reaches both edges directly. Every process logs to
//! `target/demo/*.log`.
//!
//! `--check` plays once instead of waiting: headless Chromium opens the printed URL and must
//! show stamped frames (a screenshot goes to `artifacts/demo-broker.png`), and `edgeplay-play
//! --broker` must decode frames from the other region; then everything stops.

use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{Result, root, run, target_dir};

/// The emulated regions: name, network coordinate (`x,y,height`, ms) and the one-way delay
/// (ms) the relay puts in front of the edge's QUIC port and echo (0: none).
const REGIONS: [(&str, &str, u64); 2] = [("eu-west", "0,0,1", 0), ("us-east", "45,0,1", 40)];

/// A free loopback UDP port (bound and released: the edge binds it next).
fn free_udp() -> Result<String> {
    let s =
        std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("no free UDP port: {e}"))?;
    let a = s.local_addr().map_err(|e| e.to_string())?;
    Ok(a.to_string())
}

/// A child process; SIGTERM (then SIGKILL after 10 s) when dropped.
struct Running {
    name: String,
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!(
                "xtask: {} did not stop within 10 s of SIGTERM; killing it",
                self.name
            );
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `program` with stderr to `log`, and waits for the stdout line starting with `prefix`:
/// the rest of that line.
fn start(
    name: &str,
    program: &Path,
    args: &[&str],
    log: &Path,
    prefix: &str,
) -> Result<(Running, String)> {
    let log_file =
        std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let mut child = Command::new(program)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let child = Running {
        name: name.to_owned(),
        child,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.trim().strip_prefix(prefix) {
                    // Keep draining stdout so that the child never blocks on a full pipe.
                    std::thread::spawn(move || while rx.recv().is_ok() {});
                    return Ok((child, rest.trim().to_owned()));
                }
            }
            Err(_) => {
                return Err(format!(
                    "{name} did not start within 60 s (no `{prefix}` line): see {}",
                    log.display()
                ));
            }
        }
    }
}

/// `GET path` on `addr` over plain HTTP/1.1: the body, if the status is 200.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

pub fn demo(args: &[String]) -> Result {
    let mut check = false;
    let mut listen = "127.0.0.1:8090".to_owned();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--check" => check = true,
            "--listen" => {
                listen = it
                    .next()
                    .ok_or("--listen needs an address, e.g. 127.0.0.1:8090")?
                    .clone();
            }
            other => {
                return Err(format!(
                    "demo: unknown flag `{other}`; flags: --listen HOST:PORT (the broker's address), --check (play once and stop)"
                ));
            }
        }
    }
    crate::setup()?;
    run(
        "cargo",
        &[
            "build",
            "--release",
            "-p",
            "edgeplay-broker",
            "-p",
            "edgeplay-edge",
            "-p",
            "edgeplay-client",
            "-p",
            "edgeplay-testkit",
            "--features",
            "edgeplay-client/player",
        ],
    )?;
    let bin = target_dir().join("release");
    let work = target_dir().join("demo");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let player_dir = root().join("client-sdk/web/dist");
    let s = |p: &Path| p.to_string_lossy().into_owned();

    let (broker, addr) = start(
        "the broker",
        &bin.join("session-broker"),
        &[
            "run",
            "--listen",
            &listen,
            "--data-dir",
            &s(&work.join("broker")),
            "--player-dir",
            &s(&player_dir),
        ],
        &work.join("broker.log"),
        "listening on",
    )
    .map_err(|e| format!("{e} (is {listen} taken? pass `--listen 127.0.0.1:PORT`)"))?;
    let broker_url = format!("http://{addr}");
    let mut children = vec![broker];
    let mut edges = Vec::new();
    for (region, coord, delay_ms) in REGIONS {
        let data_dir = s(&work.join(format!("edge-{region}")));
        let mut args: Vec<String> = [
            "run",
            "--broker",
            &broker_url,
            "--listen",
            "127.0.0.1:0",
            "--region",
            region,
            "--coord",
            coord,
            "--max-sessions",
            "4",
            "--data-dir",
            &data_dir,
        ]
        .map(String::from)
        .to_vec();
        if delay_ms == 0 {
            args.extend(["--quic-listen", "127.0.0.1:0"].map(String::from));
        } else {
            // The edge listens on ports picked here; players are given the relays' ports.
            for (listen, advertise, what) in [
                ("--quic-listen", "--advertise-quic", "quic"),
                ("--echo-listen", "--advertise-echo", "echo"),
            ] {
                let port = free_udp()?;
                let (relay, at) = start(
                    &format!("the {region} {what} relay"),
                    &bin.join("edgeplay-relay"),
                    &["--to", &port, "--delay-ms", &delay_ms.to_string()],
                    &work.join(format!("relay-{region}-{what}.log")),
                    "relay on",
                )?;
                children.push(relay);
                args.extend([listen.to_owned(), port, advertise.to_owned(), at]);
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (edge, line) = start(
            &format!("the {region} edge"),
            &bin.join("edge-agent"),
            &args,
            &work.join(format!("edge-{region}.log")),
            "edge-agent",
        )?;
        let id = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        edges.push((region, id));
        children.push(edge);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = http_get(&addr, "/v1/edges").unwrap_or_default();
        if edges.iter().all(|(_, id)| listed.contains(id.as_str())) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the edges did not register with the broker within 60 s: see {}/*.log",
                work.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let url = |region: &str| format!("{broker_url}/play/?broker={broker_url}&region={region}");
    println!();
    println!("edgeplay demo: a broker and an edge in each of two regions, on loopback");
    println!("  broker   {broker_url}  (/v1/edges, /metrics, /openapi.json)");
    for ((region, id), (_, _, delay)) in edges.iter().zip(REGIONS) {
        let path = if delay == 0 {
            "direct".to_owned()
        } else {
            format!("QUIC and echo through a relay, {delay} ms each way")
        };
        println!("  edge     {region:8} {id}  ({path})");
    }
    println!();
    println!(
        "Play in a browser (keys: arrows/WASD, space; click for pointer lock; F for fullscreen):"
    );
    for (region, _, _) in REGIONS {
        println!("  {}", url(region));
    }
    println!();
    println!("Or natively over QUIC:");
    println!(
        "  {} --broker {broker_url} --region us-east",
        bin.join("edgeplay-play").display()
    );
    println!();
    println!("Logs: {}/*.log", work.display());

    let result = if check {
        check_demo(&broker_url, &bin, &work)
    } else {
        wait(&mut children, &work)
    };
    // Edges first, so that they leave the broker cleanly.
    while let Some(c) = children.pop() {
        drop(c);
    }
    result
}

/// Until Enter (on a terminal), or until one of the processes stops.
fn wait(children: &mut [Running], work: &Path) -> Result {
    let stop = Arc::new(AtomicBool::new(false));
    if std::io::stdin().is_terminal() {
        println!("Press Enter or Ctrl-C to stop.");
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            stop.store(true, Ordering::Relaxed);
        });
    } else {
        println!("Ctrl-C or SIGTERM to the processes stops them.");
    }
    while !stop.load(Ordering::Relaxed) {
        for c in children.iter_mut() {
            if let Ok(Some(status)) = c.child.try_wait() {
                return Err(format!(
                    "{} stopped ({status}); stopping the rest: see {}/*.log",
                    c.name,
                    work.display()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("xtask: stopping the edges and the broker");
    Ok(())
}

/// Plays the demo once: the browser through the broker in one region, `edgeplay-play` in the
/// other.
fn check_demo(broker_url: &str, bin: &Path, work: &Path) -> Result {
    let web = root().join("client-sdk/web");
    let shot = root().join("artifacts/demo-broker.png");
    if let Some(dir) = shot.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    eprintln!("xtask: checking the browser player through the broker (eu-west)");
    let out = Command::new("node")
        .args(["tests/e2e-broker.mjs", broker_url, "eu-west"])
        .env("SCREENSHOT", &shot)
        .current_dir(&web)
        .output()
        .map_err(|e| format!("cannot run node: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    println!("browser: {}", text.trim());
    if !out.status.success() {
        return Err(format!(
            "the browser did not play through the broker: {}{}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    eprintln!("xtask: checking edgeplay-play through the broker (us-east)");
    let dump = work.join("play");
    let out = Command::new(bin.join("edgeplay-play"))
        .args([
            "--broker",
            broker_url,
            "--region",
            "us-east",
            "--frames",
            "120",
            "--timeout-s",
            "60",
            "--dump",
        ])
        .arg(&dump)
        .output()
        .map_err(|e| format!("cannot run edgeplay-play: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Its lines name themselves ("edgeplay-play: …").
    println!("{}", text.trim());
    if !out.status.success() {
        return Err(format!(
            "edgeplay-play did not play through the broker: {}",
            text.trim()
        ));
    }
    println!("xtask: demo check passed; screenshot in {}", shot.display());
    Ok(())
}
