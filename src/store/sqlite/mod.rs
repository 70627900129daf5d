//! Embedded SQLite backend of [`Store`](super::Store): one file, laid out so
//! that the hot path only appends.
//!
//! # Layout (schema migrations 3 and 4)
//! - payload segments (`plog.rs`): the stored request of a new job, appended
//!   to a segment file beside the database and flushed (`fdatasync`) before
//!   the commit that records the job; written once, never copied by a
//!   checkpoint. The segment file goes once no job row points into it.
//! - `payload(seq, body)`: stored requests kept in the database: those of
//!   stores written before migration 4, and those moved out of their
//!   segment because the job will wait (a retry, a dead letter). Deleted
//!   when the job is delivered (or purged).
//! - `job(seq, id, queue, kind, state, ..., pseg, poff, plen)`: one small
//!   row per job (`pseg`/`poff`/`plen`: where its payload is in a segment);
//!   `state` is 0 pending (claimed or not), 2 done, 3 dead. Partial indexes
//!   serve claims (`job_due`: due pending jobs by `next_at`), the oldest
//!   pending age and lists (`job_pending`) and the dead letters (`job_dead`).
//! - `attempt(seq, job, n, ...)`: appended by each claim with outcome
//!   `interrupted`, filled in by `finish` (an attempt that crashed the
//!   process stays `interrupted` and still counts).
//! - `dedup_record(seq, fp, scope, key, job_id, expires_at)`: appended in
//!   time order in the job's transaction; expired by `expires_at` order.
//! - `meta`: the store's random fingerprint key and id salt, and the paused
//!   queues (`paused:<queue>`).
//!
//! # Memory (`mem.rs`)
//! Claims and leases, per-queue counters and the dedup index live in memory,
//! rebuilt at open: a claim writes one tiny attempt row and nothing else, a
//! dedup check reads no B-tree (a fingerprint match is confirmed with one
//! point read). That is sound because **one process owns the file**: open
//! takes an exclusive lock on `<path>.lock`, and a second process is refused
//! ([`StoreError::Locked`]) instead of sharing in-memory leases.
//!
//! # Threads
//! - the **writer** owns the only write connection and group-commits: it
//!   takes the first request from a bounded channel, drains whatever else is
//!   waiting (up to `BATCH_MAX`), applies them in one IMMEDIATE transaction,
//!   each in its own SAVEPOINT (one request's error rolls back that request
//!   and its in-memory effects only), writes out and syncs the payloads the
//!   batch appended, commits once (WAL, `synchronous=FULL`: fsync'd) and
//!   then hands the whole batch to one task of the runtime, which answers
//!   the requests (one wake of the runtime per commit);
//! - the **checkpointer** copies the WAL into the database with PASSIVE
//!   checkpoints (never blocking the writer). A writer that never pauses would
//!   keep the WAL from ever starting over, so when the WAL has grown past
//!   `wal_restart_bytes` (32 MiB) the writer, between two batches, waits for one more
//!   passive pass (it only has the last frames left to copy) so that its
//!   next commit starts the WAL from the beginning. No RESTART or TRUNCATE
//!   checkpoint ever runs while the writer is busy; the final TRUNCATE runs
//!   after the writer exited;
//! - **readers** (lists, details, stats' oldest age) use a small pool of
//!   read-only connections on `spawn_blocking`.

pub(super) mod mem;
pub(crate) mod plog;
pub(crate) mod schema;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self as std_mpsc, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::{
    params, params_from_iter, CachedStatement, Connection, ErrorCode, OpenFlags, OptionalExtension,
    Row, TransactionBehavior,
};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{debug, info, trace, warn};

use self::mem::{fp_from_bytes, fp_to_bytes, Field, Fingerprinter, Fp, LeaseEntry, Mem};
use self::plog::{PayloadLog, PayloadRef, SegmentFiles};
use super::{
    Attempt, AttemptRecord, ClaimedJob, CommitStats, DedupKey, Destination, Enqueued, Fanout,
    JobDetail, JobFilter, JobState, JobSummary, Lease, NewJob, Next, PurgePolicy, PurgeStats,
    QueueStats, StoreError, StoreOptions, ERROR_TEXT_CAP, LIST_LIMIT_CAP, OUTCOME_INTERRUPTED,
    RESPONSE_BODY_CAP,
};

/// Page size of a new database. What remains in the database is small rows
/// (the payloads are in segments), and every page a commit touches is
/// written whole to the WAL and again by the checkpoint: 2 KiB pages wrote
/// 3.7 KB per webhook lifecycle where 4 KiB pages wrote 4.5 KB (1 KiB: 3.3
/// KB, but twice the write calls; `cargo bench --bench store -- lifecycle`).
const PAGE_SIZE: i64 = 2048;

/// How long a connection waits for a lock before failing with BUSY. Within
/// the process only the final TRUNCATE checkpoint can contend.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest WAL file kept after the WAL starts over; a burst does not pin
/// more disk than this.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Longest the writer waits for that pass; the WAL just grows a little
/// longer if it takes more.
const WAL_RESTART_WAIT: Duration = Duration::from_millis(200);

/// The writer nudges the checkpointer after this many committed requests.
const CHECKPOINT_NUDGE_REQUESTS: u64 = 1000;

/// Most write requests applied in one transaction (one fsync).
const BATCH_MAX: usize = 512;

/// Delivered payloads are deleted together once this many are waiting.
/// Rows next to each other go in one statement, so a page of payloads is
/// freed once rather than rewritten for each of its rows.
const TRASH_FLUSH: usize = 256;

/// Longest a lazy write (the end of an attempt) waits to share a commit
/// (`Tuning::lazy_wait`'s default).
pub(crate) const LAZY_WAIT: Duration = Duration::from_millis(2);

/// Lazy writes that commit at once when this many are waiting.
pub(crate) const LAZY_MAX: usize = 256;

/// Capacity of the bounded channel in front of the writer; callers wait
/// (asynchronously) when it is full.
const CHANNEL_CAPACITY: usize = 4096;

/// Prepared statements cached per connection.
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// Idle read connections kept for reuse.
const READ_POOL_MAX_IDLE: usize = 4;

/// Rows one purge, replay, move or cancel step changes at most, so that one
/// step never holds a commit (and every sender waiting on it) for long.
const STEP_ROWS: usize = 64;

/// Rows one purge step looks at at most while searching for old jobs and
/// expired dedup records.
const PURGE_SCAN_ROWS: i64 = 1024;

/// Expired dedup records one purge step deletes at most (per scope): a run
/// of consecutive rows goes in one range delete, so a record costs a few
/// B-tree cell removals, and a step stays well under a millisecond.
const PURGE_DEDUP_STEP: usize = 256;

/// Most keys an eviction forgets below a scope's limit (see
/// `evict_over_limit`).
const EVICT_SLACK_MAX: u64 = 256;

/// Dedup eviction reads the oldest records in chunks of this many rows.
const EVICT_SCAN_ROWS: i64 = 1024;

/// How long `open` waits for another process to release the store lock
/// (a restart overlapping the previous process's exit).
const LOCK_WAIT: Duration = Duration::from_secs(3);

const STATE_PENDING: i64 = 0;
const STATE_DONE: i64 = 2;
const STATE_DEAD: i64 = 3;

/// Maps a SQLite error to a [`StoreError`]. rusqlite messages carry SQLite's
/// description, never bound parameter values, so no payload leaks here.
pub(super) fn db_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    let msg = e.to_string();
    match &e {
        E::SqliteFailure(f, _) => match f.code {
            ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::ReadOnly
            | ErrorCode::OutOfMemory
            | ErrorCode::PermissionDenied
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::NoLargeFileSupport => StoreError::Unavailable(msg),
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StoreError::Corrupt(msg),
            _ => StoreError::Other(msg),
        },
        // The payload log's I/O (see `plog_err`).
        E::ToSqlConversionFailure(inner) => match inner.downcast_ref::<std::io::Error>() {
            Some(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData
                ) =>
            {
                StoreError::Corrupt(format!("payload log: {io}"))
            }
            Some(io) => StoreError::Unavailable(format!("payload log: {io}")),
            None => StoreError::Other(msg),
        },
        E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::InvalidColumnType(..)
        | E::Utf8Error(..) => StoreError::Corrupt(msg),
        _ => StoreError::Other(msg),
    }
}

/// Carries an I/O error of the payload log through a `rusqlite::Result`
/// (mapped back by [`db_err`]).
fn plog_err(e: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// An I/O error of the payload log outside a statement.
fn plog_store_err(e: std::io::Error) -> StoreError {
    db_err(plog_err(e))
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable("store writer is stopped".into())
}

/// Converts a count to an SQL integer, saturating.
pub(super) fn sql_int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Converts an SQL count (never negative) to `u64`.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char
/// boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    // NO_MUTEX: every connection is used by one thread at a time.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(db_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    // The query planner stability guarantee: plans never depend on the
    // values bound. Without it SQLite weighs the partial indexes against the
    // bound values, and then compiles the claim statement anew after every
    // binding (measured: the claim took 13 % of the writer's CPU, 7 % with
    // this).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(db_err)?;
    Ok(conn)
}

fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let conn = open_connection(path)?;
    // Only a new (empty) database takes it; an existing one keeps its own.
    conn.pragma_update(None, "page_size", PAGE_SIZE)
        .map_err(db_err)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(db_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Other(format!(
            "cannot switch the database to WAL mode (got {mode:?})"
        )));
    }
    // FULL: a commit is on disk (WAL fsync'd) before anyone is answered.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db_err)?;
    // Checkpoints are the checkpointer thread's job, never the commit path's.
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(db_err)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
        .map_err(db_err)?;
    // The job table's `CHECK (state IN (0, 2, 3))` is compiled into a
    // temporary b-tree built and dropped by every insert and every state
    // change (~10k instructions each, about a tenth of an enqueue's whole
    // cost, counted with callgrind). The writer only ever writes those
    // three states, and `rebuild` refuses a file holding another.
    conn.pragma_update(None, "ignore_check_constraints", true)
        .map_err(db_err)?;
    Ok(conn)
}

fn open_checkpointer(path: &Path) -> Result<Connection, StoreError> {
    let conn = open_connection(path)?;
    // The checkpoint fsyncs the database file before it lets the WAL reset.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db_err)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(db_err)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
        .map_err(db_err)?;
    Ok(conn)
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = open_connection(path)?;
    // Belt and braces: a read connection must never take the write lock.
    conn.pragma_update(None, "query_only", true)
        .map_err(db_err)?;
    Ok(conn)
}

/// Takes the process-exclusive lock of the store (`<db>.lock`), waiting up
/// to [`LOCK_WAIT`] for a previous owner to exit.
fn take_lock(path: &Path) -> Result<File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            StoreError::Unavailable(format!("cannot open {}: {e}", lock_path.display()))
        })?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(format!(
                    "another hookgate process is using this store ({} is locked); \
                     one store file serves one process (use store.kind = \"postgres\" \
                     for several replicas)",
                    lock_path.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot lock {}: {e}",
                    lock_path.display()
                )))
            }
        }
    }
}

/// `meta` keys of paused queues: this prefix, then the queue name.
const PAUSED_PREFIX: &str = "paused:";
/// The first key after every `paused:` key (`;` follows `:`).
const PAUSED_END: &str = "paused;";

/// A random secret of the store named `key` in `meta`, created on first
/// open.
fn meta_secret(conn: &Connection, key: &str, len: usize) -> Result<Vec<u8>, StoreError> {
    let existing: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
        .map_err(db_err)?;
    if let Some(s) = existing.filter(|s| s.len() == len) {
        return Ok(s);
    }
    let secret: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
        params![key, secret],
    )
    .map_err(db_err)?;
    Ok(secret)
}

/// Public job ids. A job's id is its row key and creation time in the shape
/// of a UUIDv7: the 48-bit millisecond timestamp (so ids sort by time), and
/// the row key XOR a random per-store salt in the random bits (so two stores
/// do not hand out the same ids). Looking a job up by id is then a primary
/// key read, and no id index is written per job.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdCodec {
    salt: u64,
}

const ID_SEQ_MASK: u64 = (1 << 62) - 1;
const ID_TS_MASK: u64 = (1 << 48) - 1;

impl IdCodec {
    pub(crate) fn encode(&self, seq: i64, created_at: i64) -> String {
        let ts = (created_at as u64) & ID_TS_MASK;
        let rand_a = (self.salt >> 52) & 0xfff;
        let rand_b = ((seq as u64) ^ self.salt) & ID_SEQ_MASK;
        let v = (u128::from(ts) << 80)
            | (0x7u128 << 76)
            | (u128::from(rand_a) << 64)
            | (0b10u128 << 62)
            | u128::from(rand_b);
        uuid::Uuid::from_u128(v).hyphenated().to_string()
    }

    /// The row key and the creation time (48 bits) an id names; `None` for
    /// anything this store did not hand out.
    pub(crate) fn decode(&self, id: &str) -> Option<(i64, u64)> {
        let v = uuid::Uuid::try_parse(id).ok()?.as_u128();
        let version = (v >> 76) & 0xf;
        let variant = (v >> 62) & 0b11;
        let rand_a = ((v >> 64) & 0xfff) as u64;
        if version != 7 || variant != 0b10 || rand_a != (self.salt >> 52) & 0xfff {
            return None;
        }
        let seq = ((v as u64) ^ self.salt) & ID_SEQ_MASK;
        Some((i64::try_from(seq).ok()?, (v >> 80) as u64))
    }
}

