//! Vivaldi network coordinates (Dabek et al., SIGCOMM 2004): a 2-D position plus a height, so
//! that the distance between two coordinates predicts the round-trip time between their hosts
//! without measuring it. Heights model the access link every path crosses (last mile, Wi-Fi).
//!
//! Sans-IO: a node feeds each measured RTT to a peer, with the peer's coordinate and error, into
//! [`Vivaldi::update`]; the broker reads coordinates and compares them with [`estimate_rtt`].
//!
//! ```
//! use edgeplay_protocol::coords::{Coord, Vivaldi, estimate_rtt};
//!
//! let mut a = Vivaldi::new(1);
//! let b = Coord { x: 30.0, y: 0.0, height: 2.0 };
//! for _ in 0..200 {
//!     a.update(34.0, &b, 0.1);
//! }
//! assert!((estimate_rtt(a.coord(), &b) - 34.0).abs() < 1.0);
//! ```

use serde::{Deserialize, Serialize};

/// Smallest height: keeps a node off the plane so the force has a vertical part.
pub const MIN_HEIGHT_MS: f64 = 0.1;
/// Largest magnitude any coordinate part may have (ms); beyond it a coordinate is garbage.
pub const MAX_ABS_MS: f64 = 100_000.0;
/// Error of a node that knows nothing yet.
pub const INITIAL_ERROR: f64 = 1.5;
/// RTT samples outside (0, this] are refused.
pub const MAX_RTT_MS: f64 = 10_000.0;

const CE: f64 = 0.25;
const CC: f64 = 0.25;

/// A position in the coordinate space, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coord {
    /// First plane axis.
    pub x: f64,
    /// Second plane axis.
    pub y: f64,
    /// Height above the plane (≥ 0).
    pub height: f64,
}

impl Default for Coord {
    fn default() -> Self {
        Coord {
            x: 0.0,
            y: 0.0,
            height: MIN_HEIGHT_MS,
        }
    }
}

impl Coord {
    /// True when every part is finite, within [`MAX_ABS_MS`], and the height is not negative:
    /// coordinates from the outside are checked with this before they enter an index.
    pub fn is_valid(&self) -> bool {
        [self.x, self.y, self.height]
            .iter()
            .all(|v| v.is_finite() && v.abs() <= MAX_ABS_MS)
            && self.height >= 0.0
    }
}

/// The RTT two coordinates predict: plane distance plus both heights.
pub fn estimate_rtt(a: &Coord, b: &Coord) -> f64 {
    (a.x - b.x).hypot(a.y - b.y) + a.height + b.height
}

/// Why an RTT sample was not applied.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum CoordError {
    /// RTT not in (0, [`MAX_RTT_MS`]] or not finite.
    #[error("rtt sample {0} ms is outside (0, 10000]: measure again")]
    BadRtt(f64),
    /// The peer's coordinate or error is not usable.
    #[error("peer coordinate or error is not finite or out of range: ignore this peer")]
    BadPeer,
}

/// One node's Vivaldi state: its coordinate and how much it trusts it (relative error).
#[derive(Debug, Clone)]
pub struct Vivaldi {
    coord: Coord,
    error: f64,
    rng: u64,
}

impl Vivaldi {
    /// A node at the origin; `seed` picks the direction to move when two nodes coincide.
    pub fn new(seed: u64) -> Self {
        Vivaldi {
            coord: Coord::default(),
            error: INITIAL_ERROR,
            rng: seed | 1,
        }
    }

    /// A node starting from a known coordinate and error (e.g. restored after a restart).
    pub fn with_coord(coord: Coord, error: f64, seed: u64) -> Self {
        Vivaldi {
            coord,
            error: error.clamp(0.0, INITIAL_ERROR),
            rng: seed | 1,
        }
    }

    /// The current coordinate.
    pub fn coord(&self) -> &Coord {
        &self.coord
    }

    /// The current relative error (0 = certain, [`INITIAL_ERROR`] = knows nothing).
    pub fn error(&self) -> f64 {
        self.error
    }

