"""The user agent: presence hot in memory, users in a Table, a decision per Candidate.

Consumes ``chat.presence``, ``chat.users`` and ``notify.candidates`` (co-partitioned on
user_id). Presence is hot in a dict and written to the ``presence`` Table when the user
comes online or goes offline, else at most every half TTL; users live in the ``users``
Table; for each Candidate it decides with the core and writes the Decisions and
Deliveries.
"""

from __future__ import annotations

from typing import Any

import faust

from processors import topics as t
from processors.core.decisions import decide
from processors.core.presence import Presence, UserPresence
from processors.core.records import Candidate, PresenceEvent, User
from processors.core.settings import snapshot_wins
from processors.live.context import WorkerContext
from processors.live.fastpath import consume
from processors.live.intake import Intake


class UserSide:
    """Presence and users of the user partitions this worker owns."""

    def __init__(self, ctx: WorkerContext, presence_table: Any, users_table: Any) -> None:
        self.ctx = ctx
        self.presence_table = presence_table
        self.users_table = users_table
        self.presence: dict[str, UserPresence] = {}
        self.presence_partition: dict[str, int] = {}
        self.presence_persisted_ts: dict[str, int] = {}
        self.intake = Intake(
            ctx,
            {t.PRESENCE: self.on_presence, t.USERS: self.on_user, t.CANDIDATES: self.on_candidate},
            {t.USERS: self.delete_user},
        )

    async def agent(self, stream: faust.StreamT[bytes]) -> None:
        await consume(self.ctx.app, stream, self.intake.apply)

    def drop(self, partitions: set[int]) -> None:
        """Forget the hot presence of revoked user partitions."""
        for uid in [u for u, p in self.presence_partition.items() if p in partitions]:
            self.presence.pop(uid, None)
            self.presence_partition.pop(uid, None)
            self.presence_persisted_ts.pop(uid, None)

    def _user_presence(self, partition: int, user_id: str) -> UserPresence:
        presence = self.presence.get(user_id)
        if presence is None:
            stored = self.presence_table.get(user_id)
            presence = UserPresence.from_dict(stored["s"]) if stored else UserPresence(user_id)
            self.presence[user_id] = presence
            self.presence_partition[user_id] = partition
        return presence

    def on_presence(self, partition: int, value: PresenceEvent) -> Any:
        ctx = self.ctx
        ctx.input_events += 1
        uid = value["user_id"]
        presence = self._user_presence(partition, uid)
        was_online = presence.has_online_session()
        if not presence.apply(value, ctx.cfg):
            return None
        ts = int(value["ts"])
        # Persisted when the user comes online or goes offline, else at most every half
        # TTL: clients re-send their state with every heartbeat, so a successor after a
        # crash is at most one heartbeat away from the exact selection and focus (and a
        # session looks at most half a TTL older than it is).
        if presence.has_online_session() != was_online or ts - self.presence_persisted_ts.get(
            uid, 0
        ) > (ctx.cfg.presence_ttl_ms // 2):
            self.presence_persisted_ts[uid] = ts
            return self.persist(partition, presence)
        return None

    def persist(self, partition: int, presence: UserPresence) -> Any:
        return self.ctx.table_set(
            self.presence_table,
            partition,
            presence.user_id,
            {"p": partition, "s": presence.to_dict()},
        )

    def delete_user(self, uid: str) -> None:
        """A tombstone on chat.users: forget the user (table and changelog).

        Later decisions for them say UNKNOWN_USER; their addresses are gone.
        """
        if uid in self.users_table:
            del self.users_table[uid]  # Faust writes the changelog tombstone
            self.ctx.table_writes += 1

    def on_user(self, partition: int, value: User) -> None:
        uid = value["user_id"]
        if snapshot_wins(self.users_table.get(uid), value):
            self.users_table[uid] = value
            self.ctx.table_writes += 1

    async def on_candidate(self, partition: int, candidate: Candidate) -> None:
        ctx = self.ctx
        # Every role must be read first: deciding earlier says UNKNOWN_ROLE wrongly.
        await ctx.config.caught_up.wait()
        ctx.refresh_cfg()
        now = ctx.clock()
        rid = candidate["recipient_id"]
        presence = self.presence.get(rid)
        if presence is None and rid in self.presence_table:
            presence = self._user_presence(partition, rid)
        seen = (
            Presence.OFFLINE
            if presence is None
            else presence.status(candidate["conversation_id"], now, ctx.cfg)
        )
        decisions, deliveries = decide(
            candidate, self.users_table.get(rid), ctx.config.roles, seen, now
        )
        for decision in decisions:
            await ctx.produce_decision(rid, decision)
        for delivery in deliveries:
            await ctx.produce(t.CHANNEL_TOPICS[delivery["channel"]], rid, delivery)
