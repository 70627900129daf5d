//! Resource bounds of the real binary: the shared request-body budget
//! (`server.max_inflight_body`) and the response-write timeout
//! (`server.write_timeout`), under clients that hold large bodies open or
//! stop reading; the delivery thread's priority (`delivery.nice`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "budget-secret";
const MIB: usize = 1024 * 1024;

fn write_config(dir: &std::path::Path, upstream: &str, extra_server: &str) -> std::path::PathBuf {
    let cfg = dir.join("hookgate.toml");
    let route = |path: &str, mode: &str| {
        format!(
            r#"
[[routes]]
path = "{path}"
scheme = "sigsentry"
secrets = [{{ value = "{SECRET}" }}]
mode = "{mode}"
[routes.upstream]
url = "{upstream}"
timeout = "60s"
"#
        )
    };
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
max_body = "1MiB"
body_timeout = "30s"
{extra_server}
[admin]
listen = "127.0.0.1:0"
[store]
path = "{db}"
[log]
format = "json"
{p}
{q}
"#,
            db = dir.join("hookgate.db").display(),
            p = route("/p", "passthrough"),
            q = route("/q", "queue"),
        ),
    )
    .unwrap();
    cfg
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> usize {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// A client that sends a request head announcing (or chunking) a 1 MiB body,
/// then all of the body but its end, and holds the connection open.
async fn hold_large_body(addr: std::net::SocketAddr, path: &str, chunked: bool) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = if chunked {
        format!("POST {path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
    } else {
        format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {MIB}\r\n\r\n")
    };
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// Writes the body in the background; a refused client's writes fail.
fn feed(mut w: tokio::net::tcp::OwnedWriteHalf, chunked: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let piece = vec![b'x'; 64 * 1024];
        // All but the last piece: the body never completes.
        for _ in 0..(MIB / piece.len() - 1) {
            let r = if chunked {
                let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
                c.extend_from_slice(&piece);
                c.extend_from_slice(b"\r\n");
                w.write_all(&c).await
            } else {
                w.write_all(&piece).await
            };
            if r.is_err() {
                return;
            }
        }
        // Hold the connection until the test ends.
        std::future::pending::<()>().await;
    })
}

