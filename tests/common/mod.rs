//! Test harness: a real upstream HTTP server that records what it receives
//! and answers from a script, hookgate itself on 127.0.0.1:0, and a client.
#![allow(dead_code)]

pub mod sender;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The HTTP version the request came in.
    pub version: http::Version,
    /// The status the upstream answered, and how long it waited first.
    pub status: u16,
    pub delay: Duration,
}

/// One scripted answer of the upstream.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: &'static str,
    pub headers: Vec<(&'static str, &'static str)>,
    pub delay: Duration,
}

impl Reply {
    /// A 200 with an empty body, sent after `delay`.
    pub fn delayed(delay: Duration) -> Reply {
        Reply {
            delay,
            ..Reply::status(200)
        }
    }

    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            body: "",
            headers: vec![],
            delay: Duration::ZERO,
        }
    }
}

#[derive(Default)]
struct UpstreamState {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
    notify: Notify,
    in_flight: std::sync::atomic::AtomicUsize,
    peak_in_flight: std::sync::atomic::AtomicUsize,
    /// Delivery ids answered 2xx at once, recorded before the answer goes.
    delivered: Mutex<std::collections::HashSet<String>>,
    /// Connections accepted.
    connections: std::sync::atomic::AtomicUsize,
}

/// What an [`Upstream`] speaks.
#[derive(Clone)]
pub enum Speaks {
    Http1,
    /// HTTP/2 with prior knowledge, without TLS (h2c); nothing else.
    H2c,
    /// TLS; then HTTP/2 when ALPN selected `h2`, else HTTP/1.1.
    Tls(tokio_rustls::TlsAcceptor),
}

