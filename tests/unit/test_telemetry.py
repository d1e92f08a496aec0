"""The operator's own per-pool metrics: published on change, dropped with the pool."""

import pytest

from chanscale import telemetry

pytestmark = pytest.mark.unit


def _value(gauge: object, ns: str, pool: str) -> float | None:
    return telemetry.REGISTRY.get_sample_value(
        gauge._name,
        {"namespace": ns, "pool": pool},  # type: ignore[attr-defined]
    )


def test_a_pools_gauges_are_set_on_change_and_forgotten_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    sets: list[float] = []
    gauge = telemetry.REPLICAS
    real = type(gauge.labels("t", "p")).set
    monkeypatch.setattr(type(gauge.labels("t", "p")), "set", lambda self, v: (sets.append(v), real(self, v)))
    telemetry.publish_pool("t", "p", (3, 4, 4, 1, 1))
    assert _value(telemetry.REPLICAS, "t", "p") == 3 and _value(telemetry.DESIRED, "t", "p") == 4
    assert len(sets) == 5
    telemetry.publish_pool("t", "p", (3, 4, 4, 1, 1))  # a quiet evaluation: nothing to set
    assert len(sets) == 5
    telemetry.publish_pool("t", "p", (4, 4, 4, 1, 1))
    assert len(sets) == 10 and _value(telemetry.REPLICAS, "t", "p") == 4
    telemetry.forget_pool("t", "p")
    assert _value(telemetry.REPLICAS, "t", "p") is None
    telemetry.publish_pool("t", "p", (4, 4, 4, 1, 1))  # published again after being forgotten, not skipped
    assert _value(telemetry.REPLICAS, "t", "p") == 4
    telemetry.forget_pool("t", "p")
