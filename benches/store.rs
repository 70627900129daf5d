//! Store benchmarks: durable enqueue throughput of the SQLite backend
//! (`Store::open_sqlite` on a temp file, WAL, `synchronous=FULL`) at 1, 16
//! and 128 concurrent enqueues, as the receiver issues them: ~1.2 KB payload
//! (a stored 1 KiB webhook), a unique dedup key, and `max_pending` set to the
//! default route `queue_limit` (1,000,000).
//!
//! ```text
//! cargo bench --bench store
//! ```
//!
//! Each level opens a fresh database, so the levels do not see each other's
//! rows. After each level the achieved group-commit batch size
//! (`Store::commit_stats`: requests / commits) is printed. The last group,
//! `enqueue_backlog`, runs 128 concurrent enqueues on a queue that already
//! holds a backlog of pending jobs, with and without `max_pending`, to show
//! what the queue-limit check costs per enqueue as the backlog grows.
//!
//! Throughput is in enqueues per second (one "element" = one enqueue
//! answered after its commit). Note that the figure depends on the fsync
//! latency of the disk holding the temp dir (`TMPDIR`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hookgate::store::{DedupKey, NewJob, SqliteOptions, Store};

const QUEUE: &str = "/hooks/sigsentry";
const PAYLOAD_LEN: usize = 1200;
const ROUTE_QUEUE_LIMIT: u64 = 1_000_000;

/// Unique ids across every level of one run.
static SEQ: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn job(n: u64, payload: &[u8]) -> (NewJob, DedupKey) {
    let now = now_ms();
    // Time-ordered like the real UUIDv7 ids.
    let id = format!("{now:013x}-{n:016x}");
    (
        NewJob {
            id: id.clone(),
            queue: QUEUE.to_string(),
            kind: "forward".to_string(),
            payload: payload.to_vec(),
            created_at: now,
            next_at: now,
        },
        DedupKey {
            scope: QUEUE.to_string(),
            key: format!("an_{n}"),
            expires_at: now + 24 * 3600 * 1000,
        },
    )
}

/// Runs `total` enqueues with `concurrency` tasks; answers the elapsed time.
async fn enqueue_n(
    store: &Store,
    payload: &Arc<Vec<u8>>,
    total: u64,
    concurrency: usize,
    max_pending: Option<u64>,
) -> Duration {
    let left = Arc::new(AtomicU64::new(total));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (store, payload, left) = (store.clone(), payload.clone(), left.clone());
        tasks.spawn(async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let (j, d) = job(SEQ.fetch_add(1, Ordering::Relaxed), &payload);
                let r = store.enqueue(j, Some(d), max_pending).await;
                assert!(
                    matches!(r, Ok(hookgate::store::Enqueued::Accepted)),
                    "enqueue failed: {r:?}"
                );
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("enqueue task");
    }
    start.elapsed()
}

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open_sqlite(SqliteOptions::new(dir.path().join("bench.db"))).expect("open store")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let payload = Arc::new(vec![b'x'; PAYLOAD_LEN]);

    let mut g = c.benchmark_group("enqueue");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    for concurrency in [1usize, 16, 128] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let before = store.commit_stats();
        g.bench_with_input(
            BenchmarkId::new("concurrency", concurrency),
            &concurrency,
            |b, &conc| {
                b.iter_custom(|iters| {
                    rt.block_on(enqueue_n(
                        &store,
                        &payload,
                        iters,
                        conc.min(iters as usize).max(1),
                        Some(ROUTE_QUEUE_LIMIT),
                    ))
                })
            },
        );
        let after = store.commit_stats();
        let (req, com) = (
            after.requests - before.requests,
            after.commits - before.commits,
        );
        println!(
            "enqueue/concurrency/{concurrency}: {req} requests in {com} commits, achieved batch size {:.1}",
            req as f64 / com.max(1) as f64
        );
        rt.block_on(store.shutdown());
    }
    g.finish();

    // The same load on top of an existing backlog.
    let backlog: u64 = std::env::var("STORE_BENCH_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let fill = rt.block_on(enqueue_n(&store, &payload, backlog, 512, None));
    println!(
        "enqueue_backlog: filled {backlog} pending jobs in {:.2} s ({:.0}/s)",
        fill.as_secs_f64(),
        backlog as f64 / fill.as_secs_f64()
    );
    let mut g = c.benchmark_group(format!("enqueue_backlog_{backlog}"));
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    for (name, max_pending) in [
        ("max_pending_1M", Some(ROUTE_QUEUE_LIMIT)),
        ("max_pending_none", None),
    ] {
        g.bench_function(BenchmarkId::new(name, 128), |b| {
            b.iter_custom(|iters| {
                rt.block_on(enqueue_n(
                    &store,
                    &payload,
                    iters,
                    128.min(iters as usize).max(1),
                    max_pending,
                ))
            })
        });
    }
    g.finish();
    let s = store.commit_stats();
    println!(
        "enqueue_backlog: {} requests in {} commits, achieved batch size {:.1}",
        s.requests,
        s.commits,
        s.requests as f64 / s.commits.max(1) as f64
    );
    rt.block_on(store.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
