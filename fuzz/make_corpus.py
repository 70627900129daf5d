#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (committed).

Run from anywhere: `python3 fuzz/make_corpus.py`. Seeds are small and
meaningful: the signature headers of the known-good vectors in
src/signature/vectors.rs, the custom schemes of src/signature/tests.rs, dedup
keys of the presets, and sample requests for every route of the
request_path harness. The input formats are described in fuzz/src/lib.rs and
at the top of each target.
"""

import hashlib
import hmac
import os
import shutil
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def sig_input(preset, secrets, now, headers, body, tolerance=300, url="-", windows="-"):
    head = [preset, " ".join(secrets), f"{now} {tolerance}", url, windows]
    head += [f"{k}: {v}" for k, v in headers]
    return ("\n".join(head) + "\n\n").encode() + body


# ---------------------------------------------------------------- presets
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_BODY = b'{"test": 2432232314}'
SW_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)

PRESETS = [
    "standard-webhooks", "statussentry", "sigsentry", "sentry", "svix", "stripe", "github", "slack",
    "shopify", "pagerduty", "linear", "paddle", "zoom", "intercom", "twitch", "gitlab", "meta",
    "whatsapp", "typeform", "calendly", "mux", "vercel", "clerk", "resend", "docusign",
    "lemon-squeezy", "gitea", "dropbox", "square", "twilio", "hubspot", "mailgun", "postmark",
]
MG_KEY = "key-mailgun-docs-example"
MG_FIELDS = (
    '"timestamp":"1529006854","token":"a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0",'
    '"signature":"e7744d2cc372accf3c6092fc6afec9b0022c018f9a412af06e9048f5372fc38a"'
)
SW_WHSK = "whsk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
SW_WHPK = "whpk_A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
SW_V1A = "v1a,yoUrgEkc12aGqm0n4Sydmdz55xJfTz4AsAgieHFjmkR7LJtqVCZOQYzvvHjI5kAey+r4iaBGxTFRrl2iBQxtDQ=="

VECTORS = {
    "standard-webhooks": (
        [SW_SECRET], 1614265330,
        [("webhook-id", SW_ID), ("webhook-timestamp", "1614265330"), ("webhook-signature", SW_SIG)],
        SW_BODY,
    ),
    "standard-webhooks-rotation": (
        ["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", SW_SECRET], 1614265330,
        [("webhook-id", SW_ID), ("webhook-timestamp", "1614265330"),
         ("webhook-signature", "v1a,AAAA v1,bm90LWl0 " + SW_SIG)],
        SW_BODY,
    ),
    "svix": (
        [SW_SECRET], 1614265330,
        [("svix-id", SW_ID), ("svix-timestamp", "1614265330"), ("svix-signature", SW_SIG)],
        SW_BODY,
    ),
    "github": (
        ["It's a Secret to Everybody"], 0,
        [("x-hub-signature-256", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")],
        b"Hello, World!",
    ),
    "slack": (
        ["8f742231b10e8888abcd99yyyzzz85a5"], 1531420618,
        [("x-slack-request-timestamp", "1531420618"),
         ("x-slack-signature", "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503")],
        SLACK_BODY,
    ),
    "stripe": (
        ["whsec_test_secret"], 1700000000,
        [("stripe-signature", "t=1700000000,v1=d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990")],
        b'{"id":"evt_test_webhook","object":"event"}',
    ),
    "stripe-v0-and-two-instances": (
        ["whsec_test_secret"], 1700000000,
        [("stripe-signature", "t=1700000000, v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"),
         ("stripe-signature", "t=1700000000,v1=d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990")],
        b'{"id":"evt_test_webhook","object":"event"}',
    ),
    "sigsentry": (
        ["sigsentry-secret"], 0,
        [("x-sigsentry-signature", "sha256=4caf1ed790f29231201b06b76772f73df10f59b228d7a8043e5dd87167ff73e0")],
        b'{"analysisId":"an_42","verdict":"ok"}',
    ),
    "statussentry": (
        ["statussentry-secret"], 1700000000,
        [("x-statussentry-signature", "t=1700000000,v1=110e88a8d8a4d5c4960f6e3f652a054d258c33e81c337746d2847c04d9ea2702")],
        b'{"id":"chk_123","status":"down"}',
    ),
    "sentry": (
        ["sentry-client-secret"], 1700000000,
        [("sentry-hook-signature", "b10510cd905833559149fd3a96f900dd812f55c0b58d2570a5892de6d37d9865"),
         ("sentry-hook-timestamp", "1700000000"), ("request-id", "req-1")],
        b'{"action":"created","data":{}}',
    ),
    "zoom": (
        ["zoom-secret-token"], 1700000000,
        [("x-zm-signature", "v0=c79071935bf4fc1bf06006c9850279ce805d8e92fe5458af4ca91eb06e0174f5"),
         ("x-zm-request-timestamp", "1700000000")],
        b'{"event":"meeting.started","payload":{}}',
    ),
    "paddle": (
        ["pdl_ntfset_01_secret"], 1671552777,
        [("paddle-signature", "ts=1671552777;h1=092381b2e74e227b6dbe01e4aabbc7f2dd668de99559ca962eaeb144649f2d00")],
        b'{"event_id":"evt_01","event_type":"transaction.completed"}',
    ),
    "twitch": (
        ["twitch-secret-0123"], 1573899072,
        [("twitch-eventsub-message-id", "e76c6bd4-55c9-4987-8304-da1588d8988b"),
         ("twitch-eventsub-message-timestamp", "2019-11-16T10:11:12.634234626Z"),
         ("twitch-eventsub-message-signature", "sha256=e4d54e54181869ed5509423302eabba6e82cdec2151b012ee5ac6d6df1f8004b")],
        b'{"subscription":{"type":"channel.follow"}}',
    ),
    "pagerduty": (
        ["pagerduty-secret"], 0,
        [("x-pagerduty-signature", "v1=2103e19ecf0952325c3b1f182777ab07b8798ffc0d4cb07997ca483244cb25c1")],
        b'{"event":{"id":"01ABC","event_type":"incident.triggered"}}',
    ),
    "shopify": (
        ["shopify-secret"], 0,
        [("x-shopify-hmac-sha256", "5A3oQQfW+WMeNQwhapvpG0xvKI5Ip4Bp9W/9ifwwyGk="),
         ("x-shopify-webhook-id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")],
        b'{"id":820982911946154508}',
    ),
    "intercom": (
        ["intercom-client-secret"], 0,
        [("x-hub-signature", "sha1=9e8917a4fdd555230bacda28c913e3e456660272")],
        b'{"type":"notification_event","topic":"ping"}',
    ),
    "linear": (
        ["lin_wh_secret"], 1700000000,
        [("linear-signature", "91e919dc0fd99df1cae12efef1ca08b082cfa523f101b572ec14ed98863fdf35")],
        b'{"action":"create","type":"Issue","webhookTimestamp":1700000000000}',
    ),
    "mailgun": (
        [MG_KEY], 1529006854, [],
        ('{"signature":{' + MG_FIELDS + '},"event-data":{"id":"DACSsAdVSeGpLid7TN03WA"}}').encode(),
    ),
    "mailgun-form": (
        [MG_KEY], 1529006854, [],
        b"timestamp=1529006854&token=a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"
        b"&signature=e7744d2cc372accf3c6092fc6afec9b0022c018f9a412af06e9048f5372fc38a&event=opened",
    ),
    "postmark": (
        ["Aladdin:open sesame"], 0,
        [("authorization", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")],
        b'{"RecordType":"Delivery"}',
    ),
    "gitlab": (
        ["glpat-token"], 0,
        [("x-gitlab-token", "glpat-token"), ("x-gitlab-event-uuid", "7b0f1b52-0000-4000-8000-000000000000")],
        b'{"object_kind":"push"}',
    ),
    "mux": (
        ["SuperSecret123"], 1565125718,
        [("mux-signature", "t=1565125718,v1=invalid-sig,v1=854ece4c22acef7c66b57d4e504153bc512595e8e9c772ece2a68150548c19a7")],
        b'{"test":"body"}',
    ),
    "meta": (
        ["meta-app-secret"], 0,
        [("x-hub-signature-256", "sha256=bc7534abc9c8b038340610a0cd72a2ccd248781bd5d0cce659eee693cca7f4aa")],
        b'{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[]}]}',
    ),
    "whatsapp": (
        ["whatsapp-app-secret"], 0,
        [("x-hub-signature-256", "sha256=3a064d25abd870329970c74c80d22bd6891b1d82a56c2b0bb935d254839babf4")],
        b'{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[]}]}',
    ),
    "typeform": (
        ["typeform-secret"], 0,
        [("typeform-signature", "sha256=amCNe+CrxmADuDn1mYGORdudo5Yi/6hboP41+0Stnbs=")],
        b'{"event_id":"01HXYZ","event_type":"form_response"}',
    ),
    "calendly": (
        ["calendly-signing-key"], 1700000000,
        [("calendly-webhook-signature", "t=1700000000,v1=af03a8a35c6a7254eb7fb53e0032cdf9829dbcffe7994ae4a5db767e1dbf8e61")],
        b'{"event":"invitee.created","payload":{}}',
    ),
    "vercel": (
        ["vercel-secret"], 0,
        [("x-vercel-signature", "4fe72bf2f18342fca497427ba37f510ea6cfb193")],
        b'{"id":"evt_vercel_1","type":"deployment.created"}',
    ),
    "clerk": (
        [SW_SECRET], 1700000000,
        [("svix-id", "msg_clerk_1"), ("svix-timestamp", "1700000000"),
         ("svix-signature", "v1,HhdGQRHK+5aV6G7F9AWnTsZfjDUxjjk7oWx0AXV5A24=")],
        b'{"type":"user.created","data":{"id":"user_1"}}',
    ),
    "resend": (
        [SW_SECRET], 1700000000,
        [("svix-id", "msg_resend_1"), ("svix-timestamp", "1700000000"),
         ("svix-signature", "v1,MD81UKWw3mWPDis1kI9uUpJ2+j24YGFEB6BOzMIuVn8=")],
        b'{"type":"email.sent","data":{"email_id":"e_1"}}',
    ),
    "docusign": (
        ["docusign-hmac-key"], 0,
        [("x-docusign-signature-1", "SYa6z31JRdSY5KYvKpXhLs7vLEt6LYMiozvLWh1rivc=")],
        b'{"event":"envelope-completed","apiVersion":"v2.1"}',
    ),
    "lemon-squeezy": (
        ["lemon-signing-secret"], 0,
        [("x-signature", "7e6871d067943f8e536397110524cf67f72c23c54c56225956a7339d4283eaae")],
        b'{"meta":{"event_name":"order_created"},"data":{"id":"1"}}',
    ),
    "gitea": (
        ["gitea-secret"], 0,
        [("x-gitea-signature", "f0942913cec1c8b4581bf16d51fa7b194f91992c6d09d248bc54de82fb8e2b87")],
        b'{"ref":"refs/heads/main","after":"abc"}',
    ),
    "dropbox": (
        ["dropbox-app-secret"], 0,
        [("x-dropbox-signature", "24ae1721acc7afaa9662c95e7f61cf98f5d80647a5f95493ab3d1fad5275ae2d")],
        b'{"list_folder":{"accounts":["dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc"]}}',
    ),
}

# Schemes that sign the route's signed_url (and Twilio the request's query).
URL_VECTORS = {
    "square": (
        ["Ibxx_5AKakO-3qeNVR61Dw"], 0, "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9",
        [("x-square-hmacsha256-signature", "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4=")],
        b'{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification",'
        b'"event_id":"ac3ac95b-f97d-458c-a6e6-18981597e05f","created_at":"2022-07-13T20:30:59.037339943Z",'
        b'"data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}',
    ),
    "hubspot": (
        ["hubspot-client-secret"], 1700000000, "https://hooks.example.com/hubspot?portal=62515",
        [("x-hubspot-signature-v3", "8uRs5XvT69dOT+rxrvAzioIkFtvTz7aT107dpOiUUMM="),
         ("x-hubspot-request-timestamp", "1700000000000")],
        b'[{"eventId":1,"subscriptionType":"contact.creation","portalId":62515}]',
    ),
    "twilio-form": (
        ["12345"], 0, "https://mycompany.com/myapp.php foo=1&bar=2",
        [("x-twilio-signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
         ("content-type", "application/x-www-form-urlencoded")],
        b"CallSid=CA1234567890ABCDE&Digits=1234&From=%2B14158675309&To=%2B18005551212&Caller=%2B14158675309",
    ),
    "twilio-repeated-params": (
        ["12345"], 0, "https://mycompany.com/myapp.php foo=1&bar=2",
        [("x-twilio-signature", "IK+Dwps556ElfBT0I3Rgjkr1wJU=")],
        b"Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234",
    ),
    "twilio-json-body-sha256": (
        ["12345"], 0,
        "https://mycompany.com/myapp.php "
        "foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620",
        [("x-twilio-signature", "a9nBmqA0ju/hNViExpshrM61xv4=")],
        b'{"property": "value", "boolean": true}',
    ),
}


def presets():
    for name, (secrets, now, headers, body) in VECTORS.items():
        # The preset is the name up to the seed's own suffix.
        preset = next(p for p in PRESETS if name == p or name.startswith(p + "-"))
        write("signature_presets", name, sig_input(preset, secrets, now, headers, body))
    for name, (secrets, now, url, headers, body) in URL_VECTORS.items():
        preset = next(p for p in PRESETS if name == p or name.startswith(p + "-"))
        write("signature_presets", name, sig_input(preset, secrets, now, headers, body, url=url))
    # Standard Webhooks v1a (ed25519): the secret key, the public key, and
    # a header with both v1 and v1a entries.
    sw = [("webhook-id", SW_ID), ("webhook-timestamp", "1614265330")]
    write("signature_presets", "standard-webhooks-v1a-whsk", sig_input(
        "standard-webhooks", [SW_WHSK], 1614265330, sw + [("webhook-signature", SW_V1A)], SW_BODY))
    write("signature_presets", "standard-webhooks-v1a-whpk-and-v1", sig_input(
        "standard-webhooks", [SW_WHPK, SW_SECRET], 1614265330,
        sw + [("webhook-signature", SW_SIG + " " + SW_V1A)], SW_BODY))
    # Validity windows: the first secret expired, the second active.
    stripe_pairs = VECTORS["stripe"][2]
    write("signature_presets", "stripe-rotation-windows", sig_input(
        "stripe", ["old-secret", "whsec_test_secret"], 1700000000, stripe_pairs,
        b'{"id":"evt_test_webhook","object":"event"}', windows="..1600000000 1650000000.."))
    # Negative shapes: stale, future, malformed, missing, unknown-only.
    stripe_sig = VECTORS["stripe"][2][0][1]
    write("signature_presets", "stripe-stale", sig_input(
        "stripe", ["whsec_test_secret"], 1700000301, [("stripe-signature", stripe_sig)], b"{}"))
    write("signature_presets", "stripe-repeated-t", sig_input(
        "stripe", ["whsec_test_secret"], 1700000000,
        [("stripe-signature", "t=1700000000,t=1700000001,v1=00")], b"{}"))
    write("signature_presets", "stripe-no-equals", sig_input(
        "stripe", ["whsec_test_secret"], 1700000000, [("stripe-signature", "t=1700000000,v1")], b"{}"))
    write("signature_presets", "github-bad-hex", sig_input(
        "github", ["s"], 0, [("x-hub-signature-256", "sha256=zz")], b"x"))
    write("signature_presets", "github-missing", sig_input("github", ["s"], 0, [], b"x"))
    write("signature_presets", "sw-unknown-version-only", sig_input(
        "standard-webhooks", [SW_SECRET], 1614265330,
        [("webhook-id", SW_ID), ("webhook-timestamp", "1614265330"), ("webhook-signature", "v2,AAAA")], SW_BODY))
    write("signature_presets", "slack-signed-negative-clock", sig_input(
        "slack", ["k"], -5, [("x-slack-request-timestamp", "99999999999999999999"), ("x-slack-signature", "v0=")], b""))
    write("signature_presets", "twitch-rfc3339-junk", sig_input(
        "twitch", ["k"], 1573899072,
        [("twitch-eventsub-message-id", "i"), ("twitch-eventsub-message-timestamp", "2019-11-16T10:11:12Zjunk"),
         ("twitch-eventsub-message-signature", "sha256=00")], b"{}"))
    write("signature_presets", "linear-stale-body", sig_input(
        "linear", ["lin_wh_secret"], 1800000000,
        [("linear-signature", "91e919dc0fd99df1cae12efef1ca08b082cfa523f101b572ec14ed98863fdf35")],
        b'{"action":"create","type":"Issue","webhookTimestamp":1700000000000}'))
    write("signature_presets", "shopify-base64url-chars", sig_input(
        "shopify", ["shopify-secret"], 0, [("x-shopify-hmac-sha256", "5A3oQQfW-WMeNQwhapvpG0xvKI5Ip4Bp9W_9ifwwyGk")],
        b'{"id":820982911946154508}'))
    write("signature_presets", "paddle-obs-text", sig_input(
        "paddle", ["k"], 1671552777, [], b"{}").replace(b"\n\n", b"\npaddle-signature: ts=1671552777;h1=\xff\xfe\n\n"))


# ---------------------------------------------------------------- custom
def custom_input(header, prefix, enc_alg, content, id_header, ts_header, secret, now, headers, body):
    # "-": not set (an empty line would end the head).
    head = [header, prefix or "-", enc_alg, content, id_header or "-", ts_header or "-", secret, f"{now} 300"]
    head += [f"{k}: {v}" for k, v in headers]
    return ("\n".join(head) + "\n\n").encode() + body


def custom():
    t = "signature_custom"
    write(t, "vector-sha512-base64url", custom_input(
        "X-My-Sig", "v1=", "base64url sha512", "{id}|{timestamp}|{body}", "X-My-Id", "X-My-Ts",
        "custom-secret", 1700000000,
        [("x-my-id", "evt_1"), ("x-my-ts", "1700000000"),
         ("x-my-sig", "v1=x41sxCaX0lqvD2f9Okv5RwaTtW6xYLdXeV9ByVDlVcrxQHvWc94iih_-gN1udZBwhCjykDwVhx-EFFnFZCSkdQ")],
        b'{"a":1}'))
    body = b'{"id":"evt_1"}'
    mac = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    write(t, "bare-hex-sha256", custom_input(
        "x-custom-sig", "", "hex sha256", "{body}", "", "", "k", 0, [("x-custom-sig", mac)], body))
    mac1 = hmac.new(b"k", body, hashlib.sha1).digest()
    import base64
    write(t, "prefixed-base64-sha1", custom_input(
        "x-custom-sig", "sha1=", "base64 sha1", "{body}", "", "", "k", 0,
        [("x-custom-sig", "sha1=" + base64.b64encode(mac1).decode())], body))
    write(t, "literal-braces", custom_input(
        "x-sig", "", "hex sha256", "}lit{timestamp}:{body}}", "", "x-ts", "k", 1700000000,
        [("x-ts", "1700000000"), ("x-sig", "00")], body))
    write(t, "unknown-placeholder", custom_input(
        "x-sig", "", "hex sha256", "{bogus}{body}", "", "", "k", 0, [("x-sig", "00")], body))
    write(t, "unclosed-brace", custom_input(
        "x-sig", "", "hex sha256", "{body", "", "", "k", 0, [], body))
    write(t, "no-body-placeholder", custom_input(
        "x-sig", "", "hex sha256", "{id}", "x-id", "", "k", 0, [("x-id", "1")], body))
    write(t, "id-without-header", custom_input(
        "x-sig", "", "hex sha256", "{id}.{body}", "", "", "k", 0, [], body))
    write(t, "bad-header-name", custom_input(
        "x sig", "", "hex sha256", "{body}", "", "", "k", 0, [], body))
    write(t, "prefix-with-space", custom_input(
        "x-sig", " v1=", "hex sha256", "{body}", "", "", "k", 0, [], body))
    write(t, "multibyte-template", custom_input(
        "x-sig", "", "hex sha256", "é{body}ü{", "", "", "k", 0, [], body))


# ---------------------------------------------------------------- event_id
def event_id():
    t = "event_id"

    def put(name, key, headers, body, required="required"):
        head = [key or "-", required] + [f"{k}: {v}" for k, v in headers]
        write(t, name, ("\n".join(head) + "\n\n").encode() + body)

    put("sigsentry-analysisId", "body:/analysisId", [],
        b'{"analysisId":"anl_abc123","projectId":"prj_def456","severity":"high"}')
    put("stripe-id", "body:/id", [], b'{"id":"evt_test_webhook","object":"event"}')
    put("paddle-event_id", "body:/event_id", [], b'{"event_id":"evt_01","event_type":"transaction.completed"}')
    put("number-id", "body:/id", [], b'{"id":820982911946154508}')
    put("float-id", "body:/n", [], b'{"n":1.5e2}')
    put("nested-array", "body:/a/b/1/c", [], b'{"a":{"b":[10,{"c":"x"}]}}')
    put("escaped-tokens", "body:/a/m~0n/s~1t", [], b'{"a":{"m~n":{"s/t":"deep"}}}')
    put("leading-zero-index", "body:/a/01", [], b'{"a":[1,2]}')
    put("whole-document", "body:", [], b'"just a string"')
    put("duplicate-keys", "body:/id", [], b'{"id":"first","id":"second"}')
    put("null-optional", "body:/id", [], b'{"id":null}', "optional")
    put("object-invalid", "body:/id", [], b'{"id":{"x":1}}')
    put("invalid-json", "body:/id", [], b'{"id":"x","rest":[1,2')
    put("trailing-garbage", "body:/id", [], b'{"id":"x"} trailing')
    put("escaped-string", "body:/id", [], b'{"id":"a\\u0000b\\ud83d\\ude00"}')
    put("deep-nesting", "body:/0/0/0", [], b"[" * 120 + b"]" * 120)
    put("long-id", "body:/id", [], b'{"id":"' + b"x" * 1100 + b'"}')
    put("webhook-id-header", "header:webhook-id", [("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")], b"{}")
    put("github-delivery", "header:x-github-delivery", [("X-GitHub-Delivery", " 72d3162e-cc78-11e3-81ab-4c9367dc0958 ")], b"")
    # A header value with obs-text bytes (not text: DedupKeyInvalid).
    write(t, "header-obs-text", b"header:x-id\nrequired\nx-id: caf\xc3\xa9\n\n")
    put("header-missing-optional", "header:x-id", [], b"", "optional")
    put("none", "none", [], b"{}")


# ---------------------------------------------------------------- stored_request
def stored():
    t = "stored_request"

    def field(b):
        return struct.pack(">I", len(b)) + b

    def encode(method, pq, headers, body):
        out = b"\x01" + field(method) + field(pq) + struct.pack(">I", len(headers))
        for k, v in headers:
            out += field(k) + field(v)
        return out + field(body)

    write(t, "encoded-sigsentry", encode(
        b"POST", b"/hooks/sigsentry/x?y=1",
        [(b"content-type", b"application/json"),
         (b"x-sigsentry-signature", b"sha256=4caf1ed790f29231201b06b76772f73df10f59b228d7a8043e5dd87167ff73e0")],
        b'{"analysisId":"an_42","verdict":"ok"}'))
    write(t, "encoded-repeated-headers", encode(
        b"PUT", b"/", [(b"x-multi", b"a"), (b"x-other", b"1"), (b"x-multi", b"b"), (b"x-bin", b"\xff\xfe")],
        b"\x00\xff body"))
    write(t, "encoded-empty", encode(b"GET", b"", [], b""))
    write(t, "encoded-bad-version", b"\x02" + encode(b"GET", b"/", [], b"")[1:])
    write(t, "encoded-huge-count", b"\x01" + field(b"GET") + field(b"/") + b"\xff\xff\xff\xff")
    write(t, "text-post", b"POST /hooks/a?b=c\ncontent-type: application/json\nx-multi: 1\nx-multi: 2\n\n{\"id\":1}")
    write(t, "text-extension-method", b"PURGE /x\n\n")
    write(t, "text-obs-text", b"POST /\nx-v: \xff\x80\n\n\x00\x01")


# ---------------------------------------------------------------- request_path
def requests():
    t = "request_path"

    def req(method, path, headers, body=b"", directive="~ sign", version="HTTP/1.1", length=True):
        lines = [f"{method} {path} {version}", "Host: hookgate.test"] + [f"{k}: {v}" for k, v in headers]
        if length:
            lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        return (directive.encode() + b"\n" + raw) if directive else raw

    j = b'{"analysisId":"anl_abc123","id":"evt_1","projectId":"prj_def456","severity":"high"}'
    ct = [("Content-Type", "application/json")]
    write(t, "sigsentry-signed", req("POST", "/hooks/sigsentry", ct, j))
    write(t, "sigsentry-subpath-query", req("POST", "/hooks/sigsentry/a/b?x=1&y=2", ct, j))
    write(t, "sigsentry-unsigned", req("POST", "/hooks/sigsentry", ct, j, directive=None))
    write(t, "sigsentry-traversal", req("POST", "/hooks/sigsentry/a/../../admin", ct, j))
    write(t, "sigsentry-encoded-slash", req("POST", "/hooks/sigsentry/a%2Fb%00", ct, j))
    write(t, "sigsentry-upstream-status", req("POST", "/hooks/sigsentry/status/503", ct, j))
    write(t, "stripe-fixed", req("POST", "/hooks/stripe/ignored?q=1", ct, j))
    write(t, "custom-put", req("PUT", "/hooks/custom/x", ct, j))
    write(t, "custom-too-large", req("POST", "/hooks/custom", ct, b"x" * 1100))
    write(t, "gitlab", req("POST", "/hooks/gitlab", [("X-Gitlab-Event", "Push Hook")] + ct, j))
    write(t, "queue-standard-webhooks", req("POST", "/hooks/queue", ct, j))
    write(t, "queue-missing-id", req("POST", "/hooks/queue", ct, b'{"other":1}'))
    write(t, "queue-not-json", req("POST", "/hooks/queue", ct, b"not json"))
    write(t, "queue-linear", req("POST", "/hooks/queue/linear",
                                 [("Linear-Delivery", "d-1")] + ct, b'{"action":"create","webhookTimestamp":1700000000000}'))
    write(t, "trusted-proxy-forwarded", req(
        "POST", "/hooks/sigsentry",
        [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https"), ("Forwarded", "for=1.2.3.4")] + ct, j,
        directive="~10.1.2.3 sign"))
    write(t, "untrusted-forged-forwarded", req(
        "POST", "/hooks/sigsentry",
        [("X-Forwarded-For", "203.0.113.9"), ("X-Real-IP", "1.2.3.4"), ("X-Hookgate-Verified", "forged")] + ct, j,
        directive="~192.0.2.7 sign"))
    write(t, "connection-named-headers", req(
        "POST", "/hooks/sigsentry", [("Connection", "keep-alive, x-drop"), ("X-Drop", "1"), ("TE", "trailers")] + ct, j))
    chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    write(t, "chunked", req("POST", "/hooks/sigsentry", [("Transfer-Encoding", "chunked")], chunked, length=False))
    write(t, "chunked-and-length", req(
        "POST", "/hooks/sigsentry", [("Transfer-Encoding", "chunked"), ("Content-Length", "3")], chunked, length=False))
    write(t, "bad-chunk", req("POST", "/hooks/sigsentry", [("Transfer-Encoding", "chunked")], b"zz\r\nhello\r\n0\r\n\r\n",
                              length=False))
    write(t, "body-shorter-than-length", req(
        "POST", "/hooks/sigsentry", [("Content-Length", "500")], j, length=False))
    write(t, "huge-content-length", req(
        "POST", "/hooks/sigsentry", [("Content-Length", "99999999999")], b"", length=False))
    write(t, "get-not-allowed", req("GET", "/hooks/sigsentry", [], b"", directive=None, length=False))
    write(t, "not-found", req("POST", "/nope", [], b"x", directive=None))
    write(t, "expect-continue", req("POST", "/hooks/sigsentry", [("Expect", "100-continue")] + ct, j))
    write(t, "http10", req("POST", "/hooks/sigsentry", ct, j, version="HTTP/1.0"))
    write(t, "pipelined", req("POST", "/hooks/sigsentry", ct, j, directive=None)
          + req("POST", "/hooks/queue", ct, j, directive=None))
    write(t, "garbage", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")
    write(t, "head-only-no-end", b"POST /hooks/sigsentry HTTP/1.1\r\nHost: x\r\n")
    write(t, "absolute-form", req("POST", "http://hookgate.test/hooks/sigsentry/x", ct, j))
    write(t, "slack-url-verification", req(
        "POST", "/hooks/slack", ct, b'{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}'))
    write(t, "slack-event", req("POST", "/hooks/slack", ct, b'{"type":"event_callback","event_id":"Ev1"}'))
    form = [("Content-Type", "application/x-www-form-urlencoded")]
    write(t, "twilio-form-query", req(
        "POST", "/hooks/twilio?foo=1&bar=2", form, b"CallSid=CA1234567890ABCDE&Digits=1234&From=%2B14158675309"))
    write(t, "twilio-json-body-sha256", req(
        "POST", "/hooks/twilio?bodySHA256=" + hashlib.sha256(j).hexdigest(), ct, j))
    write(t, "hubspot-allowed-peer", req(
        "POST", "/hooks/hubspot", ct, b'[{"eventId":1,"subscriptionType":"contact.creation"}]', directive="~192.0.2.7 sign"))
    write(t, "hubspot-refused-peer", req(
        "POST", "/hooks/hubspot", ct, b'[{"eventId":1,"subscriptionType":"contact.creation"}]'))
    write(t, "hubspot-allowed-via-proxy", req(
        "POST", "/hooks/hubspot", [("X-Forwarded-For", "192.0.2.9")] + ct,
        b'[{"eventId":1}]', directive="~10.0.0.2 sign"))
    write(t, "meta-subscribe-get", req(
        "GET", "/hooks/meta?hub.mode=subscribe&hub.verify_token=fuzz-meta-token&hub.challenge=1158201444",
        [], b"", directive=None, length=False))
    write(t, "meta-subscribe-wrong-token", req(
        "GET", "/hooks/meta?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1", [], b"", directive=None,
        length=False))
    write(t, "meta-event", req("POST", "/hooks/meta", ct, b'{"object":"page","entry":[]}'))
    write(t, "challenge-configured", req(
        "POST", "/hooks/challenge", ct, b'{"type":"url_verification","challenge":"c\\"h<&"}'))


# ---------------------------------------------------------------- regressions
def regressions():
    """The inputs of the crashes fuzzing found (fuzz/README.md, Findings),
    byte for byte, so CI keeps running them."""
    write("signature_custom", "regression-f1a-non-ascii-prefix",
          b'x-sig\n\xa0v0=\nx-\nhex\x07 sestamp}|{body}\nX-My-Id\nX-My-Ts\ncustom-secret\n'
          b'170009Okv5R6xYLdXeV9ByVDlVcrxQHvWc94iih_-gN1udZBwhCjykD00000 300\nx-my-id: evt_1\n'
          b'x-my-tsLdXeV9ByVDlVcrxQHv\x00\x00\x00\x00\x00\x00\x00\x88Wc94iih_-gN1udZBwhCjykDwVhx-EFFnFZCSkdQ\n'
          b'ha512\n%b{"id":"evt_0"}')
    write("signature_custom", "regression-f1b-id-header-is-timestamp-header",
          b'X-My-Sig\nv1=\nba|e64url sa\n25h1{id}|{timestamp}|{body}\nX-My-Id\nX-My-Id\nX-My-Ts\n'
          b'cus0000300\nx(my0\nxm-seca":0}')
    write("event_id", "regression-f2-lone-surrogate",
          b'body:/id\xf7\x8deqd\nrequired\n\n{"id":"a\\u1615b\\ud8300"}')


def main():
    if os.path.isdir(ROOT):
        shutil.rmtree(ROOT)
    presets()
    custom()
    event_id()
    stored()
    requests()
    regressions()
    for t in sorted(os.listdir(ROOT)):
        print(t, len(os.listdir(os.path.join(ROOT, t))))


if __name__ == "__main__":
    main()
