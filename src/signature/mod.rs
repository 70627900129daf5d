//! Signature schemes: pure, synchronous sign + verify for every preset and the
//! custom scheme. No I/O, no async, nothing else of this crate is imported.
//!
//! This module owns everything between "a request's headers and raw body" and
//! "this request was (not) signed by a holder of one of the configured secrets":
//! the closed set of [`Preset`]s, the configurable [`Custom`] scheme, key
//! derivation from configured secrets ([`Key`]), verification ([`Verifier`])
//! and signing ([`sign`], used by the CLI and tests to produce valid requests).
//!
//! Invariants:
//!
//! * **Pure.** Verification depends only on its arguments; the clock is passed
//!   in as `now`, so the same inputs always give the same answer.
//! * **Constant time.** Expected MACs are compared with candidate signatures
//!   through [`subtle::ConstantTimeEq`], and the scan over every (key, candidate)
//!   pair never stops early, so neither the match position nor the number of
//!   matching bytes shows in the timing. GitLab's plain token and Postmark's
//!   basic-auth credentials are compared as SHA-256 digests, which also hides
//!   their length.
//! * **Bounded parsing.** Header parsing never panics, never allocates more
//!   than the header's own size, and considers at most [`MAX_CANDIDATES`]
//!   signatures in total across every instance of the signature header; later
//!   ones are ignored (a legitimate sender sends one or two, one per active
//!   secret during rotation). Timestamps are parsed without overflow and all
//!   clock arithmetic is done in `i128`, which cannot overflow for any `i64`
//!   timestamp or any `Duration`-in-seconds tolerance.
//! * **Tolerance.** A timestamp `ts` is accepted iff `|now − ts| ≤ tolerance`
//!   (whole seconds): stale and future timestamps are both rejected.
//! * **Error precedence.** Signature header absent → [`VerifyError::Missing`];
//!   present but unparseable (bad encoding, wrong prefix, missing or
//!   non-numeric timestamp, non-visible-ASCII header, a required id/timestamp
//!   header absent) → [`VerifyError::Malformed`]; timestamp outside tolerance →
//!   [`VerifyError::TimestampOutOfTolerance`]; otherwise no (key, candidate)
//!   pair matches → [`VerifyError::Mismatch`].
//! * **Timestamp before MAC.** The tolerance check runs before any MAC is
//!   computed. It only looks at public inputs (a header the attacker wrote and
//!   the clock), so its outcome tells an attacker nothing about the keys, and a
//!   replayed stale request is rejected without spending HMAC work on its body.
//!   Linear is the one exception (its timestamp lives in the body, see
//!   `presets.rs`): it is checked only after the signature has matched.
//! * **Wrong-length signatures** that decode fine are a `Mismatch`, not
//!   `Malformed`: the encoding is valid, the value simply is not one of ours.
//!   A candidate that is not valid hex/base64 is skipped; if no usable
//!   candidate remains and at least one was unusable, the header is
//!   `Malformed`. Entries of an unknown version (`v0=` for Stripe, `v2,` for
//!   Standard Webhooks, unknown keys) are skipped and, alone, give `Mismatch`.
//! * **Asymmetric keys.** Standard Webhooks `v1a,` entries are ed25519
//!   signatures, checked (with `ring`) only against `whpk_`/`whsk_` keys;
//!   `v1,` entries only against HMAC keys. A header may carry both; the
//!   first configured key that verifies any entry is `Verified::key_index`.
//! * **Validity windows.** A key outside its [`Window`] at `now` is never
//!   compared, so it cannot match: the request is a `Mismatch` unless another
//!   key verifies it.
//! * **Signed URLs.** Square, HubSpot and Twilio sign the URL they call; it
//!   comes from the route's configuration ([`Verifier::with_signed_url`]),
//!   never from the request, except Twilio's query string
//!   ([`Verifier::verify_request`]). Twilio's `bodySHA256` (JSON bodies) is
//!   compared with the body's hash once the signature over it has matched.
//! * **Signatures in the body.** Mailgun sends no signature header: its
//!   timestamp, token and signature are fields of the body (JSON or form),
//!   read with the same bounds and error precedence (no fields → `Missing`).
//!   It signs neither the event nor the URL, only `<timestamp><token>`.

