"""The chanscale metrics contract for Python workers, on prometheus_client (docs/sdk.md).

The same series, labels and default buckets as the Go SDK (sdk/go)::

    from chanscale_sdk import ChannelMetrics, Pool
    from prometheus_client import start_http_server

    metrics = ChannelMetrics("orders")                  # the WorkerPool's spec.channel
    pool = Pool(metrics, handle=process_order, workers=8)
    start_http_server(9400)
    pool.start()
    for order in source:
        pool.submit(order)                              # counts an arrival; the queue's size is the backlog

``ChannelMetrics`` alone serves workers that manage their own threads or tasks: ``enqueued()``, ``add_backlog()``
and ``with metrics.job(enqueued_at): ...``.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric

__all__ = ["DEFAULT_BUCKETS", "ChannelMetrics", "Pool"]

#: Latency bucket upper bounds (seconds): every round SLO (100 ms ... 60 s) is a bound (docs/sdk.md).
DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)

T = TypeVar("T")


class _Collector:
    """One per registry: yields the contract's six families with a sample set per registered channel."""

    def __init__(self) -> None:
        self.channels: dict[str, ChannelMetrics] = {}
        self.lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            channels = list(self.channels.values())
        families = {key: Metric(f"chanscale_channel_{key}", help_, typ) for key, typ, help_ in _FAMILIES}
        for ch in channels:
            snap = ch.snapshot()
            # No namespace label unless known: an empty one would hide the scrape target's (honor_labels: true).
            labels = {"channel": ch.channel, **({"namespace": ch.namespace} if ch.namespace else {})}
            for key, typ, _ in _FAMILIES:
                suffix = "_total" if typ == "counter" else ""
                if typ != "histogram":
                    families[key].add_sample(f"chanscale_channel_{key}{suffix}", labels, snap[key])
            lat, cumulative = families["latency_seconds"], 0
            for bound, hits in zip([*ch.buckets, float("inf")], snap["bucket_hits"], strict=True):
                cumulative += hits
                lat.add_sample("chanscale_channel_latency_seconds_bucket", {**labels, "le": _le(bound)}, cumulative)
            lat.add_sample("chanscale_channel_latency_seconds_count", labels, cumulative)
            lat.add_sample("chanscale_channel_latency_seconds_sum", labels, snap["latency_sum"])
        yield from families.values()


_FAMILIES = (
    ("backlog", "gauge", "Messages waiting in the channel, not yet taken by a worker."),
    ("enqueued", "counter", "Messages that arrived on the channel."),
    ("processed", "counter", "Messages completed successfully."),
    ("failed", "counter", "Messages that failed."),
    ("busy_seconds", "counter", "Worker-seconds spent processing messages."),
    ("latency_seconds", "histogram", "Enqueue-to-done latency of each finished message, in seconds."),
)


def _le(bound: float) -> str:
    """The ``le`` label as Go's client writes it ("1", not "1.0"): workers of one channel written in Go and in
    Python then share their buckets in ``sum by (le)`` (Prometheus before 3.0 compares the label as a string)."""
    if bound == float("inf"):
        return "+Inf"
    text = repr(float(bound))
    return text[:-2] if text.endswith(".0") else text


# Keyed by the registry itself, weakly: an id() outlives its registry and is reused by the next one, which would
# then inherit a dead registry's channels ("already registered").
_COLLECTORS: weakref.WeakKeyDictionary[CollectorRegistry, _Collector] = weakref.WeakKeyDictionary()
_COLLECTORS_LOCK = threading.Lock()


def _collector(registry: CollectorRegistry) -> _Collector:
    with _COLLECTORS_LOCK:
        c = _COLLECTORS.get(registry)
        if c is None:
            c = _COLLECTORS[registry] = _Collector()
            registry.register(c)  # type: ignore[arg-type]
        return c


