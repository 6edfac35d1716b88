"""``chat-notifier replay`` on bad files (issue 8 item 9): one clear line, its own exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import processors

SCENARIO = Path(processors.__file__).parent / "demo" / "scenario.jsonl"
CLI = Path(sys.executable).parent / "chat-notifier"  # the installed entry point


def cli(*args: str, cwd: Path | None = None, stdin: bytes | None = None) -> tuple[str, int]:
    proc = subprocess.run(
        [str(CLI), "replay", *args], capture_output=True, cwd=cwd, input=stdin, timeout=120
    )
    return proc.stderr.decode(errors="replace"), proc.returncode


def one_clear_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("replay: ")
    return lines[0]


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_bytes(SCENARIO.read_bytes())
    return path


@pytest.mark.parametrize("how", ["same", "dot-slash", "symlink", "hardlink"])
def test_output_equal_to_input_is_refused_before_anything_is_opened(
    scenario: Path, tmp_path: Path, how: str
) -> None:
    before = scenario.read_bytes()
    if how == "same":
        output = str(scenario)
    elif how == "dot-slash":
        output = "./sub/../in.jsonl"
        (tmp_path / "sub").mkdir()
    elif how == "symlink":
        (tmp_path / "link.jsonl").symlink_to(scenario)
        output = str(tmp_path / "link.jsonl")
    else:
        os.link(scenario, tmp_path / "hard.jsonl")
        output = str(tmp_path / "hard.jsonl")
    stderr, code = cli("--input", "in.jsonl", "--output", output, cwd=tmp_path)
    assert code == 7
    assert "is the input file" in one_clear_line(stderr)
    assert scenario.read_bytes() == before  # not emptied


def test_an_invalid_utf8_line_is_skipped_and_reported(scenario: Path, tmp_path: Path) -> None:
    lines = scenario.read_bytes().splitlines(keepends=True)
    lines.insert(2, b'{"topic": "chat.users", "key": "x\xff\xfe", "value": {}}\n')
    scenario.write_bytes(b"".join(lines))
    out = tmp_path / "out.jsonl"
    stderr, code = cli("--input", str(scenario), "--output", str(out))
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "replay: skipped line 3: not UTF-8: byte 0xff at column 34" in stderr
    flushes = [r for r in map(json.loads, out.read_text().splitlines()) if "flush" in r["topic"]]
    assert len(flushes) == 3  # everything else replayed as usual
    assert cli("--input", str(scenario), "--output", str(out), "--strict")[1] == 1


TYPING = b'{"topic": "chat.typing", "key": "c", "value": {"conversation_id": "c", "user_id": "u", '


@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"[" * 5_000 + b"]" * 5_000, "not JSON: nested deeper than 1024 levels"),
        (b'{"a": ' * 1_500 + b"1" + b"}" * 1_500, "not JSON: nested deeper than 1024 levels"),
        (b"[" * 200_000, "not JSON: nested deeper than 1024 levels"),
        (TYPING + b'"typing": true, "ts": NaN}}', "not JSON: NaN is not a JSON number"),
        (TYPING + b'"typing": true, "ts": -Infinity}}', "not JSON: -Infinity is not a JSON number"),
        (TYPING + b'"typing": true, "ts": 1, "x": "\\ud800"}}', "not JSON: a lone surrogate"),
    ],
)
def test_a_line_that_is_not_json_we_read_is_skipped_with_why(
    scenario: Path, tmp_path: Path, line: bytes, reason: str, processes: str
) -> None:
    lines = scenario.read_bytes().splitlines(keepends=True)
    lines.insert(2, line + b"\n")
    scenario.write_bytes(b"".join(lines))
    out = tmp_path / "out.jsonl"
    stderr, code = cli("--input", str(scenario), "--output", str(out), "--processes", processes)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert f"replay: skipped line 3: {reason}" in stderr
    flushes = [r for r in map(json.loads, out.read_text().splitlines()) if "flush" in r["topic"]]
    assert len(flushes) == 3  # everything else replayed as usual


def test_invalid_utf8_on_stdin_is_skipped_too(tmp_path: Path) -> None:
    data = SCENARIO.read_bytes() + b"\xc3\x28\n"
    stderr, code = cli("--input", "-", "--output", str(tmp_path / "o.jsonl"), stdin=data)
    assert code == 0 and "Traceback" not in stderr
    assert f"line {len(data.splitlines())}: not UTF-8" in stderr


def test_a_byte_order_mark_is_not_a_bad_line(scenario: Path, tmp_path: Path) -> None:
    scenario.write_bytes(b"\xef\xbb\xbf" + scenario.read_bytes())
    stderr, code = cli("--input", str(scenario), "--output", str(tmp_path / "o.jsonl"))
    assert code == 0 and "skipped" not in stderr


def test_a_binary_file_is_one_clear_error(tmp_path: Path) -> None:
    binary = tmp_path / "dump.bin"
    binary.write_bytes(bytes(range(256)) * 64)
    out = tmp_path / "out.jsonl"
    stderr, code = cli("--input", str(binary), "--output", str(out))
    assert code == 5
    assert "is a binary file" in one_clear_line(stderr)
    assert not out.exists()


def test_a_directory_as_input_is_one_clear_error(tmp_path: Path) -> None:
    stderr, code = cli("--input", str(tmp_path), "--output", str(tmp_path / "o.jsonl"))
    assert code == 4
    assert "is a directory" in one_clear_line(stderr)


def test_a_missing_input_is_one_clear_error(tmp_path: Path) -> None:
    stderr, code = cli("--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o"))
    assert code == 3
    assert "no such input file" in one_clear_line(stderr)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_input_is_one_clear_error(scenario: Path, tmp_path: Path) -> None:
    scenario.chmod(0)
    stderr, code = cli("--input", str(scenario), "--output", str(tmp_path / "o.jsonl"))
    assert code == 4
    assert "cannot read input" in one_clear_line(stderr)


@pytest.mark.parametrize("where", ["directory", "under-a-file", "read-only-dir"])
def test_an_unwritable_output_is_one_clear_error(
    scenario: Path, tmp_path: Path, where: str
) -> None:
    if where == "directory":
        output = tmp_path / "outdir"
        output.mkdir()
    elif where == "under-a-file":
        output = scenario / "out.jsonl"  # a path below a regular file
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only directories")
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        output = locked / "out.jsonl"
    stderr, code = cli("--input", str(scenario), "--output", str(output))
    assert code == 6
    line = one_clear_line(stderr)
    assert "--output" in line and str(output) in line


def test_exit_codes_are_documented_in_help() -> None:
    proc = subprocess.run([str(CLI), "replay", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for code, words in [
        (3, "does not exist"),
        (4, "directory"),
        (5, "binary"),
        (6, "output cannot be created"),
        (7, "is the input file"),
    ]:
        assert any(
            line.strip().startswith(f"{code} ") and words in line
            for line in proc.stdout.splitlines()
        ), proc.stdout


def test_out_of_order_input_is_counted_in_the_summary(scenario: Path, tmp_path: Path) -> None:
    lines = scenario.read_text().splitlines()
    late = lines.pop(next(i for i, line in enumerate(lines) if "trip-002" in line))
    lines.append(late)  # trip-002 now comes after later events
    scenario.write_text("\n".join(lines) + "\n")
    stderr, code = cli("--input", str(scenario), "--output", str(tmp_path / "o.jsonl"))
    assert code == 0
    row = next(line for line in stderr.splitlines() if line.startswith("records out of time"))
    assert row.split()[-1] == "1"


def test_bad_config_records_are_skipped_like_live_dead_letters(tmp_path: Path) -> None:
    """A settings record out of bounds and a role keyed apart from its name: the worker
    dead-letters them and keeps the previous values; replay reports and skips them."""
    ts = 1_764_000_000_000
    lines = [
        {"topic": "chat.settings", "key": "app", "value": {"inactivity_seconds": 0, "ts": ts}},
        {
            "topic": "chat.roles",
            "key": "admin",
            "value": {
                "name": "member",
                "email": True,
                "sms": True,
                "push": True,
                "browser": True,
                "ts": ts,
            },
        },
        {
            "topic": "chat.messages",
            "key": "c1",
            "value": {
                "message_id": "m1",
                "conversation_id": "c1",
                "sender_id": "a",
                "type": "UserMessage",
                "text": "hi",
                "ts": ts + 1,
            },
        },
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out.jsonl"
    stderr, code = cli("--input", str(source), "--output", str(out))
    assert code == 0, stderr
    assert "skipped line 1: inactivity_seconds must be more than 0" in stderr
    assert "skipped line 2: key 'admin' does not match name 'member'" in stderr
    (flush,) = [
        json.loads(x)["value"]
        for x in out.read_text().splitlines()
        if json.loads(x)["topic"] == "notify.flushes"
    ]
    # the default 10 s period stayed in force
    assert flush["closed_at"] == ts + 1 + 10_000
