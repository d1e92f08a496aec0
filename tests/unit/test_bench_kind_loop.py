"""bench.kind_loop's pure parts: the per-step analysis, and that it never runs unless named."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import __main__ as runner
from bench.kind_loop import analyse_step, summarise

pytestmark = pytest.mark.unit


def test_step_analysis_measures_visible_patched_ready_and_drained() -> None:
    events = [(99.0, 2, 2), (106.0, 7, 2), (107.0, 7, 4), (109.5, 7, 7), (130.0, 3, 3)]
    samples = [(98.0, 0.0), (102.0, 25.0), (104.0, 60.0)]
    backlog = [(100.5, 5.0), (104.0, 80.0), (110.0, 120.0), (120.0, 40.0), (125.0, 9.0), (126.0, 2.0)]
    row = analyse_step(100.0, 2, events, samples, backlog)
    assert row["visible_s"] == 2.0
    assert row["patched_s"] == 6.0 and row["replicas_first_patch"] == 7
    assert row["visible_to_patched_s"] == 4.0
    assert row["ready_s"] == 9.5 and row["patched_to_ready_s"] == 3.5
    assert row["drained_s"] == 25.0 and row["peak_backlog"] == 120.0


def test_a_step_that_never_drains_or_scales_reports_none() -> None:
    row = analyse_step(100.0, 2, [(101.0, 2, 2)], [], [(101.0, 50.0), (102.0, 60.0)])
    assert row["patched_s"] is None and row["ready_s"] is None and row["drained_s"] is None
    summary = summarise([row])
    assert summary["drained_s"]["n"] == 0 and summary["steps"] == 1


def test_kind_loop_is_on_demand_only() -> None:
    """`python -m bench [--quick]` (make test) must not need a kind cluster."""
    assert "kind_loop" not in runner.BENCHMARKS
    assert "kind_loop" in runner.ON_DEMAND


def test_a_step_ends_where_the_next_begins() -> None:
    """A later step's burst must not count as this step's peak or drain."""
    backlog = [(101.0, 50.0), (105.0, 5.0), (160.0, 300.0), (170.0, 2.0)]
    events = [(102.0, 5, 2), (161.0, 9, 9)]
    row = analyse_step(100.0, 2, events, [], backlog, end=150.0)
    assert row["peak_backlog"] == 50.0 and row["drained_s"] == 5.0
    assert row["replicas_first_patch"] == 5 and row["ready_s"] is None
