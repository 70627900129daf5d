//! Power loss, not just a crash: the real binary runs with an LD_PRELOAD shim
//! (tests/powerloss/fsync_snapshot.c) that, after every successful
//! fsync/fdatasync of a file in the store's directory, copies that file into
//! a snapshot directory. The snapshot directory is then exactly what a power
//! loss leaves: every file as of its own last fsync, everything written
//! after it gone. hookgate is SIGKILLed at a random moment under concurrent
//! load, the snapshot is copied to a fresh data directory, and hookgate
//! (without the shim) must find every delivery it answered 202 for, and
//! answer every acknowledged event as a duplicate of its first delivery.
//!
//! The test only talks to the binary over HTTP (public and admin API) and
//! copies whatever files the store keeps, so it holds whatever the store's
//! internals (schema, file names, WAL suffix, lock files) become.
//!
//! Each round starts on the data the previous round's check left behind
//! (shut down cleanly), so the acknowledged set and the database grow from
//! round to round, and every check covers every round so far.

mod common;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const SECRET: &str = "powerloss-test-secret-0123456789abcdef";
const ROUNDS: usize = 5;
/// Clients on the deduplicated route; CHURN_CLIENTS more send to a route
/// whose dedup window is one second, so the purge always has work.
const CLIENTS: usize = 6;
/// Each round must acknowledge more than this many requests.
const MIN_ACKS: usize = 20;
/// Concurrent checks against the restored binary.
const CHECKERS: usize = 8;
/// Once the load is going, the kill comes within this many milliseconds.
const KILL_WINDOW_MS: u64 = 2500;

#[derive(Clone, Copy, Debug)]
enum UpstreamMode {
    /// Answers 200 at once: jobs complete and their history gets purged.
    Healthy,
    /// Answers after 30 s (past the 1 s upstream timeout): jobs stay in
    /// flight and are retried.
    Stalled,
    /// Answers 503: every attempt fails and is retried.
    Failing,
}

const MODES: [UpstreamMode; ROUNDS] = [
    UpstreamMode::Healthy,
    UpstreamMode::Stalled,
    UpstreamMode::Healthy,
    UpstreamMode::Failing,
    UpstreamMode::Healthy,
];

/// Compiles the shim; a missing compiler fails the test (it must not pass
/// without having proven anything).
fn build_shim(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/powerloss/fsync_snapshot.c");
    let out = dir.join("fsync_snapshot.so");
    let result = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .args(["-ldl", "-lpthread"])
        .output();
    let output = match result {
        Ok(o) => o,
        Err(e) => panic!(
            "the power-loss test needs a C compiler to build its LD_PRELOAD shim, \
             but `cc` could not be run ({e}); install gcc or clang"
        ),
    };
    assert!(
        output.status.success(),
        "cc could not build {}: {}",
        src.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

fn write_config(path: PathBuf, toml: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, toml).unwrap();
    path
}

/// Copies every regular file of `from` (but `-shm` files, which SQLite
/// rebuilds, and the shim's temporary dot files) into `to`.
fn copy_files(from: &Path, to: &Path) -> Vec<(String, u64)> {
    std::fs::create_dir_all(to).unwrap();
    let mut copied = Vec::new();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type().unwrap().is_file() || name.ends_with("-shm") || name.starts_with('.') {
            continue;
        }
        let n = std::fs::copy(e.path(), to.join(&name)).unwrap();
        copied.push((name, n));
    }
    copied.sort();
    copied
}

