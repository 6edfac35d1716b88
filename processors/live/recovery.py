"""Read the changelog tail that Faust's recovery skips on brokers with a short ListOffsets.

Tansu answers ListOffsets(LATEST) with the base offset of the *last record batch* + 1
instead of the true end offset (shared/notes/faust-on-tansu.md). Faust recovers a
table up to that number, so when the last batch of a changelog partition holds more
than one record, the records after its first are silently missing from the recovered
table (measured: 25 of 60,000 updates rolled back after a rebalance).

After Faust's recovery we therefore fetch each recovered changelog partition from the
reported end - 1 (the base of that last batch) up to the *fetch* high-water mark, which
Tansu reports correctly, and apply what we find through the store's own changelog
path (``apply_changelog_batch``). On a broker with a correct ListOffsets (Apache Kafka,
Redpanda) the fetch finds nothing new and this costs one round trip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)

TAIL_FETCH_TIMEOUT_S = 10.0


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
