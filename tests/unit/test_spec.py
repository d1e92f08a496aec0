"""Spec validation: every error names the field and the fix."""

from typing import Any

import pytest

from chanscale.spec import DEFAULT_SCALE_DOWN, PoolSpec, SpecError

pytestmark = pytest.mark.unit

OK: dict[str, Any] = {
    "channel": "orders",
    "scaleTargetRef": {"name": "w"},
    "maxReplicas": 10,
    "slo": {"p99LatencySeconds": 1},
}


def with_(**over: Any) -> dict[str, Any]:
    d = dict(OK)
    d.update(over)
    return d


def test_defaults() -> None:
    s = PoolSpec.from_dict(OK)
    assert s.min_replicas == 1 and s.mode == "Active" and s.scale_down == DEFAULT_SCALE_DOWN
    assert s.slo.drain_horizon == 30.0
    assert s.policy.profile == "default" and s.policy.parameters == {}
    assert s.target_name("pool") == "w"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (with_(channel='a"} or vector(1) #'), "spec.channel"),
        (with_(minReplicas=5, maxReplicas=2), "spec.minReplicas"),
        (with_(template={"spec": {"containers": [{"name": "c"}]}}), "spec"),
        ({k: v for k, v in OK.items() if k != "scaleTargetRef"}, "spec"),
        (with_(slo={"p99LatencySeconds": -1}), "spec.slo.p99LatencySeconds"),
        (with_(slo={}), "spec.slo.p99LatencySeconds"),
        (with_(maxReplicas=10**9), "spec.maxReplicas"),
        (with_(mode="Sometimes"), "spec.mode"),
        (
            with_(behavior={"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 4000}]}}),
            "spec.behavior.scaleUp.policies[0].periodSeconds",
        ),
        (with_(behavior={"scaleDown": {"selectPolicy": "Most"}}), "spec.behavior.scaleDown.selectPolicy"),
        (with_(fallback={"behavior": "static"}), "spec.fallback.replicas"),
        (with_(metrics={"queries": {"latency": "up"}}), "spec.metrics.queries.latency"),
        (with_(metrics={"rateWindow": "5 minutes"}), "spec.metrics.rateWindow"),
        (with_(metrics={"prometheusAddress": "prometheus:9090"}), "spec.metrics.prometheusAddress"),
        (with_(policy={"path": "chanscale/lib/scaling_up"}), "spec.policy.path"),
        (with_(policy={"failurePolicy": "Allow"}), "spec.policy.failurePolicy"),
        (with_(policy={"profile": "Not A Profile"}), "spec.policy.profile"),
        (with_(paused="yes"), "spec.paused"),
    ],
)
def test_errors_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as e:
        PoolSpec.from_dict(spec)
    assert e.value.field == field
    assert str(e.value).startswith(field)


def test_template_pool_targets_its_own_deployment() -> None:
    d = {k: v for k, v in OK.items() if k != "scaleTargetRef"}
    d["template"] = {"spec": {"containers": [{"name": "c", "image": "x"}]}}
    assert PoolSpec.from_dict(d).target_name("pool") == "pool"
