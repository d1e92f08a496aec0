"""The opt-in direct path against the real control plane: real SDK workers serve /metrics on loopback, their Pod
objects (created by the real controller-manager from a Deployment) get status.podIP 127.0.0.1 and a per-pod
metrics-port annotation (no kubelet here), and the operator — started with --direct-metrics — indexes them through
kopf and reads the backlog from them. A worker that dies makes the reading fall back to Prometheus, with a typed
reason in the pool's DirectMetrics condition and one Event.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_operator_behaviour import condition, event_reasons, fast_pool, pool_status, procs

from chanscale import direct
from chanscale.local.binaries import REPO_ROOT
from chanscale.local.harness import Kubectl, OperatorFactory, PrometheusTargets
from chanscale.local.process import LOOPBACK, ManagedProcess, free_port, wait_until

pytestmark = pytest.mark.integration

PODS = 3
CHANNEL = "orders"


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[tuple[ManagedProcess, int]]]:
    """Three SDK example workers (sdk/python/example.py), each on its own loopback port."""
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'sdk' / 'python'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("POD_NAMESPACE", None)
    started = []
    try:
        for i in range(PODS):
            port = free_port()
            argv = [sys.executable, str(REPO_ROOT / "sdk" / "python" / "example.py"), "--listen", f"{LOOPBACK}:{port}"]
            argv += ["--channel", CHANNEL, "--rate", "30", "--workers", "1", "--service", "0.05"]
            started.append((ManagedProcess(f"worker-{i}", argv, tmp_path / f"worker-{i}.log", env=env).start(), port))
        yield started
    finally:
        for proc, _ in started:
            proc.stop()


def _deployment() -> dict[str, Any]:
    labels = {"app": "worker", direct.LABEL: "true"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "worker"},
        "spec": {
            "replicas": PODS,
            "selector": {"matchLabels": {"app": "worker"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "worker", "image": "registry.invalid/worker:1"}]},
            },
        },
    }


def _pods(kubectl: Kubectl, namespace: str) -> list[str]:
    items = kubectl.json("get", "pods", "-n", namespace, "-l", "app=worker")["items"]
    return sorted(p["metadata"]["name"] for p in items if not p["metadata"].get("deletionTimestamp"))


def _pretend_running(kubectl: Kubectl, namespace: str, pod: str, port: int) -> None:
    """What a kubelet would report, and the pod's declared metrics port (annotations are mutable, ports are not)."""
    res = kubectl("annotate", "pod", pod, "-n", namespace, f"{direct.PORT_ANNOTATION}={port}", "--overwrite")
    assert res.returncode == 0, res.stderr
    status = (
        '{"status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], '
        '"conditions": [{"type": "Ready", "status": "True"}]}}'
    )
    res = kubectl("patch", "pod", pod, "-n", namespace, "--subresource=status", "--type=merge", "-p", status)
    assert res.returncode == 0, res.stderr


def test_backlog_read_from_the_pods_and_a_dead_pod_falls_back_to_prometheus(
    kubectl: Kubectl,
    namespace: str,
    workers: list[tuple[ManagedProcess, int]],
    prometheus_targets: PrometheusTargets,
    operator_process: OperatorFactory,
) -> None:
    for _, port in workers:
        prometheus_targets.add(f"{LOOPBACK}:{port}", {"namespace": namespace})
    assert kubectl.apply(_deployment(), namespace).returncode == 0
    wait_until(lambda: len(_pods(kubectl, namespace)) == PODS, 60, "the controller-manager to create the pods")
    for pod, (_, port) in zip(_pods(kubectl, namespace), workers, strict=True):
        _pretend_running(kubectl, namespace, pod, port)
    # min = max: the count never moves, so the three patched pods stay the Deployment's only pods.
    pool = fast_pool(minReplicas=PODS, maxReplicas=PODS, metrics={"rateWindow": "10s", "direct": {"enabled": True}})
    assert kubectl.apply(pool, namespace).returncode == 0
    op = operator_process(namespaces=[namespace], extra_args=["--direct-metrics"])

    def direct_condition() -> dict[str, Any]:
        return condition(pool_status(kubectl, namespace), "DirectMetrics")

    wait_until(lambda: direct_condition().get("reason") == direct.READ, 90, "a direct reading", procs(op))
    status = pool_status(kubectl, namespace)
    assert status["signals"]["backlogSource"] == "pods", status["signals"]
    assert f"from {PODS} of {PODS} Ready pods" in direct_condition()["message"]
    requests = [ln for ln in op.metrics_text().splitlines() if ln.startswith("chanscale_direct_pod_requests_total")]
    assert requests and float(requests[0].split()[-1]) >= PODS  # every pod of three is sampled

    dead, _ = workers[1]
    dead.stop()
    wait_until(
        lambda: direct_condition().get("reason") == direct.UNREACHABLE,
        90,
        "the fall-back to Prometheus after a pod stopped answering",
        procs(op),
    )
    assert direct_condition()["status"] == "False"
    assert pool_status(kubectl, namespace)["signals"]["backlogSource"] == "prometheus"
    wait_until(
        lambda: direct.UNREACHABLE in event_reasons(kubectl, namespace), 30, "the DirectUnreachable Event", procs(op)
    )
    assert condition(pool_status(kubectl, namespace), "Ready")["status"] == "True"  # the pool is still managed
