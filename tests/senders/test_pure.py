"""Pure sender parts: errors, retry timing, rate limit, reply tokens, rendering, SMS segments."""

from __future__ import annotations

import random
import subprocess
import sys
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.senders import render, retry, tokens
from processors.senders.errors import parse_retry_after
from tests.imports import imported_modules
from tests.senders.factories import T0_MS, make_delivery

PKG = Path(__file__).resolve().parents[2] / "processors" / "senders"
FORBIDDEN = {
    "faust",
    "aiokafka",
    "kafka",
    "boto3",
    "botocore",
    "twilio",
    "firebase_admin",
    "pywebpush",
}


@pytest.mark.parametrize("module", ["errors", "retry", "render", "tokens", "service", "base"])
def test_pure_modules_import_no_provider_or_kafka(module: str) -> None:
    names = {name.split(".")[0] for name in imported_modules(PKG / f"{module}.py")}
    assert not names & FORBIDDEN
    if module in ("retry", "render", "tokens", "errors"):
        assert "time" not in names and "os" not in names  # time is passed in


def test_importing_service_loads_no_provider_library() -> None:
    code = (
        "import sys, processors.senders.service, processors.senders.outbox;"
        f"print(sorted(m for m in {sorted(FORBIDDEN)!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ retry


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    retry_after=st.one_of(st.none(), st.floats(min_value=0, max_value=1e6)),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_next_delay_is_bounded(attempt: int, retry_after: float | None, seed: int) -> None:
    delay = retry.next_delay(attempt, retry_after_s=retry_after, rng=random.Random(seed))
    ceiling = max(retry.RETRY_MAX_S, min(retry_after or 0.0, retry.RETRY_AFTER_MAX_S))
    assert 0.0 <= delay <= ceiling
    assert delay <= retry.backoff_ceiling_s(attempt) or retry_after
    if retry_after:  # never earlier than the provider asked (up to the cap)
        assert delay >= min(retry_after, retry.RETRY_AFTER_MAX_S)


def test_backoff_ceiling_doubles_then_caps() -> None:
    ceilings = [retry.backoff_ceiling_s(n) for n in range(1, 10)]
    assert ceilings[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(ceilings) == retry.RETRY_MAX_S
    with pytest.raises(ValueError):
        retry.backoff_ceiling_s(0)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("30", 30.0),
        (" 1.5 ", 1.5),
        (None, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("-1", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_token_bucket_waits_and_refills() -> None:
    bucket = retry.TokenBucket(2.0, burst=2, now=0.0)
    assert [bucket.reserve(0.0) for _ in range(4)] == [0.0, 0.0, 0.5, 1.0]
    # after 2 s the bucket has earned 4 tokens, 2 were owed: back to full minus nothing owed
    assert bucket.reserve(3.0) == 0.0


# ------------------------------------------------------------------ tokens

KEYS = tokens.ReplyKeys.parse(["k1:first-secret-0123456789abcdef"])
KEYS_ROTATED = tokens.ReplyKeys.parse(
    ["k2:second-secret-0123456789abcdef", "k1:first-secret-0123456789abcdef"]
)
DAY_MS = 86_400_000


@pytest.mark.parametrize(
    ("conversation_id", "user_id", "mode"),
    [
        ("c1", "u1", tokens.MODE_INLINE),
        ("conv-1", "u-bob", tokens.MODE_INLINE),
        (
            "3f2c4a1e-9b7d-4c1a-8e2f-0a1b2c3d4e5f",
            "7d9e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a",
            tokens.MODE_REFERENCE,
        ),
        ("ü" * 200, "user@with.dots", tokens.MODE_REFERENCE),
    ],
)
def test_token_round_trip_and_length(conversation_id: str, user_id: str, mode: int) -> None:
    token = tokens.make_reply_token(conversation_id, user_id, keys=KEYS, now_ms=T0_MS, ttl_s=86400)
    local_part = "reply+" + token
    assert len(local_part) <= 64
    assert token == token.lower() and all(c.isalnum() or c == "-" for c in token)
    refs = {tokens.conversation_ref(conversation_id, user_id): (conversation_id, user_id)}
    got = tokens.verify_reply_token(
        local_part.upper(), keys=KEYS, now_ms=T0_MS + 1000, resolve=refs.get
    )
    assert got == (conversation_id, user_id)
    payload = tokens._unb32(token.partition("-")[2])
    assert payload[0] == mode


def test_reference_token_needs_resolver() -> None:
    long_c, long_u = "c" * 40, "u" * 40
    token = tokens.make_reply_token(long_c, long_u, keys=KEYS, now_ms=T0_MS, ttl_s=60)
    with pytest.raises(tokens.UnresolvedTokenError):
        tokens.verify_reply_token(token, keys=KEYS, now_ms=T0_MS)
    # a reference that resolves to *other* ids fails the MAC
    with pytest.raises(tokens.ForgedTokenError):
        tokens.verify_reply_token(
            token, keys=KEYS, now_ms=T0_MS, resolve=lambda ref: (long_c, "other")
        )


def test_token_expiry() -> None:
    token = tokens.make_reply_token("c1", "u1", keys=KEYS, now_ms=T0_MS, ttl_s=86400)
    assert tokens.verify_reply_token(token, keys=KEYS, now_ms=T0_MS + DAY_MS) == ("c1", "u1")
    with pytest.raises(tokens.ExpiredTokenError):
        tokens.verify_reply_token(token, keys=KEYS, now_ms=T0_MS + DAY_MS + 61_000)


def test_token_forgery_is_detected_for_every_flipped_character() -> None:
    token = tokens.make_reply_token("c1", "u1", keys=KEYS, now_ms=T0_MS, ttl_s=86400)
    kid, _, body = token.partition("-")
    for i in range(len(body)):
        flipped = body[:i] + ("a" if body[i] != "a" else "b") + body[i + 1 :]
        with pytest.raises(tokens.ReplyTokenError):
            tokens.verify_reply_token(f"{kid}-{flipped}", keys=KEYS, now_ms=T0_MS)
    other = tokens.ReplyKeys.parse(["k1:an-attacker-guessed-secret-xx"])
    forged = tokens.make_reply_token("c1", "u-eve", keys=other, now_ms=T0_MS, ttl_s=86400)
    with pytest.raises(tokens.ForgedTokenError):
        tokens.verify_reply_token(forged, keys=KEYS, now_ms=T0_MS)


@pytest.mark.parametrize(
    "bad", ["", "k1", "k1-", "nokid", "k1-!!!!", "toolongkid-abc", "k1-" + "a" * 80]
)
def test_malformed_tokens(bad: str) -> None:
    with pytest.raises(tokens.ReplyTokenError):
        tokens.verify_reply_token(bad, keys=KEYS, now_ms=T0_MS)


def test_key_rotation() -> None:
    old = tokens.make_reply_token("c1", "u1", keys=KEYS, now_ms=T0_MS, ttl_s=86400)
    new = tokens.make_reply_token("c1", "u1", keys=KEYS_ROTATED, now_ms=T0_MS, ttl_s=86400)
    assert new.startswith("k2-") and old.startswith("k1-")
    for t in (old, new):  # during rotation both verify
        assert tokens.verify_reply_token(t, keys=KEYS_ROTATED, now_ms=T0_MS) == ("c1", "u1")
    retired = tokens.ReplyKeys.parse(["k2:second-secret-0123456789abcdef"])
    with pytest.raises(tokens.UnknownKeyError):
        tokens.verify_reply_token(old, keys=retired, now_ms=T0_MS)


@pytest.mark.parametrize("pairs", [[], ["nocolon"], ["k1:short"], ["BAD-ID:0123456789abcdef0"]])
def test_bad_key_config_is_refused(pairs: list[str]) -> None:
    with pytest.raises(ValueError):
        tokens.ReplyKeys.parse(pairs)


# ------------------------------------------------------------------ email


def _email(
    delivery: dict[str, object],
    app: dict[str, object] | None = None,
    templates: render.Templates | None = None,
) -> render.EmailContent:
    return render.build_email(delivery, app, "k1-tok", T0_MS, templates=templates)


def test_email_escapes_html_and_carries_links_and_threading() -> None:
    app = {
        "app_url_template": "https://chat.example/c/{conversation_id}",
        "unsubscribe_url_template": "https://chat.example/unsub/{conversation_id}/{user_id}",
        "email_from": "Acme Chat <chat@acme.example>",
        "reply_domain": "in.acme.example",
    }
    content = _email(make_delivery("email", n=2), app)
    assert "&lt;script&gt;" in content.html and "<script>" not in content.html
    assert "<script>alert(1)</script>" in content.text  # plain text is not escaped
    assert (
        "https://chat.example/c/conv-1" in content.html
        and "https://chat.example/c/conv-1" in content.text
    )
    assert content.reply_to == "reply+k1-tok@in.acme.example"
    assert content.headers["List-Unsubscribe"] == "<https://chat.example/unsub/conv-1/u-bob>"
    assert content.headers["Message-ID"].endswith("@acme.example>")
    assert content.headers["References"] == content.headers["In-Reply-To"]
    assert "Alice" in content.text and content.subject == "Launch plan"
    mime = message_from_bytes(render.to_mime(content).as_bytes(), policy=policy.default)
    assert mime.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in mime.iter_parts()] == ["text/plain", "text/html"]  # type: ignore[attr-defined]


def test_email_threading_ids() -> None:
    first = _email(make_delivery("email", n=1))
    second = _email(make_delivery("email", n=2))
    other_recipient = _email(make_delivery("email", n=1, recipient_id="u-carol"))
    assert first.headers["References"] == second.headers["References"]  # one thread
    assert first.message_id != second.message_id  # per delivery
    assert first.message_id == _email(make_delivery("email", n=1)).message_id  # deterministic
    assert other_recipient.headers["References"] != first.headers["References"]
    assert first.subject == second.subject  # Gmail also needs a stable subject


def test_email_defaults_and_locale_override(tmp_path: Path) -> None:
    (tmp_path / "de" / "email").mkdir(parents=True)
    (tmp_path / "de" / "email" / "subject.txt.j2").write_text("Neue Nachrichten: {{ subject }}")
    templates = render.Templates(tmp_path)
    german = _email(make_delivery("email", locale="de-AT"), templates=templates)
    english = _email(make_delivery("email"), templates=templates)
    assert german.subject == "Neue Nachrichten: Launch plan"
    assert english.subject == "Launch plan"
    assert "Open the conversation" in german.html  # body falls back to the shipped template
    assert (
        _email(make_delivery("email", subject=None)).subject == "New messages in your conversation"
    )
    unknown = _email(
        make_delivery("email"), {"app_url_template": "https://x/{nope}/{conversation_id}"}
    )
    # a template typo does not crash: the refused template falls back to the default
    assert "http://localhost:8000/conversations/conv-1" in unknown.text
    assert "{nope}" not in unknown.text


# ------------------------------------------------------------------ SMS


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", "GSM-7", 0, 1),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension chars count double
        ("€" * 81, "GSM-7", 162, 2),
        ("a" * 152 + "€" + "a" * 10, "GSM-7", 164, 2),
        ("a" * 152 + "€" + "a" * 152, "GSM-7", 306, 3),
        ("é" * 160, "GSM-7", 160, 1),  # é is in the basic table
        ("ê", "UCS-2", 1, 1),
        ("ы" * 70, "UCS-2", 70, 1),
        ("ы" * 71, "UCS-2", 71, 2),
        ("ы" * 134, "UCS-2", 134, 2),
        ("ы" * 135, "UCS-2", 135, 3),
        ("😀" * 35, "UCS-2", 70, 1),  # astral: 2 code units each
        ("ы" * 66 + "😀" + "ы" * 66, "UCS-2", 134, 3),  # surrogate pair not split: 66|2+65|1
    ],
)
def test_sms_segments(text: str, encoding: str, units: int, segments: int) -> None:
    assert render.count_sms_segments(text) == render.SegmentCount(encoding, units, segments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "max_segments"),
    [("word " * 200, 1), ("word " * 200, 2), ("слово " * 100, 2), ("short", 1)],
)
def test_sms_truncates_keeping_link_and_more(text: str, max_segments: int) -> None:
    delivery = make_delivery("sms", n=3, texts=[text, "two", "three"])
    sms = render.build_sms(
        delivery,
        {"app_url_template": "https://c.example/{conversation_id}"},
        max_segments=max_segments,
    )
    assert sms.segments <= max_segments
    assert render.count_sms_segments(sms.body).segments == sms.segments
    assert sms.body.startswith("Alice: ")
    assert sms.body.endswith(" (+2 more)\nhttps://c.example/conv-1")
    if len(text) > 100:
        assert ("..." in sms.body) or ("…" in sms.body)


# ------------------------------------------------------------------ push / browser


def test_push_and_browser_payloads_collapse_per_conversation() -> None:
    push = render.build_push(make_delivery("push", n=3), None)
    assert push.title == "Launch plan" and push.body.startswith("Alice: message 0")
    assert push.body.endswith("(+2 more)")
    assert push.collapse_key == "conv-1" and push.tokens == ["tok-a", "tok-b"]
    assert all(isinstance(v, str) for v in push.data.values())
    long_id = "x" * 100
    assert len(render.collapse_id(long_id)) <= 64
    assert render.collapse_id(long_id) == render.collapse_id(long_id)
    sub = {"endpoint": "https://push.example/1", "p256dh": "k", "auth": "a"}
    browser = render.build_browser(
        make_delivery("browser", browser_subscriptions=[sub]), None, ttl_s=120
    )
    assert set(browser.payload) == {"title", "body", "url", "tag"}
    assert browser.ttl_s == 120 and len(browser.topic) <= 32
    assert browser.payload["tag"] == push.collapse_key
    assert browser.payload["url"].endswith("/conversations/conv-1")
