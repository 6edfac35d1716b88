"""The wire codec: every record type in ``schemas/``, in and out of bytes (contract §3).

Pure: no Faust or Kafka imports, no clock, no environment. fastavro does the Avro work:
it resolves the named types across the schema files (``parse_schema`` with
``named_schemas``, ``expand=True`` for the standalone schema), gives the canonical form
and CRC-64-AVRO fingerprints, reads, writes and resolves old writer schemas. What this
module adds is the one validation of a value, compiled once per record type from the
parsed schema into plain Python (:class:`_Compiler`), because fastavro's ``validate``
costs ~3 us a record (replay reads ~300k a run), stops at the first error without the
array index or the nested record, and knows nothing of the enum-like strings below.

Formats, told apart by their first bytes (:func:`decode`):

* ``C3 01`` + 8-byte little-endian fingerprint + Avro body: single-object encoding, what
  :func:`encode` writes. The fingerprint may be an old writer schema kept as
  ``schemas/<Name>.v<N>.avsc``; old bodies are resolved to the current schema.
* ``00`` + 4-byte big-endian schema id: the Confluent wire format. A :class:`Codec` with a
  ``schema_lookup`` (schema id -> writer schema; :mod:`processors.registry` builds one on
  a schema registry) decodes it, caching each writer schema; the lookup's failure
  (registry unreachable, unknown id) is the record's :class:`DecodeError`, with the
  lookup's own words when it raises one. :func:`encode_confluent` writes this format
  (the ``--confluent`` producers).
* ``{`` after optional whitespace: JSON in the form of contract §8, validated against the
  same schema, defaults filled, in exactly the shape Avro decoding gives.

Allowed values. Enum-like fields are Avro ``string``s, and the values allowed are ONE
table, :data:`ALLOWED_VALUES`, built from the core's own enums where the core has one
(``Reason``, ``Presence``, ``topics.CHANNELS``, ``reply.parse.REASONS``); the rest are
written once, here. Not Avro ``enum``s with a default symbol: that changes every
fingerprint, and Avro cannot resolve an old ``string`` writer to an ``enum`` reader, so
every record written so far (and avro-python3 producers) would need a migration; with
strings, adding a value is a code change and no wire change.

Validation happens once per record: the compiled check of a JSON value or of a value to
encode also fills defaults and normalises (plain ``dict``/``list``/``str``, schema
order), and fastavro then writes without validating again. An Avro body fastavro read
has its types right; only its enum-like values (and the field order, after resolution)
go through the same compiled check.

Every failure to decode raises :class:`DecodeError` and nothing else; its message names
fields, types and enum-like values, never the text of a message. Invalid values given to
:func:`encode` raise :class:`EncodeError`, a subclass. JSON input ignores fields the
schema does not know (a newer producer may add one); ``encode`` rejects them (a typo).
JSON form of ``bytes`` (only ``DeadLetter.key``/``value``): a string of code points 0-255.

:func:`json_line` writes one replay output line (contract §9) with a writer compiled from
the same schema: the bytes ``json.dumps(..., ensure_ascii=False)`` gives, at orjson speed.
"""

from __future__ import annotations

import copy
import io
import json
import re
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, Final

import orjson
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from processors.core.decisions import Reason
from processors.core.presence import Presence
from processors.reply.parse import REASONS as INBOUND_REASONS
from processors.topics import CHANNELS

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
    "encode_confluent",
    "encode_json",
    "fingerprint",
    "from_json_value",
    "json_line",
    "schema",
    "to_json_value",
]


class DecodeError(ValueError):
    """Bytes (or a JSON value) that are not a valid record; ``str(e)`` is the reason."""


class EncodeError(DecodeError):
    """A value given to :func:`encode` that does not fit its schema (``except DecodeError``
    catches both)."""


#: The schemas ship inside the package; the repository's top-level ``schemas/`` links here.
SCHEMA_DIR: Final[Path] = Path(__file__).resolve().parent / "schemas"

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
_CHANNELS = tuple(CHANNELS)

