"""Find the upstream binaries the local test cluster runs.

Lookup order (first hit wins), the same for every tool so a developer can predict which one runs:

1. ``$KUBEBUILDER_ASSETS/<name>`` (controller-runtime envtest assets: kube-apiserver, etcd, kubectl);
2. the repository's ``bin/<name>`` (what ``make tools`` / ``hack/tools.sh`` builds), or ``$CHANSCALE_BIN``;
3. ``PATH``;
4. for a few tools, a well-known system location (Debian's ``/usr/bin/prometheus``).

A missing binary raises :class:`BinaryNotFound` whose message says how to get it: integration tests turn it into a
*failure*, never a skip, so a machine without the tools cannot pass silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

#: The repository root (``operator/chanscale/local/binaries.py`` -> four levels up).
REPO_ROOT = Path(__file__).resolve().parents[3]

#: Extra places to look for a tool after PATH, e.g. the Debian package's location.
_SYSTEM_FALLBACKS: dict[str, tuple[str, ...]] = {
    "prometheus": ("/usr/bin/prometheus",),
    "openssl": ("/usr/bin/openssl",),
}

#: How to obtain each tool, for the error message.
_HOW_TO_GET: dict[str, str] = {
    "prometheus": "run `make tools` (it installs Debian's `prometheus` package when root), "
    "or `apt-get install -y --no-install-recommends prometheus`",
    "nats-server": "run `hack/tools.sh nats-server` (it builds the pinned release into ./bin)",
}
_DEFAULT_HOW = (
    "run `make tools` (hack/tools.sh builds it into ./bin), or set KUBEBUILDER_ASSETS to a directory holding it"
)


class BinaryNotFound(RuntimeError):
    """A tool the local cluster needs is not installed; the message says how to install it."""


def bin_dir() -> Path:
    """The directory ``make tools`` fills: ``$CHANSCALE_BIN`` or ``<repo>/bin``."""
    override = os.environ.get("CHANSCALE_BIN")
    return Path(override) if override else REPO_ROOT / "bin"


def _candidates(name: str) -> list[Path]:
    """Every location looked at, in lookup order (used for both the search and the error message)."""
    found: list[Path] = []
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        found.append(Path(assets) / name)
    found.append(bin_dir() / name)
    on_path = shutil.which(name)
    if on_path:
        found.append(Path(on_path))
    found.extend(Path(p) for p in _SYSTEM_FALLBACKS.get(name, ()))
    return found


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_binary(name: str) -> Path:
    """Return the path of tool ``name`` following the lookup order, or raise :class:`BinaryNotFound`."""
    for candidate in _candidates(name):
        if _is_executable(candidate):
            return candidate
    looked = ", ".join(str(p) for p in _candidates(name)) + ", PATH"
    how = _HOW_TO_GET.get(name, _DEFAULT_HOW)
    raise BinaryNotFound(f"required binary {name!r} not found (looked in: {looked}); to get it: {how}")


def find_binaries(*names: str) -> dict[str, Path]:
    """Find several tools at once, reporting *all* missing ones in one error (one `make tools` fixes them all)."""
    paths: dict[str, Path] = {}
    missing: list[str] = []
    for name in names:
        try:
            paths[name] = find_binary(name)
        except BinaryNotFound as exc:
            missing.append(str(exc))
    if missing:
        raise BinaryNotFound("\n".join(missing))
    return paths


def run_go(args: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``go ARGS`` in ``cwd`` with the toolchain hack/go.sh provides (any installed Go; an older one gets the pinned
    toolchain from the Go module proxy). No Go at all fails with the message naming the install line."""
    script = 'source "$0/hack/go.sh" && go_setup && exec go "$@"'
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false"}
    return subprocess.run(
        ["bash", "-c", script, str(REPO_ROOT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def go_build(module: Path, package: str, name: str) -> Path:
    """Build ``package`` of the Go module in ``module`` (e.g. sdk/go, ``./examples/channel``) into
    ``<repo>/.cache/go-bin/<name>``; Go's build cache makes a rebuild of unchanged sources take a second."""
    out = REPO_ROOT / ".cache" / "go-bin" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    done = run_go(["build", "-trimpath", "-o", str(out), package], module)
    if done.returncode != 0:
        raise RuntimeError(f"go build {package} in {module} failed:\n{done.stderr[-3000:]}")
    return out
