//! Known-good vectors. Each either comes from the provider's documentation or
//! official library (cited), or, where the provider publishes none, was
//! computed from the documented algorithm with Python's `hmac` module (said
//! so; those pin our construction of the signed bytes and header layout
//! against an independent implementation, not against the provider).
//!
//! Every vector is checked both ways: `verify` accepts it at its own
//! timestamp, and `sign` reproduces the exact header values.

use base64::Engine as _;

use super::tests::{at, headers, sign_map, verifier};
use super::*;

/// Verifies `pairs` at `now` and checks that `sign` emits the same values.
fn check_vector(
    preset: Preset,
    secret: &str,
    body: &[u8],
    id: Option<&str>,
    ts: i64,
    pairs: &[(&str, &str)],
) -> Verified {
    let verified = verifier(Scheme::Preset(preset), &[secret])
        .verify(&headers(pairs), body, at(ts))
        .unwrap_or_else(|e| panic!("{}: vector rejected: {e:?}", preset.name()));
    let signed = sign_map(&Scheme::Preset(preset), secret, body, id, ts);
    for (name, value) in pairs {
        assert_eq!(
            signed.get(*name).map(String::as_str),
            Some(*value),
            "{}: sign() differs on {name}",
            preset.name()
        );
    }
    verified
}

// Standard Webhooks / Svix reference vector. Source: svix-libs Go test
// `go/webhook_test.go` ("valid signature is valid",
// github.com/svixhq/svix-libs), reused verbatim by the Standard Webhooks
// libraries. The Go test passes the secret without `whsec_` (svix always
// base64-decodes); our contract decodes only `whsec_` secrets, so the prefixed
// form is used here.
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_TS: i64 = 1_614_265_330;
const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

#[test]
fn standard_webhooks_reference_vector() {
    let pairs = [
        ("webhook-id", SW_ID),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", SW_SIG),
    ];
    let v = check_vector(
        Preset::StandardWebhooks,
        SW_SECRET,
        SW_BODY,
        Some(SW_ID),
        SW_TS,
        &pairs,
    );
    assert_eq!(v.timestamp, Some(SW_TS));
    // Same vector, one byte of body changed: the Go test's "invalid signature".
    let err = verifier(Scheme::Preset(Preset::StandardWebhooks), &[SW_SECRET]).verify(
        &headers(&pairs),
        br#"{"test": 2432232315}"#,
        at(SW_TS),
    );
    assert_eq!(err, Err(VerifyError::Mismatch));
}

#[test]
fn standard_webhooks_rust_library_vector() {
    // Source: standard-webhooks/standard-webhooks `libraries/rust/src/lib.rs`,
    // `test_sign`.
    let body = br#"{"email":"test@example.com","username":"test_user"}"#;
    let id = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    check_vector(
        Preset::StandardWebhooks,
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        body,
        Some(id),
        1_649_367_553,
        &[
            ("webhook-id", id),
            ("webhook-timestamp", "1649367553"),
            (
                "webhook-signature",
                "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
            ),
        ],
    );
}

#[test]
fn svix_reference_vector() {
    // Source: as `standard_webhooks_reference_vector`, with Svix's header names
    // exactly as in the Go test.
    let v = check_vector(
        Preset::Svix,
        SW_SECRET,
        SW_BODY,
        Some(SW_ID),
        SW_TS,
        &[
            ("svix-id", SW_ID),
            ("svix-timestamp", "1614265330"),
            ("svix-signature", SW_SIG),
        ],
    );
    assert_eq!(v.timestamp, Some(SW_TS));
}

#[test]
fn github_docs_vector() {
    // Source: docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    // ("Testing the webhook payload validation").
    check_vector(
        Preset::Github,
        "It's a Secret to Everybody",
        b"Hello, World!",
        None,
        0,
        &[(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )],
    );
}

#[test]
fn slack_docs_vector() {
    // Source: api.slack.com/authentication/verifying-requests-from-slack
    // (worked example, "signing secret 8f742231b10e8888abcd99yyyzzz85a5").
    let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let v = check_vector(
        Preset::Slack,
        "8f742231b10e8888abcd99yyyzzz85a5",
        body,
        None,
        1_531_420_618,
        &[
            ("x-slack-request-timestamp", "1531420618"),
            (
                "x-slack-signature",
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            ),
        ],
    );
    assert_eq!(v.timestamp, Some(1_531_420_618));
}

#[test]
fn stripe_computed_vector() {
    // stripe-go's `webhook/client_test.go` signs with `time.Now()`, so it has
    // no fixed vector. Secret (`whsec_test_secret`, used verbatim) and event id
    // are stripe-go's test fixtures; the signature was computed from Stripe's
    // documented algorithm, HMAC-SHA256(secret, "<t>.<body>"), with Python
    // `hmac` (cross-check).
    check_vector(
        Preset::Stripe,
        "whsec_test_secret",
        br#"{"id":"evt_test_webhook","object":"event"}"#,
        None,
        1_700_000_000,
        &[(
            "stripe-signature",
            "t=1700000000,v1=d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990",
        )],
    );
}

