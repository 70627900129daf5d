//! Tests of the SQLite backend: the conformance suite on real files in
//! temporary directories, then what only this backend has (the process
//! lock, group commit, migrations, the WAL bound, disk full, fingerprint
//! confirmation).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use super::conformance::{accepted, enqueue_ok, job, key, Fixture};
use super::*;

struct SqliteFixture {
    dir: TempDir,
}

impl SqliteFixture {
    fn new() -> SqliteFixture {
        SqliteFixture {
            dir: TempDir::new().unwrap(),
        }
    }
}

impl Fixture for SqliteFixture {
    fn open(&self) -> Store {
        open_at(&db_path(&self.dir))
    }
    fn open_with_max_keys(&self, max_keys: u64) -> Store {
        let mut opts = StoreOptions::sqlite(db_path(&self.dir));
        opts.dedup_max_keys = max_keys;
        Store::open(opts).expect("open store")
    }
}

mod conformance_sqlite {
    use super::SqliteFixture;
    crate::store::conformance::conformance_tests!(SqliteFixture::new());
}

fn db_path(dir: &TempDir) -> PathBuf {
    // A missing parent directory is created by open.
    dir.path().join("data").join("hookgate.db")
}

fn open_at(path: &Path) -> Store {
    Store::open(StoreOptions::sqlite(path)).expect("open store")
}

/// Opens the store at `path` with a metrics registry, and reads
/// `hookgate_store_open_dropped_unsynced_jobs` from it.
fn open_counting_dropped(path: &Path) -> (Store, i64) {
    let registry = prometheus::Registry::new();
    let mut opts = StoreOptions::sqlite(path);
    opts.registry = Some(registry.clone());
    let store = Store::open(opts).expect("open store");
    let dropped = registry
        .gather()
        .iter()
        .find(|f| f.name() == "hookgate_store_open_dropped_unsynced_jobs")
        .map(|f| f.get_metric()[0].get_gauge().get_value() as i64)
        .expect("the gauge is registered");
    (store, dropped)
}

/// Counts rows with an independent connection, i.e. what is on disk.
fn raw_count(path: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).expect("raw open");
    conn.query_row(sql, [], |r| r.get(0)).expect("raw count")
}

#[tokio::test]
async fn a_second_owner_is_refused_until_the_first_shuts_down() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open_at(&path);
    let err = Store::open(StoreOptions::sqlite(&path)).unwrap_err();
    assert!(matches!(err, StoreError::Locked(_)), "{err:?}");
    assert!(
        err.to_string().contains("another hookgate process"),
        "{err}"
    );
    store.shutdown().await;
    open_at(&path).shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_concurrent_writes() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open_at(&path);
    let before = store.commit_stats();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let j = job(&format!("j{i:03}"), "q", i);
                store
                    .enqueue(j, key(&format!("e{i}"), 1_000_000), None)
                    .await
            })
        })
        .collect();
    for t in tasks {
        accepted(t.await.unwrap().unwrap());
    }
    let after = store.commit_stats();
    let requests = after.requests - before.requests;
    let commits = after.commits - before.commits;
    assert_eq!(requests, 200);
    assert!(
        commits < requests,
        "{commits} commits for {requests} requests"
    );
    store.shutdown().await;
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM job"), 200);
    // Every payload is in the payload log, none in the database.
    assert_eq!(
        raw_count(&path, "SELECT COUNT(*) FROM job WHERE pseg IS NOT NULL"),
        200
    );
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM payload"), 0);
    assert_eq!(segments(&path).len(), 1);
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM dedup_record"), 200);
}

/// The payload segments of the store at `path`: (file name, length).
fn segments(path: &Path) -> Vec<(String, u64)> {
    let files = sqlite::plog::SegmentFiles::for_db(path);
    files
        .list()
        .unwrap()
        .into_iter()
        .map(|(id, len)| {
            let name = files
                .path(id)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            (name, len)
        })
        .collect()
}

/// The spare segment files at `path` (retired segments kept for reuse).
fn spares(path: &Path) -> usize {
    sqlite::plog::SegmentFiles::for_db(path).spares()
}

