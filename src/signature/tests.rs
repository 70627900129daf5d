//! Behaviour tests: negative cases per preset, round trips, custom validation,
//! key derivation, and property tests that no input panics. Known-good
//! provider vectors are in `vectors.rs`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use super::engine::{Format, TsFormat};
use super::*;

pub(super) const TOLERANCE: Duration = Duration::from_secs(300);
const NOW: i64 = 1_700_000_000;
const SECRET: &str = "s3cr3t-for-tests";
const OTHER: &str = "an-0ther-secret";
const BODY: &[u8] = br#"{"id":"evt_1","analysisId":"an_1","event_id":"e_1"}"#;
const ID: &str = "msg_1";

pub(super) fn at(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// A header map from pairs; repeated names become repeated instances.
pub(super) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

pub(super) fn verifier(scheme: Scheme, secrets: &[&str]) -> Verifier {
    let secrets: Vec<&[u8]> = secrets.iter().map(|s| s.as_bytes()).collect();
    Verifier::new(scheme, &secrets, TOLERANCE).unwrap()
}

pub(super) fn sign_map(
    scheme: &Scheme,
    secret: &str,
    body: &[u8],
    id: Option<&str>,
    ts: i64,
) -> HashMap<String, String> {
    sign(scheme, secret.as_bytes(), body, id, ts)
        .unwrap()
        .into_iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect()
}

fn preset(p: Preset) -> Scheme {
    Scheme::Preset(p)
}

/// Signed headers for `scheme` at `ts` with the test secret and id.
fn signed(scheme: &Scheme, secret: &str, ts: i64) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in sign(scheme, secret.as_bytes(), BODY, Some(ID), ts).unwrap() {
        map.append(n, v);
    }
    map
}

fn sig_header(scheme: &Scheme) -> &'static str {
    match scheme {
        Scheme::Preset(p) => presets::spec(*p).header,
        Scheme::Custom(_) => "x-custom-sig",
    }
}

fn verify(
    scheme: &Scheme,
    map: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Verified, VerifyError> {
    verifier(scheme.clone(), &[SECRET]).verify(map, body, at(now))
}

fn set(map: &mut HeaderMap, name: &str, value: &str) {
    map.insert(
        HeaderName::from_bytes(name.as_bytes()).unwrap(),
        HeaderValue::from_str(value).unwrap(),
    );
}

fn customs() -> Vec<Custom> {
    let base = Custom {
        header: "X-Custom-Sig".into(),
        prefix: None,
        encoding: Encoding::Hex,
        algorithm: Algorithm::Sha256,
        signed_content: "{body}".into(),
        id_header: None,
        timestamp_header: None,
    };
    vec![
        base.clone(),
        Custom {
            prefix: Some("sha1=".into()),
            algorithm: Algorithm::Sha1,
            ..base.clone()
        },
        Custom {
            encoding: Encoding::Base64,
            algorithm: Algorithm::Sha512,
            signed_content: "{timestamp}.{body}".into(),
            timestamp_header: Some("X-Custom-Ts".into()),
            ..base.clone()
        },
        Custom {
            prefix: Some("v1=".into()),
            encoding: Encoding::Base64url,
            signed_content: "{id}:{timestamp}:{body}".into(),
            id_header: Some("X-Custom-Id".into()),
            timestamp_header: Some("X-Custom-Ts".into()),
            ..base.clone()
        },
        // The timestamp header is checked even though it is not signed.
        Custom {
            id_header: Some("x-custom-id".into()),
            timestamp_header: Some("x-custom-ts".into()),
            ..base
        },
    ]
}

/// Every scheme whose signature is in a header (Mailgun's is in the body:
/// see its own tests below).
fn all_schemes() -> Vec<Scheme> {
    Preset::ALL
        .iter()
        .map(|p| preset(*p))
        .filter(|s| !s.signs_in_body())
        .chain(customs().into_iter().map(|c| Scheme::Custom(Box::new(c))))
        .collect()
}

// ---------------------------------------------------------------- presets

#[test]
fn preset_names_match_serde_and_from_str() {
    assert_eq!(Preset::ALL.len(), 33);
    for p in Preset::ALL {
        let json = serde_json::to_string(p).unwrap();
        assert_eq!(json, format!("\"{}\"", p.name()));
        assert_eq!(serde_json::from_str::<Preset>(&json).unwrap(), *p);
        assert_eq!(p.name().parse::<Preset>(), Ok(*p));
        assert_eq!(Scheme::Preset(*p).name(), p.name());
    }
    let names: std::collections::HashSet<_> = Preset::ALL.iter().map(|p| p.name()).collect();
    assert_eq!(names.len(), Preset::ALL.len());
    let err = "github2".parse::<Preset>().unwrap_err();
    assert!(err.contains("github2"), "{err}");
    for p in Preset::ALL {
        assert!(err.contains(p.name()), "{err} lacks {}", p.name());
    }
}

#[test]
fn default_event_ids() {
    use EventIdSource::{BodyPointer, Header};
    let expect = [
        (Preset::Sigsentry, Some(BodyPointer("/analysisId"))),
        (Preset::Statussentry, Some(BodyPointer("/id"))),
        (Preset::Sentry, Some(Header("request-id"))),
        (Preset::StandardWebhooks, Some(Header("webhook-id"))),
        (Preset::Svix, Some(Header("svix-id"))),
        (Preset::Stripe, Some(BodyPointer("/id"))),
        (Preset::Github, Some(Header("x-github-delivery"))),
        (Preset::Slack, None),
        (Preset::Shopify, Some(Header("x-shopify-webhook-id"))),
        (Preset::Pagerduty, None),
        (Preset::Linear, Some(Header("linear-delivery"))),
        (Preset::Paddle, Some(BodyPointer("/event_id"))),
        (Preset::Zoom, None),
        (Preset::Intercom, None),
        (Preset::Twitch, Some(Header("twitch-eventsub-message-id"))),
        (Preset::Gitlab, Some(Header("x-gitlab-event-uuid"))),
        (Preset::Mailgun, Some(BodyPointer("/signature/token"))),
        (Preset::Postmark, None),
    ];
    for (p, want) in expect {
        assert_eq!(p.default_event_id(), want, "{}", p.name());
    }
}

#[test]
fn uses_timestamp() {
    let timed = [
        Preset::Statussentry,
        Preset::Sentry,
        Preset::StandardWebhooks,
        Preset::Svix,
        Preset::Stripe,
        Preset::Slack,
        Preset::Paddle,
        Preset::Zoom,
        Preset::Twitch,
        Preset::Calendly,
        Preset::Mux,
        Preset::Clerk,
        Preset::Resend,
        Preset::Hubspot,
        Preset::Mailgun,
    ];
    for p in Preset::ALL {
        assert_eq!(
            preset(*p).uses_timestamp(),
            timed.contains(p),
            "{}",
            p.name()
        );
    }
    let c = customs();
    assert!(!Scheme::Custom(Box::new(c[0].clone())).uses_timestamp());
    assert!(Scheme::Custom(Box::new(c[2].clone())).uses_timestamp());
    assert_eq!(Scheme::Custom(Box::new(c[0].clone())).name(), "custom");
}

// ---------------------------------------------------------------- keys

#[test]
fn key_derivation() {
    let sw = preset(Preset::StandardWebhooks);
    assert_eq!(Key::derive(&sw, b"").unwrap_err(), KeyError::Empty);
    assert_eq!(Key::derive(&sw, b"whsec_").unwrap_err(), KeyError::Empty);
    assert_eq!(
        Key::derive(&sw, b"whsec_not base64!").unwrap_err(),
        KeyError::BadBase64
    );
    assert_eq!(Key::derive(&sw, b"whsec_aGVsbG8=").unwrap().0, b"hello");
    // Padding is optional.
    assert_eq!(
        Key::derive(&preset(Preset::Svix), b"whsec_aGVsbG8")
            .unwrap()
            .0,
        b"hello"
    );
    // Without the prefix the bytes are the key.
    assert_eq!(Key::derive(&sw, b"aGVsbG8=").unwrap().0, b"aGVsbG8=");
    // Stripe's whsec_ secrets are used verbatim (and so is everyone else's).
    for p in Preset::ALL.iter().filter(|p| {
        !matches!(
            p,
            Preset::StandardWebhooks | Preset::Svix | Preset::Clerk | Preset::Resend
        )
    }) {
        assert_eq!(
            Key::derive(&preset(*p), b"whsec_aGVsbG8=").unwrap().0,
            b"whsec_aGVsbG8="
        );
    }
    assert_eq!(
        format!("{:?}", Key::derive(&sw, b"topsecret").unwrap()),
        "[redacted]"
    );
    let v = verifier(preset(Preset::Github), &["topsecret"]);
    assert!(!format!("{v:?}").contains("topsecret"));
}

#[test]
fn verifier_new_rejects_empty_and_bad_secrets() {
    let sw = preset(Preset::StandardWebhooks);
    assert_eq!(
        Verifier::new(sw.clone(), &[], TOLERANCE).unwrap_err(),
        KeyError::Empty
    );
    assert_eq!(
        Verifier::new(sw.clone(), &[b"ok", b""], TOLERANCE).unwrap_err(),
        KeyError::Empty
    );
    assert_eq!(
        Verifier::new(sw, &[b"whsec_%%%"], TOLERANCE).unwrap_err(),
        KeyError::BadBase64
    );
    assert_eq!(
        sign(&preset(Preset::Github), b"", b"x", None, 0),
        Err(SignError::Key(KeyError::Empty))
    );
}

// ---------------------------------------------------------------- round trips

#[test]
fn round_trip_every_scheme() {
    for scheme in all_schemes() {
        let map = signed(&scheme, SECRET, NOW);
        let v = verify(&scheme, &map, BODY, NOW).unwrap_or_else(|e| panic!("{scheme:?}: {e:?}"));
        assert_eq!(v.key_index, 0);
        let want_ts = scheme.uses_timestamp().then_some(NOW);
        assert_eq!(v.timestamp, want_ts, "{scheme:?}");
    }
}

#[test]
fn round_trip_binary_body_and_edges_of_tolerance() {
    let body = [0u8, 0xff, b'.', b'\n', 0x80];
    for scheme in all_schemes() {
        let mut map = HeaderMap::new();
        for (n, v) in sign(&scheme, SECRET.as_bytes(), &body, Some(ID), NOW).unwrap() {
            map.append(n, v);
        }
        for now in [NOW - 300, NOW + 300] {
            assert!(
                verify(&scheme, &map, &body, now).is_ok(),
                "{scheme:?} at {now}"
            );
        }
    }
}

#[test]
fn sign_emits_expected_header_names() {
    let names = |scheme: Scheme, id: Option<&str>| -> Vec<String> {
        let mut names: Vec<String> = sign(&scheme, b"k", b"{}", id, NOW)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n.as_str().to_string())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        names(preset(Preset::StandardWebhooks), Some("m")),
        ["webhook-id", "webhook-signature", "webhook-timestamp"]
    );
    assert_eq!(
        names(preset(Preset::Svix), Some("m")),
        ["svix-id", "svix-signature", "svix-timestamp"]
    );
    assert_eq!(
        names(preset(Preset::Sentry), Some("m")),
        [
            "request-id",
            "sentry-hook-signature",
            "sentry-hook-timestamp"
        ]
    );
    assert_eq!(
        names(preset(Preset::Sentry), None),
        ["sentry-hook-signature", "sentry-hook-timestamp"]
    );
    assert_eq!(
        names(preset(Preset::Github), Some("m")),
        ["x-github-delivery", "x-hub-signature-256"]
    );
    assert_eq!(names(preset(Preset::Github), None), ["x-hub-signature-256"]);
    assert_eq!(
        names(preset(Preset::Slack), Some("m")),
        ["x-slack-request-timestamp", "x-slack-signature"]
    );
    assert_eq!(
        names(preset(Preset::Twitch), Some("m")),
        [
            "twitch-eventsub-message-id",
            "twitch-eventsub-message-signature",
            "twitch-eventsub-message-timestamp"
        ]
    );
    assert_eq!(
        names(preset(Preset::Stripe), Some("m")),
        ["stripe-signature"]
    );
    assert_eq!(names(preset(Preset::Paddle), None), ["paddle-signature"]);
    assert_eq!(
        names(preset(Preset::Gitlab), Some("m")),
        ["x-gitlab-event-uuid", "x-gitlab-token"]
    );
    assert_eq!(
        names(Scheme::Custom(Box::new(customs()[3].clone())), Some("m")),
        ["x-custom-id", "x-custom-sig", "x-custom-ts"]
    );
    let gitlab = sign_map(&preset(Preset::Gitlab), "tok en", b"", None, 0);
    assert_eq!(gitlab["x-gitlab-token"], "tok en");
    let twitch = sign_map(&preset(Preset::Twitch), "k", b"", Some("m"), 1_573_899_072);
    assert_eq!(
        twitch["twitch-eventsub-message-timestamp"],
        "2019-11-16T10:11:12Z"
    );
}

