"""One tick for one WorkerPool: read signals, decide, pass the policy gate, scale, and explain.

Framework-free (no kopf here) so the whole tick runs in unit tests with fakes; :mod:`chanscale.handlers` is the
thin kopf wrapper that feeds it the pool, the target seen through kopf's in-memory indexes, and writes the
returned status through kopf's patch object.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import PAUSED_ANNOTATION, telemetry
from .decision import Decision, Observation, PoolState, apply_verdict, decide, record_scale
from .kube import ScaleError, Scaler, template_digest
from .signals import PrometheusReader, signal_errors_for_required
from .spec import PoolSpec, SpecError
from .tenancy import Guardrails, TenancyState, namespace_pools, refusal

log = logging.getLogger("chanscale")

CONDITION_TYPES = ("Ready", "MetricsAvailable", "PolicyAllowed", "SLOMet", "ScalingLimited", "Paused")


@dataclass
class Config:
    prometheus_url: str | None = None
    opa: str | None = "none"
    tick: float = 10.0  # the operator's timer; a pool's pollingInterval is rounded up to a multiple of it
    status_refresh: float = 30.0  # rewrite an unchanged status at most this often (observations only)
    policy_timeout: float = 2.0
    query_timeout: float = 5.0
    guardrails: Guardrails = field(default_factory=Guardrails)  # the admin's choices (tenancy.py)


@dataclass(frozen=True)
class Target:
    """The scale target as kopf's index last saw it."""

    name: str
    exists: bool
    replicas: int = 0
    ready: int | None = None
    conflict: str | None = None  # e.g. "HorizontalPodAutoscaler web (KEDA ScaledObject web)"
    # () -> (the namespace's pools from kopf's WorkerPool index, {Deployment: replicas}); read under the lock.
    peers: Callable[[], tuple[list[dict[str, Any]], dict[str, int]]] | None = None


@dataclass
class TickResult:
    status: dict[str, Any] | None  # the status to write, or None when nothing material changed
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    scaled_to: int | None = None
    decision: Decision | None = None
    skipped: bool = False
    labels: dict[str, str | None] = field(default_factory=dict)  # metadata.labels to set (None removes)


@dataclass
class Runtime:
    """Operator-wide state: config, the shared Prometheus reader, the policy gate, the scaler."""

    config: Config
    reader: PrometheusReader
    gate: Any  # chanscale.policy.PolicyGate
    scaler: Scaler
    wall: Any = time.time
    last_eval: dict[tuple[str, str], float] = field(default_factory=dict)
    last_written: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    last_scale_write: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    tenancy: TenancyState = field(default_factory=TenancyState)

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        for d in (self.last_eval, self.last_written, self.last_scale_write, self.tenancy.template_errors):
            d.pop(key, None)
        telemetry.forget_pool(namespace, name)


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[dict[str, Any]],
    ctype: str,
    status: str,
    reason: str,
    message: str,
    now: float,
    generation: int,
) -> None:
    """Upsert a condition; ``lastTransitionTime`` moves only when the status changes."""
    for c in conditions:
        if c.get("type") == ctype:
            if c.get("status") != status:
                c["lastTransitionTime"] = rfc3339(now)
            c.update(status=status, reason=reason, message=message[:1024], observedGeneration=generation)
            return
    conditions.append(
        {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message[:1024],
            "lastTransitionTime": rfc3339(now),
            "observedGeneration": generation,
        }
    )


def _limit_reason(limited: str) -> str:
    for key, reason in (
        ("maxReplicas", "MaxReplicas"),
        ("minReplicas", "MinReplicas"),
        ("scaleUp policy", "ScaleUpPolicy"),
        ("scaleDown policy", "ScaleDownPolicy"),
        ("stabilization", "StabilizationWindow"),
        ("tolerance", "Tolerance"),
        ("policy:", "Policy"),
        ("fallback", "Fallback"),
        ("missing data", "MissingData"),
        ("service rate unknown", "ServiceRateUnknown"),
        ("selectPolicy Disabled", "ScalingDisabled"),
    ):
        if key in limited:
            return reason
    return "Limited"


