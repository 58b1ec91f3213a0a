//! `cargo xtask bench placement`: the broker's placement at scale in a synthetic world.
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
//! Three strategies on the same request stream, interleaved request by request:
//! - **index+probe** (ours): `Index::candidates` (K = 8), the client's min-of-3 probes, `pick`;
//! - **scan+probe**: every edge scored by coordinates, best 8 probed the same way (the baseline
//!   the index must match in quality and beat in time; run on every `--scan-every`th request);
//! - **coords only**: the index's best candidate by coordinates, no probing.
//!
//! Placement time is the broker's work only (candidates + pick), not the probes' network time.
//! Quality: share of sessions on an edge within 5 ms of the best true RTT among the edges that
//! meet the request.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use edgeplay_broker::placement::{EdgeSpec, Index, IndexConfig, Request};
use edgeplay_protocol::coords::{Coord, Vivaldi};
use edgeplay_protocol::hash::SplitMix64;
use edgeplay_protocol::token::EdgeId;

struct Args {
    edges: usize,
    requests: usize,
    scan_every: usize,
    seed: u64,
    per_square: usize,
    square_ms: f64,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        edges: 500_000,
        requests: 20_000,
        scan_every: 20,
        seed: 1,
        per_square: IndexConfig::default().max_per_square,
        square_ms: IndexConfig::default().diversity_ms,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| anyhow!("{name} needs a value"));
        match flag.as_str() {
            "--edges" => a.edges = value("--edges")?.parse().context("--edges")?,
            "--requests" => a.requests = value("--requests")?.parse().context("--requests")?,
            "--scan-every" => {
                a.scan_every = value("--scan-every")?.parse().context("--scan-every")?;
            }
            "--seed" => a.seed = value("--seed")?.parse().context("--seed")?,
            "--per-square" => {
                a.per_square = value("--per-square")?.parse().context("--per-square")?;
            }
            "--square-ms" => a.square_ms = value("--square-ms")?.parse().context("--square-ms")?,
            other => bail!(
                "unknown flag `{other}`: use --edges N, --requests N, --scan-every N, --seed N, --per-square N, --square-ms MS"
            ),
        }
    }
    if a.edges < 10_000 || a.requests == 0 || a.scan_every == 0 {
        bail!("need --edges ≥ 10000, --requests ≥ 1 and --scan-every ≥ 1");
    }
    Ok(a)
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

/// The client probes every candidate (not timed: that is network time), then the broker picks;
/// returns the pick's time and the chosen edge's true RTT.
fn probe_and_pick(
    world: &World,
    index: &Index,
    rng: &mut Rng,
    p: &Player,
    cands: &[EdgeId],
    probed: &mut Vec<(EdgeId, f64)>,
) -> (Duration, Option<f64>) {
    probed.clear();
    for c in cands {
        probed.push((*c, world.probe(rng, p.city, p.access, index_of(c))));
    }
    let t = Instant::now();
    let pick = index.pick(&p.req, cands, probed).ok();
    let took = t.elapsed();
    (
        took,
        pick.map(|pk| world.true_rtt(p.city, p.access, index_of(&pk.edge))),
    )
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

#[derive(Default)]
struct Strategy {
    times: Vec<Duration>,
    within_5ms: usize,
    placed: usize,
    failed: usize,
    excess_ms: Vec<f64>,
}

impl Strategy {
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

    fn report(&mut self, name: &str) {
        self.times.sort();
        self.excess_ms.sort_by(f64::total_cmp);
        let q = |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p) as usize];
        let total: Duration = self.times.iter().sum();
        let n = self.times.len();
        let per_s = n as f64 / total.as_secs_f64();
        let asked = (self.placed + self.failed).max(1);
        println!(
            "{name:<14} {n:>7} {per_s:>12.0} {:>9.1} {:>9.1} {:>9.1} {:>8.2}% {:>8.2} {:>6}",
            q(&self.times, 0.5).as_secs_f64() * 1e6,
            q(&self.times, 0.99).as_secs_f64() * 1e6,
            self.times[n - 1].as_secs_f64() * 1e6,
            100.0 * self.within_5ms as f64 / asked as f64,
            self.excess_ms
                .get(self.excess_ms.len() * 95 / 100)
                .copied()
                .unwrap_or(f64::NAN),
            self.failed,
        );
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let t0 = Instant::now();
    let (mut world, landmarks) = build_world(args.seed, args.edges);
    let l = derive_coordinates(&mut world, &landmarks, args.seed);
    let ps = players(&world, &l, args.requests, args.seed);
    let world_s = t0.elapsed();
    let t1 = Instant::now();
    let mut index = Index::new(IndexConfig {
        max_per_square: args.per_square,
        diversity_ms: args.square_ms,
        ..IndexConfig::default()
    });
    for e in &world.edges {
        index.upsert(e.spec.clone());
    }
    let index_s = t1.elapsed();
    println!(
        "world: {} edges in {CITIES} cities on {} continents, {} requests, seed {}, \
         ≤ {} candidates per {} ms square; \
         world + Vivaldi {:.1} s, index build {:.1} s",
        args.edges,
        CONTINENTS.len(),
        args.requests,
        args.seed,
        args.per_square,
        args.square_ms,
        world_s.as_secs_f64(),
        index_s.as_secs_f64()
    );

    let mut rng = Rng::new(args.seed ^ 0x0b5e);
    let (mut ours, mut scan, mut coords) = (
        Strategy::default(),
        Strategy::default(),
        Strategy::default(),
    );
    let mut probed = Vec::with_capacity(8);
    for (i, p) in ps.iter().enumerate() {
        let best = world.best_true(p);
        if !best.is_finite() {
            continue;
        }
        let truth = |id: &EdgeId| world.true_rtt(p.city, p.access, index_of(id));
        // Ours: index, probes (not timed: network), pick.
        let t = Instant::now();
        let cands = index.candidates(&p.req);
        let took = t.elapsed();
        let (pick_took, chosen) = probe_and_pick(&world, &index, &mut rng, p, &cands, &mut probed);
        ours.record(took + pick_took, chosen, best);

        // Coordinates alone: the index's best by coordinates, no probing.
        let t = Instant::now();
        let first = index.candidates(&p.req).first().copied();
        coords.record(t.elapsed(), first.as_ref().map(truth), best);

        // Plain scan by coordinates, then the same probing.
        if i % args.scan_every == 0 {
            let t = Instant::now();
            let cands: Vec<EdgeId> = index
                .scan_candidates(&p.req)
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.1)
                .collect();
            let took = t.elapsed();
            let (pick_took, chosen) =
                probe_and_pick(&world, &index, &mut rng, p, &cands, &mut probed);
            scan.record(took + pick_took, chosen, best);
        }
    }
    println!(
        "{:<14} {:>7} {:>12} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6}",
        "strategy", "n", "placements/s", "p50 µs", "p99 µs", "max µs", "≤5 ms", "p95 +ms", "failed"
    );
    ours.report("index+probe");
    scan.report("scan+probe");
    coords.report("coords only");
    println!(
        "placements/s: one thread, broker work only (candidates + pick); probes are the client's \
         network time and not counted. ≤5 ms: share of sessions within 5 ms of the best true RTT \
         among edges meeting the request; p95 +ms: 95th percentile of the excess over that best."
    );
    Ok(())
}
