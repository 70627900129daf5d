//! Listener plumbing: accept TCP connections, serve HTTP/1.1 with hyper,
//! bound the number of connections, time out slow headers, drain on shutdown.
//!
//! Owns no routing and no business logic: it calls a handler per request.
//! Invariants: at most `max_connections` connections are served at once
//! (further ones wait in the kernel backlog); a client that does not finish
//! its TLS handshake within `handshake_timeout` or its request head within
//! `header_timeout` (from the connection's start, or from the end of its
//! previous response) is disconnected (the handshake runs in the
//! connection's own task, so a slow client never blocks accepting); a
//! client that stops reading its response (a write making no progress for
//! `write_timeout`) is disconnected; on shutdown the listener closes at
//! once and open connections get `grace` to finish.
//!
//! The head deadline, and the deadline a handler may arm for the request
//! in progress (its body's, then its upstream's: [`Deadlines`]), are
//! watched by one timer per
//! connection, re-armed only when it fires or when a deadline comes before
//! it: a request arms no timer of its own.

pub mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;

use crate::error::{Body, BoxError};
use crate::shutdown::Shutdown;

/// Header lines a request may have (431 beyond). Below hyper's (and most
/// servers') 100, so that a request forwarded with the headers hookgate
/// adds (`X-Forwarded-For`, `X-Forwarded-Proto`, `X-Hookgate-Verified`,
/// `-Delivery-Id`, `-Attempt`) still fits an upstream's limit: nothing is
/// acknowledged that the upstream would refuse for its size.
pub const MAX_HEADER_LINES: usize = 95;

/// The largest request head (request target and headers) the public
/// listener accepts: `431 headers_too_large` beyond, decided by the handler
/// from the parsed head, so the limit is exact. (hyper's own, on its read
/// buffer, is ~400 KB to ~800 KB depending on how reads fall: heads past
/// it get hyper's bodiless 431.)
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct ServeOptions {
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// How long a write to the client may make no progress.
    pub write_timeout: Duration,
    /// How long open connections may take to finish after shutdown starts.
    pub grace: Duration,
    /// Serve TLS with this acceptor (plain HTTP when `None`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub handshake_timeout: Duration,
}

/// `stream`, whose writes fail once one has made no progress for `timeout`
/// (hyper then closes the connection).
fn write_deadline<S>(stream: S, timeout: Duration) -> Pin<Box<TimeoutStream<S>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let mut s = TimeoutStream::new(stream);
    s.set_write_timeout(Some(timeout));
    Box::pin(s)
}

