"""Live pipeline benchmark (issue 3): one broker, the same records, every measurement.

On a fresh embedded Tansu broker, with realistic input (20% messages, 50% typing in
bursts of start/refresh/stop, 30% presence mostly heartbeats):

* raw aiokafka consume rate (``getmany``) over the input records;
* the bare Faust agent loop: the worker's agent layout over the same topics, only
  iterating (Faust's own ceiling here);
* the worker on a backlog with batches open (decode, batching, presence, Table writes
  on transitions, scheduler) and with a flush per message (the fan-out's worst case:
  every event is older than the inactivity period when it is applied);
* the naive design (one Table write per input event through Faust's Table API): the
  "before" of the restructuring;
* two workers in one group vs one;
* flush lateness (batch deadline -> Flush visible on ``notify.flushes``) p50/p99 while
  input arrives in real time (ts = now) with the product's default inactivity;
* CPU seconds per 1,000 input events (user + system of the worker processes, from
  ``/proc/<pid>/stat``) for one and two workers;
* then the issue-13 targets side by side, from this one run: worker with batches open
  >= 3x the bare loop, a flush per message >= 2x, lateness p99 <= 100 ms.

Never a timed test: the machine this runs on may be shared (CI, other processes), which
moves single runs by tens of percent; say so when quoting the numbers.

Every Faust run is a child process that first joins its group; then the records are
published; a rate is input events over the time from the first to the last input
event applied. Sizes: ``BENCH_LIVE_EVENTS`` (default 30000), ``BENCH_LIVE_RATE`` (live
phase, default 500/s), ``BENCH_BEST_OF`` (default 2). ``BENCH_PROFILE=prefix`` writes a
cProfile of each child; ``BENCH_FAUST='{"setting": value}'`` tries Faust settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EVENTS = int(os.environ.get("BENCH_LIVE_EVENTS", "30000"))
CONVERSATIONS = 2000
USERS = 2000
PARTITIONS = 4
INACTIVITY_S = 1
INPUT = ("chat.messages", "chat.typing", "chat.presence")
FAUST_FAST = {
    "broker_session_timeout": 6.0,
    "broker_heartbeat_interval": 1.0,
    "broker_rebalance_timeout": 3.0,
    "web_enabled": False,
}


# -- records ------------------------------------------------------------------------------


def reference_records(now: int) -> list[tuple[str, str, dict[str, Any]]]:
    rnd = random.Random(7)
    out: list[tuple[str, str, dict[str, Any]]] = [
        (
            "chat.roles",
            "member",
            {
                "name": "member",
                "email": True,
                "sms": False,
                "push": True,
                "browser": False,
                "ts": now,
            },
        )
    ]
    for u in range(USERS):
        uid = f"u{u}"
        out.append(
            (
                "chat.users",
                uid,
                {
                    "user_id": uid,
                    "name": f"User {u}",
                    "email": f"{uid}@example.test",
                    "phone": None,
                    "role": "member",
                    "locale": "en",
                    "push_tokens": [f"tok-{uid}"] if u % 3 == 0 else [],
                    "browser_subscriptions": [],
                    "ts": now,
                },
            )
        )
    for c in range(CONVERSATIONS):
        members = rnd.sample(range(USERS), 4)
        out.append(
            (
                "chat.conversations",
                f"c{c}",
                {
                    "conversation_id": f"c{c}",
                    "subject": None,
                    "participants": [
                        {"user_id": f"u{m}", "access": "ReadWrite", "notify": "All"}
                        for m in members
                    ],
                    "ts": now,
                },
            )
        )
    return out


def input_records(n: int, seed: int = 1) -> list[tuple[str, str, dict[str, Any]]]:
    """Realistic proportions: messages 20%, typing 50%, presence 30%.

    Typing comes in bursts per (conversation, user): a start, refreshes every few
    seconds, then a stop or a message. Presence is mostly heartbeats re-sending a
    session's state; 15% of presence events change it (selection, focus, online).
    """
    rnd = random.Random(seed)
    members = [rnd.sample(range(USERS), 4) for _ in range(CONVERSATIONS)]
    typing_now: set[tuple[int, str]] = set()
    sessions: dict[str, list[Any]] = {}
    out: list[tuple[str, str, dict[str, Any]]] = []
    for i in range(n):
        r = rnd.random()
        c = rnd.randrange(CONVERSATIONS)
        cid = f"c{c}"
        uid = f"u{rnd.choice(members[c])}"
        if r < 0.2:
            typing_now.discard((c, uid))
            out.append(
                (
                    "chat.messages",
                    cid,
                    {
                        "message_id": f"m{seed}-{i}",
                        "conversation_id": cid,
                        "sender_id": uid,
                        "type": "UserMessage",
                        "text": "a message of ordinary length, nothing special about it",
                        "mentions": [],
                        "origin": "web",
                    },
                )
            )
        elif r < 0.7:
            key = (c, uid)
            if key in typing_now and rnd.random() < 0.25:
                typing_now.discard(key)
                on = False
            else:
                typing_now.add(key)
                on = True
            out.append(("chat.typing", cid, {"conversation_id": cid, "user_id": uid, "typing": on}))
        else:
            puid = f"u{rnd.randrange(USERS)}"
            sid = f"{puid}-s{rnd.randrange(2)}"
            state = sessions.get(sid)
            if state is None or rnd.random() < 0.15:
                state = sessions[sid] = [
                    rnd.random() < 0.9,
                    f"c{rnd.randrange(CONVERSATIONS)}",
                    rnd.random() < 0.5,
                ]
            online, selected, focused = state
            out.append(
                (
                    "chat.presence",
                    puid,
                    {
                        "user_id": puid,
                        "session_id": sid,
                        "online": online,
                        "selected_conversation_id": selected if online else None,
                        "focused": focused and online,
                    },
                )
            )
    return out


def encode_all(
    records: list[tuple[str, str, dict[str, Any]]], ts: int | None = None
) -> list[tuple[str, bytes, bytes]]:
    from processors import codec
    from processors import topics as t

    out = []
    for topic, key, value in records:
        v = dict(value)
        if ts is not None:
            v["ts"] = ts
        out.append((topic, key.encode(), codec.encode(t.TOPICS[topic].record or "", v)))
    return out


async def publish(bootstrap: str, prefix: str, encoded: list[tuple[str, bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        futures = [
            await producer.send(prefix + topic, value, key=key) for topic, key, value in encoded
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def publish_live(
    bootstrap: str, prefix: str, records: list[tuple[str, str, dict[str, Any]]], rate: float
) -> None:
    """Publish at ``rate`` records/s with ts = wall clock at send (lateness phase)."""
    from aiokafka import AIOKafkaProducer

    from processors import codec
    from processors import topics as t

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    try:
        start = time.monotonic()
        for i, (topic, key, value) in enumerate(records):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            v = {**value, "ts": time.time_ns() // 1_000_000}
            await producer.send(
                prefix + topic, codec.encode(t.TOPICS[topic].record or "", v), key=key.encode()
            )
        await producer.flush()
    finally:
        await producer.stop()


# -- measurements in this process -------------------------------------------------------


async def raw_consume_rate(bootstrap: str, prefix: str, n: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *(prefix + t for t in INPUT),
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        seen = 0
        first = 0.0
        while seen < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=10000)
            if batch and not first:
                first = time.perf_counter()
            seen += sum(len(v) for v in batch.values())
        return n / (time.perf_counter() - first)
    finally:
        await consumer.stop()


async def follow_lateness(bootstrap: str, prefix: str, stop: asyncio.Event) -> list[int]:
    """(arrival wall clock - closed_at) of every Flush read from notify.flushes, in ms."""
    from aiokafka import AIOKafkaConsumer

    from processors import codec

    consumer = AIOKafkaConsumer(
        prefix + "notify.flushes",
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    out: list[int] = []
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=50)
            now = time.time_ns() // 1_000_000
            for records in batch.values():
                for r in records:
                    out.append(now - int(codec.decode("Flush", r.value)["closed_at"]))
    finally:
        await consumer.stop()
    return out


# -- child processes ---------------------------------------------------------------------


def spawn_env(inactivity: float, gate: Path | None) -> dict[str, str]:
    return dict(os.environ, BENCH_INACTIVITY=str(inactivity), BENCH_GATE=str(gate or ""))


def gate_path(status: Path) -> Path:
    """Children apply nothing until this file exists (see :func:`wait_for_gate`)."""
    return status.with_suffix(".go")


async def wait_for_gate() -> None:
    """Backlog runs: hold the first event until the parent opened the gate.

    The parent publishes the whole input first and then opens the gate, so a backlog
    rate measures the consumer alone, not the publisher running beside it on the same
    cores (the worker is faster than a Python producer on this machine). Holding the
    agent fills its queue; Faust then stops fetching until it drains.
    """
    gate = os.environ.get("BENCH_GATE")
    while gate and not Path(gate).exists():
        await asyncio.sleep(0.02)


def spawn(
    role: str,
    bootstrap: str,
    prefix: str,
    app_id: str,
    status: Path,
    inactivity: float = INACTIVITY_S,
    gate: Path | None = None,
) -> subprocess.Popen[bytes]:
    log = open(status.with_suffix(".log"), "wb")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.live",
            "--child",
            role,
            bootstrap,
            prefix,
            app_id,
            str(status),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=spawn_env(inactivity, gate),
    )


def read_status(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return {}


def wait_assigned(statuses: list[Path], total: int, timeout: float = 90.0) -> None:
    """Until the children's active conversation partitions add up to ``total``, stably."""
    deadline = time.monotonic() + timeout
    stable_since = None
    while time.monotonic() < deadline:
        parts = [read_status(s).get("assigned", []) for s in statuses]
        ok = all(parts) and sorted(p for ps in parts for p in ps) == list(range(total))
        if ok:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since > 2.0:
                return
        else:
            stable_since = None
        time.sleep(0.1)
    raise RuntimeError(f"children did not settle: {[read_status(s) for s in statuses]}")