    /// Applies one RTT sample to a peer at `remote` whose own error is `remote_error`.
    pub fn update(
        &mut self,
        rtt_ms: f64,
        remote: &Coord,
        remote_error: f64,
    ) -> Result<(), CoordError> {
        if !(rtt_ms.is_finite() && rtt_ms > 0.0 && rtt_ms <= MAX_RTT_MS) {
            return Err(CoordError::BadRtt(rtt_ms));
        }
        if !remote.is_valid() || !remote_error.is_finite() || remote_error < 0.0 {
            return Err(CoordError::BadPeer);
        }
        let remote_error = remote_error.min(INITIAL_ERROR);
        let total = self.error + remote_error;
        // Both certain of nothing being wrong: weigh equally.
        let w = if total > 0.0 { self.error / total } else { 0.5 };
        let dist = estimate_rtt(&self.coord, remote);
        let rel = (dist - rtt_ms).abs() / rtt_ms;
        self.error = (rel * CE * w + self.error * (1.0 - CE * w)).clamp(0.0, INITIAL_ERROR);
        let force = CC * w * (rtt_ms - dist);
        let (mut dx, mut dy) = (self.coord.x - remote.x, self.coord.y - remote.y);
        let mut plane = dx.hypot(dy);
        if plane < 1e-6 {
            let angle = self.next_unit() * std::f64::consts::TAU;
            (dx, dy, plane) = (angle.cos(), angle.sin(), 1.0);
        }
        let mag = plane + self.coord.height + remote.height;
        let next = Coord {
            x: self.coord.x + force * dx / plane,
            y: self.coord.y + force * dy / plane,
            height: if mag > 1e-6 {
                (self.coord.height + remote.height) * force / mag + self.coord.height
            } else {
                self.coord.height
            }
            .max(MIN_HEIGHT_MS),
        };
        if next.is_valid() {
            self.coord = next;
        }
        Ok(())
    }

    fn next_unit(&mut self) -> f64 {
        // xorshift64*: only for tie-breaking directions, not for anything secret.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_coord() -> impl Strategy<Value = Coord> {
        (-1000.0..1000.0f64, -1000.0..1000.0f64, 0.0..50.0f64).prop_map(|(x, y, height)| Coord {
            x,
            y,
            height,
        })
    }

    proptest! {
        #[test]
        fn estimate_is_symmetric_and_bounded_below_by_heights(a in arb_coord(), b in arb_coord()) {
            let ab = estimate_rtt(&a, &b);
            prop_assert!((ab - estimate_rtt(&b, &a)).abs() < 1e-9);
            prop_assert!(ab >= a.height + b.height - 1e-9);
        }

        #[test]
        fn update_keeps_state_valid(
            start in arb_coord(), remote in arb_coord(),
            samples in proptest::collection::vec((-5.0..20_000.0f64, -1.0..3.0f64), 1..50)
        ) {
            let mut v = Vivaldi::with_coord(start, 1.0, 7);
            for (rtt, err) in samples {
                let _ = v.update(rtt, &remote, err);
                prop_assert!(v.coord().is_valid());
                prop_assert!(v.error().is_finite() && (0.0..=INITIAL_ERROR).contains(&v.error()));
            }
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Hosts on a plane with access delays: after gossip, coordinates predict RTTs well.
        #[test]
        fn converges_on_a_plane_with_heights(seed in 0u64..1000) {
            let mut rng = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let mut next = move || {
                rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (rng >> 11) as f64 / (1u64 << 53) as f64
            };
            let n = 40;
            let truth: Vec<Coord> = (0..n)
                .map(|_| Coord { x: next() * 200.0, y: next() * 200.0, height: 1.0 + next() * 5.0 })
                .collect();
            let mut nodes: Vec<Vivaldi> = (0..n).map(|i| Vivaldi::new(i as u64 + seed)).collect();
            for _ in 0..(n * 500) {
                let i = (next() * n as f64) as usize % n;
                let j = (next() * n as f64) as usize % n;
                if i == j { continue; }
                let rtt = estimate_rtt(&truth[i], &truth[j]);
                let (rc, re) = (*nodes[j].coord(), nodes[j].error());
                nodes[i].update(rtt, &rc, re).unwrap();
            }
            let mut errs = Vec::new();
            for i in 0..n {
                for j in (i + 1)..n {
                    let t = estimate_rtt(&truth[i], &truth[j]);
                    let e = estimate_rtt(nodes[i].coord(), nodes[j].coord());
                    errs.push((e - t).abs() / t);
                }
            }
            errs.sort_by(f64::total_cmp);
            let median = errs[errs.len() / 2];
            prop_assert!(median < 0.1, "median relative error {median}");
        }
    }

    #[test]
    fn refuses_bad_samples() {
        let mut v = Vivaldi::new(1);
        assert!(v.update(f64::NAN, &Coord::default(), 0.1).is_err());
        assert!(v.update(0.0, &Coord::default(), 0.1).is_err());
        let bad = Coord {
            x: f64::INFINITY,
            ..Coord::default()
        };
        assert_eq!(v.update(10.0, &bad, 0.1), Err(CoordError::BadPeer));
    }
}
