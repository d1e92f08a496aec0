"""The Grafana dashboard (charts/chanscale/files/dashboards/chanscale.json) reads only what the operator exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from chanscale.telemetry import exported_names
from chanscale.tenancy import metric_names

pytestmark = pytest.mark.unit

DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "chanscale" / "files" / "dashboards" / "chanscale.json"
SCRAPE_SERIES = {"up"}  # written by Prometheus for every target, the operator's included


def _queries(dash: dict[str, Any]) -> list[str]:
    panels = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    variables = [v["definition"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return panels + variables


def _as_promql(query: str) -> str:
    """Grafana's macros and variables -> plain PromQL the parser accepts; label_values(m, l) -> m."""
    m = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
    if m:
        query = m.group(1)
    return query.replace("$__rate_interval", "5m").replace("${datasource}", "x").replace("$", "")


def test_dashboard_is_valid_json_with_unique_panel_ids() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] == "chanscale-overview"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dash["panels"]), "no hard-coded data source"


def test_every_query_names_metrics_the_operator_exports() -> None:
    exported = exported_names() | SCRAPE_SERIES
    queries = _queries(json.loads(DASHBOARD.read_text()))
    assert queries
    seen: set[str] = set()
    for q in queries:
        names = metric_names(_as_promql(q))
        assert names, f"no metric in {q!r}"
        assert names <= exported, f"{q!r} reads {sorted(names - exported)}, which the operator does not export"
        seen |= names
    per_pool = {"chanscale_pool_replicas", "chanscale_pool_desired_replicas", "chanscale_pool_slo_met"}
    assert per_pool <= seen, "the dashboard shows each pool's replicas and SLO"


def test_pool_selectors_use_the_exported_namespace_label() -> None:
    """Scraped with honor_labels: false, the pool's namespace is exported_namespace (docs/operations.md)."""
    for q in _queries(json.loads(DASHBOARD.read_text())):
        assert 'namespace=~"$namespace"' not in q.replace("exported_namespace", ""), q
