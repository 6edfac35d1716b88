"""``DeliveryService``: one Delivery in, the records to publish out.

For each Delivery (JSON form) it: skips it if ``delivery_id`` was already sent
(:class:`SentStore`), renders it with the pure builders, waits for the channel's
rate limiter, sends through the backend with bounded retries, and returns an
Outcome for every delivery plus a DeadLetter when it gives up.

*Retries without stalling.* Retries happen in-line, bounded by
:data:`~processors.senders.retry.MAX_ATTEMPTS` attempts and
:data:`~processors.senders.retry.RETRY_BUDGET_S` seconds of waiting per delivery (a
``Retry-After`` that would exceed the budget ends the retries at once). The agent
runs with ``concurrency=N``, so a delivery that is backing off holds one of N slots
and the others keep flowing; Faust commits an offset only once every earlier
record is acked, so this keeps at-least-once (a crash mid-retry re-delivers, and the
sent-store dedupes). Scheduling retries as detached tasks was rejected: the offset
would be committed before the send, and a crash would lose the notification.
Beyond the budget the delivery is dead-lettered (stage ``deliver``) for a redrive.

*Idempotency.* A ``sent`` (or wholly ``invalid_address``) outcome is stored under
the delivery id after the provider accepted it; a delivery seen again returns the
stored outcome (republished: harmless, outcomes are keyed by delivery id) and sends
nothing. The one window left is a crash between the provider's accept and the
store write; those providers have no idempotency key, so that resend is accepted
(at-least-once) — email at least carries the same deterministic Message-ID.
``failed`` is not stored, so a redrive from the dead-letter topic retries.

*Failure isolation.* Each delivery is one recipient; within it each address (push
token, browser subscription) succeeds or fails on its own (``PartialSendError``):
only transient ones are retried, bad ones are reported one Outcome each.
Nothing here logs addresses, tokens or message text; ids and reasons go through
:func:`processors.logsafe.for_log`, so no record can forge a log line.

*Settings.* The AppSettings the service holds are checked once per new value
(:meth:`render.AppLinks.from_app_settings`): a refused link template, From, reply
domain or SMS sender falls back to its default, is logged once and counted per
delivery rendered with it (``chat_notifier_settings_fallbacks_total``); no delivery
fails because of a setting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram

from processors.logsafe import for_log
from processors.senders import render
from processors.senders.base import Content, Sender
from processors.senders.errors import (
    BadAddressError,
    PartialSendError,
    PermanentError,
    SendError,
    TransientError,
)
from processors.senders.retry import MAX_ATTEMPTS, RETRY_BUDGET_S, TokenBucket, next_delay
from processors.senders.tokens import ReplyKeys, make_reply_token
from processors.settings import Settings

log = logging.getLogger(__name__)

DAY_S = 86_400

PROVIDER_SECONDS = Histogram(
    "chat_notifier_provider_seconds",
    "One call to the channel's provider (SES, SMTP, Twilio, FCM, Web Push), failed ones too",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SETTINGS_FALLBACKS = PromCounter(
    "chat_notifier_settings_fallbacks_total",
    "Deliveries rendered with a default because an AppSettings field was refused",
    ["field"],
)


class SentStore(Protocol):
    """Delivery id -> the Outcome record stored once it was sent. The live agent backs
    it with a Faust Table (changelogged, partitioned like the channel topic)."""

    def get(self, delivery_id: str) -> Mapping[str, Any] | None: ...

    def put(self, delivery_id: str, outcome: Mapping[str, Any]) -> None: ...


class InMemorySentStore:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def get(self, delivery_id: str) -> Mapping[str, Any] | None:
        return self.data.get(delivery_id)

    def put(self, delivery_id: str, outcome: Mapping[str, Any]) -> None:
        self.data[delivery_id] = dict(outcome)


@dataclass(frozen=True, slots=True)
class DeliverySource:
    """Where the Delivery came from, for the DeadLetter record."""

    topic: str
    value: bytes
    key: bytes | None = None
    partition: int | None = None
    offset: int | None = None


@dataclass(slots=True)
class DeliveryResult:
    """What to publish: ``outcomes`` to ``notify.outcomes`` (key: delivery_id, in order;
    the last one per delivery is the overall status) and ``dead_letters`` to
    ``notify.dead-letter`` (key: the source record's key)."""

    outcomes: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    duplicate: bool = False


def addresses_of(delivery: Mapping[str, Any], channel: str) -> list[str]:
    """The addresses a delivery goes to, in the form reported in Outcome.address."""
    if channel == "email":
        return [str(delivery["email"])] if delivery.get("email") else []
    if channel == "sms":
        return [str(delivery["phone"])] if delivery.get("phone") else []
    if channel == "push":
        return [str(t) for t in delivery.get("push_tokens") or []]
    if channel == "browser":
        return [str(s["endpoint"]) for s in delivery.get("browser_subscriptions") or []]
    return []


def _narrow(content: Content, remaining: set[str]) -> Content:
    """The same content for only the ``remaining`` addresses (retrying a partial send)."""
    if isinstance(content, render.PushContent):
        return dataclasses.replace(content, tokens=[t for t in content.tokens if t in remaining])
    if isinstance(content, render.BrowserContent):
        subs = [s for s in content.subscriptions if s["endpoint"] in remaining]
        return dataclasses.replace(content, subscriptions=subs)
    return content


class DeliveryService:
    """Renders and sends Delivery records; pure of Faust (the agent adapts it).

    ``clock`` gives epoch seconds (record times, token expiry), ``monotonic`` drives
    the rate limiters, ``sleep`` waits; tests pass fakes for all three and ``rng``.
    """

    def __init__(
        self,
        settings: Settings,
        senders: Mapping[str, Sender],
        store: SentStore,
        *,
        app_settings: Mapping[str, Any] | None = None,
        templates: render.Templates | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        retry_budget_s: float = RETRY_BUDGET_S,
    ) -> None:
        self.settings = settings
        self.senders = dict(senders)
        self.store = store
        self._app_settings: dict[str, Any] = {}
        self.links = render.AppLinks()
        self.fallback_counts: Counter[str] = Counter()  # field -> deliveries (tests)
        self.app_settings = app_settings or {}
        self.templates = templates or render.Templates(settings.email.template_dir)
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.max_attempts = max_attempts
        self.retry_budget_s = retry_budget_s
        self.reply_keys = ReplyKeys.parse([k.get_secret_value() for k in settings.reply.token_keys])
        rates = {
            "email": settings.email.rate_per_second,
            "sms": settings.sms.rate_per_second,
            "push": settings.push.rate_per_second,
            "browser": settings.browser.rate_per_second,
        }
        self._in_flight: dict[str, asyncio.Event] = {}
        now = monotonic()
        self.limiters = {ch: TokenBucket(rate, now=now) for ch, rate in rates.items()}

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    @property
    def app_settings(self) -> Mapping[str, Any]:
        return self._app_settings

    @app_settings.setter
    def app_settings(self, value: Mapping[str, Any] | None) -> None:
        """Hold ``value``; check it only when it differs from the one held (the agent
        sets it before every delivery)."""
        record = dict(value or {})
        if record == self._app_settings and self._app_settings:
            return
        self._app_settings = record
        self.links = render.AppLinks.from_app_settings(record)
        for name, reason in self.links.fallbacks:
            log.warning("AppSettings %s refused (%s); using the default", name, for_log(reason))

    # ------------------------------------------------------------------ rendering

    def render(self, delivery: Mapping[str, Any]) -> Content:
        """The channel payload for ``delivery`` (pure builders + this service's settings)."""
        channel = delivery["channel"]
        now_ms = self.now_ms()
        links = self.links
        for name, _reason in links.fallbacks:
            self.fallback_counts[name] += 1
            SETTINGS_FALLBACKS.labels(name).inc()
        if channel == "email":
            token = make_reply_token(
                str(delivery["conversation_id"]),
                str(delivery["recipient_id"]),
                keys=self.reply_keys,
                now_ms=now_ms,
                ttl_s=self.settings.reply.token_ttl_days * DAY_S,
            )
            return render.build_email(delivery, links, token, now_ms, templates=self.templates)
        if channel == "sms":
            return render.build_sms(
                delivery,
                links,
                max_segments=self.settings.sms.max_segments,
                from_number=self.settings.sms.from_number,
            )
        if channel == "push":
            return render.build_push(delivery, links)
        if channel == "browser":
            return render.build_browser(delivery, links, ttl_s=self.settings.browser.ttl_seconds)
        raise PermanentError(f"unknown channel {channel!r}")

    # ------------------------------------------------------------------ records

    def _outcome(
        self,
        delivery: Mapping[str, Any],
        status: str,
        *,
        attempts: int,
        address: str | None = None,
        provider_id: str | None = None,
        detail: str | None = None,
    ) -> dict[str, Any]:
        return {
            "delivery_id": str(delivery["delivery_id"]),
            "flush_id": str(delivery.get("flush_id") or ""),
            "recipient_id": str(delivery.get("recipient_id") or ""),
            "channel": str(delivery.get("channel") or ""),
            "status": status,
            "address": address,
            "provider_id": provider_id,
            "attempts": attempts,
            "detail": detail,
            "ts": self.now_ms(),
        }

    def _dead_letter(
        self, delivery: Mapping[str, Any], source: DeliverySource | None, error: str
    ) -> dict[str, Any]:
        if source is None:
            topic = f"notify.{delivery.get('channel')}"
            source = DeliverySource(
                topic=topic,
                value=json.dumps(dict(delivery), sort_keys=True, default=str).encode(),
                key=str(delivery.get("recipient_id") or "").encode() or None,
            )
        return {
            "source_topic": source.topic,
            "partition": source.partition,
            "offset": source.offset,
            "key": source.key,
            "value": source.value,
            "error": error,
            "stage": "deliver",
            "ts": self.now_ms(),
        }

    # ------------------------------------------------------------------ the work

    async def handle(
        self, delivery: Mapping[str, Any], *, source: DeliverySource | None = None
    ) -> DeliveryResult:
        """Deliver once; never raises for a delivery problem (it becomes records).

        Concurrent calls for the same delivery id (the agent runs several instances,
        and a producer retry can put two copies next to each other) wait for the one
        in flight and then find its stored outcome, so the copy is not sent again.
        """
        delivery_id = str(delivery["delivery_id"])
        while (in_flight := self._in_flight.get(delivery_id)) is not None:
            await in_flight.wait()
        done = self._in_flight[delivery_id] = asyncio.Event()
        try:
            return await self._handle(delivery, source)
        finally:
            del self._in_flight[delivery_id]
            done.set()

    async def _handle(
        self, delivery: Mapping[str, Any], source: DeliverySource | None
    ) -> DeliveryResult:
        delivery_id = str(delivery["delivery_id"])
        channel = str(delivery.get("channel"))
        stored = self.store.get(delivery_id)
        if stored is not None:
            log.info(
                "delivery %s already done (%s); not sent again",
                for_log(delivery_id),
                for_log(stored.get("status")),
            )
            return DeliveryResult(outcomes=[dict(stored)], duplicate=True)

        result = DeliveryResult()
        sender = self.senders.get(channel)
        if sender is None:
            reason = f"no sender configured for channel {channel!r}"
            result.outcomes.append(self._outcome(delivery, "failed", attempts=0, detail=reason))
            result.dead_letters.append(self._dead_letter(delivery, source, reason))
            return result
        addresses = addresses_of(delivery, channel)
        if not addresses:
            # The decision step should not produce this; nothing to retry or redrive.
            result.outcomes.append(
                self._outcome(delivery, "failed", attempts=0, detail="delivery has no address")
            )
            return result
        try:
            content = self.render(delivery)
        except BadAddressError as exc:
            # an address that cannot be written into the message (a CR/LF in it): report
            # it for clean-up like a provider's refusal; terminal, so remembered
            outcome = self._outcome(
                delivery, "invalid_address", attempts=0, address=exc.address, detail=str(exc)
            )
            result.outcomes.append(outcome)
            self.store.put(delivery_id, outcome)
            log.info("delivery %s: %s", for_log(delivery_id), for_log(exc))
            return result
        except Exception as exc:  # a template bug must not stop the agent
            reason = f"render failed: {type(exc).__name__}"
            log.warning("delivery %s: %s", for_log(delivery_id), reason)
            result.outcomes.append(self._outcome(delivery, "failed", attempts=0, detail=reason))
            result.dead_letters.append(self._dead_letter(delivery, source, reason))
            return result
        return await self._send_with_retries(delivery, sender, content, addresses, source)

    async def _send_with_retries(
        self,
        delivery: Mapping[str, Any],
        sender: Sender,
        content: Content,
        addresses: list[str],
        source: DeliverySource | None,
    ) -> DeliveryResult:
        delivery_id = str(delivery["delivery_id"])
        channel = str(delivery["channel"])
        limiter = self.limiters.get(channel)
        remaining = set(addresses)
        sent: dict[str, str] = {}
        bad: dict[str, str] = {}
        failure: str | None = None  # why we stopped without sending to everyone
        waited_s = 0.0
        attempts = 0
        while remaining:
            attempts += 1
            if limiter is not None:
                wait = limiter.reserve(self.monotonic())
                if wait > 0:
                    await self.sleep(wait)
            retry_after: float | None = None
            try:
                # the provider call alone (not the rate limiter's wait), failures too
                with PROVIDER_SECONDS.labels(channel).time():
                    provider_id = await sender.send(delivery, _narrow(content, remaining))
                sent.update({a: provider_id for a in remaining})
                remaining.clear()
                break
            except PartialSendError as exc:
                sent.update(exc.sent)
                remaining -= set(exc.sent)
                transient_hints: list[float] = []
                for address, error in exc.failed.items():
                    if isinstance(error, BadAddressError):
                        bad[address] = str(error)
                        remaining.discard(address)
                    elif isinstance(error, TransientError):
                        failure = f"transient: {error}"
                        if error.retry_after_s is not None:
                            transient_hints.append(error.retry_after_s)
                    else:
                        failure = f"permanent: {error}"
                        remaining.discard(address)
                if not remaining or not any(
                    isinstance(exc.failed.get(a), TransientError) for a in remaining
                ):
                    break
                retry_after = max(transient_hints) if transient_hints else None
            except BadAddressError as exc:
                bad[exc.address] = str(exc)
                remaining.clear()  # multi-address backends raise PartialSendError instead
                break
            except PermanentError as exc:
                failure = f"permanent: {exc}"
                break
            except TransientError as exc:
                failure = f"transient: {exc}"
                retry_after = exc.retry_after_s
            except SendError as exc:
                failure = f"error: {exc}"
                break
            except Exception as exc:  # a bug or an unmapped library error: never kill the agent
                failure = f"unexpected {type(exc).__name__}"
                # The frames, not the exception's text: that may carry record data
                # (ids, addresses) and would put raw CR/LF into the log.
                log.error(
                    "delivery %s: unexpected %s from %s\n%s",
                    for_log(delivery_id),
                    type(exc).__name__,
                    sender.name,
                    "".join(traceback.format_tb(exc.__traceback__)).rstrip(),
                )
                break
            if attempts >= self.max_attempts:
                failure = f"{failure}; gave up after {attempts} attempts"
                break
            delay = next_delay(attempts, retry_after_s=retry_after, rng=self.rng)
            if waited_s + delay > self.retry_budget_s:
                failure = f"{failure}; retry budget {self.retry_budget_s:g}s exhausted after {attempts} attempts"
                break
            log.info(
                "delivery %s attempt %d failed (%s); retry in %.2fs",
                for_log(delivery_id),
                attempts,
                for_log(failure),
                delay,
            )
            await self.sleep(delay)
            waited_s += delay

        result = DeliveryResult()
        for address, reason in bad.items():
            result.outcomes.append(
                self._outcome(
                    delivery, "invalid_address", attempts=attempts, address=address, detail=reason
                )
            )
        failed_n = len(addresses) - len(sent) - len(bad)
        if sent:
            ids = sorted(set(sent.values()))
            detail = None
            if len(addresses) > 1:
                detail = f"sent to {len(sent)} of {len(addresses)} addresses"
                if failure and failed_n:
                    detail += f"; {failed_n} failed: {failure}"
            outcome = self._outcome(
                delivery, "sent", attempts=attempts, provider_id=",".join(ids), detail=detail
            )
            result.outcomes.append(outcome)
            self.store.put(delivery_id, outcome)
            if failure and failed_n:
                result.dead_letters.append(self._dead_letter(delivery, source, failure))
        elif failure and failed_n:
            result.outcomes.append(
                self._outcome(delivery, "failed", attempts=attempts, detail=failure)
            )
            result.dead_letters.append(self._dead_letter(delivery, source, failure))
        elif bad:
            # every address is dead: terminal, remember it so a redelivery is a no-op
            self.store.put(delivery_id, result.outcomes[-1])
        status = result.outcomes[-1]["status"] if result.outcomes else "?"
        log.info(
            "delivery %s channel=%s status=%s attempts=%d sent=%d bad=%d",
            for_log(delivery_id),
            for_log(channel),
            status,
            attempts,
            len(sent),
            len(bad),
        )
        return result
