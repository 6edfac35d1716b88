"""The worker's batch hot path inside Faust: every Faust-internal touch point, in one place.

Faust pays for each record twice before an agent sees it, and once more after:

1. ``Consumer._drain_messages`` hands each fetched record to the conductor through
   ``self.wait_first(callback(message), self.suspend_flow.wait())``: three new tasks
   and an ``asyncio.wait`` per record, only so that a callback blocked by a rebalance
   can be abandoned;
2. the agent's ``Stream`` iterator awaits ``sleep(0)`` per event: one full event-loop
   turn per record;
3. acks, sensors and the current-event context are set per event in the iterator.

What this module does instead (faust-streaming 0.15.3, pinned in pyproject.toml; the
contract test ``tests/live/test_fastpath_contract.py`` fails if any internal below
changes):

* :func:`drain_messages` replaces ``Consumer._drain_messages`` for apps that opted in
  (:func:`install`; the senders and the benchmark's bare loop keep Faust's own). For a
  record of a topic whose only subscriber is a fast agent's channel it does what the
  conductor's callback does (an Event with the message's raw key and value, onto the
  channel's queue with the conductor's pressure callbacks) when nothing would make the
  conductor wait: flow control active, the Faust producer buffer within bounds, the
  queue not full. Otherwise it awaits the conductor's callback directly. Either way
  there is no task per record. What ``wait_first`` guaranteed is kept by checks: a
  record is handed over only while the consumer's flow is active (the suspend flag is
  read per record), and its read offset is recorded only if the flow is still active
  and the consumer generation unchanged once the hand-over returns. A callback that
  had to wait through a rebalance (flow control, a full queue) so cannot move the read
  offset past records the new generation has to re-read (that would skip them), and
  the agent drops the stale event (below).
* :func:`fetched` is ``Consumer.getmany`` with the end offset (the lag gauge, a
  Prometheus ``labels()`` per call) tracked once per partition per fetch instead of
  per record.
* :class:`Outbox` collects what an agent's batch (or a fan-out) produces and hands it
  to aiokafka's producer with one ``send_batch`` per partition, partitioned by the
  producer's own ``_partition`` (aiokafka 0.14.0, pinned too). Table states written
  while a batch is applied keep one record per key, the last, encoded at the send
  (:meth:`Outbox.set_state`).
* :func:`consume_in_batches` is the agents' loop: it takes what the channel's queue
  holds (everything the conductor delivered from the last fetch, up to
  ``MAX_BATCH_EVENTS``) without yielding per event, applies the events in order, and
  acks them together. Per event it keeps Faust's own rebalance rule (as ``Stream``
  does): an event fetched in an earlier consumer generation, or read while flow control
  is suspended for a rebalance, is not applied and not acked, so nothing is applied for
  a partition this worker no longer owns and its new owner re-reads it from the
  committed offset; the batch's first applied event is tracked (``consumer.unacked``)
  before it is applied and the batch is acked together, so a revocation waits for the
  whole batch (``wait_empty``) before committing. Outputs produced while a batch is
  applied go to an :class:`Outbox` and are handed to the producer, one ``send_batch``
  per partition, before the batch is acked. Tables keep working: the current event is
  set for each event (Faust's context variable), which is how a Table write finds its
  partition.

Nothing else of Faust is replaced: group membership, assignment, offsets and commits,
Tables with their changelogs and recovery, the web server and the worker command are
Faust's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import faust
from faust.types import TP

from processors.live.metrics import EVENTS_IN

log = logging.getLogger(__name__)

#: The faust-streaming and aiokafka versions whose internals this module relies on.
FAUST_VERSION = "0.15.3"
AIOKAFKA_VERSION = "0.14.0"

#: At most this many events are applied between two event-loop turns (a fetch is
#: usually far fewer; the bound keeps timers and acks flowing on a deep backlog).
MAX_BATCH_EVENTS = 2_000
#: The drain loop yields to the event loop after this many records (Faust: 100), so
#: that the agents get large batches while the fetcher keeps fetching.
DRAIN_YIELD_EVERY = 1_000

_FAST_APPS: weakref.WeakSet[Any] = weakref.WeakSet()
#: Channels drained by consume_in_batches (the drain loop hands their records over).
_FAST_CHANNELS: weakref.WeakSet[Any] = weakref.WeakSet()
_INSTALLED = False
_ORIGINAL_DRAIN: Any = None


class FastPathUnavailable(RuntimeError):
    """The installed faust-streaming is not the version this fast path was written for."""


def faust_version() -> str:
    return str(faust.__version__)


def install(app: faust.App) -> bool:
    """Use the batch drain loop for ``app``'s consumer; False (Faust's own) if the
    installed faust-streaming is not :data:`FAUST_VERSION`."""
    global _INSTALLED, _ORIGINAL_DRAIN
    import aiokafka

    if faust_version() != FAUST_VERSION or aiokafka.__version__ != AIOKAFKA_VERSION:
        log.warning(
            "faust-streaming %s / aiokafka %s are installed, the fast path was written "
            "for %s / %s: using Faust's per-record loop",
            faust_version(),
            aiokafka.__version__,
            FAUST_VERSION,
            AIOKAFKA_VERSION,
        )
        return False
    from faust.transport.consumer import Consumer

    if not _INSTALLED:
        _ORIGINAL_DRAIN = Consumer._drain_messages

        async def _drain_messages(self: Any, fetcher: Any) -> None:
            if self.app in _FAST_APPS:
                await drain_messages(self, fetcher)
            else:
                await _ORIGINAL_DRAIN(self, fetcher)

        Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]
        _INSTALLED = True
    _FAST_APPS.add(app)
    return True


def uses_fast_path(app: faust.App) -> bool:
    return app in _FAST_APPS


async def drain_messages(consumer: Any, fetcher: Any) -> None:  # pragma: no cover - broker
    """``Consumer._drain_messages`` of faust-streaming 0.15.3 without a task per record.

    Line for line Faust's loop (gaps, commit_every, read offsets, stop handling),
    except the hand-over: see the module doc for what replaces ``wait_first``.
    """
    from faust.transport.consumer import CONSUMER_FETCHING

    self = consumer
    app = self.app
    callback = self.callback
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    suspended = self.suspend_flow.is_set

    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = app.topics.acks_enabled_for

    hand_over = _direct_hand_over(app, self)
    num_since_yield = 0
    sleep = asyncio.sleep

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            # Sleeping because sometimes getmany is called in a loop
            # never releasing to the event loop (Faust's comment; Faust sleeps after
            # creating getmany's generator, before it starts waiting for records).
            await self.sleep(0)
            records = await fetched(self, timeout=1.0)
            if not self.should_stop:
                for tp, message in records:
                    num_since_yield += 1
                    if num_since_yield > DRAIN_YIELD_EVERY:
                        await sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        if suspended():
                            # A rebalance began: hand nothing more over from this fetch
                            # (getmany stops at its next record); the owner re-reads it
                            # from the committed offset.
                            continue
                        generation = app.consumer_generation_id
                        if not hand_over(tp, message):
                            await callback(message)
                        if suspended() or app.consumer_generation_id != generation:
                            # The hand-over waited through (the start of) a rebalance:
                            # after it the read offset is the committed one again, and
                            # the agent drops the stale event.
                            continue
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev("DROPPED MESSAGE ROFF %r", offset)
                unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)


async def fetched(consumer: Any, timeout: float) -> Iterator[tuple[Any, Any]]:  # pragma: no cover
    """``Consumer.getmany`` of faust-streaming 0.15.3, end offsets tracked per partition.

    Faust's generator reads the partition's high-water mark and sets the monitor's
    end-offset gauge (a Prometheus ``labels()`` lookup) for every record: ~19% of the
    worker's time with batches open. Here that is done once per partition per fetch,
    before its first record is handed over (the mark only moves when the consumer
    thread fetches again, and the gauge is read for lag pages only). Everything else
    is Faust's: the wait for records (which seeks back to the committed offsets while
    flow is suspended), the round-robin order, and, checked lazily before each record
    is handed over, flow control and the consumer generation (a rebalance stops the
    iteration) and the partition being active or buffered.
    """
    self = consumer
    records, active_partitions = await self._wait_next_records(timeout)
    generation_id = self.app.consumer_generation_id
    if records is None or self.should_stop:
        return iter(())
    if not self.flow_active:
        self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
        try:
            await self.perform_seek()
        except Exception as ex:  # noqa: BLE001 - Faust's own handling
            self.log.warning(f"exception performing seek when flow not active {ex}")
        return iter(())
    return _records(self, records, active_partitions, generation_id)


def _records(
    self: Any, records: Any, active_partitions: Any, generation_id: int
) -> Iterator[tuple[Any, Any]]:  # pragma: no cover - broker
    app = self.app
    to_message = self._to_message
    buffered = self._buffered_partitions
    highwater = self.highwater
    track_end_offset = app.monitor.track_tp_end_offset
    tracked: set[Any] = set()
    for tp, record in self.scheduler.iterate(records):
        if not self.flow_active:
            break
        if app.consumer_generation_id != generation_id:
            self.log.dev(
                "Generation id changed from %r to %r. Cancelling getmany.",
                generation_id,
                app.consumer_generation_id,
            )
            break
        if active_partitions is None or tp in active_partitions or tp in buffered:
            if tp not in tracked:
                tracked.add(tp)
                track_end_offset(tp, highwater(tp))
            yield tp, to_message(tp, record)


def _direct_hand_over(app: Any, consumer: Any) -> Callable[[Any, Any], bool]:
    """What the conductor's callback does for a record of a fast agent's topic, minus
    the machinery; False when the conductor must do it (and maybe wait).

    Only for a topic whose one subscriber is a channel :func:`consume_in_batches`
    drains (raw bytes: the event is the message's own key and value, decoded by the
    agent), and only when nothing would make the conductor wait: flow control active
    (no rebalance), the Faust producer buffer below its bound, the queue not full.
    The queue's pressure callbacks are the conductor's: a queue under pressure stops
    fetching its partition until it drains.
    """
    conductor = app.topics
    subscribers = conductor._topic_name_index
    flow_active = app.flow_control.is_active
    buffer = app.producer.buffer
    # Table writes through Faust's API wait in this buffer (ProducerBuffer.size, without
    # reading a setting per record; a threaded producer keeps its own queue).
    threaded = bool(app.conf.producer_threaded)
    pending = buffer.pending._queue
    bound = buffer.max_messages
    event_cls = app.conf.Event  # what App.create_event builds (read once, not per record)
    on_topic_buffer_full = app.sensors.on_topic_buffer_full
    pressure: dict[Any, tuple[Callable[[], None], Callable[[], None]]] = {}

    def callbacks(fetched: Any) -> tuple[Callable[[], None], Callable[[], None]]:
        found = pressure.get(fetched)
        if found is None:
            # A Faust TP, as the conductor's callbacks pass: the fetch's (and the
            # message's) tp is aiokafka's TopicPartition, and the consumer's set of
            # active partitions must hold TPs only (it asserts so when fetching).
            tp = TP(fetched.topic, fetched.partition)

            def high() -> None:
                on_topic_buffer_full(tp)
                consumer.on_buffer_full(tp)

            def drop() -> None:
                consumer.on_buffer_drop(tp)

            found = pressure[fetched] = (high, drop)
        return found

    # topic -> (the conductor's subscriber set it was checked against, channel, queue)
    routes: dict[str, tuple[Any, Any, Any]] = {}

    def route(topic: str) -> tuple[Any, Any, Any] | None:
        channels = subscribers.get(topic)
        if channels is None or len(channels) != 1:
            return None
        (channel,) = channels
        if channel not in _FAST_CHANNELS:
            return None
        found = routes[topic] = (channels, channel, channel.queue)
        return found

    def hand_over(tp: Any, message: Any) -> bool:
        topic = message.topic
        found = routes.get(topic)
        # Still the one subscriber the conductor knows (it rebuilds its index when
        # the subscription changes)?
        channels = subscribers.get(topic)
        if found is None or found[0] is not channels or len(channels) != 1:
            found = route(topic)
            if found is None:
                return False
        channels, channel, queue = found
        if channel not in channels:
            return False
        if queue.full() or not flow_active() or (buffer.size if threaded else len(pending)) > bound:
            return False
        message.incref(1)
        high, drop = callbacks(tp)
        queue.put_nowait_enhanced(
            event_cls(app, message.key, message.value, message.headers, message),
            on_pressure_high=high,
            on_pressure_drop=drop,
        )
        return True

    return hand_over


#: Called with the offset a record got once the broker acknowledged it.
OnOffset = Callable[[int], None]
#: A record's value: its bytes, or (encode, state) for a state encoded when sent.
Value = bytes | tuple[Callable[[Any], bytes], Any]


class Outbox:
    """Records produced while one batch of events is applied, sent when the batch ends.

    One ``send_batch`` per partition instead of one ``producer.send`` per record (that
    call validates, partitions, and makes futures per record). Records keep their order
    per partition, keyed records go to the partition aiokafka's own partitioner picks
    (the producer's ``_partition``, so co-partitioning holds exactly as with ``send``),
    and the batch's events are acked only after :meth:`send` handed everything to the
    producer, so a commit (which flushes the producer first) never covers an event
    whose outputs were not sent.
    """

    __slots__ = ("_app", "_records", "_order", "_states")

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._records: dict[tuple[str, int | None], list[tuple[Any, Value, OnOffset | None]]] = {}
        self._order: list[tuple[tuple[str, int | None], int]] = []
        # (topic, partition, key) -> index in _records of a state record not sent yet
        self._states: dict[tuple[str, int, bytes], int] = {}

    def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        on_offset: OnOffset | None = None,
    ) -> None:
        records = self._records.get((topic, partition))
        if records is None:
            records = self._records[(topic, partition)] = []
        self._order.append(((topic, partition), len(records)))
        records.append((key, value, on_offset))

    def set_state(
        self,
        topic: str,
        partition: int,
        key: bytes,
        state: Any,
        encode: Callable[[Any], bytes],
        on_offset: OnOffset | None = None,
    ) -> None:
        """A key's new state for a changelog (compacted) topic: only the last is sent.

        A key written again before :meth:`send` replaces its record, which keeps its
        place; ``encode(state)`` runs once, at the send. (A conversation's batch was
        re-encoded, whole, for every message joining it.) Why dropping the superseded
        states is safe: see ``WorkerContext.table_set``.
        """
        slot = (topic, partition, key)
        index = self._states.get(slot)
        if index is not None:
            self._records[(topic, partition)][index] = (key, (encode, state), on_offset)
            return
        records = self._records.get((topic, partition))
        if records is None:
            records = self._records[(topic, partition)] = []
        self._states[slot] = len(records)
        self._order.append(((topic, partition), len(records)))
        records.append((key, (encode, state), on_offset))

    def __len__(self) -> int:
        """Records added and not sent yet."""
        return len(self._order)

    async def send(self) -> None:
        """Hand every record to the producer (not waiting for the broker's acks)."""
        await self._send()

    async def send_and_wait(self) -> list[BaseException | None]:
        """Send every record and wait for the broker; per record, in the order added,
        None once acknowledged or the error."""
        order = self._order
        futures = await self._send()
        outcome: dict[int, BaseException | None] = {}
        for fut in {id(f): f for f in futures.values()}.values():
            try:
                await fut
                outcome[id(fut)] = None
            except Exception as exc:  # noqa: BLE001 - reported per record
                outcome[id(fut)] = exc
        return [outcome[id(futures[origin])] for origin in order]

    async def _send(self) -> dict[tuple[tuple[str, int | None], int], Any]:
        """Send everything; (given (topic, partition), index) -> its batch's future."""
        sent: dict[tuple[tuple[str, int | None], int], Any] = {}
        if not self._records:
            return sent
        pending, self._records = self._records, {}
        self._order = []
        self._states = {}
        producer: Any = self._app.producer
        aio = producer._ensure_producer()
        Origin = tuple[tuple[str, int | None], int]  # (given (topic, partition), index)
        Item = tuple[Any, bytes, OnOffset | None, Origin]
        by_partition: dict[tuple[str, int], list[Item]] = {}
        for (topic, partition), records in pending.items():
            if partition is None:
                await aio.client._wait_on_metadata(topic)
            for i, (key, given, on_offset) in enumerate(records):
                if isinstance(given, tuple):  # a state, encoded now (set_state)
                    encode, state = given
                    value = encode(state)
                else:
                    value = given
                chosen = (
                    partition
                    if partition is not None
                    else aio._partition(topic, None, None, None, key, None)
                )
                by_partition.setdefault((topic, chosen), []).append(
                    (key, value, on_offset, ((topic, partition), i))
                )
        for (topic, partition), items in by_partition.items():
            batch = aio.create_batch()
            first = 0
            for i, (key, value, _, _) in enumerate(items):
                if batch.append(key=key, value=value, timestamp=None) is None:
                    fut = await _send_batch(aio, batch, topic, partition, items[first:i])
                    sent.update((item[3], fut) for item in items[first:i])
                    batch = aio.create_batch()
                    first = i
                    batch.append(key=key, value=value, timestamp=None)  # fits an empty one
            fut = await _send_batch(aio, batch, topic, partition, items[first:])
            sent.update((item[3], fut) for item in items[first:])
        return sent


async def _send_batch(
    aio: Any, batch: Any, topic: str, partition: int, items: list[tuple[Any, ...]]
) -> Any:
    sent = await aio.send_batch(batch, topic, partition=partition)
    callbacks = [(i, item[2]) for i, item in enumerate(items) if item[2] is not None]
    if callbacks:

        def written(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                return
            base = fut.result().offset  # the batch's base offset
            for i, on_offset in callbacks:
                on_offset(base + i)

        sent.add_done_callback(written)
    return sent


_OUTBOX: contextvars.ContextVar[Outbox | None] = contextvars.ContextVar(
    "chat_notifier_outbox", default=None
)


def current_outbox() -> Outbox | None:
    """The outbox of the batch being applied in this task, if any."""
    return _OUTBOX.get()


@contextlib.asynccontextmanager
async def outputs_in_batches(app: faust.App) -> AsyncIterator[Outbox]:
    """Outputs produced inside go to an outbox sent at the end (or the current one).

    For work outside an agent's batch (the scheduler's fan-outs); what was not sent when
    an exception leaves the block is dropped with it, as a failed send would be.
    """
    outbox = _OUTBOX.get()
    if outbox is not None:
        yield outbox
        return
    outbox = Outbox(app)
    token = _OUTBOX.set(outbox)
    try:
        yield outbox
    finally:
        _OUTBOX.reset(token)
    await outbox.send()


#: Applies one consumer message; awaited only when it returns an awaitable.
Apply = Callable[[Any], "Awaitable[None] | None"]


async def consume_in_batches(
    app: faust.App, stream: faust.StreamT[Any], apply: Apply
) -> None:  # pragma: no cover - broker
    """The agent loop: events from ``stream``'s channel in batches, applied in order.

    See the module doc for the rebalance rule kept per event.
    """
    from faust.streams import _current_event

    channel: Any = stream.channel
    _FAST_CHANNELS.add(channel)
    queue = channel.queue
    get_nowait = queue.get_nowait
    empty = queue.empty
    errors = queue._errors
    flow_active = app.flow_control.is_active
    consumer: Any = app.consumer
    unacked = consumer._unacked_messages
    set_current = _current_event.set
    ref = weakref.ref
    sleep = asyncio.sleep
    while not app.should_stop:
        try:
            if errors:
                raise errors.popleft()
            batch = [await queue.get()]
        except StopAsyncIteration:
            return  # Faust ends the channel's iteration on stop (Stream returns too)
        while len(batch) < MAX_BATCH_EVENTS and not empty():
            batch.append(get_nowait())
        applied: list[Any] = []
        outbox = Outbox(app)
        token = _OUTBOX.set(outbox)
        try:
            for event in batch:
                message = event.message
                if not flow_active() or message.generation_id != app.consumer_generation_id:
                    continue  # fetched before a rebalance: its owner re-reads it
                if not applied:
                    # One tracked message per batch is enough: a revocation waits
                    # (Consumer.wait_empty) until it is acked, and the whole batch is
                    # acked together. (Tracking every event costs two WeakSet
                    # operations per event.)
                    message.tracked = True
                    unacked.add(message)
                set_current(ref(event))
                applied.append(event)
                result = apply(message)
                if result is not None:
                    await result
        except BaseException:
            # Cancelled at stop, a bug: nothing of this batch is acked, so it is read
            # again from the committed offset (at least once); untracked, so a
            # revocation does not wait for it forever.
            if applied:
                unacked.discard(applied[0].message)
            raise
        finally:
            set_current(None)
            _OUTBOX.reset(token)
        try:
            await outbox.send()  # acked only once their outputs are with the producer
        except BaseException:
            if applied:
                unacked.discard(applied[0].message)
            raise
        for event in applied:
            event.ack()
        # Faust's sensor counts events in per record on its own path; this one skips it,
        # so events in by topic are counted here, once per batch.
        for topic, n in Counter(event.message.topic for event in applied).items():
            EVENTS_IN.labels(topic).inc(n)
        # One event-loop turn per batch (not per event): the scheduler, the other agent
        # and the fetcher run between batches even while the queue stays full.
        await sleep(0)


async def consume(app: faust.App, stream: faust.StreamT[Any], apply: Apply) -> None:
    """The agents' loop: in batches on the fast path, else one event per turn (Faust's)."""
    if uses_fast_path(app):
        await consume_in_batches(app, stream, apply)
        return
    async for event in stream.events():
        result = apply(event.message)
        if result is not None:
            await result
