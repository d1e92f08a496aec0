#!/usr/bin/env python3
"""Render docs/api.md from the CRD's OpenAPI schema (the single source of truth for field docs).

python hack/gen_api_docs.py          # rewrite docs/api.md
python hack/gen_api_docs.py --check  # exit 1 when docs/api.md is stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CRD = ROOT / "crds" / "chanscale.dev_workerpools.yaml"
OUT = ROOT / "docs" / "api.md"


def _type(s: dict[str, Any]) -> str:
    t = s.get("type", "object")
    if t == "array":
        return f"[]{_type(s.get('items', {}))}"
    return str(t)


def _rules(s: dict[str, Any]) -> str:
    parts = []
    if "enum" in s:
        parts.append("one of " + ", ".join(f"`{v}`" for v in s["enum"]))
    if "minimum" in s:
        parts.append(f"{'>' if s.get('exclusiveMinimum') else '≥'} {s['minimum']}")
    if "maximum" in s:
        parts.append(f"≤ {s['maximum']}")
    if "pattern" in s:
        parts.append(f"pattern `{s['pattern']}`")
    if "maxLength" in s:
        parts.append(f"max length {s['maxLength']}")
    return "; ".join(parts)


def _rows(schema: dict[str, Any], prefix: str, required: set[str]) -> list[str]:
    rows = []
    for name, s in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}"
        desc = " ".join(str(s.get("description", "")).split())
        default = f"`{json.dumps(s['default'])}`" if "default" in s else ""
        req = "yes" if name in required else ""
        rows.append(f"| `{path}` | {_type(s)} | {req} | {default} | {_rules(s)} | {desc} |")
        if s.get("type") == "object" and s.get("properties") and not s.get("x-kubernetes-preserve-unknown-fields"):
            rows.extend(_rows(s, path, set(s.get("required", []))))
        if s.get("type") == "array" and (s.get("items") or {}).get("properties"):
            rows.extend(_rows(s["items"], f"{path}[]", set(s["items"].get("required", []))))
    return rows


def render() -> str:
    crd = yaml.safe_load(CRD.read_text())
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    lines = [
        "# API reference: WorkerPool (`chanscale.dev/v1alpha1`)",
        "",
        "Generated from `crds/chanscale.dev_workerpools.yaml` by `hack/gen_api_docs.py`; do not edit by hand.",
        "Short name `wp`. The API server enforces every rule below; violations are rejected with the field's path.",
        "",
        "## Cross-field rules",
        "",
    ]
    for v in schema.get("x-kubernetes-validations", []):
        lines.append(f"- `{v['rule']}` — {v['message']}")
    lines += [
        "",
        "## Fields",
        "",
        "| field | type | required | default | validation | description |",
        "|---|---|---|---|---|---|",
    ]
    lines += _rows(schema, "spec", set(schema.get("required", [])))
    lines += [
        "",
        "## Status",
        "",
        "| field | meaning |",
        "|---|---|",
        "| `status.replicas` / `desiredReplicas` / `recommendedReplicas` | the target's count after this tick, "
        "the count after behaviour and policy, the model's raw recommendation |",
        "| `status.signals` | the inputs read this tick (backlog, arrivalRate, serviceRate, processedRate, "
        "errorRate, "
        "p99LatencySeconds, ageSeconds) |",
        "| `status.lastDecision` | time, from → to, recommendation, outcome, reason, limitedBy[], sizing terms, "
        "inputs, policy verdict {allow, replicas, proposed, reasons[], source} |",
        "| `status.history` | what a restart must not forget: recommendation runs, scale events, failure count, "
        "service-rate estimate (bounded) |",
        "| `status.conditions` | Ready, MetricsAvailable, PolicyAllowed, SLOMet, ScalingLimited, Paused "
        "(and Escalated when a policy escalates) |",
        "",
    ]
    cols = ", ".join(c["name"] for c in version.get("additionalPrinterColumns", []))
    lines += [f"Printer columns (`kubectl get wp`, `-o wide` for more): {cols}.", ""]
    return "\n".join(lines)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            print("docs/api.md is stale: run python hack/gen_api_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
