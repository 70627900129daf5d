//! The outbound HTTP client: HTTP/1.1 (or, by [`Protocol`], HTTP/2) over
//! rustls (webpki roots and/or a CA bundle, optional client certificate) or
//! plain TCP, through the SSRF guard's connector, with its own keep-alive
//! pool. Redirects are never followed (a 3xx is just an answer).
//!
//! The pool is hookgate's own rather than hyper-util's legacy client: it
//! keeps, per upstream (scheme and authority), a stack of idle
//! `hyper::client::conn::http1` senders. A request takes the most recently
//! used idle connection (or opens one), and the connection goes back on the
//! stack when its response body has been read to the end — from the body
//! itself, so no task is spawned and no lock is held per request beyond
//! the stack's own. A connection whose body is dropped unread is closed,
//! not reused. Idle connections are closed by a background sweep, and
//! never taken, once idle for between 3/4 of the idle timeout (60 s) and
//! all of it: they are timed on a coarse clock the sweep advances every
//! quarter of the timeout, so returning and taking one reads no clock.
//! An HTTP/2 connection is not taken but shared: it stays on its stack
//! and every request opens a stream on it (a clone of its sender), until
//! it closes or has served no request for the idle timeout.
//!
//! A request that a reused
//! connection could not even start (the upstream closed it while idle) is
//! retried once per idle connection, then on a fresh one, as hyper-util
//! does; a request that may have reached the upstream is never re-sent
//! here.
//!
//! [`HttpClient::send`] takes an absolute URL and a timeout;
//! [`HttpClient::send_to`] takes an [`Endpoint`] resolved once (the pool
//! key and `Host`) and a request in origin form, which is how passthrough
//! forwards without building and re-parsing an absolute URI per request
//! (it bounds the wait itself).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::TokioExecutor;
use tower_service::Service;

use crate::delivery::ssrf::{self, Guard, GuardedConnector};
use crate::delivery::tls::{client_config, ClientTlsOptions, TlsError};

/// How long a connection may sit idle in the pool before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request did not produce a response.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SendError {
    #[error("connection failed")]
    Connect,
    #[error("timed out")]
    Timeout,
    #[error("request failed: {0}")]
    Other(String),
    /// The SSRF guard refused the address (permanent: retrying reaches the
    /// same address).
    #[error("{0}")]
    Refused(crate::delivery::ssrf::Denied),
}

type Connector = hyper_rustls::HttpsConnector<GuardedConnector>;
type Sender1 = http1::SendRequest<Full<Bytes>>;
type Sender2 = http2::SendRequest<Full<Bytes>>;

/// The HTTP version a client speaks to its upstreams (`upstream.protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 only; over TLS, no ALPN is offered.
    #[default]
    Http1,
    /// HTTP/2 only: with prior knowledge (h2c) over `http://`; over
    /// `https://`, ALPN offers `h2` alone and a connection whose upstream
    /// does not select it fails.
    Http2,
    /// Over `https://`, ALPN offers `h2` and `http/1.1` and the upstream
    /// chooses; over `http://`, HTTP/1.1 (clear text has no negotiation).
    Auto,
}

/// A connection's sender: HTTP/1.1 carries one request at a time, HTTP/2
/// any number of streams (its sender is cloned for each).
enum Sender {
    H1(Sender1),
    H2(Sender2),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

#[derive(Clone)]
pub struct HttpClient {
    /// Over the SSRF guard's connector; the guard is off (no checks) but
    /// for [`HttpClient::guarded`].
    connector: Connector,
    protocol: Protocol,
    pool: Arc<Pool>,
}

/// Which connections can serve a request: same scheme, same authority
/// (compared case-insensitively, as `Authority` does).
#[derive(Clone)]
struct Key {
    https: bool,
    authority: Authority,
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        // The same bytes first (the usual match: one `memcmp`); the
        // case-insensitive compare, a byte at a time, only when they differ.
        self.https == other.https
            && (self.authority.as_str() == other.authority.as_str()
                || self.authority == other.authority)
    }
}

impl Eq for Key {}

/// An upstream (scheme and authority of an absolute URL) resolved once,
/// for [`HttpClient::send_to`].
#[derive(Clone)]
pub struct Endpoint {
    key: Key,
    host: HeaderValue,
}

