"""The .avsc files are the wire contract (contract §3, §8; schemas/README.md).

These tests read the schema files directly (not through the codec) and check them against
the contract, and check that an independent Avro implementation (avro-python3) agrees with
the codec on their canonical form and fingerprints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import avro.schema
import pytest
from avro.schemanormalization import ToParsingCanonicalForm

from processors import codec

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

# Field names, in order, as schemas/README.md lists them.
FIELDS: dict[str, list[str]] = {
    "MessageEvent": [
        "message_id",
        "conversation_id",
        "sender_id",
        "type",
        "text",
        "mentions",
        "origin",
        "ts",
    ],
    "TypingEvent": ["conversation_id", "user_id", "typing", "ts"],
    "PresenceEvent": [
        "user_id",
        "session_id",
        "online",
        "selected_conversation_id",
        "focused",
        "ts",
    ],
    "Conversation": ["conversation_id", "subject", "participants", "ts"],
    "User": [
        "user_id",
        "name",
        "email",
        "phone",
        "role",
        "locale",
        "push_tokens",
        "browser_subscriptions",
        "ts",
    ],
    "Role": ["name", "email", "sms", "push", "browser", "ts"],
    "AppSettings": [
        "inactivity_seconds",
        "typing_ttl_seconds",
        "max_batch_seconds",
        "presence_ttl_seconds",
        "app_url_template",
        "unsubscribe_url_template",
        "email_from",
        "reply_domain",
        "sms_from",
        "ts",
    ],
    "Flush": [
        "flush_id",
        "conversation_id",
        "message_ids",
        "messages",
        "opened_at",
        "closed_at",
        "cause",
    ],
    "Candidate": [
        "flush_id",
        "conversation_id",
        "recipient_id",
        "access",
        "notify",
        "subject",
        "messages",
        "sender_names",
        "opened_at",
        "closed_at",
    ],
    "Decision": [
        "decision_id",
        "flush_id",
        "conversation_id",
        "recipient_id",
        "channel",
        "outcome",
        "reason",
        "presence",
        "detail",
        "delivery_id",
        "ts",
    ],
    "Delivery": [
        "delivery_id",
        "flush_id",
        "conversation_id",
        "recipient_id",
        "recipient_name",
        "locale",
        "channel",
        "email",
        "phone",
        "push_tokens",
        "browser_subscriptions",
        "subject",
        "messages",
        "closed_at",
        "ts",
    ],
    "Outcome": [
        "delivery_id",
        "flush_id",
        "recipient_id",
        "channel",
        "status",
        "address",
        "provider_id",
        "attempts",
        "detail",
        "ts",
    ],
    "DeadLetter": [
        "source_topic",
        "partition",
        "offset",
        "key",
        "value",
        "error",
        "stage",
        "ts",
        "size",
        "by_reference",
    ],
    "InboundAudit": [
        "mail_id",
        "reason",
        "conversation_id",
        "user_id",
        "message_id",
        "detail",
        "size",
        "ts",
    ],
}

NULLABLE: dict[str, set[str]] = {
    "MessageEvent": {"sender_id"},
    "PresenceEvent": {"selected_conversation_id"},
    "Conversation": {"subject"},
    "User": {"email", "phone", "role"},
    "AppSettings": {"sms_from"},
    "Candidate": {"subject"},
    "Decision": {"recipient_id", "channel", "reason", "presence", "detail", "delivery_id"},
    "Delivery": {"recipient_name", "email", "phone", "subject"},
    "Outcome": {"address", "provider_id", "detail"},
    "DeadLetter": {"partition", "offset", "key", "size"},
    "InboundAudit": {"conversation_id", "user_id", "message_id", "detail"},
}

# Fields that hold times (epoch milliseconds) and so must be Avro longs.
TIME_FIELDS = {"ts", "opened_at", "closed_at"}

# Avro 1.x test vectors (share/test/data/schema-tests.txt): CRC-64-AVRO of a canonical form.
SPEC_VECTORS = [('"null"', 7195948357588979594), ('"int"', 8247732601305521295)]

_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for byte in range(256):
        fp = byte
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO, transcribed from the Avro specification ("Schema Fingerprints")."""
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text("utf-8"))
    return data


