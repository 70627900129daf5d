//! The `/v1/` API of the sender, served on the admin listener: channels
//! (seed 001), webhook endpoints (seed 004), intake of analyses and events,
//! deliveries, and a "send test" per destination.
//!
//! Every answer is `{"success":true,"data":...}` or seed 001's error
//! envelope ([`V1Error`]). Reads never show credentials or signing secrets:
//! only a masked hint (an endpoint's secret is shown once, at creation and
//! at rotation).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Map, Value};

use crate::error::{self, Body, V1Error};
use crate::store::{DedupKey, Destination, Fanout, JobState, JobSummary, NewJob, StoreError};

use super::analysis::{Analysis, Severity};
use super::dest::{self, Credentials, Kind, SigningSecret, Spec};
use super::keys::{Caller, Permission};
use super::{queue_of, Sender, KIND_ANALYSIS, KIND_EVENT};

/// Deliveries shown per destination (seed 004's drawer).
pub const DELIVERIES_SHOWN: usize = 50;

/// Longest `analysisId` or event id.
const ID_MAX: usize = 255;

/// The OpenAPI 3.1 document of this API, served at `GET /v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Every (method, OpenAPI path template) that [`Sender::handle`] serves;
/// `openapi.json` documents exactly these operations (checked by the tests).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/config/notifications"),
    ("GET", "/v1/config/notifications"),
    ("GET", "/v1/config/notifications/{id}"),
    ("PUT", "/v1/config/notifications/{id}"),
    ("DELETE", "/v1/config/notifications/{id}"),
    ("GET", "/v1/config/notifications/{id}/deliveries"),
    ("POST", "/v1/config/notifications/{id}/test"),
    ("POST", "/v1/webhooks"),
    ("GET", "/v1/webhooks"),
    ("GET", "/v1/webhooks/{id}"),
    ("PUT", "/v1/webhooks/{id}"),
    ("PATCH", "/v1/webhooks/{id}"),
    ("PATCH", "/api/sch/org/webhooks/{id}"),
    ("DELETE", "/v1/webhooks/{id}"),
    ("GET", "/v1/webhooks/{id}/deliveries"),
    ("POST", "/v1/webhooks/{id}/test"),
    ("POST", "/v1/webhooks/{id}/rotate-secret"),
    ("POST", "/v1/analyses"),
    ("POST", "/v1/events"),
    ("GET", "/v1/openapi.json"),
];

fn ok(status: StatusCode, data: Value) -> Result<Response<Body>, V1Error> {
    Ok(error::json(status, &json!({"success": true, "data": data})))
}

fn store_err(e: StoreError) -> V1Error {
    tracing::warn!(error = %e, "sender: store error");
    V1Error::unavailable()
}

/// A random (v4) UUID, seed 001's channel id shape.
fn new_uuid() -> String {
    uuid::Builder::from_random_bytes(rand::random::<[u8; 16]>())
        .into_uuid()
        .to_string()
}

/// A new endpoint signing secret: `whsec_` + base64 of 24 random bytes.
fn new_signing_secret() -> String {
    use base64::Engine as _;
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 24]>())
    )
}

/// `evt_` + 16 random hex digits.
fn new_event_id() -> String {
    format!("evt_{}", hex::encode(rand::random::<[u8; 8]>()))
}

fn rfc3339_ms(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

fn opt_time(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |m| Value::String(rfc3339_ms(m)))
}

