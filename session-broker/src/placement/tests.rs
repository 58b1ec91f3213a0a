//! The index against a full scan, and the pick.

use super::*;
use proptest::prelude::*;

fn id(i: u32) -> EdgeId {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_le_bytes());
    EdgeId(b)
}

fn at(x: f64, y: f64, h: f64) -> Coord {
    Coord { x, y, height: h }
}

fn edge(i: u32, c: Coord) -> EdgeSpec {
    EdgeSpec {
        coord: c,
        ..EdgeSpec::example(id(i), if c.x < 0.0 { "us" } else { "eu" })
    }
}

#[test]
fn nearest_first_and_filters_apply() {
    let mut ix = Index::new(IndexConfig::default());
    for i in 0..50 {
        ix.upsert(edge(i, at(f64::from(i) * 3.0, 0.0, 1.0)));
    }
    let req = Request {
        coord: Some(at(31.0, 0.0, 1.0)),
        ..Request::default()
    };
    let c = ix.candidates(&req);
    assert_eq!(c.len(), 8);
    assert_eq!(c[0], id(10));
    // Full, draining, too cheap a price cap, too weak a GPU: all filtered.
    let mut full = ix.get(&id(10)).unwrap().clone();
    full.free_slots = 0;
    ix.upsert(full);
    let mut drain = ix.get(&id(11)).unwrap().clone();
    drain.accepting = false;
    ix.upsert(drain);
    let c = ix.candidates(&req);
    assert!(!c.contains(&id(10)) && !c.contains(&id(11)));
    let mut strong = edge(99, at(200.0, 0.0, 1.0));
    strong.gpu_class = 3;
    ix.upsert(strong);
    let want_strong = Request {
        min_gpu_class: 3,
        ..req.clone()
    };
    assert_eq!(ix.candidates(&want_strong), vec![id(99)]);
    let cheap = Request {
        max_price_per_min: Some(10),
        ..req.clone()
    };
    assert!(ix.candidates(&cheap).is_empty());
    let big = Request {
        width: 3840,
        height: 2160,
        ..req
    };
    assert!(ix.candidates(&big).is_empty());
}

#[test]
fn region_hint_without_coordinate_stays_in_region() {
    let mut ix = Index::new(IndexConfig::default());
    for i in 0..20 {
        ix.upsert(edge(i, at(-100.0 - f64::from(i), 0.0, 1.0)));
        ix.upsert(edge(100 + i, at(100.0 + f64::from(i), 0.0, 1.0)));
    }
    let req = Request {
        region: Some("eu".into()),
        ..Request::default()
    };
    let c = ix.candidates(&req);
    assert_eq!(c.len(), 8);
    assert!(c.iter().all(|e| ix.get(e).unwrap().region == "eu"));
    let nowhere = Request::default();
    assert_eq!(
        ix.candidates_scored(&nowhere),
        Err(PlacementError::NoLocation)
    );
}

#[test]
fn reputation_and_load_push_an_edge_down() {
    let mut ix = Index::new(IndexConfig::default());
    let mut shady = edge(1, at(0.0, 0.0, 1.0));
    shady.reputation = 0.2;
    ix.upsert(shady);
    ix.upsert(edge(2, at(2.0, 0.0, 1.0)));
    let req = Request {
        coord: Some(at(0.0, 0.0, 1.0)),
        ..Request::default()
    };
    assert_eq!(ix.candidates(&req), vec![id(2), id(1)]);
}

#[test]
fn samples_are_distinct_indexed_edges() {
    let mut ix = Index::new(IndexConfig::default());
    assert!(ix.sample(8, 1).is_empty());
    for i in 0..3 {
        ix.upsert(edge(i, at(f64::from(i), 0.0, 1.0)));
    }
    let mut few = ix.sample(8, 1);
    few.sort();
    assert_eq!(few, vec![id(0), id(1), id(2)]);
    for i in 3..1000 {
        ix.upsert(edge(i, at(f64::from(i), 0.0, 1.0)));
    }
    for seed in 0..20 {
        let s = ix.sample(8, seed);
        assert!(s.len() >= 6, "{}", s.len());
        let mut d = s.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), s.len());
        assert!(s.iter().all(|e| ix.get(e).is_some()));
    }
    assert_ne!(ix.sample(8, 1), ix.sample(8, 2));
}

#[test]
fn pick_takes_lowest_measured_that_still_qualifies() {
    let mut ix = Index::new(IndexConfig::default());
    for i in 0..10 {
        ix.upsert(edge(i, at(f64::from(i), 0.0, 1.0)));
    }
    let req = Request {
        coord: Some(at(0.0, 0.0, 1.0)),
        ..Request::default()
    };
    let c = ix.candidates(&req);
    let m = vec![
        (id(3), 5.0),
        (id(4), 2.0),
        (id(500), 1.0),
        (id(5), f64::NAN),
        (id(6), -1.0),
    ];
    assert_eq!(ix.pick(&req, &c, &m).unwrap().edge, id(4));
    let mut full = ix.get(&id(4)).unwrap().clone();
    full.free_slots = 0;
    ix.upsert(full);
    assert_eq!(ix.pick(&req, &c, &m).unwrap().edge, id(3));
    // Browsers round ICE RTTs to whole milliseconds: 0 is a measurement, not a failure.
    assert_eq!(
        ix.pick(&req, &c, &[(id(3), 0.0), (id(5), 1.0)])
            .unwrap()
            .edge,
        id(3)
    );
    assert_eq!(
        ix.pick(&req, &c, &[(id(500), 1.0)]),
        Err(PlacementError::NoMeasuredCandidate)
    );
}

