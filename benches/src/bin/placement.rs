//! `cargo xtask bench placement`: the broker's placement at scale in a synthetic world, alone and
//! under the broker's real heartbeat load.
//!
//! The world (seeded, deterministic): continents with cities of Zipf-like population; 500k edges
//! spread over the cities by population, each with an access delay, a GPU class, a price, free
//! slots and a reputation. The true RTT between a player and an edge is the city-to-city fibre
//! delay (distance × a per-pair route inflation, which no Euclidean space fits exactly) plus both
//! access delays; every measurement adds jitter and the odd spike. Coordinates are NOT given:
//! 2,000 landmark edges gossip Vivaldi among themselves on noisy samples, then every edge and
//! every player runs Vivaldi against landmarks (three quarters on its continent, the rest
//! anywhere; each sample the minimum of three probes, the latency filter Serf uses).
//!
//! **Part 1, strategies** (one thread, the index alone, no lock). Three strategies, each timed
//! in its own pass over the same request stream, on an index built for that pass alone, so no
//! row runs on caches another row warmed; the passes of a repetition run in rotated order and
//! `--reps` repetitions are interleaved (rep 1: A B C, rep 2: B C A, …):
//! - **index+probe** (ours): `Index::candidates` (K = 8), the client's min-of-3 probes, `pick`;
//! - **coords only**: `Index::candidates`, the best by coordinates taken, no probing;
//! - **scan+probe**: every edge scored by coordinates, best 8 probed the same way (the baseline
//!   the index must match in quality and beat in time; run on every `--scan-every`th request).
//!
//! A row's time is the broker's work only (candidates, plus pick where there is one), not the
//! probes' network time. A probe's noise is seeded by (request, edge), so two strategies that
//! probe the same edge for the same request read the same RTT. Quality: share of sessions on an
//! edge within 5 ms of the best true RTT among the edges that meet the request.
//!
//! **Part 2, the broker under load.** The same edges are written to a redb store in a temp dir
//! and loaded by a real broker state ([`Broker::start`], what `session-broker run` builds, with
//! its liveness sweep); then `--threads` threads place requests back to back (or paced to
//! `--rate` placements/s in all) through [`Broker::candidates`] and [`Broker::pick`] (the locked
//! parts of `POST /v1/sessions` and of its `select`: the same functions, the same registry
//! mutex) while heartbeats for every edge go through [`Broker::heartbeat`] (`Service::apply_heartbeat`, what the edge link calls for each
//! heartbeat) on a fixed open-loop schedule: serving edges (`--serving` %) every 500 ms, idle
//! ones every 15 s. Windows with 1 thread and with `--threads` threads alternate, `--reps` of
//! each; the same windows run first with no heartbeats yet, as the baseline (they cannot be
//! interleaved with the loaded ones: a serving edge missing heartbeats for 1.5 s is marked dead).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use edgeplay_benches::{load_average, machine};
use edgeplay_broker::liveness::{EdgeState, IDLE_INTERVAL, Liveness, MISSES, SERVING_INTERVAL};
use edgeplay_broker::placement::{EdgeSpec, Index, IndexConfig, Request};
use edgeplay_broker::ratelimit::RateLimit;
use edgeplay_broker::records::{EdgeAd, EdgeRecord};
use edgeplay_broker::registry::Broker;
use edgeplay_broker::state::Config;
use edgeplay_broker::store::{BrokerEntry, RedbStore, Store, Table};
use edgeplay_broker::tokens::BrokerKey;
use edgeplay_game::hash::SplitMix64;
use edgeplay_protocol::coords::{Coord, Vivaldi};
use edgeplay_protocol::token::EdgeId;

const USAGE: &str = "\
usage: placement [--edges N] [--requests N] [--scan-every N] [--seed N] [--per-square N]
                 [--square-ms MS] [--reps N] [--threads N] [--serving PCT] [--seconds S]
                 [--warmup S] [--heartbeat-tasks N] [--rate R] [--no-load]
  --edges N            edges in the world (default 500000, at least 10000)
  --requests N         requests in the stream (default 20000)
  --scan-every N       the full scan runs on every Nth request (default 20)
  --seed N             world seed (default 1)
  --per-square N       index diversity cap per square (default: off, = K)
  --square-ms MS       side of a diversity square (default 8)
  --reps N             repetitions of every figure, at least 3 (default 3)
  --threads N          placing threads under load (default: the cores available)
  --serving PCT        share of edges serving, heartbeating every 500 ms (default 10)
  --seconds S          length of each placement window under load (default 5)
  --warmup S           heartbeats before the first loaded window (default 15: one idle period)
  --heartbeat-tasks N  tokio tasks sending the heartbeats (default 16)
  --rate R             under load, pace the placing threads to R placements/s in all
                       (default 0: back to back, as fast as they go)
  --no-load            part 1 only";

struct Args {
    edges: usize,
    requests: usize,
    scan_every: usize,
    seed: u64,
    per_square: usize,
    square_ms: f64,
    reps: usize,
    threads: usize,
    serving_pct: f64,
    seconds: f64,
    warmup: f64,
    heartbeat_tasks: usize,
    rate: f64,
    load: bool,
}

fn number<T: FromStr>(flag: &str, value: Option<String>) -> Result<T> {
    let v = value.ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))?;
    v.parse()
        .map_err(|_| anyhow!("{flag} `{v}` is not a number of the kind it takes\n{USAGE}"))
}