impl Sender {
    /// Serves one `/v1/` (or `/api/sch/org/webhooks/`) request.
    pub async fn handle(self: &Arc<Self>, req: Request<hyper::body::Incoming>) -> Response<Body> {
        match self.route(req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    async fn route(
        self: &Arc<Self>,
        req: Request<hyper::body::Incoming>,
    ) -> Result<Response<Body>, V1Error> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        // Documentation, without secrets: served before authentication.
        if method == Method::GET && path == "/v1/openapi.json" {
            let mut r = Response::new(error::full(OPENAPI_JSON));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            return Ok(r);
        }
        let caller = match self.keys.authenticate(
            req.headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
            req.headers().get("x-project-id").map(|v| v.as_bytes()),
        ) {
            Ok(c) => c,
            Err(e) => {
                if e.code == "UNAUTHORIZED" {
                    self.metrics.auth_failures.inc();
                }
                return Err(e);
            }
        };
        let body = self.read_body(req).await?;
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (&method, segs.as_slice()) {
            (&Method::POST, ["v1", "config", "notifications"]) => {
                caller.require(Permission::ConfigWrite)?;
                self.create_channel(&caller, &body).await
            }
            (&Method::GET, ["v1", "config", "notifications"]) => {
                caller.require(Permission::ConfigRead)?;
                self.list(&caller, false)
            }
            (&Method::GET, ["v1", "config", "notifications", id]) => {
                caller.require(Permission::ConfigRead)?;
                let d = self.find(&caller, id, false)?;
                ok(StatusCode::OK, d)
            }
            (&Method::PUT, ["v1", "config", "notifications", id]) => {
                caller.require(Permission::ConfigWrite)?;
                self.update(&caller, id, false, &body).await
            }
            (&Method::DELETE, ["v1", "config", "notifications", id]) => {
                caller.require(Permission::ConfigWrite)?;
                self.delete(&caller, id, false).await
            }
            (&Method::GET, ["v1", "config", "notifications", id, "deliveries"]) => {
                caller.require(Permission::ConfigRead)?;
                self.deliveries(&caller, id, false).await
            }
            (&Method::POST, ["v1", "config", "notifications", id, "test"]) => {
                caller.require(Permission::ConfigWrite)?;
                self.send_test(&caller, id, false).await
            }
            (&Method::POST, ["v1", "webhooks"]) => {
                caller.require(Permission::ConfigWrite)?;
                self.create_endpoint(&caller, &body).await
            }
            (&Method::GET, ["v1", "webhooks"]) => {
                caller.require(Permission::ConfigRead)?;
                self.list(&caller, true)
            }
            (&Method::GET, ["v1", "webhooks", id]) => {
                caller.require(Permission::ConfigRead)?;
                let d = self.find(&caller, id, true)?;
                ok(StatusCode::OK, d)
            }
            (&Method::PUT | &Method::PATCH, ["v1", "webhooks", id])
            | (&Method::PATCH, ["api", "sch", "org", "webhooks", id]) => {
                caller.require(Permission::ConfigWrite)?;
                self.update(&caller, id, true, &body).await
            }
            (&Method::DELETE, ["v1", "webhooks", id]) => {
                caller.require(Permission::ConfigWrite)?;
                self.delete(&caller, id, true).await
            }
            (&Method::GET, ["v1", "webhooks", id, "deliveries"]) => {
                caller.require(Permission::ConfigRead)?;
                self.deliveries(&caller, id, true).await
            }
            (&Method::POST, ["v1", "webhooks", id, "test"]) => {
                caller.require(Permission::ConfigWrite)?;
                self.send_test(&caller, id, true).await
            }
            (&Method::POST, ["v1", "webhooks", id, "rotate-secret"]) => {
                caller.require(Permission::ConfigWrite)?;
                self.rotate_secret(&caller, id).await
            }
            (&Method::POST, ["v1", "analyses"]) => {
                caller.require(Permission::EventsWrite)?;
                self.post_analysis(&caller, body).await
            }
            (&Method::POST, ["v1", "events"]) => {
                caller.require(Permission::EventsWrite)?;
                self.post_event(&caller, &body).await
            }
            (_, ["v1", "config", "notifications", ..])
            | (_, ["v1", "webhooks", ..])
            | (_, ["v1", "analyses"])
            | (_, ["v1", "events"])
            | (_, ["api", "sch", "org", "webhooks", _])
            | (_, ["v1", "openapi.json"]) => Err(V1Error::method_not_allowed()),
            _ => Err(V1Error::no_route()),
        }
    }

    async fn read_body(&self, req: Request<hyper::body::Incoming>) -> Result<Bytes, V1Error> {
        let limit = self.settings.max_body;
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(V1Error::too_large(limit));
        }
        let limited = Limited::new(
            req.into_body(),
            usize::try_from(limit).unwrap_or(usize::MAX),
        );
        match limited.collect().await {
            Ok(b) => Ok(b.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(V1Error::too_large(limit)),
            Err(_) => Err(V1Error::validation("body: could not be read")),
        }
    }

    /// The public view of a destination (no credentials).
    fn view(d: &super::Dest) -> Value {
        let r = &d.row;
        let health = dest::health(r.active, r.disabled_at, r.last_ok);
        if d.kind == Kind::Endpoint {
            json!({
                "id": r.id,
                "url": d.spec.url,
                "description": d.spec.name,
                "events": d.spec.events,
                "isActive": r.active,
                "health": health,
                "autoDisabledAt": opt_time(r.disabled_at),
                "lastDeliveryAt": opt_time(r.last_attempt_at),
                "createdAt": rfc3339_ms(r.created_at),
                "updatedAt": rfc3339_ms(r.updated_at),
            })
        } else {
            json!({
                "id": r.id,
                "type": d.kind.as_str(),
                "name": d.spec.name,
                "severityThreshold": d.spec.threshold.map(Severity::as_str),
                "active": r.active,
                "health": health,
                "credentialsHint": d.spec.hint,
                "autoDisabledAt": opt_time(r.disabled_at),
                "lastDeliveryAt": opt_time(r.last_attempt_at),
                "createdAt": rfc3339_ms(r.created_at),
                "updatedAt": rfc3339_ms(r.updated_at),
            })
        }
    }

    fn list(&self, caller: &Caller, endpoints: bool) -> Result<Response<Body>, V1Error> {
        let dests = self.dests();
        let mut items: Vec<&super::Dest> = dests
            .values()
            .filter(|d| d.row.project == caller.project && (d.kind == Kind::Endpoint) == endpoints)
            .collect();
        items.sort_by(|a, b| (a.row.created_at, &a.row.id).cmp(&(b.row.created_at, &b.row.id)));
        ok(
            StatusCode::OK,
            Value::Array(items.into_iter().map(Self::view).collect()),
        )
    }

    fn find(&self, caller: &Caller, id: &str, endpoint: bool) -> Result<Value, V1Error> {
        let dests = self.dests();
        dests
            .get(id)
            .filter(|d| d.row.project == caller.project && (d.kind == Kind::Endpoint) == endpoint)
            .map(Self::view)
            .ok_or_else(V1Error::not_found)
    }

    fn check_quota(&self, project: &str) -> Result<(), V1Error> {
        let n = self
            .dests()
            .values()
            .filter(|d| d.row.project == project)
            .count();
        if n >= usize::try_from(self.settings.channel_quota).unwrap_or(usize::MAX) {
            return Err(V1Error::quota(format!(
                "the project already has {n} channels and endpoints (sender.channel_quota = {})",
                self.settings.channel_quota
            )));
        }
        Ok(())
    }

    /// Stores a new destination and installs it; answers its id.
    async fn add(
        self: &Arc<Self>,
        caller: &Caller,
        kind: Kind,
        spec: Spec,
        creds: &Credentials,
    ) -> Result<String, V1Error> {
        let id = new_uuid();
        let now = self.now();
        let sealed = self.seal(&id, creds).map_err(|e| {
            tracing::error!(error = %e, "cannot seal credentials");
            V1Error::unavailable()
        })?;
        let row = Destination {
            id: id.clone(),
            project: caller.project.clone(),
            kind: kind.as_str().into(),
            spec: serde_json::to_string(&spec).unwrap_or_default(),
            sealed,
            active: true,
            disabled_at: None,
            created_at: now,
            updated_at: now,
            last_attempt_at: None,
            last_ok: None,
            exhausted_streak: 0,
        };
        // The quota is checked and the row installed under one lock of
        // creation order (persist), so two concurrent creates cannot both
        // pass the last free slot.
        let _order = self.persist.lock().await;
        self.check_quota(&caller.project)?;
        self.store
            .put_destination(row.clone())
            .await
            .map_err(store_err)?;
        self.install(row, kind, spec);
        drop(_order);
        self.publish_health();
        tracing::info!(id = %id, r#type = kind.as_str(), project = %caller.project, key = %caller.key, "destination created");
        Ok(id)
    }

    async fn create_channel(
        self: &Arc<Self>,
        caller: &Caller,
        body: &[u8],
    ) -> Result<Response<Body>, V1Error> {
        let obj = dest::object(body)?;
        dest::reject_unknown(&obj, &["type", "name", "credentials", "severityThreshold"])?;
        let kind = match obj.get("type") {
            None | Some(Value::Null) => return Err(V1Error::validation("type: is required")),
            Some(Value::String(t)) => Kind::parse(t).filter(|k| *k != Kind::Endpoint),
            Some(_) => None,
        }
        .ok_or_else(|| {
            V1Error::validation(
                "type: must be one of slack, teams, discord, google_chat, webhook, email",
            )
        })?;
        let name = dest::check_name("name", obj.get("name"), true)?.unwrap_or_default();
        let threshold = dest::check_threshold(obj.get("severityThreshold"), true)?;
        let (creds, hint) =
            dest::channel_credentials(kind, obj.get("credentials"), self.settings.rules)?;
        if kind == Kind::Email && self.smtp.is_none() {
            return Err(V1Error::validation(
                "type: email channels need [sender.smtp] in the configuration",
            ));
        }
        let spec = Spec {
            name,
            threshold,
            events: Vec::new(),
            url: None,
            hint,
        };
        let id = self.add(caller, kind, spec, &creds).await?;
        ok(StatusCode::CREATED, json!({ "id": id }))
    }

    async fn create_endpoint(
        self: &Arc<Self>,
        caller: &Caller,
        body: &[u8],
    ) -> Result<Response<Body>, V1Error> {
        let obj = dest::object(body)?;
        dest::reject_unknown(&obj, &["url", "description", "events"])?;
        let url = match obj.get("url") {
            Some(Value::String(u)) => u.clone(),
            None | Some(Value::Null) => return Err(V1Error::validation("url: is required")),
            Some(_) => return Err(V1Error::validation("url: must be a string")),
        };
        dest::check_url("url", &url, self.settings.rules)?;
        let description = match obj.get("description") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s))
                if s.chars().count() <= 1000 && !s.chars().any(char::is_control) =>
            {
                s.clone()
            }
            Some(_) => {
                return Err(V1Error::validation(
                    "description: must be a string of at most 1000 characters",
                ))
            }
        };
        let events = dest::check_events(obj.get("events"), true)?.unwrap_or_default();
        let secret = new_signing_secret();
        let creds = Credentials {
            signing: vec![SigningSecret {
                secret: secret.clone(),
                until: None,
            }],
            ..Default::default()
        };
        let spec = Spec {
            name: description,
            threshold: None,
            events,
            hint: dest::url_hint(&url),
            url: Some(url),
        };
        let id = self.add(caller, Kind::Endpoint, spec, &creds).await?;
        let mut v = self.find(caller, &id, true)?;
        // Shown this once.
        v["secret"] = json!(secret);
        ok(StatusCode::CREATED, v)
    }

    /// PUT of a channel (name, credentials, severityThreshold, active);
    /// PUT/PATCH of an endpoint (url, description, events, isActive).
    async fn update(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
        endpoint: bool,
        body: &[u8],
    ) -> Result<Response<Body>, V1Error> {
        let obj = dest::object(body)?;
        let (kind, mut spec, mut row) = {
            let dests = self.dests();
            let d = dests
                .get(id)
                .filter(|d| {
                    d.row.project == caller.project && (d.kind == Kind::Endpoint) == endpoint
                })
                .ok_or_else(V1Error::not_found)?;
            (d.kind, d.spec.clone(), d.row.clone())
        };
        let mut creds_changed: Option<Credentials> = None;
        let active_key;
        if endpoint {
            dest::reject_unknown(&obj, &["url", "description", "events", "isActive"])?;
            active_key = "isActive";
            if let Some(v) = obj.get("url").filter(|v| !v.is_null()) {
                let url = v
                    .as_str()
                    .ok_or_else(|| V1Error::validation("url: must be a string"))?;
                dest::check_url("url", url, self.settings.rules)?;
                spec.hint = dest::url_hint(url);
                spec.url = Some(url.to_owned());
            }
            if let Some(v) = obj.get("description").filter(|v| !v.is_null()) {
                match v.as_str() {
                    Some(s) if s.chars().count() <= 1000 && !s.chars().any(char::is_control) => {
                        spec.name = s.to_owned()
                    }
                    _ => {
                        return Err(V1Error::validation(
                            "description: must be a string of at most 1000 characters",
                        ))
                    }
                }
            }
            if let Some(events) = dest::check_events(obj.get("events"), false)? {
                spec.events = events;
            }
        } else {
            dest::reject_unknown(
                &obj,
                &["type", "name", "credentials", "severityThreshold", "active"],
            )?;
            active_key = "active";
            if let Some(t) = obj.get("type").filter(|v| !v.is_null()) {
                if t.as_str() != Some(kind.as_str()) {
                    return Err(V1Error::validation(
                        "type: cannot be changed; create a new channel",
                    ));
                }
            }
            if let Some(name) = dest::check_name("name", obj.get("name"), false)? {
                spec.name = name;
            }
            if let Some(t) = dest::check_threshold(obj.get("severityThreshold"), false)? {
                spec.threshold = Some(t);
            }
            if obj.get("credentials").is_some_and(|v| !v.is_null()) {
                let (creds, hint) =
                    dest::channel_credentials(kind, obj.get("credentials"), self.settings.rules)?;
                spec.hint = hint;
                creds_changed = Some(creds);
            }
        }
        let mut reenabled = false;
        match obj.get(active_key) {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => {
                // Switching on clears the auto-disabled state (seed 004).
                if *b && (!row.active || row.disabled_at.is_some()) {
                    reenabled = true;
                    row.disabled_at = None;
                    row.exhausted_streak = 0;
                }
                row.active = *b;
            }
            Some(_) => {
                return Err(V1Error::validation(format!(
                    "{active_key}: must be true or false"
                )))
            }
        }
        if let Some(c) = &creds_changed {
            row.sealed = self.seal(id, c).map_err(|e| {
                tracing::error!(error = %e, "cannot seal credentials");
                V1Error::unavailable()
            })?;
        }
        row.spec = serde_json::to_string(&spec).unwrap_or_default();
        row.updated_at = self.now();
        self.commit_row(row, spec, reenabled).await?;
        if reenabled {
            self.engine.wake();
            tracing::info!(id = %id, "destination enabled");
        }
        ok(StatusCode::OK, self.find(caller, id, endpoint)?)
    }

    /// Stores `row` and makes it current in memory. The health fields are
    /// the engine's: they are taken from memory, not from `row` (a copy
    /// made before the engine may have moved them), except that a
    /// re-enable clears the auto-disabled state.
    async fn commit_row(
        &self,
        row: Destination,
        spec: Spec,
        reenable: bool,
    ) -> Result<(), V1Error> {
        let _order = self.persist.lock().await;
        let id = row.id.clone();
        let keep_health = |r: &mut Destination, cur: &Destination| {
            r.last_attempt_at = cur.last_attempt_at;
            r.last_ok = cur.last_ok;
            if !reenable {
                r.disabled_at = cur.disabled_at;
                r.exhausted_streak = cur.exhausted_streak;
            }
        };
        let merged = {
            let dests = self.dests();
            let cur = dests.get(&id).ok_or_else(V1Error::not_found)?;
            let mut r = row;
            keep_health(&mut r, &cur.row);
            r
        };
        self.store
            .put_destination(merged.clone())
            .await
            .map_err(store_err)?;
        let mut dests = self.dests();
        if let Some(d) = dests.get_mut(&id) {
            let mut r = merged;
            keep_health(&mut r, &d.row);
            d.row = r;
            d.spec = spec;
            let open = d.is_open();
            d.ctl.set_paused(!open);
        }
        drop(dests);
        self.publish_health();
        Ok(())
    }

    async fn delete(
        &self,
        caller: &Caller,
        id: &str,
        endpoint: bool,
    ) -> Result<Response<Body>, V1Error> {
        self.find(caller, id, endpoint)?;
        {
            let _order = self.persist.lock().await;
            self.store.delete_destination(id).await.map_err(store_err)?;
            self.uninstall(id);
        }
        // Pending deliveries are cancelled with their history; one being
        // attempted right now finishes, and nothing follows it.
        let n = self
            .store
            .delete_queue(&queue_of(id))
            .await
            .map_err(store_err)?;
        self.publish_health();
        tracing::info!(id = %id, cancelled = n, "destination deleted");
        ok(StatusCode::OK, json!({ "id": id, "deleted": true }))
    }

    async fn rotate_secret(&self, caller: &Caller, id: &str) -> Result<Response<Body>, V1Error> {
        self.find(caller, id, true)?;
        let (mut row, spec) = {
            let dests = self.dests();
            let d = dests.get(id).ok_or_else(V1Error::not_found)?;
            (d.row.clone(), d.spec.clone())
        };
        let mut creds = self.credentials(&row).map_err(|e| {
            tracing::error!(id = %id, error = %e, "cannot open an endpoint's secrets");
            V1Error::unavailable()
        })?;
        let now = self.now();
        let grace = i64::try_from(self.settings.rotation_grace.as_millis()).unwrap_or(i64::MAX);
        let until = now.saturating_add(grace);
        // Secrets already retired stay retired; the current one signs
        // until the grace ends.
        creds.signing.retain(|s| s.until.is_none_or(|u| u > now));
        for s in &mut creds.signing {
            s.until = Some(s.until.map_or(until, |u| u.min(until)));
        }
        let secret = new_signing_secret();
        creds.signing.insert(
            0,
            SigningSecret {
                secret: secret.clone(),
                until: None,
            },
        );
        row.sealed = self.seal(id, &creds).map_err(|_| V1Error::unavailable())?;
        row.updated_at = now;
        self.commit_row(row, spec, false).await?;
        ok(
            StatusCode::OK,
            json!({ "id": id, "secret": secret, "previousSecretExpiresAt": rfc3339_ms(until) }),
        )
    }

    async fn deliveries(
        &self,
        caller: &Caller,
        id: &str,
        endpoint: bool,
    ) -> Result<Response<Body>, V1Error> {
        self.find(caller, id, endpoint)?;
        let jobs = self
            .store
            .recent_labelled(&queue_of(id), DELIVERIES_SHOWN)
            .await
            .map_err(store_err)?;
        let max = self.settings.policy.max_attempts;
        let items: Vec<Value> = jobs.iter().map(|j| delivery_json(j, max)).collect();
        ok(StatusCode::OK, Value::Array(items))
    }

    /// The ids of the open (active, not auto-disabled) destinations of
    /// `project` that `wants`, oldest first.
    fn open_destinations(
        &self,
        project: &str,
        wants: impl Fn(&super::Dest) -> bool,
    ) -> Vec<String> {
        let dests = self.dests();
        let mut v: Vec<&super::Dest> = dests
            .values()
            .filter(|d| d.row.project == project && d.is_open() && wants(d))
            .collect();
        v.sort_by_key(|d| (d.row.created_at, d.row.id.as_str()));
        v.into_iter().map(|d| d.row.id.clone()).collect()
    }

    /// Enqueues one job per destination in one transaction.
    async fn fan_out(
        &self,
        targets: &[String],
        kind: &str,
        label: &str,
        payload: Bytes,
        dedup: Option<DedupKey>,
    ) -> Result<Fanout, V1Error> {
        let now = self.now();
        let jobs: Vec<NewJob> = targets
            .iter()
            .map(|id| NewJob {
                queue: queue_of(id),
                kind: kind.into(),
                payload: payload.clone(),
                created_at: now,
                next_at: now,
                label: Some(label.into()),
            })
            .collect();
        let r = self
            .store
            .enqueue_fanout(jobs, dedup)
            .await
            .map_err(store_err)?;
        self.engine.wake();
        Ok(r)
    }

    /// Accepts an analysis or event (`what`): one delivery per target and
    /// the dedup record (`(scope, key)`, kept for `dedup_window`) in one
    /// transaction, then answers `answer` plus `deliveries` and `duplicate`:
    /// `202`, or `200` for a duplicate (nothing written). With no target
    /// nothing is written either (`202`, 0 deliveries).
    #[allow(clippy::too_many_arguments)]
    async fn accept(
        &self,
        what: &'static str,
        targets: &[String],
        kind: &str,
        label: &str,
        payload: Bytes,
        dedup: Option<(String, String)>,
        mut answer: Map<String, Value>,
    ) -> Result<Response<Body>, V1Error> {
        let (status, result, deliveries, duplicate) = if targets.is_empty() {
            (StatusCode::ACCEPTED, "no_destination", 0, false)
        } else {
            let window = i64::try_from(self.settings.dedup_window.as_millis()).unwrap_or(i64::MAX);
            let dedup = dedup.map(|(scope, key)| DedupKey {
                scope,
                key,
                expires_at: self.now().saturating_add(window),
            });
            match self.fan_out(targets, kind, label, payload, dedup).await? {
                Fanout::Accepted { ids } => (StatusCode::ACCEPTED, "accepted", ids.len(), false),
                Fanout::Duplicate { .. } => (StatusCode::OK, "duplicate", 0, true),
            }
        };
        self.metrics.intake.with_label_values(&[what, result]).inc();
        answer.insert("deliveries".into(), json!(deliveries));
        answer.insert("duplicate".into(), json!(duplicate));
        ok(status, Value::Object(answer))
    }

    async fn send_test(
        &self,
        caller: &Caller,
        id: &str,
        endpoint: bool,
    ) -> Result<Response<Body>, V1Error> {
        self.find(caller, id, endpoint)?;
        let (kind, label, payload) = if endpoint {
            let evt = new_event_id();
            let envelope = json!({
                "id": evt,
                "type": "webhook.test",
                "created_at": rfc3339_s(self.now()),
                "data": { "message": "A test delivery from hookgate." },
            });
            (
                KIND_EVENT,
                format!("webhook.test {evt}"),
                Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default()),
            )
        } else {
            let mut a = Analysis::sample(&caller.project, Severity::High);
            a.analysis_id = format!("anl_test_{}", hex::encode(rand::random::<[u8; 6]>()));
            a.tenant_id = caller.tenant.clone().unwrap_or_else(|| a.tenant_id.clone());
            a.summary = format!("Test notification from hookgate: {}", a.summary);
            (
                KIND_ANALYSIS,
                format!("analysis.test {}", a.analysis_id),
                Bytes::from(serde_json::to_vec(&a).unwrap_or_default()),
            )
        };
        match self
            .fan_out(&[id.to_owned()], kind, &label, payload, None)
            .await?
        {
            Fanout::Accepted { ids } => ok(
                StatusCode::ACCEPTED,
                json!({ "deliveryId": ids.first(), "destinationId": id }),
            ),
            Fanout::Duplicate { .. } => Err(V1Error::unavailable()),
        }
    }

    async fn post_analysis(&self, caller: &Caller, body: Bytes) -> Result<Response<Body>, V1Error> {
        let obj = dest::object(&body)?;
        let a = validate_analysis(&obj)?;
        if a.project_id != caller.project {
            return Err(V1Error::forbidden(
                "projectId: the API key may not post analyses for this project",
            ));
        }
        if caller.tenant.as_ref().is_some_and(|t| *t != a.tenant_id) {
            return Err(V1Error::forbidden(
                "tenantId: the API key belongs to another tenant",
            ));
        }
        let targets = self.open_destinations(&caller.project, |d| {
            d.kind != Kind::Endpoint && d.spec.threshold.is_none_or(|t| a.severity.meets(t))
        });
        let label = format!("analysis.{} {}", a.severity.as_str(), a.analysis_id);
        let dedup = Some((
            format!("sender/analyses/{}", caller.project),
            a.analysis_id.clone(),
        ));
        let mut answer = Map::new();
        answer.insert("analysisId".into(), json!(a.analysis_id));
        self.accept(
            "analysis",
            &targets,
            KIND_ANALYSIS,
            &label,
            body,
            dedup,
            answer,
        )
        .await
    }

    async fn post_event(&self, caller: &Caller, body: &[u8]) -> Result<Response<Body>, V1Error> {
        let obj = dest::object(body)?;
        dest::reject_unknown(&obj, &["id", "type", "data"])?;
        let ty =
            match obj.get("type") {
                Some(Value::String(t)) if dest::valid_event_type(t) => t.clone(),
                None | Some(Value::Null) => return Err(V1Error::validation("type: is required")),
                Some(_) => return Err(V1Error::validation(
                    "type: must be an event type of letters, digits, '.', '_', '-' (at most 128)",
                )),
            };
        let data = match obj.get("data") {
            Some(v @ Value::Object(_)) => v.clone(),
            None | Some(Value::Null) => return Err(V1Error::validation("data: is required")),
            Some(_) => return Err(V1Error::validation("data: must be a JSON object")),
        };
        // A caller-chosen id makes the post idempotent (deduplicated).
        let given_id = match obj.get("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if valid_id(s) => Some(s.clone()),
            Some(_) => {
                return Err(V1Error::validation(
                    "id: must be 1-255 printable characters without spaces",
                ))
            }
        };
        let id = given_id.clone().unwrap_or_else(new_event_id);
        let envelope = json!({
            "id": id,
            "type": ty,
            "created_at": rfc3339_s(self.now()),
            "data": data,
        });
        let targets = self.open_destinations(&caller.project, |d| {
            d.kind == Kind::Endpoint && d.spec.events.iter().any(|e| e == "*" || *e == ty)
        });
        let label = format!("{ty} {id}");
        let dedup = given_id.map(|key| (format!("sender/events/{}", caller.project), key));
        let payload = Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default());
        let mut answer = Map::new();
        answer.insert("id".into(), json!(id));
        answer.insert("type".into(), json!(ty));
        self.accept(
            "event", &targets, KIND_EVENT, &label, payload, dedup, answer,
        )
        .await
    }
}

