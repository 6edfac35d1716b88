"""The flush scheduler: the worker's wall clock over the core's :class:`DeadlineScheduler`.

A task holding one :class:`~processors.core.scheduler.DeadlineScheduler` per *actively
assigned* conversation partition, filled from the Table when partitions are assigned
(after changelog recovery, and once the partition's input has been read up to its
high-water mark) and dropped when they are revoked, so a worker never closes a batch it
does not own (a memory Table also holds frozen keys of revoked partitions). When a
deadline passes it writes the Flush to ``notify.flushes`` on the conversation's own
partition, marks the batch closed once the broker acknowledged it, and fans out one
Candidate per participant to ``notify.candidates`` keyed by recipient.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from faust.types import TP

from processors import topics as t
from processors.core.batching import ConversationBatch
from processors.core.records import Flush
from processors.core.scheduler import DeadlineScheduler
from processors.live.context import WorkerContext
from processors.live.conversations import ConversationSide
from processors.live.metrics import FLUSH_LATENESS, FLUSHES

log = logging.getLogger(__name__)

SCHEDULER_TICK_S = 0.02  # the scheduler checks deadlines this often (bounds lateness)
CATCH_UP_MAX_MS = 10_000  # at most this long after an assignment before closing anyway

Due = tuple[int, ConversationBatch, Flush]  # (partition, batch, its Flush)


class FlushScheduler:
    """Closes due batches of the conversation partitions this worker actively owns."""

    def __init__(self, ctx: WorkerContext, conversations: ConversationSide) -> None:
        self.ctx = ctx
        self.conversations = conversations
        conversations.scheduler = self
        ctx.on_settings_changed.append(self.reschedule_all)
        self.deadlines: dict[int, DeadlineScheduler[str]] = {}
        self.active: set[int] = set()
        # After an assignment, overdue batches wait until the partition's input has been
        # read up to the high-water mark (or CATCH_UP_MAX_MS passed): messages sent
        # while no worker ran then join the batch they belong to (contract §4 rule 3)
        # instead of being split off by a close that only happened late.
        self.catching_up: dict[int, int] = {}
        self.flush_writes: set[asyncio.Task[None]] = set()  # Flushes awaiting their ack
        self.lateness_ms: list[int] = []

    # -- what the conversation side tells it ------------------------------------------

    def schedule(self, partition: int, batch: ConversationBatch) -> None:
        deadlines = self.deadlines.get(partition)
        if deadlines is None:
            deadlines = self.deadlines[partition] = DeadlineScheduler()
        deadlines.schedule(batch.conversation_id, batch.deadline(self.ctx.cfg))

    def cancel(self, partition: int, conversation_id: str) -> None:
        deadlines = self.deadlines.get(partition)
        if deadlines is not None:
            deadlines.cancel(conversation_id)

    def reschedule_all(self) -> None:
        """Every deadline depends on the settings: start over after they changed."""
        cfg = self.ctx.cfg
        for partition, batches in self.conversations.batches.items():
            deadlines = self.deadlines.setdefault(partition, DeadlineScheduler())
            deadlines.reschedule_all((cid, b.deadline(cfg)) for cid, b in batches.items())

    # -- assignment -------------------------------------------------------------------

    def take(self, partitions: set[int]) -> None:
        """Newly owned ``partitions``: their batches are loaded; wait for their input."""
        for partition in partitions:
            self.catching_up[partition] = self.ctx.clock() + CATCH_UP_MAX_MS
        self.active |= partitions

    def drop(self, partition: int) -> None:
        self.active.discard(partition)
        self.catching_up.pop(partition, None)
        self.deadlines.pop(partition, None)

    # -- the task ---------------------------------------------------------------------

    async def run(self) -> None:
        """Close due batches of actively assigned partitions, promptly."""
        ctx = self.ctx
        while not ctx.app.should_stop:
            try:
                # Batches close on the settings in force: none before they are read.
                if ctx.config.ready:
                    ctx.refresh_cfg()
                    self.close_due(ctx.clock())
            except Exception:  # pragma: no cover - keep the scheduler alive
                log.exception("flush scheduler")
            await asyncio.sleep(SCHEDULER_TICK_S)

    def close_due(self, now: int) -> None:
        """Start writing the Flush of every due batch; batches close once it is acked.

        A batch is marked closed only after the broker acknowledged its Flush; if the
        write fails, the batch stays open as it was and is retried on the next tick.
        """
        cfg = self.ctx.cfg
        conversations = self.conversations
        due: list[Due] = []
        for partition in list(self.active):
            if partition in self.catching_up and not self._caught_up(partition, now):
                continue
            deadlines = self.deadlines.get(partition)
            if deadlines is None:
                continue
            batches = conversations.batches.get(partition, {})

            def deadline_of(
                cid: str, batches: dict[str, ConversationBatch] = batches
            ) -> int | None:
                batch = batches.get(cid)
                return None if batch is None else batch.deadline(cfg)

            for cid in deadlines.due(now, deadline_of):
                batch = batches[cid]
                if cid in conversations.closing:
                    # Being closed (a full batch's Flush): look again next tick.
                    deadlines.schedule(cid, batch.deadline(cfg))
                    continue
                due.append((partition, batch, cast(Flush, batch.due_flush(cfg))))
        if not due:
            return
        loop = asyncio.get_running_loop()
        for _, _, flush in due:
            conversations.closing[flush["conversation_id"]] = loop.create_future()
        # Acks wait behind whatever the producer is sending (a big fan-out's Candidates):
        # awaited in a task, so the next tick's deadlines are not held up by them.
        task = asyncio.ensure_future(self._write_and_commit(due))
        self.flush_writes.add(task)
        task.add_done_callback(self.flush_writes.discard)

    async def _write_and_commit(self, due: list[Due]) -> None:
        ctx = self.ctx
        try:
            # One send per partition for the whole tick's Flushes, then their acks.
            results = await ctx.write_all_and_wait(
                t.FLUSHES,
                [(flush["conversation_id"], flush, partition) for partition, _, flush in due],
            )
            self._commit_closes(due, results)
        except Exception:  # pragma: no cover - the batches stay open and are retried
            log.exception("committing closed batches")
        finally:
            for _, _, flush in due:
                closing = self.conversations.closing.pop(flush["conversation_id"], None)
                if closing is not None and not closing.done():
                    closing.set_result(None)

    def _commit_closes(self, due: list[Due], results: list[Any]) -> None:
        ctx = self.ctx
        conversations = self.conversations
        written = ctx.clock()
        for (partition, batch, flush), result in zip(due, results, strict=True):
            cid = flush["conversation_id"]
            if conversations.batches.get(partition, {}).get(cid) is not batch:
                continue  # revoked while we awaited; the new owner reads the Flush back
            if result is None and not batch.holds_flush(flush):
                continue  # already closed by the Flush read back: nothing to do twice
            if isinstance(result, BaseException):
                log.warning(
                    "Flush of conversation %r not written (%s); the batch stays open, "
                    "retried on the next tick",
                    cid,
                    type(result).__name__,
                )
                self.schedule(partition, batch)
                continue
            batch.commit_close(flush, ctx.cfg)
            conversations.closed_unpersisted.add(cid)
            self.schedule(partition, batch)  # messages that joined meanwhile
            lateness = written - int(flush["closed_at"])
            self.lateness_ms.append(lateness)
            FLUSH_LATENESS.observe(max(lateness, 0) / 1000)
            FLUSHES.labels(flush["cause"]).inc()
            conversations.start_fan_out(flush)

    def _caught_up(self, partition: int, now: int) -> bool:
        ctx = self.ctx
        if now < self.catching_up[partition]:
            for name in (t.MESSAGES, t.TYPING):
                tp = TP(ctx.prefix + name, partition)
                try:
                    high = ctx.app.consumer.highwater(tp)
                except Exception:  # noqa: BLE001 - not fetched yet
                    return False
                if high is None or ctx.positions.get(tp, -1) + 1 < high:
                    return False
        del self.catching_up[partition]
        return True
