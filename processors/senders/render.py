"""Pure payload builders for every channel (contract §6).

Each ``build_*`` takes the Delivery record (its JSON form), the AppSettings record
or the :class:`AppLinks` checked from it (links and sender identities; missing or
refused fields fall back to defaults) and ``now_ms``, and returns plain data that a backend sends as is and the
outbox writes as is. No clock, environment or provider library in here.

Templates are Jinja2, autoescaped for ``.html`` templates only (escaping a text part
would show ``&lt;`` to the reader). A locale override lives in
``<override dir>/<locale>/<name>`` (then ``<lang>/``, then the override dir's root,
then the shipped template), so a team can replace any template per locale.

Record text is made safe where it lands: links are built by
:func:`processors.core.links.expand_link` (http/https only, values percent-encoded);
every header and one-line field (subject, display names, push titles, SMS sender)
goes through :func:`one_line` (controls and separators removed, length bounded); an
email address that cannot be one header address is a :class:`BadAddressError`, never
"cleaned" into another address.
"""

from __future__ import annotations

import base64
import email.policy
import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, getaddresses, parseaddr
from pathlib import Path
from typing import Any, Literal

import jinja2

from processors.core.links import (
    LinkTooLongError,
    expand_link,
    link_origin,
    validate_link_template,
)
from processors.senders.errors import BadAddressError
from processors.senders.tokens import conversation_ref

SHIPPED_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

DEFAULT_APP_URL_TEMPLATE = "http://localhost:8000/conversations/{conversation_id}"
DEFAULT_UNSUBSCRIBE_URL_TEMPLATE = (
    "http://localhost:8000/unsubscribe?conversation={conversation_id}&user={user_id}"
)
DEFAULT_EMAIL_FROM = "Chat Notifications <notifications@chat.example>"
DEFAULT_REPLY_DOMAIN = "reply.chat.example"

PUSH_BODY_MAX_CHARS = 240  # what lock screens show anyway; keeps FCM far below 4 KB
BROWSER_BODY_MAX_CHARS = 1000  # Web Push payload limit is 4 KB after encryption
APNS_COLLAPSE_ID_MAX_BYTES = 64  # APNs limit
WEBPUSH_TOPIC_MAX_CHARS = 32  # RFC 8030 §5.4
SMS_SINGLE_GSM7, SMS_MULTI_GSM7 = 160, 153  # septets per segment (UDH takes 7)
SMS_SINGLE_UCS2, SMS_MULTI_UCS2 = 70, 67  # UTF-16 code units per segment
SUBJECT_MAX_CHARS = 200  # mail clients show ~70; a stable, bounded subject threads fine
NAME_MAX_CHARS = 100  # display names (From, To, sender names in bodies)
PUSH_TITLE_MAX_CHARS = 100  # notification titles: lock screens show far less
SMS_SENDER_MAX_CHARS = 40  # the sender's name must leave room for the text and link
SMS_LINK_MAX_CHARS = 300  # a longer link is replaced by the app's site (segments cost)
EMAIL_ADDRESS_MAX_CHARS = 254  # RFC 5321 path limit


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class AppLinks:
    """The AppSettings fields the senders use, each checked, with defaults for missing ones.

    A field whose value cannot be used safely (a link template refused by
    :func:`~processors.core.links.validate_link_template`, a From that is not one
    mailbox, a reply domain that is not a host name, an SMS sender that is neither a
    number nor an alphanumeric id) falls back to its default and is listed in
    ``fallbacks`` as ``(field, reason)``: the sender counts and logs it, and no
    delivery fails because of a bad setting.
    """

    app_url_template: str = DEFAULT_APP_URL_TEMPLATE
    unsubscribe_url_template: str = DEFAULT_UNSUBSCRIBE_URL_TEMPLATE
    email_from: str = DEFAULT_EMAIL_FROM
    reply_domain: str = DEFAULT_REPLY_DOMAIN
    sms_from: str | None = None
    fallbacks: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_app_settings(cls, app_settings: Mapping[str, Any] | AppLinks | None) -> AppLinks:
        if isinstance(app_settings, AppLinks):
            return app_settings
        checks: dict[str, Any] = {
            "app_url_template": validate_link_template,
            "unsubscribe_url_template": validate_link_template,
            "email_from": _checked_mailbox,
            "reply_domain": _checked_domain,
            "sms_from": _checked_sms_from,
        }
        values: dict[str, Any] = {}
        fallbacks: list[tuple[str, str]] = []
        for name, check in checks.items():
            value = app_settings.get(name) if app_settings else None
            if not value:
                continue
            try:
                values[name] = check(value)
            except ValueError as exc:
                fallbacks.append((name, str(exc)))
        return cls(**values, fallbacks=tuple(fallbacks))

    def conversation_url(self, conversation_id: str, user_id: str) -> str:
        return _link(self.app_url_template, conversation_id, user_id)

    def unsubscribe_url(self, conversation_id: str, user_id: str) -> str:
        return _link(self.unsubscribe_url_template, conversation_id, user_id)

    @property
    def mail_domain(self) -> str:
        """Domain for Message-IDs: the From address's, else the reply domain."""
        address = parseaddr(self.email_from)[1]
        domain = address.rpartition("@")[2]
        return domain if _HOSTNAME.fullmatch(domain) else self.reply_domain


