"""Replay's output is byte for byte what it was before the fast path (issue 12).

The fixtures were written by ``chat-notifier replay`` on main before the codec moved to
fastavro and replay to orjson; the generated traffic (hostile text: quotes, backslashes,
tabs, newlines, emoji) is checked by digest, so the fixture stays small.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import processors
from bench.replay import T0, generate
from processors import replay_split
from processors.core.settings import SettingsError
from processors.replay import read_jsonl

SCENARIO = Path(processors.__file__).parent / "demo" / "scenario.jsonl"
FIXTURES = Path(__file__).parent / "data" / "replay"
# sha256 of main's `replay --deliveries` output on bench.replay.generate(20_000)
GENERATED_20K_DELIVERIES = "d86c2af46f6c2e6b477c91bbf2340d029a0795ac83e8c8c67108aba19359f109"


def run_replay(tmp_path: Path, source: Path, *args: str) -> bytes:
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "processors.cli", "replay", "--input", str(source)]
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


@pytest.mark.parametrize("processes", ["1", "2"])
def test_generated_traffic_output_is_byte_identical(tmp_path: Path, processes: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(generate(20_000)))
    output = run_replay(tmp_path, source, "--deliveries", "--processes", processes)
    assert output.count(b"\n") == 26_121
    assert hashlib.sha256(output).hexdigest() == GENERATED_20K_DELIVERIES


def test_output_to_stdout_is_the_same_bytes(tmp_path: Path) -> None:
    # Lines are written as UTF-8 bytes (to a binary file, or stdout's buffer).
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "processors.cli", "replay", "--input", str(SCENARIO)]
        + ["--output", "-", "--deliveries"],
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (FIXTURES / "demo-deliveries.out.jsonl").read_bytes()


@pytest.mark.parametrize("args", [(), ("--deliveries",)])
def test_two_processes_write_what_one_writes(tmp_path: Path, args: tuple[str, ...]) -> None:
    # Settings that move every deadline, tombstones and re-keyed events mid-stream: the
    # deciding process must see them exactly where the batching one did.
    lines = generate(6_000)
    middle = len(lines) - 3_000
    active = next(orjson.loads(x)["key"] for x in lines[middle:] if b"chat.messages" in x)
    settings = {"inactivity_seconds": 3, "max_batch_seconds": 20, "ts": T0 + 40_000}
    extra = [
        orjson.dumps({"topic": "chat.settings", "key": "app", "value": settings}) + b"\n",
        orjson.dumps({"topic": "chat.users", "key": "user-00007", "value": None}) + b"\n",
        orjson.dumps({"topic": "chat.conversations", "key": active, "value": None}) + b"\n",
        orjson.dumps({"topic": "chat.roles", "key": "member", "value": None}) + b"\n",
    ]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(lines[:middle] + extra + lines[middle:]))
    one = run_replay(tmp_path, source, *args, "--processes", "1")
    two = run_replay(tmp_path, source, *args, "--processes", "2")
    assert one == two
    assert b'"reason": "UNKNOWN_CONVERSATION"' in one  # the tombstones took effect
    assert b'"reason": "UNKNOWN_ROLE"' in one


@pytest.mark.parametrize("processes", ["1", "2"])
def test_an_output_that_fills_up_is_one_line_and_exit_6(tmp_path: Path, processes: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(generate(5_000)))
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "processors.cli", "replay", "--input", str(source)]
        + ["--output", "/dev/full", "--processes", processes],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 6
    # On a line of its own, after the progress bar if one was drawn (the bar is redrawn
    # on one line with carriage returns; a run that stops midway ends that line first).
    assert (
        proc.stderr.rstrip("\n").split("\n")[-1]
        == "replay: cannot write --output /dev/full: No space left on device"
    )


def test_a_failing_input_stops_the_deciding_process_too() -> None:
    # The batching process's input fails midway (e.g. --from-kafka without a broker):
    # the error comes out at once and the second process is gone, not waiting for input.
    def records() -> Iterator[tuple[str, str | None, dict[str, Any] | None]]:
        yield from read_jsonl(generate(200), [])
        raise SettingsError("the input went away")

    class Sink:
        def add(self, outputs: Any) -> None:
            pass

        def finish(self) -> dict[str, Any]:
            return {}

    before = set(multiprocessing.active_children())
    started = time.monotonic()
    with pytest.raises(SettingsError, match="the input went away"):
        replay_split.run_split(records(), {}, False, Sink, lambda: None)
    assert time.monotonic() - started < 30
    assert set(multiprocessing.active_children()) == before
