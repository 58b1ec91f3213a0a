//! The edge's life with its home broker (`edge-agent run --broker URL`): register, heartbeat,
//! serve the players the broker relays, drain.
//!
//! - Identity: the edge's Ed25519 key in `DATA_DIR/edge.key` (created once, mode 0600); its
//!   public key is the edge id. The broker's key is given (`--broker-key`) or pinned the first
//!   time it is seen (`DATA_DIR/broker.pub`); a broker showing another key is refused.
//! - One persistent link ([`edgeplay_protocol::link`]) over which both sides prove their keys,
//!   the edge registers (region, GPU, encoders, resolutions, capacity, price, coordinate, QUIC
//!   and echo addresses, certificate fingerprint), heartbeats every 500 ms while it serves
//!   sessions and every 15 s when idle, and answers the WHEP requests the broker relays with its
//!   own handlers ([`crate::http::EdgeHttp`]). A dropped link is redialled with backoff.
//! - Failover: each link brings the list of brokers sharing the home's registry; when the link
//!   drops and the home does not answer a redial within [`DIAL_TIMEOUT`], the edge links to the
//!   next broker of the list (same pinned key), which becomes its home ([`crate::failover`]).
//! - Join tokens are the broker's ([`BrokerTokens`]), checked offline on WHEP and QUIC, once each.
//! - A UDP echo ([`serve_echo`]) answers players' RTT probes.
//! - SIGTERM drains: the edge tells the broker, waits for its sessions to end (bounded), exits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use edgeplay_protocol::coords::Coord;
use edgeplay_protocol::link::{
    self, BROKER_SILENCE_MS, EdgeAd, FrameReader, HEARTBEAT_BUSY_MS, HEARTBEAT_IDLE_MS,
    LinkMessage, MAX_FRAME, broker_hostports, encode_frame, parse_http_head, proof_bytes,
    welcome_bytes,
};
use edgeplay_protocol::token::{
    self, EdgeId, ReplayGuard, Signature, SigningKey, VerifyingKey, from_hex, to_hex,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::failover::{Dialer, Failure};
use crate::quic::{TokenCheck, TokenRefused};

/// How long the edge waits for the broker at each handshake step.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between redials of a dropped link.
pub const MAX_BACKOFF: Duration = crate::failover::MAX_BACKOFF;
/// How long a broker has to accept the connection, upgrade it and say hello before the edge
/// tries the next broker of its list.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// What went wrong with the broker.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The broker URL cannot be used.
    #[error("broker URL `{0}`: use http://HOST:PORT (put a TLS terminator in front for https)")]
    BadUrl(String),
    /// A key file could not be read or written.
    #[error("{path}: {source}; check the data dir's permissions")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key file or flag holds no key.
    #[error("{0} is not a 32-byte key (64 hex digits in text files and flags): fix or remove it")]
    BadKey(String),
    /// The broker showed a key other than the pinned one.
    #[error(
        "the broker at {url} shows key {shown}, but this edge pins {pinned}: check the URL, or remove {pin_file} if the broker's key was rotated"
    )]
    KeyMismatch {
        /// Broker URL.
        url: String,
        /// Key shown.
        shown: String,
        /// Key pinned.
        pinned: String,
        /// Where the pin lives.
        pin_file: String,
    },
    /// The link failed.
    #[error("link to the broker at {url}: {why}")]
    Link {
        /// Broker URL.
        url: String,
        /// What happened.
        why: String,
    },
    /// The system random generator failed.
    #[error("no randomness from the operating system")]
    Random,
}

