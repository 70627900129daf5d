//! Tests of the store against real SQLite files in temporary directories.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use super::*;

fn db_path(dir: &TempDir) -> PathBuf {
    // A missing parent directory is created by open.
    dir.path().join("data").join("hookgate.db")
}

fn open_at(path: &Path) -> Store {
    Store::open_sqlite(SqliteOptions::new(path)).expect("open store")
}

fn open(dir: &TempDir) -> Store {
    open_at(&db_path(dir))
}

fn job(id: &str, queue: &str, at: i64) -> NewJob {
    NewJob {
        id: id.to_owned(),
        queue: queue.to_owned(),
        kind: crate::delivery::job::KIND_FORWARD.to_owned(),
        payload: format!("payload of {id}").into_bytes(),
        created_at: at,
        next_at: at,
    }
}

fn key(k: &str, expires_at: i64) -> Option<DedupKey> {
    Some(DedupKey {
        scope: "github".to_owned(),
        key: k.to_owned(),
        expires_at,
    })
}

fn attempt(started_at: i64, outcome: &str, status: u16) -> Attempt {
    Attempt {
        started_at,
        duration_ms: 10,
        outcome: outcome.to_owned(),
        http_status: Some(status),
        error: None,
        response_body: Some(b"ok".to_vec()),
    }
}

/// Counts rows with an independent connection, i.e. what is on disk.
fn raw_count(path: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).expect("raw open");
    conn.query_row(sql, [], |r| r.get(0)).expect("raw count")
}

async fn enqueue_ok(store: &Store, j: NewJob) {
    assert_eq!(
        store.enqueue(j, None, None).await.unwrap(),
        Enqueued::Accepted
    );
}

async fn state_of(store: &Store, id: &str) -> JobState {
    store.get_job(id).await.unwrap().unwrap().summary.state
}

async fn claim_ids(store: &Store, queue: Option<&str>, now: i64, owner: &str) -> Vec<String> {
    store
        .claim(queue, now, 10, 1000, owner)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect()
}

#[tokio::test]
async fn lifecycle_enqueue_claim_finish_done() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    enqueue_ok(&store, job("j1", "q", 100)).await;
    assert_eq!(state_of(&store, "j1").await, JobState::Pending);

    // Not due yet.
    assert!(store
        .claim(None, 99, 10, 1000, "w1")
        .await
        .unwrap()
        .is_empty());

    let claimed = store.claim(Some("q"), 100, 10, 1000, "w1").await.unwrap();
    assert_eq!(
        claimed,
        vec![ClaimedJob {
            id: "j1".into(),
            queue: "q".into(),
            kind: crate::delivery::job::KIND_FORWARD.into(),
            payload: b"payload of j1".to_vec(),
            attempts: 0,
            created_at: 100,
            cycle_attempts: 0,
            cycle_start: 100,
        }]
    );
    let detail = store.get_job("j1").await.unwrap().unwrap();
    assert_eq!(detail.summary.state, JobState::Inflight);
    assert_eq!(detail.summary.lease_owner.as_deref(), Some("w1"));
    assert_eq!(detail.summary.lease_until, Some(1100));
    assert_eq!(detail.payload_len, Some(13));

    assert!(store
        .finish("j1", "w1", attempt(150, "success", 200), Next::Done)
        .await
        .unwrap());
    let detail = store.get_job("j1").await.unwrap().unwrap();
    assert_eq!(detail.summary.state, JobState::Done);
    assert_eq!(detail.summary.attempts, 1);
    assert_eq!(detail.summary.last_status, Some(200));
    assert_eq!(detail.summary.lease_owner, None);
    assert_eq!(detail.summary.updated_at, 160);
    assert_eq!(detail.payload_len, None, "payload dropped once done");
    assert_eq!(
        detail.attempts,
        vec![AttemptRecord {
            n: 1,
            started_at: 150,
            duration_ms: 10,
            outcome: "success".into(),
            http_status: Some(200),
            error: None,
            response_body: Some(b"ok".to_vec()),
        }]
    );
    assert_eq!(store.get_payload("j1").await.unwrap(), None);
    assert!(claim_ids(&store, None, 10_000, "w1").await.is_empty());
    store.shutdown().await;
}

