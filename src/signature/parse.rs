//! Header parsing (and Mailgun's body fields). Everything here takes
//! attacker-controlled text, so it never panics, never indexes, and never
//! allocates more than its input's own size: the only allocations are decoded
//! candidates (shorter than their encoding), at most [`MAX_CANDIDATES`] of
//! them, and the copied fields of a body signature.

use std::time::UNIX_EPOCH;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use http::HeaderMap;
use serde::Deserialize;
use smallvec::SmallVec;

use super::crypto;
use super::engine::{Format, TsFormat};
use super::{Encoding, VerifyError};

/// How many candidate signatures one request may have checked, across every
/// instance of the signature header. Later ones are ignored: a legitimate
/// sender sends one per active secret (two during a rotation), and the cap
/// bounds both memory and the keys × candidates comparison work.
pub const MAX_CANDIDATES: usize = 16;

/// Standard alphabet; emits padding, accepts it or not (senders differ).
pub(super) const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// URL-safe alphabet; emits no padding (the usual URL-safe form), accepts both.
pub(super) const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The decoded candidate signatures of one request, plus what was seen but not
/// usable (which decides `Malformed` vs `Mismatch`, see [`Self::check_usable`]).
#[derive(Debug, Default)]
pub(super) struct Candidates {
    /// Inline for the usual one or two (no allocation a request).
    decoded: SmallVec<[Sig; 2]>,
    /// Standard Webhooks `v1a` (ed25519) signatures, decoded from base64.
    ed25519: Vec<Vec<u8>>,
    /// Entries of the scheme's own form that could not be decoded.
    unusable: usize,
    /// Well-formed entries of another version or key, deliberately ignored.
    skipped: usize,
}

impl Candidates {
    fn full(&self) -> bool {
        self.decoded.len() + self.ed25519.len() >= MAX_CANDIDATES
    }

    /// A base64 ed25519 signature (`v1a,<sig>`). As for HMACs, one that
    /// decodes but has the wrong length is kept (it simply never verifies).
    pub fn offer_ed25519(&mut self, encoded: &str) {
        if self.full() {
            return;
        }
        match decode(Encoding::Base64, encoded) {
            Some(sig) => self.ed25519.push(sig.into_vec()),
            None => self.unusable += 1,
        }
    }

    /// An encoded signature of the scheme's own version.
    pub fn offer(&mut self, encoded: &str, encoding: Encoding) {
        if self.full() {
            return;
        }
        match decode(encoding, encoded) {
            Some(sig) => self.decoded.push(sig),
            None => self.unusable += 1,
        }
    }

    /// A plain token: kept as its SHA-256 so that comparing it with the secret
    /// is constant time and hides the length (and stays 32 bytes).
    pub fn offer_token(&mut self, token: &[u8]) {
        if self.full() {
            return;
        }
        if token.is_empty() {
            self.unusable += 1;
        } else {
            self.decoded.push(Sig::from_slice(&crypto::sha256(token)));
        }
    }

    /// An entry of the scheme's own form that cannot be used (bad prefix,
    /// non-visible-ASCII header value, `version` without `,`).
    pub fn reject(&mut self) {
        self.unusable += 1;
    }

    fn skip(&mut self) {
        self.skipped += 1;
    }

    /// `Malformed` when nothing usable was found and either something was
    /// unusable or there was no signature-like entry at all. Only skipped
    /// (unknown-version) entries are fine here and end in `Mismatch`.
    pub fn check_usable(&self) -> Result<(), VerifyError> {
        if self.is_empty() && (self.unusable > 0 || self.skipped == 0) {
            Err(VerifyError::Malformed)
        } else {
            Ok(())
        }
    }

    pub fn is_empty(&self) -> bool {
        self.decoded.is_empty() && self.ed25519.is_empty()
    }

    pub fn ed25519(&self) -> &[Vec<u8>] {
        &self.ed25519
    }

    pub fn as_slice(&self) -> &[Sig] {
        &self.decoded
    }
}

/// A decoded signature: up to 64 bytes (SHA-512's MAC, the longest any
/// scheme sends) inline, a longer one (which never verifies, but counts as
/// a candidate) on the heap.
pub(super) type Sig = SmallVec<[u8; 64]>;

