"""The sender error taxonomy (contract §6).

Every channel backend raises only these, so the delivery service decides retry,
outcome and dead-letter without knowing any provider:

- :class:`TransientError` — worth retrying (throttling, 5xx, timeouts, connection
  resets); may carry the provider's ``Retry-After`` in seconds.
- :class:`PermanentError` — retrying the same request cannot help (rejected
  payload, bad credentials, account suspended). Dead-lettered for a human.
- :class:`BadAddressError` — the *address* is dead (FCM UNREGISTERED, Web Push
  404/410, Twilio invalid number), not the message: reported on
  ``notify.outcomes`` as ``invalid_address`` so the platform can clean it up.
- :class:`PartialSendError` — a multi-address delivery (push tokens, browser
  subscriptions) where some addresses failed; carries per-address results so one
  bad token never blocks the others.
"""

from __future__ import annotations

from collections.abc import Mapping


class SendError(Exception):
    """Root of every error a sender raises."""


class TransientError(SendError):
    """A failure that may go away; ``retry_after_s`` is the provider's hint, if any."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentError(SendError):
    """The provider refused the request in a way a retry cannot fix."""


class BadAddressError(PermanentError):
    """The recipient address (email, phone, push token, endpoint) is permanently invalid.

    ``address`` is kept on the exception for the Outcome record only; it must never be
    logged (``str(error)`` does not contain it).
    """

    def __init__(self, message: str, *, address: str) -> None:
        super().__init__(message)
        self.address = address


class PartialSendError(SendError):
    """Some addresses of a multi-address delivery failed.

    ``sent`` maps address -> provider id for the ones that went out; ``failed`` maps
    address -> the error for each one that did not. The service retries only the
    transient ones and reports the bad ones.
    """

    def __init__(self, sent: Mapping[str, str], failed: Mapping[str, SendError]) -> None:
        super().__init__(f"{len(failed)} of {len(sent) + len(failed)} addresses failed")
        self.sent = dict(sent)
        self.failed = dict(failed)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header holding delta-seconds; None if absent/unparseable.

    HTTP-date values are rare from these providers and would need a clock; they are
    treated as absent (the service's own backoff applies).
    """
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
