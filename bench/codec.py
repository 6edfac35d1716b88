"""Codec microbenchmark: records/s through ``processors.codec`` on one core.

For MessageEvent and TypingEvent (the two hottest topics) and for Flush (the largest
record the project writes), times encode and decode on the Avro single-object path and
the JSON path, over a few thousand distinct realistic values so caches see real variety.
Then ``decode_json_value`` (one value from its JSON bytes, as ``decode`` reads JSON) on
the events bench.replay generates (its lines' values as raw JSON bytes), in microseconds
per record.
Run: ``python -m bench codec``.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import msgspec

from bench.replay import generate
from processors import codec, topics

N_VALUES = 2_000
SEED = 11
MIN_SECONDS = 0.5


class _Wrapper(msgspec.Struct):
    topic: str
    value: msgspec.Raw


def message(rnd: random.Random, i: int) -> dict[str, Any]:
    words = ["ok", "see", "you", "at", "the", "meeting", "tomorrow", "thanks", "deploy", "done"]
    return {
        "message_id": f"msg-{i:08d}",
        "conversation_id": f"conv-{rnd.randrange(100_000):06d}",
        "sender_id": f"user-{rnd.randrange(50_000):05d}",
        "type": "UserMessage",
        "text": " ".join(rnd.choices(words, k=rnd.randint(3, 25))),
        "mentions": [f"user-{rnd.randrange(50_000):05d}" for _ in range(rnd.choice((0, 0, 1)))],
        "origin": "web",
        "ts": 1_700_000_000_000 + i * 137,
    }


def typing(rnd: random.Random, i: int) -> dict[str, Any]:
    return {
        "conversation_id": f"conv-{rnd.randrange(100_000):06d}",
        "user_id": f"user-{rnd.randrange(50_000):05d}",
        "typing": rnd.random() < 0.8,
        "ts": 1_700_000_000_000 + i * 53,
    }


def flush(rnd: random.Random, i: int) -> dict[str, Any]:
    messages = [message(rnd, i * 10 + k) for k in range(rnd.randint(1, 6))]
    return {
        "flush_id": f"{messages[0]['conversation_id']}:{messages[0]['message_id']}",
        "conversation_id": messages[0]["conversation_id"],
        "message_ids": [m["message_id"] for m in messages],
        "messages": messages,
        "opened_at": messages[0]["ts"] - 4_000,
        "closed_at": messages[-1]["ts"] + 10_000,
        "cause": "inactivity",
    }


def rate(fn: Callable[[Any], Any], items: list[Any]) -> float:
    """Best-of-three items/s of ``fn`` over ``items``, repeated to at least MIN_SECONDS."""
    best = 0.0
    for _ in range(3):
        gc.collect()
        done = 0
        start = time.perf_counter()
        while True:
            for item in items:
                fn(item)
            done += len(items)
            elapsed = time.perf_counter() - start
            if elapsed >= MIN_SECONDS:
                break
        best = max(best, done / elapsed)
    return best


def main() -> None:
    rnd = random.Random(SEED)
    makers = {"MessageEvent": message, "TypingEvent": typing, "Flush": flush}
    print(f"{'record':<14}{'path':<6}{'encode/s':>12}{'decode/s':>12}{'bytes':>8}")
    for record, make in makers.items():
        values = [make(rnd, i) for i in range(N_VALUES)]
        for path, encoder in (("avro", codec.encode), ("json", codec.encode_json)):
            blobs = [encoder(record, v) for v in values]
            enc = rate(partial(encoder, record), values)
            dec = rate(partial(codec.decode, record), blobs)
            size = sum(map(len, blobs)) / len(blobs)
            print(f"{record:<14}{path:<6}{enc:>12,.0f}{dec:>12,.0f}{size:>8.0f}")
    raws: dict[str, list[tuple[str, bytes]]] = {}
    for line in generate(20_000):
        wrapper = msgspec.json.decode(line, type=_Wrapper)
        record = topics.TOPICS[wrapper.topic].record or ""
        raws.setdefault(record, []).append((record, bytes(wrapper.value)))
    for record in ("TypingEvent", "PresenceEvent", "MessageEvent"):
        per_s = rate(lambda item: codec.decode_json_value(*item), raws[record])
        print(f"decode_json_value {record:<14}{1e6 / per_s:>6.2f} us/record")


if __name__ == "__main__":
    main()