fn rfc3339_s(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(ms / 1000).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= ID_MAX && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Seed 000's analysis, validated; every error names its field.
pub fn validate_analysis(obj: &Map<String, Value>) -> Result<Analysis, V1Error> {
    for f in ["analysisId", "tenantId", "projectId"] {
        match obj.get(f) {
            Some(Value::String(s)) if valid_id(s) => {}
            None | Some(Value::Null) => {
                return Err(V1Error::validation(format!("{f}: is required")))
            }
            Some(_) => {
                return Err(V1Error::validation(format!(
                    "{f}: must be 1-255 printable characters without spaces"
                )))
            }
        }
    }
    match obj.get("severity") {
        Some(Value::String(s)) if Severity::parse(s).is_some() => {}
        None | Some(Value::Null) => return Err(V1Error::validation("severity: is required")),
        Some(_) => {
            return Err(V1Error::validation(
                "severity: must be one of critical, high, medium, low",
            ))
        }
    }
    match obj.get("summary") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        None | Some(Value::Null) => return Err(V1Error::validation("summary: is required")),
        Some(_) => return Err(V1Error::validation("summary: must be a non-empty string")),
    }
    match obj.get("timestamp") {
        Some(Value::String(s))
            if humantime::parse_rfc3339_weak(s).is_ok() || humantime::parse_rfc3339(s).is_ok() => {}
        None | Some(Value::Null) => return Err(V1Error::validation("timestamp: is required")),
        Some(_) => {
            return Err(V1Error::validation(
                "timestamp: must be an RFC 3339 time such as 2026-04-25T18:00:00.000Z",
            ))
        }
    }
    if let Some(u) = obj.get("url").filter(|v| !v.is_null()) {
        let ok_url = u
            .as_str()
            .and_then(|s| s.parse::<http::Uri>().ok())
            .is_some_and(|u| {
                matches!(u.scheme_str(), Some("https" | "http")) && u.host().is_some()
            });
        if !ok_url {
            return Err(V1Error::validation("url: must be an http(s) URL"));
        }
    }
    for (f, want) in [
        ("rootCause", "an object"),
        ("affectedServices", "an array"),
        ("suggestedActions", "an array"),
        ("projectSlug", "a string"),
    ] {
        let ok_shape = match obj.get(f) {
            None | Some(Value::Null) => true,
            Some(v) => match want {
                "an object" => v.is_object(),
                "an array" => v.is_array(),
                _ => v.is_string(),
            },
        };
        if !ok_shape {
            return Err(V1Error::validation(format!("{f}: must be {want}")));
        }
    }
    serde_json::from_value::<Analysis>(Value::Object(obj.clone())).map_err(|e| {
        // serde's message names the field but never a credential.
        let msg = e.to_string();
        let msg: String = msg.chars().take(200).collect();
        V1Error::validation(format!("body: {msg}"))
    })
}

