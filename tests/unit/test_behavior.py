"""HPA v2 behaviour, case by case as in the Kubernetes controller (pkg/controller/podautoscaler)."""

import pytest

from chanscale import behavior as b
from chanscale.spec import DEFAULT_SCALE_DOWN, ScalingPolicy, ScalingRules

pytestmark = pytest.mark.unit

NOW = 1_000.0


def rules(*policies: tuple[str, int, int], select: str = "Max", window: int = 0) -> ScalingRules:
    return ScalingRules(window, select, tuple(ScalingPolicy(*p) for p in policies), 0.0)


UP = rules(("Pods", 4, 60), ("Percent", 100, 60))


@pytest.mark.parametrize(
    ("select", "current", "events", "expected"),
    [
        ("Max", 10, [], 20),  # Percent 100 wins
        ("Min", 10, [], 14),  # Pods 4 wins
        ("Max", 1, [], 5),  # Pods wins for small counts
        ("Max", 10, [(NOW - 30, 8)], 10),  # 8 added in the period: start 2 -> max(6, 4) < current: no growth
        ("Max", 10, [(NOW - 61, 8)], 20),  # the event left the period
        ("Max", 3, [], 7),  # ceil for Percent: 3*2 = 6 < 3+4
        ("Disabled", 10, [], 10),
    ],
)
def test_scale_up_limit(select: str, current: int, events: list[tuple[float, int]], expected: int) -> None:
    r = rules(("Pods", 4, 60), ("Percent", 100, 60), select=select)
    limit, _ = b.scale_up_limit(current, events, NOW, r)
    assert max(limit, current) == expected


def test_scale_up_percent_rounds_up() -> None:
    limit, why = b.scale_up_limit(3, [], NOW, rules(("Percent", 50, 60)))
    assert limit == 5  # ceil(4.5)
    assert why == "scaleUp policy Percent 50%/60s"


@pytest.mark.parametrize(
    ("select", "current", "events", "expected"),
    [
        ("Max", 100, [], 90),  # Max = the biggest change: Percent 10 -> 90 beats Pods 5 -> 95
        ("Min", 100, [], 95),
        ("Max", 15, [], 10),  # Pods 5 -> 10 beats Percent 10 -> int(13.5) = 13
        ("Max", 100, [(NOW - 10, -10)], 99),  # 10 removed in the period: start 110 -> Percent 99, Pods 105
        ("Disabled", 100, [], 100),
    ],
)
def test_scale_down_limit(select: str, current: int, events: list[tuple[float, int]], expected: int) -> None:
    r = rules(("Pods", 5, 60), ("Percent", 10, 60), select=select)
    assert b.apply_rate_limits(current, 1, events, NOW, 1, 1000, UP, r).replicas == expected


def test_scale_down_percent_rounds_down() -> None:
    limit, _ = b.scale_down_limit(15, [], NOW, rules(("Percent", 50, 60)))
    assert limit == 7  # int(7.5)


def test_rate_limit_names_max_and_min_replicas() -> None:
    assert b.apply_rate_limits(5, 50, [], NOW, 1, 8, UP, DEFAULT_SCALE_DOWN) == b.Limited(8, "maxReplicas")
    lim = b.apply_rate_limits(5, 0, [], NOW, 2, 8, UP, DEFAULT_SCALE_DOWN)
    assert lim == b.Limited(2, "minReplicas")
    assert b.apply_rate_limits(20, 20, [], NOW, 1, 8, UP, DEFAULT_SCALE_DOWN) == b.Limited(8, "maxReplicas")


def test_activation_from_zero_even_with_min_select() -> None:
    r = rules(("Percent", 100, 60), select="Min")
    assert b.apply_rate_limits(0, 3, [], NOW, 0, 10, r, DEFAULT_SCALE_DOWN).replicas == 1


