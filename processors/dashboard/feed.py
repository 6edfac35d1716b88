"""What the Activity and Overview pages show: the output topics, tailed into memory.

:class:`Activity` is pure bookkeeping (no Kafka, no clock): :meth:`Activity.add` takes one
decoded record of ``notify.decisions``, ``notify.flushes`` or ``notify.outcomes``. It keeps

* the last :data:`MAX_DECISIONS` decisions (the feed) and, for the last
  :data:`MAX_FLUSHES` batches, the Flush and every decision about it (an entry's detail);
* the last :data:`MAX_OUTCOMES` delivery outcomes, by ``delivery_id``;
* per UTC hour, sends per channel and skips per reason, for the last
  :data:`HISTORY_HOURS` hours: counters only, so the Overview covers hours of traffic in
  a few kilobytes whatever the rate.

Memory is bounded by those constants, not by the traffic. Records are at-least-once:
a decision seen again (same ``decision_id``, a redelivery) is counted once, as long as
its first copy is among the last :data:`MAX_SEEN_IDS` ids.

:func:`tail` is the adapter: one aiokafka consumer without a group (it commits nothing and
never joins the workers' groups), positioned :data:`HISTORY_HOURS` back by record
timestamp, feeding :class:`Activity` and waking the live feed's subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from processors import codec
from processors import topics as t
from processors.settings import Settings

log = logging.getLogger(__name__)

MAX_DECISIONS = 5_000
MAX_FLUSHES = 2_000
MAX_OUTCOMES = 10_000
MAX_SEEN_IDS = 50_000
HISTORY_HOURS = 24
HOUR_MS = 3_600_000
TOPICS = (t.DECISIONS, t.FLUSHES, t.OUTCOMES)
#: a live subscriber that falls this far behind is dropped (its browser reconnects)
SUBSCRIBER_QUEUE = 500
TOPIC_RETRY_S = 2.0  # topics not created yet (a fresh broker): look again this often


@dataclass
class Batch:
    """One closed batch: its Flush (if seen) and every decision about it, in order."""

    flush: dict[str, Any] | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)


def _bounded_put(store: OrderedDict[str, Any], key: str, value: Any, limit: int) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > limit:
        store.popitem(last=False)


class Activity:
    """Bounded in-memory view of the output topics (see the module docstring)."""

    def __init__(self) -> None:
        self.decisions: deque[dict[str, Any]] = deque(maxlen=MAX_DECISIONS)
        self.batches: OrderedDict[str, Batch] = OrderedDict()
        self.outcomes: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.hours: dict[int, Counter[tuple[str, str]]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.subscribers: set[asyncio.Queue[dict[str, Any]]] = set()

    def _batch(self, flush_id: str) -> Batch:
        batch = self.batches.get(flush_id)
        if batch is None:
            batch = Batch()
        _bounded_put(self.batches, flush_id, batch, MAX_FLUSHES)
        return batch

    def add(self, topic: str, value: Mapping[str, Any]) -> bool:
        """Apply one decoded record; True when it is a decision not seen before."""
        record = dict(value)
        if topic == t.FLUSHES:
            self._batch(record["flush_id"]).flush = record
            return False
        if topic == t.OUTCOMES:
            _bounded_put(self.outcomes, record["delivery_id"], record, MAX_OUTCOMES)
            return False
        if topic != t.DECISIONS:
            return False
        decision_id = record["decision_id"]
        if decision_id in self._seen:
            return False
        _bounded_put(self._seen, decision_id, None, MAX_SEEN_IDS)
        self.decisions.append(record)
        self._batch(record["flush_id"]).decisions.append(record)
        hour = int(record["ts"]) // HOUR_MS
        counts = self.hours.setdefault(hour, Counter())
        if record["outcome"] == "send":
            counts[("send", record.get("channel") or "-")] += 1
        else:
            counts[("skip", record.get("reason") or "-")] += 1
        for old in [h for h in self.hours if h <= hour - HISTORY_HOURS * 2]:
            del self.hours[old]  # far behind the newest: outside any window shown
        return True

    def recent(
        self, match: Callable[[Mapping[str, Any]], bool], limit: int
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` decisions ``match`` accepts, newest first."""
        out: list[dict[str, Any]] = []
        for d in reversed(self.decisions):
            if match(d):
                out.append(d)
                if len(out) >= limit:
                    break
        return out

    def hourly(self, now_ms: int, hours: int) -> list[tuple[int, Counter[tuple[str, str]]]]:
        """(hour start in ms, counts) for the last ``hours`` UTC hours, oldest first."""
        last = now_ms // HOUR_MS
        return [
            (h * HOUR_MS, self.hours.get(h, Counter())) for h in range(last - hours + 1, last + 1)
        ]

    def publish(self, decision: dict[str, Any]) -> None:
        """Hand a new decision to every live subscriber; drop those far behind."""
        for queue in list(self.subscribers):
            try:
                queue.put_nowait(decision)
            except asyncio.QueueFull:
                # "you are dropped": the stream ends after what it holds and the
                # browser's EventSource reconnects (one queued decision makes room)
                self.subscribers.discard(queue)
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait({})

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self.subscribers.add(queue)
        try:
            yield queue
        finally:
            self.subscribers.discard(queue)


async def tail(settings: Settings, activity: Activity, now_ms: Callable[[], int]) -> None:
    """Follow the three output topics from :data:`HISTORY_HOURS` ago, forever."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from processors.live.broker import bootstrap_servers

    names = {settings.topic_prefix + name: name for name in TOPICS}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,  # Tansu holds waiting fetches (see processors/app.py)
    )
    await consumer.start()
    try:
        tps: list[TopicPartition] = []
        while True:
            await consumer._client.force_metadata_update()
            tps = [
                TopicPartition(full, p)
                for full in names
                for p in sorted(consumer.partitions_for_topic(full) or ())
            ]
            if {tp.topic for tp in tps} == set(names):
                break
            await asyncio.sleep(TOPIC_RETRY_S)  # the workers have not created them yet
        consumer.assign(tps)
        since = now_ms() - HISTORY_HOURS * HOUR_MS
        found = await consumer.offsets_for_times({tp: since for tp in tps})
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            hit = found.get(tp)
            consumer.seek(tp, hit.offset if hit is not None else ends[tp])
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=2_000)
            for tp, records in batch.items():
                topic = names[tp.topic]
                for r in records:
                    if r.value is None:
                        continue
                    try:
                        value = codec.decode(t.TOPICS[topic].record or "", r.value)
                    except codec.DecodeError:
                        continue  # not ours to dead-letter; the page shows what decodes
                    if activity.add(topic, value):
                        # also while catching up: the page drops a row it already shows
                        activity.publish(value)
    finally:
        await consumer.stop()
