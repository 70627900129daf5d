//! Provider handshakes and source allow-lists, against the real binary:
//! each provider's documented handshake request gets its documented answer
//! (after verification where the provider signs it) and reaches neither
//! the upstream nor the store; senders outside a route's `allow_cidrs` get
//! `403 source_not_allowed`, with the address a trusted proxy forwarded.

mod common;

use std::time::Duration;

use common::*;

const SECRET: &str = "handshake-secret";

fn write_config(dir: &std::path::Path, upstream: &str) -> std::path::PathBuf {
    let cfg = dir.join("hookgate.toml");
    let route = |path: &str, scheme: &str, mode: &str, extra: &str| {
        format!(
            r#"
[[routes]]
path = "{path}"
scheme = "{scheme}"
secrets = [{{ value = "{SECRET}" }}]
mode = "{mode}"
dedup = {{ key = "none" }}
{extra}
[routes.upstream]
url = "{upstream}"
"#
        )
    };
    let routes = [
        route("/hooks/slack", "slack", "queue", ""),
        route("/hooks/zoom", "zoom", "queue", ""),
        route("/hooks/twitch", "twitch", "passthrough", ""),
        route(
            "/hooks/meta",
            "meta",
            "queue",
            r#"verify_token = { value = "meta-verify-token" }"#,
        ),
        route(
            "/hooks/custom",
            "sigsentry",
            "queue",
            r#"challenge = { pointer = "/challenge", when = { pointer = "/type", equals = "endpoint.verify" }, answer = '{"ok":true,"challenge":"{challenge}"}', content_type = "application/json" }"#,
        ),
        route(
            "/hooks/private",
            "sigsentry",
            "passthrough",
            r#"allow_cidrs = ["10.0.0.0/8"]"#,
        ),
        route(
            "/hooks/provider",
            "sigsentry",
            "passthrough",
            r#"allow_cidrs = ["203.0.113.0/24", "2001:db8::/32"]"#,
        ),
    ];
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1"]
[admin]
listen = "127.0.0.1:0"
[store]
path = "{db}"
[log]
format = "json"
{routes}
"#,
            db = dir.join("hookgate.db").display(),
            routes = routes.join("\n"),
        ),
    )
    .unwrap();
    cfg
}

fn with(mut h: Vec<(String, String)>, k: &str, v: &str) -> Vec<(String, String)> {
    h.push((k.to_string(), v.to_string()));
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handshakes_are_answered_here_and_allow_lists_hold() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    let p = spawn_binary(&write_config(dir.path(), &up.url("/app")), &[])
        .wait_listening(Duration::from_secs(30));

    // Slack url_verification (api.slack.com/events/url_verification), signed.
    let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let a = post(
        &p.url("/hooks/slack"),
        &sign("slack", SECRET, body, None, now()),
        &body[..],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.json()["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    // Unsigned, it is refused like any request.
    let a = post(&p.url("/hooks/slack"), &[], &body[..]).await;
    assert_eq!((a.status, a.code().as_str()), (401, "signature_missing"));

    // Zoom endpoint.url_validation (developers.zoom.us), signed; the token
    // is HMAC-SHA256(secret, plainToken), computed with Python's hmac.
    let body = br#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    let a = post(
        &p.url("/hooks/zoom"),
        &sign("zoom", SECRET, body, None, now()),
        &body[..],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
    assert_eq!(
        a.json()["encryptedToken"],
        "ddd631b3c3dadc9e9529e16e24d5d7382236b6dc283bf393d51c020587a38c31"
    );

    // Twitch EventSub webhook_callback_verification (dev.twitch.tv), signed.
    let body = br#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"id":"f1c2a387-161a-49f9-a165-0f21d7a4e1c4","status":"webhook_callback_verification_pending","type":"channel.follow","version":"1","cost":1,"condition":{"broadcaster_user_id":"12826"},"transport":{"method":"webhook","callback":"https://example.com/webhooks/callback"},"created_at":"2019-11-16T10:11:12.634234626Z"}}"#;
    let headers = with(
        sign(
            "twitch",
            SECRET,
            body,
            Some("e76c6bd4-55c9-4987-8304-da1588d8988b"),
            now(),
        ),
        "twitch-eventsub-message-type",
        "webhook_callback_verification",
    );
    let a = post(&p.url("/hooks/twitch"), &headers, &body[..]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "text/plain");
    assert_eq!(&a.body[..], b"pogchamp-kappa-360noscope-vohiyo");

    // Meta's subscription check (developers.facebook.com, Webhooks
    // "Verification Requests"): a GET, so not in the route's methods.
    let a = send(
        "GET",
        &p.url("/hooks/meta?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meta-verify-token"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(&a.body[..], b"1158201444");
    let a = send(
        "GET",
        &p.url("/hooks/meta?hub.mode=subscribe&hub.challenge=1&hub.verify_token=guess"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!((a.status, a.code().as_str()), (403, "handshake_refused"));
    // Any other GET is still not allowed.
    let a = send("GET", &p.url("/hooks/meta"), &[], Vec::new()).await;
    assert_eq!(a.status, 405);

    // A configured challenge, JSON template.
    let body = br#"{"type":"endpoint.verify","challenge":"c-42"}"#;
    let a = post(
        &p.url("/hooks/custom"),
        &sign("sigsentry", SECRET, body, None, now()),
        &body[..],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.json(),
        serde_json::json!({"ok": true, "challenge": "c-42"})
    );
    // The same shape without the condition is an event: queued.
    let body = br#"{"type":"order.paid","challenge":"c-43"}"#;
    let a = post(
        &p.url("/hooks/custom"),
        &sign("sigsentry", SECRET, body, None, now()),
        &body[..],
    )
    .await;
    assert_eq!(a.status, 202);
    up.wait_for(1, Duration::from_secs(10)).await;

    // allow_cidrs: this test's address (127.0.0.1) is not in 10.0.0.0/8.
    let body = analysis("anl_private");
    let a = post(
        &p.url("/hooks/private"),
        &sign("sigsentry", SECRET, &body, None, now()),
        body,
    )
    .await;
    assert_eq!((a.status, a.code().as_str()), (403, "source_not_allowed"));
    // Behind a trusted proxy (127.0.0.1 here), the forwarded address counts.
    for (xff, status) in [
        ("203.0.113.7", 200),
        ("6.6.6.6, 203.0.113.7", 200),
        ("2001:db8::1", 200),
        ("198.51.100.1", 403),
        ("203.0.113.7, 198.51.100.1", 403),
    ] {
        let body = analysis("anl_provider");
        let headers = with(
            sign("sigsentry", SECRET, &body, None, now()),
            "x-forwarded-for",
            xff,
        );
        let a = post(&p.url("/hooks/provider"), &headers, body).await;
        assert_eq!(a.status, status, "X-Forwarded-For: {xff}");
    }

    // Nothing of the handshakes or the refused requests reached the
    // upstream: only the custom route's event and the three allowed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = up.received();
    assert_eq!(
        got.len(),
        4,
        "{:?}",
        got.iter().map(|r| &r.uri).collect::<Vec<_>>()
    );
    // ...nor the store: the queue-mode handshake routes hold no job.
    let q = send("GET", &p.admin_url("/admin/queues"), &[], Vec::new()).await;
    for route in ["/hooks/slack", "/hooks/zoom", "/hooks/meta"] {
        let entry = q.json()["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["route"] == route)
            .cloned()
            .unwrap();
        for k in ["pending", "in_flight", "dead", "delivered"] {
            assert_eq!(entry[k], 0, "{route}: {entry}");
        }
    }
    p.terminate(Duration::from_secs(10));
}
