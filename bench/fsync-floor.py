#!/usr/bin/env python3
"""bench/fsync-floor.py: the disk's own floor under a durable ack.

Appends to one file and calls fdatasync, as a group commit does, and
prints the distribution of the time a commit takes (write + fdatasync) and
of the ack latency that follows from it for webhooks arriving at a fixed
rate: a webhook waits for the commit in flight (if any) to end, then for its
own. Nothing else runs: no HTTP, no parsing, no SQLite.

    python3 bench/fsync-floor.py [RATE] [SECONDS] [DIR]
    taskset -c 0 python3 bench/fsync-floor.py 10000 10 /work/tmp

RATE webhooks/s of BODY bytes each (1,200) arrive on a fixed schedule; the
loop commits every webhook that arrived before the commit starts, in one
write and one fdatasync, like the reference server's group commit. PREP
says what the file is before the commits:
- written (default): 256 MiB of zeros written and synced first, then
  rewritten in place (a spare payload segment): data-only syncs;
- fresh: empty, every commit extends it (a new segment);
- fallocate: 256 MiB reserved with posix_fallocate (unwritten extents),
  then written in order: the size is set, but each sync converts extents.
"""
import os
import sys
import time

RATE = float(sys.argv[1]) if len(sys.argv) > 1 else 10000.0
SECS = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
DIR = sys.argv[3] if len(sys.argv) > 3 else "."
BODY = 1200
SIZE = 256 << 20  # larger than a run writes (12 MB/s at 10,000/s)
PREP = os.environ.get("PREP", "written")
if PREP not in ("written", "fresh", "fallocate"):
    sys.exit("PREP is written, fresh or fallocate")
FRESH = PREP == "fresh"

path = os.path.join(DIR, f"fsync-floor-{os.getpid()}.dat")
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
try:
    if PREP == "written":
        os.write(fd, b"\0" * SIZE)
        os.fsync(fd)
    elif PREP == "fallocate":
        os.posix_fallocate(fd, 0, SIZE)
        os.fsync(fd)
    chunk = b"x" * BODY
    commits, acks = [], []
    start = time.perf_counter()
    arrived = 0  # webhooks whose arrival time has passed and are committed
    off = 0
    period = 1.0 / RATE
    while True:
        now = time.perf_counter()
        if now - start > SECS:
            break
        due = int((now - start) / period)  # arrivals up to now
        if due == arrived:
            # nothing waiting: sleep until the next arrival
            nxt = start + (arrived + 1) * period
            time.sleep(max(0.0, nxt - time.perf_counter()))
            continue
        n = due - arrived
        t0 = time.perf_counter()
        data = chunk * n
        if FRESH:
            os.write(fd, data)
        else:
            if off + len(data) > SIZE:
                off = 0
            os.pwrite(fd, data, off)
            off += len(data)
        os.fdatasync(fd)
        t1 = time.perf_counter()
        commits.append(t1 - t0)
        for i in range(arrived, due):
            acks.append(t1 - (start + (i + 1) * period))
        arrived = due
finally:
    os.close(fd)
    os.unlink(path)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))] * 1e3


print(f"rate {RATE:.0f}/s for {SECS:.0f} s, file {PREP}, "
      f"{len(acks)} webhooks in {len(commits)} commits ({len(acks) / max(1, len(commits)):.1f} a commit)")
for name, xs in (("commit (write + fdatasync)", commits), ("ack (arrival to commit end)", acks)):
    print(f"  {name:28} p50 {pct(xs, 50):6.2f}  p90 {pct(xs, 90):6.2f}  p99 {pct(xs, 99):6.2f}  "
          f"p99.9 {pct(xs, 99.9):6.2f}  max {max(xs) * 1e3:7.2f} ms; "
          f"{100.0 * sum(1 for x in xs if x <= 0.002) / len(xs):.1f} % <= 2 ms")
