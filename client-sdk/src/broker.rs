//! Joining through a session broker: a player names the broker and nothing else.
//!
//! [`Client::connect_via_broker`] asks the broker for a session (`POST /v1/sessions`), measures
//! the RTT to each of the K candidates with UDP echo probes ([`probe_rtt`]: the minimum of
//! [`PROBES`] samples, which drops queueing spikes), reports them (`POST /v1/sessions/{id}/select`),
//! and connects over QUIC to the edge the broker picked, pinning the certificate fingerprint and
//! presenting the join token from the broker's answer.
//!
//! ```no_run
//! # async fn demo() -> Result<(), edgeplay_client::broker::BrokerError> {
//! use edgeplay_client::Client;
//! use edgeplay_client::broker::SessionRequest;
//!
//! let req = SessionRequest::new("player-1", 1280, 720, 60);
//! let (mut session, placement) = Client::connect_via_broker("http://127.0.0.1:8090", &req).await?;
//! println!("playing on {} ({:?} ms)", placement.edge, placement.rtt_ms);
//! let _frame = session.next_frame().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgeplay_protocol::coords::{Coord, INITIAL_ERROR, Vivaldi};
use edgeplay_protocol::link::ECHO_MAGIC;
use edgeplay_protocol::token::from_hex;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::{Request, Uri, header};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

use crate::connect::{Client, ClientOptions};
use crate::error::ClientError;
use crate::pin::parse_fingerprint;
use crate::session::Session;

/// Echo samples per candidate.
pub const PROBES: usize = 3;
/// How long one echo sample may take before it counts as lost.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest broker answer (body) read; a longer one is refused.
const MAX_ANSWER: usize = 1 << 20;
/// How long one broker call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong joining through the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker URL cannot be used.
    #[error("broker URL `{0}`: use http://HOST:PORT")]
    BadUrl(String),
    /// The broker could not be reached or answered garbage.
    #[error("cannot talk to the broker at {url}: {why}")]
    Unreachable {
        /// Broker URL.
        url: String,
        /// What happened.
        why: String,
    },
    /// The broker refused the call.
    #[error("the broker answered {status} to {what}: {error}")]
    Refused {
        /// Which call.
        what: &'static str,
        /// HTTP status.
        status: u16,
        /// The broker's explanation.
        error: String,
    },
    /// No candidate answered a probe.
    #[error(
        "no candidate edge answered an RTT probe: UDP may be blocked between you and the edges"
    )]
    NoneReachable,
    /// The placement's signature does not verify with the given broker key.
    #[error(
        "the broker's placement is not signed by the broker key you gave: check the key and the broker URL"
    )]
    BadSignature,
    /// Connecting to the chosen edge failed.
    #[error(transparent)]
    Connect(#[from] ClientError),
}

/// What a player asks the broker for.
#[derive(Debug, Clone)]
pub struct SessionRequest {
    /// Player id (1 to 64 bytes).
    pub player: String,
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frame rate.
    pub fps: u32,
    /// Region to search when the player has no coordinate.
    pub region: Option<String>,
    /// The player's Vivaldi coordinate `(x, y, height)`, when it has one.
    pub coord: Option<(f64, f64, f64)>,
    /// Lowest GPU class accepted.
    pub min_gpu_class: u8,
    /// Highest price per minute accepted.
    pub max_price_per_min: Option<u64>,
    /// The broker's Ed25519 public key: when given, the placement's signature must verify with
    /// it (so the edge address, fingerprint and token are the broker's, whatever carried them).
    pub broker_key: Option<[u8; 32]>,
}

impl SessionRequest {
    /// A request with no coordinate, region, GPU or price constraint.
    #[must_use]
    pub fn new(player: &str, width: u32, height: u32, fps: u32) -> Self {
        Self {
            player: player.to_owned(),
            width,
            height,
            fps,
            region: None,
            coord: None,
            min_gpu_class: 0,
            max_price_per_min: None,
            broker_key: None,
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "player": self.player,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "min_gpu_class": self.min_gpu_class,
        });
        if let Some(r) = &self.region {
            v["region"] = json!(r);
        }
        if let Some((x, y, h)) = self.coord {
            v["coord"] = json!({"x": x, "y": y, "height": h});
        }
        if let Some(p) = self.max_price_per_min {
            v["max_price_per_min"] = json!(p);
        }
        v
    }
}

