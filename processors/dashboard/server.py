"""``chat-notifier dashboard [--host 127.0.0.1] [--port N]``: pages, token, CSRF.

Access rules (decided here):

* **Every page needs the admin token** (``DASHBOARD__TOKEN``): a login form exchanges it
  for a session cookie (random id, ``HttpOnly``, ``SameSite=Strict``, 12 h), or a
  script sends ``Authorization: Bearer <token>``. Without either: 401 (a browser asking
  for a page is sent to the login form instead). ``/static/`` (the stylesheet and the
  small script) and ``/login`` are the only open paths.
* **No token configured**: on a loopback address one is generated at start and printed
  once with the URL; on any other address the dashboard refuses to start (exit 2).
* **CSRF**: every form carries the session's CSRF token (the login form a double-submit
  cookie); a POST whose token is missing or wrong is refused with 403 before any
  handler runs. A bearer-token POST needs none: a browser never adds that header on
  its own, so it cannot be forged cross-site.
* **Escaping**: Jinja2 autoescape on every template; the Content-Security-Policy allows
  only this origin's script and style, so even a missed escape could not run inline
  script.
* **Validation** is the libraries' own (:func:`processors.admin.role_record`,
  :func:`processors.admin.settings_record`), so the page refuses what every reader
  would refuse, with the same one-line reason.

Exit codes: 0 stopped, 2 refused to start (no token on a non-loopback host, port in
use), 3 no broker configured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import ipaddress
import logging
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from processors import admin
from processors import topics as t
from processors.core.decisions import Reason
from processors.core.settings import MAX_SECONDS, SETTABLE
from processors.core.whatif import rows as whatif_rows
from processors.dashboard import chart
from processors.dashboard.feed import Activity, tail
from processors.diagnosis import WHY, mask_outcome_address
from processors.settings import Settings

log = logging.getLogger("processors.dashboard")

SESSION_COOKIE = "cn_session"
LOGIN_CSRF_COOKIE = "cn_login_csrf"
SESSION_TTL_S = 12 * 3600
MAX_SESSIONS = 1_000
MAX_BODY_BYTES = 64 * 1024  # the largest form is the settings one (a 2 000-char link)
MAX_FILTER_CHARS = 200
FEED_ROWS = 200  # rows on the Activity page; the live feed adds to them
OVERVIEW_HOURS = 24
WHATIF_DEFAULT_HOURS = 24
WHATIF_TIMEOUT_S = 120.0
SSE_KEEPALIVE_S = 15.0
EXIT_REFUSED = 2
EXIT_BROKER = 3

#: The settings form, in order, with the one-line explanation each field shows.
SETTINGS_FORM: tuple[tuple[str, str, str], ...] = (
    (
        "inactivity_seconds",
        "Period of inactivity (s)",
        "A batch of messages is notified once nobody has written or typed for this long "
        f"(more than 0, at most {MAX_SECONDS['inactivity_seconds']} s).",
    ),
    (
        "typing_ttl_seconds",
        "Typing TTL (s)",
        "A typing indicator not refreshed for this long counts as stopped "
        f"(at most {MAX_SECONDS['typing_ttl_seconds']} s).",
    ),
    (
        "max_batch_seconds",
        "Max batch (s)",
        "A batch is notified this long after its first message even if the conversation "
        f"never goes quiet (at least the period of inactivity, at most "
        f"{MAX_SECONDS['max_batch_seconds']} s).",
    ),
    (
        "presence_ttl_seconds",
        "Presence TTL (s)",
        "A session that sends no presence update for this long counts as offline "
        f"(at most {MAX_SECONDS['presence_ttl_seconds']} s).",
    ),
    (
        "app_url_template",
        "App link template",
        "The link in every notification: an http(s) URL; {conversation_id} and {user_id} "
        "are replaced (URL-encoded).",
    ),
)

OPEN_PATHS = ("/login", "/static/")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


@dataclass
class Session:
    csrf: str
    expires: float
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, text)


class Sessions:
    """Server-side sessions: the cookie holds only a random id (bounded, expiring)."""

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}

    def new(self) -> tuple[str, Session]:
        now = time.monotonic()
        for sid in [s for s, v in self._by_id.items() if v.expires < now]:
            del self._by_id[sid]
        while len(self._by_id) >= MAX_SESSIONS:
            del self._by_id[next(iter(self._by_id))]  # the oldest login goes first
        sid = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(32), now + SESSION_TTL_S)
        self._by_id[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        session = self._by_id.get(sid or "")
        if session is None or session.expires < time.monotonic():
            return None
        return session

    def drop(self, sid: str | None) -> None:
        self._by_id.pop(sid or "", None)


class Dashboard:
    """The state the handlers share: settings, token, sessions, templates, activity."""

    def __init__(self, settings: Settings, token: str) -> None:
        self.settings = settings
        self.token = token
        self.sessions = Sessions()
        self.activity = Activity()
        self.whatif_lock = asyncio.Lock()
        self.templates = Environment(
            loader=PackageLoader("processors", "templates/dashboard"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
        )
        self.templates.globals.update(
            CHANNELS=t.CHANNELS, WHY=WHY, when=when, words=decision_words, quote=quote
        )

    def token_ok(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self.token.encode())

    def render(
        self, request: web.Request, name: str, status: int = 200, **context: Any
    ) -> web.Response:
        session: Session | None = request.get("session")
        flash = list(session.flash) if session else []
        if session:
            session.flash.clear()
        html = self.templates.get_template(name).render(
            csrf=session.csrf if session else request.get("login_csrf", ""),
            path=request.path,
            flash=flash,
            signed_in=bool(request.get("authed")),
            **context,
        )
        return web.Response(text=html, status=status, content_type="text/html")


def when(ms: int | None) -> str:
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(int(ms) / 1000))


def decision_words(d: Mapping[str, Any]) -> str:
    """A decision in words: what was decided and why (the explain/diagnose wording)."""
    channel = d.get("channel")
    if d.get("outcome") == "send":
        return f"sent on {channel}"
    reason = d.get("reason") or ""
    words = WHY.get(reason, reason)
    hint = f" ({d['detail']})" if d.get("detail") else ""
    scope = f"{channel}: " if channel else ""
    return f"{scope}not notified: {words}{hint}"


# -- middlewares ----------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response, pages, redirects, refusals and the event stream alike."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")


def _wants_page(request: web.Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("Accept", "")


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    dash: Dashboard = request.app["dashboard"]
    if request.path.startswith(OPEN_PATHS):
        return await handler(request)
    session = dash.sessions.get(request.cookies.get(SESSION_COOKIE))
    bearer = request.headers.get("Authorization", "")
    by_header = bearer.startswith("Bearer ") and dash.token_ok(bearer[7:].strip())
    if session is None and not by_header:
        if _wants_page(request):
            target = request.path_qs
            raise web.HTTPSeeOther("/login?" + urlencode({"next": target}))
        raise web.HTTPUnauthorized(
            text="the dashboard needs the admin token: sign in at /login, or send "
            "'Authorization: Bearer <token>'\n",
            headers={"WWW-Authenticate": 'Bearer realm="chat-notifier dashboard"'},
        )
    request["authed"] = True
    if session is not None:
        request["session"] = session
    if request.method == "POST" and not by_header:
        form = await request.post()
        offered = form.get("csrf")
        assert session is not None
        if not isinstance(offered, str) or not hmac.compare_digest(
            offered.encode(), session.csrf.encode()
        ):
            raise web.HTTPForbidden(
                text="refused: the form's CSRF token is missing or wrong (reload the page)\n"
            )
    return await handler(request)


# -- login ------------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    """Only a local path: never a redirect to another site (``//host``, ``https://``)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _signed_in(request: web.Request, target: str) -> web.HTTPSeeOther:
    dash: Dashboard = request.app["dashboard"]
    sid, _ = dash.sessions.new()
    response = web.HTTPSeeOther(_safe_next(target))
    response.set_cookie(
        SESSION_COOKIE,
        sid,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        max_age=SESSION_TTL_S,
        path="/",
    )
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


async def login_page(request: web.Request) -> web.StreamResponse:
    dash: Dashboard = request.app["dashboard"]
    offered = request.query.get("token")
    if offered is not None:  # the link `chat-notifier run` prints
        if dash.token_ok(offered):
            raise _signed_in(request, request.query.get("next", "/"))
        await asyncio.sleep(0.5)  # a slow wrong guess
        return _login_form(request, "that token is not the admin token", 401)
    return _login_form(request)


def _login_form(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    dash: Dashboard = request.app["dashboard"]
    double = secrets.token_urlsafe(24)
    request["login_csrf"] = double
    response = dash.render(
        request,
        "login.html",
        status=status,
        error=error,
        next=_safe_next(request.query.get("next")),
    )
    response.set_cookie(LOGIN_CSRF_COOKIE, double, httponly=True, samesite="Strict", path="/login")
    return response


async def login_submit(request: web.Request) -> web.StreamResponse:
    dash: Dashboard = request.app["dashboard"]
    form = await request.post()
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    offered = form.get("csrf")
    if not cookie or not isinstance(offered, str) or not hmac.compare_digest(offered, cookie):
        raise web.HTTPForbidden(
            text="refused: the form's CSRF token is missing or wrong (reload the page)\n"
        )
    token = form.get("token")
    if isinstance(token, str) and dash.token_ok(token.strip()):
        nxt = form.get("next")
        raise _signed_in(request, nxt if isinstance(nxt, str) else "/")
    await asyncio.sleep(0.5)
    return _login_form(request, "that token is not the admin token", 401)


async def logout(request: web.Request) -> web.StreamResponse:
    dash: Dashboard = request.app["dashboard"]
    dash.sessions.drop(request.cookies.get(SESSION_COOKIE))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


# -- pages ------------------------------------------------------------------------------


def _flash(request: web.Request, kind: str, text: str) -> None:
    session: Session | None = request.get("session")
    if session is not None:
        session.flash.append((kind, text))


def _broker_trouble(request: web.Request, exc: admin.AdminError) -> web.Response:
    dash: Dashboard = request.app["dashboard"]
    return dash.render(request, "error.html", status=503, message=str(exc))


async def overview(request: web.Request) -> web.StreamResponse:
    dash: Dashboard = request.app["dashboard"]
    hours = dash.activity.hourly(now_ms(), OVERVIEW_HOURS)
    sends: Counter[str] = Counter()
    skips: Counter[str] = Counter()
    for _, counts in hours:
        for (kind, key), n in counts.items():
            (sends if kind == "send" else skips)[key] += n
    return dash.render(
        request,
        "overview.html",
        hours=OVERVIEW_HOURS,
        sends=sends,
        skips=skips,
        sends_chart=chart.sends_per_hour(hours),
        skips_chart=chart.skips_by_reason(skips),
    )


async def roles_page(request: web.Request) -> web.StreamResponse:
    dash: Dashboard = request.app["dashboard"]
    try:
        state = (await admin.read_config(dash.settings)).state
    except admin.AdminError as exc:
        return _broker_trouble(request, exc)
    roles = [state.roles[name] for name in sorted(state.roles)]
    return dash.render(request, "roles.html", roles=roles, draft=None, error=None)


def _channels(form: Mapping[str, Any]) -> dict[str, bool]:
    return {channel: form.get(channel) == "on" for channel in t.CHANNELS}


async def roles_submit(request: web.Request) -> web.StreamResponse:
    """Create (``action=create``), save a row's toggles (``save``) or delete (``delete``)."""
    dash: Dashboard = request.app["dashboard"]
    form = await request.post()
    action = form.get("action")
    name = form.get("name")
    if not isinstance(name, str) or action not in ("create", "save", "delete"):
        raise web.HTTPBadRequest(text="a role form needs a name and an action\n")
    try:
        if action == "delete":
            await admin.delete_role(dash.settings, name)
            _flash(request, "ok", f"role {name!r} deleted: users with it now get UNKNOWN_ROLE")
        else:
            if action == "create":
                state = (await admin.read_config(dash.settings)).state
                if name in state.roles:
                    raise admin.AdminError(
                        f"role {name!r} exists; change its channels in its row below"
                    )
            change = await admin.set_role(dash.settings, name, _channels(form))
            on = [c for c in t.CHANNELS if change.role[c]]
            verb = "created" if change.previous is None else "saved"
            _flash(
                request,
                "ok",
                f"role {name!r} {verb}: {', '.join(on) if on else 'no channel'} on "
                "(running workers apply it to the next batch)",
            )
    except admin.AdminError as exc:
        if exc.exit_code == admin.EXIT_BROKER:
            return _broker_trouble(request, exc)
        try:
            state = (await admin.read_config(dash.settings)).state
        except admin.AdminError as again:
            return _broker_trouble(request, again)
        roles = [state.roles[n] for n in sorted(state.roles)]
        draft = {"name": name, **_channels(form)} if action == "create" else None
        return dash.render(
            request, "roles.html", status=400, roles=roles, draft=draft, error=str(exc)
        )
    raise web.HTTPSeeOther("/roles")


async def _settings_in_force(dash: Dashboard) -> dict[str, Any]:
    return admin.current_settings((await admin.read_config(dash.settings)).state)


async def settings_page(request: web.Request) -> web.StreamResponse:
    dash: Dashboard = request.app["dashboard"]
    try:
        current = await _settings_in_force(dash)
    except admin.AdminError as exc:
        return _broker_trouble(request, exc)
    return _settings_form(request, current, current)


def _settings_form(
    request: web.Request,
    current: Mapping[str, Any],
    values: Mapping[str, Any],
    *,
    status: int = 200,
    error: str | None = None,
    comparison: Mapping[str, Any] | None = None,
    hours: float = WHATIF_DEFAULT_HOURS,
) -> web.Response:
    dash: Dashboard = request.app["dashboard"]
    return dash.render(
        request,
        "settings.html",
        status=status,
        fields=SETTINGS_FORM,
        current=current,
        values=values,
        error=error,
        comparison=comparison,
        comparison_rows=whatif_rows(comparison) if comparison else [],
        hours=hours,
    )


async def settings_submit(request: web.Request) -> web.StreamResponse:
    """``action=save`` writes the settings; ``action=compare`` runs the what-if first."""
    dash: Dashboard = request.app["dashboard"]
    form = await request.post()
    values = {name: str(form.get(name, "")).strip() for name, _, _ in SETTINGS_FORM}
    try:
        current = await _settings_in_force(dash)
    except admin.AdminError as exc:
        return _broker_trouble(request, exc)
    hours_text = str(form.get("hours", WHATIF_DEFAULT_HOURS)).strip()
    try:
        changes = admin.parse_assignments(f"{name}={value}" for name, value in values.items())
        admin.settings_record(current, changes, now_ms())  # every reader's rules, now
        hours = float(hours_text)
    except admin.AdminError as exc:
        return _settings_form(request, current, values, status=400, error=str(exc))
    except ValueError:
        return _settings_form(
            request,
            current,
            values,
            status=400,
            error=f"hours must be a number, got {hours_text!r}",
        )
    if form.get("action") == "compare":
        return await _compare(request, current, values, changes, hours)
    try:
        change = await admin.set_settings(dash.settings, changes)
    except admin.AdminError as exc:
        if exc.exit_code == admin.EXIT_BROKER:
            return _broker_trouble(request, exc)
        return _settings_form(request, current, values, status=400, error=str(exc))
    changed = [
        f"{name} {change.previous[name]!s} → {change.settings[name]!s}"
        for name in admin.SETTINGS_FIELDS
        if change.previous[name] != change.settings[name]
    ]
    _flash(
        request,
        "ok",
        "settings saved: "
        + ("; ".join(changed) if changed else "nothing changed")
        + " (running workers apply them without a restart)",
    )
    raise web.HTTPSeeOther("/settings")


async def _compare(
    request: web.Request,
    current: Mapping[str, Any],
    values: Mapping[str, Any],
    changes: Mapping[str, Any],
    hours: float,
) -> web.Response:
    from processors.dashboard.whatif import WhatIfTooBig, compare_recent

    dash: Dashboard = request.app["dashboard"]
    overrides = {n: changes[n] for n in SETTABLE if n in changes and changes[n] != current[n]}
    if dash.whatif_lock.locked():
        return _settings_form(
            request,
            current,
            values,
            status=429,
            hours=hours,
            error="a comparison is already running; try again in a moment",
        )
    async with dash.whatif_lock:
        try:
            comparison = await asyncio.wait_for(
                asyncio.to_thread(compare_recent, dash.settings, hours, overrides, now_ms()),
                WHATIF_TIMEOUT_S,
            )
        except (WhatIfTooBig, ValueError) as exc:
            return _settings_form(request, current, values, status=400, error=str(exc), hours=hours)
        except TimeoutError:
            return _settings_form(
                request,
                current,
                values,
                status=503,
                hours=hours,
                error=f"the comparison took longer than {WHATIF_TIMEOUT_S:g} s; compare fewer hours",
            )
        except Exception as exc:  # noqa: BLE001 - the broker is away: one line on the page
            return _settings_form(
                request,
                current,
                values,
                status=503,
                hours=hours,
                error=f"could not read recent traffic: {type(exc).__name__}",
            )
    return _settings_form(request, current, values, comparison=comparison, hours=hours)


async def users_page(request: web.Request) -> web.StreamResponse:
    from processors import diagnose

    dash: Dashboard = request.app["dashboard"]
    user = request.query.get("user", "").strip()[:MAX_FILTER_CHARS]
    conversation = request.query.get("conversation", "").strip()[:MAX_FILTER_CHARS] or None
    report = None
    if user:
        args = argparse.Namespace(user=user, conversation=conversation, since_hours=24.0, last=20)
        try:
            report = await diagnose.gather(args, dash.settings, now_ms())
        except admin.AdminError as exc:
            return _broker_trouble(request, exc)
    return dash.render(
        request, "users.html", user=user, conversation=conversation or "", report=report
    )


@dataclass(frozen=True)
class Filters:
    user: str = ""
    conversation: str = ""
    channel: str = ""
    outcome: str = ""
    reason: str = ""

    def match(self, d: Mapping[str, Any]) -> bool:
        return (
            (not self.user or d.get("recipient_id") == self.user)
            and (not self.conversation or d.get("conversation_id") == self.conversation)
            and (not self.channel or d.get("channel") == self.channel)
            and (not self.outcome or d.get("outcome") == self.outcome)
            and (not self.reason or d.get("reason") == self.reason)
        )

    def query(self) -> str:
        return urlencode({k: v for k, v in vars(self).items() if v})


REASONS = tuple(r.value for r in Reason)


def _filters(request: web.Request) -> tuple[Filters, str | None]:
    q = {k: request.query.get(k, "").strip()[:MAX_FILTER_CHARS] for k in vars(Filters())}
    if q["channel"] and q["channel"] not in t.CHANNELS:
        return Filters(), f"unknown channel {q['channel']!r}; one of {', '.join(t.CHANNELS)}"
    if q["outcome"] and q["outcome"] not in ("send", "skip"):
        return Filters(), f"unknown outcome {q['outcome']!r}; send or skip"
    if q["reason"] and q["reason"] not in REASONS:
        return Filters(), f"unknown reason {q['reason']!r}"
    return Filters(**q), None


async def activity_page(request: web.Request) -> web.StreamResponse:
    dash: Dashboard = request.app["dashboard"]
    filters, error = _filters(request)
    rows = dash.activity.recent(filters.match, FEED_ROWS)
    return dash.render(
        request,
        "activity.html",
        status=400 if error else 200,
        filters=filters,
        error=error,
        rows=rows,
        outcomes=dash.activity.outcomes,
        reasons=REASONS,
        stream_url="/activity/stream?" + filters.query(),
    )


async def activity_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one ``decision`` event per new matching decision, its table
    row rendered here (escaped like every page)."""
    dash: Dashboard = request.app["dashboard"]
    filters, error = _filters(request)
    if error:
        raise web.HTTPBadRequest(text=error + "\n")
    row = dash.templates.get_template("_row.html")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    with dash.activity.subscribe() as queue, contextlib.suppress(ConnectionResetError):
        # ConnectionResetError: the page was closed; a keep-alive or an event finds out
        await response.write(b"retry: 2000\n: connected\n\n")
        while True:
            try:
                decision = await asyncio.wait_for(queue.get(), SSE_KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if not decision:
                break  # too far behind: the browser reconnects and reloads the rows
            if not filters.match(decision):
                continue
            html = row.render(d=decision, outcomes=dash.activity.outcomes).strip()
            data = "".join(f"data: {line}\n" for line in html.splitlines())
            await response.write(f"event: decision\n{data}\n".encode())
    return response


async def batch_page(request: web.Request) -> web.StreamResponse:
    dash: Dashboard = request.app["dashboard"]
    flush_id = request.query.get("flush", "")[:MAX_FILTER_CHARS]
    batch = dash.activity.batches.get(flush_id)
    recipients: dict[str, list[dict[str, Any]]] = {}
    for d in batch.decisions if batch else ():
        recipients.setdefault(d.get("recipient_id") or "(nobody)", []).append(d)
    deliveries = {}
    for items in recipients.values():
        for d in items:
            outcome = dash.activity.outcomes.get(d.get("delivery_id") or "")
            if outcome is not None:
                address = outcome.get("address")
                deliveries[d["decision_id"]] = {
                    **outcome,
                    "address": None
                    if address is None
                    else mask_outcome_address(outcome["channel"], address),
                }
    return dash.render(
        request,
        "batch.html",
        status=200 if batch else 404,
        flush_id=flush_id,
        batch=batch,
        recipients=recipients,
        deliveries=deliveries,
    )


# -- the app and the command --------------------------------------------------------------


def static_dir() -> Path:
    return Path(str(files("processors") / "templates" / "dashboard" / "static"))


async def _keep_tailing(app: web.Application) -> None:
    dash: Dashboard = app["dashboard"]
    while True:
        try:
            await tail(dash.settings, dash.activity, now_ms)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the broker went away: try again
            log.warning("activity feed interrupted (%s); reconnecting in 5 s", type(exc).__name__)
            await asyncio.sleep(5)


def build_app(settings: Settings, token: str) -> web.Application:
    app = web.Application(middlewares=[require_token], client_max_size=MAX_BODY_BYTES)
    app.on_response_prepare.append(security_headers)
    app["dashboard"] = Dashboard(settings, token)

    async def start_feed(app: web.Application) -> None:
        app["feed"] = asyncio.create_task(_keep_tailing(app))

    async def stop_feed(app: web.Application) -> None:
        app["feed"].cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await app["feed"]

    app.on_startup.append(start_feed)
    app.on_cleanup.append(stop_feed)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_submit)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", overview)
    app.router.add_get("/roles", roles_page)
    app.router.add_post("/roles", roles_submit)
    app.router.add_get("/settings", settings_page)
    app.router.add_post("/settings", settings_submit)
    app.router.add_get("/users", users_page)
    app.router.add_get("/activity", activity_page)
    app.router.add_get("/activity/stream", activity_stream)
    app.router.add_get("/activity/batch", batch_page)
    app.router.add_static("/static/", static_dir(), show_index=False)
    return app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        help="port (default: WEB_PORT_BASE + 6, i.e. 6072; 0 picks a free one)",
    )
    parser.epilog = (
        "access: every page needs the admin token DASHBOARD__TOKEN (generated and printed "
        "when unset on a loopback address). exit codes: 0 stopped, 2 refused to start "
        "(no token on a non-loopback address, port in use), 3 no KAFKA_BROKER_URL"
    )


def _say(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(text, flush=True)


async def serve(settings: Settings, host: str, port: int, token: str, generated: bool) -> int:
    app = build_app(settings, token)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        print(
            f"dashboard: cannot listen on {host}:{port} ({exc.strerror}); choose another "
            "with --port N",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/"
    _say(f"dashboard on {url}")
    if generated:
        # printed once, to this terminal only; never logged
        _say(f"  admin token (made up for this run): {token}")
        _say(f"  sign in: {url}login?token={token}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0


def run(args: argparse.Namespace) -> int:
    from processors.admin_cli import quiet_libraries
    from processors.app import default_web_port
    from processors.settings import load_settings

    quiet_libraries()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    if not settings.kafka_broker_url:
        print(
            "dashboard: set KAFKA_BROKER_URL (`chat-notifier run` prints its broker's URL)",
            file=sys.stderr,
        )
        return EXIT_BROKER
    configured = settings.dashboard.token.get_secret_value() if settings.dashboard.token else ""
    if not configured and not is_loopback(args.host):
        print(
            f"dashboard: refusing to listen on {args.host} without an admin token; set "
            "DASHBOARD__TOKEN (or listen on 127.0.0.1)",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    token = configured or secrets.token_urlsafe(24)
    port = args.port if args.port is not None else default_web_port(settings, "dashboard")
    return asyncio.run(serve(settings, args.host, port, token, generated=not configured))
