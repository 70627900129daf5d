//! The one verify/sign pipeline every scheme runs through. A scheme is data
//! ([`Spec`]): where its signature lives and how it is laid out, what bytes are
//! signed, and where its id and timestamp come from. Presets build theirs in
//! `presets.rs`, the custom scheme in `custom.rs`.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::parse::{self, Candidates};
use super::{crypto, Algorithm, Encoding, Key, SignError, Signed, Verified, VerifyError};

/// Everything that distinguishes one scheme from another.
#[derive(Debug, Clone)]
pub(super) struct Spec<'a> {
    /// The header carrying the signature(s) (or GitLab's token).
    pub header: &'a str,
    pub format: Format<'a>,
    pub check: Check<'a>,
    pub timestamp: Option<TsSource<'a>>,
    /// The header carrying the event id. Read by `verify` only when the signed
    /// content includes the id; sent by `sign` whenever an id is given.
    pub id_header: Option<&'a str>,
    /// Linear only: after a match, check the JSON body's numeric
    /// `webhookTimestamp` (milliseconds) against the tolerance when present.
    pub body_timestamp: bool,
}

/// How one instance of the signature header is laid out.
#[derive(Debug, Clone, Copy)]
pub(super) enum Format<'a> {
    /// The whole value is one signature: `<sig>`.
    Bare,
    /// One signature after a fixed prefix: `sha256=<sig>`.
    Prefixed(&'a str),
    /// Space-separated `version,<sig>` entries (Standard Webhooks); entries of
    /// other versions are skipped.
    Versioned(&'a str),
    /// As [`Format::Versioned`], plus `ed25519,<base64 sig>` entries checked
    /// against ed25519 public keys (Standard Webhooks `v1a`).
    VersionedEd25519 { hmac: &'a str, ed25519: &'a str },
    /// `key=value` entries separated by `sep`; `sig_key` entries are
    /// signatures, the timestamp key (see [`TsSource::InList`]) is read, other
    /// keys are skipped.
    List { sep: char, sig_key: &'a str },
    /// `Basic <base64 of user:password>` (HTTP basic auth, Postmark), with
    /// [`Check::Token`]: the decoded credentials are the token.
    Basic,
    /// No header: the signature, its timestamp and a one-time token are
    /// fields of the body (Mailgun; see [`parse::body_signature`]). The
    /// token is the signed content's [`Part::Id`].
    InBody,
}

#[derive(Debug, Clone)]
pub(super) enum Check<'a> {
    /// HMAC over `content`, encoded with `encoding`.
    Hmac {
        algorithm: Algorithm,
        encoding: Encoding,
        content: Cow<'a, [Part<'a>]>,
    },
    /// The header carries the secret itself (GitLab), or basic-auth
    /// credentials equal to it ([`Format::Basic`], Postmark).
    Token,
}

