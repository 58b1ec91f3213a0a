//! `cargo xtask bench broker`: the broker's HTTP path under an open-loop load generator.
//!
//! Starts a release `session-broker run` on loopback (per store: redb in a temp dir, then a fresh
//! etcd from testkit), raises its rate limits (one address, many names) and registers `--edges`
//! signed edges spread over the coordinate plane. Every request then POSTs `/v1/sessions` with a
//! fresh player name and a random coordinate, so each is a placement plus a durable session write
//! (group commit on redb, one put on etcd).
//!
//! Phase 1 (capacity, closed loop): `--connections` keep-alive connections send back to back for
//! `--capacity-seconds`; C is the rate of 201 answers. Phase 2 (open loop): for each fraction of C
//! in `--rates`, request i is due at start + i / rate whatever happened to the earlier ones, and
//! goes out on the first free connection of the same pool. Its latency runs from that intended
//! time to the end of its response, so time spent queued (a busy pool, a slow broker) counts: no
//! coordinated omission. Service time (actual write → response) is kept beside it for contrast.
//! The generator is a tokio runtime in this process, on the cores the broker (and etcd) use; its
//! HTTP/1.1 client is hyper-util's legacy client, whose pool is filled with `--connections`
//! keep-alive connections before each phase starts. Setup, the edges' heartbeats and the
//! metrics reads use the same client, one connection per call, on runtimes of their own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use edgeplay_benches::broker_proc::{
    Blocking, Broker, HEARTBEAT_EVERY, Heartbeats, Http, TempDir, build_broker, client, dir_size,
    exchange, load, load_avg, metric, mib, ms, pct, register_edges, request_to, start, thousands,
};
use edgeplay_game::hash::SplitMix64;
use edgeplay_testkit::etcd::Etcd;
use http_body_util::Full;
use hyper::{Method, Request};

/// After a phase's last due time, how long late requests may still be sent and answered.
const DRAIN: Duration = Duration::from_secs(5);
/// A request without an answer after this long counts as a socket error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Width of the windows the p99 timeline is cut into.
const WINDOW_SECS: u64 = 10;

const USAGE: &str = "flags: --edges N (1000) --seconds S (60, 1..=600) --capacity-seconds S (10) \
                     --connections C (32) --rates 0.5,0.8,1.0 --store redb|etcd|both (both)";

struct Args {
    edges: usize,
    seconds: u64,
    capacity_seconds: u64,
    connections: usize,
    rates: Vec<f64>,
    stores: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        edges: 1000,
        seconds: 60,
        capacity_seconds: 10,
        connections: 32,
        rates: vec![0.5, 0.8, 1.0],
        stores: vec!["redb".into(), "etcd".into()],
    };
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
            "--seconds" => a.seconds = num()?,
            "--capacity-seconds" => a.capacity_seconds = num()?,
            "--connections" => a.connections = usize::try_from(num()?)?,
            "--rates" => {
                let rate = |r: &str| r.trim().parse().ok().filter(|r| (0.0..=10.0).contains(r));
                let rates: Option<Vec<f64>> = v.split(',').map(rate).collect();
                a.rates = rates.filter(|r| !r.contains(&0.0)).ok_or_else(|| {
                    anyhow!("--rates {v}: fractions of C in (0, 10], e.g. 0.5,0.8,1.0")
                })?;
            }
            "--store" => {
                a.stores = match v.as_str() {
                    "both" => vec!["redb".into(), "etcd".into()],
                    "redb" | "etcd" => vec![v],
                    _ => bail!("--store {v}: redb, etcd or both"),
                };
            }
            _ => bail!("unknown flag {flag}; {USAGE}"),
        }
    }
    if !(1..=600).contains(&a.seconds) || !(1..=120).contains(&a.capacity_seconds) {
        bail!("--seconds: 1 to 600, --capacity-seconds: 1 to 120 (the run is bounded)");
    }
    if a.edges == 0 || !(1..=4096).contains(&a.connections) {
        bail!("--edges: at least 1 (placement needs edges), --connections: 1 to 4096");
    }
    Ok(a)
}

