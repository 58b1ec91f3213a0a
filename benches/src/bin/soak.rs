//! `cargo xtask bench soak`: the broker under a steady churn of sessions for minutes, to show
//! that it stays flat: its resident memory, its live table and its store stop growing once the
//! summaries reach their cap, and its latency in the last window is what it was in the first.
//!
//! The run starts with a warm-up under the same load, not counted: until the summaries reach
//! their cap (`--summary-max` / `--rate` seconds) and the deadline-ended lives flow, plus half a
//! minute (`--warmup S` overrides it). Before that the broker is not yet in its steady state
//! (an empty store, nothing pruned), and "flat" and "as fast as at the start" compare against
//! the steady state.
//!
//! A release `session-broker run` on loopback (redb in a temp dir, or a fresh etcd), `--edges`
//! signed edges registered over HTTP and heartbeating every 5 s, and `--rate` session lives per
//! second started open loop: life i is due at start + i / rate whatever happened to the earlier
//! ones. A life is `POST /v1/sessions` (a fresh player at a random coordinate), then
//! `POST /v1/sessions/{id}/select` (the first candidate at 5 ms), then the chosen edge's signed
//! `POST /v1/edges/{id}/ended` (the player left after a second): each request is sent as soon as
//! the previous one answered. One life in twenty is only created (the broker ends it
//! `not_placed` after `--session-idle-secs 10`) and one in twenty only created and selected (it
//! ends `not_joined` 40 s after its token was minted), so the sweep works too. The broker keeps
//! at most `--summary-max` summaries.
//!
//! Every 5 s the bench samples the broker's resident memory (VmRSS), `broker_sessions_live`,
//! `broker_session_summaries`, the store's size and the load average. It prints, per window (a
//! tenth of the run; a minute in the default 10-minute run), the requests answered, their
//! p50/p99 (a create's latency counts from its due time; a select's and an end's from their own
//! send), non-2xx answers and the samples at the window's end; then the targets: memory and live
//! table flat within 10 % over the last half, summaries at their cap, p99 of the last window
//! within 1.2× that of the first. The windows and the halves are of the measured run, after the
//! warm-up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use edgeplay_benches::broker_proc::{
    Blocking, Heartbeats, Http, TempDir, build_broker, client, dir_size, exchange, load, load_avg,
    metric, mib, now_ms, pct, register_edges, request_to, start, thousands,
};
use edgeplay_broker::requests::{ENDED_DOMAIN, sign_body};
use edgeplay_game::hash::SplitMix64;
use edgeplay_protocol::token::{EdgeId, SigningKey};
use edgeplay_testkit::etcd::Etcd;
use hyper::Method;
use serde_json::{Value, json};

const USAGE: &str = "flags: --edges N (10000) --rate R sessions/s (500) --seconds S (600, 30..=3600) \
                     --summary-max N (rate x seconds / 4, at most 100000) --warmup S (summary-max / \
                     rate + 30, at most 600) --store redb|etcd (redb)";
/// Warm-up beyond the time the summaries take to reach their cap: the lives left to the
/// broker's deadlines end up to 40 s after they start.
const WARMUP_MARGIN_S: u64 = 30;
/// Lives in flight at most; one due while this many are open is counted as not started.
const MAX_IN_FLIGHT: usize = 4096;
/// A request without an answer after this long counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the broker and the machine are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How long an offered session waits for a select before the broker ends it.
const IDLE_SECS: &str = "10";

struct Args {
    edges: usize,
    rate: u32,
    seconds: u64,
    summary_max: u64,
    /// Seconds of warm-up before the measured run.
    warmup: u64,
    store: String,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        edges: 10_000,
        rate: 500,
        seconds: 600,
        summary_max: 0,
        warmup: 0,
        store: "redb".into(),
    };
    let mut warmup = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| anyhow!("{flag} needs a value; {USAGE}"))?;
        let num = || {
            v.parse::<u64>()
                .with_context(|| format!("{flag} {v}: not a whole number"))
        };
        match flag.as_str() {
            "--edges" => a.edges = usize::try_from(num()?)?,
            "--rate" => a.rate = u32::try_from(num()?)?,
            "--seconds" => a.seconds = num()?,
            "--summary-max" => a.summary_max = num()?,
            "--warmup" => warmup = Some(num()?.min(600)),
            "--store" => a.store.clone_from(&v),
            _ => bail!("unknown flag {flag}; {USAGE}"),
        }
    }
    if !(30..=3600).contains(&a.seconds) || !(1..=5000).contains(&a.rate) || a.edges == 0 {
        bail!("--seconds: 30 to 3600, --rate: 1 to 5000, --edges: at least 1; {USAGE}");
    }
    if !matches!(a.store.as_str(), "redb" | "etcd") {
        bail!("--store: redb or etcd; {USAGE}");
    }
    if a.summary_max == 0 {
        a.summary_max = (u64::from(a.rate) * a.seconds / 4).clamp(1, 100_000);
    }
    a.warmup =
        warmup.unwrap_or_else(|| (a.summary_max / u64::from(a.rate) + WARMUP_MARGIN_S).min(600));
    Ok(a)
}

