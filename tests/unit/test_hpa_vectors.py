"""The Kubernetes HPA controller's own behaviour-path test vectors, reproduced on :mod:`chanscale.behavior`.

Source: kubernetes/kubernetes pkg/controller/podautoscaler/horizontal_test.go — ``TestNormalizeDesiredReplicas``,
``TestNormalizeDesiredReplicasWithBehavior`` (stabilisation: replicas and the recommendations kept),
``TestScalingWithRules`` and ``TestConvertDesiredReplicasWithRules`` (rate limits and min/max: replicas and the
limiting condition), ``TestCalculateScale{Up,Down}Limit*`` and ``TestStoreScaleEvents`` (the changes counted per
policy period). Vectors are transcribed as data; the controller's reasons map to :class:`LimitKind`.

History: the controller keeps a sample older than both windows only as a slot to overwrite; chanscale prunes it.
So the history compared is the *live* one: the samples inside the longest window, plus this tick's.
"""

from __future__ import annotations

import pytest

from chanscale import behavior as b
from chanscale.limits import LimitKind, kind_of
from chanscale.spec import ScalingPolicy, ScalingRules

pytestmark = pytest.mark.unit

NOW = 100_000.0
M = 60.0

# GenerateHPAScaleUpRules / GenerateHPAScaleDownRules defaults (pkg/apis/autoscaling/v2/defaults.go).
DEFAULT_UP = ScalingRules(0, "Max", (ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 15)), 0.0)
DEFAULT_DOWN = ScalingRules(300, "Max", (ScalingPolicy("Percent", 100, 15),), 0.0)

CONDITION = {
    "DesiredWithinRange": None,
    "ScaleUpLimit": LimitKind.SCALE_UP_POLICY,
    "TooManyReplicas": LimitKind.MAX_REPLICAS,
    "ScaleDownLimit": LimitKind.SCALE_DOWN_POLICY,
    "TooFewReplicas": LimitKind.MIN_REPLICAS,
}


def gen_rules(pods: int, pods_period: int, percent: int, percent_period: int, window: int) -> ScalingRules:
    """generateScalingRules: selectPolicy Max, a Pods and/or a Percent policy."""
    policies = []
    if pods:
        policies.append(ScalingPolicy("Pods", pods, pods_period))
    if percent:
        policies.append(ScalingPolicy("Percent", percent, percent_period))
    return ScalingRules(window, "Max", tuple(policies), 0.0)


def uniform(raw: list[int], period: int, sign: int) -> list[tuple[float, int]]:
    """generateEventsUniformDistribution: event i at the centre of the i-th of len(raw) segments of the period."""
    seg = period / len(raw)
    return [(NOW - int(period - seg * (i + 1) + seg / 2), sign * v) for i, v in enumerate(raw)]


def window_rules(window: int) -> ScalingRules:
    return ScalingRules(window, "Max", (), 0.0)


# (name, recommendations as (value, seconds ago), current, desired, expected, expected live history, up, down)
STABILIZATION = [
    ("empty recommendations for scaling down", [], 100, 5, 5, [5], 0, 0),
    ("simple scale down stabilization", [(4, 2 * M), (5, M)], 100, 3, 5, [4, 5, 3], 0, 180),
    ("simple scale up stabilization", [(4, 2 * M), (5, M)], 1, 7, 4, [4, 5, 7], 300, 0),
    ("no scale down stabilization", [(1, 2 * M), (2, M)], 100, 3, 3, [1, 2, 3], 300, 0),
    ("no scale up stabilization", [(4, 2 * M), (5, M)], 1, 3, 3, [4, 5, 3], 0, 300),
    ("no scale down stabilization, reuse recommendation element", [(10, 10 * M), (9, 9 * M)], 100, 3, 3, [3], 0, 0),
    ("no scale up stabilization, reuse recommendation element", [(10, 10 * M), (9, 9 * M)], 1, 100, 100, [100], 0, 0),
    (
        "scale down stabilization, reuse one of obsolete recommendation element",
        [(10, 10 * M), (4, M), (5, 2 * M), (9, 9 * M)],
        100,
        3,
        5,
        [4, 5, 3],
        0,
        180,
    ),
    (
        "scale up stabilization, reuse one of obsolete recommendation element",
        [(10, 100 * M), (6, M), (5, 2 * M), (9, 3 * M)],
        1,
        100,
        5,
        [6, 5, 9, 100],
        300,
        0,
    ),
    (
        "scale up and down stabilization, do not scale up when prenormalized rec goes down",
        [(2, 100 * M), (3, 3 * M)],
        2,
        1,
        2,
        None,
        300,
        300,
    ),
    (
        "scale up and down stabilization, do not scale down when prenormalized rec goes up",
        [(2, 100 * M), (1, 3 * M)],
        2,
        3,
        2,
        None,
        300,
        300,
    ),
    # TestNormalizeDesiredReplicas (the pre-behaviour path: a 5-minute scale-down window only).
    ("empty log", [], 100, 5, 5, [5], 0, 300),
    ("stabilize", [(4, 2 * M), (5, M)], 100, 3, 5, [4, 5, 3], 0, 300),
    ("no stabilize", [(1, 2 * M), (2, M)], 100, 3, 3, [1, 2, 3], 0, 300),
    ("no stabilize - old recommendations", [(10, 10 * M), (9, 9 * M)], 100, 3, 3, [3], 0, 300),
    ("stabilize - old recommendations", [(10, 10 * M), (4, M), (5, 2 * M), (9, 9 * M)], 100, 3, 5, [4, 5, 3], 0, 300),
]


