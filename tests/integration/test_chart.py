"""The Helm chart against the real tools: helm lint/template, OPA loading the policy ConfigMap, helm install into
the local control plane, and the ServiceAccount's RBAC checked with the API server's own authorizer.

Why against real binaries: a chart that lints can still be refused by the API server (schema, admission, Pod
Security), and RBAC is only "least privilege" if the real authorizer says so for both allowed and forbidden verbs.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chanscale.local.binaries import REPO_ROOT, BinaryNotFound, find_binary
from chanscale.local.process import LOOPBACK, ManagedProcess, free_port, wait_until

pytestmark = pytest.mark.integration

CHART = REPO_ROOT / "charts" / "chanscale"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


# --------------------------------------------------------------------------------------------------- helpers
def _binary(name: str) -> Path:
    try:
        return find_binary(name)
    except BinaryNotFound as exc:
        pytest.fail(f"{exc}\nThe chart tests need the real {name}: run `make tools`.", pytrace=False)


def helm(*args: str, kubeconfig: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real helm; with ``check`` a failure fails the test with helm's output."""
    argv = [str(_binary("helm")), *args]
    if kubeconfig is not None:
        argv.append(f"--kubeconfig={kubeconfig}")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": "/tmp/chanscale-helm/cache",
        "HELM_CONFIG_HOME": "/tmp/chanscale-helm/cfg",
        "HELM_DATA_HOME": "/tmp/chanscale-helm/data",
    }
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env, check=False)
    if check:
        assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def render(*extra: str, release: str = "cs", namespace: str = "chanscale-system") -> list[dict[str, Any]]:
    """``helm template`` with the chart's tests included, parsed. Without the CRD unless ``extra`` sets
    crds.install=true: the session's CRD is applied from crds/ by the control-plane fixture (test_chart_crds.py
    covers the chart's copy)."""
    out = helm("template", release, str(CHART), "--namespace", namespace, "--set", "crds.install=false", *extra).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def job_roles(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Roles of the operator's job (not the Lease Role of leader election, in the release namespace)."""
    return [r for r in by_kind(docs, "Role") if not r["metadata"]["name"].endswith("-leases")]


def containers(deploy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = deploy["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}


# ------------------------------------------------------------------------------------------ lint and template
@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=["defaults", *(p.name for p in CI_VALUES)])
def test_helm_lint_strict(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["-f", str(values)] if values else [])
    helm(*args)


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=["defaults", *(p.name for p in CI_VALUES)])
def test_helm_template_renders(values: Path | None) -> None:
    docs = render(*(["-f", str(values)] if values else []))
    deploy = one(docs, "Deployment")
    # Two elected replicas by default: a rolling update starts the new pod before the old leader lets go.
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_without_leader_election_one_replica_recreated() -> None:
    """Unelected replicas would all scale the same Deployments: one, whatever replicaCount says."""
    deploy = one(render("--set", "leaderElection.enabled=false", "--set", "replicaCount=3"), "Deployment")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"]["type"] == "Recreate"
    assert "--leader-elect" not in containers(deploy)["operator"]["args"]
    assert not [
        d
        for d in render("--set", "leaderElection.enabled=false")
        if d["kind"] == "Role" and "leases" in d["metadata"]["name"]
    ]


def test_leader_election_args_and_a_pdb_that_keeps_one_replica() -> None:
    docs = render("--set", "leaderElection.shards=3")
    deploy = one(docs, "Deployment")
    from chanscale.cli import build_parser

    args = build_parser().parse_args(containers(deploy)["operator"]["args"])
    assert args.leader_elect and args.shards == 3 and args.lease_duration > args.renew_deadline > args.retry_period
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and deploy["spec"]["replicas"] == 2  # a drain never takes both


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=["defaults", *(p.name for p in CI_VALUES)])
def test_operator_args_parse_with_the_real_cli(values: Path | None) -> None:
    """The container args are accepted by `chanscale run`'s own argument parser (a typo would crash-loop)."""
    from chanscale.cli import build_parser

    deploy = one(render(*(["-f", str(values)] if values else [])), "Deployment")
    args = build_parser().parse_args(containers(deploy)["operator"]["args"])
    assert args.command == "run" and args.standalone
    assert args.opa_url or args.opa == "none"
    assert args.liveness.endswith("/healthz")


