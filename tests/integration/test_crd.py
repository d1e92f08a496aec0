"""The WorkerPool CRD against a real API server: accepted, printer columns, and malformed pools rejected.

Validation lives in the CRD (OpenAPI schema + CEL rules) so a bad pool never reaches the operator; these tests
prove the API server really enforces it and that each rejection names the offending field, which is what a user
reads in `kubectl apply` output.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from chanscale.local.harness import Kubectl, OperatorFactory
from chanscale.local.process import wait_until

pytestmark = pytest.mark.integration

COLUMNS = ["NAME", "CHANNEL", "REPLICAS", "DESIRED", "MIN", "MAX", "TARGET", "READY", "REASON", "SLO MET", "AGE"]
WIDE_COLUMNS = [*COLUMNS[:-1], "BACKLOG", "P99", "MODE", "LIMITED BY", "AGE"]


def valid_pool(name: str = "orders") -> dict[str, Any]:
    """The smallest sensible WorkerPool; each malformed case breaks exactly one thing in a copy of it."""
    return {
        "apiVersion": "chanscale.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": {
            "channel": "orders",
            "scaleTargetRef": {"name": "orders-worker"},
            "minReplicas": 1,
            "maxReplicas": 10,
            "slo": {"p99LatencySeconds": 0.25},
        },
    }


def _header(table: str) -> list[str]:
    """Column names of a kubectl table (split on runs of 2+ spaces: 'SLO MET' and 'LIMITED BY' keep their space)."""
    return re.split(r"\s{2,}", table.splitlines()[0].strip())


def test_crd_is_established_with_names(kubectl: Kubectl) -> None:
    crd = kubectl.json("get", "crd", "workerpools.chanscale.dev")
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions.get("Established") == "True", conditions
    assert conditions.get("NamesAccepted") == "True", conditions
    assert crd["status"]["acceptedNames"]["shortNames"] == ["wp"]


def test_valid_pool_is_accepted_and_listed_with_printer_columns(kubectl: Kubectl, namespace: str) -> None:
    res = kubectl.apply(valid_pool(), namespace)
    assert res.returncode == 0, res.stderr

    table = kubectl("get", "wp", "-n", namespace)
    assert table.returncode == 0, table.stderr
    assert _header(table.stdout) == COLUMNS, table.stdout
    row = table.stdout.splitlines()[1].split()
    assert row[:2] == ["orders", "orders"], table.stdout

    wide = kubectl("get", "workerpools", "-n", namespace, "-o", "wide")
    assert _header(wide.stdout) == WIDE_COLUMNS, wide.stdout
    # Defaults are applied by the API server, so the operator always sees a complete spec.
    assert "Active" in wide.stdout.splitlines()[1]
    # The `chanscale` category lists pools too (`kubectl get chanscale`).
    by_category = kubectl("get", "chanscale", "-n", namespace, "-o", "name")
    assert by_category.stdout.strip() == "workerpool.chanscale.dev/orders", by_category


def test_printer_columns_show_status(kubectl: Kubectl, namespace: str) -> None:
    """The columns read the status fields the operator writes (status subresource)."""
    assert kubectl.apply(valid_pool(), namespace).returncode == 0
    status = {
        "status": {
            "replicas": 3,
            "desiredReplicas": 5,
            "signals": {"backlog": 120, "p99LatencySeconds": 0.4},
            "targetName": "orders-worker",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "TargetNotFound"},
                {"type": "SLOMet", "status": "False", "reason": "LatencyAboveSLO"},
            ],
            "lastDecision": {"limitedBy": ["scaleUpPolicy"]},
        }
    }
    patched = kubectl(
        "patch", "wp", "orders", "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )
    assert patched.returncode == 0, patched.stderr
    wide = kubectl("get", "wp", "orders", "-n", namespace, "-o", "wide").stdout.splitlines()
    values = dict(zip(_header(wide[0]), [v.strip() for v in _split_row(wide)], strict=True))
    assert values["REPLICAS"] == "3", wide
    assert values["DESIRED"] == "5", wide
    assert values["BACKLOG"] == "120", wide
    assert values["P99"] == "0.4", wide
    assert values["SLO MET"] == "False", wide
    assert values["LIMITED BY"] == "scaleUpPolicy", wide
    assert (values["READY"], values["REASON"], values["TARGET"]) == ("False", "TargetNotFound", "orders-worker"), wide
    assert (values["MIN"], values["MAX"]) == ("1", "10"), wide


def _split_row(lines: list[str]) -> list[str]:
    """Cut the data row at the header's column starts (values may be empty or contain spaces)."""
    header, row = lines[0], lines[1]
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=\s{2}))\S", header)]
    bounds = [*starts[1:], None]
    return [row[s:e] for s, e in zip(starts, bounds, strict=True)]


