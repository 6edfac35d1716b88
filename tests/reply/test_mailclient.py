"""The reply builder the demo and the end-to-end tests use: a reply to a real rendered
notification email, quoting it as Gmail does, is accepted with exactly the new text."""

from __future__ import annotations

from email import message_from_bytes, policy

from processors.reply.mailclient import quote, quoted_reply
from processors.reply.parse import decide_reply
from processors.senders.render import build_email, to_mime_bytes
from tests.reply.mails import KEYS, NOW_MS, context, token
from tests.senders.factories import make_delivery

REPLY = "Friday works for me.\nI'll bring the slides."


def _notification() -> bytes:
    delivery = make_delivery(
        "email",
        n=2,
        conversation_id="c1",
        recipient_id="bob",
        texts=["Can we move the review?", "Friday or Monday?"],
    )
    content = build_email(delivery, None, token("c1", "bob", keys=KEYS), NOW_MS - 60_000)
    return to_mime_bytes(content)


def test_reply_threads_quotes_and_is_accepted_with_only_the_new_text() -> None:
    original = _notification()
    raw = quoted_reply(
        original, REPLY, from_="Bob <bob@example.org>", message_id="<r-1@mail.example.org>"
    )
    notification = message_from_bytes(original, policy=policy.default)
    reply = message_from_bytes(raw, policy=policy.default)
    assert reply["To"] == notification["Reply-To"]
    assert reply["To"].startswith("reply+")
    assert reply["In-Reply-To"] == notification["Message-ID"]
    assert reply["References"].split() == [notification["References"], notification["Message-ID"]]
    assert reply["Subject"] == "Re: " + notification["Subject"]
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only, as sent over SMTP
    body = reply.get_content().replace("\r\n", "\n")
    assert body.startswith(REPLY + "\n\nOn ")
    assert " wrote:\n> Hi Bob,\n>\n" in body and "> Friday or Monday?" in body

    decision = decide_reply(raw, context())
    assert decision.reason == "ACCEPTED", decision
    assert decision.message is not None and decision.message["text"] == REPLY
    assert (decision.conversation_id, decision.user_id) == ("c1", "bob")


def test_quote_marks_every_line() -> None:
    assert quote("a\n\nb") == "> a\n>\n> b"
