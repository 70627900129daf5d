//! Configuration: embedded defaults (`config/default.toml`) -> a TOML file ->
//! `HOOKGATE_*` environment variables, merged with figment, then `validate()`.
//!
//! Owns: the configuration types, their parsing (durations, sizes, secrets)
//! and every check that can be made before the server starts. Invariants:
//! - unknown keys are errors (`deny_unknown_fields` everywhere);
//! - `validate()` reports *every* problem, each message naming its key
//!   (`routes[2].secrets: at least one secret is required`);
//! - secret values never appear in `Debug` output or in error messages.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer};

use crate::signature::{Custom, EventIdSource, Preset, Scheme};

/// The embedded defaults, layered under every configuration.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Top-level sections an environment variable may address
/// (`HOOKGATE_SERVER__LISTEN` -> `server.listen`).
const ENV_SECTIONS: &[&str] = &["server", "admin", "store", "log", "delivery", "sender"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub log: LogConfig,
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Embedded sender mode (SPEC §2): the `/v1/` API on the admin listener.
    pub sender: SenderConfig,
    /// Keys of the `/v1/` API.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
}

/// `[sender]`: the outbound half.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderConfig {
    pub enabled: bool,
    /// 32 bytes, written as 64 hex digits or base64: encrypts channel
    /// credentials and endpoint signing secrets at rest (AES-256-GCM).
    #[serde(default)]
    pub master_key: Option<SecretSource>,
    /// Development only: with no `master_key`, generate one at start (a
    /// warning says so; credentials stored with it cannot be read after a
    /// restart).
    #[serde(default)]
    pub insecure_generate_master_key: bool,
    /// Delays between attempts; attempts in all = delays + 1.
    pub retry_schedule: Vec<Dur>,
    pub attempt_timeout: Dur,
    /// Channels plus endpoints per project.
    pub channel_quota: u32,
    /// Networks outbound requests may reach although the SSRF guard would
    /// refuse them (private, loopback, link-local, ...).
    #[serde(default)]
    pub allow_cidrs: Vec<Cidr>,
    /// Refuse `http://` destination URLs.
    pub https_only: bool,
    /// Attempts at once per channel or endpoint.
    pub concurrency: u32,
    /// Exhausted deliveries in a row that disable a destination: 1 is the
    /// seed's rule (the first delivery that exhausts its schedule), N a
    /// gentler one, 0 never.
    pub auto_disable_after: u32,
    /// How long an endpoint's previous signing secret keeps signing after a
    /// rotation.
    pub secret_rotation_grace: Dur,
    /// Dedup window of `analysisId` and event ids.
    pub dedup_window: Dur,
    /// Most bytes of an accepted analysis or event.
    pub max_body: Size,
    /// SMTP server for `email` channels.
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
}

/// `[sender.smtp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// `starttls` (default), `tls` (implicit, port 465) or `none` (tests and
    /// local relays only).
    #[serde(default)]
    pub security: SmtpSecurity,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SecretSource>,
    pub from: String,
    /// A PEM bundle of CAs trusted for the server's certificate, besides
    /// the Mozilla roots (a private relay).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    #[default]
    Starttls,
    Tls,
    None,
}

/// One `[[api_keys]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub name: String,
    /// The key itself (hashed at load; only the hash is kept).
    #[serde(default)]
    pub key: Option<SecretSource>,
    /// Or its SHA-256, 64 hex digits.
    #[serde(default)]
    pub key_sha256: Option<String>,
    pub permissions: Vec<String>,
    /// Scope: one project ...
    #[serde(default)]
    pub project: Option<String>,
    /// ... or a tenant (the caller names the project with `X-Project-Id`).
    #[serde(default)]
    pub tenant: Option<String>,
}

/// Permissions an API key may carry.
pub const API_PERMISSIONS: &[&str] = &["config:read", "config:write", "events:write"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// How often workers look for due jobs when nothing woke them.
    pub poll_interval: Dur,
    /// The nice value (0-19) of the delivery thread: the engine runs on a
    /// thread of its own, and when the CPU is short the kernel serves the
    /// receiving side (acks) first. 0 = the same priority as receiving.
    pub nice: i32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body: Size,
    /// How long a client may take to send its request line and headers.
    pub header_timeout: Dur,
    /// How long a client may take to send its whole body.
    pub body_timeout: Dur,
    /// How long a client may leave a response unread (a write that makes
    /// no progress for this long closes the connection).
    pub write_timeout: Dur,
    /// Request bodies held in memory at once, across all connections.
    pub max_inflight_body: Size,
    pub max_connections: usize,
    /// How long open connections may take to finish after SIGTERM.
    pub shutdown_grace: Dur,
    /// How long a queue-mode request waits for its commit before it is
    /// answered 503 (a stalled disk must not hang senders).
    pub store_timeout: Dur,
    /// Serve the public listener over TLS.
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
    /// Peers whose `Forwarded` / `X-Forwarded-*` / `X-Real-IP` headers are
    /// kept (and extended); every other peer's are dropped.
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    /// Runtime worker threads; 0 (the default) = the CPUs this process may
    /// use (its CPU affinity and cgroup quota). With one, the runtime is
    /// single-threaded (no work stealing between idle workers).
    #[serde(default)]
    pub worker_threads: usize,
}

impl ServerConfig {
    /// The worker threads to start: `worker_threads`, or when 0 the CPUs
    /// available to the process (`std::thread::available_parallelism`,
    /// which reads the affinity mask and the cgroup CPU quota).
    pub fn runtime_workers(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        }
    }
}

/// TLS of the public listener. The files are re-read when their content
/// changes (cert-manager and Kubernetes Secret rotation), no restart needed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    #[serde(default = "default_reload_interval")]
    pub reload_interval: Dur,
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: Dur,
}

fn default_reload_interval() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_handshake_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

