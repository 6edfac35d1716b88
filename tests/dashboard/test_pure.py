"""The dashboard's pure parts: bounded activity memory, chart escaping, access rules."""

from __future__ import annotations

from typing import Any

import pytest

from processors import topics as t
from processors.dashboard import chart, feed
from processors.dashboard.server import Filters, _safe_next, decision_words, is_loopback

HOUR = feed.HOUR_MS


def decision(n: int, *, outcome: str = "skip", reason: str | None = "CHANNEL_DISABLED",
             channel: str | None = "sms", ts: int = 10 * HOUR, flush: str = "f-1") -> dict[str, Any]:  # fmt: skip
    return {
        "decision_id": f"d-{n}",
        "flush_id": flush,
        "conversation_id": "c1",
        "recipient_id": "ann",
        "channel": channel,
        "outcome": outcome,
        "reason": None if outcome == "send" else reason,
        "presence": "OFFLINE",
        "detail": None,
        "delivery_id": f"d-{n}" if outcome == "send" else None,
        "ts": ts,
    }


def test_a_redelivered_decision_is_counted_once() -> None:
    activity = feed.Activity()
    assert activity.add(t.DECISIONS, decision(1)) is True
    assert activity.add(t.DECISIONS, decision(1)) is False  # at-least-once: same id again
    assert activity.add(t.DECISIONS, decision(2, outcome="send", channel="email")) is True
    (_, counts), *_ = activity.hourly(10 * HOUR + 5, 1)
    assert counts == {("skip", "CHANNEL_DISABLED"): 1, ("send", "email"): 1}
    assert len(activity.batches["f-1"].decisions) == 2


def test_memory_is_bounded_by_the_constants_not_the_traffic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(feed, "MAX_FLUSHES", 3)
    monkeypatch.setattr(feed, "MAX_SEEN_IDS", 5)
    activity = feed.Activity()
    for n in range(20):
        activity.add(t.DECISIONS, decision(n, flush=f"f-{n}", ts=n * HOUR))
    assert list(activity.batches) == ["f-17", "f-18", "f-19"]
    assert len(activity._seen) == 5
    assert min(activity.hours) > 19 - 2 * feed.HISTORY_HOURS
    assert len(activity.decisions) == 20 <= feed.MAX_DECISIONS


def test_a_slow_subscriber_is_dropped_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feed, "SUBSCRIBER_QUEUE", 2)
    activity = feed.Activity()
    with activity.subscribe() as queue:
        for n in range(3):
            activity.publish(decision(n))
        assert queue not in activity.subscribers
        held = [queue.get_nowait() for _ in range(2)]
        assert held == [decision(1), {}]  # the end-of-stream mark always gets in


def test_chart_labels_are_escaped() -> None:
    svg = chart.skips_by_reason({"<script>x</script>": 3, "VIEWING": 1})
    assert "<script>" not in svg and "&lt;script&gt;x&lt;/script&gt;" in svg
    bars = chart.sends_per_hour([(0, feed.Counter({("send", "email"): 4}))])
    assert 'fill="#0072B2"' in bars and "<title>email: 4</title>" in bars


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("127.5.5.5", True),
     ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("example.org", False)],
)  # fmt: skip
def test_only_loopback_addresses_may_start_without_a_token(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("target", "safe"),
    [("/roles", "/roles"), ("/activity?user=a", "/activity?user=a"), ("//evil.test/", "/"),
     ("https://evil.test/", "/"), ("/\\evil.test", "/"), ("", "/"), (None, "/")],
)  # fmt: skip
def test_after_sign_in_only_local_paths(target: str | None, safe: str) -> None:
    assert _safe_next(target) == safe


def test_filters_and_words() -> None:
    d = decision(1)
    assert Filters(user="ann", channel="sms", reason="CHANNEL_DISABLED").match(d)
    assert not Filters(channel="email").match(d)
    assert not Filters(outcome="send").match(d)
    assert decision_words(d) == "sms: not notified: their role has this channel turned off"
    assert decision_words(decision(2, outcome="send", channel="push")) == "sent on push"
