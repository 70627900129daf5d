//! The durable-append reference of the load benchmarks (`bench/load.sh`):
//! the least a webhook receiver has to do before it may answer `202`, and
//! nothing else. hookgate's queue mode is measured against it.
//!
//! ```text
//! SIGSENTRY_SECRET=... cargo run --release --example durable_append -- \
//!     --file /tmp/append.log [--listen 127.0.0.1:18004] [--threads N] \
//!     [--forward http://127.0.0.1:18002/hooks/sigsentry]
//! ```
//!
//! For `POST /hooks/sigsentry` it:
//! 1. reads the body (at most 1 MiB, else `413`);
//! 2. verifies `X-SigSentry-Signature: sha256=<hex>`, the HMAC-SHA256 of the
//!    raw body with the secret from `SIGSENTRY_SECRET`, in constant time
//!    (`Mac::verify_slice`; else `401`);
//! 3. parses the body as JSON and takes `/analysisId` (a string or a number;
//!    else `400`);
//! 4. hands (key, body) to ONE writer thread and waits for its answer.
//!
//! The writer thread group-commits: it blocks for the first request, drains
//! whatever else is already waiting, looks every key up in an in-memory
//! `HashSet` (a key already stored, or seen earlier in the same batch, is a
//! duplicate), appends the new bodies, each prefixed by its length (u32,
//! little endian), to one file with a single `write`, calls `fdatasync`
//! once, then answers the whole batch: `202 {"status":"accepted"}` or
//! `200 {"status":"duplicate"}`. Keys enter the set only once their batch
//! is on disk, so a duplicate is never acknowledged before its original is
//! durable. If the write or the sync fails, the batch is cut off the file
//! again and every request of it gets `503` (the sender retries).
//!
//! With `--forward URL` it also does the least forwarding can do: once a
//! request is acknowledged, a task POSTs its body to URL over a keep-alive
//! connection pool (at most 64 at a time), reads the answer and counts it
//! (`GET /stats`: `{"forwarded":N,"failed":M}`); no retry, no record of the
//! outcome, nothing read back from the file. It is the ceiling of a queue
//! mode that forwards while it acks, on the same core.
//!
//! `GET /metrics` answers one Prometheus histogram,
//! `reference_commit_duration_seconds`: the time of each group commit, from
//! the batch taken to its `fdatasync` returned, with the bucket bounds of hookgate's
//! `hookgate_store_commit_duration_seconds`, so that `bench/load.sh` puts
//! the two commit p99s side by side.
//!
//! Deliberately left out: timestamps and replay windows, reading the file
//! back after a restart (the set starts empty), retries, other metrics,
//! logs. The listen address must be a loopback address.

use std::collections::HashSet;
use std::convert::Infallible;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};

const ROUTE: &str = "/hooks/sigsentry";
const SIGNATURE_HEADER: &str = "x-sigsentry-signature";
const SIGNATURE_PREFIX: &str = "sha256=";
const KEY_POINTER: &str = "/analysisId";
const BODY_LIMIT: usize = 1 << 20;
/// The writer thread's name: `bench/load.sh` finds it by this prefix.
const WRITER_THREAD: &str = "durable-writer";

type HmacSha256 = Hmac<Sha256>;

struct Args {
    listen: SocketAddr,
    file: PathBuf,
    threads: Option<usize>,
    forward: Option<Uri>,
}

/// The bucket bounds (seconds) of the commit histogram: those of hookgate's
/// `hookgate_store_commit_duration_seconds`.
const COMMIT_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025,
    0.05, 0.1, 0.25, 1.0,
];

