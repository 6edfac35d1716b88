"""Sender throughput against the local stand-ins, and where the time goes.

For each backend: deliveries/s one at a time and with 16 in flight (as the agent's
concurrency does), and the split of one delivery's wall time between our code
(render + service bookkeeping, measured around the backend call) and the client
library + network + stand-in (the backend's ``send``). The stand-ins run in this
process, so their threads share the GIL with the client: "library + network" is an
upper bound for a remote provider's local cost.

    python -m bench senders          # or: make bench
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from statistics import median
from tempfile import TemporaryDirectory
from typing import Any

from processors.senders.base import Sender
from processors.senders.service import DeliveryService, InMemorySentStore
from processors.settings import Settings, load_settings

N_SEQUENTIAL = 150
N_CONCURRENT = 300
CONCURRENCY = 16


class TimedSender:
    """Wraps a backend to measure the time spent inside ``send``."""

    def __init__(self, inner: Sender) -> None:
        self.inner = inner
        self.channel = inner.channel
        self.name = inner.name
        self.send_s: list[float] = []

    async def send(self, delivery: Mapping[str, Any], content: Any) -> str:
        started = time.perf_counter()
        try:
            return await self.inner.send(delivery, content)
        finally:
            self.send_s.append(time.perf_counter() - started)

    async def close(self) -> None:
        await self.inner.close()


def _fast(settings: Settings) -> Settings:
    for section in (settings.email, settings.sms, settings.push, settings.browser):
        section.rate_per_second = 1e9
    return settings


@contextlib.contextmanager
def backends(tmp: Path) -> Iterator[dict[str, tuple[str, Settings, Any]]]:
    """name -> (channel, settings, extra delivery fields), stand-ins running."""
    from aiosmtpd.controller import Controller
    from moto.server import ThreadedMotoServer

    from tests.senders.conftest import FCM_BEARER, TWILIO_SID, TWILIO_TOKEN, SmtpCapture
    from tests.senders.standins import FcmStandIn, TwilioStandIn, WebPushStandIn, free_port

    with contextlib.ExitStack() as stack:
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        stack.callback(moto.stop)
        host, port = moto.get_host_and_port()
        ses_url = f"http://{host}:{port}"
        import boto3

        boto3.client(
            "sesv2",
            endpoint_url=ses_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_email_identity(EmailIdentity="notifications@chat.example")

        smtp_port = free_port()
        smtp = Controller(SmtpCapture(), hostname="127.0.0.1", port=smtp_port)
        smtp.start()
        stack.callback(smtp.stop)

        twilio = TwilioStandIn(TWILIO_SID, TWILIO_TOKEN).start()
        stack.callback(twilio.stop)
        fcm = FcmStandIn(FCM_BEARER).start()
        stack.callback(fcm.stop)

        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
        from py_vapid import Vapid, b64urlencode

        v = Vapid()
        v.generate_keys()
        vapid_private = b64urlencode(
            v.private_key.private_numbers().private_value.to_bytes(32, "big")
        )
        vapid_public = b64urlencode(
            v.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        )
        webpush = WebPushStandIn(vapid_public).start()
        stack.callback(webpush.stop)
        sub = webpush.subscribe()

        yield {
            "email/outbox": ("email", load_settings(outbox_dir=tmp / "outbox"), {}),
            "email/ses (moto)": (
                "email",
                load_settings(
                    email={
                        "backend": "ses",
                        "ses_endpoint_url": ses_url,
                        "ses_access_key_id": "testing",
                        "ses_secret_access_key": "testing",
                    }
                ),
                {},
            ),
            "email/smtp (aiosmtpd)": (
                "email",
                load_settings(
                    email={"backend": "smtp", "smtp_host": "127.0.0.1", "smtp_port": smtp_port}
                ),
                {},
            ),
            "sms/twilio": (
                "sms",
                load_settings(
                    sms={
                        "backend": "twilio",
                        "twilio_account_sid": TWILIO_SID,
                        "twilio_auth_token": TWILIO_TOKEN,
                        "twilio_base_url": twilio.base_url,
                        "from_number": "+15017122661",
                    }
                ),
                {},
            ),
            "push/fcm (1 token)": (
                "push",
                load_settings(
                    push={
                        "backend": "fcm",
                        "fcm_project_id": "bench",
                        "fcm_static_token": FCM_BEARER,
                        "fcm_url": fcm.base_url + "/v1/projects/{0}/messages:send",
                    }
                ),
                {"push_tokens": ["tok-1"]},
            ),
            "browser/webpush": (
                "browser",
                load_settings(browser={"backend": "webpush", "vapid_private_key": vapid_private}),
                {"browser_subscriptions": [sub]},
            ),
        }


async def _measure(
    name: str, channel: str, settings: Settings, extra: dict[str, Any]
) -> dict[str, float]:
    from processors.senders.base import create_sender
    from tests.senders.factories import make_delivery

    settings = _fast(settings)
    timed = TimedSender(create_sender(channel, settings))
    service = DeliveryService(settings, {channel: timed}, InMemorySentStore())

    def delivery(i: int) -> dict[str, Any]:
        return make_delivery(channel, n=3, recipient_id=f"{name}-u{i}", **extra)

    await service.handle(delivery(-1))  # warm-up: lazy imports, first connection
    timed.send_s.clear()
    render_s: list[float] = []
    handle_s: list[float] = []
    for i in range(N_SEQUENTIAL):
        d = delivery(i)
        t0 = time.perf_counter()
        service.render(d)
        t1 = time.perf_counter()
        result = await service.handle(d)
        t2 = time.perf_counter()
        assert result.outcomes[-1]["status"] == "sent", result.outcomes
        render_s.append(t1 - t0)
        handle_s.append(t2 - t1)
    sequential_rate = N_SEQUENTIAL / sum(handle_s)
    send_total = sum(timed.send_s)
    ours_total = sum(handle_s) - send_total

    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with semaphore:
            await service.handle(delivery(10_000 + i))

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(N_CONCURRENT)))
    concurrent_rate = N_CONCURRENT / (time.perf_counter() - t0)
    await timed.close()
    return {
        "seq_per_s": sequential_rate,
        "conc_per_s": concurrent_rate,
        "handle_ms": median(handle_s) * 1000,
        "render_ms": median(render_s) * 1000,
        "ours_pct": 100 * ours_total / sum(handle_s),
        "lib_pct": 100 * send_total / sum(handle_s),
    }


def main() -> None:
    import logging

    logging.getLogger("processors.senders").setLevel(logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    with TemporaryDirectory() as tmp, backends(Path(tmp)) as configured:
        rows = []
        for name, (channel, settings, extra) in configured.items():
            rows.append((name, asyncio.run(_measure(name, channel, settings, extra))))
    print(
        f"senders: {N_SEQUENTIAL} deliveries one at a time, {N_CONCURRENT} with {CONCURRENCY} in flight;"
    )
    print("3 messages per delivery; stand-ins on 127.0.0.1 in this process")
    header = f"{'backend':24} {'seq/s':>8} {'conc/s':>8} {'p50 ms':>8} {'render ms':>10} {'ours %':>7} {'lib+net %':>10}"
    print(header)
    print("-" * len(header))
    for name, r in rows:
        print(
            f"{name:24} {r['seq_per_s']:8.0f} {r['conc_per_s']:8.0f} {r['handle_ms']:8.2f} "
            f"{r['render_ms']:10.3f} {r['ours_pct']:7.1f} {r['lib_pct']:10.1f}"
        )
    print("ours = render + retry/idempotency/outcome bookkeeping; lib+net = the backend's send()")
    print("(client library, thread hop, loopback HTTP/SMTP, stand-in).")


if __name__ == "__main__":
    main()
