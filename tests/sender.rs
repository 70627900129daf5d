//! The sender (SPEC §2) end to end: hookgate on 127.0.0.1:0 with a real
//! SQLite file, real receiving servers, the seeds' own verification code
//! (seed 000's Python snippet, the `standardwebhooks` package).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::sender::{config, KEY, MASTER, READER, TENANT};
use common::*;
use serde_json::{json, Value};

const HMAC_SECRET: &str = "hmac-secret-5f4dcc3b5aa765d61d8327deb882cf99";
const BEARER: &str = "Bearer tok_live_7d0e1c5b";

/// Loopback is where the test servers listen: allowed here, refused by
/// default (see `ssrf_guard_refuses_internal_addresses`).
const ALLOW_LOOPBACK: &str = r#"allow_cidrs = ["127.0.0.0/8"]"#;

async fn api(h: &Hookgate, method: &str, path: &str, key: &str, body: Value) -> Answer {
    api_with(h, method, path, key, &[], body).await
}

async fn api_with(
    h: &Hookgate,
    method: &str,
    path: &str,
    key: &str,
    extra: &[(&str, &str)],
    body: Value,
) -> Answer {
    let mut headers = vec![
        ("authorization".to_string(), format!("Bearer {key}")),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    for (k, v) in extra {
        headers.push((k.to_string(), v.to_string()));
    }
    let body = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body).unwrap()
    };
    send(method, &h.admin_url(path), &headers, body).await
}

fn code(a: &Answer) -> (u16, String) {
    let v = a.json();
    assert_eq!(v["success"], json!(false), "{v}");
    (
        a.status,
        v["error"]["code"].as_str().unwrap_or_default().to_string(),
    )
}

async fn create_channel(h: &Hookgate, ty: &str, threshold: &str, creds: Value) -> String {
    let a = api(
        h,
        "POST",
        "/v1/config/notifications",
        KEY,
        json!({"type": ty, "name": format!("#{ty}"), "credentials": creds, "severityThreshold": threshold}),
    )
    .await;
    assert_eq!(a.status, 201, "{:?}", a.json());
    let v = a.json();
    assert_eq!(v["success"], json!(true));
    v["data"]["id"].as_str().unwrap().to_string()
}

fn analysis_with(id: &str, severity: &str) -> Vec<u8> {
    String::from_utf8(analysis(id))
        .unwrap()
        .replace(
            "\"severity\":\"high\"",
            &format!("\"severity\":\"{severity}\""),
        )
        .into_bytes()
}