/// The flags, or `None` when `--help` asked for the usage.
fn parse_args() -> Result<Option<Args>> {
    let mut a = Args {
        edges: 500_000,
        requests: 20_000,
        scan_every: 20,
        seed: 1,
        per_square: IndexConfig::default().max_per_square,
        square_ms: IndexConfig::default().diversity_ms,
        reps: 3,
        threads: std::thread::available_parallelism().map_or(1, usize::from),
        serving_pct: 10.0,
        seconds: 5.0,
        warmup: IDLE_INTERVAL.as_secs_f64(),
        heartbeat_tasks: 16,
        rate: 0.0,
        load: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let f = flag.as_str();
        match f {
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--no-load" => a.load = false,
            "--edges" => a.edges = number(f, it.next())?,
            "--requests" => a.requests = number(f, it.next())?,
            "--scan-every" => a.scan_every = number(f, it.next())?,
            "--seed" => a.seed = number(f, it.next())?,
            "--per-square" => a.per_square = number(f, it.next())?,
            "--square-ms" => a.square_ms = number(f, it.next())?,
            "--reps" => a.reps = number(f, it.next())?,
            "--threads" => a.threads = number(f, it.next())?,
            "--serving" => a.serving_pct = number(f, it.next())?,
            "--seconds" => a.seconds = number(f, it.next())?,
            "--warmup" => a.warmup = number(f, it.next())?,
            "--heartbeat-tasks" => a.heartbeat_tasks = number(f, it.next())?,
            "--rate" => a.rate = number(f, it.next())?,
            other => bail!("unknown flag `{other}`\n{USAGE}"),
        }
    }
    let checks = [
        (a.edges >= 10_000, "--edges must be at least 10000"),
        (a.requests >= 1, "--requests must be at least 1"),
        (a.scan_every >= 1, "--scan-every must be at least 1"),
        (a.per_square >= 1, "--per-square must be at least 1"),
        (
            a.square_ms.is_finite() && a.square_ms > 0.0,
            "--square-ms must be above 0",
        ),
        (
            a.reps >= 3,
            "--reps must be at least 3 (a figure needs a spread)",
        ),
        (
            (1..=1024).contains(&a.threads),
            "--threads must be 1 to 1024",
        ),
        (
            (0.0..=100.0).contains(&a.serving_pct),
            "--serving must be 0 to 100 (%)",
        ),
        (
            a.seconds.is_finite() && (0.1..=3600.0).contains(&a.seconds),
            "--seconds must be 0.1 to 3600",
        ),
        (
            a.warmup.is_finite() && (0.0..=3600.0).contains(&a.warmup),
            "--warmup must be 0 to 3600",
        ),
        (
            (1..=4096).contains(&a.heartbeat_tasks),
            "--heartbeat-tasks must be 1 to 4096",
        ),
        (
            a.rate == 0.0 || (1.0..=10_000_000.0).contains(&a.rate),
            "--rate must be 0 (back to back) or 1 to 10000000 placements/s",
        ),
    ];
    if let Some((_, why)) = checks.iter().find(|(ok, _)| !ok) {
        bail!("{why}\n{USAGE}");
    }
    Ok(Some(a))
}

/// splitmix64: small, fast, seedable; the bench must be reproducible.
struct Rng(SplitMix64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(SplitMix64(seed))
    }
    fn unit(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * self.unit().max(1e-12).ln()
    }
    /// Index drawn from cumulative weights.
    fn weighted(&mut self, cum: &[f64]) -> usize {
        let t = self.unit() * cum[cum.len() - 1];
        cum.partition_point(|&c| c <= t).min(cum.len() - 1)
    }
}

const CONTINENTS: &[(&str, f64, f64, f64, f64)] = &[
    // name, centre x km, centre y km, spread km, share of cities
    ("na", -7000.0, 1500.0, 2000.0, 0.28),
    ("sa", -5000.0, -5000.0, 1500.0, 0.08),
    ("eu", 1000.0, 2000.0, 1200.0, 0.30),
    ("af", 1500.0, -3000.0, 1800.0, 0.06),
    ("as", 8000.0, 1500.0, 2200.0, 0.22),
    ("oc", 10500.0, -5000.0, 1200.0, 0.06),
];
const CITIES: usize = 300;
/// Vivaldi samples per joining node (each the minimum of three probes).
const SAMPLES: usize = 512;

struct World {
    city_region: Vec<usize>,
    /// City-to-city base RTT (ms), row-major.
    base: Vec<f32>,
    city_cum: Vec<f64>,
    edges: Vec<SimEdge>,
    /// Edge indices of each city, sorted by access delay (for the exact best true RTT).
    by_city: Vec<Vec<u32>>,
}

struct SimEdge {
    city: u16,
    access: f32,
    spec: EdgeSpec,
}

struct Player {
    city: usize,
    access: f64,
    req: Request,
}

fn edge_id(i: usize) -> EdgeId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&(i as u64).to_le_bytes());
    EdgeId(b)
}

fn index_of(id: &EdgeId) -> usize {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.0[..8]);
    u64::from_le_bytes(b) as usize
}

impl World {
    fn true_rtt(&self, city: usize, access: f64, e: usize) -> f64 {
        let se = &self.edges[e];
        f64::from(self.base[city * CITIES + usize::from(se.city)]) + access + f64::from(se.access)
    }

    fn sample(&self, rng: &mut Rng, city: usize, access: f64, e: usize) -> f64 {
        let spike = if rng.unit() < 0.02 {
            10.0 + rng.unit() * 20.0
        } else {
            0.0
        };
        self.true_rtt(city, access, e) + rng.exp(0.7) + spike
    }

    /// What the client reports: the minimum of three probes.
    fn probe(&self, rng: &mut Rng, city: usize, access: f64, e: usize) -> f64 {
        (0..3)
            .map(|_| self.sample(rng, city, access, e))
            .fold(f64::INFINITY, f64::min)
    }

    fn meets(s: &EdgeSpec, r: &Request) -> bool {
        s.accepting
            && s.free_slots > 0
            && s.gpu_class >= r.min_gpu_class
            && s.max_width >= r.width
            && s.max_height >= r.height
            && s.max_fps >= r.fps
            && r.max_price_per_min.is_none_or(|m| s.price_per_min <= m)
    }

    /// The best true RTT among edges that meet the request (exact, without scanning them all:
    /// within a city the base delay is shared, so the first eligible edge by access is best).
    fn best_true(&self, p: &Player) -> f64 {
        let mut best = f64::INFINITY;
        for list in &self.by_city {
            if let Some(&e) = list
                .iter()
                .find(|&&e| Self::meets(&self.edges[e as usize].spec, &p.req))
            {
                best = best.min(self.true_rtt(p.city, p.access, e as usize));
            }
        }
        best
    }
}

