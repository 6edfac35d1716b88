"""``chat-notifier whatif`` through the installed entry point (issue 11 item 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import processors
from tests.core.builders import conversation, msg, participant, role, user

SCENARIO = Path(processors.__file__).parent / "demo" / "scenario.jsonl"
CLI = Path(sys.executable).parent / "chat-notifier"  # the installed entry point
T0 = 1_764_000_000_000  # 2025-11-24 16:00 UTC, an hour boundary
S = 1000
HOUR = 3600 * S

# The generated traffic: in each conversation, alice sends bursts of three messages
# 2 s apart; the gaps between bursts (last message to next first) are 20 s, 60 s, 20 s.
# 10 s of inactivity closes every burst on its own (4 flushes per conversation); 30 s
# merges bursts 1+2 and 3+4 (2 flushes). Each conversation sits in its own hour.
BURST_GAPS_S = (20, 60, 20)
BURST_SPAN_S = 4
CONVERSATIONS = 3
RECIPIENTS = ("bob", "carol", "dave")  # bob and carol are members, dave is staff


def line(topic: str, key: str, value: dict[str, Any]) -> str:
    return json.dumps({"topic": topic, "key": key, "value": value})


def generated(member_role_at_last_conversation: dict[str, Any] | None = None) -> str:
    out = [
        line(
            "chat.settings",
            "app",
            {
                "inactivity_seconds": 10,
                "typing_ttl_seconds": 10,
                "max_batch_seconds": 300,
                "presence_ttl_seconds": 60,
                "ts": T0,
            },
        ),
        line("chat.roles", "member", role("member", email=True, sms=True, ts=T0)),
        line("chat.roles", "staff", role("staff", email=True, sms=True, ts=T0)),
    ]
    for uid, role_name in (("alice", "member"), ("bob", "member"), ("carol", "member")):
        out.append(line("chat.users", uid, user(uid, role_name, phone="+15550100", ts=T0)))
    out.append(line("chat.users", "dave", user("dave", "staff", phone="+15550101", ts=T0)))
    for k in range(CONVERSATIONS):
        conv = f"c{k}"
        people = [participant(u) for u in ("alice", *RECIPIENTS)]
        out.append(line("chat.conversations", conv, conversation(conv, *people, ts=T0)))
        start = T0 + k * HOUR + 60 * S
        if k == CONVERSATIONS - 1 and member_role_at_last_conversation is not None:
            value = {**member_role_at_last_conversation, "ts": start - S}
            out.append(line("chat.roles", "member", value))
        for b in range(len(BURST_GAPS_S) + 1):
            for i in range(3):
                mid = f"{conv}-{b}-{i}"
                out.append(line("chat.messages", conv, msg(mid, start + i * 2 * S, conv=conv)))
            if b < len(BURST_GAPS_S):
                start += (BURST_SPAN_S + BURST_GAPS_S[b]) * S
    return "\n".join(out) + "\n"


def whatif(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[str, str, int]:
    proc = subprocess.run(
        [str(CLI), "whatif", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )
    return proc.stdout, proc.stderr, proc.returncode


def as_json(*args: str) -> dict[str, Any]:
    stdout, stderr, code = whatif(*args, "--json")
    assert code == 0, stderr
    assert "Traceback" not in stderr
    result: dict[str, Any] = json.loads(stdout)
    return result


def pair(metric: dict[str, Any]) -> tuple[Any, Any]:
    return metric["baseline"], metric["candidate"]


@pytest.fixture
def traffic(tmp_path: Path) -> Path:
    path = tmp_path / "traffic.jsonl"
    path.write_text(generated())
    return path


def test_longer_inactivity_on_generated_traffic_gives_known_counts(traffic: Path) -> None:
    result = as_json("--input", str(traffic), "--set", "inactivity_seconds=30")
    assert pair(result["flushes"]) == (12, 6)  # 4 vs 2 flushes in each of 3 conversations
    # every flush notifies bob, carol and dave by email and sms (push/browser off)
    assert pair(result["notifications"]) == (72, 36)
    assert result["notifications"]["change"] == -0.5
    channels = {ch: pair(m) for ch, m in result["per_channel"].items()}
    assert channels == {"email": (36, 18), "sms": (36, 18), "push": (0, 0), "browser": (0, 0)}
    assert result["skips"]["OWN_MESSAGES"] == {"baseline": 12, "candidate": 6, "change": -0.5}
    assert pair(result["skips"]["CHANNEL_DISABLED"]) == (72, 36)
    # alice (the only sender) gets none: 0, 24, 24, 24 per recipient vs 0, 12, 12, 12
    per = result["per_recipient"]
    assert per["recipients"] == 4
    assert pair(per["mean"]) == (18.0, 9.0) and pair(per["p95"]) == (24, 12)
    # first message to close: 4 s burst + 10 s; or 4 + 20 + 4 s + 30 s when merged
    assert pair(result["delay_ms"]["median"]) == (14_000, 58_000)
    assert pair(result["delay_ms"]["p95"]) == (14_000, 58_000)
    hours = [(h["hour_ms"] - T0, h["baseline"], h["candidate"]) for h in result["per_hour"]]
    assert hours == [(k * HOUR, 24, 12) for k in range(CONVERSATIONS)]
    assert result["changes"]["settings"] == {
        "inactivity_seconds": {"baseline": [10.0], "candidate": 30.0}
    }
    assert result["sentence"] == (
        "with 30 s instead of 10 s, this traffic would have sent 50% fewer emails "
        "(18 instead of 36)"
    )
    assert result["input"]["bad_lines"] == 0


def test_text_report_shows_both_runs_and_the_change(traffic: Path) -> None:
    stdout, stderr, code = whatif("--input", str(traffic), "--set", "inactivity_seconds=30")
    assert code == 0 and stderr == ""
    rows = {r.strip().split("  ")[0]: r.split() for r in stdout.splitlines() if r.strip()}
    assert rows["email"][-3:] == ["36", "18", "−50%"]
    assert rows["flushes"][-3:] == ["12", "6", "−50%"]
    assert stdout.rstrip().endswith("would have sent 50% fewer emails (18 instead of 36)")


def test_shorter_inactivity_sends_more(traffic: Path) -> None:
    result = as_json("--input", str(traffic), "--set", "inactivity_seconds=5")
    assert pair(result["flushes"]) == (12, 12)  # bursts are 2 s apart inside
    result = as_json("--input", str(traffic), "--set", "inactivity_seconds=1.5")
    assert pair(result["flushes"]) == (12, 36)  # every message alone
    assert result["notifications"]["candidate"] > result["notifications"]["baseline"]


def test_role_override_applies_on_top_of_each_recorded_role_record(tmp_path: Path) -> None:
    # Before the last conversation, a recorded record turns member email off.
    path = tmp_path / "traffic.jsonl"
    path.write_text(generated(role("member", email=False, sms=True)))
    result = as_json("--input", str(path), "--role", "member:sms=off")
    channels = {ch: pair(m) for ch, m in result["per_channel"].items()}
    # baseline: 8 flushes x 3 emails, then 4 flushes x dave's email; sms 12 x 3.
    # candidate: email as recorded (the override does not touch it); sms only for dave.
    assert channels["email"] == (28, 28)
    assert channels["sms"] == (36, 12)  # 12 flushes x dave: zero sms for members
    assert pair(result["flushes"]) == (12, 12)
    assert result["changes"]["roles"] == {"member": {"sms": False}}
    # ... and an override wins over a later record for its own channel only
    result = as_json("--input", str(path), "--role", "member:email=on")
    channels = {ch: pair(m) for ch, m in result["per_channel"].items()}
    assert channels["email"] == (28, 36) and channels["sms"] == (36, 36)
    assert result["sentence"] == (
        "with email on for member, this traffic would have sent 29% more emails (36 instead of 28)"
    )


def test_demo_scenario(tmp_path: Path) -> None:
    result = as_json("--input", str(SCENARIO), "--set", "inactivity_seconds=30")
    assert pair(result["flushes"]) == (3, 2)  # trip's two bursts merge at 30 s
    # same 7 sends: the merged batch notifies the same people on the same channels
    assert pair(result["notifications"]) == (7, 7)
    channels = {ch: pair(m) for ch, m in result["per_channel"].items()}
    assert channels == {"email": (4, 4), "sms": (1, 1), "push": (1, 1), "browser": (1, 1)}
    assert pair(result["delay_ms"]["median"]) == (13_000, 61_000)
    assert pair(result["skips"]["UNKNOWN_ROLE"]) == (2, 1)  # frank, once per flush
    result = as_json("--input", str(SCENARIO), "--role", "staff:sms=off")
    assert pair(result["per_channel"]["sms"]) == (1, 0)  # bob was the only sms
    assert result["sentence"] == (
        "with SMS off for staff, this traffic would have sent no SMS messages instead of 1"
    )


def test_chart_is_a_png(traffic: Path, tmp_path: Path) -> None:
    chart = tmp_path / "charts" / "whatif.png"
    stdout, stderr, code = whatif(
        "--input", str(traffic), "--set", "inactivity_seconds=30", "--chart", str(chart)
    )
    assert code == 0, stderr
    data = chart.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    if os.environ.get("WHATIF_KEEP_CHART"):  # to look at it: WHATIF_KEEP_CHART=path
        Path(os.environ["WHATIF_KEEP_CHART"]).write_bytes(data)


def test_input_is_read_once_from_stdin(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(CLI), "whatif", "--input", "-", "--json", "--set", "inactivity_seconds=30"],
        input=generated(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["flushes"] == {"baseline": 12, "candidate": 6, "change": -0.5}


def test_bad_lines_are_reported_skipped_and_counted(traffic: Path) -> None:
    lines = traffic.read_text().splitlines()
    lines.insert(2, "{not json")
    traffic.write_text("\n".join(lines) + "\n")
    stdout, stderr, code = whatif("--input", str(traffic), "--json")
    assert code == 0
    assert (
        stderr.strip()
        == "whatif: skipped line 3: not JSON: Expecting property name enclosed in double quotes at column 2"
    )
    assert json.loads(stdout)["input"]["bad_lines"] == 1
    assert whatif("--input", str(traffic), "--strict")[2] == 1


@pytest.mark.parametrize(
    "candidate", [("--set", "inactivity_seconds=30"), ("--role", "member:email=off")]
)
def test_two_processes_compare_exactly_as_one(tmp_path: Path, candidate: tuple[str, str]) -> None:
    # The candidate in a second process, each process reading the file: the same
    # comparison as both engines in step in one process, bad lines reported once.
    from bench.replay import generate, malformed

    source = tmp_path / "traffic.jsonl"
    bad_lines, n_bad = malformed(generate(4_000), share=0.002)
    source.write_bytes(b"".join(bad_lines))
    results = []
    for processes in ("1", "2"):
        stdout, stderr, code = whatif(
            "--input", str(source), "--json", "--processes", processes, *candidate
        )
        assert code == 0, stderr
        assert stderr.count("whatif: skipped line ") == n_bad > 0
        skipped = [r for r in stderr.split("\n") if r.startswith("whatif: skipped")]
        results.append((json.loads(stdout), skipped))  # (not the progress bar's rates)
    assert results[0] == results[1]
    assert results[0][0]["notifications"]["baseline"] > 0


def one_clear_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("whatif: ")
    return lines[0]


@pytest.mark.parametrize(
    "args, code, text",
    [
        (
            ["--role", "membr:sms=off"],
            2,
            "role 'membr' is not in the input; did you mean 'member'?",
        ),
        (["--role", "member:sns=off"], 2, "unknown channel 'sns'; did you mean 'sms'?"),
        (["--role", "member:sms=maybe"], 2, "sms wants on or off, got 'maybe'"),
        (["--role", "member"], 2, "--role wants NAME:CHANNEL=on|off"),
        (["--set", "inactivity=30"], 2, "did you mean 'inactivity_seconds'?"),
        (["--set", "inactivity_seconds=901"], 2, "at most 900"),
        (["--from-kafka"], 2, "give exactly one of --input FILE and --from-kafka"),
    ],
)
def test_bad_arguments_are_one_clear_line(
    traffic: Path, args: list[str], code: int, text: str
) -> None:
    _, stderr, got = whatif("--input", str(traffic), *args)
    assert got == code
    assert text in one_clear_line(stderr)


def test_bad_files_have_replays_exit_codes(traffic: Path, tmp_path: Path) -> None:
    binary = tmp_path / "x.bin"
    binary.write_bytes(b"\x00\x01PK")
    cases = [
        (["--input", str(tmp_path / "missing.jsonl")], 3, "no such input file"),
        (["--input", str(tmp_path)], 4, "is a directory"),
        (["--input", str(binary)], 5, "binary file"),
        (["--input", str(traffic), "--chart", str(tmp_path)], 6, "--chart"),
        (["--input", str(traffic), "--chart", str(traffic)], 7, "is the input file"),
        ([], 2, "give exactly one of"),
    ]
    for args, code, text in cases:
        _, stderr, got = whatif(*args)
        assert (got, text in one_clear_line(stderr)) == (code, True), (args, stderr)
    assert traffic.read_text() == generated()  # --chart did not overwrite the input


def test_from_kafka_without_a_broker_url_is_a_usage_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA")}
    _, stderr, code = whatif("--from-kafka", cwd=tmp_path, env=env)
    assert code == 2
    assert "KAFKA_BROKER_URL" in one_clear_line(stderr)


def test_the_progress_bar_of_a_large_input_is_whatifs(traffic: Path) -> None:
    text = traffic.read_text()
    # padded past the size that draws a bar (a megabyte) with blank lines, which add nothing
    traffic.write_text(text + "\n" * (1 << 20))
    stdout, stderr, code = whatif("--input", str(traffic), "--json")
    assert code == 0, stderr
    assert "whatif [" in stderr and "100.0%" in stderr
    assert "replay [" not in stderr
    assert json.loads(stdout)["flushes"]["baseline"] == 12
