//! HTTP/2 to upstreams without TLS (`upstream.protocol = "http2"`, h2c with
//! prior knowledge), end to end: passthrough and queue mode against a real
//! hyper HTTP/2 server, many requests sharing one connection, and the
//! settings a config may not combine. TLS with ALPN is in tls.rs.

mod common;

use std::time::Duration;

use common::*;

const SECRET: &str = "h2-test-secret-0123456789abcdef";

fn passthrough_to(url: &str, protocol: &str) -> String {
    format!(
        r#"
[[routes]]
path = "/hooks/sigsentry"
scheme = "sigsentry"
secrets = [{{ value = "{SECRET}" }}]
mode = "passthrough"
[routes.upstream]
url = "{url}"
timeout = "2s"
protocol = "{protocol}"
"#
    )
}

#[tokio::test]
async fn passthrough_speaks_h2c_and_shares_one_connection() {
    let up = Upstream::start_speaking(Speaks::H2c).await;
    up.set_default(Reply {
        status: 201,
        body: "made over h2",
        headers: vec![("x-upstream", "h2")],
        delay: Duration::ZERO,
    });
    let hg = Hookgate::start(&passthrough_to(&up.url("/in?k=1"), "http2")).await;

    let body = analysis("anl_h2_first");
    let mut headers = sign("sigsentry", SECRET, &body, None, now());
    headers.push(("x-custom".into(), "kept".into()));
    headers.push(("connection".into(), "keep-alive, x-hop".into()));
    headers.push(("x-hop".into(), "dropped".into()));
    let a = post(&hg.url("/hooks/sigsentry/more?q=2"), &headers, body.clone()).await;
    assert_eq!((a.status, &a.body[..]), (201, &b"made over h2"[..]));
    assert_eq!(a.headers["x-upstream"], "h2");

    let got = up.wait_for(1, Duration::from_secs(5)).await;
    let r = &got[0];
    assert_eq!(r.version, http::Version::HTTP_2);
    // The authority (`:authority`, from the upstream URL), the upstream's
    // path with the route's rest appended, both queries.
    assert_eq!(r.uri, format!("http://{}/in/more?k=1&q=2", up.addr));
    assert_eq!(r.body, body);
    assert_eq!(r.headers["x-custom"], "kept");
    assert!(r.headers.get("x-hop").is_none());
    assert!(r.headers.get("connection").is_none());
    assert_eq!(r.headers["x-hookgate-verified"], "sigsentry");
    assert!(r.headers.get("x-hookgate-delivery-id").is_some());

    // Sixteen at once: streams on the connection the first request opened.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let url = hg.url("/hooks/sigsentry");
        tasks.push(tokio::spawn(async move {
            let body = analysis(&format!("anl_h2_{i}"));
            let headers = sign("sigsentry", SECRET, &body, None, now());
            post(&url, &headers, body).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    let got = up.wait_for(17, Duration::from_secs(5)).await;
    assert!(got.iter().all(|r| r.version == http::Version::HTTP_2));
    assert_eq!(
        up.connections(),
        1,
        "every request on one HTTP/2 connection"
    );
    hg.stop().await;
}

#[tokio::test]
async fn an_http1_upstream_refuses_h2c_and_the_sender_gets_a_502() {
    // Prior knowledge means no negotiation: an upstream that speaks only
    // HTTP/1.1 answers the HTTP/2 preface with an error, and the request
    // fails as an unreachable upstream does.
    let up = Upstream::start().await;
    let hg = Hookgate::start(&passthrough_to(&up.url("/in"), "http2")).await;
    let body = analysis("anl_h2_refused");
    let headers = sign("sigsentry", SECRET, &body, None, now());
    let a = post(&hg.url("/hooks/sigsentry"), &headers, body).await;
    assert_eq!((a.status, a.code().as_str()), (502, "upstream_unreachable"));
    assert!(up.received().is_empty());
    hg.stop().await;
}

#[tokio::test]
async fn queue_mode_delivers_over_h2c() {
    let up = Upstream::start_speaking(Speaks::H2c).await;
    let dir = tempfile::tempdir().unwrap();
    let hg = Hookgate::start(&format!(
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
[routes.upstream]
url = "{url}"
timeout = "2s"
protocol = "http2"
"#,
        db = dir.path().join("hookgate.db").display(),
        url = up.url("/queued"),
    ))
    .await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let body = analysis(&format!("anl_q_{i}"));
        let headers = sign("sigsentry", SECRET, &body, None, now());
        let a = post(&hg.url("/hooks/sigsentry"), &headers, body.clone()).await;
        assert_eq!(a.status, 202, "{:?}", a.body);
        sent.push(body);
    }
    let got = up.wait_for(5, Duration::from_secs(10)).await;
    for r in &got {
        assert_eq!(r.version, http::Version::HTTP_2);
        assert_eq!(r.uri, format!("http://{}/queued", up.addr));
    }
    let mut bodies: Vec<_> = got.iter().map(|r| r.body.to_vec()).collect();
    bodies.sort();
    sent.sort();
    assert_eq!(bodies, sent);
    assert_eq!(up.connections(), 1);
    hg.stop().await;
}

#[test]
fn protocol_settings_a_config_cannot_use_are_refused_naming_the_key() {
    // `auto` negotiates by TLS ALPN: over http:// there is nothing to ask.
    let e = hookgate::config::from_toml(&passthrough_to("http://127.0.0.1:9/in", "auto"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("routes[0].upstream.protocol"), "{e}");
    assert!(e.contains("https://"), "{e}");
    let e = hookgate::config::from_toml(&passthrough_to("http://127.0.0.1:9/in", "spdy"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("protocol"), "{e}");
    for ok in ["http1", "http2"] {
        hookgate::config::from_toml(&passthrough_to("http://127.0.0.1:9/in", ok)).unwrap();
    }
    hookgate::config::from_toml(&passthrough_to("https://127.0.0.1:9/in", "auto")).unwrap();
}
