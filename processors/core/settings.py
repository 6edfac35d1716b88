"""AppSettings: bounds, validation, ``--set`` parsing and which config record wins.

Pure: the live config reader (:mod:`processors.live.config`), the worker's ``--set``,
the senders and ``replay`` all validate through here, so they accept and refuse the same
records and agree on which one is in force (contract §4, §11 "Config topics of any shape").

Bounds, in seconds (exclusive lower bound 0, inclusive upper bound):

=====================  =======  ==============================================
setting                maximum  why
=====================  =======  ==============================================
inactivity_seconds     900      the product caps the inactivity period at 15 min
typing_ttl_seconds     300      clients refresh typing every few seconds
max_batch_seconds      3600     an hour; must also be >= inactivity_seconds
presence_ttl_seconds   3600     heartbeats are seconds apart; an hour is stale
=====================  =======  ==============================================

0 would notify once per message (the inactivity period is the anti-spam rule), and
huge values switch notifications off without saying so: both are refused.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Defaults of the dashboard's AppSettings record (contract §4).
DEFAULT_INACTIVITY_S = 10
DEFAULT_TYPING_TTL_S = 10
DEFAULT_MAX_BATCH_S = 300
DEFAULT_PRESENCE_TTL_S = 60

_FIELDS = {
    "inactivity_seconds": DEFAULT_INACTIVITY_S,
    "typing_ttl_seconds": DEFAULT_TYPING_TTL_S,
    "max_batch_seconds": DEFAULT_MAX_BATCH_S,
    "presence_ttl_seconds": DEFAULT_PRESENCE_TTL_S,
}

#: Inclusive upper bound of each period, in seconds (the lower bound is "more than 0").
MAX_SECONDS: dict[str, int] = {
    "inactivity_seconds": 900,  # the product's cap
    "typing_ttl_seconds": 300,
    "max_batch_seconds": 3600,
    "presence_ttl_seconds": 3600,
}

#: The names ``--set`` accepts (worker and replay).
SETTABLE: tuple[str, ...] = tuple(_FIELDS)

#: AppSettings link templates, checked by :func:`validate_link_template`.
LINK_FIELDS = ("app_url_template", "unsubscribe_url_template")
#: Sender identities: plain text that ends up in headers and SMS "from" fields.
IDENTITY_FIELDS = ("email_from", "reply_domain", "sms_from")
MAX_IDENTITY_CHARS = 256


class SettingsError(ValueError):
    """An AppSettings value or ``--set`` override that cannot be used."""


from processors.core.links import validate_link_template  # noqa: E402 - one home of the rule


def _seconds(name: str, value: Any) -> int:
    """``value`` (seconds, maybe fractional) checked against ``name``'s bounds, in ms."""
    if isinstance(value, bool):
        raise SettingsError(f"{name} must be a number of seconds, got {value!r}")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a number of seconds, got {value!r}") from None
    top = MAX_SECONDS[name]
    ms = round(seconds * 1000) if math.isfinite(seconds) else 0
    if not math.isfinite(seconds) or ms <= 0 or seconds > top:
        raise SettingsError(f"{name} must be more than 0 and at most {top} seconds, got {value!r}")
    return ms


