"""The what-if comparison and its sentence (core/whatif.py), without the CLI."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.core.whatif import (
    HOUR_MS,
    Tally,
    WhatIfError,
    compare,
    describe,
    override_role,
    parse_role_overrides,
    percent_text,
    percentile,
    render_text,
    unknown_role_error,
)


@pytest.mark.parametrize(
    "values, p, expected",
    [
        ([], 50, None),
        ([7], 95, 7),
        ([1, 2, 3, 4], 50, 2),  # nearest rank: the lower middle for even n
        ([5, 1, 3], 50, 3),
        (list(range(1, 101)), 95, 95),
        (list(range(1, 21)), 95, 19),
        ([0, 0, 0, 10], 95, 10),
    ],
)
def test_percentile_is_nearest_rank(values: list[int], p: float, expected: int | None) -> None:
    assert percentile(values, p) == expected


@given(st.lists(st.integers(-1000, 1000), min_size=1), st.floats(0.1, 100))
def test_percentile_is_a_value_that_occurred(values: list[int], p: float) -> None:
    got = percentile(values, p)
    assert got in values
    assert sum(v <= got for v in values) >= p / 100 * len(values)  # type: ignore[operator]


def decision(rid: str | None, channel: str | None, reason: str | None, ts: int, fid: str) -> Any:
    return (
        "notify.decisions",
        rid,
        {
            "flush_id": fid,
            "recipient_id": rid,
            "channel": channel,
            "outcome": "send" if reason is None else "skip",
            "reason": reason,
            "ts": ts,
        },
    )


def flush(fid: str, first_ts: int, closed_at: int) -> Any:
    messages = [{"ts": first_ts + 500}, {"ts": first_ts}]
    value = {"flush_id": fid, "messages": messages, "opened_at": first_ts, "closed_at": closed_at}
    return ("notify.flushes", "c1", value)


def test_tally_counts_sends_skips_delays_and_hours() -> None:
    tally = Tally()
    tally.add_all(
        [
            flush("f1", 1_000, 11_000),
            decision("bob", "email", None, 11_000, "f1"),
            decision("bob", "sms", "NO_ADDRESS", 11_000, "f1"),
            decision("alice", None, "OWN_MESSAGES", 11_000, "f1"),
            flush("f2", HOUR_MS, HOUR_MS + 30_000),  # notified nobody: no delay counted
            decision("bob", None, "VIEWING", HOUR_MS + 30_000, "f2"),
            flush("f3", HOUR_MS + 60_000, HOUR_MS + 65_000),
            decision("carol", "push", None, HOUR_MS + 65_000, "f3"),
            decision(None, None, "UNKNOWN_CONVERSATION", HOUR_MS, "f3"),
        ]
    )
    assert tally.flushes == 3 and tally.notifications == 2
    assert tally.sends == Counter(email=1, push=1)
    assert tally.skips == Counter(NO_ADDRESS=1, OWN_MESSAGES=1, VIEWING=1, UNKNOWN_CONVERSATION=1)
    assert tally.recipients == {"alice", "bob", "carol"}
    assert sorted(tally.delays_ms()) == [5_000, 10_000]
    assert tally.per_hour == Counter({0: 1, HOUR_MS: 1})


def tally(email: int, sms: int = 0, recipients: dict[str, int] | None = None) -> Tally:
    t = Tally(sends=Counter(email=email, sms=sms))
    t.per_recipient.update(recipients or {})
    t.recipients.update(recipients or {})
    return t


def test_compare_puts_runs_side_by_side_over_one_population() -> None:
    base = tally(120, recipients={"a": 100, "b": 20})
    cand = tally(98, recipients={"a": 98})  # b silenced: still counted, as 0
    result = compare(base, cand, settings={"inactivity_seconds": ([10.0], 30.0)})
    assert result["per_channel"]["email"]["change"] == pytest.approx(-22 / 120)
    assert result["per_channel"]["push"] == {"baseline": 0, "candidate": 0, "change": None}
    assert result["per_recipient"]["recipients"] == 2
    assert result["per_recipient"]["mean"]["candidate"] == 49.0
    assert result["delay_ms"]["median"] == {"baseline": None, "candidate": None, "change": None}
    table = render_text(result)
    assert "email" in table and "120" in table and "98" in table and "−18%" in table


def test_hours_between_are_filled_with_zeros() -> None:
    base, cand = Tally(), Tally()
    base.per_hour.update({0: 3, 3 * HOUR_MS: 1})
    cand.per_hour.update({HOUR_MS: 2})
    hours = compare(base, cand)["per_hour"]
    assert [(h["hour_ms"] // HOUR_MS, h["baseline"], h["candidate"]) for h in hours] == [
        (0, 3, 0),
        (1, 0, 2),
        (2, 0, 0),
        (3, 1, 0),
    ]


@pytest.mark.parametrize(
    "base, cand, expected",
    [
        (120, 98, "−18%"),
        (100, 105, "+5%"),
        (8, 9, "+13%"),  # 12.5: half away from zero, not to even
        (7, 7, "0%"),
        (0, 3, "new"),
        (1000, 999, "−<1%"),
    ],
)
def test_percent_text(base: int, cand: int, expected: str) -> None:
    change = (cand - base) / base if base else None
    assert percent_text(change, base, cand) == expected


@pytest.mark.parametrize(
    "kwargs, base, cand, expected",
    [
        (
            {"settings": {"inactivity_seconds": ([10.0], 30.0)}},
            tally(120),
            tally(98),
            "with 30 s instead of 10 s, this traffic would have sent 18% fewer emails "
            "(98 instead of 120)",
        ),
        (
            {"settings": {"inactivity_seconds": ([10.0, 20.0], 5.0)}},
            tally(100),
            tally(150),
            "with 5 s instead of the recorded 10 s to 20 s, this traffic would have sent "
            "50% more emails (150 instead of 100)",
        ),
        (
            {
                "settings": {
                    "typing_ttl_seconds": ([10.0], 2.5),
                    "inactivity_seconds": ([10.0], 30.0),
                }
            },
            tally(10, 4),
            tally(10, 2),
            "with a typing TTL of 2.5 s instead of 10 s and an inactivity period of 30 s "
            "instead of 10 s, this traffic would have sent 50% fewer SMS messages (2 instead of 4)",
        ),
        (
            {"roles": {"member": {"sms": False, "email": True}}},
            tally(5, 3),
            tally(9, 0),
            "with SMS off and email on for member, this traffic would have sent 80% more emails"
            " (9 instead of 5)",
        ),
        (
            {"settings": {"inactivity_seconds": ([10.0], 30.0)}},
            tally(7),
            tally(7),
            "with 30 s instead of 10 s, this traffic would have sent the same number of "
            "notifications (7)",
        ),
        (
            {"settings": {"inactivity_seconds": ([10.0], 10.0)}},
            tally(7),
            tally(7),
            "with 10 s as recorded, this traffic would have sent the same number of "
            "notifications (7)",
        ),
        (
            {},
            tally(0),
            tally(3),
            "with no change, this traffic would have sent 3 emails instead of none",
        ),
        (
            {},
            tally(1000),
            tally(999),
            "with no change, this traffic would have sent slightly fewer emails (999 instead of 1,000)",
        ),
    ],
)
def test_describe_says_the_headline_in_one_sentence(
    kwargs: dict[str, Any], base: Tally, cand: Tally, expected: str
) -> None:
    assert describe(compare(base, cand, **kwargs)) == expected


def test_describe_for_a_chosen_channel_and_traffic() -> None:
    result = compare(tally(120, 10), tally(98, 10), settings={"inactivity_seconds": ([10.0], 30.0)})
    assert describe(result, traffic="last day's traffic", channel="sms") == (
        "with 30 s instead of 10 s, last day's traffic would have sent the same number of "
        "SMS messages (10)"
    )


def test_role_overrides_parse_and_merge() -> None:
    parsed = parse_role_overrides(["member:sms=off,Email=ON", "staff:push=on", "member:sms=on"])
    assert parsed == {"member": {"sms": True, "email": True}, "staff": {"push": True}}


@pytest.mark.parametrize(
    "arg, error",
    [
        ("member", "--role wants NAME:CHANNEL=on|off"),
        (":sms=off", "--role wants"),
        ("member:", "--role wants"),
        ("member:mail=off", "unknown channel 'mail'; did you mean 'email'?"),
        ("member:fax=off", "unknown channel 'fax'; one of email, sms, push, browser"),
        ("member:sms", "sms wants on or off, got ''"),
        ("member:sms=1", "sms wants on or off, got '1'"),
    ],
)
def test_bad_role_overrides_say_what_is_wrong(arg: str, error: str) -> None:
    with pytest.raises(WhatIfError) as caught:
        parse_role_overrides([arg])
    assert error in str(caught.value)


def test_override_role_replaces_only_the_toggled_channels() -> None:
    record = {
        "name": "member",
        "email": False,
        "sms": True,
        "push": True,
        "browser": False,
        "ts": 5,
    }
    assert override_role(record, {"member": {"sms": False}}) == {**record, "sms": False}
    assert override_role(record, {"staff": {"sms": False}}) is record
    assert record["sms"] is True  # the baseline's record is not touched


def test_unknown_role_error_names_the_near_match() -> None:
    assert unknown_role_error(["member"], ["member", "staff"]) is None
    assert "did you mean 'member'?" in str(unknown_role_error(["membr"], ["member", "staff"]))
    assert "did you mean 'member'?" in str(unknown_role_error(["Member"], ["member"]))
    assert "(roles recorded: member, staff)" in str(unknown_role_error(["x"], ["staff", "member"]))
    assert "(roles recorded: none)" in str(unknown_role_error(["x"], []))