/// Current unix time in ms.
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Loads the edge's identity from `DATA_DIR/edge.key`, creating it (0600) the first time.
///
/// # Errors
/// [`AgentError::KeyFile`], [`AgentError::BadKey`], [`AgentError::Random`].
pub fn load_or_create_key(data_dir: &Path) -> Result<SigningKey, AgentError> {
    use std::io::Write;
    let path = data_dir.join("edge.key");
    let io = |source| AgentError::KeyFile {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    match std::fs::read(&path) {
        Ok(bytes) => {
            let seed: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| AgentError::BadKey(path.display().to_string()))?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = token::generate_signing_key().map_err(|_| AgentError::Random)?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&path).map_err(io)?;
            f.write_all(&key.to_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

/// Parses 64 hex digits as an Ed25519 public key.
///
/// # Errors
/// [`AgentError::BadKey`] naming `what`.
pub fn parse_key(what: &str, hex: &str) -> Result<VerifyingKey, AgentError> {
    from_hex(hex.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| AgentError::BadKey(what.to_owned()))
}

/// The broker's join tokens, checked offline: signed by the broker, for this edge, unexpired,
/// used once.
#[derive(Debug)]
pub struct BrokerTokens {
    broker: VerifyingKey,
    edge: EdgeId,
    guard: Mutex<ReplayGuard>,
}

impl BrokerTokens {
    /// Tokens signed by `broker` for `edge`.
    #[must_use]
    pub fn new(broker: VerifyingKey, edge: EdgeId) -> Self {
        Self {
            broker,
            edge,
            guard: Mutex::new(ReplayGuard::new(100_000)),
        }
    }
}

impl TokenCheck for BrokerTokens {
    fn check(&self, token: &[u8]) -> Result<(), TokenRefused> {
        // WHEP carries the token as hex in `Authorization`; QUIC as raw bytes. A raw token starts
        // with "EPJT", which is not hex, so the two cannot be confused.
        let decoded;
        let raw = if token.iter().all(u8::is_ascii_hexdigit) {
            decoded = std::str::from_utf8(token)
                .ok()
                .and_then(|t| from_hex(t).ok())
                .ok_or_else(|| TokenRefused("join token: bad hex".into()))?;
            decoded.as_slice()
        } else {
            token
        };
        let now = now_ms();
        let t = token::verify(raw, &self.broker, now, &self.edge)
            .map_err(|e| TokenRefused(e.to_string()))?;
        self.guard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(&t, now)
            .map_err(|e| TokenRefused(e.to_string()))
    }
}

/// The broker's address, from `http://HOST:PORT[/]` or `HOST:PORT`.
///
/// # Errors
/// [`AgentError::BadUrl`].
pub fn parse_broker_url(url: &str) -> Result<String, AgentError> {
    link::http_hostport(url).ok_or_else(|| AgentError::BadUrl(url.to_owned()))
}

/// An open link after the upgrade: the stream and what was read past the response head.
struct Conn {
    stream: TcpStream,
    frames: FrameReader,
}

async fn dial(hostport: &str) -> Result<Conn, String> {
    let mut stream = TcpStream::connect(hostport)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let req = format!(
        "GET /v1/edges/link HTTP/1.1\r\nHost: {hostport}\r\nConnection: upgrade\r\nUpgrade: {}\r\n\r\n",
        link::UPGRADE
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head = loop {
        if let Some(h) = parse_http_head(&buf).map_err(|e| e.to_string())? {
            break h;
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the broker closed the connection during the upgrade".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if head.status != 101 {
        return Err(format!(
            "the broker answered {} to the link upgrade: is it an edgeplay broker of this version?",
            head.status
        ));
    }
    let mut frames = FrameReader::default();
    frames.push(&buf[head.len..]);
    Ok(Conn { stream, frames })
}

async fn read_msg(conn: &mut Conn) -> Result<LinkMessage, String> {
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if let Some(m) = conn.frames.next_message().map_err(|e| e.to_string())? {
            return Ok(m);
        }
        let n = conn
            .stream
            .read(&mut chunk)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the broker closed the link".into());
        }
        conn.frames.push(&chunk[..n]);
    }
}

async fn write_msg(
    stream: &mut (impl AsyncWriteExt + Unpin),
    m: &LinkMessage,
) -> Result<(), String> {
    let frame = encode_frame(m).map_err(|e| e.to_string())?;
    stream.write_all(&frame).await.map_err(|e| e.to_string())
}

async fn hello(conn: &mut Conn) -> Result<(VerifyingKey, Vec<u8>), String> {
    let m = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_msg(conn))
        .await
        .map_err(|_| "no hello from the broker".to_owned())??;
    let LinkMessage::Hello {
        broker_key,
        challenge,
    } = m
    else {
        return Err("the broker did not start with `hello`".into());
    };
    let key = parse_key("the broker's key in its hello", &broker_key).map_err(|e| e.to_string())?;
    let challenge = from_hex(&challenge)
        .ok()
        .filter(|c| c.len() == 32)
        .ok_or("the broker's challenge is not 32 bytes of hex")?;
    Ok((key, challenge))
}

/// The broker's key: `--broker-key`, else the pinned `DATA_DIR/broker.pub`, else the key the
/// broker shows now, which is then pinned.
///
/// # Errors
/// [`AgentError`].
pub async fn broker_key(
    url: &str,
    given: Option<&str>,
    data_dir: &Path,
) -> Result<VerifyingKey, AgentError> {
    if let Some(hex) = given {
        return parse_key("--broker-key", hex);
    }
    let pin = data_dir.join("broker.pub");
    match std::fs::read_to_string(&pin) {
        Ok(text) => return parse_key(&pin.display().to_string(), &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(AgentError::KeyFile { path: pin, source }),
    }
    let hostport = parse_broker_url(url)?;
    let link_err = |why: String| AgentError::Link {
        url: url.to_owned(),
        why,
    };
    let mut conn = dial(&hostport).await.map_err(link_err)?;
    let (key, _) = hello(&mut conn).await.map_err(link_err)?;
    std::fs::create_dir_all(data_dir).map_err(|source| AgentError::KeyFile {
        path: data_dir.to_path_buf(),
        source,
    })?;
    std::fs::write(&pin, to_hex(key.as_bytes()) + "\n").map_err(|source| AgentError::KeyFile {
        path: pin.clone(),
        source,
    })?;
    info!(key = %to_hex(key.as_bytes()), pin = %pin.display(), "pinned the broker's key");
    Ok(key)
}

/// Answers players' RTT probes on `socket` until `stop` fires: every datagram that is an echo
/// probe ([`link::is_echo_probe`]) goes back as it came; anything else is dropped.
pub async fn serve_echo(socket: UdpSocket, mut stop: watch::Receiver<bool>) {
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) if link::is_echo_probe(&buf[..n]) => {
                    let _ = socket.send_to(&buf[..n], from).await;
                }
                Ok(_) => {}
                Err(e) => debug!(error = %e, "echo socket"),
            },
            _ = stop.changed() => return,
        }
    }
}

