//! The stored-request codec of queue mode (`delivery::job::StoredRequest`),
//! the payload every acknowledged request is kept as until it is forwarded.
//!
//! The input is used twice:
//!
//! 1. as a stored payload: `decode` never panics and never allocates more
//!    than the input's size would allow; what it accepts re-encodes to a
//!    payload that decodes to the same request (canonical form: header
//!    values grouped by name);
//! 2. as a request in the plain-text format of `src/lib.rs`
//!    (`METHOD path-and-query` on the first line, then headers, a blank line
//!    and the body): `decode(encode(x)) == x`, and the encoding is
//!    `encode_head(..)` followed by the body's bytes (what queue mode writes
//!    without copying the body).
#![no_main]

use bytes::Bytes;
use hookgate::delivery::job::StoredRequest;
use hookgate_fuzz::{header_map, lines, split_head};
use http::Method;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // 1. Arbitrary bytes as a stored payload.
    if let Ok(decoded) = StoredRequest::decode(data) {
        let encoded = decoded.encode();
        // Re-encoding only regroups headers: it is never longer.
        assert!(encoded.len() <= data.len());
        assert_eq!(StoredRequest::decode(&encoded).as_ref(), Ok(&decoded));
    }

    // 2. A request built from the input, round-tripped.
    let (head, body) = split_head(data);
    let mut lines = lines(head);
    let first = lines.next().unwrap_or_default();
    let (method, pq) = match first.iter().position(|b| *b == b' ') {
        Some(i) => (&first[..i], &first[i + 1..]),
        None => (first, &b"/"[..]),
    };
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let request = StoredRequest {
        method,
        path_and_query: String::from_utf8_lossy(pq).into_owned(),
        headers: header_map(lines),
        body: Bytes::copy_from_slice(body),
    };
    let encoded = request.encode();
    // Queue mode writes the head into the room in front of the body it
    // read (no copy of the body): head + body must be the encoding.
    let head = StoredRequest::encode_head(
        &request.method,
        &request.path_and_query,
        &request.headers,
        request.body.len(),
    );
    assert_eq!(
        head.len(),
        StoredRequest::head_len(&request.method, &request.path_and_query, &request.headers)
    );
    assert_eq!(&encoded[..head.len()], &head[..]);
    assert_eq!(&encoded[head.len()..], &request.body[..]);
    assert_eq!(StoredRequest::decode(&encoded), Ok(request));
});
