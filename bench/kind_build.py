"""Offline image build and kind cluster creation times (on demand: needs Docker; never part of --quick).

    python -m bench.kind_build                    # cold + warm image build, then 3 cluster creations
    python -m bench kind_build                    # the same through the runner
    python -m bench.kind_build --creations 1 --no-cold

- **cold build**: ``hack/images.sh build --cold`` with an empty cache folder (``CHANSCALE_CACHE`` = a new temporary
  folder): debootstrap, every ``docker build`` with ``--no-cache``, the node preload. The tools in bin/ and the Go
  build cache are warm (building them is hack/tools.sh's cost: the ``ci: tools`` stage);
- **warm build**: the same command again with that cache in place (what every later run pays);
- **cluster creation**: ``kind create cluster`` from kind-config.yaml with the local node image, under a separate
  cluster name (the e2e cluster is left alone), then until the node is Ready and CoreDNS is Ready; deleted after.

The cold build re-tags every image it builds. It runs under hack/images.sh's build lock and puts each tag back on
the image it named before, so a running e2e cluster and the default cache stay valid.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import BENCH_DIR, add_common_args, machine, machine_line, publish

REPO = BENCH_DIR.parent
IMAGES = REPO / "hack" / "images.sh"
STAGE_RE = re.compile(r"^\[images\] stage (\S+): (\d+)s$")
BENCH_CLUSTER = "chanscale-bench-create"


def _bin(name: str) -> str:
    return str(Path(os.environ.get("CHANSCALE_BIN", REPO / "bin")) / name)


def _cache() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "chanscale"
    return Path(os.environ.get("CHANSCALE_CACHE", default))


def _out(cmd: Sequence[str], **kw: Any) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def _image_id(name: str) -> str:
    res = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", name], capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else ""


def build(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run hack/images.sh build ARGS; its stage times and the wall time."""
    stages: dict[str, int] = {}
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(IMAGES), "build", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("[images]"):
            print(line, end="", flush=True)
        if m := STAGE_RE.match(line.strip()):
            stages[m.group(1)] = int(m.group(2))
    if proc.wait():
        raise SystemExit(f"hack/images.sh build {' '.join(args)} failed (exit {proc.returncode})")
    return {"seconds": round(time.monotonic() - started, 1), "stages": stages}


def _restore(before: dict[str, str]) -> None:
    """Put every tag back on the image it named before; drop the cold build's images."""
    cold = {_image_id(name) for name in before} - set(before.values()) - {""}
    for name, image in before.items():
        if image:
            subprocess.run(["docker", "tag", image, name], check=True)
    for _ in range(3):  # children before parents: a few passes
        for image in sorted(cold):
            subprocess.run(["docker", "rmi", image], capture_output=True)


def builds(args: argparse.Namespace) -> dict[str, Any]:
    """Cold then warm image builds under the build lock, with the tags restored afterwards."""
    cache = _cache()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "images.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        env = {**os.environ, "CHANSCALE_IMAGES_LOCKED": "1"}
        if not args.cold:
            return {"warm": build(env)}
        before = {name: _image_id(name) for name in _out([str(IMAGES), "names"], env=env).split()}
        tmp = Path(tempfile.mkdtemp(prefix="chanscale-cold-", dir=cache))
        try:
            cold_env = {**env, "CHANSCALE_CACHE": str(tmp)}
            return {"cold": build(cold_env, "--cold"), "warm": build(cold_env)}
        finally:
            _restore(before)
            shutil.rmtree(tmp, ignore_errors=True)


def create_cluster(kubeconfig: Path, node_image: str) -> dict[str, float]:
    kind, kubectl = _bin("kind"), _bin("kubectl")
    subprocess.run([kind, "delete", "cluster", "--name", BENCH_CLUSTER], capture_output=True)
    started = time.monotonic()
    config = str(REPO / "kind-config.yaml")
    create = [kind, "create", "cluster", "--name", BENCH_CLUSTER, "--config", config, "--image", node_image]
    subprocess.run([*create, "--kubeconfig", str(kubeconfig)], check=True)
    created = time.monotonic()
    k = [kubectl, "--kubeconfig", str(kubeconfig)]
    subprocess.run([*k, "wait", "node", "--all", "--for=condition=Ready", "--timeout=300s"], check=True)
    subprocess.run([*k, "-n", "kube-system", "rollout", "status", "deploy/coredns", "--timeout=300s"], check=True)
    ready = time.monotonic()
    subprocess.run([kind, "delete", "cluster", "--name", BENCH_CLUSTER], check=True, capture_output=True)
    return {"create_s": round(created - started, 1), "ready_s": round(ready - started, 1)}


def table(data: dict[str, Any]) -> str:
    lines = [
        "# Offline image build and kind cluster creation",
        "",
        f"Machine: {machine_line(data['machine'])}; load average at start {data['loadavg']}.",
        "Cold = empty cache folder, `docker build --no-cache`, fresh debootstrap; tools in bin/ and the Go build",
        "cache warm. Warm = the same build again with the cache in place.",
        "",
        "| stage | cold (s) | warm (s) |",
        "|---|---:|---:|",
    ]
    cold = data["builds"].get("cold", {"stages": {}, "seconds": "–"})
    warm = data["builds"]["warm"]
    for stage in warm["stages"]:
        lines.append(f"| {stage} | {cold['stages'].get(stage, '–')} | {warm['stages'][stage]} |")
    lines.append(f"| **all images (wall)** | **{cold['seconds']}** | **{warm['seconds']}** |")
    lines += [
        "",
        "| cluster creation | `kind create cluster` (s) | until node + CoreDNS Ready (s) |",
        "|---|---:|---:|",
    ]
    for i, c in enumerate(data["creations"], 1):
        lines.append(f"| run {i} | {c['create_s']} | {c['ready_s']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.kind_build", description=__doc__.split("\n", 1)[0])
    add_common_args(p)
    p.add_argument("--no-cold", dest="cold", action="store_false", help="skip the cold build (warm only)")
    p.add_argument("--creations", type=int, default=3, help="cluster creations to time (default 3)")
    args = p.parse_args(argv)
    if args.quick:
        print("bench.kind_build is on demand (Docker, minutes); --quick does nothing", file=sys.stderr)
        return 0
    subprocess.run([str(REPO / "hack" / "docker.sh")], check=True)
    data: dict[str, Any] = {"machine": machine(), "loadavg": [round(x, 2) for x in os.getloadavg()]}
    data["builds"] = builds(args)
    node_image = dict(line.split("=", 1) for line in _out([str(IMAGES), "env"]).split())["CHANSCALE_KIND_NODE_IMAGE"]
    with tempfile.TemporaryDirectory() as tmp:
        data["creations"] = [create_cluster(Path(tmp) / "kubeconfig", node_image) for _ in range(args.creations)]
    md = table(data)
    out = publish(args, "kind_build", md, data)
    print(md)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
