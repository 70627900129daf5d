//! The workers: claim due jobs from the store, make one attempt each,
//! record it, and move the job to done, a later retry, or the dead letters.
//!
//! Invariants:
//! - a job is only attempted while this process holds its lease, and the
//!   lease outlives the attempt (timeout x 2 + 5 s), so two replicas never
//!   attempt the same job at once unless one of them died;
//! - at most `concurrency` attempts per queue (upstream) run at once;
//! - a queue holds at most `2 x concurrency` claimed jobs not yet attempted
//!   or being attempted: the ones in flight and a buffer of as many waiting
//!   for a permit (FIFO); jobs whose attempt ended and is being recorded do
//!   not count (the store's lease still covers them), so a worker that
//!   frees a permit starts the next job at once instead of waiting for a
//!   claim (one store commit) first, and claims come in batches. A buffered
//!   job waits for at most one round of attempts (<= timeout) and its own
//!   attempt takes <= timeout, so it still finishes inside its lease;
//! - every attempt is recorded before the next one can be claimed;
//! - nothing is claimed for a paused queue, and while a queue's circuit is
//!   open only its probe (one job at a time); a claimed job that is not the
//!   probe finds the circuit open when its turn comes is released
//!   unattempted, so it spends no attempt (see `circuit`);
//! - on shutdown no new job is claimed and running attempts get the grace
//!   period to finish; a job whose attempt did not finish keeps its lease
//!   and comes back when the lease expires (at-least-once).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::clock::{now_ms, Clock};
use crate::delivery::circuit::{Admit, Controls, QueueControl, Signal, State};
use crate::delivery::client::{HttpClient, SendError};
use crate::delivery::forward::{
    upstream_request, Target, X_HOOKGATE_ATTEMPT, X_HOOKGATE_DELIVERY_ID, X_HOOKGATE_VERIFIED,
};
use crate::delivery::job::{StoredRequest, KIND_FORWARD};
use crate::delivery::policy::{parse_retry_after, Outcome, RetryPolicy};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::{Attempt, ClaimedJob, Next, Store, RESPONSE_BODY_CAP};

/// Most jobs one claim takes (one write transaction), so a route with a
/// large `concurrency` does not hold the store writer for long.
const CLAIM_MAX: usize = 512;

/// A job whose latest attempts in a row were all interrupted (the process
/// stopped or crashed during each) is dead-lettered instead of attempted
/// again, so a request that crashes hookgate cannot crash it forever.
pub const INTERRUPTED_LIMIT: u32 = 3;

/// How the jobs of a queue become requests.
pub enum Deliver {
    /// Received webhooks, replayed on a route's upstream.
    Forward {
        target: Target,
        verified_header: HeaderValue,
    },
    /// The sender's deliveries: the sender prepares each attempt's request
    /// from the stored event (formatted and signed at attempt time), judges
    /// its answer, and hears how each attempt ended.
    Prepared(Arc<dyn Prepare>),
}

/// What the sender plugs into the engine for its queues. `delivery` knows
/// no channel or endpoint: this is its whole view of them.
pub trait Prepare: Send + Sync {
    /// The request of attempt `n` of `job`, or why it can never be made (a
    /// permanent failure: the destination was deleted, the payload is
    /// damaged...).
    fn prepare(&self, job: &ClaimedJob, n: u32) -> Result<Prepared, String>;
    /// Judges an answer; `default` is the retry policy's judgement.
    fn classify(&self, job: &ClaimedJob, status: http::StatusCode, default: Outcome) -> Outcome {
        let _ = (job, status);
        default
    }
    /// How an attempt ended, after it was decided and before it is recorded.
    fn finished(&self, job: &ClaimedJob, report: &AttemptReport);
}