def wait_count(statuses: list[Path], n: int, timeout: float = 300.0) -> float:
    """Until the children applied ``n`` input events together; return events/s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = [read_status(s) for s in statuses]
        if sum(s.get("count", 0) for s in st) >= n:
            first = min(s["first"] for s in st if s.get("first"))
            last = max(s["last"] for s in st if s.get("last"))
            return n / (last - first)
        time.sleep(0.1)
    raise RuntimeError(f"only {[read_status(s).get('count') for s in statuses]} of {n} events")


def stop_all(children: list[subprocess.Popen[bytes]]) -> None:
    for c in children:
        c.terminate()
    for c in children:
        try:
            c.wait(20)
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait(5)


def gated(apply: Any, inputs: set[str]) -> Any:
    """``apply`` that waits for the gate before its first input event."""
    opened = [False]

    async def first(message: Any) -> None:
        await wait_for_gate()
        opened[0] = True
        result = apply(message)
        if result is not None:
            await result

    def gate_then_apply(message: Any) -> Any:
        if not opened[0] and message.topic in inputs:
            return first(message)
        return apply(message)

    return gate_then_apply


def write_every_event(pipeline: Any) -> None:
    """The naive design, for the before/after line only: a Table write per input event.

    Wraps the worker's handlers from outside (production code has no such mode): after
    each message, typing and presence event, the conversation's batch or the user's
    presence is written to its Table whether it changed or not, one changelog record
    per write.
    """
    from processors import topics as t

    conversations, users = pipeline.conversations, pipeline.users
    prefix = pipeline.prefix

    def after(handler: Any, persist: Any) -> Any:
        async def handle(partition: int, value: dict[str, Any]) -> None:
            result = handler(partition, value)
            if result is not None:
                await result
            await persist(partition, value)

        return handle

    async def persist_batch(partition: int, value: dict[str, Any]) -> None:
        await conversations.persist(
            partition, conversations.batch(partition, value["conversation_id"])
        )

    async def persist_presence(partition: int, value: dict[str, Any]) -> None:
        await users.persist(partition, users.presence[value["user_id"]])

    # ... and each write is its own changelog record, encoded when written (the worker
    # keeps one record per key per applied batch, encoded once: Outbox.set_state).
    from processors.live import context as live_context
    from processors.live.fastpath import current_outbox

    ctx = pipeline.ctx
    coalesced = ctx.table_set

    async def table_set(table: Any, partition: int, key: str, value: dict[str, Any]) -> None:
        outbox = current_outbox()
        if outbox is None:
            await coalesced(table, partition, key, value)
            return
        table.data[key] = value
        ctx.table_writes += 1
        outbox.add(
            table.changelog_topic.get_topic_name(),
            live_context._json_bytes(key),
            live_context._json_bytes(value),
            partition,
        )

    ctx.table_set = table_set

    for side, name, persist in (
        (conversations, t.MESSAGES, persist_batch),
        (conversations, t.TYPING, persist_batch),
        (users, t.PRESENCE, persist_presence),
    ):
        handlers = side.intake.handlers
        handlers[prefix + name] = after(handlers[prefix + name], persist)


def child_main(role: str, bootstrap: str, prefix: str, app_id: str, status_path: str) -> None:
    """A Faust app (``bare``, ``worker`` or ``naive``) that reports progress to a file."""
    import faust

    from processors import topics as t
    from processors.app import create_app, raw_topics
    from processors.live.worker import run_app
    from processors.settings import load_settings

    settings = load_settings(
        kafka_broker_url=f"kafka://{bootstrap}",
        topic_prefix=prefix,
        store="memory://",
        conversation_partitions=PARTITIONS,
        user_partitions=PARTITIONS,
        data_dir=Path(tempfile.mkdtemp()),
    )
    extra = json.loads(os.environ.get("BENCH_FAUST", "{}"))  # experiments: Faust settings
    app = create_app(settings, app_id=app_id, **{**FAUST_FAST, **extra})
    state: dict[str, Any] = {"count": 0, "first": 0.0, "last": 0.0, "assigned": []}
    counter: Any
    inputs = {prefix + name for name in INPUT}
    conv_topic = prefix + t.MESSAGES
    if role == "bare":
        counts = [0]
        # faust-streaming's Conductor waits for table registration forever in an app
        # without tables; one unused table makes the bare app start like the worker.
        app.Table("unused", partitions=PARTITIONS)

        produce_every = int(os.environ.get("BENCH_BARE_PRODUCE", "0"))  # experiment

        async def iterate(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                if event.message.topic in inputs:
                    if not counts[0]:
                        await wait_for_gate()
                    counts[0] += 1
                    if produce_every and counts[0] % produce_every == 0:
                        await app.producer.send(
                            prefix + "notify.flushes", b"k", b"x" * 300, None, None, None
                        )

        app.agent(
            raw_topics(app, (t.MESSAGES, t.TYPING, t.CONVERSATIONS, t.FLUSHES)), name="bare_c"
        )(iterate)
        app.agent(raw_topics(app, (t.PRESENCE, t.USERS, t.CANDIDATES)), name="bare_u")(iterate)

        def counter() -> int:
            return counts[0]

    else:
        from processors.live.agents import attach_pipeline

        inactivity = float(os.environ.get("BENCH_INACTIVITY", INACTIVITY_S))
        pipeline = attach_pipeline(
            app,
            core_overrides={
                "inactivity_seconds": inactivity,
                # the batch cap may not be shorter than the inactivity period
                "max_batch_seconds": max(300.0, inactivity),
            },
        )
        if role == "naive":
            write_every_event(pipeline)
        for intake in (pipeline.conversations.intake, pipeline.users.intake):
            intake.apply = gated(intake.apply, inputs)

        def counter() -> int:
            return pipeline.input_events

    @app.task
    async def report() -> None:
        path = Path(status_path)
        while True:
            n = counter()
            now = time.perf_counter()
            if n and not state["first"]:
                state["first"] = now
            if n != state["count"]:
                state["last"] = now
                state["count"] = n
            assigned = sorted(
                tp.partition for tp in app.assignor.assigned_actives() if tp.topic == conv_topic
            )
            state["assigned"] = assigned
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state))
            tmp.replace(path)
            await asyncio.sleep(0.05)

    profile = os.environ.get("BENCH_PROFILE")
    if profile:  # cProfile of the whole child (py-spy is not installed here)
        import cProfile

        cProfile.runctx(
            "run_app(app, log_level='WARNING')",
            globals(),
            {"run_app": run_app, "app": app},
            f"{profile}.{role}.{os.getpid()}",
        )
        return
    run_app(app, log_level=os.environ.get("BENCH_LOG", "WARNING"))


# -- orchestration -------------------------------------------------------------------------


def fresh_app(bootstrap: str, letter: str, role: str) -> tuple[str, str]:
    """A new topic prefix and app id, with the app's topics and changelogs created."""
    from processors.live.agents import changelog_topics
    from processors.live.broker import ensure_topics
    from processors.settings import load_settings

    prefix = f"{letter}{uuid.uuid4().hex[:6]}."
    app_id = f"{prefix}{role}"
    settings = load_settings(
        kafka_broker_url=f"kafka://{bootstrap}",
        topic_prefix=prefix,
        conversation_partitions=PARTITIONS,
        user_partitions=PARTITIONS,
    )
    asyncio.run(ensure_topics(settings, changelog_topics(app_id)))
    return prefix, app_id