#[tokio::test]
async fn retry_dead_replay() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    enqueue_ok(&store, job("j1", "q", 0)).await;
    assert_eq!(claim_ids(&store, None, 0, "w1").await, ["j1"]);
    let mut failed = attempt(0, "retry", 500);
    failed.error = Some("upstream said 500".into());
    assert!(store
        .finish("j1", "w1", failed, Next::Retry { next_at: 5000 })
        .await
        .unwrap());
    let summary = store.get_job("j1").await.unwrap().unwrap().summary;
    assert_eq!(summary.state, JobState::Pending);
    assert_eq!(summary.next_at, 5000);
    assert_eq!(summary.last_error.as_deref(), Some("upstream said 500"));

    assert!(claim_ids(&store, None, 4999, "w2").await.is_empty());
    let claimed = store.claim(None, 5000, 10, 1000, "w2").await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].attempts, 1);
    assert_eq!((claimed[0].cycle_attempts, claimed[0].cycle_start), (1, 0));

    assert!(store
        .finish("j1", "w2", attempt(5000, "dead", 410), Next::Dead)
        .await
        .unwrap());
    assert_eq!(state_of(&store, "j1").await, JobState::Dead);
    assert_eq!(
        store.get_payload("j1").await.unwrap().as_deref(),
        Some(&b"payload of j1"[..]),
        "dead jobs keep their payload"
    );
    assert!(claim_ids(&store, None, 1_000_000, "w2").await.is_empty());

    // Only dead jobs replay.
    assert!(!store.replay("nope", 6000).await.unwrap());
    assert!(store.replay("j1", 6000).await.unwrap());
    assert!(!store.replay("j1", 6000).await.unwrap());
    let summary = store.get_job("j1").await.unwrap().unwrap().summary;
    assert_eq!((summary.state, summary.next_at), (JobState::Pending, 6000));

    let claimed = store.claim(None, 6000, 10, 1000, "w3").await.unwrap();
    assert_eq!(claimed[0].attempts, 2, "attempt count survives replay");
    assert_eq!(
        (claimed[0].cycle_attempts, claimed[0].cycle_start),
        (0, 6000),
        "a replay starts a new retry cycle"
    );
    assert!(store
        .finish("j1", "w3", attempt(6000, "success", 200), Next::Done)
        .await
        .unwrap());
    let detail = store.get_job("j1").await.unwrap().unwrap();
    let ns: Vec<u32> = detail.attempts.iter().map(|a| a.n).collect();
    assert_eq!(ns, [1, 2, 3]);
    store.shutdown().await;
}

async fn make_dead(store: &Store, id: &str, queue: &str) {
    enqueue_ok(store, job(id, queue, 0)).await;
    let claimed = store.claim(Some(queue), 0, 1, 1000, "w").await.unwrap();
    assert_eq!(claimed[0].id, id);
    assert!(store
        .finish(id, "w", attempt(0, "dead", 400), Next::Dead)
        .await
        .unwrap());
}

#[tokio::test]
async fn replay_queue_moves_only_that_queues_dead_jobs() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    for id in ["a1", "a2", "a3"] {
        make_dead(&store, id, "a").await;
    }
    make_dead(&store, "b1", "b").await;
    enqueue_ok(&store, job("a4", "a", 0)).await;

    assert_eq!(store.replay_queue("a", 100).await.unwrap(), 3);
    assert_eq!(store.replay_queue("a", 100).await.unwrap(), 0);
    assert_eq!(state_of(&store, "b1").await, JobState::Dead);
    let mut ids = claim_ids(&store, Some("a"), 100, "w").await;
    ids.sort();
    assert_eq!(ids, ["a1", "a2", "a3", "a4"]);
    store.shutdown().await;
}

#[tokio::test]
async fn delete_job_keeps_dedup_and_refuses_late_finish() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open_at(&path);
    let accepted = store.enqueue(job("j1", "q", 0), key("evt-1", 10_000), None);
    assert_eq!(accepted.await.unwrap(), Enqueued::Accepted);
    assert_eq!(claim_ids(&store, None, 0, "w").await, ["j1"]);
    assert!(store
        .finish(
            "j1",
            "w",
            attempt(0, "retry", 503),
            Next::Retry { next_at: 10 }
        )
        .await
        .unwrap());
    assert_eq!(claim_ids(&store, None, 10, "w").await, ["j1"]);

    assert!(store.delete_job("j1").await.unwrap());
    assert!(!store.delete_job("j1").await.unwrap());
    assert_eq!(store.get_job("j1").await.unwrap(), None);
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM attempts"), 0);
    // The worker still holding it cannot resurrect it.
    assert!(!store
        .finish("j1", "w", attempt(20, "success", 200), Next::Done)
        .await
        .unwrap());
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM attempts"), 0);
    // A retry of the same event is still a duplicate of the deleted job.
    let again = store.enqueue(job("j2", "q", 100), key("evt-1", 10_100), None);
    assert_eq!(
        again.await.unwrap(),
        Enqueued::Duplicate {
            first_id: "j1".into()
        }
    );
    store.shutdown().await;
}