/// How the link loop learns about the edge.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Broker URL as given.
    pub url: String,
    /// The broker's key.
    pub broker_key: VerifyingKey,
    /// The edge's key.
    pub key: SigningKey,
    /// What to register.
    pub advert: EdgeAd,
    /// Answers browsers' RTT probes.
    pub prober: Arc<crate::probe::Prober>,
    /// Where failovers and failed dials are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The edge's measured network coordinate (heartbeats report it).
    pub coords: Arc<crate::coords::Coords>,
}

/// The edge's state the link reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Sessions served now.
    pub sessions: u32,
    /// Whether the edge is draining.
    pub draining: bool,
}

/// Keeps the link up until `stop` fires: dials, proves both keys, registers, heartbeats with
/// the load `load` reports, and serves relayed WHEP requests with `router`. When the link drops
/// it redials the home broker, then the other brokers of the home's list ([`Dialer`]), with
/// backoff between rounds; gives up only when every broker it knows shows a key other than the
/// pinned one.
///
/// # Errors
/// [`AgentError::BadUrl`], [`AgentError::KeyMismatch`].
pub async fn run_link(
    cfg: LinkConfig,
    router: Router,
    load: watch::Receiver<Load>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let mut dialer = Dialer::new(&parse_broker_url(&cfg.url)?);
    let mut refusal = None;
    loop {
        let Some((broker, wait)) = dialer.next_dial() else {
            return Err(refusal.unwrap_or_else(|| AgentError::Link {
                url: cfg.url.clone(),
                why: "no broker left to dial".into(),
            }));
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return Ok(()),
        }
        let r = tokio::select! {
            r = link_once(&cfg, &broker, &router, load.clone(), &mut dialer) => r,
            _ = stop.changed() => return Ok(()),
        };
        match r {
            Ok((lasted, why)) => {
                warn!(%broker, reason = %why, "broker link down; redialling");
                dialer.dropped(lasted);
            }
            Err((e, failure)) => {
                warn!(%broker, error = %e, "cannot link to the broker; trying the next one");
                cfg.metrics
                    .broker_dial_failures
                    .get_or_create(&vec![("reason", failure.label().to_owned())])
                    .inc();
                if matches!(e, AgentError::KeyMismatch { .. }) {
                    refusal = Some(e);
                }
                dialer.failed(&broker, failure);
            }
        }
    }
}

