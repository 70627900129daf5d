//! Queue mode: extract the event id, then dedup + enqueue in one durable
//! transaction, then acknowledge.
//!
//! Invariant: the 2xx is written only after the store's commit returned;
//! every store failure (disk full, I/O error, queue over its limit) is a 503
//! with `Retry-After` and nothing half-written, so the sender retries.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};

use crate::clock::now_ms;
use crate::config::DedupKey;
use crate::delivery::job::{StoredRequest, KIND_FORWARD};
use crate::error::{json, ApiError, Body};
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
        DedupKey::Body(pointer) => {
            let v: serde_json::Value =
                serde_json::from_slice(body).map_err(|_| ApiError::InvalidJson)?;
            match v.pointer(pointer) {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(n @ serde_json::Value::Number(_)) => Some(n.to_string()),
                Some(_) => return Err(ApiError::DedupKeyInvalid),
            }
        }
    };
    match id {
        Some(id) if id.is_empty() => missing(route),
        Some(id) if id.len() > MAX_EVENT_ID_LEN => Err(ApiError::DedupKeyInvalid),
        Some(id) => Ok(Some(id)),
        None => missing(route),
    }
}

fn missing(route: &Route) -> Result<Option<String>, ApiError> {
    if route.dedup_required {
        Err(ApiError::DedupKeyMissing)
    } else {
        Ok(None)
    }
}

impl Inbound {
    pub(super) async fn enqueue(
        &self,
        route: &Route,
        parts: http::request::Parts,
        body: Bytes,
    ) -> Result<(&'static str, Response<Body>), ApiError> {
        let event_id = event_id(route, &parts.headers, &body)?;
        let store = self.store.as_ref().ok_or(ApiError::Unavailable {
            retry_after_secs: 5,
        })?;
        let now = now_ms(&self.clock);
        let payload = StoredRequest {
            method: parts.method,
            path_and_query: parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
            headers: parts.headers,
            body,
        }
        .encode();
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
                        &serde_json::json!({"status": "accepted", "id": id}),
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
                        &serde_json::json!({"status": "duplicate", "id": first_id}),
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
