//! The throughput ceiling of the load benchmarks (`bench/load.sh`): a bare
//! hyper 1.x HTTP/1.1 server that reads the whole request body and answers
//! `200 ok` to every request, on every path. It doubles as the "fast
//! upstream" that hookgate (queue and passthrough modes) and nginx forward
//! to.
//!
//! ```text
//! cargo run --release --example bare_hyper -- [--listen 127.0.0.1:18001]
//!     [--threads N] [--delay-ms MS] [--status CODE] [--h2c]
//! ```
//!
//! `--threads` sets the tokio worker threads (default: the CPUs this
//! process may run on, so `taskset -c 0` gives one). `--delay-ms` holds
//! every answer that long: with a huge value it is a "stalled upstream" that
//! keeps hookgate's delivery workers busy without failing them, used to
//! build a backlog. `--status` answers with that status (e.g. 503: a failing
//! upstream). `--h2c` serves HTTP/2 with prior knowledge (no TLS) instead
//! of HTTP/1.1: the upstream of hookgate's `upstream.protocol = "http2"`.
//! The listen address must be a loopback address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

struct Args {
    listen: SocketAddr,
    threads: Option<usize>,
    delay: Duration,
    status: u16,
    h2c: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: bare_hyper [--listen 127.0.0.1:18001] [--threads N] [--delay-ms MS] [--status CODE] [--h2c]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        listen: "127.0.0.1:18001".parse().unwrap(),
        threads: None,
        delay: Duration::ZERO,
        status: 200,
        h2c: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--listen" => args.listen = value().parse().unwrap_or_else(|_| usage()),
            "--threads" => args.threads = Some(value().parse().unwrap_or_else(|_| usage())),
            "--delay-ms" => {
                args.delay = Duration::from_millis(value().parse().unwrap_or_else(|_| usage()))
            }
            "--status" => args.status = value().parse().unwrap_or_else(|_| usage()),
            "--h2c" => args.h2c = true,
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    if !args.listen.ip().is_loopback() {
        eprintln!(
            "bare_hyper: refusing a non-loopback listen address {}",
            args.listen
        );
        std::process::exit(2);
    }
    args
}

fn main() {
    let args = parse_args();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build().expect("tokio runtime");
    rt.block_on(serve(args));
}

async fn serve(args: Args) {
    let listener = TcpListener::bind(args.listen).await.unwrap_or_else(|e| {
        eprintln!("bare_hyper: cannot bind {}: {e}", args.listen);
        std::process::exit(1)
    });
    eprintln!(
        "bare_hyper listening on {} (delay {:?}{})",
        listener.local_addr().unwrap(),
        args.delay,
        if args.h2c { ", HTTP/2 h2c" } else { "" }
    );
    let served = Arc::new(AtomicU64::new(0));
    let delay = args.delay;
    let h2c = args.h2c;
    let status = hyper::StatusCode::from_u16(args.status).unwrap_or_else(|_| usage());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let served = served.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let served = served.clone();
                async move {
                    // Read (and drop) the whole body, like a real receiver.
                    let _ = req.into_body().collect().await;
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    served.fetch_add(1, Ordering::Relaxed);
                    let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
                    *r.status_mut() = status;
                    Ok::<_, Infallible>(r)
                }
            });
            if h2c {
                let _ = http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            } else {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }
        });
    }
}
