"""Replay input from Kafka topics over an offset or time range (contract §9).

:func:`read_topics` reads the given input topics without joining a consumer group
(nothing is committed, nothing is produced) and yields ``(topic, key, value)`` in
event-time order, merged across partitions and topics, ready for
:class:`processors.core.engine.Engine`. Records that do not decode are reported to
``on_error`` and skipped, exactly what a worker would dead-letter.

Ranges: ``start``/``end`` are an offset (the same offset in every partition), a
timezone-aware :class:`~datetime.datetime`, or None (the beginning / the end as of the
call). ``end`` is exclusive. A time range is in *event time*: partitions are positioned
with ListOffsets by record timestamp for ``start`` (a record is stamped at or after
its event time) and records whose ``ts`` falls
outside the range are then dropped, so a late-produced old event stays out. The end is fixed when the call starts, so the replay terminates while
producers keep writing.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, NamedTuple

from processors import codec
from processors import topics as t
from processors.live.broker import bootstrap_servers
from processors.settings import Settings

Position = int | datetime | None
Record = tuple[str, str | None, dict[str, Any] | None]  # None: a tombstone


class TopicRecord(NamedTuple):
    """One decoded record with where it came from (``replay`` admits it by these)."""

    topic: str
    key: str | None
    value: dict[str, Any] | None  # None: a tombstone
    partition: int
    offset: int
    timestamp: int | None  # the Kafka record timestamp, epoch ms


FETCH_TIMEOUT_MS = 500
# Compacted topics where a null value deletes (the engine applies it).
DELETABLE = (t.USERS, t.CONVERSATIONS, t.ROLES, t.SETTINGS)
STALL_LIMIT = 20  # empty fetches in a row before a partition is declared exhausted


class ReplayRangeError(ValueError):
    """A start/end that cannot be used (naive datetime, negative offset)."""


def _check(position: Position, name: str) -> None:
    if isinstance(position, datetime) and position.tzinfo is None:
        raise ReplayRangeError(f"{name} time must be timezone-aware (e.g. 2026-01-01T00:00Z)")
    if isinstance(position, int) and not isinstance(position, bool) and position < 0:
        raise ReplayRangeError(f"{name} offset must not be negative")


def read_topics(
    settings: Settings,
    topics: Iterable[str],
    start: Position = None,
    end: Position = None,
    *,
    on_error: Callable[[str, int, int, str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    input_only: bool = True,
) -> Iterator[Record]:
    """Yield the input records of ``topics`` in ``[start, end)``, in event-time order.

    ``topics`` are unprefixed names (``chat.messages``); the settings' topic prefix is
    applied. ``on_error(topic, partition, offset, reason)`` hears of undecodable
    records; ``progress(done, total)`` of records read so far. ``input_only=False``
    allows output topics too (``explain`` reads ``notify.decisions``).
    """
    for record in read_topic_records(
        settings,
        topics,
        start,
        end,
        on_error=on_error,
        progress=progress,
        input_only=input_only,
    ):
        yield record.topic, record.key, record.value


def read_topic_records(
    settings: Settings,
    topics: Iterable[str],
    start: Position = None,
    end: Position = None,
    *,
    on_error: Callable[[str, int, int, str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    input_only: bool = True,
) -> Iterator[TopicRecord]:
    """:func:`read_topics` with each record's partition, offset and Kafka timestamp."""
    _check(start, "start")
    _check(end, "end")
    names = list(topics)
    allowed = t.INPUT_TOPICS if input_only else tuple(n for n, s in t.TOPICS.items() if s.record)
    for name in names:
        if name not in allowed:
            raise ReplayRangeError(f"{name!r} is not an input topic ({', '.join(t.INPUT_TOPICS)})")
    from processors import registry

    registry.install(settings)  # Confluent-framed records, when SCHEMA_REGISTRY_URL is set
    per_partition = asyncio.run(_fetch(settings, names, start, end, on_error, progress))
    # Each partition is in offset order, which is event-time order for a well-behaved
    # producer; merging by (ts, topic order) interleaves topics the way replay expects.
    order = {name: i for i, name in enumerate(names)}

    def keyed(records: list[TopicRecord]) -> Iterator[tuple[int, int, int, TopicRecord]]:
        ts = 0  # a tombstone has no time: it keeps its place after the record before it
        for seq, record in enumerate(records):
            if record.value is not None:
                ts = int(record.value.get("ts") or 0)
            yield ts, order[record.topic], seq, record

    for _, _, _, record in heapq.merge(*(keyed(r) for r in per_partition)):
        yield record