/// Decodes one signature; `None` when empty or not valid in `encoding`.
pub(super) fn decode(encoding: Encoding, encoded: &str) -> Option<Sig> {
    if encoded.is_empty() {
        return None;
    }
    match encoding {
        Encoding::Hex => hex_decode(encoded.as_bytes()),
        Encoding::Base64 => BASE64.decode(encoded).ok().map(Sig::from_vec),
        Encoding::Base64url => BASE64URL.decode(encoded).ok().map(Sig::from_vec),
    }
}

/// The value of each hex digit (either case), `0xff` for any other byte.
static HEX_VALUE: [u8; 256] = {
    let mut t = [0xff; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Hex of either case, as `hex::decode` reads it; `None` for an odd length
/// or any other byte. One table lookup a digit: a signature's 64 digits
/// took ~1k instructions through `hex::decode_to_slice`'s per-digit match
/// (bench/micro-results.md).
fn hex_decode(digits: &[u8]) -> Option<Sig> {
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let n = digits.len() / 2;
    if n <= 64 {
        // Into a plain array: no capacity check or branch a byte.
        let mut buf = [0u8; 64];
        return hex_into(digits, &mut buf[..n]).then(|| Sig::from_buf_and_len(buf, n));
    }
    // Longer than any MAC (it will not verify): on the heap.
    let mut out = vec![0u8; n];
    hex_into(digits, &mut out).then(|| Sig::from_vec(out))
}

/// Decodes `digits` (two per byte of `out`) into `out`; whether every digit
/// was one. Each digit's validity is checked once, at the end.
fn hex_into(digits: &[u8], out: &mut [u8]) -> bool {
    let mut bad = 0u8;
    let (pairs, _) = digits.as_chunks::<2>();
    for (out, &[h, l]) in out.iter_mut().zip(pairs) {
        let (hi, lo) = (HEX_VALUE[h as usize], HEX_VALUE[l as usize]);
        bad |= hi | lo;
        *out = hi << 4 | lo;
    }
    bad & 0xf0 == 0
}

/// Parses one instance of a signature header into `found`. Returns the
/// timestamp text under `ts_key` for [`Format::List`] (`Ok(None)` when absent
/// or when `ts_key` is `None`). `Err(Malformed)` for a structurally broken list
/// (an entry without `=`, an empty key, a repeated timestamp key), mirroring
/// Stripe's libraries; an undecodable signature value is only counted.
pub(super) fn signature_value<'h>(
    format: Format<'_>,
    ts_key: Option<&str>,
    encoding: Encoding,
    value: &'h str,
    found: &mut Candidates,
) -> Result<Option<&'h str>, VerifyError> {
    match format {
        Format::Bare => found.offer(value.trim(), encoding),
        Format::Prefixed(prefix) => match value.trim().strip_prefix(prefix) {
            Some(sig) => found.offer(sig, encoding),
            None => found.reject(),
        },
        Format::Versioned(version) => {
            for entry in value.split_ascii_whitespace() {
                match entry.split_once(',') {
                    Some((v, sig)) if v == version => found.offer(sig, encoding),
                    Some(_) => found.skip(),
                    None => found.reject(),
                }
            }
        }
        Format::VersionedEd25519 { hmac, ed25519 } => {
            for entry in value.split_ascii_whitespace() {
                match entry.split_once(',') {
                    Some((v, sig)) if v == hmac => found.offer(sig, encoding),
                    Some((v, sig)) if v == ed25519 => found.offer_ed25519(sig),
                    Some(_) => found.skip(),
                    None => found.reject(),
                }
            }
        }
        Format::List { sep, sig_key } => {
            let mut ts = None;
            for entry in key_values(value, sep) {
                let (key, val) = entry?;
                if Some(key) == ts_key {
                    if ts.replace(val).is_some() {
                        return Err(VerifyError::Malformed);
                    }
                } else if key == sig_key {
                    found.offer(val, encoding);
                } else {
                    found.skip();
                }
            }
            return Ok(ts);
        }
        // Neither is read from an HMAC header value: `Basic` goes with
        // `Check::Token` and `InBody` has no header.
        Format::Basic | Format::InBody => found.reject(),
    }
    Ok(None)
}

/// `key=value` entries separated by `sep`; whitespace around entries, keys and
/// values is trimmed and empty entries are skipped. The value is everything
/// after the first `=` (base64 padding stays in the value). An entry without
/// `=` or with an empty key is `Err(Malformed)`.
pub(super) fn key_values(
    value: &str,
    sep: char,
) -> impl Iterator<Item = Result<(&str, &str), VerifyError>> {
    value
        .split(sep)
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((key, val)) if !key.trim().is_empty() => Ok((key.trim(), val.trim())),
            _ => Err(VerifyError::Malformed),
        })
}