/// The payload segments at `path` once at most `n` are left (unused ones
/// are retired by the checkpointer thread soon after the commit that
/// dropped their last job); what is there after 10 s otherwise.
async fn segments_down_to(path: &Path, n: usize) -> Vec<(String, u64)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let found = segments(path);
        if found.len() <= n || std::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Claims every due job of `queue`; answers their payloads, sorted.
async fn claimed_payloads(store: &Store, queue: &str) -> Vec<Vec<u8>> {
    let mut claimed: Vec<Vec<u8>> = store
        .claim(queue, 0, 100, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.payload)
        .collect();
    claimed.sort();
    claimed
}

/// A payload segment that cannot be written fails the batch like a full
/// disk: 503-class error, nothing recorded, and the next write goes to a
/// fresh segment and succeeds.
#[tokio::test]
async fn a_payload_segment_that_cannot_be_written_is_unavailable() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open_at(&path);
    // The first segment's name is taken by a directory: its write fails
    // (EISDIR), whatever the user the test runs as.
    let first = path.with_file_name("hookgate.db-payload-00000001");
    std::fs::create_dir(&first).unwrap();
    let mut j = job("a", "q", 0);
    j.payload = b"SECRET-PAYLOAD".to_vec().into();
    let err = store
        .enqueue(j.clone(), key("evt-a", 1000), None)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(!err.to_string().contains("SECRET"), "{err}");
    assert_eq!(store.dedup_keys(), 0);
    assert!(store.stats(0).await.unwrap().iter().all(|q| q.pending == 0));
    // The same event is accepted next (it was never recorded).
    let id = match store.enqueue(j, key("evt-a", 1000), None).await.unwrap() {
        Enqueued::Accepted { id } => id,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        store.get_payload(&id).await.unwrap().as_deref(),
        Some(&b"SECRET-PAYLOAD"[..])
    );
    store.shutdown().await;
    drop(store);
    std::fs::remove_dir(&first).unwrap();
    let store = open_at(&path);
    let c = store.claim("q", 0, 10, 1000).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].payload, b"SECRET-PAYLOAD");
    store.shutdown().await;
}

/// The segment gauges follow the files on disk and the bytes jobs still need.
#[tokio::test]
async fn payload_segment_gauges_follow_the_files_and_live_bytes() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let registry = prometheus::Registry::new();
    let mut opts = StoreOptions::sqlite(&path);
    opts.registry = Some(registry.clone());
    opts.tuning.segment_bytes = 100;
    let store = Store::open(opts).unwrap();
    let gauge = |name: &str| -> i64 {
        registry
            .gather()
            .iter()
            .find(|f| f.name() == name)
            .map(|f| f.get_metric()[0].get_gauge().get_value() as i64)
            .unwrap_or_else(|| panic!("{name} is not registered"))
    };
    assert_eq!(gauge("hookgate_store_payload_segments"), 0);
    for i in 0..3 {
        let mut j = job(&format!("g{i}"), "q", 0);
        j.payload = vec![b'p'; 60].into();
        enqueue_ok(&store, j).await;
    }
    // 72 bytes a record, 100 a segment: one record each.
    assert_eq!(gauge("hookgate_store_payload_segments"), 3);
    assert_eq!(gauge("hookgate_store_payload_segment_live_bytes"), 3 * 72);
    assert_eq!(segments(&path).len(), 3);
    for c in store.claim("q", 0, 10, 1000).await.unwrap() {
        let a = Attempt {
            started_at: 0,
            duration_ms: 1,
            outcome: "success".into(),
            http_status: Some(200),
            ..Attempt::default()
        };
        assert!(store.finish(&c.lease, a, Next::Done).await.unwrap());
    }
    // Delivered: only the active segment is left, and nothing in it is needed.
    assert_eq!(gauge("hookgate_store_payload_segments"), 1);
    assert_eq!(gauge("hookgate_store_payload_segment_live_bytes"), 0);
    assert_eq!(segments_down_to(&path, 1).await.len(), 1);
    // The two retired ones are kept as spares for the next segments.
    assert_eq!(spares(&path), 2);
    store.shutdown().await;
}

