"""Reaction time in the real loop: backlog step visible in Prometheus → Deployment spec.replicas patched.

    python -m bench.reaction_time            # 24 pools, one ×5 step each (steps staggered by ~7 s)
    python -m bench.reaction_time --quick    # CI: 3 pools (~2.5 min, most of it waiting for rate() windows)

Real components on 127.0.0.1: etcd + kube-apiserver + kube-controller-manager (LocalControlPlane), Prometheus
scraping every 5 s, OPA (``chanscale run --opa local``, the packaged policies), ``chanscale run`` with its
default 10 s tick, and ``chanscale sim`` whose channels follow their Deployment's spec.replicas (no kubelet:
pods stay Pending, the simulator starts a worker 5 s after the replica count rises).

Each pool gets exactly one step (arrival rate ×5 at a random phase against the scrape and tick clocks), so
steps are independent and need no scale-down in between (which the 300 s stabilisation would make slow).
Measured per step:
- **visible**: timestamp of the first Prometheus sample after the step whose backlog ≥ 20 (scrape time);
- **patched**: wall time the Deployment watch delivered the first spec.replicas increase after the step;
- **reaction** = patched − visible; **end-to-end** = patched − step; **drained** = time from the step until
  the simulator's true backlog is back to ≤ 10 after its peak.
- **deciding sample → patched** (a refinement, reported beside the issue's definition, not instead of it): the
  issue's "visible" is the first sample with backlog ≥ 20, which the model may rightly find too little to add a
  worker for (one more scrape shows whether it is a step or noise). The sample the scale-up was decided on is the
  last one scraped before the patch; this interval is patched − that sample's scrape time, and **first sample
  ignored** counts the steps where it is a later sample than the first visible one.

``--direct`` runs the opt-in direct path (chanscale.direct): the Deployments' pods carry the direct-metrics label,
one pod per Deployment is patched Ready at 127.0.0.1 with the simulator's port (no kubelet here; the simulator
serves every channel's gauge, so exactly one Ready pod per pool reads it once), the pools set
``spec.metrics.direct.enabled`` and the operator runs with ``--direct-metrics``. The backlog is then read from the
"pods" every 2 s without waiting for a scrape, so step → patched is the interval to compare.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chanscale.direct import LABEL

from .common import add_common_args, fig_dir, machine, machine_line, publish, pyplot, step_percentiles
from .realloop import Stack, deployment, worker_pool

SERVICE_RATE = 20.0
LOW, HIGH = 20.0, 100.0
VISIBLE_BACKLOG = 20
DRAINED_BACKLOG = 10


def analyse(
    steps: dict[str, float],
    pre: dict[str, int],
    events: list[tuple[float, str, int]],
    samples: dict[str, list[tuple[float, float]]],
    states: list[tuple[float, str, float]],
) -> list[dict[str, Any]]:
    """Per step: visible, patched, drained times (see the module docstring)."""
    rows = []
    for i, (ch, t_step) in enumerate(sorted(steps.items(), key=lambda kv: kv[1])):
        dep = "w" + ch[1:]
        vis = next((ts for ts, v in samples.get(ch, []) if ts >= t_step and v >= VISIBLE_BACKLOG), None)
        patch = next(((t, n) for t, name, n in events if name == dep and t >= t_step and n > pre[dep]), None)
        deciding = None if patch is None else max((ts for ts, _ in samples.get(ch, []) if ts <= patch[0]), default=None)
        series = [(t, b) for t, c, b in states if c == ch and t >= t_step]
        drained = None
        if series:
            peak_t = max(series, key=lambda x: x[1])[0]
            drained = next((t for t, b in series if t >= peak_t and b <= DRAINED_BACKLOG), None)
        rows.append(
            {
                "step": i,
                "channel": ch,
                "step_time": t_step,
                "visible_after_step_s": None if vis is None else vis - t_step,
                "reaction_s": None if vis is None or patch is None else patch[0] - vis,
                "deciding_s": None if deciding is None or patch is None else patch[0] - deciding,
                "first_ignored": None if deciding is None or vis is None else deciding > vis,
                "end_to_end_s": None if patch is None else patch[0] - t_step,
                "replicas_before": pre[dep],
                "replicas_first_patch": None if patch is None else patch[1],
                "drained_s": None if drained is None else drained - t_step,
                "peak_backlog": max((b for _, b in series), default=0),
            }
        )
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return step_percentiles(rows, ("visible_after_step_s", "reaction_s", "deciding_s", "end_to_end_s", "drained_s"))


def markdown(summary: dict[str, Any], rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"Obtained with `{meta['command']}` on {machine_line(meta['machine'])}: {summary['steps']} steps "
        f"({LOW:g} → {HIGH:g} msgs/s, μ = {SERVICE_RATE:g}/s per worker), Prometheus scrape {meta['scrape']}, "
        f"operator tick {meta['tick']:g} s, OPA {meta['opa']}"
        f"{', direct path (pods read every 2 s)' if meta.get('direct') else ''}; control plane up in "
        f"{meta['timings'].get('control_plane_s', 0):.0f} s. Percentiles from this one run.",
        "",
        "| interval | n | p50 s | p95 s | max s |",
        "|---|---|---|---|---|",
    ]
    names = {
        "visible_after_step_s": "step → visible in Prometheus",
        "reaction_s": "visible → spec.replicas patched",
        "deciding_s": "deciding sample → patched (refined)",
        "end_to_end_s": "step → patched",
        "drained_s": "step → backlog drained",
    }
    for key, label in names.items():
        s = summary[key]
        mx = "–" if s["max"] is None else f"{s['max']:.1f}"
        lines.append(f"| {label} | {s['n']} | {s['p50']:.1f} | {s['p95']:.1f} | {mx} |")
    ignored = [r["first_ignored"] for r in rows if r.get("first_ignored") is not None]
    if ignored:
        lines += [
            "",
            f"First sample ignored: in {sum(ignored)} of {len(ignored)} steps the scale-up was decided on a later "
            "sample than the first visible one (backlog ≥ 20 that the model did not yet scale for).",
        ]
    if meta.get("direct"):
        counts = ", ".join(f"{k} {v:g}" for k, v in sorted(meta.get("direct_readings", {}).items())) or "none"
        lines += ["", f"Direct readings by reason (operator metric chanscale_direct_readings_total): {counts}."]
    firsts = [r["replicas_first_patch"] for r in rows if r["replicas_first_patch"] is not None]
    if firsts:
        lines += [
            "",
            f"First patch: from {statistics.median(r['replicas_before'] for r in rows):g} to a median of "
            f"{statistics.median(firsts):g} replicas (the steady state for {HIGH:g} msgs/s needs 6-7).",
        ]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, meta: dict[str, Any]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    for key, label in (
        ("visible_after_step_s", "step → visible"),
        ("reaction_s", "visible → patched"),
        ("end_to_end_s", "step → patched"),
        ("drained_s", "step → drained"),
    ):
        xs = sorted(r[key] for r in rows if r[key] is not None)
        if xs:
            ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=label)
    ax.set_xlabel("seconds")
    ax.set_ylabel("fraction of steps")
    ax.legend(fontsize=8)
    ax.set_title(f"Reaction time, real loop — `{meta['command']}` on {machine_line(meta['machine'])}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _direct_deployment(name: str, replicas: int) -> Any:
    d = deployment(name, replicas)
    d.spec.template.metadata.labels[LABEL] = "true"
    return d


def run_bench(
    pools: int, spacing: float, tick: float, scrape: str, opa: str, workdir: Path, direct: bool = False
) -> dict[str, Any]:
    rng = random.Random(1)
    with Stack(workdir=workdir, scrape_interval=scrape, tick=tick, opa=opa) as st:
        st.start_cluster()
        names = [(f"c{i}", f"w{i}") for i in range(pools)]
        st.create_pools([], [(_direct_deployment if direct else deployment)(w, 2) for _, w in names])
        st.start_sim(
            [
                {
                    "namespace": st.namespace,
                    "channel": c,
                    "deployment": w,
                    "serviceRate": SERVICE_RATE,
                    "startupDelaySeconds": 5.0,
                    "arrivalRate": LOW,
                    "replicas": 2,
                }
                for c, w in names
            ],
            follow_deployments=True,
        )
        bodies = [worker_pool(f"p{i}", c, w, 1.0, SERVICE_RATE, 50) for i, (c, w) in enumerate(names)]
        if direct:
            st.pretend_one_ready_pod_each([w for _, w in names], st.sim_port)
            for b in bodies:
                b["spec"]["metrics"] = {"direct": {"enabled": True}}
        st.start_operator(["--direct-metrics"] if direct else None)
        st.create_pools(bodies, [])
        began = time.time()
        # Settle: the 1m rate() window must fill and the replicas must stop moving.
        time.sleep(75)
        last, stable_since = st.deployment_replicas(), time.time()
        while time.time() - stable_since < 15 and time.time() - began < 240:
            time.sleep(2)
            now = st.deployment_replicas()
            if now != last:
                last, stable_since = now, time.time()
        pre = dict(last)
        duration = pools * spacing + 100
        stop_at = time.time() + duration
        events: list[tuple[float, str, int]] = []
        states: list[tuple[float, str, float]] = []

        def watcher() -> None:
            events.extend(st.watch_deployments(stop_at))

        def poller() -> None:
            while time.time() < stop_at:
                t = time.time()
                for c in st.sim_state()["channels"]:
                    states.append((t, c["channel"], float(c["backlog"])))
                time.sleep(0.25)

        threads = [threading.Thread(target=watcher, daemon=True), threading.Thread(target=poller, daemon=True)]
        for th in threads:
            th.start()
        time.sleep(1.0)
        steps: dict[str, float] = {}
        t0 = time.time()
        for i, (c, _w) in enumerate(names):
            time.sleep(max(0.0, t0 + i * spacing + rng.uniform(0, spacing * 0.5) - time.time()))
            steps[c] = time.time()
            st.sim_control(c, HIGH)
        for th in threads:
            th.join(timeout=duration + 60)
        samples = st.prom_raw(f'chanscale_channel_backlog{{namespace="{st.namespace}"}}', f"{int(duration) + 120}s")
        rows = analyse(steps, pre, events, samples, states)
        readings: dict[str, float] = {}
        for name, labels, value in st.operator_metrics():
            if name == "chanscale_direct_readings_total":
                readings[labels.get("reason", "")] = value
        return {"rows": rows, "timings": dict(st.timings), "direct_readings": readings}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--pools", type=int, default=None, help="steps (one pool each); default 24, 3 with --quick")
    p.add_argument("--spacing", type=float, default=7.0, help="seconds between steps")
    p.add_argument("--tick", type=float, default=10.0, help="operator --tick")
    p.add_argument("--scrape", default="5s", help="Prometheus scrape interval")
    p.add_argument("--opa", default="local", help="operator --opa (local|none) or an OPA URL")
    p.add_argument("--direct", action="store_true", help="the opt-in direct path (see the module docstring)")
    args = p.parse_args(argv)
    pools = args.pools or (3 if args.quick else 24)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="chanscale-bench-rt-") as tmp:
        res = run_bench(pools, args.spacing, args.tick, args.scrape, args.opa, Path(tmp), direct=args.direct)
    cmd = "python -m bench.reaction_time" + (" --quick" if args.quick else "") + (" --direct" if args.direct else "")
    meta = {
        "command": cmd,
        "machine": machine(),
        "scrape": args.scrape,
        "tick": args.tick,
        "opa": args.opa,
        "direct": args.direct,
        "direct_readings": res["direct_readings"],
        "timings": res["timings"],
        "wall_seconds": time.perf_counter() - t_start,
    }
    summary = summarise(res["rows"])
    md = markdown(summary, res["rows"], meta)
    name = "reaction_time_direct" if args.direct else "reaction_time"
    publish(
        args,
        name,
        md,
        {"meta": meta, "summary": summary, "rows": res["rows"]},
    )
    plot(res["rows"], fig_dir(args) / f"{name}.png", meta)
    print(md)
    missing = [r["channel"] for r in res["rows"] if r["end_to_end_s"] is None]
    if missing:
        print(f"warning: no scale-up observed for {missing}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