impl Endpoint {
    /// The upstream of `url` (an absolute `http` or `https` URL). Its
    /// `Host` is the authority as written (as forwarding has always sent
    /// it), or without user information when the URL has some.
    pub fn of(url: &Uri) -> Result<Endpoint, SendError> {
        let key = key_of(url)?;
        let host = match crate::delivery::forward::host_as_written(url) {
            Some(host) => host,
            None => host_header(url)?,
        };
        Ok(Endpoint { key, host })
    }

    /// The `Host` header a request to this upstream carries.
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }
}

struct Idle {
    sender: Sender,
    /// The pool's quarter [`Pool::quarters`] when it was returned.
    since: u64,
}

/// An idle connection is kept for `QUARTERS` quarters of the idle timeout:
/// between 3/4 of it and all of it, never longer.
const QUARTERS: u64 = 4;

/// The idle stacks, one per upstream. A client talks to a handful of
/// upstreams, so a list compared in order beats hashing the authority
/// (SipHash over each byte, lower-cased: ~1k instructions a lookup).
type Stacks = Vec<(Key, Vec<Idle>)>;

struct Pool {
    idle: Mutex<Stacks>,
    /// A gate per upstream spoken to over HTTP/2 only, held while a
    /// connection to it is being opened: the requests that find none idle
    /// wait for it and share it rather than each opening its own. One
    /// entry an upstream, kept for the client's life.
    opening: Mutex<Vec<(Key, Arc<tokio::sync::Mutex<()>>)>>,
    idle_timeout: Duration,
    /// A coarse clock: how many quarters of the idle timeout have passed
    /// since the pool was made, as of the sweep's last tick. Stamping and
    /// checking idle connections against it costs no clock read a request.
    quarters: AtomicU64,
    born: Instant,
    /// Whether a sweep task is running (it clears this when it ends, also
    /// when its runtime shuts down, so the next connection starts another).
    sweeping: AtomicBool,
}

impl Pool {
    fn new(idle_timeout: Duration) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            opening: Mutex::new(Vec::new()),
            idle_timeout,
            quarters: AtomicU64::new(0),
            born: Instant::now(),
            sweeping: AtomicBool::new(false),
        }
    }

    fn quarter(&self) -> Duration {
        (self.idle_timeout / QUARTERS as u32).max(Duration::from_millis(10))
    }

    /// Whether an idle connection stamped `since` is past the idle timeout
    /// (or already closed).
    fn expired(c: &Idle, now: u64) -> bool {
        c.sender.is_closed() || now.saturating_sub(c.since) >= QUARTERS
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stacks> {
        // The stacks hold no invariant a panic could break half-way.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently returned live idle connection for `key`: taken
    /// off its stack (HTTP/1.1), or shared and stamped as used (HTTP/2).
    fn take(&self, key: &Key) -> Option<Sender> {
        let now = self.quarters.load(Ordering::Relaxed);
        let mut idle = self.lock();
        let (_, stack) = idle.iter_mut().find(|(k, _)| k == key)?;
        loop {
            let c = stack.last_mut()?;
            if Self::expired(c, now) {
                stack.pop();
                continue;
            }
            if let Sender::H2(shared) = &c.sender {
                c.since = now;
                return Some(Sender::H2(shared.clone()));
            }
            return stack.pop().map(|c| c.sender);
        }
    }

    /// `key`'s gate for opening a shared connection, made on first use.
    fn gate(&self, key: &Key) -> Arc<tokio::sync::Mutex<()>> {
        // Nothing a panic could break half-way, as with the stacks.
        let mut gates = self.opening.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, gate)) = gates.iter().find(|(k, _)| k == key) {
            return Arc::clone(gate);
        }
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        gates.push((key.clone(), Arc::clone(&gate)));
        gate
    }

    fn put(&self, key: Key, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let idle = Idle {
            sender,
            since: self.quarters.load(Ordering::Relaxed),
        };
        let mut stacks = self.lock();
        match stacks.iter_mut().find(|(k, _)| *k == key) {
            Some((_, stack)) => stack.push(idle),
            None => stacks.push((key, vec![idle])),
        }
    }

    /// Advances the coarse clock, then closes idle connections past the
    /// timeout (or already closed).
    fn sweep(&self) {
        // From the real elapsed time, so a late tick does not slow the clock.
        let now = (self.born.elapsed().as_nanos() / self.quarter().as_nanos()) as u64;
        self.quarters.fetch_max(now, Ordering::Relaxed);
        let now = self.quarters.load(Ordering::Relaxed);
        self.lock().retain_mut(|(_, stack)| {
            stack.retain(|c| !Self::expired(c, now));
            !stack.is_empty()
        });
    }

    /// Starts the sweep on the current runtime unless one is running. It
    /// holds the pool weakly and ends when the pool is dropped.
    fn ensure_sweep(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        struct Running(Weak<Pool>);
        impl Drop for Running {
            fn drop(&mut self) {
                if let Some(pool) = self.0.upgrade() {
                    pool.sweeping.store(false, Ordering::Release);
                }
            }
        }
        let running = Running(Arc::downgrade(self));
        let period = self.quarter();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match running.0.upgrade() {
                    Some(pool) => pool.sweep(),
                    None => return,
                }
            }
        });
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.lock().iter().map(|(_, s)| s.len()).sum()
    }
}

