"""Replay benchmark: ``chat-notifier replay`` through the real CLI, beside its I/O floor.

Input: deterministic mixed chat traffic as JSON Lines (35% messages, 35% typing, 30%
presence over ~15k conversations, after the users/roles/conversations they refer to).
Measured in one run, on the same file:

* replay: ``chat-notifier replay --input F --output O`` as a subprocess, process start
  included (events/s counts the input events), as a user runs it (two processes on a
  machine with two cores) and with ``--processes 1``, from the package a wheel installs
  (built here first, the core compiled by mypyc: setup.py) and, beside it, from the
  source tree (what ``pip install -e`` runs: all Python);
* floor: a subprocess that only parses every input line and writes the same output
  records (read back from replay's output) with orjson, the fastest JSON library the
  project depends on; nothing else;
* malformed: the same file with 1% of its event lines replaced by bad ones (bad JSON,
  wrong types, unknown values, a missing ts, binary junk), replayed the same way;
* whatif: ``chat-notifier whatif`` on the same file (two engines: the recorded settings
  and a longer inactivity period), by default and with ``--processes 1``, once each.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import orjson

EVENTS = 300_000
CONVERSATIONS = 15_000
USERS = 20_000
SEED = 11
T0 = 1_764_000_000_000
TEXTS = (
    "see you at five?",
    "Are we still on for 3pm? @bob — café ☕",
    'she said "ok", then left: 10:30',
    "path C:\\temp\\x, done",
    "tab\there, line\nbreak",
    "emoji 🎉 and ünïcödé",
)


def _line(topic: str, key: str | None, value: Any) -> bytes:
    return orjson.dumps({"topic": topic, "key": key, "value": value}) + b"\n"


def generate(n_events: int = EVENTS, seed: int = SEED) -> list[bytes]:
    """Setup records, then ``n_events`` events in event-time order (as a topic dump)."""
    rnd = random.Random(seed)
    lines = [
        _line(
            "chat.roles",
            "member",
            {
                "name": "member",
                "email": True,
                "sms": False,
                "push": True,
                "browser": True,
                "ts": T0 - 1,
            },
        )
    ]
    for u in range(USERS):
        uid = f"user-{u:05d}"
        user = {
            "user_id": uid,
            "name": f"User {u}",
            "email": f"{uid}@example.org",
            "phone": None,
            "role": "member" if u % 10 else None,
            "locale": "en",
            "push_tokens": [f"tok-{u}"] if u % 3 == 0 else [],
            "browser_subscriptions": [],
            "ts": T0 - 1,
        }
        lines.append(_line("chat.users", uid, user))
    members: list[list[str]] = []
    for c in range(CONVERSATIONS):
        conv = f"conv-{c:05d}"
        people = [f"user-{(c * 7 + k) % USERS:05d}" for k in range(3)]
        members.append(people)
        parts = [
            {"user_id": p, "access": "ReadWrite", "notify": "All" if k else "MentionsOnly"}
            for k, p in enumerate(people)
        ]
        value = {"conversation_id": conv, "subject": None, "participants": parts, "ts": T0 - 1}
        lines.append(_line("chat.conversations", conv, value))
    ts = T0
    seq = 0
    recent = [0] * 64  # conversations are bursty: most events go to one that is active
    for _ in range(n_events):
        ts += rnd.randint(0, 40)
        if rnd.random() < 0.85:
            c = rnd.choice(recent)
        else:
            c = rnd.randrange(CONVERSATIONS)
            recent[rnd.randrange(len(recent))] = c
        conv = f"conv-{c:05d}"
        user = rnd.choice(members[c])
        roll = rnd.random()
        if roll < 0.35:
            seq += 1
            value: dict[str, Any] = {
                "message_id": f"msg-{seq:08d}",
                "conversation_id": conv,
                "sender_id": user,
                "type": "UserMessage",
                "text": TEXTS[seq % len(TEXTS)],
                "mentions": [members[c][0]] if seq % 5 == 0 else [],
                "origin": "web",
                "ts": ts,
            }
            lines.append(_line("chat.messages", conv, value))
        elif roll < 0.70:
            value = {"conversation_id": conv, "user_id": user, "typing": roll < 0.65, "ts": ts}
            lines.append(_line("chat.typing", conv, value))
        else:
            value = {
                "user_id": user,
                "session_id": f"s{rnd.randrange(3)}",
                "online": rnd.random() < 0.8,
                "selected_conversation_id": conv if rnd.random() < 0.3 else None,
                "focused": rnd.random() < 0.5,
                "ts": ts,
            }
            lines.append(_line("chat.presence", user, value))
    return lines


def malformed(lines: list[bytes], share: float = 0.01, seed: int = SEED) -> tuple[list[bytes], int]:
    """The same lines with ``share`` of the event lines replaced by bad ones of every kind."""
    rnd = random.Random(seed)
    bad = [
        b'{"topic": "chat.typing", "key": "c", "value": {"conversation_id": "c"\n',  # bad JSON
        b'{"topic": "chat.typing", "key": "conv-00001", "value": {"conversation_id": '
        b'"conv-00001", "user_id": 7, "typing": true, "ts": 1}}\n',  # wrong type
        b'{"topic": "chat.messages", "key": "conv-00001", "value": {"message_id": "m", '
        b'"conversation_id": "conv-00001", "type": "Chat", "text": "x", "ts": 1}}\n',  # enum
        b'{"topic": "chat.presence", "key": "u", "value": {"user_id": "u", '
        b'"session_id": "s", "online": true, "focused": true}}\n',  # missing ts
        b"\xff\xfe\x80junk\x01\x02\x03 not a record\n",  # binary junk
    ]
    out = list(lines)
    first_event = USERS + CONVERSATIONS + 1
    picks = rnd.sample(range(first_event, len(out)), int((len(out) - first_event) * share))
    for n, index in enumerate(sorted(picks)):
        out[index] = bad[n % len(bad)]
    return out, len(picks)


# The floor's output records are loaded before its clock starts; its time is the timed
# part plus the start of an interpreter that imports orjson (measured on its own).
FLOOR = """
import gc, sys, time, orjson
loads, dumps = orjson.loads, orjson.dumps
with open(sys.argv[2], "rb") as f:
    records = [loads(line) for line in f]
