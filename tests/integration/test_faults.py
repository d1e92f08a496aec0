"""Faults, each against the real local control plane: an API-server restart longer than kopf's retry budget, a
SIGKILL at each step of a tick and at random points, an external `kubectl scale`, OPA and Prometheus outages.

Every test states the bound it asserts. Counts come from the API server itself (a watch on the object, the
Events it stores), never from the operator's own claims. No assertion is on elapsed time: waits are generous
wait-untils; the rate-limit bound compares replica changes against the pool's policy period.
"""

from __future__ import annotations

import itertools
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_operator_behaviour import (
    BURST_RATE,
    LOW_RATE,
    channel,
    condition,
    create_worker,
    decisions_total,
    events,
    fast_pool,
    has_condition,
    own_prometheus,
    pool_status,
    procs,
    replicas,
    wait_signals_read,
)

from chanscale.local.cluster import LocalControlPlane
from chanscale.local.harness import Kubectl, ObjectWatch, OperatorFactory, OperatorProcess, SimFactory
from chanscale.local.opa import OpaServer
from chanscale.local.process import LOOPBACK, ManagedProcess, free_port, wait_until
from chanscale.policy import default_policies_dir

pytestmark = pytest.mark.integration

#: kopf retries a failed PATCH 1+1+2+3+5+8+13+21 s = 54 s (plus request time) before it gives up.
KOPF_RETRY_BUDGET = 54.0


def event_count(kubectl: Kubectl, namespace: str, reason: str, pool: str = "orders") -> int:
    """Events with ``reason`` about the pool, counting the server-side ``count`` of repeated ones."""
    return sum(int(e.get("count") or 1) for e in events(kubectl, namespace, pool) if e.get("reason") == reason)


def event_log(kubectl: Kubectl, namespace: str, pool: str = "orders") -> list[str]:
    """Every Event about the pool, for assertion messages."""
    return [f"{e.get('reason')}: {e.get('message')}" for e in events(kubectl, namespace, pool)]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def shows(ctype: str, cstatus: str, reason: str | None = None) -> Callable[[dict[str, Any]], bool]:
    """A match for :meth:`ObjectWatch.first_seen`: the pool's status carries this condition."""

    def match(wp: dict[str, Any]) -> bool:
        c = condition(wp.get("status") or {}, ctype)
        return c.get("status") == cstatus and (reason is None or c.get("reason") == reason)

    return match


def bound_outage_writes(
    op: OperatorProcess,
    namespace: str,
    watch_pool: ObjectWatch,
    ticks: float,
    stopped_at: float,
    outage_of: str,
    noticed: Callable[[dict[str, Any]], bool],
) -> None:
    """Let 25 ticks pass after ``ticks`` (counted when the dependency stopped at ``stopped_at``), then bound the
    pool's status writes since the first status that shows the outage (``noticed``): 3 condition transitions,
    then only the refreshes (--status-refresh 10), and one spare.

    Counted from that status, not from the stop: until a tick needs the dependency (a change for the policy gate
    to pass, a read the signal cache cannot answer) the pool is healthy and writes as a healthy pool does - these
    fast pools every tick, as each tick starts a new stabilisation run - and how many such ticks follow the stop
    depends on how soon the load change reaches the operator on a busy machine, not on the outage."""
    shown = [0.0]

    def seen() -> bool:
        shown[0] = watch_pool.first_seen(noticed, since=stopped_at) or 0.0
        return bool(shown[0])

    wait_until(seen, 60, f"the pool's watch to show the {outage_of}", procs(op))
    wait_until(lambda: decisions_total(op, namespace) >= ticks + 25, 90, "25 ticks during the outage", procs(op))
    since = shown[0]
    outage, writes = time.monotonic() - since, watch_pool.status_writes(since=since)
    assert writes <= 3 + outage / 10 + 1, (f"{writes} status writes in {outage:.0f}s", watch_pool.status_changes(since))
    print(f"MEASURED {outage_of}: {writes} status writes in {outage:.0f}s (shown {since - stopped_at:.1f}s after)")


def readyz(op: OperatorProcess) -> str:
    return op.liveness_url.rsplit("/", 1)[0] + "/readyz"


@pytest.fixture
def watch_pool(k8s: Any, namespace: str) -> Iterator[ObjectWatch]:
    with ObjectWatch(k8s, "workerpool", namespace, "orders") as w:
        yield w


