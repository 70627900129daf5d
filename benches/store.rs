//! Store benchmarks on real files in a temp dir (WAL, `synchronous=FULL`):
//!
//! - `enqueue/concurrency/{1,16,128}`: durable enqueues as the receiver
//!   issues them (~1.2 KB payload, a unique dedup key, the default queue
//!   limit), on a fresh store; the achieved group-commit batch is printed.
//! - `lifecycle/64`: the whole life of a webhook as the store sees it, 64 at
//!   a time: enqueue with a dedup key, claim, finish (delivered), on a store
//!   that already holds `STORE_BENCH_KEYS` dedup keys (default 1,000,000;
//!   the fill takes a while). After the group it prints, per lifecycle, the
//!   bytes the process wrote to disk (`write_bytes` of `/proc/self/io`) and
//!   its write syscalls (`syscw`: the store's threads are the only writers),
//!   plus the process RSS and the time the reopen took to rebuild the dedup
//!   index from those keys.
//!
//! - `open` (printed, not a criterion group): the time a reopen takes to
//!   rebuild the dedup index from 1M and 10M records
//!   (`STORE_BENCH_OPEN_KEYS`, comma-separated), and the RSS it adds. The
//!   records are written with plain SQL, so the fill takes seconds.
//!
//! ```text
//! cargo bench --bench store
//! STORE_BENCH_KEYS=200000 cargo bench --bench store -- lifecycle
//! STORE_BENCH_ONLY=open cargo bench --bench store
//! ```
//!
//! Throughput is in enqueues (lifecycles) per second. The figures depend on
//! the fsync latency of the disk holding the temp dir (`TMPDIR`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hookgate::store::{Attempt, DedupKey, Enqueued, NewJob, Next, Store, StoreOptions};

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
    (
        NewJob {
            queue: QUEUE.to_string(),
            kind: "forward".to_string(),
            payload: bytes::Bytes::copy_from_slice(payload),
            created_at: now,
            next_at: now,
            label: None,
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
                    matches!(r, Ok(hookgate::store::Enqueued::Accepted { .. })),
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
    let mut opts = StoreOptions::sqlite(dir.path().join("bench.db"));
    opts.dedup_max_keys = 20_000_000;
    Store::open(opts).expect("open store")
}

/// `write_bytes` and `syscw` of this process.
fn proc_io() -> (u64, u64) {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("write_bytes:"), field("syscw:"))
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Runs `total` lifecycles (enqueue with dedup, claim, finish) with
/// `concurrency` tasks; answers the elapsed time.
async fn lifecycle_n(
    store: &Store,
    payload: &Arc<Vec<u8>>,
    total: u64,
    concurrency: usize,
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
                let r = store.enqueue(j, Some(d), Some(ROUTE_QUEUE_LIMIT)).await;
                assert!(
                    matches!(r, Ok(Enqueued::Accepted { .. })),
                    "enqueue failed: {r:?}"
                );
                let now = now_ms();
                for c in store.claim(QUEUE, now, 1, 30_000).await.expect("claim") {
                    let a = Attempt {
                        started_at: now,
                        duration_ms: 1,
                        outcome: "success".into(),
                        http_status: Some(200),
                        ..Attempt::default()
                    };
                    assert!(store.finish(&c.lease, a, Next::Done).await.expect("finish"));
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("lifecycle task");
    }
    start.elapsed()
}

/// Reopen time and memory of the dedup index with `keys` records.
fn open_time(keys: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let mut opts = StoreOptions::sqlite(&path);
    opts.dedup_max_keys = keys.max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(Store::open(opts.clone()).expect("open store").shutdown());
    let filled = Instant::now();
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.execute(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?1)
         INSERT INTO dedup_record (fp, scope, key, job, job_created, expires_at)
         SELECT randomblob(16), '/hooks/sigsentry', 'anl_' || x, x, 0, 9000000000000000 FROM n",
        [keys as i64],
    )
    .expect("fill");
    drop(conn);
    let fill = filled.elapsed();
    let rss_before = rss_mb();
    let started = Instant::now();
    let store = Store::open(opts).expect("reopen");
    let took = started.elapsed();
    println!(
        "open: {} dedup keys indexed in {:.2} s at open (fill {:.1} s); RSS +{:.1} MB = {:.1} bytes per key",
        store.dedup_keys(),
        took.as_secs_f64(),
        fill.as_secs_f64(),
        rss_mb() - rss_before,
        (rss_mb() - rss_before) * 1024.0 * 1024.0 / keys.max(1) as f64
    );
    rt.block_on(store.shutdown());
}

fn bench(c: &mut Criterion) {
    if std::env::var("STORE_BENCH_ONLY").as_deref() == Ok("open") {
        let sizes =
            std::env::var("STORE_BENCH_OPEN_KEYS").unwrap_or_else(|_| "1000000,10000000".into());
        for n in sizes.split(',').filter_map(|s| s.trim().parse().ok()) {
            open_time(n);
        }
        return;
    }
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

    // Whole lifecycles on a store holding many dedup keys.
    let keys: u64 = std::env::var("STORE_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let fill = rt.block_on(lifecycle_n(&store, &payload, keys, 512));
    println!(
        "lifecycle: filled {keys} dedup keys in {:.1} s ({:.0} lifecycles/s)",
        fill.as_secs_f64(),
        keys as f64 / fill.as_secs_f64()
    );
    rt.block_on(store.shutdown());
    drop(store);
    let reopened = Instant::now();
    let store = open(&dir);
    println!(
        "lifecycle: reopen with {} dedup keys took {:.2} s; RSS {:.1} MB",
        store.dedup_keys(),
        reopened.elapsed().as_secs_f64(),
        rss_mb()
    );
    let (bytes0, calls0) = proc_io();
    let commits0 = store.commit_stats();
    let done = Arc::new(AtomicU64::new(0));
    let mut g = c.benchmark_group("lifecycle");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function(BenchmarkId::new("concurrency", 64), |b| {
        b.iter_custom(|iters| {
            done.fetch_add(iters, Ordering::Relaxed);
            rt.block_on(lifecycle_n(
                &store,
                &payload,
                iters,
                64.min(iters as usize).max(1),
            ))
        })
    });
    g.finish();
    let (bytes1, calls1) = proc_io();
    let n = done.load(Ordering::Relaxed).max(1);
    let commits1 = store.commit_stats();
    println!(
        "lifecycle: {n} lifecycles: {:.0} bytes written and {:.2} write syscalls per lifecycle; \
         {:.1} requests per commit; RSS {:.1} MB with {} dedup keys",
        (bytes1 - bytes0) as f64 / n as f64,
        (calls1 - calls0) as f64 / n as f64,
        (commits1.requests - commits0.requests) as f64
            / (commits1.commits - commits0.commits).max(1) as f64,
        rss_mb(),
        store.dedup_keys()
    );
    rt.block_on(store.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
