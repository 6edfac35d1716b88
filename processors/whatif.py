"""``chat-notifier whatif``: the same recorded traffic under two configurations.

The input (``--input`` JSON Lines, or ``--from-kafka`` with ``--start``/``--end``) is read
and validated ONCE, exactly as ``replay`` reads it (same door, same bad-line reports);
each admitted record is fed to two engines in step: the *baseline* with the recorded
settings and roles, the *candidate* with ``--set`` periods overriding the recorded
settings (as in ``replay --set``) and ``--role NAME:CHANNEL=on|off`` toggles applied on
top of every recorded record of that role (:mod:`processors.core.whatif` has the rules
and what each number means). The comparison goes to stdout as a table (``--json``:
as JSON), with a one-line summary sentence; ``--chart out.png`` draws notifications per
hour, baseline vs candidate. Exit codes are replay's (``whatif --help``).

With two cores and an input file, the candidate runs in a second process that reads the
file itself through the same door (``--processes 1`` keeps both in one); the comparison
is the same, and bad lines are reported once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from processors import replay_split
from processors.core.engine import Engine
from processors.core.settings import SETTABLE, CoreSettings, SettingsError, parse_set
from processors.core.whatif import (
    Tally,
    WhatIfError,
    compare,
    describe,
    override_role,
    parse_role_overrides,
    render_text,
    rows,
    settings_values,
    unknown_role_error,
)
from processors.replay import (
    EXIT_BAD_LINES,
    EXIT_INPUT_BINARY,
    EXIT_INPUT_UNREADABLE,
    EXIT_NO_INPUT,
    EXIT_OK,
    EXIT_OUTPUT_IS_INPUT,
    EXIT_OUTPUT_UNWRITABLE,
    EXIT_USAGE,
    MAX_REPORTED_LINES,
    DoorCounts,
    Record,
    ReplayFileError,
    ReplayInputError,
    _same_file,
    _why,
    add_input_arguments,
    check_files,
    open_records,
    parse_position,
    tune_gc,
)
from processors.topics import FLUSHES, ROLES

PROG = "whatif"

EPILOG = f"""\
example:
  chat-notifier whatif --input processors/demo/scenario.jsonl \\
      --set inactivity_seconds=30 --role member:email=off --chart whatif.png

exit codes (as replay's):
  {EXIT_OK}  done (bad input lines, if any, were reported on stderr and skipped)
  {EXIT_BAD_LINES}  --strict and some input lines were bad
  {EXIT_USAGE}  bad arguments (--set, --role, a role not in the input, --start/--end,
     --from-kafka without KAFKA_BROKER_URL)
  {EXIT_NO_INPUT}  the input file does not exist
  {EXIT_INPUT_UNREADABLE}  the input is a directory or cannot be read
  {EXIT_INPUT_BINARY}  the input is a binary file, not JSON Lines
  {EXIT_OUTPUT_UNWRITABLE}  the --chart file cannot be created or written
  {EXIT_OUTPUT_IS_INPUT}  --chart is the input file
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Compare the recorded configuration with a candidate, on recorded traffic."
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_input_arguments(parser)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=SECONDS",
        help=f"candidate: override a period ({', '.join(SETTABLE)})",
    )
    parser.add_argument(
        "--role",
        action="append",
        default=[],
        metavar="NAME:CHANNEL=on|off,...",
        help="candidate: toggle a role's channels (email, sms, push, browser), e.g. member:sms=off",
    )
    parser.add_argument("--chart", type=Path, help="write a PNG of notifications per hour")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.add_argument(
        "--processes",
        type=int,
        choices=(1, 2),
        help="1: both runs in one process; 2: the candidate in a second process, for an "
        "input file (default: 2 on a machine with two cores or more)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 if any input line was bad (default: report and skip)",
    )


