"""``chat-notifier roles``, ``settings`` and ``diagnose`` through the CLI, on the real
broker, with a running worker and sender that are never restarted (issue 10 items 1-2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from processors import topics as t

from .conftest import ROOT, WorkerProc, consume, ensure, produce
from .scenario import conversation, message, presence, user
from .test_config import SendersProc, senders  # noqa: F401 - the fixture

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def cli(
    tansu: Any, prefix: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "processors.cli", *args],
        cwd=ROOT,
        env={**os.environ, "KAFKA_BROKER_URL": tansu.url, "TOPIC_PREFIX": prefix},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def test_roles_and_settings_changes_reach_a_running_worker_without_a_restart(
    tansu: Any,
    prefix: str,
    workers: Callable[..., WorkerProc],
    senders: Callable[[], SendersProc],  # noqa: F811
) -> None:
    """`roles set member --sms off`: the next batch's decision for a member skips sms
    with CHANNEL_DISABLED; `settings set inactivity_seconds=2`: the next batch closes
    2 s after its last message. Same worker and sender processes throughout."""
    bs = tansu.bootstrap
    ensure(bs, prefix, f"{prefix}notifier")
    ok(cli(tansu, prefix, "roles", "set", "member", "--email", "on", "--sms", "on"))
    worker = workers(sets=("inactivity_seconds=1",))
    mailer = senders()
    worker.wait_ready()
    mailer.wait_for("Ready")
    ts = now_ms()
    produce(
        bs,
        prefix,
        [
            (
                "chat.users",
                "ann",
                {**user("ann", "Ann", "member", phone="+447700900789"), "ts": ts},
            ),
            ("chat.users", "bob", {**user("bob", "Bob", "member"), "ts": ts}),
            (
                "chat.conversations",
                "c1",
                {**conversation("c1", ("ann", "All"), ("bob", "All")), "ts": ts},
            ),
        ],
    )
    time.sleep(1.5)

    def ann_decisions(flush_count: int) -> list[dict[str, Any]]:
        got = consume(
            bs,
            prefix,
            t.DECISIONS,
            until=lambda v: (
                len({d["flush_id"] for d in v if d["recipient_id"] == "ann"}) >= flush_count
            ),
            timeout=30,
        )
        return [d for d in got if d["recipient_id"] == "ann"]

    produce(bs, prefix, [("chat.messages", "c1", {**message("c1", "m1", "bob"), "ts": now_ms()})])
    first = {d["channel"]: d for d in ann_decisions(1)}
    assert first["sms"]["outcome"] == "send", first

    out = ok(cli(tansu, prefix, "roles", "set", "member", "--sms", "off", "--json"))
    assert json.loads(out)["role"]["sms"] is False and json.loads(out)["previous"]["sms"] is True
    time.sleep(1.0)  # the reader polls every 200 ms
    produce(bs, prefix, [("chat.messages", "c1", {**message("c1", "m2", "bob"), "ts": now_ms()})])
    decisions = ann_decisions(2)
    second = {d["channel"]: d for d in decisions if d["flush_id"] != first["sms"]["flush_id"]}
    assert (second["sms"]["outcome"], second["sms"]["reason"]) == ("skip", "CHANNEL_DISABLED")
    assert second["email"]["outcome"] == "send"

    out = ok(cli(tansu, prefix, "settings", "set", "inactivity_seconds=2", "--json"))
    assert json.loads(out)["changed"] == {"inactivity_seconds": [10, 2]}
    time.sleep(1.0)
    sent_at = now_ms()
    produce(bs, prefix, [("chat.messages", "c1", {**message("c1", "m3", "bob"), "ts": sent_at})])
    flushes = consume(
        bs,
        prefix,
        t.FLUSHES,
        until=lambda v: any(m["message_id"] == "m3" for f in v for m in f["messages"]),
        timeout=20,
    )
    last = next(f for f in flushes if any(m["message_id"] == "m3" for m in f["messages"]))
    assert last["closed_at"] - sent_at == 2000, last
    assert worker.proc is not None and worker.proc.poll() is None  # never restarted
    assert mailer.proc.poll() is None
    shown = json.loads(ok(cli(tansu, prefix, "settings", "show", "--json")))
    assert shown["source"] == t.SETTINGS and shown["settings"]["inactivity_seconds"] == 2


def test_admin_refusals_are_one_line_with_non_zero_exits(tansu: Any, prefix: str) -> None:
    ok(cli(tansu, prefix, "roles", "set", "member", "--email", "on"))
    cases = [
        (["settings", "set", "inactivity=5"], 2, "did you mean 'inactivity_seconds'?"),
        (["settings", "set", "inactivity_seconds=0"], 2, "more than 0 and at most 900"),
        (["settings", "set", "inactivity_seconds=-1"], 2, "more than 0 and at most 900"),
        (["settings", "set", "inactivity_seconds=901"], 2, "at most 900"),
        (["roles", "set", "member"], 2, "name a channel"),
        (["roles", "show", "Member"], 4, "did you mean 'member'?"),
        (["roles", "delete", "membr"], 4, "did you mean 'member'?"),
        (["roles", "set", "member", "--sms", "maybe"], 2, "'on' or 'off'"),
    ]
    for args, code, text in cases:
        result = cli(tansu, prefix, *args)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert text in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    # nothing was written by the refusals: member is as set, settings are the defaults
    roles = json.loads(ok(cli(tansu, prefix, "roles", "list", "--json")))["roles"]
    assert [(r["name"], r["email"], r["sms"]) for r in roles] == [("member", True, False)]
    assert json.loads(ok(cli(tansu, prefix, "settings", "show", "--json")))["source"] == "defaults"
    ok(cli(tansu, prefix, "roles", "delete", "member"))
    assert json.loads(ok(cli(tansu, prefix, "roles", "list", "--json")))["roles"] == []
    no_broker = subprocess.run(
        [sys.executable, "-P", "-m", "processors.cli", "roles", "list"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "KAFKA_BROKER_URL"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert no_broker.returncode == 3 and "KAFKA_BROKER_URL" in no_broker.stderr


def test_diagnose_on_current_data_masks_addresses(tansu: Any, prefix: str) -> None:
    """No batch has closed: the checklist still answers. UNKNOWN_ROLE names the near
    match; addresses, phone numbers and tokens never appear raw (tables or JSON), also
    not from an invalid_address outcome."""
    bs = tansu.bootstrap
    ensure(bs, prefix, f"{prefix}notifier")
    ok(cli(tansu, prefix, "roles", "set", "member", "--email", "on", "--push", "on"))
    token = "fcm-token-abcdef123456wxyz"
    ts = now_ms()
    produce(
        bs,
        prefix,
        [
            (
                "chat.users",
                "ann",
                {
                    **user("ann", "Ann", "member", phone="+447700900789", push_tokens=[token]),
                    "email": "ann.smith@example.org",
                    "ts": ts,
                },
            ),
            ("chat.users", "dee", {**user("dee", "Dee", "Member"), "ts": ts}),
            ("chat.presence", "ann", {**presence("ann", "tab1", True, "c1", True), "ts": ts}),
            (
                "chat.conversations",
                "c1",
                {**conversation("c1", ("ann", "All"), ("dee", "All")), "ts": ts},
            ),
            (
                "notify.outcomes",
                "d-1",
                {
                    "delivery_id": "d-1",
                    "flush_id": "f-1",
                    "recipient_id": "ann",
                    "channel": "push",
                    "status": "invalid_address",
                    "address": token,
                    "provider_id": None,
                    "attempts": 1,
                    "detail": f"UNREGISTERED {token}",
                    "ts": ts,
                },
            ),
        ],
    )
    raw = ("ann.smith@example.org", "+447700900789", "7700900", token)

    table = ok(cli(tansu, prefix, "diagnose", "--user", "ann"))
    for text in raw:
        assert text not in table, text
    assert "a***@example.org" in table and "…wxyz" in table
    assert "email: would be sent when offline or not viewing" in table
    assert "sms: off for role 'member'" in table
    assert "warning: the last delivery on push was invalid_address" in table

    report = json.loads(
        ok(cli(tansu, prefix, "diagnose", "--user", "ann", "--conversation", "c1", "--json"))
    )
    dumped = json.dumps(report, ensure_ascii=False)
    for text in raw:
        assert text not in dumped, text
    assert set(report) >= {
        "user_id",
        "conversation_id",
        "checks",
        "presence",
        "verdicts",
        "sessions",
        "recent_decisions",
        "recent_outcomes",
        "checked_at",
    }
    assert report["presence"] == "VIEWING"  # tab1 has c1 selected and focused, within the TTL
    assert [v["channel"] for v in report["verdicts"]] == list(t.CHANNELS)
    assert {v["reason"] for v in report["verdicts"]} == {"VIEWING"}
    assert report["recent_outcomes"][0]["address"] == "…wxyz"
    assert all(set(c) == {"check", "ok", "text"} for c in report["checks"])

    dee = json.loads(ok(cli(tansu, prefix, "diagnose", "--user", "dee", "--json")))
    exists = next(c for c in dee["checks"] if c["check"] == "role exists")
    assert exists["ok"] is False and "did you mean 'member'?" in exists["text"]
    assert {v["reason"] for v in dee["verdicts"]} == {"UNKNOWN_ROLE"}
