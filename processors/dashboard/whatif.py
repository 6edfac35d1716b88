"""The settings page's "before you save" comparison: ``whatif`` over the last hours.

The same two engines as ``chat-notifier whatif --from-kafka`` (:class:`processors.whatif.Runs`,
records admitted by replay's door, :func:`processors.core.whatif.describe`'s sentence),
over a window that makes sense for a live system:

* the event topics (messages, typing, presence) from ``hours`` ago, by event time;
* the compacted topics (users, conversations, roles, settings) whole, because a batch of
  the last hour needs the Conversation snapshot written last week; merged with the
  events in event-time order, as replay merges topics.

Bounded: at most :data:`MAX_HOURS` hours and :data:`MAX_RECORDS` records (more is refused
with a pointer to the command line, which streams), one comparison at a time (the
server holds a lock), run in a thread so the pages stay responsive.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from processors import topics as t
from processors.settings import Settings

MAX_HOURS = 168  # a week
MAX_RECORDS = 200_000  # ~ a few seconds of CPU per run; the CLI has no such bound
EVENT_TOPICS = (t.MESSAGES, t.TYPING, t.PRESENCE)
SNAPSHOT_TOPICS = (t.USERS, t.CONVERSATIONS, t.ROLES, t.SETTINGS)


class WhatIfTooBig(ValueError):
    """More records than the dashboard compares; the message says what to run instead."""


def _timed(
    records: Iterable[tuple[str, str | None, dict[str, Any] | None]],
) -> Iterator[tuple[int, int, tuple[str, str | None, dict[str, Any] | None]]]:
    order = {name: i for i, name in enumerate(t.INPUT_TOPICS)}
    ts = 0  # a tombstone has no time: it keeps its place after the record before it
    for record in records:
        if record[2] is not None:
            ts = int(record[2].get("ts") or 0)
        yield ts, order[record[0]], record


def compare_recent(
    settings: Settings, hours: float, overrides: Mapping[str, Any], now_ms: int
) -> dict[str, Any]:
    """The comparison (``compare()``'s dict with ``sentence``) of the last ``hours`` of
    traffic under the settings in force vs with ``overrides`` (seconds by name).

    Blocking (reads the broker with its own event loop): call it in a thread.
    """
    from processors.live.kafka_replay import read_topic_records
    from processors.replay import DoorCounts, admitted
    from processors.whatif import Runs

    if not 0 < hours <= MAX_HOURS:
        raise ValueError(f"compare over more than 0 and at most {MAX_HOURS} hours")
    start = datetime.fromtimestamp((now_ms - hours * 3_600_000) / 1000, UTC)
    end = datetime.fromtimestamp(now_ms / 1000, UTC)
    door = DoorCounts()
    streams: list[list[tuple[str, str | None, dict[str, Any] | None]]] = []
    total = 0
    for names, since in ((SNAPSHOT_TOPICS, None), (EVENT_TOPICS, start)):
        read: list[tuple[str, str | None, dict[str, Any] | None]] = []
        for r in read_topic_records(settings, names, since, end if since else None):
            total += 1
            if total > MAX_RECORDS:
                raise WhatIfTooBig(
                    f"more than {MAX_RECORDS:,} records in the last {hours:g} h; compare "
                    "fewer hours here, or run `chat-notifier whatif --from-kafka --start ...`"
                )
            if r.value is None:
                read.append((r.topic, r.key, None))
                continue
            try:
                read.append(admitted(r.topic, r.key, r.value, r.timestamp, door))
            except ValueError:
                continue  # what the worker dead-letters; replay reports, the page skips
        streams.append(read)
    merged = (item[2] for item in heapq.merge(*(_timed(s) for s in streams), key=lambda x: x[:2]))
    runs = Runs(overrides, {})
    runs.feed_all(merged)
    traffic = f"the last {hours:g} h of traffic" if hours != 24 else "the last day's traffic"
    comparison = runs.comparison(traffic)
    comparison["records"] = total
    return comparison