#: Allowed values of the enum-like string fields, keyed by (declaring record, field); a
#: null is allowed wherever the schema makes the field nullable.
ALLOWED_VALUES: Final[Mapping[tuple[str, str], tuple[str, ...]]] = {
    ("MessageEvent", "type"): ("UserMessage", "SystemMessage"),
    ("Participant", "access"): _ACCESS,
    ("Participant", "notify"): _NOTIFY,
    ("Flush", "cause"): ("inactivity", "max_batch", "max_size"),
    ("Candidate", "access"): _ACCESS,
    ("Candidate", "notify"): _NOTIFY,
    ("Decision", "channel"): _CHANNELS,
    ("Decision", "outcome"): ("send", "skip"),
    ("Decision", "reason"): tuple(map(str.__str__, Reason)),
    ("Decision", "presence"): tuple(map(str.__str__, Presence)),
    ("Delivery", "channel"): _CHANNELS,
    ("Outcome", "channel"): _CHANNELS,
    ("Outcome", "status"): ("sent", "failed", "invalid_address"),
    ("DeadLetter", "stage"): ("decode", "admit", "process", "deliver"),
    ("InboundAudit", "reason"): tuple(INBOUND_REASONS),
}

_SINGLE_OBJECT_MARKER: Final = b"\xc3\x01"
_HEADER_LEN: Final = 10  # marker + 8-byte fingerprint
_CONFLUENT_HEADER_LEN: Final = 5  # magic 0x00 + 4-byte schema id
_JSON_WHITESPACE: Final = b" \t\r\n"
_UTF8_BOM: Final = b"\xef\xbb\xbf"
_OLD_SCHEMA_FILE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[0-9]+)$")
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_MISSING: Final = object()

# --------------------------------------------------------------------------- errors


class _Invalid(Exception):
    """A value that fails its schema; ``path`` is built innermost-first as it unwinds."""

    def __init__(self, kind: str, detail: Any = None) -> None:
        super().__init__(kind)
        self.kind = kind  # "type" | "missing" | "unknown" | "value" | "range"
        self.detail = detail
        self.path: list[str | int] = []


def _format_path(segments: list[str | int]) -> str:
    out = ""
    for seg in reversed(segments):
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif seg.startswith("["):  # a map key, already formatted
            out += seg
        else:
            out += f".{seg}" if out else seg
    return out


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind_of(value: Any) -> str:
    """The JSON name of a value's type, for reasons (never the value itself)."""
    for kind, types in _KINDS:
        if isinstance(value, types):
            return kind
    return "null" if value is None else type(value).__name__


_KINDS: Final = (
    ("boolean", bool),
    ("integer", int),
    ("number", float),
    ("string", str),
    ("bytes", bytes | bytearray | memoryview),
    ("array", list | tuple),
    ("object", Mapping),
)


def _describe(record: str, exc: _Invalid, what: str) -> str:
    path = _format_path(exc.path)
    if exc.kind == "value":
        value, allowed = exc.detail
        shown = _truncate(repr(value), 60)
        return f"unknown value {shown} for {record}.{path} (allowed: {', '.join(allowed)})"
    where = f"field '{path}'" if path else "value"
    if exc.kind == "missing":
        return f"{what} fails schema {record}: {where} missing"
    if exc.kind == "unknown":
        return f"{what} fails schema {record}: unknown {where}"
    if exc.kind == "range":
        return f"{what} fails schema {record}: {where} {exc.detail}"
    expected, got = exc.detail
    return f"{what} fails schema {record}: {where} must be {expected}, got {got}"


# --------------------------------------------------------------------------- checks of one value
# Slow paths of the compiled checks: the common case (exact type) never calls them.


def _fail(expected: str, value: Any) -> Any:
    raise _Invalid("type", (expected, _kind_of(value)))


def _string(x: Any, words: str) -> str:
    return str.__str__(x) if isinstance(x, str) else _fail(words, x)


def _integer(x: Any, words: str, low: int, high: int, name: str) -> int:
    if not isinstance(x, int) or isinstance(x, bool):
        return _fail(words, x)  # type: ignore[no-any-return]
    if not low <= x <= high:
        raise _Invalid("range", f"is out of range for {name}")
    return int(x)


