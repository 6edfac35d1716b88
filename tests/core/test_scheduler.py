"""The one deadline scheduler (core/scheduler.py) that replay and the live worker share."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.core.scheduler import DeadlineScheduler


def fixed(deadlines: dict[str, int | None]) -> DeadlineScheduler[str]:
    scheduler: DeadlineScheduler[str] = DeadlineScheduler()
    for key, deadline in deadlines.items():
        scheduler.schedule(key, deadline)
    return scheduler


@pytest.mark.parametrize(
    "scheduled, true, now, want, left",
    [
        # nothing due yet
        ({"a": 10}, {"a": 10}, 9, [], {"a": 10}),
        # a deadline equal to now is due
        ({"a": 10}, {"a": 10}, 10, ["a"], {}),
        # deadline order, ties by key
        ({"b": 5, "a": 5, "c": 3}, {"a": 5, "b": 5, "c": 3}, 20, ["c", "a", "b"], {}),
        # moved later, past now: kept for its true deadline
        ({"a": 10}, {"a": 15}, 12, [], {"a": 15}),
        # moved later, still before now: due in its place
        ({"a": 10, "b": 11}, {"a": 12, "b": 11}, 20, ["b", "a"], {}),
        # no deadline any more (batch closed or gone): dropped
        ({"a": 10}, {"a": None}, 20, [], {}),
        # the end of time: everything
        ({"a": 10, "b": 99}, {"a": 10, "b": 99}, None, ["a", "b"], {}),
    ],
)
def test_due_asks_the_owner_for_the_true_deadline(
    scheduled: dict[str, int],
    true: dict[str, int | None],
    now: int | None,
    want: list[str],
    left: dict[str, int],
) -> None:
    scheduler = fixed(dict(scheduled))
    assert scheduler.due(now, true.__getitem__) == want
    assert {k: scheduler.deadline(k) for k in true if k in scheduler} == left


def test_one_entry_per_key_and_an_earlier_deadline_replaces_it() -> None:
    scheduler = fixed({"a": 10})
    for later in range(11, 1000):
        scheduler.schedule("a", later)  # typing refreshes: nothing pushed
    assert len(scheduler._heap) == 1
    scheduler.schedule("a", 4)
    assert scheduler.deadline("a") == 4 and scheduler.next_deadline() == 4
    assert scheduler.due(5, lambda k: 4) == ["a"]
    assert scheduler.due(100, lambda k: 10) == []  # the replaced entry is stale


def test_cancel_and_reschedule_all() -> None:
    scheduler = fixed({"a": 10, "b": 20})
    scheduler.cancel("a")
    assert "a" not in scheduler and scheduler.due(15, lambda k: 10) == []
    scheduler.reschedule_all([("a", 30), ("b", 5), ("c", None)])
    assert len(scheduler) == 2 and scheduler.next_deadline() == 5
    assert scheduler.due(40, {"a": 30, "b": 5}.__getitem__) == ["b", "a"]


@given(
    st.lists(
        st.tuples(st.sampled_from("abcdef"), st.integers(0, 100)),
        min_size=1,
        max_size=60,
    ),
    st.integers(0, 120),
)
def test_never_early_never_lost(events: list[tuple[str, int]], now: int) -> None:
    """Whatever order deadlines are set in, a key comes out exactly when its latest
    deadline (the owner's truth) is at or before now, and never twice."""
    truth: dict[str, int] = {}
    scheduler: DeadlineScheduler[str] = DeadlineScheduler()
    for key, deadline in events:
        truth[key] = deadline
        scheduler.schedule(key, deadline)
    got = scheduler.due(now, truth.__getitem__)
    assert sorted(got) == sorted(k for k, d in truth.items() if d <= now)
    assert got == sorted(got, key=lambda k: (truth[k], k))  # deadline order, ties by key
    assert not set(got) & {k for k in truth if k in scheduler}
    assert scheduler.due(now, truth.__getitem__) == []
