//! hookgate: a webhook sidecar.
//!
//! Layout (one-directional: lower modules never import higher ones):
//! - [`signature`] pure sign + verify for every scheme (no I/O);
//! - [`config`] figment loading and validation; [`error`] the one place
//!   errors become HTTP answers; [`shutdown`] cancellation and drain;
//! - [`server`] listener plumbing (accept, hyper, limits, timeouts);
//! - [`inbound`] the receiver's hot path (route, limit, verify, ack/proxy);
//! - [`outbound`] the sender: the `/v1/` API (API keys, channels, endpoints,
//!   intake), credential sealing, per-platform formatting, and the
//!   preparation of each delivery at attempt time;
//! - [`delivery`] the one engine that reaches HTTP (and SMTP) targets, for
//!   both directions, with the SSRF guard of the sender's client;
//! - [`admin`] the admin listener (`/healthz`, `/readyz`, `/metrics`, admin API);
//! - [`store`] durable state (SQLite); [`metrics`] the Prometheus registry.
//!
//! [`run`] takes already-bound listeners, so tests bind `127.0.0.1:0` and
//! read the ports before starting.

#![forbid(unsafe_code)]

pub mod admin;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod error;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod server;
pub mod shutdown;
pub mod signature;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::shutdown::Shutdown;

pub use clock::{system_clock, Clock};

/// A new time-ordered delivery id (UUIDv7: unix milliseconds, then 74
/// random bits from the thread-local CSPRNG). `Uuid::now_v7` would ask the
/// kernel for its random bits on every call (a `getrandom` system call per
/// passthrough request).
pub fn new_uuid() -> uuid::Uuid {
    new_uuid_at(std::time::SystemTime::now())
}

/// [`new_uuid`] for a time already read (passthrough reads the clock once
/// a request, for the signature's checks and the id).
pub fn new_uuid_at(now: std::time::SystemTime) -> uuid::Uuid {
    let ms = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let random: [u8; 10] = rand::random();
    uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid()
}

/// `id` as a header value, its hyphenated lower-case text (as `Display`
/// writes it), written without `fmt` and allocated once (passthrough adds
/// one to every request it forwards).
pub fn id_header(id: &uuid::Uuid) -> http::HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut buf);
    http::HeaderValue::from_str(text).expect("a uuid is a valid header value")
}

#[cfg(test)]
mod tests {
    #[test]
    fn new_ids_are_v7_unique_and_ordered_by_millisecond() {
        let parsed: Vec<uuid::Uuid> = (0..1000).map(|_| super::new_uuid()).collect();
        let unique: std::collections::HashSet<&uuid::Uuid> = parsed.iter().collect();
        assert_eq!(unique.len(), parsed.len());
        assert!(parsed.iter().all(|u| u.get_version_num() == 7));
        let ms = |u: &uuid::Uuid| u.get_timestamp().unwrap().to_unix();
        assert!(parsed.windows(2).all(|w| ms(&w[0]) <= ms(&w[1])));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(ms(&parsed[999]).0.abs_diff(now) <= 2);
    }

    #[test]
    fn id_headers_are_the_ids_hyphenated_lower_case_text() {
        let id = super::new_uuid();
        assert_eq!(id.get_version_num(), 7);
        let header = super::id_header(&id);
        // The text `Display` gives, and it parses back.
        assert_eq!(header.to_str().unwrap(), id.to_string());
        assert_eq!(header.to_str().unwrap().parse::<uuid::Uuid>().unwrap(), id);
        assert_ne!(super::new_uuid(), id);
    }
}

/// The listeners `run` serves, bound by the caller.
pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses of the configuration.
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        Ok(Listeners {
            public: TcpListener::bind(config.server.listen).await?,
            admin: TcpListener::bind(config.admin.listen).await?,
        })
    }

    pub fn addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.public.local_addr()?, self.admin.local_addr()?))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("store: {0}")]
    Store(String),
}

