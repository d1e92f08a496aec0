"""The decision function: sizing, missing data, fallback, idle, restart, and the policy verdict."""

import itertools
import math
from typing import Any

import pytest

from chanscale.decision import Observation, PoolState, apply_verdict, decide, record_scale
from chanscale.spec import PoolSpec

pytestmark = pytest.mark.unit


def spec(**over: Any) -> PoolSpec:
    base: dict[str, Any] = {
        "channel": "orders",
        "scaleTargetRef": {"name": "w"},
        "minReplicas": 1,
        "maxReplicas": 50,
        "slo": {"p99LatencySeconds": 0.25},
        "model": {"serviceRateHint": 20},
    }
    base.update(over)
    return PoolSpec.from_dict(base)


def obs(now: float = 1000.0, current: int = 4, **sig: Any) -> Observation:
    values = {"backlog": 0.0, "arrival_rate": 200.0, "processed_rate": 200.0, "busy_rate": 10.0}
    values.update(sig)
    return Observation(now=now, current_replicas=current, ready_replicas=current, **values)


def run(s: PoolSpec, steps: list[Observation], state: PoolState | None = None) -> tuple[list[int], PoolState]:
    st = state or PoolState()
    out = []
    for o in steps:
        d = decide(s, st, o)
        st = record_scale(d.state, now=o.now, from_replicas=o.current_replicas, to_replicas=d.desired)
        out.append(d.desired)
    return out, st


def test_sizes_for_p99_with_the_queueing_model() -> None:
    d = decide(spec(), PoolState(), obs(current=12))
    assert d.sizing["terms"]["latency"] == 12  # λ=200, μ=20, 250 ms -> 12 (field notes)
    assert d.sizing["terms"]["throughput"] == 10  # 200 / 20: no utilisation cap by default
    assert d.desired == 12
    assert d.outcome == "NoChange"


def test_target_utilization_adds_headroom_when_set() -> None:
    # The Erlang-C size already meets the P99 (12 workers: 83 % busy); a targetUtilization caps it further.
    d = decide(spec(model={"serviceRateHint": 20, "targetUtilization": 0.8}), PoolState(), obs(current=12))
    assert d.sizing["terms"]["throughput"] == 13  # 200 / (20 * 0.8)
    assert d.desired == 13


def test_worked_example_of_the_decision_model_doc() -> None:
    # docs/decision-model.md: λ = 200, μ = 20, t = 0.25 s, 4 workers, 3 000 waiting, H = 30 s.
    s = spec(maxReplicas=40)
    d = decide(s, PoolState(), obs(current=4, backlog=3000.0))
    assert d.sizing["terms"] == {"throughput": 10, "drain": 15, "latency": 12}
    assert (d.sizing["driver"], d.desired) == ("drain", 15)
    st = record_scale(d.state, now=1000.0, from_replicas=4, to_replicas=15)
    d2 = decide(s, st, obs(now=1010.0, current=15, backlog=1200.0))
    assert (d2.recommendation, d2.desired) == (12, 15)  # held by the 300 s scale-down window


def test_drain_term_sizes_for_backlog() -> None:
    s = spec(slo={"p99LatencySeconds": 0.25, "backlogDrainSeconds": 10})
    d = decide(s, PoolState(), obs(current=12, backlog=2000.0))
    assert d.sizing["terms"]["drain"] == math.ceil((200 + 2000 / 10) / 20)
    assert d.sizing["driver"] == "drain"


def test_measured_service_rate_replaces_the_hint_by_its_weight() -> None:
    # The hint (20/s) counts as one measurement: a running mean until 1/α measurements, then smoothing.
    st = PoolState()
    third = 40.0 / 3 + 0.3 * (10 - 40.0 / 3)  # 1/(1+2+1) < α: smoothing from the third measurement on
    for expected in (15.0, 40.0 / 3, third, third + 0.3 * (10 - third)):
        st = decide(spec(), st, obs(processed_rate=100.0, busy_rate=10.0)).state  # μ = 10/s measured
        assert st.service_rate == pytest.approx(expected)
    assert st.service_samples == 4
    # Without a hint, the first measurement is all there is.
    no_hint = spec(model={})
    assert decide(no_hint, PoolState(), obs(processed_rate=100.0, busy_rate=10.0)).state.service_rate == 10.0


