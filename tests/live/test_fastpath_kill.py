"""SIGKILL in the middle of a large fetched batch: nothing lost, nothing applied twice.

The batch hot path (processors/live/fastpath.py) applies what one fetch delivered in
one go and acks it together. A worker killed half-way through such a batch must leave
the events it applied (changelog written, one last state per conversation and batch;
offsets maybe not committed) and the ones it had not reached (neither) so that its
successor applies each exactly once: every message ends up in exactly one Flush, and
no Flush is written twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from processors import codec
from processors import topics as t
from processors.topics import FLUSHES

from .conftest import WorkerProc, consume, ensure
from .scenario import message

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]

EVENTS = 20_000
CONVERSATIONS = 200  # 100 messages each: one batch per conversation (bound: 500)
INACTIVITY = "inactivity_seconds=6"  # no batch closes before the kill


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def publish_fast(bootstrap: str, prefix: str, records: list[tuple[str, bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    async def go() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=256 * 1024
        )
        await producer.start()
        try:
            futures = [await producer.send(prefix + tp, v, key=k) for tp, k, v in records]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(go())


def changelog_records(bootstrap: str, topic: str) -> int:
    """Records written to ``topic`` so far (a lower bound on Tansu: see test_recovery)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def go() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(4)]
            ends = await consumer.end_offsets(tps)
            return sum(ends.values())
        finally:
            await consumer.stop()

    return asyncio.run(go())


def applied_per_changelog(
    bootstrap: str, topic: str, until: Callable[[int], bool], timeout: float
) -> int:
    """Messages held in the conversations' last states on ``topic`` once ``until(them)``.

    The changelog gets each conversation's last state once per applied batch of
    events (writes of one batch are coalesced), so its record count says little about
    progress; the pending messages in the last state of every conversation say how
    many messages were applied (no batch closes in this test before the kill).
    """
    from aiokafka import AIOKafkaConsumer

    async def go() -> int:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=10,
        )
        await consumer.start()
        held: dict[bytes, int] = {}
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=20)
                for records in batch.values():
                    for r in records:
                        state = json.loads(r.value)
                        held[r.key] = len(state["b"].get("p", ()))
                if until(sum(held.values())):
                    break
        finally:
            await consumer.stop()
        return sum(held.values())

    return asyncio.run(go())


def test_sigkill_mid_fetched_batch_applies_every_event_exactly_once(
    tansu: Any, prefix: str, workers: Callable[..., WorkerProc]
) -> None:
    app_id = f"{prefix}notifier"
    ensure(tansu.bootstrap, prefix, app_id)
    first = workers("first", sets=(INACTIVITY,))
    first.wait_ready()
    ts = now_ms()
    sent: list[str] = []
    records: list[tuple[str, bytes, bytes]] = []
    for i in range(EVENTS):
        cid = f"c{i % CONVERSATIONS}"
        mid = f"m{i}"
        sent.append(mid)
        value = {**message(cid, mid, "ann"), "ts": ts}
        records.append((t.MESSAGES, cid.encode(), codec.encode("MessageEvent", value)))
    publish_fast(tansu.bootstrap, prefix, records)

    # Kill once some, not all, messages are applied (the worker takes the backlog in
    # fetches of up to thousands of events).
    changelog = f"{app_id}-conversation-batches-changelog"
    applied = applied_per_changelog(
        tansu.bootstrap, changelog, lambda n: n >= EVENTS // 10, timeout=60
    )
    first.kill()
    assert EVENTS // 10 <= applied < EVENTS, f"killed after {applied} of {EVENTS}"
    after_kill = applied_per_changelog(tansu.bootstrap, changelog, lambda n: False, timeout=3)
    assert after_kill < EVENTS, "the first worker applied everything before the kill"
    # One record per conversation per applied batch, not one per message joining
    # (before: at least one record per message applied).
    written = changelog_records(tansu.bootstrap, changelog)
    assert written < after_kill, (written, after_kill)

    second = workers("second", sets=(INACTIVITY,))
    second.wait_ready(timeout=60)

    def all_flushed(values: list[dict[str, Any]]) -> bool:
        return len({m for f in values for m in f["message_ids"]}) >= EVENTS

    flushes = consume(tansu.bootstrap, prefix, FLUSHES, until=all_flushed, timeout=90)
    time.sleep(4.0)  # a repeated Flush would come within the scheduler's next ticks
    flushes = consume(
        tansu.bootstrap, prefix, FLUSHES, until=lambda v: len(v) > CONVERSATIONS, timeout=5
    )
    in_flushes = Counter(m for f in flushes for m in f["message_ids"])
    lost = set(sent) - set(in_flushes)
    twice = {m: n for m, n in in_flushes.items() if n > 1}
    assert not lost, f"{len(lost)} messages in no flush, e.g. {sorted(lost)[:5]}"
    assert not twice, f"{len(twice)} messages in more than one flush, e.g. {list(twice)[:5]}"
    ids = Counter(f["flush_id"] for f in flushes)
    assert all(n == 1 for n in ids.values()), "a Flush was written twice"
    assert len(flushes) == CONVERSATIONS  # one batch per conversation, closed once
