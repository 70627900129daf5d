//! Preparation of the sender's deliveries at attempt time (the engine's
//! [`Prepare`] for the `sender/<id>` queues): the destination's current
//! credentials are opened, the stored event is formatted for its platform
//! and signed with this attempt's timestamp; answers are judged per
//! platform; each attempt's end moves the destination's health and, when a
//! delivery exhausts its schedule, may disable it.

use std::sync::Weak;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::Full;

use crate::delivery::engine::{AttemptReport, Prepare, Prepared};
use crate::delivery::policy::Outcome;
use crate::signature::{self, Preset, Scheme};
use crate::store::{ClaimedJob, Next};

use super::analysis::Analysis;
use super::dest::{self, Credentials, Kind};
use super::{format, Sender, KIND_ANALYSIS, KIND_EVENT, QUEUE_PREFIX};

/// How often the time of a destination's last attempt is stored when its
/// health does not change.
const HEALTH_STORE_INTERVAL_MS: i64 = 5_000;

const USER_AGENT: &str = concat!("hookgate/", env!("CARGO_PKG_VERSION"));

pub(crate) struct Prep {
    pub sender: Weak<Sender>,
}

/// A prepared delivery: where, what, and the headers to add.
pub(crate) struct Outgoing {
    pub url: String,
    pub body: Bytes,
    pub headers: Vec<(&'static str, String)>,
}

/// Signs `body` the Standard Webhooks way with every current secret:
/// `webhook-signature: v1,<b64> v1,<b64>`.
pub(crate) fn standard_webhooks_headers(
    secrets: &[&str],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<Vec<(&'static str, String)>, String> {
    let scheme = Scheme::Preset(Preset::StandardWebhooks);
    let mut sigs = Vec::new();
    for s in secrets {
        let headers = signature::sign(&scheme, s.as_bytes(), body, Some(id), timestamp)
            .map_err(|_| "an endpoint signing secret is not a valid whsec_ secret".to_string())?;
        for (name, value) in headers {
            if name.as_str() == "webhook-signature" {
                sigs.push(value.to_str().unwrap_or_default().to_owned());
            }
        }
    }
    Ok(vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", sigs.join(" ")),
    ])
}

/// `X-SigSentry-Signature: sha256=<hex>` over `body`.
pub(crate) fn sigsentry_signature(secret: &str, body: &[u8]) -> Result<String, String> {
    let headers = signature::sign(
        &Scheme::Preset(Preset::Sigsentry),
        secret.as_bytes(),
        body,
        None,
        0,
    )
    .map_err(|_| "cannot sign with the channel's hmacSecret".to_string())?;
    headers
        .into_iter()
        .find(|(n, _)| n.as_str() == "x-sigsentry-signature")
        .and_then(|(_, v)| v.to_str().ok().map(str::to_owned))
        .ok_or_else(|| "cannot sign with the channel's hmacSecret".to_string())
}

fn json_body(v: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// The delivery of `payload` (a stored job of `job_kind`) to a destination.
pub(crate) fn outgoing(
    kind: Kind,
    creds: &Credentials,
    endpoint_url: Option<&str>,
    job_kind: &str,
    payload: &[u8],
    now_ms: i64,
) -> Result<Outgoing, String> {
    let o = match (kind, job_kind) {
        (Kind::Endpoint, KIND_EVENT) => {
            let url = endpoint_url.ok_or("the endpoint has no URL")?;
            let id = serde_json::from_slice::<serde_json::Value>(payload)
                .ok()
                .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned))
                .ok_or("the stored event is damaged")?;
            let secrets: Vec<&str> = creds
                .signing
                .iter()
                .filter(|s| s.until.is_none_or(|u| u > now_ms))
                .map(|s| s.secret.as_str())
                .collect();
            if secrets.is_empty() {
                return Err("the endpoint has no signing secret".into());
            }
            let headers = standard_webhooks_headers(&secrets, &id, now_ms / 1000, payload)?;
            Outgoing {
                url: url.to_owned(),
                body: Bytes::copy_from_slice(payload),
                headers,
            }
        }
        (Kind::Webhook, KIND_ANALYSIS) => {
            let url = creds.url.clone().ok_or("the channel has no url")?;
            // The analysis exactly as it was posted: the signature covers
            // the bytes sent.
            let body = Bytes::copy_from_slice(payload);
            let mut headers = Vec::new();
            if let Some(secret) = &creds.hmac_secret {
                headers.push(("x-sigsentry-signature", sigsentry_signature(secret, &body)?));
            }
            if let Some(auth) = &creds.auth_header {
                headers.push(("authorization", auth.clone()));
            }
            Outgoing { url, body, headers }
        }
        (Kind::Slack | Kind::Teams | Kind::Discord | Kind::GoogleChat, KIND_ANALYSIS) => {
            let url = creds
                .webhook_url
                .clone()
                .ok_or("the channel has no webhookUrl")?;
            let a: Analysis =
                serde_json::from_slice(payload).map_err(|_| "the stored analysis is damaged")?;
            let v = match kind {
                Kind::Slack => format::slack(&a),
                Kind::Teams => format::teams(&a, &url),
                Kind::Discord => format::discord(&a),
                _ => format::google_chat(&a),
            };
            Outgoing {
                url,
                body: json_body(&v),
                headers: Vec::new(),
            }
        }
        (Kind::Email, _) => return Err("email is sent over SMTP, not HTTP".into()),
        (k, j) => {
            return Err(format!(
                "a {j} job cannot be delivered to a destination of type {}",
                k.as_str()
            ))
        }
    };
    Ok(o)
}

