//! Riding out upstream outages with the real binary: the circuit breaker
//! (only probes reach a failing upstream; nothing acknowledged is lost or
//! dead-lettered; the backlog drains after recovery) and pause / resume
//! (a paused queue keeps accepting, delivers nothing, and stays paused
//! across a restart), and in-order delivery (`ordering = "fifo"`) across an
//! outage and a restart.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

const SECRET: &str = "outage-secret";
const ROUTE: &str = "/hooks/sigsentry";

fn write_config(dir: &std::path::Path, upstream: SocketAddr, ordering: &str) -> std::path::PathBuf {
    let cfg = dir.join("hookgate.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "2s"
[admin]
listen = "127.0.0.1:0"
[store]
path = "{db}"
[log]
format = "json"
[delivery]
poll_interval = "50ms"

[[routes]]
path = "{ROUTE}"
scheme = "sigsentry"
secrets = [{{ value = "{SECRET}" }}]
dedup = {{ key = "body:/analysisId", window = "1h" }}
ordering = "{ordering}"
[routes.upstream]
url = "http://{upstream}/app"
timeout = "1s"
concurrency = 4
[routes.retry]
initial = "100ms"
max_delay = "400ms"
[routes.circuit]
failures = 3
probe_interval = "200ms"
probe_max_interval = "800ms"
"#,
            db = dir.join("hookgate.db").display(),
        ),
    )
    .unwrap();
    cfg
}

/// Forward attempts so far, and how they ended (for the failure message).
async fn attempts(p: &Proc) -> (f64, String) {
    let mut n = 0.0;
    let mut by_result = Vec::new();
    for result in ["success", "retry", "dead"] {
        let k = p
            .metric(&format!(
                "hookgate_forward_attempts_total{{result=\"{result}\",route=\"{ROUTE}\"}}"
            ))
            .await;
        n += k;
        by_result.push(format!("{result} {k}"));
    }
    (n, by_result.join(", "))
}

async fn queue(p: &Proc) -> serde_json::Value {
    let a = send("GET", &p.admin_url("/admin/queues"), &[], Vec::new()).await;
    assert_eq!(a.status, 200);
    a.json()["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["route"] == ROUTE)
        .cloned()
        .unwrap()
}

/// Sends `n` signed webhooks over `over`; answers their delivery ids.
async fn steady_load(p: &Proc, tag: &str, n: usize, over: Duration) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let body = analysis(&format!("anl_{tag}_{i}"));
        let a = post(
            &p.url(ROUTE),
            &sign("sigsentry", SECRET, &body, None, now()),
            body,
        )
        .await;
        assert_eq!(a.status, 202, "{tag} {i}");
        ids.push(a.json()["id"].as_str().unwrap().to_string());
        tokio::time::sleep(over / n as u32).await;
    }
    ids
}

