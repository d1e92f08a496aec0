"""Run every benchmark: ``python -m bench [--quick]``.

Full runs refresh the figures beside bench/RESULTS.md (the prose there is updated by hand from them); ``--quick``
runs a small variant of each into out/bench-quick/ so that none of them rots (CI runs it).

On-demand benchmarks run only when named, never in the default set or ``--quick``: ``kind_loop`` needs the kind
cluster of the e2e suite (Docker; ``python -m bench kind_loop`` or ``python -m bench.kind_loop``); ``kind_build``
times the offline image build (cold and warm) and kind cluster creation (``python -m bench.kind_build``);
``kopf_startup`` simulates kopf's start-up wait for its indexes, kopf's ToggleSet against chanscale's.
"""

from __future__ import annotations

import importlib
import sys
import time

BENCHMARKS = ("control_quality", "sizing_accuracy", "policy_latency", "reaction_time", "at_scale")
ON_DEMAND = ("kind_loop", "kind_build", "kopf_startup")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    only = [a for a in args if not a.startswith("-")]
    flags = [a for a in args if a.startswith("-")]
    failed = []
    for name in only or BENCHMARKS:
        if name not in BENCHMARKS + ON_DEMAND:
            print(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS + ON_DEMAND)}", file=sys.stderr)
            return 2
        started = time.monotonic()
        print(f"=== bench.{name} {' '.join(flags)}", flush=True)
        rc = importlib.import_module(f"bench.{name}").main(flags)
        print(f"=== bench.{name}: exit {rc} in {time.monotonic() - started:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
