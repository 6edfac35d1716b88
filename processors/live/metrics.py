"""What every long-running process exports to Prometheus, besides its own counters.

Faust's Prometheus sensor (``faust.sensors.prometheus``, faust-streaming 0.15.3) is the
app's monitor in every process :func:`processors.app.create_app` builds. It already
counts what a user of any Faust app expects, so we do not count it again by hand:

- ``chat_notifier_faust_messages_received_per_topic_total{topic}``: events in by topic
  (the worker's batch path skips the per-record sensor call and counts
  ``chat_notifier_events_in_total{topic}`` itself);
- ``chat_notifier_faust_topic_partition_end_offset{topic,partition}`` and
  ``..._topic_partition_offset_commited{topic,partition}``: the offsets lag is made of;
- ``chat_notifier_faust_table_operations_total{table,operation}``, producer send
  latency, rebalances, HTTP status codes, commit latency.

It writes into the default registry, beside our own ``chat_notifier_*`` metrics, so one
``/metrics`` page shows both. The name prefix is fixed (``chat_notifier_faust``), not
the app id, so a dashboard works for every process and test group alike.

On top, ``chat_notifier_consumer_lag{topic,partition}`` (a collector, computed when
scraped): records on each assigned input partition not yet processed and committed,
end offset minus committed offset, so an alert needs no PromQL join.

:func:`serve_pages` gives the senders and the reply agent ``/metrics``, ``/health`` and
``/ready``; :func:`register_pages` gives the worker its own (readiness includes its
conversation partitions). The worker's counters are defined here, once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import faust
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from prometheus_client import REGISTRY, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# The worker's own metrics, defined once (docs/operations.md explains each).
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
EVENTS_IN = PromCounter(
    "chat_notifier_events_in_total",
    "Input records applied by the worker's batch path, by topic",
    ["topic"],
)
FLUSHES = PromCounter("chat_notifier_flushes_total", "Flush records produced", ["cause"])
DECISIONS = PromCounter(
    "chat_notifier_decisions_total", "Decision records produced", ["outcome", "reason", "channel"]
)
FLUSH_LATENESS = Histogram(
    "chat_notifier_flush_lateness_seconds",
    "Worker clock at close minus the batch deadline",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


FAUST_PREFIX = "chat_notifier_faust"

#: Faust's metric objects, created once per process: the registry refuses a second
#: metric of the same name (tests build several apps in one process).
_FAUST_METRICS: FaustMetrics | None = None
#: The app whose consumer the lag collector reports (the last one built).
_LAG_APP: list[faust.App] = []


class ConsumerLag(Collector):
    """``chat_notifier_consumer_lag``: end offset minus committed offset per partition."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "chat_notifier_consumer_lag",
            "Records on an assigned partition not yet processed and committed",
            labels=["topic", "partition"],
        )
        for tp, lag in consumer_lag(_LAG_APP[-1] if _LAG_APP else None).items():
            gauge.add_metric([tp[0], str(tp[1])], lag)
        yield gauge


def consumer_lag(app: faust.App | None) -> dict[tuple[str, int], int]:
    """(topic, partition) -> end offset minus committed offset, for partitions read."""
    if app is None:
        return {}
    monitor = app.monitor
    ends = dict(monitor.tp_end_offsets or {})
    committed = dict(monitor.tp_committed_offsets or {})
    # Faust's monitor knows a commit only after this generation's first one; the
    # consumer's own table also holds the offsets it started from.
    started: dict[Any, int] = {}
    try:
        started = dict(getattr(app.consumer, "_committed_offset", None) or {})
    except Exception:  # noqa: BLE001 - no consumer yet (not started)
        started = {}
    out: dict[tuple[str, int], int] = {}
    for tp, end in ends.items():
        if end is None:
            continue
        done = committed.get(tp, started.get(tp))
        if done is None:
            continue
        out[(tp.topic, tp.partition)] = max(int(end) - int(done), 0)
    return out


def install_faust_sensor(app: faust.App) -> None:
    """Make Faust's Prometheus sensor ``app``'s monitor (default registry)."""
    global _FAUST_METRICS
    if _FAUST_METRICS is None:
        _FAUST_METRICS = FaustMetrics.create(REGISTRY, FAUST_PREFIX)
        REGISTRY.register(ConsumerLag())
    app.monitor = PrometheusMonitor(metrics=_FAUST_METRICS)
    _LAG_APP[:] = [app]


def serve_pages(app: faust.App, ready: Callable[[], dict[str, Any]]) -> None:
    """``/metrics``, ``/health`` and ``/ready`` on ``app``'s web server.

    ``ready()`` returns the readiness report; its ``"ready"`` entry decides 200 or 503.
    """

    async def metrics(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type; the text format is ASCII.
        return web.bytes(generate_latest(), content_type="text/plain; version=0.0.4")

    async def health(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    async def ready_page(web: Any, request: Any) -> Any:
        report = ready()
        return web.json(report, status=200 if report.get("ready") else 503)

    # Faust inspects a page function's signature: plain (web, request) functions.
    app.page("/metrics")(metrics)
    app.page("/health")(health)
    app.page("/ready")(ready_page)


def recovered(app: faust.App) -> bool:
    """Joined the group with partitions to work on, and every table recovered.

    Faust clears ``rebalancing`` only after the changelogs of the assigned partitions
    are read back (``Recovery.on_recovery_completed``).
    """
    return bool(app.assignor.assigned_actives()) and not app.rebalancing


def register_pages(
    app: faust.App, *, config_ready: Callable[[], bool], partitions: Callable[[], list[int]]
) -> None:
    """The worker's pages: :func:`serve_pages` with a readiness that also waits for roles
    and settings read up to their high-water marks at start, and names its partitions."""

    def ready() -> dict[str, Any]:
        caught_up = config_ready()
        return {
            "ready": recovered(app) and caught_up,
            "config_caught_up": caught_up,
            "conversation_partitions": partitions(),
        }

    serve_pages(app, ready)


__all__ = [
    "FAUST_PREFIX",
    "ConsumerLag",
    "consumer_lag",
    "install_faust_sensor",
    "recovered",
    "register_pages",
    "serve_pages",
]
