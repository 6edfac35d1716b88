"""The wire codec (processors/codec.py): formats, validation, evolution, interop."""

from __future__ import annotations

import ast
import contextlib
import copy
import enum
import io
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import pytest
from avro.schemanormalization import ToParsingCanonicalForm
from hypothesis import given, settings
from hypothesis import strategies as st

from processors import codec
from processors.codec import DecodeError, EncodeError
from tests.test_schemas import SCHEMA_DIR, avro_python3_schemas, crc64_avro, load

MESSAGE = {
    "message_id": "m-0001",
    "conversation_id": "c-42",
    "sender_id": "u-alice",
    "type": "UserMessage",
    "text": "Are we still on for 3pm? @bob — café ☕",
    "mentions": ["u-bob"],
    "origin": "web",
    "ts": 1_717_171_717_000,
}
SYSTEM_MESSAGE = {
    "message_id": "m-0002",
    "conversation_id": "c-42",
    "sender_id": None,
    "type": "SystemMessage",
    "text": "Carol joined the conversation",
    "mentions": [],
    "origin": "web",
    "ts": 1_717_171_718_000,
}
REPLY = {
    **MESSAGE,
    "message_id": "m-0003",
    "sender_id": "u-bob",
    "text": "Yes, see you there",
    "mentions": [],
    "origin": "email",
    "ts": 1_717_171_800_000,
}

# One realistic value per record type, every field given (Python form).
SAMPLES: dict[str, dict[str, Any]] = {
    "MessageEvent": MESSAGE,
    "TypingEvent": {
        "conversation_id": "c-42",
        "user_id": "u-alice",
        "typing": True,
        "ts": 1_717_171_716_500,
    },
    "PresenceEvent": {
        "user_id": "u-bob",
        "session_id": "tab-7f3a",
        "online": True,
        "selected_conversation_id": "c-42",
        "focused": False,
        "ts": 1_717_171_700_000,
    },
    "Conversation": {
        "conversation_id": "c-42",
        "subject": "Quarterly planning",
        "participants": [
            {"user_id": "u-alice", "access": "ReadWrite", "notify": "All", "name": "Alice"},
            {"user_id": "u-bob", "access": "ReadWrite", "notify": "MentionsOnly", "name": None},
            {"user_id": "u-carol", "access": "Read", "notify": "Off", "name": "Carol Díaz"},
        ],
        "ts": 1_717_000_000_000,
    },
    "User": {
        "user_id": "u-bob",
        "name": "Bob Stone",
        "email": "bob@example.com",
        "phone": "+15551234567",
        "role": "member",
        "locale": "de",
        "push_tokens": ["fcm-token-1", "fcm-token-2"],
        "browser_subscriptions": [
            {
                "endpoint": "https://updates.push.services.mozilla.com/wpush/v2/gAAAA",
                "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
                "auth": "tBHItJI5svbpez7KI4CCXg",
            }
        ],
        "ts": 1_716_000_000_000,
    },
    "Role": {
        "name": "member",
        "email": True,
        "sms": False,
        "push": True,
        "browser": True,
        "ts": 1_715_000_000_000,
    },
    "AppSettings": {
        "inactivity_seconds": 15,
        "typing_ttl_seconds": 8,
        "max_batch_seconds": 600,
        "presence_ttl_seconds": 90,
        "app_url_template": "https://chat.example/c/{conversation_id}",
        "unsubscribe_url_template": "https://chat.example/settings?u={user_id}",
        "email_from": "Example Chat <no-reply@chat.example>",
        "reply_domain": "reply.chat.example",
        "sms_from": "+15550001111",
        "ts": 1_714_000_000_000,
    },
    "Flush": {
        "flush_id": "c-42:m-0001",
        "conversation_id": "c-42",
        "message_ids": ["m-0001", "m-0003"],
        "messages": [MESSAGE, REPLY],
        "opened_at": 1_717_171_716_500,
        "closed_at": 1_717_171_810_000,
        "cause": "inactivity",
    },
    "Candidate": {
        "flush_id": "c-42:m-0001",
        "conversation_id": "c-42",
        "recipient_id": "u-carol",
        "access": "Read",
        "notify": "All",
        "subject": None,
        "messages": [MESSAGE, REPLY],
        "sender_names": {"u-alice": "Alice", "u-bob": "Bob Stone"},
        "opened_at": 1_717_171_716_500,
        "closed_at": 1_717_171_810_000,
    },
    "Decision": {
        "decision_id": "c-42:m-0001:u-carol:email",
        "flush_id": "c-42:m-0001",
        "conversation_id": "c-42",
        "recipient_id": "u-carol",
        "channel": "email",
        "outcome": "skip",
        "reason": "UNKNOWN_ROLE",
        "presence": "ONLINE_ELSEWHERE",
        "detail": "no role 'Member'; did you mean 'member'?",
        "delivery_id": None,
        "ts": 1_717_171_810_000,
    },
    "Delivery": {
        "delivery_id": "c-42:m-0001:u-bob:email",
        "flush_id": "c-42:m-0001",
        "conversation_id": "c-42",
        "recipient_id": "u-bob",
        "recipient_name": "Bob Stone",
        "locale": "de",
        "channel": "email",
        "email": "bob@example.com",
        "phone": None,
        "push_tokens": [],
        "browser_subscriptions": [
            {"endpoint": "https://fcm.googleapis.com/fcm/send/x", "p256dh": "k", "auth": "a"}
        ],
        "subject": "Quarterly planning",
        "messages": [
            {
                "message_id": "m-0001",
                "sender_id": "u-alice",
                "sender_name": "Alice",
                "text": MESSAGE["text"],
                "ts": MESSAGE["ts"],
            },
            {
                "message_id": "m-0009",
                "sender_id": None,
                "sender_name": None,
                "text": "…",
                "ts": 1_717_171_805_000,
            },
        ],
        "closed_at": 1_717_171_810_000,
        "ts": 1_717_171_810_001,
    },
    "Outcome": {
        "delivery_id": "c-42:m-0001:u-bob:push",
        "flush_id": "c-42:m-0001",
        "recipient_id": "u-bob",
        "channel": "push",
        "status": "invalid_address",
        "address": "fcm-token-2",
        "provider_id": None,
        "attempts": 1,
        "detail": "UNREGISTERED",
        "ts": 1_717_171_811_000,
    },
    "DeadLetter": {
        "source_topic": "chat.messages",
        "partition": 3,
        "offset": 9_876_543_210,
        "key": b"c-42",
        "value": b"\xc3\x01\x00\xff garbage \x80",
        "error": "unknown schema fingerprint 0x0000000000000000 for MessageEvent",
        "stage": "decode",
        "ts": 1_717_171_812_000,
        "size": 18,
        "by_reference": False,
    },
    "InboundAudit": {
        "mail_id": "CAF1-reply-1@mail.example.org",
        "reason": "ACCEPTED",
        "conversation_id": "c-42",
        "user_id": "u-7",
        "message_id": "email-0123456789abcdef0123456789abcdef",
        "detail": None,
        "size": 2048,
        "ts": 1_717_171_812_000,
    },
}


