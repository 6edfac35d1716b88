"""Delivery records for sender tests (the JSON form of schemas/Delivery)."""

from __future__ import annotations

from typing import Any

from processors.core.ids import delivery_id

T0_MS = 1_760_000_000_000


def make_delivery(channel: str = "email", n: int = 1, **overrides: Any) -> dict[str, Any]:
    conversation_id = overrides.pop("conversation_id", "conv-1")
    recipient_id = overrides.pop("recipient_id", "u-bob")
    flush_id = f"{conversation_id}:m{n}-1"
    texts = overrides.pop("texts", None) or [
        f"message {i} <script>alert(1)</script>" for i in range(n)
    ]
    delivery: dict[str, Any] = {
        "delivery_id": delivery_id(flush_id, recipient_id, channel),
        "flush_id": flush_id,
        "conversation_id": conversation_id,
        "recipient_id": recipient_id,
        "recipient_name": "Bob",
        "locale": "en",
        "channel": channel,
        "email": "bob@example.org",
        "phone": "+15558675310",
        "push_tokens": ["tok-a", "tok-b"],
        "browser_subscriptions": [],
        "subject": "Launch plan",
        "messages": [
            {
                "message_id": f"m{n}-{i}",
                "sender_id": "u-alice",
                "sender_name": "Alice",
                "text": text,
                "ts": T0_MS + i * 1000,
            }
            for i, text in enumerate(texts)
        ],
        "closed_at": T0_MS + 20_000,
        "ts": T0_MS + 20_000,
    }
    delivery.update(overrides)
    return delivery