async def _fetch(
    settings: Settings,
    names: list[str],
    start: Position,
    end: Position,
    on_error: Callable[[str, int, int, str], None] | None,
    progress: Callable[[int, int], None] | None,
) -> list[list[TopicRecord]]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    prefix = settings.topic_prefix
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps: list[TopicPartition] = []
        for name in names:
            parts = consumer.partitions_for_topic(prefix + name)
            if parts is None:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(prefix + name) or set()
            tps.extend(TopicPartition(prefix + name, p) for p in sorted(parts))
        if not tps:
            return []
        consumer.assign(tps)
        first = await consumer.beginning_offsets(tps)
        last = await consumer.end_offsets(tps)
        begin = await _resolve(consumer, tps, start, first, last)
        # A time ``end`` reads to the current end and filters on ``ts``: a record stamped
        # by the broker after ``end`` can still carry an event time before it.
        if end is None or isinstance(end, datetime):
            stop = dict(last)
        else:
            stop = await _resolve(consumer, tps, end, first, last)
        total = sum(max(0, stop[tp] - begin[tp]) for tp in tps)
        out: dict[TopicPartition, list[TopicRecord]] = {tp: [] for tp in tps}
        pending = {tp for tp in tps if begin[tp] < stop[tp]}
        for tp in pending:
            consumer.seek(tp, begin[tp])
        done = 0
        stalls = 0
        lo_ms = _ms(start)
        hi_ms = _ms(end)
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=FETCH_TIMEOUT_MS)
            if not any(batch.values()):
                stalls += 1
                # Tansu's ListOffsets can under-report the end (see recovery.py); a
                # partition whose position reached the fetch high-water mark is done.
                for tp in list(pending):
                    high = consumer.highwater(tp)
                    if high is not None and await consumer.position(tp) >= high:
                        pending.discard(tp)
                if stalls >= STALL_LIMIT:
                    break
                continue
            stalls = 0
            for tp, records in batch.items():
                name = tp.topic[len(prefix) :]
                record_name = t.TOPICS[name].record or ""
                for r in records:
                    if r.offset >= stop[tp]:
                        pending.discard(tp)
                        break
                    done += 1
                    if r.value is None and r.key is not None and name in DELETABLE:
                        key = r.key.decode("utf-8", "replace")
                        stamp = r.timestamp if r.timestamp is not None and r.timestamp > 0 else None
                        out[tp].append(TopicRecord(name, key, None, tp.partition, r.offset, stamp))
                        continue  # a tombstone: deletes the user or conversation
                    try:
                        value = codec.decode(record_name, r.value or b"")
                    except codec.DecodeError as exc:
                        if on_error is not None:
                            on_error(name, tp.partition, r.offset, str(exc))
                        continue
                    ts = int(value.get("ts") or 0)
                    if (lo_ms is not None and ts < lo_ms) or (hi_ms is not None and ts >= hi_ms):
                        continue
                    key = None if r.key is None else r.key.decode("utf-8", "replace")
                    stamp = r.timestamp if r.timestamp is not None and r.timestamp > 0 else None
                    out[tp].append(TopicRecord(name, key, value, tp.partition, r.offset, stamp))
                if records and records[-1].offset + 1 >= stop[tp]:
                    pending.discard(tp)
            if progress is not None:
                progress(done, total)
        return [out[tp] for tp in tps]
    finally:
        await consumer.stop()


def _ms(position: Position) -> int | None:
    return int(position.timestamp() * 1000) if isinstance(position, datetime) else None


async def _resolve(
    consumer: Any,
    tps: list[Any],
    position: Position,
    first: dict[Any, int],
    last: dict[Any, int],
) -> dict[Any, int]:
    if position is None:
        return dict(first)
    if isinstance(position, datetime):
        ms = int(position.timestamp() * 1000)
        found = await consumer.offsets_for_times({tp: ms for tp in tps})
        return {tp: (found[tp].offset if found.get(tp) else last[tp]) for tp in tps}
    return {tp: min(max(position, first[tp]), last[tp]) for tp in tps}
