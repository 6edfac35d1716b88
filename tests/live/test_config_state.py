"""The broadcast reader's bookkeeping (processors/live/config.py ConfigState), no broker."""

from __future__ import annotations

import pytest

from processors import topics as t
from processors.live.config import ConfigRefused, ConfigState

from .scenario import role


def test_roles_from_any_partition_newest_ts_wins_whatever_the_read_order() -> None:
    a, b = ConfigState(), ConfigState()
    new = {**role("member", email=True), "ts": 20}
    old = {**role("member"), "ts": 10}
    a.apply(t.ROLES, "member", new, 2, 0)
    a.apply(t.ROLES, "member", old, 0, 5)
    b.apply(t.ROLES, "member", old, 0, 5)
    b.apply(t.ROLES, "member", new, 2, 0)
    assert a.roles == b.roles == {"member": new}


def test_role_key_must_be_its_name() -> None:
    state = ConfigState()
    state.apply(t.ROLES, "member", {**role("member", email=True), "ts": 1}, 0, 0)
    with pytest.raises(ConfigRefused, match="differs from its name"):
        state.apply(t.ROLES, "admin", {**role("member"), "ts": 2}, 0, 1)
    assert state.roles["member"]["email"] is True


def test_tombstones_delete_and_older_records_do_not_resurrect() -> None:
    state = ConfigState()
    state.apply(t.ROLES, "member", {**role("member"), "ts": 10}, 0, 0)
    assert state.delete(t.ROLES, "member", (50, 0, 1))
    assert "member" not in state.roles
    state.apply(t.ROLES, "member", {**role("member"), "ts": 40}, 1, 0)  # older than deletion
    assert "member" not in state.roles
    state.apply(t.ROLES, "member", {**role("member"), "ts": 60}, 1, 1)
    assert "member" in state.roles


def test_settings_without_ts_or_out_of_bounds_are_refused_and_old_values_stay() -> None:
    state = ConfigState()
    good = {"inactivity_seconds": 5, "ts": 10}
    assert state.apply(t.SETTINGS, "app", good, 0, 0)
    version = state.settings_version
    for bad, why in (
        ({"inactivity_seconds": 7, "ts": 0}, "no usable ts"),
        ({"inactivity_seconds": 0, "ts": 11}, "at most 900"),
        ({"inactivity_seconds": 7, "ts": 12, "app_url_template": "ftp://x"}, "http"),
    ):
        with pytest.raises(ConfigRefused, match=why):
            state.apply(t.SETTINGS, "app", bad, 0, 1)
    with pytest.raises(ConfigRefused, match="keyed"):
        state.apply(t.SETTINGS, "other", {"inactivity_seconds": 7, "ts": 13}, 0, 2)
    assert state.app_settings == good and state.settings_version == version
    assert state.delete(t.SETTINGS, "app", (20, 0, 3))
    assert state.app_settings is None and state.settings_version == version + 1


def test_display_names_follow_users_and_their_tombstones() -> None:
    state = ConfigState()
    state.apply(t.USERS, "alice", {"user_id": "alice", "name": "Alice", "ts": 5}, 3, 0)
    assert state.names == {"alice": "Alice"}
    state.delete(t.USERS, "alice", (6, 3, 1))
    assert state.names == {}