// The vectors below: the provider publishes no test vector; each was computed
// from the documented algorithm with Python's `hmac` module
// (`hmac.new(secret, content, hashlib.sha256).hexdigest()` / base64).

#[test]
fn sigsentry_computed_vector() {
    check_vector(
        Preset::Sigsentry,
        "sigsentry-secret",
        br#"{"analysisId":"an_42","verdict":"ok"}"#,
        None,
        0,
        &[(
            "x-sigsentry-signature",
            "sha256=4caf1ed790f29231201b06b76772f73df10f59b228d7a8043e5dd87167ff73e0",
        )],
    );
}

#[test]
fn statussentry_computed_vector() {
    check_vector(
        Preset::Statussentry,
        "statussentry-secret",
        br#"{"id":"chk_123","status":"down"}"#,
        None,
        1_700_000_000,
        &[(
            "x-statussentry-signature",
            "t=1700000000,v1=110e88a8d8a4d5c4960f6e3f652a054d258c33e81c337746d2847c04d9ea2702",
        )],
    );
}

#[test]
fn sentry_computed_vector() {
    check_vector(
        Preset::Sentry,
        "sentry-client-secret",
        br#"{"action":"created","data":{}}"#,
        Some("req-1"),
        1_700_000_000,
        &[
            (
                "sentry-hook-signature",
                "b10510cd905833559149fd3a96f900dd812f55c0b58d2570a5892de6d37d9865",
            ),
            ("sentry-hook-timestamp", "1700000000"),
            ("request-id", "req-1"),
        ],
    );
}

#[test]
fn zoom_computed_vector() {
    check_vector(
        Preset::Zoom,
        "zoom-secret-token",
        br#"{"event":"meeting.started","payload":{}}"#,
        None,
        1_700_000_000,
        &[
            (
                "x-zm-signature",
                "v0=c79071935bf4fc1bf06006c9850279ce805d8e92fe5458af4ca91eb06e0174f5",
            ),
            ("x-zm-request-timestamp", "1700000000"),
        ],
    );
}

#[test]
fn paddle_computed_vector() {
    // Timestamp from the example header in Paddle's docs
    // (developer.paddle.com/webhooks/signature-verification); the docs do not
    // publish the secret behind their example `h1`, so the signature is ours.
    check_vector(
        Preset::Paddle,
        "pdl_ntfset_01_secret",
        br#"{"event_id":"evt_01","event_type":"transaction.completed"}"#,
        None,
        1_671_552_777,
        &[(
            "paddle-signature",
            "ts=1671552777;h1=092381b2e74e227b6dbe01e4aabbc7f2dd668de99559ca962eaeb144649f2d00",
        )],
    );
}

#[test]
fn twitch_computed_vector() {
    // Twitch sends nanosecond RFC 3339 timestamps; the signed content is the
    // header text as sent. `sign` emits whole seconds, so only `verify` is
    // checked against this vector.
    let body = br#"{"subscription":{"type":"channel.follow"}}"#;
    let pairs = [
        (
            "twitch-eventsub-message-id",
            "e76c6bd4-55c9-4987-8304-da1588d8988b",
        ),
        (
            "twitch-eventsub-message-timestamp",
            "2019-11-16T10:11:12.634234626Z",
        ),
        (
            "twitch-eventsub-message-signature",
            "sha256=e4d54e54181869ed5509423302eabba6e82cdec2151b012ee5ac6d6df1f8004b",
        ),
    ];
    let ts = 1_573_899_072; // 2019-11-16T10:11:12Z
    let v = verifier(Scheme::Preset(Preset::Twitch), &["twitch-secret-0123"])
        .verify(&headers(&pairs), body, at(ts))
        .expect("twitch vector");
    assert_eq!(v.timestamp, Some(ts));
}

#[test]
fn pagerduty_computed_vector() {
    check_vector(
        Preset::Pagerduty,
        "pagerduty-secret",
        br#"{"event":{"id":"01ABC","event_type":"incident.triggered"}}"#,
        None,
        0,
        &[(
            "x-pagerduty-signature",
            "v1=2103e19ecf0952325c3b1f182777ab07b8798ffc0d4cb07997ca483244cb25c1",
        )],
    );
}

