//! The broker's end of the edge link (`GET /v1/edges/link`, `Upgrade: edgeplay-link/1`, whose
//! route upgrades the connection and hands it to `run`): the handshake that proves both keys
//! on the connection, heartbeats and coordinates, peers to measure, and the answers to the
//! requests relayed over it ([`crate::links`], what the WHEP relay uses to reach an edge that
//! players cannot).
//!
//! The protocol and its framing are sans-IO in [`edgeplay_protocol::link`], the registry's
//! changes are [`crate::service`]'s; this module is the tokio glue. An edge whose link drops
//! (process killed, network gone) leaves the placement index at once, and comes back when it
//! links again; requests waiting on it fail with 502.
//!
//! A link on which nothing came from the edge for three of the edge's current heartbeat
//! intervals ([`LinkWatch`]: 1.5 s while it serves, 45 s idle) is silent: the broker drops it
//! and marks the edge dead, as if it had missed its heartbeats. That catches an edge that is
//! frozen (stopped, swapping, hung) while its kernel keeps the TCP connection open. Only frames
//! from the edge move that deadline; what the broker sends (keepalives, peers, relayed
//! requests) does not, and a write the edge does not take by the deadline counts as silence.
//!
//! Every link also carries the list of live brokers ([`LinkMessage::Brokers`]: after the
//! welcome, when the sweep sees the list change, and every [`BROKERS_EVERY_MS`] as a
//! keepalive), so that an edge whose broker dies links to another broker of the same registry.

use std::time::Duration;

use edgeplay_protocol::coords::INITIAL_ERROR;
use edgeplay_protocol::link::{
    BROKERS_EVERY_MS, BrokerRef, FrameReader, LinkMessage, encode_frame, proof_bytes, welcome_bytes,
};
use edgeplay_protocol::token::{EdgeId, Signature, from_hex, to_hex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::error::BrokerError;
use crate::links::Relayed;
use crate::liveness::{LinkWatch, MISSES};
use crate::state::AppState;
use crate::store::BrokerEntry;

/// How long an edge has to answer the hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a welcomed link ended.
enum Ended {
    /// Nothing from the edge for three of its heartbeat intervals, or it took nothing from the
    /// broker for as long: the edge is marked dead.
    Silent(String),
    /// Closed, broken, replaced or misused: the edge only leaves placement until it relinks.
    Closed(String),
}

/// [`write_msg`], given up at `deadline`, the link's silence deadline: an edge that takes no
/// message until then is as good as silent (a frozen edge's socket fills up; without the bound
/// the write would hold the loop, and the deadline with it, for as long as TCP waits).
async fn write_by<W: AsyncWrite + Unpin>(
    deadline: tokio::time::Instant,
    wr: &mut W,
    m: &LinkMessage,
) -> Result<(), Ended> {
    match tokio::time::timeout_at(deadline, write_msg(wr, m)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Ended::Closed(e)),
        Err(_) => Err(Ended::Silent(
            "the edge took no message from the broker until its silence deadline".to_owned(),
        )),
    }
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
    let ad = s
        .service
        .verify_registration(&bytes)
        .map_err(|e| e.to_string())?;
    let key = ad
        .id
        .verifying_key()
        .ok_or("the edge id is not an Ed25519 public key")?;
    let signed = proof_bytes(challenge, s.cfg.key.public().as_bytes(), &nonce);
    if key
        .verify_strict(&signed, &Signature::from_bytes(&proof))
        .is_err()
    {
        s.service.metrics().rejected_signatures.inc();
        return Err(format!(
            "link proof does not verify with edge key {}: sign the broker's challenge with the edge's key",
            ad.id
        ));
    }
    let id = ad.id;
    s.service.admit_edge(ad).await.map_err(|e| e.to_string())?;
    Ok((id, nonce))
}

