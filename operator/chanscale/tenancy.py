"""Guardrails for a cluster shared by many teams: what a WorkerPool's author may choose, and what only the admin may.

The threat model is in docs/security.md. In short, a tenant who can edit WorkerPools in its own namespace must not
be able to loosen the admin's policy, read other teams' metrics, make the operator send requests to arbitrary
addresses, or spend another pool's share of a namespace budget. Pure logic here (no kopf, no I/O):

* :class:`Guardrails` — the admin's choices, from operator flags (Helm values): published policy profiles, the
  failure policy, the Prometheus address allowlist, whether custom PromQL is allowed, the scrape interval, whether
  template pools may create Deployments.
* :func:`refusal` — the problems only the operator can see in a pool (a profile that is not published, an address
  off the allowlist, a query reaching outside the namespace, a non-boolean pause annotation, a rate window too short
  for the scrape interval). A refused pool is never scaled; its condition names the field and the fix.
* :func:`confinement_problem` — parses PromQL with a real parser (``promql-parser``) and requires every selector to
  match ``namespace="<the pool's namespace>"`` exactly.
* :func:`peer_claims` / :func:`other_claims` / :func:`target_owner` — cross-pool views built from kopf's index of
  all WorkerPools, so a namespace budget is right from the first tick after a restart and two pools never scale one
  Deployment.
* :class:`NamespaceLocks` — check-and-scale serialised per namespace, so two pools cannot spend the same headroom.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import PAUSED_ANNOTATION, PAUSED_REPLICAS_ANNOTATION
from .spec import PROFILE_RE, PoolSpec

DEFAULT_PROFILE = "default"
DEFAULT_PROFILE_PATH = "chanscale/main/decision"
_DURATION_RE = re.compile(r"^([1-9][0-9]*)(ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Guardrails:
    """The admin's choices (operator flags / Helm values); pools cannot change any of them."""

    profiles: Mapping[str, str] = field(default_factory=lambda: {DEFAULT_PROFILE: DEFAULT_PROFILE_PATH})
    failure_policy: str = "Hold"  # Hold | Allow: what a pool gets when OPA cannot answer
    prometheus_allowlist: tuple[str, ...] = ()  # besides the operator's --prometheus-url
    custom_queries: bool = False
    scrape_interval_seconds: float = 0.0  # 0: unknown, the rate-window check is off
    template_namespaces: frozenset[str] = frozenset()  # where spec.template pools may own a Deployment; "*": all
    scale_kinds: frozenset[str] = frozenset()  # "Kind.group" targets besides Deployments (--scale-kind)

    def policy_path(self, profile: str) -> str | None:
        return self.profiles.get(profile)

    def allows_scale_kind(self, spec: PoolSpec) -> bool:
        return spec.scales_deployment or spec.scale_kind_key in self.scale_kinds

    def allows_templates(self, namespace: str) -> bool:
        return "*" in self.template_namespaces or namespace in self.template_namespaces


@dataclass(frozen=True)
class Refusal:
    """Why a pool is not scaled at all: a condition reason (CamelCase) and a message naming the field and the fix."""

    reason: str
    message: str


def parse_duration(text: str) -> float:
    """``30s``/``1m``/``1h``/``500ms`` -> seconds. Raises ValueError."""
    m = _DURATION_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a duration like 15s, 1m or 1h: {text!r}")
    return int(m[1]) * _UNIT_SECONDS[m[2]]


def parse_profiles(items: Iterable[str]) -> dict[str, str]:
    """``--policy-profile name=opa/data/path`` flags -> {name: path}. The ``default`` profile always exists
    (``chanscale/main/decision`` unless a flag redefines it)."""
    from .policy import POLICY_PATH_RE

    profiles = {DEFAULT_PROFILE: DEFAULT_PROFILE_PATH}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not PROFILE_RE.match(name) or not POLICY_PATH_RE.match(path):
            raise ValueError(f"--policy-profile must look like name=chanscale/main/decision, got {item!r}")
        profiles[name] = path
    return profiles