#[test]
fn remove_and_bad_input_leave_index_consistent() {
    let mut ix = Index::new(IndexConfig::default());
    ix.upsert(edge(1, at(0.0, 0.0, 1.0)));
    ix.upsert(edge(2, at(f64::NAN, 0.0, 1.0)));
    let mut bad_class = edge(3, at(0.0, 0.0, 1.0));
    bad_class.gpu_class = 200;
    ix.upsert(bad_class);
    assert_eq!(ix.len(), 1);
    assert!(ix.remove(&id(1)).is_some());
    assert!(ix.remove(&id(1)).is_none());
    assert!(ix.is_empty());
    let req = Request {
        coord: Some(at(0.0, 0.0, 1.0)),
        ..Request::default()
    };
    assert!(ix.candidates(&req).is_empty());
}

fn arb_edge() -> impl Strategy<Value = (Coord, u8, u32, u64, f32, bool)> {
    (
        (-300.0..300.0f64, -300.0..300.0f64, 0.0..20.0f64),
        0u8..4,
        0u32..4,
        0u64..3000,
        0.0f32..1.0,
        any::<bool>(),
    )
        .prop_map(|((x, y, h), g, f, p, r, a)| (at(x, y, h), g, f, p, r, a))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The index returns exactly the scan's best K scores, through inserts and removals.
    #[test]
    fn index_matches_scan(
        edges in proptest::collection::vec(arb_edge(), 1..400),
        removes in proptest::collection::vec(any::<prop::sample::Index>(), 0..50),
        reqs in proptest::collection::vec(
            ((-350.0..350.0f64, -350.0..350.0f64, 0.0..10.0f64), 0u8..4, proptest::option::of(0u64..3000)),
            1..20),
        cell in 1.0..30.0f64,
    ) {
        let mut ix = Index::new(IndexConfig { cell_ms: cell, ..IndexConfig::default() });
        for (i, (c, g, f, p, r, a)) in edges.iter().enumerate() {
            let mut e = edge(i as u32, *c);
            e.gpu_class = *g;
            e.free_slots = *f;
            e.price_per_min = *p;
            e.reputation = *r;
            e.accepting = *a;
            ix.upsert(e);
        }
        for r in removes {
            ix.remove(&id(r.index(edges.len()) as u32));
        }
        for ((x, y, h), g, price) in reqs {
            let req = Request {
                coord: Some(at(x, y, h)),
                min_gpu_class: g,
                max_price_per_min: price,
                ..Request::default()
            };
            let a: Vec<f64> = ix.candidates_scored(&req).unwrap().iter().map(|c| c.0).collect();
            let b: Vec<f64> = ix.scan_candidates(&req).unwrap().iter().map(|c| c.0).collect();
            prop_assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                prop_assert!((x - y).abs() < 1e-3, "index {a:?} scan {b:?}");
            }
        }
    }
}

/// `offer` tells "nothing free now" (empty) from "no edge could ever" (`Unmet`, naming what to
/// relax) and "no edge in that region" (`UnknownRegion`); an empty index is "nothing now".
#[test]
fn offer_tells_none_now_from_none_ever() {
    let mut ix = Index::new(IndexConfig::default());
    let here = Request {
        coord: Some(at(0.0, 0.0, 1.0)),
        ..Request::default()
    };
    assert_eq!(ix.offer(&here), Ok(Vec::new()));
    let mut big = edge(1, at(0.0, 0.0, 1.0));
    big.max_fps = 144;
    big.max_width = 3840;
    big.max_height = 2160;
    big.gpu_class = 5;
    ix.upsert(big.clone());
    ix.upsert(edge(2, at(5.0, 0.0, 1.0)));
    assert_eq!(ix.offer(&here).unwrap().len(), 2);

    // More fps than any edge offers: never; the best fit says what to relax.
    let fast = Request {
        fps: 240,
        ..here.clone()
    };
    let Err(PlacementError::Unmet(why)) = ix.offer(&fast) else {
        panic!("{:?}", ix.offer(&fast));
    };
    assert!(why.contains("relax `fps` to 144"), "{why}");
    // Each part met by some edge but no edge meets them all together: never, too.
    let both = Request {
        width: 3840,
        height: 2160,
        min_gpu_class: 6,
        max_price_per_min: Some(10),
        ..here.clone()
    };
    let Err(PlacementError::Unmet(why)) = ix.offer(&both) else {
        panic!("{:?}", ix.offer(&both));
    };
    assert!(
        why.contains("relax `min_gpu_class` to 5")
            && why.contains("raise `max_price_per_min` to 1000"),
        "{why}"
    );

    // The big edge full, draining or of low reputation: 4K is "not now", not "never".
    let uhd = Request {
        width: 3840,
        height: 2160,
        ..here.clone()
    };
    for change in [
        (|e: &mut EdgeSpec| e.free_slots = 0) as fn(&mut EdgeSpec),
        |e| e.accepting = false,
        |e| e.reputation = 0.0,
    ] {
        let mut b = big.clone();
        change(&mut b);
        ix.upsert(b);
        assert_eq!(ix.offer(&uhd), Ok(Vec::new()));
    }

    // A region hint no edge is in; one that an edge is in but that cannot meet the request.
    let lost = Request {
        coord: None,
        region: Some("mars".into()),
        ..here.clone()
    };
    assert_eq!(
        ix.offer(&lost),
        Err(PlacementError::UnknownRegion("mars".into()))
    );
    let eu_fast = Request {
        coord: None,
        region: Some("eu".into()),
        fps: 500,
        ..here
    };
    assert!(matches!(ix.offer(&eu_fast), Err(PlacementError::Unmet(_))));
}
