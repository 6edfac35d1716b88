"""Issue 9, end to end on the real local broker, once per inbound adapter.

One stack for the module (started once, shared by the three cases): ``chat-notifier
worker`` (inactivity 1 s), ``chat-notifier senders`` (email through the SES backend
against moto in server mode, the other channels to the outbox), ``chat-notifier reply``
and the three adapters. Each case publishes its own conversation (alice, bob, carol) and
a message from alice; takes bob's notification email from the SES stand-in
(``/moto-api/data.json``, the raw MIME as sent); builds the reply a mail client would
(:mod:`processors.reply.mailclient`: To = Reply-To, In-Reply-To/References, ``Re:``, the
original quoted below ``On … wrote:``); sends it through the adapter; and checks that the
reply lands on ``chat.messages`` (origin email, exactly the new text), that alice and
carol are notified of it (decision and an email through SES carrying the text) and that
bob is not (OWN_MESSAGES), and that ``chat-notifier explain --mail`` shows the audit.
"""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest

from processors import topics as t
from processors.reply.mailclient import quoted_reply
from processors.reply.parse import reply_message_id
from tests.live.conftest import TEST_FAUST, consume, produce
from tests.reply.conftest import ROOT, Proc, base_env
from tests.senders.conftest import moto_endpoint  # noqa: F401 - fixture
from tests.senders.standins import free_port

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

SECRET = "e2e-inbound-secret-0123456789"
BUCKET, QUEUE = "inbound-mail", "inbound-notices"
FROM_IDENTITY = "notifications@chat.example"
USERS = ("alice", "bob", "carol")


@dataclass
class Stack:
    bootstrap: str
    prefix: str
    moto: str
    smtp_port: int
    http_port: int
    queue_url: str
    env: dict[str, str]
    procs: list[Proc]

    def aws(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.moto,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


def ses_sent(endpoint: str) -> list[EmailMessage]:
    """Every email the SES stand-in has accepted, parsed from the raw MIME as sent."""
    data = json.load(urllib.request.urlopen(endpoint + "/moto-api/data.json", timeout=10))
    raw = data.get("ses", {}).get("RawMessage", [])
    return [message_from_bytes(m["raw_data"].encode(), policy=policy.default) for m in raw]  # type: ignore[misc]


def wait_for_email(
    endpoint: str, match: Callable[[EmailMessage], bool], timeout: float = 60.0
) -> EmailMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in ses_sent(endpoint) if match(m)]
        if found:
            return found[0]
        time.sleep(0.3)
    raise AssertionError(f"no such email in {timeout}s")


def text_of(m: EmailMessage) -> str:
    body = m.get_body(("plain",))
    text = body.get_content() if isinstance(body, EmailMessage) else ""
    return str(text).replace("\r\n", "\n")


