"""``chanscale migrate``: a KEDA ScaledObject -> the equivalent WorkerPool, and a list of what does not map.

Pure: a ScaledObject (a dict) in, a WorkerPool (a dict) and notes out; the CLI reads and prints YAML.

What maps (KEDA ScaledObject spec, keda.sh/docs/latest/reference/scaledobject-spec):

- ``scaleTargetRef`` (a Deployment, or any kind with /scale the admin enabled), ``minReplicaCount`` (KEDA's
  default 0) and ``maxReplicaCount`` (100),
  ``pollingInterval``, ``cooldownPeriod`` (only meaningful for scale to zero: it becomes ``idleSeconds``),
  ``fallback`` (failureThreshold, replicas, behavior), ``advanced.horizontalPodAutoscalerConfig.behavior`` (the
  same HPA v2 fields), the ``autoscaling.keda.sh/paused`` and ``paused-replicas`` annotations;
- one trigger of type ``prometheus``, ``kafka``, ``nats-jetstream``, ``redis`` or ``redis-streams``: its
  topic/stream/list becomes the ``channel``, and its per-replica threshold (``lagThreshold`` etc.) the SLO. KEDA
  sizes ``ceil(backlog / threshold)``: a fixed number of messages per replica. By AWS's recipe (acceptable backlog
  per instance = latency budget / per-message time) that threshold *is* a latency budget of ``threshold / mu``
  seconds for workers that each handle ``mu`` messages/s; given ``--service-rate`` the migration writes exactly
  that objective (never below the P99 floor ln(100)/mu), given ``--p99`` it uses yours.

Everything else is listed as not mapped, with what to do instead. By default the pool is ``mode: DryRun``: it
shadows the ScaledObject (docs/migrate-from-keda.md) until you switch it to Active and delete the ScaledObject.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import GROUP, PAUSED_ANNOTATION, PAUSED_REPLICAS_ANNOTATION, VERSION

KEDA_PAUSED = "autoscaling.keda.sh/paused"
KEDA_PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"
CHANNEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._:-]*[A-Za-z0-9])?$")

# type -> (metadata keys naming the channel, in preference order; threshold key; KEDA's default threshold)
TRIGGERS: dict[str, tuple[tuple[str, ...], str, float]] = {
    "kafka": (("topic",), "lagThreshold", 10),
    "nats-jetstream": (("consumer", "stream"), "lagThreshold", 10),
    "redis": (("listName",), "listLength", 5),
    "redis-streams": (("stream",), "pendingEntriesCount", 5),
    "prometheus": ((), "threshold", math.nan),
}
# Trigger metadata that chanscale reads from Prometheus instead (the worker exports the metrics contract).
BROKER_KEYS = {
    "bootstrapServers",
    "consumerGroup",
    "natsServerMonitoringEndpoint",
    "account",
    "address",
    "addresses",
    "host",
    "port",
    "databaseIndex",
    "enableTLS",
    "sasl",
    "tls",
}
HANDLED_SPEC_KEYS = {
    "scaleTargetRef",
    "minReplicaCount",
    "maxReplicaCount",
    "pollingInterval",
    "cooldownPeriod",
    "fallback",
    "advanced",
    "triggers",
}
FALLBACK_BEHAVIORS = {"static", "currentReplicas", "currentReplicasIfHigher"}


class MigrateError(ValueError):
    """The object cannot become a WorkerPool at all; the message says why."""


@dataclass(frozen=True)
class Options:
    p99_seconds: float | None = None  # the latency objective, if the user knows it
    service_rate: float | None = None  # messages/s one worker handles
    channel: str | None = None  # override the channel derived from the trigger
    active: bool = False  # mode Active instead of DryRun (shadow)


@dataclass
class Migration:
    pool: dict[str, Any]
    mapped: list[str] = field(default_factory=list)  # "KEDA field -> WorkerPool field"
    unmapped: list[str] = field(default_factory=list)  # "KEDA field: why, and what to do"


def migrate(so: Mapping[str, Any], opts: Options) -> Migration:
    """One ScaledObject -> a WorkerPool. Raises :class:`MigrateError` when it cannot map at all."""
    if so.get("kind") != "ScaledObject" or not str(so.get("apiVersion", "")).startswith("keda.sh/"):
        raise MigrateError(f"not a KEDA ScaledObject: {so.get('apiVersion')}/{so.get('kind')}")
    meta, spec = so.get("metadata") or {}, so.get("spec") or {}
    name = meta.get("name") or "unnamed"
    m = Migration(pool={})
    target = _target(spec.get("scaleTargetRef") or {}, name, m)
    trigger, channel, threshold = _trigger(spec.get("triggers") or [], name, opts, m)
    pool_spec: dict[str, Any] = {"channel": channel, "scaleTargetRef": target}
    pool_spec["mode"] = "Active" if opts.active else "DryRun"
    _bounds(spec, pool_spec, m)
    pool_spec["slo"], model = _slo(trigger, threshold, opts, m)
    if model:
        pool_spec["model"] = model
    _fallback(spec.get("fallback"), pool_spec, m)
    _behavior(spec.get("advanced") or {}, pool_spec, m)
    for key in sorted(set(spec) - HANDLED_SPEC_KEYS):
        m.unmapped.append(f"spec.{key}: no WorkerPool equivalent")
    pool_meta: dict[str, Any] = {"name": name}
    if meta.get("namespace"):
        pool_meta["namespace"] = meta["namespace"]
    annotations = _annotations(meta.get("annotations") or {}, m)
    if annotations:
        pool_meta["annotations"] = annotations
    m.pool = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WorkerPool", "metadata": pool_meta, "spec": pool_spec}
    return m


def _target(ref: Mapping[str, Any], name: str, m: Migration) -> dict[str, str]:
    kind = ref.get("kind") or "Deployment"
    api = ref.get("apiVersion") or "apps/v1"
    if not ref.get("name"):
        raise MigrateError(f"ScaledObject {name}: spec.scaleTargetRef.name is missing")
    if "/" not in api:
        raise MigrateError(f"ScaledObject {name}: scaleTargetRef {api}/{kind}: core-group kinds are not supported")
    if kind == "Deployment" and api == "apps/v1":
        return {"name": str(ref["name"])}
    group = api.split("/")[0]
    m.unmapped.append(
        f"spec.scaleTargetRef {kind}.{group}: kept; the admin must enable it (--scale-kind {kind}.{group}, Helm "
        "rbac.scaleTargets), else the pool is refused with ScaleKindNotEnabled"
    )
    return {"apiVersion": api, "kind": kind, "name": str(ref["name"])}


def _trigger(triggers: list[Any], name: str, opts: Options, m: Migration) -> tuple[str, str, float]:
    """The first supported trigger: (type, channel, per-replica threshold). Others are reported."""
    chosen: tuple[str, str, float] | None = None
    for i, t in enumerate(triggers):
        ttype, md = t.get("type", "?"), dict(t.get("metadata") or {})
        where = f"spec.triggers[{i}] ({ttype})"
        if ttype not in TRIGGERS:
            m.unmapped.append(f"{where}: trigger type not supported; chanscale sizes from the channel's metrics")
            continue
        if chosen is not None:
            m.unmapped.append(f"{where}: a WorkerPool scales on one channel; only the first trigger was used")
            continue
        chosen = _one_trigger(ttype, md, where, name, opts, m)
        if t.get("authenticationRef"):
            m.unmapped.append(
                f"{where}.authenticationRef: credentials belong to the operator, not to pools "
                "(--prometheus-bearer-token-file etc., docs/prometheus-auth.md)"
            )
        if t.get("metricType") not in (None, "AverageValue"):
            m.unmapped.append(f"{where}.metricType {t['metricType']}: chanscale sizes from the SLO, not a target")
    if chosen is None:
        raise MigrateError(
            f"ScaledObject {name}: no trigger chanscale can map (supported: {', '.join(sorted(TRIGGERS))})"
        )
    return chosen


def _one_trigger(
    ttype: str, md: dict[str, Any], where: str, name: str, opts: Options, m: Migration
) -> tuple[str, str, float]:
    keys, threshold_key, default = TRIGGERS[ttype]
    source = next((md[k] for k in keys if md.get(k)), None)
    channel = opts.channel or (str(source) if source else name)
    if not CHANNEL_RE.match(channel):
        raise MigrateError(
            f"{where}: channel {channel!r} has characters the metrics contract does not allow: --channel"
        )
    m.mapped.append(f"{where} {'/'.join(keys) or 'name'} -> spec.channel {channel!r}")
    raw = md.pop(threshold_key, None)
    threshold = float(raw) if raw is not None else default
    if ttype == "prometheus":
        _prometheus_trigger(md, where, m)
    for k in sorted(md):
        if k in (*keys, "activationLagThreshold", "activationThreshold", "activationListLength"):
            if k.startswith("activation"):
                m.unmapped.append(f"{where}.metadata.{k}: use minReplicas 0 and idleSeconds for scale to zero")
            continue
        why = "read from Prometheus instead" if k in BROKER_KEYS else "no equivalent"
        m.unmapped.append(f"{where}.metadata.{k}: {why}")
    if ttype != "prometheus":
        m.unmapped.append(
            f"{where}: chanscale does not connect to the broker; the worker exports the metrics contract "
            f"with channel={channel!r} (docs/metrics-contract.md)"
        )
    return ttype, channel, threshold


def _prometheus_trigger(md: dict[str, Any], where: str, m: Migration) -> None:
    address = md.pop("serverAddress", None)
    query = md.pop("query", None)
    md.pop("ignoreNullValues", None)
    m.mapped.append(f"{where}.metadata.ignoreNullValues -> dropped: chanscale never reads missing data as 0")
    if address:
        m.unmapped.append(
            f"{where}.metadata.serverAddress {address}: pools use the operator's --prometheus-url; name it in "
            "spec.metrics.prometheusAddress only if the admin allows it (--prometheus-allowed-url)"
        )
    if query:
        m.unmapped.append(
            f"{where}.metadata.query {query!r}: KEDA divides it by the threshold per replica; chanscale reads "
            "backlog, arrivals and latency of the channel (the metrics contract). If it is the backlog, set "
            'spec.metrics.queries.backlog with namespace="$namespace" (needs --allow-custom-queries)'
        )


def _bounds(spec: Mapping[str, Any], out: dict[str, Any], m: Migration) -> None:
    lo, hi = int(spec.get("minReplicaCount", 0)), int(spec.get("maxReplicaCount", 100))
    out["minReplicas"], out["maxReplicas"] = lo, hi
    m.mapped.append(f"minReplicaCount {lo} -> spec.minReplicas, maxReplicaCount {hi} -> spec.maxReplicas")
    if "pollingInterval" in spec:
        out["pollingInterval"] = int(spec["pollingInterval"])
        m.mapped.append("pollingInterval -> spec.pollingInterval")
    cooldown = spec.get("cooldownPeriod")
    if lo == 0:
        out["idleSeconds"] = int(300 if cooldown is None else cooldown)
        m.mapped.append(f"cooldownPeriod (scale to zero after) -> spec.idleSeconds {out['idleSeconds']}")
    elif cooldown is not None:
        m.mapped.append("cooldownPeriod -> dropped: KEDA applies it only when scaling to zero (minReplicaCount 0)")


def _slo(trigger: str, threshold: float, opts: Options, m: Migration) -> tuple[dict[str, Any], dict[str, Any]]:
    mu = opts.service_rate
    model = {"serviceRateHint": mu} if mu else {}
    if opts.p99_seconds is not None:
        m.mapped.append(f"--p99 {opts.p99_seconds} -> spec.slo.p99LatencySeconds")
        return {"p99LatencySeconds": opts.p99_seconds}, model
    if mu and math.isfinite(threshold) and threshold > 0:
        budget = max(threshold / mu, math.log(100) / mu)
        p99 = float(f"{budget:.3g}")
        m.mapped.append(
            f"{trigger} threshold {threshold:g} msgs/replica at {mu:g} msgs/s per worker -> "
            f"spec.slo.p99LatencySeconds {p99:g} (threshold / service rate, floor ln(100)/mu)"
        )
        return {"p99LatencySeconds": p99}, model
    raise MigrateError(
        "the SLO cannot be derived: give --p99 SECONDS (your latency objective) or --service-rate MSGS_PER_S "
        f"(one worker's throughput; the {trigger} threshold {threshold:g} per replica then becomes the objective)"
    )


def _fallback(fb: Any, out: dict[str, Any], m: Migration) -> None:
    if not fb:
        return
    behavior = fb.get("behavior", "static")
    if behavior not in FALLBACK_BEHAVIORS:
        m.unmapped.append(f"spec.fallback.behavior {behavior}: not supported; kept chanscale's currentReplicas")
        behavior = "currentReplicas"
    mapped: dict[str, Any] = {"behavior": behavior}
    if "failureThreshold" in fb:
        mapped["failureThreshold"] = int(fb["failureThreshold"])
    if behavior != "currentReplicas" and "replicas" in fb:
        mapped["replicas"] = int(fb["replicas"])
    out["fallback"] = mapped
    m.mapped.append("spec.fallback -> spec.fallback (missing data never reads as 0 in chanscale)")


def _behavior(advanced: Mapping[str, Any], out: dict[str, Any], m: Migration) -> None:
    hpa = advanced.get("horizontalPodAutoscalerConfig") or {}
    if hpa.get("behavior"):
        out["behavior"] = {k: v for k, v in hpa["behavior"].items() if k in ("scaleUp", "scaleDown")}
        m.mapped.append("advanced.horizontalPodAutoscalerConfig.behavior -> spec.behavior (same HPA v2 semantics)")
    for key in sorted(set(hpa) - {"behavior"}):
        m.unmapped.append(f"spec.advanced.horizontalPodAutoscalerConfig.{key}: no equivalent (there is no HPA)")
    for key in sorted(set(advanced) - {"horizontalPodAutoscalerConfig"}):
        m.unmapped.append(f"spec.advanced.{key}: no equivalent")


def _annotations(ann: Mapping[str, str], m: Migration) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in sorted(ann.items()):
        if k == KEDA_PAUSED:
            out[PAUSED_ANNOTATION] = str(v).lower()
            m.mapped.append(f"annotation {KEDA_PAUSED} -> {PAUSED_ANNOTATION}")
        elif k == KEDA_PAUSED_REPLICAS:
            out[PAUSED_REPLICAS_ANNOTATION] = str(v)
            m.mapped.append(f"annotation {KEDA_PAUSED_REPLICAS} -> {PAUSED_REPLICAS_ANNOTATION}")
        elif "keda.sh/" in k:
            m.unmapped.append(f"annotation {k}: no equivalent")
    return out


def report(m: Migration) -> str:
    """The notes as YAML comment lines, printed above the WorkerPool."""
    lines = ["# chanscale migrate: mapped"]
    lines += [f"#   {x}" for x in m.mapped]
    lines.append("# not mapped" + (" (review each):" if m.unmapped else ": nothing"))
    lines += [f"#   {x}" for x in m.unmapped]
    if m.pool["spec"]["mode"] == "DryRun":
        lines.append(
            "# mode DryRun: the pool shadows the ScaledObject and records what it would do "
            "(chanscale explain --compare); set mode: Active and delete the ScaledObject to switch"
        )
    return "\n".join(lines)