/// The single value of a header that must not be ambiguous (timestamp, id):
/// `Ok(None)` when absent; `Malformed` when not visible ASCII or when repeated
/// with different values (which one would the signature cover?).
pub(super) fn single_header<'h>(
    headers: &'h HeaderMap,
    name: &str,
) -> Result<Option<&'h str>, VerifyError> {
    let mut single: Option<&str> = None;
    for value in headers.get_all(name) {
        let text = value.to_str().map_err(|_| VerifyError::Malformed)?;
        match single {
            None => single = Some(text),
            Some(seen) if seen != text => return Err(VerifyError::Malformed),
            Some(_) => {}
        }
    }
    Ok(single)
}

/// A timestamp as sent (`raw`, what the sender signed) and as unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timestamp<'h> {
    pub raw: &'h str,
    pub unix: i64,
}

pub(super) fn timestamp(raw: &str, format: TsFormat) -> Result<Timestamp<'_>, VerifyError> {
    let unix = match format {
        TsFormat::UnixSeconds => unix_seconds(raw),
        TsFormat::UnixMillis => unix_millis_as_seconds(raw),
        TsFormat::Rfc3339 => rfc3339_seconds(raw),
    };
    unix.map(|unix| Timestamp { raw, unix })
        .ok_or(VerifyError::Malformed)
}

