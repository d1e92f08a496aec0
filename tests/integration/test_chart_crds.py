"""The WorkerPool CRD through Helm against a real API server: `helm upgrade` upgrades it, `helm uninstall` keeps it
(and the pools), and a CRD first applied with kubectl is adopted by the release (docs/install.md, "Upgrading").

The session's CRD (applied from crds/ by the control-plane fixture) is the one adopted here; the test restores it
from crds/ afterwards, so later tests see the source CRD again.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_chart import CHART, helm

from chanscale.local.binaries import REPO_ROOT
from chanscale.local.harness import Kubectl

pytestmark = pytest.mark.integration

CRD_NAME = "workerpools.chanscale.dev"
CRD_TEMPLATE = Path("templates") / "crds" / "chanscale.dev_workerpools.yaml"


@pytest.fixture
def restore_crd(kubectl: Kubectl) -> Iterator[None]:
    yield
    # replace, not apply: drop Helm's ownership metadata and the upgraded column, back to exactly crds/.
    res = kubectl("replace", "-f", str(REPO_ROOT / "crds"))
    assert res.returncode == 0, res.stderr


def _crd(kubectl: Kubectl) -> dict[str, Any]:
    crd: dict[str, Any] = kubectl.json("get", "crd", CRD_NAME)
    return crd


def _columns(crd: dict[str, Any]) -> list[str]:
    return [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]


def test_helm_upgrade_upgrades_the_crd_and_uninstall_keeps_it(
    kubectl: Kubectl, kubeconfig: Path, namespace: str, tmp_path: Path, restore_crd: None
) -> None:
    release, release_ns = f"crd-{uuid.uuid4().hex[:6]}", namespace
    # A CRD applied before with kubectl (the old install path) is adopted once it carries Helm's ownership.
    for args in (
        ["annotate", "crd", CRD_NAME, f"meta.helm.sh/release-name={release}", "--overwrite"],
        ["annotate", "crd", CRD_NAME, f"meta.helm.sh/release-namespace={release_ns}", "--overwrite"],
        ["label", "crd", CRD_NAME, "app.kubernetes.io/managed-by=Helm", "--overwrite"],
    ):
        assert kubectl(*args).returncode == 0
    pool = {
        "apiVersion": "chanscale.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": "survivor"},
        "spec": {
            "channel": "orders",
            "scaleTargetRef": {"name": "worker"},
            "maxReplicas": 3,
            "slo": {"p99LatencySeconds": 1},
        },
    }
    assert kubectl.apply(pool, namespace).returncode == 0
    helm("install", release, str(CHART), "-n", release_ns, "--set", "opa.enabled=false", kubeconfig=kubeconfig)
    crd = _crd(kubectl)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    before = _columns(crd)

    # The next chart version changes the CRD (here: one more printer column); `helm upgrade` applies it.
    chart_v2 = tmp_path / "chanscale"
    shutil.copytree(CHART, chart_v2)
    template = chart_v2 / CRD_TEMPLATE
    text = template.read_text()
    column = "        - {name: Upgraded, type: string, jsonPath: .spec.channel, priority: 1}\n"
    text = text.replace("      additionalPrinterColumns:\n", "      additionalPrinterColumns:\n" + column, 1)
    template.write_text(text)
    helm("upgrade", release, str(chart_v2), "-n", release_ns, "--set", "opa.enabled=false", kubeconfig=kubeconfig)
    assert _columns(_crd(kubectl)) == ["Upgraded", *before]

    helm("uninstall", release, "-n", release_ns, "--wait", kubeconfig=kubeconfig)
    assert _crd(kubectl)["metadata"]["name"] == CRD_NAME, "helm uninstall must keep the CRD"
    assert kubectl.json("get", "wp", "survivor", "-n", namespace)["metadata"]["name"] == "survivor"


def test_crds_install_false_renders_no_crd() -> None:
    out = helm("template", "cs", str(CHART), "--set", "crds.install=false").stdout
    assert all(d["kind"] != "CustomResourceDefinition" for d in yaml.safe_load_all(out) if d)
    out = helm("template", "cs", str(CHART), "--set", "crds.keep=false").stdout
    crd = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in crd["metadata"]["annotations"]
