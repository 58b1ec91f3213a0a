//! The HTTP API through the router, without a socket.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request as HttpRequest, StatusCode, header};
use edgeplay_protocol::token::{EdgeId, Signature, SigningKey, from_hex, to_hex, verify};
use serde_json::Value;
use tower::ServiceExt;

use crate::ratelimit::RateLimit;
use crate::registry;
use crate::requests::{HEARTBEAT_DOMAIN, MAX_BODY, REGISTER_DOMAIN, sign_body, signed_bytes};
use crate::routes::router;
use crate::service::now_ms;
use crate::service::tests::edge_body;
use crate::state::Config;
use crate::store::RedbStore;
use crate::tokens::BrokerKey;

struct T {
    router: Router,
    key: BrokerKey,
    _dir: PathGuard,
}

struct PathGuard(std::path::PathBuf);
impl Drop for PathGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn setup(name: &str, rate: RateLimit) -> T {
    let dir = std::env::temp_dir().join(format!("edgeplay-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key = BrokerKey::load_or_create(&dir).unwrap();
    let store = Arc::new(RedbStore::open(&dir).unwrap());
    let state = registry::start(Config {
        store,
        key: key.clone(),
        rate,
        peers_every: std::time::Duration::from_millis(edgeplay_protocol::link::PEERS_EVERY_MS),
        lifecycle: crate::service::table::Lifecycle::default(),
    })
    .await
    .unwrap();
    T {
        router: router(state),
        key,
        _dir: PathGuard(dir),
    }
}

async fn call(r: &Router, method: &str, uri: &str, body: Option<String>) -> (StatusCode, Value) {
    let mut b = HttpRequest::builder().method(method).uri(uri);
    if body.is_some() {
        b = b.header(header::CONTENT_TYPE, "application/json");
    }
    let req = b.body(body.map_or_else(Body::empty, Body::from)).unwrap();
    let resp = r.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

impl T {
    /// A `POST` of `body` (JSON) through [`call`], asserting the status `want` (with the answer
    /// in the message); the answer.
    async fn post(&self, uri: &str, body: impl ToString, want: StatusCode) -> Value {
        let (st, v) = call(&self.router, "POST", uri, Some(body.to_string())).await;
        assert_eq!(st, want, "{v}");
        v
    }
}

fn session_body(player: &str) -> String {
    serde_json::json!({
        "player": player,
        "coord": {"x": 1.0, "y": 0.0, "height": 1.0},
        "width": 1280, "height": 720, "fps": 60,
    })
    .to_string()
}

#[tokio::test]
async fn register_place_select_gives_a_token_the_edge_accepts() {
    let t = setup("flow", RateLimit::default()).await;
    let keys = [
        SigningKey::from_bytes(&[1; 32]),
        SigningKey::from_bytes(&[2; 32]),
    ];
    for (i, k) in keys.iter().enumerate() {
        t.post(
            "/v1/edges",
            edge_body(k, i as f64 * 10.0, 4433 + i as u16),
            StatusCode::CREATED,
        )
        .await;
    }
    let e1 = EdgeId(keys[1].verifying_key().to_bytes());
    let hb = sign_body(
        HEARTBEAT_DOMAIN,
        serde_json::json!({"free_slots": 2, "issued_unix_ms": now_ms()}),
        &keys[1],
    );
    t.post(&format!("/v1/edges/{e1}/heartbeat"), hb, StatusCode::OK)
        .await;

    let v = t
        .post("/v1/sessions", session_body("alice"), StatusCode::CREATED)
        .await;
    assert_eq!(v["candidates"].as_array().unwrap().len(), 2);
    let sid = v["session"].as_str().unwrap().to_owned();
    // The farther edge by coordinates answers faster when measured: it wins.
    let sel = serde_json::json!({"measured": [
        {"edge": EdgeId(keys[0].verifying_key().to_bytes()), "rtt_ms": 30.0},
        {"edge": e1, "rtt_ms": 5.0},
    ]});
    let v = t
        .post(&format!("/v1/sessions/{sid}/select"), sel, StatusCode::OK)
        .await;
    assert_eq!(v["edge"], serde_json::json!(e1));
    assert_eq!(v["quic_addr"], "127.0.0.1:4434");
    assert_eq!(v["whep_url"], format!("/v1/sessions/{sid}/whep"));
    let mut unsigned = v.clone();
    let sig = unsigned
        .as_object_mut()
        .unwrap()
        .remove("signature")
        .unwrap();
    let sig: [u8; 64] = from_hex(sig.as_str().unwrap()).unwrap().try_into().unwrap();
    t.key
        .public()
        .verify_strict(
            &signed_bytes(edgeplay_protocol::link::PLACEMENT_DOMAIN, &unsigned),
            &Signature::from_bytes(&sig),
        )
        .expect("the placement is signed by the broker");
    let token = from_hex(v["token"].as_str().unwrap()).unwrap();
    let got = verify(&token, &t.key.public(), now_ms(), &e1).unwrap();
    assert_eq!(got.player, "alice");
    assert_eq!(got.session.to_string(), sid);

    let (st, v) = call(&t.router, "GET", &format!("/v1/sessions/{sid}"), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["edge"], serde_json::json!(e1));
    let (_, v) = call(&t.router, "GET", "/v1/broker/key", None).await;
    assert_eq!(v["public_key"], to_hex(t.key.public().as_bytes()));
}

#[tokio::test]
async fn bad_signature_is_401_and_unknown_heartbeat_is_404() {
    let t = setup("auth", RateLimit::default()).await;
    let k = SigningKey::from_bytes(&[3; 32]);
    let mut body = edge_body(&k, 0.0, 1);
    body["price_per_min"] = serde_json::json!(1); // changed after signing
    let (st, v) = call(&t.router, "POST", "/v1/edges", Some(body.to_string())).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    // Signed by another key than the id claims.
    let other = SigningKey::from_bytes(&[4; 32]);
    let mut body = edge_body(&k, 0.0, 1);
    body.as_object_mut().unwrap().remove("signature");
    let forged = sign_body(REGISTER_DOMAIN, body, &other);
    let (st, _) = call(&t.router, "POST", "/v1/edges", Some(forged.to_string())).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let hb = sign_body(
        HEARTBEAT_DOMAIN,
        serde_json::json!({"free_slots": 1, "issued_unix_ms": now_ms()}),
        &k,
    );
    let id = EdgeId(k.verifying_key().to_bytes());
    t.post(
        &format!("/v1/edges/{id}/heartbeat"),
        hb,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn malformed_json_names_the_field_and_oversized_is_413() {
    let t = setup("bad", RateLimit::default()).await;
    let (st, v) = call(
        &t.router,
        "POST",
        "/v1/sessions",
        Some(r#"{"player":"p","width":"wide","height":720,"fps":60}"#.into()),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("width"), "{v}");
    let (st, v) = call(
        &t.router,
        "POST",
        "/v1/sessions",
        Some(r#"{"player":"p","height":720,"fps":60}"#.into()),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("width"), "{v}");
    let (st, v) = call(&t.router, "POST", "/v1/sessions", Some("{not json".into())).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let k = SigningKey::from_bytes(&[5; 32]);
    let mut body = edge_body(&k, 0.0, 1);
    body["capacity"] = serde_json::json!(-1);
    let (st, v) = call(&t.router, "POST", "/v1/edges", Some(body.to_string())).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("capacity"), "{v}");
    let big = format!(r#"{{"player":"{}"}}"#, "x".repeat(MAX_BODY));
    let (st, _) = call(&t.router, "POST", "/v1/sessions", Some(big.clone())).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    let (st, _) = call(&t.router, "POST", "/v1/edges", Some(big)).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn limits_are_per_address_and_per_player() {
    use axum::extract::connect_info::MockConnectInfo;
    let t = setup(
        "rate",
        RateLimit {
            burst: 3.0,
            per_sec: 0.001,
            ip_burst: 5.0,
            ip_per_sec: 0.001,
        },
    )
    .await;
    let k = SigningKey::from_bytes(&[6; 32]);
    let (st, _) = call(
        &t.router,
        "POST",
        "/v1/edges",
        Some(edge_body(&k, 0.0, 1).to_string()),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let from = |ip: [u8; 4]| {
        t.router
            .clone()
            .layer(MockConnectInfo(SocketAddr::from((ip, 40000))))
    };
    let a = from([10, 0, 0, 1]);
    for _ in 0..3 {
        let (st, v) = call(&a, "POST", "/v1/sessions", Some(session_body("bob"))).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let (st, v) = call(&a, "POST", "/v1/sessions", Some(session_body("bob"))).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert!(v["error"].as_str().unwrap().contains("player `bob`"), "{v}");
    // Other names from the same address share its bucket (5): two more, then refused.
    for p in ["carol", "dave"] {
        let (st, v) = call(&a, "POST", "/v1/sessions", Some(session_body(p))).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let (st, v) = call(&a, "POST", "/v1/sessions", Some(session_body("erin"))).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert!(v["error"].as_str().unwrap().contains("10.0.0.1"), "{v}");
    // Another address is not affected.
    let b = from([10, 0, 0, 2]);
    let (st, v) = call(&b, "POST", "/v1/sessions", Some(session_body("erin"))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (_, v) = call(&t.router, "GET", "/metrics", None).await;
    assert!(
        v.as_str().unwrap().contains("broker_rate_limited_total 2"),
        "{v}"
    );
}

#[tokio::test]
async fn health_metrics_and_openapi_are_served() {
    let t = setup("meta", RateLimit::default()).await;
    let (st, _) = call(&t.router, "GET", "/healthz", None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = call(&t.router, "GET", "/metrics", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(v.as_str().unwrap().contains("broker_sessions_total"), "{v}");
    let (st, v) = call(&t.router, "GET", "/openapi.json", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["openapi"], "3.1.0");
    assert!(v["paths"]["/v1/sessions/{id}/select"].is_object());
}
