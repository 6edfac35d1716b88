"""Replay's output lines are json.dumps' bytes, whichever path writes them (issue 12):
the compiled writer, for hostile strings too."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from processors import codec

# Hostile text: separators and quotes inside strings, escapes, non-ASCII, emoji.
text = st.text(alphabet=st.sampled_from(list(',:", {}[]\\\n\t\x00\x7fé🎉\u2028ab0')), max_size=12)
maybe = st.none() | text


@st.composite
def decisions(draw: Any) -> dict[str, Any]:
    return {
        "decision_id": draw(text),
        "flush_id": draw(text),
        "conversation_id": draw(text),
        "recipient_id": draw(maybe),
        "channel": draw(st.none() | st.sampled_from(["email", "sms", "push", "browser"])),
        "outcome": draw(st.sampled_from(["send", "skip"])),
        "reason": draw(st.none() | st.sampled_from(["VIEWING", "NO_ROLE"])),
        "presence": draw(st.none() | st.sampled_from(["OFFLINE", "VIEWING"])),
        "detail": draw(maybe),
        "delivery_id": draw(maybe),
        "ts": draw(st.integers(min_value=0, max_value=2**63 - 1)),
    }


def expected(topic: str, key: str | None, value: dict[str, Any]) -> str:
    line = json.dumps({"topic": topic, "key": key, "value": value}, ensure_ascii=False)
    return line + "\n"


@given(decisions(), maybe)
def test_decision_lines_are_json_dumps_bytes(value: dict[str, Any], key: str | None) -> None:
    got = codec.json_line("Decision", "notify.decisions", key, value)
    assert got == expected("notify.decisions", key, value).encode()


def test_a_decision_in_another_field_order_is_written_in_schema_order() -> None:
    # As on main: lines follow the schema's field order, whatever the dict's order.
    value = {
        "decision_id": "d-1",
        "flush_id": "f-1",
        "conversation_id": "c",
        "recipient_id": "u",
        "channel": None,
        "outcome": "skip",
        "reason": "NO_ROLE",
        "presence": None,
        "detail": None,
        "delivery_id": None,
        "ts": 5,
    }
    reordered = dict(reversed(list(value.items())))
    got = codec.json_line("Decision", "notify.decisions", "u", reordered)
    assert got == expected("notify.decisions", "u", value).encode()


@given(text, st.lists(text, min_size=1, max_size=3))
def test_flush_lines_are_json_dumps_bytes(conversation: str, texts: list[str]) -> None:
    messages = [
        {
            "message_id": f"m{i}",
            "conversation_id": conversation,
            "sender_id": "u:1",
            "type": "UserMessage",
            "text": t,
            "mentions": ["a,b"],
            "origin": "web",
            "ts": i,
        }
        for i, t in enumerate(texts)
    ]
    value = {
        "flush_id": "f-1",
        "conversation_id": conversation,
        "message_ids": [m["message_id"] for m in messages],
        "messages": messages,
        "opened_at": 0,
        "closed_at": 1,
        "cause": "inactivity",
    }
    got = codec.json_line("Flush", "notify.flushes", conversation, value)
    assert got == expected("notify.flushes", conversation, value).encode()