/// TLS towards an `https://` upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// Extra CA bundle (PEM) to trust.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Trust the Mozilla root set too (default true; false = only `ca_file`).
    #[serde(default = "default_true")]
    pub webpki_roots: bool,
    /// mTLS: client certificate chain and key presented to the upstream.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

impl UpstreamTlsConfig {
    pub fn options(&self) -> crate::delivery::tls::ClientTlsOptions {
        crate::delivery::tls::ClientTlsOptions {
            ca_file: self.ca_file.clone(),
            webpki_roots: self.webpki_roots,
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Bearer token required on the admin API (not on /healthz, /readyz).
    #[serde(default)]
    pub token: Option<SecretSource>,
    /// Shorthand for `token = { env = "..." }`.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Lets the admin API run without a token on a non-loopback listener
    /// (refused otherwise: anyone reaching the port could replay or delete
    /// acknowledged jobs).
    #[serde(default)]
    pub allow_unauthenticated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub kind: StoreKind,
    pub path: PathBuf,
    #[serde(default)]
    pub url: Option<SecretSource>,
    /// How long delivered jobs (without their payload) and their attempts
    /// are kept for inspection.
    pub history_retention: Dur,
    /// How long dead jobs (with their payload, for replay) are kept.
    pub dead_retention: Dur,
    /// How often expired dedup records and old jobs are purged.
    pub purge_interval: Dur,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Queue,
    Passthrough,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Public path prefix, e.g. `/hooks/sigsentry`.
    pub path: String,
    /// A preset name; omit it and give `[routes.custom]` for a custom scheme.
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub custom: Option<Custom>,
    #[serde(default)]
    pub secrets: Vec<SecretSource>,
    #[serde(default = "default_tolerance")]
    pub tolerance: Dur,
    #[serde(default)]
    pub dedup: Option<DedupConfig>,
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub mode: Mode,
    /// Methods accepted on this route (405 otherwise).
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Status of the acknowledgement in queue mode: 202 (default) or 200.
    #[serde(default = "default_ack_status")]
    pub ack_status: u16,
    /// Per-route override of `server.max_body`.
    #[serde(default)]
    pub max_body: Option<Size>,
    /// Queue mode: requests are refused with 503 while this many jobs of the
    /// route are pending or in flight.
    #[serde(default = "default_queue_limit")]
    pub queue_limit: u64,
    #[serde(default)]
    pub retry: RetryConfig,
    /// `append` (default): the sender's path below the route prefix and its
    /// query are forwarded (after a check for traversal forms); `fixed`:
    /// always the upstream URL's own path and query.
    #[serde(default)]
    pub forward_path: ForwardPath,
    /// Queue mode: the circuit breaker of the route's upstream.
    #[serde(default)]
    pub circuit: CircuitConfig,
    /// Schemes that sign the URL they call (Square, HubSpot, Twilio): that
    /// public URL, exactly as configured at the provider (for Twilio without
    /// the query string, which is taken from the request). A proxy in front
    /// changes what hookgate itself sees, so it is configured, never
    /// reconstructed.
    #[serde(default)]
    pub signed_url: Option<String>,
    /// Senders allowed on this route (CIDRs or addresses); empty: anyone.
    /// Behind `server.trusted_proxies`, the sender is the address they
    /// forwarded. Others get `403 source_not_allowed`.
    #[serde(default)]
    pub allow_cidrs: Vec<Cidr>,
    /// Meta (WhatsApp, Messenger, Instagram): the token of the subscription
    /// check `GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`,
    /// which hookgate then answers itself.
    #[serde(default)]
    pub verify_token: Option<SecretSource>,
    /// A provider handshake to answer after verification (the presets
    /// with one — Slack, Zoom, Twitch — need none).
    #[serde(default)]
    pub challenge: Option<ChallengeConfig>,
    /// Queue mode: `none` (default) delivers jobs concurrently, each on its
    /// own retry schedule; `fifo` one at a time in acceptance order.
    #[serde(default)]
    pub ordering: Ordering,
}

/// A provider's endpoint handshake: a verified request whose JSON body has a
/// string at `pointer` (and, with `when`, a given value elsewhere) is
/// answered `200` with `answer`, `{challenge}` replaced by that string
/// (JSON-escaped when `content_type` is JSON); it is not forwarded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeConfig {
    pub pointer: String,
    #[serde(default)]
    pub when: Option<ChallengeWhen>,
    #[serde(default = "default_challenge_answer")]
    pub answer: String,
    #[serde(default = "default_challenge_type")]
    pub content_type: String,
}

/// The condition of a [`ChallengeConfig`]: the string at `pointer` equals
/// `equals`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeWhen {
    pub pointer: String,
    pub equals: String,
}

fn default_challenge_answer() -> String {
    "{challenge}".into()
}

fn default_challenge_type() -> String {
    "text/plain".into()
}

/// Delivery order of a queue-mode route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    #[default]
    None,
    Fifo,
}

/// The circuit breaker of a queue-mode route (see `delivery::circuit`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitConfig {
    pub enabled: bool,
    /// Consecutive transient failures that open the circuit.
    pub failures: u32,
    /// Wait before the first probe; doubled after each failed probe...
    pub probe_interval: Dur,
    /// ...up to this.
    pub probe_max_interval: Dur,
}

impl CircuitConfig {
    pub fn policy(&self) -> crate::delivery::circuit::BreakerPolicy {
        crate::delivery::circuit::BreakerPolicy {
            enabled: self.enabled,
            failures: self.failures,
            probe_interval: self.probe_interval.0,
            probe_max_interval: self.probe_max_interval.0,
        }
    }
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            enabled: true,
            failures: 5,
            probe_interval: Dur(Duration::from_secs(1)),
            probe_max_interval: Dur(Duration::from_secs(10)),
        }
    }
}

/// What a route forwards of the sender's path and query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardPath {
    #[default]
    Append,
    Fixed,
}

