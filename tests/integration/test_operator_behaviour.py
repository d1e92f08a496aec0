"""The operator's behaviour end to end on the local cluster: real apiserver, controller-manager, Prometheus, OPA.

Each test closes the loop: `chanscale sim` simulates a channel whose workers are a real Deployment's replicas,
Prometheus scrapes it every second, the operator (`python -m chanscale run`, tick 1 s) reads Prometheus and scales
the Deployment through its scale subresource, and the simulator follows. Pools use a short rate window and fast
behaviour policies so each scenario settles in tens of seconds; every wait is bounded and says what it waited for.
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chanscale.local.harness import Kubectl, OperatorFactory, OperatorProcess, SimFactory, SimProcess
from chanscale.local.process import wait_until
from chanscale.local.prometheus import LocalPrometheus

pytestmark = pytest.mark.integration

SERVICE_RATE = 20.0  # messages/s one simulated worker handles
LOW_RATE = 5.0  # one worker copes easily
BURST_RATE = 120.0  # needs about 8 workers for P99 <= 0.5 s


# ------------------------------------------------------------------------------------------------ helpers
def fast_pool(name: str = "orders", target: str = "worker", **spec: Any) -> dict[str, Any]:
    """A pool tuned to react within seconds (the defaults are HPA-like: 15 s periods, 300 s down window)."""
    body: dict[str, Any] = {
        "apiVersion": "chanscale.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": {
            "channel": "orders",
            "scaleTargetRef": {"name": target},
            "minReplicas": 1,
            "maxReplicas": 20,
            "slo": {"p99LatencySeconds": 0.5},
            "model": {"serviceRateHint": SERVICE_RATE},
            "metrics": {"rateWindow": "10s", "staleAfterSeconds": 10},
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Percent", "value": 1000, "periodSeconds": 1}],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 1}],
                },
            },
        },
    }
    for key, value in spec.items():
        body["spec"][key] = value
    return body


def channel(namespace: str, rate: float = LOW_RATE, deployment: str = "worker", name: str = "orders") -> dict[str, Any]:
    return {
        "namespace": namespace,
        "channel": name,
        "deployment": deployment,
        "serviceRate": SERVICE_RATE,
        "arrivalRate": rate,
    }


def create_worker(kubectl: Kubectl, namespace: str, replicas: int, name: str = "worker") -> None:
    res = kubectl(
        "create", "deployment", name, "--image=registry.invalid/worker:1", f"--replicas={replicas}", "-n", namespace
    )
    assert res.returncode == 0, res.stderr


def replicas(kubectl: Kubectl, namespace: str, name: str = "worker") -> int:
    return int(kubectl.json("get", "deployment", name, "-n", namespace)["spec"]["replicas"])


def pool_status(kubectl: Kubectl, namespace: str, name: str = "orders") -> dict[str, Any]:
    status: dict[str, Any] = kubectl.json("get", "wp", name, "-n", namespace).get("status") or {}
    return status


def condition(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c.get("type") == ctype), {})


def has_condition(
    kubectl: Kubectl, namespace: str, ctype: str, cstatus: str, reason: str | None = None, pool: str = "orders"
) -> Callable[[], bool]:
    def check() -> bool:
        c = condition(pool_status(kubectl, namespace, pool), ctype)
        return c.get("status") == cstatus and (reason is None or c.get("reason") == reason)

    return check


def events(kubectl: Kubectl, namespace: str, pool: str = "orders") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl.json(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={pool}"
    )["items"]
    return items


def event_reasons(kubectl: Kubectl, namespace: str, pool: str = "orders") -> set[str]:
    return {e.get("reason", "") for e in events(kubectl, namespace, pool)}


def decisions_total(op: OperatorProcess, namespace: str, pool: str = "orders") -> float:
    """Ticks the operator has evaluated for a pool (chanscale_decisions_total, all outcomes)."""
    total = 0.0
    pattern = re.compile(r"^chanscale_decisions_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
    for line in op.metrics_text().splitlines():
        m = pattern.match(line)
        if m and f'namespace="{namespace}"' in m["labels"] and f'pool="{pool}"' in m["labels"]:
            total += float(m["value"])
    return total


def procs(op: OperatorProcess) -> list[Any]:
    """The operator's process for wait_until, so a crash fails the wait at once with its log."""
    return [op.proc] if op.proc else []


