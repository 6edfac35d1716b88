"""The checklist and the admin rules as pure functions (no broker)."""

from __future__ import annotations

from typing import Any

import pytest

from processors import admin
from processors.core.presence import Presence
from processors.core.settings import CoreSettings
from processors.diagnosis import (
    checklist,
    latest_snapshot,
    live_presence,
    mask_email,
    mask_endpoint,
    mask_known,
    mask_phone,
    mask_token,
)

NOW = 1_800_000_000_000
ROLES = {
    "member": {"name": "member", "email": True, "sms": False, "push": True, "browser": False},
}


def user(**extra: Any) -> dict[str, Any]:
    base = {
        "user_id": "ann",
        "name": "Ann",
        "email": "ann.smith@example.org",
        "phone": "+447700900789",
        "role": "member",
        "locale": "en",
        "push_tokens": [],
        "browser_subscriptions": [],
        "ts": NOW - 1000,
    }
    return {**base, **extra}


@pytest.mark.parametrize(
    ("fn", "raw", "masked"),
    [
        (mask_email, "ann.smith@example.org", "a***@example.org"),
        (mask_email, "no-at-sign", "***"),
        (mask_phone, "+447700900789", "+44******789"),
        (mask_phone, "12345", "******"),
        (mask_token, "fcm-token-abcdef123456wxyz", "…wxyz"),
        (mask_token, "short", "…"),
        (mask_endpoint, "https://push.example.com/send/abcdefghijklmnop", "push.example.com/…mnop"),
    ],
)
def test_masks(fn: Any, raw: str, masked: str) -> None:
    assert fn(raw) == masked


def test_mask_known_replaces_every_address_in_a_provider_detail() -> None:
    u = user(push_tokens=["fcm-token-abcdef123456wxyz"])
    text = mask_known("UNREGISTERED fcm-token-abcdef123456wxyz for ann.smith@example.org", u)
    assert "fcm-token" not in text and "ann.smith" not in text
    assert "…wxyz" in text and "a***@example.org" in text


def verdicts(**kwargs: Any) -> dict[str, str]:
    d = checklist("ann", kwargs.pop("u", user()), kwargs.pop("roles", ROLES), **kwargs)
    return {v.channel: v.text for v in d.verdicts}


def test_verdict_per_channel_words_role_off_and_missing_address() -> None:
    got = verdicts(presence=Presence.OFFLINE, now=NOW)
    assert got == {
        "email": "email: would be sent when offline or not viewing",
        "sms": "sms: off for role 'member'",
        "push": "push: no push token",
        "browser": "browser: off for role 'member'",
    }


def test_unknown_role_names_the_near_match_in_checks_and_verdicts() -> None:
    d = checklist("ann", user(role="Member"), ROLES, Presence.OFFLINE, NOW)
    exists = next(c for c in d.checks if c.name == "role exists")
    assert not exists.ok and "did you mean 'member'?" in exists.text
    assert all(v.reason == "UNKNOWN_ROLE" and not v.notify for v in d.verdicts)


def test_no_user_and_no_role() -> None:
    assert {v.reason for v in checklist("ann", None, ROLES, Presence.OFFLINE, NOW).verdicts} == {
        "UNKNOWN_USER"
    }
    d = checklist("ann", user(role=None), ROLES, Presence.OFFLINE, NOW)
    assert {v.reason for v in d.verdicts} == {"NO_ROLE"}


def test_conversation_viewing_muted_and_not_a_participant() -> None:
    conv = {
        "conversation_id": "c1",
        "participants": [{"user_id": "ann", "access": "ReadWrite", "notify": "All"}],
    }
    d = checklist(
        "ann", user(), ROLES, Presence.VIEWING, NOW, conversation_id="c1", conversation=conv
    )
    assert d.verdicts[0].reason == "VIEWING" and "not now: viewing 'c1'" in d.verdicts[0].text
    muted = {**conv, "participants": [{**conv["participants"][0], "notify": "Off"}]}
    d = checklist(
        "ann", user(), ROLES, Presence.OFFLINE, NOW, conversation_id="c1", conversation=muted
    )
    assert {v.reason for v in d.verdicts} == {"PARTICIPANT_MUTED"}
    d = checklist(
        "bob", user(), ROLES, Presence.OFFLINE, NOW, conversation_id="c1", conversation=conv
    )
    assert all("not a participant" in v.text for v in d.verdicts)


def test_an_invalid_address_outcome_warns_on_its_channel() -> None:
    outcomes = [
        {"channel": "email", "status": "sent", "detail": None},
        {"channel": "email", "status": "invalid_address", "detail": "bounce ann.smith@example.org"},
    ]
    d = checklist("ann", user(), ROLES, Presence.OFFLINE, NOW, outcomes=outcomes)
    email = d.verdicts[0]
    assert email.warnings == [
        "the last delivery on email was invalid_address (bounce a***@example.org)"
    ]


