"""``chat-notifier diagnose --user U [--conversation C]``: the troubleshooting checklist
on the current data, before any batch has closed (the checklist is
:mod:`processors.diagnosis`; ``explain`` is its other entry point, after the fact).

What it reads from ``KAFKA_BROKER_URL``:

* roles and settings in force: the broadcast reader's rules (:func:`processors.admin.read_config`);
* ``chat.users`` whole (and ``chat.conversations`` whole with ``--conversation``), kept
  for the one key asked about; compacted topics, so "whole" is one record per key;
* ``chat.presence`` from one presence TTL ago (by record timestamp): the live sessions;
* ``notify.decisions`` and ``notify.outcomes`` of the last ``--since-hours`` (default 24):
  the recent decisions and delivery outcomes (bounces, invalid tokens) for the user.

Addresses are printed masked, never raw (also in ``--json``). Exit 0 whatever the
verdicts (the checklist ran); 2 bad arguments, 3 no broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from processors import admin, codec
from processors import topics as t
from processors.admin_cli import quiet_libraries
from processors.core.settings import CoreSettings
from processors.diagnosis import (
    WHY,
    checklist,
    latest_snapshot,
    live_presence,
    mask_known,
    mask_outcome_address,
    session_rows,
)

DEFAULT_SINCE_HOURS = 24.0
DEFAULT_LAST = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, help="the user_id to check")
    parser.add_argument(
        "--conversation", help="check for this conversation (participant, notify, viewing)"
    )
    parser.add_argument(
        "--since-hours",
        type=float,
        default=DEFAULT_SINCE_HOURS,
        help=f"recent decisions and outcomes from this many hours back ({DEFAULT_SINCE_HOURS:g})",
    )
    parser.add_argument(
        "--last", type=int, default=DEFAULT_LAST, help="show at most N recent decisions/outcomes"
    )
    parser.add_argument("--json", action="store_true", help="JSON for scripts")
    parser.epilog = "exit codes: 0 checklist printed, 2 bad arguments, 3 no broker"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _decoded(records: list[admin.RawRecord]) -> list[tuple[admin.RawRecord, dict[str, Any] | None]]:
    out = []
    for r in records:
        try:
            out.append((r, admin.decode(r)))
        except codec.DecodeError:
            continue  # the worker dead-letters it; not this user's state
    return out


async def gather(args: argparse.Namespace, settings: Any, now: int) -> dict[str, Any]:
    """Read everything the checklist needs and run it; the JSON-ready report."""
    reader = await admin.read_config(settings)
    roles = reader.state.roles
    cfg = CoreSettings.from_app_settings(reader.state.app_settings)
    users = _decoded(await admin.scan(settings, t.USERS))
    user = latest_snapshot(((r.key, v, r.timestamp) for r, v in users), t.USERS, args.user, now)
    conversation = None
    if args.conversation is not None:
        convs = _decoded(await admin.scan(settings, t.CONVERSATIONS))
        conversation = latest_snapshot(
            ((r.key, v, r.timestamp) for r, v in convs), t.CONVERSATIONS, args.conversation, now
        )
    presence_records = _decoded(
        await admin.scan(settings, t.PRESENCE, since_ms=now - cfg.presence_ttl_ms)
    )
    sessions = live_presence(
        args.user, ((v, r.timestamp) for r, v in presence_records if v is not None), now, cfg
    )
    # With no conversation: the status for one they are not viewing (offline or online).
    status = sessions.status(args.conversation or "\x00none", now, cfg)
    since = now - int(args.since_hours * 3_600_000)
    decisions = [
        v
        for _, v in _decoded(await admin.scan(settings, t.DECISIONS, since_ms=since))
        if v is not None
        and v.get("recipient_id") == args.user
        and (args.conversation is None or v.get("conversation_id") == args.conversation)
    ]
    outcomes = [
        v
        for _, v in _decoded(await admin.scan(settings, t.OUTCOMES, since_ms=since))
        if v is not None and v.get("recipient_id") == args.user
    ]
    decisions.sort(key=lambda d: int(d["ts"]))
    outcomes.sort(key=lambda o: int(o["ts"]))
    diagnosis = checklist(
        args.user,
        user,
        roles,
        status,
        now,
        conversation_id=args.conversation,
        conversation=conversation,
        outcomes=outcomes,
    )
    report = diagnosis.to_dict()
    report["checked_at"] = now
    report["sessions"] = session_rows(sessions, now, cfg)
    report["recent_decisions"] = [
        {
            "ts": d["ts"],
            "conversation_id": d["conversation_id"],
            "flush_id": d["flush_id"],
            "channel": d["channel"],
            "outcome": d["outcome"],
            "reason": d["reason"],
            "presence": d["presence"],
            "detail": d["detail"],
        }
        for d in decisions[-args.last :]
    ]
    report["recent_outcomes"] = [
        {
            "ts": o["ts"],
            "channel": o["channel"],
            "status": o["status"],
            "address": None
            if o.get("address") is None
            else mask_outcome_address(o["channel"], o["address"]),
            "attempts": o["attempts"],
            "detail": None if o.get("detail") is None else mask_known(o["detail"], user),
        }
        for o in outcomes[-args.last :]
    ]
    return report


def render(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console(highlight=False, soft_wrap=True)
    about = f"user {report['user_id']!r}"
    if report["conversation_id"]:
        about += f" in conversation {report['conversation_id']!r}"
    out.print(f"diagnosis of {about} at {_when(report['checked_at'])}")
    checks = Table(title="checklist")
    checks.add_column("")
    checks.add_column("check")
    checks.add_column("found", overflow="fold")
    for c in report["checks"]:
        checks.add_row("ok" if c["ok"] else "[bold]NO[/bold]", c["check"], c["text"])
    out.print(checks)
    if report["sessions"]:
        sessions = Table(title="presence sessions (latest state)")
        for name in ("session", "online", "live", "selected", "focused", "at (UTC)"):
            sessions.add_column(name)
        for s in report["sessions"]:
            sessions.add_row(
                s["session_id"],
                str(s["online"]),
                str(s["live"]),
                s["selected_conversation_id"] or "-",
                str(s["focused"]),
                _when(s["ts"]),
            )
        out.print(sessions)
    if report["recent_outcomes"]:
        outcomes = Table(title="recent delivery outcomes")
        for name in ("at (UTC)", "channel", "status", "address", "detail"):
            outcomes.add_column(name, overflow="fold")
        for o in report["recent_outcomes"]:
            outcomes.add_row(
                _when(o["ts"]), o["channel"], o["status"], o["address"] or "", o["detail"] or ""
            )
        out.print(outcomes)
    if report["recent_decisions"]:
        decisions = Table(title="recent decisions")
        for name in ("at (UTC)", "conversation", "channel", "outcome", "why"):
            decisions.add_column(name, overflow="fold")
        for d in report["recent_decisions"]:
            why = "" if d["outcome"] == "send" else f"[{d['reason']}] {WHY.get(d['reason'], '')}"
            decisions.add_row(
                _when(d["ts"]), d["conversation_id"], d["channel"] or "-", d["outcome"], why
            )
        out.print(decisions)
    else:
        out.print("no decisions for them in the window (no batch has closed for them yet)")
    out.print("verdict:")
    for v in report["verdicts"]:
        out.print(f"  {v['text']}")
        for warning in v["warnings"]:
            out.print(f"    warning: {warning}")


def run(args: argparse.Namespace) -> int:
    from processors.settings import load_settings

    quiet_libraries()
    if args.since_hours <= 0 or args.last <= 0:
        print("error: --since-hours and --last must be more than 0", file=sys.stderr)
        return admin.EXIT_INVALID
    settings = load_settings()
    now = admin.now_ms()
    try:
        report = asyncio.run(gather(args, settings, now))
    except admin.AdminError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        render(report)
    return 0
