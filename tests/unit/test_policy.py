"""The policy gate with fakes: verdict parsing, failure policy, timeouts and errors, the input document."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from chanscale import policy
from chanscale.policy import (
    AllowAllGate,
    LocalOpaGate,
    OpaGate,
    PolicyUnavailable,
    Verdict,
    build_input,
    default_policies_dir,
    make_gate,
    verdict_from_result,
    verdict_on_failure,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
INPUT_SCHEMA = json.loads((REPO / "policies" / "input.schema.json").read_text())
DECISION_SCHEMA = json.loads((REPO / "policies" / "decision.schema.json").read_text())


def validate_input(doc: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(INPUT_SCHEMA, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER).validate(doc)


# ------------------------------------------------------------------------------------------- failure policy
def test_hold_keeps_current_and_says_why() -> None:
    v = verdict_on_failure("Hold", current=3, proposed=9, min_replicas=1, max_replicas=20, error="boom")
    assert v == Verdict(
        allow=False,
        replicas=3,
        reasons=("policy unavailable; failurePolicy Hold: keeping 3 replicas",),
        source="failure-policy",
        error="boom",
    )


def test_allow_passes_the_proposal_clamped_to_min_max() -> None:
    v = verdict_on_failure("Allow", current=3, proposed=40, min_replicas=1, max_replicas=20, error="down")
    assert (v.allow, v.replicas, v.source, v.error) == (True, 20, "failure-policy", "down")
    assert v.reasons == ("policy unavailable; failurePolicy Allow: 3 -> 20 within min/max",)
    low = verdict_on_failure("Allow", current=3, proposed=0, min_replicas=2, max_replicas=20, error="down")
    assert low.replicas == 2


def test_unknown_failure_policy_is_hold() -> None:
    v = verdict_on_failure("Maybe", current=3, proposed=9, min_replicas=1, max_replicas=20, error="x")
    assert (v.allow, v.replicas) == (False, 3)
    assert "unknown failurePolicy 'Maybe' treated as Hold" in v.reasons[0]


async def test_allow_all_gate() -> None:
    gate = AllowAllGate()
    v = await gate.evaluate("chanscale/main/decision", {})
    assert (v.allow, v.replicas, v.reasons, v.source) == (True, None, ("policy gate disabled",), "disabled")
    await gate.close()


# ------------------------------------------------------------------------------------------- decision parsing
def test_undefined_decision_is_a_deny_with_error() -> None:
    v = verdict_from_result("team/scaling/decision", {"decision_id": "x"}, 0.01)
    assert not v.allow and v.replicas is None
    assert v.reasons == ("policy decision data.team.scaling.decision is undefined for this input: denied",)
    assert v.error is not None and v.error.startswith("undefined decision")
    assert v.latency_seconds == 0.01


def test_full_decision() -> None:
    result = {
        "allow": True,
        "replicas": 7,
        "reasons": ["step: at most +3"],
        "escalated": True,
        "labels": {"chanscale.dev/escalated": "true"},
        "limitedBy": ["step"],
    }
    jsonschema.validate(result, DECISION_SCHEMA)
    v = verdict_from_result("chanscale/main/decision", {"result": result})
    assert v == Verdict(
        allow=True,
        replicas=7,
        reasons=("step: at most +3",),
        escalated=True,
        limited_by=("step",),
        labels={"chanscale.dev/escalated": "true"},
    )


@pytest.mark.parametrize("result", [True, False, 1, "allow", None])
def test_only_a_decision_object_is_a_verdict(result: Any) -> None:
    """A path naming a boolean rule (e.g. chanscale/lib/scaling_up) must not wave a change through."""
    v = verdict_from_result("chanscale/lib/scaling_up", {"result": result})
    assert v.allow is False and v.replicas is None
    assert v.reasons == ("policy decision data.chanscale.lib.scaling_up is malformed: denied",)
    assert v.error is not None and "expected a decision object" in v.error


def test_missing_reasons_still_explain() -> None:
    v = verdict_from_result("a/d", {"result": {"allow": True}})
    assert (v.allow, v.replicas, v.reasons) == (True, None, ("data.a.d allowed (no reason given)",))
    assert verdict_from_result("a/d", {"result": {"allow": False, "reasons": "one"}}).reasons == ("one",)
    assert verdict_from_result("a/d", {"result": {"allow": True, "replicas": 4.0}}).replicas == 4


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        ([1, 2], "expected a decision object"),
        ({"allow": "yes"}, "'allow' must be a boolean"),
        ({"allow": True, "replicas": -1}, "'replicas' must be"),
        ({"allow": True, "replicas": 2.5}, "'replicas' must be"),
        ({"allow": True, "replicas": True}, "'replicas' must be"),
        ({"allow": True, "reasons": 3}, "'reasons' must be"),
        ({"allow": True, "escalated": "no"}, "'escalated' must be"),
    ],
)
def test_malformed_decision_is_a_deny(result: Any, problem: str) -> None:
    v = verdict_from_result("p/d", {"result": result})
    assert not v.allow
    assert v.error is not None and problem in v.error


# ------------------------------------------------------------------------------------------- OpaGate with a fake client
class FakeClient:
    def __init__(self, behaviour: Any) -> None:
        self.behaviour = behaviour
        self.calls: list[tuple[dict[str, Any], str]] = []
        self.closed = False

    async def query_rule(self, input_data: dict[str, Any], package_path: str) -> Any:
        self.calls.append((input_data, package_path))
        if isinstance(self.behaviour, BaseException):
            raise self.behaviour
        if self.behaviour == "slow":
            await asyncio.sleep(10)
        return self.behaviour

    async def close_connection(self) -> None:
        self.closed = True


def fake_gate(behaviour: Any) -> tuple[OpaGate, FakeClient]:
    gate = OpaGate("http://127.0.0.1:8181")
    client = FakeClient(behaviour)
    gate._client = client
    gate._opened = True
    return gate, client


async def test_opa_gate_asks_the_path_and_parses() -> None:
    gate, client = fake_gate({"result": {"allow": True, "replicas": 5, "reasons": ["ok"]}})
    v = await gate.evaluate("chanscale/main/decision", {"x": 1})
    assert (v.allow, v.replicas, v.reasons, v.source) == (True, 5, ("ok",), "opa")
    assert client.calls == [({"x": 1}, "chanscale/main/decision")]
    assert v.latency_seconds >= 0
    await gate.close()
    assert client.closed


async def test_opa_gate_undefined_is_deny() -> None:
    gate, _ = fake_gate({})
    v = await gate.evaluate("chanscale/main/decision", {})
    assert not v.allow and v.error is not None and "undefined" in v.error


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        (aiohttp.ClientConnectionError("refused"), "unreachable after 2 retries"),
        (OSError("no route"), "unreachable"),
        ("slow", "did not answer within 0.05s"),
        (
            aiohttp.ClientResponseError(request_info=None, history=(), status=500, message="Internal"),  # type: ignore[arg-type]
            "answered HTTP 500",
        ),
        (["not", "an", "object"], "non-object body"),
    ],
)
async def test_opa_gate_failures_raise_policy_unavailable(behaviour: Any, message: str) -> None:
    gate, _ = fake_gate(behaviour)
    with pytest.raises(PolicyUnavailable, match=message):
        await gate.evaluate("chanscale/main/decision", {}, timeout=0.05)


async def test_opa_gate_rejects_a_bad_path_without_asking() -> None:
    gate, client = fake_gate({"result": True})
    v = await gate.evaluate("../etc/passwd", {})
    assert not v.allow and client.calls == []


@pytest.mark.parametrize("url", ["opa:8181", "ftp://opa:21", "http://opa:8181/v1/data"])
def test_opa_gate_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ValueError, match="OPA URL"):
        OpaGate(url)


def test_opa_gate_url_defaults() -> None:
    assert policy._parse_url("https://opa.example") == ("opa.example", 443, True)
    assert policy._parse_url("http://127.0.0.1:8181/") == ("127.0.0.1", 8181, False)


# ----------------------------------------------------------------------------- LocalOpaGate without a binary
async def test_local_gate_without_binary_raises_unavailable_and_backs_off(tmp_path: Path) -> None:
    gate = LocalOpaGate([REPO / "policies"], binary=tmp_path / "no-such-opa")
    with pytest.raises(PolicyUnavailable, match="could not start"):
        await gate.evaluate("chanscale/main/decision", {})
    with pytest.raises(PolicyUnavailable, match="retrying soon"):
        await gate.evaluate("chanscale/main/decision", {})
    await gate.close()


async def test_local_gate_missing_binary_message_says_make_tools(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("chanscale.local.opa._REPO_ROOT", tmp_path)
    monkeypatch.delenv("CHANSCALE_OPA_BIN", raising=False)
    gate = LocalOpaGate([REPO / "policies"])
    with pytest.raises(PolicyUnavailable, match="make tools"):
        await gate.evaluate("chanscale/main/decision", {})
    await gate.close()


# ------------------------------------------------------------------------------------------- wiring
def test_make_gate() -> None:
    assert isinstance(make_gate("none"), AllowAllGate)
    assert isinstance(make_gate(None), AllowAllGate)
    assert isinstance(make_gate("local"), LocalOpaGate)
    gate = make_gate("http://127.0.0.1:8181")
    assert isinstance(gate, OpaGate) and gate.url == "http://127.0.0.1:8181"
    with pytest.raises(ValueError, match="--opa must be"):
        make_gate("sometimes")


def test_default_policies_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CHANSCALE_POLICIES", raising=False)
    assert default_policies_dir() == REPO / "policies"
    monkeypatch.setenv("CHANSCALE_POLICIES", str(tmp_path))
    assert default_policies_dir() == tmp_path


# ------------------------------------------------------------------------------------------- input document
POOL = {
    "apiVersion": "chanscale.dev/v1alpha1",
    "kind": "WorkerPool",
    "metadata": {
        "namespace": "shop",
        "name": "orders",
        "labels": {"team": "checkout"},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}", "owner": "me"},
        "uid": "not-included",
    },
    "spec": {
        "channel": "orders",
        "maxReplicas": 50,
        "slo": {"p99LatencySeconds": 0.25, "maxErrorRate": 0.05},
        "policy": {"profile": "default", "parameters": {"step": {"maxUp": 4}}},
    },
    "status": {"replicas": 3},
}


def built(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "pool": POOL,
        "current_replicas": 3,
        "recommended_replicas": 9,
        "min_replicas": 1,
        "max_replicas": 50,
        "signals": {
            "backlog": 1200.0,
            "arrivalRate": 200.0,
            "serviceRate": 20.0,
            "processedRate": 60.0,
            "errorRate": float("nan"),
            "p99LatencySeconds": None,
            "ageSeconds": 1.5,
            "busyRate": 3.0,  # not part of the contract: left out
        },
        "history": {"lastScaleTime": "2026-11-23T11:00:00Z", "lastScaleDirection": "up", "secondsSinceLastScale": 60.0},
        "now": datetime(2026, 11, 23, 12, 0, 0, tzinfo=timezone.utc),
        "namespace_pools": [
            {"name": "payments", "replicas": 4, "desiredReplicas": 6, "extra": 1},
            {"name": "orders", "replicas": 3, "desiredReplicas": 9},
        ],
    }
    args.update(overrides)
    return build_input(**args)


def test_input_matches_schema_and_contract() -> None:
    doc = built()
    validate_input(doc)
    assert doc["apiVersion"] == "policy.chanscale.dev/v1"
    assert doc["pool"]["metadata"] == {
        "namespace": "shop",
        "name": "orders",
        "labels": {"team": "checkout"},
        "annotations": {"owner": "me"},
    }
    assert doc["replicas"] == {"current": 3, "recommended": 9, "min": 1, "max": 50}
    assert doc["direction"] == "up"
    assert doc["signals"] == {
        "backlog": 1200.0,
        "arrivalRate": 200.0,
        "serviceRate": 20.0,
        "processedRate": 60.0,
        "errorRate": None,
        "p99LatencySeconds": None,
        "ageSeconds": 1.5,
    }
    assert doc["now"] == "2026-11-23T12:00:00Z"
    assert doc["namespace"] == {
        "name": "shop",
        "others": {"pools": 1, "replicas": 4, "claimed": 6},
        "pools": [{"name": "payments", "replicas": 4, "desiredReplicas": 6}],
    }
    json.dumps(doc, allow_nan=False)  # plain JSON, no NaN


def test_the_pool_list_goes_only_when_asked_for() -> None:
    """The summary always goes; the per-pool list only when a policy reads it (chanscale.peerlist)."""
    doc = built(
        peer_list=False,
        namespace_pools=[
            {"name": "a", "replicas": 4, "desiredReplicas": 6},
            {"name": "b", "replicas": 5, "desiredReplicas": None},
            {"name": "c", "replicas": None, "desiredReplicas": 2},
            {"name": "orders", "replicas": 99, "desiredReplicas": 99},  # this pool: never counted
        ],
    )
    validate_input(doc)
    assert doc["namespace"] == {"name": "shop", "others": {"pools": 3, "replicas": 9, "claimed": 13}}


def test_input_with_nothing_known() -> None:
    doc = built(
        recommended_replicas=3,
        signals={},
        history={},
        now=datetime(2026, 11, 23, 13, 0, 0),  # naive = UTC
        pool={"metadata": {"namespace": "n", "name": "p"}, "spec": {}},
        namespace_pools=[{"name": "q", "replicas": None, "desiredReplicas": float("inf")}],
    )
    validate_input(doc)
    assert doc["direction"] == "none"
    assert doc["now"] == "2026-11-23T13:00:00Z"
    assert set(doc["signals"].values()) == {None}
    assert doc["history"] == {"lastScaleTime": None, "lastScaleDirection": None, "secondsSinceLastScale": None}
    assert doc["namespace"]["pools"] == [{"name": "q", "replicas": None, "desiredReplicas": None}]
    assert doc["namespace"]["others"] == {"pools": 1, "replicas": 0, "claimed": 0}


def test_input_history_datetime_and_down() -> None:
    doc = built(
        recommended_replicas=1,
        history={
            "lastScaleTime": datetime(2026, 11, 23, 11, 0, tzinfo=timezone.utc),
            "lastScaleDirection": "sideways",
            "secondsSinceLastScale": -5,
        },
    )
    validate_input(doc)
    assert doc["direction"] == "down"
    assert doc["history"] == {
        "lastScaleTime": "2026-11-23T11:00:00Z",
        "lastScaleDirection": None,
        "secondsSinceLastScale": None,
    }


def test_schema_rejects_what_the_policies_cannot_read() -> None:
    doc = built()
    doc["signals"]["backlog"] = "lots"
    with pytest.raises(jsonschema.ValidationError):
        validate_input(doc)
