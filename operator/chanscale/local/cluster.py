"""A real Kubernetes control plane on loopback: etcd + kube-apiserver + kube-controller-manager.

Why these three and nothing else: the operator talks only to the API server, and the controller-manager makes
Deployments behave like in a real cluster (ReplicaSets, status.replicas, garbage collection, the `default`
ServiceAccount in every namespace, ServiceAccount tokens). There is no scheduler and no kubelet, so pods stay
Pending; the channel simulator reads a Deployment's replica count instead of running pods.

Authentication is real: a throwaway CA signs the apiserver's serving cert and an admin client cert
(``system:masters``), ServiceAccount tokens are signed with a generated key (so ``kubectl create token`` and RBAC
work), and authorization is RBAC. Everything binds to 127.0.0.1 on free ports; state lives in a temporary
directory (on /dev/shm when available) that is removed on :meth:`LocalControlPlane.stop`.

    with LocalControlPlane() as cp:
        cp.kubectl("apply", "-f", "crds/")
        api = cp.api_client()
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from chanscale.local.binaries import find_binaries
from chanscale.local.pki import LocalPKI, generate_pki
from chanscale.local.process import LOOPBACK, ManagedGroup, ProcessFailed, free_port, wait_until

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
CONTEXT = "chanscale-local"


def _scratch_root() -> str | None:
    """/dev/shm when writable and roomy: etcd and the apiserver start faster on tmpfs and nothing needs to survive.

    A cluster takes about 125 MB there (etcd preallocates its WAL), and containers often mount a 64 MB /dev/shm,
    so require 1 GiB free; otherwise the system temp dir.
    """
    shm = Path("/dev/shm")
    try:
        roomy = shutil.disk_usage(shm).free >= 1 << 30
    except OSError:
        return None
    return str(shm) if roomy and shm.is_dir() and os.access(shm, os.W_OK) else None


@dataclass
class StartupTimings:
    """Seconds spent in each start-up phase, logged and exposed for docs/testing.md."""

    pki: float = 0.0
    etcd: float = 0.0
    apiserver: float = 0.0
    controller_manager: float = 0.0
    total: float = 0.0

    def summary(self) -> str:
        return (
            f"control plane ready in {self.total:.1f}s (pki {self.pki:.2f}s, etcd {self.etcd:.1f}s, "
            f"kube-apiserver {self.apiserver:.1f}s, kube-controller-manager {self.controller_manager:.1f}s)"
        )


@dataclass
class LocalControlPlane(ManagedGroup):
    """etcd + kube-apiserver + kube-controller-manager on free loopback ports; see the module docstring."""

    label = "control plane"

    workdir: Path | None = None
    keep_workdir: bool = False
    ready_timeout: float = 120.0
    extra_apiserver_flags: list[str] = field(default_factory=list)
    # Controllers left out of the controller-manager, e.g. ("deployment", "replicaset") for a benchmark whose
    # Deployments need only exist (no ReplicaSets, no Pending pods, no status churn for the API server to serve).
    controllers_off: tuple[str, ...] = ()
    timings: StartupTimings = field(default_factory=StartupTimings)

    def __post_init__(self) -> None:
        super().__init__()
        self._owns_workdir = self.workdir is None
        self._pki: LocalPKI | None = None
        self.etcd_port = 0
        self.apiserver_port = 0
        self._bins: dict[str, Path] = {}

    # ----------------------------------------------------------------------------------------------- paths
    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client cert in group system:masters)."""
        return self.dir / "kubeconfig"

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def server(self) -> str:
        return f"https://{LOOPBACK}:{self.apiserver_port}"

    @property
    def pki(self) -> LocalPKI:
        if self._pki is None:
            raise RuntimeError("control plane not started")
        return self._pki

    def binary(self, name: str) -> Path:
        """Path of a tool: the three programs found at start-up, or any other (kubectl) looked up on first use.

        kubectl is not needed to run the control plane (`make demo` never builds it); tests that call it find it
        here, and a missing one raises :class:`~chanscale.local.binaries.BinaryNotFound` with the fix.
        """
        if name not in self._bins:
            self._bins.update(find_binaries(name))
        return self._bins[name]

    # ----------------------------------------------------------------------------------------- lifecycle
    def start(self) -> LocalControlPlane:
        """Start all three programs and return once the API server is ready and controllers are running.

        Missing binaries raise :class:`~chanscale.local.binaries.BinaryNotFound` before anything is started.
        """
        super().start()
        self.timings.total = self.startup_seconds
        log.info("%s; kubeconfig %s", self.timings.summary(), self.kubeconfig)
        return self

    def _start(self) -> None:
        self._bins = find_binaries("etcd", "kube-apiserver", "kube-controller-manager")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="chanscale-cp-", dir=_scratch_root()))
        t = time.monotonic()
        self._pki = generate_pki(self.dir / "pki")
        self._write_kubeconfigs()
        self.timings.pki = time.monotonic() - t
        self.timings.etcd = self._start_etcd()
        self.timings.apiserver = self._start_apiserver()
        self.timings.controller_manager = self._start_controller_manager()

    def _cleanup(self) -> None:
        """Remove the work directory (unless it was given, or ``keep_workdir``)."""
        if self.workdir is not None and self._owns_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------------------------------------- etcd
    def _start_etcd(self) -> float:
        self.etcd_port, peer_port = free_port(), free_port()
        client = f"http://{LOOPBACK}:{self.etcd_port}"
        peer = f"http://{LOOPBACK}:{peer_port}"
        argv: list[str | Path] = [
            self._bins["etcd"],
            "--name=default",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync=true",  # test data: durability is worthless, start-up and write latency matter
            "--log-level=warn",
            "--quota-backend-bytes=2147483648",
        ]
        proc = self._spawn("etcd", argv, self.log_dir / "etcd.log")
        return wait_until(lambda: _http_ok(f"{client}/health"), self.ready_timeout, "etcd /health", [proc])

    # ----------------------------------------------------------------------------------------- apiserver
    def stop_apiserver(self) -> None:
        """Stop kube-apiserver only (etcd and the controller-manager keep running), as in a control-plane
        upgrade; :meth:`start_apiserver` brings it back on the same port."""
        self.stop_processes("kube-apiserver")

    def start_apiserver(self) -> float:
        """Start kube-apiserver again on its port; returns the seconds until /readyz answered."""
        return self._start_apiserver(self.apiserver_port)

    def _start_apiserver(self, port: int = 0) -> float:
        self.apiserver_port = port or free_port()
        self._write_kubeconfigs()  # now that the port is known
        pki = self.pki
        argv: list[str | Path] = [
            self._bins["kube-apiserver"],
            f"--etcd-servers=http://{LOOPBACK}:{self.etcd_port}",
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            f"--secure-port={self.apiserver_port}",
            f"--cert-dir={self.dir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.apiserver.cert}",
            f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.sa_public_key}",
            f"--service-account-signing-key-file={pki.sa_private_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            "--enable-priority-and-fairness=false",  # one less start-up phase; tests never saturate the server
            "--event-ttl=1h",
            # Requests made by ServiceAccounts, at Metadata level: lets tests prove that each RBAC rule the chart
            # grants is used (and nothing was denied), see tests/integration/test_tenancy_attacks.py.
            f"--audit-policy-file={self._write_audit_policy()}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            "--v=1",
            *self.extra_apiserver_flags,
        ]
        proc = self._spawn("kube-apiserver", argv, self.log_dir / "kube-apiserver.log")
        return wait_until(self._apiserver_ready, self.ready_timeout, "kube-apiserver /readyz", [proc], interval=0.2)

    @property
    def audit_log(self) -> Path:
        """JSON lines, one audit event per request by a ServiceAccount (verb, resource, user, response code)."""
        return self.log_dir / "audit.log"

    def audit_events(self, user: str) -> list[dict[str, Any]]:
        """The audit events of one user, e.g. ``system:serviceaccount:ns:name`` (ResponseStarted for a watch)."""
        out = []
        if self.audit_log.exists():
            for line in self.audit_log.read_text().splitlines():
                if f'"{user}"' in line:
                    ev = json.loads(line)
                    if ev.get("user", {}).get("username") == user:
                        out.append(ev)
        return out

    def _write_audit_policy(self) -> Path:
        path = self.dir / "audit-policy.yaml"
        policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["RequestReceived"],  # a watch is logged when its response starts
            "rules": [
                {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
                {"level": "None"},
            ],
        }
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(policy))
        return path

    def _apiserver_ready(self) -> bool:
        return _http_ok(f"{self.server}/readyz", self._ssl_context())

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        ctx.load_cert_chain(str(self.pki.admin.cert), str(self.pki.admin.key))
        return ctx

    # ---------------------------------------------------------------------------------- controller-manager
    def _start_controller_manager(self) -> float:
        pki = self.pki
        argv: list[str | Path] = [
            self._bins["kube-controller-manager"],
            f"--kubeconfig={self.dir / 'kube-controller-manager.kubeconfig'}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={free_port()}",
            f"--cert-dir={self.dir / 'kcm-certs'}",
            "--leader-elect=false",
            # Tokens: the ServiceAccount controller creates `default` SAs; the root CA lands in kube-root-ca.crt.
            f"--service-account-private-key-file={pki.sa_private_key}",
            f"--root-ca-file={pki.ca.cert}",
            "--use-service-account-credentials=false",
            # Nothing here has nodes or a cloud; these controllers would only log noise.
            "--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service-lb-controller,"
            "-node-route-controller,-persistentvolume-binder,-attachdetach,-persistentvolume-expander,"
            "-ephemeral-volume-controller" + "".join(f",-{c}" for c in self.controllers_off),
            "--concurrent-deployment-syncs=5",
            "--v=1",
        ]
        proc = self._spawn("kube-controller-manager", argv, self.log_dir / "kube-controller-manager.log")
        # Ready means controllers are actually working: the ServiceAccount controller has made `default`.
        return wait_until(
            self._default_service_account_exists,
            self.ready_timeout,
            "kube-controller-manager to create the default ServiceAccount",
            [proc],
            interval=0.2,
        )

    def _default_service_account_exists(self) -> bool:
        url = f"{self.server}/api/v1/namespaces/default/serviceaccounts/default"
        return _http_ok(url, self._ssl_context())

    # ---------------------------------------------------------------------------------------- kubeconfig
    def _write_kubeconfigs(self) -> None:
        pki = self.pki
        self.kubeconfig.write_text(
            yaml.safe_dump(self.kubeconfig_dict(pki.admin.cert.read_bytes(), pki.admin.key.read_bytes()))
        )
        kcm = self.kubeconfig_dict(pki.controller_manager.cert.read_bytes(), pki.controller_manager.key.read_bytes())
        (self.dir / "kube-controller-manager.kubeconfig").write_text(yaml.safe_dump(kcm))

    def kubeconfig_dict(
        self,
        client_cert: bytes | None = None,
        client_key: bytes | None = None,
        token: str | None = None,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        """A kubeconfig for this cluster authenticating with a client cert or a bearer token."""
        user: dict[str, str] = {}
        if token is not None:
            user["token"] = token
        if client_cert is not None and client_key is not None:
            user["client-certificate-data"] = _b64(client_cert)
            user["client-key-data"] = _b64(client_key)
        context: dict[str, str] = {"cluster": CONTEXT, "user": CONTEXT}
        if namespace:
            context["namespace"] = namespace
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": CONTEXT,
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": _b64(self.pki.ca.cert.read_bytes()),
                    },
                }
            ],
            "users": [{"name": CONTEXT, "user": user}],
            "contexts": [{"name": CONTEXT, "context": context}],
            "current-context": CONTEXT,
        }

    def write_token_kubeconfig(self, token: str, path: Path, namespace: str | None = None) -> Path:
        """Write a kubeconfig that authenticates with ``token`` (e.g. from ``kubectl create token``).

        Lets a test run the operator with exactly the RBAC its ServiceAccount gets from the Helm chart.
        """
        path.write_text(yaml.safe_dump(self.kubeconfig_dict(token=token, namespace=namespace)))
        path.chmod(0o600)
        return path

    # ------------------------------------------------------------------------------------------- clients
    def kubectl(
        self,
        *args: str,
        check: bool = False,
        input: str | None = None,
        timeout: float = 60,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this cluster; returns the CompletedProcess (text mode)."""
        argv = [str(self.binary("kubectl")), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        return subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout, check=check)

    def wait_established(self, crd: str, timeout: float = 60) -> None:
        """Wait until a CRD is Established. ``kubectl wait`` fails at once while a new CRD has no status.conditions
        yet, so ask again until it answers; raise with kubectl's last error after ``timeout`` seconds."""
        last: list[subprocess.CompletedProcess[str]] = []

        def established() -> bool:
            last[:] = [self.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=10s")]
            return last[0].returncode == 0

        try:
            wait_until(established, timeout, f"CRD {crd} Established", interval=0.5)
        except Exception as exc:
            raise RuntimeError(f"CRD {crd} not Established:\n{last[0].stderr if last else ''}") from exc

    def kubectl_json(self, *args: str) -> Any:
        """``kubectl ... -o json`` parsed; raises with kubectl's stderr when it fails."""
        res = self.kubectl(*args, "-o", "json")
        if res.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {res.stderr.strip()}")
        return json.loads(res.stdout)

    def api_client(self) -> ApiClient:
        """A kubernetes python client ApiClient authenticated as the admin."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def create_token(self, namespace: str, service_account: str, duration: str = "1h") -> str:
        """A ServiceAccount token via the TokenRequest API (what ``kubectl create token`` does)."""
        res = self.kubectl("create", "token", service_account, "-n", namespace, f"--duration={duration}")
        if res.returncode != 0:
            raise RuntimeError(f"kubectl create token failed: {res.stderr.strip()}")
        return res.stdout.strip()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    """True when GET ``url`` answers 200; connection errors and non-200 mean "not yet"."""
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2, context=context) as resp:
        return bool(resp.status == 200)
    return False


__all__ = ["LocalControlPlane", "ProcessFailed", "StartupTimings"]