def avro_python3_schemas() -> dict[str, avro.schema.Schema]:
    """Every current schema parsed by avro-python3, sharing one name table across files so
    the by-name references (MessageEvent in Flush, BrowserSubscription in Delivery) resolve
    the way Avro tooling resolves them."""
    names = avro.schema.Names()
    order = ["MessageEvent", "User"] + [
        r for r in codec.RECORDS if r not in ("MessageEvent", "User")
    ]
    return {name: avro.schema.SchemaFromJSONData(load(name), names) for name in order}


def fields_of(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in schema["fields"]}


def walk(node: Any) -> list[Any]:
    """Every schema node under ``node`` (including itself)."""
    found = [node]
    if isinstance(node, list):
        for branch in node:
            found += walk(branch)
    elif isinstance(node, dict):
        if "fields" in node:
            for field in node["fields"]:
                found += walk(field["type"])
        for key in ("items", "values"):
            if key in node:
                found += walk(node[key])
        if isinstance(node.get("type"), dict | list):
            found += walk(node["type"])
    return found


def test_one_schema_file_per_record_and_nothing_else() -> None:
    current = sorted(p.stem for p in SCHEMA_DIR.glob("*.avsc") if ".v" not in p.stem)
    assert current == sorted(FIELDS)
    assert tuple(codec.RECORDS) == tuple(FIELDS)
    old = sorted(p.name for p in SCHEMA_DIR.glob("*.v*.avsc"))
    assert old == ["DeadLetter.v1.avsc", "MessageEvent.v1.avsc"]


@pytest.mark.parametrize("record", list(FIELDS))
def test_fields_names_and_namespace(record: str) -> None:
    schema = load(record)
    assert schema["type"] == "record"
    assert schema["name"] == record
    assert schema["namespace"] == "chat_notifier"
    assert [f["name"] for f in schema["fields"]] == FIELDS[record]


@pytest.mark.parametrize("record", list(FIELDS))
def test_nullable_fields_are_null_unions_defaulting_to_null(record: str) -> None:
    fields = fields_of(load(record))
    nullable = {
        name for name, f in fields.items() if isinstance(f["type"], list) and "null" in f["type"]
    }
    assert nullable == NULLABLE.get(record, set())
    for name in nullable:
        assert fields[name]["type"][0] == "null"  # so that null can be the default
        assert len(fields[name]["type"]) == 2
        assert "default" in fields[name] and fields[name]["default"] is None


@pytest.mark.parametrize("record", list(FIELDS))
def test_times_are_longs_and_lists_default_empty(record: str) -> None:
    for node in walk(load(record)):
        if isinstance(node, dict) and "fields" in node:
            for field in node["fields"]:
                if field["name"] in TIME_FIELDS:
                    assert field["type"] == "long", (record, field["name"])
                if isinstance(field["type"], dict) and field["type"]["type"] == "array":
                    assert field.get("default") == [], (record, field["name"])
                if isinstance(field["type"], dict) and field["type"]["type"] == "map":
                    assert field.get("default") == {}, (record, field["name"])


@pytest.mark.parametrize("record", list(FIELDS))
def test_no_avro_enums_enum_likes_are_strings(record: str) -> None:
    # Enum-like values are validated by the codec, so adding one is not a breaking change.
    assert not [n for n in walk(load(record)) if isinstance(n, dict) and n.get("type") == "enum"]


def test_enum_like_fields_exist_and_are_strings() -> None:
    records: dict[str, dict[str, Any]] = {}
    for record in FIELDS:
        for node in walk(load(record)):
            if isinstance(node, dict) and node.get("type") == "record":
                records[node["name"]] = node
    for (record, field), allowed in codec.ALLOWED_VALUES.items():
        assert allowed, (record, field)
        field_type = fields_of(records[record])[field]["type"]
        assert field_type in ("string", ["null", "string"]), (record, field)


