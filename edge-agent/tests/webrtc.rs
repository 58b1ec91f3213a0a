//! WebRTC (WHEP) on `edge-agent run --dev`, as a process on loopback: the signalling contract
//! (token, CORS, errors, limits), and headless Chromium playing the stream through the web
//! player with a key press that changes the game (client-sdk/web/tests/e2e.mjs).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

struct Edge {
    child: Child,
    addr: SocketAddr,
    token: String,
    // Kept open: the edge prints after its first line, and a closed pipe would fail it.
    _stdout: BufReader<ChildStdout>,
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
                "2",
            ])
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
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, String) {
        let mut s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
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

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn whep_signalling_refuses_what_it_must_and_answers_preflight() {
    let edge = Edge::start();
    let auth = format!("Bearer {}", edge.token);
    let sdp = [("Content-Type", "application/sdp")];

    // CORS preflight: any origin, Location and the secret exposed.
    let (status, h, _) = edge.request(
        "OPTIONS",
        "/v1/whep",
        &[
            ("Origin", "http://elsewhere.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    );
    assert_eq!(status, 204);
    assert_eq!(header(&h, "access-control-allow-origin"), Some("*"));
    let exposed = header(&h, "access-control-expose-headers").unwrap_or_default();
    assert!(exposed.contains("location") && exposed.contains("edgeplay-session-secret"));
    assert!(
        header(&h, "access-control-allow-headers")
            .unwrap_or_default()
            .contains("authorization")
    );

    // No token, a wrong token: 401, with CORS so the page can read why.
    let (status, h, body) = edge.request("POST", "/v1/whep", &sdp, b"v=0\r\n");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("join token"), "{body}");
    assert_eq!(header(&h, "access-control-allow-origin"), Some("*"));
    let wrong = [
        ("Content-Type", "application/sdp"),
        ("Authorization", "Bearer 00000000000000000000000000000000"),
    ];
    assert_eq!(edge.request("POST", "/v1/whep", &wrong, b"v=0\r\n").0, 401);

    // Malformed SDP: 400 with the reason.
    let with_token = [
        ("Content-Type", "application/sdp"),
        ("Authorization", &auth),
    ];
    let (status, _, body) = edge.request("POST", "/v1/whep", &with_token, b"hello");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("v=0"), "{body}");
    let (status, _, body) = edge.request(
        "POST",
        "/v1/whep",
        &with_token,
        b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no video"), "{body}");

    // Oversized: 413.
    let big = vec![b'a'; 100 * 1024];
    let (status, _, body) = edge.request("POST", "/v1/whep", &with_token, &big);
    assert_eq!(status, 413, "{body}");

    // PATCH and DELETE need a live resource and its secret.
    let (status, _, body) = edge.request(
        "DELETE",
        "/v1/whep/0123456789abcdef0123456789abcdef",
        &[("Authorization", "Bearer nope")],
        b"",
    );
    assert_eq!(status, 404, "{body}");
    let (status, _, _) = edge.request(
        "PATCH",
        "/v1/whep/0123456789abcdef0123456789abcdef",
        &[("Content-Type", "application/trickle-ice-sdpfrag")],
        b"a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n",
    );
    assert_eq!(status, 404);
}

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-sdk/web")
}

/// Headless Chromium plays the stream: ≥ 100 frames presented, a key press changes the game
/// (stamp input_seq and state hash), no error shown; the screenshot is left in target/.
#[test]
fn chromium_plays_the_whep_stream_and_a_key_changes_the_game() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let web = web_dir();
    // `cargo xtask test` installs both first; a bare `cargo test` without them fails loudly
    // rather than passing without having played anything.
    assert!(
        Path::new(&chromium).exists() && web.join("node_modules/playwright-core").exists(),
        "needs {chromium} and client-sdk/web/node_modules: run `cargo xtask setup`"
    );
    let build = Command::new("npm")
        .args(["run", "--silent", "build"])
        .current_dir(&web)
        .status()
        .expect("npm runs");
    assert!(build.success(), "npm run build failed in client-sdk/web");
    let edge = Edge::start();
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/webrtc-e2e.png");
    let started = Instant::now();
    // Bounded: the script's own waits add up to about a minute.
    let out = Command::new("timeout")
        .args(["180", "node", "tests/e2e.mjs"])
        .arg(format!("http://{}", edge.addr))
        .arg(&edge.token)
        .arg(&shot)
        .env("CHROMIUM", &chromium)
        .current_dir(&web)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "e2e ({:.1} s): {stdout}{}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "browser e2e failed: {stdout}");
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(result["ok"], true);
    assert!(result["played"].as_u64().unwrap_or(0) >= 100);
    assert_ne!(result["before"]["stateHash"], result["after"]["stateHash"]);
    assert!(shot.exists(), "no screenshot at {}", shot.display());
}
