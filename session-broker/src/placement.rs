//! Placement: narrow ~500k edges to K candidates without scanning them, then pick the one the
//! player measured fastest.
//!
//! Sans-IO and synchronous: the registry feeds edge changes in ([`Index::upsert`],
//! [`Index::remove`]), a request asks for [`Index::candidates`], the client probes them, and
//! [`Index::pick`] decides on the measured RTTs.
//!
//! How the index avoids a scan: edges live in square cells of the Vivaldi plane, one grid per GPU
//! class. Inside a cell, edges are kept sorted by their *static score* (height plus reputation
//! and load penalties), the part of the score that does not depend on the player. A request
//! walks rings of cells outward from the player's cell over the grids of every class that
//! satisfies it, and inside a cell stops at the first edge whose static score alone cannot beat
//! the K-th best so far; it stops walking when a ring's nearest possible point is farther than
//! that K-th best. Price, capacity and media limits are checked only on edges that reach that
//! point. Coordinates are an estimate, so the K candidates are probed; the pick trusts the
//! measurement, not the coordinate.
//!
//! ```
//! use edgeplay_broker::placement::{EdgeSpec, Index, IndexConfig, Request};
//! use edgeplay_protocol::coords::Coord;
//! use edgeplay_protocol::token::EdgeId;
//!
//! let mut index = Index::new(IndexConfig::default());
//! for i in 0..20u8 {
//!     let coord = Coord { x: f64::from(i) * 10.0, y: 0.0, height: 1.0 };
//!     index.upsert(EdgeSpec { coord, ..EdgeSpec::example(EdgeId([i; 32]), "eu") });
//! }
//! let req = Request { coord: Some(Coord { x: 42.0, y: 0.0, height: 1.0 }), ..Request::default() };
//! let cands = index.candidates(&req);
//! assert_eq!(cands.len(), 8);
//! assert_eq!(cands[0], EdgeId([4; 32]));
//! let measured: Vec<(EdgeId, f64)> = cands.iter().map(|&e| (e, if e == EdgeId([5; 32]) { 3.0 } else { 20.0 })).collect();
//! assert_eq!(index.pick(&req, &cands, &measured).unwrap().edge, EdgeId([5; 32]));
//! ```

use std::collections::HashMap;

use edgeplay_protocol::coords::Coord;
use edgeplay_protocol::token::EdgeId;
use serde::{Deserialize, Serialize};

/// GPU classes are small ordinals: a request for class `c` is met by any class `≥ c`.
pub const GPU_CLASSES: usize = 8;

/// Tuning of the index.
#[derive(Debug, Clone)]
pub struct IndexConfig {
    /// Side of a grid cell, in ms of the coordinate space.
    pub cell_ms: f64,
    /// Candidates per request (K).
    pub k: usize,
    /// Added to the score of an edge with reputation 0 (scaled down to 0 at reputation 1).
    pub reputation_weight_ms: f64,
    /// Added to the score of a full edge (scaled by the used share of its slots).
    pub load_weight_ms: f64,
    /// Edges below this reputation are never offered.
    pub min_reputation: f32,
    /// At most this many candidates share one diversity square (see `diversity_ms`): routes
    /// that coordinates cannot model (one city pair's detour) are found only by probing
    /// somewhere else too.
    pub max_per_square: usize,
    /// Side of a diversity square, in ms of the coordinate space.
    pub diversity_ms: f64,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            cell_ms: 4.0,
            k: 8,
            reputation_weight_ms: 4.0,
            load_weight_ms: 1.0,
            min_reputation: 0.1,
            max_per_square: 8,
            diversity_ms: 8.0,
        }
    }
}

/// What the index needs to know of an edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeSpec {
    /// The edge (its public key).
    pub id: EdgeId,
    /// Region name as the edge reports it (e.g. `eu-west`).
    pub region: String,
    /// Its Vivaldi coordinate.
    pub coord: Coord,
    /// GPU class ordinal (0 = entry, higher = stronger), `< GPU_CLASSES`.
    pub gpu_class: u8,
    /// Largest frame it encodes, pixels wide.
    pub max_width: u32,
    /// Largest frame it encodes, pixels high.
    pub max_height: u32,
    /// Highest frame rate at its largest frame.
    pub max_fps: u32,
    /// Price in micro-units of the settlement token per minute.
    pub price_per_min: u64,
    /// Sessions it can take now.
    pub free_slots: u32,
    /// Sessions it can take when idle.
    pub total_slots: u32,
    /// Checker reputation in [0, 1].
    pub reputation: f32,
    /// False while draining or dead: kept out of placement.
    pub accepting: bool,
}

