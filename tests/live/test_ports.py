"""Several chat-notifier processes on one host: each command has its own web port.

Defaults: worker WEB_PORT_BASE+0 (6066), ``senders`` +1, ``senders --channel`` email +2,
sms +3, push +4, browser +5. The tests move the base to free ports (``WEB_PORT_BASE``)
so they never meet a developer's running processes; the offsets are the defaults'.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from processors.app import WEB_PORT_OFFSETS, default_web_port
from processors.settings import load_settings

from .conftest import ROOT, TEST_FAUST, ensure

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]


def free_base(count: int = 6) -> int:
    """A base port with ``count`` consecutive ports free on every interface."""
    for _ in range(50):
        base = random.randrange(20000, 40000)
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("0.0.0.0", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port range")


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-P", "-m", "processors.cli", *args, "--store", "memory://"]
    for f in TEST_FAUST:
        cmd += ["--faust", f]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def serves_http(port: int) -> bool:
    """Faust's web server answers on ``port`` (any HTTP status: senders have no /health)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def test_default_ports_differ_per_command() -> None:
    settings = load_settings(web_port=None, web_port_base=6066)
    ports = {cmd: default_web_port(settings, cmd) for cmd in WEB_PORT_OFFSETS}
    assert ports == {
        "worker": 6066,
        "senders": 6067,
        "senders-email": 6068,
        "senders-sms": 6069,
        "senders-push": 6070,
        "senders-browser": 6071,
        "dashboard": 6072,
        "reply": 6073,
    }


def test_worker_and_senders_share_a_host_with_defaults(
    tansu: Any, prefix: str, tmp_path: Path
) -> None:
    app_id = f"{prefix}notifier"
    ensure(tansu.bootstrap, prefix, app_id)
    base = free_base()
    env = dict(
        os.environ,
        KAFKA_BROKER_URL=f"kafka://{tansu.bootstrap}",
        TOPIC_PREFIX=prefix,
        WEB_PORT_BASE=str(base),
        DATA_DIR=str(tmp_path / "data"),
        OUTBOX_DIR=str(tmp_path / "outbox"),
    )
    env.pop("WEB_PORT", None)
    commands = {
        "worker": ["worker", "--app-id", app_id],
        "senders": ["senders", "--app-id", f"{prefix}senders"],
        "senders-email": ["senders", "--channel", "email", "--app-id", f"{prefix}email"],
        "senders-sms": ["senders", "--channel", "sms", "--app-id", f"{prefix}sms"],
    }
    procs = {name: spawn(args, env, tmp_path / f"{name}.log") for name, args in commands.items()}
    try:
        expected = {name: base + WEB_PORT_OFFSETS[name] for name in commands}
        deadline = time.monotonic() + 90
        waiting = dict(expected)
        while waiting and time.monotonic() < deadline:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    log = (tmp_path / f"{name}.log").read_text(errors="replace")
                    pytest.fail(f"{name} exited {proc.returncode}:\n{log[-3000:]}")
            for name, port in list(waiting.items()):
                if serves_http(port):
                    del waiting[name]
            time.sleep(0.3)
        assert not waiting, f"not serving HTTP: {waiting}"

        # A second worker with the same defaults: one clear line, no traceback.
        second = subprocess.run(
            [sys.executable, "-P", "-m", "processors.cli", "worker", "--app-id", app_id],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"web port {base}" in lines[0] and "--web-port" in lines[0]
        assert "Traceback" not in second.stdout + second.stderr
        # ... and the same for a second `senders --channel sms`
        sms = subprocess.run(
            [sys.executable, "-P", "-m", "processors.cli", *commands["senders-sms"]],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sms.returncode == 2 and "Traceback" not in sms.stderr
        assert sms.stderr.strip().splitlines() == [
            f"chat-notifier senders: web port {expected['senders-sms']} on 0.0.0.0 is not free "
            "(Address already in use); choose another with --web-port PORT, or --without-web"
        ]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