async fn post_analysis(h: &Hookgate, body: Vec<u8>) -> Answer {
    let headers = vec![
        ("authorization".to_string(), format!("Bearer {KEY}")),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    send("POST", &h.admin_url("/v1/analyses"), &headers, body).await
}

/// Polls `GET path` until `done` holds for its `data`, or panics.
async fn until(
    h: &Hookgate,
    path: &str,
    deadline: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let end = Instant::now() + deadline;
    loop {
        let a = api(h, "GET", path, KEY, Value::Null).await;
        let v = a.json();
        if done(&v["data"]) {
            return v["data"].clone();
        }
        assert!(Instant::now() < end, "{path} never got there: {v}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn python(script: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sender")
        .join(script);
    let mut child = std::process::Command::new("python3")
        .arg(path)
        .args(args)
        .env("PYTHONPATH", python_packages())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// A directory holding the Python packages the tests use (the
/// `standardwebhooks` reference library, the `aiosmtpd` SMTP server),
/// installed once from PyPI under `target/` unless already there.
fn python_packages() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/python-test-packages");
        let has = |pp: &Path| {
            std::process::Command::new("python3")
                .args(["-c", "import standardwebhooks, aiosmtpd"])
                .env("PYTHONPATH", pp)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !has(&dir) {
            let st = std::process::Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--target",
                ])
                .arg(&dir)
                .args(["standardwebhooks==1.0.0", "aiosmtpd==1.4.6"])
                .status()
                .expect("pip runs");
            assert!(
                st.success() && has(&dir),
                "cannot install standardwebhooks and aiosmtpd"
            );
        }
        dir
    })
    .clone()
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing in {:?}", r.headers))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn channels_crud_and_every_error_code_of_seed_001() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hookgate::start(&config(dir.path(), ALLOW_LOOPBACK)).await;
    let slack_url = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX";
    let id = create_channel(&h, "slack", "high", json!({ "webhookUrl": slack_url })).await;
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");

    // Reads: type, name, threshold, active, health, a masked hint; never
    // the credentials.
    let one = api(
        &h,
        "GET",
        &format!("/v1/config/notifications/{id}"),
        READER,
        Value::Null,
    )
    .await;
    assert_eq!(one.status, 200);
    let d = &one.json()["data"];
    assert_eq!(d["type"], "slack");
    assert_eq!(d["name"], "#slack");
    assert_eq!(d["severityThreshold"], "high");
    assert_eq!(d["active"], true);
    assert_eq!(d["health"], "Pending");
    assert_eq!(d["credentialsHint"], "https://hooks.slack.com/…");
    let list = api(&h, "GET", "/v1/config/notifications", READER, Value::Null).await;
    assert_eq!(list.json()["data"].as_array().unwrap().len(), 1);
    for a in [&one, &list] {
        let text = String::from_utf8_lossy(&a.body);
        assert!(
            !text.contains("XXXXSECRETXXXX") && !text.contains("T000"),
            "{text}"
        );
    }

    // PUT renames and rotates the credentials.
    let put = api(
        &h,
        "PUT",
        &format!("/v1/config/notifications/{id}"),
        KEY,
        json!({"name": "#renamed", "credentials": {"webhookUrl": "https://hooks.slack.com/services/T1/B1/NEWSECRET"}, "severityThreshold": "low"}),
    )
    .await;
    assert_eq!(put.status, 200, "{:?}", put.json());
    assert_eq!(put.json()["data"]["name"], "#renamed");
    assert_eq!(put.json()["data"]["severityThreshold"], "low");
    assert!(!String::from_utf8_lossy(&put.body).contains("NEWSECRET"));

    // 400 VALIDATION_ERROR, naming the field.
    let long = "x".repeat(256);
    for (body, field) in [
        (
            json!({"name": "a", "credentials": {"webhookUrl": slack_url}, "severityThreshold": "high"}),
            "type",
        ),
        (
            json!({"type": "pager", "name": "a", "credentials": {}, "severityThreshold": "high"}),
            "type",
        ),
        (
            json!({"type": "slack", "name": long, "credentials": {"webhookUrl": slack_url}, "severityThreshold": "high"}),
            "name",
        ),
        (
            json!({"type": "slack", "name": "", "credentials": {"webhookUrl": slack_url}, "severityThreshold": "high"}),
            "name",
        ),
        (
            json!({"type": "slack", "name": "a", "credentials": {"webhookUrl": "not a url"}, "severityThreshold": "high"}),
            "credentials.webhookUrl",
        ),
        (
            json!({"type": "slack", "name": "a", "credentials": {}, "severityThreshold": "high"}),
            "credentials.webhookUrl",
        ),
        (
            json!({"type": "webhook", "name": "a", "credentials": {"url": "ftp://x.test/"}, "severityThreshold": "high"}),
            "credentials.url",
        ),
        (
            json!({"type": "email", "name": "a", "credentials": {"recipients": "not-an-address"}, "severityThreshold": "high"}),
            "credentials.recipients[0]",
        ),
        (
            json!({"type": "slack", "name": "a", "credentials": {"webhookUrl": slack_url}, "severityThreshold": "urgent"}),
            "severityThreshold",
        ),
        (
            json!({"type": "slack", "name": "a", "credentials": {"webhookUrl": slack_url}}),
            "severityThreshold",
        ),
    ] {
        let a = api(&h, "POST", "/v1/config/notifications", KEY, body.clone()).await;
        assert_eq!(code(&a), (400, "VALIDATION_ERROR".into()), "{body}");
        let msg = a.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.starts_with(&format!("{field}:")), "{body}: {msg}");
    }
    let a = send(
        "POST",
        &h.admin_url("/v1/config/notifications"),
        &[("authorization".into(), format!("Bearer {KEY}"))],
        "{not json",
    )
    .await;
    assert_eq!(code(&a), (400, "VALIDATION_ERROR".into()));

    // 401 UNAUTHORIZED: no key, a wrong key.
    let a = send(
        "GET",
        &h.admin_url("/v1/config/notifications"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(code(&a), (401, "UNAUTHORIZED".into()));
    let a = api(
        &h,
        "GET",
        "/v1/config/notifications",
        "ss_wrong",
        Value::Null,
    )
    .await;
    assert_eq!(code(&a), (401, "UNAUTHORIZED".into()));
    // 403 FORBIDDEN: a key without config:write.
    let a = api(
        &h,
        "POST",
        "/v1/config/notifications",
        READER,
        json!({"type": "slack", "name": "a", "credentials": {"webhookUrl": slack_url}, "severityThreshold": "high"}),
    )
    .await;
    assert_eq!(code(&a), (403, "FORBIDDEN".into()));
    // 404 NOT_FOUND: unknown id, and another project's channel.
    let a = api(
        &h,
        "GET",
        "/v1/config/notifications/9b7a3b2c-2e6e-4f1f-8c5a-1b2c3d4e5f6a",
        KEY,
        Value::Null,
    )
    .await;
    assert_eq!(code(&a), (404, "NOT_FOUND".into()));
    let a = api_with(
        &h,
        "GET",
        &format!("/v1/config/notifications/{id}"),
        TENANT,
        &[("x-project-id", "prj_other")],
        Value::Null,
    )
    .await;
    assert_eq!(code(&a), (404, "NOT_FOUND".into()));
    // The tenant key sees it when it names the project.
    let a = api_with(
        &h,
        "GET",
        &format!("/v1/config/notifications/{id}"),
        TENANT,
        &[("x-project-id", "prj_def456")],
        Value::Null,
    )
    .await;
    assert_eq!(a.status, 200);

    // 403 QUOTA_EXCEEDED at sender.channel_quota (4 per project).
    for _ in 0..3 {
        create_channel(
            &h,
            "discord",
            "low",
            json!({"webhookUrl": "https://discord.com/api/webhooks/1/abc"}),
        )
        .await;
    }
    let a = api(
        &h,
        "POST",
        "/v1/config/notifications",
        KEY,
        json!({"type": "slack", "name": "a", "credentials": {"webhookUrl": slack_url}, "severityThreshold": "high"}),
    )
    .await;
    assert_eq!(code(&a), (403, "QUOTA_EXCEEDED".into()));
    // Another project has its own quota.
    let a = api_with(
        &h,
        "POST",
        "/v1/config/notifications",
        TENANT,
        &[("x-project-id", "prj_other")],
        json!({"type": "slack", "name": "a", "credentials": {"webhookUrl": slack_url}, "severityThreshold": "high"}),
    )
    .await;
    assert_eq!(a.status, 201);

    // DELETE, then it is gone.
    let a = api(
        &h,
        "DELETE",
        &format!("/v1/config/notifications/{id}"),
        KEY,
        Value::Null,
    )
    .await;
    assert_eq!(a.status, 200);
    let a = api(
        &h,
        "DELETE",
        &format!("/v1/config/notifications/{id}"),
        KEY,
        Value::Null,
    )
    .await;
    assert_eq!(code(&a), (404, "NOT_FOUND".into()));

    // The channels survive a restart, credentials sealed under the master key.
    h.stop().await;
    for f in ["hookgate.db", "hookgate.db-wal"] {
        let bytes = std::fs::read(dir.path().join(f)).unwrap_or_default();
        // The hint keeps the host; the secret path is sealed.
        assert!(
            !bytes.windows(14).any(|w| w == b"webhooks/1/abc"),
            "credentials are not stored in clear ({f})"
        );
    }
    let h = Hookgate::start(&config(dir.path(), ALLOW_LOOPBACK)).await;
    let list = api(&h, "GET", "/v1/config/notifications", KEY, Value::Null).await;
    assert_eq!(list.json()["data"].as_array().unwrap().len(), 3);
    h.stop().await;
}

#[tokio::test]
async fn an_analysis_fans_out_by_threshold_signed_as_seed_000_says() {
    let dir = tempfile::tempdir().unwrap();
    let generic = Upstream::start().await;
    let slack = Upstream::start().await;
    let discord = Upstream::start().await;
    let chat = Upstream::start().await;
    let h = Hookgate::start(&config(dir.path(), ALLOW_LOOPBACK)).await;
    let generic_id = create_channel(
        &h,
        "webhook",
        "high",
        json!({"url": generic.url("/sigsentry"), "authHeader": BEARER, "hmacSecret": HMAC_SECRET}),
    )
    .await;
    create_channel(
        &h,
        "slack",
        "critical",
        json!({"webhookUrl": slack.url("/services/T/B/X")}),
    )
    .await;
    create_channel(
        &h,
        "discord",
        "low",
        json!({"webhookUrl": discord.url("/api/webhooks/1/abc")}),
    )
    .await;
    create_channel(
        &h,
        "google_chat",
        "medium",
        json!({"webhookUrl": chat.url("/v1/spaces/S/messages?key=k")}),
    )
    .await;

    let body = analysis("anl_fanout_1");
    let a = post_analysis(&h, body.clone()).await;
    assert_eq!(a.status, 202, "{:?}", a.json());
    assert_eq!(
        a.json()["data"]["deliveries"],
        3,
        "high meets high, low, medium; not critical"
    );

    let got = generic.wait_for(1, Duration::from_secs(10)).await;
    let r = &got[0];
    assert_eq!(r.method, http::Method::POST);
    assert_eq!(r.uri, "/sigsentry");
    assert_eq!(&r.body[..], &body[..], "the analysis exactly as posted");
    assert_eq!(
        header(r, "authorization"),
        BEARER,
        "the Bearer header arrives intact"
    );
    assert_eq!(header(r, "content-type"), "application/json");
    let sig = header(r, "x-sigsentry-signature");
    let out = python("verify_sigsentry.py", &[HMAC_SECRET, sig], &r.body);
    assert!(out.status.success(), "seed 000's snippet refuses: {out:?}");
    let out = python(
        "verify_sigsentry.py",
        &["another-secret-entirely", sig],
        &r.body,
    );
    assert!(!out.status.success(), "the snippet refuses another secret");

    let d = &discord.wait_for(1, Duration::from_secs(10)).await[0];
    let v: Value = serde_json::from_slice(&d.body).unwrap();
    assert!(v["embeds"][0]["title"].as_str().is_some(), "{v}");
    assert_eq!(v["allowed_mentions"]["parse"], json!([]));
    let g = &chat.wait_for(1, Duration::from_secs(10)).await[0];
    assert_eq!(g.uri, "/v1/spaces/S/messages?key=k");
    let v: Value = serde_json::from_slice(&g.body).unwrap();
    assert!(v["cardsV2"].is_array() && v["text"].is_string(), "{v}");

    // A critical one reaches Slack too, with its native message.
    let a = post_analysis(&h, analysis_with("anl_fanout_2", "critical")).await;
    assert_eq!(a.json()["data"]["deliveries"], 4);
    let s = &slack.wait_for(1, Duration::from_secs(10)).await[0];
    let v: Value = serde_json::from_slice(&s.body).unwrap();
    assert!(v["text"].is_string() && v["blocks"].is_array(), "{v}");

    // The same analysisId again: a duplicate, nothing more is sent.
    let a = post_analysis(&h, body.clone()).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["data"]["duplicate"], true);
    generic.wait_for(2, Duration::from_secs(10)).await;
    let deliveries = until(
        &h,
        &format!("/v1/config/notifications/{generic_id}/deliveries"),
        Duration::from_secs(10),
        |d| {
            d.as_array()
                .is_some_and(|a| a.len() == 2 && a.iter().all(|x| x["status"] == "delivered"))
        },
    )
    .await;
    let newest = &deliveries[0];
    assert_eq!(newest["eventId"], "anl_fanout_2");
    assert_eq!(newest["eventType"], "analysis.critical");
    assert_eq!(newest["attempts"], 1);
    assert_eq!(newest["httpStatus"], 200);
    assert_eq!(generic.received().len(), 2);

    // Validation of the analysis, and its scope.
    let mut bad: Value = serde_json::from_slice(&body).unwrap();
    bad["severity"] = json!("urgent");
    let a = post_analysis(&h, serde_json::to_vec(&bad).unwrap()).await;
    assert_eq!(code(&a), (400, "VALIDATION_ERROR".into()));
    let mut other: Value = serde_json::from_slice(&body).unwrap();
    other["projectId"] = json!("prj_not_mine");
    let a = post_analysis(&h, serde_json::to_vec(&other).unwrap()).await;
    assert_eq!(code(&a), (403, "FORBIDDEN".into()));
    let a = api(
        &h,
        "POST",
        "/v1/analyses",
        READER,
        serde_json::from_slice(&body).unwrap(),
    )
    .await;
    assert_eq!(
        code(&a),
        (403, "FORBIDDEN".into()),
        "events:write is needed"
    );
    h.stop().await;
}

