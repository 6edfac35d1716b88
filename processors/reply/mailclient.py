"""A reply to a notification email, written the way mail clients write one.

Used by the demo (``chat-notifier run`` answers one of its own notification emails) and
by the end-to-end tests: To is the notification's Reply-To, In-Reply-To its Message-ID,
References its References plus its Message-ID (RFC 5322 §3.6.4), the subject gets one
``Re:``, and the new text sits on top of the original text part quoted Gmail-style (an
``On <date>, <from> wrote:`` line, then every original line behind ``>``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime, parsedate_to_datetime


def quoted_reply(
    original: bytes,
    text: str,
    *,
    from_: str,
    message_id: str,
    date: datetime | None = None,
) -> bytes:
    """The raw MIME of a reply to ``original`` (a notification email) saying ``text``."""
    msg = message_from_bytes(original, policy=policy.default)
    reply = EmailMessage()
    reply["From"] = from_
    reply["To"] = str(msg.get("Reply-To") or msg.get("From") or "")
    subject = str(msg.get("Subject") or "")
    reply["Subject"] = subject if subject[:3].lower() == "re:" else f"Re: {subject}"
    reply["Date"] = format_datetime(date or datetime.now(UTC))
    reply["Message-ID"] = message_id
    original_id = str(msg.get("Message-ID") or "").strip()
    if original_id:
        reply["In-Reply-To"] = original_id
        references = str(msg.get("References") or "").split()
        reply["References"] = " ".join([*references, original_id])
    body = msg.get_body(("plain",))
    quoted = body.get_content() if isinstance(body, EmailMessage) else ""
    reply.set_content(f"{text}\n\n{_attribution(msg)}\n{quote(quoted)}\n")
    return reply.as_bytes(policy=policy.SMTP)  # CRLF line ends, as on the wire


def quote(text: str) -> str:
    """``text`` behind ``> `` (an empty line becomes ``>``, as Gmail writes it)."""
    return "\n".join(">" + (" " + line if line else "") for line in text.splitlines())


def _attribution(msg: EmailMessage) -> str:
    sender = str(msg.get("From") or "")
    try:
        when = parsedate_to_datetime(str(msg.get("Date")))
    except (TypeError, ValueError):
        return f"{sender} wrote:"
    hour = when.hour % 12 or 12
    moment = f"{when:%a}, {when:%b} {when.day}, {when.year} at {hour}:{when:%M} {when:%p}"
    return f"On {moment} {sender} wrote:"
