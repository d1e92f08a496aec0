"""A tenant attacks the platform, against the real API server, OPA and Prometheus (docs/security.md).

Set up exactly as an admin installs chanscale: the chart's objects rendered and applied (RBAC, the aggregated
WorkerPool rights of the built-in ``edit`` role, the policy ConfigMap with the admin's locked guards), OPA run with
the sidecar's flags on that ConfigMap, and the operator authenticating as the chart's ServiceAccount with the
guardrail flags the chart renders. The tenant is a ServiceAccount bound to its namespace's ``edit`` role and does
what such a user can: create Deployments and WorkerPools. Every attack must fail visibly (a condition or an Event
on the tenant's pool) and change no replicas.

The last test also proves the chart's RBAC minimal: every rule it grants was used by the operator (read from the
API server's audit log) and nothing the operator asked for was denied.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_chart import by_kind, containers, one, render, start_opa_from_chart
from test_operator_behaviour import (
    BURST_RATE,
    LOW_RATE,
    channel,
    condition,
    decisions_total,
    events,
    fast_pool,
    has_condition,
    pool_status,
    procs,
    replicas,
    wait_signals_read,
)

from chanscale.local.harness import Kubectl, ObjectWatch, OperatorFactory, OperatorProcess, SimFactory
from chanscale.local.process import LOOPBACK, ManagedProcess, wait_until
from chanscale.local.prometheus import LocalPrometheus

pytestmark = pytest.mark.integration

#: The flags of `chanscale run` that carry the admin's guardrails (taken from the chart's rendered args).
GUARDRAIL_FLAGS = {
    "--failure-policy": True,
    "--policy-profile": True,
    "--prometheus-allowed-url": True,
    "--scrape-interval": True,
    "--template-namespace": True,
    "--allow-custom-queries": False,
    # Leader election as the chart runs it (its Lease lives in the release namespace: POD_NAMESPACE below).
    "--leader-elect": False,
    "--lease-name": True,
    "--lease-duration": True,
    "--renew-deadline": True,
    "--retry-period": True,
    "--shards": True,
}

#: A minimal copy of KEDA's ScaledObject CRD: enough for the API server to serve the resource.
KEDA_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "scaledobjects.keda.sh"},
    "spec": {
        "group": "keda.sh",
        "names": {
            "kind": "ScaledObject",
            "plural": "scaledobjects",
            "singular": "scaledobject",
            "listKind": "ScaledObjectList",
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }
        ],
    },
}


#: One namespace per attack, all watched by the chart's install (their Roles are rendered up front).
ROLES = ("bypass", "caps", "ssrf", "query", "victim", "spoof", "attacker", "two", "keda", "budget", "template")


@dataclass
class Platform:
    """chanscale installed by an admin: the rendered chart applied, OPA from its ConfigMap, a token of its SA."""

    kubectl: Kubectl
    control_plane: Any
    release: str
    system_namespace: str
    namespaces: dict[str, str]  # role -> namespace configured in the chart's values
    docs: list[dict[str, Any]]
    opa_url: str
    sa_kubeconfig: Path
    tmp: Path

    @property
    def service_account(self) -> str:
        return f"system:serviceaccount:{self.system_namespace}:{self.release}-chanscale"

    def guardrail_args(self) -> list[str]:
        args = containers(one(self.docs, "Deployment"))["operator"]["args"]
        out: list[str] = []
        for i, a in enumerate(args):
            if a in GUARDRAIL_FLAGS:
                out += [a, args[i + 1]] if GUARDRAIL_FLAGS[a] else [a]
        return out

    def operator(self, operator_process: OperatorFactory, *namespaces: str, **kw: Any) -> OperatorProcess:
        """The operator as the chart runs it: the chart's ServiceAccount, OPA and guardrail flags."""
        return operator_process(
            namespaces=list(namespaces),
            opa=self.opa_url,
            kubeconfig_path=self.sa_kubeconfig,
            extra_args=self.guardrail_args(),
            env={"POD_NAMESPACE": self.system_namespace},
            **kw,
        )

    def tenant(self, namespace: str) -> Path:
        """A ServiceAccount bound to the namespace's built-in `edit` role; returns its kubeconfig."""
        k = self.kubectl
        k("create", "serviceaccount", "tenant", "-n", namespace)
        k(
            "create",
            "rolebinding",
            "tenant-edit",
            "--clusterrole=edit",
            "--serviceaccount",
            f"{namespace}:tenant",
            "-n",
            namespace,
        )
        who = f"--as=system:serviceaccount:{namespace}:tenant"
        wait_until(
            lambda: k("auth", "can-i", "create", "workerpools.chanscale.dev", "-n", namespace, who).returncode == 0,
            60,
            "the chart's WorkerPool rights to be aggregated into `edit`",
        )
        token = self.control_plane.create_token(namespace, "tenant")
        return self.control_plane.write_token_kubeconfig(token, self.tmp / f"tenant-{namespace}.kubeconfig")