#[test]
fn shopify_computed_vector() {
    check_vector(
        Preset::Shopify,
        "shopify-secret",
        br#"{"id":820982911946154508}"#,
        Some("b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),
        0,
        &[
            (
                "x-shopify-hmac-sha256",
                "5A3oQQfW+WMeNQwhapvpG0xvKI5Ip4Bp9W/9ifwwyGk=",
            ),
            (
                "x-shopify-webhook-id",
                "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
            ),
        ],
    );
}

#[test]
fn intercom_computed_vector() {
    // HMAC-SHA1, per Intercom's docs.
    check_vector(
        Preset::Intercom,
        "intercom-client-secret",
        br#"{"type":"notification_event","topic":"ping"}"#,
        None,
        0,
        &[(
            "x-hub-signature",
            "sha1=9e8917a4fdd555230bacda28c913e3e456660272",
        )],
    );
}

#[test]
fn linear_computed_vector() {
    let v = check_vector(
        Preset::Linear,
        "lin_wh_secret",
        br#"{"action":"create","type":"Issue","webhookTimestamp":1700000000000}"#,
        None,
        1_700_000_000,
        &[(
            "linear-signature",
            "91e919dc0fd99df1cae12efef1ca08b082cfa523f101b572ec14ed98863fdf35",
        )],
    );
    assert_eq!(v.timestamp, Some(1_700_000_000));
}

#[test]
fn custom_sha512_base64url_computed_vector() {
    let custom = Custom {
        header: "X-My-Sig".into(),
        prefix: Some("v1=".into()),
        encoding: Encoding::Base64url,
        algorithm: Algorithm::Sha512,
        signed_content: "{id}|{timestamp}|{body}".into(),
        id_header: Some("X-My-Id".into()),
        timestamp_header: Some("X-My-Ts".into()),
    };
    let pairs = [
        ("x-my-id", "evt_1"),
        ("x-my-ts", "1700000000"),
        (
            "x-my-sig",
            "v1=x41sxCaX0lqvD2f9Okv5RwaTtW6xYLdXeV9ByVDlVcrxQHvWc94iih_-gN1udZBwhCjykDwVhx-EFFnFZCSkdQ",
        ),
    ];
    let scheme = Scheme::Custom(Box::new(custom));
    let body = br#"{"a":1}"#;
    verifier(scheme.clone(), &["custom-secret"])
        .verify(&headers(&pairs), body, at(1_700_000_000))
        .expect("custom vector");
    let signed = sign_map(&scheme, "custom-secret", body, Some("evt_1"), 1_700_000_000);
    for (name, value) in pairs {
        assert_eq!(signed[name], value);
    }
}

// ------------------------------------------------------- issue 12 presets

#[test]
fn mux_library_vectors() {
    // Source: muxinc/mux-node-sdk `tests/api-resources/webhooks.test.ts`
    // (secret `SuperSecret123`, `t=1565125718`, "should pass for valid
    // signature" and "unwrap_times").
    let v = check_vector(
        Preset::Mux,
        "SuperSecret123",
        br#"{"test":"body"}"#,
        None,
        1_565_125_718,
        &[(
            "mux-signature",
            "t=1565125718,v1=854ece4c22acef7c66b57d4e504153bc512595e8e9c772ece2a68150548c19a7",
        )],
    );
    assert_eq!(v.timestamp, Some(1_565_125_718));
    check_vector(
        Preset::Mux,
        "SuperSecret123",
        br#"{"test":{"nested":{"nanos":718234, "seconds":1691711005}}}"#,
        None,
        1_565_125_718,
        &[(
            "mux-signature",
            "t=1565125718,v1=bd315c24bce1c2b8ad325696f26530c8ef7d7d830afb7c1381903705d04607be",
        )],
    );
    let mux = verifier(Scheme::Preset(Preset::Mux), &["SuperSecret123"]);
    let hash = "854ece4c22acef7c66b57d4e504153bc512595e8e9c772ece2a68150548c19a7";
    let check = |value: &str, now: i64| {
        mux.verify(
            &headers(&[("mux-signature", value)]),
            br#"{"test":"body"}"#,
            at(now),
        )
    };
    // Same test file: "multiple signatures", "different version",
    // "multiple signatures with different version", "timestamp is missing",
    // "timestamp outside threshold" (6 minutes; our default tolerance is 5).
    let ok = |r: Result<Verified, VerifyError>| assert!(r.is_ok(), "{r:?}");
    ok(check(
        &format!("t=1565125718,v1=invalid-sig,v1={hash}"),
        1_565_125_718,
    ));
    ok(check(
        &format!("t=1565125718,v2={hash},v1={hash}"),
        1_565_125_718,
    ));
    assert_eq!(
        check(&format!("t=1565125718,v2={hash}"), 1_565_125_718),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(check(hash, 1_565_125_718), Err(VerifyError::Malformed));
    assert_eq!(
        check(&format!("t=1565125718,v1={hash}"), 1_565_125_718 + 360),
        Err(VerifyError::TimestampOutOfTolerance)
    );
}

// The vectors below: the provider publishes no test vector with its secret;
// each was computed from the provider's documented algorithm with Python's
// `hmac` module (`hmac.new(secret, content, sha256|sha1)`, hex or base64).

#[test]
fn meta_and_whatsapp_computed_vectors() {
    // developers.facebook.com/docs/graph-api/webhooks/getting-started
    // ("Validate Payloads"): HMAC-SHA256 of the body with the app secret,
    // `X-Hub-Signature-256: sha256=<hex>`.
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[]}]}"#;
    check_vector(
        Preset::Meta,
        "meta-app-secret",
        body,
        None,
        0,
        &[(
            "x-hub-signature-256",
            "sha256=bc7534abc9c8b038340610a0cd72a2ccd248781bd5d0cce659eee693cca7f4aa",
        )],
    );
    check_vector(
        Preset::Whatsapp,
        "whatsapp-app-secret",
        body,
        None,
        0,
        &[(
            "x-hub-signature-256",
            "sha256=3a064d25abd870329970c74c80d22bd6891b1d82a56c2b0bb935d254839babf4",
        )],
    );
}

