"""``chat-notifier explain`` shows what became of replies by email (InboundAudit records),
read from a JSONL file, through the installed command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from processors.reply.parse import AUDIT_WHY, decide_reply
from processors.topics import DECISIONS, INBOUND_AUDIT
from tests.reply.mails import NOW_MS, REPLY_DOMAIN, context, mail, reply_address

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mails = [
        mail("Yes, Friday.", message_id="<ok-1@mail.example.org>"),
        mail(to=reply_address(user_id="carol"), from_="carol@example.org", message_id="<ro@x>"),
        mail(from_="mallory@example.net", message_id="<fwd@x>"),
        mail(to=f"reply+k1-{'a' * 40}@{REPLY_DOMAIN}", message_id="<forged@x>"),
    ]
    audits = [decide_reply(m, context()).audit(NOW_MS + i) for i, m in enumerate(mails)]
    assert [a["reason"] for a in audits] == [
        "ACCEPTED",
        "READ_ONLY",
        "FROM_MISMATCH",
        "FORGED_TOKEN",
    ]
    decision = {
        "decision_id": "d-1",
        "flush_id": "f-1",
        "conversation_id": "c1",
        "recipient_id": "bob",
        "channel": None,
        "outcome": "skip",
        "reason": "OWN_MESSAGES",
        "presence": None,
        "detail": None,
        "delivery_id": None,
        "ts": NOW_MS + 10,
    }
    path = tmp_path_factory.mktemp("explain") / "records.jsonl"
    lines = [{"topic": INBOUND_AUDIT, "key": a["mail_id"], "value": a} for a in audits]
    lines.append({"topic": DECISIONS, "key": "bob", "value": decision})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def explain(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "processors.cli", "explain", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def test_user_shows_their_replies_by_email_after_their_decisions(records: Path) -> None:
    out = explain("--user", "bob", "--input", str(records))
    assert out.index("not notified [OWN_MESSAGES]") < out.index("replies by email")
    lines = out.splitlines()
    at = lines.index("replies by email (email.inbound-audit):")
    assert lines[at + 1].endswith("inbound mail ok-1@mail.example.org  user bob  conversation c1")
    assert lines[at + 2].startswith("    posted [ACCEPTED] as message email-")
    assert lines[at + 3].endswith("inbound mail fwd@x  user bob  conversation c1")
    assert lines[at + 4] == f"    not posted [FROM_MISMATCH] {AUDIT_WHY['FROM_MISMATCH']}"
    assert "forged@x" not in out and "carol" not in out  # not bob's (or nobody's) mail


def test_read_only_reply_is_worded_for_that_user(records: Path) -> None:
    out = explain("--user", "carol", "--input", str(records))
    assert "no decisions for user carol" in out
    assert (
        "    not posted [READ_ONLY] the user has Read access only in this conversation"
        in out.splitlines()
    )


@pytest.mark.parametrize("key", ["forged@x", "<forged@x>"])
def test_mail_shows_one_mail_whoever_sent_it(records: Path, key: str) -> None:
    out = explain("--mail", key, "--input", str(records)).splitlines()
    assert len(out) == 2
    assert out[0].endswith("  inbound mail forged@x")  # no verified user or conversation
    assert out[1].startswith("    not posted [FORGED_TOKEN] " + AUDIT_WHY["FORGED_TOKEN"] + ": ")


def test_unknown_mail_says_so(records: Path) -> None:
    assert explain("--mail", "nope@x", "--input", str(records)).startswith("no inbound mail nope@x")