impl HttpClient {
    /// A client trusting the Mozilla roots, without a client certificate.
    pub fn new() -> Self {
        Self::for_upstream(&ClientTlsOptions::default(), Protocol::Http1)
            .expect("the default TLS options are valid")
    }

    /// A client with the given trust and client identity that speaks
    /// `protocol` to its upstreams.
    pub fn for_upstream(
        opts: &ClientTlsOptions,
        protocol: Protocol,
    ) -> Result<HttpClient, TlsError> {
        Self::build(opts, Guard::off(), IDLE_TIMEOUT, protocol)
    }

    /// An HTTP/1.1 client like [`HttpClient::for_upstream`] whose
    /// connections go through the SSRF `guard`: a refused address is never connected to (or, found
    /// only once connected, dropped before a byte is sent), and `send` fails
    /// with [`SendError::Refused`].
    pub fn guarded(opts: &ClientTlsOptions, guard: Guard) -> Result<HttpClient, TlsError> {
        Self::build(opts, guard, IDLE_TIMEOUT, Protocol::Http1)
    }

    fn build(
        opts: &ClientTlsOptions,
        guard: Guard,
        idle_timeout: Duration,
        protocol: Protocol,
    ) -> Result<HttpClient, TlsError> {
        let tls = client_config(opts)?;
        let mut connector = GuardedConnector::new(guard);
        let http = connector.http_mut();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        // What ALPN offers over TLS: nothing for HTTP/1.1 alone.
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = match protocol {
            Protocol::Http1 => builder.enable_http1().wrap_connector(connector),
            Protocol::Http2 => builder.enable_http2().wrap_connector(connector),
            Protocol::Auto => builder.enable_all_versions().wrap_connector(connector),
        };
        Ok(HttpClient {
            connector,
            protocol,
            pool: Arc::new(Pool::new(idle_timeout)),
        })
    }

    /// Sends `req` (an absolute `http` or `https` URI), waiting at most
    /// `timeout` for the response head. A `Host` header is added from the
    /// URI when the request has none.
    pub fn send(
        &self,
        mut req: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Sending<impl Future<Output = Result<Response<ResponseBody>, SendError>> + '_> {
        let key = key_of(req.uri()).and_then(|key| {
            if !req.headers().contains_key(HOST) {
                let host = host_header(req.uri())?;
                req.headers_mut().insert(HOST, host);
            }
            *req.uri_mut() = Uri::from(path_of(req.uri()));
            Ok(key)
        });
        Sending {
            inner: tokio::time::timeout(timeout, self.send_now(key, req)),
        }
    }

    /// Sends `req` to `endpoint`, with no deadline of its own: the caller
    /// bounds the wait for the response head (passthrough does, with its
    /// connection's timer). The request's URI is its path and query
    /// (origin form), and its `Host` header is the caller's (usually
    /// [`Endpoint::host`]): the upstream is resolved once, not parsed out
    /// of every request.
    pub fn send_to(
        &self,
        endpoint: &Endpoint,
        req: Request<Full<Bytes>>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, SendError>> + '_ {
        self.send_now(Ok(endpoint.key.clone()), req)
    }

