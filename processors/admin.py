"""Admin of roles and settings: read what is in force, write a change that wins.

A small library used by ``chat-notifier roles`` / ``chat-notifier settings`` and, later,
by a dashboard. It has two halves:

* pure rules (no Kafka): :func:`role_record` and :func:`settings_record` build the next
  record from the one in force and the requested changes, validated as every reader will
  validate it (the door's id rules from :mod:`processors.core.admission`, the settings
  bounds from :mod:`processors.core.settings`), and :func:`next_ts` picks its ``ts``;
* broker I/O: :func:`read_config` reads ``chat.roles`` and ``chat.settings`` whole with
  the broadcast reader itself (:class:`processors.live.config.ConfigReader`, so "which
  record is in force" is decided by exactly the rules workers and senders use), and
  :func:`write_config` writes a record or a tombstone; :func:`scan` reads raw records
  of any topic (``diagnose`` reads users, presence, decisions and outcomes with it).

Rules decided here:

* **A change always wins.** Its ``ts`` (and its Kafka timestamp, which orders a
  tombstone) is ``max(now, ts in force + 1)``: the reader keeps the higher ``ts``, so a
  record written after a clock step back, or after a record stamped slightly ahead, still
  replaces it. Writing increasing ``ts`` also keeps compaction safe (contract §11).
* **A new role** takes every channel off except those named: nothing is sent that an
  admin did not turn on (SMS costs money). ``roles set`` on an existing role merges: the
  channels not named keep their value; naming none is refused (nothing to change).
* **Settings** merge with the record in force (or the schema defaults when none is):
  fields not named keep their value. Periods are whole seconds (the AppSettings record
  holds an ``int``), more than 0 and within :data:`processors.core.settings.MAX_SECONDS`
  (inactivity at most 900). ``sms_from=`` (empty) or ``sms_from=none`` clears it.
* **Delete** is a tombstone: a deleted role makes later decisions say ``UNKNOWN_ROLE``.
* After a write the state is read back; if the record is not in force (a reader refused
  it), that is an error, not a silent success.
* ``confluent=True`` writes the Confluent wire format, the schema registered under
  ``<topic>-value`` with ``SCHEMA_REGISTRY_URL`` (:mod:`processors.registry`); without
  that setting it is refused, an unreachable registry is exit 3. Reading always decodes
  Confluent-framed records when the setting is there (as workers do).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from processors import codec
from processors import topics as t
from processors.core.admission import MAX_FUTURE_SKEW_MS, Reject, admit
from processors.core.decisions import _role_hint as role_hint  # one home of the hint
from processors.core.settings import (
    MAX_SECONDS,
    SETTABLE,
    SettingsError,
    setting_hint,
    validate_app_settings,
)
from processors.live.config import SETTINGS_KEY, ConfigReader, ConfigState
from processors.settings import Settings

__all__ = [
    "AdminError",
    "current_settings",
    "delete_role",
    "next_ts",
    "parse_assignments",
    "parse_switch",
    "read_config",
    "role_hint",
    "role_record",
    "scan",
    "set_role",
    "set_settings",
    "settings_record",
    "write_config",
]

READ_TIMEOUT_S = 15.0  # reading a config topic whole; longer means the broker is away
SCAN_TIMEOUT_S = 30.0

CHANNELS = t.CHANNELS
#: Every AppSettings field an admin may set (all but ``ts``), in schema order.
SETTINGS_FIELDS: tuple[str, ...] = tuple(
    f["name"] for f in codec.schema("AppSettings")["fields"] if f["name"] != "ts"
)
#: The schema's defaults: what is in force when chat.settings holds no record.
SETTINGS_DEFAULTS: dict[str, Any] = {
    f["name"]: f.get("default") for f in codec.schema("AppSettings")["fields"] if f["name"] != "ts"
}
_NULLABLE = frozenset({"sms_from"})


class AdminError(Exception):
    """A one-line reason to print; ``exit_code`` for the command line."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


#: exit codes (also in the commands' --help)
EXIT_INVALID = 2  # the change or the arguments are refused
EXIT_BROKER = 3  # no broker configured or reachable
EXIT_NOT_FOUND = 4  # no such role
EXIT_NOT_APPLIED = 5  # written, but not in force when read back


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- pure rules ----------------------------------------------------------------------


def next_ts(held_ts: int | None, now: int) -> int:
    """The ``ts`` of a change: ``max(now, held + 1)``, so it wins against the one in force.

    Refused when the record in force is stamped so far ahead that the new one would
    exceed the door's future bound (it would be bounded back to "now" and lose).
    """
    ts = now if held_ts is None else max(now, held_ts + 1)
    if ts - now >= MAX_FUTURE_SKEW_MS:
        raise AdminError(
            f"the record in force is stamped {ts - now} ms in the future; a change "
            "cannot win before then (check the writer's clock)",
            EXIT_INVALID,
        )
    return ts