def test_documented_defaults() -> None:
    message = fields_of(load("MessageEvent"))
    assert message["origin"]["default"] == "web"
    assert message["mentions"]["default"] == []
    assert fields_of(load("User"))["locale"]["default"] == "en"
    settings = fields_of(load("AppSettings"))
    assert {k: settings[k]["default"] for k in FIELDS["AppSettings"]} == {
        "inactivity_seconds": 10,
        "typing_ttl_seconds": 10,
        "max_batch_seconds": 300,
        "presence_ttl_seconds": 60,
        "app_url_template": "http://localhost:8000/conversations/{conversation_id}",
        "unsubscribe_url_template": "http://localhost:8000/settings/notifications?user={user_id}",
        "email_from": "Chat <notifications@chat.example>",
        "reply_domain": "reply.chat.example",
        "sms_from": None,
        "ts": 0,
    }


def test_nested_records_defined_once_and_referenced_by_name() -> None:
    definitions: dict[str, list[str]] = {}
    for record in FIELDS:
        for node in walk(load(record)):
            if isinstance(node, dict) and node.get("type") == "record":
                definitions.setdefault(node["name"], []).append(record)
    assert definitions["Participant"] == ["Conversation"]
    assert definitions["BrowserSubscription"] == ["User"]
    assert definitions["DeliveryMessage"] == ["Delivery"]
    assert definitions["MessageEvent"] == ["MessageEvent"]
    assert all(len(files) == 1 for files in definitions.values()), definitions
    assert fields_of(load("Flush"))["messages"]["type"]["items"] == "MessageEvent"
    assert fields_of(load("Candidate"))["messages"]["type"]["items"] == "MessageEvent"
    assert fields_of(load("Delivery"))["browser_subscriptions"]["type"]["items"] == (
        "BrowserSubscription"
    )


def test_old_writer_schema_lacks_new_fields_which_have_defaults() -> None:
    old = load("MessageEvent.v1")
    new = load("MessageEvent")
    assert old["name"] == new["name"] and old["namespace"] == new["namespace"]
    added = [f for f in new["fields"] if f["name"] not in fields_of(old)]
    assert [f["name"] for f in added] == ["mentions", "origin"]
    assert all("default" in f for f in added)
    # Everything the old schema has is unchanged in the new one.
    for name, field in fields_of(old).items():
        assert fields_of(new)[name]["type"] == field["type"]


@pytest.mark.parametrize(("canonical", "expected"), SPEC_VECTORS)
def test_crc64_avro_matches_spec_vectors(canonical: str, expected: int) -> None:
    assert crc64_avro(canonical.encode()) == expected


@pytest.mark.parametrize("record", list(FIELDS))
def test_fingerprint_agrees_with_avro_python3_canonical_form(record: str) -> None:
    # Canonical form by avro-python3, CRC by the spec transcription above: neither is the
    # code the codec uses (fastavro), so agreement means the single-object header is right.
    canonical = ToParsingCanonicalForm(avro_python3_schemas()[record])
    assert codec.fingerprint(record) == crc64_avro(canonical.encode("utf-8"))


def test_fingerprints_are_distinct() -> None:
    prints = [codec.fingerprint(r) for r in codec.RECORDS]
    assert len(set(prints)) == len(prints)


def test_referencing_schemas_embed_the_referenced_definition() -> None:
    # The canonical form of Flush carries MessageEvent's fields, so a change to
    # MessageEvent changes Flush's fingerprint too (readers never mis-resolve).
    canonical = ToParsingCanonicalForm(avro_python3_schemas()["Flush"])
    assert '"name":"chat_notifier.MessageEvent"' in canonical
    assert '"name":"mentions"' in canonical
