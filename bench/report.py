#!/usr/bin/env python3
"""Turns the raw results of bench/load.sh into bench/results.md (+ results.json).

usage: report.py RESULTS_DIR OUT_DIR "parameters text"
"""
import json
import os
import platform
import subprocess
import sys
import time

res_dir, out_dir, params = sys.argv[1], sys.argv[2], sys.argv[3]


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


def mb(kb):
    return None if not kb else kb / 1024.0


raw = {}
for fn in sorted(os.listdir(res_dir)):
    key = fn.rsplit(".", 1)[0] + ("" if fn.endswith(".json") else "_" + fn.rsplit(".", 1)[1])
    raw[key] = load(fn)

targets = [
    ("a. bare hyper (ceiling)", "bare", raw.get("bare_rss", {}).get("hwm_kb")),
    ("b. hookgate queue (SQLite), acks", "queue", max(
        raw.get("queue_closed_rss", {}).get("hwm_kb", 0),
        raw.get("queue_open_rss", {}).get("hwm_kb", 0))),
    ("c. hookgate passthrough", "pass", raw.get("pass_rss", {}).get("hwm_kb")),
    ("d. nginx proxy_pass (worker)", "nginx", raw.get("nginx_rss", {}).get("hwm_kb")),
]


def point(prefix, mode):
    return raw.get(f"{prefix}_{mode}", {})


def ok_rps(r):
    return r.get("ok_rps")


def lat(r, q):
    return r.get("latency_ms", {}).get(q)


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


rate = None
lines = []
w = lines.append
w("# hookgate load benchmark results")
w("")
w("Written by `bench/load.sh` (overwritten on each run); raw figures in `bench/results.json`.")
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
  "figure is bounded by the load generator or by CPU steal, not by the server).")
w("- bodies: ~1 KiB SigSentry JSON, unique `analysisId` per request, signed with "
  "`hookgate::signature::sign`.")
w("")
w("## Throughput and latency")
w("")
w("| target | closed loop req/s (2xx) | p50 ms | p99 ms | p99.9 ms | open loop: achieved req/s | p50 ms | p99 ms | p99.9 ms | send lag p99 ms | non-2xx / errors | peak RSS MB | loadavg (closed / open) |")
w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
for title, prefix, hwm in targets:
    c, o = point(prefix, "closed"), point(prefix, "open")
    if o.get("target_rate"):
        rate = o["target_rate"]
    la_c = (raw.get(f"{prefix}_closed_loadavg") or "").split(" ")[0]
    la_o = (raw.get(f"{prefix}_open_loadavg") or "").split(" ")[0]
    problems = bad(c) if bad(c) != "none" else ""
    problems_o = bad(o) if bad(o) != "none" else ""
    pr = "; ".join(x for x in [problems and "closed: " + problems, problems_o and "open: " + problems_o] if x) or "none"
    w(f"| {title} | {f0(ok_rps(c))} | {f2(lat(c, 'p50'))} | {f2(lat(c, 'p99'))} | {f2(lat(c, 'p999'))} "
      f"| {f0(ok_rps(o))} | {f2(lat(o, 'p50'))} | {f2(lat(o, 'p99'))} | {f2(lat(o, 'p999'))} "
      f"| {f2(o.get('send_lag_ms', {}).get('p99'))} | {pr} | {f2(mb(hwm))} | {la_c} / {la_o} |")
w("")
qc = raw.get("queue_closed_queues", {})
qo = raw.get("queue_open_queues", {})


def pend(q):
    try:
        return sum(x.get("pending", 0) for x in q.get("queues", []))
    except Exception:
        return None


def delivered(q):
    try:
        return sum(x.get("delivered", 0) for x in q.get("queues", []))
    except Exception:
        return None


w(f"Queue mode forwards to the upstream while it acks (same core). At the end of the closed-loop "
  f"point {f0(delivered(qc))} jobs had been delivered and {f0(pend(qc))} were still pending; "
  f"at the end of the open-loop point {f0(delivered(qo))} delivered, {f0(pend(qo))} pending.")
w("")