def test_helm_test_script_compiles() -> None:
    """The helm test hook's inline Python is at least valid Python (it only runs in a real cluster)."""
    pod = next(d for d in render() if d["kind"] == "Pod")
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["python", "-c"]
    compile(container["args"][0], "helm-test", "exec")


def test_operator_pod_is_hardened() -> None:
    """Pod Security "restricted" in full, plus a read-only root filesystem, for both containers."""
    deploy = one(render(), "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for name, c in containers(deploy).items():
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["capabilities"]["drop"] == ["ALL"], name
        assert "resources" in c and c["resources"]["requests"], name
        assert c.get("livenessProbe") and c.get("readinessProbe"), name


def test_operator_talks_to_opa_on_localhost() -> None:
    deploy = one(render(), "Deployment")
    cs = containers(deploy)
    op_args, opa = cs["operator"]["args"], cs["opa"]
    assert op_args[:2] == ["run", "--standalone"]
    assert op_args[op_args.index("--opa-url") + 1] == "http://127.0.0.1:8181"
    assert "--addr=127.0.0.1:8181" in opa["args"]
    assert "--diagnostic-addr=0.0.0.0:8282" in opa["args"]
    assert opa["restartPolicy"] == "Always", "OPA should be a native sidecar (starts before the operator)"
    assert opa["livenessProbe"]["httpGet"]["port"] == "opa-diag"


def test_selectors_match_what_they_select() -> None:
    """Service, PDB, NetworkPolicy and PodMonitor select the operator pod; the ServiceMonitor selects the Service."""
    docs = render("-f", str(CHART / "ci" / "monitoring-values.yaml"))
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    svc = one(docs, "Service")

    def subset(sel: dict[str, str], labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in sel.items())

    assert subset(svc["spec"]["selector"], pod_labels)
    assert subset(one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    assert subset(one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"], pod_labels)
    assert subset(one(docs, "PodMonitor")["spec"]["selector"]["matchLabels"], pod_labels)
    assert subset(one(docs, "ServiceMonitor")["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    test_pod = next(d for d in docs if d["kind"] == "Pod")
    netpol_from = one(docs, "NetworkPolicy")["spec"]["ingress"][-1]["from"][0]["podSelector"]["matchLabels"]
    assert subset(netpol_from, test_pod["metadata"]["labels"]), "the helm test pod must pass the NetworkPolicy"


def test_policy_configmap_has_exactly_the_generated_files() -> None:
    docs = render()
    cm = one(docs, "ConfigMap")
    root = CHART / "files" / "policies"
    expected = {
        str(p.relative_to(root)): p.read_text()
        for p in root.rglob("*")
        if p.is_file() and (p.suffix == ".rego" or p.name == "data.json")
    }
    items = {i["key"]: i["path"] for i in containers_volume(one(docs, "Deployment"), "policies")["items"]}
    got = {items[k]: v for k, v in cm["data"].items()}
    config = "chanscale/config/data.json"  # re-serialised: the admin's policy.config is merged into it
    assert json.loads(got.pop(config)) == json.loads(expected.pop(config))
    assert got == expected


def containers_volume(deploy: dict[str, Any], name: str) -> dict[str, Any]:
    vols = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}
    return vols[name]["configMap"]


def test_namespaced_mode_grants_roles_only_in_watched_namespaces() -> None:
    docs = render("--set", "operator.watchNamespaces={team-a,team-b}")
    roles = job_roles(docs)
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    cluster_roles = {r["metadata"]["name"] for r in by_kind(docs, "ClusterRole")}
    assert "cs-chanscale-operator" not in cluster_roles
    args = containers(one(docs, "Deployment"))["operator"]["args"]
    assert "--all-namespaces" not in args
    assert args.count("--namespace") == 2


def test_template_mode_is_opt_in_and_namespaced() -> None:
    role = next(r for r in by_kind(render(), "ClusterRole") if r["metadata"]["name"].endswith("-operator"))
    deployment_verbs = {v for r in role["rules"] if "deployments" in r["resources"] for v in r["verbs"]}
    assert deployment_verbs == {"list", "watch"}, "by default the operator cannot create or change a Deployment"
    assert not job_roles(render())
    docs = render("--set", "rbac.templateNamespaces={team-a}")
    roles = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-templates")]
    assert [(r["metadata"]["namespace"], r["rules"][0]["verbs"]) for r in roles] == [
        ("team-a", ["get", "create", "patch"])
    ]
    args = containers(one(docs, "Deployment"))["operator"]["args"]
    assert args[args.index("--template-namespace") + 1] == "team-a"


def test_admin_guardrails_reach_the_operator_and_opa() -> None:
    """Locked guards set through Helm land in the one data.chanscale.config document (no second document to
    collide with), and the profiles, failure policy and Prometheus allowlist become operator flags."""
    docs = render(
        "--set",
        "policy.config.locked={caps,budget}",
        "--set",
        "policy.config.defaults.caps.maxReplicas=3",
        "--set",
        "policy.profiles.strict=acme/strict/decision",
        "--set",
        "policy.failurePolicy=Allow",
        "--set",
        "prometheus.allowedUrls={http://team-prom:9090}",
    )
    config = json.loads(one(docs, "ConfigMap")["data"]["chanscale_config_data.json"])
    assert config["locked"] == ["caps", "budget"] and config["defaults"]["caps"] == {"maxReplicas": 3}
    assert config["defaults"]["escalation"]["enabled"] is True, "the shipped defaults are kept"
    from chanscale.cli import build_parser, guardrails_from_args

    g = guardrails_from_args(build_parser().parse_args(containers(one(docs, "Deployment"))["operator"]["args"]))
    assert g.profiles == {"default": "chanscale/main/decision", "strict": "acme/strict/decision"}
    assert g.failure_policy == "Allow" and g.prometheus_allowlist == ("http://team-prom:9090",)
    assert not g.custom_queries and g.scrape_interval_seconds == 30


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (["--set", "operator.tick=0"], "/operator/tick"),
        (["--set", "opa.image.tag=0.70.0"], "/opa/image/tag"),
        (["--set", "opa.image.tag=latest"], "/opa/image/tag"),
        (["--set", "prometheus.url=prometheus:9090"], "/prometheus/url"),
        (["--set", "securityContext.allowPrivilegeEscalation=true"], "/securityContext/allowPrivilegeEscalation"),
        (["--set", "podSecurityContext.runAsNonRoot=false"], "/podSecurityContext/runAsNonRoot"),
        (["--set", "operator.watchNamespaces={Team_A}"], "/operator/watchNamespaces/0"),
        (["--set", "operator.metricz=1"], "metricz"),
        (["--set", "serviceMonitor.interval=30"], "/serviceMonitor/interval"),
        (["--set", "image.digest=sha256:abc"], "/image/digest"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_schema_rejects_wrong_values_naming_the_key(args: list[str], message: str) -> None:
    proc = helm("template", "cs", str(CHART), *args, check=False)
    assert proc.returncode != 0, f"helm accepted {args}"
    assert message in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "pdb.minAvailable=1"], "pdb.maxUnavailable or pdb.minAvailable"),
        (["--set", "leaderElection.renewDeadlineSeconds=10"], "renewDeadlineSeconds"),
        (["--set", "serviceMonitor.enabled=true", "--set", "operator.metricsPort=0"], "operator.metricsPort"),
        (["--set", "opa.enabled=false", "--set", "opa.extraPolicies.x\\.rego=package x"], "opa.enabled=true"),
        (
            ["--set", "prometheus.auth.bearerToken.secretName=t", "--set", "prometheus.auth.basicAuth.username=u"],
            "bearerToken.secretName or basicAuth.username",
        ),
        (["--set", "prometheus.auth.basicAuth.username=u"], "prometheus.auth.basicAuth: set both"),
        (
            ["--set", "prometheus.tls.ca.secretName=a", "--set", "prometheus.tls.ca.configMapName=b"],
            "prometheus.tls.ca: set either",
        ),
    ],
)
def test_template_rejects_inconsistent_values(args: list[str], message: str) -> None:
    proc = helm("template", "cs", str(CHART), *args, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_scale_targets_are_opt_in_per_kind_and_scale_subresource_only() -> None:
    """rbac.scaleTargets grants get/patch on <resource>/scale (never the resource) and enables the kind with the
    operator's --scale-kind; by default no such rule exists."""
    from chanscale.cli import build_parser, guardrails_from_args

    def rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        role = next(r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"].endswith("-operator"))
        return [r for r in role["rules"] if any(x.endswith("/scale") for x in r["resources"])]

    assert [r["resources"] for r in rules(render())] == [["deployments/scale"]]
    docs = render(
        "--set",
        "rbac.scaleTargets[0].kind=StatefulSet,rbac.scaleTargets[0].apiGroup=apps,"
        "rbac.scaleTargets[0].resource=statefulsets",
        "--set",
        "rbac.scaleTargets[1].kind=Rollout,rbac.scaleTargets[1].apiGroup=argoproj.io,"
        "rbac.scaleTargets[1].resource=rollouts",
    )
    extra = [r for r in rules(docs) if r["resources"] != ["deployments/scale"]]
    assert extra == [
        {"apiGroups": ["apps"], "resources": ["statefulsets/scale"], "verbs": ["get", "patch"]},
        {"apiGroups": ["argoproj.io"], "resources": ["rollouts/scale"], "verbs": ["get", "patch"]},
    ]
    g = guardrails_from_args(build_parser().parse_args(containers(one(docs, "Deployment"))["operator"]["args"]))
    assert g.scale_kinds == {"StatefulSet.apps", "Rollout.argoproj.io"}


@pytest.mark.parametrize(
    "extra",
    [
        ["-f", str(CHART / "ci" / "prometheus-auth-values.yaml")],
        [
            "--set",
            "prometheus.auth.basicAuth.username=u",
            "--set",
            "prometheus.auth.basicAuth.secretName=pw",
            "--set",
            "prometheus.tls.ca.secretName=ca",
        ],
    ],
    ids=["token-ca-clientcert-header", "basic-auth-ca-secret"],
)
def test_prometheus_credentials_are_mounted_where_the_flags_point(extra: list[str]) -> None:
    """Every --prometheus-*-file flag names a file that a mounted Secret/ConfigMap item provides, and the
    operator's own parser accepts the whole set (chanscale.promauth; docs/security.md)."""
    from chanscale.cli import build_parser

    deploy = one(render(*extra), "Deployment")
    op = containers(deploy)["operator"]
    volumes = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}
    files = {}
    for m in op["volumeMounts"]:
        v = volumes[m["name"]]
        source = v.get("secret") or v.get("configMap")
        if source:
            assert m["readOnly"] is True
            files.update({f"{m['mountPath']}/{i['path']}": v["name"] for i in source["items"]})
    args = op["args"]
    flags = [a for a in args if a.startswith("--prometheus-") and a.endswith("-file")]
    assert flags, args
    for flag in flags:
        assert args[args.index(flag) + 1] in files, f"{flag} points at no mounted file"
    parsed = build_parser().parse_args(args)
    assert parsed.prometheus_bearer_token_file or parsed.prometheus_basic_auth_user


# ------------------------------------------------------------------------------------ OPA loads the ConfigMap
def _kubelet_configmap_layout(cm: dict[str, Any], items: list[dict[str, str]], root: Path) -> None:
    """Lay files out the way the kubelet projects a ConfigMap with items: a timestamped dir, ..data, symlinks."""
    stamp = root / "..2026_11_23_12_00_00.000000000"
    for item in items:
        target = stamp / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(cm["data"][item["key"]])
    (root / "..data").symlink_to(stamp.name)
    for top in {Path(i["path"]).parts[0] for i in items}:
        (root / top).symlink_to(Path("..data") / top)


def start_opa_from_chart(docs: list[dict[str, Any]], tmp_path: Path) -> tuple[ManagedProcess, str, str]:
    """The real OPA with the chart's sidecar flags, on the policies ConfigMap laid out as the kubelet mounts it.

    Returns the process, the API URL and the diagnostic URL (both moved to free loopback ports)."""
    cm, deploy = one(docs, "ConfigMap"), one(docs, "Deployment")
    _kubelet_configmap_layout(cm, containers_volume(deploy, "policies")["items"], tmp_path / "policies")
    api, diag = free_port(), free_port()
    args = []
    for a in containers(deploy)["opa"]["args"]:
        if a.startswith("--addr="):
            a = f"--addr={LOOPBACK}:{api}"
        elif a.startswith("--diagnostic-addr="):
            a = f"--diagnostic-addr={LOOPBACK}:{diag}"
        elif a == "/policies":
            a = str(tmp_path / "policies")
        args.append(a)
    proc = ManagedProcess("opa", [_binary("opa"), *args], tmp_path / "opa.log").start()
    try:
        wait_until(lambda: _get(f"http://{LOOPBACK}:{diag}/health") is not None, 30, "OPA /health", [proc])
    except BaseException:
        proc.stop()
        raise
    return proc, f"http://{LOOPBACK}:{api}", f"http://{LOOPBACK}:{diag}"


def test_opa_sidecar_args_load_the_policy_configmap(tmp_path: Path) -> None:
    """Run the real OPA with the sidecar's exact flags on the ConfigMap as the kubelet mounts it."""
    docs = render()
    deploy = one(docs, "Deployment")
    proc, api_url, _diag_url = start_opa_from_chart(docs, tmp_path)
    try:
        policies = _get(f"{api_url}/v1/policies")
        assert policies is not None
        loaded = {p["id"].split("/policies/", 1)[-1] for p in policies["result"]}
        expected = {i["path"] for i in containers_volume(deploy, "policies")["items"] if i["path"].endswith(".rego")}
        assert loaded == expected, "each module exactly once (hidden ..data entries ignored)"
        source = json.loads((REPO_ROOT / "policies" / "chanscale" / "config" / "data.json").read_text())
        config = _get(f"{api_url}/v1/data/chanscale/config")
        assert config is not None and config["result"] == source
    finally:
        proc.stop()


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read() or b"{}")
    except OSError:
        return None


# ----------------------------------------------------------------------------- install into the control plane
MONITORING_CRDS = [
    {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"kind": kind, "plural": plural, "singular": plural[:-1], "listKind": f"{kind}List"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
            ],
        },
    }
    for kind, plural in (
        ("ServiceMonitor", "servicemonitors"),
        ("PodMonitor", "podmonitors"),
        ("PrometheusRule", "prometheusrules"),
    )
]