@pytest.mark.parametrize(
    ("name", "recs", "current", "desired", "expected", "history", "up", "down"),
    STABILIZATION,
    ids=[c[0] for c in STABILIZATION],
)
def test_stabilization_vectors(
    name: str,
    recs: list[tuple[int, float]],
    current: int,
    desired: int,
    expected: int,
    history: list[int] | None,
    up: int,
    down: int,
) -> None:
    runs = sorted((NOW - ago, NOW - ago, value) for value, ago in recs)
    live = b.prune_runs(runs, NOW, max(up, down))
    s = b.stabilize(live, NOW, current, desired, window_rules(up), window_rules(down))
    assert s.replicas == expected
    if history is not None:
        kept = b.add_recommendation(live, NOW, desired)
        assert sorted(r for _, _, r in kept) == sorted(history)


# (name, up events, down events, min, max, up rules, down rules, current, desired, expected, condition)
RATE = [
    ("prenormalized desired replicas within range", [], [], 3, 8, None, None, 5, 7, 7, "DesiredWithinRange"),
    ("prenormalized desired replicas < minReplicas", [], [], 2, 8, None, None, 3, 1, 2, "TooFewReplicas"),
    ("desired within range when minReplicas is 0", [], [], 0, 10, None, None, 1, 0, 0, "DesiredWithinRange"),
    ("maxReplicas < scaleUpLimit", [], [], 1, 10, None, None, 20, 1000, 10, "TooManyReplicas"),
    ("desired more than the maximum", [], [], 100, 150, None, None, 100, 1000, 150, "TooManyReplicas"),
    (
        "scaleUpLimit < maxReplicas with user policies",
        [],
        [],
        1,
        2000,
        gen_rules(0, 0, 1, 60, 0),
        None,
        3,
        1000,
        4,
        "ScaleUpLimit",
    ),
    (
        "scaleDownLimit > minReplicas with user policies",
        [],
        [],
        3,
        2000,
        None,
        gen_rules(20, 60, 0, 0, 0),
        1000,
        3,
        980,
        "ScaleDownLimit",
    ),
    ("scaleUp with default behavior", [], [], 1, 1000, None, None, 10, 50, 20, "ScaleUpLimit"),
    ("scaleUp pods > percent", [], [], 1, 1000, gen_rules(100, 60, 100, 60, 0), None, 10, 500, 110, "ScaleUpLimit"),
    ("scaleUp percent > pods", [], [], 1, 1000, gen_rules(2, 60, 100, 60, 0), None, 10, 500, 20, "ScaleUpLimit"),
    ("scaleUp large pod policy", [], [], 1, 1000, gen_rules(100, 60, 0, 0, 0), None, 10, 50, 50, "DesiredWithinRange"),
    ("scaleUp large percent", [], [], 1, 1000, gen_rules(10000, 60, 0, 0, 0), None, 10, 50, 50, "DesiredWithinRange"),
    ("scaleUp pod policy limitation", [], [], 1, 1000, gen_rules(30, 60, 0, 0, 0), None, 10, 50, 40, "ScaleUpLimit"),
    ("scaleUp percent limitation", [], [], 1, 1000, gen_rules(0, 0, 200, 60, 0), None, 10, 50, 30, "ScaleUpLimit"),
    ("scaleDown percent > pods", [], [], 1, 1000, None, gen_rules(20, 60, 1, 60, 300), 100, 2, 80, "ScaleDownLimit"),
    ("scaleDown pods > percent", [], [], 1, 1000, None, gen_rules(2, 60, 1, 60, 300), 100, 2, 98, "ScaleDownLimit"),
    ("scaleDown min=nil large pods", [], [], 1, 1000, None, gen_rules(100, 60, 0, 0, 300), 10, 0, 1, "TooFewReplicas"),
    ("scaleDown min large pods", [], [], 1, 1000, None, gen_rules(100, 60, 0, 0, 300), 10, 0, 1, "TooFewReplicas"),
    ("scaleDown min large percent", [], [], 5, 1000, None, gen_rules(0, 0, 100, 60, 300), 10, 2, 5, "TooFewReplicas"),
    ("scaleDown pod limitation", [], [], 1, 1000, None, gen_rules(5, 60, 0, 0, 300), 10, 2, 5, "ScaleDownLimit"),
    ("scaleDown percent limit", [], [], 1, 1000, None, gen_rules(0, 0, 50, 60, 300), 10, 5, 5, "DesiredWithinRange"),
    (
        "scaleUp max with large pod policy and events",
        uniform([1, 5, 9], 120, 1),
        [],
        1,
        200,
        gen_rules(300, 60, 0, 0, 0),
        None,
        100,
        500,
        200,
        "TooManyReplicas",
    ),
    (
        "scaleUp max with large percent policy and events",
        uniform([1, 5, 9], 120, 1),
        [],
        1,
        200,
        gen_rules(0, 0, 10000, 60, 0),
        None,
        100,
        500,
        200,
        "TooManyReplicas",
    ),
    (
        "scaleUp currentReplicas limitation with a lot of recent scale up events",
        uniform([1, 5, 9], 120, 1),
        [],
        1,
        1000,
        gen_rules(5, 120, 0, 0, 0),
        None,
        100,
        500,
        100,
        "ScaleUpLimit",
    ),
    (
        "scaleUp pod policy and previous scale up events",
        uniform([1, 5, 9], 120, 1),
        [],
        1,
        1000,
        gen_rules(150, 120, 0, 0, 0),
        None,
        100,
        500,
        235,
        "ScaleUpLimit",
    ),
    (
        "scaleUp percent policy and previous scale up events",
        uniform([1, 5, 9], 120, 1),
        [],
        1,
        1000,
        gen_rules(0, 0, 200, 120, 0),
        None,
        100,
        500,
        255,
        "ScaleUpLimit",
    ),
    (
        "scaleUp percent policy and previous scale up and down events",
        uniform([4], 120, 1),
        uniform([2], 120, -1),
        1,
        1000,
        gen_rules(0, 0, 300, 300, 0),
        None,
        6,
        24,
        16,
        "ScaleUpLimit",
    ),
    (
        "scaleDown default policy and previous events",
        [],
        uniform([1, 5, 9], 120, -1),
        1,
        1000,
        None,
        None,
        10,
        5,
        5,
        "DesiredWithinRange",
    ),
    (
        "scaleDown min=nil large pod policy and previous events",
        [],
        uniform([1, 5, 9], 120, -1),
        1,
        1000,
        None,
        gen_rules(115, 120, 0, 0, 300),
        100,
        0,
        1,
        "TooFewReplicas",
    ),
    (
        "scaleDown min large pod policy and previous events",
        [],
        uniform([1, 5, 9], 120, -1),
        5,
        1000,
        None,
        gen_rules(130, 120, 0, 0, 300),
        100,
        0,
        5,
        "TooFewReplicas",
    ),
    (
        "scaleDown min large percent policy and previous events",
        [],
        uniform([1, 5, 9], 120, -1),
        5,
        1000,
        None,
        gen_rules(0, 0, 100, 120, 300),
        100,
        2,
        5,
        "TooFewReplicas",
    ),
    (
        "scaleDown pod policy limitation and previous events",
        [],
        uniform([1, 5, 9], 120, -1),
        1,
        1000,
        None,
        gen_rules(5, 120, 0, 0, 300),
        100,
        2,
        100,
        "ScaleDownLimit",
    ),
    (
        "scaleDown percent policy limitation and previous events",
        [],
        uniform([2, 4, 6], 120, -1),
        1,
        1000,
        None,
        gen_rules(0, 0, 50, 120, 300),
        100,
        0,
        56,
        "ScaleDownLimit",
    ),
    (
        "scaleDown percent policy and previous scale up and down events",
        uniform([2], 120, 1),
        uniform([4], 120, -1),
        1,
        1000,
        None,
        gen_rules(0, 0, 50, 180, 0),
        10,
        1,
        6,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with previous events preventing further scale down",
        [],
        uniform([10, 10, 10], 120, -1),
        1,
        1000,
        None,
        gen_rules(0, 0, 10, 120, 300),
        100,
        0,
        100,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with previous events still allowing more scale down",
        [],
        uniform([10, 10, 10], 120, -1),
        1,
        1000,
        None,
        gen_rules(0, 0, 1000, 120, 300),
        10,
        5,
        5,
        "DesiredWithinRange",
    ),
    *(
        (
            f"'outdated' events, up, pods {pp}s / percent {cp}",
            uniform([8, 12, 9, 11], 120, 1),
            [],
            1,
            1000,
            gen_rules(1000, pp, cp and 100, 60 if cp else 0, 0),
            None,
            100,
            200,
            200,
            "DesiredWithinRange",
        )
        for pp, cp in ((60, 0), (120, 1), (30, 1))
    ),
    *(
        (
            f"'outdated' events, down, pods {pp}s / percent {cp}",
            [],
            uniform([8, 12, 9, 11], 120, -1),
            1,
            1000,
            None,
            gen_rules(1000, pp, cp and 100, 60 if cp else 0, 300),
            100,
            5,
            5,
            "DesiredWithinRange",
        )
        for pp, cp in ((60, 0), (120, 1), (30, 1))
    ),
]


