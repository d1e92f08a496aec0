"""Control quality on traces: chanscale's decision function vs KEDA, HPA on P99, KPA and an oracle (simulated).

    python -m bench.control_quality            # full: 6 traces × 7 scalers × 5 seeds × 2 service distributions
    python -m bench.control_quality --quick    # CI: 3 shortened traces, 1 seed, exponential only (~10 s)

Writes control_quality.json and control_quality.md (tables) to bench/results/ and the figures beside
bench/RESULTS.md. Every scaler sees the same messages (common random numbers, see chanscale.sim.model).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from . import traces
from .common import add_common_args, fig_dir, machine, machine_line, publish, pyplot
from .harness import Config, run
from .scalers import SCALERS, VARIANTS

#: Base arrival rate (msgs/s) of every trace; with μ = 20 msgs/s per worker the peaks need 10-40 workers.
BASE_RATE = 40.0
DISTS: dict[str, tuple[str, float]] = {"exponential": ("exponential", 1.0), "lognormal(cv=2)": ("lognormal", 2.0)}


def _job(args: tuple[str, str, int, str, float, bool]) -> dict[str, Any]:
    trace_name, scaler, seed, dist_label, scale, keep = args
    dist, cv = DISTS[dist_label]
    cfg = Config(service_dist=dist, service_cv=cv)
    trace = traces.make(trace_name, BASE_RATE, seed, scale)
    res = run(trace, scaler, seed, cfg, keep_series=keep)
    res.service_dist = dist_label
    return res.to_dict()


def _nanmedian(xs: Sequence[float]) -> float:
    vals = [x for x in xs if not math.isnan(x)]
    return statistics.median(vals) if vals else math.nan


def aggregate(results: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, float]]:
    """Per (distribution, trace, scaler): totals and medians over seeds."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        groups[(r["service_dist"], r["trace"], r["scaler"])].append(r)
    out = {}
    for key, rs in groups.items():
        out[key] = {
            "seeds": len(rs),
            "minutes": sum(r["minutes"] for r in rs),
            "minutes_over_slo": sum(r["minutes_over_slo"] for r in rs),
            "replica_hours": sum(r["replica_seconds"] for r in rs) / 3600.0,
            "scale_events": statistics.fmean(r["scale_events"] for r in rs),
            "reversals": statistics.fmean(r["reversals"] for r in rs),
            "peak_backlog": statistics.median(r["peak_backlog"] for r in rs),
            "recovery_s": _nanmedian([r["recovery_seconds"][0] for r in rs if r["recovery_seconds"]]),
            "p99_s": _nanmedian([r["p99_overall"] for r in rs]),
        }
    return out


def _fmt(v: float, nd: int = 1) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "–"
    if isinstance(v, int) or float(v).is_integer():
        return f"{int(v)}"
    return f"{v:.{nd}f}"


def _ratio(a: float, b: float) -> str:
    if b == 0:
        return "—" if a == 0 else f"{a:g} vs 0"
    return f"{a / b:.2f}"


