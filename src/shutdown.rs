//! Cancellation and graceful drain.
//!
//! A [`Shutdown`] is a cheap, cloneable signal: `trigger()` once, and every
//! holder's `wait()` completes. Listeners stop accepting, readiness turns
//! false, in-flight requests finish, then `run` returns.

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(false);
        Shutdown {
            tx: Arc::new(tx),
            rx,
        }
    }

    /// Starts the shutdown. Idempotent.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes once `trigger()` has been called (at once if it already was).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means every sender is gone, which cannot happen while
        // `self` holds one; treat it as a shutdown all the same.
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Triggers on SIGTERM or SIGINT (Ctrl-C).
    pub fn trigger_on_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                let mut term = match signal(SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        return;
                    }
                };
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received, draining"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, draining"),
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
            this.trigger();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_completes_after_trigger() {
        let s = Shutdown::new();
        let w = s.clone();
        let h = tokio::spawn(async move { w.wait().await });
        assert!(!s.is_triggered());
        s.trigger();
        h.await.unwrap();
        assert!(s.is_triggered());
        s.wait().await; // already triggered: immediate
    }
}
