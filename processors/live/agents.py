"""The worker: thin Faust adapters around the pure core (contract §2–§5), composed here.

* :mod:`processors.live.conversations` — the conversation agent (``chat.messages``,
  ``chat.typing``, ``chat.conversations``, ``notify.flushes``): batches hot in memory,
  the ``conversation-batches`` Table written on transitions only;
* :mod:`processors.live.scheduler` — the flush scheduler: the core's deadline scheduler
  on the wall clock, per actively assigned conversation partition;
* :mod:`processors.live.users` — the user agent (``chat.presence``, ``chat.users``,
  ``notify.candidates``): presence, users, one decision per Candidate;
* :mod:`processors.live.intake` — decode, the door, dead letters, for both agents;
* :mod:`processors.live.context` — what they share (clock, settings in force, outputs);
* :mod:`processors.live.metrics` — Prometheus metrics and the web pages.

Roles, AppSettings and display names come from the broadcast config reader
(:mod:`processors.live.config`), which reads every partition of ``chat.roles``,
``chat.settings`` and ``chat.users`` whatever their partition counts. Until it has
caught up the worker closes no batch and decides nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import faust
from faust.types import TP

from processors import topics as t
from processors.app import app_settings, partitions_for, raw_topic, raw_topics
from processors.live import fastpath
from processors.live.broker import bootstrap_servers
from processors.live.config import ConfigReader
from processors.live.context import Clock, WorkerContext, wall_clock_ms
from processors.live.conversations import ConversationSide
from processors.live.metrics import register_pages
from processors.live.recovery import repair_changelog_tails
from processors.live.scheduler import FlushScheduler
from processors.live.users import UserSide

log = logging.getLogger(__name__)


def changelog_topics(app_id: str) -> dict[str, str]:
    """Changelog topic name -> partition group, for topic creation before start."""
    return {
        f"{app_id}-conversation-batches-changelog": "conversation",
        f"{app_id}-conversations-changelog": "conversation",
        f"{app_id}-presence-changelog": "user",
        f"{app_id}-users-changelog": "user",
    }


class Pipeline:
    """The agents, tables and scheduler of one worker; built by :func:`attach_pipeline`."""

    def __init__(
        self,
        app: faust.App,
        *,
        core_overrides: Mapping[str, Any] | None = None,
        clock: Clock = wall_clock_ms,
    ) -> None:
        self.app = app
        # The batch hot path (processors/live/fastpath.py); Faust's own loop otherwise.
        self.fast_path = fastpath.install(app)
        config = ConfigReader(
            bootstrap_servers(app_settings(app)),
            app_settings(app).topic_prefix,
            dead_letter=self._config_dead_letter,
            label="worker",
        )
        ctx = self.ctx = WorkerContext(app, config, core_overrides=core_overrides, clock=clock)
        s = ctx.settings
        self.prefix = ctx.prefix

        # Tables (changelogged; the hot dicts of each side are authoritative while owned).
        conv_parts = partitions_for(s, t.MESSAGES)
        user_parts = partitions_for(s, t.PRESENCE)
        table_kw: dict[str, Any] = {
            "schema": faust.Schema(key_type=str, key_serializer="json", value_serializer="json")
        }
        self.batches_table = app.Table("conversation-batches", partitions=conv_parts, **table_kw)
        self.conversations_table = app.Table("conversations", partitions=conv_parts, **table_kw)
        self.presence_table = app.Table("presence", partitions=user_parts, **table_kw)
        self.users_table = app.Table("users", partitions=user_parts, **table_kw)

        self.conversations = ConversationSide(ctx, self.batches_table, self.conversations_table)
        self.scheduler = FlushScheduler(ctx, self.conversations)
        self.users = UserSide(ctx, self.presence_table, self.users_table)

        self.batches_table.on_recover(self._on_recovered)
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        app.agent(
            raw_topics(app, (t.MESSAGES, t.TYPING, t.CONVERSATIONS, t.FLUSHES)),
            name="conversation_events",
        )(self.conversations.agent)
        app.agent(raw_topics(app, (t.PRESENCE, t.USERS, t.CANDIDATES)), name="user_events")(
            self.users.agent
        )
        app.task(self.scheduler.run)
        app.task(config.run)
        register_pages(
            app,
            config_ready=lambda: config.ready,
            partitions=lambda: sorted(self.scheduler.active),
        )

    # -- what tests and the bench read --------------------------------------------------

    @property
    def config(self) -> ConfigReader:
        return self.ctx.config

    @property
    def input_events(self) -> int:
        return self.ctx.input_events

    @property
    def lateness_ms(self) -> list[int]:
        return self.scheduler.lateness_ms

    # -- rebalances ---------------------------------------------------------------------

    async def _on_recovered(self) -> None:
        """After changelog recovery: load the batches of newly active partitions."""
        ctx = self.ctx
        actives = self.app.assignor.assigned_actives()
        active = {tp.partition for tp in actives if tp.topic == ctx.prefix + t.MESSAGES}
        user_active = {tp.partition for tp in actives if tp.topic == ctx.prefix + t.PRESENCE}
        try:
            await repair_changelog_tails(
                bootstrap_servers(ctx.settings),
                [
                    (self.batches_table, active),
                    (self.conversations_table, active),
                    (self.presence_table, user_active),
                    (self.users_table, user_active),
                ],
            )
        except Exception:  # noqa: BLE001 - a broker without the quirk still works
            log.exception("reading changelog tails after recovery")
        for partition in set(self.conversations.batches) - active:
            self.conversations.drop(partition)
            self.scheduler.drop(partition)
        new = active - self.scheduler.active
        loaded = self.conversations.load(new) if new else 0
        self.scheduler.take(new)
        self.scheduler.active = set(active)
        log.info("conversation partitions %s active; %d batches loaded", sorted(active), loaded)

    async def _on_revoked(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        revoked: set[TP] = set(args[0]) if args else set(kwargs.get("revoked") or ())
        conversation_topic = self.prefix + t.MESSAGES
        for tp in revoked:
            if tp.topic == conversation_topic:
                self.conversations.drop(tp.partition)
                self.scheduler.drop(tp.partition)
        user_topic = self.prefix + t.PRESENCE
        gone = {tp.partition for tp in revoked if tp.topic == user_topic}
        if gone:
            self.users.drop(gone)

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
        await self.ctx.dead_letter_record(source, key, value, error, stage, partition, offset)


def attach_pipeline(
    app: faust.App,
    *,
    core_overrides: Mapping[str, Any] | None = None,
    clock: Clock = wall_clock_ms,
) -> Pipeline:
    """Register the worker's agents, tables and scheduler on ``app``."""
    return Pipeline(app, core_overrides=core_overrides, clock=clock)


__all__ = ["Pipeline", "attach_pipeline", "changelog_topics", "raw_topic", "wall_clock_ms"]