def header(canonical: str) -> bytes:
    """Single-object header computed from the spec, independently of the codec."""
    return b"\xc3\x01" + struct.pack("<Q", crc64_avro(canonical.encode("utf-8")))


@pytest.fixture(scope="module")
def apy() -> dict[str, avro.schema.Schema]:
    return avro_python3_schemas()


def apy_write(schema: avro.schema.Schema, datum: Any) -> bytes:
    buf = io.BytesIO()
    avro.io.DatumWriter(schema).write(datum, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


def apy_read(schema: avro.schema.Schema, body: bytes) -> Any:
    return avro.io.DatumReader(schema, schema).read(avro.io.BinaryDecoder(io.BytesIO(body)))


def json_form(value: Any) -> Any:
    """Python form -> JSON form by the documented rule (bytes are ISO-8859-1 strings)."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, dict):
        return {k: json_form(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_form(v) for v in value]
    return value


def test_samples_cover_every_record() -> None:
    assert set(SAMPLES) == set(codec.RECORDS)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("record", codec.RECORDS)
def test_avro_round_trip(record: str) -> None:
    data = codec.encode(record, SAMPLES[record])
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == struct.pack("<Q", codec.fingerprint(record))
    decoded = codec.decode(record, data)
    assert decoded == SAMPLES[record]
    assert list(decoded) == list(SAMPLES[record])  # schema order, every field


@pytest.mark.parametrize("record", codec.RECORDS)
def test_json_round_trip_gives_the_avro_shape(record: str) -> None:
    data = codec.encode_json(record, SAMPLES[record])
    assert json.loads(data) == json_form(SAMPLES[record])
    decoded = codec.decode(record, data)
    assert decoded == SAMPLES[record]
    assert list(decoded) == list(SAMPLES[record])
    assert codec.from_json_value(record, json.loads(data)) == SAMPLES[record]
    assert codec.to_json_value(record, SAMPLES[record]) == json_form(SAMPLES[record])


def test_decoded_values_are_plain_python() -> None:
    def plain(value: Any) -> bool:
        if isinstance(value, dict):
            return type(value) is dict and all(
                type(k) is str and plain(v) for k, v in value.items()
            )
        if isinstance(value, list):
            return type(value) is list and all(plain(v) for v in value)
        return type(value) in (str, int, bool, bytes, type(None))

    for record in codec.RECORDS:
        assert plain(codec.decode(record, codec.encode(record, SAMPLES[record]))), record
        assert plain(codec.decode(record, codec.encode_json(record, SAMPLES[record]))), record


def test_encode_does_not_mutate_input() -> None:
    value = copy.deepcopy(SAMPLES["Flush"])
    codec.encode("Flush", value)
    codec.to_json_value("Flush", value)
    assert value == SAMPLES["Flush"]


def test_default_lists_are_not_shared_between_records() -> None:
    minimal = b'{"message_id":"a","conversation_id":"c","type":"UserMessage","text":"","ts":1}'
    first = codec.decode("MessageEvent", minimal)
    first["mentions"].append("u-x")
    assert codec.decode("MessageEvent", minimal)["mentions"] == []
    partial = {k: v for k, v in MESSAGE.items() if k != "mentions"}
    codec.to_json_value("MessageEvent", partial)["mentions"].append("u-y")
    assert codec.to_json_value("MessageEvent", partial)["mentions"] == []


# --------------------------------------------------------------------------- avro-python3 interop


@pytest.mark.parametrize("record", codec.RECORDS)
def test_avro_python3_reads_what_we_write(record: str, apy: dict[str, Any]) -> None:
    data = codec.encode(record, SAMPLES[record])
    assert data[:10] == header(ToParsingCanonicalForm(apy[record]))
    assert apy_read(apy[record], data[10:]) == SAMPLES[record]


@pytest.mark.parametrize("record", codec.RECORDS)
def test_we_read_what_avro_python3_writes(record: str, apy: dict[str, Any]) -> None:
    body = apy_write(apy[record], SAMPLES[record])
    data = header(ToParsingCanonicalForm(apy[record])) + body
    assert codec.decode(record, data) == SAMPLES[record]


def test_unknown_enum_like_value_in_avro_body_is_rejected(apy: dict[str, Any]) -> None:
    bad = {**SAMPLES["Decision"], "reason": "BORED"}
    data = header(ToParsingCanonicalForm(apy["Decision"])) + apy_write(apy["Decision"], bad)
    with pytest.raises(DecodeError, match=r"unknown value 'BORED' for Decision\.reason"):
        codec.decode("Decision", data)
    nested = copy.deepcopy(SAMPLES["Flush"])
    nested["messages"][1]["type"] = "Bogus"
    data = header(ToParsingCanonicalForm(apy["Flush"])) + apy_write(apy["Flush"], nested)
    with pytest.raises(DecodeError) as info:
        codec.decode("Flush", data)
    assert str(info.value) == (
        "unknown value 'Bogus' for Flush.messages[1].type (allowed: UserMessage, SystemMessage)"
    )


# --------------------------------------------------------------------------- evolution


def v1_message_bytes(value: dict[str, Any]) -> bytes:
    schema = avro.schema.parse((SCHEMA_DIR / "MessageEvent.v1.avsc").read_text("utf-8"))
    return header(ToParsingCanonicalForm(schema)) + apy_write(schema, value)


def test_old_writer_schema_decodes_with_defaults() -> None:
    old = {k: v for k, v in MESSAGE.items() if k not in ("mentions", "origin")}
    decoded = codec.decode("MessageEvent", v1_message_bytes(old))
    assert decoded == {**old, "mentions": [], "origin": "web"}
    assert list(decoded) == list(MESSAGE)


def test_old_writer_schema_still_validates_enum_likes() -> None:
    old = {k: v for k, v in MESSAGE.items() if k not in ("mentions", "origin")}
    with pytest.raises(DecodeError, match="unknown value 'Chat' for MessageEvent.type"):
        codec.decode("MessageEvent", v1_message_bytes({**old, "type": "Chat"}))


def test_old_fingerprint_is_not_accepted_for_another_record() -> None:
    old = {k: v for k, v in MESSAGE.items() if k not in ("mentions", "origin")}
    with pytest.raises(DecodeError, match="is MessageEvent, expected Flush"):
        codec.decode("Flush", v1_message_bytes(old))


def copy_schemas(tmp_path: Path) -> Path:
    for path in SCHEMA_DIR.glob("*.avsc"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def test_old_schema_that_cannot_evolve_fails_at_load(tmp_path: Path) -> None:
    schemas = copy_schemas(tmp_path)
    typing = load("TypingEvent")
    typing["fields"] = [f for f in typing["fields"] if f["name"] != "typing"]
    (schemas / "TypingEvent.v1.avsc").write_text(json.dumps(typing))
    with pytest.raises(ValueError, match="'typing' .* no default"):
        codec.Codec(schemas)


def test_another_old_schema_is_picked_up(tmp_path: Path) -> None:
    schemas = copy_schemas(tmp_path)
    old = load("AppSettings")
    old["fields"] = [f for f in old["fields"] if f["name"] in ("inactivity_seconds", "ts")]
    (schemas / "AppSettings.v1.avsc").write_text(json.dumps(old))
    custom = codec.Codec(schemas)
    old_schema = avro.schema.parse(json.dumps(old))
    data = header(ToParsingCanonicalForm(old_schema)) + apy_write(
        old_schema, {"inactivity_seconds": 30, "ts": 99}
    )
    decoded = custom.decode("AppSettings", data)
    assert decoded == {**codec.decode("AppSettings", b"{}"), "inactivity_seconds": 30, "ts": 99}
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        codec.decode("AppSettings", data)  # the default codec has no such old schema


# --------------------------------------------------------------------------- JSON validation


def message_json(**changes: Any) -> bytes:
    value: dict[str, Any] = {**MESSAGE, **changes}
    return json.dumps({k: v for k, v in value.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (message_json(ts=...), "JSON value fails schema MessageEvent: field 'ts' missing"),
        (
            message_json(message_id=...),
            "JSON value fails schema MessageEvent: field 'message_id' missing",
        ),
        (
            message_json(ts="yesterday"),
            "JSON value fails schema MessageEvent: field 'ts' must be a long (integer), got string",
        ),
        (
            message_json(ts=1.5),
            "JSON value fails schema MessageEvent: field 'ts' must be a long (integer), got number",
        ),
        (
            message_json(ts=True),
            "JSON value fails schema MessageEvent: field 'ts' must be a long (integer), "
            "got boolean",
        ),
        (
            message_json(ts=2**63),
            "JSON value fails schema MessageEvent: field 'ts' is out of range for a long (64-bit)",
        ),
        (
            message_json(sender_id=7),
            "JSON value fails schema MessageEvent: field 'sender_id' must be null or a string, "
            "got integer",
        ),
        (
            message_json(mentions="u-bob"),
            "JSON value fails schema MessageEvent: field 'mentions' must be an array, got string",
        ),
        (
            message_json(mentions=["u-bob", None]),
            "JSON value fails schema MessageEvent: field 'mentions[1]' must be a string, got null",
        ),
        (
            message_json(type="Bogus"),
            "unknown value 'Bogus' for MessageEvent.type (allowed: UserMessage, SystemMessage)",
        ),
        (
            message_json(type=None),
            "JSON value fails schema MessageEvent: field 'type' must be a string, got null",
        ),
    ],
)
def test_json_validation_failures_are_readable(data: bytes, reason: str) -> None:
    for decoder in (codec.decode, codec.decode_json_value):
        with pytest.raises(DecodeError) as info:
            decoder("MessageEvent", data)
        assert str(info.value).startswith(reason)
        assert type(info.value) is DecodeError


def test_json_top_level_must_be_an_object() -> None:
    with pytest.raises(DecodeError) as info:
        codec.from_json_value("MessageEvent", [MESSAGE])
    assert str(info.value) == (
        "JSON value fails schema MessageEvent: value must be an object (MessageEvent record), "
        "got array"
    )
    # Only "{" announces JSON on the wire: a JSON array is not a record in any format.
    with pytest.raises(DecodeError, match=r"or JSON \(first bytes 0x5B 0x31\)"):
        codec.decode("MessageEvent", b"[1, 2]")


@pytest.mark.parametrize(
    ("record", "change", "reason"),
    [
        (
            "Conversation",
            lambda v: v["participants"][2].update(access="Write"),
            "unknown value 'Write' for Conversation.participants[2].access "
            "(allowed: ReadWrite, Read)",
        ),
        (
            "Conversation",
            lambda v: v["participants"][0].pop("user_id"),
            "JSON value fails schema Conversation: field 'participants[0].user_id' missing",
        ),
        (
            "Candidate",
            lambda v: v["sender_names"].update({"u-x": 5}),
            "JSON value fails schema Candidate: field 'sender_names['u-x']' must be a string",
        ),
        (
            "Decision",
            lambda v: v.update(channel="fax"),
            "unknown value 'fax' for Decision.channel (allowed: email, sms, push, browser)",
        ),
        (
            "Decision",
            lambda v: v.update(presence="AWAY"),
            "unknown value 'AWAY' for Decision.presence",
        ),
        (
            "Decision",
            lambda v: v.update(outcome="maybe"),
            "unknown value 'maybe' for Decision.outcome",
        ),
        ("Flush", lambda v: v.update(cause="timeout"), "unknown value 'timeout' for Flush.cause"),
        (
            "Outcome",
            lambda v: v.update(status="bounced"),
            "unknown value 'bounced' for Outcome.status",
        ),
        (
            "Delivery",
            lambda v: v.update(channel="pigeon"),
            "unknown value 'pigeon' for Delivery.channel",
        ),
        (
            "DeadLetter",
            lambda v: v.update(stage="later"),
            "unknown value 'later' for DeadLetter.stage",
        ),
        (
            "DeadLetter",
            lambda v: v.update(value="snowman ☃"),
            "JSON value fails schema DeadLetter: field 'value' has a code point above 255",
        ),
        (
            "Outcome",
            lambda v: v.update(attempts=2**31),
            "JSON value fails schema Outcome: field 'attempts' is out of range for an int",
        ),
        (
            "Role",
            lambda v: v.update(sms="yes"),
            "JSON value fails schema Role: field 'sms' must be a boolean, got string",
        ),
    ],
)
def test_nested_json_validation_failures(record: str, change: Any, reason: str) -> None:
    value = json_form(copy.deepcopy(SAMPLES[record]))
    change(value)
    with pytest.raises(DecodeError) as info:
        codec.decode(record, json.dumps(value).encode())
    assert str(info.value).startswith(reason)


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "value", fn(*args)
    except DecodeError as exc:
        return "error", str(exc)


@pytest.mark.parametrize("record", codec.RECORDS)
def test_decode_json_value_is_from_json_value_of_json_loads(record: str) -> None:
    raw = codec.encode_json(record, SAMPLES[record])
    decoded = codec.decode_json_value(record, raw)
    assert decoded == codec.from_json_value(record, json.loads(raw)) == SAMPLES[record]
    assert list(decoded) == list(SAMPLES[record])


# The wrapper line's value as msgspec.Raw gives it: any JSON, some of it close to a record.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
near_records = st.fixed_dictionaries(
    {},
    optional={
        name: st.sampled_from([value, None, "x", 1, 2**63, 1.5, True, [value], {"k": value}])
        for name, value in {**SAMPLES["MessageEvent"], **SAMPLES["PresenceEvent"]}.items()
    },
)


@settings(max_examples=300, deadline=None)
@given(
    record=st.sampled_from(["MessageEvent", "TypingEvent", "PresenceEvent", "Candidate"]),
    value=near_records | json_values,
)
def test_decode_json_value_agrees_with_from_json_value(record: str, value: Any) -> None:
    raw = json.dumps(value).encode()  # NaN and Infinity included, as json.loads reads them
    assert outcome(codec.decode_json_value, record, raw) == outcome(
        codec.from_json_value, record, json.loads(raw)
    )


@pytest.mark.parametrize(
    "raw",
    [
        b'{"conversation_id": "c", "ts": 1, "ts": "x", "user_id": "u", "typing": true}',
        b'{"conversation_id": "c", "ts": "x", "ts": 1, "user_id": "u", "typing": true}',
        b'{"conversation_id": "c", "user_id": "u", "typing": true, "ts": 99999999999999999999}',
        b'{"conversation_id": "c", "user_id": "u", "typing": true, "ts": NaN}',
        b'{"conversation_id": "\\ud800", "user_id": "u", "typing": true, "ts": 1}',
        b'{"conversation_id": "c", "user_id": "u", "typing": 1, "ts": 1.0}',
    ],
)
def test_decode_json_value_edge_cases(raw: bytes) -> None:
    expected = outcome(codec.from_json_value, "TypingEvent", json.loads(raw))
    assert outcome(codec.decode_json_value, "TypingEvent", raw) == expected


def test_decode_json_value_of_bad_json() -> None:
    with pytest.raises(DecodeError, match="^TypingEvent: invalid JSON"):
        codec.decode_json_value("TypingEvent", b'{"typing": tru')


def test_json_defaults_are_filled() -> None:
    minimal = {
        "message_id": "m-9",
        "conversation_id": "c-1",
        "type": "SystemMessage",
        "text": "Bob left",
        "ts": 5,
    }
    assert codec.decode("MessageEvent", json.dumps(minimal).encode()) == {
        **minimal,
        "sender_id": None,
        "mentions": [],
        "origin": "web",
    }
    user = codec.decode("User", b'{"user_id": "u-1", "name": "Ann", "ts": 1}')
    assert user == {
        "user_id": "u-1",
        "name": "Ann",
        "email": None,
        "phone": None,
        "role": None,
        "locale": "en",
        "push_tokens": [],
        "browser_subscriptions": [],
        "ts": 1,
    }
    assert codec.decode("AppSettings", b"{}")["max_batch_seconds"] == 300
    assert codec.decode("AppSettings", b"{}")["sms_from"] is None


def test_json_ignores_unknown_fields_but_encode_rejects_them() -> None:
    # A newer producer may add a field; a typo in our own code must not pass silently.
    decoded = codec.decode("TypingEvent", json.dumps({**SAMPLES["TypingEvent"], "x": 1}).encode())
    assert decoded == SAMPLES["TypingEvent"]
    with pytest.raises(EncodeError, match="unknown field 'mention'"):
        codec.encode("MessageEvent", {**MESSAGE, "mention": []})


@pytest.mark.parametrize(
    "prefix", [b"", b" ", b"\n\t  ", b"\r\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf "]
)
def test_json_detected_after_whitespace(prefix: bytes) -> None:
    data = prefix + codec.encode_json("TypingEvent", SAMPLES["TypingEvent"])
    assert codec.decode("TypingEvent", data) == SAMPLES["TypingEvent"]


def test_json_bytes_fields_use_latin1_strings() -> None:
    data = codec.encode_json("DeadLetter", SAMPLES["DeadLetter"])
    value = json.loads(data)
    assert value["value"] == "\xc3\x01\x00\xff garbage \x80"
    assert value["key"] == "c-42"
    assert codec.decode("DeadLetter", data)["value"] == SAMPLES["DeadLetter"]["value"]


# --------------------------------------------------------------------------- encode


class Reason(enum.StrEnum):
    VIEWING = "VIEWING"


@pytest.mark.parametrize(
    ("record", "value", "reason"),
    [
        ("MessageEvent", {**MESSAGE, "type": "Chat"}, "unknown value 'Chat' for MessageEvent.type"),
        (
            "MessageEvent",
            {k: v for k, v in MESSAGE.items() if k != "text"},
            "value fails schema MessageEvent: field 'text' missing",
        ),
        ("MessageEvent", {**MESSAGE, "ts": "now"}, "value fails schema MessageEvent: field 'ts'"),
        ("MessageEvent", [MESSAGE], "value fails schema MessageEvent: value must be an object"),
        ("DeadLetter", {**SAMPLES["DeadLetter"], "value": "text"}, "field 'value' must be bytes"),
        ("Decision", {**SAMPLES["Decision"], "reason": "Viewing"}, "unknown value 'Viewing'"),
    ],
)
def test_encode_rejects_invalid_values(record: str, value: Any, reason: str) -> None:
    for encoder in (codec.encode, codec.encode_json, codec.to_json_value):
        with pytest.raises(EncodeError) as info:
            encoder(record, value)
        assert reason in str(info.value)
        assert isinstance(info.value, DecodeError)  # one except clause covers both


def test_encode_names_a_map_key_that_is_not_a_string() -> None:
    for key, kind in ((1, "integer"), (None, "null")):
        with pytest.raises(EncodeError) as info:
            codec.encode(
                "Candidate", {**SAMPLES["Candidate"], "sender_names": {"a": "x", key: "y"}}
            )
        assert str(info.value) == (
            "value fails schema Candidate: field 'sender_names' must be a map with string keys, "
            f"got key {kind}"
        )


def test_encode_fills_defaults_and_accepts_str_enums() -> None:
    partial = {k: v for k, v in MESSAGE.items() if k not in ("mentions", "origin", "sender_id")}
    assert codec.decode("MessageEvent", codec.encode("MessageEvent", partial)) == {
        **partial,
        "sender_id": None,
        "mentions": [],
        "origin": "web",
    }
    decision = {**SAMPLES["Decision"], "reason": Reason.VIEWING}
    decoded = codec.decode("Decision", codec.encode("Decision", decision))
    assert decoded["reason"] == "VIEWING" and type(decoded["reason"]) is str
    assert json.loads(codec.encode_json("Decision", decision))["reason"] == "VIEWING"


def test_dead_letter_builds_a_valid_record() -> None:
    raw = b"\x00\x00\x00\x00\x07\x02x"
    record = codec.dead_letter(
        source_topic="chat.messages",
        key=b"c-42",
        value=raw,
        error="Confluent wire format (schema id 7) but no schema registry is configured",
        stage="decode",
        partition=0,
        offset=12,
        ts=1_717_171_812_000,
    )
    assert record["value"] == raw and record["stage"] == "decode" and record["key"] == b"c-42"
    assert codec.decode("DeadLetter", codec.encode("DeadLetter", record)) == record
    no_key = codec.dead_letter(
        source_topic="email.inbound",
        key=None,
        value=b"",
        error="x",
        stage="process",
        partition=None,
        offset=None,
        ts=0,
    )
    assert no_key["key"] is None and no_key["partition"] is None
    with pytest.raises(EncodeError, match="unknown value 'parse' for DeadLetter.stage"):
        codec.dead_letter(
            source_topic="t",
            key=None,
            value=b"",
            error="",
            stage="parse",
            partition=0,
            offset=0,
            ts=0,
        )


def test_dead_letter_of_a_huge_record_is_a_reference_that_fits() -> None:
    """Issue 8: a 5 MB record's dead letter was too large to write itself."""
    huge = b"{" + b"x" * (5 * 1024 * 1024)
    record = codec.dead_letter(
        source_topic="chat.messages",
        key=b"c-1",
        value=huge,
        error="record of 5242881 bytes; at most 524288 are read " + "!" * 5000,
        stage="decode",
        partition=2,
        offset=41,
        ts=1,
    )
    assert record["by_reference"] is True and record["value"] == b"" and record["key"] is None
    assert record["size"] == len(huge)
    assert (record["partition"], record["offset"]) == (2, 41)
    assert len(record["error"]) <= codec.DEAD_LETTER_MAX_ERROR_CHARS
    assert len(codec.encode("DeadLetter", record)) < 2_000
    small = codec.dead_letter(
        source_topic="chat.users",
        key=b"u1",
        value=None,
        error="tombstone",
        stage="decode",
        partition=0,
        offset=0,
        ts=0,
    )
    assert small["by_reference"] is False and small["size"] is None and small["value"] == b""


# --------------------------------------------------------------------------- bad bytes


def test_confluent_framing_without_registry() -> None:
    body = codec.encode("TypingEvent", SAMPLES["TypingEvent"])[10:]
    data = b"\x00" + (7).to_bytes(4, "big") + body
    with pytest.raises(DecodeError) as info:
        codec.decode("TypingEvent", data)
    assert str(info.value) == (
        "Confluent wire format (schema id 7) but no schema registry is configured"
    )
    configured = codec.Codec(schema_registry_url="http://registry:8081")
    with pytest.raises(DecodeError, match=r"schema id 7\).*registry is configured but"):
        configured.decode("TypingEvent", data)
    with pytest.raises(DecodeError, match="header truncated"):
        codec.decode("TypingEvent", b"\x00\x00\x01")


def test_confluent_framing_with_schema_lookup() -> None:
    lookups: list[int] = []

    def lookup(schema_id: int) -> str:
        lookups.append(schema_id)
        if schema_id != 7:
            raise LookupError(f"no schema {schema_id}")
        return (SCHEMA_DIR / "TypingEvent.avsc").read_text()

    registry = codec.Codec(schema_registry_url="http://registry:8081", schema_lookup=lookup)
    body = codec.encode("TypingEvent", SAMPLES["TypingEvent"])[10:]
    framed = b"\x00" + (7).to_bytes(4, "big") + body
    assert registry.decode("TypingEvent", framed) == SAMPLES["TypingEvent"]
    assert registry.decode("TypingEvent", framed) == SAMPLES["TypingEvent"]
    assert lookups == [7]  # cached per schema id
    with pytest.raises(DecodeError, match=r"schema id 8\): no usable writer schema.*no schema 8"):
        registry.decode("TypingEvent", b"\x00" + (8).to_bytes(4, "big") + body)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"AB", "not Avro single-object, Confluent or JSON (first bytes 0x41 0x42)"),
        (b"\xff", "not Avro single-object, Confluent or JSON (first bytes 0xFF)"),
        (
            b"\xc3\x02" + bytes(8),
            "not Avro single-object, Confluent or JSON (first bytes 0xC3 0x02)",
        ),
        (b"   ", "not Avro single-object, Confluent or JSON (first bytes 0x20 0x20)"),
        (b"", "empty value for TypingEvent"),
        (b"\xc3\x01\x01\x02", "Avro single-object header truncated (4 of 10 bytes)"),
        (b"\xc3\x01" + bytes(8) + b"\x02", "unknown schema fingerprint 0x0000000000000000 for"),
        (b"{not json", "TypingEvent: invalid JSON"),
        (b'{"typing": true', "TypingEvent: invalid JSON"),
        (b"{\xff\xfe}", "TypingEvent: invalid JSON"),
    ],
)
def test_bad_bytes_give_decode_error(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode("TypingEvent", data)
    assert reason in str(info.value)


def test_pathological_json_gives_decode_error() -> None:
    deep = b'{"conversation_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(DecodeError, match="invalid JSON: depth limit exceeded"):
        codec.decode("TypingEvent", deep)
    huge = b'{"conversation_id": "c", "user_id": "u", "typing": true, "ts": ' + b"9" * 5000 + b"}"
    with pytest.raises(DecodeError, match="invalid JSON"):
        codec.decode("TypingEvent", huge)
    nan = b'{"conversation_id": "c", "user_id": "u", "typing": true, "ts": NaN}'
    with pytest.raises(DecodeError, match="invalid JSON"):  # NaN is not JSON (RFC 8259)
        codec.decode("TypingEvent", nan)


def test_fingerprint_of_another_record_is_named() -> None:
    data = codec.encode("TypingEvent", SAMPLES["TypingEvent"])
    other = codec.fingerprint("TypingEvent")
    with pytest.raises(DecodeError) as info:
        codec.decode("PresenceEvent", data)
    assert (
        str(info.value)
        == f"schema fingerprint 0x{other:016x} is TypingEvent, expected PresenceEvent"
    )


def test_non_bytes_input() -> None:
    with pytest.raises(DecodeError, match="tombstone"):
        codec.decode("User", None)  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="expected bytes"):
        codec.decode("User", "{}")  # type: ignore[arg-type]
    data = codec.encode("User", SAMPLES["User"])
    assert codec.decode("User", bytearray(data)) == SAMPLES["User"]
    assert codec.decode("User", memoryview(data)) == SAMPLES["User"]