#[test]
fn sign_requires_id_when_the_content_signs_it() {
    for p in [Preset::StandardWebhooks, Preset::Svix, Preset::Twitch] {
        assert_eq!(
            sign(&preset(p), b"k", b"", None, NOW),
            Err(SignError::IdRequired(p.name()))
        );
    }
    let custom = Scheme::Custom(Box::new(customs()[3].clone()));
    assert_eq!(
        sign(&custom, b"k", b"", None, NOW),
        Err(SignError::IdRequired("custom"))
    );
    // Custom with an id header but no {id} in the content: id is optional.
    assert!(sign(
        &Scheme::Custom(Box::new(customs()[4].clone())),
        b"k",
        b"",
        None,
        NOW
    )
    .is_ok());
}

#[test]
fn sign_never_panics_on_odd_inputs() {
    for scheme in all_schemes() {
        for ts in [i64::MIN, -1, 0, i64::MAX] {
            let _ = sign(&scheme, b"k", b"", Some("m"), ts);
        }
        assert!(matches!(
            sign(&scheme, b"k", b"", Some("bad\nid"), NOW),
            Err(SignError::Invalid(_)) | Ok(_)
        ));
    }
    // An id that cannot be a header value is an error, not a panic.
    assert!(matches!(
        sign(
            &preset(Preset::StandardWebhooks),
            b"k",
            b"",
            Some("a\nb"),
            NOW
        ),
        Err(SignError::Invalid(_))
    ));
    // The error never echoes the GitLab secret.
    let err = sign(&preset(Preset::Gitlab), b"sec\nret", b"", None, NOW).unwrap_err();
    assert!(!err.to_string().contains("sec"), "{err}");
    // Twitch timestamps outside 1970..=9999 are clamped.
    let t = sign_map(&preset(Preset::Twitch), "k", b"", Some("m"), -5);
    assert_eq!(
        t["twitch-eventsub-message-timestamp"],
        "1970-01-01T00:00:00Z"
    );
    let t = sign_map(&preset(Preset::Twitch), "k", b"", Some("m"), i64::MAX);
    assert_eq!(
        t["twitch-eventsub-message-timestamp"],
        "9999-12-31T23:59:59Z"
    );
}

// ---------------------------------------------------------------- negatives (every scheme)

#[test]
fn tampered_body_is_mismatch() {
    // GitLab's token and Postmark's basic auth do not cover the body.
    for scheme in all_schemes()
        .into_iter()
        .filter(|s| *s != preset(Preset::Gitlab) && *s != preset(Preset::Postmark))
    {
        let map = signed(&scheme, SECRET, NOW);
        let mut body = BODY.to_vec();
        body[2] ^= 1;
        assert_eq!(
            verify(&scheme, &map, &body, NOW),
            Err(VerifyError::Mismatch),
            "{scheme:?}"
        );
    }
}

#[test]
fn wrong_secret_is_mismatch() {
    for scheme in all_schemes() {
        let map = signed(&scheme, OTHER, NOW);
        assert_eq!(
            verify(&scheme, &map, BODY, NOW),
            Err(VerifyError::Mismatch),
            "{scheme:?}"
        );
    }
}

#[test]
fn missing_signature_header_is_missing() {
    for scheme in all_schemes() {
        let mut map = signed(&scheme, SECRET, NOW);
        map.remove(sig_header(&scheme));
        assert_eq!(
            verify(&scheme, &map, BODY, NOW),
            Err(VerifyError::Missing),
            "{scheme:?}"
        );
        // Missing wins over everything else, even with no other header.
        assert_eq!(
            verify(&scheme, &HeaderMap::new(), BODY, NOW),
            Err(VerifyError::Missing)
        );
    }
}