def test_first_step_goes_to_the_size_asked_for() -> None:
    # 1 -> the recommendation in one step (the default allows 1000x per step, Knative's rate) where the HPA
    # default would take five; the policy that once capped it (Percent 400 / Pods 8 per 10 s) still does when set.
    d = decide(spec(maxReplicas=1000), PoolState(), obs(now=1000, current=1, arrival_rate=1500.0, processed_rate=20.0))
    assert d.desired == d.recommendation > 45
    s = spec(
        maxReplicas=100,
        behavior={
            "scaleUp": {
                "policies": [
                    {"type": "Percent", "value": 400, "periodSeconds": 10},
                    {"type": "Pods", "value": 8, "periodSeconds": 10},
                ]
            }
        },
    )
    steps = [
        obs(now=1000 + 10 * i, current=c, arrival_rate=1500.0, processed_rate=20.0) for i, c in enumerate([1, 9, 45])
    ]
    st = PoolState()
    got = []
    for o in steps:
        d = decide(s, st, o)
        st = record_scale(d.state, now=o.now, from_replicas=o.current_replicas, to_replicas=d.desired)
        got.append(d.desired)
    assert got[:2] == [9, 45]


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, -1.0])
def test_missing_or_invalid_backlog_is_never_zero(bad: float | None) -> None:
    s = spec()
    d = decide(s, PoolState(), obs(current=20, backlog=bad, arrival_rate=1.0, processed_rate=1.0, busy_rate=0.05))
    assert not d.metrics_ok
    assert d.desired == 20  # would have scaled down to 1 on zero load
    assert any("no scale-down on missing data" in x for x in d.limited_by)
    assert d.state.consecutive_failures == 1


def test_missing_data_still_allows_scale_up() -> None:
    d = decide(spec(), PoolState(), obs(current=2, backlog=None, arrival_rate=400.0))
    assert d.desired > 2


def test_stale_samples_are_missing() -> None:
    d = decide(spec(), PoolState(), obs(current=20, arrival_rate=0.0, age_seconds=600))
    assert not d.metrics_ok
    assert d.desired == 20


@pytest.mark.parametrize(
    ("fallback", "expected"),
    [
        ({"failureThreshold": 3}, 6),
        ({"failureThreshold": 3, "behavior": "static", "replicas": 10}, 10),
        ({"failureThreshold": 3, "behavior": "currentReplicasIfHigher", "replicas": 4}, 6),
        ({"failureThreshold": 3, "behavior": "currentReplicasIfHigher", "replicas": 9}, 9),
    ],
)
def test_fallback_after_threshold(fallback: dict[str, Any], expected: int) -> None:
    s = spec(fallback=fallback)
    st = PoolState()
    outcomes = []
    for i in range(3):
        d = decide(s, st, Observation(now=1000 + 10 * i, current_replicas=6, error="ConnectionError: refused"))
        st = d.state
        outcomes.append(d.outcome)
    assert outcomes[:2] == ["Hold", "Hold"]
    assert outcomes[2] == "Fallback"
    assert d.desired == expected
    assert "ConnectionError" in d.reason
    # Recovery resets the failure count.
    d = decide(s, st, obs(now=2000, current=expected))
    assert d.state.consecutive_failures == 0


def test_scale_to_zero_only_after_idle_seconds() -> None:
    s = spec(minReplicas=0, idleSeconds=60, behavior={"scaleDown": {"stabilizationWindowSeconds": 0}})
    idle = {"backlog": 0.0, "arrival_rate": 0.0, "processed_rate": 0.0, "busy_rate": 0.0}
    st = decide(s, PoolState(), obs(now=1000, current=2)).state  # active at t=1000
    d = decide(s, st, obs(now=1030, current=1, **idle))
    assert d.desired == 1
    d = decide(s, d.state, obs(now=1065, current=1, **idle))
    assert d.desired == 0


