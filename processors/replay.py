"""``chat-notifier replay``: the core over recorded events, on event time, sending nothing.

Input and output are JSON Lines of ``{"topic": ..., "key": ..., "value": {...}}``
(contract §9); an input line may also carry ``"timestamp"``, the Kafka record timestamp
in epoch ms. Every value is validated against its topic's schema (the same codec the
workers use) and then goes through the same door as in the worker
(:mod:`processors.core.admission`): ids with control characters, impossible event
times and snapshots under a foreign key are rejected; an event time more than
5 minutes ahead of the line's ``timestamp`` (or the Kafka record's, with
``--from-kafka``) is bounded to it; an event under a missing or wrong key is applied
under the id in its value (the worker would re-publish it under that key). Bad lines
are reported with their line number and reason and skipped. Output holds the
``notify.flushes`` and ``notify.decisions`` records in the order they were produced
(``--deliveries`` adds the ``notify.<channel>`` records). A summary table goes to
stderr at the end: flushes, decisions, records re-keyed, event times bounded, records
out of time order, bad input lines.

With two cores or more, the run takes two processes (:mod:`processors.replay_split`):
reading, checking and batching here, deciding and writing in the second one, fed in
input order; the output is the same bytes (``--processes 1`` keeps one).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Union

import msgspec
import orjson

from processors import codec, replay_split
from processors.core.admission import Admit, Reject, Rekey, admit
from processors.core.engine import Engine, Output
from processors.core.settings import (
    SETTABLE,
    SettingsError,
    parse_set,
    validate_app_settings,
)
from processors.topics import (
    CONVERSATIONS,
    DECISIONS,
    FLUSHES,
    INPUT_TOPICS,
    ROLES,
    SETTINGS,
    TOPICS,
    USERS,
)

Record = tuple[str, str | None, dict[str, Any] | None]  # None: a tombstone
# Topics where a null value (with a key) deletes the record (contract §11).
DELETABLE = (USERS, CONVERSATIONS, ROLES, SETTINGS)

PROGRESS_MIN_BYTES = 1 << 20  # show progress for inputs of a megabyte and more
PROGRESS_EVERY_S = 0.5


class ReplayInputError(ValueError):
    """A line of the input that cannot be replayed; carries the line number."""

    def __init__(self, line_no: int, reason: str, where: str | None = None) -> None:
        super().__init__(f"{where or f'line {line_no}'}: {reason}")
        self.line_no = line_no
        self.reason = reason


@dataclass(slots=True)
class DoorCounts:
    """What admission did to the records it let in (for the summary)."""

    rekeyed: int = 0
    bounded: int = 0


def admitted(
    topic: str,
    key: str | None,
    value: dict[str, Any],
    record_ts: int | None,
    counts: DoorCounts,
) -> Record:
    """The record as the core applies it, after admission; raises ValueError with the reason.

    Replay has no partitions: a record the worker would re-publish under the id in its
    value is applied under that id here, which is where it ends up live too.
    """
    verdict = admit(topic, key, value, record_ts, None)
    if type(verdict) is Rekey:
        counts.rekeyed += 1
        key = verdict.key
        verdict = admit(topic, key, value, record_ts, None)
    if type(verdict) is Reject:
        raise ValueError(verdict.reason)
    if not isinstance(verdict, Admit) or verdict.value is None:  # pragma: no cover
        raise ValueError(f"cannot admit the record under key {key!r}")
    if verdict.bounded_from is not None:
        counts.bounded += 1
    if topic == SETTINGS:
        # What a live worker dead-letters (a period out of bounds, a bad link template)
        # is a bad line here; the previous settings stay in force in both.
        validate_app_settings(verdict.value)
    return topic, key, verdict.value


_RECORDS: dict[str, str] = {topic: str(TOPICS[topic].record) for topic in INPUT_TOPICS}


def _line_types() -> tuple[Any, dict[type, tuple[str, Callable[[Any], dict[str, Any]]]]]:
    """One msgspec type for every input line: a union tagged by ``topic``, whose value is
    that topic's record type (:func:`codec.json_type`), so a line is read and its value
    validated in one pass; and, per line type, its topic and how its value becomes the
    plain record."""
    lines: dict[type, tuple[str, Callable[[Any], dict[str, Any]]]] = {}
    for topic, record in _RECORDS.items():
        value_type, to_dict = codec.json_type(record)
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
            ("value", value_type),
            ("key", str | None, None),
            ("timestamp", int | None, None),
        ]
        line = msgspec.defstruct(f"Line{record}", fields, tag_field="topic", tag=topic)
        lines[line] = (topic, to_dict)
    return Union[tuple(lines)], lines  # noqa: UP007 - a runtime union of generated types


_LINE_TYPE, _LINES = _line_types()
_read_line = msgspec.json.Decoder(_LINE_TYPE).decode


def parse_line(line_no: int, line: str | bytes, counts: DoorCounts | None = None) -> Record:
    """One JSONL line to a validated, admitted (topic, key, value); raises ReplayInputError.

    The fast path reads the line and validates its value in one msgspec pass. A line it
    does not take as it is (bad JSON, a wrong type anywhere, a tombstone) is read again
    by :func:`_parse_line`, whose reasons are the ones reported: bad lines cost twice,
    good ones once.
    """
    try:
        item = _read_line(line)
    except Exception:  # noqa: BLE001 - whatever it is, _parse_line says precisely
        return _parse_line(line_no, line, counts)
    topic, to_dict = _LINES[type(item)]
    try:
        return admitted(
            topic, item.key, to_dict(item.value), item.timestamp, counts or DoorCounts()
        )
    except ValueError as exc:
        raise ReplayInputError(line_no, str(exc)) from None


def _parse_line(line_no: int, line: str | bytes, counts: DoorCounts | None = None) -> Record:
    """:func:`parse_line` one step at a time, each with its own reason."""
    try:
        item = _loads(line)
    except ValueError:
        raise ReplayInputError(line_no, why_not_json(line)) from None
    if type(item) is not dict:
        raise ReplayInputError(line_no, "expected an object with topic, key and value")
    topic: Any = item.get("topic")
    record = _RECORDS.get(topic) if type(topic) is str else None
    if record is None:
        raise ReplayInputError(
            line_no, f"topic {topic!r} is not an input topic ({', '.join(INPUT_TOPICS)})"
        )
    value = item.get("value")
    key = item.get("key")
    if value is None and topic in DELETABLE and key is not None:
        return topic, str(key), None  # a tombstone: deletes the user or conversation
    if type(value) is not dict:
        raise ReplayInputError(line_no, "value must be a JSON object")
    try:
        decoded = _from_json_value(record, value)
    except codec.DecodeError as exc:
        raise ReplayInputError(line_no, str(exc)) from None
    if key is not None and type(key) is not str:
        raise ReplayInputError(line_no, f"key must be a string or null, got {_kind(key)}")
    record_ts = item.get("timestamp")
    if record_ts is not None and type(record_ts) is not int:
        raise ReplayInputError(
            line_no, f"timestamp must be epoch milliseconds or null, got {_kind(record_ts)}"
        )
    try:
        return admitted(topic, key, decoded, record_ts, counts or DoorCounts())
    except ValueError as exc:
        raise ReplayInputError(line_no, str(exc)) from None


# The step-by-step path (a line the fast path refused): orjson parses (and checks UTF-8);
# a line it refuses too is parsed again by the stdlib, whose message ("Expecting ','
# delimiter at column 7") is the reason.
_loads = orjson.loads
_from_json_value = codec.from_json_value
MAX_JSON_DEPTH = 1024  # orjson's; the stdlib's parser stops sooner (RecursionError)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")  # the stdlib reads NaN, Infinity


def why_not_json(line: str | bytes) -> str:
    """The reason a line orjson refused is not JSON we read, in the stdlib's words."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"not UTF-8: byte 0x{line[exc.start]:02x} at column {exc.start + 1}"
    try:
        json.loads(line, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        return f"not JSON: {exc.msg} at column {exc.colno}"
    except ValueError as exc:  # e.g. a number too long to convert
        return f"not JSON: {exc}"
    except RecursionError:  # deeper than the stdlib's parser goes
        return f"not JSON: nested deeper than {MAX_JSON_DEPTH} levels (the most we read)"
    return "not JSON: a lone surrogate or a number out of range"


def _kind(value: Any) -> str:
    return "a number" if isinstance(value, int | float) else f"a JSON {type(value).__name__}"


class _Progress:
    """A one-line progress bar on stderr, by bytes read, for large inputs."""

    def __init__(self, total_bytes: int, stream: IO[str], label: str = "replay") -> None:
        self.label = label  # the command the bar is drawn for
        self.total = total_bytes
        self.stream = stream
        self.enabled = total_bytes >= PROGRESS_MIN_BYTES
        self.started = self.last = time.monotonic()
        self.open_line = False  # a bar is drawn on the current line of the stream

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
        self.stream.write(f"\r{self.label} [{bar:<30}] {share:6.1%} {lines:,} lines {rate:,.0f}/s")
        self.stream.flush()
        self.open_line = True

    def close(self, done_bytes: int, lines: int) -> None:
        if self.enabled:
            self._draw(done_bytes, lines, time.monotonic())
            self.end_line()

    def end_line(self) -> None:
        """End the bar's line, if one is drawn (a run that stops midway says why on
        a line of its own)."""
        if self.open_line:
            self.stream.write("\n")
            self.open_line = False


def read_jsonl(
    lines: Iterable[bytes | str],
    errors: list[ReplayInputError],
    progress: _Progress | None = None,
    counts: DoorCounts | None = None,
) -> Iterator[Record]:
    """Parse JSONL, skipping blank lines; bad lines are appended to ``errors``.

    Lines may be bytes (files and stdin are read as bytes, so that one line that is not
    UTF-8 is reported and skipped instead of ending the run) or already decoded text.

    :func:`parse_line`'s fast path is inlined here (this loop runs once per input line,
    and the call layers were a fifth of its cost): a line msgspec reads in one pass and
    admission lets in unchanged is yielded at once; anything else (a blank line, the
    BOM, bad JSON, a re-key, a bounded time, settings) takes :func:`_slow_line`.
    """
    counts = counts or DoorCounts()
    read, kinds, admit_, admit_type, settings = _read_line, _LINES, admit, Admit, SETTINGS
    done = 0
    line_no = 0
    for line_no, raw in enumerate(lines, start=1):
        done += len(raw)
        if progress is not None and not line_no & 0xFFF:
            progress.update(done, line_no)
        try:
            item = read(raw)
        except Exception:  # noqa: BLE001 - whatever it is, _slow_line says precisely
            item = None
        if item is not None:
            topic, to_dict = kinds[type(item)]
            key = item.key
            verdict = admit_(topic, key, to_dict(item.value), item.timestamp, None)
            if type(verdict) is admit_type and verdict.bounded_from is None and topic != settings:
                yield topic, key, verdict.value
                continue
        try:
            record = _slow_line(line_no, raw, counts)
        except ReplayInputError as exc:
            errors.append(exc)
            continue
        if record is not None:
            yield record
    if progress is not None:
        progress.close(done, line_no)


def _slow_line(line_no: int, raw: bytes | str, counts: DoorCounts) -> Record | None:
    """A line the fast path of :func:`read_jsonl` did not take: None for a blank line."""
    if line_no == 1:
        raw = raw.removeprefix(b"\xef\xbb\xbf" if isinstance(raw, bytes) else "\ufeff")  # type: ignore[arg-type]
    if not raw or raw.isspace():  # blank (strip() would copy every line)
        return None
    return parse_line(line_no, raw, counts)


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


def summarise(
    outputs: Counter[tuple[str, str, str]],
    flushes: int,
    errors: int,
    counts: DoorCounts | None = None,
    out_of_order: int = 0,
) -> str:
    counts = counts or DoorCounts()
    rows = [("flushes", "", str(flushes))]
    for (outcome, reason, channel), n in sorted(outputs.items()):
        rows.append((f"decisions {outcome}", f"{reason} {channel}".strip(), str(n)))
    rows.append(("records re-keyed", "key missing or not the id", str(counts.rekeyed)))
    rows.append(("event times bounded", "over 5 min ahead", str(counts.bounded)))
    rows.append(("records out of time order", "", str(out_of_order)))
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


def read_kafka(
    args: argparse.Namespace, errors: list[ReplayInputError], counts: DoorCounts
) -> Iterator[Record]:
    """Input records straight from the broker's topics (``--from-kafka``), admitted."""
    from processors.live.kafka_replay import read_topic_records  # aiokafka: only here
    from processors.settings import load_settings

    settings = load_settings()
    if not settings.kafka_broker_url:
        raise SettingsError("--from-kafka needs KAFKA_BROKER_URL (e.g. kafka://broker:9092)")
    names = [n.strip() for n in args.topics.split(",") if n.strip()]
    bad = [n for n in names if n not in INPUT_TOPICS]
    if bad:
        raise SettingsError(f"not input topics: {', '.join(bad)} ({', '.join(INPUT_TOPICS)})")
    start, end = parse_position(args.start), parse_position(args.end)
    progress = _Progress(0, sys.stderr, getattr(args, "command", None) or "replay")
    progress.enabled = True

    def on_error(topic: str, partition: int, offset: int, reason: str) -> None:
        errors.append(ReplayInputError(offset, reason, f"{topic}[{partition}] offset {offset}"))

    def on_progress(done: int, total: int) -> None:
        progress.total = total
        progress.update(done, done)

    try:
        for record in read_topic_records(
            settings, names, start, end, on_error=on_error, progress=on_progress
        ):
            if record.value is None:  # a tombstone
                yield record.topic, record.key, None
                continue
            try:
                yield admitted(record.topic, record.key, record.value, record.timestamp, counts)
            except ValueError as exc:
                on_error(record.topic, record.partition, record.offset, str(exc))
        progress.close(progress.total, progress.total)
    finally:  # the broker went away midway: its error on a line of its own
        progress.end_line()


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """Where recorded events come from: a JSONL file (or stdin) or a Kafka range.

    Shared by ``replay`` and ``whatif``; :func:`open_records` reads what they name.
    """
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


def open_records(
    args: argparse.Namespace,
    stack: contextlib.ExitStack,
    errors: list[ReplayInputError],
    door: DoorCounts,
    *,
    progress: bool = True,
) -> Iterator[Record]:
    """The admitted input records :func:`add_input_arguments` names, in input order.

    Bad lines are appended to ``errors``; a file that cannot be opened raises
    :class:`ReplayFileError` with its exit code. The file stays open on ``stack``.
    ``progress=False``: no progress bar for a large file (a second reader of it).
    """
    if args.from_kafka:
        return read_kafka(args, errors, door)
    if str(args.input) == "-":
        return read_jsonl(sys.stdin.buffer, errors, None, door)
    try:
        handle = stack.enter_context(args.input.open("rb"))
    except OSError as exc:
        raise ReplayFileError(
            f"cannot read input {args.input}: {_why(exc)}", EXIT_INPUT_UNREADABLE
        ) from None
    label = getattr(args, "command", None) or "replay"
    bar = _Progress(args.input.stat().st_size, sys.stderr, label) if progress else None
    if bar is not None:
        stack.callback(bar.end_line)
    return read_jsonl(handle, errors, bar, door)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_input_arguments(parser)
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
        "--processes",
        type=int,
        choices=(1, 2),
        help="1: one process; 2: decide and write in a second process "
        "(default: 2 on a machine with two cores or more)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 if any input line was bad (default: report and skip)",
    )


