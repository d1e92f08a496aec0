"""The kind stack the e2e suite and the kind benchmark run on: the cluster (brought up by hack/e2e-cluster.sh),
the e2e Prometheus (tests/e2e/manifests/prometheus.yaml) and the chart, installed with ``helm``.

No pytest in here: ``bench/kind_loop.py`` uses it too (loaded by path, as tests/integration loads scenario.py).
Every failure raises :class:`E2EError` naming what is missing and the fix; the suite turns it into a failure,
never a skip.

Environment (all optional; defaults follow hack/e2e-cluster.sh):

    CHANSCALE_E2E_CLUSTER      kind cluster name (chanscale-e2e, as in kind-config.yaml)
    CHANSCALE_E2E_KUBECONFIG   kubeconfig of that cluster (.cache/e2e/kubeconfig)
    CHANSCALE_E2E_UP           the bring-up command (hack/e2e-cluster.sh up)
    CHANSCALE_E2E_KEEP=1       keep the cluster (and the release) after the run; the next run reuses them
    CHANSCALE_E2E_REUSE=1      use a Ready cluster as it is, without running the bring-up (make e2e sets it)
    CHANSCALE_BIN              where kubectl, helm and kind are (./bin, then /work-tree-independent PATH)
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = Path(__file__).resolve().parent / "manifests"
CACHE = REPO_ROOT / ".cache" / "e2e"

RELEASE = "chanscale"
RELEASE_NS = "chanscale-system"
PROMETHEUS_NS = "monitoring"
PROMETHEUS_URL = f"http://prometheus.{PROMETHEUS_NS}.svc:9090"
# Namespaces the release watches (manifests/chart-values.yaml lists the same) and one it does not.
UNWATCHED_NS = "e2e-unwatched"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}

Doc = dict[str, Any]


class E2EError(RuntimeError):
    """A missing prerequisite or a failed setup step; the message says what and how to fix it."""


@dataclass(frozen=True)
class Images:
    """The images hack/e2e-cluster.sh built and loaded into the node (repository:tag)."""

    operator: str
    opa: str
    prometheus: str
    nats: str = "chanscale/nats-server:2.15.2"  # the example JetStream broker and worker (examples/nats/)
    nats_worker: str = "chanscale/nats-worker:e2e"

    @staticmethod
    def split(ref: str) -> tuple[str, str]:
        repo, _, tag = ref.rpartition(":")
        if not repo or "/" in tag:
            raise E2EError(f"image reference {ref!r} has no tag: expected repository:tag")
        return repo, tag


def load_yaml(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _image_names() -> dict[str, str]:
    """The resolved image names hack/e2e-cluster.sh wrote (.cache/e2e/images.env, KEY=VALUE), if any."""
    path = CACHE / "images.env"
    if not path.is_file():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip().strip("'\"") for k, v in pairs}


def _env_images() -> Images:
    """Image names: CHANSCALE_E2E_*_IMAGE, else .cache/e2e/images.env, else hack/images.env's defaults."""
    names = _image_names()

    def pick(env: str, key: str, default: str) -> str:
        return os.environ.get(env) or names.get(key) or default

    return Images(
        operator=pick("CHANSCALE_E2E_IMAGE", "CHANSCALE_OPERATOR_IMAGE", "chanscale/operator:e2e"),
        opa=pick("CHANSCALE_E2E_OPA_IMAGE", "CHANSCALE_OPA_IMAGE", "openpolicyagent/opa:1.22.2-static"),
        prometheus=pick(
            "CHANSCALE_E2E_PROMETHEUS_IMAGE", "CHANSCALE_PROMETHEUS_IMAGE", "chanscale/prometheus:bookworm"
        ),
        nats=pick("CHANSCALE_E2E_NATS_IMAGE", "CHANSCALE_NATS_IMAGE", Images.nats),
        nats_worker=pick("CHANSCALE_E2E_NATS_WORKER_IMAGE", "CHANSCALE_NATS_WORKER_IMAGE", Images.nats_worker),
    )


