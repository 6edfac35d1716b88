"""The faust-streaming internals processors/live/fastpath.py relies on are still there.

The fast path replaces ``Consumer._drain_messages`` and drains an agent channel's queue
itself, keeping Faust's rebalance rules by reading Faust's own flags. If faust-streaming
changes any of it, these tests fail by name; read the changed Faust source, port the
change into fastpath.py (or drop the fast path), then update the digests here.
"""

from __future__ import annotations

import contextvars
import hashlib
import inspect
import re
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka.producer.message_accumulator import BatchBuilder, MessageBatch
from aiokafka.producer.producer import AIOKafkaProducer
from faust.streams import Stream
from faust.transport import consumer as faust_consumer
from faust.transport.conductor import Conductor, ConductorCompiler
from faust.transport.consumer import Consumer, Fetcher
from faust.transport.producer import ProducerBuffer
from faust.types.tuples import Message
from mode.utils.queues import FlowControlQueue, ThrowableQueue

from processors.live import fastpath

ROOT = Path(__file__).resolve().parents[2]

#: sha256 of the source of each Faust function the fast path copies or depends on.
SOURCES: dict[str, tuple[Any, str]] = {
    # copied, with the hand-over changed (fastpath.drain_messages)
    "Consumer._drain_messages": (
        fastpath._ORIGINAL_DRAIN or Consumer._drain_messages,
        "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417",
    ),
    # copied (fastpath.fetched), the end offset tracked once per partition per fetch;
    # checks flow_active and the generation before each record it yields
    "Consumer.getmany": (
        Consumer.getmany,
        "4b168d84882a70d6e3e2f9804430a63b92f8fd117d3187cbb4aeb54305bda34e",
    ),
    # calls consumer._drain_messages(fetcher): where the replacement is entered
    "Fetcher._fetcher": (
        Fetcher._fetcher.fun,
        "68f894f0b577d8100419d6288088177609415aec9fc0ae82aec70b961a2e59b1",
    ),
    # the callback: flow control, producer ebb, decode, queue put (where it may block)
    "ConductorCompiler.build": (
        ConductorCompiler.build,
        "837cf521368c1ee4b22c235a2b137f665eca03d0e3e01b5ddedb65232ee73bf2",
    ),
    # the per-event rules the batch loop keeps (skip on flow/generation, track, ack)
    "Stream._py_aiter": (
        Stream._py_aiter,
        "3a48ee257a65435b482d51edb74f2993a67867949b1ef89b49fea893769e0614",
    ),
    # the direct hand-over mirrors the conductor's callback for one raw channel:
    # which channels subscribe to a topic ...
    "Conductor._update_indices": (
        Conductor._update_indices,
        "619b3247b96ac7d508b9b571e30fdaceb00378b77c79e4aee12a5d8ee3f41d34",
    ),
    # ... when the conductor would wait for the producer buffer ...
    "ProducerBuffer.size": (
        ProducerBuffer.size.fget,
        "b543a978fdece62e7d7c434eea6e842995d67cc1d3288434f5f26ad72c10a779",
    ),
    "ProducerBuffer.wait_until_ebb": (
        ProducerBuffer.wait_until_ebb,
        "758dd5744044071bbc79609fa8e5bfc339818f186bc19b723de2c4c877412e00",
    ),
    # ... and how it puts onto the queue (pressure stops fetching the partition)
    "FlowControlQueue.put_nowait_enhanced": (
        FlowControlQueue.put_nowait_enhanced,
        "f1839f43dda3d2cf840858097e7d83750ecd8fafb8ff8c742769581e6b23aec4",
    ),
    # the Outbox: aiokafka's own partitioner, batch API, and batch futures
    "AIOKafkaProducer._partition": (
        AIOKafkaProducer._partition,
        "e45fa9c539d431d1a8af1efb94604c35e9108132a28f6a1e5b03977a0c67beaa",
    ),
    "AIOKafkaProducer.send_batch": (
        AIOKafkaProducer.send_batch,
        "bf42b0f0c5c0646db4cc15b54a81103fe948473a2969149bd9277fe2ca1b5235",
    ),
    "AIOKafkaProducer.create_batch": (
        AIOKafkaProducer.create_batch,
        "c4efda4bb7a09741e168138a54cdeeef2b87d5a99215ffcdef307037514c5359",
    ),
    "BatchBuilder.append": (
        BatchBuilder.append,
        "657d76f55157d9cac2981d5e76453c688425dbe14f271017a8904df4d5543a76",
    ),
    # a batch's future resolves to RecordMetadata whose offset is the base offset
    "MessageBatch.done": (
        MessageBatch.done,
        "2d765e5c2dc8638ddf995f5f35484a7e60830c1ec3e0e9018e6e23438aeae20d",
    ),
    # sets suspend_flow and clears flow_active together
    "Consumer.stop_flow": (
        Consumer.stop_flow,
        "cf7e875a2b0d40e8e45df69720709199c47b710c983cf79371cce3a58888a6ac",
    ),
}