@dataclass(frozen=True, slots=True)
class CoreSettings:
    inactivity_ms: int = DEFAULT_INACTIVITY_S * 1000
    typing_ttl_ms: int = DEFAULT_TYPING_TTL_S * 1000
    max_batch_ms: int = DEFAULT_MAX_BATCH_S * 1000
    presence_ttl_ms: int = DEFAULT_PRESENCE_TTL_S * 1000

    @classmethod
    def from_app_settings(
        cls,
        app_settings: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> CoreSettings:
        """Build from an AppSettings record; ``overrides`` win field by field.

        Seconds may be fractional (tests and demos use sub-second periods). Every
        period is bounded (:data:`MAX_SECONDS`, more than 0) and ``max_batch_seconds``
        may not be shorter than ``inactivity_seconds`` (the cap would always win);
        anything else raises :class:`SettingsError` naming the field and the bound.
        """
        merged: dict[str, Any] = dict(_FIELDS)
        for source in (app_settings or {}, overrides or {}):
            for name, value in source.items():
                if name in _FIELDS and value is not None:
                    merged[name] = value
        ms = {name: _seconds(name, value) for name, value in merged.items()}
        if ms["max_batch_seconds"] < ms["inactivity_seconds"]:
            raise SettingsError(
                f"max_batch_seconds ({merged['max_batch_seconds']}) must be at least "
                f"inactivity_seconds ({merged['inactivity_seconds']})"
            )
        return cls(
            inactivity_ms=ms["inactivity_seconds"],
            typing_ttl_ms=ms["typing_ttl_seconds"],
            max_batch_ms=ms["max_batch_seconds"],
            presence_ttl_ms=ms["presence_ttl_seconds"],
        )


def validate_app_settings(record: Mapping[str, Any]) -> dict[str, Any]:
    """Check a decoded AppSettings record; return it (templates as the validator gives
    them back). Raises :class:`SettingsError` naming the first unusable field.

    A record that fails is not applied anywhere: worker and senders keep the previous
    values, and the record is dead-lettered with this error as the reason.
    """
    CoreSettings.from_app_settings(record)
    out = dict(record)
    for name in LINK_FIELDS:
        value = record.get(name)
        if value is None:
            continue
        try:
            out[name] = validate_link_template(str(value))
        except ValueError as exc:
            raise SettingsError(f"{name}: {exc}") from None
    for name in IDENTITY_FIELDS:
        value = record.get(name)
        if value is None:
            continue
        text = str(value)
        if len(text) > MAX_IDENTITY_CHARS:
            raise SettingsError(f"{name} is longer than {MAX_IDENTITY_CHARS} characters")
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise SettingsError(f"{name} contains control characters")
    return out


def setting_hint(name: str, known: Iterable[str] = SETTABLE) -> str:
    """The near match for an unknown setting name ("did you mean ...?"), else the list."""
    names = list(known)
    near = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    if not near:
        near = [f for f in names if f.startswith(name.split("_")[0])][:1]
    return f"did you mean {near[0]!r}?" if near else f"one of {', '.join(names)}"


def parse_set(pairs: Iterable[str]) -> dict[str, str]:
    """``--set NAME=VALUE`` arguments -> overrides, validated now rather than mid-run.

    Unknown names are refused with the near match (``inactivity=5`` -> "did you mean
    'inactivity_seconds'?"), values with their bound; both as :class:`SettingsError`.
    """
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise SettingsError(f"--set wants NAME=VALUE, got {pair!r}")
        if name not in _FIELDS:
            raise SettingsError(f"--set: unknown setting {name!r}; {setting_hint(name)}")
        _seconds(name, value)
        out[name] = value
    CoreSettings.from_app_settings(None, out)  # cross-field rules
    return out


Position = tuple[int, int, int]
"""Where a config record stands in the order of :func:`config_record_wins`:
(event time ``ts``, partition, offset)."""


def config_record_wins(held: Position | None, incoming: Position) -> bool:
    """Does a config record (role, settings, user display name) replace the held one?

    The higher ``ts`` wins; on equal ``ts`` the later record wins: on the same partition
    the higher offset (the one read later), across partitions the higher partition, so
    every reader agrees whatever order it read the partitions in. ``replay`` has no
    partitions and passes (ts, 0, 0): equal ts, later line wins. Records without a
    usable ``ts`` (0 or negative) never get here: they are dead-lettered.
    """
    return held is None or incoming >= held


def snapshot_wins(held: Mapping[str, Any] | None, incoming: Mapping[str, Any]) -> bool:
    """Does a snapshot record (a Conversation, a User) replace the one held for its key?

    Compacted topics deliver whole snapshots, and an older one can arrive late: the
    higher ``ts`` wins, an equal ``ts`` the one read later (:func:`config_record_wins`
    on one partition). A missing ``ts`` counts as 0. ``replay`` and the live worker both
    decide through here.
    """
    if held is None:
        return True
    return config_record_wins(
        (int(held.get("ts") or 0), 0, 0), (int(incoming.get("ts") or 0), 0, 0)
    )