enum Store {
    Redb(PathBuf),
    Etcd(SocketAddr),
}

/// The store's size in bytes (redb: its data dir; etcd: its db size), the sessions the broker
/// has created and its resident memory in bytes, at one moment.
fn growth(http: &Blocking, broker: &Broker, store: &Store) -> [Option<u64>; 3] {
    let status = std::fs::read_to_string(format!("/proc/{}/status", broker.child.id()));
    let rss = status.ok().and_then(|s| {
        let kib = s
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix(" kB"));
        kib?.trim().parse::<u64>().ok().map(|k| k * 1024)
    });
    let bytes = match store {
        Store::Redb(dir) => Some(dir_size(dir)),
        Store::Etcd(addr) => metric(http, *addr, "etcd_mvcc_db_total_size_in_bytes"),
    };
    [
        bytes,
        metric(http, broker.addr, "broker_sessions_total"),
        rss,
    ]
}

fn print_growth(b: [Option<u64>; 3], a: [Option<u64>; 3]) {
    let v = |x: Option<u64>, f: fn(u64) -> String| x.map_or_else(|| "n/a".into(), f);
    println!(
        "  store {} → {}; sessions created {} → {}; broker RSS {} → {}",
        v(b[0], mib),
        v(a[0], mib),
        v(b[1], thousands),
        v(a[1], thousands),
        v(b[2], mib),
        v(a[2], mib)
    );
}

// ---- the load generator ----

/// One phase's schedule, shared by the connection workers.
struct Plan {
    addr: SocketAddr,
    /// Player-name prefix and coordinate seed, unique per store and phase.
    tag: String,
    seed: u64,
    start: Instant,
    /// Closed loop: when to stop sending. Open loop: the end of the schedule.
    end: Instant,
    /// Nothing is sent or awaited after this (end + DRAIN).
    cutoff: Instant,
    /// `None`: closed loop. `Some(rate)`: request i is due at start + i / rate.
    rate: Option<f64>,
    scheduled: u64,
    next: AtomicU64,
}

struct Sample {
    window: usize,
    latency_us: u32,
    service_us: u32,
}

#[derive(Default)]
struct Tally {
    samples: Vec<Sample>,
    statuses: BTreeMap<u16, u64>,
    sent: u64,
    errors: u64,
    first_error: Option<String>,
    cut_off: u64,
    last_done: Option<Instant>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.samples.extend(o.samples);
        for (s, n) in o.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.sent += o.sent;
        self.errors += o.errors;
        self.first_error = self.first_error.take().or(o.first_error);
        self.cut_off += o.cut_off;
        self.last_done = self.last_done.max(o.last_done);
    }
}

fn request(plan: &Plan, i: u64) -> Result<Request<Full<Bytes>>> {
    let mut rng = SplitMix64((plan.seed << 40) ^ i);
    let (x, y, tag) = (rng.range(-100, 100), rng.range(-100, 100), &plan.tag);
    let body = format!(
        r#"{{"player":"bench-{tag}-{i}","coord":{{"x":{x},"y":{y},"height":1.0}},"width":1280,"height":720,"fps":60}}"#
    );
    request_to(plan.addr, Method::POST, "/v1/sessions", body)
}