fn default_queue_limit() -> u64 {
    1_000_000
}

/// When a failed forward is tried again (queue mode).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub initial: Dur,
    pub max_delay: Dur,
    /// Explicit delays between attempts; replaces the exponential backoff.
    pub schedule: Vec<Dur>,
    /// 0 = no limit other than `max_age`.
    pub max_attempts: u32,
    pub max_age: Dur,
    pub jitter: f64,
    /// Retry 4xx answers other than 408/425/429 (default: dead at once).
    pub retry_4xx: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let p = crate::delivery::policy::RetryPolicy::default();
        RetryConfig {
            initial: Dur(p.initial),
            max_delay: Dur(p.max_delay),
            schedule: Vec::new(),
            max_attempts: p.max_attempts,
            max_age: Dur(p.max_age),
            jitter: p.jitter,
            retry_4xx: p.retry_4xx,
        }
    }
}

impl RetryConfig {
    pub fn policy(&self) -> crate::delivery::policy::RetryPolicy {
        crate::delivery::policy::RetryPolicy {
            initial: self.initial.0,
            max_delay: self.max_delay.0,
            schedule: self.schedule.iter().map(|d| d.0).collect(),
            max_attempts: self.max_attempts,
            max_age: self.max_age.0,
            jitter: self.jitter,
            retry_4xx: self.retry_4xx,
        }
    }
}

fn default_tolerance() -> Dur {
    Dur(Duration::from_secs(300))
}
fn default_methods() -> Vec<String> {
    vec!["POST".to_string()]
}
fn default_ack_status() -> u16 {
    202
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// `body:/json/pointer`, `header:name`, or `none`.
    pub key: String,
    #[serde(default = "default_dedup_window")]
    pub window: Dur,
    /// When true (default), a request without the key is refused with 400.
    #[serde(default = "default_true")]
    pub required: bool,
    /// Most event ids remembered for this route; past it the oldest are
    /// forgotten early (a warning and a metric), never an error.
    #[serde(default = "default_max_keys")]
    pub max_keys: u64,
}

fn default_max_keys() -> u64 {
    crate::store::DEFAULT_DEDUP_MAX_KEYS
}

fn default_dedup_window() -> Dur {
    Dur(Duration::from_secs(24 * 3600))
}
fn default_true() -> bool {
    true
}

/// Where a route's event id comes from, after parsing `dedup.key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DedupKey {
    None,
    Header(http::HeaderName),
    Body(String),
}

impl DedupKey {
    pub fn parse(s: &str) -> Result<DedupKey, String> {
        if s == "none" {
            return Ok(DedupKey::None);
        }
        if let Some(p) = s.strip_prefix("body:") {
            if !(p.is_empty() || p.starts_with('/')) {
                return Err(format!(
                    "JSON pointer must be empty or start with '/', got {p:?}"
                ));
            }
            return Ok(DedupKey::Body(p.to_string()));
        }
        if let Some(h) = s.strip_prefix("header:") {
            return http::HeaderName::from_bytes(h.as_bytes())
                .map(DedupKey::Header)
                .map_err(|_| format!("invalid header name {h:?}"));
        }
        Err(format!(
            "expected \"body:/pointer\", \"header:name\" or \"none\", got {s:?}"
        ))
    }

    fn from_event_id(src: Option<EventIdSource>) -> DedupKey {
        match src {
            None => DedupKey::None,
            Some(EventIdSource::Header(h)) => DedupKey::Header(http::HeaderName::from_static(h)),
            Some(EventIdSource::BodyPointer(p)) => DedupKey::Body(p.to_string()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub url: String,
    #[serde(default = "default_upstream_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Strip the route's path prefix before appending the request path to
    /// the upstream URL's path (default true).
    #[serde(default = "default_true")]
    pub strip_prefix: bool,
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    /// The HTTP version spoken to the upstream: `http1` (the default),
    /// `http2` (h2c over `http://`, ALPN `h2` over `https://`) or `auto`
    /// (ALPN chooses; `https://` only).
    #[serde(default)]
    pub protocol: crate::delivery::client::Protocol,
}

fn default_upstream_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_concurrency() -> usize {
    16
}

// ---------------------------------------------------------------------------
// Secrets

/// Where a secret comes from: exactly one of `value`, `env`, `file`; plus,
/// for a route's secrets, an optional `name` (what metrics and logs call it
/// instead of its index) and validity window (`not_before` / `not_after`).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// A label for metrics and logs (never the value).
    #[serde(default)]
    pub name: Option<String>,
    /// The secret verifies from this instant on (inclusive).
    #[serde(default)]
    pub not_before: Option<Rfc3339>,
    /// The secret verifies until this instant (inclusive), then no more.
    #[serde(default)]
    pub not_after: Option<Rfc3339>,
}

/// An instant written in RFC 3339, in UTC with a `Z`: `2026-01-31T00:00:00Z`
/// (fractional seconds allowed, offsets are not).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339(pub std::time::SystemTime);

impl<'de> Deserialize<'de> for Rfc3339 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text).map(Rfc3339).map_err(|_| {
            serde::de::Error::custom(format!(
                "{text:?} is not an RFC 3339 UTC timestamp such as 2026-01-31T00:00:00Z"
            ))
        })
    }
}

impl fmt::Debug for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339(self.0))
    }
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.value, &self.env, &self.file) {
            (Some(_), _, _) => f.write_str("SecretSource(value: [redacted])"),
            (_, Some(e), _) => write!(f, "SecretSource(env: {e})"),
            (_, _, Some(p)) => write!(f, "SecretSource(file: {})", p.display()),
            _ => f.write_str("SecretSource(empty)"),
        }
    }
}