def test_activation_from_zero_when_work_arrives() -> None:
    s = spec(minReplicas=0)
    d = decide(s, PoolState(), obs(current=0, backlog=5.0, arrival_rate=0.5, processed_rate=0.0, busy_rate=0.0))
    assert d.desired >= 1


def test_unknown_service_rate_holds_and_says_how_to_fix() -> None:
    s = spec(model={})
    d = decide(s, PoolState(), obs(current=3, processed_rate=0.0, busy_rate=0.0))
    assert d.desired == 3
    assert any("serviceRateHint" in x for x in d.limited_by)


def test_scale_down_waits_for_the_stabilization_window_across_restart() -> None:
    s = spec()
    st = PoolState()
    high = obs(now=1000, current=13)
    d = decide(s, st, high)
    st = d.state
    # Load drops; a restarted operator rebuilds its state from status.history.
    restored = PoolState.from_status(st.to_status())
    d = decide(s, restored, obs(now=1100, current=13, arrival_rate=20.0, processed_rate=20.0, busy_rate=1.0))
    assert d.desired == 13
    assert any("stabilization" in x for x in d.limited_by)
    # Only samples inside the window count (as in the HPA): 13 was recommended at t=1000, so the window clears
    # after 1300.
    d = decide(s, d.state, obs(now=1290, current=13, arrival_rate=20.0, processed_rate=20.0, busy_rate=1.0))
    assert d.desired == 13
    d = decide(s, d.state, obs(now=1301, current=13, arrival_rate=20.0, processed_rate=20.0, busy_rate=1.0))
    assert d.desired < 13


def test_damaged_history_is_ignored_not_fatal() -> None:
    st = PoolState.from_status({"recommendations": [["x", 1], [5, 2]], "scaleEvents": "bad", "serviceRate": "?"})
    assert st.recommendations == ((5.0, 5.0, 2),)  # a [time, replicas] pair (older status) is one sample
    assert st.service_rate is None


def test_tolerance_holds_small_scale_down() -> None:
    s = spec(behavior={"scaleDown": {"tolerance": 0.2, "stabilizationWindowSeconds": 0}})
    d = decide(s, PoolState(), obs(current=15))  # wants 13: 13/15 = 0.87, within 20 %
    assert d.desired == 15
    assert "scaleDown tolerance 0.2" in d.limited_by


def test_slo_met_reports_each_objective() -> None:
    s = spec(slo={"p99LatencySeconds": 0.25, "maxBacklog": 100, "maxErrorRate": 0.01})
    d = decide(s, PoolState(), obs(current=13, p99_latency=0.5, backlog=500.0, failed_rate=10.0))
    assert d.slo_met is False
    assert "P99" in d.slo_message and "backlog" in d.slo_message and "error rate" in d.slo_message
    assert decide(s, PoolState(), obs(current=13, p99_latency=0.1, failed_rate=0.0)).slo_met is True


def test_verdict_deny_and_clamp() -> None:
    s = spec()
    d = decide(s, PoolState(), obs(current=4))
    denied = apply_verdict(d, allow=False, replicas=None, reasons=["maintenance window"], spec=s)
    assert denied.desired == 4 and denied.outcome == "Blocked"
    assert denied.limited_by == ["policy: maintenance window"]
    clamped = apply_verdict(d, allow=True, replicas=6, reasons=["step limit +2"], spec=s)
    assert clamped.desired == 6 and clamped.outcome == "ScaleUp"
    assert clamped.limited_by[0] == "policy: step limit +2"
    assert apply_verdict(d, allow=True, replicas=500, reasons=[], spec=s).desired == 50  # within max


def test_record_scale_feeds_rate_limits() -> None:
    st = record_scale(PoolState(), now=1000, from_replicas=1, to_replicas=9)
    assert st.scale_events == ((1000, 8),)
    assert st.last_scale_direction == "up"
    assert record_scale(st, now=1001, from_replicas=9, to_replicas=9) is st


