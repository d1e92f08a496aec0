"""Arrival-rate traces: per-second rates (msgs/s), synthesized and seeded (no downloads).

Each trace is the shape an autoscaler struggles with in one specific way; ``events`` marks the moments after
which recovery time is measured (the step, the flash crowd).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Trace:
    """Arrival rate for every second of the run; ``rates[i]`` holds during ``[i, i+1)``."""

    name: str
    description: str
    rates: list[float]
    events: list[float] = field(default_factory=list)

    @property
    def duration(self) -> int:
        return len(self.rates)


def _scaled(minutes: float, scale: float) -> int:
    return max(1, round(minutes * 60 * scale))


def step(base: float, seed: int, scale: float = 1.0) -> Trace:
    """Base load, a ×5 step held for 20 min, then back: the canonical reaction test."""
    a, b, c = _scaled(8, scale), _scaled(20, scale), _scaled(12, scale)
    return Trace(
        "step",
        "×5 step at 8 min, held 20 min, back to base",
        [base] * a + [5 * base] * b + [base] * c,
        events=[float(a), float(a + b)],
    )


def ramp(base: float, seed: int, scale: float = 1.0) -> Trace:
    """A slow linear climb to ×6 and a faster descent: tests tracking without overshoot."""
    a, up, hold, down, tail = (_scaled(m, scale) for m in (5, 20, 5, 10, 5))
    rates = [base] * a
    rates += [base + 5 * base * i / up for i in range(up)]
    rates += [6 * base] * hold
    rates += [6 * base - 5 * base * i / down for i in range(down)]
    rates += [base] * tail
    return Trace("ramp", "linear ×1→×6 over 20 min, hold 5 min, down over 10 min", rates)


def diurnal(base: float, seed: int, scale: float = 1.0) -> Trace:
    """A compressed day (one hour) with 10 % per-minute noise: tests smooth tracking and scale-down."""
    rng = random.Random(f"{seed}/diurnal")
    n = _scaled(60, scale)
    rates = []
    noise = 1.0
    for i in range(n):
        if i % 60 == 0:
            noise = rng.lognormvariate(0.0, 0.1)
        phase = 2 * math.pi * i / n
        rates.append(base * (3.5 - 2.5 * math.cos(phase)) * noise)
    return Trace("diurnal", "one compressed day in 60 min: ×1 → ×6 → ×1, 10 % per-minute noise", rates)


def bursty(base: float, seed: int, scale: float = 1.0) -> Trace:
    """A two-state MMPP (Markov-modulated Poisson): ×1 for ~3 min, ×5 for ~1 min, at random."""
    rng = random.Random(f"{seed}/mmpp")
    n = _scaled(45, scale)
    rates: list[float] = []
    high = False
    while len(rates) < n:
        hold = max(1, round(rng.expovariate(1 / (60.0 if high else 180.0))))
        rates += [base * (5.0 if high else 1.0)] * hold
        high = not high
    return Trace("bursty", "MMPP: ×1 (mean 3 min) ↔ ×5 (mean 1 min), random switching", rates[:n])


def flash_crowd(base: float, seed: int, scale: float = 1.0) -> Trace:
    """Base load, then ×8 within 10 s decaying with a 5-minute half-life: tests panic-speed reaction."""
    a, rest = _scaled(8, scale), _scaled(32, scale)
    rates = [base] * a
    for i in range(rest):
        ramp_in = min(1.0, (i + 1) / 10.0)
        rates.append(base * (1 + 7 * ramp_in * 0.5 ** (i / 300.0)))
    return Trace("flash", "×8 flash crowd within 10 s at 8 min, 5 min half-life decay", rates, events=[float(a)])


def production(base: float, seed: int, scale: float = 1.0) -> Trace:
    """Shaped like the Azure Functions 2019 invocation trace (Shahrad et al., ATC '20), synthesized.

    What it borrows: a diurnal baseline, heavy-tailed per-minute variation (lognormal, σ = 0.35), timer-triggered
    spikes at the top of every "quarter hour" (here every 5 min, ×3 for 20 s), and rare heavy bursts (Pareto
    sized, capped at ×3, a few per hour) as in the trace's bursty applications. The level is half of ``base``
    so the peaks stay within the comparison's maxReplicas. Nothing is downloaded: a shape, not data.
    """
    rng = random.Random(f"{seed}/production")
    n = _scaled(60, scale)
    period = max(60, _scaled(5, scale))
    rates = []
    minute_noise = 1.0
    burst_until, burst_factor = -1, 1.0
    for i in range(n):
        if i % 60 == 0:
            minute_noise = rng.lognormvariate(0.0, 0.35)
            if rng.random() < 0.06:  # about 3-4 bursts per hour
                burst_until = i + rng.randint(30, 120)
                burst_factor = min(3.0, rng.paretovariate(1.5) + 0.5)
        diurnal_factor = 2.0 - math.cos(2 * math.pi * i / n)
        factor = diurnal_factor * minute_noise
        if i % period < 20:
            factor *= 3.0
        if i < burst_until:
            factor *= burst_factor
        rates.append(0.5 * base * factor)
    return Trace(
        "production",
        "Azure-Functions-like (synthesized): diurnal × lognormal minute noise, timer spikes every 5 min, "
        "Pareto bursts (capped ×3)",
        rates,
    )


TRACES: dict[str, Callable[..., Trace]] = {
    "step": step,
    "ramp": ramp,
    "diurnal": diurnal,
    "bursty": bursty,
    "flash": flash_crowd,
    "production": production,
}


def make(name: str, base: float, seed: int, scale: float = 1.0) -> Trace:
    """Build trace ``name`` at ``base`` msgs/s; ``scale`` < 1 shortens every phase (for --quick runs)."""
    return TRACES[name](base, seed, scale)