/// Sends one request on a pooled connection: status and the time it was handed to the client
/// (an idle keep-alive connection is taken at once).
async fn send(http: &Http, req: Request<Full<Bytes>>) -> Result<(u16, Instant)> {
    let wrote = Instant::now();
    let (status, _) = exchange(http, req).await?;
    Ok((status, wrote))
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// One of the pool's `--connections` senders: takes the next request of the schedule, waits for
/// its due time (open loop) and sends it on a free connection; a late request goes out at once.
async fn worker(plan: Arc<Plan>, http: Http) -> Tally {
    let mut t = Tally::default();
    loop {
        let i = plan.next.fetch_add(1, Ordering::Relaxed);
        let due = match plan.rate {
            Some(rate) if i < plan.scheduled => {
                let due = plan.start + Duration::from_secs_f64(i as f64 / rate);
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                due
            }
            Some(_) => break,
            None => Instant::now(),
        };
        if (plan.rate.is_none() && due >= plan.end) || Instant::now() >= plan.cutoff {
            break;
        }
        t.sent += 1;
        let req = match request(&plan, i) {
            Ok(r) => r,
            Err(e) => {
                t.errors += 1;
                t.first_error.get_or_insert(e.to_string());
                continue;
            }
        };
        let deadline = (Instant::now() + REQUEST_TIMEOUT).min(plan.cutoff);
        let error = match tokio::time::timeout_at(deadline.into(), send(&http, req)).await {
            Ok(Ok((status, wrote))) => {
                let done = Instant::now();
                let window = ((due - plan.start).as_secs() / WINDOW_SECS) as usize;
                let (latency_us, service_us) = (micros(done - due), micros(done - wrote));
                t.samples.push(Sample {
                    window,
                    latency_us,
                    service_us,
                });
                *t.statuses.entry(status).or_default() += 1;
                t.last_done = t.last_done.max(Some(done));
                continue;
            }
            Err(_) if deadline == plan.cutoff => {
                t.cut_off += 1;
                continue;
            }
            Err(_) => format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
            Ok(Err(e)) => e.to_string(),
        };
        t.errors += 1;
        t.first_error.get_or_insert(error);
        // The client drops a connection that failed; do not spin on a broker that refuses connections.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t
}

/// Opens `conns` keep-alive connections before a phase (as many `GET /healthz` at once), so
/// that connecting is not timed.
async fn fill_pool(http: &Http, addr: SocketAddr, conns: usize) -> Result<()> {
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (http, req) = (
            http.clone(),
            request_to(addr, Method::GET, "/healthz", String::new())?,
        );
        calls.spawn(async move { exchange(&http, req).await });
    }
    while let Some(r) = calls.join_next().await {
        r??;
    }
    Ok(())
}

/// Runs one phase: closed loop for `secs` when `rate` is `None`, else open loop at `rate`/s.
async fn run_phase(
    addr: SocketAddr,
    tag: String,
    seed: u64,
    conns: usize,
    secs: u64,
    rate: Option<f64>,
) -> Result<(Tally, Arc<Plan>)> {
    let http = client(conns);
    fill_pool(&http, addr, conns)
        .await
        .with_context(|| format!("connect to the broker at {addr}"))?;
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let plan = Arc::new(Plan {
        addr,
        tag,
        seed,
        start,
        end,
        cutoff: end + DRAIN,
        rate,
        scheduled: rate.map_or(0, |r| (r * secs as f64) as u64),
        next: AtomicU64::new(0),
    });
    let tasks: Vec<_> = (0..conns)
        .map(|_| tokio::spawn(worker(plan.clone(), http.clone())))
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.context("a connection worker failed")?);
    }
    Ok((tally, plan))
}

// ---- figures ----

/// A phase's figures: one line of the final table, and the lines printed after the phase.
struct Row {
    store: String,
    offered: String,
    achieved: f64,
    /// Latency p50, p95, p99 and max, µs.
    latency: [u32; 4],
    non2xx: String,
    errors: String,
    load: String,
}

