//! Durable state of hookgate: the job queue, the dedup records and the
//! attempt history.
//!
//! `store/` owns everything that must survive a restart. The receiver answers
//! a webhook sender 2xx only after [`Store::enqueue`] has returned; workers
//! [`Store::claim`] due jobs (each claim is a [`Lease`]), make one attempt
//! and [`Store::finish`] it; the admin API lists, inspects, replays, moves and
//! deletes jobs. The outbound sender reuses the same queue under its own
//! queue names.
//!
//! The backend is hidden behind [`Store`]: callers see the job lifecycle
//! only. Today there is one backend, embedded SQLite (`sqlite/`); the
//! Postgres backend for fleets of replicas will be the second variant of
//! `Backend` and must pass the same conformance suite (`conformance.rs`).
//!
//! # Contract (every backend)
//!
//! - **Atomic dedup.** The dedup record and the queued job are written in one
//!   transaction: an event is never "seen but not queued", and a
//!   [`Enqueued::Duplicate`] or [`Enqueued::QueueFull`] answer writes nothing.
//! - **Durable answers.** A caller of any write method gets its answer only
//!   after the transaction holding its write is durable (fsync'd). An error
//!   answer means the write did not happen. Dropping the future after the
//!   request was sent does not cancel the write.
//! - **Leases, one per claim.** A claim hands out a [`Lease`] with a fencing
//!   token. `finish` and `release` with a lease that was superseded (the
//!   lease expired and the job was claimed again) or whose job was deleted
//!   are refused (`false`) and write nothing.
//! - **Attempts are counted before they start.** A claim appends an attempt
//!   record (outcome `interrupted`) in the same durable transaction that
//!   answers the claim; `finish` fills it in. An attempt that crashed or hung
//!   the process therefore still counts, and [`ClaimedJob::interrupted`]
//!   tells how many attempts in a row ended that way. `release` (a claimed
//!   job that was never attempted) removes the record.
//! - **No clock.** Every time is passed in by the caller as `i64` Unix
//!   milliseconds, so tests (and callers) control time completely.
//! - **Errors.** Nothing panics on a database error. Disk full, I/O errors,
//!   busy/locked databases and a stopped writer map to
//!   [`StoreError::Unavailable`] (the caller answers 503); error texts never
//!   contain payload bytes.
//!
//! # Job lifecycle
//!
//! `pending` → (`claim`) → `inflight` → (`finish`) → `done` | `pending`
//! (retry) | `dead`. An inflight job whose lease expired is claimable again;
//! the late `finish` of the old claim is then refused. `replay` moves `dead`
//! back to `pending` and starts a new retry cycle ([`ClaimedJob::cycle_attempts`]
//! counts from there); the attempt history is kept and numbered on.
//! `move_queue` hands the pending and dead jobs of a queue (e.g. of a route
//! that was removed or renamed) to another queue.

mod sqlite;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use sqlite::SqliteBackend;

/// Response bodies recorded with an attempt are truncated to this many bytes.
pub const RESPONSE_BODY_CAP: usize = 16 * 1024;

/// Attempt error texts are truncated to this many bytes (on a UTF-8 boundary).
pub const ERROR_TEXT_CAP: usize = 2 * 1024;

/// `list_jobs` never returns more rows than this, whatever the filter asks.
pub const LIST_LIMIT_CAP: usize = 1000;

/// Outcome recorded for an attempt that was claimed but never finished (the
/// process stopped or crashed during it).
pub const OUTCOME_INTERRUPTED: &str = "interrupted";

/// Errors of the store. The texts never contain payload bytes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot take the request right now (disk full, I/O error,
    /// database busy or locked, writer stopped or closed). Callers answer 503
    /// and the sender retries.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The database file or a row in it is not what this binary expects.
    #[error("store corrupt: {0}")]
    Corrupt(String),
    /// Another process owns the store (embedded backend: one process per
    /// file).
    #[error("store locked: {0}")]
    Locked(String),
    /// A caller-supplied argument is not acceptable (e.g. an unknown cursor).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Anything else (constraint violations, misuse, unexpected codes).
    #[error("store error: {0}")]
    Other(String),
}

