"""The scaling decision: signals in, recommendation out. Pure — no I/O, explicit time — so it is unit-testable,
benchable, and the very same code the operator runs.

Pipeline (docs/decision-model.md has the formulas and a worked example):

1. validate the signals: missing, NaN, ±Inf or stale values are *missing*, never zero;
2. estimate the per-worker service rate μ (smoothed; ``spec.model.serviceRateHint`` before there is data);
3. size for throughput (λ at the target utilisation), for draining the backlog within the drain horizon, and for
   the P99 objective with the M/G/c sojourn-time tail, its service-time variability learnt from the observed P99;
4. idle → scale to zero only after ``idleSeconds``; missing data → no scale-down, fallback after the threshold;
5. HPA v2 tolerance, stabilisation windows, scaling policies and min/max (:mod:`chanscale.behavior`).

The policy gate runs after this, in the operator; :func:`apply_verdict` folds its verdict in, and
:func:`record_scale` records an applied change in the state that the next tick (and a restarted operator) uses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import behavior, queueing
from .limits import Limit, LimitKind, kind_of
from .spec import PoolSpec

#: Smoothing of the measured service rate (per tick).
MU_ALPHA = 0.3
#: Smoothing of the service-time variability (SCV) learnt from the observed P99.
SCV_ALPHA = 0.3
#: Recommendation history kept at least this long (the policies' longest period, HPA's 1800 s maximum).
EVENT_KEEP_SECONDS = 1800
MAX_RUNS = 256


@dataclass(frozen=True)
class Observation:
    """One tick's signals for one pool. ``None`` means the signal is missing."""

    now: float
    current_replicas: int
    ready_replicas: int | None = None
    backlog: float | None = None
    arrival_rate: float | None = None
    processed_rate: float | None = None
    failed_rate: float | None = None
    busy_rate: float | None = None
    p99_latency: float | None = None
    age_seconds: float | None = None
    error: str | None = None  # why the signals could not be read at all (query failure)
    # The backlog sample's own age when the backlog came from elsewhere than Prometheus (chanscale.direct); the
    # staleness rule stays on ``age_seconds``, Prometheus' sample, which the other signals come from.
    backlog_age_seconds: float | None = None


