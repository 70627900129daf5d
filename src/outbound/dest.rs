//! Destinations of the sender: channels (seed 001) and webhook endpoints
//! (seed 004). Owns their validation (every error names its field), their
//! credentials (validated, then sealed; shown only as a masked hint), and
//! their health as seed 004 defines it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::V1Error;
use crate::outbound::analysis::Severity;

/// `type` of a channel; `Endpoint` is a seed 004 webhook endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Slack,
    Teams,
    Discord,
    GoogleChat,
    Webhook,
    Email,
    Endpoint,
}

impl Kind {
    pub const CHANNELS: [Kind; 6] = [
        Kind::Slack,
        Kind::Teams,
        Kind::Discord,
        Kind::GoogleChat,
        Kind::Webhook,
        Kind::Email,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Slack => "slack",
            Kind::Teams => "teams",
            Kind::Discord => "discord",
            Kind::GoogleChat => "google_chat",
            Kind::Webhook => "webhook",
            Kind::Email => "email",
            Kind::Endpoint => "endpoint",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "slack" => Some(Kind::Slack),
            "teams" => Some(Kind::Teams),
            "discord" => Some(Kind::Discord),
            "google_chat" => Some(Kind::GoogleChat),
            "webhook" => Some(Kind::Webhook),
            "email" => Some(Kind::Email),
            "endpoint" => Some(Kind::Endpoint),
            _ => None,
        }
    }
}

/// The settings of a destination that are not secret (stored as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// Channel name, or endpoint description.
    pub name: String,
    #[serde(default)]
    pub threshold: Option<Severity>,
    /// Endpoint: subscribed event types.
    #[serde(default)]
    pub events: Vec<String>,
    /// Endpoint: the URL (shown in lists, as seed 004 does).
    #[serde(default)]
    pub url: Option<String>,
    /// A masked hint of the credentials.
    pub hint: String,
}

/// The secret part of a destination, sealed at rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Endpoint signing secrets (`whsec_...`), newest first; an older one
    /// signs until its `until` (Unix ms) after a rotation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signing: Vec<SigningSecret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningSecret {
    pub secret: String,
    #[serde(default)]
    pub until: Option<i64>,
}

/// What URL checks allow.
#[derive(Debug, Clone, Copy)]
pub struct UrlRules {
    pub https_only: bool,
}

pub const NAME_MAX: usize = 255;
const URL_MAX: usize = 2048;
const AUTH_HEADER_MAX: usize = 4096;
const HMAC_SECRET_MIN: usize = 16;
const HMAC_SECRET_MAX: usize = 1024;
const RECIPIENTS_MAX: usize = 50;
const EVENT_TYPE_MAX: usize = 128;
const EVENTS_MAX: usize = 100;

fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn string(obj: &Map<String, Value>, at: &str, name: &str) -> Result<Option<String>, V1Error> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(V1Error::validation(format!("{at}{name}: must be a string"))),
    }
}

fn required(obj: &Map<String, Value>, at: &str, name: &str) -> Result<String, V1Error> {
    string(obj, at, name)?.ok_or_else(|| V1Error::validation(format!("{at}{name}: is required")))
}

/// Checks a destination URL: absolute http(s) with a host, https unless
/// allowed, no credentials in it, bounded length.
pub fn check_url(at: &str, url: &str, rules: UrlRules) -> Result<(), V1Error> {
    let bad = |why: &str| V1Error::validation(format!("{at}: {why}"));
    if url.len() > URL_MAX {
        return Err(bad("must be at most 2048 characters"));
    }
    let uri: http::Uri = url.parse().map_err(|_| bad("must be an absolute URL"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if !rules.https_only => {}
        Some("http") => return Err(bad("must be an https:// URL (sender.https_only)")),
        _ => return Err(bad("must be an https:// URL")),
    }
    let auth = uri.authority().ok_or_else(|| bad("must have a host"))?;
    if auth.as_str().contains('@') {
        return Err(bad("must not carry user:password (use authHeader)"));
    }
    if auth.host().is_empty() {
        return Err(bad("must have a host"));
    }
    Ok(())
}

/// `https://host/…`: enough to recognise a URL, nothing of its secret path.
pub fn url_hint(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(u) => format!(
            "{}://{}/…",
            u.scheme_str().unwrap_or("https"),
            u.host().unwrap_or("?")
        ),
        Err(_) => "…".into(),
    }
}