@dataclass
class KindStack:
    cluster: str = field(default_factory=lambda: os.environ.get("CHANSCALE_E2E_CLUSTER", "chanscale-e2e"))
    kubeconfig: Path = field(
        default_factory=lambda: Path(os.environ.get("CHANSCALE_E2E_KUBECONFIG", CACHE / "kubeconfig"))
    )
    images: Images = field(default_factory=_env_images)
    bin_dir: Path = field(default_factory=lambda: Path(os.environ.get("CHANSCALE_BIN", REPO_ROOT / "bin")))
    keep: bool = field(default_factory=lambda: os.environ.get("CHANSCALE_E2E_KEEP") == "1")
    log: Callable[[str], None] = print
    timings: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------------ tools
    def tool(self, name: str) -> str:
        for candidate in (self.bin_dir / name, shutil.which(name)):
            if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        raise E2EError(f"{name} not found in {self.bin_dir} or on PATH: run `make tools` (or `make e2e`)")

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time one setup stage; printed as ``[stage] NAME: done in Ns`` like hack/stage.sh."""
        t0 = time.monotonic()
        self.log(f"[stage] {name}: start")
        ok = False
        try:
            yield
            ok = True
        finally:
            self.timings[name] = round(time.monotonic() - t0, 1)
            self.log(f"[stage] {name}: {'done' if ok else 'FAILED'} in {self.timings[name]:.0f}s")

    def run(self, argv: Sequence[str], *, timeout: float = 600, input: str | None = None) -> str:
        """Run a setup command; a non-zero exit raises E2EError with the command and its output."""
        try:
            res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input, check=False)
        except subprocess.TimeoutExpired as e:
            raise E2EError(f"$ {shlex.join(argv)}\ndid not finish within {timeout:.0f}s") from e
        if res.returncode != 0:
            raise E2EError(f"$ {shlex.join(argv)}\nexit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        return res.stdout

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = False, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        argv = [self.tool("kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        return subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout, check=check)

    def must(self, *args: str, input: str | None = None, timeout: float = 300) -> str:
        """kubectl that raises E2EError on failure."""
        return self.run([self.tool("kubectl"), f"--kubeconfig={self.kubeconfig}", *args], input=input, timeout=timeout)

    def rollout(self, namespace: str, deployment: str, timeout: int = 300) -> None:
        """Wait for a Deployment's rollout; on failure the error carries its pods and their recent logs."""
        res = self.kubectl(
            "-n",
            namespace,
            "rollout",
            "status",
            f"deployment/{deployment}",
            f"--timeout={timeout}s",
            timeout=timeout + 60,
        )
        if res.returncode != 0:
            pods = self.kubectl("-n", namespace, "get", "pods", "-o", "wide").stdout
            logs = self.kubectl(
                "-n", namespace, "logs", f"deployment/{deployment}", "--all-containers", "--tail=20"
            ).stdout
            raise E2EError(f"{namespace}/{deployment} did not roll out: {res.stderr}\n{pods}\n{logs}")

    def helm(self, *args: str, timeout: float = 600) -> str:
        return self.run([self.tool("helm"), f"--kubeconfig={self.kubeconfig}", *args], timeout=timeout)

    # ---------------------------------------------------------------------------------------------- cluster
    def docker_problem(self) -> str | None:
        """Why Docker cannot be used, or None when `docker info` answers."""
        docker = shutil.which("docker")
        if docker is None:
            return "the docker CLI is not installed"
        try:
            res = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30, check=False)
        except subprocess.TimeoutExpired:
            return "`docker info` did not answer within 30 s"
        if res.returncode != 0:
            tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
            return f"`docker info` failed (no Docker engine reachable): {tail}"
        return None

    def up_command(self) -> list[str]:
        return shlex.split(os.environ.get("CHANSCALE_E2E_UP", str(REPO_ROOT / "hack" / "e2e-cluster.sh") + " up"))

    def cluster_ready(self) -> bool:
        """The kubeconfig exists and its API server answers with a Ready node."""
        if not self.kubeconfig.is_file():
            return False
        res = self.kubectl("get", "nodes", "-o", "json", timeout=30)
        if res.returncode != 0:
            return False
        nodes = json.loads(res.stdout).get("items", [])
        return bool(nodes) and all(
            any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
            for n in nodes
        )

    def up(self) -> None:
        """Bring the cluster up: hack/e2e-cluster.sh up is idempotent (a healthy cluster and unchanged images are
        reused; images whose inputs changed, e.g. operator code, are rebuilt and loaded). With
        CHANSCALE_E2E_REUSE=1 a Ready cluster is used as it is (`make e2e` ran the bring-up just before)."""
        if os.environ.get("CHANSCALE_E2E_REUSE") == "1" and self.cluster_ready():
            self.log(f"[e2e] reusing the running cluster ({self.kubeconfig})")
            return
        up = self.up_command()
        if not Path(up[0]).exists() and shutil.which(up[0]) is None:
            raise E2EError(f"the cluster bring-up script {up[0]} is missing: run `make e2e`")
        problem = self.docker_problem()
        if problem and os.environ.get("CHANSCALE_E2E_UP") is None:
            self.log(f"[e2e] {problem}; {up[0]} installs and starts Docker")
        with self.stage("e2e: cluster up (images, kind, load)"):
            self.run(up, timeout=5400)
        self.images = _env_images()  # the names the bring-up resolved
        if not self.cluster_ready():
            raise E2EError(f"`{shlex.join(up)}` finished but {self.kubeconfig} does not reach a Ready node")

    def down(self) -> None:
        """Delete the cluster (hack/e2e-cluster.sh down); never fails the run."""
        script = REPO_ROOT / "hack" / "e2e-cluster.sh"
        argv = (
            [str(script), "down"]
            if script.exists()
            else [self.tool("kind"), "delete", "cluster", "--name", self.cluster]
        )
        subprocess.run(argv, capture_output=True, timeout=300, check=False)

    def node_exec(self, *argv: str, timeout: float = 60) -> str:
        """Run a command inside the kind node container (crictl, to kill one container for a fault test)."""
        docker = shutil.which("docker") or "docker"
        return self.run([docker, "exec", f"{self.cluster}-control-plane", *argv], timeout=timeout)

    def crictl(self, *argv: str) -> str:
        """crictl in the node, against its containerd (the kubelet's runtime)."""
        return self.node_exec("crictl", "--runtime-endpoint", "unix:///run/containerd/containerd.sock", *argv)

    # ------------------------------------------------------------------------------------------ namespaces
    def namespaces(self, names: Sequence[str], labels: dict[str, str] | None = None) -> None:
        """Create (or label) namespaces that enforce the restricted Pod Security Standard."""
        docs = [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": n, "labels": {**RESTRICTED, **(labels or {})}},
            }
            for n in names
        ]
        self.must("apply", "--server-side", "--field-manager=chanscale-e2e", "-f", "-", input=yaml.safe_dump_all(docs))

    def clean(self, ns: str) -> None:
        """Empty a pre-created e2e namespace: WorkerPools first (while the operator runs, so that it removes its
        finalizer), then the examples' objects. The namespace stays: the release's Roles live in it."""
        self.kubectl("-n", ns, "delete", "workerpools.chanscale.dev", "--all", "--timeout=120s")
        self.kubectl(
            "-n", ns, "delete", "deployments,services,configmaps,jobs,serviceaccounts,roles,rolebindings",
            "-l", "app.kubernetes.io/part-of=chanscale-demo", "--timeout=120s",
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------ prometheus
    def prometheus_docs(self) -> list[Doc]:
        docs = load_yaml(MANIFESTS / "prometheus.yaml")
        for d in docs:
            if d["kind"] == "Deployment":
                for c in d["spec"]["template"]["spec"]["containers"]:
                    c["image"] = self.images.operator if c["name"] == "discovery" else self.images.prometheus
        return docs

    def install_prometheus(self) -> str:
        """The e2e Prometheus (manifests/prometheus.yaml with the local image); returns its in-cluster URL."""
        with self.stage("e2e: install Prometheus"):
            self.namespaces([PROMETHEUS_NS])
            self.must(
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=chanscale-e2e",
                "-f",
                "-",
                input=yaml.safe_dump_all(self.prometheus_docs()),
            )
            self.rollout(PROMETHEUS_NS, "prometheus")
        return PROMETHEUS_URL

    # ------------------------------------------------------------------------------------------------ chart
    def chart_args(self, *extra: str) -> list[str]:
        """helm args for the e2e install: manifests/chart-values.yaml, the local images, then ``extra``."""
        repo, tag = Images.split(self.images.operator)
        opa_repo, opa_tag = Images.split(self.images.opa)
        return [
            "-f",
            str(MANIFESTS / "chart-values.yaml"),
            "--set",
            f"image.repository={repo}",
            "--set",
            f"image.tag={tag}",
            "--set",
            f"opa.image.repository={opa_repo}",
            "--set",
            f"opa.image.tag={opa_tag}",
            "--set",
            f"prometheus.url={PROMETHEUS_URL}",
            *extra,
        ]

    def watched_namespaces(self) -> list[str]:
        values = yaml.safe_load((MANIFESTS / "chart-values.yaml").read_text())
        return list(values["operator"]["watchNamespaces"])

    def install_chart(self, *extra: str, stage: str = "e2e: helm install") -> None:
        """``helm upgrade --install`` (install on a fresh cluster, reuse on a kept one) and wait for the pod."""
        self.namespaces([RELEASE_NS, *self.watched_namespaces(), UNWATCHED_NS])
        with self.stage(stage):
            # Helm installs CRDs only on a first install, never on upgrade: apply them as docs/install.md says.
            self.must("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "charts/chanscale/crds"))
            self.helm(
                "upgrade",
                "--install",
                RELEASE,
                str(REPO_ROOT / "charts" / "chanscale"),
                "--namespace",
                RELEASE_NS,
                "--wait",
                "--timeout",
                "300s",
                *self.chart_args(*extra),
            )

    def helm_test(self) -> str:
        with self.stage("e2e: helm test"):
            # No --logs: the hook pod is deleted on success (hook-delete-policy), so there are none to fetch.
            return self.helm("test", RELEASE, "--namespace", RELEASE_NS, "--timeout", "300s")

    def release_installed(self) -> bool:
        res = subprocess.run(
            [self.tool("helm"), f"--kubeconfig={self.kubeconfig}", "status", RELEASE, "-n", RELEASE_NS],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return res.returncode == 0

    def operator_pod(self) -> Doc | None:
        """The running (not terminating) operator pod of the release."""
        res = self.kubectl(
            "-n",
            RELEASE_NS,
            "get",
            "pods",
            "-l",
            f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator",
            "-o",
            "json",
        )
        if res.returncode != 0:
            return None
        pods = [p for p in json.loads(res.stdout)["items"] if not p["metadata"].get("deletionTimestamp")]
        return pods[0] if len(pods) == 1 else None

    # --------------------------------------------------------------------------------- services, via the API
    def proxy_path(self, namespace: str, service: str, port: int, path: str) -> str:
        return f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/{path.lstrip('/')}"

    def proxy_get(self, namespace: str, service: str, port: int, path: str) -> str:
        """GET a Service's HTTP endpoint through the API server's service proxy (nothing is exposed on the host)."""
        return self.must("get", "--raw", self.proxy_path(namespace, service, port, path), timeout=60)

    def proxy_post(self, namespace: str, service: str, port: int, path: str, body: Doc) -> str:
        return self.must(
            "create", "--raw", self.proxy_path(namespace, service, port, path), "-f", "-", input=json.dumps(body)
        )

    def prom_query(self, query: str) -> list[Doc]:
        """An instant query against the e2e Prometheus; the result vector."""
        out = self.proxy_get(PROMETHEUS_NS, "prometheus", 9090, "api/v1/query?query=" + urllib.parse.quote(query))
        data: Doc = json.loads(out)
        if data.get("status") != "success":
            raise E2EError(f"query {query!r} failed: {out[:500]}")
        return list(data["data"]["result"])

    def prom_range(self, query: str, start: float, end: float, step: float = 1.0) -> list[Doc]:
        args = urllib.parse.urlencode({"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": step})
        out = self.proxy_get(PROMETHEUS_NS, "prometheus", 9090, "api/v1/query_range?" + args)
        data: Doc = json.loads(out)
        if data.get("status") != "success":
            raise E2EError(f"range query {query!r} failed: {out[:500]}")
        return list(data["data"]["result"])


def bring_up(stack: KindStack) -> None:
    """Cluster, Prometheus and the chart, for the suite and the benchmark alike (``helm test`` is the suite's)."""
    stack.up()
    stack.install_prometheus()
    stack.install_chart()
