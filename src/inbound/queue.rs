//! Queue mode: extract the event id, then dedup + enqueue in one durable
//! transaction, then acknowledge.
//!
//! Invariant: the 2xx is written only after the store's commit returned;
//! every store failure (disk full, I/O error, queue over its limit) is a 503
//! with `Retry-After` and nothing half-written, so the sender retries.

use http::{HeaderMap, Response, StatusCode};

use crate::clock::now_ms;
use crate::config::DedupKey;
use crate::delivery::job::{StoredRequest, KIND_FORWARD};
use crate::error::{json, ApiError, Body};
use crate::inbound::body::BodyBuf;
use crate::inbound::{Inbound, Route};
use crate::store::{self, Enqueued, NewJob};

/// Event ids longer than this are refused: they are stored and indexed.
pub const MAX_EVENT_ID_LEN: usize = 1024;

/// The event id of a request, per the route's dedup key.
pub fn event_id(
    route: &Route,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<String>, ApiError> {
    let id = match &route.dedup {
        DedupKey::None => return Ok(None),
        DedupKey::Header(name) => match headers.get(name) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| ApiError::DedupKeyInvalid)?
                    .trim()
                    .to_string(),
            ),
        },
        // A key that is not required (a preset's default, or
        // `required = false`) is simply absent from a body that is not JSON
        // (Mailgun's legacy form posts); a required one makes it `invalid_json`.
        DedupKey::Body(pointer) => match json_pointer(body, pointer).or_else(|e| {
            if route.dedup_required {
                Err(e)
            } else {
                Ok(None)
            }
        })? {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(n @ serde_json::Value::Number(_)) => Some(n.to_string()),
            Some(_) => return Err(ApiError::DedupKeyInvalid),
        },
    };
    match id {
        Some(id) if id.is_empty() => missing(route),
        Some(id) if id.len() > MAX_EVENT_ID_LEN => Err(ApiError::DedupKeyInvalid),
        Some(id) => Ok(Some(id)),
        None => missing(route),
    }
}

/// The value at RFC 6901 `pointer` in the JSON document `body`, which must
/// be valid JSON as a whole (`invalid_json` otherwise). The document is not
/// built, and it is read once: the levels on the way are read key by key
/// (or element by element), everything beside the path is skipped by the
/// raw-value parser, and only the value found is parsed. Same answers as
/// `serde_json::Value::pointer`, without allocating the whole tree, with two
/// deliberate leniencies of the raw-value parser in the parts the pointer
/// does not reach (found by fuzzing, fuzz/README.md F2): string escapes
/// there are checked against the grammar, not decoded, so a lone UTF-16
/// surrogate escape (`"\ud830"`, which RFC 8259's grammar allows) is
/// accepted; and nesting there may exceed serde_json's 128 levels. The id
/// itself is always fully decoded. The body is forwarded byte for byte.
fn json_pointer(body: &[u8], pointer: &str) -> Result<Option<serde_json::Value>, ApiError> {
    use serde::de::DeserializeSeed;
    let invalid = |_| ApiError::InvalidJson;
    let tokens: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    // One pass over the document: the levels the pointer goes through are
    // read key by key, everything else is skipped by the raw-value parser
    // (which checks the grammar without building anything), and the
    // trailing bytes are checked too.
    let mut de = serde_json::Deserializer::from_slice(body);
    let raw = Walk { tokens: &tokens }
        .deserialize(&mut de)
        .map_err(invalid)?;
    de.end().map_err(invalid)?;
    raw.map(found).transpose()
}

/// The rest of a JSON pointer, applied to the value being read: answers the
/// raw value it reaches, if any (the last one, when a key repeats, as
/// `Value` keeps the last).
struct Walk<'p> {
    tokens: &'p [String],
}

