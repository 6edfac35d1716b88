"""Link templates: validated when a setting arrives, expanded safely when rendering.

A link template comes from a record (``chat.settings``: ``app_url_template``,
``unsubscribe_url_template``), so it is untrusted text that ends up in email bodies,
``List-Unsubscribe`` headers, SMS, push and Web Push payloads. It was a Python format
string; ``str.format`` gives the template author attribute and index access
(``{conversation_id.__class__.__mro__}``), padding that costs memory and time
(``{conversation_id:>200000000}``) and exceptions (a lone ``{``). So:

- :func:`validate_link_template` accepts only an absolute ``http``/``https`` URL of at
  most :data:`LINK_TEMPLATE_MAX_CHARS` characters, made of URL characters (RFC 3986
  unreserved, reserved and ``%``), with placeholders only from
  :data:`LINK_PLACEHOLDERS`, written bare (``{conversation_id}``: no format spec,
  conversion, attribute or index), and only in the path, query or fragment (an id
  never chooses the host). It raises :class:`LinkTemplateError` with the reason.
- :func:`expand_link` substitutes by plain token replacement (never ``str.format``)
  with each value percent-encoded as a whole (``quote(value, safe="")``: ``/``, ``?``,
  ``#``, ``"``, ``<``, ``>``, CR, LF all become ``%XX``), so a value can neither leave
  its path segment or query value nor break out of HTML attributes or ``<...>``
  headers. The result is re-checked: still ``http``/``https`` on the template's host,
  and at most :data:`LINK_MAX_CHARS` characters (else :class:`LinkTooLongError`).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

LINK_TEMPLATE_MAX_CHARS = 2_000  # what a dashboard field needs, with room to spare
LINK_MAX_CHARS = 2_048  # expanded link: the classic safe URL length for browsers and mail
LINK_SCHEMES = frozenset({"http", "https"})
# user_id and recipient_id name the same value (the notified user); both are accepted
# because templates in the wild use either.
LINK_PLACEHOLDERS = frozenset({"conversation_id", "user_id", "recipient_id"})

# RFC 3986 characters a URL may carry literally (unreserved, reserved, '%').
_URL_CHAR = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ABSOLUTE = re.compile(r"(?i)https?://")
_TOKEN = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"[a-z_]+")


class LinkError(ValueError):
    """A link that cannot be built safely."""


class LinkTemplateError(LinkError):
    """A link template refused; the message says why (it goes to the dead-letter record)."""


class LinkTooLongError(LinkError):
    """The expanded link is longer than :data:`LINK_MAX_CHARS`."""


def _describe(text: str, limit: int = 60) -> str:
    shown = text if len(text) <= limit else text[:limit] + "…"
    return ascii(shown)


def validate_link_template(template: str) -> str:
    """Return ``template`` if it is a safe link template, else raise :class:`LinkTemplateError`.

    Linear in the length of the template, which is checked first, so a hostile value
    costs nothing.
    """
    if not isinstance(template, str):
        raise LinkTemplateError(f"link template must be a string, got {type(template).__name__}")
    if not template:
        raise LinkTemplateError("link template is empty")
    if len(template) > LINK_TEMPLATE_MAX_CHARS:
        raise LinkTemplateError(
            f"link template is {len(template)} characters, more than {LINK_TEMPLATE_MAX_CHARS}"
        )
    literals: list[tuple[int, str]] = []  # (offset, text) between placeholders
    position = 0
    for match in _TOKEN.finditer(template):
        literals.append((position, template[position : match.start()]))
        _check_placeholder(match.group(1))
        position = match.end()
    literals.append((position, template[position:]))
    for offset, part in literals:
        for i, char in enumerate(part):
            if char in "{}":
                raise LinkTemplateError(
                    f"unbalanced {char!r} at position {offset + i}: placeholders are "
                    f"{_placeholder_list()} and a URL has no literal braces"
                )
            if not _URL_CHAR.fullmatch(char):
                raise LinkTemplateError(
                    f"link template contains {ascii(char)} at position {offset + i}, which "
                    "a URL cannot carry literally (percent-encode it)"
                )
        for bad in _BAD_PERCENT.finditer(part):
            raise LinkTemplateError(
                f"'%' at position {offset + bad.start()} does not start a %XX escape"
            )
    prefix = _ABSOLUTE.match(template)
    if prefix is None:
        scheme = urlsplit(template).scheme.lower()
        shown = f"scheme {scheme!r}" if scheme else "no scheme"
        raise LinkTemplateError(
            f"link template must be an absolute http or https URL, got {shown} "
            f"in {_describe(template)}"
        )
    authority_end = len(template)
    for char in "/?#":
        found = template.find(char, prefix.end())
        if found != -1:
            authority_end = min(authority_end, found)
    authority = template[prefix.end() : authority_end]
    if "{" in authority:
        raise LinkTemplateError(
            "placeholders may appear only in the path, query or fragment, not in the host"
        )
    if "@" in authority:
        raise LinkTemplateError("link template must not carry user information (user@host)")
    parts = urlsplit(template[:authority_end])
    if not parts.hostname:
        raise LinkTemplateError(f"link template has no host: {_describe(template)}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise LinkTemplateError("link template has an invalid port") from None
    return template


def _check_placeholder(inner: str) -> None:
    if inner in LINK_PLACEHOLDERS:
        return
    token = _describe("{" + inner + "}")
    name = re.match(r"[A-Za-z_][A-Za-z0-9_]*", inner)
    if name and name.group(0) in LINK_PLACEHOLDERS:
        rest = inner[name.end() :]
        kind = {
            ":": "a format spec",
            "!": "a conversion",
            ".": "attribute access",
            "[": "index access",
        }.get(rest[:1], "extra characters")
        raise LinkTemplateError(
            f"placeholder {token} has {kind}; write it bare, e.g. {{{name.group(0)}}}"
        )
    if not _NAME.fullmatch(inner):
        raise LinkTemplateError(
            f"placeholder {token} is not a plain name; known placeholders: {_placeholder_list()}"
        )
    raise LinkTemplateError(
        f"unknown placeholder {token}; known placeholders: {_placeholder_list()}"
    )


def _placeholder_list() -> str:
    return ", ".join("{" + name + "}" for name in sorted(LINK_PLACEHOLDERS))


def expand_link(template: str, **values: str) -> str:
    """The link of ``template`` with each placeholder replaced by its URL-encoded value.

    Raises :class:`LinkTemplateError` for an invalid template or a placeholder without
    a value, and :class:`LinkTooLongError` when the link would exceed
    :data:`LINK_MAX_CHARS` (checked before any long string is built).
    """
    validate_link_template(template)
    pieces: list[str] = []
    length = 0
    position = 0
    for match in _TOKEN.finditer(template):
        literal = template[position : match.start()]
        name = match.group(1)
        if name not in values:
            raise LinkTemplateError(f"no value for placeholder {{{name}}}")
        raw = str(values[name])
        # percent-encoding at most triples each UTF-8 byte (4 bytes a character)
        if len(raw) > LINK_MAX_CHARS:
            raise LinkTooLongError(f"a value for {{{name}}} is {len(raw)} characters long")
        encoded = quote(raw.encode("utf-8", "surrogatepass"), safe="")
        pieces += (literal, encoded)
        length += len(literal) + len(encoded)
        if length > LINK_MAX_CHARS:
            raise LinkTooLongError(f"expanded link is longer than {LINK_MAX_CHARS} characters")
        position = match.end()
    pieces.append(template[position:])
    link = "".join(pieces)
    if len(link) > LINK_MAX_CHARS:
        raise LinkTooLongError(f"expanded link is longer than {LINK_MAX_CHARS} characters")
    # Belt and braces: encoded values cannot change these, but a link that is not an
    # http(s) URL on the template's host must never leave this function.
    got, want = urlsplit(link), urlsplit(_TOKEN.sub("", template))
    if got.scheme.lower() not in LINK_SCHEMES or got.netloc != want.netloc:
        raise LinkTemplateError("expanded link is not an http or https URL on the template's host")
    return link


def link_origin(template: str) -> str:
    """``scheme://host[:port]/`` of a valid template: a short link to the same site,
    used when the full link would be too long."""
    parts = urlsplit(_TOKEN.sub("", validate_link_template(template)))
    return f"{parts.scheme.lower()}://{parts.netloc}/"


__all__ = [
    "LINK_MAX_CHARS",
    "LINK_PLACEHOLDERS",
    "LINK_SCHEMES",
    "LINK_TEMPLATE_MAX_CHARS",
    "LinkError",
    "LinkTemplateError",
    "LinkTooLongError",
    "expand_link",
    "link_origin",
    "validate_link_template",
]