def parse_switch(value: str) -> bool:
    """``on``/``off`` (also true/false, yes/no, 1/0) -> bool."""
    folded = value.strip().lower()
    if folded in ("on", "true", "yes", "1"):
        return True
    if folded in ("off", "false", "no", "0"):
        return False
    raise AdminError(f"a channel is 'on' or 'off', got {value!r}")


def role_record(
    name: str,
    current: Mapping[str, Any] | None,
    changes: Mapping[str, bool],
    ts: int,
) -> dict[str, Any]:
    """The Role record to write: ``current`` (None: a new role, every channel off) with
    ``changes`` applied. Raises :class:`AdminError` for an unusable name, an unknown
    channel, or an existing role with nothing to change."""
    for channel in changes:
        if channel not in CHANNELS:
            near = difflib.get_close_matches(channel, CHANNELS, n=1, cutoff=0.5)
            hint = f"did you mean {near[0]!r}?" if near else f"one of {', '.join(CHANNELS)}"
            raise AdminError(f"unknown channel {channel!r}; {hint}")
    if not name or name != name.strip():
        raise AdminError(f"a role name must be non-empty without surrounding spaces: {name!r}")
    if current is not None and not changes:
        raise AdminError(
            f"role {name!r} exists; name a channel to change "
            "(--email/--sms/--push/--browser on|off)"
        )
    record: dict[str, Any] = {"name": name}
    for channel in CHANNELS:
        held = bool(current[channel]) if current is not None else False
        record[channel] = bool(changes.get(channel, held))
    record["ts"] = ts
    verdict = admit(t.ROLES, name, record)
    if isinstance(verdict, Reject):
        raise AdminError(f"role name refused: {verdict.reason}")
    return record