@pytest.fixture
def watch_worker(k8s: Any, namespace: str) -> Iterator[ObjectWatch]:
    with ObjectWatch(k8s, "deployment", namespace, "worker") as w:
        yield w


# --------------------------------------------------------------------------------------- API-server outage
def test_apiserver_restart_longer_than_kopfs_retry_budget_does_not_stop_evaluation(
    control_plane: LocalControlPlane,
    kubectl: Kubectl,
    namespace: str,
    channel_sim: SimFactory,
    operator_process: OperatorFactory,
) -> None:
    """Bound: after an API-server outage longer than kopf's whole retry budget, the pool is evaluated again and
    serves load that arrived during the outage; readiness is 503 while the API server is down, 200 after;
    liveness stays 200 (every pool keeps being evaluated during the outage)."""
    create_worker(kubectl, namespace, 1)
    sim = channel_sim([channel(namespace, LOW_RATE)])
    assert kubectl.apply(fast_pool(), namespace).returncode == 0
    # A short status refresh guarantees status writes are due during the outage (what killed kopf's timer).
    op = operator_process(namespaces=[namespace], extra_args=["--status-refresh", "2"])
    wait_signals_read(kubectl, namespace, op, "signals read")
    wait_until(lambda: http_status(readyz(op)) == 200, 30, "readiness 200 before the outage", procs(op))

    control_plane.stop_apiserver()
    try:
        sim.set_arrival_rate(namespace, "orders", BURST_RATE)
        wait_until(lambda: http_status(readyz(op)) == 503, 60, "readiness 503 while the API server is down", procs(op))
        time.sleep(KOPF_RETRY_BUDGET + 15)  # the fault itself: longer than kopf's retry budget
        assert http_status(op.liveness_url) == 200, "every pool is still evaluated during the outage"
    finally:
        control_plane.start_apiserver()
    back = time.monotonic()

    wait_until(
        lambda: replicas(kubectl, namespace) >= 6,
        180,
        "the pool to serve the load that arrived during the outage (>= 6 replicas)",
        procs(op),
    )
    print(f"\nMEASURED api-server outage: first scale {time.monotonic() - back:.1f}s after the API server was back")
    wait_until(lambda: http_status(readyz(op)) == 200, 60, "readiness 200 after the outage", procs(op))
    assert http_status(op.liveness_url) == 200
    assert "Removing the finalizer" not in op.log_text()


# ------------------------------------------------------------------------------------------- crash safety
SCALE_UP_PODS, SCALE_UP_PERIOD = 2, 12


