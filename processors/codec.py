"""The wire codec: every record type in ``schemas/``, in and out of bytes (contract §3).

Pure (no Faust, Kafka, clock or environment). fastavro parses (named types expanded per
record), fingerprints (CRC-64-AVRO), reads, writes and resolves old writer schemas. msgspec
validates, once per record, against ``Struct``s generated from the schemas
(:mod:`processors.codec_types`); fastavro then writes without validating again (its
``validate`` costs 10-40x more and knows no enum-likes).

Formats, told apart by their first bytes (:func:`decode`):

* ``C3 01`` + 8-byte little-endian fingerprint + Avro body: single-object encoding, what
  :func:`encode` writes; old writer schemas (``schemas/<Name>.v<N>.avsc``) are resolved.
* ``00`` + 4-byte big-endian schema id + Avro body: Confluent (:func:`encode_confluent`),
  read through a ``schema_lookup`` (:mod:`processors.registry`).
* ``{`` after optional whitespace: JSON (contract §8) in the shape Avro decoding gives;
  unknown fields are ignored (``encode`` rejects them: a typo); ``bytes`` are strings of
  code points 0-255.

Enum-like fields stay Avro ``string``s, their allowed values ONE table (:data:`ALLOWED_VALUES`,
from the core's enums where it has one): an Avro ``enum`` changes every fingerprint and
cannot resolve an old ``string`` writer, so a new value is a code change, not a wire change.

Any failure to decode raises :class:`DecodeError`; an invalid value given to :func:`encode`,
its subclass :class:`EncodeError`; the reason says what failed in the schema's terms (field
path, Avro type expected, JSON type found, allowed values), never in a library's words.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, cast

import msgspec
import orjson
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from msgspec.structs import asdict

from processors.codec_types import RecordTypes, truncate, words
from processors.core.decisions import Reason
from processors.core.presence import Presence
from processors.reply.reasons import REASONS as INBOUND_REASONS
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
    "json_type",
    "encode",
    "encode_built",
    "encode_confluent",
    "encode_json",
    "fingerprint",
    "from_json_value",
    "json_line",
    "line_writer",
    "schema",
    "to_json_value",
    "use_schema_registry",
]


class DecodeError(ValueError):
    """Bytes (or a JSON value) that are not a valid record; ``str(e)`` is the reason."""


class EncodeError(DecodeError):
    """A value given to :func:`encode` that does not fit its schema (``except DecodeError``
    catches both)."""


#: The schemas ship inside the package; the repository's top-level ``schemas/`` links here.
SCHEMA_DIR: Final[Path] = Path(__file__).resolve().parent / "schemas"

#: Record types in the order of schemas/README.md, which is also the parse order: a schema
#: may use the named types of the ones before it.
RECORDS: Final[tuple[str, ...]] = tuple(
    "MessageEvent TypingEvent PresenceEvent Conversation User Role AppSettings Flush "  # noqa: SIM905
    "Candidate Decision Delivery Outcome DeadLetter InboundAudit".split()
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
_OLD_SCHEMA_FILE: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\.v[0-9]+")
_BAD_JSON: Final = (msgspec.MsgspecError, ValueError, RecursionError)  # ValueError: UTF-8
_format_json: Final = msgspec.json.format


def _fingerprint(standalone: dict[str, Any]) -> bytes:
    # fastavro gives CRC-64-AVRO as hex of its little-endian bytes: the wire order.
    canonical = to_parsing_canonical_form(standalone)
    return bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))


def _standalone(schema: dict[str, Any], named: dict[str, Any]) -> dict[str, Any]:
    expanded = parse_schema(schema, named_schemas=dict(named), expand=True, _write_hint=False)
    return cast("dict[str, Any]", expanded)


class _RecordCodec(RecordTypes):
    """One record type: its msgspec types and fastavro's parsed schema and fingerprint."""

    def __init__(self, name: str, standalone: dict[str, Any]) -> None:
        super().__init__(name, standalone, ALLOWED_VALUES)
        self.parsed = parse_schema(standalone)
        self.fingerprint = _fingerprint(standalone)
        self.header = _SINGLE_OBJECT_MARKER + self.fingerprint
        self.decoder = msgspec.json.Decoder(self.json_type)
        fields = standalone["fields"]
        self.bytes_fields = {  # name -> its type in reasons
            f["name"]: words(f["type"]) for f in fields if f["type"] in ("bytes", ["null", "bytes"])
        }
        if json.dumps(standalone).count('"bytes"') != len(self.bytes_fields):
            raise ValueError(f"{name}: bytes are supported as top-level fields only")
        self.field_names = tuple(f["name"] for f in fields)
        self.flat = '"record"' not in json.dumps(fields)  # no nested Struct: asdict will do

    def convert(self, value: Any, python: bool, what: str) -> dict[str, Any]:
        """``value`` validated and normalised: the one validation of a record."""
        error = EncodeError if what == "value" else DecodeError
        if python and self.bytes_fields and isinstance(value, Mapping):
            for name, kind in self.bytes_fields.items():
                if isinstance(value.get(name), str):  # msgspec would take it as base64
                    raise error(
                        f"{what} fails schema {self.name}: field '{name}' must be {kind}, got string"
                    )
        try:
            obj = msgspec.convert(value, self.python_type if python else self.json_type)
        except msgspec.ValidationError as exc:
            try:
                why = self.reason(value, str(exc), what, python)
            except Exception:  # noqa: BLE001 - a path the walk does not know: still one error
                why = f"{what} fails schema {self.name}"
            raise error(why) from None
        return self.plain(obj, python)

    def plain(self, obj: Any, python: bool) -> dict[str, Any]:
        """A decoded Struct as the plain dict (schema order) every caller gets."""
        out: dict[str, Any] = (
            asdict(obj) if self.flat else msgspec.to_builtins(obj, builtin_types=(bytes,))
        )
        for name in () if python else self.bytes_fields:
            out[name] = None if out[name] is None else out[name].encode("latin-1")
        return out


