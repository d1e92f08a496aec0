"""Queueing formulas used to size a pool for its P99 latency objective: M/M/c, and M/G/c by the
Allen–Cunneen / Kingman approximation when service times are more (or less) variable than exponential.

Pure math, no I/O. Notation: arrival rate ``lam`` (msgs/s), per-worker service rate ``mu`` (msgs/s),
offered load ``a = lam / mu``, service time's squared coefficient of variation ``scv`` (1 = exponential);
the queue is stable only with ``c > a`` workers. See docs/decision-model.md for the derivations and a worked
example.
"""

from __future__ import annotations

import math
from collections.abc import Callable

#: The tail probability the P99 objective allows.
P99_TAIL = 0.01


def erlang_c(c: int, a: float) -> float:
    """Probability that an arriving message has to wait (Erlang C), for ``c`` workers and load ``a``.

    Uses the numerically stable Erlang B recursion ``B_k = a·B_{k-1} / (k + a·B_{k-1})`` and
    ``C = c·B / (c − a(1 − B))``. Returns 1.0 when the queue is unstable (``c <= a``).
    """
    if a <= 0:
        return 0.0
    if c <= a:
        return 1.0
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return c * b / (c - a * (1.0 - b))


def wait_tail(c: int, lam: float, mu: float, t: float) -> float:
    """P(W > t): probability that a message waits longer than ``t`` in the queue."""
    if lam <= 0:
        return 0.0
    if c * mu <= lam:
        return 1.0
    return erlang_c(c, lam / mu) * math.exp(-(c * mu - lam) * t)


def service_phases(mu: float, scv: float = 1.0) -> tuple[tuple[float, float], ...]:
    """The service time as a mixture of exponentials ``((p, rate), ...)`` with mean ``1/μ`` and SCV ``scv``.

    Exponential for ``scv <= 1`` (the tail of a less variable service is bounded by it: conservative); for
    ``scv > 1`` the two-phase hyperexponential with balanced means (``p₁/μ₁ = p₂/μ₂``), the usual two-moment fit:
    ``p₁ = (1 + √((scv − 1)/(scv + 1)))/2``, ``μ₁ = 2p₁μ``, ``μ₂ = 2p₂μ``.
    """
    if scv <= 1.0 + 1e-12:
        return ((1.0, mu),)
    p1 = (1.0 + math.sqrt((scv - 1.0) / (scv + 1.0))) / 2.0
    p2 = 1.0 - p1
    return ((p1, 2.0 * p1 * mu), (p2, 2.0 * p2 * mu))


def wait_decay(c: int, lam: float, mu: float, scv: float = 1.0) -> float:
    """Decay rate of the waiting-time tail, ``P(W > t) ≈ C·e^{−rate·t}``.

    M/M/c: ``θ = cμ − λ``. M/G/c (Allen–Cunneen, Kingman): the mean wait is the M/M/c wait times
    ``(1 + scv)/2`` with Poisson arrivals, at the same probability of waiting, so the rate is ``2θ/(1 + scv)``.
    For one worker this mean is the Pollaczek–Khinchine formula, exact for M/G/1.
    """
    return 2.0 * (c * mu - lam) / (1.0 + scv)


def mean_wait(c: int, lam: float, mu: float, scv: float = 1.0) -> float:
    """Mean waiting time ``E[W] = C(c, a) / rate`` (seconds; ``inf`` when unstable)."""
    if lam <= 0:
        return 0.0
    if c * mu <= lam:
        return math.inf
    return erlang_c(c, lam / mu) / wait_decay(c, lam, mu, scv)


def _tail(cc: float, decay: float, phases: tuple[tuple[float, float], ...], t: float) -> float:
    """``P(W + S > t)`` with ``W`` = 0 w.p. ``1 − cc``, else exponential(``decay``), and ``S`` a phase mixture."""
    e_w = math.exp(-decay * t)
    out = 0.0
    for p, r in phases:
        e_s = math.exp(-r * t)
        # P(S > t) + cc·∫₀ᵗ r e^{−rs} e^{−decay(t−s)} ds, and its limit r·t·e^{−rt} when r = decay.
        conv = r * t * e_s if abs(r - decay) < 1e-9 * max(1.0, r) else r * (e_w - e_s) / (r - decay)
        out += p * (e_s + cc * conv)
    return min(out, 1.0)