def test_unknown_record_name_is_a_programming_error() -> None:
    with pytest.raises(KeyError, match="unknown record type 'Message'"):
        codec.decode("Message", b"{}")


@pytest.mark.parametrize("record", codec.RECORDS)
def test_every_truncation_and_extension_is_rejected(record: str) -> None:
    data = codec.encode(record, SAMPLES[record])
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            codec.decode(record, data[:cut])
    with pytest.raises(DecodeError, match="trailing bytes"):
        codec.decode(record, data + b"\x00")


def test_corrupted_bodies_never_escape_as_other_errors() -> None:
    data = codec.encode("Flush", SAMPLES["Flush"])
    for index in range(10, len(data)):
        for flip in (0x01, 0x80, 0xFF):
            corrupted = bytearray(data)
            corrupted[index] ^= flip
            with contextlib.suppress(DecodeError):
                codec.decode("Flush", bytes(corrupted))


# Bytes from every shape the decoder distinguishes, plus noise.
HEADERS = [codec.encode(r, SAMPLES[r])[:10] for r in codec.RECORDS]
arbitrary = st.one_of(
    st.binary(max_size=200),
    st.tuples(st.sampled_from(HEADERS), st.binary(max_size=200)).map(lambda t: t[0] + t[1]),
    st.binary(max_size=60).map(lambda b: b"\x00" + b),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    ).map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(sorted({f["name"] for r in codec.RECORDS for f in load(r)["fields"]})),
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(max_size=8)
        | st.lists(st.text(max_size=4)),
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=400, deadline=None)
@given(record=st.sampled_from(codec.RECORDS), data=arbitrary)
def test_decode_returns_a_dict_or_raises_decode_error(record: str, data: bytes) -> None:
    try:
        result = codec.decode(record, data)
    except DecodeError as exc:
        assert str(exc)
        return
    assert isinstance(result, dict)
    assert list(result) == [f["name"] for f in load(record)["fields"]]


