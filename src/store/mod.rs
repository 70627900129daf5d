//! Durable state of hookgate: the job queue, the dedup index and the attempt
//! history.
//!
//! `store/` owns everything that must survive a restart. The receiver answers a
//! webhook sender 2xx only after [`Store::enqueue`] has returned; workers
//! [`Store::claim`] due jobs, forward them and [`Store::finish`] them (recording
//! every attempt); the admin API lists, inspects, replays and deletes jobs. The
//! outbound sender reuses the same queue under its own queue names.
//!
//! The backend is hidden behind [`Store`]. Today it is embedded SQLite
//! (`sqlite.rs`: one file, WAL, `synchronous=FULL`); a Postgres backend will
//! follow, so the schema and the semantics stay portable: plain tables, `TEXT`
//! ids, integer Unix-millisecond timestamps, no SQLite-only behaviour that a
//! caller could observe.
//!
//! # Invariants
//!
//! - **Atomic dedup.** The dedup record and the queued job are written in one
//!   transaction: an event is never "seen but not queued", and a
//!   [`Enqueued::Duplicate`] or [`Enqueued::QueueFull`] answer writes nothing.
//! - **Durable answers.** A caller of any write method gets its answer only
//!   after the transaction containing its write has committed (and, with
//!   `synchronous=FULL`, been fsync'd). An error answer means the write did not
//!   happen. Dropping the future after the request was sent does not cancel
//!   the write.
//! - **Group commit.** One dedicated writer thread (a plain `std::thread`, not
//!   a runtime thread) owns the only write connection. Requests arrive on a
//!   bounded channel; the writer takes the first one, drains whatever else is
//!   already waiting (up to `batch_max`), applies them all in one transaction
//!   with each request inside its own SAVEPOINT (so one request's error does
//!   not poison the others), commits once and then replies to all of them. One
//!   fsync thereby serves many concurrent requests.
//! - **Checkpoints off the commit path.** The writer connection runs with
//!   `wal_autocheckpoint=0`; a separate background thread with its own
//!   connection runs passive WAL checkpoints periodically (and when the writer
//!   nudges it after many writes), plus a final truncating checkpoint at
//!   shutdown. A writer that never pauses would starve passive checkpoints
//!   (the WAL only starts over once a checkpoint has caught up), so past
//!   `wal_restart_bytes` the checkpointer runs one RESTART checkpoint, which
//!   holds new commits off while it copies the last frames: the WAL stays
//!   bounded under sustained load.
//! - **Reads never block the writer or the runtime.** `list_jobs`, `get_job`,
//!   `get_payload`, `stats` and `ping` use a small pool of read connections on
//!   `tokio::task::spawn_blocking`; WAL lets them run concurrently with the
//!   writer.
//! - **No clock.** Every time is passed in by the caller as `i64` Unix
//!   milliseconds, so tests (and callers) control time completely.
//! - **Versioned schema.** Ordered migration scripts are applied at open
//!   inside one transaction and recorded in a `schema_version` table; a file
//!   written by a newer binary is refused rather than misread.
//! - **Errors.** Nothing panics on a database error. Disk full, I/O errors,
//!   busy/locked databases and a stopped writer map to
//!   [`StoreError::Unavailable`] (the caller answers 503); error texts never
//!   contain payload bytes.
//!
//! # Job lifecycle
//!
//! `pending` → (`claim`) → `inflight` → (`finish`) → `done` | `pending`
//! (retry) | `dead`. An inflight job whose lease expired is claimable again,
//! so a crashed worker loses nothing; its late `finish` is then refused.
//! `replay` moves `dead` back to `pending`. The attempt counter and the
//! attempt history are kept across a replay (attempt numbers stay unique);
//! the retry policy lives outside the store and must account for that, e.g.
//! by counting attempts since the job was last replayed.

mod sqlite;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlite::SqliteBackend;

/// Response bodies recorded with an attempt are truncated to this many bytes.
pub const RESPONSE_BODY_CAP: usize = 16 * 1024;

/// Attempt error texts are truncated to this many bytes (on a UTF-8 boundary).
pub const ERROR_TEXT_CAP: usize = 2 * 1024;

/// `list_jobs` never returns more rows than this, whatever the filter asks.
pub const LIST_LIMIT_CAP: usize = 1000;

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
    /// Anything else (constraint violations, misuse, unexpected SQLite codes).
    #[error("store error: {0}")]
    Other(String),
}

impl StoreError {
    /// True when the caller should answer "try again later" (HTTP 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Options of the embedded SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Database file; its parent directory is created if missing.
    pub path: PathBuf,
    /// Most write requests applied in one transaction (one fsync).
    pub batch_max: usize,
    /// Capacity of the bounded channel in front of the writer thread; callers
    /// wait (asynchronously) when it is full.
    pub channel_capacity: usize,
    /// Period of the passive WAL checkpoint.
    pub checkpoint_interval: Duration,
    /// When the WAL has grown past this many bytes, the checkpointer runs a
    /// RESTART checkpoint (it briefly holds off the writer) so the next
    /// commit writes the WAL from its start again. Without it, a writer that
    /// never pauses starves the passive checkpoints and the WAL grows
    /// without bound.
    pub wal_restart_bytes: u64,
    /// Called after every successful commit with the number of requests it
    /// served and how long the transaction took (metrics hook).
    pub on_commit: Option<CommitObserver>,
}