/// One answered (or failed) request.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// When it ended, ms since the start.
    at_ms: u64,
    latency_us: u32,
    ok: bool,
}

/// What the lives share.
struct Load {
    addr: SocketAddr,
    http: Http,
    keys: HashMap<String, SigningKey>,
    start: Instant,
    samples: Mutex<Vec<Sample>>,
}

impl Load {
    fn record(&self, from: Instant, ok: bool) {
        let now = Instant::now();
        let s = Sample {
            at_ms: u64::try_from(now.duration_since(self.start).as_millis()).unwrap_or(u64::MAX),
            latency_us: u32::try_from(now.duration_since(from).as_micros()).unwrap_or(u32::MAX),
            ok,
        };
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(s);
    }

    /// One request; its JSON answer when the status is `want`, recorded from `from`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: String,
        want: u16,
        from: Instant,
    ) -> Option<Value> {
        let req = request_to(self.addr, method, path, body).ok()?;
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, exchange(&self.http, req)).await;
        let ok = matches!(&answer, Ok(Ok((s, _))) if *s == want);
        self.record(from, ok);
        match answer {
            Ok(Ok((s, bytes))) if s == want => serde_json::from_slice(&bytes).ok(),
            _ => None,
        }
    }
}

/// Session life `i`, due at `due`.
async fn life(load: Arc<Load>, i: u64, due: Instant) {
    let mut rng = SplitMix64(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let x = (rng.next_u64() % 200) as f64 - 100.0;
    let y = (rng.next_u64() % 200) as f64 - 100.0;
    let body = json!({"player": format!("soak-{i}"), "width": 1280, "height": 720, "fps": 60,
                      "coord": {"x": x, "y": y, "height": 1.0}});
    let Some(created) = load
        .call(Method::POST, "/v1/sessions", body.to_string(), 201, due)
        .await
    else {
        return;
    };
    if i.is_multiple_of(20) {
        return; // never selected: the broker ends it `not_placed`
    }
    let (Some(sid), Some(edge)) = (
        created["session"].as_str(),
        created["candidates"][0]["edge"].as_str(),
    ) else {
        return;
    };
    let sel = json!({"measured": [{"edge": edge, "rtt_ms": 5.0}]});
    let Some(placed) = load
        .call(
            Method::POST,
            &format!("/v1/sessions/{sid}/select"),
            sel.to_string(),
            200,
            Instant::now(),
        )
        .await
    else {
        return;
    };
    if i % 20 == 1 {
        return; // the player never joins: the broker ends it `not_joined`
    }
    let Some(key) = placed["edge"].as_str().and_then(|e| load.keys.get(e)) else {
        return;
    };
    let now = now_ms();
    let report = json!({"session": sid, "reason": "player_left",
                        "started_unix_ms": now.saturating_sub(1000), "duration_ms": 1000,
                        "frames": 60, "bytes": 100_000, "issued_unix_ms": now});
    let report = sign_body(ENDED_DOMAIN, report, key).to_string();
    let path = format!("/v1/edges/{}/ended", EdgeId(key.verifying_key().to_bytes()));
    load.call(Method::POST, &path, report, 200, Instant::now())
        .await;
}

/// The broker and the machine at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Snapshot {
    at_s: u64,
    rss: Option<u64>,
    live: Option<u64>,
    summaries: Option<u64>,
    store: Option<u64>,
    load: Option<f64>,
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix(" kB"))?;
    kib.trim().parse::<u64>().ok().map(|k| k * 1024)
}

/// The broker (process `pid`, listening on `addr`) and the machine now.
fn snapshot(http: &Blocking, pid: u32, addr: SocketAddr, store: &Store, at_s: u64) -> Snapshot {
    Snapshot {
        at_s,
        rss: rss_of(pid),
        live: metric(http, addr, "broker_sessions_live"),
        summaries: metric(http, addr, "broker_session_summaries"),
        store: match store {
            Store::Redb(dir) => Some(dir_size(dir)),
            Store::Etcd(addr) => metric(http, *addr, "etcd_mvcc_db_total_size_in_bytes"),
        },
        load: load_avg(),
    }
}

enum Store {
    Redb(PathBuf),
    Etcd(SocketAddr),
}

