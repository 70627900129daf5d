//! The preset table: each provider's scheme as data for `engine.rs`.
//!
//! Sources: Standard Webhooks spec (github.com/standard-webhooks), Svix docs,
//! Stripe, GitHub, Slack, Shopify, PagerDuty, Linear, Paddle Billing, Zoom,
//! Intercom, Twitch EventSub and GitLab webhook docs, and (issue 12) Meta
//! Graph API, Typeform, Calendly, Mux, Vercel, Clerk and Resend (Svix),
//! DocuSign Connect, Lemon Squeezy, Gitea, Dropbox, Square, HubSpot
//! (signature v3), Twilio, Mailgun and Postmark docs; SigSentry and
//! StatusSentry are this project's own senders (SPEC §1.2).

use std::borrow::Cow;

use super::engine::{Check, Format, Part, Spec, TsFormat, TsSource};
use super::{Algorithm, Encoding, Preset};

const BODY: &[Part<'static>] = &[Part::Body];
/// Stripe, StatusSentry: `<t>.<body>`.
const TS_DOT_BODY: &[Part<'static>] = &[Part::Timestamp, Part::Lit(b"."), Part::Body];
/// Paddle: `<ts>:<body>`.
const TS_COLON_BODY: &[Part<'static>] = &[Part::Timestamp, Part::Lit(b":"), Part::Body];
/// Slack, Zoom: `v0:<ts>:<body>`.
const V0_TS_BODY: &[Part<'static>] = &[
    Part::Lit(b"v0:"),
    Part::Timestamp,
    Part::Lit(b":"),
    Part::Body,
];
/// Standard Webhooks, Svix: `<id>.<ts>.<body>`.
const ID_TS_BODY_DOTTED: &[Part<'static>] = &[
    Part::Id,
    Part::Lit(b"."),
    Part::Timestamp,
    Part::Lit(b"."),
    Part::Body,
];
/// Square: `<notification URL><body>`.
const URL_BODY: &[Part<'static>] = &[Part::Url, Part::Body];
/// HubSpot v3: `POST<URI><body><ts ms>` (webhooks are always POSTed).
const POST_URL_BODY_TS: &[Part<'static>] =
    &[Part::Lit(b"POST"), Part::Url, Part::Body, Part::Timestamp];
/// Twilio: `<URL as called, query included><sorted form params>`.
const URL_QUERY_FORM: &[Part<'static>] = &[Part::UrlAndQuery, Part::FormParams];
/// Mailgun: `<timestamp><token>` (the token in the id's place).
const TS_TOKEN: &[Part<'static>] = &[Part::Timestamp, Part::Id];
/// Twitch: `<id><ts><body>`, no separators.
const ID_TS_BODY: &[Part<'static>] = &[Part::Id, Part::Timestamp, Part::Body];

/// HMAC-SHA256, the common case.
const fn sha256(encoding: Encoding, content: &'static [Part<'static>]) -> Check<'static> {
    Check::Hmac {
        algorithm: Algorithm::Sha256,
        encoding,
        content: Cow::Borrowed(content),
    }
}

const fn unix_header(name: &'static str) -> Option<TsSource<'static>> {
    Some(TsSource::Header(name, TsFormat::UnixSeconds))
}

pub(super) fn spec(preset: Preset) -> Spec<'static> {
    use Encoding::{Base64, Hex};
    // The header an event id is sent in, when the preset has one.
    let id_header = match preset.default_event_id() {
        Some(super::EventIdSource::Header(name)) => Some(name),
        _ => None,
    };
    let base = Spec {
        header: "",
        format: Format::Bare,
        check: sha256(Hex, BODY),
        timestamp: None,
        id_header,
        body_timestamp: false,
    };
    match preset {
        Preset::Sigsentry => Spec {
            header: "x-sigsentry-signature",
            format: Format::Prefixed("sha256="),
            ..base
        },
        Preset::Statussentry => Spec {
            header: "x-statussentry-signature",
            format: Format::List {
                sep: ',',
                sig_key: "v1",
            },
            check: sha256(Hex, TS_DOT_BODY),
            timestamp: Some(TsSource::InList("t")),
            ..base
        },
        // Sentry signs the body only; its timestamp header is required and
        // checked, though not covered by the signature.
        Preset::Sentry => Spec {
            header: "sentry-hook-signature",
            timestamp: unix_header("sentry-hook-timestamp"),
            ..base
        },
        // `v1` (HMAC, `whsec_`) and `v1a` (ed25519, `whpk_`/`whsk_`) entries
        // may share the header; either verifies.
        Preset::StandardWebhooks => Spec {
            header: "webhook-signature",
            format: Format::VersionedEd25519 {
                hmac: "v1",
                ed25519: "v1a",
            },
            check: sha256(Base64, ID_TS_BODY_DOTTED),
            timestamp: unix_header("webhook-timestamp"),
            ..base
        },
        Preset::Svix => Spec {
            header: "svix-signature",
            format: Format::Versioned("v1"),
            check: sha256(Base64, ID_TS_BODY_DOTTED),
            timestamp: unix_header("svix-timestamp"),
            ..base
        },
        // `v0=` (Stripe's legacy test-mode scheme) and unknown keys are skipped.
        Preset::Stripe => Spec {
            header: "stripe-signature",
            format: Format::List {
                sep: ',',
                sig_key: "v1",
            },
            check: sha256(Hex, TS_DOT_BODY),
            timestamp: Some(TsSource::InList("t")),
            ..base
        },
        Preset::Github => Spec {
            header: "x-hub-signature-256",
            format: Format::Prefixed("sha256="),
            ..base
        },
        Preset::Slack => Spec {
            header: "x-slack-signature",
            format: Format::Prefixed("v0="),
            check: sha256(Hex, V0_TS_BODY),
            timestamp: unix_header("x-slack-request-timestamp"),
            ..base
        },
        Preset::Shopify => Spec {
            header: "x-shopify-hmac-sha256",
            check: sha256(Base64, BODY),
            ..base
        },
        Preset::Pagerduty => Spec {
            header: "x-pagerduty-signature",
            format: Format::List {
                sep: ',',
                sig_key: "v1",
            },
            ..base
        },
        // Linear puts no timestamp in its headers. Its docs ask receivers to
        // check the body's `webhookTimestamp` (ms): we do, against the route's
        // tolerance, when the body is JSON holding a number there, and only
        // after the signature matched (it is body content, so it is only
        // trustworthy once authenticated). Bodies without it are not rejected.
        Preset::Linear => Spec {
            header: "linear-signature",
            body_timestamp: true,
            ..base
        },
        Preset::Paddle => Spec {
            header: "paddle-signature",
            format: Format::List {
                sep: ';',
                sig_key: "h1",
            },
            check: sha256(Hex, TS_COLON_BODY),
            timestamp: Some(TsSource::InList("ts")),
            ..base
        },
        Preset::Zoom => Spec {
            header: "x-zm-signature",
            format: Format::Prefixed("v0="),
            check: sha256(Hex, V0_TS_BODY),
            timestamp: unix_header("x-zm-request-timestamp"),
            ..base
        },
        Preset::Intercom => Spec {
            header: "x-hub-signature",
            format: Format::Prefixed("sha1="),
            check: Check::Hmac {
                algorithm: Algorithm::Sha1,
                encoding: Hex,
                content: Cow::Borrowed(BODY),
            },
            ..base
        },
        Preset::Twitch => Spec {
            header: "twitch-eventsub-message-signature",
            format: Format::Prefixed("sha256="),
            check: sha256(Hex, ID_TS_BODY),
            timestamp: Some(TsSource::Header(
                "twitch-eventsub-message-timestamp",
                TsFormat::Rfc3339,
            )),
            ..base
        },
        Preset::Gitlab => Spec {
            header: "x-gitlab-token",
            check: Check::Token,
            ..base
        },
        // Meta (Graph API: WhatsApp Business, Messenger, Instagram) signs the
        // body with the app secret, exactly as GitHub does.
        Preset::Meta | Preset::Whatsapp => Spec {
            header: "x-hub-signature-256",
            format: Format::Prefixed("sha256="),
            ..base
        },
        Preset::Typeform => Spec {
            header: "typeform-signature",
            format: Format::Prefixed("sha256="),
            check: sha256(Base64, BODY),
            ..base
        },
        Preset::Calendly => Spec {
            header: "calendly-webhook-signature",
            format: Format::List {
                sep: ',',
                sig_key: "v1",
            },
            check: sha256(Hex, TS_DOT_BODY),
            timestamp: Some(TsSource::InList("t")),
            ..base
        },
        Preset::Mux => Spec {
            header: "mux-signature",
            format: Format::List {
                sep: ',',
                sig_key: "v1",
            },
            check: sha256(Hex, TS_DOT_BODY),
            timestamp: Some(TsSource::InList("t")),
            ..base
        },
        // Vercel signs the body with HMAC-SHA1 (hex), no prefix.
        Preset::Vercel => Spec {
            header: "x-vercel-signature",
            check: Check::Hmac {
                algorithm: Algorithm::Sha1,
                encoding: Hex,
                content: Cow::Borrowed(BODY),
            },
            ..base
        },
        // Clerk and Resend deliver through Svix: Svix's headers and scheme.
        Preset::Clerk | Preset::Resend => Spec {
            header: "svix-signature",
            format: Format::Versioned("v1"),
            check: sha256(Base64, ID_TS_BODY_DOTTED),
            timestamp: unix_header("svix-timestamp"),
            ..base
        },
        // DocuSign Connect sends one `X-DocuSign-Signature-<n>` per active
        // HMAC key; the first is the one checked.
        Preset::Docusign => Spec {
            header: "x-docusign-signature-1",
            check: sha256(Base64, BODY),
            ..base
        },
        Preset::LemonSqueezy => Spec {
            header: "x-signature",
            ..base
        },
        Preset::Gitea => Spec {
            header: "x-gitea-signature",
            ..base
        },
        Preset::Dropbox => Spec {
            header: "x-dropbox-signature",
            ..base
        },
        // Square and HubSpot sign the URL they call: the route's `signed_url`.
        Preset::Square => Spec {
            header: "x-square-hmacsha256-signature",
            check: sha256(Base64, URL_BODY),
            ..base
        },
        // Twilio: HMAC-SHA1 (base64) with the auth token over the URL it
        // called and the sorted form parameters; for JSON bodies the URL has
        // `bodySHA256=<hex SHA-256 of the body>`, checked after the match.
        Preset::Twilio => Spec {
            header: "x-twilio-signature",
            check: Check::Hmac {
                algorithm: Algorithm::Sha1,
                encoding: Base64,
                content: Cow::Borrowed(URL_QUERY_FORM),
            },
            ..base
        },
        Preset::Hubspot => Spec {
            header: "x-hubspot-signature-v3",
            check: sha256(Base64, POST_URL_BODY_TS),
            timestamp: Some(TsSource::Header(
                "x-hubspot-request-timestamp",
                TsFormat::UnixMillis,
            )),
            ..base
        },
        // Mailgun signs no header and not the body: HMAC-SHA256 (hex) with
        // the webhook signing key over `<timestamp><token>`, all three fields
        // of the body (`parse::body_signature`). The event is covered only by
        // TLS, the timestamp and the token's single use (the default dedup
        // key is `/signature/token`).
        Preset::Mailgun => Spec {
            header: "",
            format: Format::InBody,
            check: sha256(Hex, TS_TOKEN),
            timestamp: Some(TsSource::InBody),
            id_header: None,
            ..base
        },
        // Postmark authenticates with HTTP basic auth (the webhook URL's
        // `user:password@`); the secret is `user:password`.
        Preset::Postmark => Spec {
            header: "authorization",
            format: Format::Basic,
            check: Check::Token,
            ..base
        },
    }
}
