"""What if: two runs of the same recorded traffic, compared (pure; issue 11 item 3).

``chat-notifier whatif`` feeds one parse of the input to two replay engines: the
*baseline* (the recorded settings and roles) and the *candidate* (the same, plus
``--set`` timing overrides and ``--role`` channel toggles). Each engine's output goes
into a :class:`Tally`; :func:`compare` puts two tallies side by side and
:func:`describe` says the headline in one sentence (the dashboard's settings page shows
it before saving). No clock, no files, no plotting here: the CLI, the chart and the
dashboard are adapters.

What is counted, exactly:

- **notifications**: send decisions (one per recipient and channel), per channel;
- **per recipient**: send decisions per recipient over every recipient that got any
  decision (send or skip) in either run, zeros included, so a change that silences
  someone lowers the mean instead of dropping them from it; mean and p95;
- **skips**: skip decisions by reason (a recipient-level skip counts once, a
  channel-level one once per channel);
- **delay**: for each flush that notified someone (at least one send decision),
  ``closed_at`` minus the ``ts`` of its first message; median and p95, in ms;
- **flushes**: ``notify.flushes`` records;
- **per hour**: send decisions by the UTC hour of their ``ts`` (the flush's close).

Percentiles are nearest-rank: the p-th percentile of n sorted values is the value at
rank ``ceil(p/100 * n)``; the median is p50 (the lower middle value for even n). They
are always values that occurred, and exact integers for integer data.

Role overrides (``--role member:sms=off``) apply on top of whatever Role record is in
force at each moment: every recorded ``chat.roles`` record for that role is fed to the
candidate with the overridden toggles replaced and every other field as recorded, so a
later record that changes email still changes email in the candidate, while sms stays
off. A role with no record in the input never exists in either run: overriding it is
an error (with the near match), not a silent no-op.
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from processors.core.settings import SETTABLE, CoreSettings
from processors.topics import CHANNELS, DECISIONS, FLUSHES

HOUR_MS = 3_600_000
#: Fill empty hours between the first and last one only up to this span (~14 months);
#: beyond it (a stray far-off event time) only the hours with notifications are listed.
MAX_FILLED_HOURS = 10_000

#: ``--set`` name -> the CoreSettings attribute that holds it (in ms).
SETTING_MS_FIELD: dict[str, str] = {
    "inactivity_seconds": "inactivity_ms",
    "typing_ttl_seconds": "typing_ttl_ms",
    "max_batch_seconds": "max_batch_ms",
    "presence_ttl_seconds": "presence_ttl_ms",
}
#: How a setting is named in a sentence for people.
SETTING_LABEL: dict[str, str] = {
    "inactivity_seconds": "an inactivity period of",
    "typing_ttl_seconds": "a typing TTL of",
    "max_batch_seconds": "a max batch of",
    "presence_ttl_seconds": "a presence TTL of",
}
CHANNEL_LABEL: dict[str, str] = {
    "email": "email",
    "sms": "SMS",
    "push": "push",
    "browser": "browser",
}
#: "18% fewer <noun>"
CHANNEL_NOUN: dict[str, str] = {
    "email": "emails",
    "sms": "SMS messages",
    "push": "push notifications",
    "browser": "browser notifications",
}

_ON = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False}


class WhatIfError(ValueError):
    """A ``--role`` override that cannot be used (one line, with the near match)."""


# -- statistics --------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of ``values`` (any order); None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def hour_of(ts_ms: int) -> int:
    """The start of the UTC hour holding ``ts_ms``, in epoch ms."""
    return ts_ms - ts_ms % HOUR_MS


# -- one run -----------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    """What one run produced, counted as it streams by (outputs are not kept)."""

    flushes: int = 0
    sends: Counter[str] = field(default_factory=Counter)  # channel -> send decisions
    skips: Counter[str] = field(default_factory=Counter)  # reason -> skip decisions
    per_recipient: Counter[str] = field(default_factory=Counter)  # recipient -> sends
    recipients: set[str] = field(default_factory=set)  # got any decision
    per_hour: Counter[int] = field(default_factory=Counter)  # hour start (ms) -> sends
    # flush_id -> closed_at - first message ts; kept until we know if it notified anyone
    _delay_by_flush: dict[str, int] = field(default_factory=dict)
    _notified: set[str] = field(default_factory=set)

    def add(self, topic: str, key: str | None, value: Mapping[str, Any]) -> None:
        """Count one output record of :class:`~processors.core.engine.Engine`."""
        if topic == FLUSHES:
            self.flushes += 1
            messages = value.get("messages") or ()
            first = min((int(m["ts"]) for m in messages), default=int(value["opened_at"]))
            self._delay_by_flush[value["flush_id"]] = int(value["closed_at"]) - first
        elif topic == DECISIONS:
            recipient = value.get("recipient_id")
            if recipient is not None:
                self.recipients.add(recipient)
            if value["outcome"] == "send":
                self.sends[value["channel"]] += 1
                self.per_recipient[recipient or ""] += 1
                self.per_hour[hour_of(int(value["ts"]))] += 1
                self._notified.add(value["flush_id"])
            else:
                self.skips[value["reason"] or "UNKNOWN"] += 1

    def add_all(self, outputs: Iterable[tuple[str, str | None, Mapping[str, Any]]]) -> None:
        for topic, key, value in outputs:
            self.add(topic, key, value)

    @property
    def notifications(self) -> int:
        return sum(self.sends.values())

    def delays_ms(self) -> list[int]:
        """Delay of every flush that notified someone, in ms (in no particular order)."""
        return [d for fid, d in self._delay_by_flush.items() if fid in self._notified]


# -- the candidate's overrides -------------------------------------------------------


def parse_role_overrides(pairs: Iterable[str]) -> dict[str, dict[str, bool]]:
    """``--role NAME:sms=off,email=on`` arguments -> {role: {channel: on}}.

    Repeated ``--role`` for one role merge (the later toggle of a channel wins).
    Raises :class:`WhatIfError` naming the part that is wrong, with the near channel.
    """
    out: dict[str, dict[str, bool]] = {}
    for pair in pairs:
        name, sep, rest = pair.partition(":")
        name = name.strip()
        if not sep or not name or not rest.strip():
            raise WhatIfError(f"--role wants NAME:CHANNEL=on|off[,...], got {pair!r}")
        toggles = out.setdefault(name, {})
        for part in rest.split(","):
            channel, eq, state = (s.strip() for s in part.partition("="))
            channel = channel.lower()
            if channel not in CHANNELS:
                near = difflib.get_close_matches(channel, CHANNELS, n=1, cutoff=0.5)
                hint = f"did you mean {near[0]!r}?" if near else f"one of {', '.join(CHANNELS)}"
                raise WhatIfError(f"--role {name}: unknown channel {channel!r}; {hint}")
            if not eq or state.lower() not in _ON:
                raise WhatIfError(f"--role {name}: {channel} wants on or off, got {state!r}")
            toggles[channel] = _ON[state.lower()]
    return out


def override_role(
    value: Mapping[str, Any], overrides: Mapping[str, Mapping[str, bool]]
) -> Mapping[str, Any]:
    """The Role record as the candidate sees it: the toggles replaced, the rest as is.

    Returns ``value`` itself when the role is not overridden (no copy).
    """
    toggles = overrides.get(value.get("name") or "")
    if not toggles:
        return value
    return {**value, **toggles}


def unknown_role_error(overridden: Iterable[str], seen: Iterable[str]) -> str | None:
    """The error for a ``--role`` naming no role recorded in the input, or None."""
    known = sorted(set(seen))
    for name in sorted(overridden):
        if name in known:
            continue
        folded = [k for k in known if k.casefold() == name.casefold()]
        near = folded or difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if near:
            return f"--role: role {name!r} is not in the input; did you mean {near[0]!r}?"
        return (
            f"--role: role {name!r} is not in the input "
            f"(roles recorded: {', '.join(known) or 'none'})"
        )
    return None


def settings_values(cfg: CoreSettings) -> dict[str, float]:
    """The ``--set``-able periods of ``cfg``, in seconds."""
    return {name: getattr(cfg, SETTING_MS_FIELD[name]) / 1000 for name in SETTABLE}


# -- two runs side by side -----------------------------------------------------------


def _metric(baseline: float | None, candidate: float | None) -> dict[str, Any]:
    change = None
    if baseline is not None and candidate is not None and baseline != 0:
        change = (candidate - baseline) / baseline
    return {"baseline": baseline, "candidate": candidate, "change": change}


def _mean(values: Sequence[int]) -> float | None:
    return sum(values) / len(values) if values else None


def compare(
    baseline: Tally,
    candidate: Tally,
    *,
    settings: Mapping[str, tuple[Sequence[float], float]] | None = None,
    roles: Mapping[str, Mapping[str, bool]] | None = None,
) -> dict[str, Any]:
    """The comparison, as plain JSON-able data (what ``--json`` prints).

    ``settings`` maps each overridden setting to (the values the baseline ran with, in
    seconds, the candidate's value); ``roles`` are the role overrides. Every metric is
    ``{"baseline", "candidate", "change"}`` with ``change`` the relative change
    ((candidate - baseline) / baseline), null when the baseline is 0 or missing.
    """
    population = sorted(baseline.recipients | candidate.recipients)
    per_recipient = {
        run: [tally.per_recipient.get(r, 0) for r in population]
        for run, tally in (("baseline", baseline), ("candidate", candidate))
    }
    delays = {"baseline": baseline.delays_ms(), "candidate": candidate.delays_ms()}
    hours = sorted(set(baseline.per_hour) | set(candidate.per_hour))
    if hours and (hours[-1] - hours[0]) // HOUR_MS < MAX_FILLED_HOURS:
        hours = list(range(hours[0], hours[-1] + HOUR_MS, HOUR_MS))
    reasons = sorted(set(baseline.skips) | set(candidate.skips))
    return {
        "changes": {
            "settings": {
                name: {"baseline": sorted(set(base)), "candidate": cand}
                for name, (base, cand) in (settings or {}).items()
            },
            "roles": {name: dict(toggles) for name, toggles in (roles or {}).items()},
        },
        "flushes": _metric(baseline.flushes, candidate.flushes),
        "notifications": _metric(baseline.notifications, candidate.notifications),
        "per_channel": {ch: _metric(baseline.sends[ch], candidate.sends[ch]) for ch in CHANNELS},
        "per_recipient": {
            "recipients": len(population),
            "mean": _metric(_mean(per_recipient["baseline"]), _mean(per_recipient["candidate"])),
            "p95": _metric(
                percentile(per_recipient["baseline"], 95),
                percentile(per_recipient["candidate"], 95),
            ),
        },
        "skips": {r: _metric(baseline.skips[r], candidate.skips[r]) for r in reasons},
        "delay_ms": {
            "median": _metric(
                percentile(delays["baseline"], 50), percentile(delays["candidate"], 50)
            ),
            "p95": _metric(percentile(delays["baseline"], 95), percentile(delays["candidate"], 95)),
        },
        "per_hour": [
            {
                "hour_ms": hour,
                "baseline": baseline.per_hour.get(hour, 0),
                "candidate": candidate.per_hour.get(hour, 0),
            }
            for hour in hours
        ],
    }


# -- words ---------------------------------------------------------------------------


def percent_text(change: float | None, baseline: float | None, candidate: float | None) -> str:
    """ "−18%", "+5%", "0%" or "new" (from nothing), with a true minus sign."""
    if baseline == candidate:
        return "0%"
    if change is None:
        return "new" if not baseline else "n/a"
    pct = math.floor(abs(change) * 100 + 0.5)  # half away from zero, not to even
    if pct == 0:
        return "<1%" if change > 0 else "−<1%"
    return f"+{pct}%" if change > 0 else f"−{pct}%"


def _number(value: float | None, unit: str = "", scale: float = 1, digits: int = 0) -> str:
    if value is None:
        return "–"
    shown = value / scale
    text = f"{shown:,.{digits}f}" if digits or shown != int(shown) else f"{int(shown):,}"
    return f"{text}{unit}"


def rows(comparison: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """The table: (what, baseline, candidate, change), in reading order."""
    out: list[tuple[str, str, str, str]] = []

    def add(label: str, metric: Mapping[str, Any], **fmt: Any) -> None:
        b, c = metric["baseline"], metric["candidate"]
        out.append(
            (label, _number(b, **fmt), _number(c, **fmt), percent_text(metric["change"], b, c))
        )

    add("notifications", comparison["notifications"])
    for channel, metric in comparison["per_channel"].items():
        add(f"  {CHANNEL_LABEL[channel]}", metric)
    per = comparison["per_recipient"]
    add(f"per recipient, mean ({per['recipients']} recipients)", per["mean"], digits=2)
    add("per recipient, p95", per["p95"])
    add("flushes", comparison["flushes"])
    add(
        "delay to notification, median",
        comparison["delay_ms"]["median"],
        unit=" s",
        scale=1000,
        digits=1,
    )
    add(
        "delay to notification, p95", comparison["delay_ms"]["p95"], unit=" s", scale=1000, digits=1
    )
    for reason, metric in comparison["skips"].items():
        add(f"skips {reason}", metric)
    return out


def render_text(comparison: Mapping[str, Any]) -> str:
    """The table as aligned plain text (what a pipe or a log gets)."""
    table = [("", "baseline", "candidate", "change"), *rows(comparison)]
    width = [max(len(r[i]) for r in table) for i in range(4)]
    lines = [
        f"{a:<{width[0]}}  {b:>{width[1]}}  {c:>{width[2]}}  {d:>{width[3]}}".rstrip()
        for a, b, c, d in table
    ]
    return "\n".join(lines)


def seconds_text(seconds: float) -> str:
    return f"{seconds:g} s"


def _changes_text(changes: Mapping[str, Any]) -> str:
    parts: list[str] = []
    settings: Mapping[str, Mapping[str, Any]] = changes.get("settings") or {}
    for name, change in settings.items():
        base = [seconds_text(v) for v in change["baseline"]]
        was = base[0] if len(base) == 1 else f"the recorded {' to '.join([base[0], base[-1]])}"
        label = SETTING_LABEL.get(name, name)
        if len(settings) == 1 and not changes.get("roles") and name == "inactivity_seconds":
            label = ""  # the settings page's own sentence: "with 30 s instead of 10 s"
        now = seconds_text(change["candidate"])
        if base == [now]:
            parts.append(f"{label} {now} as recorded".strip())
        else:
            parts.append(f"{label} {now} instead of {was}".strip())
    for role, toggles in (changes.get("roles") or {}).items():
        on = [CHANNEL_LABEL[c] for c, v in toggles.items() if v]
        off = [CHANNEL_LABEL[c] for c, v in toggles.items() if not v]
        said = [f"{' and '.join(x)} {word}" for x, word in ((off, "off"), (on, "on")) if x]
        parts.append(f"{' and '.join(said)} for {role}")
    return " and ".join(parts)


def describe(
    comparison: Mapping[str, Any], *, traffic: str = "this traffic", channel: str | None = None
) -> str:
    """One sentence for people: what the change would have done to ``traffic``.

    ``channel`` picks the channel to speak of; by default the one whose count changed
    most (in absolute terms; the first in channel order on a tie), or all
    notifications when no channel changed. E.g. "with 30 s instead of 10 s, this
    traffic would have sent 18% fewer emails (98 instead of 120)".
    """
    changes = _changes_text(comparison.get("changes") or {})
    lead = f"with {changes}, " if changes else "with no change, "
    if channel is None:
        moved = [
            (abs(m["candidate"] - m["baseline"]), ch)
            for ch, m in comparison["per_channel"].items()
            if m["candidate"] != m["baseline"]
        ]
        channel = max(moved, key=lambda x: x[0])[1] if moved else None
        # max() keeps the first of equals: channel order decides a tie
    if channel is None:
        metric, noun = comparison["notifications"], "notifications"
    else:
        metric, noun = comparison["per_channel"][channel], CHANNEL_NOUN[channel]
    b, c = int(metric["baseline"]), int(metric["candidate"])
    if b == c:
        what = f"the same number of {noun} ({b:,})"
    elif b == 0:
        what = f"{c:,} {noun} instead of none"
    elif c == 0:
        what = f"no {noun} instead of {b:,}"
    else:
        pct = percent_text(metric["change"], b, c).lstrip("+−")
        amount = "slightly" if pct.startswith("<") else pct
        what = f"{amount} {'more' if c > b else 'fewer'} {noun} ({c:,} instead of {b:,})"
    return f"{lead}{traffic} would have sent {what}"