impl<'de> serde::de::DeserializeSeed<'de> for Walk<'_> {
    type Value = Option<&'de serde_json::value::RawValue>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        use serde::Deserialize;
        if self.tokens.is_empty() {
            return <&serde_json::value::RawValue>::deserialize(d).map(Some);
        }
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Walk<'_> {
    type Value = Option<&'de serde_json::value::RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    // A scalar has nothing inside: the pointer reaches nothing.
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some((token, rest)) = self.tokens.split_first() else {
            return Ok(None);
        };
        let mut reached = None;
        while let Some(hit) = map.next_key_seed(KeyIs(token))? {
            if hit {
                reached = map.next_value_seed(Walk { tokens: rest })?;
            } else {
                map.next_value::<&serde_json::value::RawValue>()?;
            }
        }
        Ok(reached)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let Some((token, rest)) = self.tokens.split_first() else {
            return Ok(None);
        };
        // Indexes as RFC 6901 reads them: digits, no leading zero.
        let index = (!token.is_empty()
            && token.bytes().all(|b| b.is_ascii_digit())
            && (token == "0" || !token.starts_with('0')))
        .then(|| token.parse::<usize>().ok())
        .flatten();
        let mut reached = None;
        let mut i = 0usize;
        loop {
            if Some(i) == index {
                match seq.next_element_seed(Walk { tokens: rest })? {
                    Some(v) => reached = v,
                    None => break,
                }
            } else if seq
                .next_element::<&serde_json::value::RawValue>()?
                .is_none()
            {
                break;
            }
            i = i.saturating_add(1);
        }
        Ok(reached)
    }
}

/// Reads an object key (escapes decoded) and answers whether it is `.0`.
struct KeyIs<'t>(&'t str);

impl<'de> serde::de::DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// Parses the value a pointer found. A container nested past serde_json's
/// recursion limit (valid JSON all the same: the whole document was checked
/// above) is answered as an empty container of its kind: what matters is
/// that it is one (never an event id, `dedup_key_invalid`), not what it
/// holds. `Value::pointer` cannot answer for such documents at all.
fn found(raw: &serde_json::value::RawValue) -> Result<serde_json::Value, ApiError> {
    serde_json::from_str(raw.get()).or_else(|_| match raw.get().trim_start().as_bytes().first() {
        Some(b'[') => Ok(serde_json::Value::Array(Vec::new())),
        Some(b'{') => Ok(serde_json::Value::Object(serde_json::Map::new())),
        _ => Err(ApiError::InvalidJson),
    })
}

fn missing(route: &Route) -> Result<Option<String>, ApiError> {
    if route.dedup_required {
        Err(ApiError::DedupKeyMissing)
    } else {
        Ok(None)
    }
}

/// Room to keep in front of a queue-mode body for its stored header: the
/// header as received plus what the forwarded-header rewrite may add.
pub(super) fn headroom(parts: &http::request::Parts) -> usize {
    const FORWARDED_SLACK: usize = 256;
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    StoredRequest::head_len(&parts.method, pq, &parts.headers) + FORWARDED_SLACK
}

impl Inbound {
    pub(super) async fn enqueue(
        &self,
        route: &Route,
        parts: http::request::Parts,
        body: BodyBuf,
    ) -> Result<(&'static str, Response<Body>), ApiError> {
        let event_id = event_id(route, &parts.headers, body.bytes())?;
        let store = self.store.as_ref().ok_or(ApiError::Unavailable {
            retry_after_secs: 5,
        })?;
        let now = now_ms(&self.clock);
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let head =
            StoredRequest::encode_head(&parts.method, pq, &parts.headers, body.bytes().len());
        let payload = body.into_prefixed(&head);
        let dedup = event_id.map(|key| store::DedupKey {
            scope: route.path.clone(),
            key,
            expires_at: now + route.dedup_window.as_millis() as i64,
        });
        let job = NewJob {
            queue: route.path.clone(),
            kind: KIND_FORWARD.to_string(),
            payload,
            created_at: now,
            next_at: now,
            label: None,
        };
        // If the deadline passes, the write may still commit later; the
        // sender's retry is then answered as a duplicate of it: no loss, no
        // double delivery.
        let outcome = tokio::time::timeout(
            self.store_timeout,
            store.enqueue(job, dedup, Some(route.queue_limit)),
        )
        .await
        .unwrap_or_else(|_| {
            Err(store::StoreError::Unavailable(
                "commit deadline passed".into(),
            ))
        });
        match outcome {
            Ok(Enqueued::Accepted { id }) => {
                self.wake.notify_one();
                Ok((
                    "accepted",
                    json(
                        route.ack_status,
                        &Answer {
                            id: &id,
                            status: "accepted",
                        },
                    ),
                ))
            }
            Ok(Enqueued::Duplicate { first_id }) => {
                self.metrics
                    .duplicates
                    .with_label_values(&[&route.path])
                    .inc();
                Ok((
                    "duplicate",
                    json(
                        StatusCode::OK,
                        &Answer {
                            id: &first_id,
                            status: "duplicate",
                        },
                    ),
                ))
            }
            Ok(Enqueued::QueueFull) => {
                tracing::warn!(route = %route.path, limit = route.queue_limit, "queue full, refusing");
                Err(ApiError::Unavailable {
                    retry_after_secs: 30,
                })
            }
            Err(e) => {
                tracing::error!(route = %route.path, error = %e, "cannot store request");
                Err(ApiError::Unavailable {
                    retry_after_secs: 5,
                })
            }
        }
    }
}