/// The row of the job `id` names, if it exists (ids of the first layout
/// resolve through `legacy_id`).
fn resolve(c: &Connection, codec: IdCodec, id: &str) -> rusqlite::Result<Option<i64>> {
    if let Some((seq, ts)) = codec.decode(id) {
        let created: Option<i64> = c
            .prepare_cached("SELECT created_at FROM job WHERE seq = ?1")?
            .query_row([seq], |r| r.get(0))
            .optional()?;
        return Ok(created
            .filter(|t| (*t as u64) & ID_TS_MASK == ts)
            .map(|_| seq));
    }
    c.prepare_cached("SELECT seq FROM legacy_id WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/// The store's own metrics, registered in the caller's registry.
#[derive(Clone)]
struct StoreMetrics {
    commit_seconds: prometheus::Histogram,
    commit_batch: prometheus::Histogram,
    dedup_keys: prometheus::IntGauge,
    dedup_evicted: prometheus::IntCounterVec,
    payload_segments: prometheus::IntGauge,
    payload_bytes: prometheus::IntGauge,
    /// Jobs the last open dropped: their batch's payloads had not reached
    /// the disk before a power loss (the batch was never answered).
    dropped_unsynced: prometheus::IntGauge,
}

impl StoreMetrics {
    fn new(registry: Option<&prometheus::Registry>) -> Result<StoreMetrics, StoreError> {
        use prometheus::{exponential_buckets, HistogramOpts, Opts};
        let err = |e: prometheus::Error| StoreError::Other(format!("store metrics: {e}"));
        let m = StoreMetrics {
            commit_seconds: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "hookgate_store_commit_duration_seconds",
                    "Duration of store commits (one commit serves a batch of requests).",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
                    0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ]),
            )
            .map_err(err)?,
            commit_batch: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "hookgate_store_commit_batch_size",
                    "Write requests served per store commit.",
                )
                .buckets(exponential_buckets(1.0, 2.0, 11).map_err(err)?),
            )
            .map_err(err)?,
            dedup_keys: prometheus::IntGauge::new(
                "hookgate_store_dedup_keys",
                "Dedup keys held in the in-memory index.",
            )
            .map_err(err)?,
            payload_segments: prometheus::IntGauge::new(
                "hookgate_store_payload_segments",
                "Payload segment files on disk (each up to 64 MiB).",
            )
            .map_err(err)?,
            payload_bytes: prometheus::IntGauge::new(
                "hookgate_store_payload_segment_live_bytes",
                "Bytes of stored requests in payload segments that jobs still need.",
            )
            .map_err(err)?,
            dropped_unsynced: prometheus::IntGauge::new(
                "hookgate_store_open_dropped_unsynced_jobs",
                "Jobs dropped when the store was opened because their batch's payloads \
                 had not reached the disk before a power loss (never acknowledged).",
            )
            .map_err(err)?,
            dedup_evicted: prometheus::IntCounterVec::new(
                Opts::new(
                    "hookgate_store_dedup_evicted_total",
                    "Dedup keys forgotten before their window ended because the scope \
                     held more than its max_keys.",
                ),
                &["scope"],
            )
            .map_err(err)?,
        };
        if let Some(r) = registry {
            r.register(Box::new(m.commit_seconds.clone()))
                .map_err(err)?;
            r.register(Box::new(m.commit_batch.clone())).map_err(err)?;
            r.register(Box::new(m.dedup_keys.clone())).map_err(err)?;
            r.register(Box::new(m.dedup_evicted.clone())).map_err(err)?;
            r.register(Box::new(m.payload_segments.clone()))
                .map_err(err)?;
            r.register(Box::new(m.payload_bytes.clone())).map_err(err)?;
            r.register(Box::new(m.dropped_unsynced.clone()))
                .map_err(err)?;
        }
        Ok(m)
    }
}

// ---------------------------------------------------------------------------
// Backend
// ---------------------------------------------------------------------------

pub(super) struct SqliteBackend {
    /// `None` once closed. Cloned (briefly, under the lock) per request; the
    /// writer exits when every clone is gone and the queue is drained.
    writer: Mutex<Option<mpsc::Sender<Box<dyn PendingWrite>>>>,
    /// Rung after each eager request is queued: while lazy requests wait
    /// out their window the writer listens for this, not for the channel,
    /// so that a lazy request does not wake it (see `Writer::run`).
    eager_queued: Arc<Notify>,
    /// Lazy requests sent and not yet answered: the one that makes
    /// `LAZY_MAX` rings `eager_queued` too.
    lazy_waiting: Arc<AtomicUsize>,
    reads: Arc<ReadPool>,
    /// For readers of payloads in segments.
    segments: SegmentFiles,
    codec: IdCodec,
    pub(super) mem: Arc<Mutex<Mem>>,
    counters: Arc<Counters>,
    /// Writer and checkpointer, joined by `shutdown`.
    threads: Mutex<Vec<JoinHandle<()>>>,
    #[cfg(test)]
    fpr: Fingerprinter,
    #[cfg(test)]
    fail_next_sync: Arc<AtomicBool>,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    requests: AtomicU64,
    dedup_keys: AtomicU64,
}

/// What the writer thread needs besides its connection.
struct WriterEnv {
    codec: IdCodec,
    fpr: Fingerprinter,
    max_keys: u64,
    max_keys_by_scope: HashMap<String, u64>,
    metrics: StoreMetrics,
}

impl WriterEnv {
    fn max_keys(&self, scope: &str) -> u64 {
        self.max_keys_by_scope
            .get(scope)
            .copied()
            .unwrap_or(self.max_keys)
    }
}

impl SqliteBackend {
    pub(super) fn open(path: PathBuf, opts: &StoreOptions) -> Result<Self, StoreError> {
        let started = Instant::now();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let lock_file = Arc::new(take_lock(&path)?);
        let mut writer_conn = open_writer(&path)?;
        schema::migrate(&mut writer_conn)?;
        let secret = meta_secret(&writer_conn, "dedup_secret", 32)?;
        let salt = meta_secret(&writer_conn, "id_salt", 8)?;
        let mut salt_bytes = [0u8; 8];
        salt_bytes.copy_from_slice(&salt);
        let codec = IdCodec {
            salt: u64::from_le_bytes(salt_bytes),
        };
        let env = WriterEnv {
            codec,
            fpr: Fingerprinter::new(&secret),
            max_keys: opts.dedup_max_keys.max(1),
            max_keys_by_scope: opts
                .dedup_max_keys_by_scope
                .iter()
                .map(|(s, n)| (s.clone(), (*n).max(1)))
                .collect(),
            metrics: StoreMetrics::new(opts.registry.as_ref())?,
        };
        let files = SegmentFiles::for_db(&path);
        let found = files.list().map_err(|e| {
            StoreError::Unavailable(format!("cannot list the payload segments: {e}"))
        })?;
        // One transaction: an open that finds the file corrupt changes
        // nothing in it.
        let (mut mem, dropped) = {
            let tx = writer_conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let dropped = drop_unsynced_tail(&tx, &files)?;
            let mem = rebuild(&tx, &env.fpr, &found)?;
            tx.commit().map_err(db_err)?;
            (mem, dropped)
        };
        let evicted = evict_over_limit(&writer_conn, &mut mem, &env)?;
        mem.commit();
        let next_segment = found
            .iter()
            .map(|(id, _)| *id)
            .chain(mem.segs.keys().copied())
            .max()
            .map_or(1, |m| m.saturating_add(1));
        let mut plog = PayloadLog::new(
            files,
            opts.tuning.segment_bytes,
            next_segment,
            found.iter().map(|(id, _)| *id),
        );
        // Segments nothing points into (delivered, or written by a batch
        // that never committed before a crash) go now.
        retire_unused_segments(&mut plog, &mut mem, None);
        let counters = Arc::new(Counters::default());
        counters
            .dedup_keys
            .store(mem.dedup.len() as u64, Ordering::Relaxed);
        env.metrics.dedup_keys.set(mem.dedup.len() as i64);
        env.metrics.dropped_unsynced.set(dropped as i64);
        info!(
            path = %path.display(),
            jobs = mem.counts.values().map(|c| c.pending + c.done + c.dead).sum::<u64>(),
            dedup_keys = mem.dedup.len(),
            dedup_evicted = evicted,
            dropped_unsynced = dropped,
            payload_segments = mem.segs.len(),
            index_bytes = mem.dedup.bytes(),
            took_ms = started.elapsed().as_millis() as u64,
            "store opened"
        );
        let mem = Arc::new(Mutex::new(mem));

        let reads = Arc::new(ReadPool::new(path.clone()));
        reads.run(|c| c.query_row("SELECT 1", [], |_| Ok(())))?;
        let checkpointer_conn = open_checkpointer(&path)?;
        let page_size: i64 = checkpointer_conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(db_err)?;
        let restart_frames = (opts.tuning.wal_restart_bytes / page_size.max(512)).max(1);
        let interval = opts
            .tuning
            .checkpoint_interval
            .max(Duration::from_millis(10));

        // The writer holds the only sender of the checkpointer's channel:
        // when it exits, the checkpointer sees the disconnect, runs the final
        // TRUNCATE and exits too, in that order. Both hold the process lock
        // until they are done.
        let (ckpt_tx, ckpt_rx) = std_mpsc::sync_channel::<CkptMsg>(16);
        let restart_wanted = Arc::new(AtomicBool::new(false));
        let checkpointer = {
            let wanted = Arc::clone(&restart_wanted);
            let files = plog.files().clone();
            let lock_file = Arc::clone(&lock_file);
            spawn_thread("hookgate-store-ckpt", move || {
                run_checkpointer(
                    checkpointer_conn,
                    &files,
                    ckpt_rx,
                    interval,
                    restart_frames,
                    &wanted,
                );
                drop(lock_file);
            })?
        };

        #[cfg(test)]
        let fpr = env.fpr.clone();
        let (psync_tx, psync_rx) = std_mpsc::channel::<SegmentSync>();
        let fail_next_sync = Arc::new(AtomicBool::new(false));
        let segment_syncer = {
            let lock_file = Arc::clone(&lock_file);
            let fail_next = Arc::clone(&fail_next_sync);
            spawn_thread("hookgate-store-psync", move || {
                run_segment_syncer(psync_rx, &fail_next);
                drop(lock_file);
            })?
        };
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let eager_queued = Arc::new(Notify::new());
        let lazy_waiting = Arc::new(AtomicUsize::new(0));
        let segments = plog.files().clone();
        let writer = Writer {
            eager_queued: Arc::clone(&eager_queued),
            lazy_waiting: Arc::clone(&lazy_waiting),
            lazy_wait: opts.tuning.lazy_wait,
            conn: writer_conn,
            plog,
            psync: psync_tx,
            poisoned: Arc::new(AtomicBool::new(false)),
            completer: spawn_completer(),
            mem: Arc::clone(&mem),
            env,
            counters: Arc::clone(&counters),
            ckpt: ckpt_tx,
            since_nudge: 0,
            restart_wanted,
        };
        let writer = spawn_thread("hookgate-store-writer", move || {
            writer.run(rx);
            drop(lock_file);
        })?;

        Ok(SqliteBackend {
            writer: Mutex::new(Some(tx)),
            eager_queued,
            lazy_waiting,
            reads,
            segments,
            codec,
            mem,
            counters,
            threads: Mutex::new(vec![writer, segment_syncer, checkpointer]),
            #[cfg(test)]
            fpr,
            #[cfg(test)]
            fail_next_sync,
        })
    }

    /// Makes the next payload segment sync fail.
    #[cfg(test)]
    pub(super) fn fail_next_segment_sync(&self) {
        self.fail_next_sync.store(true, Ordering::Release);
    }

    /// The fingerprint this store gives `(scope, key)`.
    #[cfg(test)]
    pub(super) fn fingerprint(&self, scope: &str, key: &str) -> Fp {
        self.fpr.fp(scope, key)
    }

    fn sender(&self) -> Option<mpsc::Sender<Box<dyn PendingWrite>>> {
        lock(&self.writer).clone()
    }

    /// Runs `op` on the writer thread inside the next group-commit batch and
    /// answers once that batch has committed.
    pub(super) async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_, '_>) -> rusqlite::Result<T> + Send + 'static,
    {
        self.submit(false, op).await
    }

    /// [`Self::write`] for a request nobody waits on urgently (recording an
    /// attempt's end): it may wait up to [`LAZY_WAIT`] so that it shares a
    /// commit with other writes instead of paying for one of its own.
    pub(super) async fn write_lazy<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_, '_>) -> rusqlite::Result<T> + Send + 'static,
    {
        self.submit(true, op).await
    }

