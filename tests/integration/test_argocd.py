"""GitOps for real: Argo CD (built from source by `make tools`) syncs chanscale from a local Git repository.

One module fixture pays the start-up once: its own control plane (Argo CD takes over the WorkerPool CRD and may
delete things, so it does not share the session cluster), Redis, argocd-repo-server and
argocd-application-controller (chanscale.local.argocd), argocd-cm with our WorkerPool health check from
deploy/argocd/argocd-cm-health.yaml, and a bare Git repository populated from this checkout, with the repoURLs of
deploy/argocd pointed at it. The root Application of deploy/argocd is applied as a user would.

What is proven, test by test, is summarised in docs/gitops.md ("What the tests prove").
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.unit.test_argocd_health import CASES, HEALTH_CM

from chanscale.local.argocd import NAMESPACE, LocalArgoCD, LocalGitRepo
from chanscale.local.binaries import REPO_ROOT, BinaryNotFound
from chanscale.local.cluster import LocalControlPlane
from chanscale.local.harness import ObjectWatch, OperatorFactory, PrometheusTargets, SimProcess
from chanscale.local.process import wait_until

# One worker runs the whole module (make test: pytest -n 3 --dist loadgroup), so Argo CD starts once and the tests
# run in file order (the last one deletes the Applications).
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("argocd")]

DEMO_NS = "chanscale-demo"
POOL, WORKER = "orders", "orders-worker"
CONTROLLER_USER = "system:serviceaccount:argocd:argocd-application-controller"
APPS = ("chanscale-root", "chanscale", "chanscale-examples")
HEALTH_APP, HEALTH_NS, HEALTH_DIR = "health-cases", "health-cases", "health-cases"


# ------------------------------------------------------------------------------------------------- fixtures
class GitOps:
    """The running setup: cluster, Argo CD, the Git repository, and Argo CD's writes seen by the API server."""

    def __init__(self, cluster: LocalControlPlane, argo: LocalArgoCD, repo: LocalGitRepo) -> None:
        self.cluster, self.argo, self.repo = cluster, argo, repo

    def kubectl_json(self, *args: str) -> Any:
        return self.cluster.kubectl_json(*args)

    def argo_writes(self) -> list[dict[str, Any]]:
        """The controller's successful mutating requests, in the order the API server completed them."""
        return [
            ev
            for ev in self.cluster.audit_events(CONTROLLER_USER)
            if ev.get("verb") in {"create", "update", "patch", "delete"}
            and ev.get("stage") == "ResponseComplete"
            and (ev.get("responseStatus") or {}).get("code", 500) < 300
        ]

    def commit_and_sync(self, message: str, app: str) -> str:
        """Commit the work tree, tell Argo CD (as a webhook would) and wait until ``app`` is synced to it."""
        sha = self.repo.commit(message)
        for name in ("chanscale-root", app):
            self.argo.refresh(name)
        self.argo.wait_synced(app, revision=sha)
        return sha

    def edit(self, rel: str, change: Any) -> None:
        """Load a YAML file of the Git work tree, let ``change(doc)`` modify it, write it back."""
        path = self.repo.tree / rel
        doc = yaml.safe_load(path.read_text())
        change(doc)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _point_at(repo: LocalGitRepo) -> None:
    """Our Applications name the public repository: point them at the local one (what a fork does)."""
    for path in (repo.tree / "deploy" / "argocd").rglob("*.yaml"):
        text = path.read_text()
        path.write_text(re.sub(r"repoURL: \S+", f"repoURL: {repo.url}", text))


