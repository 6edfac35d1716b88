"""contract §4 batching rules through the public API (Engine on event time, and the batch)."""

from __future__ import annotations

from typing import Any

import pytest

from processors import codec
from processors.core.batching import (
    MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    MAX_TEXT_CHARS,
    RECENT_IDS,
    TRUNCATION_MARK,
    ConversationBatch,
    MessageTooLarge,
    message_bytes,
)
from processors.core.engine import Engine
from processors.core.ids import flush_id
from processors.core.settings import CoreSettings
from tests.core.builders import S, msg, typing

M, T = "chat.messages", "chat.typing"
CFG = CoreSettings()  # inactivity 10 s, typing ttl 10 s, max batch 300 s


def flushes(
    events: list[tuple[str, dict[str, Any]]], **overrides: Any
) -> list[tuple[list[str], int, str, int]]:
    """(message ids, closed_at, cause, opened_at) of every flush, in order."""
    engine = Engine(overrides)
    out = []
    for topic, value in events:
        out += engine.feed(topic, None, value)
    out += engine.finish()
    return [
        (v["message_ids"], v["closed_at"], v["cause"], v["opened_at"])
        for t, _, v in out
        if t == "notify.flushes"
    ]


CASES = {
    "single message closes after inactivity": (
        [(M, msg("m1", 0))],
        [(["m1"], 10 * S, "inactivity", 0)],
    ),
    "messages within inactivity group together": (
        [(M, msg("m1", 0)), (M, msg("m2", 9 * S, sender="bob"))],
        [(["m1", "m2"], 19 * S, "inactivity", 0)],
    ),
    "a gap longer than inactivity makes two flushes": (
        [(M, msg("m1", 0)), (M, msg("m2", 11 * S))],
        [(["m1"], 10 * S, "inactivity", 0), (["m2"], 21 * S, "inactivity", 11 * S)],
    ),
    "tie at the deadline: an event at exactly the deadline comes after the close": (
        [(M, msg("m1", 0)), (M, msg("m2", 10 * S))],
        [(["m1"], 10 * S, "inactivity", 0), (["m2"], 20 * S, "inactivity", 10 * S)],
    ),
    "typing opens the batch and holds it; stop + inactivity closes it": (
        [
            (T, typing("bob", 1 * S)),
            (M, msg("m1", 2 * S)),
            (T, typing("bob", 5 * S, on=True)),
            (T, typing("bob", 8 * S, on=False)),
        ],
        [(["m1"], 18 * S, "inactivity", 1 * S)],
    ),
    "sending a message ends the sender's typing": (
        [(T, typing("alice", 0)), (M, msg("m1", 3 * S, sender="alice"))],
        [(["m1"], 13 * S, "inactivity", 0)],
    ),
    "an expired typing indicator stops at last refresh + ttl": (
        [(M, msg("m1", 0)), (T, typing("bob", 1 * S))],
        # bob never refreshes: stops at 11 s, closes at 21 s
        [(["m1"], 21 * S, "inactivity", 0)],
    ),
    "refreshes keep extending": (
        [
            (M, msg("m1", 0)),
            (T, typing("bob", 1 * S)),
            (T, typing("bob", 9 * S)),
            (T, typing("bob", 17 * S)),
        ],
        [(["m1"], 37 * S, "inactivity", 0)],
    ),
    "out-of-order older typing event is ignored": (
        [
            (M, msg("m1", 0)),
            (T, typing("bob", 5 * S, on=False)),
            (T, typing("bob", 4 * S, on=True)),
        ],
        [(["m1"], 15 * S, "inactivity", 0)],
    ),
    "system messages never open, extend or join a batch": (
        [(M, msg("m1", 0)), (M, msg("sys", 9 * S, sender=None))],
        [(["m1"], 10 * S, "inactivity", 0)],
    ),
    "system message alone flushes nothing": ([(M, msg("sys", 0, sender=None))], []),
    "typing alone flushes nothing": (
        [(T, typing("bob", 0)), (T, typing("bob", 1 * S, on=False))],
        [],
    ),
    "duplicate message id is ignored": (
        [(M, msg("m1", 0)), (M, msg("m1", 5 * S))],
        [(["m1"], 10 * S, "inactivity", 0)],
    ),
    "duplicate of an already flushed message is ignored": (
        [(M, msg("m1", 0)), (M, msg("m2", 20 * S)), (M, msg("m1", 21 * S))],
        [(["m1"], 10 * S, "inactivity", 0), (["m2"], 30 * S, "inactivity", 20 * S)],
    ),
    "max batch caps an endless typist": (
        [(M, msg("m1", 0))] + [(T, typing("bob", s * S)) for s in range(1, 400, 5)],
        [(["m1"], 300 * S, "max_batch", 0)],
    ),
    "a message older than the last close joins the next batch": (
        [(M, msg("m1", 0)), (M, msg("m2", 15 * S)), (M, msg("late", 5 * S))],
        [(["m1"], 10 * S, "inactivity", 0), (["late", "m2"], 25 * S, "inactivity", 10 * S)],
    ),
    "conversations are independent": (
        [
            (M, msg("a1", 0, conv="a")),
            (M, msg("b1", 5 * S, conv="b")),
            (T, typing("x", 6 * S, conv="a")),
        ],
        [(["a1"], 26 * S, "inactivity", 0), (["b1"], 15 * S, "inactivity", 5 * S)][::-1],
    ),
    # issue 8 item 6: b advanced the clock to 100 s; a's batch was overdue at 20 s
    # but stayed open (nothing fired below the running maximum) and absorbed a2.
    "a late conversation's batch closes at its own deadline": (
        [
            (M, msg("b1", 100 * S, conv="b")),
            (M, msg("a1", 0, conv="a")),
            (M, msg("a2", 20 * S, conv="a")),
        ],
        [
            (["a1"], 10 * S, "inactivity", 0),
            (["a2"], 30 * S, "inactivity", 20 * S),
            (["b1"], 110 * S, "inactivity", 100 * S),
        ],
    ),
    "a late conversation's typing still holds its batch open": (
        [
            (M, msg("b1", 100 * S, conv="b")),
            (M, msg("a1", 0, conv="a")),
            (T, typing("bob", 5 * S, conv="a")),
            (M, msg("a2", 20 * S, sender="bob", conv="a")),
        ],
        [
            (["a1", "a2"], 30 * S, "inactivity", 0),
            (["b1"], 110 * S, "inactivity", 100 * S),
        ],
    ),
    # What still depends on interleaving (engine docstring): a's own events are out of
    # time order around b's later event, which fires a's deadline as the rule says.
    "a deadline fires at another conversation's later event": (
        [
            (M, msg("a1", 0, conv="a")),
            (M, msg("b1", 50 * S, conv="b")),
            (M, msg("a2", 5 * S, conv="a")),
        ],
        [
            (["a1"], 10 * S, "inactivity", 0),
            (["a2"], 20 * S, "inactivity", 10 * S),
            (["b1"], 60 * S, "inactivity", 50 * S),
        ],
    ),
    "an abandoned typing opening does not date a later batch": (
        [(T, typing("bob", 0)), (T, typing("bob", 1 * S, on=False)), (M, msg("m1", 100 * S))],
        [(["m1"], 110 * S, "inactivity", 100 * S)],
    ),
}


