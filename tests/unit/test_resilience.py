"""Crash safety, other writers, verdict-keyed Events, material status writes and health, with fakes."""

from typing import Any

import pytest
from test_reconcile import TARGET, Gate, Prom, Scaler, cond, pool, runtime

from chanscale.health import Health
from chanscale.kube import StatusWriteError, replicas_manager
from chanscale.policy import Verdict
from chanscale.reconcile import Target, resolve_pending, tick

pytestmark = pytest.mark.unit


class Writer:
    """Records status patches in order with the scaler's calls, so a test sees what was written before what."""

    def __init__(self, log: list[Any], fail: bool = False) -> None:
        self.log, self.fail, self.rv = log, fail, 100

    async def write_status(self, namespace: str, name: str, patch: Any) -> str:
        if self.fail:
            raise StatusWriteError("connection refused")
        self.log.append(("status", patch))
        self.rv += 1
        return str(self.rv)

    async def write_labels(self, namespace: str, name: str, labels: Any) -> None:
        self.log.append(("labels", labels))


class OrderedScaler(Scaler):
    def __init__(self, log: list[Any]) -> None:
        super().__init__()
        self.log = log

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.log.append(("scale", replicas))
        await super().scale(namespace, name, replicas)


async def test_the_scale_intent_is_written_before_the_scale_and_cleared_after() -> None:
    log: list[Any] = []
    rt = runtime(scaler=OrderedScaler(log))
    rt.writer = Writer(log)
    await tick(rt, pool(), TARGET)
    kinds = [k for k, _ in log]
    assert kinds == ["status", "scale", "status"], log
    ahead, after = log[0][1], log[2][1]
    assert ahead["history"]["pending"] == {"from": 4, "to": 12, "time": 1_000_000.0}
    assert ahead["history"]["scaleEvents"][-1][1] == 8
    assert after["history"]["pending"] is None  # merge patch removes it


async def test_no_intent_written_means_no_scale() -> None:
    log: list[Any] = []
    rt = runtime(scaler=OrderedScaler(log))
    rt.writer = Writer(log, fail=True)
    res = await tick(rt, pool(), TARGET)
    assert log == [] and res.status is not None
    assert cond(res.status, "Ready")["reason"] == "StatusWriteFailed"


@pytest.mark.parametrize(
    ("deployed", "events_kept", "event"),
    [(13, 1, "Scaled"), (4, 0, None), (7, 1, None)],
)
def test_resolve_pending_against_the_deployment(deployed: int, events_kept: int, event: str | None) -> None:
    old = {"replicas": 13, "history": {"scaleEvents": [[5.0, 9]], "pending": {"from": 4, "to": 13, "time": 5.0}}}
    new, ev = resolve_pending(old, deployed)
    assert "pending" not in new["history"]
    assert len(new["history"]["scaleEvents"]) == events_kept
    assert (ev[1] if ev else None) == event


async def test_a_restart_after_the_scale_keeps_the_rate_limit() -> None:
    """The intent in status + Deployment at `to`: the restarted tick counts the scale and does not scale again
    beyond the policy (Pods 2 per 60 s)."""
    body = pool(
        behavior={
            "scaleUp": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
            }
        }
    )
    rt = runtime()
    first = await tick(rt, body, TARGET)
    assert rt.scaler.calls == [("ns", "worker", 6)]  # type: ignore[attr-defined]
    ahead = rt.memory_writes[0][2]
    body["status"] = {**first.status, "history": ahead["history"]}  # type: ignore[dict-item]
    fresh = runtime()  # a restarted operator: no memory
    fresh.clock[0] = rt.clock[0] + 5  # type: ignore[attr-defined]
    res = await tick(fresh, body, Target(name="worker", exists=True, replicas=6, ready=6))
    assert fresh.scaler.calls == []  # type: ignore[attr-defined]
    assert res.status is not None and "pending" not in res.status["history"]
    assert "Scaled" in [e[1] for e in res.events]


