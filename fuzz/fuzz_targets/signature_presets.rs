//! Every preset's signature header parser, through `Verifier::verify_request`.
//!
//! Input (see `src/lib.rs`):
//!
//! ```text
//! <preset name>                e.g. stripe (unknown: picked by its first byte)
//! <secret> [<secret>...]       space-separated, at most 4
//! <now> <tolerance>            unix seconds, seconds
//! <signed url> [<query>]      the route's signed_url (- for none), the
//!                              request's query
//! <window> ...                 per secret: <not_before>..<not_after>, unix
//!                              seconds, either end optional (- for open)
//! <header lines>
//!
//! <body>
//! ```
//!
//! Oracles: `verify_request` never panics, whatever the headers, body, clock,
//! URL and query; a match names a configured key that is inside its window;
//! and `sign_request` then `verify_request` (with the body it returns, for
//! Mailgun) accepts for the same secret, body,
//! id, time, URL and query (for the ids and times `sign` is meant to
//! produce: header text, 0 ≤ ts ≤ year 9999).
#![no_main]

use hookgate::signature::{
    sign_request, EventIdSource, Preset, Scheme, SignError, Verifier, VerifyError, Window,
};
use hookgate_fuzz::{
    clock_line, header_map, is_header_text, lines, optional, signed_map, split_head, system_time,
    text, MAX_RFC3339_SECS,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (head, body) = split_head(data);
    let mut lines = lines(head);
    let name = lines.next().unwrap_or_default();
    let preset = match std::str::from_utf8(name).ok().and_then(|s| s.parse().ok()) {
        Some(p) => p,
        None => {
            let i = usize::from(name.first().copied().unwrap_or(0)) % Preset::ALL.len();
            Preset::ALL[i]
        }
    };
    let secrets_line = lines.next().unwrap_or(b"secret");
    let secrets: Vec<&[u8]> = secrets_line
        .split(|b| *b == b' ')
        .filter(|s| !s.is_empty())
        .take(4)
        .collect();
    let (now_secs, now, tolerance) = clock_line(lines.next());
    let url_line = text(lines.next());
    let mut url_words = url_line.split(' ');
    let signed_url = optional(url_words.next().map(str::as_bytes)).unwrap_or_default();
    let query = url_words.next().map(str::to_owned);
    let windows: Vec<Window> = text(lines.next())
        .split_ascii_whitespace()
        .map(window)
        .collect();
    let headers = header_map(lines);

    let scheme = Scheme::Preset(preset);
    let Ok(verifier) = Verifier::new(scheme.clone(), &secrets, tolerance) else {
        return;
    };
    let verifier = verifier.with_windows(&windows).with_signed_url(&signed_url);
    let active = |i: usize| windows.get(i).is_none_or(|w| w.contains(now));
    if let Ok(v) = verifier.verify_request(&headers, body, now, query.as_deref()) {
        assert!(v.key_index < secrets.len());
        assert!(active(v.key_index), "a key outside its window matched");
    }

    // Round trip: what we sign, we verify.
    if !(0..=MAX_RFC3339_SECS).contains(&now_secs) || !active(0) {
        return;
    }
    // Twilio compares a `bodySHA256` in the query with the body's hash; an
    // arbitrary one rightly fails, so only queries without it round-trip.
    let query =
        query.filter(|q| !form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "bodySHA256"));
    // The id the sender puts in the preset's id header, when it is text.
    let id = match preset.default_event_id() {
        Some(EventIdSource::Header(h)) => headers.get(h).and_then(|v| v.to_str().ok()),
        _ => None,
    }
    .filter(|id| is_header_text(id) && !id.is_empty())
    .unwrap_or("msg_fuzz");
    // Twilio signs the URL as called: the signed URL, then the request's
    // query. Square and HubSpot sign the signed URL alone.
    let url = match query.as_deref() {
        Some(q) if !q.is_empty() && preset == Preset::Twilio => format!("{signed_url}?{q}"),
        _ => signed_url.clone(),
    };
    let signed = match sign_request(&scheme, secrets[0], body, Some(id), now_secs, &url) {
        Ok(signed) => signed,
        // GitLab sends the secret verbatim: it may not be a header value. A
        // Standard Webhooks public key (whpk_) verifies but cannot sign.
        // Mailgun cannot sign into a body that starts with `{` but is not
        // a JSON object.
        Err(SignError::Invalid(_))
            if preset == Preset::Gitlab
                || preset == Preset::Mailgun
                || (preset == Preset::StandardWebhooks && secrets[0].starts_with(b"whpk_")) =>
        {
            return
        }
        Err(e) => panic!("{}: cannot sign: {e}", preset.name()),
    };
    // Mailgun's signature is in the body it returns.
    let signed_body = signed.body.as_deref().unwrap_or(body);
    assert_eq!(signed.body.is_some(), preset == Preset::Mailgun);
    let signed = signed_map(signed.headers);
    match verifier.verify_request(&signed, signed_body, now, query.as_deref()) {
        Ok(v) => assert_eq!(v.key_index, 0, "{}: signed with key 0", preset.name()),
        // Linear's body may carry its own (stale) webhookTimestamp.
        Err(VerifyError::TimestampOutOfTolerance) if preset == Preset::Linear => {}
        Err(e) => panic!("{}: signed request rejected: {e:?}", preset.name()),
    }
});

/// `<not_before>..<not_after>` (unix seconds, either end optional); anything
/// else is an open window.
fn window(word: &str) -> Window {
    let (a, b) = word.split_once("..").unwrap_or(("", ""));
    let end = |s: &str| s.parse::<i64>().ok().map(system_time);
    Window {
        not_before: end(a),
        not_after: end(b),
    }
}
