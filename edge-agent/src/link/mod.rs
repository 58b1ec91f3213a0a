//! The edge's link to its home broker (`edge-agent run --broker URL`): register, heartbeat,
//! serve the requests the broker relays, move to another broker when the home dies.
//!
//! - Identity (`identity`): the edge's Ed25519 key in `DATA_DIR/edge.key` (created once, mode
//!   0600); its public key is the edge id. The broker's key is given (`--broker-key`) or pinned
//!   the first time it is seen (`DATA_DIR/broker.pub`, `wire::broker_key`); a broker showing
//!   another key is refused.
//! - One persistent link ([`edgeplay_protocol::link`], framed by `wire`) over which both sides
//!   prove their keys, the edge registers (region, GPU, encoders, resolutions, capacity, price,
//!   coordinate, QUIC and echo addresses, certificate fingerprint), heartbeats every 500 ms
//!   while it serves sessions and every 15 s when idle, and answers the WHEP requests and RTT
//!   probes the broker relays (`relay`, with the edge's own handlers: the [`crate::http`]
//!   router). A dropped link is redialled with backoff.
//! - Relinking: each link brings the list of brokers sharing the home's registry; when the link
//!   drops and the home does not answer a redial within [`DIAL_TIMEOUT`], the edge links to the
//!   next broker of the list (same pinned key), which becomes its home ([`relink`]).
//! - Join tokens are the broker's (`identity::BrokerTokens`), checked offline on WHEP and QUIC,
//!   once each.
//! - A UDP echo ([`serve_echo`]) answers players' and peer edges' RTT probes; `coords` measures
//!   the edge's network coordinate against the peers the broker names.
//!
//! [`crate::broker_mode`] runs all of it next to the transports and drains on SIGTERM.

pub(crate) mod coords;
mod echo;
pub(crate) mod identity;
mod relay;
pub mod relink;
pub(crate) mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use edgeplay_protocol::link::{
    self, BROKER_SILENCE_MS, EdgeAd, HEARTBEAT_BUSY_MS, LinkMessage, broker_hostports, proof_bytes,
    welcome_bytes,
};
use edgeplay_protocol::token::{
    EdgeId, SessionId, Signature, SigningKey, VerifyingKey, from_hex, to_hex,
};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

pub use echo::serve_echo;

use crate::admission::Admission;
use crate::link::coords::Coords;
use crate::link::relay::{serve_probe, serve_request};
use crate::link::relink::{Dialer, Failure};
use crate::link::wire::{Conn, dial_hello, read_msg, write_msg};
use crate::metrics::Metrics;
use crate::transport::webrtc::rtt_probe::Prober;

/// How long the edge waits for the broker at each handshake step.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between redials of a dropped link.
pub const MAX_BACKOFF: Duration = relink::MAX_BACKOFF;
/// How long a broker has to accept the connection, upgrade it and say hello before the edge
/// tries the next broker of its list.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// What went wrong with the broker or the edge's keys.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
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

/// The broker's address, from `http://HOST:PORT[/]` or `HOST:PORT`.
///
/// # Errors
/// [`LinkError::BadUrl`].
pub(crate) fn parse_broker_url(url: &str) -> Result<String, LinkError> {
    link::http_hostport(url).ok_or_else(|| LinkError::BadUrl(url.to_owned()))
}

/// How the link loop learns about the edge.
#[derive(Debug, Clone)]
pub(crate) struct LinkConfig {
    /// Broker URL as given.
    pub url: String,
    /// The broker's key.
    pub broker_key: VerifyingKey,
    /// The edge's key.
    pub key: SigningKey,
    /// What to register.
    pub advert: EdgeAd,
    /// Answers browsers' RTT probes.
    pub prober: Arc<Prober>,
    /// Where failovers and failed dials are counted.
    pub metrics: Arc<Metrics>,
    /// The edge's measured network coordinate (heartbeats report it).
    pub coords: Arc<Coords>,
    /// The edge's sessions: which broker sessions run (sent as `Running`), the ends to report,
    /// and where the broker's `End` goes.
    pub admission: Admission,
}

