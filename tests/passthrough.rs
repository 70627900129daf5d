//! Passthrough mode end to end: real hookgate on 127.0.0.1:0, a real
//! upstream server, a real HTTP client (and raw TCP for slow clients).

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "whsec-test-0123456789abcdef0123456789abcdef";
const OLD_SECRET: &str = "old-secret-being-rotated-out-000000000";

fn config(upstream: &Upstream, extra: &str) -> String {
    format!(
        r#"
[server]
body_timeout = "500ms"
header_timeout = "500ms"
max_body = "64KiB"

[[routes]]
path = "/hooks/sigsentry"
scheme = "sigsentry"
secrets = [{{ value = "{SECRET}" }}, {{ value = "{OLD_SECRET}" }}]
mode = "passthrough"
[routes.upstream]
url = "{up}"
timeout = "1s"

[[routes]]
path = "/hooks/status"
scheme = "statussentry"
secrets = [{{ value = "{SECRET}" }}]
mode = "passthrough"
tolerance = "5m"
[routes.upstream]
url = "{up_status}"
{extra}
"#,
        up = upstream.url("/webhooks/sigsentry"),
        up_status = upstream.url("/status"),
    )
}

/// A config with one passthrough SigSentry route to `url`; `upstream_extra`
/// goes into its `[routes.upstream]` table.
fn one_route_to(url: &str, upstream_extra: &str) -> String {
    format!(
        r#"
[[routes]]
path = "/hooks/sigsentry"
scheme = "sigsentry"
secrets = [{{ value = "{SECRET}" }}]
mode = "passthrough"
[routes.upstream]
url = "{url}"
{upstream_extra}
"#
    )
}

async fn setup(extra: &str) -> (Upstream, Hookgate) {
    let up = Upstream::start().await;
    let hg = Hookgate::start(&config(&up, extra)).await;
    (up, hg)
}

#[tokio::test]
async fn valid_request_arrives_upstream_byte_identical() {
    let (up, hg) = setup("").await;
    let body = analysis("anl_abc123");
    let mut headers = sign("sigsentry", SECRET, &body, None, now());
    headers.push(("content-type".into(), "application/json".into()));
    headers.push(("x-custom".into(), "kept".into()));
    headers.push(("x-hookgate-verified".into(), "forged-by-sender".into()));
    headers.push(("connection".into(), "keep-alive, x-hop".into()));
    headers.push(("x-hop".into(), "dropped".into()));

    let a = post(
        &hg.url("/hooks/sigsentry/extra?x=1&y=%20z"),
        &headers,
        body.clone(),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(&a.body[..], b"upstream ok");
    assert_eq!(a.headers["x-upstream"], "yes");

    let got = up.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.uri, "/webhooks/sigsentry/extra?x=1&y=%20z");
    assert_eq!(r.body, body, "body must be byte-identical");
    assert_eq!(r.headers["x-hookgate-verified"], "sigsentry");
    assert_eq!(r.headers.get_all("x-hookgate-verified").iter().count(), 1);
    assert_eq!(r.headers["x-custom"], "kept");
    assert_eq!(r.headers["content-type"], "application/json");
    assert!(r.headers.get("x-sigsentry-signature").is_some());
    assert!(
        r.headers.get("x-hop").is_none(),
        "hop-by-hop header named in Connection is dropped"
    );
    assert!(r.headers.get("x-hookgate-delivery-id").is_some());
    assert_eq!(r.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        r.headers["host"],
        up.addr.to_string().as_str(),
        "the upstream's own authority, not the sender's Host"
    );
    assert_eq!(r.headers.get_all("host").iter().count(), 1);
    hg.stop().await;
}