def _check_chart(chart: Path, input_path: Path | None) -> None:
    if input_path is not None and str(input_path) != "-" and _same_file(input_path, chart):
        raise ReplayFileError(
            f"--chart {chart} is the input file; it would be overwritten", EXIT_OUTPUT_IS_INPUT
        )
    if chart.is_dir():
        raise ReplayFileError(f"--chart {chart} is a directory", EXIT_OUTPUT_UNWRITABLE)


class Runs:
    """The two engines fed in step, and what they produced (the dashboard's settings page
    feeds it too, over the last hours of the input topics)."""

    def __init__(
        self, overrides: Mapping[str, Any], role_overrides: Mapping[str, Mapping[str, bool]]
    ) -> None:
        # Deliveries are not built: decisions are identical without them (Engine docs).
        self.baseline = Engine(None, deliveries=False)
        self.candidate = Engine(overrides, deliveries=False)
        self.role_overrides = role_overrides
        self.candidate_overrides = dict(overrides)
        self.base_tally = Tally()
        self.cand_tally = Tally()
        self.roles_seen: set[str] = set()
        # the overridden periods' values the baseline closed batches under, in seconds
        self.recorded: dict[str, set[float]] = {name: set() for name in overrides}

    def feed_all(self, records: Iterator[Record]) -> None:
        """Feed both engines in step, one record at a time."""
        base, cand = self._baseline_step, self._candidate_step
        for record in records:
            base(*record)
            cand(*record)
        self._finish_baseline()
        self._finish_candidate()

    def feed_baseline(self, records: Iterator[Record]) -> None:
        """Feed the baseline alone (the candidate runs in another process: :func:`run`)."""
        step = self._baseline_step
        for record in records:
            step(*record)
        self._finish_baseline()

    def feed_candidate(self, records: Iterator[Record]) -> Tally:
        """Feed the candidate alone; its tally."""
        step = self._candidate_step
        for record in records:
            step(*record)
        self._finish_candidate()
        return self.cand_tally

    def _baseline_step(self, topic: str, key: str | None, value: Mapping[str, Any] | None) -> None:
        base = self.baseline
        in_force = base.cfg  # flushes fired before a settings record closed under this
        out = base.feed(topic, key, value)
        if out:
            self.base_tally.add_all(out)
            if self.recorded and any(t == FLUSHES for t, _, _ in out):
                self._note(in_force)
        if topic == ROLES and isinstance(value, Mapping):  # not a tombstone
            self.roles_seen.add(value["name"])

    def _candidate_step(self, topic: str, key: str | None, value: Mapping[str, Any] | None) -> None:
        if topic == ROLES and isinstance(value, Mapping):  # not a tombstone
            value = override_role(value, self.role_overrides)
        self.cand_tally.add_all(self.candidate.feed(topic, key, value))

    def _finish_baseline(self) -> None:
        out = self.baseline.finish()
        self.base_tally.add_all(out)
        if self.recorded and (out or not any(self.recorded.values())):
            self._note(self.baseline.cfg)  # also when nothing closed: say what was in force

    def _finish_candidate(self) -> None:
        self.cand_tally.add_all(self.candidate.finish())

    def comparison(self, traffic: str = "this traffic") -> dict[str, Any]:
        """:func:`compare` of the two runs (after :meth:`feed_all`), with its sentence."""
        settings = {
            name: (sorted(self.recorded[name]), float(value))
            for name, value in self.candidate_overrides.items()
        }
        out = compare(
            self.base_tally, self.cand_tally, settings=settings, roles=self.role_overrides
        )
        out["sentence"] = describe(out, traffic=traffic)
        return out

    def _note(self, cfg: CoreSettings) -> None:
        values = settings_values(cfg)
        for name, seen in self.recorded.items():
            seen.add(values[name])


def _two_processes(args: argparse.Namespace) -> bool:
    """Run the candidate in a second process? With two cores, for an input file (each
    process reads it: stdin cannot be read twice, a Kafka range is read once)."""
    if args.from_kafka or str(args.input) == "-":
        return False
    return args.processes == 2 if args.processes else replay_split.available()


