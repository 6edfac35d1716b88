"""``chat-notifier reply`` on the real broker: email.inbound -> chat.messages + audits."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from processors import topics as t
from processors.reply.parse import mail_id
from tests.live.conftest import consume, produce
from tests.reply.conftest import Proc, start_reply_agent
from tests.reply.mails import REPLY_DOMAIN, mail, reply_address

pytestmark = pytest.mark.broker

QUOTED_REPLY = (
    "Sounds good, see you at 5.\n\n"
    "On Mon, Jan 8, 2024 at 10:02 AM Chat Notifications <notifications@chat.example> wrote:\n"
    "> Alice: Are we still on for today?\n"
)


def test_reply_posts_once_and_audits_every_mail(
    reply_env: dict[str, Any], procs: Callable[..., Proc]
) -> None:
    agent = start_reply_agent(procs, reply_env)
    now = int(time.time() * 1000)  # the agent runs on the real clock
    good = mail(
        QUOTED_REPLY, to=reply_address(now_ms=now), message_id="<broker-1@mail.example.org>"
    )
    forged = mail(to=f"reply+k1-{'a' * 40}@{REPLY_DOMAIN}", message_id="<forged@x>")
    carol = mail(
        to=reply_address(user_id="carol", now_ms=now),
        from_="carol@example.org",
        message_id="<ro@x>",
    )
    bs, prefix = reply_env["bootstrap"], reply_env["prefix"]
    produce(
        bs,
        prefix,
        [(t.EMAIL_INBOUND, mail_id(m), m) for m in (good, good, forged, carol, b"\x00garbage")],
    )
    audits = consume(bs, prefix, t.INBOUND_AUDIT, until=lambda v: len(v) >= 5)
    assert [a["reason"] for a in audits] == [
        "ACCEPTED",
        "DUPLICATE",
        "FORGED_TOKEN",
        "READ_ONLY",
        "MALFORMED",
    ]
    messages = consume(bs, prefix, t.MESSAGES, until=lambda v: len(v) >= 1, timeout=3)
    assert len(messages) == 1
    (posted,) = messages
    assert posted["text"] == "Sounds good, see you at 5."
    assert (posted["conversation_id"], posted["sender_id"], posted["origin"]) == (
        "c1",
        "bob",
        "email",
    )
    assert posted["message_id"] == audits[0]["message_id"]
    assert agent.alive()
    assert "Sounds good" not in agent.log() and "bob@" not in agent.log().lower()


def test_dedupe_survives_a_restart_of_the_reply_agent(
    reply_env: dict[str, Any], procs: Callable[..., Proc]
) -> None:
    """The posted table is changelogged: a mail delivered again after the agent restarts
    (an MTA retry, a second adapter) is a DUPLICATE, and nothing is posted twice."""
    bs, prefix = reply_env["bootstrap"], reply_env["prefix"]
    agent = start_reply_agent(procs, reply_env)
    good = mail(
        QUOTED_REPLY,
        to=reply_address(now_ms=int(time.time() * 1000)),
        message_id="<restart-1@mail.example.org>",
    )
    produce(bs, prefix, [(t.EMAIL_INBOUND, mail_id(good), good)])
    first = consume(bs, prefix, t.INBOUND_AUDIT, until=lambda v: len(v) >= 1)
    assert [a["reason"] for a in first] == ["ACCEPTED"]
    agent.stop()
    assert agent.proc.returncode is not None

    again = start_reply_agent(procs, reply_env)  # same app id: same group, same changelog
    produce(bs, prefix, [(t.EMAIL_INBOUND, mail_id(good), good)])
    audits = consume(bs, prefix, t.INBOUND_AUDIT, until=lambda v: len(v) >= 2)
    # (the first mail may be read again if its offset was not committed before the stop:
    # then it too is a DUPLICATE; either way every audit after the first says so)
    assert [a["reason"] for a in audits][0] == "ACCEPTED"
    assert {a["reason"] for a in audits[1:]} == {"DUPLICATE"}
    assert all(a["mail_id"] == "restart-1@mail.example.org" for a in audits)
    messages = consume(bs, prefix, t.MESSAGES, until=lambda v: len(v) >= 2, timeout=3)
    assert len(messages) == 1
    assert again.alive()