def test_latest_snapshot_worker_rule_and_tombstone() -> None:
    a = user(ts=NOW - 5000, name="Old")
    b = user(ts=NOW - 1000, name="New")
    assert latest_snapshot([("ann", b, None), ("ann", a, None)], "chat.users", "ann", NOW) == b
    assert (
        latest_snapshot([("ann", b, None), ("ann", None, None)], "chat.users", "ann", NOW) is None
    )
    # a record keyed for someone else is refused at the door, as the worker refuses it
    assert latest_snapshot([("bob", user(), None)], "chat.users", "bob", NOW) is None


def test_live_presence_uses_the_ttl_rule() -> None:
    cfg = CoreSettings(presence_ttl_ms=60_000)
    ev = {
        "user_id": "ann",
        "session_id": "s1",
        "online": True,
        "selected_conversation_id": "c1",
        "focused": True,
    }
    fresh = live_presence("ann", [({**ev, "ts": NOW - 1000}, None)], NOW, cfg)
    assert fresh.status("c1", NOW, cfg) is Presence.VIEWING
    stale = live_presence("ann", [({**ev, "ts": NOW - 61_000}, None)], NOW, cfg)
    assert stale.status("c1", NOW, cfg) is Presence.OFFLINE


# -- admin rules --


def test_next_ts_always_beats_the_record_in_force() -> None:
    assert admin.next_ts(None, NOW) == NOW
    assert admin.next_ts(NOW - 10, NOW) == NOW
    assert admin.next_ts(NOW + 2000, NOW) == NOW + 2001  # held stamped slightly ahead
    with pytest.raises(admin.AdminError, match="in the future"):
        admin.next_ts(NOW + 10 * 60_000, NOW)


def test_role_record_new_role_defaults_off_and_merge() -> None:
    new = admin.role_record("ops", None, {"sms": True}, NOW)
    assert new == {
        "name": "ops",
        "email": False,
        "sms": True,
        "push": False,
        "browser": False,
        "ts": NOW,
    }
    assert admin.role_record("ops", None, {}, NOW)["email"] is False  # defaults: all off
    merged = admin.role_record("member", ROLES["member"], {"push": False}, NOW)
    assert (merged["email"], merged["push"]) == (True, False)
    with pytest.raises(admin.AdminError, match="name a channel"):
        admin.role_record("member", ROLES["member"], {}, NOW)
    with pytest.raises(admin.AdminError, match="did you mean 'email'"):
        admin.role_record("member", ROLES["member"], {"emial": True}, NOW)
    with pytest.raises(admin.AdminError, match="control character"):
        admin.role_record("bad\nrole", None, {"sms": True}, NOW)


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["inactivity=5"], "did you mean 'inactivity_seconds'?"),
        (["inactivity_seconds=2.5"], "whole number of seconds"),
        (["inactivity_seconds"], "NAME=VALUE"),
    ],
)
def test_parse_assignments_refusals(pairs: list[str], message: str) -> None:
    with pytest.raises(admin.AdminError, match=message):
        admin.parse_assignments(pairs)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"inactivity_seconds": 0}, "more than 0 and at most 900"),
        ({"inactivity_seconds": -3}, "more than 0 and at most 900"),
        ({"inactivity_seconds": 901}, "more than 0 and at most 900"),
        ({"max_batch_seconds": 5, "inactivity_seconds": 10}, "at least"),
        ({"app_url_template": "javascript:alert(1)"}, "app_url_template"),
    ],
)
def test_settings_record_bounds(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(admin.AdminError, match=message):
        admin.settings_record(None, changes, NOW)


def test_settings_record_merges_with_the_record_in_force() -> None:
    held = admin.settings_record(None, {"presence_ttl_seconds": 120, "sms_from": "Chat"}, NOW)
    new = admin.settings_record(held, admin.parse_assignments(["inactivity_seconds=2"]), NOW + 1)
    assert (new["inactivity_seconds"], new["presence_ttl_seconds"], new["sms_from"]) == (
        2,
        120,
        "Chat",
    )
    assert admin.settings_record(held, {"sms_from": None}, NOW + 2)["sms_from"] is None


def test_the_checklist_module_is_pure() -> None:
    """diagnosis.py holds the checklist as pure functions: the core's purity rule."""
    from pathlib import Path

    import processors.diagnosis
    from tests.core.test_purity import FORBIDDEN_MODULES
    from tests.imports import imported_modules

    names = imported_modules(Path(processors.diagnosis.__file__))
    assert "processors.core.decisions" in names  # the scan saw the imports
    assert not [n for n in names if n.split(".")[0] in FORBIDDEN_MODULES or n in FORBIDDEN_MODULES]
