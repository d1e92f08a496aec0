"""The Prometheus reader: shared aggregated queries, custom overrides, and failures that are never zero."""

import asyncio
import math
from typing import Any

import pytest

from chanscale.signals import PrometheusReader, default_queries, render_custom
from chanscale.spec import PoolSpec

pytestmark = pytest.mark.unit


def spec(channel: str, **over: Any) -> PoolSpec:
    d: dict[str, Any] = {
        "channel": channel,
        "scaleTargetRef": {"name": "w"},
        "maxReplicas": 5,
        "slo": {"p99LatencySeconds": 1},
    }
    d.update(over)
    return PoolSpec.from_dict(d)


class FakeProm:
    def __init__(self, n_channels: int = 3, fail: bool = False, value: Any = "5") -> None:
        self.calls: list[str] = []
        self.n = n_channels
        self.fail = fail
        self.value = value

    async def __call__(self, address: str, query: str) -> list[Any]:
        self.calls.append(query)
        await asyncio.sleep(0)
        if self.fail:
            raise ConnectionError("connection refused")
        if "vector(" in query or "scalar(" in query:
            return [0, "7"]
        if "two_series" in query:
            return [{"metric": {"a": "1"}, "value": [0, "1"]}, {"metric": {"a": "2"}, "value": [0, "2"]}]
        return [{"metric": {"namespace": "ns", "channel": f"c{i}"}, "value": [0, self.value]} for i in range(self.n)]


async def test_queries_per_tick_do_not_grow_with_pools() -> None:
    fake = FakeProm(n_channels=100)
    reader = PrometheusReader("http://prom", ttl=5, query_fn=fake)
    results = await asyncio.gather(*(reader.read("ns", spec(f"c{i}")) for i in range(100)))
    assert len(fake.calls) == len(default_queries("1m"))  # 7, whatever the number of pools
    assert all(r.values["backlog"] == 5.0 for r in results)
    await reader.read("ns", spec("c1"))
    assert len(fake.calls) == 7  # still cached


async def test_a_cached_read_never_waits_for_the_event_loop() -> None:
    fake = FakeProm(n_channels=3)
    reader = PrometheusReader("http://prom", ttl=5, query_fn=fake)
    first = await reader.read("ns", spec("c1"))
    coro = reader.read("ns", spec("c2"))
    with pytest.raises(StopIteration) as done:  # ran to the end without yielding: no task, no turn of the loop
        coro.send(None)
    assert done.value.value.values["backlog"] == first.values["backlog"] == 5.0
    assert len(fake.calls) == 7


async def test_cache_expires_after_ttl() -> None:
    now = [0.0]
    fake = FakeProm()
    reader = PrometheusReader("http://prom", ttl=5, query_fn=fake, clock=lambda: now[0])
    await reader.read("ns", spec("c0"))
    now[0] = 6.0
    await reader.read("ns", spec("c0"))
    assert len(fake.calls) == 14


async def test_custom_query_costs_only_its_pool_and_substitutes_labels() -> None:
    fake = FakeProm()
    reader = PrometheusReader("http://prom", query_fn=fake)
    s = spec("c0", metrics={"queries": {"backlog": 'scalar(vector(1)) + 0*up{channel="$channel",ns="$namespace"}'}})
    r = await reader.read("ns", s)
    assert r.values["backlog"] == 7.0
    assert any('channel="c0",ns="ns"' in q for q in fake.calls)
    assert r.age_seconds is None  # a custom backlog query carries its own freshness


async def test_custom_query_with_several_series_is_an_error() -> None:
    reader = PrometheusReader("http://prom", query_fn=FakeProm())
    r = await reader.read("ns", spec("c0", metrics={"queries": {"arrivalRate": "two_series"}}))
    assert r.values["arrival_rate"] is None
    assert "expected one" in r.errors["arrivalRate"]


