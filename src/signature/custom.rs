//! The custom scheme: validation of its config and its translation to a `Spec`.

use std::borrow::Cow;

use http::{HeaderName, HeaderValue};

use super::engine::{Check, Format, Part, Spec, TsFormat, TsSource};
use super::Custom;

impl Custom {
    /// Validates the config and builds the scheme's `Spec`. Errors name the
    /// offending field first (`"field: reason"`).
    pub(super) fn spec(&self) -> Result<Spec<'_>, String> {
        header_name("header", &self.header)?;
        if let Some(name) = &self.id_header {
            header_name("id_header", name)?;
        }
        if let Some(name) = &self.timestamp_header {
            header_name("timestamp_header", name)?;
        }
        // One header cannot carry two of these: `verify` would read the
        // other's value (a repeated id or timestamp header is malformed).
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        if let Some(id) = &self.id_header {
            if same(id, &self.header) {
                return Err(format!("id_header: {id:?} is also the signature header"));
            }
        }
        if let Some(ts) = &self.timestamp_header {
            if same(ts, &self.header) {
                return Err(format!(
                    "timestamp_header: {ts:?} is also the signature header"
                ));
            }
            if self.id_header.as_deref().is_some_and(|id| same(id, ts)) {
                return Err(format!("timestamp_header: {ts:?} is also the id_header"));
            }
        }
        let prefix = self.prefix.as_deref().filter(|p| !p.is_empty());
        if let Some(prefix) = prefix {
            // It is sent verbatim before the signature, and `verify` reads
            // the header as text: obs-text (non-ASCII) would never verify.
            let text = HeaderValue::from_str(prefix).is_ok_and(|v| v.to_str().is_ok());
            if !text || prefix.trim() != prefix {
                return Err(format!(
                    "prefix: {prefix:?} must be visible ASCII without surrounding spaces"
                ));
            }
        }

        let content = template(&self.signed_content)?;
        if !content.contains(&Part::Body) {
            return Err("signed_content: must contain {body}".to_string());
        }
        if content.contains(&Part::Timestamp) && self.timestamp_header.is_none() {
            return Err("signed_content: {timestamp} needs timestamp_header to be set".to_string());
        }
        if content.contains(&Part::Id) && self.id_header.is_none() {
            return Err("signed_content: {id} needs id_header to be set".to_string());
        }

        Ok(Spec {
            header: &self.header,
            format: prefix.map_or(Format::Bare, Format::Prefixed),
            check: Check::Hmac {
                algorithm: self.algorithm,
                encoding: self.encoding,
                content: Cow::Owned(content),
            },
            // Checked against the tolerance whenever configured, even when the
            // template does not sign it.
            timestamp: self
                .timestamp_header
                .as_deref()
                .map(|name| TsSource::Header(name, TsFormat::UnixSeconds)),
            id_header: self.id_header.as_deref(),
            body_timestamp: false,
        })
    }
}

fn header_name(field: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{field}: must not be empty"));
    }
    HeaderName::from_bytes(name.as_bytes())
        .map(drop)
        .map_err(|_| format!("{field}: {name:?} is not a valid HTTP header name"))
}

/// Splits a `signed_content` template into parts. `{` always opens a
/// placeholder (`{id}`, `{timestamp}` or `{body}`); any other text, a lone `}`
/// included, is literal.
fn template(text: &str) -> Result<Vec<Part<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let (literal, after) = (&rest[..open], &rest[open + 1..]);
        if !literal.is_empty() {
            parts.push(Part::Lit(literal.as_bytes()));
        }
        let close = after
            .find('}')
            .ok_or_else(|| format!("signed_content: unclosed {{ in {text:?}"))?;
        parts.push(match &after[..close] {
            "id" => Part::Id,
            "timestamp" => Part::Timestamp,
            "body" => Part::Body,
            other => return Err(format!("signed_content: unknown placeholder {{{other}}}")),
        });
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Lit(rest.as_bytes()));
    }
    Ok(parts)
}
