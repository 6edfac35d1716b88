"""Config topics of any shape (contract §11): roles, settings and display names reach every
worker and sender whatever the partition counts; bad config records are dead-lettered;
partition counts that cannot work refuse a start with one line."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from processors import codec
from processors import topics as t
from processors.live.broker import RETENTION_COMPACTED_MS

from .conftest import ROOT, TEST_FAUST, WorkerProc, consume, ensure, produce
from .scenario import conversation, message, role, user

pytestmark = [pytest.mark.broker, pytest.mark.timeout(150)]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def create_topics(bootstrap: str, topics: dict[str, int], *, compact: Iterable[str] = ()) -> None:
    """Create full topic names with the given partition counts (a platform team's doing)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    compacted = set(compact)

    async def go() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(
                        name=name,
                        num_partitions=n,
                        replication_factor=1,
                        topic_configs=(
                            {
                                "cleanup.policy": "compact",
                                "retention.ms": str(RETENTION_COMPACTED_MS),
                            }
                            if name in compacted
                            else {"cleanup.policy": "delete", "retention.ms": "86400000"}
                        ),
                    )
                    for name, n in topics.items()
                ]
            )
        finally:
            await admin.close()

    asyncio.run(go())


def produce_to(
    bootstrap: str, prefix: str, records: Iterable[tuple[str, str | None, Any, int | None]]
) -> None:
    """``(topic, key, value, partition)``: dicts Avro-encoded, bytes as is, None a tombstone."""
    from aiokafka import AIOKafkaProducer

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await producer.start()
        try:
            for topic, key, value, partition in records:
                data = (
                    value
                    if value is None or isinstance(value, bytes)
                    else codec.encode(t.TOPICS[topic].record or "", value)
                )
                k = None if key is None else key.encode()
                await producer.send_and_wait(prefix + topic, data, key=k, partition=partition)
        finally:
            await producer.stop()

    asyncio.run(go())


def settings_record(ts: int, **values: Any) -> dict[str, Any]:
    base = {
        "inactivity_seconds": 1,
        "typing_ttl_seconds": 2,
        "max_batch_seconds": 60,
        "presence_ttl_seconds": 60,
        "app_url_template": "https://chat.example/c/{conversation_id}",
        "unsubscribe_url_template": "https://chat.example/u/{user_id}",
        "email_from": "Chat <n@chat.example>",
        "reply_domain": "r.chat.example",
        "sms_from": None,
        "ts": ts,
    }
    base.update(values)
    return base


