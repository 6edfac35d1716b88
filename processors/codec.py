"""The wire codec: every record type in ``schemas/``, in and out of bytes (contract §3).

Pure: no Faust or Kafka imports, no clock, no environment. The libraries do the work.
fastavro resolves the named types across the schema files (``parse_schema`` with
``named_schemas``, ``expand=True`` for the standalone schema), gives the canonical form
and CRC-64-AVRO fingerprints, reads, writes and resolves old writer schemas. msgspec
validates: from each parsed schema this module generates, once, a msgspec ``Struct`` per
record (``Literal`` for the enum-like fields, ``T | None`` for ``[null, T]``, Avro's
defaults, int/long ranges), and msgspec's error (its kind and ``$.a[1].b`` path) becomes
our reason by walking that path through the schema and the value (:meth:`_RecordCodec.reason`).

Formats, told apart by their first bytes (:func:`decode`):

* ``C3 01`` + 8-byte little-endian fingerprint + Avro body: single-object encoding, what
  :func:`encode` writes. The fingerprint may be an old writer schema kept as
  ``schemas/<Name>.v<N>.avsc``; old bodies are resolved to the current schema.
* ``00`` + 4-byte big-endian schema id: the Confluent wire format. A :class:`Codec` with a
  ``schema_lookup`` (schema id -> writer schema; :mod:`processors.registry` builds one on
  a schema registry) decodes it, caching each writer schema; the lookup's failure
  (registry unreachable, unknown id) is the record's :class:`DecodeError`, with the
  lookup's own words when it raises one. :func:`encode_confluent` writes this format.
* ``{`` after optional whitespace: JSON in the form of contract §8, validated against the
  same schema, defaults filled, in exactly the shape Avro decoding gives.

Allowed values. Enum-like fields are Avro ``string``s, and the values allowed are ONE
table, :data:`ALLOWED_VALUES`, built from the core's own enums where the core has one
(``Reason``, ``Presence``, ``topics.CHANNELS``, ``reply.parse.REASONS``); the rest are
written once, here. Not Avro ``enum``s with a default symbol: that changes every
fingerprint, and Avro cannot resolve an old ``string`` writer to an ``enum`` reader, so
every record written so far (and avro-python3 producers) would need a migration; with
strings, adding a value is a code change and no wire change.

One validation per record: msgspec's (a JSON value, a value to encode), which also fills
defaults and normalises (plain ``dict``/``list``/``str``, schema order); fastavro then
writes without validating again (``validate(raise_errors=True)`` costs more than msgspec's
conversion and knows neither the enum-likes nor the array index). An Avro body fastavro
read has its types right; only its enum-like values (and the field order, after
resolution) go through the same msgspec check.

Every failure to decode raises :class:`DecodeError` and nothing else; its message names
fields, types and enum-like values, never the text of a message. Invalid values given to
:func:`encode` raise :class:`EncodeError`, a subclass. JSON input ignores fields the
schema does not know (a newer producer may add one); ``encode`` rejects them (a typo).
JSON form of ``bytes`` (only ``DeadLetter.key``/``value``): a string of code points 0-255.

:func:`json_line` writes one replay output line (contract §9) with a writer compiled from
the same schema: the bytes ``json.dumps(..., ensure_ascii=False)`` gives, faster.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping
from json.encoder import encode_basestring
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
import orjson
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from msgspec.structs import asdict

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
    "decode_json_value",
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
_MISSING: Final = object()
_PRIMITIVES: Final[dict[str, Any]] = {
    "null": None,
    "boolean": bool,
    "int": Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)],
    "long": Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)],
    "float": float,
    "double": float,
    "string": str,
}
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
_KINDS: Final = (
    ("boolean", bool),
    ("integer", int),
    ("number", float),
    ("string", str),
    ("bytes", bytes | bytearray | memoryview),
    ("array", list | tuple),
    ("object", Mapping),
)
_MSGSPEC_PATH: Final = re.compile(r"\.([^.\[`]+)|\[(\d+|\.\.\.)\]")

# --------------------------------------------------------------------------- reasons


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind_of(value: Any) -> str:
    """The JSON name of a value's type, for reasons (never the value itself)."""
    if value is None:
        return "null"
    return next((kind for kind, types in _KINDS if isinstance(value, types)), type(value).__name__)


