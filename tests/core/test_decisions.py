"""contract §5: every skip reason and the send path, in check order."""

from __future__ import annotations

from typing import Any

import pytest

from processors.core.decisions import Reason, decide, fan_out
from processors.core.ids import decision_id
from processors.core.presence import Presence
from tests.core.builders import conversation, msg, participant, role, user

FLUSH = {
    "flush_id": "c1:m1",
    "conversation_id": "c1",
    "message_ids": ["m1", "m2"],
    "messages": [msg("m1", 0, sender="alice"), msg("m2", 1, sender="bob", mentions=["carol"])],
    "opened_at": 0,
    "closed_at": 11_000,
    "cause": "inactivity",
}
NAMES = {"alice": "Alice", "bob": "Bob"}  # User.name by user id (chat.users)
ROLES = {"member": role("member", email=True, sms=True, push=True, browser=True)}
SUB = {"endpoint": "https://push.example/1", "p256dh": "k", "auth": "a"}
FULL = dict(email="carol@example.org", phone="+15550001", push_tokens=["tok"], browser=[SUB])


def candidate_for(uid: str, **p: Any) -> dict[str, Any]:
    conv = conversation("c1", participant("alice"), participant("bob"), participant(uid, **p))
    candidates, skips = fan_out(FLUSH, conv, 11_000, NAMES)
    assert skips == []
    return next(c for c in candidates if c["recipient_id"] == uid)


def reasons(decisions: list[dict[str, Any]]) -> list[tuple[str | None, str | None]]:
    return [(d["channel"], d["reason"]) for d in decisions]


def test_unknown_conversation_is_one_recipientless_skip() -> None:
    candidates, skips = fan_out(FLUSH, None, 11_000, NAMES)
    assert candidates == []
    assert [(d["recipient_id"], d["channel"], d["outcome"], d["reason"]) for d in skips] == [
        (None, None, "skip", "UNKNOWN_CONVERSATION")
    ]


def test_fan_out_gives_one_candidate_per_participant_with_names() -> None:
    conv = conversation(
        "c1", participant("alice"), participant("bob"), participant("carol", "Read")
    )
    candidates, _ = fan_out(FLUSH, conv, 11_000, NAMES)
    assert [c["recipient_id"] for c in candidates] == ["alice", "bob", "carol"]
    assert candidates[2]["access"] == "Read"
    assert candidates[0]["sender_names"]["bob"] == "Bob"


def test_sender_names_come_from_user_names_falling_back_to_the_id() -> None:
    """Names come from User.name (chat.users), not from a participant field the
    Conversation contract does not have; a sender without a User record keeps its id."""
    flush = dict(FLUSH, messages=[msg("m1", 0, sender="bob"), msg("m2", 1, sender="zed")])
    conv = conversation("c1", participant("alice", name="wrong"), participant("bob"))
    candidates, _ = fan_out(flush, conv, 11_000, {"bob": "Robert", "alice": "Alice"})
    assert candidates[0]["sender_names"] == {"bob": "Robert", "zed": "zed"}


def test_candidates_name_only_the_senders_of_the_batch() -> None:
    """A huge conversation's Candidates do not carry every participant's name."""
    others = [participant(f"u{i}") for i in range(5_000)]
    conv = conversation("c1", participant("alice"), participant("bob"), *others)
    candidates, _ = fan_out(FLUSH, conv, 11_000, {"alice": "Alice Liddell", "u7": "Seven"})
    assert len(candidates) == 5_002
    # names from the users' records win; the participant's own name is the fallback
    assert candidates[0]["sender_names"] == {"alice": "Alice Liddell", "bob": "Bob"}
    assert all(c["sender_names"] is candidates[0]["sender_names"] for c in candidates)


SKIPS = {
    "own messages only": ("alice", {}, dict(), None, Presence.OFFLINE, Reason.OWN_MESSAGES),
    "participant muted": (
        "carol",
        {"notify": "Off"},
        FULL,
        None,
        Presence.OFFLINE,
        Reason.PARTICIPANT_MUTED,
    ),
    "mentions only, not mentioned": (
        "dave",
        {"notify": "MentionsOnly"},
        FULL,
        None,
        Presence.OFFLINE,
        Reason.NOT_MENTIONED,
    ),
    "unknown user": ("carol", {}, None, None, Presence.OFFLINE, Reason.UNKNOWN_USER),
    "no role": ("carol", {}, FULL, "", Presence.OFFLINE, Reason.NO_ROLE),
    "unknown role": ("carol", {}, FULL, "Member", Presence.OFFLINE, Reason.UNKNOWN_ROLE),
    "viewing": ("carol", {}, FULL, "member", Presence.VIEWING, Reason.VIEWING),
}


