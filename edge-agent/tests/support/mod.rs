//! Shared by the edge's integration tests: `edge-agent run --dev` as a child process on
//! loopback and a plain HTTP/1.1 client for it, the broker/edge process helpers ([`procs`]),
//! the QUIC endpoint in the test's runtime ([`quic`]), and the media crate's test support
//! ([`media`]: the pipeline the in-process session and QUIC tests serve, ffprobe).

#![allow(dead_code, reason = "each test binary uses a part of the helper")]

#[path = "../../../media/tests/support/mod.rs"]
pub mod media;
pub mod procs;
pub mod quic;
pub mod web;

pub use media::pipeline_720p30;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// `edge-agent run --dev` serving at most `max_sessions`, HTTP and QUIC on free loopback ports.
pub fn dev_edge_command(max_sessions: impl ToString) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edge-agent"));
    c.args([
        "run",
        "--dev",
        "--listen",
        "127.0.0.1:0",
        "--quic-listen",
        "127.0.0.1:0",
    ])
    .args(["--max-sessions", &max_sessions.to_string()]);
    c
}

pub struct Edge {
    child: Child,
    pub addr: SocketAddr,
    pub token: String,
    // Kept open: the edge prints after its first line, and a closed pipe would fail it.
    _stdout: BufReader<ChildStdout>,
}

impl Edge {
    pub fn start() -> Self {
        Self::start_with(2)
    }

    /// An edge serving at most `max_sessions`, HTTP and QUIC on free loopback ports.
    pub fn start_with(max_sessions: u32) -> Self {
        let mut child = dev_edge_command(max_sessions)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("edge-agent starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (mut addr, mut token) = (None, None);
        let mut line = String::new();
        while addr.is_none() || token.is_none() {
            line.clear();
            assert!(
                stdout.read_line(&mut line).expect("stdout") > 0,
                "edge exited"
            );
            if let Some(a) = line.strip_prefix("edge-agent --dev serving on http://") {
                addr = a.trim().parse().ok();
            }
            if let Some(t) = line.trim().strip_prefix("dev join token:") {
                token = Some(t.trim().to_owned());
            }
        }
        Self {
            child,
            addr: addr.expect("address"),
            token: token.expect("token"),
            _stdout: stdout,
        }
    }

    /// One request; returns the status, the headers (lower-case names) and the body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, String) {
        let mut s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let head = request_head(method, path, "x", headers, body.len());
        s.write_all(head.as_bytes()).expect("write");
        // A server that refuses a large body early may reset the connection mid-write.
        let _ = s.write_all(body);
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) if !out.is_empty() => break,
                Err(e) => panic!("{method} {path}: read failed: {e}"),
            }
        }
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        (status, headers, body.to_owned())
    }
}

impl Edge {
    /// The edge process, to signal it and wait for it.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Reads at least `want` bytes of a streamed response (headers included), bounded to 30 s.
    /// Reads at least `want` bytes of a streamed response (headers included); the connection is
    /// returned open, so the edge keeps its viewer for as long as the caller holds it.
    pub fn stream_bytes(&self, path: &str, want: usize) -> (Vec<u8>, TcpStream) {
        let mut s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while out.len() < want && std::time::Instant::now() < deadline {
            let n = s.read(&mut buf).expect("read stream");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        (out, s)
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The head of a one-shot HTTP/1.1 request (`Connection: close`) with `headers` and a body of
/// `body_len` bytes, up to and including the blank line.
pub fn request_head(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body_len: usize,
) -> String {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {body_len}\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head
}