@pytest.mark.parametrize("events,expected", CASES.values(), ids=CASES.keys())
def test_batching_rules(events: list[tuple[str, dict[str, Any]]], expected: list[Any]) -> None:
    assert flushes(events) == expected


def test_cap_close_while_typing_opens_next_batch_at_the_close() -> None:
    events = [(M, msg("m1", 0))] + [(T, typing("bob", s * S)) for s in range(1, 310, 5)]
    events.append((M, msg("m2", 310 * S, sender="bob")))
    result = flushes(events)
    assert result[0] == (["m1"], 300 * S, "max_batch", 0)
    assert result[1][0] == ["m2"] and result[1][3] == 300 * S


def test_settings_override_changes_deadlines() -> None:
    assert flushes([(M, msg("m1", 0))], inactivity_seconds=3) == [(["m1"], 3 * S, "inactivity", 0)]
    assert (
        flushes([(M, msg("m1", 0)), (T, typing("b", 1 * S))], typing_ttl_seconds=2)[0][1] == 13 * S
    )


def test_settings_change_mid_stream_reschedules_open_batches() -> None:
    events = [
        (M, msg("m1", 0)),
        ("chat.settings", {"inactivity_seconds": 30, "ts": 5 * S}),
        (M, msg("x", 20 * S, conv="other")),  # moves the clock past the old deadline
    ]
    assert flushes(events)[0] == (["m1"], 30 * S, "inactivity", 0)


def test_flush_id_is_deterministic_and_covers_every_message() -> None:
    engine = Engine()
    out = [
        *engine.feed(M, None, msg("m1", 0)),
        *engine.feed(M, None, msg("m2", 1)),
        *engine.finish(),
    ]
    flush = out[0][2]
    assert flush["flush_id"] == flush_id("c1", ["m1", "m2"])
    assert [m["text"] for m in flush["messages"]] == ["text of m1", "text of m2"]


def test_dedupe_window_is_bounded() -> None:
    batch = ConversationBatch("c1")
    for i in range(RECENT_IDS + 5):
        assert batch.add_message(msg(f"m{i}", i * 20 * S), CFG)
        batch.close(CFG)
    assert len(batch.recent) == RECENT_IDS
    # the newest are remembered, the oldest fell out of the window
    assert not batch.add_message(msg(f"m{RECENT_IDS + 4}", 10_000 * S), CFG)
    assert batch.add_message(msg("m0", 10_001 * S), CFG)