impl EdgeSpec {
    /// A ready, mid-range edge at the origin (tests and docs start from it).
    pub fn example(id: EdgeId, region: &str) -> Self {
        EdgeSpec {
            id,
            region: region.to_owned(),
            coord: Coord::default(),
            gpu_class: 1,
            max_width: 1920,
            max_height: 1080,
            max_fps: 60,
            price_per_min: 1000,
            free_slots: 4,
            total_slots: 4,
            reputation: 1.0,
            accepting: true,
        }
    }
}

/// A player's request for a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The player's coordinate, when it has one.
    #[serde(default)]
    pub coord: Option<Coord>,
    /// Region hint: used (as a filter, from the region's centre) when there is no coordinate.
    #[serde(default)]
    pub region: Option<String>,
    /// Frame width wanted.
    pub width: u32,
    /// Frame height wanted.
    pub height: u32,
    /// Frame rate wanted.
    pub fps: u32,
    /// Lowest GPU class accepted.
    #[serde(default)]
    pub min_gpu_class: u8,
    /// Highest price accepted (micro-units per minute); none = any.
    #[serde(default)]
    pub max_price_per_min: Option<u64>,
}

impl Default for Request {
    fn default() -> Self {
        Request {
            coord: None,
            region: None,
            width: 1280,
            height: 720,
            fps: 60,
            min_gpu_class: 0,
            max_price_per_min: None,
        }
    }
}

/// Why no edge was picked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlacementError {
    /// The request has neither a usable coordinate nor a region (the request decoder refuses
    /// such a request first).
    #[error(
        "request has no valid coordinate and no region: send `coord`, or `region` (one the edges list)"
    )]
    NoLocation,
    /// The request has no coordinate, and no indexed edge is in the region it names.
    #[error(
        "no registered edge is in region `{0}`, and the request has no coordinate: send `coord`, or one of the regions GET /v1/edges lists"
    )]
    UnknownRegion(String),
    /// No indexed edge could meet the request, however free: the sentence says what to relax.
    #[error("no registered edge could ever meet the request, free or not: {0}")]
    Unmet(String),
    /// No measurement names a candidate that still meets the request.
    #[error(
        "none of the measured edges is a current candidate that meets the request: ask for new candidates and measure them (at least one finite RTT)"
    )]
    NoMeasuredCandidate,
}

/// The edge chosen and what it was chosen on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pick {
    /// The chosen edge.
    pub edge: EdgeId,
    /// The RTT the client measured to it.
    pub rtt_ms: f64,
}

#[derive(Debug, Clone, Copy)]
struct Item {
    static_score: f32,
    x: f32,
    y: f32,
    slot: u32,
}

#[derive(Debug)]
struct Entry {
    spec: EdgeSpec,
    region: u16,
    cell: u64,
    static_score: f32,
}

#[derive(Debug, Clone, Copy)]
struct Bounds {
    min: (i32, i32),
    max: (i32, i32),
}

#[derive(Debug, Default, Clone, Copy)]
struct RegionStats {
    sum_x: f64,
    sum_y: f64,
    n: u64,
}

/// The placement index (see the module docs).
#[derive(Debug)]
pub struct Index {
    cfg: IndexConfig,
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    by_id: HashMap<EdgeId, u32>,
    cells: HashMap<u64, Vec<Item>>,
    bounds: [Option<Bounds>; GPU_CLASSES],
    region_ids: HashMap<String, u16>,
    regions: Vec<RegionStats>,
}

fn cell_key(class: u8, cx: i32, cy: i32) -> u64 {
    (u64::from(class) << 56)
        ^ ((u64::from(cx as u32) & 0x0fff_ffff) << 28)
        ^ (u64::from(cy as u32) & 0x0fff_ffff)
}