/// One piece of the signed content; the content is their concatenation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part<'a> {
    Lit(&'a [u8]),
    Id,
    /// The timestamp exactly as sent (the sender signed its own text).
    Timestamp,
    Body,
    /// The public URL the sender signed (the route's `signed_url`).
    Url,
    /// `signed_url`, then `?` and the request's query string when it has one
    /// (Twilio signs the URL it called, query included).
    UrlAndQuery,
    /// Twilio: the form body's parameters sorted by name (then value),
    /// each name followed by its value; empty when the query carries
    /// `bodySHA256` (a JSON body, authenticated by that hash instead).
    FormParams,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum TsSource<'a> {
    /// Unix seconds under this key of a [`Format::List`] signature header.
    InList(&'a str),
    /// A header of its own.
    Header(&'a str, TsFormat),
    /// Unix seconds, a field of the body ([`Format::InBody`]).
    InBody,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TsFormat {
    UnixSeconds,
    /// Unix milliseconds (HubSpot); the tolerance is checked in whole seconds.
    UnixMillis,
    /// RFC 3339 (Twitch), parsed with `humantime::parse_rfc3339_weak`.
    Rfc3339,
}

impl Spec<'_> {
    fn content(&self) -> &[Part<'_>] {
        match &self.check {
            Check::Hmac { content, .. } => content,
            Check::Token => &[],
        }
    }

    pub fn needs_id(&self) -> bool {
        self.content().contains(&Part::Id)
    }

    pub fn signs_url(&self) -> bool {
        let content = self.content();
        content.contains(&Part::Url) || content.contains(&Part::UrlAndQuery)
    }

    /// Whether the signature travels in the body rather than a header.
    pub fn signs_in_body(&self) -> bool {
        matches!(self.format, Format::InBody)
    }
}

pub(super) struct Request<'r> {
    pub headers: &'r HeaderMap,
    pub body: &'r [u8],
    pub now: SystemTime,
    /// The signed URL (empty when the route sets none).
    pub url: &'r str,
    /// The request's query string, for [`Part::UrlAndQuery`].
    pub query: Option<&'r str>,
    /// The spec's signature header, parsed (when it parses; the spec's own
    /// `&str` is looked up otherwise).
    pub header: Option<&'r http::HeaderName>,
}

/// `active[i]` says whether `keys[i]` is inside its validity window now; an
/// inactive key is never compared (it cannot match).
pub(super) fn verify(
    spec: &Spec<'_>,
    keys: &[Key],
    active: &[bool],
    tolerance: Duration,
    req: &Request<'_>,
) -> Result<Verified, VerifyError> {
    // 1–2. The candidate signatures, and the timestamp and id the signed
    // content needs: from the headers, or (Mailgun) from the body.
    let body_fields: parse::BodySignature;
    // Filled in place: the candidates are kept inline, and moving them
    // costs a copy.
    let mut found = Candidates::default();
    let (ts, id) = if spec.signs_in_body() {
        let Check::Hmac { encoding, .. } = &spec.check else {
            return Err(VerifyError::Malformed);
        };
        body_fields = parse::body_signature(req.body)?;
        found.offer(&body_fields.signature, *encoding);
        found.check_usable()?;
        let ts = parse::timestamp(&body_fields.timestamp, TsFormat::UnixSeconds)?;
        (Some(ts), Some(body_fields.token.as_str()))
    } else {
        from_headers(spec, req.headers, req.header, &mut found)?
    };

    // 3. Tolerance, before any MAC: it depends on public inputs only.
    if let Some(ts) = &ts {
        if !within_tolerance_secs(req.now, ts.unix, tolerance) {
            return Err(VerifyError::TimestampOutOfTolerance);
        }
    }

    // 4. Every candidate against every key, in constant time.
    if found.is_empty() {
        // Only unknown versions were present: nothing to compare.
        return Err(VerifyError::Mismatch);
    }
    let key_index = match &spec.check {
        Check::Token => {
            // An inactive key's digest is replaced by one no token hashes to
            // in practice (all zeroes), and its index is masked below.
            let expected: Vec<[u8; 32]> = keys.iter().map(|k| crypto::sha256(k.bytes())).collect();
            let masked: Vec<&[u8]> = expected
                .iter()
                .zip(active)
                .map(|(e, on)| if *on { e.as_slice() } else { &[] })
                .collect();
            crypto::first_match(&masked, found.as_slice())
        }
        Check::Hmac {
            algorithm, content, ..
        } => {
            // Built only for the schemes that sign it (no allocation else).
            let url_and_query: std::borrow::Cow<'_, str> = match req.query {
                Some(q) if !q.is_empty() && content.contains(&Part::UrlAndQuery) => {
                    format!("{}?{q}", req.url).into()
                }
                _ => req.url.into(),
            };
            let form = form_params(content, req.body, &url_and_query);
            let parts = content_parts(
                content,
                id,
                ts.as_ref().map(|t| t.raw),
                req.body,
                (req.url, &url_and_query),
                &form,
            );
            // A key that cannot MAC (an ed25519 key) or is outside its window
            // expects nothing: an empty value never equals a candidate, which
            // is never empty.
            // Inline for the usual one or two keys (no allocation a request).
            let mut expected = smallvec::SmallVec::<[crypto::Tag; 2]>::new();
            for (k, on) in keys.iter().zip(active) {
                expected.push(match k.mac_keys() {
                    Some(keyed) if *on => keyed.mac(*algorithm, &parts),
                    _ => crypto::Tag::EMPTY,
                });
            }
            let hmac = crypto::first_match(&expected, found.as_slice());
            let ed25519 = if found.ed25519().is_empty() {
                None
            } else {
                let message = parts.concat();
                crypto::first_ed25519_match(keys, active, &message, found.ed25519())
            };
            match (hmac, ed25519) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
    }
    .ok_or(VerifyError::Mismatch)?;

    // Twilio's JSON bodies: the signed URL carries the body's SHA-256.
    if spec.content().contains(&Part::FormParams) {
        if let Some(want) = req.query.and_then(body_sha256_param) {
            let got = hex::encode(crypto::sha256(req.body));
            if !got.eq_ignore_ascii_case(&want) {
                return Err(VerifyError::Mismatch);
            }
        }
    }

    // 5. Linear's body timestamp: only meaningful once the body is authentic.
    let mut timestamp = ts.map(|t| t.unix);
    if spec.body_timestamp {
        if let Some(ms) = parse::linear_body_timestamp_ms(req.body) {
            if !within_tolerance_millis(req.now, ms, tolerance) {
                return Err(VerifyError::TimestampOutOfTolerance);
            }
            let secs = ms.div_euclid(1000).clamp(i64::MIN.into(), i64::MAX.into());
            timestamp = i64::try_from(secs).ok();
        }
    }
    Ok(Verified {
        timestamp,
        key_index,
    })
}

/// Steps 1–2 of [`verify`] for a scheme whose signature is in a header: every
/// instance parsed (bounded, see parse.rs), then the timestamp and id.
fn from_headers<'h>(
    spec: &Spec<'_>,
    headers: &'h HeaderMap,
    header: Option<&http::HeaderName>,
    found: &mut Candidates,
) -> Result<(Option<parse::Timestamp<'h>>, Option<&'h str>), VerifyError> {
    let instances = match header {
        Some(name) => headers.get_all(name),
        None => headers.get_all(spec.header),
    };
    let mut instances = instances.iter().peekable();
    if instances.peek().is_none() {
        return Err(VerifyError::Missing);
    }
    let list_ts_key = match spec.timestamp {
        Some(TsSource::InList(key)) => Some(key),
        _ => None,
    };
    let mut list_ts: Option<&str> = None;
    for value in instances {
        let encoding = match (&spec.check, spec.format) {
            (Check::Token, Format::Basic) => {
                match parse::basic_credentials(value.as_bytes()) {
                    Some(credentials) => found.offer_token(&credentials),
                    None => found.reject(),
                }
                continue;
            }
            (Check::Token, _) => {
                found.offer_token(value.as_bytes());
                continue;
            }
            (Check::Hmac { encoding, .. }, _) => *encoding,
        };
        let Ok(text) = value.to_str() else {
            found.reject();
            continue;
        };
        let ts = parse::signature_value(spec.format, list_ts_key, encoding, text, found)?;
        if list_ts_key.is_some() {
            // Every instance must carry the same timestamp: a second instance
            // must not be able to pair a fresh `t=` with a stale signature.
            match (list_ts, ts) {
                (_, None) => return Err(VerifyError::Malformed),
                (None, Some(ts)) => list_ts = Some(ts),
                (Some(seen), Some(ts)) if seen != ts => return Err(VerifyError::Malformed),
                (Some(_), Some(_)) => {}
            }
        }
    }
    found.check_usable()?;

    let ts = match spec.timestamp {
        None => None,
        Some(TsSource::InList(_)) => {
            let raw = list_ts.ok_or(VerifyError::Malformed)?;
            Some(parse::timestamp(raw, TsFormat::UnixSeconds)?)
        }
        Some(TsSource::Header(name, format)) => {
            let raw = parse::single_header(headers, name)?.ok_or(VerifyError::Malformed)?;
            Some(parse::timestamp(raw, format)?)
        }
        // Only [`Format::InBody`] schemes read it, and not through here.
        Some(TsSource::InBody) => return Err(VerifyError::Malformed),
    };
    let id = if spec.needs_id() {
        let name = spec.id_header.ok_or(VerifyError::Malformed)?;
        Some(parse::single_header(headers, name)?.ok_or(VerifyError::Malformed)?)
    } else {
        None
    };
    Ok((ts, id))
}