# Exit codes (also in ``replay --help``): distinct, so scripts can tell them apart.
EXIT_OK = 0
EXIT_BAD_LINES = 1  # with --strict: some input lines were bad (they were skipped)
EXIT_USAGE = 2  # arguments, --set, --start/--end, --from-kafka without a broker URL
EXIT_NO_INPUT = 3  # the input file does not exist
EXIT_INPUT_UNREADABLE = 4  # the input is a directory, or cannot be read
EXIT_INPUT_BINARY = 5  # the input is not text (NUL bytes): not JSON Lines
EXIT_OUTPUT_UNWRITABLE = 6  # the output cannot be created or written
EXIT_OUTPUT_IS_INPUT = 7  # --output names the input file (it would be emptied)

EPILOG = f"""\
exit codes:
  {EXIT_OK}  done (bad input lines, if any, were reported on stderr and skipped)
  {EXIT_BAD_LINES}  --strict and some input lines were bad
  {EXIT_USAGE}  bad arguments (--set, --start/--end, --from-kafka without KAFKA_BROKER_URL)
  {EXIT_NO_INPUT}  the input file does not exist
  {EXIT_INPUT_UNREADABLE}  the input is a directory or cannot be read
  {EXIT_INPUT_BINARY}  the input is a binary file, not JSON Lines
  {EXIT_OUTPUT_UNWRITABLE}  the output cannot be created or written
  {EXIT_OUTPUT_IS_INPUT}  --output is the input file (also through a symlink or another path)
"""