#[test]
fn stale_and_future_timestamps_are_rejected() {
    for scheme in all_schemes().into_iter().filter(Scheme::uses_timestamp) {
        for ts in [NOW - 301, NOW + 301, 0, i64::MAX] {
            let map = signed(&scheme, SECRET, ts);
            assert_eq!(
                verify(&scheme, &map, BODY, NOW),
                Err(VerifyError::TimestampOutOfTolerance),
                "{scheme:?} at {ts}"
            );
        }
    }
}

#[test]
fn garbage_signature_is_malformed() {
    for scheme in all_schemes() {
        if scheme == preset(Preset::Gitlab) {
            continue; // any non-empty token is well-formed
        }
        let mut map = signed(&scheme, SECRET, NOW);
        set(&mut map, sig_header(&scheme), "!!not a signature!!");
        assert_eq!(
            verify(&scheme, &map, BODY, NOW),
            Err(VerifyError::Malformed),
            "{scheme:?}"
        );
    }
}

#[test]
fn non_ascii_signature_header_is_malformed() {
    for scheme in all_schemes() {
        if scheme == preset(Preset::Gitlab) {
            continue; // compared as raw bytes, see gitlab_token below
        }
        let mut map = signed(&scheme, SECRET, NOW);
        map.insert(
            HeaderName::from_bytes(sig_header(&scheme).as_bytes()).unwrap(),
            HeaderValue::from_bytes(b"sha256=\xff\xfe").unwrap(),
        );
        assert_eq!(
            verify(&scheme, &map, BODY, NOW),
            Err(VerifyError::Malformed),
            "{scheme:?}"
        );
    }
}

#[test]
fn truncated_signature_is_rejected() {
    for scheme in all_schemes() {
        let map = signed(&scheme, SECRET, NOW);
        let name = sig_header(&scheme);
        let full = map[name].to_str().unwrap().to_string();
        for keep in [full.len() / 2, full.len() - 3] {
            let mut map = map.clone();
            set(&mut map, name, &full[..keep]);
            let got = verify(&scheme, &map, BODY, NOW);
            assert!(
                matches!(got, Err(VerifyError::Malformed | VerifyError::Mismatch)),
                "{scheme:?} {keep}: {got:?}"
            );
        }
    }
}

#[test]
fn decoy_instances_and_rotation() {
    for scheme in all_schemes() {
        // A well-formed decoy instance (signed with another secret) before the
        // real one: every instance is checked.
        let decoy = signed(&scheme, OTHER, NOW);
        let mut map = signed(&scheme, SECRET, NOW);
        let name = HeaderName::from_bytes(sig_header(&scheme).as_bytes()).unwrap();
        let real = map.remove(&name).unwrap();
        map.append(name.clone(), decoy[&name].clone());
        map.append(name, real);
        assert!(verify(&scheme, &map, BODY, NOW).is_ok(), "{scheme:?}");

        // Rotation: the second configured secret matches.
        let map = signed(&scheme, SECRET, NOW);
        let v = verifier(scheme.clone(), &[OTHER, SECRET])
            .verify(&map, BODY, at(NOW))
            .unwrap();
        assert_eq!(v.key_index, 1, "{scheme:?}");
        let v = verifier(scheme.clone(), &[SECRET, SECRET])
            .verify(&map, BODY, at(NOW))
            .unwrap();
        assert_eq!(v.key_index, 0, "first matching key wins");
    }
}