mod crypto;
mod custom;
mod engine;
mod parse;
mod presets;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

pub use parse::MAX_CANDIDATES;

/// A named signature scheme preset (SPEC §1.2 and the extra presets of issues 2 and 12).
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
    Meta,
    Whatsapp,
    Typeform,
    Calendly,
    Vercel,
    Clerk,
    Resend,
    Mux,
    Docusign,
    LemonSqueezy,
    Gitea,
    Dropbox,
    Square,
    Hubspot,
    Twilio,
    Mailgun,
    Postmark,
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
    pub const ALL: &'static [Preset] = &[
        Preset::Sigsentry,
        Preset::Statussentry,
        Preset::Sentry,
        Preset::StandardWebhooks,
        Preset::Svix,
        Preset::Stripe,
        Preset::Github,
        Preset::Slack,
        Preset::Shopify,
        Preset::Pagerduty,
        Preset::Linear,
        Preset::Paddle,
        Preset::Zoom,
        Preset::Intercom,
        Preset::Twitch,
        Preset::Gitlab,
        Preset::Meta,
        Preset::Whatsapp,
        Preset::Typeform,
        Preset::Calendly,
        Preset::Vercel,
        Preset::Clerk,
        Preset::Resend,
        Preset::Mux,
        Preset::Docusign,
        Preset::LemonSqueezy,
        Preset::Gitea,
        Preset::Dropbox,
        Preset::Square,
        Preset::Hubspot,
        Preset::Twilio,
        Preset::Mailgun,
        Preset::Postmark,
    ];

    /// The kebab-case name, identical to the serde representation.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Sigsentry => "sigsentry",
            Preset::Statussentry => "statussentry",
            Preset::Sentry => "sentry",
            Preset::StandardWebhooks => "standard-webhooks",
            Preset::Svix => "svix",
            Preset::Stripe => "stripe",
            Preset::Github => "github",
            Preset::Slack => "slack",
            Preset::Shopify => "shopify",
            Preset::Pagerduty => "pagerduty",
            Preset::Linear => "linear",
            Preset::Paddle => "paddle",
            Preset::Zoom => "zoom",
            Preset::Intercom => "intercom",
            Preset::Twitch => "twitch",
            Preset::Gitlab => "gitlab",
            Preset::Meta => "meta",
            Preset::Whatsapp => "whatsapp",
            Preset::Typeform => "typeform",
            Preset::Calendly => "calendly",
            Preset::Vercel => "vercel",
            Preset::Clerk => "clerk",
            Preset::Resend => "resend",
            Preset::Mux => "mux",
            Preset::Docusign => "docusign",
            Preset::LemonSqueezy => "lemon-squeezy",
            Preset::Gitea => "gitea",
            Preset::Dropbox => "dropbox",
            Preset::Square => "square",
            Preset::Hubspot => "hubspot",
            Preset::Twilio => "twilio",
            Preset::Mailgun => "mailgun",
            Preset::Postmark => "postmark",
        }
    }

    pub fn default_event_id(self) -> Option<EventIdSource> {
        use EventIdSource::{BodyPointer, Header};
        match self {
            Preset::Sigsentry => Some(BodyPointer("/analysisId")),
            Preset::Statussentry | Preset::Stripe => Some(BodyPointer("/id")),
            Preset::Paddle => Some(BodyPointer("/event_id")),
            Preset::Sentry => Some(Header("request-id")),
            Preset::StandardWebhooks => Some(Header("webhook-id")),
            Preset::Svix => Some(Header("svix-id")),
            Preset::Github => Some(Header("x-github-delivery")),
            Preset::Shopify => Some(Header("x-shopify-webhook-id")),
            Preset::Linear => Some(Header("linear-delivery")),
            Preset::Twitch => Some(Header("twitch-eventsub-message-id")),
            Preset::Gitlab => Some(Header("x-gitlab-event-uuid")),
            Preset::Clerk | Preset::Resend => Some(Header("svix-id")),
            Preset::Typeform | Preset::Square => Some(BodyPointer("/event_id")),
            Preset::Vercel | Preset::Mux => Some(BodyPointer("/id")),
            Preset::Gitea => Some(Header("x-gitea-delivery")),
            Preset::Twilio => Some(Header("i-twilio-idempotency-token")),
            // Mailgun signs `<timestamp><token>`, not the event: the token is
            // what must not be accepted twice (its documented replay check).
            Preset::Mailgun => Some(BodyPointer("/signature/token")),
            Preset::Slack
            | Preset::Pagerduty
            | Preset::Zoom
            | Preset::Intercom
            | Preset::Meta
            | Preset::Whatsapp
            | Preset::Calendly
            | Preset::Docusign
            | Preset::LemonSqueezy
            | Preset::Dropbox
            | Preset::Hubspot
            // Postmark repeats a message's `MessageID` in each of its open
            // and click events: not an event id.
            | Preset::Postmark => None,
        }
    }
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Preset::ALL
            .iter()
            .copied()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
                format!(
                    "unknown signature preset {s:?}; valid presets are: {}",
                    names.join(", ")
                )
            })
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
        self.spec().map(drop)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Preset(Preset),
    Custom(Box<Custom>),
}

