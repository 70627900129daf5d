//! HTTP/1.1 load generator of the load benchmarks (`bench/load.sh`).
//!
//! Sends `POST`s of ~1 KB JSON bodies, each with a unique `analysisId` and
//! signed like SigSentry does (`hookgate::signature::sign`), over N
//! keep-alive connections, for a fixed duration (and/or a fixed number of
//! requests), then prints one JSON line on stdout (and a readable summary on
//! stderr).
//!
//! Two load models:
//! - **closed loop** (`--rate 0`, the default): every connection sends its
//!   next request as soon as the previous answer arrived: max throughput.
//! - **open loop** (`--rate R`): request `i` is *intended* to be sent at
//!   `start + i/R`, whatever happened before. Latency is measured from that
//!   intended time, not from the actual send, so a stalled server is charged
//!   for the requests it delayed (no coordinated omission). Sends are paced
//!   with a short spin before the intended time (tokio timers have 1 ms
//!   resolution); `send_lag` reports how late sends actually went out, so a
//!   saturated load generator shows up instead of hiding in the figures.
//!
//! ```text
//! loadgen --url http://127.0.0.1:18080/hooks/sigsentry [--connections 64]
//!         [--duration 10] [--warmup 2] [--rate 0|R] [--requests N]
//!         [--secret S | env LOADGEN_SECRET / SIGSENTRY_SECRET]
//!         [--body-size 1024] [--timeout 5] [--threads N] [--label L]
//!         [--scheme sigsentry] [--id-prefix P] [--header 'Name: value']...
//!         [--timeline FILE]
//! loadgen --analysis --url http://127.0.0.1:19090/v1/analyses
//!         --header 'Authorization: Bearer KEY' [the options above]
//! loadgen --drain-watch http://127.0.0.1:19090 [--drain-timeout 300] [--poll-ms 100]
//! ```
//!
//! `--analysis` posts to hookgate's sender API (`POST /v1/analyses`)
//! instead: each body is seed 000's analysis exactly (its fields only,
//! `severity` "high", project `prj_def456`) with a unique `analysisId`
//! (`<id-prefix>-<connection>-<n>`, as for the webhooks), unsigned (no
//! secret needed); `--body-size`, when given, pads it with a `notes` field.
//! `--header` (repeatable) adds a header to every request, e.g. the API
//! key's `Authorization: Bearer ...`. Any 2xx counts as success (`ok`): the
//! sender answers `202` to a new analysis and `200` to a duplicate, which
//! the `status` counts tell apart.
//!
//! `--drain-watch` polls hookgate's `GET /admin/queues` every `--poll-ms`
//! (100 ms; each poll costs hookgate a full scan of its jobs table, so do
//! not poll much faster) until no job is pending, and reports the delivery
//! rate (delivered jobs per second between the first and the last poll).
//!
//! `--timeline FILE` writes the measured phase's latency per 100 ms window
//! of intended send times (answers, p50, p99, max), which tells a tail made
//! of a few stalls from one spread over the whole run.
//!
//! Only loopback addresses are accepted as targets.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use hookgate::signature::{self, Preset, Scheme};

#[derive(Clone)]
struct Args {
    url: Option<String>,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    rate: f64,
    requests: Option<u64>,
    secret: Option<String>,
    body_size: usize,
    timeout: Duration,
    threads: Option<usize>,
    label: String,
    scheme: Preset,
    id_prefix: String,
    /// Post seed 000 analyses (sender API) instead of signed webhooks.
    analysis: bool,
    /// Whether `--body-size` was given (analysis mode pads only then).
    body_size_given: bool,
    /// Extra headers of every request (`--header`).
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    drain_watch: Option<String>,
    drain_timeout: Duration,
    poll: Duration,
    /// Write the measured phase's latency per 100 ms window here (`--timeline`).
    timeline: Option<String>,
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("loadgen: {msg}");
    }
    eprintln!(
        "usage: loadgen --url URL [--connections N] [--duration S] [--warmup S] [--rate R|0] \
         [--requests N] [--secret S] [--body-size B] [--timeout S] [--threads N] [--label L] \
         [--scheme NAME] [--id-prefix P] [--header 'Name: value']... [--analysis] [--timeline FILE]\n       \
         loadgen --drain-watch ADMIN_URL [--drain-timeout S]"
    );
    std::process::exit(2)
}