/// Group commits by duration: one counter per bucket of `COMMIT_BUCKETS`
/// (not cumulative) and one past the last bound, plus the sum.
struct CommitHistogram {
    counts: [AtomicU64; COMMIT_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl CommitHistogram {
    fn new() -> CommitHistogram {
        CommitHistogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = COMMIT_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(COMMIT_BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (cumulative buckets).
    fn render(&self) -> String {
        let name = "reference_commit_duration_seconds";
        let mut out = format!(
            "# HELP {name} Duration of a group commit (one write and one fdatasync).\n\
             # TYPE {name} histogram\n"
        );
        let mut total = 0;
        for (i, le) in COMMIT_BUCKETS.iter().enumerate() {
            total += self.counts[i].load(Ordering::Relaxed);
            out.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {total}\n"));
        }
        total += self.counts[COMMIT_BUCKETS.len()].load(Ordering::Relaxed);
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        out.push_str(&format!(
            "{name}_bucket{{le=\"+Inf\"}} {total}\n{name}_sum {sum}\n{name}_count {total}\n"
        ));
        out
    }
}

/// Forwards taken at once by `--forward`.
const FORWARD_CONCURRENCY: usize = 64;

fn usage() -> ! {
    eprintln!(
        "usage: SIGSENTRY_SECRET=... durable_append --file PATH \
         [--listen 127.0.0.1:18004] [--threads N] [--forward http://HOST:PORT/PATH]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut listen: SocketAddr = "127.0.0.1:18004".parse().unwrap();
    let mut file = None;
    let mut threads = None;
    let mut forward = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--listen" => listen = value().parse().unwrap_or_else(|_| usage()),
            "--file" => file = Some(PathBuf::from(value())),
            "--threads" => threads = Some(value().parse().unwrap_or_else(|_| usage())),
            "--forward" => forward = Some(value().parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    if !listen.ip().is_loopback() {
        eprintln!("durable_append: refusing a non-loopback listen address {listen}");
        std::process::exit(2);
    }
    Args {
        listen,
        file: file.unwrap_or_else(|| usage()),
        threads,
        forward,
    }
}

/// What the writer answers for one request.
#[derive(Clone, Copy)]
enum Outcome {
    Accepted,
    Duplicate,
    Failed,
}

/// One request handed to the writer thread.
struct Append {
    key: String,
    body: Bytes,
    done: oneshot::Sender<Outcome>,
}

struct Forward {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
    slots: Arc<Semaphore>,
    forwarded: AtomicU64,
    failed: AtomicU64,
}

struct Ctx {
    secret: Vec<u8>,
    appends: mpsc::Sender<Append>,
    forward: Option<Arc<Forward>>,
    /// The writer's commit durations, for `GET /metrics`.
    commits: Arc<CommitHistogram>,
}

fn main() {
    let args = parse_args();
    let secret = match std::env::var("SIGSENTRY_SECRET") {
        Ok(s) if !s.is_empty() => s.into_bytes(),
        _ => {
            eprintln!("durable_append: SIGSENTRY_SECRET must be set");
            std::process::exit(2)
        }
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.file)
        .unwrap_or_else(|e| {
            eprintln!("durable_append: cannot open {}: {e}", args.file.display());
            std::process::exit(1)
        });
    let (tx, rx) = mpsc::channel();
    let commits = Arc::new(CommitHistogram::new());
    let observed = commits.clone();
    std::thread::Builder::new()
        .name(WRITER_THREAD.into())
        .spawn(move || writer(file, rx, &observed))
        .expect("spawn the writer thread");

    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build().expect("tokio runtime");
    let forward = args.forward.map(|uri| {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Arc::new(Forward {
            client: Client::builder(TokioExecutor::new()).build(connector),
            uri,
            slots: Arc::new(Semaphore::new(FORWARD_CONCURRENCY)),
            forwarded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    });
    let ctx = Arc::new(Ctx {
        secret,
        appends: tx,
        forward,
        commits,
    });
    rt.block_on(serve(args.listen, ctx));
}

/// The group-commit loop: one `write` and one `fdatasync` per batch.
fn writer(mut file: File, rx: mpsc::Receiver<Append>, commits: &CommitHistogram) {
    let mut stored: HashSet<String> = HashSet::new();
    let mut fresh: HashSet<String> = HashSet::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut answers: Vec<(oneshot::Sender<Outcome>, Outcome)> = Vec::new();
    let mut len = file.metadata().map(|m| m.len()).unwrap_or(0);
    while let Ok(first) = rx.recv() {
        // A commit's time runs from the batch taken to its sync returned,
        // as hookgate's does.
        let started = Instant::now();
        for a in std::iter::once(first).chain(rx.try_iter()) {
            if stored.contains(&a.key) || fresh.contains(&a.key) {
                answers.push((a.done, Outcome::Duplicate));
                continue;
            }
            buf.extend_from_slice(&(a.body.len() as u32).to_le_bytes());
            buf.extend_from_slice(&a.body);
            fresh.insert(a.key);
            answers.push((a.done, Outcome::Accepted));
        }
        let written = buf.is_empty() || {
            let r = file.write_all(&buf).and_then(|()| file.sync_data());
            commits.observe(started.elapsed());
            if let Err(e) = &r {
                eprintln!("durable_append: append failed, answering 503: {e}");
                // Cut a partial batch off, so the file stays a sequence of
                // whole records.
                let _ = file.set_len(len);
            }
            r.is_ok()
        };
        if written {
            len += buf.len() as u64;
            stored.extend(fresh.drain());
        } else {
            fresh.clear();
        }
        buf.clear();
        for (done, outcome) in answers.drain(..) {
            let _ = done.send(if written { outcome } else { Outcome::Failed });
        }
    }
}

async fn serve(listen: SocketAddr, ctx: Arc<Ctx>) {
    let listener = TcpListener::bind(listen).await.unwrap_or_else(|e| {
        eprintln!("durable_append: cannot bind {listen}: {e}");
        std::process::exit(1)
    });
    eprintln!(
        "durable_append listening on {}",
        listener.local_addr().unwrap()
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(handle(req, &ctx).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// POSTs an acknowledged body to the `--forward` URL and counts the answer.
async fn forward(f: Arc<Forward>, body: Bytes) {
    let Ok(_slot) = f.slots.clone().acquire_owned().await else {
        return;
    };
    let req = Request::post(f.uri.clone())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body));
    let ok = match req {
        Ok(req) => match f.client.request(req).await {
            Ok(resp) => {
                let success = resp.status().is_success();
                resp.into_body().collect().await.is_ok() && success
            }
            Err(_) => false,
        },
        Err(_) => false,
    };
    let counter = if ok { &f.forwarded } else { &f.failed };
    counter.fetch_add(1, Ordering::Relaxed);
}

async fn handle(req: Request<Incoming>, ctx: &Ctx) -> Response<Full<Bytes>> {
    if req.uri().path() == "/metrics" {
        let mut r = Response::new(Full::new(Bytes::from(ctx.commits.render())));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        return r;
    }
    if req.uri().path() == "/stats" {
        let (n, failed) = ctx.forward.as_ref().map_or((0, 0), |f| {
            (
                f.forwarded.load(Ordering::Relaxed),
                f.failed.load(Ordering::Relaxed),
            )
        });
        let mut r = Response::new(Full::new(Bytes::from(format!(
            r#"{{"forwarded":{n},"failed":{failed}}}"#
        ))));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        return r;
    }
    if req.uri().path() != ROUTE {
        return reply(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#);
    }
    if req.method() != Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"method_not_allowed"}"#,
        );
    }
    let signature = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix(SIGNATURE_PREFIX))
        .and_then(|h| hex::decode(h).ok());
    let body = match Limited::new(req.into_body(), BODY_LIMIT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                r#"{"error":"body_too_large"}"#,
            )
        }
        Err(_) => return reply(StatusCode::BAD_REQUEST, r#"{"error":"body_unreadable"}"#),
    };
    let mut mac = HmacSha256::new_from_slice(&ctx.secret).expect("HMAC takes keys of any length");
    mac.update(&body);
    if signature.is_none_or(|s| mac.verify_slice(&s).is_err()) {
        return reply(StatusCode::UNAUTHORIZED, r#"{"error":"invalid_signature"}"#);
    }
    let key = match serde_json::from_slice::<serde_json::Value>(&body) {
        Err(_) => return reply(StatusCode::BAD_REQUEST, r#"{"error":"invalid_json"}"#),
        Ok(v) => match v.pointer(KEY_POINTER) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => return reply(StatusCode::BAD_REQUEST, r#"{"error":"dedup_key_missing"}"#),
        },
    };
    let (done, answer) = oneshot::channel();
    let copy = ctx.forward.as_ref().map(|f| (f.clone(), body.clone()));
    let outcome = match ctx.appends.send(Append { key, body, done }) {
        Ok(()) => answer.await.unwrap_or(Outcome::Failed),
        Err(_) => Outcome::Failed,
    };
    match outcome {
        Outcome::Accepted => {
            if let Some((f, body)) = copy {
                tokio::spawn(forward(f, body));
            }
            reply(StatusCode::ACCEPTED, r#"{"status":"accepted"}"#)
        }
        Outcome::Duplicate => reply(StatusCode::OK, r#"{"status":"duplicate"}"#),
        Outcome::Failed => {
            let mut r = reply(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"store_unavailable"}"#,
            );
            r.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from_static("1"),
            );
            r
        }
    }
}
