//! Provider endpoint handshakes, answered by hookgate itself: a provider
//! that checks an endpoint before sending it events gets its documented
//! answer, and the handshake is never forwarded, stored or deduplicated.
//!
//! Owns the recognition and the answers. Invariants: a handshake the
//! provider signs is answered only after the route's signature check passed
//! (the caller verifies first); the Meta subscription `GET`, which carries
//! no signature, is answered only when its `hub.verify_token` equals the
//! route's `verify_token` (compared in constant time). Per preset: Slack
//! `url_verification` (echo `challenge` as JSON), Zoom
//! `endpoint.url_validation` (`encryptedToken` = hex HMAC-SHA256 of
//! `plainToken` with the secret that verified the request), Twitch EventSub
//! `webhook_callback_verification` (echo `challenge` as text/plain); any
//! route: a configured `[routes.challenge]`.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::{ChallengeConfig, Secret};
use crate::error::{full, ApiError, Body};
use crate::signature::{Preset, Scheme};

/// The handshake a route answers after verification, if any.
#[derive(Debug, Clone)]
pub enum Handshake {
    Slack,
    Zoom,
    Twitch,
    Custom(ChallengeConfig),
}

impl Handshake {
    /// The handshake of a route: its `[routes.challenge]` if set, else its
    /// preset's, if the preset has one.
    pub fn for_route(scheme: &Scheme, custom: Option<&ChallengeConfig>) -> Option<Handshake> {
        if let Some(c) = custom {
            return Some(Handshake::Custom(c.clone()));
        }
        match scheme {
            Scheme::Preset(Preset::Slack) => Some(Handshake::Slack),
            Scheme::Preset(Preset::Zoom) => Some(Handshake::Zoom),
            Scheme::Preset(Preset::Twitch) => Some(Handshake::Twitch),
            _ => None,
        }
    }

    /// The answer to a verified request, when it is this handshake.
    /// `secret` is the secret that verified it (Zoom signs its answer).
    pub fn answer(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secret: &[u8],
    ) -> Option<Response<Body>> {
        // Every verified request of the route passes here: an event that
        // cannot be the handshake is let through without parsing its body.
        let marker: Option<&[u8]> = match self {
            Handshake::Slack => Some(b"url_verification"),
            Handshake::Zoom => Some(b"endpoint.url_validation"),
            Handshake::Twitch => None, // decided by a header first
            // Only a value JSON writes verbatim (no escapes) can be looked
            // for in the raw bytes.
            Handshake::Custom(c) => c.when.as_ref().map(|w| w.equals.as_bytes()).filter(|m| {
                m.iter()
                    .all(|&b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
            }),
        };
        if marker.is_some_and(|m| !contains(body, m)) {
            return None;
        }
        match self {
            Handshake::Slack => {
                let v: Value = serde_json::from_slice(body).ok()?;
                if v["type"] != "url_verification" {
                    return None;
                }
                let challenge = v["challenge"].as_str()?;
                Some(json(&serde_json::json!({ "challenge": challenge })))
            }
            Handshake::Zoom => {
                let v: Value = serde_json::from_slice(body).ok()?;
                if v["event"] != "endpoint.url_validation" {
                    return None;
                }
                let plain = v["payload"]["plainToken"].as_str()?;
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()?;
                mac.update(plain.as_bytes());
                let encrypted = hex::encode(mac.finalize().into_bytes());
                Some(json(&serde_json::json!({
                    "plainToken": plain,
                    "encryptedToken": encrypted,
                })))
            }
            Handshake::Twitch => {
                let kind = headers.get("twitch-eventsub-message-type")?;
                if kind.as_bytes() != b"webhook_callback_verification" {
                    return None;
                }
                let v: Value = serde_json::from_slice(body).ok()?;
                let challenge = v["challenge"].as_str()?;
                Some(text("text/plain", challenge.to_owned()))
            }
            Handshake::Custom(c) => {
                let v: Value = serde_json::from_slice(body).ok()?;
                if let Some(when) = &c.when {
                    if v.pointer(&when.pointer)?.as_str()? != when.equals {
                        return None;
                    }
                }
                let challenge = v.pointer(&c.pointer)?.as_str()?;
                let value = if c.content_type.contains("json") {
                    // Inside a JSON template: escaped, without its quotes.
                    let quoted = serde_json::to_string(challenge).ok()?;
                    quoted[1..quoted.len() - 1].to_owned()
                } else {
                    challenge.to_owned()
                };
                Some(text(
                    &c.content_type,
                    c.answer.replace("{challenge}", &value),
                ))
            }
        }
    }
}

/// The Meta (WhatsApp, Messenger, Instagram) subscription check: `GET` with
/// `hub.mode=subscribe`, `hub.verify_token` and `hub.challenge` in the
/// query. `None` when the query is not one; `403 handshake_refused` when its
/// token is not `token`; otherwise the challenge, as text/plain.
pub fn meta_subscription(
    query: Option<&str>,
    token: &Secret,
) -> Option<Result<Response<Body>, ApiError>> {
    let mut mode = None;
    let mut given = None;
    let mut challenge = None;
    for (k, v) in form_urlencoded::parse(query?.as_bytes()) {
        match k.as_ref() {
            "hub.mode" => mode = Some(v),
            "hub.verify_token" => given = Some(v),
            "hub.challenge" => challenge = Some(v),
            _ => {}
        }
    }
    if mode.as_deref() != Some("subscribe") {
        return None;
    }
    let (Some(given), Some(challenge)) = (given, challenge) else {
        return Some(Err(ApiError::HandshakeRefused));
    };
    if !bool::from(given.as_bytes().ct_eq(token.expose())) {
        return Some(Err(ApiError::HandshakeRefused));
    }
    Some(Ok(text("text/plain", challenge.into_owned())))
}

/// Whether `needle` occurs in `haystack` (a handshake's marker is short).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn json(v: &Value) -> Response<Body> {
    crate::error::json(StatusCode::OK, v)
}