/// RFC 3339 UTC text as unix seconds (fraction dropped). `humantime`'s weak
/// parser accepts some trailing junk after the seconds (`…:20Zjunk`), so the
/// tail is checked first: an optional `.digits`, then `Z`, `+00:00` or nothing.
fn rfc3339_seconds(raw: &str) -> Option<i64> {
    let tail = raw.get(19..)?;
    let tail = match tail.strip_prefix('.') {
        Some(fraction) => fraction.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => tail,
    };
    if !matches!(tail, "" | "Z" | "+00:00") {
        return None;
    }
    let time = humantime::parse_rfc3339_weak(raw).ok()?;
    i64::try_from(time.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()
}

/// Unix seconds: ASCII digits only (no sign, no spaces), within `i64`.
pub(super) fn unix_seconds(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Unix milliseconds (ASCII digits only) as whole unix seconds. Parsed as
/// `i128`, so every `i64` second count times 1000 is representable.
fn unix_millis_as_seconds(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms: i128 = text.parse().ok()?;
    i64::try_from(ms.div_euclid(1000)).ok()
}

/// Linear's `webhookTimestamp` (milliseconds) when the body is a JSON object
/// holding a number there; `None` otherwise (no check is then possible).
pub(super) fn linear_body_timestamp_ms(body: &[u8]) -> Option<i128> {
    #[derive(Deserialize)]
    struct LinearBody {
        #[serde(rename = "webhookTimestamp")]
        webhook_timestamp: Option<serde_json::Number>,
    }
    let n = serde_json::from_slice::<LinearBody>(body)
        .ok()?
        .webhook_timestamp?;
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
        // Saturating float-to-int cast: a float from JSON is always finite.
        .or_else(|| n.as_f64().map(|f| f as i128))
}

/// The credentials of an `Authorization: Basic <base64>` value (RFC 7617):
/// the scheme name in any case, then the base64 of `user:password`. `None`
/// when it is another scheme, not base64, or empty.
pub(super) fn basic_credentials(value: &[u8]) -> Option<Vec<u8>> {
    let value = value.trim_ascii();
    let scheme = value.get(..6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let encoded = value.get(6..)?.trim_ascii_start();
    let credentials = BASE64.decode(encoded).ok()?;
    (!credentials.is_empty()).then_some(credentials)
}

/// Mailgun's signature fields, read from the body.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct BodySignature {
    pub timestamp: String,
    pub token: String,
    pub signature: String,
}

const BODY_FIELDS: [&str; 3] = ["timestamp", "token", "signature"];

/// Mailgun puts `timestamp`, `token` and `signature` in the body: in a JSON
/// object under `signature` (webhooks), or as form parameters (legacy
/// webhooks and forwarded routes, `application/x-www-form-urlencoded`).
///
/// A body that starts with `{` is read as JSON only: `Missing` when it has no
/// `signature` member, `Malformed` when it is not a JSON object or the member
/// is not an object of three strings (the timestamp may be a number). Any
/// other body is read as a form: `Missing` when none of the three is there,
/// `Malformed` when one is absent or repeated (which would the signature
/// cover?). A multipart body is not read (`Missing`).
pub(super) fn body_signature(body: &[u8]) -> Result<BodySignature, VerifyError> {
    if body.trim_ascii_start().starts_with(b"{") {
        #[derive(Deserialize)]
        struct Envelope {
            signature: Option<serde_json::Value>,
        }
        let envelope: Envelope =
            serde_json::from_slice(body).map_err(|_| VerifyError::Malformed)?;
        let fields = envelope.signature.ok_or(VerifyError::Missing)?;
        let field = |name: &str| match fields.get(name) {
            Some(serde_json::Value::String(text)) => Ok(text.clone()),
            Some(serde_json::Value::Number(n)) if name == "timestamp" => Ok(n.to_string()),
            _ => Err(VerifyError::Malformed),
        };
        return Ok(BodySignature {
            timestamp: field("timestamp")?,
            token: field("token")?,
            signature: field("signature")?,
        });
    }
    let mut seen: [Option<String>; 3] = Default::default();
    for (key, value) in form_urlencoded::parse(body) {
        if let Some(i) = BODY_FIELDS.iter().position(|f| *f == key) {
            if seen[i].replace(value.into_owned()).is_some() {
                return Err(VerifyError::Malformed);
            }
        }
    }
    match seen {
        [None, None, None] => Err(VerifyError::Missing),
        [Some(timestamp), Some(token), Some(signature)] => Ok(BodySignature {
            timestamp,
            token,
            signature,
        }),
        _ => Err(VerifyError::Malformed),
    }
}

/// `body` with Mailgun's signature fields set, as [`body_signature`] reads
/// them: a JSON object gets (or has replaced) its `signature` member; any
/// other body is taken as a form, its own `timestamp`, `token` and
/// `signature` parameters dropped and the three appended.
pub(super) fn with_body_signature(
    body: &[u8],
    timestamp: &str,
    token: &str,
    signature: &str,
) -> Result<Vec<u8>, &'static str> {
    if body.trim_ascii_start().starts_with(b"{") {
        let mut value: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| "the body starts with '{' but is not JSON")?;
        let object = value
            .as_object_mut()
            .ok_or("the body starts with '{' but is not a JSON object")?;
        object.insert(
            "signature".to_string(),
            serde_json::json!({
                "timestamp": timestamp,
                "token": token,
                "signature": signature,
            }),
        );
        return serde_json::to_vec(&value).map_err(|_| "the body cannot be re-encoded");
    }
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(body) {
        if !BODY_FIELDS.contains(&key.as_ref()) {
            form.append_pair(&key, &value);
        }
    }
    form.append_pair("timestamp", timestamp);
    form.append_pair("token", token);
    form.append_pair("signature", signature);
    Ok(form.finish().into_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_decode_reads_what_the_hex_crate_reads() {
        // Every pair of bytes: the same answer as `hex::decode`.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let pair = [a, b];
                assert_eq!(
                    super::hex_decode(&pair).map(|s| s.to_vec()),
                    hex::decode(pair).ok(),
                    "{pair:?}"
                );
            }
        }
        let sig = "6fe1dD63CB0b8fC6b1e9e46b3F6c5d2a0a1b2c3d4e5f60718293a4b5c6d7e8f9";
        assert_eq!(
            super::hex_decode(sig.as_bytes()).map(|s| s.to_vec()),
            hex::decode(sig).ok()
        );
        // Longer than any MAC: kept whole (on the heap), not cut to 64 bytes.
        let long = "ab".repeat(100);
        assert_eq!(super::hex_decode(long.as_bytes()).unwrap().len(), 100);
        assert_eq!(
            super::hex_decode(format!("{long}zz").as_bytes()),
            None,
            "a bad digit in a long signature"
        );
        assert_eq!(super::hex_decode(format!("{long}0g").as_bytes()), None);
        assert_eq!(super::hex_decode(b"abc"), None);
        assert_eq!(super::hex_decode(b"ab c"), None);
        assert_eq!(super::hex_decode(b""), Some(super::Sig::new()));
    }
}