/// Where the broker placed the session.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Session id.
    pub session: String,
    /// The chosen edge's id.
    pub edge: String,
    /// Its QUIC address.
    pub quic_addr: SocketAddr,
    /// Its certificate's SHA-256.
    pub cert_fingerprint: [u8; 32],
    /// The broker's WHEP relay path for this session.
    pub whep_url: String,
    /// The join token (single use).
    pub token: Vec<u8>,
    /// The RTT measured to the chosen edge.
    pub rtt_ms: Option<f64>,
    /// Every candidate and its measured RTT (`None`: no echo answered).
    pub measured: Vec<(String, Option<f64>)>,
    /// The player's network coordinate `(x, y, height)` fitted to these measurements and the
    /// candidates' coordinates (from the request's, or the origin): pass it as
    /// [`SessionRequest::coord`] next time, so the broker narrows to the right candidates
    /// without a region. `None` when no candidate both answered and had a coordinate.
    pub player_coord: Option<(f64, f64, f64)>,
}

/// Fits a Vivaldi coordinate to `samples` (a candidate's coordinate and error, the RTT
/// measured to it), starting from `start`: a few passes over the samples, as a node would over
/// repeated measurements. `None` without a usable sample.
///
/// ```
/// use edgeplay_client::broker::fit_coord;
/// use edgeplay_protocol::coords::{Coord, estimate_rtt};
///
/// let edge = |x| Coord { x, y: 0.0, height: 1.0 };
/// // 5 ms to the edge at 0, 35 ms to the one at 40: the player sits near x = 3.
/// let fit = fit_coord(None, &[(edge(0.0), 0.2, 5.0), (edge(40.0), 0.2, 35.0)]).unwrap();
/// assert!((estimate_rtt(&fit, &edge(0.0)) - 5.0).abs() < 3.0);
/// ```
#[must_use]
pub fn fit_coord(start: Option<Coord>, samples: &[(Coord, f64, f64)]) -> Option<Coord> {
    /// Passes over the samples: enough for a handful of candidates to pull the coordinate in.
    const PASSES: usize = 30;
    let mut v = Vivaldi::with_coord(start.unwrap_or_default(), INITIAL_ERROR, 0x5eed);
    let mut used = false;
    for _ in 0..PASSES {
        for (at, error, rtt) in samples {
            // Loopback answers in microseconds; Vivaldi needs a positive RTT.
            used |= v.update(rtt.max(0.01), at, *error).is_ok();
        }
    }
    used.then(|| *v.coord())
}

/// `HOST:PORT` of `http://HOST:PORT[/]`.
fn host_port(url: &str) -> Result<String, BrokerError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| BrokerError::BadUrl(url.to_owned()))?
        .trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || !rest.contains(':') {
        return Err(BrokerError::BadUrl(url.to_owned()));
    }
    Ok(rest.to_owned())
}

/// One HTTP/1.1 call with a JSON body: the status and the JSON answer (`null` when the body is
/// not JSON), within [`CALL_TIMEOUT`].
async fn call(url: &str, path: &str, body: &Value) -> Result<(u16, Value), BrokerError> {
    call_within(CALL_TIMEOUT, url, path, body).await
}

