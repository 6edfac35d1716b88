"""Each backend with its real client library against a local stand-in, through the
DeliveryService: content, retry, dedupe, outcome and dead-letter behaviour."""

from __future__ import annotations

import time
from email.message import EmailMessage
from typing import Any

import botocore.exceptions
import pytest

from processors.senders.browser_webpush import WebPushBrowserSender
from processors.senders.email_ses import SesEmailSender, _map_client_error
from processors.senders.email_smtp import SmtpEmailSender
from processors.senders.errors import BadAddressError, PermanentError, TransientError
from processors.senders.push_fcm import FcmPushSender
from processors.senders.sms_twilio import TwilioSmsSender
from processors.senders.tokens import ReplyKeys, verify_reply_token
from processors.settings import Settings, load_settings
from tests.senders.conftest import (
    FCM_BEARER,
    TWILIO_SID,
    TWILIO_TOKEN,
    SmtpCapture,
    make_service,
    ses_sent,
)
from tests.senders.factories import make_delivery
from tests.senders.standins import FcmStandIn, TwilioStandIn, WebPushStandIn, fcm_error

APP = {
    "app_url_template": "https://chat.example/c/{conversation_id}",
    "unsubscribe_url_template": "https://chat.example/unsubscribe/{conversation_id}/{user_id}",
    "email_from": "Chat <notifications@chat.example>",
    "reply_domain": "reply.chat.example",
    "sms_from": "+15017122661",
}


def _parts(msg: EmailMessage) -> dict[str, str]:
    return {part.get_content_type(): part.get_content() for part in msg.iter_parts()}  # type: ignore[attr-defined]


def assert_notification_email(msg: EmailMessage, settings: Settings) -> None:
    assert msg["To"] == "Bob <bob@example.org>"
    assert msg["From"] == "Chat <notifications@chat.example>"
    assert msg["Subject"] == "Launch plan"
    local, _, domain = msg["Reply-To"].partition("@")
    assert domain == "reply.chat.example" and len(local) <= 64
    keys = ReplyKeys.parse([k.get_secret_value() for k in settings.reply.token_keys])
    assert verify_reply_token(local, keys=keys, now_ms=int(time.time() * 1000)) == (
        "conv-1",
        "u-bob",
    )
    assert msg["In-Reply-To"] == msg["References"]
    assert msg["References"].startswith("<thread.") and msg["Message-ID"].endswith("@chat.example>")
    assert msg["List-Unsubscribe"] == "<https://chat.example/unsubscribe/conv-1/u-bob>"
    parts = _parts(msg)
    assert set(parts) == {"text/plain", "text/html"}
    html, text = parts["text/html"], parts["text/plain"]
    assert "https://chat.example/c/conv-1" in html and "https://chat.example/c/conv-1" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert "Alice" in html and "message 1" in text


# ------------------------------------------------------------------ SES


async def test_ses_raw_mail_carries_everything_and_dedupes(
    ses_settings: Settings, moto_endpoint: str
) -> None:
    sender = SesEmailSender.from_settings(ses_settings)
    service, _ = make_service(ses_settings, sender, app_settings=APP)
    delivery = make_delivery("email", n=2)
    first = await service.handle(delivery)
    second = await service.handle(delivery)
    assert [o["status"] for o in first.outcomes] == ["sent"] and second.duplicate
    (msg,) = ses_sent(moto_endpoint)  # sent once
    assert_notification_email(msg, ses_settings)
    assert first.outcomes[0]["provider_id"]
    # next batch of the same conversation threads with the first
    await service.handle(make_delivery("email", n=3))
    one, two = ses_sent(moto_endpoint)
    assert one["References"] == two["References"] and one["Message-ID"] != two["Message-ID"]


