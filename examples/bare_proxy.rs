//! The floor of a hyper proxy, for `bench/load.sh` (issue 13): a hyper 1.x
//! HTTP/1.1 server whose every request is sent as is (method, target,
//! headers, streamed body) to one upstream over a hyper HTTP/1.1 client
//! connection, and whose answer is the upstream's response as is.
//!
//! It does the least any proxy built on hyper's server and client can do:
//! no routing, no verification, no header rewriting, no pool (each client
//! connection gets its own upstream connection, opened with its first
//! request and kept for its life), no timeouts, no metrics. Measured beside
//! hookgate's passthrough and nginx's `proxy_pass` in the same run, it
//! shows how much of the distance to nginx is hyper's own.
//!
//! ```text
//! cargo run --release --example bare_proxy -- [--listen 127.0.0.1:18083]
//!     [--upstream 127.0.0.1:18002]
//! ```
//!
//! Runs a current-thread runtime (the benchmark pins it to one core, as it
//! does hookgate). Both addresses must be loopback addresses.

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

fn usage() -> ! {
    eprintln!("usage: bare_proxy [--listen 127.0.0.1:18083] [--upstream 127.0.0.1:18002]");
    std::process::exit(2)
}

fn main() {
    let mut listen: SocketAddr = "127.0.0.1:18083".parse().unwrap();
    let mut upstream: SocketAddr = "127.0.0.1:18002".parse().unwrap();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--listen" => listen = value().parse().unwrap_or_else(|_| usage()),
            "--upstream" => upstream = value().parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    if !listen.ip().is_loopback() || !upstream.ip().is_loopback() {
        eprintln!("bare_proxy: both addresses must be loopback addresses");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(serve(listen, upstream));
}

type Sender = client::SendRequest<Incoming>;

async fn connect(upstream: SocketAddr) -> std::io::Result<Sender> {
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = client::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) {
    let listener = TcpListener::bind(listen).await.unwrap_or_else(|e| {
        eprintln!("bare_proxy: cannot bind {listen}: {e}");
        std::process::exit(1)
    });
    eprintln!("bare_proxy listening on {listen}, upstream {upstream}");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            // This connection's upstream connection: its requests come one
            // at a time, so the lock is never contended.
            let sender: std::sync::Arc<Mutex<Option<Sender>>> = Default::default();
            let svc = service_fn(move |req: Request<Incoming>| {
                let sender = sender.clone();
                async move {
                    let mut slot = sender.lock().await;
                    if slot.as_ref().is_none_or(|s| s.is_closed()) {
                        *slot = Some(connect(upstream).await?);
                    }
                    let s = slot.as_mut().expect("connected above");
                    s.ready().await.map_err(std::io::Error::other)?;
                    let resp: Response<Incoming> =
                        s.send_request(req).await.map_err(std::io::Error::other)?;
                    Ok::<_, std::io::Error>(resp)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