def normalise_url(url: str) -> str:
    return url.strip().rstrip("/")


def allowed_addresses(guardrails: Guardrails, default_url: str | None) -> set[str]:
    return {normalise_url(u) for u in (*guardrails.prometheus_allowlist, default_url or "") if u}


# --------------------------------------------------------------------------------------------------- PromQL


def _selectors(expr: Any) -> list[Any]:
    import promql_parser

    found: list[Any] = []
    promql_parser.walk(expr, lambda n: found.append(n) if isinstance(n, promql_parser.VectorSelector) else None)
    return found


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL expression reads (``ValueError`` when it does not parse)."""
    import promql_parser

    names = set()
    for sel in _selectors(promql_parser.parse(query)):
        name = sel.name or next((m.value for m in sel.matchers.matchers if m.name == "__name__"), None)
        if name:
            names.add(name)
    return names


def _confined(matchers: Iterable[Any], namespace: str) -> bool:
    import promql_parser

    return any(m.name == "namespace" and m.op == promql_parser.MatchOp.Equal and m.value == namespace for m in matchers)


def confinement_problem(query: str, namespace: str) -> str | None:
    """None if every series the query reads is confined to ``namespace``; else what is wrong, for a condition.

    "Confined" means each vector selector (also inside range vectors and subqueries, and in every ``or`` branch of
    a selector) has the exact matcher ``namespace="<namespace>"``. A regex or negative matcher is not confinement.
    """
    import promql_parser

    try:
        expr = promql_parser.parse(query)
    except ValueError as e:
        return f"is not valid PromQL ({e})"
    for sel in _selectors(expr):
        branches = sel.matchers.or_matchers or [sel.matchers.matchers]
        if not all(_confined(branch, namespace) for branch in branches):
            name = sel.name or "{...}"
            return (
                f"selector {name} is not confined to this namespace: add the matcher "
                f'namespace="$namespace" (namespace="{namespace}") to every selector'
            )
    return None


# ---------------------------------------------------------------------------------------------- refusals


def pause_problem(meta: Mapping[str, Any]) -> str | None:
    value = (meta.get("annotations") or {}).get(PAUSED_ANNOTATION)
    if value is None or (isinstance(value, str) and value.strip().lower() in ("true", "false")):
        return None
    return (
        f'annotation {PAUSED_ANNOTATION} must be "true" or "false", got {value!r}: '
        "not scaling until it is fixed or removed"
    )


MAX_PAUSED_REPLICAS = 10000


def paused_replicas_problem(meta: Mapping[str, Any]) -> str | None:
    """Why the paused-replicas annotation is unusable, or None (absent or a count 0..10000)."""
    value = (meta.get("annotations") or {}).get(PAUSED_REPLICAS_ANNOTATION)
    if value is None or paused_replicas(meta) is not None:
        return None
    return (
        f"annotation {PAUSED_REPLICAS_ANNOTATION} must be a replica count between 0 and {MAX_PAUSED_REPLICAS}, got "
        f"{value!r}: not scaling until it is fixed or removed"
    )


def paused_replicas(meta: Mapping[str, Any]) -> int | None:
    value = (meta.get("annotations") or {}).get(PAUSED_REPLICAS_ANNOTATION)
    if not isinstance(value, str) or not value.strip().isdigit():
        return None
    n = int(value.strip())
    return n if n <= MAX_PAUSED_REPLICAS else None


def refusal(
    g: Guardrails, spec: PoolSpec, namespace: str, meta: Mapping[str, Any], default_url: str | None
) -> Refusal | None:
    """The first reason this pool must not be scaled at all, or None. Checked before any query or decision."""
    problem = pause_problem(meta) or paused_replicas_problem(meta)
    if problem:
        return Refusal("InvalidPauseAnnotation", problem)
    if g.policy_path(spec.policy.profile) is None:
        published = ", ".join(sorted(g.profiles))
        return Refusal(
            "PolicyProfileNotPublished",
            f"spec.policy.profile {spec.policy.profile!r} is not published by the cluster admin: "
            f"use one of {published}",
        )
    if not g.allows_scale_kind(spec):
        enabled = ", ".join(sorted(g.scale_kinds)) or "none"
        return Refusal(
            "ScaleKindNotEnabled",
            f"spec.scaleTargetRef: {spec.scale_kind_key} is not a target kind the cluster admin enabled (operator flag "
            f"--scale-kind, Helm value rbac.scaleTargets; enabled: {enabled}): use a Deployment or ask the admin",
        )
    if spec.template is not None and not g.allows_templates(namespace):
        return Refusal(
            "TemplatesDisabled",
            "spec.template needs template mode, which the cluster admin has not enabled for this namespace "
            "(Helm value rbac.templateNamespaces): use spec.scaleTargetRef to an existing Deployment",
        )
    address = spec.metrics.prometheus_address
    if address is not None and normalise_url(address) not in allowed_addresses(g, default_url):
        return Refusal(
            "PrometheusAddressNotAllowed",
            "spec.metrics.prometheusAddress is not on the admin's allowlist (operator flag --prometheus-allowed-url, "
            "Helm value prometheus.allowedUrls): remove it to use the default Prometheus, or ask the admin to add it",
        )
    if spec.metrics.queries and not g.custom_queries:
        return Refusal(
            "CustomQueriesDisabled",
            "spec.metrics.queries is disabled by the cluster admin (operator flag --allow-custom-queries, Helm value "
            "prometheus.customQueries): remove it and export the metrics contract (docs/metrics-contract.md)",
        )
    for sig, query in sorted(spec.metrics.queries.items()):
        from .signals import render_custom

        problem = confinement_problem(render_custom(query, namespace, spec.channel), namespace)
        if problem:
            return Refusal("QueryRefused", f"spec.metrics.queries.{sig} {problem}")
    return _rate_window_refusal(g, spec)


def _rate_window_refusal(g: Guardrails, spec: PoolSpec) -> Refusal | None:
    if g.scrape_interval_seconds <= 0:
        return None
    window = parse_duration(spec.metrics.rate_window)
    need = 2 * g.scrape_interval_seconds
    if window >= need:
        return None
    return Refusal(
        "RateWindowTooShort",
        f"spec.metrics.rateWindow {spec.metrics.rate_window} is shorter than two scrape intervals "
        f"({need:g}s; Prometheus scrapes every {g.scrape_interval_seconds:g}s), so rate() would have no data: "
        f"set it to at least {int(need)}s",
    )


# ------------------------------------------------------------------------------------- cross-pool views


def pool_index_entry(name: str, spec: Mapping[str, Any], status: Mapping[str, Any], created: str) -> dict[str, Any]:
    """What the WorkerPool index keeps per pool (keyed by namespace): its target and its last known claim."""
    ref = spec.get("scaleTargetRef") or {}
    target = name if spec.get("template") else ref.get("name") or name
    if ref.get("kind") not in (None, "Deployment"):
        target = f"{ref['kind']}/{target}"  # a StatefulSet "web" is not the Deployment "web"
    return {
        "name": name,
        "target": target,
        "created": created,
        "mode": spec.get("mode") or "Active",
        "replicas": status.get("replicas"),
        "desiredReplicas": status.get("desiredReplicas"),
    }


def target_owner(pools: Iterable[Mapping[str, Any]], target: str) -> str | None:
    """The pool that owns a target Deployment: the oldest Active pool naming it (ties: the smaller name). A DryRun
    pool never writes, so it owns nothing: it may shadow the owner (docs/migrate-from-keda.md)."""
    return target_owners(p for p in pools if p.get("target") == target).get(target)


def target_owners(pools: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """:func:`target_owner` of every target named by ``pools``, in one pass (a namespace of 1 000 pools asked
    pool by pool costs a million comparisons per policy call)."""
    best: dict[str, tuple[str, str]] = {}
    for p in pools:
        if p.get("mode", "Active") == "DryRun":
            continue
        target, claim = str(p.get("target")), (p.get("created") or "", p["name"])
        held = best.get(target)
        if p.get("target") is not None and (held is None or claim < held):
            best[target] = claim
    return {target: claim[1] for target, claim in best.items()}


def _int_or_zero(x: Any) -> int:
    return int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else 0


@dataclass(frozen=True)
class PeerClaims:
    """The pools of one namespace that own their target, as kopf's indexes show them: name -> (replicas, desired),
    with the sums. ``replicas`` is the larger of what the Deployment runs and the pool's last recorded status;
    ``desired`` comes from the pool's status."""

    pools: Mapping[str, tuple[int, int]]
    replicas: int
    claimed: int