def _number(x: Any, words: str) -> float:
    if isinstance(x, int | float) and not isinstance(x, bool):
        return float(x)
    return _fail(words, x)  # type: ignore[no-any-return]


def _bytes(x: Any, words: str) -> bytes:
    return bytes(x) if isinstance(x, bytes | bytearray | memoryview) else _fail(words, x)


def _json_bytes(x: Any, words: str) -> bytes:
    if not isinstance(x, str):
        return _fail(words, x)  # type: ignore[no-any-return]
    try:
        return x.encode("latin-1")
    except UnicodeEncodeError:
        raise _Invalid(
            "range", "has a code point above 255 (bytes in JSON are ISO-8859-1)"
        ) from None


def _enum_like(x: Any, words: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(x, str):
        return _fail(words, x)  # type: ignore[no-any-return]
    if x not in allowed:
        raise _Invalid("value", (x, allowed))
    return str.__str__(x)


def _items(x: Any, words: str, item: Callable[[Any], Any], python: bool) -> list[Any]:
    if not (isinstance(x, list) or (python and isinstance(x, tuple))):
        return _fail(words, x)  # type: ignore[no-any-return]
    if item is _str_item and all(type(e) is str for e in x):
        return list(x)  # ids: the common case, without a call per item
    out: list[Any] = []
    for index, element in enumerate(x):
        try:
            out.append(item(element))
        except _Invalid as exc:
            exc.path.append(index)
            raise
    return out


def _values(x: Any, words: str, item: Callable[[Any], Any]) -> dict[str, Any]:
    if not isinstance(x, Mapping):
        return _fail(words, x)  # type: ignore[no-any-return]
    out = {}
    for key, element in x.items():
        if not isinstance(key, str):
            raise _Invalid("type", ("a map with string keys", f"key {_kind_of(key)}"))
        try:
            out[str.__str__(key)] = item(element)
        except _Invalid as exc:
            exc.path.append(f"[{key!r}]")
            raise
    return out


def _str_item(x: Any) -> str:
    return x if type(x) is str else _string(x, "a string")


_WORDS: Final = {
    "null": "null",
    "boolean": "a boolean",
    "int": "an int (32-bit integer)",
    "long": "a long (integer)",
    "float": "a number",
    "double": "a number",
    "bytes": "bytes",
    "string": "a string",
}


def _words(node: Any) -> str:
    if isinstance(node, str):
        return _WORDS.get(node, f"a {node.rpartition('.')[2]} record")
    if isinstance(node, list):
        return " or ".join(_words(b) for b in node)
    kind = node["type"]
    if kind == "record":
        return f"an object ({node['name'].rpartition('.')[2]} record)"
    return {"array": "an array", "map": "an object (map)"}.get(kind, f"a {kind}")


# --------------------------------------------------------------------------- compiled code


class _Compiler:
    """Python source for one standalone (expanded) schema: per named record a check
    ``c<i>(value) -> normalised dict`` (``python``: the Python form, strict about
    unknown fields; else the JSON form) and a writer ``w<i>(value) -> JSON text`` in
    ``json.dumps(..., ensure_ascii=False)``'s exact format."""

    def __init__(self, python: bool) -> None:
        self.python = python
        self.src: list[str] = []
        self.names: dict[str, int] = {}  # record full name -> index
        self.env: dict[str, Any] = {
            **{f.__name__: f for f in (_string, _integer, _number, _enum_like, _items)},
            **{f.__name__: f for f in (_values, _str_item, _fail, _kind_of)},
            "_bytes": _bytes if python else _json_bytes,
            "_Invalid": _Invalid,
            "Mapping": Mapping,
            "M": _MISSING,
            "E": encode_basestring,
            "deepcopy": copy.deepcopy,
            "_unknown": _unknown,
        }
        self.has_enum_like = False

    def const(self, value: Any) -> str:
        name = f"K{len(self.env)}"
        self.env[name] = value
        return name

    def compile(self, schema: Mapping[str, Any]) -> tuple[Callable[..., Any], Callable[..., str]]:
        self.record(schema)
        exec("\n".join(self.src), self.env)  # noqa: S102 - source generated from the schema
        return self.env["c0"], self.env["w0"]

    def record(self, node: Mapping[str, Any]) -> int:
        index = self.names[node["name"]] = len(self.names)
        short = node["name"].rpartition(".")[2]
        body: list[str] = []
        out: list[str] = []
        parts: list[str] = []  # the writer's f-string, one part per field
        fields: list[str] = []  # the writer's statements computing each field's JSON
        for field in node["fields"]:
            name, ftype = field["name"], field["type"]
            var = f"x{len(out)}"
            allowed = ALLOWED_VALUES.get((short, name))
            body.append(f"        f = {name!r}; {var} = g({name!r}, M)")
            if "default" in field:
                default = field["default"]
                if ftype == "bytes" or (isinstance(ftype, list) and "bytes" in ftype):
                    default = None if default is None else default.encode("latin-1")
                literal = repr(default) if default in ([], {}) else self.const(default)
                if isinstance(default, list | dict) and default not in ([], {}):
                    literal = f"deepcopy({literal})"
                body.append(f"        if {var} is M: {var} = {literal}")
                body.append("        else:")
            else:
                body.append(f"        if {var} is M: raise _Invalid('missing')")
                body.append("        else:")
            if self.python:  # counted to find unknown fields; JSON input may have them
                body.append("            n += 1")
            else:
                body.append("            pass")
            body += ["            " + s for s in self.check(ftype, var, allowed)]
            out.append(f"{name!r}: {var}")
            # JSON key as f-string text: double quotes and escaped braces only.
            key = json.dumps(name, ensure_ascii=False).replace("{", "{{").replace("}", "}}")
            parts.append(f"{key}: {{a{len(parts)}}}")
            fields += self.field_writer(ftype, f"a{len(parts) - 1}", f"v[{name!r}]")
        unknown = "    if n != len(v): raise _unknown(v, K_fields)" if self.python else "    pass"
        self.env["K_fields" + str(index)] = frozenset(f["name"] for f in node["fields"])
        self.src += [
            f"def c{index}(v):",
            "    if type(v) is not dict and not isinstance(v, Mapping):",
            f"        _fail({_words(dict(node))!r}, v)",
            "    g = v.get; n = 0; f = None",
            "    try:",
            *body,
            "    except _Invalid as e:",
            "        if f is not None: e.path.append(f)",
            "        raise",
            unknown.replace("K_fields", f"K_fields{index}"),
            f"    return {{{', '.join(out)}}}",
            # One f-string per record: a single join, not a concatenation per field.
            f"def w{index}(v):",
            *["    " + s for s in fields],
            f"    return f'{{{{{', '.join(parts)}}}}}'",
        ]
        return index

    def check(self, node: Any, var: str, allowed: tuple[str, ...] | None) -> list[str]:
        """Statements that check and normalise ``var`` (reassigning it)."""
        words = _words(node)
        if isinstance(node, list):
            if len(node) != 2 or node[0] != "null":
                raise ValueError(f"unsupported union {node!r} (only [null, T] is used)")
            inner = self.check(node[1], var, allowed)
            inner = [s.replace(repr(_words(node[1])), repr(words), 1) for s in inner]
            return [f"if {var} is not None:", *["    " + s for s in inner]]
        if allowed is not None:
            if node != "string":
                raise ValueError(f"enum-like field of type {node!r}")
            self.has_enum_like = True
            k = self.const(allowed)
            s = self.const(frozenset(allowed))
            return [
                f"if type({var}) is not str or {var} not in {s}: "
                f"{var} = _enum_like({var}, {words!r}, {k})"
            ]
        if isinstance(node, str):
            simple = {
                "string": f"if type({var}) is not str: {var} = _string({var}, {words!r})",
                "boolean": f"if {var} is not True and {var} is not False: _fail({words!r}, {var})",
                "null": f"if {var} is not None: _fail({words!r}, {var})",
                "float": f"{var} = _number({var}, {words!r})",
                "double": f"{var} = _number({var}, {words!r})",
                "bytes": f"if type({var}) is not bytes: {var} = _bytes({var}, {words!r})",
            }
            if node in simple:
                return [simple[node]]
            if node in ("int", "long"):
                low, high, name = (
                    (_INT_MIN, _INT_MAX, "an int (32-bit)")
                    if node == "int"
                    else (_LONG_MIN, _LONG_MAX, "a long (64-bit)")
                )
                return [
                    f"if type({var}) is not int or not {low} <= {var} <= {high}: "
                    f"{var} = _integer({var}, {words!r}, {low}, {high}, {name!r})"
                ]
            return [f"{var} = c{self.names[node]}({var})"]  # a record defined earlier
        kind = node["type"]
        if kind == "record":
            return [f"{var} = c{self.record(node)}({var})"]
        if kind in ("array", "map"):
            item = node["items" if kind == "array" else "values"]
            fn = "_str_item" if item == "string" else self.item_function(item)
            if kind == "map":
                return [f"{var} = _values({var}, {words!r}, {fn})"]
            return [f"{var} = _items({var}, {words!r}, {fn}, {self.python})"]
        raise ValueError(f"unsupported Avro type {kind!r}")

    def item_function(self, node: Any) -> str:
        if isinstance(node, dict) and node.get("type") == "record":
            return f"c{self.record(node)}"
        if isinstance(node, str) and node in self.names:
            return f"c{self.names[node]}"
        name = f"i{len(self.env)}"
        self.src += [f"def {name}(x):", *["    " + s for s in self.check(node, "x", None)]]
        self.src.append("    return x")
        self.env[name] = None  # reserve the name
        return name

    def field_writer(self, node: Any, var: str, expr: str) -> list[str]:
        """Statements setting ``var`` to the JSON text of ``expr`` (a record field)."""
        if isinstance(node, list):  # [null, T], inline: most fields of our records
            return [
                f"{var} = {expr}",
                f"{var} = 'null' if {var} is None else {self.writer(node[1], var)}",
            ]
        return [f"{var} = {self.writer(node, expr)}"]

    def writer(self, node: Any, expr: str) -> str:
        if isinstance(node, list):  # [null, T]: a function per union, not a lambda per call
            name = f"u{len(self.env)}"
            self.env[name] = None
            self.src += [
                f"def {name}(x):",
                f"    return 'null' if x is None else {self.writer(node[1], 'x')}",
            ]
            return f"{name}({expr})"
        if isinstance(node, str):
            if node == "string":
                return f"E({expr})"
            if node in ("int", "long"):
                return f"int.__repr__({expr})"
            if node == "boolean":
                return f"{{True: 'true', False: 'false'}}[{expr}]"
            if node == "null":
                return "'null'"
            if node in self.names:
                return f"w{self.names[node]}({expr})"
            return f"_fail('no JSON text for {node}', {expr})"
        kind = node["type"]
        if kind == "record":
            return f"w{self.names[node['name']]}({expr})"
        if kind == "array":
            return f"'[' + ', '.join([{self.writer(node['items'], 'e')} for e in {expr}]) + ']'"
        if kind == "map":
            inner = self.writer(node["values"], "e")
            return f"'{{' + ', '.join([E(k) + ': ' + {inner} for k, e in {expr}.items()]) + '}}'"
        return f"_fail('no JSON text', {expr})"


def _unknown(value: Mapping[str, Any], fields: frozenset[str]) -> _Invalid:
    exc = _Invalid("unknown")
    exc.path.append(sorted(str(k) for k in value if k not in fields)[0])
    return exc


# --------------------------------------------------------------------------- one record type


class _RecordCodec:
    """Everything precomputed for one record type."""

    def __init__(self, name: str, standalone: dict[str, Any]) -> None:
        self.name = name
        self.schema_json = standalone
        self.parsed = parse_schema(standalone)
        self.fingerprint = _fingerprint_bytes(to_parsing_canonical_form(standalone))
        self.header = _SINGLE_OBJECT_MARKER + self.fingerprint
        self.old_writers: dict[bytes, Any] = {}  # fingerprint -> parsed old writer schema
        python = _Compiler(python=True)
        self.from_python, self.write_json = python.compile(standalone)
        self.from_json = _Compiler(python=False).compile(standalone)[0]
        self.has_enum_like = python.has_enum_like
        self.has_bytes = '"bytes"' in json.dumps(standalone)
        self.field_names = tuple(f["name"] for f in standalone["fields"])


def _fingerprint_bytes(canonical: str) -> bytes:
    # fastavro gives CRC-64-AVRO as hex of its little-endian bytes: the wire order.
    return bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))


