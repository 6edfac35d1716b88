"""The worker's Prometheus metrics and its web pages (/metrics, /health, /ready).

Every ``chat_notifier_*`` metric of the worker is defined here, once; docs/operations.md
explains each of them (a test scans the source for their names).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram

DEAD_LETTERS = PromCounter(
    "chat_notifier_dead_letters_total",
    "Records sent to notify.dead-letter",
    ["topic", "stage"],
)
REKEYED = PromCounter(
    "chat_notifier_rekeyed_total",
    "Input records re-published under the key their value names",
    ["topic"],
)
BOUNDED_TIMES = PromCounter(
    "chat_notifier_event_times_bounded_total",
    "Input records whose event time was more than 5 minutes ahead, set to the reference",
    ["topic"],
)
FLUSHES = PromCounter("chat_notifier_flushes_total", "Flush records produced", ["cause"])
DECISIONS = PromCounter(
    "chat_notifier_decisions_total", "Decision records produced", ["outcome", "reason"]
)
FLUSH_LATENESS = Histogram(
    "chat_notifier_flush_lateness_seconds",
    "Worker clock at close minus the batch deadline",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def register_pages(
    app: faust.App, *, config_ready: Callable[[], bool], partitions: Callable[[], list[int]]
) -> None:
    """/metrics (Prometheus text), /health, and /ready (503 until the worker joined its
    group, recovered its partitions and read roles and settings up to their
    high-water marks at start)."""

    async def metrics_page(web: Any, request: Any) -> Any:
        from prometheus_client import generate_latest

        # aiohttp refuses a charset inside content_type; the text format is ASCII.
        return web.bytes(generate_latest(), content_type="text/plain; version=0.0.4")

    async def health_page(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    async def ready_page(web: Any, request: Any) -> Any:
        caught_up = config_ready()
        ready = bool(app.assignor.assigned_actives()) and not app.rebalancing and caught_up
        return web.json(
            {
                "ready": ready,
                "config_caught_up": caught_up,
                "conversation_partitions": partitions(),
            },
            status=200 if ready else 503,
        )

    # Faust inspects a page function's signature: plain (web, request) functions.
    app.page("/metrics")(metrics_page)
    app.page("/health")(health_page)
    app.page("/ready")(ready_page)