#[tokio::test]
async fn retries_honour_retry_after_and_exhaustion_disables_until_reenabled() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = Upstream::start().await;
    let dead = Upstream::start().await;
    let gone = Upstream::start().await;
    let h = Hookgate::start(&config(dir.path(), ALLOW_LOOPBACK)).await;
    let flaky_id = create_channel(&h, "webhook", "low", json!({"url": flaky.url("/hook")})).await;
    let dead_id = create_channel(&h, "webhook", "low", json!({"url": dead.url("/hook")})).await;
    let gone_id = create_channel(
        &h,
        "slack",
        "low",
        json!({"webhookUrl": gone.url("/services/x")}),
    )
    .await;
    flaky.push(Reply {
        headers: vec![("retry-after", "1")],
        ..Reply::status(503)
    });
    dead.set_default(Reply::status(500));
    gone.set_default(Reply::status(404));

    let a = post_analysis(&h, analysis("anl_retry_1")).await;
    assert_eq!(a.json()["data"]["deliveries"], 3);

    // 503 + Retry-After: 1 with a 200ms schedule: clamped to twice the
    // delay (400ms), so the second attempt comes later than the schedule's.
    flaky.wait_for(1, Duration::from_secs(10)).await;
    let first = Instant::now();
    flaky.wait_for(2, Duration::from_secs(10)).await;
    assert!(
        first.elapsed() >= Duration::from_millis(300),
        "{:?}",
        first.elapsed()
    );
    let v = until(
        &h,
        &format!("/v1/config/notifications/{flaky_id}"),
        Duration::from_secs(10),
        |d| d["health"] == "Healthy",
    )
    .await;
    assert!(v["lastDeliveryAt"].is_string());

    // Slack's 404 can never succeed: one attempt, failed, not retried.
    let d = until(
        &h,
        &format!("/v1/config/notifications/{gone_id}/deliveries"),
        Duration::from_secs(10),
        |d| d[0]["status"] == "failed",
    )
    .await;
    assert_eq!(d[0]["attempts"], 1);
    assert_eq!(d[0]["httpStatus"], 404);
    assert_eq!(gone.received().len(), 1);

    // 500 five times: exhausted, and the channel auto-disabled.
    let d = until(
        &h,
        &format!("/v1/config/notifications/{dead_id}/deliveries"),
        Duration::from_secs(20),
        |d| d[0]["status"] == "exhausted",
    )
    .await;
    assert_eq!(d[0]["attempts"], 5);
    assert_eq!(d[0]["httpStatus"], 500);
    assert_eq!(dead.received().len(), 5);
    let v = until(
        &h,
        &format!("/v1/config/notifications/{dead_id}"),
        Duration::from_secs(5),
        |d| d["health"] == "Disabled",
    )
    .await;
    assert!(v["autoDisabledAt"].is_string());
    assert_eq!(
        v["active"], true,
        "disabled by the sender, not switched off"
    );

    // While disabled it gets nothing.
    let a = post_analysis(&h, analysis("anl_retry_2")).await;
    assert_eq!(a.json()["data"]["deliveries"], 2, "flaky and gone only");
    // Re-enabling clears the auto-disabled state; the next one goes out.
    dead.set_default(Reply::status(200));
    let a = api(
        &h,
        "PUT",
        &format!("/v1/config/notifications/{dead_id}"),
        KEY,
        json!({"active": true}),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    assert!(a.json()["data"]["autoDisabledAt"].is_null());
    let a = post_analysis(&h, analysis("anl_retry_3")).await;
    assert_eq!(a.json()["data"]["deliveries"], 3);
    until(
        &h,
        &format!("/v1/config/notifications/{dead_id}"),
        Duration::from_secs(10),
        |d| d["health"] == "Healthy",
    )
    .await;

    // Switching a channel off pauses it without deleting it.
    let a = api(
        &h,
        "PUT",
        &format!("/v1/config/notifications/{flaky_id}"),
        KEY,
        json!({"active": false}),
    )
    .await;
    assert_eq!(a.json()["data"]["health"], "Disabled");
    let a = post_analysis(&h, analysis("anl_retry_4")).await;
    assert_eq!(a.json()["data"]["deliveries"], 2);

    let metrics = send("GET", &h.admin_url("/metrics"), &[], Vec::new()).await;
    let text = String::from_utf8_lossy(&metrics.body);
    for series in [
        r#"hookgate_sender_attempts_total{outcome="exhausted",type="webhook"} 1"#,
        r#"hookgate_sender_attempts_total{outcome="failed",type="slack"}"#,
        r#"hookgate_sender_destinations{health="Healthy",type="webhook"} 1"#,
        // Every pair is exported, 0 where there is none.
        r#"hookgate_sender_destinations{health="Disabled",type="email"} 0"#,
    ] {
        assert!(text.contains(series), "{series} in\n{text}");
    }
    h.stop().await;
}

