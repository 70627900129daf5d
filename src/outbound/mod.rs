//! The sender (SPEC §2): the `/v1/` API on the admin listener (API keys,
//! channels of seed 001, webhook endpoints of seed 004, intake of analyses
//! and events), credential encryption, per-platform formatting, and the
//! preparation of each delivery at attempt time for the one engine.
//!
//! Invariants:
//! - an accepted analysis or event and **all** its deliveries are written in
//!   one durable transaction ([`Store::enqueue_fanout`]) before the `202`;
//! - each destination is one queue of the engine (`sender/<id>`), with its
//!   own concurrency limit, so a slow endpoint cannot starve the others;
//! - requests are prepared at attempt time from the stored event: a rotated
//!   secret or an edited URL applies to the next attempt, and timestamps in
//!   signatures are the attempt's;
//! - credentials and signing secrets are sealed at rest and never appear in
//!   an answer, a log line or an error text (only a masked hint);
//! - one process owns the destinations in memory (the embedded store is
//!   single-process); every change is stored before it is answered.

pub mod analysis;
pub mod api;
pub mod dest;
pub mod email;
pub mod format;
pub mod keys;
#[cfg(test)]
mod openapi;
pub mod prepare;
pub mod seal;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::clock::{now_ms, Clock};
use crate::config::Config;
use crate::delivery::circuit::QueueControl;
use crate::delivery::client::HttpClient;
use crate::delivery::engine::{Deliver, Engine, QueueTarget};
use crate::delivery::policy::RetryPolicy;
use crate::store::{Destination, Store};

use self::dest::{Credentials, Kind, Spec, UrlRules};
use self::keys::Keys;
use self::seal::Sealer;

/// Prefix of the engine queues of the sender's destinations; a route path
/// always starts with `/`, so the two never meet.
pub const QUEUE_PREFIX: &str = "sender/";

/// Job kinds of the sender.
pub const KIND_ANALYSIS: &str = "analysis";
pub const KIND_EVENT: &str = "event";

pub fn queue_of(id: &str) -> String {
    format!("{QUEUE_PREFIX}{id}")
}

/// The sender's settings, from `[sender]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: RetryPolicy,
    pub attempt_timeout: Duration,
    pub channel_quota: u32,
    pub rules: UrlRules,
    pub concurrency: usize,
    pub auto_disable_after: u32,
    pub rotation_grace: Duration,
    pub dedup_window: Duration,
    pub max_body: u64,
}

impl Settings {
    pub fn from_config(cfg: &crate::config::SenderConfig) -> Settings {
        let schedule: Vec<Duration> = cfg.retry_schedule.iter().map(|d| d.0).collect();
        let total: Duration = schedule.iter().sum();
        let attempts = u32::try_from(schedule.len() + 1).unwrap_or(u32::MAX);
        Settings {
            policy: RetryPolicy {
                initial: schedule.first().copied().unwrap_or(Duration::from_secs(60)),
                max_delay: schedule
                    .iter()
                    .max()
                    .copied()
                    .unwrap_or(Duration::from_secs(60)),
                schedule,
                max_attempts: attempts,
                // The schedule decides; the age limit only bounds a job
                // whose Retry-After answers doubled every delay.
                max_age: total * 2 + Duration::from_secs(24 * 3600),
                jitter: 0.1,
                retry_4xx: false,
            },
            attempt_timeout: cfg.attempt_timeout.0,
            channel_quota: cfg.channel_quota,
            rules: UrlRules {
                https_only: cfg.https_only,
            },
            concurrency: usize::try_from(cfg.concurrency).unwrap_or(1).max(1),
            auto_disable_after: cfg.auto_disable_after,
            rotation_grace: cfg.secret_rotation_grace.0,
            dedup_window: cfg.dedup_window.0,
            max_body: cfg.max_body.0,
        }
    }
}

/// A destination as the sender holds it.
#[derive(Debug, Clone)]
pub(crate) struct Dest {
    pub row: Destination,
    pub kind: Kind,
    pub spec: Spec,
    pub ctl: Arc<QueueControl>,
    /// When the engine's last health change was stored (ms).
    pub persisted_at: i64,
}

impl Dest {
    pub fn is_open(&self) -> bool {
        self.row.active && self.row.disabled_at.is_none()
    }
}

