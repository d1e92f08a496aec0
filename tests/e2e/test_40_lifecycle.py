"""The release's life: a pool in a namespace it does not watch is left alone; `helm upgrade` with changed values
(that namespace added, a shorter tick) takes effect; `helm uninstall` in the order docs/install.md documents
leaves nothing of chanscale behind but the workers it scaled. Runs last: it uninstalls the release."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from kindstack import RELEASE, RELEASE_NS, REPO_ROOT, UNWATCHED_NS, KindStack
from kindtest import clean, events_for, observe, operator_pod, pod_ready, rollout, wait_for
from scenario import KubectlCluster, ProxyLoad, ScaleScenario

pytestmark = pytest.mark.e2e

WATCHED = "e2e-tenant"
FINALIZER = "chanscale.dev/finalizer"
# Every namespaced kind the chart creates (not "all": kubectl's discovery cache may still list the deleted CRD).
RELEASE_OBJECTS = "deployments,replicasets,pods,services,configmaps,serviceaccounts,roles,rolebindings,pdb"


@pytest.fixture(scope="module")
def pools(stack: KindStack, cluster: KubectlCluster) -> Iterator[dict[str, ScaleScenario]]:
    """The examples in a watched and in the unwatched namespace, both at the high rate."""
    out = {}
    for ns in (WATCHED, UNWATCHED_NS):
        clean(stack, ns)
        sc = ScaleScenario(namespace=ns, image=stack.images.operator, replicas_from="ready", log=stack.log)
        cluster.apply(sc.manifests(with_simulator=True), ns)
        out[ns] = sc
    for ns, sc in out.items():
        rollout(stack, ns, "chanscale-sim")
        ProxyLoad(stack.kubectl).set_rate(ns, sc.channel, sc.high_rate)
    yield out
    for ns in out:
        clean(stack, ns)


def test_pool_in_an_unwatched_namespace_is_left_alone(stack: KindStack, cluster: KubectlCluster, pools) -> None:
    watched = pools[WATCHED]
    watched.wait_replicas(cluster, lambda n: n >= watched.scaled_up_at_least, "the watched pool scales up", 300)
    # By now the operator has ticked many times; the unwatched pool, under the same load, is untouched.
    s = observe(stack, UNWATCHED_NS, "orders", "orders-worker")
    assert s.replicas == 1, "the unwatched worker Deployment was scaled"
    assert not s.pool.get("status"), f"the unwatched pool got a status: {s.pool.get('status')}"
    assert FINALIZER not in (s.pool["metadata"].get("finalizers") or [])
    assert not events_for(stack, UNWATCHED_NS, "orders", uid=s.pool["metadata"]["uid"])
    # The release has no Role there either: the operator could not touch it if it tried.
    assert stack.kubectl("-n", UNWATCHED_NS, "get", "role", f"{RELEASE}-operator").returncode != 0


def test_helm_upgrade_with_changed_values(stack: KindStack, cluster: KubectlCluster, pools) -> None:
    """Watching one more namespace and a shorter tick: a new operator pod with the new arguments, `helm test`
    passes, and the previously ignored pool is now managed and scaled."""
    old = operator_pod(stack)
    namespaces = [*stack.watched_namespaces(), UNWATCHED_NS]
    stack.install_chart(
        "--set",
        "operator.watchNamespaces={" + ",".join(namespaces) + "}",
        "--set",
        "operator.tick=3",
        stage="e2e: helm upgrade",
    )
    new = wait_for(
        "the upgraded operator pod",
        lambda: (p := stack.operator_pod()) and p["metadata"]["uid"] != old["metadata"]["uid"] and pod_ready(p) and p,
        300,
    )
    args = next(c for c in new["spec"]["containers"] if c["name"] == "operator")["args"]
    assert args[args.index("--tick") + 1] == "3", args
    assert UNWATCHED_NS in args, args
    history = json.loads(stack.helm("history", RELEASE, "-n", RELEASE_NS, "-o", "json"))
    assert history[-1]["status"] == "deployed" and len(history) >= 2, history
    stack.helm_test()

    now_watched = pools[UNWATCHED_NS]
    now_watched.wait_replicas(
        cluster, lambda n: n >= now_watched.scaled_up_at_least, "the newly watched pool scales up", 300
    )
    pool = observe(stack, UNWATCHED_NS, "orders", "orders-worker").pool
    # served, and (a pool without spec.template) without kopf's finalizer: only template pools carry one now
    assert FINALIZER not in pool["metadata"].get("finalizers", []) or pool["spec"].get("template"), pool["metadata"]


def _held(stack: KindStack, namespaces: list[str], seconds: float = 8.0) -> dict[str, int | None]:
    """Each namespace's orders-worker replicas, once none of them has changed for ``seconds``."""
    seen: list[tuple[float, dict[str, int | None]]] = []

    def held() -> bool:
        now = time.monotonic()
        seen.append((now, {ns: observe(stack, ns, "orders", "orders-worker").replicas for ns in namespaces}))
        recent = [counts for t, counts in seen if t >= now - seconds]
        return seen[0][0] <= now - seconds and all(c == recent[-1] for c in recent)

    wait_for("the workers' replicas to hold", held, 120, explain=lambda: str(seen[-5:]))
    return seen[-1][1]


def test_helm_uninstall_in_the_documented_order(stack: KindStack, pools) -> None:
    """docs/install.md: delete the WorkerPools while the operator runs, `helm uninstall`, then the CRD."""
    stack.must("delete", "workerpools.chanscale.dev", "--all", "-A", "--timeout=180s")
    # What the workers keep is what they run once their pools are gone: a pool still converging when the test
    # began may land one more scale that its last evaluation decided before the deletion.
    workers = _held(stack, list(pools))
    stack.helm("uninstall", RELEASE, "-n", RELEASE_NS, "--wait", "--timeout", "300s")
    stack.must("delete", "-f", str(REPO_ROOT / "crds"), "--timeout=120s")

    assert stack.kubectl("get", "crd", "workerpools.chanscale.dev").returncode != 0

    def release_objects() -> list[str]:
        left = stack.must("-n", RELEASE_NS, "get", RELEASE_OBJECTS, "-o", "name").split()
        return [n for n in left if RELEASE in n]

    # The operator pod is garbage-collected after its Deployment, within its termination grace period.
    wait_for(
        "the release's objects to be gone", lambda: not release_objects(), 120, explain=lambda: str(release_objects())
    )
    cluster_rbac = stack.must("get", "clusterroles,clusterrolebindings", "-l", f"app.kubernetes.io/instance={RELEASE}")
    assert not cluster_rbac.strip(), cluster_rbac
    for ns in [*stack.watched_namespaces(), UNWATCHED_NS]:
        assert stack.kubectl("-n", ns, "get", "role", f"{RELEASE}-operator").returncode != 0, ns
    # The workers chanscale scaled stay as they were.
    for ns, replicas in workers.items():
        assert observe(stack, ns, "orders", "orders-worker").replicas == replicas, ns