    /// `key` is an error when the request's URL was not one to send to.
    async fn send_now(
        &self,
        key: Result<Key, SendError>,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<ResponseBody>, SendError> {
        let key = key?;
        loop {
            let (sender, reused) = match self.pool.take(&key) {
                Some(sender) => (sender, true),
                // Boxed: the rare path's state (TLS, DNS) would otherwise
                // size every request's future, which is moved as it goes.
                None => Box::pin(self.open_or_join(&key)).await?,
            };
            let mut sender = match sender {
                Sender::H1(sender) => sender,
                Sender::H2(sender) => {
                    // Boxed, as connecting is: an HTTP/2 request's state
                    // would otherwise size every HTTP/1.1 request's future.
                    match Box::pin(send_h2(sender, req, key.https)).await {
                        Ok(resp) => return Ok(resp),
                        // Never started on a connection that had closed.
                        Err(H2Failed::Unsent(unsent)) if reused => {
                            req = *unsent;
                            continue;
                        }
                        // A new connection that closed at once.
                        Err(H2Failed::Unsent(_)) => return Err(SendError::Connect),
                        Err(H2Failed::Sent(e)) => return Err(e),
                    }
                }
            };
            if !sender.is_ready() && sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(SendError::Connect);
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let (head, body) = resp.into_parts();
                    let mut body = ResponseBody {
                        inner: body,
                        back: Some(Back {
                            pool: Arc::clone(&self.pool),
                            key,
                            sender,
                        }),
                    };
                    if body.inner.is_end_stream() {
                        body.give_back();
                    }
                    return Ok(Response::from_parts(head, body));
                }
                Err(mut e) => match e.take_message() {
                    // Never started on a connection the upstream had closed.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(SendError::Other(error_chain(&e.into_error()))),
                },
            }
        }
    }

    /// A connection for a request that found none idle, and whether it
    /// was already open. To an upstream spoken to over HTTP/2 only
    /// (`Protocol::Http2`), a request waits while another opens one and
    /// then shares it: a burst to a cold pool opens one connection, not
    /// one a request. Under `Auto` the protocol is known only once a
    /// connection is open, so connections are opened in parallel (each
    /// shared once open; the spares close when idle).
    async fn open_or_join(&self, key: &Key) -> Result<(Sender, bool), SendError> {
        if self.protocol != Protocol::Http2 {
            return Ok((self.connect(key).await?, false));
        }
        let gate = self.pool.gate(key);
        let _opening = gate.lock().await;
        if let Some(shared) = self.pool.take(key) {
            return Ok((shared, true));
        }
        Ok((self.connect(key).await?, false))
    }

    /// A new connection to `key`'s upstream, its task spawned on the
    /// current runtime.
    async fn connect(&self, key: &Key) -> Result<Sender, SendError> {
        let uri = Uri::builder()
            .scheme(if key.https {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            })
            .authority(key.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| SendError::Other("invalid upstream URL".into()))?;
        let mut connector = self.connector.clone();
        let connected = async {
            std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
            connector.call(uri).await
        };
        let io = connected.await.map_err(|e| {
            let e: &(dyn std::error::Error + 'static) = &*e;
            match ssrf::find_denied(e) {
                Some(denied) => SendError::Refused(denied.clone()),
                None => SendError::Connect,
            }
        })?;
        let negotiated_h2 = io.connected().is_negotiated_h2();
        let h2 = match self.protocol {
            Protocol::Http1 => false,
            Protocol::Http2 if key.https && !negotiated_h2 => {
                return Err(SendError::Other(
                    "the upstream did not select HTTP/2 (ALPN h2)".into(),
                ));
            }
            Protocol::Http2 => true,
            Protocol::Auto => negotiated_h2,
        };
        self.pool.ensure_sweep();
        if h2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(|_| SendError::Connect)?;
            drive(conn);
            // Shared at once: the requests that come while this one is
            // on its way open streams on it rather than connections.
            self.pool.put(key.clone(), Sender::H2(sender.clone()));
            return Ok(Sender::H2(sender));
        }
        // One buffer, one `write`: the head and a webhook-sized body are
        // copied together rather than queued for `writev` (fewer
        // instructions a request, bench/micro-results.md).
        let (sender, conn) = http1::Builder::new()
            .writev(false)
            .handshake(io)
            .await
            .map_err(|_| SendError::Connect)?;
        drive(conn);
        Ok(Sender::H1(sender))
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.pool.idle_count()
    }
}

#[cfg(test)]
mod endpoint_tests {
    use super::*;

    #[test]
    fn an_endpoints_host_is_the_authority_as_written_without_user_information() {
        let host = |url: &str| Endpoint::of(&url.parse().unwrap()).unwrap().host().clone();
        assert_eq!(host("http://up:3000/x"), "up:3000");
        assert_eq!(host("http://up:80/x"), "up:80");
        assert_eq!(host("https://Up.Example/x?q"), "Up.Example");
        assert_eq!(host("http://user:pw@up:8080/"), "up:8080");
        assert_eq!(host("https://user@up:443/"), "up");
        assert!(Endpoint::of(&"ftp://up/".parse().unwrap()).is_err());
        assert!(Endpoint::of(&"/relative".parse().unwrap()).is_err());
    }

