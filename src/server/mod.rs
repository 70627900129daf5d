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

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
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
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
        let svc = service_fn(move |req| {
            let fut = h(req, peer);
            async move { Ok::<_, Infallible>(fut.await) }
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
        let watcher = graceful.watcher();
        let tls = opts.tls.clone();
        let handshake_timeout = opts.handshake_timeout;
        let write_timeout = opts.write_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let result = match tls {
                None => {
                    let io = TokioIo::new(write_deadline(stream, write_timeout));
                    watcher.watch(builder.serve_connection(io, svc)).await
                }
                Some(acceptor) => match tls::accept(&acceptor, stream, handshake_timeout).await {
                    Ok(s) => {
                        let io = TokioIo::new(write_deadline(s, write_timeout));
                        watcher.watch(builder.serve_connection(io, svc)).await
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
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(opts.grace) => {
            tracing::warn!("grace period elapsed with connections still open");
        }
    }
}