/// Serves `handler` on `listener` until `shutdown` fires, then drains. The
/// handler gets the connection's [`Deadlines`], where it may arm a
/// deadline for the request (its body's, its upstream's).
pub async fn serve<H, F>(listener: TcpListener, opts: ServeOptions, shutdown: Shutdown, handler: H)
where
    H: Fn(Request<Incoming>, SocketAddr, Arc<Deadlines>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let drain = Arc::new(Drain::default());
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.wait() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let _ = stream.set_nodelay(true);
        let h = handler.clone();
        let builder = {
            let mut b = http1::Builder::new();
            // Answers are small: head and body in one buffer, one `write`.
            // The head's deadline is ours (`Deadlines`), not hyper's
            // header-read timeout, which arms a timer for every request.
            b.writev(false)
                .header_read_timeout(None)
                .max_headers(MAX_HEADER_LINES);
            b
        };
        let drain = Arc::clone(&drain);
        let tls = opts.tls.clone();
        let handshake_timeout = opts.handshake_timeout;
        let write_timeout = opts.write_timeout;
        let header_timeout = opts.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            // From here (after the TLS handshake, which has its own
            // timeout) the first head has `header_timeout` to arrive.
            let service = |deadlines: &Arc<Deadlines>| {
                let deadlines = Arc::clone(deadlines);
                service_fn(move |req| {
                    deadlines.request_started();
                    Answer {
                        inner: h(req, peer, Arc::clone(&deadlines)),
                        deadlines: Some(Arc::clone(&deadlines)),
                    }
                })
            };
            let result = match tls {
                None => {
                    let io = TokioIo::new(write_deadline(stream, write_timeout));
                    let deadlines = Arc::new(Deadlines::new(header_timeout));
                    let conn = builder.serve_connection(io, service(&deadlines));
                    drain.watch(conn, deadlines).await
                }
                Some(acceptor) => match tls::accept(&acceptor, stream, handshake_timeout).await {
                    Ok(s) => {
                        let io = TokioIo::new(write_deadline(s, write_timeout));
                        let deadlines = Arc::new(Deadlines::new(header_timeout));
                        let conn = builder.serve_connection(io, service(&deadlines));
                        drain.watch(conn, deadlines).await
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drain.start();
    // Every connection holds one of the slots until its task ends.
    let all = u32::try_from(opts.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => {}
        _ = tokio::time::sleep(opts.grace) => {
            tracing::warn!("grace period elapsed with connections still open");
        }
    }
}

pin_project_lite::pin_project! {
    /// A handler's answer as the `Result` hyper's service returns. A plain
    /// wrapper rather than `async move { Ok(fut.await) }`: an async block
    /// stores the future it captured and the one it awaits apart, which
    /// doubled the future hyper moves on every request (to ~10 KB).
    struct Answer<F> {
        #[pin]
        inner: F,
        deadlines: Option<Arc<Deadlines>>,
    }
}

impl<F: Future<Output = Response<Body>>> Future for Answer<F> {
    type Output = Result<Response<Answered>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx));
        let deadlines = this.deadlines.take();
        Poll::Ready(Ok(response.map(|inner| Answered { inner, deadlines })))
    }
}

/// A response body that, once hyper is done with it (written whole, or
/// dropped with the connection), starts the deadline of the connection's
/// next request head.
struct Answered {
    inner: Body,
    deadlines: Option<Arc<Deadlines>>,
}

impl hyper::body::Body for Answered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Answered {
    fn drop(&mut self) {
        if let Some(d) = &self.deadlines {
            d.response_done();
        }
    }
}

/// A deadline no request has: nothing is armed.
const NONE: u64 = u64::MAX;

/// The fixed instant of this process the deadlines are measured from.
fn base() -> tokio::time::Instant {
    static BASE: OnceLock<tokio::time::Instant> = OnceLock::new();
    *BASE.get_or_init(tokio::time::Instant::now)
}

/// Nanoseconds from [`base`] to `at` (the form the deadlines are kept in,
/// as atomics).
fn nanos(at: tokio::time::Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(base()).as_nanos()).unwrap_or(NONE - 1)
}

/// The instant [`nanos`] gave `nanos` for.
fn instant(nanos: u64) -> tokio::time::Instant {
    base() + Duration::from_nanos(nanos)
}

/// One connection's deadlines: when its next request head must have
/// arrived, and when the request in progress must be done with what it
/// waits for (armed by the handler, [`Deadlines::arm`]: the request's
/// body, then passthrough's upstream answer). Kept as atomics and watched
/// by the connection's one timer (in the future that serves the
/// connection), which is re-armed only when it fires or when a deadline
/// comes before it: a request costs a clock read and a few stores a
/// deadline, where hyper's header-read timeout and per-request timeouts
/// for the body and the upstream registered and removed a timer each
/// (with an allocation) for every request.
pub struct Deadlines {
    header_timeout: Duration,
    /// When the next request head must have arrived; [`NONE`] while a
    /// request is being answered.
    head: AtomicU64,
    /// The deadline the request in progress armed, [`NONE`] if none.
    request: AtomicU64,
    /// Set by the timer when `request` passed; read by the request.
    expired: AtomicBool,
}

