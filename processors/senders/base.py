"""The ``Sender`` protocol and the backend registry.

A backend is one module ``<channel>_<provider>.py`` with one class implementing
:class:`Sender`. The service builds the payload with the pure builders in
:mod:`processors.senders.render` and hands it to ``send``; the backend only talks to
its provider and translates failures into :mod:`processors.senders.errors`.

Backends resolve by name from settings (``EMAIL__BACKEND=ses``); the module is
imported only when chosen, so the outbox default never imports boto3, twilio,
firebase_admin or pywebpush.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from processors.senders.render import BrowserContent, EmailContent, PushContent, SmsContent
from processors.settings import Settings

Content = EmailContent | SmsContent | PushContent | BrowserContent


@runtime_checkable
class Sender(Protocol):
    """One provider for one channel.

    ``send`` delivers ``content`` (built from ``delivery``) and returns the provider's
    id for it. It raises only :class:`~processors.senders.errors.SendError`
    subclasses: ``TransientError``, ``PermanentError``, ``BadAddressError`` or, for
    multi-address content (push tokens, browser subscriptions),
    ``PartialSendError``. Blocking client libraries run in ``asyncio.to_thread``.
    Error messages must not contain addresses or message text (they are logged).
    """

    channel: str
    name: str

    async def send(self, delivery: Mapping[str, Any], content: Any) -> str: ...

    async def close(self) -> None: ...


# channel -> backend name -> "module:Class"
BACKENDS: dict[str, dict[str, str]] = {
    "email": {
        "outbox": "processors.senders.outbox:OutboxSender",
        "ses": "processors.senders.email_ses:SesEmailSender",
        "smtp": "processors.senders.email_smtp:SmtpEmailSender",
    },
    "sms": {
        "outbox": "processors.senders.outbox:OutboxSender",
        "twilio": "processors.senders.sms_twilio:TwilioSmsSender",
    },
    "push": {
        "outbox": "processors.senders.outbox:OutboxSender",
        "fcm": "processors.senders.push_fcm:FcmPushSender",
    },
    "browser": {
        "outbox": "processors.senders.outbox:OutboxSender",
        "webpush": "processors.senders.browser_webpush:WebPushBrowserSender",
    },
}


def backend_name(channel: str, settings: Settings) -> str:
    backends: dict[str, str] = {
        "email": settings.email.backend,
        "sms": settings.sms.backend,
        "push": settings.push.backend,
        "browser": settings.browser.backend,
    }
    return backends[channel]


def create_sender(channel: str, settings: Settings, name: str | None = None) -> Sender:
    """Instantiate the configured (or named) backend for ``channel``.

    Each backend class has ``from_settings(settings, channel)``, which validates its
    credentials at start (a misconfigured backend fails the worker early, not the
    first delivery).
    """
    chosen = name or backend_name(channel, settings)
    try:
        target = BACKENDS[channel][chosen]
    except KeyError:
        raise ValueError(f"no {chosen!r} backend for channel {channel!r}") from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    sender: Sender = cls.from_settings(settings, channel)
    return sender


def create_senders(settings: Settings, channels: Iterable[str]) -> dict[str, Sender]:
    return {channel: create_sender(channel, settings) for channel in channels}