/// Dials `hostport` and reads the broker's hello, within [`DIAL_TIMEOUT`].
async fn dial_hello(hostport: &str) -> Result<(Conn, VerifyingKey, Vec<u8>), String> {
    let dialled = tokio::time::timeout(DIAL_TIMEOUT, async {
        let mut conn = dial(hostport).await?;
        let (key, challenge) = hello(&mut conn).await?;
        Ok::<_, String>((conn, key, challenge))
    })
    .await;
    dialled.unwrap_or_else(|_| Err(format!("no hello within {} s", DIAL_TIMEOUT.as_secs_f32())))
}

/// One link to `hostport`: handshake, then heartbeats and relayed requests until it drops.
/// `Ok` (how long it was up, why it ended) once it was welcomed; `Err` when it never was.
async fn link_once(
    cfg: &LinkConfig,
    hostport: &str,
    router: &Router,
    load: watch::Receiver<Load>,
    dialer: &mut Dialer,
) -> Result<(Duration, String), (AgentError, Failure)> {
    let url = format!("http://{hostport}");
    let link_err = |why: String| AgentError::Link {
        url: url.clone(),
        why,
    };
    let (mut conn, shown, challenge) = dial_hello(hostport)
        .await
        .map_err(|e| (link_err(e.clone()), Failure::Unreachable(e)))?;
    if shown != cfg.broker_key {
        let e = AgentError::KeyMismatch {
            url: url.clone(),
            shown: to_hex(shown.as_bytes()),
            pinned: to_hex(cfg.broker_key.as_bytes()),
            pin_file: "--broker-key or DATA_DIR/broker.pub".into(),
        };
        let words = e.to_string();
        return Err((e, Failure::WrongKey(words)));
    }
    let handshake = |e: AgentError| {
        let words = e.to_string();
        (e, Failure::Handshake(words))
    };
    handshake_welcome(cfg, &mut conn, &shown, &challenge, &url)
        .await
        .map_err(handshake)?;
    let edge = EdgeId(cfg.key.verifying_key().to_bytes());
    match dialer.linked(hostport) {
        Some(f) => {
            warn!(
                from = %f.from, to = %f.to, reason = f.reason, detail = %f.detail, %edge,
                "failed over to another broker: it is the edge's home now"
            );
            cfg.metrics
                .broker_failovers
                .get_or_create(&vec![
                    ("from", f.from),
                    ("to", f.to),
                    ("reason", f.reason.to_owned()),
                ])
                .inc();
        }
        None => info!(broker = %url, %edge, "linked to the broker"),
    }
    let up = Instant::now();
    let why = serve_link(cfg, conn, router, load, dialer).await;
    Ok((up.elapsed(), why))
}

/// Register with a proof of the edge key; check the broker's welcome against the pinned key.
async fn handshake_welcome(
    cfg: &LinkConfig,
    conn: &mut Conn,
    shown: &VerifyingKey,
    challenge: &[u8],
    url: &str,
) -> Result<(), AgentError> {
    let link_err = |why: String| AgentError::Link {
        url: url.to_owned(),
        why,
    };
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|_| AgentError::Random)?;
    let proof = {
        use ed25519_dalek::Signer;
        cfg.key
            .sign(&proof_bytes(challenge, shown.as_bytes(), &nonce))
    };
    let register = LinkMessage::Register {
        registration: EdgeAd {
            coord: cfg.coords.current().0,
            ..cfg.advert.clone()
        }
        .signed(&cfg.key, now_ms()),
        edge_nonce: to_hex(&nonce),
        proof: to_hex(&proof.to_bytes()),
    };
    write_msg(&mut conn.stream, &register)
        .await
        .map_err(link_err)?;
    let m = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_msg(conn))
        .await
        .map_err(|_| link_err("no welcome from the broker".into()))?
        .map_err(link_err)?;
    let edge = cfg.key.verifying_key().to_bytes();
    match m {
        LinkMessage::Welcome { signature } => {
            let sig: [u8; 64] = from_hex(&signature)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| link_err("the welcome's signature is not 64 bytes of hex".into()))?;
            cfg.broker_key
                .verify_strict(
                    &welcome_bytes(&nonce, challenge, &edge),
                    &Signature::from_bytes(&sig),
                )
                .map_err(|_| {
                    link_err(
                        "the broker's welcome does not verify with its pinned key: refusing this broker"
                            .into(),
                    )
                })?;
        }
        LinkMessage::Refused { error } => {
            return Err(link_err(format!("the broker refused the edge: {error}")));
        }
        _ => return Err(link_err("expected `welcome` or `refused`".into())),
    }
    Ok(())
}

