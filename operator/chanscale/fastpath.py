"""Reaction faster than the tick: poll the cheap signals of every pool at once, every second.

The metrics contract's aggregated queries answer for every pool in one request, so polling backlog and arrival
rate each ``period`` costs two Prometheus queries per second whatever the number of pools (per distinct rate
window). When a pool's signal has moved materially since its last evaluation — by more than ``relative`` of its
value and more than an absolute floor — the pool is evaluated at once (the ticker's next step) instead of at its
next slot. That evaluation is the full one: every signal, the decision model with the HPA behavior (stabilisation
windows, rate-limit policies) and the policy gate; only its timing changes. The polled answers stay in the
reader's cache, so the decision reads them as fresh as the poll.

Pools on another Prometheus or with custom backlog/arrival queries are left to their interval (their queries are
per pool, not shared).

With the opt-in direct path (:mod:`chanscale.direct`, operator flag ``--direct-metrics``, pool field
``spec.metrics.direct.enabled``) the poll also reads an opted-in pool's backlog from a sample of its worker pods'
own /metrics every ``direct.period`` seconds; a valid reading replaces Prometheus' backlog in the movement test
and, through :func:`chanscale.direct.merge`, in the decision it triggers.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .direct import NOT_APPLICABLE, DirectPath, Note, opted_in, target_deployment
from .signals import PrometheusReader, QueryError, default_queries

log = logging.getLogger("chanscale")

PoolKey = tuple[str, str]
Reading = tuple[float | None, float | None]  # (backlog, arrival rate)

#: Absolute floors below which a change is noise: messages of backlog, messages/s of arrivals.
FLOORS = (10.0, 2.0)
#: A move is material beyond this fraction of the signal's value (and beyond its floor).
RELATIVE = 0.2
#: The most of the time the fast path may spend polling: after a poll that took t seconds it waits at least
#: t × (1 / DUTY - 1) before the next one. A poll's cost grows with the pools (the answers carry every channel)
#: and with Prometheus' answer time; when either grows until a poll takes more than a tenth of its period, the
#: fast path slows down instead of adding load to a Prometheus that is already behind (the interval path, and its
#: decisions, are unaffected).
DUTY = 0.1


def watched(spec: Mapping[str, Any], default_address: str | None) -> tuple[str, str] | None:
    """(channel, rate window) of a pool the fast path can serve from the shared queries, else None."""
    metrics = spec.get("metrics") or {}
    custom = metrics.get("queries") or {}
    address = metrics.get("prometheusAddress")
    channel = spec.get("channel")
    if not channel or custom.get("backlog") or custom.get("arrivalRate"):
        return None
    if address and address != default_address:
        return None
    return str(channel), str(metrics.get("rateWindow") or "1m")


def direct_refusal(spec: Mapping[str, Any], pool: str, default_address: str | None) -> Note | None:
    """Why an opted-in pool cannot use the direct path (None: it can)."""
    if watched(spec, default_address) is None:
        return Note(
            False,
            NOT_APPLICABLE,
            "the direct path serves pools read with the default backlog and arrival queries on the operator's "
            "Prometheus (remove spec.metrics.queries.backlog/arrivalRate and spec.metrics.prometheusAddress)",
        )
    if target_deployment(spec, pool) is None:
        return Note(False, NOT_APPLICABLE, "the direct path reads the pods of a Deployment target only")
    return None


def moved(before: Reading, now: Reading, relative: float, floors: tuple[float, float] = FLOORS) -> bool:
    """Whether either signal changed by more than ``relative`` of its value and more than its floor. A signal
    that appears or disappears counts as a move (a decision explains it)."""
    for old, new, floor in zip(before, now, floors, strict=True):
        if (old is None) != (new is None):
            return True
        if old is not None and new is not None and abs(new - old) > max(relative * abs(old), floor):
            return True
    return False


@dataclass
class FastPath:
    """Polls the shared backlog and arrival queries; calls ``trigger`` for each pool whose signal moved."""

    reader: PrometheusReader
    address: str
    pools: Callable[[], Iterable[tuple[PoolKey, Mapping[str, Any]]]]  # (key, spec) of the pools to watch
    trigger: Callable[[PoolKey], None]
    period: float = 1.0
    relative: float = RELATIVE
    latest: dict[PoolKey, Reading] = field(default_factory=dict)
    baseline: dict[PoolKey, Reading] = field(default_factory=dict)  # at the pool's last evaluation
    triggered: int = 0
    last_pause: float = 0.0  # seconds between the last two polls (DUTY)
    direct: DirectPath | None = None
    # key -> (the spec it was computed from, watched()): a spec is a new object whenever the pool changes
    _watched: dict[PoolKey, tuple[Mapping[str, Any], tuple[str, str] | None]] = field(default_factory=dict)

    def _watch(self, key: PoolKey, spec: Mapping[str, Any]) -> tuple[str, str] | None:
        held = self._watched.get(key)
        if held is None or held[0] is not spec:
            held = self._watched[key] = (spec, watched(spec, self.address))
        return held[1]

    def note(self, key: PoolKey) -> None:
        """The pool was just evaluated: measure movement from what it saw."""
        if key in self.latest:
            self.baseline[key] = self.latest[key]

    async def _read(self, window: str) -> tuple[Mapping[Any, float], Mapping[Any, float]]:
        q = default_queries(window)
        age = self.period * 0.9
        backlog, arrivals = await asyncio.gather(
            self.reader.query(self.address, q["backlog"], max_age=age),
            self.reader.query(self.address, q["arrivalRate"], max_age=age),
        )
        return backlog, arrivals

    async def _read_direct(self, pools: list[tuple[PoolKey, Mapping[str, Any]]]) -> None:
        """Direct readings of the opted-in pools that are due (chanscale.direct), all at once."""
        if self.direct is None:
            return
        direct = self.direct
        jobs = []
        for key, spec in pools:
            deployment = target_deployment(spec, key[1])
            if opted_in(spec) and deployment is not None and direct.due(key):
                jobs.append(direct.read(key, deployment, str(spec.get("channel"))))
        await asyncio.gather(*jobs)
        direct.forget(k for k, _ in pools)

    def _backlog(self, key: PoolKey, prometheus: float | None) -> float | None:
        """The direct reading when there is a valid fresh one, else Prometheus' backlog."""
        r = self.direct.fresh(key) if self.direct is not None else None
        return r.backlog if r is not None else prometheus

    async def poll_once(self) -> None:
        groups: dict[str, list[tuple[PoolKey, str]]] = {}
        watching = []
        listed = list(self.pools())
        for key, spec in listed:
            w = self._watch(key, spec)
            if w is not None:
                groups.setdefault(w[1], []).append((key, w[0]))
                watching.append((key, spec))
        await self._read_direct(watching)
        seen: set[PoolKey] = set()
        for window, members in groups.items():
            try:
                backlog, arrivals = await self._read(window)
            except QueryError as e:  # the interval's decision reports it; nothing to trigger on
                log.debug("fast path: %s", e)
                continue
            for key, channel in members:
                seen.add(key)
                now = (
                    self._backlog(key, _finite(backlog.get((key[0], channel)))),
                    _finite(arrivals.get((key[0], channel))),
                )
                self.latest[key] = now
                before = self.baseline.setdefault(key, now)
                if moved(before, now, self.relative):
                    self.baseline[key] = now
                    self.triggered += 1
                    self.trigger(key)
        for gone in [k for k in self.latest if k not in seen]:
            self.latest.pop(gone, None)
            self.baseline.pop(gone, None)
        if len(self._watched) > len(listed):  # pools gone since
            keys = {k for k, _ in listed}
            self._watched = {k: v for k, v in self._watched.items() if k in keys}

    def pause(self, spent: float) -> float:
        """Seconds to wait after a poll that took ``spent``: the period, or longer if polls got slow (DUTY)."""
        return max(self.period, spent * (1.0 / DUTY - 1.0))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.poll_once()
            except Exception:  # never stop polling: the interval path is unaffected anyway
                log.exception("fast path poll failed")
            self.last_pause = self.pause(loop.time() - started)
            await asyncio.sleep(self.last_pause)


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None
