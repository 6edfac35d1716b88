"""The reply decision: one inbound mail in, one audit decision out (contract §7). Pure.

No Kafka, no clock, no environment: time, keys and every lookup (token references,
conversation snapshots, users, already-posted mails) are passed in, so the same mail and
the same state always give the same decision and the same posted ``message_id``.

Checks, in this order (the first that fails names the audit reason):

1. ``TOO_LARGE``: more than ``max_mail_bytes`` (adapters refuse these already; the agent
   checks again because ``email.inbound`` is an open topic).
2. ``MALFORMED``: not a mail we can read (no header block, no single From address, or
   the parser gives up).
3. ``DUPLICATE``: a mail with this dedupe key (the Message-ID, or a digest of the mail
   when it has none) was already *posted*. Only accepted mails are remembered: a mail
   refused for a reason that may change (the conversation snapshot not seen yet) can be
   redelivered, and an attacker who copies someone's Message-ID blocks nothing.
4. ``OWN_MAIL``: From is one of our own addresses or at the reply domain (no loops).
5. ``BOUNCE``: a delivery status notification (``multipart/report``, a
   ``message/delivery-status`` part), From ``mailer-daemon``/``postmaster``, or the null
   reverse path (``Return-Path: <>``).
6. ``AUTO_REPLY``: ``Auto-Submitted`` other than ``no``, ``Precedence`` bulk, junk, list or
   auto_reply, ``X-Autoreply``, ``X-Autorespond`` (RFC 3834; what Discourse checks).
7. ``NO_TOKEN``, ``FORGED_TOKEN``, ``EXPIRED_TOKEN``: the token is looked for in To, Cc,
   then Delivered-To, X-Original-To, X-Envelope-To, then the envelope recipients, only
   at a reply domain, and verified by :mod:`processors.senders.tokens` (HMAC, expiry,
   key id). A tampered, unknown-key, malformed or unresolvable token is ``FORGED_TOKEN``.
8. ``FROM_MISMATCH``: the From address is not the token user's address (compared
   case-insensitively). Policy: *reject*, as Discourse does. A reply token leaks with
   every forwarded notification; the From check means a forwarded mail cannot be used
   to post as its recipient by someone else (From is forgeable, but the forger must then
   also hold the token). Unknown user or no address on file: also ``FROM_MISMATCH``.
9. ``UNKNOWN_CONVERSATION`` (no snapshot), ``WRONG_CONVERSATION`` (the mail answers one
   of our notification threads, by In-Reply-To/References, but the token is for another
   conversation), ``NOT_PARTICIPANT`` (the token's user is no longer in the conversation)
   and ``READ_ONLY`` (Read access): all *at the time of the reply*.
10. ``NO_TEXT``: nothing left after quotes and signature are stripped (or no text part).

Otherwise ``ACCEPTED`` with a MessageEvent: origin ``email``, sender the token's user,
``message_id`` = ``email-`` + a digest of the dedupe key, ``ts`` = ``now_ms``
(the mail's Date header is the sender's claim, not event time).

Text: the first ``text/plain`` part (else ``text/html`` converted by ``html2text``),
decoded by its declared charset (``iso-8859-1``/``us-ascii`` read as Windows-1252, as
browsers do, since mailers mislabel it; unknown charsets as UTF-8 with replacement); the
reply is what ``mail-parser-reply`` keeps of the first fragment, with ``>``-quoted lines
dropped (a reply typed below the quote keeps only the new lines). Attachments are never
posted: a note names them. Longer than ``max_text_chars``: cut with a marker.
"""

from __future__ import annotations

import codecs
import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message
from email.utils import getaddresses
from typing import Any, Final

from processors.reply.reasons import ACCEPTED
from processors.senders.tokens import (
    LOCAL_PART_PREFIX,
    ExpiredTokenError,
    ReplyKeys,
    ReplyTokenError,
    conversation_ref,
    verify_reply_token,
)