/// Heartbeats and relayed requests on a welcomed link until it drops: why it ended. A
/// `brokers` list from the broker updates `dialer`; a broker silent for [`BROKER_SILENCE_MS`]
/// counts as gone.
async fn serve_link(
    cfg: &LinkConfig,
    conn: Conn,
    router: &Router,
    mut load: watch::Receiver<Load>,
    dialer: &mut Dialer,
) -> String {
    let Conn { stream, mut frames } = conn;
    let (mut rd, mut wr) = stream.into_split();
    let (resp_tx, mut resp_rx) = mpsc::channel::<LinkMessage>(64);
    let mut requests = JoinSet::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut last = *load.borrow_and_update();
    let mut next_beat = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(HEARTBEAT_BUSY_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let capacity = cfg.advert.capacity;
    let silence = Duration::from_millis(BROKER_SILENCE_MS);
    let mut heard = Instant::now();
    // The coordinate this broker last heard (none yet on a new link).
    let mut told: Option<edgeplay_protocol::coords::Coord> = None;
    let why = loop {
        if heard.elapsed() >= silence {
            break format!("nothing from the broker for {} s", silence.as_secs());
        }
        // Heartbeat: now when the load changed, else on schedule (500 ms busy, 15 s idle). The
        // loop wakes on the 500 ms tick, which may come a hair before `next_beat` (set after the
        // last write): half a tick of slack keeps busy heartbeats at 500 ms, not 1 s.
        let cur = *load.borrow();
        let slack = Duration::from_millis(HEARTBEAT_BUSY_MS / 2);
        // A measured coordinate that moved since this broker heard it goes out now too.
        let (coord, coord_error) = cfg.coords.current();
        let new_coord =
            cfg.coords.samples() > 0 && told.is_none_or(|t| crate::coords::moved(&t, &coord));
        if cur != last || new_coord || Instant::now() + slack >= next_beat {
            let beat = LinkMessage::Heartbeat {
                free_slots: capacity.saturating_sub(cur.sessions),
                draining: cur.draining,
                sessions: cur.sessions,
                coord: new_coord.then_some(coord),
                coord_error: new_coord.then_some(coord_error),
            };
            if let Err(e) = write_msg(&mut wr, &beat).await {
                break e;
            }
            if new_coord {
                told = Some(coord);
            }
            last = cur;
            let every = if cur.sessions > 0 || cur.draining {
                HEARTBEAT_BUSY_MS
            } else {
                HEARTBEAT_IDLE_MS
            };
            next_beat = Instant::now() + Duration::from_millis(every);
        }
        tokio::select! {
            _ = tick.tick() => {}
            r = load.changed() => if r.is_err() { break "the edge is stopping".into() },
            n = rd.read(&mut chunk) => {
                let n = match n {
                    Ok(0) => break "the broker closed the link".into(),
                    Ok(n) => n,
                    Err(e) => break e.to_string(),
                };
                heard = Instant::now();
                frames.push(&chunk[..n]);
                let mut bad = None;
                loop {
                    match frames.next_message() {
                        Ok(None) => break,
                        Ok(Some(LinkMessage::Request { id, method, path, headers, body })) => {
                            let router = router.clone();
                            let prober = Arc::clone(&cfg.prober);
                            let tx = resp_tx.clone();
                            requests.spawn(async move {
                                let r = if path == "/v1/probe" && method == "POST" {
                                    serve_probe(&prober, id, &body).await
                                } else {
                                    serve_request(router, id, &method, &path, headers, body).await
                                };
                                let _ = tx.send(r).await;
                            });
                        }
                        Ok(Some(LinkMessage::Brokers { brokers })) => {
                            let list = broker_hostports(&brokers);
                            debug!(?list, "brokers sharing the registry");
                            dialer.set_list(list);
                        }
                        Ok(Some(LinkMessage::Peers { peers })) => {
                            debug!(n = peers.len(), "peers to measure");
                            cfg.coords.measure(peers);
                        }
                        Ok(Some(LinkMessage::Refused { error })) => {
                            bad = Some(format!("the broker ended the link: {error}"));
                            break;
                        }
                        Ok(Some(_)) => {
                            bad = Some("unexpected message from the broker".into());
                            break;
                        }
                        Err(e) => {
                            bad = Some(e.to_string());
                            break;
                        }
                    }
                }
                if let Some(b) = bad {
                    break b;
                }
            }
            Some(r) = resp_rx.recv() => {
                if let Err(e) = write_msg(&mut wr, &r).await {
                    break e;
                }
            }
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
        }
    };
    requests.shutdown().await;
    why
}

/// Answers a browser's RTT probe offer with a data-channel-only peer.
async fn serve_probe(prober: &crate::probe::Prober, id: u64, offer: &str) -> LinkMessage {
    match prober.answer(offer.as_bytes()).await {
        Ok(sdp) => LinkMessage::Response {
            id,
            status: 201,
            headers: vec![("content-type".into(), "application/sdp".into())],
            body: sdp,
        },
        Err(e) => LinkMessage::Response {
            id,
            status: 400,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::json!({ "error": e.to_string() }).to_string(),
        },
    }
}

fn allowed(method: &str, path: &str) -> bool {
    let peer_ok =
        |p: &str| !p.is_empty() && p.len() <= 128 && p.bytes().all(|b| b.is_ascii_alphanumeric());
    match path.strip_prefix("/v1/whep") {
        Some("") => method == "POST",
        Some(rest) => rest
            .strip_prefix('/')
            .is_some_and(|p| peer_ok(p) && matches!(method, "PATCH" | "DELETE" | "GET")),
        None => false,
    }
}

/// Serves one relayed request with the edge's own router; only WHEP routes are reachable.
async fn serve_request(
    router: Router,
    id: u64,
    method: &str,
    path: &str,
    headers: Vec<(String, String)>,
    body: String,
) -> LinkMessage {
    let refuse = |status: u16, msg: &str| LinkMessage::Response {
        id,
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::json!({ "error": msg }).to_string(),
    };
    if !allowed(method, path) {
        return refuse(404, "the broker may relay only WHEP requests to an edge");
    }
    let mut b = axum::http::Request::builder().method(method).uri(path);
    for (k, v) in &headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let Ok(req) = b.body(Body::from(body)) else {
        return refuse(400, "relayed request has a malformed header");
    };
    let Ok(resp) = router.oneshot(req).await;
    let status = resp.status().as_u16();
    let headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    match axum::body::to_bytes(resp.into_body(), MAX_FRAME / 2).await {
        Ok(bytes) => LinkMessage::Response {
            id,
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        },
        Err(_) => refuse(500, "the edge's answer is too large to relay"),
    }
}

/// Flags of `edge-agent run --broker`.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// Home broker, e.g. http://127.0.0.1:8090: register there and serve its players.
    #[arg(long, env = "EDGEPLAY_BROKER")]
    pub broker: Option<String>,
    /// The broker's Ed25519 public key (64 hex digits); without it the edge pins the key the
    /// broker shows first, in DATA_DIR/broker.pub.
    #[arg(long, env = "EDGEPLAY_BROKER_KEY")]
    pub broker_key: Option<String>,
    /// Where the edge's identity (edge.key) and the pinned broker key live.
    #[arg(long, env = "EDGEPLAY_DATA_DIR", default_value = "./edge-data")]
    pub data_dir: PathBuf,
    /// Region advertised to the broker.
    #[arg(long, env = "EDGEPLAY_REGION", default_value = "local")]
    pub region: String,
    /// GPU class 0..8 advertised (higher is stronger).
    #[arg(long, default_value_t = 0)]
    pub gpu_class: u8,
    /// Price per minute advertised, in the settlement token's smallest unit.
    #[arg(long, default_value_t = 0)]
    pub price_per_min: u64,
    /// Network coordinate to start from, `X,Y,HEIGHT` (Vivaldi, ms); from then on it is
    /// measured against the peer edges the broker names.
    #[arg(long, default_value = "0,0,0", value_parser = parse_coord)]
    pub coord: Coord,
    /// UDP echo listen address (players' RTT probes).
    #[arg(long, default_value = "127.0.0.1:0", env = "EDGEPLAY_ECHO_LISTEN")]
    pub echo_listen: SocketAddr,
    /// QUIC address advertised, when players reach it under another (e.g. NAT) address.
    #[arg(long)]
    pub advertise_quic: Option<SocketAddr>,
    /// Echo address advertised, when players reach it under another address.
    #[arg(long)]
    pub advertise_echo: Option<SocketAddr>,
    /// Longest wait, on SIGTERM, for sessions to end before the edge exits.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout_secs: u64,
}

