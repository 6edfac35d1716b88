"""Mobile push through Firebase Cloud Messaging (firebase-admin, HTTP v1).

One ``send_each`` call for all of the recipient's tokens; each token succeeds or
fails on its own, reported through ``PartialSendError`` so a dead token never
blocks the others. UNREGISTERED, INVALID_ARGUMENT and SENDER_ID_MISMATCH mean the
token is dead (bad address); quota, 5xx and timeouts are transient.

firebase-admin retries HTTP 500/503 itself (4 times, ~7 s); that is switched off here
(the delivery service owns retry timing). ``fcm_url`` points the client at a stand-in
(a private attribute of the messaging service: firebase-admin is pinned for that).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from typing import Any

import firebase_admin
import google.oauth2.credentials
import requests.adapters
from firebase_admin import credentials, exceptions, messaging
from urllib3.util import retry as urllib3_retry

from processors.senders.errors import (
    BadAddressError,
    PartialSendError,
    PermanentError,
    SendError,
    TransientError,
    parse_retry_after,
)
from processors.senders.render import PushContent
from processors.settings import Settings

_app_names = itertools.count(1)
FCM_MAX_TOKENS = 500  # send_each limit


class StaticTokenCredential(credentials.Base):  # type: ignore[misc]
    """A bearer token that never expires: for local stand-ins only (no token exchange)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_credential(self) -> google.oauth2.credentials.Credentials:
        return google.oauth2.credentials.Credentials(token=self._token)  # type: ignore[no-untyped-call]


class FcmPushSender:
    channel = "push"
    name = "fcm"

    def __init__(
        self,
        credential: Any,
        project_id: str | None,
        *,
        fcm_url: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        options: dict[str, Any] = {"httpTimeout": timeout_s}
        if project_id:
            options["projectId"] = project_id
        self.app = firebase_admin.initialize_app(
            credential, options, name=f"chat-notifier-push-{next(_app_names)}"
        )
        service = messaging._get_messaging_service(self.app)
        if fcm_url:
            service._fcm_url = fcm_url.format(service._project_id)
        # no library retries: one attempt per send_each, our backoff decides the rest
        no_retry = urllib3_retry.Retry(total=0, connect=0, read=0, status=0, redirect=0)
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=16, pool_maxsize=100, max_retries=no_retry
        )
        for prefix in ("http://", "https://", "https://fcm.googleapis.com"):
            service._client.session.mount(prefix, adapter)

    @classmethod
    def from_settings(cls, settings: Settings, channel: str = "push") -> FcmPushSender:
        s = settings.push
        credential: Any
        if s.fcm_static_token is not None:
            credential = StaticTokenCredential(s.fcm_static_token.get_secret_value())
            if not s.fcm_project_id:
                raise ValueError("PUSH__FCM_PROJECT_ID is required with a static token")
        elif s.fcm_credentials_file is not None:
            credential = credentials.Certificate(str(s.fcm_credentials_file))
        else:
            raise ValueError("push backend fcm needs PUSH__FCM_CREDENTIALS_FILE")
        return cls(credential, s.fcm_project_id, fcm_url=s.fcm_url, timeout_s=s.timeout_seconds)

    @staticmethod
    def build_message(content: PushContent, token: str) -> messaging.Message:
        return messaging.Message(
            token=token,
            notification=messaging.Notification(title=content.title, body=content.body),
            data=content.data,
            android=messaging.AndroidConfig(
                collapse_key=content.collapse_key,
                priority="high",
                notification=messaging.AndroidNotification(tag=content.collapse_key),
            ),
            apns=messaging.APNSConfig(headers={"apns-collapse-id": content.collapse_key}),
        )

    async def send(self, delivery: Mapping[str, Any], content: Any) -> str:
        if not isinstance(content, PushContent):
            raise PermanentError(f"fcm sender got {type(content).__name__}")
        if not content.tokens:
            raise PermanentError("no push tokens")
        return await asyncio.to_thread(self._send, content)

    def _send(self, content: PushContent) -> str:
        sent: dict[str, str] = {}
        failed: dict[str, SendError] = {}
        for start in range(0, len(content.tokens), FCM_MAX_TOKENS):
            tokens = content.tokens[start : start + FCM_MAX_TOKENS]
            messages = [self.build_message(content, t) for t in tokens]
            try:
                batch = messaging.send_each(messages, app=self.app)
            except exceptions.FirebaseError as exc:
                raise _map_error(exc, "") from None
            for token, response in zip(tokens, batch.responses, strict=True):
                if response.success:
                    sent[token] = str(response.message_id)
                else:
                    failed[token] = _map_error(response.exception, token)
        if failed:
            raise PartialSendError(sent, failed)
        return ",".join(sent.values())

    async def close(self) -> None:
        await asyncio.to_thread(firebase_admin.delete_app, self.app)


def _map_error(exc: Exception | None, token: str) -> SendError:
    name = type(exc).__name__
    if isinstance(
        exc,
        messaging.UnregisteredError
        | messaging.SenderIdMismatchError
        | exceptions.InvalidArgumentError,
    ):
        return BadAddressError(f"fcm {name}", address=token)
    if isinstance(
        exc,
        messaging.QuotaExceededError
        | exceptions.UnavailableError
        | exceptions.InternalError
        | exceptions.DeadlineExceededError
        | exceptions.ResourceExhaustedError,
    ):
        response = getattr(exc, "http_response", None)
        header = response.headers.get("Retry-After") if response is not None else None
        return TransientError(f"fcm {name}", retry_after_s=parse_retry_after(header))
    return PermanentError(f"fcm {name}")