/// What [`Prepare::prepare`] answers. Lives on the stack for one attempt;
/// boxing the request would cost every forwarded job an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Prepared {
    /// A request the engine sends with the queue's HTTP client.
    Http(Request<Full<Bytes>>),
    /// A delivery the preparer makes itself (email over SMTP); the engine
    /// bounds it by the queue's timeout and records what it answers.
    Custom(std::pin::Pin<Box<dyn std::future::Future<Output = CustomResult> + Send>>),
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prepared::Http(r) => f.debug_tuple("Http").field(r.uri()).finish(),
            Prepared::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// How a [`Prepared::Custom`] delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomResult {
    pub outcome: Outcome,
    /// The protocol's reply code (an SMTP reply, say), recorded as the
    /// attempt's status.
    pub code: Option<u16>,
    pub error: Option<String>,
}

/// How one attempt ended, for [`Prepare::finished`].
#[derive(Debug, Clone)]
pub struct AttemptReport {
    /// When the attempt ended (Unix ms).
    pub at: i64,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub next: Next,
    /// Dead because the retry schedule ran out (not a permanent answer).
    pub exhausted: bool,
}

/// One queue (one route's upstream, or one sender destination) and how to
/// deliver its jobs.
pub struct QueueTarget {
    pub name: String,
    pub deliver: Deliver,
    pub timeout: Duration,
    pub concurrency: Arc<Semaphore>,
    pub policy: RetryPolicy,
    pub client: HttpClient,
    /// In-order delivery: one job at a time, the head of the queue; a
    /// failing head is retried in place and blocks the ones behind it.
    pub fifo: bool,
    /// FIFO: the head's next attempt waits until then (ms), kept here so
    /// the head keeps its place in the store (0 after a restart: at once).
    pub not_before: std::sync::atomic::AtomicI64,
}

/// A queue as the claim loop sees it: its target and the permits for the
/// jobs it holds (in flight + buffered).
struct Lane {
    q: Arc<QueueTarget>,
    ctl: Arc<QueueControl>,
    held: Arc<Semaphore>,
    /// `2 x concurrency`: the size of `held`.
    held_max: usize,
    concurrency: usize,
}

impl Lane {
    fn new(q: Arc<QueueTarget>, ctl: Option<Arc<QueueControl>>) -> Lane {
        // Nothing is in flight yet: the free permits are the limit.
        let concurrency = q.concurrency.available_permits().max(1);
        // In order: one job claimed at a time.
        let held_max = if q.fifo {
            1
        } else {
            concurrency.saturating_mul(2)
        };
        let ctl = ctl.unwrap_or_else(|| {
            Arc::new(QueueControl::new(super::circuit::BreakerPolicy {
                enabled: false,
                failures: u32::MAX,
                probe_interval: Duration::from_secs(1),
                probe_max_interval: Duration::from_secs(1),
            }))
        });
        Lane {
            q,
            ctl,
            held: Arc::new(Semaphore::new(held_max)),
            held_max,
            concurrency,
        }
    }
}

pub struct Engine {
    store: Store,
    /// Fixed for routes; the sender adds and removes its destinations'.
    lanes: std::sync::RwLock<Vec<Arc<Lane>>>,
    /// Ids of the jobs this process holds (buffered or attempting): a job is
    /// never attempted twice at once here, even if its lease ran out and a
    /// claim handed it out again.
    held: std::sync::Mutex<std::collections::HashSet<String>>,
    clock: Clock,
    wake: Arc<Notify>,
    poll_interval: Duration,
    metrics: Arc<Metrics>,
}

impl Engine {
    pub fn new(
        store: Store,
        queues: Vec<Arc<QueueTarget>>,
        controls: &Controls,
        clock: Clock,
        wake: Arc<Notify>,
        poll_interval: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let lanes = queues
            .into_iter()
            .map(|q| {
                let ctl = controls.get(&q.name).cloned();
                Arc::new(Lane::new(q, ctl))
            })
            .collect();
        Engine {
            store,
            lanes: std::sync::RwLock::new(lanes),
            held: Default::default(),
            clock,
            wake,
            poll_interval,
            metrics,
        }
    }

    /// Adds a queue (a sender destination) while running; answers its
    /// control, through which the caller pauses and resumes it. A queue of
    /// the same name is replaced (its running attempts finish).
    pub fn add_queue(&self, q: Arc<QueueTarget>) -> Arc<QueueControl> {
        let lane = Arc::new(Lane::new(q, None));
        let ctl = lane.ctl.clone();
        let mut lanes = self
            .lanes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        lanes.retain(|l| l.q.name != lane.q.name);
        lanes.push(lane);
        drop(lanes);
        self.wake.notify_one();
        ctl
    }