/// Options the CLI does not expose: injection points for tests.
#[derive(Clone)]
pub struct RunOptions {
    pub clock: Clock,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            clock: system_clock(),
        }
    }
}

/// Opens the configured store, its metrics registered in `registry`.
pub fn open_store(
    config: &Config,
    registry: Option<&prometheus::Registry>,
) -> Result<store::Store, RunError> {
    match config.store.kind {
        config::StoreKind::Sqlite => {
            let mut opts = store::StoreOptions::sqlite(&config.store.path);
            opts.registry = registry.cloned();
            opts.dedup_max_keys_by_scope = config
                .routes
                .iter()
                .map(|r| (r.path.clone(), r.dedup_max_keys()))
                .collect();
            store::Store::open(opts)
                .map_err(|e| RunError::Store(format!("{}: {e}", config.store.path.display())))
        }
        config::StoreKind::Postgres => Err(RunError::Config(
            "store.kind: postgres is not available yet".into(),
        )),
    }
}

/// Runs hookgate until `shutdown` fires, then drains and returns.
///
/// Order of the drain: readiness turns false and the listeners stop
/// accepting; in-flight requests finish (each has been acknowledged only
/// after its commit); workers stop claiming and finish their attempts; the
/// store's writer applies what it was given and closes.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: Shutdown,
    opts: RunOptions,
) -> Result<(), RunError> {
    let client = delivery::client::HttpClient::new();
    let metrics = Arc::new(metrics::Metrics::new());
    let needs_store =
        config.sender.enabled || config.routes.iter().any(|r| r.mode == config::Mode::Queue);
    let store = if needs_store {
        Some(open_store(&config, Some(metrics.registry()))?)
    } else {
        None
    };
    let wake = Arc::new(tokio::sync::Notify::new());
    let inbound = Arc::new(
        inbound::Inbound::new(
            &config,
            client.clone(),
            opts.clock.clone(),
            store.clone(),
            wake.clone(),
            metrics.clone(),
        )
        .map_err(RunError::Config)?,
    );
    let admin_token = config
        .admin_token()
        .map_err(|e| RunError::Config(format!("admin.token: {e}")))?;
    if admin_token.is_none() && !config.admin.listen.ip().is_loopback() {
        // Only reachable with admin.allow_unauthenticated = true (validate).
        tracing::warn!(
            admin = %config.admin.listen,
            "the admin API listens beyond loopback WITHOUT a token (admin.allow_unauthenticated): \
             anyone reaching it can replay or delete acknowledged jobs"
        );
    }
    let (public_addr, admin_addr) = listeners
        .addrs()
        .map_err(|e| RunError::Config(e.to_string()))?;
    for r in inbound.routes() {
        tracing::info!(
            path = %r.path,
            scheme = r.verifier.scheme().name(),
            mode = ?r.mode,
            upstream = %r.target.base,
            "route"
        );
    }
    tracing::info!(
        public = %public_addr,
        tls = config.server.tls.is_some(),
        admin = %admin_addr,
        store = %store.as_ref().map_or_else(|| "none (passthrough only)".to_string(), |_| format!("sqlite {}", config.store.path.display())),
        "hookgate listening"
    );

    let grace = config.server.shutdown_grace.0;
    let public_tls = match &config.server.tls {
        None => None,
        Some(t) => {
            let cert = server::tls::ReloadingCert::load(&t.cert, &t.key)
                .map_err(|e| RunError::Config(format!("server.tls: {e}")))?;
            let stop = shutdown.clone();
            tokio::spawn(
                cert.clone()
                    .watch(t.reload_interval.0, async move { stop.wait().await }),
            );
            Some((
                tokio_rustls::TlsAcceptor::from(cert.server_config()),
                t.handshake_timeout.0,
            ))
        }
    };
    let serve_opts = server::ServeOptions {
        max_connections: config.server.max_connections,
        header_timeout: config.server.header_timeout.0,
        write_timeout: config.server.write_timeout.0,
        grace,
        tls: None,
        handshake_timeout: std::time::Duration::from_secs(10),
    };
    let public_opts = match public_tls {
        None => serve_opts.clone(),
        Some((acceptor, handshake_timeout)) => server::ServeOptions {
            tls: Some(acceptor),
            handshake_timeout,
            ..serve_opts.clone()
        },
    };
    let public = {
        let inbound = inbound.clone();
        tokio::spawn(server::serve(
            listeners.public,
            public_opts,
            shutdown.clone(),
            move |req, peer, deadlines| inbound.clone().handle(req, peer, deadlines),
        ))
    };
    let queue_names: Vec<String> = inbound
        .routes()
        .iter()
        .filter(|r| r.mode == config::Mode::Queue)
        .map(|r| r.path.clone())
        .collect();
    let controls = Arc::new(delivery::circuit::Controls::new(
        inbound
            .routes()
            .iter()
            .filter(|r| r.mode == config::Mode::Queue)
            .map(|r| (r.path.clone(), r.circuit.clone())),
    ));
    if let Some(store) = &store {
        report_orphans(store, &queue_names, &opts.clock, &metrics).await;
        restore_paused(store, &controls, &metrics).await?;
    }
    let engine = store.as_ref().map(|store| {
        let queues = inbound
            .routes()
            .iter()
            .filter(|r| r.mode == config::Mode::Queue)
            .map(|r| {
                Arc::new(delivery::engine::QueueTarget {
                    name: r.path.clone(),
                    deliver: delivery::engine::Deliver::Forward {
                        target: r.target.clone(),
                        verified_header: r.verified_header.clone(),
                    },
                    timeout: r.upstream_timeout,
                    concurrency: r.concurrency.clone(),
                    policy: r.retry.clone(),
                    client: r.client.clone(),
                    fifo: r.fifo,
                    not_before: Default::default(),
                })
            })
            .collect();
        Arc::new(delivery::engine::Engine::new(
            store.clone(),
            queues,
            &controls,
            opts.clock.clone(),
            wake.clone(),
            config.delivery.poll_interval.0,
            metrics.clone(),
        ))
    });
    let sender = match (&store, &engine) {
        (Some(store), Some(engine)) if config.sender.enabled => Some(
            outbound::Sender::open(
                &config,
                store.clone(),
                engine.clone(),
                opts.clock.clone(),
                metrics.registry(),
            )
            .await
            .map_err(RunError::Config)?,
        ),
        _ => None,
    };
    let admin_state = Arc::new(admin::Admin::new(
        shutdown.clone(),
        admin_token,
        store.clone(),
        queue_names,
        controls.clone(),
        wake.clone(),
        opts.clock.clone(),
        metrics.clone(),
        sender,
    ));
    // The admin listener outlives the drain: probes see 503 and metrics stay
    // scrapeable until the public side and the workers have finished.
    let admin_shutdown = Shutdown::new();
    let admin = tokio::spawn(server::serve(
        listeners.admin,
        serve_opts.clone(),
        admin_shutdown.clone(),
        move |req, _peer, _deadlines| admin_state.clone().handle(req),
    ));

    let mut background = Vec::new();
    if let (Some(store), Some(engine)) = (&store, engine) {
        background.push(spawn_engine(
            engine,
            shutdown.clone(),
            grace,
            config.delivery.nice,
        ));
        background.push(tokio::spawn(purge_loop(
            store.clone(),
            opts.clock.clone(),
            config.store.clone(),
            shutdown.clone(),
        )));
    }

    let _ = public.await;
    for t in background {
        let _ = t.await;
    }
    admin_shutdown.trigger();
    let _ = admin.await;
    if let Some(store) = store {
        store.shutdown().await;
    }
    tracing::info!("hookgate stopped");
    Ok(())
}

