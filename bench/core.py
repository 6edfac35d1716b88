"""Core benchmark: synthetic chat traffic through the pure engine on one core.

100k conversations with Zipf-skewed activity; each active moment is a typing burst
(start, refreshes, stop) followed by a message, with presence churn from 50k users
across several sessions. Prints events/s through ``Engine.feed`` and the serialised
state per open conversation (excluding message bodies, as the issue asks).
"""

from __future__ import annotations

import gc
import json
import random
import time
from typing import Any

from processors.core.engine import Engine
from processors.replay import tune_gc

CONVERSATIONS = 100_000
USERS = 50_000
EVENTS = 1_000_000
SEED = 7


def traffic(n_events: int = EVENTS, seed: int = SEED) -> list[tuple[str, str, dict[str, Any]]]:
    """Bursty conversations: a burst is a few turns of composing (a typing start and
    refreshes every ~2 s) and a message, by alternating participants; presence
    heartbeats and tab switches from across the user base in between. About one event
    in eleven is a message."""
    rnd = random.Random(seed)
    weights = [1.0 / (i + 1) ** 0.8 for i in range(CONVERSATIONS)]  # skewed activity
    conv_ids = [f"conv-{i:06d}" for i in range(CONVERSATIONS)]
    events: list[tuple[str, str, dict[str, Any]]] = []
    ts = 1_700_000_000_000
    seq = 0
    while len(events) < n_events:
        idx = rnd.choices(range(CONVERSATIONS), weights=weights)[0]
        conv = conv_ids[idx]
        members = [f"user-{(idx * 7 + k) % USERS:05d}" for k in range(3)]
        t = ts
        for _turn in range(1 + int(rnd.expovariate(1 / 4))):  # ~5 messages per burst
            sender = rnd.choice(members)
            # composing takes 5-15 s and clients refresh the indicator every ~2 s
            for _ in range(rnd.randint(3, 7)):
                t += rnd.randint(1500, 2500)
                events.append(
                    (
                        "chat.typing",
                        conv,
                        {"conversation_id": conv, "user_id": sender, "typing": True, "ts": t},
                    )
                )
            t += rnd.randint(200, 3000)
            seq += 1
            events.append(
                (
                    "chat.messages",
                    conv,
                    {
                        "message_id": f"msg-{seq:08d}",
                        "conversation_id": conv,
                        "sender_id": sender,
                        "type": "UserMessage",
                        "text": "hello there, see you at five?",
                        "mentions": [],
                        "origin": "web",
                        "ts": t,
                    },
                )
            )
            for _ in range(rnd.randint(2, 6)):  # presence heartbeats and tab switches
                user = f"user-{rnd.randrange(USERS):05d}"
                events.append(
                    (
                        "chat.presence",
                        user,
                        {
                            "user_id": user,
                            "session_id": f"s{rnd.randrange(3)}",
                            "online": rnd.random() < 0.8,
                            "selected_conversation_id": conv if rnd.random() < 0.3 else None,
                            "focused": rnd.random() < 0.5,
                            "ts": t,
                        },
                    )
                )
        ts += rnd.randint(1, 20)  # bursts of many conversations overlap
    events.sort(key=lambda e: e[2]["ts"])
    return events


def setup_records() -> list[tuple[str, str, dict[str, Any]]]:
    records: list[tuple[str, str, dict[str, Any]]] = [
        (
            "chat.roles",
            "member",
            {
                "name": "member",
                "email": True,
                "sms": False,
                "push": True,
                "browser": False,
                "ts": 0,
            },
        )
    ]
    for u in range(USERS):
        uid = f"user-{u:05d}"
        records.append(
            (
                "chat.users",
                uid,
                {
                    "user_id": uid,
                    "name": f"User {u}",
                    "email": f"{uid}@example.org",
                    "phone": None,
                    "role": "member",
                    "locale": "en",
                    "push_tokens": [f"tok-{u}"],
                    "browser_subscriptions": [],
                    "ts": 0,
                },
            )
        )
    for i in range(CONVERSATIONS):
        conv = f"conv-{i:06d}"
        parts = [
            {
                "user_id": f"user-{(i * 7 + k) % USERS:05d}",
                "access": "ReadWrite",
                "notify": "All",
                "name": None,
            }
            for k in range(3)
        ]
        records.append(
            (
                "chat.conversations",
                conv,
                {"conversation_id": conv, "subject": None, "participants": parts, "ts": 0},
            )
        )
    return records


def run_engine(
    events: list[tuple[str, str, dict[str, Any]]], *, deliveries: bool
) -> tuple[Engine, float, int]:
    engine = Engine(deliveries=deliveries)
    for topic, key, value in setup_records():
        engine.feed(topic, key, value)
    gc.collect()
    gc.freeze()
    tune_gc()  # what chat-notifier replay does
    outputs = 0
    feed = engine.feed
    start = time.perf_counter()
    for topic, key, value in events:
        outputs += len(feed(topic, key, value))
    elapsed = time.perf_counter() - start
    gc.unfreeze()
    return engine, elapsed, outputs


def main() -> None:
    events = traffic()
    kinds = {
        t: sum(1 for e in events if e[0] == t)
        for t in ("chat.messages", "chat.typing", "chat.presence")
    }
    print(
        f"events: {len(events):,} ({', '.join(f'{k.split(chr(46))[1]} {v:,}' for k, v in kinds.items())})"
    )
    engine = None
    for label, deliveries in (
        ("decisions only (replay)", False),
        ("decisions + deliveries (live work)", True),
    ):
        engine, elapsed, outputs = run_engine(events, deliveries=deliveries)
        print(
            f"core, {label}: {len(events) / elapsed:,.0f} events/s on one core "
            f"({elapsed:.2f} s, {outputs:,} output records)"
        )
    assert engine is not None
    # the cost of each kind of event on its own (each with a fresh engine)
    for kind in ("chat.presence", "chat.typing", "chat.messages"):
        only = [e for e in events if e[0] == kind]
        _, elapsed, _ = run_engine(only, deliveries=True)
        print(f"  {kind:<14} alone: {elapsed / len(only) * 1e6:6.2f} us/event")
    # state size: a snapshot of every conversation with an open batch (bodies excluded)
    sizes = []
    for batch in engine.batches.values():
        state = batch.to_dict()
        if "p" in state or "t" in state:
            state.pop("p", None)
            sizes.append(len(json.dumps(state, separators=(",", ":"))))
    idle = [
        len(json.dumps(b.to_dict(), separators=(",", ":")))
        for b in engine.batches.values()
        if not b.pending
    ]
    if sizes:
        sizes.sort()
        print(
            f"state per open conversation (JSON, no bodies): mean {sum(sizes) / len(sizes):.0f} B, "
            f"p99 {sizes[int(len(sizes) * 0.99)]} B, max {sizes[-1]} B over {len(sizes):,} open"
        )
    print(
        f"state per idle conversation (dedupe window): mean {sum(idle) / len(idle):.0f} B, max {max(idle)} B"
    )


if __name__ == "__main__":
    main()
