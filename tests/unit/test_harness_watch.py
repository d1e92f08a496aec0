"""ObjectWatch's counts, on versions as a watch delivers them (no API server): what the fault tests bound."""

import pytest

from chanscale.local.harness import ObjectWatch

pytestmark = pytest.mark.unit


def status(**conditions: str) -> dict[str, object]:
    """{"PolicyAllowed": "False/PolicyUnavailable"} -> a status with that condition."""
    rows = [(t, *s.split("/")) for t, s in conditions.items()]
    return {"conditions": [{"type": t, "status": st, "reason": r} for t, st, r in rows]}


def watch(*versions: tuple[float, dict[str, object]]) -> ObjectWatch:
    w = ObjectWatch(None, "workerpool", "ns", "orders")
    w.versions = [(t, {"metadata": {"resourceVersion": str(i)}, "status": st}) for i, (t, st) in enumerate(versions)]
    return w


HEALTHY = status(PolicyAllowed="True/Allowed")
DOWN = status(PolicyAllowed="False/PolicyUnavailable")


def is_down(wp: dict[str, object]) -> bool:
    return wp.get("status") == DOWN


def test_writes_are_counted_from_the_first_version_that_shows_the_outage() -> None:
    w = watch((1.0, HEALTHY), (2.0, {**HEALTHY, "replicas": 2}), (3.0, DOWN), (4.0, DOWN), (5.0, {**DOWN, "x": 1}))
    assert w.first_seen(is_down) == 3.0
    assert w.first_seen(is_down, since=3.5) == 4.0
    assert w.first_seen(lambda wp: False) is None
    assert w.status_writes(since=0.0) == 3  # the same status again (4.0) is not a write
    assert w.status_writes(since=3.0) == 2


def test_status_changes_name_the_moved_conditions_and_fields() -> None:
    w = watch((1.0, HEALTHY), (3.0, DOWN), (5.0, {**DOWN, "replicas": 1}))
    assert w.status_changes(since=3.0) == ["+0.0s PolicyAllowed=False/PolicyUnavailable []", "+2.0s - [replicas]"]
