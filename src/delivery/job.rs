//! The payload of an inbound forwarding job: the received request as it
//! must be replayed upstream (method, path and query, headers, exact body).
//!
//! Encoding: a version byte, then length-prefixed fields (u32 big-endian
//! lengths). It is compact, copies the body once, and decoding a damaged or
//! foreign payload returns an error instead of panicking or allocating more
//! than the payload's own size.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// `kind` of a job enqueued by the receiver (queue mode): its payload is a
/// [`StoredRequest`] to forward to the route's upstream.
pub const KIND_FORWARD: &str = "forward";

const VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRequest {
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("stored request is damaged: {0}")]
pub struct DecodeError(&'static str);

impl StoredRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            Self::head_len(&self.method, &self.path_and_query, &self.headers) + self.body.len(),
        );
        Self::encode_head_into(
            &mut out,
            &self.method,
            &self.path_and_query,
            &self.headers,
            self.body.len(),
        );
        out.extend_from_slice(&self.body);
        out
    }

    /// The length of what [`StoredRequest::encode_head`] writes.
    pub fn head_len(method: &Method, path_and_query: &str, headers: &HeaderMap) -> usize {
        let hdr_len: usize = headers
            .iter()
            .map(|(k, v)| 8 + k.as_str().len() + v.len())
            .sum();
        1 + 4 + method.as_str().len() + 4 + path_and_query.len() + 4 + hdr_len + 4
    }

    /// Everything the encoding puts before the body's bytes: the encoding of
    /// a request is this followed by the body, so a caller holding the body
    /// in a buffer with room in front can encode without copying the body.
    pub fn encode_head(
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body_len: usize,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::head_len(method, path_and_query, headers));
        Self::encode_head_into(&mut out, method, path_and_query, headers, body_len);
        out
    }

    fn encode_head_into(
        out: &mut Vec<u8>,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body_len: usize,
    ) {
        out.push(VERSION);
        put(out, method.as_str().as_bytes());
        put(out, path_and_query.as_bytes());
        out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            put(out, k.as_str().as_bytes());
            put(out, v.as_bytes());
        }
        out.extend_from_slice(&(body_len as u32).to_be_bytes());
    }

    pub fn decode(buf: &[u8]) -> Result<StoredRequest, DecodeError> {
        let mut r = Reader { buf, pos: 0 };
        if r.take(1)? != [VERSION] {
            return Err(DecodeError("unknown version"));
        }
        let method = Method::from_bytes(r.field()?).map_err(|_| DecodeError("method"))?;
        let path_and_query = std::str::from_utf8(r.field()?)
            .map_err(|_| DecodeError("path"))?
            .to_string();
        let n = r.u32()? as usize;
        // Each header takes at least 8 bytes, so `n` cannot exceed what remains.
        if n > (buf.len() - r.pos) / 8 {
            return Err(DecodeError("header count"));
        }
        let mut headers = HeaderMap::with_capacity(n);
        for _ in 0..n {
            let k = HeaderName::from_bytes(r.field()?).map_err(|_| DecodeError("header name"))?;
            let v = HeaderValue::from_bytes(r.field()?).map_err(|_| DecodeError("header value"))?;
            headers.append(k, v);
        }
        let body = Bytes::copy_from_slice(r.field()?);
        if r.pos != buf.len() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(StoredRequest {
            method,
            path_and_query,
            headers,
            body,
        })
    }
}

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError("length"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError("truncated"))?;
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn field(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> StoredRequest {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.append("x-multi", "a".parse().unwrap());
        headers.append("x-multi", "b".parse().unwrap());
        headers.insert("x-bin", HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        StoredRequest {
            method: Method::POST,
            path_and_query: "/hooks/x/y?z=1".into(),
            headers,
            body: Bytes::from_static(b"{ \"a\" : 1 }\n\x00\xff"),
        }
    }

    #[test]
    fn round_trip_keeps_every_byte_and_repeated_headers() {
        let s = sample();
        let d = StoredRequest::decode(&s.encode()).unwrap();
        assert_eq!(d, s);
        assert_eq!(d.headers.get_all("x-multi").iter().count(), 2);
    }

    #[test]
    fn head_then_body_is_the_encoding() {
        let s = sample();
        let head =
            StoredRequest::encode_head(&s.method, &s.path_and_query, &s.headers, s.body.len());
        assert_eq!(
            head.len(),
            StoredRequest::head_len(&s.method, &s.path_and_query, &s.headers)
        );
        let mut joined = head;
        joined.extend_from_slice(&s.body);
        assert_eq!(joined, s.encode());
    }

    #[test]
    fn damaged_payloads_are_errors() {
        let e = sample().encode();
        for cut in 0..e.len() {
            assert!(StoredRequest::decode(&e[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = e.clone();
        extra.push(0);
        assert!(StoredRequest::decode(&extra).is_err());
        assert!(StoredRequest::decode(&[9]).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = StoredRequest::decode(&bytes);
        }
    }
}
