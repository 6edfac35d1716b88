"""Who is notified, and on which channel (contract §5).

:func:`fan_out` turns a Flush into one Candidate per participant (the repartition
step: candidates are keyed by recipient so the decision is a local lookup of the
user's record and presence). :func:`decide` applies the checks to one Candidate and
returns the Decision records (every outcome, send or skip, with its reason) and the
Delivery records for the channels that send.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from processors.core.ids import channel_decision_ids, decision_id
from processors.core.presence import Presence
from processors.topics import CHANNELS

Decided = tuple[list[dict[str, Any]], list[dict[str, Any]]]


class Reason(StrEnum):
    UNKNOWN_CONVERSATION = "UNKNOWN_CONVERSATION"
    OWN_MESSAGES = "OWN_MESSAGES"
    PARTICIPANT_MUTED = "PARTICIPANT_MUTED"
    NOT_MENTIONED = "NOT_MENTIONED"
    UNKNOWN_USER = "UNKNOWN_USER"
    NO_ROLE = "NO_ROLE"
    UNKNOWN_ROLE = "UNKNOWN_ROLE"
    VIEWING = "VIEWING"
    CHANNEL_DISABLED = "CHANNEL_DISABLED"
    NO_ADDRESS = "NO_ADDRESS"
    READ_ONLY = "READ_ONLY"  # reply-by-email from a Read participant (contract §7)


# Plain strings for the records (str() of an enum member costs a call per field).
_TEXT: dict[StrEnum, str] = {m: m.value for e in (Reason, Presence) for m in e}


def _decision(
    candidate: Mapping[str, Any],
    recipient_id: str | None,
    channel: str | None,
    reason: Reason | None,
    presence: Presence | None,
    now: int,
    detail: str | None = None,
    did: str | None = None,
) -> dict[str, Any]:
    """One Decision record; ``did`` is its id when the caller computed it already."""
    fid = candidate["flush_id"]
    if did is None:
        did = decision_id(fid, recipient_id, channel)
    send = reason is None
    return {
        "decision_id": did,
        "flush_id": fid,
        "conversation_id": candidate["conversation_id"],
        "recipient_id": recipient_id,
        "channel": channel,
        "outcome": "send" if send else "skip",
        "reason": None if reason is None else _TEXT[reason],
        "presence": None if presence is None else _TEXT[presence],
        "detail": detail,
        # delivery_id(flush, recipient, channel) is by definition the send decision's id
        "delivery_id": did if send and recipient_id and channel else None,
        "ts": now,
    }


def fan_out(
    flush: Mapping[str, Any],
    conversation: Mapping[str, Any] | None,
    now: int,
    names: Mapping[str, str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One Candidate per participant; or, with no Conversation snapshot, one skip Decision.

    ``names`` maps user_id to display name (from the users' records); a participant's
    own ``name`` in the Conversation snapshot is the fallback, then the user id. A
    Candidate carries
    only what :func:`decide` and the Delivery need: the batch's messages and the names
    of their senders, not the conversation's participant list, so its size does not
    grow with the conversation (a 5,000-participant conversation gives 5,000 small
    Candidates, not 5,000 copies of a 5,000-entry map). The candidates share one
    ``messages`` list and one ``sender_names`` map.

    The UNKNOWN_CONVERSATION decision has no recipient (nobody is known); it is keyed
    by the conversation id downstream.
    """
    if conversation is None:
        detail = f"no Conversation snapshot for {flush['conversation_id']!r} yet"
        skip = _decision(flush, None, None, Reason.UNKNOWN_CONVERSATION, None, now, detail)
        return [], [skip]
    participants: Sequence[Mapping[str, Any]] = conversation.get("participants") or ()
    messages = flush["messages"]
    senders = {m["sender_id"] for m in messages if m.get("sender_id") is not None}
    sender_names: dict[str, str] = {}
    for sender in senders:
        name = names.get(sender)
        if name:
            sender_names[sender] = name
    if len(sender_names) < len(senders):
        for p in participants:
            uid = p["user_id"]
            if uid in senders and uid not in sender_names and p.get("name"):
                sender_names[uid] = p["name"]
        for sender in senders:  # nobody named them: the id is the name
            sender_names.setdefault(sender, sender)
    fid = flush["flush_id"]
    cid = flush["conversation_id"]
    subject = conversation.get("subject")
    opened_at = flush["opened_at"]
    closed_at = flush["closed_at"]
    candidates = [
        {
            "flush_id": fid,
            "conversation_id": cid,
            "recipient_id": p["user_id"],
            "access": p.get("access", "ReadWrite"),
            "notify": p.get("notify", "All"),
            "subject": subject,
            "messages": messages,
            "sender_names": sender_names,
            "opened_at": opened_at,
            "closed_at": closed_at,
        }
        for p in participants
    ]
    return candidates, []


def _role_hint(role: str, roles: Mapping[str, Any]) -> str:
    folded = [name for name in roles if name.casefold() == role.casefold()]
    near = folded or difflib.get_close_matches(role, list(roles), n=1, cutoff=0.6)
    if near:
        return f"role {role!r} is not defined; did you mean {near[0]!r}?"
    known = ", ".join(sorted(roles)) or "none"
    return f"role {role!r} is not defined (defined roles: {known})"


