//! The store's conformance suite: what every backend must do, through the
//! public [`Store`] API only.
//!
//! Each check is an `async fn` taking a [`Fixture`] that opens (and
//! reopens) one durable store; `conformance_tests!` instantiates every check
//! for a backend. SQLite runs them below; the Postgres backend will add one
//! more `conformance_tests!` line with its own fixture.
//!
//! What is covered: the lifecycle, dedup atomicity (a refused request
//! writes nothing), duplicates after a restart, the queue limit, leases
//! (expiry, fencing, release), attempts counted before they start (a crash
//! during an attempt still counts), retries, dead letters and replay, moving
//! and deleting queues, purge, lists and stats, and a model-based run of
//! random operations whose counters must match the rows, also after reopen.

use std::collections::HashMap;

use super::*;

/// Opens one durable store, again and again (a reopen is a restart).
pub(super) trait Fixture {
    fn open(&self) -> Store;
    /// Opens with `max_keys` dedup keys per scope.
    fn open_with_max_keys(&self, max_keys: u64) -> Store;
}

/// A job whose payload names it (`tag`).
pub(super) fn job(tag: &str, queue: &str, at: i64) -> NewJob {
    NewJob {
        queue: queue.to_owned(),
        kind: "forward".to_owned(),
        payload: format!("payload of {tag}").into_bytes().into(),
        created_at: at,
        next_at: at,
        label: None,
    }
}