impl StoreError {
    /// True when the caller should answer "try again later" (HTTP 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Which backend to open, and where.
#[derive(Debug, Clone)]
pub enum BackendOptions {
    /// One SQLite file (plus its `-wal`, `-shm` and `.lock` files beside it),
    /// owned by one process.
    Sqlite { path: PathBuf },
}

/// What [`Store::open`] needs.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub backend: BackendOptions,
    /// Most dedup keys kept per scope (route) by default; past it the oldest
    /// keys of that scope are forgotten early (a warning and
    /// `hookgate_store_dedup_evicted_total`), never an error to the sender.
    pub dedup_max_keys: u64,
    /// Per-scope overrides of `dedup_max_keys`.
    pub dedup_max_keys_by_scope: Vec<(String, u64)>,
    /// Where the store registers its own metrics (commits, batch sizes,
    /// dedup keys, evictions); none when `None`.
    pub registry: Option<prometheus::Registry>,
    /// Backend tuning that tests shrink (WAL bounds, checkpoint period).
    pub(crate) tuning: Tuning,
}

/// Internal tuning knobs with production defaults.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    /// Period of the background checkpoint.
    pub checkpoint_interval: std::time::Duration,
    /// WAL length past which the writer lets the WAL start over.
    pub wal_restart_bytes: i64,
    /// Bytes of a payload segment (SQLite backend) before the next one.
    pub segment_bytes: u64,
    /// Longest a lazy write (an attempt's end) waits to share a commit
    /// (SQLite backend).
    pub lazy_wait: std::time::Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            checkpoint_interval: std::time::Duration::from_secs(1),
            wal_restart_bytes: 32 * 1024 * 1024,
            segment_bytes: sqlite::plog::DEFAULT_SEGMENT_BYTES,
            lazy_wait: sqlite::LAZY_WAIT,
        }
    }
}

impl StoreOptions {
    /// SQLite at `path`, default limits, no metrics.
    pub fn sqlite(path: impl Into<PathBuf>) -> StoreOptions {
        StoreOptions {
            backend: BackendOptions::Sqlite { path: path.into() },
            dedup_max_keys: DEFAULT_DEDUP_MAX_KEYS,
            dedup_max_keys_by_scope: Vec::new(),
            registry: None,
            tuning: Tuning::default(),
        }
    }
}

/// Default of [`StoreOptions::dedup_max_keys`].
pub const DEFAULT_DEDUP_MAX_KEYS: u64 = 1_000_000;

/// State of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    /// Waiting for `next_at`, then claimable.
    Pending,
    /// Claimed under a lease that has not been finished or released.
    Inflight,
    /// Delivered; the payload has been dropped.
    Done,
    /// Gave up; the payload is kept for replay until `dead_retention`.
    Dead,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Inflight => "inflight",
            JobState::Done => "done",
            JobState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        match s {
            "pending" => Some(JobState::Pending),
            "inflight" => Some(JobState::Inflight),
            "done" => Some(JobState::Done),
            "dead" => Some(JobState::Dead),
            _ => None,
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job to enqueue. Its id is given by the store ([`Enqueued::Accepted`]).
#[derive(Debug, Clone)]
pub struct NewJob {
    pub queue: String,
    pub kind: String,
    pub payload: bytes::Bytes,
    pub created_at: i64,
    /// First time the job may be claimed (usually `created_at`).
    pub next_at: i64,
    /// A short caller's description kept with the job and shown in lists
    /// (the sender: the event type and id); `None` for received webhooks.
    pub label: Option<String>,
}

/// Dedup key written together with a job.
#[derive(Debug, Clone)]
pub struct DedupKey {
    /// Namespace of the key (the route), also the unit of `dedup_max_keys`.
    pub scope: String,
    pub key: String,
    /// The key blocks duplicates while `expires_at > created_at` of the new job.
    pub expires_at: i64,
}

/// Answer of [`Store::enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Job (and dedup record) committed; `id` is the job's public id (a
    /// time-ordered UUIDv7-shaped string, unique per store).
    Accepted { id: String },
    /// The dedup key is still live; nothing was written.
    Duplicate { first_id: String },
    /// The queue already holds `max_pending` pending+inflight jobs; nothing
    /// was written.
    QueueFull,
}

