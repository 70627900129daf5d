//! The schema of the embedded store: ordered migrations applied at open.

use rusqlite::{Connection, TransactionBehavior};
use tracing::info;

use super::{db_err, sql_int};
use crate::store::StoreError;

/// Ordered schema migrations; `schema_version` records how many are applied.
/// Never edit a released entry: append a new one. Migrations 1 and 2 are
/// the first layout, kept so that files written by earlier releases are
/// carried forward by migration 3.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "
    CREATE TABLE jobs (
        id          TEXT PRIMARY KEY,
        queue       TEXT NOT NULL,
        kind        TEXT NOT NULL,
        payload     BLOB,
        state       TEXT NOT NULL
                    CHECK (state IN ('pending', 'inflight', 'done', 'dead')),
        attempts    INTEGER NOT NULL DEFAULT 0,
        created_at  BIGINT NOT NULL,
        next_at     BIGINT NOT NULL,
        lease_owner TEXT,
        lease_until BIGINT,
        last_status INTEGER,
        last_error  TEXT,
        updated_at  BIGINT NOT NULL,
        -- A replay starts a new retry cycle: the policy counts attempts and
        -- age from here, while the attempt history stays numbered 1, 2, 3...
        cycle_base  INTEGER NOT NULL DEFAULT 0,
        cycle_start BIGINT
    );
    -- claim (any queue), oldest due first; also finds expired leases among
    -- the (few) inflight jobs.
    CREATE INDEX jobs_state_next_at ON jobs (state, next_at);
    -- claim of one queue, replay/cancel of a queue.
    CREATE INDEX jobs_queue_state_next_at ON jobs (queue, state, next_at);

    CREATE TABLE dedup (
        scope      TEXT NOT NULL,
        key        TEXT NOT NULL,
        job_id     TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (scope, key)
    );
    CREATE INDEX dedup_expires_at ON dedup (expires_at);

    CREATE TABLE attempts (
        job_id        TEXT NOT NULL,
        n             INTEGER NOT NULL,
        started_at    BIGINT NOT NULL,
        duration_ms   BIGINT NOT NULL,
        outcome       TEXT NOT NULL,
        http_status   INTEGER,
        error         TEXT,
        response_body BLOB,
        PRIMARY KEY (job_id, n)
    );
    ",
    // 2: per-queue, per-state job counts kept by triggers inside the writing
    // transaction (they commit and roll back with the rows they count,
    // savepoints included), and a partial index of pending jobs by age. The
    // queue-limit check of every enqueue is then a point read instead of a
    // count over the backlog (which made each enqueue O(pending)), and
    // `stats` (every /metrics scrape) reads a few rows instead of scanning
    // every job and its history.
    "
    CREATE TABLE queue_counts (
        queue TEXT NOT NULL,
        state TEXT NOT NULL,
        n     BIGINT NOT NULL,
        PRIMARY KEY (queue, state)
    );
    INSERT INTO queue_counts (queue, state, n)
        SELECT queue, state, COUNT(*) FROM jobs GROUP BY queue, state;
    CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
    BEGIN
        INSERT INTO queue_counts (queue, state, n) VALUES (NEW.queue, NEW.state, 1)
            ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs
    BEGIN
        UPDATE queue_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.state;
    END;
    CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs
        WHEN OLD.state <> NEW.state
    BEGIN
        UPDATE queue_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.state;
        INSERT INTO queue_counts (queue, state, n) VALUES (NEW.queue, NEW.state, 1)
            ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
    END;
    -- oldest pending job of a queue, for stats; only pending rows are in it.
    CREATE INDEX jobs_pending_created ON jobs (queue, created_at) WHERE state = 'pending';
    ",
    // 3: the append-only layout. Writes on the hot path are appends:
    // payloads in their own table keyed by an increasing integer (written
    // once, deleted after delivery); small job rows whose row key is also the
    // public id (no id index); attempts keyed by (job, n), one appended at
    // claim time and filled in at finish; dedup records appended in time
    // order with a keyed fingerprint, answered by an in-memory index and
    // expired from the head of each scope (no expiry index). Claims, leases
    // and counters live in memory (one process owns the file), so the
    // trigger-kept counters of migration 2 go. Job states: 0 pending (claimed
    // or not), 2 done, 3 dead. Jobs of the first layout keep their UUIDs in
    // `legacy_id` (the only lookups by a stored id).
    "
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    CREATE TABLE job (
        seq         INTEGER PRIMARY KEY,
        queue       TEXT NOT NULL,
        kind        TEXT NOT NULL,
        state       INTEGER NOT NULL CHECK (state IN (0, 2, 3)),
        cycle_base  INTEGER NOT NULL DEFAULT 0,
        cycle_start BIGINT NOT NULL,
        created_at  BIGINT NOT NULL,
        next_at     BIGINT NOT NULL,
        updated_at  BIGINT NOT NULL,
        last_status INTEGER,
        last_error  TEXT
    );
    -- claims: due pending jobs of a queue, oldest next_at first.
    CREATE INDEX job_due ON job (queue, next_at) WHERE state = 0;
    -- dead letters of a queue (replay, lists); only dead rows are in it.
    CREATE INDEX job_dead ON job (queue, seq) WHERE state = 3;

    CREATE TABLE legacy_id (
        id  TEXT PRIMARY KEY,
        seq INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO job (queue, kind, state, cycle_base, cycle_start, created_at, next_at,
                     updated_at, last_status, last_error)
        SELECT queue, kind,
               CASE state WHEN 'done' THEN 2 WHEN 'dead' THEN 3 ELSE 0 END,
               cycle_base, COALESCE(cycle_start, created_at), created_at, next_at,
               updated_at, last_status, last_error
        FROM jobs ORDER BY id;
    -- Both sides in id order: the n-th job by id got row n.
    INSERT INTO legacy_id (id, seq)
        SELECT id, ROW_NUMBER() OVER (ORDER BY id) FROM jobs;

    CREATE TABLE payload (
        seq  INTEGER PRIMARY KEY,
        body BLOB NOT NULL
    );
    INSERT INTO payload (seq, body)
        SELECT l.seq, o.payload FROM legacy_id l JOIN jobs o ON o.id = l.id
        WHERE o.payload IS NOT NULL ORDER BY l.seq;

    CREATE TABLE attempt (
        job           INTEGER NOT NULL,
        n             INTEGER NOT NULL,
        started_at    BIGINT NOT NULL,
        duration_ms   BIGINT,
        outcome       TEXT NOT NULL,
        http_status   INTEGER,
        error         TEXT,
        response_body BLOB,
        PRIMARY KEY (job, n)
    ) WITHOUT ROWID;
    INSERT INTO attempt (job, n, started_at, duration_ms, outcome, http_status, error,
                         response_body)
        SELECT l.seq, a.n, a.started_at, a.duration_ms, a.outcome, a.http_status, a.error,
               a.response_body
        FROM attempts a JOIN legacy_id l ON l.id = a.job_id ORDER BY l.seq, a.n;

    CREATE TABLE dedup_record (
        seq         INTEGER PRIMARY KEY,
        fp          BLOB,
        scope       TEXT NOT NULL,
        key         TEXT NOT NULL,
        job         INTEGER NOT NULL,
        job_created BIGINT NOT NULL,
        expires_at  BIGINT NOT NULL
    );
    INSERT INTO dedup_record (fp, scope, key, job, job_created, expires_at)
        SELECT NULL, d.scope, d.key, COALESCE(l.seq, 0), COALESCE(j.created_at, 0), d.expires_at
        FROM dedup d LEFT JOIN legacy_id l ON l.id = d.job_id
                     LEFT JOIN job j ON j.seq = l.seq
        ORDER BY d.expires_at;

    DROP TRIGGER jobs_count_insert;
    DROP TRIGGER jobs_count_delete;
    DROP TRIGGER jobs_count_update;
    DROP TABLE queue_counts;
    DROP TABLE attempts;
    DROP TABLE dedup;
    DROP TABLE jobs;
    ",
    // 4: payloads of new jobs go to append-only segment files beside the
    // database (`plog.rs`): written once, instead of to the WAL and again by
    // the checkpoint. The job row says where (segment, offset, length); the
    // `payload` table keeps the payloads written before, and those moved out
    // of segments for long waits (dead letters, retries). Adding nullable
    // columns rewrites no row.
    "
    ALTER TABLE job ADD COLUMN pseg INTEGER;
    ALTER TABLE job ADD COLUMN poff INTEGER;
    ALTER TABLE job ADD COLUMN plen INTEGER;
    ",
    // 5: the sender. `label` says what a sender's delivery carries (event
    // type and id) and is NULL for received webhooks, so the partial index
    // that lists an endpoint's latest deliveries costs the receiver nothing.
    // Destinations (channels and endpoints) are few, small rows.
    "
    ALTER TABLE job ADD COLUMN label TEXT;
    CREATE INDEX job_labelled ON job (queue, seq) WHERE label IS NOT NULL;
    CREATE TABLE destination (
        id               TEXT PRIMARY KEY,
        project          TEXT NOT NULL,
        kind             TEXT NOT NULL,
        spec             TEXT NOT NULL,
        sealed           BLOB NOT NULL,
        active           INTEGER NOT NULL,
        disabled_at      BIGINT,
        created_at       BIGINT NOT NULL,
        updated_at       BIGINT NOT NULL,
        last_attempt_at  BIGINT,
        last_ok          INTEGER,
        exhausted_streak INTEGER NOT NULL DEFAULT 0
    );
    ",
    // 6: a job's payload segment and the WAL are synced at the same time,
    // so a power loss can keep a commit whose payloads did not reach the
    // disk (none of that batch was answered). Each row with a payload in a
    // segment records the body's CRC-32 (`pcrc`) and the log position
    // synced before its batch (`psync`): open checks the payloads at or
    // past the newest row's `psync` and drops that batch's jobs if one did
    // not survive. Rows of earlier builds (synced one after the other)
    // have neither.
    "
    ALTER TABLE job ADD COLUMN pcrc INTEGER;
    ALTER TABLE job ADD COLUMN psync INTEGER;
    ",
];

/// Applies the migrations not yet recorded in `schema_version`, all in one
/// transaction: a crash mid-way leaves the previous version intact.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
        .map_err(db_err)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(db_err)?;
    let known = sql_int(MIGRATIONS.len());
    if current > known {
        return Err(StoreError::Other(format!(
            "database schema version {current} is newer than this binary supports ({known})"
        )));
    }
    for (version, sql) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(current).unwrap_or(0))
    {
        tx.execute_batch(sql).map_err(db_err)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [version],
        )
        .map_err(db_err)?;
        info!(version, "applied store schema migration");
    }
    tx.commit().map_err(db_err)
}
