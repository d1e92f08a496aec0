"""The WorkerPool spec as typed, defaulted, validated values.

The CRD's OpenAPI schema and CEL rules reject bad specs at admission; this module re-checks everything the
decision logic relies on, so a pool created before a CRD upgrade (or by a test with fakes) still fails with an
error that names the field and the fix, instead of crashing the operator.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CHANNEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._:-]*[A-Za-z0-9])?$")
RATE_WINDOW_RE = re.compile(r"^[1-9][0-9]*(s|m|h)$")
PROFILE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SIGNALS = ("backlog", "arrivalRate", "processedRate", "failedRate", "busyRate", "p99LatencySeconds")


class SpecError(ValueError):
    """A WorkerPool spec the operator cannot act on. ``field`` is the JSON path, the message says the fix."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field = field_path


@dataclass(frozen=True)
class ScalingPolicy:
    type: str  # Pods | Percent
    value: int
    period_seconds: int

    def describe(self, direction: str) -> str:
        unit = "%" if self.type == "Percent" else ""
        return f"{direction} policy {self.type} {self.value}{unit}/{self.period_seconds}s"


@dataclass(frozen=True)
class ScalingRules:
    stabilization_window_seconds: int
    select_policy: str  # Max | Min | Disabled
    policies: tuple[ScalingPolicy, ...]
    tolerance: float


#: scaleUp defaults: HPA vocabulary, Knative's limit. The HPA's {100 %, 4 pods}/15 s exists because its
#: ratio-based recommendation extrapolates a utilisation that saturates, and can overshoot on a noisy metric;
#: chanscale's recommendation is a sized count (arrivals ÷ service rate, backlog ÷ drain horizon), bounded by
#: maxReplicas, so a per-step cap only makes a flash crowd's backlog wait: the first step goes straight to the
#: size the model asks for. The cap is the KPA's max-scale-up-rate (1000× per step, Percent 99 900). An admin's
#: per-decision cap belongs in the policy gate (the step guard) or in spec.behavior.scaleUp. No tolerance:
#: the count is sized for the P99 objective already, a dead band would only delay a needed scale-up.
DEFAULT_SCALE_UP = ScalingRules(
    stabilization_window_seconds=0,
    select_policy="Max",
    policies=(ScalingPolicy("Percent", 99900, 10),),
    tolerance=0.0,
)
#: HPA v2 scaleDown defaults (300 s window, 100 %/15 s, tolerance 0.1).
DEFAULT_SCALE_DOWN = ScalingRules(
    stabilization_window_seconds=300,
    select_policy="Max",
    policies=(ScalingPolicy("Percent", 100, 15),),
    tolerance=0.1,
)


@dataclass(frozen=True)
class SLO:
    p99_latency_seconds: float
    max_backlog: int | None = None
    backlog_drain_seconds: float | None = None
    max_error_rate: float | None = None

    @property
    def drain_horizon(self) -> float:
        """Seconds to drain an accumulated backlog in; default max(4 × P99 objective, 30 s)."""
        if self.backlog_drain_seconds is not None:
            return self.backlog_drain_seconds
        return max(4.0 * self.p99_latency_seconds, 30.0)


@dataclass(frozen=True)
class Fallback:
    failure_threshold: int = 3
    behavior: str = "currentReplicas"  # currentReplicas | static | currentReplicasIfHigher
    replicas: int | None = None


@dataclass(frozen=True)
class ExternalScale:
    """What to do when another writer (kubectl scale, a CI job, Argo CD) changes the target's replicas."""

    action: str = "HoldOff"  # HoldOff: leave their count alone for cooldownSeconds | Reassert: scale back at once
    cooldown_seconds: int = 300


@dataclass(frozen=True)
class MetricsSpec:
    prometheus_address: str | None = None
    rate_window: str = "1m"
    stale_after_seconds: int = 60
    queries: Mapping[str, str] = field(default_factory=dict)
    direct: bool = False  # read the backlog from the worker pods' /metrics too (chanscale.direct)


