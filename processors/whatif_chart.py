"""The ``whatif --chart`` PNG: notifications per hour, baseline vs candidate.

Imported only when ``--chart`` is given (matplotlib is slow to import), with the Agg
backend: no display, the same picture on a server as on a laptop.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

MAX_LABELS = 24  # hour labels on the x axis; more would overlap


def hour_label(hour_ms: int) -> str:
    return datetime.fromtimestamp(hour_ms / 1000, UTC).strftime("%m-%d %H:00")


def write_chart(comparison: Mapping[str, Any], path: Path) -> None:
    """Draw ``comparison["per_hour"]`` as paired bars and write it to ``path`` (PNG).

    Raises OSError when the file cannot be written.
    """
    hours = comparison["per_hour"]
    xs = list(range(len(hours)))
    width = 0.4
    fig, ax = plt.subplots(figsize=(max(6.0, min(16.0, 1 + 0.5 * len(hours))), 4), dpi=100)
    try:
        ax.bar([x - width / 2 for x in xs], [h["baseline"] for h in hours], width, label="baseline")
        ax.bar(
            [x + width / 2 for x in xs], [h["candidate"] for h in hours], width, label="candidate"
        )
        step = max(1, -(-len(hours) // MAX_LABELS))
        ax.set_xticks(xs[::step], [hour_label(h["hour_ms"]) for h in hours[::step]])
        pad = max(0.6, (3 - len(hours)) / 2)  # a lone hour keeps bars of a sane width
        ax.set_xlim(-pad, len(hours) - 1 + pad)
        ax.tick_params(axis="x", labelrotation=45)
        ax.set_xlabel("hour (UTC)")
        ax.set_ylabel("notifications (send decisions)")
        total = comparison["notifications"]
        ax.set_title(
            f"Notifications per hour: baseline {total['baseline']:,} vs candidate "
            f"{total['candidate']:,}"
        )
        top = max([h["baseline"] for h in hours] + [h["candidate"] for h in hours] + [1])
        ax.set_ylim(0, top * 1.25)  # headroom: the legend never hides a bar
        ax.legend(loc="upper right", ncols=2)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