/// The edge's state the link reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Load {
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
/// [`LinkError::BadUrl`], [`LinkError::KeyMismatch`].
pub(crate) async fn run_link(
    cfg: LinkConfig,
    router: Router,
    load: watch::Receiver<Load>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), LinkError> {
    let mut dialer = Dialer::new(&parse_broker_url(&cfg.url)?);
    let mut refusal = None;
    loop {
        let Some((broker, wait)) = dialer.next_dial() else {
            return Err(refusal.unwrap_or_else(|| LinkError::Link {
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
                if matches!(e, LinkError::KeyMismatch { .. }) {
                    refusal = Some(e);
                }
                dialer.failed(&broker, failure);
            }
        }
    }
}

/// One link to `hostport`: handshake, then heartbeats and relayed requests until it drops.
/// `Ok` (how long it was up, why it ended) once it was welcomed; `Err` when it never was.
async fn link_once(
    cfg: &LinkConfig,
    hostport: &str,
    router: &Router,
    load: watch::Receiver<Load>,
    dialer: &mut Dialer,
) -> Result<(Duration, String), (LinkError, Failure)> {
    let url = format!("http://{hostport}");
    let link_err = |why: String| LinkError::Link {
        url: url.clone(),
        why,
    };
    let (mut conn, shown, challenge) = dial_hello(hostport)
        .await
        .map_err(|e| (link_err(e.clone()), Failure::Unreachable(e)))?;
    if shown != cfg.broker_key {
        let e = LinkError::KeyMismatch {
            url: url.clone(),
            shown: to_hex(shown.as_bytes()),
            pinned: to_hex(cfg.broker_key.as_bytes()),
            pin_file: "--broker-key or DATA_DIR/broker.pub".into(),
        };
        let words = e.to_string();
        return Err((e, Failure::WrongKey(words)));
    }
    let handshake = |e: LinkError| {
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
) -> Result<(), LinkError> {
    let link_err = |why: String| LinkError::Link {
        url: url.to_owned(),
        why,
    };
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|_| LinkError::Random)?;
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

/// Tells the broker of sessions that ended since the last call and, when the set changed
/// since `listed` (what it heard last), the sessions running now. Reports that could not be
/// written go back to the admission for the next link.
async fn report_sessions(
    admission: &Admission,
    listed: &mut Option<Vec<SessionId>>,
    wr: &mut (impl tokio::io::AsyncWriteExt + Unpin),
) -> Result<(), String> {
    let ended = admission.take_ended();
    for (i, report) in ended.iter().enumerate() {
        let msg = LinkMessage::Ended {
            report: report.clone(),
        };
        if let Err(e) = write_msg(wr, &msg).await {
            admission.requeue(ended[i..].to_vec());
            return Err(e);
        }
    }
    let running = admission.running();
    if listed.as_ref() != Some(&running) {
        write_msg(
            wr,
            &LinkMessage::Running {
                sessions: running.clone(),
            },
        )
        .await?;
        *listed = Some(running);
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
    // The running sessions this broker last heard (none yet on a new link: sent at once).
    let mut book = cfg.admission.book_changes();
    let mut listed: Option<Vec<SessionId>> = None;
    let why = loop {
        if let Err(e) = report_sessions(&cfg.admission, &mut listed, &mut wr).await {
            break e;
        }
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
        let new_coord = cfg.coords.samples() > 0 && told.is_none_or(|t| coords::moved(&t, &coord));
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
            // The broker derives the same interval from this heartbeat and drops the link
            // after three of them without a message.
            let every = link::heartbeat_interval_ms(cur.sessions, cur.draining);
            next_beat = Instant::now() + Duration::from_millis(every);
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = book.changed() => {}
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
                        Ok(Some(LinkMessage::End { session, reason })) => {
                            let runs = cfg.admission.end(session, reason);
                            info!(%session, %reason, runs, "the broker ends a session");
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
}
