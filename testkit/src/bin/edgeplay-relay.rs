//! `edgeplay-relay --to HOST:PORT --delay-ms MS [--loss P] [--listen-ip IP]`: testkit's UDP
//! relay as a process, for putting a region's worth of delay (and loss) in front of an edge's
//! QUIC port or UDP echo outside the tests (`cargo xtask demo` does). Prints `relay on ADDR`,
//! then relays until SIGTERM or Ctrl-C, and prints its counters when it stops.
//!
//! One client at a time: the relay answers the address it last heard from.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use edgeplay_testkit::relay::{RelayConfig, UdpRelay};

const USAGE: &str = "usage: edgeplay-relay --to HOST:PORT --delay-ms MS [--loss P]";

fn parse(args: &[String]) -> Result<(SocketAddr, RelayConfig), String> {
    let mut to = None;
    let mut cfg = RelayConfig::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--to" => {
                to = Some(value.parse().map_err(|_| {
                    format!("--to `{value}`: expected HOST:PORT, e.g. 127.0.0.1:4433")
                })?);
            }
            "--delay-ms" => {
                let ms: u64 = value
                    .parse()
                    .ok()
                    .filter(|ms| *ms <= 10_000)
                    .ok_or_else(|| format!("--delay-ms `{value}`: 0 to 10000"))?;
                cfg.delay = Duration::from_millis(ms);
            }
            "--loss" => {
                let p: f64 = value
                    .parse()
                    .ok()
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or_else(|| format!("--loss `{value}`: a probability from 0 to 1"))?;
                cfg.loss_to_server = p;
                cfg.loss_to_client = p;
            }
            other => return Err(format!("unknown flag `{other}`\n{USAGE}")),
        }
    }
    let to = to.ok_or_else(|| format!("--to is required\n{USAGE}"))?;
    Ok((to, cfg))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (to, cfg) = match parse(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("edgeplay-relay: {e}");
            return ExitCode::from(2);
        }
    };
    let relay = match UdpRelay::start(to, cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("edgeplay-relay: cannot start a relay to {to}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("relay on {}", relay.local_addr());
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("edgeplay-relay: cannot watch SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let c = relay.counters();
    relay.stop().await;
    eprintln!("edgeplay-relay: stopped; {c:?}");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        let a = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let (to, cfg) = parse(&a("--to 127.0.0.1:9 --delay-ms 40 --loss 0.02")).unwrap();
        assert_eq!(to, "127.0.0.1:9".parse().unwrap());
        assert_eq!(cfg.delay, Duration::from_millis(40));
        assert!((cfg.loss_to_client - 0.02).abs() < 1e-12);
        for bad in [
            "",
            "--to x",
            "--to 127.0.0.1:9 --delay-ms -1",
            "--to 127.0.0.1:9 --loss 2",
            "--to 127.0.0.1:9 --delay-ms",
            "--to 127.0.0.1:9 --bogus 1",
        ] {
            assert!(parse(&a(bad)).is_err(), "{bad}");
        }
    }
}
