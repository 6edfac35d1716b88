"""Email over SMTP (stdlib smtplib in a thread: one connection per message).

A 5xx refusal of the recipient that means "no such mailbox" (550/551/553) is a bad
address; 4xx replies and network trouble are transient; authentication and other 5xx
replies are permanent.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Mapping
from email.utils import parseaddr
from typing import Any

from processors.senders.errors import BadAddressError, PermanentError, TransientError
from processors.senders.render import EmailContent, to_mime_bytes
from processors.settings import Settings

BAD_MAILBOX_CODES = frozenset({550, 551, 553})


class SmtpEmailSender:
    channel = "email"
    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout_s: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.starttls, self.timeout_s = starttls, timeout_s
        self.tls_context = tls_context

    @classmethod
    def from_settings(cls, settings: Settings, channel: str = "email") -> SmtpEmailSender:
        s = settings.email
        return cls(
            s.smtp_host,
            s.smtp_port,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            starttls=s.smtp_starttls,
            timeout_s=s.smtp_timeout_seconds,
        )

    async def send(self, delivery: Mapping[str, Any], content: Any) -> str:
        if not isinstance(content, EmailContent):
            raise PermanentError(f"smtp sender got {type(content).__name__}")
        return await asyncio.to_thread(self._send, content)

    def _send(self, content: EmailContent) -> str:
        to_address = parseaddr(content.to)[1]
        data = to_mime_bytes(content)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls(context=self.tls_context or ssl.create_default_context())
                if self.username and self.password:
                    smtp.login(self.username, self.password)
                smtp.sendmail(parseaddr(content.from_)[1], [to_address], data)
        except smtplib.SMTPRecipientsRefused as exc:
            code = next(iter(exc.recipients.values()))[0] if exc.recipients else 550
            if code in BAD_MAILBOX_CODES:
                raise BadAddressError(
                    f"smtp {code} recipient refused", address=to_address
                ) from None
            if 400 <= code < 500:
                raise TransientError(f"smtp {code} recipient deferred") from None
            raise PermanentError(f"smtp {code} recipient refused") from None
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentError(f"smtp {exc.smtp_code} authentication failed") from None
        except smtplib.SMTPResponseException as exc:  # sender refused, data error, ...
            if 400 <= exc.smtp_code < 500:
                raise TransientError(f"smtp {exc.smtp_code}") from None
            raise PermanentError(f"smtp {exc.smtp_code}") from None
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as exc:
            raise TransientError(f"smtp transport {type(exc).__name__}") from None
        except smtplib.SMTPException as exc:
            raise PermanentError(f"smtp {type(exc).__name__}") from None
        return content.message_id

    async def close(self) -> None:
        return None