def test_installed_faust_and_aiokafka_are_the_pinned_versions() -> None:
    import aiokafka

    assert faust.__version__ == fastpath.FAUST_VERSION
    assert aiokafka.__version__ == fastpath.AIOKAFKA_VERSION
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(rf'"faust-streaming=={re.escape(fastpath.FAUST_VERSION)}"', pyproject)
    assert re.search(rf'"aiokafka=={re.escape(fastpath.AIOKAFKA_VERSION)}"', pyproject)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_faust_source_relied_on_is_unchanged(name: str) -> None:
    function, digest = SOURCES[name]
    source = inspect.getsource(function)
    assert hashlib.sha256(source.encode()).hexdigest() == digest, (
        f"faust-streaming changed {name}; review processors/live/fastpath.py against it"
    )


def test_signatures_relied_on() -> None:
    drain = fastpath._ORIGINAL_DRAIN or Consumer._drain_messages
    assert list(inspect.signature(drain).parameters) == ["self", "fetcher"]
    assert list(inspect.signature(Consumer.getmany).parameters) == ["self", "timeout"]
    assert list(inspect.signature(Message.ack).parameters) == ["self", "consumer", "n"]
    assert inspect.iscoroutinefunction(Consumer._add_gap)
    assert inspect.iscoroutinefunction(Consumer.commit)


def test_attributes_relied_on() -> None:
    # consumer state read or written by fastpath.drain_messages / consume_in_batches
    init = inspect.getsource(Consumer.__init__)
    for attribute in (
        "self.callback",
        "self._read_offset",
        "self._commit_every",
        "self.suspend_flow",
        "self._unacked_messages",
    ):
        assert attribute in init, attribute
    assert "_n_acked" in Consumer.__annotations__ or hasattr(Consumer, "_n_acked")
    assert hasattr(Consumer, "consumer_stopped_errors")
    assert isinstance(faust_consumer.CONSUMER_FETCHING, str)
    # the current-event context variable Tables read (stores find their partition)
    from faust import streams

    assert isinstance(streams._current_event, contextvars.ContextVar)
    assert streams.current_event.__module__ == "faust.streams"
    # messages carry the generation they were fetched in, and tracking flags
    for slot in ("generation_id", "tracked", "acked", "refcount"):
        assert slot in Message.__slots__, slot
    # the channel queue drained in batches
    for name in ("get_nowait", "empty", "get"):
        assert callable(getattr(ThrowableQueue, name)), name
    assert "_errors" in inspect.getsource(ThrowableQueue.__init__)
    # the app-level flags the rebalance rule reads
    from faust.transport.drivers import aiokafka as driver
    from faust.types.app import AppT

    assert AppT.consumer_generation_id == 0  # set at each assignment by the driver ...
    driver_source = inspect.getsource(driver)
    assert "app.consumer_generation_id = generation" in driver_source
    assert "generation_id=self.app.consumer_generation_id" in driver_source  # ... per message
    from mode.utils.queues import FlowControlEvent

    assert callable(FlowControlEvent.is_active)
    # what the direct hand-over calls
    assert "self._topic_name_index = defaultdict(set)" in inspect.getsource(Conductor.__init__)
    assert list(inspect.signature(faust.App.create_event).parameters) == [
        "self",
        "key",
        "value",
        "headers",
        "message",
    ]
    # the event is built as App.create_event builds it
    assert "self.conf.Event(self, key, value, headers, message)" in inspect.getsource(
        faust.App.create_event
    )
    assert ProducerBuffer.max_messages == 100
    # the Outbox reaches aiokafka's producer through Faust's, and its metadata wait
    from aiokafka.client import AIOKafkaClient
    from faust.transport.drivers.aiokafka import Producer as FaustProducer

    assert callable(FaustProducer._ensure_producer)
    assert inspect.iscoroutinefunction(AIOKafkaClient._wait_on_metadata)
    assert "self.pending" in inspect.getsource(ProducerBuffer)
    assert callable(Consumer.on_buffer_full) and callable(Consumer.on_buffer_drop)
    # what fastpath.fetched (the copy of getmany) calls
    assert inspect.iscoroutinefunction(Consumer._wait_next_records)
    assert inspect.iscoroutinefunction(Consumer.perform_seek)
    assert callable(Consumer._to_message) and callable(Consumer.highwater)
    assert "self._buffered_partitions" in inspect.getsource(Consumer.__init__)
    from faust.sensors.monitor import Monitor

    assert list(inspect.signature(Monitor.track_tp_end_offset).parameters) == [
        "self",
        "tp",
        "offset",
    ]
    from faust.sensors.base import SensorDelegate

    assert callable(SensorDelegate.on_topic_buffer_full)


def test_install_is_per_app_and_keeps_fausts_loop_for_others() -> None:
    app = faust.App("fastpath-contract-a", broker="kafka://localhost:1")
    other = faust.App("fastpath-contract-b", broker="kafka://localhost:1")
    assert fastpath.install(app)
    assert fastpath.uses_fast_path(app) and not fastpath.uses_fast_path(other)
    assert Consumer._drain_messages.__qualname__.endswith("_drain_messages")
    assert fastpath._ORIGINAL_DRAIN is not None
    assert fastpath._ORIGINAL_DRAIN.__module__ == "faust.transport.consumer"
