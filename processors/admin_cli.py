"""``chat-notifier roles`` and ``chat-notifier settings``: the dashboard's settings from
the command line (rules in :mod:`processors.admin`).

Tables for people (rich), ``--json`` for scripts. Errors are one line on stderr with a
non-zero exit: 2 refused (unknown setting or channel, a bound), 3 no broker, 4 no such
role, 5 written but not in force.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from processors import admin
from processors import topics as t

T = TypeVar("T")

EXIT_HELP = (
    "exit codes: 0 done, 2 refused (unknown name, bad value), 3 no broker "
    "(set KAFKA_BROKER_URL), 4 no such role, 5 written but not in force"
)


@dataclass(frozen=True)
class Command:
    """What :mod:`processors.cli` needs of a subcommand."""

    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def quiet_libraries() -> None:
    """The reader's and aiokafka's log lines are for services; a command prints one
    line of its own (refused config records are counted in the output instead)."""
    logging.getLogger("processors.live.config").setLevel(logging.ERROR)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    async def go() -> T:
        return await make()

    return asyncio.run(go())


def when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False, default=str))


def fail(error: admin.AdminError) -> int:
    print(f"error: {error}", file=sys.stderr)
    return error.exit_code


def load() -> Any:
    from processors.settings import load_settings

    return load_settings()


# -- roles -----------------------------------------------------------------------------


def _roles_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "A new role has every channel off except those named; `set` on an existing role "
        "changes only the channels named. " + EXIT_HELP
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("list", help="every role in force")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    p = sub.add_parser("show", help="one role")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    p = sub.add_parser("set", help="create a role or change its channels")
    p.add_argument("name")
    for channel in t.CHANNELS:
        p.add_argument(f"--{channel}", metavar="on|off", help=f"{channel} on or off")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    _confluent_argument(p)
    p = sub.add_parser("delete", help="delete a role (a tombstone on chat.roles)")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    _confluent_argument(p)


def _confluent_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--confluent",
        action="store_true",
        help="write the Confluent wire format, the schema registered under <topic>-value "
        "with SCHEMA_REGISTRY_URL (default: Avro single-object)",
    )


def _role_json(role: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": role["name"], **{c: bool(role[c]) for c in t.CHANNELS}, "ts": role["ts"]}


def _roles_table(roles: Sequence[Mapping[str, Any]], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("role")
    for channel in t.CHANNELS:
        table.add_column(channel, justify="center")
    table.add_column("updated (UTC)")
    for role in roles:
        marks = ["on" if role[c] else "[dim]off[/dim]" for c in t.CHANNELS]
        table.add_row(role["name"], *marks, when(role["ts"]))
    return table


def _roles_run(args: argparse.Namespace) -> int:
    quiet_libraries()
    settings = load()
    try:
        if args.action == "list":
            reader = run_async(lambda: admin.read_config(settings))
            roles = [reader.state.roles[n] for n in sorted(reader.state.roles)]
            if args.json:
                print_json({"roles": [_role_json(r) for r in roles], "refused": reader.refused})
            else:
                out = console()
                out.print(_roles_table(roles, f"roles on {t.ROLES} ({len(roles)})"))
                if reader.refused:
                    out.print(f"{reader.refused} record(s) refused (see notify.dead-letter)")
            return 0
        if args.action == "show":
            reader = run_async(lambda: admin.read_config(settings))
            role = reader.state.roles.get(args.name)
            if role is None:
                raise admin.AdminError(
                    admin.role_hint(args.name, reader.state.roles), admin.EXIT_NOT_FOUND
                )
            if args.json:
                print_json({"role": _role_json(role)})
            else:
                console().print(_roles_table([role], f"role {args.name!r}"))
            return 0
        if args.action == "set":
            changes = {
                c: admin.parse_switch(getattr(args, c))
                for c in t.CHANNELS
                if getattr(args, c) is not None
            }
            change = run_async(
                lambda: admin.set_role(settings, args.name, changes, confluent=args.confluent)
            )
            if args.json:
                previous = None if change.previous is None else _role_json(change.previous)
                print_json({"role": _role_json(change.role), "previous": previous})
                return 0
            out = console()
            if change.previous is None:
                named = ", ".join(f"{c} {'on' if v else 'off'}" for c, v in changes.items())
                out.print(
                    f"role {args.name!r} created ({named or 'no channel named'}; "
                    "channels not named are off)"
                )
            else:
                diffs = [
                    f"{c} {'on' if change.previous[c] else 'off'} -> "
                    f"{'on' if change.role[c] else 'off'}"
                    for c in t.CHANNELS
                    if bool(change.previous[c]) != bool(change.role[c])
                ]
                out.print(f"role {args.name!r}: {', '.join(diffs) or 'no change'}")
            out.print(_roles_table([change.role], f"role {args.name!r} now in force"))
            return 0
        deleted = run_async(
            lambda: admin.delete_role(settings, args.name, confluent=args.confluent)
        )
        if args.json:
            print_json({"deleted": _role_json(deleted)})
        else:
            console().print(
                f"role {args.name!r} deleted (tombstone on {t.ROLES}); users holding it "
                "are now skipped with UNKNOWN_ROLE"
            )
        return 0
    except admin.AdminError as exc:
        return fail(exc)


roles_command = Command(_roles_arguments, _roles_run)


# -- settings ----------------------------------------------------------------------------


def _settings_arguments(parser: argparse.ArgumentParser) -> None:
    from processors.core.settings import MAX_SECONDS

    bounds = ", ".join(f"{k} 1..{v}" for k, v in MAX_SECONDS.items())
    parser.epilog = (
        f"Periods are whole seconds: {bounds}; max_batch_seconds >= inactivity_seconds. "
        "`set` keeps every field not named. " + EXIT_HELP
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("show", help="the settings in force")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    p = sub.add_parser("set", help="change settings: NAME=VALUE ...")
    p.add_argument("pairs", nargs="+", metavar="NAME=VALUE")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    _confluent_argument(p)


def _settings_table(values: Mapping[str, Any], previous: Mapping[str, Any] | None) -> Any:
    from rich.table import Table

    table = Table(title=f"settings on {t.SETTINGS}")
    table.add_column("setting")
    table.add_column("value", overflow="fold")
    if previous is not None:
        table.add_column("was")
    for name, value in values.items():
        row = [name, "" if value is None else str(value)]
        if previous is not None:
            old = previous.get(name)
            row.append("" if old == value else ("" if old is None else str(old)))
        table.add_row(*row)
    return table


def _settings_run(args: argparse.Namespace) -> int:
    quiet_libraries()
    settings = load()
    try:
        if args.action == "show":
            reader = run_async(lambda: admin.read_config(settings))
            state = reader.state
            values = admin.current_settings(state)
            ts = (state.app_settings or {}).get("ts")
            source = t.SETTINGS if state.app_settings is not None else "defaults"
            if args.json:
                print_json(
                    {"source": source, "ts": ts, "settings": values, "refused": reader.refused}
                )
                return 0
            out = console()
            out.print(_settings_table(values, None))
            if state.app_settings is None:
                out.print(
                    "no record on chat.settings: schema defaults (a worker's --set values "
                    "apply in that worker)"
                )
            else:
                out.print(f"record of {when(ts)}")
            if reader.refused:
                out.print(f"{reader.refused} record(s) refused (see notify.dead-letter)")
            return 0
        changes = admin.parse_assignments(args.pairs)
        change = run_async(lambda: admin.set_settings(settings, changes, confluent=args.confluent))
        if args.json:
            changed = {
                k: [change.previous[k], change.settings[k]]
                for k in change.settings
                if change.previous.get(k) != change.settings[k]
            }
            print_json({"settings": change.settings, "ts": change.ts, "changed": changed})
            return 0
        console().print(_settings_table(change.settings, change.previous))
        return 0
    except admin.AdminError as exc:
        return fail(exc)


settings_command = Command(_settings_arguments, _settings_run)