pub(super) struct SignInput<'a> {
    pub scheme_name: &'static str,
    pub key: &'a Key,
    /// The signed URL, for schemes that sign one (empty otherwise).
    pub url: &'a str,
    pub body: &'a [u8],
    pub id: Option<&'a str>,
    pub timestamp: i64,
}

pub(super) fn sign(spec: &Spec<'_>, input: &SignInput<'_>) -> Result<Signed, SignError> {
    if spec.needs_id() && input.id.is_none() {
        return Err(SignError::IdRequired(input.scheme_name));
    }
    let ts_text = spec.timestamp.map(|source| match source {
        TsSource::Header(_, TsFormat::Rfc3339) => rfc3339(input.timestamp),
        TsSource::Header(_, TsFormat::UnixMillis) => {
            (i128::from(input.timestamp) * 1000).to_string()
        }
        TsSource::Header(_, TsFormat::UnixSeconds) | TsSource::InList(_) | TsSource::InBody => {
            input.timestamp.to_string()
        }
    });

    let cannot_sign = || {
        SignError::Invalid(
            "a whpk_ public key cannot sign (sign with the whsk_ secret key)".to_string(),
        )
    };
    let signature: Cow<'_, [u8]> = match &spec.check {
        Check::Token => {
            let token = input.key.mac_key().ok_or_else(cannot_sign)?;
            match spec.format {
                Format::Basic => {
                    Cow::Owned(format!("Basic {}", parse::BASE64.encode(token)).into_bytes())
                }
                _ => Cow::Borrowed(token),
            }
        }
        Check::Hmac {
            algorithm,
            encoding,
            content,
        } => {
            let form = form_params(content, input.body, input.url);
            let parts = content_parts(
                content,
                input.id,
                ts_text.as_deref(),
                input.body,
                (input.url, input.url),
                &form,
            );
            let (version, encoded) = match (input.key.mac_key(), spec.format) {
                (Some(key), Format::VersionedEd25519 { hmac, .. }) => (
                    hmac,
                    encode(*encoding, &crypto::mac(*algorithm, key, &parts)),
                ),
                (None, Format::VersionedEd25519 { ed25519, .. }) => {
                    let signature =
                        crypto::ed25519_sign(input.key, &parts.concat()).ok_or_else(cannot_sign)?;
                    (ed25519, parse::BASE64.encode(signature))
                }
                (Some(key), _) => ("", encode(*encoding, &crypto::mac(*algorithm, key, &parts))),
                (None, _) => return Err(cannot_sign()),
            };
            let value = match (spec.format, spec.timestamp, &ts_text) {
                (Format::Bare, ..) => encoded,
                (Format::Prefixed(prefix), ..) => format!("{prefix}{encoded}"),
                (Format::Versioned(version), ..) => format!("{version},{encoded}"),
                (Format::VersionedEd25519 { .. }, ..) => format!("{version},{encoded}"),
                (Format::List { sep, sig_key }, Some(TsSource::InList(ts_key)), Some(ts)) => {
                    format!("{ts_key}={ts}{sep}{sig_key}={encoded}")
                }
                (Format::List { sig_key, .. }, ..) => format!("{sig_key}={encoded}"),
                // Basic goes with `Check::Token`, never here.
                (Format::Basic, ..) => encoded,
                (Format::InBody, ..) => {
                    let body = parse::with_body_signature(
                        input.body,
                        ts_text.as_deref().unwrap_or_default(),
                        input.id.unwrap_or_default(),
                        &encoded,
                    )
                    .map_err(|e| SignError::Invalid(format!("{}: {e}", input.scheme_name)))?;
                    return Ok(Signed {
                        headers: Vec::new(),
                        body: Some(body),
                    });
                }
            };
            Cow::Owned(value.into_bytes())
        }
    };

    let mut headers = vec![header(spec.header, &signature)?];
    if let (Some(name), Some(id)) = (spec.id_header, input.id) {
        headers.push(header(name, id.as_bytes())?);
    }
    if let (Some(TsSource::Header(name, _)), Some(ts)) = (spec.timestamp, &ts_text) {
        headers.push(header(name, ts.as_bytes())?);
    }
    Ok(Signed {
        headers,
        body: None,
    })
}