def markdown(
    agg: dict[tuple[str, str, str], dict[str, float]],
    scalers: Sequence[str],
    trace_names: Sequence[str],
    dists: Sequence[str],
    meta: dict[str, Any],
) -> str:
    """The per-trace tables and the headline ratio table."""
    lines = [
        f"Obtained with `{meta['command']}` on {machine_line(meta['machine'])}; {meta['seeds']} seed(s) per cell, "
        f"wall time {meta['wall_seconds']:.0f} s.",
        "",
        "Channel: μ = 20 msgs/s per worker, P99 objective 1 s, minReplicas 1, maxReplicas 50 for every scaler; "
        "Prometheus scrape 15 s, `rate()` over 1m; pod start-up lognormal (median 2 s, p99 5 s) + 2 s warm-up; "
        "graceful drain. The first 2 minutes of each run are not scored.",
        "",
        "Columns: **over** = minutes whose completed messages had P99 above the objective (summed over seeds) / "
        "minutes scored; **rep·h** = pod-hours (ready + starting + draining, summed over seeds); **events** / "
        "**rev.** = scale changes / direction reversals per run (mean); **peak B** = peak backlog (median); "
        "**recover** = seconds from the step until the oldest waiting message stays within the objective "
        "for 60 s (median); **P99** = P99 over the whole run (median of seeds).",
        "",
    ]
    for dist in dists:
        lines.append(f"### Service time {dist}")
        lines.append("")
        lines.append("| trace | scaler | over | rep·h | events | rev. | peak B | recover s | P99 s |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for tr in trace_names:
            for sc in scalers:
                a = agg.get((dist, tr, sc))
                if not a:
                    continue
                lines.append(
                    f"| {tr} | {sc} | {a['minutes_over_slo']}/{a['minutes']} | {a['replica_hours']:.2f} | "
                    f"{a['scale_events']:.1f} | {a['reversals']:.1f} | {_fmt(a['peak_backlog'], 0)} | "
                    f"{_fmt(a['recovery_s'], 0)} | {_fmt(a['p99_s'], 2)} |"
                )
        lines.append("")
    lines.append("### All traces together (sums over traces and seeds)")
    lines.append("")
    lines.append("| service time | scaler | minutes over SLO | pod-hours | scale events / run | reversals / run |")
    lines.append("|---|---|---|---|---|---|")
    for dist in dists:
        for sc in scalers:
            cells = [a for (d, _t, s), a in agg.items() if d == dist and s == sc]
            if not cells:
                continue
            over = sum(a["minutes_over_slo"] for a in cells)
            mins = sum(a["minutes"] for a in cells)
            lines.append(
                f"| {dist} | {sc} | {over}/{mins} ({100 * over / max(mins, 1):.1f} %) | "
                f"{sum(a['replica_hours'] for a in cells):.1f} | "
                f"{statistics.fmean(a['scale_events'] for a in cells):.1f} | "
                f"{statistics.fmean(a['reversals'] for a in cells):.1f} |"
            )
    lines.append("")
    if "chanscale" in scalers and "keda-tuned" in scalers:
        lines.append('### Headline: chanscale ÷ KEDA tuned (lower is better; "—" = both zero)')
        lines.append("")
        lines.append("| service time | trace | minutes over SLO | pod-hours | scale events | reversals |")
        lines.append("|---|---|---|---|---|---|")
        for dist in dists:
            for tr in trace_names:
                a, b = agg.get((dist, tr, "chanscale")), agg.get((dist, tr, "keda-tuned"))
                if not a or not b:
                    continue
                lines.append(
                    f"| {dist} | {tr} | {a['minutes_over_slo']}/{b['minutes_over_slo']} = "
                    f"{_ratio(a['minutes_over_slo'], b['minutes_over_slo'])} | "
                    f"{_ratio(a['replica_hours'], b['replica_hours'])} | "
                    f"{_ratio(a['scale_events'], b['scale_events'])} | {_ratio(a['reversals'], b['reversals'])} |"
                )
        lines.append("")
    return "\n".join(lines)


def plot_timelines(results: list[dict[str, Any]], scalers: Sequence[str], path: Path, meta: dict[str, Any]) -> None:
    """One row per trace: arrival rate (as workers needed) and each scaler's replicas; P99 per minute."""
    plt = pyplot()
    series = [r for r in results if r["series"]]
    trace_names = list(dict.fromkeys(r["trace"] for r in series))
    fig, axes = plt.subplots(len(trace_names), 2, figsize=(15, 3.0 * len(trace_names)), squeeze=False)
    colors = dict(zip(scalers, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for row, tr in enumerate(trace_names):
        ax_r, ax_p = axes[row]
        for r in series:
            if r["trace"] != tr:
                continue
            s = r["series"]
            mins = [t / 60 for t in s["t"]]
            if r["scaler"] == scalers[0]:
                ax_r.fill_between(mins, [x / 20.0 for x in s["rate"]], color="0.85", label="λ/μ (load)")
            ax_r.step(mins, s["desired"], where="post", lw=1.0, color=colors.get(r["scaler"]), label=r["scaler"])
            p99 = s.get("minute_p99", [])
            ax_p.plot(
                [2 + i + 1 for i in range(len(p99))],
                p99,
                lw=1.0,
                marker=".",
                ms=3,
                color=colors.get(r["scaler"]),
                label=r["scaler"],
            )
        ax_r.set_title(f"{tr}: replicas (spec) vs load", fontsize=9)
        ax_r.set_xlabel("minute")
        ax_p.set_title(f"{tr}: P99 of each minute (log); objective 1 s", fontsize=9)
        ax_p.set_yscale("log")
        ax_p.axhline(1.0, color="k", lw=0.8, ls="--")
        ax_p.set_xlabel("minute")
        if row == 0:
            ax_r.legend(fontsize=7, ncol=2)
    fig.suptitle(
        f"Control quality, seed 0, {series[0]['service_dist'] if series else ''} service — "
        f"`{meta['command']}` on {machine_line(meta['machine'])}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_summary(
    agg: dict[tuple[str, str, str], dict[str, float]],
    scalers: Sequence[str],
    trace_names: Sequence[str],
    dist: str,
    path: Path,
    meta: dict[str, Any],
) -> None:
    """Minutes over SLO and pod-hours per trace and scaler."""
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(15, 4))
    width = 0.8 / len(scalers)
    for i, sc in enumerate(scalers):
        xs = [j + i * width for j in range(len(trace_names))]
        over = [agg.get((dist, tr, sc), {}).get("minutes_over_slo", 0) for tr in trace_names]
        cost = [agg.get((dist, tr, sc), {}).get("replica_hours", 0) for tr in trace_names]
        a1.bar(xs, over, width, label=sc)
        a2.bar(xs, cost, width, label=sc)
    for ax, title in ((a1, "minutes with P99 over the objective (sum over seeds)"), (a2, "pod-hours (sum over seeds)")):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(trace_names))], trace_names)
        ax.set_title(title, fontsize=9)
    a1.legend(fontsize=7)
    fig.suptitle(
        f"{dist} service, {meta['seeds']} seeds — `{meta['command']}` on {machine_line(meta['machine'])}", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--seeds", type=int, default=None, help="seeds per cell (default 5; 1 with --quick)")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--traces", default=None, help="comma-separated subset of " + ",".join(traces.TRACES))
    p.add_argument("--scalers", default=None, help="comma-separated subset of " + ",".join(SCALERS + tuple(VARIANTS)))
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 5)
    scale = 0.35 if args.quick else 1.0
    trace_names = (
        args.traces.split(",")
        if args.traces
        else (["step", "flash", "production"] if args.quick else list(traces.TRACES))
    )
    scalers = args.scalers.split(",") if args.scalers else list(SCALERS) + ([] if args.quick else list(VARIANTS))
    dists = ["exponential"] if args.quick else list(DISTS)
    jobs = [
        (tr, sc, seed, dist, scale, seed == 0)
        for dist in dists
        for tr in trace_names
        for sc in scalers
        for seed in range(seeds)
    ]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as ex:
        results = list(ex.map(_job, jobs, chunksize=2))
    wall = time.perf_counter() - t0
    cmd = "python -m bench.control_quality" + (" --quick" if args.quick else "")
    meta = {"command": cmd, "machine": machine(), "seeds": seeds, "wall_seconds": wall, "scale": scale}
    agg = aggregate(results)
    md = markdown(agg, scalers, trace_names, dists, meta)
    out = publish(
        args,
        "control_quality",
        md,
        {
            "meta": meta,
            "aggregate": [{"service_dist": k[0], "trace": k[1], "scaler": k[2], **v} for k, v in sorted(agg.items())],
            "runs": [{k: v for k, v in r.items() if k != "series"} for r in results],
        },
    )
    if not args.no_plots:
        figs = fig_dir(args)
        for dist in dists:
            tag = dist.split("(")[0]
            plot_timelines(
                [r for r in results if r["service_dist"] == dist],
                scalers,
                figs / f"control_quality_timelines_{tag}.png",
                meta,
            )
            plot_summary(agg, scalers, trace_names, dist, figs / f"control_quality_summary_{tag}.png", meta)
    print(md)
    print(f"\nwrote {out}/control_quality.{{md,json}} in {wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
