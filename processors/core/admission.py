"""Admission at the door: what an input record must be before the core applies it.

One function, :func:`admit`, used by the live worker (after decoding a record) and by
``replay`` (after validating a line), so both refuse, bound and re-key exactly the same
records. It is pure: the caller passes the record's Kafka timestamp and its own
processing clock, and gets back one of

* :class:`Admit` — apply this value (its ``ts`` possibly bounded, see rule 2);
* :class:`Reject` — do not apply; ``reason`` says precisely why (dead-lettered live with
  stage ``admit``, reported with its line number by ``replay``);
* :class:`Rekey` — the record is good but sits under the wrong key: not applied here;
  the worker re-publishes it unchanged under ``key`` (``replay``, which has no
  partitions, applies it as if it had arrived under that key).

Rules, in the order they are checked (the first that fails decides):

1. **Tombstones** (value ``None``) are passed through untouched when they have a key
   (deleting is the tables' business); a tombstone without a key is rejected.
2. **Ids.** Every id field — ``message_id``, ``conversation_id``, ``sender_id``,
   ``mentions[i]``, ``user_id``, ``session_id``, ``selected_conversation_id``,
   ``participants[i].user_id``, a User's ``role`` and a Role's ``name`` — must hold no
   control character (Unicode category Cc: NUL, CR, LF, TAB, DEL, C1 controls ...) and
   be at most ``MAX_ID_CHARS`` = 256 characters. Ids end up in headers, links, log lines
   and table keys; a CR/LF in one forges a header or a log line. The reason names the
   field and the offending code point, never the id itself.
3. **Event time, absolute range.** ``ts`` is epoch milliseconds and must be > 0 and
   < ``MAX_EVENT_TIME_MS`` = 253 402 300 800 000 (10000-01-01T00:00:00Z: dates must be
   renderable). Exception: an AppSettings record may leave ``ts`` at its schema default
   0 (a settings snapshot, not an event); a negative one is still rejected.
4. **Key against value.** ``chat.messages`` and ``chat.typing`` are keyed by
   ``conversation_id``, ``chat.presence`` by ``user_id``: a null or different key on
   these *event* topics gives :class:`Rekey` to the value's id, so the record reaches the
   partition that owns its conversation or user (one conversation's batch never lives
   on two partitions). On the *snapshot* topics a null or different key is rejected:
   ``chat.conversations`` (conversation_id), ``chat.users`` (user_id), ``chat.roles``
   (the role ``name``), ``chat.settings`` (the literal ``"app"``). Compaction keeps one
   record per key, so a snapshot under a foreign key would overwrite another record or
   outlive its own deletion; guessing which one was meant is not ours to do.
5. **Event time, future bound.** The reference is the earliest of the record's Kafka
   timestamp and the processing clock, where given (``replay`` of a plain file has
   neither, ``replay --from-kafka`` and JSONL lines with a ``timestamp`` have the first,
   the worker has both). A ``ts`` more than ``MAX_FUTURE_SKEW_MS`` = 5 minutes ahead of
   the reference is set to the reference, and :attr:`Admit.bounded_from` keeps the
   original so callers can count it. A record from a clock in the year 3000 thus counts
   as "now": it cannot hold a batch open, keep a user VIEWING, or win against every
   later snapshot. The 5 minutes leave room for ordinary clock skew between clients.
   A Kafka timestamp <= 0 means "none" (Kafka uses -1) and is ignored.

Topics without rules here (the worker's own ``notify.*`` topics) are admitted as they are.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from processors.topics import (
    CONVERSATIONS,
    MESSAGES,
    PRESENCE,
    ROLES,
    SETTINGS,
    TYPING,
    USERS,
)

MAX_FUTURE_SKEW_MS = 5 * 60 * 1000  # how far ahead of the reference an event time may be
MAX_EVENT_TIME_MS = 253_402_300_800_000  # 10000-01-01T00:00:00Z, exclusive
MAX_ID_CHARS = 256
SETTINGS_KEY = "app"


# Verdicts are named tuples: admission runs once per input record, and a frozen
# dataclass costs ~0.45 us to build (a third of the whole check).
class Admit(NamedTuple):
    """Apply ``value``; ``bounded_from`` is the original ``ts`` if it was bounded."""

    value: dict[str, Any] | None
    bounded_from: int | None = None


class Reject(NamedTuple):
    """Do not apply; dead-letter (live) or report (replay) with ``reason``."""

    reason: str


class Rekey(NamedTuple):
    """Good record, wrong key: re-publish it unchanged under ``key``."""

    key: str
    reason: str


Admission = Admit | Reject | Rekey


@dataclass(frozen=True, slots=True)
class _TopicRule:
    key_field: str | None  # the value field the key must equal (None: the fixed key)
    fixed_key: str | None
    rekey: bool  # event topic: re-key; snapshot topic: reject
    # The id fields (rule 2), precomputed per topic so the check is a loop over a tuple
    # (admission runs once per input record; typing and presence are most of them):
    id_fields: tuple[str, ...] = ()  # plain string fields
    id_lists: tuple[tuple[str, str | None], ...] = ()  # (list field, item field or None)
    ts_zero_allowed: bool = False


RULES: Mapping[str, _TopicRule] = {
    MESSAGES: _TopicRule(
        "conversation_id",
        None,
        True,
        ("message_id", "conversation_id", "sender_id"),
        (("mentions", None),),
    ),
    TYPING: _TopicRule("conversation_id", None, True, ("conversation_id", "user_id")),
    PRESENCE: _TopicRule(
        "user_id", None, True, ("user_id", "session_id", "selected_conversation_id")
    ),
    CONVERSATIONS: _TopicRule(
        "conversation_id", None, False, ("conversation_id",), (("participants", "user_id"),)
    ),
    USERS: _TopicRule("user_id", None, False, ("user_id", "role")),
    ROLES: _TopicRule("name", None, False, ("name",)),
    SETTINGS: _TopicRule(None, SETTINGS_KEY, False, ts_zero_allowed=True),
}


def _show(text: str, limit: int = 60) -> str:
    """A key or id for a reason: quoted, escaped (no raw control characters), short."""
    shown = repr(text[:limit])
    return shown + "..." if len(text) > limit else shown


def _show_key(key: str | None) -> str:
    return "none" if key is None else _show(key)


def id_problem(text: str) -> str | None:
    """Why ``text`` is not an acceptable id, or None (rule 2)."""
    if len(text) > MAX_ID_CHARS:
        return f"is {len(text)} characters long (ids are at most {MAX_ID_CHARS})"
    if not text.isprintable():  # fast path: printable text holds no Cc character
        for position, char in enumerate(text):
            if unicodedata.category(char) == "Cc":
                return f"contains control character U+{ord(char):04X} at position {position}"
    return None


def _ids_problem(rule: _TopicRule, value: Mapping[str, Any]) -> str | None:
    """Rule 2 for one value: the first bad id, as "<field> <problem>", or None.

    Every good id passes a cheap test first: a short, printable string (printable
    text holds no Cc character); only a suspect id is examined by :func:`id_problem`.
    """
    for field in rule.id_fields:
        text = value.get(field)
        if isinstance(text, str) and (len(text) > MAX_ID_CHARS or not text.isprintable()):
            problem = id_problem(text)
            if problem is not None:
                return f"{field} {problem}"
    for list_field, item_field in rule.id_lists:
        for i, item in enumerate(value.get(list_field) or ()):
            text = item if item_field is None else item.get(item_field)
            if isinstance(text, str) and (len(text) > MAX_ID_CHARS or not text.isprintable()):
                problem = id_problem(text)
                if problem is not None:
                    suffix = "" if item_field is None else f".{item_field}"
                    return f"{list_field}[{i}]{suffix} {problem}"
    return None


def admit(
    topic: str,
    key: str | None,
    value: dict[str, Any] | None,
    record_ts: int | None = None,
    now: int | None = None,
) -> Admission:
    """Admit, reject or re-key one decoded input record (rules in the module docstring).

    ``topic`` is the unprefixed name (``chat.messages``); ``record_ts`` the record's
    Kafka timestamp in epoch ms, if any; ``now`` the processing clock (None in replay).
    The value is not modified; a bounded one is a copy.
    """
    rule = RULES.get(topic)
    if rule is None:
        return Admit(value)
    # 1. tombstones
    if value is None:
        if key is None:
            return Reject("a tombstone (null value) needs a key")
        return Admit(None)
    # 2. ids
    problem = _ids_problem(rule, value)
    if problem is not None:
        return Reject(problem)
    # 3. absolute range of event time
    ts = value.get("ts")
    if type(ts) is not int and (not isinstance(ts, int) or isinstance(ts, bool)):
        return Reject(f"ts must be epoch milliseconds (an integer), got {ts!r}")
    if ts <= 0 and not (ts == 0 and rule.ts_zero_allowed):
        return Reject(f"ts must be a positive epoch-milliseconds time, got {ts}")
    if ts >= MAX_EVENT_TIME_MS:
        return Reject(
            f"ts {ts} is beyond the year 9999 (event times are below {MAX_EVENT_TIME_MS})"
        )
    # 4. key against value
    expected = rule.fixed_key if rule.key_field is None else value.get(rule.key_field)
    if key != expected and isinstance(expected, str):
        if rule.key_field is None:
            reason = f"{topic} records are keyed {_show(expected)}, got key {_show_key(key)}"
        elif key is None:
            reason = f"no key: {topic} records are keyed by {rule.key_field} {_show(expected)}"
        else:
            reason = f"key {_show(key)} does not match {rule.key_field} {_show(expected)}"
        return Rekey(expected, reason) if rule.rekey else Reject(reason)
    # 5. future bound against the reference clock
    if record_ts is None and now is None:
        return Admit(value)  # replay of a plain file: no reference clock
    reference: int | None = None
    for candidate in (record_ts, now):
        if candidate is not None and candidate > 0 and (reference is None or candidate < reference):
            reference = candidate
    if reference is not None and ts > reference + MAX_FUTURE_SKEW_MS:
        return Admit({**value, "ts": reference}, bounded_from=ts)
    return Admit(value)


__all__ = [
    "MAX_EVENT_TIME_MS",
    "MAX_FUTURE_SKEW_MS",
    "MAX_ID_CHARS",
    "Admission",
    "Admit",
    "Rekey",
    "Reject",
    "admit",
    "id_problem",
]