impl Prep {
    fn request(&self, job: &ClaimedJob) -> Result<Prepared, String> {
        let sender = self.sender.upgrade().ok_or("hookgate is stopping")?;
        let id = job.queue.strip_prefix(QUEUE_PREFIX).unwrap_or(&job.queue);
        let (row, kind, url) = {
            let dests = sender.dests();
            let d = dests
                .get(id)
                .ok_or("the destination was deleted; delivery cancelled")?;
            (d.row.clone(), d.kind, d.spec.url.clone())
        };
        let creds = sender.credentials(&row)?;
        if kind == Kind::Email {
            let mailer = sender
                .mailer
                .clone()
                .ok_or("email channels need [sender.smtp] in the configuration")?;
            let a: Analysis = serde_json::from_slice(&job.payload)
                .map_err(|_| "the stored analysis is damaged")?;
            let mail = format::email(&a);
            let to = creds.recipients;
            return Ok(Prepared::Custom(Box::pin(async move {
                mailer.send(&to, mail).await
            })));
        }
        let Outgoing { url, body, headers } = outgoing(
            kind,
            &creds,
            url.as_deref(),
            &job.kind,
            &job.payload,
            sender.now(),
        )?;
        let mut req = Request::builder()
            .method(http::Method::POST)
            .uri(url.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, USER_AGENT);
        for (name, value) in headers {
            let v = HeaderValue::from_str(&value)
                .map_err(|_| format!("the {name} header is not a valid header value"))?;
            req = req.header(name, v);
        }
        req.body(Full::new(body))
            .map(Prepared::Http)
            .map_err(|_| "the destination URL is not valid".to_string())
    }
}

impl Prepare for Prep {
    fn prepare(&self, job: &ClaimedJob, _n: u32) -> Result<Prepared, String> {
        self.request(job)
    }

    /// 2xx delivered; 408, 425, 429 and 5xx retried; everything else can
    /// never succeed (Slack 400/404/410, Discord 400/404, a generic URL's
    /// 401/403, any other 4xx; a 3xx: redirects are not followed).
    fn classify(&self, _job: &ClaimedJob, status: StatusCode, _default: Outcome) -> Outcome {
        match status.as_u16() {
            200..=299 => Outcome::Success,
            408 | 425 | 429 | 500..=599 => Outcome::Transient,
            _ => Outcome::Permanent,
        }
    }