#[tokio::test]
async fn cancel_queue_deletes_only_pending_jobs_of_that_queue() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open_at(&path);
    make_dead(&store, "a-dead", "a").await;
    enqueue_ok(&store, job("a-inflight", "a", 1)).await;
    assert_eq!(claim_ids(&store, Some("a"), 1, "w").await, ["a-inflight"]);
    enqueue_ok(&store, job("a-p1", "a", 2)).await;
    enqueue_ok(&store, job("a-p2", "a", 3)).await;
    // A pending job with an attempt history: its attempts go too.
    assert_eq!(claim_ids(&store, Some("a"), 3, "w").await, ["a-p1", "a-p2"]);
    assert!(store
        .finish(
            "a-p1",
            "w",
            attempt(3, "retry", 500),
            Next::Retry { next_at: 50 }
        )
        .await
        .unwrap());
    assert!(store.release("a-p2", "w").await.unwrap());
    enqueue_ok(&store, job("b-p1", "b", 4)).await;

    assert_eq!(store.cancel_queue("a").await.unwrap(), 2);
    assert_eq!(store.get_job("a-p1").await.unwrap(), None);
    assert_eq!(store.get_job("a-p2").await.unwrap(), None);
    assert_eq!(
        raw_count(&path, "SELECT COUNT(*) FROM attempts WHERE job_id = 'a-p1'"),
        0
    );
    assert_eq!(state_of(&store, "a-inflight").await, JobState::Inflight);
    assert_eq!(state_of(&store, "a-dead").await, JobState::Dead);
    assert_eq!(state_of(&store, "b-p1").await, JobState::Pending);
    store.shutdown().await;
}

#[tokio::test]
async fn dedup_window() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open_at(&path);
    let r = store.enqueue(job("j1", "q", 0), key("evt", 1000), None);
    assert_eq!(r.await.unwrap(), Enqueued::Accepted);

    // Within the window: the first id, and nothing written.
    let r = store.enqueue(job("j2", "q", 999), key("evt", 1999), None);
    assert_eq!(
        r.await.unwrap(),
        Enqueued::Duplicate {
            first_id: "j1".into()
        }
    );
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM jobs"), 1);
    assert_eq!(
        raw_count(&path, "SELECT expires_at FROM dedup WHERE key = 'evt'"),
        1000
    );

    // Same key in another scope is a different event.
    let other_scope = Some(DedupKey {
        scope: "stripe".into(),
        key: "evt".into(),
        expires_at: 1000,
    });
    let r = store.enqueue(job("s1", "q", 10), other_scope, None);
    assert_eq!(r.await.unwrap(), Enqueued::Accepted);

    // At expiry the key is free again; the row now points at the new job.
    let r = store.enqueue(job("j3", "q", 1000), key("evt", 2000), None);
    assert_eq!(r.await.unwrap(), Enqueued::Accepted);
    let r = store.enqueue(job("j4", "q", 1500), key("evt", 2500), None);
    assert_eq!(
        r.await.unwrap(),
        Enqueued::Duplicate {
            first_id: "j3".into()
        }
    );
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM jobs"), 3);
    store.shutdown().await;
}