/// A callback told of every commit: `(requests in the batch, duration)`.
#[derive(Clone)]
pub struct CommitObserver(pub Arc<dyn Fn(usize, Duration) + Send + Sync>);

impl std::fmt::Debug for CommitObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitObserver")
    }
}

impl SqliteOptions {
    /// Options with the default tuning for `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteOptions {
            path: path.into(),
            batch_max: 512,
            channel_capacity: 4096,
            checkpoint_interval: Duration::from_secs(1),
            wal_restart_bytes: 64 * 1024 * 1024,
            on_commit: None,
        }
    }
}

/// State of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    /// Waiting for `next_at`, then claimable.
    Pending,
    /// Claimed by a worker holding a lease.
    Inflight,
    /// Delivered; the payload has been dropped.
    Done,
    /// Gave up; the payload is kept for replay.
    Dead,
}

impl JobState {
    /// The value stored in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Inflight => "inflight",
            JobState::Done => "done",
            JobState::Dead => "dead",
        }
    }

    /// Parses the value of the `state` column.
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

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Time-ordered id (UUIDv7 string), so that ordering by id is ordering by
    /// creation.
    pub id: String,
    pub queue: String,
    pub kind: String,
    pub payload: Vec<u8>,
    pub created_at: i64,
    /// First time the job may be claimed (usually `created_at`).
    pub next_at: i64,
}

/// Dedup key written together with a job.
#[derive(Debug, Clone)]
pub struct DedupKey {
    pub scope: String,
    pub key: String,
    /// The key blocks duplicates while `expires_at > created_at` of the new job.
    pub expires_at: i64,
}

/// Answer of [`Store::enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Job (and dedup row) committed.
    Accepted,
    /// The dedup key is still live; nothing was written.
    Duplicate { first_id: String },
    /// The queue already holds `max_pending` pending+inflight jobs; nothing
    /// was written.
    QueueFull,
}

/// A job handed to a worker by [`Store::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub id: String,
    pub queue: String,
    pub kind: String,
    pub payload: Vec<u8>,
    /// Attempts recorded before this claim (kept across replays).
    pub attempts: u32,
    pub created_at: i64,
    /// Attempts made since the job was enqueued or last replayed: what a
    /// retry policy counts, so a replay gets a full retry budget again.
    pub cycle_attempts: u32,
    /// When the current retry cycle started (enqueue or last replay).
    pub cycle_start: i64,
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
    /// Delivered: state `done`, payload dropped to free space.
    Done,
    /// Try again at `next_at`: state `pending`.
    Retry { next_at: i64 },
    /// Give up: state `dead`, payload kept for replay.
    Dead,
}

/// Filter of [`Store::list_jobs`]. Results are ordered by id (creation time).
#[derive(Debug, Clone)]
pub struct JobFilter {
    pub queue: Option<String>,
    pub state: Option<JobState>,
    /// Capped at [`LIST_LIMIT_CAP`].
    pub limit: usize,
    /// Cursor: only jobs with an id greater than this one.
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
    pub attempts: u32,
    pub created_at: i64,
    pub next_at: i64,
    /// Time of the last state change reported by a caller (enqueue, finish
    /// = attempt start + duration, replay).
    pub updated_at: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// A recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// 1-based attempt number.
    pub n: u32,
    pub started_at: i64,
    pub duration_ms: i64,
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
    /// `now - created_at` of the oldest pending job (0 if in the future);
    /// `None` when nothing is pending.
    pub oldest_pending_age_ms: Option<i64>,
}

/// What [`Store::purge`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeStats {
    pub dedup_removed: u64,
    pub jobs_removed: u64,
    pub attempts_removed: u64,
    /// True when a per-call limit was hit and more rows are eligible; call
    /// `purge` again (each call is kept small so it does not stall the writer).
    pub more: bool,
}

/// Group-commit counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Write transactions committed.
    pub commits: u64,
    /// Write requests served by those commits.
    pub requests: u64,
}

