"""The one typed settings object. Nothing else in the package reads ``os.environ``.

Values come from environment variables (and a ``.env`` file), validated at start.
Secrets are ``SecretStr`` so they never print. Nested sections use ``__`` in the
variable name, e.g. ``EMAIL__BACKEND=ses``; the most common ones also have the flat
names the design card uses (``KAFKA_BROKER_URL``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class EmailSettings(BaseModel):
    """Email channel: ``outbox`` (files), ``ses`` (boto3 SESv2) or ``smtp``."""

    backend: Literal["outbox", "ses", "smtp"] = "outbox"
    ses_region: str = "us-east-1"
    ses_endpoint_url: str | None = None
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = 10.0
    ses_access_key_id: str | None = None  # unset: boto3's default credential chain
    ses_secret_access_key: SecretStr | None = None
    ses_timeout_seconds: float = 10.0
    template_dir: Path | None = None  # per-locale overrides: <dir>/<locale>/email/...
    rate_per_second: float = 14.0  # SES default sending rate


class SmsSettings(BaseModel):
    backend: Literal["outbox", "twilio"] = "outbox"
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_base_url: str | None = None  # only for local stand-ins
    from_number: str | None = None
    messaging_service_sid: str | None = None
    timeout_seconds: float = 10.0
    max_segments: int = 2
    rate_per_second: float = 1.0


class PushSettings(BaseModel):
    backend: Literal["outbox", "fcm"] = "outbox"
    fcm_project_id: str | None = None
    fcm_credentials_file: Path | None = None
    fcm_url: str | None = None  # only for local stand-ins
    fcm_static_token: SecretStr | None = None  # only for local stand-ins: no token exchange
    timeout_seconds: float = 10.0
    rate_per_second: float = 500.0


class BrowserSettings(BaseModel):
    backend: Literal["outbox", "webpush"] = "outbox"
    vapid_private_key: SecretStr | None = None
    vapid_subject: str = "mailto:notifications@chat.example"
    ttl_seconds: int = 3600
    timeout_seconds: float = 10.0
    rate_per_second: float = 500.0


class ReplySettings(BaseModel):
    """Reply-by-email tokens (contract §7). Keys are ``id:secret`` pairs; the first signs."""

    token_keys: list[SecretStr] = Field(
        default_factory=lambda: [SecretStr("k1:dev-only-reply-token-key-change-me")]
    )
    token_ttl_days: int = 30


class InboundSettings(BaseModel):
    """Reply by email, the inbound side (contract §7; processors/reply)."""

    reply_domain: str = "reply.chat.example"  # RCPT accepted only here; tokens only here
    max_mail_bytes: int = 1_000_000  # one email.inbound record; Kafka's default limit is 1 MiB
    rate_per_minute: int = 10  # mails per sender address per minute (SMTP adapter)
    http_secret: SecretStr | None = None  # X-Inbound-Secret; unset: HTTP adapter refuses all
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    http_host: str = "127.0.0.1"
    http_port: int = 8025
    ses_queue_url: str | None = None  # SQS queue the SES receipt rule notifies
    ses_region: str = "us-east-1"
    ses_endpoint_url: str | None = None  # only for local stand-ins
    ses_access_key_id: str | None = None  # unset: boto3's default credential chain
    ses_secret_access_key: SecretStr | None = None


class DashboardSettings(BaseModel):
    """``chat-notifier dashboard``: the admin token every page requires.

    Unset: on a loopback address the dashboard makes one up at start and prints it; on
    any other address it refuses to start (nobody else should reach an open admin page).
    """

    token: SecretStr | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        extra="ignore",
    )

    kafka_broker_url: str | None = Field(
        default=None, description="e.g. kafka://broker:9092; unset means the embedded broker"
    )
    topic_prefix: str = ""
    conversation_partitions: int = 4  # chat.messages / chat.typing / chat.conversations
    user_partitions: int = 4  # chat.presence / chat.users / notify.candidates
    channel_partitions: int = 4  # notify.<channel>
    replication_factor: int = 1
    store: str = "rocksdb://"
    data_dir: Path = Path("var/data")
    outbox_dir: Path = Path("var/outbox")
    # metrics/health port; unset: the command's own default, WEB_PORT_BASE + an offset per
    # command (processors.app.WEB_PORT_OFFSETS), so a worker and senders share a host
    web_port: int | None = None
    web_port_base: int = 6066
    # Confluent schema registry (http/https); set: Confluent-framed records decode and
    # --confluent producers register (processors/registry.py). Empty means unset.
    schema_registry_url: str | None = None
    log_level: str = "INFO"

    email: EmailSettings = Field(default_factory=EmailSettings)
    sms: SmsSettings = Field(default_factory=SmsSettings)
    push: PushSettings = Field(default_factory=PushSettings)
    browser: BrowserSettings = Field(default_factory=BrowserSettings)
    reply: ReplySettings = Field(default_factory=ReplySettings)
    inbound: InboundSettings = Field(default_factory=InboundSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)

    @field_validator("schema_registry_url")
    @classmethod
    def _registry_url(cls, value: str | None) -> str | None:
        value = (value or "").strip()
        if not value:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class SettingsError(ValueError):
    """A setting that does not validate, said in one line: the variable's name and what
    it must be, never its value (it may be a secret). The CLI prints it and exits 2."""


def _variable(loc: tuple[int | str, ...]) -> str:
    return "__".join(str(part) for part in loc).upper() or "settings"


def _message(error: Any) -> str:
    # a validator's own ValueError comes back as "Value error, <its text>"
    message = str(error["msg"])
    return message.removeprefix("Value error, ") if error["type"] == "value_error" else message


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings; ``overrides`` win over the environment (tests use them)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{_variable(error['loc'])}: {_message(error)}"
            for error in exc.errors(include_url=False)
        )
        raise SettingsError(f"bad setting: {problems}") from None
