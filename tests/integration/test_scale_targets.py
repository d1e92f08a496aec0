"""Any scalable target, on the real API server: a StatefulSet and a custom resource with a /scale subresource (an
"Argo Rollout" shaped CRD), scaled through the scale subresource after discovery; a kind the admin did not enable
is refused before any request.

The channel simulator counts workers from a Deployment of the target's name, which does not exist here, so the
backlog only grows: the model asks for more, which is all these tests need (the target is scaled past its start).
"""

from __future__ import annotations

from typing import Any

import pytest
from test_operator_behaviour import BURST_RATE, channel, fast_pool, pool_status, procs, wait_condition

from chanscale.local.harness import Kubectl, OperatorFactory, SimFactory
from chanscale.local.process import wait_until

pytestmark = pytest.mark.integration

ROLLOUT_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "rollouts.argoproj.io"},
    "spec": {
        "group": "argoproj.io",
        "names": {"kind": "Rollout", "plural": "rollouts", "singular": "rollout", "listKind": "RolloutList"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                "subresources": {
                    "status": {},
                    "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"},
                },
            }
        ],
    },
}


def statefulset(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "w", "image": "registry.invalid/worker:1"}]},
            },
        },
    }


def spec_replicas(kubectl: Kubectl, namespace: str, resource: str, name: str) -> int:
    return int(kubectl.json("get", resource, name, "-n", namespace)["spec"]["replicas"])


def managers(kubectl: Kubectl, namespace: str, resource: str, name: str) -> set[str]:
    obj = kubectl.json("get", resource, name, "-n", namespace, "--show-managed-fields")
    return {f.get("manager", "") for f in obj["metadata"].get("managedFields", [])}


def test_statefulset_is_scaled_through_its_scale_subresource(
    kubectl: Kubectl, namespace: str, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    assert kubectl.apply(statefulset("web", 1), namespace).returncode == 0
    channel_sim([channel(namespace, BURST_RATE, deployment="web")])
    pool = fast_pool(target="web")
    pool["spec"]["scaleTargetRef"].update(kind="StatefulSet", apiVersion="apps/v1")
    assert kubectl.apply(pool, namespace).returncode == 0
    op = operator_process(namespaces=[namespace], extra_args=["--scale-kind", "StatefulSet.apps"])

    wait_until(
        lambda: spec_replicas(kubectl, namespace, "statefulset", "web") > 1, 90, "the StatefulSet scaled up", procs(op)
    )
    assert "chanscale" in managers(kubectl, namespace, "statefulset", "web")
    assert pool_status(kubectl, namespace)["targetName"] == "web"


def test_custom_resource_with_a_scale_subresource_is_scaled(
    kubectl: Kubectl, namespace: str, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    assert kubectl.apply(ROLLOUT_CRD).returncode == 0
    kubectl("wait", "--for=condition=Established", "crd/rollouts.argoproj.io", "--timeout=60s", check=True)
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2},
    }
    assert kubectl.apply(rollout, namespace).returncode == 0
    channel_sim([channel(namespace, BURST_RATE, deployment="web")])
    pool = fast_pool(target="web")
    pool["spec"]["scaleTargetRef"].update(kind="Rollout", apiVersion="argoproj.io/v1alpha1")
    assert kubectl.apply(pool, namespace).returncode == 0
    op = operator_process(namespaces=[namespace], extra_args=["--scale-kind", "Rollout.argoproj.io"])

    wait_until(lambda: spec_replicas(kubectl, namespace, "rollout", "web") > 2, 90, "the Rollout scaled up", procs(op))
    assert "chanscale" in managers(kubectl, namespace, "rollout", "web")


def test_a_kind_the_admin_did_not_enable_is_refused(
    kubectl: Kubectl, namespace: str, operator_process: OperatorFactory
) -> None:
    assert kubectl.apply(statefulset("web", 1), namespace).returncode == 0
    pool = fast_pool(target="web")
    pool["spec"]["scaleTargetRef"].update(kind="StatefulSet", apiVersion="apps/v1")
    assert kubectl.apply(pool, namespace).returncode == 0
    op = operator_process(namespaces=[namespace])

    wait_condition(kubectl, namespace, op, "Ready", "False", "ScaleKindNotEnabled")
    assert "--scale-kind" in pool_status(kubectl, namespace)["conditions"][0]["message"]
    assert spec_replicas(kubectl, namespace, "statefulset", "web") == 1
