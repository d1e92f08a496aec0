"""The operator's fast path in simulation: a scaler evaluated every second when backlog or arrivals move.

:class:`FastGated` wraps any scaler (the shipped chanscale tick in ``bench.control_quality``): every ``period``
seconds it reads the two cheap signals from the same Prometheus view the operator would poll, and calls the inner
scaler — the full decision — only when they moved materially since its last call (:func:`chanscale.fastpath.moved`,
the operator's own rule) or when the inner scaler's interval has come. Otherwise the replicas stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chanscale.fastpath import RELATIVE, moved


@dataclass
class FastGated:
    inner: Any  # a bench.scalers.Scaler
    name: str
    period: float = 1.0
    offset: float = 3.0
    interval: float = field(init=False, default=10.0)
    last_full: float = field(init=False, default=-1e9)
    baseline: tuple[float | None, float | None] | None = field(init=False, default=None)
    full_decisions: int = 0
    direct_period: float | None = None  # the direct path: the pods' backlog every this many seconds (chanscale.direct)
    last_direct: float = field(init=False, default=-1e9)

    def __post_init__(self) -> None:
        self.interval = float(self.inner.period)
        self.offset = float(getattr(self.inner, "offset", self.offset))

    def __getattr__(self, item: str) -> Any:  # outcomes, limited, ... of the inner scaler
        if item == "inner":
            raise AttributeError(item)
        return getattr(self.inner, item)

    def observe(self, env: Any) -> None:
        self.inner.observe(env)

    def decide(self, env: Any) -> int:
        p, t = env.prom, env.t
        arrival = p.rate("enqueued_total", t)
        if arrival is not None:
            arrival = max(arrival, p.irate("enqueued_total", t) or 0.0)
        backlog = p.backlog(t)
        if self.direct_period is not None:
            if t - self.last_direct >= self.direct_period - self.period / 2:
                self.inner.read_direct(t, env.true_backlog)  # the workers' own gauge, no scrape in between
                self.last_direct = t
            fresh = self.inner.direct_backlog(t)
            backlog = backlog if fresh is None else fresh
        now = (backlog, arrival)
        due = t - self.last_full >= self.interval - self.period / 2
        if not due and self.baseline is not None and not moved(self.baseline, now, RELATIVE):
            return int(env.current)
        self.baseline, self.last_full = now, t
        self.full_decisions += 1
        return int(self.inner.decide(env))