# The audit reasons live in reasons.py (the codec needs them without this module's imports).

#: Each audit reason in words, for ``chat-notifier explain`` (the README's table says the
#: same; tests/reply/test_decision.py keeps the two in step).
AUDIT_WHY: Final[Mapping[str, str]] = {
    ACCEPTED: "posted to the conversation",
    "TOO_LARGE": "the mail was over the size limit (INBOUND__MAX_MAIL_BYTES)",
    "MALFORMED": "not a readable mail: no header block, or not exactly one From address",
    "DUPLICATE": "this mail (same Message-ID) was already posted: a redelivery, or the "
    "same mail through two adapters",
    "OWN_MAIL": "it came from our own sending address or the reply domain (a mail loop)",
    "BOUNCE": "a delivery status notification: a bounce, mail from mailer-daemon or "
    "postmaster, or a null sender",
    "AUTO_REPLY": "an automatic reply (Auto-Submitted, Precedence bulk/junk/list/auto_reply, "
    "X-Autoreply or X-Autorespond)",
    "NO_TOKEN": "no reply+... address at the reply domain in To, Cc, Delivered-To, "
    "X-Original-To or the envelope",
    "FORGED_TOKEN": "the reply address's token is not one of ours: bad signature, "
    "tampered, unknown key or unknown reference",
    "EXPIRED_TOKEN": "the reply address's token is authentic but expired (REPLY__TOKEN_TTL_DAYS)",
    "FROM_MISMATCH": "the From address is not the one on file for the token's user "
    "(a forwarded notification carries the token, so this is refused)",
    "UNKNOWN_CONVERSATION": "no snapshot of the token's conversation had been read",
    "WRONG_CONVERSATION": "the mail answers another conversation's notification thread",
    "NOT_PARTICIPANT": "the user is no longer a participant of the conversation",
    "READ_ONLY": "the user has Read access only in this conversation",
    "NO_TEXT": "nothing was left once quoted text and signature were stripped, "
    "or there was no text part",
}

#: Kafka's default record limit is 1 MiB (message.max.bytes, max.request.size): a mail
#: must fit one record of ``email.inbound``. Raising this needs both raised too.
MAX_MAIL_BYTES: Final = 1_000_000
MAX_TEXT_CHARS: Final = 10_000  # a long chat message; mail threads pasted whole are cut
TRUNCATED_MARKER: Final = "\n\n[… message truncated]"
ATTACHMENT_NAMES_SHOWN: Final = 10
ATTACHMENT_NAME_MAX: Final = 80
MAIL_ID_MAX: Final = 250  # a Message-ID longer than this is not used as the key

#: Languages whose quote headers ("On … wrote:", "Am … schrieb", "Le … a écrit", …)
#: the reply parser looks for; English is always included by the library.
REPLY_LANGUAGES: Final[tuple[str, ...]] = (
    "en",
    "de",
    "fr",
    "es",
    "nl",
    "it",
    "pl",
    "sv",
    "da",
    "cs",
    "ja",
    "ko",
    "zh",
)

_AUTO_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
_BOUNCE_LOCALS = frozenset({"mailer-daemon", "postmaster"})
_TOKEN_HEADERS = ("To", "Cc", "Delivered-To", "X-Original-To", "X-Envelope-To")
_THREAD_ID = re.compile(r"<thread\.([0-9a-f]{20})@[^>\s]+>")
_MESSAGE_ID = re.compile(rf"<([^<>\s]{{1,{MAIL_ID_MAX}}})>")
_ASCII_LABELS = frozenset({"us-ascii", "ascii", "ansi_x3.4-1968"})
_LATIN1_LABELS = frozenset({"iso-8859-1", "iso8859-1", "latin-1", "latin1", "l1", "cp819"})


