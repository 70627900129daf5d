//! One configured route, resolved for the hot path: its verifier with the
//! secrets loaded, its limits, its dedup key and its upstream.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, StatusCode};
use tokio::sync::Semaphore;

use crate::config::{Config, DedupKey, Mode, RouteConfig, SecretSource};
use crate::delivery::client::{Endpoint, HttpClient, Protocol};
use crate::delivery::forward::Target;
use crate::metrics::Metrics;
use crate::signature::{Verifier, Window};

pub struct Route {
    pub path: String,
    pub verifier: Verifier,
    pub verified_header: HeaderValue,
    pub mode: Mode,
    pub methods: Vec<Method>,
    pub allow: String,
    pub max_body: u64,
    pub dedup: DedupKey,
    pub dedup_window: Duration,
    pub dedup_required: bool,
    pub ack_status: StatusCode,
    pub target: Target,
    /// `target.path_for(path)`: where a request to the route's own path,
    /// without a query (the usual webhook), is forwarded; built once
    /// rather than for each request, and that path checked once for
    /// traversal forms. `None` when the path fails the check or cannot be
    /// forwarded (each request to it is then checked, and fails, as
    /// before).
    pub own_path: Option<http::uri::PathAndQuery>,
    pub upstream_timeout: Duration,
    pub concurrency: Arc<Semaphore>,
    pub queue_limit: u64,
    pub retry: crate::delivery::policy::RetryPolicy,
    pub circuit: crate::delivery::circuit::BreakerPolicy,
    /// Queue mode: deliver one at a time in acceptance order.
    pub fifo: bool,
    /// Senders allowed (empty: anyone).
    pub allow_cidrs: Vec<crate::config::Cidr>,
    /// The handshake answered after verification, if any.
    pub handshake: Option<super::handshake::Handshake>,
    /// The route's secrets in order (`Verified::key_index` indexes them):
    /// a handshake may sign its answer with the one that verified.
    pub handshake_secrets: Vec<crate::config::Secret>,
    /// Meta's subscription `GET` is answered when its token is this.
    pub verify_token: Option<crate::config::Secret>,
    /// The client reaching this route's upstream (its own when the route
    /// has upstream TLS settings, the shared one otherwise).
    pub client: HttpClient,
    /// The upstream's scheme and authority, and the `Host` it is sent,
    /// resolved once from `target.base`.
    pub endpoint: Endpoint,
    /// What metrics and logs call each secret (its `name` or its index), in
    /// the order of `Verified::key_index`.
    pub secret_labels: Vec<String>,
    /// This route's series of the metrics every accepted request moves,
    /// looked up once here rather than by label on every request.
    pub counters: RouteCounters,
}

/// A route's most used metric series, resolved at start.
pub struct RouteCounters {
    /// The outcome of a request this route took on: `"proxied"`
    /// (passthrough) or `"accepted"` (queue).
    pub forwarded_outcome: &'static str,
    /// `requests{outcome=forwarded_outcome}`.
    pub forwarded: prometheus::IntCounter,
    /// `verified{secret=...}`, in the order of `Route::secret_labels`.
    pub verified: Vec<prometheus::IntCounter>,
    /// `ack_seconds` (queue mode).
    pub ack_seconds: prometheus::Histogram,
}

impl RouteCounters {
    fn new(metrics: &Metrics, path: &str, mode: Mode, secret_labels: &[String]) -> Self {
        let outcome = match mode {
            Mode::Passthrough => "proxied",
            Mode::Queue => "accepted",
        };
        RouteCounters {
            forwarded_outcome: outcome,
            forwarded: metrics.requests.with_label_values(&[path, outcome]),
            verified: secret_labels
                .iter()
                .map(|s| metrics.verified.with_label_values(&[path, s]))
                .collect(),
            ack_seconds: metrics.ack_seconds.with_label_values(&[path]),
        }
    }
}

