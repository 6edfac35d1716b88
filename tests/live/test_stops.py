"""Whatever ends ``chat-notifier run``, nothing it started survives it.

``run`` prints the pid of the broker, the worker and the senders; the tests also take
every descendant of ``run`` from /proc before ending it, then check that none is alive
(a zombie waiting for its reaper counts as gone) and that the broker's port is free.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.broker,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl"),
]

ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def port_free(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


@pytest.mark.parametrize(
    ("sig", "within"),
    [(signal.SIGHUP, 20.0), (signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)],
    ids=["hangup", "term", "kill-9"],
)
def test_nothing_run_started_survives(sig: int, within: float, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BROKER_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "processors.cli", "run", "--no-demo"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    out = ""
    pids: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while "decisions as they happen" not in out and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out += line
        assert "decisions as they happen" in out, out
        port = int(re.search(r"127\.0\.0\.1:(\d+) \(pid (\d+)\)", out).group(1))  # type: ignore[union-attr]
        printed = {int(p) for p in re.findall(r"\(pid (\d+)\)", out)}
        assert len(printed) == 6, out  # broker, worker, senders, reply, inbound-smtp, dashboard
        time.sleep(3)  # worker and senders up and connected
        pids = printed | descendants(proc.pid)
        assert all(alive(p) for p in printed)

        proc.send_signal(sig)
        proc.wait(timeout=within + 15)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.1)
        survivors = {p: Path(f"/proc/{p}/cmdline").read_bytes() for p in pids if alive(p)}
        assert not survivors, survivors
        assert port_free(port)
        if sig != signal.SIGKILL:
            assert proc.returncode == 0
    finally:
        for pid in pids | {proc.pid}:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(5)
