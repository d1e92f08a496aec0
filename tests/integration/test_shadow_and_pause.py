"""Adopting chanscale beside a running autoscaler, on the real API server, Prometheus and operator.

- shadow mode: a DryRun pool on a Deployment an HPA owns is not refused; it records the replicas the other
  autoscaler sets (here: a real HPA object, and `kubectl scale` playing its part, since this control plane has no
  metrics API for the HPA controller) beside what chanscale would set, never writes, and `chanscale explain
  --compare` prints both;
- chanscale.dev/paused-replicas: the target is scaled to N and held there under a load that wants more, and
  scaling resumes once the annotation is removed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_operator_behaviour import (
    BURST_RATE,
    channel,
    create_worker,
    decisions_total,
    fast_pool,
    has_condition,
    pool_status,
    procs,
    replicas,
)

from chanscale.local.harness import Kubectl, OperatorFactory, SimFactory
from chanscale.local.process import wait_until

pytestmark = pytest.mark.integration


def samples(kubectl: Kubectl, namespace: str) -> list[list[int]]:
    return list((pool_status(kubectl, namespace).get("shadow") or {}).get("samples") or [])


def test_dry_run_pool_shadows_an_hpa_and_compares(
    kubectl: Kubectl, namespace: str, channel_sim: SimFactory, operator_process: OperatorFactory, kubeconfig: Path
) -> None:
    create_worker(kubectl, namespace, 2)
    channel_sim([channel(namespace, BURST_RATE)])
    hpa = kubectl("autoscale", "deployment", "worker", "-n", namespace, "--min=1", "--max=10", "--cpu-percent=80")
    assert hpa.returncode == 0, hpa.stderr
    assert kubectl.apply(fast_pool(mode="DryRun"), namespace).returncode == 0
    op = operator_process(namespaces=[namespace])

    wait_until(has_condition(kubectl, namespace, "Shadowing", "True"), 60, "Shadowing=True beside the HPA", procs(op))
    wait_until(
        lambda: any(would > actual for _, actual, would in samples(kubectl, namespace)),
        90,
        "a recorded would-be scale-up above the HPA's replicas",
        procs(op),
    )
    assert pool_status(kubectl, namespace)["conditions"][0]["type"] == "Ready"
    kubectl("scale", "deployment", "worker", "-n", namespace, "--replicas=5", check=True)  # the other autoscaler
    wait_until(
        lambda: any(actual == 5 for _, actual, _ in samples(kubectl, namespace)),
        60,
        "the other autoscaler's 5 replicas in the shadow record",
        procs(op),
    )
    deploy = kubectl.json("get", "deployment", "worker", "-n", namespace)
    managers = {f.get("manager") for f in deploy["metadata"].get("managedFields", [])}
    assert "chanscale" not in managers, "a shadowing pool never writes the target"
    assert deploy["spec"]["replicas"] == 5

    argv = [sys.executable, "-m", "chanscale", "explain", f"{namespace}/orders", "--compare"]
    out = subprocess.run(
        [*argv, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "Shadowing HorizontalPodAutoscaler worker" in out.stdout and "chanscale" in out.stdout, out.stdout


def test_paused_replicas_scales_to_n_and_holds(
    kubectl: Kubectl, namespace: str, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    create_worker(kubectl, namespace, 1)
    channel_sim([channel(namespace, BURST_RATE)])  # wants about 8 workers
    pool = fast_pool()
    pool["metadata"]["annotations"] = {"chanscale.dev/paused-replicas": "3"}
    assert kubectl.apply(pool, namespace).returncode == 0
    op = operator_process(namespaces=[namespace])

    wait_until(lambda: replicas(kubectl, namespace) == 3, 60, "the target scaled to the paused 3", procs(op))
    wait_until(
        lambda: pool_status(kubectl, namespace).get("recommendedReplicas", 0) > 3,
        90,
        "the model recommending more than 3 while held",
        procs(op),
    )
    seen = decisions_total(op, namespace)
    wait_until(lambda: decisions_total(op, namespace) >= seen + 5, 60, "five more evaluations", procs(op))
    assert replicas(kubectl, namespace) == 3
    wait_until(has_condition(kubectl, namespace, "Paused", "True"), 30, "Paused=True naming the count", procs(op))

    kubectl("annotate", "wp", "orders", "-n", namespace, "chanscale.dev/paused-replicas-", check=True)
    wait_until(lambda: replicas(kubectl, namespace) > 3, 60, "scaling to resume once unpaused", procs(op))
