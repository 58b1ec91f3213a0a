//! The broker's end of the edge link (`GET /v1/edges/link`, `Upgrade: edgeplay-link/1`): the
//! handshake that proves both keys on the connection, heartbeats, and the request/response
//! relay the WHEP routes ([`crate::whep_relay`]) use to reach an edge that players cannot.
//!
//! The protocol and its framing are sans-IO in [`edgeplay_protocol::link`]; this module is the
//! tokio glue. An edge whose link drops (process killed, network gone, or no message for
//! [`LINK_IDLE_TIMEOUT`]) leaves the placement index at once, and comes back when it links
//! again; requests waiting on it fail with 504.
//!
//! Every link also carries the list of live brokers ([`LinkMessage::Brokers`]: after the
//! welcome, when the sweep sees the list change, and every [`link::BROKERS_EVERY_MS`] as a
//! keepalive), so that an edge whose broker dies links to another broker of the same registry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgeplay_protocol::link::{
    self, BROKERS_EVERY_MS, BrokerRef, FrameReader, HEARTBEAT_IDLE_MS, LinkMessage, encode_frame,
    proof_bytes, welcome_bytes,
};
use edgeplay_protocol::token::{EdgeId, Signature, from_hex, to_hex};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::api::{self, AppState};
use crate::store::BrokerEntry;

/// How long an edge has to answer the hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A link with no message for this long (three idle heartbeats) is dropped.
pub const LINK_IDLE_TIMEOUT: Duration = Duration::from_millis(3 * HEARTBEAT_IDLE_MS);

/// What a relayed request gave back.
#[derive(Debug)]
pub struct Relayed {
    /// HTTP status.
    pub status: u16,
    /// Headers from the edge.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

/// Why a request could not be relayed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The edge has no link to this broker.
    #[error("edge {0} is not connected to this broker: ask for a new session")]
    NotConnected(EdgeId),
    /// The edge did not answer in time.
    #[error("edge {edge} did not answer within {secs} s: retry, or ask for a new session")]
    Timeout {
        /// The edge.
        edge: EdgeId,
        /// The wait.
        secs: u64,
    },
    /// The link dropped while the request was out.
    #[error("edge {0} went away while answering: ask for a new session")]
    Dropped(EdgeId),
}

#[derive(Debug)]
struct Link {
    conn: u64,
    tx: mpsc::Sender<LinkMessage>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Relayed>>>,
}

impl Link {
    fn pending(&self) -> MutexGuard<'_, HashMap<u64, oneshot::Sender<Relayed>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The edges linked to this broker, and the link's counters.
#[derive(Debug, Default)]
pub struct Links {
    links: Mutex<HashMap<EdgeId, Arc<Link>>>,
    next: AtomicU64,
    linked: Gauge,
    handshakes_refused: Counter,
    relayed: Counter,
    relay_timeouts: Counter,
    link_errors: Counter,
    coords_refused: Counter,
    /// The live brokers as the sweep last listed them; every link passes changes on.
    brokers: watch::Sender<Vec<BrokerEntry>>,
}

impl Links {
    fn map(&self) -> MutexGuard<'_, HashMap<EdgeId, Arc<Link>>> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds the link counters to the broker's registry.
    pub fn register_metrics(&self, r: &mut Registry) {
        r.register(
            "broker_edge_links",
            "Edges connected over the link",
            self.linked.clone(),
        );
        r.register(
            "broker_link_handshakes_refused",
            "Link handshakes refused (bad proof, bad registration, timeout)",
            self.handshakes_refused.clone(),
        );
        r.register(
            "broker_link_errors",
            "Links closed on malformed or oversized frames",
            self.link_errors.clone(),
        );
        r.register(
            "broker_coords_refused",
            "Edge coordinates not taken (not finite, out of range, or the store failed)",
            self.coords_refused.clone(),
        );
        r.register(
            "broker_relayed_requests",
            "Player requests relayed to edges",
            self.relayed.clone(),
        );
        r.register(
            "broker_relay_timeouts",
            "Relayed requests the edge did not answer in time",
            self.relay_timeouts.clone(),
        );
    }

