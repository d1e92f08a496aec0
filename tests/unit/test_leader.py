"""Lease-based leader election and shard ownership against an in-memory Lease store with a shared clock."""

from __future__ import annotations

import asyncio
import copy

import pytest

from chanscale.leader import Elector, LeaseConflict, LeaseRecord, shard_of

pytestmark = pytest.mark.unit


class Store:
    """Leases with resourceVersions: a write with a stale version conflicts, as on the API server."""

    def __init__(self) -> None:
        self.leases: dict[str, tuple[LeaseRecord, int]] = {}
        self.rv = 0

    async def read(self, name: str) -> LeaseRecord | None:
        got = self.leases.get(name)
        if got is None:
            return None
        rec = copy.copy(got[0])
        rec.resource_version = str(got[1])
        return rec

    async def write(self, name: str, record: LeaseRecord) -> str:
        current = self.leases.get(name)
        if (None if current is None else str(current[1])) != record.resource_version:
            raise LeaseConflict(name)
        self.rv += 1
        self.leases[name] = (copy.copy(record), self.rv)
        return str(self.rv)

    async def members(self, group: str) -> list[LeaseRecord]:
        return [copy.copy(r) for r, _ in self.leases.values() if r.group == group]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _electors(n: int, shards: int) -> tuple[Store, Clock, list[Elector]]:
    store, clock = Store(), Clock()
    return (
        store,
        clock,
        [Elector(store, identity=f"r{i}", shards=shards, wall=clock, mono=clock) for i in range(n)],
    )


def _simulate(clock: Clock, electors: list[Elector], seconds: int, dead: set[int]) -> list[dict[int, int]]:
    """Advance 1 s at a time; live electors run a round every 2 s. Returns, per second, shard -> acting count."""
    out = []

    async def go() -> None:
        for step in range(seconds):
            clock.t += 1.0
            for i, e in enumerate(electors):
                if i not in dead and step % 2 == i % 2:
                    await e.round()
            acting: dict[int, int] = {}
            for e in electors:
                for s in e.active_shards():
                    acting[s] = acting.get(s, 0) + 1
            out.append(acting)

    asyncio.run(go())
    return out


def test_one_leader_and_a_killed_leader_is_replaced_within_the_lease_without_overlap() -> None:
    _store, clock, (a, b) = _electors(2, 1)
    timeline = _simulate(clock, [a, b], 6, dead=set())
    assert a.is_leader and not b.is_leader
    assert all(v == 1 for acting in timeline[1:] for v in acting.values())
    timeline = _simulate(clock, [a, b], 20, dead={0})  # the leader is killed: no renewals, no release
    assert b.is_leader and not a.is_leader
    assert all(v <= 1 for acting in timeline for v in acting.values())  # never two acting at once
    gap = next(i for i, acting in enumerate(timeline) if acting and b.active_shards())
    assert gap <= a.lease_duration + a.retry_period + 1


def test_a_graceful_stop_hands_over_at_the_next_round() -> None:
    _store, clock, (a, b) = _electors(2, 1)
    _simulate(clock, [a, b], 4, dead=set())
    asyncio.run(a.release())
    assert not a.is_leader
    _simulate(clock, [a, b], 2, dead={0})
    assert b.is_leader


def test_shards_spread_over_replicas_and_move_to_the_survivors() -> None:
    _store, clock, electors = _electors(3, 6)
    timeline = _simulate(clock, electors, 30, dead=set())
    held = [e.active_shards() for e in electors]
    assert sorted(len(h) for h in held) == [2, 2, 2]
    assert set().union(*held) == set(range(6))
    assert all(v <= 1 for acting in timeline for v in acting.values())
    timeline = _simulate(clock, electors, 30, dead={1})
    held = [electors[0].active_shards(), electors[2].active_shards()]
    assert sorted(len(h) for h in held) == [3, 3] and held[0] | held[1] == set(range(6))
    assert all(v <= 1 for acting in timeline for v in acting.values())


def test_shard_of_is_stable_and_covers_all_shards() -> None:
    keys = [("ns", f"p{i}") for i in range(300)]
    assert [shard_of(k, 3) for k in keys] == [shard_of(k, 3) for k in keys]
    assert {shard_of(k, 3) for k in keys} == {0, 1, 2}
    assert {shard_of(k, 1) for k in keys} == {0}