impl Deadlines {
    /// A new connection's deadlines: its first head is due within
    /// `header_timeout`. [`serve`] watches them; a connection served
    /// otherwise (a test or fuzzing harness) has them unwatched, so a
    /// deadline armed there never expires.
    pub fn new(header_timeout: Duration) -> Self {
        Deadlines {
            header_timeout,
            head: AtomicU64::new(nanos(tokio::time::Instant::now() + header_timeout)),
            request: AtomicU64::new(NONE),
            expired: AtomicBool::new(false),
        }
    }

    /// A request head arrived: no head is awaited until it is answered.
    fn request_started(&self) {
        self.head.store(NONE, Ordering::Relaxed);
    }

    /// The response was written (or dropped): the next head has
    /// `header_timeout` from now.
    fn response_done(&self) {
        let at = nanos(tokio::time::Instant::now() + self.header_timeout);
        self.head.store(at, Ordering::Relaxed);
    }

    /// Arms a deadline of the request in progress (passthrough arms the
    /// body's, then the upstream's); disarmed when the returned guard
    /// drops. Once `deadline` passes, [`Deadlines::expired`] is true and
    /// the connection's task is woken, so that a future checking it there
    /// ends.
    pub fn arm(&self, deadline: tokio::time::Instant) -> Armed<'_> {
        self.expired.store(false, Ordering::Relaxed);
        self.request.store(nanos(deadline), Ordering::Relaxed);
        Armed(self)
    }

    /// Whether the armed deadline has passed.
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::Relaxed)
    }

    /// The earliest armed deadline.
    fn due(&self) -> u64 {
        self.head
            .load(Ordering::Relaxed)
            .min(self.request.load(Ordering::Relaxed))
    }
}

/// The deadline armed by [`Deadlines::arm`], disarmed on drop.
pub struct Armed<'a>(&'a Deadlines);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.0.request.store(NONE, Ordering::Relaxed);
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum Ended<E> {
    /// hyper's error.
    Conn(E),
    /// No request head arrived within `header_timeout`.
    HeadTimeout,
}

impl<E: std::fmt::Display> std::fmt::Display for Ended<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Conn(e) => e.fmt(f),
            Ended::HeadTimeout => f.write_str("no request head within header_timeout"),
        }
    }
}

/// Tells open connections to finish their current request and close, when
/// the listener shuts down. hyper-util's `GracefulShutdown` does the same
/// through a `watch` channel whose `changed()` future is polled on every
/// wake-up of every connection (~450 instructions a request); here a
/// connection registers its waker once (again only if its task's waker
/// changes) and a poll reads one flag.
#[derive(Default)]
struct Drain {
    draining: AtomicBool,
    next_id: AtomicU64,
    /// The waker of each connection being served, by id.
    wakers: Mutex<HashMap<u64, Waker>>,
}