    /// Publishes the live brokers (the sweep lists them once a second); each link sends a
    /// changed list to its edge at once.
    pub(crate) fn publish_brokers(&self, list: Vec<BrokerEntry>) {
        self.brokers.send_if_modified(|cur| {
            let changed = *cur != list;
            if changed {
                *cur = list;
            }
            changed
        });
    }

    /// Whether `edge` is linked now.
    pub fn is_linked(&self, edge: &EdgeId) -> bool {
        self.map().contains_key(edge)
    }

    /// Sends a request to `edge` over its link and waits up to `timeout` for the answer.
    ///
    /// # Errors
    /// [`RelayError`].
    pub async fn request(
        &self,
        edge: EdgeId,
        method: &str,
        path: String,
        headers: Vec<(String, String)>,
        body: String,
        timeout: Duration,
    ) -> Result<Relayed, RelayError> {
        let link = self
            .map()
            .get(&edge)
            .cloned()
            .ok_or(RelayError::NotConnected(edge))?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        link.pending().insert(id, tx);
        let msg = LinkMessage::Request {
            id,
            method: method.to_owned(),
            path,
            headers,
            body,
        };
        if link.tx.send(msg).await.is_err() {
            link.pending().remove(&id);
            return Err(RelayError::Dropped(edge));
        }
        self.relayed.inc();
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(RelayError::Dropped(edge)),
            Err(_) => {
                link.pending().remove(&id);
                self.relay_timeouts.inc();
                Err(RelayError::Timeout {
                    edge,
                    secs: timeout.as_secs(),
                })
            }
        }
    }
}

/// `GET /v1/edges/link`: upgrades to the link and runs it until it drops.
pub(crate) async fn link(State(s): State<Arc<AppState>>, mut req: Request) -> Response {
    let wants_link = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(link::UPGRADE));
    if !wants_link {
        return (
            StatusCode::UPGRADE_REQUIRED,
            [(header::UPGRADE, link::UPGRADE)],
            format!(
                "the edge link needs `Connection: upgrade` and `Upgrade: {}`",
                link::UPGRADE
            ),
        )
            .into_response();
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let conn = s.links.next.fetch_add(1, Ordering::Relaxed);
    // The connection leaves the HTTP server once upgraded; this task owns it until it drops.
    tokio::spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => run(&s, conn, TokioIo::new(upgraded)).await,
                Err(e) => debug!(error = %e, "edge link upgrade failed"),
            }
        }
        .instrument(info_span!("edge_link", conn)),
    );
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static(link::UPGRADE));
    resp
}

/// Reads until one whole message, `None` on a clean close.
async fn read_msg<R: AsyncRead + Unpin>(
    rd: &mut R,
    frames: &mut FrameReader,
    buf: &mut [u8],
) -> Result<Option<LinkMessage>, String> {
    loop {
        if let Some(m) = frames.next_message().map_err(|e| e.to_string())? {
            return Ok(Some(m));
        }
        let n = rd.read(buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(None);
        }
        frames.push(&buf[..n]);
    }
}

async fn write_msg<W: AsyncWrite + Unpin>(wr: &mut W, m: &LinkMessage) -> Result<(), String> {
    let frame = encode_frame(m).map_err(|e| e.to_string())?;
    wr.write_all(&frame).await.map_err(|e| e.to_string())?;
    wr.flush().await.map_err(|e| e.to_string())
}

fn hex32(what: &str, s: &str) -> Result<Vec<u8>, String> {
    from_hex(s)
        .ok()
        .filter(|b| b.len() == 32)
        .ok_or_else(|| format!("`{what}`: expected 64 hex digits"))
}

