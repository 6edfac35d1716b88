"""Retry timing and rate limiting: pure, time and randomness passed in.

Retries are *in-line but bounded* (see :mod:`processors.senders.service`): at most
:data:`MAX_ATTEMPTS` attempts and at most :data:`RETRY_BUDGET_S` seconds of waiting
per delivery, so one failing provider delays one delivery slot by seconds, never a
partition by minutes. What still fails goes to ``notify.dead-letter``.
"""

from __future__ import annotations

import random

RETRY_BASE_S = 0.5  # first backoff ceiling
RETRY_MAX_S = 8.0  # backoff ceiling never grows past this
RETRY_AFTER_MAX_S = 60.0  # a provider's Retry-After is honoured up to this
RETRY_BUDGET_S = 20.0  # total in-line waiting allowed for one delivery
MAX_ATTEMPTS = 5  # attempts per delivery, the first one included


def backoff_ceiling_s(attempt: int) -> float:
    """The full-jitter ceiling after ``attempt`` failed attempts (1-based): base * 2^(n-1), capped."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    # min() before the power would overflow for absurd attempt numbers
    exponent = min(attempt - 1, 30)
    return min(RETRY_MAX_S, RETRY_BASE_S * (2.0**exponent))


def next_delay(attempt: int, *, retry_after_s: float | None = None, rng: random.Random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Full jitter (AWS architecture blog): uniform in ``[0, ceiling]`` where the ceiling
    doubles per attempt up to :data:`RETRY_MAX_S`; spreads retries of many workers
    hitting the same throttled provider. A provider's ``Retry-After`` is a floor
    (never retry earlier than asked), itself capped at :data:`RETRY_AFTER_MAX_S`.
    Invariant: ``0 <= result <= max(RETRY_MAX_S, min(retry_after_s, RETRY_AFTER_MAX_S))``.
    """
    delay = rng.uniform(0.0, backoff_ceiling_s(attempt))
    if retry_after_s is not None and retry_after_s > 0:
        delay = max(delay, min(retry_after_s, RETRY_AFTER_MAX_S))
    return delay


class TokenBucket:
    """A token-bucket rate limiter driven by the caller's clock (seconds, monotonic).

    ``reserve(now)`` takes one token and returns how long the caller must wait
    before using it (0.0 when a token was available). Reservations may drive the
    bucket negative, so concurrent callers queue fairly instead of all waking at once.
    """

    def __init__(self, rate_per_s: float, *, burst: float | None = None, now: float = 0.0) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rate_per_s = rate_per_s
        self.burst = burst if burst is not None else max(1.0, rate_per_s)
        self._tokens = self.burst
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate_per_s)
            self._updated = now

    def reserve(self, now: float) -> float:
        """Take a token; return the seconds to wait before acting on it."""
        self._refill(now)
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate_per_s
