"""SMS through Twilio's Messages API (the twilio library, blocking, in a thread).

Twilio's error codes say what went wrong: invalid or non-mobile numbers are bad
addresses; 429/20429 and 5xx are transient (Twilio's exception drops the Retry-After
header, so our own backoff applies); the rest is permanent. Exception messages from
twilio contain the phone number, so they are never passed on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from processors.senders.errors import BadAddressError, PermanentError, TransientError
from processors.senders.render import SmsContent
from processors.settings import Settings

# Invalid 'To' number, not a valid phone number, not a mobile number, ...
BAD_NUMBER_CODES = frozenset({21211, 21214, 21217, 21401, 21407, 21421, 21614})
TRANSIENT_CODES = frozenset({20429, 20500, 20503, 30001})


class RebasedHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """Sends every Twilio request to ``base_url`` (a local stand-in) keeping the path.

    Twilio's own edge/region settings only rewrite ``*.twilio.com`` names, so a local
    endpoint needs the URL rewritten after the library built it.
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        rebased = self.base_url + parts.path + ("?" + parts.query if parts.query else "")
        return super().request(method, rebased, *args, **kwargs)


class TwilioSmsSender:
    channel = "sms"
    name = "twilio"

    def __init__(self, client: Client, *, messaging_service_sid: str | None = None) -> None:
        self.client = client
        self.messaging_service_sid = messaging_service_sid

    @classmethod
    def from_settings(cls, settings: Settings, channel: str = "sms") -> TwilioSmsSender:
        s = settings.sms
        if not s.twilio_account_sid or not s.twilio_auth_token:
            raise ValueError(
                "sms backend twilio needs SMS__TWILIO_ACCOUNT_SID and SMS__TWILIO_AUTH_TOKEN"
            )
        http: TwilioHttpClient
        if s.twilio_base_url:
            http = RebasedHttpClient(s.twilio_base_url, timeout=s.timeout_seconds)
        else:
            http = TwilioHttpClient(timeout=s.timeout_seconds)
        client = Client(
            s.twilio_account_sid, s.twilio_auth_token.get_secret_value(), http_client=http
        )
        return cls(client, messaging_service_sid=s.messaging_service_sid)

    async def send(self, delivery: Mapping[str, Any], content: Any) -> str:
        if not isinstance(content, SmsContent):
            raise PermanentError(f"twilio sender got {type(content).__name__}")
        if not content.from_ and not self.messaging_service_sid:
            raise PermanentError("no SMS sender: set AppSettings.sms_from or SMS__FROM_NUMBER")
        return await asyncio.to_thread(self._send, content)

    def _send(self, content: SmsContent) -> str:
        kwargs: dict[str, Any] = {"to": content.to, "body": content.body}
        if self.messaging_service_sid:
            kwargs["messaging_service_sid"] = self.messaging_service_sid
        else:
            kwargs["from_"] = content.from_
        try:
            message = self.client.messages.create(**kwargs)
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _map_error(int(exc.status or 0), int(exc.code or 0), content.to) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(f"twilio transport {type(exc).__name__}") from None
        except TwilioException as exc:
            raise PermanentError(f"twilio {type(exc).__name__}") from None
        return str(message.sid)

    async def close(self) -> None:
        return None


def _map_error(status: int, code: int, address: str) -> Exception:
    if code in BAD_NUMBER_CODES:
        return BadAddressError(f"twilio {status}/{code} invalid number", address=address)
    if status == 429 or status >= 500 or code in TRANSIENT_CODES:
        return TransientError(f"twilio {status}/{code}")
    return PermanentError(f"twilio {status}/{code}")