/// Handle to hookgate's durable state. Cheap to clone; all clones share one
/// backend.
#[derive(Clone)]
pub struct Store {
    // A Postgres backend will turn this into an enum over backends; the
    // public API does not change.
    backend: Arc<SqliteBackend>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("backend", &"sqlite").finish()
    }
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `opts.path`: creates
    /// the parent directory, switches to WAL, applies pending migrations and
    /// starts the writer and checkpointer threads.
    ///
    /// Blocking: call it at startup, or from `spawn_blocking`.
    pub fn open_sqlite(opts: SqliteOptions) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Arc::new(SqliteBackend::open(opts)?),
        })
    }

    /// Atomically: if `dedup` is given and `(scope, key)` exists with
    /// `expires_at > job.created_at`, answers `Duplicate` with the first job's
    /// id; else if `max_pending` is `Some(n)` and the queue holds `n` or more
    /// pending+inflight jobs, answers `QueueFull`; else inserts the job
    /// (pending) and upserts the dedup row (replacing an expired one) in one
    /// transaction and answers `Accepted`. The two refusals write nothing.
    pub async fn enqueue(
        &self,
        job: NewJob,
        dedup: Option<DedupKey>,
        max_pending: Option<u64>,
    ) -> Result<Enqueued, StoreError> {
        self.backend.enqueue(job, dedup, max_pending).await
    }

    /// Claims up to `limit` jobs of `queue` (`None` = any queue) that are
    /// pending with `next_at <= now`, or inflight with `lease_until <= now` (a
    /// dead worker's lease expired), oldest `next_at` first. They become
    /// inflight with `lease_owner = owner` and `lease_until = now + lease_ms`.
    /// `owner` should be unique per worker.
    pub async fn claim(
        &self,
        queue: Option<&str>,
        now: i64,
        limit: usize,
        lease_ms: i64,
        owner: &str,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        self.backend
            .claim(
                queue.map(str::to_owned),
                now,
                limit,
                lease_ms,
                owner.to_owned(),
            )
            .await
    }

    /// Records attempt `n = previous attempts + 1` and moves the job per
    /// `next`, but only if it is still inflight and leased by `owner` (the
    /// lease may have run out as long as nobody else claimed it). Otherwise
    /// answers `false` and writes nothing. `updated_at` becomes
    /// `attempt.started_at + attempt.duration_ms`.
    pub async fn finish(
        &self,
        job_id: &str,
        owner: &str,
        attempt: Attempt,
        next: Next,
    ) -> Result<bool, StoreError> {
        self.backend
            .finish(job_id.to_owned(), owner.to_owned(), attempt, next)
            .await
    }

    /// Puts an inflight job leased by `owner` back to pending (claimable
    /// again at once) without recording an attempt; for a worker shutting
    /// down before it started the attempt. `false` if not leased by `owner`.
    pub async fn release(&self, job_id: &str, owner: &str) -> Result<bool, StoreError> {
        self.backend
            .release(job_id.to_owned(), owner.to_owned())
            .await
    }

    /// Lists jobs ordered by id (creation time), paginated by `filter.after`.
    pub async fn list_jobs(&self, filter: JobFilter) -> Result<Vec<JobSummary>, StoreError> {
        self.backend.list_jobs(filter).await
    }

    /// A job with its attempts (and payload length, not the payload).
    pub async fn get_job(&self, id: &str) -> Result<Option<JobDetail>, StoreError> {
        self.backend.get_job(id.to_owned()).await
    }

    /// The payload of a job; `None` if the job does not exist or is done
    /// (payload dropped).
    pub async fn get_payload(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend.get_payload(id.to_owned()).await
    }

    /// Moves a dead job back to pending, due at `now`. The attempt counter and
    /// history are kept; `false` if the job is not dead.
    pub async fn replay(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        self.backend.replay(id.to_owned(), now).await
    }

    /// [`Store::replay`] for every dead job of `queue`; answers how many.
    pub async fn replay_queue(&self, queue: &str, now: i64) -> Result<u64, StoreError> {
        self.backend.replay_queue(queue.to_owned(), now).await
    }

    /// Deletes a job (any state) and its attempts. Dedup rows pointing at it
    /// stay, so a retry of the same event is still answered as a duplicate.
    /// A worker holding it will get `false` from `finish`.
    pub async fn delete_job(&self, id: &str) -> Result<bool, StoreError> {
        self.backend.delete_job(id.to_owned()).await
    }

    /// Deletes the pending jobs of `queue` (and their attempts), e.g. when an
    /// outbound endpoint is deleted. Inflight jobs are left to their workers;
    /// dead and done jobs stay for inspection. Answers how many were deleted.
    pub async fn cancel_queue(&self, queue: &str) -> Result<u64, StoreError> {
        self.backend.cancel_queue(queue.to_owned()).await
    }

    /// Per-queue counters, ordered by queue name.
    pub async fn stats(&self, now: i64) -> Result<Vec<QueueStats>, StoreError> {
        self.backend.stats(now).await
    }

    /// Removes dedup rows expired at `now` and done jobs (with their
    /// attempts) whose `updated_at < done_older_than`. Bounded per call; see
    /// [`PurgeStats::more`].
    pub async fn purge(&self, now: i64, done_older_than: i64) -> Result<PurgeStats, StoreError> {
        self.backend.purge(now, done_older_than).await
    }

    /// Readiness probe: a trivial read, and the writer must be running.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.backend.ping().await
    }

    /// Group-commit counters since open.
    pub fn commit_stats(&self) -> CommitStats {
        self.backend.commit_stats()
    }

    /// Stops accepting writes. Requests already sent are still applied and
    /// answered; then the writer and checkpointer threads exit. Later writes
    /// fail with `Unavailable`; reads keep working. Does not wait; see
    /// [`Store::shutdown`].
    pub fn close(&self) {
        self.backend.close();
    }

    /// [`Store::close`], then waits until the writer has drained its queue
    /// and the checkpointer has run its final checkpoint.
    pub async fn shutdown(&self) {
        self.backend.shutdown().await;
    }
}