#[tokio::test]
async fn endpoints_get_standard_webhooks_deliveries_and_secret_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Upstream::start().await;
    let other = Upstream::start().await;
    let h = Hookgate::start(&config(dir.path(), ALLOW_LOOPBACK)).await;
    let a = api(
        &h,
        "POST",
        "/v1/webhooks",
        KEY,
        json!({"url": rx.url("/webhooks"), "description": "Jira ticket creator", "events": ["incident.created", "incident.resolved"]}),
    )
    .await;
    assert_eq!(a.status, 201, "{:?}", a.json());
    let created = a.json()["data"].clone();
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(created["health"], "Pending");
    let a = api(
        &h,
        "POST",
        "/v1/webhooks",
        KEY,
        json!({"url": other.url("/"), "events": ["sla.breach_warning"]}),
    )
    .await;
    assert_eq!(a.status, 201);

    // The secret is shown once: never again.
    for path in ["/v1/webhooks".to_string(), format!("/v1/webhooks/{id}")] {
        let a = api(&h, "GET", &path, KEY, Value::Null).await;
        assert!(
            !String::from_utf8_lossy(&a.body).contains(&secret[6..]),
            "{path}"
        );
    }
    let list = api(&h, "GET", "/v1/webhooks", KEY, Value::Null).await;
    let row = &list.json()["data"][0];
    assert_eq!(row["url"], rx.url("/webhooks"));
    assert_eq!(row["description"], "Jira ticket creator");
    assert_eq!(
        row["events"],
        json!(["incident.created", "incident.resolved"])
    );
    assert_eq!(row["isActive"], true);

    // An event goes to the subscribed endpoint only, in seed 002's envelope.
    rx.push(Reply::status(500));
    let a = api(&h, "POST", "/v1/events", KEY, json!({"type": "incident.created", "data": {"incident_id": "inc_1", "title": "High Latency"}})).await;
    assert_eq!(a.status, 202, "{:?}", a.json());
    assert_eq!(a.json()["data"]["deliveries"], 1);
    let event_id = a.json()["data"]["id"].as_str().unwrap().to_string();
    assert!(event_id.starts_with("evt_"));
    let got = rx.wait_for(2, Duration::from_secs(10)).await;
    let env: Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(env["id"], event_id);
    assert_eq!(env["type"], "incident.created");
    assert_eq!(env["data"]["incident_id"], "inc_1");
    assert!(env["created_at"].as_str().unwrap().ends_with('Z'));
    // webhook-id is stable across retries; each attempt is signed anew.
    assert_eq!(header(&got[0], "webhook-id"), event_id);
    assert_eq!(header(&got[1], "webhook-id"), event_id);
    for r in &got {
        let out = python(
            "verify_standardwebhooks.py",
            &[
                &secret,
                header(r, "webhook-id"),
                header(r, "webhook-timestamp"),
                header(r, "webhook-signature"),
            ],
            &r.body,
        );
        assert!(out.status.success(), "standardwebhooks refuses: {out:?}");
    }
    assert_eq!(other.received().len(), 0);
    let d = until(
        &h,
        &format!("/v1/webhooks/{id}/deliveries"),
        Duration::from_secs(10),
        |d| d[0]["status"] == "delivered",
    )
    .await;
    assert_eq!(d[0]["eventType"], "incident.created");
    assert_eq!(d[0]["eventId"], event_id);
    assert_eq!(d[0]["attempts"], 2);
    assert_eq!(d[0]["httpStatus"], 200);
    until(
        &h,
        &format!("/v1/webhooks/{id}"),
        Duration::from_secs(5),
        |d| d["health"] == "Healthy",
    )
    .await;

    // Rotation: during the grace both secrets sign, and each verifies.
    let a = api(
        &h,
        "POST",
        &format!("/v1/webhooks/{id}/rotate-secret"),
        KEY,
        Value::Null,
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let new_secret = a.json()["data"]["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    let a = api(
        &h,
        "POST",
        "/v1/events",
        KEY,
        json!({"type": "incident.resolved", "data": {}}),
    )
    .await;
    assert_eq!(a.json()["data"]["deliveries"], 1);
    let r = rx.wait_for(3, Duration::from_secs(10)).await.pop().unwrap();
    assert_eq!(header(&r, "webhook-signature").split(' ').count(), 2);
    for s in [&secret, &new_secret] {
        let out = python(
            "verify_standardwebhooks.py",
            &[
                s,
                header(&r, "webhook-id"),
                header(&r, "webhook-timestamp"),
                header(&r, "webhook-signature"),
            ],
            &r.body,
        );
        assert!(out.status.success(), "{out:?}");
    }

    // The seed's own PATCH switches it off and on.
    let a = api(
        &h,
        "PATCH",
        &format!("/api/sch/org/webhooks/{id}"),
        KEY,
        json!({"isActive": false}),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    assert_eq!(a.json()["data"]["isActive"], false);
    let a = api(
        &h,
        "POST",
        "/v1/events",
        KEY,
        json!({"type": "incident.created", "data": {}}),
    )
    .await;
    assert_eq!(a.json()["data"]["deliveries"], 0);
    let a = api(
        &h,
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        KEY,
        json!({"isActive": true, "events": ["*"]}),
    )
    .await;
    assert_eq!(a.json()["data"]["isActive"], true);
    // An idempotent event (caller-chosen id) is deduplicated.
    let a = api(
        &h,
        "POST",
        "/v1/events",
        KEY,
        json!({"id": "evt_fixed_1", "type": "anything.at_all", "data": {}}),
    )
    .await;
    assert_eq!(a.json()["data"]["deliveries"], 1);
    let a = api(
        &h,
        "POST",
        "/v1/events",
        KEY,
        json!({"id": "evt_fixed_1", "type": "anything.at_all", "data": {}}),
    )
    .await;
    assert_eq!(
        (a.status, a.json()["data"]["duplicate"].clone()),
        (200, json!(true))
    );
    rx.wait_for(4, Duration::from_secs(10)).await;

    // "Send test" reaches the endpoint.
    let a = api(
        &h,
        "POST",
        &format!("/v1/webhooks/{id}/test"),
        KEY,
        Value::Null,
    )
    .await;
    assert_eq!(a.status, 202, "{:?}", a.json());
    let r = rx.wait_for(5, Duration::from_secs(10)).await.pop().unwrap();
    let env: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(env["type"], "webhook.test");
    h.stop().await;
}

#[tokio::test]
async fn deleting_an_endpoint_cancels_its_pending_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Upstream::start().await;
    rx.set_default(Reply::status(503));
    // A long schedule: the delivery waits, pending, after its first attempt.
    let extra = format!("{ALLOW_LOOPBACK}\n");
    let toml = config(dir.path(), &extra).replace(
        r#"retry_schedule = ["200ms", "200ms", "200ms", "200ms"]"#,
        r#"retry_schedule = ["1h"]"#,
    );
    let h = Hookgate::start(&toml).await;
    let a = api(
        &h,
        "POST",
        "/v1/webhooks",
        KEY,
        json!({"url": rx.url("/"), "events": ["a.b"]}),
    )
    .await;
    let id = a.json()["data"]["id"].as_str().unwrap().to_string();
    let a = api(
        &h,
        "POST",
        "/v1/events",
        KEY,
        json!({"type": "a.b", "data": {}}),
    )
    .await;
    assert_eq!(a.json()["data"]["deliveries"], 1);
    rx.wait_for(1, Duration::from_secs(10)).await;
    let d = until(
        &h,
        &format!("/v1/webhooks/{id}/deliveries"),
        Duration::from_secs(10),
        // The list takes the leases just before it reads the rows, so an
        // attempt recorded in between shows in flight (no retry time yet)
        // with its status: wait for the retry's time too.
        |d| {
            d[0]["status"] == "pending"
                && d[0]["httpStatus"] == 503
                && d[0]["nextAttemptAt"].is_string()
        },
    )
    .await;
    assert_eq!(d[0]["attempts"], 1);
    until(
        &h,
        &format!("/v1/webhooks/{id}"),
        Duration::from_secs(5),
        |d| d["health"] == "Failing",
    )
    .await;
    let jobs = send(
        "GET",
        &h.admin_url(&format!("/admin/jobs?route=sender/{id}")),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(jobs.json()["items"].as_array().unwrap().len(), 1);

    let a = api(
        &h,
        "DELETE",
        &format!("/v1/webhooks/{id}"),
        KEY,
        Value::Null,
    )
    .await;
    assert_eq!(a.status, 200);
    let jobs = send(
        "GET",
        &h.admin_url(&format!("/admin/jobs?route=sender/{id}")),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(
        jobs.json()["items"],
        json!([]),
        "the pending delivery is cancelled"
    );
    let a = api(
        &h,
        "GET",
        &format!("/v1/webhooks/{id}/deliveries"),
        KEY,
        Value::Null,
    )
    .await;
    assert_eq!(code(&a), (404, "NOT_FOUND".into()));
    h.stop().await;
}

#[tokio::test]
async fn ssrf_guard_refuses_internal_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let internal = Upstream::start().await;
    // No allow_cidrs: loopback is refused where it is connected to.
    let h = Hookgate::start(&config(dir.path(), "")).await;
    let id = create_channel(&h, "webhook", "low", json!({"url": internal.url("/admin")})).await;
    let via_name = create_channel(
        &h,
        "webhook",
        "low",
        json!({"url": format!("http://localhost:{}/x", internal.addr.port())}),
    )
    .await;
    let a = post_analysis(&h, analysis("anl_ssrf_1")).await;
    assert_eq!(a.json()["data"]["deliveries"], 2);
    for ch in [&id, &via_name] {
        let d = until(
            &h,
            &format!("/v1/config/notifications/{ch}/deliveries"),
            Duration::from_secs(10),
            |d| d[0]["status"] == "failed",
        )
        .await;
        let err = d[0]["error"].as_str().unwrap();
        assert!(err.contains("SSRF"), "{err}");
        assert_eq!(d[0]["attempts"], 1, "a refusal is permanent, not retried");
    }
    assert_eq!(
        internal.received().len(),
        0,
        "nothing reached the internal server"
    );
    h.stop().await;
}

#[tokio::test]
async fn sender_refuses_to_start_without_a_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let toml =
        config(dir.path(), "").replace(&format!("master_key = {{ value = \"{MASTER}\" }}"), "");
    let err = hookgate::config::from_toml(&toml).unwrap_err().to_string();
    assert!(err.contains("sender.master_key: required"), "{err}");
    let toml = config(dir.path(), "").replace(
        &format!("master_key = {{ value = \"{MASTER}\" }}"),
        r#"master_key = { value = "too-short" }"#,
    );
    let cfg = hookgate::config::from_toml(&toml).unwrap();
    let listeners = hookgate::Listeners {
        public: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let err = hookgate::run(
        cfg,
        listeners,
        hookgate::shutdown::Shutdown::new(),
        Default::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("sender.master_key") && !err.contains("too-short"),
        "{err}"
    );
}

/// A real SMTP server (aiosmtpd) writing what it receives to a Maildir.
struct Smtp {
    child: std::process::Child,
    port: u16,
    maildir: std::path::PathBuf,
}

impl Smtp {
    /// `tls`: `None` plain, `Some(("--tlscert", "--tlskey", ..))` STARTTLS
    /// required, `Some(("--smtpscert", "--smtpskey", ..))` implicit TLS.
    fn start(dir: &Path, tls: Option<(&str, &str, &Path, &Path)>) -> Smtp {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let maildir = dir.join("maildir");
        let mut cmd = std::process::Command::new("python3");
        cmd.args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")]);
        if let Some((cert_flag, key_flag, cert, key)) = tls {
            cmd.arg(cert_flag).arg(cert).arg(key_flag).arg(key);
        }
        let child = cmd
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .env("PYTHONPATH", python_packages())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("aiosmtpd starts");
        let end = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "aiosmtpd did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Smtp {
            child,
            port,
            maildir,
        }
    }

    /// The messages received so far, raw.
    fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(self.maildir.join(sub)) {
                for e in rd.flatten() {
                    out.push(std::fs::read_to_string(e.path()).unwrap());
                }
            }
        }
        out
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it, as files:
/// (ca, cert, key).
fn smtp_certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "hookgate test SMTP CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "smtp");
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("smtp.pem"),
        dir.join("smtp.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// An analysis to an email channel through a real SMTP server, with
/// `security` = none, starttls or tls.
async fn email_round_trip(security: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = smtp_certificates(dir.path());
    let tls = match security {
        "starttls" => Some(("--tlscert", "--tlskey", cert.as_path(), key.as_path())),
        "tls" => Some(("--smtpscert", "--smtpskey", cert.as_path(), key.as_path())),
        _ => None,
    };
    let smtp = Smtp::start(dir.path(), tls);
    let extra = format!(
        "[sender.smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"{security}\"\nca_file = \"{}\"\nfrom = \"SigSentry <alerts@example.com>\"\n",
        smtp.port,
        ca.display()
    );
    // [sender.smtp] is a table: it goes after the [sender] keys.
    let toml = config(dir.path(), ALLOW_LOOPBACK).replacen(
        "\n[[api_keys]]",
        &format!("\n{extra}\n[[api_keys]]"),
        1,
    );
    let h = Hookgate::start(&toml).await;
    let id = create_channel(
        &h,
        "email",
        "high",
        json!({"recipients": "alice@example.com, bob@example.org"}),
    )
    .await;
    let one = api(
        &h,
        "GET",
        &format!("/v1/config/notifications/{id}"),
        KEY,
        Value::Null,
    )
    .await;
    assert_eq!(one.json()["data"]["credentialsHint"], "a…@example.com (+1)");
    let a = post_analysis(&h, analysis_with("anl_mail_1", "critical")).await;
    assert_eq!(a.json()["data"]["deliveries"], 1);
    let d = until(
        &h,
        &format!("/v1/config/notifications/{id}/deliveries"),
        Duration::from_secs(20),
        |d| d[0]["status"] == "delivered" || d[0]["status"] == "failed",
    )
    .await;
    assert_eq!(d[0]["status"], "delivered", "{d}");
    assert_eq!(d[0]["httpStatus"], 250, "the SMTP reply is recorded");
    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let m = &msgs[0];
    for want in [
        "From: SigSentry <alerts@example.com>",
        "alice@example.com",
        "bob@example.org",
        "Subject: [SigSentry] CRITICAL",
        "multipart/alternative",
        "Content-Type: text/plain",
        "Content-Type: text/html",
    ] {
        assert!(m.contains(want), "{want} not in\n{m}");
    }
    h.stop().await;
}

#[tokio::test]
async fn email_over_plain_smtp_carries_plain_text_and_html() {
    email_round_trip("none").await;
}

#[tokio::test]
async fn email_over_starttls() {
    email_round_trip("starttls").await;
}

#[tokio::test]
async fn email_over_implicit_tls() {
    email_round_trip("tls").await;
}
/// The binary, killed with SIGKILL right after acknowledging: every
/// delivery of every acknowledged analysis arrives after the restart. Its
/// logs and every API answer of the run are searched for each secret.
#[tokio::test]
async fn sigkill_after_202_loses_no_delivery_and_nothing_leaks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    // The receiver is down at first: its port is held, nothing listening.
    let port = ClosedPort::new();
    let addr = port.addr;
    let path = dir.path().join("hookgate.toml");
    let toml = config(dir.path(), ALLOW_LOOPBACK)
        .replace(
            r#"retry_schedule = ["200ms", "200ms", "200ms", "200ms"]"#,
            r#"retry_schedule = ["1s", "2s", "2s", "2s"]"#,
        )
        .replace("[store]", "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\nlevel = \"debug\"\n[store]");
    std::fs::write(&path, &toml).unwrap();
    let proc = spawn_binary(&path, &[]).wait_listening(Duration::from_secs(30));
    let h = Hookgate {
        public: proc.public,
        admin: proc.admin,
        shutdown: hookgate::shutdown::Shutdown::new(),
        task: tokio::spawn(async { Ok(()) }),
    };
    let mut answers: Vec<String> = Vec::new();
    let base = format!("http://{addr}");
    let secret_path = "T0SECRET/B0SECRET/XXSECRETXX";
    for (ty, creds) in [
        (
            "webhook",
            json!({"url": format!("{base}/generic"), "authHeader": BEARER, "hmacSecret": HMAC_SECRET}),
        ),
        (
            "slack",
            json!({"webhookUrl": format!("{base}/services/{secret_path}")}),
        ),
    ] {
        let a = api(
            &h,
            "POST",
            "/v1/config/notifications",
            KEY,
            json!({"type": ty, "name": ty, "credentials": creds, "severityThreshold": "low"}),
        )
        .await;
        assert_eq!(a.status, 201);
        answers.push(String::from_utf8_lossy(&a.body).into_owned());
    }
    let a = api(
        &h,
        "POST",
        "/v1/webhooks",
        KEY,
        json!({"url": format!("{base}/endpoint"), "events": ["*"]}),
    )
    .await;
    let whsec = a.json()["data"]["secret"].as_str().unwrap().to_string();
    const N: usize = 20;
    for i in 0..N {
        let a = post_analysis(&h, analysis(&format!("anl_kill_{i}"))).await;
        assert_eq!(a.status, 202);
        answers.push(String::from_utf8_lossy(&a.body).into_owned());
        let a = api(
            &h,
            "POST",
            "/v1/events",
            KEY,
            json!({"type": "incident.created", "data": {"n": i}}),
        )
        .await;
        assert_eq!(a.status, 202);
    }
    for path in ["/v1/config/notifications", "/v1/webhooks"] {
        let a = api(&h, "GET", path, KEY, Value::Null).await;
        answers.push(String::from_utf8_lossy(&a.body).into_owned());
    }
    // Errors echo nothing either.
    let a = api(&h, "GET", "/v1/webhooks", HMAC_SECRET, Value::Null).await;
    answers.push(String::from_utf8_lossy(&a.body).into_owned());
    let mut logs = proc.kill();

    let rx = Upstream::start_on(port);
    let proc = spawn_binary(&path, &[]).wait_listening(Duration::from_secs(30));
    let got = rx.wait_for(3 * N, Duration::from_secs(60)).await;
    let mut ids = std::collections::HashSet::new();
    for r in &got {
        if r.uri == "/generic" {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            ids.insert(format!("generic {}", v["analysisId"].as_str().unwrap()));
        } else if r.uri.starts_with("/services/") {
            continue;
        } else {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            ids.insert(format!("endpoint {}", v["data"]["n"]));
        }
    }
    let generic = ids.iter().filter(|i| i.starts_with("generic ")).count();
    let endpoint = ids.iter().filter(|i| i.starts_with("endpoint ")).count();
    let slack = got
        .iter()
        .filter(|r| r.uri.starts_with("/services/"))
        .count();
    assert_eq!(
        (generic, endpoint),
        (N, N),
        "every acknowledged analysis and event arrived"
    );
    assert!(slack >= N, "{slack} Slack deliveries");
    let h2 = Hookgate {
        public: proc.public,
        admin: proc.admin,
        shutdown: hookgate::shutdown::Shutdown::new(),
        task: tokio::spawn(async { Ok(()) }),
    };
    let list = api(&h2, "GET", "/v1/config/notifications", KEY, Value::Null).await;
    answers.push(String::from_utf8_lossy(&list.body).into_owned());
    for ch in list.json()["data"].as_array().unwrap() {
        let d = api(
            &h2,
            "GET",
            &format!(
                "/v1/config/notifications/{}/deliveries",
                ch["id"].as_str().unwrap()
            ),
            KEY,
            Value::Null,
        )
        .await;
        answers.push(String::from_utf8_lossy(&d.body).into_owned());
    }
    logs.extend(proc.kill());
    assert!(
        logs.iter().any(|l| l.contains("destination created")),
        "the logs were read"
    );
    for secret in [
        KEY,
        READER,
        TENANT,
        MASTER,
        HMAC_SECRET,
        "tok_live_7d0e1c5b",
        "XXSECRETXX",
        &whsec[6..],
    ] {
        for a in &answers {
            assert!(!a.contains(secret), "an API answer contains a secret: {a}");
        }
        for l in &logs {
            assert!(!l.contains(secret), "a log line contains a secret: {l}");
        }
    }
}