@dataclass(frozen=True, slots=True)
class ReplyContext:
    """Everything the decision depends on besides the mail itself."""

    keys: ReplyKeys
    now_ms: int
    reply_domains: frozenset[str]  # lower case
    own_addresses: frozenset[str] = frozenset()  # lower case; our From addresses
    resolve: Callable[[str], tuple[str, str] | None] | None = None  # token references
    conversation: Callable[[str], Mapping[str, Any] | None] = lambda _cid: None
    user: Callable[[str], Mapping[str, Any] | None] = lambda _uid: None
    seen: Callable[[str], bool] = lambda _key: False  # dedupe key already posted?
    max_mail_bytes: int = MAX_MAIL_BYTES
    max_text_chars: int = MAX_TEXT_CHARS


@dataclass(frozen=True, slots=True)
class ReplyDecision:
    """The outcome for one inbound mail; ``message`` is set only when ``ACCEPTED``."""

    reason: str
    mail_id: str
    conversation_id: str | None = None
    user_id: str | None = None
    message: dict[str, Any] | None = None
    detail: str | None = None
    size: int = 0

    @property
    def accepted(self) -> bool:
        return self.reason == ACCEPTED

    def audit(self, ts: int) -> dict[str, Any]:
        """The InboundAudit record (schemas/InboundAudit.avsc): no body, no addresses."""
        return {
            "mail_id": self.mail_id,
            "reason": self.reason,
            "conversation_id": self.conversation_id,
            "user_id": self.user_id,
            "message_id": self.message["message_id"] if self.message else None,
            "detail": self.detail,
            "size": self.size,
            "ts": ts,
        }


# --------------------------------------------------------------------------- ids


def mail_id(raw: bytes) -> str:
    """The dedupe key of a mail: its Message-ID (``<…>`` stripped), else ``sha256:<hex>``
    over what no relay changes (From, Date, Subject and the body), so the same mail
    arriving through two adapters (which prepend different trace headers) has one key.

    Adapters key ``email.inbound`` records with it; it never raises."""
    head, body = _split_head(raw)
    found = _header_value(head, b"message-id")
    if found is not None:
        match = _MESSAGE_ID.search(found)
        if match and not _has_control(match.group(1)):
            return match.group(1)
    h = hashlib.sha256(b"chat-notifier/mail\x00")
    for name in (b"from", b"date", b"subject"):
        h.update((_header_value(head, name) or "").encode("utf-8", "surrogateescape") + b"\x00")
    h.update(body)
    return "sha256:" + h.hexdigest()


def reply_message_id(key: str) -> str:
    """The posted MessageEvent's id: deterministic per dedupe key (redelivery, replay)."""
    digest = hashlib.blake2b(
        key.encode("utf-8", "surrogatepass"), digest_size=16, person=b"cn-reply"
    )
    return "email-" + digest.hexdigest()


def _split_head(raw: bytes) -> tuple[bytes, bytes]:
    text = raw.replace(b"\r\n", b"\n")
    head, sep, body = text.partition(b"\n\n")
    return (head, body) if sep else (text, b"")


def _header_value(head: bytes, name: bytes) -> str | None:
    """First value of header ``name`` (lower case) in a raw header block, unfolded."""
    lines = head.split(b"\n")
    for i, line in enumerate(lines):
        field_name, colon, value = line.partition(b":")
        if colon and field_name.strip().lower() == name:
            parts = [value]
            for cont in lines[i + 1 :]:
                if cont[:1] in (b" ", b"\t"):
                    parts.append(cont)
                else:
                    break
            return b" ".join(p.strip() for p in parts).decode("utf-8", "surrogateescape")
    return None


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)


# --------------------------------------------------------------------------- decision


