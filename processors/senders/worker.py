"""``chat-notifier senders [--channel email|sms|push|browser|all]``: the sender agents.

One Faust agent per channel topic (``notify_<channel>``), each a thin adapter around a
:class:`~processors.senders.service.DeliveryService`:

- consumes ``notify.<channel>`` as raw bytes and decodes the Delivery itself, so an
  undecodable record becomes a DeadLetter (stage ``decode``) instead of a crash;
- runs with ``concurrency`` instances (default :data:`SENDER_CONCURRENCY`): provider
  calls overlap, and a delivery backing off between retries holds one slot, not the
  partition; Faust commits an offset only when every earlier record is acked, so
  this stays at-least-once;
- keeps the sent-store in a Faust Table ``sent-<channel>`` keyed by delivery_id
  (changelogged, partitioned like the channel topic: a Delivery is keyed by recipient,
  so a given delivery id always arrives on the same partition and finds its entry);
- reads AppSettings (links, sender identities) from every partition of
  ``chat.settings`` through the broadcast config reader (:mod:`processors.live.config`),
  with the worker's rules (bounds, which record wins), so every sender renders with
  the values the worker uses; nothing is rendered before it has caught up;
- publishes Outcomes on ``notify.outcomes`` (key delivery_id) and DeadLetters on
  ``notify.dead-letter`` (key: the Delivery's key).

Each channel can run in its own process group (``--channel sms``), scaled on its own;
the default app id includes the channel so the groups stay apart.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import faust
from faust.types import EventT
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram

from processors import codec
from processors import topics as t
from processors.app import (
    app_settings,
    create_app,
    default_web_port,
    partitions_for,
    raw_topic,
    record_topic,
    web_port_in_use,
)
from processors.live.broker import bootstrap_servers
from processors.live.config import ConfigReader
from processors.live.metrics import recovered, serve_pages
from processors.senders.base import Sender, create_senders
from processors.senders.service import DeliveryService, DeliverySource
from processors.settings import Settings

log = logging.getLogger(__name__)

SENDER_CONCURRENCY = 16  # in-flight deliveries per channel agent per worker

OUTCOMES = PromCounter(
    "chat_notifier_delivery_outcomes_total", "Outcome records produced", ["channel", "status"]
)
SENDER_DEAD_LETTERS = PromCounter(
    "chat_notifier_sender_dead_letters_total", "Deliveries dead-lettered", ["channel", "stage"]
)
DELIVERY_SECONDS = Histogram(
    "chat_notifier_delivery_seconds",
    "Time to handle one delivery (render, send, retries)",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def sent_table_name(channel: str) -> str:
    return f"sent-{channel}"


def sender_changelog_topics(app_id: str, channels: Iterable[str]) -> dict[str, str]:
    """Changelog topic -> partition group, to create (compacted) before the app starts.

    A sent-store changelog is co-partitioned with its channel topic.
    """
    out: dict[str, str] = {}
    for ch in channels:
        out[f"{app_id}-{sent_table_name(ch)}-changelog"] = "channel"
    return out


class FaustTableSentStore:
    """:class:`~processors.senders.service.SentStore` over a Faust Table (used only
    inside the agent's stream iteration, where Faust allows table writes)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, delivery_id: str) -> Mapping[str, Any] | None:
        value = self.table.get(delivery_id)
        return value if isinstance(value, Mapping) else None

    def put(self, delivery_id: str, outcome: Mapping[str, Any]) -> None:
        self.table[delivery_id] = dict(outcome)


class SenderAgents:
    """Agents, tables and services of one sender worker; built by :func:`attach_sender_agents`."""

    def __init__(
        self,
        app: faust.App,
        channels: Iterable[str],
        *,
        senders: Mapping[str, Sender] | None = None,
        clock: Callable[[], float] = time.time,
        concurrency: int = SENDER_CONCURRENCY,
    ) -> None:
        self.app = app
        self.settings = s = app_settings(app)
        self.channels = list(dict.fromkeys(channels))
        unknown = set(self.channels) - set(t.CHANNELS)
        if unknown:
            raise ValueError(f"unknown channels: {sorted(unknown)}")
        self.clock = clock
        schema: Any = faust.Schema(key_type=str, key_serializer="json", value_serializer="json")
        self.outcomes_out = record_topic(app, t.OUTCOMES)
        self.dead_letter_out = record_topic(app, t.DEAD_LETTER)
        # Settings as the worker sees them; refusals are dead-lettered by the worker.
        self.config = ConfigReader(
            bootstrap_servers(s), s.topic_prefix, names=False, label="senders"
        )
        app.task(self.config.run)
        serve_pages(app, self.readiness)
        self.senders: dict[str, Sender] = (
            dict(senders) if senders is not None else create_senders(s, self.channels)
        )
        self.services: dict[str, DeliveryService] = {}
        self.tables: dict[str, Any] = {}
        self.counts: Counter[str] = Counter()  # "<channel>:<status>" (tests, metrics)
        for ch in self.channels:
            topic_name = t.CHANNEL_TOPICS[ch]
            table = app.Table(
                sent_table_name(ch), partitions=partitions_for(s, topic_name), schema=schema
            )
            self.tables[ch] = table
            self.services[ch] = DeliveryService(
                s, {ch: self.senders[ch]}, FaustTableSentStore(table), clock=clock
            )
            app.agent(raw_topic(app, topic_name), name=f"notify_{ch}", concurrency=concurrency)(
                self._agent_for(ch)
            )

    def _agent_for(self, channel: str) -> Callable[[faust.StreamT[bytes]], Any]:
        async def agent(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                await self.deliver(channel, event)

        agent.__name__ = f"notify_{channel}"
        return agent

    async def deliver(self, channel: str, event: EventT[Any]) -> None:
        """Handle one record of ``notify.<channel>``; never raises for a bad record."""
        message = event.message
        value = message.value if isinstance(message.value, bytes) else b""
        key = message.key if isinstance(message.key, bytes) else None
        source = DeliverySource(
            topic=t.CHANNEL_TOPICS[channel],
            value=value,
            key=key,
            partition=message.partition,
            offset=message.offset,
        )
        try:
            delivery = codec.decode("Delivery", value)
        except Exception as exc:  # noqa: BLE001 - every decode failure is dead-lettered
            await self._dead_letter(source, f"{type(exc).__name__}: {exc}", "decode")
            return
        service = self.services[channel]
        await self.config.caught_up.wait()  # render with the settings in force
        service.app_settings = self.config.app_settings or {}
        with DELIVERY_SECONDS.labels(channel).time():
            result = await service.handle(delivery, source=source)
        for outcome in result.outcomes:
            self.counts[f"{channel}:{outcome['status']}"] += 1
            OUTCOMES.labels(channel, outcome["status"]).inc()
            await self.outcomes_out.send(key=outcome["delivery_id"], value=outcome)
        for dead in result.dead_letters:
            SENDER_DEAD_LETTERS.labels(channel, "deliver").inc()
            await self.dead_letter_out.send(key=dead["key"], value=dead)

    async def _dead_letter(self, source: DeliverySource, error: str, stage: str) -> None:
        record = codec.dead_letter(
            source_topic=source.topic,
            key=source.key,
            value=source.value,
            error=error,
            stage=stage,
            partition=source.partition,
            offset=source.offset,
            ts=int(self.clock() * 1000),
        )
        self.counts["dead-letter:" + stage] += 1
        SENDER_DEAD_LETTERS.labels(source.topic.rpartition(".")[2], stage).inc()
        await self.dead_letter_out.send(key=source.key, value=record)

    def readiness(self) -> dict[str, Any]:
        """Ready (``/ready`` 200) once the group is joined, the sent-stores of the
        assigned partitions are recovered (else a redelivered Delivery would be sent
        twice) and the settings are read up to their high-water marks (else rendered
        with defaults)."""
        tables = recovered(self.app)
        return {
            "ready": tables and self.config.ready,
            "tables_recovered": tables,
            "config_caught_up": self.config.ready,
        }

    async def close(self) -> None:
        for sender in self.senders.values():
            await sender.close()


def attach_sender_agents(
    app: faust.App,
    settings: Settings,
    channels: Iterable[str],
    *,
    senders: Mapping[str, Sender] | None = None,
    clock: Callable[[], float] = time.time,
    concurrency: int = SENDER_CONCURRENCY,
) -> SenderAgents:
    """Register the sender agents for ``channels`` on ``app`` (built by ``create_app``
    with the same ``settings``). ``senders`` overrides the configured backends (tests)."""
    if app_settings(app) is not settings:
        raise ValueError("app was created with other settings")
    return SenderAgents(app, channels, senders=senders, clock=clock, concurrency=concurrency)


# ------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--channel",
        choices=[*t.CHANNELS, "all"],
        default="all",
        help="which channel's agent to run (default: all)",
    )
    parser.add_argument("--app-id", help="consumer group (default chat-notifier-senders[-CHANNEL])")
    parser.add_argument("--concurrency", type=int, default=SENDER_CONCURRENCY)
    parser.add_argument("--store", help="table store, e.g. rocksdb:// or memory://")
    parser.add_argument("--data-dir", help="directory for the local table store")
    parser.add_argument(
        "--web-port",
        type=int,
        help="metrics/health HTTP port (default 6067; with --channel email/sms/push/browser "
        "6068/6069/6070/6071, so channel processes share a host; WEB_PORT_BASE moves them)",
    )
    parser.add_argument("--without-web", action="store_true", help="no HTTP server")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING ...")
    parser.add_argument(
        "--faust", action="append", metavar="NAME=VALUE", help="extra Faust setting"
    )


def run(args: argparse.Namespace) -> int:
    from processors.live.broker import (
        PartitionLayoutError,
        ensure_topics_sync,
        fit_partition_counts_sync,
    )
    from processors.live.worker import faust_overrides, run_app, settings_from_args

    settings = settings_from_args(args)
    if not settings.kafka_broker_url:
        print("chat-notifier senders: KAFKA_BROKER_URL is not set", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper())
    channels = list(t.CHANNELS) if args.channel == "all" else [args.channel]
    app_id = args.app_id or (
        "chat-notifier-senders" + ("" if args.channel == "all" else f"-{args.channel}")
    )
    try:
        # A sent-store changelog must match its channel topic's partition count.
        settings = fit_partition_counts_sync(
            settings,
            sender_changelog_topics(app_id, channels),
            {"channel": [t.CHANNEL_TOPICS[ch] for ch in channels]},
        )
    except PartitionLayoutError as exc:
        print(f"chat-notifier senders: {exc}", file=sys.stderr)
        return 2
    command = "senders" if args.channel == "all" else f"senders-{args.channel}"
    faust_settings = {"web_port": default_web_port(settings, command), **faust_overrides(args)}
    app = create_app(settings, app_id=app_id, **faust_settings)
    problem = web_port_in_use(app)
    if problem:
        print(f"chat-notifier senders: {problem}", file=sys.stderr)
        return 2
    attach_sender_agents(app, settings, channels, concurrency=args.concurrency)
    ensure_topics_sync(settings, sender_changelog_topics(app_id, channels))
    run_app(app, log_level=settings.log_level)
    return 0
