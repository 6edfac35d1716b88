"""The reply decision on bad and hostile input (issue 9, item 4), pure: one reason each,
nothing posted; and what an accepted reply posts."""

from __future__ import annotations

from typing import Any

import pytest

from processors.reply.parse import (
    MAX_MAIL_BYTES,
    decide_reply,
    mail_id,
    reply_message_id,
)
from processors.reply.reasons import REASONS
from processors.senders.render import thread_root_id
from processors.senders.tokens import conversation_ref
from tests.reply.mails import (
    CONVERSATIONS,
    NOW_MS,
    OLD_KEYS,
    REPLY_DOMAIN,
    USERS,
    context,
    mail,
    multipart,
    participant,
    reply_address,
    token,
)


def test_accepted_reply_is_a_message_event_from_the_token_user() -> None:
    raw = mail("On it.", thread=thread_root_id("c1", "bob", "chat.example"))
    decision = decide_reply(raw, context())
    assert decision.reason == "ACCEPTED"
    assert decision.message == {
        "message_id": reply_message_id("CAF1-reply-1@mail.example.org"),
        "conversation_id": "c1",
        "sender_id": "bob",
        "type": "UserMessage",
        "text": "On it.",
        "mentions": [],
        "origin": "email",
        "ts": NOW_MS,
    }
    audit = decision.audit(NOW_MS)
    assert audit["reason"] == "ACCEPTED" and audit["message_id"] == decision.message["message_id"]
    assert audit["mail_id"] == "CAF1-reply-1@mail.example.org"
    assert "bob@" not in str(audit).lower() and "On it" not in str(audit)


def test_message_id_is_deterministic_and_differs_per_mail() -> None:
    a = decide_reply(mail(message_id="<a@x>"), context())
    b = decide_reply(mail(message_id="<a@x>"), context())
    c = decide_reply(mail(message_id="<b@x>"), context())
    assert a.message and b.message and c.message
    assert a.message["message_id"] == b.message["message_id"] != c.message["message_id"]


def test_without_message_id_the_key_is_a_digest_that_ignores_trace_headers() -> None:
    raw = mail(message_id=None)
    traced = b"X-Original-To: " + reply_address().encode() + b"\r\n" + raw
    assert mail_id(raw).startswith("sha256:")
    assert mail_id(raw) == mail_id(traced)
    assert mail_id(raw) != mail_id(mail("Other text", message_id=None))


def test_reference_mode_token_resolves_through_the_lookup() -> None:
    long_c = "conversation-" + "9" * 36
    convs = {long_c: {**CONVERSATIONS["c1"], "conversation_id": long_c}}
    ref = {conversation_ref(long_c, "bob"): (long_c, "bob")}
    raw = mail(to=reply_address(long_c))
    assert decide_reply(raw, context(conversations=convs, resolve=ref.get)).reason == "ACCEPTED"
    assert decide_reply(raw, context(conversations=convs)).reason == "FORGED_TOKEN"


def test_token_found_in_trace_headers_and_envelope_when_to_has_none() -> None:
    hidden = mail(to="undisclosed-recipients:;", headers=[f"Delivered-To: {reply_address()}"])
    assert decide_reply(hidden, context()).reason == "ACCEPTED"
    bare = mail(to="team@example.org")
    assert decide_reply(bare, context()).reason == "NO_TOKEN"
    assert decide_reply(bare, context(), envelope_recipients=[reply_address()]).reason == "ACCEPTED"


def test_token_signed_by_an_old_key_still_verifies_after_rotation() -> None:
    old = f"reply+{token(keys=OLD_KEYS)}@{REPLY_DOMAIN}"
    assert decide_reply(mail(to=old), context()).reason == "ACCEPTED"


def _tampered() -> str:
    t = token()
    kid, _, body = t.partition("-")
    flipped = body[:10] + ("a" if body[10] != "a" else "b") + body[11:]
    return f"reply+{kid}-{flipped}@{REPLY_DOMAIN}"


