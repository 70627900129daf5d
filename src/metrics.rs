//! Prometheus metrics: one registry per running instance (not the global
//! default, so several instances in one test process do not collide) and
//! the handles every module records into.
//!
//! Names follow Prometheus conventions (`_total` counters, `_seconds`
//! histograms, base units). Label values come from closed sets (route
//! paths from the configuration, error codes, outcomes), never from request
//! content, so cardinality is bounded by the configuration.

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Requests on the public listener by route and outcome (`accepted`,
    /// `duplicate`, `proxied`, or the error code).
    pub requests: IntCounterVec,
    /// Signature verification failures by route and reason.
    pub verify_failures: IntCounterVec,
    /// Verified requests by route and the secret that verified them (its
    /// configured `name` or its index, never its value).
    pub verified: IntCounterVec,
    /// Duplicate deliveries answered without enqueueing.
    pub duplicates: IntCounterVec,
    /// Time from the request head to the acknowledgement (queue mode).
    pub ack_seconds: HistogramVec,
    /// Jobs by route and state (`pending`, `in_flight`, `dead`), sampled at scrape.
    pub queue_jobs: IntGaugeVec,
    /// Age of the oldest pending job by route, sampled at scrape.
    pub queue_oldest_seconds: prometheus::GaugeVec,
    /// Forward attempts by route and result (`success`, `retry`, `dead`).
    pub forward_attempts: IntCounterVec,
    /// Duration of forward attempts by route.
    pub forward_seconds: HistogramVec,
    /// Admin API requests refused for a missing or wrong token.
    pub admin_auth_failures: prometheus::IntCounter,
    /// Jobs held by the store for a queue no configured route serves (a
    /// route removed or renamed), by queue; set at start and at scrape.
    pub orphaned_jobs: IntGaugeVec,
    /// 1 for the current circuit state of a queue-mode route, 0 for others.
    pub circuit_state: IntGaugeVec,
    /// Circuit transitions by route and the state entered.
    pub circuit_transitions: IntCounterVec,
    /// 1 while a queue-mode route's delivery is paused.
    pub queue_paused: IntGaugeVec,
    /// Request-body bytes reserved against `server.max_inflight_body`.
    pub inflight_body_bytes: prometheus::IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let latency = exponential_buckets(0.0005, 2.0, 16).expect("valid buckets");
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "hookgate_requests_total",
                    "Requests on the public listener by route and outcome.",
                ),
                &["route", "outcome"],
            )
            .unwrap(),
            verify_failures: IntCounterVec::new(
                Opts::new(
                    "hookgate_verification_failures_total",
                    "Signature verification failures by route and reason.",
                ),
                &["route", "reason"],
            )
            .unwrap(),
            verified: IntCounterVec::new(
                Opts::new(
                    "hookgate_verified_total",
                    "Verified requests by route and the secret (name or index) that verified them.",
                ),
                &["route", "secret"],
            )
            .unwrap(),
            duplicates: IntCounterVec::new(
                Opts::new(
                    "hookgate_duplicates_total",
                    "Duplicate deliveries answered without enqueueing.",
                ),
                &["route"],
            )
            .unwrap(),
            ack_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "hookgate_ack_duration_seconds",
                    "Time from request head to acknowledgement in queue mode.",
                )
                .buckets(latency.clone()),
                &["route"],
            )
            .unwrap(),
            queue_jobs: IntGaugeVec::new(
                Opts::new("hookgate_queue_jobs", "Jobs by route and state."),
                &["route", "state"],
            )
            .unwrap(),
            queue_oldest_seconds: prometheus::GaugeVec::new(
                Opts::new(
                    "hookgate_queue_oldest_pending_age_seconds",
                    "Age of the oldest pending job by route.",
                ),
                &["route"],
            )
            .unwrap(),
            forward_attempts: IntCounterVec::new(
                Opts::new(
                    "hookgate_forward_attempts_total",
                    "Forward attempts by route and result.",
                ),
                &["route", "result"],
            )
            .unwrap(),
            forward_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "hookgate_forward_duration_seconds",
                    "Duration of forward attempts by route.",
                )
                .buckets(latency),
                &["route"],
            )
            .unwrap(),
            admin_auth_failures: prometheus::IntCounter::new(
                "hookgate_admin_auth_failures_total",
                "Admin API requests refused for a missing or wrong token.",
            )
            .unwrap(),
            orphaned_jobs: IntGaugeVec::new(
                Opts::new(
                    "hookgate_queue_orphaned_jobs",
                    "Pending and dead jobs of a queue that no configured route serves.",
                ),
                &["queue"],
            )
            .unwrap(),
            circuit_state: IntGaugeVec::new(
                Opts::new(
                    "hookgate_circuit_state",
                    "Circuit breaker of a route's upstream: 1 for its current state (closed, open, half_open).",
                ),
                &["route", "state"],
            )
            .unwrap(),
            circuit_transitions: IntCounterVec::new(
                Opts::new(
                    "hookgate_circuit_transitions_total",
                    "Circuit breaker transitions by route and the state entered.",
                ),
                &["route", "state"],
            )
            .unwrap(),
            queue_paused: IntGaugeVec::new(
                Opts::new(
                    "hookgate_queue_paused",
                    "1 while delivery of a route's queue is paused through the admin API.",
                ),
                &["route"],
            )
            .unwrap(),
            inflight_body_bytes: prometheus::IntGauge::new(
                "hookgate_inflight_body_bytes",
                "Request-body bytes buffered now, against server.max_inflight_body.",
            )
            .unwrap(),
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.requests.clone())).unwrap();
        r.register(Box::new(m.verify_failures.clone())).unwrap();
        r.register(Box::new(m.verified.clone())).unwrap();
        r.register(Box::new(m.duplicates.clone())).unwrap();
        r.register(Box::new(m.ack_seconds.clone())).unwrap();
        r.register(Box::new(m.queue_jobs.clone())).unwrap();
        r.register(Box::new(m.queue_oldest_seconds.clone()))
            .unwrap();
        r.register(Box::new(m.forward_attempts.clone())).unwrap();
        r.register(Box::new(m.forward_seconds.clone())).unwrap();
        r.register(Box::new(m.orphaned_jobs.clone())).unwrap();
        r.register(Box::new(m.admin_auth_failures.clone())).unwrap();
        r.register(Box::new(m.inflight_body_bytes.clone())).unwrap();
        r.register(Box::new(m.circuit_state.clone())).unwrap();
        r.register(Box::new(m.circuit_transitions.clone())).unwrap();
        r.register(Box::new(m.queue_paused.clone())).unwrap();
        m
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for valid metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    /// Creates, at zero, every per-route series an alert would watch, so
    /// that `rate()` and absence alerts see them from startup rather than
    /// from the first event of each kind.
    /// The route's `hookgate_verified_total` series, one per secret, at zero.
    pub fn init_secrets(&self, route: &str, secrets: &[String]) {
        for secret in secrets {
            self.verified.with_label_values(&[route, secret.as_str()]);
        }
    }

    pub fn init_route(&self, route: &str, queue: bool, verify_codes: &[&str]) {
        let outcomes: &[&str] = if queue {
            &[
                "accepted",
                "duplicate",
                "payload_too_large",
                "unavailable",
                "overloaded",
            ]
        } else {
            &[
                "proxied",
                "payload_too_large",
                "overloaded",
                "upstream_unreachable",
                "upstream_timeout",
            ]
        };
        for outcome in outcomes.iter().chain(verify_codes) {
            self.requests.with_label_values(&[route, outcome]);
        }
        for code in verify_codes {
            self.verify_failures.with_label_values(&[route, code]);
        }
        if queue {
            self.duplicates.with_label_values(&[route]);
            self.ack_seconds.with_label_values(&[route]);
            for result in ["success", "retry", "dead"] {
                self.forward_attempts.with_label_values(&[route, result]);
            }
            self.forward_seconds.with_label_values(&[route]);
            for state in ["closed", "open", "half_open"] {
                self.circuit_state
                    .with_label_values(&[route, state])
                    .set(i64::from(state == "closed"));
                self.circuit_transitions.with_label_values(&[route, state]);
            }
            self.queue_paused.with_label_values(&[route]);
        }
    }

    /// The registry, for components that register their own metrics (the
    /// store).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