/// Checks the edge's `Register` and admits its registration: the edge id.
async fn handshake(
    s: &AppState,
    challenge: &[u8; 32],
    msg: LinkMessage,
) -> Result<(EdgeId, Vec<u8>), String> {
    let LinkMessage::Register {
        registration,
        edge_nonce,
        proof,
    } = msg
    else {
        return Err("expected `register` after `hello`".into());
    };
    let nonce = hex32("edge_nonce", &edge_nonce)?;
    let proof: [u8; 64] = from_hex(&proof)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("`proof`: expected 128 hex digits (an Ed25519 signature)")?;
    let bytes = serde_json::to_vec(&registration).map_err(|e| e.to_string())?;
    let ad = api::verify_registration(s, &bytes).map_err(|e| e.to_string())?;
    let key = ad
        .id
        .verifying_key()
        .ok_or("the edge id is not an Ed25519 public key")?;
    let signed = proof_bytes(challenge, s.cfg.key.public().as_bytes(), &nonce);
    if key
        .verify_strict(&signed, &Signature::from_bytes(&proof))
        .is_err()
    {
        s.metrics.rejected_signatures.inc();
        return Err(format!(
            "link proof does not verify with edge key {}: sign the broker's challenge with the edge's key",
            ad.id
        ));
    }
    let id = ad.id;
    api::admit_edge(s, ad).await.map_err(|e| e.to_string())?;
    Ok((id, nonce))
}