/// The sender's metrics.
pub(crate) struct SenderMetrics {
    /// Finished attempts by destination type and outcome.
    pub deliveries: prometheus::IntCounterVec,
    /// Destinations by type and health.
    pub health: prometheus::IntGaugeVec,
    /// Analyses and events accepted, duplicate, by kind.
    pub intake: prometheus::IntCounterVec,
    pub auth_failures: prometheus::IntCounter,
}

impl SenderMetrics {
    fn new(registry: &prometheus::Registry) -> Result<SenderMetrics, String> {
        use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts};
        let m = SenderMetrics {
            deliveries: IntCounterVec::new(
                Opts::new(
                    "hookgate_sender_attempts_total",
                    "Sender delivery attempts by destination type and outcome \
                     (delivered, retry, failed, exhausted).",
                ),
                &["type", "outcome"],
            )
            .map_err(|e| e.to_string())?,
            health: IntGaugeVec::new(
                Opts::new(
                    "hookgate_sender_destinations",
                    "Sender destinations by type and health (Healthy, Failing, Pending, Disabled).",
                ),
                &["type", "health"],
            )
            .map_err(|e| e.to_string())?,
            intake: IntCounterVec::new(
                Opts::new(
                    "hookgate_sender_intake_total",
                    "Analyses and events posted to the sender by kind and result \
                     (accepted, duplicate, no_destination).",
                ),
                &["kind", "result"],
            )
            .map_err(|e| e.to_string())?,
            auth_failures: IntCounter::new(
                "hookgate_sender_auth_failures_total",
                "/v1/ requests refused for a missing or invalid API key.",
            )
            .map_err(|e| e.to_string())?,
        };
        for c in [
            Box::new(m.deliveries.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.health.clone()),
            Box::new(m.intake.clone()),
            Box::new(m.auth_failures.clone()),
        ] {
            registry.register(c).map_err(|e| e.to_string())?;
        }
        Ok(m)
    }
}