/// A job row pointing into a segment that is gone, or past its end, is
/// corruption, said at open, never an empty payload delivered (unless the
/// job is of the newest batch: see the next test). An open that fails
/// changes nothing in the file.
#[tokio::test]
async fn a_missing_payload_segment_is_refused_at_open() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open_at(&path);
    // Two batches: "a", then "b" (the newest).
    enqueue_ok(&store, job("a", "q", 0)).await;
    enqueue_ok(&store, job("b", "q", 0)).await;
    store.shutdown().await;
    drop(store);
    let segs = segments(&path);
    assert_eq!(segs.len(), 1);
    let seg = path.with_file_name(&segs[0].0);
    // Cut inside the first record: "a" points past the end.
    let bytes = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &bytes[..10]).unwrap();
    let err = Store::open(StoreOptions::sqlite(&path)).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("ends at byte")),
        "{err:?}"
    );
    // Gone.
    std::fs::remove_file(&seg).unwrap();
    let err = Store::open(StoreOptions::sqlite(&path)).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("missing")),
        "{err:?}"
    );
    // Back as it was: opens and delivers both.
    std::fs::write(&seg, &bytes).unwrap();
    let store = open_at(&path);
    assert_eq!(
        claimed_payloads(&store, "q").await,
        vec![b"payload of a".to_vec(), b"payload of b".to_vec()]
    );
    store.shutdown().await;
}

/// A payload segment that cannot be synced after its commit was written:
/// the batch is answered with an error (its commit stands, and the next
/// open checks it), and the store refuses every later write until a
/// restart, since the kernel may have dropped the pages it could not write.
#[tokio::test]
async fn a_failed_segment_sync_refuses_writes_until_restart() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open_at(&path);
    let kept = enqueue_ok(&store, job("kept", "q", 0)).await;
    store.sqlite().fail_next_segment_sync();
    let err = store
        .enqueue(job("lost", "q", 0), key("evt-x", 1000), None)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let err = store
        .enqueue(job("later", "q", 0), None, None)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(store
        .claim("q", 0, 10, 1000)
        .await
        .unwrap_err()
        .is_unavailable());
    store.shutdown().await;
    drop(store);
    // After a restart writes work again. The refused batch's commit stood
    // and its payload did reach the disk here, so open keeps it: the
    // sender's retry is a duplicate of a job that will be delivered.
    let store = open_at(&path);
    assert!(store.get_job(&kept).await.unwrap().is_some());
    let Enqueued::Duplicate { first_id } = store
        .enqueue(job("lost", "q", 0), key("evt-x", 1000), None)
        .await
        .unwrap()
    else {
        panic!("the refused event's record stands");
    };
    assert_eq!(
        store.get_payload(&first_id).await.unwrap().as_deref(),
        Some(&b"payload of lost"[..])
    );
    enqueue_ok(&store, job("later", "q", 0)).await;
    store.shutdown().await;
}

/// A new segment takes over a retired one's file (a spare) and overwrites
/// its blocks. A power loss that keeps the newest commit but not its
/// payload leaves the spare's old bytes where the payload should be: open
/// must tell them from the payload and drop that batch, never deliver a
/// delivered job's old body as the new job's.
#[tokio::test]
async fn a_spares_old_bytes_are_never_taken_for_a_payload() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let mut opts = StoreOptions::sqlite(&path);
    // 72 bytes a record, 100 a segment: one record each.
    opts.tuning.segment_bytes = 100;
    let body = |tag: &str| format!("{tag:-<60}").into_bytes();
    let store = Store::open(opts.clone()).unwrap();
    for tag in ["a", "b", "c"] {
        let mut j = job(tag, "q", 0);
        j.payload = body(tag).into();
        enqueue_ok(&store, j).await;
    }
    for c in store.claim("q", 0, 10, 1000).await.unwrap() {
        let a = Attempt {
            outcome: "success".into(),
            http_status: Some(200),
            ..Attempt::default()
        };
        assert!(store.finish(&c.lease, a, Next::Done).await.unwrap());
    }
    segments_down_to(&path, 1).await;
    assert_eq!(spares(&path), 2);
    store.shutdown().await;
    drop(store);
    // Open starts a new segment: it takes a spare (which held "a" or "b").
    let spare = path.with_file_name("hookgate.db-payload-spare-0");
    let old = std::fs::read(&spare).unwrap();
    let store = Store::open(opts.clone()).unwrap();
    let mut j = job("d", "q", 0);
    j.payload = body("d").into();
    let d = accepted(store.enqueue(j, key("evt-d", 1000), None).await.unwrap());
    store.shutdown().await;
    drop(store);
    assert_eq!(spares(&path), 1);
    let (name, _) = segments(&path).pop().unwrap();
    let seg = path.with_file_name(name);
    assert_ne!(
        std::fs::read(&seg).unwrap(),
        old,
        "\"d\" went into the spare"
    );
    // The power loss: the overwrite never reached the disk.
    std::fs::write(&seg, &old).unwrap();
    let (store, dropped) = open_counting_dropped(&path);
    assert_eq!(dropped, 1, "the batch of \"d\" is dropped");
    assert!(store.get_job(&d).await.unwrap().is_none());
    // Its sender's retry is accepted anew, and delivers its own body.
    let mut j = job("d", "q", 0);
    j.payload = body("d").into();
    accepted(store.enqueue(j, key("evt-d", 1000), None).await.unwrap());
    assert_eq!(claimed_payloads(&store, "q").await, vec![body("d")]);
    store.shutdown().await;
}

