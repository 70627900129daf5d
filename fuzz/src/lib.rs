//! Helpers shared by the fuzz targets: the plain-text input format the seed
//! corpora are written in, and the oracles several targets share.
//!
//! Most targets read their input as lines, then a blank line, then a body:
//!
//! ```text
//! <target-specific lines, one per parameter; `-` for "not set">
//! header-name: value
//! header-name: value
//!
//! <body bytes, verbatim>
//! ```
//!
//! Any byte string is a valid input (missing lines take defaults, malformed
//! headers are skipped), so libFuzzer's mutations never fall outside the
//! format; the format only makes the seeds readable and lets a seed taken from
//! a real request keep its meaning.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

/// `data` split at its first blank line (`\n\n` or `\r\n\r\n`): the head and
/// the body. Without a blank line the whole input is the head.
pub fn split_head(data: &[u8]) -> (&[u8], &[u8]) {
    let lf = find(data, b"\n\n").map(|i| (i, 2));
    let crlf = find(data, b"\r\n\r\n").map(|i| (i, 4));
    let first = match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    };
    match first {
        Some((i, n)) => (&data[..i], &data[i + n..]),
        None => (data, &[]),
    }
}

/// Position of the first `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The lines of a head, without their `\n` / `\r\n`.
pub fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// `name: value` lines as a header map, in order, repeated names appended.
/// Lines that are not a valid name and value are skipped. The value keeps
/// every byte after the colon except leading spaces and tabs, so obs-text,
/// control bytes and trailing whitespace reach the parsers under test.
pub fn header_map<'a>(lines: impl Iterator<Item = &'a [u8]>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let start = value
            .iter()
            .position(|b| *b != b' ' && *b != b'\t')
            .unwrap_or(value.len());
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_bytes(&value[start..]),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// An optional parameter line: `-` (or an absent line) means "not set". An
/// empty line cannot be used for that: it would end the head.
pub fn optional(line: Option<&[u8]>) -> Option<String> {
    Some(text(line)).filter(|t| !t.is_empty() && t != "-")
}

/// A line as text, `""` when absent, lossy when not UTF-8.
pub fn text(line: Option<&[u8]>) -> String {
    String::from_utf8_lossy(line.unwrap_or_default()).into_owned()
}

/// The clock line: `<now unix seconds> <tolerance seconds>`. Absent or
/// unparseable parts default to 1_700_000_000 and 300. `now` may be negative
/// (before the epoch) or huge: verification must cope with any clock.
pub fn clock_line(line: Option<&[u8]>) -> (i64, SystemTime, Duration) {
    let text = text(line);
    let mut words = text.split_ascii_whitespace();
    let now: i64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1_700_000_000);
    let tolerance: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(300);
    (now, system_time(now), Duration::from_secs(tolerance))
}

/// Unix seconds as a `SystemTime`, either side of the epoch.
pub fn system_time(secs: i64) -> SystemTime {
    let d = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH.checked_add(d).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(d).unwrap_or(UNIX_EPOCH)
    }
}

/// Largest timestamp `signature::sign` writes as RFC 3339 without clamping
/// (9999-12-31T23:59:59Z).
pub const MAX_RFC3339_SECS: i64 = 253_402_300_799;

/// Whether `id` can travel in a header that `verify` reads back as text
/// (visible ASCII, spaces and tabs). `sign` is only expected to round-trip
/// such ids.
pub fn is_header_text(id: &str) -> bool {
    id.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// The headers `sign` produced, as a map.
pub fn signed_map(pairs: Vec<(HeaderName, HeaderValue)>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(name, value);
    }
    map
}