    async fn submit<T, F>(&self, lazy: bool, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_, '_>) -> rusqlite::Result<T> + Send + 'static,
    {
        let sender = self.sender().ok_or_else(writer_stopped)?;
        let (reply, answer) = oneshot::channel();
        let request = Box::new(Request {
            lazy,
            op: Some(op),
            result: None,
            reply,
        });
        // Counted before it is sent, so the writer's count down after its
        // commit never passes the count up; counted down again here if it
        // is never sent (refused, or this future dropped while waiting).
        let mut unsent = lazy.then(|| LazyCount::up(&self.lazy_waiting));
        let ring = unsent.as_ref().is_none_or(|c| c.waiting >= LAZY_MAX);
        // Bounded: when the writer falls behind, callers wait here.
        sender.send(request).await.map_err(|_| writer_stopped())?;
        if let Some(c) = unsent.take() {
            c.sent();
        }
        drop(sender);
        if ring {
            // After the send: a writer waiting out a lazy window takes this
            // request with the ones before it (a ring with nobody waiting
            // is kept for the next wait, so it is never lost).
            self.eager_queued.notify_one();
        }
        answer.await.map_err(|_| writer_stopped())?
    }

    /// Runs `op` on a pooled read connection on a blocking thread.
    async fn read<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let pool = Arc::clone(&self.reads);
        tokio::task::spawn_blocking(move || pool.run(op))
            .await
            .map_err(|e| StoreError::Other(format!("store read task failed: {e}")))?
    }

    /// Repeats a bounded step (one write request each) until it reports no
    /// more work; answers the sum of what the steps counted.
    async fn steps<F>(&self, step: F) -> Result<u64, StoreError>
    where
        F: Fn(&mut Ctx<'_, '_>, &mut i64) -> rusqlite::Result<(u64, bool)> + Send + Sync + 'static,
    {
        let step = Arc::new(step);
        let mut cursor = 0i64;
        let mut total = 0u64;
        loop {
            let s = Arc::clone(&step);
            let (n, more, next) = self
                .write(move |c| {
                    let mut cur = cursor;
                    let (n, more) = s(c, &mut cur)?;
                    Ok((n, more, cur))
                })
                .await?;
            total += n;
            cursor = next;
            if !more {
                return Ok(total);
            }
        }
    }

    pub(super) async fn enqueue(
        &self,
        job: NewJob,
        dedup: Option<DedupKey>,
        max_pending: Option<u64>,
    ) -> Result<Enqueued, StoreError> {
        self.write(move |c| enqueue(c, &job, dedup.as_ref(), max_pending))
            .await
    }

    pub(super) async fn enqueue_fanout(
        &self,
        jobs: Vec<NewJob>,
        dedup: Option<DedupKey>,
    ) -> Result<Fanout, StoreError> {
        // One request, so one savepoint: an error in any insert rolls back
        // every job of the event and the dedup record.
        self.write(move |c| {
            let mut ids = Vec::with_capacity(jobs.len());
            for (i, job) in jobs.iter().enumerate() {
                let d = if i == 0 { dedup.as_ref() } else { None };
                match enqueue(c, job, d, None)? {
                    Enqueued::Accepted { id } => ids.push(id),
                    Enqueued::Duplicate { first_id } => return Ok(Fanout::Duplicate { first_id }),
                    Enqueued::QueueFull => unreachable_queue_full()?,
                }
            }
            Ok(Fanout::Accepted { ids })
        })
        .await
    }

    pub(super) async fn recent_labelled(
        &self,
        queue: String,
        limit: usize,
    ) -> Result<Vec<JobSummary>, StoreError> {
        let codec = self.codec;
        let leases = self.leases_of(Some(&queue));
        self.read(move |c| {
            let mut stmt =
                c.prepare_cached(&format!("SELECT {SUMMARY_COLUMNS} {LABELLED_FROM}"))?;
            let rows = stmt.query_map(params![queue, sql_int(limit)], |r| {
                summary_from_row(codec, r)
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, mut s) = row?;
                if let Some(until) = leases.get(&seq).filter(|_| s.state == JobState::Pending) {
                    s.state = JobState::Inflight;
                    s.lease_until = Some(*until);
                }
                out.push(s);
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn put_destination(&self, d: Destination) -> Result<(), StoreError> {
        self.write(move |c| {
            c.conn
                .prepare_cached(
                    "INSERT OR REPLACE INTO destination (id, project, kind, spec, sealed, active,
                         disabled_at, created_at, updated_at, last_attempt_at, last_ok,
                         exhausted_streak)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?
                .execute(params![
                    d.id,
                    d.project,
                    d.kind,
                    d.spec,
                    d.sealed,
                    d.active,
                    d.disabled_at,
                    d.created_at,
                    d.updated_at,
                    d.last_attempt_at,
                    d.last_ok,
                    d.exhausted_streak
                ])?;
            Ok(())
        })
        .await
    }

    pub(super) async fn destinations(&self) -> Result<Vec<Destination>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, project, kind, spec, sealed, active, disabled_at, created_at,
                        updated_at, last_attempt_at, last_ok, exhausted_streak
                 FROM destination ORDER BY created_at, id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(Destination {
                    id: r.get(0)?,
                    project: r.get(1)?,
                    kind: r.get(2)?,
                    spec: r.get(3)?,
                    sealed: r.get(4)?,
                    active: r.get(5)?,
                    disabled_at: r.get(6)?,
                    created_at: r.get(7)?,
                    updated_at: r.get(8)?,
                    last_attempt_at: r.get(9)?,
                    last_ok: r.get(10)?,
                    exhausted_streak: r.get(11)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    pub(super) async fn delete_destination(&self, id: String) -> Result<bool, StoreError> {
        self.write(move |c| {
            Ok(c.conn
                .prepare_cached("DELETE FROM destination WHERE id = ?1")?
                .execute([id])?
                > 0)
        })
        .await
    }

    pub(super) async fn claim(
        &self,
        queue: String,
        now: i64,
        limit: usize,
        lease_ms: i64,
        head_only: bool,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.write(move |c| claim(c, &queue, now, limit, lease_ms, head_only))
            .await
    }

    pub(super) async fn finish(
        &self,
        lease: Lease,
        attempt: Attempt,
        next: Next,
    ) -> Result<bool, StoreError> {
        self.write_lazy(move |c| finish(c, &lease, &attempt, next))
            .await
    }

    pub(super) async fn release(&self, lease: Lease) -> Result<bool, StoreError> {
        self.write(move |c| {
            let Some(held) = current_lease(c.mem, &lease) else {
                return Ok(false);
            };
            c.conn
                .prepare_cached("DELETE FROM attempt WHERE job = ?1 AND n = ?2")?
                .execute([lease.seq, held.n])?;
            c.mem.end_lease(lease.seq);
            Ok(true)
        })
        .await
    }

    pub(super) async fn set_paused(&self, queue: String, paused: bool) -> Result<(), StoreError> {
        self.write(move |c| {
            let key = format!("{PAUSED_PREFIX}{queue}");
            if paused {
                c.conn
                    .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, x'01')")?
                    .execute([key])?;
            } else {
                c.conn
                    .prepare_cached("DELETE FROM meta WHERE key = ?1")?
                    .execute([key])?;
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn paused_queues(&self) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT key FROM meta WHERE key >= ?1 AND key < ?2 ORDER BY key")?;
            let rows = stmt.query_map([PAUSED_PREFIX, PAUSED_END], |r| r.get::<_, String>(0))?;
            rows.map(|k| k.map(|k| k[PAUSED_PREFIX.len()..].to_owned()))
                .collect()
        })
        .await
    }

    pub(super) async fn replay(&self, id: String, now: i64) -> Result<bool, StoreError> {
        let codec = self.codec;
        self.write(move |c| {
            let Some(seq) = resolve(c.conn, codec, &id)? else {
                return Ok(false);
            };
            let row: Option<String> = c
                .conn
                .prepare_cached("SELECT queue FROM job WHERE seq = ?1 AND state = 3")?
                .query_row([seq], |r| r.get(0))
                .optional()?;
            let Some(queue) = row else {
                return Ok(false);
            };
            restart_job(c, seq, &queue, &queue, STATE_DEAD, now)?;
            Ok(true)
        })
        .await
    }

    pub(super) async fn replay_queue(&self, queue: String, now: i64) -> Result<u64, StoreError> {
        self.steps(move |c, cursor| {
            let rows = select_seqs(c.conn, DEAD_SEQS_SQL, &queue, *cursor)?;
            for &seq in &rows {
                restart_job(c, seq, &queue, &queue, STATE_DEAD, now)?;
                *cursor = seq;
            }
            Ok((rows.len() as u64, rows.len() == STEP_ROWS))
        })
        .await
    }

    pub(super) async fn delete_job(&self, id: String) -> Result<bool, StoreError> {
        let codec = self.codec;
        self.write(move |c| {
            let Some(seq) = resolve(c.conn, codec, &id)? else {
                return Ok(false);
            };
            let (queue, state): (String, i64) = c
                .conn
                .prepare_cached("SELECT queue, state FROM job WHERE seq = ?1")?
                .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?)))?;
            delete_row(c, seq, &queue, state)?;
            Ok(true)
        })
        .await
    }

    pub(super) async fn cancel_queue(&self, queue: String) -> Result<u64, StoreError> {
        self.steps(move |c, cursor| {
            let rows = select_seqs(
                c.conn,
                "SELECT seq FROM job WHERE queue = ?1 AND state = 0 AND seq > ?2
                 ORDER BY seq LIMIT ?3",
                &queue,
                *cursor,
            )?;
            let mut n = 0;
            for &seq in &rows {
                *cursor = seq;
                if c.mem.lease(seq).is_some() {
                    continue;
                }
                delete_row(c, seq, &queue, STATE_PENDING)?;
                n += 1;
            }
            Ok((n, rows.len() == STEP_ROWS))
        })
        .await
    }

    pub(super) async fn move_queue(
        &self,
        from: String,
        to: String,
        now: i64,
    ) -> Result<u64, StoreError> {
        if from == to {
            return Err(StoreError::Invalid(
                "source and target queue are the same".into(),
            ));
        }
        self.steps(move |c, cursor| {
            let mut rows: Vec<(i64, i64)> = Vec::new();
            {
                let mut stmt = c.conn.prepare_cached(
                    "SELECT seq, state FROM job WHERE queue = ?1 AND state IN (0, 3) AND seq > ?2
                     ORDER BY seq LIMIT ?3",
                )?;
                let mut q = stmt.query(params![from, *cursor, sql_int(STEP_ROWS)])?;
                while let Some(r) = q.next()? {
                    rows.push((r.get(0)?, r.get(1)?));
                }
            }
            let mut n = 0;
            for &(seq, state) in &rows {
                *cursor = seq;
                if c.mem.lease(seq).is_some() {
                    continue;
                }
                restart_job(c, seq, &from, &to, state, now)?;
                n += 1;
            }
            Ok((n, rows.len() == STEP_ROWS))
        })
        .await
    }

    pub(super) async fn delete_queue(&self, queue: String) -> Result<u64, StoreError> {
        self.steps(move |c, cursor| {
            let mut rows: Vec<(i64, i64)> = Vec::new();
            {
                let mut stmt = c.conn.prepare_cached(
                    "SELECT seq, state FROM job WHERE queue = ?1 AND seq > ?2
                     ORDER BY seq LIMIT ?3",
                )?;
                let mut q = stmt.query(params![queue, *cursor, sql_int(STEP_ROWS)])?;
                while let Some(r) = q.next()? {
                    rows.push((r.get(0)?, r.get(1)?));
                }
            }
            let mut n = 0;
            for &(seq, state) in &rows {
                *cursor = seq;
                if c.mem.lease(seq).is_some() {
                    continue;
                }
                delete_row(c, seq, &queue, state)?;
                n += 1;
            }
            Ok((n, rows.len() == STEP_ROWS))
        })
        .await
    }

    pub(super) async fn purge(&self, policy: PurgePolicy) -> Result<PurgeStats, StoreError> {
        self.write(move |c| purge(c, policy)).await
    }

    pub(super) async fn list_jobs(&self, filter: JobFilter) -> Result<Vec<JobSummary>, StoreError> {
        let limit = filter.limit.min(LIST_LIMIT_CAP);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let after = match &filter.after {
            None => 0,
            Some(id) => match self.codec.decode(id) {
                Some((seq, _)) => seq,
                None => {
                    // A cursor from the first layout's ids.
                    let id = id.clone();
                    self.read(move |c| {
                        c.prepare_cached("SELECT seq FROM legacy_id WHERE id = ?1")?
                            .query_row([&id], |r| r.get(0))
                            .optional()
                    })
                    .await?
                    .ok_or_else(|| {
                        StoreError::Invalid("`after` is not a job id of this store".into())
                    })?
                }
            },
        };
        let leases = self.leases_of(filter.queue.as_deref());
        let codec = self.codec;
        self.read(move |c| list_jobs(c, codec, &filter, after, limit, &leases))
            .await
    }

    /// A copy of the live leases (of one queue), by job row.
    pub(super) fn may_have_pending(&self, queue: &str) -> bool {
        match self.mem.try_lock() {
            Ok(m) => m.counts_of(queue).pending > 0,
            // Held by the writer (or poisoned): do not wait, say maybe.
            Err(_) => true,
        }
    }

    fn leases_of(&self, queue: Option<&str>) -> HashMap<i64, i64> {
        lock(&self.mem)
            .leases
            .iter()
            .filter(|(_, l)| queue.is_none_or(|q| l.queue == q))
            .map(|(seq, l)| (*seq, l.until))
            .collect()
    }

    pub(super) async fn get_job(&self, id: String) -> Result<Option<JobDetail>, StoreError> {
        let codec = self.codec;
        let detail = self
            .read(move |c| {
                // One read transaction: the job and its attempts from one snapshot.
                let tx = c.unchecked_transaction()?;
                let Some(seq) = resolve(&tx, codec, &id)? else {
                    return Ok(None);
                };
                let head = tx
                    .prepare_cached(&format!(
                        "SELECT {SUMMARY_COLUMNS},
                                COALESCE(plen, (SELECT length(body) FROM payload p
                                                WHERE p.seq = job.seq AND job.state <> 2))
                         FROM job WHERE seq = ?1"
                    ))?
                    .query_row([seq], |r| {
                        let len: Option<i64> = r.get(SUMMARY_COLUMN_COUNT)?;
                        Ok((summary_from_row(codec, r)?, len.map(count)))
                    })
                    .optional()?;
                let Some(((seq, summary), payload_len)) = head else {
                    return Ok(None);
                };
                let mut stmt = tx.prepare_cached(
                    "SELECT n, started_at, duration_ms, outcome, http_status, error, response_body
                     FROM attempt WHERE job = ?1 ORDER BY n",
                )?;
                let attempts = stmt
                    .query_map([seq], |r| {
                        Ok(AttemptRecord {
                            n: r.get(0)?,
                            started_at: r.get(1)?,
                            duration_ms: r.get(2)?,
                            outcome: r.get(3)?,
                            http_status: r.get(4)?,
                            error: r.get(5)?,
                            response_body: r.get(6)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(Some((
                    seq,
                    JobDetail {
                        summary,
                        payload_len,
                        attempts,
                    },
                )))
            })
            .await?;
        Ok(detail.map(|(seq, mut d)| {
            let leased = lock(&self.mem).leases.get(&seq).map(|l| l.until);
            if let Some(until) = leased.filter(|_| d.summary.state == JobState::Pending) {
                d.summary.state = JobState::Inflight;
                d.summary.lease_until = Some(until);
            }
            d
        }))
    }

    pub(super) async fn get_payload(&self, id: String) -> Result<Option<Vec<u8>>, StoreError> {
        let codec = self.codec;
        let segments = self.segments.clone();
        self.read(move |c| {
            let Some(seq) = resolve(c, codec, &id)? else {
                return Ok(None);
            };
            let row = c
                .prepare_cached(
                    "SELECT pseg, poff, plen, (SELECT body FROM payload p WHERE p.seq = j.seq)
                     FROM job j WHERE j.seq = ?1 AND j.state <> 2",
                )?
                .query_row([seq], |r| {
                    Ok((
                        PayloadRef::from_columns(r.get(0)?, r.get(1)?, r.get(2)?),
                        r.get::<_, Option<Vec<u8>>>(3)?,
                    ))
                })
                .optional()?;
            match row {
                None => Ok(None),
                Some((Some(at), _)) => match segments.read(at, seq) {
                    Ok(body) => Ok(Some(body)),
                    // Delivered since the row was read: the segment is gone.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(plog_err(e)),
                },
                Some((None, body)) => Ok(body),
            }
        })
        .await
    }

    pub(super) async fn stats(&self, now: i64) -> Result<Vec<QueueStats>, StoreError> {
        let mut stats: Vec<QueueStats> = lock(&self.mem)
            .counts
            .iter()
            .filter(|(_, c)| c.pending + c.done + c.dead > 0)
            .map(|(q, c)| QueueStats {
                queue: q.clone(),
                pending: c.pending.saturating_sub(c.leased),
                inflight: c.leased,
                dead: c.dead,
                done: c.done,
                oldest_pending_age_ms: None,
            })
            .collect();
        stats.sort_by(|a, b| a.queue.cmp(&b.queue));
        let queues: Vec<String> = stats
            .iter()
            .filter(|s| s.pending + s.inflight > 0)
            .map(|s| s.queue.clone())
            .collect();
        if queues.is_empty() {
            return Ok(stats);
        }
        // The oldest pending job of a queue is its first pending row in row
        // order. Jobs leave pending roughly in that order, so the walk starts
        // from where the last one found it (`pending_floor`, lowered when a
        // replay or move makes an older job pending again) and only crosses
        // rows finished since. `NOT INDEXED`: a row-key range, never a sort
        // of the whole backlog through `job_due`.
        let floors: Vec<(String, i64, u64)> = {
            let m = lock(&self.mem);
            queues
                .iter()
                .map(|q| {
                    let (floor, generation) = m.pending_floor(q);
                    (q.clone(), floor, generation)
                })
                .collect()
        };
        let found = self
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT seq, created_at FROM job NOT INDEXED
                     WHERE seq >= ?1 AND queue = ?2 AND state = 0 ORDER BY seq LIMIT 1",
                )?;
                let mut out = Vec::new();
                for (q, floor, generation) in floors {
                    let row: Option<(i64, i64)> = stmt
                        .query_row(params![floor, q], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    if let Some((seq, created)) = row {
                        out.push((q, seq, created, generation));
                    }
                }
                Ok(out)
            })
            .await?;
        let mut oldest = HashMap::new();
        {
            let mut m = lock(&self.mem);
            for (q, seq, created, generation) in found {
                m.raise_pending_floor(&q, seq, generation);
                oldest.insert(q, created);
            }
        }
        for s in &mut stats {
            s.oldest_pending_age_ms = oldest.get(&s.queue).map(|t| now.saturating_sub(*t).max(0));
        }
        Ok(stats)
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        match self.sender() {
            Some(sender) if !sender.is_closed() => {}
            _ => return Err(writer_stopped()),
        }
        self.read(|c| c.query_row("SELECT COUNT(*) FROM schema_version", [], |_| Ok(())))
            .await
    }

    pub(super) fn commit_stats(&self) -> CommitStats {
        CommitStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
        }
    }

    pub(super) fn dedup_keys(&self) -> u64 {
        self.counters.dedup_keys.load(Ordering::Relaxed)
    }

    pub(super) fn close(&self) {
        if lock(&self.writer).take().is_some() {
            debug!("store closing");
        }
    }

    pub(super) async fn shutdown(&self) {
        self.close();
        let threads = std::mem::take(&mut *lock(&self.threads));
        if threads.is_empty() {
            return;
        }
        // Joining blocks; keep it off the runtime threads.
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                if t.join().is_err() {
                    warn!("store thread panicked");
                }
            }
        })
        .await;
        if let Err(e) = joined {
            warn!(error = %e, "store shutdown join failed");
        }
    }
}

/// Answers the requests of each committed batch from a task of the runtime
/// the store was opened on. Answered one by one from the writer thread,
/// each answer woke the runtime from outside (an `eventfd` write per
/// request, about one system call per request); handed over as one batch,
/// it is one wake per commit. Without a runtime the writer answers itself.
fn spawn_completer() -> Option<mpsc::UnboundedSender<Answered>> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Answered>();
    handle.spawn(async move {
        while let Some((answered, error)) = rx.recv().await {
            for request in answered {
                request.complete(error.as_ref());
            }
        }
    });
    Some(tx)
}

