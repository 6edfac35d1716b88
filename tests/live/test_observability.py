"""Every process is observable and logs nothing private (issue 10 item 3).

One scenario on the real broker, through the CLI: ``chat-notifier worker``,
``chat-notifier senders`` (outbox backends) and ``chat-notifier reply`` in subprocesses.
Users with distinctive addresses get notified of distinctive messages; one of them
answers the email through its reply address (the token read from the outbox), which
the reply agent posts back into the conversation, and the other is notified of it.
Meanwhile ``/ready`` of the worker and of the senders is polled from their start.

- the endpoint test reads ``/metrics``, ``/health`` and ``/ready`` of both;
- the log scan reads everything the three processes wrote (stdout and stderr) and
  finds no message body, email address, phone number, push token or reply token.
"""

from __future__ import annotations

import email
import json
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from email import policy
from typing import Any

import pytest

from processors import topics as t
from processors.reply.parse import mail_id
from tests.live.conftest import TEST_FAUST, consume, ensure, produce
from tests.live.scenario import conversation, message, role, user
from tests.live.test_ports import free_base
from tests.reply.conftest import Proc, base_env, ensure_reply_topics
from tests.reply.mails import REPLY_DOMAIN, mail

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]

# What must never reach a log: bodies, addresses, tokens (upper case: scanned case-blind).
ANN_MAIL = "quokka.ann+7781@mail.example.test"
BOB_MAIL = "Quokka.Bob+7781@Mail.Example.test"
CY_MAIL = "quokka.cy+7781@mail.example.test\r\nBcc: spy@elsewhere.test"  # refused
CY_PHONE = "+15557789999"
ANN_PHONE = "+15557781234"
BOB_PHONE = "+15557785678"
BOB_PUSH = "pushtok-QUOKKA-7781-bob"
ANN_PUSH = "pushtok-QUOKKA-7781-ann"
FIRST_BODY = "Zebra quokka lasagne 7781, meet at the pier"
SECOND_BODY = "Platypus umbrella 7781 secret plan"
REPLY_BODY = "Wombat harmonica 7781 count me in"