/// Runs an upgraded connection (number `conn`) as an edge's link until it drops.
pub(crate) async fn run<T: AsyncRead + AsyncWrite + Send + Unpin>(s: &AppState, conn: u64, io: T) {
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
    // A newer link of the same edge replaces the old one, which then ends.
    let (link, mut rx) = s.links.attach(edge, conn);
    info!(%edge, "edge linked");
    let mut brokers = s.links.brokers();
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
    // The silence deadline: one timer for the link's life, moved only by frames from the edge.
    let mut watch = LinkWatch::new(std::time::Instant::now());
    let silence = tokio::time::sleep_until(watch.deadline().into());
    tokio::pin!(silence);
    let ended = 'link: loop {
        let deadline = tokio::time::Instant::from_std(watch.deadline());
        tokio::select! {
            () = &mut silence => {
                let every = watch.interval();
                break Ended::Silent(format!(
                    "nothing from the edge for {} ms ({MISSES} of its {} ms heartbeat intervals)",
                    (every * MISSES).as_millis(),
                    every.as_millis()
                ));
            }
            // The list changed, or it is time to show the edge that this broker is alive.
            r = brokers.changed() => {
                if r.is_ok()
                    && let Err(e) = write_by(deadline, &mut wr, &brokers_msg(&brokers)).await
                {
                    break e;
                }
                keepalive.reset();
            }
            _ = keepalive.tick() => {
                if let Err(e) = write_by(deadline, &mut wr, &brokers_msg(&brokers)).await {
                    break e;
                }
            }
            _ = peers_tick.tick() => {
                let peers = s.service.peers_for(&edge);
                if !peers.is_empty()
                    && let Err(e) = write_by(deadline, &mut wr, &LinkMessage::Peers { peers }).await
                {
                    break e;
                }
            }
            // Cancel-safe: a read that loses the race leaves its bytes in the socket, and
            // `frames` keeps what was read already.
            m = read_msg(&mut rd, &mut frames, &mut buf) => {
                let now = std::time::Instant::now();
                match m {
                    Ok(None) => break Ended::Closed("the edge closed the link".to_owned()),
                    Err(e) => {
                        s.links.link_errors.inc();
                        break Ended::Closed(e);
                    }
                    Ok(Some(LinkMessage::Heartbeat { free_slots, draining, sessions, coord, coord_error })) => {
                        watch.handle_heartbeat(now, sessions, draining);
                        debug!(%edge, free_slots, draining, sessions, ?coord, "heartbeat");
                        if let Err(e) = s.service.apply_heartbeat(edge, free_slots, draining).await {
                            break Ended::Closed(e.to_string());
                        }
                        if let Some(c) = coord {
                            let err = coord_error.unwrap_or(INITIAL_ERROR);
                            if let Err(error) = s.service.apply_coord(edge, c, err).await {
                                s.links.coords_refused.inc();
                                warn!(%edge, %error, "coordinate not taken");
                            }
                        }
                    }
                    Ok(Some(LinkMessage::Running { sessions })) => {
                        watch.handle_frame(now);
                        match s.service.apply_running(edge, &sessions).await {
                            Ok(orders) => {
                                for o in orders {
                                    let end = LinkMessage::End { session: o.session, reason: o.reason };
                                    if let Err(e) = write_by(deadline, &mut wr, &end).await {
                                        break 'link e;
                                    }
                                }
                            }
                            Err(e @ BrokerError::BadReport(_)) => {
                                s.links.link_errors.inc();
                                break Ended::Closed(e.to_string());
                            }
                            Err(e) => warn!(%edge, error = %e, "cannot apply the edge's running sessions"),
                        }
                    }
                    Ok(Some(LinkMessage::Ended { report })) => {
                        watch.handle_frame(now);
                        if let Err(e) = s.service.apply_ended(edge, &report).await {
                            if matches!(e, BrokerError::BadReport(_)) {
                                s.links.link_errors.inc();
                                break Ended::Closed(e.to_string());
                            }
                            warn!(%edge, session = %report.session, error = %e, "cannot end the session the edge reported");
                        }
                    }
                    Ok(Some(LinkMessage::Response { id, status, headers, body })) => {
                        watch.handle_frame(now);
                        link.answer(id, Relayed { status, headers, body });
                        s.service.edge_heard(edge).await;
                    }
                    Ok(Some(other)) => {
                        s.links.link_errors.inc();
                        break Ended::Closed(format!("unexpected `{}` from an edge", kind(&other)));
                    }
                }
                silence.as_mut().reset(watch.deadline().into());
            }
            out = rx.recv() => {
                let Some(out) = out else {
                    break Ended::Closed("replaced by a newer link".to_owned());
                };
                if let Err(e) = write_by(deadline, &mut wr, &out).await {
                    break e;
                }
            }
        }
    };
    // Close the connection first: a frozen edge finds it closed when it wakes, and relinks.
    drop((rd, wr));
    // Waiting relays fail now rather than at their timeout.
    let ours = s.links.detach(&edge, &link);
    match ended {
        Ended::Silent(why) => {
            s.links.link_timeouts.inc();
            warn!(%edge, reason = %why, "edge link silent: dropped");
            if ours {
                s.service.edge_silent(edge).await;
                s.service.edge_gone(&edge);
            }
        }
        Ended::Closed(why) => {
            if ours {
                s.service.edge_gone(&edge);
            }
            info!(%edge, reason = %why, "edge link closed");
        }
    }
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
        LinkMessage::Running { .. } => "running",
        LinkMessage::Ended { .. } => "ended",
        LinkMessage::End { .. } => "end",
    }
}
