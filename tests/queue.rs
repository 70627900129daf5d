//! Queue mode end to end: real hookgate on 127.0.0.1:0 with a real SQLite
//! file, a real upstream, and the admin API over HTTP. No sleeps that wait
//! for luck: every wait polls with a deadline.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const SECRET: &str = "queue-test-secret-0123456789abcdef";

fn config(store: &Path, upstream: &str, extra_route: &str) -> String {
    format!(
        r#"
[store]
path = "{db}"

[delivery]
poll_interval = "50ms"

[[routes]]
path = "/hooks/sigsentry"
scheme = "sigsentry"
secrets = [{{ value = "{SECRET}" }}]
dedup = {{ key = "body:/analysisId", window = "1h" }}
{extra_route}
[routes.upstream]
url = "{upstream}"
timeout = "2s"
[routes.retry]
initial = "50ms"
max_delay = "200ms"
jitter = 0.0
"#,
        db = store.join("hookgate.db").display(),
    )
}

async fn deliver(hg: &Hookgate, id: &str) -> Answer {
    let body = analysis(id);
    post(
        &hg.url("/hooks/sigsentry"),
        &sign("sigsentry", SECRET, &body, None, now()),
        body,
    )
    .await
}

async fn admin_get(hg: &Hookgate, path: &str) -> serde_json::Value {
    let a = send("GET", &hg.admin_url(path), &[], "").await;
    assert_eq!(a.status, 200, "{path}: {:?}", a.body);
    a.json()
}

/// Polls `f` until it returns Some, or panics after `secs`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn job_state(hg: &Hookgate, id: &str) -> String {
    admin_get(hg, &format!("/admin/jobs/{id}")).await["state"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn accepted_request_is_acked_then_forwarded_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    let hg = Hookgate::start(&config(dir.path(), &up.url("/app/hook"), "")).await;

    let body = analysis("anl_q1");
    let a = post(
        &hg.url("/hooks/sigsentry?src=sig"),
        &sign("sigsentry", SECRET, &body, None, now()),
        body.clone(),
    )
    .await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    let v = a.json();
    assert_eq!(v["status"], "accepted");
    let id = v["id"].as_str().unwrap().to_string();

    let got = up.wait_for(1, Duration::from_secs(10)).await;
    let r = &got[0];
    assert_eq!(r.body, body);
    assert_eq!(r.uri, "/app/hook?src=sig");
    assert_eq!(r.headers["x-hookgate-delivery-id"], id.as_str());
    assert_eq!(r.headers["x-hookgate-attempt"], "1");
    assert_eq!(r.headers["x-hookgate-verified"], "sigsentry");
    assert!(r.headers.get("x-sigsentry-signature").is_some());

    let state = eventually(10, "job delivered", || {
        let hg = &hg;
        let id = id.clone();
        async move { Some(job_state(hg, &id).await).filter(|s| s == "done") }
    })
    .await;
    assert_eq!(state, "done");
    let detail = admin_get(&hg, &format!("/admin/jobs/{id}")).await;
    assert_eq!(detail["attempt_log"][0]["http_status"], 200);
    assert_eq!(detail["attempt_log"][0]["response_body"], "upstream ok");
    hg.stop().await;
}

#[tokio::test]
async fn duplicates_are_answered_with_the_first_id_and_not_forwarded_twice() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    let hg = Hookgate::start(&config(dir.path(), &up.url("/app"), "")).await;
    let first = deliver(&hg, "anl_dup").await;
    assert_eq!(first.status, 202);
    let second = deliver(&hg, "anl_dup").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.json()["status"], "duplicate");
    assert_eq!(second.json()["id"], first.json()["id"]);
    up.wait_for(1, Duration::from_secs(10)).await;
    // Another event is not a duplicate.
    assert_eq!(deliver(&hg, "anl_other").await.status, 202);
    up.wait_for(2, Duration::from_secs(10)).await;
    let ids: Vec<_> = up.received().iter().map(|r| r.body.clone()).collect();
    assert_eq!(ids.iter().filter(|b| **b == analysis("anl_dup")).count(), 1);
    hg.stop().await;
}

