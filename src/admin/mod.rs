//! The admin listener: `/healthz` (the process is alive), `/readyz` (it
//! should receive traffic), `/metrics` (Prometheus), and the admin API over the queue: per-route
//! stats with each route's circuit and paused state, pause / resume,
//! dead letters (list, show with attempts, replay one or all of a route,
//! delete).
//!
//! Invariants: the admin API requires the admin token when one is
//! configured (compared in constant time); the probes never do, so kubelets
//! need no secret. Answers never include stored request bodies or headers
//! (they may carry the sender's signatures); only attempt metadata and the
//! upstream's (capped) answers.

use std::collections::HashMap;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::clock::now_ms;
use crate::config::Secret;
use crate::delivery::circuit::Controls;
use crate::error::{self, ApiError, Body};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::{JobFilter, JobState, JobSummary, Store, StoreError};
use crate::Clock;

pub struct Admin {
    shutdown: Shutdown,
    token: Option<Secret>,
    store: Option<Store>,
    /// Queues served by a configured queue-mode route; jobs of any other
    /// queue are orphaned (their route was removed or renamed).
    queues: Vec<String>,
    /// Circuit and pause state of each configured queue.
    controls: Arc<Controls>,
    /// Wakes the delivery engine (after a resume).
    wake: Arc<tokio::sync::Notify>,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// The sender's `/v1/` API, when `sender.enabled`.
    sender: Option<Arc<crate::outbound::Sender>>,
}

fn ok(v: Value) -> Result<Response<Body>, ApiError> {
    Ok(error::json(StatusCode::OK, &v))
}

fn unavailable(e: StoreError) -> ApiError {
    if let StoreError::Invalid(msg) = &e {
        tracing::debug!(error = %msg, "admin: refused");
        return ApiError::BadRequest(
            "invalid request (e.g. an `after` cursor naming a job that no longer exists)",
        );
    }
    tracing::warn!(error = %e, "admin: store error");
    ApiError::Unavailable {
        retry_after_secs: 5,
    }
}

