"""The worker SDKs (sdk/go, sdk/python) export the metrics contract the operator reads.

Each SDK's example worker runs as a real process; the session's real Prometheus scrapes it, and the operator's own
reader (``PrometheusReader.read``, i.e. the default queries of docs/metrics-contract.md, one source with the
operator) must see every signal of the pool: backlog, arrival rate, processed/failed/busy rates, P99 and a fresh
sample age. The namespace label comes from the scrape target, as in a cluster.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import sys
from pathlib import Path

import pytest

from chanscale.local.binaries import REPO_ROOT, go_build
from chanscale.local.harness import PrometheusTargets
from chanscale.local.process import LOOPBACK, ManagedProcess, free_port, wait_until
from chanscale.signals import PrometheusReader
from chanscale.spec import PoolSpec

pytestmark = pytest.mark.integration

RATE, WORKERS, SERVICE, FAIL = 40.0, 4, 0.02, 0.1


def _go_worker() -> list[str]:
    return [str(go_build(REPO_ROOT / "sdk" / "go", "./examples/channel", "sdk-example-channel"))]


def _python_worker() -> list[str]:
    return [sys.executable, str(REPO_ROOT / "sdk" / "python" / "example.py")]


@pytest.mark.parametrize("sdk", ["go", "python"])
def test_operator_reads_every_signal_from_the_sdk(
    sdk: str, prometheus_targets: PrometheusTargets, tmp_path: Path
) -> None:
    argv = _go_worker() if sdk == "go" else _python_worker()
    port, channel, namespace = free_port(), f"orders-{sdk}", f"sdk-{sdk}"
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'sdk' / 'python'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("POD_NAMESPACE", None)
    worker = ManagedProcess(
        f"{sdk}-worker",
        [
            *argv,
            "--listen",
            f"{LOOPBACK}:{port}",
            "--channel",
            channel,
            "--rate",
            str(RATE),
            "--workers",
            str(WORKERS),
            "--service",
            str(SERVICE),
            "--fail",
            str(FAIL),
        ],
        tmp_path / "worker.log",
        env=env,
    ).start()
    try:
        prometheus_targets.add(f"{LOOPBACK}:{port}", {"namespace": namespace})
        reader = PrometheusReader(prometheus_targets.prom.url, ttl=0)
        spec = PoolSpec.from_dict(
            {
                "channel": channel,
                "scaleTargetRef": {"name": "w"},
                "minReplicas": 1,
                "maxReplicas": 10,
                "slo": {"p99LatencySeconds": 1},
                "metrics": {"rateWindow": "10s"},
            }
        )
        seen: dict[str, float | None] = {}
        # rate() over a window the series does not fill yet underestimates (it starts mid-window): read once the
        # series is older than the window (a sample exists 12 s ago; the window is 10 s).
        older = f'chanscale_channel_processed_total{{namespace="{namespace}"}} offset 12s'

        def complete() -> bool:
            worker.check_running()
            if not asyncio.run(reader.query(reader.default_address or "", older)):
                return False
            signals = asyncio.run(reader.read(namespace, spec))
            seen.clear()
            seen.update(signals.values, age=signals.age_seconds)
            return not signals.errors and all(v is not None for v in seen.values()) and seen["failed_rate"] > 0

        wait_until(complete, timeout=60, what=f"every signal of the {sdk} SDK's pool", procs=[worker])
    finally:
        worker.stop()
    # Bounds from the model of the example (λ = 40/s, 10 % fail, 4 workers at 20 ms each: utilisation 0.2),
    # generous enough for a loaded machine: the point is that each query finds the right series.
    assert seen["backlog"] is not None and seen["backlog"] >= 0, seen
    assert 0.4 * RATE <= seen["arrival_rate"] <= 2.5 * RATE, seen  # type: ignore[operator]
    done = seen["processed_rate"] + seen["failed_rate"]  # type: ignore[operator]
    assert 0.4 * RATE <= done <= 2.5 * RATE, seen
    assert seen["failed_rate"] < seen["processed_rate"], seen  # type: ignore[operator]
    busy = seen["busy_rate"]
    assert busy is not None and 0 < busy <= WORKERS + 0.5, seen  # worker-seconds per second
    p99 = seen["p99_latency"]
    assert p99 is not None and math.isfinite(p99) and 0 < p99 < 10, seen
    assert seen["age"] is not None and seen["age"] < 30, seen


def test_sdks_share_the_documented_default_buckets() -> None:
    """The Go and Python SDKs and docs/sdk.md name one list of latency buckets."""
    from chanscale_sdk import DEFAULT_BUCKETS  # sdk/python is on pytest's pythonpath

    go = (REPO_ROOT / "sdk" / "go" / "chanscale.go").read_text()
    go_buckets = re.search(r"var DefaultBuckets = \[\]float64\{([^}]*)\}", go)
    assert go_buckets, "DefaultBuckets not found in sdk/go/chanscale.go"
    assert [float(b) for b in go_buckets.group(1).split(",")] == list(DEFAULT_BUCKETS)
    doc = (REPO_ROOT / "docs" / "sdk.md").read_text()
    assert ", ".join(f"{b:g}" for b in DEFAULT_BUCKETS) in doc
