"""Cost of scale (issue 10 item 5): CPU seconds per 1,000 input events, one worker vs two.

On a 2-core machine shared with the broker, wall-clock speed-up says little; what
scaling out costs is the CPU the group burns for the same work. Each run starts the
worker children of :mod:`bench.live` (same input mix: 20% messages, 50% typing, 30%
presence), waits until the group has settled, publishes the same backlog, and reads the
children's CPU time (``utime + stime`` from ``/proc/<pid>/stat``) from just before the
backlog is published until the last event is applied. That includes what a group
member costs when idle (heartbeats, fetches, the flush scheduler's ticks), which is
part of the price of one more worker.

Two workloads: batches stay open (long inactivity period: decode, batching, presence,
Table writes on transitions) and a flush per message (inactivity 1 s on a backlog:
every message closes its batch and fans out). Size: ``BENCH_SCALE_EVENTS`` (20000).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.live import (
    INACTIVITY_S,
    PARTITIONS,
    encode_all,
    fresh_app,
    input_records,
    publish,
    read_status,
    reference_records,
    spawn,
    stop_all,
    wait_assigned,
)

EVENTS = int(os.environ.get("BENCH_SCALE_EVENTS", "20000"))
TICKS = os.sysconf("SC_CLK_TCK")
# No batch closes during a run, and within max_batch_seconds (300 s by default): the
# core refuses an inactivity period above it.
OPEN_INACTIVITY_S = 250


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # after the command name: state is field 3, utime 14 and stime 15 (1-based)
    return (int(fields[11]) + int(fields[12])) / TICKS


def measure(
    bootstrap: str,
    workdir: Path,
    ref: list[Any],
    encoded: list[Any],
    workers: int,
    inactivity: float,
) -> tuple[float, float]:
    """(CPU seconds per 1,000 events summed over the workers, wall seconds)."""
    prefix, app_id = fresh_app(bootstrap, "s", "worker")
    statuses = [workdir / f"{app_id}-{i}.json" for i in range(workers)]
    children = [spawn("worker", bootstrap, prefix, app_id, s, inactivity) for s in statuses]
    try:
        wait_assigned(statuses, PARTITIONS)
        asyncio.run(publish(bootstrap, prefix, ref))
        time.sleep(1.0)
        before = sum(cpu_seconds(c.pid) for c in children)
        start = time.monotonic()
        asyncio.run(publish(bootstrap, prefix, encoded))
        deadline = start + 300
        n = len(encoded)
        while sum(read_status(s).get("count", 0) for s in statuses) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {[read_status(s) for s in statuses]} of {n} events")
            time.sleep(0.05)
        wall = time.monotonic() - start
        used = sum(cpu_seconds(c.pid) for c in children) - before
        return used / n * 1000, wall
    finally:
        stop_all(children)


def main() -> None:
    from processors.live.broker import EmbeddedBroker

    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    records = input_records(EVENTS)
    print(
        f"{EVENTS:,} input events, {PARTITIONS} partitions; CPU = utime+stime of the "
        "worker processes from publish to the last event applied (broker excluded)"
    )
    with EmbeddedBroker(log_file=workdir / "tansu.log") as broker:
        rows = []
        for label, inactivity in (
            ("batches open", OPEN_INACTIVITY_S),
            ("a flush per message", INACTIVITY_S),
        ):
            results = {}
            for workers in (1, 2):
                now = time.time_ns() // 1_000_000
                ref = encode_all(reference_records(now))
                encoded = encode_all(records, ts=now)
                results[workers] = measure(
                    broker.bootstrap, workdir, ref, encoded, workers, inactivity
                )
            rows.append((label, results))
        print(f"{'workload':<22} {'1 worker':>22} {'2 workers':>22} {'2/1':>6}")
        for label, res in rows:
            (c1, w1), (c2, w2) = res[1], res[2]
            print(
                f"{label:<22} {c1:>8.3f} CPU s/1k ({w1:4.1f} s) "
                f"{c2:>8.3f} CPU s/1k ({w2:4.1f} s) {c2 / c1:>6.2f}"
            )


if __name__ == "__main__":
    main()
