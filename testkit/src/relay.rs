//! A UDP relay on loopback that puts a fixed one-way delay and independent random loss on each
//! direction between one client and one server: the "regions" of the loopback tests.
//!
//! The client sends to [`UdpRelay::local_addr`] instead of the server; the relay learns the
//! client's address from its first datagram. Loss is drawn from a seeded generator per
//! direction, so a run is reproducible up to the scheduling of the tasks. Queues are bounded
//! (datagrams beyond [`QUEUE_LIMIT`] in flight are dropped and counted), and the relay stops when
//! [`UdpRelay::stop`] is called or the value is dropped.
//!
//! [`UdpRelay::set_rate_to_client`] turns the server → client direction into a bottleneck of a
//! given rate, changeable while traffic flows: datagrams leave one after the other at that rate
//! through a drop-tail buffer of [`BOTTLENECK_BUFFER`], as a narrow access link does, so the
//! delay grows before anything is lost.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use edgeplay_testkit::relay::{RelayConfig, UdpRelay};
//! use tokio::net::UdpSocket;
//!
//! let server = UdpSocket::bind("127.0.0.1:0").await?;
//! let relay = UdpRelay::start(server.local_addr()?, RelayConfig {
//!     delay: Duration::from_millis(5),
//!     ..RelayConfig::default()
//! }).await?;
//! let client = UdpSocket::bind("127.0.0.1:0").await?;
//! client.send_to(b"ping", relay.local_addr()).await?;
//! let mut buf = [0u8; 16];
//! let (n, from) = server.recv_from(&mut buf).await?;
//! assert_eq!(&buf[..n], b"ping");
//! server.send_to(b"pong", from).await?;
//! let n = client.recv(&mut buf).await?;
//! assert_eq!(&buf[..n], b"pong");
//! relay.stop().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use edgeplay_game::hash::SplitMix64;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Datagrams queued per direction before new ones are dropped.
pub const QUEUE_LIMIT: usize = 16 * 1024;
/// Queueing a rate-limited direction holds before it drops (drop-tail).
pub const BOTTLENECK_BUFFER: Duration = Duration::from_millis(200);
/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;

/// How the relay treats traffic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RelayConfig {
    /// One-way delay added in each direction.
    pub delay: Duration,
    /// Probability in [0, 1] that a client → server datagram is dropped.
    pub loss_to_server: f64,
    /// Probability in [0, 1] that a server → client datagram is dropped.
    pub loss_to_client: f64,
    /// Seed of the loss draws.
    pub seed: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            loss_to_server: 0.0,
            loss_to_client: 0.0,
            seed: 1,
        }
    }
}

/// What the relay did so far, per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayCounters {
    /// Datagrams client → server forwarded.
    pub to_server: u64,
    /// Datagrams client → server dropped by the loss draw or a full queue.
    pub dropped_to_server: u64,
    /// Datagrams server → client forwarded.
    pub to_client: u64,
    /// Datagrams server → client dropped by the loss draw or a full queue.
    pub dropped_to_client: u64,
}

#[derive(Debug, Default)]
struct Counters {
    to_server: AtomicU64,
    dropped_to_server: AtomicU64,
    to_client: AtomicU64,
    dropped_to_client: AtomicU64,
}

/// A running relay. Dropping it stops it.
#[derive(Debug)]
pub struct UdpRelay {
    local: SocketAddr,
    counters: Arc<Counters>,
    /// Server → client bottleneck in bit/s; 0 = none.
    rate_to_client: Arc<AtomicU64>,
    tasks: JoinSet<()>,
}

