"""docs/policies.md shows an input and a decision document: keep them valid against the shipped schemas."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "policies.md").read_text()


def json_blocks() -> list[dict[str, object]]:
    blocks = re.findall(r"```json\n(.*?)```", DOC, flags=re.S)
    return [json.loads(b) for b in blocks if "…" not in b]  # "…" marks an abridged fragment


def schema(name: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((REPO / "policies" / name).read_text())
    return loaded


def test_documented_input_is_valid() -> None:
    inputs = [b for b in json_blocks() if b.get("apiVersion") == "policy.chanscale.dev/v1"]
    assert inputs, "docs/policies.md lost its input example"
    for doc in inputs:
        jsonschema.validate(doc, schema("input.schema.json"))


def test_documented_decision_is_valid() -> None:
    decisions = [b for b in json_blocks() if "allow" in b]
    assert decisions, "docs/policies.md lost its decision example"
    for doc in decisions:
        jsonschema.validate(doc, schema("decision.schema.json"))
