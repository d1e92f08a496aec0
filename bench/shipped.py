"""chanscale as the operator runs it, inside the simulation: :func:`chanscale.reconcile.tick` itself.

Each decision is one real tick: the :class:`~chanscale.signals.PrometheusReader` sends the metrics contract's
default queries to a fake Prometheus that answers them from :class:`bench.promsim.PromView` (so the reader's
parsing, the ``max(rate, irate)`` arrival query and the staleness rules are the shipped ones); the policy gate is
the shipped OPA policies in a local ``opa`` child (one per worker process, ``--opa local``), and the status makes
the round trip through a fake API server, as kopf delivers it: every tick gets the WorkerPool as the server holds
it (status merge-patched by the operator's own writes, ``resourceVersion`` bumped on each), and whatever the
operator keeps in memory between ticks is what the running operator keeps.
"""

from __future__ import annotations

import asyncio
import copy
import multiprocessing.util
from dataclasses import dataclass, field
from typing import Any

from chanscale import FIELD_MANAGER
from chanscale.direct import DirectPath, Reading, opted_in
from chanscale.policy import AllowAllGate, LocalOpaGate, PolicyGate
from chanscale.reconcile import Config, Runtime, Target, tick
from chanscale.signals import PrometheusReader, default_queries
from chanscale.tenancy import Guardrails

from .promsim import PromView

NAMESPACE = "bench"
PROMETHEUS = "http://prometheus.sim:9090"

_loop: asyncio.AbstractEventLoop | None = None
_gates: dict[str, PolicyGate] = {}


def _run(coro: Any) -> Any:
    """Run a coroutine on this process's one event loop (the OPA child's client is bound to it)."""
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(coro)


def gate(kind: str) -> PolicyGate:
    """This process's policy gate: ``local`` = the shipped policies in an ``opa`` child, ``none`` = allow all."""
    if kind not in _gates:
        if kind == "none":
            _gates[kind] = AllowAllGate()
        else:
            g = LocalOpaGate()
            _run(g.start())  # fails loudly without bin/opa ("run make tools")
            multiprocessing.util.Finalize(None, lambda: _run(g.close()), exitpriority=10)
            _gates[kind] = g
    return _gates[kind]


@dataclass
class FakeApi:
    """The API server's copy of one WorkerPool: /status merge patches and labels, each bumping resourceVersion."""

    body: dict[str, Any]
    rv: int = 1
    writes: int = 0

    def _bump(self) -> str:
        self.rv += 1
        self.body["metadata"]["resourceVersion"] = str(self.rv)
        return str(self.rv)

    async def write_status(self, namespace: str, name: str, patch: dict[str, Any]) -> str | None:
        self.body["status"] = _apply_merge(self.body.get("status") or {}, patch)
        self.writes += 1
        return self._bump()

    async def write_labels(self, namespace: str, name: str, labels: dict[str, str | None]) -> None:
        meta = self.body["metadata"]
        meta["labels"] = _apply_merge(meta.get("labels") or {}, labels)
        self._bump()


def _apply_merge(target: Any, patch: Any) -> Any:
    """RFC 7386: apply a merge patch (the inverse of :func:`chanscale.reconcile.merge_patch`)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _apply_merge(out.get(k), v)
    return out


class FakePrometheus:
    """Answers the metrics contract's default queries (exact strings) from a :class:`PromView` at time ``t``."""

    def __init__(self, prom: PromView, channel: str, rate_window: str = "1m") -> None:
        self.prom, self.channel, self.t = prom, channel, 0.0
        q = default_queries(rate_window)

        def arrival(t: float) -> float | None:  # (irate > rate) or rate
            r, i = prom.rate("enqueued_total", t), prom.irate("enqueued_total", t)
            return i if r is not None and i is not None and i > r else r

        self.answers = {
            q["backlog"]: prom.backlog,
            q["arrivalRate"]: arrival,
            q["processedRate"]: lambda t: prom.rate("processed_total", t),
            q["failedRate"]: lambda t: prom.rate("failed_total", t),
            q["busyRate"]: lambda t: prom.rate("busy_seconds_total", t),
            q["p99LatencySeconds"]: lambda t: prom.quantile(0.99, t),
            q["age"]: prom.age,
            # The pre-irate arrival query, for the chanscale-rateonly variant (spec.metrics.queries.arrivalRate).
            RATE_ONLY: lambda t: prom.rate("enqueued_total", t),
        }

    async def __call__(self, address: str, query: str) -> list[Any]:
        value = self.answers[query](self.t)
        if value is None:
            return []
        return [{"metric": {"namespace": NAMESPACE, "channel": self.channel}, "value": [self.t, str(value)]}]


RATE_ONLY = "sum(rate(chanscale_channel_enqueued_total[1m]))"


@dataclass
class ShippedTick:
    """One WorkerPool, decided by the operator's own tick every ``period`` seconds."""

    spec_dict: dict[str, Any]
    prom: PromView
    name: str = "chanscale"
    period: float = 10.0
    offset: float = 3.0
    opa: str = "local"
    outcomes: dict[str, int] = field(default_factory=dict)
    limited: dict[str, int] = field(default_factory=dict)
    replicas: int = 0
    api: FakeApi = field(init=False)
    rt: Runtime = field(init=False)
    fake: FakePrometheus = field(init=False)

    def __post_init__(self) -> None:
        meta = {"namespace": NAMESPACE, "name": "pool", "generation": 1, "uid": "u", "resourceVersion": "1"}
        self.api = FakeApi({"metadata": meta, "spec": self.spec_dict, "status": {}})
        self.fake = FakePrometheus(self.prom, self.spec_dict["channel"])
        self.clock = [0.0]
        self.rt = Runtime(
            # Custom queries allowed only for the chanscale-rateonly variant's arrivalRate override.
            config=Config(
                prometheus_url=PROMETHEUS, opa=self.opa, tick=self.period, guardrails=Guardrails(custom_queries=True)
            ),
            reader=PrometheusReader(PROMETHEUS, ttl=0.0, query_fn=self.fake),
            gate=gate(self.opa),
            scaler=self,  # scale() below
            wall=self._now,
            writer=self.api,
        )
        if opted_in(self.spec_dict):
            self.rt.direct = DirectPath(pods=lambda ns, d: [], wall=self._now)

    def _now(self) -> float:
        return self.clock[0]

    def read_direct(self, t: float, backlog: float) -> None:
        """The direct path's reading at ``t`` (chanscale.direct): the pods' backlog, as the operator's fast path
        stores it for the decision it triggers. Exact here, as the KPA's concurrency is (no sampling error)."""
        if self.rt.direct is not None:
            key = (NAMESPACE, "pool")
            self.rt.direct.readings[key] = Reading(at=t, backlog=backlog, sampled=1, population=1)

    def direct_backlog(self, t: float) -> float | None:
        r = self.rt.direct.fresh((NAMESPACE, "pool")) if self.rt.direct is not None else None
        return None if r is None else r.backlog

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.replicas = replicas

    def observe(self, env: Any) -> None:
        return None

    def decide(self, env: Any) -> int:
        self.clock[0] = self.fake.t = env.t
        self.replicas = env.current
        target = Target(name="workers", exists=True, replicas=env.current, ready=env.ready, manager=FIELD_MANAGER)
        res = _run(tick(self.rt, copy.deepcopy(self.api.body), target, force=True))
        d = res.decision
        if d is not None:
            self.outcomes[d.outcome] = self.outcomes.get(d.outcome, 0) + 1
            for why in d.limited_by:
                key = why.split("(")[0].strip()
                self.limited[key] = self.limited.get(key, 0) + 1
        return self.replicas