impl UdpRelay {
    /// Binds a loopback port that relays to `server`.
    ///
    /// # Errors
    /// The sockets could not be bound, or a loss probability is outside [0, 1].
    pub async fn start(server: SocketAddr, cfg: RelayConfig) -> std::io::Result<Self> {
        for p in [cfg.loss_to_server, cfg.loss_to_client] {
            if !(0.0..=1.0).contains(&p) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("loss probability {p} is outside [0, 1]"),
                ));
            }
        }
        let front = Arc::new(UdpSocket::bind((server.ip(), 0)).await?);
        let back = Arc::new(UdpSocket::bind((server.ip(), 0)).await?);
        back.connect(server).await?;
        let local = front.local_addr()?;
        let counters = Arc::new(Counters::default());
        let rate_to_client = Arc::new(AtomicU64::new(0));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let mut tasks = JoinSet::new();

        let (up_tx, up_rx) = mpsc::channel(QUEUE_LIMIT);
        let (down_tx, down_rx) = mpsc::channel(QUEUE_LIMIT);
        {
            let (front, client, counters) = (front.clone(), client.clone(), counters.clone());
            let mut rng = SplitMix64(cfg.seed);
            tasks.spawn(async move {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    *client.lock().unwrap_or_else(PoisonError::into_inner) = Some(from);
                    let keep = !rng.chance(cfg.loss_to_server)
                        && up_tx
                            .try_send((Instant::now() + cfg.delay, buf[..n].to_vec()))
                            .is_ok();
                    if !keep {
                        counters.dropped_to_server.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        {
            let (back, counters) = (back.clone(), counters.clone());
            tasks.spawn(forward(up_rx, move |bytes| {
                let back = back.clone();
                let counters = counters.clone();
                async move {
                    if back.send(&bytes).await.is_ok() {
                        counters.to_server.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        {
            let (back, counters) = (back.clone(), counters.clone());
            let rate = Arc::clone(&rate_to_client);
            let mut rng = SplitMix64(cfg.seed ^ 0x9E37_79B9_7F4A_7C15);
            tasks.spawn(async move {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                // When the bottleneck has sent everything queued so far.
                let mut free_at = Instant::now();
                loop {
                    // A server port that is not up yet answers with ICMP: keep listening.
                    let n = match back.recv(&mut buf).await {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                        Err(_) => break,
                    };
                    let now = Instant::now();
                    let bps = rate.load(Ordering::Relaxed);
                    let leaves = if bps == 0 {
                        free_at = now;
                        Some(now)
                    } else {
                        let start = free_at.max(now);
                        (start - now <= BOTTLENECK_BUFFER).then(|| {
                            free_at = start + Duration::from_secs_f64(n as f64 * 8.0 / bps as f64);
                            free_at
                        })
                    };
                    let keep = !rng.chance(cfg.loss_to_client)
                        && leaves.is_some_and(|t| {
                            down_tx.try_send((t + cfg.delay, buf[..n].to_vec())).is_ok()
                        });
                    if !keep {
                        counters.dropped_to_client.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        {
            let counters = counters.clone();
            tasks.spawn(forward(down_rx, move |bytes| {
                let front = front.clone();
                let counters = counters.clone();
                let to = *client.lock().unwrap_or_else(PoisonError::into_inner);
                async move {
                    if let Some(to) = to
                        && front.send_to(&bytes, to).await.is_ok()
                    {
                        counters.to_client.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        Ok(Self {
            local,
            counters,
            rate_to_client,
            tasks,
        })
    }

    /// The address clients send to instead of the server's.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Limits the server → client direction to `kbps` kbit/s (`None`: no limit) from now on,
    /// with a drop-tail buffer of [`BOTTLENECK_BUFFER`].
    pub fn set_rate_to_client(&self, kbps: Option<u32>) {
        let bps = kbps.map_or(0, |k| u64::from(k.max(1)) * 1000);
        self.rate_to_client.store(bps, Ordering::Relaxed);
    }

    /// Datagrams forwarded and dropped so far.
    #[must_use]
    pub fn counters(&self) -> RelayCounters {
        let c = &self.counters;
        RelayCounters {
            to_server: c.to_server.load(Ordering::Relaxed),
            dropped_to_server: c.dropped_to_server.load(Ordering::Relaxed),
            to_client: c.to_client.load(Ordering::Relaxed),
            dropped_to_client: c.dropped_to_client.load(Ordering::Relaxed),
        }
    }

    /// Stops relaying and waits for the relay's tasks to end.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Sends each queued datagram once its time has come (the queue is in time order, since every
/// datagram of a direction gets the same delay).
async fn forward<F, Fut>(mut rx: mpsc::Receiver<(Instant, Vec<u8>)>, send: F)
where
    F: Fn(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    while let Some((due, bytes)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        send(bytes).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_draws_are_seeded_and_near_their_rate() {
        let draw = |seed| {
            let mut r = SplitMix64(seed);
            (0..100_000).filter(|_| r.chance(0.02)).count()
        };
        assert_eq!(draw(7), draw(7));
        let n = draw(7);
        assert!((1_700..2_300).contains(&n), "{n} losses of 100000 at 2 %");
    }
}