    /// Stops claiming for a queue (its running attempts finish).
    pub fn remove_queue(&self, name: &str) {
        self.lanes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|l| l.q.name != name);
    }

    /// Wakes the claim loop (new jobs were enqueued, a queue resumed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Claims and attempts jobs until `shutdown`, then lets running
    /// attempts finish for at most `grace`.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown, grace: Duration) {
        let mut tasks = JoinSet::new();
        while !shutdown.is_triggered() {
            let mut claimed = 0usize;
            let mut idle = self.poll_interval;
            let lanes: Vec<Arc<Lane>> = self
                .lanes
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            // Every queue that wants jobs asks at once: the claims share the
            // store's next commit instead of waiting for one commit each.
            let mut claims = JoinSet::new();
            for lane in &lanes {
                let q = &lane.q;
                if lane.ctl.paused() {
                    continue;
                }
                let free = lane.held.available_permits();
                let in_flight =
                    lane.concurrency - q.concurrency.available_permits().min(lane.concurrency);
                let buffered = (lane.held_max - free).saturating_sub(in_flight);
                // Claim in batches: while the buffer still feeds the workers,
                // wait until half the capacity is free (one commit for many
                // jobs); when it runs dry, take whatever is free.
                if free == 0 || (buffered > 0 && free < lane.concurrency) {
                    continue;
                }
                // An idle queue costs no claim (a store write) per poll.
                if !self.store.may_have_pending(&q.name) {
                    continue;
                }
                let now = now_ms(&self.clock);
                let probe = match lane.ctl.admit(now) {
                    Admit::All => false,
                    Admit::Probe => true,
                    Admit::Wait(d) => {
                        idle = idle.min(d.max(Duration::from_millis(10)));
                        continue;
                    }
                };
                let limit = if probe { 1 } else { free.min(CLAIM_MAX) };
                let lease = (q.timeout * 2 + Duration::from_secs(5)).as_millis() as i64;
                if q.fifo {
                    let not_before = q.not_before.load(std::sync::atomic::Ordering::Acquire);
                    if now < not_before {
                        if probe {
                            lane.ctl.record(Signal::NotSent, true, now, 0.0);
                        }
                        idle = idle.min(Duration::from_millis((not_before - now) as u64));
                        continue;
                    }
                }
                let store = self.store.clone();
                let lane = lane.clone();
                claims.spawn(async move {
                    let q = &lane.q;
                    let claim = if q.fifo {
                        store
                            .claim_head(&q.name, now, lease)
                            .await
                            .map(|j| j.into_iter().collect::<Vec<_>>())
                    } else {
                        store.claim(&q.name, now, limit, lease).await
                    };
                    (lane, probe, now, claim)
                });
            }
            while let Some(done) = claims.join_next().await {
                let Ok((lane, probe, now, claim)) = done else {
                    tracing::error!(
                        "a claim task failed; its jobs return when their lease expires"
                    );
                    continue;
                };
                let q = &lane.q;
                match claim {
                    Ok(jobs) => {
                        if probe && jobs.is_empty() {
                            // Nothing to probe with: still open, and the
                            // next job will be the probe.
                            lane.ctl.record(Signal::NotSent, true, now, 0.0);
                            idle = idle.min(Duration::from_millis(100));
                        } else if probe {
                            self.circuit_moved(&q.name, &lane.ctl, State::HalfOpen, None, None);
                        }
                        for job in jobs {
                            claimed += 1;
                            if !self.hold(&job.id) {
                                // Its earlier claim here outlived its lease
                                // (the store stalled): that attempt goes on,
                                // and this claim comes back when it expires.
                                tracing::warn!(queue = %q.name, id = %job.id, "job claimed again while still held here; skipped");
                                if probe {
                                    // Not a probe after all: rather than
                                    // the circuit waiting half-open for an
                                    // answer that will never come.
                                    self.probe_not_sent(&q.name, &lane.ctl);
                                }
                                continue;
                            }
                            // Only this loop takes `held` permits, and it
                            // claimed no more than were free.
                            let Ok(held) = lane.held.clone().try_acquire_owned() else {
                                tracing::error!(queue = %q.name, "held permits out of step; job returns when its lease expires");
                                self.unhold(&job.id);
                                if probe {
                                    self.probe_not_sent(&q.name, &lane.ctl);
                                }
                                break;
                            };
                            tasks.spawn(self.clone().run_job(
                                q.clone(),
                                lane.ctl.clone(),
                                probe,
                                job,
                                held,
                                shutdown.clone(),
                            ));
                        }
                    }
                    Err(e) => {
                        if probe {
                            lane.ctl.record(Signal::NotSent, true, now, 0.0);
                        }
                        tracing::warn!(queue = %q.name, error = %e, "claim failed");
                    }
                }
            }
            while tasks.try_join_next().is_some() {}
            if claimed == 0 {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(idle) => {}
                    _ = shutdown.wait() => {}
                }
            }
        }
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                running = tasks.len(),
                "grace period elapsed with attempts running; their jobs return when the lease expires"
            );
            tasks.abort_all();
        }
    }

    /// Waits (in FIFO order) for an attempt permit, then attempts the job.
    /// A job still waiting at shutdown is released, not attempted: it is
    /// claimable again at once, by this process after a restart or by
    /// another replica.
    #[allow(clippy::too_many_arguments)]
    async fn run_job(
        self: Arc<Self>,
        q: Arc<QueueTarget>,
        ctl: Arc<QueueControl>,
        probe: bool,
        job: ClaimedJob,
        held: OwnedSemaphorePermit,
        shutdown: Shutdown,
    ) {
        let id = job.id.clone();
        let permit = tokio::select! {
            biased;
            _ = shutdown.wait() => None,
            p = q.concurrency.clone().acquire_owned() => p.ok(),
        };
        // The circuit opened (or the queue was paused) while it waited: it
        // goes back unattempted and spends no attempt.
        let stopped = !probe && (!ctl.closed() || ctl.paused());
        match permit {
            Some(permit) if !shutdown.is_triggered() && !stopped => {
                self.clone().attempt(q, ctl, probe, job, permit, held).await
            }
            _ => {
                if probe {
                    self.probe_not_sent(&q.name, &ctl);
                }
                if let Err(e) = self.store.release(&job.lease).await {
                    tracing::warn!(id = %job.id, error = %e, "cannot release a job; it returns when its lease expires");
                }
                // Both permits are free before the claim loop is woken, so
                // it sees the room it is woken for.
                drop(held);
                self.wake.notify_one();
            }
        }
        self.unhold(&id);
    }

    /// Marks `id` as held by this process; `false` if it already was.
    fn hold(&self, id: &str) -> bool {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_owned())
    }

    fn unhold(&self, id: &str) {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }

    async fn attempt(
        self: Arc<Self>,
        q: Arc<QueueTarget>,
        ctl: Arc<QueueControl>,
        probe: bool,
        job: ClaimedJob,
        permit: OwnedSemaphorePermit,
        held: OwnedSemaphorePermit,
    ) {
        let started_at = now_ms(&self.clock);
        let started = tokio::time::Instant::now();
        let n = job.attempts + 1;
        // The claim counted this attempt before it started; attempts that
        // never finished (the process died during them) count too.
        let exhausted = if job.interrupted >= INTERRUPTED_LIMIT {
            Some(format!(
                "the last {} attempts were interrupted (hookgate stopped or crashed during each); \
                 dead-lettered so it cannot do so again; replay it to try again",
                job.interrupted
            ))
        } else if q.policy.max_attempts != 0 && job.cycle_attempts >= q.policy.max_attempts {
            Some(format!(
                "{} attempts already made (interrupted ones included): max_attempts reached",
                job.cycle_attempts
            ))
        } else {
            None
        };
        let pre_exhausted = exhausted.is_some();
        let (result, retry_after) = match exhausted {
            Some(e) => (Err(AttemptError::Permanent(e)), None),
            None => self.send(&q, &job, n).await,
        };
        let duration_ms = started.elapsed().as_millis() as i64;
        let (outcome, http_status, error, body) = match result {
            Ok((status, body)) => (
                {
                    let default = q.policy.classify_status(status);
                    match &q.deliver {
                        Deliver::Prepared(p) => p.classify(&job, status, default),
                        Deliver::Forward { .. } => default,
                    }
                },
                Some(status.as_u16()),
                None,
                Some(body),
            ),
            // The SSRF guard's refusal will not change by retrying.
            Err(AttemptError::Send(e @ SendError::Refused(_))) => {
                (Outcome::Permanent, None, Some(e.to_string()), None)
            }
            Err(AttemptError::Send(e)) => (Outcome::Transient, None, Some(e.to_string()), None),
            Err(AttemptError::Permanent(e)) => (Outcome::Permanent, None, Some(e), None),
            Err(AttemptError::Custom(r)) => (r.outcome, r.code, r.error, None),
        };
        let signal = match (outcome, http_status) {
            (Outcome::Success, _) => Signal::Success,
            (Outcome::Transient, _) => Signal::Failure,
            (Outcome::Permanent, Some(_)) => Signal::Answered,
            (Outcome::Permanent, None) => Signal::NotSent,
        };
        let now = now_ms(&self.clock);
        if let Some(state) = ctl.record(signal, probe, now, rand::random::<f64>()) {
            self.circuit_moved(&q.name, &ctl, state, http_status, error.as_deref());
        }
        // The policy counts this retry cycle only: a replayed job gets its
        // full budget again.
        let cycle_n = job.cycle_attempts + 1;
        let age = Duration::from_millis(started_at.saturating_sub(job.cycle_start).max(0) as u64);
        let next = match outcome {
            Outcome::Success => Next::Done,
            Outcome::Permanent => Next::Dead,
            Outcome::Transient => {
                let delay = q
                    .policy
                    .next_delay(cycle_n, retry_after, rand::random::<f64>());
                if q.policy.may_retry(cycle_n, age, delay) {
                    let next_at = now_ms(&self.clock) + delay.as_millis() as i64;
                    if q.fifo {
                        // The head keeps its place; the wait is kept here.
                        q.not_before
                            .store(next_at, std::sync::atomic::Ordering::Release);
                        Next::Retry {
                            next_at: job.next_at,
                        }
                    } else {
                        Next::Retry { next_at }
                    }
                } else {
                    Next::Dead
                }
            }
        };
        if let Deliver::Prepared(p) = &q.deliver {
            p.finished(
                &job,
                &AttemptReport {
                    at: now_ms(&self.clock),
                    http_status,
                    error: error.clone(),
                    next,
                    exhausted: next == Next::Dead
                        && (pre_exhausted || outcome == Outcome::Transient),
                },
            );
        }
        let label = match (&next, outcome) {
            (Next::Done, _) => "success",
            (Next::Retry { .. }, _) => "retry",
            (Next::Dead, _) => "dead",
        };
        match &next {
            Next::Done => {
                tracing::debug!(queue = %q.name, id = %job.id, attempt = n, "delivered")
            }
            Next::Retry { next_at } => tracing::warn!(
                queue = %q.name, id = %job.id, attempt = n, status = ?http_status, error = ?error,
                retry_in_ms = if q.fifo {
                    q.not_before.load(std::sync::atomic::Ordering::Acquire)
                } else {
                    *next_at
                } - now_ms(&self.clock),
                "attempt failed, will retry"
            ),
            Next::Dead => tracing::warn!(
                queue = %q.name, id = %job.id, attempt = n, status = ?http_status, error = ?error,
                "attempt failed, dead-lettered"
            ),
        }
        // Routes only: a sender destination is labelled by its type in the
        // sender's own metrics, so destinations made through the API do not
        // each add series here.
        if let Deliver::Forward { .. } = &q.deliver {
            self.metrics
                .forward_attempts
                .with_label_values(&[&q.name, label])
                .inc();
            self.metrics
                .forward_seconds
                .with_label_values(&[&q.name])
                .observe(started.elapsed().as_secs_f64());
        }
        let attempt = Attempt {
            started_at,
            duration_ms,
            outcome: label.to_string(),
            http_status,
            error,
            response_body: body.map(|b| b.to_vec()),
        };
        // The target is free again, and the claim loop may claim the next
        // job: recording this attempt may wait a little for a shared commit
        // (the store's lease keeps the job from being claimed meanwhile).
        drop(permit);
        drop(held);
        self.wake.notify_one();
        let finished = self.store.finish(&job.lease, attempt, next).await;
        if q.fifo {
            // The next head can be claimed only now that this one is done.
            self.wake.notify_one();
        }
        match finished {
            Ok(true) => {}
            Ok(false) => tracing::warn!(id = %job.id, "lease lost before the attempt was recorded"),
            Err(e) => {
                tracing::error!(id = %job.id, error = %e, "cannot record attempt; job returns when its lease expires")
            }
        }
    }

    /// Sets the circuit-state gauge of `queue` to `state`.
    fn show_circuit(&self, queue: &str, state: State) {
        for s in State::ALL {
            self.metrics
                .circuit_state
                .with_label_values(&[queue, s.as_str()])
                .set(i64::from(s == state));
        }
    }

    /// A probe that was not sent after all: the circuit goes back to open
    /// (shown as such), and another job probes at once. Not logged as a
    /// transition: nothing was learnt about the upstream.
    fn probe_not_sent(&self, queue: &str, ctl: &QueueControl) {
        if let Some(state) = ctl.record(Signal::NotSent, true, now_ms(&self.clock), 0.0) {
            self.show_circuit(queue, state);
        }
    }

    /// Logs and counts a circuit's transition to `state`.
    fn circuit_moved(
        &self,
        queue: &str,
        ctl: &QueueControl,
        state: State,
        status: Option<u16>,
        error: Option<&str>,
    ) {
        self.show_circuit(queue, state);
        self.metrics
            .circuit_transitions
            .with_label_values(&[queue, state.as_str()])
            .inc();
        let snap = ctl.snapshot();
        match state {
            State::Open => tracing::warn!(
                queue = %queue, status = ?status, error = ?error,
                consecutive_failures = snap.consecutive_failures,
                next_probe_in_ms = snap.next_probe_at.map(|t| t - now_ms(&self.clock)),
                "circuit open: the upstream is failing; only probes are sent until one succeeds"
            ),
            State::HalfOpen => tracing::info!(queue = %queue, "circuit half-open: one probe sent"),
            State::Closed => {
                tracing::info!(queue = %queue, "circuit closed: the upstream answered; delivery resumes");
                self.wake.notify_one();
            }
        }
    }

    /// Sends one attempt; returns the status and the (capped) response body.
    async fn send(
        &self,
        q: &QueueTarget,
        job: &ClaimedJob,
        n: u32,
    ) -> (
        Result<(http::StatusCode, Bytes), AttemptError>,
        Option<Duration>,
    ) {
        let request = match prepare(q, job, n) {
            Ok(Prepared::Http(r)) => r,
            Ok(Prepared::Custom(delivery)) => {
                let r = tokio::time::timeout(q.timeout, delivery)
                    .await
                    .unwrap_or_else(|_| CustomResult {
                        outcome: Outcome::Transient,
                        code: None,
                        error: Some("timed out".into()),
                    });
                return (Err(AttemptError::Custom(r)), None);
            }
            Err(e) => return (Err(AttemptError::Permanent(e)), None),
        };
        let deadline = tokio::time::Instant::now() + q.timeout;
        let resp = match q.client.send(request, q.timeout).await {
            Ok(r) => r,
            Err(e) => return (Err(AttemptError::Send(e)), None),
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body =
            tokio::time::timeout_at(deadline, read_capped(resp.into_body(), RESPONSE_BODY_CAP))
                .await
                .unwrap_or_default();
        (Ok((status, body)), retry_after)
    }
}