@dataclass(frozen=True)
class PoolState:
    """What a restart must not forget; serialised into ``status.history`` (bounded)."""

    recommendations: tuple[behavior.Run, ...] = ()
    scale_events: tuple[behavior.Event, ...] = ()
    consecutive_failures: int = 0
    service_rate: float | None = None
    service_samples: int = 0  # measurements the service-rate estimate rests on (its start-up weighting)
    service_scv: float = 1.0  # service time's squared CV, learnt from the observed P99 (1 = exponential: M/M/c)
    last_active: float | None = None
    last_scale_time: float | None = None
    last_scale_direction: str | None = None
    backlog_sample: tuple[float, float] | None = None  # (sample time, backlog): baseline for backlog growth
    backlog_growth: float | None = None  # msgs/s, from the last two distinct samples
    calm_since: float | None = None  # since when the backlog has been small (the variability is learnt after a window)
    calm_ready: int | None = None  # the ready count the calm window is observed with (a change restarts the window)
    at: float | None = None  # the tick this state was learnt at: the newer of memory and status.history wins

    def to_status(self) -> dict[str, Any]:
        return {
            "recommendations": [[round(a, 3), round(b, 3), r] for a, b, r in self.recommendations],
            "scaleEvents": [[round(t, 3), d] for t, d in self.scale_events],
            "consecutiveFailures": self.consecutive_failures,
            "serviceRate": _round(self.service_rate),
            "serviceSamples": self.service_samples,
            "serviceScv": round(self.service_scv, 4),
            "lastActive": self.last_active,
            "lastScaleTime": self.last_scale_time,
            "lastScaleDirection": self.last_scale_direction,
            "backlogSample": list(self.backlog_sample) if self.backlog_sample else None,
            "backlogGrowth": _round(self.backlog_growth),
            "calmSince": self.calm_since,
            "calmReady": self.calm_ready,
            "at": self.at,
        }

    def resumed(self, now: float) -> PoolState:
        """This state restored from ``status.history`` at ``now``, after a restart or a hand-over: what held at the
        copy's tick is carried over the gap. The copy is only as fresh as the last status write (a quiet pool
        writes once per refresh), but a change of recommendation, and a channel going idle, are written at once:
        so the current recommendation held, and an active channel stayed active, at least until the previous
        owner stopped. Taking both as held until ``now`` keeps a scale-down window and the idle countdown as long
        after a restart as without one (the HPA, whose memory is in-process, starts empty)."""
        runs = self.recommendations
        if runs and runs[-1][1] < now:  # the current value recommended again at now: its run extends
            runs = tuple(behavior.add_recommendation(runs, now, runs[-1][2]))
        active = self.last_active is not None and self.last_active == self.at and self.last_active < now
        return replace(self, recommendations=runs, last_active=now if active else self.last_active)

    @classmethod
    def from_status(cls, h: Mapping[str, Any] | None) -> PoolState:
        """Rebuild from ``status.history``; tolerant of missing or damaged entries (a bad history is dropped)."""
        if not h:
            return cls()

        def pairs(key: str) -> tuple[tuple[float, int], ...]:
            out = []
            for item in h.get(key) or ():
                try:
                    out.append((float(item[0]), int(item[1])))
                except (TypeError, ValueError, IndexError):
                    continue
            return tuple(sorted(out))

        def num(key: str) -> float | None:
            v = h.get(key)
            return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None

        def runs() -> tuple[behavior.Run, ...]:
            out = []
            for item in h.get("recommendations") or ():
                try:  # [first, last, replicas]; a status from before sample-exact windows has [first, replicas]
                    first, last, r = (item[0], item[1], item[2]) if len(item) == 3 else (item[0], item[0], item[1])
                    out.append((float(first), float(last), int(r)))
                except (TypeError, ValueError, IndexError):
                    continue
            return tuple(sorted(out))

        return cls(
            recommendations=runs(),
            scale_events=pairs("scaleEvents"),
            consecutive_failures=int(h.get("consecutiveFailures") or 0),
            service_rate=num("serviceRate"),
            service_samples=int(num("serviceSamples") or 0),
            # A status from before the M/G/c model has a latencyCorrection factor instead: relearnt, not converted.
            service_scv=_scv(num("serviceScv")),
            last_active=num("lastActive"),
            last_scale_time=num("lastScaleTime"),
            last_scale_direction=h.get("lastScaleDirection") if h.get("lastScaleDirection") in ("up", "down") else None,
            backlog_sample=_pair(h.get("backlogSample")),
            backlog_growth=num("backlogGrowth"),
            calm_since=num("calmSince"),
            calm_ready=_count(h.get("calmReady")),
            at=num("at"),
        )


@dataclass(frozen=True)
class Decision:
    desired: int  # after min/max, HPA behaviour (and the verdict, once apply_verdict ran)
    recommendation: int  # the raw model recommendation
    current: int
    outcome: str  # ScaleUp | ScaleDown | NoChange | Hold | Fallback
    reason: str  # one human sentence
    limited_by: list[str]
    sizing: dict[str, Any]
    signals: dict[str, float | None]
    metrics_ok: bool
    missing: list[str]
    slo_met: bool | None
    slo_message: str
    state: PoolState
    policy: dict[str, Any] | None = field(default=None)

    @property
    def changes(self) -> bool:
        return self.desired != self.current


def _pair(v: Any) -> tuple[float, float] | None:
    try:
        a, b = float(v[0]), float(v[1])
    except (TypeError, ValueError, IndexError):
        return None
    return (a, b) if math.isfinite(a) and math.isfinite(b) else None