/// `(max - min) / min` of `values`, if there are any.
fn spread(values: &[u64]) -> Option<f64> {
    let (min, max) = (*values.iter().min()?, *values.iter().max()?);
    Some((max - min) as f64 / (min.max(1)) as f64)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

#[allow(
    clippy::too_many_lines,
    reason = "the run and its report read best in one piece"
)]
fn main() -> Result<()> {
    let a = parse_args()?;
    let bin = build_broker()?;
    let tmp =
        TempDir(std::env::temp_dir().join(format!("edgeplay-bench-soak-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&tmp.0);
    std::fs::create_dir_all(&tmp.0).with_context(|| format!("create {}", tmp.0.display()))?;
    println!(
        "soak bench: {} session lives/s for {} s against a release session-broker ({} store) on \
         127.0.0.1 with {} signed edges heartbeating every 5 s; a life is create → select → the \
         edge's signed end report (1 in 20 only created, 1 in 20 only created and selected, left \
         to the broker's deadlines); summaries capped at {}; after a warm-up of {} s under the \
         same load, not counted.",
        a.rate, a.seconds, a.store, a.edges, a.summary_max, a.warmup
    );
    println!(
        "machine: {}; load average at start {}",
        edgeplay_benches::machine(),
        load(load_avg())
    );
    let etcd = if a.store == "etcd" {
        Some(Etcd::start().map_err(|e| anyhow!("{e}"))?)
    } else {
        None
    };
    let (url, store) = match &etcd {
        Some(e) => (e.store_url("soak"), Store::Etcd(e.addr())),
        None => ("redb".to_owned(), Store::Redb(tmp.0.clone())),
    };
    let cap = a.summary_max.to_string();
    let broker = start(
        &bin,
        &tmp.0,
        &url,
        &["--summary-max", &cap, "--session-idle-secs", IDLE_SECS],
    )?;
    let setup = Blocking::pooled(4)?;
    let t = Instant::now();
    let keys = register_edges(&setup, broker.addr, a.edges)?;
    println!(
        "{} edges registered in {:.1} s",
        a.edges,
        t.elapsed().as_secs_f64()
    );
    let by_id: HashMap<String, SigningKey> = keys
        .iter()
        .map(|k| (EdgeId(k.verifying_key().to_bytes()).to_string(), k.clone()))
        .collect();
    let heartbeats = Heartbeats::start(broker.addr, keys);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start tokio")?;
    let load_state = Arc::new(Load {
        addr: broker.addr,
        http: client(512),
        keys: by_id,
        start: Instant::now(),
        samples: Mutex::new(Vec::new()),
    });
    // The sampler, on a thread of its own.
    let snapshots = Arc::new(Mutex::new(Vec::<Snapshot>::new()));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (snaps, on) = (Arc::clone(&snapshots), Arc::clone(&sampling));
        let (addr, pid) = (broker.addr, broker.child.id());
        let start = load_state.start;
        let store = match &store {
            Store::Redb(d) => Store::Redb(d.clone()),
            Store::Etcd(a) => Store::Etcd(*a),
        };
        std::thread::spawn(move || -> Result<()> {
            let http = Blocking::pooled(1)?;
            while on.load(Ordering::Relaxed) {
                let s = snapshot(&http, pid, addr, &store, start.elapsed().as_secs());
                snaps.lock().unwrap_or_else(PoisonError::into_inner).push(s);
                std::thread::sleep(SAMPLE_EVERY);
            }
            Ok(())
        })
    };
    let not_started = Arc::new(AtomicU64::new(0));
    let run = Duration::from_secs(a.warmup + a.seconds);
    rt.block_on({
        let load = Arc::clone(&load_state);
        let not_started = Arc::clone(&not_started);
        let rate = f64::from(a.rate);
        async move {
            let mut lives = tokio::task::JoinSet::new();
            for i in 0u64.. {
                let due = load.start + Duration::from_secs_f64(i as f64 / rate);
                if due.duration_since(load.start) >= run {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                while lives.try_join_next().is_some() {}
                if lives.len() >= MAX_IN_FLIGHT {
                    not_started.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                lives.spawn(life(Arc::clone(&load), i, due));
            }
            while lives.join_next().await.is_some() {}
        }
    });
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let (beats_ok, beats_bad) = heartbeats.counts();
    drop(heartbeats);

    // ---- the report ----
    let samples = load_state
        .samples
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let snaps = snapshots
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let windows = 10u64;
    let width_ms = a.seconds * 1000 / windows;
    let warm_ms = a.warmup * 1000;
    let warm_end = snaps
        .iter()
        .rev()
        .find(|s| s.at_s * 1000 <= warm_ms)
        .copied()
        .unwrap_or_default();
    println!(
        "\nwarm-up: {} s, {} answers; at its end: broker RSS {}, {} live sessions, {} summaries, store {}",
        a.warmup,
        thousands(samples.iter().filter(|s| s.at_ms < warm_ms).count() as u64),
        warm_end.rss.map_or_else(|| "n/a".into(), mib),
        warm_end.live.map_or_else(|| "n/a".into(), thousands),
        warm_end.summaries.map_or_else(|| "n/a".into(), thousands),
        warm_end.store.map_or_else(|| "n/a".into(), mib),
    );
    println!(
        "\nper window of {} s (p50/p99 over every answer in it; samples at its end):",
        width_ms / 1000
    );
    println!(
        "| window | answers | p50 | p99 | non-2xx | broker RSS | live sessions | summaries | store | load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut p99s = Vec::new();
    for w in 0..windows {
        let (lo, hi) = (warm_ms + w * width_ms, warm_ms + (w + 1) * width_ms);
        let mut lat: Vec<u32> = samples
            .iter()
            .filter(|s| (lo..hi).contains(&s.at_ms))
            .map(|s| s.latency_us)
            .collect();
        lat.sort_unstable();
        let bad = samples
            .iter()
            .filter(|s| (lo..hi).contains(&s.at_ms) && !s.ok)
            .count();
        let snap = snaps
            .iter()
            .rev()
            .find(|s| s.at_s * 1000 <= hi)
            .copied()
            .unwrap_or_default();
        let opt = |v: Option<u64>, f: fn(u64) -> String| v.map_or_else(|| "n/a".into(), f);
        p99s.push(pct(&lat, 99.0));
        println!(
            "| {}–{} s | {} | {:.2} ms | {:.2} ms | {} | {} | {} | {} | {} | {} |",
            (lo - warm_ms) / 1000,
            (hi - warm_ms) / 1000,
            thousands(lat.len() as u64),
            f64::from(pct(&lat, 50.0)) / 1000.0,
            f64::from(pct(&lat, 99.0)) / 1000.0,
            bad,
            opt(snap.rss, mib),
            opt(snap.live, thousands),
            opt(snap.summaries, thousands),
            opt(snap.store, mib),
            load(snap.load),
        );
    }
    let half: Vec<&Snapshot> = snaps
        .iter()
        .filter(|s| s.at_s * 2 >= a.warmup * 2 + a.seconds)
        .collect();
    let rss: Vec<u64> = half.iter().filter_map(|s| s.rss).collect();
    let live: Vec<u64> = half.iter().filter_map(|s| s.live).collect();
    let last_summaries = snaps.iter().rev().find_map(|s| s.summaries).unwrap_or(0);
    let measured: Vec<&Sample> = samples.iter().filter(|s| s.at_ms >= warm_ms).collect();
    let answered = measured.len();
    let failed = measured.iter().filter(|s| !s.ok).count();
    println!(
        "\nmeasured run: {} requests answered, {failed} not 2xx or timed out; whole run: {} lives not started (over {MAX_IN_FLIGHT} in flight); heartbeats {beats_ok} ok, {beats_bad} failed",
        thousands(answered as u64),
        not_started.load(Ordering::Relaxed)
    );
    let rss_spread = spread(&rss);
    let live_spread = spread(&live);
    let ratio = match (p99s.first(), p99s.last()) {
        (Some(&f), Some(&l)) if f > 0 => Some(f64::from(l) / f64::from(f)),
        _ => None,
    };
    let pctf = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |v| format!("{:.1} %", v * 100.0));
    println!("targets:");
    println!(
        "  broker RSS over the last half: {} – {} (spread {}, target ≤ 10 %): {}",
        rss.iter().min().map_or_else(|| "n/a".into(), |v| mib(*v)),
        rss.iter().max().map_or_else(|| "n/a".into(), |v| mib(*v)),
        pctf(rss_spread),
        verdict(rss_spread.is_some_and(|s| s <= 0.10))
    );
    println!(
        "  live sessions over the last half: {} – {} (spread {}, target ≤ 10 %): {}",
        live.iter().min().copied().unwrap_or(0),
        live.iter().max().copied().unwrap_or(0),
        pctf(live_spread),
        verdict(live_spread.is_some_and(|s| s <= 0.10))
    );
    // The broker prunes every 100 ms; the count may be over the cap by a second's ends (the
    // sample and the pass are not in step).
    let slack = u64::from(a.rate) * 2;
    println!(
        "  summaries at the end: {} of a cap of {} (pruned every 100 ms; up to {slack} over allowed): {}",
        thousands(last_summaries),
        thousands(a.summary_max),
        verdict(last_summaries + slack >= a.summary_max && last_summaries <= a.summary_max + slack)
    );
    println!(
        "  p99 last window / first window: {} (target ≤ 1.2): {}",
        ratio.map_or_else(|| "n/a".into(), |r| format!("{r:.2}")),
        verdict(ratio.is_some_and(|r| r <= 1.2))
    );
    println!("load average at end: {}", load(load_avg()));
    drop(broker);
    drop(etcd);
    Ok(())
}