/// The request for attempt `n` of `job`, by the job's kind. The set of kinds
/// is closed: a new kind is a new arm here. A kind this binary does not know
/// cannot succeed by retrying, so it is an error, and the caller dead-letters
/// the job with that error text (as for a damaged payload).
fn prepare(q: &QueueTarget, job: &ClaimedJob, n: u32) -> Result<Prepared, String> {
    match (&q.deliver, job.kind.as_str()) {
        (Deliver::Prepared(p), _) => p.prepare(job, n),
        (
            Deliver::Forward {
                target,
                verified_header,
            },
            KIND_FORWARD,
        ) => prepare_forward(target, verified_header, job, n).map(Prepared::Http),
        (_, other) => Err(format!(
            "unknown job kind {other:?}: this hookgate cannot deliver it"
        )),
    }
}

/// [`KIND_FORWARD`]: the received request, replayed on the route's upstream
/// with our `X-Hookgate-*` headers.
fn prepare_forward(
    target: &Target,
    verified_header: &HeaderValue,
    job: &ClaimedJob,
    n: u32,
) -> Result<Request<Full<Bytes>>, String> {
    let req = StoredRequest::decode(&job.payload).map_err(|e| e.to_string())?;
    let uri = target
        .uri_for(&req.path_and_query)
        .map_err(|e| format!("bad upstream URI: {e}"))?;
    let extra = [
        (
            X_HOOKGATE_DELIVERY_ID.clone(),
            HeaderValue::from_str(&job.id).unwrap_or_else(|_| HeaderValue::from_static("invalid")),
        ),
        (X_HOOKGATE_ATTEMPT.clone(), HeaderValue::from(n)),
        (X_HOOKGATE_VERIFIED.clone(), verified_header.clone()),
    ];
    upstream_request(req.method, uri, req.headers, req.body, extra)
        .map_err(|e| format!("cannot build request: {e}"))
}