impl Scheme {
    /// The preset's name, or `"custom"`.
    pub fn name(&self) -> &str {
        self.static_name()
    }

    /// Whether verification reads (and checks) a timestamp. Linear is `false`:
    /// its optional body timestamp is not part of the request's headers.
    pub fn uses_timestamp(&self) -> bool {
        match self {
            Scheme::Preset(p) => presets::spec(*p).timestamp.is_some(),
            Scheme::Custom(c) => c.timestamp_header.is_some(),
        }
    }

    /// Whether the signed content includes the public URL the provider calls
    /// (the route must then set `signed_url`).
    pub fn signs_url(&self) -> bool {
        match self {
            Scheme::Preset(p) => presets::spec(*p).signs_url(),
            Scheme::Custom(_) => false,
        }
    }

    /// Whether the signature travels in the body (Mailgun) rather than in a
    /// header: such a scheme is signed with [`sign_request`], which returns
    /// the body to send.
    pub fn signs_in_body(&self) -> bool {
        match self {
            Scheme::Preset(p) => presets::spec(*p).signs_in_body(),
            Scheme::Custom(_) => false,
        }
    }

    fn static_name(&self) -> &'static str {
        match self {
            Scheme::Preset(p) => p.name(),
            Scheme::Custom(_) => "custom",
        }
    }
}

/// Key bytes derived from a configured secret. Debug prints `[redacted]`.
///
/// `.0` is the HMAC key (or GitLab token); for a Standard Webhooks `whpk_` /
/// `whsk_` key it is the ed25519 public key, and `.1` says which it is.
#[derive(Clone)]
pub struct Key(Vec<u8>, KeyKind);