    #[test]
    fn pool_keys_match_scheme_and_authority_whatever_the_case() {
        let key = |url: &str| key_of(&url.parse().unwrap()).unwrap();
        assert!(key("http://up:3000/a") == key("http://up:3000/b?c"));
        assert!(key("http://Up.Example:3000/") == key("http://up.example:3000/"));
        assert!(key("http://up:3000/") != key("https://up:3000/"));
        assert!(key("http://up:3000/") != key("http://up:3001/"));
        assert!(key("http://up-a:3000/") != key("http://up-b:3000/"));
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

fn key_of(uri: &Uri) -> Result<Key, SendError> {
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(SendError::Other("the URL is not http or https".into())),
    };
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| SendError::Other("the URL has no host".into()))?;
    Ok(Key { https, authority })
}

/// `Host` for a URI: its host, and its port unless the scheme's default
/// (no user information, which the URI may carry). The usual authority,
/// `host` or `host:port`, is taken as written, without formatting.
/// Forwarding sets its own `Host` (the upstream's authority as written, in
/// place of the sender's), so this serves requests that come without one.
fn host_header(uri: &Uri) -> Result<HeaderValue, SendError> {
    let invalid = || SendError::Other("the URL's host is not a valid header".into());
    let authority = uri.authority().ok_or_else(invalid)?;
    let https = uri.scheme_str() == Some("https");
    let as_written = authority.as_str();
    // No port to drop and no user information: the authority itself.
    if !as_written.contains('@') && !as_written.ends_with(if https { ":443" } else { ":80" }) {
        return HeaderValue::from_str(as_written).map_err(|_| invalid());
    }
    let value = match authority.port_u16() {
        Some(port) if port != if https { 443 } else { 80 } => {
            HeaderValue::try_from(format!("{}:{port}", authority.host()))
        }
        _ => HeaderValue::from_str(authority.host()),
    };
    value.map_err(|_| invalid())
}

pin_project_lite::pin_project! {
    /// A request on its way: [`HttpClient::send`], with the deadline's `Elapsed` as
    /// [`SendError::Timeout`]. A named future rather than an `async fn`
    /// around the deadline: an async fn stores its arguments apart from the
    /// future it awaits, doubling the request in every layer.
    pub struct Sending<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
    }
}

impl<F> Future for Sending<F>
where
    F: Future<Output = Result<Response<ResponseBody>, SendError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match ready!(self.project().inner.poll(cx)) {
            Ok(r) => Poll::Ready(r),
            Err(_) => Poll::Ready(Err(SendError::Timeout)),
        }
    }
}

/// Runs a connection's task on the current runtime until it ends.
fn drive(conn: impl Future<Output = hyper::Result<()>> + Send + 'static) {
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
}

/// Why an HTTP/2 request has no response.
enum H2Failed {
    /// Refused before it was sent (the connection had closed): the request
    /// is back, as the caller gave it, to be sent on another connection.
    /// Boxed: the rare case, and the request is large.
    Unsent(Box<Request<Full<Bytes>>>),
    /// It may have reached the upstream: never re-sent here.
    Sent(SendError),
}

/// `req` (origin form, with a `Host` header) as a stream on `sender`'s
/// connection.
async fn send_h2(
    mut sender: Sender2,
    req: Request<Full<Bytes>>,
    https: bool,
) -> Result<Response<ResponseBody>, H2Failed> {
    match sender.try_send_request(into_h2(req, https)).await {
        Ok(resp) => {
            let (head, body) = resp.into_parts();
            // Nothing to give back: the connection stays shared in the pool.
            let body = ResponseBody {
                inner: body,
                back: None,
            };
            Ok(Response::from_parts(head, body))
        }
        Err(mut e) => match e.take_message() {
            Some(req) => Err(H2Failed::Unsent(Box::new(into_h1(req)))),
            None => Err(H2Failed::Sent(SendError::Other(error_chain(
                &e.into_error(),
            )))),
        },
    }
}

/// An origin-form request with a `Host` header as HTTP/2 wants it: the
/// scheme and the authority (from `Host`, which HTTP/2 carries as
/// `:authority`) in the URI, and no `Host` header.
fn into_h2(mut req: Request<Full<Bytes>>, https: bool) -> Request<Full<Bytes>> {
    let authority = req
        .headers()
        .get(HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok());
    if let Some(authority) = authority {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(if https { Scheme::HTTPS } else { Scheme::HTTP });
        parts.authority = Some(authority);
        parts.path_and_query = Some(path_of(req.uri()));
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
            req.headers_mut().remove(HOST);
        }
    }
    *req.version_mut() = http::Version::HTTP_2;
    req
}

