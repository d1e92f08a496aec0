"""The operator image leaves the harness and the demo out (hack/image_rootfs.py's HARNESS list): the operator's
entry points must import without them, and without the `demo` extra's cryptography and matplotlib."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from chanscale.local.binaries import REPO_ROOT

pytestmark = pytest.mark.unit


def _harness() -> list[str]:
    spec = importlib.util.spec_from_file_location("image_rootfs", REPO_ROOT / "hack" / "image_rootfs.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return [f"chanscale.{m.replace('/', '.')}" for m in mod.HARNESS]


def test_operator_entry_points_import_without_the_harness_and_the_demo_extra() -> None:
    blocked = [*_harness(), "cryptography", "matplotlib", "pandas"]
    code = (
        "import sys\n"
        f"for m in {blocked!r}: sys.modules[m] = None  # importing any of them now fails\n"
        "import chanscale.cli, chanscale.handlers, chanscale.policy, chanscale.reconcile, chanscale.sim.exporter\n"
        "from chanscale.cli import build_parser\n"
        "build_parser().parse_args(['run'])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert res.returncode == 0, res.stderr


def test_the_final_image_stage_is_from_scratch() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    stages = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert stages[-1] == "scratch", stages


def test_demo_real_refuses_a_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from chanscale.demo import main

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("")
    args = argparse.Namespace(out=str(tmp_path), kubeconfig=str(kubeconfig), duration=60, no_tui=True, real=True)
    assert main(args) == 2
    assert "examples/nats/jetstream.yaml" in capsys.readouterr().err
