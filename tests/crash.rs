//! Crash safety of the real binary: under concurrent load, hookgate is
//! killed with SIGKILL at a random moment and restarted on the same SQLite
//! file, over and over: mid-load, mid-purge, and mid-startup on a store
//! holding tens of thousands of dedup keys. Every request answered 202 must
//! still be there after each restart and reach the upstream at least once,
//! every acknowledged event must stay a duplicate of its first delivery id,
//! and dedup and queue agree: an event id the store reports as seen always
//! belongs to a job that exists (or was delivered).

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const SECRET: &str = "crash-test-secret-0123456789abcdef";
/// Load rounds: hookgate is killed 100-400 ms into concurrent load.
const LOAD_ROUNDS: usize = 14;
/// The load round that first acknowledges SEED events, so the later
/// restarts open a store with that many dedup keys.
const SEED_ROUND: usize = 6;
const SEED: usize = 50_000;
const SEED_CLIENTS: usize = 32;
/// Kills at random short delays after spawning, on the seeded store.
const STARTUP_KILLS: usize = 6;
/// Clients on the deduplicated route; CHURN_CLIENTS more send to a route
/// whose dedup window is one second, so the purge always has work.
const CLIENTS: usize = 8;
const CHECKERS: usize = 8;
/// Seeded events checked one by one (all of them would take too long; the
/// upstream must still receive every one).
const SEED_SAMPLE: usize = 1000;

