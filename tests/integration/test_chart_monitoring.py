"""The chart's PrometheusRule against the real tools and the real operator.

- ``promtool check rules`` accepts the rendered rules, and ``promtool test rules`` fires each alert on series named
  and labelled as the operator exports them (and not on healthy ones);
- every metric the rules read is one the operator exports (chanscale.telemetry);
- end to end: a real operator, scraped by a real Prometheus the way the chart's ServiceMonitor scrapes it
  (``honor_labels: false``, so the pool's namespace is ``exported_namespace``), makes the fallback alert's expression
  name the pool whose signals are missing, and the operator-down expression fire once the operator stops.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_chart import _binary, one, render
from test_operator_behaviour import create_worker, fast_pool, procs, replicas

from chanscale.local.harness import Kubectl, OperatorFactory
from chanscale.local.process import LOOPBACK, wait_until
from chanscale.local.prometheus import LocalPrometheus
from chanscale.telemetry import exported_names
from chanscale.tenancy import metric_names

pytestmark = pytest.mark.integration

ALERTS = {
    "ChanscaleSLOMissed",
    "ChanscaleMetricsUnavailableFallbackActive",
    "ChanscalePolicyDenials",
    "ChanscaleOperatorDown",
}


def rules(*extra: str) -> dict[str, dict[str, Any]]:
    docs = render("--set", "prometheusRule.enabled=true", "--set", "serviceMonitor.enabled=true", *extra)
    group = one(docs, "PrometheusRule")["spec"]["groups"][0]
    return {r["alert"]: r for r in group["rules"]}


def write_rules(path: Path, *extra: str) -> Path:
    docs = render("--set", "prometheusRule.enabled=true", "--set", "serviceMonitor.enabled=true", *extra)
    path.write_text(yaml.safe_dump({"groups": one(docs, "PrometheusRule")["spec"]["groups"]}, sort_keys=False))
    return path


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_binary("promtool")), *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def test_rules_read_only_metrics_the_operator_exports() -> None:
    found = rules()
    assert set(found) == ALERTS
    exported = exported_names() | {"up"}
    for name, rule in found.items():
        names = metric_names(rule["expr"])
        assert names and names <= exported, f"{name} reads {sorted(names - exported)}"


@pytest.mark.parametrize("label", ["exported_namespace", "namespace"])
def test_promtool_checks_the_rendered_rules(tmp_path: Path, label: str) -> None:
    path = write_rules(tmp_path / "rules.yaml", "--set", f"prometheusRule.poolNamespaceLabel={label}")
    res = promtool("check", "rules", str(path), cwd=tmp_path)
    assert res.returncode == 0 and "SUCCESS: 4 rules found" in res.stdout, res.stdout + res.stderr


def _pool(name: str) -> str:
    return f'exported_namespace="shop", pool="{name}", namespace="chanscale-system", job="cs-chanscale"'


def test_promtool_fires_each_alert_on_operator_series(tmp_path: Path) -> None:
    """Series shaped as the chart's ServiceMonitor stores them; healthy pools raise nothing."""
    write_rules(tmp_path / "rules.yaml")
    found = rules()

    def _exp(alert: str, pool: str | None = None) -> dict[str, Any]:
        labels = {"severity": found[alert]["labels"]["severity"]}
        annotations = dict(found[alert]["annotations"])
        if pool is not None:
            labels.update(exported_namespace="shop", pool=pool)
            for k, v in annotations.items():
                v = v.replace("{{ $labels.exported_namespace }}", "shop")
                annotations[k] = v.replace("{{ $labels.pool }}", pool)
        return {"exp_labels": labels, "exp_annotations": annotations}

    up = 'up{job="cs-chanscale", namespace="chanscale-system", instance="op:8080"}'
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"chanscale_pool_slo_met{{{_pool('late')}}}", "values": "0x20"},
                    {"series": f"chanscale_pool_slo_met{{{_pool('fine')}}}", "values": "1x20"},
                    {"series": f"chanscale_pool_metrics_available{{{_pool('blind')}}}", "values": "0x20"},
                    {
                        "series": f'chanscale_decisions_total{{{_pool("blind")}, outcome="Fallback"}}',
                        "values": "0+1x20",
                    },
                    {"series": f"chanscale_pool_metrics_available{{{_pool('fine')}}}", "values": "1x20"},
                    {
                        "series": f'chanscale_decisions_total{{{_pool("fine")}, outcome="NoChange"}}',
                        "values": "0+1x20",
                    },
                    {
                        "series": f'chanscale_decisions_total{{{_pool("denied")}, outcome="Blocked"}}',
                        "values": "0+1x20",
                    },
                    {"series": up, "values": "1x5 0x15"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "15m",
                        "alertname": "ChanscaleSLOMissed",
                        "exp_alerts": [_exp("ChanscaleSLOMissed", "late")],
                    },
                    {
                        "eval_time": "15m",
                        "alertname": "ChanscaleMetricsUnavailableFallbackActive",
                        "exp_alerts": [_exp("ChanscaleMetricsUnavailableFallbackActive", "blind")],
                    },
                    {
                        "eval_time": "15m",
                        "alertname": "ChanscalePolicyDenials",
                        "exp_alerts": [_exp("ChanscalePolicyDenials", "denied")],
                    },
                    {"eval_time": "4m", "alertname": "ChanscaleOperatorDown", "exp_alerts": []},
                    {
                        "eval_time": "15m",
                        "alertname": "ChanscaleOperatorDown",
                        "exp_alerts": [_exp("ChanscaleOperatorDown")],
                    },
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    res = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_alert_expressions_against_a_real_operator(
    kubectl: Kubectl, namespace: str, operator_process: OperatorFactory, tmp_path: Path
) -> None:
    """No channel metrics at all: the pool's signals are missing, the static fallback takes over, and the fallback
    alert's expression names exactly this pool; the operator-down expression is empty until the operator stops."""
    create_worker(kubectl, namespace, 1)
    pool = fast_pool(fallback={"behavior": "static", "replicas": 2, "failureThreshold": 2})
    assert kubectl.apply(pool, namespace).returncode == 0
    prom = LocalPrometheus(workdir=tmp_path / "prom", honor_labels=False)  # as the chart's ServiceMonitor scrapes
    prom.start()
    try:
        op = operator_process(namespaces=[namespace], prometheus_url=prom.url)
        target = f"{LOOPBACK}:{op.metrics_port}"
        prom.add_target(target, {"namespace": "chanscale-system"})  # the target's namespace, as a ServiceMonitor sets
        prom.wait_for_target(target)
        found = rules("--set", 'prometheusRule.operatorUpSelector=job="chanscale-local"')
        fallback_expr = found["ChanscaleMetricsUnavailableFallbackActive"]["expr"]
        down_expr = found["ChanscaleOperatorDown"]["expr"]

        wait_until(lambda: replicas(kubectl, namespace) == 2, 60, "the static fallback (2 replicas)", procs(op))

        def fallback_alerts() -> list[dict[str, Any]]:
            return [r["metric"] for r in prom.query(fallback_expr)]

        wait_until(lambda: bool(fallback_alerts()), 60, "the fallback alert expression to name the pool", procs(op))
        assert [(m["exported_namespace"], m["pool"]) for m in fallback_alerts()] == [(namespace, "orders")]
        assert prom.query(down_expr) == []

        op.stop()
        wait_until(lambda: bool(prom.query(down_expr)), 30, "the operator-down expression to fire")
    finally:
        prom.stop()
