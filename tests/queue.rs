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

/// Polls `GET /admin/jobs/<id>` until `ready` holds of it (10 s deadline)
/// and answers that job detail.
async fn job_until(
    hg: &Hookgate,
    id: &str,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let ready = &ready;
    eventually(10, what, || async move {
        let d = admin_get(hg, &format!("/admin/jobs/{id}")).await;
        ready(&d).then_some(d)
    })
    .await
}

/// `config` with the route's upstream concurrency set to `n`.
fn with_concurrency(toml: String, n: usize) -> String {
    toml.replace(
        "timeout = \"2s\"",
        &format!("timeout = \"2s\"\nconcurrency = {n}"),
    )
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
    assert_eq!(
        r.headers["host"],
        up.addr.to_string().as_str(),
        "the upstream's own authority, not the sender's Host"
    );

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

/// Queue mode forwards the same trustworthy forwarded headers as
/// passthrough: a sender's forged ones never reach the upstream.
#[tokio::test]
async fn forged_forwarded_headers_are_not_stored_or_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    let hg = Hookgate::start(&config(dir.path(), &up.url("/app"), "")).await;
    let body = analysis("anl_fwdq");
    let mut headers = sign("sigsentry", SECRET, &body, None, now());
    headers.push(("x-forwarded-for".into(), "6.6.6.6".into()));
    headers.push(("x-real-ip".into(), "6.6.6.6".into()));
    let a = post(&hg.url("/hooks/sigsentry"), &headers, body).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    let got = up.wait_for(1, Duration::from_secs(10)).await;
    let r = &got[0];
    assert_eq!(r.headers.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(r.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(r.headers["x-forwarded-proto"], "http");
    assert!(r.headers.get("x-real-ip").is_none());
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
    assert_eq!(jobs_held(&stats), 0, "nothing was written: {stats}");
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
    let detail = job_until(&hg, &id, "three attempts recorded", |d| {
        d["state"] == "done"
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
    job_until(&hg, &id, "replayed job done", |d| d["state"] == "done").await;
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
    job_until(&hg, &b, "replayed job done", |d| d["state"] == "done").await;
    hg.stop().await;
}

#[tokio::test]
async fn queue_limit_refuses_with_503_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // An upstream that never answers in time keeps the first job in flight.
    let up = Upstream::start().await;
    up.set_default(Reply::delayed(Duration::from_secs(30)));
    let hg = Hookgate::start(&config(dir.path(), &up.url("/app"), "queue_limit = 1")).await;
    let first = deliver(&hg, "anl_l1").await;
    assert_eq!(first.status, 202);
    let first_id = first.json()["id"].as_str().unwrap().to_string();
    let a = deliver(&hg, "anl_l2").await;
    assert_eq!((a.status, a.code().as_str()), (503, "unavailable"));
    assert!(a.headers.get("retry-after").is_some());
    let retry_after: u64 = a.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is delay-seconds");
    assert!(retry_after > 0, "Retry-After: {retry_after}");
    let q = admin_get(&hg, "/admin/queues").await;
    let total =
        q["queues"][0]["pending"].as_u64().unwrap() + q["queues"][0]["in_flight"].as_u64().unwrap();
    assert_eq!(total, 1, "the refused request was not written: {q}");

    // Not recorded as seen either: once there is room it is accepted, not
    // answered as a duplicate. Make room by dropping the first job.
    up.set_default(Reply::status(200));
    let r = send(
        "DELETE",
        &hg.admin_url(&format!("/admin/jobs/{first_id}")),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let again = deliver(&hg, "anl_l2").await;
    assert_eq!(again.status, 202, "{:?}", again.body);
    assert_eq!(again.json()["status"], "accepted");
    let second_id = again.json()["id"].as_str().unwrap().to_string();
    assert_ne!(second_id, first_id);
    // ...and it is the one delivered (the first job is gone).
    let got = eventually(10, "anl_l2 delivered", || {
        let up = &up;
        async move {
            let got = up.received();
            got.iter()
                .any(|r| r.body == analysis("anl_l2"))
                .then_some(got)
        }
    })
    .await;
    let r = got.iter().find(|r| r.body == analysis("anl_l2")).unwrap();
    assert_eq!(r.headers["x-hookgate-delivery-id"], second_id.as_str());
    hg.stop().await;
}

#[tokio::test]
async fn dedup_and_queue_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Upstream down during the first run: the job stays queued.
    let dead = ClosedPort::new();
    let hg = Hookgate::start(&config(dir.path(), &dead.url("/app"), "")).await;
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
    // The two refusals are counted.
    let m = send("GET", &hg.admin_url("/metrics"), &[], "").await;
    let m = String::from_utf8(m.body.to_vec()).unwrap();
    assert!(m.contains("hookgate_admin_auth_failures_total 2"), "{m}");
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

/// The series an alert would watch exist at zero from startup.
#[tokio::test]
async fn per_route_series_exist_at_zero_from_startup() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    let hg = Hookgate::start(&config(dir.path(), &up.url("/app"), "")).await;
    let a = send("GET", &hg.admin_url("/metrics"), &[], "").await;
    let text = String::from_utf8(a.body.to_vec()).unwrap();
    for want in [
        r#"hookgate_requests_total{outcome="accepted",route="/hooks/sigsentry"} 0"#,
        r#"hookgate_requests_total{outcome="duplicate",route="/hooks/sigsentry"} 0"#,
        r#"hookgate_requests_total{outcome="signature_mismatch",route="/hooks/sigsentry"} 0"#,
        r#"hookgate_requests_total{outcome="unavailable",route="/hooks/sigsentry"} 0"#,
        r#"hookgate_verification_failures_total{reason="signature_missing",route="/hooks/sigsentry"} 0"#,
        r#"hookgate_verification_failures_total{reason="timestamp_out_of_tolerance",route="/hooks/sigsentry"} 0"#,
        r#"hookgate_duplicates_total{route="/hooks/sigsentry"} 0"#,
        r#"hookgate_forward_attempts_total{result="success",route="/hooks/sigsentry"} 0"#,
        r#"hookgate_forward_attempts_total{result="dead",route="/hooks/sigsentry"} 0"#,
        r#"hookgate_ack_duration_seconds_count{route="/hooks/sigsentry"} 0"#,
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
    let toml = with_concurrency(config(dir.path(), &up.url("/app"), ""), 2);
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

#[tokio::test]
async fn retry_after_from_the_upstream_sets_the_next_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    // Every attempt fails with Retry-After: 2 s. The route's own delay is
    // 1 s (no jitter), so the clamp [1 s, 2 s] keeps 2 s: honoured, the next
    // attempt is 2 s after the failure; ignored, it would be 1 s after.
    up.set_default(Reply {
        status: 503,
        body: "busy",
        headers: vec![("retry-after", "2")],
        delay: Duration::ZERO,
    });
    let toml = config(dir.path(), &up.url("/app"), "")
        .replace("initial = \"50ms\"", "initial = \"1s\"")
        .replace("max_delay = \"200ms\"", "max_delay = \"1s\"");
    let hg = Hookgate::start(&toml).await;
    let id = deliver(&hg, "anl_ra").await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The job as stored after a failed attempt (whichever the poll sees
    // first), without waiting for the retry.
    let detail = eventually(10, "a failed attempt recorded", || {
        let hg = &hg;
        let id = id.clone();
        async move {
            let d = admin_get(hg, &format!("/admin/jobs/{id}")).await;
            let n = d["attempt_log"].as_array().map_or(0, |l| l.len());
            (d["state"] == "pending" && n >= 1 && d["attempts"] == n).then_some(d)
        }
    })
    .await;
    let last = detail["attempt_log"].as_array().unwrap().last().unwrap();
    assert_eq!(last["http_status"], 503);
    assert_eq!(last["outcome"], "retry");
    let failed_at = last["started_at"].as_i64().unwrap() + last["duration_ms"].as_i64().unwrap();
    let delay = detail["next_at"].as_i64().unwrap() - failed_at;
    assert!(
        // Upper slack for a loaded machine; ignored, it would be ~1000.
        (1900..=2900).contains(&delay),
        "next attempt {delay} ms after the failure, want ~2000 (Retry-After), not ~1000: {detail}"
    );
    hg.stop().await;
}

/// Writes a job into the route's SQLite file the way the receiver does
/// (queue = route path, kind, payload), before hookgate runs on that file.
/// Returns the open store so the caller can act as another worker.
async fn seed_job(dir: &Path, kind: &str, event: &str) -> (hookgate::store::Store, String) {
    seed_job_in(dir, "/hooks/sigsentry", kind, event).await
}

/// [`seed_job`] into the queue `queue`.
async fn seed_job_in(
    dir: &Path,
    queue: &str,
    kind: &str,
    event: &str,
) -> (hookgate::store::Store, String) {
    use hookgate::delivery::job::StoredRequest;
    use hookgate::store::{Enqueued, NewJob, Store, StoreOptions};
    let store = Store::open(StoreOptions::sqlite(dir.join("hookgate.db"))).unwrap();
    let body = analysis(event);
    let mut headers = http::HeaderMap::new();
    for (k, v) in sign("sigsentry", SECRET, &body, None, now()) {
        headers.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    headers.insert("content-type", "application/json".parse().unwrap());
    let payload = StoredRequest {
        method: http::Method::POST,
        path_and_query: "/hooks/sigsentry/seeded".into(),
        headers,
        body: body.into(),
    }
    .encode()
    .into();
    let at = now_ms();
    let job = NewJob {
        queue: queue.into(),
        kind: kind.into(),
        payload,
        created_at: at,
        next_at: at,
        label: None,
    };
    match store.enqueue(job, None, None).await.unwrap() {
        Enqueued::Accepted { id } => (store, id),
        other => panic!("not accepted: {other:?}"),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Jobs of a route that was removed or renamed: reported at start (the
/// queue marked orphaned, a metric), moved to a configured route and
/// delivered there, or deleted; the queue of a configured route cannot be
/// deleted whole, nor moved to a route that does not exist.
#[tokio::test]
async fn orphaned_queues_are_reported_moved_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (store, moved) = seed_job_in(
        dir.path(),
        "/hooks/renamed",
        hookgate::delivery::job::KIND_FORWARD,
        "anl_orphan1",
    )
    .await;
    store.shutdown().await;
    drop(store);
    let (store, _) = seed_job_in(
        dir.path(),
        "/hooks/removed",
        hookgate::delivery::job::KIND_FORWARD,
        "anl_orphan2",
    )
    .await;
    store.shutdown().await;
    drop(store);

    let up = Upstream::start().await;
    let hg = Hookgate::start(&config(dir.path(), &up.url("/app"), "")).await;
    let queues = admin_get(&hg, "/admin/queues").await;
    let orphaned = |q: &serde_json::Value, name: &str| {
        q["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["route"] == name)
            .map(|e| (e["orphaned"].clone(), e["pending"].clone()))
    };
    assert_eq!(
        orphaned(&queues, "/hooks/renamed"),
        Some((serde_json::json!(true), serde_json::json!(1))),
        "{queues}"
    );
    let m = send("GET", &hg.admin_url("/metrics"), &[], "").await;
    let m = String::from_utf8(m.body.to_vec()).unwrap();
    assert!(
        m.contains(r#"hookgate_queue_orphaned_jobs{queue="/hooks/removed"} 1"#),
        "{m}"
    );
    assert!(up.received().is_empty(), "orphaned jobs are not delivered");

    // Refusals: `to` must be a configured route; a configured route's queue
    // cannot be deleted whole; an `after` cursor must be a job id.
    let r = send(
        "POST",
        &hg.admin_url("/admin/queues/move?from=/hooks/renamed&to=/hooks/nowhere"),
        &[],
        "",
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (400, "bad_request"));
    let r = send(
        "DELETE",
        &hg.admin_url("/admin/queues?route=/hooks/sigsentry"),
        &[],
        "",
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (409, "conflict"));
    let r = send(
        "GET",
        &hg.admin_url("/admin/jobs?after=not-a-job-id"),
        &[],
        "",
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (400, "bad_request"));

    // Moved: pending in the configured route, delivered there.
    let r = send(
        "POST",
        &hg.admin_url("/admin/queues/move?from=/hooks/renamed&to=/hooks/sigsentry"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["moved"], 1);
    let got = up.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].headers["x-hookgate-delivery-id"], moved.as_str());
    // Deleted: gone from the queues.
    let r = send(
        "DELETE",
        &hg.admin_url("/admin/queues?route=/hooks/removed"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["deleted"], 1);
    let queues = admin_get(&hg, "/admin/queues").await;
    assert_eq!(orphaned(&queues, "/hooks/removed"), None, "{queues}");
    hg.stop().await;
}

/// A process that claimed a job and died during the attempt: the attempt
/// was counted before it started, so after the restart the job is delivered
/// as attempt 2 and its history shows the interrupted one.
#[tokio::test]
async fn an_attempt_interrupted_by_a_crash_is_counted_and_the_job_delivered_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id) = seed_job(
        dir.path(),
        hookgate::delivery::job::KIND_FORWARD,
        "anl_lease",
    )
    .await;
    let jobs = store
        .claim("/hooks/sigsentry", now_ms(), 1, 60_000)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].id, id);
    // The process "dies": no finish, no release.
    store.shutdown().await;
    drop(store);

    let up = Upstream::start().await;
    let hg = Hookgate::start(&config(dir.path(), &up.url("/app"), "")).await;
    let got = up.wait_for(1, Duration::from_secs(10)).await;
    let r = &got[0];
    assert_eq!(r.headers["x-hookgate-delivery-id"], id.as_str());
    assert_eq!(r.headers["x-hookgate-attempt"], "2");
    assert_eq!(r.uri, "/app/seeded");
    assert_eq!(r.body, analysis("anl_lease"));
    let detail = job_until(&hg, &id, "job done", |d| d["state"] == "done").await;
    let log = detail["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 2, "{detail}");
    assert_eq!(log[0]["outcome"], "interrupted");
    assert_eq!(log[1]["attempt"], 2);
    assert_eq!(log[1]["http_status"], 200);
    assert_eq!(log[1]["outcome"], "success");
    assert_eq!(up.received().len(), 1);
    hg.stop().await;
}

/// A job whose attempts keep crashing the process is dead-lettered after
/// three interrupted attempts instead of being attempted forever.
#[tokio::test]
async fn a_job_interrupted_three_times_is_dead_lettered_without_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id) = seed_job(
        dir.path(),
        hookgate::delivery::job::KIND_FORWARD,
        "anl_poison",
    )
    .await;
    for round in 0..3 {
        let jobs = store
            .claim("/hooks/sigsentry", now_ms() + round * 120_000, 1, 60_000)
            .await
            .unwrap();
        assert_eq!(jobs.len(), 1, "round {round}");
    }
    store.shutdown().await;
    drop(store);
    let up = Upstream::start().await;
    let hg = Hookgate::start(&config(dir.path(), &up.url("/app"), "")).await;
    let detail = job_until(&hg, &id, "job dead", |d| d["state"] == "dead").await;
    let err = detail["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("interrupted"), "{detail}");
    assert!(up.received().is_empty(), "nothing was sent upstream");
    // Replay gives it a fresh chance.
    let r = send(
        "POST",
        &hg.admin_url(&format!("/admin/jobs/{id}/replay")),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["replayed"], 1);
    up.wait_for(1, Duration::from_secs(10)).await;
    hg.stop().await;
}

#[tokio::test]
async fn a_job_of_unknown_kind_is_dead_lettered_without_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id) = seed_job(dir.path(), "from-the-future", "anl_kind").await;
    store.shutdown().await;
    drop(store);
    let up = Upstream::start().await;
    let hg = Hookgate::start(&config(dir.path(), &up.url("/app"), "")).await;
    let detail = job_until(&hg, &id, "job dead", |d| d["state"] == "dead").await;
    assert_eq!(detail["kind"], "from-the-future");
    let err = detail["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("unknown job kind \"from-the-future\""),
        "{detail}"
    );
    assert_eq!(detail["attempt_log"][0]["outcome"], "dead");
    assert!(up.received().is_empty(), "nothing was sent upstream");
    hg.stop().await;
}

/// `config` plus a second queue-mode route deduplicating on a header.
fn config_with_header_route(store: &Path, upstream: &str) -> String {
    config(store, upstream, "")
        + &format!(
            r#"
[[routes]]
path = "/hooks/by-header"
scheme = "sigsentry"
secrets = [{{ value = "{SECRET}" }}]
dedup = {{ key = "header:x-event-id", window = "24h" }}
[routes.upstream]
url = "{upstream}"
timeout = "2s"
"#
        )
}

async fn post_signed(hg: &Hookgate, path: &str, body: &[u8], extra: &[(&str, &str)]) -> Answer {
    let mut h = sign("sigsentry", SECRET, body, None, now());
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    post(&hg.url(path), &h, body.to_vec()).await
}

#[tokio::test]
async fn header_dedup_key_answers_duplicates_with_the_first_id() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    let hg = Hookgate::start(&config_with_header_route(dir.path(), &up.url("/app"))).await;
    let path = "/hooks/by-header";
    // The key is the header: the bodies differ (and are not even JSON).
    let first = post_signed(&hg, path, b"first body", &[("x-event-id", "evt_1")]).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    assert_eq!(first.json()["status"], "accepted");
    let second = post_signed(&hg, path, b"second body", &[("x-event-id", "evt_1")]).await;
    assert_eq!(second.status, 200, "{:?}", second.body);
    assert_eq!(second.json()["status"], "duplicate");
    assert_eq!(second.json()["id"], first.json()["id"]);
    // Another header value is another event, even with the first body.
    let third = post_signed(&hg, path, b"first body", &[("x-event-id", "evt_2")]).await;
    assert_eq!(third.status, 202, "{:?}", third.body);
    assert_ne!(third.json()["id"], first.json()["id"]);
    // An explicit dedup table makes the key required.
    let a = post_signed(&hg, path, b"no id", &[]).await;
    assert_eq!((a.status, a.code().as_str()), (400, "dedup_key_missing"));
    // Over 1 KiB is refused.
    let long = "e".repeat(1025);
    let a = post_signed(&hg, path, b"long id", &[("x-event-id", &long)]).await;
    assert_eq!((a.status, a.code().as_str()), (400, "dedup_key_invalid"));

    let got = up.wait_for(2, Duration::from_secs(10)).await;
    let mut bodies: Vec<_> = got.iter().map(|r| r.body.clone()).collect();
    bodies.sort();
    assert_eq!(bodies, [&b"first body"[..], &b"first body"[..]]);
    let ids = up.delivery_ids();
    assert!(ids.contains(first.json()["id"].as_str().unwrap()));
    assert!(ids.contains(third.json()["id"].as_str().unwrap()));
    hg.stop().await;
}

#[tokio::test]
async fn body_dedup_key_must_be_a_short_string_or_a_number() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    let hg = Hookgate::start(&config(dir.path(), &up.url("/app"), "")).await;
    let path = "/hooks/sigsentry";
    let long = "a".repeat(1025);
    for body in [
        r#"{"analysisId":{"nested":"anl_1"}}"#.to_string(),
        r#"{"analysisId":["anl_1"]}"#.to_string(),
        r#"{"analysisId":true}"#.to_string(),
        format!(r#"{{"analysisId":"{long}"}}"#),
    ] {
        let a = post_signed(&hg, path, body.as_bytes(), &[]).await;
        assert_eq!(
            (a.status, a.code().as_str()),
            (400, "dedup_key_invalid"),
            "{body}"
        );
    }
    let q = admin_get(&hg, "/admin/queues").await;
    assert_eq!(jobs_held(&q), 0, "nothing written: {q}");
    // The limits' other side: exactly 1 KiB, and a number, are ids.
    let kib = format!(r#"{{"analysisId":"{}"}}"#, "a".repeat(1024));
    let a = post_signed(&hg, path, kib.as_bytes(), &[]).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    let a = post_signed(&hg, path, br#"{"analysisId":42}"#, &[]).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    let a = post_signed(&hg, path, br#"{"analysisId": 42 , "x":1}"#, &[]).await;
    assert_eq!(
        (a.status, a.json()["status"].as_str()),
        (200, Some("duplicate")),
        "the number 42 is the same id however it is spelled"
    );
    up.wait_for(2, Duration::from_secs(10)).await;
    hg.stop().await;
}

#[tokio::test]
async fn bad_signatures_are_refused_in_queue_mode_without_queuing() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    let hg = Hookgate::start(&config(dir.path(), &up.url("/app"), "")).await;
    let body = analysis("anl_sig");
    let a = post(&hg.url("/hooks/sigsentry"), &[], body.clone()).await;
    assert_eq!((a.status, a.code().as_str()), (401, "signature_missing"));
    // Signed with another secret.
    let wrong = sign("sigsentry", "not-the-secret", &body, None, now());
    let a = post(&hg.url("/hooks/sigsentry"), &wrong, body.clone()).await;
    assert_eq!((a.status, a.code().as_str()), (401, "signature_mismatch"));
    // Signed correctly, but the body was changed afterwards.
    let good = sign("sigsentry", SECRET, &body, None, now());
    let a = post(&hg.url("/hooks/sigsentry"), &good, analysis("anl_sig2")).await;
    assert_eq!((a.status, a.code().as_str()), (401, "signature_mismatch"));

    let q = admin_get(&hg, "/admin/queues").await;
    let queued: u64 = q["queues"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["route"] == "/hooks/sigsentry")
        .map(|r| {
            r["pending"].as_u64().unwrap()
                + r["in_flight"].as_u64().unwrap()
                + r["dead"].as_u64().unwrap()
                + r["delivered"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(queued, 0, "nothing queued for the route: {q}");
    let jobs = admin_get(&hg, "/admin/jobs?route=%2Fhooks%2Fsigsentry").await;
    assert_eq!(jobs["items"].as_array().unwrap().len(), 0, "{jobs}");

    // Refusals recorded no event id: the same event, signed, is accepted.
    let a = post(&hg.url("/hooks/sigsentry"), &good, body.clone()).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    assert_eq!(a.json()["status"], "accepted");
    let got = up.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, body);
    hg.stop().await;
}

/// The engine holds at most 2 x concurrency claimed jobs (in flight plus a
/// buffer waiting for a permit); a buffered job that has not started when
/// hookgate stops is released, so it is claimable at once after a restart
/// instead of waiting out its lease.
#[tokio::test]
async fn buffered_jobs_are_bounded_and_released_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    up.set_default(Reply::delayed(Duration::from_millis(1500)));
    let toml = with_concurrency(config(dir.path(), &up.url("/app"), ""), 1);
    let hg = Hookgate::start(&toml).await;
    for i in 0..4 {
        assert_eq!(deliver(&hg, &format!("anl_b{i}")).await.status, 202);
    }
    up.wait_for(1, Duration::from_secs(10)).await;
    // One attempt in flight and one job buffered behind it: two held, the
    // other two still pending.
    let held = eventually(10, "two jobs held", || {
        let hg = &hg;
        async move {
            let jobs = admin_get(hg, "/admin/jobs?state=inflight").await;
            let n = jobs["items"].as_array().map_or(0, |j| j.len());
            (n == 2).then_some(jobs)
        }
    })
    .await;
    let held_ids: Vec<String> = held["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    let pending = admin_get(&hg, "/admin/jobs?state=pending").await;
    assert_eq!(pending["items"].as_array().unwrap().len(), 2, "{pending}");
    assert_eq!(up.received().len(), 1, "only one attempt at a time");

    // Stop while the first attempt runs: it finishes within the grace
    // period; the buffered one is released without an attempt.
    hg.stop().await;
    let store = hookgate::store::Store::open(hookgate::store::StoreOptions::sqlite(
        dir.path().join("hookgate.db"),
    ))
    .unwrap();
    let mut states = Vec::new();
    for id in &held_ids {
        let d = store.get_job(id).await.unwrap().unwrap();
        states.push((d.summary.state, d.summary.lease_until, d.attempts.len()));
    }
    states.sort();
    assert_eq!(
        states,
        vec![
            (hookgate::store::JobState::Pending, None, 0),
            (hookgate::store::JobState::Done, None, 1),
        ],
        "the attempted job is done, the buffered one pending with no lease"
    );
    store.shutdown().await;
}

/// While the store cannot commit (here: another process holds the database's
/// write lock), requests are answered 503 with `Retry-After` after
/// `server.store_timeout`, never 2xx; once the store is back, the sender's
/// retry is accepted or recognised as the late commit's duplicate, and the
/// event reaches the upstream exactly once.
#[tokio::test]
async fn store_that_cannot_commit_answers_503_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    let toml = format!(
        "[server]\nstore_timeout = \"1s\"\n{}",
        config(dir.path(), &up.url("/app"), "")
    );
    let hg = Hookgate::start(&toml).await;
    // The store is up: warm it with one event.
    assert_eq!(deliver(&hg, "anl_before").await.status, 202);
    up.wait_for(1, Duration::from_secs(10)).await;

    let lock = rusqlite::Connection::open(dir.path().join("hookgate.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let a = deliver(&hg, "anl_locked").await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (503, "unavailable"),
        "{:?}",
        a.body
    );
    let retry_after: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after > 0);
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);

    // The sender retries: accepted, or the duplicate of the commit that
    // landed after the 503.
    let b = deliver(&hg, "anl_locked").await;
    assert!(
        matches!(
            (b.status, b.json()["status"].as_str()),
            (202, Some("accepted")) | (200, Some("duplicate"))
        ),
        "{} {:?}",
        b.status,
        b.body
    );
    let got = up.wait_for(2, Duration::from_secs(10)).await;
    let bodies: Vec<_> = got
        .iter()
        .filter(|r| r.body == analysis("anl_locked"))
        .collect();
    assert_eq!(bodies.len(), 1, "delivered exactly once");
    hg.stop().await;
    assert_eq!(up.received().len(), 2);
}

/// Jobs in any state over every queue of an `/admin/queues` answer
/// (configured queues are listed even while empty).
fn jobs_held(queues: &serde_json::Value) -> u64 {
    queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            ["pending", "in_flight", "dead", "delivered"]
                .iter()
                .map(|k| q[*k].as_u64().unwrap())
                .sum::<u64>()
        })
        .sum()
}