#[tokio::test]
async fn a_slow_endpoint_cannot_starve_the_others_and_redirects_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Upstream::start().await;
    slow.set_default(Reply::delayed(Duration::from_millis(1500)));
    let fast = Upstream::start().await;
    let moved = Upstream::start().await;
    moved.set_default(Reply {
        headers: vec![("location", "http://169.254.169.254/latest/meta-data/")],
        ..Reply::status(302)
    });
    let h = Hookgate::start(&config(dir.path(), ALLOW_LOOPBACK)).await;
    let slow_id = create_channel(&h, "webhook", "low", json!({"url": slow.url("/slow")})).await;
    let fast_id = create_channel(&h, "webhook", "low", json!({"url": fast.url("/fast")})).await;
    let moved_id = create_channel(&h, "webhook", "low", json!({"url": moved.url("/old")})).await;
    const N: usize = 12;
    for i in 0..N {
        let a = post_analysis(&h, analysis(&format!("anl_slow_{i}"))).await;
        assert_eq!(a.json()["data"]["deliveries"], 3);
    }
    // The fast channel gets all of its deliveries while the slow one is
    // still working through its own, at most `concurrency` (4) at a time.
    fast.wait_for(N, Duration::from_secs(10)).await;
    assert!(slow.received().len() < N, "the slow one is not done yet");
    slow.wait_for(N, Duration::from_secs(30)).await;
    assert!(slow.peak_in_flight() <= 4, "peak {}", slow.peak_in_flight());
    assert!(
        slow.peak_in_flight() >= 2,
        "attempts overlap: peak {}",
        slow.peak_in_flight()
    );
    let d = until(
        &h,
        &format!("/v1/config/notifications/{fast_id}/deliveries"),
        Duration::from_secs(10),
        |d| {
            d.as_array()
                .is_some_and(|a| a.len() == N && a.iter().all(|x| x["status"] == "delivered"))
        },
    )
    .await;
    assert_eq!(d.as_array().unwrap().len(), N);
    // A redirect is an answer, not an instruction: failed, not followed.
    let d = until(
        &h,
        &format!("/v1/config/notifications/{moved_id}/deliveries"),
        Duration::from_secs(10),
        |d| {
            d.as_array()
                .is_some_and(|a| a.len() == N && a.iter().all(|x| x["status"] == "failed"))
        },
    )
    .await;
    assert_eq!(d[0]["httpStatus"], 302);
    assert_eq!(moved.received().len(), N, "one attempt each");
    // "Send test" to one channel only.
    let a = api(
        &h,
        "POST",
        &format!("/v1/config/notifications/{slow_id}/test"),
        KEY,
        Value::Null,
    )
    .await;
    assert_eq!(a.status, 202, "{:?}", a.json());
    let r = slow
        .wait_for(N + 1, Duration::from_secs(10))
        .await
        .pop()
        .unwrap();
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        v["analysisId"].as_str().unwrap().starts_with("anl_test_"),
        "{v}"
    );
    assert_eq!(fast.received().len(), N);
    h.stop().await;
}

