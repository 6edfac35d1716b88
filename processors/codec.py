"""The wire codec: every record type in ``schemas/``, in and out of bytes (DESIGN §3).

Pure: no Faust or Kafka imports, no clock, no environment. Schemas are read, expanded,
fingerprinted and compiled once, when the module is imported (or a :class:`Codec` built).

Formats, told apart by their first bytes (:func:`decode`):

* ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint + Avro body: Avro single-object
  encoding, what the project writes (:func:`encode`). The fingerprint may be the current
  schema of the record or any old writer schema kept as ``schemas/<Name>.v<N>.avsc``; old
  bodies are resolved to the current schema, so new fields get their defaults.
* ``00`` + 4-byte big-endian schema id: the Confluent wire format. Decoding it needs a
  schema registry; this module does not fetch from one. A :class:`Codec` built with a
  ``schema_lookup`` callable (schema id -> writer schema) decodes it; otherwise the error
  says plainly that no registry is configured.
* ``{`` after optional whitespace: JSON in the form of DESIGN §8. It is validated against
  the same schema, defaults are filled, and the result has exactly the shape Avro decoding
  gives (every field present, in schema order).

Enum-like fields are Avro ``string``s (adding a value later is not a breaking schema change);
the codec checks them against :data:`ALLOWED_VALUES` on every path, in and out.

Every failure to decode raises :class:`DecodeError` and nothing else, whatever the bytes;
its message is a readable reason fit for ``notify.dead-letter`` (it names fields, types and
enum-like values, never the text of a message). Invalid values given to :func:`encode`
raise :class:`EncodeError`, a subclass, so ``except DecodeError`` covers both.

JSON form of ``bytes`` (only ``DeadLetter.key``/``value``): the Avro JSON-encoding rule, a
string whose code points 0-255 are the bytes (ISO-8859-1), so ASCII payloads stay readable.

Public API (module level, over ``schemas/``; the same methods exist on :class:`Codec`):
``encode``, ``decode``, ``encode_json``, ``to_json_value``, ``from_json_value`` (an already
parsed JSON value, e.g. from JSON Lines), ``fingerprint``, ``schema``, ``dead_letter``,
``RECORDS``, ``ALLOWED_VALUES``, ``DecodeError`` / ``EncodeError``.

JSON input ignores fields the schema does not know (a newer producer may add one), while
``encode`` rejects them (in our own code an unknown field is a typo). A ``str`` subclass
such as a ``StrEnum`` member is accepted and written as its plain value.
"""

from __future__ import annotations

import copy
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, NoReturn

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

__all__ = [
    "ALLOWED_VALUES",
    "RECORDS",
    "SCHEMA_DIR",
    "Codec",
    "DecodeError",
    "EncodeError",
    "dead_letter",
    "decode",
    "encode",
    "encode_json",
    "fingerprint",
    "from_json_value",
    "schema",
    "to_json_value",
]


class DecodeError(ValueError):
    """Bytes (or a JSON value) that are not a valid record; ``str(e)`` is the reason."""


class EncodeError(DecodeError):
    """A value given to :func:`encode` / :func:`encode_json` that does not fit its schema.

    A subclass of :class:`DecodeError` so one ``except DecodeError`` catches every
    codec failure.
    """


SCHEMA_DIR: Final[Path] = Path(__file__).resolve().parent.parent / "schemas"

# Record types in the order of schemas/README.md.
RECORDS: Final[tuple[str, ...]] = (
    "MessageEvent",
    "TypingEvent",
    "PresenceEvent",
    "Conversation",
    "User",
    "Role",
    "AppSettings",
    "Flush",
    "Candidate",
    "Decision",
    "Delivery",
    "Outcome",
    "DeadLetter",
    "InboundAudit",
)

_ACCESS = ("ReadWrite", "Read")
_NOTIFY = ("All", "MentionsOnly", "Off")
_CHANNELS = ("email", "sms", "push", "browser")

# Allowed values of the enum-like string fields, keyed by (record name, field name); the
# record is the one that declares the field (Participant is nested in Conversation). A null
# is allowed wherever the schema makes the field nullable.
ALLOWED_VALUES: Final[Mapping[tuple[str, str], tuple[str, ...]]] = {
    ("MessageEvent", "type"): ("UserMessage", "SystemMessage"),
    ("Participant", "access"): _ACCESS,
    ("Participant", "notify"): _NOTIFY,
    ("Flush", "cause"): ("inactivity", "max_batch", "max_size"),
    ("Candidate", "access"): _ACCESS,
    ("Candidate", "notify"): _NOTIFY,
    ("Decision", "channel"): _CHANNELS,
    ("Decision", "outcome"): ("send", "skip"),
    ("Decision", "reason"): (
        "UNKNOWN_CONVERSATION",
        "OWN_MESSAGES",
        "PARTICIPANT_MUTED",
        "NOT_MENTIONED",
        "UNKNOWN_USER",
        "NO_ROLE",
        "UNKNOWN_ROLE",
        "VIEWING",
        "CHANNEL_DISABLED",
        "NO_ADDRESS",
        "READ_ONLY",
    ),
    ("Decision", "presence"): ("OFFLINE", "ONLINE_ELSEWHERE", "ONLINE_UNFOCUSED", "VIEWING"),
    ("Delivery", "channel"): _CHANNELS,
    ("Outcome", "channel"): _CHANNELS,
    ("Outcome", "status"): ("sent", "failed", "invalid_address"),
    ("DeadLetter", "stage"): ("decode", "admit", "process", "deliver"),
    # processors/reply/parse.py REASONS (tests/reply check they agree)
    ("InboundAudit", "reason"): (
        "ACCEPTED",
        "TOO_LARGE",
        "MALFORMED",
        "DUPLICATE",
        "OWN_MAIL",
        "BOUNCE",
        "AUTO_REPLY",
        "NO_TOKEN",
        "FORGED_TOKEN",
        "EXPIRED_TOKEN",
        "FROM_MISMATCH",
        "UNKNOWN_CONVERSATION",
        "WRONG_CONVERSATION",
        "NOT_PARTICIPANT",
        "READ_ONLY",
        "NO_TEXT",
    ),
}