fn write_config(dir: &Path, upstream: &str) -> PathBuf {
    let cfg = dir.join("hookgate.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "10s"
[admin]
listen = "127.0.0.1:0"
[store]
path = "{db}"
[log]
format = "json"
level = "info"
[delivery]
poll_interval = "50ms"
[[routes]]
path = "/hooks/sigsentry"
scheme = "sigsentry"
secrets = [{{ value = "{SECRET}" }}]
dedup = {{ key = "body:/analysisId", window = "1h" }}
[routes.upstream]
url = "{upstream}"
timeout = "1s"
concurrency = 4
[routes.retry]
initial = "50ms"
max_delay = "500ms"
"#,
            db = dir.join("hookgate.db").display(),
        ),
    )
    .unwrap();
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_and_a_restart_resumes_delivery() {
    let dir = tempfile::tempdir().unwrap();
    // First run: the upstream is down, so every job stays queued.
    let gone = ClosedPort::new();
    let cfg = write_config(dir.path(), &gone.url("/app"));
    let p = spawn_binary(&cfg, &[]).wait_listening(Duration::from_secs(30));
    let url = p.url(STRICT);
    let mut ids = HashSet::new();
    for i in 0..20 {
        let body = analysis(&format!("anl_term_{i}"));
        let a = post(&url, &sign("sigsentry", SECRET, &body, None, now()), body).await;
        assert_eq!(a.status, 202);
        ids.insert(a.json()["id"].as_str().unwrap().to_string());
    }
    // A refused request: its warning must not carry the secret either.
    let body = analysis("anl_forged");
    let a = post(
        &url,
        &sign("sigsentry", "not-the-secret", &body, None, now()),
        body,
    )
    .await;
    assert_eq!(a.status, 401);
    // The run logged the refusal and the failed attempts, and no line of it
    // holds the route's secret.
    let logs = p.terminate(Duration::from_secs(20));
    assert!(logs.iter().any(|l| l.contains("request refused")));
    assert!(logs.iter().any(|l| l.contains("attempt failed")));
    let leaked: Vec<&String> = logs.iter().filter(|l| l.contains(SECRET)).collect();
    assert!(leaked.is_empty(), "secret in the logs: {leaked:?}");

    // Second run: the upstream is up; everything queued is delivered.
    let up = Upstream::start().await;
    let cfg = write_config(dir.path(), &up.url("/app"));
    let p = spawn_binary(&cfg, &[]).wait_listening(Duration::from_secs(30));
    let got = up.wait_for(20, Duration::from_secs(30)).await;
    let got: HashSet<String> = got
        .iter()
        .map(|r| {
            r.headers["x-hookgate-delivery-id"]
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(got, ids);
    p.kill();
}

/// How the upstream answers during a load round; the final run is always
/// healthy, so everything acknowledged must then arrive.
fn upstream_mode(up: &Upstream, round: usize) -> &'static str {
    match round % 5 {
        2 => {
            up.set_default(Reply::status(503));
            "failing"
        }
        4 => {
            // Past the 1 s upstream timeout: attempts stay in flight, then fail.
            up.set_default(Reply::delayed(Duration::from_millis(1500)));
            "stalled"
        }
        _ => {
            up.set_default(Reply::status(200));
            "healthy"
        }
    }
}

/// How long the final drain may go without a delivery before the test calls
/// it a hang (its pace is the machine's; a fixed deadline for the whole
/// backlog failed on a loaded host with thousands still arriving).
const STALL: Duration = Duration::from_secs(30);

/// Jobs the store still has to deliver (pending or in flight), and jobs it
/// gave up on (dead), over every route, as the admin API reports them.
async fn queue_left(p: &Proc) -> (u64, u64) {
    let a = send("GET", &p.admin_url("/admin/queues"), &[], "").await;
    let v = a.json();
    let queues = v["queues"].as_array().unwrap();
    let sum = |k: &str| queues.iter().map(|q| q[k].as_u64().unwrap()).sum();
    (sum("pending") + sum("in_flight"), sum("dead"))
}

/// Replays the dead letters of every route, after checking that each was
/// dead-lettered by the interrupted-attempts guard (`INTERRUPTED_LIMIT`)
/// and by nothing else: the upstream answered nothing permanent and the
/// retry policy sets no limit. Answers how many were replayed.
async fn replay_interrupted(p: &Proc) -> u64 {
    let mut replayed = 0;
    for route in [STRICT, CHURN] {
        let url = p.admin_url(&format!("/admin/dead-letters?route={route}&limit=1000"));
        let list = send("GET", &url, &[], "").await.json();
        for job in list["items"].as_array().unwrap() {
            let error = job["last_error"].as_str().unwrap_or_default();
            assert!(
                error.contains("were interrupted"),
                "a job dead-lettered for another reason: {job}"
            );
        }
        let url = p.admin_url(&format!("/admin/dead-letters/replay?route={route}"));
        let a = send("POST", &url, &[], "").await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        replayed += a.json()["replayed"].as_u64().unwrap();
    }
    replayed
}

/// Counts of the store, as the admin API reports them (for the log).
async fn queue_counts(p: &Proc) -> String {
    let a = send("GET", &p.admin_url("/admin/queues"), &[], "").await;
    let v = a.json();
    v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            format!(
                "{} pending {} in flight {} delivered {}",
                q["route"], q["pending"], q["in_flight"], q["delivered"]
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks the acknowledgements and in-doubt events of the previous kill
/// against the restarted binary `p`; answers the acknowledgements the
/// in-doubt events turned into.
async fn check_previous(
    p: &Arc<Proc>,
    what: &str,
    acks: &[Ack],
    in_doubt: &[(&'static str, String)],
    up: &Upstream,
) -> Vec<Ack> {
    let up = up.clone();
    let delivered: Delivered = Arc::new(move |id: &str| up.is_delivered(id));
    let problems = check_acks(p, SECRET, acks, &delivered, &[STRICT], CHECKERS).await;
    assert!(
        problems.is_empty(),
        "after {what}: {} problems with {} acknowledged requests, e.g.\n{}",
        problems.len(),
        acks.len(),
        problems[..problems.len().min(10)].join("\n")
    );
    let (resolved, problems) = resolve_in_doubt(p, SECRET, in_doubt, &delivered).await;
    assert!(problems.is_empty(), "after {what}: {problems:#?}");
    resolved
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_requests_survive_sigkill() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    let cfg = dir.path().join("hookgate.toml");
    std::fs::write(
        &cfg,
        durability_config(dir.path(), &up.url("/app"), SECRET, 16, "10s"),
    )
    .unwrap();
    let spawn = || spawn_binary(&cfg, &[]).wait_listening(Duration::from_secs(60));

    // Every acknowledgement; the seeded ones also apart.
    let mut acked: Vec<Ack> = Vec::new();
    let mut seeded: Vec<Ack> = Vec::new();
    // What the next restart must check: the last kill's acknowledgements
    // and the requests in flight when it came.
    let mut unchecked: Vec<Ack> = Vec::new();
    let mut in_doubt: Vec<(&'static str, String)> = Vec::new();
    let mut kills = 0;
    for round in 0..LOAD_ROUNDS {
        let round_started = Instant::now();
        let mode = upstream_mode(&up, round);
        let p = Arc::new(spawn());
        let startup = round_started.elapsed();
        let check_started = Instant::now();
        // All of the last load's acknowledgements; a sample of the seed's.
        if unchecked.len() > SEED_SAMPLE * 2 {
            let step = unchecked.len() / SEED_SAMPLE;
            unchecked = unchecked.into_iter().step_by(step).collect();
        }
        let resolved =
            check_previous(&p, &format!("kill {kills}"), &unchecked, &in_doubt, &up).await;
        acked.extend(resolved);
        let checked = unchecked.len();
        let check_time = check_started.elapsed();

        let load = Arc::new(Load::default());
        let tag = format!("anl_k{round}");
        let clients = if round == SEED_ROUND {
            let clients = start_load(&load, &p.url(""), &[(STRICT, SEED_CLIENTS)], SECRET, &tag);
            let end = Instant::now() + Duration::from_secs(120);
            while load.acked_len() < SEED {
                assert!(
                    Instant::now() < end,
                    "seeding: only {} acks in 120 s",
                    load.acked_len()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            clients
        } else {
            let clients = start_load(
                &load,
                &p.url(""),
                &[(STRICT, CLIENTS), (CHURN, CHURN_CLIENTS)],
                SECRET,
                &tag,
            );
            let wait = 100 + rand::random::<u64>() % 300;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            clients
        };
        let counts = queue_counts(&p).await;
        Arc::into_inner(p).unwrap().kill(); // SIGKILL, load running
        kills += 1;
        finish_load(&load, clients).await;
        unchecked = load.acked.lock().unwrap().clone();
        in_doubt = load.in_doubt.lock().unwrap().clone();
        acked.extend(unchecked.iter().cloned());
        if round == SEED_ROUND {
            seeded = unchecked.clone();
        }
        eprintln!(
            "round {round} ({mode}): up in {:.2} s, {checked} acks checked in {:.2} s, \
             then {} acks, {} in doubt; at the kill: {counts}; round took {:.1} s",
            startup.as_secs_f64(),
            check_time.as_secs_f64(),
            unchecked.len(),
            in_doubt.len(),
            round_started.elapsed().as_secs_f64()
        );

        if round == SEED_ROUND {
            // Kills during startup, on a store with SEED dedup keys and as
            // many delivered jobs for the purge to remove.
            up.set_default(Reply::status(200));
            // The first restart shows how long startup takes; it is killed
            // as soon as it listens (its startup purge running), the others
            // at random within twice that time.
            let spawned = spawn_binary(&cfg, &[]);
            let t0 = Instant::now();
            let p = spawned.wait_listening(Duration::from_secs(60));
            let startup = t0.elapsed();
            p.kill();
            kills += 1;
            let max = startup * 2 + Duration::from_millis(20);
            let mut before_listening = 0;
            for i in 1..STARTUP_KILLS {
                let spawned = spawn_binary(&cfg, &[]);
                // One delay in each of STARTUP_KILLS - 1 equal slices of
                // [0, max]: some before the store is open, some after.
                let slice = (i - 1) as f64 + rand::random::<f64>();
                tokio::time::sleep(max.mul_f64(slice / (STARTUP_KILLS - 1) as f64)).await;
                if !spawned.kill() {
                    before_listening += 1;
                }
                kills += 1;
            }
            eprintln!(
                "startup on the seeded store took {:.3} s; {STARTUP_KILLS} kills within {:.3} s \
                 of spawning, {before_listening} of them before the listening line",
                startup.as_secs_f64(),
                max.as_secs_f64()
            );
        }
    }
    let non_seeded = acked.len() - seeded.len();
    assert!(kills >= 20, "only {kills} kills");
    assert!(seeded.len() >= SEED, "seeded {} events", seeded.len());
    assert!(
        non_seeded > (LOAD_ROUNDS - 1) * 10,
        "the load rounds produced too few acks: {non_seeded}"
    );

    // The last restart, its upstream healthy.
    up.set_default(Reply::status(200));
    let final_started = Instant::now();
    let p = Arc::new(spawn());
    acked.extend(check_previous(&p, &format!("kill {kills}"), &unchecked, &in_doubt, &up).await);
    // Everything acknowledged arrives. However long the backlog takes on a
    // busy machine, it must keep moving: the test fails when no delivery
    // arrives for STALL (a hang), or when the store has nothing left to
    // deliver while some acknowledged events never arrived (a loss).
    let want: HashSet<String> = acked.iter().map(|a| a.id.clone()).collect();
    let mut progress = (usize::MAX, Instant::now());
    let mut replayed = 0;
    let mut asked = Instant::now();
    loop {
        let got = up.delivered_ids();
        let missing: Vec<_> = want.difference(&got).collect();
        if missing.is_empty() {
            break;
        }
        let e_g = &missing[..missing.len().min(5)];
        if missing.len() < progress.0 {
            progress = (missing.len(), Instant::now());
        }
        assert!(
            progress.1.elapsed() < STALL,
            "no delivery for {STALL:?}: {} of {} acknowledged deliveries still missing, e.g. {e_g:?}",
            missing.len(),
            want.len(),
        );
        // The store's counts only once deliveries pause: counting jobs
        // every pass would slow the drain it watches.
        if progress.1.elapsed() < Duration::from_secs(1) || asked.elapsed() < Duration::from_secs(1)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        asked = Instant::now();
        let (left, dead) = queue_left(&p).await;
        if dead > 0 {
            // Only the guard against a request that crashes hookgate may
            // give up on a job here (its last attempts were all cut by the
            // kills); it waits in the dead letters, and a replay sends it.
            replayed += replay_interrupted(&p).await;
        } else if left == 0 {
            // The store marks a job delivered only after the upstream has
            // answered, so every delivery it knows of has arrived.
            let got = up.delivered_ids();
            let missing: Vec<_> = want.difference(&got).collect();
            assert!(
                missing.is_empty(),
                "{} of {} acknowledged deliveries never arrived and the store has none left \
                 to deliver, e.g. {:?}",
                missing.len(),
                want.len(),
                &missing[..missing.len().min(5)]
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered_after = final_started.elapsed();
    let check_started = Instant::now();
    // Every acknowledged event of the load rounds, and a sample of the
    // seeded ones, is still a duplicate of its first delivery id.
    let seeded_ids: HashSet<&str> = seeded.iter().map(|a| a.id.as_str()).collect();
    let mut again: Vec<Ack> = acked
        .iter()
        .filter(|a| !seeded_ids.contains(a.id.as_str()))
        .cloned()
        .collect();
    let step = (seeded.len() / SEED_SAMPLE).max(1);
    again.extend(seeded.iter().step_by(step).cloned());
    let problems = check_acks(
        &p,
        SECRET,
        &again,
        &(Arc::new(move |id: &str| up.is_delivered(id)) as Delivered),
        &[STRICT],
        CHECKERS,
    )
    .await;
    assert!(
        problems.is_empty(),
        "at the end: {} problems, e.g.\n{}",
        problems.len(),
        problems[..problems.len().min(10)].join("\n")
    );
    Arc::into_inner(p).unwrap().kill();
    eprintln!(
        "{} requests acknowledged ({} seeded) across {kills} kills; all delivered {:.1} s \
         after the last restart ({replayed} replayed from the dead letters); {} checked again \
         in {:.1} s; test took {:.1} s",
        acked.len(),
        seeded.len(),
        delivered_after.as_secs_f64(),
        again.len(),
        check_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