#[derive(Clone)]
enum KeyKind {
    /// An HMAC key (or a token), with the HMAC states keyed by it once.
    Mac(Box<crypto::MacKeys>),
    /// `whpk_`: verifies `v1a` signatures only.
    Ed25519Public,
    /// `whsk_`: verifies `v1a` (with the public key in `.0`) and signs with
    /// this 32-byte seed.
    Ed25519Secret(Vec<u8>),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Key {
    /// Derives the key `scheme` uses from a configured secret: for
    /// `standard-webhooks`, `svix`, `clerk` and `resend` a `whsec_` secret is
    /// the base64 (standard alphabet, padding optional) of the key; for
    /// `standard-webhooks`, `whpk_` + base64 of a 32-byte ed25519 public key
    /// verifies `v1a` signatures and `whsk_` + base64 of a 32-byte ed25519
    /// seed (or the 64-byte seed ‖ public key) verifies and signs them; every
    /// other secret, including Stripe's `whsec_…`, is used verbatim.
    pub fn derive(scheme: &Scheme, secret: &[u8]) -> Result<Key, KeyError> {
        crypto::derive_key(scheme, secret)
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The HMAC key (or token), `None` for an ed25519 key.
    fn mac_key(&self) -> Option<&[u8]> {
        matches!(self.1, KeyKind::Mac(_)).then_some(self.0.as_slice())
    }

    /// The HMAC states keyed by this key, `None` for an ed25519 key.
    fn mac_keys(&self) -> Option<&crypto::MacKeys> {
        match &self.1 {
            KeyKind::Mac(keys) => Some(keys),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("secret is empty")]
    Empty,
    #[error("whsec_ secret is not valid base64 after the prefix")]
    BadBase64,
    #[error("whpk_/whsk_ key is not base64 of a valid ed25519 key (32 bytes; whsk_ may be 64)")]
    BadEd25519,
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
    /// Every verification failure, for metrics that exist from startup.
    pub const ALL: [VerifyError; 4] = [
        VerifyError::Missing,
        VerifyError::Malformed,
        VerifyError::Mismatch,
        VerifyError::TimestampOutOfTolerance,
    ];

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
    /// A header could not be built: an invalid custom scheme, or an id (or a
    /// GitLab token) that is not a valid HTTP header value.
    #[error("cannot sign: {0}")]
    Invalid(String),
    /// [`sign`] or [`sign_url`] for a scheme that signs inside the body.
    #[error("scheme {0} carries its signature in the body: sign the request with sign_request")]
    InBody(&'static str),
}

/// What a sender sends: `headers`, and for a scheme that carries its
/// signature in the body ([`Scheme::signs_in_body`]), the `body` to send in
/// place of the one given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<Vec<u8>>,
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
    /// Per key: its validity window (`None`: always valid).
    windows: Vec<Window>,
    tolerance: Duration,
    /// The public URL the sender signs, for schemes that sign it.
    signed_url: String,
    /// The signature header's name, parsed once: a lookup by `&str` parses
    /// and lower-cases the name on every request (~0.4k instructions).
    header: Option<http::HeaderName>,
}

/// When a secret verifies: from `not_before` (inclusive) until `not_after`
/// (inclusive); an open end is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub not_before: Option<SystemTime>,
    pub not_after: Option<SystemTime>,
}

impl Window {
    pub fn contains(&self, now: SystemTime) -> bool {
        self.not_before.is_none_or(|t| now >= t) && self.not_after.is_none_or(|t| now <= t)
    }
}

impl Verifier {
    /// Derives one key per secret (in order: `Verified::key_index` indexes
    /// `secrets`). No secret at all is `KeyError::Empty`, like an empty one.
    ///
    /// A custom scheme is expected to have passed [`Custom::validate`] at
    /// config load; one that does not never verifies (fails closed with
    /// `Mismatch`) rather than erroring here.
    pub fn new(scheme: Scheme, secrets: &[&[u8]], tolerance: Duration) -> Result<Self, KeyError> {
        if secrets.is_empty() {
            return Err(KeyError::Empty);
        }
        let keys = secrets
            .iter()
            .map(|s| Key::derive(&scheme, s))
            .collect::<Result<Vec<_>, _>>()?;
        let windows = vec![Window::default(); keys.len()];
        let header = match &scheme {
            Scheme::Preset(p) => presets::spec(*p).header.parse().ok(),
            Scheme::Custom(c) => c.header.parse().ok(),
        };
        Ok(Verifier {
            scheme,
            keys,
            windows,
            tolerance,
            signed_url: String::new(),
            header,
        })
    }

    /// Sets the validity window of each secret, in the order given to
    /// [`Verifier::new`]; missing entries are always valid, extra ones ignored.
    pub fn with_windows(mut self, windows: &[Window]) -> Self {
        for (slot, w) in self.windows.iter_mut().zip(windows) {
            *slot = *w;
        }
        self
    }

    /// Sets the public URL the sender signs (see [`Scheme::signs_url`]): the
    /// URL the provider was configured with, as a proxy in front may change
    /// what hookgate itself sees.
    pub fn with_signed_url(mut self, url: &str) -> Self {
        url.clone_into(&mut self.signed_url);
        self
    }

    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        self.verify_request(headers, body, now, None)
    }

    /// [`Verifier::verify`] with the request's query string, which `twilio`
    /// signs (after `signed_url`); other schemes ignore it.
    pub fn verify_request(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
        query: Option<&str>,
    ) -> Result<Verified, VerifyError> {
        let request = engine::Request {
            headers,
            body,
            now,
            url: &self.signed_url,
            query,
            header: self.header.as_ref(),
        };
        // Which keys are inside their window now: on the stack for the
        // usual handful of keys (no allocation a request).
        let mut on = [false; 8];
        let many: Vec<bool>;
        let active: &[bool] = match on.get_mut(..self.windows.len()) {
            Some(slots) => {
                for (slot, w) in slots.iter_mut().zip(&self.windows) {
                    *slot = w.contains(now);
                }
                slots
            }
            None => {
                many = self.windows.iter().map(|w| w.contains(now)).collect();
                &many
            }
        };
        let (keys, tolerance) = (&self.keys, self.tolerance);
        match &self.scheme {
            Scheme::Preset(p) => {
                engine::verify(&presets::spec(*p), keys, active, tolerance, &request)
            }
            Scheme::Custom(c) => match c.spec() {
                Ok(spec) => engine::verify(&spec, keys, active, tolerance, &request),
                // Fail closed, but keep the precedence for the absent header.
                Err(_) if headers.get(c.header.as_str()).is_none() => Err(VerifyError::Missing),
                Err(_) => Err(VerifyError::Mismatch),
            },
        }
    }
}

/// Every header a sender must send for `scheme`: the signature header plus the
/// id and timestamp headers the scheme reads (the id header only when `id` is
/// given, unless the signed content includes the id, in which case it is
/// required). `timestamp` is unix seconds; schemes without one ignore it.
/// Header names are lower-case.
pub fn sign(
    scheme: &Scheme,
    secret: &[u8],
    body: &[u8],
    id: Option<&str>,
    timestamp: i64,
) -> Result<Vec<(HeaderName, HeaderValue)>, SignError> {
    sign_url(scheme, secret, body, id, timestamp, "")
}

/// [`sign`] for a scheme that signs the public URL (see
/// [`Scheme::signs_url`]); `url` is ignored by the others. For Twilio it is
/// the URL as called, query included.
pub fn sign_url(
    scheme: &Scheme,
    secret: &[u8],
    body: &[u8],
    id: Option<&str>,
    timestamp: i64,
    url: &str,
) -> Result<Vec<(HeaderName, HeaderValue)>, SignError> {
    if scheme.signs_in_body() {
        return Err(SignError::InBody(scheme.static_name()));
    }
    sign_request(scheme, secret, body, id, timestamp, url).map(|signed| signed.headers)
}

/// Signs a request for any scheme: the headers to send and, for a scheme
/// that signs inside the body (Mailgun, where `id` is the token), the body
/// to send instead of `body`.
pub fn sign_request(
    scheme: &Scheme,
    secret: &[u8],
    body: &[u8],
    id: Option<&str>,
    timestamp: i64,
    url: &str,
) -> Result<Signed, SignError> {
    let key = Key::derive(scheme, secret)?;
    let input = engine::SignInput {
        scheme_name: scheme.static_name(),
        key: &key,
        url,
        body,
        id,
        timestamp,
    };
    match scheme {
        Scheme::Preset(p) => engine::sign(&presets::spec(*p), &input),
        Scheme::Custom(c) => {
            let spec = c.spec().map_err(SignError::Invalid)?;
            engine::sign(&spec, &input)
        }
    }
}