def _create_namespace(kubectl: Kubectl, name: str) -> None:
    assert kubectl("create", "namespace", name).returncode == 0
    kubectl("label", "namespace", name, "chanscale.dev/test=true")


@pytest.fixture(scope="module")
def platform(control_plane: Any, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    suffix = uuid.uuid4().hex[:6]
    release, system_ns = f"cs-{suffix}", f"chanscale-system-{suffix}"
    roles = {role: f"tenancy-{role}-{suffix}" for role in ROLES}
    for ns in (system_ns, *roles.values()):
        _create_namespace(kubectl, ns)
    assert kubectl.apply(KEDA_CRD).returncode == 0
    kubectl("wait", "--for=condition=Established", "crd/scaledobjects.keda.sh", "--timeout=60s", check=True)
    docs = render(
        "--namespace",
        system_ns,
        # Namespaced mode: the operator's Roles exist only in the tenants' namespaces.
        "--set",
        f"operator.watchNamespaces={{{','.join(roles.values())}}}",
        # The admin's guardrails: a locked cap in one namespace, a locked budget in another, template mode in a
        # third, custom queries on (each must stay in its namespace), and the scrape interval of this Prometheus.
        "--set",
        f"policy.config.namespaces.{roles['caps']}.caps.maxReplicas=3",
        "--set",
        f"policy.config.namespaces.{roles['budget']}.budget.maxReplicas=10",
        "--set",
        "policy.config.locked={caps,budget}",
        "--set",
        f"rbac.templateNamespaces={{{roles['template']}}}",
        "--set",
        "prometheus.customQueries=true",
        "--set",
        "prometheus.scrapeInterval=1s",
        release=release,
    )
    objects = [d for d in docs if d["kind"] != "Pod"]
    for d in objects:  # `helm install --namespace` fills in the release namespace; kubectl needs it spelled out
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            d["metadata"].setdefault("namespace", system_ns)
    tmp = tmp_path_factory.mktemp("tenancy")
    opa: ManagedProcess | None = None
    try:
        applied = kubectl.apply(objects, None, "--server-side", "--field-manager=helm")
        assert applied.returncode == 0, applied.stderr
        opa, opa_url, _ = start_opa_from_chart(docs, tmp)
        token = control_plane.create_token(system_ns, f"{release}-chanscale")
        sa_kubeconfig = control_plane.write_token_kubeconfig(token, tmp / "operator.kubeconfig")
        yield Platform(kubectl, control_plane, release, system_ns, roles, docs, opa_url, sa_kubeconfig, tmp)
    finally:
        if opa is not None:
            opa.stop()
        for d in objects:
            if d["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                kubectl("delete", d["kind"], d["metadata"]["name"], "--ignore-not-found", "--wait=false")
        for ns in (system_ns, *roles.values()):
            kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found")
        kubectl("delete", "crd", "scaledobjects.keda.sh", "--ignore-not-found", "--wait=false")


# --------------------------------------------------------------------------------------------------- helpers
def _apply_as(kubectl: Kubectl, kubeconfig: Path, manifest: dict[str, Any], namespace: str) -> Any:
    return kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), kubeconfig=kubeconfig)


