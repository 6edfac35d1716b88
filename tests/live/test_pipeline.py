"""The worker on a real broker: same results as replay; bad records dead-lettered."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from processors.core.engine import Engine
from processors.core.ids import flush_id
from processors.topics import DECISIONS, FLUSHES

from .conftest import WorkerProc, consume, ensure, produce
from .scenario import activity, message, reference_data, user

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

SETS = ("inactivity_seconds=1", "typing_ttl_seconds=2")
ENGINE_SETS = {"inactivity_seconds": 1, "typing_ttl_seconds": 2}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def flush_view(f: dict[str, Any]) -> tuple[Any, ...]:
    return (f["flush_id"], tuple(f["message_ids"]), f["opened_at"], f["closed_at"], f["cause"])


def decision_view(d: dict[str, Any]) -> tuple[Any, ...]:
    return (d["decision_id"], d["outcome"], d["reason"], d["presence"], d["delivery_id"])


def test_live_matches_replay(tansu: Any, prefix: str, workers: Callable[..., WorkerProc]) -> None:
    """A scenario published in real time gives the flushes and decisions of replay."""
    app_id = f"{prefix}notifier"
    ensure(tansu.bootstrap, prefix, app_id)
    worker = workers(sets=SETS)
    worker.wait_ready()
    published: list[tuple[str, str, dict[str, Any]]] = []
    start = now_ms()
    for topic, key, value in reference_data():
        published.append((topic, key, {**value, "ts": start}))
    produce(tansu.bootstrap, prefix, published)
    time.sleep(1.0)  # reference data reaches the tables before activity starts
    for delay, topic, key, value in activity():
        time.sleep(delay)
        record = (topic, key, {**value, "ts": now_ms()})
        produce(tansu.bootstrap, prefix, [record])
        published.append(record)

    engine = Engine(ENGINE_SETS)
    expected = [out for out in engine.feed_all(published)]
    want_flushes = sorted(flush_view(v) for topic, _, v in expected if topic == FLUSHES)
    want_decisions = sorted(decision_view(v) for topic, _, v in expected if topic == DECISIONS)
    assert len(want_flushes) >= 6 and len(want_decisions) >= 10  # the scenario is not trivial

    flushes = consume(
        tansu.bootstrap, prefix, FLUSHES, until=lambda v: len(v) >= len(want_flushes), timeout=20
    )
    decisions = consume(
        tansu.bootstrap,
        prefix,
        DECISIONS,
        until=lambda v: len(v) >= len(want_decisions),
        timeout=20,
    )
    assert sorted(flush_view(f) for f in flushes) == want_flushes
    assert sorted(decision_view(d) for d in decisions) == want_decisions


BAD_RECORDS: list[tuple[str, bytes, str]] = [
    # (topic, value, what is wrong)
    ("chat.messages", b"\x00\x01garbage", "undecodable"),
    ("chat.messages", b'{"message_id": "m9"}', "JSON failing the schema"),
    (
        "chat.messages",
        b'{"message_id":"m9","conversation_id":"c9","sender_id":"ann","type":"Shout",'
        b'"text":"x","mentions":[],"origin":"web","ts":1}',
        "unknown enum value",
    ),
    ("chat.typing", b"\xc3\x01nonsense", "bad single-object"),
    (
        "chat.typing",
        b'{"conversation_id": "c9", "user_id": "ann", "typing": "yes", "ts": 1}',
        "type",
    ),
    ("chat.presence", b"not json at all", "undecodable"),
    ("chat.presence", b'{"user_id": "bob"}', "missing fields"),
    ("chat.conversations", b"\x00\x00\x00\x00\x07xx", "unknown Confluent schema id"),
    (
        "chat.conversations",
        b'{"conversation_id":"c9","subject":null,"participants":[{"user_id":"ann",'
        b'"access":"Admin","notify":"All"}],"ts":1}',
        "unknown enum value",
    ),
    ("chat.users", b"[1, 2, 3]", "not an object"),
    ("chat.roles", b'{"name": "member", "email": "maybe"}', "type"),
    ("chat.settings", b'{"inactivity_seconds": "soon"}', "type"),
    ("chat.settings", b'{"inactivity_seconds": -5, "ts": 1}', "negative period"),
]


def test_bad_records_go_to_dead_letter(
    tansu: Any, prefix: str, workers: Callable[..., WorkerProc]
) -> None:
    """Every input topic: bad records land on notify.dead-letter; good ones still work."""
    app_id = f"{prefix}notifier"
    ensure(tansu.bootstrap, prefix, app_id)
    worker = workers(sets=SETS)
    worker.wait_ready()
    produce(tansu.bootstrap, prefix, [(topic, "k", value) for topic, value, _ in BAD_RECORDS])
    ts = now_ms()
    good = [(topic, key, {**value, "ts": ts}) for topic, key, value in reference_data()]
    good.append(("chat.users", "eve", {**user("eve", "Eve", "member"), "ts": ts}))
    produce(tansu.bootstrap, prefix, good)
    time.sleep(1.0)
    produce(
        tansu.bootstrap,
        prefix,
        [("chat.messages", "c1", {**message("c1", "g1", "bob", "still alive?"), "ts": now_ms()})],
    )
    dead = consume(
        tansu.bootstrap, prefix, "notify.dead-letter", until=lambda v: len(v) >= len(BAD_RECORDS)
    )
    assert len(dead) == len(BAD_RECORDS), [d["error"] for d in dead]
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for d in dead:
        by_topic.setdefault(d["source_topic"], []).append(d)
    for topic, value, what in BAD_RECORDS:
        matches = [d for d in by_topic.get(topic, []) if d["value"] == value]
        assert matches, f"{what} on {topic} not dead-lettered"
        d = matches[0]
        assert d["error"] and d["stage"] in ("decode", "admit", "process")
        assert d["key"] == b"k" and d["partition"] is not None and d["offset"] is not None

    decisions = consume(
        tansu.bootstrap,
        prefix,
        DECISIONS,
        until=lambda v: any(d["recipient_id"] == "ann" for d in v),
        timeout=20,
    )
    ann = {d["channel"]: d for d in decisions if d["recipient_id"] == "ann"}
    assert ann["email"]["outcome"] == "send"
    assert ann["email"]["flush_id"] == flush_id("c1", ["g1"])
