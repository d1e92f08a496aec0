"""One tick end to end with fakes: the status, the Events, the scale write, and what must never happen."""

import asyncio
import itertools
from typing import Any

import pytest

from chanscale.kube import ScaleError
from chanscale.policy import PolicyUnavailable, Verdict
from chanscale.reconcile import Config, Runtime, Target, _current, learning_moved, tick
from chanscale.signals import PrometheusReader
from chanscale.tenancy import Guardrails

pytestmark = pytest.mark.unit


class Prom:
    def __init__(self) -> None:
        self.values = {
            "backlog": 0.0,
            "enqueued": 200.0,
            "processed": 200.0,
            "busy": 10.0,
            "failed": 0.0,
            "latency": 0.1,
            "age": 1.0,
        }
        self.down = False

    async def __call__(self, address: str, query: str) -> list[Any]:
        if self.down:
            raise ConnectionError("prometheus unreachable")
        key = next(
            k for k in ("backlog)", "enqueued", "processed", "busy", "failed", "latency", "time()") if k in query
        )
        v = self.values[{"backlog)": "backlog", "time()": "age"}.get(key, key)]
        return [{"metric": {"namespace": "ns", "channel": "orders"}, "value": [0, str(v)]}]


class Gate:
    def __init__(self, verdict: Verdict | None = None, unavailable: bool = False) -> None:
        self.verdict = verdict or Verdict(allow=True, replicas=None, reasons=("ok",))
        self.unavailable = unavailable
        self.inputs: list[dict[str, Any]] = []

    async def evaluate(self, path: str, input: dict[str, Any], *, timeout: float = 2.0) -> Verdict:
        self.inputs.append(input)
        if self.unavailable:
            raise PolicyUnavailable("connection refused")
        return self.verdict

    async def close(self) -> None:
        pass


class Scaler:
    def __init__(self, error: ScaleError | None = None) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.error = error

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        if self.error:
            raise self.error
        self.calls.append((namespace, name, replicas))


def runtime(gate: Gate | None = None, scaler: Scaler | None = None, prom: Prom | None = None) -> Runtime:
    clock = [1_000_000.0]
    rt = Runtime(
        config=Config(prometheus_url="http://prom", tick=10),
        reader=PrometheusReader("http://prom", ttl=0.0, query_fn=prom or Prom()),
        gate=gate or Gate(),
        scaler=scaler or Scaler(),
        wall=lambda: clock[0],
    )
    rt.clock = clock  # type: ignore[attr-defined]
    return rt


def pool(**spec_over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "channel": "orders",
        "scaleTargetRef": {"name": "worker"},
        "minReplicas": 1,
        "maxReplicas": 50,
        "slo": {"p99LatencySeconds": 0.25},
        "model": {"serviceRateHint": 20},
    }
    spec.update(spec_over)
    return {"metadata": {"namespace": "ns", "name": "orders", "generation": 1, "uid": "u"}, "spec": spec, "status": {}}


def cond(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == ctype)


TARGET = Target(name="worker", exists=True, replicas=4, ready=4)


async def test_scale_up_writes_scale_status_and_event() -> None:
    rt = runtime()
    res = await tick(rt, pool(), TARGET)
    assert rt.scaler.calls == [("ns", "worker", 12)]  # type: ignore[attr-defined]
    st = res.status
    assert st is not None
    assert st["replicas"] == 12 and st["desiredReplicas"] == 12
    assert st["lastDecision"]["outcome"] == "ScaleUp" and st["lastDecision"]["applied"] is True
    assert st["lastDecision"]["sizing"]["terms"]["latency"] == 12
    assert st["history"]["scaleEvents"][0][1] == 8
    assert [e[1] for e in res.events] == ["Scaled"]
    assert cond(st, "Ready")["status"] == "True"
    assert cond(st, "PolicyAllowed")["reason"] == "Allowed"
    inp = rt.gate.inputs[0]  # type: ignore[attr-defined]
    assert inp["replicas"] == {"current": 4, "recommended": 12, "min": 1, "max": 50}
    assert inp["signals"]["arrivalRate"] == 200.0
    assert inp["pool"]["metadata"]["name"] == "orders"