impl Admin {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shutdown: Shutdown,
        token: Option<Secret>,
        store: Option<Store>,
        queues: Vec<String>,
        controls: Arc<Controls>,
        wake: Arc<tokio::sync::Notify>,
        clock: Clock,
        metrics: Arc<Metrics>,
        sender: Option<Arc<crate::outbound::Sender>>,
    ) -> Self {
        Admin {
            shutdown,
            token,
            store,
            queues,
            controls,
            wake,
            clock,
            metrics,
            sender,
        }
    }

    /// `/metrics`: queue gauges are sampled from the store at scrape time.
    async fn render_metrics(&self) -> Result<Response<Body>, ApiError> {
        if let Some(store) = &self.store {
            match store.stats(now_ms(&self.clock)).await {
                Ok(stats) => {
                    self.metrics.queue_jobs.reset();
                    self.metrics.queue_oldest_seconds.reset();
                    self.metrics.orphaned_jobs.reset();
                    for s in stats {
                        if !self.queues.contains(&s.queue)
                            && !s.queue.starts_with(crate::outbound::QUEUE_PREFIX)
                            && s.pending + s.inflight + s.dead > 0
                        {
                            self.metrics
                                .orphaned_jobs
                                .with_label_values(&[&s.queue])
                                .set(
                                    i64::try_from(s.pending + s.inflight + s.dead)
                                        .unwrap_or(i64::MAX),
                                );
                        }
                        let q = s.queue.as_str();
                        let set = |state: &str, v: u64| {
                            self.metrics
                                .queue_jobs
                                .with_label_values(&[q, state])
                                .set(i64::try_from(v).unwrap_or(i64::MAX))
                        };
                        set("pending", s.pending);
                        set("in_flight", s.inflight);
                        set("dead", s.dead);
                        self.metrics
                            .queue_oldest_seconds
                            .with_label_values(&[q])
                            .set(s.oldest_pending_age_ms.unwrap_or(0) as f64 / 1000.0);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "metrics: cannot read queue stats"),
            }
        }
        let mut r = Response::new(error::full(self.metrics.render()));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        Ok(r)
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        match self.route(req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        match (&method, path.as_str()) {
            (&Method::GET, "/healthz") => return ok(json!({"status": "ok"})),
            (&Method::GET, "/readyz") => return self.readyz().await,
            (&Method::GET, "/metrics") => return self.render_metrics().await,
            (_, "/healthz") | (_, "/readyz") | (_, "/metrics") => {
                return Err(ApiError::MethodNotAllowed {
                    allow: "GET".into(),
                })
            }
            _ => {}
        }
        if path.starts_with("/v1/") || path.starts_with("/api/sch/org/webhooks/") {
            // The sender's API, authenticated by API key (not the admin token).
            return match &self.sender {
                Some(sender) => Ok(sender.handle(req).await),
                None => Err(ApiError::NotFound),
            };
        }
        if !path.starts_with("/admin/") {
            return Err(ApiError::NotFound);
        }
        self.authorize(&req)?;
        let store = self.store.as_ref().ok_or(ApiError::NotFound)?;
        let query: HashMap<String, String> = req
            .uri()
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let segments: Vec<&str> = path.trim_start_matches("/admin/").split('/').collect();
        let now = now_ms(&self.clock);
        match (&method, segments.as_slice()) {
            (&Method::GET, ["queues"]) => {
                let mut stats = store.stats(now).await.map_err(unavailable)?;
                // Configured queues are listed even while empty.
                for q in &self.queues {
                    if !stats.iter().any(|s| &s.queue == q) {
                        stats.push(crate::store::QueueStats {
                            queue: q.clone(),
                            pending: 0,
                            inflight: 0,
                            dead: 0,
                            done: 0,
                            oldest_pending_age_ms: None,
                        });
                    }
                }
                let queues: Vec<Value> = stats
                    .into_iter()
                    .map(|s| {
                        let mut v = json!({
                            "route": s.queue,
                            "pending": s.pending,
                            "in_flight": s.inflight,
                            "dead": s.dead,
                            "delivered": s.done,
                            "oldest_pending_age_seconds": s.oldest_pending_age_ms.map(|ms| ms as f64 / 1000.0),
                            "orphaned": !self.queues.contains(&s.queue) && !s.queue.starts_with(crate::outbound::QUEUE_PREFIX),
                        });
                        if let Some(ctl) = self.controls.get(&s.queue) {
                            let c = ctl.snapshot();
                            v["paused"] = json!(ctl.paused());
                            v["circuit"] = json!({
                                "state": c.state.as_str(),
                                "consecutive_failures": c.consecutive_failures,
                                "opened_at": c.opened_at,
                                "next_probe_at": c.next_probe_at,
                            });
                        }
                        v
                    })
                    .collect();
                ok(json!({ "queues": queues }))
            }
            (&Method::POST, ["queues", action @ ("pause" | "resume")]) => {
                let route = query.get("route").ok_or(ApiError::BadRequest(
                    "the `route` query parameter is required",
                ))?;
                let ctl = self.controls.get(route).ok_or(ApiError::BadRequest(
                    "`route` must be the path of a configured queue-mode route",
                ))?;
                let paused = *action == "pause";
                // Stored first: what the answer says survives a restart.
                store.set_paused(route, paused).await.map_err(unavailable)?;
                ctl.set_paused(paused);
                self.metrics
                    .queue_paused
                    .with_label_values(&[route])
                    .set(i64::from(paused));
                if paused {
                    tracing::warn!(route = %route, "queue paused: requests are still accepted and stored, nothing is delivered until resumed");
                } else {
                    tracing::info!(route = %route, "queue resumed");
                    self.wake.notify_one();
                }
                ok(json!({ "route": route, "paused": paused }))
            }
            (&Method::POST, ["queues", "move"]) => {
                let from = query.get("from").ok_or(ApiError::BadRequest(
                    "the `from` query parameter is required",
                ))?;
                let to = query
                    .get("to")
                    .ok_or(ApiError::BadRequest("the `to` query parameter is required"))?;
                if !self.queues.contains(to) {
                    return Err(ApiError::BadRequest(
                        "`to` must be the path of a configured queue-mode route",
                    ));
                }
                let n = store.move_queue(from, to, now).await.map_err(unavailable)?;
                tracing::info!(from = %from, to = %to, moved = n, "queue moved");
                ok(json!({ "moved": n }))
            }
            (&Method::DELETE, ["queues"]) => {
                let route = query.get("route").ok_or(ApiError::BadRequest(
                    "the `route` query parameter is required",
                ))?;
                if self.queues.contains(route) {
                    return Err(ApiError::Conflict(
                        "the queue of a configured route cannot be deleted whole; remove the route first, or delete jobs one by one",
                    ));
                }
                let n = store.delete_queue(route).await.map_err(unavailable)?;
                tracing::warn!(route = %route, deleted = n, "orphaned queue deleted");
                ok(json!({ "deleted": n }))
            }
            (&Method::GET, ["dead-letters"]) => {
                self.list(store, &query, Some(JobState::Dead)).await
            }
            (&Method::GET, ["jobs"]) => {
                let state = match query.get("state") {
                    None => None,
                    Some(s) => {
                        Some(JobState::parse(s).ok_or(ApiError::BadRequest("unknown state"))?)
                    }
                };
                self.list(store, &query, state).await
            }
            (&Method::POST, ["dead-letters", "replay"]) => {
                let route = query.get("route").ok_or(ApiError::BadRequest(
                    "the `route` query parameter is required",
                ))?;
                let n = store.replay_queue(route, now).await.map_err(unavailable)?;
                tracing::info!(route = %route, replayed = n, "dead letters replayed");
                ok(json!({ "replayed": n }))
            }
            (&Method::GET, ["jobs", id]) | (&Method::GET, ["dead-letters", id]) => {
                let d = store
                    .get_job(id)
                    .await
                    .map_err(unavailable)?
                    .ok_or(ApiError::NotFound)?;
                let attempts: Vec<Value> = d
                    .attempts
                    .iter()
                    .map(|a| {
                        json!({
                            "attempt": a.n,
                            "started_at": a.started_at,
                            "duration_ms": a.duration_ms,
                            "outcome": a.outcome,
                            "http_status": a.http_status,
                            "error": a.error,
                            "response_body": a.response_body.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
                        })
                    })
                    .collect();
                let mut v = summary_json(&d.summary);
                v["payload_bytes"] = json!(d.payload_len);
                v["attempt_log"] = Value::Array(attempts);
                ok(v)
            }
            (&Method::POST, ["jobs", id, "replay"])
            | (&Method::POST, ["dead-letters", id, "replay"]) => {
                if store.replay(id, now).await.map_err(unavailable)? {
                    tracing::info!(id = %id, "job replayed");
                    ok(json!({ "replayed": 1 }))
                } else {
                    // Either unknown or not dead: tell which.
                    match store.get_job(id).await.map_err(unavailable)? {
                        None => Err(ApiError::NotFound),
                        Some(_) => Err(ApiError::Conflict("only dead jobs can be replayed")),
                    }
                }
            }
            (&Method::DELETE, ["jobs", id]) | (&Method::DELETE, ["dead-letters", id]) => {
                if store.delete_job(id).await.map_err(unavailable)? {
                    ok(json!({ "deleted": 1 }))
                } else {
                    Err(ApiError::NotFound)
                }
            }
            _ => Err(ApiError::NotFound),
        }
    }

    async fn list(
        &self,
        store: &Store,
        query: &HashMap<String, String>,
        state: Option<JobState>,
    ) -> Result<Response<Body>, ApiError> {
        let limit = match query.get("limit") {
            None => 100,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|l| (1..=1000).contains(l))
                .ok_or(ApiError::BadRequest("limit must be 1 to 1000"))?,
        };
        let filter = JobFilter {
            queue: query.get("route").cloned(),
            state,
            limit,
            after: query.get("after").cloned(),
        };
        let jobs = store.list_jobs(filter).await.map_err(unavailable)?;
        let next = if jobs.len() == limit {
            jobs.last().map(|j| j.id.clone())
        } else {
            None
        };
        let items: Vec<Value> = jobs.iter().map(summary_json).collect();
        ok(json!({ "items": items, "next": next }))
    }

    async fn readyz(&self) -> Result<Response<Body>, ApiError> {
        if self.shutdown.is_triggered() {
            return Ok(error::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "shutting_down"}),
            ));
        }
        if let Some(store) = &self.store {
            if let Err(e) = store.ping().await {
                tracing::warn!(error = %e, "readiness: store unusable");
                return Ok(error::json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "store_unavailable"}),
                ));
            }
        }
        ok(json!({"status": "ready"}))
    }

    /// Checks `Authorization: Bearer <token>` when a token is configured.
    fn authorize(&self, req: &Request<Incoming>) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if given.is_some_and(|g| bool::from(g.ct_eq(token.expose()))) {
            Ok(())
        } else {
            self.metrics.admin_auth_failures.inc();
            Err(ApiError::Unauthorized)
        }
    }
}

fn summary_json(j: &JobSummary) -> Value {
    json!({
        "id": j.id,
        "route": j.queue,
        "kind": j.kind,
        "state": j.state.as_str(),
        "attempts": j.attempts,
        "created_at": j.created_at,
        "next_at": j.next_at,
        "updated_at": j.updated_at,
        "last_status": j.last_status,
        "last_error": j.last_error,
    })
}
