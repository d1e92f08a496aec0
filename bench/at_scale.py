"""The operator at scale: 10, 100, 1000 WorkerPools against the real API server, Prometheus and OPA.

    python -m bench.at_scale                 # 10, 100 and 1000 pools, 120 s measured each
    python -m bench.at_scale --quick         # CI: 10 pools, 30 s measured (~1.5 min with start-up)

One local control plane and Prometheus (5 s scrape) for the whole run; for each pool count a fresh namespace,
N Deployments (1 replica; by default the controller-manager runs without its deployment and replicaset controllers,
so they are fake Deployments: no ReplicaSets, no Pending pods — ``--real-deployments`` keeps them),
``chanscale sim`` serving N channels (μ = 20/s, three
simulated workers each; 4 in 5 steady at 10 msgs/s, so their decisions are NoChange; every 5th alternates
10 ↔ 40 msgs/s every 120 s with a 20 s scale-down window, so scale patches and policy calls happen at every size), and a
fresh ``chanscale run --opa local``
(default 10 s tick) watching that namespace. Once every pool has been evaluated once (the first pass: every pool
writes its first status), a warm-up (rate() windows fill, first scale-ups settle), then for ``--window`` seconds:
- the operator's /metrics is sampled every 2 s, ``chanscale_decisions_total`` alone (prometheus_client's ``name[]``
  filter: rendering every per-pool series every 2 s would cost the operator more CPU than the sampler measures):
  per-pool decision counters give each pool's evaluation gaps;
- deltas of ``chanscale_prometheus_queries_total``, ``chanscale_kubernetes_requests_total``,
  ``chanscale_status_writes_total`` and the API server's ``apiserver_request_total`` give requests per tick;
  per pool, status writes per minute of the quiet pools (the steady 4 in 5, whose decision never changes) and of the
  churning ones;
- latency percentiles (bucket-interpolated like histogram_quantile): the *decision*,
  ``chanscale_verdict_duration_seconds`` (signals + decision + policy gate, before any write), and the whole
  *evaluation*, ``chanscale_decision_duration_seconds`` (the same plus the scale write, the status write and its
  wait for the API server); ``chanscale_policy_duration_seconds`` for the policy call alone;
- /proc gives the operator's RSS and CPU (the supervised OPA child separately); the load average is recorded;
- where the machine's cores went: each program's CPU over the window (etcd, the API server, the controller-manager,
  Prometheus, the simulator, the operators, their OPAs) and the machine's busy, steal and idle time from /proc/stat,
  all in cores; and the API server's own latency for the operators' writes (``apiserver_request_duration_seconds``
  of PATCH on workerpools/status and deployments/scale), to tell a slow server from a wait in the client.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kubernetes import client

from .common import add_common_args, fig_dir, machine, machine_line, publish, pyplot
from .promsim import bucket_quantile
from .realloop import Stack, deployment, metric_sum, parse_metrics, process_usage, worker_pool

Samples = list[tuple[str, dict[str, str], float]]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _tree_usage(pid: int) -> dict[str, float]:
    """RSS and CPU of the operator and, separately, of its child processes (the supervised OPA)."""
    rss, cpu = process_usage(pid)
    c_rss = c_cpu = 0.0
    for child in _children(pid):
        try:
            r, c = process_usage(child)
        except OSError:
            continue
        c_rss, c_cpu = c_rss + r, c_cpu + c
    return {"rss_mib": rss, "cpu_s": cpu, "child_rss_mib": c_rss, "child_cpu_s": c_cpu}


def _machine_ticks() -> dict[str, float]:
    """The machine's CPU time so far, in seconds, from /proc/stat: busy (user+nice+system+irq+softirq), steal, idle
    (+ iowait). Steal is time the hypervisor gave the cores to somebody else."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = f
    return {"busy": (user + nice + system + irq + softirq) / hz, "steal": steal / hz, "idle": (idle + iowait) / hz}