#[tokio::test]
async fn dedup_and_jobs_survive_reopen() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open_at(&path);
    let r = store.enqueue(job("j1", "q", 0), key("evt", 60_000), None);
    assert_eq!(r.await.unwrap(), Enqueued::Accepted);

    // Before any shutdown: the commit is visible to an independent
    // connection and to a fresh Store on the same file.
    assert_eq!(
        raw_count(&path, "SELECT COUNT(*) FROM jobs WHERE id = 'j1'"),
        1
    );
    assert_eq!(
        raw_count(&path, "SELECT COUNT(*) FROM dedup WHERE job_id = 'j1'"),
        1
    );
    let fresh = open_at(&path);
    assert_eq!(state_of(&fresh, "j1").await, JobState::Pending);
    fresh.shutdown().await;
    store.shutdown().await;

    let reopened = open_at(&path);
    let r = reopened.enqueue(job("j2", "q", 30_000), key("evt", 90_000), None);
    assert_eq!(
        r.await.unwrap(),
        Enqueued::Duplicate {
            first_id: "j1".into()
        }
    );
    assert_eq!(
        reopened.get_payload("j1").await.unwrap().as_deref(),
        Some(&b"payload of j1"[..])
    );
    reopened.shutdown().await;
    // The final checkpoint folded the WAL into the database file.
    let wal = path.with_extension("db-wal");
    assert!(std::fs::metadata(&wal)
        .map(|m| m.len() == 0)
        .unwrap_or(true));
}

#[tokio::test]
async fn queue_full_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open_at(&path);
    for (i, id) in ["j1", "j2"].into_iter().enumerate() {
        let r = store.enqueue(job(id, "q", 0), key(&format!("e{i}"), 1000), Some(2));
        assert_eq!(r.await.unwrap(), Enqueued::Accepted);
    }
    // Inflight jobs count too.
    assert_eq!(store.claim(None, 0, 1, 1000, "w").await.unwrap().len(), 1);
    let r = store.enqueue(job("j3", "q", 0), key("e3", 1000), Some(2));
    assert_eq!(r.await.unwrap(), Enqueued::QueueFull);
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM jobs"), 2);
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM dedup"), 2);
    // Other queues are not affected, nor is an unlimited enqueue.
    let r = store.enqueue(job("k1", "other", 0), None, Some(2));
    assert_eq!(r.await.unwrap(), Enqueued::Accepted);

    // Once a job is done there is room again, and e3 was never recorded.
    assert!(store
        .finish("j1", "w", attempt(0, "success", 200), Next::Done)
        .await
        .unwrap());
    let r = store.enqueue(job("j3", "q", 0), key("e3", 1000), Some(2));
    assert_eq!(r.await.unwrap(), Enqueued::Accepted);
    store.shutdown().await;
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
        assert_eq!(t.await.unwrap().unwrap(), Enqueued::Accepted);
    }
    let after = store.commit_stats();
    let requests = after.requests - before.requests;
    let commits = after.commits - before.commits;
    assert_eq!(requests, 200);
    assert!(
        commits < requests,
        "{commits} commits for {requests} requests"
    );
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM jobs"), 200);
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM dedup"), 200);
    store.shutdown().await;
}

/// Requests queued while the writer is busy are committed together, and a
/// failing request (duplicate job id) does not affect the others.
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
                .backend
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
            let id = if i == 5 {
                "existing".to_owned()
            } else {
                format!("n{i}")
            };
            tokio::spawn(async move { store.enqueue(job(&id, "q", 1), None, None).await })
        })
        .collect();
    blocker.await.unwrap().unwrap();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        if i == 5 {
            let err = r.unwrap_err();
            assert!(matches!(err, StoreError::Other(_)), "{err:?}");
        } else {
            assert_eq!(r.unwrap(), Enqueued::Accepted);
        }
    }
    let after = store.commit_stats();
    assert_eq!(after.requests - before.requests, 11);
    assert_eq!(after.commits - before.commits, 2, "blocker, then one batch");
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM jobs"), 10);
    store.shutdown().await;
}

#[tokio::test]
async fn expired_lease_is_claimable_and_late_finish_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open_at(&path);
    enqueue_ok(&store, job("j1", "q", 0)).await;
    assert_eq!(store.claim(None, 0, 10, 1000, "w1").await.unwrap().len(), 1);
    assert!(store
        .claim(None, 500, 10, 1000, "w2")
        .await
        .unwrap()
        .is_empty());
    let again = store.claim(None, 1500, 10, 1000, "w2").await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 0);

    assert!(!store
        .finish("j1", "w1", attempt(1600, "success", 200), Next::Done)
        .await
        .unwrap());
    assert!(!store.release("j1", "w1").await.unwrap());
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM attempts"), 0);
    let summary = store.get_job("j1").await.unwrap().unwrap().summary;
    assert_eq!(summary.lease_owner.as_deref(), Some("w2"));
    assert_eq!(summary.lease_until, Some(2500));

    // The current owner can still finish.
    assert!(store
        .finish("j1", "w2", attempt(1600, "success", 200), Next::Done)
        .await
        .unwrap());
    store.shutdown().await;
}

