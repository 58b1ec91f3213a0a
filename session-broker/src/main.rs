//! `session-broker run`: the broker's HTTP API over the embedded store, until SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use edgeplay_broker::api::{self, Config, RateLimit};
use edgeplay_broker::store::RedbStore;
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
    /// Session requests a player may burst.
    #[arg(long, env = "BROKER_RATE_BURST", default_value_t = 20.0)]
    rate_burst: f64,
    /// Session requests per second a player may sustain.
    #[arg(long, env = "BROKER_RATE_PER_SEC", default_value_t = 5.0)]
    rate_per_sec: f64,
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
    let store = Arc::new(RedbStore::open(&args.data_dir)?);
    let router = api::app(Config {
        store: store.clone(),
        key: key.clone(),
        rate: RateLimit {
            burst: args.rate_burst,
            per_sec: args.rate_per_sec,
        },
    })
    .await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}: pick another --listen", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, key = %to_hex(key.public().as_bytes()), "broker listening");
    println!("listening on {addr}");
    api::serve(listener, router, api::shutdown_signal()).await?;
    // The router (and its clone of the store) is gone once serve returns.
    match Arc::try_unwrap(store) {
        Ok(store) => store.close().await,
        Err(_) => tracing::warn!("store still shared at exit; pending writes were committed"),
    }
    tracing::info!("broker stopped");
    Ok(())
}
