//! The whole request path: raw bytes -> hyper's HTTP/1.1 server ->
//! `Inbound::handle`, with the routes of a fixed config, all in-process:
//! passthrough routes proxying to an upstream on 127.0.0.1 (sigsentry with a
//! rotation window, stripe with `forward_path = "fixed"`, a custom scheme,
//! gitlab, slack and a configured handshake, twilio and hubspot signing a
//! `signed_url`, hubspot behind `allow_cidrs`, meta with its `verify_token`
//! GET) and queue routes on a real SQLite store in /dev/shm (standard-webhooks
//! with an ed25519 `whsk_` key and a required body dedup key, linear nested
//! under it).
//!
//! The input is what a client writes on one connection (several pipelined
//! requests allowed). An optional first line starting with `~` is a directive
//! for the harness, not sent:
//!
//! ```text
//! ~[<peer ip>] [sign]
//! ```
//!
//! `<peer ip>` is the address the request appears to come from (default
//! 127.0.0.1, untrusted; 10.0.0.0/8 is `server.trusted_proxies`). `sign` adds
//! every route's signature headers over the bytes after the first blank line
//! (and, for twilio, the request line's query), at the harness clock's time,
//! so mutated requests keep reaching the code past verification.
//!
//! Oracles: nothing panics; the connection always ends (10 s guard); every
//! request hyper hands to `Inbound::handle` gets a response, and the client
//! reads a status line back; whatever reaches the upstream verifies, under
//! the route it was sent to, with the headers and query hookgate received and
//! the body the upstream got (the body verified is the body forwarded), and
//! carries exactly one `X-Hookgate-Verified` (the route's scheme), one
//! delivery id, one `X-Forwarded-For` and `-Proto`, and from an untrusted peer
//! its own address and no `Forwarded` / `X-Real-IP`.
#![no_main]

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hookgate::config::Config;
use hookgate::delivery::client::HttpClient;
use hookgate::inbound::Inbound;
use hookgate::metrics::Metrics;
use hookgate::server::Deadlines;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The harness clock: timestamped schemes are signed and verified at it.
const NOW: u64 = 1_700_000_000;

const CONFIG: &str = r#"
[server]
max_body = "16KiB"
body_timeout = "5s"
trusted_proxies = ["10.0.0.0/8"]

[store]
path = "@STORE@"

# Two secrets: the first valid until exactly NOW (inclusive), the second
# not valid yet (never compared).
[[routes]]
path = "/hooks/sigsentry"
scheme = "sigsentry"
secrets = [
  { value = "fuzz-sigsentry-secret", name = "current", not_after = "2023-11-14T22:13:20Z" },
  { value = "fuzz-sigsentry-next", name = "next", not_before = "2030-01-01T00:00:00Z" },
]
mode = "passthrough"
[routes.upstream]
url = "http://127.0.0.1:@PORT@/app/sigsentry"

[[routes]]
path = "/hooks/stripe"
scheme = "stripe"
secrets = [{ value = "whsec_fuzz_stripe" }]
mode = "passthrough"
forward_path = "fixed"
[routes.upstream]
url = "http://127.0.0.1:@PORT@/app/stripe?fixed=1"

[[routes]]
path = "/hooks/custom"
methods = ["POST", "PUT", "PATCH"]
secrets = [{ value = "fuzz-custom-secret" }]
mode = "passthrough"
max_body = "1KiB"
[routes.custom]
header = "X-Sig"
prefix = "v1="
encoding = "base64"
algorithm = "sha512"
signed_content = "{id}.{timestamp}.{body}"
id_header = "X-Id"
timestamp_header = "X-Ts"
[routes.upstream]
url = "http://127.0.0.1:@PORT@/app/custom"
strip_prefix = false

[[routes]]
path = "/hooks/gitlab"
scheme = "gitlab"
secrets = [{ value = "fuzz-gitlab-token" }]
mode = "passthrough"
[routes.upstream]
url = "http://127.0.0.1:@PORT@/app/gitlab/"

# Slack's url_verification handshake is answered by hookgate.
[[routes]]
path = "/hooks/slack"
scheme = "slack"
secrets = [{ value = "fuzz-slack-secret" }]
mode = "passthrough"
[routes.upstream]
url = "http://127.0.0.1:@PORT@/app/slack"

