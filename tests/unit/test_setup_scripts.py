"""The set-up scripts behind `make demo` / `make test` on a stock machine: hack/go.sh picks how a new enough Go is
obtained from whatever Go is installed, hack/venv.sh and hack/doctor.sh name the fix for what is missing.
Fake `go` commands on PATH stand in for the installed Go; nothing is downloaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_DIRS = ("/usr/bin", "/bin")
INSTALLED_GO = {"go", "gofmt"}


def system_bin(tmp_path: Path) -> Path:
    """/usr/bin and /bin as links in one folder, minus an installed Go: Debian's golang-go puts `go` in /usr/bin
    (the newcomer container has it), and each test decides which `go`, if any, is on PATH."""
    d = tmp_path / "sysbin"
    if not d.exists():
        d.mkdir()
        for src in SYSTEM_DIRS:
            for entry in os.scandir(src):
                if entry.name not in INSTALLED_GO and not os.path.lexists(d / entry.name):
                    (d / entry.name).symlink_to(entry.path)
    return d


def fake_go(tmp_path: Path, version: str | None, *before_system: str) -> str:
    """A PATH whose `go` reports `version` (no `go` at all when None); `before_system` folders come before the
    system's."""
    d = tmp_path / "fakebin"
    d.mkdir(exist_ok=True)
    if version:
        go = d / "go"
        go.write_text(f'#!/bin/sh\n[ "$1 $2" = "env GOVERSION" ] && echo go{version} && exit 0\nexit 1\n')
        go.chmod(0o755)
    return ":".join([str(d), *before_system, str(system_bin(tmp_path))])


def go_sh(path: str, *script: str) -> subprocess.CompletedProcess[str]:
    cmd = f"source {ROOT}/hack/go.sh; " + "; ".join(script)
    return subprocess.run(
        ["bash", "-c", cmd], env={"PATH": path, "HOME": "/nonexistent"}, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("version", "plan"),
    [("1.19.8", "module"), ("1.20", "module"), ("1.21.0", "gotoolchain"), ("1.24.4", "gotoolchain"),
     ("1.26.0", "local"), ("1.26.8", "local"), ("1.27rc1", "local"), (None, "missing")],
)  # fmt: skip
def test_go_plan_follows_the_installed_version(tmp_path: Path, version: str | None, plan: str) -> None:
    assert go_sh(fake_go(tmp_path, version), "go_plan").stdout.strip() == plan


def test_go_between_1_21_and_the_minimum_switches_with_gotoolchain(tmp_path: Path) -> None:
    proc = go_sh(fake_go(tmp_path, "1.24.4"), "go_setup", 'echo "$GOTOOLCHAIN"')
    pins = dict(line.split("=", 1) for line in (ROOT / "hack/versions.env").read_text().splitlines() if "=" in line)
    assert proc.stdout.strip() == pins["GO_TOOLCHAIN"]


def test_without_go_the_error_names_the_apt_get_line(tmp_path: Path) -> None:
    path = fake_go(tmp_path, None)
    setup = go_sh(path, "go_setup")
    assert setup.returncode != 0
    assert "apt-get install -y golang-go" in setup.stderr
    check = subprocess.run([ROOT / "hack/go.sh", "--check"], env={"PATH": path}, capture_output=True, text=True)
    assert check.returncode == 1
    assert check.stdout.startswith("MISSING go:")
    assert "apt-get install -y golang-go" in check.stdout


def test_venv_check_refuses_an_externally_managed_python(tmp_path: Path) -> None:
    """A Python carrying PEP 668's EXTERNALLY-MANAGED marker is MISSING, with the fix: the project's venv."""
    py = tmp_path / "python3"  # answers "yes" to the marker check, like Debian's /usr/bin/python3
    py.write_text('#!/bin/sh\ncase "$2" in *EXTERNALLY-MANAGED*) exit 0 ;; esac\nexit 1\n')
    py.chmod(0o755)
    proc = subprocess.run([ROOT / "hack/venv.sh", "--check", str(py)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stdout.startswith("MISSING python:")
    assert "drop PYTHON=" in proc.stdout


def test_venv_check_plans_the_project_venv(tmp_path: Path) -> None:
    venv_python = tmp_path / ".venv" / "bin" / "python"
    proc = subprocess.run([ROOT / "hack/venv.sh", "--check", str(venv_python)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"make creates the venv {tmp_path / '.venv'}" in proc.stdout


def test_doctor_prints_one_line_per_check_and_the_fix(tmp_path: Path) -> None:
    """Without Go and with tools still to build, doctor fails with a MISSING line that carries the fix."""
    path = fake_go(tmp_path, None, str(Path(sys.executable).parent))
    env = {
        "PATH": path,
        "HOME": str(tmp_path),
        "CHANSCALE_BIN": str(tmp_path / "emptybin"),
        "PYTHON": str(tmp_path / ".venv/bin/python"),
    }
    proc = subprocess.run([ROOT / "hack/doctor.sh", "demo"], env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[doctor] ")]
    missing = [line for line in lines if line.startswith("[doctor] MISSING")]
    assert any(line.startswith("[doctor] MISSING go:") for line in missing), proc.stdout
    assert all("Fix: " in line for line in missing), missing
    for what in ("python:", "tools:", "prometheus:", "ports:", "disk:"):
        assert any(what in line for line in lines), (what, proc.stdout)
