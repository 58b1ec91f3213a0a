//! `edge-agent run --dev` as a process on loopback: health, metrics, a live session streamed
//! over HTTP with input applied, bad requests refused, and a graceful stop on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Edge {
    child: Child,
    addr: SocketAddr,
}

impl Edge {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
            .args([
                "run",
                "--dev",
                "--listen",
                "127.0.0.1:0",
                "--max-sessions",
                "1",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("edge-agent starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("first line");
        // Keep draining what the edge prints after its address, so it never writes to a
        // closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no address in `{line}`"));
        Self { child, addr }
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
        // A server that refuses a body early closes with the rest unread, which can reset the
        // connection after its answer: keep what arrived.
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if !out.is_empty() => {
                    eprintln!("read ended with {e} after {} bytes", out.len());
                    break;
                }
                Err(e) => panic!("{method} {path}: read failed: {e}"),
            }
        }
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (status, body)
    }

    /// Reads at least `want` bytes of a streamed body.
    fn stream_bytes(&self, path: &str, want: usize) -> Vec<u8> {
        let mut s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(30);
        while out.len() < want && Instant::now() < deadline {
            let n = s.read(&mut buf).expect("read stream");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json_field(body: &str, field: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    match &v[field] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn dev_server_serves_a_live_session_and_stops_on_sigterm() {
    let edge = Edge::start();
    assert_eq!(
        edge.request("GET", "/healthz", None),
        (200, "ok\n".to_owned())
    );

    let (status, body) = edge.request("POST", "/v1/dev/sessions", Some("{\"fps\":30}"));
    assert_eq!(status, 201, "{body}");
    let id = json_field(&body, "id");
    assert_eq!(id.len(), 32, "session ids are 128 random bits");

    // The capacity is one session: a second is refused with a reason.
    let (status, body) = edge.request("POST", "/v1/dev/sessions", None);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("at most 1"), "{body}");

    // Bad requests name what is wrong.
    let (status, body) = edge.request("POST", "/v1/dev/sessions", Some("{\"fps\": \"many\"}"));
    assert!(status == 400 || status == 422, "{status} {body}");
    let (status, _) = edge.request(
        "POST",
        &format!("/v1/dev/sessions/{id}/input"),
        Some("{nope"),
    );
    assert_eq!(status, 400);
    let big = format!("{{\"seq\":1,\"pad\":\"{}\"}}", "x".repeat(100_000));
    let (status, _) = edge.request("POST", &format!("/v1/dev/sessions/{id}/input"), Some(&big));
    assert_eq!(status, 413);
    let (status, _) = edge.request("GET", "/v1/dev/sessions/nope", None);
    assert_eq!(status, 404);

    // The stream starts with an IDR access unit carrying SPS and PPS.
    let video = std::thread::scope(|scope| {
        let streamer = scope
            .spawn(|| edge.stream_bytes(&format!("/v1/dev/sessions/{id}/video.h264"), 200_000));
        std::thread::sleep(Duration::from_millis(500));
        let input = r#"{"seq":1,"event":{"type":"key","code":"ArrowUp","down":true}}"#;
        let (status, body) =
            edge.request("POST", &format!("/v1/dev/sessions/{id}/input"), Some(input));
        assert_eq!(status, 202, "{body}");
        streamer.join().expect("stream thread")
    });
    let body_start = video
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end")
        + 4;
    let annexb = &video[body_start..];
    let sps = annexb
        .windows(5)
        .position(|w| w[..4] == [0, 0, 0, 1] && w[4] & 0x1f == 7);
    assert!(sps.is_some(), "no SPS in the first {} bytes", annexb.len());

    let (status, body) = edge.request("GET", &format!("/v1/dev/sessions/{id}"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_field(&body, "inputs_applied"), "1", "{body}");
    assert!(body.contains("\"total\""), "{body}");

    let (status, metrics) = edge.request("GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("edgeplay_edge_encoder_info{encoder="),
        "{metrics}"
    );
    assert!(
        metrics.contains("edgeplay_edge_stage_seconds_bucket"),
        "{metrics}"
    );

    // SIGTERM: the session ends, the server drains, the process exits 0.
    let mut edge = edge;
    let pid = edge.child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = edge.child.try_wait().expect("wait") {
            assert!(status.success(), "exit after SIGTERM: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
