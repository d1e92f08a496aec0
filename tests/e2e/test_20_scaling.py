"""Scaling with real pods: examples/ (worker, simulator, WorkerPool) in a watched namespace, load from
examples/load.yaml Jobs. The simulator counts the worker Deployment's *ready* pods as its workers, so the loop
includes real pod start-up on the kubelet. Then everything a user looks at from outside the cluster: `kubectl get
wp`, the Events, `chanscale explain` (run on this machine with the kind kubeconfig) and the operator's metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from kindstack import REPO_ROOT, KindStack
from kindtest import Sample, all_pods_ready, clean, describe, events_for, observe, rollout, wait_for
from scenario import JobLoad, KubectlCluster, ScaleScenario

pytestmark = pytest.mark.e2e

NS = "e2e-scale"
# How long SLOMet=True must hold to speak for a whole P99 window: the pool's rate window (the example's default,
# 1m), two of Prometheus' scrapes (2 s here), the operator's tick (5 s, chart-values.yaml) and two polls.
SLO_HELD = 60 + 2 * 2 + 5 + 2 * 3


@pytest.fixture(scope="module")
def scale_ns(stack: KindStack) -> Iterator[str]:
    """The namespace of this module's scenario; its objects stay for the tests that look at the result."""
    clean(stack, NS)
    yield NS
    clean(stack, NS)


def test_burst_scales_real_pods_up_and_back_down_within_the_slo(
    stack: KindStack, cluster: KubectlCluster, scale_ns: str
) -> None:
    ns = scale_ns
    sc = ScaleScenario(namespace=ns, image=stack.images.operator, replicas_from="ready", log=stack.log)
    cluster.apply(sc.manifests(with_simulator=True), ns)
    rollout(stack, ns, "chanscale-sim")
    load = JobLoad(stack.kubectl, stack.images.operator)

    load.set_rate(ns, sc.channel, sc.low_rate)
    sc.wait_replicas(cluster, lambda n: n <= sc.scaled_down_at_most, "baseline at low load", sc.up_timeout)

    load.set_rate(ns, sc.channel, sc.high_rate)
    sc.wait_replicas(cluster, lambda n: n >= sc.scaled_up_at_least, "scale-up under the burst", sc.up_timeout)
    # The new pods really start on the kubelet and pass their readiness.
    wait_for(
        "every worker pod Ready",
        lambda: all_pods_ready(stack, ns, sc.worker, sc.scaled_up_at_least),
        300,
        explain=lambda: stack.kubectl("-n", ns, "get", "pods", "-o", "wide").stdout,
    )

    # The SLO is honoured under the burst: once the backlog of the step has drained and the latency window has
    # moved past it, the pool reports SLOMet=True with the load still high. A single SLOMet=True is not that: right
    # after the step it is still the baseline's, before the messages that queued while the new pods started have
    # reached the P99 window (CI once passed on it, then met the burst's P99 during the scale-down). SLOMet=True held
    # for a whole window is: any of those messages in it would have turned the condition False on the way.
    samples: list[Sample] = []
    held_since: list[float] = []

    def slo_met_at_high_load() -> bool:
        samples.append(observe(stack, ns, sc.pool, sc.worker))
        s = samples[-1]
        if s.cond("SLOMet")[0] != "True" or (s.replicas or 0) < sc.scaled_up_at_least:
            held_since.clear()
            return False
        held_since[:] = held_since or [s.t]
        return s.t - held_since[0] >= SLO_HELD

    wait_for("SLOMet=True at high load", slo_met_at_high_load, 420, poll=3, explain=lambda: describe(samples))

    # Back down, without missing the SLO on the way.
    load.set_rate(ns, sc.channel, sc.low_rate)
    down: list[Sample] = []

    def scaled_down() -> bool:
        down.append(observe(stack, ns, sc.pool, sc.worker))
        return (down[-1].replicas or 99) <= sc.scaled_down_at_most

    wait_for("scale-down at low load", scaled_down, sc.down_timeout, poll=3, explain=lambda: describe(down))
    missed = [s for s in down if s.cond("SLOMet")[0] == "False"]
    assert not missed, "SLO missed while scaling down:\n" + describe(missed)


def test_kubectl_events_and_explain_work_from_outside(stack: KindStack, scale_ns: str) -> None:
    """After the burst: the pool's printer columns, its Scaled Events and `chanscale explain`, all from the host."""
    table = stack.must("-n", NS, "get", "wp")
    header = table.splitlines()[0].split()
    assert header[:3] == ["NAME", "CHANNEL", "REPLICAS"], table
    assert any(line.split()[:2] == ["orders", "orders"] for line in table.splitlines()[1:]), table
    wide = stack.must("-n", NS, "get", "wp", "-o", "wide")
    assert "LIMITED BY" in wide.splitlines()[0], wide

    scaled = [e for e in events_for(stack, NS, "orders") if e["reason"] == "Scaled"]
    assert scaled, stack.kubectl("-n", NS, "get", "events").stdout
    assert any("->" in e["message"] for e in scaled), [e["message"] for e in scaled]

    env = {**os.environ, "KUBECONFIG": str(stack.kubeconfig)}
    explain = subprocess.run(
        [sys.executable, "-m", "chanscale", "explain", f"{NS}/orders", "--kubeconfig", str(stack.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )
    assert explain.returncode == 0, explain.stderr
    out = explain.stdout
    assert out.startswith(f"WorkerPool {NS}/orders"), out
    assert "Last decision at" in out and "why:" in out, out
    for cond in ("Ready", "MetricsAvailable", "SLOMet"):
        assert cond in out, out
    as_json = subprocess.run(
        [sys.executable, "-m", "chanscale", "explain", f"{NS}/orders", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["lastDecision"]["outcome"] in ("ScaleUp", "ScaleDown"), as_json.stdout


def test_scaling_shows_in_the_operators_metrics(stack: KindStack, scale_ns: str) -> None:
    """chanscale_scale_total counted the scale-ups and -downs; the pool's namespace is the exporter's own label
    (exported_namespace): the target label `namespace` is the operator pod's, by the scrape config."""

    def both_directions() -> dict[str, float] | None:
        rows = stack.prom_query(f'sum by (direction) (chanscale_scale_total{{exported_namespace="{NS}"}})')
        got = {r["metric"]["direction"]: float(r["value"][1]) for r in rows}
        return got if got.get("up", 0) > 0 and got.get("down", 0) > 0 else None

    wait_for("chanscale_scale_total counting scale-ups and scale-downs", both_directions, 60, poll=3)