def test_state_round_trips_through_dict_and_stays_small() -> None:
    import json

    batch = ConversationBatch("conversation-0001")
    for i in range(40):
        batch.add_message(msg(f"message-{i:04d}", i * 20 * S, conv="conversation-0001"), CFG)
        batch.close(CFG)
    batch.add_message(msg("open-1", 10_000 * S, conv="conversation-0001"), CFG)
    batch.apply_typing(typing("bob", 10_001 * S, conv="conversation-0001"), CFG)
    clone = ConversationBatch.from_dict(json.loads(json.dumps(batch.to_dict())))
    assert clone == batch
    assert clone.deadline(CFG) == batch.deadline(CFG)
    state = clone.to_dict()
    state.pop("p")  # message bodies are excluded from the budget
    assert len(json.dumps(state)) < 1024


def test_close_without_pending_is_an_error() -> None:
    with pytest.raises(ValueError, match="no pending batch"):
        ConversationBatch("c1").close(CFG)


# -- size bound (issue 8 item 1) ------------------------------------------------------


def test_message_count_bound_closes_with_max_size_first() -> None:
    events = [(M, msg(f"m{i}", i * 10)) for i in range(MAX_BATCH_MESSAGES + 1)]
    got = flushes(events)
    last = MAX_BATCH_MESSAGES * 10
    assert [(len(ids), closed, cause) for ids, closed, cause, _ in got] == [
        (MAX_BATCH_MESSAGES, last, "max_size"),
        (1, last + 10 * S, "inactivity"),
    ]
    assert got[1][0] == [f"m{MAX_BATCH_MESSAGES}"] and got[1][3] == last


def test_payload_bound_keeps_every_message_once_and_each_flush_small() -> None:
    body = "x" * 1000
    events = [(M, msg(f"m{i}", i, text=body)) for i in range(1500)]
    engine = Engine()
    out = [o for topic, value in events for o in engine.feed(topic, None, value)]
    out += engine.finish()
    got = [v for t, _, v in out if t == "notify.flushes"]
    assert [m for f in got for m in f["message_ids"]] == [f"m{i}" for i in range(1500)]
    assert [f["cause"] for f in got] == ["max_size"] * (len(got) - 1) + ["inactivity"]
    for f in got:
        assert sum(message_bytes(m) for m in f["messages"]) <= MAX_BATCH_BYTES
        assert len(codec.encode("Flush", f)) < 600 * 1024


def test_long_text_is_truncated_visibly_when_it_joins() -> None:
    batch = ConversationBatch("c1")
    long = "é" * (MAX_TEXT_CHARS * 3)
    assert batch.add_message(msg("m1", 0, text=long), CFG)
    text = batch.pending[0]["text"]
    assert len(text) == MAX_TEXT_CHARS and text.endswith(TRUNCATION_MARK)
    assert text.startswith("é" * 100)


def test_message_no_batch_can_hold_is_refused() -> None:
    huge = msg("m1", 0, mentions=[f"user-{i:06d}" for i in range(20_000)])
    with pytest.raises(MessageTooLarge, match="at most 65536 bytes"):
        ConversationBatch("c1").flush_before(huge, CFG)
    engine = Engine()
    assert list(engine.feed(M, None, huge)) == [] and engine.finish() == []
    assert [(c, m) for c, m, _ in engine.refused] == [("c1", "m1")]


def test_commit_close_keeps_messages_that_joined_after_the_flush_was_computed() -> None:
    """What a live worker does: compute the Flush, write it, then commit."""
    batch = ConversationBatch("c1")
    batch.add_message(msg("m1", 0), CFG)
    flush = batch.due_flush(CFG)
    assert batch.pending_ids == {"m1"}  # computing changed nothing
    batch.add_message(msg("m2", 12 * S), CFG)  # arrives while the Flush is being written
    batch.commit_close(flush, CFG)
    assert flush["message_ids"] == ["m1"] and batch.pending_ids == {"m2"}
    assert batch.deadline(CFG) == 22 * S
    assert batch.add_message(msg("m1", 1), CFG) is False  # flushed ids stay de-duplicated


def test_holds_flush_only_for_an_uncommitted_close_of_its_own_messages() -> None:
    cfg = CoreSettings()
    batch = ConversationBatch("c1")
    for mid, ts in (("m1", 1 * S), ("m2", 2 * S)):
        batch.add_message(msg(mid, ts), cfg)
    flush = batch.due_flush(cfg)
    assert batch.holds_flush(flush)
    assert not batch.holds_flush({**flush, "flush_id": flush_id("c1", ["m1"])})
    assert not batch.holds_flush({**flush, "message_ids": ["m1", "m9"]})
    batch.commit_close(flush, cfg)
    assert not batch.holds_flush(flush)  # committed: nothing left to close
