"""The scale-up/scale-down scenario, shared by the kind e2e test and the local-control-plane integration variant.

Why shared: the e2e suite (kind, Docker, the real image) and the integration suite (the local control plane here,
the operator and the simulator as processes) must prove the *same* behaviour; only how manifests are applied and
how load is set differ. Those two things are the small interface below:

    Cluster.apply(docs, namespace)              apply manifests (dicts) into a namespace
    Cluster.replicas(namespace, deployment)     the Deployment's spec.replicas (what chanscale sets)
    Cluster.workerpool(namespace, name)         the WorkerPool object (its status explains a failure)
    Load.set_rate(namespace, channel, rate)     change the simulated channel's arrival rate

``KubectlCluster`` implements Cluster over any callable shaped like ``kubectl(*args, input=None)`` returning a
CompletedProcess (the integration ``kubectl`` fixture is one; ``Kubectl`` below is another, for kind).
``HttpLoad`` posts to a simulator reachable from the test (the integration variant runs ``chanscale sim`` as a
local process); ``JobLoad`` runs examples/load.yaml as a Job inside the cluster (kind); ``ProxyLoad`` posts
through the API server's service proxy (kind, when a Job per change would be too slow).

The manifests are the files in examples/ - so the examples are what the e2e run proves - with the namespace and
the image substituted.

Use from the integration suite (tests/e2e is not a package)::

    spec = importlib.util.spec_from_file_location("chanscale_e2e_scenario", REPO_ROOT / "tests/e2e/scenario.py")
    scenario = importlib.util.module_from_spec(spec); spec.loader.exec_module(scenario)
    sc = scenario.ScaleScenario(namespace=ns)
    docs = sc.manifests(with_simulator=False)            # worker + WorkerPool; run the simulator yourself:
    Path(cfg).write_text(yaml.safe_dump(sc.sim_config()))  # chanscale sim --config cfg --kubeconfig ...
    sc.run(scenario.KubectlCluster(kubectl), scenario.HttpLoad(f"http://127.0.0.1:{port}"))
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
MANIFESTS = Path(__file__).resolve().parent / "manifests"

Doc = dict[str, Any]


# ------------------------------------------------------------------------------------------------- interface
class Cluster(Protocol):
    def apply(self, docs: Sequence[Doc], namespace: str) -> None: ...

    def replicas(self, namespace: str, deployment: str) -> int | None: ...

    def workerpool(self, namespace: str, name: str) -> Doc | None: ...


class Load(Protocol):
    def set_rate(self, namespace: str, channel: str, rate: float) -> None: ...


KubectlCall = Callable[..., "subprocess.CompletedProcess[str]"]


class Kubectl:
    """``kubectl`` with a fixed kubeconfig: the same call shape as the integration suite's fixture."""

    def __init__(self, binary: Path | str, kubeconfig: Path | str, timeout: float = 120) -> None:
        self.binary, self.kubeconfig, self.timeout = str(binary), str(kubeconfig), timeout

    def __call__(self, *args: str, check: bool = False, input: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, f"--kubeconfig={self.kubeconfig}", *args]
        return subprocess.run(argv, capture_output=True, text=True, input=input, timeout=self.timeout, check=check)


class KubectlCluster:
    """Cluster over a kubectl callable."""

    def __init__(self, kubectl: KubectlCall) -> None:
        self.kubectl = kubectl

    def apply(self, docs: Sequence[Doc], namespace: str) -> None:
        res = self.kubectl(
            "apply",
            "--server-side",
            "--field-manager=chanscale-e2e",
            "-n",
            namespace,
            "-f",
            "-",
            input=yaml.safe_dump_all(list(docs)),
        )
        assert res.returncode == 0, f"kubectl apply failed:\n{res.stderr}"

    def _get(self, kind: str, namespace: str, name: str) -> Doc | None:
        res = self.kubectl("get", kind, name, "-n", namespace, "-o", "json")
        return json.loads(res.stdout) if res.returncode == 0 else None

    def replicas(self, namespace: str, deployment: str) -> int | None:
        d = self._get("deployment", namespace, deployment)
        return None if d is None else int(d["spec"].get("replicas", 1))

    def workerpool(self, namespace: str, name: str) -> Doc | None:
        return self._get("workerpools.chanscale.dev", namespace, name)