/// A batch's payloads and its commit are synced at the same time, so a
/// power loss can keep the newest commit without (all of) its payloads.
/// Nothing of that batch was answered: open drops its jobs and their dedup
/// records (the sender's retry is accepted anew), and keeps everything
/// older.
#[tokio::test]
async fn a_batch_whose_payloads_did_not_survive_is_dropped_at_open() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open_at(&path);
    let first = accepted(
        store
            .enqueue(job("one", "q", 0), key("evt-1", 1000), None)
            .await
            .unwrap(),
    );
    let second = accepted(
        store
            .enqueue(job("two", "q", 0), key("evt-2", 1000), None)
            .await
            .unwrap(),
    );
    store.shutdown().await;
    drop(store);
    let segs = segments(&path);
    assert_eq!(segs.len(), 1);
    let seg = path.with_file_name(&segs[0].0);
    let bytes = std::fs::read(&seg).unwrap();
    // The newest payload's last byte did not make it.
    let mut damaged = bytes.clone();
    *damaged.last_mut().unwrap() ^= 0xff;
    std::fs::write(&seg, &damaged).unwrap();
    let (store, dropped) = open_counting_dropped(&path);
    assert_eq!(dropped, 1, "the open reports the one job it dropped");
    assert!(
        store.get_job(&second).await.unwrap().is_none(),
        "the unsynced batch is dropped"
    );
    assert!(
        store.get_job(&first).await.unwrap().is_some(),
        "older batches stay"
    );
    assert_eq!(
        store
            .enqueue(job("one", "q", 0), key("evt-1", 1000), None)
            .await
            .unwrap(),
        Enqueued::Duplicate {
            first_id: first.clone()
        }
    );
    // The dropped event's key is free: its sender's retry is accepted.
    let again = accepted(
        store
            .enqueue(job("two", "q", 0), key("evt-2", 1000), None)
            .await
            .unwrap(),
    );
    assert_ne!(again, second);
    assert_eq!(
        claimed_payloads(&store, "q").await,
        vec![b"payload of one".to_vec(), b"payload of two".to_vec()]
    );
    store.shutdown().await;
    drop(store);
    // The newest record cut off altogether (the segment's length did not
    // make it): the same.
    let (store, dropped) = open_counting_dropped(&path);
    assert_eq!(dropped, 0, "an intact store drops nothing");
    let third = accepted(
        store
            .enqueue(job("three", "q", 0), key("evt-3", 1000), None)
            .await
            .unwrap(),
    );
    store.shutdown().await;
    drop(store);
    let segs = segments(&path);
    let newest = path.with_file_name(&segs.last().unwrap().0);
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() - 3]).unwrap();
    let (store, dropped) = open_counting_dropped(&path);
    assert_eq!(dropped, 1);
    assert!(store.get_job(&third).await.unwrap().is_none());
    accepted(
        store
            .enqueue(job("three", "q", 0), key("evt-3", 1000), None)
            .await
            .unwrap(),
    );
    store.shutdown().await;
}