fn secs(v: &str) -> Duration {
    let f: f64 = v
        .parse()
        .unwrap_or_else(|_| usage(&format!("not a number of seconds: {v}")));
    Duration::from_secs_f64(f.max(0.0))
}

/// `Name: value` of `--header`.
fn header(v: &str) -> (http::HeaderName, http::HeaderValue) {
    let (name, value) = v
        .split_once(':')
        .unwrap_or_else(|| usage(&format!("--header wants 'Name: value', not {v:?}")));
    let name = http::HeaderName::from_bytes(name.trim().as_bytes())
        .unwrap_or_else(|_| usage(&format!("bad header name in --header {v:?}")));
    let value = http::HeaderValue::from_str(value.trim())
        .unwrap_or_else(|_| usage(&format!("bad header value in --header for {name}")));
    (name, value)
}

fn parse_args() -> Args {
    let mut a = Args {
        url: None,
        connections: 64,
        duration: Duration::from_secs(10),
        warmup: Duration::ZERO,
        rate: 0.0,
        requests: None,
        secret: std::env::var("LOADGEN_SECRET")
            .or_else(|_| std::env::var("SIGSENTRY_SECRET"))
            .ok(),
        body_size: 1024,
        timeout: Duration::from_secs(5),
        threads: None,
        label: String::new(),
        scheme: Preset::Sigsentry,
        id_prefix: format!(
            "an_{:x}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_micros()
        ),
        analysis: false,
        body_size_given: false,
        headers: Vec::new(),
        drain_watch: None,
        drain_timeout: Duration::from_secs(300),
        poll: Duration::from_millis(100),
        timeline: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--url" => a.url = Some(value()),
            "--connections" | "-c" => {
                a.connections = value().parse().unwrap_or_else(|_| usage("--connections"))
            }
            "--duration" | "-d" => a.duration = secs(&value()),
            "--warmup" => a.warmup = secs(&value()),
            "--rate" | "-r" => a.rate = value().parse().unwrap_or_else(|_| usage("--rate")),
            "--requests" | "-n" => {
                a.requests = Some(value().parse().unwrap_or_else(|_| usage("--requests")))
            }
            "--secret" => a.secret = Some(value()),
            "--body-size" => {
                a.body_size = value().parse().unwrap_or_else(|_| usage("--body-size"));
                a.body_size_given = true;
            }
            "--timeout" => a.timeout = secs(&value()),
            "--threads" => a.threads = Some(value().parse().unwrap_or_else(|_| usage("--threads"))),
            "--label" => a.label = value(),
            "--scheme" => a.scheme = value().parse().unwrap_or_else(|e: String| usage(&e)),
            "--id-prefix" => a.id_prefix = value(),
            "--analysis" => a.analysis = true,
            "--header" | "-H" => a.headers.push(header(&value())),
            "--drain-watch" => a.drain_watch = Some(value()),
            "--timeline" => a.timeline = Some(value()),
            "--drain-timeout" => a.drain_timeout = secs(&value()),
            "--poll-ms" => {
                a.poll =
                    Duration::from_millis(value().parse().unwrap_or_else(|_| usage("--poll-ms")))
            }
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if a.connections == 0 {
        usage("--connections must be at least 1");
    }
    a
}

/// Host header and loopback socket address of an `http://` URL.
fn target(url: &str) -> (Uri, String, SocketAddr) {
    let uri: Uri = url
        .parse()
        .unwrap_or_else(|_| usage(&format!("bad URL {url}")));
    if uri.scheme_str() != Some("http") {
        usage("only http:// URLs are supported");
    }
    let auth = uri
        .authority()
        .unwrap_or_else(|| usage("URL without host"))
        .clone();
    let port = auth.port_u16().unwrap_or(80);
    let addr = (auth.host().trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| usage(&format!("cannot resolve {auth}")));
    if !addr.ip().is_loopback() {
        usage(&format!(
            "refusing non-loopback target {addr}: benchmarks stay on this machine"
        ));
    }
    (uri, auth.to_string(), addr)
}

fn main() {
    let args = parse_args();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build().expect("tokio runtime");
    let code = rt.block_on(async move {
        if let Some(admin) = args.drain_watch.clone() {
            drain_watch(&admin, args.drain_timeout, args.poll).await
        } else {
            load(args).await
        }
    });
    std::process::exit(code);
}

// ---------------------------------------------------------------------------
// Load

/// The request body: SigSentry's analysis payload, padded to `size` bytes.
fn body(id: &str, size: usize) -> Bytes {
    let mut s = format!(
        "{{\"analysisId\":\"{id}\",\"tenantId\":\"tnt_xyz789\",\"projectId\":\"prj_def456\",\
\"projectSlug\":\"prod\",\"severity\":\"high\",\"summary\":\"Checkout API returning 500s - expired tokens\",\
\"rootCause\":{{\"service\":\"checkout-api\",\"errorType\":\"AuthenticationError\",\"category\":\"deploy_regression\"}},\
\"affectedServices\":[{{\"name\":\"checkout-api\",\"role\":\"origin\",\"errorCount\":142}}],\
\"suggestedActions\":[{{\"type\":\"fix\",\"action\":\"Revert PR #482\",\"priority\":1}}],\
\"url\":\"https://dashboard.sigsentry.com/dashboard/projects/prod/analyses/{id}\",\
\"timestamp\":\"2026-04-25T18:00:00.000Z\",\"notes\":\""
    );
    let tail = "\"}\n";
    let pad = size.saturating_sub(s.len() + tail.len());
    s.push_str(&"x".repeat(pad));
    s.push_str(tail);
    Bytes::from(s)
}

/// Seed 000's analysis (`POST /v1/analyses`) with `id` as its
/// `analysisId`; padded to `size` bytes with a `notes` field when `size` is
/// given.
fn analysis_body(id: &str, size: Option<usize>) -> Bytes {
    let mut s = format!(
        "{{\"analysisId\":\"{id}\",\"tenantId\":\"tnt_xyz789\",\"projectId\":\"prj_def456\",\
\"projectSlug\":\"prod\",\"severity\":\"high\",\
\"summary\":\"Checkout API returning 500s due to expired auth tokens\",\
\"rootCause\":{{\"service\":\"checkout-api\",\"errorType\":\"AuthenticationError\",\"category\":\"deploy_regression\"}},\
\"affectedServices\":[{{\"name\":\"checkout-api\",\"role\":\"origin\",\"errorCount\":142}}],\
\"suggestedActions\":[{{\"type\":\"fix\",\"action\":\"Revert PR #482 or hotfix token check\",\"priority\":1}}],\
\"url\":\"https://dashboard.sigsentry.com/dashboard/projects/prod/analyses/{id}\",\
\"timestamp\":\"2026-04-25T18:00:00.000Z\""
    );
    if let Some(size) = size {
        s.push_str(",\"notes\":\"");
        let pad = size.saturating_sub(s.len() + 3);
        s.push_str(&"x".repeat(pad));
        s.push('"');
    }
    s.push_str("}\n");
    Bytes::from(s)
}

struct Shared {
    next: AtomicU64,
    start: Instant,
    end: Instant,
    /// Open loop: nanoseconds between intended sends.
    period_ns: Option<f64>,
    max_requests: Option<u64>,
}

#[derive(Default)]
struct Stats {
    /// Microseconds from the intended send time to the complete answer.
    latency: Vec<u32>,
    /// Microseconds from the actual send to the complete answer.
    service: Vec<u32>,
    /// Microseconds the send went out after its intended time (open loop).
    lag: Vec<u32>,
    /// Milliseconds from the start of the phase to the intended send time
    /// of each answer in `latency` (same order).
    at: Vec<u32>,
    status: BTreeMap<u16, u64>,
    errors: u64,
    timeouts: u64,
    connect_errors: u64,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.latency.extend(o.latency);
        self.service.extend(o.service);
        self.lag.extend(o.lag);
        self.at.extend(o.at);
        for (k, v) in o.status {
            *self.status.entry(k).or_default() += v;
        }
        self.errors += o.errors;
        self.timeouts += o.timeouts;
        self.connect_errors += o.connect_errors;
    }
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

async fn connect(addr: SocketAddr) -> Result<http1::SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Waits until `t`: a timer for the bulk, then yields (which lets I/O in)
/// for the last stretch, because tokio's timer only has 1 ms resolution.
async fn pace_until(t: Instant) {
    const SPIN: Duration = Duration::from_micros(1500);
    loop {
        let now = Instant::now();
        if now >= t {
            return;
        }
        let left = t - now;
        if left > SPIN {
            tokio::time::sleep_until(tokio::time::Instant::from_std(t - SPIN)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

struct Ctx {
    addr: SocketAddr,
    host: String,
    path: String,
    scheme: Scheme,
    secret: Vec<u8>,
    body_size: usize,
    timeout: Duration,
    id_prefix: String,
    analysis: bool,
    body_size_given: bool,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Ctx {
    /// The body and the signature headers (none for an analysis) of the
    /// request carrying `id`.
    fn request_body(&self, id: &str) -> (Bytes, Vec<(http::HeaderName, http::HeaderValue)>) {
        if self.analysis {
            let size = self.body_size_given.then_some(self.body_size);
            return (analysis_body(id, size), Vec::new());
        }
        let b = body(id, self.body_size);
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let needs_id = self.scheme != Scheme::Preset(Preset::Sigsentry);
        let headers = signature::sign(&self.scheme, &self.secret, &b, needs_id.then_some(id), ts)
            .expect("signing works");
        (b, headers)
    }
}

async fn worker(ctx: Arc<Ctx>, shared: Arc<Shared>, conn_no: usize) -> Stats {
    let mut st = Stats::default();
    let mut sender: Option<http1::SendRequest<Full<Bytes>>> = None;
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if shared.max_requests.is_some_and(|m| i >= m) {
            break;
        }
        let intended = match shared.period_ns {
            Some(p) => shared.start + Duration::from_nanos((i as f64 * p) as u64),
            None => Instant::now(),
        };
        // Open loop: a request whose intended time falls after the end is
        // not sent; neither is any once the end has passed (an overloaded
        // server must not stretch the run): those count as `unsent`.
        if intended >= shared.end || Instant::now() >= shared.end {
            break;
        }
        if shared.period_ns.is_some() {
            pace_until(intended).await;
        }
        let id = format!("{}-{conn_no}-{i}", ctx.id_prefix);
        let (b, headers) = ctx.request_body(&id);
        let mut req = Request::post(ctx.path.as_str())
            .header(http::header::HOST, ctx.host.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("user-agent", "hookgate-loadgen")
            .body(Full::new(b))
            .unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(k, v);
        }
        for (k, v) in &ctx.headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }

        let sent = Instant::now();
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            match tokio::time::timeout(ctx.timeout, connect(ctx.addr)).await {
                Ok(Ok(s)) => sender = Some(s),
                _ => {
                    st.connect_errors += 1;
                    st.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let s = sender.as_mut().unwrap();
        let result = tokio::time::timeout(ctx.timeout, async {
            s.ready().await.map_err(|e| e.to_string())?;
            let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            resp.into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<u16, String>(status)
        })
        .await;
        let done = Instant::now();
        match result {
            Ok(Ok(status)) => {
                *st.status.entry(status).or_default() += 1;
                st.latency.push(micros(done - intended));
                st.at
                    .push((intended.saturating_duration_since(shared.start)).as_millis() as u32);
                st.service.push(micros(done - sent));
                if shared.period_ns.is_some() {
                    st.lag
                        .push(micros(sent.saturating_duration_since(intended)));
                }
            }
            Ok(Err(_)) => {
                st.errors += 1;
                sender = None;
            }
            Err(_) => {
                st.errors += 1;
                st.timeouts += 1;
                sender = None;
            }
        }
    }
    st
}

async fn phase(ctx: &Arc<Ctx>, args: &Args, duration: Duration) -> (Stats, Duration) {
    let start = Instant::now() + Duration::from_millis(5);
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        start,
        end: start + duration,
        period_ns: (args.rate > 0.0).then(|| 1e9 / args.rate),
        max_requests: args.requests,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..args.connections {
        tasks.spawn(worker(ctx.clone(), shared.clone(), c));
    }
    let mut total = Stats::default();
    while let Some(r) = tasks.join_next().await {
        if let Ok(s) = r {
            total.merge(s);
        }
    }
    (total, start.elapsed())
}

/// `--timeline`: one line per 100 ms window of intended send times (window
/// start in ms, answers, latency p50 / p99 / max in ms), to tell a tail
/// made of a few stalls from one spread over the run.
fn write_timeline(path: &str, at: &[u32], latency: &[u32]) {
    let mut windows: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (a, l) in at.iter().zip(latency) {
        windows.entry(a / 100).or_default().push(*l);
    }
    let mut out = String::from("ms\tanswers\tp50_ms\tp99_ms\tmax_ms\n");
    for (w, mut v) in windows {
        v.sort_unstable();
        out.push_str(&format!(
            "{}\t{}\t{:.3}\t{:.3}\t{:.3}\n",
            w * 100,
            v.len(),
            pct(&v, 0.5),
            pct(&v, 0.99),
            pct(&v, 1.0)
        ));
    }
    if let Err(e) = std::fs::write(path, out) {
        eprintln!("loadgen: cannot write the timeline to {path}: {e}");
    }
}

fn pct(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx] as f64 / 1000.0
}

fn summary(v: &mut [u32]) -> serde_json::Value {
    v.sort_unstable();
    let mean = if v.is_empty() {
        0.0
    } else {
        v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64 / 1000.0
    };
    serde_json::json!({
        "p50": pct(v, 0.50),
        "p90": pct(v, 0.90),
        "p99": pct(v, 0.99),
        "p999": pct(v, 0.999),
        "max": pct(v, 1.0),
        "mean": (mean * 1000.0).round() / 1000.0,
    })
}

async fn load(args: Args) -> i32 {
    let url = args
        .url
        .clone()
        .unwrap_or_else(|| usage("--url is required"));
    let (uri, host, addr) = target(&url);
    // Analyses are not signed: no secret needed.
    let secret = match args.secret.clone() {
        Some(s) => s,
        None if args.analysis => String::new(),
        None => usage("a secret is required (--secret, LOADGEN_SECRET or SIGSENTRY_SECRET)"),
    };
    let ctx = Arc::new(Ctx {
        addr,
        host,
        path: uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string()),
        scheme: Scheme::Preset(args.scheme),
        secret: secret.into_bytes(),
        body_size: args.body_size,
        timeout: args.timeout,
        id_prefix: args.id_prefix.clone(),
        analysis: args.analysis,
        body_size_given: args.body_size_given,
        headers: args.headers.clone(),
    });

    if !args.warmup.is_zero() {
        let mut w = args.clone();
        w.requests = None;
        let warm_ctx = Arc::new(Ctx {
            id_prefix: format!("{}-warm", args.id_prefix),
            addr: ctx.addr,
            host: ctx.host.clone(),
            path: ctx.path.clone(),
            scheme: ctx.scheme.clone(),
            secret: ctx.secret.clone(),
            body_size: ctx.body_size,
            timeout: ctx.timeout,
            analysis: ctx.analysis,
            body_size_given: ctx.body_size_given,
            headers: ctx.headers.clone(),
        });
        let (ws, _) = phase(&warm_ctx, &w, args.warmup).await;
        eprintln!(
            "loadgen [{}] warmup {:?}: {} answers, {} errors",
            args.label,
            args.warmup,
            ws.latency.len(),
            ws.errors
        );
    }

    let duration = if args.requests.is_some() && args.duration.is_zero() {
        Duration::from_secs(24 * 3600)
    } else {
        args.duration
    };
    let (mut st, elapsed) = phase(&ctx, &args, duration).await;
    let attempted = (st.latency.len() as u64) + st.errors;
    let intended = if args.rate > 0.0 {
        let n = (args.rate * duration.as_secs_f64()).ceil() as u64;
        args.requests.map_or(n, |m| n.min(m))
    } else {
        attempted
    };
    let unsent = intended.saturating_sub(attempted);
    let answered = st.latency.len() as u64;
    let ok: u64 = st
        .status
        .iter()
        .filter(|(k, _)| (200..300).contains(*k))
        .map(|(_, v)| v)
        .sum();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let status: BTreeMap<String, u64> =
        st.status.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    if let Some(path) = &args.timeline {
        write_timeline(path, &st.at, &st.latency);
    }
    let lat = summary(&mut st.latency);
    let svc = summary(&mut st.service);
    let lag = summary(&mut st.lag);
    let mut out = serde_json::json!({
        "label": args.label,
        "url": url,
        "mode": if args.rate > 0.0 { "open" } else { "closed" },
        "target_rate": args.rate,
        "connections": args.connections,
        "elapsed_s": (secs * 1000.0).round() / 1000.0,
        "answered": answered,
        "ok": ok,
        "errors": st.errors,
        "timeouts": st.timeouts,
        "connect_errors": st.connect_errors,
        "unsent": unsent,
        "status": status,
        "rps": (answered as f64 / secs).round(),
        "ok_rps": (ok as f64 / secs).round(),
        "latency_ms": lat,
        "service_ms": svc,
        "send_lag_ms": lag,
    });
    if args.analysis {
        // Analysis mode only: the webhook runs' JSON stays as it was.
        let (b, _) = ctx.request_body(&format!("{}-0-0", args.id_prefix));
        out["analysis"] = serde_json::json!(true);
        out["body_bytes"] = serde_json::json!(b.len());
    }
    eprintln!(
        "loadgen [{}] {} {}: {:.0} req/s ({} answered, {} errors, {} unsent, status {:?}) latency p50 {} ms p99 {} ms p99.9 {} ms max {} ms; send lag p99 {} ms",
        args.label,
        out["mode"].as_str().unwrap(),
        url,
        answered as f64 / secs,
        answered,
        st.errors,
        unsent,
        st.status,
        out["latency_ms"]["p50"],
        out["latency_ms"]["p99"],
        out["latency_ms"]["p999"],
        out["latency_ms"]["max"],
        out["send_lag_ms"]["p99"],
    );
    println!("{out}");
    0
}

// ---------------------------------------------------------------------------
// Drain watch

async fn get_json(addr: SocketAddr, host: &str, path: &str) -> Result<serde_json::Value, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut s, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(path)
        .header(http::header::HOST, host)
        .body(Empty::new())
        .unwrap();
    let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let b = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&b).map_err(|e| e.to_string())
}

/// (pending, in_flight, delivered) summed over every queue.
fn totals(v: &serde_json::Value) -> (u64, u64, u64) {
    let mut t = (0, 0, 0);
    for q in v["queues"].as_array().into_iter().flatten() {
        t.0 += q["pending"].as_u64().unwrap_or(0);
        t.1 += q["in_flight"].as_u64().unwrap_or(0);
        t.2 += q["delivered"].as_u64().unwrap_or(0);
    }
    t
}

async fn drain_watch(admin: &str, timeout: Duration, poll: Duration) -> i32 {
    let (_, host, addr) = target(admin);
    let deadline = Instant::now() + timeout;
    let mut first: Option<(Instant, (u64, u64, u64))> = None;
    let mut polls = 0u64;
    loop {
        if Instant::now() > deadline {
            eprintln!("loadgen drain-watch: timed out after {timeout:?}");
            let out = serde_json::json!({"drain_timeout": true, "polls": polls});
            println!("{out}");
            return 1;
        }
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            get_json(addr, &host, "/admin/queues"),
        )
        .await
        .map_err(|_| "timeout".to_string())
        .and_then(|r| r);
        let now = Instant::now();
        match r {
            Ok(v) => {
                polls += 1;
                let t = totals(&v);
                let (t0, s0) = *first.get_or_insert((now, t));
                if t.0 == 0 {
                    let secs = (now - t0).as_secs_f64().max(1e-9);
                    let delivered = t.2.saturating_sub(s0.2);
                    let out = serde_json::json!({
                        "pending_at_first_poll": s0.0,
                        "in_flight_at_first_poll": s0.1,
                        "delivered_at_first_poll": s0.2,
                        "delivered_during_watch": delivered,
                        "delivered_total": t.2,
                        "in_flight_at_end": t.1,
                        "watch_s": (secs * 1000.0).round() / 1000.0,
                        "jobs_per_s": (delivered as f64 / secs).round(),
                        "polls": polls,
                    });
                    eprintln!(
                        "loadgen drain-watch: {delivered} jobs delivered in {secs:.3} s = {:.0} jobs/s ({} pending at first poll, {} delivered in total)",
                        delivered as f64 / secs,
                        s0.0,
                        t.2
                    );
                    println!("{out}");
                    return 0;
                }
            }
            Err(_) => {
                // Not up yet: keep trying until the deadline.
            }
        }
        tokio::time::sleep(poll).await;
    }
}
