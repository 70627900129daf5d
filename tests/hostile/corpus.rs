//! The hostile corpus: every case is raw bytes (sent in timed steps), the
//! answers expected in order, and what the upstream must receive because of
//! it (nothing, unless the case is a valid request).
//!
//! Hand-written cases are grouped by attack surface (one function each);
//! generated ones come from seeded generators, each with its own random
//! stream derived from the run's seed and the generator's name, so a case's
//! bytes depend only on the seed (printed with every failure) and adding a
//! generator never changes another's cases. Expectations of generated cases
//! are decided by construction (a random hex string of even length is a
//! well-formed signature that cannot match, one with a non-hex character is
//! malformed, ...), not by re-running hookgate's own parser.
//!
//! Where hyper answers before hookgate sees the request (bad framing,
//! limits), the case expects hyper's exact answer: [`Exp::Hyper`] with its
//! status and an empty body, or no answer at all (an empty `expect`).

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;

use super::wire::Step;
use crate::common;

pub const SECRET: &str = "hostile-corpus-secret-7f3a9c0d";
/// Header and body limits of the binary under test (see `config` in
/// `hostile.rs`).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
pub const BODY_TIMEOUT: Duration = Duration::from_secs(2);
pub const MAX_BODY: usize = 64 * 1024;
/// Scheduling slack allowed beyond a documented timeout (a shared 2-core
/// machine running other builds).
pub const SLACK: Duration = Duration::from_millis(2500);
/// The head limits hookgate sets on hyper (`server::MAX_HEADER_LINES`,
/// `server::MAX_HEAD_BYTES`): at most 95 header lines (the 96th is 431, so
/// that what hookgate adds when forwarding still fits an upstream's 100);
/// a head longer than its 64 KiB read buffer is 431; and hyper's own: a
/// request target longer than 65,534 bytes is 414.
pub const HYPER_MAX_HEADERS: usize = hookgate::server::MAX_HEADER_LINES;
pub const HEAD_MAX_BYTES: usize = hookgate::server::MAX_HEAD_BYTES;
pub const HYPER_HEAD_REFUSED: usize = 2 * 1024 * 1024;
pub const HYPER_MAX_URI: usize = 65534;
/// Signature candidates compared per request, across repeated headers.
pub const MAX_CANDIDATES: usize = 16;
/// Event ids longer than this are `dedup_key_invalid`.
pub const MAX_EVENT_ID: usize = 1024;

/// The routes of the binary under test; each forwards to `/up/<name>` on
/// the test's upstream with `forward_path = "append"` (the default).
pub const SIG: &str = "/hooks/sig";
pub const EVT: &str = "/hooks/evt";
pub const STD: &str = "/hooks/std";
pub const STRIPE: &str = "/hooks/stripe";
pub const SHOPIFY: &str = "/hooks/shopify";
pub const CUSTOM: &str = "/hooks/custom";
pub const ROUTES: [&str; 6] = [SIG, EVT, STD, STRIPE, SHOPIFY, CUSTOM];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Passthrough,
    Queue,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Passthrough => "passthrough",
            Mode::Queue => "queue",
        }
    }
}

/// One answer a case expects, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exp {
    /// Verified and handed on: `202 {"status":"accepted","id":…}` in queue
    /// mode, the upstream's own `200 upstream ok` in passthrough.
    Accepted,
    /// Queue mode: `200 {"status":"duplicate","id":…}`.
    Duplicate,
    /// A hookgate refusal: this status and exactly `{"error":{"code":…}}`.
    Error(u16, &'static str),
    /// hyper's own answer to what it cannot parse: this status, no body.
    Hyper(u16),
    /// An interim `100 Continue`.
    Continue,
}

/// What the upstream must receive because of a case.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fwd {
    pub route: &'static str,
    /// Path and query as the upstream sees them.
    pub uri: String,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub steps: Vec<Step>,
    /// Every answer on the connection, in order; after them the server
    /// must close it.
    pub expect: Vec<Exp>,
    pub forwards: Vec<Fwd>,
    /// The connection must be over within this long (slow clients).
    pub within: Option<Duration>,
    /// A HEAD request: its answers have no body.
    pub head: bool,
    /// Runs apart from the others, all at once (it takes seconds).
    pub slow: bool,
    /// Routes of the jobs it leaves dead-lettered (queue mode).
    pub dead: Vec<&'static str>,
}

/// A raw request: request line, header lines and body, each byte chosen
/// by the case.
#[derive(Clone, Debug)]
pub struct Raw {
    pub line: Vec<u8>,
    pub headers: Vec<Vec<u8>>,
    pub body: Vec<u8>,
}

impl Raw {
    /// `POST target HTTP/1.1` with host, content-type, the body's exact
    /// content-length and `connection: close`.
    pub fn post(target: &str, body: &[u8]) -> Raw {
        Raw {
            line: format!("POST {target} HTTP/1.1").into_bytes(),
            headers: vec![
                b"host: hookgate.test".to_vec(),
                b"content-type: application/json".to_vec(),
                format!("content-length: {}", body.len()).into_bytes(),
                b"connection: close".to_vec(),
            ],
            body: body.to_vec(),
        }
    }

    pub fn line(mut self, line: impl AsRef<[u8]>) -> Raw {
        self.line = line.as_ref().to_vec();
        self
    }

    /// Appends `name: value`.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Raw {
        let mut l = format!("{name}: ").into_bytes();
        l.extend_from_slice(value.as_ref());
        self.headers.push(l);
        self
    }

    /// Appends a header line exactly as given.
    pub fn raw_line(mut self, line: impl AsRef<[u8]>) -> Raw {
        self.headers.push(line.as_ref().to_vec());
        self
    }

    /// Removes every `name:` line (case-insensitive).
    pub fn remove(mut self, name: &str) -> Raw {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.headers.retain(|l| {
            !(l.len() >= prefix.len() && l[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes()))
        });
        self
    }

    /// Replaces every `name:` line with one.
    pub fn set(self, name: &str, value: impl AsRef<[u8]>) -> Raw {
        self.remove(name).header(name, value)
    }

    /// The body replaced; content-length left as it was.
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Raw {
        self.body = body.as_ref().to_vec();
        self
    }

    pub fn head_bytes(&self) -> Vec<u8> {
        let mut b = self.line.clone();
        b.extend_from_slice(b"\r\n");
        for h in &self.headers {
            b.extend_from_slice(h);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"\r\n");
        b
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut b = self.head_bytes();
        b.extend_from_slice(&self.body);
        b
    }
}

/// SplitMix64: small, seedable, the same on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `lo..hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo) as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.range(0, xs.len())]
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// `n` characters drawn from `alphabet`.
    pub fn string(&mut self, alphabet: &[u8], n: usize) -> String {
        (0..n).map(|_| *self.pick(alphabet) as char).collect()
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Builds the corpus for one mode.
pub struct Ctx {
    pub mode: Mode,
    pub seed: u64,
    pub now: i64,
    seq: u64,
    /// Event ids of the `/hooks/evt` cases that are accepted, so that a
    /// generated one never collides with another (it would be a duplicate).
    evt_ids: HashSet<String>,
    pub cases: Vec<Case>,
}

const HEX: &[u8] = b"0123456789abcdef";
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// Visible ASCII that is neither a hex digit nor whitespace.
const NOT_HEX: &[u8] =
    b"ghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
/// Visible ASCII outside the standard base64 alphabet and padding.
const NOT_B64: &[u8] = b"!\"#$%&'()*,-.:;<>?@[\\]^_`{|}~";

pub fn std_secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(b"hostile-corpus-standard-webhooks")
    )
}

fn custom_scheme() -> hookgate::signature::Scheme {
    hookgate::signature::Scheme::Custom(Box::new(hookgate::signature::Custom {
        header: "X-Acme-Signature".into(),
        prefix: Some("v1=".into()),
        encoding: hookgate::signature::Encoding::Base64url,
        algorithm: hookgate::signature::Algorithm::Sha512,
        signed_content: "{id}.{timestamp}.{body}".into(),
        id_header: Some("X-Acme-Id".into()),
        timestamp_header: Some("X-Acme-Timestamp".into()),
    }))
}

/// The `[[routes]]` of the binary under test.
pub fn routes_toml(mode: Mode, upstream: &str) -> String {
    let m = mode.as_str();
    let std_secret = std_secret();
    format!(
        r#"
[[routes]]
path = "{SIG}"
scheme = "sigsentry"
mode = "{m}"
secrets = [{{ value = "{SECRET}" }}]
dedup = {{ key = "body:/analysisId" }}
[routes.upstream]
url = "{upstream}/up/sig"

[[routes]]
path = "{EVT}"
scheme = "sigsentry"
mode = "{m}"
secrets = [{{ value = "{SECRET}" }}]
dedup = {{ key = "body:/event_id" }}
[routes.upstream]
url = "{upstream}/up/evt"

[[routes]]
path = "{STD}"
scheme = "standard-webhooks"
mode = "{m}"
secrets = [{{ value = "{std_secret}" }}]
[routes.upstream]
url = "{upstream}/up/std"

[[routes]]
path = "{STRIPE}"
scheme = "stripe"
mode = "{m}"
secrets = [{{ value = "{SECRET}" }}]
[routes.upstream]
url = "{upstream}/up/stripe"

[[routes]]
path = "{SHOPIFY}"
scheme = "shopify"
mode = "{m}"
secrets = [{{ value = "{SECRET}" }}]
[routes.upstream]
url = "{upstream}/up/shopify"

[[routes]]
path = "{CUSTOM}"
mode = "{m}"
secrets = [{{ value = "{SECRET}" }}]
dedup = {{ key = "header:x-acme-id" }}
[routes.custom]
header = "X-Acme-Signature"
prefix = "v1="
encoding = "base64url"
algorithm = "sha512"
signed_content = "{{id}}.{{timestamp}}.{{body}}"
id_header = "X-Acme-Id"
timestamp_header = "X-Acme-Timestamp"
[routes.upstream]
url = "{upstream}/up/custom"
"#
    )
}

/// The path and query the upstream sees for a request target on `route`.
pub fn upstream_uri(route: &str, target: &str) -> String {
    let target = match target.strip_prefix("http://") {
        Some(rest) => &rest[rest.find('/').unwrap_or(rest.len())..],
        None => target,
    };
    let rest = target.strip_prefix(route).expect("target is on the route");
    format!("/up/{}{rest}", &route["/hooks/".len()..])
}

fn hv(headers: &[(String, String)], name: &str) -> String {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("signed headers lack {name}"))
}

impl Ctx {
    pub fn new(mode: Mode, seed: u64) -> Ctx {
        Ctx {
            mode,
            seed,
            now: common::now(),
            seq: 0,
            evt_ids: HashSet::new(),
            cases: Vec::new(),
        }
    }

    /// The random stream of one generator.
    pub fn rng(&self, generator: &str) -> Rng {
        Rng::new(self.seed ^ fnv(generator))
    }

    /// A fresh identifier, unique in the run.
    pub fn uid(&mut self, tag: &str) -> String {
        self.seq += 1;
        format!("{tag}_{}_{}", self.mode.as_str(), self.seq)
    }

    /// A SigSentry body with a fresh `analysisId`.
    pub fn sig_body(&mut self) -> Vec<u8> {
        let id = self.uid("anl");
        common::analysis(&id)
    }

    /// The `X-SigSentry-Signature` value of `body`.
    pub fn sig(&self, body: &[u8]) -> String {
        hv(
            &common::sign("sigsentry", SECRET, body, None, self.now),
            "x-sigsentry-signature",
        )
    }

    /// A valid signed request for the SigSentry route.
    pub fn sig_req(&mut self, target: &str) -> (Raw, Vec<u8>) {
        let body = self.sig_body();
        let sig = self.sig(&body);
        (
            Raw::post(target, &body).header("x-sigsentry-signature", sig),
            body,
        )
    }

    /// Standard Webhooks headers (id, timestamp, signature) for `body`.
    pub fn std_headers(&self, body: &[u8], id: &str, ts: i64) -> (String, String, String) {
        let h = common::sign("standard-webhooks", &std_secret(), body, Some(id), ts);
        (
            hv(&h, "webhook-id"),
            hv(&h, "webhook-timestamp"),
            hv(&h, "webhook-signature"),
        )
    }

    /// The `v1=` hex of Stripe's signature of `body` at `ts`.
    pub fn stripe_v1(&self, body: &[u8], ts: i64) -> String {
        let v = hv(
            &common::sign("stripe", SECRET, body, None, ts),
            "stripe-signature",
        );
        v.split(',')
            .find_map(|e| e.strip_prefix("v1="))
            .expect("stripe signs v1")
            .to_string()
    }

    pub fn shopify_sig(&self, body: &[u8]) -> String {
        hv(
            &common::sign("shopify", SECRET, body, None, self.now),
            "x-shopify-hmac-sha256",
        )
    }

    /// The `X-Acme-Signature` value of the custom scheme.
    pub fn custom_sig(&self, body: &[u8], id: &str, ts: i64) -> String {
        let h = hookgate::signature::sign(&custom_scheme(), SECRET.as_bytes(), body, Some(id), ts)
            .expect("custom scheme signs");
        h.iter()
            .find(|(n, _)| n.as_str() == "x-acme-signature")
            .map(|(_, v)| v.to_str().unwrap().to_string())
            .expect("custom scheme sets its header")
    }

