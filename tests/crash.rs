//! Crash safety of the real binary: under concurrent load, hookgate is
//! killed with SIGKILL at a random moment and restarted on the same SQLite
//! file. Every request answered 202 must reach the upstream at least once,
//! and afterwards dedup and queue agree: an event id the store reports as
//! seen always belongs to a job that is (or will be) delivered.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const SECRET: &str = "crash-test-secret-0123456789abcdef";
const ROUNDS: usize = 3;
const CLIENTS: usize = 8;

struct Proc {
    child: Child,
    public: SocketAddr,
    /// Every line the process wrote to stderr, once it has exited.
    logs: std::thread::JoinHandle<Vec<String>>,
}

/// Starts the binary and reads its JSON startup line for the bound ports.
fn spawn(config: &Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let logs = std::thread::spawn(move || {
        let mut tx = Some(tx);
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(t) = &tx {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["fields"]["message"] == "hookgate listening" {
                        let public = v["fields"]["public"].as_str().unwrap().parse().unwrap();
                        let _ = t.send(public);
                        tx = None;
                    }
                }
            }
            // Keep draining so the child never blocks on a full pipe.
            lines.push(line);
        }
        lines
    });
    let public = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("hookgate printed its listening line");
    Proc {
        child,
        public,
        logs,
    }
}

fn write_config(dir: &Path, upstream: &str) -> std::path::PathBuf {
    let cfg = dir.join("hookgate.toml");
    let mut f = std::fs::File::create(&cfg).unwrap();
    write!(
        f,
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "10s"
[admin]
listen = "127.0.0.1:0"
[store]
path = "{db}"
[log]
format = "json"
level = "info"
[delivery]
poll_interval = "50ms"
[[routes]]
path = "/hooks/sigsentry"
scheme = "sigsentry"
secrets = [{{ value = "{SECRET}" }}]
dedup = {{ key = "body:/analysisId", window = "1h" }}
[routes.upstream]
url = "{upstream}"
timeout = "1s"
concurrency = 4
[routes.retry]
initial = "50ms"
max_delay = "500ms"
"#,
        db = dir.join("hookgate.db").display(),
    )
    .unwrap();
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_and_a_restart_resumes_delivery() {
    let dir = tempfile::tempdir().unwrap();
    // First run: the upstream is down, so every job stays queued.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone_addr = gone.local_addr().unwrap();
    drop(gone);
    let cfg = write_config(dir.path(), &format!("http://{gone_addr}/app"));
    let mut p = spawn(&cfg);
    let url = format!("http://{}/hooks/sigsentry", p.public);
    let mut ids = HashSet::new();
    for i in 0..20 {
        let body = analysis(&format!("anl_term_{i}"));
        let a = post(&url, &sign("sigsentry", SECRET, &body, None, now()), body).await;
        assert_eq!(a.status, 202);
        ids.insert(a.json()["id"].as_str().unwrap().to_string());
    }
    // A refused request: its warning must not carry the secret either.
    let body = analysis("anl_forged");
    let a = post(
        &url,
        &sign("sigsentry", "not-the-secret", &body, None, now()),
        body,
    )
    .await;
    assert_eq!(a.status, 401);
    let st = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let end = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < end,
            "hookgate did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    // The run logged the refusal and the failed attempts, and no line of it
    // holds the route's secret.
    let logs = p.logs.join().unwrap();
    assert!(logs.iter().any(|l| l.contains("request refused")));
    assert!(logs.iter().any(|l| l.contains("attempt failed")));
    let leaked: Vec<&String> = logs.iter().filter(|l| l.contains(SECRET)).collect();
    assert!(leaked.is_empty(), "secret in the logs: {leaked:?}");

    // Second run: the upstream is up; everything queued is delivered.
    let up = Upstream::start().await;
    let cfg = write_config(dir.path(), &up.url("/app"));
    let mut p = spawn(&cfg);
    let got = up.wait_for(20, Duration::from_secs(30)).await;
    let got: HashSet<String> = got
        .iter()
        .map(|r| {
            r.headers["x-hookgate-delivery-id"]
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(got, ids);
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_requests_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    let cfg = write_config(dir.path(), &up.url("/app"));

    // analysisId -> delivery id, for every 202.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let attempted: Arc<Mutex<Vec<String>>> = Arc::default();
    for round in 0..ROUNDS {
        let mut p = spawn(&cfg);
        let url = format!("http://{}/hooks/sigsentry", p.public);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let (url, acked, attempted, stop) =
                (url.clone(), acked.clone(), attempted.clone(), stop.clone());
            clients.push(tokio::spawn(async move {
                let client = client();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 5000 {
                    let aid = format!("anl_r{round}_c{c}_{n}");
                    n += 1;
                    attempted.lock().unwrap().push(aid.clone());
                    let body = analysis(&aid);
                    let mut req = http::Request::post(&url);
                    for (k, v) in sign("sigsentry", SECRET, &body, None, now()) {
                        req = req.header(k, v);
                    }
                    let req = req
                        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                        .unwrap();
                    let Ok(resp) = client.request(req).await else {
                        break;
                    };
                    let status = resp.status();
                    let Ok(b) = http_body_util::BodyExt::collect(resp.into_body()).await else {
                        break;
                    };
                    if status == 202 {
                        let v: serde_json::Value = serde_json::from_slice(&b.to_bytes()).unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .push((aid, v["id"].as_str().unwrap().to_string()));
                    }
                }
            }));
        }
        // Kill at a random moment while the load runs.
        let wait = 150 + rand::random::<u64>() % 400;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        p.child.kill().unwrap(); // SIGKILL
        p.child.wait().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for c in clients {
            let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > ROUNDS * 10,
        "the load produced too few acks: {}",
        acked.len()
    );
    eprintln!(
        "{} requests acknowledged across {ROUNDS} kills",
        acked.len()
    );

    // Restart: everything acknowledged must arrive.
    let mut p = spawn(&cfg);
    let want: HashSet<String> = acked.iter().map(|(_, id)| id.clone()).collect();
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = up.delivery_ids();
        let missing: Vec<_> = want.difference(&got).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{} of {} acknowledged deliveries never arrived, e.g. {:?}",
            missing.len(),
            want.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Dedup and queue agree: resend every attempted event id. A duplicate
    // answer names a job that exists and is delivered; an acked event is
    // always a duplicate of its own first delivery id.
    let url = format!("http://{}/hooks/sigsentry", p.public);
    let acked_map: std::collections::HashMap<_, _> = acked.iter().cloned().collect();
    let attempted = attempted.lock().unwrap().clone();
    let mut expect_delivered = HashSet::new();
    for aid in attempted
        .iter()
        .step_by(3)
        .chain(acked.iter().map(|(a, _)| a).take(200))
    {
        let body = analysis(aid);
        let a = post(&url, &sign("sigsentry", SECRET, &body, None, now()), body).await;
        let id = a.json()["id"].as_str().unwrap().to_string();
        match a.status {
            200 => {
                assert_eq!(a.json()["status"], "duplicate");
                if let Some(first) = acked_map.get(aid) {
                    assert_eq!(&id, first, "{aid}: dedup points at another job");
                }
                expect_delivered.insert(id);
            }
            202 => {
                assert!(
                    !acked_map.contains_key(aid),
                    "{aid} was acked but its dedup record is gone"
                );
                expect_delivered.insert(id);
            }
            s => panic!("{aid}: unexpected {s}"),
        }
    }
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = up.delivery_ids();
        let missing = expect_delivered.difference(&got).count();
        if missing == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{missing} seen-but-not-queued event ids"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}