/// A store whose lazy writes wait up to a minute to share a commit.
fn open_with_a_minute_lazy_window(dir: &TempDir) -> Store {
    let mut opts = StoreOptions::sqlite(db_path(dir));
    opts.tuning.lazy_wait = Duration::from_secs(60);
    Store::open(opts).expect("open store")
}

/// An empty lazy write (as an attempt's end is), on a task of its own.
fn spawn_lazy_write(store: &Store) -> tokio::task::JoinHandle<Result<(), StoreError>> {
    let store = store.clone();
    tokio::spawn(async move { store.sqlite().write_lazy(|_| Ok(())).await })
}

/// Waits (at most 20 s, far less than the minute's window) for a lazy
/// write to be committed; `held` says what a timeout means.
async fn committed_within_20s(write: tokio::task::JoinHandle<Result<(), StoreError>>, held: &str) {
    tokio::time::timeout(Duration::from_secs(20), write)
        .await
        .expect(held)
        .unwrap()
        .unwrap();
}

/// Lazy writes wait out their window without waking the writer, so the
/// writer listens for eager writes only: one queued while a lazy write
/// waits must end the window at once, and both commit together. With a
/// window of a minute, a lost wake-up would hold both for that minute.
#[tokio::test]
async fn an_eager_write_ends_a_lazy_window() {
    let dir = TempDir::new().unwrap();
    let store = open_with_a_minute_lazy_window(&dir);
    let before = store.commit_stats();

    let lazy: Vec<_> = (0..3).map(|_| spawn_lazy_write(&store)).collect();
    // Let the writer take the lazy writes and open their window (if it has
    // not yet, the eager write below is simply taken with them).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        store.commit_stats().commits,
        before.commits,
        "lazy writes wait for their window"
    );
    tokio::time::timeout(Duration::from_secs(20), store.sqlite().write(|_| Ok(())))
        .await
        .expect("the eager write was held by the lazy window")
        .unwrap();
    for t in lazy {
        committed_within_20s(t, "a lazy write outlived the eager one").await;
    }
    let after = store.commit_stats();
    assert_eq!(after.requests - before.requests, 4);
    assert_eq!(after.commits - before.commits, 1, "one commit for all four");
    store.shutdown().await;
}

/// `LAZY_MAX` lazy writes waiting end their window without an eager one.
#[tokio::test]
async fn a_full_lazy_queue_ends_the_window() {
    let dir = TempDir::new().unwrap();
    let store = open_with_a_minute_lazy_window(&dir);
    // One first, so the writer holds it in an open window while the rest
    // queue up behind it (none of them wakes the writer but the last).
    let mut writes = vec![spawn_lazy_write(&store)];
    tokio::time::sleep(Duration::from_millis(100)).await;
    writes.extend((1..sqlite::LAZY_MAX).map(|_| spawn_lazy_write(&store)));
    for t in writes {
        committed_within_20s(t, "lazy writes waited out their whole window").await;
    }
    store.shutdown().await;
}

/// Requests queued while the writer is busy are committed together, and a
/// failing request (here: one that stores a job and its key, then fails)
/// does not affect the others, in the file or in memory.
#[tokio::test]
async fn one_batch_isolates_failing_requests() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open_at(&path);
    enqueue_ok(&store, job("existing", "q", 0)).await;
    let before = store.commit_stats();

    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let blocker = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .sqlite()
                .write(move |_| {
                    let _ = started_tx.send(());
                    std::thread::sleep(Duration::from_millis(300));
                    Ok(())
                })
                .await
        })
    };
    started_rx.await.unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            let (j, k) = (job(&format!("n{i}"), "q", 1), key(&format!("e{i}"), 1000));
            tokio::spawn(async move {
                if i != 5 {
                    return store.enqueue(j, k, None).await;
                }
                store
                    .sqlite()
                    .write(move |c| {
                        sqlite::enqueue(c, &j, k.as_ref(), None)?;
                        Err(rusqlite::Error::InvalidQuery)
                    })
                    .await
            })
        })
        .collect();
    blocker.await.unwrap().unwrap();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        if i == 5 {
            let err = r.unwrap_err();
            assert!(matches!(err, StoreError::Other(_)), "{err:?}");
        } else {
            accepted(r.unwrap());
        }
    }
    let after = store.commit_stats();
    assert_eq!(after.requests - before.requests, 11);
    assert_eq!(after.commits - before.commits, 2, "blocker, then one batch");
    assert_eq!(store.dedup_keys(), 9, "the failed request's key was undone");
    let s = store.stats(0).await.unwrap();
    assert_eq!(s[0].pending, 10);
    store.shutdown().await;
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM job"), 10);
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM dedup_record"), 9);
}