/// `sender.max_body` (413 PAYLOAD_TOO_LARGE) and a wrong method (405
/// METHOD_NOT_ALLOWED), in the API's envelope.
#[tokio::test]
async fn body_limit_and_wrong_method_answer_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hookgate::start(&config(dir.path(), "max_body = \"2KiB\"")).await;
    let mut big: Value = serde_json::from_slice(&analysis("anl_big")).unwrap();
    big["summary"] = json!("x".repeat(3000));
    let a = post_analysis(&h, serde_json::to_vec(&big).unwrap()).await;
    assert_eq!(code(&a), (413, "PAYLOAD_TOO_LARGE".into()));
    // Under the limit the same analysis is fine.
    let a = post_analysis(&h, analysis("anl_small")).await;
    assert_eq!(a.status, 202, "{:?}", a.json());
    let a = api(&h, "DELETE", "/v1/analyses", KEY, Value::Null).await;
    assert_eq!(code(&a), (405, "METHOD_NOT_ALLOWED".into()));
    let a = api(&h, "GET", "/v1/nowhere", KEY, Value::Null).await;
    assert_eq!(code(&a), (404, "NOT_FOUND".into()));
    h.stop().await;
}

/// `attempt_timeout` bounds each attempt; `auto_disable_after = 2` waits for
/// a second exhausted delivery in a row before disabling.
#[tokio::test]
async fn attempt_timeout_and_a_gentler_auto_disable_rule() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Upstream::start().await;
    slow.set_default(Reply::delayed(Duration::from_secs(3)));
    let toml = config(
        dir.path(),
        &format!("{ALLOW_LOOPBACK}\nauto_disable_after = 2"),
    )
    .replace(
        r#"retry_schedule = ["200ms", "200ms", "200ms", "200ms"]"#,
        r#"retry_schedule = ["50ms"]"#,
    )
    .replace(r#"attempt_timeout = "2s""#, r#"attempt_timeout = "300ms""#);
    let h = Hookgate::start(&toml).await;
    let id = create_channel(&h, "webhook", "low", json!({"url": slow.url("/slow")})).await;
    let deliveries = format!("/v1/config/notifications/{id}/deliveries");
    let a = post_analysis(&h, analysis("anl_timeout_1")).await;
    assert_eq!(a.json()["data"]["deliveries"], 1);
    let d = until(&h, &deliveries, Duration::from_secs(10), |d| {
        d[0]["status"] == "exhausted"
    })
    .await;
    assert_eq!(
        d[0]["attempts"], 2,
        "two attempts: the schedule has one delay"
    );
    assert_eq!(d[0]["error"], "timed out");
    // Each attempt was cut at attempt_timeout (300 ms), not the 3 s the
    // receiver would take, nor the default 10 s.
    let job = send(
        "GET",
        &h.admin_url(&format!("/admin/jobs/{}", d[0]["id"].as_str().unwrap())),
        &[],
        Vec::new(),
    )
    .await;
    let log = job.json()["attempt_log"].clone();
    assert_eq!(log.as_array().unwrap().len(), 2, "{log}");
    for at in log.as_array().unwrap() {
        let ms = at["duration_ms"].as_i64().unwrap();
        assert!((250..2000).contains(&ms), "{log}");
    }
    let v = api(
        &h,
        "GET",
        &format!("/v1/config/notifications/{id}"),
        KEY,
        Value::Null,
    )
    .await;
    assert_eq!(
        v.json()["data"]["health"],
        "Failing",
        "one exhausted delivery is not enough"
    );
    let a = post_analysis(&h, analysis("anl_timeout_2")).await;
    assert_eq!(a.json()["data"]["deliveries"], 1);
    until(
        &h,
        &format!("/v1/config/notifications/{id}"),
        Duration::from_secs(10),
        |d| d["health"] == "Disabled",
    )
    .await;
    h.stop().await;
}

