#!/usr/bin/env python3
"""Turns the raw results of bench/load.sh into OUT_DIR/results.md (+ results.json).

usage: report.py RESULTS_DIR OUT_DIR "parameters text"
"""
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

res_dir, out_dir, params = sys.argv[1], sys.argv[2], sys.argv[3]

# Memory hookgate may spend per dedup key it holds, on top of the 25 MB
# budget. The figure is documented with the store in README.md (The store,
# "Memory per remembered event id"): the index holds 20-23 B a key, and the
# whole process grew by 25.4 B a key opening a store of 1M keys (23.1 at
# 10M). Keep the two in step.
BYTES_PER_DEDUP_KEY = 25
RSS_BASE_MB = 25.0
# Issue 9's disk targets per webhook lifecycle (insert, claim, finish).
LIFECYCLE_BYTES_MAX = 3.5 * 1024
LIFECYCLE_WRITE_CALLS_MAX = 2.0
SYNC_SYSCALLS = ("fsync", "fdatasync")
WRITE_SYSCALLS = ("write", "pwrite64", "writev", "pwritev", "pwritev2")


def load(name, default=None):
    p = os.path.join(res_dir, name)
    try:
        with open(p) as f:
            txt = f.read().strip()
        if name.endswith(".json"):
            # loadgen prints one JSON line; tolerate noise before it.
            return json.loads(txt.splitlines()[-1]) if txt else (default or {})
        return txt
    except (OSError, ValueError, IndexError):
        return default if default is not None else {}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def nproc():
    try:
        return subprocess.check_output(["nproc"], text=True).strip()
    except Exception:
        return str(os.cpu_count())


def f0(x):
    return "n/a" if x is None else f"{x:,.0f}"


def f2(x):
    return "n/a" if x is None else f"{x:.2f}"


def fx(x):
    return "n/a" if x is None else f"{x:.2f}x"


def mb(kb):
    return None if not kb else kb / 1024.0


def ratio(a, b):
    return None if a is None or not b else a / b


raw = {}
for fn in sorted(os.listdir(res_dir)):
    key = fn.rsplit(".", 1)[0] + ("" if fn.endswith(".json") else "_" + fn.rsplit(".", 1)[1])
    raw[key] = load(fn)


def get(name):
    v = raw.get(name)
    return v if isinstance(v, dict) else {}


def hwm(*names):
    v = [get(n).get("hwm_kb") or 0 for n in names]
    return max(v) or None


targets = [
    ("a. bare hyper (ceiling, no disk)", "bare", hwm("bare_rss")),
    ("b. durable-append reference", "ref", hwm("ref_closed_rss", "ref_open_rss")),
    ("c. hookgate queue mode, acks", "queue", hwm("queue_closed_rss", "queue_open_rss")),
    ("d. hookgate passthrough", "pass", hwm("pass_rss")),
    ("e. nginx proxy_pass (worker)", "nginx", hwm("nginx_rss")),
    ("e2. bare hyper proxy (hyper's floor)", "bproxy", hwm("bproxy_rss")),
    ("e3. verifying hyper proxy (e2 + HMAC: the floor of d)", "vproxy", hwm("vproxy_rss")),
    ("d2. hookgate passthrough, HTTP/2 (h2c) to the upstream", "passh2", hwm("passh2_rss")),
    # The sender point (s) has a closed-loop run only; its title (with its
    # ratios) is filled in below, once the points are loaded.
    ("s. hookgate sender: analyses accepted", "sender", hwm("sender_closed_rss")),
]
CLOSED_ONLY = {"sender"}


def point(prefix, mode):
    return get(f"{prefix}_{mode}")


def ok_rps(r):
    return r.get("ok_rps")


def lat(r, q, field="latency_ms"):
    return r.get(field, {}).get(q)


def bad(r):
    if not r:
        return "missing"
    st = {k: v for k, v in r.get("status", {}).items() if not k.startswith("2")}
    e = r.get("errors", 0)
    out = []
    if e:
        out.append(f"{e} errors")
    if r.get("unsent"):
        out.append(f"{r['unsent']} not sent by the end (server too slow for the rate)")
    if st:
        out.append("status " + ", ".join(f"{k}: {v}" for k, v in st.items()))
    return "; ".join(out) or "none"


# --- /admin/queues ---------------------------------------------------------------


def qsum(q, *fields):
    """Sum of FIELDS over every queue of an /admin/queues answer (None if absent)."""
    qs = q.get("queues") if isinstance(q, dict) else None
    if not isinstance(qs, list):
        return None
    return sum(x.get(f) or 0 for x in qs for f in fields)


def pend(q):
    return qsum(q, "pending")


def delivered(q):
    return qsum(q, "delivered")


def jobs(q):
    """Every job the store holds, whatever its state: one dedup key each
    (the bench's routes dedup on /analysisId and every id is unique)."""
    return qsum(q, "pending", "in_flight", "dead", "delivered")


def delta(after, before):
    return None if after is None or before is None else after - before


# --- disk I/O ----------------------------------------------------------------------


def io_delta(name):
    """Counter differences over the measured window NAME (see mark in load.sh)."""
    b, a = get(f"{name}_io_before"), get(f"{name}_io_after")
    if not a or not b:
        return None
    d = {}
    for part in ("process", "threads"):
        d[part] = {k: a[part][k] - b[part].get(k, 0) for k in a.get(part, {})}
    d["seconds"] = a["t"] - b["t"]
    d["thread_prefix"] = a.get("thread_prefix")
    d["thread_count"] = a.get("thread_count")
    return d


