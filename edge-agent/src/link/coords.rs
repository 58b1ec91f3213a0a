//! The edge's network coordinate, measured: the broker names a few other live edges
//! ([`LinkMessage::Peers`](edgeplay_protocol::link::LinkMessage::Peers)) every
//! [`PEERS_EVERY_MS`](edgeplay_protocol::link::PEERS_EVERY_MS); the edge sends each of them
//! [`ECHO_SAMPLES`] UDP echo probes, feeds the minimum RTT to its Vivaldi state
//! ([`edgeplay_protocol::coords::Vivaldi`]), and its heartbeats carry the coordinate once it
//! moved [`COORD_REPORT_MS`]. `--coord` is where it starts, not where it stays.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use edgeplay_protocol::coords::{Coord, INITIAL_ERROR, Vivaldi};
use edgeplay_protocol::link::{COORD_REPORT_MS, ECHO_MAGIC, MAX_PEERS, PeerRef};
use edgeplay_protocol::token::EdgeId;
use tokio::net::UdpSocket;
use tracing::{debug, info};

use crate::metrics::Metrics;

/// Echo probes per peer per round; the minimum RTT counts.
pub const ECHO_SAMPLES: usize = 3;
/// How long one probe waits for its answer.
pub const ECHO_TIMEOUT: Duration = Duration::from_millis(500);

/// The edge's coordinate and the rounds that move it.
#[derive(Debug)]
pub struct Coords {
    state: Mutex<Vivaldi>,
    me: EdgeId,
    local_ip: IpAddr,
    measuring: AtomicBool,
    samples: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Coords {
    /// Starts at `start`, knowing nothing of its accuracy; probes leave from `local_ip`.
    #[must_use]
    pub fn new(start: Coord, me: EdgeId, local_ip: IpAddr, metrics: Arc<Metrics>) -> Self {
        let seed = u64::from_le_bytes(me.0[..8].try_into().unwrap_or([1; 8]));
        metrics
            .coord_error_milli
            .set((INITIAL_ERROR * 1000.0).round() as i64);
        Self {
            state: Mutex::new(Vivaldi::with_coord(start, INITIAL_ERROR, seed)),
            me,
            local_ip,
            measuring: AtomicBool::new(false),
            samples: AtomicU64::new(0),
            metrics,
        }
    }

    /// The coordinate now and its relative error.
    pub fn current(&self) -> (Coord, f64) {
        let v = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (*v.coord(), v.error())
    }

    /// RTT samples applied so far (0: the coordinate is still the configured one).
    pub fn samples(&self) -> u64 {
        self.samples.load(Ordering::Relaxed)
    }

    /// Measures `peers` (at most [`MAX_PEERS`], itself skipped) in the background, unless a
    /// round is still running.
    pub fn measure(self: &Arc<Self>, peers: Vec<PeerRef>) {
        if self.measuring.swap(true, Ordering::AcqRel) {
            debug!("a coordinate round is still running; skipping these peers");
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            me.round(peers).await;
            me.measuring.store(false, Ordering::Release);
        });
    }

    async fn round(&self, peers: Vec<PeerRef>) {
        let Ok(sock) = UdpSocket::bind((self.local_ip, 0)).await else {
            debug!("no UDP socket for coordinate probes");
            return;
        };
        for peer in peers
            .into_iter()
            .filter(|p| p.id != self.me)
            .take(MAX_PEERS)
        {
            let rtt = echo_rtt(&sock, peer.echo_addr).await;
            debug!(peer = %peer.id, ?rtt, coord = ?peer.coord, "coordinate sample");
            let result = match rtt {
                Some(rtt) => {
                    let mut v = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                    // Loopback answers in microseconds; Vivaldi needs a positive RTT.
                    match v.update(rtt.max(0.01), &peer.coord, peer.error) {
                        Ok(()) => {
                            self.samples.fetch_add(1, Ordering::Relaxed);
                            self.metrics
                                .coord_error_milli
                                .set((v.error() * 1000.0).round() as i64);
                            "ok"
                        }
                        Err(e) => {
                            debug!(peer = %peer.id, error = %e, "coordinate sample refused");
                            "refused"
                        }
                    }
                }
                None => "lost",
            };
            self.metrics
                .coord_samples
                .get_or_create(&vec![("result", result.to_owned())])
                .inc();
        }
        let (c, e) = self.current();
        info!(
            x = c.x,
            y = c.y,
            height = c.height,
            error = e,
            "network coordinate"
        );
    }
}

/// Whether `a` and `b` are [`COORD_REPORT_MS`] or more apart (plane and height).
#[must_use]
pub fn moved(a: &Coord, b: &Coord) -> bool {
    (a.x - b.x).hypot(a.y - b.y) + (a.height - b.height).abs() >= COORD_REPORT_MS
}

/// The minimum RTT of [`ECHO_SAMPLES`] echo probes from `sock` to `to`, in ms.
async fn echo_rtt(sock: &UdpSocket, to: SocketAddr) -> Option<f64> {
    let mut tag = [0u8; 8];
    getrandom::fill(&mut tag).ok()?;
    let mut best: Option<f64> = None;
    let mut buf = [0u8; 64];
    for i in 0..ECHO_SAMPLES {
        let mut probe = ECHO_MAGIC.to_vec();
        probe.extend_from_slice(&tag);
        probe.push(u8::try_from(i).unwrap_or(u8::MAX));
        let sent = Instant::now();
        if sock.send_to(&probe, to).await.is_err() {
            continue;
        }
        let deadline = sent + ECHO_TIMEOUT;
        // Answers from elsewhere, or late ones to an earlier probe, are skipped.
        while let Ok(Ok((n, from))) =
            tokio::time::timeout_at(deadline.into(), sock.recv_from(&mut buf)).await
        {
            if from == to && buf[..n] == probe[..] {
                let ms = sent.elapsed().as_secs_f64() * 1000.0;
                best = Some(best.map_or(ms, |b: f64| b.min(ms)));
                break;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_round_moves_the_coordinate_and_counts_lost_peers() {
        let metrics = Metrics::new();
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(crate::link::serve_echo(echo, stop));
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let me = EdgeId([1; 32]);
        let coords = Arc::new(Coords::new(
            Coord::default(),
            me,
            "127.0.0.1".parse().unwrap(),
            Arc::clone(&metrics),
        ));
        assert_eq!(coords.samples(), 0);
        let far = Coord {
            x: 50.0,
            y: 0.0,
            height: 1.0,
        };
        let peer = |id: u8, echo_addr| PeerRef {
            id: EdgeId([id; 32]),
            echo_addr,
            coord: far,
            error: 0.1,
        };
        coords
            .round(vec![
                peer(2, echo_addr),
                peer(3, silent.local_addr().unwrap()),
                // Itself: skipped.
                PeerRef {
                    id: me,
                    ..peer(1, echo_addr)
                },
            ])
            .await;
        assert_eq!(coords.samples(), 1);
        let (c, e) = coords.current();
        // A peer 50 ms away by its coordinate answered in well under a millisecond: this edge
        // moves towards it.
        assert!(c.x > 1.0, "{c:?}");
        assert!(moved(&Coord::default(), &c));
        // So far off the mark that the error stays at its ceiling.
        assert!((e - INITIAL_ERROR).abs() < 1e-9, "{e}");
        let text = metrics.render();
        assert!(
            text.contains("edgeplay_edge_coord_samples_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("edgeplay_edge_coord_samples_total{result=\"lost\"} 1"),
            "{text}"
        );
        stop_tx.send(true).unwrap();
        let _ = server.await;
    }
}