def test_replicas_manager_is_the_last_writer_of_spec_replicas() -> None:
    mf = [
        {"manager": "kubectl-create", "time": "2026-01-01T00:00:00Z", "fieldsV1": {"f:spec": {"f:template": {}}}},
        {"manager": "kubectl", "time": "2026-01-01T00:01:00Z", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
    ]
    assert replicas_manager(mf) == "kubectl"
    assert replicas_manager([]) is None


async def test_an_external_scale_holds_off_with_one_event_naming_the_writer() -> None:
    rt = runtime()
    body = pool(externalScale={"action": "HoldOff", "cooldownSeconds": 100})
    settled = Target(name="worker", exists=True, replicas=13, ready=13, manager="chanscale")
    body["status"] = (await tick(rt, body, settled)).status
    moved = Target(name="worker", exists=True, replicas=2, ready=2, manager="kubectl")
    got = []
    for _ in range(3):
        rt.clock[0] += 10  # type: ignore[attr-defined]
        res = await tick(rt, body, moved)
        got += [e[1] for e in res.events]
        body["status"] = res.status or body["status"]
    assert got.count("ExternalScale") == 1
    assert rt.scaler.calls == []  # type: ignore[attr-defined]
    c = cond(rt.memory[("ns", "orders")].status, "ExternalWriter")
    assert c["reason"] == "HoldingOff" and "'kubectl'" in c["message"]
    rt.clock[0] += 100  # type: ignore[attr-defined]
    await tick(rt, body, moved)
    assert rt.scaler.calls and rt.scaler.calls[-1][2] > 2  # type: ignore[attr-defined]


async def test_prometheus_outage_writes_status_once_then_only_on_refresh() -> None:
    prom = Prom()
    rt = runtime(prom=prom)
    body = pool(fallback={"failureThreshold": 100})
    t = Target(name="worker", exists=True, replicas=13, ready=13)
    await tick(rt, body, t)
    prom.down = True
    writes, events = [], []
    for _ in range(2):  # 20 s < status_refresh (60 s)
        rt.clock[0] += 10  # type: ignore[attr-defined]
        res = await tick(rt, body, t)
        writes.append(res.status is not None)
        events += [e[1] for e in res.events]
    assert writes == [True, False]  # the failure counter moved, yet no second write
    assert events == ["MetricsUnavailable"]
    assert rt.memory[("ns", "orders")].status["consecutiveFailures"] == 2  # counted in memory


async def test_policy_unavailable_posts_one_event_and_a_short_message() -> None:
    rt = runtime(gate=Gate(unavailable=True))
    body = pool()
    got = []
    for _ in range(5):
        res = await tick(rt, body, TARGET)
        got += [e[1] for e in res.events]
        rt.clock[0] += 10  # type: ignore[attr-defined]
    assert got.count("PolicyUnavailable") == 1 and "PolicyBlocked" not in got


async def test_clamp_events_are_keyed_by_guard_not_by_numbers() -> None:
    gate = Gate(Verdict(allow=True, replicas=6, reasons=("step: proposed 13, at most 6",), limited_by=("step",)))
    rt = runtime(gate=gate)
    body = pool()
    first = await tick(rt, body, TARGET)
    assert "PolicyClamped" in [e[1] for e in first.events]
    gate.verdict = Verdict(allow=True, replicas=8, reasons=("step: proposed 14, at most 8",), limited_by=("step",))
    rt.clock[0] += 10  # type: ignore[attr-defined]
    second = await tick(rt, body, Target(name="worker", exists=True, replicas=6, ready=6))
    assert "PolicyClamped" not in [e[1] for e in second.events]


def test_liveness_fails_for_a_pool_not_evaluated_for_n_ticks_and_for_a_dead_opa() -> None:
    now = [1000.0]

    class DeadOpa:
        alive = False

    h = Health(tick=10, stale_intervals=3, clock=lambda: now[0])
    h.seen(("ns", "a"))
    h.evaluated[("ns", "a")] = 1000.0
    assert h.liveness()[0]
    now[0] += 31
    ok, detail = h.liveness()
    assert not ok and "ns/a" in detail["problems"][0]
    h.evaluated[("ns", "a")] = now[0]
    assert h.liveness()[0]
    h.gate = DeadOpa()
    assert not h.liveness()[0]


def test_readiness_follows_the_api_server() -> None:
    now = [1000.0]
    h = Health(tick=10, clock=lambda: now[0])
    assert not h.readiness()[0]
    h.started, h.api_ok_at = True, now[0]
    assert h.readiness()[0]
    now[0] += 31
    assert not h.readiness()[0]


def test_a_query_error_becomes_a_short_message_with_a_log_ref(caplog: pytest.LogCaptureFixture) -> None:
    from chanscale.reconcile import brief_query_error

    text = (
        "backlog: ConnectionError: HTTPConnectionPool(host='127.0.0.1', port=9090): Max retries exceeded with url: "
        "/api/v1/query?query=sum+by+%28namespace%2C+channel%29" + "x" * 500
    )
    msg = brief_query_error("ns", "orders", text)
    assert msg.startswith("Prometheus query failed for backlog: ConnectionError (log ref ") and len(msg) < 100
    ref = msg.rsplit("log ref ", 1)[1][:8]
    assert any(ref in r.getMessage() and "%28namespace" in r.getMessage() for r in caplog.records)