BINARY_SNIFF_BYTES = 8192  # a NUL byte in the first 8 KiB: not a text file
MAX_REPORTED_LINES = 100  # bad lines printed one by one; the rest are counted


class ReplayFileError(Exception):
    """A file replay cannot use: one line on stderr and its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():  # symlinks, "./", ".."
            return True
        return a.exists() and b.exists() and a.samefile(b)  # hard links, bind mounts
    except OSError:
        return False


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def check_files(input_path: Path | None, output: Path) -> None:
    """Refuse unusable files before anything is opened; raises ReplayFileError."""
    if input_path is not None and str(input_path) != "-":
        if str(output) != "-" and _same_file(input_path, output):
            raise ReplayFileError(
                f"--output {output} is the input file; it would be emptied before it is read",
                EXIT_OUTPUT_IS_INPUT,
            )
        if not input_path.exists():
            raise ReplayFileError(f"no such input file: {input_path}", EXIT_NO_INPUT)
        if input_path.is_dir():
            raise ReplayFileError(
                f"input {input_path} is a directory, not a JSON Lines file", EXIT_INPUT_UNREADABLE
            )
        try:
            with input_path.open("rb") as handle:
                head = handle.read(BINARY_SNIFF_BYTES)
        except OSError as exc:
            raise ReplayFileError(
                f"cannot read input {input_path}: {_why(exc)}", EXIT_INPUT_UNREADABLE
            ) from None
        if b"\0" in head:
            raise ReplayFileError(
                f"input {input_path} is a binary file (NUL bytes), not UTF-8 JSON Lines",
                EXIT_INPUT_BINARY,
            )
    if str(output) != "-" and output.is_dir():
        raise ReplayFileError(f"--output {output} is a directory", EXIT_OUTPUT_UNWRITABLE)


def open_output(output: Path, stack: contextlib.ExitStack) -> IO[bytes]:
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        return stack.enter_context(output.open("wb"))
    except OSError as exc:
        raise ReplayFileError(
            f"cannot write --output {output}: {_why(exc)}", EXIT_OUTPUT_UNWRITABLE
        ) from None


WRITE_BATCH = 1024
_OUTPUT_RECORDS = {name: spec.record for name, spec in TOPICS.items() if spec.record}


def _write(out: IO[bytes], batch: list[bytes], output: Path) -> None:
    try:
        out.write(b"".join(batch))
    except OSError as exc:
        raise ReplayFileError(
            f"cannot write --output {output}: {_why(exc)}", EXIT_OUTPUT_UNWRITABLE
        ) from None
    batch.clear()


class OutputWriter:
    """Replay's output: the records written as JSON Lines, one write per ~1000 lines
    (each line already UTF-8 bytes, :func:`codec.json_line`), and counted for the
    summary. In two-process runs it lives in the deciding process."""

    def __init__(self, out: IO[bytes], output: Path, deliveries: bool) -> None:
        self.out = out
        self.output = output
        self.deliveries = deliveries
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.flushes = 0
        self.batch: list[bytes] = []
        self.lines = {  # the engine builds its records in schema order
            topic: codec.line_writer(record, topic, ordered=True)
            for topic, record in _OUTPUT_RECORDS.items()
        }

    def add(self, outputs: Iterable[Output | bytes]) -> None:
        """Write ``outputs``; a ``bytes`` one is a Flush's line, already made (by the
        batching process, in two-process runs)."""
        batch, counts, lines = self.batch, self.counts, self.lines
        for output in outputs:
            if isinstance(output, bytes):
                self.flushes += 1
                batch.append(output)
                continue
            topic, key, value = output
            if topic == DECISIONS:
                counts[(value["outcome"], value["reason"] or "", value["channel"] or "")] += 1
            elif topic == FLUSHES:
                self.flushes += 1
            elif not self.deliveries:
                continue
            batch.append(lines[topic](key, value))
            if len(batch) >= WRITE_BATCH:
                _write(self.out, batch, self.output)

    def finish(self) -> dict[str, Any]:
        """Write what is left; the counts for the summary."""
        _write(self.out, self.batch, self.output)
        try:
            self.out.flush()
        except OSError as exc:
            raise ReplayFileError(
                f"cannot write --output {self.output}: {_why(exc)}", EXIT_OUTPUT_UNWRITABLE
            ) from None
        return {"counts": self.counts, "flushes": self.flushes}


def run(args: argparse.Namespace) -> int:
    if (args.input is None) == (not args.from_kafka):
        print("replay: give exactly one of --input FILE and --from-kafka", file=sys.stderr)
        return EXIT_USAGE
    try:
        overrides = parse_set(args.set)
        if args.from_kafka:
            parse_position(args.start), parse_position(args.end)
        check_files(args.input, args.output)
    except SettingsError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ReplayFileError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return exc.code
    tune_gc()
    errors: list[ReplayInputError] = []
    door = DoorCounts()
    two = args.processes == 2 if args.processes else replay_split.available()
    try:
        with contextlib.ExitStack() as stack:
            records = open_records(args, stack, errors, door)
            out = sys.stdout.buffer if str(args.output) == "-" else open_output(args.output, stack)

            def make_sink() -> OutputWriter:
                return OutputWriter(out, args.output, args.deliveries)

            if two:
                engine, result = replay_split.run_split(
                    records, overrides, args.deliveries, make_sink, tune_gc
                )
            else:
                engine = Engine(overrides, deliveries=args.deliveries)
                sink = make_sink()
                sink.add(engine.feed_all(records))
                result = sink.finish()
    except SettingsError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ReplayFileError, replay_split.SplitError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return exc.code
    for error in errors[:MAX_REPORTED_LINES]:
        print(f"replay: skipped {error}", file=sys.stderr)
    if len(errors) > MAX_REPORTED_LINES:
        print(
            f"replay: skipped {len(errors) - MAX_REPORTED_LINES} more bad lines (not shown)",
            file=sys.stderr,
        )
    summary = summarise(result["counts"], result["flushes"], len(errors), door, engine.late_events)
    print(summary, file=sys.stderr)
    return EXIT_BAD_LINES if errors and args.strict else EXIT_OK
