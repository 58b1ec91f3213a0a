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

use edgeplay_protocol::coords::{Coord, INITIAL_ERROR, Vivaldi};
use edgeplay_protocol::link::{ECHO_MAGIC, parse_http_head};
use edgeplay_protocol::token::from_hex;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinSet;

use crate::{Client, ClientError, Session, parse_fingerprint};

/// Echo samples per candidate.
pub const PROBES: usize = 3;
/// How long one echo sample may take before it counts as lost.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest broker answer read.
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

/// One HTTP/1.1 call with a JSON body: the status and the JSON answer.
async fn call(url: &str, path: &str, body: &Value) -> Result<(u16, Value), BrokerError> {
    let hp = host_port(url)?;
    let unreachable = |why: String| BrokerError::Unreachable {
        url: url.to_owned(),
        why,
    };
    let body = body.to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {hp}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let run = async {
        let mut s = TcpStream::connect(&hp)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let mut buf = Vec::new();
        (&mut s)
            .take(MAX_ANSWER as u64)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let head = parse_http_head(&buf)
            .map_err(|e| unreachable(e.to_string()))?
            .ok_or_else(|| unreachable("the answer ended inside its head".into()))?;
        let mut body = &buf[head.len..];
        if let Some(n) = head
            .header("content-length")
            .and_then(|n| n.parse::<usize>().ok())
        {
            body = body
                .get(..n)
                .ok_or_else(|| unreachable("truncated answer".into()))?;
        }
        let v = serde_json::from_slice(body).unwrap_or(Value::Null);
        Ok((head.status, v))
    };
    tokio::time::timeout(CALL_TIMEOUT, run)
        .await
        .map_err(|_| unreachable(format!("no answer in {} s", CALL_TIMEOUT.as_secs())))?
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
        Self::connect_via_broker_with(broker_url, req, crate::ClientOptions::default()).await
    }

    /// [`Client::connect_via_broker`] with [`crate::ClientOptions`] (decoder, pixel format).
    ///
    /// # Errors
    /// [`BrokerError`].
    pub async fn connect_via_broker_with(
        broker_url: &str,
        req: &SessionRequest,
        options: crate::ClientOptions,
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
}
