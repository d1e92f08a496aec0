"""`go vet` and `go test` of the Go modules in this repository (the SDK and the example NATS worker), so that CI
runs them with the rest of the suite."""

from __future__ import annotations

import pytest

from chanscale.local.binaries import REPO_ROOT, run_go

pytestmark = pytest.mark.integration

MODULES = ["sdk/go", "examples/nats-worker"]


@pytest.mark.parametrize("module", MODULES)
def test_go_module_vets_and_passes_its_tests(module: str) -> None:
    for args in (["vet", "./..."], ["test", "-count=1", "./..."]):
        done = run_go(args, REPO_ROOT / module)
        assert done.returncode == 0, f"go {' '.join(args)} in {module}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
