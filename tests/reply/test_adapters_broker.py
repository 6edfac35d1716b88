"""The three inbound adapters through their real entry points (``chat-notifier
inbound-smtp|inbound-http|inbound-ses`` subprocesses), on the real broker, with the reply
agent running: each lands the raw mail on email.inbound and the reply is posted; each
refuses a mail over the limit in its own protocol."""

from __future__ import annotations

import json
import smtplib
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from processors import topics as t
from tests.live.conftest import consume
from tests.reply.conftest import Proc, base_env, consume_raw, start_reply_agent
from tests.reply.mails import mail, reply_address
from tests.senders.conftest import moto_endpoint  # noqa: F401 - fixture
from tests.senders.standins import free_port

pytestmark = pytest.mark.broker

LIMIT = 20_000
SECRET = "inbound-test-secret-0123456789"


def _post(url: str, body: bytes, secret: str | None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, method="POST")
    if secret is not None:
        req.add_header("X-Inbound-Secret", secret)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_every_adapter_lands_the_reply_and_refuses_oversize(
    reply_env: dict[str, Any],
    procs: Callable[..., Proc],
    moto_endpoint: str,  # noqa: F811
) -> None:
    import boto3

    bs, prefix, tmp = reply_env["bootstrap"], reply_env["prefix"], reply_env["tmp"]
    smtp_port, http_port = free_port(), free_port()
    aws = {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}
    aws |= {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    urllib.request.urlopen(urllib.request.Request(moto_endpoint + "/moto-api/reset", method="POST"))
    s3, sqs = boto3.client("s3", **aws), boto3.client("sqs", **aws)
    s3.create_bucket(Bucket="inbound-mail")
    queue = sqs.create_queue(QueueName="inbound-notices")["QueueUrl"]
    env = base_env(
        bs,
        prefix,
        tmp,
        INBOUND__MAX_MAIL_BYTES=str(LIMIT),
        INBOUND__RATE_PER_MINUTE="3",
        INBOUND__HTTP_SECRET=SECRET,
        INBOUND__SES_ENDPOINT_URL=moto_endpoint,
        INBOUND__SES_ACCESS_KEY_ID="testing",
        INBOUND__SES_SECRET_ACCESS_KEY="testing",
    )
    smtp = procs(["inbound-smtp", "--port", str(smtp_port)], env, tmp / "smtp.log")
    http = procs(["inbound-http", "--port", str(http_port)], env, tmp / "http.log")
    ses = procs(["inbound-ses", "--queue-url", queue], env, tmp / "ses.log")
    for p in (smtp, http, ses):
        p.wait_for("inbound-")
    agent = start_reply_agent(procs, reply_env)
    now = int(time.time() * 1000)
    to = reply_address(now_ms=now)

    # SMTP: the reply domain only, size, per-sender rate
    by_smtp = mail("Via SMTP.", to=to, message_id="<smtp-1@x>")
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
        client.ehlo()
        assert client.mail("bob@example.org")[0] == 250
        assert client.rcpt("someone@example.org")[0] == 550
        assert client.rcpt("postmaster@reply.chat.example")[0] == 550
        assert client.rcpt(to)[0] == 250
        assert client.data(by_smtp)[0] == 250
        with pytest.raises(smtplib.SMTPSenderRefused) as too_big:
            client.sendmail("bob@example.org", [to], mail("x" * LIMIT, to=to))
        assert too_big.value.smtp_code == 552
        # SIZE= is refused before the rate counts it: two more starts pass, the 4th not
        for expected in (250, 250, 451):
            client.rset()
            assert client.mail("bob@example.org")[0] == expected
        client.rset()
        assert client.mail("alice@example.org")[0] == 250  # others are not slowed

    # HTTP: secret, size
    by_http = mail("Via HTTP.", to=to, message_id="<http-1@x>")
    url = f"http://127.0.0.1:{http_port}/inbound?to={urllib.parse.quote(to)}"
    assert _post(url, by_http, None)[0] == 401
    assert _post(url, by_http, SECRET[:-1] + "x")[0] == 401
    assert _post(url, mail("x" * LIMIT, to=to), SECRET)[0] == 413
    status, body = _post(url, by_http, SECRET)
    assert (status, body) == (202, {"mail_id": "http-1@x"})

    # SES: SNS-wrapped receipt notice -> S3 object; an oversize object is audited, not read
    by_ses = mail("Via SES.", to="team@example.org", message_id="<ses-1@x>")
    s3.put_object(Bucket="inbound-mail", Key="m/1", Body=by_ses)
    s3.put_object(Bucket="inbound-mail", Key="m/2", Body=b"x" * (LIMIT + 1))
    for key, ses_id in (("m/1", "ses-a"), ("m/2", "ses-b")):
        notice = {
            "notificationType": "Received",
            "mail": {"messageId": ses_id},
            "receipt": {
                "recipients": [to],
                "action": {"type": "S3", "bucketName": "inbound-mail", "objectKey": key},
            },
        }
        sqs.send_message(
            QueueUrl=queue,
            MessageBody=json.dumps({"Type": "Notification", "Message": json.dumps(notice)}),
        )

    # notices of the wrong shape are dropped (deleted), never received again and again
    for body in (
        "[" * 50_000,
        json.dumps({"Type": "Notification", "Message": "{" * 5 + "[" * 50_000}),
        json.dumps({"notificationType": "Received", "receipt": ["not", "an", "object"]}),
        json.dumps({"notificationType": "Received", "receipt": {"action": "S3"}}),
        json.dumps(
            {
                "notificationType": "Received",
                "mail": "not an object",
                "receipt": {"action": {"type": "S3", "bucketName": ["b"], "objectKey": {}}},
            }
        ),
    ):
        sqs.send_message(QueueUrl=queue, MessageBody=body)

    inbound = consume_raw(bs, prefix, t.EMAIL_INBOUND, count=3)
    assert sorted(k for k, _ in inbound) == [b"http-1@x", b"ses-1@x", b"smtp-1@x"]
    assert all(v.startswith(b"X-Original-To: " + to.encode() + b"\r\n") for _, v in inbound)
    messages = consume(bs, prefix, t.MESSAGES, until=lambda v: len(v) >= 3)
    assert sorted(m["text"] for m in messages) == ["Via HTTP.", "Via SES.", "Via SMTP."]
    audits = consume(bs, prefix, t.INBOUND_AUDIT, until=lambda v: len(v) >= 4)
    assert sorted(a["reason"] for a in audits) == ["ACCEPTED"] * 3 + ["TOO_LARGE"]
    assert [a["mail_id"] for a in audits if a["reason"] == "TOO_LARGE"] == ["ses:ses-b"]

    def left() -> tuple[str, str]:
        attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])
        waiting = attributes["Attributes"]
        return waiting["ApproximateNumberOfMessages"], waiting[
            "ApproximateNumberOfMessagesNotVisible"
        ]

    deadline = time.monotonic() + 10
    while left() != ("0", "0") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left() == ("0", "0")  # every notice deleted: none kept for another try
    for p in (smtp, http, ses, agent):
        assert p.alive()
        assert "Via " not in p.log() and SECRET not in p.log()