class Release:
    """One installed release in its own namespace (Pod Security "restricted" enforced there)."""

    def __init__(self, kubectl: Any, kubeconfig: Path, values: list[str]) -> None:
        suffix = uuid.uuid4().hex[:6]
        self.kubectl, self.kubeconfig = kubectl, kubeconfig
        self.name = f"cs-{suffix}"
        self.namespace = f"chanscale-system-{suffix}"
        self.values = values
        self.install: subprocess.CompletedProcess[str] | None = None

    @property
    def service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}-chanscale"

    def __enter__(self) -> Release:
        res = self.kubectl("create", "namespace", self.namespace)
        assert res.returncode == 0, res.stderr
        self.kubectl(
            "label",
            "namespace",
            self.namespace,
            "pod-security.kubernetes.io/enforce=restricted",
            "chanscale.dev/test=true",
        )
        self.install = helm(
            "install",
            self.name,
            str(CHART),
            "--namespace",
            self.namespace,
            "--set",
            "crds.install=false",  # the session CRD (kubectl-applied from crds/) is not this release's
            *self.values,
            "--set",
            "image.repository=chanscale",
            "--set",
            "image.tag=test",
            kubeconfig=self.kubeconfig,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        helm(
            "uninstall",
            self.name,
            "--namespace",
            self.namespace,
            "--wait=false",
            kubeconfig=self.kubeconfig,
            check=False,
        )
        self.kubectl("delete", "namespace", self.namespace, "--wait=false", "--ignore-not-found")

    def manifest(self) -> list[dict[str, Any]]:
        out = helm("get", "manifest", self.name, "--namespace", self.namespace, kubeconfig=self.kubeconfig).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    def can(self, verb: str, resource: str, namespace: str | None = None, subresource: str | None = None) -> bool:
        """Ask the API server's authorizer (a SubjectAccessReview) whether the ServiceAccount may do this.

        A SubjectAccessReview rather than ``kubectl auth can-i --as``: kubectl resolves the resource through
        discovery first and answers "no" for groups the server does not serve (keda.sh here), while RBAC grants
        on them are real and must be checked too.
        """
        plural, _, group = resource.partition(".")
        attrs: dict[str, str] = {"verb": verb, "resource": plural, "group": group}
        if namespace:
            attrs["namespace"] = namespace
        if subresource:
            attrs["subresource"] = subresource
        sar = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": self.service_account,
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{self.namespace}",
                    "system:authenticated",
                ],
                "resourceAttributes": attrs,
            },
        }
        res = self.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(sar))
        assert res.returncode == 0, f"SubjectAccessReview {attrs} failed: {res.stderr}"
        return bool(json.loads(res.stdout)["status"].get("allowed"))


