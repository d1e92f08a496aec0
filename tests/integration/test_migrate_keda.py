"""chanscale migrate against the real API server: every WorkerPool it writes is accepted by the CRD as is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chanscale.local.binaries import REPO_ROOT
from chanscale.local.harness import Kubectl

pytestmark = pytest.mark.integration

EXAMPLE = REPO_ROOT / "examples" / "keda" / "kafka-scaledobject.yaml"
TRIGGERS = {
    "kafka": {"topic": "orders", "bootstrapServers": "kafka:9092", "consumerGroup": "g", "lagThreshold": "50"},
    "nats-jetstream": {"stream": "ORDERS", "consumer": "workers", "natsServerMonitoringEndpoint": "nats:8222"},
    "redis": {"listName": "jobs", "address": "redis:6379"},
    "redis-streams": {"stream": "events", "consumerGroup": "g", "pendingEntriesCount": "100"},
    "prometheus": {"serverAddress": "http://prom:9090", "query": "sum(q)", "threshold": "30"},
}


def migrate_cli(path: Path, *args: str) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "chanscale", "migrate", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_migrated_pools_are_accepted_by_the_crd(kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    objects = [yaml.safe_load(EXAMPLE.read_text())]
    for i, (ttype, md) in enumerate(sorted(TRIGGERS.items())):
        objects.append(
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "metadata": {"name": f"so-{i}"},
                "spec": {
                    "scaleTargetRef": {"name": f"worker-{i}"},
                    "minReplicaCount": 0,
                    "triggers": [{"type": ttype, "metadata": md}],
                },
            }
        )
    src = tmp_path / "scaledobjects.yaml"
    src.write_text(yaml.safe_dump_all(objects))
    out = migrate_cli(src, "--service-rate", "20")
    pools = [p for p in yaml.safe_load_all(out) if p]
    assert len(pools) == len(objects)
    for pool in pools:
        pool["metadata"]["namespace"] = namespace
        res = kubectl.apply(pool, namespace)
        assert res.returncode == 0, f"{pool['metadata']['name']}: {res.stderr}"
    listed = kubectl.json("get", "wp", "-n", namespace)["items"]
    assert {p["spec"]["mode"] for p in listed} == {"DryRun"}
    assert sorted(p["spec"]["channel"] for p in listed) == sorted(
        ["orders", "orders", "workers", "jobs", "events", "so-2"]  # prometheus: the pool name
    )
