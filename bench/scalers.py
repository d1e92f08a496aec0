"""The scalers compared in the control-quality benchmark, each fed what it would see in production.

- ``chanscale``: the operator's own tick (:func:`chanscale.reconcile.tick`, :mod:`bench.shipped`) every 10 s:
  the shipped Prometheus reader against the real default queries, the shipped OPA policies, the status round trip.
- ``observed-erlang``: a reference — Erlang C from observed λ and μ, up at once, down to the 60 s maximum.
- ``keda-default`` / ``keda-tuned``: KEDA's queue scalers — desired = ceil(lag / lagThreshold), AverageValue —
  through the HPA controller (15 s sync, 0.1 tolerance, default behaviour). KEDA's own 30 s pollingInterval only
  governs 0↔1 activation; with minReplicas ≥ 1 the metrics adapter is queried at each HPA sync.
- ``hpa-p99``: HPA on the P99 latency (Object metric, Value target = the SLO): desired = ceil(ready × p99/SLO).
- ``kpa``: Knative's KPA: concurrency (in-flight + queued) sampled every second from the workers themselves
  (queue-proxy, not Prometheus), 2 s decisions, 60 s stable / 6 s panic windows, panic when desired ≥ 2 × ready.
- ``oracle``: knows the true arrival rate and μ and sees the backlog directly, every second: the M/M/c count
  for the P99 objective, or more when a backlog must be drained within 30 s (Little); start-up delay still
  applies. It is a reference for "perfect information, no prediction", not a lower bound on cost.

The HPA controller here is an independent port of kubernetes/pkg/controller/podautoscaler (not
chanscale.behavior), so the baselines do not inherit a bug of the code under test.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from chanscale.queueing import workers_for_latency

from .fastgate import FastGated
from .promsim import PromView
from .shipped import RATE_ONLY, ShippedTick


@dataclass
class Env:
    """What the harness exposes to a scaler at time ``t``."""

    t: float
    current: int  # the Deployment's spec.replicas
    ready: int  # ready (started, not draining) workers
    prom: PromView
    true_rate: float  # the oracle's privileges: the true arrival rate ...
    true_backlog: float  # ... and the backlog now, not as last scraped
    concurrency: float  # in-flight + queued, as Knative's queue-proxy/activator would report


class Scaler(Protocol):
    name: str
    period: float
    offset: float

    def observe(self, env: Env) -> None:
        """Called every simulated second (for scalers with their own metric pipeline)."""

    def decide(self, env: Env) -> int:
        """Called every ``period`` seconds; returns the desired replica count."""


@dataclass
class Limits:
    min_replicas: int
    max_replicas: int


# --------------------------------------------------------------------------------------------- HPA controller


@dataclass
class HPAController:
    """The HPA v2 controller's replica computation with default ``behavior`` (horizontal.go, v1.34)."""

    limits: Limits
    tolerance: float = 0.1
    up_window: float = 0.0
    down_window: float = 300.0
    up_policies: tuple[tuple[str, int, float], ...] = (("Percent", 100, 15.0), ("Pods", 4, 15.0))
    down_policies: tuple[tuple[str, int, float], ...] = (("Percent", 100, 15.0),)
    recommendations: deque[tuple[float, int]] = field(default_factory=deque)
    events: deque[tuple[float, int]] = field(default_factory=deque)
    started: bool = False

    def replicas_for_ratio(self, current: int, usage_ratio: float, base: int) -> int:
        """getUsageRatioReplicaCount: within tolerance keep ``current``, else ceil(ratio × base)."""
        if abs(usage_ratio - 1.0) <= self.tolerance:
            return current
        return math.ceil(usage_ratio * base)

    def normalize(self, now: float, current: int, desired: int) -> int:
        """stabilizeRecommendationWithBehaviors + convertDesiredReplicasWithBehaviorRate."""
        if not self.started:
            # Benchmarks start from a steady state: an HPA that has been running holds the current count in its
            # windows (a fresh or restarted controller would not, and could drop to the minimum at once).
            self.started = True
            self.recommendations.append((now - 1.0, current))
        keep = max(self.up_window, self.down_window)
        while self.recommendations and self.recommendations[0][0] <= now - keep:
            self.recommendations.popleft()
        up_rec = down_rec = desired
        for ts, rec in self.recommendations:
            if ts > now - self.up_window:
                up_rec = min(up_rec, rec)
            if ts > now - self.down_window:
                down_rec = max(down_rec, rec)
        self.recommendations.append((now, desired))
        stabilized = current
        stabilized = max(stabilized, up_rec)
        stabilized = min(stabilized, down_rec)
        return self._rate_limit(now, current, stabilized)

    def _changes(self, now: float, period: float, sign: int) -> int:
        return sum(abs(d) for ts, d in self.events if ts > now - period and d * sign > 0)

    def _rate_limit(self, now: float, current: int, desired: int) -> int:
        lim = self.limits
        if desired > current:
            limit = -1
            for kind, value, period in self.up_policies:
                start = current - self._changes(now, period, +1)
                cand = start + value if kind == "Pods" else math.ceil(start * (1 + value / 100))
                limit = max(limit, cand)
            return min(desired, limit, lim.max_replicas)
        if desired < current:
            limit = 1 << 30
            for kind, value, period in self.down_policies:
                start = current + self._changes(now, period, -1)
                cand = start - value if kind == "Pods" else int(start * (1 - value / 100))
                limit = min(limit, cand)
            return max(desired, limit, lim.min_replicas)
        return min(max(desired, lim.min_replicas), lim.max_replicas)

    def record(self, now: float, current: int, desired: int) -> None:
        if desired != current:
            self.events.append((now, desired - current))
        while self.events and self.events[0][0] <= now - 1800:
            self.events.popleft()