def decide_reply(
    raw: bytes, ctx: ReplyContext, *, envelope_recipients: Sequence[str] = ()
) -> ReplyDecision:
    """The audit decision for one raw MIME mail (see the module doc for the order)."""
    size = len(raw)
    if size > ctx.max_mail_bytes:
        return ReplyDecision(
            "TOO_LARGE", _bounded_key(raw), detail=f"{size} bytes > {ctx.max_mail_bytes}", size=size
        )
    key = mail_id(raw)
    try:
        msg = _parse(raw)
        from_address = _from_address(msg)
    except _Malformed as exc:
        return ReplyDecision("MALFORMED", key, detail=str(exc), size=size)
    except Exception as exc:  # noqa: BLE001 - whatever the email package raises on garbage
        return ReplyDecision("MALFORMED", key, detail=type(exc).__name__, size=size)

    def refuse(reason: str, detail: str | None = None, **ids: str | None) -> ReplyDecision:
        return ReplyDecision(reason, key, detail=detail, size=size, **ids)  # type: ignore[arg-type]

    if ctx.seen(key):
        return refuse("DUPLICATE")
    local, _, domain = from_address.rpartition("@")
    if from_address in ctx.own_addresses or domain in ctx.reply_domains:
        return refuse("OWN_MAIL")
    bounce = _bounce(msg, local)
    if bounce:
        return refuse("BOUNCE", bounce)
    auto = _auto_reply(msg)
    if auto:
        return refuse("AUTO_REPLY", auto)

    tokens = list(_tokens(msg, envelope_recipients, ctx.reply_domains))
    if not tokens:
        return refuse("NO_TOKEN")
    ids: tuple[str, str] | None = None
    first_error: ReplyTokenError | None = None
    for token in tokens:
        try:
            ids = verify_reply_token(token, keys=ctx.keys, now_ms=ctx.now_ms, resolve=ctx.resolve)
            break
        except ReplyTokenError as exc:
            first_error = first_error or exc
    if ids is None:
        if isinstance(first_error, ExpiredTokenError):
            return refuse("EXPIRED_TOKEN")
        return refuse("FORGED_TOKEN", str(first_error) if first_error else None)
    conversation_id, user_id = ids

    user = ctx.user(user_id)
    user_email = str((user or {}).get("email") or "").strip().lower()
    if not user_email:
        return refuse(
            "FROM_MISMATCH", "no address on file", conversation_id=conversation_id, user_id=user_id
        )
    if user_email != from_address:
        return refuse("FROM_MISMATCH", conversation_id=conversation_id, user_id=user_id)

    conversation = ctx.conversation(conversation_id)
    if conversation is None:
        return refuse("UNKNOWN_CONVERSATION", conversation_id=conversation_id, user_id=user_id)
    threads = _thread_refs(msg)
    if threads and conversation_ref(conversation_id, user_id) not in threads:
        return refuse("WRONG_CONVERSATION", conversation_id=conversation_id, user_id=user_id)
    participant = next(
        (p for p in conversation.get("participants") or () if p.get("user_id") == user_id), None
    )
    if participant is None:
        return refuse("NOT_PARTICIPANT", conversation_id=conversation_id, user_id=user_id)
    if participant.get("access") != "ReadWrite":
        return refuse("READ_ONLY", conversation_id=conversation_id, user_id=user_id)

    text = reply_text(msg, max_chars=ctx.max_text_chars)
    if not text:
        return refuse("NO_TEXT", conversation_id=conversation_id, user_id=user_id)
    message = {
        "message_id": reply_message_id(key),
        "conversation_id": conversation_id,
        "sender_id": user_id,
        "type": "UserMessage",
        "text": text,
        "mentions": [],
        "origin": "email",
        "ts": ctx.now_ms,
    }
    return ReplyDecision(
        ACCEPTED, key, conversation_id=conversation_id, user_id=user_id, message=message, size=size
    )


def _bounded_key(raw: bytes) -> str:
    """Dedupe key of an oversized mail, reading only its head (never the whole body)."""
    head = raw[:65536]
    if b"\n\n" in head.replace(b"\r\n", b"\n"):
        key = mail_id(head.replace(b"\r\n", b"\n").partition(b"\n\n")[0] + b"\n\n")
        if not key.startswith("sha256:"):
            return key
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class _Malformed(ValueError):
    pass


