"""Processes of the reply path on the real broker: ``chat-notifier reply`` and the adapters."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from processors import topics as t
from tests.live.conftest import TEST_FAUST, produce
from tests.reply.mails import CONVERSATIONS, USERS

ROOT = Path(__file__).resolve().parents[2]
TOKEN_KEYS = json.dumps(["k2:second-reply-key-0123456789", "k1:first-reply-key-0123456789"])


class Proc:
    """A ``chat-notifier`` subcommand in a subprocess, its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "processors.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}:\n{self.log()[-4000:]}")
            if text in self.log():
                return
            time.sleep(0.2)
        raise AssertionError(f"no {text!r} in {timeout}s:\n{self.log()[-4000:]}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def base_env(bootstrap: str, prefix: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        KAFKA_BROKER_URL=f"kafka://{bootstrap}",
        TOPIC_PREFIX=prefix,
        DATA_DIR=str(tmp_path / "data"),
        OUTBOX_DIR=str(tmp_path / "outbox"),
        REPLY__TOKEN_KEYS=TOKEN_KEYS,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def ensure_reply_topics(bootstrap: str, prefix: str, app_id: str) -> None:
    from processors.live.broker import ensure_topics
    from processors.reply.agent import reply_changelog_topics
    from processors.settings import load_settings

    settings = load_settings(kafka_broker_url=f"kafka://{bootstrap}", topic_prefix=prefix)
    asyncio.run(ensure_topics(settings, reply_changelog_topics(app_id)))


@pytest.fixture
def reply_env(tansu: Any, tmp_path: Path) -> dict[str, Any]:
    """A fresh prefix with topics, the test conversations and users published."""
    prefix = f"r{uuid.uuid4().hex[:8]}."
    app_id = f"{prefix}reply"
    ensure_reply_topics(tansu.bootstrap, prefix, app_id)
    produce(
        tansu.bootstrap,
        prefix,
        [(t.CONVERSATIONS, cid, c) for cid, c in CONVERSATIONS.items()]
        + [(t.USERS, uid, {**u, "phone": None, "role": None, "ts": 1}) for uid, u in USERS.items()],
    )
    return {"bootstrap": tansu.bootstrap, "prefix": prefix, "app_id": app_id, "tmp": tmp_path}


@pytest.fixture
def procs() -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(args: list[str], env: dict[str, str], log_path: Path) -> Proc:
        p = Proc(args, env, log_path)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def start_reply_agent(start: Callable[..., Proc], env: dict[str, Any]) -> Proc:
    args = ["reply", "--app-id", env["app_id"], "--store", "memory://", "--without-web"]
    for f in TEST_FAUST:
        args += ["--faust", f]
    p = start(args, base_env(env["bootstrap"], env["prefix"], env["tmp"]), env["tmp"] / "reply.log")
    p.wait_for("snapshots read")
    return p


def consume_raw(
    bootstrap: str, prefix: str, topic: str, *, count: int, timeout: float = 20.0
) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` of a raw topic, read from the start until ``count`` or the timeout."""
    from aiokafka import AIOKafkaConsumer

    async def go() -> list[tuple[bytes, bytes]]:
        consumer = AIOKafkaConsumer(
            prefix + topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
        )
        await consumer.start()
        out: list[tuple[bytes, bytes]] = []
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and len(out) < count:
                for msgs in (await consumer.getmany(timeout_ms=200)).values():
                    out.extend((m.key, m.value) for m in msgs)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(go())
