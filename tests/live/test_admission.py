"""The door on a real broker: re-keyed events, bounded event times, refused ids (issue 8)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.partitioner import murmur2

from processors.topics import DECISIONS, FLUSHES

from .conftest import WorkerProc, consume, ensure, produce
from .scenario import conversation, message, presence, role, typing, user

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

SETS = ("inactivity_seconds=1", "typing_ttl_seconds=2")
YEAR_3000_MS = 32_503_680_000_000
PARTITIONS = 4  # tests/live/conftest.py creates 4 conversation partitions


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def partition_of(key: str) -> int:
    # aiokafka's default partitioner, the one the platform's producer uses here
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


def test_keys_times_and_ids_at_the_door(
    tansu: Any, prefix: str, workers: Callable[..., WorkerProc]
) -> None:
    assert partition_of("cA") != partition_of("cB")  # the foreign key really is elsewhere
    ensure(tansu.bootstrap, prefix, f"{prefix}notifier")
    worker = workers(sets=SETS)
    worker.wait_ready()
    ts = now_ms()
    produce(
        tansu.bootstrap,
        prefix,
        [
            ("chat.roles", "member", {**role("member", email=True), "ts": ts}),
            ("chat.users", "ann", {**user("ann", "Ann", "member"), "ts": ts}),
            ("chat.users", "bob", {**user("bob", "Bob", "member"), "ts": ts}),
            (
                "chat.conversations",
                "cB",
                {**conversation("cB", ("ann", "All"), ("bob", "All")), "ts": ts},
            ),
            # bob's client clock says year 3000 while he views cB; then he really leaves
            (
                "chat.presence",
                "bob",
                {**presence("bob", "b-tab", True, "cB", True), "ts": YEAR_3000_MS},
            ),
        ],
    )
    time.sleep(0.05)
    produce(
        tansu.bootstrap,
        prefix,
        [
            (
                "chat.presence",
                "bob",
                {**presence("bob", "b-tab", False, None, False), "ts": now_ms()},
            )
        ],
    )
    time.sleep(1.0)  # reference data and presence reach the tables first
    bad_id = "m\r\nBcc: evil@example.test"
    produce(
        tansu.bootstrap,
        prefix,
        [
            ("chat.messages", "cB", {**message("cB", "m1", "ann", "one"), "ts": now_ms()}),
            # a year-3000 typist would hold the batch to max_batch (300 s) if believed
            ("chat.typing", "cB", {**typing("cB", "bob", True), "ts": YEAR_3000_MS}),
            ("chat.messages", "cA", {**message("cB", "m2", "ann", "two"), "ts": now_ms()}),
            ("chat.messages", None, {**message("cB", "m3", "ann", "three"), "ts": now_ms()}),
            ("chat.messages", "cB", {**message("cB", "m4", "ann", "four"), "ts": now_ms()}),
            ("chat.messages", "cB", {**message("cB", bad_id, "ann", "forged"), "ts": now_ms()}),
        ],
    )

    flushes = consume(tansu.bootstrap, prefix, FLUSHES, until=lambda v: len(v) >= 1, timeout=20)
    assert flushes, f"no flush:\n{worker.log()[-3000:]}"
    time.sleep(2.0)  # a second, split-off flush would come within inactivity + TTL
    flushes = consume(tansu.bootstrap, prefix, FLUSHES, until=lambda v: False, timeout=2)
    # one flush holding all four (re-keyed ones reach it later, so the order varies)
    assert [(f["conversation_id"], sorted(f["message_ids"]), f["cause"]) for f in flushes] == [
        ("cB", ["m1", "m2", "m3", "m4"], "inactivity")
    ]
    flush = flushes[0]
    # bob's bounded typing stopped within the TTL: the batch did not wait for max_batch
    assert flush["closed_at"] - flush["opened_at"] < 10_000

    decisions = consume(
        tansu.bootstrap,
        prefix,
        DECISIONS,
        until=lambda v: any(d["recipient_id"] == "bob" for d in v),
        timeout=20,
    )
    bob = {d["channel"]: d for d in decisions if d["recipient_id"] == "bob"}
    assert bob["email"]["outcome"] == "send", bob
    assert bob["email"]["presence"] == "OFFLINE"  # not VIEWING for good

    dead = consume(
        tansu.bootstrap, prefix, "notify.dead-letter", until=lambda v: len(v) >= 1, timeout=10
    )
    assert len(dead) == 1, [d["error"] for d in dead]
    assert dead[0]["stage"] == "admit" and dead[0]["key"] == b"cB"
    assert dead[0]["error"] == "message_id contains control character U+000D at position 1"