def _link(template: str, conversation_id: str, user_id: str) -> str:
    """The link for one recipient; the template's site when the ids make it too long."""
    try:
        return expand_link(
            template, conversation_id=conversation_id, user_id=user_id, recipient_id=user_id
        )
    except LinkTooLongError:
        return link_origin(template)


# Every character class that must not reach a header or a one-line field: controls
# (C0, DEL, C1, which includes CR and LF), line/paragraph separators, format
# characters such as the bidirectional overrides (they reorder what a reader sees).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
# An addr-spec we are willing to put in a header: one '@', no whitespace, controls,
# quotes or the characters that separate or group addresses.
_ADDRESS_PART = r"[^\s\x00-\x1f\x7f-\x9f<>()\[\],;:\\\"@]+"
_ADDRESS = re.compile(_ADDRESS_PART + "@" + _ADDRESS_PART)
_SMS_FROM = re.compile(r"\+?[0-9]{3,15}|[A-Za-z0-9][A-Za-z0-9 ]{0,10}")
_LOCALE = re.compile(r"[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8}){0,3}")


def one_line(text: object, limit: int) -> str:
    """``text`` as one bounded line: every control, separator and format character
    becomes a space, whitespace runs collapse to one space, and the result is cut to
    ``limit`` characters with an ellipsis. Safe for headers, titles and SMS."""
    raw = str(text)[: limit * 4 + 16]  # never scan more than a bounded prefix
    cleaned = "".join(" " if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in raw)
    return _truncate(" ".join(cleaned.split()), limit)


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) in _UNSAFE_CATEGORIES for c in text)


def _checked_mailbox(value: object) -> str:
    """One ``Name <addr>`` mailbox for From, rebuilt from its parts (name cleaned, bounded)."""
    text = str(value)
    if _has_control(text):
        raise ValueError("email_from contains control characters")
    found = getaddresses([text])
    if len(found) != 1:
        raise ValueError("email_from must be exactly one mailbox")
    name, address = found[0]
    if not _ADDRESS.fullmatch(address) or len(address) > EMAIL_ADDRESS_MAX_CHARS:
        raise ValueError("email_from has no valid address")
    return formataddr((one_line(name, NAME_MAX_CHARS), address))


def _checked_domain(value: object) -> str:
    text = str(value).strip()
    if not _HOSTNAME.fullmatch(text):
        raise ValueError("reply_domain must be a host name")
    return text


