"""Argo CD's application-controller and repo-server as local processes against a LocalControlPlane.

The real Argo CD (``hack/tools.sh argocd`` builds its multi-call binary from the pinned Go module; see
hack/argocd.md), run the way its own repository's Procfile runs it outside a cluster: ``ARGOCD_FAKE_IN_CLUSTER``
makes the in-cluster destination ``https://kubernetes.default.svc`` resolve to the kubeconfig's server. What
Argo CD's API server would create at start-up is applied here by hand, from Argo CD's own install manifests
(copied next to the binary by hack/tools.sh): its CRDs, the ServiceAccounts and RBAC, the ConfigMaps and Secrets,
plus ``server.secretkey`` and the ``default`` AppProject. The controller authenticates with its own
ServiceAccount's token, so it runs with exactly the RBAC Argo CD's manifests grant it.

Redis is Debian's ``redis-server``; Git is a bare repository on disk (``file://``), see :class:`LocalGitRepo`.
Everything listens on 127.0.0.1 (the controller's metrics listener binds all interfaces; it sends nothing).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from chanscale.local.binaries import BinaryNotFound, bin_dir, find_binaries
from chanscale.local.cluster import LocalControlPlane
from chanscale.local.process import LOOPBACK, ManagedGroup, ManagedProcess, free_port, wait_until

log = logging.getLogger(__name__)

NAMESPACE = "argocd"
#: Kinds taken from Argo CD's install.yaml (the Deployments, Services and NetworkPolicies are what we replace
#: with processes).
INSTALL_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Secret"}
CONTROLLER_SA = "argocd-application-controller"


def manifests_dir() -> Path:
    """Argo CD's install manifests, copied by hack/tools.sh next to the binary it built."""
    path = bin_dir() / "argocd-manifests"
    if not (path / "install.yaml").is_file():
        raise BinaryNotFound(f"Argo CD's install manifests are missing ({path}): run `make tools`")
    return path


class LocalGitRepo:
    """A bare Git repository (served as ``file://``) and a work tree to commit to it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "repo.git"
        self.tree = root / "tree"
        self.env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "chanscale-tests",
            "GIT_AUTHOR_EMAIL": "tests@chanscale.invalid",
            "GIT_COMMITTER_NAME": "chanscale-tests",
            "GIT_COMMITTER_EMAIL": "tests@chanscale.invalid",
        }

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def git(self, *args: str, cwd: Path | None = None) -> str:
        res = subprocess.run(
            ["git", *args], cwd=cwd or self.tree, env=self.env, capture_output=True, text=True, timeout=60
        )
        if res.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed: {res.stderr.strip()}")
        return res.stdout.strip()

    def init(self) -> LocalGitRepo:
        self.tree.mkdir(parents=True, exist_ok=True)
        self.git("init", "--bare", "--initial-branch=main", str(self.bare), cwd=self.tree)
        self.git("init", "--initial-branch=main")
        self.git("remote", "add", "origin", str(self.bare))
        return self

    def copy_in(self, source: Path, *paths: str) -> None:
        """Copy files or folders of a checkout (as they are on disk, uncommitted edits included) into the tree."""
        for rel in paths:
            src, dst = source / rel, self.tree / rel
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)

    def commit(self, message: str) -> str:
        """Commit everything in the tree, push to main, and return the commit's SHA."""
        self.git("add", "-A")
        self.git("commit", "--allow-empty", "-q", "-m", message)
        self.git("push", "-q", "origin", "HEAD:main")
        return self.git("rev-parse", "HEAD")


