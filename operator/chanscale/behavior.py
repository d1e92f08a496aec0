"""HPA v2 ``behavior``: stabilisation windows and scaling policies, as the Kubernetes controller implements them.

A faithful port of ``stabilizeRecommendationWithBehaviors`` and ``convertDesiredReplicasWithBehaviorRate``
(kubernetes/pkg/controller/podautoscaler/horizontal.go), pure and with explicit time, so the same semantics
hold across operator restarts (the history lives in the WorkerPool's status, not in memory).

History is kept compactly: the recommendations are stored as *runs* ``(first, last, replicas)`` — the value that
was the latest recommendation from ``first`` to ``last`` — a new entry only when the value changes. A window counts a
run when its last sample is inside the window, which is exactly the controller's rule for its per-sync samples
(``timestamp.After(cutoff)``): a value recommended once 540 s ago does not count in a 180 s window however long
ago the next value arrived.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .limits import Limit, LimitKind
from .spec import ScalingRules

Run = tuple[float, float, int]  # (first sample, last sample, recommendation)
Event = tuple[float, int]  # (time, replica change: + up, - down)


def add_recommendation(runs: Sequence[Run], now: float, value: int) -> list[Run]:
    """Record ``value`` recommended at ``now``; extends the last run when unchanged."""
    out = list(runs)
    if out and out[-1][2] == value:
        out[-1] = (out[-1][0], now, value)
    else:
        out.append((now, now, value))
    return out


def prune_runs(runs: Sequence[Run], now: float, keep_seconds: float) -> list[Run]:
    """Drop runs with no sample inside the longest window (the controller reuses such samples' slots)."""
    cutoff = now - keep_seconds
    return [r for r in runs if r[1] > cutoff]


def record(runs: Sequence[Run], now: float, value: int, keep_seconds: float) -> list[Run]:
    """The history after recommending ``value`` at ``now``: older runs no window can count are dropped, the
    current one is kept (as the controller keeps its current sample) and extended while its value holds — even
    when its earlier samples have left the window (a window shorter than the tick, or 0 s). A window counts a run
    by its last sample only, so this decides as a fresh run would; but a steady recommendation stays one run,
    and the status does not see a new one every tick."""
    out = add_recommendation(runs, now, value)
    return [*prune_runs(out[:-1], now, keep_seconds), out[-1]]


def prune_events(events: Sequence[Event], now: float, keep_seconds: float) -> list[Event]:
    return [e for e in events if e[0] > now - keep_seconds]


def _window_values(runs: Sequence[Run], now: float, window: float) -> list[int]:
    """Values recommended at a sample inside ``(now - window, now]``."""
    cutoff = now - window
    return [value for _first, last, value in runs if last > cutoff]


@dataclass(frozen=True)
class Stabilized:
    replicas: int
    limited_by: str | None


def stabilize(
    runs: Sequence[Run], now: float, current: int, desired: int, up: ScalingRules, down: ScalingRules
) -> Stabilized:
    """Bring ``desired`` within the stabilisation limits.

    Scaling up uses the lowest recommendation of the up-window, scaling down the highest of the down-window;
    ``runs`` is the history *before* this tick (``desired`` is counted as in force now).
    """
    up_rec = min([desired, *_window_values(runs, now, up.stabilization_window_seconds)])
    down_rec = max([desired, *_window_values(runs, now, down.stabilization_window_seconds)])
    rec = current
    if rec < up_rec:
        rec = up_rec
    if rec > down_rec:
        rec = down_rec
    limited = None
    if rec != desired:
        if desired > current:
            limited = Limit(f"scaleUp stabilization window {up.stabilization_window_seconds}s", LimitKind.STABILIZATION)
        elif desired < current:
            limited = Limit(
                f"scaleDown stabilization window {down.stabilization_window_seconds}s", LimitKind.STABILIZATION
            )
    return Stabilized(rec, limited)


def _period_start(current: int, events: Sequence[Event], now: float, period: int) -> int:
    """The count at the start of a policy's period: changes made within it are counted back."""
    recent = [d for t, d in events if t > now - period]
    return current - sum(d for d in recent if d > 0) + sum(-d for d in recent if d < 0)


def _policy_limit(
    current: int, events: Sequence[Event], now: float, rules: ScalingRules, direction: str
) -> tuple[int, str | None]:
    """The count the policies allow in ``direction`` ("scaleUp"/"scaleDown") and the policy that sets it.

    ``selectPolicy: Max`` picks the policy allowing the biggest change (highest count up, lowest down),
    ``Min`` the smallest; Percent rounds up when scaling up and down when scaling down, as the controller does.
    """
    if rules.select_policy == "Disabled":
        return current, Limit(f"{direction} selectPolicy Disabled", LimitKind.SCALING_DISABLED)
    up = direction == "scaleUp"
    kind = LimitKind.SCALE_UP_POLICY if up else LimitKind.SCALE_DOWN_POLICY
    best: tuple[int, str | None] | None = None
    for p in rules.policies:
        start = _period_start(current, events, now, p.period_seconds)
        if p.type == "Pods":
            proposed = start + p.value if up else start - p.value
        else:
            proposed = math.ceil(start * (1 + p.value / 100.0)) if up else int(start * (1 - p.value / 100.0))
        bigger_change = proposed > best[0] if best is not None and up else best is not None and proposed < best[0]
        if best is None or bigger_change == (rules.select_policy == "Max"):
            best = (proposed, Limit(p.describe(direction), kind))
    return best if best is not None else (current, None)


def scale_up_limit(current: int, events: Sequence[Event], now: float, rules: ScalingRules) -> tuple[int, str | None]:
    """The highest count the scaleUp policies allow now, and the policy that sets it."""
    return _policy_limit(current, events, now, rules, "scaleUp")


def scale_down_limit(current: int, events: Sequence[Event], now: float, rules: ScalingRules) -> tuple[int, str | None]:
    """The lowest count the scaleDown policies allow now, and the policy that sets it."""
    return _policy_limit(current, events, now, rules, "scaleDown")


@dataclass(frozen=True)
class Limited:
    replicas: int
    limited_by: str | None


def apply_rate_limits(
    current: int,
    desired: int,
    events: Sequence[Event],
    now: float,
    min_replicas: int,
    max_replicas: int,
    up: ScalingRules,
    down: ScalingRules,
) -> Limited:
    """Clamp ``desired`` by the scaling policies and by min/max, naming what limited it."""
    if desired > current:
        limit, why = scale_up_limit(current, events, now, up)
        if current == 0 and up.select_policy != "Disabled":
            limit = max(limit, 1)  # activation from zero is always allowed one step (KEDA handles 0->1 itself)
        limit = max(limit, current)
        if max_replicas <= limit:
            limit, why = max_replicas, Limit("maxReplicas", LimitKind.MAX_REPLICAS)
        if desired > limit:
            return Limited(limit, why)
        return Limited(desired, None)
    if desired < current:
        limit, why = scale_down_limit(current, events, now, down)
        limit = min(limit, current)
        if min_replicas >= limit:
            limit, why = min_replicas, Limit("minReplicas", LimitKind.MIN_REPLICAS)
        if desired < limit:
            return Limited(limit, why)
        return Limited(desired, None)
    if desired > max_replicas:
        return Limited(max_replicas, Limit("maxReplicas", LimitKind.MAX_REPLICAS))
    if desired < min_replicas:
        return Limited(min_replicas, Limit("minReplicas", LimitKind.MIN_REPLICAS))
    return Limited(desired, None)