_SINGLE_OBJECT_MARKER: Final = b"\xc3\x01"
_HEADER_LEN: Final = 10  # marker + 8-byte fingerprint
_CONFLUENT_MAGIC: Final = 0x00
_CONFLUENT_HEADER_LEN: Final = 5  # magic + 4-byte schema id
_JSON_WHITESPACE: Final = b" \t\r\n"
_UTF8_BOM: Final = b"\xef\xbb\xbf"
_OLD_SCHEMA_FILE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[0-9]+)$")

_PRIMITIVES: Final = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)
_NAMED: Final = frozenset({"record", "error", "enum", "fixed"})
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1

Converter = Callable[[Any], Any]
_MISSING: Final = object()
# Field types (as JSON text) whose values need no conversion when their Python type is
# exactly this one. Not int/long: those have a range to check.
_FAST_TYPES: Final[Mapping[str, type]] = {
    '"string"': str,
    '["null", "string"]': str,
    '"boolean"': bool,
    '["null", "boolean"]': bool,
}
Checker = Callable[[Any], None]


# --------------------------------------------------------------------------- errors


class _Invalid(Exception):
    """Internal: a value that fails its schema. ``path`` is built innermost-first while the
    exception unwinds (so the happy path pays nothing for it) and read reversed."""

    __slots__ = ("kind", "detail", "path")

    def __init__(self, kind: str, detail: Any = None) -> None:
        super().__init__(kind)
        self.kind = kind  # "type" | "missing" | "unknown" | "value" | "range"
        self.detail = detail
        self.path: list[str | int] = []

    @classmethod
    def at(cls, segment: str | int, kind: str, detail: Any = None) -> _Invalid:
        exc = cls(kind, detail)
        exc.path.append(segment)
        return exc


def _format_path(segments: Iterable[str | int]) -> str:
    out = ""
    for seg in segments:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif seg.startswith("["):  # a map key, already formatted
            out += seg
        else:
            out += f".{seg}" if out else seg
    return out


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_repr(value: Any, limit: int = 60) -> str:
    return _truncate(repr(value), limit)


