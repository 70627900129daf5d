//! Checks of `openapi.json` (the document `GET /v1/openapi.json` serves)
//! against the router: the same operations as [`ROUTES`], every `$ref`
//! resolvable, the error codes those of [`crate::error::V1Error`].

use std::collections::BTreeSet;

use serde_json::Value;

use super::api::{OPENAPI_JSON, ROUTES};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn doc() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
}

/// The (METHOD, path) of every operation of the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    let mut out = BTreeSet::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for method in item.keys().filter(|k| METHODS.contains(&k.as_str())) {
            let fresh = out.insert((method.to_uppercase(), path.clone()));
            assert!(fresh, "{method} {path} twice");
        }
    }
    out
}

fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn the_document_is_openapi_3_1() {
    let d = doc();
    let v = d["openapi"].as_str().expect("openapi is a string");
    assert!(v.starts_with("3.1"), "openapi: {v}");
    assert!(d["info"]["title"].is_string() && d["info"]["version"].is_string());
}

#[test]
fn the_document_has_exactly_the_routes_served() {
    let documented = operations(&doc());
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(served.len(), ROUTES.len(), "ROUTES has a duplicate");
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not documented: {undocumented:?}; documented but not served: {unserved:?}"
    );
}

#[test]
fn every_ref_resolves() {
    let d = doc();
    let mut all = Vec::new();
    refs(&d, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{r}: only local references are used"));
        assert!(d.pointer(pointer).is_some(), "{r} does not resolve");
    }
}

#[test]
fn operations_are_described_and_the_error_codes_are_the_apis() {
    let d = doc();
    let mut ids = BTreeSet::new();
    for (method, path) in operations(&d) {
        let op = &d["paths"][&path][method.to_lowercase()];
        let id = op["operationId"].as_str().expect("operationId");
        assert!(ids.insert(id.to_string()), "operationId {id} twice");
        assert!(op["description"].is_string(), "{method} {path}");
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path}: no success answer"
        );
        // Everything but the document itself needs an API key.
        let public = op.get("security") == Some(&Value::Array(Vec::new()));
        assert_eq!(public, path == "/v1/openapi.json", "{method} {path}");
        if !public {
            assert!(responses.contains_key("401"), "{method} {path}: no 401");
        }
        if path.contains("{id}") {
            assert!(responses.contains_key("404"), "{method} {path}: no 404");
        }
    }
    // The code enum is exactly the codes V1Error can carry.
    let documented: BTreeSet<&str> = d["components"]["schemas"]["Error"]["properties"]["error"]
        ["properties"]["code"]["enum"]
        .as_array()
        .expect("the code enum")
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let source = include_str!("../error.rs");
    let used: BTreeSet<&str> = source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("code: \""))
        .filter_map(|l| l.strip_suffix("\","))
        .collect();
    assert!(used.contains("NOT_FOUND"), "{used:?}");
    assert_eq!(documented, used);
}