fn spawn_thread(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, StoreError> {
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|e| StoreError::Unavailable(format!("cannot start thread {name}: {e}")))
}

// ---------------------------------------------------------------------------
// Rebuilding memory at open
// ---------------------------------------------------------------------------

/// Retires the payload segments no job row points into (never the active
/// one), after a commit: kept as spares or deleted (`SegmentFiles::retire`).
fn retire_unused_segments(
    plog: &mut PayloadLog,
    mem: &mut Mem,
    reaper: Option<&std_mpsc::SyncSender<CkptMsg>>,
) {
    let active = plog.active();
    let unused: Vec<u32> = plog
        .on_disk()
        .filter(|s| *s != active && mem.segs.get(s).is_none_or(|u| u.jobs == 0))
        .collect();
    for seg in unused {
        // Unlinking a full segment takes the filesystem ~10 ms or more
        // (freeing 64 MiB of extents): the checkpointer thread retires it,
        // not the writer, whose batch is waiting for its answers. Should that
        // thread's queue be full, or at open, it is done here.
        let path = plog.forget(seg);
        let path = match reaper.map(|tx| tx.try_send(CkptMsg::Retire(path.clone()))) {
            Some(Ok(())) => continue,
            _ => path,
        };
        match plog.files().retire(&path) {
            Ok(how) => trace!(segment = seg, ?how, "payload segment retired"),
            // A file nothing points at: the next open retires it.
            Err(e) => warn!(segment = seg, error = %e, "could not retire a payload segment"),
        }
    }
    // An unused segment counts as one without an entry.
    mem.segs.retain(|s, u| u.jobs > 0 || *s >= active);
}

/// Drops the jobs of the newest batch if a power loss kept its commit but
/// not all of its payloads. A batch's payload segment and its WAL commit are
/// synced at the same time (see `Writer::apply_batch`), and nothing of it
/// is answered before both are done, so such a batch was never answered:
/// its senders still hold their webhooks and send them again. Only the
/// newest batch can be one (each batch waits for both syncs before the
/// next begins), and its rows are those whose payload starts at or past
/// the `psync` (the log position synced before the batch) of the newest
/// row. Each of those payloads is read back and checked against the row
/// (header and CRC-32); if any did not survive, the whole batch goes — its
/// job rows, their attempts (a claim in the same batch) and their dedup
/// records — so an event is never half there. Answers how many jobs went.
/// Runs inside the transaction of the open's checks, so an open that fails
/// for another reason changes nothing.
fn drop_unsynced_tail(conn: &Connection, files: &SegmentFiles) -> Result<u64, StoreError> {
    let newest: Option<Option<i64>> = conn
        .query_row(
            "SELECT psync FROM job WHERE pseg IS NOT NULL ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    // Written by a build that synced the payloads before the commit.
    let Some(Some(synced)) = newest else {
        return Ok(0);
    };
    let mut tail: Vec<i64> = Vec::new();
    let mut damaged = 0u64;
    {
        let mut stmt = conn
            .prepare("SELECT seq, pseg, poff, plen, pcrc FROM job WHERE pseg IS NOT NULL ORDER BY seq DESC")
            .map_err(db_err)?;
        let mut rows = stmt.query([]).map_err(db_err)?;
        while let Some(r) = rows.next().map_err(db_err)? {
            let seq: i64 = r.get(0).map_err(db_err)?;
            let at = PayloadRef::from_columns(
                r.get(1).map_err(db_err)?,
                r.get(2).map_err(db_err)?,
                r.get(3).map_err(db_err)?,
            )
            .ok_or_else(|| StoreError::Corrupt(format!("job {seq}: payload location")))?;
            if plog::position(at.seg, at.off) < synced {
                break;
            }
            let crc: Option<i64> = r.get(4).map_err(db_err)?;
            let intact = match files.read(at, seq) {
                Ok(body) => crc.is_none_or(|c| i64::from(crc32fast::hash(&body)) == c),
                Err(_) => false,
            };
            if !intact {
                damaged += 1;
            }
            tail.push(seq);
        }
    }
    if damaged == 0 {
        return Ok(0);
    }
    // Collected newest first: the last is the batch's first row.
    let first = tail.last().copied().unwrap_or(0);
    let tx = conn;
    {
        // The batch's dedup records are the newest ones (appended with its
        // jobs, in the same order).
        let mut records: Vec<i64> = Vec::new();
        let mut stmt = tx
            .prepare("SELECT seq, job FROM dedup_record ORDER BY seq DESC")
            .map_err(db_err)?;
        let mut rows = stmt.query([]).map_err(db_err)?;
        while let Some(r) = rows.next().map_err(db_err)? {
            let job: i64 = r.get(1).map_err(db_err)?;
            if job < first {
                break;
            }
            if tail.contains(&job) {
                records.push(r.get(0).map_err(db_err)?);
            }
        }
        drop(rows);
        for seq in records {
            tx.execute("DELETE FROM dedup_record WHERE seq = ?1", [seq])
                .map_err(db_err)?;
        }
        for seq in &tail {
            tx.execute("DELETE FROM attempt WHERE job = ?1", [seq])
                .map_err(db_err)?;
            tx.execute("DELETE FROM job WHERE seq = ?1", [seq])
                .map_err(db_err)?;
        }
        // The dropped rows' numbers (and so their ids) are never given out
        // again.
        let newest = tail.first().copied().unwrap_or(0);
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('seq_floor', ?1)
             ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
            [newest],
        )
        .map_err(db_err)?;
    }
    warn!(
        jobs = tail.len(),
        damaged,
        "a power loss kept the last commit without all of its payloads: its jobs were dropped \
         (none of them had been answered, so their senders send them again)"
    );
    Ok(tail.len() as u64)
}

