"""Static checks of the image build (hack/images.sh, the root Dockerfile): the pins and names that must agree
across files, so that a version bump in one place cannot silently build or load a different image."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.unit


def _env(name: str) -> dict[str, str]:
    """hack/<name> as the scripts see it: sourced by bash after hack/versions.env."""
    out = subprocess.run(
        ["bash", "-c", f"set -a; source hack/versions.env; source hack/{name}; env"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_operator_image_ships_the_pinned_opa() -> None:
    """The default `--opa local` needs an `opa` binary in the image: the Dockerfile copies it from OPA_IMAGE, whose
    default is the chart's OPA sidecar image at hack/versions.env's OPA_VERSION."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    arg = re.search(r"^ARG OPA_IMAGE=(\S+)$", dockerfile, re.M)
    assert arg, "the Dockerfile takes the OPA image as a build arg"
    assert re.search(r"^FROM \$\{OPA_IMAGE\} AS opa$", dockerfile, re.M)
    assert re.search(r"^COPY --from=opa /opa /usr/local/bin/opa$", dockerfile, re.M)
    opa = yaml.safe_load((ROOT / "charts" / "chanscale" / "values.yaml").read_text())["opa"]["image"]
    assert arg.group(1) == f"{opa['repository']}:{opa['tag']}"
    env = _env("images.env")
    assert env["CHANSCALE_OPA_IMAGE"] == arg.group(1) == f"openpolicyagent/opa:{env['OPA_VERSION'][1:]}-static"


def test_image_names_resolve() -> None:
    """Every image name in hack/images.env resolves to repository:tag (no empty pin)."""
    env = {k: v for k, v in _env("images.env").items() if k.startswith("CHANSCALE_") and k.endswith("_IMAGE")}
    assert {"CHANSCALE_OPERATOR_IMAGE", "CHANSCALE_OPA_IMAGE", "CHANSCALE_PROMETHEUS_IMAGE"} <= env.keys()
    for name, ref in env.items():
        assert re.fullmatch(r"[a-z0-9./-]+:[A-Za-z0-9._-]+", ref), (name, ref)


def test_kind_config_keeps_the_upstream_node_image() -> None:
    """kind-config.yaml stays usable on an ordinary Docker host: kind's own node image, pinned by digest; the
    local build is only an override (`kind create cluster --image`)."""
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    image = config["nodes"][0]["image"]
    assert re.fullmatch(r"kindest/node:v1\.\d+\.\d+@sha256:[0-9a-f]{64}", image), image


def test_kind_storage_manifest_joins_the_go_constants() -> None:
    """The node image's default storage manifest is read from kind's Go source: a raw string joined with `+` to
    the image constants (pkg/build/nodeimage/const_storage.go)."""
    spec = importlib.util.spec_from_file_location("ksm", ROOT / "hack" / "images" / "kind_storage_manifest.py")
    assert spec and spec.loader
    ksm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ksm)
    source = (
        'const storageProvisionerImage = "docker.io/kindest/p:v1"\n'
        'const storageHelperImage = "docker.io/kindest/h:v2"\n'
        "const defaultStorageManifest = `\nkind: Deployment\nimage: ` + storageProvisionerImage + `\n"
        "args: [` + storageHelperImage + `]\n`\n"
        "const other = `x`\n"
    )
    c = ksm.constants(source)
    assert (
        c["defaultStorageManifest"]
        == "\nkind: Deployment\nimage: docker.io/kindest/p:v1\nargs: [docker.io/kindest/h:v2]\n"
    )
    assert c["storageHelperImage"] == "docker.io/kindest/h:v2"
