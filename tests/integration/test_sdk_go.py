"""`go vet` and `go test` of the Go modules in this repository (the SDK and the example NATS worker), so that CI
runs them with the rest of the suite."""

from __future__ import annotations

import os
import subprocess

import pytest

from chanscale.local.binaries import REPO_ROOT, BinaryNotFound, find_binary

pytestmark = pytest.mark.integration

MODULES = ["sdk/go", "examples/nats-worker"]


@pytest.mark.parametrize("module", MODULES)
def test_go_module_vets_and_passes_its_tests(module: str) -> None:
    try:
        go = str(find_binary("go"))
    except BinaryNotFound as exc:
        pytest.fail(str(exc))
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false"}
    for argv in ([go, "vet", "./..."], [go, "test", "-count=1", "./..."]):
        done = subprocess.run(argv, cwd=REPO_ROOT / module, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{' '.join(argv[1:])} in {module}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