SETTINGS = {
    "inactivity_seconds": 1,
    "typing_ttl_seconds": 5,
    "max_batch_seconds": 300,
    "presence_ttl_seconds": 60,
    "app_url_template": "https://chat.example/c/{conversation_id}",
    "unsubscribe_url_template": "https://chat.example/u/{conversation_id}",
    "email_from": "Chat <n@chat.example>",
    "reply_domain": REPLY_DOMAIN,
    "sms_from": "+15017122661",
    "ts": 1,
}


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class ReadyWatch:
    """Polls ``/ready`` of a port from before the process serves it; records statuses."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.seen: list[tuple[int, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = _get(self.port, "/ready")
                self.seen.append((status, json.loads(body)))
                if status == 200:
                    return
            except (OSError, ValueError):
                pass  # not listening yet
            time.sleep(0.1)

    def wait_ready(self, proc: Proc, timeout: float = 60.0) -> None:
        self._thread.join(timeout)
        self._stop.set()
        if not self.seen or self.seen[-1][0] != 200:
            raise AssertionError(f"/ready never 200: {self.seen[-3:]}\n{proc.log()[-3000:]}")


def _statuses(outcomes: list[dict[str, Any]], recipient: str) -> int:
    return sum(1 for o in outcomes if o["recipient_id"] == recipient)


def _faust_args() -> list[str]:
    return [a for f in TEST_FAUST for a in ("--faust", f)]


def _metric_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def stack(tansu: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("observed")
    prefix = f"o{uuid.uuid4().hex[:8]}."
    app_id = f"{prefix}notifier"
    ensure(tansu.bootstrap, prefix, app_id)
    ensure_reply_topics(tansu.bootstrap, prefix, f"{prefix}reply")
    env = base_env(tansu.bootstrap, prefix, tmp, CONVERSATION_PARTITIONS="4", USER_PARTITIONS="4")
    base = free_base(3)
    worker_port, senders_port, reply_port = base, base + 1, base + 2
    procs: list[Proc] = []
    try:
        worker_ready, senders_ready = ReadyWatch(worker_port), ReadyWatch(senders_port)
        worker = Proc(
            ["worker", "--app-id", app_id, "--store", "memory://", "--web-port", str(worker_port)]
            + _faust_args(),
            env,
            tmp / "worker.log",
        )
        procs.append(worker)
        senders = Proc(
            ["senders", "--app-id", f"{prefix}senders", "--store", "memory://"]
            + ["--web-port", str(senders_port)]
            + _faust_args(),
            env,
            tmp / "senders.log",
        )
        procs.append(senders)
        reply = Proc(
            ["reply", "--app-id", f"{prefix}reply", "--store", "memory://"]
            + ["--web-port", str(reply_port)]
            + _faust_args(),
            env,
            tmp / "reply.log",
        )
        procs.append(reply)
        worker_ready.wait_ready(worker)
        senders_ready.wait_ready(senders)
        reply.wait_for("snapshots read")

        bs = tansu.bootstrap
        participants = conversation("c1", ("ann", "All"), ("bob", "All"), ("cy", "All"))
        produce(
            bs,
            prefix,
            [
                (t.SETTINGS, "app", SETTINGS),
                (t.ROLES, "member", role("member", email=True, sms=True, push=True) | {"ts": 1}),
                (
                    t.USERS,
                    "ann",
                    user("ann", "Ann", "member", email=ANN_MAIL, phone=ANN_PHONE)
                    | {"push_tokens": [ANN_PUSH], "ts": 1},
                ),
                (
                    t.USERS,
                    "bob",
                    user("bob", "Bob", "member", email=BOB_MAIL, phone=BOB_PHONE)
                    | {"push_tokens": [BOB_PUSH], "ts": 1},
                ),
                (
                    t.USERS,
                    "cy",
                    user("cy", "Cy", "member", email=CY_MAIL, phone=CY_PHONE) | {"ts": 1},
                ),
                (t.CONVERSATIONS, "c1", participants | {"ts": 1}),
            ],
        )
        time.sleep(1.0)  # users and conversation read before the first message
        now = int(time.time() * 1000)
        produce(
            bs,
            prefix,
            [
                (t.MESSAGES, "c1", message("c1", "m1", "ann", FIRST_BODY) | {"ts": now}),
                (t.MESSAGES, "c1", message("c1", "m2", "ann", SECOND_BODY) | {"ts": now + 1}),
                (t.MESSAGES, "c1", b"\x00 not an Avro record"),  # a dead letter
            ],
        )
        # bob: email, sms and push sent; cy: sms sent, email refused (invalid_address)
        consume(bs, prefix, t.OUTCOMES, until=lambda v: _statuses(v, "bob") >= 3, timeout=40)
        eml = next((tmp / "outbox" / "email").glob("*.eml"))
        sent = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
        reply_to = str(sent["Reply-To"])
        token = re.fullmatch(r"reply\+(.+)@" + re.escape(REPLY_DOMAIN), reply_to)
        assert token is not None, reply_to
        answer = mail(
            REPLY_BODY, to=reply_to, from_=f"Bob <{BOB_MAIL}>", message_id="<w-7781@mail.test>"
        )
        forged = mail(  # bob's token from another address: refused (FROM_MISMATCH)
            "Forged " + REPLY_BODY,
            to=reply_to,
            from_=f"Mallory <{ANN_MAIL}>",
            message_id="<f-7781@mail.test>",
        )
        produce(
            bs,
            prefix,
            [(t.EMAIL_INBOUND, mail_id(m), m) for m in (forged, answer)],
        )
        # ann: email, sms and push for bob's answer
        outcomes = consume(
            bs, prefix, t.OUTCOMES, until=lambda v: _statuses(v, "ann") >= 3, timeout=40
        )
        time.sleep(1.5)  # one more commit interval: offsets committed, lag settles
        scraped = {
            name: {path: _get(port, path) for path in ("/metrics", "/health", "/ready")}
            for name, port in (
                ("worker", worker_port),
                ("senders", senders_port),
                ("reply", reply_port),
            )
        }
        yield {
            "ready": {"worker": worker_ready.seen, "senders": senders_ready.seen},
            "scraped": scraped,
            "outcomes": outcomes,
            "prefix": prefix,
            "token": token.group(1),
            "procs": {p.log_path.stem: p for p in procs},
        }
    finally:
        for p in procs:
            p.stop()


def test_ready_goes_from_503_to_200_after_recovery(stack: dict[str, Any]) -> None:
    for name, seen in stack["ready"].items():
        statuses = [status for status, _ in seen]
        assert statuses[0] == 503, (name, seen[:3])  # served before it was ready
        assert statuses[-1] == 200, (name, seen[-3:])
        assert set(statuses) == {503, 200}, name
        assert seen[-1][1]["ready"] is True and seen[-1][1]["config_caught_up"] is True
    assert stack["ready"]["senders"][-1][1]["tables_recovered"] is True
    assert any(not body["ready"] for _, body in stack["ready"]["senders"])


def test_worker_and_senders_serve_metrics_health_ready(stack: dict[str, Any]) -> None:
    prefix = stack["prefix"]
    for name in ("worker", "senders", "reply"):
        pages = stack["scraped"][name]
        assert pages["/health"] == (200, '{"status": "ok"}') or json.loads(pages["/health"][1]) == {
            "status": "ok"
        }
        assert pages["/ready"][0] == 200
        assert pages["/metrics"][0] == 200

    worker = _metric_lines(stack["scraped"]["worker"]["/metrics"][1])
    senders = _metric_lines(stack["scraped"]["senders"]["/metrics"][1])
    reply = _metric_lines(stack["scraped"]["reply"]["/metrics"][1])
    assert any(line.startswith("chat_notifier_inbound_mail_total{") for line in reply), reply[:20]
    ready = json.loads(stack["scraped"]["reply"]["/ready"][1])
    assert ready["tables_recovered"] is True and ready["snapshots_caught_up"] is True

    def has(lines: list[str], name: str, **labels: str) -> bool:
        want = [f'{k}="{v}"' for k, v in labels.items()]
        return any(
            line.startswith(name + "{") or line.startswith(name + " ")
            if not want
            else line.startswith(name + "{") and all(w in line for w in want)
            for line in lines
        )

    # events in by topic: the worker's batch path counts them itself (it skips the
    # per-record sensor call), the senders through Faust's sensor
    assert has(worker, "chat_notifier_events_in_total", topic=prefix + t.MESSAGES)
    assert has(
        senders,
        "chat_notifier_faust_messages_received_per_topic_total",
        topic=prefix + t.CHANNEL_TOPICS["email"],
    )
    for lines in (worker, senders):
        assert has(lines, "chat_notifier_faust_topic_partition_end_offset")
        assert has(lines, "chat_notifier_faust_topic_partition_offset_commited")
        assert has(lines, "chat_notifier_consumer_lag")
    assert has(worker, "chat_notifier_consumer_lag", topic=prefix + t.MESSAGES)
    assert has(senders, "chat_notifier_consumer_lag", topic=prefix + t.CHANNEL_TOPICS["sms"])
    # ours: worker
    assert has(worker, "chat_notifier_dead_letters_total", topic=t.MESSAGES, stage="decode")
    assert has(worker, "chat_notifier_flushes_total", cause="inactivity")
    for channel in ("email", "sms", "push"):
        assert has(
            worker, "chat_notifier_decisions_total", outcome="send", reason="", channel=channel
        )
        assert has(senders, "chat_notifier_delivery_outcomes_total", channel=channel, status="sent")
        assert has(senders, "chat_notifier_provider_seconds_bucket", channel=channel)
        assert has(senders, "chat_notifier_delivery_seconds_bucket", channel=channel)
    assert has(worker, "chat_notifier_flush_lateness_seconds_bucket")
    # a worker's page does not show sender metrics with values and vice versa
    assert not has(worker, "chat_notifier_delivery_outcomes_total", status="sent")


def test_no_process_logs_bodies_addresses_or_tokens(stack: dict[str, Any]) -> None:
    outcomes = stack["outcomes"]
    # the scenario ran: both users notified, cy's email refused for its address
    assert {(o["recipient_id"], o["status"]) for o in outcomes} >= {
        ("ann", "sent"),
        ("bob", "sent"),
        ("cy", "sent"),
        ("cy", "invalid_address"),
    }
    secrets = {
        "message body": [FIRST_BODY, SECOND_BODY, REPLY_BODY, "quokka lasagne", "Wombat"],
        "email address": [ANN_MAIL, BOB_MAIL, "quokka.ann", "quokka.bob", "quokka.cy", "spy@"],
        "phone number": [ANN_PHONE, BOB_PHONE, CY_PHONE, ANN_PHONE[2:], CY_PHONE[2:]],
        "push token": [ANN_PUSH, BOB_PUSH],
        "reply token": [stack["token"], stack["token"][:24]],
    }
    found = []
    for name, proc in stack["procs"].items():
        text = proc.log().lower()
        assert len(text) > 1000, name  # the process did log (INFO)
        for kind, values in secrets.items():
            for value in values:
                if value.lower() in text:
                    at = text.index(value.lower())
                    found.append(f"{name}.log: {kind} {value!r}: ...{text[at - 150 : at + 60]}")
    assert not found, "\n".join(found)