#[test]
fn typeform_computed_vector() {
    // developer.typeform.com/webhooks/secure-your-webhooks: HMAC-SHA256 of
    // the body, base64, `Typeform-Signature: sha256=<base64>`.
    check_vector(
        Preset::Typeform,
        "typeform-secret",
        br#"{"event_id":"01HXYZ","event_type":"form_response"}"#,
        None,
        0,
        &[(
            "typeform-signature",
            "sha256=amCNe+CrxmADuDn1mYGORdudo5Yi/6hboP41+0Stnbs=",
        )],
    );
}

#[test]
fn calendly_computed_vector() {
    // developer.calendly.com (webhook signatures): `Calendly-Webhook-Signature:
    // t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
    check_vector(
        Preset::Calendly,
        "calendly-signing-key",
        br#"{"event":"invitee.created","payload":{}}"#,
        None,
        1_700_000_000,
        &[(
            "calendly-webhook-signature",
            "t=1700000000,v1=af03a8a35c6a7254eb7fb53e0032cdf9829dbcffe7994ae4a5db767e1dbf8e61",
        )],
    );
}

#[test]
fn vercel_computed_vector() {
    // vercel.com/docs/observability/webhooks-overview (securing webhooks):
    // `x-vercel-signature: <hex HMAC-SHA1 of the body>`.
    check_vector(
        Preset::Vercel,
        "vercel-secret",
        br#"{"id":"evt_vercel_1","type":"deployment.created"}"#,
        None,
        0,
        &[(
            "x-vercel-signature",
            "4fe72bf2f18342fca497427ba37f510ea6cfb193",
        )],
    );
}

#[test]
fn clerk_and_resend_computed_vectors() {
    // Clerk and Resend send through Svix (clerk.com/docs/webhooks,
    // resend.com/docs/dashboard/webhooks/verify-webhooks-requests): the
    // Svix scheme with the `whsec_` secret of `SW_SECRET`.
    check_vector(
        Preset::Clerk,
        SW_SECRET,
        br#"{"type":"user.created","data":{"id":"user_1"}}"#,
        Some("msg_clerk_1"),
        1_700_000_000,
        &[
            ("svix-id", "msg_clerk_1"),
            ("svix-timestamp", "1700000000"),
            (
                "svix-signature",
                "v1,HhdGQRHK+5aV6G7F9AWnTsZfjDUxjjk7oWx0AXV5A24=",
            ),
        ],
    );
    check_vector(
        Preset::Resend,
        SW_SECRET,
        br#"{"type":"email.sent","data":{"email_id":"e_1"}}"#,
        Some("msg_resend_1"),
        1_700_000_000,
        &[
            ("svix-id", "msg_resend_1"),
            ("svix-timestamp", "1700000000"),
            (
                "svix-signature",
                "v1,MD81UKWw3mWPDis1kI9uUpJ2+j24YGFEB6BOzMIuVn8=",
            ),
        ],
    );
    // Svix's own reference vector verifies under both aliases.
    for p in [Preset::Clerk, Preset::Resend] {
        let pairs = [
            ("svix-id", SW_ID),
            ("svix-timestamp", "1614265330"),
            ("svix-signature", SW_SIG),
        ];
        verifier(Scheme::Preset(p), &[SW_SECRET])
            .verify(&headers(&pairs), SW_BODY, at(SW_TS))
            .unwrap_or_else(|e| panic!("{}: {e:?}", p.name()));
    }
}