fn email_hint(addrs: &[String]) -> String {
    let mask = |a: &String| match a.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}…@{domain}")
        }
        None => "…".into(),
    };
    let mut hint = addrs.first().map(mask).unwrap_or_default();
    if addrs.len() > 1 {
        hint.push_str(&format!(" (+{})", addrs.len() - 1));
    }
    hint
}

/// A plausible mailbox: `local@domain`, printable, no spaces, bounded.
fn valid_email(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    a.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && a.chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | ',' | ';' | '"' | '\\'))
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// Validates the `credentials` of a channel of `kind`; answers them and
/// their masked hint.
pub fn channel_credentials(
    kind: Kind,
    v: Option<&Value>,
    rules: UrlRules,
) -> Result<(Credentials, String), V1Error> {
    let obj = match v {
        Some(Value::Object(o)) => o,
        None | Some(Value::Null) => return Err(V1Error::validation("credentials: is required")),
        Some(_) => return Err(V1Error::validation("credentials: must be an object")),
    };
    let at = "credentials.";
    match kind {
        Kind::Slack | Kind::Teams | Kind::Discord | Kind::GoogleChat => {
            let url = required(obj, at, "webhookUrl")?;
            check_url("credentials.webhookUrl", &url, rules)?;
            let hint = url_hint(&url);
            Ok((
                Credentials {
                    webhook_url: Some(url),
                    ..Default::default()
                },
                hint,
            ))
        }
        Kind::Webhook => {
            let url = required(obj, at, "url")?;
            check_url("credentials.url", &url, rules)?;
            let auth_header = string(obj, at, "authHeader")?;
            if let Some(a) = &auth_header {
                if a.is_empty()
                    || a.len() > AUTH_HEADER_MAX
                    || http::HeaderValue::from_str(a).is_err()
                {
                    return Err(V1Error::validation(
                        "credentials.authHeader: must be a header value of 1-4096 visible characters",
                    ));
                }
            }
            let hmac_secret = string(obj, at, "hmacSecret")?;
            if let Some(s) = &hmac_secret {
                if !(HMAC_SECRET_MIN..=HMAC_SECRET_MAX).contains(&s.len()) {
                    return Err(V1Error::validation(
                        "credentials.hmacSecret: must be 16 to 1024 characters (openssl rand -hex 32)",
                    ));
                }
            }
            let mut hint = url_hint(&url);
            if auth_header.is_some() {
                hint.push_str(" · auth header");
            }
            if hmac_secret.is_some() {
                hint.push_str(" · HMAC");
            }
            Ok((
                Credentials {
                    url: Some(url),
                    auth_header,
                    hmac_secret,
                    ..Default::default()
                },
                hint,
            ))
        }
        Kind::Email => {
            let list: Vec<String> = match field(obj, "recipients") {
                None => return Err(V1Error::validation("credentials.recipients: is required")),
                Some(Value::String(s)) => s
                    .split(',')
                    .map(|a| a.trim().to_owned())
                    .filter(|a| !a.is_empty())
                    .collect(),
                Some(Value::Array(a)) => {
                    let mut out = Vec::new();
                    for (i, v) in a.iter().enumerate() {
                        match v {
                            Value::String(s) => out.push(s.trim().to_owned()),
                            _ => {
                                return Err(V1Error::validation(format!(
                                    "credentials.recipients[{i}]: must be a string"
                                )))
                            }
                        }
                    }
                    out
                }
                Some(_) => {
                    return Err(V1Error::validation(
                        "credentials.recipients: must be a comma-separated string or an array of addresses",
                    ))
                }
            };
            if list.is_empty() || list.len() > RECIPIENTS_MAX {
                return Err(V1Error::validation(
                    "credentials.recipients: must name 1 to 50 addresses",
                ));
            }
            if let Some(bad) = list.iter().position(|a| !valid_email(a)) {
                return Err(V1Error::validation(format!(
                    "credentials.recipients[{bad}]: is not a valid email address"
                )));
            }
            let hint = email_hint(&list);
            Ok((
                Credentials {
                    recipients: list,
                    ..Default::default()
                },
                hint,
            ))
        }
        Kind::Endpoint => Err(V1Error::validation("type: must be a channel type")),
    }
}

