"""The operator-wide ticker: every pool once per interval at a stable phase, no overlap, no burst."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from chanscale.ticker import Ticker, phase, slim_body

pytestmark = pytest.mark.unit


def _ticker(keys: list[tuple[str, str]], interval: float = 10.0) -> Ticker:
    async def nothing(_key: tuple[str, str], _forced: bool) -> None:
        return None

    return Ticker(interval=interval, keys=lambda: keys, run_one=nothing, clock=lambda: 0.0)


def test_phase_is_stable_and_inside_the_interval() -> None:
    keys = [("ns", f"p{i}") for i in range(1000)]
    phases = [phase(k, 10.0) for k in keys]
    assert phases == [phase(k, 10.0) for k in keys]
    assert all(0.0 <= p < 10.0 for p in phases)
    # spread: every tenth of the interval holds some pools, none holds a quarter of them
    buckets = [sum(1 for p in phases if b <= p < b + 1) for b in range(10)]
    assert min(buckets) > 0 and max(buckets) < 250


def test_each_pool_is_due_once_per_interval_and_new_pools_wait_for_their_slot() -> None:
    keys = [("ns", f"p{i}") for i in range(200)]
    t = _ticker(keys)
    assert t.due(0.0) == []  # first sight: a slot is assigned, nothing bursts
    started: list[tuple[str, str]] = []
    now = 0.0
    while now < 30.0:
        now += 0.25
        started += t.due(now)
    counts = {k: started.count(k) for k in keys}
    assert set(counts.values()) <= {2, 3} and sum(counts.values()) >= 2 * len(keys)


def test_a_running_pool_is_not_started_again_and_a_gone_pool_is_forgotten() -> None:
    keys = [("ns", "a"), ("ns", "b")]
    t = _ticker(keys)
    t.due(0.0)
    t.inflight[("ns", "a")] = None  # type: ignore[assignment]
    assert t.due(10.0) == [("ns", "b")]
    keys.remove(("ns", "b"))
    t.due(20.0)
    assert ("ns", "b") not in t.next_due


def test_a_pool_running_since_before_its_slot_starts_again_when_done_and_only_then() -> None:
    keys = [("ns", "a")]
    t = _ticker(keys)
    t.due(0.0)
    slot = t.next_due[("ns", "a")]
    t.inflight[("ns", "a")] = None  # type: ignore[assignment]
    t.running[("ns", "a")] = slot - 1.0  # began before the slot: its answer predates it
    assert t.due(slot) == [] and t.parked == {("ns", "a"): slot}
    assert t.due(slot + 5.0) == [] and not t.heap  # parked: not looked at again at every step
    t._done(("ns", "a"), None)  # type: ignore[arg-type]
    assert t.due(slot + 5.1) == [("ns", "a")]  # at the next step, and its next slot is kept
    assert t.next_due[("ns", "a")] == slot + 10.0


def test_a_pool_still_waiting_for_a_place_takes_the_slot_it_will_begin_after() -> None:
    keys = [("ns", "a")]
    t = _ticker(keys)
    t.due(0.0)
    slot = t.next_due[("ns", "a")]
    t.inflight[("ns", "a")] = None  # type: ignore[assignment]  # started for an earlier slot, not yet running
    assert t.due(slot) == [] and not t.parked
    assert t.next_due[("ns", "a")] == slot + 10.0  # its evaluation begins after this slot: one, not two
    t._done(("ns", "a"), None)  # type: ignore[arg-type]
    assert t.due(slot + 1.0) == []


def test_run_evaluates_every_pool_and_bounds_concurrency() -> None:
    keys = [("ns", f"p{i}") for i in range(20)]
    seen: list[tuple[str, str]] = []
    running = peak = 0

    async def run_one(key: tuple[str, str], _forced: bool) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        seen.append(key)
        running -= 1

    async def main() -> None:
        t = Ticker(interval=0.5, keys=lambda: keys, run_one=run_one, concurrency=3, resolution=0.01)
        task = asyncio.create_task(t.run())
        while len(set(seen)) < len(keys):
            await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(asyncio.wait_for(main(), 60))
    assert set(seen) == set(keys) and peak <= 3


def test_slim_body_keeps_what_a_tick_reads_and_drops_the_rest() -> None:
    body = {
        "apiVersion": "chanscale.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "uid": "u",
            "generation": 3,
            "resourceVersion": "42",
            "labels": {"a": "b"},
            "annotations": {
                "chanscale.dev/paused": "true",
                "chanscale.dev/last-handled-configuration": "{...}",
            },
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {"channel": "c", "scaleTargetRef": {"name": "w"}},
        "status": {"replicas": 2, "kopf": {"progress": {}}},
    }
    slim = slim_body(body)
    assert slim["metadata"] == {
        "name": "p",
        "namespace": "ns",
        "uid": "u",
        "generation": 3,
        "resourceVersion": "42",
        "labels": {"a": "b"},
        "annotations": {"chanscale.dev/paused": "true"},
    }
    assert slim["spec"] == body["spec"]  # the event's own dict, shared: nothing changes it
    assert slim["metadata"] is not body["metadata"]  # managedFields are not kept alive
    assert slim["status"] == {"replicas": 2}
    assert slim["kind"] == "WorkerPool"
    viewed = slim_body(kopf.Body(body))  # kopf's views become plain dicts
    assert viewed == slim and type(viewed["spec"]) is dict and type(viewed["status"]) is dict


def test_a_triggered_pool_runs_at_the_next_step_and_keeps_its_slot() -> None:
    keys = [("ns", "a")]
    runs: list[bool] = []

    async def run_one(_key: tuple[str, str], forced: bool) -> None:
        runs.append(forced)

    async def main() -> None:
        t = Ticker(interval=100.0, keys=lambda: keys, run_one=run_one, clock=lambda: 0.0)
        t.step(0.0)  # first sight: slot assigned, nothing runs
        slot = t.next_due[("ns", "a")]
        t.trigger(("ns", "a"))
        t.step(0.0)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert runs == [True] and t.next_due[("ns", "a")] == slot

    asyncio.run(main())


def test_pools_are_read_once_per_resync_and_steps_cost_what_they_start() -> None:
    keys = [("ns", f"p{i}") for i in range(100)]
    reads = 0

    def listed() -> list[tuple[str, str]]:
        nonlocal reads
        reads += 1
        return keys

    async def nothing(_key: tuple[str, str], _forced: bool) -> None:
        return None

    t = Ticker(interval=10.0, keys=listed, run_one=nothing, clock=lambda: 0.0, resync=1.0)
    started: list[tuple[str, str]] = []
    now = 0.0
    while now < 20.0:
        started += t.due(now)
        now += 0.25
    assert reads == 20  # once per second, not at every step
    assert set(started) == set(keys) and {started.count(k) for k in keys} <= {1, 2}  # once per 10 s interval
    keys.append(("ns", "new"))
    while now < 32.0:
        started += t.due(now)
        now += 0.25
    assert ("ns", "new") in started  # picked up at the next read, started at its own slot
    assert len(t.heap) <= len(keys) + 1  # no stale entries pile up


def test_one_pool_index_reads_as_the_three_it_replaces() -> None:
    """One kopf index handler per WorkerPool event; pool_views reads its three kinds of key as separate indexes."""
    import kopf

    from chanscale.handlers import POOL_INDEX, _register_pool_indexes
    from chanscale.ticker import pool_views

    registry = kopf.OperatorRegistry()
    _register_pool_indexes(registry)
    handlers = list(registry._indexing.get_all_handlers())
    assert [h.id for h in handlers] == [POOL_INDEX]  # one handler, so kopf's machinery runs once per event

    def body(name: str, target: str) -> dict[str, Any]:
        meta = {"namespace": "ns", "name": name, "uid": name, "creationTimestamp": "2026-01-01T00:00:00Z"}
        spec = {"channel": name, "scaleTargetRef": {"name": target}, "maxReplicas": 3}
        return {"apiVersion": "chanscale.dev/v1alpha1", "kind": "WorkerPool", "metadata": meta, "spec": spec}

    index: dict[Any, list[Any]] = {}  # kopf's Index: key -> the values of every object that returned that key
    for b in (body("a", "w1"), body("b", "w1"), body("c", "w2")):
        fn = handlers[0].fn
        got = asyncio.run(
            fn(body=b, namespace="ns", name=b["metadata"]["name"], spec=b["spec"], status={}, meta=b["metadata"])
        )
        for key, value in got.items():
            index.setdefault(key, []).append(value)
    views = pool_views(index)
    assert [e["name"] for e in views["workerpools"]["ns"]] == ["a", "b", "c"]
    assert [e["name"] for e in views["claims"][("ns", "w1")]] == ["a", "b"]
    assert views["claims"].get(("ns", "w3")) is None and ("ns", "w2") in views["claims"]
    assert sorted(views["pools"]) == [("ns", "a"), ("ns", "b"), ("ns", "c")] and len(views["pools"]) == 3
    assert [b["spec"]["channel"] for b in views["pools"][("ns", "c")]] == ["c"]
    assert dict(views["pools"].items()).keys() == {("ns", "a"), ("ns", "b"), ("ns", "c")}


def test_the_pool_listing_is_scanned_again_only_when_membership_or_ownership_changes() -> None:
    from chanscale.ticker import PoolListing

    pools: dict[tuple[str, str], list[dict[str, Any]]] = {
        ("ns", f"p{i}"): [{"metadata": {"name": f"p{i}"}, "spec": {"n": i}}] for i in range(4)
    }
    clock, shards = [0.0], [frozenset({0})]

    def owns(key: tuple[str, str]) -> bool:
        return int(key[1][1:]) % 2 in shards[0]

    listing = PoolListing(pools, owns, lambda: shards[0], clock=lambda: clock[0], ttl=0.5, rescan=30.0)
    assert listing.current() == [("ns", "p0"), ("ns", "p2")] and listing.scans == 1
    listing.note(("ns", "p0"), gone=False)  # a status write of a known pool: nothing to list again
    clock[0] = 1.0
    assert listing.current() == [("ns", "p0"), ("ns", "p2")] and listing.scans == 1
    pools[("ns", "p4")] = [{"metadata": {"name": "p4"}, "spec": {}}]
    listing.note(("ns", "p4"), gone=False)  # a new pool
    assert ("ns", "p4") in listing.current() and listing.scans == 2
    shards[0] = frozenset({0, 1})  # took over a shard
    assert len(listing.current()) == 5 and listing.scans == 3
    clock[0] = 40.0  # and every `rescan` seconds in any case
    listing.current()
    assert listing.scans == 4
    # bodies are read afresh (a spec edit shows at once), without pools being deleted or gone
    pools[("ns", "p1")] = [{"metadata": {"name": "p1", "deletionTimestamp": "x"}, "spec": {}}]
    del pools[("ns", "p3")]
    pools[("ns", "p0")] = [{"metadata": {"name": "p0"}, "spec": {"n": 100}}]
    clock[0] = 41.0
    listed = dict(listing.bodies())
    assert set(listed) == {("ns", "p0"), ("ns", "p2"), ("ns", "p4")} and listed[("ns", "p0")]["spec"] == {"n": 100}