# Twilio signs the public URL, the request's query and the form parameters.
[[routes]]
path = "/hooks/twilio"
scheme = "twilio"
secrets = [{ value = "fuzz-twilio-token" }]
signed_url = "https://hooks.example.com/hooks/twilio"
mode = "passthrough"
[routes.upstream]
url = "http://127.0.0.1:@PORT@/app/twilio"

# Only 192.0.2.0/24 may send (the harness peer is 127.0.0.1 by default).
[[routes]]
path = "/hooks/hubspot"
scheme = "hubspot"
secrets = [{ value = "fuzz-hubspot-secret" }]
signed_url = "https://hooks.example.com/hooks/hubspot?portal=1"
allow_cidrs = ["192.0.2.0/24"]
mode = "passthrough"
[routes.upstream]
url = "http://127.0.0.1:@PORT@/app/hubspot"

# Meta's subscription GET, answered with the verify token.
[[routes]]
path = "/hooks/meta"
scheme = "meta"
secrets = [{ value = "fuzz-meta-secret" }]
verify_token = { value = "fuzz-meta-token" }
mode = "passthrough"
[routes.upstream]
url = "http://127.0.0.1:@PORT@/app/meta"

# A configured handshake.
[[routes]]
path = "/hooks/challenge"
scheme = "github"
secrets = [{ value = "fuzz-github-secret" }]
mode = "passthrough"
[routes.challenge]
pointer = "/challenge"
when = { pointer = "/type", equals = "url_verification" }
answer = '{"challenge":"{challenge}"}'
content_type = "application/json"
[routes.upstream]
url = "http://127.0.0.1:@PORT@/app/challenge"

# Standard Webhooks with an ed25519 key (v1a) first, an HMAC one (v1) second.
[[routes]]
path = "/hooks/queue"
scheme = "standard-webhooks"
secrets = [{ value = "whsk_mFH10hV1KM6Uv3f57rw3r/iTlMg9+wYZM+Cd0YUFBeQ=" }, { value = "whsec_ZnV6ei1zdGFuZGFyZC13ZWJob29rcw==" }]
mode = "queue"
queue_limit = 64
dedup = { key = "body:/id" }
[routes.upstream]
url = "http://127.0.0.1:@PORT@/app/queue"

[[routes]]
path = "/hooks/queue/linear"
scheme = "linear"
secrets = [{ value = "fuzz-linear-secret" }]
mode = "queue"
queue_limit = 64
[routes.upstream]
url = "http://127.0.0.1:@PORT@/app/linear"
"#;

/// The request `Inbound::handle` is answering, as hookgate received it.
#[derive(Clone)]
struct Current {
    path: String,
    query: Option<String>,
    peer: IpAddr,
    headers: HeaderMap,
}

/// What the upstream checks a forwarded request against.
#[derive(Default)]
struct Shared {
    /// The path and headers of the request `Inbound::handle` is answering
    /// (requests on one connection are handled one at a time).
    current: Mutex<Option<Current>>,
    violations: Mutex<Vec<String>>,
    inbound: OnceLock<Arc<Inbound>>,
}

struct Harness {
    rt: tokio::runtime::Runtime,
    inbound: Arc<Inbound>,
    shared: Arc<Shared>,
    /// What `~ sign` signs with, per route: scheme, first secret, signed URL.
    signers: Vec<(hookgate::signature::Scheme, Vec<u8>, String)>,
    header_timeout: Duration,
    debug: bool,
}

fn clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let shared = Arc::new(Shared::default());
        let upstream = rt.block_on(start_upstream(shared.clone()));
        let dir = store_dir();
        let toml = CONFIG
            .replace("@PORT@", &upstream.port().to_string())
            .replace("@STORE@", &dir.join("hookgate.db").display().to_string());
        let config: Config = hookgate::config::from_toml(&toml).expect("fuzz config is valid");
        let signers = config
            .routes
            .iter()
            .map(|r| {
                let secret = r.secrets[0].resolve().expect("secret");
                let url = r.signed_url.clone().unwrap_or_default();
                (r.scheme().expect("scheme"), secret.expose().to_vec(), url)
            })
            .collect();
        let inbound = rt.block_on(async {
            let metrics = Arc::new(Metrics::new());
            let store = hookgate::open_store(&config, None).expect("store");
            Arc::new(
                Inbound::new(
                    &config,
                    HttpClient::new(),
                    Arc::new(clock),
                    Some(store),
                    Arc::new(tokio::sync::Notify::new()),
                    metrics,
                )
                .expect("inbound"),
            )
        });
        let _ = shared.inbound.set(inbound.clone());
        Harness {
            rt,
            inbound,
            shared,
            signers,
            header_timeout: config.server.header_timeout.0,
            debug: std::env::var_os("HOOKGATE_FUZZ_DEBUG").is_some(),
        }
    })
}

