"""The policy gate against a REAL `opa run --server` serving policies/ (started and stopped by OpaServer).

Covers: allow, clamp, deny, undefined decision, OPA down (failure policies Hold and Allow), a user-supplied policy
package, the shipped example, and the local gate restarting a dead child. A missing opa binary fails the tests
with the fix (`make tools`); it never skips.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from chanscale.local.opa import OpaNotFound, OpaServer, find_opa_binary, free_port
from chanscale.peerlist import PeerListProbe
from chanscale.policy import (
    LocalOpaGate,
    OpaGate,
    PolicyUnavailable,
    build_input,
    default_policies_dir,
    verdict_on_failure,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DECISION_SCHEMA = json.loads((REPO / "policies" / "decision.schema.json").read_text())
MAIN = "chanscale/main/decision"
MONDAY_NOON = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)

USER_POLICY = """\
package acme.scaling

import data.chanscale.main

# Our own rule on top of chanscale's guards: pools of team "batch" never scale up during business hours (UTC).
business_hours if {
	[hour, _, _] := time.clock(time.parse_rfc3339_ns(input.now))
	hour >= 9
	hour < 17
}

decision := {
	"allow": false,
	"replicas": input.replicas.current,
	"reasons": ["acme: batch pools do not scale up during business hours"],
	"escalated": false,
	"limitedBy": ["acme"],
} if {
	input.pool.metadata.labels.team == "batch"
	input.direction == "up"
	business_hours
}