def peer_claims(pools: Iterable[Mapping[str, Any]], deployment_replicas: Mapping[str, int]) -> PeerClaims:
    """One pass over a namespace's pools. Pools that lost their target to another pool (two on one Deployment) are
    not counted twice."""
    pools = list(pools)
    owners = target_owners(pools)
    counted: dict[str, tuple[int, int]] = {}
    for p in pools:
        if owners.get(p["target"]) == p["name"]:
            replicas = max(deployment_replicas.get(p["target"], 0), _int_or_zero(p.get("replicas")))
            counted[p["name"]] = (replicas, _int_or_zero(p.get("desiredReplicas")))
    return PeerClaims(
        pools=counted,
        replicas=sum(r for r, _ in counted.values()),
        claimed=sum(max(r, d) for r, d in counted.values()),
    )


def _with_recent(claims: PeerClaims, recent: Mapping[str, int], name: str) -> tuple[int, int] | None:
    held = claims.pools.get(name)
    if held is None:
        return None
    return (max(held[0], recent.get(name, 0)), held[1])


def other_claims(claims: PeerClaims, recent_writes: Mapping[str, int], exclude: str) -> dict[str, int]:
    """``input.namespace.others``: the sums without ``exclude``, each pool's replicas raised to what this operator
    just wrote or reserved for it (the index may lag our own writes by a moment). Costs the recent writes, not the
    namespace's pools."""
    pools, replicas, claimed = len(claims.pools), claims.replicas, claims.claimed
    for name in {exclude, *recent_writes}:
        held, now = claims.pools.get(name), _with_recent(claims, recent_writes, name)
        if held is None or now is None:
            continue
        if name == exclude:
            pools, replicas, claimed = pools - 1, replicas - held[0], claimed - max(held)
        else:
            replicas, claimed = replicas + now[0] - held[0], claimed + max(now) - max(held)
    return {"pools": pools, "replicas": replicas, "claimed": claimed}


