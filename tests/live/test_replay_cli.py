"""``chat-notifier replay --from-kafka`` gives what ``replay --input`` gives on the same events."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import processors

from .conftest import ensure, produce
from .test_bounds import produce_raw

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

SCENARIO = Path(processors.__file__).parent / "demo" / "scenario.jsonl"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "processors.cli", "replay", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, **(env or {})},
    )


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_replay_from_kafka_matches_replay_from_file(
    tansu: Any, prefix: str, tmp_path: Path
) -> None:
    ensure(tansu.bootstrap, prefix, f"{prefix}x")
    lines = [json.loads(line) for line in SCENARIO.read_text().splitlines()]
    produce(tansu.bootstrap, prefix, [(r["topic"], r["key"], r["value"]) for r in lines])
    produce(tansu.bootstrap, prefix, [("chat.typing", "trip", b"\x00\x00\x00\x00\x07junk")])

    from_file = tmp_path / "file.jsonl"
    assert cli("--input", str(SCENARIO), "--output", str(from_file)).returncode == 0
    from_kafka = tmp_path / "kafka.jsonl"
    env = {"KAFKA_BROKER_URL": tansu.url, "TOPIC_PREFIX": prefix}
    proc = cli("--from-kafka", "--output", str(from_kafka), env=env)
    assert proc.returncode == 0, proc.stderr
    assert read(from_kafka) == read(from_file)
    assert len(read(from_file)) > 20
    # the undecodable record is reported with where it was, and skipped
    assert "chat.typing[" in proc.stderr and "schema id 7" in proc.stderr

    # a time range in event time: from 30 s on only the second burst's messages remain
    late = tmp_path / "late.jsonl"
    proc = cli(
        "--from-kafka",
        "--topics",
        "chat.messages",
        "--start",
        "2025-11-24T16:00:30Z",
        "--output",
        str(late),
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    flushes = [r["value"]["message_ids"] for r in read(late) if r["topic"] == "notify.flushes"]
    assert flushes == [["trip-004", "trip-005"], ["mystery-006"]]


def test_from_kafka_without_a_broker_url_is_a_clear_error(tmp_path: Path) -> None:
    proc = cli("--from-kafka", "--output", str(tmp_path / "x.jsonl"), env={"KAFKA_BROKER_URL": ""})
    assert proc.returncode == 2 and "KAFKA_BROKER_URL" in proc.stderr
    proc = cli("--from-kafka", "--start", "yesterday", "--output", str(tmp_path / "x.jsonl"))
    assert proc.returncode == 2 and "ISO-8601" in proc.stderr


def test_explain_reads_decisions_and_outcomes_from_kafka(
    tansu: Any, prefix: str, tmp_path: Path
) -> None:
    ensure(tansu.bootstrap, prefix, f"{prefix}x")
    out = tmp_path / "out.jsonl"
    assert cli("--input", str(SCENARIO), "--output", str(out)).returncode == 0
    decisions = [r for r in read(out) if r["topic"] == "notify.decisions"]
    sent = next(
        r["value"]
        for r in decisions
        if r["value"]["recipient_id"] == "bob" and r["value"]["channel"] == "sms"
    )
    outcome = {
        "delivery_id": sent["delivery_id"],
        "flush_id": sent["flush_id"],
        "recipient_id": "bob",
        "channel": "sms",
        "status": "sent",
        "address": None,
        "provider_id": "SM1",
        "attempts": 2,
        "detail": None,
        "ts": sent["ts"] + 5,
    }
    produce(
        tansu.bootstrap,
        prefix,
        [(r["topic"], r["key"] or r["value"]["conversation_id"], r["value"]) for r in decisions]
        + [("notify.outcomes", sent["delivery_id"], outcome)],
    )
    produce_raw(tansu.bootstrap, prefix, [("notify.decisions", b"bob", b"\x00junk")])
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "processors.cli", "explain", "--user", "bob"],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "KAFKA_BROKER_URL": tansu.url, "TOPIC_PREFIX": prefix},
    )
    assert proc.returncode == 0, proc.stderr
    # an undecodable record is named, not passed over in silence
    assert re.search(r"explain: skipped notify\.decisions\[\d+\] offset \d+: ", proc.stderr)
    assert "Traceback" not in proc.stderr
    assert "sms: sent -> sent" in proc.stdout
    assert "email: sent" in proc.stdout and "[OWN_MESSAGES]" in proc.stdout