@dataclass(frozen=True)
class PolicySpec:
    profile: str = "default"  # one of the policy profiles the admin published (operator flag --policy-profile)
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PoolSpec:
    channel: str
    min_replicas: int
    max_replicas: int
    slo: SLO
    scale_target: str | None = None
    scale_kind: str = "Deployment"  # any kind with a /scale subresource the admin enabled (--scale-kind)
    scale_api_version: str = "apps/v1"
    template: Mapping[str, Any] | None = None
    idle_seconds: int = 300
    polling_interval: int | None = None
    mode: str = "Active"
    paused: bool = False
    target_utilization: float = 1.0
    service_rate_hint: float | None = None
    latency_correction: bool = True
    metrics: MetricsSpec = field(default_factory=MetricsSpec)
    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN
    fallback: Fallback = field(default_factory=Fallback)
    policy: PolicySpec = field(default_factory=PolicySpec)
    external_scale: ExternalScale = field(default_factory=ExternalScale)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> PoolSpec:
        """Validate a WorkerPool ``spec`` and apply defaults. Raises :class:`SpecError` naming the field."""
        return _parse(spec)

    @property
    def scales_deployment(self) -> bool:
        return self.scale_kind == "Deployment" and self.scale_api_version == "apps/v1"

    @property
    def scale_kind_key(self) -> str:
        """``Kind.group`` as the admin enables it (``--scale-kind StatefulSet.apps``)."""
        return f"{self.scale_kind}.{self.scale_api_version.split('/')[0]}"

    def target_name(self, pool_name: str) -> str:
        """The Deployment this pool scales: scaleTargetRef.name, or the pool's own name for a template."""
        return self.scale_target or pool_name


# --- parsing helpers ---------------------------------------------------------------------------------------


