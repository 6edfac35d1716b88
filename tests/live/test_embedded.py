"""The README's first command: ``chat-notifier run`` on the embedded default, end to end."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]


def test_run_starts_everything_shows_decisions_and_fills_the_outbox(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BROKER_URL"}
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "processors.cli", "run", "--rounds", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    port = re.search(r"embedded broker \(Tansu, memory only\) on 127\.0\.0\.1:(\d+)", out)
    assert port, out[:500]
    # readable decision lines as they happen: sends, and the demo's skip cases
    assert "SEND  -> email" in out
    assert "is viewing the conversation" in out and "VIEWING" in out
    assert "muted this conversation" in out
    assert "did you mean 'member'?" in out
    # the senders rendered real output into the outbox
    emails = list((tmp_path / "var" / "outbox" / "email").glob("*.eml"))
    assert emails
    first = emails[0].read_text()
    assert "Reply-To: reply+" in first and "List-Unsubscribe:" in first
    assert (tmp_path / "var" / "outbox" / "outbox.jsonl").exists()
    # a reply round trip: bob answers his "Launch plan" email through inbound-smtp, and
    # the decisions about the reply are marked; he is not notified of his own reply
    smtp = re.search(r"inbound-smtp on 127\.0\.0\.1:(\d+)", out)
    assert smtp, out[:800]
    assert 'bob    replies by email (inbound-smtp): "Thanks Dan, I\'ll read them tonight."' in out
    marked = [line for line in out.splitlines() if line.endswith("(reply by email)")]
    assert any(" alice " in line and "SEND  -> email" in line for line in marked), out[-3000:]
    assert any(" bob " in line and "own messages" in line for line in marked), out[-3000:]
    assert all(" launch " in line for line in marked)
    assert "reply: inbound mail ACCEPTED" in (tmp_path / "var" / "log" / "reply.log").read_text()
    # everything it started has stopped: nothing listens on the broker's port any more
    for stopped in (port, smtp):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", int(stopped.group(1))), timeout=2).close()


def test_run_prints_the_broker_url_and_the_admin_commands_work_against_it(
    tmp_path: Path,
) -> None:
    """README "Admin from the command line": `make run` in one terminal, `roles list` and
    `diagnose` in another, with the KAFKA_BROKER_URL that `run` printed. `run` also
    starts the dashboard on loopback and prints its sign-in link (README "Dashboard")."""
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BROKER_URL", "WEB_PORT")}
    env.pop("DASHBOARD__TOKEN", None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        env["WEB_PORT_BASE"] = str(s.getsockname()[1] - 6)  # the dashboard's offset
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "processors.cli", "run", "--rounds", "1"],
        cwd=tmp_path,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = sign_in = None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            found = re.search(r"export KAFKA_BROKER_URL=(kafka://127\.0\.0\.1:\d+)", line)
            if found:
                url = found.group(1)
            link = re.search(r"dashboard \(pid \d+\) on \S+ \(sign in at (\S+)\)", line)
            if link:
                sign_in = link.group(1)
            if url and "decisions as they happen" in line:
                break
        assert url, "".join(seen)
        assert sign_in and sign_in.startswith(
            f"http://127.0.0.1:{int(env['WEB_PORT_BASE']) + 6}/login?token="
        ), "".join(seen)
        admin_env = {**env, "KAFKA_BROKER_URL": url}

        def admin(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-P", "-m", "processors.cli", *args],
                cwd=tmp_path,
                env=admin_env,
                capture_output=True,
                text=True,
                timeout=60,
            )

        listed = admin("roles", "set", "member", "--sms", "off", "--json")
        assert listed.returncode == 0, listed.stderr
        roles = admin("roles", "list", "--json")
        assert roles.returncode == 0, roles.stderr
        assert "member" in {r["name"] for r in json.loads(roles.stdout)["roles"]}
        diagnosed = admin("diagnose", "--user", "bob")
        assert diagnosed.returncode == 0 and "sms: off for role 'member'" in diagnosed.stdout
        # the printed link signs in (a session cookie) and the Roles page shows the change
        browser = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        base = sign_in.split("login?", 1)[0]
        with browser.open(sign_in, timeout=10) as page:
            assert page.url == base and "Overview" in page.read().decode()
        with browser.open(base + "roles", timeout=10) as page:
            text = page.read().decode()
        assert 'data-role="member"' in text and 'aria-label="sms for member"' in text
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "roles", timeout=10)  # no cookie, no token
        assert refused.value.code == 401
        proc.communicate(timeout=200)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
