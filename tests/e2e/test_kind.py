"""End to end on kind: the real image, the chart, Prometheus, the simulator and a load producer in the cluster.

The scenario itself (scale up under load, back down when it drops) is tests/e2e/scenario.py, shared with the
local-control-plane variant (tests/integration/test_chart_scenario.py). Skips, saying why, without Docker.
"""

from __future__ import annotations

import json
import urllib.parse

import pytest
from scenario import JobLoad, Kubectl, KubectlCluster, ScaleScenario

pytestmark = pytest.mark.e2e

NAMESPACE = "chanscale-demo"


def test_scales_up_under_load_and_back_down(kubectl: Kubectl, image: str, chart_release: str) -> None:
    kubectl("create", "namespace", NAMESPACE)
    sc = ScaleScenario(namespace=NAMESPACE, image=image)
    cluster = KubectlCluster(kubectl)
    cluster.apply(sc.manifests(with_simulator=True), NAMESPACE)
    ready = kubectl("-n", NAMESPACE, "rollout", "status", "deployment/chanscale-sim", "--timeout=300s")
    assert ready.returncode == 0, f"the simulator did not become ready: {ready.stderr}"

    history = sc.run(cluster, JobLoad(kubectl, image), with_simulator=True, apply=False)

    assert max(n or 0 for _, _, n in history) >= sc.scaled_up_at_least
    pool = cluster.workerpool(NAMESPACE, sc.pool)
    assert pool is not None
    conditions = {c["type"]: c["status"] for c in pool.get("status", {}).get("conditions", [])}
    assert conditions.get("Ready") == "True", json.dumps(pool.get("status"), indent=2)


def test_operator_metrics_reach_prometheus(kubectl: Kubectl, chart_release: str) -> None:
    """The operator's own metrics are scraped (pod annotations set through the chart's podAnnotations) and show
    the scale-ups of the scenario test."""
    query = "sum(chanscale_scale_total)"
    res = kubectl(
        "-n",
        "monitoring",
        "exec",
        "deploy/prometheus",
        "--",
        "wget",
        "-qO-",
        "http://127.0.0.1:9090/api/v1/query?query=" + urllib.parse.quote(query),
    )
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)["data"]["result"]
    assert result and float(result[0]["value"][1]) > 0, f"{query}: {res.stdout}"
