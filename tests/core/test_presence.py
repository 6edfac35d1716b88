"""Presence per session, aggregated per user, with TTL (contract §5)."""

from __future__ import annotations

import pytest

from processors.core.presence import Presence, UserPresence
from processors.core.settings import CoreSettings
from tests.core.builders import S, presence

CFG = CoreSettings()  # presence ttl 60 s
P = Presence

CASES = {
    "no sessions: offline": ([], 0, P.OFFLINE),
    "online elsewhere": (
        [presence("u", 0, selected="other", focused=True)],
        1 * S,
        P.ONLINE_ELSEWHERE,
    ),
    "online, nothing selected": ([presence("u", 0)], 1 * S, P.ONLINE_ELSEWHERE),
    "selected and focused: viewing": (
        [presence("u", 0, selected="c1", focused=True)],
        1 * S,
        P.VIEWING,
    ),
    "selected, not focused": ([presence("u", 0, selected="c1")], 1 * S, P.ONLINE_UNFOCUSED),
    "said offline": (
        [presence("u", 0, selected="c1", focused=True), presence("u", 1 * S, online=False)],
        2 * S,
        P.OFFLINE,
    ),
    "silent for the ttl: offline": (
        [presence("u", 0, selected="c1", focused=True)],
        60 * S,
        P.OFFLINE,
    ),
    "just inside the ttl: still viewing": (
        [presence("u", 0, selected="c1", focused=True)],
        60 * S - 1,
        P.VIEWING,
    ),
    "one of two sessions focused on it: viewing": (
        [
            presence("u", 0, "tab1", selected="c1"),
            presence("u", 0, "tab2", selected="c1", focused=True),
        ],
        1 * S,
        P.VIEWING,
    ),
    "focused tab elsewhere, unfocused tab on it": (
        [
            presence("u", 0, "tab1", selected="c1"),
            presence("u", 0, "tab2", selected="c9", focused=True),
        ],
        1 * S,
        P.ONLINE_UNFOCUSED,
    ),
    "the viewing session expired, the other is elsewhere": (
        [
            presence("u", 0, "tab1", selected="c1", focused=True),
            presence("u", 50 * S, "tab2", selected="c9"),
        ],
        61 * S,
        P.ONLINE_ELSEWHERE,
    ),
    "older event for a session is ignored": (
        [presence("u", 5 * S, online=False), presence("u", 4 * S, selected="c1", focused=True)],
        6 * S,
        P.OFFLINE,
    ),
}


@pytest.mark.parametrize("events,now,expected", CASES.values(), ids=CASES.keys())
def test_presence(events: list[dict[str, object]], now: int, expected: Presence) -> None:
    state = UserPresence("u")
    for event in events:
        state.apply(event, CFG)
    assert state.status("c1", now, CFG) is expected
    assert UserPresence.from_dict(state.to_dict()).status("c1", now, CFG) is expected


def test_stale_sessions_are_pruned() -> None:
    state = UserPresence("u")
    for i in range(100):
        state.apply(presence("u", i * 10 * S, session=f"s{i}"), CFG)
    assert len(state.sessions) <= 7


def test_has_online_session_ignores_age_and_follows_the_last_word_of_each_session() -> None:
    cfg = CoreSettings()
    user = UserPresence("u")
    assert not user.has_online_session()
    user.apply(presence("u", 1 * S, "s1", online=True), cfg)
    user.apply(presence("u", 2 * S, "s2", online=False), cfg)
    assert user.has_online_session()
    user.apply(presence("u", 3 * S, "s1", online=False), cfg)
    assert not user.has_online_session()