fn build_world(seed: u64, n_edges: usize) -> (World, Vec<usize>) {
    let mut rng = Rng::new(seed);
    let cont_cum: Vec<f64> = CONTINENTS
        .iter()
        .scan(0.0, |s, c| {
            *s += c.4;
            Some(*s)
        })
        .collect();
    let mut city_xy = Vec::with_capacity(CITIES);
    let mut city_region = Vec::with_capacity(CITIES);
    let mut city_cum = Vec::with_capacity(CITIES);
    let mut total = 0.0;
    for rank in 0..CITIES {
        let r = rng.weighted(&cont_cum);
        let (_, cx, cy, spread, _) = CONTINENTS[r];
        city_xy.push((cx + rng.normal() * spread, cy + rng.normal() * spread));
        city_region.push(r);
        total += 1.0 / (rank as f64 + 1.0).powf(0.8);
        city_cum.push(total);
    }
    let mut base = vec![0f32; CITIES * CITIES];
    for a in 0..CITIES {
        for b in a..CITIES {
            let d = if a == b {
                0.5
            } else {
                let (ax, ay) = city_xy[a];
                let (bx, by) = city_xy[b];
                // Fibre: 100 km of distance per ms of RTT, inflated by the route taken.
                let inflation = 1.1 + 0.5 * Rng::new(seed ^ ((a * CITIES + b) as u64)).unit();
                1.0 + (ax - bx).hypot(ay - by) / 100.0 * inflation
            };
            base[a * CITIES + b] = d as f32;
            base[b * CITIES + a] = d as f32;
        }
    }
    let mut edges = Vec::with_capacity(n_edges);
    let mut by_city = vec![Vec::new(); CITIES];
    for i in 0..n_edges {
        let city = rng.weighted(&city_cum);
        let access = (0.3 + rng.exp(2.5)).min(25.0);
        let gpu_class = [0u8, 0, 0, 0, 1, 1, 1, 2, 2, 3][rng.below(10)];
        let (max_width, max_height) = if gpu_class == 0 {
            (1920, 1080)
        } else {
            (3840, 2160)
        };
        let total_slots = 1 + rng.below(4) as u32;
        let free_slots = if rng.unit() < 0.1 {
            0
        } else {
            1 + rng.below(total_slots as usize) as u32
        };
        let price = (500.0 * f64::from(gpu_class + 1) * (0.7 + 0.8 * rng.unit())) as u64;
        let reputation = if rng.unit() < 0.1 {
            0.3 + 0.4 * rng.unit()
        } else {
            0.85 + 0.15 * rng.unit()
        } as f32;
        let spec = EdgeSpec {
            id: edge_id(i),
            region: CONTINENTS[city_region[city]].0.to_owned(),
            coord: Coord::default(),
            gpu_class,
            max_width,
            max_height,
            max_fps: 60,
            price_per_min: price,
            free_slots,
            total_slots,
            reputation,
            accepting: rng.unit() > 0.02,
        };
        by_city[city].push(i as u32);
        edges.push(SimEdge {
            city: city as u16,
            access: access as f32,
            spec,
        });
    }
    for list in &mut by_city {
        list.sort_by(|&a, &b| {
            edges[a as usize]
                .access
                .total_cmp(&edges[b as usize].access)
        });
    }
    let landmarks: Vec<usize> = (0..2000).map(|_| rng.below(n_edges)).collect();
    (
        World {
            city_region,
            base,
            city_cum,
            edges,
            by_city,
        },
        landmarks,
    )
}

/// Vivaldi on noisy samples: landmarks gossip first, then every edge joins against them.
fn derive_coordinates(w: &mut World, landmarks: &[usize], seed: u64) -> Landmarks {
    let mut rng = Rng::new(seed ^ 0x5eed);
    let n = landmarks.len();
    let mut lm: Vec<Vivaldi> = (0..n).map(|i| Vivaldi::new(i as u64 + 1)).collect();
    for _ in 0..(n * 400) {
        let (i, j) = (rng.below(n), rng.below(n));
        if i == j {
            continue;
        }
        let (ei, ej) = (landmarks[i], landmarks[j]);
        let rtt = w.sample(
            &mut rng,
            usize::from(w.edges[ei].city),
            f64::from(w.edges[ei].access),
            ej,
        );
        let (c, e) = (*lm[j].coord(), lm[j].error());
        let _ = lm[i].update(rtt, &c, e);
    }
    let mut near: Vec<Vec<usize>> = vec![Vec::new(); CONTINENTS.len()];
    for (i, &e) in landmarks.iter().enumerate() {
        near[w.city_region[usize::from(w.edges[e].city)]].push(i);
    }
    let l = Landmarks {
        coords: lm.iter().map(|v| (*v.coord(), v.error())).collect(),
        edges: landmarks.to_vec(),
        near,
    };
    for e in 0..w.edges.len() {
        let city = usize::from(w.edges[e].city);
        let access = f64::from(w.edges[e].access);
        let v = l.join(w, &mut rng, city, access, e as u64);
        w.edges[e].spec.coord = v;
    }
    l
}

struct Landmarks {
    coords: Vec<(Coord, f64)>,
    edges: Vec<usize>,
    near: Vec<Vec<usize>>,
}

impl Landmarks {
    /// A node's coordinate after [`SAMPLES`] samples to landmarks, mostly on its continent.
    fn join(&self, w: &World, rng: &mut Rng, city: usize, access: f64, seed: u64) -> Coord {
        let mut v = Vivaldi::new(seed + 1);
        let local = &self.near[w.city_region[city]];
        for s in 0..SAMPLES {
            let i = if s % 4 != 0 && !local.is_empty() {
                local[rng.below(local.len())]
            } else {
                rng.below(self.edges.len())
            };
            let rtt = w.probe(rng, city, access, self.edges[i]);
            let (c, e) = self.coords[i];
            let _ = v.update(rtt, &c, e);
        }
        *v.coord()
    }
}

fn players(w: &World, l: &Landmarks, n: usize, seed: u64) -> Vec<Player> {
    let mut rng = Rng::new(seed ^ 0x9a7e);
    (0..n)
        .map(|i| {
            let city = rng.weighted(&w.city_cum);
            let access = 1.0 + rng.exp(3.0).min(30.0);
            let coord = l.join(w, &mut rng, city, access, 1_000_000 + i as u64);
            let min_gpu_class = [0u8, 0, 0, 0, 0, 0, 1, 1, 2, 3][rng.below(10)];
            let (width, height) = if rng.unit() < 0.5 {
                (1280, 720)
            } else {
                (1920, 1080)
            };
            let max_price_per_min = (rng.unit() < 0.3)
                .then(|| (500.0 * f64::from(min_gpu_class + 1) * (1.0 + rng.unit())) as u64);
            Player {
                city,
                access,
                req: Request {
                    coord: Some(coord),
                    region: Some(CONTINENTS[w.city_region[city]].0.to_owned()),
                    width,
                    height,
                    fps: 60,
                    min_gpu_class,
                    max_price_per_min,
                },
            }
        })
        .collect()
}

/// A probe's noise depends on the request and the edge only, not on which strategy asks.
fn probe_rng(seed: u64, request: usize, edge: usize) -> Rng {
    let mut h = SplitMix64(seed ^ 0x0b5e_0000_0000_0000 ^ (request as u64));
    Rng::new(h.next_u64() ^ edge as u64)
}

