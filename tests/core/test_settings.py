"""AppSettings bounds, --set parsing and which config record wins (core/settings.py)."""

from __future__ import annotations

from typing import Any

import pytest

from processors.core.settings import (
    MAX_SECONDS,
    CoreSettings,
    SettingsError,
    config_record_wins,
    parse_set,
    validate_app_settings,
)


@pytest.mark.parametrize(
    "record, error",
    [
        ({"inactivity_seconds": 0}, "inactivity_seconds must be more than 0 and at most 900"),
        ({"inactivity_seconds": 901}, "at most 900"),
        ({"inactivity_seconds": 10**9}, "at most 900"),
        ({"inactivity_seconds": -5}, "more than 0"),
        ({"inactivity_seconds": "soon"}, "must be a number"),
        ({"inactivity_seconds": True}, "must be a number"),
        ({"inactivity_seconds": float("nan")}, "more than 0"),
        ({"typing_ttl_seconds": 301}, "typing_ttl_seconds must be more than 0 and at most 300"),
        ({"presence_ttl_seconds": 3601}, "at most 3600"),
        ({"max_batch_seconds": 3601}, "at most 3600"),
        ({"max_batch_seconds": 5, "inactivity_seconds": 6}, "must be at least inactivity"),
        ({"app_url_template": "javascript:alert(1)//{conversation_id}"}, "app_url_template"),
        ({"unsubscribe_url_template": "https://x/{user_id.__class__}"}, "unsubscribe_url"),
        ({"email_from": "Chat <a@b>\r\nBcc: evil@x"}, "control characters"),
        ({"reply_domain": "r" * 257}, "longer than 256"),
    ],
)
def test_out_of_bounds_settings_are_refused_with_the_reason(
    record: dict[str, Any], error: str
) -> None:
    with pytest.raises(SettingsError, match=error.replace("(", r"\(")):
        validate_app_settings({"ts": 1, **record})


def test_bounds_are_inclusive_at_the_top() -> None:
    cfg = CoreSettings.from_app_settings(
        {name: top for name, top in MAX_SECONDS.items() if name != "max_batch_seconds"}
        | {"max_batch_seconds": 3600}
    )
    assert cfg.inactivity_ms == 900_000 and cfg.presence_ttl_ms == 3_600_000
    assert CoreSettings.from_app_settings(None, {"inactivity_seconds": "0.5"}).inactivity_ms == 500


@pytest.mark.parametrize(
    "pairs, error",
    [
        (["inactivity=5"], "did you mean 'inactivity_seconds'?"),
        (["typing=3"], "did you mean 'typing_ttl_seconds'?"),
        (["colour=red"], "one of inactivity_seconds"),
        (["inactivity_seconds"], "NAME=VALUE"),
        (["inactivity_seconds=0"], "at most 900"),
    ],
)
def test_set_refuses_unknown_names_with_the_near_match(pairs: list[str], error: str) -> None:
    with pytest.raises(SettingsError, match=error):
        parse_set(pairs)


def test_set_accepts_known_names() -> None:
    assert parse_set(["inactivity_seconds=5", " max_batch_seconds = 60"]) == {
        "inactivity_seconds": "5",
        "max_batch_seconds": "60",
    }


@pytest.mark.parametrize(
    "held, incoming, wins",
    [
        (None, (1, 0, 0), True),
        ((5, 0, 3), (6, 0, 1), True),  # higher ts wins whatever the offset
        ((5, 2, 9), (4, 0, 10), False),  # older ts loses, even read later
        ((5, 0, 3), (5, 0, 4), True),  # equal ts: the later record on the partition
        ((5, 0, 3), (5, 2, 0), True),  # equal ts: higher partition, whatever read order
        ((5, 2, 0), (5, 0, 3), False),
    ],
)
def test_which_config_record_wins(
    held: tuple[int, int, int] | None, incoming: tuple[int, int, int], wins: bool
) -> None:
    assert config_record_wins(held, incoming) is wins


@pytest.mark.parametrize(
    "held, incoming, wins",
    [
        (None, {"ts": 5}, True),
        ({"ts": 5}, {"ts": 6}, True),
        ({"ts": 5}, {"ts": 5}, True),  # equal: the one read later
        ({"ts": 6}, {"ts": 5}, False),  # an older snapshot arriving late
        ({}, {"ts": 1}, True),
        ({"ts": 1}, {}, False),
    ],
)
def test_newer_snapshot_wins(
    held: dict[str, int] | None, incoming: dict[str, int], wins: bool
) -> None:
    from processors.core.settings import snapshot_wins

    assert snapshot_wins(held, incoming) is wins
