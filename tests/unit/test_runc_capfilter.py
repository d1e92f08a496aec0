"""hack/images/runc-capfilter, the OCI runtime wrapper hack/docker.sh installs where the capability bounding set
lacks capabilities: it must drop exactly the missing ones from the bundle (create/run) and the process file (exec)
and hand runc every argument unchanged. runc is replaced by a script that records its arguments."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = ROOT / "hack" / "images" / "runc-capfilter"
CAPS = ["CAP_CHOWN", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_BPF"]
pytestmark = pytest.mark.unit


def _missing() -> set[str]:
    return set(subprocess.run([str(WRAPPER), "--missing"], capture_output=True, text=True, check=True).stdout.split())


def _run(tmp_path: Path, *args: str) -> list[str]:
    fake = tmp_path / "runc"
    record = tmp_path / "args.json"
    fake.write_text(f'#!/usr/bin/env python3\nimport json, sys\njson.dump(sys.argv[1:], open("{record}", "w"))\n')
    fake.chmod(0o755)
    env = {**os.environ, "CHANSCALE_RUNC": str(fake)}
    subprocess.run([str(WRAPPER), *args], env=env, check=True)
    passed: list[str] = json.loads(record.read_text())
    return passed


def _caps() -> dict[str, list[str]]:
    return {s: list(CAPS) for s in ("bounding", "effective", "permitted", "inheritable", "ambient")}


def test_missing_caps_are_read_from_the_bounding_set() -> None:
    bnd = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("CapBnd:"))
    assert ("CAP_SYS_RESOURCE" in _missing()) == (not int(bnd.split()[1], 16) >> 24 & 1)


def test_create_strips_missing_caps_from_the_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"process": {"capabilities": _caps(), "args": ["sh"]}}))
    args = ["--root", "/run/x", "--log", "/tmp/l", "create", "--bundle", str(bundle), "--pid-file", "p", "id1"]
    assert _run(tmp_path, *args) == args
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["sh"]
    for caps in config["process"]["capabilities"].values():
        assert caps == [c for c in CAPS if c not in _missing()]


def test_exec_strips_missing_caps_from_the_process_file(tmp_path: Path) -> None:
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"capabilities": _caps(), "cwd": "/"}))
    args = ["--root", "/run/x", "exec", "--process", str(process), "--detach", "id1"]
    assert _run(tmp_path, *args) == args
    doc = json.loads(process.read_text())
    assert doc["cwd"] == "/"
    assert doc["capabilities"]["bounding"] == [c for c in CAPS if c not in _missing()]


def test_other_commands_pass_through(tmp_path: Path) -> None:
    args = ["--root", "/run/x", "delete", "--force", "id1"]
    assert _run(tmp_path, *args) == args
