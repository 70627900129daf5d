//! Signature schemes: pure, synchronous sign + verify for every preset and the
//! custom scheme. No I/O, no async, nothing else of this crate is imported.
//!
//! API CONTRACT (stub: bodies are being implemented).

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

/// A named signature scheme preset (SPEC §1.2 and the extra presets of issue 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    Sigsentry,
    Statussentry,
    Sentry,
    StandardWebhooks,
    Svix,
    Stripe,
    Github,
    Slack,
    Shopify,
    Pagerduty,
    Linear,
    Paddle,
    Zoom,
    Intercom,
    Twitch,
    Gitlab,
}

/// Where a scheme's event id lives by default (used as the route's default dedup key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventIdSource {
    /// A header, lower-case name.
    Header(&'static str),
    /// An RFC 6901 JSON pointer into the body.
    BodyPointer(&'static str),
}

impl Preset {
    pub const ALL: &'static [Preset] = &[];
    pub fn name(self) -> &'static str {
        unimplemented!()
    }
    pub fn default_event_id(self) -> Option<EventIdSource> {
        unimplemented!()
    }
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(_s: &str) -> Result<Self, String> {
        unimplemented!()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Hex,
    Base64,
    Base64url,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Sha1,
    #[default]
    Sha256,
    Sha512,
}

/// A fully custom HMAC scheme (`[routes.custom]` in the config).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Custom {
    pub header: String,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub encoding: Encoding,
    #[serde(default)]
    pub algorithm: Algorithm,
    #[serde(default = "default_signed_content")]
    pub signed_content: String,
    #[serde(default)]
    pub id_header: Option<String>,
    #[serde(default)]
    pub timestamp_header: Option<String>,
}

fn default_signed_content() -> String {
    "{body}".to_string()
}

impl Custom {
    /// Err(message) names the offending field, e.g. "signed_content: unknown placeholder {foo}".
    pub fn validate(&self) -> Result<(), String> {
        unimplemented!()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Preset(Preset),
    Custom(Box<Custom>),
}

impl Scheme {
    pub fn name(&self) -> &str {
        unimplemented!()
    }
    pub fn uses_timestamp(&self) -> bool {
        unimplemented!()
    }
}

/// Key bytes derived from a configured secret. Debug prints `[redacted]`.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("secret is empty")]
    Empty,
    #[error("whsec_ secret is not valid base64 after the prefix")]
    BadBase64,
}

#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    #[error("signature header missing")]
    Missing,
    #[error("signature header malformed")]
    Malformed,
    #[error("no secret matches the signature")]
    Mismatch,
    #[error("timestamp outside tolerance")]
    TimestampOutOfTolerance,
}

impl VerifyError {
    pub fn code(self) -> &'static str {
        match self {
            VerifyError::Missing => "signature_missing",
            VerifyError::Malformed => "signature_malformed",
            VerifyError::Mismatch => "signature_mismatch",
            VerifyError::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("scheme {0} needs an event id (--id)")]
    IdRequired(&'static str),
    #[error(transparent)]
    Key(#[from] KeyError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub timestamp: Option<i64>,
    pub key_index: usize,
}

#[derive(Debug, Clone)]
pub struct Verifier {
    scheme: Scheme,
    keys: Vec<Key>,
    tolerance: Duration,
}

impl Verifier {
    pub fn new(_scheme: Scheme, _secrets: &[&[u8]], _tolerance: Duration) -> Result<Self, KeyError> {
        unimplemented!()
    }
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }
    pub fn verify(&self, _headers: &HeaderMap, _body: &[u8], _now: SystemTime) -> Result<Verified, VerifyError> {
        let _ = (&self.keys, self.tolerance);
        unimplemented!()
    }
}

pub fn sign(
    _scheme: &Scheme,
    _secret: &[u8],
    _body: &[u8],
    _id: Option<&str>,
    _timestamp: i64,
) -> Result<Vec<(HeaderName, HeaderValue)>, SignError> {
    unimplemented!()
}
