"""Admission at the door (processors/core/admission.py): every rule, table-driven."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.core.admission import (
    MAX_EVENT_TIME_MS,
    MAX_FUTURE_SKEW_MS,
    MAX_ID_CHARS,
    Admit,
    Reject,
    Rekey,
    admit,
)
from tests.core.builders import conversation, msg, participant, presence, typing, user

T = 1_764_000_000_000
MIN = 60_000


def role(name: str, ts: int = T) -> dict[str, Any]:
    return {"name": name, "email": True, "sms": False, "push": False, "browser": False, "ts": ts}


def settings(ts: int = T) -> dict[str, Any]:
    return {"inactivity_seconds": 10, "ts": ts}


GOOD: list[tuple[str, str, dict[str, Any]]] = [
    ("chat.messages", "c1", msg("m1", T, mentions=["bob"])),
    ("chat.typing", "c1", typing("ann", T)),
    ("chat.presence", "ann", presence("ann", T, selected="c1")),
    ("chat.conversations", "c1", conversation("c1", participant("ann"), ts=T)),
    ("chat.users", "ann", user("ann", ts=T)),
    ("chat.roles", "member", role("member")),
    ("chat.settings", "app", settings()),
]


@pytest.mark.parametrize(("topic", "key", "value"), GOOD)
def test_good_records_are_admitted_unchanged(topic: str, key: str, value: dict[str, Any]) -> None:
    verdict = admit(topic, key, value, record_ts=T, now=T)
    assert verdict == Admit(value)
    assert verdict.value is value


@pytest.mark.parametrize(
    ("topic", "key", "value", "reason"),
    [
        # -- ids: control characters, named by field, never echoed
        ("chat.messages", "c1", msg("m\r\nBcc: x", T), "message_id contains control character U+000D"),
        ("chat.messages", "c\x00", msg("m1", T, conv="c\x00"), "conversation_id contains control character U+0000"),
        ("chat.messages", "c1", msg("m1", T, sender="al\x1bice"), "sender_id contains control character U+001B"),
        ("chat.messages", "c1", msg("m1", T, mentions=["bob", "e\nve"]), "mentions[1] contains control character U+000A"),
        ("chat.typing", "c1", typing("a\tb", T), "user_id contains control character U+0009"),
        ("chat.presence", "ann", presence("ann", T, session="s\x7f"), "session_id contains control character U+007F"),
        ("chat.presence", "ann", presence("ann", T, selected="c\x85"), "selected_conversation_id contains control character U+0085"),
        ("chat.conversations", "c1", conversation("c1", participant("ann"), participant("b\rb"), ts=T), "participants[1].user_id contains control character U+000D"),
        ("chat.users", "ann", {**user("ann", ts=T), "role": "mem\nber"}, "role contains control character U+000A"),
        ("chat.roles", "m\n", role("m\n"), "name contains control character U+000A"),
        # -- ids: length
        ("chat.messages", "c1", msg("m" * (MAX_ID_CHARS + 1), T), f"message_id is {MAX_ID_CHARS + 1} characters long"),
        # -- event time: absolute range
        ("chat.messages", "c1", msg("m1", 0), "ts must be a positive epoch-milliseconds time, got 0"),
        ("chat.typing", "c1", typing("ann", -5), "ts must be a positive epoch-milliseconds time, got -5"),
        ("chat.presence", "ann", presence("ann", MAX_EVENT_TIME_MS), "beyond the year 9999"),
        ("chat.users", "ann", user("ann", ts=10**18), "beyond the year 9999"),
        ("chat.settings", "app", settings(-1), "got -1"),
        # -- snapshot topics: key must match
        ("chat.conversations", "cA", conversation("cB", ts=T), "key 'cA' does not match conversation_id 'cB'"),
        ("chat.conversations", None, conversation("cB", ts=T), "no key: chat.conversations records are keyed by conversation_id 'cB'"),
        ("chat.users", "bob", user("ann", ts=T), "key 'bob' does not match user_id 'ann'"),
        ("chat.roles", "admin", role("member"), "key 'admin' does not match name 'member'"),
        ("chat.settings", "global", settings(), "chat.settings records are keyed 'app', got key 'global'"),
        ("chat.settings", None, settings(), "got key none"),
        ("chat.users", "a\r\nb", user("ann", ts=T), r"key 'a\r\nb' does not match"),  # escaped
        # -- tombstone without a key
        ("chat.users", None, None, "a tombstone (null value) needs a key"),
    ],
)  # fmt: skip
def test_rejections_name_the_rule(
    topic: str, key: str | None, value: dict[str, Any] | None, reason: str
) -> None:
    verdict = admit(topic, key, value, record_ts=T, now=T)
    assert isinstance(verdict, Reject), verdict
    assert reason in verdict.reason
    assert "\r" not in verdict.reason and "\n" not in verdict.reason


@pytest.mark.parametrize(
    ("topic", "key", "value", "to"),
    [
        ("chat.messages", "cA", msg("m1", T, conv="cB"), "cB"),
        ("chat.messages", None, msg("m1", T, conv="cB"), "cB"),
        ("chat.typing", "cA", typing("ann", T, conv="cB"), "cB"),
        ("chat.presence", "bob", presence("ann", T), "ann"),
        ("chat.presence", None, presence("ann", T), "ann"),
    ],
)
def test_event_topics_rekey_to_the_id_in_the_value(
    topic: str, key: str | None, value: dict[str, Any], to: str
) -> None:
    verdict = admit(topic, key, value, record_ts=T, now=T)
    assert isinstance(verdict, Rekey)
    assert verdict.key == to
    # once re-published under that key it is admitted
    assert admit(topic, to, value, record_ts=T, now=T) == Admit(value)


def test_a_rekeyed_record_with_a_bad_id_is_rejected_not_rekeyed() -> None:
    assert isinstance(admit("chat.messages", "cA", msg("m\n", T, conv="cB")), Reject)


def test_tombstones_with_a_key_pass_untouched() -> None:
    assert admit("chat.users", "ann", None, record_ts=T, now=T) == Admit(None)


def test_settings_may_leave_ts_at_its_default() -> None:
    value = settings(0)
    assert admit("chat.settings", "app", value) == Admit(value)


@pytest.mark.parametrize(
    ("ts", "record_ts", "now", "want_ts"),
    [
        # within the skew of the reference: kept
        (T + MAX_FUTURE_SKEW_MS, T, T, T + MAX_FUTURE_SKEW_MS),
        # beyond it: set to the reference
        (T + MAX_FUTURE_SKEW_MS + 1, T, T, T),
        # year 3000 against the worker clock
        (32_503_680_000_000, None, T, T),
        # the reference is the earlier of the Kafka timestamp and the clock
        (T + 30 * MIN, T + 60 * MIN, T, T),
        (T + 30 * MIN, T, T + 60 * MIN, T),
        # a Kafka timestamp of -1 means none
        (T + 30 * MIN, -1, None, T + 30 * MIN),
        # no reference at all (replay of a plain file): only the absolute range applies
        (32_503_680_000_000, None, None, 32_503_680_000_000),
        # the past is not bounded
        (T - 60 * MIN, T, T, T - 60 * MIN),
    ],
)
def test_event_time_is_bounded_against_the_reference(
    ts: int, record_ts: int | None, now: int | None, want_ts: int
) -> None:
    value = presence("ann", ts)
    verdict = admit("chat.presence", "ann", value, record_ts=record_ts, now=now)
    assert isinstance(verdict, Admit) and verdict.value is not None
    assert verdict.value["ts"] == want_ts
    assert verdict.bounded_from == (ts if want_ts != ts else None)
    assert value["ts"] == ts  # the caller's value is not modified


def test_snapshots_are_bounded_too() -> None:
    verdict = admit("chat.users", "ann", user("ann", ts=T + 10**12), now=T)
    assert isinstance(verdict, Admit) and verdict.value is not None
    assert verdict.value["ts"] == T and verdict.bounded_from == T + 10**12


def test_other_topics_pass() -> None:
    value = {"flush_id": "f"}
    assert admit("notify.flushes", None, value) == Admit(value)


@given(st.text(max_size=300), st.integers(min_value=-(10**16), max_value=10**16))
def test_admitted_records_have_clean_ids_and_renderable_times(text: str, ts: int) -> None:
    value = msg(text, ts, conv="c1", mentions=[text])
    verdict = admit("chat.messages", "c1", value, now=T)
    if isinstance(verdict, Admit):
        assert verdict.value is not None
        assert 0 < verdict.value["ts"] <= T + MAX_FUTURE_SKEW_MS
        assert len(text) <= MAX_ID_CHARS
        assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)
    else:
        assert isinstance(verdict, Reject)
