//! hookgate: a webhook sidecar.
//!
//! Layout (one-directional: lower modules never import higher ones):
//! - [`signature`] pure sign + verify for every scheme (no I/O);
//! - [`config`] figment loading and validation; [`error`] the one place
//!   errors become HTTP answers; [`shutdown`] cancellation and drain;
//! - [`server`] listener plumbing (accept, hyper, limits, timeouts);
//! - [`inbound`] the receiver's hot path (route, limit, verify, ack/proxy);
//! - [`delivery`] the one engine that reaches HTTP targets;
//! - [`admin`] the admin listener (`/healthz`, `/readyz`, admin API).
//!
//! [`run`] takes already-bound listeners, so tests bind `127.0.0.1:0` and
//! read the ports before starting.

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod delivery;
pub mod error;
pub mod inbound;
pub mod server;
pub mod shutdown;
pub mod signature;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::shutdown::Shutdown;

/// The one clock of the process; tests inject their own.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(SystemTime::now)
}

/// A new time-ordered delivery id (UUIDv7).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
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

/// Runs hookgate until `shutdown` fires, then drains and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: Shutdown,
    opts: RunOptions,
) -> Result<(), RunError> {
    let client = delivery::client::HttpClient::new();
    let inbound = Arc::new(
        inbound::Inbound::new(&config, client, opts.clock.clone()).map_err(RunError::Config)?,
    );
    let admin_token = config.admin_token().map_err(|e| RunError::Config(format!("admin.token: {e}")))?;
    let (public_addr, admin_addr) = listeners.addrs().map_err(|e| RunError::Config(e.to_string()))?;
    for r in inbound.routes() {
        tracing::info!(
            path = %r.path,
            scheme = r.verifier.scheme().name(),
            mode = ?r.mode,
            upstream = %r.target.base,
            "route"
        );
    }
    tracing::info!(public = %public_addr, admin = %admin_addr, store = ?config.store.kind, "hookgate listening");

    let serve_opts = server::ServeOptions {
        max_connections: config.server.max_connections,
        header_timeout: config.server.header_timeout.0,
        grace: config.server.shutdown_grace.0,
    };
    let public = {
        let inbound = inbound.clone();
        tokio::spawn(server::serve(
            listeners.public,
            serve_opts.clone(),
            shutdown.clone(),
            move |req, peer| inbound.clone().handle(req, peer),
        ))
    };
    let admin_state = Arc::new(admin::Admin::new(shutdown.clone(), admin_token));
    let admin = tokio::spawn(server::serve(
        listeners.admin,
        serve_opts,
        shutdown.clone(),
        move |req, _peer| admin_state.clone().handle(req),
    ));
    let _ = public.await;
    let _ = admin.await;
    tracing::info!("hookgate stopped");
    Ok(())
}