#[tokio::test]
async fn missing_dedup_key_and_invalid_json_are_400() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    let hg = Hookgate::start(&config(dir.path(), &up.url("/app"), "")).await;
    let body = br#"{"summary":"no id"}"#;
    let a = post(
        &hg.url("/hooks/sigsentry"),
        &sign("sigsentry", SECRET, body, None, now()),
        &body[..],
    )
    .await;
    assert_eq!((a.status, a.code().as_str()), (400, "dedup_key_missing"));
    let body = b"not json at all";
    let a = post(
        &hg.url("/hooks/sigsentry"),
        &sign("sigsentry", SECRET, body, None, now()),
        &body[..],
    )
    .await;
    assert_eq!((a.status, a.code().as_str()), (400, "invalid_json"));
    let stats = admin_get(&hg, "/admin/queues").await;
    assert_eq!(
        stats["queues"].as_array().unwrap().len(),
        0,
        "nothing was written: {stats}"
    );
    hg.stop().await;
}

#[tokio::test]
async fn transient_failures_are_retried_until_success() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    up.push(Reply::status(503));
    up.push(Reply {
        status: 429,
        body: "slow down",
        headers: vec![("retry-after", "0")],
        delay: Duration::ZERO,
    });
    let hg = Hookgate::start(&config(dir.path(), &up.url("/app"), "")).await;
    let a = deliver(&hg, "anl_retry").await;
    let id = a.json()["id"].as_str().unwrap().to_string();
    let got = up.wait_for(3, Duration::from_secs(10)).await;
    let attempts: Vec<_> = got
        .iter()
        .map(|r| {
            r.headers["x-hookgate-attempt"]
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert!(got
        .iter()
        .all(|r| r.headers["x-hookgate-delivery-id"] == id.as_str()));
    assert!(got.iter().all(|r| r.body == analysis("anl_retry")));
    let detail = eventually(10, "three attempts recorded", || {
        let hg = &hg;
        let id = id.clone();
        async move {
            let d = admin_get(hg, &format!("/admin/jobs/{id}")).await;
            (d["state"] == "done").then_some(d)
        }
    })
    .await;
    let log = detail["attempt_log"].as_array().unwrap();
    let statuses: Vec<_> = log
        .iter()
        .map(|a| a["http_status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [503, 429, 200]);
    assert_eq!(log[1]["response_body"], "slow down");
    hg.stop().await;
}

#[tokio::test]
async fn permanent_4xx_is_dead_lettered_at_once_and_replayable() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    up.push(Reply::status(422));
    let hg = Hookgate::start(&config(dir.path(), &up.url("/app"), "")).await;
    let id = deliver(&hg, "anl_dead").await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    up.wait_for(1, Duration::from_secs(10)).await;
    let dead = eventually(10, "dead letter listed", || {
        let hg = &hg;
        async move {
            let v = admin_get(hg, "/admin/dead-letters?route=/hooks/sigsentry").await;
            (!v["items"].as_array().unwrap().is_empty()).then_some(v)
        }
    })
    .await;
    assert_eq!(dead["items"][0]["id"], id.as_str());
    assert_eq!(dead["items"][0]["last_status"], 422);
    assert_eq!(dead["items"][0]["attempts"], 1, "a 4xx is not retried");
    let q = admin_get(&hg, "/admin/queues").await;
    assert_eq!(q["queues"][0]["dead"], 1);

    // Replay: the upstream (now answering 200 by default) gets it again.
    let r = send(
        "POST",
        &hg.admin_url(&format!("/admin/jobs/{id}/replay")),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let got = up.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[1].headers["x-hookgate-attempt"], "2");
    assert_eq!(got[1].body, analysis("anl_dead"));
    eventually(10, "replayed job done", || {
        let hg = &hg;
        let id = id.clone();
        async move { (job_state(hg, &id).await == "done").then_some(()) }
    })
    .await;
    // Replaying a job that is not dead is a conflict; an unknown one is 404.
    let r = send(
        "POST",
        &hg.admin_url(&format!("/admin/jobs/{id}/replay")),
        &[],
        "",
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (409, "conflict"));
    let r = send("POST", &hg.admin_url("/admin/jobs/nope/replay"), &[], "").await;
    assert_eq!(r.status, 404);
    hg.stop().await;
}

#[tokio::test]
async fn exhausted_retries_are_dead_then_replay_all_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    up.set_default(Reply::status(500));
    let toml = config(dir.path(), &up.url("/app"), "")
        .replace("jitter = 0.0", "jitter = 0.0\nmax_attempts = 2");
    let hg = Hookgate::start(&toml).await;
    let a = deliver(&hg, "anl_x1").await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = deliver(&hg, "anl_x2").await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(10, "both dead", || {
        let hg = &hg;
        async move {
            let v = admin_get(hg, "/admin/dead-letters").await;
            (v["items"].as_array().unwrap().len() == 2).then_some(())
        }
    })
    .await;
    assert_eq!(up.received().len(), 4, "two attempts each");
    let detail = admin_get(&hg, &format!("/admin/dead-letters/{a}")).await;
    assert_eq!(detail["attempts"], 2);
    assert_eq!(detail["attempt_log"][1]["http_status"], 500);

    // Delete one, replay the rest of the route.
    let r = send(
        "DELETE",
        &hg.admin_url(&format!("/admin/dead-letters/{a}")),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let r = send("GET", &hg.admin_url(&format!("/admin/jobs/{a}")), &[], "").await;
    assert_eq!(r.status, 404);
    up.set_default(Reply::status(200));
    let r = send(
        "POST",
        &hg.admin_url("/admin/dead-letters/replay?route=%2Fhooks%2Fsigsentry"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["replayed"], 1);
    eventually(10, "replayed job done", || {
        let hg = &hg;
        let b = b.clone();
        async move { (job_state(hg, &b).await == "done").then_some(()) }
    })
    .await;
    hg.stop().await;
}

#[tokio::test]
async fn queue_limit_refuses_with_503_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // An upstream that never answers in time keeps the first job in flight.
    let up = Upstream::start().await;
    up.set_default(Reply::delayed(Duration::from_secs(30)));
    let hg = Hookgate::start(&config(dir.path(), &up.url("/app"), "queue_limit = 1")).await;
    assert_eq!(deliver(&hg, "anl_l1").await.status, 202);
    let a = deliver(&hg, "anl_l2").await;
    assert_eq!((a.status, a.code().as_str()), (503, "unavailable"));
    assert!(a.headers.get("retry-after").is_some());
    let q = admin_get(&hg, "/admin/queues").await;
    let total =
        q["queues"][0]["pending"].as_u64().unwrap() + q["queues"][0]["in_flight"].as_u64().unwrap();
    assert_eq!(total, 1, "the refused request was not written: {q}");
    // Not recorded as seen either: once there is room it is accepted.
    hg.shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(30), hg.task).await;
}

#[tokio::test]
async fn dedup_and_queue_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Upstream down during the first run: the job stays queued.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let hg = Hookgate::start(&config(dir.path(), &format!("http://{addr}/app"), "")).await;
    let id = deliver(&hg, "anl_restart").await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    hg.stop().await;

    // Second run: same file, upstream now up (on a new port).
    let up = Upstream::start().await;
    let hg = Hookgate::start(&config(dir.path(), &up.url("/app"), "")).await;
    let dup = deliver(&hg, "anl_restart").await;
    assert_eq!(dup.status, 200);
    assert_eq!(dup.json()["id"], id.as_str(), "dedup survived the restart");
    let got = up.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(got[0].headers["x-hookgate-delivery-id"], id.as_str());
    hg.stop().await;
}

