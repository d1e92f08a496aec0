"""What a scaler sees through Prometheus: scraped samples, ``rate()`` and ``histogram_quantile``.

Autoscalers fail in practice partly because they never see the queue, only a Prometheus view of it: samples
taken every scrape interval, counters turned into rates over a window (with Prometheus' extrapolation), and a
P99 interpolated inside coarse histogram buckets. This module reproduces those computations on a
:class:`~chanscale.sim.model.ChannelModel`, so every simulated scaler sees what it would see in production.

Ports of ``extrapolatedRate`` and ``bucketQuantile`` (prometheus/prometheus promql/functions.go, quantile.go);
the range selector is left-open ``(t - window, t]`` as in Prometheus 3.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from chanscale.sim.model import ChannelModel

COUNTERS = ("enqueued_total", "processed_total", "failed_total", "busy_seconds_total")
#: Prometheus' instant-query lookback: a gauge older than this has no value.
LOOKBACK_SECONDS = 300.0


@dataclass(frozen=True)
class Sample:
    """One scrape of one channel."""

    t: float
    backlog: float
    in_flight: float
    counters: dict[str, float]
    buckets: tuple[float, ...]  # cumulative, +Inf last


def extrapolated_rate(points: list[tuple[float, float]], t: float, window: float) -> float | None:
    """``rate(counter[window])`` evaluated at ``t`` from ``(timestamp, value)`` points (Prometheus semantics)."""
    pts = [p for p in points if t - window < p[0] <= t]
    if len(pts) < 2:
        return None
    increase = 0.0
    prev = pts[0][1]
    for _, v in pts[1:]:
        increase += v - prev if v >= prev else v  # counter reset: the new value is the increase
        prev = v
    first_t, first_v = pts[0]
    last_t = pts[-1][0]
    sampled = last_t - first_t
    if sampled <= 0:
        return None
    to_start = first_t - (t - window)
    to_end = t - last_t
    avg = sampled / (len(pts) - 1)
    if increase > 0 and first_v >= 0:
        to_zero = sampled * (first_v / increase)
        to_start = min(to_start, to_zero)
    threshold = avg * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else avg / 2
    interval += to_end if to_end < threshold else avg / 2
    return increase * (interval / sampled) / window


def bucket_quantile(q: float, bounds: list[float], counts: list[float]) -> float | None:
    """``histogram_quantile(q, ...)`` over cumulative bucket ``counts`` (``+Inf`` last); None for NaN."""
    if not counts or counts[-1] <= 0 or not 0 <= q <= 1:
        return None
    # Prometheus forces monotonicity (rates of buckets can be slightly inconsistent).
    mono = []
    run = 0.0
    for c in counts:
        run = max(run, c)
        mono.append(run)
    total = mono[-1]
    rank = q * total
    b = next(i for i, c in enumerate(mono) if c >= rank)
    if b == len(bounds):  # the +Inf bucket: the highest finite bound is the best answer
        return bounds[-1]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start = 0.0 if b == 0 else bounds[b - 1]
    below = 0.0 if b == 0 else mono[b - 1]
    in_bucket = mono[b] - below
    if in_bucket <= 0:
        return bounds[b]
    return start + (bounds[b] - start) * ((rank - below) / in_bucket)


class PromView:
    """A scrape store for one channel with the queries the default metrics contract runs."""

    def __init__(self, bounds: list[float], window: float = 60.0) -> None:
        self.bounds = list(bounds)
        self.window = window
        self.samples: deque[Sample] = deque()

    def scrape(self, model: ChannelModel) -> None:
        """Record the model's observables at ``model.now`` (call after ``advance``)."""
        self.samples.append(
            Sample(
                t=model.now,
                backlog=float(model.backlog),
                in_flight=float(model.in_flight),
                counters={k: float(getattr(model, k)) for k in COUNTERS},
                buckets=tuple(float(c) for c in model.latency_bucket_counts),
            )
        )
        keep = max(self.window, LOOKBACK_SECONDS) + 1.0
        while self.samples and self.samples[0].t < model.now - keep:
            self.samples.popleft()

    def _latest(self, t: float) -> Sample | None:
        for s in reversed(self.samples):
            if s.t <= t:
                return s if t - s.t <= LOOKBACK_SECONDS else None
        return None

    def backlog(self, t: float) -> float | None:
        """``chanscale_channel_backlog`` instant query."""
        s = self._latest(t)
        return None if s is None else s.backlog

    def lag(self, t: float) -> float | None:
        """Broker lag (waiting + unacknowledged in-flight), what KEDA's Kafka/RabbitMQ scalers read."""
        s = self._latest(t)
        return None if s is None else s.backlog + s.in_flight

    def age(self, t: float) -> float | None:
        """``time() - timestamp(chanscale_channel_backlog)``."""
        s = self._latest(t)
        return None if s is None else t - s.t

    def rate(self, counter: str, t: float) -> float | None:
        """``rate(chanscale_channel_<counter>[window])``."""
        return extrapolated_rate([(s.t, s.counters[counter]) for s in self.samples], t, self.window)

    def irate(self, counter: str, t: float) -> float | None:
        """``irate(chanscale_channel_<counter>[window])``: the slope of the last two samples."""
        pts = [(s.t, s.counters[counter]) for s in self.samples if t - self.window < s.t <= t]
        if len(pts) < 2 or pts[-1][0] <= pts[-2][0]:
            return None
        (t0, v0), (t1, v1) = pts[-2], pts[-1]
        return (v1 - v0 if v1 >= v0 else v1) / (t1 - t0)

    def quantile(self, q: float, t: float) -> float | None:
        """``histogram_quantile(q, rate(chanscale_channel_latency_seconds_bucket[window]))``."""
        rates = []
        for i in range(len(self.bounds) + 1):
            r = extrapolated_rate([(s.t, s.buckets[i]) for s in self.samples], t, self.window)
            if r is None:
                return None
            rates.append(r)
        value = bucket_quantile(q, self.bounds, rates)
        return None if value is None or math.isnan(value) else value