#[tokio::test]
async fn release_puts_job_back_without_an_attempt() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    enqueue_ok(&store, job("j1", "q", 0)).await;
    assert_eq!(claim_ids(&store, None, 0, "w1").await, ["j1"]);
    assert!(!store.release("j1", "w2").await.unwrap());
    assert!(store.release("j1", "w1").await.unwrap());
    let claimed = store.claim(None, 1, 10, 1000, "w2").await.unwrap();
    assert_eq!(claimed[0].attempts, 0);
    store.shutdown().await;
}

#[tokio::test]
async fn claim_order_limit_and_queue_filter() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let mut late = job("a-late", "a", 0);
    late.next_at = 300;
    enqueue_ok(&store, late).await;
    enqueue_ok(&store, job("a-early", "a", 100)).await;
    enqueue_ok(&store, job("b-first", "b", 50)).await;
    enqueue_ok(&store, job("a-mid", "a", 200)).await;

    assert!(claim_ids(&store, Some("c"), 1000, "w").await.is_empty());
    let first_two: Vec<String> = store
        .claim(Some("a"), 1000, 2, 100, "w")
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(first_two, ["a-early", "a-mid"]);
    // a-early and a-mid leases expire at 1100; they come back ordered by
    // next_at together with the still pending jobs.
    assert_eq!(
        claim_ids(&store, None, 1100, "w2").await,
        ["b-first", "a-early", "a-mid", "a-late"]
    );
    assert!(store
        .claim(None, 1100, 0, 100, "w")
        .await
        .unwrap()
        .is_empty());
    store.shutdown().await;
}

#[tokio::test]
async fn finish_truncates_response_body_and_error() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    enqueue_ok(&store, job("j1", "q", 0)).await;
    claim_ids(&store, None, 0, "w").await;
    let mut a = attempt(0, "retry", 502);
    a.response_body = Some(vec![b'x'; RESPONSE_BODY_CAP * 2]);
    a.error = Some("é".repeat(ERROR_TEXT_CAP)); // 2 bytes per char
    assert!(store
        .finish("j1", "w", a, Next::Retry { next_at: 1 })
        .await
        .unwrap());
    let detail = store.get_job("j1").await.unwrap().unwrap();
    let recorded = &detail.attempts[0];
    assert_eq!(
        recorded.response_body.as_ref().map(Vec::len),
        Some(RESPONSE_BODY_CAP)
    );
    let error = recorded.error.as_deref().unwrap();
    assert_eq!(error.len(), ERROR_TEXT_CAP);
    assert_eq!(detail.summary.last_error.as_deref(), Some(error));
    store.shutdown().await;
}

#[tokio::test]
async fn list_jobs_filters_and_paginates() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    for i in 1..=5 {
        enqueue_ok(&store, job(&format!("j{i}"), "a", i)).await;
    }
    enqueue_ok(&store, job("k1", "b", 0)).await;
    make_dead(&store, "j6", "a").await;

    let ids = |jobs: Vec<JobSummary>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    let page = JobFilter {
        queue: Some("a".into()),
        limit: 2,
        ..JobFilter::default()
    };
    assert_eq!(
        ids(store.list_jobs(page.clone()).await.unwrap()),
        ["j1", "j2"]
    );
    let next = JobFilter {
        after: Some("j2".into()),
        ..page.clone()
    };
    assert_eq!(ids(store.list_jobs(next).await.unwrap()), ["j3", "j4"]);
    let dead = JobFilter {
        state: Some(JobState::Dead),
        ..JobFilter::default()
    };
    let dead = store.list_jobs(dead).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, "j6");
    assert_eq!(dead[0].last_status, Some(400));
    assert_eq!(
        store.list_jobs(JobFilter::default()).await.unwrap().len(),
        7
    );
    let none = JobFilter {
        limit: 0,
        ..JobFilter::default()
    };
    assert!(store.list_jobs(none).await.unwrap().is_empty());
    store.shutdown().await;
}