fn parse_coord(s: &str) -> Result<Coord, String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("`{s}` is not X,Y,HEIGHT (three numbers)"))?;
    let [x, y, height] = v[..] else {
        return Err(format!("`{s}` is not X,Y,HEIGHT (three numbers)"));
    };
    let c = Coord { x, y, height };
    if c.is_valid() {
        Ok(c)
    } else {
        Err(format!("`{s}`: coordinates are finite and HEIGHT ≥ 0"))
    }
}

/// The parts of a running edge the broker mode drives.
#[derive(Debug)]
pub struct Edge {
    /// Settings of the HTTP side (listen address, encoder, capacity).
    pub http: crate::http::DevServerConfig,
    /// The GPU.
    pub gpu: crate::gpu::Gpu,
    /// Metrics (its `sessions_active` is the load reported).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// QUIC settings.
    pub quic: crate::quic::QuicConfig,
    /// GPU model advertised.
    pub gpu_name: String,
}

/// `edge-agent run --broker URL`: serves the broker's players until SIGTERM, then drains.
///
/// # Errors
/// Keys, sockets, or a broker that shows a key other than the pinned one.
pub async fn serve(args: BrokerArgs, edge: Edge) -> anyhow::Result<()> {
    use anyhow::Context;
    let url = args
        .broker
        .clone()
        .context("`--broker URL` is needed to serve a broker's players")?;
    let key = load_or_create_key(&args.data_dir)?;
    let id = EdgeId(key.verifying_key().to_bytes());
    let broker = broker_key(&url, args.broker_key.as_deref(), &args.data_dir).await?;
    let tokens = Arc::new(BrokerTokens::new(broker, id));
    let quic = crate::quic::QuicEdge::bind(
        edge.quic.clone(),
        tokens.clone(),
        edge.gpu.clone(),
        Arc::clone(&edge.metrics),
    )?;
    let quic_addr = args.advertise_quic.unwrap_or(quic.local_addr()?);
    let echo = UdpSocket::bind(args.echo_listen).await.with_context(|| {
        format!(
            "cannot bind the echo on {}: pick --echo-listen",
            args.echo_listen
        )
    })?;
    let echo_addr = args.advertise_echo.unwrap_or(echo.local_addr()?);
    let listener = tokio::net::TcpListener::bind(edge.http.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: pick another --listen",
                edge.http.listen
            )
        })?;
    let http_addr = listener.local_addr()?;
    let capacity = u32::try_from(edge.http.max_sessions).unwrap_or(u32::MAX);
    let advert = EdgeAd {
        id,
        region: args.region.clone(),
        gpu: edge.gpu_name.clone(),
        gpu_class: args.gpu_class,
        encoders: vec![edge.http.encoder.to_string()],
        resolutions: vec!["1280x720".into()],
        max_fps: 60,
        capacity,
        price_per_min: args.price_per_min,
        coord: args.coord,
        quic_addr,
        cert_fingerprint: quic.fingerprint_hex(),
        echo_addr: Some(echo_addr),
        issued_unix_ms: 0,
    };
    let http = crate::http::EdgeHttp::new(
        edge.http.clone(),
        edge.gpu.clone(),
        Arc::clone(&edge.metrics),
        tokens,
    );
    println!("edge-agent {id} serving broker {url}");
    println!(
        "  quic {quic_addr} certificate sha256 {}",
        quic.fingerprint_hex()
    );
    println!("  echo {echo_addr}");
    println!("  http http://{http_addr} (/healthz, /metrics)");

    let (stop_tx, stop_rx) = watch::channel(false);
    let (load_tx, load_rx) = watch::channel(Load {
        sessions: 0,
        draining: false,
    });
    let metrics = Arc::clone(&edge.metrics);
    let status = Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let m = Arc::clone(&metrics);
                async move { m.render() }
            }),
        );
    let mut tasks = JoinSet::new();
    {
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            axum::serve(listener, status)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await
                .context("HTTP")
        });
    }
    {
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            quic.serve(async move {
                let _ = stop.changed().await;
            })
            .await
            .context("QUIC")
        });
    }
    tasks.spawn({
        let stop = stop_rx.clone();
        async move {
            serve_echo(echo, stop).await;
            Ok(())
        }
    });
    let link = tokio::spawn(run_link(
        LinkConfig {
            url,
            broker_key: broker,
            key,
            advert,
            prober: Arc::new(crate::probe::Prober::new(edge.http.listen.ip())),
            metrics: Arc::clone(&edge.metrics),
            coords: Arc::new(crate::coords::Coords::new(
                args.coord,
                id,
                args.echo_listen.ip(),
                Arc::clone(&edge.metrics),
            )),
        },
        http.router(),
        load_rx,
        stop_rx.clone(),
    ));
    // Load: the sessions of every transport, polled at the busy heartbeat rate.
    let sessions = || u32::try_from(edge.metrics.sessions_active.get().max(0)).unwrap_or(0);
    let mut poll = tokio::time::interval(Duration::from_millis(HEARTBEAT_BUSY_MS / 2));
    let signal = crate::http::shutdown_signal();
    tokio::pin!(signal);
    let mut link = link;
    loop {
        tokio::select! {
            () = &mut signal => break,
            _ = poll.tick() => {
                load_tx.send_if_modified(|l| {
                    let n = sessions();
                    let changed = l.sessions != n;
                    l.sessions = n;
                    changed
                });
            }
            r = &mut link => {
                let _ = stop_tx.send(true);
                return match r {
                    Ok(r) => r.map_err(Into::into),
                    Err(e) => Err(anyhow::anyhow!("the link task failed: {e}")),
                };
            }
        }
    }
    info!("draining: the broker places no new sessions here; waiting for sessions to end");
    load_tx.send_modify(|l| l.draining = true);
    let deadline = Instant::now() + Duration::from_secs(args.drain_timeout_secs);
    while Instant::now() < deadline {
        let n = sessions();
        load_tx.send_if_modified(|l| {
            let changed = l.sessions != n;
            l.sessions = n;
            changed
        });
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(HEARTBEAT_BUSY_MS)).await;
    }
    // One more heartbeat period so that the broker hears the final state.
    tokio::time::sleep(Duration::from_millis(HEARTBEAT_BUSY_MS)).await;
    let _ = stop_tx.send(true);
    let _ = link.await;
    http.end_all().await;
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            warn!(error = %e, "stopping");
        }
    }
    info!("edge stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker_url("http://127.0.0.1:8090/").unwrap(),
            "127.0.0.1:8090"
        );
        assert_eq!(parse_broker_url("b.example:80").unwrap(), "b.example:80");
        assert!(parse_broker_url("https://b.example").is_err());
        assert!(parse_broker_url("http://b.example/x").is_err());
        assert!(parse_broker_url("http://b.example").is_err());
    }

    #[test]
    fn only_whep_is_relayed() {
        assert!(allowed("POST", "/v1/whep"));
        assert!(allowed("PATCH", "/v1/whep/abc123"));
        assert!(allowed("DELETE", "/v1/whep/abc123"));
        assert!(!allowed("GET", "/v1/whep"));
        assert!(!allowed("POST", "/v1/dev/sessions"));
        assert!(!allowed("PATCH", "/v1/whep/../dev"));
        assert!(!allowed("GET", "/metrics"));
    }

    #[test]
    fn broker_tokens_verify_once_in_both_encodings() {
        let broker = SigningKey::from_bytes(&[9; 32]);
        let edge = EdgeId([3; 32]);
        let now = now_ms();
        let mint = |nonce| {
            token::JoinToken {
                session: token::SessionId([1; 16]),
                edge,
                player: "p".into(),
                nonce,
                issued_unix_ms: now,
                expires_unix_ms: now + 30_000,
            }
            .sign(&broker)
            .unwrap()
        };
        let check = BrokerTokens::new(broker.verifying_key(), edge);
        let raw = mint(1);
        check.check(&raw).unwrap();
        assert!(check.check(&raw).is_err(), "a token is used once");
        let hex = to_hex(&mint(2));
        check.check(hex.as_bytes()).unwrap();
        let other = BrokerTokens::new(broker.verifying_key(), EdgeId([4; 32]));
        assert!(other.check(&mint(3)).is_err(), "bound to one edge");
        assert!(check.check(b"not a token").is_err());
    }
}