/// A fresh store directory for this process, in memory when /dev/shm is
/// there; directories left by fuzzer processes that are gone are removed.
fn store_dir() -> std::path::PathBuf {
    let base = std::path::Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("hookgate-fuzz-") {
                if !std::path::Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let dir = base.join(format!("hookgate-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("store dir");
    dir
}

/// The upstream: answers 200 (or the status named by a `/status/NNN`
/// segment) after checking what hookgate forwarded.
async fn start_upstream(shared: Arc<Shared>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| upstream(shared.clone(), req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn upstream(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            violation(&shared, format!("upstream could not read the body: {e}"));
            Bytes::new()
        }
    };
    check_forwarded(&shared, &parts.headers, &body);
    let status = parts
        .uri
        .path()
        .split("/status/")
        .nth(1)
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .filter(|s| !s.is_informational())
        .unwrap_or(http::StatusCode::OK);
    let resp = Response::builder()
        .status(status)
        .header("x-upstream", "1")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "dropped by hookgate")
        .body(Full::new(Bytes::from_static(b"upstream ok")))
        .expect("response");
    Ok(resp)
}

fn violation(shared: &Shared, msg: String) {
    shared.violations.lock().expect("lock").push(msg);
}

fn check_forwarded(shared: &Shared, forwarded: &HeaderMap, body: &[u8]) {
    let Some(Current {
        path,
        query,
        peer,
        headers: received,
    }) = shared.current.lock().expect("lock").clone()
    else {
        return violation(shared, "upstream hit outside a request".into());
    };
    let inbound = shared.inbound.get().expect("inbound");
    let Some(route) = inbound.find(&path) else {
        return violation(shared, format!("upstream hit for unrouted {path:?}"));
    };
    let verified = route
        .verifier
        .verify_request(&received, body, clock(), query.as_deref());
    if let Err(e) = verified {
        violation(
            shared,
            format!("forwarded a request that does not verify ({e:?}) on {path:?}"),
        );
    }
    let one = |name: &str| {
        let n = forwarded.get_all(name).iter().count();
        if n != 1 {
            violation(shared, format!("{name} sent {n} times to the upstream"));
        }
    };
    one("x-hookgate-verified");
    one("x-hookgate-delivery-id");
    one("x-forwarded-for");
    one("x-forwarded-proto");
    if forwarded.get("x-hookgate-verified") != Some(&route.verified_header) {
        violation(shared, "wrong x-hookgate-verified".into());
    }
    let trusted = matches!(peer, IpAddr::V4(v4) if v4.octets()[0] == 10);
    if !trusted {
        let xff = forwarded
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        if xff != Some(peer.to_string().as_str()) {
            violation(
                shared,
                format!("x-forwarded-for {xff:?} from untrusted {peer}"),
            );
        }
        for h in ["forwarded", "x-real-ip"] {
            if forwarded.contains_key(h) {
                violation(shared, format!("untrusted peer's {h} forwarded"));
            }
        }
    }
}

/// The harness directive line, if any, and the bytes to send.
fn directives<'a>(h: &Harness, data: &'a [u8]) -> (IpAddr, std::borrow::Cow<'a, [u8]>) {
    let mut peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if data.first() != Some(&b'~') {
        return (peer, data.into());
    }
    let end = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let line = String::from_utf8_lossy(&data[1..end]);
    let raw = data.get(end + 1..).unwrap_or_default();
    let mut sign = false;
    for word in line.split_ascii_whitespace() {
        if word == "sign" {
            sign = true;
        } else if let Ok(ip) = word.parse() {
            peer = ip;
        }
    }
    if !sign {
        return (peer, raw.into());
    }
    let Some(head_end) = hookgate_fuzz::find(raw, b"\r\n\r\n") else {
        return (peer, raw.into());
    };
    let body = &raw[head_end + 4..];
    let mut out = raw[..head_end].to_vec();
    let mut seen = Vec::new();
    // Twilio signs the URL as called: its query is the request's.
    let request_line = raw[..head_end]
        .split(|b| *b == b'\n')
        .next()
        .unwrap_or_default();
    let target = String::from_utf8_lossy(request_line);
    let query = target
        .split(' ')
        .nth(1)
        .and_then(|t| t.split_once('?'))
        .map(|(_, q)| q.to_owned())
        .filter(|q| !q.is_empty());
    for (scheme, secret, signed_url) in &h.signers {
        let url = match (&query, scheme.signs_url()) {
            (Some(q), true) if scheme.name() == "twilio" => format!("{signed_url}?{q}"),
            _ => signed_url.clone(),
        };
        let Ok(pairs) = hookgate::signature::sign_url(
            scheme,
            secret,
            body,
            Some("evt_fuzz_1"),
            NOW as i64,
            &url,
        ) else {
            continue;
        };
        for pair in pairs {
            if !seen.contains(&pair) {
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(pair.0.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(pair.1.as_bytes());
                seen.push(pair);
            }
        }
    }
    out.extend_from_slice(&raw[head_end..]);
    (peer, out.into())
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let (peer_ip, raw) = directives(h, data);
    let peer = SocketAddr::new(peer_ip, 40_000);
    let calls = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let out = h.rt.block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        // The connection's deadlines, unwatched here: hyper's header-read
        // timeout bounds the head, and the harness's upstream always
        // answers, so no upstream deadline is needed.
        let deadlines = Arc::new(Deadlines::new(h.header_timeout));
        let svc = {
            let (inbound, shared) = (h.inbound.clone(), h.shared.clone());
            let (calls, answered) = (calls.clone(), answered.clone());
            service_fn(move |req: Request<Incoming>| {
                calls.fetch_add(1, Ordering::SeqCst);
                *shared.current.lock().expect("lock") = Some(Current {
                    path: req.uri().path().to_owned(),
                    query: req.uri().query().map(str::to_owned),
                    peer: peer_ip,
                    headers: req.headers().clone(),
                });
                let fut = inbound.clone().handle(req, peer, deadlines.clone());
                let answered = answered.clone();
                async move {
                    let resp = fut.await;
                    answered.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Infallible>(resp)
                }
            })
        };
        // As `server::serve` builds it, plus half-close: the harness shuts
        // its write side after the input, and every request already sent
        // must still be answered.
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(h.header_timeout)
            .half_close(true);
        let conn = builder.serve_connection(TokioIo::new(server), svc);
        let server_task = tokio::spawn(async move {
            let _ = conn.await;
        });
        let (mut rd, mut wr) = tokio::io::split(client);
        let write = async {
            let _ = wr.write_all(&raw).await;
            let _ = wr.shutdown().await;
        };
        let read = async {
            let mut out = Vec::new();
            let _ = rd.read_to_end(&mut out).await;
            out
        };
        let ((), out) =
            tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(write, read) })
                .await
                .expect("the connection did not end within 10 s");
        server_task.await.expect("connection task");
        out
    });
    *h.shared.current.lock().expect("lock") = None;
    let violations = std::mem::take(&mut *h.shared.violations.lock().expect("lock"));
    assert!(violations.is_empty(), "{violations:#?}");
    if h.debug {
        // HOOKGATE_FUZZ_DEBUG=1: the status lines the client got back.
        let text = String::from_utf8_lossy(&out);
        let statuses: Vec<&str> = text.lines().filter(|l| l.starts_with("HTTP/1.")).collect();
        eprintln!("{statuses:?}");
    }
    let (calls, answered) = (
        calls.load(Ordering::SeqCst),
        answered.load(Ordering::SeqCst),
    );
    assert_eq!(calls, answered, "a handled request got no response");
    if calls > 0 {
        assert!(
            out.starts_with(b"HTTP/1.1 ") || out.starts_with(b"HTTP/1.0 "),
            "no status line back: {:?}",
            String::from_utf8_lossy(&out[..out.len().min(200)])
        );
    }
});
