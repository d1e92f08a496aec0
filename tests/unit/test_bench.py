"""The benchmark machinery: Prometheus-view math, the baseline controllers, traces and the harness."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

# bench/ is a top-level package beside operator/; plain `pytest` (not `python -m pytest`) does not put the
# repository root on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import control_quality, reaction_time, sizing_accuracy, traces
from bench.at_scale import _cores, _per_pool_minute, _write_latency, hist_quantile, pool_gaps
from bench.harness import Config, run
from bench.promsim import PromView, bucket_quantile, extrapolated_rate
from bench.realloop import metric_sum, parse_metrics
from bench.scalers import KPA, SCALERS, Env, HPAController, KEDAQueue, Limits

from chanscale.sim.model import DEFAULT_BUCKETS, ChannelModel

pytestmark = pytest.mark.unit


def test_rate_of_a_steady_counter_is_exact() -> None:
    points = [(float(t), 5.0 * t + 100.0) for t in range(0, 301, 15)]
    assert extrapolated_rate(points, 300.0, 60.0) == pytest.approx(5.0)


def test_rate_needs_two_samples_and_extrapolates_to_the_window() -> None:
    assert extrapolated_rate([(0.0, 1.0)], 10.0, 60.0) is None
    # Two samples 15 s apart inside a 60 s window: extrapolated by half an interval at each end.
    r = extrapolated_rate([(30.0, 0.0), (45.0, 15.0)], 60.0, 60.0)
    assert r is not None
    # increase 15 over 15 s sampled; to_start = 0 (counter starts at zero), to_end 15 >= 1.1*15? no -> 15
    assert r == pytest.approx(15.0 * (15.0 + 0.0 + 15.0) / 15.0 / 60.0)


def test_rate_handles_counter_reset() -> None:
    points = [(0.0, 100.0), (15.0, 110.0), (30.0, 5.0), (45.0, 15.0)]
    r = extrapolated_rate(points, 45.0, 60.0)
    assert r is not None and r > 0


def test_bucket_quantile_interpolates_like_prometheus() -> None:
    bounds = [0.1, 0.5, 1.0]
    # 100 observations: 50 ≤ 0.1, 40 in (0.1, 0.5], 10 in (0.5, 1.0]
    assert bucket_quantile(0.5, bounds, [50, 90, 100, 100]) == pytest.approx(0.1)
    assert bucket_quantile(0.7, bounds, [50, 90, 100, 100]) == pytest.approx(0.1 + 0.4 * 0.5)
    assert bucket_quantile(0.99, bounds, [50, 90, 100, 110]) == pytest.approx(1.0)  # +Inf bucket
    assert bucket_quantile(0.99, bounds, [0, 0, 0, 0]) is None


def test_prom_view_sees_the_model_like_prometheus() -> None:
    m = ChannelModel(service_rate=20.0, seed=1, initial_replicas=12)
    m.set_arrival_rate(200.0)
    view = PromView(list(DEFAULT_BUCKETS))
    for t in range(0, 601, 15):
        m.advance(float(t))
        view.scrape(m)
    lam = view.rate("enqueued_total", 600.0)
    busy = view.rate("busy_seconds_total", 600.0)
    done = view.rate("processed_total", 600.0)
    assert lam == pytest.approx(200.0, rel=0.1)
    assert busy is not None and done is not None
    assert done / busy == pytest.approx(20.0, rel=0.05)  # service rate recoverable from the contract
    p99 = view.quantile(0.99, 600.0)
    assert p99 is not None and 0.1 < p99 <= 0.5
    assert view.age(605.0) == pytest.approx(5.0)
    assert view.backlog(600.0 + 400.0) is None  # older than the lookback


def test_hpa_scale_up_is_rate_limited_by_default_policies() -> None:
    hpa = HPAController(Limits(1, 100))
    # 100 % or 4 pods per 15 s, whichever is more: from 2, at most 6 (2 + 4).
    assert hpa.normalize(0.0, 2, 50) == 6
    hpa.record(0.0, 2, 6)
    # Within the same 15 s period the budget is spent relative to the period's start (2): still 6.
    assert hpa.normalize(10.0, 6, 50) == 6
    # Next period: from 6, 100 % -> 12.
    assert hpa.normalize(16.0, 6, 50) == 12


def test_hpa_scale_down_waits_for_the_stabilization_window() -> None:
    hpa = HPAController(Limits(1, 100))
    assert hpa.normalize(0.0, 10, 10) == 10
    assert hpa.normalize(15.0, 10, 2) == 10  # the highest recommendation of the last 300 s is 10
    assert hpa.normalize(299.0, 10, 2) == 10
    assert hpa.normalize(316.0, 10, 2) == 2


def _env(t: float, current: int, ready: int, concurrency: float, lag: float | None = None) -> Env:
    view = PromView(list(DEFAULT_BUCKETS))
    return Env(t=t, current=current, ready=ready, prom=view, true_rate=0.0, true_backlog=0.0, concurrency=concurrency)


def test_keda_reads_missing_lag_as_zero_and_scales_down_only_after_the_window() -> None:
    keda = KEDAQueue("keda-default", Limits(1, 50), lag_threshold=10.0)
    assert keda.decide(_env(0.0, 5, 5, 0.0)) == 5  # recommendation 0, but the 300 s window holds 5
    assert keda.decide(_env(301.0, 5, 5, 0.0)) == 1


def test_kpa_panics_and_does_not_scale_down_while_panicking() -> None:
    kpa = KPA(Limits(1, 100))
    for t in range(0, 60):
        kpa.observe(_env(float(t), 2, 2, 1.0))
    assert kpa.decide(_env(59.0, 2, 2, 1.0)) == 2  # 1 / 0.7 -> 2
    for t in range(60, 66):
        kpa.observe(_env(float(t), 2, 2, 20.0))
    high = kpa.decide(_env(65.0, 2, 2, 20.0))
    assert kpa.panic_since is not None
    assert high >= 20
    for t in range(66, 80):
        kpa.observe(_env(float(t), high, high, 1.0))
    assert kpa.decide(_env(79.0, high, high, 1.0)) == high  # panicking: no scale-down


@pytest.mark.parametrize("name", list(traces.TRACES))
def test_traces_are_deterministic_and_non_negative(name: str) -> None:
    a = traces.make(name, 40.0, 3, 0.2)
    b = traces.make(name, 40.0, 3, 0.2)
    assert a.rates == b.rates
    assert a.duration > 60
    assert min(a.rates) >= 0
    assert all(0 <= e < a.duration for e in a.events)


@pytest.mark.parametrize("scaler", SCALERS)
def test_harness_runs_every_scaler_and_scores_sanely(scaler: str) -> None:
    trace = traces.make("step", 40.0, 0, 0.25)
    r = run(trace, scaler, 0, Config(), keep_series=True)
    assert r.minutes > 0
    assert 0 <= r.minutes_over_slo <= r.minutes
    assert r.replica_seconds > 0
    assert r.messages > 0
    assert r.reversals <= r.scale_events
    assert len(r.recovery_seconds) == len(trace.events)
    assert max(r.series["desired"]) <= Config().max_replicas


def test_same_seed_same_score() -> None:
    trace = traces.make("bursty", 40.0, 1, 0.2)
    assert run(trace, "chanscale", 1, Config()).to_dict() == run(trace, "chanscale", 1, Config()).to_dict()


def test_control_quality_quick_writes_tables(tmp_path: Path) -> None:
    rc = control_quality.main(
        [
            "--quick",
            "--out",
            str(tmp_path),
            "--no-plots",
            "--jobs",
            "1",
            "--traces",
            "step",
            "--scalers",
            "chanscale,keda-tuned",
        ]
    )
    assert rc == 0
    md = (tmp_path / "control_quality.md").read_text()
    assert "Headline: chanscale ÷ KEDA tuned" in md
    data = json.loads((tmp_path / "control_quality.json").read_text())
    assert {a["scaler"] for a in data["aggregate"]} == {"chanscale", "keda-tuned"}


def test_sizing_truth_search_matches_theory_for_mmc() -> None:
    # M/M/c with λ = 200, μ = 20: the field notes say 12 workers for P99 ≤ 250 ms.
    truth = sizing_accuracy.true_minimum(200.0, 20.0, "exponential", 1.0, 0.25, 100_000)
    assert truth is not None and abs(truth - 12) <= 1
    term, rec = sizing_accuracy.model_pick(200.0, 20.0, 0.25)
    assert term == 12
    assert rec >= term


def test_sizing_reports_unreachable_objectives() -> None:
    # Deterministic 1 s service can never meet a 0.5 s P99.
    assert sizing_accuracy.true_minimum(1.0, 1.0, "deterministic", 0.0, 0.5, 2_000) is None


def test_parse_metrics_and_histogram_quantile_of_a_delta() -> None:
    text = "\n".join(
        [
            "# HELP x_seconds demo",
            'x_seconds_bucket{le="0.1"} 10.0',
            'x_seconds_bucket{le="1.0"} 20.0',
            'x_seconds_bucket{le="+Inf"} 20.0',
            'chanscale_decisions_total{namespace="n",pool="p0",outcome="NoChange"} 3.0',
        ]
    )
    before = parse_metrics(text)
    after = parse_metrics(
        text.replace('le="0.1"} 10.0', 'le="0.1"} 110.0')
        .replace('le="1.0"} 20.0', 'le="1.0"} 120.0')
        .replace('le="+Inf"} 20.0', 'le="+Inf"} 120.0')
    )
    assert metric_sum(before, "chanscale_decisions_total", pool="p0") == 3.0
    assert hist_quantile(before, after, "x_seconds", 0.5) == pytest.approx(0.05)


def test_the_api_servers_write_latency_counts_only_the_patches_of_that_subresource() -> None:
    name = "apiserver_request_duration_seconds_bucket"

    def series(verb: str, sub: str, fast: float, slow: float) -> list[tuple[str, dict[str, str], float]]:
        lbl = {"verb": verb, "resource": "workerpools", **({"subresource": sub} if sub else {})}
        return [
            (name, {**lbl, "le": "0.1"}, fast),
            (name, {**lbl, "le": "1.0"}, fast + slow),
            (name, {**lbl, "le": "+Inf"}, fast + slow),
        ]

    before = series("PATCH", "status", 0.0, 0.0) + series("PATCH", "", 0.0, 0.0)
    after = series("PATCH", "status", 0.0, 10.0) + series("PATCH", "", 100.0, 0.0) + series("GET", "status", 50, 0)
    assert _write_latency(before, after, "workerpools", "status", 0.5) == pytest.approx(0.55)  # the slow ones only
    assert _write_latency(before, after, "workerpools", "", 0.5) == pytest.approx(0.05)
    assert _write_latency(before, after, "deployments", "scale", 0.5) is None  # none in the window


def test_cores_are_cpu_seconds_over_the_window() -> None:
    assert _cores({"etcd": 1.0}, {"etcd": 31.0, "operators": 60.0}, 120.0) == {"etcd": 0.25, "operators": 0.5}


def test_status_writes_per_pool_per_minute_count_only_the_chosen_pools() -> None:
    name = "chanscale_status_writes_total"
    before = [(name, {"pool": "p0"}, 1.0), (name, {"pool": "p1"}, 5.0)]
    after = [(name, {"pool": "p0"}, 3.0), (name, {"pool": "p1"}, 5.0), (name, {"pool": "p2"}, 9.0)]
    assert _per_pool_minute(before, after, name, ["p0", "p1"], 120.0) == pytest.approx(0.5)
    assert _per_pool_minute(before, after, name, ["p2"], 60.0) == pytest.approx(9.0)
    assert _per_pool_minute(before, after, name, [], 60.0) is None


def test_pool_gaps_follow_counter_increases() -> None:
    series = [(0.0, {"a": 1.0}), (2.0, {"a": 1.0}), (10.0, {"a": 2.0}), (20.0, {"a": 3.0}), (22.0, {"a": 3.0})]
    assert pool_gaps(series) == {"a": [10.0]}


def test_reaction_analysis_measures_visible_patched_and_drained() -> None:
    rows = reaction_time.analyse(
        steps={"c0": 100.0},
        pre={"w0": 2},
        events=[(99.0, "w0", 2), (109.0, "w0", 2), (112.5, "w0", 5)],
        samples={"c0": [(95.0, 0.0), (100.0, 3.0), (105.0, 300.0), (110.0, 500.0)]},
        states=[(100.0, "c0", 0.0), (110.0, "c0", 600.0), (140.0, "c0", 50.0), (150.0, "c0", 5.0)],
    )
    (r,) = rows
    assert r["visible_after_step_s"] == pytest.approx(5.0)
    assert r["reaction_s"] == pytest.approx(7.5)
    assert r["deciding_s"] == pytest.approx(2.5)  # decided on the sample of 110 (500), not the first visible one
    assert r["first_ignored"] is True
    assert r["end_to_end_s"] == pytest.approx(12.5)
    assert r["replicas_first_patch"] == 5
    assert r["drained_s"] == pytest.approx(50.0)


def test_chanscale_in_the_bench_is_the_shipped_tick_with_its_status_round_trip() -> None:
    """The fake Prometheus answers the reader's real default queries (an unknown query would fail the read), the
    status goes through the fake API server's merge patches, and the shipped policies gate each change."""
    from bench.promsim import PromView
    from bench.scalers import build
    from bench.shipped import ShippedTick

    from chanscale.sim.model import DEFAULT_BUCKETS as BUCKETS

    prom = PromView(list(BUCKETS), window=60.0)
    s = build("chanscale", slo=1.0, service_rate=20.0, limits=Limits(1, 50), prom=prom)
    assert isinstance(s.inner, ShippedTick)  # behind the fast path's gate (bench/fastgate.py)
    m = ChannelModel(service_rate=20.0, seed=1, initial_replicas=2)
    m.set_arrival_rate(200.0)
    current = 2
    for t in range(0, 120):
        m.advance(float(t))
        if t % 15 == 0:
            prom.scrape(m)
        if t >= 30 and t % 10 == 3:
            current = s.decide(Env(float(t), current, m.ready_workers, prom, 200.0, float(m.backlog), 0.0))
            m.set_replicas(current)
    status = s.api.body["status"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["MetricsAvailable"] == "True"
    assert status["lastDecision"]["policy"]["source"] != "failure-policy"  # OPA answered
    assert current > 2 and status["history"]["scaleEvents"]
    assert s.api.writes >= 2 and s.api.body["metadata"]["resourceVersion"] == str(s.api.rv)