/// A real SQLITE_FULL: the writer connection's page budget is capped. The
/// whole batch fails, memory is rolled back with it, and no payload byte
/// reaches the error.
#[tokio::test]
async fn disk_full_is_unavailable_and_leaks_no_payload() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open_at(&path);
    enqueue_ok(&store, job("small", "q", 0)).await;
    store
        .sqlite()
        .write(|c| {
            let pages: i64 = c.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            c.conn.pragma_update(None, "max_page_count", pages)
        })
        .await
        .unwrap();

    // The payload goes to the payload log; the row (a long kind) is what
    // no longer fits in the database.
    let big = || {
        let mut j = job("big", "q", 0);
        j.payload = b"SECRET-PAYLOAD-".repeat(20_000).into();
        j.kind = "k".repeat(300_000);
        j
    };
    let err = store
        .enqueue(big(), key("big-evt", 1000), None)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.to_string().contains("full"), "{err}");
    assert!(!err.to_string().contains("SECRET"));
    assert_eq!(store.dedup_keys(), 0);
    assert_eq!(store.stats(0).await.unwrap()[0].pending, 1);

    // Space comes back: the same event is accepted (it was never recorded).
    store
        .sqlite()
        .write(|c| c.conn.pragma_update(None, "max_page_count", 1_000_000_000))
        .await
        .unwrap();
    let r = store
        .enqueue(big(), key("big-evt", 1000), None)
        .await
        .unwrap();
    accepted(r);
    store.shutdown().await;
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM job"), 2);
}

#[tokio::test]
async fn a_fingerprint_match_is_confirmed_against_the_stored_key() {
    let dir = TempDir::new().unwrap();
    let store = open_at(&db_path(&dir));
    let r = store
        .enqueue(job("a", "q", 0), key("evt-a", 1000), None)
        .await
        .unwrap();
    accepted(r);
    // Forge a collision: point evt-b's fingerprint at evt-a's record.
    {
        let b = store.sqlite();
        let fp = b.fingerprint("github", "evt-b");
        let a = b.fingerprint("github", "evt-a");
        let mut mem = b.mem.lock().unwrap();
        let row = mem.dedup.get(a).unwrap();
        mem.set_dedup(fp, Some(row));
        mem.commit();
    }
    let r = store
        .enqueue(job("b", "q", 0), key("evt-b", 1000), None)
        .await
        .unwrap();
    // A different key is not a duplicate.
    let b = accepted(r);
    let r = store
        .enqueue(job("b2", "q", 0), key("evt-b", 1000), None)
        .await
        .unwrap();
    assert_eq!(r, Enqueued::Duplicate { first_id: b });
    store.shutdown().await;
}

#[tokio::test]
async fn unwritable_location_is_unavailable() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(StoreOptions::sqlite(file.join("hookgate.db"))).unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test]
async fn garbage_file_is_corrupt() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("hookgate.db");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = Store::open(StoreOptions::sqlite(&path)).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

#[tokio::test]
async fn closed_store_refuses_writes_but_still_reads() {
    let dir = TempDir::new().unwrap();
    let store = open_at(&db_path(&dir));
    let j1 = enqueue_ok(&store, job("j1", "q", 0)).await;
    store.ping().await.unwrap();
    store.shutdown().await;
    let err = store
        .enqueue(job("j2", "q", 0), None, None)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(store.ping().await.unwrap_err().is_unavailable());
    let d = store.get_job(&j1).await.unwrap().unwrap();
    assert_eq!(d.summary.state, JobState::Pending);
    // Idempotent.
    store.close();
    store.shutdown().await;
}