BAD: list[tuple[str, bytes, dict[str, Any], str]] = [
    ("forged", mail(to=f"reply+k1-{'a' * 40}@{REPLY_DOMAIN}"), {}, "FORGED_TOKEN"),
    (
        "unknown-key",
        mail(to=f"reply+k9-{token().partition('-')[2]}@{REPLY_DOMAIN}"),
        {},
        "FORGED_TOKEN",
    ),
    ("tampered-local-part", mail(to=_tampered()), {}, "FORGED_TOKEN"),
    ("expired", mail(to=reply_address(now_ms=NOW_MS - 31 * 86_400_000)), {}, "EXPIRED_TOKEN"),
    ("other-domain", mail(to=f"reply+{token()}@evil.example"), {}, "NO_TOKEN"),
    (
        "token-for-another-conversation",
        mail(to=reply_address("c2"), thread=thread_root_id("c1", "bob", "chat.example")),
        {},
        "WRONG_CONVERSATION",
    ),
    (
        "removed-from-conversation",
        mail(),
        {"conversations": {"c1": {**CONVERSATIONS["c1"], "participants": [participant("alice")]}}},
        "NOT_PARTICIPANT",
    ),
    ("unknown-conversation", mail(), {"conversations": {}}, "UNKNOWN_CONVERSATION"),
    (
        "read-only",
        mail(to=reply_address(user_id="carol"), from_="carol@example.org"),
        {},
        "READ_ONLY",
    ),
    ("same-mail-twice", mail(), {"seen": ["CAF1-reply-1@mail.example.org"]}, "DUPLICATE"),
    ("too-large", mail("x" * (MAX_MAIL_BYTES + 1)), {}, "TOO_LARGE"),
    ("malformed-no-headers", b"\x00\x01 this is not a mail at all", {}, "MALFORMED"),
    ("malformed-two-froms", mail(from_="a@example.org, bob@example.org"), {}, "MALFORMED"),
    (
        "no-text-part",
        multipart(None, attachments=[("a.pdf", "application/pdf", b"%PDF")]),
        {},
        "NO_TEXT",
    ),
    ("only-quote", mail("On Mon, Jan 8, 2024 at 10:02 AM X wrote:\n> old\n"), {}, "NO_TEXT"),
    ("from-mismatch", mail(from_="Mallory <mallory@example.net>"), {}, "FROM_MISMATCH"),
    ("from-unknown-user", mail(), {"users": {}}, "FROM_MISMATCH"),
    ("auto-submitted", mail(headers=["Auto-Submitted: auto-replied"]), {}, "AUTO_REPLY"),
    ("precedence-bulk", mail(headers=["Precedence: bulk"]), {}, "AUTO_REPLY"),
    ("precedence-auto-reply", mail(headers=["Precedence: auto_reply"]), {}, "AUTO_REPLY"),
    ("x-autoreply", mail(headers=["X-Autoreply: yes"]), {}, "AUTO_REPLY"),
    ("x-autorespond", mail(headers=["X-Autorespond: Out of office"]), {}, "AUTO_REPLY"),
    ("mailer-daemon", mail(from_="MAILER-DAEMON@mx.example.org"), {}, "BOUNCE"),
    ("postmaster", mail(from_="postmaster@example.org"), {}, "BOUNCE"),
    ("null-return-path", mail(headers=["Return-Path: <>"]), {}, "BOUNCE"),
    ("own-from", mail(from_="Chat <notifications@chat.example>"), {}, "OWN_MAIL"),
    ("from-reply-domain", mail(from_=reply_address()), {}, "OWN_MAIL"),
]


@pytest.mark.parametrize(("raw", "ctx", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_has_a_precise_reason_and_posts_nothing(
    raw: bytes, ctx: dict[str, Any], reason: str
) -> None:
    decision = decide_reply(raw, context(**ctx))
    assert decision.reason == reason, decision
    assert decision.message is None
    assert decision.reason in REASONS
    assert decision.mail_id


def test_auto_submitted_no_is_a_person() -> None:
    assert decide_reply(mail(headers=["Auto-Submitted: no"]), context()).reason == "ACCEPTED"


def test_delivery_status_notification_is_a_bounce() -> None:
    dsn = (
        "From: Mail Delivery System <bounces@mx.example.org>\r\n"
        f"To: {reply_address()}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\nFinal-Recipient: rfc822; x@example.org\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\n--b--\r\n"
    ).encode()
    decision = decide_reply(dsn, context())
    assert (decision.reason, decision.detail) == ("BOUNCE", "multipart/report")
    inner = dsn.replace(b"multipart/report; report-type=delivery-status", b"multipart/mixed")
    assert decide_reply(inner, context()).detail == "delivery-status part"


def test_from_compare_ignores_case_and_display_name() -> None:
    assert USERS["bob"]["email"] == "Bob@Example.org"
    raw = mail(from_='"Bob B." <BOB@example.ORG>')
    assert decide_reply(raw, context()).reason == "ACCEPTED"


def test_garbage_never_raises() -> None:
    for raw in (b"", b"\r\n\r\n", b"From:\r\n\r\n", b"From: <>\r\n\r\nx", bytes(range(256)) * 4):
        assert decide_reply(raw, context()).reason == "MALFORMED"


def test_audit_reasons_are_the_codecs_and_every_audit_encodes() -> None:
    from processors import codec

    assert codec.ALLOWED_VALUES[("InboundAudit", "reason")] == REASONS
    for _name, raw, ctx, _reason in BAD:
        audit = decide_reply(raw, context(**ctx)).audit(NOW_MS)
        assert codec.decode("InboundAudit", codec.encode("InboundAudit", audit)) == audit


def test_every_audit_reason_has_words_and_a_readme_row() -> None:
    """explain words each reason from AUDIT_WHY; the README's table lists the same set."""
    from pathlib import Path

    from processors.reply.parse import AUDIT_WHY

    assert tuple(AUDIT_WHY) == REASONS
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Reply by email", 1)[1].split("\n## ", 1)[0]
    cells = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("|")]
    assert sorted(c.strip("`") for c in cells if c.startswith("`")) == sorted(REASONS)