def _kind_of(value: Any) -> str:
    """The JSON-ish name of a value's type, for messages (never the value itself)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytes"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _describe(record: str, exc: _Invalid, what: str) -> str:
    path = _format_path(reversed(exc.path))
    if exc.kind == "value":
        value, allowed = exc.detail
        return (
            f"unknown value {_short_repr(value)} for {record}.{path} "
            f"(allowed: {', '.join(allowed)})"
        )
    where = f"field '{path}'" if path else "value"
    if exc.kind == "missing":
        return f"{what} fails schema {record}: {where} missing"
    if exc.kind == "unknown":
        return f"{what} fails schema {record}: unknown {where}"
    if exc.kind == "range":
        return f"{what} fails schema {record}: {where} {exc.detail}"
    expected, got = exc.detail
    return f"{what} fails schema {record}: {where} must be {expected}, got {got}"


def _type_error(expected: str, value: Any) -> NoReturn:
    raise _Invalid("type", (expected, _kind_of(value)))


# --------------------------------------------------------------------------- schema loading


def _fullname(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _namespace_of(fullname: str) -> str | None:
    return fullname.rpartition(".")[0] or None


def _collect_named(
    node: Any, namespace: str | None, out: dict[str, tuple[Any, str | None]]
) -> None:
    """Index every named type defined in ``node`` by full name."""
    if isinstance(node, list):
        for branch in node:
            _collect_named(branch, namespace, out)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind in _NAMED:
        full = _fullname(node["name"], node.get("namespace", namespace))
        if full in out:
            raise ValueError(f"named type {full} is defined twice in {SCHEMA_DIR}")
        ns = _namespace_of(full)
        out[full] = (node, ns)
        for field in node.get("fields", ()):
            _collect_named(field["type"], ns, out)
    elif kind == "array":
        _collect_named(node["items"], namespace, out)
    elif kind == "map":
        _collect_named(node["values"], namespace, out)
    elif isinstance(kind, dict | list):
        _collect_named(kind, namespace, out)


def _expand(
    node: Any,
    namespace: str | None,
    defs: Mapping[str, tuple[Any, str | None]],
    defined: set[str],
) -> Any:
    """A standalone copy of ``node``: a reference to a named type defined in another file is
    replaced by its definition at its first use (later uses stay references), exactly as a
    self-contained Avro schema writes it. This keeps one source of truth per named type
    (e.g. MessageEvent inside Flush) and gives every record a well-defined canonical form."""
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return node
        full = _fullname(node, namespace)
        if full in defined:
            return node
        if full not in defs:
            raise ValueError(f"unknown Avro type {node!r} (looked for {full})")
        definition, def_ns = defs[full]
        inlined = dict(definition)
        if "." not in inlined["name"] and def_ns is not None:
            inlined["namespace"] = def_ns
        return _expand(inlined, namespace, defs, defined)
    if isinstance(node, list):
        return [_expand(branch, namespace, defs, defined) for branch in node]
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    out = dict(node)
    if kind in _NAMED:
        full = _fullname(node["name"], node.get("namespace", namespace))
        defined.add(full)
        ns = _namespace_of(full)
        if "fields" in node:
            out["fields"] = [
                {**field, "type": _expand(field["type"], ns, defs, defined)}
                for field in node["fields"]
            ]
    elif kind == "array":
        out["items"] = _expand(node["items"], namespace, defs, defined)
    elif kind == "map":
        out["values"] = _expand(node["values"], namespace, defs, defined)
    elif isinstance(kind, dict | list | str):
        out["type"] = _expand(kind, namespace, defs, defined)
    return out


# --------------------------------------------------------------------------- compilation


class _Compiler:
    """Turns one standalone schema into a converter: validate (types, int ranges, enum-like
    values), fill defaults, normalise (fresh plain dicts/lists/str, schema field order)."""

    def __init__(self, *, json_mode: bool, strict: bool) -> None:
        self.json_mode = json_mode  # bytes arrive as ISO-8859-1 strings
        self.strict = strict  # unknown record fields are an error
        self.named: dict[str, Converter] = {}

    def compile(self, node: Any, namespace: str | None) -> Converter:
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return self._primitive(node)
            full = _fullname(node, namespace)
            if full in self.named:
                return self.named[full]
            raise ValueError(f"unknown Avro type {node!r}")
        if isinstance(node, list):
            return self._union([self.compile(b, namespace) for b in node], node)
        kind = node["type"]
        if kind in ("record", "error"):
            return self._record(node, namespace)
        if kind == "enum":
            symbols = tuple(node["symbols"])
            conv = self._enum(symbols)
            self.named[_fullname(node["name"], node.get("namespace", namespace))] = conv
            return conv
        if kind == "fixed":
            conv = self._fixed(int(node["size"]))
            self.named[_fullname(node["name"], node.get("namespace", namespace))] = conv
            return conv
        if kind == "array":
            return self._array(self.compile(node["items"], namespace))
        if kind == "map":
            return self._map(self.compile(node["values"], namespace))
        return self.compile(kind, namespace)

    def _primitive(self, kind: str) -> Converter:
        if kind == "string":
            return _convert_string
        if kind == "long":
            return _convert_long
        if kind == "int":
            return _convert_int
        if kind == "boolean":
            return _convert_boolean
        if kind == "null":
            return _convert_null
        if kind in ("float", "double"):
            return _convert_number
        return _convert_json_bytes if self.json_mode else _convert_bytes

    def _union(self, branches: list[Converter], node: list[Any]) -> Converter:
        non_null = [b for b, s in zip(branches, node, strict=True) if s != "null"]
        nullable = len(non_null) < len(branches)
        expected = " or ".join(_type_words(s) for s in node)
        if nullable and len(non_null) == 1:
            inner = non_null[0]

            def convert_optional(value: Any) -> Any:
                if value is None:
                    return None
                try:
                    return inner(value)
                except _Invalid as exc:
                    if exc.kind == "type" and not exc.path:
                        _type_error(expected, value)
                    raise

            return convert_optional

        def convert_union(value: Any) -> Any:
            if value is None and nullable:
                return None
            for branch in non_null:
                try:
                    return branch(value)
                except _Invalid:
                    continue
            _type_error(expected, value)

        return convert_union

    def _enum(self, symbols: tuple[str, ...]) -> Converter:
        allowed = frozenset(symbols)

        def convert_enum(value: Any) -> Any:
            if not isinstance(value, str):
                _type_error("a string", value)
            if value not in allowed:
                raise _Invalid("value", (value, symbols))
            return str.__str__(value)

        return convert_enum

    def _fixed(self, size: int) -> Converter:
        to_bytes = _convert_json_bytes if self.json_mode else _convert_bytes

        def convert_fixed(value: Any) -> Any:
            data: bytes = to_bytes(value)
            if len(data) != size:
                raise _Invalid("range", f"must be exactly {size} bytes, got {len(data)}")
            return data

        return convert_fixed

    def _array(self, item: Converter) -> Converter:
        strings = item is _convert_string

        def convert_array(value: Any) -> Any:
            if not isinstance(value, list | tuple):
                _type_error("an array", value)
            if strings and all(type(v) is str for v in value):
                return list(value)  # the common case (ids), without a call per item
            out = []
            for index, element in enumerate(value):
                try:
                    out.append(item(element))
                except _Invalid as exc:
                    exc.path.append(index)
                    raise
            return out

        return convert_array

    def _map(self, values: Converter) -> Converter:
        def convert_map(value: Any) -> Any:
            if not isinstance(value, Mapping):
                _type_error("an object (map)", value)
            out = {}
            for key, element in value.items():
                if not isinstance(key, str):
                    raise _Invalid("type", ("a map with string keys", f"key {_kind_of(key)}"))
                try:
                    out[str.__str__(key)] = values(element)
                except _Invalid as exc:
                    exc.path.append(f"[{key!r}]")
                    raise
            return out

        return convert_map

    def _record(self, node: Mapping[str, Any], namespace: str | None) -> Converter:
        full = _fullname(node["name"], node.get("namespace", namespace))
        ns = _namespace_of(full)
        short = full.rpartition(".")[2]
        # (name, converter, fast type, required, default, default factory for mutable ones);
        # a value whose type is exactly the fast type is valid as it is, which spares a call
        # per field for the strings and booleans that make up most records.
        fields: list[tuple[str, Converter, type | None, bool, Any, Callable[[], Any] | None]] = []
        names: set[str] = set()
        strict = self.strict
        expected = f"an object ({short} record)"
        missing = _MISSING

        def convert_record(value: Any) -> Any:
            if type(value) is not dict and not isinstance(value, Mapping):
                _type_error(expected, value)
            get = value.get
            out = {}
            seen = 0
            for name, conv, fast, required, default, factory in fields:
                field_value = get(name, missing)
                if field_value is missing:
                    if required:
                        raise _Invalid.at(name, "missing")
                    out[name] = factory() if factory is not None else default
                    continue
                seen += 1
                if type(field_value) is fast:
                    out[name] = field_value
                    continue
                try:
                    out[name] = conv(field_value)
                except _Invalid as exc:
                    exc.path.append(name)
                    raise
            if strict and seen != len(value):
                extra = sorted(str(k) for k in value if k not in names)
                raise _Invalid.at(extra[0], "unknown")
            return out

        # Registered before the fields compile, so a recursive reference resolves.
        self.named[full] = convert_record
        for field in node["fields"]:
            name = field["name"]
            conv = self.compile(field["type"], ns)
            fast = _FAST_TYPES.get(json.dumps(field["type"]))
            allowed = ALLOWED_VALUES.get((short, name))
            if allowed is not None:
                conv = _enum_like(field["type"], allowed, short, name)
                fast = None
            required = "default" not in field
            default: Any = None
            factory: Callable[[], Any] | None = None
            if not required:
                # Defaults are written in JSON form; convert (and so validate) them once.
                default = _Compiler(json_mode=True, strict=True).compile(field["type"], ns)(
                    field["default"]
                )
                if isinstance(default, list | dict):
                    factory = _copier(default)
            fields.append((name, conv, fast, required, default, factory))
            names.add(name)
        return convert_record


def _copier(default: Any) -> Callable[[], Any]:
    """A fresh copy of a mutable default per record, so no two records share a list."""
    if default == []:
        return list
    if default == {}:
        return dict

    def fresh() -> Any:
        return copy.deepcopy(default)

    return fresh


def _type_words(node: Any) -> str:
    if isinstance(node, str):
        return {
            "null": "null",
            "boolean": "a boolean",
            "int": "an int (32-bit integer)",
            "long": "a long (integer)",
            "float": "a number",
            "double": "a number",
            "bytes": "bytes",
            "string": "a string",
        }.get(node, f"a {node.rpartition('.')[2]} record")
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "array":
            return "an array"
        if kind == "map":
            return "an object (map)"
        if kind in _NAMED:
            return f"a {node['name']} {kind}"
        return _type_words(kind)
    return "a union"


def _enum_like(node: Any, allowed: tuple[str, ...], record: str, field: str) -> Converter:
    nullable = node == ["null", "string"]
    if node != "string" and not nullable:
        raise ValueError(f"{record}.{field} is enum-like but its schema type is {node!r}")
    allowed_set = frozenset(allowed)
    expected = "null or a string" if nullable else "a string"

    def convert_enum_like(value: Any) -> Any:
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            _type_error(expected, value)
        if value not in allowed_set:
            raise _Invalid("value", (value, allowed))
        return str.__str__(value)  # a StrEnum member becomes its plain value

    return convert_enum_like


def _convert_string(value: Any) -> Any:
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    _type_error("a string", value)


def _convert_long(value: Any) -> Any:
    if type(value) is int:
        if _LONG_MIN <= value <= _LONG_MAX:
            return value
        raise _Invalid("range", "is out of range for a long (64-bit)")
    if isinstance(value, int) and not isinstance(value, bool):
        return _convert_long(int(value))
    _type_error("a long (integer)", value)


def _convert_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        if _INT_MIN <= value <= _INT_MAX:
            return int(value)
        raise _Invalid("range", "is out of range for an int (32-bit)")
    _type_error("an int (32-bit integer)", value)


def _convert_boolean(value: Any) -> Any:
    if value is True or value is False:
        return value
    _type_error("a boolean", value)


def _convert_null(value: Any) -> Any:
    if value is None:
        return None
    _type_error("null", value)


def _convert_number(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    _type_error("a number", value)


def _convert_bytes(value: Any) -> Any:
    if type(value) is bytes:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    _type_error("bytes", value)


def _convert_json_bytes(value: Any) -> Any:
    if not isinstance(value, str):
        _type_error("bytes (a string of code points 0-255)", value)
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise _Invalid(
            "range", "has a code point above 255 (bytes in JSON are ISO-8859-1)"
        ) from None


def _compile_checker(
    node: Any, namespace: str | None, named: dict[str, Checker | None]
) -> Checker | None:
    """A function raising :class:`_Invalid` for an unknown enum-like value in data fastavro
    decoded (types are already right), or None when ``node`` holds no enum-like field."""
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return None
        return named.get(_fullname(node, namespace))
    if isinstance(node, list):
        inner = [c for c in (_compile_checker(b, namespace, named) for b in node) if c]
        if not inner:
            return None
        if len(inner) == 1:
            only = inner[0]

            def check_branch(value: Any) -> None:
                if isinstance(value, dict):
                    only(value)

            return check_branch
        return None  # no union of several enum-bearing records in our schemas
    kind = node["type"]
    if kind == "array":
        item = _compile_checker(node["items"], namespace, named)
        if item is None:
            return None
        item_check = item

        def check_array(value: Any) -> None:
            for index, element in enumerate(value):
                try:
                    item_check(element)
                except _Invalid as exc:
                    exc.path.append(index)
                    raise

        return check_array
    if kind == "map":
        values = _compile_checker(node["values"], namespace, named)
        if values is None:
            return None
        values_check = values

        def check_map(value: Any) -> None:
            for key, element in value.items():
                try:
                    values_check(element)
                except _Invalid as exc:
                    exc.path.append(f"[{key!r}]")
                    raise

        return check_map
    if kind not in ("record", "error"):
        if kind in _NAMED:
            named[_fullname(node["name"], node.get("namespace", namespace))] = None
            return None
        return _compile_checker(kind, namespace, named)
    full = _fullname(node["name"], node.get("namespace", namespace))
    ns = _namespace_of(full)
    short = full.rpartition(".")[2]
    named[full] = None
    leaves: list[tuple[str, frozenset[str], tuple[str, ...]]] = []
    nested: list[tuple[str, Checker]] = []
    for field in node["fields"]:
        allowed = ALLOWED_VALUES.get((short, field["name"]))
        if allowed is not None:
            leaves.append((field["name"], frozenset(allowed), allowed))
            continue
        sub = _compile_checker(field["type"], ns, named)
        if sub is not None:
            nested.append((field["name"], sub))
    if not leaves and not nested:
        return None

    def check_record(value: Any) -> None:
        for name, allowed_set, allowed_order in leaves:
            v = value[name]
            if v is not None and v not in allowed_set:
                raise _Invalid.at(name, "value", (v, allowed_order))
        for name, sub_check in nested:
            try:
                sub_check(value[name])
            except _Invalid as exc:
                exc.path.append(name)
                raise

    named[full] = check_record
    return check_record


def _jsonable(value: Any) -> Any:
    """Converted Python form -> JSON form (only ``bytes`` differ)."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _has_bytes(node: Any) -> bool:
    """Whether a schema holds a bytes or fixed type anywhere (its JSON form then differs)."""
    if isinstance(node, str):
        return node == "bytes"
    if isinstance(node, list):
        return any(_has_bytes(branch) for branch in node)
    if not isinstance(node, dict):
        return False
    kind = node.get("type")
    if kind == "fixed":
        return True
    if kind in ("record", "error"):
        return any(_has_bytes(field["type"]) for field in node["fields"])
    if kind == "array":
        return _has_bytes(node["items"])
    if kind == "map":
        return _has_bytes(node["values"])
    return _has_bytes(kind)


