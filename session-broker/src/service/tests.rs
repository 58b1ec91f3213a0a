//! Tests of the registry service without HTTP, over a redb store in a temp dir.

use std::sync::Arc;

use edgeplay_protocol::coords::Coord;
use edgeplay_protocol::token::{EdgeId, SigningKey};
use serde_json::Value;

use crate::metrics::Metrics;
use crate::ratelimit::RateLimit;
use crate::records::EdgeRecord;
use crate::requests::{REGISTER_DOMAIN, sign_body};
use crate::service::{Service, now_ms};
use crate::store::{RedbStore, Store, Table};
use crate::tokens::BrokerKey;

/// A signed registration of `key`'s edge at `x` on the plane, QUIC on `port`.
pub(crate) fn edge_body(key: &SigningKey, x: f64, port: u16) -> Value {
    let id = EdgeId(key.verifying_key().to_bytes());
    let body = serde_json::json!({
        "id": id,
        "region": "eu",
        "gpu": "RTX 4090",
        "gpu_class": 3,
        "encoders": ["nvenc-h264", "x264"],
        "resolutions": ["1920x1080", "1280x720"],
        "max_fps": 60,
        "capacity": 4,
        "price_per_min": 100,
        "coord": {"x": x, "y": 0.0, "height": 1.0},
        "quic_addr": format!("127.0.0.1:{port}"),
        "cert_fingerprint": "ab".repeat(32),
        "issued_unix_ms": now_ms(),
    });
    sign_body(REGISTER_DOMAIN, body, key)
}

struct T {
    service: Service,
    store: Arc<RedbStore>,
    dir: std::path::PathBuf,
}

impl Drop for T {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn setup(name: &str) -> T {
    let dir = std::env::temp_dir().join(format!("edgeplay-service-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key = BrokerKey::load_or_create(&dir).unwrap();
    let store = Arc::new(RedbStore::open(&dir).unwrap());
    let service = Service::load(
        store.clone(),
        key,
        RateLimit::default(),
        super::table::Lifecycle::default(),
        Metrics::new(),
    )
    .await
    .unwrap();
    T {
        service,
        store,
        dir,
    }
}

/// Verifies and admits a registration body: whether the edge is new.
async fn register(s: &Service, body: &Value) -> bool {
    let ad = s.verify_registration(body.to_string().as_bytes()).unwrap();
    s.admit_edge(ad).await.unwrap()
}

#[tokio::test]
async fn a_reported_coordinate_moves_placement_at_once_and_the_store_past_5_ms() {
    let t = setup("coord").await;
    let k = SigningKey::from_bytes(&[9; 32]);
    assert!(register(&t.service, &edge_body(&k, 0.0, 1)).await);
    let id = EdgeId(k.verifying_key().to_bytes());
    let stored = || async {
        let v = t.store.get(Table::Edges, &id.to_string()).await;
        let rec: EdgeRecord = serde_json::from_slice(&v.unwrap().unwrap()).unwrap();
        rec.coord
    };
    let placed = || t.service.live().index.get(&id).unwrap().coord;
    let at = |x| Coord {
        x,
        y: 0.0,
        height: 1.0,
    };
    // 3 ms from the registration's coordinate: placement follows, the store does not.
    t.service.apply_coord(id, at(3.0), 0.4).await.unwrap();
    assert_eq!(placed(), at(3.0));
    assert_eq!(stored().await, None);
    // 6 ms from it: written, and what placement uses.
    t.service.apply_coord(id, at(6.0), 0.3).await.unwrap();
    assert_eq!((placed(), stored().await), (at(6.0), Some(at(6.0))));
    // 4 ms on from the stored one: placement only again.
    t.service.apply_coord(id, at(10.0), 0.2).await.unwrap();
    assert_eq!((placed(), stored().await), (at(10.0), Some(at(6.0))));
    // Nonsense is refused and changes nothing.
    let nan = Coord {
        x: f64::NAN,
        ..at(0.0)
    };
    assert!(t.service.apply_coord(id, nan, 0.1).await.is_err());
    assert!(
        t.service
            .apply_coord(id, at(50.0), f64::INFINITY)
            .await
            .is_err()
    );
    assert_eq!(placed(), at(10.0));
    // What the edge's peers are told: its latest coordinate and error.
    let other = SigningKey::from_bytes(&[10; 32]);
    let mut body = edge_body(&other, 0.0, 2);
    body.as_object_mut().unwrap().remove("signature");
    body["echo_addr"] = serde_json::json!("127.0.0.1:9");
    let body = sign_body(REGISTER_DOMAIN, body, &other);
    assert!(register(&t.service, &body).await, "new");
    let mut body = edge_body(&k, 0.0, 1);
    body.as_object_mut().unwrap().remove("signature");
    body["echo_addr"] = serde_json::json!("127.0.0.1:8");
    let body = sign_body(REGISTER_DOMAIN, body, &k);
    assert!(!register(&t.service, &body).await, "registered again");
    t.service.apply_coord(id, at(20.0), 0.2).await.unwrap();
    let peers = t
        .service
        .peers_for(&EdgeId(other.verifying_key().to_bytes()));
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(
        (peers[0].id, peers[0].coord, peers[0].error),
        (id, at(20.0), 0.2)
    );
}