def io_row(title, name, webhooks, divisor_text):
    d = io_delta(name)
    if d is None:
        return {"phase": title, "window": name, "webhooks": webhooks, "divisor": divisor_text,
                "missing": True}
    per = (lambda v: None if not webhooks else v / webhooks)
    p, t = d["process"], d["threads"]
    return {
        "phase": title,
        "window": name,
        "divisor": divisor_text,
        "webhooks": webhooks,
        "seconds": round(d["seconds"], 3),
        "write_bytes": p.get("write_bytes"),
        "cancelled_write_bytes": p.get("cancelled_write_bytes"),
        "write_bytes_per_webhook": per(p.get("write_bytes", 0)),
        "store_threads": f"{d['thread_prefix']}* x{d['thread_count']}",
        "store_write_calls": t.get("syscw"),
        "store_write_calls_per_webhook": per(t.get("syscw", 0)),
        "store_wchar_per_webhook": per(t.get("wchar", 0)),
        "store_write_bytes_per_webhook": per(t.get("write_bytes", 0)),
    }


def strace_counts(txt):
    """{syscall: calls} from an `strace -c` summary."""
    counts = {}
    for line in (txt or "").splitlines():
        t = line.split()
        if len(t) >= 5 and t[3].isdigit() and re.fullmatch(r"[a-z0-9_]+", t[-1]) and t[-1] != "total":
            counts[t[-1]] = int(t[3])
    return counts


fill = get("drain_fill")
drain = get("drain")
brss = get("backlog_rss")
drss = get("drain_rss")
before = get("drain_before_queues")
drain_after = get("drain_queues_after")
qc_after = get("queue_closed_queues_after")
qo_after = get("queue_open_queues_after")

q_closed = point("queue", "closed")
ref_closed = point("ref", "closed")
ref_fwd = point("ref_fwd", "closed")
ref_fwd_open = point("ref_fwd", "open")
ref_fwd_stats = get("ref_fwd_stats")
acked_a = q_closed.get("ok")
delivered_a = delta(delivered(qc_after), delivered(get("queue_closed_queues_before")))
delivered_c = delta(delivered(drain_after), delivered(before) or 0)
io_rows = [
    io_row("reference, closed loop", "ref_closed", ref_closed.get("ok"), "acked"),
    io_row("(a) hookgate closed loop, forwarding live", "queue_closed", acked_a,
           "acked = lifecycles"),
    io_row("(b) backlog fill, upstream stalled", "drain_fill", fill.get("ok"), "acked"),
    io_row("(c) drain of the backlog", "drain", delivered_c, "delivered"),
]
io_by = {r["window"]: r for r in io_rows}


def io_get(window, field):
    return io_by.get(window, {}).get(field)


def add(*xs):
    return None if any(x is None for x in xs) else sum(xs)


bytes_bc = add(io_get("drain_fill", "write_bytes_per_webhook"),
               io_get("drain", "write_bytes_per_webhook"))
calls_bc = add(io_get("drain_fill", "store_write_calls_per_webhook"),
               io_get("drain", "store_write_calls_per_webhook"))

st_counts = strace_counts(raw.get("strace_txt") if isinstance(raw.get("strace_txt"), str) else "")
st_io = io_delta("strace")
st_acked = delta(jobs(get("strace_queues_after")), jobs(get("strace_queues_before")))
st_delivered = delta(delivered(get("strace_queues_after")), delivered(get("strace_queues_before")))
st_syncs = sum(st_counts.get(s, 0) for s in SYNC_SYSCALLS) if st_counts else None
st_writes = sum(st_counts.get(s, 0) for s in WRITE_SYSCALLS) if st_counts else None
strace = {
    "tids": raw.get("strace_tids"),
    "counts": st_counts,
    "seconds": None if st_io is None else round(st_io["seconds"], 3),
    "acked": st_acked,
    "delivered": st_delivered,
    "acks_per_s": None if not st_io or st_acked is None else st_acked / st_io["seconds"],
    "sync_calls": st_syncs,
    "write_calls": st_writes,
    "sync_calls_per_acked": ratio(st_syncs, st_acked),
    "write_calls_per_acked": ratio(st_writes, st_acked),
    "syscw_per_acked": None if not st_io else ratio(st_io["threads"].get("syscw"), st_acked),
}

# --- s. the sender: analyses accepted with a fan-out --------------------------------


def metric_sum(name, metric, **labels):
    """Sum of the samples of METRIC whose labels include LABELS, in the
    metrics text NAME (None when the text or the metric is absent)."""
    txt = raw.get(name)
    if not isinstance(txt, str):
        return None
    total, seen = 0.0, False
    for l in txt.splitlines():
        if not l.startswith(metric + "{") and not l.startswith(metric + " "):
            continue
        if all(f'{k}="{v}"' in l for k, v in labels.items()):
            try:
                total += float(l.rsplit(" ", 1)[1])
                seen = True
            except ValueError:
                pass
    return total if seen else None


s_closed = point("sender", "closed")
s_setup = get("sender_setup")
s_channels = s_setup.get("channels_created")
s_accepted = s_closed.get("status", {}).get("202", 0) if s_closed else None
s_duplicates = s_closed.get("status", {}).get("200", 0) if s_closed else None
s_rps = ok_rps(s_closed)
s_delivered = delta(
    metric_sum("sender_closed_metrics_after_txt", "hookgate_sender_attempts_total", outcome="delivered"),
    metric_sum("sender_closed_metrics_before_txt", "hookgate_sender_attempts_total", outcome="delivered"))