/// Upstream that behaves as `mode`.
async fn upstream(mode: UpstreamMode) -> Upstream {
    let up = Upstream::start().await;
    match mode {
        UpstreamMode::Healthy => {}
        UpstreamMode::Stalled => up.set_default(Reply::delayed(Duration::from_secs(30))),
        UpstreamMode::Failing => up.set_default(Reply::status(503)),
    }
    up
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_requests_survive_power_loss() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let shim = build_shim(tmp.path());

    let mut acked: Vec<Ack> = Vec::new();
    let mut delivered: HashSet<String> = HashSet::new();
    // The data the next round starts on: empty at first, then what the
    // previous round's check left behind.
    let mut data = tmp.path().join("data-0");
    std::fs::create_dir_all(&data).unwrap();
    let mut total_snapshots = 0;
    for (round, mode) in MODES.iter().enumerate() {
        let round_started = Instant::now();
        let rdir = tmp.path().join(format!("round-{round}"));
        let snapshots = rdir.join("snapshots");
        // Whatever is on disk now (after a clean shutdown) is durable.
        copy_files(&data, &snapshots);
        let log = rdir.join("shim.log");

        // 1. Load under the shim, killed at a random moment.
        let up = upstream(*mode).await;
        let cfg = write_config(
            rdir.join("load.toml"),
            &durability_config(&data, &up.url("/app"), SECRET, 4, "5s"),
        );
        let envs: Vec<(&str, &OsStr)> = vec![
            ("LD_PRELOAD", shim.as_os_str()),
            ("HOOKGATE_FSYNC_WATCH_DIR", data.as_os_str()),
            ("HOOKGATE_FSYNC_SNAPSHOT_DIR", snapshots.as_os_str()),
            ("HOOKGATE_FSYNC_LOG", log.as_os_str()),
        ];
        let p = spawn_binary(&cfg, &envs).wait_listening(Duration::from_secs(30));
        let load = Arc::new(Load::default());
        let clients = start_load(
            &load,
            &p.url(""),
            &[(STRICT, CLIENTS), (CHURN, CHURN_CLIENTS)],
            SECRET,
            &format!("anl_pl_r{round}"),
        );
        let load_started = Instant::now();
        // Let the load get going, then kill at a random moment of it.
        let end = Instant::now() + Duration::from_secs(30);
        while load.acked_len() <= MIN_ACKS + 10 {
            assert!(
                Instant::now() < end,
                "round {round}: only {} acks in 30 s",
                load.acked_len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let wait = rand::random::<u64>() % KILL_WINDOW_MS;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        p.kill(); // SIGKILL: the power goes out now
        let load_secs = load_started.elapsed().as_secs_f64();
        finish_load(&load, clients).await;
        let round_acks = load.acked.lock().unwrap().clone();
        let in_doubt = load.in_doubt.lock().unwrap().clone();
        assert!(
            round_acks.len() > MIN_ACKS,
            "round {round}: only {} acks",
            round_acks.len()
        );
        acked.extend(round_acks.iter().cloned());
        delivered.extend(up.delivered_ids());
        // The processes that could deliver are gone: a fixed set will do.
        let delivered_fn: Delivered = {
            let d = Arc::new(delivered.clone());
            Arc::new(move |id: &str| d.contains(id))
        };

        // The shim took snapshots, and never failed to.
        let log = std::fs::read_to_string(&log).expect("the shim wrote its log");
        let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("ERROR")).collect();
        assert!(
            errors.is_empty(),
            "round {round}: the shim failed: {errors:?}"
        );
        let taken = log.lines().filter(|l| l.starts_with("snapshot ")).count();
        assert!(taken > 0, "round {round}: the shim took no snapshot");
        total_snapshots += taken;

        // 2. Power comes back: the snapshot, under its names, in a fresh
        // directory; hookgate without the shim, its upstream unreachable.
        let restored = tmp.path().join(format!("data-{}", round + 1));
        let files = copy_files(&snapshots, &restored);
        assert!(!files.is_empty(), "round {round}: empty snapshot");
        // Its upstream is a port nothing listens on: every forward attempt
        // is refused at once.
        let refused = ClosedPort::new();
        let cfg = write_config(
            rdir.join("check.toml"),
            &durability_config(&restored, &refused.url("/app"), SECRET, 4, "5s"),
        );
        let p = Arc::new(spawn_binary(&cfg, &[]).wait_listening(Duration::from_secs(30)));
        let check_started = Instant::now();
        // Every acknowledgement of every round so far: its job exists, and
        // its event is a duplicate of it (on the route whose dedup window
        // outlives the test).
        let problems = check_acks(&p, SECRET, &acked, &delivered_fn, &[STRICT], CHECKERS).await;
        assert!(
            problems.is_empty(),
            "round {round} ({mode:?}): {} problems with {} acknowledged deliveries after a power loss, e.g.\n{}",
            problems.len(),
            acked.len(),
            problems[..problems.len().min(10)].join("\n")
        );
        // Requests in flight at the kill: forgotten, or seen and queued.
        let (resolved, problems) = resolve_in_doubt(&p, SECRET, &in_doubt, &delivered_fn).await;
        assert!(
            problems.is_empty(),
            "round {round} ({mode:?}): {problems:#?}"
        );
        acked.extend(resolved);
        let check_secs = check_started.elapsed().as_secs_f64();
        let p = Arc::into_inner(p).unwrap();
        p.terminate(Duration::from_secs(20));
        eprintln!(
            "round {round} ({mode:?}): {} acks in {load_secs:.1} s, {} in doubt, \
             {taken} snapshots ({:.0}/s), restored {files:?}; {} acks checked in {check_secs:.1} s; \
             round took {:.1} s",
            round_acks.len(),
            in_doubt.len(),
            taken as f64 / load_secs,
            acked.len(),
            round_started.elapsed().as_secs_f64(),
        );
        data = restored;
    }
    eprintln!(
        "{} acknowledged requests survived {ROUNDS} power losses ({total_snapshots} snapshots) in {:.1} s",
        acked.len(),
        started.elapsed().as_secs_f64()
    );
}