else := main.decision
"""


def opa_binary() -> Path:
    try:
        return find_opa_binary()
    except OpaNotFound as exc:
        pytest.fail(f"{exc}\n(the policy integration tests need a real OPA: run `make tools`)")


@pytest.fixture(scope="module")
def user_policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("user-policies")
    (d / "acme.rego").write_text(USER_POLICY)
    return d


@pytest.fixture
async def opa(user_policy_dir: Path) -> AsyncIterator[OpaServer]:
    server = OpaServer([default_policies_dir(), user_policy_dir], binary=opa_binary())
    await server.start()
    try:
        yield server
    finally:
        tail = server.log_tail()
        await server.close()
        assert server.pid is None, f"OPA not stopped; log:\n{tail}"


@pytest.fixture
async def gate(opa: OpaServer) -> AsyncIterator[OpaGate]:
    g = OpaGate(opa.url)
    yield g
    await g.close()


def doc(
    current: int,
    recommended: int,
    parameters: dict[str, Any] | None = None,
    *,
    labels: dict[str, str] | None = None,
    signals: dict[str, float | None] | None = None,
    now: datetime = MONDAY_NOON,
    others: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    pool = {
        "metadata": {"namespace": "shop", "name": "orders", "labels": labels or {}},
        "spec": {
            "channel": "orders",
            "maxReplicas": 100,
            "slo": {"p99LatencySeconds": 0.25, "maxErrorRate": 0.05},
            "policy": {"parameters": parameters or {}},
        },
    }
    return build_input(
        pool=pool,
        current_replicas=current,
        recommended_replicas=recommended,
        min_replicas=1,
        max_replicas=100,
        signals=signals or {"backlog": 100.0, "arrivalRate": 50.0, "serviceRate": 20.0, "errorRate": 0.0},
        history={},
        now=now,
        namespace_pools=others or [],
    )


async def test_the_budget_reads_the_summary_without_the_list(gate: OpaGate) -> None:
    """The shipped budget reads input.namespace.others: the same bound with and without the per-pool list."""
    params = {"budget": {"maxReplicas": 20}}
    others = [{"name": "payments", "replicas": 10, "desiredReplicas": 11}, {"name": "emails", "replicas": 2}]
    with_list = await gate.evaluate(MAIN, doc(3, 30, params, others=others))
    summary_only = doc(3, 30, params, others=others)
    del summary_only["namespace"]["pools"]
    without = await gate.evaluate(MAIN, summary_only)
    assert (with_list.replicas, without.replicas) == (7, 7)
    assert with_list.reasons == without.reasons


async def test_a_remote_opa_is_asked_whether_a_policy_reads_the_list(opa: OpaServer, gate: OpaGate) -> None:
    """--policy-peers auto with an OPA URL: the modules come from GET /v1/policies; one pushed through the API
    that reads input.namespace.pools turns the list on at the next check."""
    now = [0.0]
    probe = PeerListProbe(gate.policy_sources, every=60.0, clock=lambda: now[0])
    sources = await gate.policy_sources()
    assert any("package acme.scaling" in s for s in sources) and any("package chanscale.budget" in s for s in sources)
    await probe()
    await probe.settle()
    assert await probe() is False
    await gate._client.update_policy_from_string(
        "package acme.peers\n\nbusy := count(input.namespace.pools) > 100\n", "acme-peers"
    )
    assert await probe() is False  # within the period: the last answer
    now[0] = 61.0
    await probe()
    await probe.settle()
    assert await probe() is True


async def test_allow(gate: OpaGate) -> None:
    v = await gate.evaluate(MAIN, doc(3, 6))
    assert (v.allow, v.replicas, v.source, v.error) == (True, 6, "opa", None)
    assert v.reasons == ("allowed: no guard limits 3 -> 6 replicas",)
    assert v.latency_seconds > 0


async def test_clamp_by_step_cap_and_budget(gate: OpaGate) -> None:
    params = {"step": {"maxUp": 4}, "caps": {"maxReplicas": 12}, "budget": {"maxReplicas": 20}}
    others = [{"name": "payments", "replicas": 10, "desiredReplicas": 11}]
    v = await gate.evaluate(MAIN, doc(3, 30, params, others=others))
    assert (v.allow, v.replicas) == (True, 7)
    assert v.limited_by == ("step", "budget", "caps")
    assert v.reasons[0] == "step: at most +4 replicas per decision (proposed +27)"
    assert v.reasons[1].startswith('budget: namespace "shop" may run 20 replicas')


async def test_deny_by_freeze_window_and_error_brake(gate: OpaGate) -> None:
    params = {
        "windows": {"windows": [{"name": "release", "start": "13:00", "end": "14:00", "timezone": "Europe/Berlin"}]},
        "errorBrake": {"enabled": True},
    }
    signals: dict[str, float | None] = {"backlog": 100.0, "errorRate": 0.3}
    v = await gate.evaluate(MAIN, doc(3, 8, params, signals=signals))
    assert (v.allow, v.replicas) == (False, 3)
    assert v.limited_by == ("windows", "errorBrake")
    assert v.reasons[0].startswith('windows: freeze window "release" is active (13:00-14:00 Europe/Berlin)')
    assert v.reasons[1].startswith("error-brake: error rate 30% is above the 5% limit")


async def test_escalation_flag(gate: OpaGate) -> None:
    v = await gate.evaluate(MAIN, doc(3, 40, {"step": {"maxUp": 2}}, signals={"backlog": 50000.0}))
    assert v.escalated and v.labels == {"chanscale.dev/escalated": "true"}
    assert v.replicas == 11


async def test_every_main_decision_matches_the_schema(opa: OpaServer) -> None:
    """Raw decision documents (not the parsed Verdict) conform to policies/decision.schema.json."""
    import aiohttp

    documents = [
        doc(3, 6),
        doc(3, 3),
        doc(10, 1, {"step": {"maxDown": 2}, "caps": {"minReplicas": 3}}),
        doc(3, 30, {"caps": {"maxReplicas": 12, "override": {"maxReplicas": 20, "reason": "sale"}}}),
        {"not": "an input"},
    ]
    async with aiohttp.ClientSession() as session:
        for d in documents:
            async with session.post(f"{opa.url}/v1/data/chanscale/main/decision", json={"input": d}) as resp:
                body = await resp.json()
            jsonschema.validate(body["result"], DECISION_SCHEMA)
            assert body["result"]["reasons"], body


async def test_undefined_decision_is_deny(gate: OpaGate) -> None:
    v = await gate.evaluate("acme/nothing/here", doc(3, 6))
    assert (v.allow, v.replicas, v.source) == (False, None, "opa")
    assert v.error is not None and "undefined decision" in v.error


@pytest.mark.parametrize("path", ["chanscale/lib/scaling_up", "chanscale/main/allow", "chanscale/config/locked"])
async def test_a_path_that_is_not_a_decision_object_is_denied(gate: OpaGate, path: str) -> None:
    """The policy bypass of issue 10: paths naming a plain `true` (or any non-decision) are denied, not allowed."""
    v = await gate.evaluate(path, doc(3, 9))
    assert (v.allow, v.replicas) == (False, None)
    assert v.error is not None and "expected a decision object" in v.error


async def test_user_supplied_policy_package(gate: OpaGate) -> None:
    batch = await gate.evaluate("acme/scaling/decision", doc(3, 6, labels={"team": "batch"}))
    assert (batch.allow, batch.replicas, batch.limited_by) == (False, 3, ("acme",))
    assert batch.reasons == ("acme: batch pools do not scale up during business hours",)
    # Outside the rule it falls back to chanscale's own decision.
    other = await gate.evaluate("acme/scaling/decision", doc(3, 6, labels={"team": "web"}))
    assert (other.allow, other.replicas) == (True, 6)


async def test_shipped_example_policy(gate: OpaGate) -> None:
    v = await gate.evaluate("examples/critical_floor/decision", doc(6, 1, labels={"tier": "critical"}))
    assert (v.allow, v.replicas) == (True, 3)
    assert v.reasons[0].startswith("critical-floor:")


async def test_opa_down_hold_and_allow() -> None:
    gate = OpaGate(f"http://127.0.0.1:{free_port()}", retries=1)
    try:
        with pytest.raises(PolicyUnavailable, match="unreachable") as info:
            await gate.evaluate(MAIN, doc(3, 9), timeout=5.0)
    finally:
        await gate.close()
    error = str(info.value)
    hold = verdict_on_failure("Hold", current=3, proposed=9, min_replicas=1, max_replicas=8, error=error)
    assert (hold.allow, hold.replicas, hold.source, hold.error) == (False, 3, "failure-policy", error)
    allow = verdict_on_failure("Allow", current=3, proposed=9, min_replicas=1, max_replicas=8, error=error)
    assert (allow.allow, allow.replicas) == (True, 8)


async def test_opa_stopped_under_a_gate(opa: OpaServer) -> None:
    gate = OpaGate(opa.url, retries=0)
    try:
        assert (await gate.evaluate(MAIN, doc(3, 6))).allow
        await opa.stop()
        with pytest.raises(PolicyUnavailable):
            await gate.evaluate(MAIN, doc(3, 6))
    finally:
        await gate.close()


async def test_local_gate_starts_restarts_and_cleans_up() -> None:
    gate = LocalOpaGate(binary=opa_binary())
    try:
        first = await gate.evaluate(MAIN, doc(3, 6))
        assert first.allow and first.replicas == 6
        pid = gate.server.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await gate.server._proc.wait()  # type: ignore[union-attr]
        again = await gate.evaluate(MAIN, doc(3, 6))
        assert again.allow and again.replicas == 6
        assert gate.restarts == 1
        assert gate.server.pid not in (None, pid)
        pid = gate.server.pid
    finally:
        await gate.close()
    assert gate.server.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, not a zombie or a leak


async def test_local_gate_with_a_broken_policy_fails_with_the_opa_error(tmp_path: Path) -> None:
    (tmp_path / "bad.rego").write_text("package bad\n\nallow if {\n")
    gate = LocalOpaGate([tmp_path], binary=opa_binary())
    try:
        with pytest.raises(PolicyUnavailable, match="rego_parse_error"):
            await gate.evaluate("bad/allow", {})
    finally:
        await gate.close()
