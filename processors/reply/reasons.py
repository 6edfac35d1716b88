"""The inbound audit's reasons (schemas/InboundAudit.avsc), apart from the reply parser so
that the codec, which validates them, does not import the mail libraries."""

from __future__ import annotations

from typing import Final

ACCEPTED: Final = "ACCEPTED"
#: Every audit reason, in check order (schemas/README.md, README "Reply by email").
REASONS: Final[tuple[str, ...]] = (
    ACCEPTED,
    "TOO_LARGE",
    "MALFORMED",
    "DUPLICATE",
    "OWN_MAIL",
    "BOUNCE",
    "AUTO_REPLY",
    "NO_TOKEN",
    "FORGED_TOKEN",
    "EXPIRED_TOKEN",
    "FROM_MISMATCH",
    "UNKNOWN_CONVERSATION",
    "WRONG_CONVERSATION",
    "NOT_PARTICIPANT",
    "READ_ONLY",
    "NO_TEXT",
)
