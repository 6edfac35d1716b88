"""One deadline scheduler for every clock: replay's event time and the worker's wall clock.

Modelled on bytewax's ``StatefulLogic.notify_at``: the owner of some keyed state says
when each key next needs attention (:meth:`DeadlineScheduler.schedule`), asks which
keys are due at ``now`` (:meth:`DeadlineScheduler.due`) and acts on them. Time is a
parameter, so ``replay`` passes event times and the live worker its wall clock.

The heap is lazy, one entry per key: most events only move a deadline *later* (a typing
refresh, another message), and those need no new entry. The entry stays where it was
and, when it comes up, :meth:`DeadlineScheduler.due` asks the owner for the key's true
deadline and re-pushes it if it moved; an earlier deadline replaces the entry (the old
one is skipped as stale when popped). So the heap holds about one entry per open batch
instead of one per event, and a deadline is never acted on early.

Ties are broken by key, so keys due at the same time come out in the same order on
every run (``replay`` output is byte-for-byte reproducible).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

#: key -> its deadline now (epoch ms), or None when it needs no attention any more.
DeadlineOf = Callable[[K], "int | None"]


class DeadlineScheduler(Generic[K]):
    """Keys with deadlines; :meth:`due` gives the ones whose deadline has passed."""

    __slots__ = ("_heap", "_scheduled")

    def __init__(self) -> None:
        self._heap: list[tuple[int, K]] = []
        self._scheduled: dict[K, int] = {}  # key -> the deadline of its live heap entry

    def schedule(self, key: K, deadline: int | None) -> None:
        """Make sure ``key`` comes up no later than ``deadline`` (None: nothing to do).

        A deadline later than the one held adds nothing: :meth:`due` re-reads the true
        deadline when the held one comes up.
        """
        if deadline is None:
            return
        held = self._scheduled.get(key)
        if held is None or deadline < held:
            self._scheduled[key] = deadline
            heapq.heappush(self._heap, (deadline, key))

    def cancel(self, key: K) -> None:
        """Forget ``key`` (its heap entry is skipped as stale when it comes up)."""
        self._scheduled.pop(key, None)

    def due(self, now: int | None, deadline_of: DeadlineOf[K]) -> list[K]:
        """Keys whose true deadline is at or before ``now``, in deadline order, each once.

        ``now=None`` means "the end of time" (replay's end of input). ``deadline_of``
        gives a key's deadline as its owner computes it now: a key whose deadline moved
        later is kept for then, a key with none is dropped. Returned keys are no longer
        scheduled; the caller schedules them again if it does not act on them.
        """
        heap = self._heap
        scheduled = self._scheduled
        out: list[K] = []
        while heap and (now is None or heap[0][0] <= now):
            at, key = heapq.heappop(heap)
            if scheduled.get(key) != at:
                continue  # stale: replaced by an earlier deadline, or cancelled
            actual = deadline_of(key)
            if actual is None:
                del scheduled[key]
            elif actual > at:
                scheduled[key] = actual  # moved later: wait for it
                heapq.heappush(heap, (actual, key))
            else:
                del scheduled[key]
                out.append(key)
        return out

    def next_deadline(self) -> int | None:
        """A lower bound of the next deadline (exact unless the head entry is stale)."""
        return self._heap[0][0] if self._heap else None

    def reschedule_all(self, deadlines: Iterable[tuple[K, int | None]]) -> None:
        """Start over from ``(key, deadline)`` pairs (every deadline moved: new settings)."""
        self._heap = []
        self._scheduled = {}
        for key, deadline in deadlines:
            self.schedule(key, deadline)

    def __contains__(self, key: object) -> bool:
        return key in self._scheduled

    def __len__(self) -> int:
        return len(self._scheduled)

    def deadline(self, key: K) -> int | None:
        """The deadline ``key`` is scheduled at (a lower bound of its true one), or None."""
        return self._scheduled.get(key)
