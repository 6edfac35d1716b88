"""The inbound adapters' command line without a broker: one clear line, a non-zero exit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from processors.reply.inbound import EXIT_NO_BROKER

ROOT = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when this returns: nothing listens


@pytest.mark.parametrize(
    "args",
    [
        ["inbound-smtp", "--port", "0"],
        ["inbound-http", "--port", "0"],
        ["inbound-ses", "--queue-url", "http://127.0.0.1:9/queue"],
    ],
    ids=lambda a: a[0],
)
def test_unreachable_broker_is_one_line_and_exit_3(args: list[str]) -> None:
    port = _closed_port()
    env = dict(os.environ, KAFKA_BROKER_URL=f"kafka://127.0.0.1:{port}")
    env["INBOUND__HTTP_SECRET"] = "s3cret-for-the-test"
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "processors.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == EXIT_NO_BROKER == 3
    assert proc.stderr.splitlines() == [
        f"chat-notifier {args[0]}: cannot reach the broker at 127.0.0.1:{port} "
        "(KafkaConnectionError)"
    ]
    assert "listening" not in proc.stdout and "polling" not in proc.stdout