/// A sender's own forwarded headers are dropped unless it connects from a
/// trusted proxy; exactly one value of each reaches the upstream.
#[tokio::test]
async fn forwarded_headers_are_kept_only_from_trusted_proxies() {
    let forged = |body: &[u8]| {
        let mut h = sign("sigsentry", SECRET, body, None, now());
        for (k, v) in [
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-real-ip", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
        ] {
            h.push((k.to_string(), v.to_string()));
        }
        h
    };
    // 127.0.0.1 is not a trusted proxy: everything forged goes.
    let (up, hg) = setup("").await;
    let body = analysis("anl_fwd1");
    let a = post(&hg.url("/hooks/sigsentry"), &forged(&body), body).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let r = &up.received()[0];
    assert_eq!(r.headers.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(r.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(r.headers.get_all("x-forwarded-proto").iter().count(), 1);
    assert_eq!(r.headers["x-forwarded-proto"], "http");
    for gone in ["x-forwarded-host", "x-real-ip", "forwarded"] {
        assert!(r.headers.get(gone).is_none(), "{gone} was forwarded");
    }
    hg.stop().await;

    // A trusted proxy's chain is kept, and the peer appended to it.
    let up = Upstream::start().await;
    let toml = config(&up, "").replace(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
    );
    let hg = Hookgate::start(&toml).await;
    let body = analysis("anl_fwd2");
    let a = post(&hg.url("/hooks/sigsentry"), &forged(&body), body).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let r = &up.received()[0];
    assert_eq!(r.headers["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
    assert_eq!(r.headers["x-forwarded-proto"], "https");
    assert_eq!(r.headers["x-real-ip"], "6.6.6.6");
    hg.stop().await;
}

/// The path below the prefix is signed by nothing: traversal forms are
/// refused before verification, and a `fixed` route ignores the path.
#[tokio::test]
async fn traversal_paths_are_refused_and_fixed_routes_ignore_the_path() {
    let (up, hg) = setup("").await;
    let body = analysis("anl_path");
    let headers = sign("sigsentry", SECRET, &body, None, now());
    for bad in [
        "/hooks/sigsentry/../admin",
        "/hooks/sigsentry/%2e%2e/admin",
        "/hooks/sigsentry/./x",
        "/hooks/sigsentry/a%2Fb",
        "/hooks/sigsentry/a%00",
        "/hooks/sigsentry/%ff",
    ] {
        let a = post(&hg.url(bad), &headers, body.clone()).await;
        assert_eq!(
            (a.status, a.code().as_str()),
            (400, "invalid_path"),
            "{bad}"
        );
    }
    // Refused before verification: an unsigned request gets the same answer.
    let a = post(&hg.url("/hooks/sigsentry/../x"), &[], body.clone()).await;
    assert_eq!(a.code(), "invalid_path");
    assert!(up.received().is_empty(), "nothing reached the upstream");
    hg.stop().await;

    let up = Upstream::start().await;
    let toml = one_route_to(&up.url("/only/here?k=1"), "").replace(
        "mode = \"passthrough\"",
        "mode = \"passthrough\"\nforward_path = \"fixed\"",
    );
    let hg = Hookgate::start(&toml).await;
    let a = post(
        &hg.url("/hooks/sigsentry/../../admin?drop=all"),
        &headers,
        body,
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(up.received()[0].uri, "/only/here?k=1");
    hg.stop().await;
}

/// A route whose own configured path has a traversal form refuses requests
/// to that very path, as it refuses them below it (the own path is checked
/// once, when the route is built).
#[tokio::test]
async fn a_route_path_with_a_traversal_form_is_refused_too() {
    let up = Upstream::start().await;
    let toml = one_route_to(&up.url("/app"), "")
        .replace("path = \"/hooks/sigsentry\"", "path = \"/hooks/%2e%2e\"");
    let hg = Hookgate::start(&toml).await;
    let body = analysis("anl_dots");
    let headers = sign("sigsentry", SECRET, &body, None, now());
    for sent in ["/hooks/%2e%2e", "/hooks/%2e%2e/x"] {
        let a = post(&hg.url(sent), &headers, body.clone()).await;
        assert_eq!(
            (a.status, a.code().as_str()),
            (400, "invalid_path"),
            "{sent}"
        );
    }
    assert!(up.received().is_empty());
    hg.stop().await;
}

/// A request to the route's own path (the usual webhook) is forwarded to
/// the upstream URL's path, with the upstream's query and then the
/// request's; without stripping, the route's path is appended.
#[tokio::test]
async fn the_routes_own_path_is_forwarded_to_the_upstream_path() {
    let body = analysis("anl_own");
    let headers = sign("sigsentry", SECRET, &body, None, now());
    for (upstream, strip, sent, want) in [
        ("/app/", "true", "/hooks/sigsentry", "/app"),
        ("/app?k=1", "true", "/hooks/sigsentry", "/app?k=1"),
        ("/app?k=1", "true", "/hooks/sigsentry?x=2", "/app?k=1&x=2"),
        ("/app?k=1", "true", "/hooks/sigsentry/", "/app/?k=1"),
        ("/app", "false", "/hooks/sigsentry", "/app/hooks/sigsentry"),
        (
            "/app",
            "false",
            "/hooks/sigsentry/a",
            "/app/hooks/sigsentry/a",
        ),
    ] {
        let up = Upstream::start().await;
        let toml = one_route_to(&up.url(upstream), &format!("strip_prefix = {strip}"));
        let hg = Hookgate::start(&toml).await;
        for _ in 0..2 {
            let a = post(&hg.url(sent), &headers, body.clone()).await;
            assert_eq!(a.status, 200, "{sent}: {:?}", a.body);
        }
        let got = up.received();
        assert_eq!(got.len(), 2);
        for r in &got {
            assert_eq!(r.uri, want, "{upstream} (strip {strip}) <- {sent}");
        }
        hg.stop().await;
    }
}

#[tokio::test]
async fn rotated_secret_is_accepted() {
    let (up, hg) = setup("").await;
    let body = analysis("anl_rot");
    let headers = sign("sigsentry", OLD_SECRET, &body, None, now());
    let a = post(&hg.url("/hooks/sigsentry"), &headers, body).await;
    assert_eq!(a.status, 200);
    assert_eq!(up.received().len(), 1);
    hg.stop().await;
}

/// A proxied request moves its route's `proxied` and `verified` series
/// (resolved once at start), and only those of its route and secret.
#[tokio::test]
async fn proxied_requests_are_counted_per_route_and_secret() {
    let (_up, hg) = setup("").await;
    for secret in [SECRET, SECRET, OLD_SECRET] {
        let body = analysis("anl_count");
        let a = post(
            &hg.url("/hooks/sigsentry"),
            &sign("sigsentry", secret, &body, None, now()),
            body,
        )
        .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
    }
    let m = send("GET", &hg.admin_url("/metrics"), &[], "").await;
    let text = String::from_utf8(m.body.to_vec()).unwrap();
    for want in [
        r#"hookgate_requests_total{outcome="proxied",route="/hooks/sigsentry"} 3"#,
        r#"hookgate_requests_total{outcome="proxied",route="/hooks/status"} 0"#,
        r#"hookgate_verified_total{route="/hooks/sigsentry",secret="0"} 2"#,
        r#"hookgate_verified_total{route="/hooks/sigsentry",secret="1"} 1"#,
        r#"hookgate_verified_total{route="/hooks/status",secret="0"} 0"#,
    ] {
        assert!(text.contains(want), "missing {want} in:\n{text}");
    }
    hg.stop().await;
}

#[tokio::test]
async fn upstream_status_and_body_are_returned() {
    let (up, hg) = setup("").await;
    up.push(Reply {
        status: 418,
        body: "{\"teapot\":true}",
        headers: vec![("content-type", "application/json")],
        delay: Duration::ZERO,
    });
    let body = analysis("anl_tea");
    let a = post(
        &hg.url("/hooks/sigsentry"),
        &sign("sigsentry", SECRET, &body, None, now()),
        body,
    )
    .await;
    assert_eq!(a.status, 418);
    assert_eq!(&a.body[..], b"{\"teapot\":true}");
    hg.stop().await;
}

#[tokio::test]
async fn signature_errors_are_401_with_codes_and_nothing_is_forwarded() {
    let (up, hg) = setup("").await;
    let url = hg.url("/hooks/sigsentry");
    let body = analysis("anl_bad");

    let a = post(&url, &[], body.clone()).await;
    assert_eq!((a.status, a.code().as_str()), (401, "signature_missing"));

    let h = vec![(
        "x-sigsentry-signature".to_string(),
        "sha256=zz-not-hex".to_string(),
    )];
    let a = post(&url, &h, body.clone()).await;
    assert_eq!((a.status, a.code().as_str()), (401, "signature_malformed"));

    let h = sign("sigsentry", "some-other-secret", &body, None, now());
    let a = post(&url, &h, body.clone()).await;
    assert_eq!((a.status, a.code().as_str()), (401, "signature_mismatch"));
    // The expected signature is never echoed.
    let good = sign("sigsentry", SECRET, &body, None, now());
    assert!(!String::from_utf8_lossy(&a.body).contains(&good[0].1[7..]));

    // Tampered body: signed bytes differ by one byte of whitespace.
    let mut tampered = body.clone();
    tampered.push(b' ');
    let a = post(&url, &good, tampered).await;
    assert_eq!((a.status, a.code().as_str()), (401, "signature_mismatch"));

    assert!(up.received().is_empty());
    hg.stop().await;
}

#[tokio::test]
async fn stale_timestamp_is_refused() {
    let (up, hg) = setup("").await;
    let url = hg.url("/hooks/status");
    let body = br#"{"id":"evt_1","type":"incident.created","created_at":"2023-10-27T14:30:00Z","data":{}}"#;
    let stale = sign("statussentry", SECRET, body, None, now() - 3600);
    let a = post(&url, &stale, &body[..]).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (401, "timestamp_out_of_tolerance")
    );
    let future = sign("statussentry", SECRET, body, None, now() + 3600);
    let a = post(&url, &future, &body[..]).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (401, "timestamp_out_of_tolerance")
    );
    let fresh = sign("statussentry", SECRET, body, None, now());
    let a = post(&url, &fresh, &body[..]).await;
    assert_eq!(a.status, 200);
    assert_eq!(up.received().len(), 1);
    assert_eq!(up.received()[0].uri, "/status");
    hg.stop().await;
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_is_405() {
    let (_up, hg) = setup("").await;
    let a = post(&hg.url("/nope"), &[], "x").await;
    assert_eq!((a.status, a.code().as_str()), (404, "not_found"));
    // A prefix must end at a segment boundary.
    let a = post(&hg.url("/hooks/sigsentryX"), &[], "x").await;
    assert_eq!(a.status, 404);
    let a = send("GET", &hg.url("/hooks/sigsentry"), &[], "").await;
    assert_eq!((a.status, a.code().as_str()), (405, "method_not_allowed"));
    assert_eq!(a.headers["allow"], "POST");
    hg.stop().await;
}

#[tokio::test]
async fn oversized_body_is_413_announced_or_streamed() {
    let (up, hg) = setup("").await;
    // Announced by Content-Length: refused before the body is read.
    let big = vec![b'a'; 64 * 1024 + 1];
    let h = sign("sigsentry", SECRET, &big, None, now());
    let a = post(&hg.url("/hooks/sigsentry"), &h, big.clone()).await;
    assert_eq!((a.status, a.code().as_str()), (413, "payload_too_large"));

    // Chunked, no Content-Length: refused once the limit is crossed.
    let mut s = TcpStream::connect(hg.public).await.unwrap();
    let head = format!(
        "POST /hooks/sigsentry HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n{}: {}\r\n\r\n",
        h[0].0, h[0].1
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..20 {
        let chunk = vec![b'a'; 8192];
        let framed = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk,
            b"\r\n".to_vec(),
        ]
        .concat();
        if s.write_all(&framed).await.is_err() {
            break; // the server may close as soon as it answered
        }
    }
    let resp = read_response(&mut s, Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("payload_too_large"));
    assert!(up.received().is_empty());
    hg.stop().await;
}

#[tokio::test]
async fn announced_oversized_body_is_refused_before_it_is_sent() {
    let (up, hg) = setup("").await;
    // Only the head (and a few body bytes) of a request announcing one byte
    // over the limit: the rest never comes. A server that waited for the body
    // would answer 408 after body_timeout (500 ms), or nothing.
    let big = vec![b'a'; 64 * 1024 + 1];
    let h = sign("sigsentry", SECRET, &big, None, now());
    let mut s = TcpStream::connect(hg.public).await.unwrap();
    let head = format!(
        "POST /hooks/sigsentry HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n{}: {}\r\n\r\naaaaaaaa",
        big.len(),
        h[0].0,
        h[0].1
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let resp = read_response(&mut s, Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("payload_too_large"), "{resp}");
    assert!(up.received().is_empty());
    hg.stop().await;
}

/// Reads what the server sends until it closes, or until `deadline`.
async fn read_response(s: &mut TcpStream, deadline: Duration) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = tokio::time::Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut chunk)).await {
            Err(_) => panic!(
                "server neither answered nor closed within {deadline:?}: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if text.contains("\r\n\r\n") && text.contains("}}") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A body that arrives in several reads (its first frame is not the whole
/// announced length) is gathered and forwarded byte-identical, as is one
/// that comes whole.
#[tokio::test]
async fn a_body_sent_in_pieces_arrives_upstream_byte_identical() {
    let (up, hg) = setup("").await;
    let body = analysis("anl_pieces");
    let headers = sign("sigsentry", SECRET, &body, None, now());
    let mut head = format!(
        "POST /hooks/sigsentry HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut s = TcpStream::connect(hg.public).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let (first, rest) = body.split_at(body.len() / 3);
    s.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (second, third) = rest.split_at(rest.len() / 2);
    s.write_all(second).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(third).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut resp))
        .await
        .expect("answered and closed")
        .unwrap();
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let got = up.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, body, "body must be byte-identical");
    assert_eq!(
        got[0].headers["content-length"],
        body.len().to_string().as_str()
    );
    hg.stop().await;
}

#[tokio::test]
async fn slow_body_is_cut_off_with_408() {
    let (up, hg) = setup("").await;
    let mut s = TcpStream::connect(hg.public).await.unwrap();
    s.write_all(b"POST /hooks/sigsentry HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\nx-sigsentry-signature: sha256=00\r\n\r\n0123456789")
        .await
        .unwrap();
    // Never send the remaining 90 bytes: body_timeout (500ms) must fire.
    let resp = read_response(&mut s, Duration::from_secs(10)).await;
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains("request_timeout"));
    assert!(up.received().is_empty());
    hg.stop().await;
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let (_up, hg) = setup("").await;
    let mut s = TcpStream::connect(hg.public).await.unwrap();
    s.write_all(b"POST /hooks/sigsentry HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // The head is never finished: header_timeout (500ms) closes the connection.
    let mut buf = [0u8; 1024];
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // hyper may write a 408 before closing
            }
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "connection with an unfinished head must be closed"
    );
    hg.stop().await;
}

