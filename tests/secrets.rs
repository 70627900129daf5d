//! Issue 12 end to end: secret validity windows and the metric naming the
//! secret that verified, a URL-signing preset behind a proxy (`signed_url`),
//! and Standard Webhooks `v1a` (ed25519) through the real server.

mod common;

use std::time::Duration;

use common::*;

const NEW: &str = "the-new-secret-0123456789abcdef";
const OLD: &str = "the-old-secret-0123456789abcdef";
const SPARE: &str = "a-spare-secret-0123456789abcdef";
/// The seed 00 01 .. 1f, and its public key (see src/signature/vectors.rs).
const WHSK: &str = "whsk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const WHPK: &str = "whpk_A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=";
const PUBLIC_URL: &str = "https://public.example.com/hooks/square";

fn config(up: &Upstream) -> String {
    format!(
        r#"
[[routes]]
path = "/hooks/rotating"
scheme = "sigsentry"
mode = "passthrough"
secrets = [
  {{ value = "{NEW}", name = "new", not_before = "2020-01-01T00:00:00Z" }},
  {{ value = "{OLD}", name = "old", not_after = "2021-01-01T00:00:00Z" }},
  {{ value = "{SPARE}" }},
]
[routes.upstream]
url = "{up}"

[[routes]]
path = "/hooks/square"
scheme = "square"
mode = "passthrough"
signed_url = "{PUBLIC_URL}"
secrets = [{{ value = "square-signature-key" }}]
[routes.upstream]
url = "{up}"

[[routes]]
path = "/hooks/standard"
scheme = "standard-webhooks"
mode = "passthrough"
secrets = [{{ value = "{WHPK}", name = "ed25519" }}]
[routes.upstream]
url = "{up}"
"#,
        up = up.url("/app"),
    )
}

async fn metrics(hg: &Hookgate) -> String {
    let a = send("GET", &hg.admin_url("/metrics"), &[], "").await;
    String::from_utf8(a.body.to_vec()).unwrap()
}

fn signed(
    scheme: &str,
    secret: &str,
    body: &[u8],
    id: Option<&str>,
    url: &str,
) -> Vec<(String, String)> {
    let scheme = hookgate::signature::Scheme::Preset(scheme.parse().unwrap());
    hookgate::signature::sign_url(&scheme, secret.as_bytes(), body, id, now(), url)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect()
}

