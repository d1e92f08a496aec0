"""Sizing accuracy: the replicas chanscale's model picks vs the smallest count that meets the P99 in simulation.

    python -m bench.sizing_accuracy            # full grid: 3 λ × 2 μ × 4 service-time shapes × 3 objectives
    python -m bench.sizing_accuracy --quick    # CI: 6 points, fewer messages (~15 s)

For each point:
- **truth**: the smallest worker count whose simulated P99 (enqueue-to-done, ``messages`` messages after a
  warm-up, fixed workers) is within the objective; found by exponential then binary search;
- **model**: the M/M/c latency term of :func:`chanscale.decision.decide` on steady signals (first tick, no
  P99 feedback), and its full recommendation (with the default ``targetUtilization``: 0.8 before issue 12, now 1);
- **closed loop**: the count chanscale settles on after 20 simulated minutes of steady load with Prometheus,
  learning the service-time variability from the observed P99 (median of the last 5 minutes).
The target is |model − truth| ≤ 1 where the M/M/c assumptions hold (exponential service), and the closed loop
within ±1 of the truth for the other shapes.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from chanscale.decision import Observation, PoolState, decide
from chanscale.sim.model import ChannelModel
from chanscale.spec import PoolSpec

from .common import add_common_args, fig_dir, machine, machine_line, publish, pyplot
from .harness import Config, run
from .traces import Trace

SHAPES: dict[str, tuple[str, float]] = {
    "deterministic": ("deterministic", 0.0),
    "lognormal cv 0.5": ("lognormal", 0.5),
    "exponential": ("exponential", 1.0),
    "lognormal cv 2": ("lognormal", 2.0),
}
#: Objectives as multiples of the mean service time 1/μ. The exponential P99 floor is 4.6/μ; far above it the
#: wait tail decays so fast that c = ⌊λ/μ⌋ + 1 already meets the objective, so 5/μ probes the regime near the floor.
SLO_FACTORS = (5.0, 10.0, 25.0)
MAX_WORKERS = 5000


def simulated_p99(lam: float, mu: float, dist: str, cv: float, c: int, messages: int, seed: int = 1) -> float:
    """P99 latency with ``c`` always-ready workers, after a warm-up of 10 % of the messages."""
    m = ChannelModel(
        service_rate=mu, service_dist=dist, service_cv=cv, seed=seed, initial_replicas=c, record_latencies=True
    )
    m.set_arrival_rate(lam)
    warm = 0.1 * messages / lam
    m.advance(warm)
    m.take_latencies()
    m.advance(warm + messages / lam)
    lat = m.take_latencies()
    if len(lat) < 100:
        return math.inf
    return float(np.quantile(np.fromiter((x for _, x in lat), float, len(lat)), 0.99))


def true_minimum(lam: float, mu: float, dist: str, cv: float, slo: float, messages: int) -> int | None:
    """The smallest ``c`` meeting the objective in simulation (None if even ``MAX_WORKERS`` does not)."""
    lo = max(1, math.floor(lam / mu) + 1)  # below this the queue is unstable
    if simulated_p99(lam, mu, dist, cv, lo, messages) <= slo:
        return lo
    hi = lo
    while True:
        hi = min(MAX_WORKERS, max(hi + 1, math.ceil(hi * 1.5)))
        if simulated_p99(lam, mu, dist, cv, hi, messages) <= slo:
            break
        if hi >= MAX_WORKERS:
            return None
        lo = hi
    while hi - lo > 1:  # invariant: lo fails, hi meets
        mid = (lo + hi) // 2
        if simulated_p99(lam, mu, dist, cv, mid, messages) <= slo:
            hi = mid
        else:
            lo = mid
    return hi


def _spec(mu: float, slo: float) -> PoolSpec:
    return PoolSpec.from_dict(
        {
            "channel": "sizing",
            "scaleTargetRef": {"name": "w"},
            "minReplicas": 1,
            "maxReplicas": MAX_WORKERS,
            "slo": {"p99LatencySeconds": slo},
            "model": {"serviceRateHint": mu},
        }
    )


def model_pick(lam: float, mu: float, slo: float) -> tuple[int, int]:
    """(M/M/c latency term, full recommendation) of ``decide`` on steady signals, first tick."""
    current = max(1, math.ceil(lam / mu))
    obs = Observation(
        now=1000.0,
        current_replicas=current,
        ready_replicas=current,
        backlog=0.0,
        arrival_rate=lam,
        processed_rate=lam,
        failed_rate=0.0,
        busy_rate=lam / mu,
        p99_latency=None,
        age_seconds=1.0,
    )
    d = decide(_spec(mu, slo), PoolState(), obs)
    return int(d.sizing["terms"]["latency"]), d.recommendation


def closed_loop(lam: float, mu: float, dist: str, cv: float, slo: float, minutes: int) -> tuple[int, float]:
    """Replicas chanscale settles on under steady load (median of the last 5 minutes) and the P99 it gets."""
    cfg = Config(service_rate=mu, service_dist=dist, service_cv=cv, slo=slo, max_replicas=MAX_WORKERS)
    trace = Trace("steady", f"steady {lam} msgs/s", [lam] * (minutes * 60))
    r = run(trace, "chanscale", 1, cfg, keep_series=True)
    s = r.series
    tail = [d for t, d in zip(s["t"], s["desired"], strict=True) if t >= (minutes - 5) * 60]
    p99s = [x for x in s["minute_p99"][-5:] if not math.isnan(x)]
    return int(statistics.median(tail)), (max(p99s) if p99s else math.nan)


def _point(args: tuple[float, float, str, float, int, int]) -> dict[str, Any]:
    lam, mu, shape, slo_factor, messages, minutes = args
    dist, cv = SHAPES[shape]
    slo = slo_factor / mu
    truth = true_minimum(lam, mu, dist, cv, slo, messages)
    latency_term, recommendation = model_pick(lam, mu, slo)
    loop, loop_p99 = closed_loop(lam, mu, dist, cv, slo, minutes)
    return {
        "lambda": lam,
        "mu": mu,
        "shape": shape,
        "slo": slo,
        "slo_factor": slo_factor,
        "truth": truth,
        "model_latency_term": latency_term,
        "model_recommendation": recommendation,
        "closed_loop": loop,
        "closed_loop_max_minute_p99": loop_p99,
    }


def _err(a: int, truth: int | None) -> str:
    return "unreachable" if truth is None else f"{a - truth:+d}"


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"Obtained with `{meta['command']}` on {machine_line(meta['machine'])}; {meta['messages']} messages per "
        f"truth simulation, {meta['minutes']} min closed loop; wall time {meta['wall_seconds']:.0f} s.",
        "",
        "| λ msgs/s | μ msgs/s | service time | P99 objective | truth | M/M/c term (Δ) | recommendation (Δ) | "
        "closed loop (Δ) | closed-loop worst minute P99 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = r["truth"]
        lines.append(
            f"| {r['lambda']:g} | {r['mu']:g} | {r['shape']} | {r['slo']:.3g} s ({r['slo_factor']:g}/μ) | "
            f"{t if t is not None else 'unreachable'} | "
            f"{r['model_latency_term']} ({_err(r['model_latency_term'], t)}) | "
            f"{r['model_recommendation']} ({_err(r['model_recommendation'], t)}) | "
            f"{r['closed_loop']} ({_err(r['closed_loop'], t)}) | {r['closed_loop_max_minute_p99']:.3g} s |"
        )
    lines.append("")
    for key, label in (
        ("model_latency_term", "M/M/c term"),
        ("model_recommendation", "recommendation"),
        ("closed_loop", "closed loop"),
    ):
        by_shape = {}
        for shape in SHAPES:
            pts = [r for r in rows if r["shape"] == shape and r["truth"] is not None]
            if pts:
                within = sum(1 for r in pts if abs(r[key] - r["truth"]) <= 1)
                by_shape[shape] = f"{within}/{len(pts)}"
        lines.append(f"- {label} within ±1 of the truth: " + ", ".join(f"{k} {v}" for k, v in by_shape.items()))
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Any, meta: dict[str, Any]) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
    markers = dict(zip(SHAPES, "so^D", strict=True))
    for ax, key, title in zip(
        axes,
        ("model_latency_term", "model_recommendation", "closed_loop"),
        (
            "M/M/c latency term (first tick)",
            "full recommendation (default targetUtilization)",
            "closed loop after 20 min (latency correction)",
        ),
        strict=True,
    ):
        for shape in SHAPES:
            pts = [r for r in rows if r["shape"] == shape and r["truth"] is not None]
            ax.scatter(
                [r["truth"] for r in pts],
                [r[key] / r["truth"] for r in pts],
                marker=markers[shape],
                label=shape,
                alpha=0.75,
            )
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("true minimum workers (simulation)")
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("picked ÷ true minimum")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Sizing accuracy — `{meta['command']}` on {machine_line(meta['machine'])}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--jobs", type=int, default=None)
    args = p.parse_args(argv)
    if args.quick:
        grid = [
            (lam, 20.0, shape, 10.0)
            for lam in (10.0, 200.0)
            for shape in ("exponential", "lognormal cv 2", "deterministic")
        ]
        messages, minutes = 20_000, 12
    else:
        grid = list(itertools.product((10.0, 100.0, 1000.0), (5.0, 50.0), SHAPES, SLO_FACTORS))
        messages, minutes = 200_000, 20
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as ex:
        rows = list(ex.map(_point, [(*g, messages, minutes) for g in grid]))
    wall = time.perf_counter() - t0
    cmd = "python -m bench.sizing_accuracy" + (" --quick" if args.quick else "")
    meta = {"command": cmd, "machine": machine(), "messages": messages, "minutes": minutes, "wall_seconds": wall}
    md = markdown(rows, meta)
    publish(args, "sizing_accuracy", md, {"meta": meta, "rows": rows})
    plot(rows, fig_dir(args) / "sizing_accuracy.png", meta)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