/// `name`: 1-255 characters, no control characters.
pub fn check_name(
    at: &str,
    v: Option<&Value>,
    required_field: bool,
) -> Result<Option<String>, V1Error> {
    match v {
        None | Some(Value::Null) if !required_field => Ok(None),
        None | Some(Value::Null) => Err(V1Error::validation(format!("{at}: is required"))),
        Some(Value::String(s)) => {
            let n = s.chars().count();
            if n == 0 || n > NAME_MAX {
                Err(V1Error::validation(format!(
                    "{at}: must be 1 to 255 characters"
                )))
            } else if s.chars().any(char::is_control) {
                Err(V1Error::validation(format!(
                    "{at}: must not contain control characters"
                )))
            } else {
                Ok(Some(s.clone()))
            }
        }
        Some(_) => Err(V1Error::validation(format!("{at}: must be a string"))),
    }
}

pub fn check_threshold(
    v: Option<&Value>,
    required_field: bool,
) -> Result<Option<Severity>, V1Error> {
    let bad =
        || V1Error::validation("severityThreshold: must be one of critical, high, medium, low");
    match v {
        None | Some(Value::Null) if !required_field => Ok(None),
        None | Some(Value::Null) => Err(V1Error::validation("severityThreshold: is required")),
        Some(Value::String(s)) => Severity::parse(s).map(Some).ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

/// Event types of an endpoint: 1-100 names of `[A-Za-z0-9._-]`, or `*`.
pub fn check_events(
    v: Option<&Value>,
    required_field: bool,
) -> Result<Option<Vec<String>>, V1Error> {
    let bad = || {
        V1Error::validation(
            "events: must be a non-empty array of event types (letters, digits, '.', '_', '-'; or \"*\")",
        )
    };
    match v {
        None | Some(Value::Null) if !required_field => Ok(None),
        None | Some(Value::Null) => Err(V1Error::validation("events: is required")),
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= EVENTS_MAX => {
            let mut out: Vec<String> = Vec::new();
            for v in a {
                let s = v.as_str().ok_or_else(bad)?;
                if !valid_event_type(s) && s != "*" {
                    return Err(bad());
                }
                if !out.iter().any(|e| e == s) {
                    out.push(s.to_owned());
                }
            }
            Ok(Some(out))
        }
        Some(_) => Err(bad()),
    }
}

pub fn valid_event_type(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= EVENT_TYPE_MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Every value [`health`] returns.
pub const HEALTHS: [&str; 4] = ["Healthy", "Failing", "Pending", "Disabled"];

/// Seed 004's health of a destination.
pub fn health(active: bool, disabled_at: Option<i64>, last_ok: Option<bool>) -> &'static str {
    if disabled_at.is_some() || !active {
        return "Disabled";
    }
    match last_ok {
        None => "Pending",
        Some(true) => "Healthy",
        Some(false) => "Failing",
    }
}

/// Only these fields may appear in a channel body.
pub fn reject_unknown(obj: &Map<String, Value>, known: &[&str]) -> Result<(), V1Error> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) if k.len() <= 64 => Err(V1Error::validation(format!("{k}: unknown field"))),
        Some(_) => Err(V1Error::validation("unknown field")),
        None => Ok(()),
    }
}