@pytest.mark.parametrize(
    ("name", "ups", "downs", "lo", "hi", "up", "down", "current", "desired", "expected", "condition"),
    RATE,
    ids=[c[0] for c in RATE],
)
def test_rate_limit_vectors(
    name: str,
    ups: list[tuple[float, int]],
    downs: list[tuple[float, int]],
    lo: int,
    hi: int,
    up: ScalingRules | None,
    down: ScalingRules | None,
    current: int,
    desired: int,
    expected: int,
    condition: str,
) -> None:
    events = sorted(ups + downs)
    lim = b.apply_rate_limits(current, desired, events, NOW, lo, hi, up or DEFAULT_UP, down or DEFAULT_DOWN)
    assert lim.replicas == expected
    assert (kind_of(lim.limited_by) if lim.limited_by else None) == CONDITION[condition]


def test_calculate_limits_with_min_select_policy() -> None:
    """TestCalculateScaleUpLimitWithScalingRules / TestCalculateScaleDownLimitWithBehaviors."""
    rules = ScalingRules(300, "Min", (ScalingPolicy("Pods", 2, 60), ScalingPolicy("Percent", 50, 60)), 0.0)
    assert b.scale_up_limit(1, [], NOW, rules)[0] == 2
    assert b.scale_down_limit(5, [], NOW, rules)[0] == 3


