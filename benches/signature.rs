//! Signature micro-benchmarks: `verify` and `sign` for one scheme of each
//! family, with 1 KiB and 64 KiB bodies.
//!
//! ```text
//! cargo bench --bench signature                  # everything (~1.5 min)
//! cargo bench --bench signature -- verify/stripe # a subset
//! ```
//!
//! Families: SigSentry (hex, raw body, `sha256=` prefix), Stripe (`t=,v1=`
//! list, timestamp), Standard Webhooks (base64, `id.ts.body`, `whsec_` key),
//! Slack (`v0:ts:body`, timestamp header), Intercom (HMAC-SHA1), and a custom
//! HMAC-SHA512 scheme. Throughput is reported in body bytes per second.

use std::time::{Duration, UNIX_EPOCH};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hookgate::signature::{sign, Algorithm, Custom, Encoding, Preset, Scheme, Verifier};
use http::HeaderMap;

/// A fixed timestamp, and a "now" 10 s later: inside every tolerance.
const TS: i64 = 1_767_225_600;

fn schemes() -> Vec<(&'static str, Scheme, &'static [u8])> {
    vec![
        (
            "sigsentry",
            Scheme::Preset(Preset::Sigsentry),
            b"sigsentry-bench-secret",
        ),
        (
            "stripe",
            Scheme::Preset(Preset::Stripe),
            b"whsec_stripe_bench_secret",
        ),
        (
            "standard-webhooks",
            Scheme::Preset(Preset::StandardWebhooks),
            b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
        (
            "slack",
            Scheme::Preset(Preset::Slack),
            b"8f742231b10e8888abcd99yyyzzz85a5",
        ),
        (
            "intercom",
            Scheme::Preset(Preset::Intercom),
            b"intercom-client-secret",
        ),
        (
            "custom-sha512",
            Scheme::Custom(Box::new(Custom {
                header: "x-bench-signature".into(),
                prefix: Some("sha512=".into()),
                encoding: Encoding::Hex,
                algorithm: Algorithm::Sha512,
                signed_content: "{timestamp}.{body}".into(),
                id_header: None,
                timestamp_header: Some("x-bench-timestamp".into()),
            })),
            b"custom-bench-secret",
        ),
    ]
}

/// A JSON body of exactly `size` bytes.
fn body(size: usize) -> Vec<u8> {
    let head = br#"{"analysisId":"an_0123456789","severity":"high","notes":""#;
    let tail = b"\"}\n";
    let mut b = head.to_vec();
    b.resize(size - tail.len(), b'x');
    b.extend_from_slice(tail);
    assert_eq!(b.len(), size);
    b
}

fn headers_for(scheme: &Scheme, secret: &[u8], body: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in sign(scheme, secret, body, Some("msg_2b9XzQ1bench"), TS).expect("sign") {
        h.append(k, v);
    }
    h.insert("content-type", "application/json".parse().unwrap());
    h
}

fn bench(c: &mut Criterion) {
    let now = UNIX_EPOCH + Duration::from_secs(TS as u64 + 10);
    for (size_name, size) in [("1KiB", 1024usize), ("64KiB", 64 * 1024)] {
        let body = body(size);

        let mut verify = c.benchmark_group(format!("verify/{size_name}"));
        verify.throughput(Throughput::Bytes(size as u64));
        for (name, scheme, secret) in schemes() {
            let headers = headers_for(&scheme, secret, &body);
            let v = Verifier::new(scheme, &[secret], Duration::from_secs(300)).expect("verifier");
            // Sanity: a benchmark of a failing verification is meaningless.
            v.verify(&headers, &body, now).expect("valid signature");
            verify.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| v.verify(black_box(&headers), black_box(&body), black_box(now)))
            });
        }
        verify.finish();

        let mut signing = c.benchmark_group(format!("sign/{size_name}"));
        signing.throughput(Throughput::Bytes(size as u64));
        for (name, scheme, secret) in schemes() {
            signing.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| {
                    sign(
                        black_box(&scheme),
                        black_box(secret),
                        black_box(&body),
                        Some("msg_2b9XzQ1bench"),
                        TS,
                    )
                })
            });
        }
        signing.finish();
    }

    // A mismatch costs the full scan too (constant time): measured once.
    let body = body(1024);
    let scheme = Scheme::Preset(Preset::Sigsentry);
    let headers = headers_for(&scheme, b"some-other-secret", &body);
    let v = Verifier::new(
        scheme,
        &[b"sigsentry-bench-secret"],
        Duration::from_secs(300),
    )
    .unwrap();
    assert!(v.verify(&headers, &body, now).is_err());
    c.bench_function("verify-mismatch/1KiB/sigsentry", |b| {
        b.iter(|| v.verify(black_box(&headers), black_box(&body), black_box(now)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