#[test]
fn docusign_computed_vector() {
    // developers.docusign.com (Connect HMAC security): base64 HMAC-SHA256 of
    // the body in `X-DocuSign-Signature-1`.
    check_vector(
        Preset::Docusign,
        "docusign-hmac-key",
        br#"{"event":"envelope-completed","apiVersion":"v2.1"}"#,
        None,
        0,
        &[(
            "x-docusign-signature-1",
            "SYa6z31JRdSY5KYvKpXhLs7vLEt6LYMiozvLWh1rivc=",
        )],
    );
}

#[test]
fn lemon_squeezy_gitea_dropbox_computed_vectors() {
    // docs.lemonsqueezy.com/help/webhooks (signing requests), Gitea's webhook
    // docs (`X-Gitea-Signature`), Dropbox's webhook docs
    // (`X-Dropbox-Signature`): hex HMAC-SHA256 of the body, no prefix.
    check_vector(
        Preset::LemonSqueezy,
        "lemon-signing-secret",
        br#"{"meta":{"event_name":"order_created"},"data":{"id":"1"}}"#,
        None,
        0,
        &[(
            "x-signature",
            "7e6871d067943f8e536397110524cf67f72c23c54c56225956a7339d4283eaae",
        )],
    );
    check_vector(
        Preset::Gitea,
        "gitea-secret",
        br#"{"ref":"refs/heads/main","after":"abc"}"#,
        None,
        0,
        &[(
            "x-gitea-signature",
            "f0942913cec1c8b4581bf16d51fa7b194f91992c6d09d248bc54de82fb8e2b87",
        )],
    );
    check_vector(
        Preset::Dropbox,
        "dropbox-app-secret",
        br#"{"list_folder":{"accounts":["dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc"]}}"#,
        None,
        0,
        &[(
            "x-dropbox-signature",
            "24ae1721acc7afaa9662c95e7f61cf98f5d80647a5f95493ab3d1fad5275ae2d",
        )],
    );
}

/// `check_vector` for a scheme that signs the route's `signed_url`.
fn check_url_vector(
    preset: Preset,
    secret: &str,
    url: &str,
    body: &[u8],
    ts: i64,
    pairs: &[(&str, &str)],
) -> Verified {
    let scheme = Scheme::Preset(preset);
    assert!(scheme.signs_url());
    let verified = verifier(scheme.clone(), &[secret])
        .with_signed_url(url)
        .verify(&headers(pairs), body, at(ts))
        .unwrap_or_else(|e| panic!("{}: vector rejected: {e:?}", preset.name()));
    let signed = sign_url(&scheme, secret.as_bytes(), body, None, ts, url).unwrap();
    for (name, value) in pairs {
        let got = signed.iter().find(|(n, _)| n.as_str() == *name);
        assert_eq!(
            got.map(|(_, v)| v.to_str().unwrap()),
            Some(*value),
            "{}: sign_url() differs on {name}",
            preset.name()
        );
    }
    // Another URL (a proxy rewrote it, or the route names the wrong one).
    let err = verifier(scheme, &[secret])
        .with_signed_url(&format!("{url}x"))
        .verify(&headers(pairs), body, at(ts));
    assert_eq!(err, Err(VerifyError::Mismatch), "{}", preset.name());
    verified
}

#[test]
fn square_sdk_vector() {
    // Source: square/square-python-sdk `tests/utilities/test_webhooks_helper.py`
    // (REQUEST_BODY, SIGNATURE_HEADER, SIGNATURE_KEY, NOTIFICATION_URL), and
    // its negative cases: another URL, another key, another signature, one
    // changed date in the body.
    let body = br#"{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification","event_id":"ac3ac95b-f97d-458c-a6e6-18981597e05f","created_at":"2022-07-13T20:30:59.037339943Z","data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}"#;
    let url = "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9";
    let pairs = [(
        "x-square-hmacsha256-signature",
        "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4=",
    )];
    check_url_vector(
        Preset::Square,
        "Ibxx_5AKakO-3qeNVR61Dw",
        url,
        body,
        0,
        &pairs,
    );
    let square = |secret: &str, url: &str| {
        verifier(Scheme::Preset(Preset::Square), &[secret]).with_signed_url(url)
    };
    let mismatch = Err(VerifyError::Mismatch);
    assert_eq!(
        square(
            "Ibxx_5AKakO-3qeNVR61Dw",
            "https://webhook.site/79a4f3a-dcfa-49ee-bac5-9d0edad886b9"
        )
        .verify(&headers(&pairs), body, at(0)),
        mismatch
    );
    assert_eq!(
        square("MCmhFRxGX82xMwg5FsaoQA", url).verify(&headers(&pairs), body, at(0)),
        mismatch
    );
    assert_eq!(
        square("Ibxx_5AKakO-3qeNVR61Dw", url).verify(
            &headers(&[(
                "x-square-hmacsha256-signature",
                "1z2n3DEJJiUPKcPzQo1ftvbxGdw="
            )]),
            body,
            at(0)
        ),
        mismatch
    );
    let changed = String::from_utf8(body.to_vec())
        .unwrap()
        .replace("2022-07-13", "2022-06-13");
    assert_eq!(
        square("Ibxx_5AKakO-3qeNVR61Dw", url).verify(&headers(&pairs), changed.as_bytes(), at(0)),
        mismatch
    );
}