s_queues_after = get("sender_closed_queues_after")
s_io = io_delta("sender_closed")
s_window = None if s_io is None else s_io["seconds"]
sender = {
    "channels": s_channels,
    "channels_requested": s_setup.get("channels_requested"),
    "accepted_per_s": s_rps,
    "jobs_per_s": None if s_rps is None or s_channels is None else s_rps * s_channels,
    "accepted_202": s_accepted,
    "duplicates_200": s_duplicates,
    "body_bytes": s_closed.get("body_bytes"),
    "latency_ms": s_closed.get("latency_ms"),
    "x_reference": ratio(s_rps, ok_rps(ref_closed)),
    "x_queue": ratio(s_rps, ok_rps(q_closed)),
    "jobs_x_queue": ratio(None if s_rps is None or s_channels is None else s_rps * s_channels,
                          ok_rps(q_closed)),
    "delivered_in_window": s_delivered,
    "window_s": s_window,
    "delivered_per_s": None if s_delivered is None or not s_window else s_delivered / s_window,
    "pending_at_end": pend(s_queues_after),
    "delivered_by_end": delivered(s_queues_after),
}
targets[-1] = (f"s. hookgate sender: analyses accepted, {s_channels if s_channels is not None else 5}-channel "
               f"fan-out ({fx(sender['x_reference'])} reference, {fx(sender['x_queue'])} queue mode)",
               targets[-1][1], targets[-1][2])

# --- report ---------------------------------------------------------------------------