#[tokio::test]
async fn upstream_unreachable_is_502() {
    // A port that was just free: nothing listens there.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let toml = one_route_to(&format!("http://{dead_addr}/x"), "");
    let hg = Hookgate::start(&toml).await;
    let body = analysis("anl_502");
    let a = post(
        &hg.url("/hooks/sigsentry"),
        &sign("sigsentry", SECRET, &body, None, now()),
        body,
    )
    .await;
    assert_eq!((a.status, a.code().as_str()), (502, "upstream_unreachable"));
    hg.stop().await;
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let (up, hg) = setup("").await;
    up.push(Reply {
        status: 200,
        body: "late",
        headers: vec![],
        delay: Duration::from_secs(5),
    });
    let body = analysis("anl_504");
    let a = post(
        &hg.url("/hooks/sigsentry"),
        &sign("sigsentry", SECRET, &body, None, now()),
        body,
    )
    .await;
    assert_eq!((a.status, a.code().as_str()), (504, "upstream_timeout"));
    hg.stop().await;
}

#[tokio::test]
async fn readiness_turns_false_while_in_flight_requests_drain() {
    let (up, hg) = setup("").await;
    assert_eq!(
        send("GET", &hg.admin_url("/readyz"), &[], "").await.status,
        200
    );
    assert_eq!(
        send("GET", &hg.admin_url("/healthz"), &[], "").await.status,
        200
    );
    up.push(Reply {
        status: 200,
        body: "slow but fine",
        headers: vec![],
        delay: Duration::from_millis(800),
    });
    let body = analysis("anl_drain");
    let headers = sign("sigsentry", SECRET, &body, None, now());
    let url = hg.url("/hooks/sigsentry");
    let in_flight = tokio::spawn(async move { post(&url, &headers, body).await });
    up.wait_for(1, Duration::from_secs(10)).await;
    hg.shutdown.trigger();
    // While the request drains, the admin listener still answers: not ready.
    let r = send("GET", &hg.admin_url("/readyz"), &[], "").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "shutting_down");
    // The in-flight request completes normally.
    let a = in_flight.await.unwrap();
    assert_eq!((a.status, &a.body[..]), (200, &b"slow but fine"[..]));
    // New connections to the public listener are refused.
    assert!(TcpStream::connect(hg.public).await.is_err());
    tokio::time::timeout(Duration::from_secs(10), hg.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let (_up, hg) = setup("").await;
    // Connects and never sends a byte: must not hold a connection slot forever.
    let mut s = TcpStream::connect(hg.public).await.unwrap();
    let mut buf = [0u8; 256];
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "an idle connection must be closed by the header timeout"
    );
    hg.stop().await;
}