def _address(user: Mapping[str, Any], channel: str) -> dict[str, Any] | None:
    """The contact point for ``channel``, as Delivery fields; None when there is none."""
    if channel == "email":
        return {"email": user["email"]} if user.get("email") else None
    if channel == "sms":
        return {"phone": user["phone"]} if user.get("phone") else None
    if channel == "push":
        tokens = [t for t in user.get("push_tokens") or () if t]
        return {"push_tokens": tokens} if tokens else None
    subscriptions = [s for s in user.get("browser_subscriptions") or () if s.get("endpoint")]
    return {"browser_subscriptions": subscriptions} if subscriptions else None


def recipient_skip(
    candidate: Mapping[str, Any],
    others: list[Mapping[str, Any]],
    user: Mapping[str, Any] | None,
    roles: Mapping[str, Mapping[str, Any]],
    presence: Presence,
) -> tuple[Reason, str | None] | None:
    """Why this recipient is not notified at all (reason, human detail), or None.

    ``others`` are the batch's messages not sent by the recipient. The order is contract
    §5's, which is also the order of salience for someone asking "why no
    notification?": facts about the conversation first (their own messages, their
    per-conversation setting), then facts about the user's account (unknown, no role,
    misspelt role), then the moment (viewing).
    """
    if not others:
        return Reason.OWN_MESSAGES, None
    notify = candidate["notify"]
    if notify == "Off":
        return Reason.PARTICIPANT_MUTED, None
    if notify == "MentionsOnly":
        rid = candidate["recipient_id"]
        if not any(rid in m["mentions"] for m in others):
            return Reason.NOT_MENTIONED, None
    if user is None:
        return Reason.UNKNOWN_USER, None
    role_name = user["role"]
    if not role_name:
        return Reason.NO_ROLE, None
    if role_name not in roles:
        return Reason.UNKNOWN_ROLE, _role_hint(role_name, roles)
    if presence is Presence.VIEWING:
        return Reason.VIEWING, None
    return None


def decide(
    candidate: Mapping[str, Any],
    user: Mapping[str, Any] | None,
    roles: Mapping[str, Mapping[str, Any]],
    presence: Presence,
    now: int,
    *,
    with_deliveries: bool = True,
) -> Decided:
    """Decide for one recipient of one flush: (Decision records, Delivery records).

    ``with_deliveries=False`` skips building the Delivery records (replay writes only
    decisions unless asked for more); the decisions are identical either way.

    Records are validated (the codec fills every field), so fields are indexed directly.
    A recipient-level skip (:func:`recipient_skip`) yields one Decision with channel
    null; otherwise there is one Decision per channel, in contract §5's order (the role's
    channel toggle, then an address).
    """
    rid: str = candidate["recipient_id"]
    others = [m for m in candidate["messages"] if m["sender_id"] != rid]
    skip = recipient_skip(candidate, others, user, roles, presence)
    if skip is not None:
        reason, detail = skip
        seen = presence if reason is Reason.VIEWING else None  # looked up from here on
        return [_decision(candidate, rid, None, reason, seen, now, detail)], []
    assert user is not None  # recipient_skip returns UNKNOWN_USER otherwise
    role = roles[user["role"]]

    decisions: list[dict[str, Any]] = []
    deliveries: list[dict[str, Any]] = []
    names: Mapping[str, str] = candidate["sender_names"]
    summary: list[dict[str, Any]] | None = None  # the messages as Deliveries carry them
    ids = channel_decision_ids(candidate["flush_id"], rid, CHANNELS)
    for channel, did in zip(CHANNELS, ids, strict=True):
        if not role[channel]:
            decisions.append(
                _decision(
                    candidate, rid, channel, Reason.CHANNEL_DISABLED, presence, now, None, did
                )
            )
            continue
        address = _address(user, channel)
        if address is None:
            decisions.append(
                _decision(candidate, rid, channel, Reason.NO_ADDRESS, presence, now, None, did)
            )
            continue
        decision = _decision(candidate, rid, channel, None, presence, now, None, did)
        decisions.append(decision)
        if not with_deliveries:
            continue
        if summary is None:
            summary = [
                {
                    "message_id": m["message_id"],
                    "sender_id": m["sender_id"],
                    "sender_name": names.get(m["sender_id"]),
                    "text": m["text"],
                    "ts": m["ts"],
                }
                for m in others
            ]
        deliveries.append(
            {
                "delivery_id": decision["delivery_id"],
                "flush_id": candidate["flush_id"],
                "conversation_id": candidate["conversation_id"],
                "recipient_id": rid,
                "recipient_name": user["name"],
                "locale": user["locale"] or "en",
                "channel": channel,
                "email": None,
                "phone": None,
                "push_tokens": [],
                "browser_subscriptions": [],
                **address,
                "subject": candidate.get("subject"),
                "messages": summary,
                "closed_at": candidate["closed_at"],
                "ts": now,
            }
        )
    return decisions, deliveries
