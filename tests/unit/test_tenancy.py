"""The admin's guardrails as pure logic and through a whole tick with fakes (tenancy.py, docs/security.md)."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from test_reconcile import TARGET, Gate, cond, pool, runtime

from chanscale.handlers import target_from_indexes
from chanscale.policy import Verdict
from chanscale.reconcile import Target, tick
from chanscale.spec import PoolSpec
from chanscale.tenancy import (
    Guardrails,
    confinement_problem,
    other_claims,
    other_pools,
    parse_duration,
    parse_profiles,
    peer_claims,
    refusal,
    target_owner,
    target_owners,
)

pytestmark = pytest.mark.unit

PROM = "http://prom:9090"


def spec(**over: Any) -> PoolSpec:
    return PoolSpec.from_dict(pool(**over)["spec"])


# --------------------------------------------------------------------------------------------------- PromQL
@pytest.mark.parametrize(
    "query",
    [
        'sum(chanscale_channel_backlog{namespace="shop", channel="orders"})',
        'sum(rate(x_total{namespace="shop"}[1m])) / sum(rate(y_total{namespace="shop"}[1m]))',
        'max_over_time(x{namespace="shop"}[5m:1m])',
        'x{namespace="shop"} or y{namespace="shop", job="a"}',
        "vector(1)",
        'histogram_quantile(0.99, sum by (le) (rate(h_bucket{namespace="shop"}[1m])))',
    ],
)
def test_confined_queries_pass(query: str) -> None:
    assert confinement_problem(query, "shop") is None


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("sum(chanscale_channel_backlog)", "selector chanscale_channel_backlog is not confined"),
        ('sum(x{namespace="victim"})', "selector x is not confined"),
        ('sum(x{namespace=~"shop|victim"})', "selector x is not confined"),
        ('sum(x{namespace!="shop"})', "selector x is not confined"),
        ('x{namespace="shop"} + on() group_left y', "selector y is not confined"),
        ('rate(x{namespace="shop" or job="a"}[1m])', "selector x is not confined"),
        ('max_over_time(y[5m:1m]) + x{namespace="shop"}', "selector y is not confined"),
        ("sum((", "is not valid PromQL"),
    ],
)
def test_unconfined_or_invalid_queries_are_refused(query: str, problem: str) -> None:
    found = confinement_problem(query, "shop")
    assert found is not None and problem in found


# ------------------------------------------------------------------------------------------------ refusals
def test_a_pool_within_the_guardrails_is_not_refused() -> None:
    assert refusal(Guardrails(), spec(), "ns", {}, PROM) is None


@pytest.mark.parametrize(
    ("guardrails", "over", "annotations", "reason", "field"),
    [
        (Guardrails(), {"policy": {"profile": "loose"}}, {}, "PolicyProfileNotPublished", "spec.policy.profile"),
        (
            Guardrails(),
            {"metrics": {"prometheusAddress": "http://169.254.169.254/latest"}},
            {},
            "PrometheusAddressNotAllowed",
            "spec.metrics.prometheusAddress",
        ),
        (
            Guardrails(),
            {"metrics": {"queries": {"backlog": 'sum(x{namespace="$namespace"})'}}},
            {},
            "CustomQueriesDisabled",
            "spec.metrics.queries",
        ),
        (
            Guardrails(custom_queries=True),
            {"metrics": {"queries": {"backlog": 'sum(x{namespace="other"})'}}},
            {},
            "QueryRefused",
            "spec.metrics.queries.backlog",
        ),
        (Guardrails(), {}, {"chanscale.dev/paused": "yes"}, "InvalidPauseAnnotation", "chanscale.dev/paused"),
        (
            Guardrails(scrape_interval_seconds=30),
            {"metrics": {"rateWindow": "45s"}},
            {},
            "RateWindowTooShort",
            "spec.metrics.rateWindow",
        ),
        (
            Guardrails(),
            {"scaleTargetRef": None, "template": {"spec": {"containers": [{"name": "w", "image": "i"}]}}},
            {},
            "TemplatesDisabled",
            "spec.template",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and v[:1].isupper() else None,
)
def test_refusals_name_the_field_and_the_fix(
    guardrails: Guardrails, over: dict[str, Any], annotations: dict[str, str], reason: str, field: str
) -> None:
    body = pool(**over)
    body["spec"] = {k: v for k, v in body["spec"].items() if v is not None}
    r = refusal(guardrails, PoolSpec.from_dict(body["spec"]), "ns", {"annotations": annotations}, PROM)
    assert r is not None and r.reason == reason and field in r.message


def test_allowed_addresses_and_template_namespaces_pass() -> None:
    g = Guardrails(
        prometheus_allowlist=("http://other:9090/",), scrape_interval_seconds=30, template_namespaces=frozenset({"ns"})
    )
    assert (
        refusal(g, spec(metrics={"prometheusAddress": "http://other:9090", "rateWindow": "1m"}), "ns", {}, PROM) is None
    )
    assert refusal(g, spec(metrics={"prometheusAddress": PROM + "/"}), "ns", {}, PROM) is None
    tpl = pool(template={"spec": {"containers": [{"name": "w", "image": "i"}]}})["spec"]
    del tpl["scaleTargetRef"]
    assert refusal(g, PoolSpec.from_dict(tpl), "ns", {}, PROM) is None
    assert refusal(g, PoolSpec.from_dict(tpl), "elsewhere", {}, PROM) is not None
    assert (
        refusal(
            Guardrails(custom_queries=True),
            spec(metrics={"queries": {"backlog": 'x{namespace="$namespace"}'}}),
            "ns",
            {},
            PROM,
        )
        is None
    )


def test_flags_parse() -> None:
    assert parse_profiles(["strict=acme/strict/decision"]) == {
        "default": "chanscale/main/decision",
        "strict": "acme/strict/decision",
    }
    assert parse_profiles(["default=acme/d"]) == {"default": "acme/d"}
    for bad in ["strict", "Strict=a/b", "s=a b", "s=../x"]:
        with pytest.raises(ValueError):
            parse_profiles([bad])
    assert parse_duration("30s") == 30 and parse_duration("1m") == 60 and parse_duration("500ms") == 0.5


# --------------------------------------------------------------------------------------- through a tick
async def test_a_refused_pool_is_never_scaled_and_says_why_once() -> None:
    rt = runtime()
    body = pool(metrics={"prometheusAddress": "http://10.0.0.1:9090"})
    first = await tick(rt, body, TARGET)
    assert rt.scaler.calls == [] and rt.gate.inputs == []  # type: ignore[attr-defined]
    assert first.status is not None
    assert cond(first.status, "Ready")["reason"] == "PrometheusAddressNotAllowed"
    assert [e[1] for e in first.events] == ["PrometheusAddressNotAllowed"]
    body["status"] = first.status
    rt.clock[0] += 10  # type: ignore[attr-defined]
    second = await tick(rt, body, TARGET)
    assert second.events == [] and rt.scaler.calls == []  # type: ignore[attr-defined]


async def test_the_admins_profile_path_is_asked_not_the_pools() -> None:
    seen: list[str] = []

    class PathGate(Gate):
        async def evaluate(self, path: str, input: dict[str, Any], *, timeout: float = 2.0) -> Verdict:
            seen.append(path)
            return await super().evaluate(path, input, timeout=timeout)

    rt = runtime(gate=PathGate())
    rt.config.guardrails = Guardrails(profiles=parse_profiles(["strict=acme/strict/decision"]))
    res = await tick(rt, pool(policy={"profile": "strict"}), TARGET)
    assert seen == ["acme/strict/decision"]
    assert res.status is not None and res.status["lastDecision"]["policy"]["profile"] == "strict"


# ------------------------------------------------------------------------------- cross-pool views
POOLS = [
    {"name": "a", "target": "web", "created": "2026-01-01T00:00:00Z", "replicas": 3, "desiredReplicas": 5},
    {"name": "b", "target": "web", "created": "2026-01-02T00:00:00Z", "replicas": 9, "desiredReplicas": 9},
    {"name": "c", "target": "api", "created": "2026-01-03T00:00:00Z", "replicas": None, "desiredReplicas": None},
]


def test_the_oldest_pool_owns_a_target() -> None:
    assert target_owner(POOLS, "web") == "a"
    assert target_owner(POOLS, "api") == "c"
    assert target_owner(POOLS, "nothing") is None


def test_other_pools_take_the_largest_known_claim() -> None:
    others = other_pools(peer_claims(POOLS, {"web": 4, "api": 2}), {"c": 6}, exclude="x")
    # b lost "web" to a, so it is not counted twice; c's own recent write (6) beats the index (2).
    assert others == [
        {"name": "a", "replicas": 4, "desiredReplicas": 5},
        {"name": "c", "replicas": 6, "desiredReplicas": 0},
    ]
    assert [p["name"] for p in other_pools(peer_claims(POOLS, {}), {}, exclude="a")] == ["c"]


def test_second_pool_on_a_target_is_a_conflict() -> None:
    index = {"ns": POOLS}
    deployments = {("ns", "web"): [{"replicas": 4, "ready": 4}]}
    owner = target_from_indexes("ns", "web", deployments, {}, {}, index, pool="a")
    second = target_from_indexes("ns", "web", deployments, {}, {}, index, pool="b")
    assert owner.conflict is None
    assert second.conflict is not None and "WorkerPool a" in second.conflict
    assert owner.peers is not None and owner.peers()[1] == {"web": 4}


def test_target_owners_in_one_pass_match_target_owner() -> None:
    pools = [*POOLS, {"name": "d", "target": "web", "created": "2025-12-31T00:00:00Z", "mode": "DryRun"}]
    assert target_owners(pools) == {t: target_owner(pools, t) for t in ("web", "api")}


def test_conflict_from_the_claims_index_matches_the_namespace_scan() -> None:
    index = {"ns": POOLS}
    claims: dict[tuple[str, str], list[dict]] = {}
    for p in POOLS:
        claims.setdefault(("ns", p["target"]), []).append(p)
    deployments = {("ns", "web"): [{"replicas": 4, "ready": 4}]}
    for who in ("a", "b"):
        scanned = target_from_indexes("ns", "web", deployments, {}, {}, index, pool=who)
        indexed = target_from_indexes("ns", "web", deployments, {}, {}, index, pool=who, claims=claims)
        assert scanned.conflict == indexed.conflict


def test_paused_scaledobject_is_a_conflict() -> None:
    deployments = {("ns", "web"): [{"replicas": 4, "ready": 4}]}
    so = {("ns", "Deployment", "web"): [("web-so", True)]}
    t = target_from_indexes("ns", "web", deployments, {}, so, {}, pool="a")
    assert t.conflict is not None and "KEDA ScaledObject web-so (paused" in t.conflict


async def test_budget_peers_come_from_the_index_on_the_first_tick() -> None:
    """Right after a restart nothing is in memory: the other pools still reach the policy input."""
    rt = runtime()
    pools = [dict(POOLS[2], name="other", target="other-worker", replicas=7, desiredReplicas=7)]
    t = Target(name="worker", exists=True, replicas=4, ready=4, peers=lambda: (pools, {"other-worker": 7}))
    await tick(rt, pool(), t)
    assert rt.gate.inputs[0]["namespace"]["pools"] == [  # type: ignore[attr-defined]
        {"name": "other", "replicas": 7, "desiredReplicas": 7}
    ]


async def _two_pools_race(
    claimed: Callable[[dict[str, Any]], int], peer_list: Callable[[], Awaitable[bool]] | None = None
) -> tuple[int, int]:
    """Two pools of one namespace tick together under a budget of 10 that the gate enforces from the other pools'
    claims (``claimed`` reads them from the policy input): the replicas both end with, and the index reads."""
    budget, reads = 10, [0]
    index: list[dict[str, Any]] = [
        {"name": n, "target": f"w-{n}", "created": n, "replicas": 1, "desiredReplicas": 1} for n in ("p1", "p2")
    ]

    class BudgetGate(Gate):
        async def evaluate(self, path: str, input: dict[str, Any], *, timeout: float = 2.0) -> Verdict:
            others = claimed(input)
            await asyncio.sleep(0.01)  # let the other pool's tick run here if it could
            allowed = max(min(input["replicas"]["recommended"], budget - others), input["replicas"]["current"])
            return Verdict(allow=True, replicas=allowed, reasons=("budget",))

    rt = runtime(gate=BudgetGate())
    rt.peer_list = peer_list

    def peers() -> tuple[list[dict[str, Any]], dict[str, int]]:
        reads[0] += 1
        return index, {}

    def target(n: str) -> Target:
        return Target(name=f"w-{n}", exists=True, replicas=1, ready=1, peers=peers)

    def body(n: str) -> dict[str, Any]:
        b = pool(scaleTargetRef={"name": f"w-{n}"})
        b["metadata"]["name"] = n
        return b

    await asyncio.gather(tick(rt, body("p1"), target("p1")), tick(rt, body("p2"), target("p2")))
    final = {"w-p1": 1, "w-p2": 1} | {name: r for _, name, r in rt.scaler.calls}  # type: ignore[attr-defined]
    return sum(final.values()), reads[0]


async def test_check_and_scale_is_serialised_per_namespace() -> None:
    """Two pools ticking together: the second pool's policy input already sees the first one's scale write."""
    total, _ = await _two_pools_race(
        lambda input: sum(max(p["replicas"], p["desiredReplicas"]) for p in input["namespace"]["pools"])
    )
    assert total == 10  # the first took its share, the second only what was left


def _listed_one_by_one(
    pools: list[dict[str, Any]], deployments: dict[str, int], recent: dict[str, int], exclude: str
) -> list[dict[str, Any]]:
    """The budget's per-pool rule written out pool by pool (as it was before peer_claims): the owners of their
    targets but ``exclude``, by name, each at the largest of its Deployment, our recent write and its status."""
    owners = target_owners(pools)
    return [
        {
            "name": p["name"],
            "replicas": max(deployments.get(p["target"], 0), recent.get(p["name"], 0), p.get("replicas") or 0),
            "desiredReplicas": p.get("desiredReplicas") or 0,
        }
        for p in sorted(pools, key=lambda p: p["name"])
        if p["name"] != exclude and owners.get(p["target"]) == p["name"]
    ]


def test_the_summary_matches_the_list_whatever_the_recent_writes() -> None:
    """other_claims (O(recent writes)) sums exactly what other_pools lists, for every pool left out."""
    import random

    rng = random.Random(7)
    for _ in range(200):
        pools = [
            {
                "name": f"p{i}",
                "target": f"t{rng.randrange(6)}",
                "created": f"2026-01-0{rng.randrange(1, 9)}",
                "mode": rng.choice(["Active", "Active", "DryRun"]),
                "replicas": rng.choice([None, 0, 1, 3, 7]),
                "desiredReplicas": rng.choice([None, 0, 2, 9]),
            }
            for i in range(rng.randrange(0, 9))
        ]
        deployments = {f"t{j}": rng.randrange(0, 10) for j in range(6) if rng.random() < 0.7}
        recent = {f"p{i}": rng.randrange(0, 12) for i in range(10) if rng.random() < 0.3}
        claims = peer_claims(pools, deployments)
        for exclude in ["p0", "p3", "nobody"]:
            listed = other_pools(claims, recent, exclude)
            assert other_claims(claims, recent, exclude) == {
                "pools": len(listed),
                "replicas": sum(p["replicas"] for p in listed),
                "claimed": sum(max(p["replicas"], p["desiredReplicas"]) for p in listed),
            }
            assert listed == _listed_one_by_one(pools, deployments, recent, exclude)


async def test_check_and_scale_is_serialised_per_namespace_with_the_summary_only() -> None:
    """As above with the policy input's summary only (no per-pool list) and the namespace's claims cached: the
    second pool's check still counts the first one's reservation, and the index is read once."""

    def claimed(input: dict[str, Any]) -> int:
        assert "pools" not in input["namespace"]
        return int(input["namespace"]["others"]["claimed"])

    async def summary_only() -> bool:
        return False

    total, reads = await _two_pools_race(claimed, summary_only)
    assert total == 10
    assert reads == 1
