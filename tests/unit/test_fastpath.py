"""The fast path: two shared queries for all pools; a pool is triggered only when its signal moves materially."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chanscale.fastpath import FastPath, moved, watched
from chanscale.signals import PrometheusReader

pytestmark = pytest.mark.unit


def _series(values: dict[str, float]) -> list[dict[str, Any]]:
    return [{"metric": {"namespace": "ns", "channel": c}, "value": [0, str(v)]} for c, v in values.items()]


def test_moved_needs_both_the_relative_change_and_the_floor() -> None:
    assert not moved((100.0, 10.0), (115.0, 11.0), 0.2)  # within 20 %
    assert moved((100.0, 10.0), (130.0, 10.0), 0.2)
    assert not moved((0.0, 0.0), (5.0, 1.0), 0.2)  # below the floors: noise
    assert moved((0.0, 10.0), (40.0, 10.0), 0.2)
    assert moved((None, 10.0), (3.0, 10.0), 0.2)  # a signal appearing is news


def test_watched_skips_pools_it_cannot_serve_from_the_shared_queries() -> None:
    assert watched({"channel": "a"}, "http://p") == ("a", "1m")
    assert watched({"channel": "a", "metrics": {"rateWindow": "30s"}}, "http://p") == ("a", "30s")
    assert watched({"channel": "a", "metrics": {"queries": {"backlog": "x"}}}, "http://p") is None
    assert watched({"channel": "a", "metrics": {"prometheusAddress": "http://other"}}, "http://p") is None


def test_one_poll_costs_two_queries_for_all_pools_and_triggers_only_movers() -> None:
    backlog = {f"c{i}": 50.0 for i in range(100)}
    sent: list[str] = []

    async def query(_address: str, q: str) -> list[Any]:
        sent.append(q)
        return _series(backlog if "backlog" in q else {c: 10.0 for c in backlog})

    triggered: list[tuple[str, str]] = []
    pools = [(("ns", f"p{i}"), {"channel": f"c{i}"}) for i in range(100)]

    async def main() -> None:
        reader = PrometheusReader("http://p", ttl=60.0, query_fn=query, clock=clock)
        fp = FastPath(reader, "http://p", pools=lambda: pools, trigger=triggered.append, period=1.0)
        await fp.poll_once()  # baselines
        now[0] += 1.0
        backlog["c7"] = 500.0
        await fp.poll_once()

    now = [0.0]

    def clock() -> float:
        return now[0]

    asyncio.run(main())
    assert len(sent) == 4  # two polls × (backlog, arrivals), whatever the number of pools
    assert triggered == [("ns", "p7")]


def test_slow_polls_slow_the_fast_path_down() -> None:
    """A poll that takes more than a tenth of the period stretches the wait (fastpath.DUTY): at 5 000 channels on a
    Prometheus that answers in seconds, the fast path backs off instead of adding load; quick polls keep the period."""
    reader = PrometheusReader("http://p", ttl=60.0, query_fn=lambda *_: [])
    fp = FastPath(reader, "http://p", pools=list, trigger=lambda _k: None, period=1.0)
    assert fp.pause(0.02) == 1.0
    assert fp.pause(0.1) == pytest.approx(1.0)
    assert fp.pause(2.0) == pytest.approx(18.0)
