"""One operator-wide ticker over kopf's index of WorkerPools, in place of a kopf timer per pool.

A kopf timer is an asyncio task per pool that holds the pool's last full body (managedFields included) for its
whole life, plus kopf's per-object daemon bookkeeping and a finalizer on every pool. The ticker keeps one task
for all pools: every ``resolution`` seconds it starts the pools that are due, each at a stable phase inside the
interval (a hash of its key), so 1 000 pools spread evenly over the tick instead of arriving at once, and at
most ``concurrency`` evaluations run at the same time. Due pools come off a heap of next slots, so a step costs
what it starts, not the number of pools; the list of pools is read again every ``resync`` seconds (new pools get
their first slot, gone pools are forgotten). A pool whose previous evaluation is still running is not
started again (no overlap, as with kopf timers): if that evaluation began before the slot, the pool starts again
as soon as it ends; if it is still waiting for one of the ``concurrency`` places, it begins after the slot and
stands for it. What a pool is evaluated with comes from :func:`slim_body` — the
fields the tick reads, without managedFields or kopf's own annotations.

Pure scheduling, no kopf: ``keys`` lists the pools (the index), ``run_one`` evaluates one.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("chanscale")

PoolKey = tuple[str, str]

_META = ("name", "namespace", "uid", "generation", "resourceVersion", "creationTimestamp", "deletionTimestamp")


def plain(value: Any) -> Any:
    """A deep copy as plain dicts and lists (kopf's mapping views would keep the whole raw body alive)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _shared(value: Any) -> Any:
    """A raw sub-document as it is (kopf hands out the watch event's own dicts), else a plain copy of a view."""
    return value if isinstance(value, dict) else plain(value)


def slim_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a tick reads of a WorkerPool: identity, labels, our annotations, spec and status — not managedFields,
    not kopf's last-handled-configuration or progress annotations, not ``status.kopf``.

    The spec and the status' fields are the event's own dicts, shared, not copied: nothing changes them (kopf
    decodes a new body for every event, and the tick builds new documents for its writes), and they do not keep
    the rest of the event's body alive. Copying them was the index's largest cost per watch event."""
    meta = body.get("metadata") or {}
    slim: dict[str, Any] = {k: plain(meta[k]) for k in _META if meta.get(k) is not None}
    if meta.get("labels"):
        slim["labels"] = plain(meta["labels"])
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if "last-handled-configuration" not in k}
    if annotations:
        slim["annotations"] = plain(annotations)
    status = {k: _shared(v) for k, v in (body.get("status") or {}).items() if k != "kopf"}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": slim,
        "spec": _shared(body.get("spec") or {}),
        "status": status,
    }


#: The kinds of key of the one WorkerPool index (chanscale.handlers): (kind, key) -> the pool's entry or slim body.
BY_NAMESPACE, BY_TARGET, BY_KEY = "namespace", "target", "key"


class IndexView(Mapping[Any, Any]):
    """One kind of key of the merged WorkerPool index, read as the separate index it stands for: ``view[key]`` is
    ``index[(kind, key)]``. Live: it reads the index (kopf's, which changes with every watch event) at each call."""

    def __init__(self, index: Mapping[Any, Any], kind: str) -> None:
        self._index, self._kind = index, kind

    def __getitem__(self, key: Any) -> Any:
        return self._index[(self._kind, key)]

    def get(self, key: Any, default: Any = None) -> Any:
        return self._index.get((self._kind, key), default)

    def __contains__(self, key: object) -> bool:
        return (self._kind, key) in self._index

    def __iter__(self) -> Iterator[Any]:
        kind = self._kind
        return (k[1] for k in list(self._index) if k[0] == kind)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def pool_views(index: Mapping[Any, Any]) -> dict[str, IndexView]:
    """The merged WorkerPool index as the three indexes it replaces: ``workerpools`` (by namespace), ``claims`` (by
    (namespace, target)) and ``pools`` (by (namespace, name): the slim bodies the tick reads)."""
    return {
        "workerpools": IndexView(index, BY_NAMESPACE),
        "claims": IndexView(index, BY_TARGET),
        "pools": IndexView(index, BY_KEY),
    }


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def phase(key: PoolKey, interval: float) -> float:
    """A stable offset in [0, interval) for a pool: the same after a restart and on every replica."""
    return (zlib.crc32(f"{key[0]}/{key[1]}".encode()) / 2**32) * interval


def first_body(store: Any) -> Any:
    """The one body a kopf index store holds for a pool (None when the pool is gone)."""
    return next(iter(list(store or ())[:1]), None)


@dataclass
class PoolListing:
    """The pools this replica evaluates, as (key, body), for the ticker's resync and the fast path's poll.

    Finding them means scanning the whole index (every pool's three keys) and asking ``owns`` for each: at 5 000
    pools on 3 shards that was 15 % of a replica's Python time (py-spy). So the keys are kept between changes of
    membership: :meth:`note` (every watch event) marks the listing stale when a pool is new or going, as does a
    change of ``ownership`` (the shards this replica holds), and it is rescanned anyway every ``rescan`` seconds.
    The bodies are read afresh (at most every ``ttl`` seconds): a spec edit shows at once."""

    pools: Mapping[PoolKey, Any]  # (namespace, name) -> kopf's store of the pool's slim body
    owns: Callable[[PoolKey], bool] | None = None
    ownership: Callable[[], object] = lambda: None
    clock: Callable[[], float] = _loop_time
    ttl: float = 0.5
    rescan: float = 30.0
    keys: list[PoolKey] = field(default_factory=list)
    stale: bool = True
    scans: int = 0
    _known: set[PoolKey] = field(default_factory=set)
    _scanned: tuple[float, object] = (0.0, None)  # when, and the ownership it was made with
    _listed: tuple[float, list[tuple[PoolKey, Any]]] | None = None

    def note(self, key: PoolKey, gone: bool) -> None:
        """A watch event for ``key``: a new pool, or one being deleted, changes the listing."""
        if gone or key not in self._known:
            self.stale = True

    def current(self) -> list[PoolKey]:
        """The pools' keys, rescanned if membership or ownership may have changed."""
        now, owned = self.clock(), self.ownership()
        when, scanned_with = self._scanned
        if self.stale or owned != scanned_with or not 0 <= now - when < self.rescan:
            self.stale, self._scanned, self._listed = False, (now, owned), None
            owns, every = self.owns, list(self.pools)
            self.keys = every if owns is None else [k for k in every if owns(k)]
            self._known = set(every)
            self.scans += 1
        return self.keys

    def bodies(self) -> list[tuple[PoolKey, Any]]:
        """(key, body) of every listed pool that exists and is not being deleted."""
        keys, now = self.current(), self.clock()
        if self._listed is not None and 0 <= now - self._listed[0] < self.ttl:
            return self._listed[1]
        out = []
        for key in keys:
            body = first_body(self.pools.get(key))
            if body is not None and not (body.get("metadata") or {}).get("deletionTimestamp"):
                out.append((key, body))
        self._listed = (now, out)
        return out


@dataclass
class Ticker:
    """Starts every known pool once per ``interval`` at its phase; see the module docstring."""

    interval: float
    keys: Callable[[], Iterable[PoolKey]]
    run_one: Callable[[PoolKey, bool], Awaitable[None]]  # (pool, forced by the fast path)
    concurrency: int = 16
    # A step starts the pools due since the last one, and a quiet pool's decision runs without yielding (its signals
    # come from the shared cache): at 1 000 pools on a 10 s tick, 10 per step instead of 25 with 0.25 s steps, so
    # the event loop is never busy for long with one step (a policy call's answer waits for the loop to be free).
    resolution: float = 0.1
    resync: float = 1.0
    clock: Callable[[], float] = _loop_time
    next_due: dict[PoolKey, float] = field(default_factory=dict)
    heap: list[tuple[float, PoolKey]] = field(default_factory=list)  # (slot, pool); stale entries are skipped
    synced_at: float | None = None
    inflight: dict[PoolKey, asyncio.Task[None]] = field(default_factory=dict)
    running: dict[PoolKey, float] = field(default_factory=dict)  # inflight and past the limit: since when
    parked: dict[PoolKey, float] = field(default_factory=dict)  # due while running: its slot, kept until done
    started: int = 0
    forced: set[PoolKey] = field(default_factory=set)
    on_lag: Callable[[float], None] | None = None  # seconds each step came late: how busy the event loop is

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.concurrency)

    def _slot_after(self, key: PoolKey, now: float) -> float:
        """The first time after ``now`` at this pool's phase."""
        off = phase(key, self.interval)
        cycles = (now - off) // self.interval + 1
        return off + cycles * self.interval

    def _schedule(self, key: PoolKey, now: float) -> None:
        when = self.next_due[key] = self._slot_after(key, now)
        heapq.heappush(self.heap, (when, key))

    def sync(self, now: float) -> None:
        """Read the pools again: new ones get their first slot (never a burst), gone ones are forgotten."""
        seen = set(self.keys())
        for key in seen:
            if key not in self.next_due:
                self._schedule(key, now)
        for key in [k for k in self.next_due if k not in seen]:
            del self.next_due[key]
        self.synced_at = now

    def due(self, now: float) -> list[PoolKey]:
        """The pools to start now; advances their next slot. A pool running since before its slot is parked until
        it is done (:meth:`_done` puts it back); one still waiting for a place will begin after the slot, so the slot
        is its: the next one is scheduled. Neither goes back on the heap at every step (at 5 000 pools thousands
        wait for a place, and re-queueing them every 0.1 s was 5 % of a replica's CPU)."""
        if self.synced_at is None or not 0 <= now - self.synced_at < self.resync:
            self.sync(now)
        out: list[PoolKey] = []
        while self.heap and self.heap[0][0] <= now:
            when, key = heapq.heappop(self.heap)
            if self.next_due.get(key) != when:
                continue  # forgotten or rescheduled since
            if key not in self.inflight:
                out.append(key)
            elif key in self.running and self.running[key] < when:
                self.parked[key] = when
                continue
            self._schedule(key, now)
        return out

    def trigger(self, key: PoolKey) -> None:
        """Evaluate this pool at the next step, ahead of its slot (chanscale.fastpath); its slot is kept."""
        self.forced.add(key)

    async def _guarded(self, key: PoolKey, forced: bool, delay: float = 0.0) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        async with self._slots:
            self.running[key] = self.clock()
            try:
                await self.run_one(key, forced)
            except Exception:  # run_one never raises by contract; one pool must not stop the others
                log.exception("pool %s/%s: evaluation failed", *key)

    def _done(self, key: PoolKey, _task: asyncio.Task[None]) -> None:
        self.inflight.pop(key, None)
        self.running.pop(key, None)
        when = self.parked.pop(key, None)
        if when is not None and self.next_due.get(key) == when:  # still known: due at the next step
            heapq.heappush(self.heap, (when, key))

    def step(self, now: float) -> None:
        due = self.due(now)
        forced = [k for k in self.forced if k not in self.inflight and k in self.next_due and k not in due]
        self.forced.difference_update(forced)
        # Forced pools first and at once (the fast path's reaction); the step's other starts are spread over the
        # step, so the loop serves I/O (policy answers, watch events) between them instead of after the whole batch.
        batch = forced + due
        spacing = self.resolution / len(batch) if batch else 0.0
        for i, key in enumerate(batch):
            delay = 0.0 if i < len(forced) else i * spacing
            coro = self._guarded(key, i < len(forced), delay)
            task = asyncio.create_task(coro, name=f"chanscale-tick-{key[0]}/{key[1]}")
            self.inflight[key] = task
            task.add_done_callback(functools.partial(self._done, key))
            self.started += 1

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Forever: wait for ``ready`` (kopf's indexes are filled), then start due pools every ``resolution``."""
        if ready is not None:
            await ready.wait()
        try:
            while True:
                now = self.clock()
                self.step(now)
                await asyncio.sleep(self.resolution)
                if self.on_lag is not None:
                    self.on_lag(max(0.0, self.clock() - now - self.resolution))
        finally:
            for task in list(self.inflight.values()):
                task.cancel()