async fn call_within(
    timeout: Duration,
    url: &str,
    path: &str,
    body: &Value,
) -> Result<(u16, Value), BrokerError> {
    let hp = host_port(url)?;
    let uri: Uri = format!("http://{hp}{path}")
        .parse()
        .map_err(|_| BrokerError::BadUrl(url.to_owned()))?;
    let unreachable = |why: String| BrokerError::Unreachable {
        url: url.to_owned(),
        why,
    };
    // One connection per call, closed after the answer, as a player calls twice per session.
    let req = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONNECTION, "close")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| unreachable(e.to_string()))?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient<_, Full<Bytes>> =
        HttpClient::builder(TokioExecutor::new()).build(connector);
    let run = async {
        let answer = client
            .request(req)
            .await
            .map_err(|e| unreachable(causes(&e)))?;
        let status = answer.status().as_u16();
        let body = Limited::new(answer.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| {
                unreachable(if e.is::<LengthLimitError>() {
                    format!("the answer is longer than {MAX_ANSWER} bytes")
                } else {
                    causes(&*e)
                })
            })?
            .to_bytes();
        let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok((status, v))
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| unreachable(format!("no answer in {} s", timeout.as_secs_f64())))?
}

/// An error and its causes, `outer: inner: …` (hyper's own message names only the stage).
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut why = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        why.push_str(": ");
        why.push_str(&s.to_string());
        source = s.source();
    }
    why
}

fn refused(what: &'static str, status: u16, v: &Value) -> BrokerError {
    BrokerError::Refused {
        what,
        status,
        error: v["error"].as_str().unwrap_or("no explanation").to_owned(),
    }
}

/// The minimum RTT of [`PROBES`] UDP echo samples to `echo`, in ms; `None` if none came back.
pub async fn probe_rtt(echo: SocketAddr) -> Option<f64> {
    let bind: SocketAddr = if echo.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await.ok()?;
    sock.connect(echo).await.ok()?;
    let mut tag = [0u8; 8];
    getrandom::fill(&mut tag).ok()?;
    let mut best: Option<f64> = None;
    let mut buf = [0u8; 64];
    for i in 0..PROBES {
        let mut probe = ECHO_MAGIC.to_vec();
        probe.extend_from_slice(&tag);
        probe.push(u8::try_from(i).unwrap_or(u8::MAX));
        let sent = Instant::now();
        if sock.send(&probe).await.is_err() {
            continue;
        }
        let deadline = sent + PROBE_TIMEOUT;
        // Late answers to earlier samples are skipped by their sample number.
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline.into(), sock.recv(&mut buf)).await {
            if buf[..n] == probe[..] {
                let ms = sent.elapsed().as_secs_f64() * 1000.0;
                best = Some(best.map_or(ms, |b: f64| b.min(ms)));
                break;
            }
        }
    }
    best
}

/// Checks the broker's signature over a `/select` answer.
///
/// # Errors
/// [`BrokerError::BadSignature`].
pub fn verify_placement(answer: &Value, broker_key: &[u8; 32]) -> Result<(), BrokerError> {
    use edgeplay_protocol::link::{PLACEMENT_DOMAIN, signed_bytes};
    use edgeplay_protocol::token::{Signature, VerifyingKey};
    let mut body = answer.clone();
    let sig = body
        .as_object_mut()
        .and_then(|m| m.remove("signature"))
        .and_then(|s| s.as_str().and_then(|h| from_hex(h).ok()))
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .ok_or(BrokerError::BadSignature)?;
    let key = VerifyingKey::from_bytes(broker_key).map_err(|_| BrokerError::BadSignature)?;
    key.verify_strict(
        &signed_bytes(PLACEMENT_DOMAIN, &body),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| BrokerError::BadSignature)
}

