//! The broker's Prometheus counters and gauges, and the registry `GET /metrics` encodes (the
//! edge link's own counters are registered into it too, see `Links::register_metrics`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The counters the registry service moves.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) registrations: Counter,
    pub(crate) heartbeats: Counter,
    pub(crate) sessions: Counter,
    pub(crate) selections: Counter,
    pub(crate) rate_limited: Counter,
    pub(crate) rejected_signatures: Counter,
    pub(crate) edges: Gauge,
    pub(crate) edges_dead: Gauge,
    pub(crate) edges_marked_dead: Counter,
    pub(crate) sessions_marked_failover: Counter,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut m = Metrics::default();
        let r = &mut m.registry;
        r.register(
            "broker_registrations",
            "Edge registrations accepted",
            m.registrations.clone(),
        );
        r.register(
            "broker_heartbeats",
            "Edge heartbeats accepted",
            m.heartbeats.clone(),
        );
        r.register("broker_sessions", "Sessions created", m.sessions.clone());
        r.register(
            "broker_selections",
            "Sessions placed on an edge",
            m.selections.clone(),
        );
        r.register(
            "broker_rate_limited",
            "Requests refused by the per-address or per-player limit",
            m.rate_limited.clone(),
        );
        r.register(
            "broker_rejected_signatures",
            "Edge messages with a bad signature",
            m.rejected_signatures.clone(),
        );
        r.register("broker_edges", "Registered edges", m.edges.clone());
        r.register(
            "broker_edges_dead",
            "Registered edges now marked dead",
            m.edges_dead.clone(),
        );
        r.register(
            "broker_edges_marked_dead",
            "Times this broker marked an edge dead (three missed heartbeats)",
            m.edges_marked_dead.clone(),
        );
        r.register(
            "broker_sessions_marked_failover",
            "Sessions whose edge died, marked for failover",
            m.sessions_marked_failover.clone(),
        );
        m
    }
}