enum AttemptError {
    /// A custom delivery's own account of how it ended (success included).
    Custom(CustomResult),
    Send(SendError),
    Permanent(String),
}

/// Reads at most `cap` bytes of a body; the rest is not read.
async fn read_capped(mut body: crate::delivery::client::ResponseBody, cap: usize) -> Bytes {
    let mut buf = BytesMut::new();
    while buf.len() < cap {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    let take = data.len().min(cap - buf.len());
                    buf.extend_from_slice(&data[..take]);
                }
            }
            _ => break,
        }
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> QueueTarget {
        QueueTarget {
            name: "/hooks/x".into(),
            deliver: Deliver::Forward {
                target: Target {
                    base: "http://127.0.0.1:9/app".parse().unwrap(),
                    strip: Some("/hooks/x".into()),
                    fixed: false,
                },
                verified_header: HeaderValue::from_static("sigsentry"),
            },
            timeout: Duration::from_secs(1),
            concurrency: Arc::new(Semaphore::new(1)),
            policy: RetryPolicy::default(),
            client: HttpClient::new(),
            fifo: false,
            not_before: Default::default(),
        }
    }

    fn job(kind: &str, payload: Vec<u8>) -> ClaimedJob {
        ClaimedJob {
            id: "job-1".into(),
            queue: "/hooks/x".into(),
            kind: kind.into(),
            payload,
            attempts: 0,
            created_at: 0,
            next_at: 0,
            cycle_attempts: 0,
            cycle_start: 0,
            interrupted: 0,
            lease: crate::store::Lease {
                job_id: "job-1".into(),
                seq: 1,
                token: 1,
            },
        }
    }

    fn stored() -> Vec<u8> {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-hookgate-verified", "forged".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        StoredRequest {
            method: http::Method::POST,
            path_and_query: "/hooks/x/y?z=1".into(),
            headers,
            body: Bytes::from_static(b"{\"a\":1}"),
        }
        .encode()
    }

    #[test]
    fn forward_jobs_become_the_stored_request_on_the_upstream() {
        let Prepared::Http(r) = prepare(&queue(), &job(KIND_FORWARD, stored()), 3).unwrap() else {
            panic!("a forward is an HTTP request");
        };
        assert_eq!(r.method(), http::Method::POST);
        assert_eq!(r.uri(), "http://127.0.0.1:9/app/y?z=1");
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.headers()["x-hookgate-delivery-id"], "job-1");
        assert_eq!(r.headers()["x-hookgate-attempt"], "3");
        assert_eq!(r.headers()["x-hookgate-verified"], "sigsentry");
    }

    /// A real upstream on 127.0.0.1:0 answering every request with `200`,
    /// and the number of requests it has answered.
    async fn upstream() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&hits);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        async {
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::new(),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (port, hits)
    }

    #[tokio::test]
    async fn a_probe_whose_job_is_still_held_here_does_not_leave_the_circuit_half_open() {
        use crate::delivery::circuit::BreakerPolicy;
        use crate::store::{Enqueued, NewJob, StoreOptions};
        use std::sync::atomic::Ordering;

        let (port, hits) = upstream().await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::sqlite(dir.path().join("store.db"))).unwrap();
        let mut q = queue();
        q.deliver = Deliver::Forward {
            target: Target {
                base: format!("http://127.0.0.1:{port}/app").parse().unwrap(),
                strip: Some("/hooks/x".into()),
                fixed: false,
            },
            verified_header: HeaderValue::from_static("sigsentry"),
        };
        let name = q.name.clone();
        let controls = Controls::new([(
            name.clone(),
            BreakerPolicy {
                enabled: true,
                failures: 1,
                probe_interval: Duration::from_millis(20),
                probe_max_interval: Duration::from_millis(20),
            },
        )]);
        let ctl = Arc::clone(controls.get(&name).unwrap());
        let clock = crate::clock::system_clock();
        let now = now_ms(&clock);
        // Two jobs; the older is claimed first, so it is the probe.
        let mut ids = Vec::new();
        for i in 0..2 {
            let job = NewJob {
                queue: name.clone(),
                kind: KIND_FORWARD.into(),
                payload: stored().into(),
                created_at: now - 10 + i,
                next_at: now - 10 + i,
                label: None,
            };
            match store.enqueue(job, None, None).await.unwrap() {
                Enqueued::Accepted { id } => ids.push(id),
                other => panic!("not enqueued: {other:?}"),
            }
        }
        ctl.record(Signal::Failure, false, now, 0.0);
        assert_eq!(ctl.snapshot().state, State::Open);
        let metrics = Arc::new(Metrics::new());
        let engine = Arc::new(Engine::new(
            store.clone(),
            vec![Arc::new(q)],
            &controls,
            clock,
            Arc::new(Notify::new()),
            Duration::from_millis(10),
            Arc::clone(&metrics),
        ));
        // The probe's job is still held here (an earlier claim of it whose
        // lease ran out while it was being attempted): the probe is skipped.
        assert!(engine.hold(&ids[0]));
        let shutdown = Shutdown::new();
        let run = tokio::spawn(Arc::clone(&engine).run(shutdown.clone(), Duration::from_secs(1)));
        let until = std::time::Instant::now() + Duration::from_secs(5);
        let mut state = ctl.snapshot().state;
        while (hits.load(Ordering::SeqCst) == 0 || state != State::Closed)
            && std::time::Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
            state = ctl.snapshot().state;
        }
        shutdown.trigger();
        run.await.unwrap();
        // The other job probed instead, succeeded and closed the circuit.
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "no probe reached the upstream; the circuit is {state:?}"
        );
        assert_eq!(state, State::Closed);
        let shown = |s: State| {
            metrics
                .circuit_state
                .with_label_values(&[name.as_str(), s.as_str()])
                .get()
        };
        assert_eq!(
            (
                shown(State::Closed),
                shown(State::HalfOpen),
                shown(State::Open)
            ),
            (1, 0, 0)
        );
        store.shutdown().await;
    }

    #[test]
    fn unknown_kind_and_damaged_payload_are_permanent_errors() {
        let e = prepare(&queue(), &job("carrier-pigeon", stored()), 1).unwrap_err();
        assert!(e.contains("unknown job kind \"carrier-pigeon\""), "{e}");
        let e = prepare(&queue(), &job(KIND_FORWARD, vec![9, 9]), 1).unwrap_err();
        assert!(e.contains("damaged"), "{e}");
    }
}
