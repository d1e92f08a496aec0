"""The real loop for the benchmarks: local API server, Prometheus, the channel simulator and ``chanscale run``.

Everything binds to 127.0.0.1 and every process is stopped on exit (``Stack`` is a context manager; the local
process plumbing also kills leftovers at interpreter exit). Missing binaries raise ``BinaryNotFound`` with the
fix (`make tools`, and the Debian ``prometheus`` package).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from chanscale import GROUP, PLURAL, VERSION
from chanscale.local.binaries import REPO_ROOT
from chanscale.local.cluster import LocalControlPlane
from chanscale.local.harness import OperatorProcess, worker_deployment
from chanscale.local.process import LOOPBACK, ManagedProcess, free_port, wait_until
from chanscale.local.prometheus import LocalPrometheus


def deployment(name: str, replicas: int) -> Any:
    """A worker Deployment; its pods stay Pending (no kubelet): the simulator counts spec.replicas as workers."""
    return worker_deployment(name, replicas, image="worker:bench")


def worker_pool(name: str, channel: str, target: str, slo: float, service_rate: float, max_replicas: int) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": {
            "channel": channel,
            "scaleTargetRef": {"name": target},
            "minReplicas": 1,
            "maxReplicas": max_replicas,
            "slo": {"p99LatencySeconds": slo},
            "model": {"serviceRateHint": service_rate},
        },
    }


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text format → (name, labels, value); enough for prometheus_client's output."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(3))))
        except ValueError:
            continue
    return out


def metric_sum(samples: list[tuple[str, dict[str, str], float]], name: str, **match: str) -> float:
    return sum(v for n, lbl, v in samples if n == name and all(lbl.get(k) == x for k, x in match.items()))


def process_usage(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds user+system) of one process from /proc."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


@dataclass
class Stack:
    """Control plane + Prometheus + simulator + operator, started in that order, stopped in reverse."""

    workdir: Path
    scrape_interval: str = "5s"
    tick: float = 10.0
    opa: str = "local"
    namespace: str = "bench"
    cp: LocalControlPlane | None = None
    prom: LocalPrometheus | None = None
    sim: ManagedProcess | None = None
    sim_port: int = 0
    operator: OperatorProcess | None = None
    api: Any = None
    timings: dict[str, float] = field(default_factory=dict)
    controllers_off: tuple[str, ...] = ()  # LocalControlPlane.controllers_off

    # --------------------------------------------------------------------------------------------- start/stop
    def start_cluster(self) -> None:
        t = time.monotonic()
        self.cp = LocalControlPlane(controllers_off=self.controllers_off).start()
        applied = self.cp.kubectl("apply", "-f", str(REPO_ROOT / "crds"))
        if applied.returncode != 0:
            raise RuntimeError(f"kubectl apply -f crds/ failed: {applied.stderr}")
        self.cp.wait_established(f"{PLURAL}.{GROUP}")
        self.api = self.cp.api_client()
        client.CoreV1Api(self.api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace))
        )
        self.timings["control_plane_s"] = time.monotonic() - t
        t = time.monotonic()
        self.prom = LocalPrometheus(scrape_interval=self.scrape_interval, workdir=None).start()
        self.timings["prometheus_s"] = time.monotonic() - t

    def start_sim(self, channels: list[dict[str, Any]], follow_deployments: bool) -> None:
        assert self.cp is not None and self.prom is not None
        cfg = self.workdir / "sim.yaml"
        cfg.write_text(yaml.safe_dump({"channels": channels}))
        self.sim_port = free_port()
        argv = [
            sys.executable,
            "-m",
            "chanscale",
            "sim",
            "--config",
            str(cfg),
            "--listen",
            f"{LOOPBACK}:{self.sim_port}",
        ]
        if follow_deployments:
            argv += ["--kubeconfig", str(self.cp.kubeconfig)]
        self.sim = ManagedProcess("chanscale-sim", argv, self.workdir / "sim.log").start()
        wait_until(
            lambda: self._http_ok(f"http://{LOOPBACK}:{self.sim_port}/healthz"), 30, "simulator /healthz", [self.sim]
        )
        self.prom.add_target(f"{LOOPBACK}:{self.sim_port}")
        self.prom.wait_for_target(f"{LOOPBACK}:{self.sim_port}", timeout=60)

    def start_operator(self, extra: list[str] | None = None) -> None:
        assert self.cp is not None and self.prom is not None
        mport, lport = free_port(), free_port()
        opa_args = ["--opa-url", self.opa] if self.opa.startswith("http") else ["--opa", self.opa]
        argv = [
            sys.executable,
            "-m",
            "chanscale",
            "run",
            "--standalone",
            "--kubeconfig",
            str(self.cp.kubeconfig),
            "--prometheus-url",
            self.prom.url,
            *opa_args,
            "--tick",
            str(self.tick),
            "--metrics-port",
            str(mport),
            "--metrics-addr",
            LOOPBACK,
            "--liveness",
            f"http://{LOOPBACK}:{lport}/healthz",
            "--namespace",
            self.namespace,
            *(extra or []),
        ]
        # KUBECONFIG in the environment as well as --kubeconfig: operators before efbf1b2 needed it for kopf's
        # login (docs/benchmarks.md, "Known issues"); harmless since.
        self.operator = OperatorProcess(
            "chanscale-operator",
            argv,
            self.workdir / "operator.log",
            mport,
            lport,
            env={"KUBECONFIG": str(self.cp.kubeconfig)},
        )
        self.operator.start()
        self.operator.wait_healthy(timeout=120)

    def stop(self) -> None:
        for stop in (self._stop_operator, self._stop_sim, self._stop_prom, self._stop_cp):
            try:
                stop()
            except Exception as e:  # keep stopping the rest
                print(f"warning: cleanup step failed: {e}", file=sys.stderr)

    def _stop_operator(self) -> None:
        if self.operator:
            self.operator.stop()

    def _stop_sim(self) -> None:
        if self.sim:
            self.sim.stop()

    def _stop_prom(self) -> None:
        if self.prom:
            self.prom.stop()

    def _stop_cp(self) -> None:
        if self.api is not None:
            self.api.close()
        if self.cp:
            self.cp.stop()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------------------------------------- helpers
    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def sim_state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.sim_port}/state", timeout=5) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data

    def sim_control(self, channel: str, rate: float) -> None:
        body = json.dumps({"namespace": self.namespace, "channel": channel, "arrivalRate": rate}).encode()
        req = urllib.request.Request(
            f"http://{LOOPBACK}:{self.sim_port}/control",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()

    def operator_metrics(self) -> list[tuple[str, dict[str, str], float]]:
        assert self.operator is not None
        return parse_metrics(self.operator.metrics_text())

    def apiserver_metrics(self) -> list[tuple[str, dict[str, str], float]]:
        assert self.cp is not None
        res = self.cp.kubectl("get", "--raw", "/metrics")
        if res.returncode != 0:
            raise RuntimeError(f"kubectl get --raw /metrics failed: {res.stderr}")
        return parse_metrics(res.stdout)

    def prom_raw(self, expr: str, window: str) -> dict[str, list[tuple[float, float]]]:
        """Raw samples of ``expr[window]`` keyed by channel (sample timestamps are scrape times)."""
        assert self.prom is not None
        data = self.prom.query(f"{expr}[{window}]")
        out: dict[str, list[tuple[float, float]]] = {}
        for series in data:
            out[series["metric"].get("channel", "")] = [(float(t), float(v)) for t, v in series["values"]]
        return out

    def create_pools(self, pools: list[dict], deployments: list[client.V1Deployment]) -> None:
        """Deployments first, then pools; 8 requests at a time (thousands of objects for bench.at_scale)."""
        apps = client.AppsV1Api(self.api)
        co = client.CustomObjectsApi(self.api)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda d: apps.create_namespaced_deployment(self.namespace, d), deployments))
            list(
                pool.map(lambda p: co.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, p), pools)
            )

    def pretend_one_ready_pod_each(self, deployments: list[str], port: int, timeout: float = 120) -> None:
        """For the direct path without a kubelet: one pod of each Deployment reported Ready at 127.0.0.1, its
        metrics port annotated (chanscale.direct); the others stay Pending and are never read."""
        from chanscale.direct import PORT_ANNOTATION

        core = client.CoreV1Api(self.api)
        left = set(deployments)
        deadline = time.time() + timeout
        while left and time.time() < deadline:
            for pod in core.list_namespaced_pod(self.namespace).items:
                meta = pod.metadata
                dep = str((meta.labels or {}).get("app", "")) if meta is not None else ""
                if meta is None or dep not in left:
                    continue
                name = str(meta.name)
                ann = {"metadata": {"annotations": {PORT_ANNOTATION: str(port)}}}
                core.patch_namespaced_pod(name, self.namespace, ann)
                status = {
                    "status": {
                        "phase": "Running",
                        "podIP": LOOPBACK,
                        "podIPs": [{"ip": LOOPBACK}],
                        "conditions": [{"type": "Ready", "status": "True"}],
                    }
                }
                core.patch_namespaced_pod_status(name, self.namespace, status)
                left.discard(dep)
            time.sleep(0.5)
        if left:
            raise RuntimeError(f"no pod appeared for {sorted(left)} within {timeout:.0f} s")

    def deployment_replicas(self) -> dict[str, int]:
        apps = client.AppsV1Api(self.api)
        out: dict[str, int] = {}
        for d in apps.list_namespaced_deployment(self.namespace).items:
            if d.metadata is not None and d.spec is not None:
                out[str(d.metadata.name)] = int(d.spec.replicas or 0)
        return out

    def watch_deployments(self, stop_at: float) -> Iterator[tuple[float, str, int]]:
        """(wall time, name, spec.replicas) for every Deployment event until ``stop_at`` (time.time())."""
        from kubernetes import watch

        apps = client.AppsV1Api(self.api)
        w = watch.Watch()
        while time.time() < stop_at:
            timeout = max(1, int(stop_at - time.time()))
            for ev in w.stream(apps.list_namespaced_deployment, self.namespace, timeout_seconds=timeout):
                obj = ev["object"]
                yield time.time(), obj.metadata.name, int(obj.spec.replicas or 0)
                if time.time() >= stop_at:
                    w.stop()
                    break
