//! Mapping a received request onto its upstream: URL, headers, body.
//!
//! Invariants: the body is forwarded byte-identical; hop-by-hop headers
//! (RFC 9110 §7.6.1, plus any named in `Connection`) and `Host` are dropped;
//! any `X-Hookgate-*` header the sender supplied is dropped before ours are
//! added, so a sender can never forge `X-Hookgate-Verified`.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
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

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
    // One pass over the (few) names present beats ten hashed removals.
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|k| HOP_BY_HOP.contains(k))
        .cloned()
        .collect();
    for h in present {
        headers.remove(h);
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
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let rest = match &self.strip {
            Some(prefix) => path.strip_prefix(prefix.as_str()).unwrap_or(path),
            None => path,
        };
        let base_path = self.base.path().trim_end_matches('/');
        let mut p = String::with_capacity(base_path.len() + rest.len() + 1);
        p.push_str(base_path);
        if !rest.is_empty() && !rest.starts_with('/') {
            p.push('/');
        }
        p.push_str(rest);
        if p.is_empty() {
            p.push('/');
        }
        let mut pq = p;
        // The upstream URL's own query comes first, then the request's.
        let base_query = self.base.query();
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
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(pq.parse()?);
        Ok(Uri::from_parts(parts)?)
    }
}

/// Builds the request sent upstream. `extra` headers (ours) are added last.
pub fn upstream_request(
    method: Method,
    uri: Uri,
    mut headers: HeaderMap,
    body: Bytes,
    extra: &[(HeaderName, HeaderValue)],
) -> Result<Request<Full<Bytes>>, http::Error> {
    strip_hop_by_hop(&mut headers);
    // The upstream's own authority (the client would format it otherwise,
    // per request); with userinfo in the URL the client derives it.
    match uri.authority().map(|a| a.as_str()) {
        Some(authority) if !authority.contains('@') => {
            match HeaderValue::from_str(authority) {
                Ok(host) => headers.insert(header::HOST, host),
                Err(_) => headers.remove(header::HOST),
            };
        }
        _ => {
            headers.remove(header::HOST);
        }
    }
    // The body is re-framed by our client with its exact length.
    headers.remove(header::CONTENT_LENGTH);
    let ours: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-hookgate-"))
        .cloned()
        .collect();
    for k in ours {
        headers.remove(k);
    }
    for (k, v) in extra {
        headers.append(k.clone(), v.clone());
    }
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(body))?;
    *req.headers_mut() = headers;
    Ok(req)
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
            &[(
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
