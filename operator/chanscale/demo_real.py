"""``chanscale demo --real``: the demo's channel on a real broker instead of the simulator.

nats-server with JetStream, the example load generator and worker of examples/nats-worker (built on the Go SDK)
run as processes on 127.0.0.1. The local control plane has no kubelet, so this module plays its part for the
worker Deployment: it keeps one worker process running per replica of ``spec.replicas`` (started on scale-up,
terminated on scale-down, when the worker finishes the messages it holds). Prometheus scrapes the load generator
and every worker, and the operator reads them with its default queries, exactly as in a cluster.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from .local.binaries import REPO_ROOT, find_binary, go_build
from .local.process import LOOPBACK, ManagedProcess, free_port, wait_until

NATS_WORKER_MODULE = REPO_ROOT / "examples" / "nats-worker"


def _get(url: str, timeout: float = 3) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode())


def _answers(url: str) -> bool:
    try:
        _get(url, timeout=1)
        return True
    except OSError:
        return False


class RealChannel:
    """The broker, the producer and the worker processes of one channel (the simulator's interface for the demo)."""

    proc = None  # no single process stands for the channel (the demo's check_running asks check_running())

    def __init__(
        self, logs: Path, prom: Any, namespace: str, channel: str, service_seconds: float, rate: float, replicas: int
    ) -> None:
        self.logs, self.prom, self.namespace, self.channel = logs, prom, namespace, channel
        self.service_seconds, self.rate, self.initial_replicas = service_seconds, rate, replicas
        self.nats: ManagedProcess | None = None
        self.loadgen: ManagedProcess | None = None
        self.loadgen_url = ""
        self.workers: list[tuple[ManagedProcess, str]] = []  # (process, its metrics address)
        self._started = 0
        self._binaries: dict[str, Path] = {}

    def start(self) -> RealChannel:
        self._binaries = {
            "nats-server": find_binary("nats-server"),
            "worker": go_build(NATS_WORKER_MODULE, "./cmd/worker", "nats-worker"),
            "loadgen": go_build(NATS_WORKER_MODULE, "./cmd/loadgen", "nats-loadgen"),
        }
        port, mport = free_port(), free_port()
        self.nats_url = f"nats://{LOOPBACK}:{port}"
        self.nats = ManagedProcess(
            "nats-server",
            [self._binaries["nats-server"], "-js", "-a", LOOPBACK, "-p", str(port), "-m", str(mport),
             "-sd", str(self.logs / "jetstream")],
            self.logs / "nats-server.log",
        ).start()  # fmt: skip
        wait_until(lambda: _answers(f"http://{LOOPBACK}:{mport}/healthz"), 60, "nats-server", [self.nats])
        address = f"{LOOPBACK}:{free_port()}"
        self.loadgen = ManagedProcess(
            "nats-loadgen",
            [self._binaries["loadgen"], *self._common(address), "--rate", f"{self.rate:g}"],
            self.logs / "nats-loadgen.log",
        ).start()
        self.loadgen_url = f"http://{address}"
        wait_until(lambda: _answers(f"{self.loadgen_url}/healthz"), 60, "the load generator", [self.loadgen])
        self.prom.add_target(address, {"namespace": self.namespace})
        self.prom.wait_for_target(address, timeout=60)
        self.sync(self.initial_replicas)  # the Deployment's pods from the start, as a kubelet would run them
        return self

    def _common(self, address: str) -> list[str]:
        return ["--nats-url", self.nats_url, "--channel", self.channel, "--listen", address]

    # -- the simulator's interface
    def set_arrival_rate(self, namespace: str, channel: str, rate: float) -> None:
        req = urllib.request.Request(
            f"{self.loadgen_url}/control", data=json.dumps({"rate": rate}).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=5):
            self.rate = rate

    def sync(self, replicas: int) -> None:
        """One worker process per replica: start the missing ones, terminate the extra ones (newest first);
        a worker that died is replaced, as the kubelet would restart it."""
        for proc, address in [w for w in self.workers if not w[0].running]:
            self.prom.remove_target(address)
            self.workers.remove((proc, address))
        while len(self.workers) < replicas:
            self._started += 1
            address = f"{LOOPBACK}:{free_port()}"
            argv: list[str | Path] = [
                self._binaries["worker"],
                *self._common(address),
                "--service",
                f"{self.service_seconds:g}",
            ]
            proc = ManagedProcess(f"nats-worker-{self._started}", argv, self.logs / "nats-workers.log").start()
            self.prom.add_target(address, {"namespace": self.namespace})
            self.workers.append((proc, address))
        while len(self.workers) > replicas:
            proc, address = self.workers.pop()
            self.prom.remove_target(address)
            proc.stop()

    def state(self, replicas: int | None) -> dict[str, Any]:
        """What the live view shows: the producer's rate, the channel's backlog (from Prometheus: the broker's
        pending count plus what the workers hold) and the workers running for the Deployment's replicas."""
        if replicas is not None:
            self.sync(replicas)
        query = f'sum(chanscale_channel_backlog{{namespace="{self.namespace}", channel="{self.channel}"}})'
        try:
            res = json.loads(_get(f"{self.prom.url}/api/v1/query?" + urllib.parse.urlencode({"query": query})))
            backlog = float(res["data"]["result"][0]["value"][1]) if res["data"]["result"] else None
        except (OSError, ValueError, KeyError):
            backlog = None
        running = sum(1 for proc, _ in self.workers if proc.running)
        return {"arrival_rate": self.rate, "backlog": backlog, "ready_workers": running, "desired_workers": replicas}

    def check_running(self) -> None:
        for proc in (self.nats, self.loadgen):
            if proc is not None:
                proc.check_running()

    def stop(self) -> None:
        self.sync(0)
        for proc in (self.loadgen, self.nats):
            if proc is not None:
                proc.stop()