#: Backlog growth is measured between distinct samples at least this far apart, and forgotten past the limit.
GROWTH_MIN_SECONDS = 5.0
GROWTH_MAX_SECONDS = 120.0


def _backlog_growth(
    state: PoolState, obs: Observation, backlog: float | None
) -> tuple[tuple[float, float] | None, float | None]:
    """dB/dt between the backlog samples Prometheus scraped (sample time = now − age), so reading the same
    sample twice or two samples close together never inflates it. Returns the new baseline and growth."""
    if backlog is None:
        return state.backlog_sample, None
    age = obs.backlog_age_seconds if obs.backlog_age_seconds is not None else obs.age_seconds
    ts = obs.now - (age or 0.0)
    prev = state.backlog_sample
    if prev is None or ts - prev[0] > GROWTH_MAX_SECONDS or ts < prev[0]:
        return (ts, backlog), None
    if ts - prev[0] < GROWTH_MIN_SECONDS:
        return prev, state.backlog_growth
    return (ts, backlog), (backlog - prev[1]) / (ts - prev[0])


def _count(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _round(v: float | None, nd: int = 4) -> float | None:
    return None if v is None else round(v, nd)


def _clean(v: float | None) -> float | None:
    """NaN/±Inf/negative counts and rates are not data."""
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        return None
    return float(v)


def _estimate_service_rate(
    spec: PoolSpec, state: PoolState, obs: Observation, backlog: float | None
) -> tuple[float | None, int]:
    """μ per worker and the number of measurements it rests on.

    A measurement is completions per busy worker-second when workers report busy time, else completions per
    ready worker while saturated (backlog waiting). Measurements are combined by a running mean until there are
    as many as the smoothing's memory (1/α), then smoothed with gain α: an exponential filter's first estimates
    are otherwise one noisy or start-up-biased reading. ``spec.model.serviceRateHint`` counts as one measurement,
    so the first reading moves the estimate half way from the hint, not all the way.
    """
    done = None
    if obs.processed_rate is not None:
        done = obs.processed_rate + (obs.failed_rate or 0.0)
    measured = None
    if done is not None and done > 0:
        if obs.busy_rate is not None and obs.busy_rate > 0.05:
            measured = done / obs.busy_rate
        elif backlog is not None and backlog > 0 and obs.ready_replicas:
            measured = done / obs.ready_replicas
    prev, n = state.service_rate, state.service_samples
    if measured is None or not math.isfinite(measured) or measured <= 0:
        return (prev if prev is not None else spec.service_rate_hint), n
    base = prev if prev is not None else spec.service_rate_hint
    if base is None:
        return measured, 1
    prior = 1 if spec.service_rate_hint is not None else 0  # the hint's weight, in measurements
    gain = max(MU_ALPHA, 1.0 / (prior + n + 1))
    return base + gain * (measured - base), n + 1


def _size(spec: PoolSpec, lam: float, mu: float, backlog: float, scv: float) -> tuple[int, str, dict[str, Any]]:
    """The three sizing terms; the largest wins and names the driver."""
    rho = spec.target_utilization
    t = spec.slo.p99_latency_seconds
    # The latency term is the M/G/c tail with the service-time variability learnt from the observed P99 (M/M/c
    # until then); μ stays the measured rate, so variability never inflates the count needed to keep up.
    terms = {
        "throughput": math.ceil(lam / (mu * rho) - 1e-9) if lam > 0 else 0,
        "drain": math.ceil((lam + backlog / spec.slo.drain_horizon) / mu - 1e-9) if backlog > 0 else 0,
        "latency": queueing.workers_for_latency(lam, mu, t, scv=scv) if lam > 0 else 0,
    }
    driver = max(terms, key=lambda k: terms[k])
    info: dict[str, Any] = {
        "arrivalRate": round(lam, 4),
        "serviceRate": round(mu, 4),
        "serviceTimeScv": round(scv, 4),
        "drainHorizonSeconds": spec.slo.drain_horizon,
        "terms": terms,
        "driver": driver,
    }
    floor = queueing.service_floor(mu, scv=scv)
    if t <= floor:
        info["note"] = (
            f"P99 objective {t}s is below the service-time floor {floor:.3f}s "
            f"(service time SCV {scv:.3g}); sized to make queueing negligible"
        )
    return terms[driver], driver, info


def _window_seconds(window: str) -> float:
    return float(window[:-1]) * {"s": 1, "m": 60, "h": 3600}[window[-1]]


def _update_variability(
    spec: PoolSpec, state: PoolState, obs: Observation, lam: float, mu: float | None
) -> tuple[float, float | None]:
    """Learn the service time's variability (SCV) from the observed P99, in steady state only.

    The metrics give λ, μ and the latency histogram but not the service-time variance: the SCV is the one M/G/c
    parameter left, fitted so the model's P99 at the ready count matches the observed one (smoothed). Steady state
    means a whole ``rate()`` window with the backlog small (at most λ·t) and the same ready count: the observed P99
    is computed over that window, so right after a drain it still holds the drained messages' latencies, and right
    after a scale it holds the latencies of the count before. Fitted against the new count, those would teach the
    model a variability the service does not have — and after a scale-up a larger one at every step, which asks for
    the next scale-up (a loop that fed on its own action). Returns (SCV, calm since).
    """
    scv = state.service_scv
    calm = lam > 0 and (obs.backlog or 0) <= lam * spec.slo.p99_latency_seconds
    calm = calm and obs.ready_replicas is not None and obs.ready_replicas == state.calm_ready
    calm_since = (state.calm_since if state.calm_since is not None else obs.now) if calm else None
    if not spec.latency_correction or mu is None or obs.p99_latency is None or not obs.ready_replicas:
        return scv, calm_since
    if calm_since is None or obs.now - calm_since < _window_seconds(spec.metrics.rate_window):
        return scv, calm_since
    # The P99 is of the messages completed in the window, at the window's completion rate: that is the load the
    # fit must explain (λ itself reads ahead of the window, by irate and the backlog's growth, when load rises).
    done = (obs.processed_rate or 0.0) + (obs.failed_rate or 0.0)
    fitted = queueing.fit_scv(obs.ready_replicas, done if done > 0 else lam, mu, obs.p99_latency)
    if fitted is None:
        return scv, calm_since
    # Smoothed as the factor (1 + s²)/2 the waits scale by, in log space: the fit rests on a histogram quantile
    # whose error is relative, and one window the model cannot explain must not multiply the waits tenfold.
    # Each window is one piece of evidence: the next fit waits for a fresh window (the same P99, read again at every
    # tick and fast-path decision in between, would otherwise count many times and the smoothing would not smooth).
    f, f_hat = math.log((1.0 + scv) / 2.0), math.log((1.0 + fitted) / 2.0)
    return 2.0 * math.exp(f + SCV_ALPHA * (f_hat - f)) - 1.0, obs.now


def _scv(v: float | None) -> float:
    lo, hi = queueing.SCV_RANGE
    return 1.0 if v is None else min(max(v, lo), hi)


def _slo(spec: PoolSpec, backlog: float | None, p99: float | None, err: float | None) -> tuple[bool | None, str]:
    problems, known = [], False
    if p99 is not None:
        known = True
        if p99 > spec.slo.p99_latency_seconds:
            problems.append(f"P99 {p99:.3g}s > {spec.slo.p99_latency_seconds:g}s")
    if spec.slo.max_backlog is not None and backlog is not None:
        known = True
        if backlog > spec.slo.max_backlog:
            problems.append(f"backlog {backlog:.0f} > {spec.slo.max_backlog}")
    if spec.slo.max_error_rate is not None and err is not None:
        known = True
        if err > spec.slo.max_error_rate:
            problems.append(f"error rate {err:.3g} > {spec.slo.max_error_rate:g}")
    if problems:
        return False, "; ".join(problems)
    if not known:
        return None, "no completed messages to judge the SLO by"
    return True, "within objectives"


@dataclass(frozen=True)
class Recommendation:
    """The model's answer before HPA normalisation (the HPA's ``computeReplicasForMetrics``).

    ``replicas`` is the raw model count; ``held`` is what the stabilisation windows record, after the tolerance and
    the no-scale-down-on-missing-data rule (as the HPA records ``currentReplicas`` for a change within tolerance or a
    scale-down on a failed metric). ``state`` carries this tick's learning (μ, the service SCV, backlog growth, ...).
    """

    replicas: int
    held: int
    current: int
    sizing: dict[str, Any]
    signals: dict[str, float | None]
    metrics_ok: bool
    missing: list[str]
    slo_met: bool | None
    slo_message: str
    limited_by: list[str]
    state: PoolState
    why_missing: str = ""  # why the signals are unusable (query error, stale, missing names)


def _signals(spec: PoolSpec, obs: Observation) -> tuple[Observation, dict[str, float | None], list[str], bool]:
    """Validate this tick's signals: missing, NaN, ±Inf, negative or stale values are missing, never zero."""
    stale = obs.age_seconds is not None and obs.age_seconds > spec.metrics.stale_after_seconds
    backlog = None if stale else _clean(obs.backlog)
    lam = None if stale else _clean(obs.arrival_rate)
    p99 = None if stale else _clean(obs.p99_latency)
    processed = None if stale else _clean(obs.processed_rate)
    failed = None if stale else _clean(obs.failed_rate)
    missing = [n for n, v in (("backlog", backlog), ("arrivalRate", lam)) if v is None]
    err_rate = _err_rate(processed, failed)
    signals = {
        "backlog": backlog,
        "arrivalRate": _round(lam),
        "processedRate": _round(processed),
        "errorRate": _round(err_rate),
        "p99LatencySeconds": _round(p99),
        "ageSeconds": _round(obs.age_seconds, 2),
    }
    clean = replace(
        obs, backlog=backlog, arrival_rate=lam, processed_rate=processed, failed_rate=failed, p99_latency=p99
    )
    return clean, signals, missing, stale


def recommend(spec: PoolSpec, state: PoolState, obs: Observation) -> Recommendation:
    """The model's recommendation for this tick and the learning it updates: the HPA's replica calculator
    (``computeReplicasForMetrics``). Pure.

    Validate the signals (:func:`_signals`), learn from them (:func:`_learn`), size (:func:`_calculate`), then
    hold what the HPA would not act on (:func:`_hold`); the sizing and the hold each say what limited them."""
    clean, signals, missing, stale = _signals(spec, obs)
    learnt, lam = _learn(spec, state, obs, clean, metrics_ok=not missing)
    signals["serviceRate"] = _round(learnt.service_rate)
    raw, sizing, sized_by = _calculate(spec, clean, lam, learnt)
    held, held_by = _hold(spec, obs.current_replicas, raw, missing)
    err_rate = _err_rate(clean.processed_rate, clean.failed_rate)
    slo_met, slo_message = _slo(spec, clean.backlog, clean.p99_latency, err_rate)
    return Recommendation(
        replicas=raw,
        held=held,
        current=obs.current_replicas,
        sizing=sizing,
        signals=signals,
        metrics_ok=not missing,
        missing=missing,
        slo_met=slo_met,
        slo_message=slo_message,
        limited_by=sized_by + held_by,
        state=learnt,
        why_missing="" if not missing else obs.error or ("stale samples" if stale else f"missing {', '.join(missing)}"),
    )


def _learn(
    spec: PoolSpec, state: PoolState, obs: Observation, clean: Observation, *, metrics_ok: bool
) -> tuple[PoolState, float | None]:
    """This tick's learning (the backlog's growth, μ, the service-time SCV, when the channel was last active, the
    failed reads) and the arrival rate λ to size for.

    λ comes from the flow balance when that is ahead of ``rate()``: inflow = completions + backlog growth. rate()
    over the window lags a step by up to the window; the backlog's growth between two scrapes shows it at once."""
    backlog, processed, failed = clean.backlog, clean.processed_rate, clean.failed_rate
    sample, growth = _backlog_growth(state, obs, backlog)
    lam = clean.arrival_rate
    if lam is not None and growth is not None and growth > 0:
        lam = max(lam, (processed or 0.0) + (failed or 0.0) + growth)
    mu, mu_samples = _estimate_service_rate(spec, state, clean, backlog)
    scv, calm_since = _update_variability(spec, state, clean, lam or 0.0, mu)
    learnt = replace(
        state,
        backlog_sample=sample,
        backlog_growth=growth,
        calm_since=calm_since,
        calm_ready=clean.ready_replicas,
        consecutive_failures=0 if metrics_ok else state.consecutive_failures + 1,
        service_rate=mu,
        service_samples=mu_samples,
        service_scv=scv,
        last_active=obs.now if _active(clean, lam) or state.last_active is None else state.last_active,
        at=obs.now,
    )
    return learnt, lam


def _active(clean: Observation, lam: float | None) -> bool:
    """Work is waiting, arriving or being done."""
    return bool((clean.backlog or 0) > 0 or (lam or 0) > 0 or (clean.processed_rate or 0) > 0)


def _calculate(
    spec: PoolSpec, clean: Observation, lam: float | None, learnt: PoolState
) -> tuple[int, dict[str, Any], list[str]]:
    """The model's count for this tick's signals, how it was sized (``driver`` names the term that decided) and
    what limited it. Without usable signals it holds the current count; without a service rate it cannot size."""
    current, backlog, mu = clean.current_replicas, clean.backlog, learnt.service_rate
    if backlog is None and lam is None:
        return current, {"driver": "hold", "note": "no usable signals"}, []
    active = _active(clean, lam)
    if mu is None:
        # Nothing measured yet and no hint: we cannot size; never guess. Activate from zero if work is waiting.
        unsized = {"driver": "unknown service rate", "note": "set spec.model.serviceRateHint to size before data"}
        unknown = Limit("service rate unknown (set spec.model.serviceRateHint)", LimitKind.SERVICE_RATE_UNKNOWN)
        return (max(current, 1) if active else current), unsized, [unknown]
    raw, _driver, sizing = _size(spec, lam or 0.0, mu, backlog or 0.0, learnt.service_scv)
    window = clean.arrival_rate
    if lam is not None and window is not None and lam > window:
        sizing["arrivalRateWindow"] = round(window, 4)
        sizing["backlogGrowth"] = _round(learnt.backlog_growth)
        sizing["note"] = "arrival rate from completions + backlog growth (ahead of the rate() window)"
    return _floor(spec, raw, active, clean, learnt, sizing), sizing, []


def _floor(
    spec: PoolSpec, raw: int, active: bool, clean: Observation, learnt: PoolState, sizing: dict[str, Any]
) -> int:
    """An active channel keeps a worker. An idle one keeps its min (and a running worker), until it has been idle
    for ``idleSeconds`` with min 0: then none (the idle time goes in ``sizing``)."""
    if active:
        return max(raw, 1)
    last_active = learnt.last_active if learnt.last_active is not None else clean.now
    idle_for = clean.now - last_active
    if spec.min_replicas == 0 and idle_for >= spec.idle_seconds:
        sizing["idleSeconds"] = round(idle_for, 1)
        return 0
    return max(raw, min(clean.current_replicas, 1), spec.min_replicas)


def _hold(spec: PoolSpec, current: int, raw: int, missing: list[str]) -> tuple[int, list[str]]:
    """What the stabilisation windows record and why it is not ``raw``: the current count for a change within the
    tolerance, or for a scale-down on missing data (as the HPA records ``currentReplicas`` for them)."""
    limited: list[str] = []
    held = _tolerance(spec, current, raw, limited)
    if missing and held < current:  # missing data: never scale down on it
        limited.append(
            Limit(f"no scale-down on missing data ({', '.join(missing) or 'stale'})", LimitKind.MISSING_DATA)
        )
        held = current
    return held, limited


def _err_rate(processed: float | None, failed: float | None) -> float | None:
    if processed is not None and failed is not None and processed + failed > 0:
        return failed / (processed + failed)
    return None


def _tolerance(spec: PoolSpec, current: int, raw: int, limited: list[str]) -> int:
    """HPA tolerance: ignore small relative changes."""
    if current > 0 and raw != current:
        ratio = raw / current
        if raw > current and ratio - 1.0 <= spec.scale_up.tolerance:
            limited.append(Limit(f"scaleUp tolerance {spec.scale_up.tolerance:g}", LimitKind.TOLERANCE))
            return current
        if raw < current and 1.0 - ratio <= spec.scale_down.tolerance:
            limited.append(Limit(f"scaleDown tolerance {spec.scale_down.tolerance:g}", LimitKind.TOLERANCE))
            return current
    return raw


def normalize(spec: PoolSpec, rec: Recommendation, now: float) -> Decision:
    """The HPA's ``normalizeDesiredReplicasWithBehaviors``: stabilisation windows, scaling policies and min/max —
    or, after ``failureThreshold`` unusable reads, the fallback (KEDA's semantics). Pure."""
    if not rec.metrics_ok and rec.state.consecutive_failures >= spec.fallback.failure_threshold:
        return _fallback(spec, rec)
    state, current, limited = rec.state, rec.current, list(rec.limited_by)
    keep = max(spec.scale_up.stabilization_window_seconds, spec.scale_down.stabilization_window_seconds)
    runs = behavior.prune_runs(state.recommendations, now, keep)
    stab = behavior.stabilize(runs, now, current, rec.held, spec.scale_up, spec.scale_down)
    if stab.limited_by:
        limited.append(stab.limited_by)
    events = behavior.prune_events(state.scale_events, now, EVENT_KEEP_SECONDS)
    lim = behavior.apply_rate_limits(
        current, stab.replicas, events, now, spec.min_replicas, spec.max_replicas, spec.scale_up, spec.scale_down
    )
    if lim.limited_by:
        limited.append(lim.limited_by)
    outcome, reason = _outcome(rec, lim.replicas, limited)
    new_state = replace(
        state,
        recommendations=tuple(behavior.record(state.recommendations, now, rec.held, keep)[-MAX_RUNS:]),
        scale_events=tuple(events),
    )
    return _decision(rec, lim.replicas, outcome, reason, limited, new_state)


def _outcome(rec: Recommendation, desired: int, limited: list[str]) -> tuple[str, str]:
    """The decision's outcome and its one human sentence: what drove the count, and the first limit on it."""
    current = rec.current
    if not rec.metrics_ok and rec.held == current:
        outcome = "Hold"
    else:
        outcome = "ScaleUp" if desired > current else "ScaleDown" if desired < current else "NoChange"
    driver = rec.sizing.get("driver", "hold")
    if desired != current:
        reason = f"{driver} needs {rec.replicas}: {current} -> {desired}"
    elif rec.replicas != current:
        reason = f"{driver} asks for {rec.replicas}, held at {current}"
    else:
        reason = f"{current} replicas meet the SLO ({driver})"
    return outcome, reason + (f" (limited by {limited[0]})" if limited else "")


def _fallback(spec: PoolSpec, rec: Recommendation) -> Decision:
    fb, current, failures = spec.fallback, rec.current, rec.state.consecutive_failures
    target = current
    if fb.behavior == "static" and fb.replicas is not None:
        target = fb.replicas
    elif fb.behavior == "currentReplicasIfHigher" and fb.replicas is not None:
        target = max(current, fb.replicas)
    target = min(max(target, spec.min_replicas), spec.max_replicas)
    limited = [Limit(f"fallback {fb.behavior} after {failures} failed reads", LimitKind.FALLBACK), *rec.limited_by]
    # The fallback's own tolerance/missing-data notes are not recorded (the HPA path never ran).
    limited = [x for x in limited if kind_of(x) is not LimitKind.MISSING_DATA]
    reason = f"metrics unavailable for {failures} ticks ({rec.why_missing}): fallback {fb.behavior} -> {target}"
    state = replace(rec.state, recommendations=rec.state.recommendations[-MAX_RUNS:])
    return _decision(rec, target, "Fallback", reason, limited, state, metrics_ok=False)


def _decision(
    rec: Recommendation,
    desired: int,
    outcome: str,
    reason: str,
    limited: list[str],
    state: PoolState,
    metrics_ok: bool | None = None,
) -> Decision:
    return Decision(
        desired=desired,
        recommendation=rec.replicas,
        current=rec.current,
        outcome=outcome,
        reason=reason,
        limited_by=limited,
        sizing=rec.sizing,
        signals=rec.signals,
        metrics_ok=rec.metrics_ok if metrics_ok is None else metrics_ok,
        missing=rec.missing,
        slo_met=rec.slo_met,
        slo_message=rec.slo_message,
        state=state,
    )


def decide(spec: PoolSpec, state: PoolState, obs: Observation) -> Decision:
    """This tick's decision for one pool: :func:`recommend`, then :func:`normalize`. Pure: the returned ``state``
    replaces the old one."""
    return normalize(spec, recommend(spec, state, obs), obs.now)


def apply_verdict(
    decision: Decision, *, allow: bool, replicas: int | None, reasons: list[str], spec: PoolSpec
) -> Decision:
    """Fold the policy gate's verdict in: deny keeps the current count; a clamp is kept within min/max."""
    policy = {"allow": allow, "replicas": replicas, "reasons": list(reasons)}
    if not allow:
        return replace(
            decision,
            desired=decision.current,
            outcome="Blocked",
            reason=f"policy denied {decision.current} -> {decision.desired}: {'; '.join(reasons) or 'no reason given'}",
            limited_by=[Limit(f"policy: {r}", LimitKind.POLICY) for r in reasons]
            or [Limit("policy: denied", LimitKind.POLICY)],
            policy=policy,
        )
    if replicas is not None and replicas != decision.desired:
        clamped = min(max(replicas, spec.min_replicas), spec.max_replicas)
        outcome = "ScaleUp" if clamped > decision.current else "ScaleDown" if clamped < decision.current else "Blocked"
        return replace(
            decision,
            desired=clamped,
            outcome=outcome,
            reason=f"policy clamped {decision.current} -> {decision.desired} to {clamped}: {'; '.join(reasons)}",
            limited_by=[Limit(f"policy: {r}", LimitKind.POLICY) for r in reasons] + decision.limited_by,
            policy=policy,
        )
    return replace(decision, policy=policy)


def record_scale(state: PoolState, *, now: float, from_replicas: int, to_replicas: int) -> PoolState:
    """Record an applied change: the policies' rate limits and the policy gate's history read it."""
    if to_replicas == from_replicas:
        return state
    events = behavior.prune_events(state.scale_events, now, EVENT_KEEP_SECONDS)
    events.append((now, to_replicas - from_replicas))
    return replace(
        state,
        scale_events=tuple(events),
        last_scale_time=now,
        last_scale_direction="up" if to_replicas > from_replicas else "down",
    )