@pytest.fixture(scope="module")
def stack(
    tansu: Any,
    moto_endpoint: str,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    import asyncio

    import boto3

    from processors.live.agents import changelog_topics
    from processors.live.broker import ensure_topics
    from processors.reply.agent import reply_changelog_topics
    from processors.senders.worker import sender_changelog_topics
    from processors.settings import load_settings

    tmp = tmp_path_factory.mktemp("e2e")
    prefix = f"e{uuid.uuid4().hex[:8]}."
    bs = tansu.bootstrap
    ids = {"worker": f"{prefix}notifier", "senders": f"{prefix}senders", "reply": f"{prefix}reply"}
    settings = load_settings(kafka_broker_url=f"kafka://{bs}", topic_prefix=prefix)
    asyncio.run(
        ensure_topics(
            settings,
            changelog_topics(ids["worker"])
            | sender_changelog_topics(ids["senders"], t.CHANNELS)
            | reply_changelog_topics(ids["reply"]),
        )
    )
    urllib.request.urlopen(
        urllib.request.Request(moto_endpoint + "/moto-api/reset", method="POST"), timeout=10
    ).read()
    aws = {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}
    aws |= {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    boto3.client("sesv2", **aws).create_email_identity(EmailIdentity=FROM_IDENTITY)
    boto3.client("s3", **aws).create_bucket(Bucket=BUCKET)
    queue_url = boto3.client("sqs", **aws).create_queue(QueueName=QUEUE)["QueueUrl"]

    env = base_env(
        bs,
        prefix,
        tmp,
        EMAIL__BACKEND="ses",
        EMAIL__SES_ENDPOINT_URL=moto_endpoint,
        EMAIL__SES_ACCESS_KEY_ID="testing",
        EMAIL__SES_SECRET_ACCESS_KEY="testing",
        INBOUND__HTTP_SECRET=SECRET,
        INBOUND__SES_ENDPOINT_URL=moto_endpoint,
        INBOUND__SES_ACCESS_KEY_ID="testing",
        INBOUND__SES_SECRET_ACCESS_KEY="testing",
    )
    smtp_port, http_port = free_port(), free_port()
    faust: list[str] = []
    for f in TEST_FAUST:
        faust += ["--faust", f]
    common = ["--store", "memory://", "--without-web", *faust]
    commands = {
        "worker": ["worker", "--app-id", ids["worker"], *common]
        + ["--set", "inactivity_seconds=1", "--set", "typing_ttl_seconds=2"],
        "senders": ["senders", "--channel", "all", "--app-id", ids["senders"], *common],
        "reply": ["reply", "--app-id", ids["reply"], *common],
        "smtp": ["inbound-smtp", "--port", str(smtp_port)],
        "http": ["inbound-http", "--port", str(http_port)],
        "ses": ["inbound-ses", "--queue-url", queue_url],
    }
    procs = {name: Proc(args, env, tmp / f"{name}.log") for name, args in commands.items()}
    try:
        for name, ready in (
            ("worker", "Ready"),
            ("senders", "Ready"),
            ("reply", "snapshots read"),
            ("smtp", "listening"),
            ("http", "listening"),
            ("ses", "polling"),
        ):
            procs[name].wait_for(ready, timeout=120)
        produce(
            bs,
            prefix,
            [
                (
                    t.ROLES,
                    "member",
                    {
                        "name": "member",
                        "email": True,
                        "sms": False,
                        "push": False,
                        "browser": False,
                        "ts": 1,
                    },
                ),
            ]
            + [
                (
                    t.USERS,
                    uid,
                    {
                        "user_id": uid,
                        "name": uid.title(),
                        "email": f"{uid}@example.test",
                        "phone": None,
                        "role": "member",
                        "locale": "en",
                        "push_tokens": [],
                        "browser_subscriptions": [],
                        "ts": 1,
                    },
                )
                for uid in USERS
            ],
        )
        yield Stack(
            bs, prefix, moto_endpoint, smtp_port, http_port, queue_url, env, list(procs.values())
        )
        for name, p in procs.items():
            assert p.alive(), f"{name} died:\n{p.log()[-3000:]}"
            assert SECRET not in p.log()
    finally:
        for p in procs.values():
            p.stop()


def send_via(adapter: str, stack: Stack, raw: bytes, to: str) -> None:
    """Hand the reply to one adapter in its own protocol."""
    if adapter == "smtp":
        with smtplib.SMTP("127.0.0.1", stack.smtp_port, timeout=10) as client:
            refused = client.sendmail("bob@example.test", [to], raw)
        assert refused == {}
    elif adapter == "http":
        url = f"http://127.0.0.1:{stack.http_port}/inbound?to={urllib.parse.quote(to)}"
        req = urllib.request.Request(url, data=raw, method="POST")
        req.add_header("X-Inbound-Secret", SECRET)
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 202
    else:  # SES receipt rule: the mail in S3, an SNS-wrapped notice on SQS
        key = f"mail/{uuid.uuid4().hex}"
        stack.aws("s3").put_object(Bucket=BUCKET, Key=key, Body=raw)
        notice = {
            "notificationType": "Received",
            "mail": {"messageId": key.rpartition("/")[2]},
            "receipt": {
                "recipients": [to],
                "action": {"type": "S3", "bucketName": BUCKET, "objectKey": key},
            },
        }
        stack.aws("sqs").send_message(
            QueueUrl=stack.queue_url,
            MessageBody=json.dumps({"Type": "Notification", "Message": json.dumps(notice)}),
        )


@pytest.mark.parametrize("adapter", ["smtp", "http", "ses"])
def test_reply_to_a_notification_email_reaches_the_others(adapter: str, stack: Stack) -> None:
    bs, prefix = stack.bootstrap, stack.prefix
    cid, subject = f"conv-{adapter}", f"Launch checklist ({adapter})"
    now = time.time_ns() // 1_000_000
    produce(
        bs,
        prefix,
        [
            (
                t.CONVERSATIONS,
                cid,
                {
                    "conversation_id": cid,
                    "subject": subject,
                    "participants": [
                        {"user_id": u, "access": "ReadWrite", "notify": "All", "name": u.title()}
                        for u in USERS
                    ],
                    "ts": now,
                },
            ),
            (
                t.MESSAGES,
                cid,
                {
                    "message_id": f"m-{adapter}-1",
                    "conversation_id": cid,
                    "sender_id": "alice",
                    "type": "UserMessage",
                    "text": "Can someone check the rollback steps?",
                    "mentions": [],
                    "origin": "web",
                    "ts": now + 1,
                },
            ),
        ],
    )

    # 1. bob's notification email, as the SES stand-in received it
    notification = wait_for_email(
        stack.moto, lambda m: "bob@example.test" in str(m["To"]) and m["Subject"] == subject
    )
    reply_to = str(notification["Reply-To"])
    assert reply_to.startswith("reply+") and reply_to.endswith("@reply.chat.example")

    # 2. bob answers from his mail client, above the quoted notification
    reply_text = f"I checked them, all good.\nShipping via {adapter} tomorrow."
    message_id = f"<e2e-{adapter}-{uuid.uuid4().hex[:8]}@mail.example.test>"
    raw = quoted_reply(
        notification.as_bytes(),
        reply_text,
        from_="Bob <bob@example.test>",
        message_id=message_id,
    )
    assert b"wrote:" in raw and b"> Can someone check the rollback steps?" in raw
    send_via(adapter, stack, raw, reply_to)

    # 3. the reply is in the conversation: origin email, quote stripped, exact text
    reply_mid = reply_message_id(message_id.strip("<>"))
    messages = consume(
        bs, prefix, t.MESSAGES, until=lambda v: any(m["message_id"] == reply_mid for m in v)
    )
    (posted,) = [m for m in messages if m["message_id"] == reply_mid]
    assert (posted["conversation_id"], posted["sender_id"], posted["origin"]) == (
        cid,
        "bob",
        "email",
    )
    assert posted["text"] == reply_text

    # 4. the others are notified of it, and bob is not (his own message)
    flushes = consume(
        bs,
        prefix,
        t.FLUSHES,
        until=lambda v: any(reply_mid in f["message_ids"] for f in v),
        timeout=30,
    )
    (flush,) = [f for f in flushes if reply_mid in f["message_ids"]]
    assert flush["message_ids"] == [reply_mid]

    def about_reply(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [d for d in values if d["flush_id"] == flush["flush_id"]]

    decisions = about_reply(
        consume(
            bs,
            prefix,
            t.DECISIONS,
            until=lambda v: {d["recipient_id"] for d in about_reply(v)} >= set(USERS),
            timeout=30,
        )
    )
    by_user: dict[str, list[tuple[str, str | None, str | None]]] = {}
    for d in decisions:
        by_user.setdefault(d["recipient_id"], []).append((d["outcome"], d["channel"], d["reason"]))
    assert ("send", "email", None) in by_user["alice"]
    assert ("send", "email", None) in by_user["carol"]
    assert {outcome for outcome, _, _ in by_user["bob"]} == {"skip"}
    assert {reason for _, _, reason in by_user["bob"]} == {"OWN_MESSAGES"}
    for who in ("alice", "carol"):
        delivered = wait_for_email(
            stack.moto,
            lambda m, who=who: f"{who}@example.test" in str(m["To"]) and reply_text in text_of(m),
            timeout=30,
        )
        assert delivered["Subject"] == subject
    assert not [
        m for m in ses_sent(stack.moto) if "bob@" in str(m["To"]) and reply_text in text_of(m)
    ]

    # 5. the audit record, through `chat-notifier explain --mail`
    explained = subprocess.run(
        [sys.executable, "-P", "-m", "processors.cli", "explain", "--mail", message_id],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert explained.returncode == 0, explained.stderr
    assert "ACCEPTED" in explained.stdout and reply_mid in explained.stdout
    assert f"conversation {cid}" in explained.stdout and "user bob" in explained.stdout