/// Reads one response head within `within`; `None` if none came.
async fn read_head(r: &mut tokio::net::tcp::OwnedReadHalf, within: Duration) -> Option<String> {
    let mut buf = Vec::new();
    let end = tokio::time::Instant::now() + within;
    loop {
        let mut b = [0u8; 4096];
        match tokio::time::timeout_at(end, r.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&b[..n]),
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            // The JSON body is small and follows at once.
            let _ = tokio::time::timeout(Duration::from_millis(200), r.read(&mut b)).await;
            return Some(String::from_utf8_lossy(&buf[..i]).into_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_bodies_held_open_stay_within_the_budget() {
    const BUDGET_MIB: usize = 4;
    const CLIENTS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    let cfg = write_config(
        dir.path(),
        &up.url("/app"),
        &format!("max_inflight_body = \"{BUDGET_MIB}MiB\""),
    );
    let p = spawn_binary(&cfg, &[]).wait_listening(Duration::from_secs(30));
    let pid = p.child.id();

    // Warm up both modes, so the baseline holds what serving needs.
    for route in ["/p", "/q"] {
        let body = analysis("anl_warm");
        let a = post(
            &p.url(route),
            &sign("sigsentry", SECRET, &body, None, now()),
            body,
        )
        .await;
        assert!(a.status == 200 || a.status == 202, "{route}: {}", a.status);
    }
    let baseline = status_kib(pid, "VmRSS:");

    // 40 clients x 1 MiB: 10 times the budget, in both modes and framings.
    let mut readers = Vec::new();
    let mut feeders = Vec::new();
    for i in 0..CLIENTS {
        let path = if i % 2 == 0 { "/p" } else { "/q" };
        let chunked = i % 4 >= 2;
        let (r, w) = hold_large_body(p.public, path, chunked).await.into_split();
        feeders.push(feed(w, chunked));
        readers.push(r);
    }
    // Whoever got no share is answered 503 overloaded within the wait.
    let started = Instant::now();
    let mut refused = 0;
    let mut answers = Vec::new();
    for r in &mut readers {
        let left = Duration::from_secs(10).saturating_sub(started.elapsed());
        if let Some(head) = read_head(r, left.max(Duration::from_millis(300))).await {
            answers.push(head);
        }
    }
    for head in &answers {
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("retry-after: 1"), "{head}");
        assert!(lower.contains("connection: close"), "{head}");
        refused += 1;
    }
    // At most BUDGET_MIB bodies fit; the rest were refused.
    assert!(
        refused >= CLIENTS - BUDGET_MIB,
        "{refused} of {CLIENTS} refused"
    );
    let held = p.metric("hookgate_inflight_body_bytes").await;
    assert!(
        held <= (BUDGET_MIB * MIB) as f64,
        "{held} bytes reserved, budget {BUDGET_MIB} MiB"
    );
    let a = p
        .metric("hookgate_requests_total{outcome=\"overloaded\",route=\"/p\"}")
        .await
        + p.metric("hookgate_requests_total{outcome=\"overloaded\",route=\"/q\"}")
            .await;
    assert_eq!(a as usize, refused);

    // Valid small requests still go through while the large ones are held.
    for route in ["/p", "/q"] {
        let body = analysis("anl_during");
        let a = post(
            &p.url(route),
            &sign("sigsentry", SECRET, &body, None, now()),
            body,
        )
        .await;
        assert!(a.status == 200 || a.status == 202, "{route}: {}", a.status);
    }

    // Memory: the peak stays under the budget plus a fixed overhead (hyper's
    // read buffers of the clients being read, allocator slack); without the
    // budget the held bodies alone would be 40 MiB.
    let peak = status_kib(pid, "VmHWM:");
    let grown_mib = peak.saturating_sub(baseline) as f64 / 1024.0;
    eprintln!("{refused}/{CLIENTS} refused; peak RSS +{grown_mib:.1} MiB");
    assert!(
        grown_mib < (BUDGET_MIB + 12) as f64,
        "peak RSS grew {grown_mib:.1} MiB over the {:.1} MiB baseline",
        baseline as f64 / 1024.0
    );

    // Closing the held connections gives the budget back.
    for f in &feeders {
        f.abort();
    }
    drop(readers);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let held = p.metric("hookgate_inflight_body_bytes").await;
        if held == 0.0 {
            break;
        }
        assert!(Instant::now() < end, "{held} bytes still reserved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing of the incomplete bodies reached the upstream or the store.
    let got = up.received();
    assert!(
        got.iter().all(|r| r.body.len() < 64 * 1024),
        "a held body was forwarded"
    );
    p.terminate(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_is_cut_off() {
    const RESPONSE: usize = 64 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    let big: &'static str = Box::leak("y".repeat(RESPONSE).into_boxed_str());
    up.set_default(Reply {
        body: big,
        ..Reply::status(200)
    });
    let cfg = write_config(dir.path(), &up.url("/app"), "write_timeout = \"1s\"");
    let p = spawn_binary(&cfg, &[]).wait_listening(Duration::from_secs(30));

    let body = analysis("anl_slow_reader");
    let mut req = format!(
        "POST /p HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in sign("sigsentry", SECRET, &body, None, now()) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect(p.public).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    // Read nothing for three write timeouts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut total = 0usize;
    let mut b = vec![0u8; 256 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => total += n,
            Err(_) => panic!("the connection was neither finished nor closed ({total} bytes)"),
        }
        if total >= RESPONSE {
            break; // all of it (and the head): never cut off
        }
    }
    assert!(
        total < RESPONSE,
        "the client got the whole {RESPONSE}-byte response ({total} bytes) though it stopped reading"
    );
    // The process serves on.
    let body = analysis("anl_after_slow_reader");
    up.set_default(Reply::status(200));
    let a = post(
        &p.url("/p"),
        &sign("sigsentry", SECRET, &body, None, now()),
        body,
    )
    .await;
    assert_eq!(a.status, 200);
    p.terminate(Duration::from_secs(10));
}

/// The name and nice value of each of `pid`'s threads
/// (`/proc/<pid>/task/<tid>/{comm,stat}`; nice is field 19 of stat).
fn thread_nices(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        // A thread that exits meanwhile is skipped.
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(t.join("comm")),
            std::fs::read_to_string(t.join("stat")),
        ) else {
            continue;
        };
        // Fields after the command name (which may hold spaces): state is
        // field 3, nice field 19.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let nice = rest.split(' ').nth(16).unwrap().parse().unwrap();
        out.push((comm.trim_end().to_string(), nice));
    }
    out
}

/// Deliveries run on a thread of their own at `delivery.nice` (10 unless
/// set), so that acks win the CPU; `nice = 0` keeps them on the receiving
/// runtime. Both deliver.
#[tokio::test]
async fn the_delivery_thread_runs_at_its_nice_value() {
    for (extra, expect) in [
        ("", vec![10]),
        ("[delivery]\nnice = 3", vec![3]),
        ("[delivery]\nnice = 0", vec![]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let up = Upstream::start().await;
        let cfg = write_config(dir.path(), &up.url("/app"), extra);
        let p = spawn_binary(&cfg, &[]).wait_listening(Duration::from_secs(30));
        let body = analysis("anl_nice");
        let a = post(
            &p.url("/q"),
            &sign("sigsentry", SECRET, &body, None, now()),
            body,
        )
        .await;
        assert_eq!(a.status, 202, "{extra:?}");
        up.wait_for(1, Duration::from_secs(10)).await;
        assert_eq!(up.received().len(), 1, "{extra:?}: delivered once");
        let threads = thread_nices(p.child.id());
        let engine: Vec<i64> = threads
            .iter()
            .filter(|(name, _)| name == "hookgate-engine")
            .map(|(_, nice)| *nice)
            .collect();
        assert_eq!(engine, expect, "{extra:?}: {threads:?}");
        // Every other thread (receiving runtime, store) keeps the default.
        assert!(
            threads
                .iter()
                .all(|(name, nice)| name == "hookgate-engine" || *nice == 0),
            "{extra:?}: {threads:?}"
        );
        p.terminate(Duration::from_secs(10));
    }
}