def _checked_sms_from(value: object) -> str:
    text = str(value).strip()
    if not _SMS_FROM.fullmatch(text):
        raise ValueError(
            "sms_from must be a phone number (+ and 3 to 15 digits) or an alphanumeric "
            "sender id of at most 11 characters"
        )
    return text


def email_address(delivery: Mapping[str, Any]) -> str:
    """The recipient's address, or :class:`BadAddressError` if it cannot go in a header
    as one address (a CR/LF or a second address in it is refused, never cleaned up:
    cleaning an address would send to someone else)."""
    address = str(delivery.get("email") or "")
    if len(address) > EMAIL_ADDRESS_MAX_CHARS or not _ADDRESS.fullmatch(address):
        raise BadAddressError("email address unusable in a header", address=address)
    return address


def _locale(delivery: Mapping[str, Any]) -> str:
    locale = str(delivery.get("locale") or "en")
    return locale if len(locale) <= 35 and _LOCALE.fullmatch(locale) else "en"


# --------------------------------------------------------------------------- templates


class Templates:
    """A Jinja2 environment over an optional override directory and the shipped templates."""

    def __init__(self, override_dir: Path | None = None) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if override_dir is not None:
            loaders.append(jinja2.FileSystemLoader(str(override_dir)))
        loaders.append(jinja2.FileSystemLoader(str(SHIPPED_TEMPLATES)))
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html", "html.j2"), default_for_string=False, default=False
            ),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )

    def render(self, name: str, locale: str | None, **context: Any) -> str:
        candidates = [name]
        if locale:
            lang = locale.replace("_", "-").split("-")[0]
            candidates = [f"{locale}/{name}", f"{lang}/{name}", name]
        return self.env.select_template(candidates).render(locale=locale or "en", **context)


_DEFAULT_TEMPLATES: Templates | None = None


def default_templates() -> Templates:
    global _DEFAULT_TEMPLATES
    if _DEFAULT_TEMPLATES is None:
        _DEFAULT_TEMPLATES = Templates()
    return _DEFAULT_TEMPLATES


# --------------------------------------------------------------------------- helpers