# (name, previous events as (change, seconds ago), rules, expected change counted in 60 s, expected after storing)
STORE = [
    ("empty entries with two-policy-behavior", [], gen_rules(10, 60, 100, 60, 0), 0, {60: 5}),
    ("one outdated entry to be replaced with behavior", [(7, 61)], gen_rules(10, 60, 100, 60, 0), 0, {60: 5}),
    ("one actual entry to be not touched with behavior", [(7, 58)], gen_rules(10, 60, 100, 60, 0), 7, {60: 12}),
    ("two entries, one of them to be replaced", [(7, 61), (6, 59)], gen_rules(10, 60, 0, 0, 0), 6, {60: 11}),
    (
        "replace one entry, use policies with different periods",
        [(8, 29), (6, 59), (7, 61), (9, 61)],
        gen_rules(10, 60, 100, 30, 0),
        14,
        {60: 19, 30: 13},
    ),
    ("two entries, both actual", [(7, 58), (6, 59)], gen_rules(10, 120, 100, 30, 0), 13, {120: 18, 60: 18, 30: 5}),
]


@pytest.mark.parametrize(("name", "prev", "rules", "counted", "after"), STORE, ids=[c[0] for c in STORE])
@pytest.mark.parametrize("sign", [1, -1], ids=["up", "down"])
def test_scale_event_vectors(
    name: str, prev: list[tuple[int, float]], rules: ScalingRules, counted: int, after: dict[int, int], sign: int
) -> None:
    """The changes counted in a 60 s period before a scale of ±5, and in each policy period after it is stored
    (the controller's outdated entries are older than every period, so they never count)."""
    events = [(NOW - ago, sign * change) for change, ago in prev]
    in_period = [abs(d) for t, d in events if t > NOW - 60]
    assert sum(in_period) == counted
    stored = b.prune_events([*events, (NOW, sign * 5)], NOW, max(p.period_seconds for p in rules.policies))
    for period, total in after.items():
        assert sum(abs(d) for t, d in stored if t > NOW - period) == total
