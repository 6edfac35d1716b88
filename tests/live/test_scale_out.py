"""Scale-out proof on the real broker (issue 10 item 5).

Three ``chat-notifier worker`` processes share one group. Forty conversations get two
bursts of messages; in the middle of the second burst one worker is SIGKILLed and a
fourth one is started. Every batch pending at that moment (one per conversation, about
a quarter of them on the killed worker's partitions) must be flushed exactly once
downstream: every message id in exactly one flush_id, the flush_ids those of a replay
of the same records, and the decisions (flush_id, recipient, channel, outcome, reason)
equal to the replay's.

Decisions are deterministic because nobody has presence (everyone is offline) and
there is no typing: a batch is then only its messages' event times and the inactivity
period, which replay applies the same way. Records written twice by at-least-once
processing after the SIGKILL carry the same ids; they are counted, not hidden.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from processors import topics as t
from tests.live.conftest import ROOT, WorkerProc, consume, ensure, produce
from tests.live.scenario import conversation, message, role, user

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

CONVERSATIONS = 40
USERS = 30
INACTIVITY_S = 2
ROUND_GAP_S = 0.3  # between two messages of one conversation: far below the period
BURST_GAP_S = 5.0  # between the bursts: far above it

Line = dict[str, Any]


def participants(k: int) -> list[str]:
    return [f"u{k % USERS}", f"u{(k + 7) % USERS}", f"u{(k + 13) % USERS}"]


def reference() -> list[Line]:
    lines: list[Line] = [
        {"topic": t.ROLES, "key": "member", "value": role("member", email=True) | {"ts": 1}}
    ]
    for i in range(USERS):
        uid = f"u{i}"
        lines.append(
            {"topic": t.USERS, "key": uid, "value": user(uid, uid.upper(), "member") | {"ts": 1}}
        )
    for k in range(CONVERSATIONS):
        cid = f"c{k}"
        value = conversation(cid, *((u, "All") for u in participants(k))) | {"ts": 1}
        lines.append({"topic": t.CONVERSATIONS, "key": cid, "value": value})
    return lines


def publish(bootstrap: str, prefix: str, lines: list[Line]) -> None:
    produce(bootstrap, prefix, [(line["topic"], line["key"], line["value"]) for line in lines])


def burst_round(burst: int, r: int) -> list[Line]:
    """One message in every conversation, stamped now (the replay reads the same ts)."""
    out = []
    for k in range(CONVERSATIONS):
        cid = f"c{k}"
        now = int(time.time() * 1000)
        sender = participants(k)[r % 3]
        value = message(cid, f"{cid}-b{burst}-r{r}", sender, f"burst {burst} round {r}")
        out.append(
            {"topic": t.MESSAGES, "key": cid, "value": value | {"ts": now}, "timestamp": now}
        )
    return out


def decision_keys(decisions: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {
        (d["flush_id"], d["recipient_id"], d["channel"], d["outcome"], d["reason"])
        for d in decisions
    }


def test_sigkill_and_a_new_worker_flush_every_pending_batch_exactly_once(
    tansu: Any, prefix: str, tmp_path: Path, workers: Callable[..., WorkerProc]
) -> None:
    bs = tansu.bootstrap
    app_id = f"{prefix}notifier"
    ensure(bs, prefix, app_id)
    sets = [f"inactivity_seconds={INACTIVITY_S}"]
    group = [workers(f"w{i}", sets=sets) for i in range(3)]
    for w in group:
        w.wait_ready(timeout=60)
    lines = reference()
    publish(bs, prefix, lines)
    time.sleep(1.0)  # reference data read before the first message

    for r in range(4):  # burst 1: all three workers
        batch = burst_round(1, r)
        publish(bs, prefix, batch)
        lines += batch
        time.sleep(ROUND_GAP_S)
    time.sleep(BURST_GAP_S)
    for r in range(8):  # burst 2: SIGKILL one worker, add another, mid-burst
        if r == 2:
            group[1].kill()
            group.append(workers("w3", sets=sets))
        batch = burst_round(2, r)
        publish(bs, prefix, batch)
        lines += batch
        time.sleep(ROUND_GAP_S)
    sent_ids = {line["value"]["message_id"] for line in lines if line["topic"] == t.MESSAGES}

    # the replay of the same records, on event time
    recorded = tmp_path / "input.jsonl"
    recorded.write_text("".join(json.dumps(line) + "\n" for line in lines))
    replayed_path = tmp_path / "replayed.jsonl"
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "processors.cli", "replay", "--input", str(recorded)]
        + ["--output", str(replayed_path), "--set", f"inactivity_seconds={INACTIVITY_S}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    replayed = [json.loads(x) for x in replayed_path.read_text().splitlines()]
    replay_flushes = {
        r["value"]["flush_id"]: r["value"] for r in replayed if r["topic"] == t.FLUSHES
    }
    replay_decisions = decision_keys([r["value"] for r in replayed if r["topic"] == t.DECISIONS])
    assert len(replay_flushes) == 2 * CONVERSATIONS  # one batch per conversation per burst

    def all_flushed(values: list[dict[str, Any]]) -> bool:
        return {m for f in values for m in f["message_ids"]} >= sent_ids

    flushes = consume(bs, prefix, t.FLUSHES, until=all_flushed, timeout=90)
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in flushes:
        by_id[f["flush_id"]].append(f)
    # a flush_id written twice (at-least-once) is the same batch both times
    for fid, copies in by_id.items():
        assert all(c["message_ids"] == copies[0]["message_ids"] for c in copies), fid
    homes = Counter(m for copies in by_id.values() for m in copies[0]["message_ids"])
    assert set(homes) == sent_ids, sorted(sent_ids - set(homes))[:5]  # none lost
    assert max(homes.values()) == 1, homes.most_common(3)  # none in two batches
    assert set(by_id) == set(replay_flushes)  # the same flush_ids as the replay

    live = consume(
        bs,
        prefix,
        t.DECISIONS,
        until=lambda v: decision_keys(v) >= replay_decisions,
        timeout=60,
    )
    assert decision_keys(live) == replay_decisions
    # each batch has messages of all three participants: three recipients x four
    # channels each, email sent (nobody online), the others off for the role
    assert len(replay_decisions) == 3 * 4 * len(replay_flushes)
    assert {k[2:] for k in replay_decisions} == {
        ("email", "send", None),
        ("sms", "skip", "CHANNEL_DISABLED"),
        ("push", "skip", "CHANNEL_DISABLED"),
        ("browser", "skip", "CHANNEL_DISABLED"),
    }

    # the killed worker did own conversation partitions (so batches were pending there)
    assert group[1].proc is not None and group[1].proc.returncode == -9
    owned = re.findall(r"conversation partitions \[([\d, ]*)\] active", group[1].log())
    assert owned and owned[-1].strip(), owned
    print(
        f"\nscale-out: {len(sent_ids)} messages, {len(by_id)} flushes "
        f"({len(flushes) - len(by_id)} written twice), {len(replay_decisions)} decisions "
        f"({len(live) - len(decision_keys(live))} written twice)"
    )