pub(super) fn key(k: &str, expires_at: i64) -> Option<DedupKey> {
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

/// Enqueues without a dedup key; answers the new job's id.
pub(super) async fn enqueue_ok(store: &Store, j: NewJob) -> String {
    accepted(store.enqueue(j, None, None).await.unwrap())
}

/// The id of an `Accepted` answer; panics on any other.
pub(super) fn accepted(e: Enqueued) -> String {
    match e {
        Enqueued::Accepted { id } => id,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

/// Purges expired dedup records at `now` (no job is old enough) until the
/// purge says it is done; answers the records removed and the steps taken.
async fn purge_dedup_until_done(store: &Store, now: i64) -> (u64, u32) {
    let (mut removed, mut calls) = (0, 0);
    loop {
        let p = store
            .purge(PurgePolicy {
                now,
                done_before: 0,
                dead_before: 0,
            })
            .await
            .unwrap();
        removed += p.dedup_removed;
        calls += 1;
        if !p.more {
            return (removed, calls);
        }
    }
}

async fn state_of(store: &Store, id: &str) -> JobState {
    store.get_job(id).await.unwrap().unwrap().summary.state
}

async fn claim_one(store: &Store, queue: &str, now: i64) -> ClaimedJob {
    let mut jobs = store.claim(queue, now, 1, 1000).await.unwrap();
    assert_eq!(jobs.len(), 1, "one job due in {queue} at {now}");
    jobs.remove(0)
}

async fn claim_ids(store: &Store, queue: &str, now: i64) -> Vec<String> {
    store
        .claim(queue, now, 10, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect()
}

fn stats_of(stats: &[QueueStats], queue: &str) -> QueueStats {
    stats
        .iter()
        .find(|s| s.queue == queue)
        .cloned()
        .unwrap_or(QueueStats {
            queue: queue.to_owned(),
            ..QueueStats::default()
        })
}

pub(super) async fn lifecycle(f: &dyn Fixture) {
    let store = f.open();
    let j1 = enqueue_ok(&store, job("j1", "q", 100)).await;
    assert_eq!(state_of(&store, &j1).await, JobState::Pending);
    assert!(
        store.claim("q", 99, 10, 1000).await.unwrap().is_empty(),
        "not due yet"
    );
    assert!(store
        .claim("other", 100, 10, 1000)
        .await
        .unwrap()
        .is_empty());

    let c = claim_one(&store, "q", 100).await;
    assert_eq!(
        (c.id.as_str(), c.queue.as_str(), c.kind.as_str()),
        (j1.as_str(), "q", "forward")
    );
    assert_eq!(c.payload, b"payload of j1");
    assert_eq!((c.attempts, c.cycle_attempts, c.interrupted), (0, 0, 0));
    assert_eq!((c.created_at, c.cycle_start), (100, 100));
    assert_eq!(c.lease.job_id(), j1);
    let d = store.get_job(&j1).await.unwrap().unwrap();
    assert_eq!(d.summary.state, JobState::Inflight);
    assert_eq!(d.summary.lease_until, Some(1100));
    assert_eq!(d.payload_len, Some(13));
    // The claim counted the attempt before it started.
    assert_eq!(d.summary.attempts, 1);
    assert_eq!(d.attempts[0].outcome, OUTCOME_INTERRUPTED);
    assert_eq!(d.attempts[0].duration_ms, None);

    assert!(store
        .finish(&c.lease, attempt(150, "success", 200), Next::Done)
        .await
        .unwrap());
    let d = store.get_job(&j1).await.unwrap().unwrap();
    assert_eq!(d.summary.state, JobState::Done);
    assert_eq!(d.summary.attempts, 1);
    assert_eq!(d.summary.last_status, Some(200));
    assert_eq!(d.summary.lease_until, None);
    assert_eq!(d.summary.updated_at, 160);
    assert_eq!(d.payload_len, None, "payload dropped once done");
    assert_eq!(
        d.attempts,
        vec![AttemptRecord {
            n: 1,
            started_at: 150,
            duration_ms: Some(10),
            outcome: "success".into(),
            http_status: Some(200),
            error: None,
            response_body: Some(b"ok".to_vec()),
        }]
    );
    assert_eq!(store.get_payload(&j1).await.unwrap(), None);
    assert!(claim_ids(&store, "q", 10_000).await.is_empty());
    // A finished lease cannot finish twice.
    assert!(!store
        .finish(&c.lease, attempt(200, "success", 200), Next::Done)
        .await
        .unwrap());
    store.shutdown().await;
}

pub(super) async fn retry_dead_and_replay(f: &dyn Fixture) {
    let store = f.open();
    let j1 = enqueue_ok(&store, job("j1", "q", 0)).await;
    let c = claim_one(&store, "q", 0).await;
    let mut a = attempt(0, "retry", 503);
    a.error = Some("e".repeat(ERROR_TEXT_CAP + 100));
    a.response_body = Some(vec![b'x'; RESPONSE_BODY_CAP + 100]);
    assert!(store
        .finish(&c.lease, a, Next::Retry { next_at: 500 })
        .await
        .unwrap());
    let d = store.get_job(&j1).await.unwrap().unwrap();
    assert_eq!(d.summary.state, JobState::Pending);
    assert_eq!(d.summary.next_at, 500);
    assert_eq!(
        d.attempts[0].error.as_deref().map(str::len),
        Some(ERROR_TEXT_CAP)
    );
    assert_eq!(
        d.attempts[0].response_body.as_deref().map(<[u8]>::len),
        Some(RESPONSE_BODY_CAP)
    );
    assert!(
        claim_ids(&store, "q", 499).await.is_empty(),
        "not before next_at"
    );

    let c = claim_one(&store, "q", 500).await;
    assert_eq!((c.attempts, c.cycle_attempts), (1, 1));
    assert!(store
        .finish(&c.lease, attempt(500, "dead", 404), Next::Dead)
        .await
        .unwrap());
    assert_eq!(state_of(&store, &j1).await, JobState::Dead);
    assert!(
        store.get_payload(&j1).await.unwrap().is_some(),
        "dead keeps its payload"
    );
    assert!(claim_ids(&store, "q", 1_000_000).await.is_empty());

    // Replay: pending again, a new retry cycle, history kept and numbered on.
    assert!(!store.replay("nope", 600).await.unwrap());
    assert!(store.replay(&j1, 600).await.unwrap());
    assert!(!store.replay(&j1, 600).await.unwrap(), "only dead jobs");
    let c = claim_one(&store, "q", 600).await;
    assert_eq!((c.attempts, c.cycle_attempts, c.cycle_start), (2, 0, 600));
    assert!(store
        .finish(&c.lease, attempt(600, "success", 200), Next::Done)
        .await
        .unwrap());
    let d = store.get_job(&j1).await.unwrap().unwrap();
    let ns: Vec<u32> = d.attempts.iter().map(|a| a.n).collect();
    assert_eq!(ns, vec![1, 2, 3]);
    store.shutdown().await;
}

/// Dedup and the job are one transaction; a refused request writes nothing.
pub(super) async fn dedup_atomicity(f: &dyn Fixture) {
    let store = f.open();
    let j1 = accepted(
        store
            .enqueue(job("j1", "q", 100), key("evt", 1000), None)
            .await
            .unwrap(),
    );
    assert_eq!(
        store
            .enqueue(job("j2", "q", 200), key("evt", 2000), None)
            .await
            .unwrap(),
        Enqueued::Duplicate {
            first_id: j1.clone()
        }
    );
    let s = stats_of(&store.stats(200).await.unwrap(), "q");
    assert_eq!(s.pending, 1, "the duplicate wrote nothing");
    // Another scope, another key space.
    let mut other = key("evt", 1000);
    other.as_mut().unwrap().scope = "stripe".into();
    accepted(
        store
            .enqueue(job("j3", "q", 200), other, None)
            .await
            .unwrap(),
    );
    // The window ends at expires_at: then the same id is a new event.
    let j4 = accepted(
        store
            .enqueue(job("j4", "q", 1000), key("evt", 5000), None)
            .await
            .unwrap(),
    );
    assert_eq!(
        store
            .enqueue(job("j5", "q", 1001), key("evt", 5000), None)
            .await
            .unwrap(),
        Enqueued::Duplicate {
            first_id: j4.clone()
        }
    );
    let j6 = accepted(
        store
            .enqueue(job("j6", "q", 1003), key("fresh", 5000), None)
            .await
            .unwrap(),
    );
    // Deleting a job keeps its dedup record: a retry is still a duplicate.
    assert!(store.delete_job(&j6).await.unwrap());
    assert_eq!(
        store
            .enqueue(job("j7", "q", 1004), key("fresh", 5000), None)
            .await
            .unwrap(),
        Enqueued::Duplicate {
            first_id: j6.clone()
        }
    );
    store.shutdown().await;
}

pub(super) async fn duplicate_after_restart(f: &dyn Fixture) {
    let store = f.open();
    let mut ids = Vec::new();
    for i in 0..50 {
        let k = key(&format!("evt-{i}"), 10_000);
        ids.push(accepted(
            store
                .enqueue(job(&format!("j{i:02}"), "q", 100), k, None)
                .await
                .unwrap(),
        ));
    }
    let c = claim_one(&store, "q", 100).await;
    assert!(store
        .finish(&c.lease, attempt(100, "success", 200), Next::Done)
        .await
        .unwrap());
    store.shutdown().await;
    drop(store);

    let store = f.open();
    assert_eq!(store.dedup_keys(), 50);
    for (i, first) in ids.iter().enumerate() {
        let r = store
            .enqueue(
                job(&format!("again{i}"), "q", 200),
                key(&format!("evt-{i}"), 10_000),
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            r,
            Enqueued::Duplicate {
                first_id: first.clone()
            }
        );
    }
    let s = stats_of(&store.stats(200).await.unwrap(), "q");
    assert_eq!((s.pending, s.done, s.inflight), (49, 1, 0));
    store.shutdown().await;
}

pub(super) async fn queue_limit_writes_nothing(f: &dyn Fixture) {
    let store = f.open();
    for i in 0..3 {
        accepted(
            store
                .enqueue(job(&format!("j{i}"), "q", 0), None, Some(3))
                .await
                .unwrap(),
        );
    }
    let r = store
        .enqueue(job("j3", "q", 0), key("evt-3", 1000), Some(3))
        .await
        .unwrap();
    assert_eq!(r, Enqueued::QueueFull);
    assert_eq!(stats_of(&store.stats(0).await.unwrap(), "q").pending, 3);
    // Inflight jobs count toward the limit; other queues do not.
    let c = claim_one(&store, "q", 0).await;
    assert_eq!(
        store
            .enqueue(job("j3", "q", 0), None, Some(3))
            .await
            .unwrap(),
        Enqueued::QueueFull
    );
    accepted(
        store
            .enqueue(job("o1", "other", 0), None, Some(3))
            .await
            .unwrap(),
    );
    // Done jobs free room; the refused key was never recorded.
    assert!(store
        .finish(&c.lease, attempt(0, "success", 200), Next::Done)
        .await
        .unwrap());
    accepted(
        store
            .enqueue(job("j3", "q", 0), key("evt-3", 1000), Some(3))
            .await
            .unwrap(),
    );
    store.shutdown().await;
}

/// A lease per claim: an expired lease is superseded by the next claim, and
/// the superseded claim can neither finish nor release.
pub(super) async fn lease_expiry_and_fencing(f: &dyn Fixture) {
    let store = f.open();
    let j1 = enqueue_ok(&store, job("j1", "q", 0)).await;
    let first = claim_one(&store, "q", 0).await;
    assert!(
        claim_ids(&store, "q", 999).await.is_empty(),
        "leased until 1000"
    );
    let second = claim_one(&store, "q", 1000).await;
    assert_eq!(second.id, j1);
    assert_ne!(first.lease, second.lease);
    assert_eq!(
        (second.attempts, second.interrupted),
        (1, 1),
        "the superseded attempt counts, as interrupted"
    );
    assert!(!store.release(&first.lease).await.unwrap());
    assert!(!store
        .finish(&first.lease, attempt(1500, "success", 200), Next::Done)
        .await
        .unwrap());
    assert_eq!(state_of(&store, &j1).await, JobState::Inflight);
    assert!(store
        .finish(&second.lease, attempt(1500, "success", 200), Next::Done)
        .await
        .unwrap());
    let d = store.get_job(&j1).await.unwrap().unwrap();
    let outcomes: Vec<&str> = d.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, vec![OUTCOME_INTERRUPTED, "success"]);

    // A deleted job's lease is dead too.
    let j2 = enqueue_ok(&store, job("j2", "q", 0)).await;
    let c = claim_one(&store, "q", 2000).await;
    assert!(store.delete_job(&j2).await.unwrap());
    assert!(!store
        .finish(&c.lease, attempt(2000, "success", 200), Next::Done)
        .await
        .unwrap());
    store.shutdown().await;
}

pub(super) async fn release_gives_the_job_back_unattempted(f: &dyn Fixture) {
    let store = f.open();
    let j1 = enqueue_ok(&store, job("j1", "q", 0)).await;
    let c = claim_one(&store, "q", 0).await;
    assert!(store.release(&c.lease).await.unwrap());
    assert!(!store.release(&c.lease).await.unwrap(), "only once");
    let d = store.get_job(&j1).await.unwrap().unwrap();
    assert_eq!(d.summary.state, JobState::Pending);
    assert!(d.attempts.is_empty(), "no attempt recorded");
    let c = claim_one(&store, "q", 1).await;
    assert_eq!((c.attempts, c.interrupted), (0, 0));
    store.shutdown().await;
}

/// An attempt that never finished (the process died during it) is counted
/// after a restart, as interrupted.
pub(super) async fn crash_during_attempt_counts(f: &dyn Fixture) {
    let store = f.open();
    let j1 = enqueue_ok(&store, job("j1", "q", 0)).await;
    for round in 0..3u32 {
        // Each claim comes long after the previous lease (1 s) ran out.
        let c = claim_one(&store, "q", 10_000 * i64::from(round)).await;
        assert_eq!(c.attempts, round);
        assert_eq!(c.interrupted, round, "round {round}");
        // "Crash": no finish, no release.
    }
    store.shutdown().await;
    drop(store);
    let store = f.open();
    let c = claim_one(&store, "q", 100_000).await;
    assert_eq!((c.attempts, c.cycle_attempts, c.interrupted), (3, 3, 3));
    let d = store.get_job(&j1).await.unwrap().unwrap();
    assert_eq!(d.attempts.len(), 4);
    assert!(d.attempts[..3]
        .iter()
        .all(|a| a.outcome == OUTCOME_INTERRUPTED && a.duration_ms.is_none()));
    // A finished attempt ends the streak.
    assert!(store
        .finish(
            &c.lease,
            attempt(100_000, "retry", 503),
            Next::Retry { next_at: 100_000 }
        )
        .await
        .unwrap());
    let c = claim_one(&store, "q", 200_000).await;
    assert_eq!((c.attempts, c.interrupted), (4, 0));
    store.shutdown().await;
}

pub(super) async fn claim_order_and_limit(f: &dyn Fixture) {
    let store = f.open();
    let late = enqueue_ok(&store, job("late", "q", 30)).await;
    let early = enqueue_ok(&store, job("early", "q", 10)).await;
    let mid = enqueue_ok(&store, job("mid", "q", 20)).await;
    enqueue_ok(&store, job("elsewhere", "r", 0)).await;
    let jobs = store.claim("q", 100, 2, 1000).await.unwrap();
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![early.as_str(), mid.as_str()],
        "oldest next_at first, limited"
    );
    assert_eq!(claim_ids(&store, "q", 100).await, vec![late]);
    assert!(store.claim("q", 100, 0, 1000).await.unwrap().is_empty());
    store.shutdown().await;
}

pub(super) async fn queues_cancel_move_and_delete(f: &dyn Fixture) {
    let store = f.open();
    for i in 0..5 {
        enqueue_ok(&store, job(&format!("p{i}"), "old", i)).await;
    }
    enqueue_ok(&store, job("keep", "new", 0)).await;
    // One dead, one leased, one done.
    let mut c = store.claim("old", 100, 3, 10_000).await.unwrap();
    let leased = c.pop().unwrap();
    let dead = c.pop().unwrap();
    let done = c.pop().unwrap();
    assert!(store
        .finish(&dead.lease, attempt(100, "dead", 404), Next::Dead)
        .await
        .unwrap());
    assert!(store
        .finish(&done.lease, attempt(100, "success", 200), Next::Done)
        .await
        .unwrap());

    // Move: the unclaimed pending and the dead go; leased and done stay.
    assert!(matches!(
        store.move_queue("old", "old", 200).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.move_queue("old", "new", 200).await.unwrap(), 3);
    let s = store.stats(200).await.unwrap();
    assert_eq!(
        (stats_of(&s, "new").pending, stats_of(&s, "new").dead),
        (4, 0)
    );
    let o = stats_of(&s, "old");
    assert_eq!((o.pending, o.inflight, o.dead, o.done), (0, 1, 0, 1));
    let moved = store.get_job(&dead.id).await.unwrap().unwrap();
    assert_eq!(
        (moved.summary.queue.as_str(), moved.summary.state),
        ("new", JobState::Pending)
    );
    let c = store.claim("new", 200, 10, 1000).await.unwrap();
    assert_eq!(c.len(), 4);
    let was_dead = c.iter().find(|j| j.id == dead.id).unwrap();
    assert_eq!(
        (was_dead.cycle_attempts, was_dead.cycle_start),
        (0, 200),
        "a new retry cycle"
    );
    for j in c {
        assert!(store.release(&j.lease).await.unwrap());
    }

    // Cancel: the unclaimed pending jobs of a queue go, nothing else.
    assert_eq!(store.cancel_queue("new").await.unwrap(), 4);
    assert_eq!(stats_of(&store.stats(300).await.unwrap(), "new").pending, 0);

    // Delete a queue: everything not claimed.
    assert_eq!(store.delete_queue("old").await.unwrap(), 1, "the done job");
    assert!(store.get_job(&done.id).await.unwrap().is_none());
    assert!(store.get_job(&leased.id).await.unwrap().is_some());
    assert!(store
        .finish(&leased.lease, attempt(300, "success", 200), Next::Done)
        .await
        .unwrap());
    assert_eq!(store.delete_queue("old").await.unwrap(), 1);
    assert!(
        stats_of(&store.stats(400).await.unwrap(), "old")
            == QueueStats {
                queue: "old".into(),
                ..QueueStats::default()
            }
    );
    store.shutdown().await;
}

pub(super) async fn replay_queue_moves_only_that_queues_dead_jobs(f: &dyn Fixture) {
    let store = f.open();
    let mut ids = Vec::new();
    for (tag, q) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        ids.push(enqueue_ok(&store, job(tag, q, 0)).await);
        let c = claim_one(&store, q, 0).await;
        assert!(store
            .finish(&c.lease, attempt(0, "dead", 400), Next::Dead)
            .await
            .unwrap());
    }
    assert_eq!(store.replay_queue("a", 10).await.unwrap(), 2);
    assert_eq!(state_of(&store, &ids[0]).await, JobState::Pending);
    assert_eq!(state_of(&store, &ids[1]).await, JobState::Pending);
    assert_eq!(state_of(&store, &ids[2]).await, JobState::Dead);
    assert_eq!(store.replay_queue("a", 10).await.unwrap(), 0);
    store.shutdown().await;
}

pub(super) async fn purge_removes_expired_keys_and_old_jobs(f: &dyn Fixture) {
    let store = f.open();
    let j1 = accepted(
        store
            .enqueue(job("j1", "q", 0), key("old-evt", 100), None)
            .await
            .unwrap(),
    );
    let j2 = accepted(
        store
            .enqueue(job("j2", "q", 0), key("live-evt", 10_000), None)
            .await
            .unwrap(),
    );
    let j3 = enqueue_ok(&store, job("j3", "q", 0)).await;
    let young = enqueue_ok(&store, job("young", "q", 5000)).await;
    let mut c = store.claim("q", 0, 3, 1000).await.unwrap();
    let (c3, c2, c1) = (c.pop().unwrap(), c.pop().unwrap(), c.pop().unwrap());
    assert!(store
        .finish(&c1.lease, attempt(100, "success", 200), Next::Done)
        .await
        .unwrap());
    assert!(store
        .finish(&c2.lease, attempt(100, "dead", 400), Next::Dead)
        .await
        .unwrap());
    assert!(store
        .finish(
            &c3.lease,
            attempt(100, "retry", 503),
            Next::Retry { next_at: 9000 }
        )
        .await
        .unwrap());

    // Done before 1000 goes; dead is kept until dead_before passes it.
    let p = store
        .purge(PurgePolicy {
            now: 1000,
            done_before: 1000,
            dead_before: 0,
        })
        .await
        .unwrap();
    assert_eq!(
        (p.dedup_removed, p.jobs_removed, p.attempts_removed, p.more),
        (1, 1, 1, false)
    );
    assert!(store.get_job(&j1).await.unwrap().is_none());
    assert!(store.get_job(&j2).await.unwrap().is_some());
    // The expired key is gone; the live one still blocks.
    accepted(
        store
            .enqueue(job("k1", "q", 1000), key("old-evt", 5000), None)
            .await
            .unwrap(),
    );
    assert_eq!(
        store
            .enqueue(job("k2", "q", 1000), key("live-evt", 5000), None)
            .await
            .unwrap(),
        Enqueued::Duplicate {
            first_id: j2.clone()
        }
    );
    let p = store
        .purge(PurgePolicy {
            now: 1000,
            done_before: 1000,
            dead_before: 1000,
        })
        .await
        .unwrap();
    assert_eq!((p.jobs_removed, p.attempts_removed), (1, 1));
    assert!(store.get_job(&j2).await.unwrap().is_none());
    assert!(
        store.get_job(&j3).await.unwrap().is_some(),
        "pending is never purged"
    );
    assert!(store.get_job(&young).await.unwrap().is_some());
    let s = stats_of(&store.stats(1000).await.unwrap(), "q");
    assert_eq!((s.done, s.dead), (0, 0));

    // Many rows: bounded steps, `more` until done. (One scope has one
    // window, so its records expire in the order they were written.)
    for i in 0..300 {
        let mut k = key(&format!("bulk-{i}"), 1500);
        k.as_mut().unwrap().scope = "bulk".into();
        accepted(
            store
                .enqueue(job(&format!("bulk{i:03}"), "bulk", 1100), k, None)
                .await
                .unwrap(),
        );
    }
    let (removed, calls) = purge_dedup_until_done(&store, 2000).await;
    assert_eq!(removed, 300);
    assert!(calls > 1, "purge works in bounded steps");
    store.shutdown().await;
}

/// Records of two scopes written interleaved, one expiring long before the
/// other: the purge removes exactly the expired ones (a restart shows it
/// kept the live ones durably, not just in memory).
pub(super) async fn purge_of_interleaved_scopes_keeps_the_live_one(f: &dyn Fixture) {
    let store = f.open();
    let scoped = |scope: &str, k: String, expires_at: i64| {
        let mut k = key(&k, expires_at);
        k.as_mut().unwrap().scope = scope.into();
        k
    };
    // Runs of each scope of varying length, so that expired records sit
    // both alone and in runs between live ones.
    let (mut short, mut long) = (0, 0);
    for i in 0..700 {
        let (scope, expires_at, n) = if i % 7 < 3 || i % 50 == 0 {
            short += 1;
            ("short", 1500, short)
        } else {
            long += 1;
            ("long", 9000, long)
        };
        accepted(
            store
                .enqueue(
                    job(&format!("{scope}{n}"), "q", 1000),
                    scoped(scope, format!("{scope}-{n}"), expires_at),
                    None,
                )
                .await
                .unwrap(),
        );
    }
    let (removed, _) = purge_dedup_until_done(&store, 2000).await;
    assert_eq!(removed, short);
    store.shutdown().await;
    let store = f.open();
    for n in 1..=long {
        assert!(
            matches!(
                store
                    .enqueue(
                        job("again", "q", 2000),
                        scoped("long", format!("long-{n}"), 9000),
                        None
                    )
                    .await
                    .unwrap(),
                Enqueued::Duplicate { .. }
            ),
            "live key long-{n} still blocks after the purge and a restart"
        );
    }
    for n in 1..=short {
        accepted(
            store
                .enqueue(
                    job("again", "q", 2000),
                    scoped("short", format!("short-{n}"), 9000),
                    None,
                )
                .await
                .unwrap(),
        );
    }
    store.shutdown().await;
}

pub(super) async fn lists_and_stats(f: &dyn Fixture) {
    let store = f.open();
    let mut j = Vec::new();
    for i in 0..7 {
        j.push(
            enqueue_ok(
                &store,
                job(&format!("j{i}"), if i < 5 { "a" } else { "b" }, i),
            )
            .await,
        );
    }
    let ids_of = |js: &[JobSummary]| js.iter().map(|x| x.id.clone()).collect::<Vec<_>>();
    let c = claim_one(&store, "a", 100).await; // j0 inflight
    let c1 = claim_one(&store, "a", 100).await; // j1 dead
    assert!(store
        .finish(&c1.lease, attempt(100, "dead", 400), Next::Dead)
        .await
        .unwrap());

    let all = store.list_jobs(JobFilter::default()).await.unwrap();
    assert_eq!(ids_of(&all), j);
    assert_eq!(all[0].state, JobState::Inflight);
    assert_eq!(all[0].lease_until, Some(1100));

    let list = |queue: Option<&str>, state, limit, after: Option<&str>| JobFilter {
        queue: queue.map(str::to_owned),
        state,
        limit,
        after: after.map(str::to_owned),
    };
    let page = store
        .list_jobs(list(Some("a"), None, 2, None))
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
    let page2 = store
        .list_jobs(list(Some("a"), None, 2, Some(&page[1].id)))
        .await
        .unwrap();
    assert_eq!(ids_of(&page2), j[2..4]);
    let pending = store
        .list_jobs(list(None, Some(JobState::Pending), 100, None))
        .await
        .unwrap();
    assert_eq!(ids_of(&pending), j[2..]);
    let inflight = store
        .list_jobs(list(Some("a"), Some(JobState::Inflight), 100, None))
        .await
        .unwrap();
    assert_eq!(inflight.len(), 1);
    assert_eq!(inflight[0].id, j[0]);
    let dead = store
        .list_jobs(list(None, Some(JobState::Dead), 100, None))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((&dead[0].id, dead[0].attempts), (&j[1], 1));
    let capped = store
        .list_jobs(list(None, None, LIST_LIMIT_CAP + 50, None))
        .await
        .unwrap();
    assert_eq!(capped.len(), 7);
    assert!(matches!(
        store.list_jobs(list(None, None, 10, Some("gone"))).await,
        Err(StoreError::Invalid(_))
    ));
    // A cursor naming a job deleted meanwhile still pages on.
    assert!(store.delete_job(&j[2]).await.unwrap());
    let rest = store
        .list_jobs(list(None, None, 100, Some(&j[2])))
        .await
        .unwrap();
    assert_eq!(ids_of(&rest), j[3..]);
    assert!(store.get_job(&j[2]).await.unwrap().is_none());
    // An id of a deleted job never names another job.
    assert!(!store.delete_job(&j[2]).await.unwrap());

    let stats = store.stats(1000).await.unwrap();
    let queues: Vec<&str> = stats.iter().map(|s| s.queue.as_str()).collect();
    assert_eq!(queues, vec!["a", "b"]);
    assert_eq!(
        stats[0],
        QueueStats {
            queue: "a".into(),
            pending: 2,
            inflight: 1,
            dead: 1,
            done: 0,
            oldest_pending_age_ms: Some(1000),
        }
    );
    assert_eq!(stats[1].oldest_pending_age_ms, Some(995));
    assert!(store
        .finish(&c.lease, attempt(100, "success", 200), Next::Done)
        .await
        .unwrap());
    assert_eq!(stats_of(&store.stats(1000).await.unwrap(), "a").done, 1);
    store.shutdown().await;
}

/// Counters against a model under random operations, then after a reopen
/// (which rebuilds them from the rows).
pub(super) async fn counters_match_a_model(f: &dyn Fixture) {
    let store = f.open();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    // id -> (queue, state)
    let mut model: HashMap<String, (String, JobState)> = HashMap::new();
    let mut held: Vec<ClaimedJob> = Vec::new();
    let queues = ["q1", "q2", "q3"];
    let mut now = 0i64;
    for step in 0..400 {
        now += 1;
        let q = queues[next(3) as usize];
        match next(8) {
            0..=2 => {
                let k = key(&format!("e{}", next(60)), now + 50);
                let tag = format!("s{step}");
                match store.enqueue(job(&tag, q, now), k, Some(40)).await.unwrap() {
                    Enqueued::Accepted { id } => {
                        model.insert(id, (q.to_owned(), JobState::Pending));
                    }
                    Enqueued::Duplicate { .. } | Enqueued::QueueFull => {}
                }
            }
            3 => {
                for c in store.claim(q, now, 1 + next(3) as usize, 5).await.unwrap() {
                    model.get_mut(&c.id).unwrap().1 = JobState::Inflight;
                    held.push(c);
                }
            }
            4 | 5 if !held.is_empty() => {
                let c = held.swap_remove(next(held.len() as u64) as usize);
                let (n, state) = match next(3) {
                    0 => (Next::Done, JobState::Done),
                    1 => (Next::Dead, JobState::Dead),
                    _ => (Next::Retry { next_at: now + 3 }, JobState::Pending),
                };
                let ok = store
                    .finish(&c.lease, attempt(now, "x", 200), n)
                    .await
                    .unwrap();
                // A lease that expired and was claimed again is refused.
                if ok {
                    model.get_mut(&c.id).unwrap().1 = state;
                }
            }
            6 => {
                let dead: Vec<String> = model
                    .iter()
                    .filter(|(_, (qq, s))| qq == q && *s == JobState::Dead)
                    .map(|(id, _)| id.clone())
                    .collect();
                if let Some(id) = dead.first() {
                    assert!(store.replay(id, now).await.unwrap());
                    model.get_mut(id).unwrap().1 = JobState::Pending;
                }
            }
            _ => {
                if let Some(c) = held.pop() {
                    if store.release(&c.lease).await.unwrap() {
                        model.get_mut(&c.id).unwrap().1 = JobState::Pending;
                    }
                }
            }
        }
        // Leases expire after 5 ms: the model's inflight jobs whose lease
        // was superseded are still inflight (claimed again) or pending.
        if step % 50 == 49 {
            check_counts(&store, &model, now).await;
        }
    }
    check_counts(&store, &model, now).await;
    store.shutdown().await;
    drop(store);
    // Reopened: nothing is claimed any more.
    for (_, s) in model.values_mut() {
        if *s == JobState::Inflight {
            *s = JobState::Pending;
        }
    }
    let store = f.open();
    check_counts(&store, &model, now).await;
    store.shutdown().await;
}

async fn check_counts(store: &Store, model: &HashMap<String, (String, JobState)>, now: i64) {
    let stats = store.stats(now).await.unwrap();
    for q in ["q1", "q2", "q3"] {
        let s = stats_of(&stats, q);
        let n = |st: JobState| model.values().filter(|(qq, s)| qq == q && *s == st).count() as u64;
        // A claim of an expired lease moves a job between our bookkeeping's
        // "inflight" entries, never out of pending+inflight.
        assert_eq!(
            s.pending + s.inflight,
            n(JobState::Pending) + n(JobState::Inflight),
            "{q} pending+inflight"
        );
        assert_eq!(s.done, n(JobState::Done), "{q} done");
        assert_eq!(s.dead, n(JobState::Dead), "{q} dead");
        // And the stats agree with the rows.
        let listed = store
            .list_jobs(JobFilter {
                queue: Some(q.to_owned()),
                state: Some(JobState::Dead),
                limit: LIST_LIMIT_CAP,
                after: None,
            })
            .await
            .unwrap();
        assert_eq!(listed.len() as u64, s.dead, "{q} listed dead");
    }
}

pub(super) async fn dedup_keys_are_bounded_per_scope(f: &dyn Fixture) {
    let store = f.open_with_max_keys(100);
    let mut last = String::new();
    for i in 0..250 {
        let r = store
            .enqueue(
                job(&format!("j{i:03}"), "q", i),
                key(&format!("evt-{i}"), 1_000_000),
                None,
            )
            .await
            .unwrap();
        // Never an error to the sender.
        last = accepted(r);
    }
    let held = store.dedup_keys();
    assert!((98..=100).contains(&held), "{held} keys held, bound 100");
    // The newest keys still block; the oldest were forgotten early.
    let r = store
        .enqueue(job("late", "q", 300), key("evt-249", 1_000_000), None)
        .await
        .unwrap();
    assert_eq!(
        r,
        Enqueued::Duplicate {
            first_id: last.clone()
        }
    );
    accepted(
        store
            .enqueue(job("again", "q", 300), key("evt-0", 1_000_000), None)
            .await
            .unwrap(),
    );
    store.shutdown().await;
    drop(store);
    // Reopened with the same bound: still bounded, still the newest.
    let store = f.open_with_max_keys(100);
    let held = store.dedup_keys();
    assert!((98..=100).contains(&held), "{held} keys held after reopen");
    let r = store
        .enqueue(job("late2", "q", 400), key("evt-249", 1_000_000), None)
        .await
        .unwrap();
    assert!(matches!(r, Enqueued::Duplicate { .. }), "{r:?}");
    store.shutdown().await;
}

/// In-order claims: only the head, only when due and not leased; a head
/// retried in place blocks the ones behind it; its end releases the next.
pub(super) async fn claim_head_keeps_acceptance_order(f: &dyn Fixture) {
    let store = f.open();
    let j1 = enqueue_ok(&store, job("j1", "f", 10)).await;
    let j2 = enqueue_ok(&store, job("j2", "f", 20)).await;
    let j3 = enqueue_ok(&store, job("j3", "f", 20)).await;
    let head = store.claim_head("f", 100, 1000).await.unwrap().unwrap();
    assert_eq!(head.id, j1);
    assert_eq!(head.next_at, 10);
    // The head is being attempted: nothing behind it is handed out.
    assert!(store.claim_head("f", 100, 1000).await.unwrap().is_none());
    // Retried in place: it is the head again, the others still wait.
    let next = Next::Retry {
        next_at: head.next_at,
    };
    assert!(store
        .finish(&head.lease, attempt(100, "retry", 503), next)
        .await
        .unwrap());
    let again = store.claim_head("f", 101, 1000).await.unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.attempts), (j1.as_str(), 1));
    // Dead-lettered: the next in line (ties in time by acceptance order).
    assert!(store
        .finish(&again.lease, attempt(101, "dead", 400), Next::Dead)
        .await
        .unwrap());
    let second = store.claim_head("f", 102, 1000).await.unwrap().unwrap();
    assert_eq!(second.id, j2);
    // Released unattempted: still the head.
    assert!(store.release(&second.lease).await.unwrap());
    let second = store.claim_head("f", 103, 1000).await.unwrap().unwrap();
    assert_eq!(second.id, j2);
    // A lease that ran out is superseded, as with `claim`.
    let taken = store
        .claim_head("f", 103 + 1001, 1000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.id, j2);
    assert!(store
        .finish(&taken.lease, attempt(2000, "success", 200), Next::Done)
        .await
        .unwrap());
    assert_eq!(
        store.claim_head("f", 2001, 1000).await.unwrap().unwrap().id,
        j3
    );
    // A head not yet due blocks: nothing else of its queue is claimed.
    enqueue_ok(&store, job("later", "g", 500)).await;
    assert!(store.claim_head("g", 100, 1000).await.unwrap().is_none());
    assert!(store
        .claim_head("empty", 100, 1000)
        .await
        .unwrap()
        .is_none());
    store.shutdown().await;
}

