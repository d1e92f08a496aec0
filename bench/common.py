"""Shared bits of the benchmark commands: where results go, what machine produced them, plotting setup."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
QUICK_DIR = BENCH_DIR.parent / "out" / "bench-quick"


def machine() -> dict[str, Any]:
    """The facts every figure must state: cores, CPU model, Python, kernel, git commit."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=BENCH_DIR, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "commit": commit or "unknown",
    }


def machine_line(m: dict[str, Any] | None = None) -> str:
    m = m or machine()
    return f"{m['nproc']} × {m['cpu']}, Python {m['python']}, Linux {m['kernel']}, chanscale@{m['commit']}"


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small, fast variant for CI (results go to out/bench-quick)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default bench/results, or out/bench-quick with --quick)",
    )


def out_dir(args: argparse.Namespace) -> Path:
    d: Path = args.out or (QUICK_DIR if args.quick else RESULTS_DIR)
    d.mkdir(parents=True, exist_ok=True)
    return d


def fig_dir(args: argparse.Namespace) -> Path:
    """Figures sit beside bench/RESULTS.md for full runs; quick runs keep everything under out/."""
    if args.quick or args.out:
        return out_dir(args)
    return BENCH_DIR


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")


def publish(args: argparse.Namespace, name: str, md: str, data: Any) -> Path:
    """Write a benchmark's table (``<name>.md``) and raw figures (``<name>.json``); returns the directory."""
    out = out_dir(args)
    (out / f"{name}.md").write_text(md + "\n")
    write_json(out / f"{name}.json", data)
    return out


def pyplot() -> Any:
    """matplotlib with the Agg backend (no display), imported late so --help stays fast."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def step_percentiles(rows: list[dict[str, Any]], keys: Iterable[str]) -> dict[str, Any]:
    """p50/p95/max of each interval over the steps that reached it (None = the step never got there)."""
    out: dict[str, Any] = {"steps": len(rows)}
    for key in keys:
        xs = [r[key] for r in rows if r[key] is not None]
        out[key] = {"n": len(xs), "p50": _pct(xs, 50), "p95": _pct(xs, 95), "max": max(xs) if xs else None}
    return out


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")
