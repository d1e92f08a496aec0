"""ChannelModel against queueing theory and its own contract (drain, start-up delay, monotone counters)."""

from __future__ import annotations

import random
import statistics

import pytest

from chanscale.queueing import erlang_c, sojourn_quantile
from chanscale.sim.model import DEFAULT_BUCKETS, ChannelModel

pytestmark = pytest.mark.unit


def _mean_sojourn(model: ChannelModel) -> float:
    return model.latency_sum / model.latency_count


def test_mm1_mean_sojourn_matches_theory() -> None:
    lam, mu = 8.0, 10.0
    m = ChannelModel(service_rate=mu, seed=7, initial_replicas=1)
    m.set_arrival_rate(lam)
    m.advance(100_000.0)
    assert m.latency_count > 700_000
    expected = 1.0 / (mu - lam)  # 0.5 s
    assert _mean_sojourn(m) == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize(("lam", "mu", "c"), [(200.0, 20.0, 12), (45.0, 5.0, 11)])
def test_mmc_mean_wait_and_p99_match_theory(lam: float, mu: float, c: int) -> None:
    m = ChannelModel(service_rate=mu, seed=3, initial_replicas=c, record_latencies=True)
    m.set_arrival_rate(lam)
    m.advance(4000.0)
    mean_wait = _mean_sojourn(m) - 1.0 / mu
    expected_wait = erlang_c(c, lam / mu) / (c * mu - lam)
    assert mean_wait == pytest.approx(expected_wait, rel=0.1)
    lat = sorted(x for _, x in m.take_latencies())
    p99 = lat[int(0.99 * len(lat))]
    assert p99 == pytest.approx(sojourn_quantile(c, lam, mu), rel=0.05)


def test_lognormal_service_has_requested_mean_and_cv() -> None:
    m = ChannelModel(
        service_rate=10.0,
        service_dist="lognormal",
        service_cv=2.0,
        seed=1,
        initial_replicas=1000,
        record_latencies=True,
    )
    m.set_arrival_rate(50.0)
    m.advance(2000.0)
    lat = [x for _, x in m.take_latencies()]  # no queueing with 1000 workers: latency == service time
    mean = statistics.fmean(lat)
    assert mean == pytest.approx(0.1, rel=0.05)
    assert statistics.pstdev(lat) / mean == pytest.approx(2.0, rel=0.15)


def test_deterministic_service_and_histogram_buckets() -> None:
    m = ChannelModel(service_rate=4.0, service_dist="deterministic", seed=1, initial_replicas=1)
    m.set_arrival_rate(1000.0)
    m.advance(0.0005)
    m.set_arrival_rate(0.0)
    m.advance(100.0)
    n = m.enqueued_total
    assert m.processed_total == n
    assert m.busy_seconds_total == pytest.approx(0.25 * n)
    counts = m.latency_bucket_counts
    assert len(counts) == len(DEFAULT_BUCKETS) + 1
    assert counts[-1] == m.latency_count == n
    assert counts == sorted(counts)


def test_startup_delay_defers_readiness() -> None:
    m = ChannelModel(service_rate=10.0, startup_delay=5.0, seed=2)
    m.set_arrival_rate(5.0)
    m.set_replicas(3)
    m.advance(4.9)
    assert m.ready_workers == 0
    assert m.starting_workers == 3
    assert m.processed_total == 0
    assert m.backlog == m.enqueued_total > 0
    m.advance(5.0)
    assert m.ready_workers == 3
    assert m.starting_workers == 0
    m.advance(60.0)
    assert m.backlog < 5
    assert m.processed_total > 0


def test_callable_startup_delay_uses_model_rng() -> None:
    delays: list[float] = []

    def draw(rng: random.Random) -> float:
        d = rng.uniform(1.0, 2.0)
        delays.append(d)
        return d

    m = ChannelModel(service_rate=10.0, startup_delay=draw, seed=2)
    m.set_replicas(2)
    assert len(delays) == 2
    m.advance(min(delays) + 1e-9)
    assert m.ready_workers == 1
    m.advance(max(delays) + 1e-9)
    assert m.ready_workers == 2


def test_scale_down_removes_starting_workers_first() -> None:
    m = ChannelModel(service_rate=10.0, startup_delay=10.0, seed=2, initial_replicas=2)
    m.set_replicas(5)
    assert (m.ready_workers, m.starting_workers) == (2, 3)
    m.set_replicas(3)
    assert (m.ready_workers, m.starting_workers) == (2, 1)
    m.set_replicas(1)
    assert (m.ready_workers, m.starting_workers) == (1, 0)


