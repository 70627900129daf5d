//! Event id extraction for dedup (`inbound::queue::event_id`): the JSON
//! pointer into the body and the header, on a route built from a real config.
//!
//! Input (see `src/lib.rs`):
//!
//! ```text
//! <dedup key>                  body:/pointer | header:name | none (as in the config)
//! <required|optional>          whether a missing key is refused
//! <header lines>
//!
//! <body>
//! ```
//!
//! Oracles: nothing panics; an id is never empty nor over
//! `MAX_EVENT_ID_LEN`; and the body pointer answers exactly as the reference,
//! `serde_json::Value::pointer` on the parsed document, would (its doc
//! promises "same answers as `Value::pointer`"), for every document `Value`
//! parses.
#![no_main]

use std::cell::RefCell;

use hookgate::config::DedupKey;
use hookgate::delivery::client::HttpClient;
use hookgate::error::ApiError;
use hookgate::inbound::queue::{event_id, MAX_EVENT_ID_LEN};
use hookgate::inbound::Route;
use hookgate_fuzz::{header_map, lines, split_head, text};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const CONFIG: &str = r#"
[[routes]]
path = "/hooks/fuzz"
scheme = "sigsentry"
secrets = [{ value = "fuzz-secret" }]
mode = "queue"
dedup = { key = "body:/analysisId" }
[routes.upstream]
url = "http://127.0.0.1:9/"
"#;

thread_local! {
    static ROUTE: RefCell<Route> = RefCell::new({
        let config = hookgate::config::from_toml(CONFIG).expect("fuzz config is valid");
        let metrics = hookgate::metrics::Metrics::new();
        Route::from_config(&config.routes[0], &config, &HttpClient::new(), &metrics)
            .expect("route")
    });
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = split_head(data);
    let mut lines = lines(head);
    let Ok(dedup) = DedupKey::parse(&text(lines.next())) else {
        return;
    };
    let required = text(lines.next()).trim() != "optional";
    let headers = header_map(lines);

    ROUTE.with(|route| {
        let mut route = route.borrow_mut();
        route.dedup = dedup.clone();
        route.dedup_required = required;
        let got = event_id(&route, &headers, body);
        if let Ok(Some(id)) = &got {
            assert!(!id.is_empty() && id.len() <= MAX_EVENT_ID_LEN, "{id:?}");
        }
        let missing = if required {
            Err(ApiError::DedupKeyMissing)
        } else {
            Ok(None)
        };
        let want = match &dedup {
            DedupKey::None => Ok(None),
            DedupKey::Header(name) => match headers.get(name).map(|v| v.to_str()) {
                None => missing,
                Some(Err(_)) => Err(ApiError::DedupKeyInvalid),
                Some(Ok(v)) => check_len(v.trim().to_owned(), missing),
            },
            DedupKey::Body(pointer) => match serde_json::from_slice::<Value>(body) {
                // Documents only serde_json's skipping parser accepts are
                // not compared. `json_pointer` validates with it (as
                // `RawValue` does), which accepts nesting deeper than the
                // 128 levels `Value` allows (by design, see `found` in
                // queue.rs) and does not decode string escapes, so a lone
                // surrogate (`"\ud830"`) in a string the pointer skips is
                // accepted where `Value` refuses the document (finding F2
                // in fuzz/README.md; documented on `json_pointer`).
                Err(_) if lenient_only(body) => return,
                // Not JSON: an optional key is absent, a required one refused.
                Err(_) if required => Err(ApiError::InvalidJson),
                Err(_) => Ok(None),
                Ok(doc) => match doc.pointer(pointer) {
                    None | Some(Value::Null) => missing,
                    Some(Value::String(s)) => check_len(s.clone(), missing),
                    Some(n @ Value::Number(_)) => check_len(n.to_string(), missing),
                    Some(_) => Err(ApiError::DedupKeyInvalid),
                },
            },
        };
        assert_eq!(got, want, "dedup {dedup:?}");
    });
});

fn check_len(
    id: String,
    missing: Result<Option<String>, ApiError>,
) -> Result<Option<String>, ApiError> {
    if id.is_empty() {
        missing
    } else if id.len() > MAX_EVENT_ID_LEN {
        Err(ApiError::DedupKeyInvalid)
    } else {
        Ok(Some(id))
    }
}

/// Whether serde_json's skipping parser (what `RawValue` uses) accepts
/// `body` although building a `Value` from it fails.
fn lenient_only(body: &[u8]) -> bool {
    serde_json::from_slice::<&serde_json::value::RawValue>(body).is_ok()
}
