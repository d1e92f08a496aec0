"""The Rego toolchain gates: `opa fmt` clean, `opa check --strict` against the input schema, `opa test` with
at least 90 % line coverage (the same checks as hack/policy-check.sh, with failure messages that say what to do)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from chanscale.local.opa import OpaNotFound, find_opa_binary

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
IGNORE = ["--ignore", "*.schema.json"]
MIN_COVERAGE = 90.0


@pytest.fixture(scope="module")
def opa() -> str:
    try:
        return str(find_opa_binary())
    except OpaNotFound as exc:
        pytest.fail(f"{exc}\n(the Rego checks need a real OPA: run `make tools`)")


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def test_opa_fmt_clean(opa: str) -> None:
    listed = run([opa, "fmt", "--list", str(POLICIES)])
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "", f"not opa-fmt formatted (run hack/policy-check.sh --fix):\n{listed.stdout}"
    failed = run([opa, "fmt", "--fail", "--list", str(POLICIES)])
    assert failed.returncode == 0, failed.stdout + failed.stderr


def test_opa_check_strict_against_input_schema(opa: str) -> None:
    res = run([opa, "check", "--strict", *IGNORE, "--schema", str(POLICIES / "input.schema.json"), str(POLICIES)])
    assert res.returncode == 0, f"opa check --strict --schema failed:\n{res.stdout}{res.stderr}"


def test_opa_test_passes_with_coverage(opa: str) -> None:
    res = run([opa, "test", *IGNORE, "--coverage", str(POLICIES)])
    report = json.loads(res.stdout) if res.stdout.strip().startswith("{") else None
    assert res.returncode == 0 and report is not None, (
        f"opa test failed; rerun `opa test --ignore '*.schema.json' -v policies` to see which:\n"
        f"{res.stdout[-4000:]}{res.stderr[-4000:]}"
    )
    uncovered = {f: [r["start"]["row"] for r in v.get("not_covered", [])] for f, v in report["files"].items()}
    assert report["coverage"] >= MIN_COVERAGE, (
        f"Rego line coverage {report['coverage']:.1f}% < {MIN_COVERAGE}%; uncovered lines: "
        f"{ {f: rows for f, rows in uncovered.items() if rows} }"
    )


def test_policy_check_script(opa: str) -> None:
    res = run(["bash", str(REPO / "hack" / "policy-check.sh")])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "line coverage" in res.stderr