/// The client probes every candidate (network time: not timed); what it reports.
fn probe_all(
    world: &World,
    seed: u64,
    request: usize,
    p: &Player,
    cands: &[EdgeId],
    out: &mut Vec<(EdgeId, f64)>,
) {
    out.clear();
    for c in cands {
        let e = index_of(c);
        let mut rng = probe_rng(seed, request, e);
        out.push((*c, world.probe(&mut rng, p.city, p.access, e)));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Strategy {
    IndexProbe,
    CoordsOnly,
    ScanProbe,
}

const STRATEGIES: [Strategy; 3] = [
    Strategy::IndexProbe,
    Strategy::CoordsOnly,
    Strategy::ScanProbe,
];

impl Strategy {
    fn name(self) -> &'static str {
        match self {
            Strategy::IndexProbe => "index + probe K=8 (ours)",
            Strategy::CoordsOnly => "coordinates only, no probing",
            Strategy::ScanProbe => "full scan by coordinates + probe K=8",
        }
    }

    fn timed(self) -> &'static str {
        match self {
            Strategy::IndexProbe => "Index::candidates + Index::pick",
            Strategy::CoordsOnly => "Index::candidates",
            Strategy::ScanProbe => "Index::scan_candidates + Index::pick",
        }
    }
}

/// One strategy's pass over the request stream.
#[derive(Default)]
struct Pass {
    times: Vec<Duration>,
    placed: usize,
    failed: usize,
    within_5ms: usize,
    excess_ms: Vec<f64>,
    build: Duration,
}

impl Pass {
    fn record(&mut self, took: Duration, chosen_true: Option<f64>, best: f64) {
        self.times.push(took);
        match chosen_true {
            Some(t) => {
                self.placed += 1;
                if t <= best + 5.0 {
                    self.within_5ms += 1;
                }
                self.excess_ms.push(t - best);
            }
            None => self.failed += 1,
        }
    }
}

fn build_index(world: &World, args: &Args) -> Index {
    let mut index = Index::new(IndexConfig {
        max_per_square: args.per_square,
        diversity_ms: args.square_ms,
        ..IndexConfig::default()
    });
    for e in &world.edges {
        index.upsert(e.spec.clone());
    }
    index
}

/// `strategy` alone over every request (the scan on every `scan_every`th), on a fresh index.
fn run_pass(
    strategy: Strategy,
    world: &World,
    players: &[Player],
    best: &[f64],
    args: &Args,
) -> Pass {
    let t = Instant::now();
    let index = build_index(world, args);
    let mut pass = Pass {
        build: t.elapsed(),
        ..Pass::default()
    };
    let mut probed = Vec::with_capacity(8);
    let truth = |p: &Player, id: &EdgeId| world.true_rtt(p.city, p.access, index_of(id));
    for (i, p) in players.iter().enumerate() {
        let best = best[i];
        if !best.is_finite() {
            continue;
        }
        match strategy {
            Strategy::IndexProbe => {
                let t = Instant::now();
                let cands = index.candidates(&p.req);
                let took = t.elapsed();
                probe_all(world, args.seed, i, p, &cands, &mut probed);
                let t = Instant::now();
                let pick = index.pick(&p.req, &cands, &probed).ok();
                let took = took + t.elapsed();
                pass.record(took, pick.map(|pk| truth(p, &pk.edge)), best);
            }
            Strategy::CoordsOnly => {
                let t = Instant::now();
                let first = index.candidates(&p.req).first().copied();
                let took = t.elapsed();
                pass.record(took, first.map(|e| truth(p, &e)), best);
            }
            Strategy::ScanProbe => {
                if i % args.scan_every != 0 {
                    continue;
                }
                let t = Instant::now();
                let cands: Vec<EdgeId> = index
                    .scan_candidates(&p.req)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| c.1)
                    .collect();
                let took = t.elapsed();
                probe_all(world, args.seed, i, p, &cands, &mut probed);
                let t = Instant::now();
                let pick = index.pick(&p.req, &cands, &probed).ok();
                let took = took + t.elapsed();
                pass.record(took, pick.map(|pk| truth(p, &pk.edge)), best);
            }
        }
    }
    pass
}

/// Percentiles of a sample list (nearest rank), in µs.
struct Latency {
    n: usize,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

fn latency_us(mut ns: Vec<u64>) -> Latency {
    ns.sort_unstable();
    let q = |p: f64| {
        if ns.is_empty() {
            f64::NAN
        } else {
            ns[((ns.len() - 1) as f64 * p).round() as usize] as f64 / 1e3
        }
    };
    Latency {
        n: ns.len(),
        p50: q(0.5),
        p95: q(0.95),
        p99: q(0.99),
        max: q(1.0),
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A figure over the repetitions: `median (min–max)`, or the one value when they all agree.
fn cell(values: &[f64], decimals: usize) -> String {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return "n/a".to_owned();
    }
    v.sort_by(f64::total_cmp);
    let f = |x: f64| grouped(x, decimals);
    let (lo, hi, mid) = (v[0], v[v.len() - 1], v[v.len() / 2]);
    if f(lo) == f(hi) {
        f(mid)
    } else {
        format!("{} ({}–{})", f(mid), f(lo), f(hi))
    }
}

/// `x` with `decimals` places and thousands separated by commas.
fn grouped(x: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, x.abs());
    let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(i, f)| (i, f));
    let mut out = String::new();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

fn part1(world: &World, players: &[Player], args: &Args) {
    let best: Vec<f64> = players.iter().map(|p| world.best_true(p)).collect();
    let mut passes: Vec<Vec<Pass>> = STRATEGIES.iter().map(|_| Vec::new()).collect();
    for rep in 0..args.reps {
        for k in 0..STRATEGIES.len() {
            let s = (rep + k) % STRATEGIES.len();
            let pass = run_pass(STRATEGIES[s], world, players, &best, args);
            eprintln!(
                "  rep {}/{}: {} pass done ({} placements)",
                rep + 1,
                args.reps,
                STRATEGIES[s].name(),
                pass.times.len()
            );
            passes[s].push(pass);
        }
    }
    println!();
    println!(
        "## Part 1: strategies, one thread, the index alone (no lock, no heartbeats)\n\
         Each strategy is timed in its own pass over the same {} requests, on an index built \
         for that pass alone (no row runs on caches another row warmed); the {} repetitions are \
         interleaved, the order of the passes rotated each time. Cells: median (min–max) over \
         the repetitions.",
        args.requests, args.reps
    );
    println!(
        "\n| strategy | times | n | placements/s | p50 µs | p99 µs | max µs | within 5 ms of best | p95 excess ms | failed | index build s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (s, reps) in STRATEGIES.iter().zip(&passes) {
        let col = |f: &dyn Fn(&Pass) -> f64| reps.iter().map(f).collect::<Vec<f64>>();
        let lat: Vec<Latency> = reps
            .iter()
            .map(|p| latency_us(p.times.iter().map(|&d| nanos(d)).collect()))
            .collect();
        let per_s = col(&|p| p.times.len() as f64 / p.times.iter().sum::<Duration>().as_secs_f64());
        let within = col(&|p| 100.0 * p.within_5ms as f64 / (p.placed + p.failed).max(1) as f64);
        let excess = col(&|p| {
            let mut e = p.excess_ms.clone();
            e.sort_by(f64::total_cmp);
            e.get(e.len() * 95 / 100).copied().unwrap_or(f64::NAN)
        });
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} % | {} | {} | {} |",
            s.name(),
            s.timed(),
            cell(&col(&|p| p.times.len() as f64), 0),
            cell(&per_s, 0),
            cell(&lat.iter().map(|l| l.p50).collect::<Vec<_>>(), 1),
            cell(&lat.iter().map(|l| l.p99).collect::<Vec<_>>(), 1),
            cell(&lat.iter().map(|l| l.max).collect::<Vec<_>>(), 1),
            cell(&within, 2),
            cell(&excess, 2),
            cell(&col(&|p| p.failed as f64), 0),
            cell(&col(&|p| p.build.as_secs_f64()), 2),
        );
    }
    println!(
        "\nplacements/s: placements over the summed broker time of the pass (one thread, \
         broker work only); probes are the client's network time and not counted. Within 5 ms: \
         share of sessions within 5 ms of the best true RTT among edges meeting the request; \
         p95 excess: 95th percentile of the chosen edge's true RTT above that best. Probe noise \
         is seeded per (request, edge), so quality repeats exactly across repetitions."
    );
}