    /// A fresh Stripe-like JSON body.
    pub fn stripe_body(&mut self) -> Vec<u8> {
        let id = self.uid("evt");
        format!(r#"{{"id":"{id}","object":"event","type":"charge.succeeded"}}"#).into_bytes()
    }

    pub fn add(&mut self, case: Case) {
        self.cases.push(case);
    }

    /// A case of one request sent at once.
    pub fn one(&mut self, name: &str, raw: &Raw, expect: Vec<Exp>, forwards: Vec<Fwd>) {
        self.add(Case {
            name: name.to_string(),
            steps: vec![Step::Send(raw.bytes())],
            expect,
            forwards,
            within: None,
            head: false,
            slow: false,
            dead: vec![],
        });
    }

    /// One request refused with `status` and `code`.
    pub fn refused(&mut self, name: &str, raw: &Raw, status: u16, code: &'static str) {
        self.one(name, raw, vec![Exp::Error(status, code)], vec![]);
    }

    /// One request answered by hyper itself.
    pub fn hyper(&mut self, name: &str, raw: &Raw, status: u16) {
        self.one(name, raw, vec![Exp::Hyper(status)], vec![]);
    }

    /// One valid request, forwarded with `body` to the upstream.
    pub fn accepted(
        &mut self,
        name: &str,
        route: &'static str,
        target: &str,
        raw: &Raw,
        body: &[u8],
    ) {
        let fwd = self.fwd(route, target, body);
        self.one(name, raw, vec![Exp::Accepted], vec![fwd]);
    }

    pub fn fwd(&self, route: &'static str, target: &str, body: &[u8]) -> Fwd {
        Fwd {
            route,
            uri: upstream_uri(route, target),
            body: body.to_vec(),
        }
    }

    /// A verified request whose event id decides: refused with `code` in
    /// queue mode (`None`: accepted), always forwarded in passthrough
    /// (which neither reads nor needs the event id).
    pub fn by_event_id(
        &mut self,
        name: &str,
        route: &'static str,
        raw: &Raw,
        body: &[u8],
        code: Option<&'static str>,
    ) {
        match (self.mode, code) {
            (Mode::Queue, Some(code)) => self.refused(name, raw, 400, code),
            _ => self.accepted(name, route, route, raw, body),
        }
    }

    /// A signed `/hooks/evt` request.
    pub fn evt_req(&self, body: &[u8]) -> Raw {
        Raw::post(EVT, body).header("x-sigsentry-signature", self.sig(body))
    }
}

/// Every case, hand-written first, then generated.
pub fn build(ctx: &mut Ctx) {
    slow_clients(ctx);
    signature_headers(ctx);
    standard_webhooks(ctx);
    stripe(ctx);
    shopify_and_custom(ctx);
    event_id_bodies(ctx);
    methods(ctx);
    paths(ctx);
    request_lines(ctx);
    header_syntax(ctx);
    header_limits(ctx);
    content_length(ctx);
    transfer_encoding(ctx);
    chunked_framing(ctx);
    pipelining_and_expect(ctx);

    gen_hex_signatures(ctx, 50);
    gen_non_hex_signatures(ctx, 30);
    gen_prefix_mutations(ctx, 30);
    gen_body_bit_flips(ctx, 30);
    gen_signature_digit_flips(ctx, 20);
    gen_obs_text(ctx, 15);
    gen_control_bytes(ctx, 40);
    gen_methods(ctx, 25);
    gen_traversal(ctx, 45);
    gen_header_floods(ctx, 20);
    gen_length_lies(ctx, 25);
    gen_event_id_bodies(ctx, 50);
    gen_base64_signatures(ctx, 30);
    gen_stripe_lists(ctx, 30);
    gen_chunked(ctx, 40);
}

fn slow(
    name: &str,
    steps: Vec<Step>,
    expect: Vec<Exp>,
    forwards: Vec<Fwd>,
    within: Duration,
) -> Case {
    Case {
        name: name.to_string(),
        steps,
        expect,
        forwards,
        within: Some(within),
        head: false,
        slow: true,
        dead: vec![],
    }
}

/// Slowloris heads and bodies: cut off at `header_timeout` (closed, no
/// answer: hyper's header timeout) or `body_timeout` (408 from hookgate).
fn slow_clients(ctx: &mut Ctx) {
    let head_cut = HEADER_TIMEOUT + SLACK;
    let body_cut = BODY_TIMEOUT + SLACK;
    let trickle = Duration::from_millis(100);
    for i in 0..20 {
        ctx.add(slow(
            &format!("slow/idle connection #{i}"),
            vec![],
            vec![],
            vec![],
            head_cut,
        ));
    }
    let (raw, _) = ctx.sig_req(SIG);
    let head = raw.head_bytes();
    ctx.add(slow(
        "slow/head trickled one byte every 100ms",
        vec![Step::Trickle {
            bytes: [head.clone(), head.clone(), head.clone()].concat(),
            every: trickle,
        }],
        vec![],
        vec![],
        head_cut,
    ));
    ctx.add(slow(
        "slow/head without its final empty line",
        vec![Step::Send(head[..head.len() - 2].to_vec())],
        vec![],
        vec![],
        head_cut,
    ));
    ctx.add(slow(
        "slow/request line only",
        vec![Step::Send(b"POST /hooks/sig HTTP/1.1\r\n".to_vec())],
        vec![],
        vec![],
        head_cut,
    ));
    ctx.add(slow(
        "slow/endless header value",
        vec![
            Step::Send(b"POST /hooks/sig HTTP/1.1\r\nx-pad: ".to_vec()),
            Step::Trickle {
                bytes: vec![b'a'; 60],
                every: trickle,
            },
        ],
        vec![],
        vec![],
        head_cut,
    ));
    let (raw, _) = ctx.sig_req(SIG);
    ctx.add(slow(
        "slow/body: 10 of 700 announced bytes, then silence",
        vec![
            Step::Send(raw.head_bytes()),
            Step::Send(raw.body[..10].to_vec()),
        ],
        vec![Exp::Error(408, "request_timeout")],
        vec![],
        body_cut,
    ));
    let (raw, _) = ctx.sig_req(SIG);
    ctx.add(slow(
        "slow/body trickled one byte every 100ms",
        vec![
            Step::Send(raw.head_bytes()),
            Step::Trickle {
                bytes: raw.body.clone(),
                every: trickle,
            },
        ],
        vec![Exp::Error(408, "request_timeout")],
        vec![],
        body_cut,
    ));
    let (raw, _) = ctx.sig_req(SIG);
    let chunked = raw
        .clone()
        .remove("content-length")
        .header("transfer-encoding", "chunked");
    let trickled: Vec<u8> = raw
        .body
        .iter()
        .flat_map(|b| [b"1\r\n".as_slice(), &[*b], b"\r\n"].concat())
        .collect();
    ctx.add(slow(
        "slow/chunked body, one 1-byte chunk at a time",
        vec![
            Step::Send(chunked.head_bytes()),
            Step::Trickle {
                bytes: trickled,
                every: Duration::from_millis(20),
            },
        ],
        vec![Exp::Error(408, "request_timeout")],
        vec![],
        body_cut,
    ));
    let (raw, _) = ctx.sig_req(SIG);
    let chunked = raw
        .clone()
        .remove("content-length")
        .header("transfer-encoding", "chunked");
    let mut b = chunked.head_bytes();
    b.extend_from_slice(format!("{:x}\r\n", raw.body.len()).as_bytes());
    b.extend_from_slice(&raw.body);
    b.extend_from_slice(b"\r\n0\r\n");
    ctx.add(slow(
        "slow/chunked body complete but for the final empty line",
        vec![Step::Send(b)],
        vec![Exp::Error(408, "request_timeout")],
        vec![],
        body_cut,
    ));
    // The chunk announces more than is sent: hyper keeps reading.
    let (raw, body) = chunked_req(ctx, "chunked");
    let framed = [
        format!("{:x}\r\n", body.len() + 50).as_bytes(),
        &body,
        b"\r\n0\r\n\r\n",
    ]
    .concat();
    ctx.add(slow(
        "slow/chunk size larger than the data sent",
        vec![Step::Send(raw.body(&framed).bytes())],
        vec![Exp::Error(408, "request_timeout")],
        vec![],
        body_cut,
    ));
    let (raw, _) = ctx.sig_req(SIG);
    let raw = raw.header("expect", "100-continue");
    ctx.add(slow(
        "slow/expect 100-continue, then no body",
        vec![Step::Send(raw.head_bytes())],
        vec![Exp::Continue, Exp::Error(408, "request_timeout")],
        vec![],
        body_cut,
    ));
    // Slow but within the limits: accepted.
    let (raw, body) = ctx.sig_req(SIG);
    let bytes = raw.bytes();
    let fwd = ctx.fwd(SIG, SIG, &body);
    ctx.add(slow(
        "slow/request in three parts within the timeouts",
        vec![
            Step::Send(bytes[..20].to_vec()),
            Step::Pause(Duration::from_millis(150)),
            Step::Send(bytes[20..raw.head_bytes().len() + 5].to_vec()),
            Step::Pause(Duration::from_millis(150)),
            Step::Send(bytes[raw.head_bytes().len() + 5..].to_vec()),
        ],
        vec![Exp::Accepted],
        vec![fwd],
        HEADER_TIMEOUT + BODY_TIMEOUT + SLACK,
    ));
    // A kept-alive connection left idle after its answer is closed too.
    let (raw, body) = ctx.sig_req(SIG);
    let raw = raw.set("connection", "keep-alive");
    let fwd = ctx.fwd(SIG, SIG, &body);
    ctx.add(slow(
        "slow/idle after a kept-alive answer",
        vec![Step::Send(raw.bytes())],
        vec![Exp::Accepted],
        vec![fwd],
        head_cut + Duration::from_secs(1),
    ));
}

/// A named transformation of a valid signature header value, and the error
/// code it must get (`None`: still accepted).
type Variant<T> = (&'static str, Box<dyn Fn(&str) -> T>, Option<&'static str>);

fn signature_headers(ctx: &mut Ctx) {
    let n = "sig";
    let (raw, body) = ctx.sig_req(SIG);
    ctx.accepted(&format!("{n}/valid"), SIG, SIG, &raw, &body);
    let (raw, _) = ctx.sig_req(SIG);
    ctx.refused(
        &format!("{n}/missing"),
        &raw.remove("x-sigsentry-signature"),
        401,
        "signature_missing",
    );

    // One header, each value a variation of the valid one.
    let variants: Vec<Variant<Vec<u8>>> = vec![
        (
            "empty value",
            Box::new(|_| b"".to_vec()),
            Some("signature_malformed"),
        ),
        (
            "prefix only",
            Box::new(|_| b"sha256=".to_vec()),
            Some("signature_malformed"),
        ),
        (
            "prefix without =",
            Box::new(|_| b"sha256".to_vec()),
            Some("signature_malformed"),
        ),
        (
            "uppercase prefix",
            Box::new(|s| s.replace("sha256=", "SHA256=").into_bytes()),
            Some("signature_malformed"),
        ),
        (
            "sha1 prefix",
            Box::new(|s| s.replace("sha256=", "sha1=").into_bytes()),
            Some("signature_malformed"),
        ),
        (
            "prefix twice",
            Box::new(|s| s.replace("sha256=", "sha256=sha256=").into_bytes()),
            Some("signature_malformed"),
        ),
        (
            "no prefix",
            Box::new(|s| s.replace("sha256=", "").into_bytes()),
            Some("signature_malformed"),
        ),
        (
            "trailing semicolon",
            Box::new(|s| format!("{s};").into_bytes()),
            Some("signature_malformed"),
        ),
        (
            "odd length",
            Box::new(|s| s.as_bytes()[..s.len() - 1].to_vec()),
            Some("signature_malformed"),
        ),
        (
            "one byte short",
            Box::new(|s| s.as_bytes()[..s.len() - 2].to_vec()),
            Some("signature_mismatch"),
        ),
        (
            "one byte long",
            Box::new(|s| format!("{s}00").into_bytes()),
            Some("signature_mismatch"),
        ),
        (
            "twice in one value",
            Box::new(|s| format!("{s},{s}").into_bytes()),
            Some("signature_malformed"),
        ),
        (
            "space inside",
            Box::new(|s| format!("{} {}", &s[..20], &s[20..]).into_bytes()),
            Some("signature_malformed"),
        ),
        (
            "tab after prefix",
            Box::new(|s| s.replace("sha256=", "sha256=\t").into_bytes()),
            Some("signature_malformed"),
        ),
        (
            "0x prefix on hex",
            Box::new(|s| s.replace("sha256=", "sha256=0x").into_bytes()),
            Some("signature_malformed"),
        ),
        (
            "all zeros",
            Box::new(|_| format!("sha256={}", "0".repeat(64)).into_bytes()),
            Some("signature_mismatch"),
        ),
        (
            "latin-1 byte (obs-text)",
            Box::new(|s| [s.as_bytes(), b"\xe9"].concat()),
            Some("signature_malformed"),
        ),
        (
            "UTF-8 character",
            Box::new(|s| format!("{s}é").into_bytes()),
            Some("signature_malformed"),
        ),
        (
            "60 KB of hex",
            Box::new(|_| format!("sha256={}", "ab".repeat(30_000)).into_bytes()),
            Some("signature_mismatch"),
        ),
        (
            "30 KB of hex",
            Box::new(|_| format!("sha256={}", "cd".repeat(15_000)).into_bytes()),
            Some("signature_mismatch"),
        ),
        (
            "300 KB of hex: past the head limit",
            Box::new(|_| format!("sha256={}", "cd".repeat(150_000)).into_bytes()),
            Some("headers_too_large"),
        ),
        // Hex is read case-insensitively and the value is trimmed.
        (
            "uppercase hex",
            Box::new(|s| format!("sha256={}", s["sha256=".len()..].to_uppercase()).into_bytes()),
            None,
        ),
        (
            "surrounding spaces",
            Box::new(|s| format!("   {s}   ").into_bytes()),
            None,
        ),
    ];
    for (what, f, code) in variants {
        let (raw, body) = ctx.sig_req(SIG);
        let sig = ctx.sig(&body);
        let value = f(&sig);
        let raw = raw.set("x-sigsentry-signature", &value);
        let name = format!("{n}/{what}");
        match code {
            Some("headers_too_large") => ctx.refused(&name, &raw, 431, "headers_too_large"),
            Some(code) => ctx.refused(&name, &raw, 401, code),
            None => ctx.accepted(&name, SIG, SIG, &raw, &body),
        }
    }

    // Signed with something else.
    let (raw, body) = ctx.sig_req(SIG);
    let other = ctx.sig(b"another body");
    ctx.refused(
        &format!("{n}/signature of another body"),
        &raw.set("x-sigsentry-signature", other),
        401,
        "signature_mismatch",
    );
    let wrong = hv(
        &common::sign("sigsentry", "not-the-secret", &body, None, ctx.now),
        "x-sigsentry-signature",
    );
    let (raw, _) = ctx.sig_req(SIG);
    ctx.refused(
        &format!("{n}/wrong secret"),
        &raw.set("x-sigsentry-signature", wrong),
        401,
        "signature_mismatch",
    );
    let (raw, body) = ctx.sig_req(SIG);
    let mut longer = body.clone();
    longer.push(b' ');
    let raw = raw
        .body(&longer)
        .set("content-length", longer.len().to_string());
    ctx.refused(
        &format!("{n}/body with one more space"),
        &raw,
        401,
        "signature_mismatch",
    );

    // Repeated headers: any candidate may match (rotation), at most 16
    // well-formed candidates are compared, undecodable ones do not count.
    let wrong_hex = |i: usize| format!("sha256={:064x}", i + 1);
    let cases: Vec<(&str, Vec<String>, bool, Option<&'static str>)> = vec![
        ("malformed then valid", vec!["sha256=zz".into()], true, None),
        ("valid twice", vec![], true, None),
        (
            "two wrong",
            vec![wrong_hex(0), wrong_hex(1)],
            false,
            Some("signature_mismatch"),
        ),
        (
            "two malformed",
            vec!["sha256=zz".into(), "sha256=yy".into()],
            false,
            Some("signature_malformed"),
        ),
        (
            "malformed and wrong",
            vec!["sha256=zz".into(), wrong_hex(2)],
            false,
            Some("signature_mismatch"),
        ),
        (
            "15 wrong then valid",
            (0..MAX_CANDIDATES - 1).map(wrong_hex).collect(),
            true,
            None,
        ),
        (
            "16 wrong then valid (17th ignored)",
            (0..MAX_CANDIDATES).map(wrong_hex).collect(),
            true,
            Some("signature_mismatch"),
        ),
        (
            "16 malformed then valid",
            (0..MAX_CANDIDATES)
                .map(|i| format!("sha256=zz{i}"))
                .collect(),
            true,
            None,
        ),
        (
            "90 wrong then valid",
            (0..90).map(wrong_hex).collect(),
            true,
            Some("signature_mismatch"),
        ),
    ];
    for (what, before, with_valid, code) in cases {
        let (mut raw, body) = ctx.sig_req(SIG);
        let sig = ctx.sig(&body);
        raw = raw.remove("x-sigsentry-signature");
        for v in &before {
            raw = raw.header("x-sigsentry-signature", v);
        }
        if with_valid {
            raw = raw.header("x-sigsentry-signature", &sig);
            if what == "valid twice" {
                raw = raw.header("x-sigsentry-signature", &sig);
            }
        }
        let name = format!("{n}/repeated: {what}");
        match code {
            Some(code) => ctx.refused(&name, &raw, 401, code),
            None => ctx.accepted(&name, SIG, SIG, &raw, &body),
        }
    }
    // More signature headers than hyper takes header lines.
    let (mut raw, _) = ctx.sig_req(SIG);
    for i in 0..150 {
        raw = raw.header("x-sigsentry-signature", wrong_hex(i));
    }
    ctx.hyper(&format!("{n}/repeated: 150 headers"), &raw, 431);

    // Header names are case-insensitive; their syntax is hyper's.
    let (raw, body) = ctx.sig_req(SIG);
    let sig = ctx.sig(&body);
    let raw = raw
        .remove("x-sigsentry-signature")
        .header("X-SIGSENTRY-SIGNATURE", &sig);
    ctx.accepted(&format!("{n}/uppercase header name"), SIG, SIG, &raw, &body);
    let (raw, body) = ctx.sig_req(SIG);
    let sig = ctx.sig(&body);
    let raw = raw
        .remove("x-sigsentry-signature")
        .raw_line(format!("x-sigsentry-signature : {sig}"));
    ctx.hyper(&format!("{n}/space before the colon"), &raw, 400);
    let (raw, body) = ctx.sig_req(SIG);
    let sig = ctx.sig(&body);
    let raw = raw
        .remove("x-sigsentry-signature")
        .raw_line(format!("x-sigsentry-signature: {}", &sig[..30]))
        .raw_line(format!(" {}", &sig[30..]));
    ctx.hyper(&format!("{n}/folded over two lines (obs-fold)"), &raw, 400);
    let (raw, body) = ctx.sig_req(SIG);
    let sig = ctx.sig(&body);
    let raw = raw
        .remove("x-sigsentry-signature")
        .raw_line(format!("x-sigsentry-signature:{sig}"));
    ctx.accepted(
        &format!("{n}/no space after the colon"),
        SIG,
        SIG,
        &raw,
        &body,
    );
    // A signature in a chunked trailer is not a header: never honoured.
    let (raw, body) = ctx.sig_req(SIG);
    let sig = ctx.sig(&body);
    let chunked = raw
        .remove("x-sigsentry-signature")
        .remove("content-length")
        .header("transfer-encoding", "chunked");
    let mut b = chunked.head_bytes();
    b.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
    b.extend_from_slice(&body);
    b.extend_from_slice(format!("\r\n0\r\nx-sigsentry-signature: {sig}\r\n\r\n").as_bytes());
    ctx.add(Case {
        name: format!("{n}/only in a chunked trailer"),
        steps: vec![Step::Send(b)],
        expect: vec![Exp::Error(401, "signature_missing")],
        forwards: vec![],
        within: None,
        head: false,
        slow: false,
        dead: vec![],
    });
    // Headers a sender must not be able to set for the upstream: dropped
    // or replaced (checked on everything the upstream receives).
    let (raw, body) = ctx.sig_req(SIG);
    let raw = raw
        .header("x-hookgate-delivery-id", "FORGED-id")
        .header("x-hookgate-verified", "FORGED")
        .header("x-forwarded-for", "6.6.6.6, FORGED")
        .header("x-forwarded-proto", "FORGED")
        .header("forwarded", "for=FORGED")
        .header("x-real-ip", "FORGED");
    ctx.accepted(
        &format!("{n}/forged hookgate and forwarded headers"),
        SIG,
        SIG,
        &raw,
        &body,
    );
    let (raw, body) = ctx.sig_req(SIG);
    let raw = raw.set("connection", "close, x-sigsentry-signature");
    ctx.accepted(
        &format!("{n}/connection header naming the signature"),
        SIG,
        SIG,
        &raw,
        &body,
    );
}

fn standard_webhooks(ctx: &mut Ctx) {
    let n = "standard-webhooks";
    // (what, id, ts header values, signature transform, expected code)
    let now = ctx.now;
    let req = |ctx: &mut Ctx, ts: i64| {
        let id = ctx.uid("msg");
        let body = format!(r#"{{"type":"invoice.paid","data":{{"n":"{id}"}}}}"#).into_bytes();
        let (id, t, sig) = ctx.std_headers(&body, &id, ts);
        (body, id, t, sig)
    };
    let build = |body: &[u8], id: Option<&str>, ts: &[&str], sigs: &[&str]| {
        let mut r = Raw::post(STD, body);
        if let Some(id) = id {
            r = r.header("webhook-id", id);
        }
        for t in ts {
            r = r.header("webhook-timestamp", t);
        }
        for s in sigs {
            r = r.header("webhook-signature", s);
        }
        r
    };
    let (body, id, t, sig) = req(ctx, now);
    ctx.accepted(
        &format!("{n}/valid"),
        STD,
        STD,
        &build(&body, Some(&id), &[&t], &[&sig]),
        &body,
    );
    let (body, _, t, sig) = req(ctx, now);
    ctx.refused(
        &format!("{n}/no webhook-id"),
        &build(&body, None, &[&t], &[&sig]),
        401,
        "signature_malformed",
    );
    let (body, id, _, sig) = req(ctx, now);
    ctx.refused(
        &format!("{n}/no webhook-timestamp"),
        &build(&body, Some(&id), &[], &[&sig]),
        401,
        "signature_malformed",
    );
    for (what, delta) in [("stale", -3600), ("future", 3600)] {
        let (body, id, t, sig) = req(ctx, now + delta);
        ctx.refused(
            &format!("{n}/{what} timestamp"),
            &build(&body, Some(&id), &[&t], &[&sig]),
            401,
            "timestamp_out_of_tolerance",
        );
    }
    for bad in [
        "abc",
        "-5",
        "+1",
        "1e9",
        "99999999999999999999",
        "0x10",
        "1.5",
        "",
    ] {
        let (body, id, _, sig) = req(ctx, now);
        ctx.refused(
            &format!("{n}/timestamp {bad:?}"),
            &build(&body, Some(&id), &[bad], &[&sig]),
            401,
            "signature_malformed",
        );
    }
    let (body, id, t, sig) = req(ctx, now);
    let other = (now - 1).to_string();
    ctx.refused(
        &format!("{n}/two different timestamps"),
        &build(&body, Some(&id), &[&t, &other], &[&sig]),
        401,
        "signature_malformed",
    );
    let (body, id, t, sig) = req(ctx, now);
    ctx.accepted(
        &format!("{n}/the same timestamp twice"),
        STD,
        STD,
        &build(&body, Some(&id), &[&t, &t], &[&sig]),
        &body,
    );
    let (body, id, t, sig) = req(ctx, now);
    let raw = build(&body, Some(&id), &[&t], &[&sig]).header("webhook-id", "msg_other");
    ctx.refused(
        &format!("{n}/two different ids"),
        &raw,
        401,
        "signature_malformed",
    );
    let (body, _, t, sig) = req(ctx, now);
    ctx.refused(
        &format!("{n}/another id"),
        &build(&body, Some("msg_not_signed"), &[&t], &[&sig]),
        401,
        "signature_mismatch",
    );
    let b64 = |s: &str| s.strip_prefix("v1,").unwrap().to_string();
    let variants: Vec<Variant<String>> = vec![
        (
            "v1 with no signature",
            Box::new(|_| "v1,".into()),
            Some("signature_malformed"),
        ),
        (
            "empty value",
            Box::new(|_| "".into()),
            Some("signature_malformed"),
        ),
        (
            "not base64",
            Box::new(|_| "v1,!!!!not-base64!!!!".into()),
            Some("signature_malformed"),
        ),
        (
            "space instead of comma",
            Box::new(move |s| format!("v1 {}", b64(s))),
            Some("signature_malformed"),
        ),
        (
            "unknown version only",
            Box::new(|s| s.replace("v1,", "v2,")),
            Some("signature_mismatch"),
        ),
        (
            "v1a version",
            Box::new(|s| s.replace("v1,", "v1a,")),
            Some("signature_mismatch"),
        ),
        (
            "extra padding",
            Box::new(|s| format!("{s}==")),
            Some("signature_malformed"),
        ),
        (
            "base64 of 31 bytes",
            Box::new(|_| {
                format!(
                    "v1,{}",
                    base64::engine::general_purpose::STANDARD.encode([7u8; 31])
                )
            }),
            Some("signature_mismatch"),
        ),
        (
            "unpadded",
            Box::new(|s| s.trim_end_matches('=').to_string()),
            None,
        ),
        (
            "after a malformed entry",
            Box::new(|s| format!("v1,%%% {s}")),
            None,
        ),
        (
            "after an unknown version",
            Box::new(|s| format!("v9,abcd {s}")),
            None,
        ),
        (
            "among tabs and spaces",
            Box::new(|s| format!(" \t {s} \t ")),
            None,
        ),
    ];
    for (what, f, code) in variants {
        let (body, id, t, sig) = req(ctx, now);
        let raw = build(&body, Some(&id), &[&t], &[&f(&sig)]);
        let name = format!("{n}/signature: {what}");
        match code {
            Some(code) => ctx.refused(&name, &raw, 401, code),
            None => ctx.accepted(&name, STD, STD, &raw, &body),
        }
    }
    // The header dedup key (webhook-id) is read only in queue mode.
    let long_id = format!("msg_{}", "x".repeat(MAX_EVENT_ID + 10));
    let body = br#"{"type":"long id"}"#.to_vec();
    let (id, t, sig) = ctx.std_headers(&body, &long_id, now);
    let raw = build(&body, Some(&id), &[&t], &[&sig]);
    ctx.by_event_id(
        &format!("{n}/webhook-id over 1 KiB"),
        STD,
        &raw,
        &body,
        Some("dedup_key_invalid"),
    );
}

fn stripe(ctx: &mut Ctx) {
    let n = "stripe";
    let now = ctx.now;
    let stale = now - 3600;
    // Each entry list is built from the valid v1 of a fresh body.
    type Build = Box<dyn Fn(i64, &str, &str) -> Vec<String>>;
    let cases: Vec<(&str, Build, Option<&'static str>)> = vec![
        (
            "valid",
            Box::new(|now, v1, _| vec![format!("t={now},v1={v1}")]),
            None,
        ),
        (
            "timestamp only",
            Box::new(|now, _, _| vec![format!("t={now}")]),
            Some("signature_malformed"),
        ),
        (
            "no timestamp",
            Box::new(|_, v1, _| vec![format!("v1={v1}")]),
            Some("signature_malformed"),
        ),
        (
            "timestamp twice",
            Box::new(|now, v1, _| vec![format!("t={now},t={now},v1={v1}")]),
            Some("signature_malformed"),
        ),
        (
            "entry without =",
            Box::new(|now, v1, _| vec![format!("t={now},v1={v1},junk")]),
            Some("signature_malformed"),
        ),
        (
            "empty key",
            Box::new(|now, v1, _| vec![format!("t={now},=x,v1={v1}")]),
            Some("signature_malformed"),
        ),
        (
            "v0 only",
            Box::new(|now, v1, _| vec![format!("t={now},v0={v1}")]),
            Some("signature_mismatch"),
        ),
        (
            "bad then valid v1",
            Box::new(|now, v1, _| vec![format!("t={now},v1=zz,v1={v1}")]),
            None,
        ),
        (
            "semicolons",
            Box::new(|now, v1, _| vec![format!("t={now};v1={v1}")]),
            Some("signature_malformed"),
        ),
        (
            "plus sign on t",
            Box::new(|now, v1, _| vec![format!("t=+{now},v1={v1}")]),
            Some("signature_malformed"),
        ),
        (
            "spaces everywhere",
            Box::new(|now, v1, _| vec![format!(" t = {now} ,  v1 = {v1} ")]),
            None,
        ),
        (
            "two headers, different t",
            Box::new(|now, v1, _| vec![format!("t={now},v1=00"), format!("t={},v1={v1}", now - 1)]),
            Some("signature_malformed"),
        ),
        (
            "two headers, same t",
            Box::new(|now, v1, _| vec![format!("t={now},v1=00"), format!("t={now},v1={v1}")]),
            None,
        ),
        (
            "second header without t",
            Box::new(|now, v1, _| vec![format!("t={now},v1={v1}"), format!("v1={v1}")]),
            Some("signature_malformed"),
        ),
        (
            "20 wrong v1 then valid",
            Box::new(|now, v1, _| {
                let mut e = vec![format!("t={now}")];
                e.extend((0..20).map(|i| format!("v1={:064x}", i + 1)));
                e.push(format!("v1={v1}"));
                vec![e.join(",")]
            }),
            Some("signature_mismatch"),
        ),
        (
            "stale, signed as such",
            Box::new(|_, _, stale_v1| vec![format!("t={},v1={stale_v1}", common::now() - 3600)]),
            Some("timestamp_out_of_tolerance"),
        ),
    ];
    for (what, f, code) in cases {
        let body = ctx.stripe_body();
        let v1 = ctx.stripe_v1(&body, now);
        let stale_v1 = ctx.stripe_v1(&body, stale);
        let mut raw = Raw::post(STRIPE, &body);
        for v in f(now, &v1, &stale_v1) {
            raw = raw.header("stripe-signature", v);
        }
        let name = format!("{n}/{what}");
        match code {
            Some(code) => ctx.refused(&name, &raw, 401, code),
            None => ctx.accepted(&name, STRIPE, STRIPE, &raw, &body),
        }
    }
}

fn shopify_and_custom(ctx: &mut Ctx) {
    let n = "shopify";
    let variants: Vec<Variant<String>> = vec![
        ("valid", Box::new(|s| s.to_string()), None),
        (
            "space inside",
            Box::new(|s| format!("{} {}", &s[..10], &s[10..])),
            Some("signature_malformed"),
        ),
        (
            "hex instead of base64",
            Box::new(|_| "ab".repeat(32)),
            Some("signature_mismatch"),
        ),
        (
            "not base64",
            Box::new(|_| "!!!!".into()),
            Some("signature_malformed"),
        ),
        (
            "empty",
            Box::new(|_| "".into()),
            Some("signature_malformed"),
        ),
        (
            "url-safe alphabet",
            Box::new(|_| "-_-_".repeat(11)),
            Some("signature_malformed"),
        ),
        (
            "one symbol short",
            Box::new(|s| s.trim_end_matches('=')[..41].to_string()),
            Some("signature_malformed"),
        ),
    ];
    for (what, f, code) in variants {
        let body = ctx.stripe_body();
        let sig = ctx.shopify_sig(&body);
        let raw = Raw::post(SHOPIFY, &body).header("x-shopify-hmac-sha256", f(&sig));
        let name = format!("{n}/{what}");
        match code {
            Some(code) => ctx.refused(&name, &raw, 401, code),
            None => ctx.accepted(&name, SHOPIFY, SHOPIFY, &raw, &body),
        }
    }

    let n = "custom";
    let now = ctx.now;
    let req = |id: Option<&str>, ts: Option<&str>, sig: &str| {
        let body = br#"{"kind":"acme"}"#.to_vec();
        let mut r = Raw::post(CUSTOM, &body).header("x-acme-signature", sig);
        if let Some(id) = id {
            r = r.header("x-acme-id", id);
        }
        if let Some(ts) = ts {
            r = r.header("x-acme-timestamp", ts);
        }
        (r, body)
    };
    let body = br#"{"kind":"acme"}"#.to_vec();
    let id = ctx.uid("acme");
    let sig = ctx.custom_sig(&body, &id, now);
    let (raw, body) = req(Some(&id), Some(&now.to_string()), &sig);
    ctx.accepted(&format!("{n}/valid"), CUSTOM, CUSTOM, &raw, &body);
    let id = ctx.uid("acme");
    let sig = ctx.custom_sig(&body, &id, now);
    let (raw, _) = req(None, Some(&now.to_string()), &sig);
    ctx.refused(
        &format!("{n}/no id header"),
        &raw,
        401,
        "signature_malformed",
    );
    let (raw, _) = req(Some(&id), None, &sig);
    ctx.refused(
        &format!("{n}/no timestamp header"),
        &raw,
        401,
        "signature_malformed",
    );
    let (raw, _) = req(
        Some(&id),
        Some(&now.to_string()),
        &sig.replace("v1=", "v2="),
    );
    ctx.refused(
        &format!("{n}/wrong prefix"),
        &raw,
        401,
        "signature_malformed",
    );
    let padded = format!("{sig}===");
    let (raw, _) = req(Some(&id), Some(&now.to_string()), &padded);
    ctx.refused(
        &format!("{n}/padding past the end"),
        &raw,
        401,
        "signature_malformed",
    );
    let (raw, _) = req(Some(&id), Some(&now.to_string()), "v1=+/+/+/+/");
    ctx.refused(
        &format!("{n}/standard alphabet"),
        &raw,
        401,
        "signature_malformed",
    );
    let (raw, _) = req(
        Some(&id),
        Some(&now.to_string()),
        &format!("v1={}", "A".repeat(86)),
    );
    ctx.refused(
        &format!("{n}/64 zero bytes"),
        &raw,
        401,
        "signature_mismatch",
    );
    // Non-ASCII id: the signature cannot read it.
    let (raw, _) = req(Some("caf\u{e9}"), Some(&now.to_string()), &sig);
    ctx.refused(
        &format!("{n}/UTF-8 id header"),
        &raw,
        401,
        "signature_malformed",
    );
}

/// Bodies for the route whose dedup key is `body:/event_id` (required),
/// all validly signed: refused in queue mode, forwarded in passthrough.
fn event_id_bodies(ctx: &mut Ctx) {
    let n = "event-id";
    let mut cases: Vec<(String, Vec<u8>, Option<&'static str>)> = vec![];
    let mut add = |what: &str, body: Vec<u8>, code: Option<&'static str>| {
        cases.push((what.to_string(), body, code))
    };
    add(
        "not JSON",
        b"not json at all".to_vec(),
        Some("invalid_json"),
    );
    add("empty body", b"".to_vec(), Some("invalid_json"));
    add(
        "truncated object",
        br#"{"event_id":"e_trunc""#.to_vec(),
        Some("invalid_json"),
    );
    add(
        "trailing garbage",
        br#"{"event_id":"e_trail"} trailing"#.to_vec(),
        Some("invalid_json"),
    );
    add(
        "two documents",
        br#"{"event_id":"e_two"}{"event_id":"e_two"}"#.to_vec(),
        Some("invalid_json"),
    );
    add(
        "byte order mark",
        b"\xef\xbb\xbf{\"event_id\":\"e_bom\"}".to_vec(),
        Some("invalid_json"),
    );
    add(
        "single quotes",
        b"{'event_id':'e_sq'}".to_vec(),
        Some("invalid_json"),
    );
    add("NaN", br#"{"event_id":NaN}"#.to_vec(), Some("invalid_json"));
    add(
        "trailing comma",
        br#"{"event_id":"e_comma",}"#.to_vec(),
        Some("invalid_json"),
    );
    add(
        "comment",
        b"{\"event_id\":\"e_c\" /* c */}".to_vec(),
        Some("invalid_json"),
    );
    add(
        "invalid UTF-8 in the id",
        b"{\"event_id\":\"e_\xff\"}".to_vec(),
        Some("invalid_json"),
    );
    add(
        "invalid UTF-8 elsewhere",
        b"{\"event_id\":\"e_utf8\",\"x\":\"\xc3\x28\"}".to_vec(),
        Some("invalid_json"),
    );
    add(
        "raw control character in a string",
        b"{\"event_id\":\"e_\x01\"}".to_vec(),
        Some("invalid_json"),
    );
    add(
        "NUL byte",
        b"{\"event_id\":\"e_nul\"}\x00".to_vec(),
        Some("invalid_json"),
    );
    add(
        "number out of range",
        br#"{"event_id":1e400}"#.to_vec(),
        Some("invalid_json"),
    );
    add(
        "object id",
        br#"{"event_id":{"a":1}}"#.to_vec(),
        Some("dedup_key_invalid"),
    );
    add(
        "array id",
        br#"{"event_id":["e"]}"#.to_vec(),
        Some("dedup_key_invalid"),
    );
    add(
        "boolean id",
        br#"{"event_id":true}"#.to_vec(),
        Some("dedup_key_invalid"),
    );
    add(
        "null id",
        br#"{"event_id":null}"#.to_vec(),
        Some("dedup_key_missing"),
    );
    add(
        "empty id",
        br#"{"event_id":""}"#.to_vec(),
        Some("dedup_key_missing"),
    );
    add(
        "no id",
        br#"{"other":"x"}"#.to_vec(),
        Some("dedup_key_missing"),
    );
    add(
        "id in a nested object",
        br#"{"data":{"event_id":"e_nested"}}"#.to_vec(),
        Some("dedup_key_missing"),
    );
    add(
        "top-level array",
        br#"[{"event_id":"e_arr"}]"#.to_vec(),
        Some("dedup_key_missing"),
    );
    add(
        "top-level string",
        br#""event_id""#.to_vec(),
        Some("dedup_key_missing"),
    );
    add(
        "top-level number",
        b"42".to_vec(),
        Some("dedup_key_missing"),
    );
    add(
        "id one byte over 1 KiB",
        format!(r#"{{"event_id":"{}"}}"#, "x".repeat(MAX_EVENT_ID + 1)).into_bytes(),
        Some("dedup_key_invalid"),
    );
    // Deep nesting: valid JSON however deep (no stack is spent on it), so
    // only what the id is matters.
    let deep = |open: &str, close: &str, n: usize| format!("{}{}", open.repeat(n), close.repeat(n));
    add(
        "id nested 20 arrays deep",
        format!(r#"{{"event_id":{}}}"#, deep("[", "]", 20)).into_bytes(),
        Some("dedup_key_invalid"),
    );
    add(
        "id nested 20000 arrays deep",
        format!(r#"{{"event_id":{}}}"#, deep("[", "]", 20_000)).into_bytes(),
        Some("dedup_key_invalid"),
    );
    add(
        "id nested 10000 objects deep",
        format!(
            r#"{{"event_id":{}1{}}}"#,
            r#"{"a":"#.repeat(10_000),
            "}".repeat(10_000)
        )
        .into_bytes(),
        Some("dedup_key_invalid"),
    );
    add(
        "20000 unclosed arrays",
        "[".repeat(20_000).into_bytes(),
        Some("invalid_json"),
    );
    add(
        "60000 unclosed arrays",
        "[".repeat(60_000).into_bytes(),
        Some("invalid_json"),
    );
    add(
        "deep array, never closed, beside the id",
        format!(r#"{{"event_id":"e_open","x":{}}}"#, "[".repeat(20_000)).into_bytes(),
        Some("invalid_json"),
    );
    add(
        "top-level array 20000 deep",
        deep("[", "]", 20_000).into_bytes(),
        Some("dedup_key_missing"),
    );
    for (what, body, code) in cases {
        let raw = ctx.evt_req(&body);
        ctx.by_event_id(&format!("{n}/{what}"), EVT, &raw, &body, code);
    }

    // Accepted ids (unique, so never duplicates of one another).
    let u = ctx.uid("e");
    let accepted: Vec<(&str, String)> = vec![
        ("string id", format!(r#"{{"event_id":"{u}_s"}}"#)),
        (
            "id of exactly 1 KiB",
            format!(
                r#"{{"event_id":"{}"}}"#,
                &format!("{u}_k").repeat(MAX_EVENT_ID)[..MAX_EVENT_ID]
            ),
        ),
        ("escaped id", format!(r#"{{"event_id":"\u0041{u}\n\t"}}"#)),
        (
            "id beside 100 nested arrays",
            format!(
                r#"{{"event_id":"{u}_d100","x":{}{}}}"#,
                "[".repeat(100),
                "]".repeat(100)
            ),
        ),
        (
            "id beside 20000 nested arrays",
            format!(
                r#"{{"event_id":"{u}_d20k","x":{}{}}}"#,
                "[".repeat(20_000),
                "]".repeat(20_000)
            ),
        ),
        (
            "id beside a lone surrogate escape",
            format!(r#"{{"event_id":"{u}_sur","x":"\ud800"}}"#),
        ),
        (
            "repeated key, last wins",
            format!(r#"{{"event_id":"{u}_first","event_id":"{u}_last"}}"#),
        ),
        (
            "whitespace everywhere",
            format!(" \n\t{{ \"event_id\" :\r\n \"{u}_ws\" }} \n"),
        ),
    ];
    for (what, body) in accepted {
        let body = body.into_bytes();
        let raw = ctx.evt_req(&body);
        ctx.accepted(&format!("{n}/{what}"), EVT, EVT, &raw, &body);
    }
    // A numeric id and the same id as a string are one event: the second
    // is a duplicate in queue mode (pipelined on one connection, so in order).
    let num = 7_000_000 + ctx.seq;
    ctx.seq += 1;
    let first = format!(r#"{{"event_id":{num}}}"#).into_bytes();
    let second = format!(r#"{{"event_id":"{num}","again":true}}"#).into_bytes();
    let r1 = ctx.evt_req(&first).remove("connection");
    let r2 = ctx.evt_req(&second);
    let mut fwds = vec![ctx.fwd(EVT, EVT, &first)];
    let second_exp = match ctx.mode {
        Mode::Queue => Exp::Duplicate,
        Mode::Passthrough => {
            fwds.push(ctx.fwd(EVT, EVT, &second));
            Exp::Accepted
        }
    };
    ctx.add(Case {
        name: format!("{n}/number then the same id as a string"),
        steps: vec![Step::Send([r1.bytes(), r2.bytes()].concat())],
        expect: vec![Exp::Accepted, second_exp],
        forwards: fwds,
        within: None,
        head: false,
        slow: false,
        dead: vec![],
    });
}

fn methods(ctx: &mut Ctx) {
    let n = "method";
    for m in [
        "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "post", "Post", "FOO", "PROPFIND",
        "M-SEARCH", "PRI",
    ] {
        let (raw, _) = ctx.sig_req(SIG);
        let raw = raw.line(format!("{m} {SIG} HTTP/1.1"));
        ctx.refused(&format!("{n}/{m}"), &raw, 405, "method_not_allowed");
    }
    let (raw, _) = ctx.sig_req(SIG);
    let raw = raw.line(format!("{} {SIG} HTTP/1.1", "X".repeat(2000)));
    ctx.refused(
        &format!("{n}/2000-character method"),
        &raw,
        405,
        "method_not_allowed",
    );
    let (raw, _) = ctx.sig_req(SIG);
    let raw = raw.line(format!("HEAD {SIG} HTTP/1.1"));
    ctx.add(Case {
        name: format!("{n}/HEAD"),
        steps: vec![Step::Send(raw.bytes())],
        expect: vec![Exp::Error(405, "method_not_allowed")],
        forwards: vec![],
        within: None,
        head: true,
        slow: false,
        dead: vec![],
    });
    for (what, m) in [
        ("parenthesis", "PO(ST"),
        ("slash", "PO/ST"),
        ("NUL", "PO\0ST"),
        ("latin-1", "P\u{d6}ST"),
    ] {
        let (raw, _) = ctx.sig_req(SIG);
        let raw = raw.line(format!("{m} {SIG} HTTP/1.1"));
        ctx.hyper(&format!("{n}/invalid character: {what}"), &raw, 400);
    }
    let (raw, _) = ctx.sig_req(SIG);
    ctx.refused(
        &format!("{n}/GET on an unknown path"),
        &raw.line("GET /nowhere HTTP/1.1"),
        404,
        "not_found",
    );
    let (raw, _) = ctx.sig_req(SIG);
    ctx.refused(
        &format!("{n}/OPTIONS *"),
        &raw.line("OPTIONS * HTTP/1.1"),
        404,
        "not_found",
    );
}

fn paths(ctx: &mut Ctx) {
    let n = "path";
    // Refused before the signature is even looked at: signed or not.
    let bad = [
        "/..",
        "/../admin",
        "/./x",
        "/.",
        "/%2e%2e/x",
        "/%2E%2E",
        "/.%2e/x",
        "/%2e./x",
        "/%2e",
        "/a/%2E",
        "/a%2fb",
        "/a%2Fb",
        "/a%5cb",
        "/a%5C",
        "/%00",
        "/a%00b",
        "/%ff",
        "/%c3%28",
        "/%zz",
        "/%2",
        "/%",
        "/a/b/../../..",
        "/%252e%252e%2f",
        "/..\\admin",
        "/a\\b",
        "/\\",
    ];
    for (i, b) in bad.iter().enumerate() {
        let target = format!("{SIG}{b}");
        let (raw, _) = ctx.sig_req(SIG);
        let mut raw = raw.line(format!("POST {target} HTTP/1.1"));
        if i % 2 == 1 {
            raw = raw.remove("x-sigsentry-signature");
        }
        // "%252e%252e%2f" decodes to "%2e%2e/" : the encoded slash is refused.
        ctx.refused(&format!("{n}/{target}"), &raw, 400, "invalid_path");
    }
    for r in [STD, STRIPE, CUSTOM] {
        let raw = Raw::post(&format!("{r}/../x"), b"{}");
        ctx.refused(
            &format!("{n}/{r}/../x unsigned"),
            &raw.line(format!("POST {r}/../x HTTP/1.1")),
            400,
            "invalid_path",
        );
    }
    let (raw, _) = ctx.sig_req(SIG);
    ctx.refused(
        &format!("{n}/absolute form with a dot segment"),
        &raw.line(format!("POST http://evil.example{SIG}/../admin HTTP/1.1")),
        400,
        "invalid_path",
    );
    // Forwarded below the upstream path: plain segments, the query as sent.
    for target in [
        format!("{SIG}/sub/path"),
        format!("{SIG}/a%20b/%C3%A9"),
        format!("{SIG}/..."),
        format!("{SIG}/.well-known"),
        format!("{SIG}//double"),
        format!("{SIG}?q=../../etc&x=%zz"),
        format!("{SIG}/x?"),
        // Neither traversal nor invalid: hyper takes them as they are.
        format!("{SIG}/\"x\""),
        format!("{SIG}/{{x}}"),
        format!("{SIG}/caf\u{e9}"),
    ] {
        let (raw, body) = ctx.sig_req(SIG);
        let raw = raw.line(format!("POST {target} HTTP/1.1"));
        ctx.accepted(&format!("{n}/{target}"), SIG, &target, &raw, &body);
    }
    let (raw, body) = ctx.sig_req(SIG);
    let target = format!("http://evil.example{SIG}/abs");
    ctx.accepted(
        &format!("{n}/absolute form"),
        SIG,
        &target,
        &raw.line(format!("POST {target} HTTP/1.1")),
        &body,
    );
    // Not a route.
    for target in [
        "/hooks/sigx",
        "/HOOKS/SIG",
        "/hooks",
        "/",
        "/hooks/si",
        "/up/sig",
        "/hooks/sig\\..\\x",
    ] {
        let (raw, _) = ctx.sig_req(SIG);
        ctx.refused(
            &format!("{n}/{target}"),
            &raw.line(format!("POST {target} HTTP/1.1")),
            404,
            "not_found",
        );
    }
    // What hyper refuses in a request target.
    for (what, target) in [
        ("raw non-UTF-8 byte", b"/hooks/sig/\xff".to_vec()),
        ("NUL", b"/hooks/sig/\x00".to_vec()),
        ("DEL", b"/hooks/sig/\x7f".to_vec()),
        ("no leading slash", b"hooks/sig".to_vec()),
        ("empty", b"".to_vec()),
        ("space", b"/hooks/sig/a b".to_vec()),
        ("latin-1 byte", b"/hooks/sig/caf\xe9".to_vec()),
    ] {
        let (raw, _) = ctx.sig_req(SIG);
        let raw = raw.line([b"POST ".as_slice(), &target, b" HTTP/1.1"].concat());
        ctx.hyper(&format!("{n}/{what} in the target"), &raw, 400);
    }
    let (raw, _) = ctx.sig_req(SIG);
    let long = format!("{SIG}/{}", "a".repeat(HYPER_MAX_URI));
    ctx.hyper(
        &format!("{n}/target over 65534 bytes"),
        &raw.line(format!("POST {long} HTTP/1.1")),
        414,
    );
    let (raw, _) = ctx.sig_req(SIG);
    let long = format!("{SIG}/{}", "a/".repeat(30_000));
    let raw = raw
        .line(format!("POST {long} HTTP/1.1"))
        .remove("x-sigsentry-signature");
    ctx.refused(
        &format!("{n}/60000-byte target"),
        &raw,
        401,
        "signature_missing",
    );
}

fn request_lines(ctx: &mut Ctx) {
    let n = "request-line";
    for (what, line) in [
        ("HTTP/1.2", "POST /hooks/sig HTTP/1.2"),
        ("HTTP/2.0", "POST /hooks/sig HTTP/2.0"),
        ("HTTP/0.9 form", "POST /hooks/sig"),
        ("lowercase version", "POST /hooks/sig http/1.1"),
        ("extra token", "POST /hooks/sig HTTP/1.1 extra"),
        ("two spaces", "POST  /hooks/sig HTTP/1.1"),
        ("tab separated", "POST\t/hooks/sig\tHTTP/1.1"),
        ("method only", "POST"),
        ("version first", "HTTP/1.1 POST /hooks/sig"),
    ] {
        let (raw, _) = ctx.sig_req(SIG);
        ctx.hyper(&format!("{n}/{what}"), &raw.line(line), 400);
    }
    let raw_cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "TLS ClientHello on the plain port",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
        ),
        ("NUL bytes", b"\0\0\0\0\r\n\r\n".to_vec()),
        (
            "binary junk",
            (0u8..=255)
                .rev()
                .collect::<Vec<u8>>()
                .repeat(2)
                .into_iter()
                .chain(*b"\r\n\r\n")
                .collect(),
        ),
        ("SSH banner", b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec()),
        (
            "bare CR line ends",
            b"POST /hooks/sig HTTP/1.1\rhost: x\r\r".to_vec(),
        ),
    ];
    for (what, bytes) in raw_cases {
        ctx.add(Case {
            name: format!("{n}/{what}"),
            steps: vec![Step::Send(bytes)],
            expect: vec![Exp::Hyper(400)],
            forwards: vec![],
            within: None,
            head: false,
            slow: false,
            dead: vec![],
        });
    }
    // An HTTP/2 connection preface: hyper closes without an answer.
    ctx.add(Case {
        name: format!("{n}/HTTP/2 prior-knowledge preface"),
        steps: vec![Step::Send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec())],
        expect: vec![],
        forwards: vec![],
        within: None,
        head: false,
        slow: false,
        dead: vec![],
    });
    ctx.add(Case {
        name: format!("{n}/connect and close at once"),
        steps: vec![Step::HalfClose],
        expect: vec![],
        forwards: vec![],
        within: None,
        head: false,
        slow: false,
        dead: vec![],
    });
    // Accepted forms.
    let (raw, body) = ctx.sig_req(SIG);
    ctx.accepted(
        &format!("{n}/HTTP/1.0"),
        SIG,
        SIG,
        &raw.clone()
            .line(format!("POST {SIG} HTTP/1.0"))
            .remove("connection"),
        &body,
    );
    let (raw, body) = ctx.sig_req(SIG);
    let mut bytes = b"\r\n\r\n".to_vec();
    bytes.extend_from_slice(&raw.bytes());
    let fwd = ctx.fwd(SIG, SIG, &body);
    ctx.add(Case {
        name: format!("{n}/empty lines before the request line"),
        steps: vec![Step::Send(bytes)],
        expect: vec![Exp::Accepted],
        forwards: vec![fwd],
        within: None,
        head: false,
        slow: false,
        dead: vec![],
    });
    let (raw, body) = ctx.sig_req(SIG);
    let lf: Vec<u8> = {
        let mut b = raw.line.clone();
        b.push(b'\n');
        for h in &raw.headers {
            b.extend_from_slice(h);
            b.push(b'\n');
        }
        b.push(b'\n');
        b.extend_from_slice(&body);
        b
    };
    let fwd = ctx.fwd(SIG, SIG, &body);
    ctx.add(Case {
        name: format!("{n}/bare LF line ends"),
        steps: vec![Step::Send(lf)],
        expect: vec![Exp::Accepted],
        forwards: vec![fwd],
        within: None,
        head: false,
        slow: false,
        dead: vec![],
    });
    let (raw, body) = ctx.sig_req(SIG);
    ctx.accepted(
        &format!("{n}/no host header"),
        SIG,
        SIG,
        &raw.remove("host"),
        &body,
    );
    let (raw, body) = ctx.sig_req(SIG);
    ctx.accepted(
        &format!("{n}/two host headers"),
        SIG,
        SIG,
        &raw.header("host", "other.test"),
        &body,
    );
}

fn header_syntax(ctx: &mut Ctx) {
    let n = "header-syntax";
    for (what, line) in [
        ("no colon", b"x-junk".to_vec()),
        ("empty name", b": value".to_vec()),
        ("space in the name", b"x junk: v".to_vec()),
        ("parenthesis in the name", b"x(junk): v".to_vec()),
        ("NUL in the name", b"x-\0: v".to_vec()),
        ("latin-1 in the name", b"x-\xe9: v".to_vec()),
        ("NUL in a value", b"x-junk: a\0b".to_vec()),
        ("bare CR in a value", b"x-junk: a\rb".to_vec()),
        ("vertical tab in a value", b"x-junk: a\x0bb".to_vec()),
        ("escape in a value", b"x-junk: \x1b[31m".to_vec()),
        ("DEL in a value", b"x-junk: a\x7fb".to_vec()),
        ("line starting with a space", b" x-junk: v".to_vec()),
    ] {
        let (raw, _) = ctx.sig_req(SIG);
        ctx.hyper(&format!("{n}/{what}"), &raw.raw_line(line), 400);
    }
    // Values hyper lets through: obs-text and tabs. Harmless unless they are
    // the signature (see `sig/`); forwarded as sent.
    let (raw, body) = ctx.sig_req(SIG);
    ctx.accepted(
        &format!("{n}/latin-1 in another header"),
        SIG,
        SIG,
        &raw.header("x-note", b"caf\xe9"),
        &body,
    );
    let (raw, body) = ctx.sig_req(SIG);
    ctx.accepted(
        &format!("{n}/tab in another header"),
        SIG,
        SIG,
        &raw.header("x-note", "a\tb"),
        &body,
    );
    let (raw, body) = ctx.sig_req(SIG);
    ctx.accepted(
        &format!("{n}/empty header value"),
        SIG,
        SIG,
        &raw.header("x-empty", ""),
        &body,
    );
}

fn header_limits(ctx: &mut Ctx) {
    let n = "header-limits";
    // hyper takes at most 100 header lines. hookgate forwards more than it
    // got: X-Forwarded-For and -Proto, X-Hookgate-Verified and -Delivery-Id
    // (and -Attempt in queue mode), less `connection`. So near the limit the
    // upstream (a hyper server with the same limit) refuses what it is sent:
    // the sender gets the upstream's 431 in passthrough, a 202 and a dead
    // letter in queue mode.
    let added = match ctx.mode {
        Mode::Passthrough => 3,
        Mode::Queue => 4,
    };
    for lines in [94, 95, 96, 97, 98, 100, 101] {
        // 4 base headers + the signature = 5 lines.
        let (mut raw, body) = ctx.sig_req(SIG);
        for i in 0..lines - 5 {
            raw = raw.header(&format!("x-pad-{i}"), "v");
        }
        let name = format!("{n}/{lines} header lines");
        if lines > HYPER_MAX_HEADERS {
            ctx.hyper(&name, &raw, 431);
        } else {
            // What hookgate adds still fits the upstream's 100 lines.
            assert!(lines + added <= 100);
            ctx.accepted(&name, SIG, SIG, &raw, &body);
        }
    }
    let (mut raw, _) = ctx.sig_req(SIG);
    for i in 0..5000 {
        raw = raw.header(&format!("x-pad-{i}"), "v");
    }
    ctx.hyper(&format!("{n}/5000 header lines"), &raw, 431);
    let (raw, body) = ctx.sig_req(SIG);
    ctx.accepted(
        &format!("{n}/one 60 KB header"),
        SIG,
        SIG,
        &raw.header("x-big", "b".repeat(60_000)),
        &body,
    );
    for size in [HEAD_MAX_BYTES, 100_000, 300_000] {
        let (raw, _) = ctx.sig_req(SIG);
        ctx.refused(
            &format!("{n}/one {size}-byte header: past the head limit"),
            &raw.header("x-big", "b".repeat(size)),
            431,
            "headers_too_large",
        );
    }
    let (raw, _) = ctx.sig_req(SIG);
    ctx.hyper(
        &format!("{n}/one 2 MiB header"),
        &raw.header("x-big", "b".repeat(HYPER_HEAD_REFUSED)),
        431,
    );
    let (mut raw, _) = ctx.sig_req(SIG);
    for i in 0..90 {
        raw = raw.header(&format!("x-big-{i}"), "c".repeat(HYPER_HEAD_REFUSED / 80));
    }
    ctx.hyper(&format!("{n}/90 headers of 26 KB"), &raw, 431);
    let (raw, _) = ctx.sig_req(SIG);
    let name = "x".repeat(HYPER_HEAD_REFUSED);
    ctx.hyper(
        &format!("{n}/2 MiB header name"),
        &raw.header(&name, "v"),
        431,
    );
}

fn content_length(ctx: &mut Ctx) {
    let n = "content-length";
    for (what, value) in [
        ("negative", "-1"),
        ("plus sign", "+700"),
        ("hex", "0x10"),
        ("empty", ""),
        ("two numbers", "1 2"),
        ("not a number", "abc"),
        ("over u64", "99999999999999999999999"),
        ("different values in one header", "5, 6"),
    ] {
        let (raw, _) = ctx.sig_req(SIG);
        ctx.hyper(
            &format!("{n}/{what}: {value:?}"),
            &raw.set("content-length", value),
            400,
        );
    }
    let (raw, body) = ctx.sig_req(SIG);
    let raw = raw.header("content-length", (body.len() + 1).to_string());
    ctx.hyper(&format!("{n}/two headers with different values"), &raw, 400);
    let (raw, body) = ctx.sig_req(SIG);
    let len = body.len().to_string();
    ctx.accepted(
        &format!("{n}/two headers with the same value"),
        SIG,
        SIG,
        &raw.header("content-length", &len),
        &body,
    );
    let (raw, body) = ctx.sig_req(SIG);
    ctx.hyper(
        &format!("{n}/same value twice in one header"),
        &raw.set("content-length", format!("{len}, {len}", len = body.len())),
        400,
    );
    // Announced over max_body: refused before reading.
    for value in [
        (MAX_BODY + 1).to_string(),
        "1000000000".to_string(),
        "9223372036854775807".to_string(),
    ] {
        let (raw, _) = ctx.sig_req(SIG);
        ctx.refused(
            &format!("{n}/announces {value} bytes"),
            &raw.set("content-length", &value),
            413,
            "payload_too_large",
        );
    }
    let (raw, _) = ctx.sig_req(SIG);
    let big = vec![b'a'; MAX_BODY + 1];
    let raw = raw.body(&big).set("content-length", big.len().to_string());
    ctx.refused(
        &format!("{n}/sends max_body + 1 bytes"),
        &raw,
        413,
        "payload_too_large",
    );
    let (raw, _) = ctx.sig_req(SIG);
    // Past the largest length hyper represents: "too large".
    let raw = raw.set("content-length", u64::MAX.to_string());
    ctx.hyper(&format!("{n}/u64::MAX"), &raw, 431);
    // Bodies that lie about their length.
    let (raw, body) = ctx.sig_req(SIG);
    let raw = raw.set("content-length", (body.len() - 10).to_string());
    ctx.refused(
        &format!("{n}/shorter than the body (signed whole)"),
        &raw,
        401,
        "signature_mismatch",
    );
    let (raw, body) = ctx.sig_req(SIG);
    let raw = raw
        .set("content-length", (body.len() + 10).to_string())
        .remove("connection");
    ctx.add(Case {
        name: format!("{n}/longer than the body, then the client half-closes"),
        steps: vec![Step::Send(raw.bytes()), Step::HalfClose],
        expect: vec![Exp::Error(400, "bad_request")],
        forwards: vec![],
        within: None,
        head: false,
        slow: false,
        dead: vec![],
    });
    // Shorter, the rest being a second request that hyper reads next.
    let (raw, body) = ctx.sig_req(SIG);
    let mut raw = raw
        .set("content-length", (body.len() - 10).to_string())
        .remove("connection");
    raw.body.extend_from_slice(b"GARBAGE\r\n\r\n");
    ctx.add(Case {
        name: format!("{n}/shorter, the rest a garbled second request"),
        steps: vec![Step::Send(raw.bytes())],
        expect: vec![Exp::Error(401, "signature_mismatch"), Exp::Hyper(400)],
        forwards: vec![],
        within: None,
        head: false,
        slow: false,
        dead: vec![],
    });
    // Zero, with a body after it: the request has an empty body, the bytes
    // after it are ignored once the connection closes.
    let (raw, _) = ctx.sig_req(SIG);
    let empty_sig = ctx.sig(b"");
    let raw = raw
        .set("content-length", "0")
        .set("x-sigsentry-signature", &empty_sig);
    ctx.by_event_id(
        &format!("{n}/zero, body sent anyway"),
        SIG,
        &raw,
        b"",
        Some("invalid_json"),
    );
    let (raw, _) = ctx.sig_req(SIG);
    let raw = raw
        .remove("content-length")
        .set("x-sigsentry-signature", &empty_sig);
    ctx.by_event_id(
        &format!("{n}/none, body sent anyway"),
        SIG,
        &raw,
        b"",
        Some("invalid_json"),
    );
}

fn chunk(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    for &s in sizes {
        let s = s.min(rest.len());
        if s == 0 {
            continue;
        }
        out.extend_from_slice(format!("{s:x}\r\n").as_bytes());
        out.extend_from_slice(&rest[..s]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[s..];
    }
    if !rest.is_empty() {
        out.extend_from_slice(format!("{:x}\r\n", rest.len()).as_bytes());
        out.extend_from_slice(rest);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A signed SigSentry request with a chunked body (`te` as the
/// transfer-encoding value; the body framing left to the caller).
fn chunked_req(ctx: &mut Ctx, te: &str) -> (Raw, Vec<u8>) {
    let (raw, body) = ctx.sig_req(SIG);
    (
        raw.remove("content-length").header("transfer-encoding", te),
        body,
    )
}

fn transfer_encoding(ctx: &mut Ctx) {
    let n = "transfer-encoding";
    // Both framings: hyper reads the chunked one and ignores the length.
    for (what, cl_first, delta) in [
        ("content-length then chunked", true, 0i64),
        ("chunked then content-length", false, 0),
        ("chunked with a smaller content-length", true, -100),
        ("chunked with a larger content-length", true, 100),
    ] {
        let (raw, body) = ctx.sig_req(SIG);
        let cl = format!("content-length: {}", body.len() as i64 + delta);
        let mut raw = raw.remove("content-length");
        if cl_first {
            raw = raw.raw_line(&cl).header("transfer-encoding", "chunked");
        } else {
            raw = raw.header("transfer-encoding", "chunked").raw_line(&cl);
        }
        let raw = raw.body(chunk(&body, &[100, 200]));
        ctx.accepted(&format!("{n}/{what}"), SIG, SIG, &raw, &body);
    }
    for te in [
        "chunked, chunked",
        "Chunked",
        "CHUNKED",
        "gzip, chunked",
        "identity, chunked",
    ] {
        let (raw, body) = chunked_req(ctx, te);
        ctx.accepted(
            &format!("{n}/{te:?}"),
            SIG,
            SIG,
            &raw.body(chunk(&body, &[64])),
            &body,
        );
    }
    for te in [
        "chunked, gzip",
        "identity",
        "gzip",
        "xchunked",
        "chunked;q=1",
        "chunk",
        "",
    ] {
        let (raw, body) = chunked_req(ctx, te);
        ctx.hyper(&format!("{n}/{te:?}"), &raw.body(chunk(&body, &[64])), 400);
    }
    let (raw, body) = chunked_req(ctx, "chunked");
    let raw = raw
        .line(format!("POST {SIG} HTTP/1.0"))
        .body(chunk(&body, &[64]));
    ctx.hyper(&format!("{n}/chunked in HTTP/1.0"), &raw, 400);
    let (raw, body) = chunked_req(ctx, "chunked");
    let raw = raw
        .header("transfer-encoding", "chunked")
        .body(chunk(&body, &[64]));
    ctx.accepted(&format!("{n}/two chunked headers"), SIG, SIG, &raw, &body);
    let (raw, body) = chunked_req(ctx, "gzip");
    let raw = raw
        .header("transfer-encoding", "chunked")
        .body(chunk(&body, &[64]));
    ctx.accepted(
        &format!("{n}/gzip header then chunked header"),
        SIG,
        SIG,
        &raw,
        &body,
    );
    let (raw, body) = chunked_req(ctx, "chunked");
    let raw = raw
        .header("transfer-encoding", "gzip")
        .body(chunk(&body, &[64]));
    ctx.hyper(&format!("{n}/chunked header then gzip header"), &raw, 400);
}

fn chunked_framing(ctx: &mut Ctx) {
    let n = "chunked";
    let bad_request = Exp::Error(400, "bad_request");
    let frame = |body: &[u8], f: &dyn Fn(&[u8]) -> Vec<u8>| f(body);
    type Framing = Box<dyn Fn(&[u8]) -> Vec<u8>>;
    let cases: Vec<(&str, Framing, Exp)> = vec![
        (
            "size not hex",
            Box::new(|b| [b"zz\r\n".as_slice(), b, b"\r\n0\r\n\r\n"].concat()),
            bad_request.clone(),
        ),
        (
            "size overflows u64",
            Box::new(|b| [b"1ffffffffffffffff\r\n".as_slice(), b, b"\r\n0\r\n\r\n"].concat()),
            bad_request.clone(),
        ),
        (
            "negative size",
            Box::new(|b| [b"-1\r\n".as_slice(), b, b"\r\n0\r\n\r\n"].concat()),
            bad_request.clone(),
        ),
        (
            "empty size line",
            Box::new(|b| [b"\r\n".as_slice(), b, b"\r\n0\r\n\r\n"].concat()),
            bad_request.clone(),
        ),
        (
            "data without its CRLF",
            Box::new(|b| [format!("{:x}\r\n", b.len()).as_bytes(), b, b"0\r\n\r\n"].concat()),
            bad_request.clone(),
        ),
        (
            "LF-only size line",
            Box::new(|b| [format!("{:x}\n", b.len()).as_bytes(), b, b"\r\n0\r\n\r\n"].concat()),
            bad_request.clone(),
        ),
        (
            "size smaller than the data",
            Box::new(|b| {
                [
                    format!("{:x}\r\n", b.len() - 5).as_bytes(),
                    b,
                    b"\r\n0\r\n\r\n",
                ]
                .concat()
            }),
            bad_request.clone(),
        ),
        (
            "20 KB chunk extension",
            Box::new(|b| {
                [
                    format!("{:x};ext={}\r\n", b.len(), "e".repeat(20_000)).as_bytes(),
                    b,
                    b"\r\n0\r\n\r\n",
                ]
                .concat()
            }),
            bad_request.clone(),
        ),
        (
            "NUL in the size line",
            Box::new(|b| {
                [
                    format!("{:x}\0\r\n", b.len()).as_bytes(),
                    b,
                    b"\r\n0\r\n\r\n",
                ]
                .concat()
            }),
            bad_request.clone(),
        ),
        (
            "bad trailer line",
            Box::new(|b| {
                [
                    format!("{:x}\r\n", b.len()).as_bytes(),
                    b,
                    b"\r\n0\r\nno colon here\r\n\r\n",
                ]
                .concat()
            }),
            bad_request.clone(),
        ),
        (
            "trailers over 16 KB",
            Box::new(|b| {
                [
                    format!("{:x}\r\n", b.len()).as_bytes(),
                    b,
                    b"\r\n0\r\n",
                    format!("x-t: {}\r\n", "t".repeat(20_000)).as_bytes(),
                    b"\r\n",
                ]
                .concat()
            }),
            bad_request.clone(),
        ),
        (
            "chunk extensions",
            Box::new(|b| {
                [
                    format!("{:x};name=value;x\r\n", b.len()).as_bytes(),
                    b,
                    b"\r\n0;last\r\n\r\n",
                ]
                .concat()
            }),
            Exp::Accepted,
        ),
        (
            "whitespace after the size",
            Box::new(|b| {
                [
                    format!("{:x}  \r\n", b.len()).as_bytes(),
                    b,
                    b"\r\n0\r\n\r\n",
                ]
                .concat()
            }),
            Exp::Accepted,
        ),
        (
            "leading zeros in the size",
            Box::new(|b| {
                [
                    format!("0000{:x}\r\n", b.len()).as_bytes(),
                    b,
                    b"\r\n0\r\n\r\n",
                ]
                .concat()
            }),
            Exp::Accepted,
        ),
        (
            "uppercase hex size",
            Box::new(|b| [format!("{:X}\r\n", b.len()).as_bytes(), b, b"\r\n0\r\n\r\n"].concat()),
            Exp::Accepted,
        ),
        (
            "harmless trailer",
            Box::new(|b| {
                [
                    format!("{:x}\r\n", b.len()).as_bytes(),
                    b,
                    b"\r\n0\r\nx-trailer: yes\r\n\r\n",
                ]
                .concat()
            }),
            Exp::Accepted,
        ),
    ];
    for (what, f, exp) in cases {
        let (raw, body) = chunked_req(ctx, "chunked");
        let raw = raw.body(frame(&body, &*f));
        let name = format!("{n}/{what}");
        match exp {
            Exp::Accepted => ctx.accepted(&name, SIG, SIG, &raw, &body),
            e => ctx.one(&name, &raw, vec![e], vec![]),
        }
    }
    let (raw, _) = chunked_req(ctx, "chunked");
    let big = vec![b'z'; MAX_BODY + 100];
    ctx.refused(
        &format!("{n}/over max_body"),
        &raw.body(chunk(&big, &[4096; 20])),
        413,
        "payload_too_large",
    );
    // Truncated, then the client half-closes: the body cannot be read.
    let (raw, body) = chunked_req(ctx, "chunked");
    let framed = chunk(&body, &[100]);
    let raw = raw.remove("connection").body(&framed[..framed.len() - 5]);
    ctx.add(Case {
        name: format!("{n}/no last chunk, then the client half-closes"),
        steps: vec![Step::Send(raw.bytes()), Step::HalfClose],
        expect: vec![Exp::Error(400, "bad_request")],
        forwards: vec![],
        within: None,
        head: false,
        slow: false,
        dead: vec![],
    });
}

fn pipelining_and_expect(ctx: &mut Ctx) {
    let n = "pipelined";
    // A refusal does not end a kept-alive connection; the next request on
    // it is served.
    let (bad, _) = ctx.sig_req(SIG);
    let bad = bad
        .remove("connection")
        .set("x-sigsentry-signature", "sha256=00");
    let (good, body) = ctx.sig_req(SIG);
    let fwd = ctx.fwd(SIG, SIG, &body);
    ctx.add(Case {
        name: format!("{n}/refused, then valid"),
        steps: vec![Step::Send([bad.bytes(), good.bytes()].concat())],
        expect: vec![Exp::Error(401, "signature_mismatch"), Exp::Accepted],
        forwards: vec![fwd],
        within: None,
        head: false,
        slow: false,
        dead: vec![],
    });
    let (good, body) = ctx.sig_req(SIG);
    let good = good.remove("connection");
    let (bad, _) = ctx.sig_req(SIG);
    let bad = bad.remove("x-sigsentry-signature");
    let fwd = ctx.fwd(SIG, SIG, &body);
    ctx.add(Case {
        name: format!("{n}/valid, then unsigned"),
        steps: vec![Step::Send([good.bytes(), bad.bytes()].concat())],
        expect: vec![Exp::Accepted, Exp::Error(401, "signature_missing")],
        forwards: vec![fwd],
        within: None,
        head: false,
        slow: false,
        dead: vec![],
    });
    // The same event twice: a duplicate in queue mode, forwarded twice in
    // passthrough (which does not deduplicate).
    let (good, body) = ctx.sig_req(SIG);
    let first = good.clone().remove("connection");
    let mut fwds = vec![ctx.fwd(SIG, SIG, &body)];
    let second = match ctx.mode {
        Mode::Queue => Exp::Duplicate,
        Mode::Passthrough => {
            fwds.push(ctx.fwd(SIG, SIG, &body));
            Exp::Accepted
        }
    };
    ctx.add(Case {
        name: format!("{n}/the same event twice"),
        steps: vec![Step::Send([first.bytes(), good.bytes()].concat())],
        expect: vec![Exp::Accepted, second],
        forwards: fwds,
        within: None,
        head: false,
        slow: false,
        dead: vec![],
    });
    // Refused before its body is read (413, 405): the connection is closed
    // after the answer, so what follows is never read as a request.
    let (big, _) = ctx.sig_req(SIG);
    let big = big
        .remove("connection")
        .set("content-length", (MAX_BODY + 1).to_string());
    let (good, _) = ctx.sig_req(SIG);
    ctx.add(Case {
        name: format!("{n}/413 then a request in the unread body"),
        steps: vec![Step::Send([big.head_bytes(), good.bytes()].concat())],
        expect: vec![Exp::Error(413, "payload_too_large")],
        forwards: vec![],
        within: None,
        head: false,
        slow: false,
        dead: vec![],
    });

    let n = "expect";
    let (raw, body) = ctx.sig_req(SIG);
    let fwd = ctx.fwd(SIG, SIG, &body);
    ctx.one(
        &format!("{n}/100-continue, valid"),
        &raw.header("expect", "100-continue"),
        vec![Exp::Continue, Exp::Accepted],
        vec![fwd],
    );
    let (raw, _) = ctx.sig_req(SIG);
    let raw = raw
        .header("expect", "100-continue")
        .remove("x-sigsentry-signature");
    ctx.one(
        &format!("{n}/100-continue, unsigned"),
        &raw,
        vec![Exp::Continue, Exp::Error(401, "signature_missing")],
        vec![],
    );
    let (raw, _) = ctx.sig_req(SIG);
    let raw = raw
        .header("expect", "100-continue")
        .set("content-length", (MAX_BODY + 1).to_string());
    ctx.one(
        &format!("{n}/100-continue over max_body: no 100"),
        &Raw {
            body: vec![],
            ..raw
        },
        vec![Exp::Error(413, "payload_too_large")],
        vec![],
    );
    let (raw, _) = ctx.sig_req(SIG);
    let raw = raw
        .header("expect", "100-continue")
        .line(format!("GET {SIG} HTTP/1.1"));
    ctx.one(
        &format!("{n}/100-continue with a wrong method: no 100"),
        &raw,
        vec![Exp::Error(405, "method_not_allowed")],
        vec![],
    );
    let (raw, body) = ctx.sig_req(SIG);
    ctx.accepted(
        &format!("{n}/unknown expectation"),
        SIG,
        SIG,
        &raw.header("expect", "200-ok"),
        &body,
    );
}

// ---------------------------------------------------------------------------
// Generators

/// Random hex after `sha256=`: an even length decodes (and cannot match),
/// an odd one or none cannot be decoded.
fn gen_hex_signatures(ctx: &mut Ctx, count: usize) {
    let mut rng = ctx.rng("hex-signatures");
    for i in 0..count {
        let len = rng.range(0, 200);
        let hex = rng.string(HEX, len);
        let (raw, _) = ctx.sig_req(SIG);
        let raw = raw.set("x-sigsentry-signature", format!("sha256={hex}"));
        let code = if len == 0 || len % 2 == 1 {
            "signature_malformed"
        } else {
            "signature_mismatch"
        };
        ctx.refused(
            &format!("gen/hex signature #{i} ({len} digits)"),
            &raw,
            401,
            code,
        );
    }
}

/// Signatures with at least one character that is not hex.
fn gen_non_hex_signatures(ctx: &mut Ctx, count: usize) {
    let mut rng = ctx.rng("non-hex-signatures");
    for i in 0..count {
        let (raw, body) = ctx.sig_req(SIG);
        let mut sig = ctx.sig(&body).into_bytes();
        let at = rng.range(7, sig.len());
        sig[at] = *rng.pick(NOT_HEX);
        let raw = raw.set("x-sigsentry-signature", &sig);
        ctx.refused(
            &format!("gen/non-hex signature #{i}"),
            &raw,
            401,
            "signature_malformed",
        );
    }
}

/// The `sha256=` prefix with one character changed, dropped or added.
fn gen_prefix_mutations(ctx: &mut Ctx, count: usize) {
    let mut rng = ctx.rng("prefix-mutations");
    let visible: Vec<u8> = (0x21u8..0x7f).collect();
    for i in 0..count {
        let (raw, body) = ctx.sig_req(SIG);
        let sig = ctx.sig(&body);
        let (prefix, hex) = sig.split_at(7);
        let mut p = prefix.as_bytes().to_vec();
        let at = rng.range(0, p.len());
        match rng.range(0, 3) {
            0 => {
                let mut c = *rng.pick(&visible);
                while c == p[at] {
                    c = *rng.pick(&visible);
                }
                p[at] = c;
            }
            1 => {
                p.remove(at);
            }
            _ => p.insert(at, *rng.pick(&visible)),
        }
        let value = [p.as_slice(), hex.as_bytes()].concat();
        let raw = raw.set("x-sigsentry-signature", &value);
        ctx.refused(
            &format!("gen/prefix mutation #{i}"),
            &raw,
            401,
            "signature_malformed",
        );
    }
}

/// One bit of the signed body flipped.
fn gen_body_bit_flips(ctx: &mut Ctx, count: usize) {
    let mut rng = ctx.rng("body-bit-flips");
    for i in 0..count {
        let (raw, body) = ctx.sig_req(SIG);
        let mut b = body.clone();
        let at = rng.range(0, b.len());
        b[at] ^= 1 << rng.range(0, 8);
        ctx.refused(
            &format!("gen/body bit flip #{i} at {at}"),
            &raw.body(&b),
            401,
            "signature_mismatch",
        );
    }
}

/// One digit of the signature replaced by another digit value.
fn gen_signature_digit_flips(ctx: &mut Ctx, count: usize) {
    let mut rng = ctx.rng("signature-digit-flips");
    for i in 0..count {
        let (raw, body) = ctx.sig_req(SIG);
        let mut sig = ctx.sig(&body).into_bytes();
        let at = rng.range(7, sig.len());
        let mut c = *rng.pick(HEX);
        while c == sig[at] {
            c = *rng.pick(HEX);
        }
        sig[at] = c;
        ctx.refused(
            &format!("gen/signature digit flip #{i}"),
            &raw.set("x-sigsentry-signature", &sig),
            401,
            "signature_mismatch",
        );
    }
}

/// Bytes 0x80–0xFF in the signature: hyper passes them, the signature
/// cannot be read.
fn gen_obs_text(ctx: &mut Ctx, count: usize) {
    let mut rng = ctx.rng("obs-text");
    for i in 0..count {
        let (raw, body) = ctx.sig_req(SIG);
        let mut sig = ctx.sig(&body).into_bytes();
        for _ in 0..rng.range(1, 4) {
            let at = rng.range(1, sig.len());
            sig.insert(at, 0x80 | (rng.next() as u8));
        }
        ctx.refused(
            &format!("gen/obs-text in the signature #{i}"),
            &raw.set("x-sigsentry-signature", &sig),
            401,
            "signature_malformed",
        );
    }
}

/// A control byte inside a header value or name: refused by hyper.
fn gen_control_bytes(ctx: &mut Ctx, count: usize) {
    let mut rng = ctx.rng("control-bytes");
    let controls: Vec<u8> = (0u8..0x20)
        .filter(|b| !matches!(b, b'\t' | b'\n' | b'\r'))
        .chain([0x7f])
        .collect();
    for i in 0..count {
        let (raw, _) = ctx.sig_req(SIG);
        let mut raw = raw;
        // Any header line but the first character of it.
        let line = rng.range(0, raw.headers.len());
        let l = &mut raw.headers[line];
        let at = rng.range(1, l.len());
        let c = *rng.pick(&controls);
        l.insert(at, c);
        let what = String::from_utf8_lossy(
            &l[..l.iter().position(|&b| b == b':').unwrap_or(l.len()).min(24)],
        )
        .into_owned();
        ctx.hyper(
            &format!("gen/control byte {c:#04x} in {what:?} #{i}"),
            &raw,
            400,
        );
    }
}

/// Random methods (token characters): 405 with `Allow: POST`.
fn gen_methods(ctx: &mut Ctx, count: usize) {
    let mut rng = ctx.rng("methods");
    let tchar = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~";
    let mut i = 0;
    while i < count {
        let len = rng.range(1, 16);
        let m = rng.string(tchar, len);
        if ["POST", "HEAD", "CONNECT", "PRI"].contains(&m.as_str()) {
            continue;
        }
        let (raw, _) = ctx.sig_req(SIG);
        ctx.refused(
            &format!("gen/method {m:?}"),
            &raw.line(format!("{m} {SIG} HTTP/1.1")),
            405,
            "method_not_allowed",
        );
        i += 1;
    }
}

/// Paths with one traversal form among plain segments.
fn gen_traversal(ctx: &mut Ctx, count: usize) {
    let mut rng = ctx.rng("traversal");
    let plain = [
        "a",
        "b1",
        "x%20y",
        "%C3%A9t%C3%A9",
        ".well-known",
        "...",
        "a.b",
        "%41",
        "~u",
        "v-2",
    ];
    let bad = [
        "..", ".", "%2e%2e", "%2E%2E", "%2e.", ".%2E", "%2e", "%2E", "a%2fb", "%2F", "a%5cb",
        "%5C", "%00", "x%00", "%ff", "%C3", "%c3%28", "%e2%82", "%zz", "%g0", "%2", "%", "a%",
    ];
    let routes = [SIG, EVT, STD, STRIPE, SHOPIFY, CUSTOM];
    for i in 0..count {
        let route = *rng.pick(&routes);
        let mut segs: Vec<String> = (0..rng.range(0, 4))
            .map(|_| rng.pick(&plain).to_string())
            .collect();
        let at = rng.range(0, segs.len() + 1);
        segs.insert(at, rng.pick(&bad).to_string());
        let mut target = format!("{route}/{}", segs.join("/"));
        if rng.range(0, 3) == 0 {
            target.push_str("?x=1");
        }
        let raw = Raw::post(&target, b"{}");
        ctx.refused(
            &format!("gen/traversal #{i} {target}"),
            &raw,
            400,
            "invalid_path",
        );
    }
}

/// Many random headers: up to hyper's 100 lines the request reaches the
/// signature check (and fails it); beyond, 431.
fn gen_header_floods(ctx: &mut Ctx, count: usize) {
    let mut rng = ctx.rng("header-floods");
    let name_chars = b"abcdefghijklmnopqrstuvwxyz0123456789-";
    for i in 0..count {
        let extra = rng.range(80, 121);
        let (raw, _) = ctx.sig_req(SIG);
        let mut raw = raw.set("x-sigsentry-signature", format!("sha256={:064x}", i + 1));
        for _ in 0..extra {
            let nl = rng.range(1, 12);
            let vl = rng.range(0, 40);
            raw = raw.header(
                &format!("x-h-{}", rng.string(name_chars, nl)),
                rng.string(HEX, vl),
            );
        }
        let lines = raw.headers.len();
        let name = format!("gen/{lines} header lines #{i}");
        if lines > HYPER_MAX_HEADERS {
            ctx.hyper(&name, &raw, 431);
        } else {
            ctx.refused(&name, &raw, 401, "signature_mismatch");
        }
    }
}

/// Content-Length that lies: shorter than the signed body (the server
/// verifies the prefix: mismatch), or longer and the client half-closes
/// (the body ends early: it cannot be read).
fn gen_length_lies(ctx: &mut Ctx, count: usize) {
    let mut rng = ctx.rng("length-lies");
    for i in 0..count {
        let (raw, body) = ctx.sig_req(SIG);
        if rng.range(0, 2) == 0 {
            let short = rng.range(0, body.len());
            let raw = raw.set("content-length", short.to_string());
            ctx.refused(
                &format!("gen/content-length {short} < {} #{i}", body.len()),
                &raw,
                401,
                "signature_mismatch",
            );
        } else {
            let long = body.len() + rng.range(1, 5000);
            let raw = raw
                .set("content-length", long.to_string())
                .remove("connection");
            ctx.add(Case {
                name: format!(
                    "gen/content-length {long} > {}, half-closed #{i}",
                    body.len()
                ),
                steps: vec![Step::Send(raw.bytes()), Step::HalfClose],
                expect: vec![Exp::Error(400, "bad_request")],
                forwards: vec![],
                within: None,
                head: false,
                slow: false,
                dead: vec![],
            });
        }
    }
}

/// JSON-ish bodies for the `body:/event_id` route, validly signed; the
/// expected answer follows from what the body is (RFC 8259 JSON per
/// serde_json, nesting kept well below its recursion limit).
fn gen_event_id_bodies(ctx: &mut Ctx, count: usize) {
    let mut rng = ctx.rng("event-id-bodies");
    let mut made = 0;
    while made < count {
        let u = ctx.uid("g");
        let value = match rng.range(0, 9) {
            0 => format!(r#""{u}""#),
            1 => format!("{}", 1_000_000_000 + ctx.seq),
            2 => "null".into(),
            3 => "true".into(),
            4 => format!(r#"{{"id":"{u}"}}"#),
            5 => format!(r#"["{u}"]"#),
            6 => r#""""#.into(),
            7 => format!(r#""{}""#, "y".repeat(rng.range(1000, 1100))),
            _ => format!(r#""{u}\"\\\/\b\f\n\r\t\u00e9""#),
        };
        let depth = rng.range(0, 40);
        let nest = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let mut body = match rng.range(0, 3) {
            0 => format!(r#"{{"event_id":{value},"n":{nest}}}"#),
            1 => format!(r#"{{"n":{nest},"event_id":{value}}}"#),
            _ => format!(r#"{{"wrapped":{{"event_id":{value}}},"n":{nest}}}"#),
        }
        .into_bytes();
        match rng.range(0, 4) {
            0 => {
                let cut = rng.range(0, body.len());
                body.truncate(cut);
            }
            1 => {
                let at = rng.range(0, body.len() + 1);
                body.insert(at, *rng.pick(b"{}[],:\"\\x\x00\xff"));
            }
            _ => {}
        }
        let expected = match serde_json::from_slice::<serde_json::Value>(&body) {
            Err(_) => Err("invalid_json"),
            Ok(v) => match v.pointer("/event_id") {
                None | Some(serde_json::Value::Null) => Err("dedup_key_missing"),
                Some(serde_json::Value::String(s)) if s.is_empty() => Err("dedup_key_missing"),
                Some(serde_json::Value::String(s)) if s.len() > MAX_EVENT_ID => {
                    Err("dedup_key_invalid")
                }
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
                Some(_) => Err("dedup_key_invalid"),
            },
        };
        let code = match expected {
            Ok(id) => {
                if !ctx.evt_ids.insert(id) {
                    continue;
                }
                None
            }
            Err(code) => Some(code),
        };
        let raw = ctx.evt_req(&body);
        ctx.by_event_id(
            &format!("gen/event-id body #{made}"),
            EVT,
            &raw,
            &body,
            code,
        );
        made += 1;
    }
}

/// Standard Webhooks and the custom base64url scheme with random
/// signatures: characters outside the alphabet are malformed; base64 of
/// random bytes decodes and cannot match.
fn gen_base64_signatures(ctx: &mut Ctx, count: usize) {
    let mut rng = ctx.rng("base64-signatures");
    let std = base64::engine::general_purpose::STANDARD;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    for i in 0..count {
        let valid = rng.range(0, 2) == 0;
        let len = rng.range(1, 80);
        let encoded_std = if valid {
            std.encode(rng.bytes(len))
        } else {
            let mut s = rng.string(B64, len).into_bytes();
            let at = rng.range(0, s.len());
            s[at] = *rng.pick(NOT_B64);
            String::from_utf8(s).unwrap()
        };
        let code = if valid {
            "signature_mismatch"
        } else {
            "signature_malformed"
        };
        if i % 2 == 0 {
            let id = ctx.uid("msg");
            let body = format!(r#"{{"n":"{id}"}}"#).into_bytes();
            let (id, t, _) = ctx.std_headers(&body, &id, ctx.now);
            let raw = Raw::post(STD, &body)
                .header("webhook-id", id)
                .header("webhook-timestamp", t)
                .header("webhook-signature", format!("v1,{encoded_std}"));
            ctx.refused(
                &format!("gen/standard-webhooks signature #{i}"),
                &raw,
                401,
                code,
            );
        } else {
            let encoded = if valid {
                url.encode(rng.bytes(len))
            } else {
                // The standard alphabet's own symbols are outside base64url.
                let mut s = rng.string(b"ABCDEFabcdef0123456789", len).into_bytes();
                let at = rng.range(0, s.len());
                s[at] = *rng.pick(b"+/!*.");
                String::from_utf8(s).unwrap()
            };
            let id = ctx.uid("acme");
            let body = br#"{"kind":"gen"}"#;
            let raw = Raw::post(CUSTOM, body)
                .header("x-acme-id", id)
                .header("x-acme-timestamp", ctx.now.to_string())
                .header("x-acme-signature", format!("v1={encoded}"));
            ctx.refused(
                &format!("gen/custom base64url signature #{i}"),
                &raw,
                401,
                code,
            );
        }
    }
}

/// Stripe headers assembled from random entries. The answer follows the
/// documented precedence: a broken list (entry without `=`, empty key,
/// repeated `t`) or nothing usable is malformed; then the timestamp; then
/// the comparison.
fn gen_stripe_lists(ctx: &mut Ctx, count: usize) {
    let mut rng = ctx.rng("stripe-lists");
    for i in 0..count {
        let body = ctx.stripe_body();
        let now = ctx.now;
        let mut entries: Vec<String> = Vec::new();
        let (mut t, mut bad_t, mut stale_t, mut v1_ok, mut v1_bad, mut skipped, mut broken) =
            (0, false, false, 0, 0, 0, false);
        for _ in 0..rng.range(0, 6) {
            match rng.range(0, 8) {
                0 => {
                    t += 1;
                    entries.push(format!("t={now}"));
                }
                1 => {
                    t += 1;
                    stale_t = true;
                    entries.push(format!("t={}", now - 7200));
                }
                2 => {
                    t += 1;
                    bad_t = true;
                    entries.push(format!("t={}", rng.pick(&["x1", "-3", "1.5", "", "0x1f"])));
                }
                3 => {
                    v1_ok += 1;
                    entries.push(format!("v1={:064x}", rng.next()));
                }
                4 => {
                    v1_bad += 1;
                    entries.push(format!("v1={}", rng.pick(&["zz", "abc", "", "g0"])));
                }
                5 => {
                    skipped += 1;
                    entries.push(format!(
                        "{}={:x}",
                        rng.pick(&["v0", "v2", "x", "sig"]),
                        rng.next()
                    ));
                }
                6 => {
                    broken = true;
                    entries.push(rng.pick(&["junk", "=x", " = "]).to_string());
                }
                _ => entries.push(" ".into()),
            }
        }
        let value = entries.join(",");
        // A broken list or a repeated `t`; nothing usable (only undecodable
        // signatures, or no signature-like entry at all); no timestamp, or
        // one that cannot be read (`t=` with an empty value included).
        let malformed =
            broken || t > 1 || (v1_ok == 0 && (v1_bad > 0 || skipped == 0)) || t == 0 || bad_t;
        let code = if malformed {
            "signature_malformed"
        } else if stale_t {
            "timestamp_out_of_tolerance"
        } else {
            "signature_mismatch"
        };
        let raw = Raw::post(STRIPE, &body).header("stripe-signature", &value);
        ctx.refused(&format!("gen/stripe list #{i} {value:?}"), &raw, 401, code);
    }
}

/// Chunked bodies: validly split (accepted, forwarded whole), or with one
/// framing error (hookgate cannot read the body: 400 bad_request).
fn gen_chunked(ctx: &mut Ctx, count: usize) {
    let mut rng = ctx.rng("chunked");
    for i in 0..count {
        let (raw, body) = chunked_req(ctx, "chunked");
        let sizes: Vec<usize> = (0..rng.range(1, 12)).map(|_| rng.range(1, 200)).collect();
        let framed = chunk(&body, &sizes);
        match rng.range(0, 3) {
            0 => {
                ctx.accepted(
                    &format!("gen/chunked split {sizes:?} #{i}"),
                    SIG,
                    SIG,
                    &raw.body(&framed),
                    &body,
                );
            }
            1 => {
                // A non-hex character in the first size line.
                let mut f = framed.clone();
                f.insert(0, *rng.pick(b"gxz-+ G"));
                ctx.one(
                    &format!("gen/chunked bad size #{i}"),
                    &raw.body(&f),
                    vec![Exp::Error(400, "bad_request")],
                    vec![],
                );
            }
            _ => {
                // The CRLF after some chunk's data replaced.
                let mut f = framed.clone();
                let first = sizes[0].min(body.len());
                let at = format!("{first:x}\r\n").len() + first;
                f[at] = b'X';
                ctx.one(
                    &format!("gen/chunked data not followed by CRLF #{i}"),
                    &raw.body(&f),
                    vec![Exp::Error(400, "bad_request")],
                    vec![],
                );
            }
        }
    }
}
