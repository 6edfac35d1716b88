"""Topic names, keys and record types (contract §2), declared once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PartitionGroup = Literal["conversation", "user", "channel", "single"]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    record: str | None  # Avro record name in schemas/; None for raw bytes
    key: str  # what the key is, in words
    group: PartitionGroup  # which partition count applies
    compacted: bool = False


MESSAGES = "chat.messages"
TYPING = "chat.typing"
PRESENCE = "chat.presence"
CONVERSATIONS = "chat.conversations"
USERS = "chat.users"
ROLES = "chat.roles"
SETTINGS = "chat.settings"
FLUSHES = "notify.flushes"
CANDIDATES = "notify.candidates"
DECISIONS = "notify.decisions"
EMAIL = "notify.email"
SMS = "notify.sms"
PUSH = "notify.push"
BROWSER = "notify.browser"
OUTCOMES = "notify.outcomes"
DEAD_LETTER = "notify.dead-letter"
EMAIL_INBOUND = "email.inbound"
INBOUND_AUDIT = "email.inbound-audit"

CHANNELS: tuple[str, ...] = ("email", "sms", "push", "browser")
CHANNEL_TOPICS: dict[str, str] = {"email": EMAIL, "sms": SMS, "push": PUSH, "browser": BROWSER}

TOPICS: dict[str, TopicSpec] = {
    t.name: t
    for t in (
        TopicSpec(MESSAGES, "MessageEvent", "conversation_id", "conversation"),
        TopicSpec(TYPING, "TypingEvent", "conversation_id", "conversation"),
        TopicSpec(CONVERSATIONS, "Conversation", "conversation_id", "conversation", True),
        TopicSpec(PRESENCE, "PresenceEvent", "user_id", "user"),
        TopicSpec(USERS, "User", "user_id", "user", True),
        TopicSpec(CANDIDATES, "Candidate", "recipient user_id", "user"),
        TopicSpec(ROLES, "Role", "role name", "single", True),
        TopicSpec(SETTINGS, "AppSettings", '"app"', "single", True),
        TopicSpec(FLUSHES, "Flush", "conversation_id", "conversation"),
        TopicSpec(DECISIONS, "Decision", "recipient user_id", "user"),
        TopicSpec(EMAIL, "Delivery", "recipient user_id", "channel"),
        TopicSpec(SMS, "Delivery", "recipient user_id", "channel"),
        TopicSpec(PUSH, "Delivery", "recipient user_id", "channel"),
        TopicSpec(BROWSER, "Delivery", "recipient user_id", "channel"),
        TopicSpec(OUTCOMES, "Outcome", "delivery_id", "channel"),
        TopicSpec(DEAD_LETTER, "DeadLetter", "original key", "single"),
        TopicSpec(EMAIL_INBOUND, None, "message-id", "single"),
        TopicSpec(INBOUND_AUDIT, "InboundAudit", "mail_id", "single"),
    )
}

# Topics a platform publishes to (replay input).
INPUT_TOPICS: tuple[str, ...] = (MESSAGES, TYPING, PRESENCE, CONVERSATIONS, USERS, ROLES, SETTINGS)