# Drain and backlog.
fill = raw.get("drain_fill", {})
drain = raw.get("drain", {})
brss = raw.get("backlog_rss", {})
drss = raw.get("drain_rss", {})
before = raw.get("drain_before_queues", {})
w("## Drain and backlog")
w("")
w(f"- backlog: {f0(fill.get('ok'))} jobs acked (closed loop) while the upstream stalled, at "
  f"{f0(fill.get('ok_rps'))} acks/s on average as the backlog grew from 0 "
  f"(p50 {f2(lat(fill, 'p50'))} ms, p99 {f2(lat(fill, 'p99'))} ms; non-2xx/errors: {bad(fill)}); "
  f"queues then: pending {f0(pend(before))}, in flight (stalled) "
  f"{f0(sum(x.get('in_flight', 0) for x in before.get('queues', [])) if before else None)}; "
  f"database dir (db + WAL, while running) {f2((brss.get('db_bytes') or 0) / 1048576)} MB.")
w(f"- RSS with the backlog held (receiving process, after the fill): VmRSS {f2(mb(brss.get('rss_kb')))} MB, "
  f"VmHWM {f2(mb(brss.get('hwm_kb')))} MB.")
w(f"- drain: hookgate restarted on that database with the healthy upstream: "
  f"{f0(drain.get('delivered_during_watch'))} jobs delivered in {f2(drain.get('watch_s'))} s "
  f"= **{f0(drain.get('jobs_per_s'))} jobs/s** (Δdelivered/Δt between the first `/admin/queues` poll "
  f"and the poll that showed pending = 0; {f0(drain.get('pending_at_first_poll'))} pending at the first poll).")
w(f"- RSS after the drain: VmRSS {f2(mb(drss.get('rss_kb')))} MB; peak during the drain (VmHWM) "
  f"{f2(mb(drss.get('hwm_kb')))} MB.")
w("")

# Targets.
def ratio(a, b):
    return None if not a or not b else a / b


r_q = ratio(ok_rps(point("queue", "closed")), ok_rps(point("bare", "closed")))
r_p = ratio(ok_rps(point("pass", "closed")), ok_rps(point("nginx", "closed")))
qo_p99 = lat(point("queue", "open"), "p99")
qo_rate = ok_rps(point("queue", "open"))
d_rate = drain.get("jobs_per_s")
hg_peaks = {
    "queue load": targets[1][2],
    "passthrough": targets[2][2],
    "backlog fill": brss.get("hwm_kb"),
    "drain": drss.get("hwm_kb"),
}
hg_peak = max((v for v in hg_peaks.values() if v), default=None)


def met(v, ok):
    return "n/a" if v is None else ("**met**" if ok(v) else "**missed**")


w("## Targets")
w("")
w("| metric | measured | target | verdict |")
w("|---|---:|---:|---|")
w(f"| queue-mode acks / bare hyper (closed loop) | {f2(r_q)} ({f0(ok_rps(point('queue', 'closed')))} / {f0(ok_rps(point('bare', 'closed')))} req/s) | >= 0.6 | {met(r_q, lambda v: v >= 0.6)} |")
w(f"| passthrough / nginx (closed loop) | {f2(r_p)} ({f0(ok_rps(point('pass', 'closed')))} / {f0(ok_rps(point('nginx', 'closed')))} req/s) | >= 1.5 | {met(r_p, lambda v: v >= 1.5)} |")
rate_ok = qo_rate is not None and rate and qo_rate >= 0.97 * rate
w(f"| queue-mode ack p99 at {f0(rate)} req/s (open loop) | {f2(qo_p99)} ms (achieved {f0(qo_rate)} req/s) | <= 2 ms | {met(qo_p99, lambda v: v <= 2.0 and rate_ok)} |")
w(f"| drain rate | {f0(d_rate)} jobs/s | >= 20,000 | {met(d_rate, lambda v: v >= 20000)} |")
w(f"| hookgate peak RSS (max of: " + ", ".join(f"{k} {f2(mb(v))}" for k, v in hg_peaks.items()) +
  f" MB) | {f2(mb(hg_peak))} MB | <= 25 MB | {met(mb(hg_peak), lambda v: v <= 25)} |")
w("")

with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump({"parameters": params, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "nproc": nproc(), "cpu": cpu_model(), "raw": raw}, f, indent=1, sort_keys=True)