/// `auto_disable_after = 0`: never disabled, however many deliveries run out.
#[tokio::test]
async fn auto_disable_can_be_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let dead = Upstream::start().await;
    dead.set_default(Reply::status(500));
    let toml = config(
        dir.path(),
        &format!("{ALLOW_LOOPBACK}\nauto_disable_after = 0"),
    )
    .replace(
        r#"retry_schedule = ["200ms", "200ms", "200ms", "200ms"]"#,
        r#"retry_schedule = ["50ms"]"#,
    );
    let h = Hookgate::start(&toml).await;
    let id = create_channel(&h, "webhook", "low", json!({"url": dead.url("/dead")})).await;
    for i in 0..3 {
        let a = post_analysis(&h, analysis(&format!("anl_never_{i}"))).await;
        assert_eq!(
            a.json()["data"]["deliveries"],
            1,
            "still open after {i} exhausted"
        );
        let path = format!("/v1/config/notifications/{id}/deliveries");
        until(&h, &path, Duration::from_secs(10), |d| {
            d.as_array()
                .is_some_and(|a| a.len() == i + 1 && a.iter().all(|x| x["status"] == "exhausted"))
        })
        .await;
    }
    let v = api(
        &h,
        "GET",
        &format!("/v1/config/notifications/{id}"),
        KEY,
        Value::Null,
    )
    .await;
    assert_eq!(v.json()["data"]["health"], "Failing");
    assert!(v.json()["data"]["autoDisabledAt"].is_null());
    h.stop().await;
}