def _parse(raw: bytes) -> Message:
    head, _ = _split_head(raw)
    if not head.strip() or b":" not in head.split(b"\n", 1)[0]:
        raise _Malformed("no header block")
    msg = message_from_bytes(raw, policy=policy.compat32)
    if not msg.keys():
        raise _Malformed("no headers")
    return msg


def _from_address(msg: Message) -> str:
    values = msg.get_all("From") or []
    found = [a for _, a in getaddresses([str(v) for v in values]) if a]
    if len(found) != 1 or "@" not in found[0]:
        raise _Malformed("From is not exactly one address")
    return found[0].strip().lower()


def _bounce(msg: Message, from_local: str) -> str | None:
    if msg.get_content_type() == "multipart/report":
        return "multipart/report"
    if any(p.get_content_type() == "message/delivery-status" for p in msg.walk()):
        return "delivery-status part"
    if from_local.split("+")[0] in _BOUNCE_LOCALS:
        return "From " + from_local.split("+")[0]
    if str(msg.get("Return-Path", "")).strip() == "<>":
        return "null reverse path"
    return None


def _auto_reply(msg: Message) -> str | None:
    auto = str(msg.get("Auto-Submitted", "")).split(";")[0].strip().lower()
    if auto and auto != "no":
        return "Auto-Submitted"
    if str(msg.get("Precedence", "")).strip().lower() in _AUTO_PRECEDENCE:
        return "Precedence"
    for name in ("X-Autoreply", "X-Autorespond"):
        if msg.get(name) is not None:
            return name
    return None


def _tokens(msg: Message, envelope: Iterable[str], domains: frozenset[str]) -> Iterator[str]:
    """Reply tokens in address order: To, Cc, trace headers, then the envelope."""
    values: list[str] = []
    for name in _TOKEN_HEADERS:
        values.extend(str(v) for v in msg.get_all(name) or [])
    values.extend(envelope)
    seen: set[str] = set()
    for _, address in getaddresses(values):
        local, at, domain = address.strip().rpartition("@")
        if not at or domain.lower() not in domains:
            continue
        if not local.lower().startswith(LOCAL_PART_PREFIX):
            continue
        token = local[len(LOCAL_PART_PREFIX) :].lower()
        if token and token not in seen:
            seen.add(token)
            yield token


def _thread_refs(msg: Message) -> set[str]:
    """Conversation references of our notification threads this mail answers."""
    refs = " ".join(str(msg.get(h, "")) for h in ("In-Reply-To", "References"))
    return set(_THREAD_ID.findall(refs))


# --------------------------------------------------------------------------- text


@dataclass(slots=True)
class _Body:
    plain: str | None = None
    html: str | None = None
    attachments: list[str] = field(default_factory=list)


def _collect(part: Message, body: _Body) -> None:
    ctype = part.get_content_type()
    if part.is_multipart():
        if ctype == "message/rfc822":  # a forwarded mail: left out like an attachment
            body.attachments.append(part.get_filename() or "forwarded message")
            return
        for sub in part.get_payload():
            if isinstance(sub, Message):
                _collect(sub, body)
        return
    filename = part.get_filename()
    disposition = (part.get_content_disposition() or "").lower()
    if disposition == "attachment" or filename or not ctype.startswith("text/"):
        body.attachments.append(filename or ctype)
        return
    if ctype == "text/plain" and body.plain is None:
        body.plain = decode_part(part)
    elif ctype == "text/html" and body.html is None:
        body.html = decode_part(part)
    elif ctype not in ("text/plain", "text/html"):
        body.attachments.append(ctype)


