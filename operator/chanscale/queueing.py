"""M/M/c queueing formulas used to size a pool for its P99 latency objective.

Pure math, no I/O. Notation: arrival rate ``lam`` (msgs/s), per-worker service rate ``mu`` (msgs/s),
offered load ``a = lam / mu``; the queue is stable only with ``c > a`` workers.
See docs/decision-model.md for the derivations and a worked example.
"""

from __future__ import annotations

import math

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


def sojourn_tail(c: int, lam: float, mu: float, t: float) -> float:
    """P(T > t) for the sojourn time T = wait + service of an M/M/c queue.

    With ``θ = cμ − λ``: ``(1−C)e^{−μt} + C(θe^{−μt} − μe^{−θt})/(θ − μ)``, and the limit
    ``(1−C)e^{−μt} + C(1 + μt)e^{−μt}`` when ``θ = μ``.
    """
    if t < 0:
        return 1.0
    if lam <= 0:
        return math.exp(-mu * t)
    if c * mu <= lam:
        return 1.0
    cc = erlang_c(c, lam / mu)
    theta = c * mu - lam
    e_mu = math.exp(-mu * t)
    if abs(theta - mu) < 1e-9 * max(1.0, mu):
        return (1.0 - cc) * e_mu + cc * (1.0 + mu * t) * e_mu
    return (1.0 - cc) * e_mu + cc * (theta * e_mu - mu * math.exp(-theta * t)) / (theta - mu)


def sojourn_quantile(c: int, lam: float, mu: float, q: float = 0.99) -> float:
    """The ``q`` quantile of the sojourn time (seconds), found by bisection on :func:`sojourn_tail`."""
    if c * mu <= lam:
        return math.inf
    tail = 1.0 - q
    lo, hi = 0.0, math.log(1.0 / tail) / mu
    while sojourn_tail(c, lam, mu, hi) > tail:
        hi *= 2.0
    for _ in range(60):
        mid = (lo + hi) / 2.0
        if sojourn_tail(c, lam, mu, mid) > tail:
            lo = mid
        else:
            hi = mid
    return hi


def service_floor(mu: float, tail: float = P99_TAIL) -> float:
    """The smallest achievable P99 sojourn time: service alone, ``ln(1/tail)/μ`` (exponential service)."""
    return math.log(1.0 / tail) / mu


def workers_for_latency(lam: float, mu: float, t_slo: float, tail: float = P99_TAIL, c_max: int = 100_000) -> int:
    """The smallest ``c > λ/μ`` with ``P(T > t_slo) <= tail``.

    When the objective is below the service-time floor no ``c`` meets it; then the count that makes the wait
    negligible (``P(W > 0) <= tail``) is returned, which is the best any number of workers can do.
    """
    if lam <= 0:
        return 0
    a = lam / mu
    c = max(1, math.floor(a) + 1)
    floor_unreachable = t_slo <= service_floor(mu, tail)
    while c < c_max:
        if floor_unreachable:
            if erlang_c(c, a) <= tail:
                return c
        elif sojourn_tail(c, lam, mu, t_slo) <= tail:
            return c
        c += 1
    return c_max
