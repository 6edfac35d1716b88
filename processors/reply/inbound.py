"""Inbound adapters: raw reply mail onto ``email.inbound`` (contract §7).

Three commands, one rule: each lands the raw MIME bytes, unchanged except for one
prepended ``X-Original-To: <recipient>`` trace line per envelope recipient (what Postfix
adds; the reply agent reads tokens from it when To has none), keyed by the mail's dedupe
key (:func:`processors.reply.parse.mail_id`), and refuses a mail over
``inbound.max_mail_bytes`` (default 1,000,000: one Kafka record) in its own protocol:

- ``chat-notifier inbound-smtp``: an SMTP listener (aiosmtpd). RCPT only for
  ``reply+…@<inbound.reply_domain>`` (else ``550 5.1.1``); SIZE advertised and ``552``
  above it; at most ``inbound.rate_per_minute`` mails per envelope sender per minute
  (else ``451 4.7.1``, a temporary failure: the sending MTA retries later); ``451 4.3.0``
  when the broker cannot take the mail (the MTA retries; nothing is lost).
- ``chat-notifier inbound-http``: ``POST /inbound`` with the raw mail as the body and the
  shared secret in ``X-Inbound-Secret`` (compared with :func:`hmac.compare_digest`;
  ``401`` when wrong, ``503`` when no secret is configured, ``413`` above the limit,
  ``202`` with the dedupe key when queued).
- ``chat-notifier inbound-ses``: polls the SQS queue an SES receipt rule notifies (SNS
  envelope or raw), reads the S3 object the notice names, publishes, deletes the notice.
  A mail over the limit is not read: an InboundAudit ``TOO_LARGE`` is written instead
  (SES has already accepted it, so there is no sender to refuse).

No mail text, address or secret is logged. Each command exits 2 when a setting it needs
is missing and 3, with one line on stderr, when the broker cannot be reached at start (no
port is opened then: an MTA keeps retrying elsewhere instead of queueing into nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import signal
import sys
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any

from processors import codec
from processors import topics as t
from processors.reply.parse import mail_id
from processors.settings import Settings

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Inbound-Secret"
RATE_WINDOW_S = 60.0
EXIT_USAGE = 2  # a setting or argument is missing
EXIT_NO_BROKER = 3  # the broker could not be reached at start


class BrokerUnreachableError(RuntimeError):
    """The producer could not connect at start: the command says so and exits."""


def with_trace(raw: bytes, recipients: Sequence[str]) -> bytes:
    """``raw`` with one ``X-Original-To`` line per envelope recipient prepended."""
    lines = b"".join(
        b"X-Original-To: " + r.encode("ascii", "replace") + b"\r\n"
        for r in recipients
        if "\r" not in r and "\n" not in r
    )
    return lines + raw


class InboundPublisher:
    """An aiokafka producer for ``email.inbound`` (and adapter-side audits)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        from processors.live.broker import bootstrap_servers

        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers(self.settings),
            acks="all",
            linger_ms=0,
            # room for the limit plus the trace lines and the record framing
            max_request_size=self.settings.inbound.max_mail_bytes + 65_536,
        )
        # aiokafka logs each failed connect as an ERROR; at start we say it once ourselves
        client_log = logging.getLogger("aiokafka")
        level = client_log.level
        client_log.setLevel(logging.CRITICAL)
        try:
            await self.producer.start()
        except Exception as exc:  # noqa: BLE001 - aiokafka: KafkaConnectionError and kin
            with contextlib.suppress(Exception):
                await self.producer.stop()  # frees its connections (no "Unclosed" warning)
            self.producer = None
            raise BrokerUnreachableError(
                f"cannot reach the broker at {bootstrap_servers(self.settings)} "
                f"({type(exc).__name__})"
            ) from None
        finally:
            client_log.setLevel(level)

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def publish(self, raw: bytes) -> str:
        key = mail_id(raw)
        topic = self.settings.topic_prefix + t.EMAIL_INBOUND
        await self.producer.send_and_wait(topic, raw, key=key.encode("utf-8", "surrogateescape"))
        return key

    async def audit(self, key: str, reason: str, detail: str, size: int) -> None:
        record = {
            "mail_id": key,
            "reason": reason,
            "detail": detail,
            "size": size,
            "ts": int(time.time() * 1000),
        }
        topic = self.settings.topic_prefix + t.INBOUND_AUDIT
        await self.producer.send_and_wait(
            topic, codec.encode("InboundAudit", record), key=key.encode()
        )


