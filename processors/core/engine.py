"""The whole pipeline in one process, on event time: what ``replay`` runs (contract §9).

The live workers split the same steps across agents (conversation → fan-out →
decide); this engine chains them directly. Same input, same output, byte for byte.

The clock rule, exactly: before an event with time ``t`` is applied, every batch
deadline at or before ``t`` fires (in deadline order), whichever conversation or
topic the event belongs to and whatever larger times came before it; a deadline
equal to ``t`` fires first (an event exactly at a deadline applies after the close).
:meth:`Engine.finish` closes what is still open at its own deadline. Firing depends on
each event's own ``ts``, not on the largest ``ts`` seen so far: a conversation whose
events arrive after another conversation's later ones still closes its batches at
their deadlines instead of letting an overdue batch absorb its next message.

What this guarantees: a conversation's flushes are exactly the ones it gets alone
whenever every event of another conversation placed between two of its events has a
time no later than the second of them. That covers input in time order, conversations
concatenated in any order (all of B's events, then all of A's), any conversation
delayed as a whole to the end of the input, and mixes of these (tests/core/
test_properties.py). What still depends on interleaving: if another conversation's
event with time ``u`` sits between two events of X whose second is *earlier* than
one of X's pending deadlines ``d <= u`` (X's stream delayed by more than its
inactivity period while later events keep arriving in between), ``d`` fires at that
event, as the rule says, and X's later message starts a new batch (contract §4 rule 7)
instead of extending the old one; a live worker, whose clock moves on regardless,
does the same. Decisions also read the presence, users, roles and settings applied
before the close, so their interleaving with a conversation's events matters, as it
does live.

:attr:`Engine.late_events` counts records whose ``ts`` is earlier than the largest
``ts`` before them (input out of time order), for the replay summary.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from mypy_extensions import mypyc_attr

from processors.core.batching import ConversationBatch, MessageTooLarge
from processors.core.decisions import decide, fan_out
from processors.core.presence import Presence, UserPresence
from processors.core.scheduler import DeadlineScheduler
from processors.core.settings import CoreSettings, config_record_wins, snapshot_wins
from processors.topics import (
    CHANNEL_TOPICS,
    CONVERSATIONS,
    DECISIONS,
    FLUSHES,
    MESSAGES,
    PRESENCE,
    ROLES,
    SETTINGS,
    TYPING,
    USERS,
)

Output = tuple[str, str | None, dict[str, Any]]
NO_OUTPUT: tuple[Output, ...] = ()  # most events produce nothing: don't allocate for them


class EngineError(ValueError):
    """An input record the engine cannot apply (e.g. an unknown topic)."""


# Wheels compile this module (setup.py); replay's two-process split subclasses it in Python.
@mypyc_attr(allow_interpreted_subclasses=True)
class Decider:
    """The deciding half of the engine: what a Flush gives, and the state that decides it.

    Holds presence, users, roles, conversations and settings (:meth:`apply`) and turns a
    Flush into its Decisions and Deliveries (:meth:`emit`). :class:`Engine` owns one and
    hands it every record that is not a message or a typing event, in input order, and
    every Flush when it closes; as long as that order is kept, a Decider may run
    anywhere (``replay`` runs it in a second process). ``cfg`` is the settings in force.
    """

    def __init__(
        self, overrides: Mapping[str, Any] | None = None, *, deliveries: bool = True
    ) -> None:
        self.overrides = dict(overrides or {})
        self.deliveries = deliveries
        self.app_settings: dict[str, Any] = {}
        self.cfg = CoreSettings.from_app_settings(None, self.overrides)
        self.presence: dict[str, UserPresence] = {}
        self.conversations: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.roles: dict[str, dict[str, Any]] = {}
        # user id -> User.name (contract §8), kept beside the users: fan_out looks a
        # name up per sender of every flush, and a plain dict is the cheapest lookup.
        self._names: dict[str, str] = {}
        self._handlers = {
            PRESENCE: self._on_presence,
            CONVERSATIONS: self._on_conversation,
            USERS: self._on_user,
            ROLES: self._on_role,
            SETTINGS: self._on_settings,
        }

    def apply(self, topic: str, key: str | None, value: Mapping[str, Any] | None) -> None:
        """Apply a presence event or a snapshot; a None value is a tombstone."""
        if value is None:
            self._delete(topic, key)
            return
        try:
            handler = self._handlers[topic]
        except KeyError:
            raise EngineError(f"not an input topic: {topic!r}") from None
        handler(value)

    def _delete(self, topic: str, key: str | None) -> None:
        """A tombstone: the user, conversation or role is gone; settings return to defaults."""
        held = {USERS: self.users, CONVERSATIONS: self.conversations, ROLES: self.roles}.get(topic)
        if held is None and topic != SETTINGS:
            raise EngineError(f"a tombstone (null value) on {topic} deletes nothing")
        if key is None:
            raise EngineError(f"a tombstone on {topic} without a key: nothing to delete")
        if held is not None:
            held.pop(key, None)
            if held is self.users:
                self._names.pop(key, None)
        elif self.app_settings:
            self.app_settings = {}
            self.cfg = CoreSettings.from_app_settings(None, self.overrides)

    def _on_presence(self, value: Mapping[str, Any]) -> None:
        user_id = value["user_id"]
        presence = self.presence.get(user_id)
        if presence is None:
            presence = self.presence[user_id] = UserPresence(user_id)
        presence.apply(value, self.cfg)

    def _on_conversation(self, value: Mapping[str, Any]) -> None:
        key = value["conversation_id"]
        if snapshot_wins(self.conversations.get(key), value):
            self.conversations[key] = dict(value)

    def _on_user(self, value: Mapping[str, Any]) -> None:
        key = value["user_id"]
        if snapshot_wins(self.users.get(key), value):
            self.users[key] = dict(value)
            self._names[key] = str(value["name"])

    def _on_role(self, value: Mapping[str, Any]) -> None:
        key = value["name"]
        if snapshot_wins(self.roles.get(key), value):
            self.roles[key] = dict(value)

    def _on_settings(self, value: Mapping[str, Any]) -> None:
        # The live workers' rule: the higher ts wins, equal ts the later record.
        held = (int(self.app_settings.get("ts") or 0), 0, 0) if self.app_settings else None
        if not config_record_wins(held, (int(value.get("ts") or 0), 0, 0)):
            return
        self.app_settings = dict(value)
        self.cfg = CoreSettings.from_app_settings(value, self.overrides)

    def emit(self, flush: dict[str, Any], out: list[Output]) -> None:
        """The Flush, and the decisions and deliveries of its recipients."""
        out.append((FLUSHES, flush["conversation_id"], flush))
        self.decide_flush(flush, out)

    def decide_flush(self, flush: Mapping[str, Any], out: list[Output]) -> None:
        """The decisions and deliveries of the Flush's recipients (not the Flush)."""
        now = flush["closed_at"]
        cid = flush["conversation_id"]
        append = out.append
        candidates, skips = fan_out(flush, self.conversations.get(cid), now, self._names)
        for decision in skips:
            append((DECISIONS, cid, decision))
        # (locals: this loop runs once per recipient of every flush)
        cfg, presence, users, roles = self.cfg, self.presence, self.users, self.roles
        deliveries, offline = self.deliveries, Presence.OFFLINE
        for candidate in candidates:
            rid = candidate["recipient_id"]
            held = presence.get(rid)
            seen = offline if held is None else held.status(cid, now, cfg)
            decisions, sends = decide(
                candidate, users.get(rid), roles, seen, now, with_deliveries=deliveries
            )
            for decision in decisions:
                append((DECISIONS, rid, decision))
            for delivery in sends:
                append((CHANNEL_TOPICS[delivery["channel"]], rid, delivery))