async def test_missing_series_is_none_not_zero() -> None:
    reader = PrometheusReader("http://prom", query_fn=FakeProm(n_channels=1))
    r = await reader.read("ns", spec("other"))
    assert r.values["backlog"] is None and r.values["arrival_rate"] is None
    assert not r.errors  # absent, not failed


async def test_nan_is_none() -> None:
    reader = PrometheusReader("http://prom", query_fn=FakeProm(value="NaN"))
    r = await reader.read("ns", spec("c0"))
    assert r.values["p99_latency"] is None


async def test_prometheus_down_reports_each_signal() -> None:
    reader = PrometheusReader("http://prom", query_fn=FakeProm(fail=True))
    r = await reader.read("ns", spec("c0"))
    assert all(v is None for v in r.values.values())
    assert "connection refused" in (r.error or "")


async def test_no_address_is_a_clear_error() -> None:
    reader = PrometheusReader(None, query_fn=FakeProm())
    r = await reader.read("ns", spec("c0"))
    assert "--prometheus-url" in (r.error or "")


def test_render_custom_only_replaces_placeholders() -> None:
    assert render_custom('x{channel="$channel"}', "ns", "c") == 'x{channel="c"}'
    assert not math.isnan(1.0)


async def test_a_refresh_under_way_serves_the_previous_answer_to_others() -> None:
    now = [0.0]
    gate = asyncio.Event()
    fake = FakeProm()

    async def slow(address: str, query: str) -> list[Any]:
        if now[0] > 0:
            await gate.wait()  # a slow Prometheus answer
        return await fake(address, query)

    reader = PrometheusReader("http://prom", ttl=5, timeout=5, query_fn=slow, clock=lambda: now[0])
    q = default_queries("1m")["backlog"]
    first = await reader.query("http://prom", q)
    now[0] = 6.0
    starter = asyncio.ensure_future(reader.query("http://prom", q))  # starts the refresh and waits for it
    await asyncio.sleep(0)
    assert await reader.query("http://prom", q) == first  # does not wait
    fast = asyncio.ensure_future(reader.query("http://prom", q, max_age=1.0))  # the fast path wants it fresh
    await asyncio.sleep(0)
    assert not fast.done()
    gate.set()
    assert await starter == await fast
    now[0] = 20.0  # the previous answer is too old (> ttl + timeout): wait for the refresh
    gate.clear()
    late = asyncio.ensure_future(reader.query("http://prom", q))
    await asyncio.sleep(0)
    other = asyncio.ensure_future(reader.query("http://prom", q))
    await asyncio.sleep(0)
    assert not other.done()
    gate.set()
    await asyncio.gather(late, other)


class GatedProm(FakeProm):
    """Answers at once until ``slow`` is set; then every query waits for ``gate``."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.slow = False
        self.gate = asyncio.Event()

    async def __call__(self, address: str, query: str) -> list[Any]:
        if self.slow:
            await self.gate.wait()
        if "timestamp(" in query:  # the contract's age query: samples 2 s old when Prometheus answers
            return [{"metric": {"namespace": "ns", "channel": f"c{i}"}, "value": [0, "2"]} for i in range(self.n)]
        return await super().__call__(address, query)


async def test_a_slow_refresh_does_not_stop_the_pools_while_the_held_answer_is_within_stale_after() -> None:
    """A refresh slower than ttl + timeout: pools read the previous answers (their lateness added to the sample age)
    instead of each waiting for Prometheus; later than the pool's staleAfterSeconds they wait."""
    now = [0.0]
    prom = GatedProm()
    reader = PrometheusReader("http://prom", ttl=5, timeout=5, query_fn=prom, clock=lambda: now[0])
    first = await reader.read("ns", spec("c0"))
    assert first.age_seconds == 2.0
    prom.slow, now[0] = True, 6.0
    starter = asyncio.ensure_future(reader.read("ns", spec("c0")))  # starts the refreshes and waits for them
    await asyncio.sleep(0)
    assert not starter.done()
    now[0] = 30.0  # the refresh has taken 24 s, far past ttl + timeout
    other = await reader.read("ns", spec("c1"))  # no waiting: the held answers, 30 s old, 25 s late
    assert other.values["backlog"] == 5.0 and other.age_seconds == 27.0  # the sample's 2 s + 25 s late
    strict = spec("c1", metrics={"staleAfterSeconds": 20})
    waiting = asyncio.ensure_future(reader.read("ns", strict))  # later than its bound: it waits
    await asyncio.sleep(0)
    assert not waiting.done()
    prom.gate.set()
    fresh = await waiting
    assert fresh.age_seconds == 2.0 and (await starter).age_seconds == 2.0