def _health_cases(repo: LocalGitRepo) -> None:
    """The health check's test fixtures as WorkerPools for Argo CD to sync: the same files the Lua tests read
    (deploy/argocd/.../testdata), each renamed after its case since they all describe the pool "orders"."""
    out = repo.tree / HEALTH_DIR
    out.mkdir()
    for name, obj, _ in CASES:
        meta = obj["metadata"]
        manifest = {**obj, "metadata": {**meta, "name": name, "namespace": HEALTH_NS}}
        manifest.pop("status", None)  # status is the operator's: set through the status subresource below
        manifest["metadata"].pop("generation", None)
        (out / f"{name}.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))


def _health_app(repo: LocalGitRepo) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": HEALTH_APP, "namespace": NAMESPACE},
        "spec": {
            "project": "default",
            "source": {"repoURL": repo.url, "targetRevision": "main", "path": HEALTH_DIR},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": HEALTH_NS},
            "syncPolicy": {
                "automated": {},
                "syncOptions": ["CreateNamespace=true", "ServerSideApply=true"],
                # as the shipped examples Application: Argo CD retries a failed automated sync of one revision
                # only with `retry` (e.g. its discovery has not yet seen the WorkerPool CRD)
                "retry": {"limit": 10, "backoff": {"duration": "2s", "factor": 2, "maxDuration": "20s"}},
            },
        },
    }


@pytest.fixture(scope="module")
def gitops(request: pytest.FixtureRequest) -> Iterator[GitOps]:
    cm_data = yaml.safe_load(HEALTH_CM.read_text())["data"]
    with tempfile.TemporaryDirectory(prefix="chanscale-gitops-") as tmp:
        cluster = LocalControlPlane()
        argo = LocalArgoCD(cluster, cm_data=cm_data)
        try:
            try:
                cluster.start()
                argo.start()
            except BinaryNotFound as exc:
                pytest.fail(f"{exc}\nThe GitOps tests need the real Argo CD: run `make tools`.", pytrace=False)
            repo = LocalGitRepo(Path(tmp)).init()
            repo.copy_in(REPO_ROOT, "charts", "examples", "deploy/argocd")
            _point_at(repo)
            _health_cases(repo)
            repo.commit("chanscale from this checkout")
            yield GitOps(cluster, argo, repo)
        finally:
            if request.session.testsfailed:
                for name, tail in {**argo.logs(), **cluster.logs()}.items():
                    print(f"--- {name} log tail ---\n{tail}")
            argo.stop()
            cluster.stop()


@pytest.fixture(scope="module")
def synced(gitops: GitOps) -> GitOps:
    """The root Application applied as docs/gitops.md says, and all three Applications Synced."""
    root = gitops.repo.tree / "deploy" / "argocd" / "root.yaml"
    applied = gitops.cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(root))
    assert applied.returncode == 0, applied.stderr
    for app in APPS:
        wait_until(partial(_exists, gitops, app), 120, f"Application {app}", gitops.argo.procs, interval=0.5)
        gitops.argo.wait_synced(app)
    return gitops


def _exists(gitops: GitOps, app: str) -> bool:
    res = gitops.cluster.kubectl("get", "applications.argoproj.io", app, "-n", NAMESPACE)
    return res.returncode == 0


def _deployment(gitops: GitOps, name: str = WORKER) -> dict[str, Any]:
    obj: dict[str, Any] = gitops.kubectl_json("get", "deployment", name, "-n", DEMO_NS)
    return obj


def _argocd_owned_replicas(watch: ObjectWatch) -> int:
    """Versions of the Deployment in which Argo CD's field manager owns spec.replicas: a server-side apply that
    names the field makes its manager an owner, so an Argo CD write of the count shows here. (chanscale's writes
    through the scale subresource record no owner while nobody else owns the field.)"""
    return sum(
        1
        for _, obj in watch.versions
        for m in obj["metadata"].get("managedFields") or []
        if m["manager"] == "argocd-controller" and "f:replicas" in ((m.get("fieldsV1") or {}).get("f:spec") or {})
    )


def _external_writers(watch: ObjectWatch) -> list[str]:
    """The pool's ExternalWriter condition whenever it was True: chanscale naming someone else's replica write."""
    return [
        c.get("message", "")
        for _, obj in watch.versions
        for c in (obj.get("status") or {}).get("conditions") or []
        if c.get("type") == "ExternalWriter" and c.get("status") == "True"
    ]


