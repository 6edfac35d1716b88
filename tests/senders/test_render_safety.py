"""Hostile text where it is rendered (issue 8): links, headers, SMS and push payloads, logs.

Every channel is rendered from a Delivery whose ids, names and subject carry CR/LF,
header syntax and HTML, with AppSettings whose templates are hostile or valid, and
the result is parsed back the way a receiver would.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

from processors.logsafe import for_log
from processors.senders import render
from processors.senders.outbox import OutboxSender
from processors.senders.service import DeliveryService, InMemorySentStore
from processors.settings import load_settings
from tests.senders.factories import T0_MS, make_delivery

HOSTILE_ID = 'c1\r\nBcc: evil@attacker.example\r\n"><img src=x onerror=alert(1)>'
HOSTILE_USER = "u-bob\r\nX-Injected: 1"
HOSTILE_NAME = 'Bob"\r\nBcc: evil2@attacker.example\u202e'
HOSTILE_SUBJECT = "Launch\r\nBcc: evil3@attacker.example\x00\x1b[31m" + "x" * 500
GOOD = {
    "app_url_template": "https://chat.example/c/{conversation_id}",
    "unsubscribe_url_template": "https://chat.example/u?c={conversation_id}&u={user_id}",
}
HOSTILE_TEMPLATES = [
    "javascript:alert({conversation_id})",
    "data:text/html,x",
    "/relative/{conversation_id}",
    "https://x/{conversation_id.__class__.__mro__}",
    "https://x/{conversation_id:>200000000}",
    "https://x/{",
    "https://x/{nope}",
]


def _hostile(channel: str, **overrides: Any) -> dict[str, Any]:
    sub = {"endpoint": "https://push.example/1", "p256dh": "k", "auth": "a"}
    values: dict[str, Any] = {
        "conversation_id": HOSTILE_ID,
        "recipient_id": HOSTILE_USER,
        "recipient_name": HOSTILE_NAME,
        "subject": HOSTILE_SUBJECT,
        "browser_subscriptions": [sub],
    }
    values.update(overrides)
    delivery = make_delivery(channel, n=2, **values)
    delivery["messages"][0]["sender_name"] = "Alice\nhttps://phish.example\r\nBcc: x@y"
    return delivery


def _parse(content: render.EmailContent) -> tuple[bytes, EmailMessage]:
    raw = render.to_mime_bytes(content)
    return raw, message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]


def _header_lines(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return head.split("\r\n")


def test_hostile_ids_names_and_subject_render_one_valid_email() -> None:
    content = render.build_email(_hostile("email"), GOOD, "k1-tok", T0_MS)
    raw, mime = _parse(content)
    assert not [line for line in _header_lines(raw) if line.lower().startswith(("bcc", "x-inj"))]
    assert mime.get_all("Bcc") is None and mime.get_all("X-Injected") is None
    to = mime.get_all("To")
    assert to is not None and len(to) == 1
    assert [a.addr_spec for a in to[0].addresses] == ["bob@example.org"]
    assert "\r" not in str(to[0]) and "\u202e" not in str(to[0])
    subject = str(mime["Subject"])
    assert subject.startswith("Launch Bcc: evil3@attacker.example")
    assert len(subject) <= render.SUBJECT_MAX_CHARS and subject.isprintable()
    unsubscribe = str(mime["List-Unsubscribe"])
    assert unsubscribe.startswith("<https://chat.example/u?") and unsubscribe.endswith(">")
    url = unsubscribe[1:-1]
    assert not set(url) & set(' <>"\r\n') and url.isascii()
    assert parse_qs(urlsplit(url).query) == {"c": [HOSTILE_ID], "u": [HOSTILE_USER]}
    link = "https://chat.example/c/" + quote(HOSTILE_ID, safe="")
    text, html = (p.get_content() for p in mime.iter_parts())  # type: ignore[attr-defined]
    assert f'href="{link}"' in html and link in text
    assert "<img" not in html and "&lt;img" not in html  # the id only appears encoded
    assert unquote(urlsplit(link).path.rpartition("/")[2]) == HOSTILE_ID


@pytest.mark.parametrize("template", HOSTILE_TEMPLATES)
def test_hostile_templates_fall_back_to_the_default_link_on_every_channel(template: str) -> None:
    app = {"app_url_template": template, "unsubscribe_url_template": template}
    links = render.AppLinks.from_app_settings(app)
    assert [name for name, _ in links.fallbacks] == [
        "app_url_template",
        "unsubscribe_url_template",
    ]
    started = time.perf_counter()
    email = render.build_email(_hostile("email"), app, "k1-tok", T0_MS)
    sms = render.build_sms(_hostile("sms"), app, max_segments=3)
    push = render.build_push(_hostile("push"), app)
    browser = render.build_browser(_hostile("browser"), app, ttl_s=60)
    assert time.perf_counter() - started < 1.0  # no 200 MB padding, no 67 s SMS
    default = "http://localhost:8000/conversations/"
    raw, mime = _parse(email)
    assert len(raw) < 50_000
    assert str(mime["List-Unsubscribe"]).startswith("<http://localhost:8000/unsubscribe?")
    for url in (sms.body.rpartition("\n")[2], push.data["url"], browser.payload["url"]):
        assert url.startswith(default) and url.isascii() and " " not in url
    assert "javascript" not in email.html + email.text + sms.body


def test_sms_keeps_one_text_line_and_one_safe_link() -> None:
    sms = render.build_sms(_hostile("sms"), GOOD, max_segments=2)
    first, link = sms.body.split("\n")  # the sender's name cannot add lines (or links)
    assert first.startswith("Alice https://phish.example Bcc: x@y: ")
    assert link.startswith("https://chat.example/c/c1%0D%0ABcc%3A")
    assert sms.segments <= 2 and render.count_sms_segments(sms.body).segments == sms.segments


def test_sms_link_too_long_for_a_text_message_becomes_the_site() -> None:
    sms = render.build_sms(_hostile("sms", conversation_id="é" * 600), GOOD, max_segments=3)
    assert sms.body.endswith("\nhttps://chat.example/")


@pytest.mark.parametrize("channel", ["push", "browser"])
def test_push_payloads_have_safe_links_titles_and_tags(channel: str) -> None:
    delivery = _hostile(channel)
    if channel == "push":
        push = render.build_push(delivery, GOOD)
        url, title, tag = push.data["url"], push.title, push.collapse_key
    else:
        browser = render.build_browser(delivery, GOOD, ttl_s=60)
        url, title, tag = browser.payload["url"], browser.payload["title"], browser.payload["tag"]
    assert urlsplit(url).scheme == "https" and urlsplit(url).netloc == "chat.example"
    assert title.isprintable() and len(title) <= render.PUSH_TITLE_MAX_CHARS
    # the raw id would be an apns-collapse-id header with CR/LF in it: hashed instead
    assert re.fullmatch(r"conv-[0-9a-f]{40}", tag)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email_from", "Chat\r\nBcc: evil@attacker.example <n@chat.example>"),
        ("email_from", "a@chat.example, b@attacker.example"),
        ("email_from", "no address"),
        ("reply_domain", "r.example\r\nBcc: evil@attacker.example"),
        ("reply_domain", "r.example>"),
        ("sms_from", "+1555\nX"),
    ],
)
def test_hostile_sender_identities_fall_back(field: str, value: str) -> None:
    app = {**GOOD, field: value}
    assert [name for name, _ in render.AppLinks.from_app_settings(app).fallbacks] == [field]
    raw, mime = _parse(render.build_email(_hostile("email"), app, "k1-tok", T0_MS))
    assert mime.get_all("Bcc") is None and len(mime.get_all("From") or []) == 1
    assert str(mime["Reply-To"]).startswith("reply+k1-tok@")


def test_long_display_names_are_bounded() -> None:
    app = {**GOOD, "email_from": '"' + "N" * 5000 + '" <n@chat.example>'}
    content = render.build_email(_hostile("email", recipient_name="R" * 5000), app, "k1-tok", T0_MS)
    for mailbox in (content.from_, content.to):
        name = str(make_header(decode_header(parseaddr(mailbox)[0])))
        assert len(name) == render.NAME_MAX_CHARS and name.endswith("…")
    _raw, mime = _parse(content)  # and the message still parses to one From and one To
    assert len(mime["From"].addresses) == 1 and len(mime["To"].addresses) == 1


def test_a_message_time_the_clock_cannot_show_does_not_fail_the_email() -> None:
    delivery = make_delivery("email")
    delivery["messages"][0]["ts"] = 10**15  # year 33658
    content = render.build_email(delivery, GOOD, "k1-tok", T0_MS)
    assert "message 0" in content.text


# ------------------------------------------------------------------ through the service


def _service(tmp_path: Path, channel: str, app: dict[str, Any]) -> DeliveryService:
    settings = load_settings()
    return DeliveryService(
        settings,
        {channel: OutboxSender(tmp_path, channel)},
        InMemorySentStore(),
        app_settings=app,
    )


@pytest.mark.parametrize("channel", ["email", "sms", "push", "browser"])
def test_service_delivers_hostile_deliveries_and_logs_no_forged_line(
    channel: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = {"app_url_template": "https://x/{conversation_id:>200000000}"}
    service = _service(tmp_path, channel, app)
    delivery = _hostile(channel, delivery_id="d-1\r\nBcc: evil@attacker.example")
    with caplog.at_level(logging.DEBUG):
        result = asyncio.run(service.handle(delivery))
        service.app_settings = dict(app)  # the same value again: no second warning
        asyncio.run(service.handle(_hostile(channel, delivery_id="d-2")))
    assert result.outcomes[-1]["status"] == "sent" and not result.dead_letters
    assert service.fallback_counts["app_url_template"] == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "app_url_template" in warnings[0].getMessage()
    for record in caplog.records:
        message = record.getMessage()
        assert "\r" not in message and "\n" not in message, message
        assert "evil@attacker.example" not in message or "\\x0d\\x0a" in message
        assert "bob@example.org" not in message and "+1555" not in message


def test_an_email_address_with_crlf_is_an_invalid_address_not_an_injection(
    tmp_path: Path,
) -> None:
    service = _service(tmp_path, "email", GOOD)
    delivery = make_delivery("email", email="bob@example.org\r\nBcc: evil@attacker.example")
    result = asyncio.run(service.handle(delivery))
    assert [o["status"] for o in result.outcomes] == ["invalid_address"]
    assert result.outcomes[0]["address"] == delivery["email"]
    assert not list(tmp_path.glob("email/*.eml"))  # nothing was sent


# ------------------------------------------------------------------ logs


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("d-1", "d-1"),
        ("c1\r\nBcc: evil@x", "c1\\x0d\\x0aBcc: evil@x"),
        ("a\\x0d", "a\\\\x0d"),  # an escape in the input cannot pass for ours
        ("ü\u2028\u202e\x85", "ü\\u2028\\u202e\\x85"),
        ("x" * 300, "x" * 200 + "…(+100 chars)"),
        (None, "None"),
    ],
)
def test_for_log_escapes_controls_and_bounds(value: object, expected: str) -> None:
    assert for_log(value) == expected