/// The right to finish one claimed job: names the job and carries the
/// fencing token of this claim. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub(crate) job_id: String,
    /// Backend row key of the job.
    pub(crate) seq: i64,
    /// Unique per claim; a later claim of the same job supersedes it.
    pub(crate) token: u64,
}

impl Lease {
    /// The id of the leased job.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }
}

/// A job handed to a worker by [`Store::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub id: String,
    pub queue: String,
    pub kind: String,
    pub payload: Vec<u8>,
    /// Attempts recorded before this claim, interrupted ones included (kept
    /// across replays). This claim's attempt is number `attempts + 1`.
    pub attempts: u32,
    pub created_at: i64,
    /// When it became due: its place in its queue's order.
    pub next_at: i64,
    /// Attempts made since the job was enqueued or last replayed: what a
    /// retry policy counts, so a replay gets a full retry budget again.
    pub cycle_attempts: u32,
    /// When the current retry cycle started (enqueue or last replay).
    pub cycle_start: i64,
    /// How many of the latest attempts in a row were interrupted (claimed,
    /// never finished: the process stopped or crashed during them).
    pub interrupted: u32,
    pub lease: Lease,
}

/// One delivery attempt, as reported to [`Store::finish`].
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    pub started_at: i64,
    pub duration_ms: i64,
    /// Free-form outcome label, e.g. `"success"`, `"retry"`, `"dead"`.
    pub outcome: String,
    pub http_status: Option<u16>,
    /// Truncated to [`ERROR_TEXT_CAP`] bytes by the store.
    pub error: Option<String>,
    /// Truncated to [`RESPONSE_BODY_CAP`] bytes by the store.
    pub response_body: Option<Vec<u8>>,
}

/// What [`Store::finish`] does with the job after recording the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Delivered: state `done`, payload dropped.
    Done,
    /// Try again at `next_at`: state `pending`.
    Retry { next_at: i64 },
    /// Give up: state `dead`, payload kept for replay.
    Dead,
}

/// Filter of [`Store::list_jobs`]. Results are ordered by creation.
#[derive(Debug, Clone)]
pub struct JobFilter {
    pub queue: Option<String>,
    pub state: Option<JobState>,
    /// Capped at [`LIST_LIMIT_CAP`].
    pub limit: usize,
    /// Cursor: only jobs created after the job with this id (it need not
    /// exist any more; a string that is no job id of this store is
    /// [`StoreError::Invalid`]).
    pub after: Option<String>,
}

impl Default for JobFilter {
    fn default() -> Self {
        JobFilter {
            queue: None,
            state: None,
            limit: 100,
            after: None,
        }
    }
}

/// A job without its payload or attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSummary {
    pub id: String,
    pub queue: String,
    pub kind: String,
    pub state: JobState,
    /// Attempts recorded, interrupted ones included.
    pub attempts: u32,
    pub created_at: i64,
    pub next_at: i64,
    /// Time of the last state change reported by a caller (enqueue, finish
    /// = attempt start + duration, replay, move).
    pub updated_at: i64,
    /// When the current lease runs out (inflight jobs only).
    pub lease_until: Option<i64>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// [`NewJob::label`].
    pub label: Option<String>,
}

/// A recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// 1-based attempt number.
    pub n: u32,
    pub started_at: i64,
    /// `None` while the attempt runs or when it was interrupted.
    pub duration_ms: Option<i64>,
    pub outcome: String,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub response_body: Option<Vec<u8>>,
}

/// A job with its attempt history, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDetail {
    pub summary: JobSummary,
    /// Payload length in bytes; `None` once the payload was dropped (done).
    pub payload_len: Option<u64>,
    /// Oldest first.
    pub attempts: Vec<AttemptRecord>,
}

/// Per-queue counters of [`Store::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub queue: String,
    pub pending: u64,
    pub inflight: u64,
    pub dead: u64,
    pub done: u64,
    /// `now - created_at` of the oldest pending or inflight job (0 if in the
    /// future); `None` when there is none.
    pub oldest_pending_age_ms: Option<i64>,
}