impl SecretSource {
    /// What metrics and logs call the secret at `index` of its route: its
    /// `name`, or the index.
    pub fn label(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| index.to_string())
    }

    /// When the secret verifies.
    pub fn window(&self) -> crate::signature::Window {
        crate::signature::Window {
            not_before: self.not_before.map(|t| t.0),
            not_after: self.not_after.map(|t| t.0),
        }
    }

    pub fn from_env(name: &str) -> Self {
        SecretSource {
            env: Some(name.to_string()),
            ..Default::default()
        }
    }

    /// Reads the secret. A file's single trailing newline (`\n` or `\r\n`) is
    /// removed: `echo secret > file` and Kubernetes Secrets made from such
    /// files are the common case, and a webhook secret never ends in one.
    pub fn resolve(&self) -> Result<Secret, String> {
        let set = [
            self.value.is_some(),
            self.env.is_some(),
            self.file.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            return Err("exactly one of `value`, `env`, `file` must be set".into());
        }
        let bytes = if let Some(v) = &self.value {
            v.as_bytes().to_vec()
        } else if let Some(name) = &self.env {
            match std::env::var_os(name) {
                Some(v) => v.into_encoded_bytes(),
                None => return Err(format!("environment variable {name} is not set")),
            }
        } else {
            let path = self.file.as_ref().expect("checked above");
            let mut b = std::fs::read(path)
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
            if b.ends_with(b"\r\n") {
                b.truncate(b.len() - 2);
            } else if b.ends_with(b"\n") {
                b.truncate(b.len() - 1);
            }
            b
        };
        if bytes.is_empty() {
            return Err("secret is empty".into());
        }
        Ok(Secret(bytes))
    }
}

/// A resolved secret. Its `Debug` never prints the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

// ---------------------------------------------------------------------------
// Durations and sizes

/// A duration written as `"30s"`, `"5m"`, `"24h"`, `"1h 30m"` (humantime)
/// or a bare integer of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Dur(Duration::from_secs(s))),
            Raw::Text(t) => humantime::parse_duration(t.trim())
                .map(Dur)
                .map_err(|e| serde::de::Error::custom(format!("invalid duration {t:?}: {e}"))),
        }
    }
}

/// A byte size written as `"1MiB"`, `"512KiB"`, `"2MB"` or a bare integer of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(b) => Ok(Size(b)),
            Raw::Text(t) => t
                .trim()
                .parse::<bytesize::ByteSize>()
                .map(|b| Size(b.as_u64()))
                .map_err(|e| serde::de::Error::custom(format!("invalid size {t:?}: {e}"))),
        }
    }
}

// ---------------------------------------------------------------------------
// Loading

/// Why a configuration could not be used. Every message names its key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Parse(String),
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

impl ConfigError {
    /// One line per problem, for `check-config`.
    pub fn messages(&self) -> Vec<String> {
        match self {
            ConfigError::Parse(m) => vec![m.clone()],
            ConfigError::Invalid(v) => v.clone(),
        }
    }
}

/// The figment a configuration is extracted from: defaults, then the file
/// (when given), then the environment.
pub fn figment(file: Option<&Path>) -> Figment {
    let mut f = Figment::from(Toml::string(DEFAULT_TOML));
    if let Some(path) = file {
        f = f.merge(Toml::file_exact(path));
    }
    // Only variables with a `__` whose first segment is a section are
    // configuration: HOOKGATE_CONFIG, HOOKGATE_ADMIN_TOKEN, HOOKGATE_MASTER_KEY
    // and friends are read elsewhere and must not trip deny_unknown_fields.
    f.merge(
        Env::prefixed("HOOKGATE_")
            .filter(|k| {
                let k = k.as_str();
                k.contains("__")
                    && ENV_SECTIONS
                        .iter()
                        .any(|s| k.len() > s.len() && k[..s.len()].eq_ignore_ascii_case(s))
            })
            .split("__"),
    )
}

/// Loads and validates a configuration.
pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::Parse(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
    }
    let config: Config = figment(file)
        .extract()
        .map_err(|e| ConfigError::Parse(figment_message(e)))?;
    config.validate()?;
    Ok(config)
}

/// Parses a configuration from a TOML string (over the defaults, no env).
pub fn from_toml(toml: &str) -> Result<Config, ConfigError> {
    let config: Config = Figment::from(Toml::string(DEFAULT_TOML))
        .merge(Toml::string(toml))
        .extract()
        .map_err(|e| ConfigError::Parse(figment_message(e)))?;
    config.validate()?;
    Ok(config)
}

