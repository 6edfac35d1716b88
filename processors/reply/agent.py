"""``chat-notifier reply``: the reply agent (contract §7).

Consumes ``email.inbound`` (raw MIME bytes, key the mail's dedupe key), decides each
mail with the pure :func:`processors.reply.parse.decide_reply`, and publishes:

- an ACCEPTED reply as a MessageEvent on ``chat.messages`` (key conversation_id), so it
  reaches the conversation and notifies the others through the normal pipeline;
- one InboundAudit record per mail, accepted or not, on ``email.inbound-audit``.

State it reads, and how (partitioning decision): participants, users' addresses and the
AppSettings (our own From address) come from ``chat.conversations``, ``chat.users`` and
``chat.settings``, read *whole* by every reply worker — a plain aiokafka consumer with no
group, assigned every partition, from the beginning (a broadcast). A reply can name any
conversation, and ``email.inbound`` is keyed by Message-ID, so co-partitioning is not
possible; the snapshots are small compared with messages. The agent waits until that
reader has caught up with the end offsets seen at start before deciding any mail, and
when a decision may only reflect a late snapshot (unknown conversation, not a
participant, unresolved token reference, unknown user) it catches up once more and
decides again, so a reply sent right after a conversation change is judged on it.

Dedupe: a Faust table ``reply-posted`` (changelogged) keyed by the dedupe key, written
after the MessageEvent is sent (at-least-once: a crash in between re-sends the same
deterministic ``message_id``). ``email.inbound`` has one partition, so one table
partition holds every key.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from email.utils import parseaddr
from typing import Any

import faust
from faust.types import EventT
from prometheus_client import Counter as PromCounter

from processors import codec
from processors import topics as t
from processors.app import (
    app_settings,
    create_app,
    default_web_port,
    raw_topic,
    record_topic,
    web_port_in_use,
)
from processors.live.metrics import recovered, serve_pages
from processors.reply.parse import ReplyContext, ReplyDecision, decide_reply
from processors.senders.render import DEFAULT_EMAIL_FROM
from processors.senders.tokens import ReplyKeys, conversation_ref
from processors.settings import Settings

log = logging.getLogger(__name__)

POSTED_TABLE = "reply-posted"
DEFAULT_APP_ID = "chat-notifier-reply"
SETTINGS_KEY = "app"
#: Reasons that may come from a snapshot not read yet: catch up and decide once more.
STALE_STATE_REASONS = frozenset(
    {"UNKNOWN_CONVERSATION", "NOT_PARTICIPANT", "FORGED_TOKEN", "FROM_MISMATCH"}
)

INBOUND = PromCounter(
    "chat_notifier_inbound_mail_total", "Inbound mails decided by the reply agent", ["reason"]
)


class SnapshotReader:
    """Conversations, users and AppSettings, read whole from their topics (broadcast)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conversations: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.app_settings: dict[str, Any] = {}
        self.refs: dict[str, tuple[str, str]] = {}
        self.ready = asyncio.Event()
        self._consumer: Any = None
        self._positions: dict[Any, int] = {}
        self._progress = asyncio.Condition()
        self.topics = {
            settings.topic_prefix + t.CONVERSATIONS: "Conversation",
            settings.topic_prefix + t.USERS: "User",
            settings.topic_prefix + t.SETTINGS: "AppSettings",
        }

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from processors.live.broker import bootstrap_servers

        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers(self.settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        self._consumer = consumer
        try:
            partitions = await self._partitions(consumer)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            target = await consumer.end_offsets(partitions)
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for tp, records in batch.items():
                    for record in records:
                        self._apply(tp.topic, record.key, record.value)
                for tp in partitions:
                    self._positions[tp] = await consumer.position(tp)
                async with self._progress:
                    self._progress.notify_all()
                if not self.ready.is_set() and self._reached(target):
                    self.ready.set()
                    log.info(
                        "reply: snapshots read (%d conversations, %d users)",
                        len(self.conversations),
                        len(self.users),
                    )
        finally:
            await consumer.stop()

    async def _partitions(self, consumer: Any) -> list[Any]:
        from aiokafka import TopicPartition

        out: list[Any] = []
        for topic in self.topics:
            parts: set[int] | None = None
            for _ in range(100):  # metadata may lag right after topic creation
                parts = consumer.partitions_for_topic(topic)
                if parts:
                    break
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.1)
            out.extend(TopicPartition(topic, p) for p in sorted(parts or ()))
        return out

    def _reached(self, target: Mapping[Any, int]) -> bool:
        return all(self._positions.get(tp, 0) >= end for tp, end in target.items() if end > 0)

    async def catch_up(self, timeout: float = 5.0) -> None:
        """Wait until everything written to the snapshot topics before now is applied."""
        if self._consumer is None:
            return
        target = await self._consumer.end_offsets(list(self._consumer.assignment()))
        async with self._progress:
            try:
                await asyncio.wait_for(
                    self._progress.wait_for(lambda: self._reached(target)), timeout
                )
            except TimeoutError:
                log.warning("reply: snapshot topics not caught up in %.0f s", timeout)

    def _apply(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        record = self.topics[topic]
        name = key.decode("utf-8", "replace") if key else None
        if value is None:  # tombstone: the record is gone
            if record == "Conversation" and name is not None:
                self._drop_conversation(name)
            elif record == "User" and name is not None:
                self.users.pop(name, None)
            return
        try:
            data = codec.decode(record, value)
        except codec.DecodeError:
            return  # the live worker dead-letters these; here they are just not state
        if record == "Conversation":
            cid = data["conversation_id"]
            held = self.conversations.get(cid)
            if held is not None and held["ts"] > data["ts"]:
                return
            self._drop_conversation(cid)
            self.conversations[cid] = data
            for p in data["participants"]:
                self.refs[conversation_ref(cid, p["user_id"])] = (cid, p["user_id"])
        elif record == "User":
            held = self.users.get(data["user_id"])
            if held is None or held["ts"] <= data["ts"]:
                self.users[data["user_id"]] = data
        elif not self.app_settings or self.app_settings.get("ts", 0) <= data.get("ts", 0):
            self.app_settings = data

    def _drop_conversation(self, cid: str) -> None:
        old = self.conversations.pop(cid, None)
        for p in (old or {}).get("participants") or ():
            self.refs.pop(conversation_ref(cid, p["user_id"]), None)


class ReplyAgent:
    """The agent, its table and its snapshot reader; built by :func:`attach_reply_agent`."""

    def __init__(self, app: faust.App, *, clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.settings = s = app_settings(app)
        self.clock = clock
        self.keys = ReplyKeys.parse([k.get_secret_value() for k in s.reply.token_keys])
        self.reader = SnapshotReader(s)
        self.counts: Counter[str] = Counter()
        schema: Any = faust.Schema(key_type=str, key_serializer="json", value_serializer="json")
        self.posted = app.Table(POSTED_TABLE, partitions=1, schema=schema)
        self.messages_out = record_topic(app, t.MESSAGES)
        self.audit_out = record_topic(app, t.INBOUND_AUDIT)
        app.task(self.reader.run)
        app.agent(raw_topic(app, t.EMAIL_INBOUND), name="reply")(self._agent)
        serve_pages(app, self.readiness)

    def readiness(self) -> dict[str, Any]:
        """Ready once the dedupe table is recovered (a mail delivered twice across a
        restart must not post twice) and the snapshots are read to their ends."""
        tables = recovered(self.app)
        snapshots = self.reader.ready.is_set()
        return {
            "ready": tables and snapshots,
            "tables_recovered": tables,
            "snapshots_caught_up": snapshots,
        }

    def context(self) -> ReplyContext:
        s, r = self.settings, self.reader
        domains = {s.inbound.reply_domain.lower()}
        own = {parseaddr(DEFAULT_EMAIL_FROM)[1].lower()}
        if r.app_settings.get("reply_domain"):
            domains.add(str(r.app_settings["reply_domain"]).lower())
        if r.app_settings.get("email_from"):
            own.add(parseaddr(str(r.app_settings["email_from"]))[1].lower())
        return ReplyContext(
            keys=self.keys,
            now_ms=int(self.clock() * 1000),
            reply_domains=frozenset(domains),
            own_addresses=frozenset(own - {""}),
            resolve=r.refs.get,
            conversation=r.conversations.get,
            user=r.users.get,
            seen=lambda key: self.posted.get(key) is not None,
            max_mail_bytes=s.inbound.max_mail_bytes,
        )

    async def _agent(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await self.handle(event)

    async def handle(self, event: EventT[Any]) -> ReplyDecision:
        """Decide one inbound mail and publish; never raises for a bad mail."""
        value = event.message.value
        raw = value if isinstance(value, bytes) else b""
        await self.reader.ready.wait()
        decision = decide_reply(raw, self.context())
        if decision.reason in STALE_STATE_REASONS:
            await self.reader.catch_up()
            decision = decide_reply(raw, self.context())
        if decision.message is not None:
            await self.messages_out.send(
                key=decision.message["conversation_id"], value=decision.message
            )
            self.posted[decision.mail_id] = decision.message["message_id"]
        audit = decision.audit(int(self.clock() * 1000))
        await self.audit_out.send(key=decision.mail_id, value=audit)
        self.counts[decision.reason] += 1
        INBOUND.labels(decision.reason).inc()
        log.info("reply: inbound mail %s", decision.reason)  # no ids: Message-IDs name hosts
        return decision


def attach_reply_agent(app: faust.App, *, clock: Callable[[], float] = time.time) -> ReplyAgent:
    return ReplyAgent(app, clock=clock)


def reply_changelog_topics(app_id: str) -> dict[str, str]:
    return {f"{app_id}-{POSTED_TABLE}-changelog": "single"}


# ------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app-id", default=DEFAULT_APP_ID, help="consumer group / app id")
    parser.add_argument("--store", help="table store, e.g. rocksdb:// or memory://")
    parser.add_argument("--data-dir", help="directory for the local table store")
    parser.add_argument("--web-port", type=int, help="metrics/health HTTP port")
    parser.add_argument("--without-web", action="store_true", help="no HTTP server")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING ...")
    parser.add_argument(
        "--faust", action="append", metavar="NAME=VALUE", help="extra Faust setting"
    )


def run(args: argparse.Namespace) -> int:
    from processors.live.broker import ensure_topics_sync
    from processors.live.worker import faust_overrides, run_app, settings_from_args

    settings = settings_from_args(args)
    if not settings.kafka_broker_url:
        print("chat-notifier reply: KAFKA_BROKER_URL is not set", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper())
    faust_settings = {"web_port": default_web_port(settings, "reply"), **faust_overrides(args)}
    app = create_app(settings, app_id=args.app_id, **faust_settings)
    problem = web_port_in_use(app)
    if problem:
        print(f"chat-notifier reply: {problem}", file=sys.stderr)
        return 2
    attach_reply_agent(app)
    ensure_topics_sync(settings, reply_changelog_topics(args.app_id))
    run_app(app, log_level=settings.log_level)
    return 0
