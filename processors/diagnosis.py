"""The product's troubleshooting checklist, as pure functions over plain records.

One module, two entry points: ``chat-notifier explain`` words the reasons of decisions
already taken with :data:`WHY`; ``chat-notifier diagnose`` runs the checklist on the
current data, before any batch has closed, with :func:`checklist`. The checklist does
not re-derive the policy: it asks the core's own :func:`~processors.core.decisions.decide`
what it would decide *now* for "a message from someone else that mentions them", and
words the answer.

Pure: no Kafka, no clock, no environment (``now`` is a parameter). Addresses are only
ever shown masked (:func:`mask_email`, :func:`mask_phone`, :func:`mask_token`,
:func:`mask_endpoint`); nothing here returns a raw address, phone number or token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from processors.core.admission import Admit, Reject, Rekey, admit
from processors.core.decisions import Reason, decide
from processors.core.decisions import _role_hint as role_hint  # one home of the hint
from processors.core.presence import Presence, UserPresence
from processors.core.settings import CoreSettings
from processors.topics import CHANNELS, PRESENCE

#: Why a recipient was (or would be) not notified, in words a support engineer can act on.
WHY: Mapping[str, str] = {
    Reason.UNKNOWN_CONVERSATION: "no Conversation snapshot had arrived for this conversation "
    "when the batch closed, so nobody could be notified",
    Reason.OWN_MESSAGES: "every message in the batch was their own",
    Reason.PARTICIPANT_MUTED: "their notification setting for this conversation is Off",
    Reason.NOT_MENTIONED: "they are notified of mentions only, and no message mentioned them",
    Reason.UNKNOWN_USER: "there is no User record for them (publish one to chat.users)",
    Reason.NO_ROLE: "their User record has no role: assign one",
    Reason.UNKNOWN_ROLE: "their role does not exactly match a defined role",
    Reason.VIEWING: "they had this conversation open in a focused tab or window",
    Reason.CHANNEL_DISABLED: "their role has this channel turned off",
    Reason.NO_ADDRESS: "they have no address for this channel "
    "(email, phone, push token or browser subscription)",
    Reason.READ_ONLY: "they have Read access only, so their email reply was not posted",
}

#: The missing address of each channel, as a verdict says it.
NO_ADDRESS_WORDS: Mapping[str, str] = {
    "email": "no email address",
    "sms": "no phone number",
    "push": "no push token",
    "browser": "no browser subscription",
}

# -- masking ---------------------------------------------------------------------------

TOKEN_TAIL_MIN_CHARS = 12  # shorter tokens show no tail at all (4 chars would be a third)


def mask_email(address: str) -> str:
    """``alice@example.org`` -> ``a***@example.org`` (the domain helps spot typos)."""
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "***"
    return f"{local[0]}***@{domain}"


def mask_phone(phone: str) -> str:
    """``+447700900789`` -> ``+44******789``: country code and last three digits."""
    digits = [c for c in phone if c.isdigit()]
    plus = "+" if phone.strip().startswith("+") else ""
    if len(digits) < 8:
        return plus + "******"
    return f"{plus}{''.join(digits[:2])}******{''.join(digits[-3:])}"


def mask_token(token: str) -> str:
    """A push token as ``…last4`` (nothing of a short one)."""
    return f"…{token[-4:]}" if len(token) >= TOKEN_TAIL_MIN_CHARS else "…"


def mask_endpoint(endpoint: str) -> str:
    """A Web Push endpoint (a capability URL) as its host and ``…last4``."""
    host = urlsplit(endpoint).hostname or "?"
    return f"{host}/{mask_token(endpoint)}"


def masked_addresses(user: Mapping[str, Any]) -> dict[str, list[str]]:
    """Every address of a User record per channel, masked."""
    return {
        "email": [mask_email(user["email"])] if user.get("email") else [],
        "sms": [mask_phone(user["phone"])] if user.get("phone") else [],
        "push": [mask_token(tok) for tok in user.get("push_tokens") or () if tok],
        "browser": [
            mask_endpoint(s["endpoint"])
            for s in user.get("browser_subscriptions") or ()
            if s.get("endpoint")
        ],
    }


def mask_known(text: str, user: Mapping[str, Any] | None) -> str:
    """``text`` (a provider's detail) with every address of ``user`` replaced by its mask."""
    if not user:
        return text
    pairs: list[tuple[str, str]] = []
    if user.get("email"):
        pairs.append((user["email"], mask_email(user["email"])))
    if user.get("phone"):
        pairs.append((user["phone"], mask_phone(user["phone"])))
    pairs += [(tok, mask_token(tok)) for tok in user.get("push_tokens") or () if tok]
    pairs += [
        (s["endpoint"], mask_endpoint(s["endpoint"]))
        for s in user.get("browser_subscriptions") or ()
        if s.get("endpoint")
    ]
    for raw, masked in sorted(pairs, key=lambda p: -len(p[0])):
        text = text.replace(raw, masked)
    return text


def mask_outcome_address(channel: str, address: str) -> str:
    if channel == "email":
        return mask_email(address)
    if channel == "sms":
        return mask_phone(address)
    if channel == "browser":
        return mask_endpoint(address)
    return mask_token(address)


# -- current state from raw records ----------------------------------------------------

#: (key, decoded value or None for a tombstone, Kafka timestamp), in the order read.
Snapshot = tuple[str | None, Mapping[str, Any] | None, int | None]


def latest_snapshot(
    records: Iterable[Snapshot], topic: str, key: str, now: int
) -> dict[str, Any] | None:
    """The snapshot (user, conversation) the worker holds for ``key``: each record passes
    the door (:func:`~processors.core.admission.admit`, refused ones are skipped as the
    worker dead-letters them), the higher-or-equal ``ts`` replaces the held one (the
    worker's rule), a tombstone deletes."""
    held: dict[str, Any] | None = None
    for rkey, value, stamp in records:
        if rkey != key:
            continue
        verdict = admit(topic, rkey, None if value is None else dict(value), stamp, now)
        if not isinstance(verdict, Admit):
            continue
        if verdict.value is None:
            held = None
            continue
        if held is None or int(verdict.value["ts"]) >= int(held["ts"]):
            held = verdict.value
    return held


def live_presence(
    user_id: str,
    events: Iterable[tuple[Mapping[str, Any], int | None]],
    now: int,
    cfg: CoreSettings,
) -> UserPresence:
    """The user's sessions from PresenceEvents (value, Kafka timestamp), by the worker's
    rules: the door bounds ``ts``, re-keyed events count for their user, events are
    applied in event-time order by :class:`UserPresence`."""
    presence = UserPresence(user_id)
    admitted: list[dict[str, Any]] = []
    for value, stamp in events:
        if value.get("user_id") != user_id:
            continue
        verdict = admit(PRESENCE, user_id, dict(value), stamp, now)
        if isinstance(verdict, Reject):
            continue
        if isinstance(verdict, Rekey):  # cannot happen under the user's own key
            continue
        if verdict.value is not None:
            admitted.append(verdict.value)
    for event in sorted(admitted, key=lambda e: int(e["ts"])):
        presence.apply(event, cfg)
    return presence


def session_rows(presence: UserPresence, now: int, cfg: CoreSettings) -> list[dict[str, Any]]:
    """Each session's latest state, and whether it is live under the TTL rule."""
    rows = []
    for sid, (ts, online, selected, focused) in sorted(presence.sessions.items()):
        rows.append(
            {
                "session_id": sid,
                "online": online,
                "live": online and now < ts + cfg.presence_ttl_ms,
                "selected_conversation_id": selected,
                "focused": focused,
                "ts": ts,
            }
        )
    return rows


# -- the checklist ---------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "text": self.text}


@dataclass
class Verdict:
    channel: str
    notify: bool
    reason: str | None
    text: str
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "notify": self.notify,
            "reason": self.reason,
            "text": self.text,
            "warnings": list(self.warnings),
        }


