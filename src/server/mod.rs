//! Listener plumbing: accept TCP connections, serve HTTP/1.1 with hyper,
//! bound the number of connections, time out slow headers, drain on shutdown.
//!
//! Owns no routing and no business logic: it calls a handler per request.
//! Invariants: at most `max_connections` connections are served at once
//! (further ones wait in the kernel backlog); a client that does not finish
//! its TLS handshake within `handshake_timeout` or its request head within
//! `header_timeout` is disconnected (the handshake runs in the connection's
//! own task, so a slow client never blocks accepting); a client that stops
//! reading its response (a write making no progress for `write_timeout`) is
//! disconnected; on shutdown the listener closes at once and open
//! connections get `grace` to finish.

pub mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;

use crate::error::Body;
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

/// Serves `handler` on `listener` until `shutdown` fires, then drains.
pub async fn serve<H, F>(listener: TcpListener, opts: ServeOptions, shutdown: Shutdown, handler: H)
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
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
        let svc = service_fn(move |req| Answer {
            inner: h(req, peer),
        });
        let builder = {
            let mut b = http1::Builder::new();
            // Answers are small: head and body in one buffer, one `write`.
            b.timer(TokioTimer::new())
                .writev(false)
                .header_read_timeout(opts.header_timeout)
                .max_headers(MAX_HEADER_LINES);
            b
        };
        let drain = Arc::clone(&drain);
        let tls = opts.tls.clone();
        let handshake_timeout = opts.handshake_timeout;
        let write_timeout = opts.write_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let result = match tls {
                None => {
                    let io = TokioIo::new(write_deadline(stream, write_timeout));
                    drain.watch(builder.serve_connection(io, svc)).await
                }
                Some(acceptor) => match tls::accept(&acceptor, stream, handshake_timeout).await {
                    Ok(s) => {
                        let io = TokioIo::new(write_deadline(s, write_timeout));
                        drain.watch(builder.serve_connection(io, svc)).await
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
    }
}

impl<F: Future<Output = Response<Body>>> Future for Answer<F> {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map(Ok)
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
    /// (at once if it already was).
    fn watch<C: GracefulConnection>(self: &Arc<Self>, conn: C) -> Watched<C> {
        Watched {
            conn: Box::pin(conn),
            drain: Arc::clone(self),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            waker: None,
            told: false,
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

/// A connection watched by a [`Drain`].
struct Watched<C> {
    conn: Pin<Box<C>>,
    drain: Arc<Drain>,
    id: u64,
    /// The waker registered in the drain's map.
    waker: Option<Waker>,
    /// Whether the connection was told to shut down.
    told: bool,
}

impl<C: GracefulConnection> Future for Watched<C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
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
        this.conn.as_mut().poll(cx)
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let release = Arc::new(tokio::sync::Notify::new());
        let handler = {
            let release = Arc::clone(&release);
            move |req: Request<Incoming>, _peer: SocketAddr| {
                let release = Arc::clone(&release);
                async move {
                    if req.uri().path() == "/slow" {
                        release.notified().await;
                    }
                    Response::new(crate::error::full("done"))
                }
            }
        };
        let served = tokio::spawn(serve(
            listener,
            options(Duration::from_secs(60)),
            shutdown.clone(),
            handler,
        ));
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
        let result = tokio::time::timeout(Duration::from_secs(5), drain.watch(conn)).await;
        assert!(
            matches!(result, Ok(Ok(()))),
            "the connection was not shut down"
        );
        assert!(drain.wakers().is_empty());
        drop(client);
    }
}