/// Paused queues are kept across a reopen, and only the ones asked for.
pub(super) async fn paused_queues_survive_a_restart(f: &dyn Fixture) {
    let store = f.open();
    assert!(store.paused_queues().await.unwrap().is_empty());
    store.set_paused("/hooks/a", true).await.unwrap();
    store.set_paused("/hooks/b", true).await.unwrap();
    store.set_paused("/hooks/b", true).await.unwrap();
    store.set_paused("/hooks/c", false).await.unwrap();
    store.shutdown().await;
    drop(store);
    let store = f.open();
    assert_eq!(
        store.paused_queues().await.unwrap(),
        vec!["/hooks/a".to_string(), "/hooks/b".to_string()]
    );
    store.set_paused("/hooks/a", false).await.unwrap();
    assert_eq!(
        store.paused_queues().await.unwrap(),
        vec!["/hooks/b".to_string()]
    );
    // Pausing is not a job: enqueue and claim go on (the engine obeys it).
    accepted(
        store
            .enqueue(job("p", "/hooks/b", 10), None, None)
            .await
            .unwrap(),
    );
    assert_eq!(claim_ids(&store, "/hooks/b", 10).await.len(), 1);
    store.shutdown().await;
}

/// Instantiates every conformance check for a backend: `$fixture` is an
/// expression building a fresh [`Fixture`].
macro_rules! conformance_tests {
    ($fixture:expr) => {
        $crate::store::conformance::conformance_tests!(@each $fixture;
            lifecycle,
            retry_dead_and_replay,
            dedup_atomicity,
            duplicate_after_restart,
            queue_limit_writes_nothing,
            lease_expiry_and_fencing,
            release_gives_the_job_back_unattempted,
            crash_during_attempt_counts,
            claim_order_and_limit,
            queues_cancel_move_and_delete,
            replay_queue_moves_only_that_queues_dead_jobs,
            purge_removes_expired_keys_and_old_jobs,
            purge_of_interleaved_scopes_keeps_the_live_one,
            lists_and_stats,
            counters_match_a_model,
            dedup_keys_are_bounded_per_scope,
            paused_queues_survive_a_restart,
            claim_head_keeps_acceptance_order
        );
    };
    (@each $fixture:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let f = $fixture;
                $crate::store::conformance::$name(&f).await;
            }
        )*
    };
}
pub(super) use conformance_tests;
