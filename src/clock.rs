//! Time: the one clock of the process, injectable so tests control it.
//!
//! Everything that needs "now" takes a [`Clock`]; durable state stores Unix
//! milliseconds ([`now_ms`]).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The one clock of the process; tests inject their own.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(SystemTime::now)
}

/// Milliseconds since the Unix epoch by `clock` (0 before the epoch).
pub fn now_ms(clock: &Clock) -> i64 {
    clock()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