async def test_ses_unverified_sender_is_permanent(ses_settings: Settings) -> None:
    service, sleep = make_service(
        ses_settings,
        SesEmailSender.from_settings(ses_settings),
        app_settings={**APP, "email_from": "x@unverified.example"},
    )
    result = await service.handle(make_delivery("email"))
    assert (
        result.outcomes[0]["status"] == "failed"
        and "MessageRejected" in result.outcomes[0]["detail"]
    )
    assert len(result.dead_letters) == 1 and sleep.calls == []


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (400, "TooManyRequestsException", "", TransientError),
        (429, "Throttling", "", TransientError),
        (503, "ServiceUnavailable", "", TransientError),
        (400, "BadRequestException", "Illegal address", BadAddressError),
        (400, "MessageRejected", "not verified", PermanentError),
        (403, "AccountSuspendedException", "", PermanentError),
    ],
)
def test_ses_error_mapping(status: int, code: str, message: str, expected: type[Exception]) -> None:
    exc = botocore.exceptions.ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}},
        },
        "SendEmail",
    )
    mapped = _map_client_error(exc, "bob@example.org")
    assert type(mapped) is expected and "bob@" not in str(mapped)


async def test_ses_unreachable_is_transient_then_dead_letter() -> None:
    from tests.senders.standins import free_port

    settings = load_settings(
        email={
            "backend": "ses",
            "ses_endpoint_url": f"http://127.0.0.1:{free_port()}",
            "ses_access_key_id": "t",
            "ses_secret_access_key": "t",
        }
    )
    service, sleep = make_service(
        settings, SesEmailSender.from_settings(settings), app_settings=APP
    )
    result = await service.handle(make_delivery("email"))
    assert result.outcomes[0]["status"] == "failed" and result.outcomes[0]["attempts"] == 5
    assert len(sleep.calls) == 4 and result.dead_letters[0]["stage"] == "deliver"


# ------------------------------------------------------------------ SMTP


def _smtp_settings(port: int) -> Settings:
    return load_settings(
        email={
            "backend": "smtp",
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_timeout_seconds": 2,
        }
    )


async def test_smtp_delivers_full_message(smtp: tuple[SmtpCapture, int]) -> None:
    handler, port = smtp
    settings = _smtp_settings(port)
    service, _ = make_service(settings, SmtpEmailSender.from_settings(settings), app_settings=APP)
    delivery = make_delivery("email", n=2)
    result = await service.handle(delivery)
    await service.handle(delivery)
    (msg,) = handler.messages
    assert_notification_email(msg, settings)
    assert result.outcomes[0]["provider_id"] == msg["Message-ID"]


async def test_smtp_refused_mailbox_is_invalid_address(smtp: tuple[SmtpCapture, int]) -> None:
    handler, port = smtp
    handler.rcpt_replies.append("550 5.1.1 No such user here")
    settings = _smtp_settings(port)
    service, _ = make_service(settings, SmtpEmailSender.from_settings(settings), app_settings=APP)
    result = await service.handle(make_delivery("email"))
    assert [(o["status"], o["address"]) for o in result.outcomes] == [
        ("invalid_address", "bob@example.org")
    ]
    assert result.dead_letters == [] and handler.messages == []


async def test_smtp_temporary_failure_is_retried(smtp: tuple[SmtpCapture, int]) -> None:
    handler, port = smtp
    handler.rcpt_replies.append("451 4.7.1 Greylisted, try again")
    settings = _smtp_settings(port)
    service, sleep = make_service(
        settings, SmtpEmailSender.from_settings(settings), app_settings=APP
    )
    result = await service.handle(make_delivery("email"))
    assert result.outcomes[0]["status"] == "sent" and result.outcomes[0]["attempts"] == 2
    assert len(sleep.calls) == 1 and len(handler.messages) == 1


# ------------------------------------------------------------------ Twilio


def _twilio(server: TwilioStandIn, **sms: Any) -> tuple[Any, Any, Settings]:
    settings = load_settings(
        sms={
            "backend": "twilio",
            "twilio_account_sid": TWILIO_SID,
            "twilio_auth_token": TWILIO_TOKEN,
            "twilio_base_url": server.base_url,
            **sms,
        }
    )
    service, sleep = make_service(
        settings, TwilioSmsSender.from_settings(settings), app_settings=APP
    )
    return service, sleep, settings


async def test_twilio_sends_sms_once(twilio: TwilioStandIn) -> None:
    service, _, _ = _twilio(twilio)
    delivery = make_delivery("sms", n=3)
    result = await service.handle(delivery)
    await service.handle(delivery)
    (form,) = twilio.requests
    assert form["To"] == "+15558675310" and form["From"] == "+15017122661"
    assert form["Body"].startswith("Alice: message 0") and form["Body"].endswith(
        "(+2 more)\nhttps://chat.example/c/conv-1"
    )
    assert result.outcomes[0]["provider_id"].startswith("SM")