def decode_part(part: Message) -> str:
    """A text part's payload (quoted-printable/base64 undone) in its declared charset."""
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    label = (part.get_content_charset() or "utf-8").strip().lower()
    if label in _ASCII_LABELS:
        try:
            return data.decode("utf-8")  # 8-bit text behind a us-ascii label is UTF-8 today
        except UnicodeDecodeError:
            label = "windows-1252"
    if label in _LATIN1_LABELS:
        label = "windows-1252"  # a superset in the printable range; mailers mislabel it
    try:
        name = codecs.lookup(label).name
    except LookupError:
        name = "utf-8"
    return data.decode(name, errors="replace")


def html_to_text(html: str) -> str:
    import html2text

    converter = html2text.HTML2Text()
    converter.body_width = 0  # no re-wrapping: line breaks are the writer's
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.ignore_links = True
    converter.ignore_tables = True
    text: str = converter.handle(html)
    return text


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # controls other than newline and tab have no place in a chat message
    return "".join(
        c
        for c in text
        if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cs")
        if c not in "\u200b\ufeff"
    )


#: Quote-header verbs ("<date>, <name> wrote:") that mail-parser-reply 1.36 misses: its
#: Spanish pattern wants two spaces before "escribió", its Dutch one "schreef:" with the
#: name before it (Gmail puts it after), its Chinese one excludes its own match. A line
#: with one of these, ending in a colon and followed by a ``>``-quoted line, is dropped.
_QUOTE_HEADER = re.compile(
    r"(?:wrote|schrieb|a écrit|escribió|schreef|ha scritto|escreveu|napisał|skrev|"
    r"kirjoitti|написал|写道|寫道|書きました|작성)[^\n]{0,200}[:：]\s*$"
)


def _drop_quote_headers(text: str) -> str:
    lines = text.split("\n")
    drop: set[int] = set()
    for i, line in enumerate(lines):
        if not _QUOTE_HEADER.search(line):
            continue
        following = next((ln for ln in lines[i + 1 :] if ln.strip()), "")
        if not following.lstrip().startswith(">"):
            continue
        drop.add(i)
        if i > 0 and lines[i - 1].rstrip().endswith("<"):  # Gmail wraps inside <address>
            drop.add(i - 1)
    return "\n".join(line for i, line in enumerate(lines) if i not in drop)


def strip_reply(text: str) -> str:
    """The new text of a reply: quote headers, quoted lines and signatures removed."""
    from mailparser_reply.parser import EmailMessage

    parsed = EmailMessage(
        text=_drop_quote_headers(_clean(text)),
        languages=list(REPLY_LANGUAGES),
        keep_hyphen_lists=True,
    ).read()
    for reply in parsed.replies:
        lines = [line for line in reply.body.split("\n") if not line.lstrip().startswith(">")]
        kept = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
        if kept:
            return kept
    return ""


def reply_text(msg: Message, *, max_chars: int = MAX_TEXT_CHARS) -> str:
    """What is posted for ``msg``: the stripped reply, the attachment note, the cut."""
    body = _Body()
    _collect(msg, body)
    source = body.plain if body.plain is not None else None
    if source is None and body.html is not None:
        source = html_to_text(body.html)
    text = strip_reply(source) if source else ""
    if not text:
        return ""
    if len(text) > max_chars:
        text = text[:max_chars].rstrip() + TRUNCATED_MARKER
    if body.attachments:
        text += "\n\n" + attachment_note(body.attachments)
    return text


def attachment_note(names: Sequence[str]) -> str:
    shown = [_one_line(n, ATTACHMENT_NAME_MAX) for n in names[:ATTACHMENT_NAMES_SHOWN]]
    more = len(names) - len(shown)
    listed = ", ".join(shown) + (f" and {more} more" if more else "")
    noun = "attachment" if len(names) == 1 else "attachments"
    return f"[Not posted: {len(names)} {noun} ({listed})]"


def _one_line(text: str, limit: int) -> str:
    cleaned = "".join(" " if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in text)
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"
