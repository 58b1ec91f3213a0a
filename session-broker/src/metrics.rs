//! The broker's Prometheus counters and gauges, and the registry `GET /metrics` encodes (the
//! edge link's own counters are registered into it too, see `Links::register_metrics`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

/// A session-end counter per reason (`reason` label, see
/// [`edgeplay_protocol::lifecycle::EndReason`]).
pub(crate) type EndedFamily = Family<Vec<(&'static str, String)>, Counter>;

/// Registers `metric` under `name` and hands it back, so a field is declared and registered
/// in one expression.
pub(crate) fn registered<M: Metric + Clone>(
    r: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    r.register(name, help, metric.clone());
    metric
}

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
    pub(crate) sessions_live: Gauge,
    pub(crate) sessions_ended: EndedFamily,
    pub(crate) summaries: Gauge,
    pub(crate) summaries_pruned: Counter,
    pub(crate) session_reports_refused: Counter,
    pub(crate) running_unknown: Counter,
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
        m.sessions_live = registered(
            r,
            "broker_sessions_live",
            "Live sessions this broker holds (offered, placed or running)",
            Gauge::default(),
        );
        m.sessions_ended = registered(
            r,
            "broker_sessions_ended",
            "Sessions this broker ended, by reason",
            EndedFamily::default(),
        );
        m.summaries = registered(
            r,
            "broker_session_summaries",
            "Summaries of ended sessions kept in the store (as of the last pruning pass)",
            Gauge::default(),
        );
        m.summaries_pruned = registered(
            r,
            "broker_session_summaries_pruned",
            "Summaries removed by the retention (age or count)",
            Counter::default(),
        );
        m.session_reports_refused = registered(
            r,
            "broker_session_reports_refused",
            "Edge session reports refused (figures out of range, a session not placed on it)",
            Counter::default(),
        );
        m.running_unknown = registered(
            r,
            "broker_sessions_running_unknown",
            "Sessions an edge said it runs that the broker has ended or never had",
            Counter::default(),
        );
        m
    }
}
