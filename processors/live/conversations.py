"""The conversation agent: batches hot in memory, written to a Table on transitions.

Consumes ``chat.messages``, ``chat.typing``, ``chat.conversations`` and
``notify.flushes`` (co-partitioned, keyed by conversation_id). Each conversation's
:class:`ConversationBatch` is hot in a dict and the ``conversation-batches`` Table
(changelog) is written only on state transitions: a message joining, a typing event
opening a batch, a close. Typing refreshes, starts and stops, duplicates and system
messages touch no Table. (Measured: one Table write per input event runs at ~0.35 of
the bare Faust loop; transitions only at ~0.5-0.75.)

Closing is the flush scheduler's (:mod:`processors.live.scheduler`), except a batch
that a message would overflow, which closes here first (cause ``max_size``). Timers
cannot write Tables, so every Flush is also read back here from ``notify.flushes``:
this side then persists the closed state (or, after a crash between the Flush and the
Table write, performs the same deterministic close on the recovered state and fans out
again, so the Flush itself is not emitted twice).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, cast

import faust

from processors import topics as t
from processors.core.batching import ConversationBatch
from processors.core.decisions import fan_out
from processors.core.records import Conversation, Flush, MessageEvent, TypingEvent
from processors.core.settings import snapshot_wins
from processors.live.context import WorkerContext
from processors.live.fastpath import consume, outputs_in_batches
from processors.live.intake import Intake
from processors.live.metrics import FLUSHES

if TYPE_CHECKING:
    from processors.live.scheduler import FlushScheduler

log = logging.getLogger(__name__)

# A fan-out hands this many Candidates to the producer between event-loop turns, so a
# huge conversation does not hold back other conversations' deadlines.
FAN_OUT_YIELD_EVERY = 100


class FlushNotWritten(RuntimeError):
    """The Flush that had to close a full batch first could not be written."""


class ConversationSide:
    """Hot batches of the conversation partitions this worker owns, and their Tables."""

    def __init__(self, ctx: WorkerContext, batches_table: Any, conversations_table: Any) -> None:
        self.ctx = ctx
        self.batches_table = batches_table
        self.conversations_table = conversations_table
        self.scheduler: FlushScheduler  # set by the scheduler, which reads these batches
        # partition -> conversation_id -> batch: authoritative while the partition is owned
        self.batches: dict[int, dict[str, ConversationBatch]] = {}
        self.closed_unpersisted: set[str] = set()
        # conversation_id -> resolved once the Flush being written for it is acked (or
        # failed): a second close of the same batch waits for the first.
        self.closing: dict[str, asyncio.Future[None]] = {}
        # conversation_id -> resolved once the fan-out of its last Flush was handed to
        # the producer (or failed).
        self.fan_outs: dict[str, asyncio.Future[None]] = {}
        # Flushes waiting for the fan-out task, in order, and that task while it runs.
        self.fan_out_queue: list[tuple[Flush, asyncio.Future[None]]] = []
        self.fan_out_task: asyncio.Future[None] | None = None
        self.intake = Intake(
            ctx,
            {
                t.MESSAGES: self.on_message,
                t.TYPING: self.on_typing,
                t.CONVERSATIONS: self.on_conversation,
                t.FLUSHES: self.on_flush,
            },
            {t.CONVERSATIONS: self.delete_conversation},
        )

    async def agent(self, stream: faust.StreamT[bytes]) -> None:
        await consume(self.ctx.app, stream, self.intake.apply)

    # -- state ------------------------------------------------------------------------

    def batch(self, partition: int, conversation_id: str) -> ConversationBatch:
        batches = self.batches.get(partition)
        if batches is None:
            batches = self.batches[partition] = {}
        batch = batches.get(conversation_id)
        if batch is None:
            batch = batches[conversation_id] = ConversationBatch(conversation_id)
        return batch

    async def persist(self, partition: int, batch: ConversationBatch) -> None:
        cid = batch.conversation_id
        state = batch.to_dict()
        pending = state.get("p")
        if pending is not None:
            # to_dict shares the live list of pending messages, and the changelog
            # record is encoded when the agent's batch ends (table_set): copy it.
            state["p"] = list(pending)
        await self.ctx.table_set(self.batches_table, partition, cid, {"p": partition, "b": state})
        self.closed_unpersisted.discard(cid)

    def load(self, partitions: set[int]) -> int:
        """Load the batches of newly owned ``partitions`` from the (recovered) Table."""
        loaded = 0
        for cid, stored in list(self.batches_table.data.items()):
            if not isinstance(stored, dict) or stored.get("p") not in partitions:
                continue
            partition = int(stored["p"])
            batch = ConversationBatch.from_dict(stored["b"])
            self.batches.setdefault(partition, {})[str(cid)] = batch
            self.scheduler.schedule(partition, batch)
            loaded += 1
        return loaded

    def drop(self, partition: int) -> None:
        """Forget a partition this worker no longer owns (its new owner has the Table)."""
        for cid in self.batches.pop(partition, {}):
            self.closed_unpersisted.discard(cid)

    # -- handlers ---------------------------------------------------------------------

    async def on_message(self, partition: int, value: MessageEvent) -> None:
        ctx = self.ctx
        ctx.input_events += 1
        cid = value["conversation_id"]
        batch = self.batch(partition, cid)
        while (closing := self.closing.get(cid)) is not None:
            await closing  # the scheduler is writing this batch's Flush
        # A message that would overflow the batch closes it first (cause max_size); a
        # message no batch can hold raises MessageTooLarge and is dead-lettered.
        full = batch.flush_before(value, ctx.cfg)
        if full is not None:
            await self._close_full(partition, batch, cast(Flush, full))
        if batch.add_message(value, ctx.cfg):
            await self.persist(partition, batch)
            self.scheduler.schedule(partition, batch)

    async def _close_full(self, partition: int, batch: ConversationBatch, full: Flush) -> None:
        cid = batch.conversation_id
        closing = self.closing[cid] = asyncio.get_running_loop().create_future()
        try:
            await self.ctx.write_and_wait(t.FLUSHES, cid, full, partition)
        except Exception as exc:
            # The batch stays as it was; the message goes to the dead-letter topic
            # (with its bytes) rather than into a batch too large to write.
            raise FlushNotWritten(
                f"the Flush closing the full batch was not written ({type(exc).__name__})"
            ) from None
        finally:
            del self.closing[cid]
            closing.set_result(None)
        batch.commit_close(full, self.ctx.cfg)
        FLUSHES.labels(full["cause"]).inc()
        await self.fan_out(full)
        self.closed_unpersisted.add(cid)  # persisted just below with the message

    def on_typing(self, partition: int, value: TypingEvent) -> Any:
        self.ctx.input_events += 1
        batch = self.batch(partition, value["conversation_id"])
        opened = batch.opened_at
        if not batch.apply_typing(value, self.ctx.cfg):
            return None
        if batch.pending:
            self.scheduler.schedule(partition, batch)
        # Only a typing event that opens a batch is persisted (opened_at is part of the
        # Flush). Starts, refreshes and stops only move the deadline: a worker that
        # crashes loses them and its successor may close that batch a little early,
        # which costs nothing but an earlier notification. Writing them would cost a
        # Table write for most typing events (measured: the bulk of the worker's time).
        if batch.opened_at != opened:
            return self.persist(partition, batch)
        return None

    def delete_conversation(self, cid: str) -> None:
        """A tombstone on chat.conversations: forget the snapshot (table and changelog).

        Later flushes of the conversation decide UNKNOWN_CONVERSATION.
        """
        if cid in self.conversations_table:
            del self.conversations_table[cid]  # Faust writes the changelog tombstone
            self.ctx.table_writes += 1

    def on_conversation(self, partition: int, value: Conversation) -> None:
        cid = value["conversation_id"]
        if snapshot_wins(self.conversations_table.get(cid), value):
            self.conversations_table[cid] = value
            self.ctx.table_writes += 1

    async def on_flush(self, partition: int, flush: Flush) -> None:
        """A Flush read back: make sure the close is in the Table.

        Normally the scheduler closed the batch, produced this Flush and fanned out
        already; the Table is written here because timers cannot write Tables.
        """
        cid = flush["conversation_id"]
        batch = self.batch(partition, cid)
        while (closing := self.closing.get(cid)) is not None:
            # Read back before the scheduler saw its ack: let it commit the close first
            # (else both would close the batch and fan out).
            await closing
        if cid in self.closed_unpersisted:
            running = self.fan_outs.get(cid)
            if running is not None:
                # Persist the close only once its Candidates are handed over, so a
                # crash in between repeats the fan-out instead of losing it.
                await asyncio.wait([running])
            await self.persist(partition, batch)
        elif batch.holds_flush(flush):
            # Recovered state from before a crash that happened between producing this
            # Flush and persisting the close: close the same way (deterministic) without
            # producing the Flush again, and fan out (the crashed worker may not have).
            batch.commit_close(flush, self.ctx.cfg)
            self.scheduler.cancel(partition, cid)
            await self.persist(partition, batch)
            await self.fan_out(flush)

    # -- fan-out ----------------------------------------------------------------------

    async def fan_out(self, flush: Flush) -> None:
        """One Candidate per participant to notify.candidates, keyed by recipient.

        Yields to the event loop every ``FAN_OUT_YIELD_EVERY`` Candidates (the
        producer's send only queues a record, so without a yield a 5,000-participant
        fan-out would hold the loop, and every other deadline, until it is done).
        """
        ctx = self.ctx
        cid = flush["conversation_id"]
        await ctx.config.caught_up.wait()  # display names
        candidates, skips = fan_out(
            flush, self.conversations_table.get(cid), ctx.clock(), ctx.config.names
        )
        # Candidates go to the producer in batches (one send per partition), also when
        # the scheduler fans out outside an agent's batch.
        async with outputs_in_batches(ctx.app) as outbox:
            for decision in skips:
                await ctx.produce_decision(cid, decision)
            for i, candidate in enumerate(candidates, start=1):
                await ctx.produce(t.CANDIDATES, candidate["recipient_id"], candidate)
                if i % FAN_OUT_YIELD_EVERY == 0:
                    await outbox.send()
                    await asyncio.sleep(0)

    def start_fan_out(self, flush: Flush) -> None:
        """Fan out in the background so the scheduler goes on closing other batches.

        Flushes queue up for one fan-out task (:meth:`_fan_out_queued`) that hands the
        Candidates of every queued Flush to the producer together, one ``send_batch``
        per partition. (A task per Flush, each with its own sends, made every task wait
        on the same partition's pending producer batch and all of them woke whenever
        one batch drained: with a flush per message that was a third of the worker's
        time, and quadratic in the Flushes in flight.) One queue, taken in order, also
        keeps one conversation's flushes fanning out in order.
        """
        cid = flush["conversation_id"]
        done = asyncio.get_running_loop().create_future()
        self.fan_out_queue.append((flush, done))
        self.fan_outs[cid] = done
        if self.fan_out_task is None:
            self.fan_out_task = asyncio.ensure_future(self._fan_out_queued())

    async def _fan_out_queued(self) -> None:
        """Fan out every queued Flush, round by round, until the queue is empty."""
        try:
            while self.fan_out_queue:
                queued, self.fan_out_queue = self.fan_out_queue, []
                try:
                    async with outputs_in_batches(self.ctx.app) as outbox:
                        for flush, _ in queued:
                            try:
                                await self.fan_out(flush)
                            except Exception:
                                log.exception(
                                    "fan-out of a flush of conversation %r",
                                    flush["conversation_id"],
                                )
                            if len(outbox) >= FAN_OUT_YIELD_EVERY:
                                # many small fan-outs: let other deadlines run too
                                await outbox.send()
                                await asyncio.sleep(0)
                except Exception:
                    log.exception("handing a round of fan-outs to the producer")
                finally:
                    for flush, done in queued:
                        if not done.done():
                            done.set_result(None)
                        cid = flush["conversation_id"]
                        if self.fan_outs.get(cid) is done:
                            del self.fan_outs[cid]
        finally:
            self.fan_out_task = None