gc.collect(); gc.freeze()
start = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    for line in f:
        loads(line)
with open(sys.argv[3], "wb") as out:
    batch = []
    for r in records:
        batch.append(dumps(r))
        if len(batch) >= 1024:
            out.write(b"\\n".join(batch) + b"\\n"); batch.clear()
    out.write(b"\\n".join(batch) + b"\\n" if batch else b"")
print(time.perf_counter() - start)
"""


ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "processors.cli"]


def copy_checkout(to: Path) -> Path:
    """The checkout's files, copied to ``to``, to build a wheel from: setuptools builds in
    a build/ directory beside the sources, whose stale files could hide one missing from
    package-data (and it would be left in the repository)."""
    ignore = (".git", ".venv", "build", "dist", "*.egg-info", "var", "__pycache__", ".*_cache")
    shutil.copytree(ROOT, to, symlinks=True, ignore=shutil.ignore_patterns(*ignore))
    return to


def installed_package(into: Path) -> dict[str, str]:
    """The package as a wheel installs it, unpacked into ``into``: the environment that
    runs it (``PYTHONPATH`` first, ahead of the editable source tree)."""
    source, dist = copy_checkout(into / "source"), into / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(dist), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("chat_notifier-*.whl")
    site = into / "site"
    zipfile.ZipFile(wheel).extractall(site)
    return {**os.environ, "PYTHONPATH": str(site)}


def compiled(env: dict[str, str] | None) -> bool:
    """Does ``env`` import the core compiled (an extension module, not engine.py)?"""
    probe = "import processors.core.engine as e; print(e.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True, cwd="/"
    )
    return not where.stdout.strip().endswith(".py")


def _timed(
    cmd: list[str], env: dict[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    # run from "/": from the repository, ``python -m`` would import its source tree first
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, cwd="/")
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed, proc


def main() -> None:
    n = int(os.environ.get("BENCH_REPLAY_EVENTS", EVENTS))
    runs = int(os.environ.get("BENCH_REPLAY_RUNS", 3))
    lines = generate(n)
    bad_lines, n_bad = malformed(lines)
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        src, out, floor_out = Path(tmp, "in.jsonl"), Path(tmp, "out.jsonl"), Path(tmp, "f.jsonl")
        bad_src, bad_out = Path(tmp, "bad.jsonl"), Path(tmp, "bad-out.jsonl")
        src_out = Path(tmp, "source-out.jsonl")
        src.write_bytes(b"".join(lines))
        bad_src.write_bytes(b"".join(bad_lines))
        wheel = installed_package(Path(tmp))
        source = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        is_compiled = compiled(wheel)
        # The runs are interleaved (clean, malformed, one process, source tree, floor;
        # again), each figure the best of its runs: a drift of the machine's speed during
        # the bench then touches every figure alike instead of whichever ran last.
        replay = [*CLI, "replay", "--input", str(src), "--output", str(out)]
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "replay": (replay, wheel),
            "malformed": (
                [*CLI, "replay", "--input", str(bad_src), "--output", str(bad_out)],
                wheel,
            ),
            "one": ([*replay, "--processes", "1"], wheel),
            "source": ([*CLI, "replay", "--input", str(src), "--output", str(src_out)], source),
            "floor": ([sys.executable, "-c", FLOOR, str(src), str(out), str(floor_out)], source),
            "start": ([sys.executable, "-c", "import orjson"], source),
        }
        # whatif runs two engines over the same input: timed once each (it is the
        # slowest command here), beside the replays.
        whatif = [*CLI, "whatif", "--input", str(src), "--set", "inactivity_seconds=30"]
        whatif_s = {
            "default": _timed([*whatif, "--json"], wheel)[0],
            "one": _timed([*whatif, "--json", "--processes", "1"], wheel)[0],
        }
        timed: dict[str, list[tuple[float, subprocess.CompletedProcess[str]]]] = {
            name: [] for name in commands
        }
        for _ in range(runs):
            for name, (cmd, env) in commands.items():
                timed[name].append(_timed(cmd, env))
        replay_s, one_s, bad_s, source_s, start_s = (
            min(t for t, _ in timed[name])
            for name in ("replay", "one", "malformed", "source", "start")
        )
        proc = min(timed["malformed"], key=lambda r: r[0])[1]
        outputs = sum(1 for _ in out.open("rb"))
        same = out.read_bytes() == src_out.read_bytes()
        # As the module says: the timed part the floor prints (its output records are
        # loaded before its clock starts), plus the start of an interpreter importing
        # orjson, measured on its own. Timing the whole floor process would count
        # loading replay's output (~2 s here) as I/O the replay must beat.
        floor_s = min(float(p.stdout.strip().splitlines()[-1]) for _, p in timed["floor"]) + start_s
        reported = proc.stderr.count("replay: skipped line ")
        summary = [r for r in proc.stderr.splitlines() if r.startswith("bad input lines")]
    if not same:
        raise SystemExit("the installed package and the source tree wrote different outputs")
    print(
        f"input: {len(lines):,} lines ({n:,} events, {len(lines) - n:,} setup records), "
        f"{sum(map(len, lines)) / 1e6:.0f} MB; "
        f"output: {outputs:,} records"
    )
    built = "core compiled by mypyc" if is_compiled else "NOT compiled: no C compiler?"
    print(
        f"replay (CLI, installed wheel, {built}; process start included): "
        f"{n / replay_s:,.0f} events/s ({replay_s:.2f} s; setup records not counted as events)"
    )
    print(
        f"I/O floor (orjson parse + write, same lines): {floor_s:.2f} s "
        f"(interpreter start {start_s:.2f} s included)"
    )
    print(f"replay / floor: {replay_s / floor_s:.2f}")
    print(
        f"replay from the source tree (pip install -e, all Python): {n / source_s:,.0f} "
        f"events/s ({source_s:.2f} s); installed / source tree: {replay_s / source_s:.2f} "
        "(same output, byte for byte)"
    )
    print(
        f"replay in one process (--processes 1): {n / one_s:,.0f} events/s ({one_s:.2f} s); "
        f"default / one process: {replay_s / one_s:.2f}"
    )
    print(
        f"whatif (two configurations, CLI): {n / whatif_s['default']:,.0f} events/s "
        f"({whatif_s['default']:.2f} s); --processes 1: {n / whatif_s['one']:,.0f} events/s "
        f"({whatif_s['one']:.2f} s); default / one process: "
        f"{whatif_s['default'] / whatif_s['one']:.2f}"
    )
    print(
        f"1% malformed ({n_bad:,} bad lines, {reported} shown, "
        f"{summary[0].split()[-1] if summary else '?'} counted): {bad_s:.2f} s, "
        f"malformed / clean: {bad_s / replay_s:.2f}"
    )


if __name__ == "__main__":
    main()