/// What [`Store::purge`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgePolicy {
    /// Dedup records with `expires_at <= now` go.
    pub now: i64,
    /// Done jobs (and their attempts) last updated before this go.
    pub done_before: i64,
    /// Dead jobs (payload and attempts included) last updated before this go.
    pub dead_before: i64,
}

/// What [`Store::purge`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeStats {
    pub dedup_removed: u64,
    pub jobs_removed: u64,
    pub attempts_removed: u64,
    /// True when a per-call limit was hit and more rows are eligible; call
    /// `purge` again (each call is kept small so it does not stall commits).
    pub more: bool,
}

/// Answer of [`Store::enqueue_fanout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fanout {
    /// Every job (and the dedup record) committed, in one transaction; the
    /// ids in the order of the jobs given.
    Accepted { ids: Vec<String> },
    /// The dedup key is still live; nothing was written.
    Duplicate { first_id: String },
}

/// A destination of the sender (a channel of seed 001 or an endpoint of
/// seed 004), as stored. The store keeps it opaque: `sealed` holds the
/// credentials encrypted by the sender, `spec` the sender's JSON of the
/// rest of its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub id: String,
    pub project: String,
    /// `slack`, `teams`, `discord`, `google_chat`, `webhook`, `email`,
    /// `endpoint`.
    pub kind: String,
    /// Settings that are not secret (name, threshold, URL hint, events...).
    pub spec: String,
    /// The credentials, encrypted.
    pub sealed: Vec<u8>,
    pub active: bool,
    /// When it was disabled automatically (exhausted deliveries).
    pub disabled_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Time and outcome (2xx or not) of the last finished attempt.
    pub last_attempt_at: Option<i64>,
    pub last_ok: Option<bool>,
    /// Exhausted deliveries in a row.
    pub exhausted_streak: u32,
}

/// Group-commit counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Write transactions committed.
    pub commits: u64,
    /// Write requests served by those commits.
    pub requests: u64,
}

/// The backends. A closed set: a new backend is a new variant and a new arm
/// in each method of [`Store`].
enum Backend {
    Sqlite(SqliteBackend),
}

/// Handle to hookgate's durable state. Cheap to clone; all clones share one
/// backend.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &*self.backend {
            Backend::Sqlite(_) => "sqlite",
        };
        f.debug_struct("Store").field("backend", &kind).finish()
    }
}

/// Dispatches a method call to the backend.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &*$self.backend {
            Backend::Sqlite(b) => b.$method($($arg),*),
        }
    };
}

impl Store {
    /// Opens (creating if needed) the store. For SQLite: takes the
    /// process-exclusive lock (a second process gets
    /// [`StoreError::Locked`]), applies pending migrations, rebuilds the
    /// in-memory dedup index and counters, and starts the writer and
    /// checkpointer threads.
    ///
    /// Blocking: call it at startup, or from `spawn_blocking`.
    pub fn open(opts: StoreOptions) -> Result<Store, StoreError> {
        let backend = match &opts.backend {
            BackendOptions::Sqlite { path } => {
                Backend::Sqlite(SqliteBackend::open(path.clone(), &opts)?)
            }
        };
        Ok(Store {
            backend: Arc::new(backend),
        })
    }

    /// Atomically: if `dedup` is given and `(scope, key)` is live
    /// (`expires_at > job.created_at`), answers `Duplicate` with the first
    /// job's id; else if `max_pending` is `Some(n)` and the queue holds `n`
    /// or more pending+inflight jobs, answers `QueueFull`; else stores the
    /// job (pending) and the dedup record in one transaction and answers
    /// `Accepted`. The two refusals write nothing.
    pub async fn enqueue(
        &self,
        job: NewJob,
        dedup: Option<DedupKey>,
        max_pending: Option<u64>,
    ) -> Result<Enqueued, StoreError> {
        dispatch!(self.enqueue(job, dedup, max_pending)).await
    }

    /// Claims up to `limit` jobs of `queue` that are pending with
    /// `next_at <= now` (or inflight under a lease that ran out), oldest
    /// `next_at` first, each under a new lease valid until `now + lease_ms`,
    /// and durably counts an attempt for each before answering.
    pub async fn claim(
        &self,
        queue: &str,
        now: i64,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        dispatch!(self.claim(queue.to_owned(), now, limit, lease_ms, false)).await
    }

