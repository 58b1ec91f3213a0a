//! `session-broker run`: the broker's HTTP API over its store (embedded redb, or etcd shared
//! with other brokers), until SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use edgeplay_broker::ratelimit::RateLimit;
use edgeplay_broker::routes;
use edgeplay_broker::service::table::Lifecycle;
use edgeplay_broker::state::Config;
use edgeplay_broker::store::etcd::{EtcdStore, EtcdUrl};
use edgeplay_broker::store::{BrokerEntry, RedbStore, Store};
use edgeplay_broker::tokens::BrokerKey;
use edgeplay_protocol::token::to_hex;

#[derive(Debug, Parser)]
#[command(
    name = "session-broker",
    version,
    about = "The edgeplay session broker"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve the HTTP API until SIGTERM or Ctrl-C.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Address to listen on (port 0 picks a free one; the chosen address is printed).
    #[arg(long, env = "BROKER_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Where the store (`broker.redb`) and the signing key (`broker.key`) live.
    #[arg(long, env = "BROKER_DATA_DIR", default_value = "./broker-data")]
    data_dir: PathBuf,
    /// `redb` (the embedded store in the data dir, one broker) or
    /// `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]` (shared by every broker with the same URL; they
    /// must also share `broker.key`, so that edges accept any of their join tokens).
    #[arg(long, env = "BROKER_STORE", default_value = "redb")]
    store: String,
    /// Pages of the redb store kept in memory, in MiB (the rest is read through the operating
    /// system's file cache); bounds the broker's resident memory. Ignored with etcd.
    #[arg(long, env = "BROKER_STORE_CACHE_MIB", default_value_t = RedbStore::DEFAULT_CACHE_MIB, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
    store_cache_mib: usize,
    /// The URL edges and players reach this broker at, listed by `GET /v1/brokers`
    /// (default `http://` + the listening address).
    #[arg(long, env = "BROKER_ADVERTISE")]
    advertise: Option<String>,
    /// Session requests a player name may burst.
    #[arg(long, env = "BROKER_RATE_BURST", default_value_t = 20.0)]
    rate_burst: f64,
    /// Session requests per second a player name may sustain.
    #[arg(long, env = "BROKER_RATE_PER_SEC", default_value_t = 5.0)]
    rate_per_sec: f64,
    /// Session requests one IP address may burst (players behind one NAT share it).
    #[arg(long, env = "BROKER_IP_RATE_BURST", default_value_t = 200.0)]
    ip_rate_burst: f64,
    /// Session requests per second one IP address may sustain.
    #[arg(long, env = "BROKER_IP_RATE_PER_SEC", default_value_t = 50.0)]
    ip_rate_per_sec: f64,
    /// How often each linked edge is sent peer edges to measure its network coordinate against
    /// (ms).
    #[arg(long, env = "BROKER_PEERS_EVERY_MS", default_value_t = edgeplay_protocol::link::PEERS_EVERY_MS, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    peers_every_ms: u64,
    /// A session nobody selects within this many seconds of its creation ends (`not_placed`).
    #[arg(long, env = "BROKER_SESSION_IDLE_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    session_idle_secs: u64,
    /// A running session ends at this age (seconds): the broker tells its edge to end it.
    #[arg(long, env = "BROKER_SESSION_MAX_SECS", default_value_t = 4 * 3600, value_parser = clap::value_parser!(u64).range(1..=30 * 86_400))]
    session_max_secs: u64,
    /// Summaries of ended sessions are kept this many seconds.
    #[arg(long, env = "BROKER_SUMMARY_KEEP_SECS", default_value_t = 7 * 86_400, value_parser = clap::value_parser!(u64).range(1..=366 * 86_400))]
    summary_keep_secs: u64,
    /// At most this many summaries are kept (the oldest go first).
    #[arg(long, env = "BROKER_SUMMARY_MAX", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    summary_max: u64,
    /// Serve the built web player (`client-sdk/web/dist`) from this directory at `/play/`, so
    /// that `http://BROKER/play/?broker=http://BROKER` is all a player opens.
    #[arg(long, env = "BROKER_PLAYER_DIR")]
    player_dir: Option<PathBuf>,
}

enum Backend {
    Redb(Arc<RedbStore>),
    Etcd(Arc<EtcdStore>),
}

impl Backend {
    fn store(&self) -> Arc<dyn Store> {
        match self {
            Backend::Redb(s) => s.clone(),
            Backend::Etcd(s) => s.clone(),
        }
    }

    async fn close(self) {
        match self {
            Backend::Redb(s) => match Arc::try_unwrap(s) {
                Ok(s) => s.close().await,
                Err(_) => {
                    tracing::warn!("store still shared at exit; pending writes were committed");
                }
            },
            Backend::Etcd(s) => s.close().await,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let Cmd::Run(args) = Cli::parse().cmd;
    let key = BrokerKey::load_or_create(&args.data_dir)?;
    let backend = if args.store == "redb" {
        Backend::Redb(Arc::new(RedbStore::open_with_cache(
            &args.data_dir,
            args.store_cache_mib,
        )?))
    } else {
        let url: EtcdUrl = args.store.parse()?;
        Backend::Etcd(Arc::new(EtcdStore::connect(&url).await?))
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}: pick another --listen", args.listen))?;
    let addr = listener.local_addr()?;
    // An id per run: brokers sharing an etcd share the key, so the key cannot name them.
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).context("no randomness for the broker id")?;
    let me = BrokerEntry {
        id: to_hex(&raw),
        url: args.advertise.unwrap_or_else(|| format!("http://{addr}")),
    };
    backend.store().announce(me.clone()).await?;
    let router = routes::app(Config {
        store: backend.store(),
        key: key.clone(),
        rate: RateLimit {
            burst: args.rate_burst,
            per_sec: args.rate_per_sec,
            ip_burst: args.ip_rate_burst,
            ip_per_sec: args.ip_rate_per_sec,
        },
        peers_every: std::time::Duration::from_millis(args.peers_every_ms),
        lifecycle: Lifecycle {
            idle: Duration::from_secs(args.session_idle_secs),
            max_duration: Duration::from_secs(args.session_max_secs),
            keep_summaries: Duration::from_secs(args.summary_keep_secs),
            max_summaries: args.summary_max,
        },
    })
    .await?;
    let router = match &args.player_dir {
        Some(dir) => router.merge(routes::player::routes(dir.clone())),
        None => router,
    };
    tracing::info!(%addr, id = %me.id, store = %args.store, key = %to_hex(key.public().as_bytes()), "broker listening");
    println!("listening on {addr}");
    if args.player_dir.is_some() {
        println!("player on {0}/play/?broker={0}", me.url);
    }
    routes::serve(listener, router, routes::shutdown_signal()).await?;
    // The router (and its clone of the store) is gone once serve returns.
    backend.close().await;
    tracing::info!("broker stopped");
    Ok(())
}
