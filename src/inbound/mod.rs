//! The receiver's hot path: route by path prefix -> method check -> body read
//! under a hard size limit and a deadline -> signature verification over the
//! raw bytes -> (queue) dedup + durable enqueue -> ack, or (passthrough)
//! synchronous proxy to the upstream.
//!
//! Owns the route table and nothing else. Invariants: no upstream I/O
//! happens before the signature is verified; a body larger than the limit is
//! refused with 413 before it is read when `Content-Length` announces it, and
//! as soon as the limit is crossed otherwise; the raw body bytes verified are
//! the bytes forwarded.

pub mod body;
pub mod forwarded;
pub mod handshake;
pub mod queue;
pub mod route;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::sync::Notify;

use crate::config::{Config, Mode};
use crate::delivery::client::{HttpClient, ResponseBody, SendError};
use crate::delivery::forward::{forward_headers, strip_hop_by_hop};
use crate::delivery::forward::{X_HOOKGATE_DELIVERY_ID, X_HOOKGATE_VERIFIED};
use crate::error::{ApiError, Body, BoxError};
use crate::metrics::Metrics;
use crate::server::Deadlines;
use crate::store::Store;
use crate::Clock;

pub use route::Route;

/// The receiver: every route, and what they share.
pub struct Inbound {
    routes: Vec<Route>,
    forwarded_proto: HeaderValue,
    trusted_proxies: Vec<crate::config::Cidr>,
    body_timeout: Duration,
    budget: body::BodyBudget,
    store_timeout: Duration,
    clock: Clock,
    store: Option<Store>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl Inbound {
    pub fn new(
        config: &Config,
        client: HttpClient,
        clock: Clock,
        store: Option<Store>,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let mut routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Route::from_config(r, config, &client, &metrics)
                    .map_err(|e| format!("routes[{i}].{e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Longest prefix first, so `/hooks/a/b` wins over `/hooks/a`.
        routes.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
        let verify_codes = crate::signature::VerifyError::ALL.map(|e| e.code());
        for r in &routes {
            metrics.init_route(&r.path, r.mode == Mode::Queue, &verify_codes);
            metrics.init_secrets(&r.path, &r.secret_labels);
        }
        let forwarded_proto = HeaderValue::from_static(if config.server.tls.is_some() {
            "https"
        } else {
            "http"
        });
        Ok(Inbound {
            routes,
            forwarded_proto,
            trusted_proxies: config.server.trusted_proxies.clone(),
            body_timeout: config.server.body_timeout.0,
            budget: body::BodyBudget::new(
                config.server.max_inflight_body.0,
                metrics.inflight_body_bytes.clone(),
            ),
            store_timeout: config.server.store_timeout.0,
            clock,
            store,
            wake,
            metrics,
        })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route serving `path`: its prefix matches whole path segments.
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(path))
    }

    /// Answers one request. Never panics on client input; every refusal is
    /// an [`ApiError`] rendered by `error.rs`.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        deadlines: Arc<Deadlines>,
    ) -> Response<Body> {
        // Kept for the refusal's log line: a reference to the request's
        // own bytes (hyper's read buffer), not a copy of the path.
        let target = req.uri().path_and_query().cloned();
        let Some(route) = self.find(req.uri().path()) else {
            self.metrics
                .requests
                .with_label_values(&["none", "not_found"])
                .inc();
            return ApiError::NotFound.into_response();
        };
        let label = route.path.as_str();
        // The ack latency is a queue-mode series: passthrough reads no clock.
        let started = (route.mode == Mode::Queue).then(std::time::Instant::now);
        match self.handle_route(route, req, peer, &deadlines).await {
            Ok((outcome, r)) => {
                if outcome == route.counters.forwarded_outcome {
                    route.counters.forwarded.inc();
                } else {
                    self.metrics
                        .requests
                        .with_label_values(&[label, outcome])
                        .inc();
                }
                if let Some(started) = started {
                    route
                        .counters
                        .ack_seconds
                        .observe(started.elapsed().as_secs_f64());
                }
                r
            }
            Err(e) => {
                self.metrics
                    .requests
                    .with_label_values(&[label, e.code()])
                    .inc();
                if let ApiError::Signature(v) = &e {
                    self.metrics
                        .verify_failures
                        .with_label_values(&[label, v.code()])
                        .inc();
                }
                let path = target.as_ref().map_or("/", |t| t.path());
                tracing::warn!(route = %label, path = %path, peer = %peer.ip(), code = e.code(), "request refused");
                e.into_response()
            }
        }
    }

    async fn handle_route(
        &self,
        route: &Route,
        req: Request<Incoming>,
        peer: SocketAddr,
        deadlines: &Deadlines,
    ) -> Result<(&'static str, Response<Body>), ApiError> {
        if head_len(&req) > crate::server::MAX_HEAD_BYTES {
            return Err(ApiError::HeadersTooLarge);
        }
        if !route.allow_cidrs.is_empty() {
            let client = forwarded::client_ip(req.headers(), peer.ip(), &self.trusted_proxies);
            if !route.allow_cidrs.iter().any(|c| c.contains(client)) {
                return Err(ApiError::SourceNotAllowed);
            }
        }
        if let (Some(token), &http::Method::GET) = (&route.verify_token, req.method()) {
            if let Some(answer) = handshake::meta_subscription(req.uri().query(), token) {
                return answer.map(|r| ("handshake", r));
            }
        }
        if !route.methods.contains(req.method()) {
            return Err(ApiError::MethodNotAllowed {
                allow: route.allow.clone(),
            });
        }
        // The route's own path was checked when the route was built.
        let path = req.uri().path();
        let own_path = route.own_path.is_some() && path == route.path;
        if !route.target.fixed && !own_path && !forwarded::check_path(path) {
            return Err(ApiError::InvalidPath);
        }
        let (mut parts, body) = req.into_parts();
        // The body's exact length as hyper framed it: its Content-Length,
        // which hyper refuses (400) unless a plain run of digits, the same
        // in every instance; none when chunked.
        let announced = hyper::body::Body::size_hint(&body).exact();
        if announced.is_some_and(|len| len > route.max_body) {
            return Err(ApiError::PayloadTooLarge);
        }
        // Queue mode keeps room in front of the body for the stored
        // request's header, so encoding it does not copy the body.
        let headroom = match route.mode {
            Mode::Queue => queue::headroom(&parts),
            Mode::Passthrough => 0,
        };
        let mut reservation = self.budget.reservation();
        // The body's deadline is watched by the connection's timer, not a
        // timer of this request's (server/mod.rs).
        let armed = deadlines.arm(tokio::time::Instant::now() + self.body_timeout);
        let body = Expiring {
            inner: body::read(
                body,
                announced,
                route.max_body,
                headroom,
                &self.budget,
                &mut reservation,
            ),
            deadlines,
        }
        .await
        .ok_or(ApiError::RequestTimeout)??;
        drop(armed);
        // The query string is signed by `twilio` (after `signed_url`).
        let now = (self.clock)();
        let verified =
            route
                .verifier
                .verify_request(&parts.headers, body.bytes(), now, parts.uri.query())?;
        if let Some(c) = route.counters.verified.get(verified.key_index) {
            c.inc();
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            let secret = route.secret_labels.get(verified.key_index);
            let secret = secret.map_or("?", String::as_str);
            tracing::debug!(route = %route.path, secret, "signature verified");
        }
        // A provider's endpoint handshake is answered here: never
        // forwarded, stored or deduplicated.
        if let Some(h) = &route.handshake {
            let secret = route
                .handshake_secrets
                .get(verified.key_index)
                .map_or(&[][..], |s| s.expose());
            if let Some(answer) = h.answer(&parts.headers, body.bytes(), secret) {
                return Ok(("handshake", answer));
            }
        }
        // What the upstream may trust about the sender (both modes).
        let peer_ip = peer.ip();
        let trusted = self.trusted_proxies.iter().any(|c| c.contains(peer_ip));
        forwarded::rewrite(&mut parts.headers, peer_ip, trusted, &self.forwarded_proto);
        // The body's budget is held until the answer is ready: by then the
        // upstream has the body (passthrough) or the store has committed it.
        let answer = match route.mode {
            Mode::Passthrough => Ok((
                "proxied",
                self.passthrough(route, parts, body.into_body(), now, deadlines)
                    .await?,
            )),
            Mode::Queue => self.enqueue(route, parts, body).await,
        };
        drop(reservation);
        answer
    }

    async fn passthrough(
        &self,
        route: &Route,
        parts: http::request::Parts,
        body: Bytes,
        now: std::time::SystemTime,
        deadlines: &Deadlines,
    ) -> Result<Response<Body>, ApiError> {
        let deadline = tokio::time::Instant::now() + route.upstream_timeout;
        // A free permit is taken at once, without arming a timer.
        let _permit = match route.concurrency.try_acquire() {
            Ok(permit) => permit,
            Err(_) => tokio::time::timeout_at(deadline, route.concurrency.acquire())
                .await
                .map_err(|_| ApiError::UpstreamTimeout)?
                .map_err(|_| ApiError::Unavailable {
                    retry_after_secs: 1,
                })?,
        };
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let path = match &route.own_path {
            Some(own) if pq == route.path => own.clone(),
            _ => route
                .target
                .path_for(pq)
                .map_err(|_| ApiError::BadRequest("request path cannot be forwarded"))?,
        };
        // Stamped with the time the signature was checked at.
        let id = crate::new_uuid_at(now);
        let extra = [
            (X_HOOKGATE_VERIFIED.clone(), route.verified_header.clone()),
            (X_HOOKGATE_DELIVERY_ID.clone(), crate::id_header(&id)),
        ];
        // The received request becomes the upstream's: its method and
        // headers (rewritten) are kept in place, not rebuilt.
        let mut parts = parts;
        forward_headers(
            &mut parts.headers,
            Some(route.endpoint.host().clone()),
            body.len(),
            extra,
        );
        parts.uri = http::Uri::from(path);
        parts.version = http::Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        let req = Request::from_parts(parts, Full::new(body));
        // The deadline is watched by the connection's timer, not a timer
        // of this request's (server/mod.rs).
        let armed = deadlines.arm(deadline);
        let resp = Expiring {
            inner: route.client.send_to(&route.endpoint, req),
            deadlines,
        }
        .await
        .unwrap_or(Err(SendError::Timeout));
        drop(armed);
        let resp = resp.map_err(|e| {
            tracing::warn!(route = %route.path, delivery_id = %id, error = %e, "upstream failed");
            match e {
                SendError::Timeout => ApiError::UpstreamTimeout,
                SendError::Connect | SendError::Other(_) | SendError::Refused(_) => {
                    ApiError::UpstreamUnreachable
                }
            }
        })?;
        let (mut head, body) = resp.into_parts();
        strip_hop_by_hop(&mut head.headers);
        // The sender spoke HTTP/1.1, whatever the upstream did.
        head.version = http::Version::HTTP_11;
        let body = DeadlineBody {
            inner: body,
            deadline,
            sleep: None,
        };
        Ok(Response::from_parts(head, body.boxed()))
    }
}

pin_project_lite::pin_project! {
    /// A wait of the request (for its body, for the upstream), ended with
    /// `None` once the deadline the request armed on its connection has
    /// passed.
    struct Expiring<'d, F> {
        #[pin]
        inner: F,
        deadlines: &'d Deadlines,
    }
}

impl<F: Future> Future for Expiring<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.deadlines.expired() {
            return Poll::Ready(None);
        }
        this.inner.poll(cx).map(Some)
    }
}

/// The upstream's response body in passthrough, cut off at the route's
/// deadline (`upstream.timeout` from the start of the proxy): an upstream
/// that sends its head and then stalls cannot hold the sender's connection
/// open. Past the deadline the body fails, and hyper closes the connection
/// mid-response, which the sender sees as a failed delivery and retries.
struct DeadlineBody {
    inner: ResponseBody,
    deadline: tokio::time::Instant,
    /// Armed the first time the upstream has nothing ready: a body that
    /// arrives with its head (the usual small answer) never needs a timer.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the upstream did not send its response body within upstream.timeout")]
struct BodyDeadlineElapsed;

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(BoxError::from)));
        }
        let deadline = self.deadline;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyDeadlineElapsed)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The size of a request's head as received: method, target, and each
/// header line (name, value, `: ` and CRLF).
fn head_len<B>(req: &Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    req.method().as_str().len() + target + headers
}
