"""Flush and delivery ids on the real broker (issue 8 item 5).

Before: a producer retry of an old message that arrived after it had left the
de-duplication window joined a new batch as its first message, so the new batch got the
old flush's id (``conversation:first message``); the senders treated its deliveries as
already sent and the new message was never notified.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from processors import topics as t
from processors.core.batching import RECENT_IDS
from processors.core.ids import flush_id

from .conftest import WorkerProc, consume, produce
from .scenario import conversation, message, role, user
from .test_config import SendersProc, senders  # noqa: F401 - the fixture

pytestmark = pytest.mark.broker


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_a_retried_old_message_does_not_reuse_the_old_flush_id_and_the_batch_is_sent(
    tansu: Any,
    prefix: str,
    workers: Callable[..., WorkerProc],
    senders: Callable[[], SendersProc],  # noqa: F811
) -> None:
    bs = tansu.bootstrap
    ts = now_ms()
    produce(
        bs,
        prefix,
        [
            ("chat.roles", "member", {**role("member", email=True), "ts": ts}),
            ("chat.users", "ann", {**user("ann", "Ann", "member"), "ts": ts}),
            ("chat.users", "bob", {**user("bob", "Bob", "member"), "ts": ts}),
            (
                "chat.conversations",
                "c1",
                {**conversation("c1", ("ann", "All"), ("bob", "All")), "ts": ts},
            ),
        ],
    )
    worker = workers(sets=("inactivity_seconds=1",))
    mailer = senders()
    worker.wait_ready()
    mailer.wait_for("Ready")
    time.sleep(1.0)  # the config reader and the user agent have the reference data

    def flushes_holding(mid: str) -> Callable[[list[dict[str, Any]]], bool]:
        return lambda values: any(mid in f["message_ids"] for f in values)

    # 1. m0 alone, then a burst that pushes m0 out of the de-duplication window
    produce(
        bs,
        prefix,
        [("chat.messages", "c1", {**message("c1", "m0", "ann", "first"), "ts": now_ms()})],
    )
    consume(bs, prefix, t.FLUSHES, until=flushes_holding("m0"), timeout=30)
    burst = [f"b{i:02d}" for i in range(RECENT_IDS + 8)]
    produce(
        bs,
        prefix,
        [("chat.messages", "c1", {**message("c1", mid, "ann"), "ts": now_ms()}) for mid in burst],
    )
    consume(bs, prefix, t.FLUSHES, until=flushes_holding(burst[-1]), timeout=30)

    # 2. a producer retry of m0 (its old event time) plus a new message
    old = {**message("c1", "m0", "ann", "first"), "ts": ts}
    fresh = {**message("c1", "n1", "ann", "the new one"), "ts": now_ms()}
    produce(bs, prefix, [("chat.messages", "c1", old), ("chat.messages", "c1", fresh)])
    flushes = consume(bs, prefix, t.FLUSHES, until=flushes_holding("n1"), timeout=30)

    first = next(f for f in flushes if f["message_ids"] == ["m0"])
    latest = next(f for f in flushes if "n1" in f["message_ids"])
    assert latest["message_ids"] == ["m0", "n1"]
    assert latest["flush_id"] == flush_id("c1", ["m0", "n1"]) != first["flush_id"]

    # bob is told about n1: the senders did not take the new delivery for a sent one
    def bob_sent_for(fid: str) -> Callable[[list[dict[str, Any]]], bool]:
        return lambda values: any(
            o["flush_id"] == fid and o["recipient_id"] == "bob" and o["status"] == "sent"
            for o in values
        )

    outcomes = consume(bs, prefix, t.OUTCOMES, until=bob_sent_for(latest["flush_id"]), timeout=40)
    assert bob_sent_for(latest["flush_id"])(outcomes), outcomes
    assert bob_sent_for(first["flush_id"])(outcomes)
    delivery_ids = [o["delivery_id"] for o in outcomes if o["status"] == "sent"]
    assert len(delivery_ids) == len(set(delivery_ids)), "a delivery sent twice"
    emails = [p.read_text() for p in mailer.outbox.rglob("*.eml")]
    assert any("the new one" in e for e in emails), [e[:300] for e in emails]