class LocalArgoCD(ManagedGroup):
    """Redis, argocd-repo-server and argocd-application-controller for one LocalControlPlane."""

    label = "Argo CD"
    log_lines = 80

    def __init__(
        self,
        cluster: LocalControlPlane,
        cm_data: dict[str, str] | None = None,
        app_resync_seconds: int = 60,
        ready_timeout: float = 120.0,
    ) -> None:
        super().__init__()
        self.cluster = cluster
        self.cm_data = dict(cm_data or {})
        self.app_resync_seconds = app_resync_seconds
        self.ready_timeout = ready_timeout
        self.workdir: Path | None = None
        self.redis_port = self.repo_port = 0

    @property
    def procs(self) -> list[ManagedProcess]:
        """The running programs (for :func:`~chanscale.local.process.wait_until`)."""
        return self.processes

    # ---------------------------------------------------------------------------------------- lifecycle
    def start(self) -> LocalArgoCD:
        super().start()
        log.info("argo cd ready in %.1fs", self.startup_seconds)
        return self

    def _start(self) -> None:
        bins = find_binaries("argocd-application-controller", "argocd-repo-server", "redis-server", "helm")
        manifests = manifests_dir()
        self.workdir = Path(tempfile.mkdtemp(prefix="chanscale-argocd-"))
        self.install(manifests)
        self._start_redis(bins["redis-server"])
        self._start_repo_server(bins["argocd-repo-server"], bins["helm"].parent)
        self._start_controller(bins["argocd-application-controller"])

    def _cleanup(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # ------------------------------------------------------------------------------------------ install
    def install(self, manifests: Path) -> None:
        """What Argo CD's API server and install.yaml would have created, minus the workloads."""
        self._kubectl("create", "namespace", NAMESPACE)
        self._kubectl("apply", "--server-side", "-k", str(manifests / "crds"))
        for crd in ("applications.argoproj.io", "appprojects.argoproj.io"):
            self.cluster.wait_established(crd)
        docs = [d for d in yaml.safe_load_all((manifests / "install.yaml").read_text()) if d]
        objs = [self._configured(d) for d in docs if d.get("kind") in INSTALL_KINDS]
        objs.append(self._default_project())
        self._kubectl(
            "apply", "-n", NAMESPACE, "-f", "-", stdin=json.dumps({"kind": "List", "apiVersion": "v1", "items": objs})
        )

    def _configured(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Fill in what the API server would: our argocd-cm settings and the server's secret key."""
        name = obj["metadata"]["name"]
        if obj["kind"] == "ConfigMap" and name == "argocd-cm":
            obj["data"] = {**(obj.get("data") or {}), **self.cm_data}
        if obj["kind"] == "Secret" and name == "argocd-secret":
            key = base64.b64encode(secrets.token_bytes(32)).decode()
            obj["data"] = {**(obj.get("data") or {}), "server.secretkey": base64.b64encode(key.encode()).decode()}
        return obj

    @staticmethod
    def _default_project() -> dict[str, Any]:
        return {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AppProject",
            "metadata": {"name": "default", "namespace": NAMESPACE},
            "spec": {
                "sourceRepos": ["*"],
                "destinations": [{"server": "*", "namespace": "*"}],
                "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
            },
        }

    def _kubectl(self, *args: str, stdin: str | None = None) -> str:
        res = self.cluster.kubectl(*args, input=stdin, timeout=120)
        if res.returncode != 0 and "AlreadyExists" not in res.stderr:
            raise RuntimeError(f"kubectl {' '.join(args[:3])} failed: {res.stderr.strip()}")
        return res.stdout

    # ---------------------------------------------------------------------------------------- processes
    def _env(self, role: str) -> dict[str, str]:
        data = self.dir / role
        env = {**os.environ, "ARGOCD_FAKE_IN_CLUSTER": "true", "ARGOCD_GPG_ENABLED": "false", "TMPDIR": str(data)}
        for var, sub in (
            ("ARGOCD_TLS_DATA_PATH", "tls"),
            ("ARGOCD_SSH_DATA_PATH", "ssh"),
            ("ARGOCD_GNUPGHOME", "gpg/keys"),
            ("ARGOCD_GPG_DATA_PATH", "gpg/source"),
            ("ARGOCD_PLUGINSOCKFILEPATH", "plugins"),
            ("HOME", "home"),
        ):
            (data / sub).mkdir(parents=True, exist_ok=True)
            env[var] = str(data / sub)
        env["ARGOCD_ASK_PASS_SOCK"] = str(data / "asgpass.sock")
        return env

    def _start_redis(self, binary: Path) -> None:
        self.redis_port = free_port()
        argv: list[str | Path] = [binary, "--bind", LOOPBACK, "--port", str(self.redis_port), "--save", ""]
        proc = self._spawn("redis", [*argv, "--appendonly", "no", "--dir", str(self.dir)], self.dir / "redis.log")
        wait_until(lambda: _tcp_open(self.redis_port), 30, "redis-server", [proc])

    def _start_repo_server(self, binary: Path, tools: Path) -> None:
        self.repo_port = free_port()
        env = self._env("repo-server")
        env["PATH"] = f"{tools}{os.pathsep}{env.get('PATH', '')}"  # helm, as the repo-server image bundles it
        argv: list[str | Path] = [binary, "--address", LOOPBACK, "--port", str(self.repo_port)]
        argv += ["--metrics-address", LOOPBACK, "--metrics-port", str(free_port()), "--disable-tls"]
        argv += ["--redis", f"{LOOPBACK}:{self.redis_port}"]
        proc = self._spawn("repo-server", argv, self.dir / "repo-server.log", env)
        wait_until(lambda: _tcp_open(self.repo_port), self.ready_timeout, "argocd-repo-server", [proc])

    def _start_controller(self, binary: Path) -> None:
        token = self.cluster.create_token(NAMESPACE, CONTROLLER_SA, duration="24h")
        kubeconfig = self.cluster.write_token_kubeconfig(token, self.dir / "controller.kubeconfig", NAMESPACE)
        env = {**self._env("controller"), "KUBECONFIG": str(kubeconfig)}
        argv: list[str | Path] = [binary, "--kubeconfig", kubeconfig, "--namespace", NAMESPACE]
        argv += ["--redis", f"{LOOPBACK}:{self.redis_port}", "--repo-server", f"{LOOPBACK}:{self.repo_port}"]
        argv += ["--repo-server-plaintext", "--metrics-port", str(free_port())]
        # One fixture, few apps: a short resync bounds how late a Git change is noticed without a refresh;
        # changes to live objects are watch-driven anyway. Health in the Application's status (off by default
        # since 3.0, when the API server's resource tree serves it) so tests read it from the object.
        argv += ["--app-resync", str(self.app_resync_seconds), "--persist-resource-health"]
        argv += ["--status-processors", "4", "--operation-processors", "2", "--self-heal-timeout-seconds", "2"]
        self._spawn("application-controller", argv, self.dir / "application-controller.log", env)

    # ------------------------------------------------------------------------------------------ helpers
    def app(self, name: str) -> dict[str, Any]:
        app: dict[str, Any] = self.cluster.kubectl_json("get", "applications.argoproj.io", name, "-n", NAMESPACE)
        return app

    def refresh(self, name: str) -> None:
        """What a Git webhook does: ask the controller to re-read the source now."""
        self._kubectl(
            "annotate",
            "applications.argoproj.io",
            name,
            "-n",
            NAMESPACE,
            "--overwrite",
            "argocd.argoproj.io/refresh=normal",
        )

    def wait_synced(self, name: str, timeout: float = 180, revision: str | None = None) -> dict[str, Any]:
        """Wait until the Application is Synced (at ``revision`` when given) and its last operation succeeded."""
        seen: dict[str, Any] = {}

        def synced() -> bool:
            seen.update(self.app(name))
            st = seen.get("status", {})
            sync = st.get("sync", {})
            phase = (st.get("operationState") or {}).get("phase")
            return (
                sync.get("status") == "Synced"
                and phase == "Succeeded"
                and (revision is None or sync.get("revision") == revision)
            )

        try:
            wait_until(synced, timeout, f"Application {name} Synced", self.procs, interval=0.5)
        except Exception as exc:
            raise AssertionError(f"{exc}\nstatus: {json.dumps(seen.get('status'), indent=1)[:4000]}") from exc
        return seen


def _tcp_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((LOOPBACK, port)) == 0
