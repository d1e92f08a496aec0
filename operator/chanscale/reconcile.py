"""One tick for one WorkerPool: read signals, decide, pass the policy gate, scale, and explain.

Framework-free (no kopf here) so the whole tick runs in unit tests with fakes; :mod:`chanscale.handlers` is the
thin kopf wrapper that feeds it the pool, the target seen through kopf's in-memory indexes, and writes the
returned status through kopf's patch object.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import FIELD_MANAGER, PAUSED_ANNOTATION, PAUSED_REPLICAS_ANNOTATION, adoption, telemetry
from .decision import Decision, Observation, PoolState, apply_verdict, decide, record_scale
from .faults import crash_point
from .kube import ScaleError, Scaler, template_digest
from .promauth import PrometheusAuth
from .signals import PrometheusReader, signal_errors_for_required
from .spec import PoolSpec, SpecError
from .tenancy import Guardrails, TenancyState, namespace_pools, refusal

log = logging.getLogger("chanscale")

CONDITION_TYPES = (
    "Ready",
    "MetricsAvailable",
    "PolicyAllowed",
    "SLOMet",
    "ScalingLimited",
    "Paused",
    "Fallback",
    "ExternalWriter",
)


@dataclass
class Config:
    prometheus_url: str | None = None
    opa: str | None = "none"
    tick: float = 10.0  # the operator's timer; a pool's pollingInterval is rounded up to a multiple of it
    status_refresh: float = 30.0  # rewrite an unchanged status at most this often (observations only)
    policy_timeout: float = 2.0
    query_timeout: float = 5.0
    health_url: str | None = None  # serve /healthz (this URL's path) and /readyz on its host:port
    stale_intervals: float = 3.0  # liveness fails when a pool has not been evaluated for this many ticks
    guardrails: Guardrails = field(default_factory=Guardrails)  # the admin's choices (tenancy.py)
    prometheus_auth: PrometheusAuth = field(default_factory=PrometheusAuth)  # the operator's credentials


@dataclass(frozen=True)
class Target:
    """The scale target as kopf's index last saw it."""

    name: str
    exists: bool
    replicas: int = 0
    ready: int | None = None
    conflict: str | None = None  # e.g. "HorizontalPodAutoscaler web (KEDA ScaledObject web)"
    manager: str | None = None  # the field manager that last set spec.replicas (managedFields)
    error: str | None = None  # why a /scale target could not be read (scaletarget.py): discovery, RBAC
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
    written: bool | None = None  # whether ``status`` reached the API server (None: nothing to write)


@dataclass
class PoolMemory:
    """What this process knows of one pool's status beyond kopf's (possibly lagging) body.

    ``status`` is the status as of our last tick, written or not (a failure counter is not worth a write, yet the
    next tick must count on from it); ``server`` is what the API server holds after our last successful write, at
    ``rv``. A body at least as new as ``rv`` (someone else wrote after us) replaces both.
    """

    status: dict[str, Any]
    server: dict[str, Any]
    rv: int | None
    written: str | None = None  # digest of the last status written
    written_at: float = 0.0


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
    writer: Any = None  # kube.StatusWriter; None keeps writes in ``memory_writes`` (unit tests)
    memory: dict[tuple[str, str], PoolMemory] = field(default_factory=dict)
    evaluated: dict[tuple[str, str], float] = field(default_factory=dict)  # last tick of any kind (liveness)
    memory_writes: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    tenancy: TenancyState = field(default_factory=TenancyState)
    scale_any: Any = None  # scaletarget.ScaleSubresource: targets other than Deployments

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        for d in (
            self.last_eval,
            self.last_written,
            self.last_scale_write,
            self.memory,
            self.evaluated,
            self.tenancy.template_errors,
        ):
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
    held = adoption.paused_replicas(meta)
    if held is not None:
        return f"annotation {PAUSED_REPLICAS_ANNOTATION}={held}: held at {held} replicas"
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


# ------------------------------------------------------------------------------------------ status memory and writes
def _rv(body: Mapping[str, Any]) -> int | None:
    """The body's resourceVersion as a number (etcd revisions grow; a non-numeric one is never compared)."""
    try:
        return int(str((body.get("metadata") or {}).get("resourceVersion")))
    except (TypeError, ValueError):
        return None