#[tokio::test]
async fn stats_per_queue() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    make_dead(&store, "a-dead", "a").await;
    enqueue_ok(&store, job("a-done", "a", 10)).await;
    assert_eq!(claim_ids(&store, Some("a"), 10, "w").await, ["a-done"]);
    assert!(store
        .finish("a-done", "w", attempt(10, "success", 200), Next::Done)
        .await
        .unwrap());
    enqueue_ok(&store, job("a-inflight", "a", 20)).await;
    assert_eq!(claim_ids(&store, Some("a"), 20, "w").await, ["a-inflight"]);
    enqueue_ok(&store, job("a-p1", "a", 100)).await;
    enqueue_ok(&store, job("a-p2", "a", 200)).await;
    enqueue_ok(&store, job("b-p1", "b", 2000)).await;

    let stats = store.stats(1000).await.unwrap();
    assert_eq!(
        stats,
        vec![
            QueueStats {
                queue: "a".into(),
                pending: 2,
                inflight: 1,
                dead: 1,
                done: 1,
                oldest_pending_age_ms: Some(900),
            },
            QueueStats {
                queue: "b".into(),
                pending: 1,
                oldest_pending_age_ms: Some(0),
                ..QueueStats::default()
            },
        ]
    );
    store.shutdown().await;
}

#[tokio::test]
async fn purge_removes_expired_dedup_and_old_done_jobs() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open_at(&path);
    for (id, expires) in [("old", 100), ("new", 10_000)] {
        let r = store.enqueue(job(id, "q", 0), key(id, expires), None);
        assert_eq!(r.await.unwrap(), Enqueued::Accepted);
        assert_eq!(claim_ids(&store, None, 0, "w").await, [id]);
    }
    // "old" finished at 110, "new" at 5010.
    assert!(store
        .finish("old", "w", attempt(100, "success", 200), Next::Done)
        .await
        .unwrap());
    assert!(store
        .finish("new", "w", attempt(5000, "success", 200), Next::Done)
        .await
        .unwrap());
    make_dead(&store, "dead", "q").await;

    let stats = store.purge(1000, 1000).await.unwrap();
    assert_eq!(
        stats,
        PurgeStats {
            dedup_removed: 1,
            jobs_removed: 1,
            attempts_removed: 1,
            more: false,
        }
    );
    assert_eq!(store.get_job("old").await.unwrap(), None);
    assert_eq!(state_of(&store, "new").await, JobState::Done);
    assert_eq!(state_of(&store, "dead").await, JobState::Dead);
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM dedup"), 1);
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM attempts"), 2);
    assert_eq!(
        store.purge(1000, 1000).await.unwrap(),
        PurgeStats::default()
    );
    store.shutdown().await;
}

#[tokio::test]
async fn unwritable_location_is_unavailable() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open_sqlite(SqliteOptions::new(file.join("hookgate.db"))).unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test]
async fn garbage_file_is_corrupt() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("hookgate.db");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = Store::open_sqlite(SqliteOptions::new(&path)).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

#[tokio::test]
async fn closed_store_refuses_writes_but_still_reads() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    enqueue_ok(&store, job("j1", "q", 0)).await;
    store.ping().await.unwrap();
    store.shutdown().await;
    let err = store
        .enqueue(job("j2", "q", 0), None, None)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(store.ping().await.unwrap_err().is_unavailable());
    assert_eq!(state_of(&store, "j1").await, JobState::Pending);
    // Idempotent.
    store.close();
    store.shutdown().await;
}

/// A real SQLITE_FULL: the writer connection's page budget is capped.
#[tokio::test]
async fn disk_full_is_unavailable_and_leaks_no_payload() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open_at(&path);
    enqueue_ok(&store, job("small", "q", 0)).await;
    store
        .backend
        .write(|c| {
            let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            c.pragma_update(None, "max_page_count", pages)
        })
        .await
        .unwrap();

    let mut big = job("big", "q", 0);
    big.payload = b"SECRET-PAYLOAD-".repeat(20_000);
    let err = store
        .enqueue(big, key("big-evt", 1000), None)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.to_string().contains("full"), "{err}");
    assert!(!err.to_string().contains("SECRET"));
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM jobs"), 1);
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM dedup"), 0);

    // Space comes back: the same event is accepted (it was never recorded).
    store
        .backend
        .write(|c| c.pragma_update(None, "max_page_count", 1_000_000_000))
        .await
        .unwrap();
    let mut big = job("big", "q", 0);
    big.payload = b"SECRET-PAYLOAD-".repeat(20_000);
    let r = store
        .enqueue(big, key("big-evt", 1000), None)
        .await
        .unwrap();
    assert_eq!(r, Enqueued::Accepted);
    store.shutdown().await;
}

