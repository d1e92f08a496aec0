"""kind fixtures for the e2e suite: skip (with the reason) without a Docker engine; otherwise create the cluster,
build and load the image, and install Prometheus and the chart.

Environment knobs:
    CHANSCALE_E2E_CLUSTER   kind cluster name (default chanscale-e2e, as in kind-config.yaml)
    CHANSCALE_E2E_KEEP=1    keep the cluster afterwards (and reuse an existing one) for debugging
    CHANSCALE_E2E_IMAGE     image tag to build and load (default chanscale:e2e)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from scenario import MANIFESTS, REPO_ROOT, Kubectl

CLUSTER = os.environ.get("CHANSCALE_E2E_CLUSTER", "chanscale-e2e")
IMAGE = os.environ.get("CHANSCALE_E2E_IMAGE", "chanscale:e2e")
KEEP = os.environ.get("CHANSCALE_E2E_KEEP") == "1"
BIN = Path(os.environ.get("CHANSCALE_BIN", REPO_ROOT / "bin"))


def _tool(name: str, how: str) -> str:
    for candidate in (BIN / name, shutil.which(name)):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail(f"{name} not found in {BIN} or on PATH: {how}", pytrace=False)


def _docker_unavailable() -> str | None:
    """Why Docker cannot be used, or None when `docker info` answers."""
    docker = shutil.which("docker")
    if docker is None:
        return "the docker CLI is not installed"
    try:
        res = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if res.returncode != 0:
        return f"`docker info` failed (no Docker engine reachable): {res.stderr.strip().splitlines()[-1:]}"
    return None


def run(*argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run a setup command; a failure fails the test with the command's output."""
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    assert res.returncode == 0, f"$ {' '.join(argv)}\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res


@pytest.fixture(scope="session")
def docker() -> str:
    reason = _docker_unavailable()
    if reason:
        pytest.skip(f"e2e needs Docker for kind: {reason}")
    return shutil.which("docker") or "docker"


@pytest.fixture(scope="session")
def kind_cluster(docker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A kind cluster from kind-config.yaml; yields its kubeconfig. Deleted afterwards unless CHANSCALE_E2E_KEEP=1."""
    kind = _tool("kind", "run `hack/tools.sh kind` (pinned in hack/versions.env)")
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    existing = run(kind, "get", "clusters").stdout.split()
    if CLUSTER in existing and KEEP:
        run(kind, "export", "kubeconfig", "--name", CLUSTER, "--kubeconfig", str(kubeconfig))
    else:
        if CLUSTER in existing:
            run(kind, "delete", "cluster", "--name", CLUSTER)
        run(
            kind,
            "create",
            "cluster",
            "--name",
            CLUSTER,
            "--config",
            str(REPO_ROOT / "kind-config.yaml"),
            "--kubeconfig",
            str(kubeconfig),
            "--wait",
            "180s",
        )
    try:
        yield kubeconfig
    finally:
        if not KEEP:
            subprocess.run(
                [kind, "delete", "cluster", "--name", CLUSTER], capture_output=True, timeout=300, check=False
            )


@pytest.fixture(scope="session")
def kubectl(kind_cluster: Path) -> Kubectl:
    return Kubectl(_tool("kubectl", "run `make tools`"), kind_cluster, timeout=300)


@pytest.fixture(scope="session")
def image(docker: str, kind_cluster: Path) -> str:
    """Build the image from the repository's Dockerfile and load it into the kind node (fixed tag)."""
    kind = _tool("kind", "run `hack/tools.sh kind`")
    run(docker, "build", "-t", IMAGE, str(REPO_ROOT), timeout=1800)
    run(kind, "load", "docker-image", IMAGE, "--name", CLUSTER)
    return IMAGE


@pytest.fixture(scope="session")
def prometheus(kubectl: Kubectl) -> str:
    """The minimal Prometheus of tests/e2e/manifests/prometheus.yaml; returns its in-cluster URL."""
    res = kubectl("apply", "-f", str(MANIFESTS / "prometheus.yaml"))
    assert res.returncode == 0, res.stderr
    res = kubectl("-n", "monitoring", "rollout", "status", "deployment/prometheus", "--timeout=300s")
    assert res.returncode == 0, f"Prometheus did not become ready: {res.stderr}"
    return "http://prometheus.monitoring.svc:9090"


@pytest.fixture(scope="session")
def chart_release(kubectl: Kubectl, kind_cluster: Path, image: str, prometheus: str) -> Iterator[str]:
    """The chart installed with the e2e image (pullPolicy IfNotPresent: the image is preloaded); `helm test` run."""
    helm = _tool("helm", "run `make tools`")
    repo, _, tag = image.rpartition(":")
    ns = "chanscale-system"
    run(
        helm,
        "upgrade",
        "--install",
        "chanscale",
        str(REPO_ROOT / "charts" / "chanscale"),
        "--namespace",
        ns,
        "--create-namespace",
        f"--kubeconfig={kind_cluster}",
        "--wait",
        "--timeout",
        "300s",
        "--set",
        f"image.repository={repo}",
        "--set",
        f"image.tag={tag}",
        "--set",
        "image.pullPolicy=IfNotPresent",
        "--set",
        f"prometheus.url={prometheus}",
        "--set",
        "prometheus.scrapeInterval=2s",  # tests/e2e/manifests/prometheus.yaml
        "--set",
        "operator.tick=5",
        "--set-string",
        "podAnnotations.prometheus\\.io/scrape=true",
        "--set-string",
        "podAnnotations.prometheus\\.io/port=8080",
    )
    run(helm, "test", "chanscale", "--namespace", ns, f"--kubeconfig={kind_cluster}", "--timeout", "180s")
    try:
        yield "chanscale"
    finally:
        if not KEEP:
            subprocess.run(
                [helm, "uninstall", "chanscale", "--namespace", ns, f"--kubeconfig={kind_cluster}"],
                capture_output=True,
                timeout=300,
                check=False,
            )
