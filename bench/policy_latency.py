"""Decision latency of each policy-gate path, side by side, in one run.

    python -m bench.policy_latency            # full: 2000 decisions per path (results in bench/results)
    python -m bench.policy_latency --quick    # CI: 200 decisions per path (results in out/bench-quick)

Paths measured, all evaluating the same Rego (policies/, data.chanscale.main.decision) on the same inputs:

* ``none``: :class:`AllowAllGate` (``--opa none``), the floor: what the gate costs when it does nothing;
* ``local``: :class:`LocalOpaGate` (``--opa local``), a supervised ``opa run --server`` child on 127.0.0.1,
  asked through opa-python-client's ``AsyncOpaClient``;
* ``url``: :class:`OpaGate` against an OPA started separately (what ``--opa-url`` to a sidecar costs, minus the
  network);
* ``url x8``: the same with 8 decisions in flight at once (the operator evaluates pools concurrently);
* ``raw HTTP``: a bare aiohttp POST to the same server, to show what the client library adds;
* ``opa eval``: a fresh ``opa eval`` process per decision, the "no server" alternative;
* ``in-process``: an embedded Rego engine (``regorus``), measured when importable; otherwise the row says why not.

The inputs cycle through allow / clamp / deny / escalated documents so no single cached path is timed. Each row
reports p50 and p99 per decision (milliseconds) from one run on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import add_common_args, machine, machine_line, out_dir, write_json
from chanscale.local.opa import DEFAULT_IGNORE, OpaServer, find_opa_binary
from chanscale.policy import AllowAllGate, LocalOpaGate, OpaGate, build_input, default_policies_dir

PATH = "chanscale/main/decision"


def inputs() -> list[dict[str, Any]]:
    """Four realistic input documents: plain allow, a clamp by several guards, a freeze, an escalation."""
    now = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
    params: dict[str, Any] = {
        "step": {"maxUp": 4, "maxDown": 2},
        "caps": {"maxReplicas": 12},
        "errorBrake": {"enabled": True},
        "budget": {"maxReplicas": 40},
        "windows": {"windows": [{"name": "nightly", "start": "02:00", "end": "04:00", "timezone": "Europe/Berlin"}]},
    }
    freeze = {**params, "windows": {"windows": [{"name": "release", "start": "11:00", "end": "13:00"}]}}
    cases = [(3, 5, params, 100.0), (3, 30, params, 2000.0), (3, 8, freeze, 100.0), (3, 40, params, 50000.0)]
    docs = []
    for current, proposed, p, backlog in cases:
        pool = {
            "metadata": {"namespace": "shop", "name": "orders", "labels": {"team": "checkout"}},
            "spec": {
                "channel": "orders",
                "maxReplicas": 50,
                "slo": {"p99LatencySeconds": 0.25, "maxErrorRate": 0.05},
                "policy": {"parameters": p},
            },
        }
        docs.append(
            build_input(
                pool=pool,
                current_replicas=current,
                recommended_replicas=proposed,
                min_replicas=1,
                max_replicas=50,
                signals={"backlog": backlog, "arrivalRate": 200.0, "serviceRate": 20.0, "errorRate": 0.01},
                history={"lastScaleTime": None, "lastScaleDirection": None, "secondsSinceLastScale": None},
                now=now,
                namespace_pools=[{"name": f"pool-{i}", "replicas": 2, "desiredReplicas": 2} for i in range(10)],
            )
        )
    return docs


def summarize(name: str, samples: list[float], note: str = "") -> dict[str, Any]:
    ms = sorted(s * 1000 for s in samples)
    p99_index = min(len(ms) - 1, max(0, math.ceil(0.99 * len(ms)) - 1))  # nearest rank
    return {
        "path": name,
        "n": len(ms),
        "p50_ms": statistics.median(ms),
        "p99_ms": ms[p99_index],
        "mean_ms": statistics.fmean(ms),
        "note": note,
    }


async def time_calls(
    call: Callable[[dict[str, Any]], Awaitable[Any]], docs: list[dict[str, Any]], n: int
) -> list[float]:
    for d in docs:  # warm-up: connection set-up and first compilation are not per-decision costs
        await call(d)
    samples = []
    for i in range(n):
        started = time.perf_counter()
        await call(docs[i % len(docs)])
        samples.append(time.perf_counter() - started)
    return samples


async def time_concurrent(
    call: Callable[[dict[str, Any]], Awaitable[Any]], docs: list[dict[str, Any]], n: int, width: int
) -> list[float]:
    samples: list[float] = []

    async def one(i: int) -> None:
        started = time.perf_counter()
        await call(docs[i % len(docs)])
        samples.append(time.perf_counter() - started)

    for start in range(0, n, width):
        await asyncio.gather(*(one(i) for i in range(start, min(n, start + width))))
    return samples


def time_opa_eval(opa: Path, policies: Path, docs: list[dict[str, Any]], n: int) -> list[float]:
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, d in enumerate(docs):
            f = Path(tmp) / f"input-{i}.json"
            f.write_text(json.dumps(d))
            files.append(f)
        ignore = [arg for pattern in DEFAULT_IGNORE for arg in ("--ignore", pattern)]
        for i in range(n):
            argv = [
                str(opa),
                "eval",
                *ignore,
                "-d",
                str(policies),
                "-i",
                str(files[i % len(files)]),
                f"data.{PATH.replace('/', '.')}",
            ]
            started = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=True)
            samples.append(time.perf_counter() - started)
    return samples


def in_process_row(policies: Path, docs: list[dict[str, Any]], expected: list[Any], n: int) -> dict[str, Any]:
    """Time an embedded engine (regorus) on the same Rego, if it is importable and agrees with OPA."""
    row: dict[str, Any] = {"path": "in-process (regorus)", "n": 0, "p50_ms": None, "p99_ms": None, "mean_ms": None}
    try:
        import regorus  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        row["note"] = (
            "not measured: no `regorus` on the package index (`pip download --no-deps regorus`: no versions); "
            "put a build on PYTHONPATH to measure it"
        )
        return row
    engine = regorus.Engine()
    try:
        for f in sorted(policies.rglob("*.rego")):
            if not f.name.endswith("_test.rego"):
                engine.add_policy_from_file(str(f))
        config = json.loads((policies / "chanscale" / "config" / "data.json").read_text())
        engine.add_data_json(json.dumps({"chanscale": {"config": config}}))

        def decide(d: dict[str, Any]) -> Any:
            engine.set_input_json(json.dumps(d))
            return engine.eval_rule("data." + PATH.replace("/", "."))

        got = [decide(d) for d in docs]
    except Exception as exc:  # an engine that cannot run the policies is the finding
        lines = [ln.strip() for ln in str(exc).splitlines()]
        where = next((ln for ln in lines if ln.startswith("-->")), "")
        what = next((ln for ln in lines if ln.startswith("error:")), lines[0] if lines else repr(exc))
        row["note"] = f"cannot evaluate the shipped Rego: {what} {where}".strip()
        return row
    samples = []
    for i in range(n):
        started = time.perf_counter()
        decide(docs[i % len(docs)])
        samples.append(time.perf_counter() - started)
    agree = sum(g == e for g, e in zip(got, expected, strict=True))
    return summarize("in-process (regorus)", samples, f"agrees with OPA on {agree}/{len(docs)} inputs")


async def run(n: int, n_eval: int) -> list[dict[str, Any]]:
    docs = inputs()
    policies = default_policies_dir()
    rows = []

    none = AllowAllGate()
    rows.append(
        summarize("none: AllowAllGate (--opa none)", await time_calls(lambda d: none.evaluate(PATH, d), docs, n))
    )

    local = LocalOpaGate([policies])
    try:
        samples = await time_calls(lambda d: local.evaluate(PATH, d), docs, n)
        rows.append(summarize("local: LocalOpaGate (opa run --server child)", samples, "default without --opa-url"))
    finally:
        await local.close()

    async with OpaServer([policies]) as server:
        gate = OpaGate(server.url)
        try:
            samples = await time_calls(lambda d: gate.evaluate(PATH, d), docs, n)
            rows.append(summarize("url: OpaGate (AsyncOpaClient)", samples, "--opa-url, loopback"))
            samples = await time_concurrent(lambda d: gate.evaluate(PATH, d), docs, n, 8)
            rows.append(summarize("url x8: OpaGate, 8 in flight", samples, "per-decision latency under concurrency"))
        finally:
            await gate.close()
        async with aiohttp.ClientSession() as session:
            url = f"{server.url}/v1/data/{PATH}"

            async def raw(d: dict[str, Any]) -> Any:
                async with session.post(url, json={"input": d}) as resp:
                    return await resp.json()

            rows.append(summarize("raw HTTP: aiohttp POST", await time_calls(raw, docs, n), "no client library"))
            expected = [(await raw(d)).get("result") for d in docs]

    rows.append(
        summarize(
            "opa eval: one process per decision",
            time_opa_eval(find_opa_binary(), policies, docs, n_eval),
            "parses and compiles the policies every time",
        )
    )
    rows.append(in_process_row(policies, docs, expected, n))
    return rows


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| path | decisions | p50 ms | p99 ms | mean ms | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['path']} | {r['n']} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | {fmt(r['mean_ms'])} | {r['note']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.policy_latency", description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("-n", type=int, default=None, help="decisions per path (default 2000, --quick 200)")
    args = p.parse_args(argv)
    n = args.n or (200 if args.quick else 2000)
    n_eval = max(5, n // 40)
    started = time.perf_counter()
    rows = asyncio.run(run(n, n_eval))
    wall = time.perf_counter() - started
    m = machine()
    header = f"Obtained with `python -m bench.policy_latency{' --quick' if args.quick else ''}` on {machine_line(m)}; "
    header += f"OPA {opa_version()}; wall time {wall:.0f} s."
    text = f"{header}\n\n{table(rows)}\n"
    print(text)
    d = out_dir(args)
    (d / "policy_latency.md").write_text(text)
    write_json(d / "policy_latency.json", {"machine": m, "rows": rows, "n": n, "n_eval": n_eval, "wall_s": wall})
    print(f"written to {d}/policy_latency.{{md,json}}", file=sys.stderr)
    return 0


def opa_version() -> str:
    try:
        out = subprocess.run([str(find_opa_binary()), "version"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Version")), "unknown")


if __name__ == "__main__":
    raise SystemExit(main())