class SendersProc:
    """``chat-notifier senders --channel email`` in a subprocess, outbox backend."""

    def __init__(self, bootstrap: str, prefix: str, tmp_path: Path) -> None:
        env = dict(os.environ)
        env.update(
            KAFKA_BROKER_URL=f"kafka://{bootstrap}",
            TOPIC_PREFIX=prefix,
            CHANNEL_PARTITIONS="4",
            OUTBOX_DIR=str(tmp_path / "outbox"),
            DATA_DIR=str(tmp_path / "data"),
            PYTHONUNBUFFERED="1",
        )
        cmd = [sys.executable, "-P", "-m", "processors.cli", "senders", "--channel", "email"]
        cmd += ["--app-id", f"{prefix}senders", "--store", "memory://", "--without-web"]
        for f in TEST_FAUST:
            cmd += ["--faust", f]
        self.log_path = tmp_path / "senders.log"
        self.outbox = tmp_path / "outbox"
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()[-4000:]
            if text in self.log():
                return
            time.sleep(0.2)
        raise AssertionError(f"senders: no {text!r}:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def senders(tansu: Any, prefix: str, tmp_path: Path) -> Iterator[Callable[[], SendersProc]]:
    started: list[SendersProc] = []

    def start() -> SendersProc:
        proc = SendersProc(tansu.bootstrap, prefix, tmp_path)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def test_roles_and_settings_on_three_partitions_reach_worker_and_senders(
    tansu: Any,
    prefix: str,
    workers: Callable[..., WorkerProc],
    senders: Callable[[], SendersProc],
) -> None:
    """chat.roles / chat.settings created with 3 partitions before start, records on
    several partitions before and after start: every role decides, the settings record
    (not --set, not an older record on another partition) times the batch and renders
    the link, and the email names the sender by User.name.

    Before: the worker's 1-partition GlobalTables saw no role (every recipient
    UNKNOWN_ROLE) and the senders crashed with PartitionsMismatch."""
    bs = tansu.bootstrap
    create_topics(bs, {prefix + t.ROLES: 3, prefix + t.SETTINGS: 3}, compact=[prefix + t.ROLES])
    ensure(bs, prefix, f"{prefix}notifier")
    t0 = now_ms()
    produce_to(
        bs,
        prefix,
        [
            ("chat.roles", "member", {**role("member", email=True), "ts": t0}, 1),
            ("chat.roles", "support", {**role("support", email=True, sms=True), "ts": t0}, 2),
            # an older settings record on another partition must not win
            (
                "chat.settings",
                "app",
                settings_record(
                    t0 - 5000,
                    inactivity_seconds=40,
                    app_url_template="https://old.example/{conversation_id}",
                ),
                0,
            ),
            ("chat.settings", "app", settings_record(t0), 2),
        ],
    )
    # --set 30 s: only the settings record (1 s) lets the batch close within the test
    worker = workers(sets=("inactivity_seconds=30",))
    mailer = senders()
    worker.wait_ready()
    mailer.wait_for("Ready")
    ts = now_ms()
    produce_to(
        bs,
        prefix,
        [("chat.roles", "late", {**role("late", email=True), "ts": ts}, 0)],  # after start
    )
    produce(
        bs,
        prefix,
        [
            ("chat.users", "alice", {**user("alice", "Alice", "member"), "ts": ts}),
            ("chat.users", "ann", {**user("ann", "Ann", "member"), "ts": ts}),
            ("chat.users", "cy", {**user("cy", "Cy", "support"), "ts": ts}),
            ("chat.users", "dee", {**user("dee", "Dee", "late"), "ts": ts}),
            (
                "chat.conversations",
                "c1",
                {
                    **conversation("c1", *((u, "All") for u in ("alice", "ann", "cy", "dee"))),
                    "ts": ts,
                },
            ),
        ],
    )
    time.sleep(1.5)  # the reader polls; the user agent reads users
    sent_at = now_ms()
    produce(bs, prefix, [("chat.messages", "c1", {**message("c1", "m1", "alice"), "ts": sent_at})])

    decisions = consume(
        bs,
        prefix,
        t.DECISIONS,
        until=lambda v: {d["recipient_id"] for d in v} >= {"alice", "ann", "cy", "dee"},
        timeout=25,
    )
    by_recipient: dict[str, dict[str | None, Any]] = {}
    for d in decisions:
        by_recipient.setdefault(d["recipient_id"], {})[d["channel"]] = d
    assert all(d["reason"] != "UNKNOWN_ROLE" for d in decisions), decisions
    for uid in ("ann", "cy", "dee"):
        assert by_recipient[uid]["email"]["outcome"] == "send", (uid, by_recipient[uid])
    assert by_recipient["cy"]["sms"]["reason"] == "NO_ADDRESS"  # support has sms on
    assert by_recipient["ann"]["sms"]["reason"] == "CHANNEL_DISABLED"
    flushes = consume(bs, prefix, t.FLUSHES, until=lambda v: len(v) >= 1, timeout=5)
    assert flushes[0]["closed_at"] - sent_at == 1000  # inactivity from the record in force
    assert "overrides --set inactivity_seconds=30" in worker.log()

    deliveries = consume(bs, prefix, t.EMAIL, until=lambda v: len(v) >= 3, timeout=5)
    assert {m["sender_name"] for d in deliveries for m in d["messages"]} == {"Alice"}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(list(mailer.outbox.glob("email/*.eml"))) < 3:
        time.sleep(0.3)
    emails = [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in mailer.outbox.glob("email/*.eml")
    ]
    assert len(emails) == 3, mailer.log()[-3000:]
    for mail in emails:
        text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        assert "Alice" in text and "https://chat.example/c/c1" in text, text
        assert "old.example" not in text and "alice" not in text.replace("Alice", "")
    assert "PartitionsMismatch" not in mailer.log()


def test_bad_config_records_are_dead_lettered_and_tombstones_delete(
    tansu: Any, prefix: str, workers: Callable[..., WorkerProc]
) -> None:
    """Settings with inactivity 0, 10^9 or no ts and a Role keyed other than its name
    go to notify.dead-letter with the reason; the values in force stay. A role tombstone
    deletes the role: the next decision says UNKNOWN_ROLE.

    Also: the conversation topics exist with 2 partitions while CONVERSATION_PARTITIONS
    is 4: the worker adopts 2 and says so."""
    bs = tansu.bootstrap
    create_topics(
        bs, {prefix + name: 2 for name in (t.MESSAGES, t.TYPING, t.CONVERSATIONS, t.FLUSHES)}
    )
    worker = workers(sets=("inactivity_seconds=1",))
    worker.wait_ready()
    assert "CONVERSATION_PARTITIONS=4 but the existing conversation topics have 2" in worker.log()
    t0 = now_ms()
    produce_to(
        bs,
        prefix,
        [
            ("chat.roles", "member", {**role("member", email=True), "ts": t0}, None),
            ("chat.settings", "app", settings_record(t0, inactivity_seconds=2), None),
        ],
    )
    bad: list[tuple[str, str, Any, str]] = [
        ("chat.settings", "app", settings_record(t0 + 1, inactivity_seconds=0), "at most 900"),
        (
            "chat.settings",
            "app",
            settings_record(t0 + 2, inactivity_seconds=10**9),
            "at most 900",
        ),
        ("chat.settings", "app", b'{"inactivity_seconds": 3}', "no usable ts"),
        (
            "chat.roles",
            "admin",
            {**role("member"), "ts": t0 + 3},  # would switch member's email off
            "does not match name",
        ),
    ]
    produce_to(bs, prefix, [(topic, key, value, None) for topic, key, value, _ in bad])
    produce(
        bs,
        prefix,
        [
            ("chat.users", "ann", {**user("ann", "Ann", "member"), "ts": t0}),
            ("chat.users", "bob", {**user("bob", "Bob", "member"), "ts": t0}),
            (
                "chat.conversations",
                "c1",
                {**conversation("c1", ("ann", "All"), ("bob", "All")), "ts": t0},
            ),
        ],
    )
    dead = consume(bs, prefix, t.DEAD_LETTER, until=lambda v: len(v) >= len(bad), timeout=20)
    assert len(dead) == len(bad), [d["error"] for d in dead]
    errors = [d["error"] for d in dead]
    for topic, key, _, why in bad:
        assert any(
            d["source_topic"] == topic and d["key"] == key.encode() and why in d["error"]
            for d in dead
        ), (why, errors)

    time.sleep(1.0)
    sent_at = now_ms()
    produce(bs, prefix, [("chat.messages", "c1", {**message("c1", "m1", "bob"), "ts": sent_at})])
    flushes = consume(bs, prefix, t.FLUSHES, until=lambda v: len(v) >= 1, timeout=15)
    assert flushes[0]["closed_at"] - sent_at == 2000  # the good record's 2 s stayed in force
    decisions = consume(
        bs, prefix, t.DECISIONS, until=lambda v: any(d["recipient_id"] == "ann" for d in v)
    )
    ann = {d["channel"]: d for d in decisions if d["recipient_id"] == "ann"}
    assert ann["email"]["outcome"] == "send"  # member was not overwritten by key 'admin'

    produce_to(bs, prefix, [("chat.roles", "member", None, None)])  # tombstone
    time.sleep(1.0)
    produce(bs, prefix, [("chat.messages", "c1", {**message("c1", "m2", "bob"), "ts": now_ms()})])
    decisions = consume(
        bs,
        prefix,
        t.DECISIONS,
        until=lambda v: sum(d["recipient_id"] == "ann" for d in v) >= len(ann) + 1,
        timeout=15,
    )
    after = [
        d
        for d in decisions
        if d["recipient_id"] == "ann" and d["flush_id"] != ann["email"]["flush_id"]
    ]
    assert [(d["outcome"], d["reason"]) for d in after] == [("skip", "UNKNOWN_ROLE")]


def _cli(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "processors.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_worker_refuses_a_co_partitioned_group_that_disagrees(tansu: Any, prefix: str) -> None:
    """chat.messages with 4 partitions and chat.typing with 2: one agent cannot read
    them together. Refused at start with one line naming topics, counts and the fix."""
    create_topics(tansu.bootstrap, {prefix + t.MESSAGES: 4, prefix + t.TYPING: 2})
    done = _cli(
        ["worker", "--app-id", f"{prefix}notifier", "--store", "memory://", "--without-web"],
        {"KAFKA_BROKER_URL": f"kafka://{tansu.bootstrap}", "TOPIC_PREFIX": prefix},
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    line = lines[0]
    assert f"{prefix}chat.messages=4" in line and f"{prefix}chat.typing=2" in line
    assert "CONVERSATION_PARTITIONS" in line


@pytest.mark.parametrize(
    "value, expected",
    [
        ("inactivity=5", "did you mean 'inactivity_seconds'?"),
        ("inactivity_seconds=0", "more than 0 and at most 900"),
        ("inactivity_seconds=1000000000", "more than 0 and at most 900"),
        ("presence_ttl_seconds=soon", "must be a number of seconds"),
    ],
)
def test_worker_set_refuses_unknown_names_and_bad_values(value: str, expected: str) -> None:
    """Before: a misspelt --set was accepted and ignored; 0 and 10^9 were accepted."""
    done = _cli(["worker", "--set", value], {"KAFKA_BROKER_URL": "kafka://127.0.0.1:1"})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert expected in done.stderr, done.stderr