class HttpLoad:
    """Sets the rate with ``POST <sim>/control`` directly (the simulator is reachable from the test)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def set_rate(self, namespace: str, channel: str, rate: float) -> None:
        body = json.dumps({"namespace": namespace, "channel": channel, "arrivalRate": rate}).encode()
        req = urllib.request.Request(
            f"{self.base_url}/control", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200, f"POST /control answered {resp.status}"


class ProxyLoad:
    """Sets the rate with ``POST /control`` through the API server's service proxy (``kubectl create --raw``)."""

    def __init__(self, kubectl: KubectlCall, service: str = "chanscale-sim", port: int = 9400) -> None:
        self.kubectl, self.service, self.port = kubectl, service, port

    def set_rate(self, namespace: str, channel: str, rate: float) -> None:
        path = f"/api/v1/namespaces/{namespace}/services/{self.service}:{self.port}/proxy/control"
        body = json.dumps({"namespace": namespace, "channel": channel, "arrivalRate": rate})
        res = self.kubectl("create", "--raw", path, "-f", "-", input=body)
        assert res.returncode == 0, f"POST {path} failed: {res.stderr}"


class JobLoad:
    """Sets the rate from inside the cluster: examples/load.yaml as a Job (the load producer), waited for."""

    def __init__(self, kubectl: KubectlCall, image: str, sim_url: str = "http://chanscale-sim:9400") -> None:
        self.kubectl, self.image, self.sim_url = kubectl, image, sim_url

    def set_rate(self, namespace: str, channel: str, rate: float) -> None:
        job = load_yaml(EXAMPLES / "load.yaml")[0]
        name = f"chanscale-load-{uuid.uuid4().hex[:6]}"
        job["metadata"].pop("generateName", None)
        job["metadata"]["name"] = name
        container = job["spec"]["template"]["spec"]["containers"][0]
        container["image"] = self.image
        env = {e["name"]: e for e in container["env"]}
        env["RATE"]["value"] = str(rate)
        env["CHANNEL"]["value"] = channel
        env["SIM_URL"]["value"] = self.sim_url
        res = self.kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(job))
        assert res.returncode == 0, f"creating the load Job failed:\n{res.stderr}"
        done = self.kubectl("wait", "-n", namespace, "--for=condition=complete", f"job/{name}", "--timeout=180s")
        if done.returncode != 0:
            logs = self.kubectl("logs", "-n", namespace, f"job/{name}", "--tail=50")
            raise AssertionError(f"load Job {name} did not complete: {done.stderr}\n{logs.stdout}{logs.stderr}")