class RateLimit:
    """At most ``per_minute`` events per key in any 60 s window (sliding log)."""

    def __init__(self, per_minute: int, clock: Any = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.events: dict[str, deque[float]] = defaultdict(deque)

    def allow(self, key: str) -> bool:
        now = self.clock()
        log_ = self.events[key]
        while log_ and now - log_[0] >= RATE_WINDOW_S:
            log_.popleft()
        if len(log_) >= self.per_minute:
            return False
        log_.append(now)
        if len(self.events) > 100_000:  # bound memory under a flood of distinct senders
            for k in [k for k, v in self.events.items() if not v]:
                del self.events[k]
        return True


# --------------------------------------------------------------------------- SMTP


class SmtpHandler:
    """aiosmtpd handler: reply-domain recipients only, per-sender rate, size, publish."""

    def __init__(self, settings: Settings, publisher: InboundPublisher) -> None:
        self.domain = settings.inbound.reply_domain.lower()
        self.limit = settings.inbound.max_mail_bytes
        self.publisher = publisher
        self.rate = RateLimit(settings.inbound.rate_per_minute)

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: Any
    ) -> str:
        if not self.rate.allow(address.strip().lower()):
            return "451 4.7.1 Too many mails from this sender, try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        local, _, domain = address.rpartition("@")
        if domain.lower() != self.domain or not local.lower().startswith("reply+"):
            return "550 5.1.1 No such recipient here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or b""
        if len(raw) > self.limit:
            return f"552 5.3.4 Message too big (limit {self.limit} bytes)"
        try:
            await self.publisher.publish(with_trace(raw, envelope.rcpt_tos))
        except Exception as exc:  # noqa: BLE001 - any broker failure: the MTA retries
            log.warning("inbound-smtp: could not queue a mail (%s)", type(exc).__name__)
            return "451 4.3.0 Could not queue the message, try again later"
        return "250 OK queued"


async def serve_smtp(settings: Settings, stop: asyncio.Event) -> None:
    from aiosmtpd.smtp import SMTP

    publisher = InboundPublisher(settings)
    await publisher.start()
    handler = SmtpHandler(settings, publisher)
    s = settings.inbound
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            handler,
            data_size_limit=s.max_mail_bytes,
            hostname=s.reply_domain,
            decode_data=False,
        ),
        host=s.smtp_host,
        port=s.smtp_port,
    )
    print(f"inbound-smtp: listening on {s.smtp_host}:{s.smtp_port}", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        await publisher.stop()


# --------------------------------------------------------------------------- HTTP


def http_app(settings: Settings, publisher: InboundPublisher) -> Any:
    from aiohttp import web

    limit = settings.inbound.max_mail_bytes
    secret = settings.inbound.http_secret

    async def inbound(request: web.Request) -> web.Response:
        if secret is None:
            return web.json_response({"error": "no inbound secret configured"}, status=503)
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, secret.get_secret_value().encode()):
            return web.json_response({"error": "bad or missing " + SECRET_HEADER}, status=401)
        if request.content_length is not None and request.content_length > limit:
            return web.json_response({"error": f"mail over {limit} bytes"}, status=413)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": f"mail over {limit} bytes"}, status=413)
        if not raw:
            return web.json_response({"error": "empty body"}, status=400)
        recipients = request.query.getall("to", [])
        try:
            key = await publisher.publish(with_trace(raw, recipients))
        except Exception as exc:  # noqa: BLE001 - the caller retries on 503
            log.warning("inbound-http: could not queue a mail (%s)", type(exc).__name__)
            return web.json_response({"error": "could not queue, retry"}, status=503)
        return web.json_response({"mail_id": key}, status=202)

    app = web.Application(client_max_size=limit)
    app.router.add_post("/inbound", inbound)
    return app


