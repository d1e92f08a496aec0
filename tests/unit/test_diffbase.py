"""kopf's diff base built without the status and system metadata it drops (chanscale.handlers.SlimDiffBase)."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from chanscale.handlers import SlimDiffBase

pytestmark = pytest.mark.unit


def _pool() -> dict[str, Any]:
    return {
        "apiVersion": "chanscale.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {
            "name": "p1",
            "namespace": "ns",
            "uid": "u1",
            "resourceVersion": "42",
            "generation": 3,
            "labels": {"team": "a"},
            "annotations": {
                "chanscale.dev/last-handled-configuration": '{"spec": {"template": {}}}',
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "note": "kept",
            },
            "managedFields": [{"manager": "chanscale", "fieldsV1": {"f:status": {}}}],
            "finalizers": ["chanscale.dev/finalizer"],
        },
        "spec": {"template": {"spec": {"containers": [{"name": "w", "image": "w:1"}]}}, "minReplicas": 1},
        "status": {"replicas": 3, "history": {"scaleEvents": [[1.0, 1, 3]]}, "conditions": [{"type": "Ready"}]},
    }


@pytest.mark.parametrize("extra", [None, ["spec.template"], [("status", "replicas")], ["metadata.generation"]])
def test_the_essence_is_kopfs_own(extra: Any) -> None:
    raw = _pool()
    ours = SlimDiffBase(prefix="chanscale.dev").build(body=kopf.Body(copy.deepcopy(raw)), extra_fields=extra)
    theirs = kopf.AnnotationsDiffBaseStorage(prefix="chanscale.dev").build(body=kopf.Body(raw), extra_fields=extra)
    assert ours == theirs
    assert "status" not in ours or extra == [("status", "replicas")]
