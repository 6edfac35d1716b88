"""Faust wiring in one place: the app, its topics and its codecs.

Every agent module builds on :func:`create_app` and declares its topics through
:func:`raw_topic` (input topics: bytes in, decoded by :mod:`processors.codec` inside the
agent so that a bad record can be dead-lettered instead of crashing the stream) or
:func:`record_topic` (output topics: dicts in, encoded by a registered Avro codec).

Faust knobs that matter on the local broker (see ``docs/live-worker.md``):
no exactly-once (at-least-once with deterministic ids instead), a short session timeout
so a new group joins quickly, and topics created by :mod:`processors.live.broker` with
their configs before Faust declares them.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import faust
from faust.serializers import codecs

from processors import registry
from processors import topics as t
from processors.live.metrics import install_faust_sensor
from processors.live.recovery import install_recovery_guard
from processors.settings import Settings

#: Settings each app was built with, so topic helpers know prefix and partition counts.
_APP_SETTINGS: dict[int, Settings] = {}


def app_settings(app: faust.App) -> Settings:
    """The :class:`Settings` ``app`` was created with (raises for foreign apps)."""
    try:
        return _APP_SETTINGS[id(app)]
    except KeyError:
        raise LookupError("app was not built by processors.app.create_app") from None


def partitions_for(settings: Settings, name: str) -> int:
    """Partition count of topic ``name`` (unprefixed) under ``settings`` (contract §2)."""
    spec = t.TOPICS.get(name)
    group = spec.group if spec is not None else "single"
    if group == "conversation":
        return settings.conversation_partitions
    if group == "user":
        return settings.user_partitions
    if group == "channel":
        return settings.channel_partitions
    return 1


def broker_urls(settings: Settings) -> str:
    """The Faust broker URL; raises when unset (the embedded broker sets it first)."""
    url = settings.kafka_broker_url
    if not url:
        raise ValueError(
            "KAFKA_BROKER_URL is not set; use `chat-notifier run` for the embedded broker"
        )
    return url if "://" in url else f"kafka://{url}"


#: Default web port of each long-running command: ``WEB_PORT_BASE`` (6066) + offset, so
#: a worker (6066), ``senders`` (6067), one ``senders --channel X`` per channel (email
#: 6068, sms 6069, push 6070, browser 6071), the dashboard (6072) and the reply agent
#: (6073) run side by side on one host.
#: ``--web-port`` / ``WEB_PORT`` override it; ``--without-web`` turns the server off.
WEB_PORT_OFFSETS: dict[str, int] = {
    "worker": 0,
    "senders": 1,
    "senders-email": 2,
    "senders-sms": 3,
    "senders-push": 4,
    "senders-browser": 5,
    "dashboard": 6,
    "reply": 7,
}


def default_web_port(settings: Settings, command: str) -> int:
    """The web port ``command`` (a key of :data:`WEB_PORT_OFFSETS`) binds unless told."""
    if settings.web_port is not None:
        return settings.web_port
    return settings.web_port_base + WEB_PORT_OFFSETS[command]


def web_port_in_use(app: faust.App) -> str | None:
    """One line saying the app's web port is taken, or None (also when web is off).

    Checked before Faust starts: Faust would otherwise die on the bind with a traceback
    after joining the group. SO_REUSEADDR as aiohttp uses it, so only a live listener
    (not a closed socket in TIME_WAIT) counts as in use.
    """
    if not app.conf.web_enabled:
        return None
    # Faust binds web_bind (all interfaces by default), not web_host (the advertised name)
    host, port = str(app.conf.web_bind), int(app.conf.web_port)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return (
                f"web port {port} on {host} is not free ({exc.strerror}); "
                "choose another with --web-port PORT, or --without-web"
            )
    return None


def create_app(settings: Settings, *, app_id: str, **overrides: Any) -> faust.App:
    """Build a Faust app for ``settings``; ``overrides`` are Faust settings that win.

    Defaults: store from ``settings.store`` (``rocksdb://`` in production, ``memory://``
    in tests), at-least-once, session timeout 10 s (a new group joins in ~5 s), web
    server on ``settings.web_port`` or the worker's default port (callers for other
    commands pass ``web_port``), topics not auto-declared with default configs
    (``chat-notifier`` creates them with retention/cleanup configs first).
    """
    _register_codecs()
    _patch_fetch_max_wait()
    registry.install(settings)  # Confluent-framed input, when SCHEMA_REGISTRY_URL is set
    install_recovery_guard()  # restarts after a SIGKILL or a broker reset (recovery.py)
    datadir = settings.data_dir / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    conf: dict[str, Any] = {
        "broker": broker_urls(settings),
        "store": settings.store,
        "datadir": str(datadir),
        "topic_partitions": settings.conversation_partitions,
        "topic_replication_factor": settings.replication_factor,
        "topic_disable_leader": True,
        "web_port": default_web_port(settings, "worker"),
        "web_host": "127.0.0.1",
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 1.0,
        "broker_rebalance_timeout": 10.0,
        "producer_acks": 1,
        # aiokafka's send() waits while a partition's batch is full; with 16 KiB batches
        # and ~1 KiB Candidate/Delivery records the agents stalled on every few sends
        # (live input lag 5 s at 500 events/s; 0-1.4 s with 1 MiB batches).
        "producer_max_batch_size": 1024 * 1024,
        "producer_linger": 0.01,
        "processing_guarantee": "at_least_once",
        "table_standby_replicas": 0,
    }
    conf.update(overrides)
    app = faust.App(app_id, **conf)
    install_faust_sensor(app)  # Faust's Prometheus sensor: events in, offsets, tables
    _APP_SETTINGS[id(app)] = settings
    return app


def raw_topic(app: faust.App, name: str) -> faust.TopicT:
    """Topic ``name`` (unprefixed, e.g. ``"chat.messages"``) carrying raw bytes.

    Keys and values reach the agent undecoded; decoding belongs to the agent so a bad
    record becomes a DeadLetter rather than a Faust deserialisation error.
    """
    settings = app_settings(app)
    return app.topic(
        settings.topic_prefix + name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions_for(settings, name),
        internal=False,
    )


def raw_topics(app: faust.App, names: Sequence[str]) -> faust.TopicT:
    """One channel over several co-partitioned raw topics (one agent consumes them all).

    Events keep their own ``message.topic``; all names must share a partition count.
    """
    settings = app_settings(app)
    counts = {partitions_for(settings, n) for n in names}
    if len(counts) != 1:
        raise ValueError(f"topics {names} are not co-partitioned: {sorted(counts)}")
    return app.topic(
        *(settings.topic_prefix + n for n in names),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=counts.pop(),
        internal=False,
    )


def record_topic(app: faust.App, name: str) -> faust.TopicT:
    """Output topic ``name`` whose values are JSON-form dicts of its Avro record.

    Values are encoded with the registered ``avro:<Record>`` codec (Avro single-object,
    contract §3); keys are UTF-8 strings.
    """
    settings = app_settings(app)
    spec = t.TOPICS[name]
    if spec.record is None:
        return raw_topic(app, name)
    return app.topic(
        settings.topic_prefix + name,
        key_type=str,
        key_serializer="raw",
        value_serializer=f"avro:{spec.record}",
        partitions=partitions_for(settings, name),
        internal=False,
    )


class AvroRecordCodec(codecs.Codec):
    """Faust codec for one record type: Avro single-object out, any wire format in."""

    def __init__(self, record: str, **kwargs: Any) -> None:
        super().__init__(record=record, **kwargs)
        self.record = record

    def _dumps(self, obj: Any) -> bytes:
        from processors import codec

        data: bytes = codec.encode(self.record, obj)
        return data

    def _loads(self, s: bytes) -> Any:
        from processors import codec

        return codec.decode(self.record, s)


_REGISTERED = False

#: Faust hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. Tansu does not
#: answer a waiting fetch when data arrives (measured: p50 374 ms, max 747 ms from
#: produce to consume at 10 records/s; 3 ms with 100 ms), so a live worker would see
#: its input up to ~0.75 s late. Apache Kafka answers early either way; 100 ms only
#: means more empty fetches on an idle partition.
FETCH_MAX_WAIT_MS = 100
_FETCH_PATCHED = False


def _patch_fetch_max_wait() -> None:
    global _FETCH_PATCHED
    if _FETCH_PATCHED:
        return
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread_cls: Any = faust_aiokafka.AIOKafkaConsumerThread
    original = thread_cls._create_worker_consumer

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by consumer.start()
        return consumer

    thread_cls._create_worker_consumer = create_worker_consumer
    _FETCH_PATCHED = True


def _register_codecs() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    for record in {s.record for s in t.TOPICS.values() if s.record is not None}:
        codecs.register(f"avro:{record}", AvroRecordCodec(record))
    _REGISTERED = True