def parse_assignments(pairs: Iterable[str]) -> dict[str, Any]:
    """``NAME=VALUE`` arguments -> typed changes; unknown names get the near match."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise AdminError(f"settings set wants NAME=VALUE, got {pair!r}")
        if name not in SETTINGS_FIELDS:
            hint = setting_hint(name, SETTINGS_FIELDS)
            raise AdminError(f"unknown setting {name!r}; {hint}")
        if name in SETTABLE:
            try:
                number = int(value)
            except ValueError:
                raise AdminError(
                    f"{name} must be a whole number of seconds (more than 0, at most "
                    f"{MAX_SECONDS[name]}), got {value!r}"
                ) from None
            out[name] = number
        elif name in _NULLABLE and value.lower() in ("", "none", "null"):
            out[name] = None
        else:
            out[name] = value
    if not out:
        raise AdminError("settings set: give at least one NAME=VALUE")
    return out


def current_settings(state: ConfigState) -> dict[str, Any]:
    """Every AppSettings field in force (the record's, else the schema defaults)."""
    held = state.app_settings or {}
    return {name: held.get(name, SETTINGS_DEFAULTS[name]) for name in SETTINGS_FIELDS}


def settings_record(
    current: Mapping[str, Any] | None, changes: Mapping[str, Any], ts: int
) -> dict[str, Any]:
    """The AppSettings record to write: ``current`` (None: the defaults) merged with
    ``changes``, validated with the readers' rules (bounds, link templates, identities)."""
    record = dict(SETTINGS_DEFAULTS)
    record.update({k: v for k, v in (current or {}).items() if k in SETTINGS_FIELDS})
    record.update(changes)
    record["ts"] = ts
    try:
        checked = validate_app_settings(record)
    except SettingsError as exc:
        raise AdminError(str(exc)) from None
    try:
        codec.encode("AppSettings", checked)
    except codec.EncodeError as exc:
        raise AdminError(str(exc)) from None
    return checked


# -- broker I/O ----------------------------------------------------------------------


def _bootstrap(settings: Settings) -> str:
    from processors.live.broker import bootstrap_servers

    if not settings.kafka_broker_url:
        raise AdminError(
            "set KAFKA_BROKER_URL (`chat-notifier run` prints the URL of its broker)",
            EXIT_BROKER,
        )
    return bootstrap_servers(settings)


async def read_config(settings: Settings, timeout_s: float = READ_TIMEOUT_S) -> ConfigReader:
    """Roles and settings in force, read whole by the broadcast reader's own rules.

    Returns the reader, stopped once caught up: ``.state`` is what every worker and
    sender holds; ``.refused`` counts the records they refuse (dead-lettered by workers).
    """
    bootstrap = _bootstrap(settings)
    _install_registry(settings)
    reader = ConfigReader(bootstrap, settings.topic_prefix, names=False, label="admin")
    if not await _any_topic_exists(settings, [t.ROLES, t.SETTINGS]):
        # Nothing to read (the reader, with no partition to assign, would wait forever):
        # no role, default settings. Reading creates nothing.
        return reader
    task = asyncio.create_task(reader.run())
    try:
        await asyncio.wait_for(reader.caught_up.wait(), timeout_s)
    except TimeoutError:
        raise AdminError(
            f"could not read chat.roles/chat.settings from {settings.kafka_broker_url} "
            f"within {timeout_s:g} s (is the broker running?)",
            EXIT_BROKER,
        ) from None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    return reader


async def _any_topic_exists(settings: Settings, names: Iterable[str]) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    client = AIOKafkaAdminClient(bootstrap_servers=_bootstrap(settings))
    try:
        await asyncio.wait_for(client.start(), READ_TIMEOUT_S)
        existing = set(await asyncio.wait_for(client.list_topics(), READ_TIMEOUT_S))
    except Exception as exc:  # noqa: BLE001 - one line for the user
        raise AdminError(
            f"could not reach {settings.kafka_broker_url}: {type(exc).__name__} "
            "(is the broker running?)",
            EXIT_BROKER,
        ) from None
    finally:
        with contextlib.suppress(Exception):
            await client.close()
    return any(settings.topic_prefix + name in existing for name in names)


def _install_registry(settings: Settings) -> None:
    """Decode Confluent-framed records as workers do (SCHEMA_REGISTRY_URL set)."""
    from processors import registry

    try:
        registry.install(settings)
    except ValueError as exc:
        raise AdminError(str(exc), EXIT_INVALID) from None


def _encode(settings: Settings, topic: str, value: Mapping[str, Any], confluent: bool) -> bytes:
    record = t.TOPICS[topic].record or ""
    if not confluent:
        return codec.encode(record, value)
    from processors import registry

    try:
        schemas = registry.registry_for(settings)
    except ValueError as exc:
        raise AdminError(str(exc), EXIT_INVALID) from None
    if schemas is None:
        raise AdminError(
            "--confluent needs SCHEMA_REGISTRY_URL (the schema registry to register with)",
            EXIT_INVALID,
        )
    try:
        return schemas.encode(settings.topic_prefix + topic, record, value)
    except registry.RegistryError as exc:
        raise AdminError(str(exc), EXIT_BROKER) from None


async def write_config(
    settings: Settings,
    topic: str,
    key: str,
    value: Mapping[str, Any] | None,
    ts: int,
    *,
    confluent: bool = False,
) -> None:
    """Write one record (None: a tombstone) with Kafka timestamp ``ts`` (a tombstone is
    ordered by it). Creates the topic, compacted, if it does not exist yet.
    ``confluent``: the Confluent wire format (a tombstone has no value to frame)."""
    from aiokafka import AIOKafkaProducer

    from processors.live.broker import ensure_topics

    bootstrap = _bootstrap(settings)
    data = None if value is None else _encode(settings, topic, value, confluent)
    try:
        await asyncio.wait_for(
            ensure_topics(settings, only=[settings.topic_prefix + topic]), READ_TIMEOUT_S
        )
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all")
        await asyncio.wait_for(producer.start(), READ_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - one line for the user
        raise AdminError(
            f"could not write to {settings.kafka_broker_url}: {type(exc).__name__}", EXIT_BROKER
        ) from None
    try:
        await producer.send_and_wait(
            settings.topic_prefix + topic, data, key=key.encode(), timestamp_ms=ts
        )
    finally:
        await producer.stop()


@dataclass(frozen=True)
class RoleChange:
    previous: dict[str, Any] | None
    role: dict[str, Any]


async def set_role(
    settings: Settings, name: str, changes: Mapping[str, bool], *, confluent: bool = False
) -> RoleChange:
    """Create or change a role; returns the record before and the one now in force."""
    state = (await read_config(settings)).state
    current = state.roles.get(name)
    held = state.held_position(t.ROLES, name)
    record = role_record(name, current, changes, next_ts(held[0] if held else None, now_ms()))
    await write_config(settings, t.ROLES, name, record, record["ts"], confluent=confluent)
    after = (await read_config(settings)).state
    if after.roles.get(name) != record:
        raise AdminError(
            f"role {name!r} was written but is not in force (see notify.dead-letter)",
            EXIT_NOT_APPLIED,
        )
    return RoleChange(None if current is None else dict(current), record)


async def delete_role(settings: Settings, name: str, *, confluent: bool = False) -> dict[str, Any]:
    """Tombstone a role; returns the deleted record. Unknown role: the near match.
    ``confluent``: a tombstone has no value to frame; the flag only requires what
    ``set`` would (SCHEMA_REGISTRY_URL), so scripts can pass it to every command."""
    if confluent and not settings.schema_registry_url:
        raise AdminError(
            "--confluent needs SCHEMA_REGISTRY_URL (the schema registry to register with)",
            EXIT_INVALID,
        )
    state = (await read_config(settings)).state
    current = state.roles.get(name)
    if current is None:
        raise AdminError(role_hint(name, state.roles), EXIT_NOT_FOUND)
    held = state.held_position(t.ROLES, name)
    ts = next_ts(held[0] if held else None, now_ms())
    await write_config(settings, t.ROLES, name, None, ts)
    after = (await read_config(settings)).state
    if name in after.roles:
        raise AdminError(f"role {name!r}: the tombstone is not in force", EXIT_NOT_APPLIED)
    return dict(current)


@dataclass(frozen=True)
class SettingsChange:
    previous: dict[str, Any]
    settings: dict[str, Any]
    ts: int


async def set_settings(
    settings: Settings, changes: Mapping[str, Any], *, confluent: bool = False
) -> SettingsChange:
    """Merge ``changes`` into the settings in force and write the result."""
    state = (await read_config(settings)).state
    before = current_settings(state)
    held = state.held_position(t.SETTINGS, SETTINGS_KEY)
    record = settings_record(
        state.app_settings, changes, next_ts(held[0] if held else None, now_ms())
    )
    await write_config(
        settings, t.SETTINGS, SETTINGS_KEY, record, record["ts"], confluent=confluent
    )
    after = (await read_config(settings)).state
    if (after.app_settings or {}).get("ts") != record["ts"]:
        raise AdminError(
            "the settings were written but are not in force (see notify.dead-letter)",
            EXIT_NOT_APPLIED,
        )
    return SettingsChange(before, current_settings(after), record["ts"])


class RawRecord(NamedTuple):
    """One record as stored: value bytes (None: a tombstone), Kafka timestamp in ms."""

    topic: str  # unprefixed
    partition: int
    offset: int
    timestamp: int | None
    key: str | None
    value: bytes | None


async def scan(
    settings: Settings,
    topic: str,
    *,
    since_ms: int | None = None,
    timeout_s: float = SCAN_TIMEOUT_S,
) -> list[RawRecord]:
    """Every record of ``topic`` (unprefixed) up to its end now, tombstones included;
    from ``since_ms`` (by Kafka timestamp) if given. In (partition, offset) order."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    full = settings.topic_prefix + topic
    _install_registry(settings)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=_bootstrap(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await asyncio.wait_for(consumer.start(), READ_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - one line for the user
        raise AdminError(
            f"could not reach {settings.kafka_broker_url}: {type(exc).__name__}", EXIT_BROKER
        ) from None
    out: list[RawRecord] = []
    try:
        parts = consumer.partitions_for_topic(full)
        if parts is None:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(full) or set()
        tps = [TopicPartition(full, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        first = await consumer.beginning_offsets(tps)
        stop = {tp: int(end) for tp, end in (await consumer.end_offsets(tps)).items()}
        begin = {tp: int(first[tp]) for tp in tps}
        if since_ms is not None:
            found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
            begin = {tp: (found[tp].offset if found.get(tp) else stop[tp]) for tp in tps}
        for tp in tps:
            consumer.seek(tp, begin[tp])
        pending = set(tps)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while pending:
            if asyncio.get_running_loop().time() > deadline:
                raise AdminError(f"reading {topic} took longer than {timeout_s:g} s", EXIT_BROKER)
            batch = await consumer.getmany(*pending, timeout_ms=200)
            for tp, records in batch.items():
                for r in records:
                    key = None if r.key is None else r.key.decode("utf-8", "replace")
                    stamp = r.timestamp if r.timestamp is not None and r.timestamp > 0 else None
                    out.append(RawRecord(topic, tp.partition, r.offset, stamp, key, r.value))
            for tp in list(pending):
                # Tansu's ListOffsets can stop short of the end: the fetch's high-water
                # mark, once known, is the true end (as in processors/live/config.py).
                high = consumer.highwater(tp)
                if high is None:
                    if stop[tp] <= begin[tp]:
                        pending.discard(tp)
                    continue
                if await consumer.position(tp) >= max(stop[tp], int(high)):
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return out


def decode(record: RawRecord) -> dict[str, Any] | None:
    """The decoded value (None for a tombstone); raises :class:`codec.DecodeError`."""
    if record.value is None:
        return None
    return codec.decode(t.TOPICS[record.topic].record or "", record.value)
