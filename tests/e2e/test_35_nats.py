"""A real worker on a real broker (examples/nats/jetstream.yaml): nats-server with JetStream, the example worker
built on the Go SDK and its load generator, all as pods. chanscale reads the SDK's metrics through the cluster's
Prometheus and scales the worker Deployment up when the producer's rate rises, and the workers really drain the
stream. Also: the operator image is the slim one (no shell in it)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import yaml
from kindstack import RELEASE_NS, REPO_ROOT, KindStack, load_yaml
from kindtest import Sample, all_pods_ready, describe, observe, operator_pod, rollout, wait_for

pytestmark = pytest.mark.e2e

NS = "e2e-nats"
POOL, WORKER, LOADGEN = "orders", "orders-worker", "orders-loadgen"
HIGH = 20.0  # msg/s (the example starts at 2); one worker pod handles 5 msg/s (0.2 s per message)


def _manifests(stack: KindStack) -> str:
    docs = load_yaml(REPO_ROOT / "examples" / "nats" / "jetstream.yaml")
    for d in docs:
        for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            c["image"] = stack.images.nats if c["name"] == "nats" else stack.images.nats_worker
    return yaml.safe_dump_all(docs)


def _set_rate(stack: KindStack, rate: float) -> None:
    got = json.loads(stack.proxy_post(NS, LOADGEN, 9400, "control", {"rate": rate}))
    assert got == {"rate": rate}, got


def _pending(stack: KindStack) -> float | None:
    """The broker's pending count as the load generator exports it (through the cluster's Prometheus)."""
    res = stack.prom_query(f'sum(chanscale_channel_backlog{{namespace="{NS}",pod=~"{LOADGEN}-.*"}})')
    return float(res[0]["value"][1]) if res else None


def test_jetstream_worker_scales_with_the_real_broker(stack: KindStack, workspace: Callable[[str], str]) -> None:
    ns = workspace(NS)
    stack.must("apply", "-n", ns, "-f", "-", input=_manifests(stack))
    for name in ("nats", LOADGEN, WORKER):
        rollout(stack, ns, name)
    samples: list[Sample] = []

    def sample() -> Sample:
        samples.append(observe(stack, ns, POOL, WORKER))
        return samples[-1]

    def baseline() -> bool:
        s = sample()
        return s.cond("MetricsAvailable")[0] == "True" and (s.replicas or 99) <= 2

    wait_for(
        "signals from the SDK and a baseline of <= 2 workers", baseline, 240, poll=3, explain=lambda: describe(samples)
    )

    # 20 msg/s at 5 msg/s per worker needs at least 4 busy workers (5 at the pool's 80 % target utilisation).
    _set_rate(stack, HIGH)
    wait_for(
        "scale-up to >= 4 workers",
        lambda: (sample().replicas or 0) >= 4,
        240,
        poll=3,
        explain=lambda: describe(samples),
    )
    wait_for(
        "every worker pod Ready",
        lambda: all_pods_ready(stack, ns, WORKER, 4),
        240,
        explain=lambda: stack.kubectl("-n", ns, "get", "pods", "-o", "wide").stdout,
    )

    # The workers really drain the stream: with the load still high, the broker's pending count comes down and the
    # pool reports its SLO met.
    def drained_and_slo_met() -> bool:
        s = sample()
        pending = _pending(stack)
        return s.cond("SLOMet")[0] == "True" and pending is not None and pending < HIGH * 2

    wait_for(
        "the stream drained and SLOMet=True at high load",
        drained_and_slo_met,
        300,
        poll=3,
        explain=lambda: f"pending={_pending(stack)}\n" + describe(samples),
    )
    # Scale-down on low load is the scale scenario's (test_20_scaling); here it would add minutes to CI.


def test_operator_image_has_no_shell(stack: KindStack) -> None:
    """The slim image (FROM scratch: interpreter, packages, libraries): `sh` does not exist in it."""
    pod = operator_pod(stack)["metadata"]["name"]
    res = stack.kubectl("-n", RELEASE_NS, "exec", pod, "-c", "operator", "--", "sh", "-c", "true")
    assert res.returncode != 0 and "not found" in (res.stderr + res.stdout), res
    res = stack.kubectl("-n", RELEASE_NS, "exec", pod, "-c", "operator", "--", "chanscale", "--version")
    assert res.returncode == 0 and "chanscale" in res.stdout, res
