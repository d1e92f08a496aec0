"""Two operator processes with Lease leader election against the real API server (chanscale.leader).

One holds the Lease and evaluates; the other watches (hot standby) and writes nothing. When the leader is killed
(SIGKILL: no release), the standby takes over once the Lease expires, keeps the pool's history and its scale-down
window, and never writes while the leader lives. The failover time is printed (a measurement, not asserted).
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from tests.integration.test_operator_behaviour import (
    LOW_RATE,
    channel,
    create_worker,
    decisions_total,
    drop_load,
    fast_pool,
    pool_status,
    replicas,
    start_held_burst,
)

from chanscale.local.harness import Kubectl, OperatorFactory, OperatorProcess, SimFactory
from chanscale.local.process import wait_until

pytestmark = pytest.mark.integration


def writes(op: OperatorProcess) -> float:
    """Scale and WorkerPool status/label writes this operator has sent (its own request counter)."""
    total = 0.0
    pattern = re.compile(r"^chanscale_kubernetes_requests_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
    for line in op.metrics_text().splitlines():
        m = pattern.match(line)
        if m and 'verb="patch"' in m["labels"]:
            total += float(m["value"])
    return total


def lease_holder(kubectl: Kubectl, namespace: str) -> str:
    return str(kubectl.json("get", "lease", "chanscale", "-n", namespace)["spec"].get("holderIdentity") or "")


def two_replicas(operator_process: OperatorFactory, namespace: str) -> tuple[list[OperatorProcess], list[Any]]:
    """Two operators electing a leader with the shipped Lease timings (10 s / 7 s / 2 s), and their processes."""
    ha = ["--leader-elect", "--lease-namespace", namespace]
    ops = [operator_process(namespaces=[namespace], extra_args=ha) for _ in range(2)]
    return ops, [op.proc for op in ops if op.proc]


def first_evaluation(standby: OperatorProcess, namespace: str, since: float) -> float:
    """Wait for the standby's first evaluation of the pool; returns the seconds since ``since`` (the leader's end)."""
    wait_until(lambda: decisions_total(standby, namespace) >= 1, 60, "the standby's first evaluation", [standby.proc])
    return time.monotonic() - since


def test_standby_takes_over_a_killed_leader_without_double_writes_or_lost_history(
    kubectl: Kubectl, namespace: str, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    sim = start_held_burst(kubectl, namespace, channel_sim)
    ops, alive = two_replicas(operator_process, namespace)
    wait_until(lambda: replicas(kubectl, namespace) >= 6, 120, "the leader's burst scale-up to >= 6", alive)

    leader, standby = sorted(ops, key=lambda op: -decisions_total(op, namespace))
    assert decisions_total(standby, namespace) == 0, "the standby must not evaluate while the leader holds the Lease"
    assert writes(standby) == 0, "the standby must not write while the leader holds the Lease"
    assert lease_holder(kubectl, namespace)

    drop_load(kubectl, namespace, sim, alive)
    held = replicas(kubectl, namespace)
    before = (pool_status(kubectl, namespace).get("history") or {}).get("scaleEvents") or []
    assert before and writes(standby) == 0

    killed_at = time.monotonic()
    leader.kill()
    failover = first_evaluation(standby, namespace, killed_at)
    wait_until(lambda: decisions_total(standby, namespace) >= 8, 60, "8 evaluations by the new leader", [standby.proc])
    print(f"\nfailover after SIGKILL of the leader: first evaluation by the standby after {failover:.1f} s")

    assert replicas(kubectl, namespace) == held, "the 600 s scale-down window must survive the failover"
    after = (pool_status(kubectl, namespace).get("history") or {}).get("scaleEvents") or []
    assert all(e in after for e in before), "the new leader must continue the history, not restart it"
    assert lease_holder(kubectl, namespace) != ""


def test_a_gracefully_stopped_leader_hands_over_at_the_next_round(
    kubectl: Kubectl, namespace: str, channel_sim: SimFactory, operator_process: OperatorFactory
) -> None:
    """SIGTERM (a rolling update, a drain): the leader releases its Lease, the standby takes over at its next
    election round instead of waiting for the Lease to expire."""
    create_worker(kubectl, namespace, 1)
    channel_sim([channel(namespace, LOW_RATE)])
    assert kubectl.apply(fast_pool(), namespace).returncode == 0
    ops, alive = two_replicas(operator_process, namespace)
    wait_until(lambda: any(decisions_total(op, namespace) >= 3 for op in ops), 120, "the leader's evaluations", alive)
    leader, standby = sorted(ops, key=lambda op: -decisions_total(op, namespace))
    assert decisions_total(standby, namespace) == 0 and writes(standby) == 0

    stopped_at = time.monotonic()
    leader.stop()
    handover = first_evaluation(standby, namespace, stopped_at)
    print(f"\nhandover after SIGTERM of the leader: first evaluation by the standby after {handover:.1f} s")
    assert "released Lease" in leader.log_text()
