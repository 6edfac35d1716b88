"""``chat-notifier replay``: the core over recorded events, on event time, sending nothing.

Input and output are JSON Lines of ``{"topic": ..., "key": ..., "value": {...}}``
(DESIGN §9). Every value is validated against its topic's schema (the same codec the
workers use), so replay rejects exactly what a worker would dead-letter; bad lines are
reported with their line number and skipped. Output holds the ``notify.flushes`` and
``notify.decisions`` records in the order they were produced (``--deliveries`` adds the
``notify.<channel>`` records). A summary table goes to stderr at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from processors import codec
from processors.core.engine import Engine, Output
from processors.core.settings import CoreSettings, SettingsError
from processors.topics import CONVERSATIONS, DECISIONS, FLUSHES, INPUT_TOPICS, TOPICS, USERS

Record = tuple[str, str | None, dict[str, Any] | None]  # None: a tombstone
# Topics where a null value (with a key) deletes the record (DESIGN §11).
DELETABLE = (USERS, CONVERSATIONS)

SETTABLE = ("inactivity_seconds", "typing_ttl_seconds", "max_batch_seconds", "presence_ttl_seconds")
PROGRESS_MIN_BYTES = 1 << 20  # show progress for inputs of a megabyte and more
PROGRESS_EVERY_S = 0.5


class ReplayInputError(ValueError):
    """A line of the input that cannot be replayed; carries the line number."""

    def __init__(self, line_no: int, reason: str, where: str | None = None) -> None:
        super().__init__(f"{where or f'line {line_no}'}: {reason}")
        self.line_no = line_no
        self.reason = reason


def parse_line(line_no: int, line: str) -> Record:
    """One JSONL line to a validated (topic, key, value); raises ReplayInputError."""
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ReplayInputError(line_no, f"not JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(item, dict):
        raise ReplayInputError(line_no, "expected an object with topic, key and value")
    topic = item.get("topic")
    if topic not in INPUT_TOPICS:
        raise ReplayInputError(
            line_no, f"topic {topic!r} is not an input topic ({', '.join(INPUT_TOPICS)})"
        )
    value = item.get("value")
    key = item.get("key")
    if value is None and topic in DELETABLE and key is not None:
        return topic, str(key), None  # a tombstone: deletes the user or conversation
    if not isinstance(value, dict):
        raise ReplayInputError(line_no, "value must be a JSON object")
    record = TOPICS[topic].record
    assert record is not None
    try:
        decoded = codec.from_json_value(record, value)
    except codec.DecodeError as exc:
        raise ReplayInputError(line_no, str(exc)) from None
    return topic, None if key is None else str(key), decoded


class _Progress:
    """A one-line progress bar on stderr, by bytes read, for large inputs."""

    def __init__(self, total_bytes: int, stream: IO[str]) -> None:
        self.total = total_bytes
        self.stream = stream
        self.enabled = total_bytes >= PROGRESS_MIN_BYTES
        self.started = self.last = time.monotonic()

    def update(self, done_bytes: int, lines: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        self._draw(done_bytes, lines, now)

    def _draw(self, done_bytes: int, lines: int, now: float) -> None:
        share = min(1.0, done_bytes / self.total) if self.total else 1.0
        bar = "#" * int(share * 30)
        rate = lines / max(now - self.started, 1e-9)
        self.stream.write(f"\rreplay [{bar:<30}] {share:6.1%} {lines:,} lines {rate:,.0f}/s")
        self.stream.flush()

    def close(self, done_bytes: int, lines: int) -> None:
        if self.enabled:
            self._draw(done_bytes, lines, time.monotonic())
            self.stream.write("\n")


def read_jsonl(
    lines: Iterable[str], errors: list[ReplayInputError], progress: _Progress | None = None
) -> Iterator[Record]:
    """Parse JSONL, skipping blank lines; bad lines are appended to ``errors``."""
    done = 0
    line_no = 0
    for line_no, line in enumerate(lines, start=1):
        done += len(line)
        if progress is not None:
            progress.update(done, line_no)
        if not line.strip():
            continue
        try:
            yield parse_line(line_no, line)
        except ReplayInputError as exc:
            errors.append(exc)
    if progress is not None:
        progress.close(done, line_no)


# Replay allocates many short-lived records and keeps a large, cycle-free state; the
# default collector thresholds make it rescan that state constantly (measured: ~30%
# of replay time on the core benchmark). Reference counting frees everything the core
# makes, so collecting less often costs only a little memory.
GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def replay(
    records: Iterable[Record], overrides: dict[str, Any] | None = None, *, deliveries: bool = False
) -> Iterator[Output]:
    """Run the engine over ``records``; yields the output records in order."""
    return Engine(overrides, deliveries=deliveries).feed_all(records)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in SETTABLE:
            raise SettingsError(f"--set takes NAME=SECONDS with NAME one of {', '.join(SETTABLE)}")
        overrides[name] = value
    CoreSettings.from_app_settings(None, overrides)  # validate now, not mid-replay
    return overrides


def summarise(outputs: Counter[tuple[str, str, str]], flushes: int, errors: int) -> str:
    rows = [("flushes", "", str(flushes))]
    for (outcome, reason, channel), n in sorted(outputs.items()):
        rows.append((f"decisions {outcome}", f"{reason} {channel}".strip(), str(n)))
    rows.append(("bad input lines", "", str(errors)))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{a:<{width[0]}}  {b:<{width[1]}}  {c:>{width[2]}}" for a, b, c in rows)


def parse_position(text: str | None) -> int | datetime | None:
    """``--start``/``--end``: an offset (digits) or an ISO-8601 time with a zone."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SettingsError(f"not an offset or ISO-8601 time: {text!r}") from None
    if when.tzinfo is None:
        raise SettingsError(f"time {text!r} needs a zone, e.g. {text}Z")
    return when


