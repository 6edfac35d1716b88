"""The fast path's own pieces without a broker: state writes coalesced, fetches read.

``Outbox.set_state`` keeps one changelog record per key until the outbox is sent
(encoded once, at the send); ``fetched`` is Faust's ``getmany`` with the end offset
tracked once per partition per fetch and Faust's per-record stops kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from processors.live import fastpath


@dataclass
class FakeBatch:
    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)

    def append(self, *, key: bytes | None, value: bytes, timestamp: None) -> object:
        self.records.append((key, value))
        return object()


@dataclass
class Sent:
    topic: str
    partition: int
    records: list[tuple[bytes | None, bytes]]


class FakeClient:
    async def _wait_on_metadata(self, topic: str) -> None:
        return None


class FakeAio:
    """What the Outbox uses of aiokafka's producer."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.client = FakeClient()

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    def _partition(self, topic: str, *args: Any) -> int:
        return 0

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        self.sent.append(Sent(topic, partition, batch.records))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(type("Metadata", (), {"offset": 100})())
        return fut


class FakeApp:
    def __init__(self, aio: FakeAio) -> None:
        self.producer = type("Producer", (), {"_ensure_producer": lambda _: aio})()


def counting(encoded: list[Any]) -> Callable[[Any], bytes]:
    def encode(state: Any) -> bytes:
        encoded.append(state)
        return repr(state).encode()

    return encode


def test_a_key_written_twice_before_the_send_is_sent_once_with_its_last_state() -> None:
    aio = FakeAio()
    outbox = fastpath.Outbox(FakeApp(aio))  # type: ignore[arg-type]
    encoded: list[Any] = []
    encode = counting(encoded)
    offsets: list[int] = []
    outbox.set_state("cl", 1, b"c1", {"n": 1}, encode)
    outbox.set_state("cl", 1, b"c2", {"n": 1}, encode)
    outbox.add("out", b"k", b"v", 1)
    outbox.set_state("cl", 1, b"c1", {"n": 2}, encode)
    outbox.set_state("cl", 1, b"c1", {"n": 3}, encode, offsets.append)
    outbox.set_state("cl", 2, b"c1", {"n": 1}, encode)  # another partition: its own
    assert len(outbox) == 4
    assert encoded == []  # nothing encoded before the send

    asyncio.run(outbox.send())

    sent = {(s.topic, s.partition): s.records for s in aio.sent}
    # c1 keeps its first place, with its last state; c2 and the output are untouched
    assert sent[("cl", 1)] == [(b"c1", b"{'n': 3}"), (b"c2", b"{'n': 1}")]
    assert sent[("out", 1)] == [(b"k", b"v")]
    assert sent[("cl", 2)] == [(b"c1", b"{'n': 1}")]
    assert sorted(map(repr, encoded)) == sorted(["{'n': 3}", "{'n': 1}", "{'n': 1}"])
    assert offsets == [100]  # the callback of the record that was sent
    assert len(outbox) == 0


def test_a_key_written_after_a_send_is_a_new_record() -> None:
    aio = FakeAio()
    outbox = fastpath.Outbox(FakeApp(aio))  # type: ignore[arg-type]
    encode = counting([])

    async def go() -> None:
        outbox.set_state("cl", 0, b"c1", 1, encode)
        await outbox.send()
        outbox.set_state("cl", 0, b"c1", 2, encode)
        await outbox.send()

    asyncio.run(go())
    assert [s.records for s in aio.sent] == [[(b"c1", b"1")], [(b"c1", b"2")]]


# -- fetched: Faust's getmany, end offsets once per partition per fetch -------------------


class FakeMonitor:
    def __init__(self) -> None:
        self.tracked: list[tuple[str, int]] = []

    def track_tp_end_offset(self, tp: str, offset: int) -> None:
        self.tracked.append((tp, offset))


class FakeConsumerApp:
    def __init__(self) -> None:
        self.consumer_generation_id = 1
        self.monitor = FakeMonitor()


class RoundRobin:
    def iterate(self, records: dict[str, list[int]]) -> Any:
        iterators = {tp: iter(rs) for tp, rs in records.items()}
        while iterators:
            for tp, it in list(iterators.items()):
                try:
                    yield tp, next(it)
                except StopIteration:
                    del iterators[tp]


class FakeConsumer:
    def __init__(self, records: dict[str, list[int]], active: set[str]) -> None:
        self.app = FakeConsumerApp()
        self.records = records
        self.active = active
        self.flow_active = True
        self.should_stop = False
        self._buffered_partitions: set[str] = set()
        self.scheduler = RoundRobin()
        self.seeks = 0
        self.log = type("Log", (), {"dev": lambda *a: None, "warning": lambda *a: None})()

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        return self.records, self.active

    async def perform_seek(self) -> None:
        self.seeks += 1

    def highwater(self, tp: str) -> int:
        return {"a": 10, "b": 20, "c": 30}[tp]

    def _to_message(self, tp: str, record: int) -> tuple[str, int]:
        return (tp, record)


def fetch(consumer: FakeConsumer) -> Any:
    return asyncio.run(fastpath.fetched(consumer, timeout=1.0))


def test_fetched_yields_in_fausts_order_and_tracks_each_end_offset_once() -> None:
    consumer = FakeConsumer({"a": [1, 2, 3], "b": [4, 5], "c": [6]}, active={"a", "b"})
    records = list(fetch(consumer))
    assert records == [("a", ("a", 1)), ("b", ("b", 4)), ("a", ("a", 2))] + [
        ("b", ("b", 5)),
        ("a", ("a", 3)),
    ]  # c is not an active partition: skipped, as Faust does
    # before: one highwater read and Prometheus gauge update per record (5 here)
    assert consumer.app.monitor.tracked == [("a", 10), ("b", 20)]


def test_fetched_stops_when_flow_stops_or_the_generation_changes() -> None:
    consumer = FakeConsumer({"a": [1, 2, 3]}, active={"a"})
    records = fetch(consumer)
    assert next(records) == ("a", ("a", 1))
    consumer.flow_active = False  # a rebalance began while the fetch was handed over
    assert list(records) == []

    consumer = FakeConsumer({"a": [1, 2, 3]}, active={"a"})
    records = fetch(consumer)
    assert next(records) == ("a", ("a", 1))
    consumer.app.consumer_generation_id = 2
    assert list(records) == []


def test_fetched_seeks_back_when_flow_is_suspended() -> None:
    consumer = FakeConsumer({"a": [1]}, active={"a"})
    consumer.flow_active = False
    assert list(fetch(consumer)) == []
    assert consumer.seeks == 1
