"""Read the changelog tail that Faust's recovery skips on brokers with a short ListOffsets.

Tansu answers ListOffsets(LATEST) with the base offset of the *last record batch* + 1
instead of the true end offset (docs/live-worker.md). Faust recovers a
table up to that number, so when the last batch of a changelog partition holds more
than one record, the records after its first are silently missing from the recovered
table (measured: 25 of 60,000 updates rolled back after a rebalance).

After Faust's recovery we therefore fetch each recovered changelog partition from the
reported end - 1 (the base of that last batch) up to the *fetch* high-water mark, which
Tansu reports correctly, and apply what we find through the store's own changelog
path (``apply_changelog_batch``). On a broker with a correct ListOffsets (Apache Kafka,
Redpanda) the fetch finds nothing new and this costs one round trip.

Before Faust's recovery trusts a persisted (RocksDB) offset, :func:`install_recovery_guard`
checks it against the changelog partition's true end, the fetch high-water mark:

* persisted offset beyond the true end: the local store belongs to another life of the
  topic (broker reset, topics re-created, memory-only broker restarted). The partition's
  local store is emptied and rebuilt from the changelog, said in one log line. Faust
  would stop with ``ConsistencyError: persisted offset ... higher than the last offset``.
* persisted offset only beyond Tansu's short ListOffsets answer (a plain SIGKILL on the
  same broker, the last changelog batch holding several records): Faust's highwater is
  raised to the true end, so its consistency check passes and recovery reads to the end.

Every use of Faust internals (``Recovery._build_highwaters`` and its offset counters,
the RocksDB store's partition databases) is in this module, verified on faust-streaming
:data:`VERIFIED_FAUST`.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)

TAIL_FETCH_TIMEOUT_S = 10.0
END_FETCH_TIMEOUT_S = 10.0
#: faust-streaming versions whose recovery this module was checked against.
VERIFIED_FAUST = ("0.15.3",)
_GUARD_MARK = "_chat_notifier_recovery_guard"


@dataclass(slots=True)
class _Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def tp(self) -> Any:
        from faust.types import TP

        return TP(self.topic, self.partition)


@dataclass(slots=True)
class _ChangelogEvent:
    """The shape ``Store.apply_changelog_batch`` reads: decoded key/value + raw message."""

    key: Any
    value: Any
    message: _Message


async def repair_changelog_tails(
    bootstrap: str, tables: Iterable[tuple[faust.types.tables.CollectionT, set[int]]]
) -> int:
    """Apply changelog records past the broker's reported end; return how many.

    ``tables``: each table with the changelog partitions it recovered.
    """
    wanted: dict[TopicPartition, faust.types.tables.CollectionT] = {}
    for table, partitions in tables:
        topic = table.changelog_topic.get_topic_name()
        for p in partitions:
            wanted[TopicPartition(topic, p)] = table
    if not wanted:
        return 0
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    applied = 0
    try:
        tps = list(wanted)
        consumer.assign(tps)
        reported = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if reported[tp] > 0}
        for tp in pending:
            consumer.seek(tp, reported[tp] - 1)
        deadline = time.monotonic() + TAIL_FETCH_TIMEOUT_S
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=200)
            for tp, records in batch.items():
                table = wanted[tp]
                events = []
                for r in records:
                    if r.offset < reported[tp]:
                        continue  # already recovered by Faust
                    key = _loads(table, r.key, True)
                    value = None if r.value is None else _loads(table, r.value, False)
                    msg = _Message(tp.topic, tp.partition, r.offset, r.key, r.value)
                    events.append(_ChangelogEvent(key, value, msg))
                if events:
                    table.apply_changelog_batch(events)  # type: ignore[arg-type]
                    applied += len(events)
            for tp in list(pending):
                high = consumer.highwater(tp)
                if high is not None and await consumer.position(tp) >= high:
                    pending.discard(tp)
        if pending:
            log.warning("changelog tail not fully read for %s", sorted(map(str, pending)))
    finally:
        await consumer.stop()
    if applied:
        log.warning(
            "recovered %d changelog records past the broker's ListOffsets end "
            "(broker reports the last batch's base offset + 1)",
            applied,
        )
    return applied


def _loads(table: Any, data: bytes | None, is_key: bool) -> Any:
    if data is None:
        return None
    topic = table.changelog_topic
    if is_key:
        return topic.schema.loads_key(table.app, _FakeMessage(data, None))
    return topic.schema.loads_value(table.app, _FakeMessage(None, data))


@dataclass(slots=True)
class _FakeMessage:
    key: bytes | None
    value: bytes | None
    headers: Any = None


# --------------------------------------------------------------- recovery guard


def install_recovery_guard() -> None:
    """Check persisted offsets against the changelog's true end before Faust's recovery.

    Wraps ``faust.tables.recovery.Recovery._build_highwaters`` (called for active and for
    standby changelog partitions, before the ``ConsistencyError`` check in
    ``_restart_recovery``). Idempotent.
    """
    import faust as faust_pkg
    from faust.tables.recovery import Recovery

    original = Recovery._build_highwaters
    if getattr(original, _GUARD_MARK, False):
        return
    params = list(inspect.signature(original).parameters)
    if params != ["self", "consumer", "tps", "destination", "title"]:
        log.warning(
            "faust %s: Recovery._build_highwaters%s is not the verified shape; restarts "
            "after a broker reset may stop with ConsistencyError",
            faust_pkg.__version__,
            params,
        )
        return
    if faust_pkg.__version__ not in VERIFIED_FAUST:
        log.warning(
            "recovery guard verified on faust-streaming %s, running on %s",
            ", ".join(VERIFIED_FAUST),
            faust_pkg.__version__,
        )

    async def build_highwaters(
        self: Any, consumer: Any, tps: Any, destination: Any, title: str
    ) -> None:
        await original(self, consumer, tps, destination, title)
        if tps:
            await _check_persisted_offsets(self, consumer, set(tps), destination, title)

    setattr(build_highwaters, _GUARD_MARK, True)
    Recovery._build_highwaters = build_highwaters  # type: ignore[method-assign]


async def _check_persisted_offsets(
    recovery: Any, consumer: Any, tps: set[Any], highwaters: Any, title: str
) -> None:
    """Raise highwaters to the true ends; empty stores persisted beyond them."""
    standby = highwaters is recovery.standby_highwaters
    offsets = recovery.standby_offsets if standby else recovery.active_offsets
    bootstrap = ",".join(f"{u.host}:{u.port or 9092}" for u in recovery.app.conf.broker)
    try:
        starts, ends = await changelog_bounds(bootstrap, tps)
    except Exception:  # noqa: BLE001 - Faust's own numbers then stand, as before
        log.exception("could not read changelog ends; recovery uses the broker's ListOffsets")
        return
    rebuilt: dict[str, list[int]] = {}
    for tp in tps:
        end = ends.get((tp.topic, tp.partition))
        if end is None:
            continue
        # Faust's highwater is the offset of the last record (end - 1; -1 when empty)
        if highwaters.get(tp) is None or highwaters[tp] < end - 1:
            highwaters[tp] = end - 1
        persisted = offsets.get(tp)
        if persisted is None or persisted < end:
            continue
        table = recovery.tp_to_table[tp]
        _empty_partition_store(table.data, tp.partition)
        start = starts.get((tp.topic, tp.partition), 0)
        offsets[tp] = start - 1 if start > 0 else -1
        rebuilt.setdefault(tp.topic, []).append(tp.partition)
    if not rebuilt:
        return
    if standby:  # Faust already sought standbys to the old offsets
        moved = {tp for tp in tps if tp.partition in rebuilt.get(tp.topic, ())}
        await recovery._seek_offsets(consumer, moved, offsets, title)
    log.warning(
        "rebuilding local table state from the changelog (persisted offsets beyond the "
        "changelog's end: broker reset or topics re-created): %s",
        "; ".join(f"{topic} partitions {sorted(ps)}" for topic, ps in sorted(rebuilt.items())),
    )


async def changelog_bounds(
    bootstrap: str, tps: Iterable[Any]
) -> tuple[Mapping[tuple[str, int], int], Mapping[tuple[str, int], int]]:
    """(start offsets, true end offsets) of ``tps``, keyed by (topic, partition).

    The end is the high-water mark of a fetch response, which Tansu reports correctly,
    unlike its ListOffsets(LATEST) answer (the last batch's base offset + 1).
    """
    wanted = [TopicPartition(tp.topic, tp.partition) for tp in tps]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=100,  # Tansu holds a waiting fetch on an empty partition
    )
    await consumer.start()
    try:
        consumer.assign(wanted)
        starts = await consumer.beginning_offsets(wanted)
        listed = await consumer.end_offsets(wanted)
        for tp in wanted:
            # fetch from the last batch's base: a fetch answers with the high-water mark
            consumer.seek(tp, max(starts[tp], listed[tp] - 1))
        ends: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + END_FETCH_TIMEOUT_S
        while len(ends) < len(wanted) and time.monotonic() < deadline:
            await consumer.getmany(*wanted, timeout_ms=200)
            for tp in wanted:
                high = consumer.highwater(tp)
                if high is not None:
                    ends[(tp.topic, tp.partition)] = max(high, listed[tp])
        return {(tp.topic, tp.partition): starts[tp] for tp in wanted}, ends
    finally:
        await consumer.stop()


def _empty_partition_store(store: Any, partition: int) -> None:
    """Delete every key (and the persisted offset) of one partition's RocksDB database."""
    dbs = getattr(store, "_dbs", None)
    if dbs is None:  # memory store: persists no offsets, nothing to empty
        return
    db = store._db_for_partition(partition)
    for key in list(db.keys()):
        db.delete(key)
    store._key_index.clear()
