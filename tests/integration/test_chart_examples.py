"""examples/ and the e2e Prometheus manifest are accepted by the real API server (server-side dry run), and every
pod they define passes Pod Security "restricted".

Why: the WorkerPool CRD's CEL rules and the API server's own validation only run server-side; an example that
fails there would first be noticed by a user (or by the e2e run, which needs Docker).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from chanscale.local.binaries import REPO_ROOT

pytestmark = pytest.mark.integration

# examples/nats/ too; not examples/keda/, KEDA's own objects (the input of `chanscale migrate`, whose CRD is KEDA's:
# tests/integration/test_migrate_keda.py applies what migrate makes of them)
EXAMPLES = sorted(p for p in (REPO_ROOT / "examples").glob("**/*.yaml") if "keda" not in p.relative_to(REPO_ROOT).parts)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_by_the_api_server(path: Path, kubectl: Any, namespace: str) -> None:
    kubectl(
        "label",
        "namespace",
        namespace,
        "--overwrite",
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    verb = "create" if any("generateName" in d["metadata"] for d in docs) else "apply"
    res = kubectl(verb, "--dry-run=server", "-n", namespace, "-f", str(path))
    assert res.returncode == 0, f"{path.name} rejected:\n{res.stderr}"
    assert "would violate PodSecurity" not in res.stderr, res.stderr


def test_e2e_prometheus_manifest_is_accepted(kubectl: Any) -> None:
    path = REPO_ROOT / "tests" / "e2e" / "manifests" / "prometheus.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    # The Namespace must exist for a dry run of the namespaced objects: dry-run it separately.
    ns = [d for d in docs if d["kind"] == "Namespace"]
    rest = [d for d in docs if d["kind"] != "Namespace"]
    for d in rest:
        d["metadata"].pop("namespace", None)
    assert kubectl.apply(ns, None, "--dry-run=server").returncode == 0
    res = kubectl.apply(rest, "default", "--dry-run=server")
    assert res.returncode == 0, res.stderr


def test_examples_sim_config_names_the_argocd_destination_namespace() -> None:
    """examples/simulator.yaml labels metrics with its namespace; it must be where Argo CD deploys the examples."""
    sim = next(
        d
        for d in yaml.safe_load_all((REPO_ROOT / "examples" / "simulator.yaml").read_text())
        if d and d["kind"] == "ConfigMap"
    )
    app = yaml.safe_load((REPO_ROOT / "deploy" / "argocd" / "apps" / "chanscale-examples.yaml").read_text())
    channels = yaml.safe_load(sim["data"]["channels.yaml"])["channels"]
    assert {c["namespace"] for c in channels} == {app["spec"]["destination"]["namespace"]}


def test_simulator_args_parse_and_its_config_loads(tmp_path: Path) -> None:
    """examples/simulator.yaml's container args are accepted by `chanscale sim`, and its config is valid for it."""
    from chanscale.cli import build_parser
    from chanscale.sim.exporter import load_channels

    docs = [d for d in yaml.safe_load_all((REPO_ROOT / "examples" / "simulator.yaml").read_text()) if d]
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    args = build_parser().parse_args(deploy["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args.command == "sim" and args.listen == "0.0.0.0:9400"
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    cfg = tmp_path / "channels.yaml"
    cfg.write_text(cm["data"]["channels.yaml"])
    channels = load_channels(str(cfg), seed=1)
    assert [(c.channel, c.deployment) for c in channels] == [("orders", "orders-worker")]
    kubeconfig = yaml.safe_load(cm["data"]["kubeconfig"])
    assert kubeconfig["users"][0]["user"]["tokenFile"].startswith("/var/run/secrets/kubernetes.io/serviceaccount/")


def test_load_job_script_compiles() -> None:
    job = yaml.safe_load((REPO_ROOT / "examples" / "load.yaml").read_text())
    container = job["spec"]["template"]["spec"]["containers"][0]
    compile(container["args"][0], "load-job", "exec")
