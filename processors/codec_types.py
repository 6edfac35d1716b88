"""Avro record schemas as msgspec types, and msgspec's validation errors as reasons in Avro
terms: the validating half of :mod:`processors.codec`, which owns the formats and the errors.

From a record's standalone schema (named types expanded), two ``Struct`` trees are generated
once: the Python form (``bytes``; unknown fields refused) and the JSON form (bytes as strings
of code points 0-255; unknown fields ignored). Enum-like strings, a table of (declaring record,
field) -> allowed values, are ``Literal``s; ``[null, T]`` is ``T | None``; Avro's defaults and
int/long ranges are msgspec's. :meth:`RecordTypes.reason` walks msgspec's error (its kind and
path, never its words) through the schema and the value: the field path, the Avro type
expected, the JSON type found, the allowed values.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

import msgspec

_INT: Final = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
_LONG: Final = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_LATIN1: Final = Annotated[str, msgspec.Meta(pattern="^[\x00-\xff]*$")]
#: Avro primitive -> (msgspec type, its name in reasons).
_PRIMITIVES: Final[dict[str, tuple[Any, str]]] = {
    "null": (None, "null"),
    "boolean": (bool, "a boolean"),
    "int": (_INT, "an int (32-bit integer)"),
    "long": (_LONG, "a long (integer)"),
    "float": (float, "a number"),
    "double": (float, "a number"),
    "bytes": (bytes, "bytes"),
    "string": (str, "a string"),
}
_KINDS: Final = tuple(  # Python type -> its JSON name, for reasons (never the value)
    zip(
        (type(None), bool, int, float, str, bytes | bytearray | memoryview, list | tuple, Mapping),
        "null boolean integer number string bytes array object".split(),  # noqa: SIM905
        strict=True,
    )
)
_PATH: Final = re.compile(r"\.([^.\[`]+)|\[(\d+|\.\.\.)\]")  # msgspec's $.a[1].b, [...] a map


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind_of(value: Any) -> str:
    return next((kind for types, kind in _KINDS if isinstance(value, types)), type(value).__name__)


def words(node: Any) -> str:
    if isinstance(node, list):
        return " or ".join(map(words, node))
    if isinstance(node, str):
        return _PRIMITIVES[node][1]
    if node["type"] == "record":
        return f"an object ({node['name'].rpartition('.')[2]} record)"
    return {"array": "an array", "map": "an object (map)"}.get(node["type"], f"a {node['type']}")


def _fits(value: Any, kind: Any) -> bool:
    try:
        msgspec.convert(value, kind)
    except msgspec.ValidationError:
        return False
    return True


class RecordTypes:
    """msgspec's types of one record type's standalone schema, and the reasons for their errors;
    ``allowed_values`` the enum-like fields' values, by (declaring record, field)."""

    def __init__(
        self,
        name: str,
        standalone: dict[str, Any],
        allowed_values: Mapping[tuple[str, str], tuple[str, ...]],
    ) -> None:
        self.name, self.schema_json, self.allowed_values = name, standalone, allowed_values
        self.has_enum_like = False
        self.python_type = self.type_of(standalone, python=True)
        self.json_type = self.type_of(standalone, python=False)

    def type_of(self, node: Any, python: bool, allowed: tuple[str, ...] | None = None) -> Any:
        """The msgspec type of an Avro schema node (each record's Struct made here)."""
        if isinstance(node, list):
            if len(node) != 2 or node[0] != "null":
                raise ValueError(f"{self.name}: unsupported union {node!r} (only [null, T])")
            return self.type_of(node[1], python, allowed) | None
        if allowed is not None:
            if node != "string":
                raise ValueError(f"{self.name}: enum-like field of type {node!r}")
            self.has_enum_like = True
            return Literal[allowed]
        if isinstance(node, str):  # a primitive: named types are expanded
            return _LATIN1 if node == "bytes" and not python else _PRIMITIVES[node][0]
        if node["type"] in ("array", "map"):
            inner = self.type_of(node.get("items", node.get("values")), python)
            return list[inner] if node["type"] == "array" else dict[str, inner]  # type: ignore[valid-type]
        if node["type"] != "record":
            raise ValueError(f"{self.name}: unsupported Avro type {node['type']!r}")
        short = node["name"].rpartition(".")[2]
        fields: list[tuple[str, Any, Any]] = []
        for field in node["fields"]:
            default = field.get("default", msgspec.NODEFAULT)
            if python and "bytes" in field["type"] and isinstance(default, str):
                default = default.encode("latin-1")
            if isinstance(default, list | dict) and default:  # msgspec copies only empty ones
                default = msgspec.field(default_factory=functools.partial(copy.deepcopy, default))
            allowed = self.allowed_values.get((short, field["name"]))
            fields.append((field["name"], self.type_of(field["type"], python, allowed), default))
        return msgspec.defstruct(short, fields, kw_only=True, forbid_unknown_fields=python)

    def reason(self, value: Any, message: str, what: str, python: bool) -> str:
        """msgspec's error (its kind and path; not its words) as our reason: the path walked
        through the schema and ``value`` to the node (record, field) and value there."""
        message, _, at = message.partition(" - at `")
        segments: list[Any] = [
            name or (int(index) if index.isdigit() else index)
            for name, index in _PATH.findall(at.partition("` in `")[2] or at)
        ]
        quoted = re.search(r"field `(.*)`$", message)  # a missing or an unknown field
        segments += [quoted.group(1)] if quoted else []
        node: Any = self.schema_json
        path, owner, field = "", self.name, ""
        for seg in segments:
            node = node[1] if isinstance(node, list) else node
            if node["type"] == "record":
                owner, field = node["name"].rpartition(".")[2], seg
                node = next((f["type"] for f in node["fields"] if f["name"] == seg), None)
                value = value.get(seg) if isinstance(value, Mapping) else None
                path += f".{seg}" if path else seg
            elif node["type"] == "array":
                node, value, path = node["items"], value[seg], f"{path}[{seg}]"
            else:  # a map value: msgspec does not say which key; the first that fails
                node, kind = node["values"], self.type_of(node["values"], python)
                seg = next(k for k, v in value.items() if not _fits(v, kind))
                value, path = value[seg], f"{path}[{seg!r}]"
        fails = f"{what} fails schema {self.name}: " + (f"field '{path}'" if segments else "value")
        if quoted and message.startswith("Object missing"):
            return f"{fails} missing"
        if quoted:
            return f"{what} fails schema {self.name}: unknown field '{path}'"
        if message.startswith("Invalid enum value"):
            allowed = ", ".join(self.allowed_values[(owner, field)])
            return f"unknown value {truncate(repr(value), 60)} for {self.name}.{path} (allowed: {allowed})"
        if at.startswith("key`"):
            key = next(k for k in value if not isinstance(k, str))
            return f"{fails} must be a map with string keys, got key {_kind_of(key)}"
        if node in ("bytes", ["null", "bytes"]) and isinstance(value, str):
            return f"{fails} has a code point above 255 (bytes in JSON are ISO-8859-1)"
        if node in ("int", "long") and type(value) is int:
            return f"{fails} is out of range for {'an int (32-bit)' if node == 'int' else 'a long (64-bit)'}"
        return f"{fails} must be {words(node)}, got {_kind_of(value)}"