# ----------------------------------------------------------------------------------------------- manifests
def load_yaml(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@dataclass
class ScaleScenario:
    """Low load, then high load (assert scale-up), then low load again (assert scale-down).

    The thresholds leave a wide margin around what the queueing model asks for (examples/workerpool.yaml: 10 msg/s
    per worker, P99 <= 1 s): 60 msg/s needs about 8 workers, 2 msg/s needs the minimum of 1.
    """

    namespace: str
    image: str = "ghcr.io/chanscale/chanscale:0.1.0"
    channel: str = "orders"
    worker: str = "orders-worker"
    pool: str = "orders"
    low_rate: float = 2.0
    high_rate: float = 60.0
    scaled_up_at_least: int = 4
    scaled_down_at_most: int = 2
    up_timeout: float = 300.0
    down_timeout: float = 420.0
    poll: float = 3.0
    log: Callable[[str], None] = print
    history: list[tuple[float, str, int | None]] = field(default_factory=list)
    # kind: count the simulator's workers from status.readyReplicas (real pods start); None keeps the example's.
    replicas_from: str | None = None
    # Overrides merged into the simulated channel's config and into the WorkerPool's spec (one level deep).
    channel_overrides: Doc = field(default_factory=dict)
    pool_overrides: Doc = field(default_factory=dict)

    # -- manifests
    def sim_config(self) -> Doc:
        """The simulator's channels config (examples/simulator.yaml's), for this scenario's namespace."""
        cm = next(d for d in load_yaml(EXAMPLES / "simulator.yaml") if d["kind"] == "ConfigMap")
        cfg: Doc = yaml.safe_load(cm["data"]["channels.yaml"])
        for ch in cfg["channels"]:
            ch["namespace"] = self.namespace
            ch["arrivalRate"] = self.low_rate
            ch.update(self.channel_overrides)
        return cfg

    def manifests(self, with_simulator: bool = True) -> list[Doc]:
        """examples/ worker + WorkerPool (+ the in-cluster simulator), namespaced and with this image."""
        docs = load_yaml(EXAMPLES / "worker.yaml") + load_yaml(EXAMPLES / "workerpool.yaml")
        for d in docs:
            if d["kind"] == "WorkerPool":
                for key, value in self.pool_overrides.items():
                    old = d["spec"].get(key)
                    d["spec"][key] = {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
        if with_simulator:
            for d in load_yaml(EXAMPLES / "simulator.yaml"):
                d = copy.deepcopy(d)
                if d["kind"] == "ConfigMap":
                    d["data"]["channels.yaml"] = yaml.safe_dump(self.sim_config(), sort_keys=False)
                if d["kind"] == "Deployment":
                    for c in d["spec"]["template"]["spec"]["containers"]:
                        c["image"] = self.image
                        if self.replicas_from:
                            c["args"] = [*c["args"], "--replicas-from", self.replicas_from]
                docs.append(d)
        for d in docs:
            d["metadata"]["namespace"] = self.namespace
        return docs

    # -- steps
    def wait_replicas(self, cluster: Cluster, ok: Callable[[int], bool], what: str, timeout: float) -> int:
        """Poll the worker's replicas until ``ok``; on timeout fail with the history and the pool's conditions."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            n = cluster.replicas(self.namespace, self.worker)
            self.history.append((time.monotonic(), what, n))
            if n is not None and ok(n):
                self.log(f"[scenario] {what}: replicas={n} after {time.monotonic() - start:.0f}s")
                return n
            if time.monotonic() > deadline:
                raise AssertionError(self._explain(cluster, f"timed out after {timeout:.0f}s waiting for {what}"))
            time.sleep(self.poll)

    def _explain(self, cluster: Cluster, headline: str) -> str:
        seen = [n for _, w, n in self.history]
        pool = cluster.workerpool(self.namespace, self.pool) or {}
        status = pool.get("status") or {}
        conds = "\n".join(
            f"  {c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}"
            for c in status.get("conditions", [])
        )
        return (
            f"{headline}\nreplicas seen: {seen[-40:]}\nsignals: {status.get('signals')}\n"
            f"last decision: {status.get('lastDecision')}\nconditions:\n{conds or '  <none>'}"
        )

    def run(
        self, cluster: Cluster, load: Load, with_simulator: bool = True, apply: bool = True
    ) -> list[tuple[float, str, int | None]]:
        """The whole scenario; returns the replica history (time, phase, replicas).

        ``with_simulator``: apply examples/simulator.yaml too (kind); False when the simulator runs as a local
        process (the integration variant). ``apply``: False when the caller applied ``manifests()`` itself.
        """
        if apply:
            cluster.apply(self.manifests(with_simulator=with_simulator), self.namespace)
        load.set_rate(self.namespace, self.channel, self.low_rate)
        self.wait_replicas(cluster, lambda n: n <= self.scaled_down_at_most, "baseline at low load", self.up_timeout)
        load.set_rate(self.namespace, self.channel, self.high_rate)
        self.wait_replicas(
            cluster,
            lambda n: n >= self.scaled_up_at_least,
            f"scale-up to >= {self.scaled_up_at_least} at {self.high_rate} msg/s",
            self.up_timeout,
        )
        load.set_rate(self.namespace, self.channel, self.low_rate)
        self.wait_replicas(
            cluster,
            lambda n: n <= self.scaled_down_at_most,
            f"scale-down to <= {self.scaled_down_at_most} at {self.low_rate} msg/s",
            self.down_timeout,
        )
        return self.history