async fn wait_delivered(up: &Upstream, ids: &[String], within: Duration) {
    let end = Instant::now() + within;
    loop {
        let got = up.delivered_ids();
        let missing = ids.iter().filter(|id| !got.contains(*id)).count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < end,
            "{missing} of {} acknowledged events not delivered",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_gets_probes_only_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Down until phase 2, and no other test's server can be given its port.
    let port = ClosedPort::new();
    let p = spawn_binary(&write_config(dir.path(), port.addr, "none"), &[])
        .wait_listening(Duration::from_secs(30));
    assert_eq!(queue(&p).await["circuit"]["state"], "closed");
    let closed = format!("hookgate_circuit_state{{route=\"{ROUTE}\",state=\"closed\"}}");
    let open = format!("hookgate_circuit_state{{route=\"{ROUTE}\",state=\"open\"}}");
    assert_eq!(p.metric(&closed).await, 1.0);

    // Phase 1: connection refused, under a steady load of 60 webhooks.
    let mut ids = steady_load(&p, "refused", 60, Duration::from_secs(3)).await;
    let q = queue(&p).await;
    assert_ne!(q["circuit"]["state"], "closed", "{q}");
    assert!(q["circuit"]["opened_at"].is_i64(), "{q}");
    assert_eq!(p.metric(&closed).await, 0.0);
    let (refused_attempts, by_result) = attempts(&p).await;
    // Without the breaker each of the 60 jobs would have been tried (and
    // retried) on its own; with it: the failures that opened it, the
    // attempts already under way, and a probe at 200/400/800 ms intervals.
    assert!(
        refused_attempts <= 20.0,
        "{refused_attempts} attempts ({by_result}) during a 3 s refused-connection outage; {q}"
    );

    // Phase 2: the upstream is back but answers 503 to everything.
    let up = Upstream::start_on(port);
    up.set_default(Reply::status(503));
    ids.extend(steady_load(&p, "unavailable", 60, Duration::from_secs(3)).await);
    let seen = up.received().len();
    assert!(
        (1..=10).contains(&seen),
        "the failing upstream got {seen} requests in 3 s: probes only"
    );
    assert!(
        p.metric(&open).await
            + p.metric(&format!(
                "hookgate_circuit_state{{route=\"{ROUTE}\",state=\"half_open\"}}"
            ))
            .await
            == 1.0
    );
    let opened = p
        .metric(&format!(
            "hookgate_circuit_transitions_total{{route=\"{ROUTE}\",state=\"open\"}}"
        ))
        .await;
    assert!(opened >= 1.0);

    // Phase 3: recovery. Every acknowledged event arrives, none is dead.
    up.set_default(Reply::status(200));
    wait_delivered(&up, &ids, Duration::from_secs(30)).await;
    let q = queue(&p).await;
    assert_eq!(q["circuit"]["state"], "closed", "{q}");
    assert_eq!(q["dead"], 0, "{q}");
    assert_eq!(p.metric(&closed).await, 1.0);
    let logs = p.terminate(Duration::from_secs(10));
    assert!(
        logs.iter().any(|l| l.contains("circuit open")),
        "a log line on opening"
    );
    assert!(
        logs.iter().any(|l| l.contains("circuit closed")),
        "a log line on closing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_queue_accepts_delivers_nothing_and_stays_paused_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    let cfg = write_config(dir.path(), up.addr, "none");
    let p = spawn_binary(&cfg, &[]).wait_listening(Duration::from_secs(30));
    let paused = format!("hookgate_queue_paused{{route=\"{ROUTE}\"}}");
    assert_eq!(p.metric(&paused).await, 0.0);

    // Refusals: no route, an unknown route.
    let a = send("POST", &p.admin_url("/admin/queues/pause"), &[], Vec::new()).await;
    assert_eq!((a.status, a.code().as_str()), (400, "bad_request"));
    let a = send(
        "POST",
        &p.admin_url("/admin/queues/pause?route=/nope"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!((a.status, a.code().as_str()), (400, "bad_request"));

    let a = send(
        "POST",
        &p.admin_url(&format!("/admin/queues/pause?route={ROUTE}")),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["paused"], true);
    assert_eq!(queue(&p).await["paused"], true);
    assert_eq!(p.metric(&paused).await, 1.0);

    let mut ids = steady_load(&p, "paused", 10, Duration::from_millis(500)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(up.received().is_empty(), "a paused queue delivered");
    assert_eq!(queue(&p).await["pending"], 10);

    // Restart: still paused, still nothing delivered.
    p.terminate(Duration::from_secs(10));
    let p = spawn_binary(&cfg, &[]).wait_listening(Duration::from_secs(30));
    assert_eq!(queue(&p).await["paused"], true);
    assert_eq!(p.metric(&paused).await, 1.0);
    ids.extend(steady_load(&p, "paused_again", 5, Duration::from_millis(200)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        up.received().is_empty(),
        "a paused queue delivered after restart"
    );

    // Resume: everything arrives.
    let a = send(
        "POST",
        &p.admin_url(&format!("/admin/queues/resume?route={ROUTE}")),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["paused"], false);
    wait_delivered(&up, &ids, Duration::from_secs(20)).await;
    assert_eq!(p.metric(&paused).await, 0.0);
    let got: HashSet<String> = up.delivered_ids();
    assert_eq!(got.len(), ids.len());
    p.terminate(Duration::from_secs(10));
}

/// Sends webhooks `anl_fifo_<i>` one after another; answers their ids in
/// acceptance order.
async fn accept_in_order(p: &Proc, range: std::ops::Range<usize>) -> Vec<String> {
    let mut order = Vec::new();
    for i in range {
        let aid = format!("anl_fifo_{i:02}");
        let body = analysis(&aid);
        let a = post(
            &p.url(ROUTE),
            &sign("sigsentry", SECRET, &body, None, now()),
            body,
        )
        .await;
        assert_eq!(a.status, 202);
        order.push(aid);
    }
    order
}

/// The analysisIds of the requests the upstream answered 2xx, in arrival
/// order.
fn delivered_in_order(up: &Upstream) -> Vec<String> {
    up.received()
        .iter()
        .filter(|r| (200..300).contains(&r.status))
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["analysisId"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifo_delivers_in_acceptance_order_across_an_outage_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    // The upstream fails for a while: the head is retried and blocks.
    for _ in 0..8 {
        up.push(Reply::status(503));
    }
    let cfg = write_config(dir.path(), up.addr, "fifo");
    let p = spawn_binary(&cfg, &[]).wait_listening(Duration::from_secs(30));
    let mut order = accept_in_order(&p, 0..15).await;
    // Restart while most are still waiting behind the failing head.
    p.terminate(Duration::from_secs(10));
    let p = spawn_binary(&cfg, &[]).wait_listening(Duration::from_secs(30));
    order.extend(accept_in_order(&p, 15..30).await);
    let end = Instant::now() + Duration::from_secs(30);
    while delivered_in_order(&up).len() < order.len() {
        assert!(
            Instant::now() < end,
            "delivered {:?} of {order:?}",
            delivered_in_order(&up)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivered_in_order(&up), order);
    // One at a time, and the failures really were retried in place.
    assert_eq!(up.peak_in_flight(), 1);
    assert!(up.received().len() >= order.len() + 8);
    assert_eq!(queue(&p).await["dead"], 0);
    p.terminate(Duration::from_secs(10));
}
