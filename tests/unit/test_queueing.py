"""The M/M/c and M/G/c formulas against known values and an independent textbook implementation."""

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


# --------------------------------------------------------------------------------------------- M/G/c


def mmc_sojourn_tail_textbook(c: int, lam: float, mu: float, t: float) -> float:
    cc, theta = erlang_c_textbook(c, lam / mu), c * mu - lam
    return (1 - cc) * math.exp(-mu * t) + cc * (theta * math.exp(-mu * t) - mu * math.exp(-theta * t)) / (theta - mu)


@pytest.mark.parametrize(("c", "lam", "t"), [(4, 40.0, 0.3), (12, 200.0, 0.25), (14, 200.0, 0.1), (2, 5.0, 0.5)])
def test_scv_one_is_exactly_mmc(c: int, lam: float, t: float) -> None:
    assert q.sojourn_tail(c, lam, 20.0, t, scv=1.0) == pytest.approx(mmc_sojourn_tail_textbook(c, lam, 20.0, t))


@pytest.mark.parametrize("scv", [0.0, 0.5, 1.0, 4.0, 9.0])
def test_one_worker_mean_wait_is_pollaczek_khinchine(scv: float) -> None:
    # M/G/1 is exact: E[W] = λ E[S²] / (2(1 − ρ)), E[S²] = (1 + SCV)/μ². M/D/1 at ρ = 0.5, μ = 1: E[W] = 0.5.
    lam, mu = 10.0, 20.0
    pk = lam * (1 + scv) / mu**2 / (2 * (1 - lam / mu))
    assert q.mean_wait(1, lam, mu, scv) == pytest.approx(pk)
    assert q.mean_wait(1, 0.5, 1.0, 0.0) == pytest.approx(0.5)


def test_allen_cunneen_mean_wait_scales_the_mmc_wait() -> None:
    # Wq(M/G/c) ≈ Wq(M/M/c) · (1 + SCV)/2 with Poisson arrivals; M/M/c: Wq = C / (cμ − λ).
    mmc = erlang_c_textbook(12, 10.0) / (12 * 20.0 - 200.0)
    assert q.mean_wait(12, 200.0, 20.0) == pytest.approx(mmc)
    assert q.mean_wait(12, 200.0, 20.0, scv=4.0) == pytest.approx(2.5 * mmc)


@pytest.mark.parametrize("scv", [0.25, 1.0, 2.0, 4.0, 16.0])
def test_service_phases_match_mean_and_scv(scv: float) -> None:
    phases = q.service_phases(20.0, scv)
    mean = sum(p / r for p, r in phases)
    second = sum(2 * p / r**2 for p, r in phases)
    assert sum(p for p, _ in phases) == pytest.approx(1.0)
    assert mean == pytest.approx(1 / 20.0)
    assert second / mean**2 - 1 == pytest.approx(max(scv, 1.0))  # below 1 the exponential bounds the tail


def test_service_floor_is_the_service_quantile() -> None:
    assert q.service_floor(20.0) == pytest.approx(math.log(100) / 20.0)
    # Balanced H2 with SCV 4 and mean 50 ms: p₂ = (1 − √0.6)/2, μ₂ = 2p₂μ; its P99 is about 0.537 s.
    floor = q.service_floor(20.0, scv=4.0)
    assert floor == pytest.approx(0.5373, abs=1e-3)
    assert q.sojourn_tail(5, 0.0, 20.0, floor, scv=4.0) == pytest.approx(0.01, rel=1e-6)


@pytest.mark.parametrize(("c", "lam", "scv"), [(3, 40.0, 3.0), (5, 40.0, 0.5), (12, 200.0, 8.0), (2, 20.0, 2.0)])
def test_fit_scv_inverts_the_quantile(c: int, lam: float, scv: float) -> None:
    p99 = q.sojourn_quantile(c, lam, 20.0, scv=scv)
    assert q.fit_scv(c, lam, 20.0, p99) == pytest.approx(scv, rel=1e-3)


def test_fit_scv_clamps_and_refuses_unstable() -> None:
    assert q.fit_scv(3, 40.0, 20.0, 0.01) == q.SCV_RANGE[0]
    assert q.fit_scv(3, 40.0, 20.0, 100.0) == q.SCV_RANGE[1]
    assert q.fit_scv(2, 40.0, 20.0, 0.5) is None


def test_workers_grow_with_service_variability() -> None:
    counts = [q.workers_for_latency(200, 20, 0.5, scv=s) for s in (0.0, 1.0, 4.0, 16.0)]
    assert counts == sorted(counts)
    assert counts[1] == q.workers_for_latency(200, 20, 0.5)
    assert counts[-1] > counts[1]
