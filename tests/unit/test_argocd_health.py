"""The Argo CD WorkerPool health check, run by a real Lua interpreter on Argo CD's own test-case format.

Why a real interpreter: the check ships as Lua inside argocd-cm, and a Python re-implementation would test
our reading of the rules, not the script Argo CD runs. Argo CD embeds gopher-lua (Lua 5.1); the script is
written for 5.1 and is run here by ``lua5.4`` (required) and also by ``lua5.1`` when that is installed.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "deploy" / "argocd"
CHECK_DIR = ARGOCD / "resource_customizations" / "chanscale.dev" / "WorkerPool"
HEALTH_LUA = CHECK_DIR / "health.lua"
HEALTH_CM = ARGOCD / "argocd-cm-health.yaml"
HEALTH_KEY = "resource.customizations.health.chanscale.dev_WorkerPool"
VALID_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def _lua_string(text: str) -> str:
    """Quote a string for Lua; bytes outside printable ASCII become decimal escapes (valid in 5.1 and 5.4)."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch in '\\"':
            out.append("\\" + ch)
        elif 32 <= byte < 127:
            out.append(ch)
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def to_lua(value: Any) -> str:
    """Render a decoded YAML value as a Lua table constructor, as Argo CD hands objects to health scripts."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dt.datetime | dt.date):
        return _lua_string(value.isoformat().replace("+00:00", "Z"))
    if isinstance(value, str):
        return _lua_string(value)
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if isinstance(value, dict):
        items = (f"[{_lua_string(str(k))}] = {to_lua(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"cannot render {type(value).__name__} as Lua")


def lua_interpreters() -> list[str]:
    """lua5.4 is required (the test fails without it); lua5.1, Argo CD's dialect, is used too when present."""
    found = ["lua5.4"]
    if shutil.which("lua5.1"):
        found.append("lua5.1")
    return found


def run_health(lua: str, obj: dict[str, Any], tmp_path: Path) -> tuple[str, str]:
    """Run health.lua with ``obj`` bound as Argo CD binds it, returning (status, message)."""
    exe = shutil.which(lua)
    if exe is None:
        pytest.fail(f"{lua} is not installed: apt-get install -y {lua}  (the Debian/Ubuntu package name)")
    wrapper = tmp_path / "run.lua"
    wrapper.write_text(
        f"obj = {to_lua(obj)}\n"
        f"local hs = dofile({_lua_string(str(HEALTH_LUA))})\n"
        'io.write(tostring(hs.status), "\\n", tostring(hs.message))\n'
    )
    proc = subprocess.run([exe, str(wrapper)], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, f"{lua} failed on the health check:\n{proc.stderr}"
    status, _, message = proc.stdout.partition("\n")
    return status, message


def _cases() -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    spec = yaml.safe_load((CHECK_DIR / "health_test.yaml").read_text())
    cases = []
    for case in spec["tests"]:
        obj = yaml.safe_load((CHECK_DIR / case["inputPath"]).read_text())
        cases.append((Path(case["inputPath"]).stem, obj, case["healthStatus"]))
    return cases


CASES = _cases()


@pytest.mark.parametrize("lua", lua_interpreters())
@pytest.mark.parametrize(("name", "obj", "expected"), CASES, ids=[c[0] for c in CASES])
def test_health_case(lua: str, name: str, obj: dict[str, Any], expected: dict[str, str], tmp_path: Path) -> None:
    status, message = run_health(lua, obj, tmp_path)
    assert (status, message) == (expected["status"], expected["message"]), f"case {name}"


def test_every_status_is_covered() -> None:
    """Each of the four outcomes the check produces has at least one case; every case is a valid status."""
    statuses = {c[2]["status"] for c in CASES}
    assert statuses <= VALID_STATUSES
    assert {"Healthy", "Progressing", "Degraded", "Suspended"} <= statuses


def test_every_testdata_file_is_used() -> None:
    used = {c[0] for c in CASES}
    on_disk = {p.stem for p in (CHECK_DIR / "testdata").glob("*.yaml")}
    assert on_disk == used, f"testdata files without a case: {sorted(on_disk - used)}"


def test_argocd_cm_carries_the_same_script() -> None:
    """The argocd-cm patch is generated from health.lua; drift means hack/sync-generated.sh was not re-run."""
    cm = yaml.safe_load(HEALTH_CM.read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"][HEALTH_KEY].rstrip("\n") == HEALTH_LUA.read_text().rstrip("\n"), (
        "deploy/argocd/argocd-cm-health.yaml is stale: run hack/sync-generated.sh"
    )


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _applications() -> dict[str, dict[str, Any]]:
    apps = {}
    for path in sorted(ARGOCD.rglob("*.yaml")):
        for doc in _docs(path):
            if doc.get("kind") == "Application":
                apps[doc["metadata"]["name"]] = doc
    return apps


def test_examples_sync_after_the_operator() -> None:
    """CRs need their CRD and the operator first: the examples Application is in a later sync wave."""
    apps = _applications()

    def wave(name: str) -> int:
        return int(apps[name]["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))

    assert wave("chanscale-examples") > wave("chanscale")


def test_git_carries_no_replica_count_for_argocd_to_apply() -> None:
    """Argo CD writes spec.replicas only if its apply names it: the workers in Git carry no count, the examples
    Application applies server-side, and RespectIgnoreDifferences (which copies the cached live count into the
    apply, racing the operator; tests/integration/test_argocd.py) is not set. ignoreDifferences stays for UIs."""
    app = _applications()["chanscale-examples"]
    options = app["spec"]["syncPolicy"]["syncOptions"]
    assert "ServerSideApply=true" in options
    assert "RespectIgnoreDifferences=true" not in options
    rules = app["spec"]["ignoreDifferences"]
    assert any(r.get("kind") == "Deployment" and "/spec/replicas" in r.get("jsonPointers", []) for r in rules), rules
    for doc in _docs(ROOT / "examples" / "worker.yaml"):
        if doc["kind"] == "Deployment":
            assert "replicas" not in doc["spec"], "examples/worker.yaml must not carry spec.replicas"


def test_chart_application_uses_server_side_apply() -> None:
    """The WorkerPool CRD is too large for client-side apply's last-applied annotation."""
    app = _applications()["chanscale"]
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
