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
//!     [--upstream 127.0.0.1:18002] [--verify]
//! ```
//!
//! With `--verify`, it also does the one piece of work a verifying proxy
//! cannot skip: it reads each body whole and checks its SigSentry
//! signature (`X-SigSentry-Signature: sha256=<hex>`, HMAC-SHA256 with the
//! secret in `SIGSENTRY_SECRET`, compared in constant time) before
//! forwarding it, answering 401 when it does not verify. That is the floor
//! of hookgate's passthrough: hyper, mimalloc (hookgate's allocator) and
//! the HMAC, and none of hookgate's routing, header rewriting, timeouts,
//! pool or metrics.
//!
//! Runs a current-thread runtime (the benchmark pins it to one core, as it
//! does hookgate). Both addresses must be loopback addresses.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// The allocator hookgate runs with, so that the two compare on hyper and
/// the work alone.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn usage() -> ! {
    eprintln!(
        "usage: bare_proxy [--listen 127.0.0.1:18083] [--upstream 127.0.0.1:18002] [--verify]"
    );
    std::process::exit(2)
}

fn main() {
    let mut listen: SocketAddr = "127.0.0.1:18083".parse().unwrap();
    let mut upstream: SocketAddr = "127.0.0.1:18002".parse().unwrap();
    let mut verify = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--listen" => listen = value().parse().unwrap_or_else(|_| usage()),
            "--upstream" => upstream = value().parse().unwrap_or_else(|_| usage()),
            "--verify" => {
                let secret = std::env::var("SIGSENTRY_SECRET").unwrap_or_default();
                if secret.is_empty() {
                    eprintln!("bare_proxy: --verify needs the secret in SIGSENTRY_SECRET");
                    std::process::exit(2);
                }
                let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
                    .expect("HMAC takes keys of any length");
                verify = Some(Arc::new(mac));
            }
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
    rt.block_on(serve(listen, upstream, verify));
}

/// The request body forwarded: hyper's, streamed as is, or (`--verify`)
/// the body read whole.
type Forwarded = Either<Incoming, Full<Bytes>>;
type Sender = client::SendRequest<Forwarded>;

/// The keyed HMAC, cloned for each request.
type Verify = Option<Arc<Hmac<Sha256>>>;

/// `body` read whole: the one frame hyper hands over for the usual
/// webhook, gathered only when it comes in pieces.
async fn read_whole(mut body: Incoming) -> Result<Bytes, hyper::Error> {
    let first = match body.frame().await {
        Some(frame) => frame?.into_data().unwrap_or_default(),
        None => return Ok(Bytes::new()),
    };
    if body.is_end_stream() {
        return Ok(first);
    }
    let rest = body.collect().await?.to_bytes();
    Ok([first, rest].concat().into())
}

/// Whether `body` carries a valid SigSentry signature under `mac`'s key.
fn verified(mac: &Hmac<Sha256>, headers: &http::HeaderMap, body: &[u8]) -> bool {
    let Some(hex) = headers
        .get("x-sigsentry-signature")
        .and_then(|v| v.as_bytes().strip_prefix(b"sha256="))
    else {
        return false;
    };
    let mut sig = [0u8; 32];
    if hex::decode_to_slice(hex, &mut sig).is_err() {
        return false;
    }
    let mut mac = mac.clone();
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

async fn connect(upstream: SocketAddr) -> std::io::Result<Sender> {
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = client::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn serve(listen: SocketAddr, upstream: SocketAddr, verify: Verify) {
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
        let verify = verify.clone();
        tokio::spawn(async move {
            // This connection's upstream connection: its requests come one
            // at a time, so the lock is never contended.
            let sender: std::sync::Arc<Mutex<Option<Sender>>> = Default::default();
            let svc = service_fn(move |req: Request<Incoming>| {
                let sender = sender.clone();
                let verify = verify.clone();
                async move {
                    let req = match verify {
                        None => req.map(Either::Left),
                        Some(mac) => {
                            let (parts, body) = req.into_parts();
                            let body = read_whole(body).await.map_err(std::io::Error::other)?;
                            if !verified(&mac, &parts.headers, &body) {
                                let mut refused = Response::new(Either::Right(Full::default()));
                                *refused.status_mut() = http::StatusCode::UNAUTHORIZED;
                                return Ok(refused);
                            }
                            Request::from_parts(parts, Either::Right(Full::new(body)))
                        }
                    };
                    let mut slot = sender.lock().await;
                    if slot.as_ref().is_none_or(|s| s.is_closed()) {
                        *slot = Some(connect(upstream).await?);
                    }
                    let s = slot.as_mut().expect("connected above");
                    s.ready().await.map_err(std::io::Error::other)?;
                    let resp: Response<Incoming> =
                        s.send_request(req).await.map_err(std::io::Error::other)?;
                    Ok::<_, std::io::Error>(resp.map(Either::Left))
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
