//! The forwarded headers an upstream can trust.
//!
//! An app behind hookgate reads the client's address and scheme from
//! `X-Forwarded-For` / `X-Forwarded-Proto`. A sender can put anything in
//! them, so they are kept only when the peer that connected to hookgate is
//! a trusted proxy (`server.trusted_proxies`, CIDRs); otherwise every
//! sender-supplied `Forwarded`, `X-Forwarded-*` and `X-Real-IP` is dropped.
//! Then exactly one value of each is set: `X-Forwarded-For` is the trusted
//! chain (if any) followed by the peer's address, `X-Forwarded-Proto` the
//! trusted proxy's scheme or hookgate's own. The same headers are forwarded
//! in passthrough and in queue mode (they are stored with the request).
//!
//! The sender's path below a route's prefix is signed by no scheme, so a
//! route that forwards it (`forward_path = "append"`) refuses paths that
//! could aim a captured request elsewhere on the upstream: see
//! [`check_path`].

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The sender's address: the peer, or when the peer is a trusted proxy, the
/// rightmost address of `X-Forwarded-For` that is not itself a trusted
/// proxy (what each proxy appended; a sender cannot forge the part its
/// trusted proxies add). A malformed entry on the way stops the walk at the
/// proxy that passed it on.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &[crate::config::Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        match entry.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// Rewrites the forwarded headers of a request from `peer` (see the module
/// docs). `proto` is hookgate's own scheme (`http` or `https`).
pub fn rewrite(headers: &mut HeaderMap, peer: IpAddr, trusted: bool, proto: &HeaderValue) {
    let chain: Vec<String> = if trusted {
        headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    } else {
        Vec::new()
    };
    let proxy_proto = trusted
        .then(|| headers.get(&X_FORWARDED_PROTO).cloned())
        .flatten();
    if !trusted {
        let forged: Vec<HeaderName> = headers
            .keys()
            .filter(|k| {
                let k = k.as_str();
                k == "forwarded" || k == "x-real-ip" || k.starts_with("x-forwarded-")
            })
            .cloned()
            .collect();
        for k in forged {
            headers.remove(k);
        }
    }
    let xff = match (chain.is_empty(), peer) {
        // The usual request: the peer's IPv4 address alone, written on the
        // stack and copied once into the value.
        (true, IpAddr::V4(v4)) => {
            let mut buf = [0u8; 16];
            let len = write_ipv4(&mut buf, v4);
            HeaderValue::from_bytes(&buf[..len])
        }
        _ => {
            // Room for the chain, its separators and the peer's address (an
            // IPv6 one is at most 39 bytes): one allocation, no growth.
            let mut xff =
                String::with_capacity(chain.iter().map(|s| s.len() + 2).sum::<usize>() + 40);
            for hop in &chain {
                xff.push_str(hop);
                xff.push_str(", ");
            }
            push_ip(&mut xff, peer);
            HeaderValue::from_str(&xff)
        }
    };
    // Every part came from a header value or an IP: always a valid value.
    if let Ok(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        proxy_proto.unwrap_or_else(|| proto.clone()),
    );
}

/// Appends `ip` as text.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut buf = [0u8; 16];
            let len = write_ipv4(&mut buf, v4);
            // ASCII digits and dots.
            out.extend(buf[..len].iter().map(|b| char::from(*b)));
        }
        IpAddr::V6(v6) => out.push_str(&v6.to_string()),
    }
}

/// Writes `ip` as dotted decimal text at the start of `out` (with a dot
/// after it, past the length answered), and answers its length. Digit by
/// digit: `Ipv4Addr`'s `Display` goes through the formatter's padding
/// machinery and cost more than the rest of this module per request.
#[inline]
fn write_ipv4(out: &mut [u8; 16], ip: std::net::Ipv4Addr) -> usize {
    let mut len = 0;
    for octet in ip.octets() {
        // At most four bytes an octet with its dot, so `len` stays below
        // 16 (the mask only spares the bounds checks).
        let (hundreds, tens, ones) = (octet / 100, octet / 10 % 10, octet % 10);
        out[len & 15] = b'0' + hundreds;
        len += usize::from(octet >= 100);
        out[len & 15] = b'0' + tens;
        len += usize::from(octet >= 10);
        out[len & 15] = b'0' + ones;
        len += 1;
        out[len & 15] = b'.';
        len += 1;
    }
    // Without the last dot.
    len - 1
}

/// Whether `path` may be forwarded: no segment decodes to `.` or `..`, or
/// contains an encoded `/` or `\\`, a NUL, or bytes that are not UTF-8; no
/// malformed `%` escape.
pub fn check_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    // The usual path: no escape, backslash or NUL, so only a dot segment
    // can make it unsafe (one pass over the bytes, no decoding).
    if !bytes.iter().any(|b| matches!(b, b'%' | b'\\' | 0)) {
        return !bytes
            .split(|b| *b == b'/')
            .any(|segment| segment == b"." || segment == b"..");
    }
    path.split('/').all(|segment| {
        // Without an escape the segment is its own decoding (and UTF-8).
        if !segment.contains('%') {
            return segment != "." && segment != ".." && !segment.contains(['\\', '\0']);
        }
        let Some(d) = percent_decode(segment) else {
            return false;
        };
        d != b"."
            && d != b".."
            && !d.iter().any(|b| matches!(b, b'/' | b'\\' | 0))
            && std::str::from_utf8(&d).is_ok()
    })
}

