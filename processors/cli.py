"""The ``chat-notifier`` command line.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int`` (or in an object of a module, named ``module:attribute``); the module is imported only when its subcommand runs, so
``chat-notifier replay`` never pays for importing Faust or the channel libraries.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "replay": ("processors.replay", "run the core over recorded events, sending nothing"),
    "whatif": (
        "processors.whatif",
        "compare recorded traffic under the recorded and a candidate configuration",
    ),
    "explain": ("processors.explain", "why did (or didn't) a user get a notification"),
    "worker": ("processors.live.worker", "run the conversation and decision agents"),
    "senders": ("processors.senders.worker", "run channel sender agents"),
    "demo": ("processors.live.demo", "publish demo chat traffic"),
    "reply": ("processors.reply.agent", "run the reply agent (email.inbound -> chat.messages)"),
    "inbound-smtp": ("processors.reply.inbound", "SMTP listener for replies (-> email.inbound)"),
    "inbound-http": (
        "processors.reply.inbound",
        "HTTP endpoint for raw reply mail (-> email.inbound)",
    ),
    "inbound-ses": ("processors.reply.inbound", "SES receipt notices from SQS (-> email.inbound)"),
    "run": ("processors.live.embedded", "embedded default: broker, worker, senders, demo"),
    "roles": ("processors.admin_cli:roles_command", "list, show, set or delete roles"),
    "settings": ("processors.admin_cli:settings_command", "show or change the app settings"),
    "diagnose": ("processors.diagnose", "the troubleshooting checklist for one user, now"),
    "dashboard": (
        "processors.dashboard.server",
        "the admin web app: roles, settings, users, activity, overview",
    ),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat-notifier", description="Kafka-native notifications for chat products."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = argv[0] if argv else None
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == wanted:
            path, _, attribute = module_name.partition(":")
            module = importlib.import_module(path)
            command = getattr(module, attribute) if attribute else module
            command.add_arguments(p)
            p.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    run = getattr(args, "_run", None)
    if run is None:  # pragma: no cover - argparse already rejected it
        parser.error(f"unknown command {args.command!r}")
    try:
        return int(run(args))
    except Exception as exc:
        # a bad environment variable is one line, not a traceback. processors.settings
        # (pydantic) is not imported here: replay of a file never loads it, and a
        # SettingsError can only come from it once something has imported it
        settings = sys.modules.get("processors.settings")
        if settings is None or not isinstance(exc, settings.SettingsError):
            raise
        print(f"chat-notifier {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