#[tokio::test]
async fn expired_secrets_fail_and_the_metric_names_the_one_that_verified() {
    let up = Upstream::start().await;
    let hg = Hookgate::start(&config(&up)).await;
    // Every secret's series exists at zero from startup, by name or index.
    let text = metrics(&hg).await;
    for secret in ["new", "old", "2"] {
        let want =
            format!(r#"hookgate_verified_total{{route="/hooks/rotating",secret="{secret}"}} 0"#);
        assert!(text.contains(&want), "missing {want} in:\n{text}");
    }

    let body = analysis("an_rotating");
    let url = hg.url("/hooks/rotating");
    // Past its not_after, the old secret no longer verifies.
    let a = post(
        &url,
        &sign("sigsentry", OLD, &body, None, now()),
        body.clone(),
    )
    .await;
    assert_eq!((a.status, a.code().as_str()), (401, "signature_mismatch"));
    // The current one does; so does the spare (no window).
    let a = post(
        &url,
        &sign("sigsentry", NEW, &body, None, now()),
        body.clone(),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = post(
        &url,
        &sign("sigsentry", SPARE, &body, None, now()),
        body.clone(),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);

    let text = metrics(&hg).await;
    for (secret, n) in [("new", 1), ("old", 0), ("2", 1)] {
        let want =
            format!(r#"hookgate_verified_total{{route="/hooks/rotating",secret="{secret}"}} {n}"#);
        assert!(text.contains(&want), "missing {want} in:\n{text}");
    }
    // Never a secret's value.
    for value in [NEW, OLD, SPARE] {
        assert!(!text.contains(value));
    }
    up.wait_for(2, Duration::from_secs(10)).await;
    hg.stop().await;
}

#[tokio::test]
async fn square_verifies_against_the_configured_public_url() {
    let up = Upstream::start().await;
    let hg = Hookgate::start(&config(&up)).await;
    let body = br#"{"event_id":"sq_1","type":"payment.created"}"#.to_vec();
    // Square signed the public URL; hookgate itself is reached on another.
    let h = signed("square", "square-signature-key", &body, None, PUBLIC_URL);
    let a = post(&hg.url("/hooks/square"), &h, body.clone()).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    // Signed over the URL hookgate sees: not what Square would sign.
    let h = signed(
        "square",
        "square-signature-key",
        &body,
        None,
        &hg.url("/hooks/square"),
    );
    let a = post(&hg.url("/hooks/square"), &h, body).await;
    assert_eq!((a.status, a.code().as_str()), (401, "signature_mismatch"));
    hg.stop().await;
}

#[tokio::test]
async fn standard_webhooks_v1a_verifies_with_the_public_key() {
    let up = Upstream::start().await;
    let hg = Hookgate::start(&config(&up)).await;
    let body = br#"{"type":"contact.created"}"#.to_vec();
    let h = signed("standard-webhooks", WHSK, &body, Some("msg_1"), "");
    assert!(h
        .iter()
        .any(|(k, v)| k == "webhook-signature" && v.starts_with("v1a,")));
    let a = post(&hg.url("/hooks/standard"), &h, body.clone()).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = post(&hg.url("/hooks/standard"), &h, b"tampered".to_vec()).await;
    assert_eq!((a.status, a.code().as_str()), (401, "signature_mismatch"));
    let text = metrics(&hg).await;
    let want = r#"hookgate_verified_total{route="/hooks/standard",secret="ed25519"} 1"#;
    assert!(text.contains(want), "missing {want} in:\n{text}");
    hg.stop().await;
}

#[tokio::test]
async fn twilio_signs_the_public_url_with_the_request_query() {
    let up = Upstream::start().await;
    let public = "https://public.example.com/hooks/twilio";
    let toml = config(&up)
        + &format!(
            r#"
[[routes]]
path = "/hooks/twilio"
scheme = "twilio"
mode = "passthrough"
signed_url = "{public}"
secrets = [{{ value = "twilio-auth-token" }}]
[routes.upstream]
url = "{up}"
"#,
            up = up.url("/app"),
        );
    let hg = Hookgate::start(&toml).await;
    let body = b"CallSid=CA1&From=%2B14158675309&Digits=1234".to_vec();
    let h = signed(
        "twilio",
        "twilio-auth-token",
        &body,
        None,
        &format!("{public}?tenant=7"),
    );
    let a = post(&hg.url("/hooks/twilio?tenant=7"), &h, body.clone()).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    // Another query than the one signed.
    let a = post(&hg.url("/hooks/twilio?tenant=8"), &h, body).await;
    assert_eq!((a.status, a.code().as_str()), (401, "signature_mismatch"));
    // A JSON body: its SHA-256 is in the signed query.
    let json = br#"{"event":"x"}"#.to_vec();
    let hash = hookgate_sha256_hex(&json);
    let query = format!("bodySHA256={hash}");
    let h = signed(
        "twilio",
        "twilio-auth-token",
        &json,
        None,
        &format!("{public}?{query}"),
    );
    let a = post(&hg.url(&format!("/hooks/twilio?{query}")), &h, json).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = post(
        &hg.url(&format!("/hooks/twilio?{query}")),
        &h,
        br#"{"event":"y"}"#.to_vec(),
    )
    .await;
    assert_eq!((a.status, a.code().as_str()), (401, "signature_mismatch"));
    hg.stop().await;
}

fn hookgate_sha256_hex(body: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(body))
}

#[tokio::test]
async fn mailgun_body_signature_queues_and_a_used_token_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    let toml = format!(
        r#"
[store]
path = "{db}"
[delivery]
poll_interval = "50ms"

[[routes]]
path = "/hooks/mailgun"
scheme = "mailgun"
secrets = [{{ value = "mailgun-signing-key" }}]
[routes.upstream]
url = "{up}"
"#,
        db = dir.path().join("hookgate.db").display(),
        up = up.url("/app"),
    );
    let hg = Hookgate::start(&toml).await;
    let scheme = hookgate::signature::Scheme::Preset("mailgun".parse().unwrap());
    let sign = |token: &str, event: &[u8]| {
        hookgate::signature::sign_request(
            &scheme,
            b"mailgun-signing-key",
            event,
            Some(token),
            now(),
            "",
        )
        .unwrap()
        .body
        .unwrap()
    };
    let event = br#"{"event-data":{"id":"mg_ev_1","event":"delivered"}}"#;
    let json = [("content-type".to_string(), "application/json".to_string())];
    let body = sign("tok_a", event);
    let a = post(&hg.url("/hooks/mailgun"), &json, body.clone()).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    // Mailgun signs only `<timestamp><token>`: a captured request whose
    // event is swapped still verifies. Its token was used, so it is a
    // duplicate of the first delivery and never reaches the upstream.
    let mut swapped: serde_json::Value = serde_json::from_slice(&body).unwrap();
    swapped["event-data"]["id"] = "mg_ev_forged".into();
    swapped["event-data"]["event"] = "unsubscribed".into();
    let again = post(
        &hg.url("/hooks/mailgun"),
        &json,
        serde_json::to_vec(&swapped).unwrap(),
    )
    .await;
    assert_eq!(
        (again.status, again.json()["status"].clone()),
        (200, "duplicate".into())
    );
    assert_eq!(again.json()["id"], a.json()["id"]);
    // Another delivery (a new token) is accepted.
    let a = post(&hg.url("/hooks/mailgun"), &json, sign("tok_b", event)).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    // The body reaches the upstream as sent, signature fields included.
    let got = up.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].body, body);
    // A legacy form post verifies too.
    let form = [(
        "content-type".to_string(),
        "application/x-www-form-urlencoded".to_string(),
    )];
    let a = post(
        &hg.url("/hooks/mailgun"),
        &form,
        sign("tok_c", b"event=opened"),
    )
    .await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    // Tampered token; no signature at all.
    let forged = String::from_utf8(sign("tok_d", event))
        .unwrap()
        .replace("tok_d", "tok_e");
    let a = post(&hg.url("/hooks/mailgun"), &json, forged).await;
    assert_eq!((a.status, a.code().as_str()), (401, "signature_mismatch"));
    let a = post(&hg.url("/hooks/mailgun"), &json, event.to_vec()).await;
    assert_eq!((a.status, a.code().as_str()), (401, "signature_missing"));
    let got = up.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 3);
    assert!(got
        .iter()
        .all(|r| !String::from_utf8_lossy(&r.body).contains("mg_ev_forged")));
    hg.stop().await;
}

