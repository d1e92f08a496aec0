"""Smoke tests of the local test cluster itself: if these fail, every other integration test is meaningless.

They check the things later tests rely on: the controller-manager turns a Deployment into a ReplicaSet and pods,
the scale subresource can be patched with our field manager, ServiceAccount tokens are issued and RBAC applies to
them, and Prometheus scrapes a real prometheus_client exporter started by the test.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from chanscale import FIELD_MANAGER
from chanscale.local.binaries import BinaryNotFound, find_binary
from chanscale.local.cluster import LocalControlPlane
from chanscale.local.harness import Kubectl, OperatorFactory, PrometheusTargets, worker_deployment
from chanscale.local.process import LOOPBACK, free_port, wait_until
from chanscale.local.prometheus import LocalPrometheus

pytestmark = pytest.mark.integration


def _replica_sets(apps: Any, namespace: str, owner: str) -> list[Any]:
    items = apps.list_namespaced_replica_set(namespace).items
    return [rs for rs in items if any(ref.name == owner for ref in rs.metadata.owner_references or [])]


def test_control_plane_components_are_running(control_plane: LocalControlPlane, kubectl: Kubectl) -> None:
    control_plane.check_running()
    assert [p.name for p in control_plane.processes] == ["etcd", "kube-apiserver", "kube-controller-manager"]
    assert control_plane.server.startswith("https://127.0.0.1:")
    version = kubectl("version", "-o", "json")
    assert version.returncode == 0, version.stderr
    assert control_plane.timings.total > 0


def test_deployment_gets_replicaset_and_scale_subresource_works(k8s: Any, namespace: str) -> None:
    apps: Any = client.AppsV1Api(k8s)  # Any: the generated models make every field Optional
    apps.create_namespaced_deployment(namespace, worker_deployment("worker", 1))

    # The controller-manager's deployment controller creates the ReplicaSet and reports status.
    wait_until(lambda: len(_replica_sets(apps, namespace, "worker")) == 1, 30, "a ReplicaSet for Deployment worker")
    wait_until(
        lambda: apps.read_namespaced_deployment_status("worker", namespace).status.replicas == 1,
        30,
        "Deployment worker status.replicas == 1",
    )

    scale = apps.patch_namespaced_deployment_scale(
        "worker", namespace, {"spec": {"replicas": 3}}, field_manager=FIELD_MANAGER
    )
    assert scale.spec.replicas == 3
    assert apps.read_namespaced_deployment_scale("worker", namespace).spec.replicas == 3

    wait_until(
        lambda: _replica_sets(apps, namespace, "worker")[0].spec.replicas == 3,
        30,
        "the ReplicaSet to follow the scale patch to 3",
    )
    # Pods are created (Pending forever: there is no scheduler or kubelet), so status.replicas follows too.
    wait_until(
        lambda: apps.read_namespaced_deployment_status("worker", namespace).status.replicas == 3,
        30,
        "Deployment worker status.replicas == 3",
    )
    managers = {
        (f.manager, f.subresource) for f in apps.read_namespaced_deployment("worker", namespace).metadata.managed_fields
    }
    assert (FIELD_MANAGER, "scale") in managers, managers


def test_garbage_collector_removes_owned_replicasets(k8s: Any, namespace: str) -> None:
    apps: Any = client.AppsV1Api(k8s)  # Any: the generated models make every field Optional
    apps.create_namespaced_deployment(namespace, worker_deployment("gc", 1))
    wait_until(lambda: len(_replica_sets(apps, namespace, "gc")) == 1, 30, "a ReplicaSet for Deployment gc")

    apps.delete_namespaced_deployment("gc", namespace, propagation_policy="Background")

    wait_until(lambda: not _replica_sets(apps, namespace, "gc"), 60, "the garbage collector to delete the ReplicaSet")


def test_service_account_tokens_authenticate_and_rbac_applies(
    control_plane: LocalControlPlane, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    # The ServiceAccount controller creates `default` in every new namespace.
    wait_until(
        lambda: kubectl("get", "serviceaccount", "default", "-n", namespace).returncode == 0,
        30,
        f"ServiceAccount default in {namespace}",
    )
    token = control_plane.create_token(namespace, "default")
    kubeconfig = control_plane.write_token_kubeconfig(token, tmp_path / "sa.kubeconfig", namespace)

    whoami = kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=kubeconfig)
    assert whoami.returncode == 0, whoami.stderr
    assert whoami.stdout == f"system:serviceaccount:{namespace}:default"

    denied = kubectl("get", "deployments", "-n", namespace, kubeconfig=kubeconfig)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied

    kubectl("create", "role", "read-deploy", "-n", namespace, "--verb=get,list", "--resource=deployments", check=True)
    kubectl(
        "create",
        "rolebinding",
        "read-deploy",
        "-n",
        namespace,
        "--role=read-deploy",
        f"--serviceaccount={namespace}:default",
        check=True,
    )
    wait_until(
        lambda: kubectl("get", "deployments", "-n", namespace, kubeconfig=kubeconfig).returncode == 0,
        30,
        "the RoleBinding to grant list deployments",
    )


@pytest.fixture
def exporter() -> Iterator[tuple[str, Gauge]]:
    """A real prometheus_client exporter on a free loopback port, serving one gauge of the metrics contract."""
    registry = CollectorRegistry()
    backlog = Gauge("chanscale_channel_backlog", "Messages waiting.", ["namespace", "channel"], registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr=LOOPBACK, registry=registry)
    try:
        yield f"{LOOPBACK}:{port}", backlog
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_prometheus_scrapes_an_exporter(
    prometheus: LocalPrometheus, prometheus_targets: PrometheusTargets, exporter: tuple[str, Gauge], namespace: str
) -> None:
    address, backlog = exporter
    backlog.labels(namespace, "orders").set(42)

    prometheus_targets.add(address)

    query = f'chanscale_channel_backlog{{namespace="{namespace}",channel="orders"}}'
    series = prometheus.wait_for_series(query)
    assert float(series[0]["value"][1]) == 42
    # The exporter's own namespace label wins here (the session Prometheus uses honor_labels: one simulator stands
    # in for many namespaces); a real cluster takes it from the target (docs/security.md).
    assert series[0]["metric"]["namespace"] == namespace

    backlog.labels(namespace, "orders").set(7)
    wait_until(lambda: prometheus.query_value(query) == 7, 30, "Prometheus to scrape the new value 7")


def test_prometheus_series_go_missing_when_exporter_target_is_removed(
    prometheus: LocalPrometheus, prometheus_targets: PrometheusTargets, exporter: tuple[str, Gauge], namespace: str
) -> None:
    address, backlog = exporter
    backlog.labels(namespace, "payments").set(1)
    prometheus_targets.add(address)
    query = f'chanscale_channel_backlog{{namespace="{namespace}",channel="payments"}}'
    prometheus.wait_for_series(query)

    prometheus_targets.remove(address)

    # Staleness markers: the series disappears (missing, never zero) instead of lingering for 5 minutes.
    wait_until(lambda: prometheus.query(query) == [], 30, "the removed target's series to go stale")


def test_missing_binary_fails_with_make_tools_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    monkeypatch.setenv("CHANSCALE_BIN", str(tmp_path / "nothing"))
    with pytest.raises(BinaryNotFound, match="make tools"):
        find_binary("chanscale-no-such-tool")

    # KUBEBUILDER_ASSETS comes first in the lookup order.
    fake = tmp_path / "kube-apiserver"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    assert find_binary("kube-apiserver") == fake
    assert os.access(find_binary("kube-apiserver"), os.X_OK)


def test_operator_process_serves_liveness_and_metrics(
    operator_process: OperatorFactory, kubectl: Kubectl, namespace: str
) -> None:
    """The `operator_process` factory: `python -m chanscale run --kubeconfig ...` comes up against the local
    cluster, serves liveness and metrics, and logs in with the kubeconfig it was given (it reconciles a pool)."""
    kubectl("create", "deployment", "worker", "--image=worker:1", "--replicas=2", "-n", namespace, check=True)
    pool = {
        "apiVersion": "chanscale.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": "orders"},
        "spec": {
            "channel": "orders",
            "scaleTargetRef": {"name": "worker"},
            "maxReplicas": 4,
            "slo": {"p99LatencySeconds": 0.5},
        },
    }
    assert kubectl.apply(pool, namespace).returncode == 0

    # --kubeconfig alone, without KUBECONFIG in the environment: the documented way to point it at a cluster.
    op = operator_process(namespaces=[namespace], opa="none", env={"KUBECONFIG": None})

    assert "chanscale_" in op.metrics_text()

    def reconciled() -> bool:
        status = kubectl.json("get", "wp", "orders", "-n", namespace).get("status") or {}
        return any(c.get("type") == "Ready" for c in status.get("conditions", []))

    wait_until(
        reconciled,
        60,
        "the operator to write the pool's status (did it log in with --kubeconfig?)",
        [op.proc] if op.proc else [],
    )

    op.restart()
    assert op.running, op.log_text()