/// A URI's path and query (`/` when it has none): its origin form.
fn path_of(uri: &Uri) -> PathAndQuery {
    uri.path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}

/// [`into_h2`] undone, for a request that goes out on another connection
/// after all (which may speak HTTP/1.1).
fn into_h1(mut req: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    if let Some(authority) = req.uri().authority() {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().insert(HOST, host);
        }
        *req.uri_mut() = Uri::from(path_of(req.uri()));
    }
    *req.version_mut() = http::Version::HTTP_11;
    req
}

/// Where a connection goes back once its response has been read.
struct Back {
    pool: Arc<Pool>,
    key: Key,
    sender: Sender1,
}

/// A response body from [`HttpClient::send`]: hyper's body, which returns
/// its connection to the pool once read to the end. Dropped earlier, the
/// connection is closed (HTTP/1 cannot skip the rest of a response).
pub struct ResponseBody {
    inner: Incoming,
    back: Option<Back>,
}

impl ResponseBody {
    fn give_back(&mut self) {
        if let Some(back) = self.back.take() {
            back.pool.put(back.key, Sender::H1(back.sender));
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            None => self.give_back(),
            Some(Ok(_)) if self.inner.is_end_stream() => self.give_back(),
            Some(Ok(_)) => {}
            Some(Err(_)) => self.back = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

/// An error and its sources on one line (no request content is included).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;

    /// What the test upstream does after answering a request.
    #[derive(Clone, Copy)]
    enum After {
        /// Keeps the connection open for the next request.
        KeepAlive,
        /// Closes it 10 ms later without saying so (no `Connection:
        /// close`), as an upstream whose keep-alive timer fires does.
        Close,
    }

    struct Upstream {
        port: u16,
        /// Connections accepted so far.
        accepted: Arc<AtomicUsize>,
        /// Each request's head, with the number of the connection it came on.
        heads: mpsc::UnboundedReceiver<(usize, String)>,
        /// A message per connection the client closed (EOF while idle).
        closed: mpsc::UnboundedReceiver<usize>,
    }

    /// A real HTTP/1.1 upstream on 127.0.0.1:0, answering every request
    /// with a `body_len`-byte body.
    async fn upstream(after: After, body_len: usize) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (head_tx, heads) = mpsc::unbounded_channel();
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let conn = count.fetch_add(1, Ordering::SeqCst) + 1;
                let (head_tx, closed_tx) = (head_tx.clone(), closed_tx.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 4096];
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            let _ = closed_tx.send(conn);
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let _ = head_tx.send((conn, head));
                        let mut resp =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {body_len}\r\n\r\n")
                                .into_bytes();
                        resp.resize(resp.len() + body_len, b'x');
                        if s.write_all(&resp).await.is_err() {
                            return;
                        }
                        if let After::Close = after {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            return;
                        }
                    }
                });
            }
        });
        Upstream {
            port,
            accepted,
            heads,
            closed,
        }
    }

    fn get(url: &str) -> Request<Full<Bytes>> {
        Request::get(url).body(Full::new(Bytes::new())).unwrap()
    }

    const T: Duration = Duration::from_secs(5);

    async fn read(resp: Response<ResponseBody>) -> usize {
        resp.into_body().collect().await.unwrap().to_bytes().len()
    }

    #[tokio::test]
    async fn a_read_response_frees_its_connection_for_the_next_request() {
        let mut up = upstream(After::KeepAlive, 5).await;
        let client = HttpClient::new();
        let url = format!("http://127.0.0.1:{}/a?b=c", up.port);
        for _ in 0..5 {
            let resp = client.send(get(&url), T).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(read(resp).await, 5);
            assert_eq!(client.idle_count(), 1);
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
        // Origin-form target and a Host header with the (non-default) port.
        let (conn, head) = up.heads.recv().await.unwrap();
        assert_eq!(conn, 1);
        assert!(head.starts_with("GET /a?b=c HTTP/1.1\r\n"), "{head}");
        let host = format!("host: 127.0.0.1:{}", up.port);
        assert!(head.to_ascii_lowercase().contains(&host), "{head}");
    }

    #[tokio::test]
    async fn a_large_body_returns_the_connection_only_once_read() {
        let up = upstream(After::KeepAlive, 256 * 1024).await;
        let client = HttpClient::new();
        let url = format!("http://127.0.0.1:{}/", up.port);
        let first = client.send(get(&url), T).await.unwrap();
        // Not read yet: a second request cannot share the connection.
        assert_eq!(client.idle_count(), 0);
        let second = client.send(get(&url), T).await.unwrap();
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        assert_eq!(read(first).await, 256 * 1024);
        assert_eq!(read(second).await, 256 * 1024);
        assert_eq!(client.idle_count(), 2);
    }

    #[tokio::test]
    async fn a_body_dropped_unread_closes_its_connection() {
        let mut up = upstream(After::KeepAlive, 256 * 1024).await;
        let client = HttpClient::new();
        let url = format!("http://127.0.0.1:{}/", up.port);
        let resp = client.send(get(&url), T).await.unwrap();
        drop(resp);
        assert_eq!(
            tokio::time::timeout(T, up.closed.recv()).await.unwrap(),
            Some(1)
        );
        assert_eq!(client.idle_count(), 0);
        let resp = client.send(get(&url), T).await.unwrap();
        assert_eq!(read(resp).await, 256 * 1024);
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connections_the_upstream_closed_while_idle_are_not_fatal() {
        let up = upstream(After::Close, 2).await;
        let client = HttpClient::new();
        let url = format!("http://127.0.0.1:{}/", up.port);
        for i in 0..10 {
            let resp = client
                .send(get(&url), T)
                .await
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(read(resp).await, 2);
            // Pooled, then closed by the upstream while idle.
            assert_eq!(client.idle_count(), 1);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 10);
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let mut up = upstream(After::KeepAlive, 2).await;
        let client = HttpClient::build(
            &ClientTlsOptions::default(),
            Guard::off(),
            Duration::from_millis(50),
            Protocol::Http1,
        )
        .unwrap();
        let url = format!("http://127.0.0.1:{}/", up.port);
        let resp = client.send(get(&url), T).await.unwrap();
        assert_eq!(read(resp).await, 2);
        assert_eq!(client.idle_count(), 1);
        // The sweep closes it without any further request.
        assert_eq!(
            tokio::time::timeout(T, up.closed.recv()).await.unwrap(),
            Some(1)
        );
        assert_eq!(client.idle_count(), 0);
    }

    #[tokio::test]
    async fn an_idle_connection_is_kept_for_three_quarters_of_the_timeout_at_least() {
        let mut up = upstream(After::KeepAlive, 2).await;
        let timeout = Duration::from_millis(800);
        let client = HttpClient::build(
            &ClientTlsOptions::default(),
            Guard::off(),
            timeout,
            Protocol::Http1,
        )
        .unwrap();
        let url = format!("http://127.0.0.1:{}/", up.port);
        let resp = client.send(get(&url), T).await.unwrap();
        assert_eq!(read(resp).await, 2);
        let returned = Instant::now();
        // Well inside 3/4 of the timeout (600 ms): still pooled, and taken.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(client.idle_count(), 1);
        let resp = client.send(get(&url), T).await.unwrap();
        assert_eq!(read(resp).await, 2);
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
        let returned_again = Instant::now();
        // Closed by the sweep once idle for 3/4 of the timeout or more.
        assert_eq!(
            tokio::time::timeout(T, up.closed.recv()).await.unwrap(),
            Some(1)
        );
        let idle = returned_again.elapsed();
        // (Measured from a moment just after the connection went back.)
        assert!(
            idle + Duration::from_millis(20) >= timeout * 3 / 4,
            "closed after {idle:?} idle"
        );
        assert!(returned.elapsed() > Duration::from_millis(250));
        assert_eq!(client.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_refused_connection_and_a_bad_url_are_errors() {
        let client = HttpClient::new();
        // A port nothing listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let err = client
            .send(get(&format!("http://127.0.0.1:{port}/")), T)
            .await
            .err();
        assert_eq!(err, Some(SendError::Connect));
        let err = client.send(get("/relative"), T).await.err();
        assert!(matches!(err, Some(SendError::Other(_))), "{err:?}");
    }

    #[test]
    fn host_header_omits_the_default_port_and_user_information() {
        let h = |u: &str| host_header(&u.parse().unwrap()).unwrap();
        assert_eq!(h("http://example.com/x"), "example.com");
        assert_eq!(h("http://example.com:80/x"), "example.com");
        assert_eq!(h("https://example.com:443/"), "example.com");
        assert_eq!(h("https://example.com:8443/"), "example.com:8443");
        assert_eq!(h("http://user:pw@example.com:81/"), "example.com:81");
        assert_eq!(h("http://[::1]:8080/"), "[::1]:8080");
        assert_eq!(h("http://[::1]:80/"), "[::1]");
        assert_eq!(h("https://user@example.com/"), "example.com");
        assert_eq!(h("http://example.com:8080/"), "example.com:8080");
        assert_eq!(h("http://[fe80::80]/"), "[fe80::80]");
        assert_eq!(h("https://example.com:80/"), "example.com:80");
    }

    /// A real HTTP/2 (h2c) server on 127.0.0.1:0 answering 200 (its body
    /// the request's `:authority` and how many `Host` headers it had), and
    /// the number of connections it has accepted. With `one_request`, it
    /// closes each connection (GOAWAY) after its first request, as an
    /// upstream that limits a connection's age does.
    async fn h2c_server(one_request: bool) -> (u16, Arc<AtomicUsize>) {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
                let done_tx = Arc::new(Mutex::new(Some(done_tx)));
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let done_tx = Arc::clone(&done_tx);
                        async move {
                            let authority = req.uri().authority().map(|a| a.to_string());
                            let hosts = req.headers().get_all(HOST).iter().count();
                            if let Some(tx) = done_tx.lock().unwrap().take_if(|_| one_request) {
                                let _ = tx.send(());
                            }
                            let answer = format!("{} {hosts}", authority.unwrap_or_default());
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from(answer),
                            )))
                        }
                    });
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => return,
                        _ = done => conn.as_mut().graceful_shutdown(),
                    }
                    let _ = conn.await;
                });
            }
        });
        (port, accepted)
    }

    #[tokio::test]
    async fn an_http2_connection_the_upstream_closed_is_replaced() {
        let (port, accepted) = h2c_server(true).await;
        let client =
            HttpClient::for_upstream(&ClientTlsOptions::default(), Protocol::Http2).unwrap();
        let url = format!("http://127.0.0.1:{port}/x");
        for n in 1..=3 {
            let resp = client.send(get(&url), T).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.version(), http::Version::HTTP_2);
            // `:authority` from the URL, and no `Host` header besides.
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, format!("127.0.0.1:{port} 0"));
            // Wait until the client has seen the GOAWAY.
            for _ in 0..200 {
                if client
                    .pool
                    .take(&key_of(&url.parse().unwrap()).unwrap())
                    .is_none()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(accepted.load(Ordering::SeqCst), n);
        }
    }

    #[tokio::test]
    async fn a_burst_to_a_cold_http2_pool_opens_one_connection() {
        let (port, accepted) = h2c_server(false).await;
        let client =
            HttpClient::for_upstream(&ClientTlsOptions::default(), Protocol::Http2).unwrap();
        let url = format!("http://127.0.0.1:{port}/x");
        let burst = (0..16).map(|_| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let resp = client.send(get(&url), T).await.unwrap();
                (resp.status().as_u16(), resp.version())
            })
        });
        for task in burst.collect::<Vec<_>>() {
            assert_eq!(task.await.unwrap(), (200, http::Version::HTTP_2));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_request_goes_to_http2_form_and_back_unchanged() {
        let mut req = Request::post("/a/b?c=d")
            .header(HOST, "up.example:8443")
            .header("x-other", "1")
            .body(Full::new(Bytes::from_static(b"body")))
            .unwrap();
        *req.version_mut() = http::Version::HTTP_11;
        let h2 = into_h2(req, true);
        assert_eq!(h2.uri(), "https://up.example:8443/a/b?c=d");
        assert_eq!(h2.version(), http::Version::HTTP_2);
        assert!(h2.headers().get(HOST).is_none());
        let h1 = into_h1(h2);
        assert_eq!(h1.uri(), "/a/b?c=d");
        assert_eq!(h1.version(), http::Version::HTTP_11);
        assert_eq!(h1.headers()[HOST], "up.example:8443");
        assert_eq!(h1.headers()["x-other"], "1");
        // A `Host` that is no authority: left for the client to refuse.
        let req = Request::get("/")
            .header(HOST, "bad host")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let h2 = into_h2(req, false);
        assert_eq!(h2.uri(), "/");
        assert_eq!(h2.headers()[HOST], "bad host");
    }
}
