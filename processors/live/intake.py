"""One input record in: size check, tombstone, decode, the door, then the agent's handler.

Shared by the conversation and user agents. Every record that cannot be decoded or
applied goes to ``notify.dead-letter`` with its reason (:class:`WorkerContext.
dead_letter`); the agent carries on with the next one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from processors import codec
from processors import topics as t
from processors.core.admission import Reject, Rekey, admit
from processors.live.context import WorkerContext
from processors.live.metrics import BOUNDED_TIMES

log = logging.getLogger(__name__)

# An input record larger than this is not decoded: it is dead-lettered by reference
# (topic, partition, offset, size), the same bound as a dead letter's copied value.
MAX_RECORD_BYTES = codec.DEAD_LETTER_MAX_VALUE_BYTES

#: (partition, decoded value) -> None, or an awaitable when applying it must wait.
Handler = Callable[[int, Any], "Awaitable[None] | None"]
#: key of a tombstone -> None (deletes what the key names)
Delete = Callable[[str], None]


class AdmissionError(ValueError):
    """An input record refused at the door (core/admission.py); dead-lettered as ``admit``."""


class RecordTooLarge(ValueError):
    """An input record over MAX_RECORD_BYTES (dead-lettered by reference)."""


class Intake:
    """Reads the records of one agent's topics and hands them to its handlers."""

    def __init__(
        self,
        ctx: WorkerContext,
        handlers: Mapping[str, Handler],
        tombstones: Mapping[str, Delete],
    ) -> None:
        prefix = ctx.prefix
        self.ctx = ctx
        self.handlers = {prefix + name: handler for name, handler in handlers.items()}
        self.tombstones = {prefix + name: delete for name, delete in tombstones.items()}
        self.records = {prefix + name: t.TOPICS[name].record or "" for name in handlers}
        # Input topics go through the door (core/admission.py) after decoding, the same
        # function replay uses; the worker's own notify.* topics do not.
        self.door = {prefix + name: name for name in t.INPUT_TOPICS if name in handlers}

    def apply(self, message: Any) -> Awaitable[None] | None:
        """Apply one consumer message (a Faust ``Message`` of this agent's topics).

        Returns an awaitable only when applying it must wait (a handler that writes, a
        dead letter); the common case is a plain call, no coroutine per event.
        """
        ctx = self.ctx
        topic = message.topic
        ctx.events_seen += 1
        ctx.positions[message.tp] = message.offset
        data = message.value
        if data is None or len(data) > MAX_RECORD_BYTES:
            return self._tombstone_or_oversized(message)
        try:
            value = codec.decode(self.records[topic], data)
        except Exception as exc:  # noqa: BLE001 - every decode failure is dead-lettered
            return ctx.dead_letter(message, exc, "decode")
        name = self.door.get(topic)
        if name is not None:
            key = message.key
            stamp = message.timestamp  # Faust: seconds; admission: epoch ms
            verdict = admit(
                name,
                key.decode("utf-8", "replace") if isinstance(key, bytes) else key,
                value,
                int(stamp * 1000) if stamp else None,
                ctx.clock(),
            )
            if isinstance(verdict, Reject):
                return ctx.dead_letter(message, AdmissionError(verdict.reason), "admit")
            if isinstance(verdict, Rekey):
                return ctx.rekey(message, verdict.key)
            if verdict.bounded_from is not None:
                BOUNDED_TIMES.labels(name).inc()
            if verdict.value is not None:
                value = verdict.value
        try:
            result = self.handlers[topic](message.partition, value)
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the agent
            return self._not_applied(message, exc)
        if result is not None:
            return self._finish(message, result)
        return None

    async def _finish(self, message: Any, result: Awaitable[None]) -> None:
        try:
            await result
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the agent
            await self._not_applied(message, exc)

    async def _not_applied(self, message: Any, exc: Exception) -> None:
        log.warning("cannot apply a record from %s: %s", message.topic, exc)
        await self.ctx.dead_letter(message, exc, "process")

    async def _tombstone_or_oversized(self, message: Any) -> None:
        """A record with no value (a delete) or too large to decode."""
        ctx = self.ctx
        data = message.value
        if data is not None:
            error = RecordTooLarge(
                f"record of {len(data)} bytes; at most {MAX_RECORD_BYTES} are read "
                "(dead-lettered by reference: topic, partition, offset, size)"
            )
            await ctx.dead_letter(message, error, "decode")
            return
        delete = self.tombstones.get(message.topic)
        if delete is None:
            name = self.records[message.topic] or "record"
            await ctx.dead_letter(
                message, codec.DecodeError(f"no value (null or tombstone) for {name}"), "decode"
            )
            return
        key = message.key
        try:
            if key is None:
                raise ValueError("tombstone without a key: nothing to delete")
            text = key.decode("utf-8") if isinstance(key, bytes) else str(key)
        except (ValueError, UnicodeDecodeError) as exc:
            await ctx.dead_letter(message, exc, "decode")
            return
        try:
            delete(text)
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the agent
            await ctx.dead_letter(message, exc, "process")
