"""Opt-in memory profile of the running operator (tracemalloc), for ``bench.at_scale --tracemalloc``, and opt-in
garbage-collector pauses (``CHANSCALE_GCLOG=<path>``: per generation, how many collections and how long they
stopped the process, rewritten every 20 s), for ``bench.at_scale --gclog``. ``CHANSCALE_GCTYPES=<path>`` also
counts, by type, the objects the collector found in unreachable cycles (the garbage that reference counting
cannot free and that makes its passes long; it keeps each 20 s of garbage alive until counted: diagnosis only).

With ``CHANSCALE_TRACEMALLOC=<path>`` in the environment, ``chanscale run`` starts tracemalloc before it imports
kopf and rewrites ``<path>`` every ``CHANSCALE_TRACEMALLOC_EVERY`` seconds (default 20) with the top allocators,
grouped by file and by line. tracemalloc slows the operator and roughly doubles its memory: never enable it
in production, and never compare RSS or CPU figures of a profiled run with an unprofiled one.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import tracemalloc
from pathlib import Path

ENV = "CHANSCALE_TRACEMALLOC"
GC_ENV = "CHANSCALE_GCLOG"
GC_TYPES_ENV = "CHANSCALE_GCTYPES"


def _report(snapshot: tracemalloc.Snapshot, top: int) -> str:
    snapshot = snapshot.filter_traces((tracemalloc.Filter(False, tracemalloc.__file__),))
    total = sum(s.size for s in snapshot.statistics("filename"))
    current, peak = tracemalloc.get_traced_memory()
    rss = _rss_mib()
    lines = [
        f"traced now {total / 2**20:.1f} MiB (with tracemalloc's own {current / 2**20:.1f}), traced peak "
        f"{peak / 2**20:.1f} MiB, process RSS {rss:.0f} MiB",
        "",
        "by file:",
    ]
    for stat in snapshot.statistics("filename")[:top]:
        frame = stat.traceback[0]
        lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:9d} blocks  {frame.filename}")
    lines += ["", "by line:"]
    for stat in snapshot.statistics("lineno")[:top]:
        frame = stat.traceback[0]
        lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:9d} blocks  {frame.filename}:{frame.lineno}")
    return "\n".join(lines) + "\n"


def _rss_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def dump(path: Path, top: int = 40) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(_report(tracemalloc.take_snapshot(), top))
    tmp.replace(path)


def start_from_env() -> None:
    """Start tracemalloc and a daemon thread that rewrites the report, if ``CHANSCALE_TRACEMALLOC`` is set."""
    target = os.environ.get(ENV)
    if not target:
        return
    every = float(os.environ.get(f"{ENV}_EVERY", "20"))
    tracemalloc.start(int(os.environ.get(f"{ENV}_FRAMES", "1")))
    path = Path(target)

    def loop() -> None:
        while True:
            time.sleep(every)
            dump(path)

    threading.Thread(target=loop, name="chanscale-tracemalloc", daemon=True).start()


def _gc_report(pauses: dict[int, list[float]], collected: dict[int, int] | None = None) -> str:
    lines = ["generation collections total_s max_ms p99_ms objects_freed"]
    for gen, xs in sorted(pauses.items()):
        ys = sorted(xs)
        p99 = ys[min(len(ys) - 1, int(len(ys) * 0.99))] if ys else 0.0
        freed = (collected or {}).get(gen, 0)
        lines.append(f"{gen} {len(ys)} {sum(ys):.3f} {1000 * max(ys, default=0.0):.1f} {1000 * p99:.1f} {freed}")
    return "\n".join(lines) + "\n"


def start_gclog_from_env() -> None:
    """Record every collection's pause with ``gc.callbacks``, if ``CHANSCALE_GCLOG`` is set."""
    target = os.environ.get(GC_ENV)
    if not target:
        return
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    collected = {0: 0, 1: 0, 2: 0}  # objects in unreachable cycles each generation's passes freed
    began = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - began[0])
            collected[info["generation"]] += info.get("collected", 0)

    gc.callbacks.append(callback)
    path = Path(target)

    def loop() -> None:
        while True:
            time.sleep(20)
            path.write_text(_gc_report(pauses, collected))

    threading.Thread(target=loop, name="chanscale-gclog", daemon=True).start()


def start_gctypes_from_env(every: float = 20.0, top: int = 40) -> None:
    """With ``CHANSCALE_GCTYPES``, keep what the collector frees (``gc.DEBUG_SAVEALL``) and rewrite the file every
    ``every`` seconds with the running count of cyclic garbage by type, then drop it."""
    target = os.environ.get(GC_TYPES_ENV)
    if not target:
        return
    from collections import Counter

    counts: Counter[str] = Counter()
    path = Path(target)
    gc.set_debug(gc.DEBUG_SAVEALL)

    def loop() -> None:
        while True:
            time.sleep(every)
            garbage, gc.garbage[:] = list(gc.garbage), []
            counts.update(f"{type(o).__module__}.{type(o).__qualname__}" for o in garbage)
            del garbage
            lines = [f"{n} {name}" for name, n in counts.most_common(top)]
            path.write_text("objects in unreachable cycles, by type, since start\n" + "\n".join(lines) + "\n")

    threading.Thread(target=loop, name="chanscale-gctypes", daemon=True).start()
