"""Hypothesis properties of batching and replay (issue 2, item 5)."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.core.batching import ConversationBatch
from processors.core.engine import Engine
from processors.core.settings import CoreSettings
from tests.core.builders import S, msg, typing

USERS = ("ann", "ben", "cat")
CFG = CoreSettings(inactivity_ms=3 * S, typing_ttl_ms=4 * S, max_batch_ms=20 * S)
OVERRIDES = {"inactivity_seconds": 3, "typing_ttl_seconds": 4, "max_batch_seconds": 20}

step = st.tuples(
    st.integers(min_value=0, max_value=6 * S),  # time since the previous event
    st.sampled_from(["msg", "sys", "type_on", "type_off", "dup"]),
    st.sampled_from(USERS),
)


def build(conv: str, steps: list[tuple[int, str, str]]) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    ts = 0
    sent: list[str] = []
    for i, (dt, kind, who) in enumerate(steps):
        ts += dt
        if kind == "msg" or (kind == "dup" and not sent):
            sent.append(f"{conv}-m{i}")
            events.append(("chat.messages", msg(sent[-1], ts, sender=who, conv=conv)))
        elif kind == "dup":
            events.append(("chat.messages", msg(sent[-1], ts, sender=who, conv=conv)))
        elif kind == "sys":
            events.append(("chat.messages", msg(f"{conv}-s{i}", ts, sender=None, conv=conv)))
        else:
            events.append(("chat.typing", typing(who, ts, kind == "type_on", conv=conv)))
    return events


def run(events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str | None, dict[str, Any]]]:
    engine = Engine(OVERRIDES)
    return list(engine.feed_all((t, None, v) for t, v in events))


def flushes_of(out: list[tuple[str, str | None, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [v for t, _, v in out if t == "notify.flushes"]


conversation_steps = st.lists(step, min_size=1, max_size=40)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(conversation_steps)
def test_every_user_message_is_flushed_exactly_once(steps: list[tuple[int, str, str]]) -> None:
    events = build("c", steps)
    user_ids = {v["message_id"] for t, v in events if t == "chat.messages" and v["sender_id"]}
    flushed = Counter(mid for f in flushes_of(run(events)) for mid in f["message_ids"])
    assert set(flushed) == user_ids
    assert all(n == 1 for n in flushed.values())


@settings(max_examples=200)
@given(conversation_steps)
def test_no_inactivity_flush_while_someone_types(steps: list[tuple[int, str, str]]) -> None:
    events = build("c", steps)
    for flush in flushes_of(run(events)):
        closed = flush["closed_at"]
        # the cap runs from the batch's first message
        assert closed - min(m["ts"] for m in flush["messages"]) <= CFG.max_batch_ms
        assert flush["opened_at"] <= min(m["ts"] for m in flush["messages"])
        if flush["cause"] != "inactivity":
            continue
        # an independent oracle: each user's last typing-relevant event before the close
        last: dict[str, tuple[int, bool]] = {}
        for topic, v in events:
            if v["ts"] >= closed:
                break
            if topic == "chat.typing":
                last[v["user_id"]] = (v["ts"], v["typing"])
            elif v["sender_id"]:
                last[v["sender_id"]] = (v["ts"], False)
        for ts, on in last.values():
            assert not (on and closed < ts + CFG.typing_ttl_ms)


@settings(max_examples=100)
@given(conversation_steps)
def test_replay_is_deterministic(steps: list[tuple[int, str, str]]) -> None:
    events = build("c", steps)
    assert json.dumps(run(events)) == json.dumps(run(events))


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(conversation_steps, min_size=2, max_size=4), st.randoms(use_true_random=False))
def test_interleaving_conversations_changes_no_flush(
    per_conversation: list[list[tuple[int, str, str]]], rnd: random.Random
) -> None:
    streams = [build(f"c{i}", steps) for i, steps in enumerate(per_conversation)]
    alone = {i: flushes_of(run(s)) for i, s in enumerate(streams)}
    # merge in event-time order with random tie-breaks between conversations
    tagged = [
        (v["ts"], rnd.random(), i, j) for i, s in enumerate(streams) for j, (_, v) in enumerate(s)
    ]
    tagged.sort()
    # keep each conversation's own order (ts ties inside a conversation stay in input order)
    cursors = [0] * len(streams)
    merged = []
    for _, _, i, _ in tagged:
        merged.append(streams[i][cursors[i]])
        cursors[i] += 1
    together = flushes_of(run(merged))
    for i in alone:
        mine = [f for f in together if f["conversation_id"] == f"c{i}"]
        assert mine == alone[i]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            conversation_steps,
            st.integers(min_value=0, max_value=300 * S),  # when the conversation starts
            st.integers(min_value=0, max_value=2),  # which block of the input it is in
        ),
        min_size=2,
        max_size=4,
    ),
    st.randoms(use_true_random=False),
)
def test_late_conversations_change_no_flush(
    per_conversation: list[tuple[list[tuple[int, str, str]], int, int]], rnd: random.Random
) -> None:
    """Whole conversations arriving late, out of time order, get the flushes they get alone.

    The input is made of blocks; each block is its conversations merged in time order,
    and the blocks are concatenated in a random order, so a block of early events can
    come after a block of much later ones (issue 8 item 6: all of B, then all of A).
    """
    streams = []
    for i, (steps, start, _) in enumerate(per_conversation):
        streams.append([(t, {**v, "ts": v["ts"] + start}) for t, v in build(f"c{i}", steps)])
    alone = {i: flushes_of(run(s)) for i, s in enumerate(streams)}
    blocks: dict[int, list[int]] = {}
    for i, (_, _, block) in enumerate(per_conversation):
        blocks.setdefault(block, []).append(i)
    order = list(blocks)
    rnd.shuffle(order)
    merged = []
    for block in order:
        tagged = sorted(
            (v["ts"], rnd.random(), i, j)
            for i in blocks[block]
            for j, (_, v) in enumerate(streams[i])
        )
        cursors = dict.fromkeys(blocks[block], 0)
        for _, _, i, _ in tagged:
            merged.append(streams[i][cursors[i]])
            cursors[i] += 1
    together = flushes_of(run(merged))
    for i in alone:
        mine = [f for f in together if f["conversation_id"] == f"c{i}"]
        assert mine == alone[i]


MANY = [f"user-{k:06d}" for k in range(4000)]


def drive(events: list[tuple[str, dict[str, Any]]], one_step: bool) -> list[Any]:
    """One conversation through a ConversationBatch on event time, as the live worker
    does (flush_before, commit_close, add_message) or as replay does (add_message_now);
    after every event: the flushes so far, the state, and the deadline."""
    batch = ConversationBatch("c")
    seen: list[Any] = []
    for topic, value in events:
        deadline = batch.deadline(CFG)
        if deadline is not None and deadline <= value["ts"]:
            seen.append(batch.close(CFG))
        if topic == "chat.typing":
            batch.apply_typing(value, CFG)
        elif one_step:
            full, joined = batch.add_message_now(value, CFG)
            seen += [full, joined]
        else:
            full = batch.flush_before(value, CFG)
            if full is not None:
                batch.commit_close(full, CFG)
            seen += [full, batch.add_message(value, CFG)]
        deadline = batch.deadline(CFG)
        # what the state alone gives (nothing remembered beside it)
        assert deadline == ConversationBatch.from_dict(batch.to_dict()).deadline(CFG)
        seen += [batch.to_dict(), deadline]
    return seen


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(conversation_steps, st.sets(st.integers(min_value=0, max_value=39)))
def test_one_step_add_is_the_live_workers_two_steps(
    steps: list[tuple[int, str, str]], small: set[int]
) -> None:
    # Messages of ~56 KB (all but the chosen steps) fill a batch in five: some close by size.
    events = [
        (t, {**v, "mentions": MANY} if i not in small and t == "chat.messages" else v)
        for i, (t, v) in enumerate(build("c", steps))
    ]
    assert drive(events, one_step=True) == drive(events, one_step=False)