def other_pools(claims: PeerClaims, recent_writes: Mapping[str, int], exclude: str) -> list[dict[str, Any]]:
    """``input.namespace.pools``: the same pools one by one, sorted by name (sent only to policies that read it)."""
    out = []
    for name in sorted(claims.pools):
        now = _with_recent(claims, recent_writes, name)
        if name != exclude and now is not None:
            out.append({"name": name, "replicas": now[0], "desiredReplicas": now[1]})
    return out


class NamespaceLocks:
    """One asyncio lock per namespace: a pool's policy check and its scale write happen under it."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def __call__(self, namespace: str) -> asyncio.Lock:
        lock = self._locks.get(namespace)
        if lock is None:
            lock = self._locks[namespace] = asyncio.Lock()
        return lock


@dataclass
class TenancyState:
    """Operator-wide tenancy state kept on the Runtime."""

    locks: NamespaceLocks = field(default_factory=NamespaceLocks)
    # (namespace, pool) -> (spec.template digest, the API server's refusal): template pools the API server refused;
    # retried only when spec.template changes.
    template_errors: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    # namespace -> (monotonic time, its pools' claims): one pass over the index serves a namespace's budget checks
    # for a moment (reconcile.PEER_CLAIMS_TTL)
    peer_claims: dict[str, tuple[float, PeerClaims]] = field(default_factory=dict)