#[tokio::test]
async fn migrations_are_recorded_and_newer_schema_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    open_at(&path).shutdown().await;
    open_at(&path).shutdown().await;
    let n = sqlite::schema::MIGRATIONS.len() as i64;
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM schema_version"), n);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("INSERT INTO schema_version (version) VALUES (99)", [])
        .unwrap();
    drop(conn);
    let err = Store::open(StoreOptions::sqlite(&path)).unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}

/// A file written by the first layout (schema 2) is carried forward:
/// pending, inflight, done and dead jobs, attempts and dedup records.
#[tokio::test]
async fn schema_2_files_are_migrated() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE schema_version (version INTEGER PRIMARY KEY)")
            .unwrap();
        for (v, sql) in (1..).zip(&sqlite::schema::MIGRATIONS[..2]) {
            conn.execute_batch(sql).unwrap();
            conn.execute("INSERT INTO schema_version VALUES (?1)", [v])
                .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO jobs (id, queue, kind, payload, state, attempts, created_at, next_at,
                               updated_at, lease_owner, lease_until)
             VALUES ('p', 'q', 'forward', x'01', 'pending', 0, 10, 10, 10, NULL, NULL),
                    ('i', 'q', 'forward', x'02', 'inflight', 0, 11, 11, 11, 'w', 999),
                    ('d', 'q', 'forward', NULL, 'done', 1, 12, 12, 20, NULL, NULL),
                    ('x', 'q', 'forward', x'04', 'dead', 1, 13, 13, 20, NULL, NULL);
             INSERT INTO attempts (job_id, n, started_at, duration_ms, outcome, http_status)
             VALUES ('d', 1, 15, 5, 'success', 200), ('x', 1, 15, 5, 'dead', 404);
             INSERT INTO dedup (scope, key, job_id, expires_at)
             VALUES ('github', 'evt-p', 'p', 1000000);",
        )
        .unwrap();
    }
    let store = open_at(&path);
    let s = store.stats(100).await.unwrap();
    assert_eq!(
        (s[0].pending, s[0].inflight, s[0].done, s[0].dead),
        (2, 0, 1, 1),
        "the old inflight job is pending again"
    );
    assert_eq!(store.get_payload("x").await.unwrap(), Some(vec![4]));
    let d = store.get_job("x").await.unwrap().unwrap();
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(d.attempts[0].http_status, Some(404));
    let r = store
        .enqueue(job("new", "q", 100), key("evt-p", 1_000_000), None)
        .await
        .unwrap();
    // Old ids still resolve; the jobs answer with their new ids.
    let p = store.get_job("p").await.unwrap().unwrap().summary.id;
    let i = store.get_job("i").await.unwrap().unwrap().summary.id;
    assert_ne!(p, "p");
    assert_eq!(
        r,
        Enqueued::Duplicate {
            first_id: p.clone()
        }
    );
    let claimed = store.claim("q", 100, 10, 1000).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec![p.as_str(), i.as_str()]);
    let page = store
        .list_jobs(JobFilter {
            after: Some("p".into()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    // Rows were numbered in the old ids' order (d, i, p, x).
    assert_eq!(page.len(), 1, "an old id works as a cursor");
    assert_eq!(page[0].state, JobState::Dead);
    assert_eq!(claimed[0].payload, vec![1]);
    store.shutdown().await;
}

/// Under writes that never pause, passive checkpoints alone never let the
/// WAL start over; the writer's pause past `wal_restart_bytes` keeps it
/// bounded, without a RESTART checkpoint on the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_stays_bounded_under_sustained_writes() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let mut opts = StoreOptions::sqlite(&path);
    opts.tuning.checkpoint_interval = Duration::from_millis(20);
    opts.tuning.wal_restart_bytes = 512 * 1024;
    let store = Store::open(opts).unwrap();
    let wal = path.with_extension("db-wal");
    let payload = vec![b'x'; 1200];
    let mut peak = 0u64;
    // 16 writers that never pause: 8,000 jobs of 1.2 KB, each attempted
    // once and given up (the payload moves into the database, the attempt
    // keeps a 2 KB response), write far more WAL than the bound below.
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                let queue = format!("q{t}");
                for i in 0..500 {
                    let mut j = job(&format!("j{t:02}-{i:04}"), &queue, i);
                    j.payload = payload.clone().into();
                    let k = key(&format!("e{t}-{i}"), 1_000_000);
                    accepted(store.enqueue(j, k, Some(1_000_000)).await.unwrap());
                    for c in store.claim(&queue, i, 1, 60_000).await.unwrap() {
                        let a = Attempt {
                            started_at: i,
                            duration_ms: 1,
                            outcome: "http_error".into(),
                            http_status: Some(500),
                            response_body: Some(vec![b'r'; 2048]),
                            ..Attempt::default()
                        };
                        assert!(store.finish(&c.lease, a, Next::Dead).await.unwrap());
                    }
                }
            })
        })
        .collect();
    while !tasks.iter().all(|t| t.is_finished()) {
        peak = peak.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.commit_stats().requests, 3 * 8000);
    assert!(
        // Unbounded, these writes grow the WAL past 15 MB; bounded, it
        // peaks near the threshold plus what commits in one checkpoint
        // interval. The margin absorbs a slow machine.
        peak < 8 * 1024 * 1024,
        "WAL reached {peak} bytes with a 512 KiB restart threshold"
    );
    store.shutdown().await;
}

