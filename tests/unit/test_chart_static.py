"""Static checks of the chart and the generated copies that need no helm binary and no cluster.

Why: the cheapest place to catch drift (a CRD or policy edited at its source but not re-synced), a values key
without documentation, or a schema that rejects the chart's own defaults.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import chanscale

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "chanscale"


def _schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def _values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def test_generated_copies_are_in_sync() -> None:
    """charts/chanscale/templates/crds, the policy copies and the argocd-cm patch match their sources."""
    proc = subprocess.run(
        ["bash", str(ROOT / "hack" / "sync-generated.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"generated copies drifted; run hack/sync-generated.sh\n{proc.stdout}{proc.stderr}"


def test_chart_crds_are_the_source_crds() -> None:
    """The templated copy is the source CRD plus the keep/Argo CD annotations, wrapped in crds.install; Helm's
    crds/ directory (installed once, never upgraded) is not used."""
    assert not (CHART / "crds").exists(), "CRDs live in templates/crds/ so that helm upgrade updates them"
    for src in (ROOT / "crds").glob("*.yaml"):
        copy = CHART / "templates" / "crds" / src.name
        assert copy.exists(), f"{copy} missing: run hack/sync-generated.sh"
        lines = [ln for ln in copy.read_text().splitlines() if "{{" not in ln]
        rendered = yaml.safe_load("\n".join(lines))
        annotations = rendered["metadata"].pop("annotations")
        assert annotations == {"helm.sh/resource-policy": "keep", **_ARGO_CRD_OPTIONS}
        source = yaml.safe_load(src.read_text())
        source["metadata"].pop("annotations", None)
        assert rendered == source


_ARGO_CRD_OPTIONS = {"argocd.argoproj.io/sync-options": "Prune=false,Delete=false,ServerSideApply=true"}


def test_schema_is_valid_and_accepts_defaults() -> None:
    schema = _schema()
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(_values(), schema)


@pytest.mark.parametrize("path", sorted((CHART / "ci").glob("*-values.yaml")), ids=lambda p: p.name)
def test_schema_accepts_ci_values(path: Path) -> None:
    """Each ci/*-values.yaml, merged over the defaults the way Helm does, passes the schema."""

    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    jsonschema.validate(merge(_values(), yaml.safe_load(path.read_text()) or {}), _schema())


def test_every_values_key_is_documented() -> None:
    """Every key has a comment right above it, or sits inside a block whose key has one (e.g. resources)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9]*):", line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        commented = i > 0 and lines[i - 1].strip().startswith("#")
        documented = commented or any(doc for _, doc in stack)
        top_level_block = indent == 0 and line.rstrip().endswith(":")
        if not documented and not top_level_block:
            undocumented.append(f"{i + 1}: {line.strip()}")
        stack.append((indent, commented))
    assert not undocumented, "values.yaml keys without a comment:\n" + "\n".join(undocumented)


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == chanscale.__version__


def test_opa_image_is_pinned_1x() -> None:
    tag = _values()["opa"]["image"]["tag"]
    assert re.fullmatch(r"1\.\d+\.\d+(-[a-z0-9.-]+)?", tag), tag


def test_dockerfile_matches_the_chart() -> None:
    """The image cannot be built here (no Docker), so check what the chart relies on: a pinned multi-stage build
    that runs as the UID the chart's securityContext declares, with a build context that has what pip needs."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M)
    assert base and re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base.group(1)), "pin the base to a patch release"
    assert dockerfile.count("\nFROM ") >= 2, "multi-stage"
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    assert user, "USER must be numeric so runAsNonRoot can verify it"
    psc = _values()["podSecurityContext"]
    assert (int(user.group(1)), int(user.group(2))) == (psc["runAsUser"], psc["runAsGroup"])
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert {"!pyproject.toml", "!README.md", "!operator/"} <= set(ignore)
