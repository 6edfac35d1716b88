"""Deterministic ids: a replayed or retried flush produces the same ids downstream.

Rules (docs/contract.md, "Ids"):

* ``flush_id`` is a digest of the conversation id and *every* message id of the batch,
  in batch order. The same batch (replay, a retried close, crash repair) always gets
  the same id; two batches that differ in any message get different ids. A producer
  retry of an old message that outlived the de-duplication window and closes alone in
  a later batch gets the old batch's id only when that batch held exactly that one
  message, which is then correctly treated as already delivered.
* ``decision_id`` is a digest of (flush_id, recipient_id, channel); ``delivery_id`` is
  the id of the ``send`` decision.

Fields are length-prefixed before hashing, with ``None`` encoded apart from ``""``, so
no two different tuples share an encoding (``("a:b", "c")`` vs ``("a", "b:c")``).
BLAKE2b with a 128-bit digest: collisions between distinct batches are negligible
(2^-64 after four billion batches).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

FLUSH_PREFIX = "f-"
DECISION_PREFIX = "d-"
_DIGEST_BYTES = 16


def _digest(parts: Iterable[str | None], *, person: bytes) -> str:
    h = hashlib.blake2b(digest_size=_DIGEST_BYTES, person=person)
    for part in parts:
        if part is None:
            h.update(b"\xff\xff\xff\xff")
            continue
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.hexdigest()


def flush_id(conversation_id: str, message_ids: Iterable[str]) -> str:
    """The id of the batch of ``conversation_id`` holding ``message_ids`` (in order)."""
    parts: list[str | None] = [conversation_id]
    parts.extend(message_ids)
    return FLUSH_PREFIX + _digest(parts, person=b"cn-flush")


def decision_id(flush_id: str, recipient_id: str | None, channel: str | None) -> str:
    """The id of the decision about ``recipient_id`` on ``channel`` (None: as a whole)."""
    return DECISION_PREFIX + _digest((flush_id, recipient_id, channel), person=b"cn-decision")


def delivery_id(flush_id: str, recipient_id: str, channel: str) -> str:
    """The id a sender de-duplicates on; equal to the id of the ``send`` decision."""
    return decision_id(flush_id, recipient_id, channel)