def sojourn_tail(c: int, lam: float, mu: float, t: float, scv: float = 1.0) -> float:
    """P(T > t) for the sojourn time T = wait + service.

    Exact for M/M/c (``scv = 1``): with ``θ = cμ − λ``, ``(1−C)e^{−μt} + C(θe^{−μt} − μe^{−θt})/(θ − μ)``, and the
    limit ``(1−C)e^{−μt} + C(1 + μt)e^{−μt}`` when ``θ = μ``. Otherwise the M/G/c approximation: the wait tail
    decays at :func:`wait_decay`, the service is :func:`service_phases`.
    """
    if t < 0:
        return 1.0
    phases = service_phases(mu, scv)
    if lam <= 0:
        return _tail(0.0, 1.0, phases, t)
    if c * mu <= lam:
        return 1.0
    return _tail(erlang_c(c, lam / mu), wait_decay(c, lam, mu, scv), phases, t)


def _quantile(tail_fn: Callable[[float], float], tail: float, start: float) -> float:
    """The smallest ``t`` with ``tail_fn(t) <= tail`` (bisection; ``tail_fn`` decreasing)."""
    lo, hi = 0.0, start
    while tail_fn(hi) > tail:
        hi *= 2.0
    for _ in range(50):
        mid = (lo + hi) / 2.0
        if tail_fn(mid) > tail:
            lo = mid
        else:
            hi = mid
    return hi


def sojourn_quantile(c: int, lam: float, mu: float, q: float = 0.99, scv: float = 1.0) -> float:
    """The ``q`` quantile of the sojourn time (seconds), found by bisection on :func:`sojourn_tail`."""
    if c * mu <= lam:
        return math.inf
    phases = service_phases(mu, scv)
    cc = erlang_c(c, lam / mu) if lam > 0 else 0.0
    decay = wait_decay(c, lam, mu, scv) if lam > 0 else 1.0
    return _quantile(lambda t: _tail(cc, decay, phases, t), 1.0 - q, math.log(1.0 / (1.0 - q)) / mu)


def service_floor(mu: float, tail: float = P99_TAIL, scv: float = 1.0) -> float:
    """The smallest achievable P99 sojourn time: the service time's own quantile (``ln(1/tail)/μ`` if exponential)."""
    phases = service_phases(mu, scv)
    if len(phases) == 1:
        return math.log(1.0 / tail) / mu
    return _quantile(lambda t: _tail(0.0, 1.0, phases, t), tail, math.log(1.0 / tail) / mu)


#: The service-time SCV :func:`fit_scv` searches (CV 0 .. 5).
SCV_RANGE = (0.0, 25.0)


def fit_scv(c: int, lam: float, mu: float, p99: float, q: float = 0.99) -> float | None:
    """The service-time SCV at which the model's ``q`` quantile with ``c`` workers equals the observed ``p99``.

    The one parameter of the M/G/c model the metrics do not give directly (they give λ, μ and the latency
    histogram, not the service-time variance); clamped to :data:`SCV_RANGE`. ``None`` when the queue is unstable.
    """
    if lam <= 0 or c * mu <= lam or not math.isfinite(p99) or p99 <= 0:
        return None
    lo, hi = SCV_RANGE
    if sojourn_quantile(c, lam, mu, q, lo) >= p99:
        return lo
    if sojourn_quantile(c, lam, mu, q, hi) <= p99:
        return hi
    for _ in range(30):
        mid = (lo + hi) / 2.0
        if sojourn_quantile(c, lam, mu, q, mid) > p99:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2.0


def workers_for_latency(
    lam: float, mu: float, t_slo: float, tail: float = P99_TAIL, c_max: int = 100_000, scv: float = 1.0
) -> int:
    """The smallest ``c > λ/μ`` with ``P(T > t_slo) <= tail``.

    When the objective is below the service-time floor (:func:`service_floor`) no ``c`` meets it; then the count
    that makes the wait negligible (``P(W > 0) <= tail``) is returned, which is the best any number of workers
    can do.
    """
    if lam <= 0:
        return 0
    a = lam / mu
    c = max(1, math.floor(a) + 1)
    floor_unreachable = t_slo <= service_floor(mu, tail, scv)
    phases = service_phases(mu, scv)
    while c < c_max:
        cc = erlang_c(c, a)
        if floor_unreachable:
            if cc <= tail:
                return c
        elif _tail(cc, wait_decay(c, lam, mu, scv), phases, t_slo) <= tail:
            return c
        c += 1
    return c_max
