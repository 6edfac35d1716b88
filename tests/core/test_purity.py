"""The core imports nothing impure: no Faust, Kafka, channel library, clock or env."""

from __future__ import annotations

import ast
from pathlib import Path

import processors.core

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
    offenders = []
    for path in sorted(CORE.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name in FORBIDDEN_MODULES or name.split(".")[0] in FORBIDDEN_MODULES:
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []
    assert len(list(CORE.glob("*.py"))) >= 6  # the scan really looked at the core