async def test_twilio_invalid_number_is_invalid_address(twilio: TwilioStandIn) -> None:
    twilio.fail_next.append(
        (400, {"code": 21211, "message": "Invalid 'To' Phone Number: +15558675310", "status": 400})
    )
    service, sleep, _ = _twilio(twilio)
    result = await service.handle(make_delivery("sms"))
    (outcome,) = result.outcomes
    assert outcome["status"] == "invalid_address" and outcome["address"] == "+15558675310"
    assert "+1555" not in outcome["detail"] and sleep.calls == []


async def test_twilio_429_and_timeout_are_retried(twilio: TwilioStandIn) -> None:
    twilio.fail_next.append((429, {"code": 20429, "message": "Too Many Requests", "status": 429}))
    twilio.fail_next.append(("sleep", 0.6))  # longer than the client timeout
    service, sleep, _ = _twilio(twilio, timeout_seconds=0.3)
    result = await service.handle(make_delivery("sms"))
    assert result.outcomes[-1]["status"] == "sent" and result.outcomes[-1]["attempts"] == 3
    assert len(sleep.calls) == 2


async def test_twilio_5xx_exhausts_retries_to_dead_letter(twilio: TwilioStandIn) -> None:
    for _ in range(5):
        twilio.fail_next.append((500, {"code": 20500, "message": "Internal", "status": 500}))
    service, sleep, _ = _twilio(twilio)
    result = await service.handle(make_delivery("sms"))
    assert result.outcomes[0]["status"] == "failed" and len(result.dead_letters) == 1
    assert twilio.requests == [] and len(sleep.calls) == 4


# ------------------------------------------------------------------ FCM


def _fcm(server: FcmStandIn, timeout: float = 5.0) -> tuple[Any, Any, FcmPushSender]:
    settings = load_settings(
        push={
            "backend": "fcm",
            "fcm_project_id": "demo-proj",
            "fcm_static_token": FCM_BEARER,
            "fcm_url": server.base_url + "/v1/projects/{0}/messages:send",
            "timeout_seconds": timeout,
        }
    )
    sender = FcmPushSender.from_settings(settings)
    service, sleep = make_service(settings, sender, app_settings=APP)
    return service, sleep, sender


async def test_fcm_sends_to_every_token_collapsing_per_conversation(fcm: FcmStandIn) -> None:
    service, _, sender = _fcm(fcm)
    delivery = make_delivery("push", n=2, push_tokens=["tok-a", "tok-b", "tok-c"])
    result = await service.handle(delivery)
    await service.handle(delivery)
    await sender.close()
    assert len(fcm.requests) == 3
    assert (
        result.outcomes[-1]["status"] == "sent"
        and result.outcomes[-1]["provider_id"].count("projects/demo-proj") == 3
    )
    msg = fcm.requests[0]
    assert msg["notification"] == {
        "title": "Launch plan",
        "body": "Alice: message 0 <script>alert(1)</script> (+1 more)",
    }
    assert (
        msg["android"]["collapse_key"] == "conv-1"
        and msg["android"]["notification"]["tag"] == "conv-1"
    )
    assert msg["apns"]["headers"]["apns-collapse-id"] == "conv-1"
    assert msg["data"]["url"] == "https://chat.example/c/conv-1"


async def test_fcm_dead_tokens_are_isolated(fcm: FcmStandIn) -> None:
    fcm.token_errors["tok-dead"] = fcm_error(404, "NOT_FOUND", "UNREGISTERED")
    fcm.token_errors["tok-bad"] = fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")
    service, sleep, sender = _fcm(fcm)
    result = await service.handle(
        make_delivery("push", push_tokens=["tok-dead", "tok-ok", "tok-bad"])
    )
    await sender.close()
    got = [(o["status"], o["address"]) for o in result.outcomes]
    assert got == [("invalid_address", "tok-dead"), ("invalid_address", "tok-bad"), ("sent", None)]
    assert result.dead_letters == [] and sleep.calls == [] and len(fcm.requests) == 1