/// `insecure_generate_master_key` stands in for a master key;
/// `secret_rotation_grace` sets how long the old secret signs;
/// `dedup_window` how long an id is a duplicate.
#[tokio::test]
async fn development_key_rotation_grace_and_dedup_window_follow_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Upstream::start().await;
    let toml = config(
        dir.path(),
        &format!(
            "{ALLOW_LOOPBACK}\ninsecure_generate_master_key = true\nsecret_rotation_grace = \"90s\"\ndedup_window = \"1s\""
        ),
    )
    .replace(&format!("master_key = {{ value = \"{MASTER}\" }}"), "");
    let h = Hookgate::start(&toml).await;
    let a = api(
        &h,
        "POST",
        "/v1/webhooks",
        KEY,
        json!({"url": rx.url("/"), "events": ["a.b"]}),
    )
    .await;
    assert_eq!(a.status, 201, "{:?}", a.json());
    let id = a.json()["data"]["id"].as_str().unwrap().to_string();
    let a = api(
        &h,
        "POST",
        &format!("/v1/webhooks/{id}/rotate-secret"),
        KEY,
        Value::Null,
    )
    .await;
    let until_at = humantime::parse_rfc3339(
        a.json()["data"]["previousSecretExpiresAt"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let left = until_at
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        left > Duration::from_secs(80) && left <= Duration::from_secs(90),
        "{left:?}"
    );

    let event = json!({"id": "evt_window_1", "type": "a.b", "data": {}});
    let first = Instant::now();
    let a = api(&h, "POST", "/v1/events", KEY, event.clone()).await;
    assert_eq!(
        (a.status, a.json()["data"]["duplicate"].clone()),
        (202, json!(false))
    );
    let a = api(&h, "POST", "/v1/events", KEY, event.clone()).await;
    assert_eq!(
        (a.status, a.json()["data"]["duplicate"].clone()),
        (200, json!(true))
    );
    // Once the window has passed, the same id is a new event.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let a = api(&h, "POST", "/v1/events", KEY, event.clone()).await;
        if a.status == 202 {
            assert!(
                first.elapsed() >= Duration::from_millis(900),
                "{:?}",
                first.elapsed()
            );
            break;
        }
        assert!(Instant::now() < end, "still a duplicate after 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rx.wait_for(2, Duration::from_secs(10)).await;
    h.stop().await;
}
