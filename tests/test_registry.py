"""The schema-registry path (issue 12 item 3) against a local stand-in of the REST protocol.

Producers register the record's schema under ``<topic>-value`` and write the Confluent
wire format; consumers fetch the writer schema by id, keep it, and turn every failure
(unknown id, registry away) into one DecodeError with that reason.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from processors import codec, registry
from processors.codec import DecodeError, EncodeError
from processors.registry import RegistryError, SchemaRegistry
from processors.settings import load_settings

from .registry_standin import RegistryStandIn
from .test_codec import SAMPLES

TYPING = SAMPLES["TypingEvent"]
MESSAGE = SAMPLES["MessageEvent"]


@pytest.fixture
def standin() -> Iterator[RegistryStandIn]:
    server = RegistryStandIn().start()
    yield server
    server.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def framed(schema_id: int, record: str = "TypingEvent", value: Any = None) -> bytes:
    return codec.encode_confluent(record, value if value is not None else TYPING, schema_id)


def reader(registry_: SchemaRegistry) -> codec.Codec:
    return codec.Codec(schema_registry_url=registry_.shown, schema_lookup=registry_.writer_schema)


def gets(standin: RegistryStandIn) -> int:
    return sum(n for (method, _), n in standin.hits.items() if method == "GET")


def test_encode_confluent_is_the_wire_format() -> None:
    data = codec.encode_confluent("TypingEvent", TYPING, 42)
    assert data[:5] == b"\x00\x00\x00\x00\x2a"
    assert data[5:] == codec.encode("TypingEvent", TYPING)[10:]  # the same Avro body
    with pytest.raises(EncodeError, match="TypingEvent: field 'typing' must be a boolean"):
        codec.encode_confluent("TypingEvent", {**TYPING, "typing": "yes"}, 42)
    with pytest.raises(EncodeError, match="not a registry id"):
        codec.encode_confluent("TypingEvent", TYPING, 2**31)


def test_producer_registers_once_and_consumer_decodes(standin: RegistryStandIn) -> None:
    producer = SchemaRegistry(standin.url)
    first = producer.encode("p.chat.typing", "TypingEvent", TYPING)
    again = producer.encode("p.chat.typing", "TypingEvent", {**TYPING, "typing": False})
    registrations = [p for (m, p), n in standin.hits.items() if m == "POST" for _ in range(n)]
    # the client asks "is it there?" then registers; the second record asks nothing
    subject = "/subjects/p.chat.typing-value"
    assert registrations == [subject, subject + "/versions"]
    schema_id = int.from_bytes(first[1:5], "big")
    assert standin.subjects == {"p.chat.typing-value": [schema_id]}
    assert first[0] == 0 and again[:5] == first[:5]

    consumer = reader(SchemaRegistry(standin.url))
    assert consumer.decode("TypingEvent", first) == TYPING
    assert consumer.decode("TypingEvent", again) == {**TYPING, "typing": False}
    assert standin.hits["GET", f"/schemas/ids/{schema_id}"] == 1  # kept after the first


def test_unknown_id_is_a_precise_reason_kept_30_s(standin: RegistryStandIn) -> None:
    clock = Clock()
    schemas = SchemaRegistry(standin.url, clock=clock)
    consumer = reader(schemas)
    reason = f"schema id 42 is not known to the registry at {standin.url}"
    for _ in range(3):
        with pytest.raises(DecodeError) as info:
            consumer.decode("TypingEvent", framed(42))
        assert str(info.value) == reason
    assert standin.hits["GET", "/schemas/ids/42"] == 1  # the failure is kept...
    standin.add(codec.schema("TypingEvent"), 42)  # ...then registered elsewhere
    clock.now += registry.RETRY_AFTER_S - 1
    with pytest.raises(DecodeError, match="not known"):
        consumer.decode("TypingEvent", framed(42))
    clock.now += 2  # ...and asked again after 30 s
    assert consumer.decode("TypingEvent", framed(42)) == TYPING
    assert standin.hits["GET", "/schemas/ids/42"] == 2


def test_unreachable_registry_fails_fast_and_recovers(standin: RegistryStandIn) -> None:
    clock = Clock()
    schemas = SchemaRegistry(standin.url, clock=clock)
    consumer = reader(schemas)
    known = standin.add(codec.schema("TypingEvent"))
    later = standin.add(codec.schema("TypingEvent"))
    assert consumer.decode("TypingEvent", framed(known)) == TYPING
    standin.stop()
    with pytest.raises(DecodeError) as info:
        consumer.decode("TypingEvent", framed(later))
    assert str(info.value).startswith(
        f"schema registry at {standin.url} unreachable: ConnectError: "
    )
    assert str(info.value).endswith(f"(schema id {later})")
    assert consumer.decode("TypingEvent", framed(known)) == TYPING  # kept ids still decode
    standin.start()  # back on the same port, but the outage is remembered for 30 s
    standin.hits.clear()
    with pytest.raises(DecodeError, match=r"unreachable: ConnectError.*\(schema id 99\)"):
        consumer.decode("TypingEvent", framed(99))
    assert gets(standin) == 0
    clock.now += registry.RETRY_AFTER_S
    assert consumer.decode("TypingEvent", framed(later)) == TYPING
    assert gets(standin) == 1


def test_a_registry_that_does_not_answer_times_out() -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        schemas = SchemaRegistry(f"http://127.0.0.1:{port}", timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(DecodeError, match=r"unreachable: ReadTimeout.*\(schema id 5\)"):
            reader(schemas).decode("TypingEvent", framed(5))
        assert time.monotonic() - started < 2.0
    assert registry.FETCH_TIMEOUT_S == 2.0


def test_a_schema_of_another_record_type_is_named(standin: RegistryStandIn) -> None:
    role = standin.add(codec.schema("Role"))
    consumer = reader(SchemaRegistry(standin.url))
    with pytest.raises(DecodeError) as info:
        consumer.decode("TypingEvent", framed(role))
    assert str(info.value) == f"schema id {role} is Role, expected TypingEvent"


def test_credentials_in_the_url_are_not_in_reasons(standin: RegistryStandIn) -> None:
    url = standin.url.replace("http://", "http://reader:s3cret@")
    with pytest.raises(DecodeError) as info:
        reader(SchemaRegistry(url)).decode("TypingEvent", framed(7))
    assert str(info.value) == f"schema id 7 is not known to the registry at {standin.url}"
    assert "s3cret" not in str(info.value)


def test_register_failure_is_one_line(standin: RegistryStandIn) -> None:
    standin.stop()
    with pytest.raises(RegistryError, match=f"^schema registry at {standin.url} unreachable"):
        SchemaRegistry(standin.url).encode("chat.roles", "Role", SAMPLES["Role"])


def test_install_makes_module_decode_use_the_registry(standin: RegistryStandIn) -> None:
    body = framed(standin.add(codec.schema("MessageEvent")), "MessageEvent", MESSAGE)
    with pytest.raises(DecodeError, match="no schema registry is configured"):
        codec.decode("MessageEvent", body)  # today's reason without the setting
    assert registry.install(load_settings()) is None
    default = codec._DEFAULT
    try:
        installed = registry.install(load_settings(schema_registry_url=standin.url))
        assert installed is not None
        assert registry.install(load_settings(schema_registry_url=standin.url)) is installed
        assert codec.decode("MessageEvent", body) == MESSAGE
        with pytest.raises(DecodeError, match="schema id 77 is not known to the registry"):
            codec.decode("MessageEvent", framed(77, "MessageEvent", MESSAGE))
    finally:
        default.schema_registry_url = None
        default.schema_lookup = None
        default._confluent.clear()
        registry._installed_url = None
        registry._REGISTRIES.clear()


def test_the_setting_is_an_http_url_or_unset() -> None:
    assert load_settings(schema_registry_url="").schema_registry_url is None
    assert load_settings(schema_registry_url=" http://r:8081 ").schema_registry_url is not None
    with pytest.raises(
        ValueError, match="SCHEMA_REGISTRY_URL: must start with http:// or https://"
    ):
        load_settings(schema_registry_url="registry:8081")
