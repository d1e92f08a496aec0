"""Run one scaler on one trace: the channel model, a Prometheus view of it, the scaler loop, and the scores.

Time advances in 1 s control steps (the queue itself is simulated exactly between them): the arrival rate
follows the trace, Prometheus scrapes every ``scrape_interval``, each scaler decides on its own period and its
desired count is applied at once (API latency is not modelled here; the real-loop benchmark measures it), new
workers become ready after a start-up delay drawn per pod, removed workers drain their in-flight message.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from chanscale.queueing import workers_for_latency
from chanscale.sim.model import DEFAULT_BUCKETS, ChannelModel

from .promsim import PromView
from .scalers import Env, Limits, Scaler, build
from .traces import Trace


@dataclass(frozen=True)
class Config:
    """The channel and the environment; identical for every scaler in a comparison."""

    service_rate: float = 20.0  # msgs/s per worker (50 ms mean)
    service_dist: str = "exponential"
    service_cv: float = 1.0
    slo: float = 1.0  # P99 objective, seconds
    min_replicas: int = 1
    max_replicas: int = 50
    scrape_interval: float = 15.0
    rate_window: float = 60.0
    startup_median: float = 2.0  # container start, lognormal ...
    startup_p99: float = 5.0  # ... with this p99
    warmup: float = 2.0  # plus a fixed warm-up (connections, caches) before the worker is ready
    exclude_first: float = 120.0  # scores ignore the first two minutes (Prometheus has no rate yet)
    opa: str = "local"  # chanscale's policy gate: the shipped policies in an opa child ("none": allow all)

    def startup_delay(self, rng: random.Random) -> float:
        """Pod start-up: lognormal with the configured median and p99, plus the warm-up."""
        sigma = math.log(self.startup_p99 / self.startup_median) / 2.3263
        return rng.lognormvariate(math.log(self.startup_median), sigma) + self.warmup


@dataclass
class RunResult:
    trace: str
    scaler: str
    seed: int
    service_dist: str
    minutes: int
    minutes_over_slo: int
    replica_seconds: float
    scale_events: int
    reversals: int
    peak_backlog: int
    recovery_seconds: list[float]
    messages: int
    p99_overall: float
    extra: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _minute_violated(latencies: list[tuple[float, float]], oldest_age: float, slo: float) -> tuple[bool, float]:
    """A minute violates the SLO when the P99 of the messages completed in it exceeds the objective, or when
    nothing completed while a message has been waiting longer than the objective (a stalled channel)."""
    if latencies:
        p99 = float(np.quantile(np.fromiter((x for _, x in latencies), float, len(latencies)), 0.99))
        return p99 > slo, p99
    return oldest_age > slo, math.nan


def _recovery(ages: list[float], start: int, end: int, slo: float, hold: int = 60) -> float:
    """Seconds from ``start`` until the oldest waiting message stays within the SLO for ``hold`` seconds."""
    ok_since = None
    for t in range(start, min(end, len(ages))):
        if ages[t] <= slo:
            if ok_since is None:
                ok_since = t
            if t - ok_since + 1 >= hold:
                return float(ok_since - start)
        else:
            ok_since = None
    return math.nan


def run(
    trace: Trace,
    scaler_name: str,
    seed: int,
    cfg: Config,
    *,
    keep_series: bool = False,
    spec_overrides: dict[str, Any] | None = None,
) -> RunResult:
    """Simulate ``trace`` under ``scaler_name`` and score it (same seed ⇒ same messages for every scaler)."""
    limits = Limits(cfg.min_replicas, cfg.max_replicas)
    prom = PromView(list(DEFAULT_BUCKETS), window=cfg.rate_window)
    scaler: Scaler = build(
        scaler_name,
        slo=cfg.slo,
        service_rate=cfg.service_rate,
        limits=limits,
        spec_overrides=spec_overrides,
        prom=prom,
        opa=cfg.opa,
    )
    initial = min(
        max(workers_for_latency(trace.rates[0], cfg.service_rate, cfg.slo), cfg.min_replicas), cfg.max_replicas
    )
    model = ChannelModel(
        service_rate=cfg.service_rate,
        service_dist=cfg.service_dist,
        service_cv=cfg.service_cv,
        startup_delay=cfg.startup_delay,
        latency_buckets=DEFAULT_BUCKETS,
        seed=seed,
        initial_replicas=initial,
        record_latencies=True,
    )
    current = initial
    rate = -1.0
    changes: list[tuple[float, int]] = []
    replica_seconds = 0.0
    peak_backlog = 0
    ages: list[float] = []
    minute_p99: list[float] = []
    minutes_over = 0
    minutes = 0
    all_lat: list[float] = []
    series: dict[str, list[float]] = {"t": [], "rate": [], "desired": [], "ready": [], "backlog": []}
    next_decision = scaler.offset
    for t in range(trace.duration):
        model.advance(float(t))
        if trace.rates[t] != rate:
            rate = trace.rates[t]
            model.set_arrival_rate(rate)
        if t % cfg.scrape_interval == 0:
            prom.scrape(model)
        pods = model.ready_workers + model.starting_workers + model.draining_workers
        scored = t >= cfg.exclude_first
        if scored:
            replica_seconds += pods
            peak_backlog = max(peak_backlog, model.backlog)
        ages.append(model.oldest_age)
        env = Env(
            t=float(t),
            current=current,
            ready=model.ready_workers,
            prom=prom,
            true_rate=rate,
            true_backlog=float(model.backlog),
            concurrency=float(model.backlog + model.in_flight),
        )
        scaler.observe(env)
        if t >= next_decision:
            next_decision += scaler.period
            desired = min(max(scaler.decide(env), cfg.min_replicas), cfg.max_replicas)
            if desired != current:
                changes.append((float(t), desired - current))
                current = desired
                model.set_replicas(desired)
        if t % 60 == 59:
            lat = model.take_latencies()
            if t + 1 - 60 >= cfg.exclude_first:
                violated, p99 = _minute_violated(lat, model.oldest_age, cfg.slo)
                minutes += 1
                minutes_over += violated
                minute_p99.append(p99)
                all_lat.extend(x for _, x in lat)
        if keep_series and t % 5 == 0:
            for k, v in (
                ("t", t),
                ("rate", rate),
                ("desired", current),
                ("ready", model.ready_workers),
                ("backlog", model.backlog),
            ):
                series[k].append(float(v))
    scored_changes = [c for c in changes if c[0] >= cfg.exclude_first]
    reversals = sum(1 for a, b in itertools.pairwise(scored_changes) if (a[1] > 0) != (b[1] > 0))
    recoveries = []
    for i, ev in enumerate(trace.events):
        end = int(trace.events[i + 1]) if i + 1 < len(trace.events) else trace.duration
        recoveries.append(_recovery(ages, int(ev), end, cfg.slo))
    extra: dict[str, Any] = {}
    for attr in ("outcomes", "limited"):
        if hasattr(scaler, attr):
            extra[attr] = dict(getattr(scaler, attr))
    if keep_series:
        series["minute_p99"] = minute_p99
    return RunResult(
        trace=trace.name,
        scaler=scaler_name,
        seed=seed,
        service_dist=cfg.service_dist if cfg.service_dist != "lognormal" else f"lognormal(cv={cfg.service_cv:g})",
        minutes=minutes,
        minutes_over_slo=minutes_over,
        replica_seconds=replica_seconds,
        scale_events=len(scored_changes),
        reversals=reversals,
        peak_backlog=peak_backlog,
        recovery_seconds=recoveries,
        messages=len(all_lat),
        p99_overall=float(np.quantile(all_lat, 0.99)) if all_lat else math.nan,
        extra=extra,
        series=series if keep_series else {},
    )