def read_kafka(args: argparse.Namespace, errors: list[ReplayInputError]) -> Iterator[Record]:
    """Input records straight from the broker's topics (``--from-kafka``)."""
    from processors.live.kafka_replay import read_topics  # aiokafka: only here
    from processors.settings import load_settings

    settings = load_settings()
    if not settings.kafka_broker_url:
        raise SettingsError("--from-kafka needs KAFKA_BROKER_URL (e.g. kafka://broker:9092)")
    names = [n.strip() for n in args.topics.split(",") if n.strip()]
    bad = [n for n in names if n not in INPUT_TOPICS]
    if bad:
        raise SettingsError(f"not input topics: {', '.join(bad)} ({', '.join(INPUT_TOPICS)})")
    start, end = parse_position(args.start), parse_position(args.end)
    progress = _Progress(0, sys.stderr)
    progress.enabled = True

    def on_error(topic: str, partition: int, offset: int, reason: str) -> None:
        errors.append(ReplayInputError(offset, reason, f"{topic}[{partition}] offset {offset}"))

    def on_progress(done: int, total: int) -> None:
        progress.total = total
        progress.update(done, done)

    yield from read_topics(settings, names, start, end, on_error=on_error, progress=on_progress)
    progress.close(progress.total, progress.total)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", type=Path, help="JSON Lines of input records ('-' for stdin)")
    parser.add_argument(
        "--from-kafka",
        action="store_true",
        help="read the input topics from KAFKA_BROKER_URL instead of --input",
    )
    parser.add_argument(
        "--topics", default=",".join(INPUT_TOPICS), help="with --from-kafka: comma-separated topics"
    )
    parser.add_argument("--start", help="with --from-kafka: offset or ISO-8601 time (inclusive)")
    parser.add_argument("--end", help="with --from-kafka: offset or ISO-8601 time (exclusive)")
    parser.add_argument(
        "--output", type=Path, required=True, help="JSON Lines to write ('-' for stdout)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=SECONDS",
        help=f"override an AppSettings period ({', '.join(SETTABLE)})",
    )
    parser.add_argument(
        "--deliveries", action="store_true", help="also write the notify.<channel> Delivery records"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 if any input line was bad (default: report and skip)",
    )


def run(args: argparse.Namespace) -> int:
    if (args.input is None) == (not args.from_kafka):
        print("replay: give exactly one of --input FILE and --from-kafka", file=sys.stderr)
        return 2
    try:
        overrides = parse_overrides(args.set)
    except SettingsError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    tune_gc()
    errors: list[ReplayInputError] = []
    if args.input is not None and str(args.input) != "-" and not args.input.exists():
        print(f"replay: no such input file: {args.input}", file=sys.stderr)
        return 2
    counts: Counter[tuple[str, str, str]] = Counter()
    flushes = 0
    with contextlib.ExitStack() as stack:
        if args.from_kafka:
            try:
                parse_position(args.start), parse_position(args.end)
            except SettingsError as exc:
                print(f"replay: {exc}", file=sys.stderr)
                return 2
            records = read_kafka(args, errors)
        elif str(args.input) == "-":
            records = read_jsonl(sys.stdin, errors)
        else:
            handle = stack.enter_context(args.input.open(encoding="utf-8"))
            progress = _Progress(args.input.stat().st_size, sys.stderr)
            records = read_jsonl(handle, errors, progress)
        out = sys.stdout
        if str(args.output) != "-":
            args.output.parent.mkdir(parents=True, exist_ok=True)
            out = stack.enter_context(args.output.open("w", encoding="utf-8"))
        try:
            for topic, key, value in replay(records, overrides, deliveries=args.deliveries):
                if topic == FLUSHES:
                    flushes += 1
                elif topic == DECISIONS:
                    counts[(value["outcome"], value["reason"] or "", value["channel"] or "")] += 1
                elif not args.deliveries:
                    continue
                out.write(
                    json.dumps({"topic": topic, "key": key, "value": value}, ensure_ascii=False)
                )
                out.write("\n")
        except SettingsError as exc:
            print(f"replay: {exc}", file=sys.stderr)
            return 2
    for error in errors:
        print(f"replay: skipped {error}", file=sys.stderr)
    print(summarise(counts, flushes, len(errors)), file=sys.stderr)
    return 1 if errors and args.strict else 0