def tenant_worker(kubectl: Kubectl, tenant: Path, namespace: str, name: str = "worker", count: int = 1) -> None:
    res = kubectl(
        "create",
        "deployment",
        name,
        "--image=registry.invalid/worker:1",
        f"--replicas={count}",
        "-n",
        namespace,
        kubeconfig=tenant,
    )
    assert res.returncode == 0, res.stderr


def evaluations(op: OperatorProcess) -> float:
    """Pool evaluations by this operator, refused ones included (each test's operator watches one namespace)."""
    for line in op.metrics_text().splitlines():
        if line.startswith("chanscale_decision_duration_seconds_count "):
            return float(line.split()[1])
    return 0.0


def more_evaluations(op: OperatorProcess, n: int, what: str) -> None:
    seen = evaluations(op)
    wait_until(lambda: evaluations(op) >= seen + n, 60, f"{n} more evaluations ({what})", procs(op))


def reasons_of(kubectl: Kubectl, namespace: str, pool: str) -> list[str]:
    return [e.get("reason", "") for e in events(kubectl, namespace, pool)]


def refused_without_scaling(
    kubectl: Kubectl, op: OperatorProcess, namespace: str, pool: str, reason: str, field: str, replicas_before: int
) -> None:
    """The pool is refused with a condition naming the field, one Event, several ticks, and no replica change."""
    wait_until(
        has_condition(kubectl, namespace, "Ready", "False", reason, pool=pool), 60, f"Ready=False/{reason}", procs(op)
    )
    assert field in condition(pool_status(kubectl, namespace, pool), "Ready")["message"]
    more_evaluations(op, 6, "of the refused pool")
    assert reasons_of(kubectl, namespace, pool).count(reason) == 1, "one Event, not one per tick"
    assert "Scaled" not in reasons_of(kubectl, namespace, pool)
    assert replicas(kubectl, namespace) == replicas_before


