"""The demo's record of a run and what is made from it: the PNG plot, the summary numbers and ``summary.md``.

Kept apart from :mod:`chanscale.demo` (which starts processes) so that the picture and the summary can be built
and tested from synthetic samples, without a cluster. Everything here is pure: samples in, files/text out.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Phase:
    """One segment of the load trace: ``rate`` msgs/s from ``start`` to ``end`` seconds (demo time)."""

    start: float
    end: float
    rate: float
    label: str

    @property
    def burst(self) -> bool:
        return self.label.startswith("burst")


@dataclass
class Sample:
    """What the live view showed at one instant (demo time ``t``, seconds from the start of the trace).

    Load, backlog and workers come from the simulator (the truth); P99 and the decision fields come from the
    WorkerPool's status (what the operator saw and did). ``None`` means "not known yet", never zero.
    """

    t: float
    arrival_rate: float | None = None
    backlog: float | None = None
    ready_workers: int | None = None
    replicas: int | None = None  # the Deployment's spec.replicas, as the simulator reads it
    desired: int | None = None  # status.desiredReplicas (after behaviour and policy)
    recommended: int | None = None  # status.recommendedReplicas (the model's count)
    p99: float | None = None  # status.signals.p99LatencySeconds
    outcome: str | None = None  # this tick's outcome (NoChange on a quiet tick)
    reason: str | None = None
    limited_by: list[str] = field(default_factory=list)
    last_change: str | None = None  # the last decision that changed the count, e.g. "ScaleUp 4 -> 6"


@dataclass
class Mark:
    """A decision the policy gate changed: ``clamp`` (allowed a smaller step) or ``deny`` (held the pool)."""

    t: float
    kind: str  # "clamp" | "deny"
    from_replicas: int | None
    to_replicas: int | None
    proposed: int | None
    reasons: list[str] = field(default_factory=list)


@dataclass
class DemoRecord:
    """Everything a run produced, written as ``samples.json`` and turned into the plot and the summary."""

    slo_p99: float
    max_backlog: int | None
    phases: list[Phase]
    samples: list[Sample] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    pool: str = ""
    policy_parameters: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> DemoRecord:
        return cls(
            slo_p99=float(doc["slo_p99"]),
            max_backlog=doc.get("max_backlog"),
            phases=[Phase(**p) for p in doc.get("phases", [])],
            samples=[Sample(**s) for s in doc.get("samples", [])],
            marks=[Mark(**m) for m in doc.get("marks", [])],
            pool=doc.get("pool", ""),
            policy_parameters=doc.get("policy_parameters") or {},
            interrupted=bool(doc.get("interrupted", False)),
        )


# --------------------------------------------------------------------------------------------------- summary
def _values(samples: Sequence[Sample], attr: str) -> list[tuple[float, float]]:
    return [(s.t, float(v)) for s in samples if (v := getattr(s, attr)) is not None]


def _first_increase(samples: Sequence[Sample], start: float, end: float) -> float | None:
    """Seconds from ``start`` until the replicas first rose above their count at ``start`` (None: never)."""
    before = [s.replicas for s in samples if s.t <= start and s.replicas is not None]
    base = before[-1] if before else None
    for s in samples:
        if start < s.t <= end and s.replicas is not None:
            if base is None:
                base = s.replicas
            elif s.replicas > base:
                return s.t - start
    return None


def summarize(rec: DemoRecord) -> dict[str, Any]:
    """The run in numbers: peaks, SLO attainment, scaling activity, reaction per burst, policy interventions."""
    s = rec.samples
    replicas = _values(s, "replicas")
    backlog = _values(s, "backlog")
    arrivals = _values(s, "arrival_rate")
    p99 = _values(s, "p99")
    within = [v <= rec.slo_p99 for _, v in p99]
    changes = [(a, b) for (_, a), (_, b) in itertools.pairwise(replicas) if a != b]
    peak_backlog = max(backlog, key=lambda x: x[1], default=(None, None))
    bursts = []
    for ph in rec.phases:
        if not ph.burst:
            continue
        in_phase = [v for t, v in backlog if ph.start <= t <= ph.end]
        reps = [v for t, v in replicas if ph.start <= t <= ph.end]
        bursts.append(
            {
                "label": ph.label,
                "start": ph.start,
                "end": ph.end,
                "rate": ph.rate,
                "firstScaleUpAfter": _first_increase(s, ph.start, ph.end),
                "peakBacklog": max(in_phase, default=None),
                "peakReplicas": max(reps, default=None),
            }
        )
    reasons: dict[str, int] = {}
    for m in rec.marks:
        for r in m.reasons:
            reasons[r] = reasons.get(r, 0) + 1
    replica_seconds = sum(a[1] * (b[0] - a[0]) for a, b in itertools.pairwise(replicas))
    return {
        "pool": rec.pool,
        "duration": round(s[-1].t, 1) if s else 0.0,
        "samples": len(s),
        "interrupted": rec.interrupted,
        "sloP99": rec.slo_p99,
        "peakArrivalRate": max((v for _, v in arrivals), default=None),
        "peakBacklog": peak_backlog[1],
        "peakBacklogAt": peak_backlog[0],
        "replicasMin": min((v for _, v in replicas), default=None),
        "replicasMax": max((v for _, v in replicas), default=None),
        "replicasFirst": replicas[0][1] if replicas else None,
        "replicasLast": replicas[-1][1] if replicas else None,
        "replicaSeconds": round(replica_seconds, 1),
        "scaleUps": sum(1 for a, b in changes if b > a),
        "scaleDowns": sum(1 for a, b in changes if b < a),
        "p99Max": max((v for _, v in p99), default=None),
        "sloMetFraction": (sum(within) / len(within)) if within else None,
        "policyClamps": sum(1 for m in rec.marks if m.kind == "clamp"),
        "policyDenials": sum(1 for m in rec.marks if m.kind == "deny"),
        "policyReasons": sorted(reasons.items(), key=lambda kv: -kv[1]),
        "bursts": bursts,
    }


def _fmt(v: Any, unit: str = "", digits: int = 0) -> str:
    if v is None:
        return "n/a"
    if (isinstance(v, float) and not v.is_integer()) or digits:
        return f"{float(v):.{digits or 1}f}{unit}"
    return f"{int(v)}{unit}"


def summary_markdown(rec: DemoRecord, summary: dict[str, Any], png_name: str = "demo.png") -> str:
    """``summary.md``: the run's story in a few lines, readable in a terminal and on GitHub."""
    sm = summary
    met = sm["sloMetFraction"]
    lines = [
        f"# chanscale demo — {sm['pool']}",
        "",
        f"![run]({png_name})",
        "",
        f"- Run: {sm['duration']:.0f} s, {sm['samples']} samples"
        + (" (interrupted: partial run)" if sm["interrupted"] else ""),
        f"- Load: up to {_fmt(sm['peakArrivalRate'], ' msgs/s', 1)}; backlog peaked at "
        f"{_fmt(sm['peakBacklog'])} messages (t={_fmt(sm['peakBacklogAt'], ' s')})",
        f"- Replicas: {_fmt(sm['replicasFirst'])} at the start, {_fmt(sm['replicasMin'])}–{_fmt(sm['replicasMax'])} "
        f"during the run, {_fmt(sm['replicasLast'])} at the end; {sm['scaleUps']} scale-ups, "
        f"{sm['scaleDowns']} scale-downs; {sm['replicaSeconds']:.0f} replica-seconds",
        f"- P99 latency: SLO {rec.slo_p99:g} s; met in "
        + (f"{100 * met:.0f} %" if met is not None else "n/a")
        + f" of samples; worst {_fmt(sm['p99Max'], ' s', 2)}",
        f"- Policy gate: {sm['policyClamps']} clamped and {sm['policyDenials']} denied decisions "
        f"(parameters: `{json.dumps(rec.policy_parameters, sort_keys=True)}`)",
    ]
    if sm["bursts"]:
        lines += ["", "| burst | load | first scale-up after | peak backlog | peak replicas |", "|---|---|---|---|---|"]
        for b in sm["bursts"]:
            lines.append(
                f"| {b['label']} ({b['start']:.0f}–{b['end']:.0f} s) | {b['rate']:g} msgs/s | "
                f"{_fmt(b['firstScaleUpAfter'], ' s', 1)} | {_fmt(b['peakBacklog'])} | {_fmt(b['peakReplicas'])} |"
            )
    if sm["policyReasons"]:
        lines += ["", "Why the policy intervened (most frequent first):", ""]
        lines += [f"- {n}× {r}" for r, n in sm["policyReasons"][:5]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------ plot
def _series(samples: Sequence[Sample], attr: str) -> tuple[list[float], list[float]]:
    """(t, value) lists with gaps as NaN, so matplotlib breaks the line where the value was unknown."""
    ts = [s.t for s in samples]
    vs = [math.nan if (v := getattr(s, attr)) is None else float(v) for s in samples]
    return ts, vs


def plot_run(rec: DemoRecord, path: Path) -> Path:
    """Three stacked panels sharing time: load and backlog, P99 against the SLO line, replicas.

    Burst phases are shaded in every panel; decisions the policy clamped (orange) or denied (red) are vertical
    lines across all panels, so a flat replica line next to a rising backlog can be read as "the guard held it".
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = rec.samples
    fig, (ax_load, ax_p99, ax_rep) = plt.subplots(
        3, 1, figsize=(11, 8.5), sharex=True, gridspec_kw={"height_ratios": [1.1, 1, 1.2]}
    )
    end = max([s[-1].t if s else 0.0] + [p.end for p in rec.phases if s and p.start < s[-1].t])
    _shade((ax_load, ax_p99, ax_rep), rec)
    _plot_load(ax_load, rec)
    _plot_p99(ax_p99, rec)
    _plot_replicas(ax_rep, rec)
    ax_rep.set_xlim(0, max(end, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _shade(axes: Any, rec: DemoRecord) -> None:
    """Burst phases shaded and policy marks as vertical lines in every panel; phase labels on the top one."""
    s = rec.samples
    for ax in axes:
        for ph in rec.phases:
            if ph.burst and (not s or ph.start < s[-1].t):
                ax.axvspan(ph.start, ph.end, color="0.92", zorder=0)
        for m in rec.marks:
            ax.axvline(m.t, color="tab:red" if m.kind == "deny" else "tab:orange", lw=0.9, alpha=0.55, zorder=1)
        ax.grid(True, alpha=0.3)
    for ph in rec.phases:
        if ph.burst and (not s or ph.start < s[-1].t):
            axes[0].annotate(
                ph.label,
                xy=(ph.start, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -12),
                textcoords="offset points",
                fontsize=8,
                color="0.35",
            )


def _plot_load(ax_load: Any, rec: DemoRecord) -> None:
    """Arrivals (left axis) and backlog (right axis)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    s = rec.samples
    t, arr = _series(s, "arrival_rate")
    ax_load.plot(t, arr, color="tab:blue", lw=1.4, drawstyle="steps-post", label="arrivals (msgs/s)")
    ax_load.set_ylabel("arrivals, msgs/s", color="tab:blue")
    ax_b = ax_load.twinx()
    t, bl = _series(s, "backlog")
    ax_b.fill_between(t, bl, color="tab:purple", alpha=0.25, step="post", lw=0)
    ax_b.plot(t, bl, color="tab:purple", lw=1.0, drawstyle="steps-post", label="backlog (msgs)")
    ax_b.set_ylabel("backlog, messages", color="tab:purple")
    # Headroom above the data for the legend and the phase labels.
    ax_b.set_ylim(0, max([v for v in bl if not math.isnan(v)] + [1.0]) * 1.3)
    ax_load.set_ylim(0, max([v for v in arr if not math.isnan(v)] + [1.0]) * 1.3)
    ax_load.legend(
        handles=[
            Line2D([], [], color="tab:blue", label="arrivals"),
            Patch(color="tab:purple", alpha=0.4, label="backlog"),
        ],
        loc="upper right",
        fontsize=8,
    )
    ax_load.set_title(f"chanscale demo — {rec.pool}", fontsize=11)


def _plot_p99(ax_p99: Any, rec: DemoRecord) -> None:
    """P99 against the SLO line, the excess shaded."""
    s = rec.samples
    t, p = _series(s, "p99")
    ax_p99.plot(t, p, color="tab:green", lw=1.4, label="P99 latency (operator's view)")
    ax_p99.axhline(rec.slo_p99, color="tab:red", ls="--", lw=1.2, label=f"SLO {rec.slo_p99:g} s")
    finite = [v for v in p if not math.isnan(v)]
    if finite and max(finite) > 10 * rec.slo_p99:
        ax_p99.set_yscale("log")
    else:
        ax_p99.set_ylim(0, max([*finite, rec.slo_p99]) * 1.3)
    above = [not math.isnan(v) and v > rec.slo_p99 for v in p]
    if any(above):
        ax_p99.fill_between(
            t,
            rec.slo_p99,
            [v if a else rec.slo_p99 for v, a in zip(p, above, strict=True)],
            color="tab:red",
            alpha=0.15,
            lw=0,
        )
    ax_p99.set_ylabel("P99, seconds")
    ax_p99.legend(loc="upper right", fontsize=8)


def _plot_replicas(ax_rep: Any, rec: DemoRecord) -> None:
    """Model recommendation, desired, the Deployment's replicas and ready workers; the legend for every panel."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    s = rec.samples
    for attr, style, label in (
        ("recommended", dict(color="0.55", ls=":", lw=1.2), "model recommends"),
        ("desired", dict(color="tab:pink", ls="--", lw=1.3), "desired (after behaviour + policy)"),
        ("replicas", dict(color="black", lw=1.8), "replicas (Deployment)"),
        ("ready_workers", dict(color="tab:cyan", lw=1.0, alpha=0.8), "ready workers"),
    ):
        t, v = _series(s, attr)
        ax_rep.plot(t, v, drawstyle="steps-post", label=label, **style)
    tops = [v for a in ("replicas", "desired", "recommended") for v in _series(s, a)[1] if not math.isnan(v)]
    ax_rep.set_ylim(0, max([*tops, 1.0]) * 1.45)
    ax_rep.set_ylabel("replicas")
    ax_rep.set_xlabel("seconds since the start of the trace")
    handles, _ = ax_rep.get_legend_handles_labels()
    handles += [
        Line2D(
            [], [], color="tab:orange", alpha=0.7, label=f"policy clamped ({sum(m.kind == 'clamp' for m in rec.marks)})"
        ),
        Line2D([], [], color="tab:red", alpha=0.7, label=f"policy denied ({sum(m.kind == 'deny' for m in rec.marks)})"),
        Patch(color="0.92", label="burst"),
    ]
    ax_rep.legend(handles=handles, loc="upper left", fontsize=8, ncol=4)


def write_outputs(rec: DemoRecord, out: Path) -> tuple[Path, Path, Path, dict[str, Any]]:
    """Write ``demo.png``, ``summary.md`` and ``samples.json`` into ``out``; returns their paths and the summary."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rec)
    png = plot_run(rec, out / "demo.png")
    md = out / "summary.md"
    md.write_text(summary_markdown(rec, summary, png.name), encoding="utf-8")
    data = out / "samples.json"
    data.write_text(json.dumps({**rec.to_json(), "summary": summary}, indent=1), encoding="utf-8")
    return png, md, data, summary