/// Rebuilds the memory of a store from its file: counters from the job
/// rows; payload segment use, checked against the segments `found` on disk
/// (a job row pointing past the end of its segment, or into a missing one,
/// is corruption); and the dedup index from the dedup records (newest
/// record per fingerprint wins). Leases start empty: this process owns the
/// file, so nothing is claimed when it opens.
fn rebuild(
    conn: &Connection,
    fpr: &Fingerprinter,
    found: &[(u32, u64)],
) -> Result<Mem, StoreError> {
    let mut mem = Mem::new();
    let max_seq: i64 = conn
        .query_row(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM job), 0),
                        COALESCE((SELECT value FROM meta WHERE key = 'seq_floor'), 0))",
            [],
            |r| r.get(0),
        )
        .map_err(db_err)?;
    mem.set_next_seq(max_seq + 1);
    let mut seg_end: HashMap<u32, i64> = HashMap::new();
    {
        // One pass over the jobs: counts per queue and state, and per
        // payload segment the rows pointing into it and where they end.
        let mut stmt = conn
            .prepare(
                "SELECT queue, state, COUNT(*), pseg, SUM(plen), MAX(poff + plen)
                 FROM job GROUP BY queue, state, pseg",
            )
            .map_err(db_err)?;
        let mut rows = stmt.query([]).map_err(db_err)?;
        while let Some(r) = rows.next().map_err(db_err)? {
            let queue: String = r.get(0).map_err(db_err)?;
            let state: i64 = r.get(1).map_err(db_err)?;
            let n: i64 = r.get(2).map_err(db_err)?;
            if let Some(seg) = r.get::<_, Option<i64>>(3).map_err(db_err)? {
                let seg = u32::try_from(seg)
                    .map_err(|_| StoreError::Corrupt(format!("payload segment {seg}")))?;
                let bytes: i64 = r.get::<_, Option<i64>>(4).map_err(db_err)?.unwrap_or(0);
                let end: i64 = r.get::<_, Option<i64>>(5).map_err(db_err)?.unwrap_or(0);
                let jobs = u64::try_from(n).unwrap_or(0);
                let u = mem.segs.entry(seg).or_default();
                u.jobs += jobs;
                u.bytes += u64::try_from(bytes).unwrap_or(0) + jobs * plog::HEADER_LEN;
                let e = seg_end.entry(seg).or_insert(0);
                *e = (*e).max(end.saturating_add(sql_int(plog::HEADER_LEN)));
            }
            let field = match state {
                STATE_PENDING => Field::Pending,
                STATE_DONE => Field::Done,
                STATE_DEAD => Field::Dead,
                other => {
                    return Err(StoreError::Corrupt(format!("unknown job state {other}")));
                }
            };
            mem.count(&queue, field, n);
        }
    }
    for (seg, end) in seg_end {
        let len = found.iter().find(|(id, _)| *id == seg).map(|(_, len)| *len);
        match len {
            None => {
                return Err(StoreError::Corrupt(format!(
                    "payload segment {seg} is missing, and {} pending jobs have their \
                     payload in it",
                    mem.segs.get(&seg).map_or(0, |u| u.jobs)
                )))
            }
            Some(len) if sql_int(len) < end => {
                return Err(StoreError::Corrupt(format!(
                    "payload segment {seg} ends at byte {len}, but jobs point up to byte {end}"
                )))
            }
            Some(_) => {}
        }
    }
    let mut stmt = conn
        .prepare("SELECT seq, fp, scope, key FROM dedup_record ORDER BY seq")
        .map_err(db_err)?;
    let mut rows = stmt.query([]).map_err(db_err)?;
    // Scope names repeat on every row; count per scope with a borrowed key.
    // The first row of a scope is where its purge and eviction start.
    let mut per_scope: HashMap<String, (u64, i64)> = HashMap::new();
    while let Some(r) = rows.next().map_err(db_err)? {
        let seq: i64 = r.get(0).map_err(db_err)?;
        let scope = r
            .get_ref(2)
            .map_err(db_err)?
            .as_str()
            .map_err(|e| StoreError::Corrupt(format!("dedup record scope: {e}")))?;
        let fp = match r.get_ref(1).map_err(db_err)?.as_blob_or_null() {
            Ok(Some(b)) => fp_from_bytes(b)
                .ok_or_else(|| StoreError::Corrupt("dedup record fingerprint".into()))?,
            // Records carried over from schema 2 have none yet.
            _ => {
                let key: String = r.get(3).map_err(db_err)?;
                fpr.fp(scope, &key)
            }
        };
        let fresh = mem.index_dedup(fp, seq);
        let add = u64::from(fresh);
        match per_scope.get_mut(scope) {
            Some((n, _)) => *n += add,
            None => {
                per_scope.insert(scope.to_owned(), (add, seq));
            }
        }
    }
    for (scope, (n, first)) in per_scope {
        let s = mem.scopes.entry(scope).or_default();
        s.keys = n;
        s.purge_from = first;
        s.evict_from = first;
    }
    Ok(mem)
}

/// Forgets the oldest keys of every scope holding more than its limit.
/// Memory only: the records stay until they expire (and are skipped again
/// at the next open). Answers how many keys were forgotten.
///
/// A scope over its limit is brought a little below it (1/64 of the limit,
/// at most [`EVICT_SLACK_MAX`] keys), so a full scope pays for one eviction
/// scan every so many inserts rather than on each.
fn evict_over_limit(conn: &Connection, mem: &mut Mem, env: &WriterEnv) -> Result<u64, StoreError> {
    let over: Vec<(String, u64)> = mem
        .scopes
        .iter()
        .filter_map(|(s, info)| {
            let max = env.max_keys(s);
            let slack = (max / 64).min(EVICT_SLACK_MAX);
            (info.keys > max).then(|| (s.clone(), info.keys - max + slack))
        })
        .collect();
    if over.is_empty() {
        return Ok(0);
    }
    let mut total = 0;
    for (scope, mut excess) in over {
        let mut from = mem.scopes.get(&scope).map_or(0, |s| s.evict_from);
        let mut evicted = 0u64;
        while excess > 0 {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, fp, scope, key FROM dedup_record WHERE seq >= ?1
                     ORDER BY seq LIMIT ?2",
                )
                .map_err(db_err)?;
            let mut rows = stmt.query(params![from, EVICT_SCAN_ROWS]).map_err(db_err)?;
            let mut seen = 0;
            while let Some(r) = rows.next().map_err(db_err)? {
                seen += 1;
                let seq: i64 = r.get(0).map_err(db_err)?;
                from = seq + 1;
                let s: String = r.get(2).map_err(db_err)?;
                if s != scope {
                    continue;
                }
                let blob: Option<Vec<u8>> = r.get(1).map_err(db_err)?;
                let fp = match blob.as_deref().and_then(fp_from_bytes) {
                    Some(fp) => fp,
                    None => env.fpr.fp(&s, &r.get::<_, String>(3).map_err(db_err)?),
                };
                if mem.dedup.points_at(fp, seq) {
                    mem.set_dedup(fp, None);
                    mem.scope_keys(&scope, -1);
                    evicted += 1;
                    excess -= 1;
                    if excess == 0 {
                        break;
                    }
                }
            }
            if seen == 0 {
                break;
            }
        }
        mem.scopes.entry(scope.clone()).or_default().evict_from = from;
        if evicted > 0 {
            warn!(
                scope = %scope,
                evicted,
                max_keys = env.max_keys(&scope),
                "dedup keys over the scope's max_keys: the oldest were forgotten before their \
                 window ended (a late retry of those events is no longer recognised)"
            );
            env.metrics
                .dedup_evicted
                .with_label_values(&[&scope])
                .inc_by(evicted);
        }
        total += evicted;
    }
    Ok(total)
}

// ---------------------------------------------------------------------------
// Writer thread (group commit)
// ---------------------------------------------------------------------------

/// What a write request sees: the savepoint's connection and the memory.
pub(super) struct Ctx<'a, 'c> {
    pub(super) conn: &'c Connection,
    pub(super) mem: &'a mut Mem,
    plog: &'a mut PayloadLog,
    env: &'a WriterEnv,
    hot: &'a mut Hot<'c>,
}

/// The statements every webhook's lifecycle runs (enqueue, claim, finish),
/// held for the whole batch: taken from the statement cache and given back
/// at every use, each cost a hash of its SQL text and a cache insert, ~1.5k
/// instructions, several times a request.
#[derive(Clone, Copy)]
enum HotSql {
    InsertJob,
    InsertDedup,
    InsertAttempt,
    FinishAttempt,
    FinishJob,
}

const HOT_SQL_COUNT: usize = 5;

impl HotSql {
    fn sql(self) -> &'static str {
        match self {
            HotSql::InsertJob => {
                "INSERT INTO job (seq, queue, kind, state, cycle_base, cycle_start, created_at,
                                  next_at, updated_at, pseg, poff, plen, label, pcrc, psync)
                 VALUES (?1, ?2, ?3, 0, 0, ?4, ?4, ?5, ?4, ?6, ?7, ?8, ?9, ?10, ?11)"
            }
            HotSql::InsertDedup => {
                "INSERT INTO dedup_record (fp, scope, key, job, job_created, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            }
            HotSql::InsertAttempt => {
                "INSERT INTO attempt (job, n, started_at, outcome) VALUES (?1, ?2, ?3, ?4)"
            }
            HotSql::FinishAttempt => {
                "UPDATE attempt SET started_at = ?3, duration_ms = ?4, outcome = ?5,
                                    http_status = ?6, error = ?7, response_body = ?8
                 WHERE job = ?1 AND n = ?2"
            }
            HotSql::FinishJob => {
                "UPDATE job SET state = ?2, next_at = COALESCE(?3, next_at), updated_at = ?4,
                                last_status = ?5, last_error = ?6,
                                pseg = NULL, poff = NULL, plen = NULL
                 WHERE seq = ?1"
            }
        }
    }
}

/// The [`HotSql`] statements of one batch, prepared at first use.
#[derive(Default)]
struct Hot<'c> {
    stmts: [Option<CachedStatement<'c>>; HOT_SQL_COUNT],
}

impl<'c> Hot<'c> {
    fn get(
        &mut self,
        conn: &'c Connection,
        which: HotSql,
    ) -> rusqlite::Result<&mut CachedStatement<'c>> {
        let slot = &mut self.stmts[which as usize];
        if slot.is_none() {
            *slot = Some(conn.prepare_cached(which.sql())?);
        }
        slot.as_mut().ok_or_else(|| rusqlite::Error::InvalidQuery)
    }
}

/// A type-erased write request: applied inside the batch transaction, then
/// completed once the batch has committed or failed.
trait PendingWrite: Send {
    /// Whether the request may wait (up to [`LAZY_WAIT`]) for other writes
    /// to share its commit.
    fn lazy(&self) -> bool;
    /// Runs the request; `false` if it failed (its savepoint and memory
    /// effects are then rolled back).
    fn apply(&mut self, ctx: &mut Ctx<'_, '_>) -> bool;
    /// Sends the answer: the request's own error if it failed, else the
    /// batch's error if the commit failed, else its result.
    fn complete(self: Box<Self>, batch_error: Option<&StoreError>);
}

struct Request<T, F> {
    lazy: bool,
    op: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> PendingWrite for Request<T, F>
where
    T: Send,
    F: FnOnce(&mut Ctx<'_, '_>) -> rusqlite::Result<T> + Send,
{
    fn lazy(&self) -> bool {
        self.lazy
    }

    fn apply(&mut self, ctx: &mut Ctx<'_, '_>) -> bool {
        let Some(op) = self.op.take() else {
            return false;
        };
        let result = op(ctx).map_err(db_err);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn complete(self: Box<Self>, batch_error: Option<&StoreError>) {
        let answer = match (self.result, batch_error) {
            (Some(Err(e)), _) => Err(e),
            (_, Some(e)) => Err(e.clone()),
            (Some(Ok(v)), None) => Ok(v),
            (None, None) => Err(StoreError::Other("write request was not applied".into())),
        };
        // The caller may have given up waiting; the write stands regardless.
        let _ = self.reply.send(answer);
    }
}

enum CkptMsg {
    /// Run a passive checkpoint soon.
    Nudge,
    /// Run a passive checkpoint now and say when it is done.
    Flush(std_mpsc::SyncSender<()>),
    /// Retire this payload segment file (no committed row points into it).
    Retire(PathBuf),
}

/// A committed (or failed) batch on its way to the task that answers it.
type Answered = (Vec<Box<dyn PendingWrite>>, Option<StoreError>);

/// Segment files to `fdatasync`, and where to say how it went.
type SegmentSync = (Vec<Arc<File>>, std_mpsc::SyncSender<std::io::Result<()>>);

/// The segment syncer thread: syncs the payload segments a batch wrote
/// while the writer commits it (see `Writer::apply_batch`). `fail_next`
/// makes the next sync fail (tests set it; nothing else does).
fn run_segment_syncer(rx: std_mpsc::Receiver<SegmentSync>, fail_next: &AtomicBool) {
    while let Ok((files, done)) = rx.recv() {
        let synced = if fail_next.swap(false, Ordering::AcqRel) {
            Err(std::io::Error::other("injected sync failure"))
        } else {
            files.iter().try_for_each(|f| f.sync_data())
        };
        let _ = done.send(synced);
    }
    debug!("store segment syncer stopped");
}

/// One lazy request in `SqliteBackend::lazy_waiting`, until it is sent
/// (then the writer counts it down once its batch is answered).
struct LazyCount<'a> {
    count: &'a AtomicUsize,
    /// The count with this request in it.
    waiting: usize,
}

impl<'a> LazyCount<'a> {
    fn up(count: &'a AtomicUsize) -> Self {
        let waiting = count.fetch_add(1, Ordering::AcqRel) + 1;
        LazyCount { count, waiting }
    }