#[tokio::test]
async fn migrations_are_recorded_and_newer_schema_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    open_at(&path).shutdown().await;
    open_at(&path).shutdown().await;
    assert_eq!(raw_count(&path, "SELECT COUNT(*) FROM schema_version"), 2);
    assert_eq!(
        raw_count(&path, "SELECT MAX(version) FROM schema_version"),
        2
    );

    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("INSERT INTO schema_version (version) VALUES (99)", [])
        .unwrap();
    drop(conn);
    let err = Store::open_sqlite(SqliteOptions::new(&path)).unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}

/// `queue_counts` (migration 2, kept by triggers) must equal the count of
/// jobs per queue and state after any mix of operations, including
/// requests whose savepoint is rolled back inside a committed batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_counts_match_the_rows_under_random_operations() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open_at(&path);
    let queues = ["qa", "qb", "qc"];
    // A small deterministic generator (xorshift): reproducible, no new dependency.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut ids: Vec<String> = Vec::new();
    let mut now = 1_000i64;
    for step in 0..600u64 {
        now += 1;
        let queue = queues[next(3) as usize];
        match next(9) {
            0..=2 => {
                let id = format!("j{step:05}");
                // Duplicates of an earlier key and a tight limit exercise the
                // two refusals, which must write nothing.
                let dedup = key(&format!("e{}", next(400)), now + 50);
                let limit = if next(4) == 0 { Some(next(6)) } else { None };
                let mut j = job(&id, queue, now);
                j.next_at = now;
                if store.enqueue(j, dedup, limit).await.unwrap() == Enqueued::Accepted {
                    ids.push(id);
                }
            }
            3 => {
                let q = if next(2) == 0 { Some(queue) } else { None };
                store
                    .claim(q, now, 1 + next(4) as usize, 5, "w")
                    .await
                    .unwrap();
            }
            4 => {
                let claimed = store.claim(Some(queue), now, 1, 5, "w").await.unwrap();
                for c in claimed {
                    let next_step = match next(3) {
                        0 => Next::Done,
                        1 => Next::Dead,
                        _ => Next::Retry { next_at: now + 3 },
                    };
                    store
                        .finish(&c.id, "w", attempt(now, "x", 500), next_step)
                        .await
                        .unwrap();
                }
            }
            5 => {
                store.replay_queue(queue, now).await.unwrap();
            }
            6 if !ids.is_empty() => {
                let id = ids.swap_remove(next(ids.len() as u64) as usize);
                store.delete_job(&id).await.unwrap();
            }
            7 => {
                store.cancel_queue(queue).await.unwrap();
            }
            _ if !ids.is_empty() => {
                let id = &ids[next(ids.len() as u64) as usize];
                store.replay(id, now).await.unwrap();
                store.release(id, "w").await.unwrap();
            }
            _ => {}
        }
        if step % 50 == 49 {
            assert_queue_counts_consistent(&path);
        }
    }
    // A request that fails inside a batch rolls back its own trigger writes:
    // the same id twice in one batch, the second insert violating the key.
    let a = store.enqueue(job("same", "qa", now), None, None);
    let b = store.enqueue(job("same", "qa", now), None, None);
    let (a, b) = tokio::join!(a, b);
    assert!(
        a.is_ok() != b.is_ok(),
        "exactly one of two equal ids is accepted"
    );
    assert_queue_counts_consistent(&path);
    // `stats` (counters + the partial index) says what a full scan says.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut scanned = conn
        .prepare(
            "SELECT queue,
                    SUM(state = 'pending'), SUM(state = 'inflight'),
                    SUM(state = 'dead'), SUM(state = 'done'),
                    MIN(CASE WHEN state = 'pending' THEN created_at END)
             FROM jobs GROUP BY queue ORDER BY queue",
        )
        .unwrap()
        .query_map([], |r| {
            Ok(QueueStats {
                queue: r.get(0)?,
                pending: r.get::<_, i64>(1)? as u64,
                inflight: r.get::<_, i64>(2)? as u64,
                dead: r.get::<_, i64>(3)? as u64,
                done: r.get::<_, i64>(4)? as u64,
                oldest_pending_age_ms: r.get::<_, Option<i64>>(5)?.map(|t| (now + 7 - t).max(0)),
            })
        })
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    scanned.retain(|q| q.pending + q.inflight + q.dead + q.done > 0);
    assert!(
        scanned.iter().any(|q| q.pending > 0 && q.done > 0),
        "the operations left pending and done jobs: {scanned:?}"
    );
    assert_eq!(store.stats(now + 7).await.unwrap(), scanned);
    store.shutdown().await;
}

