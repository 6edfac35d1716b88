"""``chat-notifier replay`` from the command line, on JSONL files (contract §9)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import processors
from processors.core.ids import delivery_id

SCENARIO = Path(processors.__file__).parent / "demo" / "scenario.jsonl"
T0 = 1_764_000_000_000


def replay(
    tmp_path: Path, *args: str, input_path: Path = SCENARIO
) -> tuple[list[dict[str, Any]], str, int]:
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-P",
            "-m",
            "processors.cli",
            "replay",
            "--input",
            str(input_path),
            "--output",
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return records, proc.stderr, proc.returncode


def test_demo_scenario_follows_the_rules(tmp_path: Path) -> None:
    records, stderr, code = replay(tmp_path)
    assert code == 0, stderr
    flushes = [r["value"] for r in records if r["topic"] == "notify.flushes"]
    assert [(f["message_ids"], f["closed_at"] - T0, f["cause"]) for f in flushes] == [
        (["trip-001", "trip-002"], 22_000, "inactivity"),  # bob stopped typing at 12 s
        (["trip-004", "trip-005"], 46_000, "inactivity"),  # the system message joined nothing
        (["mystery-006"], 70_000, "inactivity"),
    ]
    decisions = [r["value"] for r in records if r["topic"] == "notify.decisions"]
    first = {
        (d["recipient_id"], d["channel"]): d
        for d in decisions
        if d["flush_id"] == flushes[0]["flush_id"]
    }
    assert first[("alice", None)]["reason"] == "OWN_MESSAGES"
    assert first[("carol", None)]["reason"] == "PARTICIPANT_MUTED"
    assert first[("dave", None)]["reason"] == "VIEWING"
    assert first[("frank", None)]["reason"] == "UNKNOWN_ROLE"
    assert "did you mean 'member'" in first[("frank", None)]["detail"]
    assert first[("grace", None)]["reason"] == "NO_ROLE"
    assert first[("erin", "email")]["outcome"] == "send"  # mentioned; Read access is notified
    assert (
        first[("bob", "sms")]["outcome"] == "send"
        and first[("bob", "push")]["reason"] == "CHANNEL_DISABLED"
    )
    second = {
        (d["recipient_id"], d["channel"]): d
        for d in decisions
        if d["flush_id"] == flushes[1]["flush_id"]
    }
    assert second[("alice", "email")]["presence"] == "ONLINE_UNFOCUSED"
    assert second[("dave", "browser")]["presence"] == "ONLINE_ELSEWHERE"
    assert second[("erin", None)]["reason"] == "NOT_MENTIONED"
    (unknown,) = [d for d in decisions if d["conversation_id"] == "mystery"]
    assert unknown["reason"] == "UNKNOWN_CONVERSATION" and unknown["recipient_id"] is None
    assert "flushes" in stderr and "UNKNOWN_ROLE" in stderr  # the summary table


def test_replay_is_deterministic_and_sends_nothing(tmp_path: Path) -> None:
    a, _, _ = replay(tmp_path)
    b, _, _ = replay(tmp_path)
    assert a == b
    assert {r["topic"] for r in a} == {"notify.flushes", "notify.decisions"}


def test_deliveries_flag_adds_channel_records(tmp_path: Path) -> None:
    records, _, _ = replay(tmp_path, "--deliveries")
    emails = [r["value"] for r in records if r["topic"] == "notify.email"]
    assert {e["recipient_id"] for e in emails} == {"bob", "erin", "alice", "dave"}
    assert all(
        e["delivery_id"] == delivery_id(e["flush_id"], e["recipient_id"], "email") for e in emails
    )


def test_set_overrides_the_inactivity_period(tmp_path: Path) -> None:
    records, _, code = replay(tmp_path, "--set", "inactivity_seconds=30")
    assert code == 0
    flushes = [r["value"] for r in records if r["topic"] == "notify.flushes"]
    # 30 s of quiet: the first two bursts merge into one batch
    assert flushes[0]["message_ids"] == ["trip-001", "trip-002", "trip-004", "trip-005"]
    assert flushes[0]["closed_at"] - T0 == 66_000


@pytest.mark.parametrize(
    "bad", ["inactivity=5", "inactivity_seconds=-1", "inactivity_seconds=soon"]
)
def test_bad_overrides_are_clear_errors(tmp_path: Path, bad: str) -> None:
    _, stderr, code = replay(tmp_path, "--set", bad)
    assert code == 2 and "replay:" in stderr


def test_bad_lines_are_reported_with_line_numbers_and_skipped(tmp_path: Path) -> None:
    lines = SCENARIO.read_text().splitlines()
    lines.insert(3, "{not json")
    lines.insert(
        5,
        json.dumps(
            {"topic": "chat.typing", "key": "trip", "value": {"conversation_id": "trip", "ts": 1}}
        ),
    )
    lines.insert(7, json.dumps({"topic": "chat.nope", "key": None, "value": {}}))
    bad_type = {
        "topic": "chat.messages",
        "key": "trip",
        "value": {
            "message_id": "x",
            "conversation_id": "trip",
            "sender_id": "a",
            "type": "Shout",
            "text": "",
            "ts": 1,
        },
    }
    lines.insert(9, json.dumps(bad_type))
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    records, stderr, code = replay(tmp_path, input_path=path)
    assert code == 0
    assert "line 4: not JSON" in stderr
    assert "line 6:" in stderr and "user_id" in stderr
    assert "line 8: topic 'chat.nope'" in stderr
    assert "line 10:" in stderr and "Shout" in stderr
    assert "bad input lines" in stderr and stderr.rstrip().endswith("4")
    # the good lines still replayed as before
    assert len([r for r in records if r["topic"] == "notify.flushes"]) == 3
    _, _, strict_code = replay(tmp_path, "--strict", input_path=path)
    assert strict_code == 1


def test_large_input_shows_progress(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with path.open("w") as f:
        for i in range(12_000):
            value = {
                "message_id": f"m{i}",
                "conversation_id": f"c{i % 50}",
                "sender_id": "u1",
                "type": "UserMessage",
                "text": "x" * 40,
                "mentions": [],
                "origin": "web",
                "ts": T0 + i * 100,
            }
            f.write(
                json.dumps({"topic": "chat.messages", "key": f"c{i % 50}", "value": value}) + "\n"
            )
    records, stderr, code = replay(tmp_path, input_path=path)
    assert code == 0
    assert "replay [" in stderr and "100.0%" in stderr
    flushed = [
        m for r in records if r["topic"] == "notify.flushes" for m in r["value"]["message_ids"]
    ]
    assert sorted(flushed) == sorted(f"m{i}" for i in range(12_000))


def test_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    _, stderr, code = replay(tmp_path, input_path=tmp_path / "nope.jsonl")
    assert code == 3 and "no such input file" in stderr


def _message(mid: str, conv: str, ts: int, sender: str = "ann") -> dict[str, Any]:
    return {
        "message_id": mid,
        "conversation_id": conv,
        "sender_id": sender,
        "type": "UserMessage",
        "text": "hello",
        "mentions": [],
        "origin": "web",
        "ts": ts,
    }


def _write(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def _summary_row(stderr: str, label: str) -> int:
    line = next(line for line in stderr.splitlines() if line.startswith(label))
    return int(line.split()[-1])


def test_admission_rejects_bounds_and_rekeys_like_the_worker(tmp_path: Path) -> None:
    """The same door as the worker: reasons by line, bounded times and re-keys counted."""
    conversation = {
        "conversation_id": "cB",
        "subject": None,
        "participants": [{"user_id": "ann", "access": "ReadWrite", "notify": "All"}],
        "ts": T0,
    }
    year_3000 = 32_503_680_000_000
    items = [
        {"topic": "chat.conversations", "key": "cB", "value": conversation},  # 1
        {"topic": "chat.conversations", "key": "cA", "value": conversation},  # 2 foreign key
        {"topic": "chat.messages", "key": "cB", "value": _message("m1", "cB", T0)},  # 3
        {"topic": "chat.messages", "key": "cA", "value": _message("m2", "cB", T0 + 1000)},  # 4
        {"topic": "chat.messages", "key": None, "value": _message("m3", "cB", T0 + 2000)},  # 5
        {"topic": "chat.messages", "key": "cB", "value": _message("m\r\n4", "cB", T0)},  # 6
        {"topic": "chat.messages", "key": "cB", "value": _message("m5", "cB", 0)},  # 7
        {  # 8: a broken clock, with the Kafka record timestamp to bound it by
            "topic": "chat.messages",
            "key": "cB",
            "timestamp": T0 + 3000,
            "value": _message("m6", "cB", year_3000),
        },
        {"topic": "chat.messages", "key": "cB", "value": _message("m7", "cB", 10**17)},  # 9
    ]
    records, stderr, code = replay(tmp_path, input_path=_write(tmp_path / "in.jsonl", items))
    assert code == 0, stderr
    assert "line 2: key 'cA' does not match conversation_id 'cB'" in stderr
    assert "line 6: message_id contains control character U+000D" in stderr
    assert "line 7: ts must be a positive epoch-milliseconds time, got 0" in stderr
    assert "line 9: ts 100000000000000000 is beyond the year 9999" in stderr
    flushes = [r["value"] for r in records if r["topic"] == "notify.flushes"]
    # one batch: re-keyed and bounded messages join it; closed 10 s after the bounded m6
    assert [(f["message_ids"], f["closed_at"] - T0) for f in flushes] == [
        (["m1", "m2", "m3", "m6"], 13_000)
    ]
    assert _summary_row(stderr, "records re-keyed") == 2
    assert _summary_row(stderr, "event times bounded") == 1
    assert _summary_row(stderr, "bad input lines") == 4


def test_a_conversation_arriving_late_gets_the_flushes_it_gets_alone(tmp_path: Path) -> None:
    """Issue 8 item 6 through the CLI: all of B's events first, then all of A's."""
    b = [{"topic": "chat.messages", "key": "B", "value": _message("b1", "B", T0 + 100_000)}]
    a = [
        {"topic": "chat.messages", "key": "A", "value": _message("a1", "A", T0)},
        {"topic": "chat.messages", "key": "A", "value": _message("a2", "A", T0 + 20_000)},
    ]
    alone, _, _ = replay(tmp_path, input_path=_write(tmp_path / "a.jsonl", a))
    late, stderr, code = replay(tmp_path, input_path=_write(tmp_path / "ba.jsonl", b + a))
    assert code == 0

    def flushes_of(records: list[dict[str, Any]], conv: str) -> list[list[str]]:
        return [
            r["value"]["message_ids"]
            for r in records
            if r["topic"] == "notify.flushes" and r["value"]["conversation_id"] == conv
        ]

    assert flushes_of(late, "A") == flushes_of(alone, "A") == [["a1"], ["a2"]]
    assert _summary_row(stderr, "records out of time order") == 2


def test_tombstones_delete_users_and_conversations(tmp_path: Path) -> None:
    """Issue 8 item 4: a null value on chat.users / chat.conversations deletes the record."""
    member = {"name": "member", "email": True, "sms": False, "push": False, "browser": False}
    bob = {"user_id": "bob", "name": "Bob", "email": "bob@example.test", "role": "member"}
    conv = {
        "conversation_id": "c1",
        "participants": [
            {"user_id": "ann", "access": "ReadWrite", "notify": "All"},
            {"user_id": "bob", "access": "ReadWrite", "notify": "All"},
        ],
    }

    def msg(mid: str, ts: int) -> dict[str, Any]:
        return {
            "message_id": mid,
            "conversation_id": "c1",
            "sender_id": "ann",
            "type": "UserMessage",
            "text": "hi",
            "ts": ts,
        }

    def typing_stop(ts: int) -> dict[str, Any]:
        return {"conversation_id": "c1", "user_id": "ann", "typing": False, "ts": ts}

    lines = [
        {"topic": "chat.roles", "key": "member", "value": {**member, "ts": T0}},
        {"topic": "chat.users", "key": "bob", "value": {**bob, "ts": T0}},
        {"topic": "chat.conversations", "key": "c1", "value": {**conv, "ts": T0}},
        {"topic": "chat.messages", "key": "c1", "value": msg("m1", T0 + 1)},
        # a tombstone carries no time: this event moves the clock past m1's close first
        {"topic": "chat.typing", "key": "c1", "value": typing_stop(T0 + 30_000)},
        {"topic": "chat.users", "key": "bob", "value": None},
        {"topic": "chat.messages", "key": "c1", "value": msg("m2", T0 + 60_000)},
        {"topic": "chat.typing", "key": "c1", "value": typing_stop(T0 + 90_000)},
        {"topic": "chat.conversations", "key": "c1", "value": None},
        {"topic": "chat.messages", "key": "c1", "value": msg("m3", T0 + 120_000)},
        {"topic": "chat.users", "key": None, "value": None},
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    records, stderr, code = replay(tmp_path, "--deliveries", input_path=path)
    assert code == 0, stderr
    bob_decisions = [
        (r["value"]["outcome"], r["value"]["reason"])
        for r in records
        if r["topic"] == "notify.decisions" and r["value"]["recipient_id"] == "bob"
    ]
    assert ("send", None) in bob_decisions[:4]  # email; the other channels are disabled
    assert bob_decisions[4:] == [("skip", "UNKNOWN_USER")]
    last = [r["value"] for r in records if r["topic"] == "notify.decisions"][-1]
    assert (last["recipient_id"], last["reason"]) == (None, "UNKNOWN_CONVERSATION")
    later = "\n".join(json.dumps(r) for r in records if r["value"].get("ts", 0) > T0 + 30_000)
    assert "bob@example.test" not in later
    assert "line 11" in stderr  # the keyless tombstone is a bad line, reported