fn figment_message(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let kind = e.kind.to_string();
            if key.is_empty() {
                kind
            } else {
                format!("{key}: {kind}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Config {
    /// Checks everything that can be checked before start, reporting every
    /// problem with the key it concerns.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errs = Vec::new();
        if self.server.max_body.0 == 0 {
            errs.push("server.max_body: must be greater than zero".into());
        }
        if self.server.max_connections == 0 {
            errs.push("server.max_connections: must be greater than zero".into());
        }
        if self.server.header_timeout.0.is_zero() {
            errs.push("server.header_timeout: must be greater than zero".into());
        }
        if self.server.store_timeout.0.is_zero() {
            errs.push("server.store_timeout: must be greater than zero".into());
        }
        if self.server.worker_threads > 1024 {
            errs.push("server.worker_threads: at most 1024 (0 = the CPUs available)".into());
        }
        if self.server.write_timeout.0.is_zero() {
            errs.push("server.write_timeout: must be greater than zero".into());
        }
        if self.server.max_inflight_body.0 < self.server.max_body.0 {
            errs.push(format!(
                "server.max_inflight_body: must be at least server.max_body ({} bytes)",
                self.server.max_body.0
            ));
        }
        if self.server.body_timeout.0.is_zero() {
            errs.push("server.body_timeout: must be greater than zero".into());
        }
        if let Some(t) = &self.server.tls {
            if let Err(e) = crate::server::tls::ReloadingCert::load(&t.cert, &t.key) {
                errs.push(format!("server.tls: {e}"));
            }
            if t.reload_interval.0.is_zero() {
                errs.push("server.tls.reload_interval: must be greater than zero".into());
            }
            if t.handshake_timeout.0.is_zero() {
                errs.push("server.tls.handshake_timeout: must be greater than zero".into());
            }
        }
        if self.server.listen == self.admin.listen && self.server.listen.port() != 0 {
            errs.push("admin.listen: must differ from server.listen".into());
        }
        if self.admin.token.is_some() && self.admin.token_env.is_some() {
            errs.push("admin.token: give either `token` or `token_env`, not both".into());
        }
        match self.admin_token() {
            Err(e) => errs.push(format!("admin.token: {e}")),
            Ok(None)
                if !self.admin.listen.ip().is_loopback() && !self.admin.allow_unauthenticated =>
            {
                errs.push(format!(
                    "admin.token: required when admin.listen ({}) is not a loopback address: \
                     anyone reaching it could replay or delete acknowledged jobs (set admin.token \
                     or admin.token_env, or admin.allow_unauthenticated = true to accept that)",
                    self.admin.listen
                ))
            }
            Ok(_) => {}
        }
        match self.store.kind {
            StoreKind::Sqlite => {
                if self.store.path.as_os_str().is_empty() {
                    errs.push("store.path: must not be empty".into());
                }
            }
            StoreKind::Postgres => errs.push(
                "store.kind: \"postgres\" is not available in this build yet; use \"sqlite\""
                    .into(),
            ),
        }
        if self.store.purge_interval.0.is_zero() {
            errs.push("store.purge_interval: must be greater than zero".into());
        }
        if self.delivery.poll_interval.0.is_zero() {
            errs.push("delivery.poll_interval: must be greater than zero".into());
        }
        if !(0..=19).contains(&self.delivery.nice) {
            errs.push("delivery.nice: must be between 0 and 19".into());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            errs.push(format!(
                "log.level: invalid filter {:?} (e.g. \"info\", \"hookgate=debug\")",
                self.log.level
            ));
        }

        let mut paths = HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            if !r.path.starts_with('/') {
                errs.push(format!("{at}.path: must start with '/', got {:?}", r.path));
            } else if r.path.len() > 1 && r.path.ends_with('/') {
                errs.push(format!(
                    "{at}.path: must not end with '/', got {:?}",
                    r.path
                ));
            }
            if !paths.insert(r.path.as_str()) {
                errs.push(format!("{at}.path: {:?} is used by another route", r.path));
            }
            if let Err(e) = r.scheme() {
                errs.push(format!("{at}.{e}"));
            }
            if r.secrets.is_empty() {
                errs.push(format!("{at}.secrets: at least one secret is required"));
            }
            let mut labels = HashSet::new();
            for (j, s) in r.secrets.iter().enumerate() {
                if let Err(e) = s.resolve() {
                    errs.push(format!("{at}.secrets[{j}]: {e}"));
                }
                if let (Some(from), Some(until)) = (s.not_before, s.not_after) {
                    if from.0 > until.0 {
                        errs.push(format!("{at}.secrets[{j}].not_after: is before not_before"));
                    }
                }
                if s.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
                    errs.push(format!("{at}.secrets[{j}].name: must not be empty"));
                }
                if !labels.insert(s.label(j)) {
                    errs.push(format!(
                        "{at}.secrets[{j}].name: {:?} names another secret of the route",
                        s.label(j)
                    ));
                }
            }
            if let Ok(scheme) = r.scheme() {
                let url = r.signed_url.as_deref().unwrap_or_default();
                if scheme.signs_url() && url.is_empty() {
                    errs.push(format!(
                        "{at}.signed_url: scheme {} signs the public URL the provider calls; set it to that URL",
                        scheme.name()
                    ));
                }
            }
            if r.tolerance.0.is_zero() {
                errs.push(format!("{at}.tolerance: must be greater than zero"));
            }
            if let Some(d) = &r.dedup {
                if let Err(e) = DedupKey::parse(&d.key) {
                    errs.push(format!("{at}.dedup.key: {e}"));
                }
                if d.window.0.is_zero() {
                    errs.push(format!("{at}.dedup.window: must be greater than zero"));
                }
                if d.max_keys == 0 {
                    errs.push(format!("{at}.dedup.max_keys: must be greater than zero"));
                }
            }
            match r.upstream.url.parse::<http::Uri>() {
                Ok(u) => {
                    let scheme_ok = matches!(u.scheme_str(), Some("http") | Some("https"));
                    if !scheme_ok || u.host().is_none() {
                        errs.push(format!(
                            "{at}.upstream.url: must be an absolute http:// or https:// URL, got {:?}",
                            r.upstream.url
                        ));
                    } else if r.upstream.protocol == crate::delivery::client::Protocol::Auto
                        && u.scheme_str() != Some("https")
                    {
                        errs.push(format!(
                            "{at}.upstream.protocol: \"auto\" chooses HTTP/2 by TLS ALPN and needs \
                             an https:// upstream (\"http2\" speaks h2c, HTTP/2 without TLS)"
                        ));
                    }
                }
                Err(e) => errs.push(format!("{at}.upstream.url: {e}")),
            }
            if let Some(t) = &r.upstream.tls {
                if let Err(e) = crate::delivery::tls::client_config(&t.options()) {
                    errs.push(format!("{at}.upstream.tls: {e}"));
                }
            }
            if r.upstream.timeout.0.is_zero() {
                errs.push(format!("{at}.upstream.timeout: must be greater than zero"));
            }
            if r.upstream.concurrency == 0 {
                errs.push(format!(
                    "{at}.upstream.concurrency: must be greater than zero"
                ));
            }
            if r.methods.is_empty() {
                errs.push(format!("{at}.methods: at least one method is required"));
            }
            for m in &r.methods {
                if http::Method::from_bytes(m.as_bytes()).is_err() {
                    errs.push(format!("{at}.methods: invalid method {m:?}"));
                }
            }
            if !matches!(r.ack_status, 200 | 202) {
                errs.push(format!(
                    "{at}.ack_status: must be 200 or 202, got {}",
                    r.ack_status
                ));
            }
            if r.queue_limit == 0 {
                errs.push(format!("{at}.queue_limit: must be greater than zero"));
            }
            if let Some(c) = &r.challenge {
                for (key, p) in std::iter::once(("pointer", &c.pointer))
                    .chain(c.when.as_ref().map(|w| ("when.pointer", &w.pointer)))
                {
                    if !p.is_empty() && !p.starts_with('/') {
                        errs.push(format!(
                            "{at}.challenge.{key}: a JSON pointer starts with '/' (e.g. \"/challenge\")"
                        ));
                    }
                }
                if http::HeaderValue::from_str(&c.content_type).is_err() {
                    errs.push(format!(
                        "{at}.challenge.content_type: not a valid header value"
                    ));
                }
            }
            if r.ordering == Ordering::Fifo && r.mode != Mode::Queue {
                errs.push(format!(
                    "{at}.ordering: \"fifo\" needs mode = \"queue\" (passthrough keeps the sender's order)"
                ));
            }
            if r.circuit.failures == 0 {
                errs.push(format!("{at}.circuit.failures: must be greater than zero"));
            }
            if r.circuit.probe_interval.0.is_zero() {
                errs.push(format!(
                    "{at}.circuit.probe_interval: must be greater than zero"
                ));
            }
            if r.circuit.probe_max_interval.0 < r.circuit.probe_interval.0 {
                errs.push(format!(
                    "{at}.circuit.probe_max_interval: must be at least circuit.probe_interval"
                ));
            }
            if r.retry.initial.0.is_zero() {
                errs.push(format!("{at}.retry.initial: must be greater than zero"));
            }
            if r.retry.max_delay.0 < r.retry.initial.0 {
                errs.push(format!(
                    "{at}.retry.max_delay: must be at least retry.initial"
                ));
            }
            if !(0.0..=1.0).contains(&r.retry.jitter) {
                errs.push(format!("{at}.retry.jitter: must be between 0.0 and 1.0"));
            }
            if r.retry.schedule.iter().any(|d| d.0.is_zero()) {
                errs.push(format!(
                    "{at}.retry.schedule: delays must be greater than zero"
                ));
            }
            if r.max_body.is_some_and(|s| s.0 == 0) {
                errs.push(format!("{at}.max_body: must be greater than zero"));
            }
            if r.max_body
                .is_some_and(|s| s.0 > self.server.max_inflight_body.0)
            {
                errs.push(format!(
                    "{at}.max_body: must not exceed server.max_inflight_body ({} bytes)",
                    self.server.max_inflight_body.0
                ));
            }
        }
        self.validate_sender(&mut errs);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errs))
        }
    }

    /// `[sender]` and `[[api_keys]]`.
    fn validate_sender(&self, errs: &mut Vec<String>) {
        let s = &self.sender;
        if s.enabled && s.master_key.is_none() && !s.insecure_generate_master_key {
            errs.push(
                "sender.master_key: required when sender.enabled (64 hex digits or base64 of 32 bytes; \
                 insecure_generate_master_key = true generates a throwaway one for development)"
                    .into(),
            );
        }
        if s.retry_schedule.iter().any(|d| d.0.is_zero()) {
            errs.push("sender.retry_schedule: delays must be greater than zero".into());
        }
        if s.attempt_timeout.0.is_zero() {
            errs.push("sender.attempt_timeout: must be greater than zero".into());
        }
        if s.concurrency == 0 {
            errs.push("sender.concurrency: must be greater than zero".into());
        }
        if s.max_body.0 == 0 || s.max_body.0 > 16 * 1024 * 1024 {
            errs.push("sender.max_body: must be between 1 byte and 16MiB".into());
        }
        if s.dedup_window.0.is_zero() {
            errs.push("sender.dedup_window: must be greater than zero".into());
        }
        if let Some(smtp) = &s.smtp {
            if smtp.host.trim().is_empty() {
                errs.push("sender.smtp.host: must not be empty".into());
            }
            if !smtp.from.contains('@') {
                errs.push("sender.smtp.from: must be an email address".into());
            }
            if smtp.password.is_some() && smtp.username.is_none() {
                errs.push("sender.smtp.username: required with sender.smtp.password".into());
            }
        }
        if !self.api_keys.is_empty() && !s.enabled {
            errs.push("api_keys: set sender.enabled = true to serve the /v1/ API".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, k) in self.api_keys.iter().enumerate() {
            let at = format!("api_keys[{i}]");
            if k.name.trim().is_empty() {
                errs.push(format!("{at}.name: must not be empty"));
            } else if !names.insert(k.name.as_str()) {
                errs.push(format!("{at}.name: {:?} is used twice", k.name));
            }
            match (&k.key, &k.key_sha256) {
                (Some(_), None) => {}
                (None, Some(h)) => {
                    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                        errs.push(format!("{at}.key_sha256: must be 64 hex digits"));
                    }
                }
                _ => errs.push(format!(
                    "{at}: exactly one of `key`, `key_sha256` must be set"
                )),
            }
            if k.permissions.is_empty() {
                errs.push(format!("{at}.permissions: must not be empty"));
            }
            for p in &k.permissions {
                if !API_PERMISSIONS.contains(&p.as_str()) {
                    errs.push(format!(
                        "{at}.permissions: unknown permission {p:?} (one of {})",
                        API_PERMISSIONS.join(", ")
                    ));
                }
            }
            match (&k.project, &k.tenant) {
                (Some(p), None) if !p.is_empty() => {}
                (None, Some(t)) if !t.is_empty() => {}
                _ => errs.push(format!(
                    "{at}: exactly one of `project`, `tenant` must be set"
                )),
            }
        }
    }

    /// The admin token, when one is configured.
    pub fn admin_token(&self) -> Result<Option<Secret>, String> {
        match (&self.admin.token, &self.admin.token_env) {
            (Some(s), _) => s.resolve().map(Some),
            (None, Some(env)) => SecretSource::from_env(env).resolve().map(Some),
            (None, None) => Ok(None),
        }
    }
}