def test_no_flapping_on_noisy_steady_load() -> None:
    # ±10 % noise around a steady load: after the first sizing, the count must not oscillate.
    import random

    rng = random.Random(7)
    s = spec(slo={"p99LatencySeconds": 1.0})
    st = PoolState()
    cur = 12
    seen = []
    for i in range(120):
        lam = 200 * (1 + rng.uniform(-0.1, 0.1))
        d = decide(s, st, obs(now=1000 + 10 * i, current=cur, arrival_rate=lam, processed_rate=lam))
        st = record_scale(d.state, now=1000 + 10 * i, from_replicas=cur, to_replicas=d.desired)
        cur = d.desired
        seen.append(cur)
    changes = sum(1 for a, b in itertools.pairwise(seen) if a != b)
    reversals = sum(1 for a, b, c in zip(seen, seen[1:], seen[2:], strict=False) if (b - a) * (c - b) < 0)
    assert reversals == 0
    assert changes <= 3


def test_backlog_growth_sees_a_step_before_the_rate_window() -> None:
    # 2 workers at μ=20 complete 40/s; the windowed arrival rate still says 40/s, but the backlog grew by
    # 600 in 10 s: arrivals are really 100/s, and chanscale sizes for them one tick after the step.
    s = spec(slo={"p99LatencySeconds": 1.0})
    base = {"arrival_rate": 40.0, "processed_rate": 40.0, "busy_rate": 2.0}
    d1 = decide(s, PoolState(), obs(now=1000, current=2, backlog=0.0, age_seconds=1.0, **base))
    d2 = decide(s, d1.state, obs(now=1010, current=2, backlog=600.0, age_seconds=1.0, **base))
    assert d2.state.backlog_growth == pytest.approx(60.0)
    assert d2.sizing["arrivalRate"] == pytest.approx(100.0)
    assert d2.sizing["arrivalRateWindow"] == pytest.approx(40.0)
    assert d2.sizing["terms"]["throughput"] == math.ceil(100 / 20)


def test_the_same_sample_read_twice_is_not_growth() -> None:
    s = spec()
    base = {"arrival_rate": 40.0, "processed_rate": 40.0, "busy_rate": 2.0}
    d1 = decide(s, PoolState(), obs(now=1000, current=2, backlog=0.0, age_seconds=1.0, **base))
    # 2 s later Prometheus has not scraped again: the same sample (older by 2 s) must not count as growth.
    d2 = decide(s, d1.state, obs(now=1002, current=2, backlog=0.0, age_seconds=3.0, **base))
    assert d2.state.backlog_sample == d1.state.backlog_sample
    assert d2.state.backlog_growth is None
    restored = PoolState.from_status(d2.state.to_status())
    assert restored.backlog_sample == d2.state.backlog_sample


def test_variability_waits_a_calm_rate_window_after_a_drain() -> None:
    # Right after a drain the 1-minute P99 still holds the drained messages' latencies: learning from it
    # would over-provision for the whole scale-down window.
    s = spec(slo={"p99LatencySeconds": 1.0})
    st = PoolState()
    for i in range(5):  # calm, but the P99 window still remembers a backlog: 8 s
        d = decide(s, st, obs(now=1000 + 10 * i, current=13, p99_latency=8.0))
        st = d.state
    assert st.service_scv == 1.0
    d = decide(s, st, obs(now=1000 + 70, current=13, p99_latency=8.0))  # calm for > 60 s: now it learns
    assert d.state.service_scv > 1.0


def test_variability_is_not_learnt_across_a_change_of_the_ready_count() -> None:
    # After a scale-up the 1-minute P99 still holds the latencies of the smaller count. Fitted against the new
    # count, it reads as a larger variability at every step, which asked for the next scale-up (issue 12: the
    # lognormal reversals, SCV 3 -> 10 -> 14 -> 17 in four ticks).
    s = spec(slo={"p99LatencySeconds": 1.0})
    st = PoolState(service_scv=3.0)
    sig = {"arrival_rate": 100.0, "processed_rate": 100.0, "busy_rate": 5.0, "p99_latency": 2.4}
    for i in range(12):  # the ready count grows by one every 10 s for two minutes: never a whole window at one count
        st = decide(s, st, obs(now=1000 + 10 * i, current=6 + i, **sig)).state
    assert st.service_scv == 3.0
    restored = PoolState.from_status(st.to_status())
    assert restored.calm_ready == st.calm_ready == 17