# -------------------------------------------------------------------------------------- malformed pools
Mutator = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutator:
    """A mutation setting spec.<path> (dot-separated) to value."""

    def mutate(pool: dict[str, Any]) -> None:
        node = pool["spec"]
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    return mutate


def _delete(path: str) -> Mutator:
    def mutate(pool: dict[str, Any]) -> None:
        node = pool["spec"]
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[key]
        del node[leaf]

    return mutate


def _both(*mutators: Mutator) -> Mutator:
    def mutate(pool: dict[str, Any]) -> None:
        for m in mutators:
            m(pool)

    return mutate


_TEMPLATE = {"spec": {"containers": [{"name": "w", "image": "worker:1"}]}}


def _policy(**overrides: Any) -> list[dict[str, Any]]:
    return [{"type": "Pods", "value": 4, "periodSeconds": 15, **overrides}]


# (id, mutation, substrings the error message must contain - the field path first)
MALFORMED: list[tuple[str, Mutator, list[str]]] = [
    ("min-greater-than-max", _both(_set("minReplicas", 5), _set("maxReplicas", 2)), ["spec.minReplicas"]),
    ("both-target-and-template", _set("template", _TEMPLATE), ["spec.scaleTargetRef", "spec.template"]),
    ("neither-target-nor-template", _delete("scaleTargetRef"), ["spec.scaleTargetRef", "spec.template"]),
    ("zero-p99", _set("slo.p99LatencySeconds", 0), ["spec.slo.p99LatencySeconds"]),
    ("negative-p99", _set("slo.p99LatencySeconds", -1), ["spec.slo.p99LatencySeconds"]),
    ("promql-injection-in-channel", _set("channel", 'a"} or vector(1) #'), ["spec.channel"]),
    ("empty-channel", _set("channel", ""), ["spec.channel"]),
    ("channel-too-long", _set("channel", "c" * 129), ["spec.channel"]),
    ("unknown-field", _set("replicaCount", 3), ['unknown field "spec.replicaCount"']),
    ("unknown-nested-field", _set("slo.p99", 0.2), ['unknown field "spec.slo.p99"']),
    ("absurd-max-replicas", _set("maxReplicas", 10**9), ["spec.maxReplicas"]),
    ("negative-min-replicas", _set("minReplicas", -1), ["spec.minReplicas"]),
    ("max-replicas-not-a-number", _set("maxReplicas", "ten"), ["spec.maxReplicas"]),
    ("missing-max-replicas", _delete("maxReplicas"), ["spec.maxReplicas"]),
    ("missing-slo", _delete("slo"), ["spec.slo"]),
    ("bad-mode", _set("mode", "Aggressive"), ["spec.mode"]),
    (
        "bad-policy-type",
        _set("behavior.scaleUp.policies", _policy(type="Replicas")),
        ["spec.behavior.scaleUp.policies[0].type"],
    ),
    (
        "period-over-1800",
        _set("behavior.scaleDown.policies", _policy(periodSeconds=3600)),
        ["spec.behavior.scaleDown.policies[0].periodSeconds"],
    ),
    ("bad-select-policy", _set("behavior.scaleUp.selectPolicy", "Maximum"), ["spec.behavior.scaleUp.selectPolicy"]),
    ("fallback-static-without-replicas", _set("fallback", {"behavior": "static"}), ["spec.fallback"]),
    (
        "fallback-replicas-above-max",
        _set("fallback", {"behavior": "static", "replicas": 50}),
        ["spec.fallback.replicas"],
    ),
    (
        "bad-prometheus-address",
        _set("metrics.prometheusAddress", "prometheus:9090"),
        ["spec.metrics.prometheusAddress"],
    ),
    ("bad-rate-window", _set("metrics.rateWindow", "5 minutes"), ["spec.metrics.rateWindow"]),
    ("error-rate-above-one", _set("slo.maxErrorRate", 1.5), ["spec.slo.maxErrorRate"]),
    ("target-kind-lowercase", _set("scaleTargetRef.kind", "statefulset"), ["spec.scaleTargetRef.kind"]),
    ("target-core-group", _set("scaleTargetRef.apiVersion", "v1"), ["spec.scaleTargetRef.apiVersion"]),
    (
        "template-without-containers",
        _both(_delete("scaleTargetRef"), _set("template", {"spec": {"containers": []}})),
        ["spec.template.spec.containers"],
    ),
    ("zero-target-utilization", _set("model.targetUtilization", 0), ["spec.model.targetUtilization"]),
    # The decision rule and the failure policy belong to the cluster admin (docs/security.md).
    (
        "policy-path-bypass",
        _set("policy.path", "chanscale/lib/scaling_up"),
        ["spec.policy.path", "spec.policy.profile"],
    ),
    ("failure-policy-chosen-by-pool", _set("policy.failurePolicy", "Allow"), ["spec.policy.failurePolicy"]),
    ("bad-profile-name", _set("policy.profile", "No Guards"), ["spec.policy.profile"]),
    (
        "unknown-guard-parameter",
        _set("policy.parameters.caps.maxReplica", 3),
        ['unknown field "spec.policy.parameters.caps.maxReplica"'],
    ),
    ("unknown-guard", _set("policy.parameters.capz", {}), ['unknown field "spec.policy.parameters.capz"']),
    (
        "override-without-reason",
        _set("policy.parameters.caps.override", {"maxReplicas": 30}),
        ["spec.policy.parameters.caps.override.reason"],
    ),
    (
        "window-without-times",
        _set("policy.parameters.windows.windows", [{"name": "w"}]),
        ["spec.policy.parameters.windows.windows[0]", "start and end"],
    ),
    # Empty strings and lists where a value is needed.
    ("empty-query", _set("metrics.queries", {"backlog": ""}), ["spec.metrics.queries.backlog"]),
    ("empty-queries", _set("metrics.queries", {}), ["spec.metrics.queries"]),
    (
        "empty-scale-policies",
        _set("behavior.scaleUp.policies", []),
        ["spec.behavior.scaleUp", "selectPolicy: Disabled"],
    ),
    ("empty-target-name", _set("scaleTargetRef.name", ""), ["spec.scaleTargetRef.name"]),
    # Values that contradict each other.
    (
        "fallback-below-min-replicas",
        _both(_set("minReplicas", 3), _set("fallback", {"behavior": "static", "replicas": 1})),
        ["spec.fallback.replicas must not be below spec.minReplicas"],
    ),
    # Templates that cannot produce a valid Deployment.
    (
        "template-container-without-image",
        _both(_delete("scaleTargetRef"), _set("template", {"spec": {"containers": [{"name": "w"}]}})),
        ["spec.template.spec.containers[0].image"],
    ),
    (
        "template-container-empty-image",
        _both(_delete("scaleTargetRef"), _set("template", {"spec": {"containers": [{"name": "w", "image": ""}]}})),
        ["spec.template.spec.containers[0].image"],
    ),
    (
        "template-duplicate-container-names",
        _both(
            _delete("scaleTargetRef"),
            _set("template", {"spec": {"containers": [_TEMPLATE["spec"]["containers"][0]] * 2}}),
        ),
        ["container names must be unique"],
    ),
    (
        "template-restart-never",
        _both(_delete("scaleTargetRef"), _set("template", {"spec": {"restartPolicy": "Never", **_TEMPLATE["spec"]}})),
        ["spec.template.spec.restartPolicy must be Always"],
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), [pytest.param(m, e, id=i) for i, m, e in MALFORMED])
def test_malformed_pool_is_rejected_naming_the_field(
    kubectl: Kubectl, namespace: str, mutate: Mutator, expected: list[str]
) -> None:
    pool = copy.deepcopy(valid_pool("bad"))
    mutate(pool)

    res = kubectl.apply(pool, namespace)

    assert res.returncode != 0, f"the API server accepted a malformed pool:\n{res.stdout}"
    for needle in expected:
        assert needle in res.stderr, f"rejection does not name {needle!r}:\n{res.stderr}"
    listed = kubectl("get", "wp", "-n", namespace, "-o", "name")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "", f"a rejected pool was created anyway: {listed.stdout}"


