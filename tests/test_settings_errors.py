"""A bad environment variable, met through the real CLI: one line on stderr naming the
variable and what it must be, exit 2, no traceback, and never the value (it may be a
secret)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECRET = "hunter2-not-a-port"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "processors.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        (
            "CONVERSATION_PARTITIONS",
            "four",
            "CONVERSATION_PARTITIONS: Input should be a valid integer",
        ),
        ("EMAIL__SMTP_PORT", SECRET, "EMAIL__SMTP_PORT: Input should be a valid integer"),
        ("SMS__BACKEND", "pigeon", "SMS__BACKEND: Input should be 'outbox' or 'twilio'"),
        ("SCHEMA_REGISTRY_URL", "ftp://" + SECRET, "must start with http:// or https://"),
    ],
)
@pytest.mark.parametrize("command", ["worker", "senders", "dashboard", "explain", "run"])
def test_a_bad_variable_is_one_line_and_exit_2(
    command: str, variable: str, value: str, said: str
) -> None:
    result = cli({variable: value}, command, *(["--user", "u"] if command == "explain" else []))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"chat-notifier {command}: bad setting: "), result.stderr
    assert said in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_two_bad_variables_are_both_named() -> None:
    result = cli({"USER_PARTITIONS": "x", "CHANNEL_PARTITIONS": "y"}, "worker")
    assert result.returncode == 2
    assert "USER_PARTITIONS" in result.stderr and "CHANNEL_PARTITIONS" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_replay_from_a_kafka_topic_with_a_bad_variable_is_one_line() -> None:
    result = cli(
        {"KAFKA_BROKER_URL": "kafka://127.0.0.1:1", "TOPIC_PREFIX": "p.", "USER_PARTITIONS": "x"},
        "replay",
        "--from-kafka",
        "--output",
        os.devnull,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "chat-notifier replay: bad setting: USER_PARTITIONS: Input should be a valid integer,"
        " unable to parse string as an integer\n"
    )