impl Drain {
    fn wakers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waker>> {
        // A map of wakers holds no invariant a panic could break.
        self.wakers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `conn`, told to shut down gracefully once [`Drain::start`] is called
    /// (at once if it already was), and held to its `deadlines`.
    fn watch<C: GracefulConnection>(
        self: &Arc<Self>,
        conn: C,
        deadlines: Arc<Deadlines>,
    ) -> Watched<C> {
        Watched {
            conn: Box::pin(conn),
            drain: Arc::clone(self),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            waker: None,
            told: false,
            deadlines,
            timer: None,
            armed: NONE,
        }
    }

    /// Tells every connection, present and future, to finish.
    fn start(&self) {
        self.draining.store(true, Ordering::SeqCst);
        // Set before the lock is taken: a connection registering after this
        // drain of the map reads the flag after its own insert, so sees it.
        let wakers = std::mem::take(&mut *self.wakers());
        for w in wakers.into_values() {
            w.wake();
        }
    }
}

/// A connection watched by a [`Drain`], and held to its [`Deadlines`].
struct Watched<C> {
    conn: Pin<Box<C>>,
    drain: Arc<Drain>,
    id: u64,
    /// The waker registered in the drain's map.
    waker: Option<Waker>,
    /// Whether the connection was told to shut down.
    told: bool,
    deadlines: Arc<Deadlines>,
    /// The connection's one timer, made when first armed.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When `timer` fires ([`NONE`]: not armed).
    armed: u64,
}

impl<C> Watched<C> {
    /// Acts on the deadlines when the timer has fired, then arms the timer
    /// for the earliest deadline if it would fire later. Whether the head
    /// deadline passed (the connection is then to be closed).
    fn head_deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        if self.armed != NONE && self.timer.as_ref().is_some_and(|t| t.is_elapsed()) {
            self.armed = NONE;
            let now = nanos(tokio::time::Instant::now());
            let d = &self.deadlines;
            if d.head.load(Ordering::Relaxed) <= now {
                return true;
            }
            if d.request.load(Ordering::Relaxed) <= now {
                d.request.store(NONE, Ordering::Relaxed);
                d.expired.store(true, Ordering::Relaxed);
            }
        }
        let due = self.deadlines.due();
        if due < self.armed {
            self.armed = due;
            let at = instant(due);
            let timer = match &mut self.timer {
                Some(t) => {
                    t.as_mut().reset(at);
                    t
                }
                None => self.timer.insert(Box::pin(tokio::time::sleep_until(at))),
            };
            // Registers the task's waker; one that fired at once is seen on
            // the next poll, which it woke.
            if timer.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
        false
    }
}

impl<C: GracefulConnection> Future for Watched<C> {
    type Output = Result<(), Ended<C::Error>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if !this.told {
            if !this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                let waker = cx.waker().clone();
                this.drain.wakers().insert(this.id, waker.clone());
                this.waker = Some(waker);
            }
            if this.drain.draining.load(Ordering::SeqCst) {
                this.told = true;
                this.conn.as_mut().graceful_shutdown();
            }
        }
        if this.head_deadline_passed(cx) {
            return Poll::Ready(Err(Ended::HeadTimeout));
        }
        let polled = this.conn.as_mut().poll(cx).map_err(Ended::Conn);
        // A deadline the request armed (or the next head's) while polled.
        if polled.is_pending() && this.head_deadline_passed(cx) {
            return Poll::Ready(Err(Ended::HeadTimeout));
        }
        polled
    }
}

