//! The custom scheme: its config validation, the `signed_content` template
//! parser, and verification with whatever scheme the fuzzer writes.
//!
//! Input (see `src/lib.rs`; `-` for an optional line means "not set"):
//!
//! ```text
//! <header>                     the signature header name
//! <prefix>                     optional, e.g. v1=
//! <encoding> <algorithm>       hex|base64|base64url  sha1|sha256|sha512
//! <signed_content>             the template, e.g. {id}.{timestamp}.{body}
//! <id_header>                  optional
//! <timestamp_header>           optional
//! <secret>
//! <now> <tolerance>            unix seconds, seconds
//! <header lines>
//!
//! <body>
//! ```
//!
//! Oracles: nothing panics; a `validate` error names its field first; an
//! invalid scheme never verifies (fails closed); a valid one verifies what it
//! signed.
#![no_main]

use hookgate::signature::{sign, Algorithm, Custom, Encoding, Scheme, Verifier};
use hookgate_fuzz::{
    clock_line, header_map, is_header_text, lines, optional, signed_map, split_head, text,
    MAX_RFC3339_SECS,
};
use libfuzzer_sys::fuzz_target;

const FIELDS: &[&str] = &[
    "header:",
    "prefix:",
    "signed_content:",
    "id_header:",
    "timestamp_header:",
];

fuzz_target!(|data: &[u8]| {
    let (head, body) = split_head(data);
    let mut lines = lines(head);
    let header = text(lines.next());
    let prefix = optional(lines.next());
    let (encoding, algorithm) = {
        let line = text(lines.next());
        let mut words = line.split_ascii_whitespace();
        let encoding = match words.next() {
            Some("base64") => Encoding::Base64,
            Some("base64url") => Encoding::Base64url,
            _ => Encoding::Hex,
        };
        let algorithm = match words.next() {
            Some("sha1") => Algorithm::Sha1,
            Some("sha512") => Algorithm::Sha512,
            _ => Algorithm::Sha256,
        };
        (encoding, algorithm)
    };
    let signed_content = text(lines.next());
    let id_header = optional(lines.next());
    let timestamp_header = optional(lines.next());
    let secret = lines.next().filter(|s| !s.is_empty()).unwrap_or(b"secret");
    let (now_secs, now, tolerance) = clock_line(lines.next());
    let headers = header_map(lines);

    let custom = Custom {
        header,
        prefix,
        encoding,
        algorithm,
        signed_content,
        id_header,
        timestamp_header,
    };
    let valid = custom.validate();
    if let Err(msg) = &valid {
        assert!(
            FIELDS.iter().any(|f| msg.starts_with(f)),
            "error does not name its field: {msg:?}"
        );
    }
    let scheme = Scheme::Custom(Box::new(custom.clone()));
    let Ok(verifier) = Verifier::new(scheme.clone(), &[secret], tolerance) else {
        return;
    };
    let verified = verifier.verify(&headers, body, now);
    if valid.is_err() {
        assert!(verified.is_err(), "an invalid scheme verified: {custom:?}");
    }

    // Round trip with an id from the id header when there is one.
    let id = custom
        .id_header
        .as_deref()
        .and_then(|h| headers.get(h))
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_header_text(id))
        .unwrap_or("evt_fuzz");
    let signed = sign(&scheme, secret, body, Some(id), now_secs);
    match (valid, signed) {
        (Err(_), Ok(_)) => panic!("an invalid scheme signed: {custom:?}"),
        (Err(_), Err(_)) => {}
        (Ok(()), Err(e)) => panic!("a valid scheme did not sign: {e}: {custom:?}"),
        (Ok(()), Ok(pairs)) => {
            if !(0..=MAX_RFC3339_SECS).contains(&now_secs) {
                return;
            }
            let result = verifier.verify(&signed_map(pairs), body, now);
            assert!(
                result.is_ok(),
                "signed request rejected: {result:?}: {custom:?}"
            );
        }
    }
});