#[test]
fn candidate_cap_bounds_the_work() {
    let scheme = preset(Preset::Github);
    let decoy = format!("sha256={}", "ab".repeat(32));
    let good = signed(&scheme, SECRET, NOW)["x-hub-signature-256"]
        .to_str()
        .unwrap()
        .to_string();
    for (decoys, ok) in [
        (MAX_CANDIDATES - 1, true),
        (MAX_CANDIDATES, false),
        (100, false),
    ] {
        let mut pairs = vec![("x-hub-signature-256", decoy.as_str()); decoys];
        pairs.push(("x-hub-signature-256", &good));
        let got = verify(&scheme, &headers(&pairs), BODY, NOW);
        assert_eq!(got.is_ok(), ok, "{decoys} decoys: {got:?}");
    }
    // The same holds inside one header.
    let scheme = preset(Preset::StandardWebhooks);
    let map = signed(&scheme, SECRET, NOW);
    let good = map["webhook-signature"].to_str().unwrap().to_string();
    let many = format!("{} {good}", vec!["v1,AAAA"; 40].join(" "));
    let mut capped = map.clone();
    set(&mut capped, "webhook-signature", &many);
    assert_eq!(
        verify(&scheme, &capped, BODY, NOW),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn error_precedence() {
    let scheme = preset(Preset::Slack);
    // Missing beats a missing timestamp.
    assert_eq!(
        verify(&scheme, &HeaderMap::new(), BODY, NOW),
        Err(VerifyError::Missing)
    );
    // Malformed beats a stale timestamp.
    let mut map = signed(&scheme, SECRET, NOW - 1000);
    set(&mut map, "x-slack-signature", "v0=zz");
    assert_eq!(
        verify(&scheme, &map, BODY, NOW),
        Err(VerifyError::Malformed)
    );
    // A stale timestamp beats a wrong signature (checked before the MAC).
    let map = signed(&scheme, OTHER, NOW - 1000);
    assert_eq!(
        verify(&scheme, &map, BODY, NOW),
        Err(VerifyError::TimestampOutOfTolerance)
    );
    // A missing timestamp header is Malformed.
    let mut map = signed(&scheme, SECRET, NOW);
    map.remove("x-slack-request-timestamp");
    assert_eq!(
        verify(&scheme, &map, BODY, NOW),
        Err(VerifyError::Malformed)
    );
}

#[test]
fn timestamp_headers_must_be_plain_unix_seconds() {
    for scheme in all_schemes().into_iter().filter(Scheme::uses_timestamp) {
        let ts_header = match &scheme {
            Scheme::Preset(p) => match presets::spec(*p).timestamp {
                Some(engine::TsSource::Header(name, TsFormat::UnixSeconds)) => name.to_string(),
                _ => continue,
            },
            Scheme::Custom(c) => c.timestamp_header.clone().unwrap().to_ascii_lowercase(),
        };
        for bad in [
            "",
            "abc",
            "-5",
            "+1700000000",
            "1700000000.5",
            " 1700000000",
            "99999999999999999999",
        ] {
            let mut map = signed(&scheme, SECRET, NOW);
            set(&mut map, &ts_header, bad);
            assert_eq!(
                verify(&scheme, &map, BODY, NOW),
                Err(VerifyError::Malformed),
                "{scheme:?} {bad:?}"
            );
        }
        // A second instance with another value is ambiguous.
        let mut map = signed(&scheme, SECRET, NOW);
        map.append(
            HeaderName::from_bytes(ts_header.as_bytes()).unwrap(),
            HeaderValue::from_static("1700000001"),
        );
        assert_eq!(
            verify(&scheme, &map, BODY, NOW),
            Err(VerifyError::Malformed),
            "{scheme:?}"
        );
        // The same value twice is harmless.
        let mut map = signed(&scheme, SECRET, NOW);
        map.append(
            HeaderName::from_bytes(ts_header.as_bytes()).unwrap(),
            HeaderValue::from_static("1700000000"),
        );
        assert!(verify(&scheme, &map, BODY, NOW).is_ok(), "{scheme:?}");
    }
}

#[test]
fn huge_timestamps_never_overflow() {
    let scheme = preset(Preset::Slack);
    let mut map = signed(&scheme, SECRET, NOW);
    set(&mut map, "x-slack-request-timestamp", &i64::MAX.to_string());
    assert_eq!(
        verify(&scheme, &map, BODY, NOW),
        Err(VerifyError::TimestampOutOfTolerance)
    );
    let v = Verifier::new(scheme.clone(), &[SECRET.as_bytes()], Duration::MAX).unwrap();
    let map = signed(&scheme, SECRET, i64::MAX);
    assert!(v.verify(&map, BODY, at(NOW)).is_ok());
    assert!(v.verify(&map, BODY, at(-NOW)).is_ok());
    let map = signed(&scheme, SECRET, 0);
    assert!(v
        .verify(
            &map,
            BODY,
            SystemTime::UNIX_EPOCH - Duration::from_secs(u32::MAX.into())
        )
        .is_ok());
}

// ---------------------------------------------------------------- per-format specifics

#[test]
fn standard_webhooks_versions_and_ids() {
    let scheme = preset(Preset::StandardWebhooks);
    let map = signed(&scheme, SECRET, NOW);
    let good = map["webhook-signature"].to_str().unwrap().to_string();
    let with = |value: &str| {
        let mut m = map.clone();
        set(&mut m, "webhook-signature", value);
        verify(&scheme, &m, BODY, NOW)
    };
    // Unknown versions (future v2) are skipped; v1a (ed25519) entries are
    // only compared with whpk_/whsk_ keys (see vectors.rs), so never match here.
    assert!(with(&format!("v1a,AAAA v2,BBBB {good}")).is_ok());
    assert!(with(&format!("v1,Zm9v   {good}  ")).is_ok());
    assert_eq!(with("v1a,AAAA v2,BBBB"), Err(VerifyError::Mismatch));
    // A v1 entry that is not base64, alone, is Malformed; next to a good one it
    // is only skipped.
    assert_eq!(with("v1,***"), Err(VerifyError::Malformed));
    assert!(with(&format!("v1,*** {good}")).is_ok());
    assert_eq!(with("v1,"), Err(VerifyError::Malformed));
    assert_eq!(with("   "), Err(VerifyError::Malformed));
    assert_eq!(with("nocomma"), Err(VerifyError::Malformed));
    // Decoded but the wrong length: Mismatch. Longer than any MAC (102
    // bytes, kept on the heap rather than inline) too, and it does not
    // hide a good entry beside it.
    assert_eq!(with("v1,AAAA"), Err(VerifyError::Mismatch));
    let long = format!("v1,{}", "A".repeat(136));
    assert_eq!(with(&long), Err(VerifyError::Mismatch));
    assert!(with(&format!("{long} {good}")).is_ok());
    // The id is signed: missing is Malformed, changed is Mismatch.
    let mut m = map.clone();
    m.remove("webhook-id");
    assert_eq!(verify(&scheme, &m, BODY, NOW), Err(VerifyError::Malformed));
    let mut m = map.clone();
    set(&mut m, "webhook-id", "msg_2");
    assert_eq!(verify(&scheme, &m, BODY, NOW), Err(VerifyError::Mismatch));
}

#[test]
fn stripe_style_lists() {
    for (p, ts_key, sep, sig_key) in [
        (Preset::Stripe, "t", ",", "v1"),
        (Preset::Statussentry, "t", ",", "v1"),
        (Preset::Paddle, "ts", ";", "h1"),
    ] {
        let scheme = preset(p);
        let name = sig_header(&scheme);
        let good_value = signed(&scheme, SECRET, NOW)[name]
            .to_str()
            .unwrap()
            .to_string();
        let good_sig = good_value.rsplit_once('=').unwrap().1.to_string();
        let decoy = "ab".repeat(32);
        let with = |value: String| verify(&scheme, &headers(&[(name, &value)]), BODY, NOW);
        let t = format!("{ts_key}={NOW}");
        let s = |sig: &str| format!("{sig_key}={sig}");

        // Several signatures, one valid, among decoys and unknown keys; any order.
        assert!(with(
            [
                s(&decoy),
                "v0=abcd".into(),
                s(&good_sig),
                t.clone(),
                "x=1".into()
            ]
            .join(sep)
        )
        .is_ok());
        assert!(with(format!("{t}{sep} {}{sep}{}", s(&decoy), s(&good_sig))).is_ok());
        // Only unknown versions: Mismatch. No signature entry at all: Malformed.
        assert_eq!(
            with(format!("{t}{sep}v0={good_sig}")),
            Err(VerifyError::Mismatch),
            "{p:?}"
        );
        assert_eq!(with(t.clone()), Err(VerifyError::Malformed), "{p:?}");
        // Missing, empty, negative, non-numeric or repeated timestamp: Malformed.
        assert_eq!(with(s(&good_sig)), Err(VerifyError::Malformed));
        for bad in ["", "-1", "abc", "1e9", "99999999999999999999"] {
            assert_eq!(
                with(format!("{ts_key}={bad}{sep}{}", s(&good_sig))),
                Err(VerifyError::Malformed)
            );
        }
        assert_eq!(
            with(format!("{t}{sep}{t}{sep}{}", s(&good_sig))),
            Err(VerifyError::Malformed)
        );
        // Structurally broken: Malformed, like stripe-go's ErrInvalidHeader.
        assert_eq!(with(format!("v1{sep}{t}")), Err(VerifyError::Malformed));
        assert_eq!(
            with(format!("{t}{sep}={good_sig}")),
            Err(VerifyError::Malformed)
        );
        // Bad hex alone is Malformed; next to a good one, skipped.
        assert_eq!(
            with(format!("{t}{sep}{}", s("xyz"))),
            Err(VerifyError::Malformed)
        );
        assert!(with(format!("{t}{sep}{}{sep}{}", s("xyz"), s(&good_sig))).is_ok());
        // Uppercase hex is accepted.
        assert!(with(format!("{t}{sep}{}", s(&good_sig.to_uppercase()))).is_ok());
        // Two instances must agree on the timestamp.
        let other_t = format!("{ts_key}={}{sep}{}", NOW + 1, s(&decoy));
        let pairs = [(name, good_value.as_str()), (name, other_t.as_str())];
        assert_eq!(
            verify(&scheme, &headers(&pairs), BODY, NOW),
            Err(VerifyError::Malformed)
        );
    }
}

#[test]
fn pagerduty_list_with_spaces() {
    let scheme = preset(Preset::Pagerduty);
    let good = signed(&scheme, SECRET, NOW)["x-pagerduty-signature"]
        .to_str()
        .unwrap()
        .to_string();
    let value = format!("v1={} , {good} ,v2=abcd", "cd".repeat(32));
    assert!(verify(
        &scheme,
        &headers(&[("x-pagerduty-signature", &value)]),
        BODY,
        NOW
    )
    .is_ok());
    let value = format!("v2={}", &good[3..]);
    assert_eq!(
        verify(
            &scheme,
            &headers(&[("x-pagerduty-signature", &value)]),
            BODY,
            NOW
        ),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn prefixed_headers_need_their_prefix() {
    for (p, prefix) in [
        (Preset::Github, "sha256="),
        (Preset::Sigsentry, "sha256="),
        (Preset::Intercom, "sha1="),
        (Preset::Slack, "v0="),
        (Preset::Zoom, "v0="),
        (Preset::Twitch, "sha256="),
    ] {
        let scheme = preset(p);
        let name = sig_header(&scheme);
        let map = signed(&scheme, SECRET, NOW);
        let good = map[name].to_str().unwrap().to_string();
        let bare = good.strip_prefix(prefix).unwrap();
        for bad in [
            bare.to_string(),
            format!("sha512={bare}"),
            format!("{}{bare}", prefix.to_uppercase()),
        ] {
            let mut m = map.clone();
            set(&mut m, name, &bad);
            assert_eq!(
                verify(&scheme, &m, BODY, NOW),
                Err(VerifyError::Malformed),
                "{p:?} {bad}"
            );
        }
        // A bad-prefix instance next to a good one is skipped.
        let mut m = map.clone();
        m.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(bare).unwrap(),
        );
        assert!(verify(&scheme, &m, BODY, NOW).is_ok(), "{p:?}");
    }
}

#[test]
fn twitch_timestamps_are_rfc3339() {
    let scheme = preset(Preset::Twitch);
    let map = signed(&scheme, SECRET, NOW);
    for bad in [
        "1700000000",
        "2023-13-14T22:13:20Z",
        "yesterday",
        "2023-11-14T22:13:20Zjunk",
        "2023-11-14T22:13:20.5x",
        "2023-11-14T22:13:20+01:00",
        "1969-12-31T23:59:59Z",
        "2023-11-14 22:13:20+00:00junk",
    ] {
        let mut m = map.clone();
        set(&mut m, "twitch-eventsub-message-timestamp", bad);
        assert_eq!(
            verify(&scheme, &m, BODY, NOW),
            Err(VerifyError::Malformed),
            "{bad}"
        );
    }
    let mut m = map.clone();
    m.remove("twitch-eventsub-message-id");
    assert_eq!(verify(&scheme, &m, BODY, NOW), Err(VerifyError::Malformed));
    let mut m = map.clone();
    m.append(
        "twitch-eventsub-message-id",
        HeaderValue::from_static("msg_2"),
    );
    assert_eq!(verify(&scheme, &m, BODY, NOW), Err(VerifyError::Malformed));
}

#[test]
fn shopify_base64_padding_is_optional() {
    let scheme = preset(Preset::Shopify);
    let map = signed(&scheme, SECRET, NOW);
    let good = map["x-shopify-hmac-sha256"].to_str().unwrap().to_string();
    assert!(good.ends_with('='));
    let mut m = map.clone();
    set(&mut m, "x-shopify-hmac-sha256", good.trim_end_matches('='));
    assert!(verify(&scheme, &m, BODY, NOW).is_ok());
    set(&mut m, "x-shopify-hmac-sha256", "not base64!");
    assert_eq!(verify(&scheme, &m, BODY, NOW), Err(VerifyError::Malformed));
}

#[test]
fn sentry_timestamp_is_required() {
    let scheme = preset(Preset::Sentry);
    let mut map = signed(&scheme, SECRET, NOW);
    map.remove("sentry-hook-timestamp");
    assert_eq!(
        verify(&scheme, &map, BODY, NOW),
        Err(VerifyError::Malformed)
    );
}

#[test]
fn gitlab_token() {
    let scheme = preset(Preset::Gitlab);
    let with = |value: &[u8]| {
        let mut map = HeaderMap::new();
        map.insert("x-gitlab-token", HeaderValue::from_bytes(value).unwrap());
        verifier(scheme.clone(), &[OTHER, SECRET]).verify(&map, b"anything", at(NOW))
    };
    assert_eq!(with(SECRET.as_bytes()).unwrap().key_index, 1);
    assert_eq!(with(b"s3cr3t-for-test"), Err(VerifyError::Mismatch));
    assert_eq!(with(b"s3cr3t-for-tests "), Err(VerifyError::Mismatch)); // http trims nothing
    assert_eq!(with(b"\xff"), Err(VerifyError::Mismatch));
    assert_eq!(with(b""), Err(VerifyError::Malformed));
}

#[test]
fn linear_body_timestamp() {
    let scheme = preset(Preset::Linear);
    let check = |body: &[u8]| {
        let map = signed_body(&scheme, body);
        verify(&scheme, &map, body, NOW)
    };
    let ms = NOW * 1000;
    assert_eq!(
        check(format!(r#"{{"webhookTimestamp":{ms}}}"#).as_bytes())
            .unwrap()
            .timestamp,
        Some(NOW)
    );
    for stale in [ms - 301_000, ms + 301_000, 0, -1, i64::MAX] {
        assert_eq!(
            check(format!(r#"{{"a":[1],"webhookTimestamp":{stale}}}"#).as_bytes()),
            Err(VerifyError::TimestampOutOfTolerance),
            "{stale}"
        );
    }
    assert_eq!(
        check(b"{\"webhookTimestamp\":1e300}"),
        Err(VerifyError::TimestampOutOfTolerance)
    );
    assert_eq!(
        check(b"{\"webhookTimestamp\":184467440737095516150}"),
        Err(VerifyError::TimestampOutOfTolerance)
    );
    // No usable timestamp: accepted on the signature alone.
    for body in [
        &b"not json"[..],
        b"{}",
        b"[1,2]",
        b"{\"webhookTimestamp\":\"1700000000000\"}",
    ] {
        assert_eq!(check(body).unwrap().timestamp, None);
    }
    // A forged stale body fails on the signature first.
    let map = signed_body(&scheme, b"{}");
    assert_eq!(
        verify(&scheme, &map, b"{\"webhookTimestamp\":0}", NOW),
        Err(VerifyError::Mismatch)
    );
}

fn signed_body(scheme: &Scheme, body: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in sign(scheme, SECRET.as_bytes(), body, Some(ID), NOW).unwrap() {
        map.append(n, v);
    }
    map
}

// ---------------------------------------------------------------- custom

fn custom_base() -> Custom {
    customs()[0].clone()
}

#[test]
fn custom_validate_errors_name_the_field() {
    let cases: Vec<(Custom, &str)> = vec![
        (
            Custom {
                header: String::new(),
                ..custom_base()
            },
            "header: must not be empty",
        ),
        (
            Custom {
                header: "bad header".into(),
                ..custom_base()
            },
            "header:",
        ),
        (
            Custom {
                header: "x-sig\n".into(),
                ..custom_base()
            },
            "header:",
        ),
        (
            Custom {
                id_header: Some("a b".into()),
                ..custom_base()
            },
            "id_header:",
        ),
        (
            Custom {
                id_header: Some(String::new()),
                ..custom_base()
            },
            "id_header: must not be empty",
        ),
        (
            Custom {
                timestamp_header: Some("t(s)".into()),
                ..custom_base()
            },
            "timestamp_header:",
        ),
        (
            Custom {
                prefix: Some("sha256=\n".into()),
                ..custom_base()
            },
            "prefix:",
        ),
        (
            Custom {
                prefix: Some(" v1=".into()),
                ..custom_base()
            },
            "prefix:",
        ),
        (
            Custom {
                signed_content: "{foo}.{body}".into(),
                ..custom_base()
            },
            "signed_content: unknown placeholder {foo}",
        ),
        (
            Custom {
                signed_content: "{body".into(),
                ..custom_base()
            },
            "signed_content: unclosed {",
        ),
        (
            Custom {
                signed_content: "{timestamp}".into(),
                ..custom_base()
            },
            "signed_content: must contain {body}",
        ),
        (
            Custom {
                signed_content: String::new(),
                ..custom_base()
            },
            "signed_content: must contain {body}",
        ),
        (
            Custom {
                signed_content: "{timestamp}.{body}".into(),
                ..custom_base()
            },
            "signed_content: {timestamp} needs timestamp_header",
        ),
        (
            Custom {
                signed_content: "{id}.{body}".into(),
                ..custom_base()
            },
            "signed_content: {id} needs id_header",
        ),
    ];
    for (custom, want) in cases {
        let err = custom.validate().unwrap_err();
        assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        // An invalid custom scheme never verifies and never signs.
        let scheme = Scheme::Custom(Box::new(custom));
        assert!(matches!(
            sign(&scheme, b"k", b"", Some("i"), NOW),
            Err(SignError::Invalid(_))
        ));
        let map = headers(&[("x-custom-sig", "00")]);
        assert!(verify(&scheme, &map, b"", NOW).is_err());
    }
    for custom in customs() {
        assert_eq!(custom.validate(), Ok(()));
    }
    // Literal text and a lone `}` are fine; so is an empty prefix.
    let ok = Custom {
        signed_content: "v0:}{body}:end".into(),
        prefix: Some(String::new()),
        ..custom_base()
    };
    assert_eq!(ok.validate(), Ok(()));
}

#[test]
fn custom_deserialises_with_defaults_and_denies_unknown_fields() {
    let c: Custom = serde_json::from_str(r#"{"header":"X-Sig"}"#).unwrap();
    assert_eq!(c.signed_content, "{body}");
    assert_eq!(
        (c.encoding, c.algorithm),
        (Encoding::Hex, Algorithm::Sha256)
    );
    let c: Custom =
        serde_json::from_str(r#"{"header":"X-Sig","encoding":"base64url","algorithm":"sha512"}"#)
            .unwrap();
    assert_eq!(
        (c.encoding, c.algorithm),
        (Encoding::Base64url, Algorithm::Sha512)
    );
    assert!(serde_json::from_str::<Custom>(r#"{"header":"X-Sig","secret":"x"}"#).is_err());
}

#[test]
fn custom_template_literals_are_signed() {
    let custom = Custom {
        signed_content: "v0:}{body}".into(),
        ..custom_base()
    };
    let scheme = Scheme::Custom(Box::new(custom));
    let map = signed(&scheme, SECRET, NOW);
    let expected = hex::encode(crypto::mac(
        Algorithm::Sha256,
        SECRET.as_bytes(),
        &[&b"v0:}"[..], BODY],
    ));
    assert_eq!(map["x-custom-sig"].to_str().unwrap(), expected);
    assert!(verify(&scheme, &map, BODY, NOW).is_ok());
}

#[test]
fn custom_header_names_are_case_insensitive() {
    // Configured mixed-case; sent lower-case by `sign`, looked up case-insensitively.
    let custom = customs()[3].clone();
    let scheme = Scheme::Custom(Box::new(custom));
    let map = signed(&scheme, SECRET, NOW);
    assert!(map.contains_key("x-custom-sig"));
    assert!(verify(&scheme, &map, BODY, NOW).is_ok());
    let mut m = map.clone();
    m.remove("x-custom-id");
    assert_eq!(verify(&scheme, &m, BODY, NOW), Err(VerifyError::Malformed));
}

// ---------------------------------------------------------------- properties

fn any_scheme() -> impl Strategy<Value = Scheme> {
    proptest::sample::select(all_schemes())
}

/// Every header name any scheme reads.
fn header_names() -> Vec<&'static str> {
    let mut names = vec!["x-custom-sig", "x-custom-id", "x-custom-ts"];
    for p in Preset::ALL {
        let spec = presets::spec(*p);
        if !spec.header.is_empty() {
            names.push(spec.header);
        }
        names.extend(spec.id_header);
        if let Some(engine::TsSource::Header(name, _)) = spec.timestamp {
            names.push(name);
        }
    }
    names
}

proptest! {
    #[test]
    fn verify_never_panics_on_arbitrary_headers(
        scheme in any_scheme(),
        values in proptest::collection::vec(
            (proptest::sample::select(header_names()), proptest::collection::vec(any::<u8>(), 0..120)),
            0..6,
        ),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        now in any::<i64>(),
        tolerance in any::<u64>(),
    ) {
        let mut map = HeaderMap::new();
        for (name, bytes) in values {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                map.append(HeaderName::from_static(name), value);
            }
        }
        let v = Verifier::new(scheme, &[b"k".as_slice(), b"whsec_aGVsbG8="], Duration::from_secs(tolerance)).unwrap();
        let _ = v.verify(&map, &body, at(now));
    }

    /// The request's query string (Twilio) and the form body are attacker
    /// text too; an ed25519 key exercises the `v1a` path.
    #[test]
    fn verify_never_panics_on_arbitrary_queries_and_keys(
        scheme in any_scheme(),
        values in proptest::collection::vec(
            (proptest::sample::select(header_names()), proptest::collection::vec(any::<u8>(), 0..120)),
            0..6,
        ),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        query in proptest::option::of(any::<String>()),
        url in any::<String>(),
        now in any::<i64>(),
    ) {
        let mut map = HeaderMap::new();
        for (name, bytes) in values {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                map.append(HeaderName::from_static(name), value);
            }
        }
        let whpk = b"whpk_A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=";
        let v = Verifier::new(scheme, &[b"k".as_slice(), whpk], Duration::from_secs(300))
            .unwrap()
            .with_signed_url(&url)
            .with_windows(&[Window { not_before: Some(at(now)), not_after: None }]);
        let _ = v.verify_request(&map, &body, at(now), query.as_deref());
    }

    #[test]
    fn verify_never_panics_on_mutated_valid_headers(
        scheme in any_scheme(),
        ts in any::<i64>(),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        cut in any::<proptest::sample::Index>(),
        junk in "[ -~]{0,12}",
    ) {
        let Ok(signed) = sign(&scheme, b"k", &body, Some("id"), ts) else { return Ok(()) };
        let mut map = HeaderMap::new();
        for (n, v) in &signed {
            map.append(n.clone(), v.clone());
        }
        let v = Verifier::new(scheme.clone(), &[b"k".as_slice()], Duration::from_secs(300)).unwrap();
        // Unmodified: verifies at its own (possibly clamped) timestamp.
        let own = match &scheme {
            Scheme::Preset(Preset::Twitch) => ts.clamp(0, 253_402_300_799),
            _ => ts,
        };
        let ok = v.verify(&map, &body, at(own));
        prop_assert!(ok.is_ok() || matches!(ok, Err(VerifyError::Malformed)) && ts < 0, "{:?}", ok);
        // Splice junk into the signature header at an arbitrary point.
        let (name, value) = &signed[0];
        let text = value.to_str().unwrap();
        let at_char = cut.index(text.len() + 1);
        let mutated = format!("{}{junk}{}", &text[..at_char], &text[at_char..]);
        if let Ok(value) = HeaderValue::from_str(&mutated) {
            map.insert(name.clone(), value);
            let _ = v.verify(&map, &body, at(own));
        }
    }

    #[test]
    fn header_parsers_never_panic(text in any::<String>(), sep in proptest::sample::select(vec![',', ';', ' '])) {
        let formats = [
            Format::Bare,
            Format::Prefixed("sha256="),
            Format::Versioned("v1"),
            Format::VersionedEd25519 { hmac: "v1", ed25519: "v1a" },
            Format::List { sep, sig_key: "v1" },
        ];
        for format in formats {
            for encoding in [Encoding::Hex, Encoding::Base64, Encoding::Base64url] {
                let mut found = parse::Candidates::default();
                let _ = parse::signature_value(format, Some("t"), encoding, &text, &mut found);
                prop_assert!(found.as_slice().len() <= MAX_CANDIDATES);
                prop_assert!(found.as_slice().len() + found.ed25519().len() <= MAX_CANDIDATES);
                prop_assert!(found.as_slice().iter().map(|s| s.len()).chain(found.ed25519().iter().map(Vec::len)).sum::<usize>() <= text.len());
            }
        }
        let _ = parse::key_values(&text, sep).count();
        let _ = parse::unix_seconds(&text);
        let _ = parse::timestamp(&text, TsFormat::UnixSeconds);
        let _ = parse::timestamp(&text, TsFormat::Rfc3339);
        let _ = parse::timestamp(&text, TsFormat::UnixMillis);
        let form = [engine::Part::FormParams];
        let _ = engine::form_params(&form, text.as_bytes(), &text);
        let _ = engine::form_params(&form, text.as_bytes(), &format!("https://x/?bodySHA256={text}"));
        let _ = parse::linear_body_timestamp_ms(text.as_bytes());
        let _ = text.parse::<Preset>();
        let custom = Custom { signed_content: text.clone(), prefix: Some(text.clone()), ..custom_base() };
        let _ = custom.validate();
        let custom = Custom { header: text, ..custom_base() };
        let _ = custom.validate();
    }

    #[test]
    fn round_trip_arbitrary_inputs(
        scheme in any_scheme(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        id in "[A-Za-z0-9_.-]{1,24}",
        ts in 0i64..=4_000_000_000,
        secret in proptest::collection::vec(any::<u8>(), 1..48),
    ) {
        // GitLab's token must itself be a valid header value.
        prop_assume!(scheme != Scheme::Preset(Preset::Gitlab) || HeaderValue::from_bytes(&secret).is_ok());
        prop_assume!(Key::derive(&scheme, &secret).is_ok());
        let mut map = HeaderMap::new();
        for (n, v) in sign(&scheme, &secret, &body, Some(&id), ts).unwrap() {
            map.append(n, v);
        }
        let v = Verifier::new(scheme, &[b"other".as_slice(), &secret], Duration::from_secs(1)).unwrap();
        let got = v.verify(&map, &body, at(ts));
        // The only way "other" can match is if it equals the secret.
        prop_assert!(got.is_ok(), "{:?}", got);
    }
}

// ------------------------------------------- found by fuzzing (fuzz/README.md)

/// What the `signature_custom` fuzz target checks of a valid scheme: what it
/// signs, it verifies.
fn assert_round_trip(custom: &Custom) {
    let scheme = Scheme::Custom(Box::new(custom.clone()));
    let mut map = HeaderMap::new();
    for (n, v) in sign(
        &scheme,
        b"custom-secret",
        br#"{"id":"evt_0"}"#,
        Some("evt_1"),
        NOW,
    )
    .unwrap()
    {
        map.append(n, v);
    }
    let got = verifier(scheme, &["custom-secret"]).verify(&map, br#"{"id":"evt_0"}"#, at(NOW));
    assert!(got.is_ok(), "{custom:?}: {got:?}");
}

/// F1a (fuzz/signature_custom): a prefix with non-ASCII characters passed
/// `validate` (`HeaderValue` accepts obs-text), but `verify` reads the header
/// as text, so every request signed that way was `Malformed`.
#[test]
fn fuzz_f1a_custom_prefix_must_be_ascii() {
    // The crashing input, as the fuzz target built it.
    let crashing = Custom {
        header: "x-sig".into(),
        prefix: Some("\u{fffd}v0=".into()),
        encoding: Encoding::Hex,
        algorithm: Algorithm::Sha256,
        signed_content: "hex\u{7} sestamp}|{body}".into(),
        id_header: Some("X-My-Id".into()),
        timestamp_header: Some("X-My-Ts".into()),
    };
    let err = crashing.validate().unwrap_err();
    assert!(err.starts_with("prefix:"), "{err}");
    for prefix in ["é=", "v1=\u{a0}", "sha256=\u{80}"] {
        let custom = Custom {
            prefix: Some(prefix.into()),
            ..custom_base()
        };
        assert!(custom.validate().unwrap_err().starts_with("prefix:"));
    }
    // Inner spaces and tabs are text and still allowed.
    let custom = Custom {
        prefix: Some("v1 =\t".trim_end().into()),
        ..custom_base()
    };
    custom.validate().unwrap();
    assert_round_trip(&custom);
}

/// F1b (fuzz/signature_custom): `timestamp_header` naming the same header as
/// `id_header` (or either naming the signature header, in any case) passed
/// `validate`, but `sign` then sends two values in one header and `verify`
/// refuses a repeated id or timestamp header as `Malformed`: such a scheme
/// could never verify.
#[test]
fn fuzz_f1b_custom_headers_must_be_distinct() {
    // The crashing input, as the fuzz target built it.
    let crashing = Custom {
        header: "X-My-Sig".into(),
        prefix: Some("v1=".into()),
        encoding: Encoding::Hex,
        algorithm: Algorithm::Sha256,
        signed_content: "25h1{id}|{timestamp}|{body}".into(),
        id_header: Some("X-My-Id".into()),
        timestamp_header: Some("X-My-Id".into()),
    };
    let cases = [
        (crashing.clone(), "timestamp_header:"),
        (
            Custom {
                timestamp_header: Some("x-my-id".into()),
                ..crashing.clone()
            },
            "timestamp_header:",
        ),
        (
            Custom {
                id_header: Some("x-my-sig".into()),
                ..crashing.clone()
            },
            "id_header:",
        ),
        (
            Custom {
                timestamp_header: Some("X-MY-SIG".into()),
                ..crashing.clone()
            },
            "timestamp_header:",
        ),
    ];
    for (custom, field) in cases {
        let err = custom.validate().unwrap_err();
        assert!(err.starts_with(field), "{err:?} should start with {field}");
        let scheme = Scheme::Custom(Box::new(custom));
        assert!(sign(&scheme, b"k", b"", Some("i"), NOW).is_err());
    }
    // Distinct headers: the same scheme signs and verifies.
    let fixed = Custom {
        timestamp_header: Some("X-My-Ts".into()),
        ..crashing
    };
    fixed.validate().unwrap();
    assert_round_trip(&fixed);
}

// ------------------------------------------------------ validity windows

#[test]
fn secrets_verify_only_inside_their_window() {
    let scheme = preset(Preset::Stripe);
    let map = signed(&scheme, OTHER, NOW);
    let secs = |s: i64| Some(at(s));
    let v = |windows: &[Window], now: i64| {
        verifier(scheme.clone(), &[SECRET, OTHER])
            .with_windows(windows)
            .verify(&map, BODY, at(now))
    };
    // No window: always valid; the index names the secret that verified.
    assert_eq!(v(&[], NOW).map(|v| v.key_index), Ok(1));
    let old = Window {
        not_before: None,
        not_after: secs(NOW - 1),
    };
    // Past not_after: the old secret no longer verifies, even though the
    // request's own timestamp is fine.
    assert_eq!(
        v(&[Window::default(), old], NOW),
        Err(VerifyError::Mismatch)
    );
    // At not_after exactly it still does (both ends are inclusive).
    assert_eq!(
        v(&[Window::default(), old], NOW - 1).map(|v| v.key_index),
        Ok(1)
    );
    let future = Window {
        not_before: secs(NOW + 1),
        not_after: None,
    };
    assert_eq!(
        v(&[Window::default(), future], NOW),
        Err(VerifyError::Mismatch)
    );
    assert!(v(&[Window::default(), future], NOW + 1).is_ok());
    // The current secret is unaffected by the other's window.
    let map0 = signed(&scheme, SECRET, NOW);
    let got = verifier(scheme.clone(), &[SECRET, OTHER])
        .with_windows(&[Window::default(), old])
        .verify(&map0, BODY, at(NOW));
    assert_eq!(got.map(|v| v.key_index), Ok(0));
    // Every scheme honours the window (GitLab's token included).
    for scheme in all_schemes() {
        let map = signed(&scheme, SECRET, NOW);
        let expired = Window {
            not_before: None,
            not_after: secs(NOW - 600),
        };
        let got = verifier(scheme.clone(), &[SECRET])
            .with_windows(&[expired])
            .verify(&map, BODY, at(NOW));
        assert_eq!(got, Err(VerifyError::Mismatch), "{scheme:?}");
    }
}

#[test]
fn url_signing_presets_sign_the_configured_url() {
    for p in [Preset::Square, Preset::Hubspot, Preset::Twilio] {
        let scheme = preset(p);
        assert!(scheme.signs_url());
        let url = "https://public.example.com/hooks/x";
        let mut map = HeaderMap::new();
        for (n, v) in sign_url(&scheme, SECRET.as_bytes(), BODY, None, NOW, url).unwrap() {
            map.append(n, v);
        }
        let v = |url: &str| {
            verifier(scheme.clone(), &[SECRET])
                .with_signed_url(url)
                .verify(&map, BODY, at(NOW))
        };
        assert!(v(url).is_ok(), "{}", p.name());
        for other in [
            "",
            "http://public.example.com/hooks/x",
            "https://internal:8080/hooks/x",
        ] {
            assert_eq!(v(other), Err(VerifyError::Mismatch), "{} {other}", p.name());
        }
    }
    let unsigned: Vec<&str> = Preset::ALL
        .iter()
        .filter(|p| !preset(**p).signs_url())
        .map(|p| p.name())
        .collect();
    assert_eq!(unsigned.len(), Preset::ALL.len() - 3);
}

// ------------------------------------------------- Postmark (basic auth)

#[test]
fn postmark_basic_auth() {
    let scheme = preset(Preset::Postmark);
    let secret = "hooks:correct horse";
    let signed = sign_map(&scheme, secret, b"{}", None, NOW);
    assert_eq!(
        signed["authorization"],
        "Basic aG9va3M6Y29ycmVjdCBob3JzZQ=="
    );
    let ok = |value: &str| {
        verifier(scheme.clone(), &["other:pw", secret]).verify(
            &headers(&[("authorization", value)]),
            b"anything",
            at(NOW),
        )
    };
    assert_eq!(
        ok("Basic aG9va3M6Y29ycmVjdCBob3JzZQ==").unwrap().key_index,
        1
    );
    // The scheme name is case-insensitive; padding is optional.
    assert!(ok("basic aG9va3M6Y29ycmVjdCBob3JzZQ").is_ok());
    assert!(ok("BASIC   aG9va3M6Y29ycmVjdCBob3JzZQ==").is_ok());
    assert_eq!(
        ok("Basic aG9va3M6d3Jvbmc="),
        Err(VerifyError::Mismatch),
        "hooks:wrong"
    );
    for bad in [
        "Bearer aG9va3M6Y29ycmVjdCBob3JzZQ==",
        "Basic",
        "Basic ",
        "Basic !!!",
        "aG9va3M6Y29ycmVjdCBob3JzZQ==",
    ] {
        assert_eq!(ok(bad), Err(VerifyError::Malformed), "{bad}");
    }
    assert_eq!(
        verifier(scheme, &[secret]).verify(&HeaderMap::new(), b"", at(NOW)),
        Err(VerifyError::Missing)
    );
}

// ------------------------------------------------- Mailgun (signature in the body)

/// A Mailgun JSON body signed at `ts` with `secret` and token `ID`.
fn mailgun_body(secret: &str, ts: i64) -> Vec<u8> {
    let body = br#"{"event-data":{"id":"ev_1","event":"delivered"}}"#;
    sign_request(
        &preset(Preset::Mailgun),
        secret.as_bytes(),
        body,
        Some(ID),
        ts,
        "",
    )
    .unwrap()
    .body
    .unwrap()
}

fn mailgun_verify(body: &[u8]) -> Result<Verified, VerifyError> {
    verifier(preset(Preset::Mailgun), &[OTHER, SECRET]).verify(&HeaderMap::new(), body, at(NOW))
}

#[test]
fn mailgun_json_round_trip_and_negatives() {
    let body = mailgun_body(SECRET, NOW);
    let v = mailgun_verify(&body).unwrap();
    assert_eq!((v.key_index, v.timestamp), (1, Some(NOW)));
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["event-data"]["id"], "ev_1", "the event is kept");
    assert_eq!(doc["signature"]["token"], ID);

    assert_eq!(
        mailgun_verify(&mailgun_body("a-third-secret", NOW)),
        Err(VerifyError::Mismatch)
    );
    for ts in [NOW - 301, NOW + 301] {
        assert_eq!(
            mailgun_verify(&mailgun_body(SECRET, ts)),
            Err(VerifyError::TimestampOutOfTolerance)
        );
    }
    // A token or timestamp changed after signing.
    let text = String::from_utf8(body.clone()).unwrap();
    let other_token = text.replace(ID, "msg_2");
    assert_eq!(
        mailgun_verify(other_token.as_bytes()),
        Err(VerifyError::Mismatch)
    );
    let other_ts = text.replace(&NOW.to_string(), &(NOW + 1).to_string());
    assert_eq!(
        mailgun_verify(other_ts.as_bytes()),
        Err(VerifyError::Mismatch)
    );
    // A number timestamp is read as its decimal text.
    let numeric = text.replace(&format!("\"{NOW}\""), &NOW.to_string());
    assert_ne!(numeric, text);
    assert!(mailgun_verify(numeric.as_bytes()).is_ok());

    for (missing, why) in [
        (&b""[..], "empty"),
        (br#"{"event-data":{}}"#, "no signature member"),
        (b"event=delivered", "a form without the fields"),
        (b"\x00\xff", "binary"),
    ] {
        assert_eq!(mailgun_verify(missing), Err(VerifyError::Missing), "{why}");
    }
    for (malformed, why) in [
        (&br#"{"signature":"x"}"#[..], "signature not an object"),
        (
            br#"{"signature":{"timestamp":"1","token":"t"}}"#,
            "no signature field",
        ),
        (
            br#"{"signature":{"timestamp":"1","token":5,"signature":"ab"}}"#,
            "token not text",
        ),
        (
            br#"{"signature":{"timestamp":"x","token":"t","signature":"ab"}}"#,
            "timestamp not digits",
        ),
        (
            br#"{"signature":{"timestamp":"1","token":"t","signature":"zz"}}"#,
            "signature not hex",
        ),
        (br#"{"signature":"#, "truncated JSON"),
        (b"timestamp=1&token=t", "form without signature"),
        (
            b"timestamp=1&token=t&signature=ab&signature=cd",
            "repeated field",
        ),
    ] {
        assert_eq!(
            mailgun_verify(malformed),
            Err(VerifyError::Malformed),
            "{why}"
        );
    }
}

#[test]
fn mailgun_form_round_trip() {
    let scheme = preset(Preset::Mailgun);
    // A form that already carries stale fields: they are replaced, the
    // rest is kept.
    let body = b"event=delivered&recipient=a%40example.com&token=old&signature=00";
    let signed = sign_request(&scheme, SECRET.as_bytes(), body, Some("tok_1"), NOW, "").unwrap();
    assert!(signed.headers.is_empty());
    let signed = String::from_utf8(signed.body.unwrap()).unwrap();
    assert!(
        signed.starts_with("event=delivered&recipient=a%40example.com&timestamp="),
        "{signed}"
    );
    assert!(mailgun_verify(signed.as_bytes()).is_ok(), "{signed}");
    let tampered = signed.replace("tok_1", "tok_2");
    assert_eq!(
        mailgun_verify(tampered.as_bytes()),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn mailgun_cannot_sign_into_headers() {
    let scheme = preset(Preset::Mailgun);
    assert!(scheme.signs_in_body());
    assert!(scheme.uses_timestamp());
    assert_eq!(
        sign(&scheme, b"k", b"{}", Some("t"), NOW),
        Err(SignError::InBody("mailgun"))
    );
    assert_eq!(
        sign_request(&scheme, b"k", b"{}", None, NOW, ""),
        Err(SignError::IdRequired("mailgun"))
    );
    for not_object in [&b"{oops"[..], b"  {\"a\":", b"{}[]"] {
        assert!(matches!(
            sign_request(&scheme, b"k", not_object, Some("t"), NOW, ""),
            Err(SignError::Invalid(_))
        ));
    }
    assert!(!preset(Preset::Github).signs_in_body());
}

proptest! {
    #[test]
    fn mailgun_round_trips_any_form_or_object(
        pairs in proptest::collection::vec(("[a-z%&=+]{0,8}", "[ -~]{0,12}"), 0..6),
        json in any::<bool>(),
        token in "[A-Za-z0-9]{1,50}",
        ts in 0i64..=4_000_000_000,
    ) {
        let scheme = preset(Preset::Mailgun);
        let body = if json {
            let map: serde_json::Map<String, serde_json::Value> =
                pairs.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
            serde_json::to_vec(&map).unwrap()
        } else {
            pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&").into_bytes()
        };
        let signed = sign_request(&scheme, SECRET.as_bytes(), &body, Some(&token), ts, "").unwrap();
        let got = verifier(scheme, &[SECRET]).verify(&HeaderMap::new(), &signed.body.unwrap(), at(ts));
        prop_assert_eq!(got.map(|v| v.timestamp), Ok(Some(ts)));
    }

    #[test]
    fn body_signature_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse::body_signature(&body);
        let _ = parse::basic_credentials(&body);
        let _ = mailgun_verify(&body);
    }
}

/// The keyed states give the MAC `crypto::mac` computes from the key bytes,
/// for every algorithm, for short keys and for keys longer than a block
/// (which HMAC hashes first), and a tag holds the whole value.
#[test]
fn keyed_macs_equal_macs_from_the_key() {
    let parts: [&[u8]; 3] = [b"v0:", b"1700000000:", BODY];
    for key in [&b"k"[..], SECRET.as_bytes(), &[7u8; 200][..]] {
        let keyed = crypto::MacKeys::new(key);
        for algorithm in [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512] {
            let want = crypto::mac(algorithm, key, &parts);
            let got = keyed.mac(algorithm, &parts);
            assert_eq!(got.as_ref(), want.as_slice());
            // The state is copied, not used up: a second MAC is the same.
            assert_eq!(keyed.mac(algorithm, &parts).as_ref(), want.as_slice());
        }
    }
    assert!(crypto::Tag::EMPTY.as_ref().is_empty());
}

/// Which keys are in their window is worked out on the stack for up to 8
/// keys and in a vector past that: both verify with the right key index
/// and honour the windows.
#[test]
fn many_secrets_verify_with_their_index_and_window() {
    let scheme = preset(Preset::Stripe);
    for count in [1usize, 8, 9, 12] {
        let secrets: Vec<String> = (0..count).map(|i| format!("secret-number-{i}")).collect();
        let names: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let last = count - 1;
        let map = signed(&scheme, names[last], NOW);
        let got = verifier(scheme.clone(), &names).verify(&map, BODY, at(NOW));
        assert_eq!(got.map(|v| v.key_index), Ok(last), "{count} secrets");
        let mut windows = vec![Window::default(); count];
        windows[last] = Window {
            not_before: None,
            not_after: Some(at(NOW - 1)),
        };
        let got = verifier(scheme.clone(), &names)
            .with_windows(&windows)
            .verify(&map, BODY, at(NOW));
        assert_eq!(got, Err(VerifyError::Mismatch), "{count} secrets");
    }
}

/// The word-at-a-time constant-time compare: equal slices of every length
/// from 0 to 70 (whole words, a remainder, both) are equal; a change in
/// any one byte, in a word or in the remainder, or a different length,
/// is not.
#[test]
fn the_constant_time_compare_sees_every_byte() {
    let a: Vec<u8> = (0..70u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    for len in 0..=a.len() {
        let x = &a[..len];
        assert!(bool::from(crypto::ct_eq_bytes(x, x)), "{len}");
        for at in 0..len {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut y = x.to_vec();
                y[at] ^= flip;
                assert!(!bool::from(crypto::ct_eq_bytes(x, &y)), "{len} {at} {flip}");
            }
        }
        if len > 0 {
            assert!(!bool::from(crypto::ct_eq_bytes(x, &x[..len - 1])));
        }
    }
}