@pytest.mark.parametrize("uid,part,contact,role_name,seen,reason", SKIPS.values(), ids=SKIPS.keys())
def test_recipient_level_skips(
    uid: str,
    part: dict[str, Any],
    contact: dict[str, Any] | None,
    role_name: str | None,
    seen: Presence,
    reason: Reason,
) -> None:
    the_user = None if contact is None else user(uid, role=role_name or None, **contact)
    if uid == "alice":  # a batch of alice's own messages only
        flush = dict(FLUSH, messages=[msg("m1", 0, sender="alice")])
        cand = fan_out(flush, conversation("c1", participant("alice")), 1, NAMES)[0][0]
        the_user = user("alice")
    else:
        cand = candidate_for(uid, **part)
    decisions, deliveries = decide(cand, the_user, ROLES, seen, 11_000)
    assert deliveries == []
    assert reasons(decisions) == [(None, str(reason))]
    assert decisions[0]["outcome"] == "skip"
    # presence is reported only once it was looked up (from the VIEWING check on)
    assert decisions[0]["presence"] == (str(seen) if reason is Reason.VIEWING else None)


def test_unknown_role_hints_the_near_match() -> None:
    decisions, _ = decide(
        candidate_for("carol"), user("carol", role="Member"), ROLES, Presence.OFFLINE, 1
    )
    assert "did you mean 'member'" in decisions[0]["detail"]


def test_mentions_only_and_mentioned_is_notified() -> None:
    cand = candidate_for("carol", notify="MentionsOnly")
    decisions, deliveries = decide(cand, user("carol", **FULL), ROLES, Presence.OFFLINE, 1)
    assert [d["outcome"] for d in decisions] == ["send"] * 4
    assert len(deliveries) == 4


@pytest.mark.parametrize(
    "seen", [Presence.OFFLINE, Presence.ONLINE_ELSEWHERE, Presence.ONLINE_UNFOCUSED]
)
def test_the_three_notify_cases(seen: Presence) -> None:
    decisions, deliveries = decide(candidate_for("carol"), user("carol", **FULL), ROLES, seen, 1)
    assert reasons(decisions) == [("email", None), ("sms", None), ("push", None), ("browser", None)]
    assert all(d["presence"] == str(seen) for d in decisions)
    assert [d["delivery_id"] for d in decisions] == [d["delivery_id"] for d in deliveries]


def test_per_channel_disabled_and_no_address() -> None:
    roles = {"member": role("member", email=True, sms=False, push=True, browser=True)}
    the_user = user("carol", email="carol@example.org", push_tokens=[], browser=[SUB])
    decisions, deliveries = decide(candidate_for("carol"), the_user, roles, Presence.OFFLINE, 1)
    assert reasons(decisions) == [
        ("email", None),
        ("sms", "CHANNEL_DISABLED"),
        ("push", "NO_ADDRESS"),
        ("browser", None),
    ]
    assert [d["channel"] for d in deliveries] == ["email", "browser"]
    assert deliveries[1]["browser_subscriptions"] == [SUB]


def test_read_access_is_notified_like_others() -> None:
    decisions, deliveries = decide(
        candidate_for("carol", access="Read"), user("carol"), ROLES, Presence.OFFLINE, 1
    )
    assert deliveries and deliveries[0]["channel"] == "email"


def test_delivery_excludes_own_messages_and_carries_names() -> None:
    _, deliveries = decide(candidate_for("bob"), user("bob"), ROLES, Presence.OFFLINE, 1)
    (email,) = deliveries
    assert [m["message_id"] for m in email["messages"]] == ["m1"]
    assert email["messages"][0]["sender_name"] == "Alice"
    assert email["delivery_id"] == decision_id("c1:m1", "bob", "email")
    assert email["subject"] == "Plans"