    fn finished(&self, job: &ClaimedJob, report: &AttemptReport) {
        let Some(sender) = self.sender.upgrade() else {
            return;
        };
        let id = job
            .queue
            .strip_prefix(QUEUE_PREFIX)
            .unwrap_or(&job.queue)
            .to_owned();
        let ok = report.http_status.is_some_and(|s| (200..300).contains(&s));
        let outcome = match report.next {
            Next::Done => "delivered",
            Next::Retry { .. } => "retry",
            Next::Dead if report.exhausted => "exhausted",
            Next::Dead => "failed",
        };
        let mut disabled = false;
        let mut store_it = false;
        let kind = {
            let mut dests = sender.dests();
            let Some(d) = dests.get_mut(&id) else {
                return;
            };
            let before = (
                dest::health(d.row.active, d.row.disabled_at, d.row.last_ok),
                d.row.exhausted_streak,
            );
            d.row.last_attempt_at = Some(report.at);
            d.row.last_ok = Some(ok);
            if ok {
                d.row.exhausted_streak = 0;
            } else if report.exhausted {
                d.row.exhausted_streak = d.row.exhausted_streak.saturating_add(1);
                let after = sender.settings.auto_disable_after;
                if after > 0 && d.row.exhausted_streak >= after && d.row.disabled_at.is_none() {
                    d.row.disabled_at = Some(report.at);
                    d.ctl.set_paused(true);
                    disabled = true;
                }
            }
            let after = (
                dest::health(d.row.active, d.row.disabled_at, d.row.last_ok),
                d.row.exhausted_streak,
            );
            // A change of health is stored at once; the time of the last
            // attempt at most every few seconds, so that a busy destination
            // does not add a store write to every attempt.
            if before != after || report.at - d.persisted_at >= HEALTH_STORE_INTERVAL_MS {
                d.persisted_at = report.at;
                store_it = true;
            }
            d.kind
        };
        sender
            .metrics
            .deliveries
            .with_label_values(&[kind.as_str(), outcome])
            .inc();
        if disabled {
            tracing::warn!(
                destination = %id,
                r#type = kind.as_str(),
                "destination auto-disabled: a delivery exhausted its retry schedule; \
                 re-enable it with PATCH {{\"isActive\": true}}"
            );
        }
        sender.publish_health();
        if !store_it {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = sender.persist(&id).await {
                tracing::warn!(destination = %id, error = %e, "cannot store the destination's health");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_webhook_sends_the_exact_bytes_signed_with_the_bearer_header() {
        let creds = Credentials {
            url: Some("https://example.com/hook".into()),
            auth_header: Some("Bearer abc123".into()),
            hmac_secret: Some("your-32-byte-secret-0123456789".into()),
            ..Default::default()
        };
        let payload = br#"{"analysisId":"anl_1",  "severity":"high"}"#;
        let Outgoing { url, body, headers } =
            outgoing(Kind::Webhook, &creds, None, KIND_ANALYSIS, payload, 0).unwrap();
        assert_eq!(url, "https://example.com/hook");
        assert_eq!(&body[..], &payload[..]);
        use hmac::Mac;
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(b"your-32-byte-secret-0123456789").unwrap();
        mac.update(payload);
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(
            headers.contains(&("x-sigsentry-signature", want)),
            "{headers:?}"
        );
        assert!(headers.contains(&("authorization", "Bearer abc123".into())));
    }

    #[test]
    fn endpoint_deliveries_carry_standard_webhooks_headers_for_each_live_secret() {
        let creds = Credentials {
            signing: vec![
                super::super::dest::SigningSecret {
                    secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
                    until: None,
                },
                super::super::dest::SigningSecret {
                    secret: "whsec_c2VjcmV0LXR3by1zZWNyZXQtdHdvLXNlY3JldA==".into(),
                    until: Some(2_000_000),
                },
            ],
            ..Default::default()
        };
        let payload = br#"{"id":"evt_1","type":"a.b","created_at":"x","data":{}}"#;
        let Outgoing { headers: h, .. } = outgoing(
            Kind::Endpoint,
            &creds,
            Some("https://e.test/"),
            KIND_EVENT,
            payload,
            1_000_000,
        )
        .unwrap();
        assert_eq!(h[0], ("webhook-id", "evt_1".into()));
        assert_eq!(h[1], ("webhook-timestamp", "1000".into()));
        assert_eq!(h[2].1.split(' ').count(), 2, "{h:?}");
        let Outgoing { headers: h, .. } = outgoing(
            Kind::Endpoint,
            &creds,
            Some("https://e.test/"),
            KIND_EVENT,
            payload,
            3_000_000,
        )
        .unwrap();
        assert_eq!(
            h[2].1.split(' ').count(),
            1,
            "the old secret stopped signing: {h:?}"
        );
    }
}