async def test_quiet_ticks_do_not_rewrite_status() -> None:
    rt = runtime()
    body = pool()
    t = Target(name="worker", exists=True, replicas=13, ready=13)
    first = await tick(rt, body, t)
    assert first.status is not None
    body["status"] = first.status
    rt.clock[0] += 10  # type: ignore[attr-defined]
    second = await tick(rt, body, t)
    assert second.status is None and not second.skipped
    rt.clock[0] += rt.config.status_refresh  # type: ignore[attr-defined]
    third = await tick(rt, body, t)
    assert third.status is not None  # refreshed observations every status_refresh seconds


def test_an_index_behind_our_write_counts_ours_but_another_writers_newer_count_wins() -> None:
    rt = runtime()
    key, now, tick_s = ("ns", "orders"), 1000.0, rt.config.tick
    rt.last_scale_write[key] = (2, now)
    rt.scaled_from[key] = [(1, now)]
    behind = Target(name="worker", exists=True, replicas=1, ready=1)
    assert _current(rt, key, behind, now + tick_s) == 2  # the index has not seen our 1 -> 2 yet
    kubectl = Target(name="worker", exists=True, replicas=6, ready=1)
    assert _current(rt, key, kubectl, now + tick_s) == 6  # `kubectl scale` after our write: newer, never masked
    assert _current(rt, key, behind, now + 3 * tick_s) == 1  # two ticks on, the index is the truth


async def test_a_pool_proposing_no_change_does_not_wait_for_the_namespace_lock() -> None:
    rt = runtime()
    steady = Target(name="worker", exists=True, replicas=13, ready=13)
    async with rt.tenancy.locks("ns"):  # another pool of the namespace is gating and scaling
        quiet = await asyncio.wait_for(tick(rt, pool(), steady), timeout=5)
        assert quiet.decision is not None and quiet.decision.desired == 13
        other = pool()
        other["metadata"]["name"] = "payments"
        change = asyncio.ensure_future(tick(rt, other, TARGET))
        await asyncio.sleep(0.05)
        assert not change.done() and rt.scaler.calls == []  # type: ignore[attr-defined]  # a change waits for it
    assert (await change).scaled_to == 12


@pytest.mark.parametrize("how", ["spec", "annotation", "dryrun"])
async def test_paused_and_dry_run_never_scale_but_record(how: str) -> None:
    rt = runtime()
    body = pool(mode="DryRun") if how == "dryrun" else pool(paused=True) if how == "spec" else pool()
    if how == "annotation":
        body["metadata"]["annotations"] = {"chanscale.dev/paused": "true"}
    res = await tick(rt, body, TARGET)
    assert rt.scaler.calls == []  # type: ignore[attr-defined]
    st = res.status
    assert st is not None
    assert st["replicas"] == 4 and st["desiredReplicas"] == 12
    assert st["lastDecision"]["applied"] is False
    assert st["lastDecision"]["outcome"] == ("DryRun" if how == "dryrun" else "Paused")
    assert [e[1] for e in res.events] == ["WouldScale"]
    assert cond(st, "Paused")["status"] == ("False" if how == "dryrun" else "True")


async def test_policy_deny_keeps_replicas_with_reasons() -> None:
    rt = runtime(gate=Gate(Verdict(allow=False, replicas=None, reasons=("maintenance window: freeze",))))
    res = await tick(rt, pool(), TARGET)
    assert rt.scaler.calls == []  # type: ignore[attr-defined]
    st = res.status
    assert st is not None
    assert cond(st, "PolicyAllowed")["status"] == "False"
    assert "maintenance window" in cond(st, "PolicyAllowed")["message"]
    assert st["lastDecision"]["outcome"] == "Blocked"
    assert "PolicyBlocked" in [e[1] for e in res.events]


async def test_policy_clamp_scales_to_the_clamp() -> None:
    rt = runtime(gate=Gate(Verdict(allow=True, replicas=6, reasons=("step limit: at most +2",))))
    res = await tick(rt, pool(), TARGET)
    assert rt.scaler.calls == [("ns", "worker", 6)]  # type: ignore[attr-defined]
    assert res.status is not None and cond(res.status, "PolicyAllowed")["reason"] == "Clamped"
    assert "PolicyClamped" in [e[1] for e in res.events]


