"""The real loop on a kind cluster, with real pod start-up: backlog visible → spec.replicas patched → new pods
Ready → backlog drained.

    python -m bench.kind_loop              # 10 steps; brings the cluster up (hack/e2e-cluster.sh) if needed
    python -m bench kind_loop              # the same through the runner (never part of `python -m bench [--quick]`)
    python -m bench.kind_loop --steps 12 --keep

Everything runs in the kind cluster of the e2e suite (tests/e2e/kindstack.py: the operator image, the chart with
its OPA sidecar, the e2e Prometheus scraping every 2 s): the channel simulator (`chanscale sim --replicas-from
ready`, no simulated start-up delay) counts the worker Deployment's *ready* pods as its workers, so a new worker
consumes only once the kubelet has started its pod and it passed readiness. Workers are pause containers.

One pool, steps one after another: settle at LOW (replicas stable for 20 s, all pods Ready, backlog drained),
step the arrival rate to HIGH, measure, back to LOW (a 15 s scale-down window brings it back). Per step:
- **visible**: the first Prometheus sample after the step with backlog ≥ 20 (its scrape timestamp);
- **patched**: when the Deployment watch delivered the first spec.replicas increase;
- **ready**: when the watch delivered readyReplicas ≥ that first patched count (the new pods are Ready);
- **drained**: when the simulator's backlog, after its peak, is back to ≤ 10 (polled every 0.5 s).
The host, the node and Prometheus share one kernel clock, so these timestamps compare directly.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import yaml

from .common import BENCH_DIR, add_common_args, machine, machine_line, publish, step_percentiles

NAMESPACE = "chanscale-bench"
CHANNEL, WORKER, POOL = "orders", "orders-worker", "orders"
SERVICE_RATE = 20.0
LOW, HIGH = 20.0, 100.0
VISIBLE_BACKLOG = 20
DRAINED_BACKLOG = 10
# LOW needs 2 workers at 80 % utilisation, 3-4 while the latency window still holds the last burst.
SETTLED_MAX = 4


def _load(name: str) -> ModuleType:
    """tests/e2e is not a package: load its modules by path (as tests/integration loads scenario.py)."""
    e2e = BENCH_DIR.parent / "tests" / "e2e"
    if str(e2e) not in sys.path:
        sys.path.insert(0, str(e2e))  # kindstack and scenario import each other's siblings by name
    spec = importlib.util.spec_from_file_location(name, e2e / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Loop:
    """The cluster side of the benchmark: the workload in NAMESPACE and fast reads through the API server."""

    def __init__(self, stack: Any, scenario: ModuleType) -> None:
        from kubernetes import client, config

        self.stack = stack
        self.api = config.new_client_from_config(config_file=str(stack.kubeconfig))
        self.apps = client.AppsV1Api(self.api)
        self.sc = scenario.ScaleScenario(
            namespace=NAMESPACE,
            image=stack.images.operator,
            replicas_from="ready",
            low_rate=LOW,
            channel_overrides={"serviceRate": SERVICE_RATE, "startupDelaySeconds": 0},
            pool_overrides={
                "maxReplicas": 30,
                "model": {"serviceRateHint": SERVICE_RATE},
                "behavior": {
                    "scaleDown": {
                        "stabilizationWindowSeconds": 15,
                        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 5}],
                    }
                },
            },
        )
        self.events: list[tuple[float, int, int]] = []  # (time, spec.replicas, readyReplicas)
        self.backlog: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def _proxy(self, method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
        """One request through the API server (the client's TLS and credentials), without kubectl's start-up."""
        cfg = self.api.configuration
        headers = {"Content-Type": "application/json", "Accept": "*/*"}
        if cfg.api_key.get("authorization"):
            headers["Authorization"] = cfg.api_key["authorization"]
        # rest_client.request takes these keywords in every client release this project allows (kubernetes>=29).
        resp = self.api.rest_client.request(method, cfg.host + path, headers=headers, body=body, _request_timeout=10)
        data = bytes(resp.data if resp.data is not None else resp.read())
        if resp.status >= 400:
            raise RuntimeError(f"{method} {path}: {resp.status} {data[:300]!r}")
        return data

    def sim(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return json.loads(
            self._proxy(method, f"/api/v1/namespaces/{NAMESPACE}/services/chanscale-sim:9400/proxy/{path}", body)
        )

    def set_rate(self, rate: float) -> None:
        self.sim("POST", "control", {"namespace": NAMESPACE, "channel": CHANNEL, "arrivalRate": rate})

    def prom_raw(self, expr: str, seconds: int) -> list[tuple[float, float]]:
        q = urllib.parse.urlencode({"query": f"{expr}[{seconds}s]"})
        data = json.loads(
            self._proxy("GET", f"/api/v1/namespaces/monitoring/services/prometheus:9090/proxy/api/v1/query?{q}")
        )
        result = data["data"]["result"]
        return [(float(t), float(v)) for r in result for t, v in r["values"]]

    # -- background recorders
    def watch(self) -> None:
        from kubernetes import watch

        while not self.stop.is_set():
            w = watch.Watch()
            for ev in w.stream(
                self.apps.list_namespaced_deployment,
                NAMESPACE,
                field_selector=f"metadata.name={WORKER}",
                timeout_seconds=30,
            ):
                d = ev["object"]
                ready = d.status.ready_replicas if d.status else 0
                self.events.append((time.time(), int(d.spec.replicas or 0), int(ready or 0)))
                if self.stop.is_set():
                    w.stop()

    def poll_backlog(self) -> None:
        while not self.stop.is_set():
            try:
                chans = self.sim("GET", "state")["channels"]
                self.backlog.append((time.time(), float(chans[0]["backlog"])))
            except Exception as e:  # a transient proxy error costs one sample, not the run
                print(f"[kind_loop] /state: {e}", flush=True)
            time.sleep(0.5)

    # -- steps
    def current(self) -> tuple[int, int]:
        d = self.apps.read_namespaced_deployment(WORKER, NAMESPACE)
        ready = d.status.ready_replicas if d.status else 0
        return int(d.spec.replicas or 0), int(ready or 0)

    def settle(self, timeout: float = 420) -> int:
        """Wait until the pool is back at the low load's size (≤ SETTLED_MAX), has not moved for 20 s, every pod
        is Ready and the backlog is drained: every step starts from the same place."""
        deadline = time.time() + timeout
        last, since = self.current(), time.time()
        while time.time() < deadline:
            time.sleep(1)
            now = self.current()
            if now != last:
                last, since = now, time.time()
            backlog = self.backlog[-1][1] if self.backlog else 0.0
            if time.time() - since >= 20 and now[0] == now[1] <= SETTLED_MAX and backlog <= DRAINED_BACKLOG:
                return now[0]
        raise RuntimeError(f"the pool did not settle within {timeout:.0f}s (replicas, ready = {last})")

    def step(self, timeout: float = 300) -> tuple[float, int]:
        """Step to HIGH; return when drained with every pod Ready (or at the timeout)."""
        pre = self.settle()
        t_step = time.time()
        self.set_rate(HIGH)
        deadline = t_step + timeout
        while time.time() < deadline:
            time.sleep(1)
            row = analyse_step(t_step, pre, self.events, [], self.backlog)
            if row["drained_s"] is not None and row["ready_s"] is not None:
                break
        self.set_rate(LOW)
        return t_step, pre


def analyse_step(
    t_step: float,
    pre: int,
    events: list[tuple[float, int, int]],
    samples: list[tuple[float, float]],
    backlog: list[tuple[float, float]],
    end: float = float("inf"),
) -> dict[str, Any]:
    """One step's timestamps, as intervals from the step (None when not reached before ``end``, the next step)."""
    events = [e for e in events if t_step <= e[0] < end]
    vis = next((t for t, v in samples if t_step <= t < end and v >= VISIBLE_BACKLOG), None)
    patch = next(((t, n) for t, n, _ in events if n > pre), None)
    ready = None if patch is None else next((t for t, _, r in events if t >= patch[0] and r >= patch[1]), None)
    series = [(t, b) for t, b in backlog if t_step <= t < end]
    drained = None
    if series:
        peak_t, peak = max(series, key=lambda x: x[1])
        if peak > DRAINED_BACKLOG:
            drained = next((t for t, b in series if t >= peak_t and b <= DRAINED_BACKLOG), None)

    def rel(t: float | None, since: float | None = t_step) -> float | None:
        return None if t is None or since is None else round(t - since, 2)

    return {
        "step_time": t_step,
        "replicas_before": pre,
        "replicas_first_patch": None if patch is None else patch[1],
        "peak_backlog": max((b for _, b in series), default=0.0),
        "visible_s": rel(vis),
        "patched_s": rel(None if patch is None else patch[0]),
        "ready_s": rel(ready),
        "drained_s": rel(drained),
        "visible_to_patched_s": rel(None if patch is None else patch[0], vis),
        "patched_to_ready_s": rel(ready, None if patch is None else patch[0]),
    }


INTERVALS = {
    "visible_s": "step → backlog visible in Prometheus",
    "visible_to_patched_s": "visible → spec.replicas patched",
    "patched_to_ready_s": "patched → new pods Ready",
    "ready_s": "step → new pods Ready",
    "drained_s": "step → backlog drained",
}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return step_percentiles(rows, INTERVALS)


def markdown(summary: dict[str, Any], rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"Obtained with `{meta['command']}` on {machine_line(meta['machine'])}; kind node {meta['node']}: "
        f"{summary['steps']} steps ({LOW:g} → {HIGH:g} msgs/s, μ = {SERVICE_RATE:g}/s per worker), Prometheus "
        f"scrape 2 s, operator tick {meta['tick']} s, OPA sidecar; cluster bring-up {meta['bring_up']}. "
        "Percentiles from this one run.",
        "",
        "| interval | n | p50 s | p95 s | max s |",
        "|---|---|---|---|---|",
    ]
    for key, label in INTERVALS.items():
        s = summary[key]
        mx = "–" if s["max"] is None else f"{s['max']:.1f}"
        lines.append(f"| {label} | {s['n']} | {s['p50']:.1f} | {s['p95']:.1f} | {mx} |")
    firsts = [r["replicas_first_patch"] for r in rows if r["replicas_first_patch"] is not None]
    if firsts:
        lines += [
            "",
            f"First patch: from a median of {statistics.median(r['replicas_before'] for r in rows):g} to a median "
            f"of {statistics.median(firsts):g} replicas; median peak backlog "
            f"{statistics.median(r['peak_backlog'] for r in rows):.0f} messages.",
        ]
    return "\n".join(lines)


def run(stack: Any, scenario: ModuleType, steps: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The steps; returns the per-step rows and the raw series they were computed from (kept in the JSON)."""
    loop = Loop(stack, scenario)
    stack.clean(NAMESPACE)  # a fresh workload: chanscale owns the replicas of a previous run's worker
    scenario.KubectlCluster(stack.kubectl).apply(loop.sc.manifests(with_simulator=True), NAMESPACE)
    stack.must("-n", NAMESPACE, "rollout", "status", "deployment/chanscale-sim", "--timeout=300s")
    threads = [threading.Thread(target=f, daemon=True) for f in (loop.watch, loop.poll_backlog)]
    for th in threads:
        th.start()
    began = time.time()
    try:
        loop.set_rate(LOW)
        plan = []
        for i in range(steps):
            plan.append(loop.step())
            print(
                f"[kind_loop] step {i + 1}/{steps}: {analyse_step(*plan[-1], loop.events, [], loop.backlog)}",
                flush=True,
            )
        samples = loop.prom_raw(
            f'chanscale_channel_backlog{{namespace="{NAMESPACE}",channel="{CHANNEL}"}}', int(time.time() - began) + 60
        )
        ends = [t for t, _ in plan[1:]] + [float("inf")]
        rows = [
            analyse_step(t, pre, loop.events, samples, loop.backlog, end) | {"step": i}
            for i, ((t, pre), end) in enumerate(zip(plan, ends, strict=True))
        ]
        raw = {"events": loop.events, "backlog": loop.backlog, "prometheus_backlog": samples, "steps": plan}
        return rows, raw
    finally:
        loop.stop.set()
        stack.kubectl("-n", NAMESPACE, "delete", "workerpools.chanscale.dev", "--all", "--timeout=120s")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--steps", type=int, default=None, help="steps to measure (default 10, 3 with --quick)")
    p.add_argument("--keep", action="store_true", help="keep a cluster this run created (CHANSCALE_E2E_KEEP=1)")
    args = p.parse_args(argv)
    steps = args.steps or (3 if args.quick else 10)
    kindstack = _load("kindstack")
    scenario = _load("scenario")
    stack = kindstack.KindStack()
    created = not stack.cluster_ready()
    try:
        kindstack.bring_up(stack)
    except kindstack.E2EError as e:
        print(f"kind_loop: the cluster is not available (run `make e2e` once, or check Docker):\n{e}", file=sys.stderr)
        return 1
    node = json.loads(stack.must("get", "nodes", "-o", "json"))["items"][0]["status"]["nodeInfo"]
    values = yaml.safe_load((kindstack.MANIFESTS / "chart-values.yaml").read_text())
    t_start = time.perf_counter()
    try:
        rows, raw = run(stack, scenario, steps)
    finally:
        if created and not (args.keep or stack.keep):
            stack.down()
    meta = {
        "command": "python -m bench.kind_loop" + (" --quick" if args.quick else ""),
        "machine": machine(),
        "node": f"Kubernetes {node.get('kubeletVersion', '?')}, {node.get('containerRuntimeVersion', '?')}",
        "tick": values["operator"]["tick"],
        "bring_up": ", ".join(f"{k.removeprefix('e2e: ')} {v:.0f} s" for k, v in stack.timings.items()) or "reused",
        "wall_seconds": round(time.perf_counter() - t_start, 1),
    }
    summary = summarise(rows)
    md = markdown(summary, rows, meta)
    publish(args, "kind_loop", md, {"meta": meta, "summary": summary, "rows": rows, "raw": raw})
    print(md)
    return 0 if all(r["drained_s"] is not None for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
