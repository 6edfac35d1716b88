"""Reply tokens for ``Reply-To: reply+<token>@<reply domain>`` (contract §7).

A token proves that *we* invited user U to reply into conversation C until time T.

Rules and how they are met:

- **Unforgeable**: a MAC, HMAC-SHA256 truncated to 128 bits (:data:`MAC_BYTES`), over a
  domain-separation label, the key id, the mode, the expiry and the *full*
  conversation and user ids.
- **Expiring**: the expiry (epoch minutes, 4 bytes) is inside the MAC'd data.
- **Key rotation**: the token starts with the key id (``k1-...``). Settings hold
  ``id:secret`` pairs; the first signs, all verify, so an old key is retired by
  removing it once its tokens have expired.
- **Local part ≤ 64 characters** (RFC 5321): ``reply+`` plus the token. The token is
  lowercase base32 (case-insensitive, since some MTAs change the case of local parts)
  after ``<kid>-``.

*Long ids.* Conversation and user ids are opaque strings that may be long (UUIDs are
36 characters each), and 58 characters cannot hold both plus a MAC. So a token has
two modes:

- ``inline`` (mode 1): the ids themselves, when they fit (short ids, demos, tests);
  verification needs nothing else.
- ``reference`` (mode 2): an 80-bit reference, :func:`conversation_ref` of
  (conversation_id, user_id). Verification needs a ``resolve(ref)`` lookup giving the
  ids back. The reply agent builds that lookup from ``chat.conversations`` snapshots
  (ref of every participant of every conversation) — data it already needs to check
  the participant's access — so no new topic or store is required. The MAC is over
  the *resolved full ids*, so a reference collision can never attribute a reply to
  the wrong conversation or user: it just fails verification.

This module is pure: time (``now_ms``) and keys are passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

LOCAL_PART_PREFIX = "reply+"
LOCAL_PART_MAX = 64  # RFC 5321 §4.5.3.1.1
TOKEN_MAX = LOCAL_PART_MAX - len(LOCAL_PART_PREFIX)  # 58 characters
MAC_BYTES = 16  # 128-bit truncated HMAC-SHA256 (contract §7: at least 128 bits)
REF_BYTES = 10  # 80-bit conversation reference; collisions only cost a failed verify
KID_MAX = 6  # so that a reference-mode token always fits: 6 + 1 + 50 <= 58
MODE_INLINE = 1
MODE_REFERENCE = 2
_HEADER = struct.Struct(">BI")  # mode, expiry in epoch minutes
_LABEL = b"chat-notifier/reply-token/v1\x00"
_KID_RE = re.compile(rf"^[a-z0-9]{{1,{KID_MAX}}}$")
MIN_SECRET_BYTES = 16
MS_PER_MINUTE = 60_000


class ReplyTokenError(ValueError):
    """Root of every reason a reply token is refused."""


class MalformedTokenError(ReplyTokenError):
    """Not a token this system could have made."""


class UnknownKeyError(ReplyTokenError):
    """Signed with a key id we do not (or no longer) hold."""


class ForgedTokenError(ReplyTokenError):
    """The MAC does not match: tampered with or forged."""


class ExpiredTokenError(ReplyTokenError):
    """Authentic but past its expiry."""


class UnresolvedTokenError(ReplyTokenError):
    """A reference-mode token whose reference the lookup does not know."""


@dataclass(frozen=True, slots=True)
class ReplyKeys:
    """Key ring: ``signing_kid`` signs new tokens; every key in ``secrets`` verifies."""

    signing_kid: str
    secrets: Mapping[str, bytes]

    @classmethod
    def parse(cls, pairs: Sequence[str]) -> ReplyKeys:
        """Build from ``id:secret`` strings (settings ``reply.token_keys``); the first signs."""
        if not pairs:
            raise ValueError("at least one reply token key is required")
        secrets: dict[str, bytes] = {}
        for pair in pairs:
            kid, sep, secret = pair.partition(":")
            kid = kid.strip().lower()
            if not sep or not _KID_RE.match(kid):
                raise ValueError(f"reply key id must match [a-z0-9]{{1,{KID_MAX}}} before ':'")
            if len(secret.encode()) < MIN_SECRET_BYTES:
                raise ValueError(f"reply key {kid!r}: secret shorter than {MIN_SECRET_BYTES} bytes")
            secrets[kid] = secret.encode()
        first = pairs[0].partition(":")[0].strip().lower()
        return cls(signing_kid=first, secrets=secrets)


def conversation_ref(conversation_id: str, user_id: str) -> str:
    """The stable 80-bit reference (20 hex chars) of a (conversation, recipient) pair."""
    return _ref_bytes(conversation_id, user_id).hex()


def _ref_bytes(conversation_id: str, user_id: str) -> bytes:
    digest = hashlib.sha256(
        b"chat-notifier/ref\x00" + conversation_id.encode() + b"\x00" + user_id.encode()
    ).digest()
    return digest[:REF_BYTES]


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _unb32(text: str) -> bytes:
    padded = text.upper() + "=" * (-len(text) % 8)
    try:
        return base64.b32decode(padded)
    except (ValueError, binascii.Error) as exc:
        raise MalformedTokenError("not base32") from exc


def _mac(secret: bytes, kid: str, header: bytes, conversation_id: str, user_id: str) -> bytes:
    msg = b"".join(
        (_LABEL, kid.encode(), b"\x00", header, conversation_id.encode(), b"\x00", user_id.encode())
    )
    return hmac.new(secret, msg, hashlib.sha256).digest()[:MAC_BYTES]


def _b32_len(n_bytes: int) -> int:
    return math.ceil(n_bytes * 8 / 5)


def make_reply_token(
    conversation_id: str, user_id: str, *, keys: ReplyKeys, now_ms: int, ttl_s: int
) -> str:
    """A token for ``reply+<token>@domain``; ``len("reply+" + token) <= 64`` always.

    Inline mode when the ids fit (no NUL in either), else reference mode.
    """
    kid = keys.signing_kid
    expiry_min = math.ceil((now_ms + ttl_s * 1000) / MS_PER_MINUTE)
    inline = conversation_id.encode() + b"\x00" + user_id.encode()
    fixed = _HEADER.size + MAC_BYTES
    budget_chars = TOKEN_MAX - len(kid) - 1
    if "\x00" not in conversation_id and _b32_len(fixed + len(inline)) <= budget_chars:
        mode, payload = MODE_INLINE, inline
    else:
        mode, payload = MODE_REFERENCE, _ref_bytes(conversation_id, user_id)
    header = _HEADER.pack(mode, expiry_min)
    mac = _mac(keys.secrets[kid], kid, header, conversation_id, user_id)
    token = f"{kid}-{_b32(header + payload + mac)}"
    assert len(token) <= TOKEN_MAX, "reference mode must always fit"
    return token


def verify_reply_token(
    token: str,
    *,
    keys: ReplyKeys,
    now_ms: int,
    resolve: Callable[[str], tuple[str, str] | None] | None = None,
) -> tuple[str, str]:
    """Return ``(conversation_id, user_id)`` of an authentic, unexpired token.

    ``token`` may be the bare token or the whole local part (``reply+...``), in any
    case. ``resolve`` maps a :func:`conversation_ref` to its ids; it is needed only for
    reference-mode tokens. Raises a :class:`ReplyTokenError` subclass otherwise; the
    MAC is checked before the expiry, so :class:`ExpiredTokenError` means authentic.
    """
    text = token.strip().lower()
    if text.startswith(LOCAL_PART_PREFIX):
        text = text[len(LOCAL_PART_PREFIX) :]
    kid, sep, body = text.partition("-")
    if not sep or not _KID_RE.match(kid) or len(text) > TOKEN_MAX:
        raise MalformedTokenError("bad token shape")
    secret = keys.secrets.get(kid)
    if secret is None:
        raise UnknownKeyError("unknown key id")
    raw = _unb32(body)
    if len(raw) < _HEADER.size + MAC_BYTES + 1:
        raise MalformedTokenError("too short")
    header, payload, mac = (
        raw[: _HEADER.size],
        raw[_HEADER.size : -MAC_BYTES],
        raw[-MAC_BYTES:],
    )
    mode, expiry_min = _HEADER.unpack(header)
    if mode == MODE_INLINE:
        conv_b, nul, user_b = payload.partition(b"\x00")
        if not nul:
            raise MalformedTokenError("inline payload without separator")
        try:
            ids = (conv_b.decode(), user_b.decode())
        except UnicodeDecodeError as exc:
            raise ForgedTokenError("payload is not text") from exc
    elif mode == MODE_REFERENCE:
        if len(payload) != REF_BYTES:
            raise MalformedTokenError("bad reference length")
        found = resolve(payload.hex()) if resolve is not None else None
        if found is None:
            raise UnresolvedTokenError("unknown conversation reference")
        ids = found
    else:
        raise MalformedTokenError("unknown token mode")
    expected = _mac(secret, kid, header, ids[0], ids[1])
    if not hmac.compare_digest(expected, mac):
        raise ForgedTokenError("MAC mismatch")
    if now_ms > expiry_min * MS_PER_MINUTE:
        raise ExpiredTokenError("token expired")
    return ids
