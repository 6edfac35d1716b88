"""``chat-notifier demo``: demo chat traffic, published to Kafka in real time.

A handful of users in two conversations, round after round: typing bursts that hold a
batch open, a system message (never notifies), a muted participant, a mentions-only
participant, a user whose role is misspelt, a viewer who has the conversation focused
(skipped with VIEWING) and then looks elsewhere (notified). The AppSettings record sets
a short inactivity period (3 s) so the first decisions appear within seconds.

``chat-notifier run`` also answers one of the demo's own notification emails after the
first round (:func:`reply_by_email`): Bob replies, from his mail client so to speak, to
the "Launch plan" email in the outbox, through the SMTP adapter; the reply is posted to
the conversation and notifies the others like any message.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import smtplib
import time
import uuid
from collections.abc import Awaitable, Callable
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from processors import codec
from processors import topics as t
from processors.live.broker import bootstrap_servers
from processors.settings import Settings, load_settings

log = logging.getLogger(__name__)

DEMO_INACTIVITY_S = 3
DEMO_TYPING_TTL_S = 4
ROUND_PAUSE_S = 6.0
REPLIER, REPLIED_SUBJECT = "bob", "Launch plan"  # bob is notified of dan's message there
REPLY_TEXT = "Thanks Dan, I'll read them tonight."
REPLY_WAIT_S = 30.0  # for the notification email to be in the outbox

Sleep = Callable[[float], Awaitable[None]]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _participant(
    uid: str, name: str, notify: str = "All", access: str = "ReadWrite"
) -> dict[str, Any]:
    return {"user_id": uid, "access": access, "notify": notify, "name": name}


def _user(uid: str, name: str, role: str | None, **extra: Any) -> dict[str, Any]:
    user: dict[str, Any] = {
        "user_id": uid,
        "name": name,
        "email": f"{uid}@example.test",
        "phone": None,
        "role": role,
        "locale": "en",
        "push_tokens": [],
        "browser_subscriptions": [],
    }
    user.update(extra)
    return user


def reference_records() -> list[tuple[str, str, dict[str, Any]]]:
    """Settings, roles, users and conversations (the compacted topics)."""
    return [
        (
            t.SETTINGS,
            "app",
            {
                "inactivity_seconds": DEMO_INACTIVITY_S,
                "typing_ttl_seconds": DEMO_TYPING_TTL_S,
                "max_batch_seconds": 60,
                "presence_ttl_seconds": 60,
            },
        ),
        (
            t.ROLES,
            "member",
            {"name": "member", "email": True, "sms": False, "push": True, "browser": True},
        ),
        (
            t.ROLES,
            "support",
            {"name": "support", "email": True, "sms": True, "push": False, "browser": False},
        ),
        (t.USERS, "alice", _user("alice", "Alice", "member", push_tokens=["demo-token-alice"])),
        (t.USERS, "bob", _user("bob", "Bob", "member")),
        (t.USERS, "carol", _user("carol", "Carol", "support", phone="+15550100003")),
        (t.USERS, "dan", _user("dan", "Dan", "Member")),  # misspelt role: UNKNOWN_ROLE, with a hint
        (
            t.USERS,
            "erin",
            _user(
                "erin",
                "Erin",
                "member",
                email=None,
                browser_subscriptions=[
                    {"endpoint": "https://push.example.test/erin", "p256dh": "BNcR", "auth": "tBHI"}
                ],
            ),
        ),
        (
            t.CONVERSATIONS,
            "launch",
            {
                "conversation_id": "launch",
                "subject": "Launch plan",
                "participants": [
                    _participant("alice", "Alice"),
                    _participant("bob", "Bob"),
                    _participant("carol", "Carol", notify="Off"),  # muted
                    _participant("dan", "Dan"),
                ],
            },
        ),
        (
            t.CONVERSATIONS,
            "support",
            {
                "conversation_id": "support",
                "subject": "Customer ticket #42",
                "participants": [
                    _participant("bob", "Bob"),
                    _participant("carol", "Carol", notify="MentionsOnly"),
                    _participant("erin", "Erin", access="Read"),
                ],
            },
        ),
    ]


def _msg(
    cid: str, mid: str, sender: str | None, text: str, mentions: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "message_id": mid,
        "conversation_id": cid,
        "sender_id": sender,
        "type": "UserMessage" if sender else "SystemMessage",
        "text": text,
        "mentions": list(mentions),
        "origin": "web",
    }


def _typing(cid: str, uid: str, on: bool) -> dict[str, Any]:
    return {"conversation_id": cid, "user_id": uid, "typing": on}


def _presence(
    uid: str, online: bool, selected: str | None = None, focused: bool = False
) -> dict[str, Any]:
    return {
        "user_id": uid,
        "session_id": f"{uid}-laptop",
        "online": online,
        "selected_conversation_id": selected,
        "focused": focused,
    }


def round_steps(n: int) -> list[tuple[float, str, str, dict[str, Any]]]:
    """One round of chat: (seconds to wait first, topic, key, value without ts)."""
    r = f"r{n}"
    return [
        # Alice is looking at "launch"; Erin is online in another conversation.
        (0.0, t.PRESENCE, "alice", _presence("alice", True, "launch", True)),
        (0.0, t.PRESENCE, "erin", _presence("erin", True, "launch", False)),
        # Bob types in bursts; the batch stays open while he types.
        (0.5, t.TYPING, "launch", _typing("launch", "bob", True)),
        (1.5, t.MESSAGES, "launch", _msg("launch", f"{r}-b1", "bob", "Are we shipping today?")),
        (0.5, t.TYPING, "launch", _typing("launch", "bob", True)),
        (1.5, t.TYPING, "launch", _typing("launch", "bob", True)),
        (
            1.0,
            t.MESSAGES,
            "launch",
            _msg("launch", f"{r}-b2", "bob", "QA signed off this morning."),
        ),
        (0.2, t.MESSAGES, "launch", _msg("launch", f"{r}-s1", None, "Carol changed the subject")),
        # In "support", Bob asks Carol (mentions-only) directly; Erin can only read.
        (1.0, t.TYPING, "support", _typing("support", "bob", True)),
        (
            1.0,
            t.MESSAGES,
            "support",
            _msg("support", f"{r}-t1", "bob", "@carol can you call the customer?", ("carol",)),
        ),
        # Alice switches to "support": now "launch" messages reach her.
        (4.0, t.PRESENCE, "alice", _presence("alice", True, "support", True)),
        (0.5, t.MESSAGES, "launch", _msg("launch", f"{r}-d1", "dan", "Release notes are ready.")),
        (1.0, t.TYPING, "support", _typing("support", "carol", True)),
        (1.5, t.TYPING, "support", _typing("support", "carol", False)),
        (0.2, t.MESSAGES, "support", _msg("support", f"{r}-c1", "carol", "Calling them now.")),
        # Alice goes offline at the end of the round.
        (4.0, t.PRESENCE, "alice", _presence("alice", False)),
    ]


async def run_demo(
    settings: Settings,
    *,
    rounds: int | None = None,
    sleep: Sleep = asyncio.sleep,
    on_publish: Callable[[str, str, dict[str, Any]], None] | None = None,
    after_round: Callable[[int], Awaitable[None]] | None = None,
    confluent: bool = False,
) -> int:
    """Publish the reference data, then ``rounds`` rounds (forever if None); count records.

    ``after_round(n)`` runs after round ``n`` and its pause (the embedded run replies by
    email there). ``confluent``: values in the Confluent wire format, each schema
    registered first under ``<topic>-value`` with ``SCHEMA_REGISTRY_URL`` (raises
    :class:`processors.registry.RegistryError` before anything is published if it cannot
    be); otherwise Avro single-object."""
    from aiokafka import AIOKafkaProducer

    from processors import registry

    prefix = settings.topic_prefix
    schemas = registry.registry_for(settings) if confluent else None
    if confluent and schemas is None:
        raise registry.RegistryError("--confluent needs SCHEMA_REGISTRY_URL (the registry)")
    if schemas is not None:
        used = {t.SETTINGS, t.ROLES, t.USERS, t.CONVERSATIONS, t.MESSAGES, t.TYPING, t.PRESENCE}
        for topic in sorted(used):  # once each, before the first record (fails early)
            schemas.schema_id(prefix + topic, t.TOPICS[topic].record or "")

    def encode(topic: str, record: dict[str, Any]) -> bytes:
        name = t.TOPICS[topic].record or ""
        if schemas is not None:
            return schemas.encode(prefix + topic, name, record)
        return codec.encode(name, record)

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(settings), linger_ms=5)
    await producer.start()
    sent = 0

    async def publish(topic: str, key: str, value: dict[str, Any]) -> None:
        nonlocal sent
        record = {**value, "ts": now_ms()}
        await producer.send_and_wait(prefix + topic, encode(topic, record), key=key.encode())
        sent += 1
        if on_publish is not None:
            on_publish(topic, key, record)

    try:
        for topic, key, value in reference_records():
            await publish(topic, key, value)
        await sleep(1.0)  # let the worker apply settings and reference data first
        n = 0
        while rounds is None or n < rounds:
            n += 1
            for delay, topic, key, value in round_steps(n):
                if delay:
                    await sleep(delay)
                await publish(topic, key, value)
            await sleep(ROUND_PAUSE_S)
            if after_round is not None:
                await after_round(n)
    finally:
        await producer.stop()
    return sent


def _notification_for(outbox: Path, address: str, subject: str) -> bytes | None:
    """The newest notification email in ``outbox``/email to ``address`` about ``subject``."""
    found: list[tuple[float, bytes]] = []
    for path in (outbox / "email").glob("*.eml"):
        try:
            raw = path.read_bytes()
            stamp = path.stat().st_mtime
        except OSError:
            continue  # replaced while we looked
        msg = message_from_bytes(raw, policy=policy.default)
        if address in str(msg.get("To", "")) and msg.get("Subject") == subject:
            found.append((stamp, raw))
    return max(found)[1] if found else None


async def reply_by_email(
    settings: Settings, smtp_port: int, *, out: Callable[[str], None] = print
) -> bool:
    """Bob answers his newest "Launch plan" notification email through ``inbound-smtp``.

    The reply quotes the notification as a mail client does; only the new line is
    posted. Never raises: a demo that cannot reply says so in one line and goes on.
    """
    from processors.reply.mailclient import quoted_reply

    address = f"{REPLIER}@example.test"
    deadline = time.monotonic() + REPLY_WAIT_S
    original = _notification_for(settings.outbox_dir, address, REPLIED_SUBJECT)
    while original is None and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        original = _notification_for(settings.outbox_dir, address, REPLIED_SUBJECT)
    if original is None:
        out(f"(demo reply by email skipped: no {REPLIED_SUBJECT!r} email to {REPLIER} yet)")
        return False
    raw = quoted_reply(
        original,
        REPLY_TEXT,
        from_=f"{REPLIER.title()} <{address}>",
        message_id=f"<demo-{uuid.uuid4().hex}@example.test>",
    )
    to = str(message_from_bytes(original, policy=policy.default).get("Reply-To", ""))
    host = settings.inbound.smtp_host

    def send() -> None:
        for attempt in range(20):  # the adapter may still be starting
            try:
                with smtplib.SMTP(host, smtp_port, timeout=10) as client:
                    client.sendmail(address, [to], raw)
                return
            except (ConnectionRefusedError, smtplib.SMTPServerDisconnected):
                if attempt == 19:
                    raise
                time.sleep(0.5)

    try:
        await asyncio.to_thread(send)
    except (OSError, smtplib.SMTPException) as exc:
        out(f"(demo reply by email not sent: {type(exc).__name__})")
        return False
    clock = time.strftime("%H:%M:%S")
    out(f"{clock}  {'launch':<8} {REPLIER:<6} replies by email (inbound-smtp): {REPLY_TEXT!r}")
    return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, help="stop after N rounds (default: forever)")
    parser.add_argument(
        "--confluent",
        action="store_true",
        help="write the Confluent wire format, registering each schema under "
        "<topic>-value with SCHEMA_REGISTRY_URL (default: Avro single-object)",
    )


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    if not settings.kafka_broker_url:
        print("chat-notifier demo: KAFKA_BROKER_URL is not set (`chat-notifier run` embeds one)")
        return 2
    if args.confluent and not settings.schema_registry_url:
        print("chat-notifier demo: --confluent needs SCHEMA_REGISTRY_URL (the schema registry)")
        return 2
    logging.basicConfig(level=settings.log_level.upper())
    from processors.registry import RegistryError

    try:
        sent = asyncio.run(run_demo(settings, rounds=args.rounds, confluent=args.confluent))
    except KeyboardInterrupt:
        return 130
    except RegistryError as exc:
        print(f"chat-notifier demo: {exc}")
        return 3
    print(f"published {sent} records")
    return 0
