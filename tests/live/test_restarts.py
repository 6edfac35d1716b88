"""Restarts that start: SIGKILL at the worst moments, and a data dir from another broker.

Both come down to a RocksDB persisted offset that Faust's recovery checks against the
changelog's "highwater" as the broker's ListOffsets reports it:

* after a SIGKILL on the same broker the persisted offset can be past Tansu's answer
  (the last record batch's base offset + 1; docs/live-worker.md) although the
  record exists: ``ConsistencyError`` at start, before the fix;
* a data dir from an earlier broker (or re-created topics) holds offsets past the new
  changelog's end: the local store must be rebuilt from the changelog, in one log line.

:mod:`processors.live.recovery` compares against the fetch high-water mark instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from processors.live.broker import EmbeddedBroker
from processors.topics import FLUSHES

from .conftest import ROOT, TEST_FAUST, WorkerProc, consume, ensure, produce
from .scenario import message
from .test_recovery import now_ms, publish_reference

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

KILLS = 3
REBUILD_LINE = "rebuilding local table state from the changelog"


def flushes_so_far(bootstrap: str, prefix: str, more_than: int, timeout: float) -> list[Any]:
    return consume(bootstrap, prefix, FLUSHES, until=lambda v: len(v) > more_than, timeout=timeout)


def assert_each_message_flushed_once(flushes: list[dict[str, Any]], sent: list[str]) -> None:
    by_id: dict[str, list[dict[str, Any]]] = {}
    for f in flushes:
        by_id.setdefault(f["flush_id"], []).append(f)
    for fid, copies in by_id.items():
        # at-least-once transport: a repeated Flush record is the same flush (same id)
        assert all(c["message_ids"] == copies[0]["message_ids"] for c in copies), fid
    per_message = Counter(m for copies in by_id.values() for m in copies[0]["message_ids"])
    assert per_message == Counter(sent), (
        f"lost: {sorted(set(sent) - set(per_message))}, "
        f"twice: {sorted(m for m, n in per_message.items() if n > 1)}"
    )


def test_worker_sigkilled_as_batches_close_comes_back_each_time(
    tansu: Any, prefix: str, workers: Callable[..., WorkerProc], tmp_path: Path
) -> None:
    """kill -9 the worker (RocksDB, same data dir) as its batches close, three times."""
    ensure(tansu.bootstrap, prefix, f"{prefix}notifier")
    conversations = [f"k{i}" for i in range(12)]
    kw: dict[str, Any] = {
        "sets": ("inactivity_seconds=2",),
        "store": "rocksdb://",
        "data_dir": tmp_path / "data",
    }
    worker = workers("w0", **kw)
    worker.wait_ready()
    publish_reference(tansu, prefix, conversations)
    sent: list[str] = []
    seen = 0
    for kill in range(KILLS):
        # every batch closes at the same tick: the closed states go to the changelog
        # together, several records in its last batch (what Tansu's ListOffsets misreads)
        wave = [f"{cid}-{kill}" for cid in conversations]
        produce(
            tansu.bootstrap,
            prefix,
            [
                ("chat.messages", cid, {**message(cid, mid, "ann"), "ts": now_ms()})
                for cid, mid in zip(conversations, wave, strict=True)
            ],
        )
        sent += wave
        seen = len(flushes_so_far(tansu.bootstrap, prefix, seen, timeout=30))
        worker.kill()
        worker = workers(f"w{kill + 1}", **kw)
        worker.wait_ready(timeout=60)
    flushes = consume(
        tansu.bootstrap,
        prefix,
        FLUSHES,
        until=lambda v: {m for f in v for m in f["message_ids"]} >= set(sent),
        timeout=60,
    )
    time.sleep(3)  # a second close of the same batch would come within a few ticks
    flushes = consume(tansu.bootstrap, prefix, FLUSHES, until=lambda v: False, timeout=3)
    assert_each_message_flushed_once(flushes, sent)
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("w*.log"))
    assert "ConsistencyError" not in logs


def test_worker_data_dir_from_an_earlier_broker_is_rebuilt(
    prefix: str, workers: Callable[..., WorkerProc], tmp_path: Path
) -> None:
    """A RocksDB data dir left by a worker on another (memory-only) broker."""
    data = tmp_path / "data"
    kw: dict[str, Any] = {
        "sets": ("inactivity_seconds=1",),
        "store": "rocksdb://",
        "data_dir": data,
    }
    app_id = f"{prefix}notifier"
    with EmbeddedBroker(log_file=tmp_path / "tansu-a.log") as first_broker:
        ensure(first_broker.bootstrap, prefix, app_id)
        first = WorkerProc(first_broker.bootstrap, prefix, tmp_path / "a.log", app_id=app_id, **kw)
        first.start()
        try:
            first.wait_ready()
            publish_reference(first_broker, prefix, ["c1", "c2"])
            records = []
            for i in range(6):
                cid = f"c{1 + i % 2}"
                records.append(
                    ("chat.messages", cid, {**message(cid, f"a{i}", "ann"), "ts": now_ms()})
                )
            produce(first_broker.bootstrap, prefix, records)
            consume(first_broker.bootstrap, prefix, FLUSHES, until=lambda v: len(v) >= 2)
        finally:
            first.stop()
    assert list(data.rglob("*.db")), "the first worker left no RocksDB store"

    with EmbeddedBroker(log_file=tmp_path / "tansu-b.log") as second_broker:
        ensure(second_broker.bootstrap, prefix, app_id)
        second = WorkerProc(
            second_broker.bootstrap, prefix, tmp_path / "b.log", app_id=app_id, **kw
        ).start()
        try:
            second.wait_ready(timeout=60)
            publish_reference(second_broker, prefix, ["c1"])
            produce(
                second_broker.bootstrap,
                prefix,
                [("chat.messages", "c1", {**message("c1", "b1", "ann"), "ts": now_ms()})],
            )
            flushes = consume(second_broker.bootstrap, prefix, FLUSHES, until=lambda v: len(v) >= 1)
            assert [f["message_ids"] for f in flushes] == [["b1"]]
            log = second.log()
            assert "ConsistencyError" not in log
            assert log.count(REBUILD_LINE) >= 1, log[-3000:]
        finally:
            second.stop()


def test_senders_sigkilled_with_deliveries_in_flight_send_each_once(
    tansu: Any, prefix: str, tmp_path: Path
) -> None:
    """kill -9 ``chat-notifier senders`` (RocksDB sent-store) three times mid-stream."""
    from tests.senders.factories import make_delivery

    outbox = tmp_path / "outbox"
    env = dict(
        os.environ,
        KAFKA_BROKER_URL=f"kafka://{tansu.bootstrap}",
        TOPIC_PREFIX=prefix,
        OUTBOX_DIR=str(outbox),
        # ~4 s for all: kills find deliveries in flight, and sent-store writes close
        # together (several records per changelog batch, what Tansu's ListOffsets misreads)
        EMAIL__RATE_PER_SECOND="150",
        PYTHONUNBUFFERED="1",
    )
    cmd = [sys.executable, "-P", "-m", "processors.cli", "senders", "--channel", "email"]
    cmd += ["--app-id", f"{prefix}senders", "--store", "rocksdb://", "--without-web"]
    cmd += ["--data-dir", str(tmp_path / "data")]
    for f in TEST_FAUST:
        cmd += ["--faust", f]

    def start(n: int) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"senders{n}.log"
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while "Ready" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"senders did not come back:\n{log.read_text()[-4000:]}")
            time.sleep(0.2)
        return proc, log

    def index_lines() -> list[dict[str, Any]]:
        path = outbox / "outbox.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    proc, _ = start(0)
    deliveries = [make_delivery("email", n=i + 1, recipient_id=f"u{i % 20}") for i in range(600)]
    produce(
        tansu.bootstrap,
        prefix,
        [("notify.email", d["recipient_id"], d) for d in deliveries],
    )
    try:
        for kill, after in enumerate((100, 250, 400)):
            deadline = time.monotonic() + 60
            while len(index_lines()) < after and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc, _ = start(kill + 1)
        wanted = {d["delivery_id"] for d in deliveries}
        deadline = time.monotonic() + 90
        while {i["delivery_id"] for i in index_lines()} < wanted and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    lines = index_lines()
    written = Counter(i["delivery_id"] for i in lines)
    assert set(written) == wanted, f"never sent: {len(wanted - set(written))}"
    files = list((outbox / "email").glob("*.eml"))
    assert len(files) == len(wanted)  # one file per delivery id: a resend overwrites
    resent = sum(n - 1 for n in written.values())
    # at-least-once: only deliveries in flight at a kill (sent, sent-store entry not yet
    # in the changelog) may be sent again; SENDER_CONCURRENCY (16) bounds them per kill
    assert resent <= 16 * KILLS, written.most_common(5)
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("senders*.log"))
    assert "ConsistencyError" not in logs