/// The loaded broker's data dir (its redb store and key), removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The world's edge `i` as the broker keeps it after its registration: alive, idle, home here.
fn record_of(i: usize, e: &SimEdge, me: &str, now_ms: u64) -> EdgeRecord {
    let s = &e.spec;
    let [a, b, c, _] = (i as u32).to_be_bytes();
    EdgeRecord {
        ad: EdgeAd {
            id: s.id,
            region: s.region.clone(),
            gpu: "bench".to_owned(),
            gpu_class: s.gpu_class,
            encoders: vec!["nvenc-h264".to_owned()],
            resolutions: vec![format!("{}x{}", s.max_width, s.max_height)],
            max_fps: s.max_fps,
            capacity: s.total_slots,
            price_per_min: s.price_per_min,
            coord: s.coord,
            quic_addr: SocketAddr::from(([10, a, b, c], 4433)),
            cert_fingerprint: "00".repeat(32),
            echo_addr: Some(SocketAddr::from(([10, a, b, c], 4434))),
            issued_unix_ms: now_ms,
        },
        free_slots: s.total_slots,
        draining: !s.accepting,
        state: EdgeState::Alive,
        home: me.to_owned(),
        coord: None,
        coord_error: None,
        stored_coord: None,
    }
}

/// Writes every edge's record to the store, many writers at once (group commit batches them).
async fn preload(store: &Arc<RedbStore>, world: &World, me: &str) -> Result<()> {
    const WRITERS: usize = 1024;
    let now = now_unix_ms();
    let mut chunks: Vec<Vec<(String, Vec<u8>)>> = (0..WRITERS).map(|_| Vec::new()).collect();
    for (i, e) in world.edges.iter().enumerate() {
        let rec = record_of(i, e, me, now);
        chunks[i % WRITERS].push((rec.ad.id.to_string(), serde_json::to_vec(&rec)?));
    }
    let mut writers = tokio::task::JoinSet::new();
    for chunk in chunks {
        let store = store.clone();
        writers.spawn(async move {
            for (key, value) in chunk {
                store.put(Table::Edges, key, value).await?;
            }
            Ok::<(), edgeplay_broker::store::StoreError>(())
        });
    }
    while let Some(r) = writers.join_next().await {
        r.context("a store writer task failed")?
            .context("cannot write an edge record")?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Beat {
    id: EdgeId,
    capacity: u32,
    draining: bool,
}

/// The edges one heartbeat task sends for.
#[derive(Clone, Default)]
struct Shard {
    serving: Vec<Beat>,
    idle: Vec<Beat>,
}

/// Heartbeats of one class due by `t` s after the start: of `n` edges with period `period`, the
/// k-th heartbeat (from 1) is due at k·period/n, so they are spread evenly over the period.
fn due(n: usize, period: Duration, t: f64) -> u64 {
    if n == 0 || t <= 0.0 {
        0
    } else {
        (t * n as f64 / period.as_secs_f64()).floor() as u64
    }
}

/// Heartbeats the schedule offered by `t` s after its start, over all tasks.
fn offered(sizes: &[(usize, usize)], t: f64) -> u64 {
    sizes
        .iter()
        .map(|&(s, i)| due(s, SERVING_INTERVAL, t) + due(i, IDLE_INTERVAL, t))
        .sum()
}

#[derive(Default)]
struct Beats {
    applied: AtomicU64,
    errors: AtomicU64,
    /// Heartbeats that came later after the edge's previous one than the liveness deadline
    /// (3 periods): the sweep may have marked the edge dead meanwhile.
    overdue: AtomicU64,
    stop: AtomicBool,
}

/// One open-loop heartbeat sender: applies every heartbeat its schedule has made due (late ones
/// late, none skipped; it yields to the runtime every 64, as an edge link's task yields on its
/// socket), then sleeps until the next is due. Returns (start ns after `t0`, ns taken) of every
/// heartbeat.
async fn send_heartbeats(
    broker: Broker,
    shard: Shard,
    t0: Instant,
    beats: Arc<Beats>,
    seed: u64,
) -> Vec<(u64, u32)> {
    let mut rng = Rng::new(seed);
    let mut log = Vec::new();
    let classes = [
        (&shard.serving, SERVING_INTERVAL, true),
        (&shard.idle, IDLE_INTERVAL, false),
    ];
    let mut sent = [0u64; 2];
    let mut last: [Vec<Option<Instant>>; 2] = [
        vec![None; shard.serving.len()],
        vec![None; shard.idle.len()],
    ];
    'run: while !beats.stop.load(Ordering::Relaxed) {
        let t = t0.elapsed().as_secs_f64();
        for (c, &(list, period, serving)) in classes.iter().enumerate() {
            let due = due(list.len(), period, t);
            while sent[c] < due {
                if sent[c] % 256 == 0 && beats.stop.load(Ordering::Relaxed) {
                    break 'run;
                }
                let at = (sent[c] % list.len() as u64) as usize;
                let b = list[at];
                // A serving edge has a session, so fewer free slots than its capacity.
                let free = if serving {
                    rng.below(b.capacity as usize) as u32
                } else {
                    b.capacity
                };
                let start = Instant::now();
                let r = broker.heartbeat(b.id, free, b.draining).await;
                let took = start.elapsed();
                if let Some(prev) = last[c][at].replace(start)
                    && start - prev > period * MISSES
                {
                    beats.overdue.fetch_add(1, Ordering::Relaxed);
                }
                log.push((
                    nanos(start - t0),
                    u32::try_from(nanos(took)).unwrap_or(u32::MAX),
                ));
                if r.is_err() {
                    beats.errors.fetch_add(1, Ordering::Relaxed);
                }
                beats.applied.fetch_add(1, Ordering::Relaxed);
                sent[c] += 1;
                if sent[c] % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }
        let next = classes
            .iter()
            .zip(sent)
            .filter(|((list, _, _), _)| !list.is_empty())
            .map(|((list, period, _), s)| period.as_secs_f64() * (s + 1) as f64 / list.len() as f64)
            .fold(f64::INFINITY, f64::min)
            .min(3600.0);
        let at = t0 + Duration::from_secs_f64(next.max(0.0));
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
    log
}

/// CPU time (user + system) this process has used, all threads, from /proc/self/stat (in
/// USER_HZ ticks, 100 a second on Linux).
fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// How long the broker's sweep (`Liveness::poll_dead`, run every 100 ms under the registry
/// lock) takes over `n` tracked, alive edges, timed alone, ms, `reps` times.
fn sweep_ms(n: usize, reps: usize) -> Vec<f64> {
    let mut liveness = Liveness::new();
    let now = Instant::now();
    for i in 0..n {
        liveness.handle_heartbeat(edge_id(i), false, now);
    }
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            let dead = liveness.poll_dead(now);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            std::hint::black_box(dead);
            ms
        })
        .collect()
}

/// One placement window: `threads` threads placing back to back for `seconds`.
struct Window {
    threads: usize,
    loaded: bool,
    start: Instant,
    end: Instant,
    /// Broker time of each placement (candidates + pick, lock waits included), ns.
    placements: Vec<u64>,
    no_candidate: u64,
    pick_refused: u64,
    /// Heartbeats applied and offered during the window, and behind schedule at its end.
    applied: u64,
    offered: u64,
    backlog: u64,
    heartbeat_ns: Vec<u64>,
    /// CPU time this process used during the window (all its threads), s.
    cpu_s: f64,
}

impl Window {
    fn secs(&self) -> f64 {
        (self.end - self.start).as_secs_f64()
    }
}

/// What every placement window shares.
struct Placing<'a> {
    broker: &'a Broker,
    world: &'a World,
    players: &'a [Player],
    seconds: f64,
    seed: u64,
    /// Placements/s over all threads; 0 = back to back.
    rate: f64,
}