def _program_cpu(st: Stack, operators: dict[str, float]) -> dict[str, float]:
    """CPU seconds so far of each program of the bench, keyed by name; the operators' and their OPAs' from
    ``operators``, the replicas' summed usage that measure() already read."""
    named: list[tuple[str, int | None]] = [
        (p.name, p.pid) for group in (st.cp, st.prom) if group is not None for p in group.processes
    ]
    if st.sim is not None:
        named.append(("simulator", st.sim.pid))
    out: dict[str, float] = defaultdict(float)
    for name, pid in named:
        if pid is not None:
            with contextlib.suppress(OSError):
                out[name] += process_usage(pid)[1]
    out["operators"], out["operators' OPAs"] = operators["cpu_s"], operators["child_cpu_s"]
    return out


def _cores(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    return {k: round((after[k] - before.get(k, 0.0)) / seconds, 3) for k in after}


def _write_latency(before: Samples, after: Samples, resource: str, subresource: str, q: float) -> float | None:
    """The API server's own latency quantile for PATCH on ``resource/subresource`` over the window."""
    match = {"verb": "PATCH", "resource": resource, "subresource": subresource}
    return hist_quantile(before, after, "apiserver_request_duration_seconds", q, match)


def hist_quantile(
    before: Samples, after: Samples, name: str, q: float, match: dict[str, str] | None = None
) -> float | None:
    """histogram_quantile over the delta of a histogram between two scrapes; with ``match``, of the series whose
    labels have those values (a missing label counts as ""). None when nothing was observed (bucket_quantile)."""

    def buckets(samples: Samples) -> dict[float, float]:
        out: dict[float, float] = defaultdict(float)
        for n, lbl, v in samples:
            if n == f"{name}_bucket" and all(lbl.get(k, "") == want for k, want in (match or {}).items()):
                out[float(lbl["le"])] += v
        return out

    b0, b1 = buckets(before), buckets(after)
    les = sorted(b1)
    counts = [b1[le] - b0.get(le, 0.0) for le in les]
    return bucket_quantile(q, [le for le in les if le != float("inf")], counts)


def pool_gaps(series: list[tuple[float, dict[str, float]]]) -> dict[str, list[float]]:
    """Per pool: seconds between successive observed increases of its decision counter."""
    last_inc: dict[str, float] = {}
    prev: dict[str, float] = {}
    gaps: dict[str, list[float]] = defaultdict(list)
    for t, counts in series:
        for pool, c in counts.items():
            if pool in prev and c > prev[pool]:
                if pool in last_inc:
                    gaps[pool].append(t - last_inc[pool])
                last_inc[pool] = t
            prev[pool] = c
    return gaps


def _decisions_by_pool(samples: Samples) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for n, lbl, v in samples:
        if n == "chanscale_decisions_total":
            out[lbl.get("pool", "")] += v
    return out


def _by_pool(samples: Samples, name: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for n, lbl, v in samples:
        if n == name:
            out[lbl.get("pool", "")] += v
    return out


def _per_pool_minute(before: Samples, after: Samples, name: str, pools: list[str], seconds: float) -> float | None:
    """Mean increase of a per-pool counter, per pool and per minute, over ``pools``."""
    if not pools:
        return None
    b, a = _by_pool(before, name), _by_pool(after, name)
    return sum(a.get(p, 0.0) - b.get(p, 0.0) for p in pools) / len(pools) / seconds * 60


def _outcomes(before: Samples, after: Samples, ticks: float) -> dict[str, float]:
    """Decisions per tick by outcome (ScaleUp, NoChange, Blocked, ...): how many proposed a change."""
    out: dict[str, float] = defaultdict(float)
    for sign, samples in ((-1.0, before), (1.0, after)):
        for n, lbl, v in samples:
            if n == "chanscale_decisions_total":
                out[lbl.get("outcome", "")] += sign * v
    return {k: v / ticks for k, v in sorted(out.items()) if v > 0}


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _apiserver_requests(samples: Samples) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for n, lbl, v in samples:
        if n == "apiserver_request_total":
            out[lbl.get("resource", "") or "-"] += v
    return out


#: Every CHURN-th pool (1 in 5) alternates between 10 and 40 msgs/s (120 s each, longer than the 1m rate() window so
#: each half is seen in full; phase by index) and scales down after a 20 s window, so scale patches and policy
#: calls happen at every size; the others are steady (NoChange).
CHURN = 5
PERIOD_HALF = 120


def _channel(ns: str, i: int, channel: str) -> dict[str, Any]:
    ch: dict[str, Any] = {"namespace": ns, "channel": channel, "serviceRate": 20.0, "replicas": 3}
    if i % CHURN == 0:
        shift = (i // CHURN * 13) % PERIOD_HALF
        ch["trace"] = (
            [[0, 10.0], [shift, 40.0], [shift + PERIOD_HALF, 10.0]] if shift else [[0, 40.0], [PERIOD_HALF, 10.0]]
        )
        ch["loopSeconds"] = 2 * PERIOD_HALF
    else:
        ch["arrivalRate"] = 10.0
    return ch


def _pool(i: int, channel: str, target: str) -> dict[str, Any]:
    pool = worker_pool(f"p{i}", channel, target, 1.0, 20.0, 10)
    if i % CHURN == 0:
        pool["spec"]["behavior"] = {"scaleDown": {"stabilizationWindowSeconds": 20}}
    return pool


def measure(
    st: Stack,
    pools: int,
    window: float,
    warmup: float,
    tick: float,
    extra: list[str] | None = None,
    replicas: int = 1,
    settle_timeout: float = 900.0,
    operator_last: bool = False,
) -> dict[str, Any]:
    """Run one pool count in its own namespace and return the measurements. With ``replicas`` > 1, that many
    operators run (``extra`` carries --shards/--leader-elect); their metrics are summed, their usage too. With
    ``operator_last`` the operators start once every pool and Deployment exists, as after a restart or a failover
    (kopf's initial listings then hold them all), and the first pass counts from their start."""
    ns = f"scale-{pools}"
    st.namespace = ns
    client.CoreV1Api(st.api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    t_setup = time.monotonic()
    names = [(f"c{i}", f"w{i}") for i in range(pools)]
    st.create_pools([], [deployment(w, 1) for _, w in names])
    st.start_sim([_channel(ns, i, c) for i, (c, _) in enumerate(names)], follow_deployments=False)
    if operator_last:
        st.create_pools([_pool(i, c, w) for i, (c, w) in enumerate(names)], [])
    t_start = time.monotonic()
    ops = []
    for _ in range(replicas):
        st.start_operator([*(extra or []), *(["--lease-namespace", ns] if replicas > 1 else [])])
        assert st.operator is not None and st.operator.proc is not None and st.operator.proc.pid is not None
        ops.append(st.operator)
    pids = [op.proc.pid for op in ops if op.proc and op.proc.pid]

    def metrics(*names: str) -> Samples:
        # every per-pool series of thousands of pools takes the busy operator more than the default 5 s to render
        return [s for op in ops for s in parse_metrics(op.metrics_text(names, timeout=5 if names else 120))]

    def decided() -> dict[str, float]:
        return _decisions_by_pool(metrics("chanscale_decisions_total"))

    def usage() -> dict[str, float]:
        each = [_tree_usage(pid) for pid in pids]
        out = {k: sum(u[k] for u in each) for k in each[0]}
        out["max_rss_mib"] = max(u["rss_mib"] for u in each)
        return out

    if not operator_last:
        st.create_pools([_pool(i, c, w) for i, (c, w) in enumerate(names)], [])
    setup_s = time.monotonic() - t_setup
    t_pass = t_start if operator_last else time.monotonic()
    first_pass = _first_pass(decided, pools, t_pass, settle_timeout)
    first_pass_s = time.monotonic() - t_pass
    time.sleep(warmup)
    load_before = _load()
    series: list[tuple[float, dict[str, float]]] = []
    before = metrics()
    raw_api_before = st.apiserver_metrics()
    api_before = _apiserver_requests(raw_api_before)
    use_before = usage()
    cpu_before, machine_before = _program_cpu(st, use_before), _machine_ticks()
    t0 = time.monotonic()
    stop = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                series.append((time.monotonic(), decided()))
            stop.wait(2.0)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    time.sleep(window)
    stop.set()
    th.join(timeout=30)
    elapsed = time.monotonic() - t0
    after = metrics()
    raw_api_after = st.apiserver_metrics()
    api_after = _apiserver_requests(raw_api_after)
    use_after = usage()
    cpu_after, machine_after = _program_cpu(st, use_after), _machine_ticks()
    ticks = elapsed / tick
    gaps = pool_gaps(series)
    all_gaps = sorted(g for gs in gaps.values() for g in gs)
    late = sum(1 for gs in gaps.values() if gs and max(gs) > tick * 1.5 + 2.0)
    decided_before = _decisions_by_pool(before)  # once: per pool it was quadratic (minutes at 5 000 pools)
    never = pools - sum(1 for p, c in _decisions_by_pool(after).items() if c > decided_before.get(p, 0))

    def delta(name: str) -> float:
        return metric_sum(after, name) - metric_sum(before, name)

    api_delta = {k: api_after.get(k, 0.0) - api_before.get(k, 0.0) for k in api_after}
    quiet = [f"p{i}" for i in range(pools) if i % CHURN]
    churning = [f"p{i}" for i in range(pools) if not i % CHURN]
    res = {
        "pools": pools,
        "setup_s": setup_s,
        "first_pass_s": first_pass_s,
        "first_pass_from": "operator start" if operator_last else "pools created (operator running)",
        **first_pass,
        "load_average_before": load_before,
        "load_average_after": _load(),
        "window_s": elapsed,
        "ticks": ticks,
        "decisions": delta("chanscale_decisions_total"),
        "decisions_per_pool_per_tick": delta("chanscale_decisions_total") / max(pools, 1) / ticks,
        "pools_not_evaluated": never,
        "pools_with_a_gap_over_1.5_intervals": late,
        "gap_p50_s": all_gaps[len(all_gaps) // 2] if all_gaps else None,
        "gap_p99_s": all_gaps[int(len(all_gaps) * 0.99)] if all_gaps else None,
        "gap_max_s": all_gaps[-1] if all_gaps else None,
        "prometheus_queries_per_tick": delta("chanscale_prometheus_queries_total") / ticks,
        "operator_kube_requests_per_tick": delta("chanscale_kubernetes_requests_total") / ticks,
        "status_writes_per_tick": delta("chanscale_status_writes_total") / ticks,
        "status_writes_per_pool_per_minute": delta("chanscale_status_writes_total") / max(pools, 1) / elapsed * 60,
        "status_writes_per_quiet_pool_per_minute": _per_pool_minute(
            before, after, "chanscale_status_writes_total", quiet, elapsed
        ),
        "status_writes_per_churning_pool_per_minute": _per_pool_minute(
            before, after, "chanscale_status_writes_total", churning, elapsed
        ),
        "replicas": replicas,
        "max_replica_rss_mib": use_after["max_rss_mib"],
        "apiserver_requests_per_tick": sum(api_delta.values()) / ticks,
        "apiserver_requests_per_tick_by_resource": {k: v / ticks for k, v in sorted(api_delta.items()) if v > 0},
        "decision_p50_s": hist_quantile(before, after, "chanscale_verdict_duration_seconds", 0.5),
        "decision_p99_s": hist_quantile(before, after, "chanscale_verdict_duration_seconds", 0.99),
        "evaluation_p50_s": hist_quantile(before, after, "chanscale_decision_duration_seconds", 0.5),
        "evaluation_p99_s": hist_quantile(before, after, "chanscale_decision_duration_seconds", 0.99),
        "prometheus_query_p50_s": hist_quantile(before, after, "chanscale_prometheus_query_duration_seconds", 0.5),
        "prometheus_query_p99_s": hist_quantile(before, after, "chanscale_prometheus_query_duration_seconds", 0.99),
        "loop_lag_p50_s": hist_quantile(before, after, "chanscale_event_loop_lag_seconds", 0.5),
        "loop_lag_p99_s": hist_quantile(before, after, "chanscale_event_loop_lag_seconds", 0.99),
        "policy_calls_per_tick": delta("chanscale_policy_duration_seconds_count") / ticks,
        "decisions_per_tick_by_outcome": _outcomes(before, after, ticks),
        "policy_p50_s": hist_quantile(before, after, "chanscale_policy_duration_seconds", 0.5),
        "policy_p99_s": hist_quantile(before, after, "chanscale_policy_duration_seconds", 0.99),
        "operator_rss_mib": use_after["rss_mib"],
        "operator_cpu_percent": 100.0 * (use_after["cpu_s"] - use_before["cpu_s"]) / elapsed,
        "opa_rss_mib": use_after["child_rss_mib"],
        "opa_cpu_percent": 100.0 * (use_after["child_cpu_s"] - use_before["child_cpu_s"]) / elapsed,
        "cores_by_program": _cores(cpu_before, cpu_after, elapsed),
        "machine_cores": _cores(machine_before, machine_after, elapsed),
        **{
            f"apiserver_patch_{what}_p{int(q * 100)}_s": _write_latency(raw_api_before, raw_api_after, res, sub, q)
            for what, res, sub in (("status", "workerpools", "status"), ("scale", "deployments", "scale"))
            for q in (0.5, 0.99)
        },
    }
    for op in ops:
        op.stop()
    st.operator = None
    if st.sim:
        st.sim.stop()
        st.sim = None
    assert st.prom is not None
    st.prom.set_targets([])
    client.CoreV1Api(st.api).delete_namespace(ns)
    return res


def _first_pass(decided: Callable[[], dict[str, float]], pools: int, t0: float, timeout: float) -> dict[str, Any]:
    """Wait until every pool has been evaluated (and written) once; when the first pool and the last were, and
    how many were by the timeout."""
    first: float | None = None
    done = 0
    while time.monotonic() - t0 < timeout:
        with contextlib.suppress(OSError):
            done = sum(1 for c in decided().values() if c > 0)
            if done and first is None:
                first = time.monotonic() - t0
            if done >= pools:
                break
        time.sleep(2.0)
    return {"first_evaluation_s": first, "first_pass_complete": done >= pools, "pools_in_first_pass": done}


def _f(v: Any, nd: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"Obtained with `{meta['command']}` on {machine_line(meta['machine'])}; everything (etcd, kube-apiserver, "
        f"kube-controller-manager, Prometheus, OPA, simulator, operator) shares this machine "
        f"({meta.get('deployments', 'real')} Deployments). Operator tick "
        f"{meta['tick']:g} s, Prometheus scrape 5 s, {meta['window']:g} s measured per row after the first pass "
        f"(every pool evaluated once) and a {meta['warmup']:g} s warm-up; figures from one run. Decision: signals, "
        "decision and policy gate, before any write; evaluation: the same plus the scale and status writes. "
        "Status writes per pool per minute: all pools / the quiet 4 in 5 (nothing changes) / the churning 1 in 5.",
        "",
        "| pools | evaluations / pool / tick | pools never evaluated | pools with a gap > 1.5 ticks | gap p50 / p99 / "
        "max s | Prometheus queries / tick | operator API requests / tick | status writes / tick | status writes / "
        "pool / min (all / quiet / churning) | API server requests / tick (all clients) | decision p50 / p99 ms | "
        "evaluation p50 / p99 ms | policy p50 / p99 ms | operator RSS MiB | operator CPU % | OPA RSS MiB / CPU % "
        "| load average (1/5/15 min) |",
        "|" + "---|" * 17,
    ]
    for r in rows:

        def ms(k: str, row: dict[str, Any] = r) -> str:
            return "–" if row[k] is None else f"{1000 * row[k]:.1f}"

        lines.append(
            f"| {r['pools']} | {_f(r['decisions_per_pool_per_tick'])} | {r['pools_not_evaluated']} | "
            f"{r['pools_with_a_gap_over_1.5_intervals']} | {_f(r['gap_p50_s'], 1)} / {_f(r['gap_p99_s'], 1)} / "
            f"{_f(r['gap_max_s'], 1)} | {_f(r['prometheus_queries_per_tick'], 1)} | "
            f"{_f(r['operator_kube_requests_per_tick'], 1)} | {_f(r['status_writes_per_tick'], 1)} | "
            f"{_f(r['status_writes_per_pool_per_minute'])} / {_f(r.get('status_writes_per_quiet_pool_per_minute'))} / "
            f"{_f(r.get('status_writes_per_churning_pool_per_minute'))} | "
            f"{_f(r['apiserver_requests_per_tick'], 0)} | {ms('decision_p50_s')} / {ms('decision_p99_s')} | "
            f"{ms('evaluation_p50_s')} / {ms('evaluation_p99_s')} | "
            f"{ms('policy_p50_s')} / {ms('policy_p99_s')} | {_f(r['operator_rss_mib'], 0)} | "
            f"{_f(r['operator_cpu_percent'], 0)} | {_f(r['opa_rss_mib'], 0)} / {_f(r['opa_cpu_percent'], 0)} | "
            f"{r.get('load_average_after', '–')} |"
        )
    lines.append("")
    for r in rows:
        lines.append(
            f"- {r['pools']} pools, first pass from {r.get('first_pass_from', 'pools created')}: first evaluation "
            f"{_f(r.get('first_evaluation_s'), 0)} s, every pool evaluated once {_f(r['first_pass_s'], 0)} s"
            + ("" if r.get("first_pass_complete", True) else f" (incomplete: {r.get('pools_in_first_pass')} pools)")
        )
        lines.append(_where_the_cores_went(r, meta["machine"].get("nproc")))
    return "\n".join(lines)


def _where_the_cores_went(r: dict[str, Any], cores: int | None) -> str:
    """One line: each program's cores, the machine's, and the API server's own write latency."""
    by = r.get("cores_by_program") or {}
    m = r.get("machine_cores") or {}
    programs = ", ".join(f"{k} {v:.2f}" for k, v in sorted(by.items(), key=lambda kv: -kv[1]))

    def ms(k: str) -> str:
        return "–" if r.get(k) is None else f"{1000 * r[k]:.0f}"

    return (
        f"- {r['pools']} pools, cores used over the window: {programs or '–'}; the machine: busy "
        f"{m.get('busy', 0):.2f}, steal {m.get('steal', 0):.2f}, idle {m.get('idle', 0):.2f} (of {cores}). "
        f"API server's own PATCH latency p50 / p99 ms: workerpools/status {ms('apiserver_patch_status_p50_s')} / "
        f"{ms('apiserver_patch_status_p99_s')}, deployments/scale {ms('apiserver_patch_scale_p50_s')} / "
        f"{ms('apiserver_patch_scale_p99_s')}"
    )


def plot(rows: list[dict[str, Any]], path: Path, meta: dict[str, Any]) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    n = [r["pools"] for r in rows]
    axes[0].plot(n, [r["prometheus_queries_per_tick"] for r in rows], marker="o", label="Prometheus queries")
    axes[0].plot(n, [r["operator_kube_requests_per_tick"] for r in rows], marker="o", label="operator API requests")
    axes[0].plot(n, [r["status_writes_per_tick"] for r in rows], marker="o", label="status writes")
    axes[0].set_title("per tick", fontsize=9)
    for key, label in (
        ("decision_p50_s", "decision p50"),
        ("decision_p99_s", "decision p99"),
        ("policy_p99_s", "policy p99"),
    ):
        axes[1].plot(n, [1000 * (r[key] or 0) for r in rows], marker="o", label=label)
    axes[1].set_title("latency, ms", fontsize=9)
    axes[2].plot(n, [r["operator_cpu_percent"] for r in rows], marker="o", label="operator CPU %")
    axes[2].plot(n, [r["operator_rss_mib"] for r in rows], marker="o", label="operator RSS MiB")
    axes[2].set_title("resources", fontsize=9)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("WorkerPools")
        ax.legend(fontsize=7)
    fig.suptitle(f"Operator at scale — `{meta['command']}` on {machine_line(meta['machine'])}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--pools", default=None, help="comma-separated pool counts (default 10,100,1000; 10 with --quick)")
    p.add_argument("--window", type=float, default=None, help="seconds measured per pool count (120; 30 quick)")
    p.add_argument("--warmup", type=float, default=None, help="seconds before measuring (75; 20 quick)")
    p.add_argument("--tick", type=float, default=10.0)
    p.add_argument("--opa", default="local")
    p.add_argument("--scheduler", default="ticker", choices=["ticker", "timers"], help="the operator's --scheduler")
    p.add_argument("--replicas", type=int, default=1, help="operator replicas (with --shards: each takes a share)")
    p.add_argument("--shards", type=int, default=1, help="the operators' --shards (Lease-owned; chanscale.leader)")
    p.add_argument("--operator-arg", action="append", default=[], help="extra `chanscale run` argument (repeatable)")
    p.add_argument(
        "--real-deployments",
        action="store_true",
        help="keep the controller-manager's deployment and replicaset controllers (ReplicaSets, Pending pods)",
    )
    p.add_argument(
        "--tracemalloc",
        metavar="FILE",
        help="profile the operator's memory (tracemalloc; slows it, so its RSS/CPU rows do not count) into FILE",
    )
    p.add_argument("--gclog", metavar="FILE", help="log the operator's garbage-collector pauses into FILE")
    p.add_argument(
        "--operator-last",
        action="store_true",
        help="start the operators once the pools exist (a restart, a failover): the first pass counts from their start",
    )
    p.add_argument("--settle-timeout", type=float, default=900.0, help="seconds allowed for the first pass (900)")
    args = p.parse_args(argv)
    if args.gclog:
        os.environ["CHANSCALE_GCLOG"] = str(Path(args.gclog).resolve())  # inherited by the operator
    counts = [int(x) for x in (args.pools or ("10" if args.quick else "10,100,1000")).split(",")]
    window = args.window or (30.0 if args.quick else 120.0)
    warmup = args.warmup or (20.0 if args.quick else 75.0)
    if args.tracemalloc:
        os.environ["CHANSCALE_TRACEMALLOC"] = str(Path(args.tracemalloc).resolve())  # inherited by the operator
    rows = []
    controllers_off = () if args.real_deployments else ("deployment", "replicaset")
    t_start = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="chanscale-bench-scale-") as tmp,
        Stack(workdir=Path(tmp), tick=args.tick, opa=args.opa, controllers_off=controllers_off) as st,
    ):
        st.start_cluster()
        for n in counts:
            print(f"measuring {n} pools ...", flush=True)
            extra = ["--scheduler", args.scheduler, "--shards", str(args.shards), *args.operator_arg]
            rows.append(
                measure(
                    st,
                    n,
                    window,
                    warmup,
                    args.tick,
                    extra,
                    replicas=args.replicas,
                    settle_timeout=args.settle_timeout,
                    operator_last=args.operator_last,
                )
            )
            print(rows[-1], flush=True)
    cmd = "python -m bench.at_scale " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {
        "command": cmd,
        "machine": machine(),
        "tick": args.tick,
        "deployments": "real" if args.real_deployments else "fake",
        "window": window,
        "warmup": warmup,
        "wall_seconds": time.perf_counter() - t_start,
    }
    md = markdown(rows, meta)
    publish(args, "at_scale", md, {"meta": meta, "rows": rows})
    plot(rows, fig_dir(args) / "at_scale.png", meta)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