def test_one_window_of_p99_is_one_piece_of_evidence() -> None:
    # The same 1-minute P99, read again at every tick (and every fast-path decision), must move the variability
    # once per window, not once per read.
    s = spec(slo={"p99LatencySeconds": 1.0})
    sig = {"arrival_rate": 100.0, "processed_rate": 100.0, "busy_rate": 5.0, "p99_latency": 0.9}
    st = PoolState(service_scv=3.0)
    moves = []
    for i in range(60):  # 2 s apart for two minutes: one calm window's warm-up, then at most two fits
        before = st.service_scv
        st = decide(s, st, obs(now=1000 + 2 * i, current=7, **sig)).state
        moves.append(st.service_scv != before)
    assert sum(moves) == 1
    assert st.service_scv > 3.0


def test_variability_explains_the_p99_by_the_windows_completion_rate() -> None:
    # The P99 is of the messages completed in the window; on rising load λ (irate, backlog growth) reads ahead of
    # it. The fit must explain the window's P99 by the window's load, or it learns too little variability.
    from chanscale import queueing

    s = spec(slo={"p99LatencySeconds": 1.0})
    sig = {"arrival_rate": 130.0, "processed_rate": 100.0, "busy_rate": 5.0, "p99_latency": 0.6}
    st = PoolState()
    for i in range(8):
        st = decide(s, st, obs(now=1000 + 10 * i, current=7, **sig)).state
    fitted = queueing.fit_scv(7, 100.0, 20.0, 0.6)
    assert fitted is not None
    expected = 2.0 * math.exp(0.3 * math.log((1.0 + fitted) / 2.0)) - 1.0  # one fit from s² = 1, gain 0.3
    assert st.service_scv == pytest.approx(expected, rel=1e-6)


def test_variability_raises_the_latency_term_not_the_throughput() -> None:
    s = spec(slo={"p99LatencySeconds": 1.0}, maxReplicas=1000)
    heavy = PoolState(service_scv=16.0)
    d = decide(s, heavy, obs(current=13, arrival_rate=1000.0, processed_rate=1000.0, busy_rate=50.0))
    # μ = 20: keeping up needs 50 workers; heavy-tailed service must not multiply that (dividing μ would).
    assert d.sizing["terms"]["throughput"] == math.ceil(1000 / (20 * s.target_utilization) - 1e-9)
    assert 50 < d.sizing["terms"]["latency"] < 60
    assert d.sizing["serviceTimeScv"] == 16.0


def test_heavy_tailed_service_learns_its_variability_and_sizes_near_the_minimum() -> None:
    # Issue 12, cause 4: lognormal CV 2 service (μ = 20/s) at λ = 40/s shows a P99 of about 0.5 s with 5 workers.
    # The old factor (observed ÷ M/M/c P99 ≈ 2-3.4, applied as a tighter target t/k) held 4-5 workers where 3 do;
    # the M/G/c model explains the same P99 by the service time's variability, which does not shrink the target.
    s = spec(slo={"p99LatencySeconds": 1.0})
    st = PoolState()
    sig = {"arrival_rate": 40.0, "processed_rate": 40.0, "busy_rate": 2.0, "p99_latency": 0.5}
    for i in range(20):
        d = decide(s, st, obs(now=1000 + 10 * i, current=5, **sig))
        st = d.state
    assert 2.0 < st.service_scv < 4.0  # H2 fit of a lognormal CV 2 tail (true SCV 4; H2's P99 is heavier)
    assert d.sizing["terms"]["latency"] == 3
    assert PoolState.from_status(st.to_status()).service_scv == pytest.approx(st.service_scv, abs=1e-4)
