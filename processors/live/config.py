"""The broadcast config reader: roles, AppSettings and display names for every process.

Roles (``chat.roles``), settings (``chat.settings``) and display names (``chat.users``)
must be seen in full by every worker and every sender, whatever the topics' partition
counts. A Faust GlobalTable assumes one partition (with more, the worker saw no role at
all and the senders crashed with ``PartitionsMismatch``), so this reader is a plain
aiokafka consumer with no group: it assigns itself *every* partition of the three topics,
reads them from the beginning and then follows them. Partitions added later (or a topic
created after start) are picked up by a metadata check every
:data:`METADATA_REFRESH_S` seconds and read from their beginning.

Rules (one home: :mod:`processors.core.settings`):

- which record wins: :func:`~processors.core.settings.config_record_wins` — the higher
  ``ts``; on equal ``ts`` the later one (higher partition, then offset);
- a record without a usable ``ts`` (absent, 0 or negative), a Role whose key is not its
  ``name``, an AppSettings record not keyed ``"app"`` or out of bounds
  (:func:`~processors.core.settings.validate_app_settings`), or an undecodable record
  is dead-lettered with the reason; what was in force stays in force;
- a tombstone (null value) on ``chat.roles`` deletes that role (later decisions say
  ``UNKNOWN_ROLE``); on ``chat.settings`` it restores the defaults (the worker's
  ``--set`` values, else the schema's); on ``chat.users`` it forgets the display name.
  A tombstone is ordered by its Kafka timestamp, so an older record read after it does
  not bring the role back.

Only the worker's reader writes dead letters for roles and settings (``report=True``);
senders read the same records with the same rules and only log and count what they
refuse, so one bad record gives one DeadLetter per worker rather than one per process.
Bad ``chat.users`` records are dead-lettered by the worker's user agent, not here.

Readiness: :attr:`ConfigReader.caught_up` is set once every partition has been read up
to the high-water mark seen at start (the larger of ListOffsets and the first fetch's
high-water mark: Tansu's ListOffsets can stop short of the true end). Until then the
worker decides nothing and closes no batch, the senders render nothing, and /ready
says 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from prometheus_client import Counter as PromCounter

from processors import codec
from processors import topics as t
from processors.core.admission import Admit, Reject, admit
from processors.core.settings import (
    Position,
    SettingsError,
    config_record_wins,
    validate_app_settings,
)

log = logging.getLogger(__name__)

CONFIG_RECORDS = PromCounter(
    "chat_notifier_config_records_total",
    "Config records read by the broadcast reader",
    ["topic", "result"],  # applied | stale | refused | deleted
)

METADATA_REFRESH_S = 5.0  # how often to look for new partitions of the config topics
FETCH_TIMEOUT_MS = 200
SETTINGS_KEY = "app"

#: ``(source_topic, key, value, error, stage, partition, offset)`` -> dead letter written.
DeadLetterFn = Callable[[str, bytes | None, bytes, str, str, int, int], Awaitable[None]]


class ConfigRefused(ValueError):
    """A config record that is not applied; the message is the dead-letter reason."""


class ConfigState:
    """Roles, AppSettings and display names, as the broadcast reader builds them.

    Pure bookkeeping (no Kafka): :meth:`apply` takes one record's coordinates and
    decoded value and applies the rules above; tests can drive it directly.
    """

    def __init__(self) -> None:
        self.roles: dict[str, dict[str, Any]] = {}
        self.app_settings: dict[str, Any] | None = None  # None: defaults in force
        self.names: dict[str, str] = {}
        #: bumped on every change of ``app_settings`` (the worker re-reads it then)
        self.settings_version = 0
        self._positions: dict[tuple[str, str], Position] = {}

    def held_position(self, topic: str, key: str) -> Position | None:
        """Where the record (or tombstone) in force for ``key`` stands, or None.

        The admin tools write a change with a ``ts`` above this one so it always wins.
        """
        return self._positions.get((topic, key))

    def _wins(self, topic: str, key: str, position: Position) -> bool:
        if not config_record_wins(self._positions.get((topic, key)), position):
            return False
        self._positions[(topic, key)] = position
        return True

    def delete(self, topic: str, key: str, position: Position) -> bool:
        """A tombstone for ``key``; ``position`` carries its Kafka timestamp as ts."""
        if not self._wins(topic, key, position):
            return False
        if topic == t.ROLES:
            self.roles.pop(key, None)
        elif topic == t.SETTINGS:
            if self.app_settings is not None:
                self.app_settings = None
                self.settings_version += 1
        else:
            self.names.pop(key, None)
        return True

    def apply(
        self, topic: str, key: str | None, value: Mapping[str, Any], partition: int, offset: int
    ) -> bool:
        """Apply one decoded record; False when an equal-or-newer one is held.

        Raises :class:`ConfigRefused` (the dead-letter reason) for a record that breaks
        a rule; nothing changes then.
        """
        ts = value.get("ts")
        if topic == t.USERS:
            uid = str(value["user_id"])
            if not isinstance(ts, int) or ts <= 0:
                return False  # the user agent dead-letters it
            if self._wins(topic, uid, (ts, partition, offset)):
                self.names[uid] = str(value.get("name") or uid)
                return True
            return False
        if not isinstance(ts, int) or isinstance(ts, bool) or ts <= 0:
            raise ConfigRefused(f"{topic} record has no usable ts (got {ts!r}); not applied")
        if topic == t.ROLES:
            name = str(value["name"])
            if key != name:
                raise ConfigRefused(
                    f"Role key {key!r} differs from its name {name!r}; not applied "
                    "(a role is keyed by its name)"
                )
            if not self._wins(topic, name, (ts, partition, offset)):
                return False
            self.roles[name] = dict(value)
            return True
        if key != SETTINGS_KEY:
            raise ConfigRefused(f"AppSettings record keyed {key!r}, not {SETTINGS_KEY!r}")
        try:
            checked = validate_app_settings(value)
        except SettingsError as exc:
            raise ConfigRefused(f"{exc}; previous settings stay in force") from None
        if not self._wins(topic, SETTINGS_KEY, (ts, partition, offset)):
            return False
        self.app_settings = checked
        self.settings_version += 1
        return True


class ConfigReader:
    """The broadcast reader (see the module docstring); run :meth:`run` as a task."""

    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        *,
        dead_letter: DeadLetterFn | None = None,
        names: bool = True,
        label: str = "worker",
    ) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.dead_letter = dead_letter
        self.label = label
        self.state = ConfigState()
        wanted = [t.ROLES, t.SETTINGS] + ([t.USERS] if names else [])
        self.topics = {prefix + name: name for name in wanted}
        self.caught_up = asyncio.Event()
        self.refused = 0
        self._targets: dict[Any, int] = {}  # tp -> offset to reach before caught up
        self._hw_checked: set[Any] = set()

    # -- what the agents read ----------------------------------------------------------

    @property
    def roles(self) -> Mapping[str, Mapping[str, Any]]:
        return self.state.roles

    @property
    def app_settings(self) -> dict[str, Any] | None:
        return self.state.app_settings

    @property
    def names(self) -> Mapping[str, str]:
        return self.state.names

    @property
    def ready(self) -> bool:
        return self.caught_up.is_set()

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Read until cancelled; a broken connection is retried, never given up."""
        while True:
            try:
                await self._read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep every process's config alive
                log.warning("config reader (%s): %s; retrying in 1 s", self.label, exc)
                await asyncio.sleep(1.0)

    async def _read(self) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            await self._assign_all(consumer, at_start=True)
            next_check = asyncio.get_running_loop().time() + METADATA_REFRESH_S
            while True:
                batches = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS)
                for records in batches.values():
                    for record in records:
                        await self._handle(record)
                if not self.caught_up.is_set():
                    await self._check_caught_up(consumer)
                now = asyncio.get_running_loop().time()
                if now >= next_check:
                    next_check = now + METADATA_REFRESH_S
                    await self._assign_all(consumer, at_start=False)
        finally:
            await consumer.stop()

    async def _assign_all(self, consumer: Any, *, at_start: bool) -> None:
        """Assign every partition of the config topics; new ones read from the start."""
        from aiokafka import TopicPartition

        try:
            cluster = await consumer._client.fetch_all_metadata()
        except Exception as exc:  # noqa: BLE001 - retried at the next check
            log.warning("config reader: cannot read topic metadata: %s", exc)
            return
        wanted = {
            TopicPartition(topic, p)
            for topic in self.topics
            for p in (cluster.partitions_for_topic(topic) or ())
        }
        held = set(consumer.assignment())
        if wanted <= held:
            return
        positions = {tp: await consumer.position(tp) for tp in held}
        consumer.assign(sorted(wanted | held))
        for tp, offset in positions.items():
            consumer.seek(tp, offset)
        new = sorted(wanted - held)
        await consumer.seek_to_beginning(*new)
        if at_start:
            ends = await consumer.end_offsets(new)
            self._targets = {tp: int(end) for tp, end in ends.items()}
            counts = {
                self.topics[topic]: len(cluster.partitions_for_topic(topic) or ())
                for topic in self.topics
            }
            log.info(
                "config reader (%s): reading %s from the beginning",
                self.label,
                ", ".join(f"{name} ({n} partitions)" for name, n in counts.items()),
            )
        else:
            log.info(
                "config reader (%s): new partitions %s, reading them from the beginning",
                self.label,
                ", ".join(f"{tp.topic}[{tp.partition}]" for tp in new),
            )

    async def _check_caught_up(self, consumer: Any) -> None:
        for tp, target in list(self._targets.items()):
            if tp not in self._hw_checked:
                high = consumer.highwater(tp)
                if high is None:
                    if target == 0:
                        del self._targets[tp]  # empty at start
                    continue
                # The fetch's high-water mark is the true end at start (within one
                # fetch); Tansu's ListOffsets can report less.
                self._hw_checked.add(tp)
                target = self._targets[tp] = max(target, int(high))
            if await consumer.position(tp) >= target:
                del self._targets[tp]
        if not self._targets:
            self.caught_up.set()
            s = self.state
            log.info(
                "config reader (%s): caught up: %d roles, settings %s, %d display names",
                self.label,
                len(s.roles),
                "from chat.settings" if s.app_settings is not None else "defaults",
                len(s.names),
            )

    async def _handle(self, record: Any) -> None:
        name = self.topics[record.topic]
        key_bytes: bytes | None = record.key
        key = None if key_bytes is None else key_bytes.decode("utf-8", "replace")
        position_args = (record.partition, record.offset)
        if record.value is None:
            if key is None:
                if name != t.USERS:  # the user agent dead-letters its own records
                    await self._refuse(name, record, "tombstone without a key", "process")
                return
            ts = int(record.timestamp or 0)
            if self.state.delete(name, key, (ts, *position_args)):
                CONFIG_RECORDS.labels(name, "deleted").inc()
                log.info("config reader (%s): %s %r deleted (tombstone)", self.label, name, key)
            return
        try:
            value = codec.decode(t.TOPICS[name].record or "", record.value)
        except Exception as exc:  # noqa: BLE001 - every decode failure is reported
            if name != t.USERS:
                await self._refuse(name, record, f"{type(exc).__name__}: {exc}", "decode")
            return
        # The same door as every input record: ids, the absolute time range, and a ts
        # from the future bounded by the record's Kafka timestamp and this clock (a
        # year-3000 role would otherwise win every later change).
        verdict = admit(name, key, value, record.timestamp, wall_clock_ms())
        if isinstance(verdict, Reject):
            if name != t.USERS:  # the user agent dead-letters its own records
                await self._refuse(name, record, verdict.reason, "admit")
            return
        if isinstance(verdict, Admit) and verdict.value is not None:
            value = verdict.value
        try:
            applied = self.state.apply(name, key, value, *position_args)
        except ConfigRefused as exc:
            await self._refuse(name, record, str(exc), "process")
            return
        except Exception as exc:  # noqa: BLE001 - one bad record never stops the reader
            if name != t.USERS:
                await self._refuse(name, record, f"{type(exc).__name__}: {exc}", "process")
            return
        CONFIG_RECORDS.labels(name, "applied" if applied else "stale").inc()
        if applied and name == t.SETTINGS:
            log.info("config reader (%s): AppSettings ts=%s in force", self.label, value["ts"])

    async def _refuse(self, name: str, record: Any, reason: str, stage: str) -> None:
        self.refused += 1
        CONFIG_RECORDS.labels(name, "refused").inc()
        if self.dead_letter is None:
            log.warning(
                "config reader (%s): %s[%d]@%d refused: %s",
                self.label,
                name,
                record.partition,
                record.offset,
                reason.encode("unicode_escape").decode("ascii"),
            )
            return
        await self.dead_letter(
            name, record.key, record.value or b"", reason, stage, record.partition, record.offset
        )


def config_topics(names: bool = True) -> Iterable[str]:
    """The topics the reader follows (unprefixed)."""
    return (t.ROLES, t.SETTINGS, *((t.USERS,) if names else ()))


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000