async def test_after_a_failed_answer_only_the_refresh_starter_waits() -> None:
    """A query that failed (a timeout under load): once its answer is older than ttl, the pool that starts the next
    refresh waits for it, the others get the failure again at once (a failed read, as within ttl) instead of each
    waiting for the same Prometheus in one of the ticker's places. The new answer replaces it for everyone."""
    now = [0.0]
    prom = GatedProm(fail=True)
    reader = PrometheusReader("http://prom", ttl=5, timeout=5, query_fn=prom, clock=lambda: now[0])
    failed = await reader.read("ns", spec("c0"))
    assert "connection refused" in (failed.errors.get("backlog") or "")
    prom.slow, now[0] = True, 6.0
    starter = asyncio.ensure_future(reader.read("ns", spec("c0")))  # starts the refreshes and waits for them
    await asyncio.sleep(0)
    assert not starter.done()
    other = await asyncio.wait_for(reader.read("ns", spec("c1")), 1)  # no waiting: the last failure
    assert "connection refused" in (other.errors.get("backlog") or "") and other.values["backlog"] is None
    prom.fail, prom.slow = False, False
    prom.gate.set()
    assert (await starter).values["backlog"] == 5.0
    assert (await reader.read("ns", spec("c1"))).values["backlog"] == 5.0


async def test_a_held_answer_past_stale_after_is_stale_to_the_decision() -> None:
    """The time held beyond ttl counts against staleAfterSeconds exactly as a late scrape would."""
    from chanscale.decision import Observation, _signals

    now = [0.0]
    prom = GatedProm()
    reader = PrometheusReader("http://prom", ttl=5, timeout=5, query_fn=prom, clock=lambda: now[0])
    await reader.read("ns", spec("c0"))
    prom.slow, now[0] = True, 6.0
    starter = asyncio.ensure_future(reader.read("ns", spec("c0")))
    await asyncio.sleep(0)
    now[0] = 64.0  # 59 s late (ttl 5 s), the sample 2 s old when answered: 61 s > the default 60 s
    sig = await reader.read("ns", spec("c1"))
    v = sig.values
    obs = Observation(
        now=now[0],
        current_replicas=1,
        ready_replicas=1,
        backlog=v["backlog"],
        arrival_rate=v["arrival_rate"],
        age_seconds=sig.age_seconds,
    )
    _clean, _sigs, missing, stale = _signals(spec("c1"), obs)
    assert stale and "backlog" in missing
    prom.gate.set()
    await starter


async def test_a_failed_refresh_whose_waiters_were_cancelled_is_not_left_unretrieved() -> None:
    prom = GatedProm(fail=True)
    prom.slow = True
    reader = PrometheusReader("http://prom", query_fn=prom)
    q = default_queries("1m")["backlog"]
    waiter = asyncio.ensure_future(reader.query("http://prom", q))
    await asyncio.sleep(0)
    waiter.cancel()
    prom.gate.set()
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
    for _ in range(5):
        await asyncio.sleep(0)
    import gc

    gc.collect()
    assert not seen
    with pytest.raises(Exception, match="connection refused"):
        await reader.query("http://prom", q)  # the failure is cached for ttl, as before