class Codec:
    """All record types of one schema directory (the module functions use ``schemas/``);
    ``schema_lookup`` gives a Confluent schema id's writer schema (JSON text or a dict), once
    per id, its failure that record's DecodeError."""

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
        self._line_writers: dict[
            tuple[str, str, bool], Callable[[str | None, dict[str, Any]], bytes]
        ] = {}
        current: dict[str, dict[str, Any]] = {}
        old: list[tuple[str, str, dict[str, Any]]] = []
        for path in sorted(self.schema_dir.glob("*.avsc")):
            schema = json.loads(path.read_text(encoding="utf-8"))
            match = _OLD_SCHEMA_FILE.fullmatch(path.stem)
            name = match[1] if match else path.stem
            if schema.get("name") != name:
                raise ValueError(f"{path}: schema name {schema.get('name')!r} is not {name!r}")
            if match:
                old.append((name, path.name, schema))
            else:
                current[name] = schema
        self.records = tuple(r for r in RECORDS if r in current) + tuple(
            sorted(set(current) - set(RECORDS))
        )
        named: dict[str, Any] = {}
        try:  # in RECORDS order: named types are defined before they are used
            parse_schema([current[r] for r in self.records], named_schemas=named, _write_hint=False)
        except Exception as exc:  # noqa: BLE001 - fastavro's UnknownType, SchemaParseException
            raise ValueError(f"schemas in {self.schema_dir} do not parse in order: {exc}") from None
        short = {full.rpartition(".")[2] for full in named}
        for record, field in ALLOWED_VALUES:
            if record not in short:
                raise ValueError(f"ALLOWED_VALUES names {record}.{field}: no such record")
        self._records = {
            name: _RecordCodec(name, _standalone(current[name], named)) for name in self.records
        }
        # fingerprint -> (record type, writer schema, reader schema if an old writer's)
        self._writers: dict[bytes, tuple[str, Any, Any]] = {
            rec.fingerprint: (name, rec.parsed, None) for name, rec in self._records.items()
        }
        for name, filename, schema in old:
            if name not in self._records:
                raise ValueError(f"old writer schema for {name} but no {name}.avsc")
            rec = self._records[name]
            own = rec.schema_json["name"]
            standalone = _standalone(schema, {k: v for k, v in named.items() if k != own})
            written = {f["name"] for f in standalone["fields"]}
            for field in rec.schema_json["fields"]:  # evolution: old records get the default
                if field["name"] not in written and "default" not in field:
                    raise ValueError(
                        f"{filename}: field {field['name']!r} of {name} is not in this old "
                        f"writer schema and has no default, so old records cannot be read"
                    )
            old_writer = (name, parse_schema(standalone), rec.parsed)
            self._writers.setdefault(_fingerprint(standalone), old_writer)

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

    @staticmethod
    def _avro(head: bytes, rec: _RecordCodec, value: Mapping[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(head)
        schemaless_writer(out, rec.parsed, value)
        return out.getvalue()

    def encode(self, record: str, value: Mapping[str, Any]) -> bytes:
        """Avro single-object encoding of ``value`` (defaults filled); EncodeError if invalid."""
        rec = self._record(record)
        return self._avro(rec.header, rec, rec.convert(value, True, "value"))

    def encode_confluent(self, record: str, value: Mapping[str, Any], schema_id: int) -> bytes:
        """Confluent wire format of ``value`` under a registry's id of :meth:`schema`."""
        rec = self._record(record)
        if not 0 <= schema_id < 2**31:
            raise EncodeError(f"schema id {schema_id} is not a registry id (0..2^31-1)")
        head = b"\x00" + schema_id.to_bytes(4, "big")
        return self._avro(head, rec, rec.convert(value, True, "value"))

    def encode_built(self, record: str, value: Mapping[str, Any]) -> bytes:
        """:meth:`encode` for a record this package built itself (the worker's outputs): the
        same bytes, fastavro's type checks only; what it refuses (and every record with bytes
        fields) takes :meth:`encode`, and its EncodeError."""
        rec = self._record(record)
        if not rec.bytes_fields:
            try:
                return self._avro(rec.header, rec, value)
            except Exception:  # noqa: BLE001, S110 - the validating path says what is wrong
                pass
        return self.encode(record, value)

    def to_json_value(self, record: str, value: Mapping[str, Any]) -> dict[str, Any]:
        """Validated JSON form of ``value`` (all fields, defaults filled); raises EncodeError."""
        rec = self._record(record)
        datum = rec.convert(value, True, "value")
        for name in rec.bytes_fields:  # top-level only (checked at load)
            datum[name] = None if datum[name] is None else datum[name].decode("latin-1")
        return datum

    def encode_json(self, record: str, value: Mapping[str, Any]) -> bytes:
        """Compact UTF-8 JSON of :meth:`to_json_value`, for JSON Lines and demo tooling."""
        return orjson.dumps(self.to_json_value(record, value))  # measured 1.3-1.7x msgspec's

    def json_line(self, record: str, topic: str, key: str | None, value: dict[str, Any]) -> bytes:
        """One replay output line, ``json.dumps({"topic": topic, "key": key, "value": value},
        ensure_ascii=False)`` + newline as UTF-8, fields in schema order: orjson then msgspec's
        formatter (~1.6x msgspec alone; no schema has a float, which they write differently),
        json.dumps for what orjson cannot write (an int over 64 bits, a key not a string)."""
        return self.line_writer(record, topic)(key, value)

    def line_writer(
        self, record: str, topic: str, *, ordered: bool = False
    ) -> Callable[[str | None, dict[str, Any]], bytes]:
        """:meth:`json_line` for one record type on one topic, as a function of (key, value):
        for writers of many lines (replay's output), which then look nothing up per line.
        ``ordered``: the values come with their fields in schema order already (the core's
        records, which tests/test_replay_bytes.py holds to it): not checked per line."""
        writer = self._line_writers.get((record, topic, ordered))
        if writer is not None:
            return writer
        names = self._record(record).field_names
        fields, dumps, format_json = set(names), orjson.dumps, _format_json

        def line(key: str | None, value: dict[str, Any]) -> bytes:
            if (
                not ordered
                and type(value) is dict
                and tuple(value) != names
                and value.keys() == fields
            ):
                value = {name: value[name] for name in names}  # schema order, as the contract's
            item = {"topic": topic, "key": key, "value": value}
            try:
                return format_json(dumps(item), indent=0) + b"\n"
            except (TypeError, ValueError, OverflowError, orjson.JSONEncodeError):
                return (json.dumps(item, ensure_ascii=False) + "\n").encode()

        self._line_writers[(record, topic, ordered)] = line
        return line

    # ---- decoding

    def from_json_value(self, record: str, value: Any) -> dict[str, Any]:
        """An already parsed JSON value validated and decoded (defaults, ``bytes``, schema order)."""
        return self._record(record).convert(value, False, "JSON value")

    def json_type(self, record: str) -> tuple[Any, Callable[[Any], dict[str, Any]]]:
        """The msgspec type that reads (and validates) ``record``'s JSON form, and the function
        that turns what it read into :meth:`decode_json_value`'s dict: for readers that embed
        a record in a larger type, as replay does with its input lines."""
        rec = self._record(record)
        if rec.flat and not rec.bytes_fields:
            return rec.json_type, asdict
        return rec.json_type, functools.partial(rec.plain, python=False)

    def decode_json_value(self, record: str, raw: bytes) -> dict[str, Any]:
        """``from_json_value(record, json.loads(raw))``, the same value or DecodeError, from
        the JSON bytes of one value (as ``msgspec.Raw`` gives them from a wrapper line)."""
        return self._json(self._records.get(record) or self._record(record), raw, json.loads)

    def _json(self, rec: _RecordCodec, raw: bytes, parse: Callable[[bytes], Any]) -> dict[str, Any]:
        try:  # one typed msgspec decode: parsing and validation in one pass
            return rec.plain(rec.decoder.decode(raw), False)
        except _BAD_JSON:
            pass  # parsed again (a bad record only) for the reason: bad JSON first, then the schema's
        try:
            value = parse(raw)
        except _BAD_JSON as exc:
            words = "depth limit exceeded" if isinstance(exc, RecursionError) else str(exc)
            words = truncate(words.removeprefix("JSON is malformed: "), 120)
            raise DecodeError(f"{rec.name}: invalid JSON: {words}") from None
        return rec.convert(value, False, "JSON value")

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
        text = data.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")  # a UTF-8 BOM, whitespace
        if text[:1] == b"{":
            return self._json(rec, text, msgspec.json.decode)
        head = " ".join(f"0x{b:02X}" for b in data[:2])
        raise DecodeError(
            f"{record}: not Avro single-object, Confluent or JSON (first bytes {head})"
        )

    def _decode_single_object(self, rec: _RecordCodec, data: bytes) -> dict[str, Any]:
        if len(data) < 10:
            raise DecodeError(
                f"{rec.name}: Avro single-object header truncated ({len(data)} of 10 bytes)"
            )
        fp = data[2:10]
        shown = f"0x{int.from_bytes(fp, 'little'):016x}"
        if fp not in self._writers:
            raise DecodeError(f"unknown schema fingerprint {shown} for {rec.name}")
        name, writer, reader = self._writers[fp]
        if name != rec.name:
            raise DecodeError(f"schema fingerprint {shown} is {name}, expected {rec.name}")
        return self._read_avro(rec, data, 10, writer, reader, shown)

    def _read_avro(
        self, rec: _RecordCodec, data: bytes, start: int, writer: Any, reader: Any, origin: str
    ) -> dict[str, Any]:
        body = io.BytesIO(data)
        body.seek(start)
        try:
            value: dict[str, Any] = schemaless_reader(body, writer, reader)  # type: ignore[assignment]
        except Exception as exc:  # any failure inside fastavro means "not this schema"
            raise DecodeError(
                f"Avro body does not match {rec.name} ({origin}): {type(exc).__name__}: "
                f"{truncate(str(exc), 120)}"
            ) from None
        if left := len(data) - body.tell():
            raise DecodeError(f"{left} trailing bytes after the Avro {rec.name} body ({origin})")
        if reader is None and not rec.has_enum_like:
            return value  # a record schema read: its types are right
        # The enum-likes (and, after resolution, the current field order) are msgspec's.
        return rec.convert(value, True, "Avro value")

    def _decode_confluent(self, rec: _RecordCodec, data: bytes) -> dict[str, Any]:
        if len(data) < 5:
            raise DecodeError(
                f"{rec.name}: Confluent wire format header truncated ({len(data)} of 5 bytes)"
            )
        schema_id = int.from_bytes(data[1:5], "big")
        if self.schema_lookup is None:
            why = " but no schema registry is configured"
            if self.schema_registry_url is not None:
                why = ": a schema registry is configured but this codec has no schema_lookup"
            raise DecodeError(f"Confluent wire format (schema id {schema_id}){why}")
        writer = self._confluent.get(schema_id)
        if writer is None:
            try:
                found = self.schema_lookup(schema_id)
                writer = parse_schema(json.loads(found) if isinstance(found, str) else dict(found))
            except DecodeError:  # the lookup's own reason (registry unreachable, ...)
                raise
            except Exception as exc:  # unreachable registry, unknown id, not a schema
                raise DecodeError(
                    f"Confluent wire format (schema id {schema_id}): no usable writer schema "
                    f"for {rec.name}: {type(exc).__name__}: {truncate(str(exc), 120)}"
                ) from None
            self._confluent[schema_id] = writer
        # Name another record type's schema (fastavro would fail in its words); unqualified,
        # as Avro resolution compares names (another producer's namespace is fine).
        name = writer.get("name") if isinstance(writer, dict) else None
        short = str(name).rpartition(".")[2] if name else None
        if short != rec.name:
            shown = short or f"a {writer if isinstance(writer, str) else 'non-record'} schema"
            raise DecodeError(f"schema id {schema_id} is {shown}, expected {rec.name}")
        origin = f"Confluent schema id {schema_id}"
        return self._read_avro(rec, data, 5, writer, rec.parsed, origin)


# --------------------------------------------------------------------------- module API

_DEFAULT: Final = Codec()

encode = _DEFAULT.encode
encode_confluent = _DEFAULT.encode_confluent
encode_built = _DEFAULT.encode_built
decode = _DEFAULT.decode
decode_json_value = _DEFAULT.decode_json_value
json_type = _DEFAULT.json_type
encode_json = _DEFAULT.encode_json
to_json_value = _DEFAULT.to_json_value
from_json_value = _DEFAULT.from_json_value
json_line = _DEFAULT.json_line
line_writer = _DEFAULT.line_writer
fingerprint = _DEFAULT.fingerprint
schema = _DEFAULT.schema


def use_schema_registry(url: str, lookup: Callable[[int], str | Mapping[str, Any]]) -> None:
    """Let the module-level :func:`decode` read Confluent-framed records (process start)."""
    _DEFAULT.schema_registry_url = url
    _DEFAULT.schema_lookup = lookup
    _DEFAULT._confluent.clear()


# A DeadLetter must itself fit in one record (a default producer takes 1 MB): a value or a
# key over its limit is not copied; the record then points at the original with its size.
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
    """A DeadLetter record: the original bytes, the reason, where they came from (EncodeError
    if invalid); a value or key over its limit is left out (``by_reference``, ``size``) and
    the error cut to its limit, so a dead letter always fits."""
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
        "error": truncate(error, DEAD_LETTER_MAX_ERROR_CHARS),
        "stage": stage,
        "ts": ts,
        "size": size if value is None else len(raw),
        "by_reference": by_reference,
    }
    return _DEFAULT._record("DeadLetter").convert(record, True, "value")
