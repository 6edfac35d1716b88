"""Fixtures: real client libraries against local stand-ins on 127.0.0.1 (module scope,
state reset per test), and a DeliveryService factory with a no-op recording sleep."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest

from processors.senders.base import Sender
from processors.senders.service import DeliveryService, InMemorySentStore
from processors.settings import Settings, load_settings
from tests.senders.standins import FcmStandIn, TwilioStandIn, WebPushStandIn, free_port


class RecordingSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make_service(
    settings: Settings, sender: Sender, **kw: Any
) -> tuple[DeliveryService, RecordingSleep]:
    sleep = RecordingSleep()
    for section in (settings.email, settings.sms, settings.push, settings.browser):
        section.rate_per_second = 10_000.0
    service = DeliveryService(
        settings, {sender.channel: sender}, kw.pop("store", InMemorySentStore()), sleep=sleep, **kw
    )
    return service, sleep


# ------------------------------------------------------------------ SES (moto server)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def ses_settings(moto_endpoint: str) -> Settings:
    import boto3

    urllib.request.urlopen(
        urllib.request.Request(moto_endpoint + "/moto-api/reset", method="POST")
    ).read()
    kw = {
        "endpoint_url": moto_endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    boto3.client("sesv2", **kw).create_email_identity(EmailIdentity="notifications@chat.example")
    return load_settings(
        email={
            "backend": "ses",
            "ses_endpoint_url": moto_endpoint,
            "ses_access_key_id": "testing",
            "ses_secret_access_key": "testing",
        }
    )


def ses_sent(endpoint: str) -> list[EmailMessage]:
    data = json.load(urllib.request.urlopen(endpoint + "/moto-api/data.json"))
    raw = data.get("ses", {}).get("RawMessage", [])
    return [message_from_bytes(m["raw_data"].encode(), policy=policy.default) for m in raw]  # type: ignore[misc]


# ------------------------------------------------------------------ SMTP (aiosmtpd)


class SmtpCapture:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.rcpt_replies: list[str] = []  # scripted replies to RCPT, consumed in order

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.original_content, policy=policy.default))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[tuple[SmtpCapture, int]]:
    from aiosmtpd.controller import Controller

    handler, port = SmtpCapture(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
def smtp(smtp_server: tuple[SmtpCapture, int]) -> tuple[SmtpCapture, int]:
    handler, port = smtp_server
    handler.messages.clear()
    handler.rcpt_replies.clear()
    return handler, port


# ------------------------------------------------------------------ Twilio / FCM / Web Push

TWILIO_SID, TWILIO_TOKEN = "AC" + "1" * 32, "twilio-test-token"


@pytest.fixture(scope="module")
def twilio_server() -> Iterator[TwilioStandIn]:
    server = TwilioStandIn(TWILIO_SID, TWILIO_TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def twilio(twilio_server: TwilioStandIn) -> TwilioStandIn:
    twilio_server.reset()
    return twilio_server


FCM_BEARER = "test-access-token"


@pytest.fixture(scope="module")
def fcm_server() -> Iterator[FcmStandIn]:
    server = FcmStandIn(FCM_BEARER).start()
    yield server
    server.stop()


@pytest.fixture
def fcm(fcm_server: FcmStandIn) -> FcmStandIn:
    fcm_server.reset()
    fcm_server.token_errors.clear()
    return fcm_server


@pytest.fixture(scope="module")
def vapid_keys() -> tuple[str, str]:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from py_vapid import Vapid, b64urlencode

    v = Vapid()
    v.generate_keys()
    private = b64urlencode(v.private_key.private_numbers().private_value.to_bytes(32, "big"))
    public = b64urlencode(v.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))
    return private, public


@pytest.fixture(scope="module")
def webpush_server(vapid_keys: tuple[str, str]) -> Iterator[WebPushStandIn]:
    server = WebPushStandIn(vapid_keys[1]).start()
    yield server
    server.stop()


@pytest.fixture
def webpush(webpush_server: WebPushStandIn) -> WebPushStandIn:
    webpush_server.reset()
    webpush_server.status_for.clear()
    return webpush_server
