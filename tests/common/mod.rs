//! Test harness: a real upstream HTTP server that records what it receives
//! and answers from a script, hookgate itself on 127.0.0.1:0, and a client.
#![allow(dead_code)]

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
}

/// A real HTTP/1.1 server on 127.0.0.1:0.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpstreamState::default());
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
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
                            st.received.lock().unwrap().push(Received {
                                method: parts.method,
                                uri: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
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
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
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
        self.received()
            .iter()
            .filter_map(|r| r.headers.get("x-hookgate-delivery-id"))
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
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
