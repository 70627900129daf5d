//! The OpenAPI document against the running router: every documented
//! operation is served (never the "no such route" 404 nor a 405) and
//! answers one of its documented statuses; the document is served without
//! a key, byte for byte the checked-in file.

mod common;

use std::path::Path;

use common::sender::{config, KEY};
use common::*;
use hookgate::outbound::api::ROUTES;
use serde_json::Value;

fn random_uuid() -> String {
    uuid::Builder::from_random_bytes(rand::random::<[u8; 16]>())
        .into_uuid()
        .to_string()
}

async fn call(h: &Hookgate, method: &str, path: &str, key: Option<&str>, body: &str) -> Answer {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(k) = key {
        headers.push(("authorization".to_string(), format!("Bearer {k}")));
    }
    send(
        method,
        &h.admin_url(path),
        &headers,
        body.as_bytes().to_vec(),
    )
    .await
}

fn checked_in() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/outbound/openapi.json"))
        .expect("src/outbound/openapi.json")
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hookgate::start(&config(dir.path(), "")).await;

    // The document: no key needed, the checked-in bytes, JSON.
    let a = call(&h, "GET", "/v1/openapi.json", None, "").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "application/json");
    assert!(a.body[..] == checked_in()[..], "served document differs");
    let doc = a.json();

    for (method, template) in ROUTES {
        let path = template.replace("{id}", &random_uuid());
        // Empty objects: validation refuses them, so nothing is created or
        // enqueued; GET and DELETE send no body.
        let body = if matches!(*method, "POST" | "PUT" | "PATCH") {
            "{}"
        } else {
            ""
        };
        let a = call(&h, method, &path, Some(KEY), body).await;
        let what = format!(
            "{method} {path}: {} {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        );
        assert_ne!(a.status, 405, "{what}");
        let v = a.json();
        if a.status == 404 {
            assert_eq!(v["error"]["message"], "no such resource", "{what}");
        }
        if *template != "/v1/openapi.json" {
            assert!(v["success"].is_boolean(), "{what}");
        }
        let documented = &doc["paths"][template][method.to_lowercase()]["responses"];
        assert!(
            documented.get(a.status.to_string()).is_some(),
            "{what}: status not documented"
        );
        // Nothing was created.
        assert_ne!(a.status, 201, "{what}");
    }

    // Unknown paths are told apart from unknown ids.
    let a = call(&h, "GET", "/v1/nope", Some(KEY), "").await;
    assert_eq!(a.status, 404);
    let v = a.json();
    assert_eq!(v["success"], Value::Bool(false));
    assert_eq!(v["error"]["code"], "NOT_FOUND");
    assert_eq!(v["error"]["message"], "no such route");
    let a = call(
        &h,
        "GET",
        &format!("/v1/webhooks/{}", random_uuid()),
        Some(KEY),
        "",
    )
    .await;
    assert_eq!((a.status, a.code()), (404, "NOT_FOUND".to_string()));
    assert_eq!(a.json()["error"]["message"], "no such resource");

    // The other routes still need a key; another method on the document's
    // path is a 405.
    let a = call(&h, "GET", "/v1/webhooks", None, "").await;
    assert_eq!((a.status, a.code()), (401, "UNAUTHORIZED".to_string()));
    let a = call(&h, "POST", "/v1/openapi.json", Some(KEY), "{}").await;
    assert_eq!(
        (a.status, a.code()),
        (405, "METHOD_NOT_ALLOWED".to_string())
    );

    h.stop().await;
}
