"""Browser push through Web Push with VAPID (pywebpush, blocking, in a thread).

Each subscription is sent on its own; 404/410 mean the subscription is gone (bad
address), 429 and 5xx are transient (429's Retry-After is honoured), anything else
is permanent. The VAPID claims dict is copied per call: pywebpush writes ``aud`` and
``exp`` into it, and a reused dict would carry another push service's audience.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import requests
from py_vapid import Vapid02
from pywebpush import WebPushException, webpush

from processors.senders.errors import (
    BadAddressError,
    PartialSendError,
    PermanentError,
    SendError,
    TransientError,
    parse_retry_after,
)
from processors.senders.render import BrowserContent
from processors.settings import Settings

GONE_STATUSES = frozenset({404, 410})


class WebPushBrowserSender:
    channel = "browser"
    name = "webpush"

    def __init__(
        self, vapid_private_key: str, vapid_subject: str, *, timeout_s: float = 10.0
    ) -> None:
        # parse once; a bad key fails the worker at start, not every delivery
        self.vapid = Vapid02.from_string(private_key=vapid_private_key)
        self.subject = vapid_subject
        self.timeout_s = timeout_s
        self.session = requests.Session()

    @classmethod
    def from_settings(cls, settings: Settings, channel: str = "browser") -> WebPushBrowserSender:
        s = settings.browser
        if s.vapid_private_key is None:
            raise ValueError("browser backend webpush needs BROWSER__VAPID_PRIVATE_KEY")
        return cls(
            s.vapid_private_key.get_secret_value(), s.vapid_subject, timeout_s=s.timeout_seconds
        )

    async def send(self, delivery: Mapping[str, Any], content: Any) -> str:
        if not isinstance(content, BrowserContent):
            raise PermanentError(f"webpush sender got {type(content).__name__}")
        if not content.subscriptions:
            raise PermanentError("no browser subscriptions")
        data = json.dumps(content.payload, ensure_ascii=False)
        results = await asyncio.gather(
            *(
                asyncio.to_thread(self._send_one, sub, data, content)
                for sub in content.subscriptions
            )
        )
        sent = {endpoint: r for endpoint, r in results if isinstance(r, str)}
        failed = {endpoint: r for endpoint, r in results if isinstance(r, SendError)}
        if failed:
            raise PartialSendError(sent, failed)
        return ",".join(sent.values())

    def _send_one(
        self, sub: Mapping[str, str], data: str, content: BrowserContent
    ) -> tuple[str, str | SendError]:
        endpoint = sub["endpoint"]
        info = {"endpoint": endpoint, "keys": {"p256dh": sub["p256dh"], "auth": sub["auth"]}}
        try:
            response = webpush(
                info,
                data,
                vapid_private_key=self.vapid,
                vapid_claims={"sub": self.subject},  # a fresh dict per call (see module doc)
                ttl=content.ttl_s,
                timeout=self.timeout_s,
                headers={"Urgency": content.urgency, "Topic": content.topic},
                requests_session=self.session,
            )
        except WebPushException as exc:
            status = int(exc.status_code or 0)
            if status in GONE_STATUSES:
                return endpoint, BadAddressError(
                    f"webpush {status} subscription gone", address=endpoint
                )
            if status == 429 or status >= 500:
                return endpoint, TransientError(
                    f"webpush {status}", retry_after_s=parse_retry_after(exc.retry_after)
                )
            return endpoint, PermanentError(f"webpush {status}")
        except (requests.ConnectionError, requests.Timeout) as exc:
            return endpoint, TransientError(f"webpush transport {type(exc).__name__}")
        except (ValueError, TypeError) as exc:
            # undecodable p256dh/auth keys: the stored subscription itself is unusable
            return endpoint, BadAddressError(
                f"webpush bad subscription keys ({type(exc).__name__})", address=endpoint
            )
        location = getattr(response, "headers", {}).get("Location") or ""
        return endpoint, str(location or getattr(response, "status_code", "sent"))

    async def close(self) -> None:
        self.session.close()
