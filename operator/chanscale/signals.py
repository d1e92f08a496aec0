"""Reading a channel's signals from Prometheus (the I/O edge of the decision).

The default metrics contract is queried *aggregated* ``by (namespace, channel)``: one query per signal answers
for every pool, and the answer is shared by all pools for ``ttl`` seconds (single-flight), so the number of
Prometheus queries per tick does not grow with the number of pools. A pool with custom PromQL pays only for its
own queries (identical custom queries are shared too).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from urllib3.util.retry import Retry

from .promauth import PrometheusAuth
from .spec import SIGNALS, PoolSpec
from .tenancy import normalise_url

SeriesKey = tuple[str, str]  # (namespace, channel)
Result = dict[SeriesKey | None, float]  # None key: a single series / scalar (custom queries)
Entry = tuple[float, "Result | QueryError"]  # (answered at, by the reader's clock; the answer)

# Signal name -> the Observation field it feeds.
FIELDS = {
    "backlog": "backlog",
    "arrivalRate": "arrival_rate",
    "processedRate": "processed_rate",
    "failedRate": "failed_rate",
    "busyRate": "busy_rate",
    "p99LatencySeconds": "p99_latency",
}


def default_queries(rate_window: str) -> dict[str, str]:
    """The metrics contract's aggregated queries (docs/metrics-contract.md)."""
    w = rate_window
    by = "sum by (namespace, channel)"
    return {
        "backlog": f"{by} (chanscale_channel_backlog)",
        # max(rate, irate): irate follows a step in arrivals at the next scrape, rate() smooths the noise
        # (`a > b or b` is PromQL's element-wise max). Still one query for all pools.
        "arrivalRate": f"({by} (irate(chanscale_channel_enqueued_total[{w}])) > "
        f"{by} (rate(chanscale_channel_enqueued_total[{w}]))) or "
        f"{by} (rate(chanscale_channel_enqueued_total[{w}]))",
        "processedRate": f"{by} (rate(chanscale_channel_processed_total[{w}]))",
        "failedRate": f"{by} (rate(chanscale_channel_failed_total[{w}]))",
        "busyRate": f"{by} (rate(chanscale_channel_busy_seconds_total[{w}]))",
        "p99LatencySeconds": "histogram_quantile(0.99, sum by (namespace, channel, le) "
        f"(rate(chanscale_channel_latency_seconds_bucket[{w}])))",
        "age": "max by (namespace, channel) (time() - timestamp(chanscale_channel_backlog))",
    }


def render_custom(query: str, namespace: str, channel: str) -> str:
    """Substitute ``$namespace``/``$channel`` (both validated against a strict pattern, so no injection)."""
    return query.replace("$namespace", namespace).replace("$channel", channel)


class QueryError(Exception):
    """A query failed (transport, HTTP status, or an answer of the wrong shape). The message names the query."""


class QueryFn(Protocol):
    def __call__(self, address: str, query: str) -> Awaitable[list[Any]]: ...


@dataclass
class PoolSignals:
    """One pool's readings: values by Observation field name (None = missing), plus errors by signal."""

    values: dict[str, float | None] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    age_seconds: float | None = None

    @property
    def error(self) -> str | None:
        if not self.errors:
            return None
        return "; ".join(f"{k}: {v}" for k, v in sorted(self.errors.items()))


_NO_LABELS: Mapping[str, str] = {}


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _parse(raw: Any, query: str) -> Result:
    """Prometheus' instant-query ``result`` (vector or scalar) -> {(namespace, channel) | None: value}."""
    out: Result = {}
    if isinstance(raw, list) and len(raw) == 2 and not isinstance(raw[0], dict):  # scalar: [ts, "v"]
        out[None] = float(raw[1])
        return out
    if not isinstance(raw, list):
        raise QueryError(f"unexpected result type from {query!r}")
    # One pass in a comprehension: the shared queries answer a series per channel (1 000s), every second for the
    # fast path, so this loop was a few percent of the operator's CPU at 1 000 pools.
    out = {
        ((m := s.get("metric") or _NO_LABELS).get("namespace", ""), m.get("channel", "")): float(s["value"][1])
        for s in raw
    }
    if len(raw) == 1:
        out[None] = next(iter(out.values()))
    return out


