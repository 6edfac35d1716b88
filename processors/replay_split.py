"""``replay`` on two cores: batching in this process, deciding and writing in a second one.

The engine's two halves only talk in one direction, in input order (see
:class:`~processors.core.engine.Decider`): the batching half reads and admits the
input, keeps the batches and the clock, and hands the deciding half every presence
event and snapshot, and every Flush when it closes; the deciding half applies them in
that order, decides each Flush and writes the output. Run in two processes joined by
a pipe, the deciding half sees exactly the sequence it sees in one process, so the
output is the same, byte for byte, and as deterministic. Messages and typing events,
most of the input, never cross the pipe.

Measured on ``bench.replay``'s input (300k events, two cores), in CPU seconds of each
process, the core compiled (an installed wheel): the batching half (read, validate, admit,
batch, format the Flushes) ~1.4, the deciding half (read the Flushes back, decide, format,
write) ~1.3, the run ~1.65 s of wall time; it takes ~0.5 of the one-process time.

Only with the ``fork`` start method (the second process inherits the opened output and
the imported modules; nothing is re-imported) and at least two usable cores; otherwise
:func:`replay` in :mod:`processors.replay` runs both halves in this process.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Mapping
from multiprocessing.connection import Connection
from typing import Any, Protocol, TypedDict, TypeVar, cast

import msgspec

from processors import codec
from processors.core.engine import Decider, Engine, Output
from processors.topics import FLUSHES, SETTINGS

# Records per message over the pipe: large enough that encoding is a small share of the
# cost, small enough that a message or two fit in the socket's buffer (~200 KiB), so the
# batching process writes one while the deciding process is still busy with the last
# instead of each waiting for the other (measured on bench.replay's input, best of 9:
# 512 takes 0.83 of the wall time and 0.86 of the CPU time of 4096, whose messages of
# ~1 MB each process waited for at every message; 1024: 0.90). MessagePack (msgspec): a
# third of pickle's cost to write, which the busier batching process pays (records are
# plain JSON-like data; tuples arrive as lists).
FORWARD_EVERY = 512
# How long the batching process waits for the deciding one to finish writing.
JOIN_TIMEOUT_S = 600.0

# (topic, key, value); a Flush to decide is (None, its output line, the Flush with
# Deliveries to build, else None: the deciding process reads what it needs from the line)
Forwarded = tuple[str | None, str | bytes | None, Any]


class Sink(Protocol):
    """Where the deciding half's outputs go (the output file, and the summary's counts);
    a ``bytes`` output is a Flush's line, already written."""

    def add(self, outputs: Iterable[Output | bytes]) -> None: ...

    def finish(self) -> dict[str, Any]: ...