class Engine:
    """Replay engine. Feed input records in order; collect the outputs.

    Batching and the clock are the engine's own; everything else goes to its
    :class:`Decider` (``decider``: one the caller made, e.g. to run it elsewhere).
    """

    def __init__(
        self,
        overrides: Mapping[str, Any] | None = None,
        *,
        deliveries: bool = True,
        decider: Decider | None = None,
    ) -> None:
        self.decider = decider if decider is not None else Decider(overrides, deliveries=deliveries)
        self.cfg = self.decider.cfg
        self.clock = 0  # the largest ts seen so far (for late_events only)
        self.late_events = 0
        self.batches: dict[str, ConversationBatch] = {}
        # conversation_id -> when its batch closes (one entry per open batch)
        self._deadlines: DeadlineScheduler[str] = DeadlineScheduler()
        # (conversation_id, message_id, reason) of messages no batch could hold; the live
        # worker dead-letters them.
        self.refused: list[tuple[str, str, str]] = []

    # -- input ----------------------------------------------------------------------

    def feed(
        self, topic: str, key: str | None, value: Mapping[str, Any] | None
    ) -> Sequence[Output]:
        """Apply one input record; return what it (and the time it brings) produced.

        Values are validated records (the codec fills every field), so ``ts`` is an int.
        A None value is a tombstone: it deletes the user or conversation named by
        ``key`` (later decisions say UNKNOWN_USER / UNKNOWN_CONVERSATION); it carries
        no time.
        """
        if value is None:
            if topic in (MESSAGES, TYPING):
                raise EngineError(f"a tombstone (null value) on {topic} deletes nothing")
            self._apply_elsewhere(topic, key, None)
            return NO_OUTPUT
        if topic not in INPUT_TOPICS:
            raise EngineError(f"not an input topic: {topic!r}")
        ts = value["ts"]
        if ts > self.clock:
            self.clock = ts
        elif ts < self.clock:
            self.late_events += 1
        # The event's own time decides what fires, not the running maximum: a deadline
        # already behind the maximum (a late conversation's batch) still fires before
        # an event of that time or later is applied.
        out: list[Output] | None = None  # most events produce nothing: no list for them
        next_deadline = self._deadlines.next_deadline()
        if next_deadline is not None and next_deadline <= ts:
            out = []
            self._fire_due(ts, out)
        # Messages and typing (two thirds of the input) are applied here rather than in
        # a method each: the call layers per event cost about a tenth of batching.
        if topic == MESSAGES:
            conversation_id = value["conversation_id"]
            batch = self.batches.get(conversation_id)
            if batch is None:
                batch = self.batches[conversation_id] = ConversationBatch(conversation_id)
            try:
                full, joined = batch.add_message_now(value, self.cfg)
            except MessageTooLarge as exc:
                self.refused.append((conversation_id, value["message_id"], str(exc)))
                return out or NO_OUTPUT
            if full is not None:
                if out is None:
                    out = []
                self.decider.emit(full, out)
            if joined:
                self._deadlines.schedule(conversation_id, batch.deadline(self.cfg))
        elif topic == TYPING:
            conversation_id = value["conversation_id"]
            batch = self.batches.get(conversation_id)
            if batch is None:
                batch = self.batches[conversation_id] = ConversationBatch(conversation_id)
            if batch.apply_typing(value, self.cfg) and batch.pending:
                self._deadlines.schedule(conversation_id, batch.deadline(self.cfg))
        else:
            self._apply_elsewhere(topic, key, value)
        return out or NO_OUTPUT

    def _apply_elsewhere(
        self, topic: str, key: str | None, value: Mapping[str, Any] | None
    ) -> None:
        self.decider.apply(topic, key, value)
        if self.decider.cfg is not self.cfg:  # new settings: every deadline moves
            self._apply_cfg(self.decider.cfg)

    def feed_all(
        self, records: Iterable[tuple[str, str | None, Mapping[str, Any] | None]]
    ) -> Iterator[Output]:
        for topic, key, value in records:
            yield from self.feed(topic, key, value)
        yield from self.finish()

    def finish(self) -> list[Output]:
        """End of input: every open batch closes at its own deadline, in deadline order."""
        out: list[Output] = []
        self._fire_due(None, out)
        return out

    def _apply_cfg(self, cfg: CoreSettings) -> None:
        self.cfg = cfg
        # Every open batch's deadline depends on the settings: reschedule them all.
        self._deadlines.reschedule_all(
            (conversation_id, batch.deadline(cfg))
            for conversation_id, batch in self.batches.items()
        )

    # -- time -----------------------------------------------------------------------

    def _deadline_of(self, conversation_id: str) -> int | None:
        return self.batches[conversation_id].deadline(self.cfg)

    def _fire_due(self, now: int | None, out: list[Output]) -> None:
        emit = self.decider.emit
        for conversation_id in self._deadlines.due(now, self._deadline_of):
            emit(self.batches[conversation_id].close(self.cfg), out)


# Input topics the engine hands to its Decider.
DECIDER_TOPICS = frozenset({PRESENCE, CONVERSATIONS, USERS, ROLES, SETTINGS})
INPUT_TOPICS = DECIDER_TOPICS | {MESSAGES, TYPING}