rate = None
lines = []
w = lines.append
w("# hookgate load benchmark results")
w("")
w("Written by `bench/load.sh` (overwritten on each run); raw and derived figures in `results.json`.")
w("")
w("## Machine and run")
w("")
w(f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
w(f"- nproc: {nproc()}; CPU: {cpu_model()}; kernel: {platform.release()}")
w(f"- parameters: {params}")
w("- placement: server under test + its upstream (bare_hyper) pinned to core 0, load generator "
  "pinned to core 1 (`taskset`). The machine is shared and noisy (other builds run on the same "
  "2 cores; +-20 % between runs is normal): compare the ratios, measured in the same run, "
  "rather than absolute figures. `loadavg` at the start of each point is shown.")
w("- closed loop: max throughput over N keep-alive connections. open loop: a fixed rate, latency "
  "measured from each request's *intended* send time (no coordinated omission); "
  "`send lag p99` shows how late the load generator itself was (a large value means the "
  "figure is bounded by the load generator or by CPU steal, not by the server). The warm-up "
  "is a separate load generator run just before the measured one.")
w("- bodies: ~1 KiB SigSentry JSON, unique `analysisId` per request, signed with "
  "`hookgate::signature::sign`.")
w("- the durable-append reference (`examples/durable_append.rs`) does the least a durable ack "
  "needs: read the body, verify the HMAC, parse the JSON for `/analysisId`, dedup in an "
  "in-memory set, append to one file from one writer thread that group-commits (one `write` "
  "and one `fdatasync` per batch), then answer `202`. It does not forward.")
w("")
w("## Throughput and latency")
w("")
w("| target | closed loop req/s (2xx) | p50 ms | p99 ms | p99.9 ms | open loop: achieved req/s | p50 ms | p99 ms | p99.9 ms | send lag p99 ms | non-2xx / errors | peak RSS MB | loadavg (closed / open) |")
w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
for title, prefix, peak in targets:
    c, o = point(prefix, "closed"), point(prefix, "open")
    if o.get("target_rate"):
        rate = o["target_rate"]
    la_c = (raw.get(f"{prefix}_closed_loadavg") or "").split(" ")[0]
    la_o = (raw.get(f"{prefix}_open_loadavg") or "").split(" ")[0]
    problems = bad(c) if bad(c) != "none" else ""
    problems_o = bad(o) if bad(o) != "none" else ""
    if prefix in CLOSED_ONLY:
        # No open-loop run of this point: not a problem.
        problems_o, la_o = "", "-"
    pr = "; ".join(x for x in [problems and "closed: " + problems, problems_o and "open: " + problems_o] if x) or "none"
    w(f"| {title} | {f0(ok_rps(c))} | {f2(lat(c, 'p50'))} | {f2(lat(c, 'p99'))} | {f2(lat(c, 'p999'))} "
      f"| {f0(ok_rps(o))} | {f2(lat(o, 'p50'))} | {f2(lat(o, 'p99'))} | {f2(lat(o, 'p999'))} "
      f"| {f2(o.get('send_lag_ms', {}).get('p99'))} | {pr} | {f2(mb(peak))} | {la_c} / {la_o} |")
w("")
w(f"Queue mode forwards to the upstream while it acks (same core). At the end of the closed-loop "
  f"point {f0(delivered(qc_after))} jobs had been delivered and {f0(pend(qc_after))} were still pending; "
  f"at the end of the open-loop point {f0(delivered(qo_after))} delivered, {f0(pend(qo_after))} pending.")
w("")
s_n = s_channels if s_channels is not None else 5
w(f"Sender mode (s) takes seed 000 analyses on `POST /v1/analyses` (closed loop only; "
  f"{f0(sender['body_bytes'])}-byte bodies, bearer API key) and fans each out to {s_n} `webhook` "
  f"channels pointing at the same upstream: **each accepted analysis (`202`) writes the analysis "
  f"and {s_n} jobs (one delivery per channel) in one durable transaction**, so "
  f"{f0(s_rps)} analyses/s accepted = {f0(sender['jobs_per_s'])} jobs/s written. Measured in the "
  f"same run: {fx(sender['x_reference'])} the durable-append reference's acks/s "
  f"({f0(ok_rps(ref_closed))}; one record per ack) and {fx(sender['x_queue'])} queue mode's "
  f"({f0(ok_rps(q_closed))}; one job per ack), i.e. {fx(sender['jobs_x_queue'])} queue mode's jobs/s. "
  f"hookgate delivers while it accepts (same core, 4 attempts at once per channel): "
  f"{f0(s_delivered)} deliveries done in the measured window ({f0(sender['delivered_per_s'])}/s, "
  f"`hookgate_sender_attempts_total{{outcome=\"delivered\"}}`), {f0(sender['pending_at_end'])} "
  f"still pending at its end; `202` {f0(s_accepted)}, duplicates (`200`) {f0(s_duplicates)}.")
w("")

# Queue mode against the two ceilings, figure by figure.
q_open, ref_open = point("queue", "open"), point("ref", "open")
bare_closed, bare_open = point("bare", "closed"), point("bare", "open")
cmp_rows = [
    ("closed loop acks/s (forwarding live)", ok_rps(q_closed), ok_rps(ref_closed), ok_rps(bare_closed), "req/s"),
    ("closed loop acks/s of the reference forwarding too (b2)", ok_rps(ref_fwd), ok_rps(ref_closed),
     ok_rps(bare_closed), "req/s"),
    ("closed loop p50 ms", lat(q_closed, "p50"), lat(ref_closed, "p50"), lat(bare_closed, "p50"), "ms"),
    ("closed loop p99 ms", lat(q_closed, "p99"), lat(ref_closed, "p99"), lat(bare_closed, "p99"), "ms"),
    ("closed loop p99.9 ms", lat(q_closed, "p999"), lat(ref_closed, "p999"), lat(bare_closed, "p999"), "ms"),
    (f"open loop achieved req/s at {f0(rate)}/s", ok_rps(q_open), ok_rps(ref_open), ok_rps(bare_open), "req/s"),
    ("open loop p50 ms", lat(q_open, "p50"), lat(ref_open, "p50"), lat(bare_open, "p50"), "ms"),
    ("open loop p99 ms", lat(q_open, "p99"), lat(ref_open, "p99"), lat(bare_open, "p99"), "ms"),
    ("open loop p99 ms of the reference forwarding too (b2)", lat(ref_fwd_open, "p99"), lat(ref_open, "p99"),
     lat(bare_open, "p99"), "ms"),
    ("open loop p99.9 ms", lat(q_open, "p999"), lat(ref_open, "p999"), lat(bare_open, "p999"), "ms"),
    ("backlog fill acks/s, upstream stalled (vs closed loop)", ok_rps(fill), ok_rps(ref_closed), ok_rps(bare_closed), "req/s"),
    ("backlog fill p99 ms (vs closed loop)", lat(fill, "p99"), lat(ref_closed, "p99"), lat(bare_closed, "p99"), "ms"),
    ("peak RSS MB", mb(targets[2][2]), mb(targets[1][2]), mb(targets[0][2]), "MB"),
    ("bytes written to disk per acked webhook (closed loop)", io_get("queue_closed", "write_bytes_per_webhook"),
     io_get("ref_closed", "write_bytes_per_webhook"), None, "B"),
    ("store write calls per acked webhook (closed loop)", io_get("queue_closed", "store_write_calls_per_webhook"),
     io_get("ref_closed", "store_write_calls_per_webhook"), None, "calls"),
]
w("## Queue mode against the reference and bare hyper")
w("")
w("Every queue-mode figure beside the same figure of the durable-append reference and of bare "
  "hyper, measured in the same run, and their ratios (queue / other: above 1 is better for "
  "throughput, worse for latency, memory and I/O).")
w("")
w("| queue-mode figure | queue mode | reference | x reference | bare hyper | x bare hyper |")
w("|---|---:|---:|---:|---:|---:|")
comparisons = []
for label, q, r, b, unit in cmp_rows:
    fmt = f0 if unit in ("req/s", "B") else f2
    comparisons.append({"figure": label, "unit": unit, "queue": q, "reference": r, "bare": b,
                        "x_reference": ratio(q, r), "x_bare": ratio(q, b)})
    w(f"| {label} | {fmt(q)} | {fmt(r)} | {fx(ratio(q, r))} | {fmt(b)} | {fx(ratio(q, b))} |")
w("")

# Drain and backlog.
w("## Drain and backlog")
w("")
w(f"- backlog: {f0(fill.get('ok'))} jobs acked (closed loop) while the upstream stalled, at "
  f"{f0(fill.get('ok_rps'))} acks/s on average as the backlog grew from 0 "
  f"(p50 {f2(lat(fill, 'p50'))} ms, p99 {f2(lat(fill, 'p99'))} ms; non-2xx/errors: {bad(fill)}); "
  f"queues then: pending {f0(pend(before))}, in flight (stalled) {f0(qsum(before, 'in_flight'))}; "
  f"store dir (while running) {f2((brss.get('db_bytes') or 0) / 1048576)} MB.")
w(f"- RSS with the backlog held (receiving process, after the fill): VmRSS {f2(mb(brss.get('rss_kb')))} MB, "
  f"VmHWM {f2(mb(brss.get('hwm_kb')))} MB, {f0(jobs(before))} dedup keys held.")
w(f"- drain: hookgate restarted on that store with the healthy upstream: "
  f"{f0(drain.get('delivered_during_watch'))} jobs delivered in {f2(drain.get('watch_s'))} s "
  f"= **{f0(drain.get('jobs_per_s'))} jobs/s** (Δdelivered/Δt between the first `/admin/queues` poll "
  f"and the poll that showed pending = 0; {f0(drain.get('pending_at_first_poll'))} pending at the first poll).")
w(f"- RSS after the drain: VmRSS {f2(mb(drss.get('rss_kb')))} MB; peak during the drain (VmHWM) "
  f"{f2(mb(drss.get('hwm_kb')))} MB, {f0(jobs(drain_after))} dedup keys held.")
w("")

# Disk I/O per webhook.
w("## Disk I/O per webhook")
w("")
w("`write_bytes` of `/proc/<pid>/io` (whole process) and `syscw` / `wchar` / `write_bytes` of "
  "`/proc/<pid>/task/<tid>/io` summed over the store threads (hookgate: the threads named "
  "`hookgate-store*`, which do no socket I/O; reference: its `durable-writer` thread), read at "
  "both edges of the measured window and divided by the webhooks of the window. `write_bytes` "
  "counts page-cache pages the process dirtied (file data; 4 KiB pages, a page dirtied again "
  "after being written back counts again; the filesystem journal is not included); `wchar` the "
  "bytes the store threads handed to write calls; `syscw` their write-family calls "
  "(write/pwrite/writev). Windows: (a) the measured closed-loop run (warm-up excluded); "
  "(b) the fill, from the first request to 1 s after the last ack; (c) the drain, from the "
  "process start (opening the backlog store included) to 1 s after the queue emptied.")
w("")
w("| phase | webhooks (divisor) | window s | write_bytes / webhook | cancelled_write_bytes | store write calls / webhook | store wchar B / webhook | store threads' write_bytes / webhook | store threads |")
w("|---|---:|---:|---:|---:|---:|---:|---:|---|")
for r in io_rows:
    if r.get("missing"):
        w(f"| {r['phase']} | {f0(r['webhooks'])} ({r['divisor']}) | n/a | n/a | n/a | n/a | n/a | n/a | missing |")
        continue
    w(f"| {r['phase']} | {f0(r['webhooks'])} ({r['divisor']}) | {f2(r['seconds'])} "
      f"| {f0(r['write_bytes_per_webhook'])} | {f0(r['cancelled_write_bytes'])} "
      f"| {f2(r['store_write_calls_per_webhook'])} | {f0(r['store_wchar_per_webhook'])} "
      f"| {f0(r['store_write_bytes_per_webhook'])} | `{r['store_threads']}` |")
w(f"| (b) + (c): insert, then claim and finish | | | {f0(bytes_bc)} | | {f2(calls_bc)} | | | |")
w("")
w(f"In (a) a lifecycle is counted as one acked webhook: {f0(acked_a)} acked and "
  f"{f0(delivered_a)} delivered in the window (the forwarder runs on the same core; when it "
  f"delivers fewer than it acks, (a) under-counts the claim and finish writes, and (b) + (c) is "
  f"the whole lifecycle). The reference writes each body once (4-byte length prefix), one `write` "
  f"and one `fdatasync` per group commit, so its write calls per webhook are also its syncs per "
  f"webhook.")
w("")
if st_counts:
    others = ", ".join(f"{k} {v:,}" for k, v in sorted(st_counts.items()))
    w(f"Sync and write calls of the store threads under `strace -c` (threads {strace['tids'] or 'n/a'}; "
      f"{f2(strace['seconds'])} s of a closed-loop queue-mode load with forwarding, fresh store): "
      f"{f0(st_acked)} acked and {f0(st_delivered)} delivered in that window "
      f"({f0(strace['acks_per_s'])} acks/s under strace vs {f0(ok_rps(q_closed))} untraced); calls: {others}.")
    w("")
    w("| store calls per acked webhook (strace) | fsync + fdatasync | write-family calls | syscw of the same window (cross-check) |")
    w("|---|---:|---:|---:|")
    w(f"| hookgate queue mode | {f2(strace['sync_calls_per_acked'])} | {f2(strace['write_calls_per_acked'])} "
      f"| {f2(strace['syscw_per_acked'])} |")
    w("")
    w("strace stops the traced threads at every system call, so they run slower and group more "
      "requests per commit than untraced: read the calls per webhook as an upper bound on "
      "batching, and the untraced `syscw` above for the write calls.")
else:
    w("Sync calls: no strace summary (strace missing, SKIP_STRACE=1, or no store thread found).")
w("")

# Targets.
r_ref = ratio(ok_rps(q_closed), ok_rps(ref_closed))
r_fwd_ceiling = ratio(ok_rps(ref_fwd), ok_rps(ref_closed))
r_q_fwd = ratio(ok_rps(q_closed), ok_rps(ref_fwd))
r_fill = ratio(ok_rps(fill), ok_rps(ref_closed))
r_q = ratio(ok_rps(q_closed), ok_rps(bare_closed))
r_p = ratio(ok_rps(point("pass", "closed")), ok_rps(point("nginx", "closed")))
r_p99 = ratio(lat(point("pass", "open"), "p99"), lat(point("nginx", "open"), "p99"))
r_bp = ratio(ok_rps(point("bproxy", "closed")), ok_rps(point("nginx", "closed")))
r_p_bp = ratio(ok_rps(point("pass", "closed")), ok_rps(point("bproxy", "closed")))
r_vp = ratio(ok_rps(point("vproxy", "closed")), ok_rps(point("nginx", "closed")))
r_p_vp = ratio(ok_rps(point("pass", "closed")), ok_rps(point("vproxy", "closed")))
r_h2 = ratio(ok_rps(point("passh2", "closed")), ok_rps(point("pass", "closed")))


# r. d, e and e3 in alternating rounds: each round's ratios, and their median.
rounds = []
for n in range(1, 1000):
    r = {who: ok_rps(get(f"round{n}_{who}")) for who in ("pass", "nginx", "vproxy")}
    if not any(r.values()):
        break
    rounds.append({"round": n, **{f"{who}_rps": v for who, v in r.items()},
                   "pass_nginx": ratio(r["pass"], r["nginx"]),
                   "vproxy_nginx": ratio(r["vproxy"], r["nginx"]),
                   "pass_vproxy": ratio(r["pass"], r["vproxy"])})


def round_stats(key):
    vals = [x[key] for x in rounds if x[key] is not None]
    if not vals:
        return None, None, None
    return statistics.median(vals), min(vals), max(vals)


def rounds_cell(key):
    m, lo, hi = round_stats(key)
    each = ", ".join(f2(x[key]) for x in rounds)
    return f"{f2(m)} (rounds: {each}; range {f2(lo)}-{f2(hi)})"


round_rows = [
    (f"passthrough / nginx, median of {len(rounds)} alternating closed-loop rounds (r)",
     round_stats("pass_nginx")[0], rounds_cell("pass_nginx"), "", "info"),
    (f"verifying hyper proxy (e3) / nginx, median of {len(rounds)} alternating rounds (r)",
     round_stats("vproxy_nginx")[0], rounds_cell("vproxy_nginx"), "", "info"),
    (f"passthrough / verifying hyper proxy (e3), median of {len(rounds)} alternating rounds (r)",
     round_stats("pass_vproxy")[0], rounds_cell("pass_vproxy"), "", "info"),
] if rounds else []
qo_p99 = lat(q_open, "p99")
qo_rate = ok_rps(q_open)
d_rate = drain.get("jobs_per_s")
bytes_a = io_get("queue_closed", "write_bytes_per_webhook")
calls_a = io_get("queue_closed", "store_write_calls_per_webhook")

# Peak RSS of every hookgate phase against 25 MB + BYTES_PER_DEDUP_KEY per key held.
rss_phases = []
for phase, peak_kb, keys in [
    ("queue closed loop", get("queue_closed_rss").get("hwm_kb"), jobs(qc_after)),
    ("queue open loop", get("queue_open_rss").get("hwm_kb"), jobs(qo_after)),
    ("passthrough", get("pass_rss").get("hwm_kb"), 0),
    ("backlog fill", brss.get("hwm_kb"), jobs(before)),
    ("drain", drss.get("hwm_kb"), jobs(drain_after)),
]:
    if not peak_kb:
        continue
    budget = RSS_BASE_MB + (keys or 0) * BYTES_PER_DEDUP_KEY / 1048576
    rss_phases.append({"phase": phase, "peak_mb": mb(peak_kb), "dedup_keys": keys,
                       "budget_mb": budget, "met": mb(peak_kb) <= budget})
worst = max(rss_phases, key=lambda p: p["peak_mb"] / p["budget_mb"], default=None)


def met(v, ok):
    return "n/a" if v is None else ("**met**" if ok(v) else "**missed**")


rate_ok = qo_rate is not None and rate and qo_rate >= 0.97 * rate

HOOKGATE_COMMITS = "hookgate_store_commit_duration_seconds"
# The durable-append reference's histogram of its group commits (one write
# and one fdatasync), with the same bucket bounds.
REFERENCE_COMMITS = "reference_commit_duration_seconds"


def commit_counts(name, metric=HOOKGATE_COMMITS):
    """Cumulative (bound in s, commits) of a commit-duration histogram over a
    phase: scraped at the phase's end minus the scrape at its start (when
    there is one); None without commits."""
    def parse(path):
        try:
            text = open(os.path.join(res_dir, path)).read()
        except OSError:
            return None
        buckets = {}
        for line in text.splitlines():
            if line.startswith(metric + "_bucket"):
                le = line.split('le="')[1].split('"')[0]
                buckets[float("inf") if le == "+Inf" else float(le)] = float(line.split()[-1])
        return buckets or None
    after = parse(f"{name}_metrics_after.txt")
    if not after:
        return None
    before = parse(f"{name}_metrics_before.txt") or {}
    counts = sorted((le, n - before.get(le, 0.0)) for le, n in after.items())
    return counts if counts[-1][1] > 0 else None


def commit_p99(name, metric=HOOKGATE_COMMITS):
    """p99 of the commit duration (ms) over a phase, as the upper bound of
    the histogram bucket holding the 99th percentile."""
    counts = commit_counts(name, metric)
    if counts is None:
        return None
    for le, n in counts:
        if n >= 0.99 * counts[-1][1]:
            return le * 1000.0
    return None


def commits_within(name, bound_s=0.002, metric=HOOKGATE_COMMITS):
    """Share (%) of a phase's commits that took at most bound_s."""
    counts = commit_counts(name, metric)
    if counts is None:
        return None
    within = [n for le, n in counts if abs(le - bound_s) < 1e-9]
    return None if not within else 100.0 * within[0] / counts[-1][1]


def commit_cell(name, metric=HOOKGATE_COMMITS):
    """'<= P ms (S % <= 2 ms)' for one phase's commits."""
    p99, share = commit_p99(name, metric), commits_within(name, 0.002, metric)
    if p99 is None:
        return "n/a"
    return f"<= {p99:g} ms ({share:.1f} % <= 2 ms)" if share is not None else f"<= {p99:g} ms"

target_rows = [
    ("queue-mode acks with forwarding live / durable-append reference (closed loop)", r_ref,
     f"{f2(r_ref)} ({f0(ok_rps(q_closed))} / {f0(ok_rps(ref_closed))} req/s)", ">= 0.6",
     met(r_ref, lambda v: v >= 0.6)),
    ("acks while the upstream is stalled (backlog fill) / reference (closed loop)", r_fill,
     f"{f2(r_fill)} ({f0(ok_rps(fill))} / {f0(ok_rps(ref_closed))} acks/s)", ">= 0.8",
     met(r_fill, lambda v: v >= 0.8)),
    ("drain of the backlog", d_rate, f"{f0(d_rate)} jobs/s", ">= 20,000",
     met(d_rate, lambda v: v >= 20000)),
    (f"queue-mode ack p99 at {f0(rate)} req/s (open loop)", qo_p99,
     f"{f2(qo_p99)} ms (achieved {f0(qo_rate)} req/s)", "<= 2 ms",
     met(qo_p99, lambda v: v <= 2.0 and rate_ok)),
    ("store commit p99 (queue closed loop / backlog fill with 1 s purges / drain)",
     commit_p99("queue_closed"),
     " / ".join("n/a" if v is None else f"<= {v:g} ms" for v in
                (commit_p99("queue_closed"), commit_p99("drain_fill"), commit_p99("drain"))),
     "<= 2 ms",
     met(max([v for v in (commit_p99("queue_closed"), commit_p99("drain_fill"), commit_p99("drain"))
              if v is not None] or [None]) if any(v is not None for v in (commit_p99("queue_closed"),
              commit_p99("drain_fill"), commit_p99("drain"))) else None, lambda v: v <= 2.0)),
    ("store commit p99, closed loop / open loop at the fixed rate: hookgate queue mode (forwarding "
     "live) against the reference's group commit (one write + one fdatasync), the floor of the "
     "row above", None,
     f"hookgate {commit_cell('queue_closed')} / {commit_cell('queue_open')}; reference "
     f"{commit_cell('ref_closed', REFERENCE_COMMITS)} / {commit_cell('ref_open', REFERENCE_COMMITS)}",
     "", "info"),
    ("bytes written to disk per webhook lifecycle ((a): lifecycle = acked)", bytes_a,
     f"{f0(bytes_a)} B ((b) + (c): {f0(bytes_bc)} B)", f"<= 3.5 KB ({LIFECYCLE_BYTES_MAX:,.0f} B)",
     met(bytes_a, lambda v: v <= LIFECYCLE_BYTES_MAX)),
    ("store write calls per webhook lifecycle, sockets aside ((a): lifecycle = acked)", calls_a,
     f"{f2(calls_a)} ((b) + (c): {f2(calls_bc)}; fsync+fdatasync under strace: "
     f"{f2(strace['sync_calls_per_acked'])})", f"<= {LIFECYCLE_WRITE_CALLS_MAX:g}",
     met(calls_a, lambda v: v <= LIFECYCLE_WRITE_CALLS_MAX)),
    (f"hookgate peak RSS vs 25 MB + {BYTES_PER_DEDUP_KEY} B per dedup key held (worst phase)",
     None if worst is None else worst["peak_mb"],
     "n/a" if worst is None else
     f"{f2(worst['peak_mb'])} MB ({worst['phase']}, {f0(worst['dedup_keys'])} keys held)",
     "n/a" if worst is None else f"<= {f2(worst['budget_mb'])} MB",
     "n/a" if worst is None else ("**met**" if all(p["met"] for p in rss_phases) else "**missed**")),
    ("the reference forwarding too (b2) / the reference: the ceiling of the first row", r_fwd_ceiling,
     f"{f2(r_fwd_ceiling)} ({f0(ok_rps(ref_fwd))} / {f0(ok_rps(ref_closed))} req/s; "
     f"{f0(ref_fwd_stats.get('forwarded'))} forwarded, {f0(ref_fwd_stats.get('failed'))} failed)",
     "", "info"),
    (f"the reference's own ack p99 at {f0(rate)} req/s (open loop, no forwarding): the least "
     "durable ack on this host, against the row's 2 ms", lat(ref_open, "p99"),
     f"{f2(lat(ref_open, 'p99'))} ms (send lag p99 {f2(lat(ref_open, 'p99', 'send_lag_ms'))} ms); "
     f"queue mode {f2(ratio(qo_p99, lat(ref_open, 'p99')))}x it", "", "info"),
    (f"queue-mode ack p99 / the reference forwarding too (b2), open loop at {f0(rate)} req/s: "
     "the same work's floor on this core", ratio(qo_p99, lat(ref_fwd_open, "p99")),
     f"{f2(ratio(qo_p99, lat(ref_fwd_open, 'p99')))} ({f2(qo_p99)} / {f2(lat(ref_fwd_open, 'p99'))} ms)",
     "", "info"),
    ("queue-mode acks with forwarding live / the reference forwarding too (b2)", r_q_fwd,
     f"{f2(r_q_fwd)} ({f0(ok_rps(q_closed))} / {f0(ok_rps(ref_fwd))} req/s)", "", "info"),
    ("queue-mode acks / bare hyper (closed loop)", r_q,
     f"{f2(r_q)} ({f0(ok_rps(q_closed))} / {f0(ok_rps(bare_closed))} req/s)",
     "(was >= 0.6; now against the reference)", "info"),
    ("passthrough / nginx (closed loop)", r_p,
     f"{f2(r_p)} ({f0(ok_rps(point('pass', 'closed')))} / {f0(ok_rps(point('nginx', 'closed')))} req/s)",
     ">= 1.0 (issue 13)", met(r_p, lambda v: v >= 1.0)),
    ("bare hyper proxy (e2) / nginx: the floor of a proxy on hyper", r_bp,
     f"{f2(r_bp)} ({f0(ok_rps(point('bproxy', 'closed')))} / {f0(ok_rps(point('nginx', 'closed')))} req/s)",
     "", "info"),
    ("passthrough / bare hyper proxy (e2): what hookgate adds to hyper", r_p_bp,
     f"{f2(r_p_bp)} ({f0(ok_rps(point('pass', 'closed')))} / {f0(ok_rps(point('bproxy', 'closed')))} req/s)",
     "", "info"),
    ("verifying hyper proxy (e3) / nginx: the floor of a verifying proxy on hyper", r_vp,
     f"{f2(r_vp)} ({f0(ok_rps(point('vproxy', 'closed')))} / {f0(ok_rps(point('nginx', 'closed')))} req/s)",
     "", "info"),
    ("passthrough / verifying hyper proxy (e3): what hookgate adds to a verifying proxy", r_p_vp,
     f"{f2(r_p_vp)} ({f0(ok_rps(point('pass', 'closed')))} / {f0(ok_rps(point('vproxy', 'closed')))} req/s)",
     "", "info"),
    ("passthrough over HTTP/2 (h2c, d2) / over HTTP/1.1 (d): the upstream protocol's cost", r_h2,
     f"{f2(r_h2)} ({f0(ok_rps(point('passh2', 'closed')))} / {f0(ok_rps(point('pass', 'closed')))} req/s)",
     "", "info"),
    *round_rows,
    ("passthrough p99 / nginx p99 (open loop, fixed rate)", r_p99,
     f"{f2(r_p99)} ({f2(lat(point('pass', 'open'), 'p99'))} / {f2(lat(point('nginx', 'open'), 'p99'))} ms)",
     "<= 1.5 (issue 13)", met(r_p99, lambda v: v <= 1.5)),
]
w("## Targets")
w("")
w("| metric | measured | target | verdict |")
w("|---|---:|---:|---|")
for metric, _, measured, target, verdict in target_rows:
    w(f"| {metric} | {measured} | {target} | {verdict} |")
w("")
w("Peak RSS per hookgate phase (dedup keys held = jobs in the store in any state, from "
  f"`/admin/queues`; budget = {RSS_BASE_MB:g} MB + {BYTES_PER_DEDUP_KEY} B x keys): " +
  ("; ".join(f"{p['phase']} {f2(p['peak_mb'])} MB, {f0(p['dedup_keys'])} keys, budget "
             f"{f2(p['budget_mb'])} MB" for p in rss_phases) or "n/a") + ".")
w("")

# --- h. the outage ----------------------------------------------------------------


def attempts_total(name):
    """Sum of hookgate_forward_attempts_total in the metrics text NAME."""
    txt = raw.get(name)
    if not isinstance(txt, str):
        return None
    vals = [float(l.rsplit(" ", 1)[1]) for l in txt.splitlines()
            if l.startswith("hookgate_forward_attempts_total{")]
    return sum(vals) if vals else None


o_load, o_drain = get("outage"), get("outage_drain")
o_acked = o_load.get("ok")
o_attempts = delta(attempts_total("outage_metrics_after_txt"),
                   attempts_total("outage_metrics_before_txt"))
o_io = io_row("(h) outage, upstream refusing then 503", "outage", o_acked, "acked")
o_final = get("outage_queues_drained")
# Every job of the run: the healthy phase's and the outage's.
o_all_acked = None if o_acked is None else o_acked + (get("outage_healthy").get("ok") or 0)
o_delivered_all, o_dead = delivered(o_final), qsum(o_final, "dead")
o_delivered = delta(o_delivered_all, delivered(get("outage_queues_before")))
o_lost = (None if o_all_acked is None or o_delivered_all is None
          else max(o_all_acked - o_delivered_all, 0))
o_healthy = io_row("(h) same rate, healthy upstream", "outage_healthy",
                   get("outage_healthy").get("ok"), "acked")
healthy_bytes = o_healthy.get("write_bytes_per_webhook")
outage = {"acked": o_acked, "upstream_attempts": o_attempts, "delivered_after": o_delivered,
          "dead": o_dead, "lost": o_lost, "drain_s": o_drain.get("watch_s"),
          "drain_jobs_per_s": o_drain.get("jobs_per_s"), "io": o_io,
          "healthy_write_bytes_per_webhook": healthy_bytes,
          "rss_kb": get("outage_rss")}
w("## Outage (h)")
w("")
w(f"Queue mode under an open-loop load while the upstream refuses connections (first half) "
  f"and answers 503 (second half), then recovers ({params}).")
w("")
w("| figure | value |")
w("|---|---:|")
w(f"| webhooks acked during the outage | {f0(o_acked)} ({bad(o_load)} refused or failed) |")
w(f"| upstream attempts during the outage (all jobs together) | {f0(o_attempts)} |")
w(f"| bytes written per acked webhook during the outage | {f0(o_io.get('write_bytes_per_webhook'))} "
  f"(same rate, healthy upstream: {f0(healthy_bytes)}, delivery included) |")
w(f"| delivered from the outage's start to the end of the drain / dead-lettered / lost "
  f"(acked, healthy phase included, minus delivered) | {f0(o_delivered)} / {f0(o_dead)} / "
  f"**{f0(o_lost)}** |")
w(f"| time to drain after recovery (the next probe's wait included) | "
  f"{f2(o_drain.get('watch_s'))} s ({f0(o_drain.get('jobs_per_s'))} jobs/s over that time) |")
w(f"| peak RSS | {f2(mb(get('outage_rss').get('hwm_kb')))} MB |")
w("")

derived = {
    "sender": sender,
    "outage": outage,
    "comparisons": comparisons,
    "disk_io": {"rows": io_rows, "fill_plus_drain": {"write_bytes_per_webhook": bytes_bc,
                                                      "store_write_calls_per_webhook": calls_bc},
                "closed_loop_acked": acked_a, "closed_loop_delivered": delivered_a},
    "strace": strace,
    "passthrough_rounds": rounds,
    "rss": {"bytes_per_dedup_key": BYTES_PER_DEDUP_KEY, "base_mb": RSS_BASE_MB, "phases": rss_phases},
    "targets": [{"metric": m, "value": v, "measured": ms, "target": t,
                 "verdict": vd.strip("*")} for m, v, ms, t, vd in target_rows],
}
with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump({"parameters": params, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "nproc": nproc(), "cpu": cpu_model(), "derived": derived, "raw": raw},
              f, indent=1, sort_keys=True)
