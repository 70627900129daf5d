//! Mapping a received request onto its upstream: URL, headers, body.
//!
//! Invariants: the body is forwarded byte-identical; hop-by-hop headers
//! (RFC 9110 §7.6.1, plus any named in `Connection`) and `Host` are dropped;
//! any `X-Hookgate-*` header the sender supplied is dropped before ours are
//! added, so a sender can never forge `X-Hookgate-Verified`.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Uri};
use http_body_util::Full;

/// Our delivery id (the job id) on every forwarded request.
pub static X_HOOKGATE_DELIVERY_ID: HeaderName = HeaderName::from_static("x-hookgate-delivery-id");
/// The attempt number (1-based) of a queued forward.
pub static X_HOOKGATE_ATTEMPT: HeaderName = HeaderName::from_static("x-hookgate-attempt");
/// The scheme that verified the request.
pub static X_HOOKGATE_VERIFIED: HeaderName = HeaderName::from_static("x-hookgate-verified");

/// Where a route forwards to.
#[derive(Debug, Clone)]
pub struct Target {
    pub base: Uri,
    /// The route prefix removed from the request path (when stripping).
    pub strip: Option<String>,
    /// Forward to the base URL's own path and query only (the sender's
    /// path and query are dropped).
    pub fixed: bool,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy `keep-alive`,
/// `proxy-connection` and `trailers`), as names: removing by `&str` would
/// parse each name again on every request.
static HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    HeaderName::from_static("trailers"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `name` is one of [`HOP_BY_HOP`] (compared as text, by length
/// first: one pass over a request's names costs less than comparing each
/// with ten `HeaderName`s).
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "trailers"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // The usual message has none: one pass over the names, no allocation.
    if !headers.keys().any(|k| is_hop_by_hop(k.as_str())) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|k| HOP_BY_HOP.contains(k))
        .cloned()
        .collect();
    for h in present {
        headers.remove(h);
    }
}

/// A `Content-Length` value: a non-empty run of ASCII digits that fits in
/// a `u64` (no sign, no spaces: trim the value first where they are allowed).
pub fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        let d = d.wrapping_sub(b'0');
        (d <= 9).then_some(())?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Whether `value` is `len` written as `Content-Length` canonically: ASCII
/// digits, no leading zero (but for `0` itself), nothing else.
fn is_length_of(value: &[u8], len: usize) -> bool {
    let canonical = value == b"0" || value.first().is_some_and(|d| *d != b'0');
    canonical && parse_length(value).is_some_and(|n| u64::try_from(len) == Ok(n))
}

/// `Host` for a request to `uri`: its authority as written, or `None` when
/// that carries user information (or is no valid header value) and the
/// client must derive it.
pub fn host_as_written(uri: &Uri) -> Option<HeaderValue> {
    match uri.authority().map(|a| a.as_str()) {
        Some(authority) if !authority.contains('@') => HeaderValue::from_str(authority).ok(),
        _ => None,
    }
}

impl Target {
    /// The upstream URI for a request path and query: the route prefix is
    /// replaced by the upstream URL's path (or appended to it when not
    /// stripping), and the query is kept.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        if self.fixed {
            return Ok(self.base.clone());
        }
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(self.path_for(path_and_query)?);
        Ok(Uri::from_parts(parts)?)
    }

    /// The path and query of [`Target::uri_for`] alone: what a request to
    /// the upstream's authority carries (origin form).
    pub fn path_for(&self, path_and_query: &str) -> Result<PathAndQuery, http::Error> {
        if self.fixed {
            return Ok(self
                .base
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")));
        }
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let rest = match &self.strip {
            Some(prefix) => path.strip_prefix(prefix.as_str()).unwrap_or(path),
            None => path,
        };
        let base_path = self.base.path().trim_end_matches('/');
        let base_query = self.base.query();
        let slash = !rest.is_empty() && !rest.starts_with('/');
        let query_len = match (base_query, query) {
            (Some(b), Some(q)) => b.len() + q.len() + 2,
            (Some(x), None) | (None, Some(x)) => x.len() + 1,
            (None, None) => 0,
        };
        // Exactly the length: a `String` without spare capacity becomes the
        // `PathAndQuery`'s bytes without another allocation.
        let len = (base_path.len() + usize::from(slash) + rest.len()).max(1) + query_len;
        let mut pq = String::with_capacity(len);
        pq.push_str(base_path);
        if slash {
            pq.push('/');
        }
        pq.push_str(rest);
        if pq.is_empty() {
            pq.push('/');
        }
        // The upstream URL's own query comes first, then the request's.
        match (base_query, query) {
            (Some(b), Some(q)) => {
                pq.push('?');
                pq.push_str(b);
                pq.push('&');
                pq.push_str(q);
            }
            (Some(x), None) | (None, Some(x)) => {
                pq.push('?');
                pq.push_str(x);
            }
            (None, None) => {}
        }
        Ok(PathAndQuery::try_from(pq)?)
    }
}