impl Route {
    /// Errors are prefixed with the key they concern (the caller adds `routes[i].`).
    pub fn from_config(
        r: &RouteConfig,
        config: &Config,
        shared: &HttpClient,
        metrics: &Metrics,
    ) -> Result<Route, String> {
        let client = match (&r.upstream.tls, r.upstream.protocol) {
            (None, Protocol::Http1) => shared.clone(),
            (tls, protocol) => {
                let opts = tls.as_ref().map(|t| t.options()).unwrap_or_default();
                HttpClient::for_upstream(&opts, protocol)
                    .map_err(|e| format!("upstream.tls: {e}"))?
            }
        };
        let scheme = r.scheme()?;
        let secrets = r
            .secrets
            .iter()
            .enumerate()
            .map(|(j, s)| s.resolve().map_err(|e| format!("secrets[{j}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let keys: Vec<&[u8]> = secrets.iter().map(|s| s.expose()).collect();
        let verified_header = HeaderValue::from_str(scheme.name())
            .unwrap_or_else(|_| HeaderValue::from_static("custom"));
        let windows: Vec<Window> = r.secrets.iter().map(SecretSource::window).collect();
        let secret_labels: Vec<String> = r
            .secrets
            .iter()
            .enumerate()
            .map(|(j, s)| s.label(j))
            .collect();
        let now = SystemTime::now();
        for (label, w) in secret_labels.iter().zip(&windows) {
            if w.not_after.is_some_and(|t| t < now) {
                tracing::warn!(route = %r.path, secret = %label, "secret is past its not_after: it no longer verifies");
            } else if !w.contains(now) {
                tracing::info!(route = %r.path, secret = %label, "secret is not valid yet (not_before)");
            }
        }
        let verifier = Verifier::new(scheme, &keys, r.tolerance.0)
            .map_err(|e| format!("secrets: {e}"))?
            .with_windows(&windows)
            .with_signed_url(r.signed_url.as_deref().unwrap_or_default());
        let methods = r
            .methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.as_bytes())
                    .map_err(|_| format!("methods: invalid method {m:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let base = r
            .upstream
            .url
            .parse()
            .map_err(|e| format!("upstream.url: {e}"))?;
        let endpoint = Endpoint::of(&base).map_err(|e| format!("upstream.url: {e}"))?;
        let target = Target {
            base,
            strip: r.upstream.strip_prefix.then(|| r.path.clone()),
            fixed: r.forward_path == crate::config::ForwardPath::Fixed,
        };
        Ok(Route {
            path: r.path.clone(),
            verifier,
            verified_header,
            mode: r.mode,
            allow: methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            methods,
            max_body: r.max_body.unwrap_or(config.server.max_body).0,
            dedup: r.dedup_key(),
            dedup_window: r.dedup_window(),
            dedup_required: r.dedup_required(),
            ack_status: StatusCode::from_u16(r.ack_status)
                .map_err(|_| "ack_status: invalid".to_string())?,
            // Only for a path that passes the traversal check: a request to
            // it then skips the check (`Inbound::handle_route`).
            own_path: super::forwarded::check_path(&r.path)
                .then(|| target.path_for(&r.path).ok())
                .flatten(),
            target,
            upstream_timeout: r.upstream.timeout.0,
            concurrency: Arc::new(Semaphore::new(r.upstream.concurrency)),
            queue_limit: r.queue_limit,
            retry: r.retry.policy(),
            circuit: r.circuit.policy(),
            fifo: r.ordering == crate::config::Ordering::Fifo,
            allow_cidrs: r.allow_cidrs.clone(),
            handshake: super::handshake::Handshake::for_route(&r.scheme()?, r.challenge.as_ref()),
            handshake_secrets: secrets,
            verify_token: r
                .verify_token
                .as_ref()
                .map(|s| s.resolve())
                .transpose()
                .map_err(|e| format!("verify_token: {e}"))?,
            client,
            endpoint,
            counters: RouteCounters::new(metrics, &r.path, r.mode, &secret_labels),
            secret_labels,
        })
    }

    /// Whether this route serves `path`: the prefix must end at a segment
    /// boundary (`/hooks/a` serves `/hooks/a` and `/hooks/a/x`, not `/hooks/ab`).
    pub fn matches(&self, path: &str) -> bool {
        if self.path == "/" {
            return true;
        }
        match path.strip_prefix(self.path.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}
