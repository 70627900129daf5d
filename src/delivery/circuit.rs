//! Per-queue delivery control: the circuit breaker of each upstream and the
//! paused flag, shared by the engine (which obeys them) and the admin API
//! (which shows them and pauses / resumes).
//!
//! Owns the breaker's state machine. Invariants: while a circuit is open
//! the engine claims nothing for its queue except one probe job at a time,
//! at growing intervals (doubling from `probe_interval` up to
//! `probe_max_interval`, with jitter); the first probe answered by the
//! upstream closes it; only transient failures (connection errors,
//! timeouts, 5xx, 429, ...) count toward opening it, and an answer that can
//! never succeed (a permanent 4xx) shows the upstream is up. The state is
//! in memory: a restart starts closed and re-learns an outage within
//! `failures` attempts. Pausing is stored, so it survives a restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// When a circuit opens and how it probes (a route's `circuit` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub enabled: bool,
    /// Consecutive transient failures that open the circuit.
    pub failures: u32,
    /// Wait before the first probe; doubled after each failed probe...
    pub probe_interval: Duration,
    /// ...up to this.
    pub probe_max_interval: Duration,
}

/// What the claim loop may do for a queue now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Claim as usual.
    All,
    /// Claim one job, the probe.
    Probe,
    /// Claim nothing until `wait` has passed (or something changes).
    Wait(Duration),
}

/// The state of a circuit, as shown and as labelled in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub const ALL: [State; 3] = [State::Closed, State::Open, State::HalfOpen];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// How an attempt ended, as the breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The upstream accepted it.
    Success,
    /// The upstream answered, but so that retrying cannot help (it is up).
    Answered,
    /// Connection error, timeout, 5xx, 429...: counts toward opening.
    Failure,
    /// No request was sent (e.g. a damaged job): says nothing of the upstream.
    NotSent,
}

/// A circuit as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub state: State,
    pub consecutive_failures: u32,
    /// When it opened (ms since the epoch), while open or half-open.
    pub opened_at: Option<i64>,
    /// When the next probe may go (ms since the epoch), while open.
    pub next_probe_at: Option<i64>,
}

#[derive(Debug)]
struct Circuit {
    cfg: BreakerPolicy,
    state: State,
    consecutive: u32,
    opened_at: i64,
    next_probe_at: i64,
    interval: Duration,
}

impl Circuit {
    fn new(cfg: BreakerPolicy) -> Self {
        let interval = cfg.probe_interval;
        Circuit {
            cfg,
            state: State::Closed,
            consecutive: 0,
            opened_at: 0,
            next_probe_at: 0,
            interval,
        }
    }

    fn admit(&mut self, now: i64) -> Admit {
        match self.state {
            State::Closed => Admit::All,
            State::HalfOpen => Admit::Wait(self.cfg.probe_interval),
            State::Open if now >= self.next_probe_at => {
                self.state = State::HalfOpen;
                Admit::Probe
            }
            State::Open => Admit::Wait(Duration::from_millis(
                (self.next_probe_at - now).max(0) as u64
            )),
        }
    }

    /// Schedules the next probe after the current interval (with up to 20 %
    /// jitter, so replicas and queues do not probe in step), then doubles
    /// the interval up to its cap.
    fn schedule_probe(&mut self, now: i64, jitter: f64) {
        let base = self.interval.as_millis() as f64;
        self.next_probe_at = now + (base * (1.0 + 0.2 * jitter.clamp(0.0, 1.0))) as i64;
        self.interval = (self.interval * 2).min(self.cfg.probe_max_interval);
    }

    /// Records how an attempt ended; answers the new state if it changed.
    fn record(&mut self, signal: Signal, probe: bool, now: i64, jitter: f64) -> Option<State> {
        if !self.cfg.enabled {
            return None;
        }
        let before = self.state;
        match signal {
            Signal::Success | Signal::Answered => {
                self.consecutive = 0;
                if self.state != State::Closed && (probe || signal == Signal::Success) {
                    self.state = State::Closed;
                    self.interval = self.cfg.probe_interval;
                }
            }
            Signal::Failure => {
                self.consecutive = self.consecutive.saturating_add(1);
                match self.state {
                    State::Closed if self.consecutive >= self.cfg.failures => {
                        self.state = State::Open;
                        self.opened_at = now;
                        self.interval = self.cfg.probe_interval;
                        self.schedule_probe(now, jitter);
                    }
                    State::HalfOpen if probe => {
                        self.state = State::Open;
                        self.schedule_probe(now, jitter);
                    }
                    _ => {}
                }
            }
            Signal::NotSent => {
                if probe && self.state == State::HalfOpen {
                    // Probe again at once with another job.
                    self.state = State::Open;
                    self.next_probe_at = now;
                }
            }
        }
        (self.state != before).then_some(self.state)
    }

    fn snapshot(&self) -> Snapshot {
        let open = self.state != State::Closed;
        Snapshot {
            state: self.state,
            consecutive_failures: self.consecutive,
            opened_at: open.then_some(self.opened_at),
            next_probe_at: (self.state == State::Open).then_some(self.next_probe_at),
        }
    }
}

