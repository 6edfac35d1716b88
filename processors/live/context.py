"""What the worker's agents share: the app, the clock, the settings in force, the outputs.

One :class:`WorkerContext` per worker process, built by :class:`processors.live.agents.
Pipeline` and handed to the conversation side, the user side and the flush scheduler.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, cast

import faust
import orjson
from faust.types import TP

from processors import codec
from processors import topics as t
from processors.app import app_settings
from processors.core.settings import CoreSettings
from processors.live.config import ConfigReader
from processors.live.fastpath import Outbox, current_outbox
from processors.live.metrics import DEAD_LETTERS, DECISIONS, REKEYED

log = logging.getLogger(__name__)

Clock = Callable[[], int]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class WorkerContext:
    """The app, its topics' prefix, the clock, the config reader and the settings in force.

    ``cfg`` is the :class:`CoreSettings` in force: ``--set`` values until an AppSettings
    record on chat.settings replaces them (:meth:`refresh_cfg`).
    """

    def __init__(
        self,
        app: faust.App,
        config: ConfigReader,
        *,
        core_overrides: Mapping[str, Any] | None,
        clock: Clock,
    ) -> None:
        self.app = app
        self.settings = app_settings(app)
        self.prefix = self.settings.topic_prefix
        self.clock = clock
        self.config = config
        self.core_overrides = dict(core_overrides or {})
        self.cfg = CoreSettings.from_app_settings(None, self.core_overrides)
        self._settings_seen = -1
        self.persistent_store = not str(self.settings.store).startswith("memory")
        self.output_records = {name: spec.record or "" for name, spec in t.TOPICS.items()}
        # The last offset read per input partition (the scheduler's catch-up check).
        self.positions: dict[TP, int] = {}
        # -- observability (tests and the bench read these) ------------------------------
        self.dead_letters: Counter[str] = Counter()
        self.events_seen = 0
        self.input_events = 0  # messages, typing and presence applied (bench reads it)
        self.table_writes = 0
        # (id of a table, partition) -> its changelog topic and TP (table_set)
        self._changelogs: dict[tuple[int, int], tuple[str, TP]] = {}
        self.on_decision: Callable[[Mapping[str, Any]], None] | None = None
        # Called when the settings in force changed (every batch deadline moved).
        self.on_settings_changed: list[Callable[[], None]] = []

    # -- settings ---------------------------------------------------------------------

    def refresh_cfg(self) -> bool:
        """Take up the settings in force; True (and listeners told) if they changed.

        ``--set`` values are the starting defaults; an AppSettings record on
        chat.settings replaces them (logged once); a tombstone there brings the
        ``--set`` values back.
        """
        version = self.config.state.settings_version
        if version == self._settings_seen:
            return False
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
            return False
        self.cfg = cfg
        for listener in self.on_settings_changed:
            listener()
        return True

    # -- outputs ----------------------------------------------------------------------

    async def produce(
        self,
        name: str,
        key: str | bytes | None,
        value: Mapping[str, Any],
        partition: int | None = None,
    ) -> None:
        """Encode and hand one record to the producer (no Faust Topic.send overhead).

        ``Topic.send`` costs ~95 us per record here (FutureMessage, schema, callbacks);
        the producer's own send is a fraction of that, and outputs are ~5x the flushes.
        """
        data = codec.encode_built(self.output_records[name], value)
        k = key.encode() if isinstance(key, str) else key
        outbox = current_outbox()
        if outbox is not None:  # applying a batch of events: sent when it ends
            outbox.add(self.prefix + name, k, data, partition)
            return
        await self.app.producer.send(self.prefix + name, k, data, partition, None, None)

    async def produce_decision(self, key: str, decision: Mapping[str, Any]) -> None:
        DECISIONS.labels(
            decision["outcome"], decision["reason"] or "", decision.get("channel") or ""
        ).inc()
        await self.produce(t.DECISIONS, key, decision)
        if self.on_decision is not None:
            self.on_decision(decision)

    async def write_and_wait(
        self, name: str, key: str, value: Mapping[str, Any], partition: int
    ) -> None:
        """Produce one record on ``partition`` and wait for the broker's ack."""
        sent = await self.app.producer.send(
            self.prefix + name,
            key.encode(),
            codec.encode(self.output_records[name], value),
            partition,
            None,
            None,
        )
        await sent

    async def write_all_and_wait(
        self, name: str, records: list[tuple[str, Mapping[str, Any], int]]
    ) -> list[BaseException | None]:
        """Produce ``(key, value, partition)`` records, one send per partition, and wait
        for the broker: per record, None once acknowledged or the error."""
        outbox = Outbox(self.app)
        record = self.output_records[name]
        results: list[BaseException | None] = []
        for key, value, partition in records:
            try:
                data = codec.encode_built(record, value)
            except codec.EncodeError as exc:  # this record only; the others go on
                results.append(exc)
                continue
            results.append(None)
            outbox.add(self.prefix + name, key.encode(), data, partition)
        sent = iter(await outbox.send_and_wait())
        return [next(sent) if result is None else result for result in results]

    async def dead_letter(self, message: Any, exc: BaseException, stage: str) -> None:
        """``message`` (a Faust consumer message) to notify.dead-letter with the reason."""
        source = message.topic[len(self.prefix) :]
        value = message.value if isinstance(message.value, bytes) else None
        key = message.key if isinstance(message.key, bytes) else None
        await self.dead_letter_record(
            source,
            key,
            value,
            str(exc) or type(exc).__name__,
            stage,
            message.partition,
            message.offset,
        )

    async def dead_letter_record(
        self,
        source: str,
        key: bytes | None,
        value: bytes | None,
        error: str,
        stage: str,
        partition: int,
        offset: int,
    ) -> None:
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
        await self.produce(t.DEAD_LETTER, key, record)

    async def rekey(self, message: Any, key: str) -> None:
        """Re-publish a record, bytes unchanged, to its own topic under the key it names.

        Admission rule 4: an event under a missing or foreign key would be batched on a
        partition that does not own its conversation (or user). Re-publishing to the
        same input topic lets the producer's partitioner place it with the platform's
        own partition count; the original is then skipped. A retry after a crash
        publishes it twice, which dedupe by message_id (and newer-wins for typing and
        presence) makes harmless.
        """
        source = message.topic[len(self.prefix) :]
        REKEYED.labels(source).inc()
        await self.app.producer.send(
            message.topic, key.encode(), message.value, None, message.timestamp, message.headers
        )

    async def table_set(self, table: Any, partition: int, key: str, value: dict[str, Any]) -> None:
        """``table[key] = value`` on the hot path, without Faust's per-write machinery.

        Same effect as ``Table.__setitem__`` (store updated, one changelog record on the
        partition of the event being processed, persisted offset kept for RocksDB) at
        about a third of the cost: Faust's ``send_soon`` path (FutureMessage, buffer,
        pending task, sensors) was ~175 us per write in the profile. Called only while
        an event is being applied, where RocksDB stores find the partition of the
        current event. ``value`` is not changed afterwards by the caller (it may be
        encoded later).

        While a batch of events is applied, the changelog gets one record per key per
        batch: the key's last state, encoded once when the batch's outputs are handed
        to the producer (:meth:`Outbox.set_state`). Why dropping the states a later
        write of the same batch superseded is safe:

        * the changelog is a compacted log whose readers (recovery, standbys) keep the
          last record of a key; the superseded states would only ever be the last one
          if the log stopped between two records of the same batch;
        * a log stopped there is a crash before the batch was acked: its events are
          read again from the committed offset and applied on top of whatever the log
          holds. Every record of the batch, superseded or last, is the key's state
          after some prefix of the batch's events, so the successor sees either an
          intermediate or the final such state; the core makes re-applying the
          batch's events to either harmless (message ids de-duplicated, in the batch
          or among the recent flushed ids; older typing and presence ignored; flush
          ids deterministic, so a close is recognised, not repeated);
        * the batch is acked only after the records, coalesced or not, were handed to
          the producer (``consume_in_batches``), and a commit flushes the producer
          first: a committed offset never covers an event whose state is not in the
          log, with or without coalescing.
        """
        table.data[key] = value
        self.table_writes += 1
        store = table.data
        changelog = self._changelogs.get((id(table), partition))
        if changelog is None:  # the topic name and TP, built once (~4% of the time)
            topic = table.changelog_topic.get_topic_name()
            changelog = self._changelogs[(id(table), partition)] = (topic, TP(topic, partition))
        topic, tp = changelog
        outbox = current_outbox()
        if outbox is not None:  # applying a batch of events: sent when it ends
            outbox.set_state(
                topic,
                partition,
                _json_bytes(key),
                value,
                _json_bytes,
                # RocksDB: where recovery starts after a restart
                (lambda offset: store.set_persisted_offset(tp, offset))
                if self.persistent_store
                else None,
            )
            return
        sent = await self.app.producer.send(
            topic, _json_bytes(key), _json_bytes(value), partition, None, None
        )
        if self.persistent_store:  # RocksDB: where recovery starts after a restart
            cast("asyncio.Future[Any]", sent).add_done_callback(
                lambda fut: _set_offset(store, tp, fut)
            )


# What Faust's "json" codec writes for plain keys and dicts (recovery reads it back);
# one encoder, not a new one per call as json.dumps(..., separators=...) builds.
_encode_json = json.JSONEncoder(separators=(",", ":")).encode


def _json_bytes(obj: Any) -> bytes:
    """Compact JSON of a table key or value, as Faust's "json" codec reads it back.

    orjson (~10x json's encoder; a tenth of the worker's time with batches open went
    to encoding batches); the standard encoder for what orjson refuses (integers
    beyond 64 bits, non-string keys), so every value json could write is written.
    orjson writes non-ASCII characters as UTF-8 instead of ``\\u`` escapes: the same
    JSON for any reader.
    """
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:
        return _encode_json(obj).encode()


def _set_offset(store: Any, tp: TP, fut: Any) -> None:
    if not fut.cancelled() and fut.exception() is None:
        store.set_persisted_offset(tp, fut.result().offset)