class PrometheusReader:
    """Shared, cached Prometheus reads. ``query_fn`` is the transport (prometheus-api-client by default)."""

    def __init__(
        self,
        default_address: str | None,
        *,
        ttl: float = 5.0,
        timeout: float = 5.0,
        query_fn: QueryFn | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_query: Callable[[str, float, bool], None] | None = None,
        auth: PrometheusAuth | None = None,
        allowed: set[str] | None = None,
    ) -> None:
        self.auth = auth or PrometheusAuth()
        self.allowed = allowed  # normalised admin-approved base URLs; None = no check (tests, the demo)
        self.default_address = default_address
        self.ttl = ttl
        self.timeout = timeout
        self._clock = clock
        self._query_fn = query_fn or self._prometheus_api_client_query
        self._cache: dict[tuple[str, str], Entry] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[tuple[float, Result]]] = {}  # refreshes under way
        self._clients: dict[str, Any] = {}
        self._on_query = on_query
        self.queries_sent = 0

    async def _prometheus_api_client_query(self, address: str, query: str) -> list[Any]:
        from prometheus_api_client import PrometheusConnect

        client = self._clients.get(address)
        if client is None:
            if self.allowed is not None and normalise_url(address) not in self.allowed:
                # Defence in depth behind tenancy.refusal: the operator's credentials never leave for an address
                # the admin did not approve.
                raise QueryError(f"{address} is not an admin-approved Prometheus address")
            retry = Retry(total=1, backoff_factor=0.1, status_forcelist=(502, 503, 504), allowed_methods=None)
            # The operator's credentials (promauth.py) go to admin-approved addresses only: tenancy.refusal
            # stops a pool naming any other address before a query is built.
            client = PrometheusConnect(url=address, retry=retry, timeout=self.timeout, session=self.auth.session())
            self._clients[address] = client
        result: list[Any] = await asyncio.to_thread(client.custom_query, query)
        return result

    async def query(self, address: str, query: str, max_age: float | None = None, hold: float | None = None) -> Result:
        """One instant query, served from the cache within ``ttl`` (or ``max_age``, if shorter); concurrent
        callers share one request. The fast path (chanscale.fastpath) refreshes the cheap signals every second
        with a short ``max_age``, so a decision it triggers reads them fresh.

        While a refresh is under way, other callers without ``max_age`` do not wait for it while the last answer
        is late by less than ``hold`` (its age beyond ``ttl``; default ``timeout``): they get that answer at once, or
        the failure it was. Only the caller that starts the refresh waits for it. :meth:`read` holds up to the pool's
        staleAfterSeconds and adds the lateness to the sample age it reports, so the decision's staleness rule judges
        a held answer as it would a late scrape. Within ``ttl`` an answer is the current reading by design (the shared
        queries are sampled once per ``ttl``), as before. With 1 000s of pools a bound of ``timeout`` was too short:
        one answer slower than that made every evaluation wait, each holding one of the ticker's slots, and the
        replica's pools stopped until Prometheus answered."""
        return (await self.entry(address, query, max_age, hold))[1]

    async def entry(
        self, address: str, query: str, max_age: float | None = None, hold: float | None = None
    ) -> tuple[float, Result]:
        """:meth:`query`'s answer with the time Prometheus gave it (the reader's clock)."""
        got = self.answer(address, query, max_age, hold)
        if got is None:
            return await asyncio.shield(self._refresh((address, query)))
        if isinstance(got[1], QueryError):
            raise got[1]
        return got[0], got[1]

    def answer(self, address: str, query: str, max_age: float | None = None, hold: float | None = None) -> Entry | None:
        """What :meth:`query` gives without waiting, as (answered at, answer): a fresh one (or its cached error), or,
        while a refresh is under way and ``max_age`` is not set, the last answer, good or failed, if late by less than
        ``hold`` (beyond ``ttl``). None: the caller must wait for Prometheus."""
        now = self._clock()
        key = (address, query)
        hit = self._cache.get(key)
        if hit is None:
            return None
        ttl = self.ttl if max_age is None else min(self.ttl, max_age)
        if now - hit[0] < ttl:
            return hit
        limit = self.ttl + (self.timeout if hold is None else hold)
        refreshing = key in self._inflight
        # A failed answer too: the pools it failed report that failure again instead of waiting, each in one of
        # the ticker's places, for a Prometheus that has just timed out (at 5 000 pools those waits, up to
        # timeout x retries each, cut a replica to a sixth of its evaluations).
        if refreshing and max_age is None and now - hit[0] < limit:
            return hit
        return None

    def _refresh(self, key: tuple[str, str]) -> asyncio.Future[tuple[float, Result]]:
        """The refresh under way for ``key``, started if there is none (single-flight)."""
        fut = self._inflight.get(key)
        if fut is None:
            task = asyncio.ensure_future(self._fetch(key))
            task.add_done_callback(_retrieved)  # its waiters may all be cancelled: a failure is theirs, not a log line
            fut = self._inflight[key] = task
        return fut

    async def _fetch(self, key: tuple[str, str]) -> tuple[float, Result]:
        address, query = key
        started = time.perf_counter()
        ok = False
        try:
            raw = await self._query_fn(address, query)
            res: Result | QueryError = _parse(raw, query)
            ok = True
        except QueryError as e:
            res = e
        except Exception as e:  # transport and HTTP errors from the client library
            res = QueryError(f"{type(e).__name__}: {str(e)[:300]}")
        finally:
            self.queries_sent += 1
            if self._on_query:
                self._on_query(address, time.perf_counter() - started, ok)
            self._inflight.pop(key, None)
        at = self._clock()
        self._cache[key] = (at, res)
        if isinstance(res, QueryError):
            raise res
        return at, res

    def address_for(self, spec: PoolSpec) -> str:
        address = spec.metrics.prometheus_address or self.default_address
        if not address:
            raise QueryError(
                "no Prometheus address: set spec.metrics.prometheusAddress or start the operator with --prometheus-url"
            )
        return address

    async def _answers(
        self, address: str, want: Mapping[str, tuple[str, bool]], hold: float
    ) -> tuple[list[Any], float]:
        """The answers to ``want``'s queries (an exception for a failed one), and how late the latest contract answer
        among them is: held beyond ``ttl`` while a refresh is under way.

        Answers the cache holds are taken as they are: at 1 000 pools a task per query per decision (8 000 a tick)
        and a trip through a busy event loop for each decision were most of a quiet pool's decision time. Older
        answers are held while late by less than ``hold`` (the pool's staleAfterSeconds; :meth:`query`)."""
        queries = [q for q, _ in want.values()]
        got: list[Any] = [self.answer(address, q, hold=hold) for q in queries]
        missing = [i for i, e in enumerate(got) if e is None]
        if missing:
            waits = (self.entry(address, queries[i], hold=hold) for i in missing)
            for i, e in zip(missing, await asyncio.gather(*waits, return_exceptions=True), strict=True):
                got[i] = e
        now = self._clock()
        contract = [e for e, (_, custom) in zip(got, want.values(), strict=True) if not custom]
        held = [e for e in contract if isinstance(e, tuple) and not isinstance(e[1], QueryError)]  # a failure: no data
        late = max((now - e[0] - self.ttl for e in held), default=0.0)
        return [e if isinstance(e, BaseException) else e[1] for e in got], max(0.0, late)

    async def read(self, namespace: str, spec: PoolSpec) -> PoolSignals:
        """All signals of one pool. Never raises: failures are reported per signal."""
        out = PoolSignals()
        try:
            address = self.address_for(spec)
        except QueryError as e:
            out.errors["prometheus"] = str(e)
            return out
        defaults = default_queries(spec.metrics.rate_window)
        want: dict[str, tuple[str, bool]] = {}
        for sig in SIGNALS:
            override = spec.metrics.queries.get(sig)
            want[sig] = (render_custom(override, namespace, spec.channel), True) if override else (defaults[sig], False)
        want["age"] = (defaults["age"], False)
        results, late = await self._answers(address, want, float(spec.metrics.stale_after_seconds))
        key = (namespace, spec.channel)
        for (sig, (q, is_custom)), res in zip(want.items(), results, strict=True):
            if isinstance(res, BaseException):
                out.errors[sig] = str(res)
                value = None
            elif is_custom:
                value = res.get(None)  # set only for a scalar or exactly one series
                if value is None and res:
                    out.errors[sig] = f"custom query returned several series, expected one: {q!r}"
            else:
                value = res.get(key)
            if value is not None and not math.isfinite(value):
                value = None  # NaN/Inf is not data (and never zero)
            if sig == "age":
                # The sample's age when Prometheus answered, plus how late a held answer is (a late scrape's age).
                out.age_seconds = None if value is None else value + late
            else:
                out.values[FIELDS[sig]] = value
        # Custom backlog/arrival queries carry their own freshness; the contract's age applies only to defaults.
        if spec.metrics.queries.get("backlog"):
            out.age_seconds = None
        out.errors.pop("age", None)
        return out


def signal_errors_for_required(signals: PoolSignals) -> str | None:
    """The error text that explains why a required signal is missing (query failure), if any."""
    parts = [f"{k}: {v}" for k, v in signals.errors.items() if k in ("backlog", "arrivalRate", "prometheus")]
    return "; ".join(parts) or None


def describe(values: Mapping[str, float | None]) -> str:
    return ", ".join(f"{k}={'-' if v is None else f'{v:.4g}'}" for k, v in values.items())