/// The body of a queue-mode answer, `{"id": ..., "status": ...}`: the same
/// bytes as the `serde_json::Value` it replaces (whose keys are sorted),
/// without building a map per request.
#[derive(serde::Serialize)]
struct Answer<'a> {
    id: &'a str,
    status: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn answer_bytes_match_the_json_value_they_replace() {
        for (id, status) in [("01J9Z\"\\\u{1}é", "accepted"), ("abc", "duplicate")] {
            assert_eq!(
                serde_json::to_vec(&Answer { id, status }).unwrap(),
                serde_json::to_vec(&serde_json::json!({"status": status, "id": id})).unwrap()
            );
        }
    }

    /// What `serde_json::Value::pointer` answers, for comparison.
    fn by_value(body: &[u8], pointer: &str) -> Result<Option<serde_json::Value>, ()> {
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| ())?;
        Ok(v.pointer(pointer).cloned())
    }

    #[test]
    fn json_pointer_answers_as_value_pointer_does() {
        let docs: &[&[u8]] = &[
            br#"{"analysisId":"anl_1","a":{"b":[10,{"c":"x"}],"":1,"m~n":2,"s/t":3},"n":42,"f":1.5e2,"z":null}"#,
            br#" [ "x" , {"id" : "y"} ] "#,
            br#"{"id":"first","id":"second"}"#,
            br#""just a string""#,
            br#"{"a":[1,2,3]}"#,
        ];
        let pointers = [
            "",
            "/analysisId",
            "/a/b/0",
            "/a/b/1/c",
            "/a/b/01",
            "/a/b/2",
            "/a/",
            "/a/m~0n",
            "/a/s~1t",
            "/n",
            "/f",
            "/z",
            "/missing",
            "/0",
            "/1/id",
            "/id",
            "/a/-",
            "/a/b/x",
        ];
        for doc in docs {
            for p in pointers {
                assert_eq!(
                    json_pointer(doc, p).map_err(|_| ()),
                    by_value(doc, p),
                    "{} at {p:?}",
                    String::from_utf8_lossy(doc)
                );
            }
        }
    }

    #[test]
    fn invalid_documents_are_invalid_json_whatever_the_pointer_skips() {
        for doc in [
            &b"{\"id\":\"x\",\"rest\":[1,2"[..],
            b"{\"id\":\"x\"} trailing",
            b"",
            b"{\"id\":\"x\",\"bad\":tru}",
        ] {
            assert!(matches!(
                json_pointer(doc, "/id"),
                Err(ApiError::InvalidJson)
            ));
        }
    }

    fn json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| serde_json::json!(n)),
            "[a-z0-9~/]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z0-9~/]{0,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn agrees_with_value_pointer_on_json_documents(
            doc in json(),
            p in "(/([a-z0-9]|~0|~1){0,2}){0,3}",
        ) {
            let bytes = serde_json::to_vec_pretty(&doc).unwrap();
            prop_assert_eq!(json_pointer(&bytes, &p).map_err(|_| ()), by_value(&bytes, &p));
        }

        #[test]
        fn never_disagrees_with_value_pointer(
            doc in proptest::collection::vec(any::<u8>(), 0..64),
            p in "(/[a-z0-9~]{0,3}){0,3}",
        ) {
            prop_assert_eq!(json_pointer(&doc, &p).map_err(|_| ()), by_value(&doc, &p));
        }
    }
}