/// Runs the delivery engine on a thread of its own ("hookgate-engine",
/// with a single-threaded runtime) at `nice`: the receiving side and the
/// store writer keep the default priority, so when the CPU is short the
/// kernel answers senders first and deliveries take what is left. The
/// returned task ends when the engine has stopped.
fn spawn_engine(
    engine: Arc<delivery::engine::Engine>,
    shutdown: Shutdown,
    grace: std::time::Duration,
    nice: i32,
) -> tokio::task::JoinHandle<()> {
    if nice == 0 {
        return tokio::spawn(engine.run(shutdown, grace));
    }
    // Answers whether the engine ran there; if its runtime could not be
    // built (or the thread started), the engine runs on this runtime
    // rather than not at all.
    let (ran_tx, ran_rx) = tokio::sync::oneshot::channel::<bool>();
    let (here, here_shutdown) = (engine.clone(), shutdown.clone());
    let spawned = std::thread::Builder::new()
        .name("hookgate-engine".into())
        .spawn(move || {
            // On Linux a thread id names that thread alone.
            #[cfg(target_os = "linux")]
            if let Err(e) =
                rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice)
            {
                tracing::warn!(error = %e, nice, "cannot lower the delivery thread's priority");
            }
            let ran = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    rt.block_on(engine.run(shutdown, grace));
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the delivery runtime: delivering from the receiving runtime");
                    false
                }
            };
            let _ = ran_tx.send(ran);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the delivery thread: delivering from the receiving runtime");
        return tokio::spawn(here.run(here_shutdown, grace));
    }
    tokio::spawn(async move {
        if let Ok(false) = ran_rx.await {
            here.run(here_shutdown, grace).await;
        }
    })
}