@pytest.fixture(scope="module")
def monitoring_crds(kubectl: Any) -> Iterator[None]:
    """Minimal prometheus-operator CRDs so the ServiceMonitor/PodMonitor objects can be accepted."""
    res = kubectl.apply(MONITORING_CRDS)
    assert res.returncode == 0, res.stderr
    for crd in MONITORING_CRDS:
        kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}", "--timeout=60s")
    yield
    for crd in MONITORING_CRDS:
        kubectl("delete", "crd", crd["metadata"]["name"], "--wait=false", "--ignore-not-found")


@pytest.fixture(scope="module")
def release(kubectl: Any, kubeconfig: Path, monitoring_crds: None) -> Iterator[Release]:
    """The chart installed cluster-wide with every optional object on (ServiceMonitor, PodMonitor, PrometheusRule,
    the Grafana dashboard, NetPol)."""
    with Release(kubectl, kubeconfig, ["-f", str(CHART / "ci" / "monitoring-values.yaml")]) as rel:
        yield rel


def test_helm_install_every_object_is_accepted(release: Release) -> None:
    objs = release.manifest()
    kinds = {o["kind"] for o in objs}
    assert {
        "Deployment",
        "ServiceAccount",
        "ConfigMap",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
        "PodDisruptionBudget",
        "NetworkPolicy",
    } <= kinds
    for o in objs:
        ns = ["-n", o["metadata"].get("namespace", release.namespace)]
        res = release.kubectl("get", o["kind"], o["metadata"]["name"], *ns, "-o", "name")
        assert res.returncode == 0, f"{o['kind']}/{o['metadata']['name']} not on the server: {res.stderr}"
    status = json.loads(
        helm("status", release.name, "-n", release.namespace, "-o", "json", kubeconfig=release.kubeconfig).stdout
    )
    assert status["info"]["status"] == "deployed"
    notes = status["info"]["notes"]
    assert "It manages WorkerPools in all namespaces." in notes, notes
    assert f"helm test {release.name} -n {release.namespace}" in notes, notes