/// A port on 127.0.0.1 that nothing listens on, held for as long as the
/// value lives: a connection to it is refused at once, and no other
/// listener can be given it meanwhile. (A port bound and freed again is
/// not "down": a test running beside this one may be given it for its own
/// server, and an outage becomes a server that answers.)
/// [`Upstream::start_on`] brings an upstream up on it.
pub struct ClosedPort {
    socket: tokio::net::TcpSocket,
    pub addr: SocketAddr,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        // Bound, never listening, and without SO_REUSEADDR: connecting
        // gets a reset, and neither another bind nor a connection's own
        // local port can take it.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        ClosedPort { socket, addr }
    }

    /// Starts listening on the port (the upstream comes up).
    pub fn listen(self) -> TcpListener {
        self.socket.listen(1024).unwrap()
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// A real HTTP server on 127.0.0.1:0 (HTTP/1.1 unless started with
/// [`Upstream::start_speaking`]).
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        Upstream::start_speaking(Speaks::Http1).await
    }

    pub async fn start_speaking(speaks: Speaks) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Upstream::start_with(listener, speaks)
    }

    /// An upstream coming up on a port that was down until now.
    pub fn start_on(port: ClosedPort) -> Upstream {
        Upstream::start_with(port.listen(), Speaks::Http1)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn start_with(listener: TcpListener, speaks: Speaks) -> Upstream {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpstreamState::default());
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                st.connections
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let st = st.clone();
                let speaks = speaks.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let st = st.clone();
                        async move {
                            use std::sync::atomic::Ordering::SeqCst;
                            let now_in = st.in_flight.fetch_add(1, SeqCst) + 1;
                            st.peak_in_flight.fetch_max(now_in, SeqCst);
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let reply = st
                                .script
                                .lock()
                                .unwrap()
                                .pop_front()
                                .or_else(|| st.default.lock().unwrap().clone())
                                .unwrap_or(Reply {
                                    status: 200,
                                    body: "upstream ok",
                                    headers: vec![("x-upstream", "yes")],
                                    delay: Duration::ZERO,
                                });
                            if (200..300).contains(&reply.status) && reply.delay.is_zero() {
                                if let Some(id) = parts.headers.get("x-hookgate-delivery-id") {
                                    let id = id.to_str().unwrap_or_default().to_string();
                                    st.delivered.lock().unwrap().insert(id);
                                }
                            }
                            st.received.lock().unwrap().push(Received {
                                version: parts.version,
                                method: parts.method,
                                uri: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                                status: reply.status,
                                delay: reply.delay,
                            });
                            st.notify.notify_waiters();
                            if !reply.delay.is_zero() {
                                tokio::time::sleep(reply.delay).await;
                            }
                            st.in_flight.fetch_sub(1, SeqCst);
                            let mut r =
                                Response::new(Full::new(Bytes::from_static(reply.body.as_bytes())));
                            *r.status_mut() = StatusCode::from_u16(reply.status).unwrap();
                            for (k, v) in &reply.headers {
                                r.headers_mut().append(*k, v.parse().unwrap());
                            }
                            Ok::<_, Infallible>(r)
                        }
                    });
                    match speaks {
                        Speaks::Http1 => serve(stream, svc, false).await,
                        Speaks::H2c => serve(stream, svc, true).await,
                        Speaks::Tls(acceptor) => {
                            let Ok(tls) = acceptor.accept(stream).await else {
                                return;
                            };
                            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                            serve(tls, svc, h2).await
                        }
                    }
                });
            }
        });
        Upstream { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Queue scripted answers, used in order before the default.
    pub fn push(&self, reply: Reply) {
        self.state.script.lock().unwrap().push_back(reply);
    }

    pub fn set_default(&self, reply: Reply) {
        *self.state.default.lock().unwrap() = Some(reply);
    }

    /// The most requests the upstream was handling at the same time.
    pub fn peak_in_flight(&self) -> usize {
        self.state
            .peak_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The distinct `X-Hookgate-Delivery-Id`s received so far.
    pub fn delivery_ids(&self) -> std::collections::HashSet<String> {
        // Under the lock, without cloning every received body: crash tests
        // poll this with tens of thousands of requests recorded.
        self.state
            .received
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| r.headers.get("x-hookgate-delivery-id"))
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    /// The distinct delivery ids answered 2xx at once (without a delay):
    /// those hookgate may have recorded as delivered. Each is recorded
    /// before its answer is sent, so a job hookgate marked done is in here.
    pub fn delivered_ids(&self) -> std::collections::HashSet<String> {
        self.state.delivered.lock().unwrap().clone()
    }

    /// Whether `id` is in [`Upstream::delivered_ids`], now.
    pub fn is_delivered(&self, id: &str) -> bool {
        self.state.delivered.lock().unwrap().contains(id)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived, or panics after `deadline`.
    pub async fn wait_for(&self, n: usize, deadline: Duration) -> Vec<Received> {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.state.notify.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(end, notified).await.is_err() {
                panic!(
                    "upstream got {} requests, wanted {n}",
                    self.received().len()
                );
            }
        }
    }
}

/// Serves one connection in HTTP/2 (`h2`) or HTTP/1.1.
async fn serve<S, Svc>(io: S, svc: Svc, h2: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
        > + Send
        + 'static,
    Svc::Future: Send + 'static,
{
    let io = TokioIo::new(io);
    let _ = if h2 {
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc)
            .await
    } else {
        http1::Builder::new().serve_connection(io, svc).await
    };
}

/// A running hookgate (in-process, real listeners).
pub struct Hookgate {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub shutdown: hookgate::shutdown::Shutdown,
    pub task: tokio::task::JoinHandle<Result<(), hookgate::RunError>>,
}

impl Hookgate {
    /// Starts hookgate with `toml` layered over the defaults. Listen
    /// addresses are ignored: both listeners bind 127.0.0.1:0.
    pub async fn start(toml: &str) -> Hookgate {
        let config = hookgate::config::from_toml(toml).expect("test config is valid");
        let listeners = hookgate::Listeners {
            public: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let (public, admin) = listeners.addrs().unwrap();
        let shutdown = hookgate::shutdown::Shutdown::new();
        let task = tokio::spawn(hookgate::run(
            config,
            listeners,
            shutdown.clone(),
            hookgate::RunOptions::default(),
        ));
        Hookgate {
            public,
            admin,
            shutdown,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.public, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("hookgate stops within 30s")
            .unwrap()
            .unwrap();
    }
}

/// A plain HTTP client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A collected answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error.code` of a JSON error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub async fn send(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: impl Into<Bytes>,
) -> Answer {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let r = client()
        .request(b.body(Full::new(body.into())).unwrap())
        .await
        .expect("request reaches hookgate");
    let (parts, body) = r.into_parts();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

pub async fn post(url: &str, headers: &[(String, String)], body: impl Into<Bytes>) -> Answer {
    send("POST", url, headers, body).await
}

/// Signs `body` with a preset, as `(name, value)` pairs for [`send`].
pub fn sign(
    scheme: &str,
    secret: &str,
    body: &[u8],
    id: Option<&str>,
    ts: i64,
) -> Vec<(String, String)> {
    let scheme = hookgate::signature::Scheme::Preset(scheme.parse().unwrap());
    hookgate::signature::sign(&scheme, secret.as_bytes(), body, id, ts)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect()
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The seed 000 payload, with deliberately odd whitespace: hookgate must
/// forward these exact bytes, not a re-serialisation.
pub fn analysis(id: &str) -> Vec<u8> {
    format!(
        "{{ \"analysisId\" : \"{id}\",\n  \"tenantId\":\"tnt_xyz789\", \"projectId\":\"prj_def456\",\"projectSlug\":\"prod\",\
\"severity\":\"high\",\"summary\":\"Checkout API returning 500s — expired tokens\",\
\"rootCause\":{{\"service\":\"checkout-api\",\"errorType\":\"AuthenticationError\",\"category\":\"deploy_regression\"}},\
\"affectedServices\":[{{\"name\":\"checkout-api\",\"role\":\"origin\",\"errorCount\":142}}],\
\"suggestedActions\":[{{\"type\":\"fix\",\"action\":\"Revert PR #482\",\"priority\":1}}],\
\"url\":\"https://dashboard.sigsentry.com/dashboard/projects/prod/analyses/{id}\",\
\"timestamp\":\"2026-04-25T18:00:00.000Z\"   }}\n"
    )
    .into_bytes()
}

/// The real `hookgate` binary, started by [`spawn_binary`]. Dropping it
/// (say, when a test fails) kills the process.
pub struct Proc {
    pub child: std::process::Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    /// Collects every line the process writes to stderr.
    logs: Option<std::thread::JoinHandle<Vec<String>>>,
}

/// A started binary that may not have printed its listening line yet.
/// Dropping it kills the process.
pub struct Spawned {
    child: Option<std::process::Child>,
    listening: std::sync::mpsc::Receiver<(SocketAddr, SocketAddr)>,
    logs: Option<std::thread::JoinHandle<Vec<String>>>,
}

/// SIGKILL unless it already exited, then reap.
fn kill_child(child: &mut std::process::Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Starts `hookgate run --config <config>` with `envs` added to its
/// environment (JSON logs on stderr are collected; RUST_LOG is removed).
pub fn spawn_binary(config: &std::path::Path, envs: &[(&str, &std::ffi::OsStr)]) -> Spawned {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"));
    cmd.args(["run", "--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the hookgate binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let logs = std::thread::spawn(move || {
        let mut tx = Some(tx);
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(t) = &tx {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["fields"]["message"] == "hookgate listening" {
                        let addr = |k: &str| v["fields"][k].as_str().unwrap().parse().unwrap();
                        let _ = t.send((addr("public"), addr("admin")));
                        tx = None;
                    }
                }
            }
            // Keep draining so the child never blocks on a full pipe.
            lines.push(line);
        }
        lines
    });
    Spawned {
        child: Some(child),
        listening: rx,
        logs: Some(logs),
    }
}

impl Spawned {
    /// Waits for the listening line; panics with the process's logs if it
    /// exits (or stays silent for `timeout`) first.
    pub fn wait_listening(mut self, timeout: Duration) -> Proc {
        let listening = self.listening.recv_timeout(timeout);
        let mut child = self.child.take().unwrap();
        let logs = self.logs.take().unwrap();
        match listening {
            Ok((public, admin)) => Proc {
                child,
                public,
                admin,
                logs: Some(logs),
            },
            Err(e) => {
                kill_child(&mut child);
                let status = child.wait().unwrap();
                let logs = logs.join().unwrap_or_default();
                panic!(
                    "hookgate did not print its listening line ({e}; {status}); its logs:\n{}",
                    logs.join("\n")
                );
            }
        }
    }

    /// SIGKILL, then reap. Answers whether it had printed its listening line.
    pub fn kill(mut self) -> bool {
        kill_child(self.child.as_mut().unwrap());
        if let Some(logs) = self.logs.take() {
            let _ = logs.join();
        }
        self.listening.try_recv().is_ok()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            kill_child(child);
        }
    }
}

impl Proc {
    /// The value of one series of `/metrics`, e.g.
    /// `hookgate_queue_paused{route="/hooks/x"}`; panics if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let a = send("GET", &self.admin_url("/metrics"), &[], Vec::new()).await;
        String::from_utf8_lossy(&a.body)
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} in /metrics"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.public, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// SIGKILL, then reap. Answers the process's logs.
    pub fn kill(mut self) -> Vec<String> {
        kill_child(&mut self.child);
        self.logs.take().unwrap().join().unwrap_or_default()
    }

    /// SIGTERM; asserts a clean exit within `deadline`. Answers the logs.
    pub fn terminate(mut self, deadline: Duration) -> Vec<String> {
        let st = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let end = std::time::Instant::now() + deadline;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            // Drop kills it.
            assert!(
                std::time::Instant::now() < end,
                "hookgate did not exit within {deadline:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let logs = self.logs.take().unwrap().join().unwrap();
        assert!(
            status.success(),
            "clean exit after SIGTERM: {status:?}; logs:\n{}",
            logs.join("\n")
        );
        logs
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// The strict route of the durability tests: its dedup window outlives the
/// test, so every acknowledged event must stay a duplicate.
pub const STRICT: &str = "/hooks/sigsentry";
/// The churn route: a one-second dedup window and history, so the purge
/// always has work.
pub const CHURN: &str = "/hooks/churn";
/// Load clients on the churn route.
pub const CHURN_CLIENTS: usize = 2;

/// The configuration of the durability tests (crash, power loss): the store
/// in `store_dir`, the strict and the churn route forwarding to `upstream`,
/// and a purge every 200 ms, so it also runs during the load.
pub fn durability_config(
    store_dir: &std::path::Path,
    upstream: &str,
    secret: &str,
    concurrency: usize,
    shutdown_grace: &str,
) -> String {
    let route = |path: &str, window: &str| {
        format!(
            r#"
[[routes]]
path = "{path}"
scheme = "sigsentry"
secrets = [{{ value = "{secret}" }}]
dedup = {{ key = "body:/analysisId", window = "{window}" }}
[routes.upstream]
url = "{upstream}"
timeout = "1s"
concurrency = {concurrency}
[routes.retry]
initial = "50ms"
max_delay = "500ms"
"#
        )
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "{shutdown_grace}"
[admin]
listen = "127.0.0.1:0"
[store]
path = "{db}"
history_retention = "1s"
purge_interval = "200ms"
[log]
format = "json"
level = "info"
[delivery]
poll_interval = "50ms"
{strict}
{churn}
"#,
        db = store_dir.join("hookgate.db").display(),
        strict = route(STRICT, "1h"),
        churn = route(CHURN, "1s"),
    )
}

/// A request the real binary answered 202.
#[derive(Clone, Debug)]
pub struct Ack {
    pub route: &'static str,
    /// The event id (`analysisId`).
    pub aid: String,
    /// The delivery id of the 202.
    pub id: String,
}

/// Concurrent signed load against a [`Proc`], recorded.
#[derive(Default)]
pub struct Load {
    pub acked: Mutex<Vec<Ack>>,
    /// Sent, but answered neither 202 nor anything final (the process was
    /// killed, or the commit missed its deadline): in doubt.
    pub in_doubt: Mutex<Vec<(&'static str, String)>>,
    pub stop: std::sync::atomic::AtomicBool,
}

impl Load {
    pub fn acked_len(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One client of a [`Load`]: sends `analysis("<tag>_<n>")` for n = 0, 1, …
/// signed with `secret` to `base` + `route` over one keep-alive connection
/// until the load is stopped or a request goes unanswered (then it is in
/// doubt, and the client ends). Any answer but 202 and 503 panics.
pub async fn load_client(
    load: Arc<Load>,
    base: String,
    route: &'static str,
    secret: &'static str,
    tag: String,
) {
    let client = client();
    let url = format!("{base}{route}");
    for n in 0.. {
        if load.stop.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let aid = format!("{tag}_{n}");
        let body = analysis(&aid);
        let mut req = Request::post(&url);
        for (k, v) in sign("sigsentry", secret, &body, None, now()) {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(Bytes::from(body))).unwrap();
        let answer = async {
            let resp = client.request(req).await.ok()?;
            let status = resp.status().as_u16();
            let b = resp.into_body().collect().await.ok()?;
            Some((status, b.to_bytes()))
        }
        .await;
        match answer {
            Some((202, b)) => {
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                let id = v["id"].as_str().unwrap().to_string();
                load.acked.lock().unwrap().push(Ack { route, aid, id });
            }
            // The commit missed its deadline: it may still happen.
            Some((503, _)) => load.in_doubt.lock().unwrap().push((route, aid)),
            Some((status, b)) => panic!(
                "{aid}: unexpected {status}: {}",
                String::from_utf8_lossy(&b)
            ),
            None => {
                load.in_doubt.lock().unwrap().push((route, aid));
                return;
            }
        }
    }
}

/// Starts `clients` load clients per `(route, clients)` against `base`.
pub fn start_load(
    load: &Arc<Load>,
    base: &str,
    routes: &[(&'static str, usize)],
    secret: &'static str,
    tag: &str,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (route, clients) in routes {
        for c in 0..*clients {
            tasks.push(tokio::spawn(load_client(
                load.clone(),
                base.to_string(),
                route,
                secret,
                format!("{tag}_{}_c{c}", route.rsplit('/').next().unwrap()),
            )));
        }
    }
    tasks
}

/// Stops the load and waits for its clients (their process is gone).
pub async fn finish_load(load: &Load, tasks: Vec<tokio::task::JoinHandle<()>>) {
    load.stop();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("a load client stops once hookgate is gone")
            .unwrap();
    }
}

/// `GET /admin/jobs/<id>`: its status.
pub async fn admin_job_status(p: &Proc, id: &str) -> u16 {
    send("GET", &p.admin_url(&format!("/admin/jobs/{id}")), &[], "")
        .await
        .status
}

/// Sends event `aid` again: status and JSON answer.
pub async fn resend(p: &Proc, secret: &str, route: &str, aid: &str) -> (u16, serde_json::Value) {
    let body = analysis(aid);
    let a = post(
        &p.url(route),
        &sign("sigsentry", secret, &body, None, now()),
        body,
    )
    .await;
    let v = a.json();
    (a.status, v)
}

/// Whether a delivery id was delivered (answered 2xx by an upstream), asked
/// when a job is not found: only a delivered job's history may be purged.
/// Asked after the 404, so it must see deliveries up to that moment.
pub type Delivered = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Checks acknowledgements against a restarted binary, with `checkers`
/// concurrent clients: every job exists (`GET /admin/jobs/<id>` is 200; a
/// 404 only for a job `delivered`, whose history a purge may have
/// removed), and every event of a route in `dedup_routes` is answered as a
/// duplicate of its first delivery id. Answers the problems found.
pub async fn check_acks(
    p: &Arc<Proc>,
    secret: &'static str,
    acks: &[Ack],
    delivered: &Delivered,
    dedup_routes: &'static [&'static str],
    checkers: usize,
) -> Vec<String> {
    let mut tasks = Vec::new();
    for chunk in acks.chunks(acks.len().div_ceil(checkers).max(1)) {
        let (p, delivered, chunk) = (p.clone(), delivered.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut problems = Vec::new();
            for a in chunk {
                match admin_job_status(&p, &a.id).await {
                    200 => {}
                    404 if delivered(&a.id) => {}
                    s => problems.push(format!("{} ({}): GET /admin/jobs -> {s}", a.id, a.aid)),
                }
                if dedup_routes.contains(&a.route) {
                    let (status, v) = resend(&p, secret, a.route, &a.aid).await;
                    if status != 200 || v["status"] != "duplicate" || v["id"] != a.id.as_str() {
                        problems.push(format!(
                            "{} ({}): sent again, got {status} {v}, want a duplicate of it",
                            a.id, a.aid
                        ));
                    }
                }
            }
            problems
        }));
    }
    let mut problems = Vec::new();
    for t in tasks {
        problems.extend(t.await.unwrap());
    }
    problems
}

/// Sends again every event that was in doubt when its process died: it was
/// either forgotten (202, a new job) or seen and queued together (a
/// duplicate whose job exists, or was delivered and purged), never seen but
/// not queued. Answers the acknowledgements this makes, and the problems.
pub async fn resolve_in_doubt(
    p: &Proc,
    secret: &str,
    in_doubt: &[(&'static str, String)],
    delivered: &Delivered,
) -> (Vec<Ack>, Vec<String>) {
    let (mut acks, mut problems) = (Vec::new(), Vec::new());
    for (route, aid) in in_doubt {
        let (status, v) = resend(p, secret, route, aid).await;
        let id = v["id"].as_str().unwrap_or_default().to_string();
        match status {
            202 => {}
            200 if v["status"] == "duplicate" => match admin_job_status(p, &id).await {
                200 => {}
                404 if delivered(&id) => {}
                s => problems.push(format!(
                    "{aid}: its dedup record names job {id}, which is gone ({s}): seen but not queued"
                )),
            },
            s => {
                problems.push(format!("{aid}: sent again, got {s} {v}"));
                continue;
            }
        }
        acks.push(Ack {
            route,
            aid: aid.clone(),
            id,
        });
    }
    (acks, problems)
}