/// Pauses the queues that were paused when the store was last used.
async fn restore_paused(
    store: &store::Store,
    controls: &delivery::circuit::Controls,
    metrics: &metrics::Metrics,
) -> Result<(), RunError> {
    let paused = store
        .paused_queues()
        .await
        .map_err(|e| RunError::Store(format!("cannot read the paused queues: {e}")))?;
    for q in paused {
        match controls.get(&q) {
            Some(ctl) => {
                ctl.set_paused(true);
                metrics.queue_paused.with_label_values(&[&q]).set(1);
                tracing::warn!(route = %q, "queue paused (since before this start): nothing is delivered until POST /admin/queues/resume");
            }
            None => tracing::debug!(queue = %q, "a paused queue without a route"),
        }
    }
    Ok(())
}

/// Warns about (and counts) jobs of queues that no configured route serves:
/// a route was removed or renamed. They wait until moved or deleted through
/// the admin API (`POST /admin/queues/move`, `DELETE /admin/queues`).
async fn report_orphans(
    store: &store::Store,
    queues: &[String],
    clock: &Clock,
    metrics: &metrics::Metrics,
) {
    let stats = match store.stats(clock::now_ms(clock)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read queue stats at start");
            return;
        }
    };
    for s in stats {
        let waiting = s.pending + s.inflight + s.dead;
        if queues.contains(&s.queue) || s.queue.starts_with(outbound::QUEUE_PREFIX) || waiting == 0
        {
            continue;
        }
        tracing::warn!(
            queue = %s.queue,
            pending = s.pending,
            dead = s.dead,
            "jobs of a queue no configured route serves (route removed or renamed?): move them \
             with POST /admin/queues/move?from=..&to=.. or delete them with DELETE /admin/queues?route=.."
        );
        metrics
            .orphaned_jobs
            .with_label_values(&[&s.queue])
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }
}

/// Removes expired dedup records, old delivery history and old dead
/// letters, every `store.purge_interval`, in small steps.
async fn purge_loop(
    store: store::Store,
    clock: Clock,
    cfg: config::StoreConfig,
    shutdown: Shutdown,
) {
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    loop {
        let now = clock::now_ms(&clock);
        let policy = store::PurgePolicy {
            now,
            done_before: now.saturating_sub(ms(cfg.history_retention.0)),
            dead_before: now.saturating_sub(ms(cfg.dead_retention.0)),
        };
        loop {
            if shutdown.is_triggered() {
                return;
            }
            match store.purge(policy).await {
                Ok(p) if p.more => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "purge failed");
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.purge_interval.0) => {}
            _ = shutdown.wait() => return,
        }
    }
}