#[tokio::test]
async fn postmark_basic_auth_passes_and_wrong_credentials_fail() {
    let up = Upstream::start().await;
    let toml = config(&up)
        + &format!(
            r#"
[[routes]]
path = "/hooks/postmark"
scheme = "postmark"
mode = "passthrough"
secrets = [{{ value = "hooks:s3cret-pass" }}]
[routes.upstream]
url = "{up}"
"#,
            up = up.url("/app"),
        );
    let hg = Hookgate::start(&toml).await;
    let body = br#"{"RecordType":"Delivery","MessageID":"m1"}"#.to_vec();
    // What a client builds from https://hooks:s3cret-pass@host/hooks/postmark.
    let auth = |v: &str| vec![("authorization".to_string(), v.to_string())];
    let a = post(
        &hg.url("/hooks/postmark"),
        &auth("Basic aG9va3M6czNjcmV0LXBhc3M="),
        body.clone(),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = post(
        &hg.url("/hooks/postmark"),
        &auth("Basic aG9va3M6d3Jvbmc="),
        body.clone(),
    )
    .await;
    assert_eq!((a.status, a.code().as_str()), (401, "signature_mismatch"));
    let a = post(&hg.url("/hooks/postmark"), &auth("Bearer x"), body.clone()).await;
    assert_eq!((a.status, a.code().as_str()), (401, "signature_malformed"));
    let a = post(&hg.url("/hooks/postmark"), &[], body).await;
    assert_eq!((a.status, a.code().as_str()), (401, "signature_missing"));
    assert_eq!(up.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    hg.stop().await;
}