async fn run<T: AsyncRead + AsyncWrite + Send + Unpin>(s: &Arc<AppState>, conn: u64, io: T) {
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut frames = FrameReader::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut challenge = [0u8; 32];
    if getrandom::fill(&mut challenge).is_err() {
        warn!("no randomness for the link challenge; closing");
        return;
    }
    let hello = LinkMessage::Hello {
        broker_key: to_hex(s.cfg.key.public().as_bytes()),
        challenge: to_hex(&challenge),
    };
    if write_msg(&mut wr, &hello).await.is_err() {
        return;
    }
    let first =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, read_msg(&mut rd, &mut frames, &mut buf)).await;
    let result = match first {
        Ok(Ok(Some(m))) => handshake(s, &challenge, m).await,
        Ok(Ok(None)) => {
            // An edge fetching the key to pin it does this: not an error.
            debug!("the edge closed the link after the hello");
            return;
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "no registration within {} s",
            HANDSHAKE_TIMEOUT.as_secs()
        )),
    };
    let (edge, nonce) = match result {
        Ok(x) => x,
        Err(error) => {
            s.links.handshakes_refused.inc();
            warn!(%error, "edge link refused");
            let _ = write_msg(&mut wr, &LinkMessage::Refused { error }).await;
            let _ = wr.shutdown().await;
            return;
        }
    };
    let welcome = LinkMessage::Welcome {
        signature: to_hex(
            &s.cfg
                .key
                .sign(&welcome_bytes(&nonce, &challenge, &edge.0))
                .to_bytes(),
        ),
    };
    if write_msg(&mut wr, &welcome).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::channel(64);
    let link = Arc::new(Link {
        conn,
        tx,
        pending: Mutex::new(HashMap::new()),
    });
    {
        let mut map = s.links.map();
        // A newer link of the same edge replaces the old one, which then ends.
        map.insert(edge, Arc::clone(&link));
        s.links.linked.set(map.len() as i64);
    }
    info!(%edge, "edge linked");
    let mut brokers = s.links.brokers.subscribe();
    if brokers.borrow_and_update().is_empty() {
        // Before the sweep's first listing: ask the store now, the edge needs the list early.
        match s.cfg.store.brokers().await {
            Ok(list) => s.links.publish_brokers(list),
            Err(e) => warn!(error = %e, "cannot list the live brokers for a new link"),
        }
        brokers.borrow_and_update();
    }
    let brokers_msg = |rx: &watch::Receiver<Vec<BrokerEntry>>| LinkMessage::Brokers {
        brokers: rx
            .borrow()
            .iter()
            .map(|b| BrokerRef {
                id: b.id.clone(),
                url: b.url.clone(),
            })
            .collect(),
    };
    if write_msg(&mut wr, &brokers_msg(&brokers)).await.is_err() {
        return;
    }
    let every = Duration::from_millis(BROKERS_EVERY_MS);
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Peers to measure: the first round soon after linking, then at the configured period.
    let peers_every = s.cfg.peers_every.max(Duration::from_millis(100));
    let mut peers_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + peers_every.min(Duration::from_secs(1)),
        peers_every,
    );
    peers_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let why = loop {
        tokio::select! {
            // The list changed, or it is time to show the edge that this broker is alive.
            r = brokers.changed() => {
                if r.is_ok()
                    && let Err(e) = write_msg(&mut wr, &brokers_msg(&brokers)).await
                {
                    break e;
                }
                keepalive.reset();
            }
            _ = keepalive.tick() => {
                if let Err(e) = write_msg(&mut wr, &brokers_msg(&brokers)).await {
                    break e;
                }
            }
            _ = peers_tick.tick() => {
                let peers = api::peers_for(s, &edge);
                if !peers.is_empty()
                    && let Err(e) = write_msg(&mut wr, &LinkMessage::Peers { peers }).await
                {
                    break e;
                }
            }
            m = tokio::time::timeout(LINK_IDLE_TIMEOUT, read_msg(&mut rd, &mut frames, &mut buf)) => {
                match m {
                    Err(_) => break format!("no message for {} s", LINK_IDLE_TIMEOUT.as_secs()),
                    Ok(Ok(None)) => break "the edge closed the link".to_owned(),
                    Ok(Err(e)) => {
                        s.links.link_errors.inc();
                        break e;
                    }
                    Ok(Ok(Some(LinkMessage::Heartbeat { free_slots, draining, sessions, coord, coord_error }))) => {
                        debug!(%edge, free_slots, draining, sessions, ?coord, "heartbeat");
                        if let Err(e) = api::apply_heartbeat(s, edge, free_slots, draining).await {
                            break e.to_string();
                        }
                        if let Some(c) = coord {
                            let err = coord_error.unwrap_or(edgeplay_protocol::coords::INITIAL_ERROR);
                            if let Err(error) = api::apply_coord(s, edge, c, err).await {
                                s.links.coords_refused.inc();
                                warn!(%edge, %error, "coordinate not taken");
                            }
                        }
                    }
                    Ok(Ok(Some(LinkMessage::Response { id, status, headers, body }))) => {
                        if let Some(w) = link.pending().remove(&id) {
                            let _ = w.send(Relayed { status, headers, body });
                        }
                        api::edge_heard(s, edge).await;
                    }
                    Ok(Ok(Some(other))) => {
                        s.links.link_errors.inc();
                        break format!("unexpected `{}` from an edge", kind(&other));
                    }
                }
            }
            out = rx.recv() => {
                let Some(out) = out else { break "replaced by a newer link".to_owned() };
                if let Err(e) = write_msg(&mut wr, &out).await {
                    break e;
                }
            }
        }
    };
    let gone = {
        let mut map = s.links.map();
        let ours = map.get(&edge).is_some_and(|l| l.conn == conn);
        if ours {
            map.remove(&edge);
        }
        s.links.linked.set(map.len() as i64);
        ours
    };
    // Waiting relays fail now rather than at their timeout.
    link.pending().clear();
    if gone {
        api::edge_gone(s, &edge);
    }
    info!(%edge, reason = %why, "edge link closed");
}

fn kind(m: &LinkMessage) -> &'static str {
    match m {
        LinkMessage::Hello { .. } => "hello",
        LinkMessage::Register { .. } => "register",
        LinkMessage::Welcome { .. } => "welcome",
        LinkMessage::Refused { .. } => "refused",
        LinkMessage::Heartbeat { .. } => "heartbeat",
        LinkMessage::Request { .. } => "request",
        LinkMessage::Response { .. } => "response",
        LinkMessage::Brokers { .. } => "brokers",
        LinkMessage::Peers { .. } => "peers",
    }
}