def wait_condition(
    kubectl: Kubectl,
    namespace: str,
    op: OperatorProcess,
    ctype: str,
    cstatus: str,
    reason: str | None = None,
    pool: str = "orders",
    when: str = "",
    timeout: float = 60,
) -> None:
    """Bounded wait for a condition of the pool, said as ``Type=Status/Reason on pool P <when>`` if it times out;
    fails at once with the operator's log if the operator dies."""
    what = f"{ctype}={cstatus}/{reason}" if reason else f"{ctype}={cstatus}"
    what += (f" on pool {pool}" if pool != "orders" else "") + (f" {when}" if when else "")
    wait_until(has_condition(kubectl, namespace, ctype, cstatus, reason, pool), timeout, what, procs(op))


def wait_signals_read(
    kubectl: Kubectl, namespace: str, op: OperatorProcess, what: str = "the operator to read the channel's signals"
) -> None:
    """Bounded wait for MetricsAvailable=True: the operator has read the pool's signals from Prometheus."""
    wait_until(has_condition(kubectl, namespace, "MetricsAvailable", "True"), 60, what, procs(op))


def wait_decision_not_applied(kubectl: Kubectl, namespace: str, op: OperatorProcess, what: str) -> None:
    """Wait for a recorded scale-up decision and its WouldScale Event; the Deployment keeps its one replica."""
    wait_until(lambda: pool_status(kubectl, namespace).get("desiredReplicas", 0) > 1, 90, what, procs(op))
    wait_until(lambda: "WouldScale" in event_reasons(kubectl, namespace), 30, "a WouldScale event", procs(op))
    assert replicas(kubectl, namespace) == 1