/// An upstream that sends its response head and then stalls mid-body cannot
/// hold the sender's connection: at `upstream.timeout` hookgate closes it
/// (the response stays incomplete, so the sender retries).
#[tokio::test]
async fn upstream_stalling_mid_body_is_cut_off_at_the_timeout() {
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stall_addr = stall.local_addr().unwrap();
    let upstream = tokio::spawn(async move {
        let (mut conn, _) = stall.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let _ = conn.read(&mut buf).await;
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
            .await
            .unwrap();
        // Hold the connection open far longer than the route's timeout.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(conn);
    });
    let hg = Hookgate::start(&one_route_to(
        &format!("http://{stall_addr}/app"),
        "timeout = \"1s\"",
    ))
    .await;

    let body = analysis("anl_stall");
    let mut head = format!(
        "POST /hooks/sigsentry HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in sign("sigsentry", SECRET, &body, None, now()) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut conn = TcpStream::connect(hg.public).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "hookgate kept the connection open after the upstream timeout"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("partial"), "the body is cut short: {text}");
    assert!(started.elapsed() < Duration::from_secs(10));
    upstream.abort();
    hg.stop().await;
}

/// `server.worker_threads`: the binary serves on a single-threaded runtime
/// (one worker) and on a multi-threaded one, and logs which it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_on_one_worker_and_on_several() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hookgate.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[log]
format = "json"
level = "info"
[[routes]]
path = "/hooks/sigsentry"
scheme = "sigsentry"
secrets = [{{ value = "{SECRET}" }}]
mode = "passthrough"
[routes.upstream]
url = "{up}"
"#,
            up = up.url("/app"),
        ),
    )
    .unwrap();
    for (n, workers) in [("1", 1), ("3", 3)] {
        let env = [("HOOKGATE_SERVER__WORKER_THREADS", std::ffi::OsStr::new(n))];
        let p = spawn_binary(&cfg, &env).wait_listening(Duration::from_secs(30));
        for i in 0..20 {
            let body = analysis(&format!("anl_rt_{n}_{i}"));
            let h = sign("sigsentry", SECRET, &body, None, now());
            let a = post(&p.url("/hooks/sigsentry"), &h, body).await;
            assert_eq!(a.status, 200, "{workers} workers: {:?}", a.body);
        }
        let logs = p.terminate(Duration::from_secs(10));
        let started = logs
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["fields"]["message"] == "runtime started")
            .unwrap_or_else(|| panic!("no runtime line in {logs:?}"));
        assert_eq!(started["fields"]["workers"], workers, "{started}");
    }
    assert_eq!(up.received().len(), 40);
}