#[test]
fn hubspot_v3_computed_vector() {
    // developers.hubspot.com/docs/api/webhooks/validating-requests (v3):
    // base64 HMAC-SHA256 of method + URI + body + timestamp (ms) with the
    // app's client secret. Computed with Python `hmac`: HubSpot's node client
    // (`test/unit/signature.spec.ts`, "is valid v3") signs at `Date.now()`,
    // so it publishes no fixed v3 vector.
    let body = br#"[{"eventId":1,"subscriptionType":"contact.creation","portalId":62515}]"#;
    let pairs = [
        (
            "x-hubspot-signature-v3",
            "8uRs5XvT69dOT+rxrvAzioIkFtvTz7aT107dpOiUUMM=",
        ),
        ("x-hubspot-request-timestamp", "1700000000000"),
    ];
    let v = check_url_vector(
        Preset::Hubspot,
        "hubspot-client-secret",
        "https://hooks.example.com/hubspot?portal=62515",
        body,
        1_700_000_000,
        &pairs,
    );
    assert_eq!(v.timestamp, Some(1_700_000_000));
    // HubSpot asks receivers to reject timestamps older than 5 minutes.
    let late = verifier(Scheme::Preset(Preset::Hubspot), &["hubspot-client-secret"])
        .with_signed_url("https://hooks.example.com/hubspot?portal=62515")
        .verify(&headers(&pairs), body, at(1_700_000_000 + 301));
    assert_eq!(late, Err(VerifyError::TimestampOutOfTolerance));
}

// Standard Webhooks `v1a` (ed25519). The specification
// (standard-webhooks/standard-webhooks `spec/standard-webhooks.md`, "Signature
// scheme") defines `v1a,<base64 ed25519 signature>` of `<id>.<ts>.<body>` and
// the `whpk_` / `whsk_` serialisation, and shows an example header but
// publishes no key for it; the libraries have no asymmetric test vector. So
// the primitive is pinned with RFC 8032 §7.1 TEST 1, and the scheme with a
// signature computed by Python `cryptography` (Ed25519PrivateKey, seed
// 00 01 .. 1f) over the svix reference message above.
const SW_WHSK: &str = "whsk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const SW_WHSK_64: &str =
    "whsk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8DoQe/884Qvh1w3RjnS8CZZ+TWMJulDV8d3IZkElUxuA==";
const SW_WHPK: &str = "whpk_A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=";
const SW_V1A: &str =
    "v1a,yoUrgEkc12aGqm0n4Sydmdz55xJfTz4AsAgieHFjmkR7LJtqVCZOQYzvvHjI5kAey+r4iaBGxTFRrl2iBQxtDQ==";

#[test]
fn ed25519_rfc8032_test_1() {
    let public =
        hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a").unwrap();
    let signature = hex::decode(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    )
    .unwrap();
    let key = Key(public, KeyKind::Ed25519Public);
    let keys = [key.clone()];
    assert_eq!(
        crypto::first_ed25519_match(&keys, &[true], b"", std::slice::from_ref(&signature)),
        Some(0)
    );
    assert_eq!(
        crypto::first_ed25519_match(&keys, &[true], b"x", std::slice::from_ref(&signature)),
        None
    );
    // Outside its window a key is not tried.
    assert_eq!(
        crypto::first_ed25519_match(&keys, &[false], b"", &[signature]),
        None
    );
    let seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    let secret = format!("whsk_{}", parse::BASE64.encode(hex::decode(seed).unwrap()));
    let derived =
        Key::derive(&Scheme::Preset(Preset::StandardWebhooks), secret.as_bytes()).unwrap();
    assert_eq!(derived.0, key.0, "whsk_ derives the RFC's public key");
}