/// One entry of a destination's deliveries (seed 004's drawer).
fn delivery_json(j: &JobSummary, max_attempts: u32) -> Value {
    let (event_type, event_id) = match j.label.as_deref().and_then(|l| l.split_once(' ')) {
        Some((t, id)) => (t, id),
        None => ("", ""),
    };
    let status = match j.state {
        JobState::Done => "delivered",
        JobState::Dead if j.attempts >= max_attempts => "exhausted",
        JobState::Dead => "failed",
        JobState::Pending | JobState::Inflight => "pending",
    };
    json!({
        "id": j.id,
        "eventType": event_type,
        "eventId": event_id,
        "status": status,
        "attempts": j.attempts,
        "httpStatus": j.last_status,
        "error": j.last_error,
        "createdAt": rfc3339_ms(j.created_at),
        "updatedAt": rfc3339_ms(j.updated_at),
        "nextAttemptAt": if matches!(j.state, JobState::Pending) { Value::String(rfc3339_ms(j.next_at)) } else { Value::Null },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analyses_are_validated_field_by_field() {
        let good = serde_json::to_value(Analysis::sample("prj_1", Severity::High)).unwrap();
        let good = good.as_object().unwrap().clone();
        assert!(validate_analysis(&good).is_ok());
        for (field, value, want) in [
            ("analysisId", Value::Null, "analysisId: is required"),
            ("analysisId", json!("a b"), "analysisId: must be"),
            ("severity", json!("urgent"), "severity: must be one of"),
            ("summary", json!(""), "summary: must be"),
            ("timestamp", json!("yesterday"), "timestamp: must be"),
            ("url", json!("javascript:alert(1)"), "url: must be"),
            (
                "affectedServices",
                json!({}),
                "affectedServices: must be an array",
            ),
        ] {
            let mut o = good.clone();
            if value.is_null() {
                o.remove(field);
            } else {
                o.insert(field.into(), value);
            }
            let e = validate_analysis(&o).unwrap_err();
            assert_eq!(e.code, "VALIDATION_ERROR");
            assert!(e.message.starts_with(want), "{field}: {}", e.message);
        }
    }

    #[test]
    fn generated_ids_have_their_documented_shapes() {
        let s = new_signing_secret();
        assert!(s.starts_with("whsec_") && s.len() == 6 + 32, "{s}");
        let e = new_event_id();
        assert!(e.starts_with("evt_") && e.len() == 20, "{e}");
        let u = uuid::Uuid::parse_str(&new_uuid()).unwrap();
        assert_eq!(u.get_version_num(), 4);
    }
}
