"""The dashboard in a real browser (issue 11 item 2): headless Chromium from Debian's
``chromium`` package driven by Playwright, against ``chatnotifier dashboard``, a running
worker and an email sender (outbox), all subprocesses on the real broker.

One stack per module (starting a worker takes seconds); each test uses its own users
and conversations. Every test leaves a screenshot in ``var/screenshots/``.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from processors import topics as t
from tests.live import conftest as live
from tests.live.conftest import ROOT, WorkerProc
from tests.live.scenario import conversation, message, user
from tests.live.test_config import SendersProc

pytestmark = [pytest.mark.broker, pytest.mark.browser, pytest.mark.timeout(240)]

T = TypeVar("T")
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "var" / "screenshots"
TOKEN = "test-admin-token-0123456789"
playwright_api = pytest.importorskip("playwright.sync_api")

if not Path(CHROMIUM).exists():  # pragma: no cover - CI installs it (.ci/run)
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)


def off_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a broker helper (it calls asyncio.run) outside this thread: Playwright's sync
    API keeps an event loop running in it."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def ensure(*args: Any) -> None:
    off_thread(live.ensure, *args)


def produce(*args: Any) -> None:
    off_thread(live.produce, *args)


def consume(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    return off_thread(live.consume, *args, **kwargs)


def reload_until(page: Any, text: str, timeout: float = 20) -> None:
    """Reload ``page`` until its main part shows ``text``: the dashboard reads the topics
    on its own, so it may show a batch a moment after the test has read it."""
    deadline = time.monotonic() + timeout
    while text not in page.inner_text("main"):
        assert time.monotonic() < deadline, page.inner_text("main")
        time.sleep(0.5)
        page.reload()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-P", "-m", "processors.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


@dataclass
class Stack:
    url: str
    bootstrap: str
    prefix: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def stack(tansu: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Worker + email sender + dashboard on a fresh prefix; role ``member`` (email and
    SMS on) and a 1 s period of inactivity in force before the worker starts."""
    tmp = tmp_path_factory.mktemp("dashboard")
    prefix = f"d{os.getpid()}{int(time.time()) % 100000}."
    bs = tansu.bootstrap
    ensure(bs, prefix, f"{prefix}notifier")
    env = {
        **os.environ,
        "KAFKA_BROKER_URL": tansu.url,
        "TOPIC_PREFIX": prefix,
        "DASHBOARD__TOKEN": TOKEN,
        "PYTHONUNBUFFERED": "1",
    }
    cli(env, "settings", "set", "inactivity_seconds=1")
    cli(env, "roles", "set", "member", "--email", "on", "--sms", "on")
    worker = WorkerProc(bs, prefix, tmp / "worker.log", app_id=f"{prefix}notifier").start()
    mailer = SendersProc(bs, prefix, tmp)
    port = free_port()
    log_path = tmp / "dashboard.log"
    with log_path.open("ab") as log:
        dashboard = subprocess.Popen(
            [sys.executable, "-P", "-m", "processors.cli", "dashboard", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "dashboard on" not in log_path.read_text():
            assert dashboard.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        worker.wait_ready()
        mailer.wait_for("Ready")
        yield Stack(f"http://127.0.0.1:{port}", bs, prefix, env)
    finally:
        dashboard.terminate()
        dashboard.wait(15)
        mailer.stop()
        worker.stop()
        assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture
def page(stack: Stack, browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A signed-in page; any JavaScript dialog (an injected alert) is recorded."""
    context = browser.new_context(viewport={"width": 1200, "height": 720})
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.goto(stack.url + "/login")
    page.fill("#token", TOKEN)
    page.click("form button[type=submit]")
    page.wait_for_url(stack.url + "/")
    yield page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"))
    context.close()


def shot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def people(stack: Stack, conv: str, *users: dict[str, Any]) -> None:
    ts = now_ms()
    records: list[Any] = [(t.USERS, u["user_id"], {**u, "ts": ts}) for u in users]
    parts = tuple((u["user_id"], "All") for u in users)
    records.append((t.CONVERSATIONS, conv, {**conversation(conv, *parts), "ts": ts}))
    produce(stack.bootstrap, stack.prefix, records)


def say(stack: Stack, conv: str, mid: str, sender: str, text: str = "hi") -> int:
    sent_at = now_ms()
    produce(
        stack.bootstrap,
        stack.prefix,
        [(t.MESSAGES, conv, {**message(conv, mid, sender, text), "ts": sent_at})],
    )
    return sent_at


def decisions_for(stack: Stack, recipient: str, flushes: int) -> list[dict[str, Any]]:
    got = consume(
        stack.bootstrap,
        stack.prefix,
        t.DECISIONS,
        until=lambda v: (
            len({d["flush_id"] for d in v if d["recipient_id"] == recipient}) >= flushes
        ),
        timeout=30,
    )
    return [d for d in got if d["recipient_id"] == recipient]


def test_sms_toggled_off_in_roles_page_shows_channel_disabled_in_the_live_feed(
    page: Any, stack: Stack
) -> None:
    people(
        stack,
        "c-sms",
        user("ann", "Ann", "member", phone="+447700900789"),
        user("bob", "Bob", "member"),
    )
    time.sleep(1.0)
    say(stack, "c-sms", "m1", "bob")
    first = {d["channel"]: d for d in decisions_for(stack, "ann", 1)}
    assert first["sms"]["outcome"] == "send", first

    page.goto(stack.url + "/roles")
    sms = page.get_by_label("sms for member")
    assert sms.is_checked()
    sms.uncheck()
    page.locator('tr[data-role="member"] button[value="save"]').click()
    page.wait_for_url(stack.url + "/roles")
    assert "role 'member' saved: email on" in page.inner_text(".flash")
    assert not page.get_by_label("sms for member").is_checked()
    assert page.get_by_label("email for member").is_checked()
    shot(page, "roles")

    page.goto(stack.url + "/activity?user=ann&channel=sms")  # filtered, also live
    page.wait_for_selector("#live:not([hidden])", timeout=10_000)  # the event stream is open
    time.sleep(1.0)  # the worker's config reader polls every 200 ms
    say(stack, "c-sms", "m2", "bob", "the <b>second</b> message")
    # the row arrives over server-sent events: the page is not reloaded (class "new")
    row = page.locator("#feed tr.new.skip", has_text="CHANNEL_DISABLED")
    row.wait_for(timeout=30_000)
    assert "their role has this channel turned off" in row.inner_text()
    page.wait_for_timeout(1_000)  # the rest of the batch's decisions, if they were shown
    channels = page.locator("#feed tr td:nth-child(4)").all_inner_texts()
    assert set(channels) == {"sms"}, channels  # the filter holds for live rows too
    assert page.locator("#feed tr.send", has_text="ann").count() == 1  # m1, sent
    shot(page, "activity")

    row.get_by_role("link", name="details").click()
    page.wait_for_url(re.compile(r".*/activity/batch\?flush=f-.*"))
    text = page.inner_text("main")
    assert "the <b>second</b> message" in text  # the batch's message, as text
    assert "closed" in text and "inactivity" in text
    assert "ann" in text and "bob" in text  # every recipient's decisions
    assert "CHANNEL_DISABLED" in text and "OWN_MESSAGES" in text
    assert "OFFLINE" in text  # the presence snapshot the decision used
    # the email delivery's outcome (notify.outcomes), once the sender has sent it
    reload_until(page, "sent after 1 attempt")
    # the Overview counts them: sends per channel, skips per reason, as an inline SVG chart
    page.goto(stack.url + "/")
    assert "sms: 1" in page.inner_text(".legend")  # m1's SMS; m2's was skipped
    skips = page.locator("section", has_text="Skipped, by reason")
    assert "CHANNEL_DISABLED" in skips.locator("table").inner_text()
    assert page.locator("svg.chart rect").count() >= 2
    shot(page, "overview")
    assert page.dialogs == []


def test_inactivity_period_changed_in_the_form_closes_the_next_batch_on_it(
    page: Any, stack: Stack
) -> None:
    people(stack, "c-idle", user("cy", "Cy", "member"), user("dan", "Dan", "member"))
    page.goto(stack.url + "/settings")
    assert page.input_value("#inactivity_seconds") == "1"
    page.fill("#inactivity_seconds", "901")
    page.click("button[value=save]")
    assert "at most 900" in page.inner_text(".error")  # refused by the server, not saved
    page.fill("#inactivity_seconds", "2")
    page.click("button[value=compare]")
    sentence = page.inner_text(".whatif .sentence")
    assert sentence.startswith("with 2 s instead of 1 s, the last day's traffic would have"), (
        sentence
    )
    shot(page, "settings-whatif")
    page.click("button[value=save]")
    page.wait_for_url(stack.url + "/settings")
    assert "inactivity_seconds 1 → 2" in page.inner_text(".flash")
    assert page.input_value("#inactivity_seconds") == "2"
    time.sleep(1.0)  # the worker's config reader polls every 200 ms
    sent_at = say(stack, "c-idle", "m-idle", "cy")
    flushes = consume(
        stack.bootstrap,
        stack.prefix,
        t.FLUSHES,
        until=lambda v: any(m["message_id"] == "m-idle" for f in v for m in f["messages"]),
        timeout=20,
    )
    flush = next(f for f in flushes if any(m["message_id"] == "m-idle" for m in f["messages"]))
    assert flush["closed_at"] - sent_at == 2000 and flush["cause"] == "inactivity", flush
    page.goto(stack.url + "/activity/batch?flush=" + flush["flush_id"])
    reload_until(page, "2.0 s after the last message")  # once the dashboard has read it


def test_users_page_shows_unknown_role_with_the_near_match(page: Any, stack: Stack) -> None:
    people(stack, "c-role", user("dee", "Dee", "Member"), user("eve", "Eve", "member"))
    page.goto(stack.url + "/users")
    page.fill("#user", "dee")
    page.click("main form button[type=submit]")
    page.wait_for_url(re.compile(r".*/users\?user=dee.*"))
    text = page.inner_text("main")
    assert "role 'Member' assigned" in text
    assert "did you mean 'member'?" in text
    assert "[UNKNOWN_ROLE]" in text and "does not exactly match a defined role" in text
    assert page.locator("ul.checks li.no", has_text="role exists").count() == 1


def test_requests_without_the_token_or_the_csrf_token_are_refused(
    page: Any, stack: Stack, browser: Any
) -> None:
    def status(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
        req = urllib.request.Request(url, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    form = b"action=create&name=intruder&email=on&csrf=x"
    assert status(stack.url + "/roles") == 401
    assert status(stack.url + "/activity/stream") == 401
    assert status(stack.url + "/roles", form) == 401
    assert status(stack.url + "/roles", headers={"Authorization": "Bearer wrong"}) == 401
    assert status(stack.url + "/roles", headers={"Authorization": f"Bearer {TOKEN}"}) == 200
    # signed in (the page's cookie), but no CSRF token, or the wrong one: 403
    api = page.context.request
    missing = api.post(stack.url + "/roles", form={"action": "create", "name": "intruder"})
    assert missing.status == 403 and "CSRF" in missing.text()
    wrong = api.post(
        stack.url + "/roles", form={"action": "create", "name": "intruder", "csrf": "nope"}
    )
    assert wrong.status == 403
    settings = api.post(stack.url + "/settings", form={"inactivity_seconds": "5"})
    assert settings.status == 403
    page.goto(stack.url + "/roles")
    assert "intruder" not in page.inner_text("main")  # nothing was written
    # a browser without the session is sent to the login form; a wrong token stays out
    stranger = browser.new_page()
    stranger.goto(stack.url + "/roles")
    assert "/login?next=" in stranger.url
    stranger.fill("#token", "guess")
    stranger.click("form button[type=submit]")
    assert "not the admin token" in stranger.inner_text(".error")
    shot(stranger, "login-refused")
    stranger.close()
    # no token configured: the dashboard refuses to listen on a non-loopback address
    env = {k: v for k, v in stack.env.items() if k != "DASHBOARD__TOKEN"}
    refused = subprocess.run(
        [sys.executable, "-P", "-m", "processors.cli", "dashboard", "--host", "0.0.0.0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2, refused
    assert refused.stderr.strip().count("\n") == 0 and "DASHBOARD__TOKEN" in refused.stderr


def test_a_role_name_with_script_is_shown_escaped(page: Any, stack: Stack) -> None:
    name = "<script>alert('role')</script>"
    page.goto(stack.url + "/roles")
    page.fill("#new-name", name)
    page.check("#new-role input[name=push]")
    page.click("#new-role button[value=create]")
    page.wait_for_url(stack.url + "/roles")
    assert name in page.inner_text(".flash")
    cell = page.locator(f'tr[data-role="{name}"] td.name')
    assert cell.inner_text() == name  # shown as text, not run
    raw = page.context.request.get(stack.url + "/roles").text()  # the HTML as served
    assert "&lt;script&gt;alert(&#39;role&#39;)&lt;/script&gt;" in raw
    assert "<script>alert" not in raw
    # the same name typed as a user id and as a filter comes back as text too
    page.goto(stack.url + "/users?user=" + urllib.request.quote(name))
    assert f"no User record for {name!r}" in page.inner_text("main")
    page.goto(stack.url + "/activity?conversation=" + urllib.request.quote(name))
    assert page.input_value("#f-conversation") == name
    page.goto(stack.url + "/roles")
    assert page.dialogs == [], page.dialogs  # no alert() ran anywhere


@pytest.fixture(scope="module", autouse=True)
def _readme_images() -> Iterator[None]:
    """Refresh docs/img/ from this run's screenshots when asked (README "Dashboard")."""
    yield
    if os.environ.get("UPDATE_README_IMAGES"):
        for name in ("roles", "activity"):
            source = SCREENSHOTS / f"{name}.png"
            if source.exists():
                shutil.copy(source, ROOT / "docs" / "img" / f"dashboard-{name}.png")