#[test]
fn standard_webhooks_v1a_vector() {
    let sw = Scheme::Preset(Preset::StandardWebhooks);
    let with = |signature: &str| {
        headers(&[
            ("webhook-id", SW_ID),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", signature),
        ])
    };
    // The public key, the secret key (both serialisations) verify it.
    for key in [SW_WHPK, SW_WHSK, SW_WHSK_64] {
        let v = verifier(sw.clone(), &[key])
            .verify(&with(SW_V1A), SW_BODY, at(SW_TS))
            .unwrap_or_else(|e| panic!("{key}: {e:?}"));
        assert_eq!(v.key_index, 0);
        // A tampered body fails.
        assert_eq!(
            verifier(sw.clone(), &[key]).verify(
                &with(SW_V1A),
                br#"{"test": 2432232315}"#,
                at(SW_TS)
            ),
            Err(VerifyError::Mismatch)
        );
    }
    // `sign` with the secret key reproduces it (ed25519 is deterministic).
    for secret in [SW_WHSK, SW_WHSK_64] {
        let signed = sign_map(&sw, secret, SW_BODY, Some(SW_ID), SW_TS);
        assert_eq!(signed["webhook-signature"], SW_V1A);
    }
    // The public key cannot sign.
    assert!(matches!(
        sign(&sw, SW_WHPK.as_bytes(), SW_BODY, Some(SW_ID), SW_TS),
        Err(SignError::Invalid(_))
    ));
    // The wrong public key (the RFC 8032 one) fails.
    let other = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    assert_eq!(
        verifier(sw.clone(), &[other]).verify(&with(SW_V1A), SW_BODY, at(SW_TS)),
        Err(VerifyError::Mismatch)
    );
    // `v1` and `v1a` in one header: either key verifies, and the index says
    // which secret matched.
    let both = format!("{SW_SIG} {SW_V1A}");
    let v = verifier(sw.clone(), &[SW_SECRET]).verify(&with(&both), SW_BODY, at(SW_TS));
    assert_eq!(v.map(|v| v.key_index), Ok(0));
    let v = verifier(sw.clone(), &[SW_WHPK]).verify(&with(&both), SW_BODY, at(SW_TS));
    assert_eq!(v.map(|v| v.key_index), Ok(0));
    let v =
        verifier(sw.clone(), &[other, SW_WHPK, SW_SECRET]).verify(&with(&both), SW_BODY, at(SW_TS));
    assert_eq!(v.map(|v| v.key_index), Ok(1));
    // Only a `v1a` entry and only an HMAC secret: nothing to compare.
    assert_eq!(
        verifier(sw.clone(), &[SW_SECRET]).verify(&with(SW_V1A), SW_BODY, at(SW_TS)),
        Err(VerifyError::Mismatch)
    );
    // Only a `v1` entry and only a public key: likewise.
    assert_eq!(
        verifier(sw.clone(), &[SW_WHPK]).verify(&with(SW_SIG), SW_BODY, at(SW_TS)),
        Err(VerifyError::Mismatch)
    );
    // A `v1a` of the wrong length is a mismatch; one that is not base64,
    // alone, is malformed.
    assert_eq!(
        verifier(sw.clone(), &[SW_WHPK]).verify(&with("v1a,AAAA"), SW_BODY, at(SW_TS)),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        verifier(sw.clone(), &[SW_WHPK]).verify(&with("v1a,***"), SW_BODY, at(SW_TS)),
        Err(VerifyError::Malformed)
    );
    // Bad keys are refused when the verifier is built.
    for bad in ["whpk_AAAA", "whpk_%%%", "whsk_AAAA", "whsk_"] {
        assert_eq!(
            Key::derive(&sw, bad.as_bytes()).unwrap_err(),
            KeyError::BadEd25519,
            "{bad}"
        );
    }
    // Other presets use `whpk_…` verbatim, as any other secret.
    assert_eq!(
        Key::derive(&Scheme::Preset(Preset::Svix), SW_WHPK.as_bytes())
            .unwrap()
            .0,
        SW_WHPK.as_bytes()
    );
    // Debug never shows key material.
    assert_eq!(
        format!("{:?}", Key::derive(&sw, SW_WHSK.as_bytes()).unwrap()),
        "[redacted]"
    );
}