@pytest.mark.parametrize(("failure_policy", "expected_calls"), [("Hold", []), ("Allow", [("ns", "worker", 12)])])
async def test_policy_unreachable_applies_the_admins_failure_policy(
    failure_policy: str, expected_calls: list[Any]
) -> None:
    rt = runtime(gate=Gate(unavailable=True))
    rt.config.guardrails = Guardrails(failure_policy=failure_policy)
    res = await tick(rt, pool(), TARGET)
    assert rt.scaler.calls == expected_calls  # type: ignore[attr-defined]
    assert res.status is not None and cond(res.status, "PolicyAllowed")["reason"] == "PolicyUnavailable"


async def test_prometheus_down_holds_then_falls_back() -> None:
    prom = Prom()
    rt = runtime(prom=prom)
    body = pool(fallback={"failureThreshold": 2, "behavior": "static", "replicas": 8})
    prom.down = True
    t = Target(name="worker", exists=True, replicas=20, ready=20)
    res = await tick(rt, body, t)
    assert rt.scaler.calls == []  # type: ignore[attr-defined]
    assert res.status is not None
    assert cond(res.status, "MetricsAvailable")["status"] == "False"
    assert "Prometheus query failed" in cond(res.status, "MetricsAvailable")["message"]  # the error text: in the log
    body["status"] = res.status
    rt.clock[0] += 10  # type: ignore[attr-defined]
    res = await tick(rt, body, t)
    assert rt.scaler.calls == [("ns", "worker", 8)]  # type: ignore[attr-defined]
    assert res.status is not None and res.status["lastDecision"]["outcome"] == "Fallback"


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (None, "TargetNotFound"),
        (Target(name="worker", exists=True, replicas=3, conflict="HorizontalPodAutoscaler web"), "TargetConflict"),
    ],
)
async def test_bad_target_is_a_condition_not_a_crash(target: Target | None, reason: str) -> None:
    rt = runtime()
    res = await tick(rt, pool(), target)
    assert rt.scaler.calls == []  # type: ignore[attr-defined]
    assert res.status is not None and cond(res.status, "Ready")["reason"] == reason
    assert res.events[0][:2] == ("Warning", reason)


async def test_invalid_spec_is_a_condition() -> None:
    rt = runtime()
    res = await tick(rt, pool(minReplicas=9, maxReplicas=2), TARGET)
    assert res.status is not None and cond(res.status, "Ready")["reason"] == "InvalidSpec"
    assert "spec.minReplicas" in cond(res.status, "Ready")["message"]


async def test_scale_failure_is_reported_and_nothing_recorded() -> None:
    rt = runtime(scaler=Scaler(ScaleError("Forbidden", "not allowed to scale ns/worker", False)))
    res = await tick(rt, pool(), TARGET)
    assert res.status is not None and cond(res.status, "Ready")["reason"] == "Forbidden"
    assert "history" not in res.status or not res.status["history"].get("scaleEvents")


async def test_unexpected_error_in_one_pool_is_contained() -> None:
    class Boom(Gate):
        async def evaluate(self, path: str, input: dict[str, Any], *, timeout: float = 2.0) -> Verdict:
            raise RuntimeError("kaboom")

    rt = runtime(gate=Boom())
    res = await tick(rt, pool(), TARGET)
    assert res.status is not None and cond(res.status, "Ready")["reason"] == "InternalError"
    ok = await tick(runtime(), pool(), TARGET)  # another pool, same process: unaffected
    assert ok.scaled_to == 12


async def test_polling_interval_is_honoured() -> None:
    rt = runtime()
    body = pool(pollingInterval=30)
    t = Target(name="worker", exists=True, replicas=13, ready=13)
    assert not (await tick(rt, body, t)).skipped
    rt.clock[0] += 10  # type: ignore[attr-defined]
    assert (await tick(rt, body, t)).skipped
    rt.clock[0] += 20  # type: ignore[attr-defined]
    assert not (await tick(rt, body, t)).skipped


async def test_a_late_evaluation_does_not_skip_the_next_slot_but_a_fast_path_one_stands_for_it() -> None:
    rt = runtime()
    body = pool()
    t = Target(name="worker", exists=True, replicas=13, ready=13)
    assert not (await tick(rt, body, t)).skipped  # began late: it waited 6 s of a 10 s tick for a place
    rt.clock[0] += 4  # type: ignore[attr-defined]
    assert not (await tick(rt, body, t)).skipped  # the next slot, on time: still owed
    rt.clock[0] += 6  # type: ignore[attr-defined]
    assert not (await tick(rt, body, t, force=True)).skipped  # the fast path's
    rt.clock[0] += 2  # type: ignore[attr-defined]
    assert (await tick(rt, body, t)).skipped  # the slot 2 s later: the fast path's evaluation stands for it
    rt.clock[0] += 4  # type: ignore[attr-defined]
    assert not (await tick(rt, body, t)).skipped