impl<C> Drop for Watched<C> {
    fn drop(&mut self) {
        if self.waker.is_some() {
            self.drain.wakers().remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    fn options(grace: Duration) -> ServeOptions {
        ServeOptions {
            max_connections: 16,
            header_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            grace,
            tls: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }

    fn with_header_timeout(t: Duration) -> ServeOptions {
        ServeOptions {
            header_timeout: t,
            ..options(Duration::from_secs(10))
        }
    }

    /// `handler` served with `opts` on a loopback port: its address, the
    /// shutdown that stops it, and the task that returns once it has.
    async fn start<H, F>(
        opts: ServeOptions,
        handler: H,
    ) -> (SocketAddr, Shutdown, tokio::task::JoinHandle<()>)
    where
        H: Fn(Request<Incoming>, SocketAddr, Arc<Deadlines>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let served = tokio::spawn(serve(listener, opts, shutdown.clone(), handler));
        (addr, shutdown, served)
    }

    /// Reads until the server closes the connection; what was read.
    async fn read_to_close(s: &mut TcpStream) -> String {
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all))
            .await
            .expect("the server did not close the connection")
            .unwrap();
        String::from_utf8_lossy(&all).into_owned()
    }

    /// At shutdown an idle keep-alive connection is closed at once and a
    /// request in flight is answered (with `connection: close`); `serve`
    /// returns when both are done, long before the grace period.
    #[tokio::test]
    async fn shutdown_closes_idle_connections_and_lets_requests_in_flight_finish() {
        let release = Arc::new(tokio::sync::Notify::new());
        let handler = {
            let release = Arc::clone(&release);
            move |req: Request<Incoming>, _peer: SocketAddr, _deadlines: Arc<Deadlines>| {
                let release = Arc::clone(&release);
                async move {
                    if req.uri().path() == "/slow" {
                        release.notified().await;
                    }
                    Response::new(crate::error::full("done"))
                }
            }
        };
        let (addr, shutdown, served) = start(options(Duration::from_secs(60)), handler).await;
        let ask = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
        // One keep-alive connection that has been answered and is idle.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(ask("/").as_bytes()).await.unwrap();
        let mut buf = [0u8; 512];
        let n = idle.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("done"));
        // One connection whose request is being handled.
        let mut busy = TcpStream::connect(addr).await.unwrap();
        busy.write_all(ask("/slow").as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;

        shutdown.trigger();
        assert_eq!(read_to_close(&mut idle).await, "");
        assert!(!served.is_finished(), "a request is still in flight");
        release.notify_one();
        let answer = read_to_close(&mut busy).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        assert!(answer.ends_with("done"), "{answer}");
        tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .expect("serve waited past its connections")
            .unwrap();
    }

    /// The head deadline runs only while a head is awaited: a request whose
    /// answer takes longer than `header_timeout` is answered, and the
    /// connection, idle afterwards, is closed `header_timeout` after that
    /// answer.
    #[tokio::test]
    async fn the_head_deadline_waits_out_a_slow_answer_then_closes_the_idle_connection() {
        let handler = |_req: Request<Incoming>, _peer: SocketAddr, _d: Arc<Deadlines>| async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            Response::new(crate::error::full("late"))
        };
        let (addr, shutdown, served) =
            start(with_header_timeout(Duration::from_millis(200)), handler).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("late"), "{answer}");
        let answered = std::time::Instant::now();
        assert_eq!(read_to_close(&mut s).await, "");
        let idle = answered.elapsed();
        assert!(
            idle >= Duration::from_millis(150) && idle < Duration::from_secs(5),
            "closed {idle:?} after the answer"
        );
        shutdown.trigger();
        served.await.unwrap();
    }

    /// A deadline armed by a handler is watched by the
    /// connection's timer: once it passes, the handler's task is woken and
    /// sees it expired; before, it is not.
    #[tokio::test]
    async fn an_armed_deadline_expires_and_wakes_the_request() {
        let handler = |_req: Request<Incoming>, _peer: SocketAddr, d: Arc<Deadlines>| async move {
            let started = tokio::time::Instant::now();
            let armed = d.arm(started + Duration::from_millis(300));
            assert!(!d.expired());
            std::future::poll_fn(|_| {
                if d.expired() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            drop(armed);
            let waited = started.elapsed().as_millis();
            Response::new(crate::error::full(format!("expired after {waited}")))
        };
        let (addr, shutdown, served) =
            start(with_header_timeout(Duration::from_secs(60)), handler).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut s).await;
        let waited: u64 = answer
            .rsplit("expired after ")
            .next()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("{answer}"));
        assert!((300..5000).contains(&waited), "{answer}");
        shutdown.trigger();
        served.await.unwrap();
    }

    /// A connection whose task first runs after the drain started (it was
    /// accepted just before) registers after the wake-up went out: it reads
    /// the flag and is closed, not left to the grace period.
    #[tokio::test]
    async fn a_connection_watched_after_shutdown_started_is_told_at_once() {
        let drain = Arc::new(Drain::default());
        drain.start();
        let (client, server) = tokio::io::duplex(1024);
        let conn = http1::Builder::new().serve_connection(
            TokioIo::new(server),
            service_fn(|_req: Request<Incoming>| async {
                Ok::<_, Infallible>(Response::new(crate::error::full("x")))
            }),
        );
        let deadlines = Arc::new(Deadlines::new(Duration::from_secs(60)));
        let result =
            tokio::time::timeout(Duration::from_secs(5), drain.watch(conn, deadlines)).await;
        assert!(
            matches!(result, Ok(Ok(()))),
            "the connection was not shut down"
        );
        assert!(drain.wakers().is_empty());
        drop(client);
    }
}