fn place_window(ctx: &Placing<'_>, threads: usize, window: usize, loaded: bool) -> Result<Window> {
    let Placing {
        broker,
        world,
        players,
        seconds,
        seed,
        rate,
    } = *ctx;
    let barrier = Barrier::new(threads + 1);
    let run = Duration::from_secs_f64(seconds);
    // Paced: each thread starts a placement every `interval`, the threads staggered.
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(threads as f64 / rate));
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                let barrier = &barrier;
                sc.spawn(move || {
                    let mut probed = Vec::with_capacity(8);
                    let mut samples = Vec::with_capacity(1 << 16);
                    let (mut none, mut refused) = (0u64, 0u64);
                    let mut j = (k * players.len() / threads + window * 7919) % players.len();
                    barrier.wait();
                    let start = Instant::now();
                    let deadline = start + run;
                    let mut next = interval.map(|i| start + i * k as u32 / threads as u32);
                    while Instant::now() < deadline {
                        if let (Some(at), Some(i)) = (next.as_mut(), interval) {
                            let now = Instant::now();
                            if *at > now {
                                std::thread::sleep(*at - now);
                            }
                            *at += i;
                        }
                        let p = &players[j];
                        let t = Instant::now();
                        let cands = broker.candidates(&p.req).unwrap_or_default();
                        let took = t.elapsed();
                        probe_all(world, seed, j, p, &cands, &mut probed);
                        let t = Instant::now();
                        let picked = if cands.is_empty() {
                            none += 1;
                            true
                        } else {
                            broker.pick(&p.req, &cands, &probed).is_ok()
                        };
                        samples.push(nanos(took + t.elapsed()));
                        if !picked {
                            refused += 1;
                        }
                        j = (j + 1) % players.len();
                    }
                    (samples, none, refused)
                })
            })
            .collect();
        let cpu0 = process_cpu_s();
        barrier.wait();
        let start = Instant::now();
        let mut w = Window {
            threads,
            loaded,
            start,
            end: start,
            placements: Vec::new(),
            no_candidate: 0,
            pick_refused: 0,
            applied: 0,
            offered: 0,
            backlog: 0,
            heartbeat_ns: Vec::new(),
            cpu_s: f64::NAN,
        };
        for h in handles {
            let (s, none, refused) = h.join().map_err(|_| anyhow!("a placing thread panicked"))?;
            w.placements.extend(s);
            w.no_candidate += none;
            w.pick_refused += refused;
        }
        w.end = Instant::now();
        if let (Some(a), Some(b)) = (cpu0, process_cpu_s()) {
            w.cpu_s = b - a;
        }
        Ok(w)
    })
}