def test_status_patch_removes_keys_that_disappeared() -> None:
    from chanscale.reconcile import status_patch

    old = {
        "lastDecision": {"to": 3, "lastQuietTick": "t", "sizing": {"note": "n", "terms": {"a": 1}}},
        "replicas": 3,
        "other": {"x": 1},
    }
    new = {"lastDecision": {"to": 4, "sizing": {"terms": {"a": 1}}}, "replicas": 3}
    assert status_patch(old, new) == {"lastDecision": {"to": 4, "lastQuietTick": None, "sizing": {"note": None}}}


async def test_a_holding_guard_posts_one_event_not_one_per_tick() -> None:
    rt = runtime(gate=Gate(Verdict(allow=False, replicas=None, reasons=("caps: at most 3",))))
    body = pool()
    first = await tick(rt, body, TARGET)
    assert "PolicyBlocked" in [e[1] for e in first.events]
    body["status"] = first.status
    rt.clock[0] += 10  # type: ignore[attr-defined]
    second = await tick(rt, body, TARGET)
    assert "PolicyBlocked" not in [e[1] for e in second.events]


async def test_invalid_spec_event_is_posted_once() -> None:
    rt = runtime()
    body = pool(minReplicas=9, maxReplicas=2)
    first = await tick(rt, body, TARGET)
    body["status"] = first.status
    rt.clock[0] += 10  # type: ignore[attr-defined]
    second = await tick(rt, body, TARGET)
    assert [e[1] for e in first.events] == ["InvalidSpec"] and second.events == []


async def test_escalation_labels_are_set_and_removed() -> None:
    gate = Gate(
        Verdict(
            allow=True,
            replicas=None,
            reasons=("escalated",),
            escalated=True,
            labels={"chanscale.dev/escalated": "true"},
        )
    )
    rt = runtime(gate=gate)
    res = await tick(rt, pool(), TARGET)
    assert res.labels == {"chanscale.dev/escalated": "true"}
    assert res.status is not None and cond(res.status, "Escalated")["status"] == "True"
    body = pool()
    body["metadata"]["labels"] = {"chanscale.dev/escalated": "true", "team": "a"}
    gate.verdict = Verdict(allow=True, replicas=None, reasons=("ok",))
    rt.clock[0] += 10  # type: ignore[attr-defined]
    res = await tick(rt, body, TARGET)
    assert res.labels == {"chanscale.dev/escalated": None}


async def test_learning_is_kept_in_memory_and_status_history_is_its_restart_copy() -> None:
    """Quiet ticks do not write the learnt service rate, yet the next tick builds on it even when a newer body
    (someone else's write) carries an older history; a restarted runtime starts from the status copy."""
    prom = Prom()
    prom.values.update(busy=5.0)  # μ̂ = 200 / 5 = 40 msgs/s against the hint of 20
    rt = runtime(prom=prom)
    body = pool()
    body["metadata"]["resourceVersion"] = "10"
    target = Target(name="worker", exists=True, replicas=8, ready=8)
    mus = []
    for i in range(4):
        res = await tick(rt, body, target, force=True)
        mus.append(res.decision.state.service_rate)  # type: ignore[union-attr]
        rt.clock[0] += 10  # type: ignore[attr-defined]
        if i == 0:  # another writer (labels, a user) bumps the object; its status is what we wrote first
            body = {**body, "metadata": {**body["metadata"], "resourceVersion": "99"}, "status": dict(res.status or {})}
            prom.values.update(busy=10.0)  # μ̂ = 20 from now on: the estimate moves down tick by tick
        body["metadata"]["resourceVersion"] = str(100 + i)  # and again on every tick
    assert mus == sorted(mus, reverse=True) and len(set(mus)) == 4  # each tick moves on from the last, none restarts
    # A restart: nothing in memory, the status copy (written at most one refresh period ago) is the start.
    restarted = runtime(prom=prom)
    server = rt.memory[("ns", "orders")].server  # what the API server holds after our last write
    assert server["history"]["serviceRate"] > 20.0
    res = await tick(restarted, {**body, "status": server}, target, force=True)
    assert res.decision is not None and res.decision.state.service_rate > 20.0


