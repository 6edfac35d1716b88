"""A schema registry (Confluent's REST protocol) behind the codec's Confluent wire format.

With ``SCHEMA_REGISTRY_URL`` set, every process that decodes records (the worker, the
senders, the reply agent: :func:`processors.app.create_app`; ``replay``/``whatif``/
``explain --from-kafka``; the admin commands) calls :func:`install`: the codec then
reads records framed ``00`` + 4-byte schema id with the writer schema fetched by id.
Producers with ``--confluent`` (``chat-notifier demo``, ``roles``, ``settings``) use
:meth:`SchemaRegistry.encode`, which registers the record's schema under the subject
``<topic>-value`` (Confluent's TopicNameStrategy, the prefixed topic) once per process.

Rules decided here:

* **A fetched schema is kept for the life of the process.** A registry never changes
  the schema behind an id.
* **A failure is kept for** :data:`RETRY_AFTER_S` **(30 s).** An unreachable registry
  (connection refused, :data:`FETCH_TIMEOUT_S` = 2 s timeout) is remembered for the
  whole registry, an unknown id or a refusal for that id; meanwhile records needing it
  fail at once with the same reason instead of each waiting on the network. Ids already
  fetched keep decoding during an outage.
* **Every failure is one line** (a :class:`~processors.codec.DecodeError` the worker
  dead-letters): ``schema id 42 is not known to the registry at URL``, ``schema
  registry at URL unreachable: ConnectError: ...``. The URL is shown without user and
  password.

The fetch is a blocking HTTP call made inside ``codec.decode`` (on the worker's event
loop): at most once per id, or once per 30 s while the registry is away, and at most
2 s. That bound keeps a consumer well inside its session timeout (10 s).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import httpx
from schema_registry.client import SchemaRegistryClient
from schema_registry.client.errors import ClientError
from schema_registry.client.schema import AvroSchema

from processors import codec
from processors.codec import DecodeError
from processors.settings import Settings

__all__ = [
    "FETCH_TIMEOUT_S",
    "RETRY_AFTER_S",
    "RegistryError",
    "SchemaRegistry",
    "install",
    "registry_for",
    "shown_url",
]

FETCH_TIMEOUT_S: Final = 2.0
RETRY_AFTER_S: Final = 30.0


class RegistryError(Exception):
    """A producer could not register its schema; ``str(e)`` is one line to print."""


def shown_url(url: str) -> str:
    """``url`` without user and password (they may be in it; reasons must not carry them)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url.rstrip("/")
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit(parts._replace(netloc=netloc)).rstrip("/")


