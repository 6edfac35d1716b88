"""Reply mails as mail clients write them, built byte by byte (charsets, transfer
encodings and quote headers exactly as sent), and the state the reply decision reads."""

from __future__ import annotations

import base64
import quopri
from collections.abc import Iterable, Mapping
from email.message import EmailMessage
from typing import Any

from processors.reply.parse import ReplyContext
from processors.senders.tokens import ReplyKeys, make_reply_token

NOW_MS = 1_704_708_300_000  # 2024-01-08 10:05 UTC
REPLY_DOMAIN = "reply.chat.example"
KEYS = ReplyKeys.parse(["k2:second-reply-key-0123456789", "k1:first-reply-key-0123456789"])
OLD_KEYS = ReplyKeys.parse(["k1:first-reply-key-0123456789"])
BOB = "bob@example.org"

USERS: dict[str, dict[str, Any]] = {
    "alice": {"user_id": "alice", "name": "Alice", "email": "alice@example.org"},
    "bob": {"user_id": "bob", "name": "Bob", "email": "Bob@Example.org"},
    "carol": {"user_id": "carol", "name": "Carol", "email": "carol@example.org"},
    "dave": {"user_id": "dave", "name": "Dave", "email": "dave@example.org"},
}


def participant(user_id: str, access: str = "ReadWrite") -> dict[str, Any]:
    return {"user_id": user_id, "access": access, "notify": "All", "name": None}


CONVERSATIONS: dict[str, dict[str, Any]] = {
    "c1": {
        "conversation_id": "c1",
        "subject": "Budget",
        "participants": [participant("alice"), participant("bob"), participant("carol", "Read")],
        "ts": NOW_MS - 60_000,
    },
    "c2": {
        "conversation_id": "c2",
        "subject": "Hiring",
        "participants": [participant("alice"), participant("bob")],
        "ts": NOW_MS - 60_000,
    },
}


def token(conversation_id: str = "c1", user_id: str = "bob", **kw: Any) -> str:
    kw.setdefault("keys", KEYS)
    kw.setdefault("now_ms", NOW_MS - 3_600_000)
    kw.setdefault("ttl_s", 30 * 86_400)
    return make_reply_token(conversation_id, user_id, **kw)


def reply_address(conversation_id: str = "c1", user_id: str = "bob", **kw: Any) -> str:
    return f"reply+{token(conversation_id, user_id, **kw)}@{REPLY_DOMAIN}"


def context(
    *,
    conversations: Mapping[str, Mapping[str, Any]] = CONVERSATIONS,
    users: Mapping[str, Mapping[str, Any]] = USERS,
    seen: Iterable[str] = (),
    **kw: Any,
) -> ReplyContext:
    posted = set(seen)
    kw.setdefault("keys", KEYS)
    kw.setdefault("now_ms", NOW_MS)
    kw.setdefault("reply_domains", frozenset({REPLY_DOMAIN}))
    kw.setdefault("own_addresses", frozenset({"notifications@chat.example"}))
    return ReplyContext(
        conversation=conversations.get,
        user=users.get,
        seen=posted.__contains__,
        **kw,
    )


def mail(
    body: str | bytes = "Sounds good.",
    *,
    to: str | None = None,
    from_: str = f"Bob <{BOB}>",
    charset: str = "utf-8",
    subtype: str = "plain",
    cte: str = "8bit",
    headers: Iterable[str] = (),
    message_id: str | None = "<CAF1-reply-1@mail.example.org>",
    thread: str | None = None,
) -> bytes:
    """A single-part reply; ``body`` (str) is encoded in ``charset`` then ``cte``."""
    data = body.encode(charset) if isinstance(body, str) else body
    if cte == "quoted-printable":
        data = quopri.encodestring(data)
    elif cte == "base64":
        data = base64.encodebytes(data)
    head = [
        f"From: {from_}",
        f"To: {to or reply_address()}",
        "Subject: Re: New message in Budget",
        "Date: Mon, 08 Jan 2024 10:05:00 +0000",
    ]
    if message_id:
        head.append(f"Message-ID: {message_id}")
    if thread:
        head += [f"In-Reply-To: {thread}", f"References: {thread}"]
    head += [
        "MIME-Version: 1.0",
        f"Content-Type: text/{subtype}; charset={charset}",
        f"Content-Transfer-Encoding: {cte}",
        *headers,
    ]
    return (
        "\r\n".join(head).encode()
        + b"\r\n\r\n"
        + data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    )


def multipart(
    text: str | None,
    html: str | None = None,
    *,
    attachments: Iterable[tuple[str, str, bytes]] = (),
    to: str | None = None,
    from_: str = f"Bob <{BOB}>",
    message_id: str = "<CAF1-multi-1@mail.example.org>",
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """multipart/alternative (and mixed with attachments), as Gmail and Apple Mail send."""
    msg = EmailMessage()
    msg["From"] = from_
    msg["To"] = to or reply_address()
    msg["Subject"] = "Re: New message in Budget"
    msg["Date"] = "Mon, 08 Jan 2024 10:05:00 +0000"
    msg["Message-ID"] = message_id
    for name, value in (headers or {}).items():
        msg[name] = value
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    for filename, ctype, data in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()
