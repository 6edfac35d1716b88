"""``chat-notifier explain`` over replay output: the why, in words."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import processors

SCENARIO = Path(processors.__file__).parent / "demo" / "scenario.jsonl"


@pytest.fixture(scope="module")
def decisions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("explain") / "out.jsonl"
    subprocess.run(
        [
            sys.executable,
            "-P",
            "-m",
            "processors.cli",
            "replay",
            "--input",
            str(SCENARIO),
            "--output",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return out


def explain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "processors.cli", "explain", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_explains_a_misspelt_role_with_the_near_match(decisions: Path) -> None:
    proc = explain("--user", "frank", "--input", str(decisions))
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert sum("[UNKNOWN_ROLE]" in line for line in lines) == 2
    assert "did you mean 'member'?" in proc.stdout


def test_explains_sends_and_channel_skips_with_presence(decisions: Path) -> None:
    out = explain("--user", "bob", "--conversation", "trip", "--input", str(decisions)).stdout
    assert "recipient bob, presence ONLINE_ELSEWHERE" in out
    # replay sends nothing: its sends are what would be sent (issue 7 item 8)
    assert "email: would be sent (replay sends nothing)" in out
    assert "sms: would be sent (replay sends nothing)" in out
    assert ": sent" not in out
    assert "push: not notified [CHANNEL_DISABLED]" in out
    assert "[OWN_MESSAGES]" in out


def test_outcomes_in_the_input_show_whether_a_send_went_through(
    decisions: Path, tmp_path: Path
) -> None:
    lines = decisions.read_text().splitlines()
    sent = next(json.loads(line)["value"] for line in lines if '"outcome": "send"' in line)
    outcome = {  # as the senders write it (explain reads records of the contract)
        "delivery_id": sent["delivery_id"],
        "flush_id": sent["flush_id"],
        "recipient_id": sent["recipient_id"],
        "channel": sent["channel"],
        "status": "invalid_address",
        "attempts": 1,
        "detail": "Twilio 21211",
        "ts": sent["ts"] + 1_000,
    }
    path = tmp_path / "with-outcomes.jsonl"
    path.write_text(
        "\n".join([*lines, json.dumps({"topic": "notify.outcomes", "key": None, "value": outcome})])
    )
    out = explain("--user", sent["recipient_id"], "--input", str(path)).stdout
    assert f"{sent['channel']}: sent -> invalid_address (Twilio 21211)" in out


def test_unknown_conversation_and_unknown_user(decisions: Path) -> None:
    out = explain("--conversation", "mystery", "--input", str(decisions)).stdout
    assert "[UNKNOWN_CONVERSATION]" in out and "recipient (none)" in out
    out = explain("--user", "nobody", "--input", str(decisions)).stdout
    assert out.startswith("no decisions for user nobody")


def test_needs_a_user_or_conversation() -> None:
    proc = explain("--input", "x.jsonl")
    assert proc.returncode == 2 and "--user" in proc.stderr


def test_bad_lines_in_the_input_are_skipped_with_why(decisions: Path, tmp_path: Path) -> None:
    lines = decisions.read_bytes().splitlines()
    sent = next(json.loads(line)["value"] for line in lines if b'"outcome": "send"' in line)
    bad = [
        b"[" * 5_000 + b"]" * 5_000,
        b"\xff\xfe not text",
        b'{"topic": "notify.decisions", "key": "x", "value": {"decision_id": "d"}}',
        b'{"topic": "notify.outcomes", "key": "x", "value": []}',
        b'{"topic": "notify.decisions", "key": "x", "value": {"ts": NaN}}',
        b"[1, 2]",
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join([*bad, *lines]) + b"\n")
    proc = explain("--user", sent["recipient_id"], "--input", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "explain: skipped line 1: not JSON: nested deeper than 1024 levels (the most we read)",
        "explain: skipped line 2: not UTF-8: byte 0xff at column 1",
        "explain: skipped line 3: JSON value fails schema Decision: field 'flush_id' missing",
        "explain: skipped line 4: JSON value fails schema Outcome: value must be an object "
        "(Outcome record), got array",
        "explain: skipped line 5: not JSON: NaN is not a JSON number",
        "explain: skipped line 6: expected an object with topic, key and value",
    ]
    # the good lines explain as they do alone
    alone = explain("--user", sent["recipient_id"], "--input", str(decisions))
    assert proc.stdout == alone.stdout


def test_a_directory_as_input_is_one_line(tmp_path: Path) -> None:
    proc = explain("--user", "bob", "--input", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"explain: cannot read input {tmp_path}: Is a directory"
