"""DeliveryService with a scripted in-memory sender and a fake clock (no network)."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from processors.senders.base import create_sender
from processors.senders.errors import (
    BadAddressError,
    PartialSendError,
    PermanentError,
    SendError,
    TransientError,
)
from processors.senders.render import PushContent
from processors.senders.retry import RETRY_BUDGET_S
from processors.senders.service import DeliveryService, DeliverySource, InMemorySentStore
from processors.settings import Settings, load_settings
from tests.senders.factories import T0_MS, make_delivery


class FakeClock:
    def __init__(self) -> None:
        self.now = T0_MS / 1000
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class ScriptedSender:
    """Raises the scripted errors in order, then succeeds."""

    name = "scripted"

    def __init__(self, channel: str, script: list[Any] | None = None) -> None:
        self.channel = channel
        self.script = list(script or [])
        self.calls: list[Any] = []

    async def send(self, delivery: Mapping[str, Any], content: Any) -> str:
        self.calls.append(content)
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, BaseException):
                raise step
            if callable(step):
                return str(step(content))
        return f"id-{len(self.calls)}"

    async def close(self) -> None:
        return None


def _service(
    sender: ScriptedSender, clock: FakeClock, settings: Settings | None = None, **kw: Any
) -> DeliveryService:
    settings = settings or load_settings()
    settings.sms.rate_per_second = 1000.0
    settings.email.rate_per_second = 1000.0
    return DeliveryService(
        settings,
        {sender.channel: sender},
        kw.pop("store", InMemorySentStore()),
        clock=clock.time,
        monotonic=clock.time,
        sleep=clock.sleep,
        rng=random.Random(7),
        **kw,
    )


async def test_sent_once_even_when_delivered_twice() -> None:
    clock, sender = FakeClock(), ScriptedSender("email")
    service = _service(sender, clock)
    delivery = make_delivery("email")
    first = await service.handle(delivery)
    second = await service.handle(delivery)
    assert len(sender.calls) == 1
    assert [o["status"] for o in first.outcomes] == ["sent"]
    assert second.duplicate and second.outcomes == first.outcomes  # republished, not resent
    assert first.outcomes[0]["provider_id"] == "id-1" and first.outcomes[0]["attempts"] == 1
    assert first.dead_letters == []


async def test_concurrent_copies_are_sent_once() -> None:
    clock, sender = FakeClock(), ScriptedSender("sms", [TransientError("slow")])
    service = _service(sender, clock)
    delivery = make_delivery("sms")
    results = await asyncio.gather(*(service.handle(delivery) for _ in range(3)))
    assert len(sender.calls) == 2  # one failed attempt + its retry; the copies waited
    assert [r.duplicate for r in results] == [False, True, True]


async def test_transient_errors_retry_with_backoff_then_succeed() -> None:
    clock, sender = (
        FakeClock(),
        ScriptedSender("sms", [TransientError("503"), TransientError("timeout")]),
    )
    result = await _service(sender, clock).handle(make_delivery("sms"))
    assert [o["status"] for o in result.outcomes] == ["sent"]
    assert result.outcomes[0]["attempts"] == 3
    assert len(clock.slept) == 2 and all(0 <= s <= 1.0 for s in clock.slept)


async def test_retry_after_is_honoured() -> None:
    clock, sender = FakeClock(), ScriptedSender("sms", [TransientError("429", retry_after_s=3)])
    result = await _service(sender, clock).handle(make_delivery("sms"))
    assert result.outcomes[-1]["status"] == "sent"
    assert clock.slept == [3.0]


async def test_retries_exhausted_dead_letters_with_source() -> None:
    clock = FakeClock()
    sender = ScriptedSender("sms", [TransientError("503")] * 10)
    source = DeliverySource(
        topic="notify.sms", value=b"raw-bytes", key=b"u-bob", partition=2, offset=41
    )
    result = await _service(sender, clock).handle(make_delivery("sms"), source=source)
    assert len(sender.calls) == 5  # MAX_ATTEMPTS
    (outcome,) = result.outcomes
    assert outcome["status"] == "failed" and outcome["attempts"] == 5
    (dead,) = result.dead_letters
    assert dead["stage"] == "deliver" and dead["value"] == b"raw-bytes"
    assert (dead["source_topic"], dead["partition"], dead["offset"], dead["key"]) == (
        "notify.sms",
        2,
        41,
        b"u-bob",
    )
    assert "gave up after 5 attempts" in dead["error"]
    # failed is not remembered: a redrive tries again
    again = await _service(ScriptedSender("sms"), clock, store=InMemorySentStore()).handle(
        make_delivery("sms")
    )
    assert again.outcomes[-1]["status"] == "sent"


async def test_long_retry_after_ends_retries_within_budget() -> None:
    clock = FakeClock()
    sender = ScriptedSender("sms", [TransientError("429", retry_after_s=RETRY_BUDGET_S + 30)])
    result = await _service(sender, clock).handle(make_delivery("sms"))
    assert len(sender.calls) == 1 and clock.slept == []  # never sleeps past the budget
    assert result.outcomes[0]["status"] == "failed"
    assert "budget" in result.dead_letters[0]["error"]


async def test_permanent_error_is_not_retried() -> None:
    clock, sender = FakeClock(), ScriptedSender("email", [PermanentError("400 rejected")])
    result = await _service(sender, clock).handle(make_delivery("email"))
    assert len(sender.calls) == 1
    assert result.outcomes[0]["status"] == "failed" and len(result.dead_letters) == 1


async def test_bad_address_is_reported_and_remembered() -> None:
    clock = FakeClock()
    sender = ScriptedSender("sms", [BadAddressError("twilio 21211", address="+15558675310")])
    service = _service(sender, clock)
    result = await service.handle(make_delivery("sms"))
    (outcome,) = result.outcomes
    assert outcome["status"] == "invalid_address" and outcome["address"] == "+15558675310"
    assert result.dead_letters == []
    assert (await service.handle(make_delivery("sms"))).duplicate


async def test_push_partial_failure_isolated_per_token() -> None:
    clock = FakeClock()

    def tokens_seen(content: PushContent) -> str:
        assert content.tokens == ["tok-b"]  # only the transient one is retried
        return "pid-b"

    sender = ScriptedSender(
        "push",
        [
            PartialSendError(
                sent={"tok-c": "pid-c"},
                failed={
                    "tok-a": BadAddressError("UNREGISTERED", address="tok-a"),
                    "tok-b": TransientError("QUOTA_EXCEEDED"),
                },
            ),
            tokens_seen,
        ],
    )
    delivery = make_delivery("push", push_tokens=["tok-a", "tok-b", "tok-c"])
    result = await _service(sender, clock).handle(delivery)
    statuses = [(o["status"], o["address"]) for o in result.outcomes]
    assert statuses == [("invalid_address", "tok-a"), ("sent", None)]
    assert result.outcomes[-1]["provider_id"] == "pid-b,pid-c"
    assert result.outcomes[-1]["detail"] == "sent to 2 of 3 addresses"
    assert result.dead_letters == []


async def test_unexpected_exception_and_missing_address_do_not_raise() -> None:
    clock = FakeClock()
    result = await _service(ScriptedSender("email", [RuntimeError("bug")]), clock).handle(
        make_delivery("email")
    )
    assert (
        result.outcomes[0]["status"] == "failed" and "RuntimeError" in result.outcomes[0]["detail"]
    )
    assert len(result.dead_letters) == 1
    result = await _service(ScriptedSender("email"), clock).handle(
        make_delivery("email", email=None)
    )
    assert result.outcomes[0]["detail"] == "delivery has no address" and result.dead_letters == []
    result = await _service(ScriptedSender("sms"), clock).handle(make_delivery("push"))
    assert result.outcomes[0]["status"] == "failed" and len(result.dead_letters) == 1


async def test_rate_limit_spaces_sends() -> None:
    clock, sender = FakeClock(), ScriptedSender("sms")
    settings = load_settings()
    service = _service(sender, clock, settings)
    service.limiters["sms"].__init__(2.0, burst=1, now=clock.time())  # type: ignore[misc]
    for i in range(3):
        await service.handle(make_delivery("sms", recipient_id=f"u{i}"))
    assert clock.slept == [0.5, 0.5]


async def test_outbox_writes_what_would_be_sent(tmp_path: Path) -> None:
    settings = load_settings(outbox_dir=tmp_path)
    clock = FakeClock()
    senders = {ch: create_sender(ch, settings) for ch in ("email", "sms", "push", "browser")}
    service = DeliveryService(
        settings, senders, InMemorySentStore(), clock=clock.time, sleep=clock.sleep
    )
    sub = {"endpoint": "https://push.example/s1", "p256dh": "p", "auth": "a"}
    for ch in senders:
        result = await service.handle(make_delivery(ch, browser_subscriptions=[sub]))
        assert result.outcomes[-1]["status"] == "sent", result
    index = [json.loads(line) for line in (tmp_path / "outbox.jsonl").read_text().splitlines()]
    assert sorted(i["channel"] for i in index) == ["browser", "email", "push", "sms"]
    files = {i["channel"]: (tmp_path / i["file"]) for i in index}
    eml = files["email"].read_bytes()
    assert files["email"].suffix == ".eml" and b"Reply-To: reply+k1-" in eml
    assert "Alice: message 0" in files["sms"].read_text()
    assert json.loads(files["push"].read_text())["collapse_key"] == "conv-1"
    assert json.loads(files["browser"].read_text())["payload"]["tag"] == "conv-1"


def test_error_messages_never_carry_the_address() -> None:
    err = BadAddressError("twilio 21211 invalid number", address="+15558675310")
    assert "+1555" not in str(err) and isinstance(err, SendError)


@pytest.mark.parametrize("channel", ["email", "sms", "push", "browser"])
def test_registry_defaults_to_outbox(channel: str) -> None:
    assert create_sender(channel, load_settings()).name == "outbox"