def test_a_pools_spec_is_parsed_once_per_change() -> None:
    from chanscale.reconcile import PoolMemory
    from chanscale.spec import SpecError

    mem = PoolMemory(status={}, server={}, rv=None)
    body = pool()
    first = mem.spec(body["spec"])
    assert mem.spec(pool()["spec"]) is first  # an equal spec (a new body from a watch event): no new parse
    body["spec"]["maxReplicas"] = 7  # changed in place: parsed again
    assert mem.spec(body["spec"]).max_replicas == 7
    bad = pool(minReplicas=9, maxReplicas=2)["spec"]
    for _ in range(2):  # a bad spec fails every time, never served from the cache
        with pytest.raises(SpecError):
            mem.spec(bad)
    assert mem.spec(pool()["spec"]).max_replicas == 50


ZERO_WINDOWS = {"scaleUp": {"stabilizationWindowSeconds": 0}, "scaleDown": {"stabilizationWindowSeconds": 0}}


@pytest.mark.parametrize("behavior", [ZERO_WINDOWS, {"scaleDown": {"stabilizationWindowSeconds": 5}}, None])
async def test_a_steady_pool_writes_its_status_only_at_the_refresh(behavior: dict[str, Any] | None) -> None:
    """Whatever the windows (0 s, shorter than the tick, the defaults): steady signals, one write per refresh once
    the learning has settled (until then, each move of the learnt SCV beyond the tolerance is written too)."""
    rt = runtime()
    body = pool(**({"behavior": behavior} if behavior else {}))
    t = Target(name="worker", exists=True, replicas=13, ready=13)
    written_at, learnt = [], []
    refresh = rt.config.status_refresh
    for i in range(int(6 * refresh / 10)):  # six refresh periods of 10 s ticks
        before = rt.memory[("ns", "orders")].server if ("ns", "orders") in rt.memory else {}
        if (await tick(rt, body, t)).status is not None:
            written_at.append(rt.clock[0])  # type: ignore[attr-defined]
            learnt.append(i > 0 and learning_moved(before, rt.memory[("ns", "orders")].server))
        rt.clock[0] += 10  # type: ignore[attr-defined]
    assert len(rt.memory_writes) == len(written_at)
    settled = [w for w, moved in zip(written_at, learnt, strict=True) if not moved]
    assert all(b - a >= refresh for a, b in itertools.pairwise(settled))  # the first tick, then each refresh
    assert written_at[-2:] == settled[-2:] and len(settled) >= 4


async def test_the_status_keeps_what_a_restart_needs_to_hold_the_scale_down_window() -> None:
    """Default windows (scaleDown 300 s): the drop's new run is written at once, and a restarted runtime that starts
    from the server's copy holds the replicas where a forgetful one would scale down."""
    prom = Prom()
    rt = runtime(prom=prom)
    body = pool()
    t = Target(name="worker", exists=True, replicas=13, ready=13)
    for _ in range(10):  # steady at 13, then the load drops to a tenth
        await tick(rt, body, t)
        rt.clock[0] += 10  # type: ignore[attr-defined]
    prom.values.update(enqueued=20.0, processed=20.0, busy=1.0)
    dropped = await tick(rt, body, t)
    assert dropped.status is not None and dropped.decision is not None  # a new run: written now, not at the refresh
    assert dropped.decision.desired == 13 and dropped.decision.recommendation < 13
    server = rt.memory[("ns", "orders")].server
    assert [r[2] for r in server["history"]["recommendations"]] == [13, dropped.decision.recommendation]
    for memory in (True, False):  # a restart 200 s later (inside the window), with and without the status copy
        restarted = runtime(prom=prom)
        restarted.clock[0] = rt.clock[0] + 200  # type: ignore[attr-defined]
        await tick(restarted, {**body, "status": server if memory else {}}, t)
        assert (restarted.scaler.calls == []) is memory  # type: ignore[attr-defined]


