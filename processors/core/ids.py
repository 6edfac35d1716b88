"""Deterministic ids: a replayed or retried flush produces the same ids downstream."""

from __future__ import annotations


def flush_id(conversation_id: str, first_message_id: str) -> str:
    return f"{conversation_id}:{first_message_id}"


def decision_id(flush_id: str, recipient_id: str | None, channel: str | None) -> str:
    return f"{flush_id}:{recipient_id or '-'}:{channel or '-'}"


def delivery_id(flush_id: str, recipient_id: str, channel: str) -> str:
    """The id a sender de-duplicates on; equal to the id of the ``send`` decision."""
    return decision_id(flush_id, recipient_id, channel)
