"""chanscale migrate: KEDA ScaledObjects -> WorkerPools the operator's own spec parser accepts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from chanscale.cli import main
from chanscale.migrate import MigrateError, Options, migrate
from chanscale.spec import PoolSpec

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "keda" / "kafka-scaledobject.yaml"


def so(trigger_type: str, metadata: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "orders", "namespace": "shop"},
        "spec": {
            "scaleTargetRef": {"name": "worker"},
            "triggers": [{"type": trigger_type, "metadata": metadata}],
            **spec,
        },
    }


@pytest.mark.parametrize(
    ("ttype", "metadata", "channel", "p99"),
    [
        ("kafka", {"topic": "orders", "bootstrapServers": "k:9092", "consumerGroup": "g"}, "orders", 0.5),  # 10/20
        ("nats-jetstream", {"stream": "ORDERS", "consumer": "workers", "lagThreshold": "40"}, "workers", 2.0),
        ("redis", {"listName": "jobs", "address": "redis:6379"}, "jobs", 0.25),  # default listLength 5
        ("redis-streams", {"stream": "events", "consumerGroup": "g", "pendingEntriesCount": "100"}, "events", 5.0),
        ("prometheus", {"serverAddress": "http://p:9090", "query": "sum(x)", "threshold": "30"}, "orders", 1.5),
    ],
)
def test_each_trigger_maps_channel_and_threshold_to_an_slo(
    ttype: str, metadata: dict[str, Any], channel: str, p99: float
) -> None:
    m = migrate(so(ttype, metadata), Options(service_rate=20))
    spec = m.pool["spec"]
    assert spec["channel"] == channel and spec["slo"]["p99LatencySeconds"] == p99
    assert spec["mode"] == "DryRun" and spec["model"]["serviceRateHint"] == 20
    assert (spec["minReplicas"], spec["maxReplicas"], spec["idleSeconds"]) == (0, 100, 300), "KEDA's defaults"
    PoolSpec.from_dict(spec)  # the operator accepts it


def test_threshold_below_the_p99_floor_is_raised_to_it() -> None:
    m = migrate(so("kafka", {"topic": "t", "lagThreshold": "1"}), Options(service_rate=20))
    assert m.pool["spec"]["slo"]["p99LatencySeconds"] == 0.23  # ln(100)/20 = 0.230, not 1/20


def test_no_slo_input_is_an_error_naming_the_flags() -> None:
    with pytest.raises(MigrateError, match=r"--p99 SECONDS .* or --service-rate"):
        migrate(so("kafka", {"topic": "t"}), Options())


def test_unsupported_things_are_reported_not_dropped_silently() -> None:
    obj = so("kafka", {"topic": "t", "bootstrapServers": "k", "activationLagThreshold": "3"}, idleReplicaCount=0)
    obj["spec"]["triggers"].append({"type": "cpu", "metadata": {"value": "80"}})
    obj["spec"]["triggers"][0]["authenticationRef"] = {"name": "kafka-auth"}
    obj["spec"]["fallback"] = {"failureThreshold": 2, "replicas": 3, "behavior": "currentReplicasIfLower"}
    obj["metadata"]["annotations"] = {
        "autoscaling.keda.sh/paused-scale-in": "true",
        "autoscaling.keda.sh/paused-replicas": "4",
    }
    m = migrate(obj, Options(p99_seconds=1))
    text = "\n".join(m.unmapped)
    for needle in (
        "bootstrapServers: read from Prometheus",
        "activationLagThreshold: use minReplicas 0",
        "spec.idleReplicaCount",
        "(cpu): trigger type not supported",
        "authenticationRef: credentials belong to the operator",
        "currentReplicasIfLower",
        "paused-scale-in",
    ):
        assert needle in text, text
    assert m.pool["spec"]["fallback"] == {"behavior": "currentReplicas", "failureThreshold": 2}
    assert m.pool["metadata"]["annotations"] == {"chanscale.dev/paused-replicas": "4"}
    PoolSpec.from_dict(m.pool["spec"])


def test_other_scale_targets_are_kept_and_flagged_unknown_triggers_refused() -> None:
    obj = so("kafka", {"topic": "t"})
    obj["spec"]["scaleTargetRef"].update(kind="Rollout", apiVersion="argoproj.io/v1alpha1")
    m = migrate(obj, Options(p99_seconds=1))
    assert m.pool["spec"]["scaleTargetRef"] == {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "name": "worker",
    }
    assert any("--scale-kind Rollout.argoproj.io" in u for u in m.unmapped)
    PoolSpec.from_dict(m.pool["spec"])
    with pytest.raises(MigrateError, match="no trigger chanscale can map"):
        migrate(so("cron", {}), Options(p99_seconds=1))


def test_cli_converts_the_example_and_keeps_its_behaviour(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", str(EXAMPLE), "--service-rate", "20", "--active"]) == 0
    out = capsys.readouterr().out
    assert "# not mapped (review each):" in out and "(cpu): trigger type not supported" in out
    pool = yaml.safe_load(out)
    source = yaml.safe_load(EXAMPLE.read_text())
    assert pool["spec"]["mode"] == "Active"
    assert pool["spec"]["behavior"] == source["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert pool["spec"]["fallback"] == {"behavior": "static", "failureThreshold": 3, "replicas": 6}
    assert pool["metadata"]["annotations"] == {"chanscale.dev/paused": "false"}
    PoolSpec.from_dict(copy.deepcopy(pool["spec"]))