async def test_a_restart_after_a_quiet_refresh_period_still_holds_the_scale_down_window() -> None:
    """A quiet pool's status is a refresh old at worst, so its current run's last sample may already be outside the
    300 s window. Restored, the run is carried over the gap: the load that dropped while the operator was away is
    scaled down to one scale-down window after the restart, not at once."""
    prom = Prom()
    rt = runtime(prom=prom)
    body = pool()
    t = Target(name="worker", exists=True, replicas=13, ready=13)
    for _ in range(3):
        await tick(rt, body, t)
        rt.clock[0] += 10  # type: ignore[attr-defined]
    server = rt.memory[("ns", "orders")].server
    last_sample = server["history"]["recommendations"][-1][1]
    prom.values.update(enqueued=20.0, processed=20.0, busy=1.0)
    restarted = runtime(prom=prom)
    restarted.clock[0] = last_sample + 400  # type: ignore[attr-defined]
    for _ in range(29):  # 290 s after the restart: still inside the window the restart began
        await tick(restarted, {**body, "status": server}, t)
        restarted.clock[0] += 10  # type: ignore[attr-defined]
    assert restarted.scaler.calls == []  # type: ignore[attr-defined]
    for _ in range(3):
        await tick(restarted, {**body, "status": server}, t)
        restarted.clock[0] += 10  # type: ignore[attr-defined]
    assert restarted.scaler.calls and restarted.scaler.calls[0][2] < 13  # type: ignore[attr-defined]


def test_learning_moved_names_what_a_restart_would_decide_differently_on() -> None:
    def st(**h: Any) -> dict[str, Any]:
        base = {"serviceRate": 20.0, "serviceScv": 1.0, "lastActive": 100.0, "at": 100.0}
        return {"history": {**base, **h}}

    assert not learning_moved(st(), st(at=110.0, lastActive=110.0))  # still active: re-read at a restart
    assert not learning_moved(st(), st(serviceRate=21.9, serviceScv=1.15))  # within the tolerance
    assert learning_moved(st(), st(serviceRate=17.9))  # μ 10.5 % lower
    assert learning_moved(st(), st(serviceScv=1.5))  # waits 25 % longer
    assert learning_moved(st(serviceRate=None), st())  # a first estimate
    assert not learning_moved(st(), st(at=110.0))  # idle since the written copy's tick: its last active time is in it
    # Active until 150 without a write, idle at 160: the last active time is written, once.
    assert learning_moved(st(), st(lastActive=150.0, at=160.0))
    assert not learning_moved(st(lastActive=150.0, at=160.0), st(lastActive=150.0, at=170.0))
    assert not learning_moved({}, {})


def test_a_restored_state_carries_the_current_run_and_activity_over_the_gap() -> None:
    from chanscale.decision import PoolState

    st = PoolState(recommendations=((10.0, 50.0, 4), (60.0, 100.0, 7)), last_active=100.0, at=100.0)
    back = st.resumed(400.0)
    assert back.recommendations == ((10.0, 50.0, 4), (60.0, 400.0, 7))  # only the current run
    assert back.last_active == 400.0  # active at the copy's tick: its going idle would have been written
    idle = PoolState(recommendations=((60.0, 100.0, 7),), last_active=80.0, at=100.0).resumed(400.0)
    assert idle.last_active == 80.0  # idle at the copy's tick: the written time stands
    assert PoolState().resumed(400.0) == PoolState()


def test_a_scale_down_reuses_the_namespace_pass_for_a_tick_a_scale_up_for_a_second() -> None:
    import time

    from chanscale.reconcile import _peers

    rt = runtime()
    passes: list[int] = []

    def peers() -> tuple[list[dict[str, Any]], dict[str, int]]:
        passes.append(1)
        return [{"name": "b", "target": "wb", "created": "", "mode": "Active", "replicas": 3}], {"wb": 3}

    t = Target(name="worker", exists=True, replicas=4, ready=4, peers=peers)
    others, _ = _peers(rt, "ns", "a", t, 0.0, False, rising=True)
    assert others["replicas"] == 3 and len(passes) == 1

    def age(seconds: float) -> None:
        _, claims = rt.tenancy.peer_claims["ns"]
        rt.tenancy.peer_claims["ns"] = (time.monotonic() - seconds, claims)

    age(2.0)  # older than PEER_CLAIMS_TTL
    _peers(rt, "ns", "a", t, 0.0, False, rising=False)
    assert len(passes) == 1  # a scale-down cannot raise the total: the last pass serves it
    _peers(rt, "ns", "a", t, 0.0, False, rising=True)
    assert len(passes) == 2  # a scale-up never reads sums older than a second
    age(rt.config.tick + 1)
    _peers(rt, "ns", "a", t, 0.0, False, rising=False)
    assert len(passes) == 3  # nor a scale-down older than a tick