@dataclass
class Diagnosis:
    user_id: str
    conversation_id: str | None
    checks: list[Check]
    verdicts: list[Verdict]
    presence: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "conversation_id": self.conversation_id,
            "checks": [c.to_dict() for c in self.checks],
            "presence": self.presence,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }


PROBE_SENDER = "(someone else)"


def _probe(user_id: str, conversation_id: str | None, notify: str, now: int) -> dict[str, Any]:
    """A Candidate for "a message from someone else that mentions them, closed now"."""
    return {
        "flush_id": "f-diagnose",
        "conversation_id": conversation_id or "(any conversation)",
        "recipient_id": user_id,
        "access": "ReadWrite",
        "notify": notify,
        "subject": None,
        "messages": [
            {
                "message_id": "diagnose",
                "sender_id": PROBE_SENDER,
                "mentions": [user_id],
                "text": "",
                "ts": now,
            }
        ],
        "sender_names": {},
        "opened_at": now,
        "closed_at": now,
    }


def checklist(
    user_id: str,
    user: Mapping[str, Any] | None,
    roles: Mapping[str, Mapping[str, Any]],
    presence: Presence,
    now: int,
    *,
    conversation_id: str | None = None,
    conversation: Mapping[str, Any] | None = None,
    outcomes: Sequence[Mapping[str, Any]] = (),
) -> Diagnosis:
    """The checklist in contract §5's order and one verdict per channel.

    ``presence`` is the user's status for ``conversation_id`` now (for no conversation,
    the status for one they are not viewing). ``outcomes`` are their recent Outcome
    records, oldest first: a channel whose latest outcome is not ``sent`` gets a warning.
    """
    checks: list[Check] = []
    notify = "All"
    if conversation_id is not None:
        participant = None
        if conversation is not None:
            participant = next(
                (p for p in conversation.get("participants") or () if p["user_id"] == user_id),
                None,
            )
        if conversation is None:
            checks.append(
                Check(
                    "conversation",
                    False,
                    f"no Conversation snapshot for {conversation_id!r}: nobody in it is notified",
                )
            )
            return _stop(user_id, conversation_id, checks, presence, Reason.UNKNOWN_CONVERSATION)
        if participant is None:
            checks.append(
                Check(
                    "conversation",
                    False,
                    f"{user_id!r} is not a participant of {conversation_id!r}",
                )
            )
            return _stop(user_id, conversation_id, checks, presence, None)
        notify = participant.get("notify") or "All"
        checks.append(
            Check(
                "conversation",
                notify != "Off",
                f"participant of {conversation_id!r}, access {participant.get('access')}, "
                f"notify {notify}",
            )
        )
    if user is None:
        checks.append(Check("user", False, f"no User record for {user_id!r} on chat.users"))
    else:
        checks.append(Check("user", True, f"User record {user['name']!r}, locale {user['locale']}"))
        role_name = user.get("role")
        if not role_name:
            checks.append(Check("role", False, "no role assigned"))
        elif role_name not in roles:
            checks.append(Check("role", True, f"role {role_name!r} assigned"))
            checks.append(Check("role exists", False, role_hint(role_name, roles)))
        else:
            checks.append(Check("role", True, f"role {role_name!r} assigned"))
            role = roles[role_name]
            on = [c for c in CHANNELS if role[c]]
            checks.append(Check("role exists", True, f"role {role_name!r} is defined"))
            checks.append(
                Check(
                    "channels",
                    bool(on),
                    f"role {role_name!r} enables {', '.join(on) if on else 'no channel'}",
                )
            )
            masked = masked_addresses(user)
            for channel in on:
                shown = ", ".join(masked[channel])
                checks.append(
                    Check(
                        f"{channel} address",
                        bool(masked[channel]),
                        f"{channel}: {shown}"
                        if shown
                        else f"{channel}: {NO_ADDRESS_WORDS[channel]}",
                    )
                )
    checks.append(Check("presence", presence is not Presence.VIEWING, _presence_words(presence)))

    decisions, _ = decide(
        _probe(user_id, conversation_id, notify, now),
        user,
        roles,
        presence,
        now,
        with_deliveries=False,
    )
    role_name = (user or {}).get("role")
    verdicts: list[Verdict] = []
    first = decisions[0]
    if first["channel"] is None:  # skipped before the channel checks
        reason = first["reason"]
        for channel in CHANNELS:
            verdicts.append(
                Verdict(channel, False, reason, f"{channel}: {_skip_words(first, conversation_id)}")
            )
    else:
        for d in decisions:
            channel = d["channel"]
            if d["outcome"] == "send":
                when = (
                    "would be sent now"
                    if conversation_id is not None
                    else "would be sent when offline or not viewing"
                )
                if notify == "MentionsOnly":
                    when += " (mentions only: when mentioned)"
                verdicts.append(Verdict(channel, True, None, f"{channel}: {when}"))
            elif d["reason"] == Reason.CHANNEL_DISABLED:
                text = f"{channel}: off for role {role_name!r}"
                verdicts.append(Verdict(channel, False, d["reason"], text))
            else:
                text = f"{channel}: {NO_ADDRESS_WORDS[channel]}"
                verdicts.append(Verdict(channel, False, d["reason"], text))
    latest: dict[str, Mapping[str, Any]] = {}
    for outcome in outcomes:
        latest[outcome["channel"]] = outcome
    for verdict in verdicts:
        last = latest.get(verdict.channel)
        if last is not None and last["status"] != "sent":
            verdict.warnings.append(
                f"the last delivery on {verdict.channel} was {last['status']}"
                + (f" ({mask_known(last['detail'], user)})" if last.get("detail") else "")
            )
    return Diagnosis(user_id, conversation_id, checks, verdicts, presence.value)


