"""The batching and presence parameters of AppSettings (DESIGN §4, §5), in milliseconds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Defaults of the dashboard's AppSettings record (DESIGN §4).
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


class SettingsError(ValueError):
    """An AppSettings value or ``--set`` override that cannot be used."""


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
        """Build from an AppSettings record; ``overrides`` (replay's ``--set``) win.

        Seconds may be fractional (tests and demos use sub-second periods); negative
        values are rejected because they would make a batch close before it opened.
        """
        merged: dict[str, Any] = dict(_FIELDS)
        for source in (app_settings or {}, overrides or {}):
            for name, value in source.items():
                if name in _FIELDS and value is not None:
                    merged[name] = value
        ms: dict[str, int] = {}
        for name, value in merged.items():
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                raise SettingsError(f"{name} must be a number of seconds, got {value!r}") from None
            if seconds < 0:
                raise SettingsError(f"{name} must not be negative, got {value!r}")
            ms[name] = round(seconds * 1000)
        return cls(
            inactivity_ms=ms["inactivity_seconds"],
            typing_ttl_ms=ms["typing_ttl_seconds"],
            max_batch_ms=ms["max_batch_seconds"],
            presence_ttl_ms=ms["presence_ttl_seconds"],
        )
