"""Email through AWS SES v2 (boto3), sent as Raw MIME.

Raw, not Simple: Simple sends drop Reply-To headers we set ourselves (List-Unsubscribe,
threading) and keep only one body part. boto3 is blocking, so calls run in a thread;
botocore's own retries are off (``max_attempts=1``) because the delivery service owns
retry timing, budget and dead-lettering.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from email.utils import parseaddr
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from processors.senders.errors import (
    BadAddressError,
    PermanentError,
    TransientError,
    parse_retry_after,
)
from processors.senders.render import EmailContent, to_mime_bytes
from processors.settings import Settings

TRANSIENT_CODES = frozenset(
    {
        "TooManyRequestsException",
        "Throttling",
        "ThrottlingException",
        "LimitExceededException",
        "ServiceUnavailable",
        "InternalFailure",
        "RequestTimeout",
    }
)


class SesEmailSender:
    channel = "email"
    name = "ses"

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    def from_settings(cls, settings: Settings, channel: str = "email") -> SesEmailSender:
        s = settings.email
        config = botocore.config.Config(
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=s.ses_timeout_seconds,
            read_timeout=s.ses_timeout_seconds,
            max_pool_connections=32,
        )
        kwargs: dict[str, Any] = {"region_name": s.ses_region, "config": config}
        if s.ses_endpoint_url:
            kwargs["endpoint_url"] = s.ses_endpoint_url
        if s.ses_access_key_id and s.ses_secret_access_key:
            kwargs["aws_access_key_id"] = s.ses_access_key_id
            kwargs["aws_secret_access_key"] = s.ses_secret_access_key.get_secret_value()
        return cls(boto3.client("sesv2", **kwargs))

    async def send(self, delivery: Mapping[str, Any], content: Any) -> str:
        if not isinstance(content, EmailContent):
            raise PermanentError(f"ses sender got {type(content).__name__}")
        return await asyncio.to_thread(self._send, content)

    def _send(self, content: EmailContent) -> str:
        to_address = parseaddr(content.to)[1]
        try:
            response = self.client.send_email(
                FromEmailAddress=parseaddr(content.from_)[1],
                Destination={"ToAddresses": [to_address]},
                Content={"Raw": {"Data": to_mime_bytes(content)}},
            )
        except botocore.exceptions.ClientError as exc:
            raise _map_client_error(exc, to_address) from None
        except (
            botocore.exceptions.ConnectionError,
            botocore.exceptions.HTTPClientError,
        ) as exc:
            raise TransientError(f"ses transport {type(exc).__name__}") from None
        except botocore.exceptions.BotoCoreError as exc:  # e.g. NoCredentialsError
            raise PermanentError(f"ses {type(exc).__name__}") from None
        return str(response["MessageId"])

    async def close(self) -> None:
        self.client.close()


def _map_client_error(exc: botocore.exceptions.ClientError, address: str) -> Exception:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    meta = exc.response.get("ResponseMetadata", {})
    status = int(meta.get("HTTPStatusCode") or 0)
    headers = meta.get("HTTPHeaders") or {}
    if code in TRANSIENT_CODES or status == 429 or status >= 500:
        return TransientError(
            f"ses {status} {code}", retry_after_s=parse_retry_after(headers.get("retry-after"))
        )
    message = str(error.get("Message", "")).lower()
    if code in ("BadRequestException", "InvalidParameterValue") and "address" in message:
        # SES rejects syntactically bad recipients synchronously; others bounce later
        return BadAddressError(f"ses {status} {code}: invalid recipient", address=address)
    return PermanentError(f"ses {status} {code}")