@settings(max_examples=200, deadline=None)
@given(
    record=st.sampled_from(codec.RECORDS),
    cut=st.integers(min_value=0, max_value=400),
    noise=st.binary(max_size=20),
)
def test_mangled_valid_records_decode_or_raise_decode_error(
    record: str, cut: int, noise: bytes
) -> None:
    data = codec.encode(record, SAMPLES[record])
    mangled = data[: 10 + cut] + noise
    with contextlib.suppress(DecodeError):
        assert isinstance(codec.decode(record, mangled), dict)


# Values of the schemas' types (no floats in any schema): any text, ints up to 64 bits.
json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(topic=st.text(), key=st.none() | st.text(), value=st.dictionaries(st.text(), json_like))
def test_json_line_is_json_dumps(topic: str, key: str | None, value: dict[str, Any]) -> None:
    expected = json.dumps({"topic": topic, "key": key, "value": value}, ensure_ascii=False)
    assert codec.json_line("Decision", topic, key, value) == (expected + "\n").encode()


def test_json_line_falls_back_to_json_dumps() -> None:
    for value in ({"ts": 2**70}, {"ts": 1, 7: "x"}, {None: 1}, {"t": (1, "\x7f\u2028")}):
        expected = json.dumps({"topic": "t", "key": None, "value": value}, ensure_ascii=False)
        assert codec.json_line("Decision", "t", None, value) == (expected + "\n").encode()