def _obj(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(path, f"must be an object, got {type(value).__name__}")
    return value


def _int(m: Mapping[str, Any], key: str, path: str, default: int | None, lo: int, hi: int) -> int | None:
    v = m.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpecError(f"{path}.{key}", f"must be an integer between {lo} and {hi}, got {v!r}")
    if not lo <= v <= hi:
        raise SpecError(f"{path}.{key}", f"must be between {lo} and {hi}, got {v}")
    return v


def _num(
    m: Mapping[str, Any],
    key: str,
    path: str,
    default: float | None,
    lo: float,
    hi: float,
    *,
    positive: bool = False,
) -> float | None:
    v = m.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise SpecError(f"{path}.{key}", f"must be a finite number, got {v!r}")
    if (positive and v <= 0) or not lo <= v <= hi:
        bound = f"greater than {lo}" if positive else f"at least {lo}"
        raise SpecError(f"{path}.{key}", f"must be {bound} and at most {hi}, got {v}")
    return float(v)


def _enum(m: Mapping[str, Any], key: str, path: str, default: str, allowed: tuple[str, ...]) -> str:
    v = m.get(key, default)
    if v not in allowed:
        raise SpecError(f"{path}.{key}", f"must be one of {', '.join(allowed)}, got {v!r}")
    return str(v)


def _rules(m: Mapping[str, Any], path: str, default: ScalingRules) -> ScalingRules:
    if not m:
        return default
    policies = default.policies
    if "policies" in m:
        raw = m["policies"]
        if not isinstance(raw, list):
            raise SpecError(f"{path}.policies", "must be a list of {type, value, periodSeconds}")
        parsed = []
        for i, p in enumerate(raw):
            pp = f"{path}.policies[{i}]"
            p = _obj(p, pp)
            parsed.append(
                ScalingPolicy(
                    type=_enum(p, "type", pp, "", ("Pods", "Percent")),
                    value=int(_int(p, "value", pp, None, 1, 100_000) or 0),
                    period_seconds=int(_int(p, "periodSeconds", pp, None, 1, 1800) or 0),
                )
            )
            if parsed[-1].value == 0 or parsed[-1].period_seconds == 0:
                raise SpecError(pp, "value and periodSeconds are required")
        policies = tuple(parsed)
    select = _enum(m, "selectPolicy", path, default.select_policy, ("Max", "Min", "Disabled"))
    if not policies and select != "Disabled":
        raise SpecError(f"{path}.policies", "must not be empty unless selectPolicy is Disabled")
    return ScalingRules(
        stabilization_window_seconds=int(
            _int(m, "stabilizationWindowSeconds", path, default.stabilization_window_seconds, 0, 3600) or 0
        ),
        select_policy=select,
        policies=policies,
        tolerance=float(_num(m, "tolerance", path, default.tolerance, 0.0, 1.0) or 0.0),
    )


KIND_RE = re.compile(r"^[A-Z][A-Za-z0-9]{0,62}$")
API_VERSION_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/v[0-9]+((alpha|beta)[0-9]+)?$")


def _parse(spec: Mapping[str, Any]) -> PoolSpec:
    spec = _obj(spec, "spec")
    channel = spec.get("channel")
    if not isinstance(channel, str) or not CHANNEL_RE.match(channel) or len(channel) > 128:
        raise SpecError(
            "spec.channel",
            f"must be 1-128 letters, digits, '.', '_', ':' or '-' (no quotes or PromQL), got {channel!r}",
        )
    ref = spec.get("scaleTargetRef")
    template = spec.get("template")
    if (ref is None) == (template is None):
        raise SpecError(
            "spec",
            "set exactly one of spec.scaleTargetRef (an existing Deployment) or spec.template (a pod template)",
        )
    target, kind, api_version = None, "Deployment", "apps/v1"
    if ref is not None:
        ref = _obj(ref, "spec.scaleTargetRef")
        kind, api_version = ref.get("kind") or kind, ref.get("apiVersion") or api_version
        if not isinstance(kind, str) or not KIND_RE.match(kind):
            raise SpecError("spec.scaleTargetRef.kind", f"must be a Kubernetes kind such as StatefulSet, got {kind!r}")
        if not isinstance(api_version, str) or not API_VERSION_RE.match(api_version):
            raise SpecError(
                "spec.scaleTargetRef.apiVersion",
                f"must be <group>/<version> such as apps/v1 or argoproj.io/v1alpha1, got {api_version!r}",
            )
        target = ref.get("name")
        if not isinstance(target, str) or not target:
            raise SpecError("spec.scaleTargetRef.name", "is required: the name of the resource to scale")
    else:
        template = _obj(template, "spec.template")
        containers = _obj(template.get("spec"), "spec.template.spec").get("containers")
        if not isinstance(containers, list) or not containers:
            raise SpecError("spec.template.spec.containers", "must list at least one container")

    min_r = int(_int(spec, "minReplicas", "spec", 1, 0, 10_000) or 0)
    max_r = _int(spec, "maxReplicas", "spec", None, 1, 10_000)
    if max_r is None:
        raise SpecError("spec.maxReplicas", "is required (1..10000)")
    if min_r > max_r:
        raise SpecError("spec.minReplicas", f"({min_r}) must be <= spec.maxReplicas ({max_r})")

    slo_m = _obj(spec.get("slo"), "spec.slo")
    p99 = _num(slo_m, "p99LatencySeconds", "spec.slo", None, 0.0, 86400.0, positive=True)
    if p99 is None:
        raise SpecError("spec.slo.p99LatencySeconds", "is required: the P99 enqueue-to-done latency objective")
    slo = SLO(
        p99_latency_seconds=p99,
        max_backlog=_int(slo_m, "maxBacklog", "spec.slo", None, 0, 1_000_000_000),
        backlog_drain_seconds=_num(slo_m, "backlogDrainSeconds", "spec.slo", None, 0.0, 86400.0, positive=True),
        max_error_rate=_num(slo_m, "maxErrorRate", "spec.slo", None, 0.0, 1.0),
    )

    model = _obj(spec.get("model"), "spec.model")
    metrics_m = _obj(spec.get("metrics"), "spec.metrics")
    queries = dict(_obj(metrics_m.get("queries"), "spec.metrics.queries"))
    for k, q in queries.items():
        if k not in SIGNALS:
            raise SpecError(f"spec.metrics.queries.{k}", f"unknown signal; known: {', '.join(SIGNALS)}")
        if not isinstance(q, str) or not q.strip():
            raise SpecError(f"spec.metrics.queries.{k}", "must be a non-empty PromQL string")
    rate_window = metrics_m.get("rateWindow", "1m")
    if not isinstance(rate_window, str) or not RATE_WINDOW_RE.match(rate_window):
        raise SpecError("spec.metrics.rateWindow", f"must look like 30s, 1m or 1h, got {rate_window!r}")
    direct = _obj(metrics_m.get("direct"), "spec.metrics.direct").get("enabled", False)
    if not isinstance(direct, bool):
        raise SpecError("spec.metrics.direct.enabled", f"must be true or false, got {direct!r}")
    address = metrics_m.get("prometheusAddress")
    if address is not None and (not isinstance(address, str) or not re.match(r"^https?://\S+$", address)):
        raise SpecError("spec.metrics.prometheusAddress", f"must be an http(s) URL, got {address!r}")

    behavior = _obj(spec.get("behavior"), "spec.behavior")
    fb = _obj(spec.get("fallback"), "spec.fallback")
    fallback = Fallback(
        failure_threshold=int(_int(fb, "failureThreshold", "spec.fallback", 3, 1, 1000) or 3),
        behavior=_enum(
            fb,
            "behavior",
            "spec.fallback",
            "currentReplicas",
            ("currentReplicas", "static", "currentReplicasIfHigher"),
        ),
        replicas=_int(fb, "replicas", "spec.fallback", None, 0, 10_000),
    )
    if fallback.behavior != "currentReplicas" and fallback.replicas is None:
        raise SpecError("spec.fallback.replicas", f"is required when spec.fallback.behavior is {fallback.behavior}")

    pol = _obj(spec.get("policy"), "spec.policy")
    for admin_only in ("path", "failurePolicy"):
        if admin_only in pol:
            raise SpecError(
                f"spec.policy.{admin_only}",
                "is chosen by the cluster admin, not by a pool: remove it and pick spec.policy.profile "
                "among the profiles the admin published",
            )
    profile = pol.get("profile", "default")
    if not isinstance(profile, str) or not PROFILE_RE.match(profile):
        raise SpecError("spec.policy.profile", f"must be a profile name like default, got {profile!r}")
    ext = _obj(spec.get("externalScale"), "spec.externalScale")
    external_scale = ExternalScale(
        action=_enum(ext, "action", "spec.externalScale", "HoldOff", ("HoldOff", "Reassert")),
        cooldown_seconds=int(_int(ext, "cooldownSeconds", "spec.externalScale", 300, 0, 86400) or 0),
    )
    paused = spec.get("paused", False)
    if not isinstance(paused, bool):
        raise SpecError("spec.paused", f"must be true or false, got {paused!r}")

    return PoolSpec(
        channel=channel,
        scale_target=target,
        scale_kind=kind,
        scale_api_version=api_version,
        template=template,
        min_replicas=min_r,
        max_replicas=max_r,
        idle_seconds=int(_int(spec, "idleSeconds", "spec", 300, 0, 86400) or 0),
        polling_interval=_int(spec, "pollingInterval", "spec", None, 1, 3600),
        mode=_enum(spec, "mode", "spec", "Active", ("Active", "DryRun")),
        paused=paused,
        slo=slo,
        target_utilization=float(_num(model, "targetUtilization", "spec.model", 1.0, 0.1, 1.0) or 1.0),
        service_rate_hint=_num(model, "serviceRateHint", "spec.model", None, 0.0, 1e6, positive=True),
        latency_correction=bool(model.get("latencyCorrection", True)),
        metrics=MetricsSpec(
            prometheus_address=address,
            rate_window=rate_window,
            stale_after_seconds=int(_int(metrics_m, "staleAfterSeconds", "spec.metrics", 60, 5, 3600) or 60),
            queries=queries,
            direct=direct,
        ),
        scale_up=_rules(
            _obj(behavior.get("scaleUp"), "spec.behavior.scaleUp"), "spec.behavior.scaleUp", DEFAULT_SCALE_UP
        ),
        scale_down=_rules(
            _obj(behavior.get("scaleDown"), "spec.behavior.scaleDown"),
            "spec.behavior.scaleDown",
            DEFAULT_SCALE_DOWN,
        ),
        fallback=fallback,
        policy=PolicySpec(
            profile=profile,
            parameters=dict(_obj(pol.get("parameters"), "spec.policy.parameters")),
        ),
        external_scale=external_scale,
    )