# --------------------------------------------------------------------------------------------- the scalers


@dataclass
class KEDAQueue:
    """KEDA queue-length scaler (Kafka/RabbitMQ style): AverageValue target ``lag_threshold`` per replica."""

    name: str
    limits: Limits
    lag_threshold: float
    period: float = 15.0
    offset: float = 7.0
    hpa: HPAController = field(init=False)

    def __post_init__(self) -> None:
        self.hpa = HPAController(self.limits)

    def observe(self, env: Env) -> None:
        return None

    def decide(self, env: Env) -> int:
        lag = env.prom.lag(env.t)
        lag = 0.0 if lag is None else lag  # KEDA's ignoreNullValues default reads a missing value as 0
        # GetExternalPerPodMetricReplicas: ratio against the current count, then ceil(usage / target).
        current = max(env.current, 1)
        ratio = lag / (self.lag_threshold * current)
        raw = env.current if abs(ratio - 1.0) <= self.hpa.tolerance else math.ceil(lag / self.lag_threshold)
        desired = self.hpa.normalize(env.t, env.current, raw)
        self.hpa.record(env.t, env.current, desired)
        return desired


@dataclass
class HPAP99:
    """HPA on an Object metric (the channel's P99) with a Value target equal to the SLO."""

    limits: Limits
    slo: float
    name: str = "hpa-p99"
    period: float = 15.0
    offset: float = 7.0
    hpa: HPAController = field(init=False)

    def __post_init__(self) -> None:
        self.hpa = HPAController(self.limits)

    def observe(self, env: Env) -> None:
        return None

    def decide(self, env: Env) -> int:
        p99 = env.prom.quantile(0.99, env.t)
        if p99 is None:  # the metric is unavailable: the HPA keeps the current count
            return env.current
        raw = self.hpa.replicas_for_ratio(env.current, p99 / self.slo, max(env.ready, 1))
        desired = self.hpa.normalize(env.t, env.current, raw)
        self.hpa.record(env.t, env.current, desired)
        return desired


@dataclass
class KPA:
    """Knative Pod Autoscaler (autoscaler.yaml defaults) on concurrency with a per-pod target."""

    limits: Limits
    target: float = 0.7  # containerConcurrency 1 × target-utilization 70 %
    name: str = "kpa"
    period: float = 2.0
    offset: float = 0.0
    stable_window: float = 60.0
    panic_window: float = 6.0
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    samples: deque[tuple[float, float]] = field(default_factory=deque)
    panic_since: float | None = None
    max_panic_pods: int = 0

    def observe(self, env: Env) -> None:
        self.samples.append((env.t, env.concurrency))
        while self.samples and self.samples[0][0] <= env.t - self.stable_window:
            self.samples.popleft()

    def _avg(self, now: float, window: float) -> float:
        vals = [v for ts, v in self.samples if ts > now - window]
        return sum(vals) / len(vals) if vals else 0.0

    def decide(self, env: Env) -> int:
        ready = max(env.ready, 1)
        stable_f = self._avg(env.t, self.stable_window) / self.target
        panic_f = self._avg(env.t, self.panic_window) / self.target
        up_cap = math.ceil(self.max_scale_up_rate * ready)
        down_floor = math.floor(ready / self.max_scale_down_rate)
        stable = min(max(math.ceil(stable_f), down_floor), up_cap)
        panic = min(max(math.ceil(panic_f), down_floor), up_cap)
        if panic_f / ready >= self.panic_threshold:
            if self.panic_since is None:
                self.max_panic_pods = ready  # knative starts from the ready count when panic begins
            self.panic_since = env.t  # entering or extending the panic
        elif self.panic_since is not None and env.t - self.panic_since >= self.stable_window:
            self.panic_since = None
            self.max_panic_pods = 0
        if self.panic_since is not None:
            self.max_panic_pods = max(self.max_panic_pods, panic)
            desired = self.max_panic_pods  # never scale down while panicking
        else:
            desired = stable
        return min(max(desired, self.limits.min_replicas), self.limits.max_replicas)