def _stop(
    user_id: str,
    conversation_id: str,
    checks: list[Check],
    presence: Presence,
    reason: Reason | None,
) -> Diagnosis:
    words = (
        f"no Conversation snapshot for {conversation_id!r} yet, so a batch closing now "
        f"would notify nobody [{reason.value}]"
        if reason is not None
        else f"not a participant of {conversation_id!r}"
    )
    verdicts = [
        Verdict(c, False, None if reason is None else reason.value, f"{c}: not notified: {words}")
        for c in CHANNELS
    ]
    return Diagnosis(user_id, conversation_id, checks, verdicts, presence.value)


def _presence_words(presence: Presence) -> str:
    return {
        Presence.OFFLINE: "offline (no live session)",
        Presence.ONLINE_ELSEWHERE: "online, another conversation selected",
        Presence.ONLINE_UNFOCUSED: "online with this conversation selected, not focused",
        Presence.VIEWING: "viewing this conversation in a focused session",
    }[presence]


def _skip_words(decision: Mapping[str, Any], conversation_id: str | None) -> str:
    reason = decision["reason"]
    if reason == Reason.VIEWING:
        return f"not now: viewing {conversation_id!r} (would be sent once they are not)"
    hint = f" ({decision['detail']})" if decision.get("detail") else ""
    return f"not notified [{reason}]: {WHY.get(reason, reason)}{hint}"