fn part2(world: &World, players: &[Player], args: &Args) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let scratch = Scratch(
        std::env::temp_dir().join(format!("edgeplay-bench-placement-{}", std::process::id())),
    );
    std::fs::create_dir_all(&scratch.0)
        .with_context(|| format!("cannot create {}", scratch.0.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let me = BrokerEntry {
        id: "bench-broker".to_owned(),
        url: "http://127.0.0.1:0".to_owned(),
    };
    eprintln!(
        "part 2: writing {} edge records to redb in {} …",
        world.edges.len(),
        scratch.0.display()
    );
    let t = Instant::now();
    let broker = rt.block_on(async {
        let store = Arc::new(RedbStore::open(&scratch.0)?);
        store.announce(me.clone()).await?;
        preload(&store, world, &me.id).await?;
        let preload_s = t.elapsed().as_secs_f64();
        let key = BrokerKey::load_or_create(&scratch.0)?;
        let dyn_store: Arc<dyn Store> = store;
        let broker = Broker::start(Config {
            store: dyn_store,
            key,
            rate: RateLimit::default(),
            peers_every: Duration::from_millis(edgeplay_protocol::link::PEERS_EVERY_MS),
            lifecycle: edgeplay_broker::service::table::Lifecycle::default(),
        })
        .await?;
        Ok::<_, anyhow::Error>((broker, preload_s))
    });
    let (broker, preload_s) = broker?;
    let load_s = t.elapsed().as_secs_f64() - preload_s;

    let tasks = args.heartbeat_tasks;
    let mut shards = vec![Shard::default(); tasks];
    let mut rng = Rng::new(args.seed ^ 0xbea7);
    for (i, e) in world.edges.iter().enumerate() {
        let beat = Beat {
            id: e.spec.id,
            capacity: e.spec.total_slots,
            draining: !e.spec.accepting,
        };
        let shard = &mut shards[i % tasks];
        if rng.unit() * 100.0 < args.serving_pct {
            shard.serving.push(beat);
        } else {
            shard.idle.push(beat);
        }
    }
    let sizes: Vec<(usize, usize)> = shards
        .iter()
        .map(|s| (s.serving.len(), s.idle.len()))
        .collect();
    let serving: usize = sizes.iter().map(|s| s.0).sum();
    let idle: usize = sizes.iter().map(|s| s.1).sum();
    let rate =
        serving as f64 / SERVING_INTERVAL.as_secs_f64() + idle as f64 / IDLE_INTERVAL.as_secs_f64();
    let configs: Vec<usize> = if args.threads == 1 {
        vec![1]
    } else {
        vec![1, args.threads]
    };

    let sweep = sweep_ms(world.edges.len(), args.reps);
    let placing = Placing {
        broker: &broker,
        world,
        players,
        seconds: args.seconds,
        seed: args.seed,
        rate: args.rate,
    };

    // Baseline: the same windows before any heartbeat (nothing else holds the lock but the
    // broker's own sweep and orphan check).
    let mut windows = Vec::new();
    let mut n = 0;
    for rep in 0..args.reps {
        for &threads in &configs {
            let w = place_window(&placing, threads, n, false)?;
            eprintln!(
                "  no heartbeats, rep {}/{}, {threads} thread(s): {} placements",
                rep + 1,
                args.reps,
                w.placements.len()
            );
            windows.push(w);
            n += 1;
        }
    }

    let beats = Arc::new(Beats::default());
    let t0 = Instant::now();
    let senders: Vec<_> = shards
        .into_iter()
        .enumerate()
        .map(|(k, shard)| {
            rt.spawn(send_heartbeats(
                broker.clone(),
                shard,
                t0,
                beats.clone(),
                args.seed ^ (0x6ea7_0000 + k as u64),
            ))
        })
        .collect();
    eprintln!("  heartbeats started; warming up for {} s …", args.warmup);
    std::thread::sleep(Duration::from_secs_f64(args.warmup));
    let warm = t0.elapsed().as_secs_f64();
    let warm_applied = beats.applied.load(Ordering::Relaxed);
    let warm_offered = offered(&sizes, warm);

    for rep in 0..args.reps {
        for &threads in &configs {
            let before = beats.applied.load(Ordering::Relaxed);
            let mut w = place_window(&placing, threads, n, true)?;
            let after = beats.applied.load(Ordering::Relaxed);
            let (ts, te) = ((w.start - t0).as_secs_f64(), (w.end - t0).as_secs_f64());
            w.applied = after - before;
            w.offered = offered(&sizes, te) - offered(&sizes, ts);
            w.backlog = offered(&sizes, te).saturating_sub(after);
            eprintln!(
                "  heartbeats, rep {}/{}, {threads} thread(s): {} placements, heartbeats {:.0}/s applied of {:.0}/s offered",
                rep + 1,
                args.reps,
                w.placements.len(),
                w.applied as f64 / w.secs(),
                w.offered as f64 / w.secs()
            );
            windows.push(w);
            n += 1;
        }
    }
    beats.stop.store(true, Ordering::Relaxed);
    let end = t0.elapsed().as_secs_f64();
    let total_applied = beats.applied.load(Ordering::Relaxed);
    let logs = rt.block_on(async {
        let mut all = Vec::new();
        for s in senders {
            all.push(s.await.context("a heartbeat task failed")?);
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    for w in windows.iter_mut().filter(|w| w.loaded) {
        let (a, b) = (nanos(w.start - t0), nanos(w.end - t0));
        w.heartbeat_ns = logs
            .iter()
            .flatten()
            .filter(|(s, _)| (a..b).contains(s))
            .map(|&(_, d)| u64::from(d))
            .collect();
    }
    drop(broker);
    drop(rt);

    let pacing = if args.rate > 0.0 {
        format!(
            "the placing threads together start {} placements/s (paced, each thread on its own \
             schedule)",
            grouped(args.rate, 0)
        )
    } else {
        "each placing thread runs requests of the stream back to back, no pause (a saturating \
         load: far more placements/s than the HTTP front feeds)"
            .to_owned()
    };
    println!();
    println!(
        "## Part 2: placement through the broker's lock while heartbeats stream in\n\
         broker: the {} edges written to redb in a temp dir ({:.1} s) and loaded by \
         `Broker::start` ({:.1} s), the state `session-broker run` serves, with its liveness sweep \
         (every 100 ms) and orphan check (every 1 s), each walking its edges under the same \
         registry lock.\n\
         placement: {pacing}; a placement is \
         `Broker::candidates` (the locked part of POST /v1/sessions: index walk + the \
         candidates' records) then the client's probes (not timed) then `Broker::pick` (the \
         locked part of POST /v1/sessions/{{id}}/select); the time is both calls, lock waits \
         included; the store write, rate limit and HTTP of those requests are not in it.\n\
         heartbeats: {serving} serving edges ({} %) every {} ms + {idle} idle every {} s \
         = {:.0} heartbeats/s offered, open loop: {tasks} tokio tasks on a {cores}-worker runtime \
         call `Broker::heartbeat` (= `Service::apply_heartbeat`, what the edge link calls for each \
         heartbeat: registry lock, record, liveness, index upsert) on a fixed schedule, late \
         heartbeats applied late, none skipped. Coordinate reports (sent only when an edge's \
         coordinate moved) are not in the mix.\n\
         windows: {} s each; {} rep(s) of {} without heartbeats first (baseline), then \
         {} s of warm-up (one idle period, so every edge has heartbeated), then {} rep(s) of the \
         same under heartbeats, thread counts alternating. Cells: median (min–max) over the \
         repetitions.",
        world.edges.len(),
        preload_s,
        load_s,
        grouped(args.serving_pct, 1),
        SERVING_INTERVAL.as_millis(),
        IDLE_INTERVAL.as_secs(),
        rate,
        args.seconds,
        args.reps,
        configs
            .iter()
            .map(|t| format!("{t} thread(s)"))
            .collect::<Vec<_>>()
            .join(" / "),
        args.warmup,
        args.reps,
    );
    println!(
        "warm-up: {:.1} s, heartbeats applied {:.0}/s of {:.0}/s offered; whole loaded run: \
         {:.0}/s applied of {:.0}/s offered; heartbeats refused by the broker: {}; heartbeats \
         later than the liveness deadline after the edge's previous one (3 periods: the sweep \
         may have marked the edge dead): {}",
        warm,
        warm_applied as f64 / warm.max(1e-9),
        warm_offered as f64 / warm.max(1e-9),
        total_applied as f64 / end,
        offered(&sizes, end) as f64 / end,
        beats.errors.load(Ordering::Relaxed),
        beats.overdue.load(Ordering::Relaxed),
    );
    let behind_s = offered(&sizes, end).saturating_sub(total_applied) as f64 / rate.max(1e-9);
    if behind_s > 0.1 {
        println!(
            "THE HEARTBEAT SENDER FELL BEHIND its schedule: {behind_s:.1} s of heartbeats were \
             due but not applied when the load stopped; the rates below are what this machine \
             managed, not the offered load."
        );
    } else {
        println!("the heartbeat sender kept to its schedule ({behind_s:.2} s behind at the end).");
    }
    println!(
        "sweep: `Liveness::poll_dead` over {} tracked edges, timed alone: {} ms; the broker runs \
         it every 100 ms holding the registry lock, so once every edge has heartbeated a \
         placement can wait that long.",
        grouped(world.edges.len() as f64, 0),
        cell(&sweep, 2)
    );
    println!(
        "\n| heartbeats | placing threads | placements/s | p50 µs | p95 µs | p99 µs | max µs | no candidate | pick refused | heartbeats offered/s | applied/s | behind schedule at end | heartbeat apply p50 µs | p99 µs | process CPU, cores |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for loaded in [false, true] {
        for &threads in &configs {
            let ws: Vec<&Window> = windows
                .iter()
                .filter(|w| w.loaded == loaded && w.threads == threads)
                .collect();
            let col = |f: &dyn Fn(&Window) -> f64| ws.iter().map(|w| f(w)).collect::<Vec<f64>>();
            let lat: Vec<Latency> = ws
                .iter()
                .map(|w| latency_us(w.placements.clone()))
                .collect();
            let hb: Vec<Latency> = ws
                .iter()
                .map(|w| latency_us(w.heartbeat_ns.clone()))
                .collect();
            let l = |f: &dyn Fn(&Latency) -> f64, v: &[Latency]| {
                cell(&v.iter().map(f).collect::<Vec<_>>(), 1)
            };
            let (hb_cells, name) = if loaded {
                (
                    format!(
                        "{} | {} | {} ms | {} | {}",
                        cell(&col(&|w| w.offered as f64 / w.secs()), 0),
                        cell(&col(&|w| w.applied as f64 / w.secs()), 0),
                        cell(&col(&|w| w.backlog as f64 / rate.max(1e-9) * 1e3), 1),
                        l(&|x| x.p50, &hb),
                        l(&|x| x.p99, &hb),
                    ),
                    "on",
                )
            } else {
                ("– | – | – | – | –".to_owned(), "none")
            };
            println!(
                "| {name} | {threads} | {} | {} | {} | {} | {} | {} | {} | {hb_cells} | {} |",
                cell(&col(&|w| w.placements.len() as f64 / w.secs()), 0),
                l(&|x| x.p50, &lat),
                l(&|x| x.p95, &lat),
                l(&|x| x.p99, &lat),
                l(&|x| x.max, &lat),
                cell(&col(&|w| w.no_candidate as f64), 0),
                cell(&col(&|w| w.pick_refused as f64), 0),
                cell(&col(&|w| w.cpu_s / w.secs()), 2),
            );
        }
    }
    println!(
        "\nplacements/s: placements in the window over its length, all placing threads \
         together. No candidate: requests nothing meets (the stream has a few). Pick refused: \
         the pick found no measured candidate still meeting the request (a heartbeat filled it \
         between the two calls). Behind schedule at end: heartbeats due but not yet applied when \
         the window ended, as time at the offered rate; a serving edge is marked dead after \
         {} ms without a heartbeat, so more than about 1,000 ms behind would start failing \
         edges. Heartbeat apply: time of one `Broker::heartbeat` call, lock wait included. \
         Process CPU: CPU time all of this process's threads used in the window over its length \
         (at most the core count; less means other processes had the cores).",
        (SERVING_INTERVAL * MISSES).as_millis()
    );
    println!("\nraw windows (in run order):");
    for (i, w) in windows.iter().enumerate() {
        let lat = latency_us(w.placements.clone());
        println!(
            "  {:>2}. heartbeats {:<4} threads {:>2}: {:.2} s, {} placements ({:.0}/s), p50 {:.1} µs, p99 {:.1} µs, CPU {:.2} cores{}",
            i + 1,
            if w.loaded { "on" } else { "none" },
            w.threads,
            w.secs(),
            lat.n,
            lat.n as f64 / w.secs(),
            lat.p50,
            lat.p99,
            w.cpu_s / w.secs(),
            if w.loaded {
                format!(
                    "; heartbeats {:.0}/s applied of {:.0}/s offered, {} behind at end",
                    w.applied as f64 / w.secs(),
                    w.offered as f64 / w.secs(),
                    w.backlog
                )
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => return Ok(()),
        Err(e) => {
            // A bad flag: the message and the usage, without a backtrace.
            eprintln!("{e:#}");
            std::process::exit(2);
        }
    };
    println!("# placement bench");
    println!(
        "machine: {}; load average (1, 5, 15 min) at start: {}",
        machine(),
        load_average()
    );
    let t0 = Instant::now();
    let (mut world, landmarks) = build_world(args.seed, args.edges);
    let l = derive_coordinates(&mut world, &landmarks, args.seed);
    let ps = players(&world, &l, args.requests, args.seed);
    println!(
        "world: {} edges in {CITIES} cities on {} continents, {} requests, seed {}, \
         ≤ {} candidates per {} ms square; world + Vivaldi {:.1} s",
        args.edges,
        CONTINENTS.len(),
        args.requests,
        args.seed,
        args.per_square,
        args.square_ms,
        t0.elapsed().as_secs_f64(),
    );
    part1(&world, &ps, &args);
    println!("\nload average after part 1: {}", load_average());
    if args.load {
        part2(&world, &ps, &args)?;
    }
    println!("\nload average at end: {}", load_average());
    Ok(())
}