async def serve_http(settings: Settings, stop: asyncio.Event) -> None:
    from aiohttp import web

    publisher = InboundPublisher(settings)
    await publisher.start()
    runner = web.AppRunner(http_app(settings, publisher), access_log=None)
    await runner.setup()
    s = settings.inbound
    site = web.TCPSite(runner, s.http_host, s.http_port)
    await site.start()
    print(f"inbound-http: listening on {s.http_host}:{s.http_port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await publisher.stop()


# --------------------------------------------------------------------------- SES


def ses_clients(settings: Settings) -> tuple[Any, Any]:
    import boto3

    s = settings.inbound
    kw: dict[str, Any] = {"region_name": s.ses_region}
    if s.ses_endpoint_url:
        kw["endpoint_url"] = s.ses_endpoint_url
    if s.ses_access_key_id and s.ses_secret_access_key:
        kw["aws_access_key_id"] = s.ses_access_key_id
        kw["aws_secret_access_key"] = s.ses_secret_access_key.get_secret_value()
    return boto3.client("sqs", **kw), boto3.client("s3", **kw)


def ses_notice(body: str) -> dict[str, Any] | None:
    """The SES receipt notification in an SQS body (SNS envelope or raw); None if not one."""
    try:
        data = json.loads(body)
        if isinstance(data, dict) and data.get("Type") == "Notification":
            data = json.loads(data.get("Message") or "")
    except (ValueError, TypeError, RecursionError):  # RecursionError: nested too deep
        return None
    if not isinstance(data, dict) or data.get("notificationType") != "Received":
        return None
    return data


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


class SesPoller:
    """SQS notice -> S3 object -> ``email.inbound``; one notice at a time, deleted after."""

    def __init__(self, settings: Settings, publisher: InboundPublisher) -> None:
        self.settings = settings
        self.publisher = publisher
        self.sqs, self.s3 = ses_clients(settings)
        self.queue_url = settings.inbound.ses_queue_url
        self.limit = settings.inbound.max_mail_bytes

    async def poll_once(self, wait_s: int = 1) -> int:
        """Handle what one receive returns; the number of notices handled."""
        reply = await asyncio.to_thread(
            self.sqs.receive_message,
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait_s,
        )
        notices = reply.get("Messages") or []
        for notice in notices:
            if await self.handle(notice.get("Body") or ""):
                await asyncio.to_thread(
                    self.sqs.delete_message,
                    QueueUrl=self.queue_url,
                    ReceiptHandle=notice["ReceiptHandle"],
                )
        return len(notices)

    async def handle(self, body: str) -> bool:
        """True when the notice is done with (published, refused or not ours)."""
        data = ses_notice(body)
        if data is None:
            log.warning("inbound-ses: an SQS message that is not an SES receipt notice; dropped")
            return True
        # Any part may be of the wrong shape: such a notice is dropped, never retried
        receipt = _object(data.get("receipt"))
        action = _object(receipt.get("action"))
        bucket, key = action.get("bucketName"), action.get("objectKey")
        if action.get("type") != "S3" or not _text(bucket) or not _text(key):
            log.warning("inbound-ses: receipt notice without an S3 action; dropped")
            return True
        ses_id = str(_object(data.get("mail")).get("messageId") or key)
        try:
            head = await asyncio.to_thread(self.s3.head_object, Bucket=bucket, Key=key)
            size = int(head.get("ContentLength") or 0)
            if size > self.limit:
                await self.publisher.audit(
                    f"ses:{ses_id}", "TOO_LARGE", f"{size} bytes > {self.limit}", size
                )
                log.warning("inbound-ses: a mail of %d bytes is over the limit; not read", size)
                return True
            obj = await asyncio.to_thread(self.s3.get_object, Bucket=bucket, Key=key)
            raw = await asyncio.to_thread(obj["Body"].read)
        except Exception as exc:  # noqa: BLE001 - S3 trouble: keep the notice, SQS redelivers
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                log.warning("inbound-ses: the S3 object of a notice is gone; dropped")
                return True
            log.warning("inbound-ses: S3 read failed (%s); will retry", type(exc).__name__)
            return False
        listed = receipt.get("recipients")
        recipients = [r for r in listed if _text(r)] if isinstance(listed, list) else []
        await self.publisher.publish(with_trace(raw, recipients))
        return True


async def serve_ses(settings: Settings, stop: asyncio.Event) -> None:
    publisher = InboundPublisher(settings)
    await publisher.start()
    poller = SesPoller(settings, publisher)
    print("inbound-ses: polling", flush=True)
    try:
        while not stop.is_set():
            try:
                await poller.poll_once(wait_s=1)
            except Exception as exc:  # noqa: BLE001 - SQS trouble: wait, then poll again
                log.warning("inbound-ses: SQS receive failed (%s)", type(exc).__name__)
                await asyncio.sleep(1)
    finally:
        await publisher.stop()


# ------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (smtp/http)")
    parser.add_argument("--port", type=int, help="listen port (smtp/http)")
    parser.add_argument("--queue-url", help="SQS queue URL (ses)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING ...")


def run(args: argparse.Namespace) -> int:
    from processors.settings import load_settings

    command = str(args.command)
    settings = load_settings()
    logging.basicConfig(level=(args.log_level or settings.log_level).upper())
    if not settings.kafka_broker_url:
        print(f"chat-notifier {command}: KAFKA_BROKER_URL is not set", file=sys.stderr)
        return EXIT_USAGE
    s = settings.inbound
    if command == "inbound-smtp":
        s.smtp_host, s.smtp_port = args.host or s.smtp_host, args.port or s.smtp_port
        serve = serve_smtp
    elif command == "inbound-http":
        s.http_host, s.http_port = args.host or s.http_host, args.port or s.http_port
        if s.http_secret is None:
            print(f"chat-notifier {command}: INBOUND__HTTP_SECRET is not set", file=sys.stderr)
            return EXIT_USAGE
        serve = serve_http
    else:
        s.ses_queue_url = args.queue_url or s.ses_queue_url
        if not s.ses_queue_url:
            print(f"chat-notifier {command}: no SQS queue (--queue-url)", file=sys.stderr)
            return EXIT_USAGE
        serve = serve_ses

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    try:
        asyncio.run(main())
    except BrokerUnreachableError as exc:
        # at start only: once running, a broker outage is answered per mail (451, 503)
        print(f"chat-notifier {command}: {exc}", file=sys.stderr)
        return EXIT_NO_BROKER
    return 0