def _words(node: Any) -> str:
    if isinstance(node, str):
        return _WORDS.get(node, f"an object ({node.rpartition('.')[2]} record)")
    if isinstance(node, list):
        return " or ".join(_words(b) for b in node)
    kind = node["type"]
    if kind == "record":
        return f"an object ({node['name'].rpartition('.')[2]} record)"
    return {"array": "an array", "map": "an object (map)"}.get(kind, f"a {kind}")


# --------------------------------------------------------------------------- one record type


class _RecordCodec:
    """Everything derived once from one record type's standalone schema: fastavro's parsed
    schema and fingerprint, msgspec types for the JSON and the Python form (enum-likes as
    ``Literal``s, nullable unions as optionals, Avro's defaults), and json_line's writer."""

    def __init__(self, name: str, standalone: dict[str, Any]) -> None:
        self.name = name
        self.schema_json = standalone
        self.parsed = parse_schema(standalone)
        self.fingerprint = _fingerprint_bytes(to_parsing_canonical_form(standalone))
        self.header = _SINGLE_OBJECT_MARKER + self.fingerprint
        self.old_writers: dict[bytes, Any] = {}  # fingerprint -> parsed old writer schema
        self.field_names = tuple(f["name"] for f in standalone["fields"])
        self.named: dict[str, Any] = {}  # full name -> record node
        self.has_enum_like = False
        self.json_type = self.type_of(standalone, python=False)
        self.python_type = self.type_of(standalone, python=True)
        self.decoder = msgspec.json.Decoder(self.json_type)
        self.bytes_fields = tuple(
            f["name"] for f in standalone["fields"] if f["type"] in ("bytes", ["null", "bytes"])
        )
        if json.dumps(standalone).count('"bytes"') != len(self.bytes_fields):
            raise ValueError(f"{name}: bytes are supported as top-level fields only")
        nested = any(n.get("type") == "record" for n in _nodes(standalone["fields"]))
        self.flat = not nested  # no nested structs: asdict is the whole conversion
        writer = _Writer()
        self.write_json = writer.compile(standalone)

    def type_of(self, node: Any, python: bool, allowed: tuple[str, ...] | None = None) -> Any:
        """The msgspec type checking an Avro schema node (the records' Structs are made
        here, once per form)."""
        if isinstance(node, list):
            if len(node) != 2 or node[0] != "null":
                raise ValueError(f"{self.name}: unsupported union {node!r} (only [null, T])")
            return self.type_of(node[1], python, allowed) | None
        if allowed is not None:
            if node != "string":
                raise ValueError(f"{self.name}: enum-like field of type {node!r}")
            self.has_enum_like = True
            return Literal[allowed]
        if isinstance(node, str):
            if node == "bytes":
                return bytes if python else str  # JSON: a string of code points 0-255
            return (
                _PRIMITIVES[node] if node in _PRIMITIVES else self.type_of(self.named[node], python)
            )
        kind = node["type"]
        if kind == "array":
            return list[self.type_of(node["items"], python)]  # type: ignore[misc]
        if kind == "map":
            return dict[str, self.type_of(node["values"], python)]  # type: ignore[misc]
        if kind != "record":
            raise ValueError(f"{self.name}: unsupported Avro type {kind!r}")
        self.named[node["name"]] = node
        short = node["name"].rpartition(".")[2]
        fields: list[tuple[Any, ...]] = []
        for field in node["fields"]:
            ftype = self.type_of(field["type"], python, ALLOWED_VALUES.get((short, field["name"])))
            if "default" not in field:
                fields.append((field["name"], ftype))
                continue
            default = field["default"]
            if python and "bytes" in field["type"] and default is not None:
                default = default.encode("latin-1")
            if isinstance(default, list | dict) and default:
                default = msgspec.field(default_factory=functools.partial(copy.deepcopy, default))
            fields.append((field["name"], ftype, default))
        return msgspec.defstruct(
            short, fields, kw_only=True, forbid_unknown_fields=python, module=__name__
        )

    def convert(self, value: Any, python: bool, what: str) -> dict[str, Any]:
        """``value`` checked against the schema and normalised (defaults filled, plain
        ``dict``/``list``/``str``, schema order): the one validation of a record."""
        if python and self.bytes_fields and isinstance(value, Mapping):
            for name in self.bytes_fields:  # msgspec would read a str as base64
                if isinstance(value.get(name), str):
                    raise EncodeError(
                        f"{what} fails schema {self.name}: field '{name}' must be bytes, got string"
                    )
        try:
            obj = msgspec.convert(value, self.python_type if python else self.json_type)
        except msgspec.ValidationError as exc:
            error = EncodeError if what == "value" else DecodeError
            raise error(self.reason(value, str(exc), what, python)) from None
        return self.plain(obj, python)

    def plain(self, obj: Any, python: bool) -> dict[str, Any]:
        out: dict[str, Any]
        out = asdict(obj) if self.flat else msgspec.to_builtins(obj, builtin_types=(bytes,))
        if self.bytes_fields and not python:
            for name in self.bytes_fields:
                if out[name] is not None:
                    try:
                        out[name] = out[name].encode("latin-1")
                    except UnicodeEncodeError:
                        raise DecodeError(
                            f"JSON value fails schema {self.name}: field '{name}' has a code point "
                            f"above 255 (bytes in JSON are ISO-8859-1)"
                        ) from None
        return out

    def reason(self, datum: Any, message: str, what: str, python: bool) -> str:
        """msgspec's error (its kind and its path) in our words: the field path, the
        Avro type expected and the JSON type found, or the allowed values."""
        message, _, at = message.partition(" - at `")
        segments: list[Any] = []
        for name, index in _MSGSPEC_PATH.findall(at.partition("` in `")[2] or at):
            segments.append(name or (int(index) if index != "..." else index))
        quoted = re.search(r"field `(.*)`$", message)
        if quoted:  # "Object missing required field `x`", "... unknown field `x`"
            segments.append(quoted.group(1))
        path, node, owner, field, value = self.locate(datum, segments, python)
        where = f"field '{path}'" if path else "value"
        if quoted and message.startswith("Object missing"):
            return f"{what} fails schema {self.name}: {where} missing"
        if quoted:
            return f"{what} fails schema {self.name}: unknown {where}"
        if message.startswith("Invalid enum value"):
            allowed = ", ".join(ALLOWED_VALUES[(owner, field)])
            shown = _truncate(repr(value), 60)
            return f"unknown value {shown} for {self.name}.{path} (allowed: {allowed})"
        if at.startswith("key`"):
            key = next(k for k in value if not isinstance(k, str))
            got = f"key {_kind_of(key)}"
            return f"{what} fails schema {self.name}: {where} must be a map with string keys, got {got}"
        if isinstance(value, int) and not isinstance(value, bool) and node in ("int", "long"):
            size = "an int (32-bit)" if node == "int" else "a long (64-bit)"
            return f"{what} fails schema {self.name}: {where} is out of range for {size}"
        return f"{what} fails schema {self.name}: {where} must be {_words(node)}, got {_kind_of(value)}"

    def locate(
        self, datum: Any, segments: list[Any], python: bool
    ) -> tuple[str, Any, str, str, Any]:
        """Walk msgspec's path through the schema and the value: (our path, the Avro node
        there, the record declaring the field, the field, the value there)."""
        node: Any = self.schema_json
        path, owner, field = "", self.name, ""
        for seg in segments:
            node = node[1] if isinstance(node, list) else node
            node = self.named[node] if isinstance(node, str) else node
            if node["type"] == "record":
                owner, field = node["name"].rpartition(".")[2], seg
                node = next((f["type"] for f in node["fields"] if f["name"] == seg), "null")
                path += f".{seg}" if path else seg
                datum = datum.get(seg, _MISSING) if isinstance(datum, Mapping) else _MISSING
            elif node["type"] == "array":
                node, datum = node["items"], datum[seg]
                path += f"[{seg}]"
            else:  # a map value: msgspec does not say which key, the first bad one it is
                node, kind = node["values"], self.type_of(node["values"], python)
                seg = next(k for k, v in datum.items() if not _fits(v, kind))
                node, datum = node, datum[seg]
                path += f"[{seg!r}]"
        return path, node, owner, field, datum