#[tokio::test]
async fn admin_api_requires_the_token_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    let toml = config(dir.path(), &up.url("/app"), "")
        + "\n[admin]\ntoken = { value = \"adm1n-t0ken\" }\n";
    let hg = Hookgate::start(&toml).await;
    let a = send("GET", &hg.admin_url("/admin/queues"), &[], "").await;
    assert_eq!((a.status, a.code().as_str()), (401, "unauthorized"));
    let wrong = [("authorization".to_string(), "Bearer nope".to_string())];
    assert_eq!(
        send("GET", &hg.admin_url("/admin/queues"), &wrong, "")
            .await
            .status,
        401
    );
    let right = [(
        "authorization".to_string(),
        "Bearer adm1n-t0ken".to_string(),
    )];
    assert_eq!(
        send("GET", &hg.admin_url("/admin/queues"), &right, "")
            .await
            .status,
        200
    );
    // Probes need no token.
    assert_eq!(
        send("GET", &hg.admin_url("/healthz"), &[], "").await.status,
        200
    );
    assert_eq!(
        send("GET", &hg.admin_url("/readyz"), &[], "").await.status,
        200
    );
    hg.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_failures_attempts_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    up.push(Reply::status(503));
    let hg = Hookgate::start(&config(dir.path(), &up.url("/app"), "")).await;
    deliver(&hg, "anl_m1").await;
    deliver(&hg, "anl_m1").await; // duplicate
    let bad = vec![("x-sigsentry-signature".to_string(), "sha256=00".to_string())];
    post(&hg.url("/hooks/sigsentry"), &bad, analysis("anl_m2")).await;
    up.wait_for(2, Duration::from_secs(10)).await;
    let text = eventually(10, "attempts counted", || {
        let hg = &hg;
        async move {
            let a = send("GET", &hg.admin_url("/metrics"), &[], "").await;
            let t = String::from_utf8(a.body.to_vec()).unwrap();
            t.contains(
                r#"hookgate_forward_attempts_total{result="success",route="/hooks/sigsentry"} 1"#,
            )
            .then_some(t)
        }
    })
    .await;
    for want in [
        r#"hookgate_requests_total{outcome="accepted",route="/hooks/sigsentry"} 1"#,
        r#"hookgate_requests_total{outcome="duplicate",route="/hooks/sigsentry"} 1"#,
        r#"hookgate_requests_total{outcome="signature_mismatch",route="/hooks/sigsentry"} 1"#,
        r#"hookgate_verification_failures_total{reason="signature_mismatch",route="/hooks/sigsentry"} 1"#,
        r#"hookgate_duplicates_total{route="/hooks/sigsentry"} 1"#,
        r#"hookgate_forward_attempts_total{result="retry",route="/hooks/sigsentry"} 1"#,
        r#"hookgate_ack_duration_seconds_count{route="/hooks/sigsentry"} 2"#,
        r#"hookgate_queue_jobs{route="/hooks/sigsentry",state="dead"} 0"#,
        "hookgate_store_commit_batch_size_count",
    ] {
        assert!(text.contains(want), "missing {want} in:\n{text}");
    }
    hg.stop().await;
}

#[tokio::test]
async fn upstream_concurrency_limit_is_respected() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    up.set_default(Reply::delayed(Duration::from_millis(200)));
    let toml = config(dir.path(), &up.url("/app"), "")
        .replace("timeout = \"2s\"", "timeout = \"2s\"\nconcurrency = 2");
    let hg = Hookgate::start(&toml).await;
    for i in 0..8 {
        assert_eq!(deliver(&hg, &format!("anl_c{i}")).await.status, 202);
    }
    up.wait_for(8, Duration::from_secs(20)).await;
    assert_eq!(
        up.peak_in_flight(),
        2,
        "two at a time, and both slots were used"
    );
    hg.stop().await;
}
