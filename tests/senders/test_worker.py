"""``chat-notifier senders`` against the real broker (Tansu): Delivery records in,
Outcomes / DeadLetters out, outbox files written, duplicates not resent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from processors import topics as t
from tests.live.conftest import TEST_FAUST, consume, produce
from tests.senders.factories import make_delivery

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.broker


def _senders_proc(bootstrap: str, prefix: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        KAFKA_BROKER_URL=f"kafka://{bootstrap}",
        TOPIC_PREFIX=prefix,
        CHANNEL_PARTITIONS="2",
        OUTBOX_DIR=str(tmp_path / "outbox"),
        DATA_DIR=str(tmp_path / "data"),
        PYTHONUNBUFFERED="1",
    )
    cmd = [sys.executable, "-P", "-m", "processors.cli", "senders", "--channel", "all"]
    cmd += ["--app-id", f"{prefix}senders", "--store", "memory://", "--without-web"]
    for f in TEST_FAUST:
        cmd += ["--faust", f]
    log = open(tmp_path / "senders.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_sender_worker_end_to_end(tansu: Any, tmp_path: Path) -> None:
    prefix = f"s{uuid.uuid4().hex[:8]}."
    proc = _senders_proc(tansu.bootstrap, prefix, tmp_path)
    try:
        deadline = time.monotonic() + 60
        log_path = tmp_path / "senders.log"
        while time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()[-4000:]
            if "Ready" in log_path.read_text(errors="replace"):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("senders not ready:\n" + log_path.read_text()[-4000:])
        email = make_delivery("email")
        sms = make_delivery("sms", n=2)
        produce(
            tansu.bootstrap,
            prefix,
            [
                (
                    t.SETTINGS,
                    "app",
                    {
                        "inactivity_seconds": 10,
                        "typing_ttl_seconds": 10,
                        "max_batch_seconds": 300,
                        "presence_ttl_seconds": 60,
                        "app_url_template": "https://chat.example/c/{conversation_id}",
                        "unsubscribe_url_template": "https://chat.example/u/{conversation_id}",
                        "email_from": "Chat <n@chat.example>",
                        "reply_domain": "r.chat.example",
                        "sms_from": "+15017122661",
                        "ts": 1,
                    },
                ),
            ],
        )
        time.sleep(1.0)  # let the settings record land before the deliveries
        produce(
            tansu.bootstrap,
            prefix,
            [
                (t.EMAIL, "u-bob", email),
                (t.SMS, "u-bob", sms),
                (t.EMAIL, "u-bob", email),  # duplicate: must not be sent twice
                (t.EMAIL, "u-bob", b"\x00garbage"),
            ],
        )
        outcomes = consume(
            tansu.bootstrap, prefix, t.OUTCOMES, until=lambda v: len(v) >= 3, timeout=40
        )
        dead = consume(
            tansu.bootstrap, prefix, t.DEAD_LETTER, until=lambda v: len(v) >= 1, timeout=20
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert sorted((o["channel"], o["status"]) for o in outcomes) == [
        ("email", "sent"),
        ("email", "sent"),
        ("sms", "sent"),
    ]
    assert {o["delivery_id"] for o in outcomes} == {email["delivery_id"], sms["delivery_id"]}
    assert [d["stage"] for d in dead] == ["decode"] and dead[0]["value"] == b"\x00garbage"
    outbox = tmp_path / "outbox"
    index = [json.loads(line) for line in (outbox / "outbox.jsonl").read_text().splitlines()]
    assert sorted(i["channel"] for i in index) == ["email", "sms"]  # the duplicate was not resent
    eml = next(outbox.glob("email/*.eml")).read_text()
    assert (
        "https://chat.example/c/conv-1" in eml and "@r.chat.example" in eml
    )  # AppSettings applied
    sms_text = next(outbox.glob("sms/*.txt")).read_text()
    assert "From: +15017122661" in sms_text and "(+1 more)" in sms_text


HOSTILE_CONVERSATION = 'c1\r\nBcc: evil@attacker.example\r\n"><img src=x>'


def test_hostile_settings_and_crlf_ids_still_deliver_and_forge_no_log_line(
    tansu: Any, tmp_path: Path
) -> None:
    """Issue 8 through ``chat-notifier senders``: a settings record whose link templates
    are hostile and deliveries whose conversation id carries CRLF + ``Bcc:``. Every
    delivery is sent (links fall back to the default), the email parses back with one
    To and no Bcc, and no line of the senders' log is forged from the input."""
    prefix = f"h{uuid.uuid4().hex[:8]}."
    proc = _senders_proc(tansu.bootstrap, prefix, tmp_path)
    log_path = tmp_path / "senders.log"
    sub = {"endpoint": "https://push.example/1", "p256dh": "k", "auth": "a"}
    deliveries = [
        make_delivery(
            ch,
            conversation_id=HOSTILE_CONVERSATION,
            recipient_name='Bob"\r\nBcc: evil2@attacker.example',
            subject="Plan\r\nBcc: evil3@attacker.example",
            browser_subscriptions=[sub],
        )
        for ch in t.CHANNELS
    ]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()[-4000:]
            if "Ready" in log_path.read_text(errors="replace"):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("senders not ready:\n" + log_path.read_text()[-4000:])
        settings = {
            "inactivity_seconds": 10,
            "typing_ttl_seconds": 10,
            "max_batch_seconds": 300,
            "presence_ttl_seconds": 60,
            "app_url_template": "javascript:alert({conversation_id:>200000000})",
            "unsubscribe_url_template": "https://x/{conversation_id.__class__.__mro__}{",
            "email_from": "Chat <n@chat.example>",
            "reply_domain": "r.chat.example",
            "sms_from": "+15017122661",
            "ts": 1,
        }
        produce(tansu.bootstrap, prefix, [(t.SETTINGS, "app", settings)])
        time.sleep(1.0)  # let the settings record land before the deliveries
        produce(
            tansu.bootstrap,
            prefix,
            [(t.CHANNEL_TOPICS[d["channel"]], "u-bob", d) for d in deliveries],
        )
        outcomes = consume(
            tansu.bootstrap, prefix, t.OUTCOMES, until=lambda v: len(v) >= 4, timeout=40
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert sorted((o["channel"], o["status"]) for o in outcomes) == sorted(
        (ch, "sent") for ch in t.CHANNELS
    )
    outbox = tmp_path / "outbox"
    raw = next(outbox.glob("email/*.eml")).read_bytes()
    mime = message_from_bytes(raw, policy=policy.default)
    assert mime.get_all("Bcc") is None and len(mime.get_all("To") or []) == 1
    assert str(mime["List-Unsubscribe"]).startswith("<http://localhost:8000/unsubscribe?")
    assert "javascript" not in raw.decode()
    payload = json.loads(next(outbox.glob("push/*.json")).read_text())
    assert payload["data"]["url"].startswith("http://localhost:8000/conversations/c1%0D%0ABcc")
    log_bytes = log_path.read_bytes()
    lines = log_bytes.replace(b"\r\n", b"\n").split(b"\n")
    assert not [line for line in lines if line.lstrip().startswith((b"Bcc:", b'"><img'))]
    assert b"\r" not in log_bytes  # no raw CR from input anywhere
    assert b"refused" in log_bytes  # the fallback was logged, escaped, on one line