def _fits(value: Any, kind: Any) -> bool:
    try:
        msgspec.convert(value, kind)
    except msgspec.ValidationError:
        return False
    return True


def _nodes(node: Any) -> Iterator[Any]:
    """Every dict node inside a schema fragment (records, arrays, maps, fields)."""
    if isinstance(node, dict):
        yield node
        node = list(node.values())
    if isinstance(node, list):
        for item in node:
            yield from _nodes(item)


def _no_json_text(value: Any) -> str:
    raise TypeError(f"no JSON text for {type(value).__name__}")  # json_line: json.dumps then


class _Writer:
    """json_line's writer for one record type: per record an f-string, compiled once, in
    ``json.dumps(..., ensure_ascii=False)``'s exact format (the stdlib's C encoder is
    ~1.5x slower on replay's outputs). A type it does not write raises TypeError."""

    def __init__(self) -> None:
        self.src: list[str] = []
        self.env: dict[str, Any] = {"E": encode_basestring, "B": {True: "true", False: "false"}}
        self.env["T"] = _no_json_text
        self.names: dict[str, str] = {}

    def compile(self, schema: dict[str, Any]) -> Callable[[Any], str]:
        name = self.record(schema)
        exec("\n".join(self.src), self.env)  # noqa: S102 - source generated from the schema
        return self.env[name]  # type: ignore[no-any-return]

    def record(self, node: dict[str, Any]) -> str:
        fn = self.names[node["name"]] = f"w{len(self.names)}"
        body, parts = [], []
        for i, field in enumerate(node["fields"]):
            key = (
                json.dumps(field["name"], ensure_ascii=False).replace("{", "{{").replace("}", "}}")
            )
            parts.append(f"{key}: {{a{i}}}")
            ftype, value = field["type"], f"v[{field['name']!r}]"
            if isinstance(ftype, list):  # [null, T] inline: most fields of our records
                body.append(f"a{i} = {value}")
                body.append(f"a{i} = 'null' if a{i} is None else {self.expr(ftype[1], f'a{i}')}")
            else:
                body.append(f"a{i} = {self.expr(ftype, value)}")
        self.src += [f"def {fn}(v):", *(f"    {s}" for s in body)]
        self.src.append(f"    return f'{{{{{', '.join(parts)}}}}}'")
        return fn

    def expr(self, node: Any, x: str) -> str:
        if isinstance(node, list):
            return f"('null' if {x} is None else {self.expr(node[1], x)})"
        if isinstance(node, str):
            simple = {"string": f"E({x})", "boolean": f"B[{x}]", "null": "'null'"}
            if node in ("int", "long"):
                return f"int.__repr__({x})"
            return simple.get(node) or f"{self.names.get(node, 'T')}({x})"
        kind = node["type"]
        if kind == "record":
            return f"{self.record(node)}({x})"
        if kind == "array":
            return f"'[' + ', '.join([{self.expr(node['items'], 'e')} for e in {x}]) + ']'"
        if kind == "map":
            inner = self.expr(node["values"], "e")
            return f"'{{' + ', '.join([E(k) + ': ' + {inner} for k, e in {x}.items()]) + '}}'"
        return f"T({x})"


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

    def encode(self, record: str, value: Mapping[str, Any]) -> bytes:
        """Avro single-object encoding of ``value`` (defaults filled); EncodeError if invalid."""
        rec = self._record(record)
        out = io.BytesIO()
        out.write(rec.header)
        schemaless_writer(out, rec.parsed, rec.convert(value, True, "value"))
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
        schemaless_writer(out, rec.parsed, rec.convert(value, True, "value"))
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
        if rec.bytes_fields:
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
        datum = rec.convert(value, True, "value")
        return _jsonable(datum) if rec.bytes_fields else datum

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
        return self._record(record).convert(value, False, "JSON value")

    def decode_json_value(self, record: str, raw: bytes) -> dict[str, Any]:
        """:meth:`from_json_value` of ``json.loads(raw)``, the same result or DecodeError,
        straight from the JSON bytes of one value (replay's wrapper lines give them as
        ``msgspec.Raw``): one typed msgspec decode; only a failure parses again for the reason."""
        rec = self._records.get(record) or self._record(record)
        try:
            return rec.plain(rec.decoder.decode(raw), False)
        except (msgspec.MsgspecError, ValueError, RecursionError):
            pass
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"{record}: invalid JSON: {_truncate(str(exc), 120)}") from None
        return self.from_json_value(record, value)

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
                return rec.plain(rec.decoder.decode(text), False)
            except (msgspec.MsgspecError, ValueError, RecursionError):
                pass  # parsed again below, for the reason: bad JSON first, then the schema's
            try:
                value = msgspec.json.decode(text)
            except (msgspec.MsgspecError, ValueError, RecursionError) as exc:
                words = "depth limit exceeded" if isinstance(exc, RecursionError) else str(exc)
                words = words.removeprefix("JSON is malformed: ")
                raise DecodeError(f"{record}: invalid JSON: {_truncate(words, 120)}") from None
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
        return rec.convert(value, True, "Avro value")

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
decode_json_value = _DEFAULT.decode_json_value
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
    return _DEFAULT._record("DeadLetter").convert(record, True, "value")