fn text(content_type: &str, body: String) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from(body)));
    let ct = HeaderValue::from_str(content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("text/plain"));
    r.headers_mut().insert(header::CONTENT_TYPE, ct);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(r: Response<Body>) -> String {
        let b = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn slack_url_verification_echoes_the_challenge() {
        // Slack's documented request (api.slack.com/events/url_verification).
        let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
        let r = Handshake::Slack
            .answer(&HeaderMap::new(), body, b"s")
            .unwrap();
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(
            body_of(r).await,
            r#"{"challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}"#
        );
        // An event is not a handshake.
        assert!(Handshake::Slack
            .answer(
                &HeaderMap::new(),
                br#"{"type":"event_callback","challenge":"x"}"#,
                b"s"
            )
            .is_none());
        assert!(Handshake::Slack
            .answer(&HeaderMap::new(), b"not json", b"s")
            .is_none());
    }

    #[tokio::test]
    async fn zoom_url_validation_signs_the_plain_token() {
        // Zoom's documented request (developers.zoom.us, "Validate your
        // webhook endpoint"); the expected token is HMAC-SHA256(secret,
        // plainToken) in hex, computed independently with Python's hmac.
        let body = br#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
        let r = Handshake::Zoom
            .answer(&HeaderMap::new(), body, b"secret-token")
            .unwrap();
        let v: Value = serde_json::from_str(&body_of(r).await).unwrap();
        assert_eq!(v["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
        assert_eq!(
            v["encryptedToken"],
            "5b72bd117f184f54093c1c3c11499c1d13e6d56dc0d96e6b78fbfecedc953b75"
        );
        assert!(Handshake::Zoom
            .answer(
                &HeaderMap::new(),
                br#"{"event":"meeting.started","payload":{}}"#,
                b"s"
            )
            .is_none());
    }

    #[tokio::test]
    async fn twitch_callback_verification_echoes_the_challenge_as_text() {
        // Twitch's documented request (dev.twitch.tv, EventSub "Handling
        // webhook events", responding to a challenge request).
        let body = br#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"id":"f1c2a387-161a-49f9-a165-0f21d7a4e1c4","status":"webhook_callback_verification_pending","type":"channel.follow","version":"1","cost":1,"condition":{"broadcaster_user_id":"12826"},"transport":{"method":"webhook","callback":"https://example.com/webhooks/callback"},"created_at":"2019-11-16T10:11:12.634234626Z"}}"#;
        let mut h = HeaderMap::new();
        h.insert(
            "twitch-eventsub-message-type",
            HeaderValue::from_static("webhook_callback_verification"),
        );
        let r = Handshake::Twitch.answer(&h, body, b"s").unwrap();
        assert_eq!(r.headers()["content-type"], "text/plain");
        assert_eq!(body_of(r).await, "pogchamp-kappa-360noscope-vohiyo");
        h.insert(
            "twitch-eventsub-message-type",
            HeaderValue::from_static("notification"),
        );
        assert!(Handshake::Twitch.answer(&h, body, b"s").is_none());
    }

    #[tokio::test]
    async fn custom_challenge_with_condition_and_json_template() {
        let c = ChallengeConfig {
            pointer: "/data/challenge".into(),
            when: Some(crate::config::ChallengeWhen {
                pointer: "/kind".into(),
                equals: "verify".into(),
            }),
            answer: r#"{"response":"{challenge}"}"#.into(),
            content_type: "application/json".into(),
        };
        let h = Handshake::Custom(c);
        let r = h
            .answer(
                &HeaderMap::new(),
                br#"{"kind":"verify","data":{"challenge":"a\"b"}}"#,
                b"s",
            )
            .unwrap();
        assert_eq!(body_of(r).await, r#"{"response":"a\"b"}"#);
        assert!(h
            .answer(
                &HeaderMap::new(),
                br#"{"kind":"event","data":{"challenge":"x"}}"#,
                b"s"
            )
            .is_none());
    }

    #[tokio::test]
    async fn a_condition_json_escapes_is_still_matched_on_the_parsed_body() {
        let c = ChallengeConfig {
            pointer: "/challenge".into(),
            when: Some(crate::config::ChallengeWhen {
                pointer: "/kind".into(),
                equals: "say \"hi\"".into(),
            }),
            answer: "{challenge}".into(),
            content_type: "text/plain".into(),
        };
        let r = Handshake::Custom(c)
            .answer(
                &HeaderMap::new(),
                br#"{"kind":"say \"hi\"","challenge":"c1"}"#,
                b"s",
            )
            .unwrap();
        assert_eq!(body_of(r).await, "c1");
    }

    #[tokio::test]
    async fn meta_subscription_checks_the_verify_token() {
        let token = Secret::new("meta-verify");
        // Meta's documented request (developers.facebook.com, Webhooks
        // "Verification Requests").
        let q = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meta-verify";
        let r = meta_subscription(Some(q), &token).unwrap().unwrap();
        assert_eq!(body_of(r).await, "1158201444");
        let q = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=wrong";
        assert_eq!(
            meta_subscription(Some(q), &token).unwrap().unwrap_err(),
            ApiError::HandshakeRefused
        );
        let q = "hub.mode=subscribe&hub.challenge=1";
        assert!(meta_subscription(Some(q), &token).unwrap().is_err());
        assert!(meta_subscription(Some("a=b"), &token).is_none());
        assert!(meta_subscription(None, &token).is_none());
    }
}