/// Sorts a phase's samples, prints its figures and returns its table row.
fn report(store: &str, offered: String, t: &Tally, plan: &Plan, loads: [String; 2]) -> Row {
    let open = plan.rate.is_some();
    let secs = plan.end - plan.start;
    let span = t.last_done.map_or(secs, |d| d - plan.start);
    let elapsed = if open { span.max(secs) } else { span };
    let created = t.statuses.get(&201).copied().unwrap_or(0);
    let achieved = created as f64 / elapsed.as_secs_f64().max(1e-3);
    let sorted = |f: fn(&Sample) -> u32| {
        let mut v: Vec<u32> = t.samples.iter().map(f).collect();
        v.sort_unstable();
        v
    };
    let (latency, service) = (sorted(|s| s.latency_us), sorted(|s| s.service_us));
    let spread = |v: &[u32]| [50.0, 95.0, 99.0, 100.0].map(|q| pct(v, q));
    let show = |p: [u32; 4]| {
        format!(
            "p50 {} p95 {} p99 {} max {}",
            ms(p[0]),
            ms(p[1]),
            ms(p[2]),
            ms(p[3])
        )
    };
    let mut windows: Vec<Vec<u32>> = Vec::new();
    for s in &t.samples {
        if windows.len() <= s.window {
            windows.resize_with(s.window + 1, Vec::new);
        }
        windows[s.window].push(s.latency_us);
    }
    let timeline: Vec<String> = windows
        .iter_mut()
        .map(|w| {
            w.sort_unstable();
            format!("{:.2}", f64::from(pct(w, 99.0)) / 1000.0)
        })
        .collect();
    let non2xx: Vec<String> = t
        .statuses
        .iter()
        .filter(|(s, _)| !(200..300).contains(*s))
        .map(|(s, n)| format!("{s}: {n}"))
        .collect();
    let unsent = plan.scheduled.saturating_sub(t.sent);
    let mut errors = thousands(t.errors);
    if unsent + t.cut_off > 0 {
        errors += &format!(" + {} unsent, {} cut off", thousands(unsent), t.cut_off);
    }
    println!("{store}, {offered}:");
    println!(
        "  {} answers, {} of them 201: {achieved:.0} 201/s over {:.1} s",
        thousands(t.samples.len() as u64),
        thousands(created),
        elapsed.as_secs_f64()
    );
    let from = if open { "intended send" } else { "write" };
    println!(
        "  latency ({from} → response end): {}",
        show(spread(&latency))
    );
    if open {
        println!(
            "  service time (write → response end): {}",
            show(spread(&service))
        );
    }
    println!(
        "  p99 per {WINDOW_SECS} s window (ms): {}",
        timeline.join(", ")
    );
    let first = t
        .first_error
        .as_ref()
        .map_or(String::new(), |e| format!(" (first: {e})"));
    println!(
        "  non-2xx: {}; socket errors: {}{first}; unsent by the cutoff (due time + {} s): {}; cut off waiting: {}",
        if non2xx.is_empty() {
            "none".into()
        } else {
            non2xx.join(", ")
        },
        t.errors,
        DRAIN.as_secs(),
        thousands(unsent),
        t.cut_off
    );
    Row {
        store: store.into(),
        offered,
        achieved,
        latency: spread(&latency),
        non2xx: if non2xx.is_empty() {
            "0".into()
        } else {
            non2xx.join(", ")
        },
        errors,
        load: format!("{} → {}", loads[0], loads[1]),
    }
}

