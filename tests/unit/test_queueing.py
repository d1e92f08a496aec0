"""The M/M/c formulas against known values and an independent textbook implementation."""

import math

import pytest

from chanscale import queueing as q

pytestmark = pytest.mark.unit


def erlang_c_textbook(c: int, a: float) -> float:
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


@pytest.mark.parametrize(("c", "a"), [(1, 0.5), (2, 1.0), (5, 4.0), (10, 8.0), (14, 10.0), (30, 25.5)])
def test_erlang_c_matches_textbook(c: int, a: float) -> None:
    assert q.erlang_c(c, a) == pytest.approx(erlang_c_textbook(c, a), rel=1e-9)


def test_erlang_c_known_values() -> None:
    assert q.erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = ρ
    assert q.erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert q.erlang_c(3, 3.0) == 1.0  # unstable
    assert q.erlang_c(3, 0.0) == 0.0


def test_field_notes_examples() -> None:
    # λ = 200/s, μ = 20/s: c = 12 for P99(T) <= 250 ms; c = 14 gives P99(T) ≈ 0.233 s.
    assert q.workers_for_latency(200, 20, 0.25) == 12
    assert q.sojourn_quantile(14, 200, 20) == pytest.approx(0.233, abs=0.001)


def test_sojourn_tail_theta_equals_mu_limit_is_continuous() -> None:
    # λ = 200, μ = 20, c = 11 makes θ = cμ − λ = μ: the special-case formula must agree with its neighbours.
    t = 0.2
    exact = q.sojourn_tail(11, 200, 20, t)
    near = q.sojourn_tail(11, 200 + 1e-6, 20, t)
    assert exact == pytest.approx(near, rel=1e-4)


def test_mm1_sojourn_is_exponential() -> None:
    # For M/M/1 the sojourn time is exponential with rate μ − λ.
    lam, mu, t = 6.0, 10.0, 0.3
    assert q.sojourn_tail(1, lam, mu, t) == pytest.approx(math.exp(-(mu - lam) * t), rel=1e-9)


def test_p99_never_below_service_floor() -> None:
    mu = 20.0
    for c in (5, 20, 100):
        assert q.sojourn_quantile(c, 10.0, mu) >= q.service_floor(mu) - 1e-9


def test_objective_below_floor_sizes_for_no_waiting() -> None:
    c = q.workers_for_latency(100, 10, 0.1)  # floor ln(100)/10 ≈ 0.46 s > 0.1 s
    assert q.erlang_c(c, 10.0) <= 0.01
    assert q.erlang_c(c - 1, 10.0) > 0.01


def test_workers_monotone_in_load() -> None:
    counts = [q.workers_for_latency(lam, 20, 0.5) for lam in (10, 50, 100, 200, 400)]
    assert counts == sorted(counts)
    assert q.workers_for_latency(0, 20, 0.5) == 0
