"""The e2e scenario (tests/e2e/scenario.py) on the local control plane, with the chart's own objects.

What is real here: the API server and controllers, the chart's rendered RBAC/ServiceAccount/ConfigMap/... applied
for real, the operator process authenticating with a token of the chart's ServiceAccount (so it works with exactly
the chart's least-privilege RBAC), OPA run with the sidecar's flags on the chart's policy ConfigMap as the kubelet
mounts it, Prometheus, and the channel simulator. What differs from kind: no kubelet (pods never run), so the
operator, OPA and the simulator are local processes instead of pods.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from test_chart import _get, render, start_opa_from_chart

from chanscale.local.binaries import REPO_ROOT
from chanscale.local.process import LOOPBACK, ManagedProcess, free_port, wait_until

pytestmark = pytest.mark.integration


def _scenario_module() -> ModuleType:
    """tests/e2e is not a package: load the shared scenario by path."""
    spec = importlib.util.spec_from_file_location("chanscale_e2e_scenario", REPO_ROOT / "tests/e2e/scenario.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


scenario = _scenario_module()


def _start_opa_from_chart(docs: list[dict[str, Any]], tmp_path: Path) -> tuple[ManagedProcess, str]:
    proc, api_url, _diag_url = start_opa_from_chart(docs, tmp_path)
    return proc, api_url


def test_scale_up_and_down_with_the_charts_rbac_and_policies(
    namespace: str,
    kubectl: Any,
    control_plane: Any,
    kubeconfig: Path,
    prometheus_targets: Any,
    operator_process: Any,
    tmp_path: Path,
) -> None:
    release = f"cs-{namespace[-6:]}"
    docs = render("--namespace", namespace, "--set", f"operator.watchNamespaces={{{namespace}}}", release=release)
    objects = [d for d in docs if d["kind"] != "Pod"]  # the helm test hook is not part of an install
    applied = kubectl.apply(objects, namespace, "--server-side", "--field-manager=helm")
    cluster_scoped = [d for d in objects if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    opa: ManagedProcess | None = None
    sim: ManagedProcess | None = None
    try:
        assert applied.returncode == 0, applied.stderr
        opa, opa_url = _start_opa_from_chart(docs, tmp_path)

        token = control_plane.create_token(namespace, f"{release}-chanscale")
        sa_kubeconfig = control_plane.write_token_kubeconfig(token, tmp_path / "sa.kubeconfig")

        sc = scenario.ScaleScenario(namespace=namespace, poll=1.0, log=lambda m: print(m, flush=True))
        sim_cfg = tmp_path / "channels.yaml"
        sim_cfg.write_text(yaml.safe_dump(sc.sim_config()))
        cluster = scenario.KubectlCluster(kubectl)
        cluster.apply(sc.manifests(with_simulator=False), namespace)

        sim_port = free_port()
        sim = ManagedProcess(
            "sim",
            [
                sys.executable,
                "-m",
                "chanscale",
                "sim",
                "--config",
                str(sim_cfg),
                "--listen",
                f"{LOOPBACK}:{sim_port}",
                "--kubeconfig",
                str(kubeconfig),
                "--replicas-from",
                "spec",
            ],
            tmp_path / "sim.log",
        ).start()
        wait_until(lambda: _get(f"http://{LOOPBACK}:{sim_port}/state") is not None, 30, "simulator /state", [sim])
        prometheus_targets.add(f"{LOOPBACK}:{sim_port}")

        operator_process(namespaces=[namespace], opa=opa_url, kubeconfig_path=sa_kubeconfig)
        history = sc.run(cluster, scenario.HttpLoad(f"http://{LOOPBACK}:{sim_port}"), with_simulator=False, apply=False)
        assert max(n or 0 for _, _, n in history) >= sc.scaled_up_at_least
    finally:
        for proc in (sim, opa):
            if proc is not None:
                proc.stop()
        for d in cluster_scoped:
            kubectl("delete", d["kind"], d["metadata"]["name"], "--ignore-not-found", "--wait=false")
