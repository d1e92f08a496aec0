"""Pure helpers for living beside other autoscalers and for holding a pool (no kopf, no I/O).

- ``chanscale.dev/paused-replicas: "N"`` (KEDA's ``autoscaling.keda.sh/paused-replicas``): scale the target to N
  and hold it there; the model still decides and records, nothing else moves the replicas.
- Shadow mode: a ``DryRun`` pool may watch a target that an HPA, a KEDA ScaledObject or an Active WorkerPool
  scales. It never writes, so it never fights; it records change points ``[time, actual, wouldBe]`` in
  ``status.shadow`` for ``chanscale explain --compare``.
- The ``Active`` condition (as KEDA's): the channel has work (backlog or arrivals) or it is idle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from . import PAUSED_REPLICAS_ANNOTATION
from .decision import Decision, Observation
from .limits import Limit, LimitKind
from .tenancy import paused_replicas as paused_replicas

SHADOW_SAMPLES = 30  # change points kept in status.shadow.samples


def pin(decision: Decision, replicas: int) -> Decision:
    """The decision held at ``replicas`` by the paused-replicas annotation (what the model wanted stays in
    ``recommendation`` and ``sizing``)."""
    outcome = "ScaleUp" if replicas > decision.current else "ScaleDown" if replicas < decision.current else "NoChange"
    return replace(
        decision,
        desired=replicas,
        outcome=outcome,
        reason=f"held at {replicas} by annotation {PAUSED_REPLICAS_ANNOTATION} (model: {decision.recommendation})",
        limited_by=[Limit(f"paused: {PAUSED_REPLICAS_ANNOTATION}={replicas}", LimitKind.PAUSED_REPLICAS)],
    )


def activity(obs: Observation, metrics_ok: bool) -> tuple[str, str, str]:
    """(status, reason, message) of the ``Active`` condition."""
    if not metrics_ok or obs.backlog is None or obs.arrival_rate is None:
        return "Unknown", "NoData", "backlog or arrival rate missing"
    if obs.backlog > 0 or obs.arrival_rate > 0:
        return "True", "ChannelActive", f"backlog {obs.backlog:.4g}, arrivals {obs.arrival_rate:.4g}/s"
    return "False", "ChannelIdle", "no backlog and no arrivals"


def shadow(
    status: dict[str, Any],
    old: Mapping[str, Any],
    of: str | None,
    now: float,
    actual: int,
    would: int,
    gen: int,
    set_condition: Callable[..., None],
) -> None:
    """A DryRun pool beside the autoscaler that owns its target (``of``): record the change points and say so in
    the ``Shadowing`` condition; when that autoscaler goes away, the condition turns False."""
    conditions = status["conditions"]
    if of:
        status["shadow"] = shadow_status(old.get("shadow"), of, now, actual, would)
        msg = f"DryRun beside {of}: recording its replicas and what chanscale would set (chanscale explain --compare)"
        set_condition(conditions, "Shadowing", "True", "ShadowingAutoscaler", msg, now, gen)
    elif any(c.get("type") == "Shadowing" for c in conditions):
        msg = "no other autoscaler owns the target"
        set_condition(conditions, "Shadowing", "False", "NothingToShadow", msg, now, gen)


def shadow_status(
    old: Mapping[str, Any] | None, of: str, now: float, actual: int, would: int, wall: float | None = None
) -> dict[str, Any]:
    """``status.shadow``: whom the pool shadows and the change points of (actual, would-be) replicas."""
    samples = [list(s) for s in ((old or {}).get("samples") or []) if isinstance(s, list) and len(s) == 3]
    if not samples or samples[-1][1:] != [actual, would]:
        samples.append([round(time.time() if wall is None else wall), actual, would])
    return {"of": of, "samples": samples[-SHADOW_SAMPLES:]}


def compare_rows(status: Mapping[str, Any]) -> list[tuple[int, int, int]]:
    shadow = status.get("shadow") or {}
    return [(int(t), int(a), int(w)) for t, a, w in shadow.get("samples") or []]


def compare_text(status: Mapping[str, Any]) -> str:
    """``chanscale explain --compare``: chanscale's would-be replicas beside what the other autoscaler set."""
    shadow = status.get("shadow") or {}
    rows = compare_rows(status)
    if not rows:
        return "  no shadow record: --compare needs a DryRun pool beside another autoscaler (docs/migrate-from-keda.md)"
    lines = [f"Shadowing {shadow.get('of')}: its replicas beside chanscale's decisions (change points)"]
    lines.append(f"  {'time (UTC)':<21}{'actual':>8}{'chanscale':>11}{'diff':>7}")
    for t, actual, would in rows:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
        lines.append(f"  {stamp:<21}{actual:>8}{would:>11}{would - actual:>+7}")
    lines.append("  " + _summary(rows))
    return "\n".join(lines)


def _summary(rows: list[tuple[int, int, int]]) -> str:
    """Replica-seconds of both over the recorded span (each value holds until the next change point)."""
    if len(rows) < 2:
        return "one change point so far"
    actual = sum(a * (rows[i + 1][0] - t) for i, (t, a, _) in enumerate(rows[:-1]))
    would = sum(w * (rows[i + 1][0] - t) for i, (t, _, w) in enumerate(rows[:-1]))
    span = rows[-1][0] - rows[0][0]
    if span <= 0:
        return "change points within one second"
    ratio = f"{would / actual:.2f}x" if actual else "n/a"
    means = f"mean replicas actual {actual / span:.1f}, chanscale {would / span:.1f}"
    return f"over {span} s: {means} ({ratio} the pod-seconds)"