def _feed_in_two_processes(
    runs: Runs,
    args: argparse.Namespace,
    stack: contextlib.ExitStack,
    errors: list[ReplayInputError],
    door: DoorCounts,
) -> None:
    """The baseline here, the candidate in a second process; each reads the input file
    itself through the same door, so both see the same admitted records in the same
    order (the second process's bad-line reports and counts are the same, and dropped)."""

    def candidate() -> Tally:
        with contextlib.ExitStack() as own:
            return runs.feed_candidate(open_records(args, own, [], DoorCounts(), progress=False))

    wait = replay_split.in_second_process(candidate, prepare=tune_gc)
    runs.feed_baseline(open_records(args, stack, errors, door))
    runs.cand_tally = wait()


def _print_rich(comparison: Mapping[str, Any], sentence: str) -> bool:
    """The table with rich, when it is installed and stdout is a terminal."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return False
    table = Table(title="what if: baseline vs candidate")
    table.add_column("")
    for name in ("baseline", "candidate", "change"):
        table.add_column(name, justify="right")
    for row in rows(comparison):
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(sentence)
    return True


def run(args: argparse.Namespace) -> int:
    if (args.input is None) == (not args.from_kafka):
        print(f"{PROG}: give exactly one of --input FILE and --from-kafka", file=sys.stderr)
        return EXIT_USAGE
    try:
        overrides = parse_set(args.set)
        role_overrides = parse_role_overrides(args.role)
        if args.from_kafka:
            parse_position(args.start), parse_position(args.end)
        check_files(args.input, Path("-"))  # "-": no --output to check here
        if args.chart is not None:
            _check_chart(args.chart, args.input)
            from processors import whatif_chart  # matplotlib: only with --chart
    except (SettingsError, WhatIfError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ReplayFileError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.code
    except ImportError as exc:
        print(f"{PROG}: --chart needs matplotlib ({exc.name} is missing)", file=sys.stderr)
        return EXIT_USAGE
    tune_gc()
    errors: list[ReplayInputError] = []
    door = DoorCounts()
    runs = Runs(overrides, role_overrides)
    try:
        with contextlib.ExitStack() as stack:
            if _two_processes(args):
                _feed_in_two_processes(runs, args, stack, errors, door)
            else:
                runs.feed_all(open_records(args, stack, errors, door))
    except SettingsError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ReplayFileError, replay_split.SplitError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.code
    unknown = unknown_role_error(role_overrides, runs.roles_seen)
    if unknown is not None:
        print(f"{PROG}: {unknown}", file=sys.stderr)
        return EXIT_USAGE
    for error in errors[:MAX_REPORTED_LINES]:
        print(f"{PROG}: skipped {error}", file=sys.stderr)
    if len(errors) > MAX_REPORTED_LINES:
        print(
            f"{PROG}: skipped {len(errors) - MAX_REPORTED_LINES} more bad lines (not shown)",
            file=sys.stderr,
        )
    comparison = runs.comparison()
    sentence = comparison["sentence"]
    comparison["input"] = {
        "bad_lines": len(errors),
        "rekeyed": door.rekeyed,
        "bounded": door.bounded,
        "out_of_order": runs.baseline.late_events,
    }
    if args.chart is not None:
        try:
            whatif_chart.write_chart(comparison, args.chart)
        except OSError as exc:
            print(f"{PROG}: cannot write --chart {args.chart}: {_why(exc)}", file=sys.stderr)
            return EXIT_OUTPUT_UNWRITABLE
    if args.json:
        print(json.dumps(comparison, indent=2, ensure_ascii=False))
    elif not (sys.stdout.isatty() and _print_rich(comparison, sentence)):
        print(render_text(comparison))
        print()
        print(sentence)
    return EXIT_BAD_LINES if errors and args.strict else EXIT_OK