/// The control of one queue.
#[derive(Debug)]
pub struct QueueControl {
    circuit: Mutex<Circuit>,
    paused: AtomicBool,
}

impl QueueControl {
    pub fn new(cfg: BreakerPolicy) -> Self {
        QueueControl {
            circuit: Mutex::new(Circuit::new(cfg)),
            paused: AtomicBool::new(false),
        }
    }

    fn circuit(&self) -> std::sync::MutexGuard<'_, Circuit> {
        self.circuit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn admit(&self, now: i64) -> Admit {
        self.circuit().admit(now)
    }

    /// Whether a claimed job that is not the probe may be attempted now.
    pub fn closed(&self) -> bool {
        self.circuit().state == State::Closed
    }

    pub fn record(&self, signal: Signal, probe: bool, now: i64, jitter: f64) -> Option<State> {
        self.circuit().record(signal, probe, now, jitter)
    }

    pub fn snapshot(&self) -> Snapshot {
        self.circuit().snapshot()
    }

    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
    }
}

/// The controls of every configured queue, by queue name.
#[derive(Debug, Default)]
pub struct Controls {
    by_queue: HashMap<String, Arc<QueueControl>>,
}

impl Controls {
    pub fn new(queues: impl IntoIterator<Item = (String, BreakerPolicy)>) -> Self {
        Controls {
            by_queue: queues
                .into_iter()
                .map(|(q, cfg)| (q, Arc::new(QueueControl::new(cfg))))
                .collect(),
        }
    }

    pub fn get(&self, queue: &str) -> Option<&Arc<QueueControl>> {
        self.by_queue.get(queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerPolicy {
        BreakerPolicy {
            enabled: true,
            failures: 3,
            probe_interval: Duration::from_secs(1),
            probe_max_interval: Duration::from_secs(4),
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_at_growing_intervals() {
        let mut c = Circuit::new(cfg());
        assert_eq!(c.record(Signal::Failure, false, 0, 0.0), None);
        assert_eq!(c.record(Signal::Failure, false, 0, 0.0), None);
        // A success in between starts the count over.
        assert_eq!(c.record(Signal::Success, false, 0, 0.0), None);
        for _ in 0..2 {
            c.record(Signal::Failure, false, 0, 0.0);
        }
        assert_eq!(c.record(Signal::Failure, false, 0, 0.0), Some(State::Open));
        assert_eq!(c.admit(500), Admit::Wait(Duration::from_millis(500)));
        assert_eq!(c.admit(1000), Admit::Probe);
        assert_eq!(c.snapshot().state, State::HalfOpen);
        // Only one probe at a time.
        assert!(matches!(c.admit(1000), Admit::Wait(_)));
        // A failing probe reopens with a doubled interval, capped.
        let mut at = 1000;
        for expected in [2000, 4000, 4000] {
            assert_eq!(c.record(Signal::Failure, true, at, 0.0), Some(State::Open));
            assert_eq!(c.snapshot().next_probe_at, Some(at + expected));
            at += expected;
            assert_eq!(c.admit(at), Admit::Probe);
        }
        // Failures of attempts that were not the probe change nothing.
        assert_eq!(c.record(Signal::Failure, false, at, 0.0), None);
        assert_eq!(
            c.record(Signal::Success, true, at, 0.0),
            Some(State::Closed)
        );
        assert_eq!(c.admit(at), Admit::All);
        // The interval starts over after closing.
        for _ in 0..3 {
            c.record(Signal::Failure, false, at, 0.0);
        }
        assert_eq!(c.snapshot().next_probe_at, Some(at + 1000));
    }

    #[test]
    fn a_permanent_answer_closes_a_probe_but_never_opens() {
        let mut c = Circuit::new(cfg());
        for _ in 0..10 {
            assert_eq!(c.record(Signal::Answered, false, 0, 0.0), None);
        }
        for _ in 0..3 {
            c.record(Signal::Failure, false, 0, 0.0);
        }
        assert_eq!(c.admit(1000), Admit::Probe);
        assert_eq!(
            c.record(Signal::Answered, true, 1000, 0.0),
            Some(State::Closed)
        );
    }

    #[test]
    fn a_probe_that_sent_nothing_is_replaced_at_once() {
        let mut c = Circuit::new(cfg());
        for _ in 0..3 {
            c.record(Signal::Failure, false, 0, 0.0);
        }
        assert_eq!(c.admit(1000), Admit::Probe);
        assert_eq!(
            c.record(Signal::NotSent, true, 1000, 0.0),
            Some(State::Open)
        );
        assert_eq!(c.admit(1000), Admit::Probe);
    }

    #[test]
    fn jitter_spreads_probes_by_up_to_a_fifth() {
        let mut c = Circuit::new(cfg());
        for _ in 0..3 {
            c.record(Signal::Failure, false, 0, 1.0);
        }
        assert_eq!(c.snapshot().next_probe_at, Some(1200));
    }

    #[test]
    fn disabled_never_opens() {
        let mut c = Circuit::new(BreakerPolicy {
            enabled: false,
            ..cfg()
        });
        for _ in 0..100 {
            assert_eq!(c.record(Signal::Failure, false, 0, 0.0), None);
        }
        assert_eq!(c.admit(0), Admit::All);
    }
}
