"""The worker's agents: thin Faust adapters around the pure core (DESIGN §2–§5).

Three agents and one task:

``conversation_events`` consumes ``chat.messages``, ``chat.typing``,
``chat.conversations`` and ``notify.flushes`` (co-partitioned, keyed by
conversation_id). It keeps each conversation's :class:`ConversationBatch` hot in a dict
and writes the ``conversation-batches`` Table (changelog) only on state transitions: a
message joining, a typing event opening a batch, a close. Typing refreshes, starts and
stops, duplicates and system messages touch no Table. (Measured: one Table write per
input event runs at ~0.35 of the bare Faust loop; transitions only at ~0.5-0.75.)

``flush_scheduler`` is a task holding one deadline heap per *actively assigned*
conversation partition, rebuilt from the Table when partitions are assigned (after
changelog recovery, and once the partition's input has been read up to its high-water
mark) and dropped when they are revoked, so a worker never closes a batch it does not
own (a memory Table also holds frozen keys of revoked partitions). When a deadline
passes it closes the batch in the hot state, produces the Flush to ``notify.flushes``
on the conversation's own partition and fans out one Candidate per participant to
``notify.candidates`` keyed by recipient. Timers cannot write Tables, so the Flush is
also the record routed back through the agent: when ``conversation_events`` reads it,
it persists the closed state (or, after a crash between the Flush and the Table write,
performs the same deterministic close on the recovered state and fans out again, so
the Flush itself is not emitted twice).

``user_events`` consumes ``chat.presence``, ``chat.users`` and ``notify.candidates``
(co-partitioned on user_id): presence hot in a dict, written to the ``presence`` Table
when the user comes online or goes offline, else at most every half TTL; users in the
``users`` Table; for each Candidate it decides with the core and writes Decisions and
Deliveries.

Roles, AppSettings and display names come from the broadcast config reader
(:mod:`processors.live.config`), which reads every partition of ``chat.roles``,
``chat.settings`` and ``chat.users`` whatever their partition counts. Until it has
caught up the worker closes no batch and decides nothing.

Every record that cannot be decoded or applied goes to ``notify.dead-letter`` with the
reason, counted in ``chat_notifier_dead_letters_total``; the agent carries on.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, cast

import faust
from faust.types import TP
from faust.types import EventT as _EventT
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram

from processors import codec
from processors import topics as t
from processors.app import app_settings, partitions_for, raw_topic, raw_topics, record_topic
from processors.core.admission import Reject, Rekey, admit
from processors.core.batching import ConversationBatch
from processors.core.decisions import decide, fan_out
from processors.core.ids import flush_id as make_flush_id
from processors.core.presence import Presence, UserPresence
from processors.core.settings import CoreSettings
from processors.live.broker import bootstrap_servers
from processors.live.config import ConfigReader
from processors.live.recovery import repair_changelog_tails

log = logging.getLogger(__name__)

DEAD_LETTERS = PromCounter(
    "chat_notifier_dead_letters_total",
    "Records sent to notify.dead-letter",
    ["topic", "stage"],
)
REKEYED = PromCounter(
    "chat_notifier_rekeyed_total",
    "Input records re-published under the key their value names",
    ["topic"],
)
BOUNDED_TIMES = PromCounter(
    "chat_notifier_event_times_bounded_total",
    "Input records whose event time was more than 5 minutes ahead, set to the reference",
    ["topic"],
)
FLUSHES = PromCounter("chat_notifier_flushes_total", "Flush records produced", ["cause"])
DECISIONS = PromCounter(
    "chat_notifier_decisions_total", "Decision records produced", ["outcome", "reason", "channel"]
)
FLUSH_LATENESS = Histogram(
    "chat_notifier_flush_lateness_seconds",
    "Worker clock at close minus the batch deadline",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class AdmissionError(ValueError):
    """An input record refused at the door (core/admission.py); dead-lettered as ``admit``."""


SCHEDULER_TICK_S = 0.02  # the scheduler checks deadlines this often (bounds lateness)
CATCH_UP_MAX_MS = 10_000  # at most this long after an assignment before closing anyway
# An input record larger than this is not decoded: it is dead-lettered by reference
# (topic, partition, offset, size), the same bound as a dead letter's copied value.
MAX_RECORD_BYTES = codec.DEAD_LETTER_MAX_VALUE_BYTES
# A fan-out hands this many Candidates to the producer between event-loop turns, so a
# huge conversation does not hold back other conversations' deadlines.
FAN_OUT_YIELD_EVERY = 100

Clock = Callable[[], int]
EventT = _EventT[Any]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def changelog_topics(app_id: str) -> dict[str, str]:
    """Changelog topic name -> partition group, for topic creation before start."""
    return {
        f"{app_id}-conversation-batches-changelog": "conversation",
        f"{app_id}-conversations-changelog": "conversation",
        f"{app_id}-presence-changelog": "user",
        f"{app_id}-users-changelog": "user",
    }


class Pipeline:
    """The agents, tables and hot state of one worker; built by :func:`attach_pipeline`."""

    def __init__(
        self,
        app: faust.App,
        *,
        core_overrides: Mapping[str, Any] | None = None,
        clock: Clock = wall_clock_ms,
        write_every_event: bool = False,
    ) -> None:
        self.app = app
        # The naive design (one Table write per input event); kept for the benchmark's
        # before/after comparison.
        self.write_every_event = write_every_event
        self.settings = app_settings(app)
        self.clock = clock
        self.core_overrides = dict(core_overrides or {})
        self.cfg = CoreSettings.from_app_settings(None, self.core_overrides)
        self._settings_seen = -1
        self._persistent_store = not str(self.settings.store).startswith("memory")
        prefix = self.settings.topic_prefix
        self.prefix = prefix
        s = self.settings

        # -- topics -------------------------------------------------------------------
        self.conversation_topic = raw_topics(
            app, (t.MESSAGES, t.TYPING, t.CONVERSATIONS, t.FLUSHES)
        )
        self.user_topic = raw_topics(app, (t.PRESENCE, t.USERS, t.CANDIDATES))
        self.flushes_out = record_topic(app, t.FLUSHES)
        self.candidates_out = record_topic(app, t.CANDIDATES)
        self.decisions_out = record_topic(app, t.DECISIONS)
        self.deliveries_out = {ch: record_topic(app, name) for ch, name in t.CHANNEL_TOPICS.items()}
        self.dead_letter_out = record_topic(app, t.DEAD_LETTER)
        self.records = {prefix + name: spec.record for name, spec in t.TOPICS.items()}
        self.output_records = {name: spec.record or "" for name, spec in t.TOPICS.items()}

        # -- tables (changelogged; the hot dicts below are authoritative while owned) --
        conv_parts = partitions_for(s, t.MESSAGES)
        user_parts = partitions_for(s, t.PRESENCE)
        table_kw: dict[str, Any] = {
            "schema": faust.Schema(key_type=str, key_serializer="json", value_serializer="json")
        }
        self.batches_table = app.Table("conversation-batches", partitions=conv_parts, **table_kw)
        self.conversations_table = app.Table("conversations", partitions=conv_parts, **table_kw)
        self.presence_table = app.Table("presence", partitions=user_parts, **table_kw)
        self.users_table = app.Table("users", partitions=user_parts, **table_kw)
        # Roles, settings and display names: every partition, in every worker.
        self.config = ConfigReader(
            bootstrap_servers(s), prefix, dead_letter=self._config_dead_letter, label="worker"
        )

        # -- hot state ------------------------------------------------------------------
        self.batches: dict[int, dict[str, ConversationBatch]] = {}
        self.heaps: dict[int, list[tuple[int, str]]] = {}
        self.scheduled: dict[str, int] = {}
        self.closed_unpersisted: set[str] = set()
        # conversation_id -> resolved once the Flush being written for it is acked (or
        # failed): a second close of the same batch waits for the first.
        self.closing: dict[str, asyncio.Future[None]] = {}
        # conversation_id -> the fan-out of its last Flush, while it runs.
        self.fan_outs: dict[str, asyncio.Task[None]] = {}
        self.flush_writes: set[asyncio.Task[None]] = set()  # Flushes awaiting their ack
        self.presence: dict[str, UserPresence] = {}
        self.presence_partition: dict[str, int] = {}
        self.presence_persisted_ts: dict[str, int] = {}
        self.active_conversation_partitions: set[int] = set()
        # After an assignment, overdue batches wait until the partition's input has been
        # read up to the high-water mark (or CATCH_UP_MAX_MS passed): messages sent
        # while no worker ran then join the batch they belong to (DESIGN §4 rule 3)
        # instead of being split off by a close that only happened late.
        self.catching_up: dict[int, int] = {}
        self.positions: dict[Any, int] = {}

        # -- observability (tests and the bench read these) -------------------------------
        self.dead_letters: Counter[str] = Counter()
        self.events_seen = 0
        self.input_events = 0  # messages, typing and presence applied (bench reads it)
        self.table_writes = 0
        self.lateness_ms: list[int] = []
        self.on_decision: Callable[[dict[str, Any]], None] | None = None

        self.batches_table.on_recover(self._on_batches_recovered)
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        self._conversation_handlers: dict[str, Callable[[EventT, dict[str, Any]], Any]] = {
            prefix + t.MESSAGES: self._on_message,
            prefix + t.TYPING: self._on_typing,
            prefix + t.CONVERSATIONS: self._on_conversation,
            prefix + t.FLUSHES: self._on_flush,
        }
        # Tombstones (null values) by topic: the key's record is deleted.
        self._tombstone_handlers: dict[str, Callable[[str], None]] = {
            prefix + t.CONVERSATIONS: self._delete_conversation,
            prefix + t.USERS: self._delete_user,
        }
        self._user_handlers: dict[str, Callable[[EventT, dict[str, Any]], Any]] = {
            prefix + t.PRESENCE: self._on_presence,
            prefix + t.USERS: self._on_user,
            prefix + t.CANDIDATES: self._on_candidate,
        }
        app.agent(self.conversation_topic, name="conversation_events")(self._conversation_agent)
        app.agent(self.user_topic, name="user_events")(self._user_agent)
        app.task(self._flush_scheduler)
        app.task(self.config.run)
        # Faust inspects a page function's signature: plain (web, request) functions.
        for path, handler in (
            ("/metrics", self._metrics_page),
            ("/health", self._health_page),
            ("/ready", self._ready_page),
        ):
            app.page(path)(_page_function(handler))

    # == web: metrics, health, readiness ================================================

    async def _metrics_page(self, web: Any, request: Any) -> Any:
        from prometheus_client import generate_latest

        # aiohttp refuses a charset inside content_type; the text format is ASCII.
        return web.bytes(generate_latest(), content_type="text/plain; version=0.0.4")

    async def _health_page(self, web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    async def _ready_page(self, web: Any, request: Any) -> Any:
        """Ready once the worker joined its group, recovered its partitions and read
        roles and settings up to their high-water marks at start."""
        ready = (
            bool(self.app.assignor.assigned_actives())
            and not self.app.rebalancing
            and self.config.ready
        )
        return web.json(
            {
                "ready": ready,
                "config_caught_up": self.config.ready,
                "conversation_partitions": sorted(self.active_conversation_partitions),
            },
            status=200 if ready else 503,
        )

    # == agents ========================================================================

    async def _conversation_agent(self, stream: faust.StreamT[bytes]) -> None:
        await self._consume(stream, self._conversation_handlers)

    async def _user_agent(self, stream: faust.StreamT[bytes]) -> None:
        await self._consume(stream, self._user_handlers)

    async def _consume(
        self,
        stream: faust.StreamT[bytes],
        handlers: Mapping[str, Callable[[EventT, dict[str, Any]], Any]],
    ) -> None:
        records = self.records
        positions = self.positions
        # Input topics go through the door (core/admission.py) after decoding, the same
        # function replay uses; the worker's own notify.* topics do not.
        door = {self.prefix + name: name for name in t.INPUT_TOPICS}
        async for event in stream.events():
            message = event.message
            topic = message.topic
            self.events_seen += 1
            positions[message.tp] = message.offset
            data = message.value
            if data is None or len(data) > MAX_RECORD_BYTES:
                await self._tombstone_or_oversized(event)
                continue
            try:
                value = codec.decode(records[topic] or "", data)
            except Exception as exc:  # noqa: BLE001 - every decode failure is dead-lettered
                await self._dead_letter(event, exc, "decode")
                continue
            name = door.get(topic)
            if name is not None:
                key = message.key
                stamp = message.timestamp  # Faust: seconds; admission: epoch ms
                verdict = admit(
                    name,
                    key.decode("utf-8", "replace") if isinstance(key, bytes) else key,
                    value,
                    int(stamp * 1000) if stamp else None,
                    self.clock(),
                )
                if isinstance(verdict, Reject):
                    await self._dead_letter(event, AdmissionError(verdict.reason), "admit")
                    continue
                if isinstance(verdict, Rekey):
                    await self._rekey(event, verdict.key)
                    continue
                if verdict.bounded_from is not None:
                    BOUNDED_TIMES.labels(name).inc()
                if verdict.value is not None:
                    value = verdict.value
            try:
                result = handlers[topic](event, value)
                if result is not None:
                    await result
            except Exception as exc:  # noqa: BLE001 - one bad record must not stop the agent
                log.warning("cannot apply a record from %s: %s", topic, exc)
                await self._dead_letter(event, exc, "process")

    async def _rekey(self, event: EventT, key: str) -> None:
        """Re-publish a record, bytes unchanged, to its own topic under the key it names.

        Admission rule 4: an event under a missing or foreign key would be batched on a
        partition that does not own its conversation (or user). Re-publishing to the
        same input topic lets the producer's partitioner place it with the platform's
        own partition count; the original is then skipped. A retry after a crash
        publishes it twice, which dedupe by message_id (and newer-wins for typing and
        presence) makes harmless.
        """
        message = event.message
        source = message.topic[len(self.prefix) :]
        REKEYED.labels(source).inc()
        await self.app.producer.send(
            message.topic, key.encode(), message.value, None, message.timestamp, message.headers
        )

    async def _tombstone_or_oversized(self, event: EventT) -> None:
        """A record with no value (a delete) or too large to decode."""
        message = event.message
        data = message.value
        if data is not None:
            error = RecordTooLarge(
                f"record of {len(data)} bytes; at most {MAX_RECORD_BYTES} are read "
                "(dead-lettered by reference: topic, partition, offset, size)"
            )
            await self._dead_letter(event, error, "decode")
            return
        delete = self._tombstone_handlers.get(message.topic)
        if delete is None:
            name = self.records[message.topic] or "record"
            await self._dead_letter(
                event, codec.DecodeError(f"no value (null or tombstone) for {name}"), "decode"
            )
            return
        key = message.key
        try:
            if key is None:
                raise ValueError("tombstone without a key: nothing to delete")
            text = key.decode("utf-8") if isinstance(key, bytes) else str(key)
        except (ValueError, UnicodeDecodeError) as exc:
            await self._dead_letter(event, exc, "decode")
            return
        try:
            delete(text)
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the agent
            await self._dead_letter(event, exc, "process")

    async def _dead_letter(self, event: EventT, exc: BaseException, stage: str) -> None:
        message = event.message
        source = message.topic[len(self.prefix) :]
        value = message.value if isinstance(message.value, bytes) else None
        key = message.key if isinstance(message.key, bytes) else None
        error = str(exc) or type(exc).__name__
        record = codec.dead_letter(
            source_topic=source,
            key=key,
            value=value,
            error=error,
            stage=stage,
            partition=message.partition,
            offset=message.offset,
            ts=self.clock(),
        )
        self.dead_letters[source] += 1
        DEAD_LETTERS.labels(source, stage).inc()
        await self._produce(t.DEAD_LETTER, key, record)

    async def _produce(
        self,
        name: str,
        key: str | bytes | None,
        value: dict[str, Any],
        partition: int | None = None,
    ) -> None:
        """Encode and hand one record to the producer (no Faust Topic.send overhead).

        ``Topic.send`` costs ~95 us per record here (FutureMessage, schema, callbacks);
        the producer's own send is a fraction of that, and outputs are ~5x the flushes.
        """
        data = codec.encode(self.output_records[name], value)
        k = key.encode() if isinstance(key, str) else key
        await self.app.producer.send(self.prefix + name, k, data, partition, None, None)

    # == conversation side ===============================================================

    def _batch(self, partition: int, conversation_id: str) -> ConversationBatch:
        batches = self.batches.get(partition)
        if batches is None:
            batches = self.batches[partition] = {}
        batch = batches.get(conversation_id)
        if batch is None:
            batch = batches[conversation_id] = ConversationBatch(conversation_id)
        return batch

    async def _persist_batch(self, partition: int, batch: ConversationBatch) -> None:
        cid = batch.conversation_id
        await self._table_set(
            self.batches_table, partition, cid, {"p": partition, "b": batch.to_dict()}
        )
        self.closed_unpersisted.discard(cid)

    async def _table_set(self, table: Any, partition: int, key: str, value: dict[str, Any]) -> None:
        """``table[key] = value`` on the hot path, without Faust's per-write machinery.

        Same effect as ``Table.__setitem__`` (store updated, one changelog record on the
        partition of the event being processed, persisted offset kept for RocksDB) at
        about a third of the cost: Faust's ``send_soon`` path (FutureMessage, buffer,
        pending task, sensors) was ~175 us per write in the profile. Called only from
        stream iteration, where RocksDB stores find the partition of the current event.
        """
        table.data[key] = value
        self.table_writes += 1
        topic = table.changelog_topic.get_topic_name()
        sent = await self.app.producer.send(
            topic,
            _json_bytes(key),
            _json_bytes(value),
            partition,
            None,
            None,
        )
        store = table.data
        if self._persistent_store:  # RocksDB: where recovery starts after a restart
            tp = TP(topic, partition)
            cast("asyncio.Future[Any]", sent).add_done_callback(
                lambda fut: _set_offset(store, tp, fut)
            )

    def _schedule(self, partition: int, batch: ConversationBatch) -> None:
        deadline = batch.deadline(self.cfg)
        if deadline is None:
            return
        cid = batch.conversation_id
        current = self.scheduled.get(cid)
        # A later deadline needs no new entry: the scheduler re-reads the batch's
        # deadline when the earlier entry comes due, so the heap stays ~1 entry per batch.
        if current is None or deadline < current:
            self.scheduled[cid] = deadline
            heapq.heappush(self.heaps.setdefault(partition, []), (deadline, cid))

    async def _on_message(self, event: EventT, value: dict[str, Any]) -> None:
        self.input_events += 1
        partition = event.message.partition
        cid = value["conversation_id"]
        batch = self._batch(partition, cid)
        while (closing := self.closing.get(cid)) is not None:
            await closing  # the scheduler is writing this batch's Flush
        # A message that would overflow the batch closes it first (cause max_size); a
        # message no batch can hold raises MessageTooLarge and is dead-lettered.
        full = batch.flush_before(value, self.cfg)
        if full is not None:
            closing = self.closing[cid] = asyncio.get_running_loop().create_future()
            try:
                await self._write_flush(partition, full)
            except Exception as exc:
                # The batch stays as it was; the message goes to the dead-letter topic
                # (with its bytes) rather than into a batch too large to write.
                raise FlushNotWritten(
                    f"the Flush closing the full batch was not written ({type(exc).__name__})"
                ) from None
            finally:
                del self.closing[cid]
                closing.set_result(None)
            batch.commit_close(full, self.cfg)
            FLUSHES.labels(full["cause"]).inc()
            await self._fan_out(full)
            self.closed_unpersisted.add(cid)  # persisted just below with the message
        if batch.add_message(value, self.cfg):
            await self._persist_batch(partition, batch)
            self._schedule(partition, batch)
        elif self.write_every_event:
            await self._persist_batch(partition, batch)

    async def _on_typing(self, event: EventT, value: dict[str, Any]) -> None:
        self.input_events += 1
        partition = event.message.partition
        batch = self._batch(partition, value["conversation_id"])
        opened = batch.opened_at
        if not batch.apply_typing(value, self.cfg):
            return
        # Only a typing event that opens a batch is persisted (opened_at is part of the
        # Flush). Starts, refreshes and stops only move the deadline: a worker that
        # crashes loses them and its successor may close that batch a little early,
        # which costs nothing but an earlier notification. Writing them would cost a
        # Table write for most typing events (measured: the bulk of the worker's time).
        if batch.opened_at != opened or self.write_every_event:
            await self._persist_batch(partition, batch)
        if batch.pending:
            self._schedule(partition, batch)

    def _delete_conversation(self, cid: str) -> None:
        """A tombstone on chat.conversations: forget the snapshot (table and changelog).

        Later flushes of the conversation decide UNKNOWN_CONVERSATION.
        """
        if cid in self.conversations_table:
            del self.conversations_table[cid]  # Faust writes the changelog tombstone
            self.table_writes += 1

    def _on_conversation(self, event: EventT, value: dict[str, Any]) -> None:
        cid = value["conversation_id"]
        held = self.conversations_table.get(cid)
        if held is None or int(value.get("ts") or 0) >= int(held.get("ts") or 0):
            self.conversations_table[cid] = value
            self.table_writes += 1

    async def _on_flush(self, event: EventT, flush: dict[str, Any]) -> None:
        """A Flush read back: make sure the close is in the Table.

        Normally the scheduler closed the batch, produced this Flush and fanned out
        already; the Table is written here because timers cannot write Tables.
        """
        partition = event.message.partition
        cid = flush["conversation_id"]
        batch = self._batch(partition, cid)
        if cid in self.closed_unpersisted:
            running = self.fan_outs.get(cid)
            if running is not None:
                # Persist the close only once its Candidates are handed over, so a
                # crash in between repeats the fan-out instead of losing it.
                await asyncio.wait([running])
            await self._persist_batch(partition, batch)
        elif (
            batch.pending
            and set(flush["message_ids"]) <= batch.pending_ids
            and make_flush_id(cid, flush["message_ids"]) == flush["flush_id"]
        ):
            # Recovered state from before a crash that happened between producing this
            # Flush and persisting the close: close the same way (deterministic) without
            # producing the Flush again, and fan out (the crashed worker may not have).
            batch.commit_close(flush, self.cfg)
            self.scheduled.pop(cid, None)
            await self._persist_batch(partition, batch)
            await self._fan_out(flush)

    async def _fan_out(self, flush: dict[str, Any]) -> None:
        """One Candidate per participant to notify.candidates, keyed by recipient.

        Yields to the event loop every ``FAN_OUT_YIELD_EVERY`` Candidates (the
        producer's send only queues a record, so without a yield a 5,000-participant
        fan-out would hold the loop, and every other deadline, until it is done).
        """
        cid = flush["conversation_id"]
        await self.config.caught_up.wait()  # display names
        candidates, skips = fan_out(
            flush, self.conversations_table.get(cid), self.clock(), self.config.names
        )
        for decision in skips:
            await self._emit_decision(cid, decision)
        for i, candidate in enumerate(candidates, start=1):
            await self._produce(t.CANDIDATES, candidate["recipient_id"], candidate)
            if i % FAN_OUT_YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def _start_fan_out(self, flush: dict[str, Any]) -> None:
        """Fan out in the background so the scheduler goes on closing other batches."""
        cid = flush["conversation_id"]
        before = self.fan_outs.get(cid)

        async def run() -> None:
            if before is not None:
                await asyncio.wait([before])  # one conversation's flushes fan out in order
            try:
                await self._fan_out(flush)
            except Exception:
                log.exception("fan-out of a flush of conversation %r", cid)

        task = asyncio.ensure_future(run())
        self.fan_outs[cid] = task

        def done(_: Any) -> None:
            if self.fan_outs.get(cid) is task:
                del self.fan_outs[cid]

        task.add_done_callback(done)

    async def _write_flush(self, partition: int, flush: dict[str, Any]) -> None:
        """Produce ``flush`` on its conversation's partition and wait for the broker's ack."""
        data = codec.encode("Flush", flush)
        key = flush["conversation_id"].encode()
        sent = await self.app.producer.send(
            self.prefix + t.FLUSHES, key, data, partition, None, None
        )
        await sent

    # == scheduler ==========================================================================

    async def _flush_scheduler(self) -> None:
        """Close due batches of actively assigned partitions, promptly."""
        while not self.app.should_stop:
            try:
                # Batches close on the settings in force: none before they are read.
                if self.config.ready:
                    self._refresh_cfg()
                    await self._close_due(self.clock())
            except Exception:  # pragma: no cover - keep the scheduler alive
                log.exception("flush scheduler")
            await asyncio.sleep(SCHEDULER_TICK_S)

    async def _close_due(self, now: int) -> None:
        """Write the Flush of every due batch, then close the batches whose Flush is acked.

        A batch is marked closed only after the broker acknowledged its Flush; if the
        write fails, the batch stays open as it was and is retried on the next tick.
        """
        due: list[tuple[int, ConversationBatch, dict[str, Any]]] = []
        later: list[tuple[int, int, str]] = []
        for partition in list(self.active_conversation_partitions):
            if partition in self.catching_up and not self._caught_up(partition, now):
                continue
            heap = self.heaps.get(partition)
            while heap and heap[0][0] <= now:
                deadline, cid = heapq.heappop(heap)
                if self.scheduled.get(cid) != deadline:
                    continue  # superseded
                batch = self.batches.get(partition, {}).get(cid)
                actual = None if batch is None else batch.deadline(self.cfg)
                if batch is None or actual is None:
                    del self.scheduled[cid]
                    continue
                if actual > now or cid in self.closing:  # moved later, or being closed
                    later.append((partition, actual, cid))
                    continue
                due.append((partition, batch, batch.due_flush(self.cfg)))
        for partition, deadline, cid in later:
            self.scheduled[cid] = deadline
            heapq.heappush(self.heaps.setdefault(partition, []), (deadline, cid))
        if not due:
            return
        loop = asyncio.get_running_loop()
        for _, _, flush in due:
            self.closing[flush["conversation_id"]] = loop.create_future()
        # Acks wait behind whatever the producer is sending (a big fan-out's Candidates):
        # awaited in a task, so the next tick's deadlines are not held up by them.
        task = asyncio.ensure_future(self._write_and_commit(due))
        self.flush_writes.add(task)
        task.add_done_callback(self.flush_writes.discard)

    async def _write_and_commit(
        self, due: list[tuple[int, ConversationBatch, dict[str, Any]]]
    ) -> None:
        try:
            results = await asyncio.gather(
                *(self._write_flush(partition, flush) for partition, _, flush in due),
                return_exceptions=True,
            )
            self._commit_closes(due, results)
        except Exception:  # pragma: no cover - the batches stay open and are retried
            log.exception("committing closed batches")
        finally:
            for _, _, flush in due:
                closing = self.closing.pop(flush["conversation_id"], None)
                if closing is not None and not closing.done():
                    closing.set_result(None)

    def _commit_closes(
        self, due: list[tuple[int, ConversationBatch, dict[str, Any]]], results: list[Any]
    ) -> None:
        written = self.clock()
        for (partition, batch, flush), result in zip(due, results, strict=True):
            cid = flush["conversation_id"]
            if self.batches.get(partition, {}).get(cid) is not batch:
                continue  # revoked while we awaited; the new owner reads the Flush back
            if isinstance(result, BaseException):
                log.warning(
                    "Flush of conversation %r not written (%s); the batch stays open, "
                    "retried on the next tick",
                    cid,
                    type(result).__name__,
                )
                retry_at = batch.deadline(self.cfg)
                if retry_at is not None:
                    self.scheduled[cid] = retry_at
                    heapq.heappush(self.heaps.setdefault(partition, []), (retry_at, cid))
                continue
            self.scheduled.pop(cid, None)
            batch.commit_close(flush, self.cfg)
            self.closed_unpersisted.add(cid)
            self._schedule(partition, batch)  # messages that joined meanwhile
            lateness = written - int(flush["closed_at"])
            self.lateness_ms.append(lateness)
            FLUSH_LATENESS.observe(max(lateness, 0) / 1000)
            FLUSHES.labels(flush["cause"]).inc()
            self._start_fan_out(flush)

    def _caught_up(self, partition: int, now: int) -> bool:
        if now < self.catching_up[partition]:
            for name in (t.MESSAGES, t.TYPING):
                tp = TP(self.prefix + name, partition)
                try:
                    high = self.app.consumer.highwater(tp)
                except Exception:  # noqa: BLE001 - not fetched yet
                    return False
                if high is None or self.positions.get(tp, -1) + 1 < high:
                    return False
        del self.catching_up[partition]
        return True

    def _refresh_cfg(self) -> None:
        """Take up the settings in force. ``--set`` values are the starting defaults;
        an AppSettings record on chat.settings replaces them (logged once); a tombstone
        there brings the ``--set`` values back."""
        version = self.config.state.settings_version
        if version == self._settings_seen:
            return
        self._settings_seen = version
        current = self.config.app_settings
        if current is None:
            cfg = CoreSettings.from_app_settings(None, self.core_overrides)
        else:
            cfg = CoreSettings.from_app_settings(current)  # validated by the reader
            if self.core_overrides:
                log.info(
                    "chat.settings record (ts=%s) overrides --set %s",
                    current.get("ts"),
                    " ".join(f"{k}={v}" for k, v in sorted(self.core_overrides.items())),
                )
        if cfg == self.cfg:
            return
        self.cfg = cfg
        # Every deadline depends on the settings: rebuild the heaps.
        self.heaps = {}
        self.scheduled = {}
        for partition, batches in self.batches.items():
            for batch in batches.values():
                self._schedule(partition, batch)

    async def _on_batches_recovered(self) -> None:
        """After changelog recovery: load the batches of newly active partitions."""
        topic = self.prefix + t.MESSAGES
        actives = self.app.assignor.assigned_actives()
        active = {tp.partition for tp in actives if tp.topic == topic}
        user_active = {tp.partition for tp in actives if tp.topic == self.prefix + t.PRESENCE}
        try:
            await repair_changelog_tails(
                bootstrap_servers(self.settings),
                [
                    (self.batches_table, active),
                    (self.conversations_table, active),
                    (self.presence_table, user_active),
                    (self.users_table, user_active),
                ],
            )
        except Exception:  # noqa: BLE001 - a broker without the quirk still works
            log.exception("reading changelog tails after recovery")
        for partition in set(self.batches) - active:
            self._drop_partition(partition)
        new = active - self.active_conversation_partitions
        loaded = 0
        if new:
            for cid, stored in list(self.batches_table.data.items()):
                if not isinstance(stored, dict) or stored.get("p") not in new:
                    continue
                partition = int(stored["p"])
                batch = ConversationBatch.from_dict(stored["b"])
                self.batches.setdefault(partition, {})[str(cid)] = batch
                self._schedule(partition, batch)
                loaded += 1
        for partition in new:
            self.catching_up[partition] = self.clock() + CATCH_UP_MAX_MS
        self.active_conversation_partitions = active
        log.info("conversation partitions %s active; %d batches loaded", sorted(active), loaded)

    async def _on_revoked(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        revoked: set[TP] = set(args[0]) if args else set(kwargs.get("revoked") or ())
        topic = self.prefix + t.MESSAGES
        for tp in revoked:
            if tp.topic == topic:
                self._drop_partition(tp.partition)
                self.active_conversation_partitions.discard(tp.partition)
        users = self.prefix + t.PRESENCE
        gone = {tp.partition for tp in revoked if tp.topic == users}
        if gone:
            for uid in [u for u, p in self.presence_partition.items() if p in gone]:
                self.presence.pop(uid, None)
                self.presence_partition.pop(uid, None)
                self.presence_persisted_ts.pop(uid, None)

    def _drop_partition(self, partition: int) -> None:
        self.catching_up.pop(partition, None)
        for cid in self.batches.pop(partition, {}):
            self.scheduled.pop(cid, None)
            self.closed_unpersisted.discard(cid)
        self.heaps.pop(partition, None)

    # == user side =============================================================================

    def _user_presence(self, partition: int, user_id: str) -> UserPresence:
        presence = self.presence.get(user_id)
        if presence is None:
            stored = self.presence_table.get(user_id)
            presence = UserPresence.from_dict(stored["s"]) if stored else UserPresence(user_id)
            self.presence[user_id] = presence
            self.presence_partition[user_id] = partition
        return presence

    async def _on_presence(self, event: EventT, value: dict[str, Any]) -> None:
        self.input_events += 1
        partition = event.message.partition
        uid = value["user_id"]
        presence = self._user_presence(partition, uid)
        was_online = _any_session_online(presence)
        if not presence.apply(value, self.cfg):
            return
        ts = int(value["ts"])
        # Persisted when the user comes online or goes offline, else at most every half
        # TTL: clients re-send their state with every heartbeat, so a successor after a
        # crash is at most one heartbeat away from the exact selection and focus (and a
        # session looks at most half a TTL older than it is).
        if (
            _any_session_online(presence) != was_online
            or ts - self.presence_persisted_ts.get(uid, 0) > (self.cfg.presence_ttl_ms // 2)
            or self.write_every_event
        ):
            await self._table_set(
                self.presence_table, partition, uid, {"p": partition, "s": presence.to_dict()}
            )
            self.presence_persisted_ts[uid] = ts

    def _delete_user(self, uid: str) -> None:
        """A tombstone on chat.users: forget the user (table and changelog).

        Later decisions for them say UNKNOWN_USER; their addresses are gone.
        """
        if uid in self.users_table:
            del self.users_table[uid]  # Faust writes the changelog tombstone
            self.table_writes += 1

    def _on_user(self, event: EventT, value: dict[str, Any]) -> None:
        uid = value["user_id"]
        held = self.users_table.get(uid)
        if held is None or int(value.get("ts") or 0) >= int(held.get("ts") or 0):
            self.users_table[uid] = value
            self.table_writes += 1

    async def _on_candidate(self, event: EventT, candidate: dict[str, Any]) -> None:
        # Every role must be read first: deciding earlier says UNKNOWN_ROLE wrongly.
        await self.config.caught_up.wait()
        self._refresh_cfg()
        now = self.clock()
        rid = candidate["recipient_id"]
        presence = self.presence.get(rid)
        if presence is None and rid in self.presence_table:
            presence = self._user_presence(event.message.partition, rid)
        seen = (
            Presence.OFFLINE
            if presence is None
            else presence.status(candidate["conversation_id"], now, self.cfg)
        )
        roles = self.config.roles
        decisions, deliveries = decide(candidate, self.users_table.get(rid), roles, seen, now)
        for decision in decisions:
            await self._emit_decision(rid, decision)
        for delivery in deliveries:
            await self._produce(t.CHANNEL_TOPICS[delivery["channel"]], rid, delivery)

    async def _emit_decision(self, key: str, decision: dict[str, Any]) -> None:
        DECISIONS.labels(
            decision["outcome"], decision["reason"] or "", decision.get("channel") or ""
        ).inc()
        await self._produce(t.DECISIONS, key, decision)
        if self.on_decision is not None:
            self.on_decision(decision)

    # == global side ===========================================================================

    async def _config_dead_letter(
        self,
        source: str,
        key: bytes | None,
        value: bytes,
        error: str,
        stage: str,
        partition: int,
        offset: int,
    ) -> None:
        """A chat.roles / chat.settings record the config reader refused."""
        record = codec.dead_letter(
            source_topic=source,
            key=key,
            value=value,
            error=error,
            stage=stage,
            partition=partition,
            offset=offset,
            ts=self.clock(),
        )
        self.dead_letters[source] += 1
        DEAD_LETTERS.labels(source, stage).inc()
        await self._produce(t.DEAD_LETTER, key, record)


class RecordTooLarge(ValueError):
    """An input record over MAX_RECORD_BYTES (dead-lettered by reference)."""


class FlushNotWritten(RuntimeError):
    """The Flush that had to close a full batch first could not be written."""


def _page_function(handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    async def page(web: Any, request: Any) -> Any:
        return await handler(web, request)

    return page


def _json_bytes(obj: Any) -> bytes:
    # What Faust's "json" codec writes for plain keys and dicts (recovery reads it back).
    return json.dumps(obj, separators=(",", ":")).encode()


def _set_offset(store: Any, tp: TP, fut: Any) -> None:
    if not fut.cancelled() and fut.exception() is None:
        store.set_persisted_offset(tp, fut.result().offset)


def _any_session_online(presence: UserPresence) -> bool:
    # session entry: [ts, online, selected_conversation_id, focused] (core/presence.py)
    return any(session[1] for session in presence.sessions.values())


def attach_pipeline(
    app: faust.App,
    *,
    core_overrides: Mapping[str, Any] | None = None,
    clock: Clock = wall_clock_ms,
    write_every_event: bool = False,
) -> Pipeline:
    """Register the worker's agents, tables and scheduler on ``app``."""
    return Pipeline(
        app, core_overrides=core_overrides, clock=clock, write_every_event=write_every_event
    )


__all__ = ["Pipeline", "attach_pipeline", "changelog_topics", "raw_topic", "wall_clock_ms"]
