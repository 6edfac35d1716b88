"""One rule for putting record-supplied text (ids, reasons) into a log line.

A CR or LF inside an id would start a new line that a reader or a log shipper takes
for a line of its own (a conversation id ``"c1\\r\\nBcc: evil@x"`` forged a ``Bcc:``
line in ``senders.log``). :func:`for_log` escapes every control character (C0, DEL,
C1), the Unicode line and paragraph separators and the bidirectional overrides (which
reorder what a terminal shows) as ``\\xNN`` / ``\\uNNNN``, escapes the backslash so an
escape in the input cannot pass for one of ours, and bounds the length. Printable
text, non-ASCII letters included, is kept as is so ids stay greppable.

Log only ids and reasons through it: message bodies, addresses and tokens never go to
logs at all.
"""

from __future__ import annotations

import re

LOG_VALUE_MAX_CHARS = 200  # an id or a reason; anything longer is cut with a count

_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    if char == "\\":
        return "\\\\"
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def for_log(value: object, limit: int = LOG_VALUE_MAX_CHARS) -> str:
    """``value`` as one printable log-line fragment of at most ``limit`` (+ a marker) chars."""
    text = value if isinstance(value, str) else str(value)
    extra = len(text) - limit
    if extra > 0:
        text = text[:limit]
    text = _UNSAFE.sub(_escape, text)
    return f"{text}…(+{extra} chars)" if extra > 0 else text


__all__ = ["LOG_VALUE_MAX_CHARS", "for_log"]