def test_operator_pod_passes_restricted_pod_security(release: Release) -> None:
    """The ReplicaSet controller creates the pod only if Pod Security "restricted" admission accepts it."""

    def pod_created() -> bool:
        res = release.kubectl(
            "get", "pods", "-n", release.namespace, "-o", "name", "-l", "app.kubernetes.io/component=operator"
        )
        return res.returncode == 0 and res.stdout.strip() != ""

    try:
        wait_until(pod_created, 60, "the operator pod to be created by its ReplicaSet", interval=0.5)
    except Exception as exc:
        events = release.kubectl("get", "events", "-n", release.namespace, "-o", "custom-columns=R:.reason,M:.message")
        pytest.fail(f"{exc}\nevents:\n{events.stdout}")


def test_helm_test_pod_passes_restricted_pod_security(release: Release) -> None:
    docs = render("--namespace", release.namespace, release=release.name)
    test_pod = next(d for d in docs if d["kind"] == "Pod")
    res = release.kubectl.apply(test_pod, release.namespace, "--dry-run=server")
    assert res.returncode == 0, res.stderr


ALLOWED_NAMESPACED = [
    ("list", "workerpools.chanscale.dev", None),
    ("watch", "workerpools.chanscale.dev", None),
    ("patch", "workerpools.chanscale.dev", None),
    ("patch", "workerpools.chanscale.dev", "status"),
    ("list", "deployments.apps", None),
    ("watch", "deployments.apps", None),
    ("patch", "deployments.apps", "scale"),
    ("list", "horizontalpodautoscalers.autoscaling", None),
    ("watch", "horizontalpodautoscalers.autoscaling", None),
    ("list", "scaledobjects.keda.sh", None),
    ("watch", "scaledobjects.keda.sh", None),
    ("create", "events", None),
]
FORBIDDEN_NAMESPACED = [
    ("create", "deployments.apps", None),  # template mode is opt-in (rbac.templateNamespaces)
    ("patch", "deployments.apps", None),  # the pod template of any Deployment
    ("update", "deployments.apps", "scale"),
    ("delete", "deployments.apps", None),
    ("update", "deployments.apps", None),
    ("deletecollection", "deployments.apps", None),
    ("get", "secrets", None),
    ("list", "secrets", None),
    ("get", "configmaps", None),
    ("create", "pods", None),
    ("delete", "pods", None),
    ("create", "pods", "exec"),
    ("get", "pods", None),
    ("create", "workerpools.chanscale.dev", None),
    ("delete", "workerpools.chanscale.dev", None),
    ("update", "workerpools.chanscale.dev", None),
    ("create", "horizontalpodautoscalers.autoscaling", None),
    ("patch", "scaledobjects.keda.sh", None),
    ("patch", "statefulsets.apps", "scale"),
    ("create", "serviceaccounts", "token"),
    ("delete", "events", None),
    ("create", "rolebindings.rbac.authorization.k8s.io", None),
]
ALLOWED_CLUSTER = [
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("list", "workerpools.chanscale.dev"),  # --all-namespaces lists across the cluster
]
FORBIDDEN_CLUSTER = [
    ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
    ("get", "nodes"),
    ("list", "namespaces"),
    ("create", "namespaces"),
    ("delete", "namespaces"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("impersonate", "users"),
    ("get", "clusterkopfpeerings.kopf.dev"),  # --standalone: no peering, so no peering rights
]


def test_rbac_allows_the_whole_job(release: Release, namespace: str) -> None:
    missing = [(v, r, s) for v, r, s in ALLOWED_NAMESPACED if not release.can(v, r, namespace, s)]
    missing += [
        (v, "leases.coordination.k8s.io", None)
        for v in ("get", "create", "update")
        if not release.can(v, "leases.coordination.k8s.io", release.namespace)
    ]
    missing += [(v, r, None) for v, r in ALLOWED_CLUSTER if not release.can(v, r)]
    assert not missing, f"the operator's ServiceAccount lacks: {missing}"


def test_rbac_forbids_everything_else(release: Release, namespace: str) -> None:
    extra = [(v, r, s) for v, r, s in FORBIDDEN_NAMESPACED if release.can(v, r, namespace, s)]
    extra += [(v, r, None) for v, r in FORBIDDEN_CLUSTER if release.can(v, r)]
    extra += [
        (v, "leases", None) for v in ("update", "delete") if release.can(v, "leases.coordination.k8s.io", namespace)
    ]
    assert not extra, f"the operator's ServiceAccount may do more than it needs: {extra}"


def test_service_account_token_scales_but_cannot_read_secrets(
    release: Release, namespace: str, kubectl: Any, control_plane: Any, tmp_path: Path
) -> None:
    """Not just can-i: a real token of the chart's ServiceAccount scales through the scale subresource (and can do
    nothing else to the Deployment)."""
    worker = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "worker", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "worker"}},
            "template": {
                "metadata": {"labels": {"app": "worker"}},
                "spec": {"containers": [{"name": "w", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }
    assert kubectl.apply(worker).returncode == 0
    token = control_plane.create_token(release.namespace, f"{release.name}-chanscale")
    sa_config = control_plane.write_token_kubeconfig(token, tmp_path / "sa.kubeconfig")
    # The operator's own call (a merge patch of deployments/scale, no read first), with the SA's token.
    from kubernetes import client, config

    api = client.AppsV1Api(config.new_client_from_config(config_file=str(sa_config)))
    api.patch_namespaced_deployment_scale("worker", namespace, {"spec": {"replicas": 3}}, field_manager="chanscale")
    assert kubectl.json("get", "deployment", "worker", "-n", namespace)["spec"]["replicas"] == 3
    secrets = kubectl("get", "secrets", "-n", namespace, kubeconfig=sa_config)
    assert secrets.returncode != 0 and "forbidden" in secrets.stderr.lower()
    rewrite = json.dumps({"spec": {"template": {"spec": {"containers": [{"name": "w", "image": "evil:1"}]}}}})
    rewritten = kubectl("patch", "deployment", "worker", "-n", namespace, "-p", rewrite, kubeconfig=sa_config)
    assert rewritten.returncode != 0 and "forbidden" in rewritten.stderr.lower(), "no pod template rewrites"
    deleted = kubectl("delete", "deployment", "worker", "-n", namespace, kubeconfig=sa_config)
    assert deleted.returncode != 0 and "forbidden" in deleted.stderr.lower()


def test_namespaced_install_is_confined(kubectl: Any, kubeconfig: Path, namespace: str) -> None:
    """With operator.watchNamespaces the ServiceAccount can scale there and nowhere else."""
    other = f"{namespace}-other"
    assert kubectl("create", "namespace", other).returncode == 0
    try:
        with Release(kubectl, kubeconfig, ["--set", f"operator.watchNamespaces={{{namespace}}}"]) as rel:
            assert rel.can("patch", "deployments.apps", namespace, "scale")
            assert rel.can("patch", "workerpools.chanscale.dev", namespace, "status")
            assert not rel.can("patch", "deployments.apps", other, "scale")
            assert not rel.can("list", "workerpools.chanscale.dev", other)
            assert not rel.can("list", "workerpools.chanscale.dev")  # not cluster-wide
            assert rel.can("list", "customresourcedefinitions.apiextensions.k8s.io")  # kopf's discovery
    finally:
        kubectl("delete", "namespace", other, "--wait=false", "--ignore-not-found")
