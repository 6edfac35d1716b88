"""``chat-notifier explain``: why did (or didn't) a user get a notification?

Reads Decision records, from ``notify.decisions`` on the broker (and the matching
``notify.outcomes``, to say whether a send went through) or from a JSONL file such as
``replay`` output, and prints per flush what was decided for the user and why, in
words a support engineer can act on. The reasons mirror the product's own
troubleshooting list: a role must be assigned, must match a defined role exactly, and
must have the channel enabled.

A send is worded by what is known of it: with an outcome (``notify.outcomes``, live
data) it says "sent -> <status>"; read from the broker without an outcome yet, "sent"
(the Delivery is on its channel topic); read from a file holding no outcomes at all,
i.e. ``replay`` output, "would be sent": replay decides but sends nothing.

Replies by email leave an InboundAudit record each (``email.inbound-audit``). ``--user``
and ``--conversation`` also list the audits naming that user or conversation (those
whose token was verified); ``--mail MAIL_ID`` (the Message-ID, with or without ``<>``,
or the ``sha256:`` key of a mail without one) shows what became of one mail, whoever
sent it. Reasons are worded by :data:`processors.reply.parse.AUDIT_WHY`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from processors import codec, diagnosis
from processors.replay import why_not_json
from processors.reply.parse import AUDIT_WHY
from processors.reply.reasons import ACCEPTED
from processors.topics import DECISIONS, INBOUND_AUDIT, OUTCOMES, TOPICS

# The words for each reason live with the checklist (``diagnose``): one place for both.
WHY: Mapping[str, str] = diagnosis.WHY


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def select(
    decisions: Iterable[Mapping[str, Any]], user: str | None, conversation: str | None
) -> list[Mapping[str, Any]]:
    """The decisions about ``user`` (and the recipient-less ones of their conversations)."""
    out = []
    for d in decisions:
        if conversation is not None and d.get("conversation_id") != conversation:
            continue
        rid = d.get("recipient_id")
        if user is not None and rid is not None and rid != user:
            continue
        if user is not None and rid is None and conversation is None:
            continue  # an unknown conversation: shown only when asked about that conversation
        out.append(d)
    return out


def explain(
    decisions: Iterable[Mapping[str, Any]],
    outcomes: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    replayed: bool = False,
) -> Iterator[str]:
    """Readable lines, grouped by flush and recipient, in the order decided.

    ``replayed``: the decisions come from ``replay``, which sends nothing, so a send
    without an outcome reads "would be sent".
    """
    outcomes = outcomes or {}
    groups: dict[tuple[str, str | None], list[Mapping[str, Any]]] = {}
    for d in decisions:
        groups.setdefault((d["flush_id"], d.get("recipient_id")), []).append(d)
    for (flush_id, rid), items in groups.items():
        first = items[0]
        presence = first.get("presence")
        seen = f", presence {presence}" if presence else ""
        yield (
            f"{_when(first['ts'])}  conversation {first['conversation_id']}  flush {flush_id}  "
            f"recipient {rid or '(none)'}{seen}"
        )
        for d in items:
            channel = d.get("channel")
            if d["outcome"] == "send":
                status = outcomes.get(d.get("delivery_id") or "")
                if status is None and replayed:
                    yield f"    {channel}: would be sent (replay sends nothing)"
                    continue
                result = f" -> {status['status']}" if status else ""
                detail = f" ({status['detail']})" if status and status.get("detail") else ""
                yield f"    {channel}: sent{result}{detail}"
                continue
            reason = d.get("reason") or ""
            text = WHY.get(reason, reason)
            hint = f": {d['detail']}" if d.get("detail") else ""
            scope = f"{channel}: " if channel else ""
            yield f"    {scope}not notified [{reason}] {text}{hint}"


def select_audits(
    audits: Iterable[Mapping[str, Any]],
    user: str | None,
    conversation: str | None,
    mail: str | None,
) -> list[Mapping[str, Any]]:
    """The InboundAudit records of one mail, or naming ``user`` / ``conversation``."""
    key = mail.strip().removeprefix("<").removesuffix(">") if mail is not None else None
    out = []
    for a in audits:
        if key is not None and a.get("mail_id") != key:
            continue
        if user is not None and a.get("user_id") != user:
            continue
        if conversation is not None and a.get("conversation_id") != conversation:
            continue
        out.append(a)
    return out


def explain_audits(audits: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """Two lines per inbound mail: which mail, whose and where; what became of it."""
    for a in audits:
        who = f"  user {a['user_id']}" if a.get("user_id") else ""
        where = f"  conversation {a['conversation_id']}" if a.get("conversation_id") else ""
        yield f"{_when(a['ts'])}  inbound mail {a['mail_id']}{who}{where}"
        reason = a.get("reason") or ""
        hint = f": {a['detail']}" if a.get("detail") else ""
        if reason == ACCEPTED:
            yield f"    posted [{reason}] as message {a.get('message_id') or '?'}"
        else:
            yield f"    not posted [{reason}] {AUDIT_WHY.get(reason, reason)}{hint}"


Records = tuple[list[dict[str, Any]], dict[str, dict[str, Any]], list[dict[str, Any]]]


# The records explain reads from a file, by topic; lines of other topics (Flushes,
# Deliveries: replay writes them too) are passed over.
_READ: Mapping[str, str] = {
    topic: str(TOPICS[topic].record) for topic in (DECISIONS, OUTCOMES, INBOUND_AUDIT)
}
MAX_REPORTED_LINES = 20  # bad lines named one by one; the rest are counted


class InputError(Exception):
    """An input file explain cannot read at all; ``str(e)`` is the one line to print."""


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


class _Collector:
    """The records explain reads, by topic; the bad ones named (the first few) and counted."""

    def __init__(self, warn: Callable[[str], None]) -> None:
        self.warn = warn
        self.decisions: list[dict[str, Any]] = []
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.audits: list[dict[str, Any]] = []
        self.bad = 0

    def add(self, topic: str, value: dict[str, Any]) -> None:
        if topic == DECISIONS:
            self.decisions.append(value)
        elif topic == OUTCOMES:
            self.outcomes[value["delivery_id"]] = value
        else:
            self.audits.append(value)

    def skip(self, where: str, reason: str) -> None:
        self.bad += 1
        if self.bad <= MAX_REPORTED_LINES:
            self.warn(f"explain: skipped {where}: {reason}")

    def records(self, what: str) -> Records:
        if self.bad > MAX_REPORTED_LINES:
            self.warn(
                f"explain: {self.bad:,} bad {what} skipped in all ({MAX_REPORTED_LINES} shown)"
            )
        return self.decisions, self.outcomes, self.audits


def read_jsonl(path: Path, warn: Callable[[str], None] = _stderr) -> Records:
    """Decisions, outcomes and inbound mail audits from a JSONL file of
    ``{"topic", "key", "value"}`` lines. A line that is not such a record (not JSON, not
    an object, a value its topic's schema refuses) is skipped, and said to ``warn``
    with its line number and why; raises :class:`InputError` for a file it cannot read."""
    collected = _Collector(warn)
    try:
        with path.open("rb") as handle:
            for line_no, line in enumerate(handle, start=1):
                try:
                    record = _read_line(line, line_no)
                except ValueError as exc:
                    collected.skip(f"line {line_no}", str(exc))
                    continue
                if record is not None:
                    collected.add(*record)
    except OSError as exc:
        raise InputError(f"cannot read input {path}: {exc.strerror or exc}") from None
    return collected.records("lines")


def _read_line(line: bytes, line_no: int) -> tuple[str, dict[str, Any]] | None:
    """One line's (topic, validated value), None for a line to pass over; raises
    ValueError with the reason for a line that is not a record explain can read."""
    if line_no == 1:
        line = line.removeprefix(b"\xef\xbb\xbf")
    if not line.strip():
        return None
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise ValueError(why_not_json(line)) from None
    if type(item) is not dict:
        raise ValueError("expected an object with topic, key and value")
    topic = item.get("topic")
    if not isinstance(topic, str) or topic not in _READ:
        return None
    try:
        return topic, codec.from_json_value(_READ[topic], item.get("value"))
    except codec.DecodeError as exc:
        raise ValueError(str(exc)) from None


def read_kafka() -> Records:
    from processors.live.kafka_replay import read_topics  # aiokafka: only here
    from processors.settings import load_settings

    settings = load_settings()
    if not settings.kafka_broker_url:
        raise SystemExit("explain: set KAFKA_BROKER_URL, or give --input FILE")
    collected = _Collector(_stderr)

    def skipped(topic: str, partition: int, offset: int, reason: str) -> None:
        collected.skip(f"{topic}[{partition}] offset {offset}", reason)

    topics = [DECISIONS, OUTCOMES, INBOUND_AUDIT]
    for topic, _, value in read_topics(settings, topics, input_only=False, on_error=skipped):
        if value is not None:  # only chat.users / chat.conversations carry tombstones
            collected.add(topic, value)
    decisions, outcomes, audits = collected.records("records")
    decisions.sort(key=lambda d: d["ts"])
    audits.sort(key=lambda a: a["ts"])
    return decisions, outcomes, audits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", help="the recipient's user_id")
    parser.add_argument("--conversation", help="only this conversation")
    parser.add_argument(
        "--mail",
        metavar="MAIL_ID",
        help="what became of one reply by email: its Message-ID (or the sha256: key)",
    )
    parser.add_argument(
        "--input",
        type=Path,
        help="JSONL with notify.decisions (e.g. replay output); "
        "default: read notify.decisions and notify.outcomes from KAFKA_BROKER_URL",
    )
    parser.add_argument("--last", type=int, default=20, help="show the last N flushes (0: all)")


def run(args: argparse.Namespace) -> int:
    if args.user is None and args.conversation is None and args.mail is None:
        print("explain: give --user, --conversation and/or --mail", file=sys.stderr)
        return 2
    if args.input is not None:
        if not args.input.exists():
            print(f"explain: no such input file: {args.input}", file=sys.stderr)
            return 2
        try:
            decisions, outcomes, audits = read_jsonl(args.input)
        except InputError as exc:
            print(f"explain: {exc}", file=sys.stderr)
            return 2
        # A file with no outcome at all is replay output (the senders never saw it).
        replayed = not outcomes
    else:
        decisions, outcomes, audits = read_kafka()
        replayed = False
    mails = select_audits(audits, args.user, args.conversation, args.mail)
    if args.last:
        mails = mails[-args.last :]
    if args.mail is not None:
        _print_mails(mails, args.mail)
        return 0
    chosen = select(decisions, args.user, args.conversation)
    if args.last:
        flushes = list(dict.fromkeys(d["flush_id"] for d in chosen))[-args.last :]
        keep = set(flushes)
        chosen = [d for d in chosen if d["flush_id"] in keep]
    if not chosen:
        who = " ".join(
            f"{k} {v}" for k, v in (("user", args.user), ("conversation", args.conversation)) if v
        )
        print(
            f"no decisions for {who}: no batch has closed in a conversation listing them as a "
            "participant (check the chat.conversations snapshot), or the conversation was "
            "unknown when its batch closed (try --conversation)."
        )
    for line in explain(chosen, outcomes, replayed=replayed):
        print(line)
    if mails:
        print("replies by email (email.inbound-audit):")
        _print_mails(mails, None)
    return 0


def _print_mails(mails: list[Mapping[str, Any]], asked: str | None) -> None:
    if not mails and asked is not None:
        print(
            f"no inbound mail {asked}: no adapter has queued a mail with this key (the "
            "Message-ID without <>, or sha256:... for a mail without one), or the reply "
            "agent has not decided it yet."
        )
    for line in explain_audits(mails):
        print(line)