/// Asks `broker_url` for a session, probes the candidates, and has the broker pick one.
///
/// # Errors
/// [`BrokerError`].
pub async fn place(broker_url: &str, req: &SessionRequest) -> Result<Placement, BrokerError> {
    let (status, v) = call(broker_url, "/v1/sessions", &req.to_json()).await?;
    if status != 201 {
        return Err(refused("the session request", status, &v));
    }
    let bad = |why: &str| BrokerError::Unreachable {
        url: broker_url.to_owned(),
        why: format!("unexpected answer: {why}"),
    };
    let session = v["session"].as_str().ok_or_else(|| bad("no session id"))?;
    let candidates = v["candidates"]
        .as_array()
        .ok_or_else(|| bad("no candidates"))?;
    let mut probes = JoinSet::new();
    let mut coords = std::collections::HashMap::new();
    for c in candidates {
        let Some(edge) = c["edge"].as_str() else {
            continue;
        };
        if let Ok(at) = serde_json::from_value::<Coord>(c["coord"].clone()) {
            let error = c["coord_error"].as_f64().unwrap_or(INITIAL_ERROR);
            coords.insert(edge.to_owned(), (at, error));
        }
        let echo: Option<SocketAddr> = c["echo_addr"].as_str().and_then(|a| a.parse().ok());
        let edge = edge.to_owned();
        probes.spawn(async move {
            let rtt = match echo {
                Some(a) => probe_rtt(a).await,
                None => None,
            };
            (edge, rtt)
        });
    }
    let mut measured = Vec::new();
    while let Some(r) = probes.join_next().await {
        if let Ok(m) = r {
            measured.push(m);
        }
    }
    let report: Vec<Value> = measured
        .iter()
        .filter_map(|(e, r)| Some(json!({"edge": e, "rtt_ms": (*r)?})))
        .collect();
    if report.is_empty() {
        return Err(BrokerError::NoneReachable);
    }
    let (status, v) = call(
        broker_url,
        &format!("/v1/sessions/{session}/select"),
        &json!({ "measured": report }),
    )
    .await?;
    if status != 200 {
        return Err(refused("the selection", status, &v));
    }
    if let Some(key) = &req.broker_key {
        verify_placement(&v, key)?;
    }
    let edge = v["edge"].as_str().ok_or_else(|| bad("no edge"))?.to_owned();
    let quic_addr = v["quic_addr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| bad("no QUIC address"))?;
    let cert_fingerprint = parse_fingerprint(v["cert_fingerprint"].as_str().unwrap_or_default())?;
    let token = v["token"]
        .as_str()
        .and_then(|t| from_hex(t).ok())
        .ok_or_else(|| bad("no token"))?;
    let rtt_ms = measured.iter().find(|(e, _)| *e == edge).and_then(|m| m.1);
    let samples: Vec<(Coord, f64, f64)> = measured
        .iter()
        .filter_map(|(e, rtt)| {
            let (at, error) = coords.get(e)?;
            Some((*at, *error, (*rtt)?))
        })
        .collect();
    let start = req.coord.map(|(x, y, height)| Coord { x, y, height });
    let player_coord = fit_coord(start, &samples).map(|c| (c.x, c.y, c.height));
    Ok(Placement {
        session: session.to_owned(),
        whep_url: v["whep_url"].as_str().unwrap_or_default().to_owned(),
        edge,
        quic_addr,
        cert_fingerprint,
        token,
        rtt_ms,
        measured,
        player_coord,
    })
}

impl Client {
    /// Joins through the broker at `broker_url` (`http://HOST:PORT`): asks for a session,
    /// measures the candidates, and connects to the edge the broker picks.
    ///
    /// # Errors
    /// [`BrokerError`].
    pub async fn connect_via_broker(
        broker_url: &str,
        req: &SessionRequest,
    ) -> Result<(Session, Placement), BrokerError> {
        Self::connect_via_broker_with(broker_url, req, ClientOptions::default()).await
    }

    /// [`Client::connect_via_broker`] with [`ClientOptions`] (decoder, pixel format).
    ///
    /// # Errors
    /// [`BrokerError`].
    pub async fn connect_via_broker_with(
        broker_url: &str,
        req: &SessionRequest,
        options: ClientOptions,
    ) -> Result<(Session, Placement), BrokerError> {
        let p = place(broker_url, req).await?;
        let session =
            Client::connect_with(p.quic_addr, p.cert_fingerprint, &p.token, options).await?;
        Ok((session, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_player_coordinate_fits_its_measurements() {
        let truth = Coord {
            x: 12.0,
            y: -7.0,
            height: 2.0,
        };
        let at = |x, y| Coord { x, y, height: 1.0 };
        let cands = [at(0.0, 0.0), at(40.0, 0.0), at(0.0, -40.0), at(30.0, 30.0)];
        let samples: Vec<_> = cands
            .iter()
            .map(|c| (*c, 0.2, edgeplay_protocol::coords::estimate_rtt(&truth, c)))
            .collect();
        let fit = fit_coord(None, &samples).expect("a fit");
        for (c, _, rtt) in &samples {
            let err = (edgeplay_protocol::coords::estimate_rtt(&fit, c) - rtt).abs();
            assert!(err < 3.0, "{fit:?} predicts {c:?} {err:.2} ms off");
        }
        assert_eq!(fit_coord(None, &[]), None);
        // A NaN coordinate from the broker is refused and never poisons the fit.
        let bad = [(at(f64::NAN, 0.0), 0.2, 10.0)];
        assert_eq!(fit_coord(None, &bad), None);
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            host_port("http://127.0.0.1:8090/").unwrap(),
            "127.0.0.1:8090"
        );
        assert!(host_port("127.0.0.1:8090").is_err());
        assert!(host_port("http://b/x").is_err());
    }

    #[tokio::test]
    async fn probes_take_the_minimum_and_silence_is_none() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = echo.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            for i in 0..PROBES {
                let (n, from) = echo.recv_from(&mut buf).await.unwrap();
                // The first answer is slow; the minimum ignores it.
                if i == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                echo.send_to(&buf[..n], from).await.unwrap();
            }
        });
        let rtt = probe_rtt(addr).await.unwrap();
        assert!(rtt < 90.0, "minimum of the samples, got {rtt} ms");
        server.await.unwrap();
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(probe_rtt(silent.local_addr().unwrap()).await, None);
    }

    /// A broker stand-in on loopback: answers each connection in turn with the canned bytes
    /// (`None`: reads the request and never answers), and returns the requests it read.
    async fn serve(
        answers: Vec<Option<Vec<u8>>>,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for answer in answers {
                let (mut s, _) = listener.accept().await.unwrap();
                seen.push(read_request(&mut s).await);
                match answer {
                    // The client may hang up before reading it all (too long an answer).
                    Some(a) => {
                        let _ = s.write_all(&a).await;
                        let _ = s.shutdown().await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(5)).await,
                }
            }
            seen
        });
        (url, task)
    }

    async fn read_request(s: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        let l = l.to_ascii_lowercase();
                        l.strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
        }
        String::from_utf8(buf).unwrap()
    }

    fn answer(status: &str, body: &str) -> Option<Vec<u8>> {
        Some(
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }

    #[tokio::test]
    async fn a_call_posts_json_and_reads_the_status_and_the_answer() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n";
        let (url, server) = serve(vec![
            answer("201 Created", r#"{"session":"s1"}"#),
            Some(chunked.to_vec()),
            answer("503 Service Unavailable", "not json"),
        ])
        .await;
        let (status, v) = call(&url, "/v1/sessions", &json!({"player": "p"}))
            .await
            .unwrap();
        assert_eq!((status, v["session"].as_str()), (201, Some("s1")));
        let (status, v) = call(&url, "/x", &json!({})).await.unwrap();
        assert_eq!((status, v), (200, json!({"a": 1})));
        let (status, v) = call(&url, "/y", &json!({})).await.unwrap();
        assert_eq!(
            (status, v),
            (503, Value::Null),
            "an answer that is not JSON is null"
        );
        let seen = server.await.unwrap();
        let first = &seen[0];
        assert!(
            first.starts_with("POST /v1/sessions HTTP/1.1\r\n"),
            "{first}"
        );
        let head = first.to_ascii_lowercase();
        assert!(
            head.contains("content-type: application/json\r\n"),
            "{first}"
        );
        assert!(head.contains("content-length: 14\r\n"), "{first}");
        assert!(
            head.contains(&format!("host: {}\r\n", &url["http://".len()..])),
            "{first}"
        );
        assert!(first.ends_with(r#"{"player":"p"}"#), "{first}");
    }

    #[tokio::test]
    async fn failures_say_what_went_wrong() {
        // Too long an answer.
        let big = "x".repeat(MAX_ANSWER + 1);
        let (url, _server) = serve(vec![answer("200 OK", &big)]).await;
        let e = call(&url, "/", &json!({})).await.unwrap_err();
        assert!(
            matches!(&e, BrokerError::Unreachable { why, .. } if why.contains("longer than 1048576 bytes")),
            "{e}"
        );
        // No answer in time.
        let (url, _server) = serve(vec![None]).await;
        let e = call_within(Duration::from_millis(200), &url, "/", &json!({}))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("cannot talk to the broker at {url}: no answer in 0.2 s")
        );
        // Nobody listening.
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let e = call(&format!("http://{addr}"), "/", &json!({}))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, BrokerError::Unreachable { why, .. } if why.contains("refused")),
            "{e}"
        );
        // An answer that ends early.
        let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"a\":".to_vec();
        let (url, _server) = serve(vec![Some(cut)]).await;
        let e = call(&url, "/", &json!({})).await.unwrap_err();
        assert!(matches!(e, BrokerError::Unreachable { .. }), "{e}");
        // Only http://HOST:PORT: https comes later.
        for bad in ["https://127.0.0.1:1", "http://bad host:1", "http://h:1/x"] {
            let e = call(bad, "/", &json!({})).await.unwrap_err();
            assert!(matches!(e, BrokerError::BadUrl(_)), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn place_asks_probes_selects_and_reads_the_placement() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        let echoer = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            for _ in 0..PROBES {
                let (n, from) = echo.recv_from(&mut buf).await.unwrap();
                echo.send_to(&buf[..n], from).await.unwrap();
            }
        });
        let candidates = json!({
            "session": "s1",
            "candidates": [
                {"edge": "e1", "echo_addr": echo_addr.to_string(),
                 "coord": {"x": 3.0, "y": 0.0, "height": 1.0}, "coord_error": 0.2},
                {"edge": "e2"},
            ],
        });
        let placed = json!({
            "edge": "e1",
            "quic_addr": "127.0.0.1:4433",
            "cert_fingerprint": "ab".repeat(32),
            "token": "0102ff",
            "whep_url": "/v1/sessions/s1/whep",
        });
        let (url, server) = serve(vec![
            answer("201 Created", &candidates.to_string()),
            answer("200 OK", &placed.to_string()),
        ])
        .await;
        let req = SessionRequest::new("player-1", 1280, 720, 60);
        let p = place(&url, &req).await.unwrap();
        assert_eq!((p.session.as_str(), p.edge.as_str()), ("s1", "e1"));
        assert_eq!(p.quic_addr, "127.0.0.1:4433".parse().unwrap());
        assert_eq!(
            (p.cert_fingerprint, p.token.clone()),
            ([0xab; 32], vec![1, 2, 0xff])
        );
        assert_eq!(p.whep_url, "/v1/sessions/s1/whep");
        assert!(p.rtt_ms.is_some());
        assert!(
            p.player_coord.is_some(),
            "fitted to the one coordinate measured"
        );
        let measured: Vec<(&str, bool)> = p
            .measured
            .iter()
            .map(|(e, r)| (e.as_str(), r.is_some()))
            .collect();
        assert!(measured.contains(&("e1", true)) && measured.contains(&("e2", false)));
        let seen = server.await.unwrap();
        assert!(
            seen[0].starts_with("POST /v1/sessions HTTP/1.1"),
            "{}",
            seen[0]
        );
        assert!(seen[0].contains(r#""player":"player-1""#), "{}", seen[0]);
        assert!(
            seen[1].starts_with("POST /v1/sessions/s1/select HTTP/1.1"),
            "{}",
            seen[1]
        );
        assert!(
            seen[1].contains(r#""edge":"e1""#) && !seen[1].contains("e2"),
            "{}",
            seen[1]
        );
        echoer.await.unwrap();

        // A refusal carries the broker's explanation.
        let (url, _server) = serve(vec![answer(
            "429 Too Many Requests",
            r#"{"error":"slow down"}"#,
        )])
        .await;
        let e = place(&url, &req).await.unwrap_err();
        assert!(
            matches!(&e, BrokerError::Refused { what: "the session request", status: 429, error } if error == "slow down"),
            "{e}"
        );
    }
}