# ---------------------------------------------------------------------------------------------------- attacks
def test_policy_bypass_is_refused(
    platform: Platform, kubectl: Kubectl, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    """`spec.policy.path: chanscale/lib/scaling_up` (a plain `true`) used to skip every guard."""
    namespace = platform.namespaces["bypass"]
    tenant = platform.tenant(namespace)
    tenant_worker(kubectl, tenant, namespace)
    channel_sim([channel(namespace, BURST_RATE)])
    bypass = fast_pool(policy={"path": "chanscale/lib/scaling_up"})
    res = _apply_as(kubectl, tenant, bypass, namespace)
    assert res.returncode != 0 and "spec.policy.path is chosen by the cluster admin" in res.stderr, res.stderr
    loose = _apply_as(kubectl, tenant, fast_pool(policy={"failurePolicy": "Allow"}), namespace)
    assert loose.returncode != 0 and "spec.policy.failurePolicy" in loose.stderr, loose.stderr

    unpublished = fast_pool(policy={"profile": "no-guards"})
    assert _apply_as(kubectl, tenant, unpublished, namespace).returncode == 0
    op = platform.operator(operator_process, namespace)
    refused_without_scaling(kubectl, op, namespace, "orders", "PolicyProfileNotPublished", "spec.policy.profile", 1)


def test_locked_guard_cannot_be_overridden(
    platform: Platform, kubectl: Kubectl, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    """The admin locked caps at 3 for this namespace; the pool's own cap and override are ignored, and said so."""
    ns = platform.namespaces["caps"]
    tenant = platform.tenant(ns)
    tenant_worker(kubectl, tenant, ns)
    sim = channel_sim([channel(ns, LOW_RATE)])
    greedy = fast_pool(
        policy={"parameters": {"caps": {"maxReplicas": 100, "override": {"maxReplicas": 50, "reason": "mine"}}}}
    )
    assert _apply_as(kubectl, tenant, greedy, ns).returncode == 0
    op = platform.operator(operator_process, ns)
    wait_until(has_condition(kubectl, ns, "MetricsAvailable", "True"), 60, "the signals to be read", procs(op))

    sim.set_arrival_rate(ns, "orders", BURST_RATE)

    def clamped_by_the_admin() -> bool:
        st = pool_status(kubectl, ns)
        reasons = ((st.get("lastDecision") or {}).get("policy") or {}).get("reasons") or []
        clamped = condition(st, "PolicyAllowed").get("reason") == "Clamped"
        return clamped and "caps: locked by the cluster admin; spec.policy.parameters.caps ignored" in reasons

    wait_until(clamped_by_the_admin, 120, "PolicyAllowed=Clamped naming the admin's lock", procs(op))
    wait_until(
        lambda: pool_status(kubectl, ns).get("recommendedReplicas", 0) > 3, 60, "a recommendation above 3", procs(op)
    )
    # The verdict is in status before the scale (write-ahead intent): wait for the scale itself.
    wait_until(lambda: replicas(kubectl, ns) == 3, 60, "the clamped scale to 3 replicas", procs(op))
    assert "PolicyClamped" in reasons_of(kubectl, ns, "orders")
    for e in events(kubectl, ns, "orders"):
        m = re.search(r"-> (\d+)", e.get("message", "")) if e.get("reason") == "Scaled" else None
        assert m is None or int(m[1]) <= 3, e["message"]


class _CountingServer:
    """An HTTP listener on loopback that counts the requests it gets (the SSRF target)."""

    def __init__(self) -> None:
        hits: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(500)
                self.end_headers()
                self.wfile.write(b"internal secret")

            def log_message(self, *args: Any) -> None:
                pass

        self.hits = hits
        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_ssrf_address_is_never_contacted(
    platform: Platform, kubectl: Kubectl, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    namespace = platform.namespaces["ssrf"]
    tenant = platform.tenant(namespace)
    tenant_worker(kubectl, tenant, namespace)
    channel_sim([channel(namespace, BURST_RATE)])
    target = _CountingServer()
    try:
        pool = fast_pool(metrics={"prometheusAddress": f"{target.url}/internal", "rateWindow": "10s"})
        assert _apply_as(kubectl, tenant, pool, namespace).returncode == 0
        op = platform.operator(operator_process, namespace)
        refused_without_scaling(
            kubectl, op, namespace, "orders", "PrometheusAddressNotAllowed", "spec.metrics.prometheusAddress", 1
        )
        assert target.hits == [], "the operator must never send a request to an address off the allowlist"
        assert "secret" not in json.dumps(pool_status(kubectl, namespace))
    finally:
        target.close()


def test_cross_namespace_query_is_refused(
    platform: Platform, kubectl: Kubectl, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    """Custom queries are enabled by the admin here, but each must stay inside the pool's namespace."""
    namespace = platform.namespaces["query"]
    victim = platform.namespaces["victim"]
    tenant = platform.tenant(namespace)
    tenant_worker(kubectl, tenant, namespace)
    channel_sim([channel(namespace, LOW_RATE), channel(victim, BURST_RATE)])
    spy = fast_pool(
        metrics={
            "rateWindow": "10s",
            "queries": {
                "backlog": f'sum(chanscale_channel_backlog{{namespace="{victim}", channel="orders"}})',
                "arrivalRate": 'sum(rate(chanscale_channel_enqueued_total{namespace="$namespace"}[10s]))',
            },
        }
    )
    assert _apply_as(kubectl, tenant, spy, namespace).returncode == 0
    op = platform.operator(operator_process, namespace)
    refused_without_scaling(kubectl, op, namespace, "orders", "QueryRefused", "spec.metrics.queries.backlog", 1)
    assert "signals" not in pool_status(kubectl, namespace), "no value read from another namespace"


def test_spoofed_namespace_label_does_not_drive_another_teams_pool(
    platform: Platform,
    kubectl: Kubectl,
    channel_sim: SimFactory,
    operator_process: OperatorFactory,
    tmp_path: Path,
) -> None:
    """A pod in the attacker's namespace exports namespace="<victim>"; Prometheus takes `namespace` from the
    scrape target (honor_labels: false, as docs/metrics-contract.md configures it), so the victim's pool never
    sees the attacker's backlog."""
    namespace = platform.namespaces["spoof"]
    attacker = platform.namespaces["attacker"]
    prom = LocalPrometheus(workdir=tmp_path / "prom", honor_labels=False)
    prom.start()
    try:
        tenant = platform.tenant(namespace)
        tenant_worker(kubectl, tenant, namespace)
        victim_sim = channel_sim([channel(namespace, LOW_RATE)], scrape=False)
        spoof = channel(namespace, 50 * BURST_RATE, deployment="absent")  # claims the victim's namespace
        attacker_sim = channel_sim([spoof], scrape=False)
        prom.add_target(victim_sim.address, {"namespace": namespace})
        prom.add_target(attacker_sim.address, {"namespace": attacker})
        for sim in (victim_sim, attacker_sim):
            prom.wait_for_target(sim.address)
        # A generous objective, so the victim's own light load needs exactly one worker whatever the noise.
        victim_pool = fast_pool(slo={"p99LatencySeconds": 2.0})
        assert _apply_as(kubectl, tenant, victim_pool, namespace).returncode == 0
        op = platform.operator(operator_process, namespace, prometheus_url=prom.url)
        wait_signals_read(kubectl, namespace, op, "the victim's signals")

        def spoof_scraped() -> bool:
            q = f'chanscale_channel_backlog{{namespace="{attacker}", exported_namespace="{namespace}"}} > 100'
            return bool(prom.query(q))

        wait_until(spoof_scraped, 60, "the attacker's spoofed backlog to be scraped (and relabelled)", procs(op))
        seen = decisions_total(op, namespace)
        wait_until(lambda: decisions_total(op, namespace) >= seen + 8, 60, "eight decisions after the spoof", procs(op))
        assert replicas(kubectl, namespace) == 1
        assert (pool_status(kubectl, namespace).get("signals") or {}).get("backlog", 0) < 100
        assert "Scaled" not in reasons_of(kubectl, namespace, "orders")
    finally:
        prom.stop()


def test_second_pool_on_one_deployment_is_refused(
    platform: Platform, kubectl: Kubectl, k8s: Any, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    """The second pool on a Deployment is refused with one Event and never scales it: its minReplicas 5 never
    reaches the Deployment (the first pool alone moves it, by the model's 1 or 2 for the light load), and the
    first pool keeps scaling it under a burst."""
    namespace = platform.namespaces["two"]
    tenant = platform.tenant(namespace)
    tenant_worker(kubectl, tenant, namespace)
    sim = channel_sim([channel(namespace, LOW_RATE)])
    assert _apply_as(kubectl, tenant, fast_pool("first"), namespace).returncode == 0
    op = platform.operator(operator_process, namespace)
    wait_until(has_condition(kubectl, namespace, "Ready", "True", pool="first"), 60, "the first pool Ready", procs(op))
    with ObjectWatch(k8s, "deployment", namespace, "worker") as worker:
        wait_until(lambda: bool(worker.versions), 30, "the Deployment's watch to list it", procs(op))
        assert _apply_as(kubectl, tenant, fast_pool("second", minReplicas=5), namespace).returncode == 0
        wait_until(
            has_condition(kubectl, namespace, "Ready", "False", "TargetConflict", pool="second"),
            60,
            "Ready=False/TargetConflict on the second pool",
            procs(op),
        )
        assert "WorkerPool first" in condition(pool_status(kubectl, namespace, "second"), "Ready")["message"]
        more_evaluations(op, 12, "of both pools")
    # The count, not a snapshot of it: the first pool's windows of 0 s follow the light load's noise between 1 and
    # 2 replicas on a busy machine (its Scaled Events say why); the second pool's minReplicas would make it >= 5.
    taken = [r for _t, r in worker.replicas()]
    scaled = [e.get("message") for e in events(kubectl, namespace, "first") if e.get("reason") == "Scaled"]
    assert max(taken) < 5, f"the second pool's minReplicas 5 must not be applied: {taken}, first pool: {scaled}"
    assert not (pool_status(kubectl, namespace, "second").get("history") or {}).get("scaleEvents")
    assert reasons_of(kubectl, namespace, "second").count("TargetConflict") == 1
    assert "Scaled" not in reasons_of(kubectl, namespace, "second")

    sim.set_arrival_rate(namespace, "orders", BURST_RATE)
    wait_until(lambda: replicas(kubectl, namespace) >= 6, 120, "the first pool to keep scaling its target", procs(op))
    assert "Scaled" not in reasons_of(kubectl, namespace, "second")


def test_paused_scaledobject_is_a_conflict(
    platform: Platform, kubectl: Kubectl, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    """KEDA is detected from its ScaledObject (a paused one has no HPA, and still owns the Deployment)."""
    namespace = platform.namespaces["keda"]
    tenant = platform.tenant(namespace)
    tenant_worker(kubectl, tenant, namespace)
    channel_sim([channel(namespace, BURST_RATE)])
    so = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "worker-so", "annotations": {"autoscaling.keda.sh/paused": "true"}},
        "spec": {"scaleTargetRef": {"name": "worker"}, "triggers": []},
    }
    assert kubectl.apply(so, namespace).returncode == 0
    assert _apply_as(kubectl, tenant, fast_pool(), namespace).returncode == 0
    op = platform.operator(operator_process, namespace)
    refused_without_scaling(
        kubectl, op, namespace, "orders", "TargetConflict", "KEDA ScaledObject worker-so (paused", 1
    )


def test_budget_holds_right_after_an_operator_restart(
    platform: Platform, kubectl: Kubectl, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    """The admin's locked budget of 10 for the namespace, two pools that each want about 8."""
    ns = platform.namespaces["budget"]
    tenant = platform.tenant(ns)
    for name in ("w1", "w2"):
        tenant_worker(kubectl, tenant, ns, name)
    sim = channel_sim([channel(ns, LOW_RATE, "w1", "c1"), channel(ns, LOW_RATE, "w2", "c2")])
    for pool, worker, ch in (("p1", "w1", "c1"), ("p2", "w2", "c2")):
        body = fast_pool(pool, target=worker, policy={"parameters": {"budget": {"maxReplicas": 1000}}})
        body["spec"]["channel"] = ch
        assert _apply_as(kubectl, tenant, body, ns).returncode == 0
    op = platform.operator(operator_process, ns)
    for pool in ("p1", "p2"):
        wait_until(
            has_condition(kubectl, ns, "MetricsAvailable", "True", pool=pool), 60, f"{pool}'s signals", procs(op)
        )
    peak = [0]

    def total() -> int:
        n = replicas(kubectl, ns, "w1") + replicas(kubectl, ns, "w2")
        peak[0] = max(peak[0], n)
        return n

    for ch in ("c1", "c2"):
        sim.set_arrival_rate(ns, ch, BURST_RATE)
    wait_until(lambda: total() >= 10, 120, "the two pools to fill the budget of 10", procs(op))
    assert peak[0] <= 10, f"two pools scaling together exceeded the budget of 10: {peak[0]} replicas"

    op.kill()
    op.restart()
    for pool in ("p1", "p2"):
        wait_until(
            lambda pool=pool: total() <= 10 and decisions_total(op, ns, pool) >= 8,  # type: ignore[misc]
            90,
            f"eight decisions of {pool} by the restarted operator",
            procs(op),
        )
    assert peak[0] <= 10, f"the budget of 10 was exceeded: {peak[0]} replicas"
    assert total() <= 10
    messages = [condition(pool_status(kubectl, ns, p), "PolicyAllowed").get("message", "") for p in ("p1", "p2")]
    assert any("budget: namespace" in m for m in messages), messages


# ------------------------------------------------------------------------------------------ template mode
def test_template_mode_and_every_rbac_rule_is_used(
    platform: Platform, kubectl: Kubectl, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    """Template mode in the admin's namespace: a template the API server refuses is reported once and not retried
    until the spec changes; a fixed one is created, scaled and updated. Then the audit log shows that every rule
    the chart grants was used by the operator, and that it was never denied anything."""
    ns = platform.namespaces["template"]
    tenant = platform.tenant(ns)
    sim = channel_sim([channel(ns, LOW_RATE, deployment="orders")])
    pool = fast_pool()
    del pool["spec"]["scaleTargetRef"]
    container = {"name": "worker", "image": "registry.invalid/worker:1", "ports": [{"containerPort": 70000}]}
    pool["spec"]["template"] = {"metadata": {"labels": {"app": "orders"}}, "spec": {"containers": [container]}}
    assert _apply_as(kubectl, tenant, pool, ns).returncode == 0  # the CRD cannot know every PodSpec rule
    op = platform.operator(operator_process, ns)

    wait_until(
        has_condition(kubectl, ns, "Ready", "False", "TemplateRejected"), 60, "Ready=False/TemplateRejected", procs(op)
    )
    assert "the API server refused the Deployment" in condition(pool_status(kubectl, ns), "Ready")["message"]
    assert "containerPort" in op.log_text(), "the API server's full message is logged (the condition has a ref)"
    more_evaluations(op, 6, "of the rejected pool")
    assert reasons_of(kubectl, ns, "orders").count("TemplateRejected") == 1, "no hot retry loop"
    assert op.log_text().count("could not create or update the Deployment") == 0

    del container["ports"]
    assert _apply_as(kubectl, tenant, pool, ns).returncode == 0
    wait_until(
        lambda: kubectl("get", "deployment", "orders", "-n", ns).returncode == 0, 60, "the Deployment", procs(op)
    )
    sim.set_arrival_rate(ns, "orders", BURST_RATE)
    wait_until(lambda: replicas(kubectl, ns, "orders") >= 6, 120, "the owned Deployment to scale up", procs(op))
    container["env"] = [{"name": "MODE", "value": "v2"}]
    assert _apply_as(kubectl, tenant, pool, ns).returncode == 0

    def template_updated() -> bool:
        c = kubectl.json("get", "deployment", "orders", "-n", ns)["spec"]["template"]["spec"]["containers"][0]
        return c.get("env") == container["env"]

    wait_until(template_updated, 60, "the owned Deployment's template to follow the pool's", procs(op))

    granted = _granted_rules(platform.docs, platform.service_account)
    used, denied = _audited_requests(platform)
    assert not denied, f"requests the chart's RBAC denied: {sorted(denied)}"
    unused = granted - used
    assert not unused, f"rules the chart grants but the operator never used: {sorted(unused)}"


def _granted_rules(docs: list[dict[str, Any]], sa: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource[/subresource], verb) of every rule bound to the ServiceAccount."""
    _, _, ns_name = sa.partition("system:serviceaccount:")
    sa_ns, _, sa_name = ns_name.partition(":")
    bound = set()
    for b in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding"):
        if any(s.get("name") == sa_name and s.get("namespace") == sa_ns for s in b.get("subjects", [])):
            bound.add((b["roleRef"]["kind"], b["roleRef"]["name"]))
    out = set()
    for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
        if (role["kind"], role["metadata"]["name"]) in bound:
            for rule in role["rules"]:
                out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


def _audited_requests(platform: Platform) -> tuple[set[tuple[str, str, str]], set[tuple[str, str, str, int]]]:
    used, denied = set(), set()
    for ev in platform.control_plane.audit_events(platform.service_account):
        ref = ev.get("objectRef") or {}
        if not ref.get("resource"):
            continue  # discovery (/api, /apis) needs no rule
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        key = (ref.get("apiGroup", ""), resource, ev["verb"])
        code = (ev.get("responseStatus") or {}).get("code", 200)
        if code == 403:
            denied.add((*key, code))
        else:
            used.add(key)
    return used, denied