# --------------------------------------------------------------------------- the codec


class _RecordCodec:
    """Everything precomputed for one record type."""

    __slots__ = (
        "name",
        "schema_json",
        "parsed",
        "canonical",
        "fingerprint",
        "header",
        "old_writers",
        "from_python",
        "from_json",
        "check",
        "has_bytes",
        "field_names",
    )

    def __init__(self, name: str, standalone: dict[str, Any]) -> None:
        self.name = name
        self.schema_json = standalone
        self.parsed = parse_schema(standalone)
        self.canonical: str = to_parsing_canonical_form(standalone)
        self.fingerprint: bytes = _fingerprint_bytes(self.canonical)
        self.header: bytes = _SINGLE_OBJECT_MARKER + self.fingerprint
        # fingerprint -> parsed old writer schema, resolved to ``parsed`` on read
        self.old_writers: dict[bytes, Any] = {}
        self.from_python: Converter = _Compiler(json_mode=False, strict=True).compile(
            standalone, None
        )
        self.from_json: Converter = _Compiler(json_mode=True, strict=False).compile(
            standalone, None
        )
        self.check: Checker | None = _compile_checker(standalone, None, {})
        self.has_bytes = _has_bytes(standalone)
        self.field_names: tuple[str, ...] = tuple(f["name"] for f in standalone["fields"])