fn assert_queue_counts_consistent(path: &Path) {
    let conn = rusqlite::Connection::open(path).expect("raw open");
    let mismatches: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM (
                 SELECT queue, state, COUNT(*) AS n FROM jobs GROUP BY queue, state) AS real
             FULL OUTER JOIN queue_counts AS kept
                 ON kept.queue = real.queue AND kept.state = real.state
             WHERE COALESCE(kept.n, 0) <> COALESCE(real.n, 0)",
            [],
            |r| r.get(0),
        )
        .expect("compare counters");
    assert_eq!(mismatches, 0, "queue_counts disagrees with the jobs table");
}

/// A database written by schema 1 (no `queue_counts`) is upgraded with the
/// counters backfilled from the rows already there.
#[tokio::test]
async fn migration_2_backfills_the_counters() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(sqlite::MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY);
             INSERT INTO schema_version (version) VALUES (1);
             INSERT INTO jobs (id, queue, kind, state, created_at, next_at, updated_at) VALUES
                 ('a', 'q1', 'forward', 'pending', 0, 0, 0),
                 ('b', 'q1', 'forward', 'inflight', 0, 0, 0),
                 ('c', 'q1', 'forward', 'dead', 0, 0, 0),
                 ('d', 'q2', 'forward', 'done', 0, 0, 0);",
        )
        .unwrap();
    }
    let store = open_at(&path);
    assert_queue_counts_consistent(&path);
    assert_eq!(
        raw_count(
            &path,
            "SELECT SUM(n) FROM queue_counts WHERE queue = 'q1' AND state IN ('pending', 'inflight')"
        ),
        2
    );
    // The limit now counts the two active jobs of q1.
    let r = store
        .enqueue(job("e", "q1", 1), None, Some(2))
        .await
        .unwrap();
    assert_eq!(r, Enqueued::QueueFull);
    let r = store
        .enqueue(job("e", "q1", 1), None, Some(3))
        .await
        .unwrap();
    assert_eq!(r, Enqueued::Accepted);
    store.shutdown().await;
}

/// Under writes that never pause, passive checkpoints alone never catch up
/// and the WAL would grow with every commit; the RESTART past
/// `wal_restart_bytes` keeps it bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_stays_bounded_under_sustained_writes() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let mut opts = SqliteOptions::new(&path);
    opts.checkpoint_interval = Duration::from_millis(20);
    opts.wal_restart_bytes = 512 * 1024;
    let store = Store::open_sqlite(opts).unwrap();
    let wal = path.with_extension("db-wal");
    let payload = vec![b'x'; 1200];
    let mut peak = 0u64;
    // 16 writers that never pause: 8,000 jobs of 1.2 KB write far more WAL
    // than the bound below (each commit rewrites whole pages).
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                for i in 0..500 {
                    let mut j = job(&format!("j{t:02}-{i:04}"), "q", i);
                    j.payload = payload.clone();
                    let k = key(&format!("e{t}-{i}"), 1_000_000);
                    assert_eq!(
                        store.enqueue(j, k, Some(1_000_000)).await.unwrap(),
                        Enqueued::Accepted
                    );
                }
            })
        })
        .collect();
    let watch = async {
        while !tasks.iter().all(|t| t.is_finished()) {
            peak = peak.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    watch.await;
    for t in tasks {
        t.await.unwrap();
    }
    let written = store.commit_stats();
    assert_eq!(written.requests, 8000);
    assert!(
        // Unbounded, these writes grow the WAL past 100 MB; bounded, it
        // peaks at a few MB (the threshold plus what commits in one
        // checkpoint interval). The margin absorbs a slow machine.
        peak < 32 * 1024 * 1024,
        "WAL reached {peak} bytes with a 512 KiB restart threshold"
    );
    store.shutdown().await;
}