pub struct Sender {
    pub(crate) store: Store,
    pub(crate) engine: Arc<Engine>,
    pub(crate) sealer: Sealer,
    pub(crate) keys: Keys,
    pub(crate) settings: Settings,
    pub(crate) client: HttpClient,
    pub(crate) clock: Clock,
    pub(crate) dests: Mutex<HashMap<String, Dest>>,
    /// Serialises the storing of destination rows, so that a later state
    /// never loses to an earlier one.
    pub(crate) persist: tokio::sync::Mutex<()>,
    pub(crate) metrics: SenderMetrics,
    pub(crate) smtp: Option<crate::config::SmtpConfig>,
    /// The SMTP client of email channels, when `[sender.smtp]` is set.
    pub(crate) mailer: Option<Arc<email::Mailer>>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl Sender {
    /// Opens the sender: resolves the master key and the API keys, loads
    /// the destinations from the store and gives each its engine queue.
    pub async fn open(
        config: &Config,
        store: Store,
        engine: Arc<Engine>,
        clock: Clock,
        registry: &prometheus::Registry,
    ) -> Result<Arc<Sender>, String> {
        let cfg = &config.sender;
        let sealer = match &cfg.master_key {
            Some(src) => {
                let text = src
                    .resolve()
                    .map_err(|e| format!("sender.master_key: {e}"))?;
                Sealer::from_master_key(text.expose())
                    .map_err(|e| format!("sender.master_key: {e}"))?
            }
            None if cfg.insecure_generate_master_key => {
                tracing::warn!(
                    "sender.insecure_generate_master_key: credentials are sealed with a throwaway key; \
                     channels and endpoints created now cannot be delivered to after a restart. \
                     Set sender.master_key for anything but development."
                );
                Sealer::generate().map_err(|e| format!("sender: {e}"))?
            }
            None => return Err("sender.master_key: required when sender.enabled".into()),
        };
        let keys = Keys::from_config(&config.api_keys)?;
        if keys.is_empty() {
            tracing::warn!(
                "sender enabled without [[api_keys]]: every /v1/ request will be refused (401)"
            );
        }
        let settings = Settings::from_config(cfg);
        let guard = crate::delivery::ssrf::Guard::new(cfg.allow_cidrs.clone());
        let client = HttpClient::guarded(&Default::default(), guard)
            .map_err(|e| format!("sender: TLS client: {e}"))?;
        let metrics = SenderMetrics::new(registry)?;
        let mailer = match &cfg.smtp {
            Some(smtp) => Some(Arc::new(email::Mailer::new(
                smtp,
                settings.attempt_timeout,
            )?)),
            None => None,
        };
        let sender = Arc::new(Sender {
            store,
            engine,
            sealer,
            keys,
            settings,
            client,
            clock,
            dests: Mutex::new(HashMap::new()),
            persist: tokio::sync::Mutex::new(()),
            metrics,
            smtp: cfg.smtp.clone(),
            mailer,
        });
        let rows = sender
            .store
            .destinations()
            .await
            .map_err(|e| format!("cannot read the sender's destinations: {e}"))?;
        let mut unreadable = 0usize;
        for row in rows {
            let Some(kind) = Kind::parse(&row.kind) else {
                tracing::warn!(id = %row.id, kind = %row.kind, "destination of an unknown type ignored");
                continue;
            };
            let Ok(spec) = serde_json::from_str::<Spec>(&row.spec) else {
                tracing::warn!(id = %row.id, "destination with damaged settings ignored");
                continue;
            };
            if sender.sealer.open(&row.id, &row.sealed).is_err() {
                unreadable += 1;
            }
            sender.install(row, kind, spec);
        }
        if unreadable > 0 {
            tracing::error!(
                count = unreadable,
                "destinations whose credentials do not open with this sender.master_key; \
                 their deliveries fail until the key is restored or their credentials are replaced (PUT)"
            );
        }
        sender.publish_health();
        Ok(sender)
    }

    pub(crate) fn dests(&self) -> MutexGuard<'_, HashMap<String, Dest>> {
        self.dests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn now(&self) -> i64 {
        now_ms(&self.clock)
    }

    /// Registers a destination in memory and gives it its engine queue
    /// (paused unless open).
    pub(crate) fn install(self: &Arc<Self>, row: Destination, kind: Kind, spec: Spec) {
        let q = Arc::new(QueueTarget {
            name: queue_of(&row.id),
            deliver: Deliver::Prepared(Arc::new(prepare::Prep {
                sender: Arc::downgrade(self),
            })),
            timeout: self.settings.attempt_timeout,
            concurrency: Arc::new(tokio::sync::Semaphore::new(self.settings.concurrency)),
            policy: self.settings.policy.clone(),
            client: self.client.clone(),
            fifo: false,
            not_before: Default::default(),
        });
        let ctl = self.engine.add_queue(q);
        let d = Dest {
            kind,
            spec,
            ctl,
            persisted_at: row.updated_at,
            row,
        };
        d.ctl.set_paused(!d.is_open());
        self.dests().insert(d.row.id.clone(), d);
    }

    /// Removes a destination from memory and from the engine.
    pub(crate) fn uninstall(&self, id: &str) {
        self.dests().remove(id);
        self.engine.remove_queue(&queue_of(id));
    }

    /// Stores the current row of destination `id` (if it still exists).
    pub(crate) async fn persist(&self, id: &str) -> Result<(), crate::store::StoreError> {
        let _order = self.persist.lock().await;
        let row = self.dests().get(id).map(|d| d.row.clone());
        match row {
            Some(row) => self.store.put_destination(row).await,
            None => Ok(()),
        }
    }

    pub(crate) fn credentials(&self, d: &Destination) -> Result<Credentials, String> {
        let plain = self
            .sealer
            .open(&d.id, &d.sealed)
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&plain).map_err(|_| "sealed credentials are damaged".to_string())
    }

    pub(crate) fn seal(&self, id: &str, c: &Credentials) -> Result<Vec<u8>, String> {
        let plain = serde_json::to_vec(c).map_err(|e| e.to_string())?;
        self.sealer.seal(id, &plain).map_err(|e| e.to_string())
    }

    /// Sets the destinations-by-health gauges: every (type, health) pair,
    /// 0 where there is none. Counted and set under the destinations' lock,
    /// and without a `reset()` first: a scrape never sees the family empty
    /// or half set, and two publishers (the API and a delivery ending at
    /// the same moment) cannot interleave into a double count.
    pub(crate) fn publish_health(&self) {
        let dests = self.dests();
        let mut counts: HashMap<(Kind, &str), i64> = HashMap::new();
        for d in dests.values() {
            let health = dest::health(d.row.active, d.row.disabled_at, d.row.last_ok);
            *counts.entry((d.kind, health)).or_default() += 1;
        }
        for kind in Kind::CHANNELS.into_iter().chain([Kind::Endpoint]) {
            for health in dest::HEALTHS {
                let n = counts.get(&(kind, health)).copied().unwrap_or(0);
                self.metrics
                    .health
                    .with_label_values(&[kind.as_str(), health])
                    .set(n);
            }
        }
    }
}