/// The JSON object of a request body, or a validation error.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, V1Error> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(V1Error::validation("body: must be a JSON object")),
        Err(_) => Err(V1Error::validation("body: must be valid JSON")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RULES: UrlRules = UrlRules { https_only: true };

    #[test]
    fn credentials_are_validated_per_type_and_hinted_without_secrets() {
        let (c, hint) = channel_credentials(
            Kind::Slack,
            Some(&json!({"webhookUrl": "https://hooks.slack.com/services/T1/B2/SECRET"})),
            RULES,
        )
        .unwrap();
        assert_eq!(
            c.webhook_url.as_deref(),
            Some("https://hooks.slack.com/services/T1/B2/SECRET")
        );
        assert_eq!(hint, "https://hooks.slack.com/…");
        let e = channel_credentials(
            Kind::Slack,
            Some(&json!({"webhookUrl": "http://x.test/"})),
            RULES,
        )
        .unwrap_err();
        assert!(e.message.starts_with("credentials.webhookUrl"), "{e}");
        let e = channel_credentials(
            Kind::Webhook,
            Some(&json!({"url": "https://u:p@x.test/"})),
            RULES,
        )
        .unwrap_err();
        assert!(e.message.contains("user:password"), "{e}");
        let (c, hint) = channel_credentials(
            Kind::Webhook,
            Some(&json!({"url": "https://x.test/a", "authHeader": "Bearer tok", "hmacSecret": "0123456789abcdef0123"})),
            RULES,
        )
        .unwrap();
        assert_eq!(c.auth_header.as_deref(), Some("Bearer tok"));
        assert!(!hint.contains("tok") && !hint.contains("0123"), "{hint}");
        let e = channel_credentials(
            Kind::Webhook,
            Some(&json!({"url": "https://x.test/", "hmacSecret": "short"})),
            RULES,
        )
        .unwrap_err();
        assert!(e.message.starts_with("credentials.hmacSecret"), "{e}");
        let (c, hint) = channel_credentials(
            Kind::Email,
            Some(&json!({"recipients": "alice@example.com, bob@example.com"})),
            RULES,
        )
        .unwrap();
        assert_eq!(c.recipients, vec!["alice@example.com", "bob@example.com"]);
        assert_eq!(hint, "a…@example.com (+1)");
        let (c, _) =
            channel_credentials(Kind::Email, Some(&json!({"recipients": ["a@b.co"]})), RULES)
                .unwrap();
        assert_eq!(c.recipients, vec!["a@b.co"]);
        for bad in [
            json!({"recipients": "nope"}),
            json!({"recipients": []}),
            json!({"recipients": [1]}),
            json!({}),
        ] {
            let e = channel_credentials(Kind::Email, Some(&bad), RULES).unwrap_err();
            assert!(
                e.message.starts_with("credentials.recipients"),
                "{bad}: {e}"
            );
        }
        assert!(channel_credentials(Kind::Slack, None, RULES).is_err());
        assert!(channel_credentials(Kind::Slack, Some(&json!("x")), RULES).is_err());
    }

    #[test]
    fn names_thresholds_events_and_health() {
        assert!(check_name("name", Some(&json!("x".repeat(255))), true).is_ok());
        assert!(check_name("name", Some(&json!("x".repeat(256))), true).is_err());
        assert!(check_name("name", Some(&json!("")), true).is_err());
        assert!(check_name("name", None, true).is_err());
        assert_eq!(check_name("name", None, false).unwrap(), None);
        assert_eq!(
            check_threshold(Some(&json!("high")), true).unwrap(),
            Some(Severity::High)
        );
        assert!(check_threshold(Some(&json!("urgent")), true).is_err());
        assert_eq!(
            check_events(Some(&json!(["a.b", "a.b", "c_d"])), true).unwrap(),
            Some(vec!["a.b".to_string(), "c_d".to_string()])
        );
        assert!(check_events(Some(&json!([])), true).is_err());
        assert!(check_events(Some(&json!(["a b"])), true).is_err());
        assert_eq!(health(true, None, None), "Pending");
        assert_eq!(health(true, None, Some(true)), "Healthy");
        for (active, disabled_at, last_ok) in [
            (true, None, Some(true)),
            (true, None, Some(false)),
            (true, None, None),
            (false, None, None),
            (true, Some(1), None),
        ] {
            assert!(HEALTHS.contains(&health(active, disabled_at, last_ok)));
        }
        assert_eq!(health(true, None, Some(false)), "Failing");
        assert_eq!(health(true, Some(1), Some(false)), "Disabled");
        assert_eq!(health(false, None, Some(true)), "Disabled");
    }
}
