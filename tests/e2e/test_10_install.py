"""The chart as users install it: the operator pod and its OPA native sidecar start and become Ready in a namespace
that enforces the restricted Pod Security Standard, `helm test` passes, and Prometheus scrapes the operator."""

from __future__ import annotations

import json

import pytest
from kindstack import RELEASE, RELEASE_NS, KindStack
from kindtest import operator_pod, pod_ready, wait_for

pytestmark = pytest.mark.e2e


def test_operator_pod_and_opa_native_sidecar_are_ready(stack: KindStack) -> None:
    pod = operator_pod(stack)
    assert pod_ready(pod), json.dumps(pod["status"], indent=1)
    spec, status = pod["spec"], pod["status"]

    # OPA is a native sidecar: an init container with restartPolicy Always, started, ready and still running.
    opa = next(c for c in spec.get("initContainers", []) if c["name"] == "opa")
    assert opa.get("restartPolicy") == "Always"
    opa_status = next(s for s in status.get("initContainerStatuses", []) if s["name"] == "opa")
    assert opa_status.get("started") and opa_status.get("ready"), opa_status
    assert "running" in opa_status["state"], opa_status
    operator = next(s for s in status["containerStatuses"] if s["name"] == "operator")
    assert operator["ready"] and "running" in operator["state"], operator

    # Locked down as the restricted profile asks, and admitted by a namespace that enforces it.
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    ns = json.loads(stack.must("get", "namespace", RELEASE_NS, "-o", "json"))
    assert ns["metadata"]["labels"].get("pod-security.kubernetes.io/enforce") == "restricted"


def test_helm_test_passes(stack: KindStack) -> None:
    """`helm test` (already run by the session setup) passes again on demand: its pod checks /healthz and
    /metrics through the Service."""
    out = stack.helm_test()
    assert "chanscale-test-health" in out and "Phase:          Succeeded" in out, out


def test_operator_is_scraped_with_its_own_namespace(stack: KindStack) -> None:
    """Prometheus scrapes the operator pod (podAnnotations) and labels it with the pod's namespace."""
    pod = operator_pod(stack)["metadata"]["name"]

    def scraped() -> list[dict]:
        return [r for r in stack.prom_query(f'up{{pod="{pod}"}}') if r["value"][1] == "1"]

    result = wait_for(f"Prometheus to scrape {pod}", scraped, 120, poll=2)
    assert result[0]["metric"]["namespace"] == RELEASE_NS, result
    # An unlabelled histogram of the operator's own registry exists from the start.
    series = stack.prom_query(f'chanscale_decision_duration_seconds_count{{pod="{pod}"}}')
    assert series, f"chanscale_decision_duration_seconds not scraped from {pod} (release {RELEASE})"