/// `%XX`-decodes `s`; `None` on a malformed escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn forged() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "6.6.6.6".parse().unwrap());
        h.append("x-forwarded-for", "7.7.7.7, 8.8.8.8".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("x-forwarded-host", "evil.example".parse().unwrap());
        h.insert("forwarded", "for=6.6.6.6".parse().unwrap());
        h.insert("x-real-ip", "6.6.6.6".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        h
    }

    #[test]
    fn ip_text_is_what_display_writes() {
        for text in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "192.168.9.10",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let mut out = String::from("x, ");
            push_ip(&mut out, ip(text));
            assert_eq!(out, format!("x, {}", ip(text)));
        }
    }

    proptest::proptest! {
        #[test]
        fn ipv4_text_matches_display(octets in proptest::prelude::any::<[u8; 4]>()) {
            let addr = IpAddr::from(octets);
            let mut out = String::new();
            push_ip(&mut out, addr);
            proptest::prop_assert_eq!(out, addr.to_string());
        }

        /// The no-escape fast path answers what decoding every segment does.
        #[test]
        fn check_path_fast_path_agrees(path in "[a-z./\\\\%0-9A-F\\x00]{0,24}") {
            let slow = path.split('/').all(|segment| {
                percent_decode(segment).is_some_and(|d| {
                    d != b"." && d != b".." && !d.iter().any(|b| matches!(b, b'/' | b'\\' | 0))
                        && std::str::from_utf8(&d).is_ok()
                })
            });
            proptest::prop_assert_eq!(check_path(&path), slow);
        }
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_forwarded_address() {
        let trusted: Vec<crate::config::Cidr> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.168.1.1".parse().unwrap(),
        ];
        // An untrusted peer: its own headers count for nothing.
        assert_eq!(client_ip(&forged(), ip("1.2.3.4"), &trusted), ip("1.2.3.4"));
        // A trusted peer: the last address it was handed is the client; what
        // the client put in front of it does not matter.
        assert_eq!(
            client_ip(&forged(), ip("10.1.1.1"), &trusted),
            ip("8.8.8.8")
        );
        // A chain of trusted proxies is walked back to the first untrusted.
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, 9.9.9.9, 192.168.1.1, 10.2.2.2".parse().unwrap(),
        );
        assert_eq!(client_ip(&h, ip("10.1.1.1"), &trusted), ip("9.9.9.9"));
        // A malformed entry stops the walk at the proxy that passed it on.
        h.insert(
            "x-forwarded-for",
            "9.9.9.9, junk, 10.2.2.2".parse().unwrap(),
        );
        assert_eq!(client_ip(&h, ip("10.1.1.1"), &trusted), ip("10.2.2.2"));
        // No header: the trusted peer itself.
        assert_eq!(
            client_ip(&HeaderMap::new(), ip("10.1.1.1"), &trusted),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn traversal_forms_are_refused_and_plain_paths_pass() {
        for ok in [
            "/hooks/x",
            "/hooks/x/a/b",
            "/hooks/x/a%20b",
            "/hooks/x/.well-known",
            "/hooks/x/%C3%A9",
            "/",
        ] {
            assert!(check_path(ok), "{ok}");
        }
        for bad in [
            "/hooks/x/..",
            "/hooks/x/../admin",
            "/hooks/x/./a",
            "/hooks/x/%2e%2e/admin",
            "/hooks/x/%2E%2e",
            "/hooks/x/.%2e/a",
            "/hooks/x/a%2Fb",
            "/hooks/x/a%2fb",
            "/hooks/x/a%5Cb",
            "/hooks/x/a%00",
            "/hooks/x/%ff",
            "/hooks/x/%zz",
            "/hooks/x/%2",
        ] {
            assert!(!check_path(bad), "{bad}");
        }
    }

    #[test]
    fn an_untrusted_peers_forwarded_headers_are_replaced() {
        let mut h = forged();
        rewrite(
            &mut h,
            ip("192.0.2.1"),
            false,
            &HeaderValue::from_static("http"),
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "192.0.2.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        for gone in ["x-forwarded-host", "forwarded", "x-real-ip"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(h["content-type"], "application/json");
    }

    #[test]
    fn a_peer_alone_is_written_as_display_writes_it() {
        for text in [
            "255.255.255.255",
            "10.0.99.100",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            for trusted in [false, true] {
                let mut h = HeaderMap::new();
                rewrite(&mut h, ip(text), trusted, &HeaderValue::from_static("http"));
                assert_eq!(h["x-forwarded-for"], ip(text).to_string());
            }
        }
    }

    #[test]
    fn a_trusted_proxys_chain_is_kept_and_extended_in_one_value() {
        let mut h = forged();
        rewrite(
            &mut h,
            ip("10.0.0.2"),
            true,
            &HeaderValue::from_static("http"),
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 7.7.7.7, 8.8.8.8, 10.0.0.2");
        assert_eq!(
            h["x-forwarded-proto"], "https",
            "the proxy knows the scheme"
        );
        assert_eq!(h["x-forwarded-host"], "evil.example");
    }
}
