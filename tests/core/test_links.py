"""Link templates: what is refused (and why), and how values are substituted."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.core.links import (
    LINK_MAX_CHARS,
    LINK_TEMPLATE_MAX_CHARS,
    LinkTemplateError,
    LinkTooLongError,
    expand_link,
    link_origin,
    validate_link_template,
)

HOSTILE_ID = 'c1\r\nBcc: evil@attacker.example"><img src=x onerror=alert(1)>'


@pytest.mark.parametrize(
    "template",
    [
        "http://localhost:8000/conversations/{conversation_id}",
        "http://localhost:8000/unsubscribe?conversation={conversation_id}&user={user_id}",
        "http://localhost:8000/settings/notifications?user={user_id}",  # the schema default
        "https://chat.example/c/{conversation_id}#r={recipient_id}",
        "HTTPS://Chat.Example:8443/c/%7Ba%7D/{conversation_id}",
        "https://chat.example/",
        "https://chat.example",
        "https://[::1]:8000/c/{conversation_id}",
    ],
)
def test_valid_templates_are_returned_unchanged(template: str) -> None:
    assert validate_link_template(template) == template


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("javascript:alert({conversation_id})", "got scheme 'javascript'"),
        ("JavaScript:alert(1)", "got scheme 'javascript'"),
        ("data:text/html,<b>x</b>", "cannot carry literally"),
        ("data:text/html,x", "got scheme 'data'"),
        ("ftp://chat.example/{conversation_id}", "got scheme 'ftp'"),
        ("/conversations/{conversation_id}", "got no scheme"),
        ("chat.example/c/{conversation_id}", "got no scheme"),
        ("//chat.example/c/{conversation_id}", "got no scheme"),
        ("{conversation_id}https://chat.example/", "got no scheme"),
        ("https:///c/{conversation_id}", "has no host"),
        ("https://{conversation_id}.evil.example/", "not in the host"),
        ("https://chat.example@evil.example/", "user information"),
        ("https://chat.example:99999/", "invalid port"),
        ("https://x/{conversation_id.__class__.__mro__}", "attribute access"),
        ("https://x/{conversation_id:>200000000}", "a format spec"),
        ("https://x/{conversation_id!r}", "a conversion"),
        ("https://x/{conversation_id[0]}", "index access"),
        ("https://x/{x!r}", "not a plain name"),
        ("https://x/{0}", "not a plain name"),
        ("https://x/{}", "not a plain name"),
        ("https://x/{nope}", "unknown placeholder '{nope}'"),
        ("{", "unbalanced '{' at position 0"),
        ("https://x/{", "unbalanced '{' at position 10"),
        ("https://x/c}", "unbalanced '}' at position 11"),
        ("https://x/{{conversation_id}}", "unbalanced '{' at position 10"),
        ("https://x/a b", "contains ' '"),
        ("https://x/\r\nBcc: evil@x", "contains '\\r'"),
        ('https://x/"><img src=x>', "contains '\"'"),
        ("https://x/\\evil", "contains '\\\\'"),
        ("https://x/é", "contains '\\xe9'"),
        ("https://x/%zz", "does not start a %XX escape"),
        ("", "empty"),
        ("https://x/" + "a" * LINK_TEMPLATE_MAX_CHARS, f"more than {LINK_TEMPLATE_MAX_CHARS}"),
    ],
)
def test_invalid_templates_are_refused_with_the_reason(template: str, reason: str) -> None:
    started = time.perf_counter()
    with pytest.raises(LinkTemplateError) as refused:
        validate_link_template(template)
    assert reason in str(refused.value)
    assert time.perf_counter() - started < 0.05  # refusing is cheap, whatever the spec says
    with pytest.raises(LinkTemplateError):  # expanding refuses the same template
        expand_link(template, conversation_id="c1", user_id="u1", recipient_id="u1")


def test_expand_url_encodes_every_value_as_one_component() -> None:
    link = expand_link(
        "https://chat.example/c/{conversation_id}?user={user_id}&again={recipient_id}",
        conversation_id=HOSTILE_ID,
        user_id="a/b?c#d&e=f",
        recipient_id="ü 😀",
    )
    assert link == (
        "https://chat.example/c/c1%0D%0ABcc%3A%20evil%40attacker.example%22%3E%3Cimg%20src"
        "%3Dx%20onerror%3Dalert%281%29%3E?user=a%2Fb%3Fc%23d%26e%3Df&again=%C3%BC%20%F0%9F%98%80"
    )
    parts = urlsplit(link)
    assert parts.netloc == "chat.example" and parts.scheme == "https"
    assert unquote(parts.path.rpartition("/")[2]) == HOSTILE_ID  # round-trips exactly
    assert parse_qs(parts.query) == {"user": ["a/b?c#d&e=f"], "again": ["ü 😀"]}


def test_expand_is_plain_replacement_not_format() -> None:
    # a value that looks like a placeholder or a format field is just text
    assert (
        expand_link(
            "https://x/{conversation_id}/{user_id}", conversation_id="{user_id}", user_id="u"
        )
        == "https://x/%7Buser_id%7D/u"
    )


def test_expand_needs_a_value_for_every_placeholder() -> None:
    with pytest.raises(LinkTemplateError, match=r"no value for placeholder \{user_id\}"):
        expand_link("https://x/{user_id}", conversation_id="c1")


@pytest.mark.parametrize("value", ["a" * (LINK_MAX_CHARS + 1), "é" * 400, "x" * 5_000_000])
def test_expand_bounds_the_link_length(value: str) -> None:
    started = time.perf_counter()
    with pytest.raises(LinkTooLongError):
        expand_link("https://x/{conversation_id}", conversation_id=value)
    assert time.perf_counter() - started < 0.05


def test_link_origin_is_the_templates_site() -> None:
    assert (
        link_origin("https://Chat.example:8443/c/{conversation_id}") == "https://Chat.example:8443/"
    )


@given(
    conversation_id=st.text(max_size=200),
    user_id=st.text(max_size=200),
)
def test_expanded_links_stay_on_the_host_and_round_trip(conversation_id: str, user_id: str) -> None:
    link = expand_link(
        "https://chat.example/c/{conversation_id}?u={user_id}",
        conversation_id=conversation_id,
        user_id=user_id,
    )
    parts = urlsplit(link)
    assert (parts.scheme, parts.netloc, parts.fragment) == ("https", "chat.example", "")
    assert link.isascii() and all(c.isprintable() and not c.isspace() for c in link)
    assert not set(link) & set('"<>\\{}')
    assert unquote(parts.path.removeprefix("/c/")) == conversation_id
