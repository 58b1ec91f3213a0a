//! The `session-broker run` binary on loopback: register, place, select, verify the token
//! offline, SIGTERM, restart on the same data dir, and find everything back.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgeplay_broker::api::{REGISTER_DOMAIN, sign_body};
use edgeplay_protocol::token::{EdgeId, SigningKey, VerifyingKey, from_hex, verify};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// Kills the broker if the test fails half-way.
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

fn start(data_dir: &Path) -> Broker {
    let mut child = Command::new(env!("CARGO_BIN_EXE_session-broker"))
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
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

fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    let status: u16 = resp[9..12].parse().expect("status");
    let (head, rest) = resp.split_once("\r\n\r\n").expect("head");
    let rest = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    (
        status,
        serde_json::from_str(&rest).unwrap_or(Value::String(rest)),
    )
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn edge(key: &SigningKey, x: f64, port: u16) -> Value {
    let body = json!({
        "id": EdgeId(key.verifying_key().to_bytes()),
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

fn sigterm_and_wait(mut b: Broker) {
    let st = Command::new("kill")
        .args(["-TERM", &b.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = b.child.try_wait().unwrap() {
            assert!(
                status.success(),
                "broker exited with {status} after SIGTERM"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "broker still running {WAIT:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn place_select_sigterm_restart_keeps_edges_and_sessions() {
    let dir = std::env::temp_dir().join(format!("edgeplay-broker-it-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let b = start(&dir);

    let (st, k) = http(b.addr, "GET", "/v1/broker/key", None);
    assert_eq!(st, 200, "{k}");
    let pk: [u8; 32] = from_hex(k["public_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let broker_key = VerifyingKey::from_bytes(&pk).unwrap();

    let keys = [
        SigningKey::from_bytes(&[11; 32]),
        SigningKey::from_bytes(&[12; 32]),
    ];
    for (i, k) in keys.iter().enumerate() {
        let (st, v) = http(
            b.addr,
            "POST",
            "/v1/edges",
            Some(&edge(k, i as f64 * 5.0, 5000 + i as u16)),
        );
        assert_eq!(st, 201, "{v}");
    }
    let (st, v) = http(
        b.addr,
        "POST",
        "/v1/sessions",
        Some(
            &json!({"player": "p1", "coord": {"x": 0.0, "y": 0.0, "height": 1.0}, "width": 1280, "height": 720, "fps": 60}),
        ),
    );
    assert_eq!(st, 201, "{v}");
    let sid = v["session"].as_str().unwrap().to_owned();
    let ids: Vec<EdgeId> = keys
        .iter()
        .map(|k| EdgeId(k.verifying_key().to_bytes()))
        .collect();
    let sel =
        json!({"measured": [{"edge": ids[0], "rtt_ms": 12.0}, {"edge": ids[1], "rtt_ms": 4.0}]});
    let (st, v) = http(
        b.addr,
        "POST",
        &format!("/v1/sessions/{sid}/select"),
        Some(&sel),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["quic_addr"], "127.0.0.1:5001");
    assert_eq!(v["whep_url"], format!("/v1/sessions/{sid}/whep"));
    let token = from_hex(v["token"].as_str().unwrap()).unwrap();
    let t = verify(&token, &broker_key, now_ms(), &ids[1]).expect("token verifies offline");
    assert_eq!(t.session.to_string(), sid);
    assert!(verify(&token, &broker_key, now_ms(), &ids[0]).is_err());

    sigterm_and_wait(b);
    let b = start(&dir);
    let (_, k2) = http(b.addr, "GET", "/v1/broker/key", None);
    assert_eq!(k2, k, "the key must survive a restart");
    let (st, edges) = http(b.addr, "GET", "/v1/edges", None);
    assert_eq!(st, 200);
    assert_eq!(edges.as_array().unwrap().len(), 2, "{edges}");
    let (st, s) = http(b.addr, "GET", &format!("/v1/sessions/{sid}"), None);
    assert_eq!(st, 200, "{s}");
    assert_eq!(s["edge"], json!(ids[1]));
    assert_eq!(s["player"], "p1");
    sigterm_and_wait(b);
    let _ = std::fs::remove_dir_all(&dir);
}