/// Running top-K, kept sorted ascending by score, at most `cap` per diversity square. The result
/// does not depend on the order of offers: it is the best K of the best `cap` of each square.
struct TopK {
    k: usize,
    cap: usize,
    items: Vec<(f64, u32, u64)>,
}

impl TopK {
    fn new(cfg: &IndexConfig) -> Self {
        TopK {
            k: cfg.k.max(1),
            cap: cfg.max_per_square.max(1),
            items: Vec::with_capacity(cfg.k + 1),
        }
    }

    fn worst(&self) -> f64 {
        if self.items.len() < self.k {
            f64::INFINITY
        } else {
            self.items[self.items.len() - 1].0
        }
    }

    fn offer(&mut self, score: f64, slot: u32, square: u64) {
        if score >= self.worst() {
            return;
        }
        let mut same = 0;
        let mut last_same = 0;
        for (i, it) in self.items.iter().enumerate() {
            if it.2 == square {
                same += 1;
                last_same = i;
            }
        }
        if same >= self.cap {
            if score >= self.items[last_same].0 {
                return;
            }
            self.items.remove(last_same);
        }
        let at = self.items.partition_point(|&(s, _, _)| s <= score);
        self.items.insert(at, (score, slot, square));
        self.items.truncate(self.k);
    }
}

impl Index {
    /// An empty index.
    pub fn new(cfg: IndexConfig) -> Self {
        Index {
            cfg,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            cells: HashMap::new(),
            bounds: [None; GPU_CLASSES],
            region_ids: HashMap::new(),
            regions: Vec::new(),
        }
    }

    /// Edges indexed.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when no edge is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Up to `k` distinct indexed edges picked at random from `seed`, in bounded work (all of
    /// them when there are at most `k`, else at most `4k` draws): the peers an edge measures
    /// its coordinate against.
    pub fn sample(&self, k: usize, seed: u64) -> Vec<EdgeId> {
        if self.by_id.len() <= k {
            return self.by_id.keys().copied().collect();
        }
        let mut rng = edgeplay_game::hash::SplitMix64(seed);
        let mut out = Vec::with_capacity(k);
        for _ in 0..k.saturating_mul(4) {
            if out.len() >= k {
                break;
            }
            let i = (rng.next_u64() % self.slots.len() as u64) as usize;
            if let Some(e) = &self.slots[i]
                && !out.contains(&e.spec.id)
            {
                out.push(e.spec.id);
            }
        }
        out
    }

    /// The indexed record of an edge.
    pub fn get(&self, id: &EdgeId) -> Option<&EdgeSpec> {
        let slot = *self.by_id.get(id)?;
        self.slots[slot as usize].as_ref().map(|e| &e.spec)
    }

    fn static_score(&self, s: &EdgeSpec) -> f32 {
        let rep = f64::from(s.reputation.clamp(0.0, 1.0));
        let used = if s.total_slots == 0 {
            1.0
        } else {
            1.0 - f64::from(s.free_slots.min(s.total_slots)) / f64::from(s.total_slots)
        };
        (s.coord.height
            + self.cfg.reputation_weight_ms * (1.0 - rep)
            + self.cfg.load_weight_ms * used) as f32
    }

    fn square_of(&self, x: f32, y: f32) -> u64 {
        let f = |v: f32| {
            (f64::from(v) / self.cfg.diversity_ms)
                .floor()
                .clamp(-1.0e8, 1.0e8) as i32
        };
        cell_key(0, f(x), f(y))
    }

    fn cell_of(&self, c: &Coord) -> (i32, i32) {
        let f = |v: f64| (v / self.cfg.cell_ms).floor().clamp(-1.0e8, 1.0e8) as i32;
        (f(c.x), f(c.y))
    }