    /// In-order delivery: claims the head of `queue` — its pending job
    /// first in `(next_at, seq)` order, due or not yet — if it is due and
    /// not leased; nothing while the head is leased (being attempted) or
    /// waits for its retry. A retried head keeps its place when `finish`
    /// is given `Next::Retry { next_at: job.next_at }` (the engine then
    /// keeps the retry delay itself).
    pub async fn claim_head(
        &self,
        queue: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<Option<ClaimedJob>, StoreError> {
        let jobs = dispatch!(self.claim(queue.to_owned(), now, 1, lease_ms, true)).await?;
        Ok(jobs.into_iter().next())
    }

    /// Records the claimed attempt's result and moves the job per `next`,
    /// if `lease` is still the job's current lease (it may have run out as
    /// long as nobody claimed the job again). Otherwise answers `false` and
    /// writes nothing. `updated_at` becomes `started_at + duration_ms`.
    ///
    /// Nobody waits on this urgently, so a backend may hold it briefly (the
    /// SQLite backend: up to 2 ms) to share a commit with other writes; the
    /// answer still comes only once it is durable.
    pub async fn finish(
        &self,
        lease: &Lease,
        attempt: Attempt,
        next: Next,
    ) -> Result<bool, StoreError> {
        dispatch!(self.finish(lease.clone(), attempt, next)).await
    }

    /// Gives a claimed job back unattempted: pending again at once, its
    /// attempt record removed. `false` if `lease` is not current.
    pub async fn release(&self, lease: &Lease) -> Result<bool, StoreError> {
        dispatch!(self.release(lease.clone())).await
    }

    /// Pauses (or resumes) delivery of `queue`; kept across restarts.
    /// Enqueueing goes on while paused.
    pub async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), StoreError> {
        dispatch!(self.set_paused(queue.to_owned(), paused)).await
    }

    /// The queues paused with [`Store::set_paused`].
    pub async fn paused_queues(&self) -> Result<Vec<String>, StoreError> {
        dispatch!(self.paused_queues()).await
    }

    /// Lists jobs in creation order, paginated by `filter.after`.
    pub async fn list_jobs(&self, filter: JobFilter) -> Result<Vec<JobSummary>, StoreError> {
        dispatch!(self.list_jobs(filter)).await
    }

    /// A job with its attempts (and payload length, not the payload).
    pub async fn get_job(&self, id: &str) -> Result<Option<JobDetail>, StoreError> {
        dispatch!(self.get_job(id.to_owned())).await
    }

    /// The payload of a job; `None` if the job does not exist or is done.
    pub async fn get_payload(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        dispatch!(self.get_payload(id.to_owned())).await
    }

    /// Moves a dead job back to pending, due at `now`, in a new retry cycle.
    /// `false` if the job is not dead.
    pub async fn replay(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        dispatch!(self.replay(id.to_owned(), now)).await
    }

    /// [`Store::replay`] for every dead job of `queue`; answers how many.
    pub async fn replay_queue(&self, queue: &str, now: i64) -> Result<u64, StoreError> {
        dispatch!(self.replay_queue(queue.to_owned(), now)).await
    }

    /// Deletes a job (any state), its payload and its attempts. Dedup
    /// records pointing at it stay, so a retry of the same event is still
    /// answered as a duplicate. A worker holding it gets `false` from
    /// `finish`.
    pub async fn delete_job(&self, id: &str) -> Result<bool, StoreError> {
        dispatch!(self.delete_job(id.to_owned())).await
    }

    /// Deletes the pending jobs of `queue` that are not claimed (and their
    /// attempts), e.g. when an outbound endpoint is deleted. Dead and done
    /// jobs stay for inspection. Answers how many were deleted.
    pub async fn cancel_queue(&self, queue: &str) -> Result<u64, StoreError> {
        dispatch!(self.cancel_queue(queue.to_owned())).await
    }