@dataclass
class Oracle:
    """Knows λ exactly and sizes with M/M/c for the P99 objective, instantly (start-up delay still applies)."""

    limits: Limits
    slo: float
    service_rate: float
    name: str = "oracle"
    period: float = 1.0
    offset: float = 0.0
    drain_seconds: float = 30.0

    def observe(self, env: Env) -> None:
        return None

    def decide(self, env: Env) -> int:
        c = workers_for_latency(env.true_rate, self.service_rate, self.slo)
        if env.true_backlog > 0:
            c = max(c, math.ceil((env.true_rate + env.true_backlog / self.drain_seconds) / self.service_rate))
        return min(max(c, self.limits.min_replicas), self.limits.max_replicas)


@dataclass
class ObservedErlang:
    """A reference anyone could write: the Erlang-C count from *observed* λ and μ, up at once, down to the highest
    count of the last 60 s. Same Prometheus view and arrival query as chanscale (``max(rate, irate)``),
    μ = completions per busy worker-second (the hint until workers report busy time), every 10 s."""

    limits: Limits
    slo: float
    service_rate: float
    name: str = "observed-erlang"
    period: float = 10.0
    offset: float = 3.0
    down_window: float = 60.0
    recent: deque[tuple[float, int]] = field(default_factory=deque)

    def observe(self, env: Env) -> None:
        return None

    def decide(self, env: Env) -> int:
        p, t = env.prom, env.t
        lam = p.rate("enqueued_total", t)
        if lam is None:
            return env.current
        lam = max(lam, p.irate("enqueued_total", t) or 0.0)
        done, busy = p.rate("processed_total", t), p.rate("busy_seconds_total", t)
        mu = done / busy if done and busy and busy > 0.05 else self.service_rate
        c = min(max(workers_for_latency(lam, mu, self.slo), self.limits.min_replicas), self.limits.max_replicas)
        while self.recent and self.recent[0][0] <= t - self.down_window:
            self.recent.popleft()
        self.recent.append((t, c))
        return c if c >= env.current else max(r for _, r in self.recent)


def build(
    name: str,
    *,
    slo: float,
    service_rate: float,
    limits: Limits,
    spec_overrides: dict[str, Any] | None = None,
    prom: PromView | None = None,
    opa: str = "local",
) -> Scaler:
    """Construct scaler ``name`` for a channel with P99 objective ``slo`` and per-worker rate ``service_rate``."""
    if name.startswith("chanscale"):
        spec: dict[str, Any] = {
            "channel": "bench",
            "scaleTargetRef": {"name": "workers"},
            "minReplicas": limits.min_replicas,
            "maxReplicas": limits.max_replicas,
            "slo": {"p99LatencySeconds": slo},
            "model": {"serviceRateHint": service_rate},
        }
        spec.update(spec_overrides or {})
        if name == "chanscale-nocorr":  # diagnosis: the latency correction switched off (a documented spec knob)
            spec["model"] = {**spec["model"], "latencyCorrection": False}
        elif name == "chanscale-rateonly":  # diagnosis: arrivals from rate() alone (a custom arrivalRate query)
            spec["metrics"] = {**spec.get("metrics", {}), "queries": {"arrivalRate": RATE_ONLY}}
        elif name == "chanscale-direct":  # the opt-in direct path: the backlog from the worker pods every 2 s
            spec["metrics"] = {**spec.get("metrics", {}), "direct": {"enabled": True}}
        elif name not in ("chanscale", "chanscale-interval"):
            raise ValueError(f"unknown scaler {name!r}")
        assert prom is not None, "chanscale runs the shipped tick against the harness's Prometheus view"
        inner = ShippedTick(spec, prom, name=name, opa=opa)
        # The shipped default polls backlog and arrivals every second (chanscale.fastpath); -interval is without.
        if name in ("chanscale-interval", "chanscale-rateonly"):
            return inner
        return FastGated(inner, name, direct_period=2.0 if name == "chanscale-direct" else None)
    if name == "keda-default":
        return KEDAQueue("keda-default", limits, lag_threshold=10.0)
    if name == "keda-tuned":
        # AWS's recipe: acceptable backlog per instance = latency budget ÷ time per message.
        return KEDAQueue("keda-tuned", limits, lag_threshold=max(1.0, slo * service_rate))
    if name == "hpa-p99":
        return HPAP99(limits, slo)
    if name == "kpa":
        return KPA(limits)
    if name == "oracle":
        return Oracle(limits, slo, service_rate)
    if name == "observed-erlang":
        return ObservedErlang(limits, slo, service_rate)
    raise ValueError(f"unknown scaler {name!r}")


SCALERS = ("chanscale", "observed-erlang", "keda-default", "keda-tuned", "hpa-p99", "kpa", "oracle")
#: chanscale variants for diagnosis: the latency correction off; arrivals from rate() alone (the arrivalRate
#: query before max(rate, irate) became the default).
#: chanscale-interval: a full decision at the 10 s interval only (without the fast path).
#: chanscale-direct: the fast path plus the opt-in direct path (the pods' backlog every 2 s, as the KPA reads).
VARIANTS = ("chanscale-nocorr", "chanscale-rateonly", "chanscale-interval", "chanscale-direct")