    /// Adds or replaces an edge. Invalid coordinates or classes keep it out of the index (it is
    /// removed if it was in), since it could not be placed sensibly.
    pub fn upsert(&mut self, mut spec: EdgeSpec) {
        self.remove(&spec.id);
        if !spec.coord.is_valid() || usize::from(spec.gpu_class) >= GPU_CLASSES {
            return;
        }
        spec.reputation = if spec.reputation.is_finite() {
            spec.reputation.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let region = match self.region_ids.get(&spec.region) {
            Some(&r) => r,
            None => {
                let r = self.regions.len() as u16;
                self.region_ids.insert(spec.region.clone(), r);
                self.regions.push(RegionStats::default());
                r
            }
        };
        let rs = &mut self.regions[usize::from(region)];
        rs.sum_x += spec.coord.x;
        rs.sum_y += spec.coord.y;
        rs.n += 1;
        let (cx, cy) = self.cell_of(&spec.coord);
        let class = spec.gpu_class;
        let key = cell_key(class, cx, cy);
        let b = &mut self.bounds[usize::from(class)];
        *b = Some(match *b {
            None => Bounds {
                min: (cx, cy),
                max: (cx, cy),
            },
            Some(b) => Bounds {
                min: (b.min.0.min(cx), b.min.1.min(cy)),
                max: (b.max.0.max(cx), b.max.1.max(cy)),
            },
        });
        let static_score = self.static_score(&spec);
        let item = Item {
            static_score,
            x: spec.coord.x as f32,
            y: spec.coord.y as f32,
            slot: 0,
        };
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        self.by_id.insert(spec.id, slot);
        self.slots[slot as usize] = Some(Entry {
            spec,
            region,
            cell: key,
            static_score,
        });
        let cell = self.cells.entry(key).or_default();
        let at = cell.partition_point(|i| i.static_score <= static_score);
        cell.insert(at, Item { slot, ..item });
    }

    /// Removes an edge; unknown ids are ignored.
    pub fn remove(&mut self, id: &EdgeId) -> Option<EdgeSpec> {
        let slot = self.by_id.remove(id)?;
        let entry = self.slots[slot as usize].take()?;
        self.free.push(slot);
        let rs = &mut self.regions[usize::from(entry.region)];
        rs.sum_x -= entry.spec.coord.x;
        rs.sum_y -= entry.spec.coord.y;
        rs.n -= 1;
        if let Some(cell) = self.cells.get_mut(&entry.cell) {
            let from = cell.partition_point(|i| i.static_score < entry.static_score);
            if let Some(p) = cell[from..].iter().position(|i| i.slot == slot) {
                cell.remove(from + p);
            }
            if cell.is_empty() {
                self.cells.remove(&entry.cell);
            }
        }
        Some(entry.spec)
    }

    fn eligible(&self, s: &EdgeSpec, req: &Request, region: Option<u16>, e_region: u16) -> bool {
        s.accepting
            && s.free_slots > 0
            && s.gpu_class >= req.min_gpu_class
            && s.reputation >= self.cfg.min_reputation
            && s.max_width >= req.width
            && s.max_height >= req.height
            && s.max_fps >= req.fps
            && req.max_price_per_min.is_none_or(|m| s.price_per_min <= m)
            && region.is_none_or(|r| r == e_region)
    }

    /// Where a request searches from, and the region it is limited to (no coordinate only).
    fn origin(&self, req: &Request) -> Result<(Coord, Option<u16>), PlacementError> {
        if let Some(c) = req.coord.filter(Coord::is_valid) {
            return Ok((c, None));
        }
        let name = req.region.as_ref().ok_or(PlacementError::NoLocation)?;
        let unknown = || PlacementError::UnknownRegion(name.clone());
        let r = *self.region_ids.get(name).ok_or_else(unknown)?;
        let s = self.regions[usize::from(r)];
        if s.n == 0 {
            return Err(unknown());
        }
        let n = s.n as f64;
        Ok((
            Coord {
                x: s.sum_x / n,
                y: s.sum_y / n,
                height: 0.0,
            },
            Some(r),
        ))
    }

    /// Up to K edges that meet the request, best score first (estimated RTT plus penalties).
    /// Empty when nothing meets it, or when the request has no location.
    pub fn candidates(&self, req: &Request) -> Vec<EdgeId> {
        self.candidates_scored(req)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, id)| id)
            .collect()
    }

    /// [`Index::candidates`] with each candidate's score, or why there is no origin.
    pub fn candidates_scored(&self, req: &Request) -> Result<Vec<(f64, EdgeId)>, PlacementError> {
        let (p, region) = self.origin(req)?;
        let mut top = TopK::new(&self.cfg);
        let (pcx, pcy) = self.cell_of(&p);
        let cell = self.cfg.cell_ms;
        for class in usize::from(req.min_gpu_class)..GPU_CLASSES {
            let Some(b) = self.bounds[class] else {
                continue;
            };
            let rmax = [
                (pcx - b.min.0).abs(),
                (pcx - b.max.0).abs(),
                (pcy - b.min.1).abs(),
                (pcy - b.max.1).abs(),
            ]
            .into_iter()
            .max()
            .unwrap_or(0);
            for r in 0..=rmax {
                let ring_floor = f64::from((r - 1).max(0)) * cell + p.height;
                if ring_floor >= top.worst() {
                    break;
                }
                let (x0, x1) = ((pcx - r).max(b.min.0), (pcx + r).min(b.max.0));
                let (y0, y1) = ((pcy - r).max(b.min.1), (pcy + r).min(b.max.1));
                for cx in x0..=x1 {
                    if (cx - pcx).abs() == r {
                        for cy in y0..=y1 {
                            self.scan_cell(class as u8, cx, cy, &p, req, region, &mut top);
                        }
                    } else {
                        // Inner columns touch only the ring's bottom and top rows.
                        for cy in [pcy - r, pcy + r] {
                            if (y0..=y1).contains(&cy) {
                                self.scan_cell(class as u8, cx, cy, &p, req, region, &mut top);
                            }
                        }
                    }
                }
            }
        }
        Ok(top
            .items
            .into_iter()
            .filter_map(|(s, slot, _)| self.slots[slot as usize].as_ref().map(|e| (s, e.spec.id)))
            .collect())
    }

    /// What a session request is offered: [`Index::candidates_scored`], and when that is empty,
    /// whether any indexed edge could ever meet the request. `Err(`[`PlacementError::Unmet`]`)`
    /// (saying what to relax) when none could, whatever its load, draining or reputation;
    /// `Ok` and empty when one could once it has a free slot again, or when no edge is indexed
    /// at all (edges come and go: that is "nothing now", not "never").
    pub fn offer(&self, req: &Request) -> Result<Vec<(f64, EdgeId)>, PlacementError> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let found = self.candidates_scored(req)?;
        if !found.is_empty() {
            return Ok(found);
        }
        let region = self.origin(req)?.1;
        match self.unmet(req, region) {
            Some(relax) => Err(PlacementError::Unmet(relax)),
            None => Ok(found),
        }
    }

    /// `None` when some indexed edge (of the request's region, when it is limited to one) meets
    /// what the request asks of an edge itself (GPU class, frame size, frame rate, price),
    /// whatever its free slots; else what to relax to reach the edge that misses the fewest of
    /// those (the best fit). One pass over the index, without allocating, taken only when no
    /// candidate was found; it stops at the first edge that fits.
    fn unmet(&self, req: &Request, region: Option<u16>) -> Option<String> {
        let mut best: Option<(usize, &EdgeSpec)> = None;
        for e in self.slots.iter().flatten() {
            if region.is_some_and(|r| r != e.region) {
                continue;
            }
            let misses = Self::misses(&e.spec, req).iter().filter(|m| **m).count();
            if misses == 0 {
                return None;
            }
            if best.is_none_or(|(m, _)| misses < m) {
                best = Some((misses, &e.spec));
            }
        }
        let (_, fit) = best?;
        let [class, width, height, fps, price] = Self::misses(fit, req);
        let relax: Vec<String> = [
            (class, format!("relax `min_gpu_class` to {}", fit.gpu_class)),
            (width, format!("relax `width` to {}", fit.max_width)),
            (height, format!("relax `height` to {}", fit.max_height)),
            (fps, format!("relax `fps` to {}", fit.max_fps)),
            (
                price,
                format!("raise `max_price_per_min` to {}", fit.price_per_min),
            ),
        ]
        .into_iter()
        .filter_map(|(miss, say)| miss.then_some(say))
        .collect();
        Some(format!(
            "{} (the best fit, edge {}, offers {}x{} at {} fps, GPU class {}, price {} per minute)",
            relax.join(", "),
            fit.id,
            fit.max_width,
            fit.max_height,
            fit.max_fps,
            fit.gpu_class,
            fit.price_per_min,
        ))
    }

    /// What `req` asks of `s` that `s` lacks: GPU class, width, height, fps, price.
    fn misses(s: &EdgeSpec, req: &Request) -> [bool; 5] {
        [
            s.gpu_class < req.min_gpu_class,
            s.max_width < req.width,
            s.max_height < req.height,
            s.max_fps < req.fps,
            req.max_price_per_min.is_some_and(|m| s.price_per_min > m),
        ]
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one hot inner step of the ring walk"
    )]
    fn scan_cell(
        &self,
        class: u8,
        cx: i32,
        cy: i32,
        p: &Coord,
        req: &Request,
        region: Option<u16>,
        top: &mut TopK,
    ) {
        let Some(items) = self.cells.get(&cell_key(class, cx, cy)) else {
            return;
        };
        let cell = self.cfg.cell_ms;
        // Nearest point of the cell to the player.
        let nx = p.x.clamp(f64::from(cx) * cell, f64::from(cx + 1) * cell);
        let ny = p.y.clamp(f64::from(cy) * cell, f64::from(cy + 1) * cell);
        let floor = (p.x - nx).hypot(p.y - ny) + p.height;
        for it in items {
            if floor + f64::from(it.static_score) >= top.worst() {
                break;
            }
            let score = (p.x - f64::from(it.x)).hypot(p.y - f64::from(it.y))
                + p.height
                + f64::from(it.static_score);
            if score >= top.worst() {
                continue;
            }
            let Some(e) = self.slots[it.slot as usize].as_ref() else {
                continue;
            };
            if self.eligible(&e.spec, req, region, e.region) {
                top.offer(score, it.slot, self.square_of(it.x, it.y));
            }
        }
    }

    /// The baseline the index replaces: every edge scored, the best K kept. Same answer as
    /// [`Index::candidates_scored`] up to ties; kept for tests and the bench.
    pub fn scan_candidates(&self, req: &Request) -> Result<Vec<(f64, EdgeId)>, PlacementError> {
        let (p, region) = self.origin(req)?;
        let mut top = TopK::new(&self.cfg);
        for (slot, e) in self.slots.iter().enumerate() {
            let Some(e) = e else { continue };
            if !self.eligible(&e.spec, req, region, e.region) {
                continue;
            }
            let c = &e.spec.coord;
            let score = (p.x - f64::from(c.x as f32)).hypot(p.y - f64::from(c.y as f32))
                + p.height
                + f64::from(e.static_score);
            top.offer(score, slot as u32, self.square_of(c.x as f32, c.y as f32));
        }
        Ok(top
            .items
            .into_iter()
            .filter_map(|(s, slot, _)| self.slots[slot as usize].as_ref().map(|e| (s, e.spec.id)))
            .collect())
    }

    /// The lowest measured RTT among `candidates` that still meets the request. Measurements of
    /// edges that are not candidates, or that are not finite or negative, are ignored. Zero is a
    /// real measurement: browsers report ICE round-trip times in whole milliseconds, so a
    /// loopback or same-host edge reads 0.
    pub fn pick(
        &self,
        req: &Request,
        candidates: &[EdgeId],
        measured: &[(EdgeId, f64)],
    ) -> Result<Pick, PlacementError> {
        let region = self.origin(req).ok().and_then(|(_, r)| r);
        measured
            .iter()
            .filter(|(id, rtt)| rtt.is_finite() && *rtt >= 0.0 && candidates.contains(id))
            .filter(|(id, _)| {
                self.by_id
                    .get(id)
                    .and_then(|&s| self.slots[s as usize].as_ref())
                    .is_some_and(|e| self.eligible(&e.spec, req, region, e.region))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|&(edge, rtt_ms)| Pick { edge, rtt_ms })
            .ok_or(PlacementError::NoMeasuredCandidate)
    }
}

#[cfg(test)]
mod tests;