# --------------------------------------------------------------------------- purity, speed


def test_schema_is_standalone_and_a_copy() -> None:
    flush = codec.schema("Flush")
    items = flush["fields"][3]["type"]["items"]
    assert (
        items["name"] == "chat_notifier.MessageEvent"
        and [f["name"] for f in items["fields"]][-1] == "ts"
    )
    flush["fields"].clear()
    assert codec.schema("Flush")["fields"]


def test_codec_imports_no_faust_or_kafka() -> None:
    tree = ast.parse(Path(codec.__file__).read_text("utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {
        "__future__",
        "copy",
        "functools",
        "io",
        "json",
        "re",
        "collections",
        "pathlib",
        "typing",
        "fastavro",
        "msgspec",
        "orjson",
        "processors",  # the core's enums and the reply reasons: pure modules
    }


def test_allowed_values_are_the_core_enums() -> None:
    # One source of truth: the codec's table is built from the core's own values.
    from processors.core.decisions import Reason
    from processors.core.presence import Presence
    from processors.reply.reasons import REASONS
    from processors.topics import CHANNELS

    assert codec.ALLOWED_VALUES[("Decision", "reason")] == tuple(Reason)
    assert codec.ALLOWED_VALUES[("Decision", "presence")] == tuple(Presence)
    assert codec.ALLOWED_VALUES[("Outcome", "channel")] == tuple(CHANNELS)
    assert codec.ALLOWED_VALUES[("InboundAudit", "reason")] == REASONS
    assert all(type(v) is str for vs in codec.ALLOWED_VALUES.values() for v in vs)


def test_no_schema_work_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # Schemas are parsed and fingerprinted once; encoding and decoding only use the cache.
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("schema work on the hot path")

    monkeypatch.setattr(codec, "parse_schema", forbidden)
    monkeypatch.setattr(codec, "to_parsing_canonical_form", forbidden)
    monkeypatch.setattr(codec, "_fastavro_fingerprint", forbidden)
    for record in codec.RECORDS:
        assert codec.decode(record, codec.encode(record, SAMPLES[record])) == SAMPLES[record]
        assert codec.decode(record, codec.encode_json(record, SAMPLES[record])) == SAMPLES[record]
    old = {k: v for k, v in MESSAGE.items() if k not in ("mentions", "origin")}
    assert codec.decode("MessageEvent", v1_message_bytes(old))["origin"] == "web"


def test_encode_built_writes_the_same_bytes_and_refuses_the_same_records() -> None:
    """The worker's fast encode of its own outputs (codec.encode_built): byte for byte
    what encode writes, for every output replay gives on the demo scenario; a bad
    record raises encode's EncodeError."""
    from processors import codec as live_codec
    from processors import topics as topic_specs
    from processors.core.engine import Engine

    root = Path(__file__).resolve().parents[1]
    engine = Engine()
    outputs: list[tuple[str, str | None, dict[str, Any]]] = []
    for line in (root / "processors/demo/scenario.jsonl").read_text().splitlines():
        rec = json.loads(line)
        topic, value = rec["topic"], rec.get("value")
        decoded = (
            None
            if value is None
            else live_codec.from_json_value(topic_specs.TOPICS[topic].record or "", value)
        )
        outputs += engine.feed(topic, rec.get("key"), decoded)
    outputs += engine.finish()
    assert {t for t, _, _ in outputs} >= {"notify.flushes", "notify.decisions", "notify.email"}
    for topic, _, value in outputs:
        name = topic_specs.TOPICS[topic].record or ""
        assert live_codec.encode_built(name, value) == live_codec.encode(name, value)
    decision = next(v for t, _, v in outputs if t == "notify.decisions")
    with pytest.raises(live_codec.EncodeError, match="ts"):
        live_codec.encode_built("Decision", {**decision, "ts": "soon"})
