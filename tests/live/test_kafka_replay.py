"""Replay straight from Kafka topics gives what replay of the same JSONL gives."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from processors.core.engine import Engine
from processors.live.kafka_replay import ReplayRangeError, read_topics
from processors.settings import load_settings
from processors.topics import INPUT_TOPICS

from .conftest import ensure, produce
from .scenario import message, reference_data, typing

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]


def test_read_topics_feeds_the_engine(tansu: Any, prefix: str) -> None:
    ensure(tansu.bootstrap, prefix, f"{prefix}x")
    base = 1_700_000_000_000
    records: list[tuple[str, str, dict[str, Any]]] = [
        (topic, key, {**value, "ts": base}) for topic, key, value in reference_data()
    ]
    records += [
        ("chat.typing", "c1", {**typing("c1", "ann", True), "ts": base + 1000}),
        ("chat.messages", "c1", {**message("c1", "m1", "ann"), "ts": base + 2000}),
        ("chat.messages", "c2", {**message("c2", "n1", "bob"), "ts": base + 2500}),
        ("chat.messages", "c1", {**message("c1", "m2", "ann"), "ts": base + 60_000}),
    ]
    produce(tansu.bootstrap, prefix, [*records, ("chat.messages", "c1", b"junk")])
    settings = load_settings(kafka_broker_url=tansu.url, topic_prefix=prefix)
    errors: list[tuple[str, int, int, str]] = []
    got = list(read_topics(settings, INPUT_TOPICS, on_error=lambda *e: errors.append(e)))
    assert len(got) == len(records)
    assert [r[2]["ts"] for r in got] == sorted(r[2]["ts"] for r in got)
    assert len(errors) == 1 and errors[0][0] == "chat.messages"

    want = list(Engine().feed_all(sorted(records, key=lambda r: r[2]["ts"])))
    assert list(Engine().feed_all(got)) == want

    # a time range: from base + 30 s only the late message
    late = list(
        read_topics(
            settings, ["chat.messages"], datetime.fromtimestamp((base + 30_000) / 1000, UTC)
        )
    )
    assert [r[2]["message_id"] for r in late] == ["m2"]
    # an offset range: offset 0 only, in every partition
    first = list(read_topics(settings, ["chat.messages"], 0, 1))
    assert 1 <= len(first) <= 4

    with pytest.raises(ReplayRangeError):
        list(read_topics(settings, ["chat.messages"], datetime(2026, 1, 1)))


def test_read_topics_time_end_is_event_time(tansu: Any, prefix: str) -> None:
    ensure(tansu.bootstrap, prefix, f"{prefix}x")
    base = 1_700_000_000_000
    produce(
        tansu.bootstrap,
        prefix,
        [
            ("chat.messages", "c1", {**message("c1", "a", "ann"), "ts": base}),
            ("chat.messages", "c1", {**message("c1", "b", "ann"), "ts": base + 10_000}),
        ],
    )
    settings = load_settings(kafka_broker_url=tansu.url, topic_prefix=prefix)
    end = datetime.fromtimestamp((base + 5_000) / 1000, UTC)
    got = list(read_topics(settings, ["chat.messages"], None, end))
    assert [r[2]["message_id"] for r in got] == ["a"]
