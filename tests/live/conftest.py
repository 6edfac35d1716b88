"""Helpers for tests against the real broker: worker subprocesses, produce, consume."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from processors import codec
from processors import topics as t

ROOT = Path(__file__).resolve().parents[2]

# Faust settings for tests: join a new group in ~3 s instead of 30 s (notes).
TEST_FAUST = (
    "broker_session_timeout=6",
    "broker_heartbeat_interval=1",
    "broker_rebalance_timeout=3",
    "broker_commit_interval=0.5",
)

Record = tuple[str, str | None, Mapping[str, Any]]


class WorkerProc:
    """``chat-notifier worker`` in a subprocess (memory store, no web server)."""

    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        log_path: Path,
        *,
        app_id: str,
        sets: Iterable[str] = (),
        store: str = "memory://",
        data_dir: Path | None = None,
    ) -> None:
        self.log_path = log_path
        env = dict(os.environ)
        env.update(
            KAFKA_BROKER_URL=f"kafka://{bootstrap}",
            TOPIC_PREFIX=prefix,
            CONVERSATION_PARTITIONS="4",
            USER_PARTITIONS="4",
            PYTHONUNBUFFERED="1",
        )
        cmd = [sys.executable, "-P", "-m", "processors.cli", "worker", "--app-id", app_id]
        cmd += ["--store", store, "--without-web", "--log-level", "INFO"]
        if data_dir is not None:
            cmd += ["--data-dir", str(data_dir)]
        for s in sets:
            cmd += ["--set", s]
        for f in TEST_FAUST:
            cmd += ["--faust", f]
        self.cmd = cmd
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProc:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            self.cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 40.0, count: int = 1) -> None:
        """Wait until the worker has joined and started its agents ``count`` times."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.log()[-4000:]}")
            if self.log().count("Ready") >= count:
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.log()[-4000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def prefix() -> str:
    """A fresh topic prefix: every test has its own topics and groups."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def workers(tansu: Any, prefix: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProc]]:
    started: list[WorkerProc] = []

    def start(name: str = "w", **kwargs: Any) -> WorkerProc:
        kwargs.setdefault("app_id", f"{prefix}notifier")
        w = WorkerProc(tansu.bootstrap, prefix, tmp_path / f"{name}.log", **kwargs).start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def ensure(bootstrap: str, prefix: str, app_id: str) -> None:
    from processors.live.agents import changelog_topics
    from processors.live.broker import ensure_topics
    from processors.settings import load_settings

    settings = load_settings(
        kafka_broker_url=f"kafka://{bootstrap}",
        topic_prefix=prefix,
        conversation_partitions=4,
        user_partitions=4,
    )
    asyncio.run(ensure_topics(settings, changelog_topics(app_id)))


def produce(
    bootstrap: str, prefix: str, records: Iterable[Record | tuple[str, Any, bytes]]
) -> None:
    """Publish ``(topic, key, value)``: dict values are Avro-encoded, bytes sent as is."""
    from aiokafka import AIOKafkaProducer

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await producer.start()
        try:
            for topic, key, value in records:
                spec = t.TOPICS[topic]
                data = value if isinstance(value, bytes) else codec.encode(spec.record or "", value)
                k = key.encode() if isinstance(key, str) else key
                await producer.send_and_wait(prefix + topic, data, key=k)
        finally:
            await producer.stop()

    asyncio.run(go())


def consume(
    bootstrap: str,
    prefix: str,
    topic: str,
    *,
    until: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    """Read ``topic`` from the start until ``until(values)`` or the timeout; decoded values."""
    from aiokafka import AIOKafkaConsumer

    record = t.TOPICS[topic].record or ""

    async def go() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(
            prefix + topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        out: list[dict[str, Any]] = []
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for msgs in batch.values():
                    out.extend(codec.decode(record, m.value) for m in msgs)
                if until(out):
                    break
        finally:
            await consumer.stop()
        return out

    return asyncio.run(go())