# ------------------------------------------------------------------------------------------------- tests
def test_root_application_syncs_in_wave_order(synced: GitOps) -> None:
    """The chart's Application before the examples', the CRD before the operator and the pools; read from the
    API server's audit log of the controller's ServiceAccount."""
    order = [(ev["objectRef"].get("resource"), ev["objectRef"].get("name"), ev["verb"]) for ev in synced.argo_writes()]

    def first(resource: str, name: str) -> int:
        hits = [i for i, (res, n, verb) in enumerate(order) if res == resource and n == name and verb != "delete"]
        assert hits, f"Argo CD never wrote {resource}/{name}; its writes: {order}"
        return hits[0]

    crd = first("customresourcedefinitions", "workerpools.chanscale.dev")
    operator = first("deployments", "chanscale")
    chart_app, examples_app = first("applications", "chanscale"), first("applications", "chanscale-examples")
    pool = first("workerpools", POOL)
    assert chart_app < examples_app, "wave 0 (chart) must be created before wave 1 (examples)"
    # Within the chart's sync, Argo CD applies CRDs before other kinds. Between the two Applications the waves
    # order the syncs but wait for nothing (no Application health check without a customisation): the pool comes
    # after its CRD because it cannot exist before it (and `retry` covers a race), not because of a health gate.
    assert crd < operator, order
    assert crd < pool, order
    wp = synced.kubectl_json("get", "workerpools.chanscale.dev", POOL, "-n", DEMO_NS)
    assert wp["spec"]["maxReplicas"] == 20


def test_health_check_in_argocd_matches_the_lua_tests(synced: GitOps) -> None:
    """Our argocd-cm health script inside Argo CD's gopher-lua gives the verdicts of health_test.yaml (which
    tests/unit/test_argocd_health.py checks with lua5.4/5.1), on the same fixture objects. After the root
    Application's sync, as a user has it: the WorkerPool CRD comes from the chart, whatever order tests run in."""
    gitops = synced
    applied = gitops.cluster.kubectl("apply", "-f", "-", input=json.dumps(_health_app(gitops.repo)))
    assert applied.returncode == 0, applied.stderr
    gitops.argo.wait_synced(HEALTH_APP)
    for name, obj, _ in CASES:
        _set_status(gitops, name, obj)
    expected = {name: want for name, _, want in CASES}
    seen: dict[str, dict[str, str]] = {}

    def verdicts() -> bool:
        app = gitops.argo.app(HEALTH_APP)
        seen.clear()
        for res in app.get("status", {}).get("resources") or []:
            if res.get("kind") == "WorkerPool":
                health = res.get("health") or {}
                seen[res["name"]] = {"status": health.get("status", ""), "message": health.get("message", "")}
        return seen == expected

    try:
        wait_until(verdicts, 90, "Argo CD's health verdicts", gitops.argo.procs, interval=1)
    except Exception:
        diff = {n: (seen.get(n), want) for n, want in expected.items() if seen.get(n) != want}
        raise AssertionError(f"Argo CD's verdict != health_test.yaml (seen, expected): {diff}") from None


def _set_status(gitops: GitOps, name: str, fixture: dict[str, Any]) -> None:
    """Give the synced pool the fixture's generation and status. The API server owns metadata.generation (1 on
    create, +1 per spec change): cycle spec.maxReplicas through other values back to the fixture's to reach it,
    then write the fixture's status through the status subresource."""
    want = int(fixture["metadata"]["generation"])
    steps = want - 1
    assert steps != 1, f"{name}: generation 2 cannot be reached by a cycle back to the fixture's spec"
    spec_max = int(fixture["spec"]["maxReplicas"])
    for value in [spec_max + i for i in range(1, steps)] + ([spec_max] if steps else []):
        _patch_pool(gitops, name, {"spec": {"maxReplicas": value}})
    live = gitops.kubectl_json("get", "workerpools.chanscale.dev", name, "-n", HEALTH_NS)
    assert live["metadata"]["generation"] == want, f"{name}: generation {live['metadata']['generation']} != {want}"
    status = json.loads(json.dumps(fixture.get("status") or {}, default=_rfc3339))
    _patch_pool(gitops, name, {"status": status}, "--subresource=status")