def test_at_least_ten_malformed_cases() -> None:
    """The issue asks for >= 10 distinct rejections; keep the table from shrinking unnoticed."""
    assert len(MALFORMED) >= 10


def test_operator_is_unaffected_by_malformed_pools(
    kubectl: Kubectl, namespace: str, operator_process: OperatorFactory
) -> None:
    """Rejected pools never reach the operator: it keeps running and reconciles the valid pool next to them."""
    op = operator_process(namespaces=[namespace])
    for case_id, mutate, _ in MALFORMED:
        pool = copy.deepcopy(valid_pool(f"bad-{case_id}"[:63]))
        mutate(pool)
        assert kubectl.apply(pool, namespace).returncode != 0, case_id
    kubectl("create", "deployment", "orders-worker", "--image=worker:1", "-n", namespace, check=True)

    assert kubectl.apply(valid_pool(), namespace).returncode == 0

    def reconciled() -> bool:
        status = kubectl.json("get", "wp", "orders", "-n", namespace).get("status") or {}
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))

    wait_until(reconciled, 60, "the operator to reconcile the valid pool", [op.proc] if op.proc else [])
    assert op.running
    assert kubectl("get", "wp", "-n", namespace, "-o", "name").stdout.split() == ["workerpool.chanscale.dev/orders"]