def _cause(exc: BaseException) -> str:
    text = str(exc)
    text = text if len(text) <= 120 else text[:117] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class SchemaRegistry:
    """One registry: writer schemas by id (cached) and schema ids by subject (cached)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = FETCH_TIMEOUT_S,
        retry_after_s: float = RETRY_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.shown = shown_url(url)
        self.retry_after_s = retry_after_s
        self._clock = clock
        try:
            self._client = SchemaRegistryClient(url, timeout=httpx.Timeout(timeout_s))
        except (AssertionError, ValueError) as exc:  # the client asserts http(s)
            raise ValueError(
                f"SCHEMA_REGISTRY_URL {self.shown!r} is not an http:// or https:// URL"
            ) from exc
        self._schemas: dict[int, dict[str, Any]] = {}
        self._failed: dict[int, tuple[float, str]] = {}  # id -> (retry at, reason)
        self._down: tuple[float, str] | None = None  # (retry at, cause) for every id
        self._ids: dict[str, int] = {}  # subject -> id of our current schema

    # ---- consumers

    def writer_schema(self, schema_id: int) -> dict[str, Any]:
        """The writer schema registered as ``schema_id``; raises DecodeError (see the
        module doc for the reasons and how long a failure is kept)."""
        found = self._schemas.get(schema_id)
        if found is not None:
            return found
        now = self._clock()
        failed = self._failed.get(schema_id)
        if failed is not None and now < failed[0]:
            raise DecodeError(failed[1])
        if self._down is not None and now < self._down[0]:
            raise DecodeError(self._unreachable(self._down[1], schema_id))
        try:
            schema = self._client.get_by_id(schema_id)
        except httpx.TransportError as exc:  # refused, reset, timed out, name not resolved
            self._down = (now + self.retry_after_s, _cause(exc))
            raise DecodeError(self._unreachable(self._down[1], schema_id)) from None
        except ClientError as exc:
            reason = (
                f"the schema registry at {self.shown} answered HTTP {exc.http_code} "
                f"for schema id {schema_id}"
            )
            self._failed[schema_id] = (now + self.retry_after_s, reason)
            raise DecodeError(reason) from None
        except Exception as exc:  # noqa: BLE001 - a body that is not the protocol's JSON
            reason = (
                f"the schema registry at {self.shown} gave no usable answer for schema id "
                f"{schema_id}: {_cause(exc)}"
            )
            self._failed[schema_id] = (now + self.retry_after_s, reason)
            raise DecodeError(reason) from None
        self._down = None
        if schema is None:  # 404: Confluent's error 40403, schema not found
            reason = f"schema id {schema_id} is not known to the registry at {self.shown}"
            self._failed[schema_id] = (now + self.retry_after_s, reason)
            raise DecodeError(reason)
        if not isinstance(schema, AvroSchema):
            reason = f"schema id {schema_id} at {self.shown} is a {schema.schema_type} schema"
            self._failed[schema_id] = (now + self.retry_after_s, reason)
            raise DecodeError(reason)
        self._failed.pop(schema_id, None)
        self._schemas[schema_id] = schema.raw_schema
        return schema.raw_schema

    def _unreachable(self, cause: str, schema_id: int) -> str:
        return f"schema registry at {self.shown} unreachable: {cause} (schema id {schema_id})"

    # ---- producers

    def schema_id(self, topic: str, record: str) -> int:
        """The id of ``record``'s current schema under subject ``<topic>-value``
        (``topic`` as on the broker, prefix included), registered on first use."""
        subject = f"{topic}-value"
        known = self._ids.get(subject)
        if known is not None:
            return known
        try:
            schema_id = int(self._client.register(subject, AvroSchema(codec.schema(record))))
        except httpx.TransportError as exc:
            raise RegistryError(
                f"schema registry at {self.shown} unreachable: {_cause(exc)}"
            ) from None
        except ClientError as exc:
            raise RegistryError(
                f"schema registry at {self.shown} refused {record} under {subject!r}: "
                f"{exc.message} (HTTP {exc.http_code})"
            ) from None
        except Exception as exc:  # noqa: BLE001 - a body that is not the protocol's JSON
            raise RegistryError(
                f"schema registry at {self.shown} gave no usable answer registering "
                f"{subject!r}: {_cause(exc)}"
            ) from None
        self._ids[subject] = schema_id
        return schema_id

    def encode(self, topic: str, record: str, value: Mapping[str, Any]) -> bytes:
        """``value`` in the Confluent wire format for ``topic``; RegistryError when the
        schema cannot be registered, EncodeError when the value does not fit it."""
        return codec.encode_confluent(record, value, self.schema_id(topic, record))


_REGISTRIES: dict[str, SchemaRegistry] = {}
_installed_url: str | None = None  # the registry the module-level codec reads through


def registry_for(settings: Settings) -> SchemaRegistry | None:
    """The process's registry for ``settings`` (one per URL), or None when not set."""
    url = settings.schema_registry_url
    if not url:
        return None
    found = _REGISTRIES.get(url)
    if found is None:
        found = _REGISTRIES[url] = SchemaRegistry(url)
    return found


def install(settings: Settings) -> SchemaRegistry | None:
    """Let :func:`processors.codec.decode` read Confluent-framed records through the
    registry of ``settings`` (no-op without ``SCHEMA_REGISTRY_URL``, or when done)."""
    global _installed_url
    registry = registry_for(settings)
    if registry is None or registry.url == _installed_url:
        return registry
    codec.use_schema_registry(registry.shown, registry.writer_schema)
    _installed_url = registry.url
    return registry