fn bench_store(
    rt: &tokio::runtime::Runtime,
    a: &Args,
    bin: &Path,
    tmp: &Path,
    name: &str,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let dir = tmp.join(name);
    let etcd = if name == "etcd" {
        Some(Etcd::start().map_err(|e| anyhow!("{e}"))?)
    } else {
        None
    };
    let (url, store) = match &etcd {
        Some(e) => (e.store_url("bench"), Store::Etcd(e.addr())),
        None => ("redb".to_owned(), Store::Redb(dir.clone())),
    };
    let mut broker = start(bin, &dir, &url, &[])?;
    let http = Blocking::new()?;
    let keys = register_edges(&http, broker.addr, a.edges).context("register the edges")?;
    let heartbeats = Heartbeats::start(broker.addr, keys);
    let mut capacity = 0.0;
    let phases = std::iter::once(None).chain(a.rates.iter().copied().map(Some));
    for (n, fraction) in phases.enumerate() {
        let (rate, secs, offered) = match fraction {
            None => (
                None,
                a.capacity_seconds,
                format!("closed loop, {} connections", a.connections),
            ),
            Some(f) => {
                let r = f * capacity;
                (
                    Some(r),
                    a.seconds,
                    format!("{:.0} % of C = {}/s", f * 100.0, thousands(r as u64)),
                )
            }
        };
        let (l0, g0) = (load(load_avg()), growth(&http, &broker, &store));
        let tag = format!("{name}-{n}");
        let phase = run_phase(broker.addr, tag, n as u64, a.connections, secs, rate);
        let (tally, plan) = rt.block_on(phase)?;
        let (l1, g1) = (load(load_avg()), growth(&http, &broker, &store));
        if let Ok(Some(status)) = broker.child.try_wait() {
            bail!("the {name} broker exited ({status}) during the phase {offered}");
        }
        let row = report(name, offered, &tally, &plan, [l0, l1]);
        println!("  load avg (1 min) {}", row.load);
        print_growth(g0, g1);
        let achieved = row.achieved;
        rows.push(row);
        if fraction.is_none() {
            capacity = achieved;
            if capacity < 1.0 {
                bail!(
                    "the capacity run got no 201 answers from the {name} broker (statuses {:?}, first error {:?})",
                    tally.statuses,
                    tally.first_error
                );
            }
            println!("  C = {capacity:.0} sessions/s\n");
        } else {
            println!();
        }
    }
    let (sent, failed) = heartbeats.counts();
    drop(heartbeats);
    println!(
        "edge heartbeats during the {name} run: {sent} answered 200, {failed} failed or refused \
         (each edge every {} s)\n",
        HEARTBEAT_EVERY.as_secs()
    );
    drop(broker);
    drop(etcd);
    Ok(())
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let bin = build_broker()?;
    let tmp =
        TempDir(std::env::temp_dir().join(format!("edgeplay-bench-broker-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&tmp.0);
    std::fs::create_dir_all(&tmp.0).with_context(|| format!("create {}", tmp.0.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start tokio")?;
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "What is measured: POST /v1/sessions (a placement and a durable session write) against a release \
         session-broker on 127.0.0.1 with {} registered edges. Phase 1 runs {} keep-alive connections back \
         to back for {} s (closed loop); C is its rate of 201 answers. Phase 2 offers {} of C for {} s each, \
         open loop: request i is due at start + i/rate whether or not earlier ones were answered, and goes \
         out on the first free connection of a pool of {}. Its latency spans intended send → end of the \
         response, so waiting for a free connection or for the broker counts (no coordinated omission); \
         service time (actual write → response end) is shown beside it. Percentiles are exact over every \
         answer, whatever its status. The generator runs in this process on the same machine and shares its \
         {cores} cores with the broker (and etcd); tokio's 1 ms timer lets a request leave up to ~1 ms after \
         its due time, and that lag counts in the latency.",
        a.edges,
        a.connections,
        a.capacity_seconds,
        a.rates
            .iter()
            .map(|r| format!("{:.0} %", r * 100.0))
            .collect::<Vec<_>>()
            .join(", "),
        a.seconds,
        a.connections,
    );
    println!(
        "\nmachine: {}; load average at start {}\n",
        edgeplay_benches::machine(),
        load(load_avg())
    );
    let mut rows = Vec::new();
    for store in &a.stores {
        bench_store(&rt, &a, &bin, &tmp.0, store, &mut rows)
            .with_context(|| format!("store {store}"))?;
    }
    println!(
        "| store | offered rate | achieved/s | p50 | p95 | p99 | max | non-2xx | errors | load avg |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let [p50, p95, p99, max] = r.latency.map(ms);
        println!(
            "| {} | {} | {} | {p50} | {p95} | {p99} | {max} | {} | {} | {} |",
            r.store,
            r.offered,
            thousands(r.achieved.round() as u64),
            r.non2xx,
            r.errors,
            r.load
        );
    }
    println!(
        "\nLatency: from the write in the closed-loop rows, from the intended send in the others."
    );
    Ok(())
}