async def test_fcm_quota_honours_retry_after_and_5xx_is_fast(fcm: FcmStandIn) -> None:
    status, body, _ = fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED")
    fcm.fail_next.append((status, body, {"Retry-After": "3"}))
    fcm.fail_next.append(fcm_error(503, "UNAVAILABLE", "UNAVAILABLE"))
    service, sleep, sender = _fcm(fcm)
    started = time.monotonic()
    result = await service.handle(make_delivery("push", push_tokens=["tok-a"]))
    await sender.close()
    assert time.monotonic() - started < 2.0  # firebase's own 7 s of 5xx retries are off
    assert result.outcomes[-1]["status"] == "sent" and result.outcomes[-1]["attempts"] == 3
    assert sleep.calls[0] == 3.0 and len(fcm.requests) == 1


# ------------------------------------------------------------------ Web Push


def _webpush(vapid_private: str, timeout: float = 5.0) -> tuple[Any, Any]:
    settings = load_settings(
        browser={
            "backend": "webpush",
            "vapid_private_key": vapid_private,
            "ttl_seconds": 600,
            "timeout_seconds": timeout,
        }
    )
    return make_service(settings, WebPushBrowserSender.from_settings(settings), app_settings=APP)


async def test_webpush_payload_decrypts_to_notification(
    webpush: WebPushStandIn, vapid_keys: tuple[str, str]
) -> None:
    subs = [webpush.subscribe(), webpush.subscribe()]
    service, _ = _webpush(vapid_keys[0])
    delivery = make_delivery("browser", n=2, browser_subscriptions=subs)
    result = await service.handle(delivery)
    await service.handle(delivery)
    assert result.outcomes[-1]["status"] == "sent" and len(webpush.requests) == 2
    got = webpush.requests[0]
    assert got["payload"] == {
        "title": "Launch plan",
        "body": "Alice: message 0 <script>alert(1)</script> (+1 more)",
        "url": "https://chat.example/c/conv-1",
        "tag": "conv-1",
    }
    assert got["ttl"] == "600" and got["urgency"] == "normal" and len(got["topic"]) <= 32


async def test_webpush_gone_subscription_is_isolated(
    webpush: WebPushStandIn, vapid_keys: tuple[str, str]
) -> None:
    gone, ok = webpush.subscribe(), webpush.subscribe()
    webpush.status_for[gone["endpoint"].rsplit("/", 1)[1]] = (410, {"error": "gone"}, {})
    service, _ = _webpush(vapid_keys[0])
    result = await service.handle(make_delivery("browser", browser_subscriptions=[gone, ok]))
    assert [(o["status"], o["address"]) for o in result.outcomes] == [
        ("invalid_address", gone["endpoint"]),
        ("sent", None),
    ]


async def test_webpush_429_retry_after_and_500(
    webpush: WebPushStandIn, vapid_keys: tuple[str, str]
) -> None:
    webpush.fail_next.append((429, {"error": "slow down"}, {"Retry-After": "5"}))
    webpush.fail_next.append((500, {"error": "oops"}, {}))
    service, sleep = _webpush(vapid_keys[0])
    result = await service.handle(
        make_delivery("browser", browser_subscriptions=[webpush.subscribe()])
    )
    assert result.outcomes[-1]["status"] == "sent" and result.outcomes[-1]["attempts"] == 3
    assert sleep.calls[0] == 5.0 and len(sleep.calls) == 2


async def test_fcm_timeout_is_retried(fcm: FcmStandIn) -> None:
    fcm.fail_next.append(("sleep", 0.8))  # longer than the client timeout below
    service, sleep, sender = _fcm(fcm, timeout=0.3)
    result = await service.handle(make_delivery("push", push_tokens=["tok-a"]))
    await sender.close()
    assert result.outcomes[-1]["status"] == "sent" and result.outcomes[-1]["attempts"] == 2
    assert len(sleep.calls) == 1


async def test_webpush_timeout_is_retried(
    webpush: WebPushStandIn, vapid_keys: tuple[str, str]
) -> None:
    webpush.fail_next.append(("sleep", 0.8))
    service, sleep = _webpush(vapid_keys[0], timeout=0.3)
    result = await service.handle(
        make_delivery("browser", browser_subscriptions=[webpush.subscribe()])
    )
    assert result.outcomes[-1]["status"] == "sent" and result.outcomes[-1]["attempts"] == 2