impl RouteConfig {
    /// The route's scheme. Errors are prefixed with the key they concern.
    pub fn scheme(&self) -> Result<Scheme, String> {
        match (&self.scheme, &self.custom) {
            (Some(_), Some(_)) => {
                Err("scheme: give either `scheme` or `[routes.custom]`, not both".into())
            }
            (None, None) => {
                Err("scheme: required (a preset name, or a `[routes.custom]` table)".into())
            }
            (Some(name), None) => name
                .parse::<Preset>()
                .map(Scheme::Preset)
                .map_err(|e| format!("scheme: {e}")),
            (None, Some(c)) => c
                .validate()
                .map(|_| Scheme::Custom(Box::new(c.clone())))
                .map_err(|e| format!("custom.{e}")),
        }
    }

    /// The effective dedup key: the configured one, or the scheme's default
    /// event id (`none` when the scheme has none).
    pub fn dedup_key(&self) -> DedupKey {
        if let Some(d) = &self.dedup {
            return DedupKey::parse(&d.key).unwrap_or(DedupKey::None);
        }
        match self.scheme() {
            Ok(Scheme::Preset(p)) => DedupKey::from_event_id(p.default_event_id()),
            _ => DedupKey::None,
        }
    }

    /// Most event ids remembered for this route.
    pub fn dedup_max_keys(&self) -> u64 {
        self.dedup
            .as_ref()
            .map_or_else(default_max_keys, |d| d.max_keys)
    }