/// Delivered jobs leave no payload behind: the file does not keep growing
/// with every delivered webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_payloads_are_deleted_and_their_space_reused() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let mut opts = StoreOptions::sqlite(&path);
    opts.tuning.segment_bytes = 64 * 1024;
    let store = Store::open(opts).unwrap();
    let mut sizes = Vec::new();
    let attempt = |status: u16| Attempt {
        started_at: 0,
        duration_ms: 1,
        outcome: "x".into(),
        http_status: Some(status),
        ..Attempt::default()
    };
    for round in 0..4 {
        for i in 0..500 {
            let mut j = job(&format!("r{round}-{i:03}"), "q", 0);
            j.payload = vec![b'x'; 1200].into();
            enqueue_ok(&store, j).await;
        }
        // 500 jobs of 1.2 KB fill ten 64 KiB segments.
        assert!(segments(&path).len() >= 9, "{:?}", segments(&path));
        // Half are delivered at once (their payload leaves its segment),
        // half after a retry (their payload moves into the database first).
        for c in store.claim("q", 0, 1000, 1000).await.unwrap() {
            let retry = c.payload.len() == 1200 && c.lease.seq % 2 == 0;
            let (a, next) = if retry {
                (attempt(503), Next::Retry { next_at: 0 })
            } else {
                (attempt(200), Next::Done)
            };
            assert!(store.finish(&c.lease, a, next).await.unwrap());
        }
        for c in store.claim("q", 0, 1000, 1000).await.unwrap() {
            assert_eq!(c.payload, vec![b'x'; 1200], "read back from the database");
            assert!(store
                .finish(&c.lease, attempt(200), Next::Done)
                .await
                .unwrap());
        }
        // Only the active segment is left, and at most two spares.
        let left = segments_down_to(&path, 1).await;
        assert!(left.len() <= 1, "segments left: {left:?}");
        assert!(spares(&path) <= 2, "{} spares", spares(&path));
        sizes.push(raw_count(
            &path,
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        ));
    }
    // Deleted in groups: at most one group waits.
    let waiting = raw_count(&path, "SELECT COUNT(*) FROM payload");
    assert!(waiting < 256, "{waiting} delivered payloads not deleted");
    // Pages freed by the bodies of earlier rounds are reused by later ones
    // (checkpointed or not, the page count is what the file will hold).
    // Each round moves 250 bodies of 1.2 KB (300 KB) into the database and
    // keeps ~70 KB of history (500 jobs, 1,000 attempts); the first rounds
    // differ by what waits in the trash.
    assert!(
        sizes[3] < sizes[1] + 256 * 1024,
        "file kept growing: {sizes:?}"
    );
    store.shutdown().await;
    assert_eq!(
        raw_count(&path, "SELECT COUNT(*) FROM payload"),
        0,
        "the rest goes at shutdown"
    );
}