def rate_limited_pool() -> dict[str, Any]:
    pool = fast_pool()
    pool["spec"]["maxReplicas"] = 12
    pool["spec"]["behavior"]["scaleUp"]["policies"] = [
        {"type": "Pods", "value": SCALE_UP_PODS, "periodSeconds": SCALE_UP_PERIOD}
    ]
    pool["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] = 600
    return pool


def worst_increase(changes: list[tuple[float, int]], window: float) -> int:
    """The largest rise in replicas between any two observed versions less than ``window`` seconds apart."""
    worst = 0
    for i, (t1, r1) in enumerate(changes):
        for t2, r2 in changes[i + 1 :]:
            if t2 - t1 < window:
                worst = max(worst, r2 - r1)
    return worst


def test_sigkill_at_each_tick_step_and_at_random_keeps_the_rate_limit(
    kubectl: Kubectl,
    namespace: str,
    channel_sim: SimFactory,
    operator_process: OperatorFactory,
    watch_worker: ObjectWatch,
) -> None:
    """Bound: with a "Pods 2 per 12 s" scale-up policy, no two replica counts the API server held less than
    12 s apart (minus 1 s for watch delivery) differ by more than 2, across a SIGKILL at every step of a tick
    and at random points; every change that reached the Deployment is in status.history afterwards."""
    create_worker(kubectl, namespace, 1)
    channel_sim([channel(namespace, BURST_RATE)])
    assert kubectl.apply(rate_limited_pool(), namespace).returncode == 0

    for step in ("before-intent", "after-intent", "after-scale", "after-status"):
        op = operator_process(namespaces=[namespace], env={"CHANSCALE_CRASH_AT": step}, wait=False)
        assert op.proc is not None
        wait_until(lambda op=op: not op.running, 120, f"the operator to SIGKILL itself at {step}", [])  # type: ignore[misc]
        op.stop()
    rng = random.Random(11)
    for _ in range(6):
        op = operator_process(namespaces=[namespace], wait=False)
        time.sleep(rng.uniform(2.0, 6.0))  # a random point in the operator's life: start-up, a tick, a scale
        op.kill()
        op.stop()
    op = operator_process(namespaces=[namespace])
    wait_until(lambda: replicas(kubectl, namespace) >= 9, 180, "the burst to reach >= 9 replicas", procs(op))
    print(f"\nMEASURED crash loop: replica changes the API server took {watch_worker.replicas()}")

    changes = watch_worker.replicas()
    assert worst_increase(changes, SCALE_UP_PERIOD - 1) <= SCALE_UP_PODS, changes
    # The intent is cleared by the status write that follows the scale: the Deployment can show the scale first.
    wait_until(
        lambda: "pending" not in pool_status(kubectl, namespace)["history"], 60, "the intent to be cleared", procs(op)
    )
    history = pool_status(kubectl, namespace)["history"]
    recorded = sum(d for _t, d in history["scaleEvents"] if d > 0)
    observed = sum(max(0, b[1] - a[1]) for a, b in itertools.pairwise(changes))
    assert recorded >= observed, (history["scaleEvents"], changes)  # every rise the Deployment took is recorded


# ------------------------------------------------------------------------------------------- other writers
def test_external_kubectl_scale_holds_off_names_the_writer_then_resumes(
    kubectl: Kubectl, namespace: str, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    """Bound: after `kubectl scale`, zero replica writes by chanscale during the cooldown (over >= 10 ticks),
    one ExternalScale Event naming the writer even after a second `kubectl scale`, then resumption."""
    create_worker(kubectl, namespace, 1)
    channel_sim([channel(namespace, LOW_RATE)])
    pool = fast_pool(externalScale={"action": "HoldOff", "cooldownSeconds": 30})
    assert kubectl.apply(pool, namespace).returncode == 0
    op = operator_process(namespaces=[namespace])
    wait_until(lambda: pool_status(kubectl, namespace).get("replicas") == 1, 60, "a settled pool", procs(op))

    kubectl("scale", "deployment", "worker", "-n", namespace, "--replicas=6", check=True)
    scaled_at = time.monotonic()

    wait_until(
        has_condition(kubectl, namespace, "ExternalWriter", "True", "HoldingOff"), 30, "ExternalWriter", procs(op)
    )
    print(f"\nMEASURED external writer: ExternalWriter=True {time.monotonic() - scaled_at:.1f}s after kubectl scale")
    message = condition(pool_status(kubectl, namespace), "ExternalWriter")["message"]
    assert "kubectl" in message and "1 -> 6" in message, message
    kubectl("scale", "deployment", "worker", "-n", namespace, "--replicas=7", check=True)
    ticks = decisions_total(op, namespace)
    wait_until(lambda: decisions_total(op, namespace) >= ticks + 10, 60, "10 more evaluations", procs(op))
    assert replicas(kubectl, namespace) == 7, "chanscale must not fight the other writer during the cooldown"
    assert event_count(kubectl, namespace, "ExternalScale") == 1, event_log(kubectl, namespace)

    wait_until(lambda: replicas(kubectl, namespace) <= 2, 120, "scaling to resume after the cooldown", procs(op))


def test_external_scale_with_reassert_scales_back_and_says_so_once(
    kubectl: Kubectl, namespace: str, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    """Bound: Reassert scales back; one ExternalScale Event per writer for two external writes."""
    create_worker(kubectl, namespace, 1)
    channel_sim([channel(namespace, LOW_RATE)])
    pool = fast_pool(externalScale={"action": "Reassert", "cooldownSeconds": 60})
    assert kubectl.apply(pool, namespace).returncode == 0
    op = operator_process(namespaces=[namespace])
    wait_until(lambda: pool_status(kubectl, namespace).get("replicas") == 1, 60, "a settled pool", procs(op))

    for n in (6, 5):
        kubectl("scale", "deployment", "worker", "-n", namespace, f"--replicas={n}", check=True)
        wait_until(lambda: replicas(kubectl, namespace) <= 2, 60, "chanscale to reassert its count", procs(op))
    c = condition(pool_status(kubectl, namespace), "ExternalWriter")
    assert c.get("reason") == "Reasserting" and "kubectl" in c.get("message", ""), c
    assert event_count(kubectl, namespace, "ExternalScale") == 1, event_log(kubectl, namespace)


# ------------------------------------------------------------------------------------------------ outages
def test_opa_outage_posts_one_event_and_bounded_status_writes(
    kubectl: Kubectl,
    namespace: str,
    channel_sim: SimFactory,
    operator_process: OperatorFactory,
    watch_pool: ObjectWatch,
    tmp_path: Path,
) -> None:
    """Bound (failurePolicy Hold, a burst proposing a change every tick): at most one PolicyUnavailable Event for
    the whole outage, and at most the condition transitions + outage/status-refresh status writes while OPA is
    down."""
    create_worker(kubectl, namespace, 2)
    sim = channel_sim([channel(namespace, LOW_RATE)])
    port = free_port()
    opa = ManagedProcess("opa", OpaServer([default_policies_dir()]).argv(port), tmp_path / "opa.log").start()
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_until(lambda: http_status(f"{url}/health") == 200, 30, "OPA healthy", [opa])
        assert kubectl.apply(fast_pool(), namespace).returncode == 0
        op = operator_process(
            namespaces=[namespace], opa=url, extra_args=["--failure-policy", "Hold", "--status-refresh", "10"]
        )
        wait_signals_read(kubectl, namespace, op, "signals read")
        before = {r: event_count(kubectl, namespace, r) for r in ("PolicyUnavailable", "PolicyBlocked")}
        opa.stop()
        stopped_at = time.monotonic()
        ticks = decisions_total(op, namespace)
        sim.set_arrival_rate(namespace, "orders", BURST_RATE)  # every tick now proposes a change
        wait_until(
            has_condition(kubectl, namespace, "PolicyAllowed", "False", "PolicyUnavailable"),
            60,
            "PolicyAllowed=False/PolicyUnavailable",
            procs(op),
        )
        held = replicas(kubectl, namespace)  # from here on failurePolicy Hold applies
        print(f"\nMEASURED OPA outage: PolicyUnavailable {time.monotonic() - stopped_at:.1f}s after OPA stopped")
        # material transitions: PolicyAllowed=False and, as the burst outgrows the held pool, SLOMet=False (2 + 1)
        noticed = shows("PolicyAllowed", "False", "PolicyUnavailable")
        bound_outage_writes(op, namespace, watch_pool, ticks, stopped_at, "OPA outage", noticed)
        assert event_count(kubectl, namespace, "PolicyUnavailable") == before["PolicyUnavailable"] + 1, event_log(
            kubectl, namespace
        )
        assert event_count(kubectl, namespace, "PolicyBlocked") == before["PolicyBlocked"], event_log(
            kubectl, namespace
        )
        assert replicas(kubectl, namespace) == held  # failurePolicy Hold
        msg = condition(pool_status(kubectl, namespace), "PolicyAllowed")["message"]
        assert len(msg) <= 220, msg
    finally:
        opa.stop()


def test_prometheus_outage_status_writes_bounded_fallback_condition_and_events(
    kubectl: Kubectl,
    namespace: str,
    channel_sim: SimFactory,
    operator_process: OperatorFactory,
    watch_pool: ObjectWatch,
    tmp_path: Path,
) -> None:
    """Bound: during a Prometheus outage, at most 3 (MetricsAvailable, Fallback, refresh slack) + outage/refresh
    status writes; exactly one MetricsUnavailable and one FallbackActive Event; a Fallback condition; short
    condition messages (the ConnectionError goes to the log under a ref)."""
    with own_prometheus(kubectl, namespace, channel_sim, tmp_path) as prom:
        assert kubectl.apply(fast_pool(fallback={"failureThreshold": 3}), namespace).returncode == 0
        op = operator_process(namespaces=[namespace], prometheus_url=prom.url, extra_args=["--status-refresh", "10"])
        wait_signals_read(kubectl, namespace, op, "signals read")

        before = {r: event_count(kubectl, namespace, r) for r in ("MetricsUnavailable", "FallbackActive")}
        prom.stop(cleanup=False)
        stopped_at = time.monotonic()
        ticks = decisions_total(op, namespace)

        wait_until(has_condition(kubectl, namespace, "Fallback", "True"), 60, "Fallback=True", procs(op))
        print(f"\nMEASURED prometheus outage: Fallback=True {time.monotonic() - stopped_at:.1f}s after it stopped")
        noticed = shows("MetricsAvailable", "False")
        bound_outage_writes(op, namespace, watch_pool, ticks, stopped_at, "prometheus outage", noticed)
        for reason in ("MetricsUnavailable", "FallbackActive"):  # one each for the whole outage
            assert event_count(kubectl, namespace, reason) == before[reason] + 1, event_log(kubectl, namespace)
        st = pool_status(kubectl, namespace)
        msg = condition(st, "MetricsAvailable")["message"]
        assert len(msg) <= 220 and "log ref" in msg, msg
        assert msg.split("log ref ")[1][:8] in op.log_text()

        prom.start()
        up_at = time.monotonic()
        wait_until(has_condition(kubectl, namespace, "Fallback", "False"), 90, "Fallback=False on recovery", procs(op))
        print(f"MEASURED prometheus outage: Fallback=False {time.monotonic() - up_at:.1f}s after it was back")


def test_broken_signal_below_the_model_is_named_in_an_event(
    kubectl: Kubectl, namespace: str, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    """Bound: a NaN backlog query under load the model sizes above the current count: Fallback=True and exactly
    one HeldBelowModel Event naming the pool, the replicas never lowered."""
    create_worker(kubectl, namespace, 2)
    channel_sim([channel(namespace, BURST_RATE)])
    # Threshold 1: the fallback (currentReplicas) holds from the first tick, so the arrival rate alone never
    # scales the pool up before it (what it may do below the threshold: missing data only forbids scaling down).
    pool = fast_pool(fallback={"failureThreshold": 1})
    pool["spec"]["metrics"]["queries"] = {"backlog": "vector(0) / 0"}
    assert kubectl.apply(pool, namespace).returncode == 0
    op = operator_process(namespaces=[namespace], extra_args=["--allow-custom-queries"])

    wait_until(has_condition(kubectl, namespace, "Fallback", "True"), 60, "Fallback=True", procs(op))
    wait_until(lambda: event_count(kubectl, namespace, "HeldBelowModel") >= 1, 30, "a HeldBelowModel Event", procs(op))
    ticks = decisions_total(op, namespace)
    wait_until(lambda: decisions_total(op, namespace) >= ticks + 10, 60, "10 more evaluations", procs(op))
    held = [e["message"] for e in events(kubectl, namespace) if e.get("reason") == "HeldBelowModel"]
    assert len(held) == 1 and f"{namespace}/orders" in held[0], held
    assert pool_status(kubectl, namespace)["recommendedReplicas"] > replicas(kubectl, namespace) >= 2


def test_dead_local_opa_is_restarted_by_its_supervisor(
    kubectl: Kubectl, namespace: str, operator_process: OperatorFactory
) -> None:
    """Bound: with no pool asking for a decision, a SIGKILLed local OPA child is replaced by a new one, and
    liveness is 200 again afterwards."""
    op = operator_process(namespaces=[namespace], opa="local")
    assert op.proc is not None and op.proc.pid is not None

    def opa_children() -> list[int]:
        out = []
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                stat = (p / "stat").read_text().rsplit(")", 1)[1].split()
                cmd = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if int(stat[1]) == op.proc.pid and cmd and cmd[0].endswith(b"opa") and b"run" in cmd:  # type: ignore[union-attr]
                out.append(int(p.name))
        return out

    wait_until(lambda: "local OPA serving" in op.log_text(), 60, "the local OPA child to serve", procs(op))
    wait_until(lambda: len(opa_children()) == 1, 60, "the local OPA child", procs(op))
    first = opa_children()[0]
    import os
    import signal

    os.kill(first, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: opa_children() not in ([], [first]), 60, "a new local OPA child", procs(op))
    print(f"\nMEASURED local OPA: a new child {time.monotonic() - killed_at:.1f}s after SIGKILL")
    wait_until(lambda: http_status(op.liveness_url) == 200, 30, "liveness 200 with OPA back", procs(op))