    pub fn dedup_window(&self) -> Duration {
        self.dedup
            .as_ref()
            .map(|d| d.window.0)
            .unwrap_or(default_dedup_window().0)
    }

    /// Whether a request lacking the dedup key is refused. Only an explicit
    /// `dedup` table makes the key required: a preset's default key is used
    /// when present and skipped when absent, so a sender that omits it is
    /// not locked out by a default the operator never chose.
    pub fn dedup_required(&self) -> bool {
        self.dedup.as_ref().is_some_and(|d| d.required)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[[routes]]
path = "/hooks/a"
scheme = "github"
secrets = [{ value = "s3cret" }]
[routes.upstream]
url = "http://127.0.0.1:3000/a"
"#;

    #[test]
    fn minimal_route_gets_defaults() {
        let c = from_toml(MIN).unwrap();
        let r = &c.routes[0];
        assert_eq!(r.mode, Mode::Queue);
        assert_eq!(r.tolerance.0, Duration::from_secs(300));
        assert_eq!(r.upstream.concurrency, 16);
        assert_eq!(c.server.max_body.0, 1024 * 1024);
        assert_eq!(
            r.dedup_key(),
            DedupKey::Header(http::HeaderName::from_static("x-github-delivery"))
        );
        assert!(!r.dedup_required());
    }

    #[test]
    fn durations_and_sizes() {
        let c = from_toml(
            r#"
[server]
max_body = "512KiB"
body_timeout = 7
header_timeout = "1m 30s"
"#,
        )
        .unwrap();
        assert_eq!(c.server.max_body.0, 512 * 1024);
        assert_eq!(c.server.body_timeout.0, Duration::from_secs(7));
        assert_eq!(c.server.header_timeout.0, Duration::from_secs(90));
        let e = from_toml("[server]\nmax_body = \"lots\"").unwrap_err();
        assert!(e.to_string().contains("server.max_body"), "{e}");
    }

    #[test]
    fn secret_names_windows_and_signed_url() {
        let c = from_toml(
            r#"
[[routes]]
path = "/hooks/a"
scheme = "square"
signed_url = "https://public.example.com/hooks/a"
secrets = [
  { value = "new", name = "new", not_before = "2026-01-01T00:00:00Z" },
  { value = "old", not_after = "2026-02-01T12:30:00.5Z" },
]
[routes.upstream]
url = "http://127.0.0.1:3000/a"
"#,
        )
        .unwrap();
        let r = &c.routes[0];
        assert_eq!(
            r.signed_url.as_deref(),
            Some("https://public.example.com/hooks/a")
        );
        assert_eq!(r.secrets[0].label(0), "new");
        assert_eq!(r.secrets[1].label(1), "1");
        let w = r.secrets[0].window();
        assert_eq!(
            w.not_before,
            Some(humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap())
        );
        assert_eq!(w.not_after, None);
        assert!(r.secrets[1].window().not_after.is_some());
        // The value never shows, names and windows do not matter to Debug.
        assert!(!format!("{:?}", r.secrets).contains("old\""));

        let e = from_toml(
            r#"
[[routes]]
path = "/hooks/a"
scheme = "hubspot"
secrets = [
  { value = "a", name = "x", not_before = "2026-03-01T00:00:00Z", not_after = "2026-02-01T00:00:00Z" },
  { value = "b", name = "x" },
  { value = "c", name = " " },
]
[routes.upstream]
url = "http://127.0.0.1:3000/a"
"#,
        )
        .unwrap_err();
        let m = e.messages();
        for want in [
            "routes[0].secrets[0].not_after: is before not_before",
            "routes[0].secrets[1].name: \"x\" names another secret",
            "routes[0].secrets[2].name: must not be empty",
            "routes[0].signed_url: scheme hubspot signs the public URL",
        ] {
            assert!(m.iter().any(|x| x.starts_with(want)), "{want} not in {m:?}");
        }
        // Only RFC 3339 in UTC.
        for bad in ["2026-01-01", "2026-01-01T00:00:00+02:00", "yesterday"] {
            let toml = MIN.replace(
                r#"{ value = "s3cret" }"#,
                &format!(r#"{{ value = "s3cret", not_after = "{bad}" }}"#),
            );
            let e = from_toml(&toml).unwrap_err().to_string();
            assert!(
                e.contains("not_after") && e.contains("RFC 3339"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = SecretSource {
            value: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(format!("{:?}", s.resolve().unwrap()), "[redacted]");
        let c = from_toml(MIN).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn secret_file_trailing_newline_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "abc\n").unwrap();
        let s = SecretSource {
            file: Some(p.clone()),
            ..Default::default()
        };
        assert_eq!(s.resolve().unwrap().expose(), b"abc");
        std::fs::write(&p, "abc\r\n").unwrap();
        assert_eq!(s.resolve().unwrap().expose(), b"abc");
        std::fs::write(&p, "").unwrap();
        assert_eq!(s.resolve().unwrap_err(), "secret is empty");
    }

    #[test]
    fn runtime_workers_follow_the_setting_or_the_available_cpus() {
        let mut c = from_toml("").unwrap();
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(c.server.worker_threads, 0);
        assert_eq!(c.server.runtime_workers(), cpus);
        c.server.worker_threads = 3;
        assert_eq!(c.server.runtime_workers(), 3);
    }

    #[test]
    fn dedup_key_parse() {
        assert_eq!(DedupKey::parse("none").unwrap(), DedupKey::None);
        assert_eq!(
            DedupKey::parse("body:/analysisId").unwrap(),
            DedupKey::Body("/analysisId".into())
        );
        assert!(DedupKey::parse("body:analysisId").is_err());
        assert!(DedupKey::parse("header:bad header").is_err());
        assert!(DedupKey::parse("cookie:x").is_err());
    }

    #[test]
    fn every_sender_and_api_key_error_is_reported_with_its_key() {
        let e = from_toml(
            r#"
[sender]
enabled = true
retry_schedule = ["0s"]
attempt_timeout = "0s"
concurrency = 0
max_body = "32MiB"
dedup_window = "0s"
[sender.smtp]
host = " "
port = 25
from = "nobody"
password = { value = "p" }
[[api_keys]]
name = ""
permissions = []
[[api_keys]]
name = "a"
key = { value = "k" }
key_sha256 = "00"
permissions = ["admin"]
project = "p"
tenant = "t"
[[api_keys]]
name = "a"
key_sha256 = "zz"
permissions = ["config:read"]
project = "p"
"#,
        )
        .unwrap_err();
        let m = e.messages();
        for want in [
            "sender.master_key: required when sender.enabled",
            "sender.retry_schedule: delays must be greater than zero",
            "sender.attempt_timeout: must be greater than zero",
            "sender.concurrency: must be greater than zero",
            "sender.max_body: must be between 1 byte and 16MiB",
            "sender.dedup_window: must be greater than zero",
            "sender.smtp.host: must not be empty",
            "sender.smtp.from: must be an email address",
            "sender.smtp.username: required with sender.smtp.password",
            "api_keys[0].name: must not be empty",
            "api_keys[0]: exactly one of `key`, `key_sha256` must be set",
            "api_keys[0].permissions: must not be empty",
            "api_keys[0]: exactly one of `project`, `tenant` must be set",
            "api_keys[1]: exactly one of `key`, `key_sha256` must be set",
            "api_keys[1].permissions: unknown permission \"admin\"",
            "api_keys[1]: exactly one of `project`, `tenant` must be set",
            "api_keys[2].name: \"a\" is used twice",
            "api_keys[2].key_sha256: must be 64 hex digits",
        ] {
            assert!(m.iter().any(|x| x.starts_with(want)), "{want} not in {m:?}");
        }
        // Keys without the sender: refused rather than silently unused.
        let e = from_toml(
            "[[api_keys]]\nname = \"a\"\nkey = { value = \"k\" }\npermissions = [\"config:read\"]\nproject = \"p\"\n",
        )
        .unwrap_err();
        assert!(
            e.messages()
                .iter()
                .any(|x| x.starts_with("api_keys: set sender.enabled = true")),
            "{e}"
        );
        // The development flag stands in for the master key.
        from_toml("[sender]\nenabled = true\ninsecure_generate_master_key = true\n").unwrap();
    }

    #[test]
    fn every_error_is_reported_with_its_key() {
        let e = from_toml(
            r#"
[[routes]]
path = "hooks"
scheme = "nope"
[routes.upstream]
url = "ftp://x"
concurrency = 0
"#,
        )
        .unwrap_err();
        let m = e.messages();
        for want in [
            "routes[0].path: must start with '/'",
            "routes[0].scheme: ",
            "routes[0].secrets: at least one secret is required",
            "routes[0].upstream.url: must be an absolute",
            "routes[0].upstream.concurrency: must be greater than zero",
        ] {
            assert!(m.iter().any(|x| x.starts_with(want)), "{want} not in {m:?}");
        }
    }
    #[test]
    fn delivery_nice_defaults_to_10_and_is_bounded() {
        assert_eq!(from_toml(MIN).unwrap().delivery.nice, 10);
        let c = from_toml(&format!("[delivery]\nnice = 0\n{MIN}")).unwrap();
        assert_eq!(c.delivery.nice, 0);
        for bad in ["-1", "20"] {
            let e = from_toml(&format!("[delivery]\nnice = {bad}\n{MIN}")).unwrap_err();
            assert!(
                e.to_string()
                    .contains("delivery.nice: must be between 0 and 19"),
                "{e}"
            );
        }
    }
}

/// An IP network, `addr/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    /// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a single host).
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network (e.g. 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod cidr_tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_match() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped");
        let host: Cidr = "192.0.2.7".parse().unwrap();
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")) && !all.contains(ip("2001:db8::1")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        for bad in ["10.0.0.0/33", "nope", "::/129", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
