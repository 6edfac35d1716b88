"""The schemas' records as ``TypedDict``s, for the seams between modules (contract §3).

``processors.codec`` decodes a record into a plain dict with every schema field filled
in; the live agents and the core pass them on typed as these, so mypy strict checks
the fields the hot path reads (a typo in a field name is an error, not a KeyError in
production). They mirror ``schemas/*.avsc``; ``tests/core/test_records.py`` checks the
field names against the schemas so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any, TypedDict


class MessageEvent(TypedDict):
    message_id: str
    conversation_id: str
    sender_id: str | None
    type: str
    text: str
    mentions: list[str]
    origin: str
    ts: int


class TypingEvent(TypedDict):
    conversation_id: str
    user_id: str
    typing: bool
    ts: int


class PresenceEvent(TypedDict):
    user_id: str
    session_id: str
    online: bool
    selected_conversation_id: str | None
    focused: bool
    ts: int


class Participant(TypedDict):
    user_id: str
    access: str
    notify: str


class Conversation(TypedDict):
    conversation_id: str
    subject: str | None
    participants: list[Participant]
    ts: int


class User(TypedDict):
    user_id: str
    name: str
    email: str | None
    phone: str | None
    role: str | None
    locale: str
    push_tokens: list[str]
    browser_subscriptions: list[Any]
    ts: int


class Flush(TypedDict):
    flush_id: str
    conversation_id: str
    message_ids: list[str]
    messages: list[dict[str, Any]]
    opened_at: int
    closed_at: int
    cause: str


class Candidate(TypedDict):
    flush_id: str
    conversation_id: str
    recipient_id: str
    access: str
    notify: str
    subject: str | None
    messages: list[dict[str, Any]]
    sender_names: dict[str, str]
    opened_at: int
    closed_at: int


class Decision(TypedDict):
    decision_id: str
    flush_id: str
    conversation_id: str
    recipient_id: str | None
    channel: str | None
    outcome: str
    reason: str | None
    presence: str | None
    detail: str | None
    delivery_id: str | None
    ts: int


class Delivery(TypedDict):
    delivery_id: str
    flush_id: str
    conversation_id: str
    recipient_id: str
    recipient_name: str | None
    locale: str
    channel: str
    email: str | None
    phone: str | None
    push_tokens: list[str]
    browser_subscriptions: list[Any]
    subject: str | None
    messages: list[dict[str, Any]]
    closed_at: int
    ts: int


#: Record name (as in ``schemas/``) -> its TypedDict.
RECORDS: dict[str, type] = {
    "MessageEvent": MessageEvent,
    "TypingEvent": TypingEvent,
    "PresenceEvent": PresenceEvent,
    "Conversation": Conversation,
    "User": User,
    "Flush": Flush,
    "Candidate": Candidate,
    "Decision": Decision,
    "Delivery": Delivery,
}