def _fingerprint_bytes(canonical: str) -> bytes:
    # fastavro gives the CRC-64-AVRO fingerprint as hex of its little-endian bytes, which
    # is exactly the byte order single-object encoding puts on the wire.
    return bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))


def _fingerprint_hex(fp: bytes) -> str:
    return f"0x{int.from_bytes(fp, 'little'):016x}"


class Codec:
    """All record types of one schema directory.

    The module-level functions use a default instance over ``schemas/``. Build your own
    for a Confluent schema registry: ``schema_lookup`` maps a registry schema id to the
    writer schema (JSON text or a parsed dict); fetching it over HTTP is the caller's
    business (and should be cached there too; this codec caches per schema id).
    """

    def __init__(
        self,
        schema_dir: Path | str | None = None,
        *,
        schema_registry_url: str | None = None,
        schema_lookup: Callable[[int], str | Mapping[str, Any]] | None = None,
    ) -> None:
        self.schema_dir = Path(schema_dir) if schema_dir is not None else SCHEMA_DIR
        self.schema_registry_url = schema_registry_url
        self.schema_lookup = schema_lookup
        self._confluent: dict[int, Any] = {}
        current: dict[str, dict[str, Any]] = {}
        old: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for path in sorted(self.schema_dir.glob("*.avsc")):
            stem = path.name[: -len(".avsc")]
            schema = json.loads(path.read_text(encoding="utf-8"))
            match = _OLD_SCHEMA_FILE.match(stem)
            name = match.group("name") if match else stem
            if schema.get("name") != name:
                raise ValueError(f"{path}: schema name {schema.get('name')!r} is not {name!r}")
            if match:
                old.setdefault(name, []).append((path.name, schema))
            else:
                current[name] = schema
        defs: dict[str, tuple[Any, str | None]] = {}
        for schema in current.values():
            _collect_named(schema, None, defs)
        for record, field in ALLOWED_VALUES:
            if not any(full.rpartition(".")[2] == record for full in defs):
                raise ValueError(f"ALLOWED_VALUES names {record}.{field}: no such record")

        self._records: dict[str, _RecordCodec] = {
            name: _RecordCodec(name, _expand(schema, None, defs, set()))
            for name, schema in current.items()
        }
        self.records: tuple[str, ...] = tuple(r for r in RECORDS if r in self._records) + tuple(
            sorted(set(self._records) - set(RECORDS))
        )
        # fingerprint -> record name, for "this is a TypingEvent, not a MessageEvent"
        self._by_fingerprint: dict[bytes, str] = {}
        for rec in self._records.values():
            self._register_fingerprint(rec.fingerprint, rec.name)
        for name, versions in old.items():
            if name not in self._records:
                raise ValueError(f"old writer schema for {name} but no {name}.avsc")
            rec = self._records[name]
            for filename, schema in versions:
                standalone = _expand(schema, None, defs, set())
                fp = _fingerprint_bytes(to_parsing_canonical_form(standalone))
                if fp == rec.fingerprint:
                    continue  # identical to the current schema
                # Fail at import, not on the first old record, if the evolution is broken.
                _check_evolution(standalone, rec.schema_json, filename)
                rec.old_writers[fp] = parse_schema(standalone)
                self._register_fingerprint(fp, name)

    def _register_fingerprint(self, fp: bytes, name: str) -> None:
        known = self._by_fingerprint.get(fp)
        if known is not None and known != name:
            raise ValueError(f"schemas {known} and {name} share fingerprint {_fingerprint_hex(fp)}")
        self._by_fingerprint[fp] = name

    def _record(self, record: str) -> _RecordCodec:
        try:
            return self._records[record]
        except KeyError:
            known = ", ".join(self.records)
            raise KeyError(f"unknown record type {record!r} (known: {known})") from None

    # ---- introspection

    def fingerprint(self, record: str) -> int:
        """CRC-64-AVRO fingerprint of the record's current schema (Parsing Canonical Form)."""
        return int.from_bytes(self._record(record).fingerprint, "little")

    def schema(self, record: str) -> dict[str, Any]:
        """The standalone (references expanded) JSON schema of the record, a copy."""
        return copy.deepcopy(self._record(record).schema_json)

    # ---- encoding

    def encode(self, record: str, value: Mapping[str, Any]) -> bytes:
        """Avro single-object encoding of ``value`` (Python form: ``bytes`` for bytes).

        Missing fields that have a default get it; a missing required field, a wrong type,
        an unknown field or an unknown enum-like value raises :class:`EncodeError`.
        """
        rec = self._record(record)
        try:
            datum = rec.from_python(value)
        except _Invalid as exc:
            raise EncodeError(_describe(record, exc, "value")) from None
        out = io.BytesIO()
        out.write(rec.header)
        schemaless_writer(out, rec.parsed, datum)
        return out.getvalue()

    def encode_built(self, record: str, value: Mapping[str, Any]) -> bytes:
        """:meth:`encode` for a record this package built itself (the worker's outputs).

        fastavro writes it directly (it checks each value's type and fills defaults as it
        writes), skipping the field-by-field validation pass that costs most of
        :meth:`encode`; the bytes are the same. Anything fastavro refuses goes through
        :meth:`encode`, so a bad record raises the same :class:`EncodeError`. Records
        with bytes fields (their JSON form differs) always take :meth:`encode`.
        """
        rec = self._record(record)
        if rec.has_bytes:
            return self.encode(record, value)
        out = io.BytesIO()
        out.write(rec.header)
        try:
            schemaless_writer(out, rec.parsed, value)
        except Exception:  # noqa: BLE001 - the validating path says what is wrong
            return self.encode(record, value)
        return out.getvalue()

    def to_json_value(self, record: str, value: Mapping[str, Any]) -> dict[str, Any]:
        """Validated JSON form of ``value`` (all fields, defaults filled); raises EncodeError."""
        rec = self._record(record)
        try:
            datum: dict[str, Any] = rec.from_python(value)
        except _Invalid as exc:
            raise EncodeError(_describe(record, exc, "value")) from None
        return _jsonable(datum) if rec.has_bytes else datum

    def encode_json(self, record: str, value: Mapping[str, Any]) -> bytes:
        """Compact UTF-8 JSON of :meth:`to_json_value`, for JSON Lines and demo tooling."""
        return json.dumps(
            self.to_json_value(record, value), ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")

    # ---- decoding

    def from_json_value(self, record: str, value: Any) -> dict[str, Any]:
        """Validate an already parsed JSON value (e.g. a JSON Lines ``value``) and return it
        in the decoded form (defaults filled, bytes as ``bytes``); raises DecodeError."""
        rec = self._record(record)
        try:
            result: dict[str, Any] = rec.from_json(value)
        except _Invalid as exc:
            raise DecodeError(_describe(record, exc, "JSON value")) from None
        return result

    def decode(self, record: str, data: bytes | bytearray | memoryview) -> dict[str, Any]:
        """Decode one record, telling the format by its first bytes (see the module doc).

        Raises :class:`DecodeError`, and only that, for any bytes that are not a valid
        ``record``; an unknown ``record`` name is a programming error (``KeyError``).
        """
        rec = self._record(record)
        if type(data) is not bytes:
            if not isinstance(data, bytearray | memoryview):
                if data is None:
                    raise DecodeError(f"no value (null or tombstone) for {record}")
                raise DecodeError(f"expected bytes for {record}, got {type(data).__name__}")
            data = bytes(data)
        if data[:2] == _SINGLE_OBJECT_MARKER:
            return self._decode_single_object(rec, data)
        if not data:
            raise DecodeError(f"empty value for {record}")
        first = data[0]
        if first == 0x7B:  # "{"
            return self._decode_json(rec, data)
        if first == _CONFLUENT_MAGIC:
            return self._decode_confluent(rec, data)
        if first in _JSON_WHITESPACE or data.startswith(_UTF8_BOM):
            text = data[len(_UTF8_BOM) :] if data.startswith(_UTF8_BOM) else data
            text = text.lstrip(_JSON_WHITESPACE)
            if text[:1] == b"{":
                return self._decode_json(rec, text)
        head = " ".join(f"0x{b:02X}" for b in data[:2])
        raise DecodeError(
            f"{record}: not Avro single-object, Confluent or JSON (first bytes {head})"
        )

    def _decode_single_object(self, rec: _RecordCodec, data: bytes) -> dict[str, Any]:
        if len(data) < _HEADER_LEN:
            raise DecodeError(
                f"{rec.name}: Avro single-object header truncated ({len(data)} of 10 bytes)"
            )
        fp = data[2:_HEADER_LEN]
        reader: Any = None
        if fp == rec.fingerprint:
            writer = rec.parsed
        elif fp in rec.old_writers:
            writer, reader = rec.old_writers[fp], rec.parsed
        else:
            other = self._by_fingerprint.get(fp)
            if other is not None:
                raise DecodeError(
                    f"schema fingerprint {_fingerprint_hex(fp)} is {other}, expected {rec.name}"
                )
            raise DecodeError(f"unknown schema fingerprint {_fingerprint_hex(fp)} for {rec.name}")
        return self._read_avro(rec, data, _HEADER_LEN, writer, reader, _fingerprint_hex(fp))

    def _read_avro(
        self, rec: _RecordCodec, data: bytes, start: int, writer: Any, reader: Any, origin: str
    ) -> dict[str, Any]:
        body = io.BytesIO(data)
        body.seek(start)
        try:
            value: Any = schemaless_reader(body, writer, reader)
        except Exception as exc:  # any failure inside fastavro means "not this schema"
            raise DecodeError(
                f"Avro body does not match {rec.name} ({origin}): {type(exc).__name__}: "
                f"{_truncate(str(exc), 120)}"
            ) from None
        left = len(data) - body.tell()
        if left:
            raise DecodeError(f"{left} trailing bytes after the Avro {rec.name} body ({origin})")
        if not isinstance(value, dict):
            raise DecodeError(f"Avro body of {rec.name} is not a record ({origin})")
        result: dict[str, Any] = value
        if reader is not None:
            # Resolution appends fields the writer lacked; give them their schema place, so
            # every decoded record has the same shape whatever wrote it.
            result = {name: value[name] for name in rec.field_names}
        if rec.check is not None:
            try:
                rec.check(result)
            except _Invalid as exc:
                raise DecodeError(_describe(rec.name, exc, "Avro value")) from None
        return result

    def _decode_confluent(self, rec: _RecordCodec, data: bytes) -> dict[str, Any]:
        if len(data) < _CONFLUENT_HEADER_LEN:
            raise DecodeError(
                f"{rec.name}: Confluent wire format header truncated ({len(data)} of 5 bytes)"
            )
        schema_id = int.from_bytes(data[1:_CONFLUENT_HEADER_LEN], "big")
        origin = f"Confluent schema id {schema_id}"
        if self.schema_lookup is None:
            if self.schema_registry_url is None:
                raise DecodeError(
                    f"Confluent wire format (schema id {schema_id}) but no schema registry "
                    f"is configured"
                )
            raise DecodeError(
                f"Confluent wire format (schema id {schema_id}): a schema registry is "
                f"configured but this codec has no schema_lookup to fetch from it"
            )
        writer = self._confluent.get(schema_id)
        if writer is None:
            try:
                found = self.schema_lookup(schema_id)
                schema = json.loads(found) if isinstance(found, str) else dict(found)
                writer = parse_schema(schema)
            except Exception as exc:
                raise DecodeError(
                    f"Confluent wire format (schema id {schema_id}): no usable writer schema "
                    f"for {rec.name}: {type(exc).__name__}: {_truncate(str(exc), 120)}"
                ) from None
            self._confluent[schema_id] = writer
        return self._read_avro(rec, data, _CONFLUENT_HEADER_LEN, writer, rec.parsed, origin)

    def _decode_json(self, rec: _RecordCodec, data: bytes) -> dict[str, Any]:
        try:
            value = json.loads(data)
        except Exception as exc:  # JSONDecodeError, UnicodeDecodeError, RecursionError...
            raise DecodeError(
                f"{rec.name}: invalid JSON: {type(exc).__name__}: {_truncate(str(exc), 120)}"
            ) from None
        try:
            result: dict[str, Any] = rec.from_json(value)
        except _Invalid as exc:
            raise DecodeError(_describe(rec.name, exc, "JSON value")) from None
        except RecursionError:
            raise DecodeError(f"{rec.name}: JSON value nested too deeply") from None
        return result


def _check_evolution(writer: Mapping[str, Any], reader: Mapping[str, Any], origin: str) -> None:
    """The Avro rule old writer schemas rely on: a field the old schema lacks has a default.

    Checked on the top-level record at load time; deeper mismatches still surface, as a
    DecodeError, when an old record is read."""
    written = {field["name"] for field in writer["fields"]}
    for field in reader["fields"]:
        if field["name"] not in written and "default" not in field:
            raise ValueError(
                f"{origin}: field {field['name']!r} of {reader['name']} is not in this old "
                f"writer schema and has no default, so old records cannot be read"
            )


# --------------------------------------------------------------------------- module API

_DEFAULT: Final = Codec()

encode = _DEFAULT.encode
encode_built = _DEFAULT.encode_built
decode = _DEFAULT.decode
encode_json = _DEFAULT.encode_json
to_json_value = _DEFAULT.to_json_value
from_json_value = _DEFAULT.from_json_value
fingerprint = _DEFAULT.fingerprint
schema = _DEFAULT.schema


# A DeadLetter must itself fit in one record (a default producer takes 1 MB): a value
# larger than this, or a key larger than DEAD_LETTER_MAX_KEY_BYTES, is not copied; the
# record then points at the original (topic, partition, offset) with its size.
DEAD_LETTER_MAX_VALUE_BYTES: Final = 512 * 1024
DEAD_LETTER_MAX_KEY_BYTES: Final = 4 * 1024
DEAD_LETTER_MAX_ERROR_CHARS: Final = 1_000


def dead_letter(
    *,
    source_topic: str,
    key: bytes | None,
    value: bytes | None,
    error: str,
    stage: str,
    partition: int | None,
    offset: int | None,
    ts: int,
    size: int | None = None,
) -> dict[str, Any]:
    """A DeadLetter record (schemas/DeadLetter.avsc): the original bytes unchanged, the
    reason, and where they came from. ``stage`` is ``decode``, ``admit``, ``process`` or
    ``deliver``; anything else raises :class:`EncodeError`, as does a value of the wrong type.

    A value over ``DEAD_LETTER_MAX_VALUE_BYTES`` or a key over
    ``DEAD_LETTER_MAX_KEY_BYTES`` is left out (``by_reference``: the record names the
    source topic, partition, offset and size instead), and the error text is cut to
    ``DEAD_LETTER_MAX_ERROR_CHARS``, so a dead letter always fits where it is written.
    ``size`` is the original value's size when ``value`` is not given (None or a
    tombstone has none)."""
    raw = value if value is not None else b""
    by_reference = len(raw) > DEAD_LETTER_MAX_VALUE_BYTES or (
        key is not None and len(key) > DEAD_LETTER_MAX_KEY_BYTES
    )
    record = {
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "key": None if by_reference else key,
        "value": b"" if by_reference else raw,
        "error": _truncate(error, DEAD_LETTER_MAX_ERROR_CHARS),
        "stage": stage,
        "ts": ts,
        "size": size if value is None else len(raw),
        "by_reference": by_reference,
    }
    try:
        result: dict[str, Any] = _DEFAULT._record("DeadLetter").from_python(record)
    except _Invalid as exc:
        raise EncodeError(_describe("DeadLetter", exc, "value")) from None
    return result