def test_stabilization_down_uses_highest_in_window() -> None:
    down = rules(("Percent", 100, 15), window=300)
    runs = [(NOW - 200, NOW - 110, 10), (NOW - 100, NOW - 10, 8)]
    s = b.stabilize(runs, NOW, current=10, desired=5, up=UP, down=down)
    assert s.replicas == 10
    assert s.limited_by == "scaleDown stabilization window 300s"


def test_stabilization_counts_a_run_by_its_last_sample() -> None:
    # A run counts while its last sample is in the window (the controller's per-sync samples), not while the
    # next run has not started yet.
    runs = [(NOW - 200, NOW - 110, 10), (NOW - 100, NOW - 10, 8)]
    down = rules(("Percent", 100, 15), window=150)
    assert b.stabilize(runs, NOW, current=10, desired=5, up=UP, down=down).replicas == 10
    down = rules(("Percent", 100, 15), window=105)
    assert b.stabilize(runs, NOW, current=10, desired=5, up=UP, down=down).replicas == 8


def test_only_samples_inside_the_window_count() -> None:
    # Issue 12's example: 10 @ 600 s, 9 @ 540 s, 5 @ 120 s, 4 @ 60 s ago, 180 s window: the HPA answers 5.
    runs = [(NOW - t, NOW - t, r) for t, r in ((600, 10), (540, 9), (120, 5), (60, 4))]
    down = rules(("Percent", 100, 15), window=180)
    assert b.stabilize(runs, NOW, current=10, desired=3, up=UP, down=down).replicas == 5


def test_stabilization_up_uses_lowest_in_window() -> None:
    up = rules(("Pods", 100, 15), window=60)
    s = b.stabilize([(NOW - 30, NOW - 30, 4)], NOW, current=2, desired=10, up=up, down=DEFAULT_SCALE_DOWN)
    assert s.replicas == 4
    assert s.limited_by == "scaleUp stabilization window 60s"


def test_no_stabilization_without_history() -> None:
    s = b.stabilize([], NOW, current=2, desired=10, up=UP, down=DEFAULT_SCALE_DOWN)
    assert s == b.Stabilized(10, None)


def test_runs_are_compact_and_pruned() -> None:
    runs: list[tuple[float, float, int]] = []
    for i, v in enumerate([3, 3, 3, 5, 5, 4]):
        runs = b.add_recommendation(runs, NOW + 10 * i, v)
    assert runs == [(NOW, NOW + 20, 3), (NOW + 30, NOW + 40, 5), (NOW + 50, NOW + 50, 4)]
    assert b.prune_runs(runs, NOW + 90, 60) == [(NOW + 30, NOW + 40, 5), (NOW + 50, NOW + 50, 4)]
    assert b.prune_runs(runs, NOW + 1000, 60) == []


@pytest.mark.parametrize("window", [0, 5, 300])
def test_a_steady_recommendation_is_one_run_whatever_the_window(window: int) -> None:
    # Ticks 10 s apart: with a window shorter than the tick (or 0 s) the earlier samples leave the window between
    # ticks, yet the value held, so the run goes on (the status must not see a new run every tick).
    runs: list[tuple[float, float, int]] = []
    for i in range(30):
        runs = b.record(runs, NOW + 10 * i, 7, window)
    assert runs == [(NOW, NOW + 290, 7)]
    runs = b.record(runs, NOW + 300, 4, window)  # a new value: a new run; the old one stays while a window sees it
    assert runs == ([(NOW, NOW + 290, 7)] if window > 10 else []) + [(NOW + 300, NOW + 300, 4)]


def test_recording_decides_as_fresh_samples_would() -> None:
    # A window counts a run by its last sample: extending an expired run changes no stabilisation.
    down = rules(("Percent", 100, 15), window=5)
    extended = b.record([(NOW - 100, NOW - 10, 9)], NOW, 9, 5)
    fresh = b.add_recommendation(b.prune_runs([(NOW - 100, NOW - 10, 9)], NOW, 5), NOW, 9)
    for later in (NOW + 3, NOW + 5, NOW + 8):
        assert b.stabilize(extended, later, 9, 2, UP, down) == b.stabilize(fresh, later, 9, 2, UP, down)