/// Builds the request sent upstream. `extra` headers (ours) are added last.
pub fn upstream_request(
    method: Method,
    uri: Uri,
    mut headers: HeaderMap,
    body: Bytes,
    extra: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
) -> Result<Request<Full<Bytes>>, http::Error> {
    // The upstream's own authority (the client would format it otherwise,
    // per request); with userinfo in the URL the client derives it.
    forward_headers(&mut headers, host_as_written(&uri), body.len(), extra);
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(body))?;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Turns a received request's headers into those sent upstream: hop-by-hop
/// headers and any `X-Hookgate-*` the sender supplied are removed, `Host`
/// becomes `host` (or is removed, for the client to derive), and `extra`
/// (ours) is appended. `Content-Length` stays only when it is the single,
/// canonical length of the `body_len` bytes forwarded (as it is for any
/// request hyper read by it); otherwise it is removed and our client frames
/// the body with its exact length.
pub fn forward_headers(
    headers: &mut HeaderMap,
    host: Option<HeaderValue>,
    body_len: usize,
    extra: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
) {
    strip_hop_by_hop(headers);
    match host {
        Some(host) => {
            headers.insert(header::HOST, host);
        }
        None => {
            headers.remove(header::HOST);
        }
    }
    let keep_length = {
        let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
        matches!((values.next(), values.next()),
            (Some(v), None) if is_length_of(v.as_bytes(), body_len))
    };
    if !keep_length {
        headers.remove(header::CONTENT_LENGTH);
    }
    // Usually none: collected (and allocated) only when there is one.
    let ours = |k: &HeaderName| k.as_str().starts_with("x-hookgate-");
    if headers.keys().any(ours) {
        let forged: Vec<HeaderName> = headers.keys().filter(|k| ours(k)).cloned().collect();
        for k in forged {
            headers.remove(k);
        }
    }
    for (k, v) in extra {
        headers.append(k, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_target_ignores_the_senders_path_and_query() {
        let mut target = t("http://up:3000/app/hook?k=1", Some("/hooks/x"));
        target.fixed = true;
        let u = target.uri_for("/hooks/x/../../admin?delete=all").unwrap();
        assert_eq!(u, "http://up:3000/app/hook?k=1");
    }

    fn t(base: &str, strip: Option<&str>) -> Target {
        Target {
            base: base.parse().unwrap(),
            strip: strip.map(str::to_string),
            fixed: false,
        }
    }

    #[test]
    fn uri_mapping() {
        let a = t("http://up:3000/webhooks/sig", Some("/hooks/sig"));
        assert_eq!(
            a.uri_for("/hooks/sig").unwrap(),
            "http://up:3000/webhooks/sig"
        );
        assert_eq!(
            a.uri_for("/hooks/sig/x?y=1").unwrap(),
            "http://up:3000/webhooks/sig/x?y=1"
        );
        let b = t("http://up:3000", None);
        assert_eq!(
            b.uri_for("/hooks/sig?a").unwrap(),
            "http://up:3000/hooks/sig?a"
        );
        let c = t("http://up:3000/", Some("/hooks"));
        assert_eq!(c.uri_for("/hooks").unwrap(), "http://up:3000/");
        let d = t("http://up/base?k=v", Some("/h"));
        assert_eq!(d.uri_for("/h/z?q=2").unwrap(), "http://up/base/z?k=v&q=2");
    }

    #[test]
    fn the_textual_hop_by_hop_check_names_the_same_headers() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name.as_str()), "{name}");
        }
        for name in ["host", "content-length", "te2", "connections", "x-te", ""] {
            assert!(!is_hop_by_hop(name), "{name}");
        }
        let mut h = HeaderMap::new();
        h.insert("content-type", "text/plain".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.get("te").is_none());
    }

    #[test]
    fn path_for_is_uri_for_without_the_authority() {
        for (base, strip, fixed, pq) in [
            (
                "http://up:3000/webhooks/sig",
                Some("/hooks/sig"),
                false,
                "/hooks/sig/x?y=1",
            ),
            ("http://up:3000", None, false, "/hooks/sig?a"),
            ("http://up:3000/", Some("/hooks"), false, "/hooks"),
            ("http://up/base?k=v", Some("/h"), false, "/h/z?q=2"),
            ("http://up/base?k=v", None, false, "/h"),
            ("http://up/app/hook?k=1", None, true, "/other?x"),
            ("http://up", None, true, "/other?x"),
        ] {
            let mut target = t(base, strip);
            target.fixed = fixed;
            let uri = target.uri_for(pq).unwrap();
            let path = target.path_for(pq).unwrap();
            assert_eq!(uri.path_and_query().unwrap(), &path, "{base} {pq}");
        }
    }

    #[test]
    fn forward_headers_sets_host_and_appends_ours_after_dropping_forgeries() {
        let mut h = HeaderMap::new();
        h.insert("host", "public.example".parse().unwrap());
        h.insert("content-length", "2".parse().unwrap());
        h.insert("x-hookgate-delivery-id", "forged".parse().unwrap());
        h.insert("x-custom", "kept".parse().unwrap());
        forward_headers(
            &mut h,
            Some(HeaderValue::from_static("up:3000")),
            5,
            [(
                X_HOOKGATE_DELIVERY_ID.clone(),
                HeaderValue::from_static("ours"),
            )],
        );
        assert_eq!(h["host"], "up:3000");
        // Not the body's length: left to the client to write.
        assert!(h.get("content-length").is_none());
        assert_eq!(
            h.get_all(&X_HOOKGATE_DELIVERY_ID)
                .iter()
                .collect::<Vec<_>>(),
            ["ours"]
        );
        assert_eq!(h["x-custom"], "kept");
        let mut h = HeaderMap::new();
        h.insert("host", "public.example".parse().unwrap());
        forward_headers(&mut h, None, 0, []);
        assert!(h.get("host").is_none());
        // The body's own length, written canonically once, is kept as is.
        for (values, len, kept) in [
            (&["1024"][..], 1024, true),
            (&["0"][..], 0, true),
            (&["01024"][..], 1024, false),
            (&["1024", "1024"][..], 1024, false),
            (&["1023"][..], 1024, false),
            (&["+1024"][..], 1024, false),
            (&["99999999999999999999999"][..], 1024, false),
        ] {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("content-length", v.parse().unwrap());
            }
            forward_headers(&mut h, None, len, []);
            let left: Vec<_> = h.get_all("content-length").iter().collect();
            if kept {
                assert_eq!(left, [values[0]], "{values:?}");
            } else {
                assert!(left.is_empty(), "{values:?}");
            }
        }
    }

    #[test]
    fn hop_by_hop_and_spoofed_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret-hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("host", "public.example".parse().unwrap());
        h.insert("x-hookgate-verified", "forged".parse().unwrap());
        h.insert("x-sigsentry-signature", "sha256=ab".parse().unwrap());
        let req = upstream_request(
            Method::POST,
            "http://up/".parse().unwrap(),
            h,
            Bytes::from_static(b"{}"),
            [(
                HeaderName::from_static("x-hookgate-verified"),
                HeaderValue::from_static("sigsentry"),
            )],
        )
        .unwrap();
        let h = req.headers();
        assert!(h.get("connection").is_none());
        assert!(h.get("x-secret-hop").is_none());
        assert!(h.get("transfer-encoding").is_none());
        assert_eq!(
            h["host"], "up",
            "the upstream's authority, not the sender's"
        );
        assert_eq!(h.get_all("x-hookgate-verified").iter().count(), 1);
        assert_eq!(h["x-hookgate-verified"], "sigsentry");
        assert_eq!(h["x-sigsentry-signature"], "sha256=ab");
    }
}
