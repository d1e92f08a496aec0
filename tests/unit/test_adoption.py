"""Living beside other autoscalers: shadow mode, paused-replicas, the Active condition, explain --compare."""

from __future__ import annotations

from typing import Any

import pytest
from test_reconcile import TARGET, Prom, cond, pool, runtime

from chanscale.adoption import activity, compare_text, shadow_status
from chanscale.decision import Observation
from chanscale.reconcile import Target, tick
from chanscale.tenancy import paused_replicas_problem, target_owner

pytestmark = pytest.mark.unit

HPA = "HorizontalPodAutoscaler web"


def with_annotation(body: dict[str, Any], value: str) -> dict[str, Any]:
    body["metadata"]["annotations"] = {"chanscale.dev/paused-replicas": value}
    return body


async def test_dry_run_pool_shadows_an_hpa_and_records_change_points() -> None:
    rt = runtime()
    body = pool(mode="DryRun")
    res = await tick(rt, body, Target(name="worker", exists=True, replicas=4, ready=4, conflict=HPA))
    st = res.status
    assert st is not None and rt.scaler.calls == []  # type: ignore[attr-defined]
    assert cond(st, "Ready")["status"] == "True"
    assert cond(st, "Shadowing")["status"] == "True" and HPA in cond(st, "Shadowing")["message"]
    assert st["shadow"]["of"] == HPA and [s[1:] for s in st["shadow"]["samples"]] == [[4, 12]]
    # The HPA moves the Deployment to 9: one more change point; an unchanged tick adds none.
    body["status"] = st
    rt.clock[0] += 20  # type: ignore[attr-defined]
    st = (await tick(rt, body, Target(name="worker", exists=True, replicas=9, ready=9, conflict=HPA))).status or st
    assert [s[1:] for s in st["shadow"]["samples"]] == [[4, 12], [9, 12]]
    assert rt.scaler.calls == []  # type: ignore[attr-defined]


async def test_active_pool_beside_an_hpa_is_still_refused() -> None:
    res = await tick(runtime(), pool(), Target(name="worker", exists=True, replicas=4, ready=4, conflict=HPA))
    assert res.status is not None and cond(res.status, "Ready")["reason"] == "TargetConflict"
    assert "mode: DryRun" in cond(res.status, "Ready")["message"]


async def test_paused_replicas_scales_to_n_and_holds() -> None:
    rt = runtime()
    res = await tick(rt, with_annotation(pool(), "2"), TARGET)  # the model wants 12
    assert rt.scaler.calls == [("ns", "worker", 2)]  # type: ignore[attr-defined]
    st = res.status
    assert st is not None and cond(st, "Paused")["status"] == "True" and "held at 2" in cond(st, "Paused")["message"]
    assert st["lastDecision"]["recommendation"] == 12 and st["lastDecision"]["to"] == 2
    rt.clock[0] += 20  # type: ignore[attr-defined]
    body = with_annotation(pool(), "2")
    body["status"] = st
    await tick(rt, body, Target(name="worker", exists=True, replicas=2, ready=2))
    assert rt.scaler.calls == [("ns", "worker", 2)], "held: no further write"  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["-1", "two", "10001", ""])
async def test_invalid_paused_replicas_is_refused_naming_the_annotation(value: str) -> None:
    rt = runtime()
    res = await tick(rt, with_annotation(pool(), value), TARGET)
    assert res.status is not None and cond(res.status, "Ready")["reason"] == "InvalidPauseAnnotation"
    assert "chanscale.dev/paused-replicas" in (
        paused_replicas_problem({"annotations": {"chanscale.dev/paused-replicas": value}}) or ""
    )
    assert rt.scaler.calls == []  # type: ignore[attr-defined]


async def test_active_condition_follows_the_channel() -> None:
    prom = Prom()
    res = await tick(runtime(prom=prom), pool(), TARGET)
    assert res.status is not None and cond(res.status, "Active")["reason"] == "ChannelActive"
    assert activity(Observation(now=0, current_replicas=1, backlog=0, arrival_rate=0), True)[1] == "ChannelIdle"
    assert activity(Observation(now=0, current_replicas=1), False)[0] == "Unknown"


def test_dry_run_pools_own_no_target() -> None:
    pools = [
        {"name": "shadow", "target": "web", "created": "2026-01-01", "mode": "DryRun"},
        {"name": "real", "target": "web", "created": "2026-02-01", "mode": "Active"},
    ]
    assert target_owner(pools, "web") == "real"
    assert target_owner(pools[:1], "web") is None


def test_compare_text_and_bounded_samples() -> None:
    shadow: dict[str, Any] = {}
    for i in range(40):
        shadow = shadow_status(shadow, HPA, float(i), actual=3 + i % 2, would=5, wall=1_800_000_000 + 60 * i)
    assert len(shadow["samples"]) == 30
    text = compare_text({"shadow": shadow})
    assert text.startswith(f"Shadowing {HPA}") and "chanscale" in text and "+2" in text
    assert "over 1740 s" in text
    assert "no shadow record" in compare_text({})