/// The signed content as slices, in order (no concatenation copy).
/// `urls` is the signed URL without and with the request's query string.
#[inline]
fn content_parts<'c>(
    content: &'c [Part<'c>],
    id: Option<&'c str>,
    ts: Option<&'c str>,
    body: &'c [u8],
    urls: (&'c str, &'c str),
    form: &'c [u8],
) -> smallvec::SmallVec<[&'c [u8]; 8]> {
    // Inline: every preset signs at most five parts (no allocation a
    // request); a custom scheme with more than eight spills to the heap.
    let mut parts = smallvec::SmallVec::new();
    for part in content {
        parts.push(match part {
            Part::Lit(bytes) => *bytes,
            Part::Id => id.unwrap_or_default().as_bytes(),
            Part::Timestamp => ts.unwrap_or_default().as_bytes(),
            Part::Body => body,
            Part::Url => urls.0.as_bytes(),
            Part::UrlAndQuery => urls.1.as_bytes(),
            Part::FormParams => form,
        });
    }
    parts
}

/// The `bodySHA256` parameter of a query string (Twilio, JSON bodies).
fn body_sha256_param(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "bodySHA256")
        .map(|(_, v)| v.into_owned())
}

/// [`Part::FormParams`] for `body`, when `content` has it: the decoded
/// `application/x-www-form-urlencoded` pairs sorted by name then value,
/// repeated pairs once (as Twilio's libraries do), concatenated. Empty when
/// the signed URL `url` (query included) carries `bodySHA256`.
pub(super) fn form_params(content: &[Part<'_>], body: &[u8], url: &str) -> Vec<u8> {
    if !content.contains(&Part::FormParams) {
        return Vec::new();
    }
    let query = url.split_once('?').map_or("", |(_, q)| q);
    if body_sha256_param(query).is_some() {
        return Vec::new();
    }
    let mut pairs: Vec<_> = form_urlencoded::parse(body).collect();
    pairs.sort();
    pairs.dedup();
    let mut out = Vec::with_capacity(body.len());
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn encode(encoding: Encoding, mac: &[u8]) -> String {
    match encoding {
        Encoding::Hex => hex::encode(mac),
        Encoding::Base64 => parse::BASE64.encode(mac),
        Encoding::Base64url => parse::BASE64URL.encode(mac),
    }
}

fn header(name: &str, value: &[u8]) -> Result<(HeaderName, HeaderValue), SignError> {
    let header_name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| SignError::Invalid(format!("{name:?} is not a valid header name")))?;
    // The value is not echoed: for GitLab it is the secret.
    let value = HeaderValue::from_bytes(value).map_err(|_| {
        SignError::Invalid(format!("the value for {name} is not a valid header value"))
    })?;
    Ok((header_name, value))
}

/// Largest instant `humantime` formats (9999-12-31T23:59:59Z); its formatter
/// fails beyond that and cannot express instants before 1970.
const MAX_RFC3339_SECS: i64 = 253_402_300_799;

/// RFC 3339 text for a unix timestamp. Out-of-range timestamps are clamped to
/// 1970..=9999 so that signing never panics; the header and the signature then
/// agree on the clamped value.
fn rfc3339(ts: i64) -> String {
    let secs = ts.clamp(0, MAX_RFC3339_SECS).unsigned_abs();
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// `now` as unix milliseconds, negative before the epoch.
fn unix_millis(now: SystemTime) -> i128 {
    let millis = |d: Duration| i128::try_from(d.as_millis()).unwrap_or(i128::MAX);
    match now.duration_since(UNIX_EPOCH) {
        Ok(after) => millis(after),
        Err(before) => -millis(before.duration()),
    }
}

/// `|now − ts| ≤ tolerance` in whole seconds. `i128` holds any `i64`
/// difference and any tolerance, so nothing here can overflow.
pub(super) fn within_tolerance_secs(now: SystemTime, ts: i64, tolerance: Duration) -> bool {
    let now = unix_millis(now).div_euclid(1000);
    (now - i128::from(ts)).abs() <= i128::from(tolerance.as_secs())
}

fn within_tolerance_millis(now: SystemTime, ts_ms: i128, tolerance: Duration) -> bool {
    let tolerance = i128::try_from(tolerance.as_millis()).unwrap_or(i128::MAX);
    unix_millis(now)
        .checked_sub(ts_ms)
        .is_some_and(|diff| diff.checked_abs().is_some_and(|d| d <= tolerance))
}
