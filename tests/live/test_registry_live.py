"""The schema-registry path on the real broker (issue 12 item 3): a worker started with
SCHEMA_REGISTRY_URL reads Confluent-framed records, dead-letters the ones whose schema it
cannot get with that reason, and goes on; ``--confluent`` producers (demo, admin) write
the framing, registering ``<topic>-value``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from processors import codec
from processors import topics as t
from processors.registry import SchemaRegistry

from ..registry_standin import RegistryStandIn
from .conftest import ROOT, WorkerProc, consume, ensure, produce
from .scenario import message, reference_data

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

SETS = ("inactivity_seconds=1", "typing_ttl_seconds=2")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def standin() -> Iterator[RegistryStandIn]:
    server = RegistryStandIn().start()
    yield server
    server.stop()


def flushed_ids(flushes: list[dict[str, Any]]) -> set[str]:
    return {mid for f in flushes for mid in f["message_ids"]}


def test_worker_reads_confluent_records_and_dead_letters_registry_failures(
    tansu: Any,
    prefix: str,
    workers: Callable[..., WorkerProc],
    standin: RegistryStandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bs = tansu.bootstrap
    ensure(bs, prefix, f"{prefix}notifier")
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", standin.url)
    worker = workers(sets=SETS)
    worker.wait_ready()
    producer = SchemaRegistry(standin.url)

    def confluent(topic: str, key: str, value: dict[str, Any]) -> tuple[str, str, bytes]:
        record = t.TOPICS[topic].record or ""
        return topic, key, producer.encode(prefix + topic, record, {**value, "ts": now_ms()})

    # Reference data and the first messages, all Confluent-framed (config topics too:
    # the worker's broadcast reader decodes through the same registry).
    produce(bs, prefix, [confluent(topic, key, value) for topic, key, value in reference_data()])
    time.sleep(1.0)
    produce(bs, prefix, [confluent(t.MESSAGES, "c1", message("c1", "m1", "ann", "hello"))])
    flushes = consume(bs, prefix, t.FLUSHES, until=lambda v: "m1" in flushed_ids(v), timeout=30)
    assert "m1" in flushed_ids(flushes)
    decisions = consume(bs, prefix, t.DECISIONS, until=lambda v: len(v) > 0, timeout=20)
    assert {d["recipient_id"] for d in decisions} >= {"bob"}  # roles and users were read

    # An id the registry does not know: dead-lettered with that reason.
    body = codec.encode("MessageEvent", {**message("c1", "m2", "ann"), "ts": now_ms()})[10:]
    unknown = b"\x00" + (4242).to_bytes(4, "big") + body
    produce(bs, prefix, [(t.MESSAGES, "c1", unknown)])
    dead = consume(bs, prefix, t.DEAD_LETTER, until=lambda v: len(v) >= 1, timeout=30)
    assert [d["error"] for d in dead] == [
        f"schema id 4242 is not known to the registry at {standin.url}"
    ]

    # The registry goes away: an id the worker has not fetched yet is dead-lettered as
    # unreachable; the id it holds, and single-object records, still go through.
    later = standin.add(codec.schema("MessageEvent"))
    standin.stop()
    not_fetched = b"\x00" + later.to_bytes(4, "big") + body
    produce(bs, prefix, [(t.MESSAGES, "c1", not_fetched)])
    produce(bs, prefix, [confluent(t.MESSAGES, "c1", message("c1", "m3", "ann", "cached id"))])
    produce(
        bs, prefix, [(t.MESSAGES, "c1", {**message("c1", "m4", "ann", "plain"), "ts": now_ms()})]
    )

    dead = consume(bs, prefix, t.DEAD_LETTER, until=lambda v: len(v) >= 2, timeout=30)
    errors = {d["value"]: d["error"] for d in dead}
    assert errors[not_fetched].startswith(f"schema registry at {standin.url} unreachable: ")
    assert errors[not_fetched].endswith(f"(schema id {later})")
    assert all(d["stage"] == "decode" for d in dead) and len(dead) == 2
    flushes = consume(
        bs, prefix, t.FLUSHES, until=lambda v: {"m3", "m4"} <= flushed_ids(v), timeout=30
    )
    assert {"m1", "m3", "m4"} <= flushed_ids(flushes)
    assert "m2" not in flushed_ids(flushes)
    assert worker.proc is not None and worker.proc.poll() is None  # alive throughout
    assert "Traceback" not in worker.log()


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "processors.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def raw_values(bootstrap: str, topic: str) -> list[bytes]:
    from aiokafka import AIOKafkaConsumer

    async def go() -> list[bytes]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
        )
        await consumer.start()
        try:
            batch = await consumer.getmany(timeout_ms=3000)
            return [m.value for msgs in batch.values() for m in msgs if m.value is not None]
        finally:
            await consumer.stop()

    return asyncio.run(go())


def test_confluent_producers_demo_and_admin(
    tansu: Any,
    prefix: str,
    workers: Callable[..., WorkerProc],
    standin: RegistryStandIn,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """`chat-notifier demo --confluent` and `roles set` / `settings set --confluent`
    register <topic>-value and write the framing; a worker and the admin's own read-back
    decode it through the registry."""
    bs = tansu.bootstrap
    ensure(bs, prefix, f"{prefix}notifier")
    env = {"KAFKA_BROKER_URL": tansu.url, "TOPIC_PREFIX": prefix, "SCHEMA_REGISTRY_URL": ""}
    with_registry = {**env, "SCHEMA_REGISTRY_URL": standin.url}

    refused = run_cli(env, "roles", "set", "ops", "--email", "on", "--confluent")
    assert refused.returncode == 2 and "--confluent needs SCHEMA_REGISTRY_URL" in refused.stderr

    # The admin reads its write back through the broadcast reader: exit 0 means the
    # Confluent-framed record decoded and is in force.
    done = run_cli(with_registry, "roles", "set", "ops", "--email", "on", "--confluent")
    assert done.returncode == 0, (done.stdout, done.stderr)
    done = run_cli(with_registry, "settings", "set", "max_batch_seconds=50", "--confluent")
    assert done.returncode == 0, (done.stdout, done.stderr)
    for topic in (t.ROLES, t.SETTINGS):
        values = raw_values(bs, prefix + topic)
        assert values and all(v[0] == 0 for v in values), topic
        assert f"{prefix}{topic}-value" in standin.subjects

    monkeypatch.setenv("SCHEMA_REGISTRY_URL", standin.url)
    worker = workers(sets=SETS)
    worker.wait_ready()
    demo = run_cli(with_registry, "demo", "--rounds", "1", "--confluent", timeout=90)
    assert demo.returncode == 0, (demo.stdout, demo.stderr)
    for topic in (t.MESSAGES, t.TYPING, t.PRESENCE, t.USERS, t.CONVERSATIONS):
        assert f"{prefix}{topic}-value" in standin.subjects
    assert all(v[0] == 0 for v in raw_values(bs, prefix + t.MESSAGES))
    flushes = consume(bs, prefix, t.FLUSHES, until=lambda v: "r1-d1" in flushed_ids(v), timeout=30)
    assert {"r1-b1", "r1-b2", "r1-d1"} <= flushed_ids(flushes)
    dead = consume(bs, prefix, t.DEAD_LETTER, until=lambda v: False, timeout=2)
    assert not [d for d in dead if d["stage"] == "decode"], [d["error"] for d in dead]

    # replay --from-kafka reads the same records through the registry (its own process)
    out = tmp_path / "replay.jsonl"
    replay = run_cli(with_registry, "replay", "--from-kafka", "--output", str(out))
    assert replay.returncode == 0, replay.stderr
    replayed = [json.loads(line) for line in out.read_text().splitlines()]
    replay_flushes = [r["value"] for r in replayed if r["topic"] == t.FLUSHES]
    assert {"r1-b1", "r1-b2", "r1-d1"} <= flushed_ids(replay_flushes)
    assert "schema" not in replay.stderr, replay.stderr
    blind = run_cli(env, "replay", "--from-kafka", "--output", str(tmp_path / "blind.jsonl"))
    assert "no schema registry is configured" in blind.stderr, blind.stderr

    standin.stop()
    away = run_cli(with_registry, "roles", "set", "ops2", "--email", "on", "--confluent")
    assert away.returncode == 3 and "unreachable" in away.stderr, (away.stdout, away.stderr)