def _fingerprint_hex(fp: bytes) -> str:
    return f"0x{int.from_bytes(fp, 'little'):016x}"


def _check_evolution(writer: Mapping[str, Any], reader: Mapping[str, Any], origin: str) -> None:
    """A field the old writer schema lacks must have a default (checked at load)."""
    written = {field["name"] for field in writer["fields"]}
    for field in reader["fields"]:
        if field["name"] not in written and "default" not in field:
            raise ValueError(
                f"{origin}: field {field['name']!r} of {reader['name']} is not in this old "
                f"writer schema and has no default, so old records cannot be read"
            )


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _parse_all(schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """fastavro's named types of every current schema; files may reference each other in
    any order, so parse until nothing new resolves."""
    named: dict[str, Any] = {}
    pending = dict(schemas)
    while pending:
        for name, schema in list(pending.items()):
            trial = dict(named)
            try:
                parse_schema(schema, named_schemas=trial, _write_hint=False)
            except Exception as exc:  # noqa: BLE001 - UnknownType: a reference not yet parsed
                if "Unknown type" not in str(exc) and type(exc).__name__ != "UnknownType":
                    raise ValueError(f"schema {name}: {exc}") from None
                continue
            named = trial
            del pending[name]
            break
        else:
            raise ValueError(f"unresolved named types in {', '.join(sorted(pending))}")
    return named


class Codec:
    """All record types of one schema directory (the module functions use ``schemas/``).

    ``schema_lookup`` maps a Confluent schema id to its writer schema (JSON text or a
    dict); each id is looked up once, and a failure is that record's DecodeError.
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
        old: list[tuple[str, str, dict[str, Any]]] = []
        for path in sorted(self.schema_dir.glob("*.avsc")):
            stem = path.name[: -len(".avsc")]
            schema = json.loads(path.read_text(encoding="utf-8"))
            match = _OLD_SCHEMA_FILE.match(stem)
            name = match.group("name") if match else stem
            if schema.get("name") != name:
                raise ValueError(f"{path}: schema name {schema.get('name')!r} is not {name!r}")
            if match:
                old.append((name, path.name, schema))
            else:
                current[name] = schema
        named = _parse_all(current)
        short = {full.rpartition(".")[2] for full in named}
        for record, field in ALLOWED_VALUES:
            if record not in short:
                raise ValueError(f"ALLOWED_VALUES names {record}.{field}: no such record")
        self._records = {
            name: _RecordCodec(name, self._standalone(schema, named))
            for name, schema in current.items()
        }
        self.records = tuple(r for r in RECORDS if r in self._records) + tuple(
            sorted(set(self._records) - set(RECORDS))
        )
        self._by_fingerprint: dict[bytes, str] = {}
        for rec in self._records.values():
            self._register_fingerprint(rec.fingerprint, rec.name)
        for name, filename, schema in old:
            if name not in self._records:
                raise ValueError(f"old writer schema for {name} but no {name}.avsc")
            rec = self._records[name]
            own = rec.schema_json["name"]
            standalone = self._standalone(schema, {k: v for k, v in named.items() if k != own})
            fp = _fingerprint_bytes(to_parsing_canonical_form(standalone))
            if fp != rec.fingerprint:
                _check_evolution(standalone, rec.schema_json, filename)
                rec.old_writers[fp] = parse_schema(standalone)
                self._register_fingerprint(fp, name)

    @staticmethod
    def _standalone(schema: dict[str, Any], named: dict[str, Any]) -> dict[str, Any]:
        expanded = parse_schema(schema, named_schemas=dict(named), expand=True, _write_hint=False)
        assert isinstance(expanded, dict)
        return expanded

    def _register_fingerprint(self, fp: bytes, name: str) -> None:
        known = self._by_fingerprint.setdefault(fp, name)
        if known != name:
            raise ValueError(f"schemas {known} and {name} share fingerprint {_fingerprint_hex(fp)}")

    def _record(self, record: str) -> _RecordCodec:
        try:
            return self._records[record]
        except KeyError:
            known = ", ".join(self.records)
            raise KeyError(f"unknown record type {record!r} (known: {known})") from None

    def fingerprint(self, record: str) -> int:
        """CRC-64-AVRO fingerprint of the record's current schema (Parsing Canonical Form)."""
        return int.from_bytes(self._record(record).fingerprint, "little")

    def schema(self, record: str) -> dict[str, Any]:
        """The standalone (references expanded) schema of the record, a copy."""
        return copy.deepcopy(self._record(record).schema_json)

    # ---- encoding

    def _python(self, rec: _RecordCodec, value: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = rec.from_python(value)
        except _Invalid as exc:
            raise EncodeError(_describe(rec.name, exc, "value")) from None
        return result

    def encode(self, record: str, value: Mapping[str, Any]) -> bytes:
        """Avro single-object encoding of ``value`` (defaults filled); EncodeError if invalid."""
        rec = self._record(record)
        out = io.BytesIO()
        out.write(rec.header)
        schemaless_writer(out, rec.parsed, self._python(rec, value))
        return out.getvalue()

    def encode_confluent(self, record: str, value: Mapping[str, Any], schema_id: int) -> bytes:
        """Confluent wire format of ``value``: ``00``, the 4-byte big-endian ``schema_id``
        (the id a schema registry gave this record's current schema, :meth:`schema`), the
        Avro body. Validated once, as :meth:`encode`; EncodeError if invalid."""
        rec = self._record(record)
        if not 0 <= schema_id < 2**31:
            raise EncodeError(f"schema id {schema_id} is not a registry id (0..2^31-1)")
        out = io.BytesIO()
        out.write(b"\x00" + schema_id.to_bytes(4, "big"))
        schemaless_writer(out, rec.parsed, self._python(rec, value))
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
        datum = self._python(rec, value)
        return _jsonable(datum) if rec.has_bytes else datum

    def encode_json(self, record: str, value: Mapping[str, Any]) -> bytes:
        """Compact UTF-8 JSON of :meth:`to_json_value`, for JSON Lines and demo tooling."""
        return orjson.dumps(self.to_json_value(record, value))

    def json_line(self, record: str, topic: str, key: str | None, value: dict[str, Any]) -> str:
        """One replay output line (with its newline), exactly what ``json.dumps({"topic":
        topic, "key": key, "value": value}, ensure_ascii=False)`` gives. ``value`` is a
        record the core made (schema order); anything else takes json.dumps itself."""
        rec = self._record(record)
        if type(value) is dict and len(value) == len(rec.field_names):
            try:
                k = "null" if key is None else encode_basestring(key)
                return f'{{"topic": {encode_basestring(topic)}, "key": {k}, "value": {rec.write_json(value)}}}\n'
            except (TypeError, KeyError, AttributeError):
                pass
        item = {"topic": topic, "key": key, "value": value}
        return json.dumps(item, ensure_ascii=False) + "\n"

    # ---- decoding

    def from_json_value(self, record: str, value: Any) -> dict[str, Any]:
        """Validate an already parsed JSON value and return it decoded (defaults filled,
        bytes as ``bytes``, schema order); raises DecodeError."""
        rec = self._record(record)
        try:
            result: dict[str, Any] = rec.from_json(value)
        except _Invalid as exc:
            raise DecodeError(_describe(record, exc, "JSON value")) from None
        return result

    def decode(self, record: str, data: bytes | bytearray | memoryview) -> dict[str, Any]:
        """Decode one record, telling the format by its first bytes (see the module doc).
        Raises DecodeError, and only that, for any bytes that are not a valid ``record``."""
        rec = self._record(record)
        if type(data) is not bytes:
            if data is None:
                raise DecodeError(f"no value (null or tombstone) for {record}")
            if not isinstance(data, bytearray | memoryview):
                raise DecodeError(f"expected bytes for {record}, got {type(data).__name__}")
            data = bytes(data)
        if data[:2] == _SINGLE_OBJECT_MARKER:
            return self._decode_single_object(rec, data)
        if not data:
            raise DecodeError(f"empty value for {record}")
        if data[0] == 0x00:
            return self._decode_confluent(rec, data)
        text = data[len(_UTF8_BOM) :] if data.startswith(_UTF8_BOM) else data
        text = text.lstrip(_JSON_WHITESPACE)
        if text[:1] == b"{":
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise DecodeError(f"{record}: invalid JSON: {_truncate(str(exc), 120)}") from None
            return self.from_json_value(record, value)
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
        if fp == rec.fingerprint:
            return self._read_avro(rec, data, _HEADER_LEN, rec.parsed, None, _fingerprint_hex(fp))
        if fp in rec.old_writers:
            writer = rec.old_writers[fp]
            return self._read_avro(rec, data, _HEADER_LEN, writer, rec.parsed, _fingerprint_hex(fp))
        other = self._by_fingerprint.get(fp)
        if other is not None:
            raise DecodeError(
                f"schema fingerprint {_fingerprint_hex(fp)} is {other}, expected {rec.name}"
            )
        raise DecodeError(f"unknown schema fingerprint {_fingerprint_hex(fp)} for {rec.name}")

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
        if reader is None and not rec.has_enum_like:
            return value
        # Types are right; the enum-like values (and, after resolution, the field order
        # of the current schema) are the compiled check's.
        try:
            result: dict[str, Any] = rec.from_python(value)
        except _Invalid as exc:
            raise DecodeError(_describe(rec.name, exc, "Avro value")) from None
        return result

    def _decode_confluent(self, rec: _RecordCodec, data: bytes) -> dict[str, Any]:
        if len(data) < _CONFLUENT_HEADER_LEN:
            raise DecodeError(
                f"{rec.name}: Confluent wire format header truncated ({len(data)} of 5 bytes)"
            )
        schema_id = int.from_bytes(data[1:_CONFLUENT_HEADER_LEN], "big")
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
                writer = parse_schema(json.loads(found) if isinstance(found, str) else dict(found))
            except DecodeError as exc:  # the lookup's own reason (registry unreachable, ...)
                raise DecodeError(str(exc)) from None
            except Exception as exc:  # unreachable registry, unknown id, not a schema
                raise DecodeError(
                    f"Confluent wire format (schema id {schema_id}): no usable writer schema "
                    f"for {rec.name}: {type(exc).__name__}: {_truncate(str(exc), 120)}"
                ) from None
            self._confluent[schema_id] = writer
        # Another record type's schema would fail resolution in fastavro's words; say
        # which type it is, as for a foreign single-object fingerprint. Unqualified
        # names, as Avro resolution compares them (another producer's namespace is fine).
        name = writer.get("name") if isinstance(writer, dict) else None
        short = str(name).rpartition(".")[2] if name else None
        if short != rec.name:
            shown = short or f"a {writer if isinstance(writer, str) else 'non-record'} schema"
            raise DecodeError(f"schema id {schema_id} is {shown}, expected {rec.name}")
        origin = f"Confluent schema id {schema_id}"
        return self._read_avro(rec, data, _CONFLUENT_HEADER_LEN, writer, rec.parsed, origin)


# --------------------------------------------------------------------------- module API

_DEFAULT: Final = Codec()

encode = _DEFAULT.encode
encode_confluent = _DEFAULT.encode_confluent
encode_built = _DEFAULT.encode_built
decode = _DEFAULT.decode
encode_json = _DEFAULT.encode_json
to_json_value = _DEFAULT.to_json_value
from_json_value = _DEFAULT.from_json_value
json_line = _DEFAULT.json_line
fingerprint = _DEFAULT.fingerprint
schema = _DEFAULT.schema


def use_schema_registry(url: str, lookup: Callable[[int], str | Mapping[str, Any]]) -> None:
    """Let the module-level :func:`decode` read Confluent-framed records (process start)."""
    _DEFAULT.schema_registry_url = url
    _DEFAULT.schema_lookup = lookup
    _DEFAULT._confluent.clear()


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
    return _DEFAULT._python(_DEFAULT._record("DeadLetter"), record)
