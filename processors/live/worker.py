"""``chat-notifier worker``: the conversation and decision agents (contract §10).

Configuration comes from the environment (``KAFKA_BROKER_URL``, ``TOPIC_PREFIX``,
``CONVERSATION_PARTITIONS``, ``USER_PARTITIONS``, ``STORE``, ``DATA_DIR``,
``WEB_PORT``, ``WEB_PORT_BASE``); the flags below override it. Topics (and the tables' changelogs) are
created with their configs on start. Scale out by starting more workers with the same
``--app-id``: partitions and their state move between them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from typing import Any

import faust

from processors.app import create_app, default_web_port, web_port_in_use
from processors.core.settings import SETTABLE, SettingsError, parse_set
from processors.live.agents import Pipeline, attach_pipeline, changelog_topics
from processors.live.broker import (
    PartitionLayoutError,
    ensure_topics_sync,
    fit_partition_counts_sync,
)
from processors.settings import Settings, load_settings

DEFAULT_APP_ID = "chat-notifier"


def parse_sets(pairs: list[str] | None) -> dict[str, str]:
    """``["inactivity_seconds=5", ...]`` -> ``{"inactivity_seconds": "5"}``."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"--set wants NAME=VALUE, got {pair!r}")
        out[name.strip()] = value.strip()
    return out


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app-id", default=DEFAULT_APP_ID, help="consumer group / app id")
    parser.add_argument("--store", help="table store, e.g. rocksdb:// or memory://")
    parser.add_argument("--data-dir", help="directory for the local table store")
    parser.add_argument(
        "--web-port",
        type=int,
        help="metrics/health HTTP port (default: worker 6066, senders 6067, "
        "senders --channel email/sms/push/browser 6068-6071; WEB_PORT_BASE moves them all)",
    )
    parser.add_argument("--without-web", action="store_true", help="no HTTP server")
    parser.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help=(
            "starting value of an AppSettings period until a chat.settings record "
            f"replaces it ({', '.join(SETTABLE)}), e.g. inactivity_seconds=5"
        ),
    )
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING ...")
    parser.add_argument(
        "--faust",
        action="append",
        metavar="NAME=VALUE",
        help="extra Faust setting (numbers parsed), e.g. broker_session_timeout=6",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)


def settings_from_args(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides: dict[str, Any] = dict(extra)
    if getattr(args, "store", None):
        overrides["store"] = args.store
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    if getattr(args, "web_port", None):
        overrides["web_port"] = args.web_port
    if getattr(args, "log_level", None):
        overrides["log_level"] = args.log_level
    return load_settings(**overrides)


def faust_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in parse_sets(getattr(args, "faust", None)).items():
        value: Any = raw
        for conv in (int, float):
            try:
                value = conv(raw)
                break
            except ValueError:
                continue
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        out[name] = value
    if getattr(args, "without_web", False):
        out["web_enabled"] = False
    return out


def build_worker_app(
    settings: Settings,
    *,
    app_id: str = DEFAULT_APP_ID,
    core_overrides: Mapping[str, Any] | None = None,
    **faust_settings: Any,
) -> tuple[faust.App, Pipeline]:
    """The worker's Faust app with the pipeline attached (topics not yet created)."""
    app = create_app(settings, app_id=app_id, **faust_settings)
    return app, attach_pipeline(app, core_overrides=core_overrides)


def run_app(app: faust.App, *, log_level: str = "INFO") -> None:
    """Run ``app`` in this process until SIGINT/SIGTERM; returns after a clean stop."""
    worker = faust.Worker(app, loglevel=log_level.lower(), quiet=True)
    # Faust's terminal spinner sets the root logger to DEBUG so that it spins on every
    # log record: aiokafka then builds a debug record per request (~8% of a worker's
    # time in the benchmark). No spinner, and loggers stay at the asked level.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


def run(args: argparse.Namespace) -> int:
    # --set values are the starting defaults; an AppSettings record on chat.settings
    # replaces them (logged), a tombstone there brings them back (contract §4).
    try:
        core_overrides = parse_set(args.set or ())
    except SettingsError as exc:
        print(f"chat-notifier worker: {exc}", file=sys.stderr)
        return 2
    settings = settings_from_args(args)
    if not settings.kafka_broker_url:
        print(
            "chat-notifier worker: KAFKA_BROKER_URL is not set "
            "(use `chat-notifier run` for the embedded broker)",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=settings.log_level.upper())
    try:
        settings = fit_partition_counts_sync(settings, changelog_topics(args.app_id))
    except PartitionLayoutError as exc:
        print(f"chat-notifier worker: {exc}", file=sys.stderr)
        return 2
    faust_settings = {"web_port": default_web_port(settings, "worker"), **faust_overrides(args)}
    app, _ = build_worker_app(
        settings,
        app_id=args.app_id,
        core_overrides=core_overrides,
        **faust_settings,
    )
    problem = web_port_in_use(app)
    if problem:
        print(f"chat-notifier worker: {problem}", file=sys.stderr)
        return 2
    ensure_topics_sync(settings, changelog_topics(args.app_id))
    run_app(app, log_level=settings.log_level)
    return 0