def _patch_pool(gitops: GitOps, name: str, patch: dict[str, Any], *extra: str) -> None:
    res = gitops.cluster.kubectl(
        "patch", "workerpools.chanscale.dev", name, "-n", HEALTH_NS, *extra, "--type=merge", "-p", json.dumps(patch)
    )
    assert res.returncode == 0, f"patching {name}: {res.stderr}"


def _rfc3339(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _sim(gitops: GitOps, tmp_path: Path, targets: PrometheusTargets) -> SimProcess:
    """The channel simulator configured like examples/simulator.yaml (read from it), run as a local process."""
    cm = next(d for d in yaml.safe_load_all((REPO_ROOT / "examples" / "simulator.yaml").read_text()) if d)
    channels = yaml.safe_load(cm["data"]["channels.yaml"])["channels"]
    sim = SimProcess("sim-gitops", channels, tmp_path, gitops.cluster.kubeconfig).start()
    targets.add(sim.address)
    return sim


def test_operator_scales_through_a_git_commit_and_argocd_never_writes_replicas(
    synced: GitOps, operator_process: OperatorFactory, prometheus_targets: PrometheusTargets, tmp_path: Path
) -> None:
    """One loop, two claims. (1) While chanscale scales the worker up under load, the Application stays Synced
    with no sync run and no Argo CD request to the Deployment. (2) A commit lowering maxReplicas is synced, the
    first or second evaluation of the new generation decides for the new maximum, the Deployment comes down to it,
    and neither that sync nor anything after it has Argo CD own spec.replicas or chanscale see an external write."""
    app_name, before = "chanscale-examples", len(synced.argo_writes())
    history = len(synced.argo.app(app_name)["status"].get("history") or [])
    deploy_watch = ObjectWatch(synced.cluster.api_client(), "deployment", DEMO_NS, WORKER).start()
    pool_watch = ObjectWatch(synced.cluster.api_client(), "workerpool", DEMO_NS, POOL).start()
    sim = _sim(synced, tmp_path, prometheus_targets)
    try:
        operator_process(namespaces=[DEMO_NS], kubeconfig_path=synced.cluster.kubeconfig)
        sim.set_arrival_rate(DEMO_NS, "orders", 60)
        wait_until(lambda: _replicas(synced) >= 5, 180, "scale-up under load")
        app = synced.argo.wait_synced(app_name)
        assert len(app["status"].get("history") or []) == history, "Argo CD ran a sync (self-heal) while scaling"
        to_worker = [ev for ev in synced.argo_writes()[before:] if ev["objectRef"].get("name") == WORKER]
        assert to_worker == [], f"Argo CD wrote the worker Deployment: {to_worker}"

        synced.edit("examples/workerpool.yaml", lambda doc: doc["spec"].update(maxReplicas=3))
        synced.commit_and_sync("orders: maxReplicas 3", app_name)
        wp = synced.kubectl_json("get", "workerpools.chanscale.dev", POOL, "-n", DEMO_NS)
        # The way down follows the pool's scale-down behaviour (stabilisation window and rate policy).
        wait_until(lambda: _replicas(synced) <= 3, 180, "the Deployment at the new maximum")
        app = synced.argo.wait_synced(app_name)
    finally:
        deploy_watch.stop()
        pool_watch.stop()
        sim.stop()
    assert len(app["status"].get("history") or []) == history + 1, "exactly one sync: the commit's"
    evaluations = _evaluations(pool_watch, wp["metadata"]["generation"])
    first_two = [{k: st.get(k) for k in ("recommendedReplicas", "desiredReplicas")} for st in evaluations[:2]]
    # desiredReplicas: the model's recommendation clamped by the pool's bounds (the recommendation itself stays the
    # model's, e.g. 8 under this load).
    assert any(int(st.get("desiredReplicas") or 99) <= 3 for st in evaluations[:2]), first_two
    assert _argocd_owned_replicas(deploy_watch) == 0, "Argo CD applied spec.replicas"
    assert _external_writers(pool_watch) == [], "chanscale saw someone else write spec.replicas"
    counts = [r for _, r in deploy_watch.replicas()]
    assert max(counts) >= 5 and counts[-1] <= 3, f"expected up then down, saw {counts}"


def _replicas(gitops: GitOps) -> int:
    return int(_deployment(gitops)["spec"].get("replicas") or 0)


def _evaluations(watch: ObjectWatch, generation: int) -> list[dict[str, Any]]:
    """The pool's status at each distinct evaluation (status.lastEvaluated) of ``generation``, in order."""
    out: list[dict[str, Any]] = []
    for _, obj in watch.versions:
        st = obj.get("status") or {}
        if st.get("observedGeneration") == generation and (not out or out[-1]["lastEvaluated"] != st["lastEvaluated"]):
            out.append(st)
    return out


def _include(doc: dict[str, Any], files: str) -> None:
    doc["spec"]["source"]["directory"]["include"] = files


def test_prune_and_delete_keep_the_crd_and_workloads(synced: GitOps, operator_process: OperatorFactory) -> None:
    """The safe default of docs/gitops.md: pruning a template pool orphans (keeps) the Deployment chanscale
    created for it; deleting the root Application removes the Applications and nothing they synced."""
    operator_process(
        namespaces=[DEMO_NS], kubeconfig_path=synced.cluster.kubeconfig, extra_args=["--template-namespace", DEMO_NS]
    )
    app_file = "deploy/argocd/apps/chanscale-examples.yaml"
    shipped = yaml.safe_load((synced.repo.tree / app_file).read_text())["spec"]["source"]["directory"]["include"]
    synced.edit(app_file, lambda doc: _include(doc, shipped.replace("}", ",workerpool-template.yaml}")))
    synced.commit_and_sync("add the template pool", "chanscale-examples")

    def owned() -> bool:
        return bool(_deployment(synced, "invoices")["metadata"].get("ownerReferences"))

    wait_until(owned, 60, "chanscale creating the template pool's Deployment")
    synced.edit(app_file, lambda doc: _include(doc, shipped))
    synced.commit_and_sync("remove the template pool", "chanscale-examples")

    def pruned() -> bool:
        return (
            "NotFound" in synced.cluster.kubectl("get", "workerpools.chanscale.dev", "invoices", "-n", DEMO_NS).stderr
        )

    wait_until(pruned, 60, "Argo CD pruning the template pool")
    assert not _deployment(synced, "invoices")["metadata"].get("ownerReferences"), "the Deployment is orphaned"

    replicas = _deployment(synced)["spec"]["replicas"]
    deleted = synced.cluster.kubectl("delete", "applications.argoproj.io", "chanscale-root", "-n", NAMESPACE)
    assert deleted.returncode == 0, deleted.stderr
    wait_until(lambda: not any(_exists(synced, a) for a in APPS), 120, "the Applications deleted", synced.argo.procs)
    for kind, name, ns in [
        ("crd", "workerpools.chanscale.dev", None),
        ("deployment", "chanscale", "chanscale-system"),
        ("workerpools.chanscale.dev", POOL, DEMO_NS),
        ("deployment", WORKER, DEMO_NS),
        ("deployment", "invoices", DEMO_NS),
    ]:
        res = synced.cluster.kubectl("get", kind, name, *(["-n", ns] if ns else []))
        assert res.returncode == 0, f"{kind}/{name} was deleted with the Application: {res.stderr}"
    assert _deployment(synced)["spec"]["replicas"] == replicas