def faust_rate(
    role: str,
    bootstrap: str,
    workdir: Path,
    encoded_ref: list[Any],
    encoded: list[Any],
    workers: int = 1,
    inactivity: float = INACTIVITY_S,
) -> float:
    prefix, app_id = fresh_app(bootstrap, "b", role)
    statuses = [workdir / f"{app_id}-{i}.json" for i in range(workers)]
    gate = gate_path(statuses[0])
    children = [spawn(role, bootstrap, prefix, app_id, s, inactivity, gate=gate) for s in statuses]
    try:
        wait_assigned(statuses, PARTITIONS)
        asyncio.run(publish(bootstrap, prefix, encoded_ref))
        time.sleep(1.0)  # reference data applied (users, conversations, roles)
        asyncio.run(publish(bootstrap, prefix, encoded))
        time.sleep(1.0)
        before = sum(read_status(s).get("count", 0) for s in statuses)
        assert before == 0, before
        cpu_before = sum(cpu_seconds(c.pid) for c in children)
        gate.touch()
        rate = wait_count(statuses, len(encoded))
        cpu = sum(cpu_seconds(c.pid) for c in children) - cpu_before
        LAST_CPU_PER_1000[0] = cpu / len(encoded) * 1000
        return rate
    finally:
        stop_all(children)