    /// Hands every unclaimed pending job and every dead job of `from` to
    /// queue `to`, pending and due at `now` in a new retry cycle (attempt
    /// history kept). For the jobs of a route that was removed or renamed.
    /// Answers how many moved.
    pub async fn move_queue(&self, from: &str, to: &str, now: i64) -> Result<u64, StoreError> {
        dispatch!(self.move_queue(from.to_owned(), to.to_owned(), now)).await
    }

    /// Enqueues several jobs (the deliveries of one event) in ONE
    /// transaction, with one dedup record pointing at the first: either all
    /// of them are durable or none is. No queue limit applies.
    pub async fn enqueue_fanout(
        &self,
        jobs: Vec<NewJob>,
        dedup: Option<DedupKey>,
    ) -> Result<Fanout, StoreError> {
        if jobs.is_empty() {
            return Err(StoreError::Invalid(
                "a fan-out needs at least one job".into(),
            ));
        }
        dispatch!(self.enqueue_fanout(jobs, dedup)).await
    }

    /// The latest `limit` jobs of `queue` that carry a label (the sender's
    /// deliveries), newest first.
    pub async fn recent_labelled(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<JobSummary>, StoreError> {
        dispatch!(self.recent_labelled(queue.to_owned(), limit.min(LIST_LIMIT_CAP))).await
    }

    /// A hint for the claim loop, answered from memory without waiting:
    /// `false` only when `queue` has no pending job at all (so a claim would
    /// find nothing); `true` when it has one, or when the answer would mean
    /// waiting for the writer.
    pub fn may_have_pending(&self, queue: &str) -> bool {
        match &*self.backend {
            Backend::Sqlite(b) => b.may_have_pending(queue),
        }
    }

    /// Creates or replaces a destination.
    pub async fn put_destination(&self, d: Destination) -> Result<(), StoreError> {
        dispatch!(self.put_destination(d)).await
    }

    /// Every destination, oldest first.
    pub async fn destinations(&self) -> Result<Vec<Destination>, StoreError> {
        dispatch!(self.destinations()).await
    }

    /// Deletes a destination; answers whether it existed. Its jobs are
    /// left to the caller ([`Store::delete_queue`]).
    pub async fn delete_destination(&self, id: &str) -> Result<bool, StoreError> {
        dispatch!(self.delete_destination(id.to_owned())).await
    }

    /// Deletes every unclaimed job of `queue` whatever its state (pending,
    /// dead, done), with payloads and attempts. Answers how many.
    pub async fn delete_queue(&self, queue: &str) -> Result<u64, StoreError> {
        dispatch!(self.delete_queue(queue.to_owned())).await
    }

    /// Per-queue counters, ordered by queue name.
    pub async fn stats(&self, now: i64) -> Result<Vec<QueueStats>, StoreError> {
        dispatch!(self.stats(now)).await
    }

    /// Removes expired dedup records, old done jobs and old dead jobs.
    /// Bounded per call; see [`PurgeStats::more`].
    pub async fn purge(&self, policy: PurgePolicy) -> Result<PurgeStats, StoreError> {
        dispatch!(self.purge(policy)).await
    }

    /// Readiness probe: a trivial read, and the writer must be running.
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self.ping()).await
    }

    /// Group-commit counters since open.
    pub fn commit_stats(&self) -> CommitStats {
        dispatch!(self.commit_stats())
    }

    /// The SQLite backend (tests reach into it).
    #[cfg(test)]
    fn sqlite(&self) -> &SqliteBackend {
        match &*self.backend {
            Backend::Sqlite(b) => b,
        }
    }

    /// Dedup keys currently indexed.
    pub fn dedup_keys(&self) -> u64 {
        dispatch!(self.dedup_keys())
    }

    /// Stops accepting writes. Requests already sent are still applied and
    /// answered; then the store's threads exit. Later writes fail with
    /// `Unavailable`; reads keep working. Does not wait; see
    /// [`Store::shutdown`].
    pub fn close(&self) {
        dispatch!(self.close())
    }

    /// [`Store::close`], then waits until everything sent was applied and the
    /// store's threads have exited (for SQLite: the WAL folded back and the
    /// process lock released).
    pub async fn shutdown(&self) {
        dispatch!(self.shutdown()).await
    }
}
