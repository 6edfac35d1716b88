"""Per-conversation batching (contract §4): group messages until everyone stopped typing.

One :class:`ConversationBatch` per conversation holds the pending batch, who is typing,
and a small window of recent message ids for de-duplication. It knows nothing about
clocks: callers ask :meth:`ConversationBatch.deadline` when the batch must close and
call :meth:`ConversationBatch.close` once their clock (the worker's wall clock, or the
event-time clock of ``replay``) has reached it. The deadline is a pure function of the
state and the settings, so the same events always close at the same ``closed_at``.

Rules, with the choices the design left open:

* A message ends its sender's typing at the message's event time.
* The batch opens at the first typing start or message after the previous close. An
  opening that never got a message is abandoned once nobody has typed for the
  inactivity period, so a typist who gave up at 09:00 does not make a 17:00 batch
  look eight hours old.
* The batch closes at ``max(last message, last typing stop) + inactivity``, where a
  typist who is still typing stops at their last refresh + ``typing_ttl``; or at
  ``first message + max_batch``, whichever is earlier (ties go to ``inactivity``).
* A message whose event time precedes the last close joins the next batch; for timing
  it counts as arriving at that close, so it cannot make the next batch close in the
  past.
* A typing event older than the one held for that user is ignored; so is a typing
  event older than the last close from a user with nothing held (their entry was
  pruned at the close, and a stale indicator must not reopen a batch).
* Duplicates: a message id in the pending batch or among the last ``RECENT_IDS``
  flushed ids is ignored. The window is kept as 64-bit digests to bound the state.
* Size: a batch holds at most ``MAX_BATCH_MESSAGES`` messages and ``MAX_BATCH_BYTES``
  of message payload (:func:`message_bytes`). The message that would exceed either
  bound first closes the pending batch with cause ``max_size``, at the later of its own
  effective time and the batch's last message, then opens the next batch. Text longer
  than ``MAX_TEXT_CHARS`` is cut, with ``TRUNCATION_MARK`` at the end, when it joins;
  a message still larger than ``MAX_MESSAGE_BYTES`` (ids and mentions) cannot join
  any batch and is refused with :class:`MessageTooLarge`. So a Flush (payload plus its
  ``message_ids``) stays well under a producer's 1 MB record limit.
* Closing is two steps so a live worker can write the Flush before it forgets the
  batch: :meth:`ConversationBatch.due_flush` / :meth:`ConversationBatch.flush_before`
  compute the Flush without changing anything; :meth:`ConversationBatch.commit_close`
  applies it once it is safely written.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from bisect import insort
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from processors.core.ids import flush_id
from processors.core.settings import CoreSettings

# How many flushed message ids a conversation remembers for de-duplication.
# Producers retry within seconds; 32 covers a retried burst of a busy conversation
# and keeps the serialised window at 344 bytes.
RECENT_IDS = 32

# Size bounds of one batch (see the module doc). 256 KiB of payload keeps a Flush, which
# carries the payload and the message ids again, far below the 1 MB record limit of a
# default Kafka producer, and a Candidate small enough to copy per recipient.
MAX_BATCH_BYTES = 256 * 1024
MAX_BATCH_MESSAGES = 500
# Stored text per message, in characters (a long chat message is ~1-2k characters).
MAX_TEXT_CHARS = 4_000
TRUNCATION_MARK = "… [truncated]"
# One message's payload after truncation; more means huge ids or mention lists.
MAX_MESSAGE_BYTES = 64 * 1024
# What a message costs beyond its strings: ts, type, origin, framing.
MESSAGE_OVERHEAD_BYTES = 32

USER_MESSAGE = "UserMessage"


class MessageTooLarge(ValueError):
    """A message that no batch can hold, even with its text truncated."""


def _utf8_len(text: str) -> int:
    # ASCII text (the common case) is one byte per character; skip the encoding copy.
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def truncated_text(text: str) -> str:
    """``text`` cut to ``MAX_TEXT_CHARS`` characters, the cut marked visibly."""
    if len(text) <= MAX_TEXT_CHARS:
        return text
    return text[: MAX_TEXT_CHARS - len(TRUNCATION_MARK)] + TRUNCATION_MARK


def message_size(message: Mapping[str, Any]) -> int:
    """:func:`message_bytes`, refusing a message no batch can hold (:class:`MessageTooLarge`)."""
    size = message_bytes(message)
    if size > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(
            f"message is {size} bytes after its text is truncated (ids and mentions); "
            f"at most {MAX_MESSAGE_BYTES} bytes fit in a batch"
        )
    return size


def message_bytes(message: Mapping[str, Any]) -> int:
    """The UTF-8 size of what ``message`` contributes to a batch (its text truncated)."""
    mentions = message.get("mentions") or ()
    strings = "".join(
        (
            truncated_text(message.get("text") or ""),
            message["message_id"],
            message["conversation_id"],
            message.get("sender_id") or "",
            *mentions,
        )
    )
    size = len(strings) if strings.isascii() else len(strings.encode("utf-8"))
    return MESSAGE_OVERHEAD_BYTES + size + 2 * len(mentions)


# A message id is digested up to three times within a few events (is it a duplicate,
# before flush_before and add_message; into the window, at the close): remember the
# recent ones.
@lru_cache(maxsize=4096)
def _digest(message_id: str) -> int:
    # A stable digest (Python's hash() is salted per process, and this survives restarts).
    h = _DIGEST_HASH.copy()
    h.update(message_id.encode())
    return int.from_bytes(h.digest(), "little")


# The empty hash, copied per id: a third cheaper than making a blake2b (measured), and
# every message id is digested once.
_DIGEST_HASH = hashlib.blake2b(digest_size=8)


def _ts_key(message: Mapping[str, Any]) -> int:
    return int(message["ts"])


class ConversationBatch:
    """The batching state of one conversation. Serialise with :meth:`to_dict`."""

    __slots__ = (
        "conversation_id",
        "pending",
        "pending_ids",
        "opened_at",
        "first_at",
        "last_message_at",
        "last_close",
        "typing",
        "recent",
        "pending_bytes",
        "_sized",
        "_end",
        "_end_ttl",
    )

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        self.pending: list[dict[str, Any]] = []  # user messages, in event-time order
        self.pending_ids: set[str] = set()
        self.pending_bytes = 0  # message_bytes() of the pending messages
        # (message, size) of the last message sized, so flush_before + add_message of
        # the same record measure it once.
        self._sized: tuple[Mapping[str, Any], int] | None = None
        self.opened_at: int | None = None
        self.first_at = 0  # effective time of the earliest pending message
        self.last_message_at = 0  # effective time of the latest pending message
        self.last_close = 0  # closed_at of the previous flush
        # user_id -> (ts of the last event, typing); tuples of plain values are not
        # tracked by the cycle collector, which matters with a million conversations.
        self.typing: dict[str, tuple[int, bool]] = {}
        self.recent: list[int] = []  # digests of recently flushed message ids, oldest first
        # _activity_end() as last computed for typing_ttl_ms == _end_ttl (None: not known),
        # kept up to date as events arrive: deadline() is asked after nearly every event,
        # and going over the typists each time was ~5% of replay's batching (measured).
        # So typing and last_message_at change only through the methods here.
        self._end = 0
        self._end_ttl: int | None = None

    # -- events ---------------------------------------------------------------------

    @property
    def has_pending(self) -> bool:
        return bool(self.pending)

    def _joins(self, message: Mapping[str, Any]) -> bool:
        """Would ``message`` join a batch (a user message not seen before)?"""
        if message["type"] != USER_MESSAGE:
            return False  # system messages never open, extend or join a batch
        message_id = message["message_id"]
        return not (
            message_id in self.pending_ids or (self.recent and _digest(message_id) in self.recent)
        )

    def flush_before(self, message: Mapping[str, Any], cfg: CoreSettings) -> dict[str, Any] | None:
        """The Flush that must close before ``message`` joins (cause ``max_size``), or None.

        Changes nothing: commit it with :meth:`commit_close`, then call
        :meth:`add_message`. Raises :class:`MessageTooLarge` for a message no batch can
        hold.
        """
        if not self._joins(message) or self._fits(self._size(message)):
            return None
        return self._full_flush(int(message["ts"]))

    def _full_flush(self, ts: int) -> dict[str, Any]:
        """The ``max_size`` Flush closing before a message at ``ts`` joins."""
        effective = ts if ts > self.last_close else self.last_close
        closed_at = effective if effective > self.last_message_at else self.last_message_at
        return self._flush_record(closed_at, "max_size")

    def _size(self, message: Mapping[str, Any]) -> int:
        sized = self._sized
        if sized is not None and sized[0] is message:
            return sized[1]
        size = message_size(message)
        self._sized = (message, size)
        return size

    def _fits(self, size: int) -> bool:
        return not self.pending or (
            self.pending_bytes + size <= MAX_BATCH_BYTES and len(self.pending) < MAX_BATCH_MESSAGES
        )

    def add_message(self, message: Mapping[str, Any], cfg: CoreSettings) -> bool:
        """Apply a MessageEvent; True if it joined the pending batch.

        System messages and duplicates return False and change nothing. Callers first
        close what :meth:`flush_before` returns; a message that would still exceed the
        size bound raises ``ValueError`` (as does one larger than any batch).
        """
        if not self._joins(message):
            return False
        size = self._size(message)
        self._sized = None
        if not self._fits(size):
            raise ValueError(
                f"conversation {self.conversation_id}: the batch is full; "
                "close flush_before(message) first"
            )
        self._add(message, size, cfg)
        return True

    def add_message_now(
        self, message: Mapping[str, Any], cfg: CoreSettings
    ) -> tuple[dict[str, Any] | None, bool]:
        """:meth:`flush_before`, :meth:`commit_close` and :meth:`add_message` in one step,
        for callers with nothing to write in between (``replay``).

        Returns the ``max_size`` Flush it committed (or None) and whether ``message``
        joined. Raises :class:`MessageTooLarge`, changing nothing, for a message no batch
        can hold. (One step: the message is checked and sized once, not twice.)
        """
        if not self._joins(message):
            return None, False
        size = message_size(message)
        full = None
        if not self._fits(size):
            full = self._full_flush(int(message["ts"]))
            self.commit_close(full, cfg)
            if not self._joins(message):  # as add_message would check again
                return full, False
        self._add(message, size, cfg)
        return full, True

    def _add(self, message: Mapping[str, Any], size: int, cfg: CoreSettings) -> None:
        """Join ``message`` (checked: it joins and fits) of :func:`message_size` ``size``."""
        ts = int(message["ts"])
        effective = ts if ts > self.last_close else self.last_close
        pending = self.pending
        if not pending:
            self._abandon_stale_opening(effective, cfg)
            if self.opened_at is None or self.opened_at > effective:
                self.opened_at = effective
            self.first_at = effective
            if effective < self.last_message_at:
                self._end_ttl = None  # (a later message could have been the end)
            self.last_message_at = effective
        else:
            if effective < self.first_at:
                self.first_at = effective
            if effective > self.last_message_at:
                self.last_message_at = effective
        if effective > self._end:
            self._end = effective
        sender = message.get("sender_id")
        if sender is not None:
            held = self.typing.get(sender)
            if held is None or held[0] <= ts:
                self._set_typing(sender, ts, False, held)
        # Kept as given: callers pass freshly decoded records they do not reuse.
        record = message if isinstance(message, dict) else dict(message)
        text = record.get("text")
        if text is not None and len(text) > MAX_TEXT_CHARS:
            record = {**record, "text": truncated_text(text)}
        if pending and ts < pending[-1]["ts"]:
            insort(pending, record, key=_ts_key)
        else:
            pending.append(record)
        self.pending_ids.add(message["message_id"])
        self.pending_bytes += size

    def apply_typing(self, event: Mapping[str, Any], cfg: CoreSettings) -> bool:
        """Apply a TypingEvent; True if the state changed."""
        user = event["user_id"]
        ts = int(event["ts"])
        typing = bool(event["typing"])
        held = self.typing.get(user)
        if held is None:
            if ts < self.last_close:
                return False
        elif ts < held[0]:
            return False  # older than what we hold for this user
        if typing and not self.pending:
            self._abandon_stale_opening(ts, cfg)
            if self.opened_at is None:
                self.opened_at = ts
        self._set_typing(user, ts, typing, held)
        return True

    def _set_typing(self, user: str, ts: int, typing: bool, held: tuple[int, bool] | None) -> None:
        """Hold ``(ts, typing)`` for ``user`` in place of ``held``; keep ``_end`` exact."""
        self.typing[user] = (ts, typing)
        ttl = self._end_ttl
        if ttl is None:
            return
        stop = ts + ttl if typing else ts
        if stop >= self._end:
            self._end = stop
        elif held is not None and (held[0] + ttl if held[1] else held[0]) >= self._end:
            self._end_ttl = None  # the end was this user's and moved earlier: recompute

    def _abandon_stale_opening(self, now: int, cfg: CoreSettings) -> None:
        if self.opened_at is None:
            return
        if self._activity_end(cfg) + cfg.inactivity_ms <= now:
            self.opened_at = None

    # -- time -----------------------------------------------------------------------

    def _activity_end(self, cfg: CoreSettings) -> int:
        """The later of the last message and the last typing stop (projected for typists)."""
        ttl = cfg.typing_ttl_ms
        if ttl == self._end_ttl:
            return self._end
        end = self.last_message_at
        for ts, typing in self.typing.values():
            stop = ts + ttl if typing else ts
            if stop > end:
                end = stop
        self._end, self._end_ttl = end, ttl
        return end

    def deadline(self, cfg: CoreSettings) -> int | None:
        """When this batch closes, or None while it holds no message.

        Anyone still typing stops at most at their last refresh + ``typing_ttl``, so
        the inactivity deadline already lies after every current typist; only a
        newer event can move it.
        """
        if not self.pending:
            return None
        inactive = self._activity_end(cfg) + cfg.inactivity_ms
        cap = self.first_at + cfg.max_batch_ms
        return inactive if inactive <= cap else cap

    def is_typing(self, user_id: str, now: int, cfg: CoreSettings) -> bool:
        held = self.typing.get(user_id)
        return held is not None and bool(held[1]) and now < held[0] + cfg.typing_ttl_ms

    def due_flush(self, cfg: CoreSettings) -> dict[str, Any]:
        """The Flush this batch gives when its :meth:`deadline` comes; changes nothing."""
        if not self.pending:
            raise ValueError(f"conversation {self.conversation_id}: no pending batch to close")
        inactive = self._activity_end(cfg) + cfg.inactivity_ms
        cap = self.first_at + cfg.max_batch_ms
        closed_at, cause = (inactive, "inactivity") if inactive <= cap else (cap, "max_batch")
        return self._flush_record(closed_at, cause)

    def _flush_record(self, closed_at: int, cause: str) -> dict[str, Any]:
        messages = list(self.pending)
        ids = [m["message_id"] for m in messages]
        opened_at = self.opened_at if self.opened_at is not None else self.first_at
        return {
            "flush_id": flush_id(self.conversation_id, ids),
            "conversation_id": self.conversation_id,
            "message_ids": ids,
            "messages": messages,
            "opened_at": min(opened_at, self.first_at),
            "closed_at": closed_at,
            "cause": cause,
        }

    def holds_flush(self, flush: Mapping[str, Any]) -> bool:
        """Is ``flush`` a close of this batch that has not been committed here yet?

        True when every message of ``flush`` is still pending and its id is the one
        :func:`~processors.core.ids.flush_id` gives for them: a worker that crashed
        after writing the Flush and before recording the close left it so, and its
        successor commits the same close (deterministic) instead of writing it again.
        """
        ids = flush["message_ids"]
        return (
            bool(self.pending)
            and self.pending_ids.issuperset(ids)
            and flush_id(self.conversation_id, ids) == flush["flush_id"]
        )

    def commit_close(self, flush: Mapping[str, Any], cfg: CoreSettings) -> None:
        """Forget the messages of ``flush`` (from :meth:`due_flush` or
        :meth:`flush_before`) once it is written.

        Messages that joined after the Flush was computed stay pending, timed as
        arriving no earlier than this close (the rule for messages older than a close).
        """
        closed_at = int(flush["closed_at"])
        ids = flush["message_ids"]
        recent = self.recent
        recent.extend(_digest(m) for m in ids)
        if len(recent) > RECENT_IDS:
            del recent[: len(recent) - RECENT_IDS]
        if len(ids) == len(self.pending):  # the usual case: nothing joined meanwhile
            remaining: list[dict[str, Any]] = []
        else:
            flushed = set(ids)
            remaining = [m for m in self.pending if m["message_id"] not in flushed]
        if closed_at > self.last_close:
            self.last_close = closed_at
        ttl = cfg.typing_ttl_ms
        # Keep only typists still typing at the close; they hold the next batch open.
        self.typing = {u: h for u, h in self.typing.items() if h[1] and closed_at < h[0] + ttl}
        self._end_ttl = None
        self._set_pending(remaining)
        if remaining:
            self.opened_at = closed_at if self.typing else self.first_at
        else:
            self.opened_at = closed_at if self.typing else None

    def _set_pending(self, messages: list[dict[str, Any]]) -> None:
        if not messages:
            self.pending = []
            self.pending_ids = set()
            self.pending_bytes = self.first_at = self.last_message_at = 0
            return
        self.pending = messages
        self.pending_ids = {m["message_id"] for m in messages}
        self.pending_bytes = sum(message_bytes(m) for m in messages)
        if messages:
            times = [max(int(m["ts"]), self.last_close) for m in messages]
            self.first_at, self.last_message_at = min(times), max(times)
        else:
            self.first_at = self.last_message_at = 0

    def close(self, cfg: CoreSettings) -> dict[str, Any]:
        """Close the pending batch at its deadline; return the Flush record.

        Callers close only once their clock has reached :meth:`deadline`. (One step:
        for callers with nothing to write first, such as ``replay``.)
        """
        flush = self.due_flush(cfg)
        self.commit_close(flush, cfg)
        return flush

    # -- state ----------------------------------------------------------------------

    def is_empty(self) -> bool:
        """Nothing worth keeping but the de-duplication window."""
        return not self.pending and not self.typing and self.opened_at is None

    def to_dict(self) -> dict[str, Any]:
        """A compact, JSON-safe snapshot (what the worker's table stores)."""
        data: dict[str, Any] = {"c": self.conversation_id, "lc": self.last_close}
        if self.pending:
            data["p"] = self.pending
            data["fa"] = self.first_at
            data["lm"] = self.last_message_at
        if self.opened_at is not None:
            data["o"] = self.opened_at
        if self.typing:
            data["t"] = {u: [h[0], 1 if h[1] else 0] for u, h in self.typing.items()}
        if self.recent:
            packed = struct.pack(f"<{len(self.recent)}Q", *self.recent)
            data["r"] = base64.b64encode(packed).decode("ascii")
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConversationBatch:
        batch = cls(data["c"])
        batch.last_close = int(data.get("lc", 0))
        batch.pending = [dict(m) for m in data.get("p", ())]
        batch.pending_ids = {m["message_id"] for m in batch.pending}
        batch.pending_bytes = sum(message_bytes(m) for m in batch.pending)
        batch.first_at = int(data.get("fa", 0))
        batch.last_message_at = int(data.get("lm", 0))
        opened = data.get("o")
        batch.opened_at = None if opened is None else int(opened)
        batch.typing = {u: (int(h[0]), bool(h[1])) for u, h in data.get("t", {}).items()}
        packed = base64.b64decode(data["r"]) if data.get("r") else b""
        batch.recent = list(struct.unpack(f"<{len(packed) // 8}Q", packed))
        return batch

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConversationBatch):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"ConversationBatch({self.conversation_id!r}, pending={len(self.pending)}, "
            f"typing={len(self.typing)}, opened_at={self.opened_at})"
        )