#: CPU seconds (user + system, all threads, every child) per 1,000 input events of the
#: last :func:`faust_rate` run, from publishing the input to its last event applied.
LAST_CPU_PER_1000 = [float("nan")]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` so far (``/proc/<pid>/stat`` fields 14 and 15)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


BEST_OF = int(os.environ.get("BENCH_BEST_OF", "2"))
LONG_INACTIVITY_S = 600  # no batch closes while a backlog is applied


class Run:
    """Children of one measurement, on their own topics, with reference data loaded."""

    def __init__(
        self,
        role: str,
        bootstrap: str,
        workdir: Path,
        ref: list[Any],
        workers: int = 1,
        inactivity: float = INACTIVITY_S,
    ):
        from processors.live.agents import changelog_topics
        from processors.live.broker import ensure_topics
        from processors.settings import load_settings

        self.bootstrap = bootstrap
        self.prefix = f"b{uuid.uuid4().hex[:6]}."
        app_id = f"{self.prefix}{role}"
        settings = load_settings(
            kafka_broker_url=f"kafka://{bootstrap}",
            topic_prefix=self.prefix,
            conversation_partitions=PARTITIONS,
            user_partitions=PARTITIONS,
        )
        asyncio.run(ensure_topics(settings, changelog_topics(app_id)))
        self.statuses = [workdir / f"{app_id}-{i}.json" for i in range(workers)]
        self.children = [
            spawn(role, bootstrap, self.prefix, app_id, st, inactivity) for st in self.statuses
        ]
        self.inactivity = inactivity
        wait_assigned(self.statuses, PARTITIONS)
        asyncio.run(publish(bootstrap, self.prefix, ref))
        time.sleep(1.0)
        self.published = 0

    def applied(self) -> int:
        return sum(read_status(st).get("count", 0) for st in self.statuses)

    def offer(self, rate: float, seconds: float) -> tuple[float, list[int]]:
        """Publish at ``rate`` (ts = now) for ``seconds``; (input lag at the end in s, lateness)."""
        records = input_records(int(rate * seconds), seed=100)

        async def go() -> list[int]:
            stop = asyncio.Event()
            follower = asyncio.create_task(follow_lateness(self.bootstrap, self.prefix, stop))
            await publish_live(self.bootstrap, self.prefix, records, rate)
            self.published += len(records)
            lag = (self.published - self.applied()) / rate
            self.lag_s = lag
            # every batch still open closes within inactivity + typing TTL (10 s)
            await asyncio.sleep(self.inactivity + 10 + 2.5)
            stop.set()
            return await follower

        late = asyncio.run(go())
        return self.lag_s, late

    def close(self) -> None:
        stop_all(self.children)


LIVE_RATE = float(os.environ.get("BENCH_LIVE_RATE", "500"))
LIVE_INACTIVITY_S = 10  # the product default: batches group messages as in production


def main() -> None:
    from processors.live.broker import EmbeddedBroker, ensure_topics
    from processors.settings import load_settings

    workdir = Path(tempfile.mkdtemp(prefix="bench-live-"))
    now = time.time_ns() // 1_000_000
    ref = encode_all(reference_records(now))
    records = input_records(EVENTS)
    print(
        f"input: 20% messages, 50% typing (mostly refreshes), 30% presence (mostly heartbeats); "
        f"{CONVERSATIONS} conversations x 4 participants, {USERS} users, {PARTITIONS} partitions; "
        f"inactivity {INACTIVITY_S} s"
    )
    with EmbeddedBroker(log_file=workdir / "tansu.log") as broker:
        bootstrap = broker.bootstrap
        prefix = f"r{uuid.uuid4().hex[:6]}."
        settings = load_settings(kafka_broker_url=broker.url, topic_prefix=prefix)
        asyncio.run(ensure_topics(settings))
        encoded = encode_all(records, ts=now)
        asyncio.run(publish(bootstrap, prefix, encoded))
        raw = asyncio.run(raw_consume_rate(bootstrap, prefix, len(encoded)))
        print(f"raw aiokafka getmany, backlog of {EVENTS}:      {raw:10,.0f} events/s")

        def fresh() -> list[Any]:
            return encode_all(records, ts=time.time_ns() // 1_000_000)

        # Backlog: everything published at once. Events are older than the inactivity
        # period by the time they are applied, so every message closes its own batch
        # (one flush per message): the worst case for the fan-out.
        # Best of two, interleaved: other work on a 2-core machine moves single runs
        # by +-25%; the best run is the closest to what the setup can do.
        bare_runs: list[float] = []
        worker_open_runs: list[float] = []
        worker_cpu: list[float] = []
        for _ in range(BEST_OF):
            bare_runs.append(faust_rate("bare", bootstrap, workdir, ref, fresh()))
            worker_open_runs.append(
                faust_rate("worker", bootstrap, workdir, ref, fresh(), inactivity=LONG_INACTIVITY_S)
            )
            worker_cpu.append(LAST_CPU_PER_1000[0])
        bare_b = max(bare_runs)
        worker_b = faust_rate("worker", bootstrap, workdir, ref, fresh())
        print(
            f"backlog, bare Faust agent loop:          {bare_b:10,.0f} events/s"
            f"  (runs: {', '.join(f'{r:,.0f}' for r in bare_runs)})"
        )
        print(
            f"backlog, worker (1 flush per message):   {worker_b:10,.0f} events/s"
            f"  ({worker_b / bare_b:.2f} of bare)"
        )

        # State and timers only: a long inactivity period, so no batch closes while the
        # backlog is applied (the fan-out cost is the line above, per message).
        worker_s = max(worker_open_runs)
        naive_s = faust_rate(
            "naive", bootstrap, workdir, ref, fresh(), inactivity=LONG_INACTIVITY_S
        )
        two_s = faust_rate(
            "worker", bootstrap, workdir, ref, fresh(), workers=2, inactivity=LONG_INACTIVITY_S
        )
        two_cpu = LAST_CPU_PER_1000[0]
        one_cpu = worker_cpu[worker_open_runs.index(worker_s)]
        print(
            f"backlog, worker, batches open:           {worker_s:10,.0f} events/s"
            f"  ({worker_s / bare_b:.2f} of bare; runs: "
            f"{', '.join(f'{r:,.0f}' for r in worker_open_runs)})"
        )
        print(
            f"backlog, naive (Table write per event):  {naive_s:10,.0f} events/s"
            f"  ({naive_s / bare_b:.2f} of bare)"
        )
        print(
            f"backlog, two workers, batches open:      {two_s:10,.0f} events/s"
            f"  ({two_s / worker_s:.2f} x one worker)"
        )
        print(
            f"CPU seconds per 1,000 events, batches open: one worker {one_cpu:.3f}, "
            f"two workers {two_cpu:.3f} (both processes together)"
        )
        run = Run("worker", bootstrap, workdir, ref, inactivity=LIVE_INACTIVITY_S)
        try:
            lag, late = run.offer(LIVE_RATE, 20)
        finally:
            run.close()
        p99 = pct(late, 0.99)
        print(
            f"live input at {LIVE_RATE:,.0f} events/s for 20 s, ts = now, inactivity "
            f"{LIVE_INACTIVITY_S} s: input lag at end "
            f"{lag:.2f} s; flush lateness (deadline -> Flush on notify.flushes, "
            f"{len(late)} flushes): p50 {pct(late, 0.5):.0f} ms, p99 {p99:.0f} ms, "
            f"max {max(late or [0])} ms"
        )
        targets = (
            ("worker with batches open / bare Faust loop", worker_s / bare_b, ">=", 3.0),
            ("worker with a flush per message / bare", worker_b / bare_b, ">=", 2.0),
            (f"flush lateness p99 at {LIVE_RATE:,.0f} events/s (ms)", p99, "<=", 100.0),
        )
        print("targets (one run, side by side; on a shared machine single runs move by tens of %):")
        for label, value, op, target in targets:
            met = value >= target if op == ">=" else value <= target
            print(
                f"  {label:<48} {value:8.2f}  target {op} {target:g}  {'met' if met else 'MISSED'}"
            )
        print(
            f"  naive/bare {naive_s / bare_b:.2f}; worker/raw {worker_s / raw:.4f}; "
            f"two/one {two_s / worker_s:.2f}; CPU s per 1,000 events: one {one_cpu:.3f}, "
            f"two {two_cpu:.3f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--child", nargs=5, metavar=("ROLE", "BOOTSTRAP", "PREFIX", "APP_ID", "STATUS")
    )
    ns = parser.parse_args()
    if ns.child:
        child_main(*ns.child)
    else:
        main()