def is_paused(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> str | None:
    ann = (meta.get("annotations") or {}).get(PAUSED_ANNOTATION)
    if isinstance(ann, str) and ann.lower() == "true":
        return f"annotation {PAUSED_ANNOTATION}=true"
    if spec.get("paused") is True:
        return "spec.paused is true"
    return None


def due(rt: Runtime, key: tuple[str, str], spec: PoolSpec, now: float) -> bool:
    """Whether a pool's pollingInterval has elapsed (the timer fires every ``tick``)."""
    interval = spec.polling_interval or rt.config.tick
    last = rt.last_eval.get(key)
    return last is None or now - last >= interval - rt.config.tick / 2


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns ``old`` into ``new`` (keys that disappeared become ``None``).

    Status is written as a merge patch, which keeps keys it does not mention; without this, a field that a
    later decision no longer has (a note, a quiet-tick marker) would linger from an earlier one.
    """
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    out: dict[str, Any] = {k: None for k in old if k not in new}
    for k, v in new.items():
        if k not in old:
            out[k] = v
        elif old[k] != v:
            out[k] = merge_patch(old[k], v)
    return out


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The status keys to patch: every key chanscale writes, diffed below the top level (top-level keys that
    chanscale does not write, such as another controller's, are left alone)."""
    return {k: merge_patch(old.get(k), v) for k, v in new.items() if old.get(k) != v}


def _material(status: Mapping[str, Any]) -> str:
    """A digest of what makes a status write worth it (not the ever-moving observations)."""
    d = status.get("lastDecision") or {}
    h = status.get("history") or {}
    keep = {
        "replicas": status.get("replicas"),
        "desired": status.get("desiredReplicas"),
        "recommended": status.get("recommendedReplicas"),
        "conditions": [(c["type"], c["status"], c.get("reason")) for c in status.get("conditions", [])],
        "decision": (
            d.get("outcome"),
            d.get("to"),
            d.get("limitedBy"),
            (d.get("policy") or {}).get("reasons"),
        ),
        "history": (h.get("recommendations"), h.get("scaleEvents"), h.get("consecutiveFailures")),
        "gen": status.get("observedGeneration"),
        "target": status.get("targetName"),
    }
    return hashlib.sha1(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()


def _finish(rt: Runtime, key: tuple[str, str], status: dict[str, Any], now: float, result: TickResult) -> TickResult:
    digest = _material(status)
    prev = rt.last_written.get(key)
    if prev is not None and prev[0] == digest and now - prev[1] < rt.config.status_refresh:
        result.status = None
    else:
        rt.last_written[key] = (digest, now)
        result.status = status
        telemetry.STATUS_WRITES.labels(*key).inc()
    return result


def _error_status(
    old: Mapping[str, Any], generation: int, now: float, reason: str, message: str, target: str | None
) -> dict[str, Any]:
    conditions = [dict(c) for c in old.get("conditions") or []]
    set_condition(conditions, "Ready", "False", reason, message, now, generation)
    status = {k: v for k, v in old.items() if k not in ("kopf",)}
    status.update(conditions=conditions, observedGeneration=generation, lastEvaluated=rfc3339(now))
    if target:
        status["targetName"] = target
    return status


async def tick(rt: Runtime, body: Mapping[str, Any], target: Target | None, *, force: bool = False) -> TickResult:
    """Evaluate one pool. Never raises for a bad pool: problems become conditions and Events."""
    meta, spec_raw = body.get("metadata", {}), body.get("spec") or {}
    old = body.get("status") or {}
    ns, name = meta.get("namespace", ""), meta.get("name", "")
    key = (ns, name)
    gen = int(meta.get("generation") or 0)
    now = rt.wall()
    try:
        spec = PoolSpec.from_dict(spec_raw)
    except SpecError as e:
        msg = f"invalid spec: {e}"
        prev: dict[str, Any] = next((c for c in old.get("conditions") or [] if c.get("type") == "Ready"), {})
        events: list[tuple[str, str, str]] = (
            []
            if (prev.get("reason"), prev.get("message")) == ("InvalidSpec", msg)
            else [("Warning", "InvalidSpec", msg)]
        )
        res = TickResult(status=None, events=events)
        return _finish(rt, key, _error_status(old, gen, now, "InvalidSpec", msg, None), now, res)
    if not force and not due(rt, key, spec, now):
        return TickResult(status=None, skipped=True)
    rt.last_eval[key] = now
    started = time.perf_counter()
    try:
        return await _tick(rt, body, spec, target, now)
    except Exception as e:  # never let one pool take the operator down
        log.exception("pool %s/%s: unexpected error", ns, name)
        telemetry.DECISIONS.labels(ns, name, "Error").inc()
        msg = f"internal error: {type(e).__name__}: {e}"
        res = TickResult(status=None, events=[("Warning", "InternalError", msg)])
        return _finish(rt, key, _error_status(old, gen, now, "InternalError", msg, None), now, res)
    finally:
        telemetry.DECISION_SECONDS.observe(time.perf_counter() - started)


async def _tick(rt: Runtime, body: Mapping[str, Any], spec: PoolSpec, target: Target | None, now: float) -> TickResult:
    meta, old = body["metadata"], body.get("status") or {}
    ns, name = meta["namespace"], meta["name"]
    key = (ns, name)
    gen = int(meta.get("generation") or 0)
    target_name = spec.target_name(name)
    conditions = [dict(c) for c in old.get("conditions") or []]
    events: list[tuple[str, str, str]] = []
    prev_ready = next((c for c in conditions if c.get("type") == "Ready"), {})

    def fail(reason: str, message: str) -> TickResult:
        if prev_ready.get("reason") != reason or prev_ready.get("status") != "False":
            events.append(("Warning", reason, message))
        telemetry.DECISIONS.labels(ns, name, "Error").inc()
        status = _error_status(old, gen, now, reason, message, target_name)
        return _finish(rt, key, status, now, TickResult(status=None, events=events))

    refused = refusal(rt.config.guardrails, spec, ns, meta, rt.config.prometheus_url)
    if refused is not None:  # the admin's guardrails: never scaled, the condition names the field and the fix
        return fail(refused.reason, refused.message)
    if target is None or not target.exists:
        rejected = rt.tenancy.template_errors.get(key)
        if spec.template is not None and rejected is not None and rejected[0] == template_digest(spec.template):
            return fail("TemplateRejected", f"the API server refused the Deployment from spec.template: {rejected[1]}")
        how = "spec.template (being created)" if spec.template is not None else "spec.scaleTargetRef.name"
        return fail("TargetNotFound", f"Deployment {ns}/{target_name} not found: check {how}")
    if target.conflict:
        return fail(
            "TargetConflict",
            f"Deployment {ns}/{target_name} is already scaled by {target.conflict}; two autoscalers would fight. "
            "Delete it or point this WorkerPool at another Deployment.",
        )

    # Our own recent write wins over an index that has not caught up with it yet.
    current = target.replicas
    written = rt.last_scale_write.get(key)
    if written is not None and now - written[1] < 2 * rt.config.tick and current != written[0]:
        current = written[0]

    sig = await rt.reader.read(ns, spec)
    obs = Observation(
        now=now,
        current_replicas=current,
        ready_replicas=target.ready,
        age_seconds=sig.age_seconds,
        error=signal_errors_for_required(sig),
        **sig.values,
    )
    state = PoolState.from_status(old.get("history"))
    decision = decide(spec, state, obs)

    # Check and scale under the namespace's lock, so two pools cannot spend the same budget headroom.
    async with rt.tenancy.locks(ns):
        # The policy gate, on every decision that would change something.
        verdict_info: dict[str, Any] | None = None
        if decision.desired != current:
            decision, verdict_info = await _gate(rt, body, spec, decision, current, now, target)

        paused = is_paused(meta, body.get("spec") or {})
        mode = "Paused" if paused else spec.mode
        applied = False
        new_state = decision.state
        if decision.desired != current:
            if mode == "Active":
                try:
                    await rt.scaler.scale(ns, target_name, decision.desired)
                except ScaleError as e:
                    return fail(e.reason if e.reason != "ApiError" else "ScaleFailed", str(e))
                applied = True
                rt.last_scale_write[key] = (decision.desired, now)
                new_state = record_scale(new_state, now=now, from_replicas=current, to_replicas=decision.desired)
                direction = "up" if decision.desired > current else "down"
                telemetry.SCALES.labels(ns, name, direction).inc()
                events.append(("Normal", "Scaled", f"{current} -> {decision.desired}: {decision.reason}"))
            else:
                prev = old.get("lastDecision") or {}
                if (prev.get("to"), prev.get("mode")) != (decision.desired, mode):
                    events.append(
                        (
                            "Normal",
                            "WouldScale",
                            f"[{mode}] would scale {current} -> {decision.desired}: {decision.reason}",
                        )
                    )
    if verdict_info is not None and (decision.outcome == "Blocked" or decision.desired != verdict_info["proposed"]):
        # One Event per change of verdict, not one per tick while a guard keeps holding.
        prev_policy = next((c for c in conditions if c.get("type") == "PolicyAllowed"), {})
        if prev_policy.get("message") != "; ".join(verdict_info["reasons"]) or prev_policy.get("reason") not in (
            "Denied",
            "Clamped",
            "PolicyUnavailable",
        ):
            reason = "PolicyBlocked" if decision.outcome == "Blocked" else "PolicyClamped"
            events.append(("Warning", reason, decision.reason))

    outcome = decision.outcome if mode == "Active" else (mode if decision.desired != current else decision.outcome)
    telemetry.DECISIONS.labels(ns, name, outcome).inc()

    # Conditions.
    set_condition(
        conditions,
        "Ready",
        "True",
        "Reconciled",
        f"scaling Deployment {target_name}" + (f" ({mode})" if mode != "Active" else ""),
        now,
        gen,
    )
    if decision.metrics_ok:
        set_condition(conditions, "MetricsAvailable", "True", "SignalsRead", "backlog and arrival rate read", now, gen)
    else:
        why = obs.error or f"missing or stale: {', '.join(decision.missing)}"
        set_condition(
            conditions,
            "MetricsAvailable",
            "False",
            "QueryFailed" if obs.error else "MetricsMissing",
            f"{why}; {decision.state.consecutive_failures} consecutive failures "
            f"(fallback at {spec.fallback.failure_threshold})",
            now,
            gen,
        )
    if verdict_info is not None:
        if verdict_info.get("error") and verdict_info.get("source") == "failure-policy":
            set_condition(
                conditions,
                "PolicyAllowed",
                "False" if not verdict_info["allow"] else "True",
                "PolicyUnavailable",
                verdict_info["error"],
                now,
                gen,
            )
        elif not verdict_info["allow"]:
            set_condition(conditions, "PolicyAllowed", "False", "Denied", "; ".join(verdict_info["reasons"]), now, gen)
        elif verdict_info.get("replicas") is not None and verdict_info["replicas"] != verdict_info["proposed"]:
            set_condition(conditions, "PolicyAllowed", "True", "Clamped", "; ".join(verdict_info["reasons"]), now, gen)
        else:
            set_condition(
                conditions,
                "PolicyAllowed",
                "True",
                "Allowed",
                "; ".join(verdict_info["reasons"]) or "allowed",
                now,
                gen,
            )
    elif not any(c.get("type") == "PolicyAllowed" for c in conditions):
        set_condition(conditions, "PolicyAllowed", "True", "NotEvaluated", "no change proposed yet", now, gen)
    slo_status = {True: "True", False: "False", None: "Unknown"}[decision.slo_met]
    set_condition(
        conditions,
        "SLOMet",
        slo_status,
        {True: "WithinObjectives", False: "ObjectiveMissed", None: "NoData"}[decision.slo_met],
        decision.slo_message,
        now,
        gen,
    )
    if decision.limited_by:
        set_condition(
            conditions,
            "ScalingLimited",
            "True",
            _limit_reason(decision.limited_by[0]),
            "; ".join(decision.limited_by),
            now,
            gen,
        )
    else:
        set_condition(
            conditions,
            "ScalingLimited",
            "False",
            "NotLimited",
            "the recommendation was applied as is",
            now,
            gen,
        )
    if paused:
        set_condition(conditions, "Paused", "True", "Paused", paused, now, gen)
    else:
        set_condition(conditions, "Paused", "False", "NotPaused", f"mode {spec.mode}", now, gen)

    escalated = bool(verdict_info and verdict_info.get("escalated"))
    if escalated:
        set_condition(
            conditions,
            "Escalated",
            "True",
            "BacklogEscalation",
            "; ".join(verdict_info["reasons"]) if verdict_info else "",
            now,
            gen,
        )
    elif any(c.get("type") == "Escalated" for c in conditions):
        set_condition(conditions, "Escalated", "False", "NotEscalated", "", now, gen)

    new_replicas = decision.desired if applied else current
    last_decision = {
        "time": rfc3339(now),
        "from": current,
        "to": decision.desired,
        "recommendation": decision.recommendation,
        "outcome": outcome,
        "mode": mode,
        "applied": applied,
        "reason": decision.reason,
        "limitedBy": decision.limited_by,
        "inputs": decision.signals,
        "sizing": decision.sizing,
        "policy": verdict_info,
    }
    if decision.desired == current:
        # Keep the last change visible: a quiet tick records its verdict in signals/conditions, not over it.
        prev = old.get("lastDecision")
        if prev and prev.get("from") != prev.get("to"):
            last_decision = {
                **prev,
                "lastQuietTick": rfc3339(now),
                "quietReason": decision.reason,
                "quietLimitedBy": decision.limited_by,
            }
    status: dict[str, Any] = {
        "observedGeneration": gen,
        "targetName": target_name,
        "replicas": new_replicas,
        "desiredReplicas": decision.desired,
        "recommendedReplicas": decision.recommendation,
        "lastEvaluated": rfc3339(now),
        "consecutiveFailures": decision.state.consecutive_failures,
        "signals": {**decision.signals, "observedAt": rfc3339(now)},
        "lastDecision": last_decision,
        "history": new_state.to_status(),
        "conditions": conditions,
    }
    if new_state.last_scale_time:
        status["lastScaleTime"] = rfc3339(new_state.last_scale_time)

    telemetry.REPLICAS.labels(ns, name).set(new_replicas)
    telemetry.DESIRED.labels(ns, name).set(decision.desired)
    telemetry.RECOMMENDED.labels(ns, name).set(decision.recommendation)
    telemetry.SLO_MET.labels(ns, name).set({True: 1, False: 0, None: -1}[decision.slo_met])
    telemetry.METRICS_AVAILABLE.labels(ns, name).set(1 if decision.metrics_ok else 0)

    result = TickResult(status=None, events=events, scaled_to=decision.desired if applied else None, decision=decision)
    # Labels a policy asks for (e.g. chanscale.dev/escalated) go on the pool, so a priority class or an alert can
    # select escalated pools; a label of ours that this tick's verdict does not ask for (or a tick that proposed
    # no change, hence asked no policy) is removed.
    wanted = {k: str(v) for k, v in ((verdict_info or {}).get("labels") or {}).items()}
    current_labels = meta.get("labels") or {}
    stale = {k: None for k in current_labels if k.startswith("chanscale.dev/") and k not in wanted}
    result.labels = {**stale, **{k: v for k, v in wanted.items() if current_labels.get(k) != v}}
    if applied:  # a scale always writes status (the history must survive a restart)
        rt.last_written.pop(key, None)
    return _finish(rt, key, status, now, result)


def _peers(rt: Runtime, ns: str, name: str, target: Target | None, now: float) -> list[dict[str, Any]]:
    """The namespace's other pools for the budget guard: kopf's WorkerPool index plus our own recent writes."""
    if target is None or target.peers is None:
        return []
    recent = {n: r for (pns, n), (r, t) in rt.last_scale_write.items() if pns == ns and now - t < 2 * rt.config.tick}
    pools, deployments = target.peers()
    return namespace_pools(pools, deployments, recent, exclude=name)


async def _gate(
    rt: Runtime,
    body: Mapping[str, Any],
    spec: PoolSpec,
    decision: Decision,
    current: int,
    now: float,
    target: Target | None = None,
) -> tuple[Decision, dict[str, Any]]:
    from .policy import PolicyUnavailable, build_input, verdict_on_failure

    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    st = decision.state
    others = _peers(rt, ns, name, target, now)
    doc = build_input(
        pool={
            "metadata": {k: meta.get(k) for k in ("namespace", "name", "labels", "annotations")},
            "spec": body.get("spec") or {},
        },
        current_replicas=current,
        recommended_replicas=decision.desired,
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        signals={**decision.signals},
        history={
            "lastScaleTime": rfc3339(st.last_scale_time) if st.last_scale_time else None,
            "lastScaleDirection": st.last_scale_direction,
            "secondsSinceLastScale": (now - st.last_scale_time) if st.last_scale_time else None,
        },
        now=datetime.fromtimestamp(now, tz=timezone.utc),
        namespace_pools=others,
    )
    path = rt.config.guardrails.policy_path(spec.policy.profile) or ""  # refusal() has checked it is published
    started = time.perf_counter()
    try:
        verdict = await rt.gate.evaluate(path, doc, timeout=rt.config.policy_timeout)
    except PolicyUnavailable as e:
        verdict = verdict_on_failure(
            rt.config.guardrails.failure_policy,
            current=current,
            proposed=decision.desired,
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
            error=str(e),
        )
    finally:
        telemetry.POLICY_SECONDS.observe(time.perf_counter() - started)
    proposed = decision.desired
    reasons = list(verdict.reasons)
    if verdict.error and verdict.error not in " ".join(reasons):
        reasons.append(verdict.error)
    decided = apply_verdict(decision, allow=verdict.allow, replicas=verdict.replicas, reasons=reasons, spec=spec)
    info = {
        "allow": verdict.allow,
        "replicas": verdict.replicas,
        "proposed": proposed,
        "reasons": reasons,
        "escalated": verdict.escalated,
        "source": verdict.source,
        "error": verdict.error,
        "profile": spec.policy.profile,
        "path": path,
        "latencySeconds": round(verdict.latency_seconds, 5),
        "limitedBy": list(verdict.limited_by),
        "labels": dict(verdict.labels),
    }
    return decided, info
