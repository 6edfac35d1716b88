"""The core imports nothing impure: no Faust, Kafka, channel library, clock or env."""

from __future__ import annotations

import os
from pathlib import Path

import processors.core
from tests.imports import imported_modules

CORE = Path(processors.core.__file__).parent
FORBIDDEN_MODULES = {
    "faust",
    "mode",
    "aiokafka",
    "kafka",
    "boto3",
    "botocore",
    "twilio",
    "firebase_admin",
    "pywebpush",
    "time",
    "datetime",
    "os",
    "random",
    "asyncio",
    "socket",
    "processors.settings",
}


def test_core_imports_are_pure() -> None:
    offenders = [
        f"{path.name}: {name}"
        for path in sorted(CORE.glob("*.py"))
        for name in sorted(imported_modules(path))
        if name in FORBIDDEN_MODULES or name.split(".")[0] in FORBIDDEN_MODULES
    ]
    assert offenders == []
    assert len(list(CORE.glob("*.py"))) >= 6  # the scan really looked at the core


def test_the_core_under_test_is_compiled_when_expected() -> None:
    """tests/test_wheel.py runs these tests on the wheel's compiled core: that they ran on
    it, not on the source tree, is checked here."""
    import processors.core.engine as engine

    if os.environ.get("CHAT_NOTIFIER_EXPECT_COMPILED") == "1":
        assert not engine.__file__.endswith(".py"), engine.__file__