def start_held_burst(kubectl: Kubectl, namespace: str, channel_sim: SimFactory) -> SimProcess:
    """One worker under a burst, and a pool whose 600 s scale-down window holds whatever the burst scales to."""
    create_worker(kubectl, namespace, 1)
    sim = channel_sim([channel(namespace, BURST_RATE)])
    pool = fast_pool()
    pool["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] = 600
    assert kubectl.apply(pool, namespace).returncode == 0
    return sim


def drop_load(kubectl: Kubectl, namespace: str, sim: SimProcess, alive: list[Any]) -> None:
    """Drop the channel to LOW_RATE and wait until the model recommends <= 2 replicas (a window may hold more)."""
    sim.set_arrival_rate(namespace, "orders", LOW_RATE)
    wait_until(
        lambda: pool_status(kubectl, namespace).get("recommendedReplicas", 99) <= 2,
        120,
        "the model to recommend <= 2 replicas after the load drops",
        alive,
    )


@contextlib.contextmanager
def own_prometheus(
    kubectl: Kubectl, namespace: str, channel_sim: SimFactory, tmp_path: Path
) -> Iterator[LocalPrometheus]:
    """Two workers and a channel at 30/s scraped by a Prometheus of the test's own (to stop it: an outage)."""
    create_worker(kubectl, namespace, 2)
    sim = channel_sim([channel(namespace, 30.0)], scrape=False)
    with LocalPrometheus(workdir=tmp_path / "prom") as prom:
        prom.add_target(sim.address)
        prom.wait_for_target(sim.address)
        yield prom


# ------------------------------------------------------------------------------------------------ scenarios
def test_burst_scales_up_and_drain_scales_down(
    kubectl: Kubectl, namespace: str, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    create_worker(kubectl, namespace, 1)
    sim = channel_sim([channel(namespace, LOW_RATE)])
    assert kubectl.apply(fast_pool(), namespace).returncode == 0
    op = operator_process(namespaces=[namespace])
    wait_signals_read(kubectl, namespace, op)

    sim.set_arrival_rate(namespace, "orders", BURST_RATE)

    wait_until(
        lambda: replicas(kubectl, namespace) >= 6,
        120,
        f"a scale-up to >= 6 replicas for {BURST_RATE}/s at {SERVICE_RATE}/s per worker",
        procs(op),
    )
    status = pool_status(kubectl, namespace)
    # a scale-up is recorded (on a slow machine the decision after it may already trim the count as backlog drains)
    assert any(d > 0 for _t, d in status["history"]["scaleEvents"]), status["history"]
    assert "Scaled" in event_reasons(kubectl, namespace)
    assert 'direction="up"' in op.metrics_text()

    sim.set_arrival_rate(namespace, "orders", LOW_RATE)

    wait_until(
        lambda: replicas(kubectl, namespace) <= 2,
        180,
        "a scale-down to <= 2 replicas once the backlog has drained",
        procs(op),
    )
    assert replicas(kubectl, namespace) >= 1  # never below minReplicas


def test_prometheus_outage_applies_fallback_never_zero(
    kubectl: Kubectl, namespace: str, channel_sim: SimFactory, operator_process: OperatorFactory, tmp_path: Path
) -> None:
    """Missing data is never zero: an outage holds, then applies the configured fallback, then recovers."""
    with own_prometheus(kubectl, namespace, channel_sim, tmp_path) as prom:
        pool = fast_pool(fallback={"behavior": "static", "replicas": 5, "failureThreshold": 3})
        assert kubectl.apply(pool, namespace).returncode == 0
        op = operator_process(namespaces=[namespace], prometheus_url=prom.url)
        wait_signals_read(kubectl, namespace, op)
        wait_until(lambda: replicas(kubectl, namespace) in (2, 3), 60, "steady state at 2-3 replicas", procs(op))

        prom.stop(cleanup=False)

        wait_condition(
            kubectl, namespace, op, "MetricsAvailable", "False", "QueryFailed", when="while Prometheus is down"
        )
        wait_until(
            lambda: replicas(kubectl, namespace) == 5,
            60,
            "the static fallback (5 replicas) after 3 failed ticks",
            procs(op),
        )
        assert pool_status(kubectl, namespace)["consecutiveFailures"] >= 3

        prom.start()

        wait_condition(kubectl, namespace, op, "MetricsAvailable", "True", when="once Prometheus is back", timeout=90)


def test_opa_policy_clamps_scale_up(
    kubectl: Kubectl, namespace: str, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    """With the packaged policies in a real OPA (`--opa local`), a caps guard holds a burst at 3 replicas."""
    create_worker(kubectl, namespace, 1)
    sim = channel_sim([channel(namespace, LOW_RATE)])
    pool = fast_pool(policy={"parameters": {"caps": {"maxReplicas": 3}}})
    assert kubectl.apply(pool, namespace).returncode == 0
    op = operator_process(namespaces=[namespace], opa="local")
    wait_signals_read(kubectl, namespace, op)

    sim.set_arrival_rate(namespace, "orders", BURST_RATE)

    wait_until(lambda: replicas(kubectl, namespace) == 3, 120, "the clamped scale-up to 3 replicas", procs(op))

    def capped_by_policy() -> bool:
        st = pool_status(kubectl, namespace)
        c = condition(st, "PolicyAllowed")
        # First clamped (1 -> 3), then, at the cap, each further step is denied: both name the caps guard.
        return (
            st.get("recommendedReplicas", 0) > 3
            and c.get("reason") in ("Clamped", "Denied")
            and ("caps" in c.get("message", ""))
        )

    wait_until(
        capped_by_policy, 60, "PolicyAllowed to report the caps guard holding the model's recommendation", procs(op)
    )
    assert {"PolicyClamped", "PolicyBlocked"} & event_reasons(kubectl, namespace)
    # Never above the cap, not even for one tick: every Scaled event ends at <= 3.
    scaled = [e["message"] for e in events(kubectl, namespace) if e.get("reason") == "Scaled"]
    assert scaled, "expected at least one Scaled event"
    for message in scaled:
        m = re.search(r"-> (\d+)", message)
        assert m is not None and int(m[1]) <= 3, scaled
    assert replicas(kubectl, namespace) == 3


def test_paused_pool_decides_but_does_not_scale(
    kubectl: Kubectl, namespace: str, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    create_worker(kubectl, namespace, 1)
    sim = channel_sim([channel(namespace, BURST_RATE)])
    pool = fast_pool()
    pool["metadata"]["annotations"] = {"chanscale.dev/paused": "true"}
    assert kubectl.apply(pool, namespace).returncode == 0
    op = operator_process(namespaces=[namespace])

    wait_condition(kubectl, namespace, op, "Paused", "True")
    wait_decision_not_applied(kubectl, namespace, op, "a recorded decision to scale up while paused")
    assert pool_status(kubectl, namespace)["lastDecision"]["mode"] == "Paused"
    _ = sim

    kubectl("annotate", "wp", "orders", "-n", namespace, "chanscale.dev/paused-", check=True)

    wait_until(lambda: replicas(kubectl, namespace) > 1, 60, "scaling to resume once unpaused", procs(op))


def test_hpa_on_the_same_deployment_is_a_conflict(
    kubectl: Kubectl, namespace: str, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    """Two autoscalers on one Deployment would fight: the pool refuses to scale and says why."""
    create_worker(kubectl, namespace, 2)
    channel_sim([channel(namespace, BURST_RATE)])
    hpa = kubectl("autoscale", "deployment", "worker", "-n", namespace, "--min=1", "--max=5", "--cpu-percent=80")
    assert hpa.returncode == 0, hpa.stderr
    assert kubectl.apply(fast_pool(), namespace).returncode == 0
    op = operator_process(namespaces=[namespace])

    wait_condition(kubectl, namespace, op, "Ready", "False", "TargetConflict", when="with the HPA")
    assert "TargetConflict" in event_reasons(kubectl, namespace)
    assert "worker" in condition(pool_status(kubectl, namespace), "Ready")["message"]
    assert replicas(kubectl, namespace) == 2

    kubectl("delete", "hpa", "worker", "-n", namespace, check=True)

    wait_condition(kubectl, namespace, op, "Ready", "True", when="once the HPA is gone")
    wait_until(lambda: replicas(kubectl, namespace) > 2, 90, "the burst to be served once the HPA is gone", procs(op))


def test_broken_pool_does_not_affect_healthy_pool(
    kubectl: Kubectl, namespace: str, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    create_worker(kubectl, namespace, 1)
    sim = channel_sim([channel(namespace, LOW_RATE)])
    broken_target = fast_pool("ghost", target="ghost-worker")
    broken_query = fast_pool("badquery")
    broken_query["spec"]["metrics"]["queries"] = {"backlog": "sum(("}
    broken_query["spec"]["scaleTargetRef"] = {"name": "other-worker"}
    create_worker(kubectl, namespace, 2, name="other-worker")
    for pool in (broken_target, broken_query, fast_pool()):
        assert kubectl.apply(pool, namespace).returncode == 0
    # Custom queries are off unless the admin enables them; enabled, each is parsed before it is sent.
    op = operator_process(namespaces=[namespace], extra_args=["--allow-custom-queries"])

    wait_condition(kubectl, namespace, op, "Ready", "False", "TargetNotFound", pool="ghost")
    wait_condition(kubectl, namespace, op, "Ready", "False", "QueryRefused", pool="badquery")
    assert "TargetNotFound" in event_reasons(kubectl, namespace, "ghost")

    sim.set_arrival_rate(namespace, "orders", BURST_RATE)

    wait_until(lambda: replicas(kubectl, namespace) >= 6, 120, "the healthy pool to scale up anyway", procs(op))
    assert replicas(kubectl, namespace, "other-worker") >= 2  # missing data never scales down

    create_worker(kubectl, namespace, 1, name="ghost-worker")

    wait_condition(kubectl, namespace, op, "Ready", "True", pool="ghost", when="once its Deployment exists")
    assert op.running


def test_restart_keeps_the_scale_down_window(
    kubectl: Kubectl, namespace: str, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    """The HPA forgets its stabilisation window on restart; chanscale keeps it in status.history."""
    sim = start_held_burst(kubectl, namespace, channel_sim)
    op = operator_process(namespaces=[namespace])
    wait_until(lambda: replicas(kubectl, namespace) >= 6, 120, "the burst scale-up to >= 6", procs(op))
    drop_load(kubectl, namespace, sim, procs(op))
    held = replicas(kubectl, namespace)
    assert held >= 6, "the 600 s scale-down window should hold the replicas"

    op.kill()
    op.restart()

    # Several fresh ticks of the new process, each of which would scale down if the window were forgotten.
    wait_until(lambda: decisions_total(op, namespace) >= 8, 60, "8 evaluations by the restarted operator", procs(op))
    assert replicas(kubectl, namespace) == held
    history = copy.deepcopy(pool_status(kubectl, namespace).get("history"))
    assert history, "status.history should carry the recommendations across the restart"


def test_dry_run_records_decisions_without_scaling(
    kubectl: Kubectl, namespace: str, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    create_worker(kubectl, namespace, 1)
    channel_sim([channel(namespace, BURST_RATE)])
    assert kubectl.apply(fast_pool(mode="DryRun"), namespace).returncode == 0
    op = operator_process(namespaces=[namespace])

    wait_decision_not_applied(kubectl, namespace, op, "a recorded scale-up decision in DryRun mode")
    status = pool_status(kubectl, namespace)
    assert status["lastDecision"]["mode"] == "DryRun" and status["lastDecision"]["applied"] is False, status
    assert "Scaled" not in event_reasons(kubectl, namespace)


def test_template_pool_owns_its_deployment(
    kubectl: Kubectl, namespace: str, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    """spec.template: the operator creates the Deployment, scales it, and the garbage collector removes it with
    the pool (ownerReference)."""
    pool = fast_pool()
    del pool["spec"]["scaleTargetRef"]
    pool["spec"]["template"] = {
        "metadata": {"labels": {"app": "orders"}},
        "spec": {"containers": [{"name": "worker", "image": "registry.invalid/worker:1"}]},
    }
    sim = channel_sim([channel(namespace, LOW_RATE, deployment="orders")])
    assert kubectl.apply(pool, namespace).returncode == 0
    op = operator_process(namespaces=[namespace], extra_args=["--template-namespace", namespace])

    wait_until(
        lambda: kubectl("get", "deployment", "orders", "-n", namespace).returncode == 0,
        60,
        "the operator to create Deployment orders from spec.template",
        procs(op),
    )
    deployment = kubectl.json("get", "deployment", "orders", "-n", namespace)
    owners = deployment["metadata"].get("ownerReferences", [])
    assert [(o["kind"], o["name"], o.get("controller")) for o in owners] == [("WorkerPool", "orders", True)]

    sim.set_arrival_rate(namespace, "orders", BURST_RATE)
    wait_until(lambda: replicas(kubectl, namespace, "orders") >= 6, 120, "the owned Deployment to scale up", procs(op))

    kubectl("delete", "wp", "orders", "-n", namespace, check=True)

    wait_until(
        lambda: kubectl("get", "deployment", "orders", "-n", namespace).returncode != 0,
        60,
        "the garbage collector to delete the Deployment with its pool",
        procs(op),
    )