def _messages(delivery: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(delivery.get("messages") or [])


def _sender_name(message: Mapping[str, Any], limit: int = NAME_MAX_CHARS) -> str:
    name = one_line(message.get("sender_name") or message.get("sender_id") or "", limit)
    return name or "Someone"


def _time_utc(ts_ms: Any) -> str:
    # A time the clock cannot show (year 33658) must not fail the delivery: the
    # message is still worth notifying, just without its time.
    try:
        return datetime.fromtimestamp(int(ts_ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def collapse_id(conversation_id: str) -> str:
    """Per-conversation collapse id (FCM collapse key/tag, apns-collapse-id, Web Push tag).

    The conversation id itself when it is short enough for APNs and made only of
    characters safe in an HTTP header (it is sent as ``apns-collapse-id``), else a
    stable hash.
    """
    if _COLLAPSE_ID.fullmatch(conversation_id):
        return conversation_id
    return "conv-" + _digest("collapse", conversation_id)[:40]


_COLLAPSE_ID = re.compile(rf"[A-Za-z0-9._~:-]{{1,{APNS_COLLAPSE_ID_MAX_BYTES}}}")


def _truncate(text: str, limit: int, ellipsis: str = "…") -> str:
    return text if len(text) <= limit else text[: max(0, limit - len(ellipsis))] + ellipsis


def _summary(
    messages: Sequence[Mapping[str, Any]], name_limit: int = NAME_MAX_CHARS
) -> tuple[str, str, int]:
    """(first sender name, first text, how many more) of a batch."""
    if not messages:
        return "Someone", "", 0
    first = messages[0]
    return _sender_name(first, name_limit), str(first.get("text") or ""), len(messages) - 1


# --------------------------------------------------------------------------- email


@dataclass(frozen=True, slots=True)
class EmailContent:
    to: str
    from_: str
    reply_to: str
    subject: str
    text: str
    html: str
    headers: dict[str, str] = field(default_factory=dict)  # threading, list, auto-submitted

    @property
    def message_id(self) -> str:
        return self.headers["Message-ID"]


def thread_root_id(conversation_id: str, recipient_id: str, domain: str) -> str:
    """The Message-ID every notification of one conversation to one recipient refers to.

    It is never sent as a message of its own; mail clients (Gmail, Apple Mail,
    Thunderbird) thread messages that share a References root, which is what we want.
    """
    return f"<thread.{conversation_ref(conversation_id, recipient_id)}@{domain}>"


def email_message_id(delivery_id: str, domain: str) -> str:
    """Deterministic per delivery: a resend after a crash carries the same Message-ID,
    so receiving clients can collapse the duplicate."""
    return f"<{_digest('delivery', delivery_id)[:32]}@{domain}>"


def build_email(
    delivery: Mapping[str, Any],
    app_settings: Mapping[str, Any] | AppLinks | None,
    token: str,
    now_ms: int,
    *,
    templates: Templates | None = None,
) -> EmailContent:
    """Subject, HTML and text parts and headers of the notification email.

    ``token`` is the reply token (:func:`processors.senders.tokens.make_reply_token`);
    the Reply-To is ``reply+<token>@<reply_domain>``.
    """
    t = templates or default_templates()
    links = AppLinks.from_app_settings(app_settings)
    conversation_id = str(delivery["conversation_id"])
    recipient_id = str(delivery["recipient_id"])
    locale = _locale(delivery)
    to_address = email_address(delivery)
    subject = one_line(delivery.get("subject") or "", SUBJECT_MAX_CHARS) or None
    recipient_name = one_line(delivery.get("recipient_name") or "", NAME_MAX_CHARS)
    url = links.conversation_url(conversation_id, recipient_id)
    unsubscribe_url = links.unsubscribe_url(conversation_id, recipient_id)
    messages = [
        {
            "sender_name": _sender_name(m),
            "text": str(m.get("text") or ""),
            "time": _time_utc(m.get("ts") or 0),
        }
        for m in _messages(delivery)
    ]
    context: dict[str, Any] = {
        "recipient_name": recipient_name or None,
        "subject": subject,
        "messages": messages,
        "count": len(messages),
        "senders": sorted({m["sender_name"] for m in messages}),
        "url": url,
        "unsubscribe_url": unsubscribe_url,
    }
    # a locale override renders the subject: it is cleaned and bounded after rendering
    subject_line = one_line(t.render("email/subject.txt.j2", locale, **context), SUBJECT_MAX_CHARS)
    context["subject_line"] = subject_line
    html = t.render("email/body.html.j2", locale, **context)
    text = t.render("email/body.txt.j2", locale, **context)
    domain = links.mail_domain
    root = thread_root_id(conversation_id, recipient_id, domain)
    headers = {
        "Date": format_datetime(datetime.fromtimestamp(now_ms / 1000, tz=UTC)),
        "Message-ID": email_message_id(str(delivery["delivery_id"]), domain),
        "In-Reply-To": root,
        "References": root,
        # the link is an http(s) URL with every value percent-encoded (core/links),
        # so it holds no '>', space, quote, CR or LF and stays one URL inside <...>
        "List-Unsubscribe": f"<{unsubscribe_url}>",
        # RFC 8058 one-click; mailbox providers require it for bulk senders.
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        # RFC 3834: tells well-behaved responders not to auto-reply into the thread.
        "Auto-Submitted": "auto-generated",
        "X-Auto-Response-Suppress": "All",
    }
    return EmailContent(
        to=formataddr((recipient_name, to_address)),
        from_=links.email_from,
        reply_to=f"reply+{token}@{links.reply_domain}",
        subject=subject_line,
        text=text,
        html=html,
        headers=headers,
    )


def to_mime(content: EmailContent) -> EmailMessage:
    """The multipart/alternative MIME message (text first, HTML preferred)."""
    msg = EmailMessage()
    msg["From"] = content.from_
    msg["To"] = content.to
    msg["Reply-To"] = content.reply_to
    msg["Subject"] = content.subject
    for name, value in content.headers.items():
        msg[name] = value
    msg.set_content(content.text, charset="utf-8")
    msg.add_alternative(content.html, subtype="html", charset="utf-8")
    return msg


def to_mime_bytes(content: EmailContent) -> bytes:
    """The message as wire bytes with CRLF line ends (RFC 5322), as SMTP and SES Raw need:
    smtplib sends bytes unchanged, and a bare-LF message is one over-long SMTP line."""
    return to_mime(content).as_bytes(policy=email.policy.SMTP)


# --------------------------------------------------------------------------- SMS

# GSM 03.38 default alphabet (minus ESC) and its extension table (2 septets each).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

SmsEncoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True, slots=True)
class SegmentCount:
    encoding: SmsEncoding
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def sms_encoding(text: str) -> SmsEncoding:
    return "GSM-7" if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text) else "UCS-2"


def count_sms_segments(text: str) -> SegmentCount:
    """Segments a carrier bills for ``text``.

    GSM-7: 160 septets in one segment, else 153 per segment; extension characters take
    two septets and are never split across segments. UCS-2 (anything outside GSM-7):
    70 code units, else 67 per segment; a surrogate pair is never split.
    """
    encoding = sms_encoding(text)
    if encoding == "GSM-7":
        widths = [2 if c in GSM7_EXTENSION else 1 for c in text]
        single, multi = SMS_SINGLE_GSM7, SMS_MULTI_GSM7
    else:
        widths = [2 if ord(c) > 0xFFFF else 1 for c in text]
        single, multi = SMS_SINGLE_UCS2, SMS_MULTI_UCS2
    units = sum(widths)
    if units <= single:
        return SegmentCount(encoding, units, 1)
    segments, used = 1, 0
    for w in widths:
        if used + w > multi:
            segments, used = segments + 1, 0
        used += w
    return SegmentCount(encoding, units, segments)


@dataclass(frozen=True, slots=True)
class SmsContent:
    to: str
    from_: str | None
    body: str
    encoding: SmsEncoding
    segments: int


def build_sms(
    delivery: Mapping[str, Any],
    app_settings: Mapping[str, Any] | AppLinks | None,
    *,
    max_segments: int,
    from_number: str | None = None,
) -> SmsContent:
    """``"<sender>: <first message> (+N more)\\n<link>"`` in at most ``max_segments``.

    Only the message text is shortened (with an ellipsis of the same encoding), so the
    sender, the "+N more" and the link always survive. ``from_number`` (settings) is
    used when AppSettings has no ``sms_from``.
    """
    links = AppLinks.from_app_settings(app_settings)
    conversation_id = str(delivery["conversation_id"])
    url = links.conversation_url(conversation_id, str(delivery["recipient_id"]))
    if len(url) > SMS_LINK_MAX_CHARS:
        url = link_origin(links.app_url_template)
    sender, text, more = _summary(_messages(delivery), SMS_SENDER_MAX_CHARS)
    text = " ".join(text.split())  # newlines and runs of spaces waste segments
    suffix = (f" (+{more} more)" if more else "") + f"\n{url}"

    def compose(body_text: str) -> str:
        return f"{sender}: {body_text}{suffix}"

    body = compose(text)
    count = count_sms_segments(body)
    if count.segments > max_segments:
        ellipsis = "..." if count.encoding == "GSM-7" else "…"
        lo, hi = 0, len(text)  # longest prefix that fits: binary search on length
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count_sms_segments(compose(text[:mid].rstrip() + ellipsis)).segments <= max_segments:
                lo = mid
            else:
                hi = mid - 1
        body = compose(text[:lo].rstrip() + ellipsis)
        count = count_sms_segments(body)
    return SmsContent(
        to=str(delivery.get("phone") or ""),
        from_=links.sms_from or from_number,
        body=body,
        encoding=count.encoding,
        segments=count.segments,
    )


# --------------------------------------------------------------------------- push


@dataclass(frozen=True, slots=True)
class PushContent:
    tokens: list[str]
    title: str
    body: str
    data: dict[str, str]  # FCM data values must be strings
    collapse_key: str  # android collapse_key and notification tag, apns-collapse-id


def _title_body(delivery: Mapping[str, Any], body_max: int) -> tuple[str, str]:
    sender, text, more = _summary(_messages(delivery))
    subject = delivery.get("subject")
    title = one_line(subject, PUSH_TITLE_MAX_CHARS) if subject else ""
    title = title or _truncate(sender, PUSH_TITLE_MAX_CHARS)
    body = f"{sender}: {text}" if subject else text
    suffix = f" (+{more} more)" if more else ""
    return title, _truncate(" ".join(body.split()), body_max - len(suffix)) + suffix


def build_push(
    delivery: Mapping[str, Any], app_settings: Mapping[str, Any] | AppLinks | None
) -> PushContent:
    """Title/body/data for every push token of the recipient, collapsing per conversation."""
    links = AppLinks.from_app_settings(app_settings)
    conversation_id = str(delivery["conversation_id"])
    title, body = _title_body(delivery, PUSH_BODY_MAX_CHARS)
    return PushContent(
        tokens=[str(t) for t in delivery.get("push_tokens") or []],
        title=title,
        body=body,
        data={
            "conversation_id": conversation_id,
            "delivery_id": str(delivery["delivery_id"]),
            "flush_id": str(delivery.get("flush_id") or ""),
            "url": links.conversation_url(conversation_id, str(delivery["recipient_id"])),
            "count": str(len(_messages(delivery))),
        },
        collapse_key=collapse_id(conversation_id),
    )


# --------------------------------------------------------------------------- browser


@dataclass(frozen=True, slots=True)
class BrowserContent:
    subscriptions: list[dict[str, str]]  # {endpoint, p256dh, auth}
    payload: dict[str, str]  # {title, body, url, tag}: what the service worker shows
    ttl_s: int
    topic: str  # RFC 8030 Topic: the push service replaces an undelivered older one
    urgency: str = "normal"


def build_browser(
    delivery: Mapping[str, Any], app_settings: Mapping[str, Any] | AppLinks | None, *, ttl_s: int
) -> BrowserContent:
    """Web Push payload ``{title, body, url, tag}`` for every subscription, plus TTL."""
    links = AppLinks.from_app_settings(app_settings)
    conversation_id = str(delivery["conversation_id"])
    title, body = _title_body(delivery, BROWSER_BODY_MAX_CHARS)
    tag = collapse_id(conversation_id)
    topic = base64.urlsafe_b64encode(hashlib.sha256(conversation_id.encode()).digest()[:24])
    return BrowserContent(
        subscriptions=[
            {"endpoint": str(s["endpoint"]), "p256dh": str(s["p256dh"]), "auth": str(s["auth"])}
            for s in delivery.get("browser_subscriptions") or []
        ],
        payload={
            "title": title,
            "body": body,
            "url": links.conversation_url(conversation_id, str(delivery["recipient_id"])),
            "tag": tag,
        },
        ttl_s=ttl_s,
        topic=topic.decode()[:WEBPUSH_TOPIC_MAX_CHARS],
    )


__all__ = [
    "AppLinks",
    "BrowserContent",
    "EmailContent",
    "PushContent",
    "SegmentCount",
    "SmsContent",
    "Templates",
    "build_browser",
    "build_email",
    "build_push",
    "build_sms",
    "collapse_id",
    "count_sms_segments",
    "email_message_id",
    "thread_root_id",
    "to_mime",
    "to_mime_bytes",
]