def test_graceful_drain_finishes_in_flight_work() -> None:
    m = ChannelModel(service_rate=0.1, service_dist="deterministic", seed=4, initial_replicas=3)
    m.set_arrival_rate(100.0)
    m.advance(1.0)  # three messages in flight (10 s each), the rest queued
    m.set_arrival_rate(0.0)
    assert m.in_flight == 3
    backlog = m.backlog
    m.set_replicas(0)
    assert m.ready_workers == 0
    assert m.draining_workers == 3
    m.advance(30.0)
    assert m.processed_total == 3  # in-flight work finished ...
    assert m.backlog == backlog  # ... and nothing new was taken
    assert m.draining_workers == 0
    assert m.in_flight == 0
    assert m.busy_seconds_total == pytest.approx(30.0)


def test_scale_down_prefers_idle_workers() -> None:
    m = ChannelModel(service_rate=0.1, service_dist="deterministic", seed=4, initial_replicas=5)
    m.set_arrival_rate(100.0)
    t = 0.0
    while m.enqueued_total < 2:  # two messages arrive and are taken; three workers stay idle
        t += 0.001
        m.advance(t)
    m.set_arrival_rate(0.0)
    busy = m.in_flight
    assert busy == 2
    m.set_replicas(busy)
    assert m.draining_workers == 0
    assert m.ready_workers == busy


def test_counters_are_monotone_under_random_control() -> None:
    rng = random.Random(11)
    m = ChannelModel(
        service_rate=15.0,
        service_dist="lognormal",
        service_cv=1.5,
        startup_delay=lambda r: r.expovariate(0.5),
        error_rate=0.05,
        seed=5,
    )
    keys = (
        "enqueued_total",
        "processed_total",
        "failed_total",
        "busy_seconds_total",
        "latency_sum",
        "latency_count",
    )
    prev = m.snapshot()
    t = 0.0
    for _ in range(400):
        t += rng.uniform(0.0, 3.0)
        m.advance(t)
        if rng.random() < 0.3:
            m.set_replicas(rng.randint(0, 12))
        if rng.random() < 0.2:
            m.set_arrival_rate(rng.choice([0.0, 20.0, 100.0, 150.0]))
        snap = m.snapshot()
        for k in keys:
            assert snap[k] >= prev[k], k
        assert all(a >= b for a, b in zip(snap["latency_bucket_counts"], prev["latency_bucket_counts"], strict=True))
        assert snap["latency_count"] == snap["processed_total"] + snap["failed_total"]
        assert snap["enqueued_total"] == snap["latency_count"] + snap["backlog"] + snap["in_flight"]
        assert snap["ready_workers"] + snap["starting_workers"] == snap["desired_workers"]
        prev = snap
    assert 0.02 < m.failed_total / m.latency_count < 0.08


def test_same_seed_same_result_and_arrivals_independent_of_replicas() -> None:
    def run(replicas: int) -> dict[str, object]:
        m = ChannelModel(service_rate=20.0, seed=9, initial_replicas=replicas)
        m.set_arrival_rate(150.0)
        m.advance(50.0)
        m.set_arrival_rate(300.0)
        m.advance(100.0)
        return m.snapshot()

    assert run(10) == run(10)
    assert run(10)["enqueued_total"] == run(30)["enqueued_total"]


def test_time_cannot_go_backwards_and_inputs_are_validated() -> None:
    m = ChannelModel(service_rate=1.0)
    m.advance(5.0)
    with pytest.raises(ValueError, match="backwards"):
        m.advance(4.0)
    with pytest.raises(ValueError):
        m.set_arrival_rate(-1.0)
    with pytest.raises(ValueError):
        m.set_replicas(-1)
    with pytest.raises(ValueError):
        ChannelModel(service_rate=0.0)
    with pytest.raises(ValueError):
        ChannelModel(service_rate=1.0, service_dist="pareto")


def test_zero_rate_produces_no_arrivals() -> None:
    m = ChannelModel(service_rate=1.0, initial_replicas=1)
    m.set_arrival_rate(0.0)
    m.advance(1000.0)
    assert m.enqueued_total == 0
    assert m.oldest_age == 0.0