class ChannelMetrics:
    """One channel's contract series, registered on ``registry`` (prometheus_client's default registry)."""

    def __init__(
        self,
        channel: str,
        *,
        namespace: str | None = None,
        buckets: tuple[float, ...] = DEFAULT_BUCKETS,
        registry: CollectorRegistry = REGISTRY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not channel:
            raise ValueError("channel is required: the WorkerPool's spec.channel")
        self.channel = channel
        # The namespace label should come from the scrape target; exported too when known (docs/metrics-contract.md).
        self.namespace = namespace or os.environ.get("POD_NAMESPACE", "")
        self.buckets = tuple(sorted(float(b) for b in buckets))
        self._clock = clock
        self._lock = threading.Lock()
        self._backlogs: list[Callable[[], float]] = []
        self._enqueued = self._processed = self._failed = 0
        self._busy_done = self._starts_sum = self._latency_sum = 0.0
        self._in_flight = 0
        self._bucket_hits = [0] * (len(self.buckets) + 1)
        coll = _collector(registry)
        with coll.lock:
            if channel in coll.channels:
                raise ValueError(f"channel {channel!r} is already registered on this registry")
            coll.channels[channel] = self

    def add_backlog(self, fn: Callable[[], float]) -> None:
        """Add a source of waiting messages (a queue's qsize, a broker's pending count), read at every scrape.
        A broker-wide count must be reported by one process only: the contract sums the backlog over all pods."""
        with self._lock:
            self._backlogs.append(fn)

    def enqueued(self, n: int = 1) -> None:
        """Count n arrivals, once each, where they enter the queue."""
        with self._lock:
            self._enqueued += n

    @contextmanager
    def job(self, enqueued_at: float) -> Iterator[None]:
        """Time one message: busy while inside; processed on exit, failed on an exception (re-raised); the
        latency is measured from ``enqueued_at`` (Unix seconds, when the message entered the queue)."""
        start = self._clock()
        with self._lock:
            self._in_flight += 1
            self._starts_sum += start
        ok = False
        try:
            yield
            ok = True
        finally:
            end = self._clock()
            with self._lock:
                self._in_flight -= 1
                self._starts_sum -= start
                self._busy_done += end - start
                if ok:
                    self._processed += 1
                else:
                    self._failed += 1
                latency = end - enqueued_at
                self._latency_sum += latency
                self._bucket_hits[bisect_left(self.buckets, latency)] += 1

    def snapshot(self) -> dict[str, Any]:
        """The current values (busy seconds include the time in-flight jobs have run so far)."""
        with self._lock:
            backlogs = list(self._backlogs)
            now = self._clock()
            out: dict[str, Any] = {
                "enqueued": self._enqueued,
                "processed": self._processed,
                "failed": self._failed,
                "busy_seconds": self._busy_done + self._in_flight * now - self._starts_sum,
                "bucket_hits": list(self._bucket_hits),
                "latency_sum": self._latency_sum,
            }
        out["backlog"] = float(sum(fn() for fn in backlogs))
        return out


class Pool(Generic[T]):
    """Worker threads draining a ``queue.Queue``: its size is the backlog; every message is recorded."""

    def __init__(self, metrics: ChannelMetrics, handle: Callable[[T], Any], workers: int = 1, maxsize: int = 0) -> None:
        self.metrics = metrics
        self.handle = handle
        self.workers = max(1, workers)
        self.queue: queue.Queue[tuple[T, float] | None] = queue.Queue(maxsize)
        metrics.add_backlog(self.queue.qsize)
        self._threads: list[threading.Thread] = []

    def submit(self, value: T) -> None:
        """Queue a message arriving now, in this process (counts one arrival)."""
        self.metrics.enqueued()
        self.deliver(value, time.time())

    def deliver(self, value: T, enqueued_at: float) -> None:
        """Queue a message that arrived earlier at a broker (which counted it): latency runs from enqueued_at."""
        self.queue.put((value, enqueued_at))

    def start(self) -> None:
        for _ in range(self.workers):
            t = threading.Thread(target=self._work, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Finish what is queued, then stop the workers."""
        for _ in self._threads:
            self.queue.put(None)
        for t in self._threads:
            t.join()
        self._threads.clear()

    def _work(self) -> None:
        while (item := self.queue.get()) is not None:
            value, enqueued_at = item
            try:
                with self.metrics.job(enqueued_at):
                    self.handle(value)
            except Exception:  # counted failed by job(); a worker thread never dies of one message
                pass
