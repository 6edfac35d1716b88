"""The TypedDicts of core/records.py name exactly the fields of the schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from processors.core.records import RECORDS

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_typed_record_matches_its_schema(name: str) -> None:
    schema = json.loads((SCHEMAS / f"{name}.avsc").read_text())
    assert list(RECORDS[name].__annotations__) == [f["name"] for f in schema["fields"]]