class SplitError(RuntimeError):
    """The deciding process failed; ``str(e)`` is one line for the user, ``code`` the exit."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def available() -> bool:
    """Can this machine run the two halves apart (fork, and two usable cores)?"""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return cores >= 2 and "fork" in multiprocessing.get_all_start_methods()


class _Forwarder(Decider):
    """Stands in for the Decider in the batching process: forwards what it is given.

    A Flush crosses the pipe as its output line, written here; the deciding half reads
    what it needs of it from that line (:func:`flush_view`), or, with Deliveries to
    build, gets the whole Flush beside it.
    """

    def __init__(self, overrides: Mapping[str, Any], deliveries: bool) -> None:
        super().__init__(overrides, deliveries=False)
        self.with_deliveries = deliveries
        self.items: list[Forwarded] = []
        self.flush_line = codec.line_writer("Flush", FLUSHES, ordered=True)  # the core's

    def apply(self, topic: str, key: str | None, value: Mapping[str, Any] | None) -> None:
        if topic == SETTINGS:  # batching times by the settings too
            super().apply(topic, key, value)
        self.items.append((topic, key, value))

    def emit(self, flush: dict[str, Any], out: list[Output]) -> None:
        line = self.flush_line(flush["conversation_id"], flush)
        self.items.append((None, line, flush if self.with_deliveries else None))


class _MessageView(TypedDict):
    sender_id: Any
    mentions: Any


class _FlushView(TypedDict):
    flush_id: Any
    conversation_id: Any
    messages: list[_MessageView]
    opened_at: Any
    closed_at: Any


class _FlushLine(TypedDict):
    value: _FlushView


_read_flush_line = msgspec.json.Decoder(_FlushLine).decode


def flush_view(line: bytes) -> Mapping[str, Any]:
    """What :meth:`Decider.decide_flush` reads of a Flush without Deliveries to build,
    read back from the Flush's output line: who sent each message and whom it mentions
    (no texts, no message ids). Read so in the deciding process, it costs less there
    than building and sending it cost the batching one (measured: 0.09 s against 0.18 s
    on ``bench.replay``'s 35k Flushes)."""
    return cast(Mapping[str, Any], _read_flush_line(line)["value"])  # a plain dict


def _decide(
    conn: Connection,
    other_end: Connection,
    overrides: Mapping[str, Any],
    deliveries: bool,
    make_sink: Callable[[], Sink],
    prepare: Callable[[], None],
) -> None:
    """The deciding process: apply what arrives, in order; reply with the sink's result."""
    # The fork copied the batching process's end of the pipe too: closed here, so that
    # this process sees the end of input if the batching process stops without saying.
    other_end.close()
    try:
        prepare()
        decider = Decider(overrides, deliveries=deliveries)
        sink = make_sink()
        decode = msgspec.msgpack.Decoder().decode
        while data := conn.recv_bytes():
            items = decode(data)
            outputs: list[Output | bytes] = []
            decide, apply, add = decider.decide_flush, decider.apply, outputs.append
            for topic, key, value in items:
                if topic is None:  # a Flush: its line, then its decisions
                    add(key)
                    decide(flush_view(key) if value is None else value, outputs)  # type: ignore[arg-type]
                else:
                    apply(topic, key, value)
            sink.add(outputs)
        conn.send(("done", sink.finish()))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the batching process went away or the user stopped the run: nothing to say
    except Exception as exc:  # noqa: BLE001 - reported by the batching process
        conn.send(_error_reply(exc, "the deciding process"))
    finally:
        conn.close()


def _error_reply(exc: Exception, who: str) -> tuple[str, str, int]:
    """A second process's failure as its reply: errors meant for the user carry their
    exit code (replay's ReplayFileError); anything else is exit 1, named."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return ("error", str(exc), code)
    return ("error", f"{who} failed: {type(exc).__name__}: {exc}", 1)


def _stop(conn: Connection, process: Any) -> None:
    """Close our end (the second process then sees the end of its input) and wait for it."""
    conn.close()
    process.join(JOIN_TIMEOUT_S)
    if process.is_alive():  # pragma: no cover - only if it hangs
        process.kill()
        process.join()


def _await_reply(conn: Connection, process: Any, who: str) -> Any:
    """The second process's ``("done", result)`` reply: its result, once it has ended;
    :class:`SplitError` if it failed or stopped without one. Closes ``conn``."""
    try:
        reply = conn.recv() if conn.poll(JOIN_TIMEOUT_S) else None
    except (EOFError, ConnectionResetError):
        reply = None
    finally:
        _stop(conn, process)
    if reply is None:
        raise SplitError(f"{who} stopped unexpectedly (exit code {process.exitcode})", 1)
    if reply[0] == "error":
        raise SplitError(reply[1], reply[2])
    return reply[1]


def run_split(
    records: Iterable[tuple[str, str | None, dict[str, Any] | None]],
    overrides: Mapping[str, Any],
    deliveries: bool,
    make_sink: Callable[[], Sink],
    prepare: Callable[[], None],
) -> tuple[Engine, dict[str, Any]]:
    """Run ``records`` through both halves; returns the batching engine and the sink's
    result. The sink is made in the deciding process (``make_sink``, after
    ``prepare``); raises :class:`SplitError` if that process fails."""
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe(duplex=True)
    process = context.Process(
        target=_decide,
        args=(theirs, ours, overrides, deliveries, make_sink, prepare),
        name="chat-notifier-replay-decide",
        daemon=True,
    )
    process.start()
    theirs.close()
    forwarder = _Forwarder(overrides, deliveries)
    engine = Engine(overrides, decider=forwarder)
    try:
        try:
            feed, send, encode = engine.feed, ours.send_bytes, msgspec.msgpack.Encoder().encode
            for topic, key, value in records:
                feed(topic, key, value)
                if len(forwarder.items) >= FORWARD_EVERY:
                    send(encode(forwarder.items))
                    forwarder.items = []
            engine.finish()
            if forwarder.items:
                send(encode(forwarder.items))
            send(b"")  # the end
        except (BrokenPipeError, ConnectionResetError):
            pass  # the deciding process stopped early: its reply says why
    except BaseException:  # the input failed midway: stop the deciding process too
        _stop(ours, process)
        raise
    return engine, _await_reply(ours, process, "the deciding process")


T = TypeVar("T")


def in_second_process(
    target: Callable[[], T], prepare: Callable[[], None] = lambda: None
) -> Callable[[], T]:
    """Start ``target()`` in a forked process now; the function returned waits for its
    (picklable) result, raising :class:`SplitError` if it failed or stopped. ``whatif``
    runs its candidate so, beside the baseline."""
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe(duplex=False)

    def main() -> None:
        ours.close()
        try:
            prepare()
            theirs.send(("done", target()))
        except KeyboardInterrupt:
            pass
        except Exception as exc:  # noqa: BLE001 - reported by the parent, in one line
            theirs.send(_error_reply(exc, "the second process"))
        finally:
            theirs.close()

    process = context.Process(target=main, name="chat-notifier-second", daemon=True)
    process.start()
    theirs.close()

    def wait() -> T:
        result: T = _await_reply(ours, process, "the second process")
        return result

    return wait