#[test]
fn twilio_library_vectors() {
    // Source: twilio/twilio-python `tests/unit/test_request_validator.py`
    // (token "12345", uri "https://mycompany.com/myapp.php?foo=1&bar=2"):
    // `test_compute_signature`, `test_compute_signature_duplicate_multi_dict`
    // and `test_validation_of_body_succeeds`. The route's `signed_url` is the
    // URL without its query; the query is the request's own.
    let twilio = Scheme::Preset(Preset::Twilio);
    assert!(twilio.signs_url());
    let base = "https://mycompany.com/myapp.php";
    let v = verifier(twilio.clone(), &["12345"]).with_signed_url(base);
    let check = |body: &[u8], query: &str, sig: &str| {
        v.verify_request(
            &headers(&[("x-twilio-signature", sig)]),
            body,
            at(0),
            Some(query),
        )
    };
    let form = b"CallSid=CA1234567890ABCDE&Digits=1234&From=%2B14158675309&To=%2B18005551212&Caller=%2B14158675309";
    let sig = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
    check(form, "foo=1&bar=2", sig).expect("form vector");
    // `sign_url` with the URL as called reproduces it.
    let signed = sign_url(
        &twilio,
        b"12345",
        form,
        None,
        0,
        &format!("{base}?foo=1&bar=2"),
    )
    .unwrap();
    assert_eq!(signed[0].1.to_str().unwrap(), sig);
    // Repeated parameters: sorted by name, then value.
    let dup = b"Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234";
    check(dup, "foo=1&bar=2", "IK+Dwps556ElfBT0I3Rgjkr1wJU=").expect("duplicate-parameter vector");
    // JSON body: the URL carries the body's SHA-256, the form part is empty.
    let json = br#"{"property": "value", "boolean": true}"#;
    let query =
        "foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    let json_sig = "a9nBmqA0ju/hNViExpshrM61xv4=";
    check(json, query, json_sig).expect("JSON body vector");
    let signed = sign_url(&twilio, b"12345", json, None, 0, &format!("{base}?{query}")).unwrap();
    assert_eq!(signed[0].1.to_str().unwrap(), json_sig);

    // Negative cases: a changed parameter, a changed query, another token,
    // a JSON body that does not match its signed hash.
    let mismatch = Err(VerifyError::Mismatch);
    let changed = b"CallSid=CA1234567890ABCDE&Digits=1235&From=%2B14158675309&To=%2B18005551212&Caller=%2B14158675309";
    assert_eq!(check(changed, "foo=1&bar=2", sig), mismatch);
    assert_eq!(check(form, "foo=1&bar=3", sig), mismatch);
    assert_eq!(check(form, "", sig), mismatch);
    assert_eq!(
        verifier(twilio.clone(), &["54321"])
            .with_signed_url(base)
            .verify_request(
                &headers(&[("x-twilio-signature", sig)]),
                form,
                at(0),
                Some("foo=1&bar=2")
            ),
        mismatch
    );
    assert_eq!(
        check(
            br#"{"property": "other", "boolean": true}"#,
            query,
            json_sig
        ),
        mismatch
    );
    // Without the query the verifier cannot see what was signed.
    assert_eq!(
        v.verify(&headers(&[("x-twilio-signature", sig)]), form, at(0)),
        mismatch
    );
}

// Mailgun. The body is the example webhook of Mailgun's "Securing Webhooks"
// documentation (documentation.mailgun.com, user manual, Webhooks: its
// `signature` object: timestamp 1529006854, token a8ce0e…3de0); Mailgun
// publishes that example's signing key nowhere, so the signature was computed
// with Python's `hmac` over `timestamp + token` as the documentation's own
// Python sample does, with the key `key-mailgun-docs-example`.
#[test]
fn mailgun_computed_vector() {
    const KEY: &str = "key-mailgun-docs-example";
    const TS: i64 = 1_529_006_854;
    const TOKEN: &str = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0";
    const SIG: &str = "e7744d2cc372accf3c6092fc6afec9b0022c018f9a412af06e9048f5372fc38a";
    let body = format!(
        r#"{{"signature":{{"timestamp":"{TS}","token":"{TOKEN}","signature":"{SIG}"}},"event-data":{{"event":"opened","timestamp":1529006854.329574,"id":"DACSsAdVSeGpLid7TN03WA"}}}}"#
    );
    let scheme = Scheme::Preset(Preset::Mailgun);
    let v = verifier(scheme.clone(), &[KEY])
        .verify(&HeaderMap::new(), body.as_bytes(), at(TS))
        .unwrap();
    assert_eq!(v.timestamp, Some(TS));
    // The same fields as a legacy form post.
    let form = format!("timestamp={TS}&token={TOKEN}&signature={SIG}&event=opened");
    assert!(verifier(scheme.clone(), &[KEY])
        .verify(&HeaderMap::new(), form.as_bytes(), at(TS))
        .is_ok());
    // `sign_request` writes the same signature into the body.
    let signed = sign_request(
        &scheme,
        KEY.as_bytes(),
        br#"{"event-data":{"event":"opened"}}"#,
        Some(TOKEN),
        TS,
        "",
    )
    .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&signed.body.unwrap()).unwrap();
    assert_eq!(doc["signature"]["signature"], SIG);
    assert_eq!(doc["signature"]["timestamp"], TS.to_string());
}

// Postmark authenticates webhooks with HTTP basic auth (Postmark's webhook
// documentation: credentials in the webhook URL, `https://user:pass@…`).
// Vector: RFC 7617 §2's own example, user "Aladdin", password "open sesame".
#[test]
fn postmark_rfc7617_vector() {
    check_vector(
        Preset::Postmark,
        "Aladdin:open sesame",
        b"{\"RecordType\":\"Delivery\"}",
        None,
        0,
        &[("authorization", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")],
    );
}
