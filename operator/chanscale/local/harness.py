"""Test-harness helpers around the local cluster, free of pytest so tests can import them for type hints.

The integration conftest builds its fixtures from these: :class:`Kubectl` (real kubectl with the test kubeconfig),
:class:`PrometheusTargets` (scrape targets that are removed after a test) and :class:`OperatorProcess` (one
``chanscale run`` child process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chanscale.local.cluster import LocalControlPlane
from chanscale.local.process import LOOPBACK, ManagedProcess, free_port, wait_until
from chanscale.local.prometheus import DEFAULT_JOB, LocalPrometheus


def worker_deployment(name: str, replicas: int, image: str = "worker:1") -> Any:
    """A worker Deployment for the local cluster. No kubelet runs, so its pods stay Pending: the channel
    simulator counts ``spec.replicas`` as workers."""
    from kubernetes import client

    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="worker", image=image)]),
            ),
        ),
    )


class Kubectl:
    """Runs the real kubectl against the test cluster; calling it returns the CompletedProcess."""

    def __init__(self, control_plane: LocalControlPlane) -> None:
        self.cp = control_plane

    def __call__(
        self, *args: str, check: bool = False, input: str | None = None, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.cp.kubectl(*args, check=check, input=input, kubeconfig=kubeconfig)

    def json(self, *args: str) -> Any:
        """``kubectl <args> -o json`` parsed; fails the test with kubectl's stderr when kubectl fails."""
        res = self(*args, "-o", "json")
        if res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {res.stderr}")
        return json.loads(res.stdout)

    def apply(
        self, manifest: dict[str, Any] | list[dict[str, Any]] | str, namespace: str | None = None, *extra: str
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -`` of a dict, a list of dicts or YAML text; returns the CompletedProcess."""
        if isinstance(manifest, str):
            text = manifest
        elif isinstance(manifest, list):
            text = yaml.safe_dump_all(manifest)
        else:
            text = yaml.safe_dump(manifest)
        ns_args = ["-n", namespace] if namespace else []
        return self("apply", *ns_args, *extra, "-f", "-", input=text)


class PrometheusTargets:
    """Adds scrape targets to the session Prometheus and removes them when the test ends."""

    def __init__(self, prom: LocalPrometheus) -> None:
        self.prom = prom
        self.added: list[tuple[str, str]] = []

    def add(
        self, address: str, labels: dict[str, str] | None = None, wait: bool = True, job: str = DEFAULT_JOB
    ) -> None:
        """Scrape ``address``; by default wait (bounded) until Prometheus has scraped it successfully."""
        self.prom.add_target(address, labels, job=job)
        self.added.append((address, job))
        if wait:
            self.prom.wait_for_target(address, timeout=30)

    def remove(self, address: str, job: str = DEFAULT_JOB) -> None:
        self.prom.remove_target(address, job=job)

    def cleanup(self) -> None:
        for address, job in self.added:
            if self.prom.running:
                self.prom.remove_target(address, job=job)


@dataclass
class OperatorProcess:
    """One `chanscale run` child process and the ports it serves on."""

    name: str
    argv: list[str]
    log_path: Path
    metrics_port: int
    liveness_port: int
    #: Environment overrides for the child; a value of None removes the variable.
    env: dict[str, str | None] = field(default_factory=dict)
    proc: ManagedProcess | None = None

    @classmethod
    def local(
        cls,
        name: str,
        log_path: Path,
        kubeconfig: Path,
        prometheus_url: str,
        opa: str = "none",
        namespaces: Sequence[str] = (),
        tick: float = 1,
        extra_args: Sequence[str] = (),
        env: dict[str, str | None] | None = None,
    ) -> OperatorProcess:
        """``python -m chanscale run --standalone`` against a local cluster, not started yet: metrics and liveness
        on free loopback ports, ``opa`` "none", "local" or an http(s) URL, the given namespaces (none: all), and
        KUBECONFIG in its environment too, as users run it (``env`` overrides it; None unsets)."""
        metrics_port, liveness_port = free_port(), free_port()
        ns_args = [a for ns in namespaces for a in ("--namespace", ns)] if namespaces else ["--all-namespaces"]
        opa_args = ["--opa-url", opa] if opa.startswith(("http://", "https://")) else ["--opa", opa]
        argv = [sys.executable, "-m", "chanscale", "run", "--standalone", "--kubeconfig", str(kubeconfig)]
        argv += ["--prometheus-url", prometheus_url, *opa_args, "--tick", str(tick)]
        argv += ["--metrics-port", str(metrics_port), "--metrics-addr", LOOPBACK]
        argv += ["--liveness", f"http://{LOOPBACK}:{liveness_port}/healthz", *ns_args, *extra_args]
        child_env: dict[str, str | None] = {"KUBECONFIG": str(kubeconfig), **(env or {})}
        return cls(name, argv, log_path, metrics_port, liveness_port, env=child_env)

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"

    @property
    def liveness_url(self) -> str:
        return f"http://{LOOPBACK}:{self.liveness_port}/healthz"

    def start(self) -> OperatorProcess:
        env = dict(os.environ)
        for key, value in self.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        self.proc = ManagedProcess(self.name, self.argv, self.log_path, env=env).start()
        return self

    def wait_healthy(self, timeout: float = 60) -> None:
        """Bounded wait for the liveness endpoint; fails with the operator's log if it dies or never answers."""
        assert self.proc is not None, "operator not started"

        def healthy() -> bool:
            with urllib.request.urlopen(self.liveness_url, timeout=2) as resp:
                return bool(resp.status == 200)

        wait_until(healthy, timeout, f"{self.name} liveness at {self.liveness_url}", [self.proc], interval=0.25)

    def metrics_text(self, names: tuple[str, ...] = (), timeout: float = 5) -> str:
        """The operator's /metrics; with ``names``, only those samples (prometheus_client's ``name[]`` filter), so a
        benchmark sampling often does not pay for rendering every per-pool series."""
        query = "?" + "&".join(f"name[]={n}" for n in names) if names else ""
        with urllib.request.urlopen(self.metrics_url + query, timeout=timeout) as resp:
            text: str = resp.read().decode()
            return text

    def log_text(self) -> str:
        return self.proc.log_text() if self.proc else ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.running

    def stop(self) -> int | None:
        """Graceful stop (SIGTERM to the process group, SIGKILL after 10 s)."""
        return self.proc.stop() if self.proc else None

    def kill(self) -> None:
        """Crash it (SIGKILL): for restart tests."""
        if self.proc:
            self.proc.kill()

    def restart(self, wait: bool = True) -> OperatorProcess:
        """Stop and start again with the same arguments and ports (the log file is appended to)."""
        self.stop()
        self.start()
        if wait:
            self.wait_healthy()
        return self


@dataclass
class SimProcess:
    """One ``chanscale sim`` child: simulated channels whose workers are real Deployments' replicas.

    The loop it closes: operator scales Deployment -> sim reads spec.replicas -> backlog/latency change ->
    Prometheus scrapes the sim -> operator reads Prometheus.
    """

    name: str
    channels: list[dict[str, Any]]
    workdir: Path
    kubeconfig: Path | None
    port: int = 0
    proc: ManagedProcess | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self, timeout: float = 30) -> SimProcess:
        import sys

        config = self.workdir / f"{self.name}.yaml"
        config.write_text(yaml.safe_dump({"channels": self.channels}))
        if not self.port:
            self.port = free_port()
        argv = [sys.executable, "-m", "chanscale", "sim", "--config", str(config), "--listen", self.address]
        if self.kubeconfig is not None:
            argv += ["--kubeconfig", str(self.kubeconfig), "--replicas-from", "spec"]
        self.proc = ManagedProcess(self.name, argv, self.workdir / f"{self.name}.log").start()

        def healthy() -> bool:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)

        wait_until(healthy, timeout, f"{self.name} /healthz", [self.proc], interval=0.2)
        return self

    def set_arrival_rate(self, namespace: str, channel: str, rate: float) -> None:
        """POST /control: change a channel's load at run time."""
        body = json.dumps({"namespace": namespace, "channel": channel, "arrivalRate": rate}).encode()
        req = urllib.request.Request(
            f"{self.url}/control", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/state", timeout=5) as resp:
            result: dict[str, Any] = json.load(resp)
            return result

    def log_text(self) -> str:
        return self.proc.log_text() if self.proc else ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def _conditions(status: dict[str, Any]) -> dict[str, str]:
    """A status's conditions as {type: "status/reason"}."""
    return {str(c.get("type")): f"{c.get('status')}/{c.get('reason')}" for c in status.get("conditions") or []}


class ObjectWatch:
    """Records every version of one object a watch delivers, in a background thread, so a test can count the
    writes the API server actually took (status writes, replica changes) rather than what a client claims.

    ``kind`` is "deployment" or "workerpool". Survives an API-server restart (re-lists and re-watches).
    """

    def __init__(self, api_client: Any, kind: str, namespace: str, name: str) -> None:
        import threading

        self.api_client, self.kind, self.namespace, self.name = api_client, kind, namespace, name
        self.versions: list[tuple[float, dict[str, Any]]] = []  # (monotonic receive time, object)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{kind}-{name}", daemon=True)

    def _list_fn(self) -> Any:
        from kubernetes import client

        if self.kind == "deployment":
            api = client.AppsV1Api(self.api_client)
            return lambda **kw: api.list_namespaced_deployment(self.namespace, **kw)
        custom = client.CustomObjectsApi(self.api_client)
        return lambda **kw: custom.list_namespaced_custom_object(
            "chanscale.dev", "v1alpha1", self.namespace, "workerpools", **kw
        )

    def _run(self) -> None:
        import time

        from kubernetes import watch

        fn = self._list_fn()
        seen: set[str] = set()
        while not self._stop.is_set():
            try:
                for ev in watch.Watch().stream(fn, field_selector=f"metadata.name={self.name}", timeout_seconds=5):
                    obj = ev["object"]
                    obj = obj if isinstance(obj, dict) else self.api_client.sanitize_for_serialization(obj)
                    rv = str((obj.get("metadata") or {}).get("resourceVersion"))
                    if rv not in seen:  # a re-list repeats the current version
                        seen.add(rv)
                        self.versions.append((time.monotonic(), obj))
                    if self._stop.is_set():
                        return
            except Exception:
                time.sleep(0.5)

    def start(self) -> ObjectWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self) -> ObjectWatch:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def status_writes(self, since: float = 0.0) -> int:
        """Versions whose ``status`` differs from the version before (received at or after ``since``)."""
        count, prev = 0, None
        for when, obj in self.versions:
            st = obj.get("status")
            if prev is not None and st != prev and when >= since:
                count += 1
            prev = st
        return count

    def first_seen(self, match: Callable[[dict[str, Any]], bool], since: float = 0.0) -> float | None:
        """When the watch received the first version (at or after ``since``) that ``match`` accepts, or None."""
        return next((when for when, obj in self.versions if when >= since and match(obj)), None)

    def status_changes(self, since: float = 0.0) -> list[str]:
        """Each status write received at or after ``since``: when, the conditions it moved and the fields it
        changed — what an assertion on :meth:`status_writes` shows when it fails."""
        out: list[str] = []
        prev: dict[str, Any] | None = None
        for when, obj in self.versions:
            st = obj.get("status") or {}
            if prev is not None and st != prev and when >= since:
                was, now = _conditions(prev), _conditions(st)
                moved = [f"{t}={s}" for t, s in now.items() if was.get(t) != s]
                fields = [k for k in sorted(set(prev) | set(st)) if k != "conditions" and prev.get(k) != st.get(k)]
                out.append(f"+{when - since:.1f}s {' '.join(moved) or '-'} [{', '.join(fields)}]")
            prev = st
        return out

    def replicas(self) -> list[tuple[float, int]]:
        """(receive time, spec.replicas) for every version where the count changed."""
        out: list[tuple[float, int]] = []
        for when, obj in self.versions:
            r = int((obj.get("spec") or {}).get("replicas") or 0)
            if not out or out[-1][1] != r:
                out.append((when, r))
        return out


#: What the ``operator_process`` fixture returns: call it to start an operator.
OperatorFactory = Callable[..., OperatorProcess]
#: What the ``channel_sim`` fixture returns: call it with channel configs to start a simulator.
SimFactory = Callable[..., SimProcess]