    /// Sent: the writer's to count down now.
    fn sent(self) {
        std::mem::forget(self);
    }
}

impl Drop for LazyCount<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Writer {
    /// See `SqliteBackend::eager_queued` and `lazy_waiting`.
    eager_queued: Arc<Notify>,
    lazy_waiting: Arc<AtomicUsize>,
    /// Longest a lazy request waits for others to share its commit.
    lazy_wait: Duration,
    conn: Connection,
    plog: PayloadLog,
    /// The segment syncer's queue (see `run_segment_syncer`).
    psync: std_mpsc::Sender<SegmentSync>,
    /// Set when a payload segment could not be synced: nothing more is
    /// written (the kernel may have dropped the pages), every request is
    /// refused until a restart.
    poisoned: Arc<AtomicBool>,
    /// Where answered batches go to be completed on the runtime (see
    /// `spawn_completer`); `None`: the writer completes them itself.
    completer: Option<mpsc::UnboundedSender<Answered>>,
    mem: Arc<Mutex<Mem>>,
    env: WriterEnv,
    counters: Arc<Counters>,
    ckpt: std_mpsc::SyncSender<CkptMsg>,
    since_nudge: u64,
    /// Set by the checkpointer when the WAL has grown past its bound.
    restart_wanted: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Box<dyn PendingWrite>>) {
        // The gauges hold what open found until the first commit.
        self.publish_gauges();
        // Only to wait for the channel with a deadline.
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| warn!(error = %e, "store writer: no timer, lazy writes commit at once"))
            .ok();
        let mut batch: Vec<Box<dyn PendingWrite>> = Vec::with_capacity(BATCH_MAX);
        // When the oldest lazy request of `batch` arrived; whether any request
        // in it is eager (then it commits as soon as the channel is drained).
        let mut lazy_since: Option<Instant> = None;
        let mut eager = false;
        let mut open = true;
        // Ends when every sender is gone (closed) and everything is applied.
        while open || !batch.is_empty() {
            let next = if !open {
                None
            } else if let (Some(since), Some(timer)) = (lazy_since, &timer) {
                // Only lazy requests wait: for an eager request, or their
                // deadline. Not for the channel itself: each lazy request
                // sent would wake this thread (a futex call on the sender's
                // side, a context switch here) only to wait again. Whatever
                // is queued is taken below, in order, once either comes.
                let left = self.lazy_wait.saturating_sub(since.elapsed());
                // The timeout is made inside the timer's runtime.
                let _ = timer.block_on(async {
                    tokio::time::timeout(left, self.eager_queued.notified()).await
                });
                // A sender gone while waiting shows as a closed channel
                // below, once the queue is empty.
                None
            } else if batch.is_empty() {
                let r = rx.blocking_recv();
                open = r.is_some();
                r
            } else {
                None
            };
            let mut push = |r: Box<dyn PendingWrite>, batch: &mut Vec<Box<dyn PendingWrite>>| {
                if r.lazy() {
                    lazy_since.get_or_insert_with(Instant::now);
                } else {
                    eager = true;
                }
                batch.push(r);
            };
            if let Some(r) = next {
                push(r, &mut batch);
            }
            while batch.len() < BATCH_MAX {
                match rx.try_recv() {
                    Ok(request) => push(request, &mut batch),
                    Err(_) => break,
                }
            }
            let due = eager
                || !open
                || timer.is_none()
                || batch.len() >= LAZY_MAX
                || lazy_since.is_some_and(|t| t.elapsed() >= self.lazy_wait);
            if batch.is_empty() || !due {
                continue;
            }
            eager = false;
            lazy_since = None;
            let started = Instant::now();
            let outcome = if self.poisoned.load(Ordering::Acquire) {
                Err(StoreError::Unavailable(
                    "a payload segment could not be synced to disk; restart hookgate".into(),
                ))
            } else {
                self.apply_batch(&mut batch)
            };
            let served = batch.len() as u64;
            match &outcome {
                Ok(()) => {
                    self.env.metrics.commit_batch.observe(served as f64);
                    self.env
                        .metrics
                        .commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    // Counted before replying, so a caller that got its answer
                    // sees its commit in `commit_stats`.
                    self.counters.commits.fetch_add(1, Ordering::Relaxed);
                    self.counters.requests.fetch_add(served, Ordering::Relaxed);
                    self.publish_gauges();
                    self.since_nudge += served;
                    if self.since_nudge >= CHECKPOINT_NUDGE_REQUESTS {
                        self.since_nudge = 0;
                        // Full means a nudge is already pending: fine.
                        let _ = self.ckpt.try_send(CkptMsg::Nudge);
                    }
                }
                Err(e) => warn!(error = %e, requests = served, "store write batch failed"),
            }
            let error = outcome.err();
            let lazies = batch.iter().filter(|r| r.lazy()).count();
            self.lazy_waiting.fetch_sub(lazies, Ordering::AcqRel);
            let answered = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_MAX));
            let direct = match &self.completer {
                Some(tx) => tx.send((answered, error)).err().map(|e| e.0),
                None => Some((answered, error)),
            };
            if let Some((answered, error)) = direct {
                for request in answered {
                    request.complete(error.as_ref());
                }
            }
            if self.restart_wanted.swap(false, Ordering::Relaxed) {
                self.let_wal_restart();
            }
        }
        // What the trash still holds goes now (a crash instead leaves those
        // payloads to the purge of their delivered jobs).
        if lock(&self.mem).trash_len() > 0 {
            let result = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)
                .and_then(|tx| {
                    flush_trash(&tx, &mut lock(&self.mem))?;
                    tx.commit().map_err(db_err)
                });
            let mut m = lock(&self.mem);
            match result {
                Ok(()) => m.commit(),
                Err(e) => {
                    m.rollback_to(0);
                    warn!(error = %e, "could not delete delivered payloads at shutdown");
                }
            }
        }
        debug!("store writer stopped");
    }

    /// Applies a batch in one IMMEDIATE transaction, each request in its own
    /// savepoint, and commits once. `Err` means nothing of the batch
    /// committed, and memory is as it was before the batch.
    fn apply_batch(&mut self, batch: &mut [Box<dyn PendingWrite>]) -> Result<(), StoreError> {
        let mem = Arc::clone(&self.mem);
        let Writer {
            conn,
            plog,
            env,
            ckpt,
            psync,
            poisoned,
            ..
        } = self;
        // Set when the commit stands but its payloads could not be synced.
        let mut after_commit: Option<StoreError> = None;
        let result = (|| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            {
                let mut m = lock(&mem);
                // One savepoint per request, by cached statements: parsing
                // `SAVEPOINT`/`RELEASE` anew per request was a visible share
                // of the writer's CPU.
                // Prepared once per batch (see `HotSql`).
                let run = |sql: &str| -> Result<(), StoreError> {
                    tx.prepare_cached(sql)
                        .and_then(|mut s| s.execute([]))
                        .map(|_| ())
                        .map_err(db_err)
                };
                let mut savepoint = tx.prepare_cached("SAVEPOINT request").map_err(db_err)?;
                let mut release = tx.prepare_cached("RELEASE request").map_err(db_err)?;
                let mut hot = Hot::default();
                for request in batch.iter_mut() {
                    savepoint.execute([]).map_err(db_err)?;
                    let mark = m.mark();
                    let ok = request.apply(&mut Ctx {
                        conn: &tx,
                        mem: &mut m,
                        plog,
                        env,
                        hot: &mut hot,
                    });
                    // SQLite may roll back the whole transaction on some
                    // errors (disk full, I/O); then nothing of this batch
                    // can commit, and the savepoint is gone too.
                    if tx.is_autocommit() {
                        return Err(StoreError::Unavailable(
                            "write transaction was rolled back by the database".into(),
                        ));
                    }
                    if !ok {
                        m.rollback_to(mark);
                        // Undo only this request's writes.
                        run("ROLLBACK TO request")?;
                    }
                    release.execute([]).map_err(db_err)?;
                }
                // Memory only, and undone with the batch if it fails: the
                // key count never exceeds its bound when answers go out.
                evict_over_limit(&tx, &mut m, env)?;
                if m.trash_len() >= TRASH_FLUSH {
                    flush_trash(&tx, &mut m)?;
                }
            }
            // The payloads the batch appended are written, and synced by
            // the segment syncer while SQLite writes and syncs the commit:
            // two waits for the disk at once instead of one after the
            // other. A power loss may then keep the commit without all of
            // its payloads; nothing of the batch is answered before both
            // syncs, and each job row records what was synced before its
            // batch, so the next open finds such a batch and drops its jobs
            // (`drop_unsynced_tail`).
            let syncing = if plog.has_pending() {
                let files = plog.write_pending().map_err(plog_store_err)?;
                let (done_tx, done_rx) = std_mpsc::sync_channel(1);
                match psync.send((files, done_tx)) {
                    Ok(()) => Some(done_rx),
                    Err(std_mpsc::SendError((files, _))) => {
                        // No syncer (it cannot stop before the writer): sync
                        // here, before the commit.
                        for f in &files {
                            f.sync_data().map_err(plog_store_err)?;
                        }
                        plog.mark_synced();
                        None
                    }
                }
            } else {
                None
            };
            let committed = tx.commit().map_err(db_err);
            if let Some(done) = syncing {
                let synced = done
                    .recv()
                    .unwrap_or_else(|_| Err(std::io::Error::other("segment syncer stopped")));
                match (&committed, synced) {
                    (_, Ok(())) => plog.mark_synced(),
                    (Ok(()), Err(e)) => {
                        // The kernel may have dropped pages it could not
                        // write; a later sync that succeeds proves nothing
                        // about them. Stop writing until a restart, whose
                        // open checks this batch's payloads.
                        poisoned.store(true, Ordering::Release);
                        tracing::error!(error = %e, "cannot sync a payload segment: refusing writes until restart");
                        after_commit = Some(StoreError::Unavailable(format!(
                            "cannot sync a payload segment to disk: {e}"
                        )));
                    }
                    (Err(_), Err(_)) => {}
                }
            }
            committed
        })();
        let mut m = lock(&mem);
        match &result {
            Ok(()) => {
                m.commit();
                retire_unused_segments(plog, &mut m, Some(ckpt));
            }
            Err(_) => {
                m.rollback_to(0);
                plog.abandon();
            }
        }
        match after_commit {
            Some(e) => Err(e),
            None => result,
        }
    }

    /// Publishes the dedup key count and the payload segment gauges.
    fn publish_gauges(&self) {
        let (keys, live) = {
            let m = lock(&self.mem);
            (
                m.dedup.len() as u64,
                m.segs.values().map(|u| u.bytes).sum::<u64>(),
            )
        };
        let segments = self.plog.on_disk().count();
        self.env
            .metrics
            .payload_segments
            .set(i64::try_from(segments).unwrap_or(i64::MAX));
        self.env
            .metrics
            .payload_bytes
            .set(i64::try_from(live).unwrap_or(i64::MAX));
        self.counters.dedup_keys.store(keys, Ordering::Relaxed);
        self.env.metrics.dedup_keys.set(keys as i64);
    }

    /// Between two batches, with no transaction open: one more passive
    /// checkpoint (only the frames since the last pass are left to copy)
    /// lets the next commit write the WAL from its start again.
    fn let_wal_restart(&mut self) {
        let (done_tx, done_rx) = std_mpsc::sync_channel(1);
        if self.ckpt.try_send(CkptMsg::Flush(done_tx)).is_ok() {
            let started = Instant::now();
            let _ = done_rx.recv_timeout(WAL_RESTART_WAIT);
            debug!(
                waited_us = started.elapsed().as_micros() as u64,
                "writer paused for the WAL to start over"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Checkpointer thread
// ---------------------------------------------------------------------------

fn run_checkpointer(
    conn: Connection,
    files: &SegmentFiles,
    msgs: std_mpsc::Receiver<CkptMsg>,
    interval: Duration,
    restart_frames: i64,
    restart_wanted: &AtomicBool,
) {
    loop {
        let done = match msgs.recv_timeout(interval) {
            Ok(CkptMsg::Flush(done)) => Some(done),
            Ok(CkptMsg::Retire(path)) => {
                match files.retire(&path) {
                    Ok(how) => trace!(path = %path.display(), ?how, "payload segment retired"),
                    // A file nothing points at: the next open retires it.
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "could not retire a payload segment")
                    }
                }
                continue;
            }
            Ok(CkptMsg::Nudge) | Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // The writer is gone: fold the WAL back and shrink it.
                checkpoint(&conn, "TRUNCATE");
                break;
            }
        };
        // PASSIVE never waits for the writer or readers; it copies what it
        // can. A WAL still long afterwards means the writer never paused
        // long enough for it to start over: ask the writer for a pause.
        if let Some(wal_frames) = checkpoint(&conn, "PASSIVE") {
            if done.is_none() && wal_frames >= restart_frames {
                restart_wanted.store(true, Ordering::Relaxed);
            }
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
    debug!("store checkpointer stopped");
}

/// Runs one checkpoint; answers the WAL's length in frames, `None` on error.
fn checkpoint(conn: &Connection, mode: &str) -> Option<i64> {
    let result = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    match result {
        Ok((busy, wal_frames, checkpointed)) => {
            trace!(mode, busy, wal_frames, checkpointed, "WAL checkpoint");
            Some(wal_frames)
        }
        Err(e) => {
            warn!(mode, error = %db_err(e), "WAL checkpoint failed");
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Read pool
// ---------------------------------------------------------------------------

struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn new(path: PathBuf) -> Self {
        ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `op` on an idle connection (or a new one). Blocking.
    fn run<T>(&self, op: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let idle = lock(&self.idle).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let result = op(&conn);
        // A connection that saw an error is dropped rather than reused.
        if result.is_ok() {
            let mut idle = lock(&self.idle);
            if idle.len() < READ_POOL_MAX_IDLE {
                idle.push(conn);
            }
        }
        result.map_err(db_err)
    }
}

// ---------------------------------------------------------------------------
// Write operations (on the writer thread, inside a savepoint)
// ---------------------------------------------------------------------------

/// `enqueue` without a queue limit never answers `QueueFull`; if it did, the
/// fan-out fails (and rolls back) rather than panic.
fn unreachable_queue_full<T>() -> rusqlite::Result<T> {
    Err(rusqlite::Error::InvalidParameterName(
        "queue limit reached in a fan-out without a limit".into(),
    ))
}

pub(super) fn enqueue(
    c: &mut Ctx<'_, '_>,
    job: &NewJob,
    dedup: Option<&DedupKey>,
    max_pending: Option<u64>,
) -> rusqlite::Result<Enqueued> {
    let mut fp: Option<Fp> = None;
    if let Some(d) = dedup {
        let f = c.env.fpr.fp(&d.scope, &d.key);
        if let Some(row) = c.mem.dedup.get(f) {
            // A fingerprint match is a candidate: confirm it on the record.
            let rec: Option<(String, String, i64, i64, i64)> = c
                .conn
                .prepare_cached(
                    "SELECT scope, key, job, job_created, expires_at FROM dedup_record
                     WHERE seq = ?1",
                )?
                .query_row([row], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .optional()?;
            if let Some((scope, key, first, first_created, expires_at)) = rec {
                if scope == d.scope && key == d.key && expires_at > job.created_at {
                    return Ok(Enqueued::Duplicate {
                        first_id: c.env.codec.encode(first, first_created),
                    });
                }
            }
            // Expired, or (vanishingly rare) another key with the same
            // fingerprint: the new record takes the index entry.
        }
        fp = Some(f);
    }
    if let Some(max) = max_pending {
        if c.mem.counts_of(&job.queue).pending >= max {
            return Ok(Enqueued::QueueFull);
        }
    }
    let seq = c.mem.next_seq();
    // The payload goes to the payload log (synced with the commit); the row
    // says where, with the body's CRC-32 and what was synced before this
    // batch (see `drop_unsynced_tail`).
    let at = c.plog.append(seq, &job.payload).map_err(plog_err)?;
    c.hot.get(c.conn, HotSql::InsertJob)?.execute(params![
        seq,
        job.queue,
        job.kind,
        job.created_at,
        job.next_at,
        at.seg,
        sql_int(at.off),
        at.len,
        job.label,
        crc32fast::hash(&job.payload),
        c.plog.synced()
    ])?;
    c.mem.seg_use(at.seg, at.disk_bytes(), 1);
    c.mem.count(&job.queue, Field::Pending, 1);
    if let (Some(d), Some(f)) = (dedup, fp) {
        c.hot.get(c.conn, HotSql::InsertDedup)?.execute(params![
            &fp_to_bytes(f)[..],
            d.scope,
            d.key,
            seq,
            job.created_at,
            d.expires_at
        ])?;
        let row = c.conn.last_insert_rowid();
        let fresh = !c.mem.dedup.contains(f);
        c.mem.set_dedup(f, Some(row));
        if fresh {
            c.mem.scope_keys(&d.scope, 1);
        }
    }
    Ok(Enqueued::Accepted {
        id: c.env.codec.encode(seq, job.created_at),
    })
}

/// The newest labelled jobs of a queue (after the selected columns).
const LABELLED_FROM: &str = "FROM job WHERE queue = ?1 AND label IS NOT NULL
    ORDER BY seq DESC LIMIT ?2";

/// The next step of a queue's dead letters after a cursor.
const DEAD_SEQS_SQL: &str = "SELECT seq FROM job WHERE queue = ?1 AND state = 3 AND seq > ?2
    ORDER BY seq LIMIT ?3";

/// The due jobs of a queue with their payload and attempt count.
const CLAIM_SQL: &str = "SELECT seq, kind, created_at, cycle_base, cycle_start,
        CASE WHEN pseg IS NULL
             THEN (SELECT body FROM payload p WHERE p.seq = job.seq) END,
        (SELECT COALESCE(MAX(n), 0) FROM attempt a WHERE a.job = job.seq),
        next_at, pseg, poff, plen
    FROM job
    WHERE queue = ?1 AND state = 0 AND next_at <= ?2
    ORDER BY next_at, seq LIMIT ?3";

fn claim(
    c: &mut Ctx<'_, '_>,
    queue: &str,
    now: i64,
    limit: usize,
    lease_ms: i64,
    head_only: bool,
) -> rusqlite::Result<Vec<ClaimedJob>> {
    // Claimed jobs are still pending rows: read past as many as are leased
    // (the head alone, in order: the first row decides).
    let leased = c.mem.counts_of(queue).leased;
    let fetch = if head_only {
        1
    } else {
        sql_int(limit).saturating_add(sql_int(leased))
    };
    // Past every row when only the head counts, due or not.
    let due_by = if head_only { i64::MAX } else { now };
    // One statement finds the due jobs with their payload and attempt count
    // (first attempts, the common case, need nothing else).
    struct Due {
        seq: i64,
        kind: String,
        created_at: i64,
        next_at: i64,
        cycle_base: i64,
        cycle_start: i64,
        /// From the `payload` table (when not in a segment).
        stored: Option<Vec<u8>>,
        at: Option<PayloadRef>,
        attempts: i64,
    }
    let mut due: Vec<Due> = Vec::new();
    {
        let mut stmt = c.conn.prepare_cached(CLAIM_SQL)?;
        let mut rows = stmt.query(params![queue, due_by, fetch])?;
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let next_at: i64 = r.get(7)?;
            if let Some(l) = c.mem.lease(seq) {
                if l.until > now {
                    continue;
                }
                // The lease ran out: this claim supersedes it.
            }
            if next_at > now {
                break; // the head waits for its retry
            }
            due.push(Due {
                seq,
                kind: r.get(1)?,
                created_at: r.get(2)?,
                next_at,
                cycle_base: r.get(3)?,
                cycle_start: r.get(4)?,
                stored: r.get(5)?,
                at: PayloadRef::from_columns(r.get(8)?, r.get(9)?, r.get(10)?),
                attempts: r.get(6)?,
            });
            if due.len() >= limit {
                break;
            }
        }
    }
    let mut jobs = Vec::with_capacity(due.len());
    for Due {
        seq,
        kind,
        created_at,
        next_at,
        cycle_base,
        cycle_start,
        stored,
        at,
        attempts,
    } in due
    {
        let payload = match at {
            Some(at) => c.plog.read(at, seq).map_err(plog_err)?,
            None => stored.unwrap_or_default(),
        };
        let id = c.env.codec.encode(seq, created_at);
        // How many of the latest attempts were interrupted (only a job that
        // was attempted before has any).
        let mut interrupted = 0u32;
        if attempts > 0 {
            let mut stmt = c
                .conn
                .prepare_cached("SELECT outcome FROM attempt WHERE job = ?1 ORDER BY n DESC")?;
            let mut rows = stmt.query([seq])?;
            while let Some(r) = rows.next()? {
                if r.get_ref(0)?.as_str().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        0,
                        rusqlite::types::Type::Text,
                        e.into(),
                    )
                })? != OUTCOME_INTERRUPTED
                {
                    break;
                }
                interrupted += 1;
            }
        }
        c.hot.get(c.conn, HotSql::InsertAttempt)?.execute(params![
            seq,
            attempts + 1,
            now,
            OUTCOME_INTERRUPTED
        ])?;
        let token = c.mem.token();
        c.mem.set_lease(
            seq,
            Some(LeaseEntry {
                token,
                until: now.saturating_add(lease_ms),
                n: attempts + 1,
                queue: queue.to_owned(),
                ended: false,
                payload: at,
            }),
        );
        let attempts_u32 = u32::try_from(attempts).unwrap_or(u32::MAX);
        jobs.push(ClaimedJob {
            id: id.clone(),
            queue: queue.to_owned(),
            kind,
            payload,
            attempts: attempts_u32,
            created_at,
            next_at,
            cycle_attempts: u32::try_from(attempts.saturating_sub(cycle_base).max(0))
                .unwrap_or(u32::MAX),
            cycle_start,
            interrupted,
            lease: Lease {
                job_id: id,
                seq,
                token,
            },
        });
    }
    Ok(jobs)
}

/// The lease entry of `lease`'s job if `lease` is still its current claim.
fn current_lease(mem: &Mem, lease: &Lease) -> Option<LeaseEntry> {
    mem.lease(lease.seq)
        .filter(|l| l.token == lease.token)
        .cloned()
}

fn finish(
    c: &mut Ctx<'_, '_>,
    lease: &Lease,
    attempt: &Attempt,
    next: Next,
) -> rusqlite::Result<bool> {
    let Some(held) = current_lease(c.mem, lease) else {
        // Superseded by a later claim, or the job was deleted.
        return Ok(false);
    };
    let error = attempt
        .error
        .as_deref()
        .map(|e| truncate_utf8(e, ERROR_TEXT_CAP));
    let body = attempt
        .response_body
        .as_deref()
        .map(|b| &b[..b.len().min(RESPONSE_BODY_CAP)]);
    c.hot.get(c.conn, HotSql::FinishAttempt)?.execute(params![
        lease.seq,
        held.n,
        attempt.started_at,
        attempt.duration_ms,
        attempt.outcome,
        attempt.http_status,
        error,
        body
    ])?;
    let finished_at = attempt.started_at.saturating_add(attempt.duration_ms);
    let (state, next_at) = match next {
        Next::Done => (STATE_DONE, None),
        Next::Retry { next_at } => (STATE_PENDING, Some(next_at)),
        Next::Dead => (STATE_DEAD, None),
    };
    // A payload in a segment leaves it now: a delivered job's is dropped; a
    // job that will wait (for a retry, or as a dead letter kept for replay)
    // has it moved into the `payload` table, so that a few long-lived jobs
    // never keep whole segments on disk.
    if let Some(at) = held.payload {
        if !matches!(next, Next::Done) {
            let body = c.plog.read(at, lease.seq).map_err(plog_err)?;
            c.conn
                .prepare_cached("INSERT OR REPLACE INTO payload (seq, body) VALUES (?1, ?2)")?
                .execute(params![lease.seq, body])?;
        }
        c.mem.seg_use(at.seg, at.disk_bytes(), -1);
    }
    c.hot.get(c.conn, HotSql::FinishJob)?.execute(params![
        lease.seq,
        state,
        next_at,
        finished_at,
        attempt.http_status,
        error
    ])?;
    match next {
        Next::Done => {
            // A delivered payload in the `payload` table is never needed
            // again; it is deleted with others later (see `flush_trash`):
            // deleted one by one, a page of payloads is rewritten once per
            // delivery instead of freed once.
            if held.payload.is_none() {
                c.mem.trash_payload(lease.seq);
            }
            c.mem.count(&held.queue, Field::Pending, -1);
            c.mem.count(&held.queue, Field::Done, 1);
        }
        Next::Dead => {
            c.mem.count(&held.queue, Field::Pending, -1);
            c.mem.count(&held.queue, Field::Dead, 1);
        }
        Next::Retry { .. } => {}
    }
    c.mem.end_lease(lease.seq);
    Ok(true)
}

/// Deletes the payloads of delivered jobs that wait for it (in row order;
/// undone with the batch if it fails).
fn flush_trash(conn: &Connection, mem: &mut Mem) -> Result<(), StoreError> {
    let mut seqs = mem.take_trash();
    seqs.sort_unstable();
    let mut stmt = conn
        .prepare_cached("DELETE FROM payload WHERE seq = ?1")
        .map_err(db_err)?;
    for seq in seqs {
        stmt.execute([seq]).map_err(db_err)?;
    }
    Ok(())
}

/// Job rows of one queue matching `sql` (which binds queue, cursor, limit).
fn select_seqs(
    conn: &Connection,
    sql: &str,
    queue: &str,
    cursor: i64,
) -> rusqlite::Result<Vec<i64>> {
    conn.prepare_cached(sql)?
        .query_map(params![queue, cursor, sql_int(STEP_ROWS)], |r| r.get(0))?
        .collect()
}

/// Makes job `seq` (in state `state` of queue `from`) pending in queue `to`,
/// due at `now`, in a new retry cycle.
fn restart_job(
    c: &mut Ctx<'_, '_>,
    seq: i64,
    from: &str,
    to: &str,
    state: i64,
    now: i64,
) -> rusqlite::Result<()> {
    c.conn
        .prepare_cached(
            "UPDATE job SET queue = ?2, state = 0, next_at = ?3, updated_at = ?3,
                 cycle_start = ?3,
                 cycle_base = (SELECT COALESCE(MAX(n), 0) FROM attempt WHERE job = ?1)
             WHERE seq = ?1",
        )?
        .execute(params![seq, to, now])?;
    c.mem.count(from, state_field(state), -1);
    c.mem.count(to, Field::Pending, 1);
    c.mem.lower_pending_floor(to, seq);
    Ok(())
}

fn state_field(state: i64) -> Field {
    match state {
        STATE_DONE => Field::Done,
        STATE_DEAD => Field::Dead,
        _ => Field::Pending,
    }
}

/// Deletes job `seq` with its payload and attempts.
fn delete_row(c: &mut Ctx<'_, '_>, seq: i64, queue: &str, state: i64) -> rusqlite::Result<u64> {
    let attempts = c
        .conn
        .prepare_cached("DELETE FROM attempt WHERE job = ?1")?
        .execute([seq])?;
    c.conn
        .prepare_cached("DELETE FROM payload WHERE seq = ?1")?
        .execute([seq])?;
    let at = c
        .conn
        .prepare_cached("DELETE FROM job WHERE seq = ?1 RETURNING pseg, poff, plen")?
        .query_row([seq], |r| {
            Ok(PayloadRef::from_columns(r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?
        .flatten();
    if let Some(at) = at {
        c.mem.seg_use(at.seg, at.disk_bytes(), -1);
    }
    c.mem.count(queue, state_field(state), -1);
    c.mem.end_lease(seq);
    Ok(attempts as u64)
}

fn purge(c: &mut Ctx<'_, '_>, p: PurgePolicy) -> rusqlite::Result<PurgeStats> {
    let mut stats = PurgeStats::default();

    // Expired dedup records. Within a scope (one route, one window) expiry
    // follows row order, so each scope's records expire from its head: walk
    // from where the scope's last step stopped, delete what expired, stop at
    // its first live record. Rows of other scopes are stepped over.
    let scopes: Vec<(String, i64)> = c
        .mem
        .scopes
        .iter()
        .map(|(name, s)| (name.clone(), s.purge_from))
        .collect();
    let mut more = false;
    for (scope, from) in scopes {
        // Expired records of the scope, read only as far as this step goes
        // (its first live record, or a full step), and deleted by runs of
        // consecutive rows, one statement a run.
        let mut doomed: Vec<(i64, Fp)> = Vec::new();
        // Runs of `doomed` rows with no row of another scope between them.
        let mut runs: Vec<(i64, i64)> = Vec::new();
        let (mut next_from, mut reached_live, mut scanned) = (from, false, 0i64);
        {
            let mut stmt = c.conn.prepare_cached(
                "SELECT seq, scope, expires_at, fp, key FROM dedup_record WHERE seq >= ?1
                 ORDER BY seq LIMIT ?2",
            )?;
            let mut q = stmt.query(params![from, PURGE_SCAN_ROWS])?;
            let mut run_open = false;
            while let Some(r) = q.next()? {
                scanned += 1;
                let seq: i64 = r.get(0)?;
                if r.get_ref(1)?.as_str().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        1,
                        rusqlite::types::Type::Text,
                        e.into(),
                    )
                })? != scope
                {
                    run_open = false;
                    next_from = seq + 1;
                    continue;
                }
                let expires_at: i64 = r.get(2)?;
                if expires_at > p.now {
                    reached_live = true;
                    next_from = seq;
                    break;
                }
                if doomed.len() >= PURGE_DEDUP_STEP {
                    next_from = seq;
                    break;
                }
                let fp = match r
                    .get_ref(3)?
                    .as_blob_or_null()
                    .ok()
                    .flatten()
                    .and_then(fp_from_bytes)
                {
                    Some(fp) => fp,
                    // Records of the first layout carry no fingerprint.
                    None => c
                        .env
                        .fpr
                        .fp(&scope, r.get_ref(4)?.as_str().unwrap_or_default()),
                };
                doomed.push((seq, fp));
                match runs.last_mut() {
                    Some(run) if run_open => run.1 = seq,
                    _ => runs.push((seq, seq)),
                }
                run_open = true;
                next_from = seq + 1;
            }
        }
        {
            let mut delete = c
                .conn
                .prepare_cached("DELETE FROM dedup_record WHERE seq >= ?1 AND seq <= ?2")?;
            for (first, last) in &runs {
                delete.execute([first, last])?;
            }
        }
        for &(seq, fp) in &doomed {
            if c.mem.dedup.points_at(fp, seq) {
                c.mem.set_dedup(fp, None);
                c.mem.scope_keys(&scope, -1);
            }
        }
        stats.dedup_removed += doomed.len() as u64;
        if let Some(sc) = c.mem.scopes.get_mut(&scope) {
            // A position only: not undone if this step rolls back (the
            // records it skipped would just be looked at again).
            sc.purge_from = next_from;
        }
        if !reached_live && (scanned == PURGE_SCAN_ROWS || doomed.len() >= PURGE_DEDUP_STEP) {
            more = true;
        }
    }

    // Old done and dead jobs: walk the jobs in creation order from where the
    // last step stopped, up to the first job too young to qualify.
    let youngest = p.done_before.max(p.dead_before);
    let mut candidates: Vec<(i64, String, i64)> = Vec::new();
    let mut scanned = 0i64;
    let mut reached_young = false;
    {
        let mut stmt = c.conn.prepare_cached(
            "SELECT seq, queue, state, created_at, updated_at FROM job WHERE seq > ?1
             ORDER BY seq LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![c.mem.purge_cursor, PURGE_SCAN_ROWS])?;
        while let Some(r) = rows.next()? {
            scanned += 1;
            let seq: i64 = r.get(0)?;
            let created_at: i64 = r.get(3)?;
            if created_at >= youngest {
                reached_young = true;
                break;
            }
            c.mem.purge_cursor = seq;
            let state: i64 = r.get(2)?;
            let updated_at: i64 = r.get(4)?;
            let old = match state {
                STATE_DONE => updated_at < p.done_before,
                STATE_DEAD => updated_at < p.dead_before,
                _ => false,
            };
            if old && c.mem.lease(seq).is_none() {
                candidates.push((seq, r.get(1)?, state));
                if candidates.len() >= STEP_ROWS {
                    break;
                }
            }
        }
    }
    for (seq, queue, state) in &candidates {
        stats.attempts_removed += delete_row(c, *seq, queue, *state)?;
        stats.jobs_removed += 1;
    }
    if reached_young || (scanned < PURGE_SCAN_ROWS && candidates.len() < STEP_ROWS) {
        // Walked to the end: the next purge round starts from the oldest.
        c.mem.purge_cursor = 0;
    } else {
        more = true;
    }
    stats.more = more;
    Ok(stats)
}

// ---------------------------------------------------------------------------
// Read operations
// ---------------------------------------------------------------------------

const SUMMARY_COLUMNS: &str = "seq, queue, kind, state, \
     (SELECT COALESCE(MAX(n), 0) FROM attempt a WHERE a.job = job.seq), \
     created_at, next_at, updated_at, last_status, last_error, label";
const SUMMARY_COLUMN_COUNT: usize = 11;

fn summary_from_row(codec: IdCodec, r: &Row<'_>) -> rusqlite::Result<(i64, JobSummary)> {
    let seq: i64 = r.get(0)?;
    let created_at: i64 = r.get(5)?;
    let state = match r.get::<_, i64>(3)? {
        STATE_DONE => JobState::Done,
        STATE_DEAD => JobState::Dead,
        _ => JobState::Pending,
    };
    Ok((
        seq,
        JobSummary {
            id: codec.encode(seq, created_at),
            queue: r.get(1)?,
            kind: r.get(2)?,
            state,
            attempts: r.get(4)?,
            created_at,
            next_at: r.get(6)?,
            updated_at: r.get(7)?,
            lease_until: None,
            last_status: r.get(8)?,
            last_error: r.get(9)?,
            label: r.get(10)?,
        },
    ))
}

/// `leases`: job row -> lease end of the live claims (of the filtered
/// queue). Claimed jobs are pending rows shown as inflight. `after`: only
/// rows above it.
fn list_jobs(
    c: &Connection,
    codec: IdCodec,
    filter: &JobFilter,
    after: i64,
    limit: usize,
    leases: &HashMap<i64, i64>,
) -> rusqlite::Result<Vec<JobSummary>> {
    let mark = |(seq, mut s): (i64, JobSummary)| {
        if let Some(until) = leases.get(&seq).filter(|_| s.state == JobState::Pending) {
            s.state = JobState::Inflight;
            s.lease_until = Some(*until);
        }
        s
    };
    let summary = |r: &Row<'_>| summary_from_row(codec, r);
    if filter.state == Some(JobState::Inflight) {
        let mut seqs: Vec<i64> = leases.keys().copied().filter(|s| *s > after).collect();
        seqs.sort_unstable();
        let mut stmt =
            c.prepare_cached(&format!("SELECT {SUMMARY_COLUMNS} FROM job WHERE seq = ?1"))?;
        let mut out = Vec::new();
        for seq in seqs.into_iter().take(limit) {
            if let Some(row) = stmt.query_row([seq], summary).optional()? {
                out.push(mark(row));
            }
        }
        return Ok(out);
    }
    // Row-key order: a range of the table itself, except for the dead
    // letters, which have their own (small) index.
    let source = if filter.state == Some(JobState::Dead) {
        "job"
    } else {
        "job NOT INDEXED"
    };
    let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM {source} WHERE seq > ?1");
    let mut args: Vec<Value> = vec![Value::Integer(after)];
    if let Some(queue) = &filter.queue {
        args.push(Value::Text(queue.clone()));
        sql.push_str(&format!(" AND queue = ?{}", args.len()));
    }
    let mut fetch = limit;
    match filter.state {
        None => {}
        Some(JobState::Pending) | Some(JobState::Inflight) => {
            sql.push_str(" AND state = 0");
            // Read past the claimed ones, which are not pending.
            fetch = limit + leases.len();
        }
        Some(JobState::Done) => sql.push_str(" AND state = 2"),
        Some(JobState::Dead) => sql.push_str(" AND state = 3"),
    }
    args.push(Value::Integer(sql_int(fetch)));
    sql.push_str(&format!(" ORDER BY seq LIMIT ?{}", args.len()));
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), summary)?;
    let mut out = Vec::new();
    for row in rows {
        let s = mark(row?);
        if filter.state == Some(JobState::Pending) && s.state != JobState::Pending {
            continue;
        }
        out.push(s);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod plan_tests {
    use super::*;

    fn conn() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut w = open_writer(&path).unwrap();
        schema::migrate(&mut w).unwrap();
        drop(w);
        (dir, open_connection(&path).unwrap())
    }

    /// The claim runs once per queue per round with new bindings: it must
    /// not be compiled again each time (SQLite does that when a plan
    /// depends on a bound value, unless the planner's stability guarantee
    /// is on).
    #[test]
    fn claim_statement_is_not_reprepared_on_new_bindings() {
        let (_dir, c) = conn();
        let mut stmt = c.prepare(CLAIM_SQL).unwrap();
        for (queue, now) in [("/a", 1_i64), ("/b", 2), ("/a", 3), ("sender/x", 4)] {
            let mut rows = stmt.query(params![queue, now, 64]).unwrap();
            while rows.next().unwrap().is_some() {}
        }
        assert_eq!(
            stmt.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "the claim statement was compiled again after a new binding"
        );
    }

    /// The hot queries still use their partial indexes with the planner's
    /// stability guarantee on.
    #[test]
    fn hot_queries_use_their_partial_indexes() {
        let (_dir, c) = conn();
        let plan = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> String {
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt.query_map(params, |r| r.get::<_, String>(3)).unwrap();
            rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("; ")
        };
        let claim = plan(CLAIM_SQL, params!["/a", 1, 64]);
        assert!(claim.contains("job_due"), "claim plan: {claim}");
        let labelled = plan(
            &format!("SELECT {SUMMARY_COLUMNS} {LABELLED_FROM}"),
            params!["/a", 50],
        );
        assert!(
            labelled.contains("job_labelled"),
            "labelled plan: {labelled}"
        );
        let dead = plan(DEAD_SEQS_SQL, params!["/a", 0, 64]);
        assert!(dead.contains("job_dead"), "dead-letter plan: {dead}");
    }
}

#[cfg(test)]
mod lazy_count_tests {
    use super::*;

    /// A lazy request counts while it waits to be sent; if it is never sent
    /// (its caller gave up, or the writer stopped) it counts down again,
    /// and once sent it stays counted until the writer answers its batch.
    #[test]
    fn a_lazy_request_never_sent_is_not_left_counted() {
        let count = AtomicUsize::new(0);
        let first = LazyCount::up(&count);
        assert_eq!(first.waiting, 1);
        let second = LazyCount::up(&count);
        assert_eq!(second.waiting, 2);
        drop(second);
        assert_eq!(count.load(Ordering::Acquire), 1, "dropped unsent");
        first.sent();
        assert_eq!(count.load(Ordering::Acquire), 1, "sent: the writer's now");
    }
}
