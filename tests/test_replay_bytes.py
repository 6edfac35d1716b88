"""Replay's output is byte for byte what it was before the fast path (issue 12).

The fixtures were written by ``chat-notifier replay`` on main before the codec moved to
fastavro and replay to orjson; the generated traffic (hostile text: quotes, backslashes,
tabs, newlines, emoji) is checked by digest, so the fixture stays small.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

import processors
from bench.replay import generate

SCENARIO = Path(processors.__file__).parent / "demo" / "scenario.jsonl"
FIXTURES = Path(__file__).parent / "data" / "replay"
# sha256 of main's `replay --deliveries` output on bench.replay.generate(20_000)
GENERATED_20K_DELIVERIES = "d86c2af46f6c2e6b477c91bbf2340d029a0795ac83e8c8c67108aba19359f109"


def run_replay(tmp_path: Path, source: Path, *args: str) -> bytes:
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "processors.cli", "replay", "--input", str(source)]
        + ["--output", str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return out.read_bytes()


@pytest.mark.parametrize(
    ("args", "fixture"), [((), "demo.out.jsonl"), (("--deliveries",), "demo-deliveries.out.jsonl")]
)
def test_demo_output_is_byte_identical(tmp_path: Path, args: tuple[str, ...], fixture: str) -> None:
    assert run_replay(tmp_path, SCENARIO, *args) == (FIXTURES / fixture).read_bytes()


def test_generated_traffic_output_is_byte_identical(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(generate(20_000)))
    output = run_replay(tmp_path, source, "--deliveries")
    assert output.count(b"\n") == 26_121
    assert hashlib.sha256(output).hexdigest() == GENERATED_20K_DELIVERIES


def test_output_to_stdout_is_the_same_bytes(tmp_path: Path) -> None:
    # Lines are written as UTF-8 bytes (to a binary file, or stdout's buffer).
    proc = subprocess.run(
        [sys.executable, "-m", "processors.cli", "replay", "--input", str(SCENARIO)]
        + ["--output", "-", "--deliveries"],
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (FIXTURES / "demo-deliveries.out.jsonl").read_bytes()