def _memory(rt: Runtime, key: tuple[str, str], body: Mapping[str, Any]) -> PoolMemory:
    """This pool's memory, replaced by the body when the body is newer than our last write (kopf's view lags our
    own writes by a watch event; a user's spec edit or a restart makes the body the truth)."""
    rv, mem = _rv(body), rt.memory.get(key)
    if mem is None or (rv is not None and (mem.rv is None or rv > mem.rv)):
        server = {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}
        prev = mem
        mem = PoolMemory(status=dict(server), server=server, rv=rv)
        if prev is not None:  # a newer body: what we wrote is in it; keep the write bookkeeping
            mem.written, mem.written_at = prev.written, prev.written_at
            mem.status = _carry_counters(prev.status, mem.status)
        rt.memory[key] = mem
    return mem


def _carry_counters(mine: Mapping[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Counters we keep without writing them (not material) survive a newer body that lacks them."""
    mine_h, theirs_h = mine.get("history") or {}, theirs.get("history") or {}
    if mine_h.get("consecutiveFailures") and theirs_h:
        theirs = {**theirs, "history": {**theirs_h, "consecutiveFailures": mine_h["consecutiveFailures"]}}
    return theirs


def _limit_kinds(limited: Any) -> list[str]:
    return [_limit_reason(str(x)) for x in limited or ()]


def _degraded(status: Mapping[str, Any]) -> bool:
    """A dependency (Prometheus, OPA) is down: the model's moving numbers are observations then, not verdicts."""
    reasons = {(c.get("type"), c.get("reason")) for c in status.get("conditions") or []}
    return ("PolicyAllowed", "PolicyUnavailable") in reasons or any(
        t == "MetricsAvailable" and r != "SignalsRead" for t, r in reasons
    )


def _material(status: Mapping[str, Any]) -> str:
    """A digest of what makes a status write worth it: not the ever-moving observations, not failure counters,
    not numbers inside reasons (a fallback's "after 7 failed reads" would otherwise rewrite every tick).

    While a dependency is down, the model's recommendation (and its stabilisation runs) is an observation too:
    it moves with a growing backlog every tick but changes nothing the operator does, so it is written with the
    next refresh (a crash in an outage forgets at most ``status_refresh`` seconds of it).
    """
    d = status.get("lastDecision") or {}
    h = status.get("history") or {}
    ext = status.get("externalWriter") or {}
    degraded = _degraded(status)
    keep = {
        "replicas": status.get("replicas"),
        "desired": status.get("desiredReplicas"),
        "recommended": None if degraded else status.get("recommendedReplicas"),
        "conditions": [(c["type"], c["status"], c.get("reason")) for c in status.get("conditions", [])],
        "decision": (d.get("outcome"), d.get("from"), d.get("to"), d.get("applied"), _limit_kinds(d.get("limitedBy"))),
        "verdicts": status.get("verdicts"),
        "history": (None if degraded else h.get("recommendations"), h.get("scaleEvents"), h.get("pending")),
        "external": (ext.get("writer"), ext.get("to"), ext.get("holdUntil")),
        "gen": status.get("observedGeneration"),
        "target": status.get("targetName"),
    }
    return hashlib.sha1(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()


async def _write_status(rt: Runtime, key: tuple[str, str], mem: PoolMemory, status: dict[str, Any], now: float) -> bool:
    """Merge-patch ``status`` over what the server holds. False (logged, retried next tick) when it fails."""
    from .kube import StatusWriteError

    patch = status_patch(mem.server, status)
    if not patch:
        return True
    try:
        if rt.writer is None:
            rt.memory_writes.append((key[0], key[1], patch))
            rv = None if mem.rv is None else mem.rv + 1
        else:
            written = await rt.writer.write_status(key[0], key[1], patch)
            rv = int(written) if written and written.isdigit() else None
    except StatusWriteError as e:
        log.warning("pool %s/%s: status write failed (retrying next tick): %s", key[0], key[1], e)
        return False
    telemetry.STATUS_WRITES.labels(*key).inc()
    mem.server, mem.rv = status, rv
    mem.written, mem.written_at = _material(status), now
    return True


async def _finish(
    rt: Runtime, key: tuple[str, str], mem: PoolMemory, status: dict[str, Any], now: float, result: TickResult
) -> TickResult:
    """Remember the status; write it only on a material change (or every ``status_refresh`` for observations)."""
    mem.status = status
    if mem.written == _material(status) and now - mem.written_at < rt.config.status_refresh:
        result.status = None
    else:
        result.status = status
        result.written = await _write_status(rt, key, mem, status, now)
    if result.labels:
        await _write_labels(rt, key, result.labels)
    return result


async def _write_labels(rt: Runtime, key: tuple[str, str], labels: Mapping[str, str | None]) -> None:
    from .kube import StatusWriteError

    if rt.writer is None:
        return
    try:
        await rt.writer.write_labels(key[0], key[1], labels)
    except StatusWriteError as e:
        log.warning("pool %s/%s: label write failed (retrying next tick): %s", key[0], key[1], e)


# ------------------------------------------------------------------------------------------------ verdicts and Events
def brief(ns: str, name: str, text: str, limit: int = 200) -> str:
    """A short human message from an error (a ConnectionError with a URL-encoded query, an API server's
    validation text): a longer one goes to the log once, referenced by a short id. Policy reasons and limits are
    human already and are not shortened."""
    first = text.splitlines()[0] if text else ""
    if len(first) <= limit and first == text:
        return text
    return f"{first[: limit - 20].rstrip()}… (log ref {_log_ref(ns, name, text)})"


def _log_ref(ns: str, name: str, text: str) -> str:
    """Log ``text`` once under a short id and return the id. Keyed without digits: a counter, a port or a latency
    inside the text must not log (and re-reference) it every tick."""
    ref = hashlib.sha1(f"{ns}/{name}:{re.sub(r'[0-9.]+', '#', text)}".encode()).hexdigest()[:8]
    if ref not in _LOGGED_REFS:
        _LOGGED_REFS[ref] = None
        if len(_LOGGED_REFS) > 4096:
            _LOGGED_REFS.pop(next(iter(_LOGGED_REFS)))
        log.warning("pool %s/%s [ref %s]: %s", ns, name, ref, text)
    return ref


_ERROR_KIND = re.compile(r"\b([A-Z][A-Za-z]*(?:Error|Exception|Timeout))\b|\b(HTTP [0-9]{3})\b")


def brief_query_error(ns: str, name: str, text: str) -> str:
    """ "Prometheus query failed for backlog, arrivalRate: ConnectionError (log ref 1a2b3c4d)" from the reader's
    "signal: error; signal: error" text (whose errors carry URLs with the URL-encoded query)."""
    signals = [part.split(":", 1)[0].strip() for part in text.split("; ") if ":" in part]
    found = _ERROR_KIND.search(text)
    if found is None:
        return brief(ns, name, text)
    kind = found.group(1) or found.group(2)
    return f"Prometheus query failed for {', '.join(signals) or 'signals'}: {kind} (log ref {_log_ref(ns, name, text)})"


_LOGGED_REFS: dict[str, None] = {}


def verdict(
    old: Mapping[str, Any],
    new: dict[str, Any],
    slot: str,
    key: str | None,
    event: tuple[str, str, str] | None,
    events: list[tuple[str, str, str]],
) -> None:
    """Record ``slot``'s verdict key in ``new`` and post ``event`` only when the key changed (one Event per change
    of verdict, keyed by kind and guard, never by a message with numbers in it). ``key`` None clears the slot."""
    if key is None:
        new.pop(slot, None)
        return
    new[slot] = key
    if old.get(slot) != key and event is not None:
        events.append(event)


# ------------------------------------------------------------------------------------------------------ the tick
async def tick(rt: Runtime, body: Mapping[str, Any], target: Target | None, *, force: bool = False) -> TickResult:
    """Evaluate one pool. Never raises for a bad pool: problems become conditions and Events."""
    meta, spec_raw = body.get("metadata", {}), body.get("spec") or {}
    ns, name = meta.get("namespace", ""), meta.get("name", "")
    key = (ns, name)
    gen = int(meta.get("generation") or 0)
    now = rt.wall()
    rt.evaluated[key] = now
    mem = _memory(rt, key, body)
    old = mem.status
    try:
        spec = PoolSpec.from_dict(spec_raw)
    except SpecError as e:
        return await _fail(rt, key, mem, old, gen, now, None, "InvalidSpec", f"invalid spec: {e}")
    if not force and not due(rt, key, spec, now):
        return TickResult(status=None, skipped=True)
    rt.last_eval[key] = now
    started = time.perf_counter()
    try:
        return await _tick(rt, body, mem, spec, target, now)
    except Exception as e:  # never let one pool take the operator down
        log.exception("pool %s/%s: unexpected error", ns, name)
        msg = brief(ns, name, f"internal error: {type(e).__name__}: {e}")
        return await _fail(rt, key, mem, old, gen, now, None, "InternalError", msg)
    finally:
        telemetry.DECISION_SECONDS.observe(time.perf_counter() - started)


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


async def _fail(
    rt: Runtime,
    key: tuple[str, str],
    mem: PoolMemory,
    old: Mapping[str, Any],
    gen: int,
    now: float,
    target_name: str | None,
    reason: str,
    message: str,
) -> TickResult:
    """Ready=False with ``reason``; one Warning Event per change of reason."""
    telemetry.DECISIONS.labels(key[0], key[1], "Error").inc()
    status = _error_status(old, gen, now, reason, message, target_name)
    events: list[tuple[str, str, str]] = []
    verdicts = dict(old.get("verdicts") or {})
    verdict(old.get("verdicts") or {}, verdicts, "ready", reason, ("Warning", reason, message), events)
    status["verdicts"] = verdicts
    return await _finish(rt, key, mem, status, now, TickResult(status=None, events=events))


def resolve_pending(old: Mapping[str, Any], deployed: int) -> tuple[dict[str, Any], tuple[str, str, str] | None]:
    """Reconcile a write-ahead scale intent (``status.history.pending``) left by a crash with the Deployment.

    The intent is written, with its scale event in ``history.scaleEvents``, *before* the scale, so a restart can
    tell what reached the Deployment: at ``to`` the scale happened (keep the event, post the lost Event); at
    ``from`` it did not (drop the event); anything else is another writer (keep the event: counting a scale that
    may have happened is the safe side of a rate limit). Returns the status without ``pending`` and an Event.
    """
    h = dict(old.get("history") or {})
    pending = h.pop("pending", None)
    if not isinstance(pending, Mapping):
        return dict(old), None
    frm, to, at = pending.get("from"), pending.get("to"), pending.get("time")
    event: tuple[str, str, str] | None
    if deployed == to:
        event = ("Normal", "Scaled", f"{frm} -> {to} (recorded before the scale; confirmed after an operator restart)")
    elif deployed == frm:
        h["scaleEvents"] = [e for e in h.get("scaleEvents") or [] if not (e and e[0] == at)]
        event = None
    else:
        event = None
    new = {**old, "history": h}
    if deployed in (frm, to):
        new["replicas"] = deployed
    return new, event


def external_change(
    spec: PoolSpec, old: Mapping[str, Any], target: Target, current: int, now: float
) -> dict[str, Any] | None:
    """The ``status.externalWriter`` record: a new one when ``spec.replicas`` moved since our last look and the
    field manager that moved it is not chanscale; else the previous record (None if there never was one)."""
    prev = old.get("externalWriter")
    seen = old.get("replicas")
    if seen is None or current == seen or target.manager == FIELD_MANAGER:
        return dict(prev) if isinstance(prev, Mapping) else None
    until = now + spec.external_scale.cooldown_seconds
    return {
        "writer": target.manager or "unknown (no managedFields entry)",
        "from": seen,
        "to": current,
        "time": rfc3339(now),
        "action": spec.external_scale.action,
        "holdUntil": rfc3339(until),
        "until": until,
    }


def _external_conditions(
    spec: PoolSpec,
    ext: Mapping[str, Any] | None,
    target_name: str,
    now: float,
    conditions: list[dict[str, Any]],
    gen: int,
) -> tuple[bool, str | None, str]:
    """Set ExternalWriter; returns (hold off now, verdict key, Event message)."""
    if ext is None:
        return False, None, ""
    recent = now < float(ext.get("until") or 0)
    what = f"Deployment {target_name} spec.replicas {ext.get('from')} -> {ext.get('to')} by {ext.get('writer')!r}"
    if not recent:
        set_condition(
            conditions, "ExternalWriter", "False", "NoRecentWriter", f"last: {what} at {ext.get('time')}", now, gen
        )
        return False, None, ""
    if ext.get("action") == "Reassert" or spec.external_scale.action == "Reassert":
        msg = f"{what}; reasserting the decision (spec.externalScale.action Reassert)"
        set_condition(conditions, "ExternalWriter", "True", "Reasserting", msg, now, gen)
        return False, f"{ext.get('writer')}:Reassert", msg
    msg = f"{what}; holding off until {ext.get('holdUntil')} (spec.externalScale)"
    set_condition(conditions, "ExternalWriter", "True", "HoldingOff", msg, now, gen)
    return True, f"{ext.get('writer')}:HoldOff", msg


def _current(rt: Runtime, key: tuple[str, str], target: Target, now: float) -> int:
    """Our own recent write wins over an index that has not caught up with it yet."""
    written = rt.last_scale_write.get(key)
    if written is not None and now - written[1] < 2 * rt.config.tick and target.replicas != written[0]:
        return written[0]
    return target.replicas


async def _tick(
    rt: Runtime, body: Mapping[str, Any], mem: PoolMemory, spec: PoolSpec, target: Target | None, now: float
) -> TickResult:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    key = (ns, name)
    gen = int(meta.get("generation") or 0)
    target_name = spec.target_name(name)
    old = mem.status

    refused = refusal(rt.config.guardrails, spec, ns, meta, rt.config.prometheus_url)
    if refused is not None:  # the admin's guardrails: never scaled, the condition names the field and the fix
        return await _fail(rt, key, mem, old, gen, now, target_name, refused.reason, refused.message)
    if target is None or not target.exists:
        rejected = rt.tenancy.template_errors.get(key)
        if spec.template is not None and rejected is not None and rejected[0] == template_digest(spec.template):
            msg = brief(ns, name, f"the API server refused the Deployment from spec.template: {rejected[1]}")
            return await _fail(rt, key, mem, old, gen, now, target_name, "TemplateRejected", msg)
        how = "spec.template (being created)" if spec.template is not None else "spec.scaleTargetRef.name"
        if target is not None and target.error:
            msg = f"cannot read the scale of {spec.scale_kind} {ns}/{target_name}: {target.error}"
            return await _fail(rt, key, mem, old, gen, now, target_name, "TargetUnreadable", msg)
        msg = f"{spec.scale_kind} {ns}/{target_name} not found: check {how}"
        return await _fail(rt, key, mem, old, gen, now, target_name, "TargetNotFound", msg)
    if target.conflict and spec.mode != "DryRun":  # a DryRun pool never writes: it shadows (adoption.py)
        msg = (
            f"{spec.scale_kind} {ns}/{target_name} is already scaled by {target.conflict}; two autoscalers would "
            "fight. Delete it, point this WorkerPool at another Deployment, or set mode: DryRun to shadow it."
        )
        return await _fail(rt, key, mem, old, gen, now, target_name, "TargetConflict", msg)

    events: list[tuple[str, str, str]] = []
    if (old.get("history") or {}).get("pending"):
        old, recovered = resolve_pending(old, target.replicas)
        events += [recovered] if recovered else []
    current = _current(rt, key, target, now)
    paused = is_paused(meta, body.get("spec") or {})
    ext = external_change(spec, old, target, current, now) if not paused and spec.mode == "Active" else None
    ext = ext or (dict(old["externalWriter"]) if isinstance(old.get("externalWriter"), Mapping) else None)

    sig = await rt.reader.read(ns, spec)
    obs = Observation(
        now=now,
        current_replicas=current,
        ready_replicas=target.ready,
        age_seconds=sig.age_seconds,
        error=signal_errors_for_required(sig),
        **sig.values,
    )
    decision = decide(spec, PoolState.from_status(old.get("history")), obs)
    hold_at = adoption.paused_replicas(meta)
    if hold_at is not None:  # KEDA's paused-replicas: scale to N and hold, through the same gate and write path
        decision = adoption.pin(decision, hold_at)

    conditions = [dict(c) for c in old.get("conditions") or []]
    hold, ext_key, ext_msg = _external_conditions(spec, ext, target_name, now, conditions, gen)
    mode = "Paused" if paused and hold_at is None else "HoldOff" if hold else spec.mode

    # Check and scale under the namespace's lock, so two pools cannot spend the same budget headroom.
    async with rt.tenancy.locks(ns):
        verdict_info: dict[str, Any] | None = None
        if decision.desired != current and mode != "HoldOff":  # holding off proposes nothing to the gate
            decision, verdict_info = await _gate(rt, body, spec, decision, current, now, target)
        ctx = _Ctx(rt, body, spec, decision, verdict_info, obs, old, conditions, ns, name, target_name, gen, now, mode)
        ctx.paused, ctx.ext = paused, ext
        verdicts = ctx.verdicts
        event = ("Warning", "ExternalScale", ext_msg)
        verdict(old.get("verdicts") or {}, verdicts, "external", ext_key, event, events)
        if decision.desired != current and mode == "Active":
            return await _apply(ctx, mem, current, events)

    if decision.desired != current and mode != "HoldOff":
        would = ("Normal", "WouldScale", f"[{mode}] would scale {current} -> {decision.desired}: {decision.reason}")
        verdict(old.get("verdicts") or {}, verdicts, "would", f"{mode}:{decision.desired}", would, events)
    else:
        verdicts.pop("would", None)
    status = ctx.status(current, applied=False, state=decision.state, events=events)
    adoption.shadow(status, old, target.conflict, now, current, decision.desired, gen, set_condition)
    return await _finish(rt, key, mem, status, now, ctx.result(events, applied=False))


async def _apply(ctx: _Ctx, mem: PoolMemory, current: int, events: list[tuple[str, str, str]]) -> TickResult:
    """Scale, crash-safely: write the intent (the scale event plus ``history.pending``) first, then scale, then
    write the decision and clear the intent. A crash between any two steps leaves a status that
    :func:`resolve_pending` reconciles. The intent write touches ``status.history`` only, so nothing reading the
    status (replicas, conditions, the decision) sees a scale before the Deployment has it."""
    rt, key, now, d = ctx.rt, (ctx.ns, ctx.name), ctx.now, ctx.decision
    state = record_scale(d.state, now=now, from_replicas=current, to_replicas=d.desired)
    pending = {"from": current, "to": d.desired, "time": round(now, 3)}
    ahead = {**mem.server, "history": {**state.to_status(), "pending": pending}}
    crash_point("before-intent")
    if not await _write_status(rt, key, mem, ahead, now):
        msg = "could not record the scale intent in status (API server unreachable); not scaling"
        return await _fail(rt, key, mem, ctx.old, ctx.gen, now, ctx.target_name, "StatusWriteFailed", msg)
    mem.status = ahead
    crash_point("after-intent")
    try:
        if ctx.spec.scales_deployment:
            await rt.scaler.scale(ctx.ns, ctx.target_name, d.desired)
        else:  # any kind with a /scale subresource (scaletarget.py)
            ref = ctx.spec
            await rt.scale_any.scale(ctx.ns, ref.scale_api_version, ref.scale_kind, ctx.target_name, d.desired)
    except ScaleError as e:
        reason = e.reason if e.reason != "ApiError" else "ScaleFailed"
        return await _fail(rt, key, mem, ctx.old, ctx.gen, now, ctx.target_name, reason, brief(*key, str(e)))
    crash_point("after-scale")
    rt.last_scale_write[key] = (d.desired, now)
    telemetry.SCALES.labels(ctx.ns, ctx.name, "up" if d.desired > current else "down").inc()
    events.append(("Normal", "Scaled", f"{current} -> {d.desired}: {d.reason}"))
    status = ctx.status(d.desired, applied=True, state=state, events=events)
    result = await _finish(rt, key, mem, status, now, ctx.result(events, applied=True))
    crash_point("after-status")
    return result


@dataclass
class _Ctx:
    """One tick's inputs and verdict, from which the status (before and after a scale) is built."""

    rt: Runtime
    body: Mapping[str, Any]
    spec: PoolSpec
    decision: Decision
    verdict_info: dict[str, Any] | None
    obs: Observation
    old: Mapping[str, Any]
    conditions: list[dict[str, Any]]
    ns: str
    name: str
    target_name: str
    gen: int
    now: float
    mode: str
    paused: str | None = None
    ext: dict[str, Any] | None = None
    verdicts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.verdicts = dict(self.old.get("verdicts") or {})
        self.verdicts.pop("ready", None)  # a tick that gets this far is Ready

    @property
    def outcome(self) -> str:
        d = self.decision
        return d.outcome if self.mode == "Active" else (self.mode if d.desired != d.current else d.outcome)

    def status(
        self, replicas: int, *, applied: bool, state: PoolState, events: list[tuple[str, str, str]]
    ) -> dict[str, Any]:
        d, now = self.decision, self.now
        self._conditions(replicas, events)
        status: dict[str, Any] = {
            "observedGeneration": self.gen,
            "targetName": self.target_name,
            "replicas": replicas,
            "desiredReplicas": d.desired,
            "recommendedReplicas": d.recommendation,
            "lastEvaluated": rfc3339(now),
            "consecutiveFailures": d.state.consecutive_failures,
            "signals": {**d.signals, "observedAt": rfc3339(now)},
            "lastDecision": self._last_decision(applied),
            "history": state.to_status(),
            "conditions": [dict(c) for c in self.conditions],
            "verdicts": dict(self.verdicts),
        }
        if self.ext is not None:
            status["externalWriter"] = self.ext
        if state.last_scale_time:
            status["lastScaleTime"] = rfc3339(state.last_scale_time)
        return status

    def _last_decision(self, applied: bool) -> dict[str, Any]:
        d = self.decision
        last = {
            "time": rfc3339(self.now),
            "from": d.current,
            "to": d.desired,
            "recommendation": d.recommendation,
            "outcome": self.outcome,
            "mode": self.mode,
            "applied": applied,
            "reason": d.reason,
            "limitedBy": d.limited_by,
            "inputs": d.signals,
            "sizing": d.sizing,
            "policy": self.verdict_info,
        }
        prev = self.old.get("lastDecision")
        if d.desired == d.current and prev and prev.get("from") != prev.get("to"):
            # Keep the last change visible: a quiet tick records its verdict in signals/conditions, not over it.
            return {**prev, "lastQuietTick": rfc3339(self.now), "quietReason": d.reason, "quietLimitedBy": d.limited_by}
        return last

    def _conditions(self, replicas: int, events: list[tuple[str, str, str]]) -> None:
        d, c, now, gen = self.decision, self.conditions, self.now, self.gen
        mode_note = f" ({self.mode})" if self.mode != "Active" else ""
        set_condition(c, "Ready", "True", "Reconciled", f"scaling Deployment {self.target_name}{mode_note}", now, gen)
        self._metrics_conditions(replicas, events)
        self._policy_condition(events)
        slo = {True: "True", False: "False", None: "Unknown"}[d.slo_met]
        why = {True: "WithinObjectives", False: "ObjectiveMissed", None: "NoData"}[d.slo_met]
        set_condition(c, "SLOMet", slo, why, d.slo_message, now, gen)
        if d.limited_by:
            limit = _limit_reason(d.limited_by[0])
            set_condition(c, "ScalingLimited", "True", limit, "; ".join(d.limited_by), now, gen)
        else:
            set_condition(c, "ScalingLimited", "False", "NotLimited", "the recommendation was applied as is", now, gen)
        set_condition(c, "Active", *adoption.activity(self.obs, d.metrics_ok), now, gen)
        if self.paused:
            set_condition(c, "Paused", "True", "Paused", self.paused, now, gen)
        else:
            set_condition(c, "Paused", "False", "NotPaused", f"mode {self.spec.mode}", now, gen)
        info = self.verdict_info
        if info and info.get("escalated"):
            set_condition(c, "Escalated", "True", "BacklogEscalation", "; ".join(info["reasons"]), now, gen)
        elif any(x.get("type") == "Escalated" for x in c):
            set_condition(c, "Escalated", "False", "NotEscalated", "", now, gen)

    def _metrics_conditions(self, replicas: int, events: list[tuple[str, str, str]]) -> None:
        """MetricsAvailable, Fallback, and one Event each when the signals break, the fallback takes over, or a
        broken signal holds the pool below what the model recommends."""
        d, c, now, gen, old_v = self.decision, self.conditions, self.now, self.gen, self.old.get("verdicts") or {}
        pool = f"WorkerPool {self.ns}/{self.name}"
        if d.metrics_ok:
            set_condition(c, "MetricsAvailable", "True", "SignalsRead", "backlog and arrival rate read", now, gen)
            for slot in ("metrics", "fallback", "belowModel"):
                self.verdicts.pop(slot, None)
        else:
            reason = "QueryFailed" if self.obs.error else "MetricsMissing"
            why = (
                brief_query_error(self.ns, self.name, self.obs.error)
                if self.obs.error
                else f"missing or stale: {', '.join(d.missing)}"
            )
            msg = (
                f"{why}; {d.state.consecutive_failures} consecutive failures "
                f"(fallback at {self.spec.fallback.failure_threshold})"
            )
            set_condition(c, "MetricsAvailable", "False", reason, msg, now, gen)
            verdict(
                old_v, self.verdicts, "metrics", reason, ("Warning", "MetricsUnavailable", f"{pool}: {why}"), events
            )
            below = d.recommendation > replicas
            note = (
                f"{pool} held at {replicas} while the model recommends {d.recommendation}: "
                f"{', '.join(d.missing) or 'signals'} unavailable"
            )
            verdict(
                old_v,
                self.verdicts,
                "belowModel",
                "BelowModel" if below else None,
                ("Warning", "HeldBelowModel", note),
                events,
            )
        fb = self.spec.fallback
        if d.outcome == "Fallback":
            msg = f"signals unavailable; fallback {fb.behavior} holds {d.desired} replicas"
            set_condition(c, "Fallback", "True", fb.behavior[0].upper() + fb.behavior[1:], msg, now, gen)
            verdict(
                old_v, self.verdicts, "fallback", fb.behavior, ("Warning", "FallbackActive", f"{pool}: {msg}"), events
            )
        else:
            set_condition(c, "Fallback", "False", "NotInForce", "the model's signals are in use", now, gen)
            self.verdicts.pop("fallback", None)

    def _policy_condition(self, events: list[tuple[str, str, str]]) -> None:
        info, c, now, gen, old_v = (
            self.verdict_info,
            self.conditions,
            self.now,
            self.gen,
            self.old.get("verdicts") or {},
        )
        if info is None:
            if not any(x.get("type") == "PolicyAllowed" for x in c):
                set_condition(c, "PolicyAllowed", "True", "NotEvaluated", "no change proposed yet", now, gen)
            return  # no change proposed: the last verdict stands (a guard that holds does not re-post)
        guards = ",".join(sorted(str(g) for g in info.get("limitedBy") or ())) or "-"
        reasons = "; ".join(info["reasons"]) or "allowed"
        if info.get("error") and info.get("source") == "failure-policy":
            err = brief(self.ns, self.name, str(info["error"]))
            set_condition(
                c, "PolicyAllowed", "False" if not info["allow"] else "True", "PolicyUnavailable", err, now, gen
            )
            event = ("Warning", "PolicyUnavailable", f"policy gate unavailable, failurePolicy applied: {err}")
            verdict(old_v, self.verdicts, "policy", "PolicyUnavailable", event, events)
        elif not info["allow"]:
            set_condition(c, "PolicyAllowed", "False", "Denied", reasons, now, gen)
            verdict(
                old_v,
                self.verdicts,
                "policy",
                f"Denied:{guards}",
                ("Warning", "PolicyBlocked", self.decision.reason),
                events,
            )
        elif info.get("replicas") is not None and info["replicas"] != info["proposed"]:
            set_condition(c, "PolicyAllowed", "True", "Clamped", reasons, now, gen)
            event = ("Warning", "PolicyClamped", self.decision.reason)
            verdict(old_v, self.verdicts, "policy", f"Clamped:{guards}", event, events)
        else:
            set_condition(c, "PolicyAllowed", "True", "Allowed", reasons, now, gen)
            self.verdicts.pop("policy", None)

    def result(self, events: list[tuple[str, str, str]], *, applied: bool) -> TickResult:
        d, ns, name = self.decision, self.ns, self.name
        replicas = d.desired if applied else d.current
        telemetry.DECISIONS.labels(ns, name, self.outcome).inc()
        telemetry.REPLICAS.labels(ns, name).set(replicas)
        telemetry.DESIRED.labels(ns, name).set(d.desired)
        telemetry.RECOMMENDED.labels(ns, name).set(d.recommendation)
        telemetry.SLO_MET.labels(ns, name).set({True: 1, False: 0, None: -1}[d.slo_met])
        telemetry.METRICS_AVAILABLE.labels(ns, name).set(1 if d.metrics_ok else 0)
        res = TickResult(status=None, events=events, scaled_to=d.desired if applied else None, decision=d)
        # Labels a policy asks for (e.g. chanscale.dev/escalated) go on the pool, so a priority class or an alert
        # can select escalated pools; a label of ours that this tick's verdict does not ask for is removed.
        wanted = {k: str(v) for k, v in ((self.verdict_info or {}).get("labels") or {}).items()}
        current = (self.body.get("metadata") or {}).get("labels") or {}
        stale = {k: None for k in current if k.startswith("chanscale.dev/") and k not in wanted}
        res.labels = {**stale, **{k: v for k, v in wanted.items() if current.get(k) != v}}
        return res


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
