"""kopf's start-up wait for its indexes, simulated without a cluster: kopf's own ToggleSet against chanscale's
counting one (chanscale.kopf_toggles).

    python -m bench.kopf_startup                      # 1 000, 2 000, 5 000, 10 000 objects; kopf's up to 5 000
    python -m bench.kopf_startup --objects 300 --kopf-max 300

The steps are kopf 1.45's for one indexed resource kind (orchestration.spawn_missing_watchers, queueing.watcher,
processing.process_resource_event): a blocker toggle and the kind's toggle; per listed object a toggle made before
its worker starts, dropped by the worker once indexed, then the worker waits for the whole set; the kind's toggle
dropped when the listing ends. Reports how often the set's state was evaluated, and CPU and wall seconds (CPU is
the figure to compare on a loaded machine). On-demand, not in ``python -m bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence

from kopf._cogs.aiokits import aiotoggles

from chanscale.kopf_toggles import CountingToggleSet, KopfToggleSet


async def simulate_start_up(cls: type[KopfToggleSet], objects: int) -> int:
    """kopf's start-up wait with ``objects`` listed; returns how many times the set's state was evaluated."""
    evaluations = 0

    class Counted(cls):  # type: ignore[valid-type,misc]
        def is_on(self) -> bool:
            nonlocal evaluations
            evaluations += 1
            return bool(super().is_on())

    ts = Counted(all)
    blocker = await ts.make_toggle(name="orchestration blocker")
    kind = await ts.make_toggle(name="the resource kind")
    await ts.drop_toggle(blocker)

    async def worker(toggle: aiotoggles.Toggle) -> None:
        await asyncio.sleep(0)  # the index handlers
        await ts.drop_toggle(toggle)
        await ts.wait_for(True)

    workers = []
    for i in range(objects):  # the initial listing, one object at a time
        if ts.is_on():
            raise AssertionError("the set is on before the listing ended")
        toggle = await ts.make_toggle(name=f"object {i}")
        workers.append(asyncio.create_task(worker(toggle)))
        await asyncio.sleep(0)  # the watcher reads the next event
    await ts.drop_toggle(kind)  # the listing ended
    await asyncio.gather(*workers)
    if not ts.is_on():
        raise AssertionError("the set is still off after every toggle was dropped")
    return evaluations


async def _run(counts: list[int], kopf_max: int) -> list[str]:
    lines = []
    for cls, name in ((CountingToggleSet, "chanscale counting"), (KopfToggleSet, "kopf 1.45 ToggleSet")):
        for n in counts:
            if cls is KopfToggleSet and n > kopf_max:
                continue
            cpu, wall = time.process_time(), time.perf_counter()
            evaluations = await simulate_start_up(cls, n)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            lines.append(f"| {name} | {n} | {evaluations} | {cpu:.2f} | {wall:.2f} |")
            print(lines[-1], flush=True)
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objects", default="1000,2000,5000,10000", help="comma-separated counts of listed objects")
    p.add_argument("--kopf-max", type=int, default=5000, help="largest count run with kopf's own ToggleSet")
    args = p.parse_args(argv)
    print("| ToggleSet | objects listed | state evaluations | CPU s | wall s |\n|---|---|---|---|---|", flush=True)
    asyncio.run(_run([int(x) for x in args.objects.split(",")], args.kopf_max))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
